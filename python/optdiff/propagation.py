"""Free-space propagators and phase-layer stacks (the optical core).

Thin wrappers over the compiled module ``optdiff._core`` (C++, FFTW3, OpenMP).
All physical quantities are SI: metres and radians. See ``docs/api.md``.

Fields are complex64 or complex128 arrays shaped ``[B, N, N]`` or ``[N, N]``,
C-contiguous; phases are float32 (with complex64) or float64 (with complex128)
arrays ``[L, N, N]``. Nothing is copied: a non-contiguous array or a wrong
dtype raises instead. The gradient of a real loss with respect to a complex
value z is ``dL/dRe(z) + 1j * dL/dIm(z)``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from . import _core

__all__ = ["Propagator", "PhaseStack", "Tape", "propagate", "METHODS"]

METHODS = ("as", "bl-as", "fresnel")

_COMPLEX = {np.dtype(np.complex64): np.float32, np.dtype(np.complex128): np.float64}
_REAL = {np.dtype(np.float32): np.dtype(np.complex64), np.dtype(np.float64): np.dtype(np.complex128)}


def _check_backend(backend: str) -> str:
    if backend not in ("cpu", "cuda"):
        raise ValueError(f"backend must be 'cpu' or 'cuda', got {backend!r}")
    return backend


def _nthreads(nthreads: Optional[int]) -> int:
    if nthreads is None:
        return 0
    if isinstance(nthreads, bool) or not isinstance(nthreads, (int, np.integer)) or nthreads < 1:
        raise ValueError(f"nthreads must be a positive integer or None, got {nthreads!r}")
    return int(nthreads)


def _as_field(x, name: str = "field") -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"{name} must be a NumPy array (complex64 or complex128), got {type(x).__name__}; "
            "for device arrays use backend='cuda'"
        )
    if x.dtype not in _COMPLEX:
        raise TypeError(
            f"{name} must be complex64 or complex128, got {x.dtype}; "
            f"convert with {name}.astype(np.complex64) first"
        )
    return x


def _pair(tilt, name: str) -> tuple[float, float]:
    try:
        tx, ty = (float(v) for v in tilt)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of angles (x, y) in radians, got {tilt!r}") from None
    return tx, ty


def _hop(wavelength, pitch, distance, method, padding, tilt, name="tilt"):
    """The hop tuple both compiled modules take; method and padding are checked there."""
    tx, ty = _pair(tilt, name)
    return (float(wavelength), float(pitch), float(distance), method, padding, tx, ty)


def _check_target(target, shape, dtype) -> np.ndarray:
    if not isinstance(target, np.ndarray):
        raise TypeError(f"target must be a NumPy array shaped like the intensity {tuple(shape)}, "
                        f"got {type(target).__name__}")
    if target.dtype != dtype:
        raise TypeError(f"target must be {np.dtype(dtype)} (the intensity's dtype), got {target.dtype}; "
                        f"use target.astype(np.{np.dtype(dtype)})")
    if target.shape != tuple(shape):
        raise ValueError(f"target must have the intensity's shape {tuple(shape)}, got {target.shape}")
    return target


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an integer >= 2 (pixels per side), got {n!r}")
    return int(n)


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
    backend : {"cpu", "cuda"}

    Methods ``forward`` and ``adjoint`` (exact A^H) take ``[B, n, n]`` or
    ``[n, n]`` complex fields and return arrays of the same shape and dtype.
    """

    def __init__(self, n: int, *, wavelength: float, pitch: float, distance: float,
                 method: str = "as", padding: int = 2, tilt=(0.0, 0.0), backend: str = "cpu"):
        self.n = _check_n(n)
        self.backend = _check_backend(backend)
        self._spec = _hop(wavelength, pitch, distance, method, padding, tilt)
        self.wavelength, self.pitch, self.distance = float(wavelength), float(pitch), float(distance)
        self._impl = {}
        if backend == "cpu":
            # Validate now (raises ValueError for bad physics) and plan float32 lazily.
            self._impl[np.dtype(np.complex128)] = _core.Propagator64(self.n, self._spec)
        else:
            from .cuda_backend import CudaPropagator

            self._cuda = CudaPropagator(self.n, wavelength=wavelength, pitch=pitch, distance=distance,
                                        method=method, padding=padding, tilt=tilt)
        self.method, self.padding, self.tilt = method, int(padding), _pair(tilt, "tilt")  # valid now

    def _cpu(self, dtype):
        impl = self._impl.get(dtype)
        if impl is None:
            impl = _core.Propagator32(self.n, self._spec)
            self._impl[dtype] = impl
        return impl

    def _run(self, field, out, nthreads, adjoint):
        if self.backend == "cuda":
            f = self._cuda.adjoint if adjoint else self._cuda.forward
            return f(field, out=out, nthreads=nthreads)
        field = _as_field(field)
        if out is None:
            out = np.empty_like(field)
        impl = self._cpu(field.dtype)
        (impl.adjoint if adjoint else impl.forward)(field, out, _nthreads(nthreads))
        return out

    def forward(self, field: np.ndarray, out: Optional[np.ndarray] = None,
                nthreads: Optional[int] = None) -> np.ndarray:
        """Propagate ``field`` ([B,n,n] or [n,n], complex64/128). ``out`` may be ``field`` (in place)."""
        return self._run(field, out, nthreads, adjoint=False)

    def adjoint(self, field: np.ndarray, out: Optional[np.ndarray] = None,
                nthreads: Optional[int] = None) -> np.ndarray:
        """Apply the exact adjoint A^H (back-propagation with conj(H), then conj(tilt))."""
        return self._run(field, out, nthreads, adjoint=True)

    __call__ = forward

    def transfer_function(self, dtype=np.complex128) -> np.ndarray:
        """Transfer function H on the padded grid ``[n*padding]^2`` in FFT order (unnormalised)."""
        dtype = np.dtype(dtype)
        if dtype not in _COMPLEX:
            raise TypeError("dtype must be complex64 or complex128")
        return self._cpu(dtype).transfer_function()

    def __repr__(self) -> str:
        return (f"Propagator(n={self.n}, wavelength={self.wavelength:g}, pitch={self.pitch:g}, "
                f"distance={self.distance:g}, method={self.method!r}, padding={self.padding}, "
                f"tilt={self.tilt}, backend={self.backend!r})")


