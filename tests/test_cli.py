"""The optdiff command line end to end on a tiny configuration, and its error handling."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import optdiff
from optdiff.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "examples" / "tiny.toml")
FAST = ["--set", "diffusion.T=40", "--set", "train.steps=4", "--set", "optics.n=24",
        "--set", "data.limit=200"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--config", TINY, "--out", str(out), *FAST]) == 0
    return out


def test_help_of_every_command(capsys):
    for cmd in ([], ["train"], ["sample"], ["denoise"], ["show"], ["demo"]):
        with pytest.raises(SystemExit) as e:
            main(cmd + ["--help"])
        assert e.value.code == 0
        assert "usage: optdiff" in capsys.readouterr().out


def test_python_dash_m_and_version():
    # Run from the tests' folder so `python -m optdiff` finds the same optdiff the tests import
    # (installed, or the in-tree build through the caller's PYTHONPATH), not the source tree.
    pkg_parent = str(Path(optdiff.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    r = subprocess.run([sys.executable, "-m", "optdiff", "--help"], capture_output=True, text=True, env=env,
                       cwd=str(Path(__file__).resolve().parent))
    assert r.returncode == 0 and "train" in r.stdout and "demo" in r.stdout


def test_train_writes_logs_checkpoint_and_figure(trained):
    for name in ("checkpoint.npz", "train_log.csv", "val_log.csv", "summary.json", "training.png"):
        assert (trained / name).exists(), name
    s = json.loads((trained / "summary.json").read_text())
    assert s["steps"] == 16 and len(s["val_mse"]) == 4
    assert s["config"]["optics"]["n"] == 24


def test_sample_writes_png_and_npy(trained, tmp_path):
    assert main(["sample", str(trained / "checkpoint.npz"), "--out", str(tmp_path), "--count", "5",
                 "--seed", "3", "--no-progress"]) == 0
    x = np.load(tmp_path / "samples.npy")
    assert x.shape == (5, 12, 12) and np.all(np.isfinite(x))
    assert (tmp_path / "samples.png").stat().st_size > 100
    assert main(["sample", str(trained / "checkpoint.npz"), "--out", str(tmp_path / "b"), "--count", "5",
                 "--seed", "3", "--no-progress"]) == 0
    assert np.array_equal(x, np.load(tmp_path / "b" / "samples.npy"))
    assert main(["sample", str(trained / "checkpoint.npz"), "--out", str(tmp_path / "c"), "--count", "3",
                 "--sampler", "ddim", "--sample-steps", "5", "--no-progress"]) == 0
    assert np.load(tmp_path / "c" / "samples.npy").shape == (3, 12, 12)


def test_denoise_reports_per_set_mse(trained, tmp_path, capsys):
    out = tmp_path / "d.json"
    assert main(["denoise", str(trained / "checkpoint.npz"), "--samples", "32", "--linear",
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert len(res["ODU"]) == len(res["zero"]) == len(res["linear"]) == 4
    assert "timesteps" in capsys.readouterr().out


def test_show_writes_figures(trained, tmp_path):
    assert main(["show", str(trained / "checkpoint.npz"), "--out", str(tmp_path), "--rows", "3"]) == 0
    for name in ("trajectory.png", "phases.png", "training.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_resume_from_cli(trained, tmp_path):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(trained, run)
    assert main(["train", "--config", TINY, "--out", str(run), *FAST, "--set", "train.steps=6", "--resume"]) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 24


def test_demo_runs_with_tiny_settings(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--config", TINY, *FAST, "--set", "sample.count=4",
                 "--no-progress"]) == 0
    for name in ("samples.png", "samples.npy", "trajectory.png", "phases.png", "training.png", "set_mse.png"):
        assert (tmp_path / name).exists(), name


def _fake_fashion_mnist(folder, count=12):
    # IDX files the loader reads: [count, 28, 28] uint8 images, labels 0..2
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(0).integers(0, 256, (count, 28, 28), dtype=np.uint8)
    lab = (np.arange(count) % 3).astype(np.uint8)
    header = lambda code, dims: bytes([0, 0, 8, code]) + b"".join(int(d).to_bytes(4, "big") for d in dims)  # noqa: E731
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(header(3, img.shape) + img.tobytes())
    with gzip.open(folder / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(header(1, lab.shape) + lab.tobytes())


def test_demo_uses_fashion_mnist_when_installed(tmp_path, monkeypatch, capsys):
    from optdiff import cli
    from optdiff.data import datasets

    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "none"))
    assert datasets.installed_fashion_mnist() is None
    assert cli.demo_config()["data"]["dataset"] == "digits"
    assert "dataset-fashion-mnist" in capsys.readouterr().err
    _fake_fashion_mnist(tmp_path / "fm")
    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "fm"))
    assert datasets.installed_fashion_mnist() == tmp_path / "fm"
    assert datasets.installed_fashion_mnist("test") is None       # no t10k files there
    base = cli.demo_config()
    assert base["data"] == {"dataset": "fashion-mnist", "classes": [0, 1, 2], "val_count": 256}
    assert cli.DEMO_CONFIG["data"]["dataset"] == "digits"          # the constant is not edited
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *FAST, "--set", "data.val_count=4", "--set", "model.sets=2",
                 "--set", "sample.count=4", "--no-progress"]) == 0
    assert "(fashion-mnist)" in capsys.readouterr().err
    assert (out / "samples.png").exists()


def test_bad_config_file_and_flags(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[optics]\nn = -5\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "[optics] n = -5" in capsys.readouterr().err
    assert main(["train", "--config", TINY, "--out", str(tmp_path / "o"), "--set", "optics.wavelenght=1e-6"]) == 2
    assert "unknown key" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.toml")]) == 2
    assert not (tmp_path / "o" / "checkpoint.npz").exists()


def test_corrupt_or_mismatched_checkpoint_fails_cleanly(trained, tmp_path, capsys):
    junk = tmp_path / "junk.npz"
    junk.write_bytes((trained / "checkpoint.npz").read_bytes()[:500])
    out = tmp_path / "s"
    assert main(["sample", str(junk), "--out", str(out)]) == 1
    assert "corrupt" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    # resuming a run with another N refuses the checkpoint
    import shutil

    run = tmp_path / "r"
    shutil.copytree(trained, run)
    before = (run / "checkpoint.npz").read_bytes()
    assert main(["train", "--config", TINY, "--out", str(run), *FAST, "--set", "optics.n=28", "--resume"]) == 1
    assert "n: checkpoint has 24, expected 28" in capsys.readouterr().err
    assert (run / "checkpoint.npz").read_bytes() == before
    # model settings cannot be changed when sampling a trained model
    assert main(["sample", str(trained / "checkpoint.npz"), "--out", str(out), "--set", "optics.n=28"]) == 2


def test_wrong_resolution_dataset_fails_cleanly(trained, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((20, 28, 28)))
    assert main(["train", "--config", TINY, "--out", str(tmp_path / "o"), "--dataset", "npy",
                 "--data-dir", str(tmp_path / "x.npy")]) == 1
    assert "28x28 but the model expects 12x12" in capsys.readouterr().err
    assert main(["denoise", str(trained / "checkpoint.npz"), "--dataset", "npy",
                 "--data-dir", str(tmp_path / "x.npy")]) == 1
