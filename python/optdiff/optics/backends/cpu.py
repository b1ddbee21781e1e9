"""The CPU backend: the compiled core ``optdiff._core`` (C++, FFTW3, OpenMP) on NumPy arrays.

Arrays are checked in the bindings (dtype, shape, contiguity, overlap, finiteness) and used in
place; this file only picks the float32/float64 instance and allocates outputs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from ... import _core
from .. import _args
from .. import _array_rules as rules
from ..specs import HopSpec, StackSpec
from ._instances import PerPrecision

__all__ = ["CpuBackend", "Tape", "set_num_threads", "get_num_threads", "set_planner_effort"]

_EFFORTS = {"estimate": 0, "measure": 1, "patient": 2}


def set_num_threads(n: int) -> None:
    """Default number of threads for every optdiff call (each call also takes ``nthreads=``)."""
    try:
        count = _args.integer(n, "n")
    except ValueError:
        count = 0
    if not 1 <= count < 1 << 31:
        raise ValueError(f"n (the number of threads) must be a positive integer, got {n!r}")
    n = count
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """Current default number of threads (OpenMP's default until set)."""
    return _core.get_num_threads()


def set_planner_effort(effort: str) -> None:
    """FFTW planning effort for new plans: "estimate", "measure" (default) or "patient"."""
    if effort not in _EFFORTS:
        raise ValueError(f"effort must be one of {tuple(_EFFORTS)}, got {effort!r}")
    _core.set_planner_effort(_EFFORTS[effort])


def _core_hop(hop: HopSpec) -> tuple:
    return hop.as_tuple()


def _numpy(x, name: str, kinds: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array ({kinds}), got {type(x).__name__}; "
                        "for device arrays use backend='cuda'")
    return x


def _complex_field(x, name: str = "field") -> np.ndarray:
    x = _numpy(x, name, "complex64 or complex128")
    if x.dtype not in _args.REAL_OF:
        raise TypeError(f"{name} must be complex64 or complex128, got {x.dtype}; "
                        f"convert with {name}.astype(np.complex64) first")
    return x


@dataclass
class Tape:
    """What :meth:`PhaseStack.backward` needs from a forward pass (CPU backend).

    ``saved`` holds, per sample, the modulated field at each layer and the camera field
    ([B, L+1, n, n] complex) or is None in recompute mode, where backward reruns the forward
    pass per sample (memory independent of L).
    """

    field: np.ndarray
    phases: np.ndarray
    saved: np.ndarray | None
    modulation: np.ndarray | None = None  # exp(i phi) * tilt [L, n, n] from forward

    @property
    def nbytes(self) -> int:
        return 0 if self.saved is None else int(self.saved.nbytes)


class CpuPropagator:
    def __init__(self, n: int, hop: HopSpec):
        self.n = n
        self._hop = _core_hop(hop)
        # Validates now (ValueError for bad physics); float32 is planned on first use.
        self._impl = PerPrecision(lambda bits, _: getattr(_core, "Propagator" + bits)(n, self._hop))
        self._impl.get(np.complex128)  # validates now; float32 is planned on first use

    def _get(self, dtype):
        return self._impl.get(dtype)

    def apply(self, field, out, nthreads, adjoint: bool):
        field = _complex_field(field)
        if out is None:
            out = np.empty_like(field)
        impl = self._get(field.dtype)
        (impl.adjoint if adjoint else impl.forward)(field, out, _args.nthreads(nthreads))
        return out

    def transfer_function(self, dtype) -> np.ndarray:
        return self._get(dtype).transfer_function()


class CpuPhaseStack:
    def __init__(self, spec: StackSpec):
        self.spec = spec
        self.n, self.num_layers = spec.n, spec.num_layers
        self._hops = [_core_hop(h) for h in spec.hops]
        self._input_hop = None if spec.input_hop is None else _core_hop(spec.input_hop)
        self._impl = PerPrecision(
            lambda bits, _: getattr(_core, "PhaseStack" + bits)(self.n, self._hops, self._input_hop))
        self._impl.get(np.complex128)  # validates now
        self._spare_tape = None

    def _get(self, dtype):
        return self._impl.get(dtype)

    def _prepare(self, field, phases, allow_real=False):
        if allow_real and isinstance(field, np.ndarray) and field.dtype in _args.COMPLEX_OF:
            cdtype, want = _args.COMPLEX_OF[field.dtype], field.dtype  # real field: phases of its dtype
        else:
            field = _complex_field(field)
            cdtype, want = field.dtype, _args.REAL_OF[field.dtype]
        phases = _numpy(phases, "phases", f"[L, n, n] {want}")
        if phases.dtype != want:
            raise TypeError(f"phases must be {want} to go with a {field.dtype} field, got {phases.dtype}")
        return field, phases, self._get(cdtype)

    def forward(self, field, phases, out, nthreads):
        field, phases, impl = self._prepare(field, phases, allow_real=True)
        if out is None:
            out = np.empty(field.shape, dtype=phases.dtype)
        else:
            _numpy(out, "out", f"{phases.dtype}, shaped like the field")
        impl.forward(field, phases, out, None, None, _args.nthreads(nthreads))
        return out

    def camera_field(self, field, phases, nthreads):
        field, phases, impl = self._prepare(field, phases)
        inten = np.empty(field.shape, dtype=phases.dtype)
        cam = np.empty_like(field)
        impl.forward(field, phases, inten, None, cam, _args.nthreads(nthreads))
        return cam

    def forward_train(self, field, phases, recompute, nthreads, reuse):
        field, phases, impl = self._prepare(field, phases)
        inten = np.empty(field.shape, dtype=phases.dtype)
        saved = None
        if not recompute:
            b = field.shape[0] if field.ndim == 3 else 1
            shape = (b, self.num_layers + 1, self.n, self.n)
            old = reuse.saved if isinstance(reuse, Tape) else self._spare_tape
            if old is not None and old.shape == shape and old.dtype == field.dtype and (
                    reuse is not None or sys.getrefcount(old) <= 3):
                # Reused: either the caller handed the tape back, or nothing but this object
                # still refers to the last buffer (so no one can see it overwritten). Saves
                # page-faulting B(L+1) fields a step.
                saved = old
            else:
                saved = np.empty(shape, dtype=field.dtype)
            self._spare_tape = saved
        mod = np.empty((self.num_layers, self.n, self.n), dtype=field.dtype)
        impl.forward(field, phases, inten, saved, None, _args.nthreads(nthreads), mod)
        # The phases are copied (L*n*n, small) so later edits cannot corrupt backward; in
        # recompute mode so is the field, which backward runs through the stack again.
        keep = field.copy() if recompute else field
        return inten, Tape(field=keep, phases=phases.copy(), saved=saved, modulation=mod)

    def backward(self, tape, grad_intensity, input_grad, nthreads, param_grads=False):
        if not isinstance(tape, Tape):
            raise TypeError("tape must be the Tape returned by forward_train on this backend")
        field, phases, impl = self._prepare(tape.field, tape.phases)
        _numpy(grad_intensity, "grad_intensity", "shaped like the intensity")
        gph = np.empty_like(phases)
        gx = np.empty_like(field) if input_grad else None
        gd = gt = None
        if param_grads:   # distances [L + 1] and tilts [L + 1, 2], the input hop's last
            gd = np.empty(self.num_layers + 1, np.float64)
            gt = np.empty((self.num_layers + 1, 2), np.float64)
        impl.backward(field, phases, tape.saved, grad_intensity, gph, gx, _args.nthreads(nthreads),
                      tape.modulation, gd, gt)
        return (gph, gx, (gd, gt)) if param_grads else (gph, gx)

    def mse_loss_and_grad(self, field, phases, target, return_intensity, nthreads):
        field, phases, impl = self._prepare(field, phases)
        target = _numpy(target, "target", f"{phases.dtype}, shaped like the intensity {field.shape}")
        gph = np.empty_like(phases)
        inten = np.empty(field.shape, dtype=phases.dtype) if return_intensity else None
        loss = impl.mse_loss_and_grad(field, phases, target, gph, inten, _args.nthreads(nthreads))
        return (loss, gph, inten) if return_intensity else (loss, gph)


def _float_array(a, name: str, writeable: bool = False) -> np.ndarray:
    a = _numpy(a, name, "float32 or float64")
    if a.dtype not in _args.FLOATS:
        raise TypeError(f"{name} must be float32 or float64, got {a.dtype}; convert with "
                        f"{name}.astype(np.float32) first")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous; pass np.ascontiguousarray({name})")
    if writeable and not a.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    return a


class CpuBackend:
    """Runs the optical core on the CPU (NumPy arrays in and out)."""

    name = "cpu"

    def owns(self, array) -> bool:
        return isinstance(array, np.ndarray)

    def propagator(self, n: int, hop: HopSpec) -> CpuPropagator:
        return CpuPropagator(n, hop)

    def phase_stack(self, spec: StackSpec) -> CpuPhaseStack:
        return CpuPhaseStack(spec)

    def standard_normal(self, shape, *, seed, stream, offset, dtype, out, nthreads):
        if out is None:
            # dtype: checked by the front (optics/sampling_step.py)
            out = np.empty(shape, dtype=dtype)
        else:
            _float_array(out, "out", writeable=True)
            if shape is not None and out.shape != shape:
                raise ValueError(f"out has shape {out.shape}, expected {shape}")
        _core.standard_normal(out, seed, stream, offset, _args.nthreads(nthreads))
        return out

    def ddpm_update(self, x, eps, out, coeffs, seed, stream, offset, nthreads):
        x = _float_array(x, "x")
        eps = _float_array(eps, "eps")
        rules.dtype("eps", eps.dtype, x.dtype)
        rules.same_shape("eps", eps.shape, "x", x.shape)
        if out is None:
            out = np.empty_like(x)
        else:
            _float_array(out, "out", writeable=True)
            rules.dtype("out", out.dtype, x.dtype)
            rules.same_shape("out", out.shape, "x", x.shape)
        _core.ddpm_update(x, eps, out, *coeffs, seed, stream, offset, _args.nthreads(nthreads))
        return out

    def __repr__(self) -> str:
        return "CpuBackend()"
