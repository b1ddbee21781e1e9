"""Numbers a user passes are taken exactly or refused: no float or bool silently truncated to an
integer, no count beyond a sane bound, and every refusal names the argument (issue #13, item 9)."""

import numpy as np
import pytest

from optdiff.config import Config, ConfigError, apply_overrides, load_config
from optdiff.data import load_dataset, read_idx, read_quickdraw, resize_images
from optdiff.diffusion.model import TimeAwareODU, generate
from optdiff.diffusion.samplers import ddim_sample, ddim_timesteps, ddpm_sample
from optdiff.diffusion.schedule import NoiseSchedule, set_index, timestep_sets


def tiny_model():
    cfg = Config.from_dict({"optics": {"n": 16, "upsample": 2, "distance": 3e-3, "layers": 2},
                            "model": {"image_size": 6, "sets": 2}, "diffusion": {"T": 20},
                            "train": {"threads": 1, "progress": False}})
    return TimeAwareODU(cfg, nthreads=1)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.mark.parametrize("t", [1.5, 1.0, True, np.float64(3.0), "3", None])
def test_predict_eps_refuses_non_integer_t(model, t):
    x = np.zeros((2, 6, 6))
    with pytest.raises(ValueError, match=r"\bt\b"):
        model.predict_eps(x, t)


@pytest.mark.parametrize("t", [-1, 20, 2**64])
def test_predict_eps_refuses_t_out_of_range(model, t):
    with pytest.raises(ValueError, match=r"\bt must be a timestep in 0\.\.19"):
        model.predict_eps(np.zeros((2, 6, 6)), t)


def test_predict_eps_checks_x_t_and_batch(model):
    assert model.predict_eps(np.zeros((2, 6, 6)), np.int64(19)).shape == (2, 6, 6)
    with pytest.raises(ValueError, match="x_t contains NaN"):
        model.predict_eps(np.full((2, 6, 6), np.nan), 3)
    with pytest.raises(TypeError, match="x_t"):
        model.predict_eps(np.zeros((2, 6, 6), complex), 3)
    with pytest.raises(ValueError, match="x_t"):
        model.predict_eps([[1, 2], [3]], 3)
    for batch in (0, 1.5, True):
        with pytest.raises(ValueError, match="batch"):
            model.predict_eps(np.zeros((2, 6, 6)), 3, batch=batch)


def test_loss_and_grads_checks_its_arguments(model):
    r, eps = np.zeros((3, 6, 6)), np.ones((3, 6, 6))
    t = np.array([0, 1, 2])
    loss, grads = model.loss_and_grads(0, r, t, eps)
    assert np.isfinite(loss) and set(grads) >= {"phases", "scale", "offset"}
    for m in (2, -1, 0.0, True):
        with pytest.raises(ValueError, match=r"\bm\b"):
            model.loss_and_grads(m, r, t, eps)
    with pytest.raises(ValueError, match=r"\bt\b"):
        model.loss_and_grads(0, r, t + 10, eps)           # timesteps of set 1
    with pytest.raises(ValueError, match=r"\bt\b"):
        model.loss_and_grads(0, r, t.astype(float), eps)
    with pytest.raises(ValueError, match="eps"):
        model.loss_and_grads(0, r, t, eps[:2])
    with pytest.raises(ValueError, match="weight"):
        model.loss_and_grads(0, r, t, eps, weight=float("nan"))


@pytest.mark.parametrize("T", [True, 2.5, 1000.0, "1000", None, 0, -3, 10**12])
def test_noise_schedule_refuses_bad_T(T):
    with pytest.raises(ValueError, match=r"\bT\b"):
        NoiseSchedule(T=T)


def test_noise_schedule_numbers():
    with pytest.raises(ValueError, match="beta_start"):
        NoiseSchedule(10, beta_start="0.1")
    with pytest.raises(ValueError, match="max_beta"):
        NoiseSchedule(10, "cosine", max_beta=float("nan"))
    with pytest.raises(ValueError, match="kind"):
        NoiseSchedule(10, kind=3)
    s = NoiseSchedule(10)
    for t in (1.0, True, np.array([1.5, 2.0]), np.array([True, False])):
        with pytest.raises(ValueError, match=r"\bt\b"):
            s.q_sample(np.zeros((1, 2, 2)), t, np.zeros((1, 2, 2)))
    np.testing.assert_array_equal(s.q_sample(np.zeros((2, 1)), np.array([1, 2], np.uint8), np.ones((2, 1))),
                                  s.sqrt_one_minus_alpha_bar[[1, 2]][:, None])


def test_timestep_sets_and_set_index_refuse_truncation():
    with pytest.raises(ValueError, match=r"\bT\b"):
        timestep_sets(10.7, 2)
    with pytest.raises(ValueError, match=r"\bM\b"):
        timestep_sets(10, 2.5)
    with pytest.raises(ValueError, match=r"\bt\b"):
        set_index(3.0, 10, 2)
    with pytest.raises(ValueError, match=r"\bt\b"):
        set_index(True, 10, 2)
    assert set_index(np.int32(7), 10, 2) == 1


