"""DDPM noise schedules and the time-aware split of the timesteps into sets.

Timesteps are 0-based: ``t = 0 .. T-1``, where ``t = 0`` is the first noising step (DDPM's
``t = 1``). ``alpha_bar[t] = prod_{s <= t} (1 - beta_s)`` and
``q(x_t | x_0) = N(sqrt(alpha_bar[t]) x_0, (1 - alpha_bar[t]) I)``.

The optical model of Oguz et al. (NeurIPS 2024) uses one set of phase layers per *time set*:
``timestep_sets(T, M)`` splits the ``T`` steps into ``M`` consecutive ranges and
``set_index(t, T, M)`` says which range a timestep belongs to.
"""

from __future__ import annotations

import math

import numpy as np

from ..optics._args import integer, real

__all__ = ["NoiseSchedule", "q_sample", "timestep_sets", "set_index", "noised_moments"]

#: Most diffusion steps a schedule may have (12 float64 arrays of T entries each).
T_MAX = 10_000_000


def _steps(T, name: str = "T") -> int:
    T = integer(T, name)
    if not 1 <= T <= T_MAX:
        raise ValueError(f"{name} must be an integer in 1..{T_MAX}, got {T}")
    return T


def timesteps(t, T: int, name: str = "t") -> np.ndarray:
    """``t`` (an int or an integer array) as int64, each in ``0..T-1``; floats and bools refused."""
    ta = np.asarray(t) if not isinstance(t, (bool, np.bool_)) else None
    if ta is None or ta.dtype == np.bool_ or not (np.issubdtype(ta.dtype, np.integer) or ta.size == 0):
        raise ValueError(f"{name} must be an integer timestep or an integer array, got "
                         f"{type(t).__name__} {t!r}" if ta is None or ta.ndim == 0 else
                         f"{name} must be an integer timestep or an integer array, got dtype {ta.dtype}")
    if ta.size and (ta.min() < 0 or ta.max() >= T):
        raise ValueError(f"{name}: timestep out of range 0..{T - 1}: {t!r}")
    return ta.astype(np.int64)


