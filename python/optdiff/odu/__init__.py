"""The optical denoising unit: encode a noisy image on a modulator, pass the phase stack, read the
camera (what one set of passive layers computes, and how its layers start)."""

from .unit import ODU, LightLossWarning, image_inverted, init_phases, lens_phase, resolve_init

__all__ = ["ODU", "LightLossWarning", "init_phases", "lens_phase", "resolve_init", "image_inverted"]
