"""Time-aware optical diffusion model: M layer sets, each an ODU + a light digital read-out.

The T diffusion steps are split into M consecutive sets (:func:`optdiff.schedule.timestep_sets`,
set 0 = the least noisy steps). Set ``m`` owns phase layers ``phases[m]`` ([L, N, N]) and a
read-out; the model never sees the timestep itself, only which set it belongs to (the layers
that are shown on the modulator). For a noisy image r_t in set m::

    I   = bin(|ODU(encode(r_t); phases[m])|^2)           camera, [B, H, W]
    out = scale[m] * I + offset[m]  (+ skip[m] * r_t)     digital read-out
    eps_hat = out                                         (eps sets)
    eps_hat = (r_t - sqrt(abar_t) out) / sqrt(1-abar_t)   (x0 sets: m in x0_sets)

Read-out choice: an affine map (scale and offset) *per camera pixel and set* (``readout =
"pixel"``, default) or one scale and offset per set (``"scalar"``). The camera intensity of an
imaging ODU has a position-dependent gain (vignetting, fall-off towards the window edge) and a
position-dependent background (the biased encoding), which a per-pixel affine map removes
at the cost of 2*H*W numbers per set (800 at 20x20, vs ~160k phases per set at N=200): still a
light read-out, and unlike a normalisation it is bounded (no division by a small intensity).
Both are initialised by least squares on a training batch (:meth:`TimeAwareODU.calibrate`).

Gradients: dLoss/d(read-out) in closed form; dLoss/d(phases) through
``PhaseStack.backward`` (exact adjoint, no autodiff framework).
"""

from __future__ import annotations

import numpy as np

from ..config import Config
from ..odu import ODU, init_phases
from ..optics._args import integer, real
from .schedule import NoiseSchedule, set_index, timestep_sets, timesteps

__all__ = ["TimeAwareODU", "MODEL_VERSION", "generate"]

#: Version of the model's array layout in checkpoints (bump when it changes).
MODEL_VERSION = 1


