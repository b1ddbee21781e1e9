"""Functional face of optdiff.torch: ``propagate`` and ``stack_intensity`` on tensors.

They check the arguments (naming the one at fault), then call the operators of :mod:`.ops`.
``stack_intensity`` records a tape only when a gradient is needed (inputs that require grad,
grad mode on); under ``torch.no_grad()`` or ``torch.inference_mode()`` it runs the core's
forward pass alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..optics.specs import hop_spec, stack_spec
from . import _tensors as T
from . import ops

__all__ = ["StackGeometry", "propagate", "stack_intensity", "stack_mse"]


@dataclass(frozen=True)
class StackGeometry:
    """A phase stack's physics as the operators take it (Python types checked, SI units).

    The values themselves are checked by the core the first time a stack of this geometry is
    made (``validate()``; the modules do it in their constructors).
    """

    n: int
    wavelength: float
    pitch: float
    distances: tuple[float, ...]
    method: str = "as"
    padding: int = 2
    tilts: tuple[float, ...] = ()        # flat (x0, y0, x1, y1, ...), empty: no tilts
    input_distance: float | None = None
    input_tilt: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def make(cls, n, *, wavelength, pitch, distances: Sequence[float], method="as", padding=2, tilts=None,
             input_distance=None, input_tilt=(0.0, 0.0)) -> StackGeometry:
        spec = stack_spec(n, wavelength=wavelength, pitch=pitch, distances=distances, method=method,
                          padding=padding, tilts=tilts, input_distance=input_distance, input_tilt=input_tilt)
        hops = spec.hops
        first = hops[0] if hops else hop_spec(wavelength=wavelength, pitch=pitch, distance=0.0, method=method,
                                              padding=padding)
        flat = tuple(v for h in hops for v in h.tilt)
        return cls(n=spec.n, wavelength=first.wavelength, pitch=first.pitch,
                   distances=tuple(h.distance for h in hops), method=first.method, padding=first.padding,
                   tilts=flat if any(flat) else (),
                   input_distance=None if spec.input_hop is None or input_distance is None
                   else spec.input_hop.distance,
                   input_tilt=(0.0, 0.0) if spec.input_hop is None else spec.input_hop.tilt)

    @property
    def num_layers(self) -> int:
        return len(self.distances)

    def op_args(self) -> tuple:
        return (self.wavelength, self.pitch, list(self.distances), self.method, self.padding, list(self.tilts),
                self.input_distance, list(self.input_tilt))

    def validate(self, device: torch.device | str = "cpu") -> None:
        """Make (and cache) the compiled stack for this geometry: bad physics raises ValueError here."""
        ops._stack(torch.device(device), self.n, *self.op_args())


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def propagate(field: torch.Tensor, *, wavelength: float, pitch: float, distance: float, method: str = "as",
              padding: int = 2, tilt=(0.0, 0.0), adjoint: bool = False) -> torch.Tensor:
    """One free-space hop of ``field`` ([..., n, n], complex64/complex128; CPU or CUDA).

    ``adjoint=True`` applies the exact adjoint A^H. Differentiable (the gradient of one is the
    other); see :class:`optdiff.Propagator` for the physics.
    """
    T.field(field)
    hop = hop_spec(wavelength=wavelength, pitch=pitch, distance=distance, method=method, padding=padding,
                   tilt=tilt)
    return ops.propagate_op(field, hop.wavelength, hop.pitch, hop.distance, hop.method, hop.padding,
                            list(hop.tilt), bool(adjoint))


def stack_intensity(field: torch.Tensor, phases: torch.Tensor, geometry: StackGeometry,
                    recompute: bool = False) -> torch.Tensor:
    """Camera intensity ``[..., n, n]`` of ``field`` through ``phases`` ``[L, n, n]``.

    ``field``: complex64 with float32 phases or complex128 with float64; or real amplitudes of
    the phases' dtype (read without a complex copy when no gradient is needed; widened to
    complex, one copy, when the field itself requires grad). Gradients for ``phases`` (summed
    over the batch) and for ``field`` come from the core's exact backward pass, which reads the
    tape of ``[B, L+1, n, n]`` fields kept by the forward pass; ``recompute=True`` keeps no tape
    and reruns the forward pass during backward (memory independent of L, about 1.5x the time).
    """
    T.field(field, "field", allow_real=True)
    if field.shape[-1] != geometry.n:
        raise ValueError(f"field must end in ({geometry.n}, {geometry.n}) to match the stack's n, "
                         f"got shape {tuple(field.shape)}")
    ops._check_stack_args(field, phases, geometry.num_layers, allow_real=True)
    args = geometry.op_args()
    if not _needs_grad(field, phases) or recompute:
        return ops.stack_intensity_op(field, phases, *args)
    if not field.is_complex():
        field = field.to(T.COMPLEX_OF[field.dtype])  # the tape is kept for complex fields
    return ops.stack_forward_train_op(field, phases, *args)[0]


def stack_mse(field: torch.Tensor, phases: torch.Tensor, target: torch.Tensor, geometry: StackGeometry
              ) -> torch.Tensor:
    """``mean((stack_intensity(field, phases) - target)^2)`` by the core's fused step.

    Forward, loss and backward run per sample while its fields are in the thread's cache: no
    tape is kept (``PhaseStack.mse_loss_and_grad``). The gradient is for ``phases`` only:
    ``field`` and ``target`` must not require grad (a ``ValueError`` naming them; use
    ``torch.nn.functional.mse_loss(stack_intensity(...), target)`` when they need one). The
    phases' gradient is computed with the loss, also when no backward follows.
    """
    T.field(field)
    ops._check_stack_args(field, phases, geometry.num_layers)
    ops._check_target(target, field)
    if torch.is_grad_enabled():
        for t, name in ((field, "field"), (target, "target")):
            if t.requires_grad:
                raise ValueError(f"{name} requires grad, but the fused MSE step differentiates the phases only; "
                                 f"pass {name}.detach(), or use mse_loss(stack_intensity(...), target) for "
                                 f"a gradient of {name}")
    return ops.stack_mse_op(field, phases, target, *geometry.op_args())[0]
