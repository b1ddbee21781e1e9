"""Helpers of studies/design_classes.py: the tilt-as-ramp equivalence and the optics' share."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
design_classes = pytest.importorskip("studies.design_classes")

from optdiff.config import Config  # noqa: E402
from optdiff.diffusion.model import TimeAwareODU  # noqa: E402


def test_a_tilted_hop_is_a_phase_ramp_on_the_mask_before_it():
    # double precision stack: the two agree to rounding, so tilts add nothing to a free-phase design
    assert design_classes.tilt_as_ramp(n=32, layers=2) < 1e-12


def tiny_model():
    cfg = Config.from_dict({"optics": {"n": 24, "upsample": 2, "distance": 3e-3},
                            "model": {"image_size": 8, "sets": 2, "x0_sets": [0]},
                            "diffusion": {"T": 40, "beta_end": 0.3}, "train": {"threads": 1}})
    return TimeAwareODU(cfg, nthreads=1)


@pytest.mark.parametrize("m", [0, 1])  # set 0 predicts x0, set 1 eps
def test_optics_share_is_zero_without_the_camera_term_and_one_without_digital_terms(m):
    model = tiny_model()
    rng = np.random.default_rng(0)
    lo, hi = model.set_ranges[m]
    t = rng.integers(lo, hi, 64)
    r, eps = rng.standard_normal((64, 8, 8)), rng.standard_normal((64, 8, 8))
    p = model.params
    p["scale"][m], p["skip"][m], p["offset"][m] = 0.0, 0.7, 0.1
    share, digital = design_classes.shares(model, m, r, t, eps)
    assert share == 0.0
    assert digital == pytest.approx(float(np.mean((model.predict(r, t, m) - eps) ** 2)), rel=1e-12)
    if m == 1:  # eps read-out: with no skip the prediction is the camera term plus a constant
        p["scale"][m], p["skip"][m] = 2.0, 0.0
        share, _ = design_classes.shares(model, m, r, t, eps)
        assert share == pytest.approx(1.0, rel=1e-9)
