"""Physical properties and analytic cases."""

import numpy as np
import pytest
from helpers import random_field, rel_err

import optdiff

LAM = 850e-9


@pytest.mark.parametrize("method", ["as", "fresnel"])
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_periodic_propagation_conserves_energy(rng, method, dtype):
    # Without a band limit and with every sampled frequency propagating,
    # periodic propagation is unitary.
    p = optdiff.Propagator(64, wavelength=LAM, pitch=9.2e-6, distance=34.2e-3, method=method, padding=1)
    x = random_field(rng, (4, 64, 64), dtype)
    e_in = np.sum(np.abs(x.astype(np.complex128)) ** 2, axis=(1, 2))
    e_out = np.sum(np.abs(p.forward(x).astype(np.complex128)) ** 2, axis=(1, 2))
    np.testing.assert_allclose(e_out, e_in, rtol=1e-5 if dtype == np.complex64 else 1e-12)


@pytest.mark.parametrize("method", ["as", "fresnel"])
def test_distances_compose(rng, method):
    g = dict(wavelength=LAM, pitch=9.2e-6, method=method, padding=1)
    n = 48
    x = random_field(rng, (2, n, n))
    p1 = optdiff.Propagator(n, distance=12e-3, **g)
    p2 = optdiff.Propagator(n, distance=22e-3, **g)
    p12 = optdiff.Propagator(n, distance=34e-3, **g)
    assert rel_err(p2.forward(p1.forward(x)), p12.forward(x)) < 1e-12
    # Propagating back by -z undoes +z.
    pm = optdiff.Propagator(n, distance=-34e-3, **g)
    assert rel_err(pm.forward(p12.forward(x)), x) < 1e-12


def test_distances_compose_with_padding_for_a_compact_field():
    # Linear convolution: a field well inside the window composes too, up
    # to the little light that leaves the window in between.
    n, pitch = 128, 4e-6
    x = np.zeros((n, n), np.complex128)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    x[:] = np.exp(-(xx**2 + yy**2) / (2 * 8.0**2))
    g = dict(wavelength=LAM, pitch=pitch, padding=2)
    a = optdiff.Propagator(n, distance=2e-3, **g).forward(optdiff.Propagator(n, distance=3e-3, **g).forward(x))
    b = optdiff.Propagator(n, distance=5e-3, **g).forward(x)
    assert rel_err(a, b) < 1e-6


def second_moment_width(intensity, pitch):
    n = intensity.shape[0]
    c = (np.arange(n) - (n - 1) / 2) * pitch
    p = intensity / intensity.sum()
    var_x = np.sum(p.sum(axis=0) * c**2)
    return 2.0 * np.sqrt(var_x)  # I ~ exp(-2 x^2 / w^2)  =>  <x^2> = w^2 / 4


@pytest.mark.parametrize("method", ["as", "bl-as", "fresnel"])
def test_gaussian_beam_width(method):
    n, pitch, w0 = 256, 2e-6, 20e-6
    c = (np.arange(n) - (n - 1) / 2) * pitch
    X, Y = np.meshgrid(c, c)
    u = np.exp(-(X**2 + Y**2) / w0**2).astype(np.complex128)
    zr = np.pi * w0**2 / LAM
    assert abs(second_moment_width(np.abs(u) ** 2, pitch) / w0 - 1) < 1e-3
    for z in (0.5 * zr, zr, 2 * zr):
        out = optdiff.Propagator(n, wavelength=LAM, pitch=pitch, distance=z, method=method, padding=2).forward(u)
        w = second_moment_width(np.abs(out) ** 2, pitch)
        expected = w0 * np.sqrt(1 + (z / zr) ** 2)
        assert abs(w / expected - 1) < 0.01, (z, w, expected)


def test_tilt_moves_the_beam():
    # A beam tilted by theta walks off by z tan(theta) (window wide enough
    # that the spreading beam is not clipped).
    n, pitch, w0 = 512, 2e-6, 60e-6
    c = (np.arange(n) - (n - 1) / 2) * pitch
    X, Y = np.meshgrid(c, c)
    u = np.exp(-(X**2 + Y**2) / w0**2).astype(np.complex128)
    theta, z = 5e-3, 20e-3
    out = optdiff.Propagator(n, wavelength=LAM, pitch=pitch, distance=z, tilt=(theta, 0), padding=2).forward(u)
    i = np.abs(out) ** 2
    xc = np.sum(i.sum(axis=0) * c) / i.sum()
    assert abs(xc - z * np.tan(theta)) < 0.02 * z * np.tan(theta)


@pytest.mark.parametrize("method,tol", [("fresnel", 1e-10), ("as", 2e-2)])
def test_talbot_self_imaging(method, tol):
    # A grating of period d repeats itself at z_T = 2 d^2 / lambda (exactly in
    # the paraxial model on a periodic grid; nearly so for the exact kernel).
    n, pitch, period_px = 128, 5e-6, 16
    d = period_px * pitch
    x = np.arange(n)
    row = 0.5 + 0.5 * np.cos(2 * np.pi * x / period_px) + 0.2 * np.cos(6 * np.pi * x / period_px)
    u = np.tile(row, (n, 1)) * np.tile(row[:, None], (1, n))
    u = u.astype(np.complex128)
    zt = 2 * d**2 / LAM
    p = optdiff.Propagator(n, wavelength=LAM, pitch=pitch, distance=zt, method=method, padding=1)
    assert rel_err(p.forward(u), u) < tol
    # ... and at half the Talbot distance the image is not the grating.
    half = optdiff.Propagator(n, wavelength=LAM, pitch=pitch, distance=zt / 4, method=method, padding=1)
    assert rel_err(np.abs(half.forward(u)), np.abs(u)) > 0.1


def test_band_limit_removes_high_frequencies():
    n, pitch, z = 64, 9.2e-6, 100e-3
    h = optdiff.Propagator(n, wavelength=LAM, pitch=pitch, distance=z, method="bl-as", padding=2).transfer_function()
    f = np.fft.fftfreq(2 * n, pitch)
    flim = 1 / (LAM * np.sqrt((2 * z / (2 * n * pitch)) ** 2 + 1))
    fx = np.broadcast_to(f[None, :], h.shape)
    assert np.all(h[np.abs(fx) >= flim] == 0)
    assert np.all(np.abs(h[(np.abs(fx) < flim) & (np.abs(fx.T) < flim)]) > 0.999)
