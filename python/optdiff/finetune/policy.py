"""The ODU's ancestral sampler as a stochastic policy, with exact log-probabilities and gradients.

Each sampling step from timestep ``t`` to its successor ``s`` (``s = t - 1`` for DDPM; a DDIM
subsequence with eta = 1 when ``steps < T``) is a Gaussian transition::

    x0   = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t),   x0c = clip(x0, -1, 1)
    epsc = (x_t - sqrt(abar_t) x0c) / sqrt(1 - abar_t)
    sigma_t^2 = (1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)
    mu_theta(x_t) = sqrt(abar_s) x0c + sqrt(1 - abar_s - sigma_t^2) epsc
    log p_theta(x_s | x_t) = -|x_s - mu|^2 / (2 sigma_t^2) - D/2 log(2 pi sigma_t^2)

which for ``s = t - 1`` is DDPM's posterior mean and variance (``ddpm_sample`` with
``clip_x0``: the same numbers up to round-off). The last step (to ``abar = 1``) has
``sigma = 0``: deterministic, not part of the policy.

Gradients (no autodiff framework): ``d logp / d mu = (x_s - mu) / sigma^2``; ``d mu / d eps_hat``
is the constant ``sqrt(1 - abar_s - sigma^2) - sqrt(abar_s) sqrt(1/abar_t - 1)`` on pixels whose
x0 is not clipped and 0 on clipped ones; ``eps_hat`` is the model's read-out of the camera image
(:class:`~optdiff.diffusion.model.TimeAwareODU`), whose gradient w.r.t. the read-out is closed
form and w.r.t. the phases comes from the ODU's adjoint (``ODU.backward``).

The sampler and :meth:`ODUPolicy.log_prob` evaluate the optics the same way (``intensity`` and
``intensity_train`` give bit-identical images, independent of the batch), so the log-probability
stored while sampling equals the one recomputed during the update with unchanged parameters:
the first importance ratio of every round is exactly 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..diffusion.model import TimeAwareODU
from ..diffusion.samplers import ddim_timesteps
from ..optics._args import integer

__all__ = ["ODUPolicy", "Trajectories", "parse_sets"]


def parse_sets(spec, M: int) -> tuple[int, ...]:
    """Time sets to finetune: ``"all"``, ``"low"`` (the less noisy half, sets ``0 .. ceil(M/2)-1``)
    or a list / comma string of set indices (set 0 = the least noisy steps)."""
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s == "all":
            return tuple(range(M))
        if s == "low":
            return tuple(range((M + 1) // 2))
        try:
            items = [int(v) for v in s.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"sets must be 'all', 'low' or comma-separated set indices, got {spec!r}") from None
    else:
        items = [integer(v, "sets") for v in spec]
    if not items or any(not 0 <= v < M for v in items):
        raise ValueError(f"sets must name time sets in 0..{M - 1}, got {spec!r}")
    return tuple(sorted(set(items)))


@dataclass
class Trajectories:
    """Sampled trajectories of one round: ``B`` samples, ``S`` trainable steps each.

    ``steps``: int64 ``[S]`` indices into the policy's timestep list; ``x_t``, ``x_next``:
    float64 ``[S, B, H, W]`` (the state before and after each trainable step); ``logp``:
    float64 ``[S, B]`` log-probabilities under the sampling parameters; ``final``: the samples
    ``[B, H, W]`` in [-1, 1].
    """

    steps: np.ndarray
    x_t: np.ndarray
    x_next: np.ndarray
    logp: np.ndarray
    final: np.ndarray

    def subset(self, idx) -> Trajectories:
        idx = np.asarray(idx)
        return Trajectories(self.steps, self.x_t[:, idx], self.x_next[:, idx], self.logp[:, idx], self.final[idx])


class ODUPolicy:
    """The sampler of ``model`` as a policy (see the module docstring).

    Parameters
    ----------
    model : TimeAwareODU
        Its ``params`` are read at every call (the finetuner updates them in place).
    steps : int or None
        Sampling steps; ``None`` or ``T``: every timestep (DDPM). Fewer: the DDIM subsequence
        with eta = 1.
    sets : tuple of int
        Time sets whose steps are trained (the others are sampled but not stored).
    """

    def __init__(self, model: TimeAwareODU, steps: int | None = None, sets=None):
        if not isinstance(model, TimeAwareODU):
            raise TypeError(f"model must be a TimeAwareODU, got {type(model).__name__}")
        self.model = model
        T = model.T
        steps = T if steps is None else integer(steps, "steps")
        if not 2 <= steps <= T:
            raise ValueError(f"steps must be in 2..T={T}, got {steps}")
        self.ts = np.arange(T - 1, -1, -1, dtype=np.int64) if steps == T else ddim_timesteps(T, steps)
        ab = model.schedule.alpha_bar
        n = len(self.ts)
        self.ab_t = ab[self.ts]
        self.ab_s = np.array([ab[self.ts[i + 1]] if i + 1 < n else 1.0 for i in range(n)])
        var = (1.0 - self.ab_s) / (1.0 - self.ab_t) * (1.0 - self.ab_t / self.ab_s)
        self.sigma2 = np.maximum(var, 0.0)
        self.dir_coef = np.sqrt(np.maximum(1.0 - self.ab_s - self.sigma2, 0.0))
        # d mu / d eps_hat on pixels whose x0 is not clipped
        self.k = self.dir_coef - np.sqrt(self.ab_s) * np.sqrt(1.0 / self.ab_t - 1.0)
        self.sets = parse_sets("all" if sets is None else sets, model.M)
        stoch = self.sigma2 > 0
        in_sets = np.array([model.set_of(int(t)) in self.sets for t in self.ts])
        self.train_steps = np.flatnonzero(stoch & in_sets).astype(np.int64)
        if self.train_steps.size == 0:
            raise ValueError(f"no stochastic sampling step lies in the time sets {list(self.sets)}")
        self.D = model.H * model.W

    # ------------------------------------------------------------------ the transition
    def _mean(self, x: np.ndarray, i: int, eps: np.ndarray):
        """Transition mean ``mu`` and the mask of unclipped x0 pixels."""
        ab_t = self.ab_t[i]
        x0 = (x - np.sqrt(1.0 - ab_t) * eps) / np.sqrt(ab_t)
        x0c = np.clip(x0, -1.0, 1.0)
        epsc = (x - np.sqrt(ab_t) * x0c) / np.sqrt(1.0 - ab_t)
        mu = np.sqrt(self.ab_s[i]) * x0c + self.dir_coef[i] * epsc
        return mu, (np.abs(x0) <= 1.0)

    def _gauss_logp(self, x_next: np.ndarray, mu: np.ndarray, i: int) -> np.ndarray:
        s2 = self.sigma2[i]
        d = (x_next - mu).reshape(x_next.shape[0], -1)
        return -0.5 * np.sum(d * d, axis=1) / s2 - 0.5 * self.D * np.log(2.0 * np.pi * s2)

    def transition_log_prob(self, x_next: np.ndarray, mu: np.ndarray, i: int) -> np.ndarray:
        """``log N(x_next; mu, sigma_i^2 I)`` per sample, float64 ``[B]`` (e.g. under the reference
        model's mean from :meth:`mean`)."""
        return self._gauss_logp(x_next, mu, i)

    def mean(self, x: np.ndarray, i: int, params: dict | None = None) -> np.ndarray:
        """Transition mean at step ``i`` for states ``x [B, H, W]`` (``params``: other parameters,
        e.g. the reference model's)."""
        eps = self._eps(x, i, params)
        return self._mean(x, i, eps)[0]

    def _eps(self, x, i, params=None):
        m = self.model
        t = int(self.ts[i])
        if params is None:
            return m.predict(x, t)
        saved = m.params
        m.params = params
        try:
            return m.predict(x, t)
        finally:
            m.params = saved

    def log_prob(self, x_t: np.ndarray, x_next: np.ndarray, i: int) -> np.ndarray:
        """``log p_theta(x_next | x_t)`` at step ``i``, float64 ``[B]``."""
        mu, _ = self._mean(x_t, i, self._eps(x_t, i))
        return self._gauss_logp(x_next, mu, i)

    def log_prob_vjp(self, x_t: np.ndarray, x_next: np.ndarray, i: int):
        """``(logp [B], mu [B, H, W], vjp)`` at step ``i``.

        ``vjp(g_logp=None, g_mu=None)`` returns ``(m, grads)``: the time set and
        ``{name: d objective / d params[name][m]}`` for an objective with ``d/d logp = g_logp [B]``
        (and, optionally, an extra ``d/d mu = g_mu [B, H, W]``, e.g. of a KL term).
        """
        model = self.model
        t = int(self.ts[i])
        m = model.set_of(t)
        r = np.asarray(x_t, dtype=np.float64)
        I, tape = model.camera_image_train(r, m)
        out = model.readout(m, I, r)
        b = None
        if m in model.x0_sets:
            a, b = model._x0_factors(m, t)
            eps = a * r - b * out
        else:
            eps = out
        mu, mask = self._mean(r, i, eps)
        logp = self._gauss_logp(x_next, mu, i)
        s2 = self.sigma2[i]

        def vjp(g_logp=None, g_mu=None):
            g = np.zeros_like(mu)
            if g_logp is not None:
                g += np.asarray(g_logp, dtype=np.float64)[:, None, None] * (x_next - mu) / s2
            if g_mu is not None:
                g += g_mu
            g_eps = g * mask * self.k[i]
            g_out = -b * g_eps if b is not None else g_eps
            grads, g_I = model.readout_grads(m, I, r, g_out)
            grads["phases"] = model.camera_backward(tape, g_I)
            return m, grads

        return logp, mu, vjp

    # ------------------------------------------------------------------ sampling
    def sample(self, count: int, rng, progress: bool = False) -> Trajectories:
        """Draw ``count`` trajectories from ``rng`` (a Generator): the start noise, then each
        step's noise, in the order of :func:`~optdiff.diffusion.samplers.ddpm_sample`."""
        count = integer(count, "count")
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        H = self.model.H
        shape = (count, H, H)
        train = set(int(i) for i in self.train_steps)
        S = len(self.train_steps)
        xs = np.empty((S, count, H, H))
        xn = np.empty((S, count, H, H))
        lp = np.empty((S, count))
        x = rng.standard_normal(shape)
        j = 0
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(self.ts), desc="sampling", leave=False)
        try:
            for i in range(len(self.ts)):
                eps = self._eps(x, i)
                mu, _ = self._mean(x, i, eps)
                if self.sigma2[i] > 0:
                    nxt = mu + np.sqrt(self.sigma2[i]) * rng.standard_normal(shape)
                else:
                    nxt = mu
                if i in train:
                    xs[j], xn[j] = x, nxt
                    lp[j] = self._gauss_logp(nxt, mu, i)
                    j += 1
                x = nxt
                if not np.all(np.isfinite(x)):
                    raise FloatingPointError(f"sampling state became non-finite at timestep t={int(self.ts[i])}")
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return Trajectories(self.train_steps.copy(), xs, xn, lp, np.clip(x, -1.0, 1.0))

    def generate(self, count: int, seed, batch: int = 256) -> np.ndarray:
        """Samples only (nothing stored), ``[count, H, W]`` in [-1, 1], chunk ``c`` seeded ``[*seed, c]``
        (``seed``: an int or a list of ints)."""
        H = self.model.H
        base = [int(v) for v in np.atleast_1d(seed)]
        outs = []
        for c, start in enumerate(range(0, count, batch)):
            b = min(batch, count - start)
            rng = np.random.default_rng([*base, c])
            x = rng.standard_normal((b, H, H))
            for i in range(len(self.ts)):
                mu, _ = self._mean(x, i, self._eps(x, i))
                x = mu + np.sqrt(self.sigma2[i]) * rng.standard_normal(x.shape) if self.sigma2[i] > 0 else mu
            outs.append(np.clip(x, -1.0, 1.0))
        return np.concatenate(outs)
