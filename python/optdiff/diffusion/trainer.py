"""Training loop of the time-aware optical diffusion model.

:class:`Trainer` trains all M layer sets with Adam (one optimiser state per set) on the
epsilon-prediction MSE of DDPM: each step picks a set (round robin with ``order =
"interleaved"``, or set 0..M-1 one after another with ``"sequential"``), draws a minibatch of
images, timesteps uniformly *within that set* and Gaussian noise, and updates that set's phases
and read-out. Learning rates follow a warm-up + cosine schedule per set.

Outputs in ``out_dir``:

* ``train_log.csv``  one row per step: step, set, set_step, loss, lr, images_per_s, elapsed_s
* ``val_log.csv``    per validation: step, set, val_mse, zero_mse (fixed held-out batch per set)
* ``summary.json``   final per-set validation MSE, timing, light budget, configuration
* ``checkpoint.npz`` atomic checkpoint (:mod:`optdiff.checkpoint`, npz + JSON header):
  header ``config`` = model signature (n, layers, sets, image_size, physics, read-out,
  ``model_version``) plus the full run configuration under ``"run"``; arrays = the model
  parameters (``phases [M, L, N, N]`` float32, ``scale``, ``offset`` (, ``skip``)) and the Adam
  state (``adam_t``, ``adam_m.*``, ``adam_v.*``); ``meta`` = step, RNG state, elapsed time.

``Trainer.fit(resume=True)`` continues from ``checkpoint.npz``: parameters, optimiser and the
random stream are restored, so the continued loss curve is the one an uninterrupted run gives.
A non-finite loss or gradient stops training with :class:`TrainingError`; the last checkpoint
written before it is kept untouched.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path

import numpy as np

from ..config import Config
from .checkpoint import (
    CheckpointError,
    atomic_write,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from .distill import distill_model
from .model import MODEL_VERSION, TimeAwareODU
from .optim import Adam, lr_at

__all__ = ["Trainer", "TrainingError", "load_images", "split_train_val", "save_model",
           "load_model", "checkpoint_config", "CHECKPOINT_NAME", "write_json_atomic"]

CHECKPOINT_NAME = "checkpoint.npz"
TRAIN_FIELDS = ["step", "set", "set_step", "loss", "lr", "images_per_s", "elapsed_s"]
VAL_FIELDS = ["step", "set", "val_mse", "zero_mse"]


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss or gradients)."""


# ---------------------------------------------------------------------------- data
def load_images(cfg: Config) -> np.ndarray:
    """Images ``[K, H, W]`` float64 in [-1, 1] for ``cfg.data`` at the model's image size.

    ``dataset = "npy"`` reads ``data_dir`` as a ``.npy`` file of images already in [-1, 1] (no
    resizing: a wrong resolution is an error). Named data sets go through
    :func:`optdiff.data.load_dataset` (resized to ``model.image_size``).
    """
    d, H = cfg.data, cfg.model.image_size
    if d.dataset == "npy":
        path = Path(d.data_dir)
        if not path.is_file():
            raise FileNotFoundError(f"[data] dataset='npy' needs data_dir = a .npy file of images, got {d.data_dir!r}")
        try:
            x = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ValueError(f"{path}: not a readable .npy file ({exc})") from None
        if d.limit:
            x = x[: d.limit]
    else:
        from ..data import load_dataset

        x, _ = load_dataset(d.dataset, data_dir=d.data_dir or None, split=d.split, classes=d.classes,
                            size=H, limit=d.limit or None, seed=cfg.train.seed)
    return check_images(x, H, what=f"data set {d.dataset!r}")


