"""Training with the bench in the loop: frame binning, the online and experimental-backprop
modes, capture failures (a stop with a checkpoint that loses nothing), resuming, the CLI."""

import numpy as np
import pytest

from optdiff.cli import main
from optdiff.config import Config, OpticsConfig
from optdiff.diffusion import TrainingError
from optdiff.hardware import Bench, BenchConfig, EmulatedExperiment
from optdiff.hardware.online import BenchODU, FrameBinning
from optdiff.hardware.trainer import HARDWARE_STATE, HardwareTrainer
from optdiff.hardware.twin import DigitalTwin
from optdiff.odu import ODU

OPTICS = OpticsConfig(n=32, layers=2)
H = 8


def small_config(steps=4):
    cfg = Config()
    cfg.optics = OPTICS
    cfg.model.image_size, cfg.model.sets = H, 2
    cfg.train.steps, cfg.train.batch, cfg.train.val_batch = steps, 4, 8
    cfg.train.val_every, cfg.train.ckpt_every, cfg.train.progress = 0, 0, False
    return cfg


class Flaky:
    """An emulated bench whose capture number ``fail_at`` goes wrong in the way ``how`` says
    (without touching the bench, so its noise stream is that of a run without the failure)."""

    def __init__(self, seed, how=None, fail_at=None):
        self.inner = EmulatedExperiment(seed, OPTICS, H)
        self.how, self.fail_at, self.calls = how, fail_at, 0
        for a in ("image_shape", "phase_shape", "frame_shape", "bit_depth", "dmd_bits", "slm_bits"):
            setattr(self, a, getattr(self.inner, a))

    def capture(self, images, slm, *, exposure=None):
        self.calls += 1
        if self.calls == self.fail_at:
            shape = (images.shape[0],) + tuple(self.frame_shape)
            if self.how == "nan":
                return np.full(shape, np.nan, np.float32)
            if self.how == "shape":
                return np.zeros((images.shape[0], 3, 3), np.uint16)
            if self.how == "dtype":
                return np.zeros(shape, np.complex64)
            raise RuntimeError("camera timed out")
        return self.inner.capture(images, slm, exposure=exposure)


def images():
    return np.random.default_rng(0).uniform(-1, 1, (48, H, H))


def test_frame_binning_round_trip_and_adjoint():
    twin = DigitalTwin(OPTICS, H)
    b = FrameBinning(twin)
    rng = np.random.default_rng(0)
    frames = rng.uniform(0, 4000, (2, twin.rows, twin.cols))
    g = rng.standard_normal((2, H, H))
    lhs = np.sum(b.intensity(frames, 3.0, 0.0) * g)
    rhs = np.sum(frames * b.adjoint(g, 3.0))
    assert lhs == pytest.approx(rhs, rel=1e-12)
    flat = np.full((1, twin.rows, twin.cols), 116.0)
    np.testing.assert_allclose(b.intensity(flat, 100.0, 16.0), 1.0, rtol=1e-12)


def test_bench_odu_refuses_a_device_of_another_shape():
    odu = ODU(OpticsConfig(n=48, layers=2), H)
    with pytest.raises(ValueError, match="device shows patterns"):
        BenchODU(odu, EmulatedExperiment(0, OPTICS, H), "online", DigitalTwin(OPTICS, H))
    with pytest.raises(ValueError, match="mode"):
        BenchODU(ODU(OPTICS, H), EmulatedExperiment(0, OPTICS, H), "sideways", DigitalTwin(OPTICS, H))


@pytest.mark.parametrize("flip", [False, True])
def test_the_bench_window_bins_to_the_bench_pixels_exactly(flip):
    # the subpixel read-out's window: binned with the ODU's bin_window it is the binned intensity
    optics = OpticsConfig(n=32, layers=2, camera_flip=flip)
    twin = DigitalTwin(optics, H)
    assert twin.footprint != 1.0                      # camera pixels straddle window cells
    frames = np.random.default_rng(1).uniform(0, 4000, (3, twin.rows, twin.cols))
    win = FrameBinning(twin, window=True).intensity(frames, 2.5, 100.0)
    assert win.shape == (3, twin.k * H, twin.k * H)
    want = FrameBinning(twin, flip=flip).intensity(frames, 2.5, 100.0)
    np.testing.assert_allclose(ODU(optics, H).bin_window(win), want, rtol=1e-12, atol=1e-12)


