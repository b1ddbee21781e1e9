"""Reverse-diffusion samplers (DDPM ancestral and DDIM) for any noise predictor.

A predictor is a callable ``predict_eps(x_t, t) -> eps`` with ``x_t`` float64 ``[B, H, W]``
and one integer timestep ``t`` (0-based, see :mod:`optdiff.schedule`) for the whole batch;
it returns the predicted noise, a real array of the same shape. Optical models, the
baselines in :mod:`optdiff.baselines` and test oracles all fit this interface.

Both samplers draw every random number from the ``numpy.random.Generator`` they are given
(an int seed is accepted too), so equal seeds give equal samples. A prediction containing
NaN/Inf raises ``FloatingPointError`` naming the timestep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ..optics._args import integer, real
from .schedule import NoiseSchedule

__all__ = ["ddpm_sample", "ddim_sample", "ddim_timesteps"]

PredictEps = Callable[[np.ndarray, int], np.ndarray]

#: Largest DDIM eta (as in the configuration): more noise than this makes no sampler.
ETA_MAX = 10.0


def _rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (bool, np.bool_, float, np.floating)):
        raise ValueError(f"rng must be a numpy Generator, an integer seed or None, got {rng!r}")
    try:
        return np.random.default_rng(rng)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"rng must be a numpy Generator, an integer seed or None, got {rng!r} ({exc})") from None


def _check_args(predict_eps, schedule, shape) -> tuple[int, ...]:
    if not callable(predict_eps):
        raise TypeError(f"predict_eps must be a callable (x_t, t) -> eps, got {type(predict_eps).__name__}")
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise ValueError(f"shape must be [B, H, W] with positive sizes, got {shape!r}")
    shape = tuple(integer(s, "shape") for s in shape)
    if len(shape) < 2 or any(not 1 <= s < 1 << 31 for s in shape):
        raise ValueError(f"shape must be [B, H, W] with positive sizes, got {shape}")
    return shape


def _predict(predict_eps: PredictEps, x: np.ndarray, t: int, step: int, nsteps: int) -> np.ndarray:
    eps = np.asarray(predict_eps(x, t))
    if eps.shape != x.shape:
        raise ValueError(f"predict_eps returned shape {eps.shape} at t={t}, expected {x.shape}")
    if np.iscomplexobj(eps):
        raise TypeError(f"predict_eps returned complex values at t={t}")
    if not np.all(np.isfinite(eps)):
        bad = int(np.count_nonzero(~np.isfinite(eps)))
        raise FloatingPointError(
            f"predict_eps returned {bad} non-finite value(s) (NaN/Inf) at timestep t={t} "
            f"(sampling step {step + 1} of {nsteps})")
    return eps.astype(np.float64, copy=False)


def _record_set(trajectory_steps, available: Sequence[int], default_count: int = 10) -> set[int]:
    if trajectory_steps is None:
        k = min(default_count, len(available))
        pick = np.unique(np.linspace(0, len(available) - 1, k).round().astype(int))
        return {int(available[i]) for i in pick}
    if isinstance(trajectory_steps, (str, bytes)) or not hasattr(trajectory_steps, "__iter__"):
        raise ValueError(f"trajectory_steps must be a list of timesteps, got {trajectory_steps!r}")
    wanted = {integer(t, "trajectory_steps") for t in trajectory_steps}
    missing = wanted - set(int(t) for t in available)
    if missing:
        raise ValueError(f"trajectory_steps {sorted(missing)} are not visited by this sampler")
    return wanted


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm  # optional dependency, only needed for progress bars

    return tqdm(total=total, desc=desc, leave=False)


def _finish_trajectory(ts: list[int], xs: list[np.ndarray], x0s: list[np.ndarray], shape) -> dict:
    if ts:
        return {"t": np.asarray(ts, dtype=np.int64), "x": np.stack(xs), "x0_pred": np.stack(x0s)}
    return {"t": np.zeros(0, np.int64), "x": np.zeros((0,) + shape), "x0_pred": np.zeros((0,) + shape)}


def ddpm_sample(
    predict_eps: PredictEps,
    schedule: NoiseSchedule,
    shape: Sequence[int],
    rng: np.random.Generator | int | None,
    clip_x0: bool = True,
    return_trajectory: bool = False,
    trajectory_steps: Iterable[int] | None = None,
    progress: bool = False,
    variance: str = "posterior",
):
    """Ancestral DDPM sampling (Ho et al. 2020), ``T`` predictor calls.

    Starts from ``x_{T-1} ~ N(0, I)`` and for ``t = T-1 .. 0`` draws
    ``x_{t-1} = mean_t + sigma_t z`` (no noise at ``t = 0``).

    With ``clip_x0`` the predicted ``x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` is
    clipped to ``[-1, 1]`` and the mean is the posterior mean
    ``coef1_t * x0 + coef2_t * x_t``; this bounds every state, so a poor predictor cannot
    make the chain diverge. Without it the mean is
    ``(x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t)`` (identical when nothing clips).

    Parameters
    ----------
    shape
        ``(B, H, W)`` of the samples.
    rng
        ``numpy.random.Generator`` (or a seed) supplying the start noise and every step's noise.
    variance
        ``"posterior"`` (sigma_t^2 = beta tilde_t, default) or ``"beta"`` (sigma_t^2 = beta_t).
    return_trajectory, trajectory_steps
        Also return a dict ``{"t": int64 [S], "x": float64 [S, B, H, W], "x0_pred": float64
        [S, B, H, W]}`` with the state fed to the predictor at each recorded ``t`` (descending
        order) and the x0 predicted from it. Default: 10 timesteps evenly spread over
        ``T-1 .. 0`` (both ends included).
    progress
        Show a tqdm progress bar.

    Returns
    -------
    samples float64 ``[B, H, W]``, or ``(samples, trajectory)`` with ``return_trajectory``.
    """
    shape = _check_args(predict_eps, schedule, shape)
    rng = _rng(rng)
    if variance not in ("posterior", "beta"):
        raise ValueError(f"variance must be 'posterior' or 'beta', got {variance!r}")
    T = schedule.T
    order = list(range(T - 1, -1, -1))
    record = _record_set(trajectory_steps, order) if return_trajectory else set()
    rec_t, rec_x, rec_x0 = [], [], []
    sigma2 = schedule.posterior_variance if variance == "posterior" else schedule.betas

    x = rng.standard_normal(shape)
    bar = _progress(T, progress, "DDPM")
    try:
        for step, t in enumerate(order):
            eps = _predict(predict_eps, x, t, step, T)
            need_x0 = clip_x0 or t in record
            x0 = schedule.predict_x0(x, t, eps) if need_x0 else None
            if clip_x0:
                x0 = np.clip(x0, -1.0, 1.0)
                if t == 0:  # coef1 = 1, coef2 = 0 exactly in exact arithmetic
                    mean = x0.copy()
                else:
                    mean = schedule.posterior_mean_coef1[t] * x0 + schedule.posterior_mean_coef2[t] * x
            else:
                mean = (x - schedule.betas[t] / schedule.sqrt_one_minus_alpha_bar[t] * eps) / np.sqrt(schedule.alphas[t])
            if t in record:
                rec_t.append(t)
                rec_x.append(x.copy())
                rec_x0.append(x0.copy())
            if t > 0:
                x = mean + np.sqrt(sigma2[t]) * rng.standard_normal(shape)
            else:
                x = mean
            if not np.all(np.isfinite(x)):
                raise FloatingPointError(f"DDPM state became non-finite at timestep t={t}")
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if return_trajectory:
        return x, _finish_trajectory(rec_t, rec_x, rec_x0, shape)
    return x


def ddim_timesteps(T: int, steps: int) -> np.ndarray:
    """The ``steps`` timesteps DDIM visits, descending: ``round(linspace(T-1, 0, steps))``.

    Both ends are included (``T-1`` first, ``0`` last); int64 ``[steps]``, strictly
    decreasing. ``steps`` must be in ``1..T`` (``steps = 1`` visits only ``T-1``).
    """
    steps = integer(steps, "steps")
    if not 1 <= steps <= T:
        raise ValueError(f"DDIM steps must be in 1..T={T}, got {steps}")
    if steps == 1:
        return np.array([T - 1], dtype=np.int64)
    ts = np.round(np.linspace(T - 1, 0, steps)).astype(np.int64)
    assert np.all(np.diff(ts) < 0)
    return ts


def ddim_sample(
    predict_eps: PredictEps,
    schedule: NoiseSchedule,
    shape: Sequence[int],
    rng: np.random.Generator | int | None,
    steps: int = 50,
    eta: float = 0.0,
    clip_x0: bool = True,
    return_trajectory: bool = False,
    trajectory_steps: Iterable[int] | None = None,
    progress: bool = False,
):
    """DDIM sampling (Song et al. 2021) over ``steps`` timesteps (:func:`ddim_timesteps`).

    At each visited ``t`` with successor ``s`` (``abar_s = 1`` after the last step):
    ``x0 = predict_x0(x_t, eps)`` (clipped to ``[-1, 1]`` with ``clip_x0``, and then ``eps``
    is recomputed from the clipped ``x0`` so the update stays consistent),
    ``sigma = eta * sqrt((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s))`` and
    ``x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s - sigma^2) eps + sigma z``.
    ``eta = 0`` is deterministic given the start noise; ``eta = 1`` matches DDPM's variance.

    Parameters and return value as :func:`ddpm_sample` (the trajectory records only visited
    timesteps; the default is up to 10 of them evenly spread).
    """
    shape = _check_args(predict_eps, schedule, shape)
    rng = _rng(rng)
    eta = real(eta, "eta")
    if not 0.0 <= eta <= ETA_MAX:
        raise ValueError(f"eta must be a number in [0, {ETA_MAX:g}] (1: DDPM's variance), got {eta}")
    ts = ddim_timesteps(schedule.T, steps)
    record = _record_set(trajectory_steps, list(ts)) if return_trajectory else set()
    rec_t, rec_x, rec_x0 = [], [], []
    ab = schedule.alpha_bar

    x = rng.standard_normal(shape)
    bar = _progress(len(ts), progress, "DDIM")
    try:
        for step, t in enumerate(ts):
            t = int(t)
            eps = _predict(predict_eps, x, t, step, len(ts))
            x0 = schedule.predict_x0(x, t, eps)
            if clip_x0:
                x0 = np.clip(x0, -1.0, 1.0)
                eps = schedule.eps_from_x0(x, t, x0)
            if t in record:
                rec_t.append(t)
                rec_x.append(x.copy())
                rec_x0.append(x0.copy())
            ab_t = ab[t]
            ab_s = ab[int(ts[step + 1])] if step + 1 < len(ts) else 1.0
            sigma = eta * np.sqrt((1.0 - ab_s) / (1.0 - ab_t) * (1.0 - ab_t / ab_s))
            dir_coef = np.sqrt(max(1.0 - ab_s - sigma**2, 0.0))
            x = np.sqrt(ab_s) * x0 + dir_coef * eps
            if sigma > 0:
                x = x + sigma * rng.standard_normal(shape)
            if not np.all(np.isfinite(x)):
                raise FloatingPointError(f"DDIM state became non-finite at timestep t={t}")
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if return_trajectory:
        return x, _finish_trajectory(rec_t, rec_x, rec_x0, shape)
    return x
