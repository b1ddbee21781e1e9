"""The folded geometry of the reference bench, mapped onto a PhaseStack.

A mirror faces the SLM at ``z_gap``; the beam reflects off the SLM L times, each time on its own
patch, and off the mirror in between (hop ``2 z_gap``); after the last patch it reflects once more
and travels ``camera_hop`` (default ``2 z_gap``) to the plane the camera relay images. Patches sit
along x, ``patch_pitch`` pixels apart; the design beam meets the SLM at ``fold_angle`` in x, so it
walks one patch pitch per hop.

Alignment (x, y angles in radians): ``beam_angle`` is the input beam's deviation from the design
direction; a mirror tilted by ``mirror_angle`` turns the beam by twice that at every bounce
(positive angles turn the beam towards +x / +y). ``patch_offsets`` displace the shown patterns
(registration errors). A gap that differs from the design walks the beam along the fold by
``2 dz tan(fold_angle)`` per hop.

Simulation. The simulation sees the SLM and mirror as parallel planes at normal incidence, in a
frame that travels with the design beam (the oblique design angle itself is not simulated). Where
the true beam lands on each patch follows from rays (``FoldLayout.landing``); two frames put that
on the n x n grid:

* ``frame = "lattice"`` (default): at every patch the grid is the patch pattern's own pixels, so
  patterns are never resampled. The beam's walk is carried by PhaseStack tilts: the tilt of hop l
  is the angle that takes the beam from where it lands on patch l to where it lands on patch l+1,
  ``atan((landing[l+1] - landing[l]) / hop)``; a tilt and the opposite tilt one hop later are a
  pure lateral shift (to paraxial order), so offsets and gap errors are tilts too. Light that
  walks off the grid is lost (``Bench(grid=...)`` simulates a larger square of each patch).
* ``frame = "beam"``: the grid follows the actual beam; no tilts; every pattern and the camera
  are displaced by the beam's walk (a fractional displacement resamples the pattern, which blurs
  pixel-scale patterns). Keeps the light on a small grid for large misalignments.

``mirror_planes`` (lattice frame) makes the mirror a zero-phase layer of its own, so the beam
turns at the true bounce plane (2L layers, twice the cost; the reference for the default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _checks as ck

__all__ = ["FoldedPropagation", "FoldLayout"]

FRAMES = ("lattice", "beam")
ANGLE_BOUND = 0.05  # rad: beyond this the fold does not close on an 11.6 mm mirror


@dataclass(frozen=True)
class FoldLayout:
    """What a FoldedPropagation means for an n x n simulation (positions in metres, (x, y))."""

    distances: tuple          # PhaseStack hops
    tilts: np.ndarray         # [layers, 2] PhaseStack tilts
    input_shift: np.ndarray   # [2] where the relayed DMD image sits on the grid (besides DMD.offset)
    mask_shifts: np.ndarray   # [L, 2] where each patch pattern sits on the grid
    camera_shift: np.ndarray  # [2] where the camera relay's axis sits on the grid
    landing: np.ndarray       # [L+1, 2] beam centre relative to each patch centre (and the camera plane's)
    bounces: np.ndarray       # [L, 2] bounce points relative to the mirror centre
    mirror_planes: bool

    def stack_phases(self, phases: np.ndarray) -> np.ndarray:
        """Patch phases ``[L, n, n]`` -> the stack's layers (zero-phase mirror layers interleaved)."""
        if not self.mirror_planes:
            return phases
        out = np.zeros((2 * phases.shape[0],) + phases.shape[1:], dtype=phases.dtype)
        out[0::2] = phases
        return out


