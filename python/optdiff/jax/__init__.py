"""optdiff for JAX: free-space propagation and phase stacks as differentiable JAX functions.

    import optdiff.jax as oj
    stack = oj.PhaseStack(n=128, wavelength=850e-9, pitch=9.2e-6, distances=[0.03] * 3)
    intensity = stack(field, phases)                 # field [..., n, n] complex (or real amplitude)
    g = jax.grad(lambda ph: loss(stack(field, ph)))(phases)

Every function is jit-compatible, has an exact VJP (``jax.custom_vjp`` around the core's
adjoint pass), and maps over batch axes with ``jax.vmap``; leading batch dimensions of the field
are also taken directly (one core call over the whole batch). The C++ core is called through
XLA's FFI (``optdiff._jax_ffi``, no copies) when that module is built, otherwise through
``jax.pure_callback`` (copies; see docs/interop.md). CPU only; float32/complex64 and, with
``jax_enable_x64``, float64/complex128.
"""

from __future__ import annotations

import jax.numpy as jnp

from optdiff.optics import set_num_threads as _core_set_num_threads
from optdiff.optics import set_planner_effort as _core_set_planner_effort
from optdiff.optics.specs import hop_spec, stack_spec

from . import _callback
from ._encode import check_field, check_phases
from ._ops import _Hop, _Stack, propagate_op, resolve_ffi, stack_op
from ._targets import ffi_available, ffi_module

__all__ = ["Propagator", "PhaseStack", "propagate", "phase_stack", "ffi_available", "set_num_threads",
           "set_planner_effort"]


def set_num_threads(n: int) -> None:
    """Threads of the core for every later call, NumPy API and JAX FFI alike (the FFI module
    carries its own copy of the core, so optdiff.set_num_threads alone does not reach it)."""
    _core_set_num_threads(n)
    mod = ffi_module()
    if mod is not None:
        mod.set_num_threads(int(n))


def set_planner_effort(effort: str) -> None:
    """FFTW planning effort ("estimate", "measure", "patient") for plans made from now on, in
    optdiff's NumPy API and in the JAX FFI module alike (built objects are cached: set it first)."""
    _core_set_planner_effort(effort)
    mod = ffi_module()
    if mod is not None:
        mod.set_planner_effort({"estimate": 0, "measure": 1, "patient": 2}[effort])


def _as_field(field, n: int):
    field = jnp.asarray(field)
    cdt = check_field(field, n)
    return (field if field.dtype == cdt else field.astype(cdt)), cdt


class Propagator:
    """One free-space hop on an n x n grid (the parameters of :class:`optdiff.Propagator`).

    ``prop(field)`` propagates, ``prop.adjoint(field)`` applies the exact adjoint; both take
    complex64/complex128 fields ``[..., n, n]`` and are differentiable (``jax.grad``, ``jax.vjp``).
    ``use_ffi``: None picks the FFI when built; False forces the pure_callback path.
    """

    def __init__(self, n: int, *, wavelength: float, pitch: float, distance: float, method: str = "as",
                 padding: int = 2, tilt=(0.0, 0.0), use_ffi: bool | None = None):
        hop = hop_spec(wavelength=wavelength, pitch=pitch, distance=distance, method=method, padding=padding,
                       tilt=tilt)
        _callback._propagator(int(n), hop)  # validates n and the physics now (ValueError naming them)
        self._h = _Hop(int(n), hop, resolve_ffi(use_ffi))
        self.n = self._h.n

    @property
    def uses_ffi(self) -> bool:
        return self._h.use_ffi

    def __call__(self, field):
        return self._apply(field, adjoint=False)

    def adjoint(self, field):
        return self._apply(field, adjoint=True)

    def _apply(self, field, adjoint: bool):
        field = jnp.asarray(field)
        dt = check_field(field, self.n)
        if field.dtype != dt:
            raise TypeError(f"field must be complex64 or complex128 for a propagation, got {field.dtype}")
        return propagate_op(self._h, field, adjoint)

    def __repr__(self) -> str:
        return f"optdiff.jax.Propagator(n={self.n}, {self._h.hop}, ffi={self._h.use_ffi})"


def propagate(field, *, wavelength: float, pitch: float, distance: float, method: str = "as", padding: int = 2,
              tilt=(0.0, 0.0), adjoint: bool = False, use_ffi: bool | None = None):
    """Propagate ``field [..., n, n]`` by one hop (or apply its adjoint); differentiable."""
    n = int(jnp.shape(field)[-1]) if jnp.ndim(field) >= 2 else 0
    p = Propagator(n, wavelength=wavelength, pitch=pitch, distance=distance, method=method, padding=padding,
                   tilt=tilt, use_ffi=use_ffi)
    return p.adjoint(field) if adjoint else p(field)


class PhaseStack:
    """A stack of L phase masks with a hop after each (the parameters of :class:`optdiff.PhaseStack`).

    ``stack(field, phases)`` returns the camera intensity ``[..., n, n]`` (real, the field's
    precision) for a field ``[..., n, n]`` (complex, or a real amplitude) and phases ``[L, n, n]``
    of the matching real dtype. Differentiable in both the phases and the field.
    """

    def __init__(self, n: int, *, wavelength: float, pitch: float, distances, method: str = "as",
                 padding: int = 2, tilts=None, input_distance: float | None = None, input_tilt=(0.0, 0.0),
                 use_ffi: bool | None = None):
        spec = stack_spec(n, wavelength=wavelength, pitch=pitch, distances=distances, method=method,
                          padding=padding, tilts=tilts, input_distance=input_distance, input_tilt=input_tilt)
        _callback._stack(spec)  # validates the physics now (ValueError naming the layer)
        self._s = _Stack(spec, resolve_ffi(use_ffi))
        self.spec = spec
        self.n, self.num_layers = spec.n, spec.num_layers

    @property
    def uses_ffi(self) -> bool:
        return self._s.use_ffi

    def __call__(self, field, phases):
        field, cdt = _as_field(field, self.n)
        phases = jnp.asarray(phases)
        check_phases(phases, self.num_layers, self.n, cdt)
        return stack_op(self._s, field, phases)

    def __repr__(self) -> str:
        return f"optdiff.jax.PhaseStack(n={self.n}, layers={self.num_layers}, ffi={self._s.use_ffi})"


def phase_stack(field, phases, *, wavelength: float, pitch: float, distances, method: str = "as",
                padding: int = 2, tilts=None, input_distance: float | None = None, input_tilt=(0.0, 0.0),
                use_ffi: bool | None = None):
    """Camera intensity of ``field`` through the phase masks ``phases [L, n, n]``; differentiable."""
    n = int(jnp.shape(field)[-1]) if jnp.ndim(field) >= 2 else 0
    return PhaseStack(n, wavelength=wavelength, pitch=pitch, distances=distances, method=method,
                      padding=padding, tilts=tilts, input_distance=input_distance, input_tilt=input_tilt,
                      use_ffi=use_ffi)(field, phases)
