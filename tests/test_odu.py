"""ODU: encoding, binning and read-out against NumPy references, exact gradients, physics sanity."""

import warnings

import numpy as np
import pytest

import optdiff
from optdiff.config import Config, ConfigError, OpticsConfig
from optdiff.diffusion.model import TimeAwareODU
from optdiff.odu import ODU, LightLossWarning, image_inverted, init_phases, lens_phase, resolve_init


def small_optics(**kw):
    base = dict(n=24, layers=2, upsample=2, distance=5e-3)
    base.update(kw)
    return OpticsConfig(**base)


def small_cfg(precision_layers=2, **model_kw):
    cfg = Config()
    cfg.optics = small_optics(layers=precision_layers)
    cfg.model.image_size = 8
    cfg.model.sets = 3
    for k, v in model_kw.items():
        setattr(cfg.model, k, v)
    cfg.diffusion.T = 30
    return cfg


def ref_bin(I, H, k, off, flip):
    B = I.shape[0]
    out = np.zeros((B, H, H))
    for b in range(B):
        for i in range(H):
            for j in range(H):
                out[b, i, j] = I[b, off + i * k: off + (i + 1) * k, off + j * k: off + (j + 1) * k].mean()
    return out[:, ::-1, ::-1] if flip else out


@pytest.mark.parametrize("flip", [False, True])
def test_bin_matches_numpy_reference_and_unbin_is_adjoint(flip):
    odu = ODU(small_optics(n=23, upsample=2, camera_flip=flip), 8)
    rng = np.random.default_rng(0)
    I = rng.random((3, 23, 23)).astype(np.float32)
    assert odu.off == (23 - 16) // 2
    np.testing.assert_allclose(odu.bin(I), ref_bin(I, 8, 2, odu.off, flip), rtol=1e-6)
    g = rng.standard_normal((3, 8, 8))
    lhs = np.sum(odu.bin(I) * g)
    rhs = np.sum(I.astype(np.float64) * odu.unbin(g))
    assert lhs == pytest.approx(rhs, rel=1e-5)


def test_intensity_reuses_buffers_without_aliasing_results():
    # intensity() keeps one input field and camera buffer per thread and batch size: results
    # must equal the allocate-everything path, earlier results must not change, a new batch
    # size must not see stale pixels.
    odu = ODU(small_optics(n=23, upsample=2, camera_flip=True), 8)
    ph = init_phases(odu.optics, rng=np.random.default_rng(4), image_size=8)
    rng = np.random.default_rng(5)
    r1, r2, r3 = rng.uniform(-2, 2, (3, 8, 8)), rng.uniform(-2, 2, (3, 8, 8)), rng.uniform(-2, 2, (5, 8, 8))
    fresh = [odu.bin(odu.stack.forward(odu.encode(r), ph)) for r in (r1, r2, r3)]
    got1 = odu.intensity(r1, ph)
    keep = got1.copy()
    got2 = odu.intensity(r2, ph)
    got3 = odu.intensity(r3, ph)
    np.testing.assert_array_equal(got1, keep)
    for got, want in zip((got1, got2, got3), fresh):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert not np.array_equal(got1, got2)


def test_encode_upsamples_centred_blocks():
    odu = ODU(small_optics(n=21, upsample=2, amp_bias=0.5, amp_scale=0.25), 8)
    r = np.random.default_rng(1).uniform(-1, 1, (2, 8, 8))
    f = odu.encode(r)
    assert f.dtype == np.complex64 and f.shape == (2, 21, 21)
    o = odu.off
    want = np.clip(0.5 + 0.25 * r, 0, 1)
    np.testing.assert_allclose(f[:, o:o + 16:2, o:o + 16:2].real, want, rtol=1e-6)
    np.testing.assert_allclose(f[:, o + 1:o + 16:2, o + 1:o + 16:2].real, want, rtol=1e-6)
    mask = np.ones((21, 21), bool)
    mask[o:o + 16, o:o + 16] = False
    assert np.all(f[:, mask] == 0)  # dark border
    # amplitude encoding clips to what an amplitude-only modulator can show
    assert np.all(odu.encode(np.full((1, 8, 8), 9.0))[0, o:o + 16, o:o + 16] == 1.0)
    ph = ODU(small_optics(n=21, upsample=2, encoding="phase", phase_scale=0.7), 8).encode(r)
    np.testing.assert_allclose(np.angle(ph[:, o:o + 16:2, o:o + 16:2]), 0.7 * r, atol=1e-6)
    cx = ODU(small_optics(n=21, upsample=2, encoding="complex", amp_bias=0.0, amp_scale=1.0), 8).encode(r)
    assert cx[:, o:o + 16:2, o:o + 16:2].real.min() < 0  # negative amplitudes need a complex modulator