def test_on_an_ideal_bench_the_window_and_its_gradient_are_the_ideal_odus():
    ideal = ODU(OPTICS, H)
    twin = DigitalTwin(OPTICS, H, nominal=BenchConfig.ideal(OPTICS))
    bench = BenchODU(ideal, Bench.ideal(OPTICS, H), "online", twin)
    rng = np.random.default_rng(2)
    r, ph = rng.uniform(-1, 1, (3, H, H)), rng.uniform(0, 2 * np.pi, (2, 32, 32))
    want, tape_i = ideal.window_train(r, ph)
    np.testing.assert_allclose(bench.window_intensity(r, ph), want, rtol=0, atol=1e-5 * want.max())
    got, tape = bench.window_train(r, ph)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * want.max())
    g = rng.standard_normal(got.shape)
    gw, gi = bench.backward_window(tape, g), ideal.backward_window(tape_i, g)
    np.testing.assert_allclose(gw, gi, rtol=0, atol=1e-4 * np.abs(gi).max())


def test_experimental_backprop_takes_the_window_gradient_of_the_ideal_odu():
    ideal = ODU(OPTICS, H)
    bench = BenchODU(ideal, EmulatedExperiment(0, OPTICS, H), "experimental-backprop", DigitalTwin(OPTICS, H))
    rng = np.random.default_rng(4)
    r, ph = rng.uniform(-1, 1, (2, H, H)), rng.uniform(0, 2 * np.pi, (2, 32, 32))
    W, tape = bench.window_train(r, ph)
    assert W.shape == (2, ideal.k * H, ideal.k * H) and tape[0] == "ideal"
    g = rng.standard_normal(W.shape)
    np.testing.assert_array_equal(bench.backward_window(tape, g), ideal.backward_window(ideal.window_train(r, ph)[1], g))


def test_the_twin_is_refined_on_a_dim_frame():
    # frames a fraction of a DN above the dark level: a saturation cut at 97 % of the whole range
    # would leave out every pixel (and the refinement would stand still); of the signal, it does not
    from optdiff.hardware.online import TwinRefiner

    twin = DigitalTwin(OPTICS, H)
    rng = np.random.default_rng(5)
    r, ph = rng.uniform(-1, 1, (2, H, H)), rng.uniform(0, 2 * np.pi, (2, 32, 32))
    ctx = twin.forward_tape(r, ph, None, fresh_images=True)
    tf = twin.frames_of(ctx)
    dark = twin.params.dark_level
    frames = dark + 0.3 * (np.roll(tf, 3, axis=-1) - tf.min()) / (tf.max() - tf.min())
    assert np.all(frames >= 0.97 * frames.max())
    before = twin.params
    TwinRefiner(twin).step(ctx, tf, frames)
    assert twin.params != before


@pytest.mark.parametrize("mode,readout", [("online", "pixel"), ("experimental-backprop", "pixel"),
                                          ("online", "subpixel"), ("experimental-backprop", "subpixel")])
def test_hardware_modes_train_and_the_twin_is_refined(tmp_path, mode, readout):
    dev = EmulatedExperiment(0, OPTICS, H)
    twin = DigitalTwin(OPTICS, H)
    start = twin.params
    cfg = small_config()
    cfg.model.readout = readout
    tr = HardwareTrainer(cfg, tmp_path, dev, mode, twin, refine_every=1, images=images())
    s = tr.fit()
    assert s["steps"] == 8 and np.all(np.isfinite(s["val_mse"]))
    assert tr.hw.captures > 8 * 4
    state = (tmp_path / HARDWARE_STATE).read_text()
    assert mode in state
    if mode == "online":
        assert twin.params != start and tr.hw.refiner.t == 8
    else:
        assert twin.params == start


