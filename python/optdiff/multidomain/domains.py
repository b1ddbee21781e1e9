"""The domains' data: loading each data set at the network's image size, checking arrays given
directly, relabelling classes to 0..C-1 and cutting train / validation / test parts.

Images of a size other than the network's are refused, not resized: every domain goes through
the same optical window and detector layout, and a silent resize would change what a domain's
data is (pass the images through :func:`optdiff.data.resize_images`, or let the loader do it
with ``size=``, when that is what you want).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data import load_dataset

__all__ = ["DomainData", "domain_from_arrays", "load_domains", "domain_index"]


@dataclass
class DomainData:
    """One domain's images (``[K, H, W]`` in [-1, 1]) and labels (0..classes-1), split three ways."""

    key: str
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: int


def domain_from_arrays(key: str, images, labels, image_size: int, val_count: int, test_count: int,
                       seed: int = 0) -> DomainData:
    """A domain from arrays: refused (ValueError naming ``key``) unless ``[K, image_size, image_size]``."""
    x = np.asarray(images)
    y = np.asarray(labels)
    if x.ndim != 3:
        raise ValueError(f"domain {key!r}: images must be [K, H, W], got shape {x.shape}")
    if x.shape[1:] != (image_size, image_size):
        raise ValueError(
            f"domain {key!r}: images are {x.shape[1]}x{x.shape[2]}, the network's image size is "
            f"{image_size}x{image_size}; domains share one optical window, so sizes must agree (resize "
            f"them first, e.g. optdiff.data.resize_images(images, {image_size}), or load with size={image_size})")
    if x.dtype.kind not in "fiu" or not np.all(np.isfinite(x)):
        raise ValueError(f"domain {key!r}: images must be finite real numbers")
    if y.shape != (x.shape[0],) or y.dtype.kind not in "iu":
        raise ValueError(f"domain {key!r}: labels must be [K] integers matching the images, got {y.shape} {y.dtype}")
    need = val_count + test_count + 1
    if x.shape[0] < need:
        raise ValueError(f"domain {key!r}: {x.shape[0]} images, need at least {need} "
                         f"(val_count {val_count} + test_count {test_count} + 1 to train on)")
    values, y = np.unique(y, return_inverse=True)
    perm = np.random.default_rng([seed, 7]).permutation(x.shape[0])
    te, va, tr = perm[:test_count], perm[test_count:test_count + val_count], perm[test_count + val_count:]
    x = x.astype(np.float64)
    return DomainData(key, x[tr], y[tr], x[va], y[va], x[te], y[te], int(values.size))


def load_domains(specs, search) -> list[DomainData]:
    """Every ``[[domain]]`` of a config, loaded at ``search.image_size``."""
    out = []
    want = search.train_limit + search.val_count + search.test_count
    for spec in specs:
        x, y = load_dataset(spec.name, data_dir=spec.data_dir or None, split=spec.split, classes=spec.classes,
                            size=search.image_size, limit=spec.limit or want, seed=search.seed)
        out.append(domain_from_arrays(spec.key, x, y, search.image_size, search.val_count, search.test_count,
                                      seed=search.seed))
    return out


def domain_index(keys, name: str) -> int:
    """Index of domain ``name``; ValueError listing the known names otherwise."""
    keys = list(keys)
    if name not in keys:
        raise ValueError(f"unknown domain {name!r}; this run's domains: {', '.join(keys)}")
    return keys.index(name)
