"""Digital baselines (PyTorch extra): shapes, parameter counts, size matching, DDPM training lowers
the loss, sampling through optdiff's samplers, checkpoint round trip and corrupt files; and that
optdiff works without PyTorch."""

import subprocess
import sys

import numpy as np
import pytest

from optdiff.evaluation.digital import TORCH_EXTRA, require_torch


def test_require_torch_names_the_extra_when_torch_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # what an uninstalled package looks like to import
    with pytest.raises(ImportError, match=r"optdiff\[torch\]"):
        require_torch()
    assert "optdiff[torch]" in TORCH_EXTRA


def test_optdiff_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import optdiff, optdiff.cli, optdiff.evaluation, optdiff.evaluation.digital\n"
            "from optdiff.evaluation import costs, metrics\n"
            "try:\n    import optdiff.evaluation.digital.nets\nexcept ImportError as e:\n    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ERR" in out.stdout and "optdiff[torch]" in out.stdout


torch = pytest.importorskip("torch")
nets = pytest.importorskip("optdiff.evaluation.digital.nets")
train = pytest.importorskip("optdiff.evaluation.digital.train")


def _tiny(kind, image_size=8, width=32):
    torch.manual_seed(0)
    if kind == "fc":
        return nets.FCDenoiser(image_size, width=width, work_size=16)
    return nets.UNetDenoiser(image_size, c1=4, c2=8, c3=8, convs_per_block=2, work_size=16)


@pytest.mark.parametrize("kind", ["fc", "unet"])
def test_shapes_and_closed_form_parameter_counts(kind):
    net = _tiny(kind, image_size=12).eval()
    x, t = torch.randn(5, 12, 12), torch.randint(0, 1000, (5,))
    assert net(x, t).shape == (5, 12, 12)
    assert net(x[:, None], t).shape == (5, 12, 12)
    with pytest.raises(ValueError, match=r"\[B, 12, 12\]"):
        net(torch.randn(5, 10, 10), t)
    if kind == "fc":
        assert nets.count_params(net) == nets.fc_param_count(32, work_size=16)
    else:
        assert nets.count_params(net) == nets.unet_param_count(4, 8, 8, convs_per_block=2)


def test_reference_sizes_and_structure():
    fc = nets.FCDenoiser(20)
    assert nets.count_params(fc) == nets.fc_param_count(1200) == 17_068_576
    lin = [m for m in fc.modules() if isinstance(m, torch.nn.Linear) and m not in (fc.emb1, fc.emb2)]
    assert [(m.in_features, m.out_features) for m in lin] == [(5776, 1200), (1200, 1200), (1200, 1200), (1200, 5776)]
    unet = nets.UNetDenoiser(20)
    convs = [m for m in unet.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 32 and all(c.kernel_size == (3, 3) for c in convs)
    assert nets.count_params(unet) == nets.unet_param_count(64, 128, 256) == 5_842_241
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in unet.modules()) == 30


@pytest.mark.parametrize("kind", ["fc", "unet"])
@pytest.mark.parametrize("target", [nets.odu_param_count(128, 4, 10), nets.odu_param_count(64, 4, 4)])
def test_match_width_hits_an_odu_size_within_a_few_percent(kind, target):
    widths, count = nets.match_width(kind, target, tol=0.03)
    assert abs(count - target) <= 0.03 * target
    net = nets.build_net({"kind": kind, "image_size": 20, **widths})
    assert nets.count_params(net) == count


def test_match_width_refuses_what_cannot_be_matched():
    with pytest.raises(ValueError, match="closest"):
        nets.match_width("fc", 1000)
    with pytest.raises(ValueError, match="unknown digital model"):
        nets.match_width("resnet", 10**6)


@pytest.mark.parametrize("kind", ["fc", "unet"])
def test_a_few_training_steps_lower_the_loss_and_sample(kind):
    from optdiff.diffusion.samplers import ddim_sample
    from optdiff.diffusion.schedule import NoiseSchedule

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x0 = np.clip(rng.standard_normal((64, 8, 8)) * 0.1 + np.linspace(-0.8, 0.8, 8)[None, None, :], -1, 1)
    sched = NoiseSchedule(1000)
    net = _tiny(kind, width=256)  # wide enough to pass the noise through (16 x 16 = 256 inputs)
    losses = train.train_ddpm(net, x0, sched, steps=60, batch=32, lr=3e-3, seed=0)
    assert len(losses) == 60 and all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5])
    pred = train.TorchPredictor(net)
    x = ddim_sample(pred, sched, (4, 8, 8), rng=1, steps=5)
    assert x.shape == (4, 8, 8) and np.all(np.isfinite(x)) and np.abs(x).max() <= 1.0
    # same seed, same weights -> same losses (deterministic training)
    again = train.train_ddpm(_tiny(kind, width=256), x0, sched, steps=5, batch=32, lr=3e-3, seed=0)
    assert again == losses[:5]


def test_training_refuses_bad_images():
    from optdiff.diffusion.schedule import NoiseSchedule

    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        train.train_ddpm(_tiny("fc"), np.full((4, 8, 8), 3.0), NoiseSchedule(10), steps=1)
    with pytest.raises(ValueError, match=r"\[K, H, H\]"):
        train.train_ddpm(_tiny("fc"), np.zeros((4, 8)), NoiseSchedule(10), steps=1)


@pytest.mark.parametrize("kind", ["fc", "unet"])
def test_save_load_round_trip_is_exact(tmp_path, kind):
    from optdiff.diffusion.schedule import NoiseSchedule

    net = _tiny(kind)
    x0 = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8))
    train.train_ddpm(net, x0, NoiseSchedule(100), steps=3, batch=8, seed=0)  # BatchNorm stats move
    path = train.save_net(tmp_path / "net.npz", net, meta={"steps": 3})
    back, meta = train.load_net(path, expect={"kind": kind})
    assert meta == {"steps": 3}
    for (k, a), (k2, b) in zip(net.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    x, t = torch.randn(3, 8, 8), torch.tensor([0, 5, 99])
    with torch.no_grad():
        assert torch.equal(net.eval()(x, t), back(x, t))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_corrupt_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    from optdiff.diffusion.checkpoint import CheckpointError, save_checkpoint

    path = train.save_net(tmp_path / "net.npz", _tiny("fc"))
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="bad.npz"):
        train.load_net(bad)
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="trunc.npz"):
        train.load_net(trunc)
    with pytest.raises(CheckpointError, match="kind"):
        train.load_net(path, expect={"kind": "unet"})
    other = save_checkpoint(tmp_path / "odu.npz", {"n": 4}, {"phases": np.zeros(3)})
    with pytest.raises(CheckpointError, match="not a digital denoiser"):
        train.load_net(other)
