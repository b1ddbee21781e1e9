"""Free-space propagation of a coherent field: one hop, batched, on any backend.

All physical quantities are SI: metres and radians. Fields are complex64 or complex128 arrays
shaped ``[B, N, N]`` or ``[N, N]``, C-contiguous; nothing is copied behind your back.
"""

from __future__ import annotations

import numpy as np

from . import _args
from .backends import backend_for, get_backend
from .specs import METHODS, hop_spec

__all__ = ["Propagator", "propagate", "METHODS"]


class Propagator:
    """One free-space hop of a coherent field, batched.

    Parameters
    ----------
    n : int
        Pixels per side of the (square) field.
    wavelength, pitch : float
        Vacuum wavelength and pixel pitch, metres (e.g. 850e-9 and 9.2e-6).
    distance : float
        Propagation distance, metres (negative propagates backwards).
    method : {"as", "bl-as", "fresnel"}
        ``"as"``: exact angular spectrum exp(-i dz (kx^2+ky^2)/(k+sqrt(k^2-kx^2-ky^2)))
        (carrier exp(ikz) dropped, evanescent waves cut); ``"bl-as"``: the same,
        band-limited after Matsushima & Shimobaba (2009); ``"fresnel"``: the
        paraxial transfer function exp(-i pi lambda dz (fx^2+fy^2)).
    padding : {1, 2}
        1: periodic (the field wraps around); 2: linear convolution
        (zero-pad to 2n, propagate, crop back to n).
    tilt : (float, float)
        Beam angle (x, y) in radians applied to the input as a linear phase
        about the window centre. A mirror tilted by a deviates the beam by 2a.
    backend : {"cpu", "cuda", "cuda-emu"} or a backend object
        Chosen once here; see :mod:`optdiff.optics.backends`.

    Methods ``forward`` and ``adjoint`` (exact A^H) take ``[B, n, n]`` or
    ``[n, n]`` complex fields and return arrays of the same shape and dtype.
    """

    def __init__(self, n: int, *, wavelength: float, pitch: float, distance: float,
                 method: str = "as", padding: int = 2, tilt=(0.0, 0.0), backend="cpu"):
        self.n = _args.grid_size(n)
        self.spec = hop_spec(wavelength=wavelength, pitch=pitch, distance=distance, method=method,
                             padding=padding, tilt=tilt)
        self._backend = get_backend(backend)
        self._impl = self._backend.propagator(self.n, self.spec)  # validates the physics

    backend = property(lambda self: self._backend.name)
    wavelength = property(lambda self: self.spec.wavelength)
    pitch = property(lambda self: self.spec.pitch)
    distance = property(lambda self: self.spec.distance)
    method = property(lambda self: self.spec.method)
    padding = property(lambda self: self.spec.padding)
    tilt = property(lambda self: self.spec.tilt)

    def forward(self, field, out=None, nthreads: int | None = None):
        """Propagate ``field`` ([B,n,n] or [n,n], complex64/128). ``out`` may be ``field`` (in place)."""
        return self._impl.apply(field, out, nthreads, adjoint=False)

    def adjoint(self, field, out=None, nthreads: int | None = None):
        """Apply the exact adjoint A^H (back-propagation with conj(H), then conj(tilt))."""
        return self._impl.apply(field, out, nthreads, adjoint=True)

    __call__ = forward

    def transfer_function(self, dtype=np.complex128) -> np.ndarray:
        """Transfer function H on the padded grid ``[n*padding]^2`` in FFT order (unnormalised)."""
        return self._impl.transfer_function(_args.dtype(dtype, tuple(_args.REAL_OF)))

    def __repr__(self) -> str:
        return (f"Propagator(n={self.n}, wavelength={self.wavelength:g}, pitch={self.pitch:g}, "
                f"distance={self.distance:g}, method={self.method!r}, padding={self.padding}, "
                f"tilt={self.tilt}, backend={self.backend!r})")


def propagate(field, *, wavelength: float, pitch: float, distance: float, method: str = "as",
              padding: int = 2, tilt=(0.0, 0.0), nthreads: int | None = None, backend=None):
    """One-off propagation of ``field`` ([B,n,n] or [n,n]); see :class:`Propagator`.

    Builds (and caches) a plan per call: for repeated use keep a Propagator. ``backend=None``
    picks the backend that owns ``field`` (NumPy: CPU; a device array: CUDA).
    """

    shape = getattr(field, "shape", None)
    if shape is None or len(shape) not in (2, 3):
        raise ValueError(f"field must be an array shaped [B, n, n] or [n, n], got "
                         f"{'shape ' + str(tuple(shape)) if shape is not None else type(field).__name__}")
    backend = backend_for(field) if backend is None else backend
    p = Propagator(shape[-1], wavelength=wavelength, pitch=pitch, distance=distance, method=method,
                   padding=padding, tilt=tilt, backend=backend)
    return p.forward(field, nthreads=nthreads)
