#!/usr/bin/env python
"""optdiff vs the tools a user would pick instead: one command for the whole benchmark matrix.

    python benchmarks/run_benchmarks.py            # full matrix (about 15 min on 2 idle cores)
    python benchmarks/run_benchmarks.py --quick    # small matrix (< 2 min)
    python benchmarks/run_benchmarks.py --help

Every tool runs each case in a fresh subprocess (peak RSS per tool and case, no allocator state
carried over, a memory watchdog against runaway peers).  Per case the float64 reference is
computed once; each tool's intensity, phase gradient and loss are checked against it before
anything is timed.  Results go to benchmarks/results/<tag>.md and .json and the tables are
printed.  No timing is asserted anywhere.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from benchmarks.common import PYTHON_DIR, REPO, Case, thread_env  # noqa: E402
from benchmarks.fft_floor import fft_counts  # noqa: E402

ALL_TOOLS = ["optdiff", "optdiff_tape", "numpy", "torch", "torch_thp", "pyfftw", "jax", "fft_floor"]
PEERS = ["numpy", "torch", "torch_thp", "pyfftw", "jax"]
LABELS = {"optdiff": "optdiff", "optdiff_tape": "optdiff (tape)", "optdiff_npstep": "optdiff, NumPy update",
          "numpy": "NumPy/scipy.fft", "torch": "PyTorch",
          "torch_thp": "PyTorch THP", "pyfftw": "pyFFTW", "jax": "JAX jit",
          "fft_floor": "FFT floor"}
REQUIRES = {"optdiff": "optdiff", "optdiff_tape": "optdiff", "numpy": "scipy", "torch": "torch", "torch_thp": "torch",
            "pyfftw": "pyfftw", "jax": "jax", "fft_floor": "pyfftw"}
MIB = 1024.0 * 1024.0
DAGGER = "\u2020"


# --------------------------------------------------------------------------- arguments

def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Benchmark optdiff's phase stack (forward, training step, DDPM sampling "
                    "step) against NumPy/scipy.fft, PyTorch, pyFFTW, JAX and the FFT floor.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small matrix: N 64 128, threads 2, fewer repeats, no THP variant, "
                        "short scaling sweep (< 2 min)")
    p.add_argument("--n", type=int, nargs="+", default=None, help="field sizes N (default 64 128 256 300)")
    p.add_argument("--padding", type=int, nargs="+", default=None, choices=[1, 2],
                   help="1 periodic, 2 zero-padded linear convolution (default 1 2)")
    p.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts (default 1 2)")
    p.add_argument("--batch", "-B", type=int, default=64, help="batch size B")
    p.add_argument("--layers", "-L", type=int, default=4, help="phase layers L (L+1 propagations)")
    p.add_argument("--repeats", type=int, default=None, help="max timed repeats per measurement (default 7, quick 5)")
    p.add_argument("--min-repeats", type=int, default=None,
                   help="repeats kept even past the time budget (default 2)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds per measurement before repeats are cut to --min-repeats (default 3, quick 1)")
    p.add_argument("--min-time", type=float, default=0.05, help="seconds per repeat (inner loop grows to reach it)")
    p.add_argument("--peers", nargs="+", default=None, metavar="TOOL",
                   help=f"tools to run, from {' '.join(ALL_TOOLS)} (optdiff is always included; "
                        "default: all installed; quick: all but torch_thp)")
    p.add_argument("--no-ddpm", action="store_true", help="skip the DDPM sampling-step timing")
    p.add_argument("--ddpm-threads", type=int, nargs="+", default=None,
                   help="thread counts for which the DDPM step is timed (default: the largest)")
    p.add_argument("--thp-threads", type=int, nargs="+", default=None,
                   help="thread counts for which the PyTorch THP variant runs (default: the largest)")
    p.add_argument("--no-scaling", action="store_true", help="skip the B and L scaling sweeps")
    p.add_argument("--scaling-n", type=int, default=None, help="N of the B/L sweeps (default 128, quick 64)")
    p.add_argument("--scaling-batches", type=int, nargs="+", default=None, help="B sweep (default 1 4 16 64)")
    p.add_argument("--scaling-layers", type=int, nargs="+", default=None, help="L sweep (default 1 2 4 8)")
    p.add_argument("--scaling-tools", nargs="+", default=["optdiff", "fft_floor"], help="tools in the sweeps")
    p.add_argument("--floor-planner", default="measure", choices=["estimate", "measure", "patient", "exhaustive"],
                   help="FFTW planner effort of the FFT floor (the pyFFTW peer always uses measure)")
    p.add_argument("--tol", type=float, default=1e-3, help="relative tolerance of the numerical check")
    p.add_argument("--mem-limit-gb", type=float, default=18.0, help="kill a worker whose RSS exceeds this")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before a worker is killed")
    p.add_argument("--out-dir", default=os.path.join(REPO, "benchmarks", "results"), help="where results go")
    p.add_argument("--tag", default=None, help="results file name (default 'quick' or 'full')")
    p.add_argument("--python", default=sys.executable, help="interpreter for the workers")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each worker, wait up to this long until other processes leave "
                        "`threads` cores free")
    p.add_argument("--retry-perturbed", type=int, default=0, metavar="K",
                   help="re-run a tool up to K times when other processes left it fewer free cores "
                        "than its threads (+0.2) during its run (keeps the least perturbed run)")
    p.add_argument("--passes", type=int, default=1, metavar="K",
                   help="run the whole matrix K times, one pass after another, and report per tool "
                        "and case the median of the K medians (steadier ratios on shared or "
                        "virtual machines whose speed drifts over minutes)")
    p.add_argument("--from-json", metavar="PATH",
                   help="re-render the tables of an earlier run's JSON (no benchmarking)")
    p.add_argument("--verbose", "-v", action="store_true", help="print each worker's stderr tail")
    a = p.parse_args(argv)

    if a.quick:
        a.n = a.n or [64, 128]
        a.padding = a.padding or [1, 2]
        a.threads = a.threads or [2]
        a.repeats = a.repeats or 5
        a.budget = a.budget if a.budget is not None else 1.0
        a.min_repeats = a.min_repeats or 2
        a.scaling_n = a.scaling_n or 64
        a.scaling_batches = a.scaling_batches or [16, 64]
        a.scaling_layers = a.scaling_layers or [2, 4]
        default_tools = [t for t in ALL_TOOLS if t != "torch_thp"]
    else:
        a.n = a.n or [64, 128, 256, 300]
        a.padding = a.padding or [1, 2]
        a.threads = a.threads or [1, 2]
        a.repeats = a.repeats or 7
        a.budget = a.budget if a.budget is not None else 3.0
        a.min_repeats = a.min_repeats or 2
        a.scaling_n = a.scaling_n or 128
        a.scaling_batches = a.scaling_batches or [1, 4, 16, 64]
        a.scaling_layers = a.scaling_layers or [1, 2, 4, 8]
        default_tools = list(ALL_TOOLS)
    tools = a.peers or default_tools
    bad = [t for t in tools if t not in ALL_TOOLS]
    if bad:
        p.error(f"unknown tool(s) {bad}; choose from {ALL_TOOLS}")
    if "optdiff" not in tools:
        tools = ["optdiff"] + tools
    a.tools = [t for t in ALL_TOOLS if t in tools]
    a.ddpm_threads = a.ddpm_threads or [max(a.threads)]
    a.thp_threads = a.thp_threads or [max(a.threads)]
    a.tag = a.tag or ("quick" if a.quick else "full")
    return a


# --------------------------------------------------------------------------- environment

def optdiff_pythonpath() -> list[str]:
    """Where `import optdiff` should come from: the installed package, else the in-tree build."""
    spec = importlib.util.find_spec("optdiff")
    if spec is not None and spec.origin and not spec.origin.startswith(PYTHON_DIR):
        return []
    return [PYTHON_DIR]


def available(module: str) -> bool:
    if module == "optdiff":  # a compiled core may be missing or stale: really import it
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(optdiff_pythonpath() + [env.get("PYTHONPATH", "")])
        r = subprocess.run([sys.executable, "-c", "import optdiff; optdiff.PhaseStack"],
                           cwd=REPO, env=env, capture_output=True)
        return r.returncode == 0
    return importlib.util.find_spec(module) is not None


def machine_info() -> dict:
    info = {"date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as fh:
            info["mem_total_gib"] = round(int(fh.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return info


# --------------------------------------------------------------------------- workers

def _child_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def allowed_load(threads: int) -> float:
    """Other processes' CPU use (cores) that still leaves `threads` cores free, plus a margin."""
    return 0.2 + max(0, (os.cpu_count() or 1) - threads)


