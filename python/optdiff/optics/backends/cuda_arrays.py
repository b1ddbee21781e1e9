"""Arrays for the CUDA backend: NumPy, CuPy, PyTorch, ``__cuda_array_interface__`` and DLPack.

``wrap`` describes any argument (address, shape, dtype, device, stream) without copying;
``Session`` holds one call's arrays, stages NumPy data to the device and fetches results back;
``DeviceArray`` is what device inputs that are neither CuPy nor PyTorch get back.
"""

from __future__ import annotations

import ctypes

import numpy as np

from .. import _array_rules as rules
from .._args import COMPLEX_OF as _COMPLEX_OF
from .._args import FLOATS as _FLOATS
from .._args import REAL_OF as _REAL_OF

SUFFIX = {np.dtype(np.float32): "32", np.dtype(np.float64): "64",
          np.dtype(np.complex64): "32", np.dtype(np.complex128): "64"}
_finite_checks = {"enabled": True}


def set_finite_checks(enabled: bool) -> None:
    """Check device inputs for NaN/Inf (default True; costs one stream synchronisation per call)."""
    _finite_checks["enabled"] = bool(enabled)


def finite_checks_enabled() -> bool:
    return _finite_checks["enabled"]


class DeviceArray:
    """Device memory returned for device inputs that are neither CuPy nor PyTorch.

    Exposes ``__cuda_array_interface__`` (version 3), ``shape``, ``dtype``,
    ``device``, ``ptr`` and ``get()`` (a NumPy copy).
    """

    def __init__(self, shape, dtype, device: int, _module, _stream: int = 0, _backend=None):
        self._mod = _module
        self._optdiff_backend = _backend  # so optdiff's functions send it back to the same backend
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


class Arr:
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
    return Arr(x, "dlpack", (t.data or 0) + t.byte_offset, shape, dtype, dev_id, 0, keep=capsule)


def torch_resolved(x, name: str, output: bool = False):
    """`x` with PyTorch's lazy conjugate/negative bits resolved (the data its ``data_ptr()`` holds).

    ``t.conj()`` of a complex tensor is a view whose memory is the unconjugated data plus a flag
    (``is_conj()``); ``data_ptr()`` points at that memory, so the kernels would read the wrong
    values. Inputs are resolved (a copy, only when a flag is set); an output with a flag set is
    refused, since writing through a resolved copy would leave the caller's tensor unchanged.
    """
    if not (x.is_conj() or x.is_neg()):
        return x
    if output:
        raise ValueError(f"{name} is a lazily conjugated or negated PyTorch view ({name}.is_conj() or "
                         f"{name}.is_neg() is True): results cannot be written through it; pass a plain "
                         f"tensor (e.g. torch.empty_like({name}))")
    return x.resolve_conj().resolve_neg()


def wrap(x, name: str, mod, backend=None, output: bool = False) -> Arr:
    """Describe `x` (NumPy or CUDA array); raises TypeError/ValueError naming `name`.

    ``output``: the call writes into `x` (a PyTorch tensor with a lazy conj/neg flag is refused,
    one given as an input is resolved first).
    """
    a = _wrap(x, name, mod, output)
    if not a.host and a.ptr % a.dtype.itemsize:
        # Device data must be aligned to the whole element: cuFFT transforms complex64/128 in
        # place as float2/double2 (8/16 bytes); the module checks again under its own names.
        raise ValueError(f"{name} is not aligned: its data starts at an address that is not a multiple "
                         f"of {a.dtype.itemsize} bytes (e.g. a view at an odd byte offset); pass an "
                         f"aligned copy")
    return a


def _wrap(x, name: str, mod, output: bool) -> Arr:
    if isinstance(x, np.ndarray):
        if not x.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray({name}))")
        return Arr(x, "numpy", 0, x.shape, x.dtype, -1, 0)
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
        resolved = torch_resolved(x, name, output)  # before data_ptr(): see torch_resolved
        dev = x.device.index if x.device.index is not None else torch.cuda.current_device()
        stream = torch.cuda.current_stream(x.device).cuda_stream
        # keep=: a resolved copy must outlive the call that reads it.
        return Arr(x, "torch", resolved.data_ptr(), tuple(x.shape), dtype, dev, stream,
                   keep=None if resolved is x else resolved)
    if top == "cupy":
        import cupy

        if not x.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous (use cupy.ascontiguousarray({name}))")
        stream = cupy.cuda.get_current_stream().ptr
        return Arr(x, "cupy", x.data.ptr, x.shape, x.dtype, x.device.id, stream)
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
        dev = mod.pointer_device(ptr) if ptr else mod.current_device()
        if ptr and dev < 0:
            raise TypeError(f"{name}: __cuda_array_interface__ points to host memory")
        kind = "devicearray" if isinstance(x, DeviceArray) else "cai"
        return Arr(x, kind, ptr, shape, dtype, dev, stream)
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        return _from_dlpack(x, name)
    raise TypeError(f"{name} must be a NumPy array or a CUDA device array (CuPy, PyTorch, "
                    f"__cuda_array_interface__ or DLPack), got {type(x).__name__}")


