"""The digital twin: its geometry and Jacobian, agreement with the bench at the true parameters,
and every parameter gradient (and the phase gradient) against central differences."""

import numpy as np
import pytest

from optdiff.config import OpticsConfig
from optdiff.hardware import Bench, BenchConfig, FoldedPropagation
from optdiff.hardware.calibration import pi_patch_squares, squares_to_levels
from optdiff.hardware.twin import DigitalTwin
from optdiff.hardware.twin_geometry import fold_geometry
from optdiff.hardware.twin_params import PARAM_NAMES, TwinParams

PITCH = 9.2e-6

# a small bench: 32 x 32 patterns, 2 patches, a 20 x 20 camera region
SMALL_OPTICS = OpticsConfig(n=32, layers=2)
SMALL_NOMINAL = BenchConfig().replace(fold=dict(patch_size=64, patch_pitch=64),
                                      camera=dict(roi=(20, 20), magnification=0.1875 * 260 / 64))


def perturbed(p: TwinParams) -> TwinParams:
    return p.replace(z_gap=0.0172, mirror_angle=(3e-4, -2e-4), beam_angle=(1e-3, 5e-4),
                     patch_offsets=((5e-6, -3e-6), (2e-6, 4e-6)), dmd_offset=(3e-6, -2e-6),
                     camera_offset=(7e-6, -9e-6), phase_scale=1.02, lut_curvature=0.05, crosstalk=0.3,
                     gain=0.4, dark_level=15.0)


@pytest.mark.parametrize("camera_hop", [None, 30e-3])
def test_geometry_matches_the_fold_and_its_jacobian_is_exact(rng, camera_hop):
    L = 4
    p = np.concatenate([[17.3e-3], [0.4e-3, -0.3e-3], [1.2e-3, 0.9e-3], rng.normal(0, 10e-6, 2 * L)])
    th0 = FoldedPropagation().design_angle(PITCH)
    fold = FoldedPropagation(z_gap=p[0], mirror_angle=tuple(p[1:3]), beam_angle=tuple(p[3:5]),
                             patch_offsets=tuple(map(tuple, p[5:].reshape(L, 2))), fold_angle=th0,
                             camera_hop=camera_hop)
    lay = fold.layout(128, L, PITCH)

    def geo(q):
        return fold_geometry(q, layers=L, pitch=PITCH, patch_pitch=260, fold_angle=th0, camera_hop=camera_hop)

    g = geo(p)
    np.testing.assert_allclose(g.distances, lay.distances, rtol=1e-15)
    np.testing.assert_allclose(g.tilts, lay.tilts, rtol=0, atol=1e-18)
    np.testing.assert_allclose(g.landing, lay.landing, rtol=0, atol=1e-18)
    for i in range(p.size):
        h = 1e-9
        e = np.zeros_like(p)
        e[i] = h
        for got, name in ((g.d_tilts, "tilts"), (g.d_distances, "distances"), (g.d_landing, "landing")):
            fd = (getattr(geo(p + e), name) - getattr(geo(p - e), name)) / (2 * h)
            np.testing.assert_allclose(got[..., i], fd, rtol=1e-5, atol=1e-6 * np.abs(got).max())


def test_twin_at_the_true_parameters_reproduces_the_bench():
    optics = OpticsConfig(amp_bias=0.5)   # the 1.5 % below is at this bias (2.6 % at 0.25: a quarter of the light)
    truth = BenchConfig().replace(
        fold=dict(z_gap=17.4e-3, mirror_angle=(-4e-4, 3e-4), beam_angle=(1e-3, -1.2e-3),
                  patch_offsets=((5e-6, -8e-6), (1e-6, 4e-6), (-9e-6, 2e-6), (3e-6, 3e-6)),
                  fold_angle=FoldedPropagation().design_angle(PITCH)),
        slm=dict(phase_scale=0.97, lut_curvature=0.05, crosstalk=0.2), dmd=dict(offset=(3e-6, -2e-6)),
        camera=dict(gain=0.37, dark_level=18.0, offset=(15e-6, -6e-6)))
    bench = Bench(optics, 20, truth)
    twin = DigitalTwin(optics, 20, BenchConfig(), TwinParams.from_config(truth, 4))
    nominal = DigitalTwin(optics, 20, BenchConfig())
    img = np.full((1, 20, 20), 255, np.uint8)
    for sq in pi_patch_squares(2, 4, 128, seed=1):
        lv = squares_to_levels(sq, 128, 128)
        want = bench.mean_frames(img, lv)
        ok = want < 0.97 * want.max()   # the twin does not saturate: compare where the bench does not
        spread = np.linalg.norm(want[ok] - want[ok].mean())
        assert np.linalg.norm((twin.frames(img, lv) - want)[ok]) < 3e-3 * spread
        assert np.linalg.norm((nominal.frames(img, lv) - want)[ok]) > 0.3 * spread
    r = np.random.default_rng(0).uniform(-1, 1, (2, 20, 20))
    ph = np.random.default_rng(1).uniform(-3, 3, (4, 128, 128))
    want = bench.mean_frames(r, ph)
    ok = want < 0.97 * want.max()
    # random images: the bench moves the DMD image by area resampling (a blur at the 0.7 px
    # shift here), the twin by a Fourier shift: 1.5 % apart, D ~ 1e-4
    assert np.linalg.norm((twin.frames(r, ph) - want)[ok]) < 2.5e-2 * np.linalg.norm(want[ok] - want[ok].mean())


