"""studies/mixed_chain.py: the chain asks the ODU at its sets and the linear denoiser elsewhere."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
mixed_chain = pytest.importorskip("studies.mixed_chain")

from optdiff.config import Config  # noqa: E402
from optdiff.diffusion.model import TimeAwareODU  # noqa: E402


class Const:
    def predict(self, x, t):
        return np.full(np.shape(x), 7.0)


def test_mixed_predictor_routes_by_set():
    cfg = Config.from_dict({"optics": {"n": 24, "upsample": 2, "distance": 3e-3},
                            "model": {"image_size": 8, "sets": 2, "x0_sets": []},
                            "diffusion": {"T": 40, "beta_end": 0.3}, "train": {"threads": 1}})
    model = TimeAwareODU(cfg, nthreads=1)
    x = np.random.default_rng(0).standard_normal((3, 8, 8))
    pred = mixed_chain.mixed_predictor(model, Const(), [1])
    lo1 = model.set_ranges[1][0]
    np.testing.assert_array_equal(pred(x, 0), 7.0)                       # set 0: the linear stand-in
    np.testing.assert_array_equal(pred(x, lo1), model.predict_eps(x, lo1))  # set 1: the ODU


def test_parse_sets_names_bad_sets():
    assert mixed_chain.parse_sets("2,0, 2", 10) == (0, 2)
    with pytest.raises(ValueError, match=r"--mix '3,12'.*\[12\]"):
        mixed_chain.parse_sets("3,12", 10)