def check_images(x, H: int, what: str = "images") -> np.ndarray:
    """Check a data set's shape and values against the model (clear errors, no silent resizing)."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"{what}: expected images [K, H, W], got an array of shape {x.shape}")
    if x.shape[1:] != (H, H):
        raise ValueError(f"{what}: images are {x.shape[1]}x{x.shape[2]} but the model expects {H}x{H} "
                         f"(model.image_size); resize the data or change the model")
    if x.shape[0] < 2:
        raise ValueError(f"{what}: need at least 2 images, got {x.shape[0]}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{what}: expected float images in [-1, 1], got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: images contain NaN or Inf")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.0 - 1e-6 or hi > 1.0 + 1e-6:
        raise ValueError(f"{what}: pixel values must lie in [-1, 1], got [{lo:.3g}, {hi:.3g}]")
    return x.astype(np.float64, copy=False)


def split_train_val(x: np.ndarray, val_count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``val_count`` images (at most half the data) chosen with ``seed``."""
    K = x.shape[0]
    nval = min(int(val_count), K // 2)
    perm = np.random.default_rng(seed + 7919).permutation(K)
    return x[np.sort(perm[nval:])], x[np.sort(perm[:nval])]


def validation_batch(model: TimeAwareODU, images: np.ndarray, m: int, count: int, seed: int):
    """Fixed held-out batch of set ``m``: (r_t, t, eps), reproducible from ``seed``."""
    rng = np.random.default_rng([seed, 104729, m])
    n = min(count, images.shape[0])
    x0 = images[:n]
    lo, hi = model.set_ranges[m]
    t = rng.integers(lo, hi, size=n)
    eps = rng.standard_normal(x0.shape)
    return model.schedule.q_sample(x0, t, eps), t, eps


# ---------------------------------------------------------------------------- checkpoints
def checkpoint_config(cfg: Config) -> dict:
    """Header ``config`` of a checkpoint: the model signature, version and the full run config."""
    return {"model_version": MODEL_VERSION, **cfg.model_signature(), "run": cfg.to_dict()}


def expected_signature(cfg: Config) -> dict:
    return {"model_version": MODEL_VERSION, **cfg.model_signature()}


def save_model(path, model: TimeAwareODU, optimizer: Adam | None = None, meta: dict | None = None):
    arrays = dict(model.arrays())
    if optimizer is not None:
        arrays.update(optimizer.state_arrays())
    return save_checkpoint(path, checkpoint_config(model.cfg), arrays, meta or {})


def load_model(path, cfg: Config | None = None, nthreads: int | None = None,
               backend: str | None = None):
    """Load a trained model from a checkpoint; returns ``(model, arrays, meta)``.

    Without ``cfg`` the run configuration stored in the checkpoint is used; with ``cfg``
    the checkpoint must match its signature (n, layers, sets, image size, physics, read-out,
    version), otherwise :class:`~optdiff.checkpoint.CheckpointError` says what differs.
    ``backend`` (default: the stored ``train.backend``) is where the loaded model's optics run.
    """
    if cfg is None:
        ccfg, arrays, meta = load_checkpoint(path)
        if ccfg.get("model_version") != MODEL_VERSION:
            raise CheckpointError(f"{path}: model_version {ccfg.get('model_version')!r}, "
                                  f"this optdiff reads model_version {MODEL_VERSION}")
        if "run" not in ccfg:
            raise CheckpointError(f"{path}: checkpoint has no run configuration")
        try:
            cfg = Config.from_dict(ccfg["run"])
        except ValueError as exc:
            raise CheckpointError(f"{path}: stored configuration is invalid: {exc}") from None
        want = expected_signature(cfg)
        diffs = [k for k, v in want.items() if json.loads(json.dumps(v)) != ccfg.get(k)]
        if diffs:
            raise CheckpointError(f"{path}: header disagrees with its stored run configuration on {diffs}")
    else:
        ccfg, arrays, meta = load_checkpoint(path, expect=expected_signature(cfg))
    if backend is not None:
        cfg.train.backend = backend
        cfg.validate()
    model = TimeAwareODU(cfg, nthreads=nthreads)
    try:
        model.load_arrays(arrays)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return model, arrays, meta


def write_json_atomic(path, obj) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, default=_json_default) + "\n"))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def _rewrite_csv(path: Path, fields, keep) -> None:
    """Keep only rows with ``keep(row)`` (used when resuming after a crash). A row that a kill
    cut short (missing fields, an unreadable step) is dropped, not kept or fatal."""
    if not path.exists():
        return

    def complete(r):
        try:
            return None not in r and all(r.get(k) not in (None, "") for k in fields) and keep(r)
        except ValueError:
            return False

    rows = []
    with open(path, newline="", errors="replace") as f:
        try:
            rows.extend(r for r in csv.DictReader(f) if complete(r))
        except csv.Error:  # an unreadable (cut or garbled) last line
            pass
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


