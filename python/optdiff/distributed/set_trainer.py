"""Train one layer set of a time-aware model alone, to the same numbers as the serial trainer.

The serial :class:`~optdiff.diffusion.trainer.Trainer` draws every minibatch of every set from
one random stream (round robin over the sets, or set after set), and its calibration fits the
sets' read-outs one after another from a second stream. The M sets never share parameters or
optimiser state, so set ``m`` can be trained on its own if it sees exactly the random numbers it
would see in the serial run: :class:`SetTrainer` walks the serial schedule step by step, trains
on the steps of set ``m`` and, on the other sets' steps, only draws (and drops) their minibatch
with the trainer's own ``_batch`` so the stream stays in step. A draw costs about 0.2 % of an
optical step at the default sizes (measured, docs/distributed.md): about 2 % extra for M = 10.

Each set writes a *part* (``<parts>/set-<m>/part.npz``, atomic, the project's checkpoint
format) every ``train.ckpt_every`` schedule steps, and a last one marked ``done``: the set's
parameters and Adam state, the random stream, the schedule position and the set's own loss and
validation logs (as arrays, so a resumed task repeats no log row and loses none).
:func:`train_set` resumes from its part, so a task retried after its worker died continues
from the last part written, and a finished part is returned as it is.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from ..config import Config
from ..diffusion.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..diffusion.optim import lr_at
from ..diffusion.trainer import Trainer, TrainingError, checkpoint_config, validation_batch

__all__ = ["SetTrainer", "train_set", "part_path", "load_part", "result_config", "PART_KIND"]

PART_KIND = "optdiff-set-part"
PART_NAME = "part.npz"
_LOG = ("step", "set_step", "loss", "lr", "rate", "elapsed")
_VAL = ("step", "mse", "zero")


def part_path(parts_dir, m: int) -> Path:
    """Where set ``m``'s part lives: one folder per set, so each folder has one writer at a time
    (a stale-temporary sweep by one task never sees another live task's temporaries)."""
    return Path(parts_dir) / f"set-{int(m):03d}" / PART_NAME


def result_config(cfg: Config) -> dict:
    """The run configuration minus what does not change the numbers (threads, progress bars)."""
    d = cfg.to_dict()
    d["train"] = {k: v for k, v in d["train"].items() if k not in ("threads", "progress")}
    return d


def _differences(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def load_part(path, cfg: Config, m: int):
    """``(arrays, meta)`` of a part made for ``cfg`` and set ``m``; :class:`CheckpointError` when the
    file is corrupt or was made for another configuration (naming the differing keys)."""
    ccfg, arrays, meta = load_checkpoint(path)
    if ccfg.get("kind") != PART_KIND or ccfg.get("set") != int(m):
        raise CheckpointError(f"{path}: not the training part of set {m} (kind {ccfg.get('kind')!r}, "
                              f"set {ccfg.get('set')!r})")
    diffs = _differences(json.loads(json.dumps(result_config(cfg))), ccfg.get("result_config"))
    if diffs:
        raise CheckpointError(
            f"{path}: this part was trained with another configuration (differs in {', '.join(diffs)}); "
            f"use another output folder or delete {Path(path).parent.parent}")
    return arrays, meta


class SetTrainer(Trainer):
    """The serial trainer restricted to set ``m`` (see the module docstring).

    ``out_dir`` is the set's own folder (``part_path(parts, m).parent``). :meth:`run` trains
    to the end (or ``max_steps`` more schedule steps) and returns the part's path.
    """

    def __init__(self, cfg: Config, out_dir, m: int, images=None, val_images=None):
        super().__init__(cfg, out_dir, images=images, val_images=val_images, log=False)
        if not 0 <= int(m) < self.model.M:
            raise ValueError(f"m must be a set index in 0..{self.model.M - 1}, got {m}")
        self.m = int(m)
        self.logs = {k: [] for k in _LOG}
        self.vals = {k: [] for k in _VAL}
        self.own_steps = 0
        self.resumed_at: list[int] = []
        self._val_cache = None  # (own_steps, mse, zero): validation is re-run only after an update

    @property
    def part(self) -> Path:
        return self.out_dir / PART_NAME

    # ------------------------------------------------------------------ part I/O
    def save_part(self, done: bool = False) -> Path:
        """Write the part; a finished one also carries the set's final validation (``final_val``),
        so the assembly need not run every set's validation again one after another."""
        m, p = self.m, self.model.params
        arrays = {f"p.{k}": v[m] for k, v in p.items()}
        for k in p:
            arrays[f"adam_m.{k}"] = self.opt.m[k][m]
            arrays[f"adam_v.{k}"] = self.opt.v[k][m]
        arrays["adam_t"] = self.opt.t[m:m + 1]
        arrays.update({f"log.{k}": np.asarray(v, dtype=np.int64 if k in ("step", "set_step") else np.float64)
                       for k, v in self.logs.items()})
        arrays.update({f"val.{k}": np.asarray(v, dtype=np.int64 if k == "step" else np.float64)
                       for k, v in self.vals.items()})
        config = {"kind": PART_KIND, "set": m, "sets": self.model.M,
                  "result_config": result_config(self.cfg), **checkpoint_config(self.cfg)}
        meta = {"step": self.step, "own_steps": self.own_steps, "elapsed_s": self.elapsed, "distill_s": self.distill_s,
                "rng_state": self.rng.bit_generator.state, "total_steps": self.total_steps,
                "images": int(self.images.shape[0]), "done": bool(done), "resumed_at": self.resumed_at}
        if done:
            meta["final_val"] = list(self.own_validation())
        return save_checkpoint(self.part, config, arrays, meta)

    def restore_part(self) -> dict:
        arrays, meta = load_part(self.part, self.cfg, self.m)
        m, p = self.m, self.model.params
        try:
            for k in p:
                for dst, name in ((p[k], f"p.{k}"), (self.opt.m[k], f"adam_m.{k}"), (self.opt.v[k], f"adam_v.{k}")):
                    if arrays[name].shape != dst.shape[1:]:
                        raise ValueError(f"{name} has shape {arrays[name].shape}, expected {dst.shape[1:]}")
                    dst[m] = arrays[name]
            self.opt.t[m] = int(arrays["adam_t"][0])
            self.logs = {k: arrays[f"log.{k}"].tolist() for k in _LOG}
            self.vals = {k: arrays[f"val.{k}"].tolist() for k in _VAL}
            self.rng.bit_generator.state = meta["rng_state"]
            self.step, self.own_steps = int(meta["step"]), int(meta["own_steps"])
            self.elapsed = float(meta["elapsed_s"])
            self.distill_s = float(meta.get("distill_s", 0.0))
            self.resumed_at = [int(s) for s in meta.get("resumed_at", [])]
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CheckpointError(f"{self.part}: cannot resume set {m} from this part ({exc})") from None
        return meta

    # ------------------------------------------------------------------ steps
    def _calibrate_own_set(self) -> None:
        """The trainer's calibration (same draws, in the same order) fitting set m only."""
        model, m = self.model, self.m
        fit = model.calibrate
        model.calibrate = lambda s, r, t, eps, **kw: fit(s, r, t, eps, **kw) if s == m else None
        try:
            self.calibrate()
        finally:
            del model.calibrate  # back to the class's method

    def _own_step(self, local: int) -> None:
        tc, m = self.cfg.train, self.m
        t0 = time.perf_counter()
        r, t, eps = self._batch(m)
        loss, grads = self.model.loss_and_grads(m, r, t, eps, float(self.weights[m]))
        if not math.isfinite(loss) or not all(np.all(np.isfinite(g)) for g in grads.values()):
            raise TrainingError(f"non-finite loss ({loss}) or gradient at step {self.step} (set {m}, set step "
                                f"{local}); the last good part is {self.part}. Lower train.lr or check the data.")
        lr = lr_at(local, tc.steps, tc.lr, tc.lr_schedule, tc.warmup, tc.lr_min_factor)
        rlr = lr_at(local, tc.steps, tc.readout_lr, tc.lr_schedule, tc.warmup, tc.lr_min_factor)
        self.opt.step(m, grads, {k: (lr if k == "phases" else rlr) for k in grads})
        dt = time.perf_counter() - t0
        self.elapsed += dt
        for k, v in zip(_LOG, (self.step, local, loss, lr, tc.batch / dt if dt > 0 else float("inf"), self.elapsed)):
            self.logs[k].append(v)
        self.own_steps += 1

    def own_validation(self) -> tuple[float, float]:
        """(val_mse, zero_mse) of set m now: what the trainer's ``validate()`` gives for this set."""
        if self._val_cache is None or self._val_cache[0] != self.own_steps:
            r, t, eps = validation_batch(self.model, self.val_images, self.m, self.cfg.train.val_batch,
                                         self.cfg.train.seed)
            self._val_cache = (self.own_steps, self.model.set_mse(self.m, r, t, eps), float(np.mean(eps * eps)))
        return self._val_cache[1:]

    def _validate_own_set(self) -> None:
        for k, v in zip(_VAL, (self.step,) + self.own_validation()):
            self.vals[k].append(v)

    def run(self, max_steps: int | None = None) -> Path:
        """Train set m from its part (if any) to the end of the schedule; the part is written
        every ``train.ckpt_every`` schedule steps and when done."""
        tc = self.cfg.train
        if self.part.exists():
            meta = self.restore_part()
            if meta.get("done"):
                return self.part
            self.resumed_at.append(self.step)
        else:
            self.step, self.elapsed = 0, 0.0
            if tc.calibrate:
                self._calibrate_own_set()
            if tc.distill_steps:  # the serial distillation start, this set's part of it
                from ..diffusion.distill import distill_model

                self.elapsed = self.distill_s = distill_model(self.model, self.images, tc, sets=(self.m,))
            if self.m == 0:  # the serial trainer checks set 0's starting optics once
                self.model.odu.check_light(self.model.params["phases"][0], "initial phases")
            self._validate_own_set()
        end = self.total_steps if max_steps is None else min(self.total_steps, self.step + int(max_steps))
        while self.step < end:
            s, local = self.schedule_of(self.step)
            if s == self.m:
                self._own_step(local)
            else:
                self._batch(s)  # another set's minibatch: drawn to keep the stream in step, not used
            self.step += 1
            if tc.val_every and self.step % tc.val_every == 0:
                self._validate_own_set()
            if tc.ckpt_every and self.step % tc.ckpt_every == 0 and self.step < self.total_steps:
                self.save_part()
        return self.save_part(done=self.step >= self.total_steps)


def train_set(cfg_dict: dict, parts_dir: str, m: int, planner: str | None = None,
              threads: int | None = None) -> dict:
    """Dask task: train set ``m`` of the run ``cfg_dict`` into ``parts_dir`` (resuming from its part).

    ``threads``: optics threads (default: the Dask worker's thread count, else ``train.threads``).
    Returns ``{"set", "part", "elapsed_s", "own_steps", "resumed_at", "seconds"}``.
    """
    from .runtime import apply_planner, task_threads

    t0 = time.perf_counter()
    apply_planner(planner)
    cfg = Config.from_dict(cfg_dict)
    cfg.train.threads = threads or task_threads(cfg.train.threads)
    cfg.train.progress = False
    tr = SetTrainer(cfg, part_path(parts_dir, m).parent, m)
    path = tr.run()
    return {"set": int(m), "part": str(path), "elapsed_s": tr.elapsed, "own_steps": tr.own_steps,
            "resumed_at": list(tr.resumed_at), "seconds": time.perf_counter() - t0}