class Runner:
    def __init__(self, args, workdir: str):
        self.a = args
        self.workdir = workdir
        self.wisdom = os.path.join(workdir, "fftw_wisdom")
        self.count = 0
        self.t0 = time.perf_counter()
        extra = [REPO] + self._snapshot(optdiff_pythonpath())
        old = os.environ.get("PYTHONPATH")
        self.pythonpath = os.pathsep.join(extra + ([old] if old else []))

    def _snapshot(self, paths: list[str]) -> list[str]:
        """Copy an in-tree optdiff (resolving the _core symlink) so a rebuild during the run
        cannot change or break the module under the workers' feet."""
        out = []
        for p in paths:
            src = os.path.join(p, "optdiff")
            if not os.path.isdir(src):
                out.append(p)
                continue
            dst_root = os.path.join(self.workdir, "optdiff_snapshot")
            shutil.copytree(src, os.path.join(dst_root, "optdiff"), symlinks=False,
                            ignore=shutil.ignore_patterns("__pycache__"))
            out.append(dst_root)
        return out

    def run(self, tool: str, case: Case, modes=("forward", "train"), ref: str | None = None) -> dict:
        """Run a worker; re-run it (up to --retry-perturbed times, after waiting for quiet) when
        other processes used more than 0.2 cores meanwhile, keeping the least perturbed run."""
        best = None
        ok_load = allowed_load(case.threads)
        for attempt in range(1 + (self.a.retry_perturbed if tool != "reference" else 0)):
            if self.a.wait_quiet > 0 and tool != "reference":
                common.wait_quiet(self.a.wait_quiet if attempt == 0 else max(self.a.wait_quiet, 30.0),
                           threshold=ok_load - 0.05)
            res = self._run_once(tool, case, modes, ref)
            res["attempts"] = attempt + 1
            res["perturbed"] = res["background_load"] > ok_load
            if best is None or ("error" not in res and
                                res["background_load"] < best.get("background_load", 1e9)):
                best = res
            if "error" in res or not res["perturbed"]:
                break
        return best

    def _run_once(self, tool: str, case: Case, modes, ref) -> dict:
        a = self.a
        self.count += 1
        spec = {"tool": tool, "case": case.to_dict(), "modes": list(modes), "ref": ref,
                "repeats": a.repeats, "min_repeats": a.min_repeats, "budget": a.budget,
                "min_time": a.min_time, "tol": a.tol, "wisdom": self.wisdom,
                "planner": a.floor_planner if tool == "fft_floor" else "measure"}
        tag = f"{self.count:04d}_{tool}_{case.key()}"
        spec_path = os.path.join(self.workdir, tag + ".spec.json")
        out_path = os.path.join(self.workdir, tag + ".out.json")
        err_path = os.path.join(self.workdir, tag + ".stderr")
        with open(spec_path, "w") as fh:
            json.dump(spec, fh)
        env = thread_env(case.threads if tool != "reference" else (os.cpu_count() or 1))
        env["PYTHONPATH"] = self.pythonpath
        env["JAX_PLATFORMS"] = "cpu"
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if tool == "torch_thp":
            env["THP_MEM_ALLOC_ENABLE"] = "1"
        else:
            env.pop("THP_MEM_ALLOC_ENABLE", None)
        limit = a.mem_limit_gb * 1024 ** 3
        busy0, cpu0 = common.cpu_busy_seconds(), common.own_cpu_seconds()
        t0 = time.perf_counter()
        status, peak_seen = "ok", 0
        with open(err_path, "w") as errf:
            proc = subprocess.Popen([a.python, "-m", "benchmarks.worker", spec_path, out_path],
                                    cwd=REPO, env=env, stdout=errf, stderr=errf)
            while proc.poll() is None:
                rss = _child_rss(proc.pid)
                peak_seen = max(peak_seen, rss)
                if rss > limit:
                    proc.kill()
                    status = f"killed: RSS above {a.mem_limit_gb:g} GB"
                elif time.perf_counter() - t0 > a.timeout:
                    proc.kill()
                    status = f"killed: timeout {a.timeout:g} s"
                time.sleep(0.05)
        wall = time.perf_counter() - t0
        # cores' worth of CPU used by other processes while this worker ran (0 = quiet machine)
        other = max(0.0, (common.cpu_busy_seconds() - busy0) - (common.own_cpu_seconds() - cpu0)) / wall
        res = None
        if status == "ok" and os.path.exists(out_path):
            with open(out_path) as fh:
                res = json.load(fh)
        if res is None:
            res = {"tool": tool, "case": case.to_dict(),
                   "error": status if status != "ok" else f"worker exited {proc.returncode}"}
        res["wall_seconds"] = wall
        res["background_load"] = round(other, 3)
        if "error" in res or a.verbose:
            with open(err_path) as fh:
                tail = fh.read()[-1500:]
            if "error" in res:
                res["stderr_tail"] = tail
            if a.verbose and tail.strip():
                print(tail.rstrip(), flush=True)
        self._progress(tool, case, res)
        return res

    def _progress(self, tool, case, res):
        el = time.perf_counter() - self.t0
        msg = f"[{el:7.1f}s] {tool:10s} N={case.n:<4d} p={case.padding} t={case.threads} " \
              f"B={case.batch} L={case.layers}  ({res['wall_seconds']:.1f}s)"
        if res.get("background_load", 0) > allowed_load(case.threads):
            msg += f" [other load {res['background_load']:.1f} cores]"
        if "error" in res:
            msg += f"  ERROR {res['error']}"
        else:
            parts = []
            for mode, m in res.get("modes", {}).items():
                if "time" in m:
                    parts.append(f"{mode} {m['time']['median'] * 1e3:.1f} ms")
                if m.get("check") == "MISMATCH":
                    parts.append(f"{mode} MISMATCH")
            msg += "  " + ", ".join(parts)
        print(msg, flush=True)


