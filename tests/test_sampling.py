"""Tests for optdiff.diffusion.samplers with exact (oracle) noise predictors."""

import math

import numpy as np
import pytest

from optdiff.diffusion.samplers import ddim_sample, ddim_timesteps, ddpm_sample
from optdiff.diffusion.schedule import NoiseSchedule

SCHED = NoiseSchedule()  # T = 1000, linear
SMALL = NoiseSchedule(T=40, beta_start=1e-3, beta_end=0.3)


def point_oracle(schedule, point):
    """Exact eps predictor for a data set that is the single image ``point``."""

    def predict(x_t, t):
        return schedule.eps_from_x0(x_t, t, np.broadcast_to(point, x_t.shape))

    return predict


def two_point_oracle(schedule, a, b):
    """Exact eps predictor (E[eps | x_t]) for x0 uniform on the two images a, b."""

    def predict(x_t, t):
        sa, v = schedule.sqrt_alpha_bar[t], 1 - schedule.alpha_bar[t]
        da = ((x_t - sa * a) ** 2).sum(axis=(1, 2))
        db = ((x_t - sa * b) ** 2).sum(axis=(1, 2))
        wa = 1.0 / (1.0 + np.exp(np.clip((da - db) / (2 * v), -700, 700)))  # P(x0 = a | x_t)
        x0 = wa[:, None, None] * a + (1 - wa)[:, None, None] * b
        return schedule.eps_from_x0(x_t, t, x0)

    return predict


def gaussian_oracle(schedule, m, s):
    """Exact eps predictor for i.i.d. pixels x0 ~ N(m, s^2)."""

    def predict(x_t, t):
        ab = schedule.alpha_bar[t]
        x0 = m + s * s * math.sqrt(ab) * (x_t - math.sqrt(ab) * m) / (ab * s * s + 1 - ab)
        return schedule.eps_from_x0(x_t, t, x0)

    return predict


def zero(x, t):
    return np.zeros_like(x)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_shapes_and_seed_determinism(sampler):
    f = (lambda **k: ddpm_sample(zero, SMALL, (3, 5, 4), **k)) if sampler == "ddpm" else \
        (lambda **k: ddim_sample(zero, SMALL, (3, 5, 4), steps=10, eta=1.0, **k))
    a = f(rng=np.random.default_rng(7))
    b = f(rng=np.random.default_rng(7))
    c = f(rng=np.random.default_rng(8))
    assert a.shape == (3, 5, 4) and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(f(rng=7), a)  # int seed accepted


def test_predictor_called_with_batch_and_int_t():
    calls = []

    def spy(x, t):
        calls.append((x.shape, x.dtype, type(t), t))
        return np.zeros_like(x)

    ddpm_sample(spy, SMALL, (2, 3, 3), np.random.default_rng(0))
    assert [c[3] for c in calls] == list(range(SMALL.T - 1, -1, -1))
    assert all(c[0] == (2, 3, 3) and c[1] == np.float64 and c[2] is int for c in calls)
    calls.clear()
    ddim_sample(spy, SCHED, (2, 3, 3), np.random.default_rng(0), steps=7)
    assert [c[3] for c in calls] == list(ddim_timesteps(1000, 7))
    assert all(c[2] is int for c in calls)


@pytest.mark.parametrize("clip", [True, False])
def test_ddpm_point_mass_oracle_returns_the_point(clip):
    point = np.random.default_rng(3).uniform(-0.9, 0.9, (6, 6))
    out = ddpm_sample(point_oracle(SCHED, point), SCHED, (4, 6, 6), np.random.default_rng(0), clip_x0=clip)
    np.testing.assert_allclose(out, np.broadcast_to(point, out.shape), atol=1e-8)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_point_mass_oracle_returns_the_point(eta):
    point = np.random.default_rng(4).uniform(-0.9, 0.9, (5, 5))
    out = ddim_sample(point_oracle(SCHED, point), SCHED, (3, 5, 5), np.random.default_rng(0), steps=20, eta=eta)
    np.testing.assert_allclose(out, np.broadcast_to(point, out.shape), atol=1e-8)


def test_ddpm_gaussian_oracle_reproduces_data_distribution():
    m, s = 0.3, 0.25
    N = 2000 * 4
    out = ddpm_sample(gaussian_oracle(SCHED, m, s), SCHED, (2000, 2, 2), np.random.default_rng(5), clip_x0=False)
    x = out.ravel()
    # tolerances: 5 standard errors plus a small allowance for the T=1000 discretisation
    assert abs(x.mean() - m) < 5 * s / math.sqrt(N) + 0.005
    assert abs(x.std() - s) < 5 * s / math.sqrt(2 * N) + 0.005


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_two_point_oracle_hits_both_modes(sampler):
    a = np.full((2, 2), -0.5)
    b = np.full((2, 2), 0.5)
    pred = two_point_oracle(SCHED, a, b)
    B = 1000
    if sampler == "ddpm":
        out = ddpm_sample(pred, SCHED, (B, 2, 2), np.random.default_rng(6))
    else:
        out = ddim_sample(pred, SCHED, (B, 2, 2), np.random.default_rng(6), steps=100)
    da = np.abs(out - a).max(axis=(1, 2))
    db = np.abs(out - b).max(axis=(1, 2))
    assert np.all(np.minimum(da, db) < 1e-3)  # every sample lands on one of the two points
    frac_a = np.mean(da < db)
    assert abs(frac_a - 0.5) < 5 * math.sqrt(0.25 / B)


