"""The optical core as PyTorch operators: ``torch.ops.optdiff.*``, differentiable and compilable.

Registered with ``torch.library.custom_op`` (each with a fake implementation for torch.compile's
tracing and ``register_autograd`` for its gradient), so ``torch.compile(..., fullgraph=True)``
keeps them in one graph. The physical parameters travel as plain floats, ints and strings; the
compiled objects are made once per geometry and device and cached.

    optdiff::propagate(field, wavelength, pitch, distance, method, padding, tilt, adjoint) -> field
        gradient: the exact adjoint (forward <-> adjoint)
    optdiff::stack_forward_train(field, phases, <stack>) -> (intensity, saved, modulation)
        intensity plus the tape as tensors ([B, L+1, n, n] fields and exp(i phi) on the CPU);
        gradient for field and phases from the tape, by the core's exact backward
    optdiff::stack_intensity(field, phases, <stack>) -> intensity
        no tape (inference; a real field is read as amplitudes without a complex copy); its
        gradient, when asked, reruns the forward pass inside the core's backward (recompute)
    optdiff::stack_backward(field, phases, saved, modulation, grad_intensity, <stack>, input_grad)
        -> (grad_phases [L, n, n] summed over the batch, grad_field or an empty tensor)

``<stack>`` is ``wavelength, pitch, distances, method, padding, tilts (flat, 2L or empty),
input_distance (or None), input_tilt``. The gradient of a complex value is
dL/dRe + i dL/dIm, which is also PyTorch's convention for real losses. Fields may have any
leading batch dimensions ``[..., n, n]``; the core sees them as ``[B, n, n]`` (a view).
"""

from __future__ import annotations

import threading

import torch

from ..optics.backends.cuda_stack import CudaTape
from ..optics.propagator import Propagator
from ..optics.stack import PhaseStack, Tape
from . import _tensors as T

_lock = threading.Lock()
_cache: dict = {}


def _cached(key, make):
    with _lock:
        obj = _cache.get(key)
        if obj is None:
            obj = _cache[key] = make()
        return obj


def _stack_kwargs(wavelength, pitch, distances, method, padding, tilts, input_distance, input_tilt):
    L = len(distances)
    return dict(wavelength=wavelength, pitch=pitch, distances=list(distances), method=method, padding=padding,
                tilts=None if len(tilts) == 0 else [tuple(tilts[2 * i:2 * i + 2]) for i in range(L)],
                input_distance=input_distance, input_tilt=tuple(input_tilt))


def _stack(device: torch.device, n: int, *geometry) -> PhaseStack:
    backend = T.check_backend(device)
    key = ("stack", backend.name, n, tuple(tuple(g) if isinstance(g, list) else g for g in geometry))
    return _cached(key, lambda: PhaseStack(n, backend=backend, **_stack_kwargs(*geometry)))


def _propagator(device: torch.device, n: int, wavelength, pitch, distance, method, padding, tilt) -> Propagator:
    backend = T.check_backend(device)
    key = ("prop", backend.name, n, wavelength, pitch, distance, method, padding, tuple(tilt))
    return _cached(key, lambda: Propagator(n, wavelength=wavelength, pitch=pitch, distance=distance,
                                           method=method, padding=padding, tilt=tuple(tilt), backend=backend))


def _check_stack_args(field, phases, num_layers: int, allow_real: bool = False):
    T.field(field, "field", allow_real=allow_real)
    if isinstance(phases, torch.Tensor):  # two devices: say so before anything else about phases
        T.same_device(field, "field", phases, "phases")
    T.phases(phases, "phases", T.real_dtype(field), field.shape[-1], num_layers)


def _core(x: torch.Tensor):
    """What the backend takes: a NumPy view on the CPU, the tensor itself on CUDA."""
    return T.host(x) if x.device.type == "cpu" else T.resolved(x)


def _back(a, like: torch.Tensor) -> torch.Tensor:
    return T.from_host(a) if like.device.type == "cpu" else a


# --------------------------------------------------------------------------- propagation

@torch.library.custom_op("optdiff::propagate", mutates_args=())
def propagate_op(field: torch.Tensor, wavelength: float, pitch: float, distance: float, method: str,
                 padding: int, tilt: list[float], adjoint: bool) -> torch.Tensor:
    T.field(field)
    prop = _propagator(field.device, field.shape[-1], wavelength, pitch, distance, method, padding, tilt)
    f = _core(T.batched(field))
    out = prop.adjoint(f) if adjoint else prop.forward(f)
    return _back(out, field).view(field.shape)


@propagate_op.register_fake
def _(field, wavelength, pitch, distance, method, padding, tilt, adjoint):
    T.field(field)
    return torch.empty_like(field)


def _propagate_setup(ctx, inputs, output):
    ctx.args = inputs[1:]


def _propagate_backward(ctx, grad):
    *physics, adjoint = ctx.args
    # A is linear: dL/dx = A^H dL/dy (and for the adjoint op, A dL/dy).
    return (propagate_op(grad.contiguous(), *physics, not adjoint),) + (None,) * len(ctx.args)