# --------------------------------------------------------------------------- the matrix

def run_all(a) -> dict:
    workdir = tempfile.mkdtemp(prefix="optdiff-bench-")
    runner = Runner(a, workdir)
    results = {"matrix": [], "scaling": []}
    missing = [t for t in a.tools if not available(REQUIRES[t])]
    if "optdiff" in missing:
        raise SystemExit("optdiff is not importable (build it, or set PYTHONPATH to python/)")
    tools = [t for t in a.tools if t not in missing]
    results["skipped_tools"] = missing
    for t in missing:
        print(f"note: {t} skipped ({REQUIRES[t]} not installed)")
    refs = {}
    try:
        for k in range(max(1, a.passes)):
            if a.passes > 1:
                print(f"== pass {k + 1} of {a.passes}", flush=True)
            for n in a.n:
                for pad in a.padding:
                    base = Case(n=n, padding=pad, threads=1, batch=a.batch, layers=a.layers)
                    if base.key() not in refs:
                        ref = os.path.join(workdir, f"ref_{base.key()}.npz")
                        rr = runner.run("reference", base, ref=ref)
                        if "error" in rr:
                            print(f"warning: no reference for N={n} padding {pad}: tools are timed unchecked")
                            ref = None
                        refs[base.key()] = ref
                    ref = refs[base.key()]
                    for thr in a.threads:
                        case = Case(n=n, padding=pad, threads=thr, batch=a.batch, layers=a.layers)
                        modes = ["forward", "train"]
                        if not a.no_ddpm and thr in a.ddpm_threads:
                            modes.append("ddpm")
                        for tool in tools:
                            if tool == "torch_thp" and thr not in a.thp_threads:
                                continue
                            results["matrix"].append(runner.run(tool, case, modes, ref))
        results["matrix"] = merge_passes(results["matrix"])
        results["passes"] = max(1, a.passes)
        if not a.no_scaling:
            thr = max(a.threads)
            pad = max(a.padding)
            points = [("B", b, Case(n=a.scaling_n, padding=pad, threads=thr, batch=b, layers=a.layers))
                      for b in a.scaling_batches if b != a.batch]
            points += [("L", L, Case(n=a.scaling_n, padding=pad, threads=thr, batch=a.batch, layers=L))
                       for L in a.scaling_layers if L != a.layers]
            stools = [t for t in a.scaling_tools if t in tools]
            for axis, val, case in points:
                ref = os.path.join(workdir, f"ref_{case.key()}.npz")
                rr = runner.run("reference", case, ref=ref)
                for tool in stools:
                    r = runner.run(tool, case, ("forward", "train"), None if "error" in rr else ref)
                    r["axis"], r["value"] = axis, val
                    results["scaling"].append(r)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["total_seconds"] = time.perf_counter() - runner.t0
    return results