class NoiseSchedule:
    """Variance schedule of a DDPM with ``T`` steps; all arrays float64 ``[T]``.

    Parameters
    ----------
    T
        Number of diffusion steps (default 1000).
    kind
        ``"linear"``: betas evenly spaced from ``beta_start`` to ``beta_end`` (Ho et al. 2020,
        defaults 1e-4 .. 0.02). ``"cosine"``: ``alpha_bar(t) = f(t) / f(0)`` with
        ``f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2)`` and betas clipped to ``max_beta``
        (Nichol & Dhariwal 2021, ``s = 0.008``, ``max_beta = 0.999``).

    Attributes
    ----------
    betas, alphas (= 1 - betas), alpha_bar, alpha_bar_prev (alpha_bar[t-1], 1 at t = 0),
    sqrt_alpha_bar, sqrt_one_minus_alpha_bar, sqrt_recip_alpha_bar, sqrt_recipm1_alpha_bar,
    posterior_variance (beta tilde: variance of q(x_{t-1} | x_t, x_0); 0 at t = 0),
    posterior_log_variance_clipped (log of it with the t = 0 entry replaced by t = 1's),
    posterior_mean_coef1 / posterior_mean_coef2 (mean = coef1 * x_0 + coef2 * x_t).
    """

    def __init__(self, T: int = 1000, kind: str = "linear", beta_start: float = 1e-4,
                 beta_end: float = 0.02, cosine_s: float = 0.008, max_beta: float = 0.999):
        T = _steps(T)
        if not isinstance(kind, str):
            raise ValueError(f"schedule kind must be 'linear' or 'cosine', got {kind!r}")
        kind = kind.lower()
        beta_start, beta_end = real(beta_start, "beta_start"), real(beta_end, "beta_end")
        cosine_s, max_beta = real(cosine_s, "cosine_s"), real(max_beta, "max_beta")
        if not (math.isfinite(cosine_s) and cosine_s >= 0):
            raise ValueError(f"cosine_s must be a finite number >= 0, got {cosine_s}")
        if not (0.0 < max_beta < 1.0):
            raise ValueError(f"max_beta must be in (0, 1), got {max_beta}")
        if not (0.0 < beta_start <= beta_end < 1.0):  # checked for either kind (both are stored)
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        if kind == "linear":
            betas = np.linspace(beta_start, beta_end, T, dtype=np.float64)
        elif kind == "cosine":
            steps = np.arange(T + 1, dtype=np.float64) / T
            f = np.cos((steps + cosine_s) / (1.0 + cosine_s) * math.pi / 2.0) ** 2
            abar = f / f[0]
            betas = np.clip(1.0 - abar[1:] / abar[:-1], 0.0, max_beta)
        else:
            raise ValueError(f"schedule kind must be 'linear' or 'cosine', got {kind!r}")
        self.T = T
        self.kind = kind
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        self.cosine_s, self.max_beta = float(cosine_s), float(max_beta)

        self.betas = betas
        with np.errstate(all="ignore"):  # a degenerate schedule is refused below, not warned about
            self._derive(betas)
        names = ("betas", "alphas", "alpha_bar", "alpha_bar_prev", "sqrt_alpha_bar",
                 "sqrt_one_minus_alpha_bar", "sqrt_recip_alpha_bar", "sqrt_recipm1_alpha_bar",
                 "posterior_variance", "posterior_log_variance_clipped",
                 "posterior_mean_coef1", "posterior_mean_coef2")
        bad = [n for n in names if not np.all(np.isfinite(getattr(self, n)))]
        if bad or not np.all(self.alpha_bar < 1.0):
            raise ValueError(
                f"NoiseSchedule(T={T}, kind={kind!r}, beta_start={beta_start}, beta_end={beta_end}, "
                f"cosine_s={cosine_s}, max_beta={max_beta}) adds no noise at some step (alpha_bar = 1) or "
                f"gives non-finite {', '.join(bad) or 'values'}")
        for name in names:
            getattr(self, name).setflags(write=False)

    def _derive(self, betas: np.ndarray) -> None:
        T = betas.shape[0]
        self.alphas = 1.0 - betas
        self.alpha_bar = np.cumprod(self.alphas)
        self.alpha_bar_prev = np.concatenate([[1.0], self.alpha_bar[:-1]])
        self.sqrt_alpha_bar = np.sqrt(self.alpha_bar)
        self.sqrt_one_minus_alpha_bar = np.sqrt(1.0 - self.alpha_bar)
        self.sqrt_recip_alpha_bar = 1.0 / self.sqrt_alpha_bar
        self.sqrt_recipm1_alpha_bar = np.sqrt(1.0 / self.alpha_bar - 1.0)
        self.posterior_variance = betas * (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar)
        pv = self.posterior_variance.copy()
        if T > 1:
            pv[0] = pv[1]
        self.posterior_log_variance_clipped = np.log(np.maximum(pv, 1e-300))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alpha_bar_prev) / (1.0 - self.alpha_bar)
        self.posterior_mean_coef2 = (1.0 - self.alpha_bar_prev) * np.sqrt(self.alphas) / (1.0 - self.alpha_bar)

    def __repr__(self) -> str:
        if self.kind == "linear":
            return f"NoiseSchedule(T={self.T}, kind='linear', beta_start={self.beta_start}, beta_end={self.beta_end})"
        return f"NoiseSchedule(T={self.T}, kind='cosine', cosine_s={self.cosine_s}, max_beta={self.max_beta})"

    def config(self) -> dict:
        """JSON-friendly description (e.g. for a checkpoint); ``NoiseSchedule(**cfg)`` rebuilds it."""
        return {"T": self.T, "kind": self.kind, "beta_start": self.beta_start,
                "beta_end": self.beta_end, "cosine_s": self.cosine_s, "max_beta": self.max_beta}

    def _check_t(self, t) -> np.ndarray:
        return timesteps(t, self.T)

    def _per_sample(self, arr: np.ndarray, t, ndim: int) -> np.ndarray:
        """``arr[t]`` shaped to broadcast against a batch ``[B, ...]`` with ``ndim`` dims."""
        ta = self._check_t(t)
        v = arr[ta]
        if ta.ndim == 0:
            return v
        if ta.ndim != 1:
            raise ValueError(f"t must be a scalar or a 1-D array [B], got shape {ta.shape}")
        return v.reshape((-1,) + (1,) * (ndim - 1))

    def q_sample(self, x0: np.ndarray, t, noise: np.ndarray) -> np.ndarray:
        """Sample ``x_t ~ q(x_t | x_0)``: ``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``.

        ``x0`` and ``noise``: float ``[B, H, W]`` (any shape ``[B, ...]``; same shape);
        ``t``: an int (whole batch) or int array ``[B]``. Returns float64 of ``x0``'s shape.
        """
        x0 = np.asarray(x0, dtype=np.float64)
        noise = np.asarray(noise, dtype=np.float64)
        if noise.shape != x0.shape:
            raise ValueError(f"noise shape {noise.shape} != x0 shape {x0.shape}")
        a = self._per_sample(self.sqrt_alpha_bar, t, x0.ndim)
        b = self._per_sample(self.sqrt_one_minus_alpha_bar, t, x0.ndim)
        return a * x0 + b * noise

    def predict_x0(self, x_t: np.ndarray, t, eps: np.ndarray) -> np.ndarray:
        """Invert q_sample: ``x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` (float64)."""
        x_t = np.asarray(x_t, dtype=np.float64)
        a = self._per_sample(self.sqrt_recip_alpha_bar, t, x_t.ndim)
        b = self._per_sample(self.sqrt_recipm1_alpha_bar, t, x_t.ndim)
        return a * x_t - b * np.asarray(eps, dtype=np.float64)

    def eps_from_x0(self, x_t: np.ndarray, t, x0: np.ndarray) -> np.ndarray:
        """Noise consistent with ``x_t`` and ``x0``: ``(x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)``."""
        x_t = np.asarray(x_t, dtype=np.float64)
        a = self._per_sample(self.sqrt_alpha_bar, t, x_t.ndim)
        b = self._per_sample(self.sqrt_one_minus_alpha_bar, t, x_t.ndim)
        return (x_t - a * np.asarray(x0, dtype=np.float64)) / b

    def q_posterior(self, x0: np.ndarray, x_t: np.ndarray, t):
        """Mean ``[B, ...]`` and variance (scalar or ``[B, 1, ...]``) of ``q(x_{t-1} | x_t, x_0)``."""
        x_t = np.asarray(x_t, dtype=np.float64)
        c1 = self._per_sample(self.posterior_mean_coef1, t, x_t.ndim)
        c2 = self._per_sample(self.posterior_mean_coef2, t, x_t.ndim)
        var = self._per_sample(self.posterior_variance, t, x_t.ndim)
        return c1 * np.asarray(x0, dtype=np.float64) + c2 * x_t, var


