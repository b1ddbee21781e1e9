"""The phase-only SLM: 8-bit levels through a lookup table, quantisation, pixel cross-talk, and the
sampling of each shown patch where the beam actually crosses it.

Levels and phases. The driver takes levels 0 .. 2^bits - 1. The *nominal* LUT (what the lab
believes) is linear over one wave, ``phi = 2 pi l / 2^bits``; phases in radians are wrapped to
[0, 2 pi) and rounded to the nearest nominal level (error at most pi / 2^bits). The *true* LUT
(what the liquid crystal does) is ``phase_scale * 2 pi g(l / 2^bits)`` with
``g(u) = u + lut_curvature u (1 - u)``: monotone for ``|lut_curvature| < 1``, a miscalibrated
phase range through ``phase_scale``; or an explicit table ``lut``.

Cross-talk. The fringing field between neighbouring pixels smooths the shown phase: the phase
profile is the pixel pattern convolved with a Gaussian of std ``crosstalk`` pixels (the unwrapped
shown phase, so a 2 pi wrap turns into a fly-back region, as on a real LCoS), taken at the pixel
centres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _checks as ck
from . import resample

__all__ = ["SLM", "SLMGrid"]

TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class SLM:
    """Phase-only reflective SLM.

    pitch : 9.2 um (the reference bench; Meadowlark's 1920 x 1152 LCoS has this pitch).
    resolution : (rows, cols) = (1152, 1920), the panel the patches must fit on.
    bits : 8 (levels 0 .. 255).
    phase_scale : true phase range / nominal (1 = calibrated).
    lut_curvature : nonlinearity of the true LUT, in (-1, 1) (0 = linear).
    lut : None, or the true phase (radians) of every level, non-decreasing (overrides the curve).
    quantise : phases in radians are shown as the nearest nominal level (off: shown exactly).
    crosstalk : Gaussian std of the fringing-field blur, in pixels. 0.15 px = 1.4 um: a phase step
        then rises over 2.56 sigma = 3.5 um (10-90%), about the thickness of the liquid crystal a
        reflective 2 pi cell needs at 850 nm (lambda / (2 dn) ~ 2-3 um), the scale over which the
        fringing field bends the director (the model of Persson et al., Opt. Express 2012, and
        Moser et al., Opt. Express 2019). An assumed magnitude: the reference SLM's value is not
        published, and the light lost at phase wraps grows steeply with it (docs/hardware.md).
    """

    pitch: float = 9.2e-6
    resolution: tuple = (1152, 1920)
    bits: int = 8
    phase_scale: float = 1.0
    lut_curvature: float = 0.0
    lut: tuple | None = None
    quantise: bool = True
    crosstalk: float = 0.15

    def __post_init__(self):
        s = object.__setattr__
        s(self, "pitch", ck.positive(self.pitch, "SLM.pitch", hi=1e-3))
        s(self, "resolution", ck.int_pair(self.resolution, "SLM.resolution", 1, 1 << 16))
        s(self, "bits", ck.integer(self.bits, "SLM.bits", 1, 16))
        s(self, "phase_scale", ck.positive(self.phase_scale, "SLM.phase_scale", hi=10.0))
        s(self, "lut_curvature", ck.real(self.lut_curvature, "SLM.lut_curvature", -1.0, 1.0, True, True))
        s(self, "quantise", ck.flag(self.quantise, "SLM.quantise"))
        s(self, "crosstalk", ck.real(self.crosstalk, "SLM.crosstalk", 0.0, 10.0))
        if self.lut is not None:
            try:
                t = np.asarray(self.lut, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise ValueError(f"SLM.lut: must be a list of {self.levels} phases in radians") from None
            if t.size != self.levels:
                raise ValueError(f"SLM.lut has {t.size} entries: need one phase per level ({self.levels})")
            if not np.all(np.isfinite(t)):
                raise ValueError("SLM.lut: every phase must be finite")
            if np.any(np.diff(t) < 0):
                raise ValueError("SLM.lut: must be non-decreasing (a liquid crystal's phase grows with the level)")
            s(self, "lut", tuple(t.tolist()))

    @classmethod
    def ideal(cls, pitch: float = 9.2e-6) -> SLM:
        """Shows any phase exactly: no quantisation, calibrated LUT, no cross-talk."""
        return cls(pitch=pitch, quantise=False, crosstalk=0.0)

    @property
    def levels(self) -> int:
        return 1 << self.bits

    @property
    def level_dtype(self):
        return np.uint8 if self.bits <= 8 else np.uint16

    @property
    def is_ideal(self) -> bool:
        return (not self.quantise and self.crosstalk == 0 and self.phase_scale == 1
                and self.lut_curvature == 0 and self.lut is None)

    def nominal_phase(self, levels) -> np.ndarray:
        """What the lab's LUT says a level shows: ``2 pi l / 2^bits`` (float64)."""
        return TWO_PI * np.asarray(levels, dtype=np.float64) / self.levels

    def levels_of_phase(self, phases) -> np.ndarray:
        """Nearest nominal level of phases in radians (wrapped), as the level dtype."""
        u = np.mod(np.asarray(phases, dtype=np.float64), TWO_PI) / TWO_PI
        return (np.rint(u * self.levels).astype(np.int64) % self.levels).astype(self.level_dtype)

    def response(self, u) -> np.ndarray:
        """True phase of a drive ``u = level / 2^bits`` in [0, 1) (continuous form of the true LUT)."""
        u = np.asarray(u, dtype=np.float64)
        return self.phase_scale * TWO_PI * (u + self.lut_curvature * u * (1.0 - u))

    def true_lut(self) -> np.ndarray:
        """True phase of every level (float64 ``[2^bits]``)."""
        if self.lut is not None:
            return np.asarray(self.lut, dtype=np.float64)
        return self.response(np.arange(self.levels) / self.levels)

    def shown_phase(self, slm: np.ndarray) -> np.ndarray:
        """True phase profile (float64, pixels of the pattern) of levels (integers) or phases (floats)."""
        if np.issubdtype(slm.dtype, np.integer):
            return self.true_lut()[slm.astype(np.int64)]
        if self.quantise:
            return self.true_lut()[self.levels_of_phase(slm).astype(np.int64)]
        if self.lut is not None:  # an explicit table without quantisation: interpolate it
            u = np.mod(slm.astype(np.float64), TWO_PI) / TWO_PI * self.levels
            return np.interp(u, np.arange(self.levels), self.true_lut(), period=None)
        return self.response(np.mod(slm.astype(np.float64), TWO_PI) / TWO_PI)

    def on_grid(self, n: int, shifts_px) -> SLMGrid:
        """The SLM bound to an n x n simulation with one (x, y) pattern displacement (pixels) per layer."""
        return SLMGrid(self, n, shifts_px)


class SLMGrid:
    """Patterns ``[L, n, n]`` (levels or radians) -> the phases ``[L, n, n]`` (float32) the beam meets.

    The shown phase is blurred by the cross-talk at the pixel centres. A pattern displaced by a
    fraction of a pixel relative to the beam's frame is seen by each simulation pixel as the mean
    of the transmissions ``exp(i phi)`` of the SLM pixels it overlaps (area weights; outside the
    pattern the SLM shows level 0); the simulation keeps that mean's phase (a phase-only layer:
    the small loss of amplitude where neighbours differ is dropped). Smooth patterns (lenses) thus
    move by the exact fraction, not by a rounded pixel. Weights are built once.
    """

    def __init__(self, slm: SLM, n: int, shifts_px):
        self.slm = slm
        self.shifts = np.asarray(shifts_px, dtype=np.float64).reshape(-1, 2)
        self.kernel = resample.blur_kernel(slm.crosstalk)
        self.moves = [(resample.shift_matrix(n, float(y)), resample.shift_matrix(n, float(x)))
                      for x, y in self.shifts]
        self.passthrough = slm.is_ideal and not np.any(self.shifts)

    def phases(self, slm: np.ndarray) -> np.ndarray:
        if self.passthrough and not np.issubdtype(slm.dtype, np.integer):
            return np.ascontiguousarray(slm, dtype=np.float32)
        shown = resample.blur(self.slm.shown_phase(slm), self.kernel)
        out = np.empty(shown.shape, dtype=np.float32)
        outside = np.exp(1j * self.slm.true_lut()[0])     # what the SLM shows beyond the pattern
        for layer, (wy, wx) in enumerate(self.moves):
            if wy is None and wx is None:
                out[layer] = shown[layer]
                continue
            t = resample.apply(np.exp(1j * shown[layer]), wy, wx)
            cy = np.ones(t.shape[0]) if wy is None else wy.sum(axis=1)
            cx = np.ones(t.shape[1]) if wx is None else wx.sum(axis=1)
            t += (1.0 - np.outer(cy, cx)) * outside
            out[layer] = np.angle(t)
        return out
