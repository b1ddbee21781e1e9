"""Calibration of the twin on an emulated bench (small: n = 32, 2 patches), the discrepancy, the
camera's kink convention, and the calibrate command."""

import json

import numpy as np
import pytest

from optdiff.cli import main
from optdiff.config import OpticsConfig
from optdiff.hardware import EmulatedExperiment
from optdiff.hardware.calibrate import calibrate_device, compare_with_truth
from optdiff.hardware.fit import Stage, discrepancy
from optdiff.hardware.resample import overlap_matrix
from optdiff.hardware.twin_parts import overlap_and_derivative

OPTICS = OpticsConfig(n=32, layers=2)
QUICK = (Stage(8, 15, 16), Stage(4, 10, None), Stage(2, 8, None))


def test_discrepancy():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (3, 10, 10))
    assert discrepancy(a, a) == pytest.approx(0.0, abs=1e-14)
    assert discrepancy(a, 5 * a + 2) == pytest.approx(0.0, abs=1e-14)      # gain and offset do not count
    assert discrepancy(a, -a) == pytest.approx(2.0)
    assert 0.5 < discrepancy(a, rng.uniform(0, 1, a.shape)) < 1.5


@pytest.mark.parametrize("start", [-3.0, -2.7, 0.0, 1.3])
def test_camera_weights_derivative_is_the_mean_of_the_one_sided_ones(start):
    x = np.random.default_rng(1).standard_normal(16)
    W, dW = overlap_and_derivative(5, start, 2.0, 16)
    np.testing.assert_allclose(W, overlap_matrix(5, start, 2.0, 16), atol=1e-15)
    h = 1e-6
    right = (overlap_matrix(5, start + h, 2.0, 16) @ x - W @ x) / h
    left = (W @ x - overlap_matrix(5, start - h, 2.0, 16) @ x) / h
    np.testing.assert_allclose(dW @ x, (right + left) / 2, atol=1e-8)


def test_calibration_recovers_the_gap_and_cuts_the_discrepancy():
    exp = EmulatedExperiment(0, OPTICS, 8)
    twin, rep, cal = calibrate_device(exp, OPTICS, 8, exp.nominal, frames=16, holdout=6, stages=QUICK)
    assert len(cal) == 22 and rep.frames == 16
    assert rep.discrepancy_after < rep.discrepancy_before / 10
    t = compare_with_truth(rep.params, exp.reveal_truth(), rep.start)
    assert t["z_gap"]["relative_error"] < 0.01
    assert abs(t["z_gap"]["error"]) < 0.2 * abs(t["z_gap"]["start_error"])
    assert twin.params == rep.params


def test_refinement_on_denoising_frames():
    exp = EmulatedExperiment(1, OPTICS, 8)
    _, rep, _ = calibrate_device(exp, OPTICS, 8, exp.nominal, frames=12, holdout=4, stages=QUICK[:2],
                                 denoise_batches=2, denoise_batch=4, refine_stages=(Stage(2, 6, None),))
    assert rep.denoise_before is not None and rep.denoise_after < rep.denoise_before


def test_calibrate_command(tmp_path, capsys):
    out = tmp_path / "cal"
    assert main(["calibrate", "--n", "32", "--layers", "2", "--image-size", "8", "--frames", "8",
                 "--holdout", "4", "--quick", "--reveal", "--out", str(out), "--no-progress"]) == 0
    d = json.loads((out / "twin.json").read_text())
    assert set(d) >= {"twin_params", "report", "truth"}
    assert d["report"]["discrepancy_after"] < d["report"]["discrepancy_before"]
    assert (out / "calibration.npz").exists() and (out / "calibrate_log.csv").exists()
    assert "D (held-out pi-patch frames)" in capsys.readouterr().out
    assert main(["calibrate", "--frames", "0", "--out", str(out)]) == 1
    # --registration known reaches calibrate_device: its coarse objectives are reported
    known = tmp_path / "known"
    assert main(["calibrate", "--n", "32", "--layers", "2", "--image-size", "8", "--frames", "6", "--holdout", "2",
                 "--quick", "--registration", "known", "--gap-starts", "0", "--beam-starts", "0", "--out", str(known), "--no-progress"]) == 0
    objs = json.loads((known / "twin.json").read_text())["report"]["coarse_objectives"]
    assert set(objs) == {"angles", "offsets_registered"}     # one gap start: no screening
    assert main(["calibrate", "--gap-starts", "0,x", "--out", str(known)]) == 1
    assert main(["calibrate", "--beam-starts", "nan", "--registration", "known", "--frames", "2", "--holdout", "0",
                 "--n", "32", "--layers", "2", "--image-size", "8", "--out", str(known)]) == 1
