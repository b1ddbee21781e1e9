"""Sweeps: a TOML grid of runs, each point one Dask task (train, sample, evaluate), one table.

A sweep file::

    base = "../examples/default.toml"   # optional run configuration (path relative to this file)
    samples = 64                        # optional: samples per point for the evaluation
                                        # (default: the point's sample.count)
    [train]                             # optional: any configuration section, over the base,
    steps = 200                         # for every point
    [grid]                              # the grid: every combination of these lists is a point
    n = [64, 128]                       # aliases: n/N, layers/L, sets/M, image_size, lr,
    layers = [2, 4]                     # readout_lr, steps, batch, seed (train.seed and
    seed = [0, 1]                       # sample.seed), dataset, classes, limit;
    "train.warmup" = [0, 10]            # or any "section.key"

Every point trains with the serial trainer inside its task (resuming from its own checkpoint
when the task is retried after its worker died), draws the samples and evaluates them: mean and
worst held-out eps-MSE over the sets (and the zero predictor's), and the Frechet distance
between the samples and the held-out images in pixel space (``fid_pixels``: no feature network,
comparable only between points of the same data set and image size). The point's
``result.json`` is written last and atomically; a rerun skips the points that have one for the
same configuration. The table of all points goes to ``results.csv`` and ``results.md``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import re
import time
import uuid
from pathlib import Path

import numpy as np

from ..config import Config, ConfigError, read_toml
from ..diffusion.checkpoint import atomic_write

__all__ = ["Sweep", "read_sweep", "run_point", "run_sweep", "write_table", "ALIASES", "RESULT_NAME"]

ALIASES = {
    "n": ("optics.n",), "N": ("optics.n",), "layers": ("optics.layers",), "L": ("optics.layers",),
    "sets": ("model.sets",), "M": ("model.sets",), "image_size": ("model.image_size",),
    "lr": ("train.lr",), "readout_lr": ("train.readout_lr",), "steps": ("train.steps",),
    "batch": ("train.batch",), "seed": ("train.seed", "sample.seed"), "dataset": ("data.dataset",),
    "classes": ("data.classes",), "limit": ("data.limit",),
}
TOP_KEYS = ("base", "samples", "grid")
RESULT_NAME = "result.json"
#: the configuration's sections and their dataclasses ({"optics": OpticsConfig, ...})
_SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(Config)}
METRICS = ("val_mse", "val_mse_worst", "zero_mse", "fid_pixels", "train_s", "images_per_s", "sample_s")


@dataclasses.dataclass
class Sweep:
    path: Path
    keys: list[str]                  # grid keys as written
    points: list[dict]               # [{key: value}] in grid order
    configs: list[Config]
    samples: int | None

    def name(self, i: int) -> str:
        """Folder name of point ``i``: its values (readable) and a hash of everything that it
        computes (so a changed base configuration is a new point, not a finished one)."""
        slug = "_".join(f"{k}={_text(v)}" for k, v in self.points[i].items())
        slug = re.sub(r"[^A-Za-z0-9_.=+-]", "-", slug)[:80]
        return f"{slug}-{self.digest(i)[:10]}"

    def digest(self, i: int) -> str:
        from .set_trainer import result_config

        blob = json.dumps({"config": result_config(self.configs[i]), "samples": self.samples}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def _text(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, list) else str(v)


def _flatten(grid: dict, prefix: str = "") -> dict:
    """``{"train": {"lr": [...]}}`` (TOML's reading of an unquoted ``train.lr``) -> ``{"train.lr": [...]}``."""
    out = {}
    for k, v in grid.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _targets(key: str) -> tuple[str, ...]:
    if key in ALIASES:
        return ALIASES[key]
    if "." in key:
        section, name = key.split(".", 1)
        klass = _SECTIONS.get(section)
        if klass is not None and name in {f.name for f in dataclasses.fields(klass)}:
            return (key,)
    raise ConfigError(f"[grid] unknown key {key!r}: use one of {', '.join(ALIASES)} or a configuration "
                      f"'section.key' (sections: {', '.join(_SECTIONS)})")


def read_sweep(path) -> Sweep:
    """Parse and check a sweep file; every point's configuration is validated here."""
    path = Path(path)
    d = read_toml(path, "sweep file")
    unknown = sorted(set(d) - set(TOP_KEYS) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; a sweep file has {', '.join(TOP_KEYS)} and "
                          f"configuration sections ({', '.join(_SECTIONS)})")
    base: dict = {}
    if "base" in d:
        if not isinstance(d["base"], str) or not d["base"]:
            raise ConfigError(f"{path}: base = {d['base']!r}: must be the path of a run configuration (TOML)")
        bpath = (path.parent / d["base"]) if not Path(d["base"]).is_absolute() else Path(d["base"])
        base = read_toml(bpath, "base configuration")
    merged = {k: dict(v) for k, v in base.items() if isinstance(v, dict)}
    for sec in _SECTIONS:
        if sec in d:
            if not isinstance(d[sec], dict):
                raise ConfigError(f"{path}: [{sec}] must be a table")
            merged.setdefault(sec, {}).update(d[sec])
    samples = d.get("samples")
    if samples is not None and (not isinstance(samples, int) or isinstance(samples, bool) or samples < 2):
        raise ConfigError(f"{path}: samples = {samples!r}: must be an integer >= 2")
    grid = d.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{path}: empty grid: give a [grid] table with at least one key and a list of values, "
                          f"e.g. [grid] seed = [0, 1]")
    grid = _flatten(grid)
    for key, values in grid.items():
        _targets(key)
        if not isinstance(values, list):
            raise ConfigError(f"{path}: [grid] {key} = {values!r}: must be a list of values, e.g. [{values!r}]")
        if not values:
            raise ConfigError(f"{path}: [grid] {key} = []: empty list, the grid has no points")
    keys = list(grid)
    points, configs = [], []
    for combo in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, combo))
        cfg_d = {k: dict(v) for k, v in merged.items()}
        for key, value in point.items():
            for target in _targets(key):
                sec, name = target.split(".", 1)
                cfg_d.setdefault(sec, {})[name] = value
        try:
            cfg = Config.from_dict(cfg_d)
        except ConfigError as exc:
            label = ", ".join(f"{k}={v!r}" for k, v in point.items())
            raise ConfigError(f"{path}: grid point ({label}): {exc}") from None
        points.append(point)
        configs.append(cfg)
    return Sweep(path, keys, points, configs, samples)