STEPS = {"z_gap": 1e-8, "mirror_angle": 1e-8, "beam_angle": 1e-8, "patch_offsets": 1e-9, "dmd_offset": 1e-9,
         "camera_offset": 1e-9, "phase_scale": 1e-6, "lut_curvature": 1e-6, "crosstalk": 1e-6, "gain": 1e-6,
         "dark_level": 1e-4}


@pytest.mark.parametrize("kind", ["levels", "radians"])
def test_parameter_gradients_match_finite_differences(rng, kind):
    p = perturbed(TwinParams.from_config(SMALL_NOMINAL, 2))
    twin = DigitalTwin(SMALL_OPTICS, 8, SMALL_NOMINAL, p, precision="double")
    img = rng.uniform(-1, 1, (2, 8, 8))
    if kind == "levels":
        slm = squares_to_levels(pi_patch_squares(1, 2, 32, seed=3)[0], 32, 128)
    else:
        slm = rng.uniform(-3, 3, (2, 32, 32))
    frames, ctx = twin.forward_train(img, slm)
    w = rng.standard_normal(frames.shape)
    grads, _ = twin.backward(ctx, w)
    assert set(grads) == set(PARAM_NAMES)

    def loss(q):
        return float(np.sum(w * DigitalTwin(SMALL_OPTICS, 8, SMALL_NOMINAL, q, precision="double").frames(img, slm)))

    for name in PARAM_NAMES:
        v = p.array(name)
        flat = v.reshape(-1)
        g = np.asarray(grads[name]).reshape(-1)
        assert g.size == flat.size
        for i in range(flat.size):
            e = np.zeros_like(flat)
            e[i] = STEPS[name]
            fd = (loss(p.replace(**{name: (flat + e).reshape(v.shape) if v.ndim else flat[0] + e[0]}))
                  - loss(p.replace(**{name: (flat - e).reshape(v.shape) if v.ndim else flat[0] - e[0]}))) / (2 * e[i])
            assert abs(fd - g[i]) <= 1e-6 * max(abs(fd), 1e-3), (name, i, fd, g[i])


def test_phase_gradient_matches_finite_differences_without_quantisation(rng):
    nominal = SMALL_NOMINAL.replace(slm=dict(quantise=False))
    p = perturbed(TwinParams.from_config(nominal, 2))
    twin = DigitalTwin(SMALL_OPTICS, 8, nominal, p, precision="double")
    img = rng.uniform(-1, 1, (2, 8, 8))
    ph = rng.uniform(0.2, 6.0, (2, 32, 32))   # away from the 2 pi wrap
    frames, ctx = twin.forward_train(img, ph)
    w = rng.standard_normal(frames.shape)
    _, gph = twin.backward(ctx, w, params=False, phase_grad=True)
    assert gph.shape == (2, 32, 32)
    d = rng.standard_normal(ph.shape)
    h = 1e-6
    fd = (np.sum(w * twin.frames(img, ph + h * d)) - np.sum(w * twin.frames(img, ph - h * d))) / (2 * h)
    assert abs(fd - np.sum(gph * d)) <= 1e-6 * abs(fd)


def test_params_round_trip(tmp_path):
    p = perturbed(TwinParams.from_config(SMALL_NOMINAL, 2))
    path = p.save(tmp_path / "twin.json", {"note": 1})
    assert TwinParams.load(path) == p
    cfg = p.to_config(SMALL_NOMINAL, PITCH)
    assert TwinParams.from_config(cfg, 2) == p
    names = ("z_gap", "patch_offsets", "gain")
    v = p.vector(names)
    assert v.size == p.size(names) == 6
    assert p.with_vector(names, v) == p
    assert p.scales(names)[0] == pytest.approx(0.02 * p.z_gap)


def test_bad_twin_parameters_are_refused():
    p = TwinParams.from_config(SMALL_NOMINAL, 2)
    with pytest.raises(ValueError, match="z_gap"):
        DigitalTwin(SMALL_OPTICS, 8, SMALL_NOMINAL, p.replace(z_gap=-1e-3))
    with pytest.raises(ValueError, match="grid"):
        DigitalTwin(SMALL_OPTICS, 8, SMALL_NOMINAL, grid=33)
    with pytest.raises(ValueError, match="amplitude"):
        DigitalTwin(OpticsConfig(n=32, layers=2, encoding="phase"), 8, SMALL_NOMINAL)
