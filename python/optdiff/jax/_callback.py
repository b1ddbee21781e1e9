"""The fallback path when optdiff._jax_ffi is not built: jax.pure_callback into the NumPy API.

Each call copies its operands to host NumPy arrays and back (that is what pure_callback does),
and the backward pass recomputes the forward pass instead of keeping a tape. Same results and
the same gradient conventions as the FFI path; vmap runs the callback once per mapped element.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from optdiff.optics import get_backend
from optdiff.optics.specs import HopSpec, StackSpec


@functools.lru_cache(maxsize=32)
def _propagator(n: int, hop: HopSpec):
    return get_backend("cpu").propagator(n, hop)


@functools.lru_cache(maxsize=32)
def _stack(spec: StackSpec):
    return get_backend("cpu").phase_stack(spec)


def _flat(x):
    """[..., n, n] -> a C-contiguous [B, n, n] NumPy view (or copy of a read-only host buffer)."""
    a = np.ascontiguousarray(x)
    return a.reshape((-1,) + a.shape[-2:])


def propagate(field, n: int, hop: HopSpec, mode: str):
    def host(x):
        p, a = _propagator(n, hop), _flat(x)
        if mode == "transpose":  # conj(A^H conj(ct)): the VJP in JAX's convention
            y = np.conj(p.apply(np.conj(a), None, None, adjoint=True))
        else:
            y = p.apply(a, None, None, adjoint=mode == "adjoint")
        return y.reshape(x.shape)

    return jax.pure_callback(host, jax.ShapeDtypeStruct(field.shape, field.dtype), field,
                             vmap_method="sequential")


def _real(dtype):
    return np.float32 if np.dtype(dtype) == np.complex64 else np.float64


def stack_forward(field, phases, spec: StackSpec):
    def host(x, ph):
        return _stack(spec).forward(_flat(x), np.ascontiguousarray(ph), None, None).reshape(x.shape)

    out = jax.ShapeDtypeStruct(field.shape, _real(field.dtype))
    return jax.pure_callback(host, out, field, phases, vmap_method="sequential")


def stack_forward_train(field, phases, spec: StackSpec):
    return stack_forward(field, phases, spec), (field, phases)


def stack_backward(residuals, grad_intensity, spec: StackSpec):
    field, phases = residuals

    def host(x, ph, g):
        st = _stack(spec)
        _, tape = st.forward_train(_flat(x), np.ascontiguousarray(ph), True, None, None)
        gph, gx = st.backward(tape, np.ascontiguousarray(g).reshape((-1,) + g.shape[-2:]), True, None)
        return gph, np.conj(gx).reshape(x.shape)  # core convention -> JAX cotangent

    outs = (jax.ShapeDtypeStruct(phases.shape, phases.dtype), jax.ShapeDtypeStruct(field.shape, field.dtype))
    return jax.pure_callback(host, outs, field, phases, grad_intensity, vmap_method="sequential")
