"""Tests for optdiff.diffusion.schedule: schedule arrays, q(x_t | x_0) statistics, time sets."""

import math

import numpy as np
import pytest

from optdiff.diffusion.schedule import NoiseSchedule, q_sample, set_index, timestep_sets


def test_linear_defaults():
    s = NoiseSchedule()
    assert s.T == 1000 and s.betas.shape == (1000,) and s.betas.dtype == np.float64
    assert s.betas[0] == pytest.approx(1e-4) and s.betas[-1] == pytest.approx(0.02)
    assert np.all(np.diff(s.betas) > 0)
    np.testing.assert_allclose(s.alphas, 1 - s.betas)
    assert np.all(np.diff(s.alpha_bar) < 0) and 0 < s.alpha_bar[-1] < 1e-4
    with pytest.raises(ValueError):
        s.betas[0] = 0.5  # read-only


def test_alpha_bar_closed_form_linear():
    s = NoiseSchedule(T=1000)
    # closed form: alpha_bar[t] = exp(sum_{k<=t} log(1 - beta_k)) with beta_k = b0 + k (b1 - b0)/(T-1)
    k = np.arange(1000)
    betas = 1e-4 + k * (0.02 - 1e-4) / 999
    closed = np.exp(np.cumsum(np.log1p(-betas)))
    np.testing.assert_allclose(s.alpha_bar, closed, rtol=1e-10)
    np.testing.assert_allclose(s.alpha_bar, np.cumprod(1 - s.betas), rtol=1e-14)
    np.testing.assert_allclose(s.sqrt_alpha_bar ** 2 + s.sqrt_one_minus_alpha_bar ** 2, 1.0, atol=1e-14)
    np.testing.assert_allclose(s.sqrt_recip_alpha_bar * s.sqrt_alpha_bar, 1.0, rtol=1e-14)


def test_alpha_bar_closed_form_cosine():
    T, cs = 1000, 0.008
    s = NoiseSchedule(T=T, kind="cosine")
    f = lambda t: math.cos((t / T + cs) / (1 + cs) * math.pi / 2) ** 2  # noqa: E731
    closed = np.array([f(t + 1) / f(0) for t in range(T)])
    unclipped = s.betas < 0.999
    assert unclipped.sum() >= T - 2  # only the last step(s) hit max_beta
    np.testing.assert_allclose(s.alpha_bar[unclipped], closed[unclipped], rtol=1e-9)
    assert np.all(s.betas <= 0.999) and np.all(s.betas > 0)
    with pytest.raises(ValueError):
        NoiseSchedule(kind="quadratic")


def test_posterior_terms():
    s = NoiseSchedule(T=200)
    assert s.posterior_variance[0] == 0.0
    t = np.arange(1, 200)
    expect = s.betas[t] * (1 - s.alpha_bar[t - 1]) / (1 - s.alpha_bar[t])
    np.testing.assert_allclose(s.posterior_variance[t], expect, rtol=1e-12)
    assert np.all(s.posterior_variance[t] <= s.betas[t])
    assert np.all(np.isfinite(s.posterior_log_variance_clipped))
    # check mean coefficients and variance against Gaussian conditioning of (x_{t-1}, x_t) | x0
    for tt in (1, 50, 199):
        ab, abp, a = s.alpha_bar[tt], s.alpha_bar_prev[tt], s.alphas[tt]
        # joint of (x_{t-1}, x_t) given x0: x_{t-1} ~ N(sqrt(abp) x0, 1 - abp), x_t = sqrt(a) x_{t-1} + sqrt(b) z
        cov_tm1_t = math.sqrt(a) * (1 - abp)
        gain = cov_tm1_t / (1 - ab)
        assert s.posterior_mean_coef2[tt] == pytest.approx(gain, rel=1e-12)
        assert s.posterior_mean_coef1[tt] == pytest.approx(math.sqrt(abp) - gain * math.sqrt(ab), rel=1e-9)
        assert s.posterior_variance[tt] == pytest.approx((1 - abp) - gain * cov_tm1_t, rel=1e-9)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_q_sample_statistics(kind):
    """Monte Carlo mean/variance of q(x_t|x_0) with tolerances from the sample size."""
    s = NoiseSchedule(kind=kind)
    rng = np.random.default_rng(0)
    N = 20000
    x0 = np.array([-0.8, 0.0, 0.6]).reshape(1, 3, 1)
    for t in (0, 10, 250, 999):
        noise = rng.standard_normal((N, 3, 1))
        xt = s.q_sample(np.broadcast_to(x0, (N, 3, 1)), t, noise)
        mean, var = xt.mean(axis=0).ravel(), xt.var(axis=0, ddof=1).ravel()
        v = 1 - s.alpha_bar[t]
        # 5 standard errors: se(mean) = sqrt(v/N); se(var) = v sqrt(2/(N-1)) for Gaussians
        np.testing.assert_allclose(mean, s.sqrt_alpha_bar[t] * x0.ravel(), atol=5 * math.sqrt(v / N))
        np.testing.assert_allclose(var, v, atol=5 * v * math.sqrt(2 / (N - 1)))


