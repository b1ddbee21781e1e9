"""Training with a bench in the loop: the optics a :class:`~optdiff.diffusion.TimeAwareODU` uses in
the hardware training modes, and the frame-to-intensity map they share.

Modes (``optdiff train --mode``):

* ``offline``: the ideal ODU forward and backward (optdiff's default; the model is deployed on the
  bench afterwards). Nothing here is used.
* ``online``: forward on the bench (camera frames -> intensity on the model's image grid), the
  gradient through the digital twin at the same images and phases; every ``refine_every`` steps the
  twin's parameters take an Adam step towards the same frames (the twin is refined as training goes),
  from the first ``refine_images`` images of the batch: a dozen parameters need far fewer than a
  batch of 130 x 130 frames, and the step (a forward and a backward with parameter gradients) is
  then a fraction of a training step instead of ~3.5 of them.
* ``experimental-backprop`` (physics-aware training, Wright et al., Nature 2022): forward on the
  bench, the gradient through the *ideal* model (its own forward pass at the same phases).

Frames become intensity as ``(frames - dark) / (gain * electrons_per_intensity)`` (the twin's gain
and dark level in the online mode, the nominal ones otherwise), then area-binned from camera
pixels onto the image pixels (the nominal camera geometry). The ``subpixel`` read-out takes the
read-out window instead: the same frames area-resampled onto the window's k x k cells per image
pixel (each cell the mean of the camera pixels it overlaps), so that binning the window gives
exactly the per-pixel intensity; its gains are then a fixed weighting of camera pixels, as digital
as the binning itself. A capture that fails (the device
raises, or its frames have the wrong shape or dtype, NaN, values out of range) is a
:class:`CaptureError`: :class:`~optdiff.hardware.trainer.HardwareTrainer` then stops with a
checkpoint that loses nothing.
"""

from __future__ import annotations

import math

import numpy as np

from . import resample
from .protocol import CaptureError, capture_frames
from .twin import DigitalTwin
from .twin_params import TwinParams

__all__ = ["MODES", "FrameBinning", "BenchODU", "TwinRefiner"]

MODES = ("offline", "online", "experimental-backprop")
REFINE_IMAGES = 8     # frames per refinement step (the first of the batch; measured in docs/hardware.md)
REFINE_FREE = ("z_gap", "mirror_angle", "beam_angle", "patch_offsets", "dmd_offset", "camera_offset",
               "phase_scale", "lut_curvature", "crosstalk", "gain", "dark_level")


class FrameBinning:
    """Camera frames (DN) ``[B, rows, cols]`` <-> intensity on the model's image grid ``[B, H, W]``,
    or with ``window=True`` on the read-out window ``[B, kH, kW]`` (one cell per grid pixel, in
    grid order like :meth:`optdiff.odu.ODU.window_intensity`: the ODU's ``bin_window`` flips)."""

    def __init__(self, twin: DigitalTwin, flip: bool = False, window: bool = False):
        n, k, H = twin.grid, twin.k, twin.H
        f = twin.footprint
        cam_start = n / 2 - twin.rows * f / 2                     # camera pixel 0 on the grid
        img_start = (twin.grid - k * H) // 2                      # image pixel 0 on the grid
        # cell i takes the mean of the camera pixels it overlaps (area weights); overlaps add up,
        # so the mean over a pixel's k window cells is that pixel's binned intensity, exactly
        cells, width = (k * H, 1.0) if window else (H, k)
        self.ay = resample.overlap_matrix(cells, img_start - cam_start, width, twin.rows, 0.0, f)
        self.ax = resample.overlap_matrix(cells, img_start - cam_start, width, twin.cols, 0.0, f)
        if flip and not window:
            self.ay, self.ax = self.ay[::-1].copy(), self.ax[::-1].copy()
        # the camera rows and columns the image covers: the rest of a frame is never read
        self._rows, self._cols = _span(self.ay), _span(self.ax)
        self._ay, self._ax = self.ay[:, self._rows], self.ax[:, self._cols]
        self._coverage = np.outer(self.ay.sum(axis=1), self.ax.sum(axis=1))

    def intensity(self, frames, gain_electrons: float, dark: float) -> np.ndarray:
        """``(frames - dark) / gain_electrons`` binned (float64); binned first (it is linear), so
        only the covered part of each frame is touched and the dark level is one pass on the bins."""
        f = np.asarray(frames)[..., self._rows, self._cols].astype(np.float64)
        return (resample.apply(f, self._ay, self._ax) - dark * self._coverage) / gain_electrons

    def adjoint(self, g: np.ndarray, gain_electrons: float) -> np.ndarray:
        """d loss / d frames from d loss / d binned intensity."""
        return resample.apply(np.asarray(g, dtype=np.float64), self.ay.T, self.ax.T) / gain_electrons

    def grid_adjoint(self, g: np.ndarray, cy: np.ndarray, cx: np.ndarray, dtype=np.float64) -> np.ndarray:
        """``cy.T @ (ay.T @ g @ ax) @ cx`` (``[B, grid, grid]`` in ``dtype``): the binning's adjoint
        and then a camera map's (``cy``, ``cx``: grid -> camera pixels), as one product per side
        ``[grid, H]`` (built once per camera map), so the 130 x 130 frames are never formed; the
        twin's stack takes float32, so the online step asks for that and skips a float64 pass."""
        hit = getattr(self, "_fused", None)
        if hit is None or hit[0] is not cy or hit[1] is not cx:
            hit = (cy, cx, cy.T @ self.ay.T, cx.T @ self.ax.T)
            self._fused = hit
        return resample.apply(np.asarray(g, dtype=dtype), hit[2], hit[3])


