"""Differentiable pieces of the digital twin: the SLM's LUT and fringing blur, the DMD image's
lateral shift, and the camera's area resampling, each with the exact derivatives the twin needs.

* LUT: ``phi = s 2 pi (u + c u (1 - u))``, ``u = level / 2^bits`` (the true-LUT model of
  :class:`SLM`); derivatives in s, c and (straight through the level rounding) the phase asked for.
* Fringing: the separable Gaussian-of-a-pixel blur of :func:`resample.box_gauss`; its derivative
  in the width sigma is the blur with dK/dsigma along one axis and K along the other, summed.
* DMD shift: a sub-pixel move of the (band-limited) relayed image as a Fourier phase ramp; the
  derivative is the ramp times ``-2 pi i f``.
* Camera: area weights :func:`resample.overlap_matrix`, piecewise linear in the relay's offset;
  the derivative moves each pixel's two edges (+1 / -1 times the source value there, over its width).
"""

from __future__ import annotations

import math

import numpy as np

from . import resample

__all__ = ["lut", "lut_derivatives", "single_threaded_blas", "blur_kernels", "blur_axes", "fourier_shift",
           "shift_operator", "ShiftedLowpass", "overlap_and_derivative"]

TWO_PI = 2.0 * math.pi


def lut(u: np.ndarray, scale: float, curvature: float) -> np.ndarray:
    """Phase of the LUT model at drive ``u`` in [0, 1)."""
    return (scale * TWO_PI) * (u + curvature * u * (1.0 - u))


def lut_derivatives(u: np.ndarray, scale: float, curvature: float):
    """d phase / d scale, d / d curvature and d / du of :func:`lut`."""
    w = u * (1.0 - u)
    return TWO_PI * (u + curvature * w), (scale * TWO_PI) * w, (scale * TWO_PI) * (1.0 + curvature * (1.0 - 2.0 * u))


