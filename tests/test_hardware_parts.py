"""Bench parts (DMD, SLM, camera, resampling) against small NumPy references and physical properties."""

import math

import numpy as np
import pytest

from optdiff.hardware import DMD, SLM, Camera, bayer_matrix, resample

PITCH, LAM = 9.2e-6, 850e-9


# ---------------------------------------------------------------- resampling
def ref_overlap(n_dst, d0, dw, n_src, s0, sw):
    W = np.zeros((n_dst, n_src))
    for i in range(n_dst):
        for j in range(n_src):
            lo, hi = max(d0 + i * dw, s0 + j * sw), min(d0 + (i + 1) * dw, s0 + (j + 1) * sw)
            W[i, j] = max(hi - lo, 0.0) / dw
    return W


def test_overlap_matrix_matches_loops_and_conserves_coverage():
    W = resample.overlap_matrix(7, 0.3, 1.7, 11, -0.2, 0.9)
    np.testing.assert_allclose(W, ref_overlap(7, 0.3, 1.7, 11, -0.2, 0.9), atol=1e-14)
    full = resample.overlap_matrix(4, 1.0, 2.0, 20, 0.0, 0.5)  # destination inside the source
    np.testing.assert_allclose(full.sum(axis=1), 1.0, atol=1e-14)


def test_box_gauss_kernel_is_a_partition_of_unity_and_identity_without_blur():
    for sigma, shift in ((0.3, 0.0), (0.3, 0.37), (1.2, -2.6)):
        x = np.arange(-40, 41) - shift
        assert abs(resample.box_gauss(x, sigma).sum() - 1.0) < 1e-12
    assert resample.blur_kernel(0.0) is None and resample.shift_matrix(9, 0.0) is None
    S = resample.shift_matrix(9, 2.0)               # an integer shift: a pure displacement
    np.testing.assert_array_equal(S, np.eye(9, k=-2))


def test_lowpass_matrix_passes_low_and_removes_high_frequencies():
    n, c = 256, 0.1
    L = resample.lowpass_matrix(n, c)
    x = np.arange(n)
    low, high = np.cos(2 * np.pi * 0.03 * x), np.cos(2 * np.pi * 0.25 * x)
    mid = slice(96, 160)  # away from the ends, where the truncated sinc rings
    assert np.abs((L @ low)[mid] - low[mid]).max() < 0.05
    assert np.abs((L @ high)[mid]).max() < 0.05
    assert resample.lowpass_matrix(n, 0.5) is None


# ---------------------------------------------------------------- DMD
def test_bayer_matrix_uses_every_rank_once_and_half_is_a_checkerboard():
    m = bayer_matrix(16)
    assert sorted(m.ravel().tolist()) == list(range(256))
    half = m < 128
    assert np.array_equal(half, (np.add.outer(np.arange(16), np.arange(16)) % 2) == 0)


def test_superpixel_mean_equals_grey_level_within_half_a_step():
    d = DMD()
    for g in range(256):
        pat = d.superpixel_pattern(g)
        assert pat.shape == (16, 16)
        assert abs(pat.mean() - g / 255) <= 1 / 512 + 1e-15     # within 1/256
    assert d.superpixel_pattern(0).sum() == 0 and d.superpixel_pattern(255).all()


def test_grey_levels_quantise_amplitudes_within_half_a_level():
    a = np.random.default_rng(0).random(1000)
    g = DMD().grey_levels(a)
    assert np.abs(g / 255 - a).max() <= 0.5 / 255 + 1e-15
    assert DMD().grey_levels([-0.5, 1.5]).tolist() == [0, 255]


def test_mirror_pattern_tiles_the_superpixels():
    d = DMD(superpixel=4, bits=4)
    levels = np.random.default_rng(1).integers(0, 16, (2, 3, 5))
    pat = d.mirror_pattern(levels)
    assert pat.shape == (2, 12, 20)
    for b in range(2):
        for i in range(3):
            for j in range(5):
                assert np.array_equal(pat[b, 4 * i:4 * i + 4, 4 * j:4 * j + 4], d.superpixel_pattern(levels[b, i, j]))


def ref_dmd_field(d, levels, n, k, pitch):
    """Each SLM pixel: mean over its area of the relayed mirror pattern (loops over mirrors)."""
    s = d.superpixel
    mag = d.magnification if d.magnification is not None else k * pitch / (s * d.mirror_pitch)
    w = mag * d.mirror_pitch / pitch
    H = levels.shape[-1]
    oy, ox = (n - k * H) // 2 + d.offset[1] / pitch, (n - k * H) // 2 + d.offset[0] / pitch
    mir = d.mirror_pattern(levels).astype(float)
    Wy = ref_overlap(n, -oy, 1.0, s * H, 0.0, w)
    Wx = ref_overlap(n, -ox, 1.0, s * H, 0.0, w)
    return np.einsum("iu,buv,jv->bij", Wy, mir, Wx)


