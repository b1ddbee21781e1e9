"""Reference noise predictors and a fair per-time-set denoising benchmark.

``ZeroPredictor``     predicts eps = 0 (its MSE is E[eps^2] = 1: the "learned nothing" line).
``LinearDenoiser``    one affine map eps ~ W x_t + c per time set, the ridge least-squares fit
                      over noised training images (exact, or sampled): the best a linear
                      (non-optical) model does.
``per_set_mse``       denoising MSE of any ``predict_eps(x_t, t)`` on each time set, using
                      exactly the same images/timesteps/noise for every predictor given the
                      same ``rng`` seed.

Predictors follow the sampler interface of :mod:`optdiff.sampling`: called with float64
``x_t [B, H, W]`` and one int ``t``, they return eps ``[B, H, W]``.
"""

from __future__ import annotations

import numpy as np

from ..diffusion.schedule import NoiseSchedule, noised_moments, timestep_sets

__all__ = ["ZeroPredictor", "LinearDenoiser", "per_set_mse", "normalize_sets"]


def normalize_sets(sets, T: int) -> list[tuple[int, int]]:
    """``sets`` as an int M (-> :func:`timestep_sets`) or ``[(start, stop), ...]`` -> checked list.

    Ranges must be non-empty, inside ``0..T``; they need not cover every timestep but must
    not overlap.
    """
    if isinstance(sets, (int, np.integer)):
        return timestep_sets(T, int(sets))
    out = [(int(a), int(b)) for a, b in sets]
    if not out:
        raise ValueError("sets is empty")
    for a, b in out:
        if not 0 <= a < b <= T:
            raise ValueError(f"time set ({a}, {b}) is not a non-empty range inside 0..{T}")
    srt = sorted(out)
    for (a0, b0), (a1, _) in zip(srt, srt[1:]):
        if a1 < b0:
            raise ValueError(f"time sets ({a0}, {b0}) and ({a1}, ...) overlap")
    return out


def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


class ZeroPredictor:
    """``predict(x_t, t) -> zeros_like(x_t)`` (float64). Callable like a predictor function."""

    def predict(self, x_t: np.ndarray, t: int) -> np.ndarray:
        return np.zeros(np.shape(x_t), dtype=np.float64)

    __call__ = predict


