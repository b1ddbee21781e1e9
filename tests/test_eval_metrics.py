"""FID, KID and IS against the published reference implementations (pytorch-fid 0.3.0's
``calculate_frechet_distance``; torch-fidelity 0.4.0's ``fid_statistics_to_metric``,
``kid_features_to_metric`` and ``isc_features_to_metric``) on small fixed inputs; sample checks,
too-few-sample errors, per-set eps-MSE and the FID along the chain.

Two kinds of comparison:

* live: when the reference packages import, their values are computed here on the same
  inputs (skipped otherwise: both need a torchvision that matches the installed torch);
* hard-coded: ``REFERENCE`` holds the values the reference packages gave on these inputs, so
  the comparison always runs. They were produced by running this file as a script with the
  packages importable: ``python tests/test_eval_metrics.py`` (prints ``REFERENCE``); on the
  development machine: pytorch-fid 0.3.0 and torch-fidelity 0.4.0 from PyPI, torch 2.13.0+cpu,
  with torchvision 0.16.2's pure-Python modules on PYTHONPATH (the PyPI torchvision that matches
  torch 2.13 is a CUDA build that does not load against the CPU torch), scipy 1.17.1, numpy 2.4.
"""

import warnings

import numpy as np
import pytest

from optdiff.evaluation.metrics import check_samples, frechet_distance, inception_score, kid, require_samples

# Values from the reference implementations on the inputs of `_inputs()` (see the module docstring).
REFERENCE = {
    "fid_pytorch_fid": 5.216158119802355,
    "fid_torch_fidelity": 5.216158119802358,
    "kid_mean": 1.0309854302523198,
    "kid_std": 0.25270753321456246,
    "kid_full_mean": 1.0064345280631226,
    "is_mean": 2.8993772261226853,
    "is_std": 0.2447961963492881,
}


def _inputs():
    rng = np.random.default_rng(20240615)
    a = rng.standard_normal((240, 12))
    b = 1.3 * rng.standard_normal((180, 12)) @ np.diag(np.linspace(0.5, 1.5, 12)) + 0.25
    logits = 3.0 * rng.standard_normal((200, 7))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return a, b, logits, p / p.sum(axis=1, keepdims=True)


def _ours():
    a, b, _, probs = _inputs()
    km, ks = kid(a, b, subsets=20, subset_size=60, rng=np.random.RandomState(7))
    kfull, _ = kid(a[:180], b, subsets=1, subset_size=180, rng=0)
    im, istd = inception_score(probs, splits=5)
    return {"fid": frechet_distance(a, b), "kid_mean": km, "kid_std": ks, "kid_full_mean": kfull,
            "is_mean": im, "is_std": istd}