def test_q_sample_matches_iterated_forward_chain():
    """Closed form q(x_t|x_0) equals T steps of q(x_t|x_{t-1}) in distribution."""
    s = NoiseSchedule(T=60, beta_start=1e-3, beta_end=0.2)
    rng = np.random.default_rng(1)
    N, x0 = 40000, 0.7
    x = np.full(N, x0)
    for t in range(s.T):
        x = math.sqrt(s.alphas[t]) * x + math.sqrt(s.betas[t]) * rng.standard_normal(N)
    v = 1 - s.alpha_bar[-1]
    assert abs(x.mean() - s.sqrt_alpha_bar[-1] * x0) < 5 * math.sqrt(v / N)
    assert abs(x.var(ddof=1) - v) < 5 * v * math.sqrt(2 / (N - 1))


def test_q_sample_per_sample_t_and_helpers():
    s = NoiseSchedule()
    rng = np.random.default_rng(2)
    x0 = rng.uniform(-1, 1, (4, 5, 5))
    eps = rng.standard_normal((4, 5, 5))
    t = np.array([0, 10, 500, 999])
    xt = s.q_sample(x0, t, eps)
    for i in range(4):
        np.testing.assert_allclose(xt[i], s.q_sample(x0[i:i + 1], int(t[i]), eps[i:i + 1])[0])
    np.testing.assert_allclose(q_sample(s, x0, t, eps), xt)
    np.testing.assert_allclose(s.predict_x0(xt, t, eps), x0, atol=1e-9)
    np.testing.assert_allclose(s.eps_from_x0(xt, t, x0), eps, atol=1e-9)
    with pytest.raises(ValueError, match="out of range"):
        s.q_sample(x0, 1000, eps)
    with pytest.raises(ValueError):
        s.q_sample(x0, 3, eps[:, :4])
    assert NoiseSchedule(**s.config()).config() == s.config()


@pytest.mark.parametrize("T,M", [(1000, 10), (1000, 1), (1000, 7), (10, 10), (17, 5), (5, 3)])
def test_timestep_sets_cover_exactly_once(T, M):
    sets = timestep_sets(T, M)
    assert len(sets) == M
    covered = np.concatenate([np.arange(a, b) for a, b in sets])
    np.testing.assert_array_equal(covered, np.arange(T))  # consecutive, each t once, in order
    sizes = [b - a for a, b in sets]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    idx = set_index(np.arange(T), T, M)
    for m, (a, b) in enumerate(sets):
        assert np.all(idx[a:b] == m)
        assert set_index(a, T, M) == m and set_index(b - 1, T, M) == m
    assert isinstance(set_index(0, T, M), int)


def test_timestep_sets_default_and_errors():
    assert timestep_sets() == [(100 * i, 100 * (i + 1)) for i in range(10)]
    assert set_index(999) == 9 and set_index(99) == 0 and set_index(100) == 1
    with pytest.raises(ValueError):
        timestep_sets(5, 6)
    with pytest.raises(ValueError):
        timestep_sets(5, 0)
    with pytest.raises(ValueError):
        set_index(1000, 1000, 10)
    with pytest.raises(ValueError):
        set_index(-1, 1000, 10)
