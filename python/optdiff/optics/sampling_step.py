"""The sampling step's element-wise kernels: counter-based Gaussian noise and the DDPM update.

The numbers come from a counter-based generator (Philox4x32-10 bits, Box-Muller normals; see
``csrc/include/optdiff/sampler.hpp``): normal number ``i`` of the stream ``(seed, stream)``
depends only on ``seed``, ``stream`` and ``i``. So they are the same for any thread count, on
the CUDA backend, and when an array is produced in pieces (pass each piece's ``offset``).
A sampler would use one ``stream`` per timestep, e.g. ``stream=t``.

Values are float32-accurate normals (ln and sin/cos are evaluated in float32) whatever the
output dtype, bounded by ``|z| <= 6.66``.

    z = optdiff.standard_normal((64, 128, 128), seed=0, stream=999)
    x = optdiff.ddpm_update(x, intensity, c1=c1, c2=c2, sigma=sigma, eps_scale=a, eps_offset=b,
                            seed=0, stream=t, out=x)   # one threaded pass, no temporaries

NumPy arrays run on the CPU backend, device arrays (CuPy, PyTorch CUDA tensors, anything with
``__cuda_array_interface__`` or DLPack) on the CUDA backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import _args
from .backends import backend_for, get_backend

__all__ = ["standard_normal", "ddpm_update"]


def _shape(shape) -> tuple:
    if isinstance(shape, (int, np.integer, bool, np.bool_)) or not hasattr(shape, "__iter__"):
        shape = (shape,)
    dims = tuple(_args.integer(s, "shape") for s in shape)
    if any(s < 0 for s in dims):
        raise ValueError(f"shape must not have negative sizes, got {dims}")
    size = 1
    for s in dims:
        size *= s
    if size >= 1 << 62:
        raise ValueError(f"shape {dims} has too many elements for one array")
    return dims


def _arrays(**named) -> None:
    """NumPy or device arrays only: anything else would be sent to a backend that cannot take it."""
    for name, a in named.items():
        if a is not None and not isinstance(a, np.ndarray) and not (
                hasattr(a, "__cuda_array_interface__") or hasattr(a, "__dlpack__")):
            raise TypeError(f"{name} must be a NumPy array or a CUDA device array, got {type(a).__name__}")


def _coefficients(c1, c2, sigma, eps_scale, eps_offset) -> list:
    names = ("c1", "c2", "sigma", "eps_scale", "eps_offset")
    coeffs = [_args.real(v, k) for k, v in zip(names, (c1, c2, sigma, eps_scale, eps_offset))]
    for k, v in zip(names, coeffs):
        if not np.isfinite(v):
            raise ValueError(f"{k} must be finite, got {v}")
    if coeffs[2] < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    return coeffs


def standard_normal(shape: int | Sequence[int] | None = None, *, seed: int, stream: int = 0,
                    offset: int = 0, dtype=None, out=None, nthreads: int | None = None, backend=None):
    """Standard normal numbers ``offset .. offset + size - 1`` of the stream ``(seed, stream)``.

    ``out`` (float32/float64, C-contiguous, of ``shape``; ``shape`` may then be omitted) is filled
    instead of a new array; a device array there is filled on the GPU. ``dtype``: float32 (default)
    or float64; with ``out`` it may be omitted or must be out's dtype. ``backend`` (None: the one
    that owns ``out``, else the CPU) names where the numbers are made.
    """
    if shape is None and out is None:
        raise TypeError("standard_normal needs a shape or an out array")
    _arrays(out=out)
    seed, stream, offset = _args.u64(seed, "seed"), _args.u64(stream, "stream"), _args.u64(offset, "offset")
    shape = None if shape is None else _shape(shape)
    if dtype is not None:
        dtype = _args.dtype(dtype, _args.FLOATS)
        if out is not None and np.dtype(getattr(out, "dtype", dtype)) != dtype:
            raise TypeError(f"dtype {dtype} does not match out's dtype {out.dtype}; omit dtype or pass out of it")
    dtype = np.float32 if dtype is None else dtype
    impl = backend_for(out) if backend is None else get_backend(backend)
    return impl.standard_normal(shape, seed=seed, stream=stream, offset=offset, dtype=dtype,
                                            out=out, nthreads=nthreads)


def ddpm_update(x, eps, *, c1: float, c2: float, sigma: float, seed: int, stream: int, offset: int = 0,
                eps_scale: float = 1.0, eps_offset: float = 0.0, out=None, nthreads: int | None = None,
                backend=None):
    """One ancestral DDPM step ``x_{t-1} = c1 (x - c2 e) + sigma z`` in one threaded pass.

    ``e = eps_scale * eps + eps_offset``: pass the predicted noise as ``eps``, or pass a raw
    read-out (e.g. the camera intensity) with the affine read-out's scale and offset. ``z`` is
    ``standard_normal(x.shape, seed=seed, stream=stream, offset=offset)``; ``sigma = 0`` draws
    none. For the standard step at timestep ``t``: ``c1 = 1 / sqrt(alpha_t)``,
    ``c2 = beta_t / sqrt(1 - alpha_bar_t)``. ``out`` may be ``x`` or ``eps`` (in place).
    Device arrays run on the GPU (the same numbers); ``backend`` (None: the one that owns the
    arrays) may name another.
    """
    _arrays(x=x, eps=eps, out=out)
    coeffs = _coefficients(c1, c2, sigma, eps_scale, eps_offset)
    if np.dtype(getattr(x, "dtype", np.float64)) == np.float32:  # the update runs in float32
        big = float(np.finfo(np.float32).max)
        for k, v in zip(("c1", "c2", "sigma", "eps_scale", "eps_offset"), coeffs):
            if abs(v) > big:
                raise ValueError(f"{k} = {v:g} is beyond float32's range (x is float32); use float64 arrays")
    seed, stream, offset = _args.u64(seed, "seed"), _args.u64(stream, "stream"), _args.u64(offset, "offset")
    impl = backend_for(x, eps, out) if backend is None else get_backend(backend)
    return impl.ddpm_update(x, eps, out, coeffs, seed, stream, offset, nthreads)
