"""Positive and negative data: a label embedded in the image (NumPy).

``onehot`` (Hinton 2022): the first C pixels of the image (row-major, from the top-left corner)
are overwritten by a one-hot vector of the label, at the image's ``on`` value (1 by default);
C labels need at least C pixels. ``pattern``: a fixed seeded +-1 image per class, times
``strength``, is added to the whole image, so a convolution sees the label everywhere (the
one-hot corner is seen only by the few units whose receptive field covers it). ``grating``: the
same with a cosine grating per class (period 4 pixels, angle pi c / C), which a small
convolution kernel can recognise anywhere with shared weights. A neutral
embedding (every label at 1/C, or the mean pattern) gives the activities the read-out uses.
"""

from __future__ import annotations

import numpy as np

from ..optics._args import integer

__all__ = ["EMBEDDINGS", "embed_labels", "neutral_embedding", "wrong_labels", "check_embedding"]

EMBEDDINGS = ("onehot", "pattern", "grating")


def check_embedding(kind: str, num_classes, shape) -> int:
    """Refuse an embedding that cannot work: unknown kind, < 2 classes, more labels than pixels."""
    if kind not in EMBEDDINGS:
        raise ValueError(f"label embedding must be one of {EMBEDDINGS}, got {kind!r}")
    c = integer(num_classes, "num_classes")
    if c < 2:
        raise ValueError(f"num_classes must be >= 2 (one positive and one wrong label), got {c}")
    pixels = int(np.prod(shape))
    if kind == "onehot" and c > pixels:
        raise ValueError(f"label embedding 'onehot' needs one pixel per label: {c} labels do not fit in "
                         f"{pixels} pixels of a {'x'.join(map(str, shape))} image")
    return c


def _patterns(num_classes: int, shape, seed: int, kind: str = "pattern") -> np.ndarray:
    if kind == "grating":  # class c: a cosine grating at angle pi c / C, period 4 pixels
        yy, xx = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
        ang = np.pi * np.arange(num_classes)[:, None, None] / num_classes
        return np.cos(2 * np.pi / 4.0 * (np.cos(ang) * xx + np.sin(ang) * yy))
    rng = np.random.default_rng([seed, 0xFF1AB])
    return rng.choice(np.array([-1.0, 1.0]), size=(num_classes, *shape))


def embed_labels(images: np.ndarray, labels, num_classes: int, kind: str = "onehot", on: float = 1.0,
                 strength: float = 0.5, seed: int = 0) -> np.ndarray:
    """Images ``[B, H, W]`` (or ``[B, C, H, W]``: embedded in every channel) with ``labels`` embedded."""
    x = np.array(images, dtype=np.float32, copy=True)
    if x.ndim not in (3, 4):
        raise ValueError(f"images must be [B, H, W] or [B, C, H, W], got shape {x.shape}")
    c = check_embedding(kind, num_classes, x.shape[-2:])
    lab = np.asarray(labels)
    if lab.shape != (x.shape[0],) or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be integers shaped [{x.shape[0]}], got {lab.dtype} {lab.shape}")
    if lab.size and (lab.min() < 0 or lab.max() >= c):
        raise ValueError(f"labels must be in [0, {c}), got values from {lab.min()} to {lab.max()}")
    B, H, W = x.shape[0], x.shape[-2], x.shape[-1]
    if kind == "onehot":
        flat = x.reshape(*x.shape[:-2], H * W)  # a view: writes land in x
        onehot = np.zeros((B, c), np.float32)
        onehot[np.arange(B), lab] = on
        flat[..., :c] = onehot if x.ndim == 3 else onehot[:, None, :]
    else:
        p = _patterns(c, (H, W), seed, kind).astype(np.float32)[lab] * strength
        x += p if x.ndim == 3 else p[:, None]
    return x


def neutral_embedding(images: np.ndarray, num_classes: int, kind: str = "onehot", on: float = 1.0,
                      strength: float = 0.5, seed: int = 0) -> np.ndarray:
    """Images with no label preferred: every label pixel at on/C, or the mean of the patterns."""
    x = np.array(images, dtype=np.float32, copy=True)
    if x.ndim not in (3, 4):
        raise ValueError(f"images must be [B, H, W] or [B, C, H, W], got shape {x.shape}")
    c = check_embedding(kind, num_classes, x.shape[-2:])
    H, W = x.shape[-2:]
    if kind == "onehot":
        x.reshape(*x.shape[:-2], H * W)[..., :c] = on / c
    else:
        x += (_patterns(c, (H, W), seed, kind).mean(0) * strength).astype(np.float32)
    return x


def wrong_labels(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly drawn label different from each true label."""
    lab = np.asarray(labels)
    return (lab + rng.integers(1, num_classes, size=lab.shape)) % num_classes
