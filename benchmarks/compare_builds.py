"""Two builds of optdiff, same machine, same run: the training step's after/before time ratio.

A change that must not slow optdiff down ("within 3% of before") cannot be judged from two
benchmark runs made at different times on a machine whose speed drifts. This script times the
same training step with two Python interpreters (two venvs, each with its own optdiff build)
in many short, alternating fresh processes: every round runs before then after, the next round
after then before (A B B A ...), and each round's after/before ratio is taken between two
processes that ran back to back, so the drift cancels out of the ratio.

    python benchmarks/compare_builds.py --before /work/before/.venv --after .venv

What is timed, per cell (N, padding, threads): ``PhaseStack.mse_loss_and_grad(field, phases,
target, return_intensity=True)``, the fused training step that ``interleaved.py`` and
``run_benchmarks.py`` time as "optdiff": B=64 complex64 fields, L=4 masks + input hop, 850 nm,
9.2 um pitch, 34.2 mm hops, the inputs of ``benchmarks/common.make_inputs``. Each process is
pinned to ``threads`` cores, runs every (N, padding) cell once after a warm-up call, and
reports the median (``--stat min``: the fastest) of as many calls as fill ``--min-time``
seconds (at least 3). The report: per cell, the median over rounds of the after/before ratio
with its interquartile range, and the overall median over every cell and round. Ratio < 1:
after is faster.

Other processes: the CPU time they take while a pair runs is measured (/proc/stat); before each
pair the script waits up to ``--wait-quiet`` seconds for them to go idle, re-runs a disturbed
pair (``--retries``, keeping the least disturbed), and reports how many pairs were disturbed and
the overall median of the quiet pairs alone. On a shared machine, use more rounds.

The timing code is this file itself, run by each interpreter in isolated mode (``python -I``:
no PYTHONPATH, no script folder on the path), so each side imports its own installed optdiff;
``--before-path``/``--after-path`` put a folder first on a side's path instead (an in-tree
build's ``python/``). The header names the optdiff each side loaded. Both sides must compute
the same loss (checked per cell). Needs only NumPy and optdiff in each interpreter.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

WAVELENGTH, PITCH, DISTANCE = 850e-9, 9.2e-6, 34.2e-3
SEED = 1234  # benchmarks/common.Case.seed: the same inputs as the other benchmarks


# --------------------------------------------------------------------------- child (one build)

def make_inputs(n: int, batch: int, layers: int):
    """The inputs of benchmarks/common.make_inputs (complex64), repeated here so that the
    child needs nothing but NumPy and optdiff."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    field = np.empty((batch, n, n), dtype=np.complex64)
    field.real = rng.standard_normal((batch, n, n), dtype=np.float64) * math.sqrt(0.5)
    field.imag = rng.standard_normal((batch, n, n), dtype=np.float64) * math.sqrt(0.5)
    phases = rng.uniform(0.0, 2.0 * math.pi, size=(layers, n, n)).astype(np.float32)
    target = rng.uniform(0.0, 2.0, size=(batch, n, n)).astype(np.float32)
    return field, phases, target


def build_info() -> dict:
    """Which optdiff this process loaded: package folder, version, compiled module and its mtime."""
    import optdiff

    pkg = os.path.dirname(os.path.abspath(optdiff.__file__))
    info = {"optdiff": pkg, "version": getattr(optdiff, "__version__", "?"), "python": sys.version.split()[0]}
    libs = []
    for root, _, files in os.walk(pkg):
        libs += [os.path.join(root, f) for f in files if f.endswith((".so", ".pyd"))]
    core = sorted(libs, key=lambda p: ("_core" not in os.path.basename(p), p))
    if core:
        info["core"] = core[0]
        info["core_mtime"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(core[0])))
    return info


def time_step(stack, field, phases, target, min_time: float, max_calls: int) -> tuple[float, list[float]]:
    """(loss, seconds of each timed call) of the fused training step, after a warm-up call;
    as many calls as fill min_time, at least 3 and at most max_calls."""
    def step():
        return stack.mse_loss_and_grad(field, phases, target, return_intensity=True)

    step()  # plans, buffers
    t0 = time.perf_counter()
    loss = float(step()[0])
    first = time.perf_counter() - t0
    calls = max(3, min(max_calls, math.ceil(min_time / max(first, 1e-6))))
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return loss, times


