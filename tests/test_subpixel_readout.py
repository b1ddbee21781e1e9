"""The ``subpixel`` read-out: a signed gain per unbinned camera pixel, then binning."""

import numpy as np
import pytest

from optdiff.config import Config
from optdiff.diffusion.checkpoint import CheckpointError
from optdiff.diffusion.model import TimeAwareODU
from optdiff.diffusion.trainer import load_model, save_model


def small(readout="subpixel", flip=False, skip="pixel"):
    cfg = Config()
    cfg.optics.n, cfg.optics.upsample, cfg.optics.layers = 24, 2, 2
    cfg.optics.camera_flip = flip
    cfg.model.image_size, cfg.model.sets, cfg.model.readout, cfg.model.skip = 8, 3, readout, skip
    cfg.diffusion.T = 30
    return cfg


def batch(model, m, n, seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(*model.set_ranges[m], size=n)
    eps = rng.standard_normal((n, 8, 8))
    return model.schedule.q_sample(rng.uniform(-1, 1, (n, 8, 8)), t, eps), t, eps


@pytest.mark.parametrize("flip", [False, True])
def test_prediction_matches_a_loop_over_camera_pixels(flip):
    model = TimeAwareODU(small(flip=flip), precision="double", seed=1)
    rng = np.random.default_rng(2)
    for k in ("scale", "offset", "skip"):
        model.params[k][...] = rng.standard_normal(model.params[k].shape)
    r, t, _ = batch(model, 2, 3, 3)
    o, m, k = model.odu, 2, 2
    cam = o.camera(r, model.params["phases"][m])
    want = np.empty((3, 8, 8))
    for b in range(3):
        for i in range(8):
            for j in range(8):
                ci, cj = (7 - i, 7 - j) if flip else (i, j)   # camera_flip: the image is upside down
                rows = slice(o.off + ci * k, o.off + (ci + 1) * k)
                cols = slice(o.off + cj * k, o.off + (cj + 1) * k)
                w = model.params["scale"][m][ci * k:(ci + 1) * k, cj * k:(cj + 1) * k]
                want[b, i, j] = np.mean(w * cam[b, rows, cols])
    want += model.params["offset"][m] + model.params["skip"][m] * r
    np.testing.assert_allclose(model.predict(r, t, m), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("flip", [False, True])
def test_equal_gains_in_each_block_are_the_pixel_readout(flip):
    pix = TimeAwareODU(small("pixel", flip), precision="double", seed=4)
    sub = TimeAwareODU(small("subpixel", flip), precision="double", seed=4)
    rng = np.random.default_rng(5)
    for k in ("scale", "offset", "skip"):
        pix.params[k][...] = rng.standard_normal(pix.params[k].shape)
    sub.params["offset"][...], sub.params["skip"][...] = pix.params["offset"], pix.params["skip"]
    for m in range(3):   # each camera pixel gets its image pixel's scale
        blocks = np.repeat(pix.params["scale"][m][..., None], 4, axis=-1)
        sub.params["scale"][m] = sub.odu.window_from_blocks(blocks)
    r, t, eps = batch(pix, 1, 4, 6)
    np.testing.assert_allclose(sub.predict(r, t, 1), pix.predict(r, t, 1), rtol=1e-10, atol=1e-12)
    lp, gp = pix.loss_and_grads(1, r, t, eps)
    ls, gs = sub.loss_and_grads(1, r, t, eps)
    assert ls == pytest.approx(lp, rel=1e-10)
    np.testing.assert_allclose(gs["phases"], gp["phases"], rtol=1e-8, atol=1e-12)
    # a pixel scale is shared by its block's gains: its gradient is the sum of theirs
    np.testing.assert_allclose(sub.odu.camera_blocks(gs["scale"][None])[0].sum(-1), gp["scale"],
                               rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("flip", [False, True])
def test_camera_blocks_are_what_bins_into_each_pixel(flip):
    odu = TimeAwareODU(small(flip=flip)).odu
    w = np.random.default_rng(7).random((2, 16, 16))
    blocks = odu.camera_blocks(w)
    np.testing.assert_allclose(blocks.mean(-1), odu.bin_window(w), rtol=1e-12)
    np.testing.assert_array_equal(odu.window_from_blocks(blocks[0]), w[0])
    g = np.random.default_rng(8).random((2, 8, 8))   # unbin_window is bin_window's adjoint
    assert np.sum(odu.bin_window(w) * g) == pytest.approx(np.sum(w * odu.unbin_window(g)), rel=1e-12)


@pytest.mark.parametrize("m", [0, 1])   # an eps set and an x0 set
def test_calibration_fits_at_least_as_well_as_the_pixel_readout(m):
    cfg_p, cfg_s = small("pixel"), small("subpixel")
    cfg_p.model.x0_sets = cfg_s.model.x0_sets = [1]
    pix, sub = TimeAwareODU(cfg_p, seed=9), TimeAwareODU(cfg_s, seed=9)
    r, t, eps = batch(pix, m, 400, 10)
    pix.calibrate(m, r, t, eps)
    sub.calibrate(m, r, t, eps)
    # the sub-pixel features contain the block mean: least squares on the same batch cannot do worse
    assert sub.set_mse(m, r, t, eps) <= pix.set_mse(m, r, t, eps) * (1 + 1e-6)
    assert sub.set_mse(m, r, t, eps) < pix.set_mse(m, r, t, eps) * 0.999   # and uses the extra gains


def test_checkpoint_round_trip_and_readout_mismatch(tmp_path):
    sub = TimeAwareODU(small(), seed=11)
    sub.params["scale"][...] = np.random.default_rng(12).standard_normal(sub.params["scale"].shape)
    path = save_model(tmp_path / "sub.npz", sub)
    back, _, _ = load_model(path)
    assert back.subpixel and back.params["scale"].shape == (3, 16, 16)
    np.testing.assert_array_equal(back.params["scale"], sub.params["scale"])
    with pytest.raises(CheckpointError, match="readout"):
        load_model(path, small("pixel"))


def test_an_unknown_readout_is_refused_by_name():
    cfg = small("subbpixel")
    with pytest.raises(ValueError, match="readout"):
        cfg.validate()
