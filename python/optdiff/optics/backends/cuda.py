"""The CUDA backend: the optical core on a GPU through ``optdiff._cuda`` (cuFFT and kernels).

``backend="cuda"`` on :class:`optdiff.Propagator` / :class:`optdiff.PhaseStack` (and the ODU,
model and trainer) runs here; ``backend="cuda-emu"`` runs the same host code and kernel bodies
compiled for the CPU (``optdiff._cuda_emu``), to test this backend without a GPU.

Arrays
------
* **NumPy arrays** are copied to the GPU, processed, and the results copied back: NumPy in,
  NumPy out (the call returns when the results are there).
* **Device arrays** are used in place, without copies, and results are allocated on the same
  device: CuPy arrays -> CuPy arrays (CuPy's current stream and memory pool); PyTorch CUDA
  tensors -> PyTorch tensors (the current torch stream); any other object exposing
  ``__cuda_array_interface__`` (v2/v3, e.g. Numba) or ``__dlpack__`` on a CUDA device ->
  :class:`DeviceArray`. Calls on device arrays are asynchronous on the array library's current
  stream (or the stream named by ``__cuda_array_interface__``).

Everything in one call must live on the same side: a NumPy array where the field is a device
array (or the reverse) raises ``TypeError``. Wrong dtypes raise ``TypeError``; wrong shapes,
non-contiguous arrays and NaN/Inf values raise ``ValueError`` naming the argument. The NaN/Inf
check of device inputs synchronises the stream once per call; :func:`set_finite_checks` turns
it off. Device errors become ``RuntimeError`` (``CudaError``) or ``MemoryError``
(``CudaOutOfMemoryError``) with the CUDA/cuFFT error name; nothing aborts the interpreter.

The noise of :meth:`CudaBackend.standard_normal` / :meth:`CudaBackend.ddpm_update` is the CPU's
(Philox counters of ``csrc/include/optdiff/sampler.hpp``) for the same ``(seed, stream,
offset)``, up to float32 rounding (a GPU may fuse multiply-adds).
"""

from __future__ import annotations

import ctypes
import glob
import importlib
import importlib.util
import os
import shutil
import subprocess
import threading

import numpy as np

from .. import _array_rules as rules
from ..specs import HopSpec, StackSpec
from .cuda_arrays import SUFFIX, DeviceArray, Session, empty, float_arg, host_address, set_finite_checks, wrap
from .cuda_stack import CudaPhaseStack, CudaPropagator, CudaTape

__all__ = ["CudaBackend", "CudaTape", "DeviceArray", "cuda_device_count", "cuda_unavailable_reason",
           "set_finite_checks", "set_workspace_limit", "clear_plan_cache", "cufft_record", "gpu_present"]

_lock = threading.Lock()
_modules: dict = {}  # module name -> (module or None, error message)


_CUFFT_RECORD = "_cuda_cufft.txt"  # written next to the module by cmake/OptdiffCUDA.cmake
_preload_note: dict = {}  # what the last preload did, for the unavailable-reason text


def cufft_record(module_dir: str | None = None) -> dict:
    """The cuFFT the module was linked against, as recorded at configure time.

    Keys ``soname`` (e.g. ``libcufft.so.12``), ``libdir``, ``cuda_major``, ``cuda_version``,
    ``origin``; empty when there is no record (a build without the CUDA module).
    """
    if module_dir is None:
        spec = importlib.util.find_spec("optdiff._cuda")
        if spec is None or not spec.origin:
            return {}
        module_dir = os.path.dirname(os.path.realpath(spec.origin))  # through the dev symlink
    path = os.path.join(module_dir, _CUFFT_RECORD)
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def cufft_candidates(record: dict, environ=None, nvidia_roots=None) -> list[str]:
    """Paths where the recorded cuFFT soname may be, in the order they are tried.

    The directory it was built against, ``$CUDA_HOME/lib64`` (and ``$CUDA_PATH``,
    ``/usr/local/cuda``), then the ``nvidia-cufft`` wheels (``nvidia/cu<major>/lib``,
    ``nvidia/cufft/lib``). Only files named exactly the soname: another major version would load
    but leave the module's own NEEDED entry unsatisfied.
    """
    soname = record.get("soname")
    if not soname:
        return []
    env = os.environ if environ is None else environ
    dirs = [record.get("libdir", "")]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if env.get(var):
            dirs += [os.path.join(env[var], "lib64"), os.path.join(env[var], "lib")]
    dirs.append("/usr/local/cuda/lib64")
    if nvidia_roots is None:
        try:
            import nvidia  # namespace package of the NVIDIA wheels

            nvidia_roots = list(getattr(nvidia, "__path__", []))
        except ImportError:
            nvidia_roots = []
    major = record.get("cuda_major", "")
    for root in nvidia_roots:
        for sub in dict.fromkeys(x for x in (f"cu{major}" if major else "", "cufft") if x):
            dirs.append(os.path.join(root, sub, "lib"))
    return [os.path.join(d, soname) for d in dict.fromkeys(d for d in dirs if d)]


