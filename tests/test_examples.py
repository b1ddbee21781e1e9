"""The example scripts in examples/ run and do what they say."""

import importlib.util
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fit_intensity_lowers_the_loss_and_writes_its_outputs(tmp_path):
    fit = load("fit_intensity")
    phases, losses, inten, target = fit.fit(n=64, layers=2, steps=60, target="ring", log_every=0)
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.1 * losses[0]  # 40x lower when this was written
    assert phases.shape == (2, 64, 64) and inten.shape == target.shape == (64, 64)
    fit.main(["--n", "32", "--layers", "2", "--steps", "5", "--target", "digit", "--out", str(tmp_path)])
    assert (tmp_path / "fit.png").stat().st_size > 0
    assert np.load(tmp_path / "phases.npy").shape == (2, 32, 32)
