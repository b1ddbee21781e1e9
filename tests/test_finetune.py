"""Reward finetuning (optdiff.finetune): the policy's log-probabilities and their adjoint gradients,
the PRDP and DDPO objectives, the online loop (update, reward failures, resume) and bad input."""

from __future__ import annotations

import csv
import sys
import types

import numpy as np
import pytest

from optdiff.config import Config
from optdiff.diffusion.checkpoint import CheckpointError
from optdiff.diffusion.model import TimeAwareODU
from optdiff.diffusion.samplers import ddpm_sample
from optdiff.diffusion.trainer import load_model, save_model
from optdiff.finetune import FinetuneConfig, FinetuneError, Finetuner, ODUPolicy, Trajectories, parse_sets
from optdiff.finetune.ddpo import advantages, ddpo_minibatch
from optdiff.finetune.prdp import prdp_minibatch, rdp_loss
from optdiff.finetune.rewards import RewardError, evaluate_reward, make_reward


def tiny_cfg(n: int = 16, image: int = 6, T: int = 8, sets: int = 2, skip: str = "pixel",
             readout: str = "pixel") -> Config:
    cfg = Config()
    o = cfg.optics
    o.n, o.layers, o.distance, o.upsample = n, 2, 2e-3, 2
    o.amp_bias = 0.5   # the read-out scales below are sized for this light level
    cfg.model.image_size, cfg.model.sets, cfg.model.skip, cfg.model.readout = image, sets, skip, readout
    cfg.diffusion.T, cfg.diffusion.beta_end = T, 0.3
    cfg.train.threads = 1
    cfg.validate()
    return cfg


def tiny_model(precision: str = "single", seed: int = 0, **kw) -> TimeAwareODU:
    model = TimeAwareODU(tiny_cfg(**kw), nthreads=1, precision=precision, seed=seed)
    rng = np.random.default_rng(seed + 1)
    p = model.params
    # a read-out that makes eps_hat depend on the optics at a useful scale
    p["scale"][...] = 4.0 + 0.5 * rng.standard_normal(p["scale"].shape)
    p["offset"][...] = -1.0 + 0.1 * rng.standard_normal(p["offset"].shape)
    if "skip" in p:
        p["skip"][...] = 0.3 + 0.1 * rng.standard_normal(p["skip"].shape)
    return model


# ---------------------------------------------------------------------------- the policy
def test_policy_matches_ddpm_sampler_and_posterior():
    model = tiny_model(precision="double")
    pol = ODUPolicy(model)
    s = model.schedule
    x_pol = pol.generate(3, seed=5, batch=3)
    x_ref = ddpm_sample(model.predict_eps, s, (3, 6, 6), np.random.default_rng([5, 0]), clip_x0=True)
    np.testing.assert_allclose(x_pol, np.clip(x_ref, -1, 1), atol=1e-9)
    # the transition is DDPM's posterior: mean coef1 * clip(x0) + coef2 * x_t, variance beta tilde
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 6))
    i = 2
    t = int(pol.ts[i])
    eps = model.predict(x, t)
    x0 = np.clip(s.predict_x0(x, t, eps), -1, 1)
    mu = s.posterior_mean_coef1[t] * x0 + s.posterior_mean_coef2[t] * x
    var = s.posterior_variance[t]
    xn = mu + np.sqrt(var) * rng.standard_normal(x.shape)
    want = np.array([-0.5 * np.sum((xn[b] - mu[b]) ** 2) / var - 0.5 * 36 * np.log(2 * np.pi * var) for b in range(2)])
    np.testing.assert_allclose(pol.log_prob(x, xn, i), want, rtol=1e-10)


def test_policy_with_fewer_steps_is_ddim_with_eta_one():
    from optdiff.diffusion.samplers import ddim_sample

    model = tiny_model(precision="double")
    pol = ODUPolicy(model, steps=4)
    x_ref = ddim_sample(model.predict_eps, model.schedule, (2, 6, 6), np.random.default_rng([3, 0]), steps=4, eta=1.0)
    np.testing.assert_allclose(pol.generate(2, seed=3), np.clip(x_ref, -1, 1), atol=1e-9)
    assert len(pol.train_steps) == 3                         # the last of the 4 steps is deterministic
    with pytest.raises(ValueError, match="steps"):
        ODUPolicy(model, steps=1)


