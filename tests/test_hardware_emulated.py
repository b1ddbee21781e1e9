"""The emulated experiment (capture only, hidden truth), the capture boundary, and calibration data."""

import dataclasses

import numpy as np
import pytest

from optdiff.config import OpticsConfig
from optdiff.hardware import (
    Bench,
    BenchConfig,
    CalibrationSet,
    CaptureDevice,
    CaptureError,
    EmulatedExperiment,
    HiddenErrors,
    capture_calibration,
    capture_frames,
    pi_patch_squares,
    squares_to_levels,
)
from optdiff.odu import init_phases

OPTICS = OpticsConfig(n=64, upsample=4)
H = 12


def experiment(seed=0, **kw):
    return EmulatedExperiment(seed, OPTICS, H, **kw)


def test_only_capture_and_what_the_lab_knows_are_public():
    exp = experiment()
    public = {a for a in dir(exp) if not a.startswith("_")}
    assert public == {"capture", "reveal_truth", "seed", "optics", "nominal", "image_shape", "phase_shape",
                      "frame_shape", "bit_depth", "dmd_bits", "slm_bits"}
    assert isinstance(exp, CaptureDevice)
    assert not hasattr(exp, "__dict__")     # nothing else can be attached or looked up by name
    f = exp.capture(np.zeros((2, H, H)), init_phases(OPTICS, image_size=H))
    assert f.dtype == np.uint16 and f.shape == (2, 130, 130)


def test_the_truth_comes_from_the_seed():
    phases, images = init_phases(OPTICS, image_size=H), np.zeros((1, H, H))
    a, b, c = experiment(3), experiment(3), experiment(4)
    assert a.reveal_truth() == b.reveal_truth() and a.reveal_truth() != c.reveal_truth()
    assert np.array_equal(a.capture(images, phases), b.capture(images, phases))
    assert not np.array_equal(a.capture(images, phases), c.capture(images, phases))


def test_hidden_errors_have_the_stated_scales():
    nominal, e = BenchConfig(), HiddenErrors()
    for seed in range(5):
        t = experiment(seed).reveal_truth()
        assert abs(t["z_gap_error"]) <= 2 * e.z_gap + 1e-12
        assert max(map(abs, t["mirror_angle"])) <= 2 * e.mirror_angle + 1e-12
        assert max(map(abs, t["beam_angle"])) <= 2 * e.beam_angle + 1e-12
        assert abs(t["phase_scale"] - 1) <= 2 * e.phase_scale + 1e-12 and abs(t["lut_curvature"]) <= e.lut_curvature
        assert abs(t["camera_gain"] / nominal.camera.dn_per_electron - 1) <= 2 * e.camera_gain + 1e-12
        assert len(t["patch_offsets"]) == 4 and len(t["landing_mm"]) == 5


def test_angles_of_a_few_mrad_keep_the_normal_draws_sign_and_every_other_draw():
    e = HiddenErrors()
    for seed in range(4):
        t = experiment(seed).reveal_truth()
        m = experiment(seed, errors=HiddenErrors(angle_draw="magnitude")).reveal_truth()
        for name, std in (("mirror_angle", e.mirror_angle), ("beam_angle", e.beam_angle)):
            a, b = np.array(t[name]), np.array(m[name])
            assert np.all(np.sign(b) == np.where(a < 0, -1, 1))
            assert np.all(np.abs(b) >= std * (1 - 1e-12)) and np.all(np.abs(b) <= 2 * std * (1 + 1e-12))
            # the same normal draw z: |b| = std (1 + |z| / 2) with a = z std
            np.testing.assert_allclose(np.abs(b), std * (1 + np.abs(a) / std / 2), rtol=1e-12)
        for k in ("z_gap", "patch_offsets", "phase_scale", "camera_offset", "dark_level"):
            assert t[k] == m[k]


