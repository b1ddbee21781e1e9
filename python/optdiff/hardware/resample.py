"""Separable resampling between the bench's pixel grids (DMD mirrors, SLM pixels, camera pixels).

Every map between grids here is a pair of small matrices applied as ``Ry @ A @ Rx.T``, so one
image costs two matrix products (BLAS) and the identity is skipped outright, which keeps an ideal
bench bit-exact. Positions are in units of the simulation grid's pixels (the SLM pitch).
"""

from __future__ import annotations

import math

import numpy as np

_ERF = np.frompyfunc(math.erf, 1, 1)


def overlap_matrix(n_dst: int, dst_start: float, dst_width: float, n_src: int,
                   src_start: float = 0.0, src_width: float = 1.0) -> np.ndarray:
    """``W[i, j]``: fraction of destination cell i covered by source cell j (float64 ``[n_dst, n_src]``).

    Cell i of the destination spans ``[dst_start + i w, dst_start + (i+1) w]``; ``W @ a`` is the
    mean over each destination cell of a piecewise-constant source (area resampling: a camera
    pixel integrating intensity, a relayed mirror covering part of an SLM pixel).
    """
    i = np.arange(n_dst, dtype=np.float64)
    j = np.arange(n_src, dtype=np.float64)
    a0, a1 = dst_start + i * dst_width, dst_start + (i + 1) * dst_width
    b0, b1 = src_start + j * src_width, src_start + (j + 1) * src_width
    ov = np.minimum(a1[:, None], b1[None, :]) - np.maximum(a0[:, None], b0[None, :])
    return np.clip(ov, 0.0, None) / (a1 - a0)[:, None]


def box_gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    """A unit pixel (box of width 1) convolved with a Gaussian of std ``sigma`` pixels, at ``x``.

    ``sigma = 0``: the box itself (1 inside, 1/2 on an edge, 0 outside), so sampling at integer
    offsets is the identity.
    """
    x = np.asarray(x, dtype=np.float64)
    if sigma == 0:
        ax = np.abs(x)
        return np.where(ax < 0.5, 1.0, np.where(ax == 0.5, 0.5, 0.0))
    s = math.sqrt(2.0) * sigma
    return 0.5 * (_ERF((x + 0.5) / s).astype(np.float64) - _ERF((x - 0.5) / s).astype(np.float64))


def blur_kernel(sigma: float) -> np.ndarray | None:
    """``box_gauss(d)`` for the offsets d = -R .. R where it is not negligible (< 1e-12 beyond);
    None without blur."""
    if sigma == 0:
        return None
    R = int(math.ceil(0.5 + 7.5 * sigma))   # erfc(7.5 / sqrt 2) ~ 6e-14
    return box_gauss(np.arange(-R, R + 1, dtype=np.float64), sigma)


def blur_axis(a: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """out[i] = sum_d kernel[R + d] a[i - d] along ``axis`` (odd-length kernel, centred), zero beyond
    the edges. A short stencil: no matrix product, so no BLAS threads to wake."""
    R = len(kernel) // 2
    out = kernel[R] * a
    n = a.shape[axis]
    for d in range(1, min(R, n - 1) + 1):
        lo = [slice(None)] * a.ndim
        hi = [slice(None)] * a.ndim
        lo[axis], hi[axis] = slice(0, n - d), slice(d, n)
        out[tuple(hi)] += kernel[R + d] * a[tuple(lo)]
        out[tuple(lo)] += kernel[R - d] * a[tuple(hi)]
    return out


def blur(a: np.ndarray, kernel: np.ndarray | None) -> np.ndarray:
    """Separable blur of the last two axes with ``kernel``; None: no blur."""
    if kernel is None:
        return a
    return blur_axis(blur_axis(a, kernel, -1), kernel, -2)


def shift_matrix(n: int, shift: float) -> np.ndarray | None:
    """Area weights of a pattern displaced by ``shift`` pixels: simulation pixel i covers
    ``[i - shift, i - shift + 1]`` of the pattern's pixels (None for no displacement)."""
    if shift == 0:
        return None
    return overlap_matrix(n, -shift, 1.0, n)


def lowpass_matrix(n: int, cutoff: float) -> np.ndarray | None:
    """Ideal low-pass along one axis with ``cutoff`` cycles per pixel: ``L[i, j] = h(i - j)``,
    ``h(d) = sin(2 pi c d) / (pi d)`` (the discrete sinc of a rectangular pass band).

    None for ``cutoff >= 0.5`` (the grid's Nyquist frequency: nothing to remove).
    """
    if cutoff >= 0.5:
        return None
    d = np.arange(-(n - 1), n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        h = np.sin(2 * math.pi * cutoff * d) / (math.pi * d)
    h[n - 1] = 2.0 * cutoff
    idx = np.subtract.outer(np.arange(n), np.arange(n)) + (n - 1)
    return h[idx]


def apply(a: np.ndarray, ry: np.ndarray | None, rx: np.ndarray | None) -> np.ndarray:
    """``ry @ a @ rx.T`` over the last two axes of ``a`` (None: identity on that axis).

    Each side is one matrix product over the whole batch, not one per image: a batched matmul
    wakes the BLAS threads once per image, which on a busy machine cost 3-40x (measured).
    """
    lead, (n, m) = a.shape[:-2], a.shape[-2:]
    b = a.reshape(-1, n, m)
    B = b.shape[0]
    if rx is not None:
        b = (b.reshape(B * n, m) @ rx.T.astype(a.dtype, copy=False)).reshape(B, n, -1)
        m = b.shape[-1]
    if ry is not None:
        t = ry.astype(a.dtype, copy=False) @ b.transpose(1, 0, 2).reshape(n, B * m)
        b = t.reshape(-1, B, m).transpose(1, 0, 2)
    return b.reshape(lead + b.shape[-2:])
