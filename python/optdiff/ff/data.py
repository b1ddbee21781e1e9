"""Data for the Forward-Forward runs: the reference comparison's MNIST split and small sets.

``mnist_split(data_dir, counts=(4000, 1000, 1000), seed)``: the reference work used a
4000/1000/1000 train/validation/test split of MNIST at 32 x 32. Only the official 10k test file
may be on disk, so the three parts are drawn without overlap from whichever split is there
(``train`` when present, else ``test``), uniformly at random with ``seed``. Images are 28 x 28
padded with background to 32 x 32 and mapped to [0, 1] (background 0).
"""

from __future__ import annotations

import numpy as np

from ..data.datasets import load_dataset
from ..optics._args import integer

__all__ = ["load_split", "pad_to"]


def pad_to(images: np.ndarray, size: int) -> np.ndarray:
    """Centre ``[B, h, w]`` images on a ``size x size`` canvas of zeros."""
    B, h, w = images.shape
    if h > size or w > size:
        raise ValueError(f"pad: images of {h}x{w} do not fit in {size}x{size}")
    out = np.zeros((B, size, size), np.float32)
    t, l = (size - h) // 2, (size - w) // 2
    out[:, t:t + h, l:l + w] = images
    return out


def load_split(dataset: str = "mnist", data_dir=None, counts=(4000, 1000, 1000), size: int = 32, seed: int = 0,
               pad: bool = True):
    """((x_train, y_train), (x_val, y_val), (x_test, y_test), source_split) with images in [0, 1].

    ``pad``: 28 -> ``size`` by padding (MNIST as in the reference); otherwise resampled to ``size``.
    """
    counts = tuple(integer(c, "counts") for c in counts)
    if len(counts) != 3 or min(counts) < 1:
        raise ValueError(f"counts must be three integers >= 1 (train, val, test), got {counts}")
    seed = integer(seed, "seed")
    source = "train"
    try:
        x, y = load_dataset(dataset, data_dir, split="train", size=None if pad else size)
    except (FileNotFoundError, ValueError):
        source = "test"
        x, y = load_dataset(dataset, data_dir, split="test", size=None if pad else size)
    x = ((x + 1.0) / 2.0).astype(np.float32)  # [-1, 1] -> [0, 1], background 0
    if pad:
        x = pad_to(x, size)
    if sum(counts) > len(x):
        raise ValueError(f"counts {counts} need {sum(counts)} images; the {dataset} {source} split has {len(x)}")
    idx = np.random.default_rng([seed, 0x5EED]).permutation(len(x))
    a, b, c = counts
    parts = [idx[:a], idx[a:a + b], idx[a + b:a + b + c]]
    return tuple((x[p], y[p]) for p in parts) + (source,)
