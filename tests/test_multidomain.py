"""Multi-path optical networks (optdiff.multidomain): path gradients against central differences,
the controller's exact sampling, score and REINFORCE step, the prioritisation formula, a tiny
two-domain run, resume equality and bad input. Tiny sizes throughout."""

import itertools
import json
import math

import numpy as np
import pytest

from optdiff.config import ConfigError, OpticsConfig
from optdiff.diffusion.checkpoint import CheckpointError, load_checkpoint
from optdiff.multidomain import (
    SKIP,
    ClassifierReadout,
    DenoiserReadout,
    PathController,
    SuperNet,
    adaptive_weights,
    domain_from_arrays,
    domain_index,
    path_costs,
    progress_ratio,
    results_table,
    run_variants,
    search_config_from_dict,
)

OPTICS = {"n": 16, "distance": 5e-3, "padding": 1, "init": "zero", "init_noise": 0.3, "amp_scale": 0.5}


def _config(**search):
    base = {"image_size": 6, "positions": 2, "candidates": 2, "rounds": 3, "warmup_rounds": 1,
            "steps_per_round": 2, "finetune_steps": 2, "batch": 8, "val_count": 20, "test_count": 20,
            "train_limit": 60, "controller_samples": 2}
    base.update(search)
    return {"multidomain": base, "optics": dict(OPTICS),
            "domain": [{"name": "digits", "label": "low", "classes": [0, 1, 2]},
                       {"name": "digits", "label": "high", "classes": [7, 8, 9]}]}


def _domains(search):
    from optdiff.multidomain import load_domains

    s, _, specs = search_config_from_dict(search)
    return load_domains(specs, s)


# ---------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("kind", ["classify", "generate"])
@pytest.mark.parametrize("path", [(1, SKIP), (0, 1), (SKIP, 0)])
def test_path_gradient_matches_central_differences(kind, path):
    optics = OpticsConfig(**{**OPTICS, "n": 12, "layers": 2})
    net = SuperNet(optics, 4, candidates=2, skip=True, seed=1, precision="double")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3, 4, 4))
    if kind == "classify":
        ro, target = ClassifierReadout(4, [2]), np.array([0, 1, 1])
        ro.params["bias"][0] = [0.3, -0.2]
    else:
        ro, target = DenoiserReadout(4, 1, 100, (50, 100)), rng.standard_normal((3, 4, 4))
        ro.params["scale"][0] = rng.uniform(0.5, 2, (4, 4))

    def loss():
        return ro.loss_and_grads(0, net.intensity(x, path), target)[0]

    I, tape = net.intensity_train(x, path)
    _, gI, _ = ro.loss_and_grads(0, I, target)
    grads = net.backward(tape, gI, path)
    assert set(grads) == {(pos, c) for pos, c in enumerate(path) if c != SKIP}  # only masks on the path
    h = 1e-6
    for (pos, c), g in grads.items():
        for i, j in [(5, 6), (3, 8), (6, 6)]:
            old = net.masks[pos, c, i, j]
            net.masks[pos, c, i, j] = old + h
            up = loss()
            net.masks[pos, c, i, j] = old - h
            down = loss()
            net.masks[pos, c, i, j] = old
            fd = (up - down) / (2 * h)
            assert abs(g[i, j] - fd) <= 1e-6 * max(1.0, abs(fd)) + 1e-9, (pos, c, i, j, g[i, j], fd)


def test_readout_parameter_gradients_match_central_differences():
    rng = np.random.default_rng(3)
    I = rng.uniform(0, 1, (4, 6, 6))
    ro, y = ClassifierReadout(6, [4]), np.array([0, 1, 2, 3])
    _, _, g = ro.loss_and_grads(0, I, y)
    for name, idx in (("tau", (0, 0)), ("bias", (0, 2))):
        old = ro.params[name][idx]
        ro.params[name][idx] = old + 1e-6
        up = ro.loss_and_grads(0, I, y)[0]
        ro.params[name][idx] = old - 1e-6
        down = ro.loss_and_grads(0, I, y)[0]
        ro.params[name][idx] = old
        assert g[name][idx[1]] == pytest.approx((up - down) / 2e-6, rel=1e-6, abs=1e-9)


# ---------------------------------------------------------------------------------- controller
def _all_paths(L, K, skip):
    choices = list(range(K)) + ([SKIP] if skip else [])
    return [p for p in itertools.product(choices, repeat=L) if not all(c == SKIP for c in p)]