def test_sampled_logp_equals_recomputed_logp():
    model = tiny_model()
    pol = ODUPolicy(model)
    traj = pol.sample(4, np.random.default_rng(0))
    assert traj.x_t.shape == (len(pol.train_steps), 4, 6, 6)
    assert 0 not in [int(pol.ts[i]) for i in traj.steps]    # the deterministic last step is not a policy step
    for j in range(len(traj.steps)):
        sub = traj.subset([1, 3])
        lp = pol.log_prob(sub.x_t[j], sub.x_next[j], int(traj.steps[j]))
        assert np.array_equal(lp, sub.logp[j])               # first importance ratio exactly 1


@pytest.mark.parametrize("step,readout", [(1, "pixel"), (5, "pixel"),   # an x0 set (t = 6), an eps set (t = 2)
                                          (1, "subpixel"), (5, "subpixel")])
def test_logprob_gradient_matches_finite_differences(step, readout):
    model = tiny_model(precision="double", readout=readout)
    pol = ODUPolicy(model)
    traj = pol.sample(3, np.random.default_rng(2))
    j = int(np.flatnonzero(traj.steps == step)[0])
    x_t, x_n = traj.x_t[j], traj.x_next[j]
    w = np.array([0.7, -1.3, 0.4])
    # move the parameters off the sampling point so that d logp / d mu is not just noise / sigma^2
    model.params["phases"] += 0.05 * np.random.default_rng(3).standard_normal(model.params["phases"].shape)
    _, _, vjp = pol.log_prob_vjp(x_t, x_n, step)
    m, grads = vjp(g_logp=w)
    assert m == model.set_of(int(pol.ts[step]))
    f = lambda: float(w @ pol.log_prob(x_t, x_n, step))  # noqa: E731
    rng = np.random.default_rng(4)
    h = 1e-6
    for name in ("phases", "scale", "offset", "skip"):
        arr = model.params[name][m]
        for _ in range(4):
            idx = tuple(int(rng.integers(0, s)) for s in arr.shape)
            if name == "phases":   # a pixel inside the light path
                idx = (idx[0], 4 + idx[1] % 8, 4 + idx[2] % 8)
            old = arr[idx]
            arr[idx] = old + h
            fp = f()
            arr[idx] = old - h
            fm = f()
            arr[idx] = old
            fd = (fp - fm) / (2 * h)
            assert grads[name][idx] == pytest.approx(fd, rel=2e-5, abs=1e-6 * max(1.0, abs(fd))), (name, idx)


def test_parse_sets():
    assert parse_sets("all", 4) == (0, 1, 2, 3)
    assert parse_sets("low", 4) == (0, 1)
    assert parse_sets("low", 5) == (0, 1, 2)
    assert parse_sets("3,1", 4) == (1, 3)
    for bad in ("4", "x", "", "-1"):
        with pytest.raises(ValueError, match="sets"):
            parse_sets(bad, 4)
    model = tiny_model()
    pol = ODUPolicy(model, sets="low")
    assert all(model.set_of(int(pol.ts[i])) == 0 for i in pol.train_steps)


# ---------------------------------------------------------------------------- the objectives
class _FakePolicy:
    """log p_theta of each (step, sample) given directly; records the gradients asked for."""

    def __init__(self, logp_now):
        self.now = logp_now
        self.sigma2 = np.ones(10)
        self.calls = {}

    def log_prob(self, x_t, x_next, i):
        return self.now[i].copy()

    def log_prob_vjp(self, x_t, x_next, i):
        def vjp(g_logp=None, g_mu=None):
            self.calls[i] = np.array(g_logp)
            return 0, {"phases": np.zeros((1, 1, 1))}
        return self.now[i].copy(), np.zeros((len(self.now[i]), 1, 1)), vjp


