"""``optdiff report`` with models trained before (``checkpoint`` for the linear denoiser, FC and
U-Net, as for the ODU), metrics at several sample counts (``sample_counts``) and the training
images as the metrics' reference (``reference = "train"``); and the clear errors for each."""

import json
import shutil
from pathlib import Path

import numpy as np

from optdiff.cli import main

REPO = Path(__file__).resolve().parent.parent
TINY_ODU = REPO / "examples" / "tiny.toml"

HEAD = """
[report]
T = 20
beta_end = 0.3
sets = 4
metrics = ["mse", "fid", "kid", "is"]
samples = 24
sample_batch = 12
sample_counts = [12]
kid_subset_size = 10
kid_subsets = 3
is_splits = 4
mse_samples = 32
features = ["mlp"]
speed = false

[datasets.digits]
image_size = 12
limit = 200
held_out = 40
reference = "train"
"""

TRAIN = HEAD + f"""
[models.odu]
config = "{TINY_ODU}"
set = ["train.steps=3", "train.val_every=0"]

[models.linear]
samples_per_set = 200
"""

FC = """
[models.fc]
size = 30000
steps = 3
batch = 8
work_size = 16
"""


def _torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _run(tmp_path, text, name):
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(text)
    return main(["report", str(cfg), "--out", str(tmp_path / name), "--no-progress"])


def _reuse(first: Path, models) -> str:
    text = HEAD
    for m in models:
        f = {"odu": "checkpoint.npz", "linear": "linear.npz", "fc": "net.npz"}[m]
        text += f'\n[models.{m}]\ncheckpoint = "{first / "models" / "digits" / m / f}"\n'
    return text


def test_reused_checkpoints_give_the_same_results_and_counts_and_reference_work(tmp_path):
    models = ["odu", "linear"] + (["fc"] if _torch() else [])
    assert _run(tmp_path, TRAIN + (FC if _torch() else ""), "first") == 0
    first = tmp_path / "first"
    res = json.loads((first / "report.json").read_text())["datasets"]["digits"]
    assert res["reference"] == "train"
    for m in models:
        q = res["models"][m]["quality"]["mlp"]
        # reference = "train": every training image is the real set (200 - 40 held out)
        assert q["n_real"] == res["train_images"] == 160 and q["n_fake"] == 24
        at = res["models"][m]["quality_at"]
        assert sorted(at) == ["12", "24"] and at["12"]["mlp"]["n_fake"] == 12 and at["24"] == res["models"][m]["quality"]

    # the metrics of the first 12 samples equal a direct computation on them
    from optdiff.diffusion.checkpoint import load_checkpoint
    from optdiff.evaluation.metrics import FeatureNet, fid_report
    from optdiff.evaluation.report import _load_data
    from optdiff.evaluation.report_config import load_report_config

    cfg = load_report_config(tmp_path / "first.toml")
    xtr, _, _, _ = _load_data(cfg.datasets[0], 0, cfg.base_dir)
    net = FeatureNet.from_arrays(load_checkpoint(first / "features" / "digits" / "mlp.npz")[1])
    x = np.load(first / "models" / "digits" / "linear" / "samples.npy")
    want = fid_report(net, xtr, x[:12], kid_subsets=3, kid_subset_size=10, is_splits=4, seed=0)
    got = res["models"]["linear"]["quality_at"]["12"]["mlp"]
    for k in ("fid", "kid", "is"):
        assert np.isclose(got[k], want[k], rtol=1e-12), k
    report = (first / "report.md").read_text()
    assert "### FID and KID by number of samples" in report and "against all training images" in report

    # a second report loads the trained models instead of training: nothing is trained, the
    # per-set MSE and the samples' metrics are those of the first report
    assert _run(tmp_path, _reuse(first, models), "second") == 0
    again = json.loads((tmp_path / "second" / "report.json").read_text())
    done = again["parts_done_this_run"]
    assert not [p for p in done if p.endswith("/train")], done
    for m in models:
        a, b = res["models"][m], again["datasets"]["digits"]["models"][m]
        assert a["mse"] == b["mse"] and a["params"] == b["params"], m
        assert np.isclose(a["quality"]["mlp"]["fid"], b["quality"]["mlp"]["fid"], rtol=1e-9), m
    assert np.array_equal(np.load(first / "models" / "digits" / "odu" / "samples.npy"),
                          np.load(tmp_path / "second" / "models" / "digits" / "odu" / "samples.npy"))


