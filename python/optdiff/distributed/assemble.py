"""Put the M finished set parts together into the serial trainer's outputs.

:func:`assemble` loads every ``<out>/parts/set-<m>/part.npz`` (each must be finished and made
for the same configuration), copies each set's parameters and Adam state into one
:class:`~optdiff.diffusion.trainer.Trainer` and lets it write what a serial run writes:
``checkpoint.npz`` (same arrays, same header; the meta's random state is the one the serial run
ends with, taken from the set that owns the schedule's last step), ``summary.json`` (its
validation), and ``train_log.csv`` / ``val_log.csv`` merged from the parts' logs in schedule
order. The logs' ``elapsed_s`` column is each set task's own clock (sets ran side by side).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..config import Config
from ..diffusion.checkpoint import CheckpointError, atomic_write
from ..diffusion.trainer import TRAIN_FIELDS, VAL_FIELDS, Trainer, write_json_atomic
from .set_trainer import load_part, part_path

__all__ = ["assemble", "PARTS_DIR"]

PARTS_DIR = "parts"


def _write_csv(path: Path, fields, rows) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def assemble(cfg_dict: dict, out_dir: str, planner: str | None = None, threads: int | None = None) -> dict:
    """Dask task (or plain call): build ``out_dir``'s checkpoint, logs and summary from the parts.

    Returns the summary dict (also in ``summary.json``) with a ``"distributed"`` entry: each
    set's training seconds and the schedule steps its task resumed at after a failure.
    """
    from .runtime import apply_planner, task_threads

    apply_planner(planner)
    cfg = Config.from_dict(cfg_dict)
    cfg.train.threads = threads or task_threads(cfg.train.threads)
    cfg.train.progress = False
    out = Path(out_dir)
    tr = Trainer(cfg, out, log=False)
    M, p = tr.model.M, tr.model.params
    parts = [None] * M
    for m in range(M):
        path = part_path(out / PARTS_DIR, m)
        if not path.exists():
            raise CheckpointError(f"{path}: set {m} has no part; train it first")
        arrays, meta = load_part(path, cfg, m)
        if not meta.get("done"):
            raise CheckpointError(f"{path}: set {m} is not finished (schedule step {meta.get('step')} of "
                                  f"{meta.get('total_steps')})")
        for k in p:
            p[k][m] = arrays[f"p.{k}"]
            tr.opt.m[k][m] = arrays[f"adam_m.{k}"]
            tr.opt.v[k][m] = arrays[f"adam_v.{k}"]
        tr.opt.t[m] = int(arrays["adam_t"][0])
        parts[m] = (arrays, meta)
    last = tr.schedule_of(max(tr.total_steps - 1, 0))[0]  # the set whose task drew the last numbers
    tr.rng.bit_generator.state = parts[last][1]["rng_state"]
    tr.step = tr.total_steps
    tr.elapsed = float(sum(meta["elapsed_s"] for _, meta in parts))
    tr.distill_s = float(sum(meta.get("distill_s", 0.0) for _, meta in parts))
    tr.save()

    train_rows, val_rows = [], []
    for m, (a, _) in enumerate(parts):
        for s, local, loss, lr, rate, el in zip(*(a[f"log.{k}"] for k in ("step", "set_step", "loss", "lr",
                                                                          "rate", "elapsed"))):
            train_rows.append({"step": int(s), "set": m, "set_step": int(local), "loss": float(loss),
                               "lr": float(lr), "images_per_s": float(rate), "elapsed_s": float(el)})
        for s, mse, zero in zip(a["val.step"], a["val.mse"], a["val.zero"]):
            val_rows.append({"step": int(s), "set": m, "val_mse": float(mse), "zero_mse": float(zero)})
    train_rows.sort(key=lambda r: r["step"])
    val_rows.sort(key=lambda r: (r["step"], r["set"]))
    _write_csv(out / "train_log.csv", TRAIN_FIELDS, train_rows)
    _write_csv(out / "val_log.csv", VAL_FIELDS, val_rows)

    finals = [meta.get("final_val") for _, meta in parts]
    if all(isinstance(f, list) and len(f) == 2 for f in finals):
        # each task validated its own set at the end (the trainer's validate(), set by set, in
        # parallel); summarize() takes those numbers instead of validating the M sets again here
        tr.validate = lambda: {"val_mse": [float(f[0]) for f in finals], "zero_mse": [float(f[1]) for f in finals]}
    summary = tr.summarize()
    summary["distributed"] = {
        "set_elapsed_s": [float(meta["elapsed_s"]) for _, meta in parts],
        "resumed_at": {str(m): meta.get("resumed_at", []) for m, (_, meta) in enumerate(parts)
                       if meta.get("resumed_at")},
        "own_steps": [int(np.asarray(a["log.step"]).size) for a, _ in parts],
    }
    write_json_atomic(out / "summary.json", summary)
    return summary
