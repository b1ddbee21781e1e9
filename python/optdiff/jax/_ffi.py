"""The FFI path: jax.ffi.ffi_call on the handlers of optdiff._jax_ffi (csrc/python/jax_ffi.cpp).

XLA passes its own buffers to the C++ core; nothing is copied. Under jax.vmap ("expand_dims")
the handlers receive the vmapped axes as leading dimensions of every operand (size 1 where an
operand is not mapped) and loop over them, so a vmap over fields with shared phases is still
one call of the core over the whole batch.
"""

from __future__ import annotations

import jax
import numpy as np

_PROPAGATE_MODE = {"forward": 0, "adjoint": 1, "transpose": 2}


def propagate(field, hop: np.ndarray, mode: str):
    call = jax.ffi.ffi_call("optdiff_propagate", jax.ShapeDtypeStruct(field.shape, field.dtype),
                            vmap_method="broadcast_all")
    return call(field, hop=hop, mode=np.int32(_PROPAGATE_MODE[mode]))


def _real(dtype):
    return np.float32 if np.dtype(dtype) == np.complex64 else np.float64


def stack_forward(field, phases, hops: np.ndarray, has_input_hop: bool):
    out = jax.ShapeDtypeStruct(field.shape, _real(field.dtype))
    call = jax.ffi.ffi_call("optdiff_stack_forward", out, vmap_method="expand_dims")
    return call(field, phases, hops=hops, has_input_hop=has_input_hop)


def stack_forward_train(field, phases, hops: np.ndarray, has_input_hop: bool):
    """Intensity and the residuals backward needs: the tape [..., L+1, n, n] and exp(i phi) [L, n, n]."""
    L, n = phases.shape[0], phases.shape[-1]
    outs = (jax.ShapeDtypeStruct(field.shape, _real(field.dtype)),
            jax.ShapeDtypeStruct(field.shape[:-2] + (L + 1, n, n), field.dtype),
            jax.ShapeDtypeStruct((L, n, n), field.dtype))
    call = jax.ffi.ffi_call("optdiff_stack_forward_train", outs, vmap_method="expand_dims")
    intensity, saved, modulation = call(field, phases, hops=hops, has_input_hop=has_input_hop)
    return intensity, (field, phases, saved, modulation)


def stack_backward(residuals, grad_intensity, hops: np.ndarray, has_input_hop: bool, field_grad: bool):
    """(d loss / d phases, the field's cotangent or None), both in JAX's convention.

    Without ``field_grad`` the field's cotangent is neither computed nor allocated (an empty output).
    """
    field, phases, saved, modulation = residuals
    g_field = jax.ShapeDtypeStruct(field.shape if field_grad else (0,), field.dtype)
    outs = (jax.ShapeDtypeStruct(phases.shape, phases.dtype), g_field)
    call = jax.ffi.ffi_call("optdiff_stack_backward", outs, vmap_method="expand_dims")
    g_phases, g_field = call(field, phases, saved, modulation, grad_intensity, hops=hops,
                             has_input_hop=has_input_hop, field_grad=field_grad)
    return g_phases, (g_field if field_grad else None)