@pytest.mark.parametrize("mag,offset", [(None, (0.0, 0.0)), (None, (3.3e-6, -8.1e-6)), (0.71, (1e-6, 2e-6))])
def test_dmd_relay_matches_the_mirror_reference(mag, offset):
    d = DMD(superpixel=4, bits=4, mirror_pitch=10e-6, magnification=mag, offset=offset, relay_na=None)
    levels = np.random.default_rng(2).integers(0, 16, (2, 6, 6))
    for fast in (True, False):
        f = d.relay(40, 5, (6, 6), PITCH, LAM, fast=fast).field(levels)
        assert f.dtype == np.float32 and f.shape == (2, 40, 40)
        np.testing.assert_allclose(f, ref_dmd_field(d, levels, 40, 5, PITCH), atol=1e-6)


def test_relay_aperture_removes_the_dither_of_a_uniform_grey():
    kw = dict(n=128, k=5, image_shape=(24, 24), pitch=PITCH, wavelength=LAM)
    g = np.full((1, 24, 24), 100)
    dithered = DMD().relay(**kw).field(g)
    grey = DMD(dither="none").relay(**kw).field(g) * (DMD().fill_counts(100) / 256) / (100 / 255)
    mid = (0, slice(40, 88), slice(40, 88))
    assert np.abs(dithered[mid] - grey[mid]).max() < 1e-3
    raw = DMD(relay_na=None).relay(**kw).field(g)      # without the aperture the dither shows
    assert np.ptp(raw[mid]) > 0.05


def test_ideal_dmd_writes_the_amplitudes_as_blocks():
    a = np.random.default_rng(3).random((2, 4, 4))
    f = DMD.ideal().relay(20, 3, (4, 4), PITCH, LAM).field(a)
    ref = np.zeros((2, 20, 20))
    ref[:, 4:16, 4:16] = np.kron(a, np.ones((3, 3)))
    np.testing.assert_array_equal(f, ref.astype(np.float32))


@pytest.mark.parametrize("kw,name", [
    (dict(superpixel=12), "DMD.superpixel"), (dict(bits=9), "DMD.superpixel"), (dict(bits=0), "DMD.bits"),
    (dict(relay_na=1.5), "DMD.relay_na"), (dict(mirror_pitch=-1e-6), "DMD.mirror_pitch"),
    (dict(offset="ab"), "DMD.offset"), (dict(dither="floyd"), "DMD.dither"),
    (dict(magnification=0.0), "DMD.magnification"), (dict(quantise=1), "DMD.quantise")])
def test_dmd_refuses_impossible_parameters(kw, name):
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        DMD(**kw)


# ---------------------------------------------------------------- SLM
def test_nominal_lut_inverts_and_quantisation_error_is_bounded():
    slm = SLM()
    levels = np.arange(256)
    assert np.array_equal(slm.levels_of_phase(slm.nominal_phase(levels)), levels)
    phi = np.random.default_rng(4).uniform(-20, 20, 10000)
    err = np.angle(np.exp(1j * (slm.nominal_phase(slm.levels_of_phase(phi)) - phi)))
    assert np.abs(err).max() <= math.pi / 256 + 1e-12
    assert slm.levels_of_phase(phi).dtype == np.uint8 and SLM(bits=10).levels_of_phase(phi).dtype == np.uint16


@pytest.mark.parametrize("curv", [-0.9, -0.2, 0.0, 0.5, 0.9])
def test_true_lut_is_monotone_and_scaled(curv):
    lut = SLM(lut_curvature=curv, phase_scale=0.9).true_lut()
    assert lut[0] == 0 and np.all(np.diff(lut) > 0)
    u = 255 / 256
    assert lut[-1] == pytest.approx(0.9 * 2 * math.pi * (u + curv * u * (1 - u)))


def test_explicit_lut_is_used_for_levels_and_quantised_phases():
    table = np.linspace(0, 5.0, 256) ** 1.1
    slm = SLM(lut=tuple(table), crosstalk=0.0)
    levels = np.random.default_rng(5).integers(0, 256, (1, 8, 8)).astype(np.uint8)
    np.testing.assert_allclose(slm.shown_phase(levels), table[levels])
    g = slm.on_grid(8, [(0.0, 0.0)])
    np.testing.assert_allclose(g.phases(levels), table[levels].astype(np.float32))
    np.testing.assert_allclose(g.phases(slm.nominal_phase(levels)), table[levels].astype(np.float32))


