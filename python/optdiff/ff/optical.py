"""Optical transforms to put between Forward-Forward layers (NumPy in, camera features out).

Both take a batch of activity vectors ``a [B, D]`` (layer-normalised, so O(1) values), show them
as phases ``phase_scale * a`` on a phase-only SLM, and return the camera intensity ``[B, F]``.
Neither needs a gradient: Forward-Forward only asks the optics for a repeatable transform.

:class:`FreeSpaceTransform` is the project's own optics: the D values are laid out row-major on
an S x S image (S = ceil(sqrt(D)), missing pixels dark), each value covering ``upsample`` x
``upsample`` SLM pixels in the centre of an ``n`` x ``n`` grid, sent through an
:class:`~optdiff.PhaseStack` of ``layers`` fixed random phase masks (seeded, uniform in
[0, 2 pi)) with ``distance`` hops, and the camera intensity is area-binned to ``camera`` x
``camera`` pixels. The masks can also be trained (``trainable``): the gradient of a loss on the
camera features then comes from the stack's exact adjoint (:meth:`backward`).

:class:`FibreTransform` models a multimode fibre: the SLM field ``exp(i phase_scale a) / sqrt(D)``
(unit power) is coupled into ``modes`` guided modes by a fixed coupling matrix ``C [M, D]`` with
orthonormal rows (power outside their span is not guided), propagates through the fibre's
transmission matrix ``T = U_S ... U_1`` (S seeded Haar-random unitary segments, QR of a complex
Gaussian with the phases of R's diagonal removed), and leaves the far end onto a camera of
``pixels`` pixels through ``P [Q, M]`` with orthonormal columns (the modes' fields on the camera,
so no power is lost for Q >= M). The camera records ``Q |P c|^2`` (mean about the guided power).
Everything before detection is unitary on the guided modes: the power in the modes is the same
at both ends and on the camera. Kerr nonlinearity (``kerr`` > 0, self-phase modulation in the
mode basis; cross-phase and dispersion neglected): after each segment each mode's field
is multiplied by ``exp(i (kerr / S) M |c_m|^2)``, so ``kerr`` is the nonlinear phase (radians)
accumulated over the fibre by a mode carrying the mean power 1/M: kerr = gamma P L for a launch
power P. It changes phases only, so the power stays conserved. The matrices are applied with
BLAS (complex64 matrix products): the fibre is a dense matrix, not a diffraction problem.
"""

from __future__ import annotations

import math

import numpy as np

from ..optics import PhaseStack
from ..optics._args import integer

__all__ = ["FreeSpaceTransform", "FibreTransform", "haar_unitary", "orthonormal"]


def _positive_int(value, name: str, lo: int = 1) -> int:
    v = integer(value, name)
    if v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v}")
    return v


