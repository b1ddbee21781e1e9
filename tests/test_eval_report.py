"""``optdiff report`` end to end on tiny settings (digits, a few training steps), resuming without
redoing finished parts, and bad configurations: a clear error naming the problem, exit status 2,
and no report.md."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from optdiff.cli import main

REPO = Path(__file__).resolve().parent.parent
TINY_ODU = REPO / "examples" / "tiny.toml"

BASE = f"""
[report]
title = "tiny report"
T = 20
beta_end = 0.3
sets = 4
metrics = ["mse", "fid", "kid", "is", "chain"]
samples = 24
sample_batch = 24
kid_subset_size = 12
kid_subsets = 3
is_splits = 4
mse_samples = 32
chain_steps = [19, 10, 0]
chain_samples = 12
features = ["cnn"]
feature_epochs = 1
speed_batch = 16
speed_repeats = 1

[datasets.digits]
image_size = 12
limit = 240
held_out = 40

[models.odu]
config = "{TINY_ODU}"
set = ["train.steps=4", "train.val_every=0"]

[models.linear]
samples_per_set = "exact"
"""

TORCH_MODELS = """
[models.fc]
size = 30000
steps = 5
batch = 16
work_size = 16

[models.unet]
size = "matched"
steps = 2
batch = 8
work_size = 16
"""


def _cuda_emu():
    try:
        from optdiff.optics.backends import get_backend

        get_backend("cuda-emu")
    except Exception:  # not built here
        return False
    return True


GPU = "cuda-emu" if _cuda_emu() else "cuda"  # cuda-emu: the GPU row's code path, run on the CPU
BASE = BASE.replace("speed_repeats = 1", f'speed_repeats = 1\ngpu_backend = "{GPU}"')
_BASE = BASE


def _torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _write(tmp_path, text, name="report.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_report_end_to_end_and_resume(tmp_path, capsys):
    if not _torch():  # without PyTorch: the NumPy models and the MLP feature space
        text = BASE.replace('features = ["cnn"]', 'features = ["mlp"]')
    else:
        text = BASE + TORCH_MODELS
    cfg, out = _write(tmp_path, text), tmp_path / "out"
    assert main(["report", str(cfg), "--out", str(out), "--no-progress"]) == 0
    report = (out / "report.md").read_text()
    res = json.loads((out / "report.json").read_text())
    models = res["datasets"]["digits"]["models"]
    want = ["odu", "linear"] + (["fc", "unet"] if _torch() else [])
    assert sorted(models) == sorted(want)
    for name in want:
        r = models[name]
        assert len(r["mse"]) == 4 and all(0 < v < 2 for v in r["mse"]), name
        q = next(iter(r["quality"].values()))
        assert np.isfinite(q["fid"]) and q["n_fake"] == 24 and 1.0 <= q["is"] <= 10.0, name
        assert r["chain"]["t"] == [19, 10, 0] and len(r["chain"]["fid"]) == 3
        assert r["speed"]["image_steps_per_s"] > 0 and r["params"] > 0 and r["flops_per_step"] > 0
        assert (out / "models" / "digits" / name / "samples.png").is_file()
        assert f"| {name} |" in report
    assert models["odu"]["params"] == 4 * 4 * 32 * 32  # M x L x N^2 of examples/tiny.toml
    if _torch():
        assert abs(models["unet"]["params"] - models["odu"]["params"]) <= 0.05 * models["odu"]["params"]
    for heading in ("## Feature spaces", "### Per-set eps-MSE", "### Sample quality", "### FID along the chain",
                    "### Where the ODU wins and where it loses", "## Speed and energy",
                    "reference work: lab bench (quoted)", "optical bench, per-pixel energies"):
        assert heading in report, heading
    assert "Inception-v3 rows: **skipped**" in report
    if GPU == "cuda-emu":
        assert "cuda-emu: the GPU code on the CPU" in report and models["odu"]["speed_gpu"]["image_steps_per_s"] > 0
    else:
        assert "GPU row: not measured (no CUDA device" in report
    assert (out / "set_mse_digits.png").is_file() and (out / "chain_digits.png").is_file()
    first = res["parts_done_this_run"]
    assert "digits/odu/train" in first and "digits/linear/quality" in first

    # run again: every part is read back, nothing is recomputed, the numbers are the same
    (out / "report.md").unlink()
    assert main(["report", str(cfg), "--out", str(out), "--no-progress"]) == 0
    again = json.loads((out / "report.json").read_text())
    assert again["parts_done_this_run"] == {}
    assert _numbers(again["datasets"]["digits"]["models"]["odu"]) == _numbers(models["odu"])
    assert (out / "report.md").is_file()

    # an interrupted run: drop one finished part; only it is redone
    (out / "parts" / "digits" / "linear" / "quality.json").unlink()
    assert main(["report", str(cfg), "--out", str(out), "--no-progress"]) == 0
    third = json.loads((out / "report.json").read_text())
    assert list(third["parts_done_this_run"]) == ["digits/linear/quality"]
    assert _numbers(third["datasets"]["digits"]["models"]["linear"]) == _numbers(models["linear"])

    # the same folder with another configuration is refused
    other = _write(tmp_path, text.replace("samples = 24", "samples = 28"), "other.toml")
    assert main(["report", str(other), "--out", str(out), "--no-progress"]) == 2
    assert "holds the parts of another report configuration" in capsys.readouterr().err


def _numbers(r):
    """A model's results without timings (metrics recomputed on the same samples are identical)."""
    return {"mse": r["mse"], "chain": r["chain"]["fid"],
            "quality": {sp: {k: v[k] for k in ("fid", "kid", "kid_std", "is", "is_std")} for sp, v in r["quality"].items()}}