def propagate(field: np.ndarray, *, wavelength: float, pitch: float, distance: float,
              method: str = "as", padding: int = 2, tilt=(0.0, 0.0),
              nthreads: Optional[int] = None) -> np.ndarray:
    """One-off propagation of ``field`` ([B,n,n] or [n,n]); see :class:`Propagator`.

    Builds (and caches in FFTW) a plan per call: for repeated use keep a Propagator.
    """
    field = _as_field(field)
    p = Propagator(field.shape[-1], wavelength=wavelength, pitch=pitch, distance=distance,
                   method=method, padding=padding, tilt=tilt)
    return p.forward(field, nthreads=nthreads)


@dataclass
class Tape:
    """What :meth:`PhaseStack.backward` needs from a forward pass.

    ``saved`` holds, per sample, the modulated field at each layer and the
    camera field ([B, L+1, n, n] complex) or is None in recompute mode, where
    backward reruns the forward pass per sample (memory independent of L).
    """

    field: np.ndarray
    phases: np.ndarray
    saved: Optional[np.ndarray]
    modulation: Optional[np.ndarray] = None  # exp(i phi) * tilt [L, n, n] from forward

    @property
    def nbytes(self) -> int:
        return 0 if self.saved is None else int(self.saved.nbytes)


class PhaseStack:
    """A stack of L phase-only layers with free-space hops, then a camera.

    Optional input hop (``input_distance``), then for each layer l: multiply
    by exp(i phi_l) (and the hop's tilt), propagate ``distances[l]``. The last
    hop ends at the camera, which records I = |E|^2.

    Parameters
    ----------
    n, wavelength, pitch, method, padding :
        As for :class:`Propagator`, shared by every hop.
    distances : sequence of L floats
        Hop after each mask, metres.
    tilts : None or [L, 2] angles (rad)
        Beam angle applied right after each mask (e.g. a mirror tilt x2).
    input_distance : float or None
        Hop from the input plane to the first mask; None for no hop.
    input_tilt : (float, float)
        Beam angle of the input.

    Phases are ``[L, n, n]`` float32 (complex64 fields) or float64.
    """

    def __init__(self, n: int, *, wavelength: float, pitch: float, distances: Sequence[float],
                 method: str = "as", padding: int = 2, tilts=None,
                 input_distance: Optional[float] = None, input_tilt=(0.0, 0.0), backend: str = "cpu"):
        self.n = _check_n(n)
        self.backend = _check_backend(backend)
        dist = np.asarray(distances, dtype=np.float64).reshape(-1)
        if dist.size == 0:
            raise ValueError("distances must list at least one hop (one per layer)")
        L = dist.size
        if tilts is None:
            tilts_arr = np.zeros((L, 2))
        else:
            tilts_arr = np.asarray(tilts, dtype=np.float64)
            if tilts_arr.shape != (L, 2):
                raise ValueError(f"tilts must have shape (L, 2) = ({L}, 2), got {tilts_arr.shape}")
        self.wavelength, self.pitch = float(wavelength), float(pitch)
        self.distances = tuple(float(d) for d in dist)
        self.tilts = tilts_arr
        self.method, self.padding = method, int(padding) if not isinstance(padding, bool) else padding
        self.input_distance = None if input_distance is None else float(input_distance)
        self.input_tilt = _pair(input_tilt, "input_tilt")
        self._hops = [_hop(wavelength, pitch, d, method, padding, t, name=f"tilts[{i}]")
                      for i, (d, t) in enumerate(zip(dist, tilts_arr))]
        self._input_hop = (None if input_distance is None else
                           _hop(wavelength, pitch, input_distance, method, padding, input_tilt, "input_tilt"))
        self._impl = {}
        self._spare_tape = None
        if backend == "cpu":
            self._impl[np.dtype(np.complex128)] = _core.PhaseStack64(self.n, self._hops, self._input_hop)
        else:
            from .cuda_backend import CudaPhaseStack

            self._cuda = CudaPhaseStack(self.n, wavelength=wavelength, pitch=pitch, distances=distances,
                                        method=method, padding=padding, tilts=tilts,
                                        input_distance=input_distance, input_tilt=input_tilt)

    @property
    def num_layers(self) -> int:
        return len(self.distances)

    def _cpu(self, dtype):
        impl = self._impl.get(dtype)
        if impl is None:
            impl = _core.PhaseStack32(self.n, self._hops, self._input_hop)
            self._impl[dtype] = impl
        return impl

    def _prepare(self, field, phases, allow_real=False):
        if allow_real and isinstance(field, np.ndarray) and field.dtype in _REAL:
            cdtype, want = _REAL[field.dtype], field.dtype  # a real field: phases of its own dtype
        else:
            field = _as_field(field)
            cdtype, want = field.dtype, np.dtype(_COMPLEX[field.dtype])
        if not isinstance(phases, np.ndarray):
            raise TypeError(f"phases must be a NumPy array [L, n, n], got {type(phases).__name__}")
        if phases.dtype != want:
            raise TypeError(f"phases must be {want} to go with a {field.dtype} field, got {phases.dtype}")
        return field, phases, self._cpu(cdtype)

    def forward(self, field: np.ndarray, phases: np.ndarray, out: Optional[np.ndarray] = None,
                nthreads: Optional[int] = None) -> np.ndarray:
        """Camera intensity ``[B, n, n]`` (real, the field's precision) for ``field`` and ``phases``.

        ``field`` may also be real (float32 with float32 phases, or float64): an amplitude-encoded
        image, read as a field with zero imaginary part without widening the batch to complex.
        """
        if self.backend == "cuda":
            return self._cuda.forward(field, phases, out=out, nthreads=nthreads)
        field, phases, impl = self._prepare(field, phases, allow_real=True)
        if out is None:
            out = np.empty(field.shape, dtype=phases.dtype)
        impl.forward(field, phases, out, None, None, _nthreads(nthreads))
        return out

    __call__ = forward

    def camera_field(self, field: np.ndarray, phases: np.ndarray,
                     nthreads: Optional[int] = None) -> np.ndarray:
        """Complex field at the camera, ``[B, n, n]``."""
        if self.backend == "cuda":
            return self._cuda.camera_field(field, phases, nthreads=nthreads)
        field, phases, impl = self._prepare(field, phases)
        inten = np.empty(field.shape, dtype=phases.dtype)
        cam = np.empty_like(field)
        impl.forward(field, phases, inten, None, cam, _nthreads(nthreads))
        return cam

    def forward_train(self, field: np.ndarray, phases: np.ndarray, recompute: bool = False,
                      nthreads: Optional[int] = None, reuse: Optional[Tape] = None):
        """Forward pass that also returns a :class:`Tape` for :meth:`backward`.

        ``recompute=False`` stores L+1 fields per sample ([B, L+1, n, n]);
        ``recompute=True`` stores nothing and backward reruns the forward pass.
        ``reuse``: a tape from an earlier step whose storage is overwritten
        instead of allocating (and page-faulting) a new one each step.
        """
        if self.backend == "cuda":
            return self._cuda.forward_train(field, phases, recompute=recompute, nthreads=nthreads)
        field, phases, impl = self._prepare(field, phases)
        inten = np.empty(field.shape, dtype=phases.dtype)
        saved = None
        if not recompute:
            b = field.shape[0] if field.ndim == 3 else 1
            shape = (b, self.num_layers + 1, self.n, self.n)
            old = reuse.saved if isinstance(reuse, Tape) else self._spare_tape
            if old is not None and old.shape == shape and old.dtype == field.dtype and (
                    reuse is not None or sys.getrefcount(old) <= 3):
                # Reused: either the caller handed the tape back, or nothing
                # but this object still refers to the last buffer (so no one
                # can see it overwritten). Saves page-faulting B(L+1) fields a step.
                saved = old
            else:
                saved = np.empty(shape, dtype=field.dtype)
            self._spare_tape = saved
        mod = np.empty((self.num_layers, self.n, self.n), dtype=field.dtype)
        impl.forward(field, phases, inten, saved, None, _nthreads(nthreads), mod)
        # The phases are copied (L*n*n, small) so later edits cannot corrupt backward.
        return inten, Tape(field=field, phases=phases.copy(), saved=saved, modulation=mod)

    def backward(self, tape: Tape, grad_intensity: np.ndarray, input_grad: bool = False,
                 nthreads: Optional[int] = None):
        """Exact gradients from dLoss/dIntensity (same shape as the intensity).

        Returns ``(grad_phases [L, n, n] summed over the batch, grad_field or None)``.
        """
        if self.backend == "cuda":
            return self._cuda.backward(tape, grad_intensity, input_grad=input_grad, nthreads=nthreads)
        if not isinstance(tape, Tape):
            raise TypeError("tape must be the Tape returned by forward_train")
        field, phases, impl = self._prepare(tape.field, tape.phases)
        if not isinstance(grad_intensity, np.ndarray):
            raise TypeError("grad_intensity must be a NumPy array shaped like the intensity")
        gph = np.empty_like(phases)
        gx = np.empty_like(field) if input_grad else None
        impl.backward(field, phases, tape.saved, grad_intensity, gph, gx, _nthreads(nthreads), tape.modulation)
        return gph, gx

    def mse_loss_and_grad(self, field: np.ndarray, phases: np.ndarray, target: np.ndarray,
                          return_intensity: bool = False, nthreads: Optional[int] = None):
        """Fused training step for intensity matching.

        ``loss = mean((I - target)^2)`` over the batch and all pixels, with I the camera
        intensity of ``field`` through ``phases``. Returns ``(loss, grad_phases [L, n, n])``,
        plus the intensity ``[B, n, n]`` when ``return_intensity``.

        Same result as :meth:`forward_train`, the loss and :meth:`backward`, but each sample
        runs forward, loss and backward while its fields are in the thread's cache: no tape is
        stored (extra memory O(threads * L * n^2)) and no pass over the batch is made in Python.
        Bitwise the same for any thread count.
        """
        if self.backend == "cuda":
            return self._cuda.mse_loss_and_grad(field, phases, target, return_intensity=return_intensity,
                                                nthreads=nthreads)
        field, phases, impl = self._prepare(field, phases)
        target = _check_target(target, field.shape, phases.dtype)
        if field.ndim == 3 and field.shape[0] == 0:
            raise ValueError("the batch has no samples: the mean squared error is undefined")
        gph = np.empty_like(phases)
        inten = np.empty(field.shape, dtype=phases.dtype) if return_intensity else None
        loss = impl.mse_loss_and_grad(field, phases, target, gph, inten, _nthreads(nthreads))
        return (loss, gph, inten) if return_intensity else (loss, gph)

    def __repr__(self) -> str:
        return (f"PhaseStack(n={self.n}, layers={self.num_layers}, wavelength={self.wavelength:g}, "
                f"pitch={self.pitch:g}, distances={self.distances}, method={self.method!r}, "
                f"padding={self.padding}, input_distance={self.input_distance}, backend={self.backend!r})")