@pytest.mark.parametrize("how", ["nan", "shape", "dtype", "raise"])
def test_a_capture_failure_stops_with_a_checkpoint_that_loses_nothing(tmp_path, how):
    cfg = small_config(steps=4)

    def trainer(path, dev):
        return HardwareTrainer(cfg, path, dev, "online", DigitalTwin(OPTICS, H), refine_every=2, images=images())

    ref = trainer(tmp_path / "ref", Flaky(3))       # 3 steps, then the rest
    ref.fit(max_steps=3)
    ref.fit(resume=True)
    dev = Flaky(3, how)
    trainer(tmp_path / "run", dev).fit(max_steps=3)
    dev.fail_at = dev.calls + 1                    # the capture of the next training step fails
    failing = trainer(tmp_path / "run", dev)
    with pytest.raises(TrainingError, match=r"stopped at step 3: .*Nothing is lost"):
        failing.fit(resume=True)
    assert failing.step == 3
    again = trainer(tmp_path / "run", dev)         # the device fixed: resume
    again.fit(resume=True)
    assert again.step == ref.step == 8
    for k in ref.model.params:
        np.testing.assert_array_equal(again.model.params[k], ref.model.params[k])
    assert again.hw.twin.params == ref.hw.twin.params


def test_train_command_modes(tmp_path, capsys):
    base = ["train", "--n", "32", "--layers", "2", "--image-size", "8", "--sets", "2", "--steps", "2",
            "--batch", "4", "--no-progress"]
    assert main(base + ["--mode", "experimental-backprop", "--out", str(tmp_path / "eb")]) == 0
    assert (tmp_path / "eb" / HARDWARE_STATE).exists()
    assert main(base + ["--mode", "online", "--refine-every", "1", "--out", str(tmp_path / "on")]) == 0
    assert "without --twin" in capsys.readouterr().err
    assert main(base + ["--mode", "online", "--refine-every", "-1", "--out", str(tmp_path / "x")]) == 1
    assert main(base + ["--mode", "online", "--refine-images", "0", "--out", str(tmp_path / "y")]) == 1
    assert "--refine-images 0" in capsys.readouterr().err


def test_slm_aware_forward_is_quantised_and_backward_straight_through(rng):
    from optdiff.hardware.slm_aware import QuantisedODU, quantise_images, quantise_phases

    ph = rng.uniform(-7, 7, (2, 32, 32)).astype(np.float32)
    q = quantise_phases(ph)
    assert q.dtype == np.float32 and np.all((q >= 0) & (q < 2 * np.pi))
    d = np.angle(np.exp(1j * (q.astype(np.float64) - ph)))
    assert np.abs(d).max() <= np.pi / 256 + 1e-6
    np.testing.assert_allclose(q, quantise_phases(q), atol=1e-6)
    r = rng.uniform(-6, 6, (3, H, H))
    a = np.clip(OPTICS.amp_bias + OPTICS.amp_scale * quantise_images(r, OPTICS.amp_bias, OPTICS.amp_scale), 0, 1)
    np.testing.assert_allclose(a * 255, np.rint(a * 255), atol=1e-9)
    ideal = ODU(OPTICS, H, precision="double")
    qodu = QuantisedODU(ideal)
    np.testing.assert_allclose(qodu.intensity(r, ph), ideal.intensity(quantise_images(r, OPTICS.amp_bias, OPTICS.amp_scale), q))
    I, tape = qodu.intensity_train(r, ph)
    g = rng.standard_normal(I.shape)
    _, tape2 = ideal.intensity_train(quantise_images(r, OPTICS.amp_bias, OPTICS.amp_scale), q.astype(np.float64))
    np.testing.assert_allclose(qodu.backward(tape, g), ideal.backward(tape2, g), rtol=1e-12, atol=1e-15)
    # the unbinned window (subpixel read-out) is quantised the same way
    ideal_in = (quantise_images(r, OPTICS.amp_bias, OPTICS.amp_scale), q.astype(np.float64))
    np.testing.assert_allclose(qodu.window_intensity(r, ph), ideal.window_intensity(*ideal_in))
    W, wtape = qodu.window_train(r, ph)
    np.testing.assert_allclose(W, ideal.window_train(*ideal_in)[0])
    gw = rng.standard_normal(W.shape)
    np.testing.assert_allclose(qodu.backward_window(wtape, gw), ideal.backward_window(ideal.window_train(*ideal_in)[1], gw),
                               rtol=1e-12, atol=1e-15)
    assert qodu.L == ideal.L and qodu.describe() == ideal.describe()


def test_train_command_slm_aware(tmp_path):
    base = ["train", "--n", "32", "--layers", "2", "--image-size", "8", "--sets", "2", "--steps", "2",
            "--batch", "4", "--no-progress", "--slm-aware"]
    assert main(base + ["--out", str(tmp_path / "q")]) == 0
    assert main(base + ["--mode", "online", "--out", str(tmp_path / "x")]) == 1