def test_prdp_loss_on_a_hand_computed_example():
    # two steps (policy indices 3 and 4), one pair of trajectories (samples 0 and 1)
    old = np.array([[-1.0, -2.0], [-3.0, -4.0]])
    now = {3: np.array([-0.995, -2.02]), 4: np.array([-3.004, -3.999])}
    traj = Trajectories(np.array([3, 4]), np.zeros((2, 2, 1, 1)), np.zeros((2, 2, 1, 1)), old, np.zeros((2, 1, 1)))
    pol = _FakePolicy(now)
    # log-ratios: a: +0.005, -0.004;  b: -0.02 (clipped to -0.01, no gradient), +0.001
    # S_a = 0.001, S_b = -0.009; dr = 0.5 - 0.2 = 0.3; beta = 2: residual 0.3 - 2 * 0.01 = 0.28
    stats, _ = prdp_minibatch(pol, traj, np.array([0.5, 0.2]), np.array([[0, 1]]), np.array([0, 1]),
                              beta=2.0, clip=0.01)
    assert stats["rdp_loss"] == pytest.approx(0.28 ** 2)
    assert stats["clipped_frac"] == pytest.approx(0.25)
    # unclipped: S_b = -0.019, residual 0.3 - 2 * 0.02 = 0.26; the larger (clipped) loss is taken
    assert stats["clipped_pairs"] == 1.0
    # d loss / d l_t^a = -2 beta r = -1.12 on both steps; for b +1.12, except the clipped step 3
    np.testing.assert_allclose(pol.calls[3], [-1.12, 0.0])
    np.testing.assert_allclose(pol.calls[4], [-1.12, 1.12])
    # rewards swapped (dr = -0.3): unclipped -0.3 - 0.04 = -0.34 beats clipped -0.32, so the
    # unclipped loss is taken and the clipped step of b gets its gradient back (PPO's max)
    pol = _FakePolicy(now)
    stats, _ = prdp_minibatch(pol, traj, np.array([0.2, 0.5]), np.array([[0, 1]]), np.array([0, 1]),
                              beta=2.0, clip=0.01)
    assert stats["rdp_loss"] == pytest.approx(0.34 ** 2)
    assert stats["clipped_pairs"] == 0.0
    np.testing.assert_allclose(pol.calls[3], [1.36, -1.36])
    np.testing.assert_allclose(pol.calls[4], [1.36, -1.36])
    # the ratios are to the pretrained reference: the sampling model of a is already 0.1 and 0.05
    # above it (b: 0), so R_a = 0.151 (unclipped) and the residuals are 0.3 - 2 * (0.151 + 0.019)
    # = -0.04 (unclipped) and 0.3 - 2 * (0.151 + 0.009) = -0.02 (clipped): the unclipped is taken
    pol = _FakePolicy(now)
    ref_logp = old - np.array([[0.1, 0.0], [0.05, 0.0]])
    stats, _ = prdp_minibatch(pol, traj, np.array([0.5, 0.2]), np.array([[0, 1]]), np.array([0, 1]),
                              beta=2.0, clip=0.01, ref_logp=ref_logp)
    assert stats["rdp_loss"] == pytest.approx(0.04 ** 2)
    np.testing.assert_allclose(pol.calls[3], [0.16, -0.16])
    np.testing.assert_allclose(pol.calls[4], [0.16, -0.16])
    loss, ga, gb = rdp_loss(np.array([1.0, -1.0]), np.array([0.1, 0.0]), np.array([0.0, 0.2]), 0.5)
    assert loss == pytest.approx(((1 - 0.05) ** 2 + (-1 + 0.1) ** 2) / 2)
    np.testing.assert_allclose(ga, [-0.5 * 0.95, 0.5 * 0.9])
    np.testing.assert_allclose(gb, -ga)


def test_ddpo_surrogate_on_a_hand_computed_example():
    old = np.zeros((1, 2))
    now = {2: np.log(np.array([1.2, 1.2]))}    # ratio 1.2 for both samples; clip 0.1
    traj = Trajectories(np.array([2]), np.zeros((1, 2, 1, 1)), np.zeros((1, 2, 1, 1)), old, np.zeros((2, 1, 1)))
    pol = _FakePolicy(now)
    stats, _ = ddpo_minibatch(pol, traj, np.array([1.0, -1.0]), np.array([0]), clip=0.1)
    # A = +1: max(-1.2, -1.1) = -1.1 (clipped, no gradient); A = -1: max(1.2, 1.1) = 1.2 (gradient +1.2)
    assert stats["loss"] == pytest.approx((-1.1 + 1.2) / 2)
    np.testing.assert_allclose(pol.calls[2], [0.0, 1.2 / 2])
    np.testing.assert_allclose(advantages(np.array([1.0, 3.0])), [-1.0, 1.0], atol=1e-7)


