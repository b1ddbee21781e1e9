"""Tests for optdiff.evaluation.baselines and optdiff.evaluation.metrics (small data, a few seconds in total)."""

import math

import numpy as np
import pytest

from optdiff.data import load_dataset
from optdiff.diffusion.schedule import NoiseSchedule, timestep_sets
from optdiff.evaluation.baselines import LinearDenoiser, ZeroPredictor, normalize_sets, per_set_mse
from optdiff.evaluation.metrics import (
    METRICS_NOTE,
    FeatureNet,
    fid_report,
    frechet_distance,
    inception_score,
    kid,
)

SCHED = NoiseSchedule()


@pytest.fixture(scope="module")
def digits8():
    x, y = load_dataset("digits", size=8)  # D = 64 keeps the regressions tiny
    xt, yt = load_dataset("digits", size=8, split="test")
    return x, y, xt, yt


@pytest.fixture(scope="module")
def linear(digits8):
    return LinearDenoiser(ridge=1e-3).fit(digits8[0], SCHED, 10, 1500, np.random.default_rng(0))


@pytest.fixture(scope="module")
def featnet(digits8):
    x, y, _, _ = digits8
    return FeatureNet(hidden=(48,), max_iter=150, seed=0).fit(x, y)


# ------------------------------------------------------------------------------ baselines

def test_zero_predictor_mse_is_one(digits8):
    x = digits8[0]
    z = ZeroPredictor()
    assert z(np.ones((2, 8, 8)), 5).shape == (2, 8, 8)
    mse = per_set_mse(z, x, SCHED, 10, np.random.default_rng(1), samples=256)
    # mean of 256 * 64 squared N(0,1) values: standard error sqrt(2 / 16384)
    np.testing.assert_allclose(mse, 1.0, atol=5 * math.sqrt(2 / (256 * 64)))


def test_linear_beats_zero_on_every_set(digits8, linear):
    _, _, xt, _ = digits8  # held-out images
    zero = per_set_mse(ZeroPredictor(), xt, SCHED, 10, np.random.default_rng(2), samples=256)
    lin = per_set_mse(linear, xt, SCHED, 10, np.random.default_rng(2), samples=256)
    assert lin.shape == (10,)
    assert np.all(lin < zero)
    assert np.all(lin[1:] < 0.5 * zero[1:])  # the noisy sets are far easier than "predict 0"
    assert lin[-1] < 0.01  # at t ~ T, x_t is almost pure noise: eps ~ x_t


def test_per_set_mse_is_paired_and_deterministic(digits8, linear):
    x = digits8[0]
    a = per_set_mse(linear, x, SCHED, 4, np.random.default_rng(3), samples=64)
    b = per_set_mse(linear, x, SCHED, 4, np.random.default_rng(3), samples=64)
    np.testing.assert_array_equal(a, b)
    seen = []

    def spy(x_t, t):
        seen.append((t, x_t.copy()))
        return np.zeros_like(x_t)

    per_set_mse(spy, x, SCHED, [(0, 5), (500, 502)], np.random.default_rng(4), samples=10, timesteps_per_set=3)
    seen2 = []
    per_set_mse(lambda x_t, t: seen2.append((t, x_t.copy())) or x_t, x, SCHED, [(0, 5), (500, 502)],
                np.random.default_rng(4), samples=10, timesteps_per_set=3)
    assert [t for t, _ in seen] == [0, 2, 4, 500, 501]
    assert sum(v.shape[0] for _, v in seen[:3]) == 10
    for (t1, v1), (t2, v2) in zip(seen, seen2):  # identical inputs whatever the predictor
        assert t1 == t2
        np.testing.assert_array_equal(v1, v2)


def test_linear_denoiser_api(digits8, linear):
    x = digits8[0]
    assert linear.W.shape == (10, 64, 64) and linear.c.shape == (10, 64)
    assert linear.sets == timestep_sets(1000, 10)
    xt = SCHED.q_sample(x[:3], 250, np.random.default_rng(0).standard_normal((3, 8, 8)))
    e = linear.predict(xt, 250)
    assert e.shape == (3, 8, 8) and e.dtype == np.float64
    np.testing.assert_allclose(linear(xt, 250), e)
    assert linear.set_for(250) == 2
    restored = LinearDenoiser.from_arrays(linear.to_arrays(), SCHED.T)
    np.testing.assert_array_equal(restored.predict(xt, 250), e)
    with pytest.raises(ValueError, match="fitted on"):
        linear.predict(np.zeros((1, 5, 5)), 3)
    part = LinearDenoiser().fit(x, SCHED, [(0, 100)], 200, 0)
    with pytest.raises(ValueError, match="none of the fitted"):
        part.predict(xt, 500)


