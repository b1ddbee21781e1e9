"""The camera behind the second 4f relay: area resampling of the simulated intensity onto camera
pixels, photometry (laser power, exposure, quantum efficiency), shot and read noise, full well,
gain, dark level and a finite-bit ADC.

Signal chain per pixel: mean intensity over the pixel's footprint on the SLM side ``I`` (the
simulation's units: a field of amplitude 1 has intensity 1) -> mean photo-electrons
``e = epi * I * exposure / Camera.exposure`` -> Poisson(e) (shot noise) -> at most ``full_well``
-> + Normal(0, read_noise) -> ``gain * e + dark_level`` DN -> rounded, clipped to
[0, 2^bits - 1]. ``epi``, electrons per unit intensity, follows from the photometry:
``qe * laser_power * exposure * footprint_area / (illuminated_area * h c / wavelength)``, where
the laser power is spread evenly over one SLM patch at full DMD amplitude.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..optics import standard_normal
from . import _checks as ck
from . import resample

__all__ = ["Camera", "CameraReadout", "PLANCK", "LIGHT_SPEED"]

PLANCK = 6.62607015e-34
LIGHT_SPEED = 299792458.0


@dataclass(frozen=True)
class Camera:
    """Camera and relay; defaults are an IMX250-class (Sony Pregius) machine-vision camera.

    pixel_pitch : 3.45 um. roi : (130, 130) pixels read out (the reference bench).
    magnification : 0.1875 (camera side / SLM side): the 130-pixel region spans one 260-pixel SLM
        patch, one camera pixel = 2 x 2 SLM pixels (an assumption: the reference gives the sizes).
    offset : (x, y) of the relay's axis on the SLM side, metres.
    bits : 12 (the sensor's ADC); None: no quantisation or clipping (floats out).
    full_well : 10500 e- (max SNR of 40.3 dB quoted for the IMX255, same pixel: sqrt(10.7 ke-));
        None: no saturation.
    gain : DN per electron; None: the full well fills the ADC's range.
    read_noise : 2.3 e- rms (typical EMVA 1288 temporal dark noise of these sensors).
    dark_level : 16 DN (a black-level offset that keeps the read noise above zero).
    qe : 0.2 at 850 nm (front-illuminated silicon in the near infrared; approximate).
    exposure : 1 ms. laser_power : 150 nW over one SLM patch at full amplitude (after the
        attenuation a real bench needs): intensity 1 gives ~7600 e-, 72% of the full well.
    shot_noise : Poisson photo-electrons (off: the mean).
    electrons_per_intensity : None, or a value at ``exposure`` that replaces the photometry.
    """

    pixel_pitch: float = 3.45e-6
    roi: tuple = (130, 130)
    magnification: float = 0.1875
    offset: tuple = (0.0, 0.0)
    bits: int | None = 12
    full_well: float | None = 10500.0
    gain: float | None = None
    read_noise: float = 2.3
    dark_level: float = 16.0
    qe: float = 0.2
    exposure: float = 1e-3
    laser_power: float = 150e-9
    shot_noise: bool = True
    electrons_per_intensity: float | None = None

    def __post_init__(self):
        s = object.__setattr__
        s(self, "pixel_pitch", ck.positive(self.pixel_pitch, "Camera.pixel_pitch", hi=1e-3))
        s(self, "roi", ck.int_pair(self.roi, "Camera.roi", 1, 1 << 16))
        s(self, "magnification", ck.positive(self.magnification, "Camera.magnification", hi=1e3))
        s(self, "offset", ck.pair(self.offset, "Camera.offset", bound=0.1))
        if self.bits is not None:
            s(self, "bits", ck.integer(self.bits, "Camera.bits", 1, 16))
        if self.full_well is not None:
            s(self, "full_well", ck.positive(self.full_well, "Camera.full_well", hi=1e9))
        if self.gain is not None:
            s(self, "gain", ck.positive(self.gain, "Camera.gain", hi=1e6))
        s(self, "read_noise", ck.real(self.read_noise, "Camera.read_noise", 0.0, 1e6))
        s(self, "dark_level", ck.real(self.dark_level, "Camera.dark_level", 0.0,
                                      None if self.bits is None else float((1 << self.bits) - 1)))
        s(self, "qe", ck.real(self.qe, "Camera.qe", 0.0, 1.0, lo_open=True))
        s(self, "exposure", ck.positive(self.exposure, "Camera.exposure", hi=1e4))
        s(self, "laser_power", ck.positive(self.laser_power, "Camera.laser_power", hi=1e3))
        s(self, "shot_noise", ck.flag(self.shot_noise, "Camera.shot_noise"))
        if self.electrons_per_intensity is not None:
            s(self, "electrons_per_intensity",
              ck.positive(self.electrons_per_intensity, "Camera.electrons_per_intensity", hi=1e15))

    @classmethod
    def ideal(cls, n: int, pitch: float = 9.2e-6) -> Camera:
        """One camera pixel per simulation pixel, the whole n x n grid, frames = intensity (float32)."""
        return cls(pixel_pitch=pitch, roi=(n, n), magnification=1.0, bits=None, full_well=None, gain=1.0,
                   read_noise=0.0, dark_level=0.0, shot_noise=False, electrons_per_intensity=1.0)

    @property
    def dn_per_electron(self) -> float:
        if self.gain is not None:
            return self.gain
        if self.bits is not None and self.full_well is not None:
            return ((1 << self.bits) - 1) / self.full_well
        return 1.0

    @property
    def frame_dtype(self):
        if self.bits is None:
            return np.dtype(np.float32)
        return np.dtype(np.uint8 if self.bits <= 8 else np.uint16)

    def footprint(self) -> float:
        """Side of one camera pixel on the SLM side of the relay, metres."""
        return self.pixel_pitch / self.magnification

    def electrons_at(self, wavelength: float, illuminated_area: float) -> float:
        """Mean photo-electrons per unit intensity at ``exposure`` (the photometry, or the override)."""
        if self.electrons_per_intensity is not None:
            return self.electrons_per_intensity
        photon = PLANCK * LIGHT_SPEED / wavelength
        return self.qe * self.laser_power * self.exposure * self.footprint() ** 2 / (illuminated_area * photon)

    def readout(self, n: int, pitch: float, wavelength: float, illuminated_area: float,
                shift=(0.0, 0.0)) -> CameraReadout:
        """The camera for an n x n simulation whose camera plane has the relay axis at ``shift`` (m)."""
        return CameraReadout(self, n, pitch, self.electrons_at(wavelength, illuminated_area), shift)


class CameraReadout:
    """A Camera bound to a simulation grid: intensity ``[B, n, n]`` -> frames ``[B, rows, cols]``."""

    def __init__(self, camera: Camera, n: int, pitch: float, epi: float, shift):
        self.camera, self.epi = camera, float(epi)
        f = camera.footprint() / pitch
        rows, cols = camera.roi
        sx = (shift[0] + camera.offset[0]) / pitch
        sy = (shift[1] + camera.offset[1]) / pitch
        ident = f == 1.0 and sx == 0 and sy == 0
        # pixel i covers [n/2 + s + (i - rows/2) f, ... + f] in simulation pixels (grid = [0, n])
        self.cy = None if ident and rows == n else resample.overlap_matrix(rows, n / 2 + sy - rows * f / 2, f, n)
        self.cx = None if ident and cols == n else resample.overlap_matrix(cols, n / 2 + sx - cols * f / 2, f, n)
        # only the pixels that see the grid get light: resample onto those rows and columns only
        self._ry = _seen(self.cy, rows)
        self._rx = _seen(self.cx, cols)

    @property
    def shape(self) -> tuple[int, int]:
        return self.camera.roi

    def intensity(self, intensity: np.ndarray) -> np.ndarray:
        """Mean intensity over each camera pixel's footprint (the intensity's dtype; itself when identity)."""
        if self.cy is None and self.cx is None:
            return intensity
        (y0, y1), (x0, x1) = self._ry, self._rx
        cy = None if self.cy is None else self.cy[y0:y1]
        cx = None if self.cx is None else self.cx[x0:x1]
        out = np.zeros(intensity.shape[:-2] + self.camera.roi, dtype=intensity.dtype)
        out[..., y0:y1, x0:x1] = resample.apply(intensity, cy, cx)
        return out

    def _scale(self, exposure: float | None) -> float:
        return self.epi if exposure is None else self.epi * exposure / self.camera.exposure

    def mean_frames(self, intensity: np.ndarray, exposure: float | None = None) -> np.ndarray:
        """Expected frames without noise or rounding (float64 DN; saturation and ADC range applied)."""
        c = self.camera
        e = self._scale(exposure) * self.intensity(intensity).astype(np.float64)
        if c.full_well is not None:
            e = np.minimum(e, c.full_well)
        dn = c.dn_per_electron * e + c.dark_level
        if c.bits is not None:
            dn = np.clip(dn, 0.0, (1 << c.bits) - 1)
        return dn

    def frames(self, intensity: np.ndarray, rng: np.random.Generator,
               exposure: float | None = None) -> np.ndarray:
        """One exposure: noise and digitisation drawn from ``rng`` (float32 arithmetic, in place)."""
        c = self.camera
        scale = self._scale(exposure)
        irr = self.intensity(intensity)
        if (c.bits is None and not c.shot_noise and c.read_noise == 0 and c.full_well is None
                and scale == 1.0 and c.dn_per_electron == 1.0 and c.dark_level == 0):
            return np.ascontiguousarray(irr, dtype=np.float32)   # the ideal camera: intensity itself
        e = np.maximum(irr, 0.0).astype(np.float32, copy=False)
        e *= np.float32(scale)
        if c.shot_noise:
            lit = e > 0          # a dark pixel has no shot noise: draw only where light falls
            e[lit] = rng.poisson(e[lit].astype(np.float64))
        if c.full_well is not None:
            np.minimum(e, np.float32(c.full_well), out=e)
        if c.read_noise > 0:   # counter-based normals (threaded C++), keyed by a draw from rng
            seed = int(rng.integers(0, 1 << 63))
            e += np.float32(c.read_noise) * standard_normal(e.shape, seed=seed, stream=0, dtype=np.float32)
        e *= np.float32(c.dn_per_electron)
        e += np.float32(c.dark_level)
        if c.bits is None:
            return e
        np.rint(e, out=e)
        np.clip(e, 0, (1 << c.bits) - 1, out=e)
        return e.astype(c.frame_dtype)


def _seen(matrix: np.ndarray | None, size: int) -> tuple[int, int]:
    """First and last + 1 camera row (column) that overlaps the grid."""
    if matrix is None:
        return 0, size
    hit = np.flatnonzero(matrix.any(axis=1))
    return (0, 0) if hit.size == 0 else (int(hit[0]), int(hit[-1]) + 1)
