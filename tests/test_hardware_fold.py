"""Folded geometry: ray positions, tilt sign and magnitude, the three simulation frames, bad geometry."""

import math

import numpy as np
import pytest

import optdiff
from optdiff.config import OpticsConfig
from optdiff.hardware import Bench, BenchConfig, Camera, FoldedPropagation
from optdiff.odu import init_phases

PITCH, LAM, Z = 9.2e-6, 850e-9, 17.1e-3


def centroid(I, n):
    c = (np.arange(n) - (n - 1) / 2) * PITCH
    w = I.sum()
    return float((I.sum(axis=0) * c).sum() / w), float((I.sum(axis=1) * c).sum() / w)   # (x, y)


def gaussian_beam(n, waist_px=20.0):   # wide enough to stay on the grid over four hops
    c = np.arange(n) - (n - 1) / 2
    g = np.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / waist_px ** 2)
    return g.astype(np.complex64)[None]


def propagate(fold, n, layers):
    lay = fold.layout(n, layers, PITCH)
    stack = optdiff.PhaseStack(n, wavelength=LAM, pitch=PITCH, distances=lay.distances, tilts=lay.tilts, padding=2)
    phases = np.zeros((len(lay.distances), n, n), np.float32)
    return lay, stack.forward(gaussian_beam(n), phases)[0]


def test_aligned_fold_is_the_ideal_stack():
    lay = FoldedPropagation().layout(128, 4, PITCH)
    assert lay.distances == (2 * Z,) * 4
    assert not lay.tilts.any() and not lay.mask_shifts.any() and not lay.camera_shift.any()
    np.testing.assert_allclose(lay.landing, 0.0, atol=1e-15)
    assert FoldedPropagation().design_angle(PITCH) == pytest.approx(math.atan(260 * PITCH / (2 * Z)))


def test_mirror_tilt_turns_the_beam_by_twice_its_angle():
    alpha = 2e-3
    fold = FoldedPropagation(mirror_angle=(0.0, alpha))
    lay, I = propagate(fold, 128, 1)
    cx, cy = centroid(I, 128)
    # the beam turns at the mirror, half-way: it lands z_gap tan(2 alpha) from the design point, +y
    assert lay.landing[1, 1] == pytest.approx(Z * math.tan(2 * alpha), rel=1e-12)
    assert cy == pytest.approx(Z * math.tan(2 * alpha), rel=2e-3) and abs(cx) < 1e-8
    # the input beam's angle: 2 z_gap tan(angle) per hop
    lay, I = propagate(FoldedPropagation(beam_angle=(0.0, 2 * alpha)), 128, 1)
    assert centroid(I, 128)[1] == pytest.approx(2 * Z * math.tan(2 * alpha), rel=2e-3)


@pytest.mark.parametrize("frame,planes", [("lattice", False), ("lattice", True), ("beam", False)])
def test_every_frame_puts_the_beam_where_the_rays_land(frame, planes):
    fold = FoldedPropagation(mirror_angle=(0.0, 2e-4), beam_angle=(5e-4, -3e-4), frame=frame, mirror_planes=planes)
    lay, I = propagate(fold, 256, 4)
    cx, cy = centroid(I, 256)
    assert cx - lay.camera_shift[0] == pytest.approx(lay.landing[4, 0], abs=0.02 * PITCH)
    assert cy - lay.camera_shift[1] == pytest.approx(lay.landing[4, 1], abs=0.02 * PITCH)


def test_ray_positions_follow_the_fold():
    a, b = 3e-4, 1e-3
    lay = FoldedPropagation(mirror_angle=(0.0, a), beam_angle=(b, 0.0)).layout(128, 4, PITCH)
    y = lay.landing[:, 1]
    ref = [0.0]
    for j in range(4):   # half a hop before the bounce, half after
        ref.append(ref[-1] + Z * (math.tan(2 * a * j) + math.tan(2 * a * (j + 1))))
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-18)
    np.testing.assert_allclose(np.diff(y, 2), 2 * Z * math.tan(2 * a), rtol=1e-5)   # +2 z tan(2a) per hop
    th0 = FoldedPropagation().design_angle(PITCH)
    per_hop = 2 * Z * (math.tan(th0 + b) - math.tan(th0))
    np.testing.assert_allclose(lay.landing[:, 0], per_hop * np.arange(5), rtol=1e-12)


def test_a_gap_error_walks_the_beam_along_the_fold():
    th0 = FoldedPropagation().design_angle(PITCH)
    lay = FoldedPropagation(z_gap=Z * 1.01, fold_angle=th0).layout(128, 4, PITCH)
    assert lay.distances == (2 * Z * 1.01,) * 4
    np.testing.assert_allclose(lay.landing[:, 0], 2 * 0.01 * Z * math.tan(th0) * np.arange(5), rtol=1e-9)
    np.testing.assert_allclose(lay.landing[:, 1], 0.0, atol=1e-18)


