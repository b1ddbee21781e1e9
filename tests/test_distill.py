"""The distillation start (train.distill_steps): the ODU is pulled towards the linear denoiser."""

import numpy as np
import pytest
from helpers import squares

from optdiff.config import Config, ConfigError
from optdiff.diffusion.distill import distill_set
from optdiff.diffusion.optim import Adam
from optdiff.diffusion.trainer import Trainer
from optdiff.evaluation.baselines import LinearDenoiser


def cfg(**train):
    return Config.from_dict({
        "optics": {"n": 24, "upsample": 2, "distance": 3e-3},
        "model": {"image_size": 8, "sets": 2},
        "diffusion": {"T": 40, "beta_end": 0.3},
        "data": {"dataset": "digits", "val_count": 16},
        "train": {"steps": 2, "batch": 16, "val_every": 0, "ckpt_every": 0, "progress": False,
                  "threads": 1, **train},
    })


def test_distill_set_moves_the_prediction_towards_the_linear_denoiser(tmp_path):
    tr = Trainer(cfg(), tmp_path, images=squares(150), log=False)
    tr.calibrate()
    model, x = tr.model, tr.images
    lin = LinearDenoiser(ridge=1e-3).fit(x, model.schedule, model.set_ranges, samples_per_set=3000, rng=0)
    rng = np.random.default_rng(7)
    m = 0  # the least noisy set: the calibrated skip is far from the linear denoiser there
    lo, hi = model.set_ranges[m]
    t = rng.integers(lo, hi, 200)
    r = model.schedule.q_sample(x[rng.integers(0, x.shape[0], 200)], t, rng.standard_normal((200, 8, 8)))

    def gap():  # mean squared distance of the ODU's eps prediction to the linear denoiser's
        return float(np.mean((model.predict(r, t, m) - lin.predict(r, lo)) ** 2))

    before, phases0 = gap(), model.params["phases"][1].copy()
    distill_set(model, m, lin, x, 60, Adam(model.params, model.M), 0.05, 0.05, 16, np.random.default_rng(1))
    assert gap() < 0.7 * before
    np.testing.assert_array_equal(model.params["phases"][1], phases0)  # the other set untouched


def test_trainer_distill_start_counts_its_time_and_keeps_the_noise_stream(tmp_path):
    plain = Trainer(cfg(), tmp_path / "a", images=squares(150), log=False)
    plain.fit()
    dist = Trainer(cfg(distill_steps=5), tmp_path / "b", images=squares(150), log=False)
    s = dist.fit()
    assert s["distill_s"] > 0 and s["elapsed_s"] >= s["distill_s"] and plain.distill_s == 0
    # the noise-loss steps see the same batches: same rng state at the end of both runs
    assert dist.rng.bit_generator.state == plain.rng.bit_generator.state
    # and the distilled start is a different model
    assert not np.array_equal(dist.model.params["phases"], plain.model.params["phases"])
    # a resumed run still reports the distillation's seconds (kept in the checkpoint)
    again = Trainer(cfg(distill_steps=5, steps=3), tmp_path / "b", images=squares(150), log=False)
    assert again.fit(resume=True)["distill_s"] == s["distill_s"]


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True])
def test_distill_steps_must_be_a_count(bad):
    with pytest.raises(ConfigError, match="distill_steps"):
        cfg(distill_steps=bad)