def test_a_rigid_slm_shifts_every_patch_by_one_offset_drawn_last():
    plain = experiment(2, errors=HiddenErrors(patch_offset=0.0)).reveal_truth()
    rigid = experiment(2, errors=HiddenErrors(patch_offset=0.0, slm_offset=10e-6)).reveal_truth()
    offs = np.array(rigid["patch_offsets"])
    assert np.all(offs == offs[0]) and 0 < np.abs(offs[0]).max() <= 20e-6
    assert np.all(np.array(plain["patch_offsets"]) == 0)
    for k in ("z_gap", "mirror_angle", "beam_angle", "dmd_offset", "camera_offset", "camera_gain"):
        assert plain[k] == rigid[k]
    with pytest.raises(ValueError, match="HiddenErrors.angle_draw"):
        HiddenErrors(angle_draw="uniform")
    with pytest.raises(ValueError, match="HiddenErrors.slm_offset"):
        HiddenErrors(slm_offset=-1e-6)


def test_without_errors_the_experiment_is_the_nominal_bench():
    exp = experiment(1, errors=HiddenErrors.none())
    truth = exp.reveal_truth()
    assert truth["z_gap_error"] == 0 and truth["mirror_angle"] == (0.0, 0.0) and truth["phase_scale"] == 1.0
    phases = init_phases(OPTICS, image_size=H)
    cfg = BenchConfig.from_dict(truth["config"])
    assert dataclasses.replace(cfg.fold, fold_angle=None, patch_offsets=()) == BenchConfig().fold
    images = np.random.default_rng(0).uniform(-1, 1, (2, H, H))
    np.testing.assert_array_equal(exp.capture(images, phases), Bench(OPTICS, H, cfg).capture(images, phases))


def test_errors_are_drawn_again_until_the_beam_stays_on_the_mirror():
    with pytest.raises(ValueError, match="HiddenErrors"):
        experiment(0, errors=HiddenErrors(mirror_angle=0.05))
    with pytest.raises(ValueError, match="HiddenErrors.z_gap"):
        HiddenErrors(z_gap=-0.1)


class FakeDevice:
    """A lab's wrapper as the protocol describes it, returning what a broken driver might."""

    image_shape, phase_shape, frame_shape, bit_depth, dmd_bits, slm_bits = (H, H), (4, 64, 64), (8, 10), 12, 8, 8

    def __init__(self, make):
        self.make = make

    def capture(self, images, slm, *, exposure=None):
        return self.make(images.shape[0])


GOOD = lambda b: np.full((b, 8, 10), 100, np.uint16)   # noqa: E731


@pytest.mark.parametrize("make,words", [
    (lambda b: np.zeros((b, 10, 8), np.uint16), r"shape \(2, 10, 8\), expected \(2, 8, 10\)"),
    (lambda b: np.zeros((b + 1, 8, 10), np.uint16), "shape"),
    (lambda b: np.zeros((b, 8, 10), complex), "dtype complex128"),
    (lambda b: np.zeros((b, 8, 10), bool), "dtype bool"),
    (lambda b: np.full((b, 8, 10), np.nan, np.float32), r"160 frame values are NaN/Inf \(first at \(0, 0, 0\)\)"),
    (lambda b: np.full((b, 8, 10), -1, np.int32), "below 0"),
    (lambda b: np.full((b, 8, 10), 4096, np.uint16), "above the 12-bit range"),
    (lambda b: [[0] * 10] * 8, "must be a NumPy array")])
def test_bad_frames_are_caught_at_the_boundary(make, words):
    dev = FakeDevice(make)
    assert isinstance(dev, CaptureDevice)
    with pytest.raises(CaptureError, match=words) as info:
        capture_frames(dev, np.zeros((2, H, H)), np.zeros((4, 64, 64), np.float32))
    assert "FakeDevice" in str(info.value)
    assert capture_frames(FakeDevice(GOOD), np.zeros((2, H, H)), np.zeros((4, 64, 64), np.uint8)).shape == (2, 8, 10)


