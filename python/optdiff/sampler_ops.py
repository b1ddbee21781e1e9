"""Fast element-wise sampling operations: counter-based Gaussian noise and the DDPM update.

The numbers come from a counter-based generator (Philox4x32-10 bits, Box-Muller normals; see
``csrc/include/optdiff/sampler.hpp``): normal number ``i`` of the stream ``(seed, stream)``
depends only on ``seed``, ``stream`` and ``i``. So they are the same for any thread count, on
the CUDA back end, and when an array is produced in pieces (pass each piece's ``offset``).
A sampler would use one ``stream`` per timestep, e.g. ``stream=t``.

Values are float32-accurate normals (ln and sin/cos are evaluated in float32) whatever the
output dtype, bounded by ``|z| <= 6.66``.

    z = optdiff.standard_normal((64, 128, 128), seed=0, stream=999)
    x = optdiff.ddpm_update(x, intensity, c1=c1, c2=c2, sigma=sigma, eps_scale=a, eps_offset=b,
                            seed=0, stream=t, out=x)   # one threaded pass, no temporaries
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from . import _core
from .propagation import _nthreads

__all__ = ["standard_normal", "ddpm_update"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_U64 = 1 << 64


def _u64(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) < _U64:
        raise ValueError(f"{name} must be an integer in [0, 2**64), got {value!r}")
    return int(value)


def _ddpm_coefficients(c1, c2, sigma, eps_scale, eps_offset) -> list:
    coeffs = [float(c1), float(c2), float(sigma), float(eps_scale), float(eps_offset)]
    if not all(np.isfinite(coeffs)):
        raise ValueError(f"c1, c2, sigma, eps_scale and eps_offset must be finite, got {coeffs}")
    if coeffs[2] < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    return coeffs


def _on_device(a) -> bool:
    """A GPU array (CuPy, PyTorch, Numba, optdiff.cuda_backend.DeviceArray): the CUDA back end's job."""
    return not isinstance(a, np.ndarray) and (hasattr(a, "__cuda_array_interface__") or hasattr(a, "__dlpack__"))


def _float_array(a, name: str, writeable: bool = False) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array (float32 or float64), got {type(a).__name__}")
    if a.dtype not in _FLOATS:
        raise TypeError(f"{name} must be float32 or float64, got {a.dtype}; convert with "
                        f"{name}.astype(np.float32) first")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous; pass np.ascontiguousarray({name})")
    if writeable and not a.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    return a


def standard_normal(shape: Union[int, Sequence[int]], *, seed: int, stream: int = 0, offset: int = 0,
                    dtype=np.float32, out: Optional[np.ndarray] = None,
                    nthreads: Optional[int] = None) -> np.ndarray:
    """Standard normal numbers ``offset .. offset + size - 1`` of the stream ``(seed, stream)``.

    ``out`` (float32/float64, C-contiguous, of ``shape``) is filled instead of a new array; a GPU
    array there is filled on the device (``optdiff.cuda_backend.standard_normal``).
    """
    if out is not None and _on_device(out):
        from . import cuda_backend

        return cuda_backend.standard_normal(out, seed=seed, stream=stream, offset=offset)
    seed, stream, offset = _u64(seed, "seed"), _u64(stream, "stream"), _u64(offset, "offset")
    shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must not have negative sizes, got {shape}")
    if out is None:
        if np.dtype(dtype) not in _FLOATS:
            raise TypeError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
        out = np.empty(shape, dtype=dtype)
    else:
        _float_array(out, "out", writeable=True)
        if out.shape != shape:
            raise ValueError(f"out has shape {out.shape}, expected {shape}")
    _core.standard_normal(out, seed, stream, offset, _nthreads(nthreads))
    return out


def ddpm_update(x: np.ndarray, eps: np.ndarray, *, c1: float, c2: float, sigma: float, seed: int,
                stream: int, offset: int = 0, eps_scale: float = 1.0, eps_offset: float = 0.0,
                out: Optional[np.ndarray] = None, nthreads: Optional[int] = None) -> np.ndarray:
    """One ancestral DDPM step ``x_{t-1} = c1 (x - c2 e) + sigma z`` in one threaded pass.

    ``e = eps_scale * eps + eps_offset``: pass the predicted noise as ``eps``, or pass a raw
    read-out (e.g. the camera intensity) with the affine read-out's scale and offset. ``z`` is
    ``standard_normal(x.shape, seed=seed, stream=stream, offset=offset)``; ``sigma = 0`` draws
    none. For the standard step at timestep ``t``: ``c1 = 1 / sqrt(alpha_t)``,
    ``c2 = beta_t / sqrt(1 - alpha_bar_t)``. ``out`` may be ``x`` or ``eps`` (in place).
    GPU arrays go to ``optdiff.cuda_backend.ddpm_update`` (the same numbers).
    """
    if _on_device(x) or _on_device(eps):
        from . import cuda_backend

        return cuda_backend.ddpm_update(x, eps, out, c1=c1, c2=c2, sigma=sigma, eps_scale=eps_scale,
                                        eps_offset=eps_offset, seed=seed, stream=stream, offset=offset)
    x = _float_array(x, "x")
    eps = _float_array(eps, "eps")
    if eps.dtype != x.dtype or eps.shape != x.shape:
        raise ValueError(f"eps must match x in shape and dtype: x {x.shape} {x.dtype}, eps {eps.shape} {eps.dtype}")
    if out is None:
        out = np.empty_like(x)
    else:
        _float_array(out, "out", writeable=True)
        if out.dtype != x.dtype or out.shape != x.shape:
            raise ValueError(f"out must match x in shape and dtype: x {x.shape} {x.dtype}, "
                             f"out {out.shape} {out.dtype}")
    coeffs = _ddpm_coefficients(c1, c2, sigma, eps_scale, eps_offset)
    offset = _u64(offset, "offset")
    _core.ddpm_update(x, eps, out, *coeffs, _u64(seed, "seed"), _u64(stream, "stream"), offset,
                      _nthreads(nthreads))
    return out