def test_samplers_refuse_truncation():
    s = NoiseSchedule(5)
    eps0 = lambda x, t: np.zeros_like(x)  # noqa: E731
    for shape in ((2, 3.5, 3), (True, 3, 3), (2, 0, 3), "abc", 7):
        with pytest.raises(ValueError, match="shape"):
            ddpm_sample(eps0, s, shape, 0)
    with pytest.raises(ValueError, match="steps"):
        ddim_timesteps(5, 2.9)
    with pytest.raises(ValueError, match="eta"):
        ddim_sample(eps0, s, (1, 2, 2), 0, steps=2, eta=float("nan"))
    with pytest.raises(ValueError, match="rng"):
        ddpm_sample(eps0, s, (1, 2, 2), 1.5)
    with pytest.raises(ValueError, match="trajectory_steps"):
        ddpm_sample(eps0, s, (1, 2, 2), 0, return_trajectory=True, trajectory_steps=[4.0])
    with pytest.raises(TypeError, match="schedule"):
        ddpm_sample(eps0, "linear", (1, 2, 2), 0)
    with pytest.raises(TypeError, match="predict_eps"):
        ddim_sample(None, s, (1, 2, 2), 0)


def test_generate_refuses_truncation(model):
    for count in (2.5, True):
        with pytest.raises(ValueError, match="count"):
            generate(model.predict_eps, model.schedule, model.cfg.sample, count, 6)


# ---------------------------------------------------------------------------------- config
@pytest.mark.parametrize("item,key", [
    ("train.steps=99999999999999999999", "steps"), ("train.steps=2147483648", "steps"),
    ("data.val_count=99999999999999999999", "val_count"), ("train.val_batch=99999999999999999999", "val_batch"), ("data.limit=4294967296", "limit"),
    ("sample.count=99999999999999999999", "count"), ("train.seed=9223372036854775808", "seed"),
    ("train.warmup=10000000000", "warmup"), ("sample.steps=99999999999999999999", "steps"),
    ("optics.wavelength=1" + "0" * 400, "wavelength"), ("train.lr=1" + "0" * 400, "lr"),
])
def test_config_bounds_every_integer(item, key):
    with pytest.raises(ConfigError, match=rf"\b{key}\b"):
        Config.from_dict(apply_overrides({}, [item]))


def test_config_accepts_large_but_sane_values():
    cfg = Config.from_dict(apply_overrides({}, ["train.seed=9223372036854775807", "train.steps=2147483647"]))
    assert cfg.train.seed == 2**63 - 1 and cfg.train.steps == 2**31 - 1


