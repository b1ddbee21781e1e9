"""Single-hop propagation against the NumPy reference, and its adjoint."""

import numpy as np
import pytest
import reference as ref
from helpers import ADJ_TOL, GEOM, TOL, random_field, rel_err

import optdiff

METHODS = ["as", "bl-as", "fresnel"]
DTYPES = [np.complex64, np.complex128]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("padding", [1, 2])
@pytest.mark.parametrize("n", [15, 16, 30])
def test_forward_matches_reference(rng, dtype, method, padding, n, backend):
    z = 17.1e-3
    tilt = (2e-3, -1e-3)
    p = optdiff.Propagator(n, backend=backend, distance=z, method=method, padding=padding, tilt=tilt, **GEOM)
    x = random_field(rng, (3, n, n), dtype)
    y = p.forward(x)
    assert y.dtype == dtype and y.shape == x.shape
    for b in range(3):
        want = ref.propagate(x[b], GEOM["pitch"], GEOM["wavelength"], z, method, padding, tilt)
        assert rel_err(y[b], want) < TOL[dtype]
        back = ref.adjoint(x[b], GEOM["pitch"], GEOM["wavelength"], z, method, padding, tilt)
        assert rel_err(p.adjoint(x)[b], back) < TOL[dtype]


@pytest.mark.parametrize("method", METHODS)
def test_evanescent_waves_are_cut(rng, method):
    # Sub-half-wavelength pitch: the grid holds evanescent frequencies.
    g = dict(wavelength=850e-9, pitch=0.3e-6)
    n, z = 32, 5e-6
    p = optdiff.Propagator(n, distance=z, method=method, padding=1, **g)
    h = p.transfer_function()
    f = np.fft.fftfreq(n, g["pitch"])
    fx, fy = np.meshgrid(f, f)
    evanescent = fx**2 + fy**2 > 1 / g["wavelength"] ** 2
    assert evanescent.any()
    if method == "fresnel":
        np.testing.assert_allclose(np.abs(h), 1.0, atol=1e-12)
    else:
        assert np.all(h[evanescent] == 0)
    x = random_field(rng, (n, n))
    want = ref.propagate(x, g["pitch"], g["wavelength"], z, method, 1)
    assert rel_err(p.forward(x), want) < 1e-12


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("padding", [1, 2])
def test_adjointness(rng, dtype, method, padding, backend):
    n = 24
    p = optdiff.Propagator(n, backend=backend, distance=30e-3, method=method, padding=padding, tilt=(1e-3, 3e-3), **GEOM)
    x = random_field(rng, (4, n, n), dtype)
    y = random_field(rng, (4, n, n), dtype)
    ax, ahy = p.forward(x), p.adjoint(y)
    lhs = np.vdot(ax.astype(np.complex128), y)
    rhs = np.vdot(x.astype(np.complex128), ahy)
    scale = np.linalg.norm(ax) * np.linalg.norm(y)
    assert abs(lhs - rhs) / scale < ADJ_TOL[dtype]


def test_transfer_function_matches_reference():
    for method in METHODS:
        p = optdiff.Propagator(20, distance=40e-3, method=method, padding=2, **GEOM)
        h = p.transfer_function()
        want = ref.transfer_function(40, GEOM["pitch"], GEOM["wavelength"], 40e-3, method)
        assert h.shape == (40, 40)
        # Phases reach ~300 rad here; a few ulps of that is ~1e-13 absolute.
        np.testing.assert_allclose(h, want, rtol=0, atol=2e-12)
        assert p.transfer_function(np.complex64).dtype == np.complex64


def test_in_place_and_out_argument(rng, backend):
    n = 20
    p = optdiff.Propagator(n, backend=backend, distance=10e-3, padding=2, **GEOM)
    x = random_field(rng, (2, n, n), np.complex64)
    want = p.forward(x)
    out = np.empty_like(x)
    r = p.forward(x, out=out)
    assert r is out
    np.testing.assert_array_equal(out, want)
    y = x.copy()
    p.forward(y, out=y)
    np.testing.assert_array_equal(y, want)


def test_single_field_and_batch_agree(rng, backend):
    n = 18
    p = optdiff.Propagator(n, backend=backend, distance=10e-3, padding=2, **GEOM)
    x = random_field(rng, (3, n, n))
    batch = p.forward(x)
    for b in range(3):
        np.testing.assert_array_equal(p.forward(x[b]), batch[b])


def test_no_copy_of_input(rng):
    # The input is read in place: a read-only view works and is untouched.
    n = 16
    p = optdiff.Propagator(n, distance=5e-3, **GEOM)
    x = random_field(rng, (2, n, n))
    x0 = x.copy()
    x.setflags(write=False)
    p.forward(x)
    np.testing.assert_array_equal(x, x0)


def test_functional_propagate(rng):
    x = random_field(rng, (12, 12))
    a = optdiff.propagate(x, distance=3e-3, padding=1, **GEOM)
    b = ref.propagate(x, GEOM["pitch"], GEOM["wavelength"], 3e-3, "as", 1)
    assert rel_err(a, b) < 1e-12


def test_thread_count_invariance(rng):
    n = 40
    p = optdiff.Propagator(n, distance=20e-3, padding=2, tilt=(1e-3, 0), **GEOM)
    x = random_field(rng, (7, n, n), np.complex64)
    a = p.forward(x, nthreads=1)
    b = p.forward(x, nthreads=2)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(p.adjoint(x, nthreads=1), p.adjoint(x, nthreads=2))


def test_large_odd_sizes_like_the_reference_work(rng):
    # 300 = 2^2 3 5^2 and an awkward prime-ish size both work (not only powers of two).
    for n in (300, 97):
        p = optdiff.Propagator(n, distance=34.2e-3, padding=2, **GEOM)
        x = random_field(rng, (1, n, n))
        want = ref.propagate(x[0], GEOM["pitch"], GEOM["wavelength"], 34.2e-3, "as", 2)
        assert rel_err(p.forward(x)[0], want) < 1e-12
