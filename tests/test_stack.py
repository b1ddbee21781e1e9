"""Phase stack: reference agreement, adjointness, exact gradients, memory modes."""

import numpy as np
import pytest
import reference as ref
from helpers import ADJ_TOL, GEOM, TOL, random_field, rel_err

import optdiff

DTYPES = [np.complex64, np.complex128]
REAL = {np.complex64: np.float32, np.complex128: np.float64}


def make_stack(n, L, padding, method="as", input_distance=20e-3, tilts=True, backend="cpu"):
    t = np.linspace(-2e-3, 2e-3, 2 * L).reshape(L, 2) if tilts else None
    return optdiff.PhaseStack(n, distances=np.linspace(10e-3, 30e-3, L), method=method,
                              padding=padding, tilts=t, input_distance=input_distance,
                              input_tilt=(1e-3, 0.5e-3), backend=backend, **GEOM)


def ref_kw(stack):
    return dict(pitch=stack.pitch, wavelength=stack.wavelength, distances=stack.distances,
                method=stack.method, padding=stack.padding, tilts=stack.tilts,
                input_distance=stack.input_distance, input_tilt=stack.input_tilt)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ["as", "bl-as", "fresnel"])
@pytest.mark.parametrize("padding", [1, 2])
@pytest.mark.parametrize("n", [13, 20])
def test_forward_matches_reference(rng, dtype, method, padding, n, backend):
    s = make_stack(n, 3, padding, method, backend=backend)
    x = random_field(rng, (2, n, n), dtype)
    ph = rng.uniform(-np.pi, np.pi, (3, n, n)).astype(REAL[dtype])
    inten = s.forward(x, ph)
    cam = s.camera_field(x, ph)
    assert inten.dtype == REAL[dtype] and inten.shape == x.shape
    for b in range(2):
        want = ref.stack_camera_field(x[b], ph.astype(np.float64), **ref_kw(s))
        assert rel_err(cam[b], want) < TOL[dtype]
        assert rel_err(inten[b], np.abs(want) ** 2) < 2 * TOL[dtype]


def test_without_input_hop_or_tilts(rng, backend):
    n = 16
    s = make_stack(n, 2, 2, input_distance=None, tilts=False, backend=backend)
    x = random_field(rng, (1, n, n))
    ph = rng.uniform(-3, 3, (2, n, n))
    want = ref.stack_intensity(x[0], ph, **ref_kw(s))
    assert rel_err(s.forward(x, ph)[0], want) < 1e-12


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", [1, 2])
def test_whole_stack_adjointness(rng, dtype, padding, backend):
    # With fixed phases, u -> camera field is linear (A). backward with
    # dLoss/dI = 1/2 returns A^H A u, so <A u, A v> must equal <u, A^H A v>.
    n, L = 18, 3
    s = make_stack(n, L, padding, backend=backend)
    ph = rng.uniform(-np.pi, np.pi, (L, n, n)).astype(REAL[dtype])
    u = random_field(rng, (3, n, n), dtype)
    v = random_field(rng, (3, n, n), dtype)
    Au, Av = s.camera_field(u, ph), s.camera_field(v, ph)
    _, tape = s.forward_train(v, ph)
    _, AhAv = s.backward(tape, np.full(v.shape, 0.5, REAL[dtype]), input_grad=True)
    lhs = np.vdot(Au.astype(np.complex128), Av)
    rhs = np.vdot(u.astype(np.complex128), AhAv)
    assert abs(lhs - rhs) / (np.linalg.norm(Au) * np.linalg.norm(Av)) < ADJ_TOL[dtype]