def test_crosstalk_is_a_gaussian_blur_of_the_shown_phase():
    sigma, n = 0.6, 16
    slm = SLM(crosstalk=sigma)
    levels = np.random.default_rng(6).integers(0, 256, (1, n, n)).astype(np.uint8)
    got = slm.on_grid(n, [(0.0, 0.0)]).phases(levels)[0]
    shown = slm.true_lut()[levels[0]]
    kern = resample.box_gauss(np.arange(-n + 1, n), sigma)   # a pixel seen through the blur
    ref = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            for a in range(n):
                for b in range(n):
                    ref[i, j] += kern[i - a + n - 1] * kern[j - b + n - 1] * shown[a, b]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    flat = slm.on_grid(n, [(0.0, 0.0)]).phases(np.full((1, n, n), 77, np.uint8))[0]
    assert np.abs(flat[4:-4, 4:-4] - slm.true_lut()[77]).max() < 1e-5   # a flat phase stays flat


def test_pattern_displacement_moves_the_phases():
    slm = SLM(crosstalk=0.0)
    levels = np.random.default_rng(7).integers(0, 256, (2, 12, 12)).astype(np.uint8)
    out = slm.on_grid(12, [(3.0, 0.0), (0.0, -2.0)]).phases(levels)   # (x, y) in pixels
    shown = slm.true_lut()[levels]
    ref0 = np.zeros((12, 12))
    ref0[:, 3:] = shown[0][:, :-3]
    ref1 = np.zeros((12, 12))
    ref1[:-2] = shown[1][2:]
    np.testing.assert_allclose(np.exp(1j * out[0]), np.exp(1j * ref0), atol=1e-6)
    np.testing.assert_allclose(np.exp(1j * out[1]), np.exp(1j * ref1), atol=1e-6)


def test_a_fractional_displacement_averages_the_transmission_over_each_pixel():
    slm, f = SLM(crosstalk=0.0), 0.3
    levels = np.random.default_rng(8).integers(0, 256, (1, 10, 10)).astype(np.uint8)
    out = slm.on_grid(10, [(f, 0.0)]).phases(levels)[0]
    t = np.exp(1j * slm.true_lut()[levels[0]])
    ref = (1 - f) * t
    ref[:, 1:] += f * t[:, :-1]      # pixel i sees 0.3 of pattern pixel i-1 (moved +x) ...
    ref[:, 0] += f                   # ... or, at the edge, the SLM's level 0 beyond the pattern
    np.testing.assert_allclose(np.exp(1j * out), ref / np.abs(ref), atol=1e-5)
    # a smooth pattern moves by the fraction itself: a linear ramp stays a ramp, shifted
    ramp = np.tile(0.2 * np.arange(10.0), (1, 10, 1))
    moved = SLM(crosstalk=0.0, quantise=False).on_grid(10, [(f, 0.0)]).phases(ramp)[0]
    np.testing.assert_allclose(moved[:, 1:], np.tile(0.2 * (np.arange(1, 10) - f), (10, 1)), atol=3e-4)


def test_ideal_slm_passes_phases_through_bit_for_bit():
    ph = np.random.default_rng(8).uniform(-7, 7, (3, 10, 10)).astype(np.float32)
    out = SLM.ideal().on_grid(10, np.zeros((3, 2))).phases(ph)
    assert np.array_equal(out, ph)


@pytest.mark.parametrize("kw,name", [
    (dict(lut=tuple(np.linspace(1, 0, 256))), "SLM.lut"), (dict(lut=(0.0, 1.0)), "SLM.lut"),
    (dict(lut_curvature=1.0), "SLM.lut_curvature"), (dict(crosstalk=-0.1), "SLM.crosstalk"),
    (dict(bits=0), "SLM.bits"), (dict(phase_scale=0.0), "SLM.phase_scale"), (dict(pitch=float("nan")), "SLM.pitch"),
    (dict(resolution=(0, 10)), "SLM.resolution")])
def test_slm_refuses_impossible_parameters(kw, name):
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        SLM(**kw)


# ---------------------------------------------------------------- camera
def flat(n, value):
    return np.full((1, n, n), value, dtype=np.float32)


def test_ideal_camera_returns_the_intensity_itself():
    I = np.random.default_rng(9).random((2, 16, 16)).astype(np.float32)
    out = Camera.ideal(16, PITCH).readout(16, PITCH, LAM, 1.0).frames(I, np.random.default_rng(0))
    assert out.dtype == np.float32 and np.array_equal(out, I)