def _bad(tmp_path, capsys, text, *match):
    out = tmp_path / "bad"
    shutil.rmtree(out, ignore_errors=True)
    assert _run(tmp_path, text, "bad") == 2
    err = capsys.readouterr().err
    for m in match:
        assert m in err, (m, err)
    assert not (out / "report.md").exists()


def test_bad_checkpoints_counts_and_references_are_clear_errors(tmp_path, capsys):
    _bad(tmp_path, capsys, TRAIN.replace("sample_counts = [12]", "sample_counts = [30]"), "sample_counts", "2..samples")
    _bad(tmp_path, capsys, TRAIN.replace("sample_counts = [12]", "sample_counts = [3]"), "sample_counts", "IS needs")
    _bad(tmp_path, capsys, TRAIN.replace('reference = "train"', 'reference = "test"'), "reference", "held_out, train")

    from optdiff.diffusion.checkpoint import save_checkpoint
    from optdiff.diffusion.schedule import NoiseSchedule
    from optdiff.evaluation.baselines import LinearDenoiser

    x = np.random.default_rng(0).uniform(-1, 1, (30, 10, 10))
    lin = LinearDenoiser().fit(x, NoiseSchedule(20, "linear", 1e-4, 0.3), 4, 20, rng=0)
    save_checkpoint(tmp_path / "lin10.npz", {"format": "optdiff-linear-denoiser", "T": 20}, lin.to_arrays())
    lin12 = LinearDenoiser().fit(np.resize(x, (30, 12, 12)), NoiseSchedule(20, "linear", 1e-4, 0.3), 4, 20, rng=0)
    save_checkpoint(tmp_path / "lin_T30.npz", {"format": "optdiff-linear-denoiser", "T": 30}, lin12.to_arrays())
    np.save(tmp_path / "s.npy", np.zeros((24, 12, 12)))
    odu = f'\n[models.odu]\nconfig = "{TINY_ODU}"\n'
    _bad(tmp_path, capsys, HEAD + odu + f'\n[models.linear]\ncheckpoint = "{tmp_path / "lin10.npz"}"\n',
         "[models.linear]", "10x10 images", "12x12")
    _bad(tmp_path, capsys, HEAD + odu + f'\n[models.linear]\ncheckpoint = "{tmp_path / "lin_T30.npz"}"\n',
         "[models.linear]", "'T': 30", "T=20")
    _bad(tmp_path, capsys, HEAD + odu + f'\n[models.linear]\ncheckpoint = "{tmp_path / "lin10.npz"}"\n'
         "samples_per_set = 100\n", "[models.linear]", "samples_per_set", "remove them")
    _bad(tmp_path, capsys, HEAD + odu + f'\n[models.given]\nkind = "samples"\nsamples = "{tmp_path / "s.npy"}"\n'
         f'checkpoint = "{tmp_path / "lin10.npz"}"\n', "[models.given]", "has no checkpoint")
    if not _torch():
        return
    _bad(tmp_path, capsys, HEAD + odu + f'\n[models.fc]\ncheckpoint = "{tmp_path / "missing.npz"}"\n',
         "[models.fc]", "file not found")
    from optdiff.evaluation.digital import nets
    from optdiff.evaluation.digital.train import save_net

    net = nets.build_net({"kind": "fc", "image_size": 12, "width": 8, "work_size": 16})
    save_net(tmp_path / "fc.npz", net, {"schedule": {"T": 20, "beta_start": 1e-4, "beta_end": 0.2}})
    _bad(tmp_path, capsys, HEAD + odu + f'\n[models.unet]\ncheckpoint = "{tmp_path / "fc.npz"}"\n',
         "[models.unet]", "not a unet checkpoint", "'fc'")
    _bad(tmp_path, capsys, HEAD + odu + f'\n[models.fc]\ncheckpoint = "{tmp_path / "fc.npz"}"\n',
         "[models.fc]", "'beta_end': 0.2")
    _bad(tmp_path, capsys, HEAD + odu + f'\n[models.fc]\ncheckpoint = "{tmp_path / "lin10.npz"}"\n',
         "[models.fc]", "not a fc checkpoint")
