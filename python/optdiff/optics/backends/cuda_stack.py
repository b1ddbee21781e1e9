"""The CUDA backend's propagator and phase stack (see :class:`optdiff.PhaseStack` for the physics).

NumPy inputs are copied to the device and results back; device arrays are used in place and
results allocated on the same device (:mod:`.cuda_arrays`).
"""

from __future__ import annotations

import numpy as np

from .. import _args
from .. import _array_rules as rules
from .._args import COMPLEX_OF as _COMPLEX_OF
from .._args import REAL_OF as _REAL_OF
from ..specs import HopSpec, StackSpec
from ._instances import PerPrecision
from .cuda_arrays import Session as _Session
from .cuda_arrays import empty as _empty
from .cuda_arrays import field_batch as _field
from .cuda_arrays import finite_checks_enabled, wrap


class CudaPropagator:
    """One free-space hop on the GPU; ``nthreads`` is accepted for API compatibility and ignored."""

    def __init__(self, mod, backend, n: int, hop: HopSpec):
        self.n = n
        self._mod, self._backend = mod, backend
        self._hop = hop.as_tuple()
        mod.validate_hop(n, self._hop)
        self._impl = PerPrecision(lambda bits, dev: getattr(mod, "Propagator" + bits)(n, self._hop, device=dev))

    def _get(self, dtype, device):
        return self._impl.get(dtype, device)

    def apply(self, field, out, nthreads, adjoint):
        _args.nthreads(nthreads)
        f = wrap(field, "field", self._mod, self._backend)
        batch = _field(f, "field", self.n)
        s = _Session(self._mod, f, "field", self._backend)
        if out is not None:
            o = s.same_side(wrap(out, "out", self._mod, self._backend, output=True), "out")
            rules.dtype("out", o.dtype, f.dtype)
            rules.same_shape("out", o.shape, "field", f.shape)
            rules.writeable("out", out)
            rules.overlap(field, out, "field", "out")
        s.check_finite(f, "field")
        impl = self._get(f.dtype, s.device)
        run = impl.adjoint if adjoint else impl.forward
        if s.host:
            # One staging buffer, transformed in place.
            ptr = s.device_ptr(f)
            run(ptr, ptr, batch, 0)
            result = out if out is not None else np.empty_like(field)
            s.buffers[0].download(result, 0)
            return result
        if out is None:
            result, optr = _empty(f, f.shape, f.dtype, self._mod, self._backend)
        else:
            result, optr = out, o.ptr
        run(f.ptr, optr, batch, s.stream)
        return result

    def transfer_function(self, dtype) -> np.ndarray:
        """Transfer function on the padded grid ``[n*padding]^2``, FFT order, unnormalised (NumPy)."""
        return self._mod.transfer_function(self.n, self._hop, np.dtype(dtype) == np.complex128, False)


# ---------------------------------------------------------------------------
# Phase stack
# ---------------------------------------------------------------------------

class CudaTape:
    """What :meth:`CudaPhaseStack.backward` needs: the input field, a copy of the
    phases and the saved fields ``[B, L+1, n, n]`` (None in recompute mode).

    For NumPy inputs ``field``/``phases``/``saved`` are device buffers owned by
    the tape; for device inputs they are arrays of the input's kind.
    """

    def __init__(self, *, kind, field, field_ptr, phases, phases_ptr, saved, saved_ptr,
                 shape, dtype, batch, device, stream, recompute):
        self.kind = kind
        self.field, self.phases, self.saved = field, phases, saved
        self._field_ptr, self._phases_ptr, self._saved_ptr = field_ptr, phases_ptr, saved_ptr
        self.shape, self.dtype, self.batch = shape, np.dtype(dtype), batch
        self.device, self.stream, self.recompute = device, stream, recompute

    @property
    def nbytes(self) -> int:
        """Bytes of saved fields held on the GPU (0 in recompute mode)."""
        if self.saved is None:
            return 0
        return int(self.saved.nbytes)