def test_linear_denoiser_is_optimal_on_gaussian_data():
    """On Gaussian images the posterior-mean eps is linear: the fit must reach its MSE."""
    rng = np.random.default_rng(0)
    D, s = 16, 0.4
    x0 = (s * rng.standard_normal((4000, 4, 4))).clip(-1, 1)
    sched = NoiseSchedule(T=100)
    lin = LinearDenoiser(ridge=1e-6).fit(x0, sched, [(50, 51)], 4000, rng)
    ab = sched.alpha_bar[50]
    var = np.var(x0)
    optimal = ab * var / (ab * var + 1 - ab)  # Var(eps | x_t) per pixel for i.i.d. Gaussian x0
    mse = per_set_mse(lin, x0, sched, [(50, 51)], np.random.default_rng(1), samples=2000)[0]
    assert abs(mse - optimal) < 0.03 * optimal + 5 * optimal * math.sqrt(2 / (2000 * D))


def test_exact_linear_denoiser_is_the_limit_of_the_sampled_fit():
    """The closed-form fit (samples_per_set=None) is what the sampled normal equations converge
    to: their difference shrinks like sqrt(D / n), and held out the exact fit is no worse."""
    rng = np.random.default_rng(0)
    x0 = np.tanh(rng.standard_normal((300, 3, 3)) + rng.standard_normal((300, 1, 1)))  # correlated pixels
    sets = [(0, 40), (40, 300), (300, 1000)]
    exact = LinearDenoiser(ridge=1e-3).fit(x0, SCHED, sets, None)
    gaps = []
    for n in (4000, 64000):
        sampled = LinearDenoiser(ridge=1e-3).fit(x0, SCHED, sets, n, np.random.default_rng(n))
        gaps.append([np.linalg.norm(sampled.W[k] - exact.W[k]) / np.linalg.norm(exact.W[k]) for k in range(3)]
                    + [np.linalg.norm(sampled.c[k] - exact.c[k]) for k in range(3)])
    gaps = np.array(gaps)
    # 16x the samples: a quarter of the gap expected (sqrt), each entry (W in the ill-conditioned
    # low-noise set 0 is the loosest: 0.08 relative at 64,000 samples)
    assert np.all(gaps[1] < 0.5 * gaps[0]) and np.all(gaps[1] < 0.15), gaps
    for k in range(3):
        np.testing.assert_allclose(exact.W[k], exact.W[k].T, atol=1e-12)
    big = LinearDenoiser(ridge=1e-3).fit(x0, SCHED, sets, 64000, np.random.default_rng(1))
    e_mse = per_set_mse(exact, x0, SCHED, sets, np.random.default_rng(5), samples=20000)
    s_mse = per_set_mse(big, x0, SCHED, sets, np.random.default_rng(5), samples=20000)
    assert np.all(e_mse <= s_mse * (1 + 1e-3)), (e_mse, s_mse)


def test_exact_linear_denoiser_solves_the_normal_equations():
    """Under the exact distribution of x_t the residual of the exact fit is uncorrelated with x_t
    (ridge 0): E[(eps - W x_t - c) x_t^T] = 0 and E[eps - W x_t - c] = 0, with the moments
    written out per timestep here (the fit averages them over the set)."""
    rng = np.random.default_rng(1)
    flat = np.tanh(rng.standard_normal((50, 4)) + 0.5)
    a, b = 100, 130
    lin = LinearDenoiser(ridge=0.0).fit(flat.reshape(50, 2, 2), SCHED, [(a, b)], None)
    W, c = lin.W[0], lin.c[0]
    mu, second = flat.mean(0), flat.T @ flat / 50
    cross, mean_res = np.zeros((4, 4)), np.zeros(4)
    for t in range(a, b):
        s, u = SCHED.sqrt_alpha_bar[t], SCHED.sqrt_one_minus_alpha_bar[t]
        exx = s * s * second + u * u * np.eye(4)            # E[x_t x_t^T]
        ex, eex = s * mu, u * np.eye(4)                       # E[x_t], E[eps x_t^T]
        cross += eex - W @ exx - np.outer(c, ex)
        mean_res += -W @ ex - c
    np.testing.assert_allclose(cross / (b - a), 0.0, atol=1e-10)
    np.testing.assert_allclose(mean_res / (b - a), 0.0, atol=1e-10)


def test_normalize_sets():
    assert normalize_sets(5, 100) == timestep_sets(100, 5)
    assert normalize_sets([(0, 10), (20, 30)], 100) == [(0, 10), (20, 30)]
    with pytest.raises(ValueError, match="overlap"):
        normalize_sets([(0, 10), (5, 30)], 100)
    with pytest.raises(ValueError):
        normalize_sets([(5, 5)], 100)
    with pytest.raises(ValueError):
        normalize_sets([(90, 101)], 100)


