"""Training aware of what the modulators can show: the model's phases through the SLM's levels and
its input amplitudes through the DMD's grey levels, in the ideal simulation (``optdiff train
--slm-aware``).

Forward: each phase is shown as the nearest of the SLM's ``2^bits`` nominal levels
(``2 pi l / 2^bits``, the LUT the lab believes in; the SLM quantises exactly so), and each input
amplitude ``clip(amp_bias + amp_scale r, 0, 1)`` as the nearest of the DMD's ``2^bits - 1`` grey
steps (with the aperture, a dithered superpixel shows its mean: docs/hardware.md).

Backward: the straight-through estimator: d loss / d phase := d loss / d (shown phase). The
rounding's true derivative is 0 almost everywhere, which would stop training; the shown phase
differs from the trained one by at most pi / 2^bits (0.012 rad for 8 bits), far below the scale
on which the loss changes, so the gradient at the shown phase is the gradient that matters (the
same choice as quantisation-aware training of digital networks). The trained phases stay
continuous parameters; what the bench shows is their rounding, which the forward pass already sees.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["QuantisedODU", "quantise_phases", "quantise_images"]


def quantise_phases(phases: np.ndarray, bits: int = 8) -> np.ndarray:
    """Phases (radians) -> the nearest nominal SLM level's phase, wrapped to [0, 2 pi), same dtype."""
    levels = 1 << int(bits)
    step = 2 * math.pi / levels
    q = np.mod(np.rint(np.asarray(phases, dtype=np.float64) / step), levels) * step
    return q.astype(np.asarray(phases).dtype)


def quantise_images(r: np.ndarray, amp_bias: float, amp_scale: float, bits: int = 8) -> np.ndarray:
    """Images whose amplitude encoding lands on the DMD's grey levels (clipped values stay clipped)."""
    top = (1 << int(bits)) - 1
    r = np.asarray(r, dtype=np.float64)
    a = np.clip(amp_bias + amp_scale * r, 0.0, 1.0)
    aq = np.rint(a * top) / top
    return np.where((a <= 0) | (a >= 1), r, (aq - amp_bias) / amp_scale)


class QuantisedODU:
    """Wraps an ideal :class:`~optdiff.odu.ODU`: forward with shown (quantised) phases and inputs,
    straight-through backward. Everything else is the wrapped ODU's."""

    def __init__(self, ideal, slm_bits: int = 8, dmd_bits: int | None = 8):
        if ideal.optics.encoding != "amplitude" and dmd_bits is not None:
            raise ValueError("DMD quantisation needs optics.encoding = 'amplitude' (pass dmd_bits=None)")
        self._ideal, self.slm_bits, self.dmd_bits = ideal, int(slm_bits), dmd_bits

    def __getattr__(self, name):
        return getattr(self._ideal, name)

    def _inputs(self, r):
        if self.dmd_bits is None:
            return r
        o = self._ideal.optics
        return quantise_images(r, o.amp_bias, o.amp_scale, self.dmd_bits)

    def _phases(self, phases):
        return quantise_phases(phases, self.slm_bits)

    def intensity(self, r, phases):
        return self._ideal.intensity(self._inputs(r), self._phases(phases))

    def camera(self, r, phases):
        return self._ideal.camera(self._inputs(r), self._phases(phases))

    def intensity_train(self, r, phases):
        return self._ideal.intensity_train(self._inputs(r), self._phases(phases))

    def window_intensity(self, r, phases):
        return self._ideal.window_intensity(self._inputs(r), self._phases(phases))

    def window_train(self, r, phases):
        return self._ideal.window_train(self._inputs(r), self._phases(phases))

    def backward(self, tape, g_binned):
        return self._ideal.backward(tape, g_binned)      # straight through the rounding

    def backward_window(self, tape, g_window):
        return self._ideal.backward_window(tape, g_window)

    def light_fraction(self, phases, r=None):
        return self._ideal.light_fraction(self._phases(phases), r)
