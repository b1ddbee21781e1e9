"""``nn.Module``s over the optical core: a phase stack with trainable masks, and one hop.

    stack = OpticalStack(128, wavelength=850e-9, pitch=9.2e-6, distances=[20e-3] * 4,
                         input_distance=20e-3)
    intensity = stack(field)          # field [..., 128, 128] -> intensity [..., 128, 128]
    loss = my_loss(intensity); loss.backward(); optimiser.step()

The masks are the parameter ``phases`` ``[L, n, n]`` (float32 by default; ``.double()`` gives
float64 masks for complex128 fields). ``.to("cuda")`` moves them to the GPU, where the CUDA
backend runs the stack on torch's current stream.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..optics.specs import hop_spec
from . import functional as F
from . import ops

__all__ = ["OpticalStack", "Propagation"]


class OpticalStack(nn.Module):
    """L phase masks with free-space hops, then a camera (|E|^2); see :class:`optdiff.PhaseStack`.

    Parameters are those of :class:`optdiff.PhaseStack` (``n, wavelength, pitch, distances,
    method, padding, tilts, input_distance, input_tilt``) plus ``dtype`` (float32 or float64
    masks), ``device``, ``init`` (``"zeros"``, ``"uniform"``: uniform in [0, 2 pi) drawn with
    ``generator``, or a tensor ``[L, n, n]``) and ``recompute`` (keep no tape; backward reruns
    the forward pass). The physics is checked here, by the core's messages.
    """

    def __init__(self, n: int, *, wavelength: float, pitch: float, distances: Sequence[float], method: str = "as",
                 padding: int = 2, tilts=None, input_distance: float | None = None, input_tilt=(0.0, 0.0),
                 dtype: torch.dtype = torch.float32, device=None, init="zeros", recompute: bool = False,
                 generator: torch.Generator | None = None):
        super().__init__()
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64 (the masks' precision), got {dtype}")
        self.geometry = F.StackGeometry.make(n, wavelength=wavelength, pitch=pitch, distances=distances,
                                             method=method, padding=padding, tilts=tilts,
                                             input_distance=input_distance, input_tilt=input_tilt)
        self.geometry.validate()
        self.recompute = bool(recompute)
        shape = (self.geometry.num_layers, self.geometry.n, self.geometry.n)
        if isinstance(init, torch.Tensor):
            if tuple(init.shape) != shape:
                raise ValueError(f"init must have shape {shape}, got {tuple(init.shape)}")
            data = init.detach().to(dtype=dtype, device=device).clone()
        elif init == "zeros":
            data = torch.zeros(shape, dtype=dtype, device=device)
        elif init == "uniform":
            data = torch.rand(shape, dtype=dtype, generator=generator).to(device) * (2 * torch.pi)
        else:
            raise ValueError(f"init must be 'zeros', 'uniform' or a tensor of shape {shape}, got {init!r}")
        self.phases = nn.Parameter(data)

    n = property(lambda self: self.geometry.n)
    num_layers = property(lambda self: self.geometry.num_layers)

    def forward(self, field: torch.Tensor) -> torch.Tensor:
        """Camera intensity ``[..., n, n]`` for ``field`` ``[..., n, n]`` (complex, or real amplitudes)."""
        return F.stack_intensity(field, self.phases, self.geometry, recompute=self.recompute)

    def mse_loss(self, field: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``mean((self(field) - target)^2)`` by the core's fused step (no tape; gradient for the
        phases only: ``field`` and ``target`` must not require grad). See :func:`stack_mse`."""
        return F.stack_mse(field, self.phases, target, self.geometry)

    def extra_repr(self) -> str:
        g = self.geometry
        return (f"n={g.n}, layers={g.num_layers}, wavelength={g.wavelength:g}, pitch={g.pitch:g}, "
                f"distances={g.distances}, method={g.method!r}, padding={g.padding}, "
                f"input_distance={g.input_distance}")


class Propagation(nn.Module):
    """One free-space hop (no parameters): ``forward(field)``, and ``adjoint(field)`` = A^H."""

    def __init__(self, n: int, *, wavelength: float, pitch: float, distance: float, method: str = "as",
                 padding: int = 2, tilt=(0.0, 0.0)):
        super().__init__()
        self.n = int(n)
        self.hop = hop_spec(wavelength=wavelength, pitch=pitch, distance=distance, method=method,
                            padding=padding, tilt=tilt)
        ops._propagator(torch.device("cpu"), self.n, self.hop.wavelength, self.hop.pitch, self.hop.distance,
                        self.hop.method, self.hop.padding, list(self.hop.tilt))  # the core checks the physics

    def _run(self, field, adjoint: bool):
        if isinstance(field, torch.Tensor) and field.dim() >= 2 and field.shape[-1] != self.n:
            raise ValueError(f"field must end in ({self.n}, {self.n}) to match the propagation's n, "
                             f"got shape {tuple(field.shape)}")
        h = self.hop
        return F.propagate(field, wavelength=h.wavelength, pitch=h.pitch, distance=h.distance, method=h.method,
                           padding=h.padding, tilt=h.tilt, adjoint=adjoint)

    def forward(self, field: torch.Tensor) -> torch.Tensor:
        return self._run(field, False)

    def adjoint(self, field: torch.Tensor) -> torch.Tensor:
        return self._run(field, True)

    def extra_repr(self) -> str:
        h = self.hop
        return (f"n={self.n}, wavelength={h.wavelength:g}, pitch={h.pitch:g}, distance={h.distance:g}, "
                f"method={h.method!r}, padding={h.padding}, tilt={h.tilt}")
