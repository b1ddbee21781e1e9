"""The capture interface between optdiff and an optical bench (emulated or real), and the checks
made at that boundary.

A device shows input images on its modulator and layer patterns on its SLM, exposes the camera,
and returns frames. Anything with the attributes and the ``capture`` method of
:class:`CaptureDevice` is one (a :class:`~optdiff.hardware.Bench`, an
:class:`~optdiff.hardware.EmulatedExperiment`, or a lab's wrapper around its own drivers).
:func:`capture_frames` is how optdiff calls a device: it checks what goes in and what comes back,
so a driver that returns a wrong shape, dtype, NaN or out-of-range values is stopped there with
a :class:`CaptureError` that says what is wrong.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["CaptureDevice", "CaptureError", "capture_frames", "check_images", "check_slm",
           "check_exposure", "check_frames"]


class CaptureError(ValueError):
    """A capture device returned frames that cannot be used (message: which device, what is wrong)."""


@runtime_checkable
class CaptureDevice(Protocol):
    """What optdiff needs from a bench.

    ``image_shape`` (H, W): the input images. ``phase_shape`` (L, n, n): the SLM patterns, one
    per patch. ``frame_shape`` (rows, cols): the camera region read out. ``bit_depth``: frames
    are integers in [0, 2^bit_depth - 1], or None for float frames (an ideal camera).
    ``dmd_bits`` / ``slm_bits``: the grey levels / SLM levels the device takes.

    ``capture(images, slm, exposure=None)``: ``images`` [B, H, W] are floats (the model's
    values; the device encodes them as amplitudes, ``clip(amp_bias + amp_scale r, 0, 1)``) or
    unsigned grey levels; ``slm`` [L, n, n] is phases in radians (floats) or SLM levels
    (integers), shown for the whole batch; ``exposure`` in seconds (None: the device's own).
    Returns frames [B, rows, cols], one per image, in camera units (DN).
    """

    @property
    def image_shape(self) -> tuple[int, int]: ...

    @property
    def phase_shape(self) -> tuple[int, int, int]: ...

    @property
    def frame_shape(self) -> tuple[int, int]: ...

    @property
    def bit_depth(self) -> int | None: ...

    @property
    def dmd_bits(self) -> int: ...

    @property
    def slm_bits(self) -> int: ...

    def capture(self, images: np.ndarray, slm: np.ndarray, *, exposure: float | None = None) -> np.ndarray: ...


def _levels_ok(a: np.ndarray, bits: int, name: str) -> None:
    if a.size and (int(a.min()) < 0 or int(a.max()) >= 1 << bits):
        raise ValueError(f"{name}: levels must be in [0, {(1 << bits) - 1}] ({bits} bits), "
                         f"got {int(a.min())} .. {int(a.max())}")


def _numbers(a, name: str) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(a).__name__}")
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise TypeError(f"{name} must be real numbers (floats) or levels (integers), got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains {int(np.count_nonzero(~np.isfinite(a)))} NaN/Inf values")
    return a


def check_images(images, image_shape, dmd_bits: int, name: str = "images") -> np.ndarray:
    """``[B, H, W]`` (a single ``[H, W]`` image gets a batch axis) floats or grey levels."""
    a = _numbers(images, name)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1:] != tuple(image_shape) or a.shape[0] == 0:
        raise ValueError(f"{name} must have shape [B, {image_shape[0]}, {image_shape[1]}] with B >= 1, "
                         f"got {tuple(images.shape)}")
    if np.issubdtype(a.dtype, np.integer):
        _levels_ok(a, dmd_bits, f"{name} (DMD grey levels)")
    return a


def check_slm(slm, phase_shape, slm_bits: int, name: str = "slm") -> np.ndarray:
    """``[L, n, n]`` phases in radians (floats) or SLM levels (integers)."""
    a = _numbers(slm, name)
    if a.shape != tuple(phase_shape):
        raise ValueError(f"{name} must have shape {list(phase_shape)} (one pattern per patch), got {list(a.shape)}")
    if np.issubdtype(a.dtype, np.integer):
        _levels_ok(a, slm_bits, f"{name} (SLM levels)")
    return a


def check_exposure(exposure) -> float | None:
    if exposure is None:
        return None
    if isinstance(exposure, (bool, np.bool_, str, bytes)):
        raise ValueError(f"exposure = {exposure!r}: must be a time in seconds")
    try:
        t = float(exposure)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"exposure = {exposure!r}: must be a time in seconds") from None
    if not (math.isfinite(t) and 0 < t <= 1e4):
        raise ValueError(f"exposure = {exposure!r}: must be a positive finite time in seconds (<= 1e4)")
    return t


def check_frames(frames, batch: int, frame_shape, bit_depth: int | None, device: str = "device") -> np.ndarray:
    """Frames from a device: ``[batch, rows, cols]``, real numbers, finite, in the ADC's range."""
    where = f"capture from {device}"
    if not isinstance(frames, np.ndarray):
        raise CaptureError(f"{where}: frames must be a NumPy array, got {type(frames).__name__}")
    want = (batch, *frame_shape)
    if frames.shape != want:
        raise CaptureError(f"{where}: frames have shape {frames.shape}, expected {want} "
                           "(one frame of the read-out region per image)")
    dt = frames.dtype
    if dt == np.bool_ or not (np.issubdtype(dt, np.integer) or np.issubdtype(dt, np.floating)):
        raise CaptureError(f"{where}: frames have dtype {dt}; expected integers (DN) or floats")
    if np.issubdtype(dt, np.floating):
        bad = ~np.isfinite(frames)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise CaptureError(f"{where}: {int(bad.sum())} frame values are NaN/Inf (first at {first})")
    if frames.size:
        lo, hi = frames.min(), frames.max()
        if lo < 0:
            raise CaptureError(f"{where}: frame values below 0 (min {lo})")
        if bit_depth is not None and hi > (1 << bit_depth) - 1:
            raise CaptureError(f"{where}: frame values above the {bit_depth}-bit range (max {hi} > "
                               f"{(1 << bit_depth) - 1})")
    return frames


def capture_frames(device: CaptureDevice, images, slm, exposure=None) -> np.ndarray:
    """Call ``device.capture`` with checked inputs and return its checked frames."""
    images = check_images(images, device.image_shape, device.dmd_bits)
    slm = check_slm(slm, device.phase_shape, device.slm_bits)
    exposure = check_exposure(exposure)
    frames = device.capture(images, slm, exposure=exposure)
    return check_frames(frames, images.shape[0], device.frame_shape, device.bit_depth,
                        device=type(device).__name__)
