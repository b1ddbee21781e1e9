"""Fused intensity-MSE training step (PhaseStack.mse_loss_and_grad)."""

import numpy as np
import pytest
import reference as ref
from helpers import TOL, random_field, rel_err
from test_stack import REAL, make_stack, ref_kw

DTYPES = [np.complex64, np.complex128]


def unfused(s, x, ph, target):
    """The same step through the general path: forward_train, the loss in NumPy, backward."""
    inten, tape = s.forward_train(x, ph)
    diff = inten - target
    loss = float(np.mean(diff.astype(np.float64) ** 2))
    gph, _ = s.backward(tape, diff * diff.dtype.type(2.0 / diff.size))
    return loss, gph, inten


@pytest.fixture(params=[1, 2], ids=["periodic-2d", "periodic-blocked"])
def periodic_path(request):
    """Both ways a padding-1 stack is run (the resident path fuses the loss in place)."""
    from optdiff import _core

    _core._set_periodic_path(request.param)
    yield request.param
    _core._set_periodic_path(0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", [1, 2])
@pytest.mark.parametrize("input_distance", [None, 15e-3])
def test_matches_the_unfused_step(rng, periodic_path, dtype, padding, input_distance):
    n, L, B = 14, 3, 5
    s = make_stack(n, L, padding, input_distance=input_distance)
    x = random_field(rng, (B, n, n), dtype)
    ph = rng.uniform(-np.pi, np.pi, (L, n, n)).astype(REAL[dtype])
    target = rng.uniform(0, 2, (B, n, n)).astype(REAL[dtype])
    loss, gph, inten = s.mse_loss_and_grad(x, ph, target, return_intensity=True)
    want_loss, want_g, want_i = unfused(s, x, ph, target)
    assert gph.dtype == REAL[dtype] and gph.shape == (L, n, n)
    assert isinstance(loss, float)
    # Same operations in the same precision; only the loss sum's order differs.
    np.testing.assert_array_equal(inten, want_i)
    assert abs(loss - want_loss) <= 1e-12 * want_loss
    assert rel_err(gph, want_g) < TOL[dtype]


def test_loss_and_gradient_against_reference_and_finite_differences(rng, backend):
    n, L, B = 12, 3, 2
    s = make_stack(n, L, 2, backend=backend)
    x = random_field(rng, (B, n, n))
    ph = rng.uniform(-np.pi, np.pi, (L, n, n))
    target = rng.uniform(0, 1, (B, n, n))

    def ref_loss(p):
        inten = np.stack([np.abs(ref.stack_camera_field(x[b], p, **ref_kw(s))) ** 2 for b in range(B)])
        return float(np.mean((inten - target) ** 2))

    loss, gph = s.mse_loss_and_grad(x, ph, target)
    assert abs(loss - ref_loss(ph)) < 1e-12 * ref_loss(ph)
    h = 1e-6
    for idx in [(0, 0, 0), (1, 5, 7), (2, 11, 3)]:
        pp, pm = ph.copy(), ph.copy()
        pp[idx] += h
        pm[idx] -= h
        fd = (s.mse_loss_and_grad(x, pp, target)[0] - s.mse_loss_and_grad(x, pm, target)[0]) / (2 * h)
        assert abs(fd - gph[idx]) <= 1e-6 * max(abs(fd), 1e-3 * np.abs(gph).max())


@pytest.mark.parametrize("padding", [1, 2])
def test_thread_count_invariance_bitwise(rng, padding):
    n, L, B = 20, 3, 11
    s = make_stack(n, L, padding)
    x = random_field(rng, (B, n, n), np.complex64)
    ph = rng.uniform(-3, 3, (L, n, n)).astype(np.float32)
    target = rng.uniform(0, 1, (B, n, n)).astype(np.float32)
    runs = [s.mse_loss_and_grad(x, ph, target, return_intensity=True, nthreads=t) for t in (1, 2, 3)]
    for loss, gph, inten in runs[1:]:
        assert loss == runs[0][0]
        np.testing.assert_array_equal(gph, runs[0][1])
        np.testing.assert_array_equal(inten, runs[0][2])


def test_a_perfect_target_gives_zero_loss_and_gradient(rng, backend):
    n, L = 10, 2
    s = make_stack(n, L, 2, backend=backend)
    x = random_field(rng, (3, n, n))
    ph = rng.uniform(-3, 3, (L, n, n))
    loss, gph = s.mse_loss_and_grad(x, ph, s.forward(x, ph))
    assert loss == 0.0
    assert not gph.any()


def test_single_field_input(rng, backend):
    n, L = 10, 2
    s = make_stack(n, L, 1, backend=backend)
    x = random_field(rng, (n, n))
    ph = rng.uniform(-3, 3, (L, n, n))
    target = rng.uniform(0, 1, (n, n))
    loss, gph = s.mse_loss_and_grad(x, ph, target)
    want_loss, want_g, _ = unfused(s, x[None], ph, target[None])
    assert abs(loss - want_loss) <= 1e-12 * want_loss
    assert rel_err(gph, want_g) < 1e-12


def test_bad_targets_say_what_to_do(rng, backend):
    n, L = 8, 2
    s = make_stack(n, L, 1, backend=backend)
    x = random_field(rng, (2, n, n), np.complex64)
    ph = np.zeros((L, n, n), np.float32)
    with pytest.raises(TypeError, match="astype"):
        s.mse_loss_and_grad(x, ph, np.zeros((2, n, n)))  # float64 target for a complex64 field
    with pytest.raises(ValueError, match="target must have the"):
        s.mse_loss_and_grad(x, ph, np.zeros((3, n, n), np.float32))
    with pytest.raises(TypeError, match="NumPy array"):
        s.mse_loss_and_grad(x, ph, [[0.0]])
    target = np.zeros((2, n, n), np.float32)
    target[1, 3, 4] = np.nan
    with pytest.raises(ValueError, match="target contains NaN or infinite"):
        s.mse_loss_and_grad(x, ph, target)
    bad = x.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="field or target contains NaN or infinite"):
        s.mse_loss_and_grad(bad, ph, np.zeros((2, n, n), np.float32))
    with pytest.raises(ValueError, match="overflows float32"):
        s.mse_loss_and_grad(x * np.float32(1e30), ph, np.zeros((2, n, n), np.float32))
    bad_ph = ph.copy()
    bad_ph[1, 2, 2] = np.nan
    with pytest.raises(ValueError, match="phases contains NaN"):
        s.mse_loss_and_grad(x, bad_ph, np.zeros((2, n, n), np.float32))
    with pytest.raises(ValueError, match="batch of 0 samples"):
        s.mse_loss_and_grad(x[:0], ph, np.zeros((0, n, n), np.float32))
