"""backend= reaches the ODU, the model, the trainer and the CLI: training and sampling run their
optics on the chosen backend and agree with the CPU (here the CUDA backend emulated on the CPU;
on a machine with a GPU also the real one)."""

import numpy as np
import pytest
from helpers import squares
from test_trainer import tiny_cfg

from optdiff.cli import main
from optdiff.diffusion.trainer import Trainer, load_model


def _train(tmp_path, backend, steps=6):
    cfg = tiny_cfg(train__steps=steps, train__backend=backend, train__val_every=0)
    tr = Trainer(cfg, tmp_path / backend, images=squares(), log=False)
    tr.fit()
    return tr


@pytest.mark.parametrize("backend", ["cuda-emu", "cuda"], indirect=True)
def test_training_on_a_device_backend_follows_the_cpu(tmp_path, backend):
    cpu = _train(tmp_path, "cpu")
    dev = _train(tmp_path, backend)
    assert dev.model.odu.stack.backend == backend and cpu.model.odu.stack.backend == "cpu"
    lc = np.array([h["loss"] for h in cpu.history])
    ld = np.array([h["loss"] for h in dev.history])
    assert lc.shape == ld.shape and np.all(np.isfinite(ld))
    np.testing.assert_allclose(ld, lc, rtol=2e-3)  # float32 optics, summed in another order
    x = np.random.default_rng(1).standard_normal((4, 8, 8))
    np.testing.assert_allclose(dev.model.predict_eps(x, 30), cpu.model.predict_eps(x, 30), rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("backend", ["cuda-emu", "cuda"], indirect=True)
def test_a_checkpoint_loads_on_any_backend_and_the_cli_samples_there(tmp_path, backend):
    cpu = _train(tmp_path, "cpu", steps=3)
    ckpt = tmp_path / "cpu" / "checkpoint.npz"
    model, _, _ = load_model(ckpt, backend=backend)
    assert model.odu.stack.backend == backend
    x = np.random.default_rng(2).standard_normal((3, 8, 8))
    np.testing.assert_allclose(model.predict_eps(x, 10), cpu.model.predict_eps(x, 10), rtol=1e-2, atol=1e-3)
    out = tmp_path / "samples"
    assert main(["sample", str(ckpt), "--backend", backend, "--count", "2", "--out", str(out),
                 "--no-progress"]) == 0
    s = np.load(out / "samples.npy")
    assert s.shape == (2, 8, 8) and np.all(np.isfinite(s)) and np.abs(s).max() <= 1


def test_unknown_backend_in_the_config_is_refused():
    from optdiff.config import ConfigError

    with pytest.raises(ConfigError, match="backend"):
        tiny_cfg(train__backend="tpu").validate()
