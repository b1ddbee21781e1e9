"""An emulated experiment: a bench with hidden alignment errors and defects drawn from a seed, seen
only through ``capture`` (frames, no gradients), like a real one.

What the lab knows is public: ``nominal`` (the design, a :class:`BenchConfig`), the ODU geometry
and the device shapes. The truth (the drawn errors) is hidden; :meth:`EmulatedExperiment.reveal_truth`
returns it for studies and tests that score a calibration against it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..config import OpticsConfig
from . import _checks as ck
from . import protocol
from .bench import Bench
from .config import BenchConfig

__all__ = ["EmulatedExperiment", "HiddenErrors", "draw_truth"]

ANGLE_DRAWS = ("normal", "magnitude")


@dataclass(frozen=True)
class HiddenErrors:
    """Scale of each hidden error (a normal draw clipped at 2 std, unless noted); 0 turns it off.

    beam_angle, mirror_angle : std per axis, rad (1.5 and 0.5 mrad, so up to 3 and 1 mrad: "a few
        mrad"; the mirror turns the beam by twice its angle at every bounce, so its walk grows with
        the square of the bounce count: with all defaults the beam lands 0.4 mm (median; 90%:
        0.65 mm, at most ~1 mm) from the design point at the camera plane, 0.26 mm on the patches).
    z_gap : relative std of the gap (2%; 0.34 mm on 17.1 mm).
    patch_offset, dmd_offset, camera_offset : std per axis, metres (10, 5, 20 um).
    phase_scale : std of the LUT's phase range (3%). lut_curvature : uniform in +-0.1.
    crosstalk : relative std of the fringing width (30%; the light lost at wraps is steep in it).
    camera_gain : relative std (5%). dark_level : std in DN (3).
    slm_offset : std per axis (metres) of one shift shared by all patches: the SLM as a rigid body
        against the DMD and camera relays (0: off). Per-patch offsets (``patch_offset``) are
        registration errors of each pattern on its own; on one SLM the patches' relative positions
        are pixel indices the lab chooses, so a rigid SLM has ``patch_offset = 0`` and at most
        this common shift.
    angle_draw : ``"normal"`` (default: the clipped normal draws above; an angle can be near 0) or
        ``"magnitude"``: every angle component of size ``std (1 + |z| / 2)`` with z the same
        clipped normal draw and its sign, i.e. between 1 and 2 std (beam 1.5-3 mrad, mirror
        0.5-1 mrad: "a few mrad" for every component, never near 0; the other draws are unchanged).
    """

    beam_angle: float = 1.5e-3
    mirror_angle: float = 0.5e-3
    z_gap: float = 0.02
    patch_offset: float = 10e-6
    dmd_offset: float = 5e-6
    camera_offset: float = 20e-6
    phase_scale: float = 0.03
    lut_curvature: float = 0.1
    crosstalk: float = 0.3
    camera_gain: float = 0.05
    dark_level: float = 3.0
    slm_offset: float = 0.0
    angle_draw: str = "normal"

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if f.name == "angle_draw":
                ck.choice(self.angle_draw, "HiddenErrors.angle_draw", ANGLE_DRAWS)
                continue
            object.__setattr__(self, f.name, ck.real(getattr(self, f.name), f"HiddenErrors.{f.name}", 0.0, 1e3))

    @classmethod
    def none(cls) -> HiddenErrors:
        return cls(**{f.name: 0.0 for f in dataclasses.fields(cls) if f.name != "angle_draw"})


def _normal(rng: np.random.Generator, std: float, size=None):
    return np.clip(rng.standard_normal(size), -2.0, 2.0) * std


def _angles(rng: np.random.Generator, std: float, mode: str) -> np.ndarray:
    """Two angle components; "magnitude" maps the same normal draw z to sign(z) std (1 + |z| / 2)."""
    z = _normal(rng, 1.0, 2)
    if mode == "normal":
        return z * std
    return np.where(z < 0, -1.0, 1.0) * std * (1.0 + np.abs(z) / 2.0)


def draw_truth(nominal: BenchConfig, errors: HiddenErrors, rng: np.random.Generator,
               optics: OpticsConfig, layers: int | None = None, tries: int = 100) -> BenchConfig:
    """The hidden bench: the nominal one with drawn errors. Draws whose beam misses the mirror or a
    patch are drawn again (a lab would have seen and fixed that), up to ``tries`` times."""
    L = optics.layers if layers is None else layers
    for _ in range(tries):
        try:
            return _draw(nominal, errors, rng, optics, L)
        except ValueError:       # angles beyond the fold's bounds, beam off the mirror or a patch
            continue
    raise ValueError(f"HiddenErrors: no draw in {tries} kept the beam on the mirror and the patches; "
                     "use smaller angles")


def _vec(a) -> tuple:
    return tuple(float(x) for x in a)


def _draw(nominal: BenchConfig, errors: HiddenErrors, rng: np.random.Generator, optics: OpticsConfig,
          L: int) -> BenchConfig:
    e, fold, slm, dmd, cam = errors, nominal.fold, nominal.slm, nominal.dmd, nominal.camera
    pitch = slm.pitch
    base = np.array(fold.patch_offsets) if fold.patch_offsets else np.zeros((L, 2))
    truth_fold = dataclasses.replace(
        fold, z_gap=float(fold.z_gap * (1.0 + _normal(rng, e.z_gap))),
        fold_angle=fold.design_angle(pitch),                  # the beam keeps the design angle
        mirror_angle=_vec(np.add(fold.mirror_angle, _angles(rng, e.mirror_angle, e.angle_draw))),
        beam_angle=_vec(np.add(fold.beam_angle, _angles(rng, e.beam_angle, e.angle_draw))),
        patch_offsets=tuple(map(_vec, base + _normal(rng, e.patch_offset, (L, 2)))), frame="lattice")
    truth_slm = dataclasses.replace(
        slm, phase_scale=float(slm.phase_scale * (1.0 + _normal(rng, e.phase_scale))),
        lut_curvature=float(np.clip(slm.lut_curvature + rng.uniform(-1, 1) * e.lut_curvature, -0.9, 0.9)),
        crosstalk=float(slm.crosstalk * (1.0 + _normal(rng, e.crosstalk))))
    truth_dmd = dataclasses.replace(dmd, offset=_vec(np.add(dmd.offset, _normal(rng, e.dmd_offset, 2))))
    dark = cam.dark_level + _normal(rng, e.dark_level)
    truth_cam = dataclasses.replace(
        cam, gain=float(cam.dn_per_electron * (1.0 + _normal(rng, e.camera_gain))),
        dark_level=float(np.clip(dark, 0.0, None if cam.bits is None else (1 << cam.bits) - 1)),
        offset=_vec(np.add(cam.offset, _normal(rng, e.camera_offset, 2))))
    if e.slm_offset:   # drawn last, so that the other draws do not depend on it
        shared = _normal(rng, e.slm_offset, 2)
        truth_fold = dataclasses.replace(truth_fold, patch_offsets=tuple(_vec(p + shared) for p in
                                                                         np.array(truth_fold.patch_offsets)))
    truth = dataclasses.replace(nominal, dmd=truth_dmd, slm=truth_slm, fold=truth_fold, camera=truth_cam)
    truth.fold.layout(optics.n, L, pitch, truth.slm.resolution)   # raises when the beam cannot make it
    return truth


class EmulatedExperiment:
    """A bench you can only capture from.

    Parameters: ``seed`` (draws the hidden errors and the camera noise), ``optics`` and
    ``image_size`` (the ODU geometry; default ``OpticsConfig()``, 20), ``nominal`` (the design;
    default the reference bench), ``errors`` (their scale, :class:`HiddenErrors`), ``grid`` (the
    simulated square per patch, see :class:`Bench`; default n: light that walks past the n x n
    patterns is lost, a larger grid keeps it at the cost of larger FFTs).
    """

    __slots__ = ("seed", "optics", "nominal", "__bench", "__truth", "__errors")

    def __init__(self, seed: int, optics: OpticsConfig | None = None, image_size: int = 20,
                 nominal: BenchConfig | None = None, errors: HiddenErrors | None = None,
                 grid: int | None = None, nthreads: int | None = None):
        self.seed = ck.integer(seed, "seed", 0, (1 << 63) - 1)
        self.optics = OpticsConfig() if optics is None else optics
        self.nominal = BenchConfig() if nominal is None else nominal
        self.__errors = HiddenErrors() if errors is None else errors
        truth_seq, noise_seq = np.random.SeedSequence(self.seed).spawn(2)
        self.__truth = draw_truth(self.nominal, self.__errors, np.random.default_rng(truth_seq), self.optics)
        noise_seed = int(noise_seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
        self.__truth = dataclasses.replace(self.__truth, seed=noise_seed)
        self.__bench = Bench(self.optics, image_size, self.__truth, grid=grid, nthreads=nthreads)

    image_shape = property(lambda self: self.__bench.image_shape)
    phase_shape = property(lambda self: self.__bench.phase_shape)
    frame_shape = property(lambda self: self.__bench.frame_shape)
    bit_depth = property(lambda self: self.__bench.bit_depth)
    dmd_bits = property(lambda self: self.__bench.dmd_bits)
    slm_bits = property(lambda self: self.__bench.slm_bits)

    def capture(self, images, slm, *, exposure=None) -> np.ndarray:
        """Frames ``[B, rows, cols]`` (uint16 DN) for ``images`` shown with ``slm``; checked at the boundary."""
        return protocol.capture_frames(self.__bench, images, slm, exposure)

    def reveal_truth(self) -> dict:
        """The hidden bench, for scoring a calibration: its configuration, the errors relative to
        ``nominal`` and the beam's landing points (mm from each patch centre)."""
        t, nom = self.__truth, self.nominal
        return {
            "config": t.to_dict(),
            "z_gap": t.fold.z_gap, "z_gap_error": t.fold.z_gap / nom.fold.z_gap - 1.0,
            "mirror_angle": t.fold.mirror_angle, "beam_angle": t.fold.beam_angle,
            "patch_offsets": t.fold.patch_offsets, "dmd_offset": t.dmd.offset,
            "phase_scale": t.slm.phase_scale, "lut_curvature": t.slm.lut_curvature,
            "crosstalk": t.slm.crosstalk, "camera_gain": t.camera.gain, "dark_level": t.camera.dark_level,
            "camera_offset": t.camera.offset,
            "landing_mm": (self.__bench.layout.landing * 1e3).tolist(),
            "errors": dataclasses.asdict(self.__errors),
        }

    def __repr__(self) -> str:
        return f"EmulatedExperiment(seed={self.seed}, frames={self.frame_shape}, bits={self.bit_depth})"
