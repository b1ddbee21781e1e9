"""Inception-v3 features from a weights file on disk (a randomly initialised network saved by the
test): shapes, the metrics on them, errors for missing or foreign files, and the same numbers as
pytorch-fid's own network when pytorch-fid imports (skipped otherwise)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
inception = pytest.importorskip("optdiff.evaluation.inception")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.set_num_threads(2)
    return inception.save_random_inception(tmp_path_factory.mktemp("incep") / "random_inception.pth", seed=0)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return np.clip(rng.normal(0, 0.5, (4, 12, 12)), -1, 1)


def test_random_inception_from_a_file_gives_features_and_probabilities(weights, images):
    from optdiff.evaluation.metrics import fid_report

    space = inception.load_inception(weights, backend="optdiff", batch=2)
    assert space.backend == "optdiff"
    f, p = space._run(images)
    assert f.shape == (4, 2048) and p.shape == (4, 1008)
    assert np.all(np.isfinite(f)) and np.allclose(p.sum(axis=1), 1.0, atol=1e-9)
    assert f.std(axis=0).mean() > 1e-3  # the inputs are told apart
    rep = fid_report(space, images[:2], images[2:], kid_subsets=2, kid_subset_size=2, is_splits=1)  # cached passes
    assert rep["feature_dim"] == 2048 and np.isfinite(rep["fid"]) and rep["fid"] > 0
    assert np.isfinite(rep["kid"]) and 1.0 <= rep["is"] <= 2.0 + 1e-9


def test_missing_or_foreign_weights_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        inception.load_inception(tmp_path / "absent.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pth"):
        inception.load_inception(junk)
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(10, 2048), "fc.bias": torch.zeros(10), "w": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="not pytorch-fid's FID Inception"):
        inception.load_inception(other, backend="optdiff")
    with pytest.raises(ValueError, match="backend"):
        inception.load_inception(other, backend="tf")


def test_same_features_as_pytorch_fid(weights, images):
    if not inception.pytorch_fid_available():
        pytest.skip("pytorch-fid (with a torchvision matching this torch) is not importable")
    ours = inception.load_inception(weights, backend="optdiff")._run(images[:2])
    theirs = inception.load_inception(weights, backend="pytorch-fid")._run(images[:2])
    assert inception.load_inception(weights, backend="auto").backend == "pytorch-fid"
    # same float32 operations in the same order: equal up to float32 round-off of 2048 sums
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5, atol=1e-5 * np.abs(theirs[0]).max())
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-5, atol=1e-6)


def test_report_with_inception_weights(weights, tmp_path, monkeypatch):
    import json

    from optdiff.cli import main

    monkeypatch.setattr(inception.InceptionFeatures, "input_size", 75)  # the same network, 16x cheaper

    np.save(tmp_path / "given.npy", np.zeros((2, 12, 12)))
    cfg = tmp_path / "r.toml"
    cfg.write_text(f"""
[report]
metrics = ["fid"]
samples = 2
features = []
speed = false
[datasets.digits]
image_size = 12
limit = 12
held_out = 2
[models.given]
kind = "samples"
samples = "{tmp_path / 'given.npy'}"
""")
    assert main(["report", str(cfg), "--out", str(tmp_path / "out"), "--inception-weights", str(weights),
                 "--no-progress"]) == 0
    res = json.loads((tmp_path / "out" / "report.json").read_text())
    q = res["datasets"]["digits"]["models"]["given"]["quality"]["inception"]
    assert q["feature_dim"] == 2048 and np.isfinite(q["fid"])
    assert "Inception-v3: weights" in (tmp_path / "out" / "report.md").read_text()
