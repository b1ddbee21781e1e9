"""Trainer, optimiser, checkpoints, resume, sampling determinism and every bad input."""

import csv
from pathlib import Path

import numpy as np
import pytest
from helpers import squares

from optdiff.config import Config, ConfigError, apply_overrides, config_to_toml, load_config
from optdiff.diffusion.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from optdiff.diffusion.model import MODEL_VERSION, TimeAwareODU, generate
from optdiff.diffusion.optim import Adam, lr_at
from optdiff.diffusion.trainer import Trainer, TrainingError, load_images, load_model, save_model

REPO = Path(__file__).resolve().parents[1]


def tiny_cfg(**over):
    d = {
        "optics": {"n": 24, "upsample": 2, "distance": 3e-3},
        "model": {"image_size": 8, "sets": 3},
        "diffusion": {"T": 60, "beta_end": 0.2},
        "data": {"dataset": "digits", "val_count": 32},
        "train": {"steps": 8, "batch": 8, "val_every": 6, "ckpt_every": 6, "progress": False, "threads": 1},
        "sample": {"count": 6, "batch": 4, "sampler": "ddpm"},
    }
    for k, v in over.items():
        sec, key = k.split("__")
        d.setdefault(sec, {})[key] = v
    return Config.from_dict(d)


# ------------------------------------------------------------------------------ optimiser
def test_adam_matches_reference_and_counts_steps_per_set():
    p = {"w": np.zeros((2, 3))}
    opt = Adam(p, 2, 0.9, 0.999, 1e-8)
    target = np.array([1.0, -2.0, 0.5])
    m = v = np.zeros(3)
    w = np.zeros(3)
    for t in range(1, 6):
        g = 2 * (p["w"][1] - target)
        opt.step(1, {"w": g}, {"w": 0.1})
        gr = 2 * (w - target)
        m = 0.9 * m + 0.1 * gr
        v = 0.999 * v + 0.001 * gr * gr
        w = w - 0.1 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    np.testing.assert_allclose(p["w"][1], w, rtol=1e-12)
    assert np.all(p["w"][0] == 0) and list(opt.t) == [0, 5]


def test_lr_schedule():
    assert lr_at(0, 100, 1.0, "cosine", warmup=10) == pytest.approx(0.1)
    assert lr_at(10, 100, 1.0, "cosine", warmup=10) == pytest.approx(1.0)
    assert lr_at(99, 100, 1.0, "cosine", warmup=10, min_factor=0.05) == pytest.approx(0.05)
    assert lr_at(50, 100, 0.3, "constant") == 0.3


# ------------------------------------------------------------------------------ training
def test_training_lowers_the_loss_well_below_its_start(tmp_path):
    # no least-squares calibration: start from scale 1 / offset 0 and learn everything
    cfg = tiny_cfg(train__calibrate=False, train__steps=100, train__lr=0.05, train__readout_lr=0.3,
                   diffusion__beta_end=0.5,
                   train__warmup=0, train__lr_schedule="constant", model__sets=1, train__batch=16,
                   train__val_every=0, train__ckpt_every=0)
    tr = Trainer(cfg, tmp_path, images=squares())
    tr.fit()
    loss = np.array([h["loss"] for h in tr.history])
    assert loss[-10:].mean() < 0.5 * loss[:5].mean()