def test_camera_pixels_average_the_intensity_over_their_footprint():
    n, k = 24, 3
    cam = Camera(pixel_pitch=k * PITCH, magnification=1.0, roi=(6, 6), bits=None, full_well=None, gain=1.0,
                 read_noise=0.0, dark_level=0.0, shot_noise=False, electrons_per_intensity=1.0)
    I = np.random.default_rng(10).random((2, n, n))
    got = cam.readout(n, PITCH, LAM, 1.0).frames(I, np.random.default_rng(0))
    ref = I[:, 3:21, 3:21].reshape(2, 6, 3, 6, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    shifted = cam.readout(n, PITCH, LAM, 1.0, shift=(2 * PITCH, -PITCH)).frames(I, np.random.default_rng(0))
    ref = I[:, 2:20, 5:23].reshape(2, 6, 3, 6, 3).mean(axis=(2, 4))   # axis moved +2 px in x, -1 in y
    np.testing.assert_allclose(shifted, ref, rtol=1e-6)


def noisy_camera(**kw):
    base = dict(pixel_pitch=PITCH, magnification=1.0, roi=(200, 200), electrons_per_intensity=1000.0)
    base.update(kw)
    return Camera(**base)


def test_camera_noise_has_the_photon_transfer_mean_and_variance():
    cam = noisy_camera(read_noise=5.0, dark_level=20.0, gain=0.25, full_well=None)
    f = cam.readout(200, PITCH, LAM, 1.0).frames(flat(200, 2.0), np.random.default_rng(11)).astype(float)
    e = 2000.0
    N = f.size
    mean_expect, var_expect = 0.25 * e + 20.0, 0.25 ** 2 * (e + 25.0) + 1 / 12
    assert abs(f.mean() - mean_expect) < 4 * math.sqrt(var_expect / N)
    assert abs(f.var() / var_expect - 1) < 4 * math.sqrt(2 / N)
    dark = cam.readout(200, PITCH, LAM, 1.0).frames(flat(200, 0.0), np.random.default_rng(12)).astype(float)
    assert abs(dark.mean() - 20.0) < 0.05 and abs(dark.std() - math.sqrt(0.25 ** 2 * 25 + 1 / 12)) < 0.05


def test_saturation_and_bit_depth_clip_the_frames():
    cam = noisy_camera(bits=12, full_well=10500.0)
    sat = cam.readout(200, PITCH, LAM, 1.0).frames(flat(200, 50.0), np.random.default_rng(13))
    assert sat.dtype == np.uint16
    top = round(cam.dn_per_electron * 10500 + 16)      # full well -> full scale, + dark level
    assert sat.max() <= 4095 and abs(int(np.median(sat)) - min(top, 4095)) <= 1
    small = noisy_camera(bits=8, full_well=None, gain=1.0).readout(200, PITCH, LAM, 1.0)
    f = small.frames(flat(200, 0.9), np.random.default_rng(14))
    assert f.dtype == np.uint8 and f.max() == 255        # 900 DN does not fit 8 bits
    one = noisy_camera(bits=1, dark_level=0.0, full_well=None, gain=1.0).readout(200, PITCH, LAM, 1.0)
    assert set(np.unique(one.frames(flat(200, 0.0005), np.random.default_rng(15)))) <= {0, 1}


def test_exposure_scales_the_signal_and_photometry_follows_the_formula():
    cam = Camera()
    area = (260 * PITCH) ** 2
    epi = cam.electrons_at(LAM, area)
    photon = 6.62607015e-34 * 299792458.0 / LAM
    assert epi == pytest.approx(0.2 * 150e-9 * 1e-3 * (3.45e-6 / 0.1875) ** 2 / (area * photon))
    r = cam.readout(64, PITCH, LAM, area)
    I = flat(64, 0.3)
    m1, m2 = r.mean_frames(I), r.mean_frames(I, exposure=2e-3)
    centre = (0, 65, 65)
    assert (m2[centre] - 16.0) == pytest.approx(2 * (m1[centre] - 16.0))


def test_camera_noise_is_deterministic_with_the_seed():
    r = Camera().readout(64, PITCH, LAM, (260 * PITCH) ** 2)
    I = np.random.default_rng(16).random((2, 64, 64)).astype(np.float32)
    a, b = r.frames(I, np.random.default_rng(5)), r.frames(I, np.random.default_rng(5))
    c = r.frames(I, np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("kw,name", [
    (dict(bits=0), "Camera.bits"), (dict(read_noise=-1.0), "Camera.read_noise"), (dict(full_well=0.0), "Camera.full_well"),
    (dict(qe=1.5), "Camera.qe"), (dict(exposure=0.0), "Camera.exposure"), (dict(dark_level=5000.0), "Camera.dark_level"),
    (dict(roi=(0, 5)), "Camera.roi"), (dict(laser_power=-1.0), "Camera.laser_power"),
    (dict(magnification=float("inf")), "Camera.magnification"), (dict(gain=-2.0), "Camera.gain")])
def test_camera_refuses_impossible_parameters(kw, name):
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        Camera(**kw)