# ------------------------------------------------------------------------------ metrics

def test_featurenet(digits8, featnet):
    _, _, xt, yt = digits8
    f = featnet.features(xt)
    assert f.shape == (xt.shape[0], 48) and f.dtype == np.float64 and f.min() >= 0
    p = featnet.predict_proba(xt)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert featnet.accuracy(xt, yt) > 0.8
    clone = FeatureNet.from_arrays(featnet.to_arrays())
    np.testing.assert_array_equal(clone.features(xt), f)
    np.testing.assert_array_equal(clone.predict(xt), featnet.predict(xt))
    with pytest.raises(ValueError, match="pixels"):
        featnet.features(np.zeros((2, 5, 5)))


def test_featurenet_binary(digits8):
    x, y, _, _ = digits8
    keep = y < 2
    net = FeatureNet(hidden=(8,), max_iter=100).fit(x[keep], y[keep])
    p = net.predict_proba(x[keep])
    assert p.shape == (keep.sum(), 2)
    assert net.accuracy(x[keep], y[keep]) > 0.9


def test_frechet_distance_gaussian_closed_form():
    rng = np.random.default_rng(0)
    N, d = 20000, 4
    a = rng.standard_normal((N, d))
    assert frechet_distance(a, a) < 1e-8
    mu = np.array([0.5, -0.5, 0.0, 1.0])
    sd = np.array([1.0, 2.0, 0.5, 1.0])
    b = mu + sd * rng.standard_normal((N, d))
    exact = mu @ mu + np.sum((1 - sd) ** 2)  # = 1.5 + 1.25
    assert abs(frechet_distance(a, b) - exact) < 0.1
    shifts = [frechet_distance(a, a + delta) for delta in (0.0, 0.1, 0.5, 1.0)]
    assert shifts[0] < 1e-8 and all(np.diff(shifts) > 0)
    np.testing.assert_allclose(shifts[1:], [d * 0.01, d * 0.25, d * 1.0], rtol=1e-6)


def test_frechet_distance_degenerate_features():
    rng = np.random.default_rng(1)
    a = np.zeros((50, 6))
    a[:, :2] = rng.standard_normal((50, 2))  # rank-deficient covariance (dead ReLU units)
    b = a + 0.0
    b[:, 0] += 1.0
    fd = frechet_distance(a, b)
    assert np.isfinite(fd) and abs(fd - 1.0) < 1e-3
    with pytest.raises(ValueError):
        frechet_distance(a[:1], b)
    with pytest.raises(ValueError):
        frechet_distance(a, b[:, :3])


def test_kid():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((600, 8))
    b = rng.standard_normal((600, 8))
    same, same_std = kid(a, b, subsets=20, subset_size=200)
    assert abs(same) < 3 * same_std + 1e-3
    shifted, _ = kid(a, b + 0.5, subsets=20, subset_size=200)
    far, _ = kid(a, b + 1.5, subsets=20, subset_size=200)
    assert shifted > 10 * abs(same) and far > shifted
    assert kid(a, b, subsets=3, subset_size=50, rng=7) == kid(a, b, subsets=3, subset_size=50, rng=7)


def test_inception_score():
    C = 5
    onehot = np.eye(C)[np.arange(100) % C]
    assert inception_score(onehot, splits=1)[0] == pytest.approx(C, rel=1e-6)
    same = np.tile(np.array([[0.2, 0.3, 0.5, 0.0, 0.0]]), (40, 1))
    assert inception_score(same, splits=4)[0] == pytest.approx(1.0, abs=1e-9)


def test_fid_report(digits8, featnet):
    x, _, xt, _ = digits8
    good = fid_report(featnet, x, xt, kid_subsets=10, kid_subset_size=100)
    noise = np.clip(np.random.default_rng(0).standard_normal(xt.shape), -1, 1)
    bad = fid_report(featnet, x, noise, kid_subsets=10, kid_subset_size=100)
    for key in ("fid", "kid", "kid_std", "is", "is_std", "is_real", "n_real", "n_fake", "feature_dim", "note"):
        assert key in good
    assert good["note"] == METRICS_NOTE and "Inception-v3" in METRICS_NOTE
    assert good["n_real"] == x.shape[0] and good["feature_dim"] == 48
    assert bad["fid"] > 5 * good["fid"] and bad["kid"] > good["kid"] and bad["is"] < good["is"]
    assert all(isinstance(v, (int, float, str)) for v in good.values())
