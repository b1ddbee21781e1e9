"""The bench model: input images and SLM patterns -> camera frames, through the DMD and its relay,
the folded phase stack on the SLM, and the camera.

    images [B, H, W] --DMD, 4f relay--> field [B, n, n] on patch 0 (real amplitude)
    slm [L, n, n] ----SLM LUT, quantisation, cross-talk, patch positions--> phases [L, n, n]
    field, phases ----FoldedPropagation: PhaseStack (hops 2 z_gap, tilts)--> intensity [B, n, n]
    intensity --------relay, camera pixels, photometry, noise, ADC--> frames [B, rows, cols]

The simulation grid is the ideal ODU's: n x n SLM pixels, the image centred on it with k x k
SLM pixels per image pixel. With :meth:`Bench.ideal` every imperfection is off and the bench
computes what :class:`optdiff.odu.ODU` does (same intensity to float32 precision).
"""

from __future__ import annotations

import numpy as np

from ..config import OpticsConfig
from ..optics import PhaseStack
from . import protocol
from .config import BenchConfig

__all__ = ["Bench"]


class Bench:
    """A bench built from a :class:`BenchConfig` for the ODU geometry ``optics`` and ``image_size``.

    Satisfies :class:`~optdiff.hardware.protocol.CaptureDevice`. The camera noise comes from a
    NumPy generator seeded with ``seed`` (default ``config.seed``): the same seed and the same
    calls give the same frames. ``grid`` (default n): simulate a larger square of each patch than
    the n x n patterns (shown in its middle, level 0 around them), so light that walks past the
    patterns is kept instead of lost at the grid's edge; ``grid - n`` even, at most the patch size.
    """

    def __init__(self, optics: OpticsConfig, image_size: int, config: BenchConfig | None = None, *,
                 seed: int | None = None, grid: int | None = None, nthreads: int | None = None,
                 backend: str = "cpu"):
        optics.validate(image_size)
        if optics.encoding != "amplitude":
            raise ValueError(f"optics.encoding = {optics.encoding!r}: the bench's DMD shows amplitudes "
                             "only (use 'amplitude')")
        if optics.input_distance != 0:
            raise ValueError(f"optics.input_distance = {optics.input_distance!r}: the bench relays the DMD "
                             "onto the first SLM patch (no input hop); use 0")
        cfg = BenchConfig() if config is None else config
        if not isinstance(cfg, BenchConfig):
            raise TypeError(f"config must be a BenchConfig, got {type(cfg).__name__}")
        if abs(cfg.slm.pitch - optics.pitch) > 1e-9 * optics.pitch:
            raise ValueError(f"SLM.pitch = {cfg.slm.pitch:g} differs from optics.pitch = {optics.pitch:g}: "
                             "the simulation grid is the SLM's")
        self.optics, self.config = optics, cfg
        self.n, self.L, self.H = optics.n, optics.layers, int(image_size)
        g = self.n if grid is None else grid
        if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < self.n or (g - self.n) % 2 \
                or g > max(cfg.fold.patch_size, self.n):
            raise ValueError(f"grid = {grid!r}: must be an integer from n = {self.n} to the patch size "
                             f"({cfg.fold.patch_size}) with grid - n even")
        self.grid, self._pad = int(g), (int(g) - self.n) // 2
        self.k = optics.pixels_per_image_pixel(image_size)
        self.nthreads = nthreads
        pitch, lam = optics.pitch, optics.wavelength
        self.layout = cfg.fold.layout(self.n, self.L, pitch, cfg.slm.resolution)
        self.dmd = cfg.dmd.relay(self.grid, self.k, (self.H, self.H), pitch, lam, shift=self.layout.input_shift)
        tilts = self.layout.tilts if np.any(self.layout.tilts) else None
        self.stack = PhaseStack(self.grid, wavelength=lam, pitch=pitch, distances=self.layout.distances,
                                tilts=tilts, method=optics.method, padding=optics.padding, backend=backend)
        self.shifts_px = self.layout.mask_shifts / pitch
        self.slm = cfg.slm.on_grid(self.grid, self.shifts_px)
        area = (cfg.fold.patch_size * pitch) ** 2   # the laser fills one patch at full amplitude
        self.readout = cfg.camera.readout(self.grid, pitch, lam, area, shift=self.layout.camera_shift)
        self.rng = np.random.default_rng(cfg.seed if seed is None else seed)

    @classmethod
    def ideal(cls, optics: OpticsConfig, image_size: int, **kw) -> Bench:
        """Every imperfection off (see :meth:`BenchConfig.ideal`): frames = the ODU's camera intensity."""
        return cls(optics, image_size, BenchConfig.ideal(optics), **kw)

    # ------------------------------------------------------------------ CaptureDevice
    image_shape = property(lambda self: (self.H, self.H))
    phase_shape = property(lambda self: (self.L, self.n, self.n))
    frame_shape = property(lambda self: self.config.camera.roi)
    bit_depth = property(lambda self: self.config.camera.bits)
    dmd_bits = property(lambda self: self.config.dmd.bits)
    slm_bits = property(lambda self: self.config.slm.bits)

    def capture(self, images, slm, *, exposure=None) -> np.ndarray:
        """Frames ``[B, rows, cols]`` (camera DN; float32 for an ideal camera) for one exposure each."""
        I = self.intensity(images, slm)
        return self.readout.frames(I, self.rng, protocol.check_exposure(exposure))

    # ------------------------------------------------------------------ the stages
    def amplitudes(self, images) -> np.ndarray:
        """What the DMD is asked to show: amplitudes (float64, the ODU's encoding) or grey levels."""
        r = protocol.check_images(images, self.image_shape, self.dmd_bits)
        if np.issubdtype(r.dtype, np.integer):
            return r
        o = self.optics
        return np.clip(o.amp_bias + o.amp_scale * r.astype(np.float64), 0.0, 1.0)

    def input_field(self, images) -> np.ndarray:
        """Real field ``[B, grid, grid]`` (float32) on the first SLM patch."""
        return self.dmd.field(self.amplitudes(images))

    def phases(self, slm) -> np.ndarray:
        """The stack's phase layers ``[L, grid, grid]`` (float32) for patterns ``[L, n, n]`` (radians or levels)."""
        s = protocol.check_slm(slm, self.phase_shape, self.slm_bits)
        if self._pad:   # the patterns in the middle of the simulated square, level 0 around them
            s = np.pad(s, ((0, 0), (self._pad, self._pad), (self._pad, self._pad)))
        return self.layout.stack_phases(self.slm.phases(s))

    def intensity(self, images, slm) -> np.ndarray:
        """Intensity ``[B, grid, grid]`` (float32) on the plane the camera relay images, on the grid."""
        return self.stack.forward(self.input_field(images), self.phases(slm), nthreads=self.nthreads)

    def mean_frames(self, images, slm, exposure=None) -> np.ndarray:
        """Expected frames (float64 DN): no noise, no rounding; saturation and range applied."""
        return self.readout.mean_frames(self.intensity(images, slm), protocol.check_exposure(exposure))

    def describe(self) -> dict:
        """Geometry as numbers (mm, pixels): hops, tilts, patch displacements, beam landing points."""
        lay = self.layout
        return {"n": self.n, "grid": self.grid, "layers": self.L, "k": self.k, "image_size": self.H,
                "distances_mm": [d * 1e3 for d in lay.distances],
                "tilts_mrad": (lay.tilts * 1e3).tolist(),
                "mask_shifts_px": self.shifts_px.tolist(),
                "camera_shift_mm": (lay.camera_shift * 1e3).tolist(),
                "landing_mm": (lay.landing * 1e3).tolist(),
                "electrons_per_intensity": self.readout.epi,
                "frame_shape": list(self.frame_shape), "bit_depth": self.bit_depth,
                "config": self.config.to_dict()}

    def __repr__(self) -> str:
        return (f"Bench(n={self.n}, grid={self.grid}, layers={self.L}, image_size={self.H}, k={self.k}, "
                f"frames={self.frame_shape}, bits={self.bit_depth})")
