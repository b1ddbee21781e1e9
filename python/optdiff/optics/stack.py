"""Stacks of phase-only layers with free-space hops and a camera, with exact adjoint gradients.

Fields are complex64 or complex128 arrays shaped ``[B, N, N]`` or ``[N, N]``, C-contiguous;
phases are float32 (with complex64) or float64 (with complex128) arrays ``[L, N, N]``. Nothing
is copied: a non-contiguous array or a wrong dtype raises instead. The gradient of a real loss
with respect to a complex value z is ``dL/dRe(z) + 1j * dL/dIm(z)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .backends import get_backend
from .backends.cpu import Tape
from .specs import StackParamGrads, stack_spec

__all__ = ["PhaseStack", "Tape", "StackParamGrads"]


class PhaseStack:
    """A stack of L phase-only layers with free-space hops, then a camera.

    Optional input hop (``input_distance``), then for each layer l: multiply
    by exp(i phi_l) (and the hop's tilt), propagate ``distances[l]``. The last
    hop ends at the camera, which records I = |E|^2.

    Parameters
    ----------
    n, wavelength, pitch, method, padding, backend :
        As for :class:`~optdiff.Propagator`, shared by every hop.
    distances : sequence of L floats
        Hop after each mask, metres.
    tilts : None or [L, 2] angles (rad)
        Beam angle applied right after each mask (e.g. a mirror tilt x2).
    input_distance : float or None
        Hop from the input plane to the first mask; None for no hop.
    input_tilt : (float, float)
        Beam angle of the input (applied also without an input hop).

    Phases are ``[L, n, n]`` float32 (complex64 fields) or float64.
    """

    def __init__(self, n: int, *, wavelength: float, pitch: float, distances: Sequence[float],
                 method: str = "as", padding: int = 2, tilts=None,
                 input_distance: float | None = None, input_tilt=(0.0, 0.0), backend="cpu"):
        self.spec = stack_spec(n, wavelength=wavelength, pitch=pitch, distances=distances, method=method,
                               padding=padding, tilts=tilts, input_distance=input_distance,
                               input_tilt=input_tilt)
        self._backend = get_backend(backend)
        self._impl = self._backend.phase_stack(self.spec)  # validates the physics
        self.input_distance = None if input_distance is None else self.spec.input_hop.distance

    backend = property(lambda self: self._backend.name)
    n = property(lambda self: self.spec.n)
    num_layers = property(lambda self: self.spec.num_layers)
    wavelength = property(lambda self: self.spec.hops[0].wavelength)
    pitch = property(lambda self: self.spec.hops[0].pitch)
    method = property(lambda self: self.spec.hops[0].method)
    padding = property(lambda self: self.spec.hops[0].padding)
    distances = property(lambda self: tuple(h.distance for h in self.spec.hops))
    tilts = property(lambda self: np.array([h.tilt for h in self.spec.hops]))
    input_tilt = property(lambda self: (0.0, 0.0) if self.spec.input_hop is None else self.spec.input_hop.tilt)

    def forward(self, field, phases, out=None, nthreads: int | None = None):
        """Camera intensity ``[B, n, n]`` (real, the field's precision) for ``field`` and ``phases``.

        ``field`` may also be real (float32 with float32 phases, or float64): an amplitude-encoded
        image, read as a field with zero imaginary part without widening the batch to complex.
        """
        return self._impl.forward(field, phases, out, nthreads)

    __call__ = forward

    def camera_field(self, field, phases, nthreads: int | None = None):
        """Complex field at the camera, ``[B, n, n]``."""
        return self._impl.camera_field(field, phases, nthreads)

    def forward_train(self, field, phases, recompute: bool = False, nthreads: int | None = None,
                      reuse=None):
        """Forward pass that also returns a tape for :meth:`backward`.

        ``recompute=False`` stores L+1 fields per sample ([B, L+1, n, n]);
        ``recompute=True`` stores nothing and backward reruns the forward pass.
        ``reuse``: a tape from an earlier step whose storage is overwritten
        instead of allocating (and page-faulting) a new one each step.
        The tape holds copies of what it needs: later edits of ``field`` or ``phases``
        do not change the gradients.
        """
        return self._impl.forward_train(field, phases, bool(recompute), nthreads, reuse)

    def backward(self, tape, grad_intensity, input_grad: bool = False, nthreads: int | None = None,
                 param_grads: bool = False):
        """Exact gradients from dLoss/dIntensity (same shape as the intensity).

        Returns ``(grad_phases [L, n, n] summed over the batch, grad_field or None)``; with
        ``param_grads`` also a :class:`StackParamGrads` (d loss / d each hop's distance and
        tilt, and the input hop's): exact derivatives of the transfer functions and tilt ramps,
        at the cost of one more hop per layer and sample (nothing when not asked); on every
        backend (on CUDA the call then waits for the stream).
        """
        if param_grads:
            gph, gx, (gd, gt) = self._impl.backward(tape, grad_intensity, bool(input_grad), nthreads,
                                                    param_grads=True)
            L = self.num_layers
            extra = StackParamGrads(gd[:L].copy(), gt[:L].copy(),
                                    None if self.input_distance is None else float(gd[L]), gt[L].copy())
            return gph, gx, extra
        return self._impl.backward(tape, grad_intensity, bool(input_grad), nthreads)

    def mse_loss_and_grad(self, field, phases, target, return_intensity: bool = False,
                          nthreads: int | None = None):
        """Fused training step for intensity matching.

        ``loss = mean((I - target)^2)`` over the batch and all pixels, with I the camera
        intensity of ``field`` through ``phases``. Returns ``(loss, grad_phases [L, n, n])``,
        plus the intensity ``[B, n, n]`` when ``return_intensity``.

        Same result as :meth:`forward_train`, the loss and :meth:`backward`, but each sample
        runs forward, loss and backward while its fields are in the thread's cache: no tape is
        stored (extra memory O(threads * L * n^2)) and no pass over the batch is made in Python.
        Bitwise the same for any thread count.
        """
        return self._impl.mse_loss_and_grad(field, phases, target, bool(return_intensity), nthreads)

    def __repr__(self) -> str:
        return (f"PhaseStack(n={self.n}, layers={self.num_layers}, wavelength={self.wavelength:g}, "
                f"pitch={self.pitch:g}, distances={self.distances}, method={self.method!r}, "
                f"padding={self.padding}, input_distance={self.input_distance}, backend={self.backend!r})")
