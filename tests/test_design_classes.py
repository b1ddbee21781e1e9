"""Helpers of studies/design_classes.py: the tilt-as-ramp equivalence and the optics' share."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
design_classes = pytest.importorskip("studies.design_classes")

from optdiff.config import Config  # noqa: E402
from optdiff.diffusion.model import TimeAwareODU  # noqa: E402


def test_a_tilted_hop_is_a_phase_ramp_on_the_mask_before_it():
    # double precision stack: the two agree to rounding, so tilts add nothing to a free-phase design
    assert design_classes.tilt_as_ramp(n=32, layers=2) < 1e-12


def tiny_model():
    cfg = Config.from_dict({"optics": {"n": 24, "upsample": 2, "distance": 3e-3},
                            "model": {"image_size": 8, "sets": 2, "x0_sets": [0]},
                            "diffusion": {"T": 40, "beta_end": 0.3}, "train": {"threads": 1}})
    return TimeAwareODU(cfg, nthreads=1)


@pytest.mark.parametrize("m", [0, 1])  # set 0 predicts x0, set 1 eps
def test_optics_share_is_zero_without_the_camera_term_and_one_without_digital_terms(m):
    model = tiny_model()
    rng = np.random.default_rng(0)
    lo, hi = model.set_ranges[m]
    t = rng.integers(lo, hi, 64)
    r, eps = rng.standard_normal((64, 8, 8)), rng.standard_normal((64, 8, 8))
    p = model.params
    p["scale"][m], p["skip"][m], p["offset"][m] = 0.0, 0.7, 0.1
    share, digital = design_classes.shares(model, m, r, t, eps)
    assert share == 0.0
    assert digital == pytest.approx(float(np.mean((model.predict(r, t, m) - eps) ** 2)), rel=1e-12)
    if m == 1:  # eps read-out: with no skip the prediction is the camera term plus a constant
        p["scale"][m], p["skip"][m] = 2.0, 0.0
        share, _ = design_classes.shares(model, m, r, t, eps)
        assert share == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize("m", [0, 1])
def test_linear_part_is_affine_and_the_rest_is_the_quadratic_term(m):
    model = tiny_model()
    model.params["phases"][m] = np.random.default_rng(1).uniform(-np.pi, np.pi, model.params["phases"][m].shape)
    rng = np.random.default_rng(2)
    lo, hi = model.set_ranges[m]
    t = np.full(16, lo)
    # r and -r inside the encoding's unclipped range (-bias / scale, (1 - bias) / scale)
    o = model.cfg.optics
    bound = 0.9 * min(o.amp_bias, 1 - o.amp_bias) / o.amp_scale
    r = np.clip(rng.standard_normal((16, 8, 8)), -bound, bound)
    lin, clipped = design_classes.linear_part(model, m, r, t)
    zero, _ = design_classes.linear_part(model, m, np.zeros_like(r), t)
    half, _ = design_classes.linear_part(model, m, 0.5 * r, t)
    assert clipped == 0.0
    # the stack runs in float32 and the intensity is dominated by the bias's: rounding of that
    tol = 100 * np.finfo(np.float32).eps * np.max(np.abs(full_scale := model.predict(r, t, m)))
    assert np.max(np.abs((half - zero) - 0.5 * (lin - zero))) <= tol   # affine in r
    # what it leaves out is quadratic: the full prediction's even part about r = 0
    full, minus = full_scale, model.predict(-r, t, m)
    full_half = model.predict(0.5 * r, t, m)
    q, q_half = full - lin, full_half - half
    assert np.max(np.abs(q)) > 20 * tol                                  # the test can see it
    np.testing.assert_allclose(q_half, 0.25 * q, rtol=0, atol=tol)      # quadratic in r
    assert np.max(np.abs((full + minus) / 2 - zero - q)) <= tol         # the even part


def test_empirical_bayes_is_the_posterior_mean_over_the_training_images():
    from optdiff.diffusion.schedule import NoiseSchedule

    sched = NoiseSchedule()
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, (5, 4, 4))
    t = np.array([100, 400, 400, 900, 30, 650, 999])
    eps = rng.standard_normal((7, 4, 4))
    r = sched.q_sample(x[rng.integers(0, 5, 7)], t, eps)
    got = design_classes.empirical_bayes(x, r, t, sched, chunk=3)
    for i in range(7):   # reference: the posterior weights of each training image, one by one
        ab = sched.alpha_bar[t[i]]
        logp = np.array([-np.sum((r[i] - np.sqrt(ab) * xj) ** 2) / (2 * (1 - ab)) for xj in x])
        w = np.exp(logp - logp.max())
        x0 = np.tensordot(w / w.sum(), x, axes=1)
        np.testing.assert_allclose(got[i], (r[i] - np.sqrt(ab) * x0) / np.sqrt(1 - ab), rtol=1e-9, atol=1e-12)
    # one training image: the posterior is certain and the noise is recovered exactly
    one = design_classes.empirical_bayes(x[:1], sched.q_sample(np.repeat(x[:1], 7, 0), t, eps), t, sched)
    np.testing.assert_allclose(one, eps, rtol=1e-9, atol=1e-9)
