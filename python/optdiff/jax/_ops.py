"""The differentiable operations: jax.custom_vjp around the FFI (or callback) calls.

The propagation is linear, so its VJP is its transpose A^T ct = conj(A^H conj(ct)) (JAX's
cotangents are the conjugates of optdiff's dL/dRe + i dL/dIm). The stack's VJP is the core's
exact adjoint pass, reading the tape its forward pass saved (FFI path) or recomputing it
(callback path).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import numpy as np

from optdiff.optics.specs import HopSpec, StackSpec

from . import _callback, _ffi
from ._encode import hop_values, stack_values
from ._targets import ffi_available


@dataclass(frozen=True)
class _Hop:
    """A validated hop on an n x n grid, hashable (a static argument of custom_vjp and jit)."""

    n: int
    hop: HopSpec
    use_ffi: bool

    def values(self) -> np.ndarray:
        return np.array(hop_values(self.hop), dtype=np.float64)


@dataclass(frozen=True)
class _Stack:
    spec: StackSpec
    use_ffi: bool

    def values(self) -> np.ndarray:
        return stack_values(self.spec)

    @property
    def has_input_hop(self) -> bool:
        return self.spec.input_hop is not None


def _prop(field, h: _Hop, mode: str):
    if h.use_ffi:
        return _ffi.propagate(field, h.values(), mode)
    return _callback.propagate(field, h.n, h.hop, mode)


@partial(jax.custom_vjp, nondiff_argnums=(0, 2))
def propagate_op(h: _Hop, field, adjoint: bool):
    return _prop(field, h, "adjoint" if adjoint else "forward")


def _propagate_fwd(h, field, adjoint):
    return propagate_op(h, field, adjoint), None


def _propagate_bwd(h, adjoint, _res, ct):
    # VJP of A is A^T; of A^H it is conj(A): conj(A conj(ct)) = transpose of the adjoint.
    if adjoint:
        return (jax.numpy.conj(_prop(jax.numpy.conj(ct), h, "forward")),)
    return (_prop(ct, h, "transpose"),)


propagate_op.defvjp(_propagate_fwd, _propagate_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def stack_op(s: _Stack, field, phases):
    if s.use_ffi:
        return _ffi.stack_forward(field, phases, s.values(), s.has_input_hop)
    return _callback.stack_forward(field, phases, s.spec)


def _stack_fwd(s, field, phases):
    if s.use_ffi:
        return _ffi.stack_forward_train(field, phases, s.values(), s.has_input_hop)
    return _callback.stack_forward_train(field, phases, s.spec)


def _stack_bwd(s, residuals, ct):
    if s.use_ffi:
        g_phases, g_field = _ffi.stack_backward(residuals, ct, s.values(), s.has_input_hop)
    else:
        g_phases, g_field = _callback.stack_backward(residuals, ct, s.spec)
    return g_field, g_phases


stack_op.defvjp(_stack_fwd, _stack_bwd)


def resolve_ffi(use_ffi: bool | None) -> bool:
    """None: the FFI when built, else the callback; True demands the FFI."""
    if use_ffi is None:
        return ffi_available()
    if use_ffi and not ffi_available():
        from ._targets import why_not_available

        raise RuntimeError("use_ffi=True but optdiff._jax_ffi is not built (" + str(why_not_available()) +
                           "); rebuild with jax installed (CMake option OPTDIFF_JAX=ON)")
    return bool(use_ffi)