@pytest.mark.parametrize("clip", [1e6, 0.05])
def test_prdp_gradient_matches_finite_differences_of_its_loss(clip):
    model = tiny_model(precision="double")
    pol = ODUPolicy(model)
    traj = pol.sample(4, np.random.default_rng(6))
    model.params["phases"] += 0.01 * np.random.default_rng(7).standard_normal(model.params["phases"].shape)
    rewards, used = np.array([0.9, 0.1, 0.3, 0.6]), np.arange(len(traj.steps))
    pairs = np.stack(np.triu_indices(4, 1), axis=1)            # all pairs, as the finetuner forms them
    ref = {k: v.copy() for k, v in model.params.items()}
    ref["phases"] = ref["phases"] + 0.02
    ref_mu = np.stack([pol.mean(traj.x_t[j], int(traj.steps[j]), ref) for j in used])
    ref_logp = np.stack([pol.transition_log_prob(traj.x_next[j], ref_mu[j], int(traj.steps[j])) for j in used])
    # clip 1e6: nothing clipped, the loss is smooth; clip 0.05: some steps clipped and (checked below)
    # both branches of the max taken, the loss piecewise smooth and h far below the kinks
    kw = dict(beta=0.5, clip=clip, kl=0.01, ref_mu=ref_mu, ref_logp=ref_logp)
    st, acc = prdp_minibatch(pol, traj, rewards, pairs, used, **kw)
    if clip < 1:
        assert 0 < st["clipped_frac"] < 1 and 0 < st["clipped_pairs"] < 1
    loss = lambda: prdp_minibatch(pol, traj, rewards, pairs, used, **kw)[0]["loss"]  # noqa: E731
    h = 1e-6
    for m in acc:
        arr = model.params["phases"][m]
        for idx in ((0, 6, 7), (1, 9, 5)):
            old = arr[idx]
            arr[idx] = old + h
            fp = loss()
            arr[idx] = old - h
            fm = loss()
            arr[idx] = old
            assert acc[m]["phases"][idx] == pytest.approx((fp - fm) / (2 * h), rel=1e-4, abs=1e-9)


# ---------------------------------------------------------------------------- the loop
def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _bright(images):
    return images.mean(axis=(1, 2))


def _finetuner(model, out, reward=_bright, **kw):
    cfg = FinetuneConfig(**{**dict(method="prdp", rounds=2, batch=4, epochs=1, minibatch=4, lr=0.05,
                                   eval_count=4, eval_every=5), **kw})
    return Finetuner(model, reward, out, cfg, reward_name="bright", log=lambda s: None)


@pytest.mark.parametrize("method", ["prdp", "ddpo"])
def test_one_round_changes_phases_and_writes_a_loadable_checkpoint(tmp_path, method):
    model = tiny_model()
    before = model.params["phases"].copy()
    readout = model.params["scale"].copy()
    s = _finetuner(model, tmp_path, method=method, rounds=1).fit()
    assert s["rounds"] == 1 and s["queries"] == 4
    assert np.abs(model.params["phases"] - before).max() > 1e-3
    assert np.array_equal(model.params["scale"], readout)          # readout_lr 0: read-out untouched
    loaded, _, meta = load_model(tmp_path / "checkpoint.npz")
    assert np.array_equal(loaded.params["phases"], model.params["phases"])
    assert meta["finetune"]["round"] == 1 and meta["finetune"]["method"] == method
    rows = _rows(tmp_path / "reward_curve.csv")
    assert [r["round"] for r in rows] == ["-1", "0"] and rows[1]["eval_reward"] != ""
    assert (tmp_path / "samples_before.png").exists() and (tmp_path / "samples_after.png").exists()


def test_resume_equals_uninterrupted_run(tmp_path):
    a = tiny_model()
    _finetuner(a, tmp_path / "a", rounds=3).fit()
    b = tiny_model()
    _finetuner(b, tmp_path / "b", rounds=1).fit()
    c = tiny_model()                                   # a fresh process: the pretrained model again
    _finetuner(c, tmp_path / "b", rounds=3).fit(resume=True)
    assert np.array_equal(a.params["phases"], c.params["phases"])
    ra = _rows(tmp_path / "a" / "reward_curve.csv")
    rb = _rows(tmp_path / "b" / "reward_curve.csv")
    assert [r["reward_mean"] for r in ra] == [r["reward_mean"] for r in rb]
    with pytest.raises(FileExistsError, match="--resume"):
        _finetuner(tiny_model(), tmp_path / "a", rounds=3).fit()