class TimeAwareODU:
    """M optical layer sets sharing one geometry; ``predict_eps(x_t, t)`` for the samplers.

    Parameters
    ----------
    cfg : Config
        Uses ``cfg.optics``, ``cfg.model``, ``cfg.diffusion`` (validated here).
    nthreads : int or None
        Threads for the optical core.
    precision : "single" (float32 phases, complex64 fields) or "double" (for gradient checks).
    seed : int or None
        Seed of the initial phase noise (default ``cfg.train.seed``).
    backend : str or None
        Where the optics run (default ``cfg.train.backend``): "cpu", "cuda" or "cuda-emu".
    """

    def __init__(self, cfg: Config, nthreads: int | None = None, precision: str = "single",
                 seed: int | None = None, backend: str | None = None):
        cfg.validate()
        self.cfg = cfg
        self.M = cfg.model.sets
        self.H = self.W = cfg.model.image_size
        self.odu = ODU(cfg.optics, self.H, nthreads=nthreads, precision=precision,
                       backend=cfg.train.backend if backend is None else backend)
        d = cfg.diffusion
        self.schedule = NoiseSchedule(d.T, d.schedule, d.beta_start, d.beta_end)
        self.set_ranges = timestep_sets(d.T, self.M)
        self.x0_sets = frozenset(cfg.model.x0_set_list(cfg.diffusion.T))
        rng = np.random.default_rng(cfg.train.seed if seed is None else seed)
        L, N = cfg.optics.layers, cfg.optics.n
        phases = np.empty((self.M, L, N, N), dtype=self.odu.rdtype)
        for m in range(self.M):
            phases[m] = init_phases(cfg.optics, rng=rng, image_size=self.H)
        ro = cfg.model.readout
        self.subpixel = ro == "subpixel"
        shape = (self.M, 1, 1) if ro == "scalar" else (self.M, self.H, self.W)
        kH = self.odu.k * self.H
        self.params: dict[str, np.ndarray] = {
            "phases": phases,
            "scale": np.ones((self.M, kH, kH) if self.subpixel else shape, dtype=np.float64),
            "offset": np.zeros(shape, dtype=np.float64),
        }
        if cfg.model.skip != "none":
            sshape = (self.M, self.H, self.W) if cfg.model.skip == "pixel" else (self.M, 1, 1)
            self.params["skip"] = np.zeros(sshape, dtype=np.float64)

    # ------------------------------------------------------------------ bookkeeping
    @property
    def T(self) -> int:
        return self.schedule.T

    def set_of(self, t) -> int:
        return set_index(t, self.T, self.M)

    def signature(self) -> dict:
        return self.cfg.model_signature()

    def arrays(self) -> dict:
        return dict(self.params)

    def load_arrays(self, arrays) -> None:
        """Copy parameter arrays (e.g. from a checkpoint) into the model, checking shapes."""
        for name, p in self.params.items():
            if name not in arrays:
                raise ValueError(f"missing model array {name!r}")
            a = np.asarray(arrays[name])
            if a.shape != p.shape:
                raise ValueError(f"model array {name!r} has shape {a.shape}, expected {p.shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"model array {name!r} contains NaN or Inf")
            p[...] = a.astype(p.dtype)
        extra = set(k for k in arrays if not k.startswith("adam")) - set(self.params)
        if extra:
            raise ValueError(f"unexpected model arrays {sorted(extra)} (other read-out or skip setting?)")

    def _x0_factors(self, m: int, t):
        """For x0 sets: eps = a_t * r - b_t * out with a_t = 1/sqrt(1-abar), b_t = sqrt(abar)/sqrt(1-abar)."""
        s = self.schedule
        ta = np.asarray(t, dtype=np.int64)
        a = 1.0 / s.sqrt_one_minus_alpha_bar[ta]
        b = s.sqrt_alpha_bar[ta] / s.sqrt_one_minus_alpha_bar[ta]
        if ta.ndim == 1:
            a, b = a[:, None, None], b[:, None, None]
        return a, b

    # ------------------------------------------------------------------ forward
    def camera_image(self, r: np.ndarray, m: int) -> np.ndarray:
        """What set ``m``'s read-out reads: the binned intensity ``[B, H, W]``, or with the
        ``subpixel`` read-out the unbinned camera window ``[B, kH, kW]``."""
        ph = self.params["phases"][m]
        return self.odu.window_intensity(r, ph) if self.subpixel else self.odu.intensity(r, ph)

    def camera_image_train(self, r: np.ndarray, m: int):
        """:meth:`camera_image` and the tape for :meth:`camera_backward`."""
        ph = self.params["phases"][m]
        return self.odu.window_train(r, ph) if self.subpixel else self.odu.intensity_train(r, ph)

    def camera_backward(self, tape, g_image: np.ndarray) -> np.ndarray:
        """Phase gradient from dLoss/d(:meth:`camera_image`)."""
        return self.odu.backward_window(tape, g_image) if self.subpixel else self.odu.backward(tape, g_image)

    def readout(self, m: int, I: np.ndarray, r: np.ndarray) -> np.ndarray:
        """The digital read-out of :meth:`camera_image` ``I`` (no timestep conversion)."""
        p = self.params
        if self.subpixel:
            out = self.odu.bin_window(p["scale"][m] * I) + p["offset"][m]
        else:
            out = p["scale"][m] * I + p["offset"][m]
        if "skip" in p:
            out = out + p["skip"][m] * r
        return out

    def readout_grads(self, m: int, I: np.ndarray, r: np.ndarray, g_out: np.ndarray):
        """(gradients of the read-out's arrays, dLoss/dI) from dLoss/d(read-out) ``g_out``."""
        p = self.params

        def red(x, like):
            return x.sum(axis=0) if p[like].shape[1:] != (1, 1) else np.array([[x.sum()]])

        grads = {"offset": red(g_out, "offset")}
        if self.subpixel:
            g_w = self.odu.unbin_window(g_out)                      # d loss / d (scale * I)
            grads["scale"] = np.einsum("bij,bij->ij", g_w, I)
            g_I = g_w * p["scale"][m]
        else:
            grads["scale"] = red(g_out * I, "scale")
            g_I = g_out * p["scale"][m]
        if "skip" in p:
            grads["skip"] = red(g_out * r, "skip")
        return grads, g_I

    def predict(self, r: np.ndarray, t, m: int | None = None) -> np.ndarray:
        """Predicted noise for ``r [B, H, W]`` at timestep(s) ``t`` (int or int array [B], one set)."""
        r = np.asarray(r, dtype=np.float64)
        if m is None:
            ms = np.unique(np.atleast_1d(self.set_of(t)))
            if ms.size != 1:
                raise ValueError("all timesteps of one call must belong to the same set")
            m = int(ms[0])
        out = self.readout(m, self.camera_image(r, m), r)
        if m in self.x0_sets:
            a, b = self._x0_factors(m, t)
            return a * r - b * out
        return out

    def predict_eps(self, x_t: np.ndarray, t: int, batch: int = 256) -> np.ndarray:
        """Sampler interface: ``x_t [B, H, W]``, one integer timestep -> eps ``[B, H, W]``."""
        x_t = self._real_batch(x_t, "x_t")
        t = integer(t, "t")
        if not 0 <= t < self.T:
            raise ValueError(f"t must be a timestep in 0..{self.T - 1}, got {t}")
        batch = integer(batch, "batch")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        m = self.set_of(t)
        outs = [self.predict(x_t[i:i + batch], t, m) for i in range(0, x_t.shape[0], batch)]
        return np.concatenate(outs, axis=0) if outs else np.zeros_like(x_t)

    __call__ = predict_eps

    def _real_batch(self, x, name: str) -> np.ndarray:
        """``x`` as float64 ``[B, H, W]`` of finite real numbers, or a ValueError/TypeError naming it."""
        try:
            a = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be an array [B, {self.H}, {self.W}] of real numbers ({exc})") from None
        if a.dtype.kind not in "fiu":
            raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
        if a.ndim != 3 or a.shape[1:] != (self.H, self.W):
            raise ValueError(f"{name} must be [B, {self.H}, {self.W}], got {a.shape}")
        a = a.astype(np.float64, copy=False)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or Inf")
        return a

    # ------------------------------------------------------------------ training
    def loss_and_grads(self, m: int, r: np.ndarray, t: np.ndarray, eps: np.ndarray,
                       weight: float = 1.0, return_pred: bool = False):
        """Weighted eps-MSE of set ``m`` on a batch and its gradients.

        Returns ``(loss, grads)`` with ``loss = weight * mean((eps_hat - eps)^2)`` (float) and
        ``grads = {name: d loss / d params[name][m]}``. ``r``: noisy images [B, H, W];
        ``t``: their timesteps (int array [B], all in set m); ``eps``: the true noise (or any
        target). With ``return_pred`` also the prediction: ``(loss, grads, eps_hat)``.
        """
        m = integer(m, "m")
        if not 0 <= m < self.M:
            raise ValueError(f"m must be a set index in 0..{self.M - 1}, got {m}")
        r, eps = self._real_batch(r, "r"), self._real_batch(eps, "eps")
        if eps.shape != r.shape:
            raise ValueError(f"eps must have the shape of r {r.shape}, got {eps.shape}")
        t = timesteps(t, self.T, "t")
        lo, hi = self.set_ranges[m]
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != r.shape[0]) or (t.size and (t.min() < lo or t.max() >= hi)):
            raise ValueError(f"t must be one timestep or one per image ([{r.shape[0]}]) of set {m} "
                             f"({lo}..{hi - 1}), got {t!r}")
        weight = real(weight, "weight")
        if not 0.0 <= weight <= 1e12:  # a loss weight; beyond this the loss and gradients overflow
            raise ValueError(f"weight must be a number in [0, 1e12], got {weight}")
        I, tape = self.camera_image_train(r, m)
        out = self.readout(m, I, r)
        if m in self.x0_sets:
            a, b = self._x0_factors(m, t)
            eps_hat = a * r - b * out
        else:
            b = None
            eps_hat = out
        diff = eps_hat - eps
        loss = weight * float(np.mean(diff * diff))
        g = (2.0 * weight / diff.size) * diff                      # d loss / d eps_hat
        g_out = -b * g if b is not None else g                     # d loss / d out
        grads, g_I = self.readout_grads(m, I, r, g_out)
        grads["phases"] = self.camera_backward(tape, g_I)
        return (loss, grads, eps_hat) if return_pred else (loss, grads)

    def calibrate(self, m: int, r: np.ndarray, t: np.ndarray, eps: np.ndarray, ridge: float = 1e-6) -> None:
        """Least-squares fit of set ``m``'s read-out (scale, offset, skip) to a batch, phases fixed.

        Per pixel (``readout = "pixel"``) or over all pixels (``"scalar"``); the target is eps
        (or x0 for x0 sets).
        """
        p = self.params
        r = np.asarray(r, dtype=np.float64)
        I = self.camera_image(r, m)
        if self.subpixel:                       # each image pixel reads its k x k camera pixels
            I = self.odu.camera_blocks(I)
        w = np.ones((r.shape[0], 1, 1))
        if m in self.x0_sets:
            # out predicts x0; eps-MSE = (abar / (1 - abar)) * x0-MSE, so weight the rows
            s = self.schedule
            ta = np.asarray(t, dtype=np.int64)
            target = (r - s.sqrt_one_minus_alpha_bar[ta][:, None, None] * eps) / s.sqrt_alpha_bar[ta][:, None, None]
            w = (s.sqrt_alpha_bar[ta] / s.sqrt_one_minus_alpha_bar[ta])[:, None, None]
        else:
            target = eps
        feats = [I[..., None] if I.ndim == 3 else I, np.ones(r.shape + (1,))]
        has_skip = "skip" in p
        if has_skip:
            feats.append(r[..., None])
        nI = feats[0].shape[-1]                                      # camera features per pixel
        X = np.concatenate(feats, axis=-1) * w[..., None]            # [B, H, W, F], rows weighted
        target = target * w
        pixel = p["scale"].shape[1:] != (1, 1)
        if pixel:
            G = np.einsum("bhwf,bhwg->hwfg", X, X)
            y = np.einsum("bhwf,bhw->hwf", X, target)
        else:
            G = np.einsum("bhwf,bhwg->fg", X, X)[None, None]
            y = np.einsum("bhwf,bhw->f", X, target)[None, None]
        F = X.shape[-1]
        scale = np.trace(G, axis1=-2, axis2=-1)[..., None, None] / F
        G = G + ridge * scale * np.eye(F)
        coef = np.linalg.solve(G, y[..., None])[..., 0]              # [h, w, F]
        if has_skip and ((p["skip"].shape[1:] == (1, 1)) != (not pixel)):
            # skip and read-out of different granularity: fit the read-out only, skip = 0
            X2 = X[..., :nI + 1]
            G2 = np.einsum("bhwf,bhwg->hwfg", X2, X2) if pixel else np.einsum("bhwf,bhwg->fg", X2, X2)[None, None]
            y2 = np.einsum("bhwf,bhw->hwf", X2, target) if pixel else np.einsum("bhwf,bhw->f", X2, target)[None, None]
            G2 = G2 + ridge * (np.trace(G2, axis1=-2, axis2=-1)[..., None, None] / (nI + 1)) * np.eye(nI + 1)
            coef = np.linalg.solve(G2, y2[..., None])[..., 0]
            p["skip"][m] = 0.0
            has_skip = False
        if self.subpixel:                       # bin_window averages: a camera pixel's gain is k^2 x its coefficient
            p["scale"][m] = self.odu.window_from_blocks(coef[..., :nI] * nI)
        else:
            p["scale"][m] = coef[..., 0].reshape(p["scale"].shape[1:])
        p["offset"][m] = coef[..., nI].reshape(p["offset"].shape[1:])
        if has_skip:
            p["skip"][m] = coef[..., nI + 1].reshape(p["skip"].shape[1:])

    # ------------------------------------------------------------------ evaluation
    def set_mse(self, m: int, r: np.ndarray, t: np.ndarray, eps: np.ndarray, batch: int = 256) -> float:
        """eps-MSE of set ``m`` (no gradients)."""
        tot = 0.0
        for i in range(0, r.shape[0], batch):
            e = self.predict(r[i:i + batch], t[i:i + batch], m)
            tot += float(np.sum((e - eps[i:i + batch]) ** 2))
        return tot / eps.size

    def light_fractions(self) -> np.ndarray:
        """Per set, the fraction of a mid-grey input's light reaching the camera window."""
        return np.array([self.odu.light_fraction(self.params["phases"][m]) for m in range(self.M)])