def merge_passes(runs: list) -> list:
    """One result per (tool, case) from several passes: per mode, the median of the passes'
    medians (each pass's median kept as `pass_medians`); perturbed when most passes were."""
    groups = {}
    for r in runs:
        groups.setdefault((r.get("tool"), Case.from_dict(r["case"]).key()), []).append(r)
    merged = []
    for rs in groups.values():
        good = [r for r in rs if "error" not in r]
        if len(rs) == 1 or not good:
            merged.append(rs[0])
            continue
        out = json.loads(json.dumps(good[0]))  # deep copy
        for mode, m in out.get("modes", {}).items():
            meds = [r["modes"][mode]["time"]["median"] for r in good
                    if "time" in r.get("modes", {}).get(mode, {})]
            if meds and "time" in m:
                m["time"]["median"] = statistics.median(meds)
                m["time"]["pass_medians"] = meds
            peaks = [r["modes"][mode].get("peak_bytes") for r in good if mode in r.get("modes", {})]
            peaks = [p for p in peaks if p is not None]
            if peaks:
                m["peak_bytes"] = max(peaks)
        out["passes"] = len(good)
        out["perturbed"] = sum(bool(r.get("perturbed")) for r in good) * 2 > len(good)
        out["background_load"] = statistics.median(r.get("background_load", 0.0) for r in good)
        merged.append(out)
    return merged


# --------------------------------------------------------------------------- tables

def _median(r, mode):
    m = r.get("modes", {}).get(mode, {})
    return m.get("time", {}).get("median")


def _cell_status(r, mode):
    if r is None:
        return "-"
    if "error" in r:
        e = r["error"]
        return "OOM" if "RSS" in e else ("timeout" if "timeout" in e else "error")
    m = r.get("modes", {}).get(mode)
    if m is None:
        return "-"
    if m.get("check") == "MISMATCH":
        return "MISMATCH"
    return None


