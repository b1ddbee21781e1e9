"""Ratios that survive a drifting machine: several tools timed in one process, interleaved.

run_benchmarks.py runs every tool in a fresh process, one after another. On a virtual machine
whose speed drifts by tens of percent over seconds to minutes (with no other process to blame),
two tools timed a minute apart can differ by the drift alone. Here the tools live in one process
and take turns: each round calls every tool once (in a shuffled order) and the ratio of each
tool to the FFT floor is taken *within* the round, where the drift is shared. The report gives
the median and the interquartile range of those per-round ratios.

    python benchmarks/interleaved.py --n 64 128 --padding 1 --threads 1 2 --rounds 40

Tools: optdiff (fused training step), optdiff_tape (forward_train + NumPy loss + backward),
pyfftw (hand adjoint, MEASURE plans), numpy, fft_floor; every one is checked against the
complex128 reference before it is timed. Torch and JAX are left out: their thread pools would
share the process with the others.

``--mode ddpm`` times the DDPM sampling step instead (the floor: the forward pass's FFTs), with
optdiff_npstep, optdiff's step with the read-out, update and noise in NumPy, as the comparison:

    python benchmarks/interleaved.py --mode ddpm --threads 2 --tools optdiff optdiff_npstep pyfftw
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common, worker  # noqa: E402
from benchmarks.run_benchmarks import LABELS  # noqa: E402

if os.path.isdir(common.PYTHON_DIR):
    try:
        import optdiff  # noqa: F401
    except ImportError:
        sys.path.insert(0, common.PYTHON_DIR)

# (not torch or JAX: see above)
TOOLS = ["optdiff", "optdiff_tape", "optdiff_npstep", "pyfftw", "numpy", "fft_floor"]
# The column that compares optdiff with its other path, per mode.
VERSUS = {"train": "optdiff_tape", "forward": "optdiff_tape", "ddpm": "optdiff_npstep"}


def check(name, cls, tool, mode, case, ref, tol=1e-3):
    if mode == "ddpm":  # ref: the noise-free step; what is left over sigma must be N(0, 1)
        step = common.DDPMStep.at(500)
        tool.setup_ddpm(common.ddpm_input(case), step)
        out, tol = tool.ddpm_step(), 0.02
    else:
        out = tool.forward() if mode == "forward" else tool.train()
    if not getattr(cls, "checked", True):
        return
    if mode == "ddpm":
        err = max(common.ddpm_noise_errors(tool.to_numpy(out), ref, step.sigma).values())
    else:
        err = max(common.output_errors(mode, out, *ref, to_numpy=tool.to_numpy).values())
    if err > tol:
        raise SystemExit(f"{name} N={case.n} p={case.padding}: {mode} differs from the reference "
                         f"({err:.2e} > {tol:g}); not timing it")


def run_case(case: common.Case, tools: list[str], mode: str, rounds: int, seed: int) -> dict:
    field, phases, target = common.make_inputs(case)
    ref = common.ddpm_reference_mean(case) if mode == "ddpm" else common.reference(case)
    objs = {}
    for name in tools:
        cls = worker.tool_class(name)
        if mode not in getattr(cls, "modes", (mode,)):
            continue
        tool = cls(case)
        tool.setup(field, phases, target)
        check(name, cls, tool, mode, case, ref)
        objs[name] = tool.ddpm_step if mode == "ddpm" else getattr(tool, mode)
    times = common.interleaved_times(objs, rounds, seed)
    return times


def row_for(a, tools, n, pad, thr) -> str:
    case = common.Case(n=n, padding=pad, threads=thr, batch=a.batch, layers=a.layers)
    times = run_case(case, tools, a.mode, a.rounds, a.seed)
    floor = times["fft_floor"]
    cells = [str(n), str(pad), str(thr)]
    for t in tools[:-1]:
        if t not in times:
            cells.append("-")
            continue
        q1, med, q3 = common.quartiles([x / f for x, f in zip(times[t], floor)])
        ips = a.batch / statistics.median(times[t])
        cells.append(f"{med:.2f} [{q1:.2f}-{q3:.2f}] ({ips:.0f}/s)")
    cells.append(f"{a.batch / statistics.median(floor):.0f}")
    other = VERSUS[a.mode]
    if "optdiff" in times and other in times:
        q1, med, q3 = common.quartiles([x / y for x, y in zip(times["optdiff"], times[other])])
        cells.append(f"{med:.2f} [{q1:.2f}-{q3:.2f}]")
    else:
        cells.append("-")
    return "| " + " | ".join(cells) + " |"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[64, 128], help="field sizes N")
    p.add_argument("--padding", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--mode", choices=["train", "forward", "ddpm"], default="train")
    p.add_argument("--tools", nargs="+", default=TOOLS, choices=TOOLS,
                   help="fft_floor is always included (the ratios are taken to it)")
    p.add_argument("--rounds", type=int, default=40, help="rounds; each calls every tool once")
    p.add_argument("-B", "--batch", type=int, default=64)
    p.add_argument("-L", "--layers", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="shuffles the order within rounds")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    # only the tools that time this mode (optdiff_npstep: ddpm only; optdiff_tape: not ddpm)
    runs_mode = [t for t in a.tools if a.mode in getattr(worker.tool_class(t), "modes", (a.mode,))]
    tools = [t for t in runs_mode if t != "fft_floor"] + ["fft_floor"]
    if a.child:  # one thread count, pinned once before any thread pool exists
        common.pin_cores(a.threads[0])
        for n in a.n:
            for pad in a.padding:
                print("ROW " + row_for(a, tools, n, pad, a.threads[0]), flush=True)
        return

    lines = [f"In-process interleaved {a.mode} timings, B={a.batch}, L={a.layers}, {a.rounds} rounds "
             f"(`python benchmarks/interleaved.py {' '.join(argv)}`). "
             f"Cells: median time / FFT-floor time of the same round [interquartile range]; "
             f"images/s from the median time. OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')} "
             f"(idle OpenMP threads sleep at once instead of spinning into the next tool's time).", ""]
    shown = [t for t in tools if t != "fft_floor"]
    hdr = ["N", "pad", "thr"] + [LABELS[t] for t in shown] + ["FFT floor img/s",
                                                             f"optdiff / {LABELS[VERSUS[a.mode]]}"]
    lines += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    print("\n".join(lines), flush=True)
    # Each thread count runs in its own process: CPU affinity is per thread on Linux and a
    # thread pool made under one pinning would keep it.
    for thr in a.threads:
        child = [sys.executable, os.path.abspath(__file__), "--child", "--threads", str(thr),
                 "--n", *map(str, a.n), "--padding", *map(str, a.padding), "--mode", a.mode,
                 "--tools", *tools, "--rounds", str(a.rounds), "-B", str(a.batch),
                 "-L", str(a.layers), "--seed", str(a.seed)]
        env = dict(os.environ)
        # optdiff's OpenMP workers otherwise spin for a while after each call and take cores
        # from the FFTW threads of the tool timed next (this makes optdiff wake them each call).
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        proc = subprocess.Popen(child, stdout=subprocess.PIPE, text=True, cwd=common.REPO, env=env)
        for line in proc.stdout:
            if line.startswith("ROW "):
                lines.append(line[4:].rstrip("\n"))
                print(lines[-1], flush=True)
            else:
                print(line, end="", flush=True)
        if proc.wait() != 0:
            raise SystemExit(f"the run with {thr} thread(s) failed (exit {proc.returncode})")
    if a.out:
        with open(a.out, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
