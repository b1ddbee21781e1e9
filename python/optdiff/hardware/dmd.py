"""The input modulator: a DMD (binary mirrors) showing grey levels as dithered superpixels, relayed
by a 4f system onto the first SLM patch (the simulation grid).

A grey level g (0 .. 2^bits - 1) is a ``superpixel x superpixel`` block of mirrors of which
``round(g s^2 / (2^bits - 1))`` are on, chosen by an ordered (Bayer) dither: the on-mirrors are
spread as evenly as possible, so a uniform region is a pattern whose period is one superpixel and
whose power sits at multiples of the superpixel frequency, which the relay's aperture removes
(a clustered pattern would put its power at the same frequencies but with more of it near the
lowest one). Mirrors modulate the coherent field's amplitude (on = 1, off = 0), so after the
relay's low-pass a superpixel is a grey amplitude equal to its fill fraction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _checks as ck
from . import resample

__all__ = ["DMD", "DMDRelay", "bayer_matrix"]

DITHERS = ("bayer", "none")


def bayer_matrix(size: int) -> np.ndarray:
    """The ``size x size`` Bayer threshold map (each rank 0 .. size^2 - 1 once; size a power of 2)."""
    m = np.zeros((1, 1), dtype=np.int64)
    while m.shape[0] < size:
        m = np.block([[4 * m, 4 * m + 2], [4 * m + 3, 4 * m + 1]])
    return m


@dataclass(frozen=True)
class DMD:
    """Binary-mirror amplitude modulator and its 4f relay onto the SLM.

    mirror_pitch : 7.56 um (TI DLP6500, a common 1080p DMD; the reference's model is not stated).
    superpixel : 16 mirrors per side per grey level (the reference bench).
    bits : 8 (grey levels 0 .. 255).
    dither : ``"bayer"`` (ordered dither of binary mirrors) or ``"none"`` (grey mirrors: ideal).
    quantise : round amplitudes to the 2^bits grey levels.
    magnification : relay magnification (SLM side / DMD side); None: matched, one superpixel spans
        the k SLM pixels of one image pixel (``k pitch / (superpixel mirror_pitch)``).
    offset : (x, y) lateral offset of the relayed image on the SLM, metres (relay misalignment).
    relay_na : numerical aperture of the relay on the SLM side, modelled as a square (separable)
        pupil of half-width NA / wavelength; ``"auto"``: 0.9 x the superpixel frequency (passes
        the image up to its Nyquist frequency, removes every dither harmonic); None: no aperture.
    """

    mirror_pitch: float = 7.56e-6
    superpixel: int = 16
    bits: int = 8
    dither: str = "bayer"
    quantise: bool = True
    magnification: float | None = None
    offset: tuple = (0.0, 0.0)
    relay_na: Any = "auto"

    def __post_init__(self):
        s = object.__setattr__
        s(self, "mirror_pitch", ck.positive(self.mirror_pitch, "DMD.mirror_pitch", hi=1e-3))
        s(self, "superpixel", ck.integer(self.superpixel, "DMD.superpixel", 1, 256))
        s(self, "bits", ck.integer(self.bits, "DMD.bits", 1, 16))
        ck.choice(self.dither, "DMD.dither", DITHERS)
        s(self, "quantise", ck.flag(self.quantise, "DMD.quantise"))
        if self.magnification is not None:
            s(self, "magnification", ck.positive(self.magnification, "DMD.magnification", hi=1e3))
        s(self, "offset", ck.pair(self.offset, "DMD.offset", bound=0.1))
        if self.relay_na not in (None, "auto"):
            s(self, "relay_na", ck.real(self.relay_na, "DMD.relay_na", 0.0, 1.0, lo_open=True, hi_open=True))
        if self.dither == "bayer":
            sp = self.superpixel
            if sp & (sp - 1):
                raise ValueError(f"DMD.superpixel = {sp}: the Bayer dither needs a power of two")
            if sp * sp < self.levels - 1:
                raise ValueError(f"DMD.superpixel = {sp}: {sp}x{sp} mirrors cannot show "
                                 f"{self.levels} grey levels (DMD.bits = {self.bits})")

    @classmethod
    def ideal(cls) -> DMD:
        """A grey-level amplitude modulator: no dither, no quantisation, no aperture, aligned."""
        return cls(dither="none", quantise=False, relay_na=None)

    @property
    def levels(self) -> int:
        return 1 << self.bits

    def grey_levels(self, amplitude) -> np.ndarray:
        """Nearest grey level (int64) of amplitudes (clipped to [0, 1])."""
        a = np.clip(np.asarray(amplitude, dtype=np.float64), 0.0, 1.0)
        return np.rint(a * (self.levels - 1)).astype(np.int64)

    def fill_counts(self, levels) -> np.ndarray:
        """Mirrors on in the superpixel of each grey level: ``round(g s^2 / (2^bits - 1))``."""
        g = np.asarray(levels, dtype=np.int64)
        return (g * self.superpixel ** 2 * 2 + (self.levels - 1)) // (2 * (self.levels - 1))

    def superpixel_pattern(self, level: int) -> np.ndarray:
        """The binary mirror pattern (bool ``[s, s]``) that shows one grey level."""
        c = int(self.fill_counts(level))
        return bayer_matrix(self.superpixel) < c

    def mirror_pattern(self, levels) -> np.ndarray:
        """Mirror states (uint8 0/1) for grey levels ``[B, H, W]`` -> ``[B, sH, sW]``."""
        c = self.fill_counts(levels)
        s = self.superpixel
        rank = np.tile(bayer_matrix(s), (c.shape[-2], c.shape[-1]))
        return (np.repeat(np.repeat(c, s, axis=-2), s, axis=-1) > rank).astype(np.uint8)

    def relay(self, n: int, k: int, image_shape: tuple[int, int], pitch: float, wavelength: float,
              shift=(0.0, 0.0), fast: bool = True) -> DMDRelay:
        """The map from shown images to the field on the n x n SLM grid (built once); ``shift``
        (x, y metres) moves the image on the grid besides ``offset`` (where the grid sits)."""
        return DMDRelay(self, n, k, image_shape, pitch, wavelength, shift, fast)


class DMDRelay:
    """Shown grey levels or amplitudes ``[B, H, W]`` -> real field ``[B, n, n]`` (float32) on the SLM.

    The image is centred on the grid like the ideal ODU's (``(n - k H) // 2`` dark pixels before
    it), then moved by ``DMD.offset`` and ``shift`` (where the fold puts the grid). Each SLM pixel takes the mean amplitude of the relayed
    mirrors it covers (area resampling); the aperture low-pass follows. When a superpixel spans
    exactly k SLM pixels (the matched relay) each grey level's footprint is a fixed (k+1)^2 stamp,
    precomputed; otherwise (or with ``fast=False``) the full mirror pattern is resampled by two
    matrix products.
    """

    def __init__(self, dmd: DMD, n: int, k: int, image_shape: tuple[int, int], pitch: float,
                 wavelength: float, shift=(0.0, 0.0), fast: bool = True):
        self.dmd, self.n, self.k = dmd, n, k
        self.H, self.W = image_shape
        s = dmd.superpixel
        mag = dmd.magnification if dmd.magnification is not None else k * pitch / (s * dmd.mirror_pitch)
        self.mirror = mag * dmd.mirror_pitch / pitch          # one relayed mirror, in SLM pixels
        sp = s * self.mirror                                  # one superpixel, in SLM pixels
        oy = (n - k * self.H) // 2 + (dmd.offset[1] + shift[1]) / pitch
        ox = (n - k * self.W) // 2 + (dmd.offset[0] + shift[0]) / pitch
        self.origin = (oy, ox)
        self.matched = fast and abs(sp - k) <= 1e-9 * k
        if dmd.relay_na is None:
            cutoff = 1.0
        elif dmd.relay_na == "auto":
            cutoff = 0.9 / sp
        else:
            cutoff = dmd.relay_na * pitch / wavelength
        self.cutoff = cutoff
        self.lowpass = resample.lowpass_matrix(n, cutoff)
        if self.matched:
            self._iy, fy = math.floor(oy), oy - math.floor(oy)
            self._ix, fx = math.floor(ox), ox - math.floor(ox)
            # weights of the k+1 SLM pixels a superpixel can touch, per mirror row / column
            self._wy = resample.overlap_matrix(k + 1, 0.0, 1.0, s, fy, k / s)
            self._wx = resample.overlap_matrix(k + 1, 0.0, 1.0, s, fx, k / s)
            if dmd.dither == "bayer":
                pats = bayer_matrix(s)[None] < np.arange(s * s + 1)[:, None, None]
                self._stamps = (self._wy @ pats @ self._wx.T).astype(np.float32)
        else:
            self._ry = resample.overlap_matrix(n, -oy, 1.0, s * self.H, 0.0, self.mirror)
            self._rx = resample.overlap_matrix(n, -ox, 1.0, s * self.W, 0.0, self.mirror)

    # amplitudes (float in [0, 1]) or grey levels (integers) -> what each superpixel shows
    def _shown(self, values: np.ndarray) -> tuple[str, np.ndarray]:
        d = self.dmd
        if np.issubdtype(values.dtype, np.integer):
            levels = values.astype(np.int64)
        elif d.quantise:
            levels = d.grey_levels(values)
        else:
            a = np.clip(values.astype(np.float64), 0.0, 1.0)
            if d.dither == "none":
                return "grey", a
            return "counts", np.rint(a * d.superpixel ** 2).astype(np.int64)
        if d.dither == "none":
            return "grey", levels / (d.levels - 1)
        return "counts", d.fill_counts(levels)

    def field(self, values: np.ndarray) -> np.ndarray:
        out, band = self.canvas(values)
        if self.lowpass is not None:   # only the rows and columns the image lights go through it
            by, bx = band
            out = resample.apply(out[:, by, bx].astype(np.float32), self.lowpass[:, by], self.lowpass[:, bx])
        return np.ascontiguousarray(out, dtype=np.float32)

    def canvas(self, values: np.ndarray) -> tuple[np.ndarray, tuple[slice, slice]]:
        """The relayed mirrors on the grid before the aperture, ``[B, n, n]``, and the rows and
        columns they light (:meth:`field` is this through the low-pass)."""
        kind, v = self._shown(values)
        if self.matched:
            if kind == "grey":
                stamp = (self._wy.sum(axis=1)[:, None] * self._wx.sum(axis=1)[None, :]).astype(np.float32)
                g = v.astype(np.float32)[..., None, None] * stamp
            else:
                g = self._stamps[v]
            return self._overlap_add(g)
        s = self.dmd.superpixel
        if kind == "grey":
            pat = np.repeat(np.repeat(v, s, axis=-2), s, axis=-1)
        else:
            rank = np.tile(bayer_matrix(s), (self.H, self.W)).astype(np.int64)
            pat = (np.repeat(np.repeat(v, s, axis=-2), s, axis=-1) > rank).astype(np.float64)
        return resample.apply(pat, self._ry, self._rx), (slice(None), slice(None))

    def _overlap_add(self, g: np.ndarray):
        """Add the (k+1)^2 stamps ``g [B, H, W, k+1, k+1]`` of the superpixels onto the n x n grid;
        also returns the rows and columns they cover."""
        B, H, W, k, n = g.shape[0], self.H, self.W, self.k, self.n
        canvas = np.zeros((B, H * k + 1, W * k + 1), dtype=g.dtype)
        canvas[:, :H * k, :W * k] = g[..., :k, :k].transpose(0, 1, 3, 2, 4).reshape(B, H * k, W * k)
        canvas[:, k::k, :W * k] += g[..., k, :k].reshape(B, H, W * k)
        canvas[:, :H * k, k::k] += g[..., :k, k].transpose(0, 1, 3, 2).reshape(B, H * k, W)
        canvas[:, k::k, k::k] += g[..., k, k]
        out = np.zeros((B, n, n), dtype=g.dtype)
        y0, x0 = self._iy, self._ix
        ys, xs = max(y0, 0), max(x0, 0)                       # clip the canvas to the grid
        ye, xe = min(y0 + H * k + 1, n), min(x0 + W * k + 1, n)
        if ye > ys and xe > xs:
            out[:, ys:ye, xs:xe] = canvas[:, ys - y0:ye - y0, xs - x0:xe - x0]
        return out, (slice(ys, max(ye, ys)), slice(xs, max(xe, xs)))