def _run_status(d: dict):
    """A tool's error status in a row (OOM, timeout, MISMATCH...), None when it ran cleanly;
    "-" (a mode the tool does not run) is not an error."""
    return next((x for x in (d.get("forward_status"), d.get("train_status")) if x and x != "-"), None)


def _fmt_mib(x):
    return "-" if x is None else f"{x:.0f}"


def _fmt(x, digits=3):
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.{digits - 1}f}" if x >= 1 else f"{x:.{digits}g}"


def summarize(a, results) -> dict:
    """Per case: images/s, speed-ups, floor ratios, memory, check errors."""
    by_case = {}
    for r in results["matrix"]:
        c = Case.from_dict(r["case"])
        by_case.setdefault((c.n, c.padding, c.threads), {})[r["tool"]] = r
    rows = []
    for (n, pad, thr), tr in sorted(by_case.items()):
        case = Case(n=n, padding=pad, threads=thr, batch=a.batch, layers=a.layers)
        row = {"n": n, "padding": pad, "threads": thr, "grid": case.grid, "tools": {}}
        for tool, r in tr.items():
            d = {"perturbed": bool(r.get("perturbed"))}
            for mode in ("forward", "train", "ddpm"):
                t = _median(r, mode)
                d[mode + "_s"] = t
                d[mode + "_img_s"] = (a.batch / t) if t else None
                d[mode + "_status"] = _cell_status(r, mode)
                m = r.get("modes", {}).get(mode, {})
                if "peak_bytes" in m:
                    d[mode + "_peak_mib"] = m["peak_bytes"] / MIB
                for k in ("err_I", "err_grad", "err_loss"):
                    if k in m:
                        d[f"{mode}_{k}"] = m[k]
            row["tools"][tool] = d
        od = row["tools"].get("optdiff", {})
        for mode in ("forward", "train", "ddpm"):
            to = od.get(mode + "_s")
            row[mode + "_speedup"] = {}
            for tool in PEERS:
                tp = row["tools"].get(tool, {}).get(mode + "_s")
                row[mode + "_speedup"][tool] = (tp / to) if (tp and to) else None
            fl = row["tools"].get("fft_floor", {}).get(mode + "_s")
            row[mode + "_vs_floor"] = (to / fl) if (to and fl) else None
        fl_train = row["tools"].get("fft_floor", {}).get("train_s")
        if fl_train and od.get("train_s"):
            cnt = fft_counts(case)
            row["train_vs_floor_min"] = od["train_s"] / (fl_train * cnt["train_min"] / cnt["train"])
        rows.append(row)
    return {"rows": rows}


