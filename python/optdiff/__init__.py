"""optdiff: fast simulation of optical diffusion models.

The optical core (importable on its own, no training code needed)::

    import optdiff
    prop = optdiff.Propagator(300, wavelength=850e-9, pitch=9.2e-6, distance=34.2e-3)
    out = prop.forward(field)          # field: complex64 [B, 300, 300]

See ``docs/api.md`` and the README for the diffusion model, trainer and CLI.
"""

from __future__ import annotations

from . import _core
from .propagation import METHODS, PhaseStack, Propagator, Tape, propagate
from .sampler_ops import ddpm_update, standard_normal

__version__ = "0.1.0"

__all__ = [
    "Propagator", "PhaseStack", "Tape", "propagate", "METHODS", "standard_normal", "ddpm_update",
    "set_num_threads", "get_num_threads", "set_planner_effort", "available_backends",
    "__version__",
]


def set_num_threads(n: int) -> None:
    """Default number of threads for every optdiff call (each call also takes ``nthreads=``)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of threads must be a positive integer, got {n!r}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """Current default number of threads (OpenMP's default until set)."""
    return _core.get_num_threads()


def set_planner_effort(effort: str) -> None:
    """FFTW planning effort for new plans: "estimate", "measure" (default) or "patient"."""
    levels = {"estimate": 0, "measure": 1, "patient": 2}
    if effort not in levels:
        raise ValueError(f"effort must be one of {tuple(levels)}, got {effort!r}")
    _core.set_planner_effort(levels[effort])


def available_backends() -> list[str]:
    """Backends usable now: "cpu" always; "cuda" only with the module built and a device present."""
    backends = ["cpu"]
    try:
        from .cuda_backend import cuda_device_count
    except ImportError:
        return backends
    if cuda_device_count() > 0:
        backends.append("cuda")
    return backends
