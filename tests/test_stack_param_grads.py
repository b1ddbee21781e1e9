"""Parameter gradients of the phase stack: d loss / d (hop distances, tilts, input hop), exact
derivatives of the transfer functions and tilt ramps, checked against central differences."""

import numpy as np
import pytest
from helpers import GEOM, random_field

from optdiff import _core
from optdiff.optics import PhaseStack, StackParamGrads

INPUT_TILT = (1e-3, 0.5e-3)


def make(backend, n, method, padding, distances, tilts, input_distance, input_tilt=INPUT_TILT):
    return PhaseStack(n, distances=list(distances), method=method, padding=padding, tilts=tilts,
                      input_distance=input_distance, input_tilt=input_tilt, backend=backend, **GEOM)


def central(f, x, h):
    return (f(x + h) - f(x - h)) / (2 * h)


def close(fd, got, tol):
    return abs(fd - got) <= tol * max(abs(fd), 1e-3)


@pytest.mark.parametrize("method", ["as", "bl-as", "fresnel"])
@pytest.mark.parametrize("padding", [1, 2])
@pytest.mark.parametrize("input_distance", [None, 15e-3])
def test_parameter_gradients_match_finite_differences(rng, method, padding, input_distance, backend):
    # n = 24 and hops of 4-12 mm: the band-limited method keeps a good part of the spectrum.
    n, L, B = 24, 3, 2
    dist = np.linspace(4e-3, 12e-3, L)
    tilts = np.linspace(-2e-3, 2e-3, 2 * L).reshape(L, 2)
    x = random_field(rng, (B, n, n))
    ph = rng.uniform(-np.pi, np.pi, (L, n, n))
    target = rng.uniform(0, 1, (B, n, n))

    def loss(stack):
        i = stack.forward(x, ph)
        return 0.5 * np.sum((i - target) ** 2)

    s = make(backend, n, method, padding, dist, tilts, input_distance)
    inten, tape = s.forward_train(x, ph)
    gph, gx, pg = s.backward(tape, inten - target, param_grads=True)
    assert isinstance(pg, StackParamGrads)
    assert pg.distances.shape == (L,) and pg.tilts.shape == (L, 2) and pg.input_tilt.shape == (2,)
    assert gx is None
    g_plain, _ = s.backward(tape, inten - target)
    np.testing.assert_array_equal(gph, g_plain)       # the phase gradient is the same either way

    def with_distance(l):
        def f(z):
            d = dist.copy()
            d[l] = z
            return loss(make(backend, n, method, padding, d, tilts, input_distance))
        return f

    def with_tilt(l, a):
        def f(v):
            t = tilts.copy()
            t[l, a] = v
            return loss(make(backend, n, method, padding, dist, t, input_distance))
        return f

    for l in range(L):
        assert close(central(with_distance(l), dist[l], 1e-8), pg.distances[l], 1e-5)
        for a in range(2):
            assert close(central(with_tilt(l, a), tilts[l, a], 1e-7), pg.tilts[l, a], 1e-5)
    for a in range(2):
        def f(v, a=a):
            t = list(INPUT_TILT)
            t[a] = v
            return loss(make(backend, n, method, padding, dist, tilts, input_distance, tuple(t)))
        assert close(central(f, INPUT_TILT[a], 1e-7), pg.input_tilt[a], 1e-5)
    if input_distance is None:
        assert pg.input_distance is None
    else:
        fd = central(lambda z: loss(make(backend, n, method, padding, dist, tilts, z)), input_distance, 1e-8)
        assert close(fd, pg.input_distance, 1e-5)