def q_sample(schedule: NoiseSchedule, x0: np.ndarray, t, noise: np.ndarray) -> np.ndarray:
    """Function form of :meth:`NoiseSchedule.q_sample`."""
    return schedule.q_sample(x0, t, noise)


def noised_moments(schedule: NoiseSchedule, x0_flat: np.ndarray, t_ranges) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Exact moments of ``x_t = s_t x0 + u_t eps`` per time set: for each ``(a, b)`` in
    ``t_ranges``, ``(E[x_t], Cov(x_t), Cov(eps, x_t) / I)`` for x0 uniform over the rows of
    ``x0_flat [K, D]``, t uniform in ``a..b-1`` and ``eps ~ N(0, I)`` independent of both (``s, u``
    = ``sqrt(alpha_bar), sqrt(1 - alpha_bar)``; bars = means over the set's t):
    ``E[x_t] = mean(s) mu``, ``Cov(x_t) = mean(s^2) E[x0 x0^T] + mean(u^2) I - mean(s)^2 mu mu^T``,
    ``Cov(eps, x_t) = mean(u) I``. What a least-squares fit on noised images estimates, without
    the sampling noise. The data's moments are computed once for all sets."""
    ranges = [tuple(int(v) for v in r) for r in t_ranges]
    for a, b in ranges:
        if not 0 <= a < b <= schedule.T:
            raise ValueError(f"t_ranges must be non-empty ranges inside 0..{schedule.T}, got {(a, b)}")
    flat = np.asarray(x0_flat, dtype=np.float64)
    if flat.ndim != 2 or flat.shape[0] < 1:
        raise ValueError(f"x0_flat must be [K, D] with K >= 1, got {flat.shape}")
    mu = flat.mean(axis=0)
    second, outer = flat.T @ flat / flat.shape[0], np.outer(mu, mu)
    out = []
    for a, b in ranges:
        s, u = schedule.sqrt_alpha_bar[a:b], schedule.sqrt_one_minus_alpha_bar[a:b]
        cov = np.mean(s * s) * second - np.mean(s) ** 2 * outer
        cov[np.diag_indices_from(cov)] += np.mean(u * u)
        out.append((np.mean(s) * mu, cov, float(np.mean(u))))
    return out


def _check_TM(T: int, M: int) -> tuple[int, int]:
    T, M = _steps(T), integer(M, "M")
    if not 1 <= M <= T:
        raise ValueError(f"number of time sets M must be in 1..T={T}, got {M}")
    return T, M


def timestep_sets(T: int = 1000, M: int = 10) -> list[tuple[int, int]]:
    """Split timesteps ``0..T-1`` into ``M`` consecutive half-open ranges ``(start, stop)``.

    Sizes differ by at most one; the first ``T % M`` sets are the larger ones (numpy
    ``array_split`` convention). ``timestep_sets(1000, 10)`` is
    ``[(0, 100), (100, 200), ..., (900, 1000)]``. Set ``0`` holds the least noisy steps.
    """
    T, M = _check_TM(T, M)
    q, r = divmod(T, M)
    out, start = [], 0
    for m in range(M):
        stop = start + q + (1 if m < r else 0)
        out.append((start, stop))
        start = stop
    return out


def set_index(t, T: int = 1000, M: int = 10):
    """Index of the time set (see :func:`timestep_sets`) that timestep ``t`` belongs to.

    ``t``: int or int array; returns an int or an int64 array of the same shape.
    """
    T, M = _check_TM(T, M)
    ta = timesteps(t, T)
    q, r = divmod(T, M)
    big = r * (q + 1)
    idx = np.where(ta < big, ta // (q + 1), r + (ta - big) // max(q, 1))
    return int(idx) if idx.ndim == 0 else idx.astype(np.int64)