def test_a_failing_reward_skips_rounds_then_stops_with_the_checkpoint_kept(tmp_path):
    calls = {"n": 0}

    def flaky(images):
        calls["n"] += 1
        if calls["n"] == 1:         # the evaluation before finetuning works
            return _bright(images)
        raise RuntimeError("reward server down")

    model = tiny_model()
    before = model.params["phases"].copy()
    with pytest.raises(FinetuneError, match="2 rounds in a row.*reward server down"):
        _finetuner(model, tmp_path, reward=flaky, rounds=5, max_reward_failures=2).fit()
    loaded, _, meta = load_model(tmp_path / "checkpoint.npz")
    assert np.array_equal(loaded.params["phases"], before)          # nothing learnt from failed rounds
    rows = _rows(tmp_path / "reward_curve.csv")
    assert [r["skipped"] for r in rows[1:]] == ["1", "1"] and "reward server down" in rows[1]["message"]


@pytest.mark.parametrize("bad, match", [
    (lambda x: np.full(x.shape[0], np.nan), "NaN"),
    (lambda x: np.zeros((x.shape[0], 2)), "shape"),
    (lambda x: np.zeros(x.shape[0] + 1), "shape"),
    (lambda x: "high", "not an array|shape"),
    (lambda x: 1 / 0, "ZeroDivisionError"),
])
def test_evaluate_reward_refuses_bad_values(bad, match):
    with pytest.raises(RewardError, match=match):
        evaluate_reward(bad, np.zeros((3, 4, 4)))


def test_rewards_and_bad_input(tmp_path, monkeypatch):
    clf = types.SimpleNamespace(classes=np.arange(10), predict_proba=lambda x: np.full((x.shape[0], 10), 0.1))
    r = make_reward("class:3", clf)
    np.testing.assert_allclose(r(np.zeros((2, 4, 4))), [0.1, 0.1])
    np.testing.assert_allclose(make_reward("legibility", clf)(np.zeros((2, 4, 4))), [0.1, 0.1])
    np.testing.assert_allclose(make_reward("logclass:3", clf)(np.zeros((2, 4, 4))), np.log([0.1, 0.1]))
    with pytest.raises(ValueError, match="logclass:10.*not 10"):
        make_reward("logclass:10", clf)
    with pytest.raises(ValueError, match="class:12.*not 12"):
        make_reward("class:12", clf)
    with pytest.raises(ValueError, match="integer label"):
        make_reward("class:three", clf)
    with pytest.raises(ValueError, match="needs a classifier"):
        make_reward("class:3")
    with pytest.raises(ValueError, match="cannot import"):
        make_reward("no_such_module_xyz:f")
    mod = types.ModuleType("ft_user_reward")
    mod.score = _bright
    monkeypatch.setitem(sys.modules, "ft_user_reward", mod)
    assert make_reward("ft_user_reward:score") is _bright
    with pytest.raises(ValueError, match="no callable"):
        make_reward("ft_user_reward:nothing")
    for kw, name in ((dict(method="ppo"), "--method"), (dict(batch=1), "--batch"), (dict(lr=-1.0), "--lr"),
                     (dict(clip=2.0), "--clip"), (dict(rounds=0), "--rounds"), (dict(timestep_fraction=0.0), "--timestep-fraction")):
        with pytest.raises(ValueError, match=name):
            FinetuneConfig(**kw).validate()
    # resuming with a model of another geometry: a clear checkpoint error
    _finetuner(tiny_model(), tmp_path, rounds=1).fit()
    with pytest.raises(CheckpointError, match="does not match"):
        _finetuner(tiny_model(n=24), tmp_path, rounds=2).fit(resume=True)
    with pytest.raises(CheckpointError, match="--method prdp"):
        _finetuner(tiny_model(), tmp_path, rounds=2, method="ddpo").fit(resume=True)


def test_cli_finetune_bad_input(tmp_path, capsys):
    from optdiff.cli import main

    model = tiny_model()
    save_model(tmp_path / "m.npz", model)
    assert main(["finetune", str(tmp_path / "missing.npz"), "--reward", "class:3", "--out", str(tmp_path / "o")]) == 1
    assert "no such file" in capsys.readouterr().err
    # the model was trained on scikit-learn's digits (labels 0-9): class 11 is unknown
    rc = main(["finetune", str(tmp_path / "m.npz"), "--reward", "class:11", "--classifier-kind", "mlp",
               "--out", str(tmp_path / "o"), "--rounds", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "class:11" in err and "not 11" in err
    assert not (tmp_path / "o" / "classifier.npz").exists()      # refused before training a classifier
    rc = main(["finetune", str(tmp_path / "m.npz"), "--reward", "class:3", "--batch", "1",
               "--out", str(tmp_path / "o")])
    assert rc == 1 and "--batch" in capsys.readouterr().err