def test_config_file_and_override_types(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"[optics]\nn = \xff\xfe\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="overrides"):
        apply_overrides({}, "train.steps=3")
    with pytest.raises(ConfigError, match="override"):
        apply_overrides({}, [3])
    with pytest.raises(ConfigError, match="table"):
        apply_overrides([1, 2], [])


# ------------------------------------------------------------------------------ data loaders
def test_load_dataset_refuses_truncation():
    for kw, name in ((dict(limit=2.7), "limit"), (dict(limit=True), "limit"), (dict(size=12.5), "size"),
                     (dict(size=True), "size"), (dict(seed=1.0), "seed"), (dict(classes=[1.0]), "classes"),
                     (dict(classes=[True]), "classes"), (dict(classes="01"), "classes"), (dict(limit=-1), "limit")):
        with pytest.raises(ValueError, match=name):
            load_dataset("digits", **kw)
    x, y = load_dataset("digits", size=np.int64(8), limit=np.uint8(5), classes=[np.int32(1)])
    assert x.shape == (5, 8, 8) and set(y) == {1}


def test_resize_and_quickdraw_refuse_truncation(tmp_path):
    img = np.zeros((1, 4, 4))
    for size in (2.5, True, (3, 1.5), 0, "4"):
        with pytest.raises(ValueError, match="size"):
            resize_images(img, size)
    path = tmp_path / "cat.npy"
    np.save(path, np.arange(5 * 784, dtype=np.uint8).reshape(5, 784) % 251)
    assert read_quickdraw(path, [4, 0]).shape == (2, 28, 28)
    for idx, word in (([1.7], "integer"), ([True], "integer"), ([5], "0..4"), ([-1], "0..4")):
        with pytest.raises(ValueError, match=f"indices.*{word}"):
            read_quickdraw(path, idx)


def test_read_idx_with_absurd_header_sizes(tmp_path):
    # four dimensions of 2**32 - 1: their int64 product wraps around; the file must still be refused
    p = tmp_path / "huge.idx"
    p.write_bytes(bytes([0, 0, 0x08, 4]) + b"\xff\xff\xff\xff" * 4 + b"\x00" * 16)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(p)


# ------------------------------------------------------------- found by the fuzz harness (tests/fuzz)
def test_degenerate_or_non_finite_schedules_are_refused():
    with pytest.raises(ValueError, match="cosine_s"):
        NoiseSchedule(100, "cosine", cosine_s=1e30)          # gave NaN posterior variances
    with pytest.raises(ValueError, match="alpha_bar = 1"):
        NoiseSchedule(10, beta_start=1e-300, beta_end=1e-300)  # no noise: 0/0 in the posterior
    with pytest.raises(ValueError, match="beta_end"):
        NoiseSchedule(10, "cosine", beta_end=float("nan"))     # stored even though cosine ignores it


def test_optics_validation_checks_image_size_and_init():
    from optdiff.config import OpticsConfig

    for size in (float("inf"), (1,), 0, 2.0):
        with pytest.raises(ConfigError, match="image_size"):
            OpticsConfig(n=16, upsample=2).validate(size)
    for init in ("relay", "4f"):
        with pytest.raises(ConfigError, match="init"):
            OpticsConfig(n=16, upsample=2, layers=2, init=init).validate(6)   # was an IndexError


def test_loss_weight_and_ddim_eta_are_bounded(model):
    r = np.zeros((2, 6, 6))
    for w in (1e300, -1.0):
        with pytest.raises(ValueError, match="weight"):
            model.loss_and_grads(0, r, np.array([0, 1]), r, weight=w)
    s = NoiseSchedule(5)
    for eta in (1.7e308, 10.5):
        with pytest.raises(ValueError, match="eta"):
            ddim_sample(lambda x, t: np.zeros_like(x), s, (1, 2, 2), 0, steps=3, eta=eta)


def test_loaders_name_path_name_and_classes(tmp_path):
    from optdiff.data import read_image_folder

    for fn in (read_idx, read_quickdraw, read_image_folder):
        with pytest.raises(TypeError, match="path"):
            fn(None)
    with pytest.raises(ValueError, match="data set name"):
        load_dataset(3)
    with pytest.raises(ValueError, match="classes"):
        load_dataset("digits", classes=[99])


def test_checkpoint_arguments_are_named(tmp_path):
    from optdiff.diffusion.checkpoint import load_checkpoint, save_checkpoint

    with pytest.raises(TypeError, match="path"):
        save_checkpoint(None, {}, {})
    with pytest.raises(TypeError, match="arrays"):
        save_checkpoint(tmp_path / "c.npz", {}, None)           # was an AttributeError
    with pytest.raises(ValueError, match="arrays"):
        save_checkpoint(tmp_path / "c.npz", {}, {"a/b": np.zeros(1)})
    with pytest.raises(FileNotFoundError, match="nodir/c.npz"):
        save_checkpoint(tmp_path / "nodir" / "c.npz", {}, {})
    p = save_checkpoint(tmp_path / "c.npz", {"n": 1}, {"x": np.zeros(2)})
    with pytest.raises(TypeError, match="expect"):
        load_checkpoint(p, expect="abc")                        # was dict('abc'): a ValueError about sequences
    with pytest.raises(TypeError, match="path"):
        load_checkpoint(3)


@pytest.mark.parametrize("argv,flag", [
    (["denoise", "c.npz", "--samples", "0"], "--samples"), (["denoise", "c.npz", "--samples", "-3"], "--samples"),
    (["show", "c.npz", "--rows", "0"], "--rows"), (["sample", "c.npz", "--threads", "0"], "--threads"),
    (["train", "--seed", "-1"], "--seed"), (["denoise", "c.npz", "--seed", "1.5"], "--seed"),
    (["train", "--max-steps", "-1"], "--max-steps"),
])
def test_cli_counts_are_checked_before_anything_runs(argv, flag, capsys):
    from optdiff.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert f"argument {flag}: must be an integer" in capsys.readouterr().err


def test_config_to_toml_writes_numpy_numbers_as_toml(tmp_path):
    from optdiff.config import config_to_toml

    cfg = Config()
    cfg.sample.eta = np.float64(0.5)
    cfg.train.seed = np.int64(7)
    p = tmp_path / "c.toml"
    p.write_text(config_to_toml(cfg))
    back = load_config(p)
    assert back.sample.eta == 0.5 and back.train.seed == 7


def test_load_config_names_the_file_for_a_bad_section(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("optics = 3\n")
    with pytest.raises(ConfigError, match=r"c\.toml: \[optics\] must be a table"):
        load_config(p, ["optics.n=16"])


def test_classes_with_unlabelled_npy_data_are_refused():
    # the npy data set has no labels: a class filter was ignored without a word (optdiff denoise --classes 99)
    with pytest.raises(ConfigError, match="classes"):
        Config.from_dict({"data": {"dataset": "npy", "data_dir": "x.npy", "classes": [99]}})