def child(a) -> None:
    threads = a.threads[0]
    if a.path:
        sys.path.insert(0, a.path)
    try:  # same core set in every process (the first `threads` the run may use)
        cores = sorted(os.sched_getaffinity(0))[:threads]
        os.sched_setaffinity(0, cores)
    except (AttributeError, OSError):
        pass
    import numpy as np

    import optdiff

    optdiff.set_num_threads(threads)
    print("INFO " + json.dumps(build_info()), flush=True)
    for n in a.n:
        for pad in a.padding:
            field, phases, target = make_inputs(n, a.batch, a.layers)
            stack = optdiff.PhaseStack(n=n, wavelength=WAVELENGTH, pitch=PITCH,
                                       distances=[DISTANCE] * a.layers, input_distance=DISTANCE,
                                       padding=pad)
            loss, times = time_step(stack, field, phases, target, a.min_time, a.max_calls)
            print("CELL " + json.dumps({"n": n, "padding": pad, "threads": threads, "loss": loss,
                                        "calls": len(times), "median_s": statistics.median(times),
                                        "min_s": min(times), "times_s": [round(t, 7) for t in times],
                                        "finite": bool(np.isfinite(loss))}), flush=True)


# --------------------------------------------------------------------------- parent

def interpreter(path: str, what: str) -> str:
    """A Python interpreter from a path to one or to a virtual environment's folder."""
    p = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(p):
        for cand in ("bin/python", "bin/python3", "Scripts/python.exe"):
            if os.path.isfile(os.path.join(p, cand)):
                return os.path.join(p, cand)
        raise SystemExit(f"--{what} {path}: a folder without bin/python (not a virtual environment)")
    if not (os.path.isfile(p) and os.access(p, os.X_OK)):
        raise SystemExit(f"--{what} {path}: not an executable Python interpreter or venv folder")
    return p