def generate(predict_eps, schedule: NoiseSchedule, sample_cfg, count: int, image_size: int,
             trajectory: bool = False, progress: bool = False):
    """Draw ``count`` samples with the sampler of ``sample_cfg`` (:class:`~optdiff.config.SampleConfig`).

    Samples are drawn in chunks of ``sample_cfg.batch``; chunk ``i`` uses the random stream
    ``default_rng([seed, i])``, so a given seed always gives the same images whatever the
    number of chunks already drawn. With ``trajectory`` also returns the first chunk's
    trajectory dict (see :func:`optdiff.sampling.ddpm_sample`).
    """
    from .samplers import ddim_sample, ddpm_sample

    count, image_size = integer(count, "count"), integer(image_size, "image_size")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    outs, traj = [], None
    for i, start in enumerate(range(0, count, sample_cfg.batch)):
        b = min(sample_cfg.batch, count - start)
        rng = np.random.default_rng([sample_cfg.seed, i])
        want = trajectory and i == 0
        shape = (b, image_size, image_size)
        if sample_cfg.sampler == "ddpm":
            res = ddpm_sample(predict_eps, schedule, shape, rng, clip_x0=sample_cfg.clip_x0,
                              return_trajectory=want, progress=progress)
        else:
            res = ddim_sample(predict_eps, schedule, shape, rng, steps=sample_cfg.steps, eta=sample_cfg.eta,
                              clip_x0=sample_cfg.clip_x0, return_trajectory=want, progress=progress)
        if want:
            res, traj = res
            traj = dict(traj, final=res)
        outs.append(res)
    x = np.concatenate(outs, axis=0)
    return (x, traj) if trajectory else x