def _preload_cufft() -> str | None:
    """Load exactly the cuFFT soname the module was linked against, before ``_cuda``.

    The module's RUNPATH holds the build machine's absolute directory; a library already loaded
    under its soname satisfies the dynamic linker whatever the RUNPATH says. Returns the path
    loaded (None: nothing found, the RUNPATH and the system's search path are left to it).
    """
    record = cufft_record()
    _preload_note.clear()
    _preload_note["soname"] = record.get("soname", "")
    tried = []
    for path in cufft_candidates(record):
        if not os.path.exists(path):
            continue
        try:
            ctypes.CDLL(path, mode=getattr(os, "RTLD_GLOBAL", 0) | getattr(os, "RTLD_NOW", 0))
        except OSError as exc:
            tried.append(f"{path}: {exc}")
            continue
        _preload_note["loaded"] = path
        return path
    _preload_note["failed"] = tried
    return None


def _preload_text() -> str:
    soname = _preload_note.get("soname")
    if not soname:
        return "no cuFFT record next to the module"
    if "loaded" in _preload_note:
        return f"{soname} preloaded from {_preload_note['loaded']}"
    failed = "; ".join(_preload_note.get("failed", []))
    return (f"{soname} not found in the build directory, $CUDA_HOME/lib64 or the nvidia-cufft wheel"
            + (f" ({failed})" if failed else ""))


def _load(name: str):
    """(module, None) or (None, why not) for ``optdiff._cuda`` / ``optdiff._cuda_emu``; cached."""
    with _lock:
        if name not in _modules:
            if name == "_cuda":
                _preload_cufft()
            try:
                _modules[name] = (importlib.import_module(f"optdiff.{name}"), None)
            except ImportError as exc:
                how = ("rebuild with OPTDIFF_CUDA=ON and the CUDA toolkit plus `pip install nvidia-cufft`"
                       if name == "_cuda" else "rebuild with OPTDIFF_CUDA_EMULATION=ON")
                extra = f"; cuFFT: {_preload_text()}" if name == "_cuda" else ""
                _modules[name] = (None, f"optdiff was built without its module {name} or it cannot be "
                                        f"loaded ({exc}){extra}; {how}")
        return _modules[name]


def gpu_present() -> str:
    """Evidence that this machine has an NVIDIA GPU ('' when none is seen), without CUDA.

    A device node (``/dev/nvidia0``, ...) or ``nvidia-smi -L`` listing a GPU. Used so that a
    broken CUDA build on a GPU machine fails the tests instead of skipping them.
    """
    nodes = sorted(glob.glob("/dev/nvidia[0-9]*"))
    if nodes:
        return "device node " + ", ".join(nodes)
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            r = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return ""
        if r.returncode == 0 and "GPU" in r.stdout:
            return "nvidia-smi -L: " + r.stdout.strip().splitlines()[0]
    return ""


def cuda_device_count() -> int:
    """Number of usable CUDA devices; 0 when the module, the driver or a device is missing. Never raises."""
    try:
        mod, _ = _load("_cuda")
        return 0 if mod is None else max(0, int(mod.device_count()))
    except Exception:
        return 0