class TwinRefiner:
    """Adam on the twin's free parameters (normalised by their tolerances) towards captured frames."""

    def __init__(self, twin: DigitalTwin, free=REFINE_FREE, lr: float = 0.02, beta1: float = 0.9,
                 beta2: float = 0.999):
        self.twin, self.free, self.lr, self.b1, self.b2 = twin, tuple(free), float(lr), beta1, beta2
        self.origin = twin.params
        self.scales = self.origin.scales(self.free)
        self.m = np.zeros(self.scales.size)
        self.v = np.zeros(self.scales.size)
        self.t = 0
        self.last_discrepancy = math.nan

    def step(self, ctx, twin_frames: np.ndarray, frames: np.ndarray) -> float:
        """One step from a forward context of the twin and the bench's frames; returns the
        discrepancy D of the twin on them (before the step)."""
        from .fit import discrepancy, unsaturated_below

        frames = np.asarray(frames, dtype=np.float64)
        ok = frames < unsaturated_below(frames.max(), self.twin.params.dark_level)   # saturated: no say
        r = np.where(ok, twin_frames - frames, 0.0)
        scale = max(float(np.mean(frames[ok] ** 2)), 1e-12) if ok.any() else 1.0
        grads, _ = self.twin.backward(ctx, r / (scale * r.size))
        g = np.concatenate([np.asarray(grads[n], dtype=np.float64).reshape(-1) for n in self.free]) * self.scales
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        mh, vh = self.m / (1 - self.b1 ** self.t), self.v / (1 - self.b2 ** self.t)
        p = self.twin.params
        x = p.vector(self.free) - self.lr * self.scales * mh / (np.sqrt(vh) + 1e-12)
        new = p.with_vector(self.free, x)
        new = new.replace(crosstalk=max(new.crosstalk, 0.0), phase_scale=max(new.phase_scale, 0.05),
                          gain=max(new.gain, 1e-9), z_gap=max(new.z_gap, 1e-6))
        self.twin.set_params(new)
        self.last_discrepancy = discrepancy(np.clip(twin_frames, 0, frames.max()), frames)
        return self.last_discrepancy


