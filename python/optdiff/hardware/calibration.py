"""Calibration data as in the reference work: random square pi-phase patches on the SLM, one
capture each, stored in a file the digital-twin fit reads.

Each calibration frame shows the same input image (default: every DMD superpixel fully on) and,
on every patch, ``per_layer`` squares of the pi level (half the SLM's range, nominal phase pi) on
a zero background, with random sides in ``sizes`` and random positions inside ``window`` (the
illuminated part of the n x n pattern). The squares' edges diffract; where the fringes fall and
how far apart they are depends on the gap, the angles and the offsets the twin fits.

File format (``CalibrationSet.save``; NumPy ``.npz``, no pickle):

================  =======================  ============================================
``images``        uint8/float [H, W]       the input shown for every frame (grey levels or values)
``squares``       int32 [K, L, P, 3]       (row, col, side) of each square, pixels of the n x n pattern
``level``         int64 []                 SLM level of the squares (background: level 0)
``frames``        uint16/float [K, R, C]   one camera frame per pattern (DN)
``exposure``      float64 []               seconds; NaN: the device's default
``__meta__``      str (JSON)               format, version, device shapes and bit depths, the
                                           nominal bench (if given), seed, sizes, window
================  =======================  ============================================
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import _checks as ck
from .protocol import CaptureDevice, capture_frames

__all__ = ["CalibrationSet", "pi_patch_squares", "squares_to_levels", "capture_calibration", "FORMAT"]

FORMAT, VERSION = "optdiff-calibration", 1


def pi_patch_squares(count: int, layers: int, n: int, *, sizes: tuple | None = None, per_layer: int = 1,
                     window: tuple | None = None, seed: int = 0) -> np.ndarray:
    """Random squares ``int32 [count, layers, per_layer, 3]`` = (row, col, side), inside ``window``.

    ``sizes`` (smallest, largest side; default ``(n // 16, n // 4)``), ``window`` (first, last + 1
    pixel of the region, both axes; default the middle three quarters, ``(n // 8, n - n // 8)``).
    """
    count = ck.integer(count, "count", 1, 1 << 24)
    layers = ck.integer(layers, "layers", 1, 1 << 10)
    per_layer = ck.integer(per_layer, "per_layer", 1, 1 << 10)
    lo, hi = window if window is not None else (n // 8, n - n // 8)
    lo, hi = ck.integer(lo, "window[0]", 0, n), ck.integer(hi, "window[1]", 1, n)
    smin, smax = sizes if sizes is not None else (max(n // 16, 1), max(n // 4, 1))
    smin, smax = ck.integer(smin, "sizes[0]", 1), ck.integer(smax, "sizes[1]", 1)
    if smin > smax or smax > hi - lo:
        raise ValueError(f"sizes = {(smin, smax)}: need 1 <= smallest <= largest <= the window's width {hi - lo}")
    rng = np.random.default_rng(seed)
    side = rng.integers(smin, smax + 1, size=(count, layers, per_layer))
    row = lo + (rng.random((count, layers, per_layer)) * (hi - lo - side + 1)).astype(np.int64)
    col = lo + (rng.random((count, layers, per_layer)) * (hi - lo - side + 1)).astype(np.int64)
    return np.stack([row, col, side], axis=-1).astype(np.int32)


def squares_to_levels(squares: np.ndarray, n: int, level: int, dtype=np.uint8) -> np.ndarray:
    """The SLM patterns ``[..., L, n, n]`` of squares ``[..., L, P, 3]`` (level inside, 0 outside)."""
    squares = np.asarray(squares)
    out = np.zeros(squares.shape[:-2] + (n, n), dtype=dtype)
    flat_out, flat_sq = out.reshape(-1, n, n), squares.reshape(-1, squares.shape[-2], 3)
    for pattern, sq in zip(flat_out, flat_sq):
        for r, c, s in sq:
            pattern[r:r + s, c:c + s] = level
    return out


@dataclass
class CalibrationSet:
    """Pi-patch calibration captures (see the module docstring for the file format)."""

    images: np.ndarray
    squares: np.ndarray
    level: int
    frames: np.ndarray
    exposure: float | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.validate()

    @property
    def n(self) -> int:
        return int(self.meta["phase_shape"][-1])

    def __len__(self) -> int:
        return self.frames.shape[0]

    def slm_levels(self, i: int) -> np.ndarray:
        """The SLM levels ``[L, n, n]`` shown for frame i."""
        dtype = np.uint8 if self.meta["slm_bits"] <= 8 else np.uint16
        return squares_to_levels(self.squares[i], self.n, self.level, dtype)

    def nominal_phases(self, i: int) -> np.ndarray:
        """Frame i's pattern through the nominal LUT (``2 pi level / 2^bits``), float32 radians."""
        return (self.slm_levels(i).astype(np.float64) * (2 * math.pi / (1 << self.meta["slm_bits"]))).astype(np.float32)

    def validate(self) -> CalibrationSet:
        for key in ("phase_shape", "image_shape", "frame_shape", "slm_bits"):
            if key not in self.meta:
                raise ValueError(f"calibration set: meta lacks {key!r}")
        K = self.frames.shape[0] if self.frames.ndim == 3 else -1
        L, n = int(self.meta["phase_shape"][0]), int(self.meta["phase_shape"][-1])
        if self.frames.ndim != 3 or tuple(self.frames.shape[1:]) != tuple(self.meta["frame_shape"]):
            raise ValueError(f"calibration set: frames have shape {self.frames.shape}, expected "
                             f"[K, {self.meta['frame_shape'][0]}, {self.meta['frame_shape'][1]}]")
        sq = self.squares
        if sq.ndim != 4 or sq.shape[0] != K or sq.shape[1] != L or sq.shape[3] != 3:
            raise ValueError(f"calibration set: squares have shape {sq.shape}, expected [{K}, {L}, P, 3]")
        if sq.size and (sq.min() < 0 or np.any(sq[..., :2] + sq[..., 2:] > n) or sq[..., 2].min() < 1):
            raise ValueError(f"calibration set: a square leaves the {n} x {n} pattern")
        if tuple(self.images.shape) != tuple(self.meta["image_shape"]):
            raise ValueError(f"calibration set: images have shape {self.images.shape}, expected "
                             f"{tuple(self.meta['image_shape'])}")
        if not 0 <= int(self.level) < 1 << int(self.meta["slm_bits"]):
            raise ValueError(f"calibration set: level {self.level} is not an SLM level")
        if np.issubdtype(self.frames.dtype, np.floating) and not np.all(np.isfinite(self.frames)):
            raise ValueError("calibration set: frames contain NaN/Inf")
        return self

    def save(self, path: str | os.PathLike) -> Path:
        """Write the set to ``path`` (.npz; written to a temporary name, then renamed)."""
        path = Path(path)
        meta = dict(self.meta, format=FORMAT, version=VERSION)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            np.savez(f, images=self.images, squares=self.squares, level=np.int64(self.level),
                     frames=self.frames, exposure=np.float64(np.nan if self.exposure is None else self.exposure),
                     __meta__=np.array(json.dumps(meta)))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> CalibrationSet:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a calibration set ({exc})") from None
        missing = {"images", "squares", "level", "frames", "exposure", "__meta__"} - set(arrays)
        if missing:
            raise ValueError(f"{path}: not a calibration set (missing {sorted(missing)})")
        meta = json.loads(str(arrays["__meta__"]))
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ValueError(f"{path}: format {meta.get('format')!r} version {meta.get('version')!r}, "
                             f"expected {FORMAT!r} version {VERSION}")
        exp = float(arrays["exposure"])
        try:
            return cls(arrays["images"], arrays["squares"], int(arrays["level"]), arrays["frames"],
                       None if math.isnan(exp) else exp, meta)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None


def capture_calibration(device: CaptureDevice, count: int = 200, *, seed: int = 0, sizes: tuple | None = None,
                        per_layer: int = 1, window: tuple | None = None, image: np.ndarray | None = None,
                        exposure: float | None = None, nominal=None) -> CalibrationSet:
    """Show ``count`` random pi-patch patterns on ``device``, one capture each (checked frames).

    ``image``: the input for every frame (default: all grey levels at full scale). ``nominal``: a
    :class:`~optdiff.hardware.BenchConfig` stored with the data (what the twin starts from).
    """
    L, n, _ = device.phase_shape
    squares = pi_patch_squares(count, L, n, sizes=sizes, per_layer=per_layer, window=window, seed=seed)
    if image is None:
        dtype = np.uint8 if device.dmd_bits <= 8 else np.uint16
        image = np.full(device.image_shape, (1 << device.dmd_bits) - 1, dtype=dtype)
    level = 1 << (device.slm_bits - 1)          # nominal phase pi
    dtype = np.uint8 if device.slm_bits <= 8 else np.uint16
    frames = [capture_frames(device, image[None], squares_to_levels(sq, n, level, dtype), exposure)[0]
              for sq in squares]
    meta = {"phase_shape": list(device.phase_shape), "image_shape": list(device.image_shape),
            "frame_shape": list(device.frame_shape), "bit_depth": device.bit_depth,
            "dmd_bits": device.dmd_bits, "slm_bits": device.slm_bits, "seed": seed,
            "sizes": None if sizes is None else list(sizes), "per_layer": per_layer,
            "window": None if window is None else list(window), "device": type(device).__name__,
            "nominal": None if nominal is None else nominal.to_dict()}
    return CalibrationSet(np.asarray(image), squares, level, np.stack(frames), exposure, meta)
