"""What a hop and a stack are, as plain data: built once, handed to whichever backend runs them.

Only Python types are checked here (see ``_args``); the values are validated by the compiled
core, in one function that every backend calls, so every mistake has one message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import _args

METHODS = ("as", "bl-as", "fresnel")


@dataclass(frozen=True)
class HopSpec:
    """One free-space hop: SI units (metres, radians)."""

    wavelength: float
    pitch: float
    distance: float
    method: str = "as"
    padding: int = 2
    tilt: tuple[float, float] = (0.0, 0.0)

    def as_tuple(self) -> tuple:
        """The form both compiled modules take: (wavelength, pitch, distance, method, padding, tx, ty)."""
        return (self.wavelength, self.pitch, self.distance, self.method, self.padding, *self.tilt)


@dataclass(frozen=True)
class StackSpec:
    """n x n grid, one hop after each of the L masks, optional hop from the input to mask 0."""

    n: int
    hops: tuple[HopSpec, ...]
    input_hop: HopSpec | None = None

    @property
    def num_layers(self) -> int:
        return len(self.hops)


@dataclass(frozen=True)
class StackParamGrads:
    """Gradients of a loss with respect to a stack's physical parameters (float64, batch-summed).

    ``distances [L]`` (hop l's distance, metres), ``tilts [L, 2]`` (hop l's (x, y) tilt, rad),
    ``input_distance`` (float; None when the stack has no input hop), ``input_tilt [2]`` (the
    input tilt; also without an input hop: the derivative at tilt 0).
    """

    distances: np.ndarray
    tilts: np.ndarray
    input_distance: float | None
    input_tilt: np.ndarray


def _method(method) -> str:
    if not isinstance(method, str):
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method


def _padding(padding) -> int:
    return _args.integer(padding, "padding")


def hop_spec(*, wavelength, pitch, distance, method="as", padding=2, tilt=(0.0, 0.0),
             tilt_name: str = "tilt", distance_name: str = "distance") -> HopSpec:
    return HopSpec(_args.real(wavelength, "wavelength"), _args.real(pitch, "pitch"),
                   _args.real(distance, distance_name), _method(method), _padding(padding),
                   _args.pair(tilt, tilt_name))


def stack_spec(n, *, wavelength, pitch, distances: Sequence[float], method="as", padding=2, tilts=None,
               input_distance=None, input_tilt=(0.0, 0.0)) -> StackSpec:
    n = _args.grid_size(n)
    if isinstance(distances, (str, bytes)) or not hasattr(distances, "__len__"):
        raise ValueError(f"distances must be a sequence of L hop lengths in metres, got {distances!r}")
    flat = np.asarray(distances, dtype=object)
    if flat.ndim != 1:
        raise ValueError(f"distances must be a flat sequence of L hop lengths in metres, got shape {flat.shape}")
    dist = [_args.real(d, f"distances[{i}]") for i, d in enumerate(flat.tolist())]
    L = len(dist)
    if tilts is None or L == 0:  # no layers: the core's error says so, whatever the tilts
        tilt_list = [(0.0, 0.0)] * L
    else:
        arr = np.asarray(tilts, dtype=object)
        if arr.shape != (L, 2):
            raise ValueError(f"tilts must have shape (L, 2) = ({L}, 2), got {arr.shape}")
        tilt_list = [tuple(row) for row in arr.tolist()]
    common = dict(wavelength=wavelength, pitch=pitch, method=method, padding=padding)
    hops = tuple(hop_spec(distance=d, tilt=t, tilt_name=f"tilts[{i}]", distance_name=f"distances[{i}]",
                          **common) for i, (d, t) in enumerate(zip(dist, tilt_list)))
    if input_distance is None:
        # No hop to apply an input tilt to would silently drop it: a bare tilt is a hop of length 0.
        tilt = _args.pair(input_tilt, "input_tilt")
        inp = None if tilt == (0.0, 0.0) else hop_spec(distance=0.0, tilt=tilt, tilt_name="input_tilt", **common)
    else:
        inp = hop_spec(distance=input_distance, tilt=input_tilt, tilt_name="input_tilt",
                       distance_name="input_distance", **common)
    return StackSpec(n, hops, inp)