class CudaPhaseStack:
    """A stack of phase layers on the GPU; see :class:`optdiff.PhaseStack` for the physics.

    Methods as on the CPU: ``forward(field, phases, out=None)`` -> intensity,
    ``camera_field(field, phases)``, ``forward_train(field, phases, recompute=False)``
    -> ``(intensity, CudaTape)`` and ``backward(tape, grad_intensity, input_grad=False)``
    -> ``(grad_phases [L,n,n], grad_field or None)``. Phases are float32 with
    complex64 fields, float64 with complex128, of the same array kind as the field.
    """

    def __init__(self, mod, backend, spec: StackSpec):
        self.spec = spec
        self.n, self.num_layers = spec.n, spec.num_layers
        self._mod, self._backend = mod, backend
        self._hops = [h.as_tuple() for h in spec.hops]
        self._input_hop = None if spec.input_hop is None else spec.input_hop.as_tuple()
        mod.validate_stack(self.n, self._hops, self._input_hop)  # the CPU stack's checks and messages
        self._impl = PerPrecision(lambda bits, dev: getattr(mod, "PhaseStack" + bits)(
            self.n, self._hops, self._input_hop, device=dev))

    def _get(self, dtype, device):
        return self._impl.get(dtype, device)

    def _prepare(self, field, phases, allow_real=False, check_field=True):
        f = wrap(field, "field", self._mod, self._backend)
        batch = _field(f, "field", self.n, allow_real)
        s = _Session(self._mod, f, "field", self._backend)
        p = s.same_side(wrap(phases, "phases", self._mod, self._backend), "phases")
        want = _REAL_OF.get(f.dtype, f.dtype)  # a real field: phases of its own dtype
        if p.dtype != want:
            raise TypeError(f"phases must be {want} to go with a {f.dtype} field, got {p.dtype}")
        rules.phases(p.shape, self.n, self.num_layers)
        if check_field:
            s.check_finite(f, "field")
        s.check_finite(p, "phases")
        return f, p, batch, s

    def _run_forward(self, field, phases, *, want_intensity, want_camera, save, out=None,
                     allow_real=False):
        f, p, batch, s = self._prepare(field, phases, allow_real)
        amplitude = f.dtype in _COMPLEX_OF  # a real input field
        cdtype = _COMPLEX_OF[f.dtype] if amplitude else f.dtype
        impl = self._get(cdtype, s.device)
        real = _REAL_OF[cdtype]
        fptr, pptr = s.device_ptr(f), s.device_ptr(p)
        inten = cam = saved = None
        iptr = cptr = sptr = 0
        if want_intensity:
            if out is not None:
                o = s.same_side(wrap(out, "out", self._mod, self._backend, output=True), "out")
                rules.dtype("out", o.dtype, real)
                rules.same_shape("out", o.shape, "field", f.shape)
                rules.writeable("out", out)
                rules.overlap(field, out, "field", "out")
                rules.overlap(phases, out, "phases", "out", allow_same=False)
                if s.host:
                    inten = out
                    buf = self._mod.DeviceBuffer(out.nbytes, s.device)
                    s.buffers.append(buf)
                    iptr = int(buf.ptr)
                else:
                    inten, iptr = out, o.ptr
            else:
                inten, iptr = s.output(f.shape, real)
        if want_camera:
            cam, cptr = s.output(f.shape, cdtype)
        if save:
            shape = (batch, self.num_layers + 1, self.n, self.n)
            if s.host:  # the tape stays on the device
                saved = self._mod.DeviceBuffer(int(np.prod(shape)) * cdtype.itemsize, s.device)
                sptr = int(saved.ptr)
            else:
                saved, sptr = _empty(f, shape, cdtype, self._mod, self._backend)
        run = impl.forward_real if amplitude else impl.forward  # real: read in the first kernel
        # An overflowed intensity raises like on the CPU; for device arrays only with the finite
        # checks on (reading the kernel's flag synchronises the stream).
        run(fptr, pptr, batch, iptr, sptr, cptr, s.stream, s.host or finite_checks_enabled())
        if s.host:
            if inten is not None:
                s.fetch(inten, iptr)
            if cam is not None:
                s.fetch(cam, cptr)
        return f, p, batch, s, fptr, pptr, inten, cam, saved, sptr

    def forward(self, field, phases, out=None, nthreads: int | None = None):
        """Camera intensity ``[B, n, n]`` (real, the field's precision).

        ``field`` may also be real (float32 with float32 phases, or float64): amplitudes read
        as a field with zero imaginary part by the first kernel, without a complex copy.
        """
        _args.nthreads(nthreads)
        return self._run_forward(field, phases, want_intensity=True, want_camera=False,
                                 save=False, out=out, allow_real=True)[6]

    __call__ = forward

    def camera_field(self, field, phases, nthreads: int | None = None):
        """Complex field at the camera, ``[B, n, n]``."""
        _args.nthreads(nthreads)
        return self._run_forward(field, phases, want_intensity=False, want_camera=True, save=False)[7]

    def forward_train(self, field, phases, recompute: bool = False, nthreads: int | None = None,
                      reuse=None):
        """Intensity and a :class:`CudaTape` for :meth:`backward`.

        ``recompute=False`` keeps L+1 fields per sample on the GPU; ``True``
        keeps none and backward reruns the forward pass in chunks.
        """
        _args.nthreads(nthreads)
        f, p, batch, s, fptr, pptr, inten, _, saved, sptr = self._run_forward(
            field, phases, want_intensity=True, want_camera=False, save=not recompute)
        # Keep the phases as they are now (later in-place edits must not change backward).
        if s.host:
            field_keep, phases_keep = s.buffers[0], s.buffers[1]  # uploaded copies
            phases_ptr = pptr
        else:
            phases_keep, phases_ptr = _empty(f, p.shape, p.dtype, self._mod, self._backend)
            self._mod.memcpy(phases_ptr, p.ptr, p.size * p.dtype.itemsize, s.stream, s.device)
            field_keep = f.obj
            if recompute:  # backward reruns the stack on the field: keep it as it is now
                field_keep, fptr = _empty(f, f.shape, f.dtype, self._mod, self._backend)
                self._mod.memcpy(fptr, f.ptr, f.size * f.dtype.itemsize, s.stream, s.device)
        tape = CudaTape(kind=f.kind, field=field_keep, field_ptr=fptr, phases=phases_keep,
                        phases_ptr=phases_ptr, saved=saved, saved_ptr=sptr, shape=f.shape,
                        dtype=f.dtype, batch=batch, device=s.device, stream=s.stream,
                        recompute=bool(recompute))
        tape._keep_capsules = (f.keep, p.keep)
        return inten, tape

    def mse_loss_and_grad(self, field, phases, target, return_intensity: bool = False,
                          nthreads: int | None = None):
        """Fused intensity-matching step: ``(loss, grad_phases [L,n,n])`` (+ intensity).

        ``loss = mean((I - target)^2)``; the tape stays on the device chunk by chunk and the
        loss is summed per pixel in float64 on the device, then over pixels here.
        """
        _args.nthreads(nthreads)
        f, p, batch, s = self._prepare(field, phases, check_field=False)  # the loss tells
        t = s.same_side(wrap(target, "target", self._mod, self._backend), "target")
        real = _REAL_OF[f.dtype]
        rules.dtype("target", t.dtype, real)
        rules.same_shape("target", t.shape, "field", f.shape)
        impl = self._get(f.dtype, s.device)
        fptr, pptr, tptr = s.device_ptr(f), s.device_ptr(p), s.device_ptr(t)
        gph, gph_ptr = s.output((self.num_layers, self.n, self.n), real)
        inten, iptr = s.output(f.shape, real) if return_intensity else (None, 0)
        sq = self._mod.DeviceBuffer(self.n * self.n * 8, s.device)
        impl.mse_loss_and_grad(fptr, pptr, tptr, batch, gph_ptr, int(sq.ptr), iptr, s.stream)
        sums = np.empty(self.n * self.n, np.float64)
        sq.download(sums, s.stream)  # returns when the stream has got there
        loss = float(sums.sum() / (batch * self.n * self.n))
        if not np.isfinite(loss):  # one test here instead of two passes over the inputs (as on the CPU)
            raise ValueError(rules.loss_not_finite(real))
        if s.host:
            s.fetch(gph, gph_ptr)
            if inten is not None:
                s.fetch(inten, iptr)
        self._check_gradients(s, (gph, gph_ptr), (None, 0), real)
        return (loss, gph, inten) if return_intensity else (loss, gph)

    @staticmethod
    def _check_gradients(s, gph, gx, real) -> None:
        """Finite inputs can still give gradients beyond the float range (as on the CPU)."""
        for (obj, ptr), name in ((gph, "grad_phases"), (gx, "grad_field")):
            if obj is not None and not s.result_finite(obj, ptr, real if name == "grad_phases" else
                                                       _args.COMPLEX_OF[np.dtype(real)], name):
                raise ValueError(rules.gradients_overflow(real))

    def backward(self, tape: CudaTape, grad_intensity, input_grad: bool = False,
                 nthreads: int | None = None, param_grads: bool = False):
        """Gradients from dLoss/dIntensity: ``(grad_phases [L,n,n], grad_field or None)``; with
        ``param_grads`` also ``(grad_distances [L+1], grad_tilts [L+1, 2])`` (NumPy float64, the
        input hop's last; reading them synchronises the stream)."""
        _args.nthreads(nthreads)
        if not isinstance(tape, CudaTape):
            raise TypeError("tape must be the CudaTape returned by CudaPhaseStack.forward_train")
        g = wrap(grad_intensity, "grad_intensity", self._mod, self._backend)
        host_tape = tape.kind == "numpy"
        if g.host != host_tape:
            if host_tape:
                raise TypeError("grad_intensity is a device array but the forward pass had NumPy inputs; "
                                "pass a NumPy array")
            raise TypeError("grad_intensity is a NumPy (host) array but the forward pass ran on device "
                            f"arrays; pass a device array on device {tape.device}")
        if not g.host and g.device != tape.device:
            raise ValueError(f"grad_intensity is on device {g.device}, the tape on device {tape.device}")
        real = _REAL_OF[tape.dtype]
        rules.dtype("grad_intensity", g.dtype, real)
        rules.same_shape("grad_intensity", g.shape, "field", tape.shape)
        impl = self._get(tape.dtype, tape.device)
        L = self.num_layers
        gd = np.zeros(L + 1, np.float64) if param_grads else None
        gt = np.zeros((L + 1, 2), np.float64) if param_grads else None
        extra = (gd.ctypes.data, gt.ctypes.data) if param_grads else (0, 0)
        if host_tape:
            s = _Session(self._mod, g, "grad_intensity", self._backend)
            s.device = tape.device
            s.check_finite(g, "grad_intensity")
            gptr = s.device_ptr(g)
            gph, gph_ptr = s.output((L, self.n, self.n), real)
            gx, gx_ptr = (s.output(tape.shape, tape.dtype) if input_grad else (None, 0))
            impl.backward(tape._field_ptr, tape._phases_ptr, tape._saved_ptr, gptr, tape.batch,
                          gph_ptr, gx_ptr, 0, *extra)
            s.fetch(gph, gph_ptr)
            if gx is not None:
                s.fetch(gx, gx_ptr)
            self._check_gradients(s, (gph, gph_ptr), (gx, gx_ptr), real)
            return (gph, gx, (gd, gt)) if param_grads else (gph, gx)
        s = _Session(self._mod, g, "grad_intensity", self._backend)
        _order_after_tape(self._mod, tape, g)
        s.check_finite(g, "grad_intensity")
        like = wrap(tape.phases, "tape.phases", self._mod, self._backend) if tape.kind in ("cupy", "torch") else g
        gph, gph_ptr = _empty(like, (L, self.n, self.n), real, self._mod, self._backend)
        gx, gx_ptr = (_empty(like, tape.shape, tape.dtype, self._mod, self._backend) if input_grad else (None, 0))
        impl.backward(tape._field_ptr, tape._phases_ptr, tape._saved_ptr, g.ptr, tape.batch,
                      gph_ptr, gx_ptr, g.stream, *extra)
        self._check_gradients(s, (gph, gph_ptr), (gx, gx_ptr), real)
        return (gph, gx, (gd, gt)) if param_grads else (gph, gx)


def _order_after_tape(mod, tape: CudaTape, g) -> None:
    """Backward runs on the gradient's stream; the tape was written on the forward pass's.

    Queue an event wait so the backward kernels read the tape only after the forward pass has
    written it (no host wait), and for PyTorch tensors tell the caching allocator that the
    tape's memory is in use on the gradient's stream too (``record_stream``), so that dropping the
    tape cannot hand its memory to new work on the forward stream while backward still reads it.
    """
    if g.stream == tape.stream:
        return
    mod.stream_wait(g.stream, tape.stream, tape.device)
    if tape.kind == "torch":
        import torch

        stream = torch.cuda.current_stream(g.obj.device)  # the stream g.stream was read from
        for t in (tape.field, tape.phases, tape.saved, *getattr(tape, "_keep_capsules", ())):
            if isinstance(t, torch.Tensor):
                t.record_stream(stream)
