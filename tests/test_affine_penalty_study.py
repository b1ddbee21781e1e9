"""studies/affine_penalty.py: the running affine fit of the residual, the target it gives, and the
noise-free affine energy; and the exact noised moments they rest on."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
study = pytest.importorskip("studies.affine_penalty")

from optdiff.diffusion.schedule import NoiseSchedule, noised_moments  # noqa: E402
from optdiff.evaluation.baselines import LinearDenoiser  # noqa: E402

SCHED = NoiseSchedule()
SETS = [(0, 500), (500, 1000)]


def _images(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return np.tanh(rng.standard_normal((n, 2, 2)) + 0.3 * rng.standard_normal((n, 1, 1)))


def test_noised_moments_match_a_monte_carlo_draw():
    x0 = _images()
    (mean, cov, cross), = noised_moments(SCHED, x0.reshape(len(x0), -1), [(300, 400)])
    rng = np.random.default_rng(1)
    n = 200_000
    t = rng.integers(300, 400, n)
    eps = rng.standard_normal((n, 4))
    xt = SCHED.sqrt_alpha_bar[t, None] * x0.reshape(-1, 4)[rng.integers(0, len(x0), n)] \
        + SCHED.sqrt_one_minus_alpha_bar[t, None] * eps
    np.testing.assert_allclose(mean, xt.mean(0), atol=5e-3)
    np.testing.assert_allclose(cov, np.cov(xt.T), atol=1e-2)
    np.testing.assert_allclose(cross * np.eye(4), (eps - eps.mean(0)).T @ (xt - xt.mean(0)) / n, atol=1e-2)
    with pytest.raises(ValueError, match="t_ranges"):
        noised_moments(SCHED, x0.reshape(len(x0), -1), [(0, 10), (400, 300)])


def test_running_fit_recovers_an_affine_residual_and_moves_the_target():
    x0 = _images()
    A = np.array([[0.3, -0.1, 0.0, 0.2], [0.0, 0.1, 0.0, 0.0], [0.1, 0.0, -0.2, 0.0], [0.0, 0.0, 0.0, 0.4]])
    b = np.array([0.05, 0.0, -0.02, 0.01])
    pen = study.AffinePenalty(x0, SCHED, SETS, weight=2.0, decay=0.99, ridge=1e-9)
    rng = np.random.default_rng(2)
    mean = pen.mean[1]

    def residual(r):
        return (r.reshape(len(r), -1) - mean) @ A.T + b

    eps0 = np.zeros((8, 2, 2))
    r0 = SCHED.q_sample(x0[:8], 700, rng.standard_normal((8, 2, 2)))
    assert pen.target(1, r0, eps0) is eps0                                # not warm yet: plain MSE
    for _ in range(3 * pen.window):
        idx, t = rng.integers(0, len(x0), 256), rng.integers(500, 1000, 256)
        eps = rng.standard_normal((256, 2, 2))
        r = SCHED.q_sample(x0[idx], t, eps)
        pen.update(1, r, eps + residual(r).reshape(eps.shape), eps)
    np.testing.assert_allclose(pen.fit(1, r0), residual(r0), atol=0.03)
    np.testing.assert_allclose(pen.target(1, r0, eps0), -2.0 * pen.fit(1, r0).reshape(eps0.shape))
    assert pen.count[0] == 0 and not np.any(pen.fit(0, r0))              # the other set is untouched
    off = study.AffinePenalty(x0, SCHED, SETS, weight=0.0)
    off.count[1] = 10 * off.window
    assert off.target(1, r0, eps0) is eps0
    for bad in ({"weight": -1.0}, {"weight": 1.0, "decay": 1.0}):
        with pytest.raises(ValueError):
            study.AffinePenalty(x0, SCHED, SETS, **bad)


class _Affine:
    """A stand-in model whose prediction is the exact linear denoiser plus ``extra @ x_t``."""

    def __init__(self, x0, extra):
        self.schedule, self.set_ranges = SCHED, SETS
        self.lin = LinearDenoiser(ridge=0.0).fit(x0, SCHED, SETS, None)
        self.extra = extra

    def predict(self, r, t, m):
        flat = r.reshape(len(r), -1)
        return (flat @ self.lin.W[m].T + self.lin.c[m] + flat @ self.extra.T).reshape(r.shape)


def test_affine_energy_is_zero_for_the_linear_denoiser_and_finds_an_added_map():
    x0 = _images(300, seed=3)
    rng = np.random.default_rng(4)
    pen = study.AffinePenalty(x0, SCHED, SETS, weight=0.0)
    zero = pen.affine_energy(_Affine(x0, np.zeros((4, 4))), 0, x0, 40_000, rng)
    assert abs(zero) < 2e-4                               # the normal equations: no affine part left
    extra = 0.1 * np.random.default_rng(5).standard_normal((4, 4))
    (_, cov, _), = noised_moments(SCHED, x0.reshape(len(x0), -1), SETS[:1])
    want = np.trace(extra @ cov @ extra.T) / 4
    got = pen.affine_energy(_Affine(x0, extra), 0, x0, 40_000, rng)
    assert got == pytest.approx(want, rel=0.05)


@pytest.mark.parametrize("args", [["--weight", "-1"], ["--weight", "1", "--decay", "1"], ["--weight", "1", "--steps", "0"],
                                  ["--weight", "1", "--energy-samples", "2"]])
def test_bad_arguments_are_named_before_any_work(args, capsys):
    with pytest.raises(SystemExit) as exc:
        study.main(["--checkpoint", "missing.npz", *args])
    assert exc.value.code == 2
    assert "--" + args[-2].lstrip("-") in capsys.readouterr().err