def test_controller_distribution_is_normalised_and_sampled_exactly():
    ctl = PathController(2, 1, skip=True)
    ctl.theta = np.array([[0.0, 1.5], [0.3, 0.9]])  # skips likely: the conditioning matters
    paths = _all_paths(2, 1, True)
    p = np.array([math.exp(ctl.log_prob(q)) for q in paths])
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert ctl.log_prob((SKIP, SKIP)) == -np.inf
    rng = np.random.default_rng(0)
    draws = [ctl.sample(rng) for _ in range(6000)]
    assert (SKIP, SKIP) not in draws
    freq = np.array([draws.count(q) / len(draws) for q in paths])
    assert np.max(np.abs(freq - p)) < 0.025, (freq, p)


def test_controller_score_matches_central_differences():
    ctl = PathController(3, 2, skip=True)
    ctl.theta = np.random.default_rng(1).normal(size=ctl.theta.shape)
    for path in [(0, SKIP, SKIP), (1, 0, SKIP), (SKIP, SKIP, 1)]:
        g = ctl.score(path)
        for idx in np.ndindex(ctl.theta.shape):
            old = ctl.theta[idx]
            ctl.theta[idx] = old + 1e-6
            up = ctl.log_prob(path)
            ctl.theta[idx] = old - 1e-6
            down = ctl.log_prob(path)
            ctl.theta[idx] = old
            assert g[idx] == pytest.approx((up - down) / 2e-6, abs=1e-7)


def test_reinforce_moves_towards_the_rewarded_choice():
    ctl = PathController(2, 2, skip=True)
    rng = np.random.default_rng(0)

    def reward(p):  # toy reward: candidate 1 at position 0 pays
        return 1.0 if p[0] == 1 else 0.0

    def p_good():
        return sum(math.exp(ctl.log_prob(q)) for q in _all_paths(2, 2, True) if q[0] == 1)

    start = p_good()
    paths = [(1, 0), (0, 0), (SKIP, 1)]
    theta0 = ctl.theta.copy()
    step = ctl.update(paths, [reward(q) for q in paths], lr=0.5, decay=0.9)
    b = 1.0 / 3  # first call: the baseline is the batch's mean reward
    want = 0.5 / 3 * sum((reward(q) - b) * PathController(2, 2).score(q) for q in paths)
    np.testing.assert_allclose(step, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ctl.theta, theta0 + want)
    assert float(ctl.baseline) == pytest.approx(0.9 * b + 0.1 * b)
    assert p_good() > start
    for _ in range(60):
        ps = [ctl.sample(rng) for _ in range(4)]
        ctl.update(ps, [reward(q) for q in ps], lr=0.5, decay=0.8)
    assert p_good() > 0.9
    assert ctl.best_path()[0] == 1


def test_best_path_never_all_skips():
    ctl = PathController(3, 2, skip=True)
    ctl.theta[:, 2] = 5.0  # every position prefers the skip
    ctl.theta[1, 0] = 4.0
    assert ctl.best_path() == (SKIP, 0, SKIP)


# ---------------------------------------------------------------------------------- prioritisation
def test_adaptive_weights_formula():
    q, ref = np.array([0.45, 0.9, 0.95]), np.array([0.9, 0.9, 0.8])
    k = np.array([0.5, 1.0, 1.0])
    f = -((1 - k) ** 2.0) * np.log(k) + 0.05
    np.testing.assert_allclose(progress_ratio(q, ref, "classify"), k)
    np.testing.assert_allclose(adaptive_weights(q, ref, "classify", gamma=2.0, min_weight=0.05), 3 * f / f.sum())
    # by hand: f = 0.25 * log 2 + 0.05 = 0.223287, weights 3 f / (f + 0.1)
    w = adaptive_weights(q, ref, "classify", gamma=2.0, min_weight=0.05)
    assert w[0] == pytest.approx(3 * 0.2232868 / 0.3232868, rel=1e-6) and w[0] > 1 > w[1] == w[2]
    np.testing.assert_allclose(adaptive_weights(ref, ref, "classify"), [1, 1, 1])  # all caught up: uniform
    # generation: qualities are -MSE; kappa = mse_ref / mse
    np.testing.assert_allclose(progress_ratio([-0.2, -0.1], [-0.1, -0.1], "generate"), [0.5, 1.0])
    with pytest.raises(ValueError, match="reference accuracies"):
        adaptive_weights([0.5], [0.0], "classify")


