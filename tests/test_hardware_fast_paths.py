"""The online step's shortcuts give what the straightforward composition gives: the fused binning
and camera adjoint, the twin's tape without frames, and the batched resampling against a
per-image reference."""

import numpy as np
import pytest

from optdiff.config import OpticsConfig
from optdiff.hardware import EmulatedExperiment, resample
from optdiff.hardware import twin_parts as parts
from optdiff.hardware.online import BenchODU, TwinRefiner
from optdiff.hardware.twin import DigitalTwin
from optdiff.hardware.twin_params import TwinParams
from optdiff.odu import ODU

OPTICS = OpticsConfig(n=32, layers=2)
H = 8
F32 = np.finfo(np.float32).eps


def _setup(flip=False, exposure=None, grid=None):
    optics = OpticsConfig(n=32, layers=2, camera_flip=True) if flip else OPTICS
    ideal = ODU(optics, H)
    twin = DigitalTwin(optics, H, grid=grid)
    # a twin away from the nominal bench: camera offset, gain and dark level all count
    p = twin.params
    twin.set_params(p.replace(camera_offset=(7e-6, -4e-6), gain=1.07 * p.gain, dark_level=19.0,
                              crosstalk=0.2, lut_curvature=0.05, dmd_offset=(3.1e-6, -5.3e-6)))
    bench = BenchODU(ideal, EmulatedExperiment(1, optics, H), "online", twin, exposure=exposure)
    rng = np.random.default_rng(3)
    r = rng.uniform(-1, 1, (3, H, H))
    phases = rng.uniform(0, 2 * np.pi, (2, 32, 32))
    return bench, twin, r, phases, rng


@pytest.mark.parametrize("flip,exposure,grid,window", [(False, None, None, False), (True, 2e-3, 36, False),
                                                        (True, 2e-3, 36, True)])
def test_online_backward_equals_binning_adjoint_then_twin_backward(flip, exposure, grid, window):
    bench, twin, r, phases, rng = _setup(flip, exposure, grid)
    # window: the subpixel read-out's path (frames resampled onto the read-out window)
    I, tape = (bench.window_train if window else bench.intensity_train)(r, phases)
    g = rng.standard_normal(I.shape)
    got = (bench.backward_window if window else bench.backward)(tape, g)
    # the reference: d loss / d frames through the binning, then the twin's full backward
    ctx = tape[1]
    gain_e, _ = bench._gain_dark()
    binning = bench.window_binning if window else bench.binning
    _, want = twin.backward(ctx, binning.adjoint(g, gain_e), params=False, phase_grad=True)
    assert got.shape == want.shape == (2, 32, 32) and got.dtype == np.float64
    # both feed the float32 stack: equal to float32 rounding of its input gradient
    assert np.max(np.abs(got - want)) <= 1e3 * F32 * np.max(np.abs(want))


def test_tape_without_frames_then_frames_of_equals_forward_train():
    bench, twin, r, phases, rng = _setup()
    frames, ctx = twin.forward_train(r, phases, 2e-3)
    ctx2 = twin.forward_tape(r, phases, 2e-3)
    assert ctx2.cam_intensity is None
    np.testing.assert_array_equal(twin.frames_of(ctx2), frames)
    np.testing.assert_array_equal(ctx2.intensity, ctx.intensity)
    # the parameter gradients of a tape whose frames were never made are those of forward_train
    G = rng.standard_normal(frames.shape)
    a, pa = twin.backward(ctx, G, phase_grad=True)
    b, pb = twin.backward(twin.forward_tape(r, phases, 2e-3), G, phase_grad=True)
    np.testing.assert_array_equal(pa, pb)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_frames_of_uses_the_parameters_of_the_forward_pass():
    bench, twin, r, phases, rng = _setup()
    frames, _ = twin.forward_train(r, phases)
    ctx = twin.forward_tape(r, phases)
    twin.set_params(TwinParams.from_dict({**twin.params.to_dict(), "gain": 2 * twin.params.gain,
                                          "camera_offset": [0.0, 0.0]}))
    np.testing.assert_array_equal(twin.frames_of(ctx), frames)


def test_online_refinement_still_gets_the_twin_frames():
    bench, twin, r, phases, rng = _setup()
    bench = BenchODU(bench._ideal, bench.device, "online", twin, refine_every=1)
    before = twin.params
    I, tape = bench.intensity_train(r, phases)
    bench.backward(tape, np.zeros_like(I))
    assert np.isfinite(bench.refiner.last_discrepancy) and bench.refiner.t == 1
    assert twin.params != before


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_online_refinement_fits_the_first_refine_images_frames(k):
    """The step's refinement equals a refiner's step on a fresh forward of the subset (all of
    the batch when k >= B), the bench's frames of those images."""
    bench, twin, r, phases, rng = _setup()
    start = twin.params
    bench = BenchODU(bench._ideal, bench.device, "online", twin, refine_every=1, refine_images=k)
    I, tape = bench.intensity_train(r, phases)
    frames = tape[2]
    bench.backward(tape, np.zeros_like(I))
    got = twin.params
    twin.set_params(start)
    ref = TwinRefiner(twin)
    ctx = twin.forward_tape(r[:k], phases)
    d = ref.step(ctx, twin.frames_of(ctx), frames[:k])
    free = bench.refiner.free
    np.testing.assert_allclose(twin.params.vector(free), got.vector(free), rtol=1e-9, atol=0)
    assert got != start
    assert d == pytest.approx(bench.refiner.last_discrepancy, rel=1e-6)