def cuda_unavailable_reason() -> str:
    """Why :func:`cuda_device_count` is 0 (empty string when a device is usable)."""
    try:
        mod, why = _load("_cuda")
        if mod is None:
            return why
        if mod.device_count() > 0:
            return ""
        return mod.no_device_reason() or "no CUDA device found"
    except Exception as exc:  # pragma: no cover
        return str(exc)


def set_workspace_limit(nbytes: int, emulated: bool = False) -> None:
    """Scratch memory budget of one call (default 1 GiB); bigger batches are processed in chunks."""
    CudaBackend.load(emulated).mod.set_workspace_limit(int(nbytes))


def clear_plan_cache() -> None:
    """Drop the cached cuFFT plans (and their work areas) of every loaded CUDA module."""
    for mod, _ in list(_modules.values()):
        if mod is not None:
            mod.clear_plan_cache()


class CudaBackend:
    """Runs the optical core through one compiled CUDA module (real or emulated)."""

    def __init__(self, mod, name: str):
        self.mod, self.name = mod, name

    @classmethod
    def load(cls, emulated: bool = False) -> CudaBackend:
        mod, why = _load("_cuda_emu" if emulated else "_cuda")
        if mod is None:
            raise RuntimeError(why)
        if not emulated and mod.device_count() <= 0:
            raise RuntimeError(f"backend='cuda' needs a CUDA device, but {cuda_unavailable_reason()}")
        return cls(mod, "cuda-emu" if emulated else "cuda")

    def owns(self, array) -> bool:
        return not isinstance(array, np.ndarray) and (
            hasattr(array, "__cuda_array_interface__") or hasattr(array, "__dlpack__"))

    def propagator(self, n: int, hop: HopSpec) -> CudaPropagator:
        return CudaPropagator(self.mod, self, n, hop)

    def phase_stack(self, spec: StackSpec) -> CudaPhaseStack:
        return CudaPhaseStack(self.mod, self, spec)

    def _wrap(self, x, name, output=False):
        return wrap(x, name, self.mod, self, output=output)

    def device_array(self, shape, dtype, device: int = 0) -> DeviceArray:
        """Uninitialised device memory of this backend's module (``.get()`` copies it to NumPy)."""
        return DeviceArray(shape, dtype, device, self.mod, 0, self)

    # ---- sampling step --------------------------------------------------------------------

    def standard_normal(self, shape, *, seed, stream, offset, dtype, out, nthreads):
        if out is None:
            # dtype: checked by the front (optics/sampling_step.py)
            out = np.empty(shape, dtype=dtype)
        o = self._wrap(out, "out", output=True)
        float_arg(o, "out", writeable=True)
        if shape is not None and o.shape != tuple(shape):
            raise ValueError(f"out has shape {o.shape}, expected {tuple(shape)}")
        s = Session(self.mod, o, "out", self)
        fn = getattr(self.mod, "standard_normal" + SUFFIX[o.dtype])
        if s.host:
            buf = self.mod.DeviceBuffer(out.nbytes, s.device)
            fn(int(buf.ptr), o.size, seed, stream, offset, 0, s.device)
            buf.download(out, 0)
        else:
            fn(o.ptr, o.size, seed, stream, offset, s.stream, s.device)
        return out

    def ddpm_update(self, x, eps, out, coeffs, seed, stream, offset, nthreads):
        a = self._wrap(x, "x")
        float_arg(a, "x")
        s = Session(self.mod, a, "x", self)
        e = s.same_side(self._wrap(eps, "eps"), "eps")
        rules.dtype("eps", e.dtype, a.dtype)
        rules.same_shape("eps", e.shape, "x", a.shape)
        o = None
        if out is not None:
            o = s.same_side(self._wrap(out, "out", output=True), "out")
            float_arg(o, "out", writeable=True)
            rules.dtype("out", o.dtype, a.dtype)
            rules.same_shape("out", o.shape, "x", a.shape)
        fn = getattr(self.mod, "ddpm_update" + SUFFIX[a.dtype])
        if not s.host:  # device addresses as they are; the module rejects partial overlaps
            result, optr = (out, o.ptr) if o is not None else empty(a, a.shape, a.dtype, self.mod, self)
            fn(a.ptr, e.ptr, optr, a.size, *coeffs, seed, stream, offset, s.stream, s.device)
            self._check_update(s, result, optr, a, e, optr in (a.ptr, e.ptr))
            return result
        # NumPy: staged copies; out is written in place of x's or eps's copy when it is that array.
        xptr, eptr, optr = s.device_ptr(a), s.device_ptr(e), 0
        if out is not None and a.size:
            for src, ptr, name in ((x, xptr, "x"), (eps, eptr, "eps")):
                if host_address(out) == host_address(src):
                    optr = ptr
                elif np.may_share_memory(out, src):
                    raise ValueError(f"out overlaps {name} without being the same array; pass {name} itself "
                                     "for an in-place update or a separate array")
        result = out if out is not None else np.empty_like(x)
        if not optr:
            buf = self.mod.DeviceBuffer(result.nbytes, s.device)
            s.buffers.append(buf)
            optr = int(buf.ptr)
        fn(xptr, eptr, optr, a.size, *coeffs, seed, stream, offset, 0, s.device)
        s.fetch(result, optr)
        self._check_update(s, result, optr, a, e, optr in (xptr, eptr))
        return result

    @staticmethod
    def _check_update(s, result, optr, a, e, in_place: bool) -> None:
        """NaN/Inf in x or eps reaches the result: one read of it, as on the CPU."""
        if s.result_finite(result, optr, a.dtype, "out"):
            return
        if not in_place:
            s.check_finite(a, "x")
            s.check_finite(e, "eps")
        raise ValueError(rules.update_overflows(a.dtype, in_place))

    # ---- read-out binning (device helpers) ---------------------------------------------------

    def _bin_call(self, a, fn_name, batch, out_shape, n, h, w, k, name):
        if a.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"{name} must be float32 or float64, got {a.dtype}")
        s = Session(self.mod, a, name, self)
        s.check_finite(a, name)
        ptr = s.device_ptr(a)
        res, rptr = s.output(out_shape, a.dtype)
        getattr(self.mod, fn_name + SUFFIX[a.dtype])(ptr, rptr, batch, n, h, w, k, s.stream, s.device)
        if s.host:
            s.fetch(res, rptr)
        return res

    def bin_readout(self, intensity, out_shape, k: int):
        """Average ``k x k`` blocks of the centred ``(H*k) x (W*k)`` region: ``[B,N,N] -> [B,H,W]``.

        The region starts at pixel ``((N - H*k) // 2, (N - W*k) // 2)``. NumPy or device arrays
        (float32/float64), ``[B,N,N]`` or ``[N,N]``.
        """
        h, w = (int(v) for v in out_shape)
        a = self._wrap(intensity, "intensity")
        if len(a.shape) not in (2, 3) or a.shape[-1] != a.shape[-2]:
            raise ValueError(f"intensity must have shape [B, N, N] or [N, N], got {list(a.shape)}")
        batch = 1 if len(a.shape) == 2 else a.shape[0]
        return self._bin_call(a, "bin_readout", batch, tuple(a.shape[:-2]) + (h, w), a.shape[-1], h, w,
                              int(k), "intensity")

    def bin_readout_backward(self, grad_out, n: int, k: int):
        """Adjoint of :meth:`bin_readout`: ``[B,H,W] -> [B,n,n]`` (grad/k^2 inside each block, 0 outside)."""
        n = int(n)
        a = self._wrap(grad_out, "grad_out")
        if len(a.shape) not in (2, 3):
            raise ValueError(f"grad_out must have shape [B, H, W] or [H, W], got {list(a.shape)}")
        batch = 1 if len(a.shape) == 2 else a.shape[0]
        return self._bin_call(a, "bin_readout_backward", batch, tuple(a.shape[:-2]) + (n, n), n,
                              a.shape[-2], a.shape[-1], int(k), "grad_out")

    def __repr__(self) -> str:
        return f"CudaBackend({self.name!r})"
