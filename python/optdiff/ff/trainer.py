"""Training runs of ``optdiff ff-train``: epochs with progress bars, checkpoints, resume, NaN stop, results.

One run = one model of :class:`~optdiff.ff.config.FFConfig` (a Forward-Forward network or a
backprop baseline) on one data split. Every ``checkpoint_every`` epochs ``checkpoint.npz`` (the
parameters, the Adam moments, the epoch, the log) is written atomically; ``resume=True`` continues
from it (the batches of epoch e are drawn from ``seed`` and e only, so a resumed run sees the same
data as an uninterrupted one). Non-finite activations or losses stop the run with a
``FloatingPointError`` naming the epoch and batch; nothing is written then, so the last good
checkpoint stays. At the end ``results.json`` and ``results.md`` (accuracy, parameters, FLOPs,
time) are written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..diffusion.checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint
from .config import FFConfig
from .data import load_split

__all__ = ["FFTrainer", "results_table"]

CHECKPOINT = "checkpoint.npz"


def _module_arrays(params, opt) -> dict:
    out = {}
    for j, p in enumerate(params):
        out[f"p{j}"] = p.detach().numpy().copy()
        st = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq", "step"):
            if key in st:
                out[f"p{j}.{key}"] = np.asarray(st[key].detach().numpy()).copy()
    return out


def _load_module_arrays(params, opt, arrays) -> None:
    import torch

    for j, p in enumerate(params):
        if f"p{j}" not in arrays or arrays[f"p{j}"].shape != tuple(p.shape):
            raise CheckpointError(f"checkpoint does not match the model: p{j} missing or of another shape")
        with torch.no_grad():
            p.copy_(torch.from_numpy(arrays[f"p{j}"]))
        if f"p{j}.exp_avg" in arrays:
            opt.state[p] = {k: torch.from_numpy(arrays[f"p{j}.{k}"].copy()) for k in ("exp_avg", "exp_avg_sq", "step")}


def results_table(rows: list[dict]) -> str:
    """Markdown table of result rows (keys as in ``results.json``)."""
    head = "| model | inference | val acc | test acc | params | FLOPs/inference | train time (s) |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['inference']} | {r['val_acc']:.4f} | {r['test_acc']:.4f} | "
                     f"{r['params']:,} | {r['flops']:,} | {r['train_seconds']:.1f} |")
    return "\n".join(lines) + "\n"


class FFTrainer:
    """Train and evaluate one configuration; ``data`` may pass the three splits in (studies, tests)."""

    def __init__(self, cfg: FFConfig, out, data=None, progress: bool = True, name: str | None = None):
        import torch

        self.cfg = cfg.validate()
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        torch.set_num_threads(cfg.train.threads)
        if data is None:
            d = cfg.data
            *data, self.source = load_split(d.dataset, d.data_dir or None, d.counts, d.size, d.seed, d.pad)
        self.train_set, self.val_set, self.test_set = data
        m, t = cfg.model, cfg.train
        self.num_classes = int(max(int(s[1].max()) for s in data)) + 1
        shape = self.train_set[0].shape[1:]
        self.name = name or (m.kind if m.kind != "ff" else "ff " + "+".join(b["kind"] for b in m.layers))
        if m.kind == "ff":
            from .network import FFNet

            self.net = FFNet(m.layers, shape, self.num_classes, theta=m.threshold, scale=m.scale,
                             embedding=m.embedding, strength=m.strength, lr=t.lr, seed=t.seed,
                             nthreads=t.threads, vote=m.vote)
        else:
            from .baselines import BASELINES

            torch.manual_seed(t.seed)
            self.net = BASELINES[m.kind](image_size=shape[0], num_classes=self.num_classes)
            self.opt = torch.optim.Adam(self.net.parameters(), lr=t.lr)
        self.epoch, self.log, self.train_seconds = 0, [], 0.0

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT

    def _arrays(self) -> dict:
        if self.cfg.model.kind == "ff":
            return self.net.state_arrays()
        return _module_arrays(list(self.net.parameters()), self.opt)

    def _identity(self) -> dict:
        d = self.cfg.to_dict()
        d["train"] = {k: v for k, v in d["train"].items() if k not in ("epochs", "checkpoint_every", "threads")}
        return d

    def save(self) -> None:
        save_checkpoint(self.checkpoint_path, self._identity(), self._arrays(),
                        meta={"epoch": self.epoch, "log": self.log, "train_seconds": self.train_seconds})

    def resume(self) -> bool:
        """Load ``checkpoint.npz`` if there is one; False when starting fresh."""
        if not self.checkpoint_path.exists():
            return False
        cfg, arrays, meta = load_checkpoint(self.checkpoint_path)
        if cfg != json.loads(json.dumps(self._identity())):
            raise CheckpointError(f"{self.checkpoint_path}: written for another configuration (only [train] epochs, "
                                  f"checkpoint_every and threads may change on --resume)")
        try:
            if self.cfg.model.kind == "ff":
                self.net.load_arrays(arrays)
            else:
                _load_module_arrays(list(self.net.parameters()), self.opt, arrays)
        except ValueError as exc:
            raise CheckpointError(f"{self.checkpoint_path}: {exc}") from None
        self.epoch, self.log, self.train_seconds = int(meta["epoch"]), list(meta["log"]), float(meta["train_seconds"])
        return True

    # ------------------------------------------------------------------ training
    def _bar(self, total, desc):
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)

    def _epoch(self) -> list[float]:
        t = self.cfg.train
        x, y = self.train_set
        rng = np.random.default_rng([t.seed, self.epoch, 0xFF])
        perm = rng.permutation(len(x))
        batches = range(0, len(x), t.batch)
        bar = self._bar(len(batches), f"epoch {self.epoch + 1}/{t.epochs}")
        losses = []
        try:
            for b, s in enumerate(batches):
                i = perm[s:s + t.batch]
                try:
                    losses.append(self._step(x[i], y[i], rng))
                except FloatingPointError as exc:
                    kept = (f"the last checkpoint ({self.checkpoint_path}, epoch {self._saved_epoch()}) is kept"
                            if self.checkpoint_path.exists() else "no checkpoint was written yet")
                    raise FloatingPointError(f"training stopped at epoch {self.epoch + 1}, batch {b + 1}: {exc}; "
                                             f"{kept}") from None
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return list(np.mean(np.array(losses, float), axis=0).reshape(-1))

    def _saved_epoch(self):
        try:
            return load_checkpoint(self.checkpoint_path)[2]["epoch"]
        except (CheckpointError, KeyError):
            return "?"

    def _step(self, xb, yb, rng):
        if self.cfg.model.kind == "ff":
            return self.net.train_step(xb, yb, rng)
        import torch
        import torch.nn.functional as F

        self.net.train()
        loss = F.cross_entropy(self.net(torch.from_numpy(xb)[:, None]), torch.from_numpy(yb).long())
        if not torch.isfinite(loss):
            raise FloatingPointError("the cross-entropy loss is not finite")
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return [float(loss.detach())]

    def train(self) -> None:
        t = self.cfg.train
        while self.epoch < t.epochs:
            t0 = time.perf_counter()
            losses = self._epoch()
            dt = time.perf_counter() - t0
            self.train_seconds += dt
            self.epoch += 1
            self.log.append({"epoch": self.epoch, "losses": [round(v, 6) for v in losses], "seconds": round(dt, 3)})
            if self.epoch % t.checkpoint_every == 0 or self.epoch == t.epochs:
                self.save()
            if self.progress:
                print(f"  epoch {self.epoch}/{t.epochs}: loss per block {np.round(losses, 4).tolist()}, "
                      f"{dt:.1f} s", flush=True)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> list[dict]:
        """Result rows (validation and test accuracy per inference method, costs, time)."""
        from .costs import ffnet_costs, model_params, torch_flops

        (xt, yt), (xv, yv), (xs, ys) = self.train_set, self.val_set, self.test_set
        base = {"model": self.name, "train_seconds": self.train_seconds, "epochs": self.epoch}
        if self.cfg.model.kind != "ff":
            from .baselines import predict

            c = {"params": model_params(self.net), "flops": torch_flops(self.net, (1, *xt.shape[1:]))}
            return [{**base, **c, "inference": "softmax", "val_acc": float((predict(self.net, xv) == yv).mean()),
                     "test_acc": float((predict(self.net, xs) == ys).mean())}]
        from .readout import RidgeReadout

        t0 = time.perf_counter()
        ro = RidgeReadout(self.cfg.train.readout_lambda).fit(self.net.features(xt), yt, self.num_classes)
        readout_seconds = time.perf_counter() - t0
        costs = ffnet_costs(self.net, ro.W.shape[0])
        rows = [{**base, "inference": "goodness", "params": costs["params"], "flops": costs["flops_goodness"],
                 "val_acc": float((self.net.predict_goodness(xv) == yv).mean()),
                 "test_acc": float((self.net.predict_goodness(xs) == ys).mean())},
                {**base, "inference": "readout", "params": costs["params"] + costs["readout_params"],
                 "flops": costs["flops_readout"], "readout_seconds": readout_seconds,
                 "val_acc": float((ro.predict(self.net.features(xv)) == yv).mean()),
                 "test_acc": float((ro.predict(self.net.features(xs)) == ys).mean())}]
        for r in rows:
            r["optics_sim_flops"] = costs["optics_sim_flops"]
        return rows

    def run(self, resume: bool = False) -> list[dict]:
        if resume and self.resume() and self.progress:
            print(f"  resumed from {self.checkpoint_path} at epoch {self.epoch}", flush=True)
        elif not resume and self.checkpoint_path.exists():
            raise FileExistsError(f"{self.checkpoint_path} exists: pass --resume to continue it or choose another --out")
        self.train()
        rows = self.evaluate()
        atomic_write(self.out / "results.json", lambda f: json.dump(rows, f, indent=1))
        atomic_write(self.out / "results.md", lambda f: f.write(results_table(rows)))
        return rows
