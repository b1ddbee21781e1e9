"""pytest-benchmark view of the suite: ``pytest benchmarks/ --benchmark-only``.

Small default cases, in-process (the full matrix with memory, fresh processes and the FFT floor
is run_benchmarks.py).  Every tool is checked against the complex128 reference before it is
benchmarked; nothing about timings is asserted.

Cases can be changed with environment variables (comma-separated lists):
OPTDIFF_BENCH_N (default 64,128), OPTDIFF_BENCH_PADDING (1,2), OPTDIFF_BENCH_B (16),
OPTDIFF_BENCH_L (4), OPTDIFF_BENCH_THREADS (min(2, cores)), OPTDIFF_BENCH_TOOLS
(optdiff,optdiff_tape,numpy,pyfftw,fft_floor,torch,jax; torch and JAX last, their
idle thread pools would otherwise disturb the others).
"""
from __future__ import annotations

import importlib.util
import os
import sys

import pytest

from benchmarks import common, worker


def _ints(name, default):
    return [int(x) for x in os.environ.get(name, default).split(",") if x.strip()]


NS = _ints("OPTDIFF_BENCH_N", "64,128")
PADS = _ints("OPTDIFF_BENCH_PADDING", "1,2")
BATCH = _ints("OPTDIFF_BENCH_B", "16")[0]
LAYERS = _ints("OPTDIFF_BENCH_L", "4")[0]
THREADS = _ints("OPTDIFF_BENCH_THREADS", str(min(2, os.cpu_count() or 1)))
TOOLS = os.environ.get("OPTDIFF_BENCH_TOOLS", "optdiff,optdiff_tape,numpy,pyfftw,fft_floor,torch,jax").split(",")

# the package each tool needs (skipped when it is missing)
MODULES = {"optdiff": "optdiff", "optdiff_tape": "optdiff", "numpy": "scipy", "pyfftw": "pyfftw",
           "torch": "torch", "jax": "jax", "fft_floor": "pyfftw"}

# an in-tree build of optdiff (python/optdiff/_core*.so) when it is not installed
if importlib.util.find_spec("optdiff") is None and os.path.isdir(common.PYTHON_DIR):
    sys.path.insert(0, common.PYTHON_DIR)

_REFS: dict = {}


def _reference(case):
    key = (case.n, case.padding, case.batch, case.layers)
    if key not in _REFS:
        _REFS[key] = common.reference(case)
    return _REFS[key]


def _tool(name, case):
    pytest.importorskip(MODULES[name])
    cls = worker.tool_class(name)
    tool = cls(case)
    tool.setup(*common.make_inputs(case))
    return cls, tool


CASES = [common.Case(n=n, padding=p, threads=t, batch=BATCH, layers=LAYERS)
         for n in NS for p in PADS for t in THREADS]


def _id(case):
    return f"N{case.n}-p{case.padding}-t{case.threads}-B{case.batch}-L{case.layers}"


@pytest.mark.parametrize("mode", ["forward", "train"])
@pytest.mark.parametrize("case", CASES, ids=_id)
@pytest.mark.parametrize("tool_name", [t for t in TOOLS if t in MODULES])
def test_stack(benchmark, tool_name, case, mode):
    cls, tool = _tool(tool_name, case)
    if mode not in getattr(cls, "modes", (mode,)):
        pytest.skip(f"{tool_name} times {', '.join(cls.modes)} only")
    fn = tool.forward if mode == "forward" else tool.train
    out = fn()
    if getattr(cls, "checked", True):
        # correctness before timing: the peer must compute the same thing
        errs = common.output_errors(mode, out, *_reference(case), to_numpy=tool.to_numpy)
        assert max(errs.values()) < 1e-3, errs
    benchmark.group = f"{mode} {_id(case)}"
    benchmark.extra_info.update({"images": case.batch, "tool": tool_name, **case.to_dict()})
    benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("case", CASES[:1], ids=_id)
@pytest.mark.parametrize("tool_name", [t for t in TOOLS if t in MODULES and t not in ("fft_floor", "optdiff_tape")])
def test_ddpm_step(benchmark, tool_name, case):
    _, tool = _tool(tool_name, case)
    step = common.DDPMStep.at(500)
    tool.setup_ddpm(common.ddpm_input(case), step)
    # the step minus the reference's noise-free step, over sigma, must be standard normal noise
    errs = common.ddpm_noise_errors(tool.to_numpy(tool.ddpm_step()), common.ddpm_reference_mean(case), step.sigma)
    assert max(errs.values()) < 0.02, errs
    benchmark.group = f"ddpm {_id(case)}"
    benchmark.pedantic(tool.ddpm_step, rounds=5, iterations=1, warmup_rounds=1)
