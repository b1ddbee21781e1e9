"""Train the M layer sets of one model as M Dask tasks, then assemble the model.

:func:`train_on_cluster` checks the output folder (writable here and on every worker, parts
left by an earlier run made for this configuration), submits one :func:`~.set_trainer.train_set`
task per set (``retries``: how often a task that raised is run again; a task whose worker died
is rescheduled by Dask itself, up to ``distributed.scheduler.allowed-failures`` times), shows a
progress bar as sets finish and then runs :func:`~.assemble.assemble` as one more task. Every
task resumes from its own part, so running the same command again after a crash continues
where the parts stopped; finished sets are not trained again.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from ..config import Config
from ..diffusion.checkpoint import CheckpointError
from .assemble import PARTS_DIR, assemble
from .cluster import completed, prepare_shared_dir
from .set_trainer import load_part, part_path, train_set

__all__ = ["train_on_cluster", "existing_parts"]


def existing_parts(cfg: Config, out) -> dict:
    """``{m: meta}`` of the parts already in ``out`` (CheckpointError if one belongs to another run)."""
    found = {}
    for m in range(cfg.model.sets):
        path = part_path(Path(out) / PARTS_DIR, m)
        if path.exists():
            _, meta = load_part(path, cfg, m)
            found[m] = meta
    return found


def train_on_cluster(client, cfg: Config, out, planner: str | None = None, retries: int = 2,
                     progress: bool = True, log=None) -> dict:
    """Train ``cfg``'s sets on ``client``'s workers into ``out``; returns the summary dict.

    The result equals the serial trainer's for the same configuration (bitwise with
    ``planner="estimate"``, see docs/distributed.md).
    """
    cfg.validate()
    if int(retries) < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    log = log or (lambda msg: None)
    out = prepare_shared_dir(out, client)
    (out / PARTS_DIR).mkdir(exist_ok=True)
    before = existing_parts(cfg, out)
    done = sorted(m for m, meta in before.items() if meta.get("done"))
    if before:
        log(f"continuing: {len(done)} set(s) finished, {len(before) - len(done)} partly trained "
            f"(parts in {out / PARTS_DIR})")
    cfg_dict = cfg.to_dict()
    parts_dir = str((out / PARTS_DIR).resolve())
    run = uuid.uuid4().hex[:8]
    t0 = time.perf_counter()
    futures = [client.submit(train_set, cfg_dict, parts_dir, m, planner, key=f"optdiff-set-{m:03d}-{run}",
                             retries=int(retries), pure=False)
               for m in range(cfg.model.sets)]
    results = {}
    try:
        for fut in completed(futures, "sets", progress, unit="set"):
            res = fut.result()  # re-raises the task's exception (after its retries) here
            results[res["set"]] = res
    except BaseException:
        client.cancel(futures)
        raise
    t1 = time.perf_counter()
    fut = client.submit(assemble, cfg_dict, str(out.resolve()), planner, key=f"optdiff-assemble-{run}",
                        retries=int(retries), pure=False)
    summary = fut.result()
    wall = time.perf_counter() - t0
    summary["distributed"]["wall_s"] = wall
    summary["distributed"]["assemble_s"] = time.perf_counter() - t1
    summary["distributed"]["task_seconds"] = [results[m]["seconds"] for m in sorted(results)]
    from ..diffusion.trainer import write_json_atomic

    write_json_atomic(out / "summary.json", summary)
    if not (out / "checkpoint.npz").exists():  # the assembly ran somewhere that does not share `out`
        raise CheckpointError(f"{out / 'checkpoint.npz'} was not written")
    return summary
