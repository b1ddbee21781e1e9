"""Slow, obviously-correct NumPy reference of the optical model.

Written from the formulas (not from the C++): explicit zero padding with
np.pad, np.fft transforms, frequency grids from np.fft.fftfreq, and a phase
stack as a plain Python loop over samples and layers. Always float64/complex128.
"""

import numpy as np


def transfer_function(npad, pitch, wavelength, z, method):
    f = np.fft.fftfreq(npad, d=pitch)
    fx, fy = np.meshgrid(f, f, indexing="xy")
    k = 2 * np.pi / wavelength
    kx, ky = 2 * np.pi * fx, 2 * np.pi * fy
    kt2 = kx**2 + ky**2
    if method == "fresnel":
        return np.exp(-1j * np.pi * wavelength * z * (fx**2 + fy**2))
    prop = kt2 < k**2
    kz = np.sqrt(np.where(prop, k**2 - kt2, 0.0))
    h = np.where(prop, np.exp(-1j * z * kt2 / (k + kz)), 0.0)
    if method == "bl-as":
        du = 1.0 / (npad * pitch)
        flim = 1.0 / (wavelength * np.sqrt((2 * du * z) ** 2 + 1))
        h = np.where((np.abs(fx) < flim) & (np.abs(fy) < flim), h, 0.0)
    return h


def tilt_phase(n, pitch, wavelength, tx, ty):
    x = (np.arange(n) - (n - 1) / 2) * pitch
    X, Y = np.meshgrid(x, x, indexing="xy")
    k = 2 * np.pi / wavelength
    return np.exp(1j * k * (np.sin(tx) * X + np.sin(ty) * Y))


def propagate(u, pitch, wavelength, z, method="as", padding=1, tilt=(0.0, 0.0)):
    """u: [n, n] complex. Returns the propagated [n, n] field."""
    u = np.asarray(u, dtype=np.complex128)
    n = u.shape[-1]
    u = u * tilt_phase(n, pitch, wavelength, *tilt)
    npad = n * padding
    big = np.pad(u, ((0, npad - n), (0, npad - n)))
    h = transfer_function(npad, pitch, wavelength, z, method)
    out = np.fft.ifft2(np.fft.fft2(big) * h)
    return out[:n, :n]


def adjoint(v, pitch, wavelength, z, method="as", padding=1, tilt=(0.0, 0.0)):
    v = np.asarray(v, dtype=np.complex128)
    n = v.shape[-1]
    npad = n * padding
    big = np.pad(v, ((0, npad - n), (0, npad - n)))
    h = transfer_function(npad, pitch, wavelength, z, method)
    # (F^-1 H F)^H = F^-1 conj(H) F for the unitary-scaled DFT pair.
    out = np.fft.ifft2(np.fft.fft2(big) * np.conj(h))[:n, :n]
    return out * np.conj(tilt_phase(n, pitch, wavelength, *tilt))


def stack_camera_field(u, phases, pitch, wavelength, distances, method="as", padding=1,
                       tilts=None, input_distance=None, input_tilt=(0.0, 0.0)):
    """u: [n, n]; phases: [L, n, n]. Returns the complex camera field."""
    L = len(distances)
    tilts = np.zeros((L, 2)) if tilts is None else np.asarray(tilts)
    e = np.asarray(u, dtype=np.complex128)
    if input_distance is not None:
        e = propagate(e, pitch, wavelength, input_distance, method, padding, input_tilt)
    else:  # a tilted input beam needs no hop: the tilt is a linear phase on the input
        e = e * tilt_phase(u.shape[-1], pitch, wavelength, *input_tilt)
    for l in range(L):
        e = e * np.exp(1j * phases[l])
        e = propagate(e, pitch, wavelength, distances[l], method, padding, tuple(tilts[l]))
    return e


def stack_intensity(u, phases, **kw):
    return np.abs(stack_camera_field(u, phases, **kw)) ** 2