@pytest.mark.parametrize("padding", [1, 2])
@pytest.mark.parametrize("input_distance", [None, 15e-3])
def test_gradients_match_finite_differences(rng, padding, input_distance, backend):
    n, L, B = 12, 3, 2
    s = make_stack(n, L, padding, input_distance=input_distance, backend=backend)
    x = random_field(rng, (B, n, n))
    ph = rng.uniform(-np.pi, np.pi, (L, n, n))
    target = rng.uniform(0, 1, (B, n, n))

    def loss(ph_, x_):
        i = s.forward(x_, ph_)
        return 0.5 * np.sum((i - target) ** 2)

    inten, tape = s.forward_train(x, ph)
    gph, gx = s.backward(tape, inten - target, input_grad=True)
    h = 1e-6
    for idx in [(0, 0, 0), (1, 5, 7), (2, 11, 3), (L - 1, 6, 6)]:
        pp, pm = ph.copy(), ph.copy()
        pp[idx] += h
        pm[idx] -= h
        fd = (loss(pp, x) - loss(pm, x)) / (2 * h)
        assert abs(fd - gph[idx]) <= 1e-6 * max(1.0, abs(fd))
    for idx in [(0, 0, 0), (1, 4, 9)]:
        for unit in (1.0, 1j):
            xp, xm = x.copy(), x.copy()
            xp[idx] += h * unit
            xm[idx] -= h * unit
            fd = (loss(ph, xp) - loss(ph, xm)) / (2 * h)
            got = gx[idx].real if unit == 1.0 else gx[idx].imag
            assert abs(fd - got) <= 1e-6 * max(1.0, abs(fd))


def test_random_directional_derivative(rng, backend):
    # A random direction in phase space, not just single entries.
    n, L = 16, 4
    s = make_stack(n, L, 2, backend=backend)
    x = random_field(rng, (3, n, n))
    ph = rng.uniform(-np.pi, np.pi, (L, n, n))
    w = rng.standard_normal((3, n, n))
    d = rng.standard_normal((L, n, n))
    _, tape = s.forward_train(x, ph)
    gph, _ = s.backward(tape, w)
    h = 1e-6
    fd = (np.sum(w * s.forward(x, ph + h * d)) - np.sum(w * s.forward(x, ph - h * d))) / (2 * h)
    assert abs(fd - np.sum(gph * d)) < 1e-6 * abs(fd)


@pytest.mark.parametrize("dtype", DTYPES)
def test_recompute_mode_gives_identical_gradients(rng, dtype, backend):
    n, L = 20, 3
    s = make_stack(n, L, 2, backend=backend)
    x = random_field(rng, (5, n, n), dtype)
    ph = rng.uniform(-3, 3, (L, n, n)).astype(REAL[dtype])
    g = rng.standard_normal((5, n, n)).astype(REAL[dtype])
    i1, t1 = s.forward_train(x, ph)
    i2, t2 = s.forward_train(x, ph, recompute=True)
    assert t2.nbytes == 0 and t1.nbytes == 5 * (L + 1) * n * n * np.dtype(dtype).itemsize
    np.testing.assert_array_equal(i1, i2)
    a = s.backward(t1, g, input_grad=True)
    b = s.backward(t2, g, input_grad=True)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_thread_count_invariance_bitwise(rng):
    n, L = 24, 3
    s = make_stack(n, L, 2)
    x = random_field(rng, (9, n, n), np.complex64)
    ph = rng.uniform(-3, 3, (L, n, n)).astype(np.float32)
    g = rng.standard_normal((9, n, n)).astype(np.float32)
    i1, t1 = s.forward_train(x, ph, nthreads=1)
    i2, t2 = s.forward_train(x, ph, nthreads=2)
    np.testing.assert_array_equal(i1, i2)
    g1 = s.backward(t1, g, input_grad=True, nthreads=1)
    g2 = s.backward(t2, g, input_grad=True, nthreads=2)
    np.testing.assert_array_equal(g1[0], g2[0])
    np.testing.assert_array_equal(g1[1], g2[1])


def test_phases_edited_after_forward_do_not_change_backward(rng, backend):
    n, L = 12, 2
    s = make_stack(n, L, 1, backend=backend)
    x = random_field(rng, (2, n, n))
    ph = rng.uniform(-3, 3, (L, n, n))
    g = rng.standard_normal((2, n, n))
    _, tape = s.forward_train(x, ph)
    want = s.backward(tape, g)[0]
    ph += 1.0
    np.testing.assert_array_equal(s.backward(tape, g)[0], want)