def test_refine_images_below_one_is_refused():
    bench, twin, r, phases, rng = _setup()
    with pytest.raises(ValueError, match="refine_images = 0"):
        BenchODU(bench._ideal, bench.device, "online", twin, refine_every=1, refine_images=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64])
def test_resample_apply_matches_a_per_image_reference(dtype):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 3, 17, 13)).astype(dtype)
    if np.iscomplexobj(a):
        a += 1j * rng.standard_normal(a.shape).astype(dtype)
    ry = resample.overlap_matrix(9, 1.3, 1.7, 17)
    rx = resample.lowpass_matrix(13, 0.2)[:, :13]
    got = resample.apply(a, ry, rx)
    tol = 50 * np.finfo(a.real.dtype).eps
    for idx in np.ndindex(a.shape[:2]):
        ref = ry @ a[idx].astype(np.complex128) @ rx.T
        assert np.max(np.abs(got[idx] - ref)) <= tol * np.max(np.abs(ref))
    assert got.dtype == a.dtype and got.shape == (2, 3, 9, 13)
    np.testing.assert_array_equal(resample.apply(a, None, None), a)


@pytest.mark.parametrize("flip", [False, True])
def test_binning_of_the_covered_part_equals_the_straightforward_formula(flip):
    bench, twin, r, phases, rng = _setup(flip)
    b = bench.binning
    frames = rng.uniform(0, 4095, (3, twin.rows, twin.cols))
    want = resample.apply((frames - 17.5) / 3.25, b.ay, b.ax)
    got = b.intensity(frames, 3.25, 17.5)
    assert np.max(np.abs(got - want)) <= 1e-12 * np.max(np.abs(want))
    # frames as the camera gives them (integers) and as floats: the same
    u16 = np.rint(frames).astype(np.uint16)
    np.testing.assert_array_equal(b.intensity(u16, 3.25, 17.5), b.intensity(u16.astype(np.float64), 3.25, 17.5))


@pytest.mark.parametrize("n,shift", [(24, (0.37, -1.41)), (23, (2.6, 0.2)), (24, (0.0, 0.0))])
def test_shifted_lowpass_equals_the_fourier_shift_of_the_lowpassed_canvas(n, shift):
    rng = np.random.default_rng(1)
    canvas = rng.uniform(0, 1, (3, 15, 13))
    ly = resample.lowpass_matrix(n, 0.17)[:, 4:19]
    lx = resample.lowpass_matrix(n, 0.17)[:, 5:18]
    want = parts.fourier_shift(ly @ canvas @ lx.T, shift, dtype=np.complex128)
    got = parts.ShiftedLowpass(ly, lx, shift, np.complex128)(canvas)
    assert np.max(np.abs(got - want)) <= 1e-12 * np.max(np.abs(want))
    if n % 2 == 0 and shift[0]:
        assert np.max(np.abs(want.imag)) > 1e-6 * np.max(np.abs(want))   # the Nyquist terms count
    got32 = parts.ShiftedLowpass(ly, lx, shift, np.complex64)(canvas.astype(np.float32))
    assert got32.dtype == np.complex64
    assert np.max(np.abs(got32 - want)) <= 100 * F32 * np.max(np.abs(want))


def test_a_tape_of_fresh_images_equals_the_cached_path():
    bench, twin, r, phases, rng = _setup()
    assert np.all(twin.input_shift_px() != 0)
    frames, ctx = twin.forward_train(r, phases)
    twin.clear_cache()
    fresh = twin.forward_tape(r, phases, fresh_images=True)
    assert fresh.base is None
    assert np.max(np.abs(fresh.intensity - ctx.intensity)) <= 100 * F32 * np.max(ctx.intensity)
    np.testing.assert_allclose(twin.frames_of(fresh), frames, rtol=100 * F32, atol=100 * F32 * frames.max())
    G = rng.standard_normal(frames.shape)
    a, pa = twin.backward(ctx, G, phase_grad=True)
    b, pb = twin.backward(fresh, G, phase_grad=True)
    assert np.max(np.abs(pa - pb)) <= 1e3 * F32 * np.max(np.abs(pa))
    for k in a:
        assert np.max(np.abs(a[k] - b[k])) <= 1e3 * F32 * max(np.max(np.abs(a[k])), 1e-30), k
