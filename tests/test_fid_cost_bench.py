"""benchmarks/fid_cost.py (the cost of FID for 5000 samples) on a tiny case: its three timings
run, the FIDs it prints are those computed directly, and too few samples is a clear error."""

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
fid_cost = pytest.importorskip("benchmarks.fid_cost")

from benchmarks.common import THREAD_ENV  # noqa: E402
from optdiff.data import load_dataset  # noqa: E402
from optdiff.evaluation.cnn_features import CNNFeatureNet  # noqa: E402
from optdiff.evaluation.metrics import frechet_distance  # noqa: E402


@pytest.fixture
def files(tmp_path, monkeypatch):
    for k in THREAD_ENV:  # the script sets them; restore them after the test
        monkeypatch.setenv(k, "1")
    threads = torch.get_num_threads()
    net = CNNFeatureNet(8, list(range(10)), "digits")
    net.save(tmp_path / "cnn.npz")
    np.save(tmp_path / "s.npy", np.random.default_rng(0).uniform(-1, 1, (30, 8, 8)))
    yield tmp_path, net
    torch.set_num_threads(threads)


def test_times_and_values(files, capsys):
    tmp, net = files
    args = ["--samples", str(tmp / "s.npy"), "--cnn", str(tmp / "cnn.npz"), "--dataset", "digits", "--data-dir", "",
            "--classes", "", "--count", "20", "--threads", "1", "--repeats", "2", "--out", str(tmp / "cost.md")]
    assert fid_cost.main(args) == 0
    text = (tmp / "cost.md").read_text()
    assert text == capsys.readouterr().out
    rows = [ln for ln in text.splitlines() if ln.startswith("| cnn: ")]
    assert [r.split(" | ")[0] for r in rows] == ["| cnn: fid", "| cnn: fid_vs_stats", "| cnn: fid_report"]
    real, _ = load_dataset("digits", split="train", size=8, seed=0)
    fid = frechet_distance(net.features(real[:20]), net.features(np.load(tmp / "s.npy")[:20]))
    for r in rows:  # the same FID three ways
        assert f"FID {fid:.4g}" in r and float(r.split(" | ")[1]) > 0


def test_too_few_samples_is_an_error(files):
    tmp, _ = files
    with pytest.raises(ValueError, match="at least 40 images"):
        fid_cost.main(["--samples", str(tmp / "s.npy"), "--cnn", str(tmp / "cnn.npz"), "--dataset", "digits",
                       "--data-dir", "", "--classes", "", "--count", "40", "--threads", "1"])