def test_input_tilt_gradient_without_input_hop(rng, backend):
    # No input hop and no input tilt: the gradient is the derivative at tilt 0.
    n, L = 16, 2
    x = random_field(rng, (2, n, n))
    ph = rng.uniform(-np.pi, np.pi, (L, n, n))
    w = rng.standard_normal((2, n, n))
    s = make(backend, n, "as", 2, [10e-3, 20e-3], None, None, (0.0, 0.0))
    _, tape = s.forward_train(x, ph)
    _, _, pg = s.backward(tape, w, param_grads=True)
    for a in range(2):
        def f(v, a=a):
            t = [0.0, 0.0]
            t[a] = v
            return np.sum(w * make(backend, n, "as", 2, [10e-3, 20e-3], None, None, tuple(t)).forward(x, ph))
        assert close(central(f, 0.0, 1e-7), pg.input_tilt[a], 1e-5)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_recompute_threads_and_input_grad_agree(rng, dtype, backend):
    n, L, B = 20, 3, 5
    real = np.float32 if dtype == np.complex64 else np.float64
    s = make(backend, n, "as", 2, [8e-3, 12e-3, 16e-3], np.full((L, 2), 1e-3), 5e-3)
    x = random_field(rng, (B, n, n), dtype)
    ph = rng.uniform(-3, 3, (L, n, n)).astype(real)
    g = rng.standard_normal((B, n, n)).astype(real)
    _, t1 = s.forward_train(x, ph)
    _, t2 = s.forward_train(x, ph, recompute=True)
    a = s.backward(t1, g, input_grad=True, param_grads=True)
    b = s.backward(t2, g, input_grad=True, param_grads=True, nthreads=1)
    plain = s.backward(t1, g, input_grad=True)
    for u, v in ((a[0], b[0]), (a[1], b[1]), (a[2].distances, b[2].distances), (a[2].tilts, b[2].tilts),
                 (a[2].input_tilt, b[2].input_tilt)):
        np.testing.assert_array_equal(u, v)          # bitwise: fixed summation order
    assert a[2].input_distance == b[2].input_distance
    np.testing.assert_array_equal(a[0], plain[0])
    np.testing.assert_allclose(a[1], plain[1], rtol=0, atol=1e-5 if dtype == np.complex64 else 1e-12)
    assert a[0].dtype == real and a[2].distances.dtype == np.float64


@pytest.fixture
def periodic_path():
    yield _core._set_periodic_path
    _core._set_periodic_path(0)


def test_both_periodic_paths(rng, periodic_path):
    n, L = 15, 3
    x = random_field(rng, (3, n, n))
    ph = rng.uniform(-np.pi, np.pi, (L, n, n))
    g = rng.standard_normal((3, n, n))
    out = []
    for path in (1, 2):
        periodic_path(path)
        s = make("cpu", n, "as", 1, [5e-3, 7e-3, 9e-3], np.full((L, 2), -1e-3), 3e-3)
        _, tape = s.forward_train(x, ph)
        out.append(s.backward(tape, g, param_grads=True)[2])
    np.testing.assert_allclose(out[0].distances, out[1].distances, rtol=1e-10)
    np.testing.assert_allclose(out[0].tilts, out[1].tilts, rtol=1e-10)
    assert abs(out[0].input_distance - out[1].input_distance) <= 1e-10 * abs(out[1].input_distance)


def test_backends_agree(rng, backend):
    n, L = 16, 3
    x = random_field(rng, (5, n, n))
    ph = rng.uniform(-np.pi, np.pi, (L, n, n))
    g = rng.standard_normal((5, n, n))
    got = {}
    for name in ("cpu", backend):
        for padding in (1, 2):
            s = make(name, n, "as", padding, [5e-3, 7e-3, 9e-3], np.full((L, 2), 1e-3), 3e-3)
            for recompute in (False, True):
                _, tape = s.forward_train(x, ph, recompute=recompute)
                got[name, padding, recompute] = s.backward(tape, g, param_grads=True)[2]
    for key, want in got.items():
        other = got[(backend,) + key[1:]]
        np.testing.assert_allclose(other.distances, want.distances, rtol=1e-9)
        np.testing.assert_allclose(other.tilts, want.tilts, rtol=1e-9, atol=1e-12 * np.abs(want.tilts).max())
        np.testing.assert_allclose(other.input_tilt, want.input_tilt, rtol=1e-9)
        assert other.input_distance == pytest.approx(want.input_distance, rel=1e-9)