def _common():
    """benchmarks/common.py for the driver (a timing process runs a copy of this file alone, so the
    module level imports nothing of the repository)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks import common

    return common


def snapshot(path: str, workdir: str) -> str:
    """Copy the optdiff package found in `path` (resolving links) so that a rebuild during the
    run cannot change the module under the timing processes' feet; returns the new folder."""
    src = os.path.join(path, "optdiff")
    if not os.path.isdir(src):
        return os.path.abspath(path)
    dst = tempfile.mkdtemp(prefix="optdiff_", dir=workdir)
    shutil.copytree(src, os.path.join(dst, "optdiff"), symlinks=False,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def run_child(python: str, extra_path: str | None, threads: int, a) -> tuple[dict, list[dict], float]:
    cmd = [python, "-I", a.child_script, "--child", "--threads", str(threads),
           "--n", *map(str, a.n), "--padding", *map(str, a.padding), "-B", str(a.batch),
           "-L", str(a.layers), "--min-time", str(a.min_time), "--max-calls", str(a.max_calls)]
    if extra_path:
        cmd += ["--path", os.path.abspath(extra_path)]
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    # as interleaved.py: idle OpenMP workers sleep instead of spinning into the next process
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    c = _common()
    busy0, own0, t0 = c.cpu_busy_seconds(), c.own_cpu_seconds(), time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=a.child_timeout)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{python}: the timing process ran past {a.child_timeout} s") from None
    if proc.returncode != 0:
        raise SystemExit(f"{python} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    # cores that other processes kept busy while this one ran
    background = (c.cpu_busy_seconds() - busy0 - (c.own_cpu_seconds() - own0)) / (time.perf_counter() - t0)
    info, cells = {}, []
    for line in proc.stdout.splitlines():
        if line.startswith("INFO "):
            info = json.loads(line[5:])
        elif line.startswith("CELL "):
            cells.append(json.loads(line[5:]))
    if len(cells) != len(a.n) * len(a.padding):
        raise SystemExit(f"{python}: expected {len(a.n) * len(a.padding)} cells, got {len(cells)}:\n"
                         f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return info, cells, max(0.0, background)


def report(a, infos: dict, times: dict, losses: dict, elapsed: float, loads: list[float],
           quiet: dict) -> str:
    argv = " ".join(sys.argv[1:])
    lines = [f"Training step (`PhaseStack.mse_loss_and_grad`, B={a.batch}, L={a.layers}, input hop, "
             f"complex64), after/before ratio of each process's {a.stat} call time over {a.rounds} rounds of alternating fresh processes "
             f"(A B, B A, ...), {elapsed / 60:.1f} min. Command: `python benchmarks/compare_builds.py {argv}`.",
             ""]
    for side in ("before", "after"):
        i = infos[side]
        lines.append(f"- {side}: `{i['interpreter']}`, optdiff {i.get('version')} from `{i.get('optdiff')}`"
                     + (f", core built {i['core_mtime']}" if "core_mtime" in i else ""))
    busy = sum(x > a.max_background for x in loads)
    lines.append(f"- other processes' CPU use while a pair ran: median {statistics.median(loads):.2f}, "
                 f"max {max(loads):.2f} cores; {busy} of {len(loads)} pairs above {a.max_background:g} "
                 f"(after {a.retries} retr{'y' if a.retries == 1 else 'ies'}; kept in the table)")
    if infos["before"].get("core") == infos["after"].get("core"):
        lines.append("- both sides loaded the same compiled core (a self-check: the ratios should be ~1.00)")
    lines += ["", "| N | pad | thr | before ms | after ms | after / before, median [IQR] | rounds |",
              "|---|---|---|---|---|---|---|"]
    all_ratios, quiet_ratios, cell_medians, warnings = [], [], [], []
    for key in sorted(times["before"]):
        n, pad, thr = key
        b, f = times["before"][key], times["after"][key]
        ratios = [x / y for x, y in zip(f, b)]
        all_ratios += ratios
        quiet_ratios += [x for x, q in zip(ratios, quiet[key]) if q]
        q1, med, q3 = _common().quartiles(ratios)
        cell_medians.append(med)
        lines.append(f"| {n} | {pad} | {thr} | {statistics.median(b) * 1e3:.2f} | {statistics.median(f) * 1e3:.2f} "
                     f"| {med:.3f} [{q1:.3f}-{q3:.3f}] | {len(ratios)} |")
        lb, la = losses["before"][key], losses["after"][key]
        if not abs(la - lb) <= a.loss_rtol * max(abs(lb), 1e-30):
            warnings.append(f"N={n} padding={pad} threads={thr}: the builds' losses differ "
                            f"({lb:.9g} before, {la:.9g} after)")
    q1, med, q3 = _common().quartiles(all_ratios)
    worst = max(cell_medians)
    lines += ["", f"Overall median after/before: **{med:.3f}** [IQR {q1:.3f}-{q3:.3f}] over {len(all_ratios)} "
              f"ratios; cell medians {min(cell_medians):.3f}-{worst:.3f}; "
              f"cells with a median above {1 + a.tolerance:.2f}: "
              f"{sum(m > 1 + a.tolerance for m in cell_medians)} of {len(cell_medians)}."]
    if 0 < len(quiet_ratios) < len(all_ratios):
        q1, med, q3 = _common().quartiles(quiet_ratios)
        lines += ["", f"Quiet pairs only (other processes below {a.max_background:g} cores): median "
                  f"**{med:.3f}** [IQR {q1:.3f}-{q3:.3f}] over {len(quiet_ratios)} ratios."]
    if warnings:
        lines += ["", *(f"WARNING: {w}" for w in warnings)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", help="Python interpreter (or venv folder) with the build before the change")
    p.add_argument("--after", help="Python interpreter (or venv folder) with the build after the change")
    p.add_argument("--before-path", default=None, metavar="DIR",
                   help="folder put first on the before side's sys.path (e.g. an in-tree build's python/)")
    p.add_argument("--after-path", default=None, metavar="DIR", help="the same for the after side")
    p.add_argument("--n", type=int, nargs="+", default=[64, 128], help="field sizes N (default: 64 128)")
    p.add_argument("--padding", type=int, nargs="+", default=[1, 2], choices=[1, 2],
                   help="padding factors (default: 1 2)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default: 1 2)")
    p.add_argument("--rounds", type=int, default=10,
                   help="rounds; each runs one before and one after process per thread count (default 10)")
    p.add_argument("--min-time", type=float, default=0.3,
                   help="seconds of timed calls per cell and process, at least 3 calls (default 0.3)")
    p.add_argument("--max-calls", type=int, default=50, help="at most this many timed calls per cell (default 50)")
    p.add_argument("--stat", choices=["median", "min"], default="median",
                   help="each process's time per cell: the median of its calls (as the benchmarks) or the "
                        "fastest call (less sensitive to short disturbances)")
    p.add_argument("-B", "--batch", type=int, default=64)
    p.add_argument("-L", "--layers", type=int, default=4)
    p.add_argument("--tolerance", type=float, default=0.03,
                   help="the report counts the cells whose median ratio is above 1 + this (default 0.03)")
    p.add_argument("--loss-rtol", type=float, default=1e-4,
                   help="relative difference of the two builds' losses that is reported (default 1e-4)")
    p.add_argument("--wait-quiet", type=float, default=5.0,
                   help="before each pair of processes, wait up to this many seconds for other processes "
                        "to use less than --max-background cores (0: do not wait; default 5)")
    p.add_argument("--max-background", type=float, default=0.25,
                   help="other processes' CPU use (cores) above which a pair is re-run (default 0.25)")
    p.add_argument("--retries", type=int, default=1,
                   help="re-runs of a pair disturbed by other processes; the least disturbed is kept (default 1)")
    p.add_argument("--child-timeout", type=float, default=600.0, help="seconds one timing process may take")
    p.add_argument("--out", default=None, help="also write the markdown report here")
    p.add_argument("--json", default=None, help="also write every measurement here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--path", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        child(a)
        return
    if not a.before or not a.after:
        p.error("--before and --after are required")
    if (a.rounds < 1 or a.min_time <= 0 or a.max_calls < 3 or min(a.threads) < 1 or min(a.n) < 2
            or a.retries < 0 or a.wait_quiet < 0):
        p.error("needed: --rounds >= 1, --min-time > 0, --max-calls >= 3, --threads >= 1, --n >= 2, "
                "--retries >= 0, --wait-quiet >= 0")
    sides = {"before": (interpreter(a.before, "before"), a.before_path),
             "after": (interpreter(a.after, "after"), a.after_path)}
    for side, (_, extra) in sides.items():
        if extra and not os.path.isdir(extra):
            p.error(f"--{side}-path {extra}: not a folder")
        pkg = os.path.join(extra or "", "optdiff")
        if extra and os.path.isdir(pkg) and not any(
                f.startswith("_core") and f.endswith((".so", ".pyd")) for _, _, fs in os.walk(pkg) for f in fs):
            p.error(f"--{side}-path {extra}: {pkg} has no compiled core (build it in-tree first: ./dev build)")
    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:
        ncpu = os.cpu_count() or 1
    if max(a.threads) > ncpu:
        print(f"note: {max(a.threads)} threads on {ncpu} usable cores", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="compare_builds_") as workdir:
        # the timing processes run a copy of this file: editing it during a run changes nothing
        a.child_script = os.path.join(workdir, "compare_builds_child.py")
        shutil.copyfile(os.path.abspath(__file__), a.child_script)
        for side, (python, extra) in list(sides.items()):
            if extra:
                sides[side] = (python, snapshot(extra, workdir))
        run_rounds(a, sides)


def run_pair(a, sides: dict, order: list[str], thr: int) -> tuple[dict, float]:
    """One before and one after process, back to back (re-run when other processes were busy)."""
    best, best_load = None, math.inf
    for _ in range(1 + a.retries):
        if a.wait_quiet > 0:
            _common().wait_quiet(a.wait_quiet, threshold=a.max_background)
        pair = {side: run_child(*sides[side], thr, a) for side in order}
        load = max(p[2] for p in pair.values())
        if load < best_load:
            best, best_load = pair, load
        if load <= a.max_background:
            break
    return best, best_load


def run_rounds(a, sides: dict) -> None:
    infos: dict = {}
    times: dict = {"before": {}, "after": {}}
    losses: dict = {"before": {}, "after": {}}
    raw, loads, quiet = [], [], {}
    t_start = time.perf_counter()
    for r in range(a.rounds):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for thr in a.threads:
            pair, load = run_pair(a, sides, order, thr)
            loads.append(load)
            for side in order:
                info, cells, background = pair[side]
                infos.setdefault(side, {"interpreter": sides[side][0], **info})
                for c in cells:
                    if not c["finite"]:
                        raise SystemExit(f"{side}: non-finite loss at N={c['n']} padding={c['padding']}")
                    key = (c["n"], c["padding"], c["threads"])
                    times[side].setdefault(key, []).append(c[f"{a.stat}_s"])
                    losses[side].setdefault(key, c["loss"])
                    raw.append({"round": r, "side": side, "background_cores": round(background, 3), **c})
            for key in times["after"]:
                if key[2] == thr:
                    quiet.setdefault(key, []).append(load <= a.max_background)
        done = time.perf_counter() - t_start
        ratios = [times["after"][k][-1] / times["before"][k][-1] for k in times["before"]]
        print(f"round {r + 1}/{a.rounds}: {done:.0f} s, after/before this round "
              + " ".join(f"{x:.3f}" for x in ratios)
              + (f"; about {done / (r + 1) * (a.rounds - r - 1):.0f} s to go" if r + 1 < a.rounds else ""),
              file=sys.stderr, flush=True)
    text = report(a, infos, times, losses, time.perf_counter() - t_start, loads, quiet)
    print(text, end="")
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"argv": sys.argv[1:], "builds": infos, "pair_background_cores": loads, "runs": raw},
                      fh, indent=1)


if __name__ == "__main__":
    main()