def affine_ridge(x: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """``(W, c)`` minimising ``||y - x W^T - c||^2 + ridge * n * ||W||_F^2`` over the rows of
    ``x [n, D]`` and ``y [n, E]`` (the bias unpenalised), through the normal equations."""
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc = x - mx
    gram = xc.T @ xc
    gram[np.diag_indices_from(gram)] += ridge * x.shape[0]
    rhs = xc.T @ (y - my)
    try:
        Wt = np.linalg.solve(gram, rhs)
    except np.linalg.LinAlgError:
        Wt = np.linalg.lstsq(gram, rhs, rcond=None)[0]
    return Wt.T, my - Wt.T @ mx


class LinearDenoiser:
    """Per-time-set affine noise predictor ``eps = W_s vec(x_t) + c_s``.

    Attributes after :meth:`fit`: ``sets`` list of ``(start, stop)``, ``image_shape``
    ``(H, W)``, ``W`` float64 ``[S, D, D]`` and ``c`` float64 ``[S, D]`` with ``D = H * W``.
    """

    def __init__(self, ridge: float = 1e-3):
        if ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {ridge}")
        self.ridge = float(ridge)
        self.sets: list[tuple[int, int]] | None = None
        self.image_shape: tuple[int, int] | None = None
        self.W: np.ndarray | None = None
        self.c: np.ndarray | None = None
        self._lookup: np.ndarray | None = None

    def fit(self, x0_images: np.ndarray, schedule: NoiseSchedule, sets=10,
            samples_per_set: int | None = None, rng=None) -> LinearDenoiser:
        """Fit one ridge regression per time set.

        For set ``(a, b)``: draw ``samples_per_set`` triples (image uniformly from
        ``x0_images``, ``t`` uniform in ``a..b-1``, ``eps ~ N(0, I)``), form
        ``x_t = q_sample(x0, t, eps)`` and solve
        ``min ||eps - (x_t - m_x) W^T - m_eps||^2 + ridge * N * ||W||_F^2`` through the
        normal equations (bias unpenalised: ``c = m_eps - W m_x``).

        ``samples_per_set=None`` (the default) solves the same problem with the expectation over
        ``t`` and ``eps`` taken exactly (the moments in closed form, the images still the ones
        given; ``rng`` is not used): the least-squares denoiser itself, without the sampled fit's
        estimation noise (about ``D / samples_per_set`` of the MSE: 2 % for 20x20 images and
        20,000 samples).

        Parameters
        ----------
        x0_images
            float ``[K, H, W]`` in ``[-1, 1]``.
        sets
            int ``M`` (consecutive sets from :func:`timestep_sets`) or ``[(start, stop), ...]``.
        samples_per_set
            None (exact), or regression samples per set for the sampled fit (the error it adds is
            about ``D / samples_per_set`` of the MSE).
        rng
            ``numpy.random.Generator`` or seed.
        """
        x0 = np.asarray(x0_images, dtype=np.float64)
        if x0.ndim != 3 or x0.shape[0] < 1:
            raise ValueError(f"x0_images must be [K, H, W] with K >= 1, got {x0.shape}")
        rng = _rng(rng)
        self.sets = normalize_sets(sets, schedule.T)
        self.image_shape = (int(x0.shape[1]), int(x0.shape[2]))
        K, D = x0.shape[0], x0.shape[1] * x0.shape[2]
        flat = x0.reshape(K, D)
        if samples_per_set is None:
            self.W, self.c = _exact_affine(flat, schedule, self.sets, self.ridge)
            self._build_lookup(schedule.T)
            return self
        n = int(samples_per_set)
        if n < 2:
            raise ValueError(f"samples_per_set must be >= 2, got {n}")
        W = np.empty((len(self.sets), D, D))
        c = np.empty((len(self.sets), D))
        for s, (a, b) in enumerate(self.sets):
            idx = rng.integers(0, K, size=n)
            t = rng.integers(a, b, size=n)
            eps = rng.standard_normal((n, D))
            xt = schedule.sqrt_alpha_bar[t, None] * flat[idx] + schedule.sqrt_one_minus_alpha_bar[t, None] * eps
            W[s], c[s] = affine_ridge(xt, eps, self.ridge)
        self.W, self.c = W, c
        self._build_lookup(schedule.T)
        return self

    def _build_lookup(self, T: int) -> None:
        lut = np.full(T, -1, dtype=np.int64)
        for s, (a, b) in enumerate(self.sets):
            lut[a:b] = s
        self._lookup = lut

    def set_for(self, t: int) -> int:
        """Index of the fitted set containing ``t`` (ValueError if none does)."""
        if self._lookup is None:
            raise RuntimeError("LinearDenoiser is not fitted")
        t = int(t)
        if not 0 <= t < self._lookup.size or self._lookup[t] < 0:
            raise ValueError(f"timestep {t} is in none of the fitted time sets {self.sets}")
        return int(self._lookup[t])

    def predict(self, x_t: np.ndarray, t: int) -> np.ndarray:
        """eps prediction float64 ``[B, H, W]`` for ``x_t [B, H, W]`` (or one ``[H, W]``) at ``t``."""
        s = self.set_for(t)
        x = np.asarray(x_t, dtype=np.float64)
        if x.shape[-2:] != self.image_shape:
            raise ValueError(f"x_t images are {x.shape[-2:]}, the denoiser was fitted on {self.image_shape}")
        flat = x.reshape(-1, self.W.shape[1])
        return (flat @ self.W[s].T + self.c[s]).reshape(x.shape)

    __call__ = predict

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for :func:`optdiff.checkpoint.save_checkpoint`: W, c, sets int64 [S, 2], image_shape."""
        if self.W is None:
            raise RuntimeError("LinearDenoiser is not fitted")
        return {"W": self.W, "c": self.c, "sets": np.asarray(self.sets, dtype=np.int64),
                "image_shape": np.asarray(self.image_shape, dtype=np.int64),
                "ridge": np.asarray(self.ridge)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], T: int) -> LinearDenoiser:
        """Inverse of :meth:`to_arrays` (``T`` = schedule length)."""
        obj = cls(ridge=float(arrays.get("ridge", 1e-3)))
        obj.W = np.asarray(arrays["W"], dtype=np.float64)
        obj.c = np.asarray(arrays["c"], dtype=np.float64)
        obj.sets = [(int(a), int(b)) for a, b in np.asarray(arrays["sets"])]
        obj.image_shape = tuple(int(v) for v in np.asarray(arrays["image_shape"]))
        obj._build_lookup(int(T))
        return obj


def _exact_affine(flat: np.ndarray, schedule: NoiseSchedule, sets, ridge: float):
    """Per set, the ridge least-squares ``eps ~ W x_t + c`` under the exact distribution of x_t
    (:func:`~optdiff.diffusion.schedule.noised_moments`): ``W = Cov(eps, x_t) (Cov(x_t) + ridge I)^-1``
    and ``c = -W E[x_t]`` (``E[eps] = 0``)."""
    D = flat.shape[1]
    W, c = np.empty((len(sets), D, D)), np.empty((len(sets), D))
    for k, (mean, cov, cross) in enumerate(noised_moments(schedule, flat, sets)):
        cov[np.diag_indices(D)] += ridge
        W[k] = cross * np.linalg.inv(cov)
        W[k] = 0.5 * (W[k] + W[k].T)          # symmetric in exact arithmetic
        c[k] = -(W[k] @ mean)
    return W, c


def per_set_mse(predict_eps, x0: np.ndarray, schedule: NoiseSchedule, sets=10, rng=None,
                samples: int = 256, timesteps_per_set: int = 8) -> np.ndarray:
    """Mean squared error of ``predict_eps`` against the true noise on each time set.

    For each set, ``timesteps_per_set`` timesteps evenly spread over the set (all of them if
    the set is smaller) each get a batch of about ``samples / timesteps_per_set`` noised
    images (images drawn uniformly from ``x0``, fresh Gaussian noise), and the predictor is
    called once per timestep with that batch. All randomness comes from ``rng`` and the
    predictor consumes none of it, so two predictors evaluated with generators seeded alike
    see identical inputs: a paired, fair comparison.

    Parameters
    ----------
    predict_eps
        ``callable(x_t [B, H, W] float64, t: int) -> eps [B, H, W]``.
    x0
        float ``[K, H, W]`` clean images in ``[-1, 1]``.
    sets
        int ``M`` or ``[(start, stop), ...]`` (see :func:`normalize_sets`).
    samples
        Noised images per set (at least one per timestep).

    Returns
    -------
    float64 ``[S]``: per-set MSE averaged over pixels and samples (1.0 for ``ZeroPredictor``
    in expectation).
    """
    x0 = np.asarray(x0, dtype=np.float64)
    if x0.ndim != 3 or x0.shape[0] < 1:
        raise ValueError(f"x0 must be [K, H, W] with K >= 1, got {x0.shape}")
    rng = _rng(rng)
    sets_ = normalize_sets(sets, schedule.T)
    out = np.empty(len(sets_))
    for s, (a, b) in enumerate(sets_):
        k = min(int(timesteps_per_set), b - a)
        ts = np.unique(np.round(np.linspace(a, b - 1, k)).astype(np.int64))
        counts = np.full(ts.size, max(int(samples), ts.size) // ts.size)
        counts[: max(int(samples), ts.size) % ts.size] += 1
        total, n = 0.0, 0
        for t, m in zip(ts, counts):
            idx = rng.integers(0, x0.shape[0], size=m)
            eps = rng.standard_normal((m,) + x0.shape[1:])
            xt = schedule.q_sample(x0[idx], int(t), eps)
            pred = np.asarray(predict_eps(xt, int(t)), dtype=np.float64)
            if pred.shape != eps.shape:
                raise ValueError(f"predict_eps returned shape {pred.shape} at t={t}, expected {eps.shape}")
            total += float(np.sum((pred - eps) ** 2))
            n += eps.size
        out[s] = total / n
    return out