def test_ddim_eta0_is_deterministic_given_start_noise():
    shape = (3, 4, 4)
    pred = two_point_oracle(SCHED, np.full((4, 4), -0.5), np.full((4, 4), 0.5))
    r1 = np.random.default_rng(11)
    out1 = ddim_sample(pred, SCHED, shape, r1, steps=25, eta=0.0)
    # eta = 0 draws only the start noise: the generator state afterwards equals one draw
    r2 = np.random.default_rng(11)
    r2.standard_normal(shape)
    assert r1.random() == r2.random()
    out2 = ddim_sample(pred, SCHED, shape, np.random.default_rng(11), steps=25, eta=0.0)
    np.testing.assert_array_equal(out1, out2)
    # with eta > 0 more noise is drawn
    r3 = np.random.default_rng(11)
    ddim_sample(pred, SCHED, shape, r3, steps=25, eta=0.5)
    r4 = np.random.default_rng(11)
    r4.standard_normal(shape)
    assert r3.random() != r4.random()


def test_ddim_timesteps():
    ts = ddim_timesteps(1000, 50)
    assert ts[0] == 999 and ts[-1] == 0 and len(ts) == 50 and np.all(np.diff(ts) < 0)
    np.testing.assert_array_equal(ddim_timesteps(10, 10), np.arange(9, -1, -1))
    np.testing.assert_array_equal(ddim_timesteps(10, 1), [9])
    with pytest.raises(ValueError):
        ddim_timesteps(10, 11)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_nan_prediction_raises_with_step(sampler):
    bad_t = 20 if sampler == "ddpm" else int(ddim_timesteps(SMALL.T, 8)[3])

    def nan_at(x, t):
        e = np.zeros_like(x)
        if t == bad_t:
            e[0, 0, 0] = np.nan
        return e

    with pytest.raises(FloatingPointError, match=f"t={bad_t}"):
        if sampler == "ddpm":
            ddpm_sample(nan_at, SMALL, (2, 3, 3), np.random.default_rng(0))
        else:
            ddim_sample(nan_at, SMALL, (2, 3, 3), np.random.default_rng(0), steps=8)


def test_bad_prediction_shape_raises():
    with pytest.raises(ValueError, match="shape"):
        ddpm_sample(lambda x, t: np.zeros((1, 1)), SMALL, (2, 3, 3), 0)


def test_clipping_keeps_a_bad_predictor_bounded():
    def wild(x, t):
        return np.full_like(x, 1e3) * (-1) ** t

    out = ddpm_sample(wild, SCHED, (2, 4, 4), np.random.default_rng(0), clip_x0=True)
    assert np.all(np.isfinite(out)) and np.abs(out).max() <= 1.0
    out = ddim_sample(wild, SCHED, (2, 4, 4), np.random.default_rng(0), steps=30, clip_x0=True)
    assert np.abs(out).max() <= 1.0
    unclipped = ddim_sample(wild, SCHED, (2, 4, 4), np.random.default_rng(0), steps=30, clip_x0=False)
    assert np.abs(unclipped).max() > 10


def test_trajectory():
    point = np.zeros((3, 3))
    out, traj = ddpm_sample(point_oracle(SMALL, point), SMALL, (2, 3, 3), np.random.default_rng(0),
                            return_trajectory=True)
    t = traj["t"]
    assert t.dtype == np.int64 and t[0] == SMALL.T - 1 and t[-1] == 0 and np.all(np.diff(t) < 0)
    assert len(t) == 10
    assert traj["x"].shape == (10, 2, 3, 3) and traj["x0_pred"].shape == (10, 2, 3, 3)
    np.testing.assert_allclose(traj["x0_pred"], 0.0, atol=1e-9)
    out2, traj2 = ddpm_sample(point_oracle(SMALL, point), SMALL, (2, 3, 3), np.random.default_rng(0),
                              return_trajectory=True, trajectory_steps=[5, 30])
    np.testing.assert_array_equal(out, out2)  # recording does not change the samples
    np.testing.assert_array_equal(traj2["t"], [30, 5])
    # the recorded state at T-1 is the start noise
    np.testing.assert_array_equal(traj["x"][0], np.random.default_rng(0).standard_normal((2, 3, 3)))
    _, tr = ddim_sample(zero, SCHED, (1, 2, 2), 0, steps=5, return_trajectory=True)
    np.testing.assert_array_equal(tr["t"], ddim_timesteps(1000, 5))
    with pytest.raises(ValueError, match="not visited"):
        ddim_sample(zero, SCHED, (1, 2, 2), 0, steps=5, return_trajectory=True, trajectory_steps=[3])


def test_progress_bar_runs(capsys):
    out = ddpm_sample(zero, SMALL, (1, 2, 2), 0, progress=True)
    assert out.shape == (1, 2, 2)
    out = ddim_sample(zero, SMALL, (1, 2, 2), 0, steps=5, progress=True)
    assert out.shape == (1, 2, 2)


@pytest.mark.parametrize("clip", [True, False])
def test_ddim_full_steps_eta1_equals_ddpm(clip):
    pred = two_point_oracle(SMALL, np.full((3, 3), -0.5), np.full((3, 3), 0.9))
    a = ddpm_sample(pred, SMALL, (4, 3, 3), np.random.default_rng(9), clip_x0=clip)
    b = ddim_sample(pred, SMALL, (4, 3, 3), np.random.default_rng(9), steps=SMALL.T, eta=1.0, clip_x0=clip)
    np.testing.assert_allclose(a, b, atol=1e-9)


def test_ddim_full_steps_eta0_reproduces_gaussian():
    m, s = -0.2, 0.3
    N = 2000 * 4
    x = ddim_sample(gaussian_oracle(SCHED, m, s), SCHED, (2000, 2, 2), np.random.default_rng(5),
                    steps=1000, eta=0.0, clip_x0=False).ravel()
    assert abs(x.mean() - m) < 5 * s / math.sqrt(N) + 0.005
    assert abs(x.std() - s) < 5 * s / math.sqrt(2 * N) + 0.005