# ---------------------------------------------------------------------------- trainer
class Trainer:
    """Train a :class:`~optdiff.model.TimeAwareODU`.

    Parameters
    ----------
    cfg : Config
    out_dir : path
        Where logs, summary and checkpoint go (created).
    images : array [K, H, W] or None
        Training + validation images in [-1, 1]; default :func:`load_images(cfg) <load_images>`.
    val_images : array or None
        Held-out images; default: ``cfg.data.val_count`` images split off ``images``.
    log : bool
        Write CSV logs (``train_log.csv``, ``val_log.csv``).
    """

    def __init__(self, cfg: Config, out_dir, images: np.ndarray | None = None,
                 val_images: np.ndarray | None = None, log: bool = True):
        cfg.validate()
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.out_dir)  # left by a run killed mid-write
        H = cfg.model.image_size
        if images is None:
            images = load_images(cfg)
        images = check_images(images, H, "training images")
        if val_images is None:
            images, val_images = split_train_val(images, cfg.data.val_count, cfg.train.seed)
        else:
            val_images = check_images(val_images, H, "validation images")
        self.images, self.val_images = images, val_images
        self.log = log
        from ..optics import set_num_threads

        set_num_threads(cfg.train.threads)
        self.model = TimeAwareODU(cfg, nthreads=cfg.train.threads)
        self.opt = Adam(self.model.params, self.model.M, cfg.train.beta1, cfg.train.beta2)
        self.rng = np.random.default_rng([cfg.train.seed, 31337])
        self.step, self.elapsed, self.distill_s = 0, 0.0, 0.0  # distill_s: the distillation start's seconds
        self.history: list[dict] = []
        self.val_history: list[dict] = []
        self.weights = (np.asarray(cfg.train.set_weights, dtype=np.float64) if cfg.train.set_weights
                        else np.ones(self.model.M))

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    @property
    def total_steps(self) -> int:
        return self.cfg.train.steps * self.model.M

    def schedule_of(self, step: int) -> tuple[int, int]:
        """(set, step within that set) of global ``step``."""
        M, S = self.model.M, self.cfg.train.steps
        if self.cfg.train.order == "interleaved":
            return step % M, step // M
        return step // S, step % S

    def _batch(self, m: int):
        B = self.cfg.train.batch
        idx = self.rng.integers(0, self.images.shape[0], size=B)
        lo, hi = self.model.set_ranges[m]
        t = self.rng.integers(lo, hi, size=B)
        eps = self.rng.standard_normal((B, self.model.H, self.model.W))
        x0 = self.images[idx]
        return self.model.schedule.q_sample(x0, t, eps), t, eps

    def calibrate(self) -> None:
        """Least-squares read-out of every set on a calibration batch (phases unchanged)."""
        rng = np.random.default_rng([self.cfg.train.seed, 271828])
        n = min(self.images.shape[0], max(256, self.cfg.train.batch))
        for m in range(self.model.M):
            idx = rng.integers(0, self.images.shape[0], size=n)
            lo, hi = self.model.set_ranges[m]
            t = rng.integers(lo, hi, size=n)
            eps = rng.standard_normal((n, self.model.H, self.model.W))
            r = self.model.schedule.q_sample(self.images[idx], t, eps)
            self.model.calibrate(m, r, t, eps)

    def validate(self) -> dict:
        """Per-set validation MSE on the fixed held-out batches: ``{"val_mse": [...], "zero_mse": [...]}``."""
        val, zero = [], []
        for m in range(self.model.M):
            r, t, eps = validation_batch(self.model, self.val_images, m, self.cfg.train.val_batch, self.cfg.train.seed)
            val.append(self.model.set_mse(m, r, t, eps))
            zero.append(float(np.mean(eps * eps)))
        return {"val_mse": val, "zero_mse": zero}

    # -------------------------------------------------------------- checkpoint I/O
    def save(self) -> Path:
        meta = {"step": self.step, "elapsed_s": self.elapsed, "rng_state": self.rng.bit_generator.state,
                "total_steps": self.total_steps, "images": int(self.images.shape[0]), "distill_s": self.distill_s}
        return save_model(self.checkpoint_path, self.model, self.opt, meta)

    def restore(self, path=None) -> int:
        path = Path(path) if path is not None else self.checkpoint_path
        _, arrays, meta = load_checkpoint(path, expect=expected_signature(self.cfg))
        try:
            self.model.load_arrays({k: v for k, v in arrays.items() if not k.startswith("adam")})
            self.opt.load_state_arrays(arrays)
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{path}: cannot resume: {exc}") from None
        try:
            self.rng.bit_generator.state = meta["rng_state"]
            self.step = int(meta["step"])
            self.elapsed, self.distill_s = float(meta.get("elapsed_s", 0.0)), float(meta.get("distill_s", 0.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: checkpoint meta lacks a valid step / RNG state ({exc})") from None
        return self.step

    # -------------------------------------------------------------- loop
    def fit(self, resume=False, max_steps: int | None = None, progress: bool | None = None) -> dict:
        """Train until ``train.steps * sets`` steps (or ``max_steps`` more steps) are done.

        ``resume``: False (fresh start), True (continue from ``out_dir/checkpoint.npz`` if it
        exists) or a checkpoint path. Returns the summary dict (also written to summary.json).
        """
        cfg = self.cfg
        tc = cfg.train
        progress = tc.progress if progress is None else progress
        train_csv, val_csv = self.out_dir / "train_log.csv", self.out_dir / "val_log.csv"
        resumed = False
        if resume:
            path = self.checkpoint_path if resume is True else Path(resume)
            if path.exists() or resume is not True:
                self.restore(path)
                resumed = True
        if not resumed:
            self.step, self.elapsed = 0, 0.0
            if tc.calibrate:
                self.calibrate()
            if tc.distill_steps:  # the distillation start; its seconds count in the wall-clock time
                self.elapsed = self.distill_s = distill_model(self.model, self.images, tc, progress)
            self.model.odu.check_light(self.model.params["phases"][0], "initial phases")
        if self.log:
            if resumed:
                s = self.step
                _rewrite_csv(train_csv, TRAIN_FIELDS, lambda r: int(r["step"]) < s)
                _rewrite_csv(val_csv, VAL_FIELDS, lambda r: int(r["step"]) <= s)
            else:
                for p, fields in ((train_csv, TRAIN_FIELDS), (val_csv, VAL_FIELDS)):
                    with open(p, "w", newline="") as f:
                        csv.DictWriter(f, fieldnames=fields).writeheader()
        end = self.total_steps if max_steps is None else min(self.total_steps, self.step + int(max_steps))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        tf = open(train_csv, "a", newline="") if self.log else None
        vf = open(val_csv, "a", newline="") if self.log else None
        tw = csv.DictWriter(tf, fieldnames=TRAIN_FIELDS) if tf else None
        vw = csv.DictWriter(vf, fieldnames=VAL_FIELDS) if vf else None
        if not resumed and self.log:
            self._log_val(vw, self.validate())
        ema_rate = None
        try:
            while self.step < end:
                t0 = time.perf_counter()
                m, local = self.schedule_of(self.step)
                r, t, eps = self._batch(m)
                loss, grads = self.model.loss_and_grads(m, r, t, eps, float(self.weights[m]))
                if not math.isfinite(loss) or not all(np.all(np.isfinite(g)) for g in grads.values()):
                    last = (f"the last good checkpoint is {self.checkpoint_path}"
                            if self.checkpoint_path.exists() else "no checkpoint was written yet")
                    raise TrainingError(
                        f"non-finite loss ({loss}) or gradient at step {self.step} (set {m}, set step "
                        f"{local}); training stopped, {last}. Lower train.lr or check the data.")
                lr = lr_at(local, tc.steps, tc.lr, tc.lr_schedule, tc.warmup, tc.lr_min_factor)
                rlr = lr_at(local, tc.steps, tc.readout_lr, tc.lr_schedule, tc.warmup, tc.lr_min_factor)
                lrs = {k: (lr if k == "phases" else rlr) for k in grads}
                self.opt.step(m, grads, lrs)
                self.step += 1
                dt = time.perf_counter() - t0
                self.elapsed += dt
                rate = tc.batch / dt if dt > 0 else float("inf")
                ema_rate = rate if ema_rate is None else 0.9 * ema_rate + 0.1 * rate
                row = {"step": self.step - 1, "set": m, "set_step": local, "loss": loss, "lr": lr,
                       "images_per_s": rate, "elapsed_s": self.elapsed}
                self.history.append(row)
                if tw:
                    tw.writerow(row)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(set=m, loss=f"{loss:.4f}", img_s=f"{ema_rate:.0f}")
                if tc.val_every and self.step % tc.val_every == 0 and self.log:
                    self._log_val(vw, self.validate())
                if tc.ckpt_every and self.step % tc.ckpt_every == 0:
                    if tf:
                        tf.flush()
                        vf.flush()
                    self.save()
        finally:
            if bar is not None:
                bar.close()
            if tf:
                tf.close()
                vf.close()
        self.save()
        return self.summarize()

    def _log_val(self, vw, res: dict) -> None:
        for m, (v, z) in enumerate(zip(res["val_mse"], res["zero_mse"])):
            row = {"step": self.step, "set": m, "val_mse": v, "zero_mse": z}
            self.val_history.append(row)
            if vw:
                vw.writerow(row)

    def summarize(self) -> dict:
        res = self.validate()
        light = self.model.light_fractions()
        worst = int(np.argmin(light))
        self.model.odu.check_light(
            self.model.params["phases"][worst], f"trained phases of set {worst}",
            hint="Training sent the light away from the camera: this set's prediction comes from the "
                 "digital read-out (skip term), not from the optics; a real device would see mostly "
                 "camera noise there.")
        rate = (self.step * self.cfg.train.batch / self.elapsed) if self.elapsed > 0 else None
        summary = {
            "steps": self.step, "total_steps": self.total_steps, "elapsed_s": self.elapsed,
            "images_per_s": rate, "distill_s": self.distill_s,
            "val_mse": res["val_mse"], "zero_mse": res["zero_mse"],
            "set_ranges": [list(s) for s in self.model.set_ranges],
            "light_fraction": light.tolist(),
            "geometry": self.model.odu.describe(),
            "checkpoint": str(self.checkpoint_path),
            "config": self.cfg.to_dict(),
        }
        write_json_atomic(self.out_dir / "summary.json", summary)
        return summary
