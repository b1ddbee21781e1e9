"""Sample-quality metrics in the feature space of a small classifier.

IMPORTANT: ``frechet_distance`` (FID), ``kid`` (KID) and ``inception_score`` (IS) here are
computed on the hidden-layer activations / class probabilities of ``FeatureNet``, a small
MLP trained on the data set itself, NOT on Inception-v3 features. They are useful to compare
models and settings within this project (lower FID/KID = closer to the data, higher IS =
more confident and diverse), but their values are not comparable with numbers in papers.

``FeatureNet`` is fitted with scikit-learn's ``MLPClassifier`` and then evaluated with its
own numpy forward pass, so a fitted net can be saved with ``to_arrays`` and restored with
``from_arrays`` without scikit-learn.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

__all__ = ["FeatureNet", "frechet_distance", "kid", "inception_score", "fid_report", "METRICS_NOTE"]

METRICS_NOTE = ("FID/KID/IS computed in the feature space of a small MLP classifier trained on "
                "the data set (not Inception-v3): comparable only within this project")


def _flat(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"images must be [K, H, W] (or [K, D]), got shape {x.shape}")
    return x.reshape(x.shape[0], -1)


class FeatureNet:
    """Small MLP classifier whose last hidden layer is the metric feature space.

    Parameters
    ----------
    hidden
        Hidden layer widths (ReLU), e.g. ``(128,)`` or ``(256, 64)``; features are the
        activations of the last one.
    alpha, max_iter, seed
        L2 penalty, training epochs (adam) and seed passed to ``MLPClassifier``.

    Attributes after fit: ``weights`` list of float64 ``[D_in, D_out]``, ``biases``,
    ``classes`` int64 ``[C]``, ``input_dim`` ``D = H * W``.
    """

    def __init__(self, hidden: Sequence[int] = (128,), alpha: float = 1e-4, max_iter: int = 200,
                 seed: int = 0):
        self.hidden = tuple(int(h) for h in hidden)
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must list positive widths, got {hidden}")
        self.alpha, self.max_iter, self.seed = float(alpha), int(max_iter), int(seed)
        self.weights: list[np.ndarray] | None = None
        self.biases: list[np.ndarray] | None = None
        self.classes: np.ndarray | None = None
        self.input_dim: int | None = None

    def fit(self, images: np.ndarray, labels: np.ndarray) -> "FeatureNet":
        """Train on ``images`` float ``[K, H, W]`` in ``[-1, 1]`` and int ``labels [K]`` (>= 2 classes)."""
        from sklearn.neural_network import MLPClassifier
        from sklearn.exceptions import ConvergenceWarning

        x = _flat(images)
        y = np.asarray(labels).astype(np.int64)
        if y.shape != (x.shape[0],):
            raise ValueError(f"labels must be [K] = [{x.shape[0]}], got {y.shape}")
        if np.unique(y).size < 2:
            raise ValueError("FeatureNet needs at least two classes")
        clf = MLPClassifier(hidden_layer_sizes=self.hidden, activation="relu", alpha=self.alpha,
                            max_iter=self.max_iter, random_state=self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x, y)
        self.weights = [np.asarray(w, dtype=np.float64) for w in clf.coefs_]
        self.biases = [np.asarray(b, dtype=np.float64) for b in clf.intercepts_]
        self.classes = np.asarray(clf.classes_, dtype=np.int64)
        self.input_dim = x.shape[1]
        return self

    def _check(self, images) -> np.ndarray:
        if self.weights is None:
            raise RuntimeError("FeatureNet is not fitted")
        x = _flat(images)
        if x.shape[1] != self.input_dim:
            raise ValueError(f"images have {x.shape[1]} pixels, FeatureNet was trained on {self.input_dim}")
        return x

    def _hidden(self, x: np.ndarray) -> np.ndarray:
        h = x
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = np.maximum(h @ w + b, 0.0)
        return h

    def features(self, images: np.ndarray) -> np.ndarray:
        """Last-hidden-layer activations, float64 ``[K, hidden[-1]]``."""
        return self._hidden(self._check(images))

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities float64 ``[K, C]`` (columns ordered as ``classes``)."""
        z = self._hidden(self._check(images)) @ self.weights[-1] + self.biases[-1]
        if z.shape[1] == 1:  # binary problem: sklearn uses one logistic output
            p = 1.0 / (1.0 + np.exp(-np.clip(z[:, 0], -500, 500)))
            return np.stack([1.0 - p, p], axis=1)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Predicted labels int64 ``[K]``."""
        return self.classes[np.argmax(self.predict_proba(images), axis=1)]

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        return float(np.mean(self.predict(images) == np.asarray(labels)))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """``{"W0", "b0", "W1", ..., "classes"}`` for a checkpoint."""
        if self.weights is None:
            raise RuntimeError("FeatureNet is not fitted")
        out = {"classes": self.classes}
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            out[f"W{i}"], out[f"b{i}"] = w, b
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "FeatureNet":
        """Inverse of :meth:`to_arrays` (no scikit-learn needed)."""
        n = sum(1 for k in arrays if k.startswith("W") and k[1:].isdigit())
        if n < 2:
            raise ValueError("FeatureNet arrays need at least W0, b0, W1, b1")
        ws = [np.asarray(arrays[f"W{i}"], dtype=np.float64) for i in range(n)]
        bs = [np.asarray(arrays[f"b{i}"], dtype=np.float64) for i in range(n)]
        obj = cls(hidden=[w.shape[1] for w in ws[:-1]])
        obj.weights, obj.biases = ws, bs
        obj.classes = np.asarray(arrays["classes"], dtype=np.int64)
        obj.input_dim = ws[0].shape[0]
        return obj


def _stats(f: np.ndarray):
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be [N, d] with N >= 2, got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError("features contain NaN/Inf")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``[N_a, d]``, ``[N_b, d]``.

    ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr(sqrtm(S_a S_b))``. ``scipy.linalg.sqrtm``
    is used; if it returns non-finite values both covariances get ``eps * I`` added; the
    (tiny, round-off) imaginary part is dropped and the result is clamped at 0.
    """
    from scipy import linalg

    mu1, s1 = _stats(feats_a)
    mu2, s2 = _stats(feats_b)
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.shape[0]} vs {mu2.shape[0]}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(s1 @ s2)
        if isinstance(covmean, tuple):  # older scipy with disp=False semantics
            covmean = covmean[0]
        if not np.all(np.isfinite(covmean)):
            off = eps * np.eye(s1.shape[0])
            covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
            if isinstance(covmean, tuple):
                covmean = covmean[0]
    covmean = np.real(covmean)
    if not np.all(np.isfinite(covmean)):
        raise FloatingPointError("matrix square root of the covariance product is not finite")
    fd = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(fd, 0.0)