def markdown(a, info, results, summary) -> str:
    tools = [t for t in a.tools if t not in results.get("skipped_tools", [])]
    peers = [t for t in PEERS if t in tools]
    rows = summary["rows"]
    L, B = a.layers, a.batch
    out = []
    out.append(f"# optdiff benchmark ({a.tag})\n")
    out.append(f"{info.get('date') or _dt.datetime.now().strftime('%Y-%m-%d %H:%M')} on {info.get('cpu', '?')}, "
               f"{info.get('cpus')} cores, {info.get('mem_total_gib', '?')} GiB; Python {info['python']}; "
               f"load average at start {info['loadavg_start'][0]:.2f}, at end {info['loadavg_end'][0]:.2f}.\n")
    loads = [r.get("background_load", 0.0) for r in results["matrix"] + results.get("scaling", [])
             if r.get("tool") != "reference"]
    if loads:
        runs = [r for r in results["matrix"] + results.get("scaling", []) if r.get("tool") != "reference"]
        busy = [r for r in runs if r.get("perturbed")]
        out.append(f"CPU used by other processes while tools ran: mean {sum(loads) / len(loads):.2f}, "
                   f"max {max(loads):.2f} cores; {len(busy)} of {len(runs)} runs had fewer free cores "
                   f"than threads (+0.2 margin)"
                   + (": " + ", ".join(f"{r['tool']} N={r['case']['n']} p={r['case']['padding']} "
                                       f"t={r['case']['threads']}" for r in busy[:12])
                      + (" ..." if len(busy) > 12 else "") + " - their timings are perturbed"
                      if busy else "") + ".\n")
    spreads = sorted(max(pm) / min(pm) for r in results["matrix"] for m in r.get("modes", {}).values()
                     for pm in [m.get("time", {}).get("pass_medians")] if pm and min(pm) > 0)
    if spreads:
        out.append(f"Drift between passes (slowest pass / fastest pass of the same tool and case): "
                   f"median {statistics.median(spreads):.2f}, 90th percentile "
                   f"{spreads[int(0.9 * (len(spreads) - 1))]:.2f}, worst {spreads[-1]:.2f} over "
                   f"{len(spreads)} timings.\n")
    vers = {}
    for r in results["matrix"]:
        vers.update({k: v for k, v in (r.get("versions") or {}).items() if v})
    out.append("Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(vers.items())) + ".\n")
    out.append(f"Phase stack: L={L} masks, input hop + {L} hops = {L + 1} angular-spectrum "
               f"propagations, wavelength 850 nm, pitch 9.2 um, distance 34.2 mm, B={B}, complex64. "
               f"Training step = forward + loss mean((I-target)^2) + gradient w.r.t. all phases. "
               f"Medians of up to {a.repeats} repeats (at least {a.min_repeats}) after warm-up; "
               f"every tool in a fresh process pinned to `threads` cores"
               + (f"; the whole matrix ran {results['passes']} times, one pass after another, and each "
                  f"cell is the median of its passes' medians" if results.get("passes", 1) > 1 else "")
               + f". FFT floor = "
               f"{2 * (L + 1)} (forward) / {4 * (L + 1)} (training) batched in-place pyFFTW "
               f"{a.floor_planner.upper()} FFTs of [B, G, G], G = N x padding. "
               f"optdiff's training step is the fused `PhaseStack.mse_loss_and_grad`; "
               f"optdiff (tape) is the general path any loss takes (`forward_train`, the loss in NumPy, "
               f"`backward`).\n")
    if results.get("skipped_tools"):
        out.append(f"Not installed, skipped: {', '.join(results['skipped_tools'])}.\n")
    out.append(f"{DAGGER} = the run was perturbed: other processes left it fewer free cores than its "
               f"threads (+0.2); a ratio is marked when either side is.\n")

    def cell(row, tool, mode, key):
        d = row["tools"].get(tool)
        if d is None:
            return "-"
        st = d.get(mode + "_status")
        if st:
            return st
        v = d.get(mode + key)
        return _fmt(v) + (DAGGER if v is not None and d.get("perturbed") else "")

    def pert(row, *tools_):
        return DAGGER if any(row["tools"].get(t, {}).get("perturbed") for t in tools_) else ""

    for mode, title in (("forward", "Forward (images/s, higher is better)"),
                        ("train", "Training step (images/s, higher is better)")):
        out.append(f"\n## {title}\n")
        hdr = ["N", "pad", "thr"] + [LABELS[t] for t in tools] + \
              ["optdiff vs best peer", "optdiff / floor (time)"]
        out.append("| " + " | ".join(hdr) + " |")
        out.append("|" + "---|" * len(hdr))
        for row in rows:
            cells = [str(row["n"]), str(row["padding"]), str(row["threads"])]
            best = None
            for t in tools:
                c = cell(row, t, mode, "_img_s")
                cells.append(f"**{c}**" if t == "optdiff" else c)
            sp = {k: v for k, v in row[mode + "_speedup"].items() if v is not None}
            if sp:
                best = min(sp, key=sp.get)
                cells.append(f"{sp[best]:.2f}x ({LABELS[best]}){pert(row, 'optdiff', best)}")
            else:
                cells.append("-")
            vf = row.get(mode + "_vs_floor")
            cells.append(f"{vf:.2f}{pert(row, 'optdiff', 'fft_floor')}" if vf else "-")
            out.append("| " + " | ".join(cells) + " |")

    out.append("\n## Speed-up of optdiff over each peer (peer time / optdiff time; forward / training)\n")
    hdr = ["N", "pad", "thr"] + [LABELS[t] for t in peers]
    if "fft_floor" in tools:
        hdr += ["optdiff/floor fwd", "optdiff/floor train", f"train vs {2 * (L + 1) + 2 * L}-FFT floor"]
    out.append("| " + " | ".join(hdr) + " |")
    out.append("|" + "---|" * len(hdr))
    for row in rows:
        cells = [str(row["n"]), str(row["padding"]), str(row["threads"])]
        for t in peers:
            f, tr = row["forward_speedup"].get(t), row["train_speedup"].get(t)
            cells.append(f"{_fmt(f)} / {_fmt(tr)}" + (pert(row, "optdiff", t) if f or tr else ""))
        if "fft_floor" in tools:
            for k in ("forward_vs_floor", "train_vs_floor", "train_vs_floor_min"):
                v = row.get(k)
                cells.append(f"{v:.2f}{pert(row, 'optdiff', 'fft_floor')}" if v else "-")
        out.append("| " + " | ".join(cells) + " |")

    out.append("\n## Peak memory above baseline (MiB; forward / training; fresh process, VmHWM)\n")
    mt = [t for t in tools]
    hdr = ["N", "pad", "thr"] + [LABELS[t] for t in mt]
    out.append("| " + " | ".join(hdr) + " |")
    out.append("|" + "---|" * len(hdr))
    for row in rows:
        cells = [str(row["n"]), str(row["padding"]), str(row["threads"])]
        for t in mt:
            d = row["tools"].get(t)
            if d is None:
                cells.append("-")
                continue
            st = _run_status(d)
            f, tr = d.get("forward_peak_mib"), d.get("train_peak_mib")
            if st and f is None and tr is None:
                cells.append(st)
                continue
            cells.append(f"{_fmt_mib(f)} / {_fmt_mib(tr)}" if f is not None or tr is not None else "-")
        out.append("| " + " | ".join(cells) + " |")

    ddpm_rows = [r for r in rows if any(r["tools"].get(t, {}).get("ddpm_s") for t in tools)]
    if ddpm_rows:
        out.append(f"\n## DDPM sampling step (ms per step of a batch of {B}: amplitude-encode x_t, "
                   f"ODU forward, eps = a I + b, x_(t-1) update with fresh noise)\n")
        hdr = ["N", "pad", "thr"] + [LABELS[t] for t in tools] + ["optdiff vs best peer"]
        out.append("| " + " | ".join(hdr) + " |")
        out.append("|" + "---|" * len(hdr))
        for row in ddpm_rows:
            cells = [str(row["n"]), str(row["padding"]), str(row["threads"])]
            for t in tools:
                s = row["tools"].get(t, {}).get("ddpm_s")
                v = (_fmt(s * 1e3) + pert(row, t)) if s else (row["tools"].get(t, {}).get("ddpm_status") or "-")
                cells.append(f"**{v}**" if t == "optdiff" else v)
            sp = {k: v for k, v in row["ddpm_speedup"].items() if v is not None}
            cells.append(f"{min(sp.values()):.2f}x ({LABELS[min(sp, key=sp.get)]})"
                         f"{pert(row, 'optdiff', min(sp, key=sp.get))}" if sp else "-")
            out.append("| " + " | ".join(cells) + " |")

    out.append(f"\n## Numerical check (largest relative error vs the complex128 reference over "
               f"intensity, phase gradient and loss; tolerance {a.tol:g})\n")
    hdr = ["N", "pad", "thr"] + [LABELS[t] for t in tools if t != "fft_floor"]
    out.append("| " + " | ".join(hdr) + " |")
    out.append("|" + "---|" * len(hdr))
    for row in rows:
        cells = [str(row["n"]), str(row["padding"]), str(row["threads"])]
        for t in tools:
            if t == "fft_floor":
                continue
            d = row["tools"].get(t)
            errs = [v for k, v in (d or {}).items() if "_err_" in k and v is not None]
            st = _run_status(d or {})
            cells.append(st if st and st != "MISMATCH" else
                         (f"{max(errs):.1e}" + (" MISMATCH" if st else "") if errs else "-"))
        out.append("| " + " | ".join(cells) + " |")

    out.append(scaling_markdown(a, results, rows, tools))
    out.append(f"\nTotal benchmark time {results['total_seconds'] / 60:.1f} min.\n")
    return "\n".join(out) + "\n"


def scaling_markdown(a, results, rows, tools) -> str:
    out = ["\n## Scaling (optdiff; ms per batch, forward / training)\n"]
    pad = max(a.padding)
    thr = max(a.threads)
    # N: from the matrix
    out.append(f"Time vs N (B={a.batch}, L={a.layers}, padding {pad}, threads {thr}); "
               f"ms per image in brackets:\n")
    out.append("| N | grid | optdiff fwd | optdiff train | floor fwd | floor train |")
    out.append("|---|---|---|---|---|---|")
    for row in rows:
        if row["padding"] != pad or row["threads"] != thr:
            continue
        o, f = row["tools"].get("optdiff", {}), row["tools"].get("fft_floor", {})

        def ms(d, k):
            s = d.get(k)
            mark = DAGGER if d.get("perturbed") else ""
            return f"{s * 1e3:.1f} ({s * 1e3 / a.batch:.2f}){mark}" if s else "-"
        out.append(f"| {row['n']} | {row['grid']} | {ms(o, 'forward_s')} | {ms(o, 'train_s')} | "
                   f"{ms(f, 'forward_s')} | {ms(f, 'train_s')} |")
    # threads: from the matrix
    if len(a.threads) > 1:
        t1, t2 = min(a.threads), max(a.threads)
        out.append(f"\nThreads: speed-up of {t2} threads over {t1} (time at {t1} / time at {t2}):\n")
        hdr = ["N", "pad"] + [f"{LABELS[t]} fwd / train" for t in tools]
        out.append("| " + " | ".join(hdr) + " |")
        out.append("|" + "---|" * len(hdr))
        idx = {(r["n"], r["padding"], r["threads"]): r for r in rows}
        for (n, p, t) in sorted(idx):
            if t != t1 or (n, p, t2) not in idx:
                continue
            r1, r2 = idx[(n, p, t1)], idx[(n, p, t2)]
            cells = [str(n), str(p)]
            for tool in tools:
                v = []
                for mode in ("forward", "train"):
                    x = r1["tools"].get(tool, {}).get(mode + "_s")
                    y = r2["tools"].get(tool, {}).get(mode + "_s")
                    mark = DAGGER if (r1["tools"].get(tool, {}).get("perturbed")
                                      or r2["tools"].get(tool, {}).get("perturbed")) else ""
                    v.append(f"{x / y:.2f}{mark}" if x and y else "-")
                cells.append(" / ".join(v))
            out.append("| " + " | ".join(cells) + " |")
    sc = results.get("scaling", [])
    for axis, name in (("B", "batch B"), ("L", "layers L")):
        pts = {}
        for r in sc:
            if r.get("axis") == axis:
                pts.setdefault(r["value"], {})[r["tool"]] = r
        # the matrix point with the default B / L at the sweep's N
        for row in rows:
            if row["n"] == a.scaling_n and row["padding"] == pad and row["threads"] == thr:
                v = a.batch if axis == "B" else a.layers
                pts.setdefault(v, {})
                for tool in ("optdiff", "fft_floor"):
                    d = row["tools"].get(tool)
                    if d and tool not in pts[v]:
                        pts[v][tool] = {"_row": d}
        if len(pts) < 2:
            continue
        stools = [t for t in ("optdiff", "fft_floor") if any(t in p for p in pts.values())]
        out.append(f"\nTime vs {name} (N={a.scaling_n}, padding {pad}, threads {thr}"
                   f"{', L=' + str(a.layers) if axis == 'B' else ', B=' + str(a.batch)}):\n")
        hdr = [axis] + [f"{LABELS[t]} fwd ms" for t in stools] + [f"{LABELS[t]} train ms" for t in stools]
        if axis == "B":
            hdr.append("optdiff train images/s")
        out.append("| " + " | ".join(hdr) + " |")
        out.append("|" + "---|" * len(hdr))
        for v in sorted(pts):
            cells = [str(v)]
            vals = {}
            for mode in ("forward", "train"):
                for t in stools:
                    r = pts[v].get(t)
                    mark = ""
                    if r is None:
                        s = None
                    elif "_row" in r:
                        s = r["_row"].get(mode + "_s")
                        mark = DAGGER if r["_row"].get("perturbed") else ""
                    else:
                        mark = DAGGER if r.get("perturbed") else ""
                        s = _median(r, mode)
                        st = _cell_status(r, mode)
                        if st:
                            cells.append(st)
                            continue
                    vals[(t, mode)] = s
                    cells.append(f"{s * 1e3:.1f}{mark}" if s else "-")
            if axis == "B":
                s = vals.get(("optdiff", "train"))
                cells.append(f"{v / s:.0f}" if s else "-")
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def rerender(path: str, out_dir: str | None, tag: str | None) -> int:
    with open(path) as fh:
        data = json.load(fh)
    a = argparse.Namespace(**data["args"])
    if tag:
        a.tag = tag
    info, results = data["machine"], data["results"]
    info.setdefault("date", _dt.datetime.fromtimestamp(os.path.getmtime(path)).strftime("%Y-%m-%d %H:%M"))
    summary = summarize(a, results)
    md = markdown(a, info, results, summary)
    base = os.path.join(out_dir or os.path.dirname(os.path.abspath(path)), a.tag)
    with open(base + ".md", "w") as fh:
        fh.write(md)
    print(md)
    print(f"wrote {base}.md")
    return 0


def main(argv=None):
    a = parse_args(argv)
    if a.from_json:
        return rerender(a.from_json, None, a.tag if "--tag" in (argv or sys.argv) else None)
    info = machine_info()
    print(f"optdiff benchmark '{a.tag}': N {a.n}, padding {a.padding}, threads {a.threads}, "
          f"B={a.batch}, L={a.layers}, tools {a.tools}", flush=True)
    if info["loadavg_start"][0] > 0.5:
        print(f"warning: load average {info['loadavg_start'][0]:.2f}: other work on this machine "
              "will perturb the timings", flush=True)
    results = run_all(a)
    info["loadavg_end"] = os.getloadavg()
    summary = summarize(a, results)
    md = markdown(a, info, results, summary)
    os.makedirs(a.out_dir, exist_ok=True)
    base = os.path.join(a.out_dir, a.tag)
    with open(base + ".md", "w") as fh:
        fh.write(md)
    with open(base + ".json", "w") as fh:
        json.dump({"args": {k: v for k, v in vars(a).items()}, "machine": info,
                   "summary": summary, "results": results}, fh, indent=1)
    print()
    print(md)
    print(f"wrote {base}.md and {base}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