def test_path_costs_add_up_to_distinct_masks():
    paths = [(0, 1, SKIP), (0, 0, 1), (1, 1, SKIP)]
    total = sum(path_costs(p, paths[:d] + paths[d + 1:]) for d, p in enumerate(paths))
    assert total == pytest.approx(len({(i, c) for p in paths for i, c in enumerate(p) if c != SKIP}))


# ---------------------------------------------------------------------------------- runs
def ad_masks(res):
    return res["multipath-adaptive"]["distinct_masks"]


def test_tiny_two_domain_run(tmp_path):
    cfg = _config()
    s, optics, _ = search_config_from_dict(cfg)
    res = run_variants(s, optics, _domains(cfg), tmp_path, log=lambda m: None)
    assert list(res) == ["separate", "shared", "multipath-uniform", "multipath-adaptive", "separate-matched"]
    assert res["separate"]["distinct_masks"] == 4 and not res["separate"]["shared_masks"]
    m = min(2, max(1, round((res["multipath-uniform"]["distinct_masks"] + ad_masks(res)) / 2 / 2)))
    assert res["separate-matched"]["matched_masks"] == m and res["separate-matched"]["distinct_masks"] == 2 * m
    assert not res["separate-matched"]["shared_masks"]
    assert res["shared"]["distinct_masks"] == 2 and len(res["shared"]["shared_masks"]) == 2
    ad = res["multipath-adaptive"]
    assert ad["references"] == [res["separate"]["val_quality"][k] for k in ("low", "high")]
    for r in res.values():
        assert 1 <= r["distinct_masks"] <= 4 and r["mask_pixels"] == r["distinct_masks"] * 16 * 16
        assert all(0.0 <= q <= 1.0 for q in r["test_quality"].values())
    # three classes each, trained a little: the separate models are well above chance (1/3)
    assert min(res["separate"]["test_quality"].values()) > 0.5, res["separate"]["test_quality"]
    hist = json.loads((tmp_path / "history-multipath-adaptive.json").read_text())
    assert len(hist) == 4 and all(abs(np.mean(h["weights"]) - 1) < 1e-12 for h in hist)
    assert "multipath-uniform" in results_table(res)


@pytest.mark.parametrize("task", ["classify", "generate"])
def test_resume_equals_uninterrupted_run(tmp_path, task):
    cfg = _config(variants=["separate", "multipath-adaptive"], task=task)
    s, optics, _ = search_config_from_dict(cfg)
    doms = _domains(cfg)
    full = run_variants(s, optics, doms, tmp_path / "a", log=lambda m: None)
    part = run_variants(s, optics, doms, tmp_path / "b", max_rounds=6, log=lambda m: None)
    assert list(part) == ["separate"]  # stopped inside the adaptive variant (4 rounds each)
    with pytest.raises(FileExistsError, match="--resume"):
        run_variants(s, optics, doms, tmp_path / "b", log=lambda m: None)
    resumed = run_variants(s, optics, doms, tmp_path / "b", resume=True, log=lambda m: None)
    assert resumed == full
    _, a, _ = load_checkpoint(tmp_path / "a" / "checkpoint-multipath-adaptive.npz")
    _, b, _ = load_checkpoint(tmp_path / "b" / "checkpoint-multipath-adaptive.npz")
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_generation_variant_runs(tmp_path):
    cfg = _config(task="generate", variants=["shared", "multipath-uniform"], rounds=2, finetune_steps=0)
    cfg["optics"]["amp_scale"] = 0.125
    s, optics, _ = search_config_from_dict(cfg)
    doms = _domains(cfg)
    res = run_variants(s, optics, doms, tmp_path, log=lambda m: None)
    assert all(q < 0 for r in res.values() for q in r["test_quality"].values())  # -eps-MSE
    # scoring a path the read-out was not trained on refits it for the measurement only
    from optdiff.multidomain import VariantRun

    run = VariantRun(s, optics, doms, "multipath-uniform")
    before = {k: v.copy() for k, v in run.readout.params.items()}
    other = (1, SKIP)
    q = run.validate_path(0, other)
    assert all(np.array_equal(before[k], v) for k, v in run.readout.params.items())
    stale = run.readout.quality(0, run.net.intensity(*run.val[0][:1], other), run.val[0][1])
    assert q > stale  # the least-squares read-out of that path beats the other path's