# ------------------------------------------------------------------------------ one point
def run_point(cfg_dict: dict, point_dir: str, point: dict, digest: str, samples: int | None = None,
              planner: str | None = None, threads: int | None = None) -> dict:
    """Task: train (resuming from the point's checkpoint), sample, evaluate; writes ``result.json``."""
    from ..diffusion.model import generate
    from ..diffusion.trainer import Trainer, write_json_atomic
    from ..evaluation.metrics import frechet_distance
    from .runtime import apply_planner, task_threads

    apply_planner(planner)
    cfg = Config.from_dict(cfg_dict)
    cfg.train.threads = threads or task_threads(cfg.train.threads)
    cfg.train.progress = False
    out = Path(point_dir)
    tr = Trainer(cfg, out)
    summary = tr.fit(resume=tr.checkpoint_path.exists())
    count = samples or cfg.sample.count
    t0 = time.perf_counter()
    x = generate(tr.model.predict_eps, tr.model.schedule, cfg.sample, count, tr.model.H)
    sample_s = time.perf_counter() - t0
    atomic_write(out / "samples.npy", lambda f: np.save(f, x), binary=True)
    held = tr.val_images
    fid = frechet_distance(x.reshape(x.shape[0], -1), held.reshape(held.shape[0], -1))
    val = np.asarray(summary["val_mse"])
    result = {**point, "val_mse": float(val.mean()), "val_mse_worst": float(val.max()),
              "zero_mse": float(np.mean(summary["zero_mse"])), "fid_pixels": float(fid),
              "train_s": float(summary["elapsed_s"]), "images_per_s": summary["images_per_s"],
              "sample_s": sample_s, "samples": int(count), "digest": digest}
    write_json_atomic(out / RESULT_NAME, result)  # last: its presence means the point is finished
    return result


def _finished(point_dir: Path, digest: str):
    path = point_dir / RESULT_NAME
    if not path.is_file():
        return None
    try:
        res = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # unreadable: run the point again (its checkpoint makes that cheap)
    return res if isinstance(res, dict) and res.get("digest") == digest else None


# ------------------------------------------------------------------------------ table
def write_table(sweep: Sweep, results: list[dict], out: Path) -> tuple[Path, Path]:
    """``results.csv`` and ``results.md`` in ``out`` (one row per point, grid order)."""
    cols = ["point"] + sweep.keys + list(METRICS)
    rows = [{"point": sweep.name(i), **{k: _text(r.get(k)) for k in sweep.keys},
             **{k: r.get(k) for k in METRICS}} for i, r in enumerate(results)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    atomic_write(out / "results.csv", lambda f: f.write(buf.getvalue()))

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    lines = [f"# Sweep {sweep.path.name}", "",
             f"{len(results)} points; eps-MSE on held-out images (mean / worst over the sets), zero predictor's "
             f"eps-MSE, fid_pixels: Frechet distance of the samples to the held-out images in pixel space "
             f"(comparable only within one data set and image size); train_s: training compute seconds.", "",
             "| " + " | ".join(cols[1:]) + " |", "|" + "---|" * (len(cols) - 1)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols[1:]) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    atomic_write(out / "results.md", lambda f: f.write(text))
    return out / "results.csv", out / "results.md"


def run_sweep(client, sweep_file, out, planner: str | None = None, retries: int = 2, progress: bool = True,
              log=None) -> dict:
    """Run every unfinished point of ``sweep_file`` on ``client``; returns ``{"results", "ran",
    "skipped", "csv", "md"}``."""
    from .cluster import completed, prepare_shared_dir

    log = log or (lambda msg: None)
    sweep = read_sweep(sweep_file)
    out = prepare_shared_dir(out, client)
    (out / "points").mkdir(exist_ok=True)
    results: list = [None] * len(sweep.points)
    todo = []
    for i in range(len(sweep.points)):
        res = _finished(out / "points" / sweep.name(i), sweep.digest(i))
        if res is None:
            todo.append(i)
        else:
            results[i] = res
    log(f"sweep {sweep.path}: {len(sweep.points)} points, {len(sweep.points) - len(todo)} already finished, "
        f"{len(todo)} to run -> {out}")
    run = uuid.uuid4().hex[:8]
    futures = [client.submit(run_point, sweep.configs[i].to_dict(), str((out / "points" / sweep.name(i)).resolve()),
                             sweep.points[i], sweep.digest(i), sweep.samples, planner,
                             key=f"optdiff-point-{i}-{run}", retries=int(retries), pure=False)
               for i in todo]
    where = {f.key: i for f, i in zip(futures, todo)}
    try:
        for fut in completed(futures, "points", progress, unit="point"):
            results[where[fut.key]] = fut.result()
    except BaseException:
        client.cancel(futures)
        raise
    csv_path, md_path = write_table(sweep, results, out)
    return {"results": results, "ran": len(todo), "skipped": len(sweep.points) - len(todo),
            "csv": csv_path, "md": md_path}