def _bad(tmp_path, capsys, text, *match, code=2):
    out = tmp_path / "bad_out"
    shutil.rmtree(out, ignore_errors=True)
    rc = main(["report", str(_write(tmp_path, text, "bad.toml")), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == code, err
    for m in match:
        assert m in err, (m, err)
    assert not (out / "report.md").exists() and not (out / "report.json").exists()
    return err


def test_bad_configurations_are_clear_errors_and_leave_no_report(tmp_path, capsys):
    # Without PyTorch the CNN feature space is itself a configuration error: use the MLP's.
    BASE = _BASE if _torch() else _BASE.replace('features = ["cnn"]', 'features = ["mlp"]')
    _bad(tmp_path, capsys, BASE + "\n[models.resnet]\n", "unknown model", "resnet")
    _bad(tmp_path, capsys, BASE.replace('"chain"]', '"chain", "lpips"]'), "unknown metric 'lpips'")
    _bad(tmp_path, capsys, BASE.replace("[datasets.digits]", "[datasets.cifar]"), "unknown data set", "cifar")
    _bad(tmp_path, capsys, BASE.replace("samples = 24", "samples = 3"), "IS needs at least is_splits = 4")
    _bad(tmp_path, capsys, BASE.replace("samples = 24", "samples = 1").replace("is_splits = 4", "is_splits = 1"),
         "FID and KID need at least 2 samples")
    _bad(tmp_path, capsys, BASE.replace("chain_steps = [19, 10, 0]", "chain_steps = [20]"), "chain_steps")
    _bad(tmp_path, capsys, BASE + "\n[extra]\n", "unknown section")
    _bad(tmp_path, capsys, BASE.replace("held_out = 40", "held_out = 40\nheldout = 3"), "unknown key", "heldout")
    _bad(tmp_path, capsys, BASE.replace("limit = 240", "limit = 60"), "held_out = 40", "only 60 images")
    _bad(tmp_path, capsys, BASE.replace('[models.odu]\nconfig', '[models.odu]\nkind = "odu"\nconfgi'),
         "unknown key", "confgi")
    _bad(tmp_path, capsys, BASE.replace("image_size = 12", "image_size = 40"), "does not fit")
    for bad in ('"many"', "1", "2.5", "true"):
        _bad(tmp_path, capsys, BASE.replace("samples_per_set = \"exact\"", f"samples_per_set = {bad}"),
             "samples_per_set", "'exact' or a sample count")


def test_bad_sample_files_and_feature_networks(tmp_path, capsys):
    good = np.zeros((24, 12, 12))
    np.save(tmp_path / "wrong_shape.npy", np.zeros((24, 10, 10)))
    np.save(tmp_path / "wrong_range.npy", good + 3.0)
    np.save(tmp_path / "too_few.npy", good[:5])
    np.save(tmp_path / "ok.npy", good)
    base = BASE.replace('metrics = ["mse", "fid", "kid", "is", "chain"]', 'metrics = ["fid", "kid"]')
    base = base.replace('features = ["cnn"]', 'features = ["mlp"]')
    for name, msg in (("wrong_shape", "expected 12x12"), ("wrong_range", "[-1, 1]"), ("too_few", "at least 24")):
        _bad(tmp_path, capsys, base + f'\n[models.given]\nkind = "samples"\nsamples = "{tmp_path / name}.npy"\n',
             "[models.given]", msg)
    if not _torch():
        return
    from optdiff.evaluation.cnn_features import CNNFeatureNet

    CNNFeatureNet(12, [0, 1], "mnist").save(tmp_path / "mnist_cnn.npz")
    text = BASE.replace("held_out = 40", f'held_out = 40\nfeatures_checkpoint = "{tmp_path / "mnist_cnn.npz"}"')
    _bad(tmp_path, capsys, text, "trained on 'mnist'", "not on 'digits'")
    _bad(tmp_path, capsys, BASE + '\n[models.fc]\nsize = "matched"\n', "[models.fc]", "closest")
    _bad(tmp_path, capsys, BASE + "\n[models.unet]\nwork_size = 18\n", "[models.unet]", "divisible by 4")


def test_shipped_report_configurations_are_valid():
    from optdiff.evaluation.report_config import load_report_config

    if not _torch():
        pytest.skip("the shipped reports name FC / U-Net baselines (PyTorch)")
    from optdiff.config import ConfigError

    loaded = 0
    for path in sorted((REPO / "studies" / "report").glob("*.toml")):
        try:
            cfg = load_report_config(path)
        except ConfigError as exc:
            # a report that evaluates the models another report trained (fashion-mnist-5000.toml)
            # names files under runs/: valid only once that report has run
            if "file not found" in str(exc) and "/runs/" in str(exc):
                continue
            raise
        assert cfg.datasets and cfg.models, path
        loaded += 1
    assert loaded >= 3