# ---------------------------------------------------------------------------------- bad input
def test_bad_input_messages(tmp_path):
    with pytest.raises(ConfigError, match=r"candidates = 0: must be >= 1"):
        search_config_from_dict(_config(candidates=0))
    with pytest.raises(ConfigError, match="'separate-matched' needs a multipath variant"):
        search_config_from_dict(_config(variants=["separate", "separate-matched"]))
    with pytest.raises(ConfigError, match="'multipath-adaptive' needs 'separate'"):
        search_config_from_dict(_config(variants=["multipath-adaptive"]))
    bad = _config()
    bad["domain"][1]["size"] = 8
    with pytest.raises(ConfigError, match=r"size = 8: differs from \[multidomain\] image_size = 6"):
        search_config_from_dict(bad)
    bad = _config()
    bad["domain"][0]["name"] = "cifar"
    with pytest.raises(ConfigError, match="unknown data set; known: digits"):
        search_config_from_dict(bad)
    with pytest.raises(ValueError, match="images are 8x8, the network's image size is 6x6"):
        domain_from_arrays("x", np.zeros((50, 8, 8)), np.zeros(50, int), 6, 5, 5)
    with pytest.raises(ValueError, match="unknown domain 'sketch'; this run's domains: low, high"):
        domain_index(["low", "high"], "sketch")
    net = SuperNet(OpticsConfig(**{**OPTICS, "layers": 2}), 6, candidates=2)
    with pytest.raises(ValueError, match="selects no layer"):
        net.path_phases((SKIP, SKIP))
    with pytest.raises(ValueError, match=r"path\[1\] = 2: a candidate index must be in 0..1"):
        net.path_phases((0, 2))
    with pytest.raises(ValueError, match="candidates must be >= 1"):
        SuperNet(OpticsConfig(**{**OPTICS, "layers": 2}), 6, candidates=0)


def test_cli_run_and_bad_resume(tmp_path, capsys):
    from optdiff.cli import main

    cfg = tmp_path / "md.toml"
    cfg.write_text(
        '[multidomain]\nimage_size = 6\npositions = 2\nrounds = 2\nwarmup_rounds = 0\nsteps_per_round = 1\n'
        'finetune_steps = 1\nbatch = 4\nval_count = 10\ntest_count = 10\ntrain_limit = 30\n'
        'variants = ["shared", "multipath-uniform"]\n'
        '[optics]\nn = 16\ndistance = 5e-3\npadding = 1\ninit = "zero"\n'
        '[[domain]]\nname = "digits"\nclasses = [0, 1]\nlabel = "a"\n'
        '[[domain]]\nname = "digits"\nclasses = [3, 4]\nlabel = "b"\n')
    out = tmp_path / "run"
    assert main(["multidomain", str(cfg), "--out", str(out), "--no-progress"]) == 0
    for name in ("results.md", "results.json", "paths.png", "checkpoint-multipath-uniform.npz"):
        assert (out / name).is_file()
    assert "| multipath-uniform |" in capsys.readouterr().out
    # a finished result or a checkpoint of another configuration is refused with a clear message
    cfg.write_text(cfg.read_text().replace("rounds = 2", "rounds = 3"))
    assert main(["multidomain", str(cfg), "--out", str(out), "--resume", "--no-progress"]) == 1
    assert "result-shared.json: the finished variant belongs to another configuration" in capsys.readouterr().err
    (out / "result-shared.json").unlink()
    (out / "result-multipath-uniform.json").unlink()
    assert main(["multidomain", str(cfg), "--out", str(out), "--resume", "--no-progress"]) == 1
    assert "does not match the requested model" in capsys.readouterr().err
    # corrupt checkpoint
    ck = out / "checkpoint-multipath-uniform.npz"
    ck.write_bytes(ck.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not an optdiff checkpoint|corrupt"):
        from optdiff.multidomain import VariantRun, restore_run

        s, optics, _ = search_config_from_dict(_config())
        restore_run(ck, VariantRun(s, optics, _domains(_config()), "multipath-uniform"))
    bad = tmp_path / "bad.toml"
    bad.write_text('[multidomain]\ncandidates = 0\n[[domain]]\nname = "digits"\n')
    assert main(["multidomain", str(bad), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "candidates = 0" in err


def test_matched_positions():
    from optdiff.multidomain.search import matched_positions

    assert matched_positions(3, 1) == [2] and matched_positions(3, 2) == [0, 2]
    assert matched_positions(4, 3) == [0, 2, 3] and matched_positions(3, 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="matched_masks must be in 1..3"):
        matched_positions(3, 0)
