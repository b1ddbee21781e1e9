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
    import torch as _torch  # the real PyTorch: absolute imports never find this package
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError("optdiff.torch needs PyTorch: pip install 'optdiff[torch]'") from exc
if not hasattr(_torch.library, "register_autograd"):  # custom_op, register_fake/autograd: 2.4
    raise ImportError(f"optdiff.torch needs PyTorch 2.4 or newer (torch.library.custom_op), found "
                      f"{_torch.__version__}")

from . import ops
from .functional import StackGeometry, propagate, stack_intensity, stack_mse
from .modules import OpticalStack, Propagation

__all__ = ["OpticalStack", "Propagation", "StackGeometry", "propagate", "stack_intensity", "stack_mse", "ops"]
