"""benchmarks/gpu_check.sh, the one-shot GPU check, exercised on the CPU (its dry mode).

The dry mode runs every stage through the CUDA emulation (optdiff._cuda_emu) with tiny sizes and
without the PyTorch/JAX peers (GPU_CHECK_PEERS=0): it proves the script's plumbing (stage
timeouts, the overall budget, results.json written stage by stage, skips counted, exit status),
not anything about a GPU.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "gpu_check.sh")
FILES = {"summary.txt", "results.json", "env.log", "build.log", "tests.log", "tests.xml", "sanitizer.log",
         "bench.log"}


def _needs():
    for tool in ("bash", "timeout"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    if importlib.util.find_spec("optdiff._cuda_emu") is None:
        pytest.skip("optdiff._cuda_emu not built (configure with -DOPTDIFF_CUDA_EMULATION=ON)")


def _run(out, **env):
    e = dict(os.environ, GPU_CHECK_DRY="1", GPU_CHECK_PEERS="0", OUT=str(out), PYTHON=sys.executable,
             OMP_NUM_THREADS="1")
    e.update(env)
    e.pop("OPTDIFF_REQUIRE_CUDA", None)
    return subprocess.run(["bash", SCRIPT], capture_output=True, text=True, env=e, timeout=240)


def test_script_parses():
    if shutil.which("bash") is None:
        pytest.skip("bash not installed")
    r = subprocess.run(["bash", "-n", SCRIPT], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_dry_run_runs_every_stage(tmp_path):
    _needs()
    r = _run(tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert set(os.listdir(tmp_path)) == FILES  # the device tool brings back at most 8 files
    data = json.loads((tmp_path / "results.json").read_text())
    stages = data["stages"]
    assert list(stages) == ["env", "build", "info", "tests", "smoke", "sanitizer", "checks", "bench", "profile"]
    assert all(s["rc"] == 0 for s in stages.values()), stages
    assert data["tests"]["passed"] > 0 and data["tests"]["failed"] == 0
    assert data["info"]["info"]["emulation"] is True
    assert data["smoke"]["smoke"]["failures"] == []
    cases = data["bench"]["cases"]
    assert {(c["n"], c["padding"]) for c in cases} == {(16, 1), (16, 2)}
    for c in cases:
        for tool in ("optdiff_fused", "optdiff_tape"):
            entry = c["train"][tool]
            assert entry["checked"] is True and entry["images_per_s"] > 0, (c["case"], tool, entry)
        assert c["ddpm"]["optdiff"]["checked"] is True
        assert c["train_floor"]["bytes"] > 0 and c["train_floor"]["fft_flops"] > 0
    ref_case = next(c for c in cases if c["batch"] == 8)
    assert ref_case["train"]["optdiff_fused"]["err_grad"] < 1e-3  # against the complex128 reference
    assert "ALL STAGES PASSED" in (tmp_path / "summary.txt").read_text()


def test_spent_budget_fails_the_run(tmp_path):
    """Stages that cannot run are failures, never silently green."""
    _needs()
    r = _run(tmp_path, GPU_CHECK_BUDGET="2")
    assert r.returncode == 1
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["stages"]["bench"]["rc"] == 124
    assert "budget" in data["stages"]["bench"]["note"]
    assert "SOME STAGE FAILED" in (tmp_path / "summary.txt").read_text()


def test_old_driver_builds_with_a_cuda12_toolkit(tmp_path):
    """Driver older than R580 (the CUDA 13 runtime's minimum): the build is configured with a
    12.x toolkit when one is installed, and the run says so (issue 22, item 2). A fake
    nvidia-smi and toolkit; the build itself then fails, which stops the run."""
    _needs()
    bin_dir, cu12 = tmp_path / "bin", tmp_path / "cuda-12.8"
    (cu12 / "bin").mkdir(parents=True)
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\ncase \"$*\" in *driver_version*) echo 570.86.15;; *) echo 'GPU 0: fake';; esac\n")
    nvcc = cu12 / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\nexit 1\n")
    for f in (smi, nvcc):
        f.chmod(0o755)
    out = tmp_path / "out"
    r = _run(out, GPU_CHECK_DRY="0", GPU_CHECK_BUILD_CAP="8", GPU_CHECK_BUILD_DIR=str(tmp_path / "build"), GPU_CHECK_CUDA12_GLOB=str(tmp_path / "cuda-12*"),
             PATH=f"{bin_dir}:{os.environ['PATH']}")
    summary = (out / "summary.txt").read_text()
    assert r.returncode == 1
    assert f"driver 570.86.15 < R580: CUDA 12 toolkit {cu12}" in summary
    assert f"-DCMAKE_CUDA_COMPILER={nvcc}" in (out / "build.log").read_text()
    data = json.loads((out / "results.json").read_text())
    assert data["stages"]["tests"]["note"] == "not run: the build failed"
