"""optdiff from PyTorch: the propagator and the phase stack as differentiable, compilable operators.

    import optdiff.torch as odt
    stack = odt.OpticalStack(128, wavelength=850e-9, pitch=9.2e-6, distances=[20e-3] * 4)
    intensity = stack(field)                       # autograd, torch.compile, any optimiser

CPU tensors reach the C++ core as NumPy views (no copies); CUDA tensors go to the CUDA backend
on torch's current stream. float32/complex64 and float64/complex128. See docs/interop.md.
Needs the optional extra ``[torch]``.
"""

from __future__ import annotations

try:
    import torch as _torch  # noqa: F401  (the real PyTorch: absolute imports skip this package)
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError("optdiff.torch needs PyTorch: pip install 'optdiff[torch]'") from exc

from . import ops
from .functional import StackGeometry, propagate, stack_intensity
from .modules import OpticalStack, Propagation

__all__ = ["OpticalStack", "Propagation", "StackGeometry", "propagate", "stack_intensity", "ops"]
