"""Backends: the objects that run the optical core, chosen once when a propagator or stack is made.

Every backend has the same methods::

    name                                  "cpu", "cuda" or "cuda-emu"
    owns(array) -> bool                   is this one of the arrays it works on?
    propagator(n, hop) -> impl            impl.apply(field, out, nthreads, adjoint), transfer_function(dtype)
    phase_stack(spec) -> impl             forward, camera_field, forward_train, backward, mse_loss_and_grad
    standard_normal(shape, ...)           counter-based noise
    ddpm_update(x, eps, out, coeffs, ...) read-out, update and noise in one pass

``"cuda"`` runs on a GPU through ``optdiff._cuda``; ``"cuda-emu"`` runs the same CUDA host code
and kernel bodies compiled for the CPU (``optdiff._cuda_emu``, built with
``OPTDIFF_CUDA_EMULATION=ON``): it exists to test the CUDA backend without a GPU.
"""

from __future__ import annotations

import threading

from .cpu import CpuBackend

__all__ = ["get_backend", "available_backends", "backend_for", "BACKENDS"]

BACKENDS = ("cpu", "cuda", "cuda-emu")

_lock = threading.Lock()
_made: dict = {}


def get_backend(backend="cpu"):
    """The backend object for a name in :data:`BACKENDS` (or a backend object, returned as is)."""
    if not isinstance(backend, str):
        if all(hasattr(backend, m) for m in ("name", "propagator", "phase_stack", "ddpm_update")):
            return backend
        raise TypeError(f"backend must be one of {BACKENDS} or a backend object, got {backend!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    with _lock:
        obj = _made.get(backend)
        if obj is None:
            if backend == "cpu":
                obj = CpuBackend()
            else:
                from .cuda import CudaBackend

                obj = CudaBackend.load(emulated=backend == "cuda-emu")  # raises if unusable
            _made[backend] = obj
        return obj


def available_backends() -> list[str]:
    """Backends usable now: "cpu" always; "cuda" only with the module built and a device present."""
    backends = ["cpu"]
    from .cuda import cuda_device_count

    if cuda_device_count() > 0:
        backends.append("cuda")
    return backends


def backend_for(*arrays):
    """The backend that owns these arrays: NumPy on the CPU, device arrays on CUDA."""
    import numpy as np

    if all(a is None or isinstance(a, np.ndarray) for a in arrays):
        return get_backend("cpu")
    for a in arrays:
        backend = getattr(a, "_optdiff_backend", None)  # DeviceArray knows its module
        if backend is not None:
            return backend
    return get_backend("cuda")