def test_training_lowers_validation_mse_of_every_set_below_zero_predictor(tmp_path):
    cfg = tiny_cfg(train__steps=20)
    tr = Trainer(cfg, tmp_path, images=squares())
    s = tr.fit()
    assert all(v < z for v, z in zip(s["val_mse"], s["zero_mse"]))
    assert (tmp_path / "summary.json").exists() and (tmp_path / "checkpoint.npz").exists()
    with open(tmp_path / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 60 and {int(r["set"]) for r in rows} == {0, 1, 2}
    assert all(float(r["images_per_s"]) > 0 for r in rows)


def test_sequential_order_trains_sets_one_after_another(tmp_path):
    tr = Trainer(tiny_cfg(train__order="sequential", train__steps=3), tmp_path, images=squares(), log=False)
    tr.fit()
    assert [h["set"] for h in tr.history] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert list(tr.opt.t) == [3, 3, 3]


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    tr = Trainer(tiny_cfg(), tmp_path, images=squares(), log=False)
    tr.fit()
    model, arrays, meta = load_model(tmp_path / "checkpoint.npz")
    for k, v in tr.model.params.items():
        assert v.dtype == model.params[k].dtype
        assert np.array_equal(v, model.params[k]) and v.tobytes() == model.params[k].tobytes()
    for k, v in tr.opt.state_arrays().items():
        assert np.array_equal(v, arrays[k])
    x = np.random.default_rng(0).standard_normal((3, 8, 8))
    assert np.array_equal(tr.model.predict_eps(x, 5), model.predict_eps(x, 5))
    assert meta["step"] == tr.step
    # save again from the loaded model: identical arrays
    save_model(tmp_path / "again.npz", model)
    _, a2, _ = load_checkpoint(tmp_path / "again.npz")
    for k in model.params:
        assert a2[k].tobytes() == arrays[k].tobytes()


def test_resume_continues_the_same_loss_curve(tmp_path):
    cfg = tiny_cfg(train__steps=8, train__ckpt_every=12)
    full = Trainer(cfg, tmp_path / "full", images=squares())
    full.fit()
    part = Trainer(cfg, tmp_path / "part", images=squares())
    part.fit(max_steps=12)                       # "interrupted" after the step-12 checkpoint
    assert part.step == 12
    resumed = Trainer(cfg, tmp_path / "part", images=squares())
    resumed.fit(resume=True)
    a = [h["loss"] for h in full.history]
    b = [h["loss"] for h in part.history] + [h["loss"] for h in resumed.history]
    assert len(a) == len(b) == 24
    assert a == b  # bit-identical
    with open(tmp_path / "part" / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(24))
    for k in full.model.params:
        assert np.array_equal(full.model.params[k], resumed.model.params[k])


def test_nan_loss_stops_with_clear_error_and_keeps_last_checkpoint(tmp_path):
    cfg = tiny_cfg(train__steps=10, train__ckpt_every=6)
    tr = Trainer(cfg, tmp_path, images=squares())
    real = tr.model.loss_and_grads

    def poisoned(m, r, t, eps, weight=1.0):
        loss, g = real(m, r, t, eps, weight)
        if tr.step >= 8:
            loss = float("nan")
        return loss, g

    tr.model.loss_and_grads = poisoned
    with pytest.raises(TrainingError, match=r"non-finite loss .* step 8 .*last good checkpoint"):
        tr.fit()
    _, _, meta = load_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["step"] == 6
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


# ------------------------------------------------------------------------------ checkpoints: bad input
def _trained(tmp_path):
    tr = Trainer(tiny_cfg(train__steps=2), tmp_path, images=squares(), log=False)
    tr.fit()
    return tmp_path / "checkpoint.npz"


def test_corrupt_and_truncated_checkpoints(tmp_path):
    ck = _trained(tmp_path)
    data = ck.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.npz").write_bytes(b"not a checkpoint at all")
    for name in ("trunc.npz", "junk.npz"):
        with pytest.raises(CheckpointError, match="corrupt|truncated|not an optdiff"):
            load_model(tmp_path / name)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.npz")


@pytest.mark.parametrize("key,value", [("optics__n", 28), ("optics__layers", 3), ("model__sets", 2)])
def test_mismatched_checkpoint_is_refused(tmp_path, key, value):
    ck = _trained(tmp_path)
    other = tiny_cfg(**{key: value})
    with pytest.raises(CheckpointError, match=key.split("__")[1].replace("sets", "sets")):
        load_model(ck, cfg=other)
    tr = Trainer(other, tmp_path / "o", images=squares(), log=False)
    with pytest.raises(CheckpointError, match="does not match"):
        tr.fit(resume=ck)


def test_other_model_version_is_refused(tmp_path):
    ck = _trained(tmp_path)
    cfg, arrays, meta = load_checkpoint(ck)
    cfg["model_version"] = MODEL_VERSION + 1
    save_checkpoint(tmp_path / "v2.npz", cfg, arrays, meta)
    with pytest.raises(CheckpointError, match="model_version"):
        load_model(tmp_path / "v2.npz")
    # arrays that do not fit the header's shapes
    cfg["model_version"] = MODEL_VERSION
    arrays["phases"] = arrays["phases"][:, :2]
    save_checkpoint(tmp_path / "bad.npz", cfg, arrays, meta)
    with pytest.raises(CheckpointError, match="phases"):
        load_model(tmp_path / "bad.npz")


# ------------------------------------------------------------------------------ config: bad input
@pytest.mark.parametrize("over,match", [
    ({"optics": {"n": -3}}, r"\[optics\] n"),
    ({"optics": {"layers": "4"}}, r"\[optics\] layers"),
    ({"optics": {"wavelength": float("nan")}}, r"wavelength"),
    ({"optics": {"pitch": 1e-7}}, r"half the wavelength"),
    ({"optics": {"encoding": "hologram"}}, r"encoding"),
    ({"optics": {"n": 16}}, r"does not fit"),
    ({"optics": {"colour": 1}}, r"unknown key"),
    ({"lenses": {}}, r"unknown configuration section"),
    ({"model": {"sets": 0}}, r"\[model\] sets"),
    ({"model": {"sets": 2000}}, r"more sets than steps"),
    ({"model": {"readout": "mlp"}}, r"readout"),
    ({"model": {"x0_sets": [12]}}, r"x0_sets"),
    ({"optics": {"camera_flip": "sometimes"}}, r"camera_flip"),
    ({"diffusion": {"beta_start": 0.5, "beta_end": 0.1}}, r"beta_start <= beta_end"),
    ({"train": {"lr": 0.0}}, r"\[train\] lr"),
    ({"train": {"batch": 1.5}}, r"\[train\] batch"),
    ({"train": {"set_weights": [1.0, 2.0]}}, r"one weight per set"),
    ({"data": {"dataset": "imagenet"}}, r"dataset"),
    ({"sample": {"sampler": "ddim", "steps": 5000}}, r"\[sample\] steps"),
])
def test_bad_config_values_raise_clear_errors(over, match):
    with pytest.raises(ConfigError, match=match):
        Config.from_dict(over)


def test_toml_round_trip_and_overrides(tmp_path):
    cfg = tiny_cfg()
    p = tmp_path / "c.toml"
    p.write_text(config_to_toml(cfg))
    assert load_config(p).to_dict() == cfg.to_dict()
    c2 = load_config(p, ["optics.n=32", "data.classes=[0, 1]", 'optics.encoding="phase"'])
    assert c2.optics.n == 32 and c2.data.classes == [0, 1] and c2.optics.encoding == "phase"
    p.write_text("[optics\nn = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, ["n=3"])


def test_x0_sets_auto():
    assert Config().model.x0_set_list(1000) == [1, 2]
    assert tiny_cfg().model.x0_set_list(60) == []
    assert Config.from_dict({"model": {"x0_sets": [0, 3]}}).model.x0_set_list(1000) == [0, 3]


def test_examples_default_toml_is_the_default_config():
    assert load_config(REPO / "examples" / "default.toml").to_dict() == Config().to_dict()
    load_config(REPO / "examples" / "tiny.toml")


# ------------------------------------------------------------------------------ data: bad input
def test_wrong_resolution_and_bad_values_are_refused(tmp_path):
    cfg = tiny_cfg()
    with pytest.raises(ValueError, match="images are 10x10 but the model expects 8x8"):
        Trainer(cfg, tmp_path, images=squares(size=10))
    np.save(tmp_path / "d28.npy", np.zeros((10, 28, 28)))
    c = tiny_cfg(data__dataset="npy", data__data_dir=str(tmp_path / "d28.npy"))
    with pytest.raises(ValueError, match="28x28 but the model expects 8x8"):
        load_images(c)
    np.save(tmp_path / "big.npy", np.full((10, 8, 8), 3.0))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        load_images(tiny_cfg(data__dataset="npy", data__data_dir=str(tmp_path / "big.npy")))
    bad = squares()
    bad[3, 2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Trainer(cfg, tmp_path, images=bad)
    assert not (tmp_path / "checkpoint.npz").exists()


# ------------------------------------------------------------------------------ sampling
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sampler_shape_and_seed_determinism(sampler):
    cfg = tiny_cfg(sample__sampler=sampler, sample__steps=10)
    model = TimeAwareODU(cfg, nthreads=1)
    a = generate(model.predict_eps, model.schedule, cfg.sample, 6, 8)
    b = generate(model.predict_eps, model.schedule, cfg.sample, 6, 8)
    assert a.shape == (6, 8, 8) and np.all(np.isfinite(a))
    assert np.array_equal(a, b)
    cfg.sample.seed = 1
    c = generate(model.predict_eps, model.schedule, cfg.sample, 6, 8)
    assert not np.allclose(a, c)
    x, traj = generate(model.predict_eps, model.schedule, cfg.sample, 4, 8, trajectory=True)
    assert traj["x"].shape[1:] == (4, 8, 8) and np.array_equal(traj["final"], x)
    assert np.all(np.diff(traj["t"]) < 0)


def test_sampling_stays_bounded_with_wild_readout():
    cfg = tiny_cfg()
    model = TimeAwareODU(cfg, nthreads=1)
    model.params["scale"][...] = 1e4  # a read-out that grows with its input
    x = generate(model.predict_eps, model.schedule, cfg.sample, 4, 8)
    assert np.all(np.isfinite(x)) and np.abs(x).max() <= 1.0 + 1e-9
