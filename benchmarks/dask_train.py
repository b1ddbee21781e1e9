"""Training the M = 10 layer sets on a 2-worker Dask LocalCluster against the serial trainer.

Three ways to train the same model (default sizes: N = 128, L = 4, 20x20 digits, batch 32,
``--steps`` per set), timed in interleaved rounds (each round runs all three in a shuffled
order after one warm-up of each, so a machine whose speed drifts affects them alike):

* ``serial-1``: :class:`~optdiff.diffusion.trainer.Trainer` in this process, 1 thread, with its logs
  and periodic validation as ``optdiff train`` runs it;
* ``serial-2``: the same with 2 threads;
* ``dask-2x1``: :func:`optdiff.distributed.train.train_on_cluster` on optdiff's LocalCluster
  (:func:`~optdiff.distributed.cluster.open_client`) of 2 worker processes x 1 thread (the 10
  sets as 10 tasks, then the assembly task).

Targets (issue 18): dask-2x1 >= 1.7x faster than serial-1 and not slower than serial-2. The
scheduler's overhead per task: the median round trip of an empty task (submit -> result, one at
a time) divided by the median set task's own run time (target < 1 %). Also reported: where the
distributed run's wall time goes (set tasks, assembly, the rest).

The machine's load from other processes while the timings ran is measured (/proc/stat) and
written next to the results, with the command. One command, about 2-4 minutes on 2 idle cores:

    python benchmarks/dask_train.py                 # writes benchmarks/results/dask_train.md
    python benchmarks/dask_train.py --steps 10 --rounds 1 --out /tmp/quick.md
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from benchmarks.common import (  # noqa: E402
    cpu_busy_seconds,
    interleaved_times,
    own_cpu_seconds,
    quartiles,
    wait_quiet,
)


def _noop():
    return None


def _process_cpu():
    return time.process_time()  # on a worker: that worker process's CPU seconds (all threads)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="training steps per set (default 20; 10 sets)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds after the warm-up (default 2)")
    ap.add_argument("--n", type=int, default=128, help="modulator pixels per side (default 128)")
    ap.add_argument("--noop-tasks", type=int, default=100, help="empty tasks for the overhead (default 100)")
    ap.add_argument("--wait-quiet", type=float, default=20.0, metavar="S",
                    help="wait up to S s for other processes to go idle first (default 20)")
    ap.add_argument("--out", default=str(HERE / "results" / "dask_train.md"), help="Markdown report")
    args = ap.parse_args(argv)

    import optdiff
    from optdiff.config import Config
    from optdiff.diffusion.trainer import Trainer
    from optdiff.distributed.train import train_on_cluster

    cfg = Config()
    cfg.optics.n = args.n
    cfg.train.steps = args.steps
    cfg.train.progress = False
    tmp = Path(tempfile.mkdtemp(prefix="optdiff-dask-bench-"))
    runs = {"count": 0}
    last = {}
    cpu = {"serial-1": [], "serial-2": [], "dask-2x1": []}  # CPU seconds of each timed call

    def serial(threads):
        def run():
            c = Config.from_dict(cfg.to_dict())
            c.train.threads = threads
            optdiff.set_num_threads(threads)
            runs["count"] += 1
            c0 = time.process_time()
            # log=True as in 'optdiff train': the periodic validation the set tasks also do
            Trainer(c, tmp / f"serial-{runs['count']}").fit()
            cpu[f"serial-{threads}"].append(time.process_time() - c0)
        return run

    load_before = wait_quiet(args.wait_quiet)
    from optdiff.distributed.cluster import open_client

    opened = open_client(workers=2, threads_per_worker=1, log=lambda msg: None)  # optdiff's LocalCluster
    client = opened.__enter__()
    try:
        def dask_run():
            runs["count"] += 1
            w0, c0 = client.run(_process_cpu), time.process_time()
            last["summary"] = train_on_cluster(client, Config.from_dict(cfg.to_dict()), tmp / f"dask-{runs['count']}",
                                               progress=False)
            w1 = client.run(_process_cpu)
            workers_cpu = sum(w1[k] - w0.get(k, 0.0) for k in w1)
            cpu["dask-2x1"].append(time.process_time() - c0 + workers_cpu)
            cpu["dask-workers"] = cpu.get("dask-workers", []) + [workers_cpu]

        tools = {"serial-1": serial(1), "serial-2": serial(2), "dask-2x1": dask_run}
        w0 = client.run(_process_cpu)
        b0, c0, t0 = cpu_busy_seconds(), own_cpu_seconds(), time.perf_counter()
        times = interleaved_times(tools, rounds=args.rounds)
        wall = time.perf_counter() - t0
        busy, own = cpu_busy_seconds() - b0, own_cpu_seconds() - c0
        w1 = client.run(_process_cpu)
        workers_cpu = sum(w1[k] - w0.get(k, 0.0) for k in w1)
        # other processes' load: the machine's busy time minus this process's and its workers'
        other_load = max(0.0, busy - own - workers_cpu) / wall
        noop = []
        for _ in range(args.noop_tasks):
            s = time.perf_counter()
            client.submit(_noop, pure=False).result()
            noop.append(time.perf_counter() - s)
    finally:
        opened.__exit__(None, None, None)

    d = last["summary"]["distributed"]
    task_med = statistics.median(d["task_seconds"])
    noop_med = statistics.median(noop)
    ratios1 = [a / b for a, b in zip(times["serial-1"], times["dask-2x1"])]
    ratios2 = [a / b for a, b in zip(times["serial-2"], times["dask-2x1"])]
    tool_seconds = sum(sum(v) for v in times.values())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    def q(xs, fmt="{:.2f}"):
        a, b, c = quartiles(xs)
        return f"{fmt.format(b)} ({fmt.format(a)}-{fmt.format(c)})"

    cmd = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__)] + list(argv or sys.argv[1:]))
    lines = [
        "# Training 10 layer sets: Dask LocalCluster (2 workers x 1 thread) vs the serial trainer", "",
        f"Command: `{cmd}`  ",
        f"Model: N={cfg.optics.n}, L={cfg.optics.layers}, M={cfg.model.sets}, {cfg.model.image_size}x"
        f"{cfg.model.image_size} {cfg.data.dataset}, batch {cfg.train.batch}, {cfg.train.steps} steps per set "
        f"({cfg.train.steps * cfg.model.sets} steps), validation every {cfg.train.val_every}, FFTW planner measure.  ",
        f"Machine: {cores} cores; other processes' load before the timings {load_before:.2f} cores, during "
        f"them {other_load:.2f} cores (/proc/stat busy time minus this process's and its workers' CPU); "
        f"{args.rounds} interleaved round(s) after one warm-up of each, {wall:.0f} s.", "",
        "| run | median s (quartiles) | per round | CPU s per round (all its processes) |", "|---|---|---|---|",
    ]
    for name, ts in times.items():
        lines.append(f"| {name} | {q(ts)} | {', '.join(f'{t:.1f}' for t in ts)} | "
                     f"{', '.join(f'{c:.1f}' for c in cpu[name][1:])} |")  # [0]: the warm-up call
    c1, cd = statistics.median(cpu["serial-1"][1:]), statistics.median(cpu["dask-2x1"][1:])
    lines += [
        "",
        f"- speed-up of dask-2x1 over serial-1 (per round): {q(ratios1)} (target >= 1.7)",
        f"- speed-up of dask-2x1 over serial-2 (per round): {q(ratios2)} (target >= 1.0)",
        f"- scheduler overhead per task: empty-task round trip {noop_med * 1e3:.1f} ms (median of "
        f"{len(noop)}) / median set task {task_med:.2f} s = {100 * noop_med / task_med:.3f} % (target < 1 %)",
        f"- last dask run: wall {d['wall_s']:.1f} s = set tasks on 2 workers (sum {sum(d['task_seconds']):.1f} s, "
        f"/2 = {sum(d['task_seconds']) / 2:.1f} s) + assembly {d['assemble_s']:.1f} s + the rest "
        f"{d['wall_s'] - sum(d['task_seconds']) / 2 - d['assemble_s']:.1f} s (scheduling, the last task's "
        f"imbalance: 10 tasks on 2 workers); optical training inside the tasks {sum(d['set_elapsed_s']):.1f} s",
        f"- CPU work: dask-2x1 used {cd / c1:.2f}x the CPU seconds of serial-1 (medians {cd:.1f} vs {c1:.1f} s); "
        f"on 2 otherwise idle cores that bounds its speed-up over serial-1 by about 2 / {cd / c1:.2f} = "
        f"{2 * c1 / cd:.2f}x (an estimate from CPU time, not a timing); of dask-2x1's CPU the two workers "
        f"used {statistics.median(cpu['dask-workers'][1:]):.1f} s, this process (client and scheduler) the rest",
        f"- total time of all timed runs: {tool_seconds:.0f} s",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