def empty(like: Arr, shape, dtype, mod, backend=None):
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
    a = DeviceArray(shape, dtype, like.device, mod, like.stream, backend)
    return a, a.ptr



class Session:
    """One call: the arrays, their common device and stream, host staging."""

    def __init__(self, mod, primary: Arr, name: str, backend=None):
        self.mod = mod
        self.backend = backend
        self.primary = primary
        self.name = name
        self.host = primary.host
        self.device = mod.current_device() if self.host else primary.device
        self.stream = 0 if self.host else primary.stream
        self.buffers = []

    def same_side(self, a: Arr, name: str) -> Arr:
        if a.host != self.host:
            if self.host:
                raise TypeError(f"{name} is a device array but {self.name} is a NumPy array; "
                                "pass both on the host or both on the GPU")
            raise TypeError(f"{name} is a NumPy (host) array but {self.name} is on the GPU; "
                            f"pass a device array on device {self.device} (e.g. cupy.asarray({name}))")
        if not a.host and a.device != self.device:
            raise ValueError(f"{name} is on CUDA device {a.device} but {self.name} on device {self.device}")
        return a

    def check_finite(self, a: Arr, name: str) -> None:
        if a.host:
            if not np.isfinite(a.obj).all():
                raise ValueError(rules.finite_message(name))
            return
        if not _finite_checks["enabled"] or a.size == 0:
            return
        real = _REAL_OF.get(a.dtype, a.dtype)
        count = a.size * (2 if a.dtype.kind == "c" else 1)
        fn = getattr(self.mod, "all_finite" + SUFFIX[real])
        if not fn(a.ptr, count, self.stream, self.device, name):
            raise ValueError(rules.finite_message(name))

    def result_finite(self, obj, ptr: int, dtype, name: str) -> bool:
        """Whether an output the kernels wrote is finite (device outputs: only with the finite
        checks on, since reading the answer synchronises the stream)."""
        if isinstance(obj, np.ndarray):
            return bool(np.isfinite(obj).all())
        dtype = np.dtype(dtype)
        count = int(np.prod(getattr(obj, "shape", ()), dtype=np.int64)) * (2 if dtype.kind == "c" else 1)
        if not _finite_checks["enabled"] or count == 0:
            return True
        fn = getattr(self.mod, "all_finite" + SUFFIX[_REAL_OF.get(dtype, dtype)])
        return bool(fn(ptr, count, self.stream, self.device, name))

    def device_ptr(self, a: Arr) -> int:
        """Device address of `a`, uploading NumPy data into a scratch buffer."""
        if not a.host:
            return a.ptr
        buf = self.mod.DeviceBuffer(a.obj.nbytes, self.device)
        buf.upload(a.obj, 0)
        self.buffers.append(buf)
        return int(buf.ptr)

    def output(self, shape, dtype):
        """(object returned to the caller, device address written by the kernels, host fetch)."""
        obj, ptr = empty(self.primary, shape, dtype, self.mod, self.backend)
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


def field_batch(a: Arr, name: str, n: int, allow_real: bool = False) -> int:
    """Validates a complex (or, with allow_real, real) field [B, n, n] or [n, n]; returns B."""
    if a.dtype not in _REAL_OF and not (allow_real and a.dtype in _COMPLEX_OF):
        kinds = "complex64 or complex128" + (" (or real float32/float64 amplitudes)" if allow_real else "")
        raise TypeError(f"{name} must be {kinds}, got {a.dtype}; convert with {name}.astype(np.complex64) first")
    return rules.batch(name, a.shape, n)


def float_arg(a: Arr, name: str, writeable: bool = False) -> None:
    if a.dtype not in _FLOATS:
        raise TypeError(f"{name} must be float32 or float64, got {a.dtype}; convert it first "
                        f"(e.g. {name}.astype(np.float32))")
    if writeable and a.host and not a.obj.flags.writeable:
        raise ValueError(f"{name} must be writeable")


def host_address(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