def _poly_kernel(x: np.ndarray, y: np.ndarray, degree: int, coef0: float) -> np.ndarray:
    return (x @ y.T / x.shape[1] + coef0) ** degree


def kid(feats_a: np.ndarray, feats_b: np.ndarray, subsets: int = 50, subset_size: int = 1000,
        degree: int = 3, coef0: float = 1.0, rng=0) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased MMD^2 with the kernel ``(x.y / d + coef0)^degree``.

    ``subsets`` random subsets of ``m = min(subset_size, N_a, N_b)`` rows are drawn (without
    replacement within a subset) from each set; each gives an unbiased MMD^2 estimate
    (diagonal terms excluded). Returns ``(mean, std)`` over subsets; the mean can be slightly
    negative for identical distributions. Needs ``m >= 2``.
    """
    a = np.asarray(feats_a, dtype=np.float64)
    b = np.asarray(feats_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be [N, d] with equal d, got {a.shape} and {b.shape}")
    m = min(int(subset_size), a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError("kid needs at least 2 samples in each set")
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    vals = np.empty(int(subsets))
    for i in range(int(subsets)):
        x = a[g.choice(a.shape[0], m, replace=False)]
        y = b[g.choice(b.shape[0], m, replace=False)]
        kxx = _poly_kernel(x, x, degree, coef0)
        kyy = _poly_kernel(y, y, degree, coef0)
        kxy = _poly_kernel(x, y, degree, coef0)
        sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        vals[i] = sxx + syy - 2.0 * kxy.mean()
    return float(vals.mean()), float(vals.std())


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """``exp(E_x KL(p(y|x) || p(y)))`` from class probabilities ``[N, C]``; ``(mean, std)`` over splits.

    Ranges from 1 (every sample the same class distribution) to C (confident and uniform
    over classes).
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 1:
        raise ValueError(f"probs must be [N, C], got {p.shape}")
    splits = max(1, min(int(splits), p.shape[0]))
    scores = []
    for part in np.array_split(p, splits):
        py = part.mean(axis=0, keepdims=True)
        kl = np.sum(part * (np.log(np.clip(part, 1e-12, None)) - np.log(np.clip(py, 1e-12, None))), axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def fid_report(net: FeatureNet, real_images: np.ndarray, fake_images: np.ndarray,
               kid_subsets: int = 50, kid_subset_size: int = 1000, is_splits: int = 10,
               seed: int = 0) -> dict:
    """All metrics of ``fake_images`` against ``real_images`` (both ``[N, H, W]`` in ``[-1, 1]``).

    Returns a dict: ``fid``, ``kid``, ``kid_std``, ``is``, ``is_std`` (of the fake set),
    ``is_real`` (IS of the real set, the attainable reference), ``n_real``, ``n_fake``,
    ``feature_dim`` and ``note`` (= ``METRICS_NOTE``). All numbers are plain Python floats/ints.
    """
    fr, ff = net.features(real_images), net.features(fake_images)
    k_mean, k_std = kid(fr, ff, subsets=kid_subsets, subset_size=kid_subset_size, rng=seed)
    is_mean, is_std = inception_score(net.predict_proba(fake_images), splits=is_splits)
    is_real, _ = inception_score(net.predict_proba(real_images), splits=is_splits)
    return {"fid": frechet_distance(fr, ff), "kid": k_mean, "kid_std": k_std,
            "is": is_mean, "is_std": is_std, "is_real": is_real,
            "n_real": int(fr.shape[0]), "n_fake": int(ff.shape[0]),
            "feature_dim": int(fr.shape[1]), "note": METRICS_NOTE}
