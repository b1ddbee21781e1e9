"""optdiff: fast simulation of optical diffusion models.

The optical core (importable on its own, no training code needed)::

    import optdiff
    prop = optdiff.Propagator(300, wavelength=850e-9, pitch=9.2e-6, distance=34.2e-3)
    out = prop.forward(field)          # field: complex64 [B, 300, 300]

Subpackages (imported on first use): ``optdiff.optics`` (the core and its backends),
``optdiff.odu`` (the optical denoising unit), ``optdiff.diffusion`` (schedule, model, samplers,
trainer, checkpoints), ``optdiff.data``, ``optdiff.evaluation``; ``optdiff.config``,
``optdiff.cli`` and ``optdiff.plots`` are the application around them. See ``docs/architecture.md``.
"""

from __future__ import annotations

import importlib

from ._version import __version__
from .optics import (
    BACKENDS,
    METHODS,
    PhaseStack,
    Propagator,
    Tape,
    available_backends,
    ddpm_update,
    get_backend,
    get_num_threads,
    propagate,
    set_num_threads,
    set_planner_effort,
    standard_normal,
)

__all__ = [
    "Propagator", "PhaseStack", "Tape", "propagate", "METHODS", "standard_normal", "ddpm_update",
    "set_num_threads", "get_num_threads", "set_planner_effort", "available_backends", "get_backend",
    "BACKENDS", "__version__",
]

_SUBPACKAGES = ("optics", "odu", "diffusion", "data", "evaluation", "config", "cli", "plots")


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'optdiff' has no attribute {name!r}")
