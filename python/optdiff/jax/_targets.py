"""Find optdiff._jax_ffi (the compiled XLA FFI handlers) and register them with JAX once.

When the module was not built (jaxlib's headers absent at build time) `ffi_available()` is False
and optdiff.jax runs the NumPy core through ``jax.pure_callback`` instead (see ``_callback``).
"""

from __future__ import annotations

import importlib
import threading

import jax

_lock = threading.Lock()
_state: dict = {}


def _load():
    with _lock:
        if "module" not in _state:
            try:
                mod = importlib.import_module("optdiff._jax_ffi")
            except ImportError as e:
                _state["module"], _state["error"] = None, str(e)
            else:
                for name, capsule in mod.registrations().items():
                    jax.ffi.register_ffi_target(name, capsule, platform="cpu")
                _state["module"], _state["error"] = mod, None
                # The module carries its own copy of the core: start it with optdiff's thread count.
                from optdiff import _core
                from optdiff.optics import get_num_threads

                mod.set_num_threads(get_num_threads())
                mod.set_planner_effort(_core.get_planner_effort())
        return _state["module"]


def ffi_available() -> bool:
    """True when optdiff._jax_ffi is built: calls go to the core through XLA's FFI, without copies."""
    return _load() is not None


def ffi_module():
    """The loaded optdiff._jax_ffi, or None."""
    return _load()


def why_not_available() -> str | None:
    """The import error of optdiff._jax_ffi, or None when it loaded."""
    _load()
    return _state["error"]
