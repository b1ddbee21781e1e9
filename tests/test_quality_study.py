"""studies/quality.py: FID rows per feature space, the CNN space's report section, its feature net."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
quality = pytest.importorskip("studies.quality")
common = pytest.importorskip("studies.common")

from optdiff.evaluation.metrics import frechet_distance  # noqa: E402


class PixelFeatures:
    """A feature net whose features are the first 6 pixels: FID is then a plain Gaussian distance."""

    def features(self, x):
        return np.asarray(x, dtype=np.float64).reshape(len(x), -1)[:, :6]


def test_fid_rows_scores_each_seed_against_the_held_out_images():
    rng = np.random.default_rng(0)
    real_a, real_b = rng.uniform(-1, 1, (200, 4, 4)), rng.uniform(-1, 1, (200, 4, 4))
    noise = np.clip(rng.standard_normal((200, 4, 4)), -1, 1)
    far = np.clip(real_a + 0.7, -1, 1)
    gens = {"ODU": [real_a.copy(), far], "linear": [3 * real_a, noise]}   # 3 * real_a: clipped to [-1, 1]
    fid, per_seed = quality.fid_rows(PixelFeatures(), gens, real_a, real_b, noise)
    f = PixelFeatures().features
    assert per_seed["ODU"][0] == pytest.approx(0.0, abs=1e-6)          # the held-out images themselves
    assert per_seed["ODU"][1] == pytest.approx(frechet_distance(f(far), f(real_a)))
    assert per_seed["linear"][0] == pytest.approx(frechet_distance(f(np.clip(3 * real_a, -1, 1)), f(real_a)))
    assert fid["ODU samples vs real"] == pytest.approx(np.mean(per_seed["ODU"]))
    assert fid["linear samples vs real"] == pytest.approx(np.mean(per_seed["linear"]))
    assert fid["noise vs real"] == pytest.approx(per_seed["linear"][1])
    assert 0 < fid["real (train) vs real (held-out)"] < fid["noise vs real"]


def _result(with_cnn: bool) -> dict:
    r = {"dataset": "fashion-mnist", "train_images": 10, "held_out": 5, "train_wall_s": 1.0,
         "config": {"sample": {"sampler": "ddim"}}, "per_set_mse": {"ODU": [0.5], "linear": [0.6]},
         "set_ranges": [[0, 10]], "odu_beats_zero_everywhere": True, "feature_net_accuracy": 0.9,
         "fid": {"ODU samples vs real": 3.0, "linear samples vs real": 4.0},
         "fid_per_seed": {"seeds": [0, 1], "ODU": [2.0, 4.0], "linear": [4.0, 4.0]},
         "odu_beats_linear_seeds": 1, "odu_beats_linear_fid": True,
         "sampling": {"ODU": {"seconds": 1.0, "nan": 0, "max_abs": 1.0}}}
    if with_cnn:
        r["fid_cnn"] = {"accuracy": 0.95, "fid": {"ODU samples vs real": 12.5, "linear samples vs real": 11.0},
                        "per_seed": {"ODU": [12.0, 13.0], "linear": [10.0, 12.0]},
                        "odu_beats_linear_fid": False, "odu_beats_linear_seeds": 0}
    return r


def test_markdown_has_a_cnn_section_only_when_measured():
    class Args:
        argv = ["--datasets", "fashion-mnist"]

    plain = quality.markdown([_result(False)], Args())
    assert "CNN features" not in plain and "sampling: ODU: 1 s" in plain
    md = quality.markdown([_result(True)], Args())
    assert "held-out accuracy 0.950" in md and "| ODU samples vs real | 12.500 |" in md
    assert "ODU 12.00, 13.00; linear 10.00, 12.00 (ODU better on 0 of 2 seeds)" in md
    assert "(CNN): **False**" in md and "sampling: ODU: 1 s" in md


def test_quality_cnn_net_is_seeded_and_leaves_torch_threads_alone():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 96)
    x = np.clip(rng.normal(0, 0.3, (96, 8, 8)) + np.where(y[:, None, None] == 1, 0.5, -0.5), -1, 1)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = common.quality_cnn_net(x[:64], y[:64], x[64:], y[64:], "digits", seed=3)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    b = common.quality_cnn_net(x[:64], y[:64], x[64:], y[64:], "digits", seed=3)
    assert a.accuracy_held_out is not None and a.accuracy_held_out > 0.9   # two well-separated classes
    np.testing.assert_allclose(a.features(x[64:]), b.features(x[64:]), rtol=0, atol=1e-9)


def test_affine_ridge_recovers_an_affine_map_and_its_ridge_matches_the_normal_equations():
    from optdiff.evaluation.baselines import affine_ridge
    rng = np.random.default_rng(2)
    x = rng.standard_normal((400, 5))
    W, c = rng.standard_normal((3, 5)), rng.standard_normal(3)
    y = x @ W.T + c
    W_fit, c_fit = affine_ridge(x, y, ridge=0.0)
    np.testing.assert_allclose(W_fit, W, atol=1e-10)
    np.testing.assert_allclose(c_fit, c, atol=1e-10)
    # with a ridge: the minimiser of ||y - x W^T - c||^2 + ridge * n * ||W||^2, checked by its gradient
    y = y + rng.standard_normal(y.shape)
    W_r, c_r = affine_ridge(x, y, ridge=0.3)
    resid = y - x @ W_r.T - c_r
    np.testing.assert_allclose(-resid.T @ x + 0.3 * len(x) * W_r, 0, atol=1e-9)
    np.testing.assert_allclose(resid.sum(axis=0), 0, atol=1e-9)


class TwoSets:
    """A model stand-in: sets 0 (t < 5) and 1, predicting 1 everywhere."""

    def set_of(self, t):
        return int(t >= 5)

    def predict_eps(self, x, t):
        return np.full(np.shape(x), 1.0)


def test_residual_corrected_adds_the_map_of_the_set_of_t():
    lr = pytest.importorskip("studies.linear_residual")

    D = 4
    maps = [(np.zeros((D, D)), np.full(D, 2.0)), (np.eye(D), np.zeros(D))]
    pred = lr.ResidualCorrected(TwoSets(), maps)
    x = np.arange(8.0).reshape(2, 2, 2)
    np.testing.assert_array_equal(pred(x, 0), 3.0)          # set 0: 1 + the constant 2
    np.testing.assert_array_equal(pred(x, 7), 1.0 + x)      # set 1: 1 + the identity map


def test_feature_seeds_names_the_missing_samples(tmp_path, capsys):
    fs = pytest.importorskip("studies.feature_seeds")
    with pytest.raises(SystemExit):
        fs.main(["--samples", str(tmp_path)])
    assert "samples_odu.npy" in capsys.readouterr().err


def test_residual_corrected_leaves_the_other_sets_alone():
    lr = pytest.importorskip("studies.linear_residual")

    maps = [(np.zeros((4, 4)), np.full(4, 2.0))] * 2
    pred = lr.ResidualCorrected(TwoSets(), maps, sets=[1])
    x = np.zeros((1, 2, 2))
    np.testing.assert_array_equal(pred(x, 0), 1.0)   # set 0: not fixed
    np.testing.assert_array_equal(pred(x, 7), 3.0)   # set 1: fixed


def test_linear_samples_takes_a_count_or_exact_and_the_report_says_which():
    import argparse

    assert common.linear_samples("exact") is None and common.linear_samples(" Exact ") is None
    assert common.linear_samples("20000") == 20000
    for bad in ("1", "many", "2.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="sample"):
            common.linear_samples(bad)

    class Args:
        argv = []

    r = _result(False)
    assert "fitted on 20000 noised images per set" in quality.markdown([r], Args())   # older results
    r["linear_samples"] = "exact"
    assert "in closed form (exact)" in quality.markdown([r], Args())
