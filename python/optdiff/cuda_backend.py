"""CUDA back end of optdiff: :class:`CudaPropagator` and :class:`CudaPhaseStack`.

Same constructor arguments and methods as :class:`optdiff.Propagator` and
:class:`optdiff.PhaseStack` (without ``backend``); ``backend="cuda"`` on those
classes forwards here. The work runs on the GPU through the compiled module
``optdiff._cuda`` (cuFFT and custom kernels, float32 and float64).

Arrays
------
* **NumPy arrays** are copied to the GPU, processed, and the results copied
  back: NumPy in, NumPy out (the call returns when the results are there).
* **Device arrays** are used in place, without copies, and results are
  allocated on the same device:

  - CuPy arrays -> CuPy arrays (CuPy's current stream and memory pool);
  - PyTorch CUDA tensors -> PyTorch tensors (the current torch stream);
  - any other object exposing ``__cuda_array_interface__`` (v2/v3, e.g.
    Numba) or ``__dlpack__`` on a CUDA device -> :class:`DeviceArray`, which
    exposes ``__cuda_array_interface__`` (``cupy.asarray``, ``torch.as_tensor``
    and ``numba.cuda.as_cuda_array`` take it without a copy) and ``.get()``.

  Calls on device arrays are asynchronous on the array library's current
  stream (or the stream named by ``__cuda_array_interface__``), like any CuPy
  or PyTorch operation.

Everything in one call must live on the same side: a NumPy array where the
field is a device array (or the reverse) raises ``TypeError``. Wrong dtypes
raise ``TypeError``; wrong shapes, non-contiguous arrays and NaN/Inf values
raise ``ValueError`` naming the argument. The NaN/Inf check of device inputs
synchronises the stream once per call; :func:`set_finite_checks` turns it off.

Errors of the device become ``RuntimeError`` (``optdiff._cuda.CudaError``) or
``MemoryError`` (``optdiff._cuda.CudaOutOfMemoryError``) with the CUDA/cuFFT
error name; nothing aborts the interpreter.

Tapes from :meth:`CudaPhaseStack.forward_train` keep their saved fields on
the GPU (also for NumPy inputs), laid out ``[B, L+1, n, n]`` like the CPU's.

:func:`standard_normal` and :func:`ddpm_update` are the device versions of
:func:`optdiff.standard_normal` and :func:`optdiff.ddpm_update`: the same noise
numbers (Philox counters of ``csrc/include/optdiff/sampler.hpp``) for the same
``(seed, stream, offset)``, up to float32 rounding (a GPU may fuse multiply-adds).
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Optional, Sequence

import numpy as np

# Argument checks shared with the CPU functions (optdiff.standard_normal / ddpm_update).
from .sampler_ops import _FLOATS, _ddpm_coefficients, _u64

__all__ = [
    "cuda_device_count",
    "cuda_unavailable_reason",
    "CudaPropagator",
    "CudaPhaseStack",
    "CudaTape",
    "DeviceArray",
    "bin_readout",
    "bin_readout_backward",
    "standard_normal",
    "ddpm_update",
    "set_finite_checks",
    "set_workspace_limit",
    "clear_plan_cache",
]

_REAL_OF = {np.dtype(np.complex64): np.dtype(np.float32), np.dtype(np.complex128): np.dtype(np.float64)}
_COMPLEX_OF = {r: c for c, r in _REAL_OF.items()}
_SUFFIX = {np.dtype(np.float32): "32", np.dtype(np.float64): "64",
           np.dtype(np.complex64): "32", np.dtype(np.complex128): "64"}

# ---------------------------------------------------------------------------
# Loading the compiled module
# ---------------------------------------------------------------------------

_load_lock = threading.Lock()
_loaded = False
_module = None
_load_error: Optional[str] = None
_forced_module = None  # tests may substitute optdiff._cuda_emu
_check_finite = True


def _preload_cufft() -> Optional[str]:
    """Load libcufft from the ``nvidia-cufft`` wheel, if installed, before ``_cuda``.

    The module records an absolute RPATH to the wheel it was built against,
    which is wrong in another environment; a library already loaded under its
    soname satisfies the dynamic linker whatever the RPATH says.
    """
    candidates = []
    try:
        import nvidia  # namespace package of the NVIDIA wheels

        roots = list(getattr(nvidia, "__path__", []))
    except ImportError:
        roots = []
    for root in roots:
        for sub, names in (("cu13", ("libcufft.so.12",)), ("cu12", ("libcufft.so.12", "libcufft.so.11")),
                           ("cufft", ("libcufft.so.12", "libcufft.so.11"))):
            for name in names:
                candidates.append(os.path.join(root, sub, "lib", name))
    for path in candidates:
        if os.path.exists(path):
            try:
                ctypes.CDLL(path, mode=getattr(os, "RTLD_GLOBAL", 0) | getattr(os, "RTLD_NOW", 0))
                return path
            except OSError:
                continue
    return None


def _load():
    global _loaded, _module, _load_error
    with _load_lock:
        if _loaded:
            return _module
        _loaded = True
        _preload_cufft()
        try:
            from . import _cuda as mod  # type: ignore[attr-defined]
        except ImportError as exc:
            _load_error = (f"optdiff was built without its CUDA module or the module cannot be loaded "
                           f"({exc}); rebuild with OPTDIFF_CUDA=ON and the CUDA toolkit plus "
                           f"`pip install nvidia-cufft`")
            return None
        _module = mod
        return mod


def _backend():
    """The module that does the work (the real one unless a test substituted it)."""
    if _forced_module is not None:
        return _forced_module
    mod = _load()
    if mod is None:
        raise RuntimeError(_load_error)
    count = 0
    try:
        count = mod.device_count()
    except Exception:  # pragma: no cover - device_count never raises
        count = 0
    if count <= 0:
        raise RuntimeError(f"backend='cuda' needs a CUDA device, but {cuda_unavailable_reason()}")
    return mod


def _set_module_for_testing(mod) -> None:
    """Run the back end through another module with the same API (e.g. ``optdiff._cuda_emu``)."""
    global _forced_module
    _forced_module = mod


def cuda_device_count() -> int:
    """Number of usable CUDA devices; 0 when the module, the driver or a device is missing. Never raises."""
    try:
        mod = _load()
        if mod is None:
            return 0
        return max(0, int(mod.device_count()))
    except Exception:
        return 0


def cuda_unavailable_reason() -> str:
    """Why :func:`cuda_device_count` is 0 (empty string when a device is usable)."""
    try:
        mod = _load()
        if mod is None:
            return _load_error or "the CUDA module is not available"
        if mod.device_count() > 0:
            return ""
        return mod.no_device_reason() or "no CUDA device found"
    except Exception as exc:  # pragma: no cover
        return str(exc)


def set_finite_checks(enabled: bool) -> None:
    """Check device inputs for NaN/Inf (default True; costs one stream synchronisation per call)."""
    global _check_finite
    _check_finite = bool(enabled)


def set_workspace_limit(nbytes: int) -> None:
    """Scratch memory budget of one call (default 1 GiB); bigger batches are processed in chunks."""
    _backend().set_workspace_limit(int(nbytes))


def clear_plan_cache() -> None:
    """Drop the cached cuFFT plans (and their work areas)."""
    mod = _forced_module or _load()
    if mod is not None:
        mod.clear_plan_cache()


# ---------------------------------------------------------------------------
# Array adapters
# ---------------------------------------------------------------------------

class DeviceArray:
    """Device memory returned for device inputs that are neither CuPy nor PyTorch.

    Exposes ``__cuda_array_interface__`` (version 3), ``shape``, ``dtype``,
    ``device``, ``ptr`` and ``get()`` (a NumPy copy).
    """

    def __init__(self, shape, dtype, device: int, _module=None, _stream: int = 0):
        self._mod = _module if _module is not None else _backend()
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.device = int(device)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self._buf = self._mod.DeviceBuffer(self.nbytes, self.device)
        self._stream = int(_stream)

    @property
    def ptr(self) -> int:
        return int(self._buf.ptr)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def __cuda_array_interface__(self):
        # v3 "stream": where the data was produced (1 = the legacy default stream).
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False),
                "strides": None, "version": 3, "stream": self._stream or 1}

    def get(self) -> np.ndarray:
        """Copy to a new NumPy array (waits for the work that produces it)."""
        out = np.empty(self.shape, dtype=self.dtype)
        self._buf.download(out, self._stream)
        return out

    def __repr__(self) -> str:
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype}, device={self.device})"


class _Arr:
    """What the back end needs to know about one argument."""

    __slots__ = ("obj", "kind", "ptr", "shape", "dtype", "device", "stream", "keep")

    def __init__(self, obj, kind, ptr, shape, dtype, device, stream, keep=None):
        self.obj, self.kind, self.ptr = obj, kind, int(ptr)
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        self.device, self.stream, self.keep = int(device), int(stream), keep

    @property
    def host(self) -> bool:
        return self.kind == "numpy"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def _top_module(x) -> str:
    return type(x).__module__.split(".", 1)[0]


def _c_contiguous(shape, strides_bytes, itemsize) -> bool:
    expected = itemsize
    for dim, stride in zip(reversed(shape), reversed(strides_bytes)):
        if dim != 1 and stride != expected:
            return False
        expected *= dim
    return True


_TORCH_DTYPES = {"complex64": np.complex64, "complex128": np.complex128,
                 "float32": np.float32, "float64": np.float64}

# DLPack (v0.x unversioned capsules, which producers return by default)


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


_KDL_CUDA, _KDL_CUDA_MANAGED = 2, 13
_DL_DTYPES = {(2, 32): np.float32, (2, 64): np.float64, (5, 64): np.complex64, (5, 128): np.complex128}


def _from_dlpack(x, name):
    dev_type, dev_id = x.__dlpack_device__()
    if int(dev_type) not in (_KDL_CUDA, _KDL_CUDA_MANAGED):
        raise TypeError(f"{name} is a DLPack array on device type {int(dev_type)}, not a CUDA device; "
                        "pass a NumPy array or a CUDA device array")
    capsule = x.__dlpack__(stream=1)  # producer makes its work visible to the legacy stream
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    addr = get(capsule, b"dltensor")
    if not addr:
        raise TypeError(f"{name}: unsupported DLPack capsule")
    t = _DLManagedTensor.from_address(addr).dl_tensor
    if t.dtype.lanes != 1 or (t.dtype.code, t.dtype.bits) not in _DL_DTYPES:
        raise TypeError(f"{name} has an unsupported DLPack dtype (code {t.dtype.code}, {t.dtype.bits} bits)")
    dtype = np.dtype(_DL_DTYPES[(t.dtype.code, t.dtype.bits)])
    shape = tuple(t.shape[i] for i in range(t.ndim))
    if t.strides:
        strides = tuple(t.strides[i] * dtype.itemsize for i in range(t.ndim))
        if not _c_contiguous(shape, strides, dtype.itemsize):
            raise ValueError(f"{name} must be C-contiguous")
    # The capsule stays referenced (keep=) so the producer keeps the memory alive.
    return _Arr(x, "dlpack", (t.data or 0) + t.byte_offset, shape, dtype, dev_id, 0, keep=capsule)


def _wrap(x, name: str) -> _Arr:
    """Describe `x` (NumPy or CUDA array); raises TypeError/ValueError naming `name`."""
    if isinstance(x, np.ndarray):
        if not x.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray({name}))")
        return _Arr(x, "numpy", 0, x.shape, x.dtype, -1, 0)
    top = _top_module(x)
    if top == "torch":
        import torch

        if not x.is_cuda:
            raise TypeError(f"{name} is a CPU torch tensor; pass {name}.numpy() or a CUDA tensor")
        dtype = _TORCH_DTYPES.get(str(x.dtype).replace("torch.", ""))
        if dtype is None:
            raise TypeError(f"{name} has unsupported dtype {x.dtype}")
        if not x.is_contiguous():
            raise ValueError(f"{name} must be contiguous (use {name}.contiguous())")
        dev = x.device.index if x.device.index is not None else torch.cuda.current_device()
        stream = torch.cuda.current_stream(x.device).cuda_stream
        return _Arr(x, "torch", x.data_ptr(), tuple(x.shape), dtype, dev, stream)
    if top == "cupy":
        import cupy

        if not x.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous (use cupy.ascontiguousarray({name}))")
        stream = cupy.cuda.get_current_stream().ptr
        return _Arr(x, "cupy", x.data.ptr, x.shape, x.dtype, x.device.id, stream)
    iface = getattr(x, "__cuda_array_interface__", None)
    if iface is not None:
        shape = tuple(iface["shape"])
        dtype = np.dtype(iface["typestr"])
        ptr = iface["data"][0] or 0
        strides = iface.get("strides")
        if strides is not None and not _c_contiguous(shape, strides, dtype.itemsize):
            raise ValueError(f"{name} must be C-contiguous")
        s = iface.get("stream")
        stream = 0 if s in (None, 1) else int(s)  # 1: legacy default stream, 2: per-thread
        mod = _backend()
        dev = mod.pointer_device(ptr) if ptr else mod.current_device()
        if ptr and dev < 0:
            raise TypeError(f"{name}: __cuda_array_interface__ points to host memory")
        kind = "devicearray" if isinstance(x, DeviceArray) else "cai"
        return _Arr(x, kind, ptr, shape, dtype, dev, stream)
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        return _from_dlpack(x, name)
    raise TypeError(f"{name} must be a NumPy array or a CUDA device array (CuPy, PyTorch, "
                    f"__cuda_array_interface__ or DLPack), got {type(x).__name__}")


def _empty(like: _Arr, shape, dtype, mod):
    """New array of the same kind (and device) as `like`; returns (object, device address)."""
    dtype = np.dtype(dtype)
    if like.kind == "numpy":
        a = np.empty(shape, dtype=dtype)
        return a, 0
    if like.kind == "cupy":
        import cupy

        with cupy.cuda.Device(like.device):
            a = cupy.empty(shape, dtype=dtype)
        return a, a.data.ptr
    if like.kind == "torch":
        import torch

        a = torch.empty(tuple(shape), dtype=getattr(torch, dtype.name), device=like.obj.device)
        return a, a.data_ptr()
    a = DeviceArray(shape, dtype, like.device, _module=mod, _stream=like.stream)
    return a, a.ptr


def _check_nthreads(nthreads) -> None:
    if nthreads is None:
        return
    if isinstance(nthreads, bool) or not isinstance(nthreads, (int, np.integer)) or nthreads < 1:
        raise ValueError(f"nthreads must be a positive integer or None, got {nthreads!r}")


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an integer >= 2 (pixels per side), got {n!r}")
    return int(n)


def _pair(v, name) -> tuple:
    try:
        a, b = (float(t) for t in v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of angles (x, y) in radians, got {v!r}") from None
    return a, b


class _Session:
    """One call: the arrays, their common device and stream, host staging."""

    def __init__(self, mod, primary: _Arr, name: str):
        self.mod = mod
        self.primary = primary
        self.name = name
        self.host = primary.host
        self.device = mod.current_device() if self.host else primary.device
        self.stream = 0 if self.host else primary.stream
        self.buffers = []

    def same_side(self, a: _Arr, name: str) -> _Arr:
        if a.host != self.host:
            if self.host:
                raise TypeError(f"{name} is a device array but {self.name} is a NumPy array; "
                                "pass both on the host or both on the GPU")
            raise TypeError(f"{name} is a NumPy (host) array but {self.name} is on the GPU; "
                            f"pass a device array on device {self.device} (e.g. cupy.asarray({name}))")
        if not a.host and a.device != self.device:
            raise ValueError(f"{name} is on CUDA device {a.device} but {self.name} on device {self.device}")
        return a

    def check_finite(self, a: _Arr, name: str) -> None:
        if a.host:
            if not np.isfinite(a.obj).all():
                raise ValueError(f"{name} contains NaN or Inf values")
            return
        if not _check_finite or a.size == 0:
            return
        real = _REAL_OF.get(a.dtype, a.dtype)
        count = a.size * (2 if a.dtype.kind == "c" else 1)
        fn = getattr(self.mod, "all_finite" + _SUFFIX[real])
        if not fn(a.ptr, count, self.stream, self.device, name):
            raise ValueError(f"{name} contains NaN or Inf values")

    def device_ptr(self, a: _Arr) -> int:
        """Device address of `a`, uploading NumPy data into a scratch buffer."""
        if not a.host:
            return a.ptr
        buf = self.mod.DeviceBuffer(a.obj.nbytes, self.device)
        buf.upload(a.obj, 0)
        self.buffers.append(buf)
        return int(buf.ptr)

    def output(self, shape, dtype):
        """(object returned to the caller, device address written by the kernels, host fetch)."""
        obj, ptr = _empty(self.primary, shape, dtype, self.mod)
        if not self.host:
            return obj, ptr
        buf = self.mod.DeviceBuffer(obj.nbytes, self.device)
        self.buffers.append(buf)
        return obj, int(buf.ptr)

    def fetch(self, host_obj: np.ndarray, ptr: int) -> None:
        for buf in self.buffers:
            if int(buf.ptr) == ptr:
                buf.download(host_obj, 0)
                return
        raise AssertionError("no staging buffer for this output")  # pragma: no cover


def _field(a: _Arr, name: str, n: int, allow_real: bool = False) -> int:
    """Validates a complex (or, with allow_real, real) field [B, n, n] or [n, n]; returns B."""
    if a.dtype not in _REAL_OF and not (allow_real and a.dtype in _COMPLEX_OF):
        kinds = "complex64 or complex128" + (" (or real float32/float64 amplitudes)" if allow_real else "")
        raise TypeError(f"{name} must be {kinds}, got {a.dtype}")
    if a.shape[-2:] != (n, n) or len(a.shape) not in (2, 3):
        raise ValueError(f"{name} must have shape [B, {n}, {n}] or [{n}, {n}], got {list(a.shape)}")
    return 1 if len(a.shape) == 2 else a.shape[0]


# ---------------------------------------------------------------------------
# Propagator
# ---------------------------------------------------------------------------

class CudaPropagator:
    """One free-space hop on the GPU; see :class:`optdiff.Propagator` for the physics.

    ``forward(field, out=None, nthreads=None)`` and ``adjoint(...)`` take
    ``[B, n, n]`` or ``[n, n]`` complex64/complex128 fields (NumPy or device
    arrays, see the module docstring); ``out`` may be ``field`` (in place).
    ``nthreads`` is accepted for API compatibility and ignored.
    """

    def __init__(self, n: int, *, wavelength: float, pitch: float, distance: float,
                 method: str = "as", padding: int = 2, tilt=(0.0, 0.0)):
        self.n = _check_n(n)
        self.wavelength, self.pitch, self.distance = float(wavelength), float(pitch), float(distance)
        self.tilt = _pair(tilt, "tilt")
        # The hop tuple of both compiled modules; method and padding are checked there.
        self._hop = (self.wavelength, self.pitch, self.distance, method, padding, self.tilt[0], self.tilt[1])
        mod = _backend()
        mod.validate_hop(self.n, self._hop)
        self.method, self.padding = method, int(padding)
        self._mod = mod
        self._impl = {}
        self._lock = threading.Lock()

    def _get(self, dtype, device):
        key = (np.dtype(dtype), device)
        with self._lock:
            impl = self._impl.get(key)
            if impl is None:
                cls = getattr(self._mod, "Propagator" + _SUFFIX[np.dtype(dtype)])
                impl = cls(self.n, self._hop, device=device)
                self._impl[key] = impl
            return impl

    def _apply(self, field, out, nthreads, adjoint):
        _check_nthreads(nthreads)
        f = _wrap(field, "field")
        batch = _field(f, "field", self.n)
        s = _Session(self._mod, f, "field")
        if out is not None:
            o = s.same_side(_wrap(out, "out"), "out")
            if o.dtype != f.dtype or o.shape != f.shape:
                raise ValueError(f"out must match field ({list(f.shape)}, {f.dtype}), "
                                 f"got {list(o.shape)}, {o.dtype}")
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
            result, optr = _empty(f, f.shape, f.dtype, self._mod)
        else:
            result, optr = out, o.ptr
        run(f.ptr, optr, batch, s.stream)
        return result

    def forward(self, field, out=None, nthreads: Optional[int] = None):
        """out = P(tilt * field)."""
        return self._apply(field, out, nthreads, adjoint=False)

    def adjoint(self, field, out=None, nthreads: Optional[int] = None):
        """Exact adjoint: conj(tilt) * P^H(field)."""
        return self._apply(field, out, nthreads, adjoint=True)

    __call__ = forward

    def transfer_function(self, dtype=np.complex128) -> np.ndarray:
        """Transfer function on the padded grid ``[n*padding]^2``, FFT order, unnormalised (NumPy)."""
        dtype = np.dtype(dtype)
        if dtype not in _REAL_OF:
            raise TypeError("dtype must be complex64 or complex128")
        return self._mod.transfer_function(self.n, self._hop, dtype == np.complex128, False)

    def __repr__(self) -> str:
        return (f"CudaPropagator(n={self.n}, wavelength={self.wavelength:g}, pitch={self.pitch:g}, "
                f"distance={self.distance:g}, method={self.method!r}, padding={self.padding}, "
                f"tilt={self.tilt})")


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
        return int(getattr(self.saved, "nbytes"))


class CudaPhaseStack:
    """A stack of phase layers on the GPU; see :class:`optdiff.PhaseStack` for the physics.

    Methods as on the CPU: ``forward(field, phases, out=None)`` -> intensity,
    ``camera_field(field, phases)``, ``forward_train(field, phases, recompute=False)``
    -> ``(intensity, CudaTape)`` and ``backward(tape, grad_intensity, input_grad=False)``
    -> ``(grad_phases [L,n,n], grad_field or None)``. Phases are float32 with
    complex64 fields, float64 with complex128, of the same array kind as the field.
    """

    def __init__(self, n: int, *, wavelength: float, pitch: float, distances: Sequence[float],
                 method: str = "as", padding: int = 2, tilts=None,
                 input_distance: Optional[float] = None, input_tilt=(0.0, 0.0)):
        self.n = _check_n(n)
        dist = np.asarray(distances, dtype=np.float64).reshape(-1)
        if dist.size == 0:
            raise ValueError("distances must list at least one hop (one per layer)")
        L = int(dist.size)
        if tilts is None:
            tilts_arr = np.zeros((L, 2))
        else:
            tilts_arr = np.asarray(tilts, dtype=np.float64)
            if tilts_arr.shape != (L, 2):
                raise ValueError(f"tilts must have shape (L, 2) = ({L}, 2), got {tilts_arr.shape}")
        self.wavelength, self.pitch = float(wavelength), float(pitch)
        self.distances = tuple(float(d) for d in dist)
        self.tilts = tilts_arr
        self.input_distance = None if input_distance is None else float(input_distance)
        self.input_tilt = _pair(input_tilt, "input_tilt")
        self._hops = [(self.wavelength, self.pitch, float(d), method, padding, float(t[0]), float(t[1]))
                      for d, t in zip(dist, tilts_arr)]
        self._input_hop = (None if self.input_distance is None else
                           (self.wavelength, self.pitch, self.input_distance, method, padding,
                            self.input_tilt[0], self.input_tilt[1]))
        mod = _backend()
        mod.validate_stack(self.n, self._hops, self._input_hop)  # the CPU stack's checks and messages
        self.method, self.padding = method, int(padding)
        self._mod = mod
        self._impl = {}
        self._lock = threading.Lock()

    @property
    def num_layers(self) -> int:
        return len(self._hops)

    def _get(self, dtype, device):
        key = (np.dtype(dtype), device)
        with self._lock:
            impl = self._impl.get(key)
            if impl is None:
                cls = getattr(self._mod, "PhaseStack" + _SUFFIX[np.dtype(dtype)])
                impl = cls(self.n, self._hops, self._input_hop, device=device)
                self._impl[key] = impl
            return impl

    def _prepare(self, field, phases, allow_real=False):
        f = _wrap(field, "field")
        batch = _field(f, "field", self.n, allow_real)
        s = _Session(self._mod, f, "field")
        p = s.same_side(_wrap(phases, "phases"), "phases")
        want = _REAL_OF.get(f.dtype, f.dtype)  # a real field: phases of its own dtype
        if p.dtype != want:
            raise TypeError(f"phases must be {want} to go with a {f.dtype} field, got {p.dtype}")
        L = self.num_layers
        if p.shape != (L, self.n, self.n):
            raise ValueError(f"phases must have shape [{L}, {self.n}, {self.n}], got {list(p.shape)}")
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
                o = s.same_side(_wrap(out, "out"), "out")
                if o.shape != f.shape or o.dtype != real:
                    raise ValueError(f"out must have shape {list(f.shape)} and dtype {real}, "
                                     f"got {list(o.shape)}, {o.dtype}")
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
                saved, sptr = _empty(f, shape, cdtype, self._mod)
        run = impl.forward_real if amplitude else impl.forward  # real: read in the first kernel
        # An overflowed intensity raises like on the CPU; for device arrays only with the finite
        # checks on (reading the kernel's flag synchronises the stream).
        run(fptr, pptr, batch, iptr, sptr, cptr, s.stream, s.host or _check_finite)
        if s.host:
            if inten is not None:
                s.fetch(inten, iptr)
            if cam is not None:
                s.fetch(cam, cptr)
        return f, p, batch, s, fptr, pptr, inten, cam, saved, sptr

    def forward(self, field, phases, out=None, nthreads: Optional[int] = None):
        """Camera intensity ``[B, n, n]`` (real, the field's precision).

        ``field`` may also be real (float32 with float32 phases, or float64): amplitudes read
        as a field with zero imaginary part by the first kernel, without a complex copy.
        """
        _check_nthreads(nthreads)
        return self._run_forward(field, phases, want_intensity=True, want_camera=False,
                                 save=False, out=out, allow_real=True)[6]

    __call__ = forward

    def camera_field(self, field, phases, nthreads: Optional[int] = None):
        """Complex field at the camera, ``[B, n, n]``."""
        _check_nthreads(nthreads)
        return self._run_forward(field, phases, want_intensity=False, want_camera=True, save=False)[7]

    def forward_train(self, field, phases, recompute: bool = False, nthreads: Optional[int] = None):
        """Intensity and a :class:`CudaTape` for :meth:`backward`.

        ``recompute=False`` keeps L+1 fields per sample on the GPU; ``True``
        keeps none and backward reruns the forward pass in chunks.
        """
        _check_nthreads(nthreads)
        f, p, batch, s, fptr, pptr, inten, _, saved, sptr = self._run_forward(
            field, phases, want_intensity=True, want_camera=False, save=not recompute)
        # Keep the phases as they are now (later in-place edits must not change backward).
        if s.host:
            field_keep, phases_keep = s.buffers[0], s.buffers[1]  # uploaded copies
            phases_ptr = pptr
        else:
            phases_keep, phases_ptr = _empty(f, p.shape, p.dtype, self._mod)
            self._mod.memcpy(phases_ptr, p.ptr, p.size * p.dtype.itemsize, s.stream, s.device)
            field_keep = f.obj
        tape = CudaTape(kind=f.kind, field=field_keep, field_ptr=fptr, phases=phases_keep,
                        phases_ptr=phases_ptr, saved=saved, saved_ptr=sptr, shape=f.shape,
                        dtype=f.dtype, batch=batch, device=s.device, stream=s.stream,
                        recompute=bool(recompute))
        tape._keep_capsules = (f.keep, p.keep)
        return inten, tape

    def mse_loss_and_grad(self, field, phases, target, return_intensity: bool = False,
                          nthreads: Optional[int] = None):
        """Fused intensity-matching step: ``(loss, grad_phases [L,n,n])`` (+ intensity).

        ``loss = mean((I - target)^2)``; the tape stays on the device chunk by chunk and the
        loss is summed per pixel in float64 on the device, then over pixels here.
        """
        _check_nthreads(nthreads)
        f, p, batch, s = self._prepare(field, phases)
        if batch == 0:
            raise ValueError("the batch has no samples: the mean squared error is undefined")
        t = s.same_side(_wrap(target, "target"), "target")
        real = _REAL_OF[f.dtype]
        if t.dtype != real:
            raise TypeError(f"target must be {real} (the intensity's dtype), got {t.dtype}")
        if t.shape != f.shape:
            raise ValueError(f"target must have the intensity's shape {list(f.shape)}, got {list(t.shape)}")
        s.check_finite(t, "target")
        impl = self._get(f.dtype, s.device)
        fptr, pptr, tptr = s.device_ptr(f), s.device_ptr(p), s.device_ptr(t)
        gph, gph_ptr = s.output((self.num_layers, self.n, self.n), real)
        inten, iptr = s.output(f.shape, real) if return_intensity else (None, 0)
        sq = self._mod.DeviceBuffer(self.n * self.n * 8, s.device)
        impl.mse_loss_and_grad(fptr, pptr, tptr, batch, gph_ptr, int(sq.ptr), iptr, s.stream)
        sums = np.empty(self.n * self.n, np.float64)
        sq.download(sums, s.stream)  # returns when the stream has got there
        loss = float(sums.sum() / (batch * self.n * self.n))
        if s.host:
            s.fetch(gph, gph_ptr)
            if inten is not None:
                s.fetch(inten, iptr)
        return (loss, gph, inten) if return_intensity else (loss, gph)

    def backward(self, tape: CudaTape, grad_intensity, input_grad: bool = False,
                 nthreads: Optional[int] = None):
        """Gradients from dLoss/dIntensity: ``(grad_phases [L,n,n], grad_field or None)``."""
        _check_nthreads(nthreads)
        if not isinstance(tape, CudaTape):
            raise TypeError("tape must be the CudaTape returned by CudaPhaseStack.forward_train")
        g = _wrap(grad_intensity, "grad_intensity")
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
        if g.dtype != real:
            raise TypeError(f"grad_intensity must be {real}, got {g.dtype}")
        if g.shape != tape.shape:
            raise ValueError(f"grad_intensity must have the intensity's shape {list(tape.shape)}, "
                             f"got {list(g.shape)}")
        impl = self._get(tape.dtype, tape.device)
        L = self.num_layers
        if host_tape:
            s = _Session(self._mod, g, "grad_intensity")
            s.device = tape.device
            s.check_finite(g, "grad_intensity")
            gptr = s.device_ptr(g)
            gph, gph_ptr = s.output((L, self.n, self.n), real)
            gx, gx_ptr = (s.output(tape.shape, tape.dtype) if input_grad else (None, 0))
            impl.backward(tape._field_ptr, tape._phases_ptr, tape._saved_ptr, gptr, tape.batch,
                          gph_ptr, gx_ptr, 0)
            s.fetch(gph, gph_ptr)
            if gx is not None:
                s.fetch(gx, gx_ptr)
            return gph, gx
        s = _Session(self._mod, g, "grad_intensity")
        s.check_finite(g, "grad_intensity")
        like = _wrap(tape.phases, "tape.phases") if tape.kind in ("cupy", "torch") else g
        gph, gph_ptr = _empty(like, (L, self.n, self.n), real, self._mod)
        gx, gx_ptr = (_empty(like, tape.shape, tape.dtype, self._mod) if input_grad else (None, 0))
        impl.backward(tape._field_ptr, tape._phases_ptr, tape._saved_ptr, g.ptr, tape.batch,
                      gph_ptr, gx_ptr, g.stream)
        return gph, gx

    def __repr__(self) -> str:
        return (f"CudaPhaseStack(n={self.n}, layers={self.num_layers}, wavelength={self.wavelength:g}, "
                f"pitch={self.pitch:g}, distances={self.distances}, method={self.method!r}, "
                f"padding={self.padding}, input_distance={self.input_distance})")


# ---------------------------------------------------------------------------
# Read-out binning
# ---------------------------------------------------------------------------

def _bin_call(x, out_shape_fn, fn_name, n, h, w, k, name):
    a = _wrap(x, name)
    if a.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{name} must be float32 or float64, got {a.dtype}")
    mod = _backend()
    s = _Session(mod, a, name)
    batch, in_shape, out_shape = out_shape_fn(a.shape)
    s.check_finite(a, name)
    ptr = s.device_ptr(a)
    res, rptr = s.output(out_shape, a.dtype)
    getattr(mod, fn_name + _SUFFIX[a.dtype])(ptr, rptr, batch, n, h, w, k, s.stream, s.device)
    if s.host:
        s.fetch(res, rptr)
    return res


def bin_readout(intensity, out_shape, k: int):
    """Average ``k x k`` blocks of the centred ``(H*k) x (W*k)`` region: ``[B,N,N] -> [B,H,W]``.

    The region starts at pixel ``((N - H*k) // 2, (N - W*k) // 2)``. Works on
    NumPy or device arrays (float32/float64), ``[B,N,N]`` or ``[N,N]``.
    """
    h, w = (int(v) for v in out_shape)
    k = int(k)

    def shapes(shape):
        if len(shape) not in (2, 3) or shape[-1] != shape[-2]:
            raise ValueError(f"intensity must have shape [B, N, N] or [N, N], got {list(shape)}")
        batch = 1 if len(shape) == 2 else shape[0]
        return batch, shape, tuple(shape[:-2]) + (h, w)

    a = _wrap(intensity, "intensity")
    n = a.shape[-1] if a.shape else 0
    return _bin_call(intensity, shapes, "bin_readout", n, h, w, k, "intensity")


def bin_readout_backward(grad_out, n: int, k: int):
    """Adjoint of :func:`bin_readout`: ``[B,H,W] -> [B,n,n]`` (grad/k^2 inside each block, 0 outside)."""
    n, k = int(n), int(k)
    a = _wrap(grad_out, "grad_out")
    if len(a.shape) not in (2, 3):
        raise ValueError(f"grad_out must have shape [B, H, W] or [H, W], got {list(a.shape)}")
    h, w = a.shape[-2], a.shape[-1]

    def shapes(shape):
        batch = 1 if len(shape) == 2 else shape[0]
        return batch, shape, tuple(shape[:-2]) + (n, n)

    return _bin_call(grad_out, shapes, "bin_readout_backward", n, h, w, k, "grad_out")


# ---------------------------------------------------------------------------
# Sampling step: counter-based noise and the DDPM update
# ---------------------------------------------------------------------------

def _float_arg(a: _Arr, name: str, writeable: bool = False) -> None:
    if a.dtype not in _FLOATS:
        raise TypeError(f"{name} must be float32 or float64, got {a.dtype}; convert it first "
                        f"(e.g. {name}.astype(np.float32))")
    if writeable and a.host and not a.obj.flags.writeable:
        raise ValueError(f"{name} must be writeable")


def _host_address(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def standard_normal(out, *, seed: int, stream: int = 0, offset: int = 0):
    """Fill ``out`` with the standard normal numbers ``offset .. offset + out.size - 1`` of the
    noise stream ``(seed, stream)``; returns ``out``.

    ``out``: float32 or float64, any shape, C-contiguous; a NumPy array (filled on the GPU, then
    copied back) or a device array (filled asynchronously on its stream). Equals
    ``optdiff.standard_normal(out.shape, seed=seed, stream=stream, offset=offset, dtype=out.dtype)``.
    """
    seed, stream, offset = _u64(seed, "seed"), _u64(stream, "stream"), _u64(offset, "offset")
    o = _wrap(out, "out")
    _float_arg(o, "out", writeable=True)
    mod = _backend()
    s = _Session(mod, o, "out")
    fn = getattr(mod, "standard_normal" + _SUFFIX[o.dtype])
    if s.host:
        buf = mod.DeviceBuffer(out.nbytes, s.device)
        fn(int(buf.ptr), o.size, seed, stream, offset, 0, s.device)
        buf.download(out, 0)
    else:
        fn(o.ptr, o.size, seed, stream, offset, s.stream, s.device)
    return out


def ddpm_update(x, eps, out=None, *, c1: float, c2: float, sigma: float, eps_scale: float = 1.0,
                eps_offset: float = 0.0, seed: int, stream: int, offset: int = 0):
    """One ancestral DDPM step on the GPU: ``c1 (x - c2 (eps_scale eps + eps_offset)) + sigma z``.

    ``z`` is ``standard_normal(x.shape, seed=seed, stream=stream, offset=offset)``; ``sigma = 0``
    draws none. ``x``, ``eps`` and ``out`` (None: a new array of x's kind) are float32 or float64
    arrays of one shape and dtype, all NumPy or all on one device; ``out`` may be ``x`` or ``eps``
    (in place). Same result as :func:`optdiff.ddpm_update`; like it, no NaN/Inf check (no
    stream synchronisation).
    """
    seed, stream, offset = _u64(seed, "seed"), _u64(stream, "stream"), _u64(offset, "offset")
    coeffs = _ddpm_coefficients(c1, c2, sigma, eps_scale, eps_offset)
    a = _wrap(x, "x")
    _float_arg(a, "x")
    mod = _backend()
    s = _Session(mod, a, "x")
    e = s.same_side(_wrap(eps, "eps"), "eps")
    if e.dtype != a.dtype:
        raise TypeError(f"eps must have x's dtype {a.dtype}, got {e.dtype}")
    if e.shape != a.shape:
        raise ValueError(f"eps must have x's shape {list(a.shape)}, got {list(e.shape)}")
    o = None
    if out is not None:
        o = s.same_side(_wrap(out, "out"), "out")
        _float_arg(o, "out", writeable=True)
        if o.dtype != a.dtype or o.shape != a.shape:
            raise ValueError(f"out must match x ({list(a.shape)}, {a.dtype}), got {list(o.shape)}, {o.dtype}")
    fn = getattr(mod, "ddpm_update" + _SUFFIX[a.dtype])
    if not s.host:  # device addresses as they are; the module rejects partial overlaps
        result, optr = (out, o.ptr) if o is not None else _empty(a, a.shape, a.dtype, mod)
        fn(a.ptr, e.ptr, optr, a.size, *coeffs, seed, stream, offset, s.stream, s.device)
        return result
    # NumPy: staged copies; out is written in place of x's or eps's copy when it is that array.
    xptr = s.device_ptr(a)
    eptr = s.device_ptr(e)
    optr = 0
    if out is not None and a.size:
        for src, ptr, name in ((x, xptr, "x"), (eps, eptr, "eps")):
            if _host_address(out) == _host_address(src):
                optr = ptr
            elif np.may_share_memory(out, src):
                raise ValueError(f"out overlaps {name} without being the same array; pass {name} itself "
                                 "for an in-place update or a separate array")
    result = out if out is not None else np.empty_like(x)
    if not optr:
        buf = mod.DeviceBuffer(result.nbytes, s.device)
        s.buffers.append(buf)
        optr = int(buf.ptr)
    fn(xptr, eptr, optr, a.size, *coeffs, seed, stream, offset, 0, s.device)
    s.fetch(result, optr)
    return result
