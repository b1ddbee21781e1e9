"""The Dask side of the command line: ``optdiff sweep``, ``train --workers/--scheduler``,
``sample --workers/--scheduler`` (docs/distributed.md).

``train`` and ``sample`` without either flag are the built-in commands, unchanged. With
``--workers K`` a LocalCluster of K processes is started on this machine for the command and
closed after it; with ``--scheduler ADDRESS`` the command runs on an existing cluster.
Dask is imported only when one of these runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["register", "COMMANDS"]


def _positive(text: str) -> int:
    import argparse

    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if not 1 <= value <= 4096:
        raise argparse.ArgumentTypeError(f"must be an integer in 1..4096, got {text!r}")
    return value


def _non_negative(text: str) -> int:
    import argparse

    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if not 0 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"must be an integer in 0..1000, got {text!r}")
    return value


def _seconds(text: str) -> float:
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= 3600):
        raise argparse.ArgumentTypeError(f"must be a number of seconds in (0, 3600], got {text!r}")
    return value


def _add_cluster_flags(p, default_workers: str) -> None:
    g = p.add_argument_group("Dask cluster (docs/distributed.md; needs optdiff[dask])")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive, metavar="K",
                       help=f"start a LocalCluster of K worker processes on this machine ({default_workers})")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on an existing Dask cluster, e.g. tcp://head-node:8786 (dask scheduler, "
                            "dask-jobqueue's SLURMCluster.scheduler_address)")
    g.add_argument("--threads-per-worker", type=_positive, metavar="T",
                   help="threads of each LocalCluster worker (default: cores // K, so K workers use the "
                        "cores once)")
    g.add_argument("--retries", type=_non_negative, default=2, metavar="R",
                   help="run a task that raised again up to R times (default 2); a task whose worker died "
                        "is rescheduled by Dask and resumes from its own checkpoint")
    g.add_argument("--connect-timeout", type=_seconds, default=10.0, metavar="S",
                   help="give up connecting to --scheduler after S seconds (default 10)")


def register(sub, parsers, add_config_flags) -> None:
    from .distributed.runtime import EFFORTS

    sw = sub.add_parser(
        "sweep", help="run a grid of trainings (train, sample, evaluate each point) on a Dask cluster",
        description="Train, sample and evaluate every point of the grid in a sweep TOML (see "
                    "docs/distributed.md for the format), each point one Dask task, and write one results "
                    "table (results.csv, results.md) to --out. A rerun skips the finished points; a point "
                    "whose worker died resumes from its own checkpoint.")
    sw.add_argument("grid", metavar="GRID.toml", help="sweep file: [grid] lists, optional base config and sections")
    sw.add_argument("--out", default="runs/sweep", help="output folder, shared by all workers (default runs/sweep)")
    sw.add_argument("--planner", choices=EFFORTS,
                    help="FFTW planning in the tasks (default measure; estimate: bitwise reproducible)")
    sw.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_cluster_flags(sw, "default: one per core, 1 thread each")
    _add_cluster_flags(parsers["train"], "the M sets as separate tasks")
    _add_cluster_flags(parsers["sample"], "chunks of sample.batch images as separate tasks")


def _client(args):
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ValueError("--workers/--scheduler and 'optdiff sweep' need the Dask extra: "
                         "pip install 'optdiff[dask]'") from None
    from .distributed.cluster import machine_cores, open_client

    workers = args.workers
    if workers is None and args.scheduler is None:
        workers = machine_cores()  # only 'sweep' gets here without a flag
    return open_client(workers=workers, scheduler=args.scheduler, threads_per_worker=args.threads_per_worker,
                       connect_timeout=args.connect_timeout, log=lambda msg: print(msg, file=sys.stderr))


def _distributed(args) -> bool:
    return args.workers is not None or args.scheduler is not None


def cmd_train(args):
    from . import cli
    from .config import ConfigError

    if not _distributed(args):
        return cli.cmd_train(args)
    if getattr(args, "mode", "offline") != "offline" or getattr(args, "slm_aware", False):
        raise ConfigError("--mode online/experimental-backprop and --slm-aware train on one bench: "
                          "not with --workers/--scheduler")
    if isinstance(args.resume, str):
        raise ConfigError("--resume CHECKPOINT: not with --workers/--scheduler (the sets continue from their "
                          "parts in --out/parts by themselves)")
    if args.max_steps is not None:
        raise ConfigError("--max-steps: not with --workers/--scheduler")
    from .distributed.train import train_on_cluster
    from .plots import plot_training

    cfg = cli._build_config(args)
    out = Path(args.out)
    print(f"optdiff train: {cfg.model.sets} sets as Dask tasks, N={cfg.optics.n} L={cfg.optics.layers}, "
          f"{cfg.train.steps} steps per set -> {out}", file=sys.stderr)
    with _client(args) as client:
        summary = train_on_cluster(client, cfg, out, planner=args.planner, retries=args.retries,
                                   progress=not args.no_progress, log=lambda msg: print(msg, file=sys.stderr))
    try:
        plot_training(out / "train_log.csv", out / "val_log.csv", out / "training.png")
    except Exception as exc:  # a figure must not lose a finished training run
        print(f"optdiff: warning: could not draw training.png: {exc}", file=sys.stderr)
    print(cli._mse_table({"ODU": summary["val_mse"], "zero": summary["zero_mse"]}, summary["set_ranges"]))
    d = summary["distributed"]
    print(f"checkpoint: {summary['checkpoint']}  ({summary['steps']} steps, {d['wall_s']:.0f} s wall, "
          f"{summary['elapsed_s']:.0f} s of set training)")
    return summary


def cmd_sample(args):
    import time

    from . import cli
    from .distributed.sampling import sample_on_cluster
    from .plots import save_grid

    if not _distributed(args):
        return cli.cmd_sample(args)
    model, _ = cli._model_from_checkpoint(args)
    sc = model.cfg.sample
    out = Path(args.out) if args.out else Path(args.checkpoint).parent
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with _client(args) as client:
        x = sample_on_cluster(client, args.checkpoint, sc, planner=args.planner, backend=args.backend,
                              retries=args.retries, progress=not args.no_progress)
    dt = time.perf_counter() - t0
    cli._save_npy(out / "samples.npy", x)
    save_grid(x, out / "samples.png")
    print(f"{x.shape[0]} samples ({sc.sampler}, seed {sc.seed}, chunks of {sc.batch}) in {dt:.1f} s -> "
          f"{out / 'samples.png'}, {out / 'samples.npy'}")
    return out


def cmd_sweep(args):
    from .distributed.sweep import read_sweep, run_sweep

    read_sweep(args.grid)  # a bad file is reported before a cluster starts
    with _client(args) as client:
        res = run_sweep(client, args.grid, args.out, planner=args.planner, retries=args.retries,
                        progress=not args.no_progress, log=lambda msg: print(msg, file=sys.stderr))
    print(f"{res['ran']} point(s) run, {res['skipped']} already finished -> {res['md']}, {res['csv']}")
    return res


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "sweep": cmd_sweep}
