"""One tool on one case, in a fresh process: check against the float64 reference, then time.

Started by run_benchmarks.py as ``python -m benchmarks.worker SPEC.json OUT.json`` with the
thread environment already set.  The spec names the tool, the case, the modes to run and the
reference file.  Steps:

1. pin the process to the case's cores, import the tool, make the inputs;
2. baseline RSS (after imports and input allocation);
3. tool.setup (plans, models, jit) and the first forward call = the numerical check of the
   intensity; peak RSS above the baseline = forward memory;
4. reset the peak mark; first training call = the check of intensity, phase gradient and loss;
   peak RSS above the baseline = training memory;
5. timing (median over repeats, timeit-style) of every mode whose check passed; a mode whose
   check failed is reported as a mismatch and not timed;
6. optionally the DDPM sampling step (amplitude-encoded x_t -> ODU -> eps -> x_{t-1}), checked
   against the reference's noise-free step: output minus it, over sigma, must be standard
   normal noise (mean and standard deviation within 0.02 of 0 and 1).
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
import traceback

MODULES = {
    "optdiff": "benchmarks.peers_optdiff",
    "optdiff_tape": "benchmarks.peers_optdiff",
    "optdiff_npstep": "benchmarks.peers_optdiff",
    "numpy": "benchmarks.peers_numpy",
    "torch": "benchmarks.peers_torch",
    "torch_thp": "benchmarks.peers_torch",
    "pyfftw": "benchmarks.peers_pyfftw",
    "jax": "benchmarks.peers_jax",
    "fft_floor": "benchmarks.fft_floor",
}


def tool_class(name: str):
    """The class that implements tool `name` (a module may hold several tools in TOOLS)."""
    mod = importlib.import_module(MODULES[name])
    return getattr(mod, "TOOLS", {}).get(name, mod.Tool)


def _versions(tool: str) -> dict:
    out = {"python": platform.python_version()}
    import numpy
    out["numpy"] = numpy.__version__
    for mod in {"numpy": ["scipy"], "torch": ["torch"], "torch_thp": ["torch"],
                "pyfftw": ["pyfftw"], "fft_floor": ["pyfftw"], "jax": ["jax", "jaxlib"],
                "optdiff": ["optdiff"], "optdiff_tape": ["optdiff"]}.get(tool, []):
        try:
            out[mod] = importlib.import_module(mod).__version__
        except Exception:
            out[mod] = None
    if tool in ("optdiff", "optdiff_tape"):
        try:
            import datetime
            core = importlib.import_module("optdiff._core").__file__
            out["optdiff_core_built"] = datetime.datetime.fromtimestamp(
                os.path.getmtime(core)).strftime("%Y-%m-%d %H:%M:%S")
        except Exception:
            pass
    return out


def run(spec: dict) -> dict:
    from benchmarks import common
    case = common.Case.from_dict(spec["case"])
    tool_name = spec["tool"]
    res = {"tool": tool_name, "case": spec["case"], "modes": {}}
    res["cores"] = common.pin_cores(case.threads) if tool_name != "reference" else []

    import numpy as np

    if tool_name == "reference":
        t0 = time.perf_counter()
        I, g, loss = common.reference(case, workers=os.cpu_count())
        ddpm_mean = common.ddpm_reference_mean(case, workers=os.cpu_count())
        np.savez(spec["ref"], I=I, g=g, loss=np.float64(loss), ddpm_mean=ddpm_mean)
        res["seconds"] = time.perf_counter() - t0
        return res

    kwargs = {}
    if tool_name in ("pyfftw", "fft_floor"):
        kwargs = {"planner": spec.get("planner", "measure"), "wisdom": spec.get("wisdom")}
    cls = tool_class(tool_name)
    tool = cls(case, **kwargs)
    checked = getattr(cls, "checked", True)
    res["versions"] = _versions(tool_name)
    res["env"] = {k: os.environ.get(k) for k in ("THP_MEM_ALLOC_ENABLE", "OMP_NUM_THREADS")}

    field, phases, target = common.make_inputs(case)
    ref = None
    if checked and spec.get("ref"):
        with np.load(spec["ref"]) as z:
            ref = {k: z[k] for k in z.files}
    base = common.rss_bytes()
    res["baseline_rss"] = base
    can_reset = common.reset_hwm()
    res["hwm_reset"] = can_reset
    tol = spec.get("tol", 1e-3)
    timing = dict(repeats=spec.get("repeats", 5), min_time=spec.get("min_time", 0.05),
                  budget=spec.get("budget", 8.0), min_repeats=spec.get("min_repeats", 2))

    t0 = time.perf_counter()
    tool.setup(field, phases, target)
    res["setup_seconds"] = time.perf_counter() - t0

    modes = [m for m in spec.get("modes", ["forward", "train"]) if m in getattr(cls, "modes", (m,))]
    for mode in ("forward", "train"):
        if mode not in modes:
            continue
        if mode == "train" and can_reset:
            common.reset_hwm()
        m = {}
        t0 = time.perf_counter()
        out = tool.forward() if mode == "forward" else tool.train()
        m["first_call_seconds"] = time.perf_counter() - t0
        ok = True
        if ref is not None:
            errs = common.output_errors(mode, out, ref["I"], ref["g"], ref["loss"], tool.to_numpy)
            m.update(errs)
            ok = max(errs.values()) <= tol
        m["check"] = "skipped" if ref is None else ("ok" if ok else "MISMATCH")
        del out
        if ok:
            fn = tool.forward if mode == "forward" else tool.train
            m["time"] = common.time_call(fn, **timing)
        m["peak_bytes"] = common.hwm_bytes() - base
        res["modes"][mode] = m

    if "ddpm" in modes:
        step = common.DDPMStep.at(500)
        tool.setup_ddpm(common.ddpm_input(case), step)
        out = tool.ddpm_step()
        m = {}
        ok = True
        if checked:
            xo = tool.to_numpy(out)
            m["finite"] = bool(np.isfinite(xo).all())
            ok = m["finite"]
            if ref is not None and "ddpm_mean" in ref:
                m.update(common.ddpm_noise_errors(xo, ref["ddpm_mean"], step.sigma))
                ok = ok and max(m["err_noise_mean"], m["err_noise_std"]) <= spec.get("noise_tol", 0.02)
            m["check"] = "ok" if ok else "MISMATCH"
        del out
        if ok:
            m["time"] = common.time_call(tool.ddpm_step, **timing)
        res["modes"]["ddpm"] = m
    return res


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    spec_path, out_path = argv[0], argv[1]
    with open(spec_path) as fh:
        spec = json.load(fh)
    try:
        res = run(spec)
    except BaseException as exc:  # report, don't crash silently
        res = {"tool": spec.get("tool"), "case": spec.get("case"),
               "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    with open(out_path, "w") as fh:
        json.dump(res, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