class BenchODU:
    """Stands in for the model's :class:`~optdiff.odu.ODU`: forward on ``device``, backward through
    ``twin`` (mode ``online``) or the ideal ODU (``experimental-backprop``; also ``deploy``:
    forward only, e.g. to evaluate an offline-trained model on the bench).

    Everything else (geometry, light budget, binning of simulated intensities) is the ideal ODU's.
    """

    failures = (CaptureError,)

    def __init__(self, ideal, device, mode: str, twin: DigitalTwin, *, exposure=None, refine_every: int = 0,
                 refine_lr: float = 0.02, refine_images: int = REFINE_IMAGES):
        if mode not in ("online", "experimental-backprop", "deploy"):
            raise ValueError(f"mode must be 'online', 'experimental-backprop' or 'deploy', got {mode!r}")
        if tuple(device.phase_shape) != (ideal.L, ideal.n, ideal.n) or tuple(device.image_shape) != (ideal.H, ideal.W):
            raise ValueError(f"the device shows patterns {tuple(device.phase_shape)} and images "
                             f"{tuple(device.image_shape)}; the model has ({ideal.L}, {ideal.n}, {ideal.n}) "
                             f"and ({ideal.H}, {ideal.W})")
        self._ideal, self.device, self.mode, self.twin = ideal, device, mode, twin
        self.exposure = exposure
        self.binning = FrameBinning(twin, flip=ideal.flip)
        self.window_binning = FrameBinning(twin, window=True)    # the subpixel read-out's window
        self.nominal = TwinParams.from_config(twin.nominal, ideal.L)
        self.refine_every = int(refine_every)
        if int(refine_images) < 1:
            raise ValueError(f"refine_images = {refine_images}: must be >= 1")
        self.refine_images = int(refine_images)
        self.refiner = TwinRefiner(twin, lr=refine_lr) if mode == "online" and refine_every > 0 else None
        self.steps = 0
        self.captures = 0

    def __getattr__(self, name):        # describe, light_fraction, check_light, n, L, H, W, k, ...
        return getattr(self._ideal, name)

    # -------------------------------------------------------------- forward on the bench
    def capture(self, r, phases) -> np.ndarray:
        """Frames ``[B, rows, cols]`` (float64 DN) of images ``r`` with ``phases`` (radians)."""
        try:
            frames = capture_frames(self.device, np.asarray(r, dtype=np.float64), np.asarray(phases), self.exposure)
        except CaptureError:
            raise
        except Exception as exc:   # a driver's own failure: the same stop
            raise CaptureError(f"capture from {type(self.device).__name__} failed: "
                               f"{type(exc).__name__}: {exc}") from exc
        self.captures += frames.shape[0]
        return frames.astype(np.float64)

    def _gain_dark(self) -> tuple[float, float]:
        p = self.twin.params if self.mode == "online" else self.nominal
        return p.gain * self.twin.epi * self._exposure_factor(), p.dark_level

    def _exposure_factor(self) -> float:
        return 1.0 if self.exposure is None else self.exposure / self.twin.camera_exposure

    def to_intensity(self, frames) -> np.ndarray:
        return self.binning.intensity(frames, *self._gain_dark())

    def intensity(self, r, phases) -> np.ndarray:
        """Binned intensity ``[B, H, W]`` (float64) measured on the bench."""
        return self.to_intensity(self.capture(r, phases))

    def window_intensity(self, r, phases) -> np.ndarray:
        """The read-out window ``[B, kH, kW]`` (float64) measured on the bench (``subpixel`` read-out)."""
        return self.window_binning.intensity(self.capture(r, phases), *self._gain_dark())

    def intensity_train(self, r, phases):
        return self._train(r, phases, self.binning, self._ideal.intensity_train)

    def window_train(self, r, phases):
        return self._train(r, phases, self.window_binning, self._ideal.window_train)

    def backward(self, tape, g_binned) -> np.ndarray:
        """d loss / d phases ``[L, N, N]`` (float64) from d loss / d binned intensity."""
        return self._backward(tape, g_binned, self.binning, self._ideal.backward)

    def backward_window(self, tape, g_window) -> np.ndarray:
        """d loss / d phases ``[L, N, N]`` (float64) from d loss / d window intensity ``[B, kH, kW]``."""
        return self._backward(tape, g_window, self.window_binning, self._ideal.backward_window)

    def _train(self, r, phases, binning: FrameBinning, ideal_train):
        frames = self.capture(r, phases)
        I = binning.intensity(frames, *self._gain_dark())
        if self.mode == "online":   # the twin's frames only when its refinement step needs them
            return I, ("twin", self.twin.forward_tape(r, phases, self.exposure, fresh_images=True), frames, r, phases)
        if self.mode == "experimental-backprop":
            _, tape = ideal_train(r, phases)
            return I, ("ideal", tape)
        raise RuntimeError("mode 'deploy' has no backward pass")

    def _backward(self, tape, g, binning: FrameBinning, ideal_backward) -> np.ndarray:
        self.steps += 1
        if tape[0] == "ideal":
            return ideal_backward(tape[1], g)
        _, ctx, frames, r, phases = tape
        # d loss / d frames = binning adjoint / gain_e; d frames / d I = camera map * gain * gf
        cy, cx, gain, _ = ctx.camera
        factor = gain * ctx.gain_factor / self._gain_dark()[0]
        g_I = binning.grid_adjoint(np.asarray(g, dtype=np.float64) * factor, cy, cx, self.twin.rdtype)
        gph = self.twin.phase_grad(ctx, g_I)
        if self.refiner is not None and self.steps % self.refine_every == 0:
            self.refine(r, phases, frames, ctx)
        return gph

    def refine(self, r, phases, frames, ctx=None) -> float:
        """The twin's refinement step on the first ``refine_images`` of images ``r`` shown with
        ``phases`` and their captured ``frames``; ``ctx``: the twin's forward context of all of
        ``r`` (used when the subset is the whole batch). Returns the twin's discrepancy D on them."""
        k = min(self.refine_images, len(r))
        if ctx is None or k < len(r):
            ctx = self.twin.forward_tape(r[:k], phases, self.exposure, fresh_images=True)
        return self.refiner.step(ctx, self.twin.frames_of(ctx), frames[:k])

    def state(self) -> dict:
        r = self.refiner
        return {"mode": self.mode, "steps": self.steps, "captures": self.captures,
                "twin_params": self.twin.params.to_dict(),
                "twin_discrepancy": None if r is None else _finite_or_none(r.last_discrepancy),
                "refiner": None if r is None else {"t": r.t, "m": r.m.tolist(), "v": r.v.tolist(),
                                                   "origin": r.origin.to_dict()}}

    def load_state(self, d: dict) -> None:
        self.twin.set_params(TwinParams.from_dict(d["twin_params"]))
        self.steps, self.captures = int(d.get("steps", 0)), int(d.get("captures", 0))
        r, saved = self.refiner, d.get("refiner")
        if r is not None and saved:
            r.origin = TwinParams.from_dict(saved["origin"])
            r.scales = r.origin.scales(r.free)
            r.t, r.m, r.v = int(saved["t"]), np.asarray(saved["m"], float), np.asarray(saved["v"], float)


def _span(weights: np.ndarray) -> slice:
    """The columns of ``weights`` from its first nonzero one to its last."""
    hit = np.flatnonzero(np.any(weights != 0, axis=0))
    return slice(0, 0) if hit.size == 0 else slice(int(hit[0]), int(hit[-1]) + 1)


def _finite_or_none(v):
    return None if v is None or not math.isfinite(v) else float(v)
