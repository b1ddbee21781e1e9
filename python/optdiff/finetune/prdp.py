"""PRDP: Proximal Reward Difference Prediction (Deng et al., CVPR 2024) on the ODU policy.

The paper's objective (docs/finetune.md maps each piece to the paper). For a trajectory ``j``
and trainable step ``t`` let

    rhat_t^j(theta) = log p_theta(x^j_{t-1} | x^j_t) - log p_ref(x^j_{t-1} | x^j_t)

be the per-step log-likelihood ratio against the *pretrained* model ``p_ref`` (the KL anchor of
the RL objective ``E[r] - beta KL(p_theta || p_ref)``), and ``rhat_{old,t}^j`` the same ratio of
the model that sampled this round (``theta_old``, a constant during the round). RDP regresses the
observed reward difference of a pair ``a, b`` onto ``beta`` times the difference of their
trajectory ratios ``R^j = sum_t rhat_t^j``; its minimiser is the RL optimum
``p_ref exp(r / beta) / Z``. The proximal update clips each step's ratio to within ``eps`` of
the sampling model's, ``clip(rhat_t, rhat_{old,t} - eps, rhat_{old,t} + eps)``, and takes, as
PPO does, the larger of the unclipped and the clipped loss::

    R_u^j = s * sum_{t in T_used} rhat_t^j
    R_c^j = s * sum_{t in T_used} (rhat_{old,t}^j + clip(l_t^j, -eps, eps)),  l_t = rhat_t - rhat_{old,t}
    L_RDP = mean_pairs max( (dr - beta (R_u^a - R_u^b))^2 , (dr - beta (R_c^a - R_c^b))^2 )

(``s = |T_all| / |T_used|``: the sum over a random subset of the steps, rescaled to estimate the
whole trajectory's; ``l_t = log p_theta - log p_theta_old`` since the reference cancels). Where
the clipped residual is the larger one, a clipped step gives no gradient; where the unclipped one
is, every step does. The optional extra term (not in the paper; ``kl = alpha``, default 0)::

    L_KL = alpha * mean_j s * sum_t |mu_theta(x^j_t) - mu_ref(x^j_t)|^2 / (2 sigma_t^2)

is the exact KL of the Gaussian transitions to the pretrained model at the stored states. Loss
per minibatch: ``L_RDP + L_KL``. :func:`prdp_minibatch` computes it and its gradient.
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
                   ref_mu: np.ndarray | None = None, ref_logp: np.ndarray | None = None) -> tuple[dict, dict]:
    """Loss and gradient of one PRDP minibatch.

    ``traj``: the minibatch's trajectories (``n`` samples), ``rewards [n]``, ``pairs [P, 2]``
    (indices into the ``n`` samples), ``used``: indices into ``traj.steps`` of the steps this
    minibatch trains on; ``ref_logp [S, n]``: ``log p_ref`` of the stored transitions under the
    pretrained model (the paper's reference; ``None``: the reference is the sampling model, so
    ``rhat_old = 0``); ``ref_mu [S, n, H, W]``: the pretrained model's transition means at the
    stored states (needed when ``kl > 0``). Returns ``(stats, grads_by_set)``.
    """
    n = traj.final.shape[0]
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.shape[0] < 1:
        raise ValueError(f"pairs must have shape [P, 2] with P >= 1, got {pairs.shape}")
    scale = len(traj.steps) / len(used)
    # pass 1: the log-ratios to the sampling model and the sampling model's ratio to the reference
    ell = np.empty((len(used), n))
    r_old = np.zeros((len(used), n))
    for a, j in enumerate(used):
        i = int(traj.steps[j])
        ell[a] = policy.log_prob(traj.x_t[j], traj.x_next[j], i) - traj.logp[j]
        if ref_logp is not None:
            r_old[a] = traj.logp[j] - ref_logp[j]
    inside = np.abs(ell) < clip
    R_u = scale * (r_old + ell).sum(axis=0)
    R_c = scale * (r_old + np.clip(ell, -clip, clip)).sum(axis=0)
    dr = rewards[pairs[:, 0]] - rewards[pairs[:, 1]]
    res_u = dr - beta * (R_u[pairs[:, 0]] - R_u[pairs[:, 1]])
    res_c = dr - beta * (R_c[pairs[:, 0]] - R_c[pairs[:, 1]])
    # PPO-style pessimism: per pair the larger loss (ties: the unclipped one, same gradient then)
    take_u = res_u * res_u >= res_c * res_c
    res = np.where(take_u, res_u, res_c)
    P = len(pairs)
    loss = float(np.mean(res * res))
    g_pair = -2.0 * beta * res / P           # d L / d R^a; d L / d R^b is its negative
    gU = np.zeros(n)
    gC = np.zeros(n)
    np.add.at(gU, pairs[:, 0], np.where(take_u, g_pair, 0.0))
    np.add.at(gU, pairs[:, 1], np.where(take_u, -g_pair, 0.0))
    np.add.at(gC, pairs[:, 0], np.where(take_u, 0.0, g_pair))
    np.add.at(gC, pairs[:, 1], np.where(take_u, 0.0, -g_pair))
    # pass 2: the gradient through the adjoint, only where it is non-zero
    acc: dict = {}
    kl_total = 0.0
    for a, j in enumerate(used):
        g_ell = scale * (gU + gC * inside[a])
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
             "clipped_frac": float(1.0 - inside.mean()), "mean_abs_log_ratio": float(np.mean(np.abs(ell))),
             "clipped_pairs": float(1.0 - take_u.mean())}
    return stats, acc