def single_threaded_blas():
    """A context in which NumPy's BLAS runs on one thread (threadpoolctl when installed): the
    twin's small matrix products run from several worker threads, and waking BLAS threads for
    each cost up to 7x the product itself on a loaded machine."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:   # pragma: no cover - threadpoolctl comes with scikit-learn
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def blur_kernels(sigma: float, radius: int | None = None):
    """Kernel ``K(d)`` and ``dK/dsigma`` for offsets ``-R .. R`` (None, None for sigma = 0)."""
    if sigma <= 0:
        return None, None
    R = int(math.ceil(0.5 + 7.5 * sigma)) if radius is None else radius
    d = np.arange(-R, R + 1, dtype=np.float64)
    K = resample.box_gauss(d, sigma)
    s2 = math.sqrt(2.0) * sigma
    # d/dsigma of erf(a / (sqrt 2 sigma)) = -(2 / sqrt pi) exp(-a^2 / (2 sigma^2)) a / (sqrt 2 sigma^2)
    def derf(a):
        return -(2.0 / math.sqrt(math.pi)) * np.exp(-(a / s2) ** 2) * a / (math.sqrt(2.0) * sigma ** 2)
    dK = 0.5 * (derf(d + 0.5) - derf(d - 0.5))
    return K, dK


def blur_axes(a: np.ndarray, ky: np.ndarray | None, kx: np.ndarray | None) -> np.ndarray:
    """Separable blur of the last two axes (rows with ``ky``, columns with ``kx``; None: identity)."""
    if kx is not None:
        a = resample.blur_axis(a, kx, -1)
    if ky is not None:
        a = resample.blur_axis(a, ky, -2)
    return a


def _fft(workers):
    try:   # SciPy's FFT keeps single precision and uses threads; NumPy's is the fallback
        import scipy.fft as f
        return f, {"workers": workers or -1}
    except ImportError:   # pragma: no cover - SciPy comes with the app extras
        return np.fft, {}


def fourier_shift(field: np.ndarray, shift_px, derivative: bool = False, dtype=np.complex128,
                  workers: int | None = None):
    """``field [..., n, n]`` moved by ``shift_px = (x, y)`` pixels (periodic; ``dtype``), and with
    ``derivative`` also its derivatives with respect to x and y. ``workers``: FFT threads (None: all)."""
    fft, kw = _fft(workers)
    n_r, n_c = field.shape[-2:]
    fy = np.fft.fftfreq(n_r)[:, None]
    fx = np.fft.fftfreq(n_c)[None, :]
    ramp = np.exp(-2j * math.pi * (fx * shift_px[0] + fy * shift_px[1])).astype(dtype)
    spec = fft.fft2(np.asarray(field, dtype=dtype), **kw)
    spec *= ramp
    out = fft.ifft2(spec, **kw)
    if not derivative:
        return out
    kx = (-2j * math.pi * fx).astype(dtype)
    ky = (-2j * math.pi * fy).astype(dtype)
    return out, fft.ifft2(spec * kx, **kw), fft.ifft2(spec * ky, **kw)


def shift_operator(n: int, shift: float) -> tuple[np.ndarray, float]:
    """:func:`fourier_shift` along one axis of length n as a matrix: ``(R, c)`` with the shift
    ``S = R + 1j c u u^T``, ``R`` real ``[n, n]``, ``u = (-1)^i``. Every frequency but the Nyquist
    one comes with its conjugate, so only that one (even n) gives an imaginary part, of rank one."""
    f = np.fft.fftfreq(n)
    ramp = np.exp(-2j * math.pi * f * shift)
    S = np.fft.ifft(ramp[:, None] * np.fft.fft(np.eye(n), axis=0), axis=0)
    c = math.sin(math.pi * shift) / n if n % 2 == 0 else 0.0
    return S.real.copy(), c


class ShiftedLowpass:
    """``fourier_shift(ly @ canvas @ lx.T, shift_px)`` without FFTs, for ``canvas [B, a, b]``,
    ``ly [n, a]``, ``lx [m, b]`` (x = columns = ``shift_px[0]``): the real part of the shift folded
    into the low-pass (one real product per side, as the relay's own), the Nyquist terms (rank one
    per side) added from matrix-vector products. ``dtype`` complex; its real precision throughout."""

    def __init__(self, ly: np.ndarray, lx: np.ndarray, shift_px, dtype=np.complex64):
        real = np.finfo(dtype).dtype
        (ry, self.cy), (rx, self.cx) = (shift_operator(ly.shape[0], float(shift_px[1])),
                                        shift_operator(lx.shape[0], float(shift_px[0])))
        uy, ux = (-1.0) ** np.arange(ly.shape[0]), (-1.0) ** np.arange(lx.shape[0])
        self.my, self.mx = (ry @ ly).astype(real), (rx @ lx).astype(real)
        self.wy, self.wx = (uy @ ly).astype(real), (ux @ lx).astype(real)
        self.uy, self.ux = uy.astype(real), ux.astype(real)
        self.dtype, self.real = np.dtype(dtype), real

    def __call__(self, canvas: np.ndarray) -> np.ndarray:
        C = np.asarray(canvas, dtype=self.real)
        xr = resample.apply(C, None, self.mx)                          # C mx^T    [B, a, m]
        out = np.empty(C.shape[:-2] + (self.my.shape[0], self.mx.shape[0]), dtype=self.dtype)
        out.real = resample.apply(xr, self.my, None)                     # my C mx^T
        cwx = C @ self.wx                                                # C wx      [B, a]
        nyq = (self.cy * self.cx) * (cwx @ self.wy)                      # wy^T C wx per image
        out.real -= nyq[..., None, None] * np.multiply.outer(self.uy, self.ux)
        col = cwx @ self.my.T                                            # my C wx   [B, n]
        row = np.einsum("a,...am->...m", self.wy, xr)                    # wy^T C mx^T [B, m]
        out.imag = (self.cx * col)[..., :, None] * self.ux + (self.cy * self.uy)[:, None] * row[..., None, :]
        return out


def overlap_and_derivative(n_dst: int, dst_start: float, dst_width: float, n_src: int):
    """:func:`resample.overlap_matrix` (unit source cells from 0) and its derivative in ``dst_start``."""
    i = np.arange(n_dst, dtype=np.float64)
    j = np.arange(n_src, dtype=np.float64)
    a0 = dst_start + i * dst_width
    a1 = a0 + dst_width
    b0, b1 = j, j + 1.0
    A0, A1, B0, B1 = a0[:, None], a1[:, None], b0[None, :], b1[None, :]
    ov = np.minimum(A1, B1) - np.maximum(A0, B0)
    W = np.clip(ov, 0.0, None) / dst_width
    # where an edge of the cell meets an edge of a source pixel (e.g. an aligned camera) the
    # weights have a kink: take the mean of the two one-sided derivatives (each step 1/2)
    def step(x):
        return (x > 0) + 0.5 * (x == 0)
    dW = step(ov) * (step(B1 - A1) - step(A0 - B0)) / dst_width
    return W, dW