def test_single_field_input(rng, backend):
    n, L = 14, 2
    s = make_stack(n, L, 2, backend=backend)
    x = random_field(rng, (n, n))
    ph = rng.uniform(-3, 3, (L, n, n))
    i, tape = s.forward_train(x, ph)
    assert i.shape == (n, n)
    gph, gx = s.backward(tape, np.ones((n, n)), input_grad=True)
    assert gph.shape == (L, n, n) and gx.shape == (n, n)


def test_tape_storage_reuse(rng):
    n, L = 16, 2
    s = make_stack(n, L, 2)
    ph = rng.uniform(-3, 3, (L, n, n))
    x1, x2 = random_field(rng, (3, n, n)), random_field(rng, (3, n, n))
    g = rng.standard_normal((3, n, n))
    _, t1 = s.forward_train(x1, ph)
    want = s.backward(s.forward_train(x2, ph)[1], g)[0]
    buf = t1.saved
    _, t2 = s.forward_train(x2, ph, reuse=t1)
    assert t2.saved is buf
    np.testing.assert_array_equal(s.backward(t2, g)[0], want)
    # A tape of another shape is not reused.
    _, t3 = s.forward_train(x2[:2], ph, reuse=t2)
    assert t3.saved is not buf and t3.saved.shape[0] == 2


def test_tape_storage_is_reused_only_when_unreferenced(rng):
    n, L = 12, 2
    s = make_stack(n, L, 1)
    ph = rng.uniform(-3, 3, (L, n, n))
    x = random_field(rng, (2, n, n))
    _, t1 = s.forward_train(x, ph)
    kept = t1.saved
    _, t2 = s.forward_train(x, ph)          # t1 still alive: must not be overwritten
    assert t2.saved is not kept
    before = kept.copy()
    del t1, t2
    _, t3 = s.forward_train(2 * x, ph)      # t1's buffer is referenced by `kept`: untouched
    np.testing.assert_array_equal(kept, before)
    buf_id = id(t3.saved)
    del t3
    _, t4 = s.forward_train(x, ph)          # nothing refers to t3's buffer any more: reused
    assert id(t4.saved) == buf_id


@pytest.fixture
def periodic_path():
    """Force how padding-1 hops are transformed; restores 'auto' afterwards."""
    from optdiff import _core

    yield _core._set_periodic_path
    _core._set_periodic_path(0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("input_distance", [None, 15e-3])
def test_both_periodic_paths_match_reference_and_each_other(rng, periodic_path, dtype, input_distance):
    # Padding 1 runs either on FFTW 2-D plans with the field resident in the
    # workspace (masks, tape and gradients fused between hops) or on the
    # blocked row/column passes; the timing picks one, so test both.
    n, L, B = 15, 3, 3
    x = random_field(rng, (B, n, n), dtype)
    ph = rng.uniform(-np.pi, np.pi, (L, n, n)).astype(REAL[dtype])
    g = rng.standard_normal((B, n, n)).astype(REAL[dtype])
    results = []
    for path in (1, 2):
        periodic_path(path)
        s = make_stack(n, L, 1, input_distance=input_distance)
        inten, tape = s.forward_train(x, ph)
        gph, gx = s.backward(tape, g, input_grad=True)
        for b in range(B):
            want = ref.stack_camera_field(x[b], ph.astype(np.float64), **ref_kw(s))
            assert rel_err(inten[b], np.abs(want) ** 2) < 2 * TOL[dtype]
        gph_r, gx_r = s.backward(s.forward_train(x, ph, recompute=True)[1], g, input_grad=True)
        np.testing.assert_array_equal(gph, gph_r)
        np.testing.assert_array_equal(gx, gx_r)
        results.append((inten, gph, gx))
    for a, b in zip(*results):
        assert rel_err(a, b) < 10 * TOL[dtype]
