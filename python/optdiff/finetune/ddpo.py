"""DDPO (Black et al. 2023, "DDPO_IS"): PPO's clipped surrogate on the ODU policy, the baseline.

Per round, rewards are normalised over the batch, ``A_j = clip((r_j - mean r) / (std r + 1e-8),
-A_max, A_max)``; per trajectory ``j`` and trainable step ``t`` with ratio
``rho = p_theta(x_{t-1} | x_t) / p_theta_old(x_{t-1} | x_t)``::

    L = mean_{j, t} max(-A_j rho, -A_j clip(rho, 1 - eps, 1 + eps))

whose gradient w.r.t. ``log p_theta`` is ``-A_j rho`` where the unclipped term is the larger
(or equal) one and 0 elsewhere. :func:`ddpo_minibatch` computes it for one minibatch.
"""

from __future__ import annotations

import numpy as np

from ._grads import add_grads
from .policy import ODUPolicy, Trajectories

__all__ = ["ddpo_minibatch", "advantages"]


def advantages(rewards: np.ndarray, clip: float = 5.0) -> np.ndarray:
    """Batch-normalised, clipped advantages."""
    r = np.asarray(rewards, dtype=np.float64)
    return np.clip((r - r.mean()) / (r.std() + 1e-8), -clip, clip)


def ddpo_minibatch(policy: ODUPolicy, traj: Trajectories, adv: np.ndarray, used: np.ndarray,
                   clip: float) -> tuple[dict, dict]:
    """Loss and gradient of one DDPO minibatch (``adv [n]`` for its ``n`` trajectories)."""
    n = traj.final.shape[0]
    norm = 1.0 / (n * len(used))
    acc: dict = {}
    loss, clipped, mabs = 0.0, 0, 0.0
    for j in used:
        i = int(traj.steps[j])
        logp, _, vjp = policy.log_prob_vjp(traj.x_t[j], traj.x_next[j], i)
        ell = logp - traj.logp[j]
        rho = np.exp(ell)
        un = -adv * rho
        cl = -adv * np.clip(rho, 1.0 - clip, 1.0 + clip)
        active = un >= cl
        loss += norm * float(np.sum(np.maximum(un, cl)))
        clipped += int(np.count_nonzero(~active))
        mabs += float(np.sum(np.abs(ell)))
        g = np.where(active, -adv * rho, 0.0) * norm
        if np.any(g):
            m, gr = vjp(g_logp=g)
            add_grads(acc, m, gr)
    stats = {"loss": loss, "clipped_frac": clipped / (n * len(used)), "mean_abs_log_ratio": mabs / (n * len(used))}
    return stats, acc