def test_patch_offsets_displace_the_patterns():
    offs = ((20e-6, 0.0), (0.0, -9.2e-6), (0.0, 0.0), (1e-6, 1e-6))
    lat = FoldedPropagation(patch_offsets=offs).layout(128, 4, PITCH)
    np.testing.assert_allclose(lat.landing[:4], -np.array(offs), atol=1e-18)   # the beam lands beside them
    assert not lat.mask_shifts.any() and not lat.camera_shift.any()           # patterns stay on the grid
    np.testing.assert_allclose(lat.input_shift, -np.array(offs[0]), atol=1e-18)
    beam = FoldedPropagation(patch_offsets=offs, frame="beam").layout(128, 4, PITCH)
    np.testing.assert_allclose(beam.mask_shifts, np.array(offs), atol=1e-18)  # patterns move on the grid
    assert not beam.tilts.any() and not beam.input_shift.any()


def bench_frames(fold, optics, image_size, phases, images):
    """Default camera pixels (2 x 2 simulation pixels), everything else ideal, no noise."""
    cam = Camera(bits=None, full_well=None, gain=1.0, read_noise=0.0, dark_level=0.0, shot_noise=False,
                 electrons_per_intensity=1.0)
    return Bench(optics, image_size, BenchConfig.ideal(optics).replace(fold=fold, camera=cam)).capture(images, phases)


def test_frames_agree_across_simulation_frames():
    # The lattice frame with the mirror as a layer of its own is the reference: the default lattice
    # frame matches it to 1.5% (patterns of white phase noise, the ODU's start), the beam frame to
    # 7% on smooth patterns (it resamples them); the misalignment itself changes the frames by 13-31%.
    images = np.random.default_rng(0).uniform(-1, 1, (2, 20, 20))
    kw = dict(z_gap=Z, mirror_angle=(1e-4, -1.5e-4), beam_angle=(3e-4, 2e-4))
    for folds, noise, corr, tol in (((FoldedPropagation(**kw),), 0.3, 0.0, 0.03),
                                    ((FoldedPropagation(**kw), FoldedPropagation(frame="beam", **kw)), 0.5, 2.0, 0.1)):
        optics = OpticsConfig(n=128, init_noise=noise, init_noise_corr=corr)
        phases = init_phases(optics, image_size=20, rng=1)
        ref = bench_frames(FoldedPropagation(mirror_planes=True, **kw), optics, 20, phases, images)
        for fold in folds:
            got = bench_frames(fold, optics, 20, phases, images)
            err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
            assert err < tol, (fold.frame, err)
            assert got.sum() == pytest.approx(ref.sum(), rel=0.01)
        aligned = bench_frames(FoldedPropagation(), optics, 20, phases, images)
        assert np.linalg.norm(aligned - ref) / np.linalg.norm(ref) > 0.1     # the angles matter


@pytest.mark.parametrize("kw,name", [
    (dict(z_gap=-1e-3), "z_gap"), (dict(patch_pitch=200), "patch_pitch"), (dict(mirror_angle=(0.06, 0.0)), "mirror_angle"),
    (dict(beam_angle=(0.0, float("nan"))), "beam_angle"), (dict(patch_size=0), "patch_size"),
    (dict(frame="lab"), "frame"), (dict(mirror_planes=True, camera_hop=10e-3), "camera_hop"),
    (dict(mirror_planes=True, frame="beam"), "mirror_planes"),
    (dict(patch_offsets=((0.0, 0.0), (1.0, 0.0))), "patch_offsets"), (dict(fold_angle=-0.1), "fold_angle"),
    (dict(mirror_size=0.0), "mirror_size")])
def test_impossible_parameters_are_refused(kw, name):
    with pytest.raises(ValueError, match=f"FoldedPropagation.{name}"):
        FoldedPropagation(**kw)


@pytest.mark.parametrize("kw,n,words", [
    (dict(mirror_angle=(0.0, 0.02)), 128, "leaves the 11.6 mm mirror"),
    (dict(beam_angle=(0.03, 0.0)), 128, "leaves the 11.6 mm mirror"),
    (dict(mirror_size=8e-3), 128, "mirror_size"),
    (dict(patch_pitch=600), 128, "leaves the 1152 x 1920 SLM"),
    (dict(patch_offsets=((0.0, 0.0),) * 3 + ((0.0, 5e-3),)), 128, "leaves the 1152 x 1920 SLM"),
    (dict(), 300, "patch_size"),
    (dict(patch_offsets=((0.0, 0.0),) * 3), 128, "patch_offsets"),
    (dict(mirror_angle=(0.0, 4e-3), mirror_size=30e-3), 128, "misses patch")])
def test_geometry_that_cannot_work_is_refused(kw, n, words):
    with pytest.raises(ValueError, match=words):
        FoldedPropagation(**kw).layout(n, 4, PITCH, slm_resolution=(1152, 1920))
