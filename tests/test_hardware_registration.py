"""Known patch registration: moving a fitted walk from the patch offsets into the angles, and the
calibration that uses it (tiny: n = 32)."""

import numpy as np
import pytest

from optdiff.config import OpticsConfig
from optdiff.hardware import EmulatedExperiment, HiddenErrors
from optdiff.hardware.calibrate import calibrate_device
from optdiff.hardware.fit import DEFAULT_FREE, Stage
from optdiff.hardware.registration import light_positions, register
from optdiff.hardware.twin import DigitalTwin
from optdiff.hardware.twin_params import TwinParams


def test_a_walk_carried_by_the_offsets_goes_back_into_the_angles():
    optics = OpticsConfig(n=32, layers=4)
    twin = DigitalTwin(optics, 8)
    truth = twin.params.replace(beam_angle=(1.2e-3, -0.7e-3), mirror_angle=(0.3e-3, 0.2e-3),
                                dmd_offset=(2e-6, -1e-6), camera_offset=(5e-6, 3e-6))
    # the same light positions with another beam angle: every offset follows the beam's walk
    moved = truth.replace(beam_angle=(1.0e-3, -0.4e-3))
    q_truth, q_moved = light_positions(twin, truth), light_positions(twin, moved)
    walk = q_moved - q_truth
    offs = walk[:-1] - walk[0]
    same = moved.replace(patch_offsets=offs, dmd_offset=np.array(truth.dmd_offset) - walk[0],
                         camera_offset=np.array(truth.camera_offset) + walk[-1] - walk[0])
    np.testing.assert_allclose(light_positions(twin, same), q_truth, atol=1e-12)
    back = register(twin, same)
    assert back.patch_offsets == ((0.0, 0.0),) * 4
    np.testing.assert_allclose(back.beam_angle, truth.beam_angle, atol=1e-9)
    np.testing.assert_allclose(back.mirror_angle, truth.mirror_angle, atol=1e-9)
    np.testing.assert_allclose(back.camera_offset, truth.camera_offset, atol=1e-10)
    np.testing.assert_allclose(light_positions(twin, back), q_truth, atol=1e-11)
    assert back.z_gap == truth.z_gap and back.phase_scale == truth.phase_scale
    # already registered: nothing moves
    again = register(twin, truth)
    np.testing.assert_allclose(again.vector(("beam_angle", "mirror_angle")),
                               truth.vector(("beam_angle", "mirror_angle")), atol=1e-12)


def test_calibration_with_the_registration_known_keeps_the_offsets():
    optics = OpticsConfig(n=32, layers=2)
    exp = EmulatedExperiment(0, optics, 8, errors=HiddenErrors(patch_offset=0.0))
    stages = (Stage(8, 10, 16), Stage(2, 8, None))
    free = tuple(n for n in DEFAULT_FREE if n != "patch_offsets")
    _, rep, _ = calibrate_device(exp, optics, 8, exp.nominal, frames=16, holdout=6, stages=stages, free=free,
                                 registration="known", gap_starts=(0.0, 1.0), beam_starts=(0.0, -1.0))
    assert rep.params.patch_offsets == TwinParams.from_config(exp.nominal, 2).patch_offsets
    assert rep.discrepancy_after < rep.discrepancy_before / 10
    assert {h["stage"] for h in rep.history} == {0, 1}
    # both coarse fits ran; the fine stage went on from the one with the lower objective
    objs = rep.coarse_objectives
    assert all(np.isfinite(objs[k]) for k in ("angles", "offsets_registered"))
    # the multi-start over gap x beam angle along the fold: every pair screened, the lowest objective kept
    screened = objs["starts"]
    assert len(screened) == 4 and all(np.isfinite(v) for v in screened.values())
    g, b = objs["start"]
    assert f"gap {g:+g}, beam x {b:+g}" == min(screened, key=screened.get)
    branch = "angles" if objs["angles"] <= objs["offsets_registered"] else "offsets-registered"
    assert {h["branch"] for h in rep.history if h["stage"] == 0} == {branch}
    with pytest.raises(ValueError, match="registration"):
        calibrate_device(exp, optics, 8, exp.nominal, frames=2, holdout=0, registration="rigid")
    with pytest.raises(ValueError, match="gap_starts"):
        calibrate_device(exp, optics, 8, exp.nominal, frames=2, holdout=0, registration="known", gap_starts=())
