"""studies/resolution.py on a tiny two-resolution report (digits at 8x8 and 12x12, seconds of
training): its numbers agree with the report's, the common feature space at the smallest size
reproduces the report's FID there, and bad input is a clear error."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
resolution = pytest.importorskip("studies.resolution")

from optdiff.cli import main as optdiff_main  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

CONFIG = f"""
[report]
T = 20
beta_end = 0.3
sets = 4
metrics = ["mse", "fid", "kid"]
samples = 20
sample_batch = 20
kid_subset_size = 10
kid_subsets = 2
mse_samples = 16
features = ["mlp"]
speed = false

[datasets.d12]
dataset = "digits"
image_size = 12
limit = 160
held_out = 30

[datasets.d8]
dataset = "digits"
image_size = 8
limit = 160
held_out = 30

[models.odu]
config = "{REPO / 'examples' / 'tiny.toml'}"
set = ["train.steps=2", "train.val_every=0", "optics.upsample=0", "optics.fill=0.8"]

[models.linear]
samples_per_set = 100
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resolution")
    cfg = tmp / "res.toml"
    cfg.write_text(CONFIG)
    assert optdiff_main(["report", str(cfg), "--out", str(tmp / "rep"), "--no-progress"]) == 0
    return tmp, cfg


def test_summary_agrees_with_the_report_and_the_common_space_at_the_smallest_size(report):
    tmp, cfg = report
    assert resolution.main([str(tmp / "rep"), "--config", str(cfg), "--out", str(tmp / "res")]) == 0
    s = json.loads((tmp / "res" / "results.json").read_text())
    rep = json.loads((tmp / "rep" / "report.json").read_text())["datasets"]
    assert s["common_size"] == 8 and s["space"] == "mlp"
    assert [(r["resolution"], r["model"]) for r in s["rows"]] == [(8, "odu"), (8, "linear"), (12, "odu"), (12, "linear")]
    for r in s["rows"]:
        q = rep[r["dataset"]]["models"][r["model"]]["quality"]["mlp"]
        assert r["fid"] == q["fid"] and r["n_fake"] == 20 and np.isfinite(r["fid_common"])
        assert 0 < r["fid_common_std"] < np.inf
        if r["resolution"] == 8:
            # the same space, samples and real images as the report's own FID at 8x8
            assert r["fid_common"] == pytest.approx(q["fid"], rel=1e-9)
            assert r["resampling_floor"] == pytest.approx(0.0, abs=1e-8)
        else:
            assert r["resampling_floor"] > 0
        if r["kind"] == "odu":  # fill 0.8 of 32 modulator pixels: floor(25.6 / size) per image pixel
            assert r["pixels_per_image_pixel"] == int(0.8 * 32) // r["resolution"] and r["train_seconds"] > 0
    md = (tmp / "res" / "results.md").read_text()
    assert "| 12 | odu | 2 (24 of 32) |" in md and "| 8 | odu | 3 (24 of 32) |" in md
    assert (tmp / "res" / "resolution.png").stat().st_size > 1000


def test_bootstrap_std_is_zero_for_one_repeated_image_and_shrinks_with_more_samples():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((400, 3))
    # redrawing copies of one row gives the same set every time: no spread (FID needs 2 rows: two copies)
    assert resolution.bootstrap_std(real, np.repeat(rng.standard_normal((1, 3)), 2, axis=0)) < 1e-12
    small = resolution.bootstrap_std(real, rng.standard_normal((20, 3)) + 0.5)
    large = resolution.bootstrap_std(real, rng.standard_normal((2000, 3)) + 0.5)
    assert large < small / 3  # ~1/sqrt(n): 100x more samples, ~1/10 of the spread


def test_to_size_shrinks_by_area_averaging():
    x = np.kron(np.array([[[0.5, -0.5], [1.0, -1.0]]]), np.ones((3, 3)))  # 6x6 blocks of 3x3
    np.testing.assert_allclose(resolution.to_size(x, 2), [[[0.5, -0.5], [1.0, -1.0]]], atol=1e-12)
    assert resolution.to_size(x, 6) is x


def test_bad_input_is_a_clear_error(report, tmp_path):
    tmp, cfg = report
    with pytest.raises(SystemExit):
        resolution.main([str(tmp_path), "--config", str(cfg), "--out", str(tmp_path / "o")])
    other = tmp_path / "other.toml"
    other.write_text(CONFIG.replace('[datasets.d8]\ndataset = "digits"', '[datasets.d8]\ndataset = "npy"\n'
                                    f'data_dir = "{tmp_path / "x.npy"}"'))
    np.save(tmp_path / "x.npy", np.zeros((160, 8, 8)))
    with pytest.raises(ValueError, match="one data set at distinct image sizes"):
        resolution.summarize(tmp / "rep", other)