def _positive_float(value, name: str, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be finite and {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return v


def orthonormal(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """A complex ``[rows, cols]`` matrix with orthonormal columns (rows >= cols) or rows (rows < cols)."""
    m, k = max(rows, cols), min(rows, cols)
    z = (rng.standard_normal((m, k)) + 1j * rng.standard_normal((m, k))) / math.sqrt(2.0)
    q, r = np.linalg.qr(z)
    q = q * (np.diag(r) / np.abs(np.diag(r)))  # Haar measure: remove QR's phase convention
    return q if rows >= cols else q.T


def haar_unitary(m: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random ``m x m`` unitary (complex128)."""
    return orthonormal(m, m, rng)


def _activities(a: np.ndarray, d: int) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim < 2:
        raise ValueError(f"activities must be [B, ...], got shape {a.shape}")
    a = a.reshape(a.shape[0], -1)
    if a.shape[1] != d:
        raise ValueError(f"activities have {a.shape[1]} values per sample, the transform was built for {d}")
    if not np.isfinite(a).all():
        raise ValueError("activities contain NaN or infinite values")
    return a


class FreeSpaceTransform:
    """Phase-encoded activities through optdiff's :class:`~optdiff.PhaseStack`, camera binned."""

    def __init__(self, in_features: int, *, layers: int = 2, upsample: int = 2, n: int | None = None,
                 camera: int | None = None, distance: float = 3e-3, wavelength: float = 850e-9,
                 pitch: float = 9.2e-6, padding: int = 2, phase_scale: float = 1.0, seed: int = 0,
                 nthreads: int | None = None):
        self.in_features = _positive_int(in_features, "in_features")
        self.layers = _positive_int(layers, "layers")
        self.k = _positive_int(upsample, "upsample")
        self.side = math.isqrt(self.in_features - 1) + 1  # S: the smallest square holding D values
        self.n = _positive_int(self.side * self.k if n is None else n, "n")
        if self.side * self.k > self.n:
            raise ValueError(f"n = {self.n} is smaller than the encoded image ({self.side} x {self.side} values, "
                             f"{self.k} SLM pixels each = {self.side * self.k})")
        self.camera = _positive_int(self.side if camera is None else camera, "camera")
        if self.n % self.camera:
            raise ValueError(f"camera = {self.camera} must divide n = {self.n} (area binning)")
        self.phase_scale = _positive_float(phase_scale, "phase_scale")
        self.nthreads = nthreads
        self.stack = PhaseStack(self.n, wavelength=wavelength, pitch=pitch, distances=[distance] * self.layers,
                                padding=padding)
        rng = np.random.default_rng([integer(seed, "seed"), 0xF5])
        self.phases = (rng.random((self.layers, self.n, self.n)) * 2 * np.pi).astype(np.float32)
        self.off = (self.n - self.side * self.k) // 2
        self.bin = self.n // self.camera

    @property
    def out_features(self) -> int:
        return self.camera * self.camera

    def encode(self, a: np.ndarray) -> np.ndarray:
        """SLM field ``[B, n, n]`` complex64: exp(i phase_scale a) on the centred window, dark elsewhere."""
        a = _activities(a, self.in_features)
        B, S, k = a.shape[0], self.side, self.k
        img = np.zeros((B, S * S), np.float32)
        img[:, :self.in_features] = a
        amp = np.zeros((B, S * S), np.float32)
        amp[:, :self.in_features] = 1.0  # the zero-filled tail of the square stays dark
        v = (amp * np.exp(1j * self.phase_scale * img)).astype(np.complex64).reshape(B, S, S)
        field = np.zeros((B, self.n, self.n), np.complex64)
        w = slice(self.off, self.off + S * k)
        field[:, w, w] = np.repeat(np.repeat(v, k, axis=1), k, axis=2)
        return field

    def _bin(self, intensity: np.ndarray) -> np.ndarray:
        B, c, b = intensity.shape[0], self.camera, self.bin
        return intensity.reshape(B, c, b, c, b).mean(axis=(2, 4)).reshape(B, c * c)

    def __call__(self, a: np.ndarray, phases: np.ndarray | None = None) -> np.ndarray:
        """Camera features ``[B, camera^2]`` (float32)."""
        ph = self.phases if phases is None else phases
        return self._bin(self.stack.forward(self.encode(a), ph, nthreads=self.nthreads))

    def forward_train(self, a: np.ndarray, phases: np.ndarray):
        """Features and the stack's tape, for :meth:`backward` (trainable masks)."""
        I, tape = self.stack.forward_train(self.encode(a), phases, nthreads=self.nthreads)
        return self._bin(I), tape

    def backward(self, tape, grad_features: np.ndarray) -> np.ndarray:
        """d loss / d phases ``[L, n, n]`` from d loss / d features ``[B, camera^2]`` (exact adjoint)."""
        B, c, b = grad_features.shape[0], self.camera, self.bin
        g = np.asarray(grad_features, np.float32).reshape(B, c, 1, c, 1) / (b * b)
        g = np.ascontiguousarray(np.broadcast_to(g, (B, c, b, c, b)).reshape(B, self.n, self.n))
        g_ph, _ = self.stack.backward(tape, g, nthreads=self.nthreads)
        return g_ph

    def flops(self) -> int:
        """Digital cost of simulating one sample (FFT hops ~ 5 N log2 N each way, masks, intensity)."""
        N = self.n * self.stack.padding
        fft = 5 * N * N * math.log2(N)
        return int(self.layers * (2 * fft + 6 * N * N) + 3 * self.n * self.n)


class FibreTransform:
    """Phase-encoded activities through a multimode fibre's transmission matrix onto a camera."""

    def __init__(self, in_features: int, *, modes: int = 240, pixels: int | None = None, phase_scale: float = 1.0,
                 kerr: float = 0.0, segments: int = 8, seed: int = 0):
        self.in_features = _positive_int(in_features, "in_features")
        self.modes = _positive_int(modes, "modes", 2)
        self.pixels = _positive_int(self.in_features if pixels is None else pixels, "pixels")
        self.phase_scale = _positive_float(phase_scale, "phase_scale")
        self.kerr = _positive_float(kerr, "kerr", allow_zero=True)
        self.segments = _positive_int(segments, "segments")
        rng = np.random.default_rng([integer(seed, "seed"), 0xF1B5E])
        self.coupling = orthonormal(self.modes, self.in_features, rng).astype(np.complex64)   # [M, D]
        self.units = [haar_unitary(self.modes, rng) for _ in range(self.segments)]
        T = np.eye(self.modes, dtype=np.complex128)
        for u in self.units:
            T = u @ T
        self.transmission = T.astype(np.complex64)                                           # [M, M]
        self.units = [u.astype(np.complex64) for u in self.units]
        self.to_camera = orthonormal(self.pixels, self.modes, rng).astype(np.complex64)      # [Q, M]
        # row-vector products: fields are [B, M], so multiply by the transposes
        self._cT, self._tT, self._pT = (np.ascontiguousarray(m.T) for m in
                                        (self.coupling, self.transmission, self.to_camera))

    @property
    def out_features(self) -> int:
        return self.pixels

    def slm_field(self, a: np.ndarray) -> np.ndarray:
        """``[B, D]`` complex64: exp(i phase_scale a) / sqrt(D) (unit power per sample)."""
        a = _activities(a, self.in_features)
        return (np.exp(1j * self.phase_scale * a) / math.sqrt(self.in_features)).astype(np.complex64)

    def fields(self, a: np.ndarray):
        """(modes at the input ``[B, M]``, modes at the output ``[B, M]``, camera field ``[B, Q]``)."""
        c_in = self.slm_field(a) @ self._cT
        if self.kerr == 0:
            c = c_in @ self._tT
        else:
            c, step = c_in, self.kerr / self.segments * self.modes
            for u in self.units:
                c = c @ u.T
                c = c * np.exp(1j * step * (c.real ** 2 + c.imag ** 2)).astype(np.complex64)
        return c_in, c, c @ self._pT

    def __call__(self, a: np.ndarray) -> np.ndarray:
        """Camera features ``[B, pixels]`` (float32): pixels x |field|^2."""
        E = self.fields(a)[2]
        return (self.pixels * (E.real ** 2 + E.imag ** 2)).astype(np.float32)

    def flops(self) -> int:
        """Digital cost of simulating one sample (complex multiply-adds x 8 real FLOPs)."""
        M, D, Q = self.modes, self.in_features, self.pixels
        seg = self.segments if self.kerr else 1
        return int(8 * (M * D + seg * M * M + Q * M) + 3 * Q)
