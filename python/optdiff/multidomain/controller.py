"""One path controller per domain: a categorical policy per position, trained with REINFORCE.

The policy holds logits ``theta [L, C]`` (C = K candidates, plus the skip as the last column when
skips are allowed). Positions are independent categoricals ``pi_l = softmax(theta_l)``,
*conditioned on the path not being all skips* (such a path is refused, see
:mod:`~optdiff.multidomain.supernet`)::

    p(path) = prod_l pi_l(c_l) / (1 - S),      S = prod_l pi_l(skip)

Sampling is exact and never rejects: position by position, while every earlier position was a
skip, the skip's probability at l is ``pi_l(skip) (1 - S_{>l}) / (1 - S_{>=l})`` with ``S_{>=l}``
the product of the skip probabilities from l on. The score is::

    d log p / d theta_l = (onehot(c_l) - pi_l) + S / (1 - S) (onehot(skip) - pi_l)

REINFORCE with a moving-average baseline b: ``theta += lr * mean_i (R_i - b) d log p(path_i)``,
then ``b <- decay b + (1 - decay) mean_i R_i`` (b starts at the first mean reward).
"""

from __future__ import annotations

import numpy as np

from .supernet import SKIP

__all__ = ["PathController"]

_LOGIT_LIMIT = 20.0  # keeps every probability > 0, so the conditioning above never divides by 0


def _softmax(theta: np.ndarray) -> np.ndarray:
    z = np.exp(theta - theta.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


class PathController:
    """Policy over paths of an ``L`` x (``K`` [+ skip]) super-network; logits start at 0 (uniform)."""

    def __init__(self, positions: int, candidates: int, skip: bool = True):
        if positions < 1 or candidates < 1:
            raise ValueError(f"a controller needs positions >= 1 and candidates >= 1, got {positions}, {candidates}")
        self.L, self.K, self.skip = int(positions), int(candidates), bool(skip)
        self.theta = np.zeros((self.L, self.K + (1 if skip else 0)), dtype=np.float64)
        self.baseline = np.array(np.nan)  # nan: no reward seen yet

    # ------------------------------------------------------------------ distribution
    def _column(self, c: int) -> int:
        return self.K if c == SKIP else c

    def probs(self) -> np.ndarray:
        """Per-position probabilities ``pi [L, C]`` (before conditioning on a non-empty path)."""
        return _softmax(self.theta)

    def _skip_tail(self, pi: np.ndarray) -> np.ndarray:
        """``S_{>=l}`` for l = 0..L (the last entry, the empty product, is 1)."""
        s = np.ones(self.L + 1)
        for pos in range(self.L - 1, -1, -1):
            s[pos] = s[pos + 1] * pi[pos, self.K]
        return s

    def log_prob(self, path) -> float:
        """log p(path) under the conditioned policy (-inf for the all-skip path)."""
        pi = self.probs()
        cols = [self._column(c) for c in path]
        lp = float(sum(np.log(pi[pos, c]) for pos, c in enumerate(cols)))
        if self.skip:
            if all(c == SKIP for c in path):
                return -np.inf
            lp -= float(np.log1p(-self._skip_tail(pi)[0]))
        return lp

    def score(self, path) -> np.ndarray:
        """``d log p(path) / d theta`` ``[L, C]``."""
        pi = self.probs()
        g = -pi.copy()
        for pos, c in enumerate(path):
            g[pos, self._column(c)] += 1.0
        if self.skip:
            S = self._skip_tail(pi)[0]
            ratio = S / (1.0 - S)
            e = np.zeros_like(pi)
            e[:, self.K] = 1.0
            g += ratio * (e - pi)
        return g

    def sample(self, rng: np.random.Generator) -> tuple[int, ...]:
        """One path drawn exactly from the conditioned policy."""
        pi = self.probs()
        tail = self._skip_tail(pi) if self.skip else None
        path, all_skipped = [], True
        for pos in range(self.L):
            q = pi[pos].copy()
            if self.skip and all_skipped:
                # P(skip here | all earlier skipped, path not empty)
                q[self.K] = pi[pos, self.K] * (1.0 - tail[pos + 1]) / (1.0 - tail[pos])
                rest = q[:self.K].sum()
                q[:self.K] *= (1.0 - q[self.K]) / rest
            c = int(rng.choice(q.size, p=q / q.sum()))
            c = SKIP if (self.skip and c == self.K) else c
            all_skipped = all_skipped and c == SKIP
            path.append(c)
        return tuple(path)

    def best_path(self) -> tuple[int, ...]:
        """The most probable path (argmax per position; if that is all skips, the one position
        switched to its best mask that costs the least probability)."""
        pi = self.probs()
        path = [int(np.argmax(row)) for row in pi]
        path = [SKIP if (self.skip and c == self.K) else c for c in path]
        if self.skip and all(c == SKIP for c in path):
            best = np.argmax(pi[:, :self.K], axis=1)
            loss = np.log(pi[:, self.K]) - np.log(pi[np.arange(self.L), best])
            pos = int(np.argmin(loss))
            path[pos] = int(best[pos])
        return tuple(path)

    # ------------------------------------------------------------------ learning
    def update(self, paths, rewards, lr: float, decay: float) -> np.ndarray:
        """One REINFORCE step from ``paths`` and their ``rewards``; returns the logit change."""
        r = np.asarray(rewards, dtype=np.float64)
        if r.ndim != 1 or r.size != len(paths) or r.size == 0:
            raise ValueError(f"rewards must be one number per path ({len(paths)}), got {r.shape}")
        if not np.all(np.isfinite(r)):
            raise ValueError("rewards contain NaN or Inf")
        b = float(r.mean()) if np.isnan(self.baseline) else float(self.baseline)
        step = np.zeros_like(self.theta)
        for path, ri in zip(paths, r):
            step += (ri - b) * self.score(path)
        step *= lr / r.size
        self.theta = np.clip(self.theta + step, -_LOGIT_LIMIT, _LOGIT_LIMIT)
        self.baseline = np.array(decay * b + (1.0 - decay) * float(r.mean()))
        return step

    def state(self) -> dict:
        return {"theta": self.theta.copy(), "baseline": np.array(self.baseline)}

    def load_state(self, theta, baseline) -> None:
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != self.theta.shape:
            raise ValueError(f"controller logits have shape {theta.shape}, expected {self.theta.shape}")
        self.theta = theta.copy()
        self.baseline = np.array(float(baseline))
