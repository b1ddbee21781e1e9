"""Type stubs for the compiled CPU core ``optdiff._core`` (C++, FFTW3, OpenMP).

Prefer the wrappers in :mod:`optdiff.propagation`; these classes take
pre-allocated outputs and never allocate or copy. Arrays must be
C-contiguous with the exact dtype (complex64/float32 for the ``32`` classes,
complex128/float64 for the ``64`` classes); violations raise TypeError or
ValueError naming the argument.
"""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

has_openmp: bool

def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def set_planner_effort(effort: int) -> None:
    """0 estimate, 1 measure (default), 2 patient."""

def get_planner_effort() -> int: ...
def _set_periodic_path(path: int) -> None:
    """Testing hook: 0 auto, 1 FFTW 2-D (resident), 2 blocked, for padding-1 plans made from now on."""

def _get_periodic_path() -> int: ...

# One free-space hop, the same plain tuple for optdiff._core and optdiff._cuda:
# (wavelength [m], pitch [m], distance [m], method 'as' | 'bl-as' | 'fresnel',
#  padding 1 | 2, tilt_x [rad], tilt_y [rad]). Checked by the C++ planner:
# a bad value raises ValueError naming it.
Hop = tuple[float, float, float, str, int, float, float]

class _PropagatorBase:
    def __init__(self, n: int, hop: Hop) -> None: ...
    @property
    def n(self) -> int: ...
    @property
    def spec(self) -> Hop: ...
    def forward(self, field: npt.NDArray[np.complexfloating], out: npt.NDArray[np.complexfloating],
                nthreads: int = 0) -> None:
        """out[B,n,n] = P(tilt * field[B,n,n]); out may be field (in place)."""
    def adjoint(self, field: npt.NDArray[np.complexfloating], out: npt.NDArray[np.complexfloating],
                nthreads: int = 0) -> None:
        """out = conj(tilt) * P^H(field)."""
    def transfer_function(self) -> npt.NDArray[np.complexfloating]:
        """[n*padding, n*padding] in FFT order, unnormalised."""

class Propagator32(_PropagatorBase): ...
class Propagator64(_PropagatorBase): ...

class _PhaseStackBase:
    def __init__(self, n: int, hops: Sequence[Hop], input_hop: Hop | None = None) -> None: ...
    @property
    def n(self) -> int: ...
    @property
    def num_layers(self) -> int: ...
    def forward(self, field: npt.NDArray[np.complexfloating] | npt.NDArray[np.floating],
                phases: npt.NDArray[np.floating],
                intensity: npt.NDArray[np.floating],
                saved: npt.NDArray[np.complexfloating] | None = None,
                camera_field: npt.NDArray[np.complexfloating] | None = None,
                nthreads: int = 0,
                modulation: npt.NDArray[np.complexfloating] | None = None) -> None:
        """intensity[B,n,n] = |E_L|^2 (a real field is read with zero imaginary part);
        saved[B,L+1,n,n] receives the tape when given;
        modulation[L,n,n] receives exp(i phi) * tilt for backward."""
    def backward(self, field: npt.NDArray[np.complexfloating], phases: npt.NDArray[np.floating],
                 saved: npt.NDArray[np.complexfloating] | None,
                 grad_intensity: npt.NDArray[np.floating], grad_phases: npt.NDArray[np.floating],
                 grad_field: npt.NDArray[np.complexfloating] | None = None,
                 nthreads: int = 0,
                 modulation: npt.NDArray[np.complexfloating] | None = None,
                 grad_distances: npt.NDArray[np.float64] | None = None,
                 grad_tilts: npt.NDArray[np.float64] | None = None) -> None:
        """grad_phases[L,n,n] (batch sum) and grad_field[B,n,n]; saved=None recomputes.
        grad_distances[L+1] and grad_tilts[L+1,2] (float64, the input hop's last) receive the
        parameter gradients when given."""
    def mse_loss_and_grad(self, field: npt.NDArray[np.complexfloating], phases: npt.NDArray[np.floating],
                          target: npt.NDArray[np.floating], grad_phases: npt.NDArray[np.floating],
                          intensity: npt.NDArray[np.floating] | None = None,
                          nthreads: int = 0) -> float:
        """loss = mean((|E_L|^2 - target)^2); writes grad_phases[L,n,n] and, when given, intensity."""

class PhaseStack32(_PhaseStackBase): ...
class PhaseStack64(_PhaseStackBase): ...

def standard_normal(out: npt.NDArray[np.floating], seed: int, stream: int, offset: int,
                    nthreads: int = 0) -> None:
    """out[i] = normal number offset + i of the counter-based stream (seed, stream)."""
def ddpm_update(x: npt.NDArray[np.floating], eps: npt.NDArray[np.floating], out: npt.NDArray[np.floating],
                c1: float, c2: float, sigma: float, eps_scale: float, eps_offset: float,
                seed: int, stream: int, offset: int, nthreads: int = 0) -> None:
    """out = c1 (x - c2 (eps_scale eps + eps_offset)) + sigma z, z from (seed, stream, offset)."""
