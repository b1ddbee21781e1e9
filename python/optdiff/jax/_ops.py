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
from jax.custom_derivatives import SymbolicZero

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


# symbolic_zeros: fwd learns which inputs are differentiated, so a model that trains only the
# phases (the usual case) skips the field's cotangent. The residuals carry that as their structure
# (a trailing () or None), which is static.
def _stack_fwd(s, field, phases):
    want_field = () if field.perturbed else None
    if s.use_ffi:
        out, res = _ffi.stack_forward_train(field.value, phases.value, s.values(), s.has_input_hop)
    else:
        out, res = _callback.stack_forward_train(field.value, phases.value, s.spec)
    return out, (res, want_field)


def _stack_bwd(s, residuals, ct):
    res, want_field = residuals
    if isinstance(ct, SymbolicZero):  # the intensity does not reach the loss
        return None, None
    if s.use_ffi:
        g_phases, g_field = _ffi.stack_backward(res, ct, s.values(), s.has_input_hop, want_field is not None)
    else:
        g_phases, g_field = _callback.stack_backward(res, ct, s.spec)
        g_field = g_field if want_field is not None else None
    return g_field, g_phases


stack_op.defvjp(_stack_fwd, _stack_bwd, symbolic_zeros=True)


def resolve_ffi(use_ffi: bool | None) -> bool:
    """None: the FFI when built, else the callback; True demands the FFI."""
    if use_ffi is None:
        return ffi_available()
    if use_ffi and not ffi_available():
        from ._targets import why_not_available

        raise RuntimeError("use_ffi=True but optdiff._jax_ffi is not built (" + str(why_not_available()) +
                           "); rebuild with jax installed (CMake option OPTDIFF_JAX=ON)")
    return bool(use_ffi)
