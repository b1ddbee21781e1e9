"""Linear ridge read-out: one-hot targets from (layer-normalised) activities, in closed form.

W = argmin ||X W - Y||^2 + lam ||W||^2 with a bias column left unpenalised (X centred); solved
in the primal (D x D system) when D <= B, in the dual (B x B) otherwise.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["RidgeReadout"]


class RidgeReadout:
    def __init__(self, lam: float = 1.0):
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam <= 0:
            raise ValueError(f"ridge lambda must be finite and > 0, got {lam!r}")
        self.lam = float(lam)
        self.W = self.mean = self.bias = None

    def fit(self, X: np.ndarray, y: np.ndarray, num_classes: int) -> RidgeReadout:
        X = np.asarray(X, np.float64)
        if X.ndim != 2 or X.shape[0] != len(y) or X.shape[0] == 0:
            raise ValueError(f"read-out features must be [B, D] with B = len(labels) > 0, got {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("read-out features contain NaN or infinite values")
        Y = np.eye(num_classes)[np.asarray(y)]
        self.mean, ymean = X.mean(0), Y.mean(0)
        Xc, Yc = X - self.mean, Y - ymean
        B, D = Xc.shape
        if D <= B:
            self.W = np.linalg.solve(Xc.T @ Xc + self.lam * np.eye(D), Xc.T @ Yc)
        else:
            self.W = Xc.T @ np.linalg.solve(Xc @ Xc.T + self.lam * np.eye(B), Yc)
        self.bias = ymean
        return self

    def scores(self, X: np.ndarray) -> np.ndarray:
        if self.W is None:
            raise ValueError("read-out is not fitted")
        return (np.asarray(X, np.float64) - self.mean) @ self.W + self.bias

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.scores(X).argmax(1)
