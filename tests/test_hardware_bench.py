"""The Bench: the ideal bench is the ideal ODU, the default bench's frames, inputs and configuration."""

import numpy as np
import pytest

from optdiff.config import ConfigError, OpticsConfig
from optdiff.hardware import (
    Bench,
    BenchConfig,
    Camera,
    CaptureDevice,
    FoldedPropagation,
    bench_config_to_toml,
    load_bench_config,
)
from optdiff.odu import ODU, init_phases

OPTICS = OpticsConfig(n=64, upsample=4)   # 12 x 12 images, 48 x 48 SLM pixels, 8 dark pixels around
H = 12


def phases_and_images(optics=OPTICS, B=3, seed=0):
    rng = np.random.default_rng(seed)
    return init_phases(optics, image_size=H, rng=seed), rng.uniform(-3, 3, (B, H, H))


@pytest.mark.parametrize("optics", [OPTICS, OpticsConfig(n=64, upsample=4, layers=3, camera_distance=20e-3,
                                                         init="zero", init_noise=1.0)])
def test_the_ideal_bench_is_the_ideal_odu(optics):
    phases, images = phases_and_images(optics)
    ref = ODU(optics, H).camera(images, phases)
    got = Bench.ideal(optics, H).capture(images, phases)
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6 * float(ref.max()))


def test_an_ideal_bench_with_image_sized_pixels_bins_like_the_odu():
    phases, images = phases_and_images()
    odu = ODU(OPTICS, H)
    assert not odu.flip
    cam = Camera.ideal(64, OPTICS.pitch)
    cam = Camera(pixel_pitch=4 * OPTICS.pitch, roi=(H, H), magnification=1.0, bits=None, full_well=None, gain=1.0,
                 read_noise=0.0, dark_level=0.0, shot_noise=False, electrons_per_intensity=cam.electrons_per_intensity)
    bench = Bench(OPTICS, H, BenchConfig.ideal(OPTICS).replace(camera=cam))
    np.testing.assert_allclose(bench.capture(images, phases), odu.intensity(images, phases), rtol=2e-6, atol=1e-9)


def test_default_bench_gives_12_bit_frames_of_the_read_out_region():
    phases, images = phases_and_images()
    bench = Bench(OPTICS, H)
    assert isinstance(bench, CaptureDevice)
    f = bench.capture(images, phases)
    assert f.dtype == np.uint16 and f.shape == (3, 130, 130)
    assert f.max() <= 4095 and f.min() >= 0
    # the 64 x 64 grid is seen by the middle 32 x 32 camera pixels (2 x 2 SLM pixels each)
    dark = np.concatenate([f[:, :40].ravel(), f[:, 90:].ravel()]).astype(float)
    assert abs(dark.mean() - 16.0) < 0.1 and dark.std() < 2.0
    assert f[:, 49:81, 49:81].mean() > 100


def test_frames_are_deterministic_with_the_seed_and_average_to_the_mean():
    phases, images = phases_and_images(B=1)
    a = Bench(OPTICS, H, seed=3).capture(images, phases)
    b = Bench(OPTICS, H, seed=3).capture(images, phases)
    c = Bench(OPTICS, H, seed=4).capture(images, phases)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    bench = Bench(OPTICS, H, seed=5)
    many = bench.capture(np.repeat(images, 64, axis=0), phases).astype(float).mean(axis=0)
    mean = bench.mean_frames(images, phases)[0]
    g = bench.config.camera.dn_per_electron
    sigma = np.sqrt((g * (mean - 16.0) + (g * 2.3) ** 2 + 1 / 12) / 64)   # shot + read + rounding, 64 frames
    z = ((many - mean) / sigma)[mean > 100]
    assert 0.8 < np.mean(z ** 2) < 1.2 and np.abs(z).max() < 5.5


def test_grey_levels_and_slm_levels_are_what_floats_turn_into():
    phases, _ = phases_and_images()
    bench = Bench(OPTICS, H, BenchConfig().replace(camera=dict(shot_noise=False, read_noise=0.0)))
    levels = np.random.default_rng(1).integers(0, 256, (2, H, H)).astype(np.uint8)
    values = (levels / 255 - OPTICS.amp_bias) / OPTICS.amp_scale          # encode back to exactly those levels
    np.testing.assert_array_equal(bench.capture(levels, phases), bench.capture(values, phases))
    slm_levels = bench.config.slm.levels_of_phase(phases)
    np.testing.assert_array_equal(bench.capture(levels, slm_levels), bench.capture(levels, phases))


