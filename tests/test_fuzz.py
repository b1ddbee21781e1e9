"""The fuzz harness (tests/fuzz/) in the suite: a seeded subset of cases over every public entry
point, the harness's own crash/hang handling, and one strict xfail per known defect.

Long mode (not run here): ``python tests/fuzz/run.py --cases 100000`` (see docs/api.md, Reliability).
"""

import collections
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fuzz.harness import run_cases
from fuzz.known import KNOWN, classify
from fuzz.run import summarize

import optdiff

CI_SEED = 2026
CI_CASES = 3000


@pytest.fixture(scope="module")
def ci_run():
    t0 = time.perf_counter()
    results = run_cases(CI_SEED, range(CI_CASES), workers=2)
    return results, time.perf_counter() - t0


def test_subset_has_no_unknown_failures(ci_run):
    results, elapsed = ci_run
    assert [r["i"] for r in results] == list(range(CI_CASES))
    text, unknown = summarize(results, CI_SEED, elapsed)
    print(text)
    assert unknown == 0, text


ENTRY_POINTS = {
    "Propagator", "Propagator.forward", "Propagator.adjoint", "Propagator.transfer_function", "propagate",
    "PhaseStack", "PhaseStack.forward", "PhaseStack.camera_field", "PhaseStack.forward_train", "PhaseStack.backward",
    "PhaseStack.mse_loss_and_grad", "standard_normal", "ddpm_update", "set_num_threads", "ODU", "ODU.intensity",
    "TimeAwareODU.predict_eps", "TimeAwareODU.loss_and_grads", "NoiseSchedule", "ddpm_sample", "ddim_sample",
    "save_checkpoint", "load_checkpoint", "read_idx", "read_quickdraw", "read_image_folder", "load_dataset",
    "Config.from_dict", "load_config", "apply_overrides", "cli.main"}


def test_subset_reaches_every_entry_point_with_good_and_bad_arguments(ci_run):
    results, _ = ci_run
    seen = collections.defaultdict(collections.Counter)
    for r in results:
        seen[r["entry"]][(r["kind"], r["outcome"])] += 1
    assert set(seen) - {"?"} == ENTRY_POINTS, set(seen) ^ ENTRY_POINTS
    for e in ENTRY_POINTS:
        assert seen[e][("good", "ok")] > 0, f"{e}: no valid call succeeded: {dict(seen[e])}"
        refused = seen[e][("bad", "clean_error")] + seen[e][("bad", "bad_message")]
        assert refused > 0, f"{e}: no invalid call was refused: {dict(seen[e])}"


def test_harness_catches_crashes_and_hangs_and_goes_on():
    results = run_cases(5, range(12), workers=2, only={"_selftest.crash", "_selftest.hang", "_selftest.ok"})
    assert [r["i"] for r in results] == list(range(12))
    by = collections.Counter((r["entry"], r["outcome"]) for r in results)
    assert set(by) == {("_selftest.crash", "crash"), ("_selftest.hang", "hang"), ("_selftest.ok", "ok")}, by
    crash = next(r for r in results if r["outcome"] == "crash")
    assert "SIGSEGV" in crash["detail"] and not crash.get("delayed")
    assert not any(classify(r) for r in results)


def _probe(code: str):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(optdiff.__file__).resolve().parent.parent)]
                                        + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("defect", [pytest.param(k, id=k.name[:60], marks=pytest.mark.xfail(strict=True, reason=k.reason))
                                    for k in KNOWN])
def test_known_defect_is_fixed(defect):
    """Fails (xfail) while the defect is there; passes, and so must be removed from fuzz/known.py, once fixed."""
    r = _probe(defect.probe)
    assert r.returncode == 0, f"{defect.name}: exit {r.returncode}: {r.stderr[-400:]}"