@dataclass(frozen=True)
class FoldedPropagation:
    """Mirror, gap, angles and patches of the folded bench (defaults: the reference bench).

    z_gap : 17.1 mm (mirror to SLM; hops of 34.2 mm). mirror_size : 11.6 mm (square).
    patch_size, patch_pitch : 260 pixels. fold_angle : None = aligned, ``atan(patch_pitch pitch /
    (2 z_gap))`` (69.8 mrad for the defaults). camera_hop : None = ``2 z_gap``.
    """

    z_gap: float = 17.1e-3
    mirror_size: float = 11.6e-3
    mirror_angle: tuple = (0.0, 0.0)
    beam_angle: tuple = (0.0, 0.0)
    patch_size: int = 260
    patch_pitch: int = 260
    patch_offsets: tuple = ()
    fold_angle: float | None = None
    camera_hop: float | None = None
    frame: str = "lattice"
    mirror_planes: bool = False

    def __post_init__(self):
        s = object.__setattr__
        s(self, "z_gap", ck.positive(self.z_gap, "FoldedPropagation.z_gap", hi=1.0))
        s(self, "mirror_size", ck.positive(self.mirror_size, "FoldedPropagation.mirror_size", hi=1.0))
        s(self, "mirror_angle", ck.pair(self.mirror_angle, "FoldedPropagation.mirror_angle", ANGLE_BOUND))
        s(self, "beam_angle", ck.pair(self.beam_angle, "FoldedPropagation.beam_angle", ANGLE_BOUND))
        s(self, "patch_size", ck.integer(self.patch_size, "FoldedPropagation.patch_size", 1, 1 << 16))
        s(self, "patch_pitch", ck.integer(self.patch_pitch, "FoldedPropagation.patch_pitch", 1, 1 << 16))
        if self.patch_pitch < self.patch_size:
            raise ValueError(f"FoldedPropagation.patch_pitch = {self.patch_pitch}: patches of "
                             f"{self.patch_size} pixels would overlap (need patch_pitch >= patch_size)")
        if isinstance(self.patch_offsets, (str, bytes)) or not hasattr(self.patch_offsets, "__len__"):
            raise ValueError(f"FoldedPropagation.patch_offsets = {self.patch_offsets!r}: must be a list "
                             "of (x, y) pairs in metres, one per patch (or empty)")
        s(self, "patch_offsets", tuple(ck.pair(p, f"FoldedPropagation.patch_offsets[{i}]", 0.01)
                                       for i, p in enumerate(self.patch_offsets)))
        if self.fold_angle is not None:
            s(self, "fold_angle", ck.real(self.fold_angle, "FoldedPropagation.fold_angle", 0.0, 0.5, hi_open=True))
        if self.camera_hop is not None:
            s(self, "camera_hop", ck.positive(self.camera_hop, "FoldedPropagation.camera_hop", hi=10.0))
        ck.choice(self.frame, "FoldedPropagation.frame", FRAMES)
        s(self, "mirror_planes", ck.flag(self.mirror_planes, "FoldedPropagation.mirror_planes"))
        if self.mirror_planes and self.frame != "lattice":
            raise ValueError("FoldedPropagation.mirror_planes: only in the lattice frame")
        if self.mirror_planes and self.hop_to_camera <= self.z_gap:
            raise ValueError(f"FoldedPropagation.camera_hop = {self.camera_hop}: with mirror_planes the "
                             f"last hop must pass the mirror (exceed z_gap = {self.z_gap})")

    @classmethod
    def ideal(cls, distance: float = 34.2e-3, camera_hop: float | None = None) -> FoldedPropagation:
        """Aligned fold with hops of ``distance`` (the ideal ODU's geometry)."""
        return cls(z_gap=distance / 2, camera_hop=camera_hop)

    @property
    def hop_to_camera(self) -> float:
        return 2 * self.z_gap if self.camera_hop is None else self.camera_hop

    def design_angle(self, pitch: float) -> float:
        if self.fold_angle is not None:
            return self.fold_angle
        return math.atan(self.patch_pitch * pitch / (2 * self.z_gap))

    def layout(self, n: int, layers: int, pitch: float, slm_resolution=None) -> FoldLayout:
        """Map the geometry onto an n x n simulation of ``layers`` patches, checking that it works."""
        L, z, zc = layers, self.z_gap, self.hop_to_camera
        name = "FoldedPropagation"
        if n > self.patch_size:
            raise ValueError(f"{name}.patch_size = {self.patch_size}: the {n} x {n} simulated "
                             "window does not fit on a patch")
        if self.patch_offsets and len(self.patch_offsets) != L:
            raise ValueError(f"{name}.patch_offsets has {len(self.patch_offsets)} pairs: need one per patch ({L})")
        offs = np.array(self.patch_offsets if self.patch_offsets else [(0.0, 0.0)] * L, dtype=np.float64)
        th0 = np.array([self.design_angle(pitch), 0.0])
        al, be = np.array(self.mirror_angle), np.array(self.beam_angle)
        second = [z] * (L - 1) + [zc - z]                     # mirror -> next plane, per hop
        centres = np.zeros((L + 1, 2))
        centres[:L, 0] = np.arange(L) * self.patch_pitch * pitch
        # the camera relay looks where the design beam leaving the last patch's centre arrives
        centres[L] = centres[L - 1] + (np.array([self.patch_pitch * pitch, 0.0]) if self.camera_hop is None
                                       else zc * np.tan(th0))
        # the true beam (rays through the centre of the first patch)
        X, bounce = np.zeros((L + 1, 2)), np.zeros((L, 2))
        for j in range(L):
            a = be + 2 * al * j
            bounce[j] = X[j] + z * np.tan(th0 + a)
            X[j + 1] = bounce[j] + second[j] * np.tan(th0 + a + 2 * al)
        landing = X - centres - np.vstack([offs, np.zeros((1, 2))])
        mirror_centre = centres[:L].mean(axis=0) + z * np.tan(th0)
        bounces = bounce - mirror_centre
        self._check(n, L, pitch, offs, landing, bounces, slm_resolution)
        # the beam on the grid, by frame: y = beam centre relative to the grid's centre
        lattice = self.frame == "lattice"
        y = landing.copy() if lattice else np.zeros((L + 1, 2))
        if not lattice:
            tilts = np.zeros((L, 2))
        elif self.mirror_planes:
            # at the mirror the grid has moved with the design beam (z tan th0) from patch l's
            ym = y[:L] + (bounce - X[:L]) - z * np.tan(th0)
            taus = np.empty((2 * L, 2))
            taus[0::2] = np.arctan((ym - y[:L]) / z)
            taus[1::2] = np.arctan((y[1:] - ym) / np.array(second)[:, None])
            tilts = np.diff(np.vstack([np.zeros((1, 2)), taus]), axis=0)
        else:
            d = np.array([2 * z] * (L - 1) + [zc])[:, None]
            tilts = np.diff(np.vstack([np.zeros((1, 2)), np.arctan(np.diff(y, axis=0) / d)]), axis=0)
        shifts = y - landing
        for a in (shifts, landing, y):   # rounding of an aligned fold (< 1 pm) is no displacement
            a[np.abs(a) < 1e-12] = 0.0
        if self.mirror_planes:
            distances = tuple(d for j in range(L) for d in (z, second[j]))
        else:
            distances = tuple([2 * z] * (L - 1) + [zc])
        tilts[np.abs(tilts) < 1e-15] = 0.0
        return FoldLayout(distances, tilts, y[0], shifts[:L], shifts[L], landing, bounces, self.mirror_planes)

    def _check(self, n, L, pitch, offs, landing, bounces, slm_resolution):
        name, half_beam = "FoldedPropagation", n * pitch / 2
        if slm_resolution is not None:
            rows, cols = slm_resolution
            c0 = cols / 2 - (L - 1) * self.patch_pitch / 2       # patch centres, SLM pixels
            for j in range(L):
                cx, cy = c0 + j * self.patch_pitch + offs[j, 0] / pitch, rows / 2 + offs[j, 1] / pitch
                h = self.patch_size / 2
                if cx - h < 0 or cx + h > cols or cy - h < 0 or cy + h > rows:
                    raise ValueError(f"{name}.patch_pitch = {self.patch_pitch}, patch_size = {self.patch_size}"
                                     f", patch_offsets: patch {j} leaves the {rows} x {cols} SLM")
        span = (L - 1) * self.patch_pitch * pitch + 2 * half_beam
        if span > self.mirror_size:
            raise ValueError(f"{name}.mirror_size = {self.mirror_size:g}: the {L} bounces of a "
                             f"{2e3 * half_beam:.2f} mm beam span {span * 1e3:.2f} mm")
        angles = f"{name}.mirror_angle = {self.mirror_angle}, beam_angle = {self.beam_angle}, z_gap = {self.z_gap:g}"
        for j, b in enumerate(bounces):
            for axis, v in zip("xy", b):
                if abs(v) + half_beam > self.mirror_size / 2:
                    raise ValueError(f"{angles}: the beam leaves the {self.mirror_size * 1e3:.1f} mm mirror "
                                     f"at bounce {j} ({axis} = {v * 1e3:+.2f} mm from its centre)")
        half_patch = self.patch_size * pitch / 2
        for j, p in enumerate(landing[:L]):
            for axis, v in zip("xy", p):
                if abs(v) > half_patch:   # light beyond a patch's edge meets phase 0 (not modelled)
                    raise ValueError(f"{angles}: the beam misses patch {j} (its centre lands {axis} = "
                                     f"{v * 1e3:+.3f} mm from the patch centre; the patch reaches "
                                     f"+-{half_patch * 1e3:.3f} mm)")
