"""PRDP: Proximal Reward Difference Prediction (Deng et al., CVPR 2024) on the ODU policy.

What is implemented (docs/finetune.md has the derivation and the choices):

For a pair of trajectories ``a, b`` sampled from the current model in this round (parameters
``theta_old``), with rewards ``r_a, r_b`` of their final images, per trainable step ``t``::

    l_t^j(theta) = log p_theta(x^j_{t-1} | x^j_t) - log p_theta_old(x^j_{t-1} | x^j_t)
    S^j(theta)   = (|T_all| / |T_used|) * sum_{t in T_used} clip(l_t^j, -eps, eps)
    L_RDP        = mean_pairs ( (r_a - r_b) - beta (S^a - S^b) )^2

(the reward difference regressed onto beta times the difference of the trajectories' summed,
proximally clipped log-likelihood ratios against the pre-update model; a clipped step gives no
gradient, as in PPO). The optional reference term keeps the policy near the *pretrained* model::

    L_KL = alpha * mean_j (|T_all| / |T_used|) * sum_t |mu_theta(x^j_t) - mu_pre(x^j_t)|^2 / (2 sigma_t^2)

(the KL divergence of the two Gaussian transitions, summed over the trajectory). Loss per
minibatch: ``L_RDP + L_KL``. :func:`prdp_minibatch` computes it and its gradient.
"""

from __future__ import annotations

import numpy as np

from ._grads import add_grads
from .policy import ODUPolicy, Trajectories

__all__ = ["prdp_minibatch", "rdp_loss"]


def rdp_loss(dr: np.ndarray, S_a: np.ndarray, S_b: np.ndarray, beta: float):
    """``mean((dr - beta (S_a - S_b))^2)`` and its derivatives w.r.t. ``S_a`` and ``S_b``."""
    resid = dr - beta * (S_a - S_b)
    P = dr.shape[0]
    return float(np.mean(resid * resid)), -2.0 * beta * resid / P, 2.0 * beta * resid / P


def prdp_minibatch(policy: ODUPolicy, traj: Trajectories, rewards: np.ndarray, pairs: np.ndarray,
                   used: np.ndarray, beta: float, clip: float, kl: float = 0.0,
                   ref_mu: np.ndarray | None = None) -> tuple[dict, dict]:
    """Loss and gradient of one PRDP minibatch.

    ``traj``: the minibatch's trajectories (``n`` samples), ``rewards [n]``, ``pairs [P, 2]``
    (indices into the ``n`` samples), ``used``: indices into ``traj.steps`` of the steps this
    minibatch trains on, ``ref_mu [S, n, H, W]``: the pretrained model's transition means at the
    stored states (needed when ``kl > 0``). Returns ``(stats, grads_by_set)``.
    """
    n = traj.final.shape[0]
    scale = len(traj.steps) / len(used)
    # pass 1: the clipped log-ratios (no tape)
    ell = np.empty((len(used), n))
    for a, j in enumerate(used):
        i = int(traj.steps[j])
        ell[a] = policy.log_prob(traj.x_t[j], traj.x_next[j], i) - traj.logp[j]
    inside = np.abs(ell) < clip
    S = scale * np.clip(ell, -clip, clip).sum(axis=0)
    dr = rewards[pairs[:, 0]] - rewards[pairs[:, 1]]
    loss, gA, gB = rdp_loss(dr, S[pairs[:, 0]], S[pairs[:, 1]], beta)
    gS = np.zeros(n)
    np.add.at(gS, pairs[:, 0], gA)
    np.add.at(gS, pairs[:, 1], gB)
    # pass 2: the gradient through the adjoint, only where it is non-zero
    acc: dict = {}
    kl_total = 0.0
    for a, j in enumerate(used):
        g_ell = gS * scale * inside[a]
        if not np.any(g_ell) and kl <= 0:
            continue
        i = int(traj.steps[j])
        _, mu, vjp = policy.log_prob_vjp(traj.x_t[j], traj.x_next[j], i)
        g_mu = None
        if kl > 0:
            diff = mu - ref_mu[j]
            s2 = policy.sigma2[i]
            kl_total += scale * float(np.sum(diff * diff)) / (2.0 * s2) / n
            g_mu = (kl * scale / (n * s2)) * diff
        m, g = vjp(g_logp=g_ell, g_mu=g_mu)
        add_grads(acc, m, g)
    stats = {"loss": loss + kl * kl_total, "rdp_loss": loss, "kl": kl_total,
             "clipped_frac": float(1.0 - inside.mean()), "mean_abs_log_ratio": float(np.mean(np.abs(ell)))}
    return stats, acc
