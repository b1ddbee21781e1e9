"""Goodness of a layer's activity and the Forward-Forward logistic loss (NumPy and torch).

goodness(y) = sum_i y_i^2 over one sample's units (``scale="mean"`` divides by the unit count,
which makes one threshold fit layers of any width). The probability that a sample is positive is
sigma(g - theta); the loss of a batch of positive and negative goodness values is the mean of
``softplus(-(g_pos - theta))`` and ``softplus(g_neg - theta)``: -log of the right probability.
The functions take NumPy arrays or torch tensors (same formula; torch keeps autograd).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["goodness", "ff_loss", "ff_loss_grad", "check_threshold", "SCALES"]

SCALES = ("sum", "mean")


def check_threshold(theta, name: str = "threshold") -> float:
    """theta as a float; a non-number, non-finite or <= 0 value is refused with a message.

    A goodness is a sum of squares (>= 0): with theta <= 0 every sample would already count as
    positive at zero activity, so the loss could not separate positive from negative data.
    """
    if isinstance(theta, bool) or not isinstance(theta, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number > 0, got {theta!r}")
    theta = float(theta)
    if not math.isfinite(theta) or theta <= 0:
        raise ValueError(f"{name} must be finite and > 0 (a goodness is a sum of squares >= 0), got {theta!r}")
    return theta


def goodness(y, scale: str = "sum"):
    """Per-sample goodness of activities ``y [B, ...]``: sum (or mean) of y^2 over all but axis 0."""
    if scale not in SCALES:
        raise ValueError(f"goodness scale must be one of {SCALES}, got {scale!r}")
    if y.ndim < 2:
        raise ValueError(f"activities must be [B, units...], got shape {tuple(y.shape)}")
    sq = (y * y).reshape(y.shape[0], -1)
    return sq.mean(1) if scale == "mean" else sq.sum(1)


def _softplus(x):
    if isinstance(x, np.ndarray):
        return np.logaddexp(0.0, x)
    import torch.nn.functional as F  # only reached with torch tensors

    return F.softplus(x)


def ff_loss(g_pos, g_neg, theta: float):
    """Mean logistic loss: -log sigma(g_pos - theta) and -log(1 - sigma(g_neg - theta))."""
    theta = check_threshold(theta)
    return 0.5 * (_softplus(theta - g_pos).mean() + _softplus(g_neg - theta).mean())


def ff_loss_grad(g_pos: np.ndarray, g_neg: np.ndarray, theta: float):
    """d ff_loss / d g_pos and d g_neg (NumPy): -(1 - sigma(g_pos - theta)) / 2Bp, sigma(g_neg - theta) / 2Bn."""
    theta = check_threshold(theta)
    g_pos, g_neg = np.asarray(g_pos, float), np.asarray(g_neg, float)
    sig = lambda x: 0.5 * (1.0 + np.tanh(0.5 * x))  # noqa: E731  stable logistic
    return -sig(theta - g_pos) / (2 * g_pos.size), sig(g_neg - theta) / (2 * g_neg.size)