propagate_op.register_autograd(_propagate_backward, setup_context=_propagate_setup)


# --------------------------------------------------------------------------- phase stack

_GEOMETRY = "wavelength, pitch, distances, method, padding, tilts, input_distance, input_tilt"


@torch.library.custom_op("optdiff::stack_intensity", mutates_args=())
def stack_intensity_op(field: torch.Tensor, phases: torch.Tensor, wavelength: float, pitch: float,
                       distances: list[float], method: str, padding: int, tilts: list[float],
                       input_distance: float | None, input_tilt: list[float]) -> torch.Tensor:
    geometry = (wavelength, pitch, distances, method, padding, tilts, input_distance, input_tilt)
    _check_stack_args(field, phases, len(distances), allow_real=True)
    stack = _stack(field.device, field.shape[-1], *geometry)
    out = stack.forward(_core(T.batched(field)), _core(phases))
    return _back(out, field).view(field.shape)


@stack_intensity_op.register_fake
def _(field, phases, wavelength, pitch, distances, method, padding, tilts, input_distance, input_tilt):
    _check_stack_args(field, phases, len(distances), allow_real=True)
    return field.new_empty(field.shape, dtype=T.real_dtype(field))


@torch.library.custom_op("optdiff::stack_forward_train", mutates_args=())
def stack_forward_train_op(field: torch.Tensor, phases: torch.Tensor, wavelength: float, pitch: float,
                           distances: list[float], method: str, padding: int, tilts: list[float],
                           input_distance: float | None, input_tilt: list[float]
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    geometry = (wavelength, pitch, distances, method, padding, tilts, input_distance, input_tilt)
    _check_stack_args(field, phases, len(distances))
    stack = _stack(field.device, field.shape[-1], *geometry)
    inten, tape = stack.forward_train(_core(T.batched(field)), _core(phases))
    if field.device.type == "cpu":
        return T.from_host(inten).view(field.shape), T.from_host(tape.saved), T.from_host(tape.modulation)
    # CUDA: the tape's fields are a torch tensor already; exp(i phi) is not kept there.
    return inten.view(field.shape), tape.saved, field.new_empty((0,))


@stack_forward_train_op.register_fake
def _(field, phases, wavelength, pitch, distances, method, padding, tilts, input_distance, input_tilt):
    _check_stack_args(field, phases, len(distances))
    n, L = field.shape[-1], len(distances)
    b = field.numel() // (n * n)
    inten = field.new_empty(field.shape, dtype=T.real_dtype(field))
    saved = field.new_empty((b, L + 1, n, n))
    mod = field.new_empty((L, n, n) if field.device.type == "cpu" else (0,))
    return inten, saved, mod


@torch.library.custom_op("optdiff::stack_backward", mutates_args=())
def stack_backward_op(field: torch.Tensor, phases: torch.Tensor, saved: torch.Tensor, modulation: torch.Tensor,
                      grad_intensity: torch.Tensor, wavelength: float, pitch: float, distances: list[float],
                      method: str, padding: int, tilts: list[float], input_distance: float | None,
                      input_tilt: list[float], input_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``saved`` empty: recompute mode (the core reruns the forward pass per sample)."""
    geometry = (wavelength, pitch, distances, method, padding, tilts, input_distance, input_tilt)
    _check_stack_args(field, phases, len(distances))
    _check_grad(grad_intensity, field)
    stack = _stack(field.device, field.shape[-1], *geometry)
    f3 = T.batched(field)
    recompute = saved.numel() == 0
    if field.device.type == "cpu":
        tape = Tape(field=T.host(f3), phases=T.host(phases), saved=None if recompute else T.host(saved),
                    modulation=None if recompute or modulation.numel() == 0 else T.host(modulation))
    else:
        tape = _cuda_tape(f3, phases, None if recompute else saved)
    gph, gx = stack.backward(tape, _core(T.batched(grad_intensity)), input_grad=input_grad)
    gph = _back(gph, field)
    gx = _back(gx, field).view(field.shape) if input_grad else field.new_empty((0,))
    return gph, gx


@stack_backward_op.register_fake
def _(field, phases, saved, modulation, grad_intensity, wavelength, pitch, distances, method, padding, tilts,
      input_distance, input_tilt, input_grad):
    _check_stack_args(field, phases, len(distances))
    _check_grad(grad_intensity, field)
    return torch.empty_like(phases), (torch.empty_like(field) if input_grad else field.new_empty((0,)))


def _check_grad(g, field):
    T.tensor(g, "grad_intensity")
    T.same_device(field, "field", g, "grad_intensity")
    if g.dtype != T.real_dtype(field) or g.shape != field.shape:
        raise ValueError(f"grad_intensity must be {T.real_dtype(field)} shaped like the field {tuple(field.shape)}, "
                         f"got {g.dtype} {tuple(g.shape)}")
    T.contiguous(g, "grad_intensity")


def _cuda_tape(f3: torch.Tensor, phases: torch.Tensor, saved: torch.Tensor | None) -> CudaTape:
    """The CUDA backend's tape rebuilt from tensors autograd kept (no copies; its stream is torch's)."""
    dev = f3.device.index if f3.device.index is not None else torch.cuda.current_device()
    return CudaTape(kind="torch", field=f3, field_ptr=f3.data_ptr(), phases=phases, phases_ptr=phases.data_ptr(),
                    saved=saved, saved_ptr=0 if saved is None else saved.data_ptr(), shape=tuple(f3.shape),
                    dtype=T.NUMPY_OF[f3.dtype], batch=f3.shape[0], device=dev,
                    stream=torch.cuda.current_stream(f3.device).cuda_stream, recompute=saved is None)


def _no_second_derivative(ctx, *grads):
    raise RuntimeError("optdiff's phase stack has no second derivative: differentiating its gradient "
                       "(double backward, e.g. a gradient penalty) is not supported")


stack_backward_op.register_autograd(_no_second_derivative)


def _train_setup(ctx, inputs, output):
    field, phases, *geometry = inputs
    _, saved, mod = output
    ctx.mark_non_differentiable(saved, mod)
    # No zero gradients for the tape outputs: they would be [B, L+1, n, n] fields written each step.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(field, phases, saved, mod)
    ctx.geometry = geometry


def _train_backward(ctx, grad_intensity, _grad_saved, _grad_mod):
    field, phases, saved, mod = ctx.saved_tensors
    want_field, want_phases = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if grad_intensity is None:  # the intensity did not reach the loss
        return (None,) * (2 + len(ctx.geometry))
    gph, gx = stack_backward_op(field, phases, saved, mod, grad_intensity.contiguous(), *ctx.geometry,
                                want_field)
    return (gx if want_field else None, gph if want_phases else None) + (None,) * len(ctx.geometry)


stack_forward_train_op.register_autograd(_train_backward, setup_context=_train_setup)


def _intensity_setup(ctx, inputs, output):
    field, phases, *geometry = inputs
    ctx.save_for_backward(field, phases)
    ctx.geometry = geometry


def _intensity_backward(ctx, grad_intensity):
    field, phases = ctx.saved_tensors
    real = not field.is_complex()
    fc = field.to(T.COMPLEX_OF[field.dtype]) if real else field  # amplitudes: d/dRe only
    want_field = ctx.needs_input_grad[0]
    empty = fc.new_empty((0,))
    gph, gx = stack_backward_op(fc, phases, empty, empty, grad_intensity.contiguous(), *ctx.geometry, want_field)
    if want_field and real:
        gx = gx.real.contiguous()
    return (gx if want_field else None, gph if ctx.needs_input_grad[1] else None) + (None,) * len(ctx.geometry)


stack_intensity_op.register_autograd(_intensity_backward, setup_context=_intensity_setup)


# --------------------------------------------------------------------------- fused intensity matching

@torch.library.custom_op("optdiff::stack_mse", mutates_args=())
def stack_mse_op(field: torch.Tensor, phases: torch.Tensor, target: torch.Tensor, wavelength: float, pitch: float,
                 distances: list[float], method: str, padding: int, tilts: list[float],
                 input_distance: float | None, input_tilt: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean((I - target)^2), d loss / d phases)`` by the core's fused step (no tape in memory)."""
    geometry = (wavelength, pitch, distances, method, padding, tilts, input_distance, input_tilt)
    _check_stack_args(field, phases, len(distances))
    _check_target(target, field)
    stack = _stack(field.device, field.shape[-1], *geometry)
    loss, gph = stack.mse_loss_and_grad(_core(T.batched(field)), _core(phases), _core(T.batched(target)))
    return torch.tensor(loss, dtype=phases.dtype, device=phases.device), _back(gph, field)


@stack_mse_op.register_fake
def _(field, phases, target, wavelength, pitch, distances, method, padding, tilts, input_distance, input_tilt):
    _check_stack_args(field, phases, len(distances))
    _check_target(target, field)
    return phases.new_empty(()), torch.empty_like(phases)


def _check_target(target, field):
    T.tensor(target, "target")
    T.same_device(field, "field", target, "target")
    if target.dtype != T.real_dtype(field) or target.shape != field.shape:
        raise ValueError(f"target must be {T.real_dtype(field)} shaped like the field {tuple(field.shape)}, "
                         f"got {target.dtype} {tuple(target.shape)}")
    T.contiguous(target, "target")


def _mse_setup(ctx, inputs, output):
    _, gph = output
    ctx.mark_non_differentiable(gph)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(gph)
    ctx.nargs = len(inputs)


def _mse_backward(ctx, grad_loss, _grad_gph):
    if ctx.needs_input_grad[0] or ctx.needs_input_grad[2]:
        raise RuntimeError("the fused MSE step differentiates the phases only; field and target must not "
                           "require grad (use mse_loss(stack(field), target) for their gradients)")
    (gph,) = ctx.saved_tensors
    g = None if grad_loss is None or not ctx.needs_input_grad[1] else gph * grad_loss
    return (None, g) + (None,) * (ctx.nargs - 2)


stack_mse_op.register_autograd(_mse_backward, setup_context=_mse_setup)