def test_readout_matches_numpy_reference():
    cfg = small_cfg(readout="pixel", skip="pixel")   # the subpixel reference: test_subpixel_readout.py
    model = TimeAwareODU(cfg)
    rng = np.random.default_rng(2)
    for k in ("scale", "offset", "skip"):
        model.params[k][...] = rng.standard_normal(model.params[k].shape)
    r = rng.standard_normal((4, 8, 8))
    m = 1
    t = model.set_ranges[m][0]
    # reference: build the field by hand, propagate with the optical core, bin with loops
    o = model.odu
    a = np.clip(cfg.optics.amp_bias + cfg.optics.amp_scale * r, 0, 1)
    field = np.zeros((4, o.n, o.n), np.complex64)
    field[:, o.off:o.off + 16, o.off:o.off + 16] = np.kron(a, np.ones((2, 2)))
    I = o.stack.forward(field, model.params["phases"][m])
    b = ref_bin(I, 8, 2, o.off, o.flip)
    want = model.params["scale"][m] * b + model.params["offset"][m] + model.params["skip"][m] * r
    np.testing.assert_allclose(model.predict_eps(r, t), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("readout,skip,x0_sets,m", [("pixel", "none", [], 1), ("scalar", "scalar", [], 2),
                                                     ("pixel", "pixel", [0, 1], 0),
                                                     ("subpixel", "pixel", [], 2),
                                                     ("subpixel", "scalar", [1], 1)])
def test_gradients_match_finite_differences(readout, skip, x0_sets, m):
    cfg = small_cfg(readout=readout, skip=skip, x0_sets=x0_sets)
    cfg.optics.init = "random"
    cfg.optics.encoding = "complex"
    model = TimeAwareODU(cfg, precision="double", seed=3)
    rng = np.random.default_rng(4)
    for k in model.params:
        if k != "phases":
            model.params[k][...] = rng.standard_normal(model.params[k].shape)
    lo, hi = model.set_ranges[m]
    t = rng.integers(lo, hi, size=3)
    eps = rng.standard_normal((3, 8, 8))
    x0 = rng.uniform(-1, 1, (3, 8, 8))
    r = model.schedule.q_sample(x0, t, eps)
    loss, grads = model.loss_and_grads(m, r, t, eps, weight=0.7)
    # the x0 sets' loss is ~500: a plain central difference at h = 1e-6 loses ~1e-7 to rounding,
    # so a fourth-order one at h = 1e-4 (truncation ~h^4, rounding ~eps * loss / h ~ 1e-9)
    h = 1e-4
    for name, g in grads.items():
        p = model.params[name]
        idxs = [tuple(rng.integers(0, s) for s in p.shape[1:]) for _ in range(4)]
        if name == "phases":  # probe pixels inside the lit window too
            c = model.odu.off + 3
            idxs += [(0, c, c + 2), (1, c + 1, c)]
        for idx in idxs:
            full = (m,) + idx
            old = p[full]

            def at(d):
                p[full] = old + d
                return model.loss_and_grads(m, r, t, eps, weight=0.7)[0]

            fd = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h)
            p[full] = old
            assert g[idx] == pytest.approx(fd, rel=1e-5, abs=1e-9), (name, idx)


def test_lens_focuses_a_plane_wave():
    n, pitch, wl, f = 64, 9.2e-6, 850e-9, 20e-3
    prop = optdiff.Propagator(n, wavelength=wl, pitch=pitch, distance=f)
    lens = np.exp(1j * lens_phase(n, pitch, wl, f)).astype(np.complex128)
    x = (np.arange(n) - (n - 1) / 2) * pitch
    ap = (np.abs(x)[:, None] < 0.2e-3) & (np.abs(x)[None, :] < 0.2e-3)
    I = np.abs(prop.forward(np.ascontiguousarray(lens * ap))) ** 2
    c = n // 2
    assert I[c - 2:c + 2, c - 2:c + 2].sum() > 0.5 * I.sum()


def test_imaging_init_images_and_zero_init_does_not():
    H = 16
    rng = np.random.default_rng(5)
    r = rng.standard_normal((16, H, H))
    corr = {}
    for init in ("imaging", "zero"):
        o = OpticsConfig(n=80, upsample=4, init=init)
        odu = ODU(o, H)
        I = odu.intensity(r, init_phases(o))
        A, R = I - I.mean(0), r - r.mean(0)
        corr[init] = np.mean((A * R).sum(0) / np.sqrt((A * A).sum(0) * (R * R).sum(0)))
    assert resolve_init(OpticsConfig()) == "relay" and not image_inverted(OpticsConfig())
    assert image_inverted(OpticsConfig(init="4f"))
    assert corr["imaging"] > 0.8
    assert abs(corr["zero"]) < 0.2


def test_phase_encoding_with_zernike_init_images():
    rng = np.random.default_rng(6)
    r = 0.5 * rng.standard_normal((16, 16, 16))
    o = OpticsConfig(n=80, upsample=4, encoding="phase", init_noise=0.0)
    odu = ODU(o, 16)
    I = odu.intensity(r, init_phases(o, image_size=16))
    A, R = I - I.mean(0), r - r.mean(0)
    assert np.mean((A * R).sum(0) / np.sqrt((A * A).sum(0) * (R * R).sum(0))) > 0.8


def test_light_loss_warning():
    o = OpticsConfig(n=32, upsample=1, init="zero", distance=0.2)
    odu = ODU(o, 16)
    with pytest.warns(LightLossWarning, match="reaches the camera"):
        frac = odu.check_light(init_phases(o))
    assert frac < 0.25
    o2 = OpticsConfig(n=64, upsample=3, init="imaging", init_noise=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ODU(o2, 16).check_light(init_phases(o2)) > 0.8


def test_bad_shapes_raise():
    odu = ODU(small_optics(), 8)
    with pytest.raises(ValueError, match=r"\[B, 8, 8\]"):
        odu.encode(np.zeros((2, 9, 9)))
    with pytest.raises(ValueError, match="phases must be"):
        odu.intensity(np.zeros((1, 8, 8)), np.zeros((3, 24, 24), np.float32))
    with pytest.raises(ConfigError, match="does not fit"):
        ODU(OpticsConfig(n=20, upsample=3), 8)