def _reference_values():
    """The reference packages' values on `_inputs()` (raises ImportError when they do not import)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torch
            from pytorch_fid.fid_score import calculate_frechet_distance
            from torch_fidelity.metric_fid import fid_statistics_to_metric
            from torch_fidelity.metric_isc import isc_features_to_metric
            from torch_fidelity.metric_kid import kid_features_to_metric
    except Exception as exc:  # ImportError, or a torchvision that does not load (RuntimeError)
        raise ImportError(f"reference implementations not importable: {type(exc).__name__}: {exc}") from None
    a, b, logits, _ = _inputs()
    stats = [{"mu": x.mean(axis=0), "sigma": np.cov(x, rowvar=False)} for x in (a, b)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pytorch-fid passes scipy's deprecated disp= argument
        fid_pf = float(calculate_frechet_distance(stats[0]["mu"], stats[0]["sigma"], stats[1]["mu"], stats[1]["sigma"]))
    fid_tf = fid_statistics_to_metric(stats[0], stats[1], verbose=False)["frechet_inception_distance"]
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    k = kid_features_to_metric(ta, tb, kid_subsets=20, kid_subset_size=60, rng_seed=7, verbose=False, kid_kernel="poly",
                               kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1)
    kf = kid_features_to_metric(ta[:180], tb, kid_subsets=1, kid_subset_size=180, rng_seed=0, verbose=False,
                                kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                kid_kernel_poly_coef0=1)
    i = isc_features_to_metric(torch.from_numpy(logits), splits=5, shuffle=False)
    return {"fid_pytorch_fid": fid_pf, "fid_torch_fidelity": fid_tf,
            "kid_mean": k["kernel_inception_distance_mean"], "kid_std": k["kernel_inception_distance_std"],
            "kid_full_mean": kf["kernel_inception_distance_mean"],
            "is_mean": i["inception_score_mean"], "is_std": i["inception_score_std"]}


def test_against_hard_coded_reference_values():
    ours = _ours()
    # float64 throughout; FID goes through a matrix square root (scipy) vs eigenvalues
    # (torch-fidelity): agreement to ~1e-9 relative; KID and IS are sums of the same terms.
    assert ours["fid"] == pytest.approx(REFERENCE["fid_pytorch_fid"], rel=1e-9)
    assert ours["fid"] == pytest.approx(REFERENCE["fid_torch_fidelity"], rel=1e-9)
    for key in ("kid_mean", "kid_std", "kid_full_mean", "is_mean", "is_std"):
        assert ours[key] == pytest.approx(REFERENCE[key], rel=1e-12, abs=1e-15), key


def test_against_live_reference_implementations():
    try:
        ref = _reference_values()
    except ImportError as exc:
        pytest.skip(str(exc))
    ours = _ours()
    assert ours["fid"] == pytest.approx(ref["fid_pytorch_fid"], rel=1e-9)
    assert ours["fid"] == pytest.approx(ref["fid_torch_fidelity"], rel=1e-9)
    for key in ("kid_mean", "kid_std", "kid_full_mean", "is_mean", "is_std"):
        assert ours[key] == pytest.approx(ref[key], rel=1e-12, abs=1e-15), key
    for key, value in ref.items():  # the hard-coded table is what these versions give
        assert REFERENCE[key] == pytest.approx(value, rel=1e-9), key


def test_fid_methods_agree_whatever_the_sample_count():
    rng = np.random.default_rng(3)
    for n_a, n_b, d in ((30, 40, 64), (200, 150, 12), (5, 300, 20)):
        a = rng.standard_normal((n_a, d)) @ rng.standard_normal((d, d)) * 0.3
        b = rng.standard_normal((n_b, d)) + 0.2
        e, s = frechet_distance(a, b, method="eigh"), frechet_distance(a, b, method="svd")
        # full rank: both exact to round-off; rank-deficient (N < d): the eigh form takes square roots
        # of round-off eigenvalues (sqrt(1e-16 |S|) each), the SVD form has none of them
        assert s == pytest.approx(e, rel=1e-9 if min(n_a, n_b) > d else 1e-6), (n_a, n_b, d)
        assert frechet_distance(a, b) in (e, s)
    with pytest.raises(ValueError, match="method"):
        frechet_distance(a, b, method="sqrtm")


def test_kid_is_unbiased_and_kernel_is_the_polynomial_one():
    a, b, _, _ = _inputs()
    # one subset of everything: the closed form of the unbiased MMD^2 with k = (x.y / d + 1)^3
    x, y = a[:180], b
    k = lambda u, v: (u @ v.T / u.shape[1] + 1.0) ** 3  # noqa: E731
    m = x.shape[0]
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    want = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
    assert kid(x, y, subsets=1, subset_size=m)[0] == pytest.approx(want, rel=1e-12)
    # unbiased: two samples of one distribution average to ~0 (the biased estimate is > 0)
    rng = np.random.default_rng(1)
    vals = [kid(rng.standard_normal((50, 4)), rng.standard_normal((50, 4)), subsets=1, subset_size=50)[0]
            for _ in range(200)]
    assert abs(np.mean(vals)) < 3 * np.std(vals) / np.sqrt(len(vals))


def test_sample_checks_name_the_problem():
    good = np.zeros((3, 5, 5))
    assert check_samples(good, 5).shape == (3, 5, 5)
    with pytest.raises(ValueError, match=r"\[K, H, H\]"):
        check_samples(np.zeros((3, 25)))
    with pytest.raises(ValueError, match="expected 6x6"):
        check_samples(good, 6, what="ODU samples")
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        check_samples(good + 2.0)
    with pytest.raises(ValueError, match="NaN"):
        check_samples(np.full((2, 4, 4), np.nan))
    with pytest.raises(ValueError, match="at least 4"):
        check_samples(good, min_count=4)
    with pytest.raises(ValueError, match="FID needs at least 2"):
        require_samples("fid", 1)
    with pytest.raises(ValueError, match="IS needs at least 10"):
        require_samples("is", 5, splits=10)
    with pytest.raises(ValueError, match="unknown metric 'lpips'"):
        require_samples("lpips", 100)


def test_eps_mse_per_set_and_fid_along_chain():
    from optdiff.diffusion.schedule import NoiseSchedule
    from optdiff.evaluation.baselines import ZeroPredictor
    from optdiff.evaluation.metrics import eps_mse_per_set, fid_along_chain

    sched = NoiseSchedule(50)
    rng = np.random.default_rng(0)
    real = np.clip(rng.normal(0, 0.3, (64, 6, 6)), -1, 1)
    mse = eps_mse_per_set(ZeroPredictor(), real, sched, sets=5, rng=0, samples=400)
    assert mse.shape == (5,) and np.all(np.abs(mse - 1.0) < 0.15)  # E[eps^2] = 1

    class Pixels:  # identity feature space: FID of the pixels themselves
        def features(self, x):
            return np.asarray(x).reshape(len(x), -1)

    res = fid_along_chain(ZeroPredictor(), sched, Pixels(), real, count=40, timesteps=[49, 25, 0], batch=16)
    assert res["t"] == [49, 25, 0] and len(res["fid"]) == 3 and np.all(np.isfinite(res["fid"]))
    # x0 estimates of the zero predictor shrink towards 0 as t falls: closer to the data at t = 0
    assert res["fid"][2] < res["fid"][0]
    with pytest.raises(ValueError, match="FID needs at least 2"):
        fid_along_chain(ZeroPredictor(), sched, Pixels(), real, count=1, timesteps=[0])
    with pytest.raises(ValueError, match="not visited"):
        fid_along_chain(ZeroPredictor(), sched, Pixels(), real, count=4, timesteps=[50])


if __name__ == "__main__":  # print the reference values for REFERENCE (see the module docstring)
    import json

    print(json.dumps(_reference_values(), indent=4))
