"""Training, sampling interface and checkpoints of the digital (PyTorch) denoisers.

``train_ddpm`` is the same DDPM objective the ODU is trained on (eps-prediction MSE, ``t``
uniform over all T steps of an :class:`optdiff.diffusion.schedule.NoiseSchedule`, fresh Gaussian
noise per step), with Adam. ``TorchPredictor`` turns a trained net into the samplers'
``predict_eps(x_t, t)`` (NumPy in, NumPy out), so :func:`optdiff.diffusion.samplers.ddpm_sample`
and ``ddim_sample`` draw from every model the same way. ``save_net`` / ``load_net`` store a net
as an optdiff checkpoint (:mod:`optdiff.diffusion.checkpoint`: atomic write, no pickle, CRC
checked on load; a damaged file is a ``CheckpointError`` naming it).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ...diffusion.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ...diffusion.schedule import NoiseSchedule
from ._torch import require_torch

torch = require_torch("optdiff.evaluation.digital.train (the FC and U-Net baselines)")

from .nets import build_net  # noqa: E402  (after the clear ImportError above)

__all__ = ["train_ddpm", "TorchPredictor", "save_net", "load_net", "NET_FORMAT"]

#: ``config["format"]`` of a digital denoiser checkpoint.
NET_FORMAT = "optdiff-digital-denoiser"


def _images(x0) -> np.ndarray:
    x = np.asarray(x0)
    if x.ndim != 3 or x.shape[0] < 2 or x.shape[1] != x.shape[2]:
        raise ValueError(f"training images must be [K, H, H] with K >= 2, got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating) or not np.all(np.isfinite(x)):
        raise ValueError("training images must be finite floats")
    if x.min() < -1.0 - 1e-6 or x.max() > 1.0 + 1e-6:
        raise ValueError(f"training images must lie in [-1, 1], got [{x.min():.3g}, {x.max():.3g}]")
    return x


def train_ddpm(net, x0, schedule: NoiseSchedule, steps: int, batch: int = 64, lr: float = 1e-3,
               seed: int = 0, callback: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``net`` (``net(x_t [B, H, W], t [B]) -> eps``) for ``steps`` Adam steps; returns the losses.

    Each step draws ``batch`` images uniformly from ``x0`` (float ``[K, H, W]`` in [-1, 1]),
    timesteps uniformly in ``0..T-1`` and ``eps ~ N(0, I)``; the loss is ``mean((net(x_t, t) - eps)^2)``
    with ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` (float32). Deterministic for a seed
    (NumPy draws the data and noise). A non-finite loss raises ``FloatingPointError``.
    """
    x = _images(x0)
    if int(steps) < 0 or int(batch) < 1 or not lr > 0:
        raise ValueError(f"need steps >= 0, batch >= 1, lr > 0; got {steps}, {batch}, {lr}")
    rng = np.random.default_rng([int(seed), 271828])
    torch.manual_seed(int(seed))
    xt_all = torch.from_numpy(x.astype(np.float32))
    sab = torch.from_numpy(schedule.sqrt_alpha_bar.astype(np.float32))
    s1m = torch.from_numpy(schedule.sqrt_one_minus_alpha_bar.astype(np.float32))
    opt = torch.optim.Adam(net.parameters(), lr=float(lr))
    net.train()
    losses = []
    for step in range(int(steps)):
        idx = torch.from_numpy(rng.integers(0, x.shape[0], size=int(batch)))
        t = torch.from_numpy(rng.integers(0, schedule.T, size=int(batch)))
        eps = torch.from_numpy(rng.standard_normal((int(batch),) + x.shape[1:]).astype(np.float32))
        xt = sab[t, None, None] * xt_all[idx] + s1m[t, None, None] * eps
        loss = torch.mean((net(xt, t) - eps) ** 2)
        if not bool(torch.isfinite(loss.detach())):
            raise FloatingPointError(f"training loss became non-finite at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if callback is not None:
            callback(step, losses[-1])
    net.eval()
    return losses


class TorchPredictor:
    """``predict_eps(x_t [B, H, W], t: int) -> eps`` float64 for a trained net (eval mode, no grad).

    ``images_per_s`` after calls: the rate of the last call (forward passes only).
    """

    def __init__(self, net, batch: int = 256):
        self.net = net.eval()
        self.batch = int(batch)
        self.images_per_s: float | None = None

    def __call__(self, x_t, t: int) -> np.ndarray:
        x = np.asarray(x_t)
        if x.ndim != 3:
            raise ValueError(f"x_t must be [B, H, W], got shape {x.shape}")
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
            raise ValueError(f"t must be an integer timestep, got {t!r}")
        xf = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        outs = []
        t0 = time.perf_counter()
        with torch.no_grad():
            for i in range(0, xf.shape[0], self.batch):
                xb = xf[i:i + self.batch]
                outs.append(self.net(xb, torch.full((xb.shape[0],), int(t), dtype=torch.long)))
        dt = time.perf_counter() - t0
        self.images_per_s = x.shape[0] / dt if dt > 0 else None
        return torch.cat(outs).numpy().astype(np.float64)

    predict = __call__


def save_net(path, net, meta: dict | None = None):
    """Write ``net`` (weights and BatchNorm statistics) and its ``config`` to ``path`` atomically."""
    arrays = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    return save_checkpoint(path, {"format": NET_FORMAT, "version": 1, **net.config}, arrays, meta or {})


def load_net(path, expect: dict | None = None):
    """``(net, meta)`` from a :func:`save_net` file, in eval mode.

    ``expect``: config values that must match (e.g. ``{"kind": "fc", "image_size": 20}``).
    Raises ``CheckpointError`` for a missing, corrupt or foreign file.
    """
    config, arrays, meta = load_checkpoint(path, expect=expect)
    if config.get("format") != NET_FORMAT:
        raise CheckpointError(f"{path}: not a digital denoiser checkpoint (format {config.get('format')!r})")
    cfg = {k: v for k, v in config.items() if k not in ("format", "version")}
    try:
        net = build_net(cfg)
        state = {k: torch.from_numpy(np.array(a)) for k, a in arrays.items()}
        net.load_state_dict(state, strict=True)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: the stored weights do not fit the stored network ({exc})"[:2000]) from None
    return net.eval(), meta
