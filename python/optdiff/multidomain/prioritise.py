"""Domain weights for the joint loss: uniform, or adaptive balanced domain prioritisation.

Adaptive (after Wang et al., "Multi-path neural networks for on-device multi-domain visual
classification", WACV 2021, whose prioritisation takes the focal form of Guo et al.'s dynamic
task prioritisation with each domain's single-domain model as the reference)::

    kappa_d = clip(q_d / q_ref_d, kappa_min, 1)        classification (q = accuracy)
    kappa_d = clip(mse_ref_d / mse_d, kappa_min, 1)    generation (q = -eps-MSE)
    f_d     = -(1 - kappa_d)^gamma * log(kappa_d)
    w_d     = D * (f_d + w_min) / sum_e (f_e + w_min)

kappa_d says how close domain d is to its single-domain reference (1: caught up). A domain far
behind gets a large weight, one that has caught up only the floor ``w_min``; the weights average
1, so the learning rate means the same as with uniform weights (w_d = 1).
"""

from __future__ import annotations

import numpy as np

__all__ = ["KAPPA_MIN", "progress_ratio", "adaptive_weights", "uniform_weights"]

#: Smallest progress ratio (keeps log(kappa) finite for a domain at zero accuracy).
KAPPA_MIN = 1e-3


def progress_ratio(quality, reference, kind: str) -> np.ndarray:
    """kappa per domain from current and reference qualities (accuracy, or -MSE for generation)."""
    q = np.asarray(quality, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if q.shape != ref.shape or q.ndim != 1:
        raise ValueError(f"quality and reference must be one number per domain, got {q.shape} and {ref.shape}")
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(ref))):
        raise ValueError("quality and reference must be finite")
    if kind == "classify":
        if np.any(ref <= 0):
            raise ValueError(f"reference accuracies must be > 0, got {ref.tolist()}")
        k = q / ref
    elif kind == "generate":  # qualities are -MSE: kappa = mse_ref / mse
        if np.any(q >= 0) or np.any(ref >= 0):
            raise ValueError("generation qualities are -eps-MSE and must be < 0")
        k = ref / q
    else:
        raise ValueError(f"kind must be 'classify' or 'generate', got {kind!r}")
    return np.clip(k, KAPPA_MIN, 1.0)


def adaptive_weights(quality, reference, kind: str, gamma: float = 1.0, min_weight: float = 0.05) -> np.ndarray:
    """The weights ``w_d`` of the formula in the module docstring (mean 1)."""
    if not gamma >= 0 or not min_weight > 0:
        raise ValueError(f"gamma must be >= 0 and min_weight > 0, got {gamma}, {min_weight}")
    k = progress_ratio(quality, reference, kind)
    f = -((1.0 - k) ** gamma) * np.log(k)
    f = f + min_weight
    return k.size * f / f.sum()


def uniform_weights(domains: int) -> np.ndarray:
    return np.ones(int(domains))