def test_a_larger_grid_keeps_the_light_that_walks_past_the_patterns():
    optics = OpticsConfig(n=64, upsample=4)
    _, images = phases_and_images(optics)
    phases = np.zeros((4, 64, 64), np.float32)      # free space: the light walks with the beam
    cfg = BenchConfig().replace(fold=dict(beam_angle=(1.5e-3, 0.0)), camera=dict(shot_noise=False, read_noise=0.0))
    small, big = Bench(optics, H, cfg), Bench(optics, H, cfg, grid=96)
    assert big.intensity(images, phases).shape == (3, 96, 96)
    lost = (small.mean_frames(images, phases) - 16).sum() / (big.mean_frames(images, phases) - 16).sum()
    assert lost < 0.9                                  # 0.2 mm of walk: the 64-pixel grid drops light


@pytest.mark.parametrize("make,words", [
    (lambda: Bench(OpticsConfig(n=64, upsample=4, encoding="phase"), H), "encoding"),
    (lambda: Bench(OpticsConfig(n=64, upsample=4, input_distance=1e-3), H), "input_distance"),
    (lambda: Bench(OPTICS, H, BenchConfig().replace(slm=dict(pitch=8e-6))), "SLM.pitch"),
    (lambda: Bench(OPTICS, H, grid=65), "grid"), (lambda: Bench(OPTICS, H, grid=400), "grid"),
    (lambda: Bench(OPTICS, H, BenchConfig().replace(fold=dict(patch_size=50, patch_pitch=50))), "patch_size"),
    (lambda: Bench(OPTICS, H, BenchConfig().replace(fold=dict(mirror_angle=(0.0, 0.02)))), "mirror")])
def test_a_bench_that_cannot_be_built_says_why(make, words):
    with pytest.raises(ValueError, match=words):
        make()


@pytest.mark.parametrize("images,slm,exposure,words", [
    (np.zeros((2, 11, 12)), None, None, "images must have shape"),
    (np.full((1, H, H), np.nan), None, None, "images contains 144 NaN"),
    (np.full((1, H, H), 300, np.uint16), None, None, "grey levels"),
    (np.zeros((1, H, H), complex), None, None, "images must be real"),
    (None, np.zeros((4, 64, 63)), None, "slm must have shape"),
    (None, np.full((4, 64, 64), np.inf, np.float32), None, "slm contains"),
    (None, np.full((4, 64, 64), -1, np.int16), None, "SLM levels"),
    (None, None, -1e-3, "exposure"), (None, None, "1ms", "exposure")])
def test_bad_capture_inputs_are_refused(images, slm, exposure, words):
    bench = Bench(OPTICS, H)
    images = np.zeros((1, H, H)) if images is None else images
    slm = np.zeros((4, 64, 64), np.float32) if slm is None else slm
    with pytest.raises((ValueError, TypeError), match=words):
        bench.capture(images, slm, exposure=exposure)


def test_bench_config_round_trips_through_toml(tmp_path):
    cfg = BenchConfig(seed=7).replace(slm=dict(crosstalk=0.2, lut_curvature=-0.1),
                                      fold=dict(mirror_angle=(1e-3, -2e-3), patch_offsets=((1e-6, 0.0),) * 4),
                                      camera=dict(bits=10, full_well=None))
    path = tmp_path / "bench.toml"
    path.write_text("[optics]\nn = 64\n\n" + bench_config_to_toml(cfg))
    assert load_bench_config(path) == cfg
    assert BenchConfig.from_dict(cfg.to_dict()) == cfg
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert load_bench_config(empty) == BenchConfig()


@pytest.mark.parametrize("table,words", [
    ({"slm": {"crosstalk": -1.0}}, r"\[bench.slm\] SLM.crosstalk"),
    ({"slm": {"blur": 1.0}}, r"\[bench.slm\] unknown key"),
    ({"lens": {}}, r"\[bench\] unknown key"),
    ({"camera": 3}, r"\[bench.camera\] must be a table"),
    ({"seed": -1}, "seed"),
    ({"fold": {"patch_pitch": 100}}, "patch_pitch")])
def test_bad_bench_configuration_names_the_key(table, words):
    with pytest.raises(ConfigError, match=words):
        BenchConfig.from_dict(table)


def test_describe_reports_the_geometry():
    bench = Bench(OPTICS, H, BenchConfig().replace(fold=FoldedPropagation(mirror_angle=(0.0, 1e-3))))
    d = bench.describe()
    assert d["distances_mm"] == pytest.approx([34.2] * 4)
    assert d["landing_mm"][1][1] == pytest.approx(17.1 * np.tan(2e-3), rel=1e-9)
    assert d["electrons_per_intensity"] == pytest.approx(7596, rel=1e-3)