def test_bad_inputs_never_reach_the_device():
    called = []
    dev = FakeDevice(lambda b: called.append(b) or GOOD(b))
    for images, slm in ((np.zeros((2, H + 1, H)), np.zeros((4, 64, 64))), (np.zeros((2, H, H)), np.zeros((3, 64, 64))),
                        (np.zeros((2, H, H)), np.full((4, 64, 64), 256, np.uint16))):
        with pytest.raises(ValueError):
            capture_frames(dev, images, slm)
    with pytest.raises(ValueError, match="exposure"):
        capture_frames(dev, np.zeros((1, H, H)), np.zeros((4, 64, 64)), exposure=float("inf"))
    assert called == []


# ---------------------------------------------------------------- calibration
def test_pi_patch_squares_lie_in_the_window_with_the_asked_sizes():
    sq = pi_patch_squares(500, 4, 64, sizes=(4, 12), per_layer=2, window=(8, 56), seed=1)
    assert sq.shape == (500, 4, 2, 3) and sq.dtype == np.int32
    r, c, s = sq[..., 0], sq[..., 1], sq[..., 2]
    assert s.min() == 4 and s.max() == 12
    assert r.min() >= 8 and c.min() >= 8 and (r + s).max() <= 56 and (c + s).max() <= 56
    assert np.array_equal(sq, pi_patch_squares(500, 4, 64, sizes=(4, 12), per_layer=2, window=(8, 56), seed=1))
    with pytest.raises(ValueError, match="sizes"):
        pi_patch_squares(2, 4, 64, sizes=(10, 60), window=(8, 56))


def test_squares_become_pi_levels_on_a_zero_background():
    sq = np.array([[[[2, 3, 4]], [[0, 0, 1]]]], np.int32)    # 1 frame, 2 layers, 1 square each
    lv = squares_to_levels(sq, 8, 128)
    ref = np.zeros((1, 2, 8, 8), np.uint8)
    ref[0, 0, 2:6, 3:7] = 128
    ref[0, 1, 0, 0] = 128
    assert np.array_equal(lv, ref)


def test_calibration_captures_round_trip_through_the_file(tmp_path):
    exp = experiment(2)
    cal = capture_calibration(exp, 6, seed=5, nominal=exp.nominal)
    assert len(cal) == 6 and cal.frames.dtype == np.uint16 and cal.frames.shape == (6, 130, 130)
    assert cal.level == 128 and cal.images.dtype == np.uint8 and (cal.images == 255).all()
    assert np.allclose(cal.nominal_phases(0)[cal.slm_levels(0) > 0], np.pi)
    # each frame is what the device shows for that pattern (its own noise aside)
    same = EmulatedExperiment(2, OPTICS, H)
    np.testing.assert_array_equal(same.capture(cal.images[None], cal.slm_levels(0)), cal.frames[:1])
    path = cal.save(tmp_path / "cal.npz")
    back = CalibrationSet.load(path)
    for key in ("images", "squares", "frames"):
        assert np.array_equal(getattr(back, key), getattr(cal, key))
    assert back.level == 128 and back.exposure is None and back.meta["nominal"] == BenchConfig().to_dict()
    assert not list(tmp_path.glob(".*tmp*"))


def test_a_broken_calibration_file_is_refused(tmp_path):
    cal = capture_calibration(experiment(2), 2, seed=0)
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=cal.images, squares=cal.squares[:1], level=np.int64(128), frames=cal.frames,
             exposure=np.float64(np.nan), __meta__=np.array('{"format": "optdiff-calibration", "version": 1, '
                                                           '"phase_shape": [4, 64, 64], "image_shape": [12, 12], '
                                                           '"frame_shape": [130, 130], "slm_bits": 8}'))
    with pytest.raises(ValueError, match="squares have shape"):
        CalibrationSet.load(bad)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a calibration set"):
        CalibrationSet.load(junk)
