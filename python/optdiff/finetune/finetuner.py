"""The online finetuning loop: rounds of sampling, reward queries and PRDP / DDPO updates.

Each round ``r``: draw ``batch`` trajectories from the current model (seed ``[seed, r, 1]``),
query the reward once per final image, then ``epochs`` passes of minibatch updates (Adam, one
step per touched time set per minibatch; shuffles seeded ``[seed, r, 2]``). Every
``eval_every`` rounds (and the last) the same ``eval_count`` evaluation samples (fixed start
noise) are scored: mean reward and FID to the data in the classifier's features, so reward
hacking shows as a rising FID.

Outputs in ``out``: ``checkpoint.npz`` (the finetuned model, loadable by ``optdiff sample``,
with the Adam state and the round in ``meta``; written atomically after every round),
``reference.npz`` (the pretrained model, for the KL term and for resuming), ``reward_curve.csv``
and ``.png``, ``samples_before.png`` / ``samples_after.png`` and ``summary.json``.

A reward that fails (raises, NaN, wrong shape) skips the round with a message; after
``max_reward_failures`` consecutive failures :class:`FinetuneError` stops the run, the
checkpoint of the last completed round kept. ``fit(resume=True)`` continues from the checkpoint
and gives the same result as an uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..diffusion.checkpoint import CheckpointError, atomic_write, load_checkpoint
from ..diffusion.model import TimeAwareODU
from ..diffusion.optim import Adam
from ..diffusion.trainer import expected_signature, save_model, write_json_atomic
from ._grads import grad_norm
from .ddpo import advantages, ddpo_minibatch
from .policy import ODUPolicy, parse_sets
from .prdp import prdp_minibatch
from .rewards import RewardError, evaluate_reward

__all__ = ["FinetuneConfig", "Finetuner", "FinetuneError", "CURVE_FIELDS"]

CURVE_FIELDS = ["round", "queries", "skipped", "reward_mean", "reward_std", "loss", "clipped_frac",
                "mean_abs_log_ratio", "kl", "grad_norm", "eval_reward", "eval_monitor", "fid", "sample_s", "update_s",
                "eval_s", "round_s", "message"]

#: Default proximal clip per method (PRDP: of each log-ratio; DDPO: of each ratio around 1).
DEFAULT_CLIP = {"prdp": 1e-2, "ddpo": 1e-2}


class FinetuneError(RuntimeError):
    """Finetuning cannot go on (e.g. the reward failed too often); the checkpoint is kept."""


@dataclass
class FinetuneConfig:
    method: str = "prdp"
    rounds: int = 20
    batch: int = 32
    epochs: int = 2
    minibatch: int = 16
    lr: float = 3e-3
    readout_lr: float = 0.0
    beta: float = 0.1
    clip: float | None = None
    kl: float = 0.0
    adv_clip: float = 5.0
    sets: str = "all"
    steps: int | None = None
    timestep_fraction: float = 1.0
    seed: int = 0
    eval_count: int = 128
    eval_every: int = 5
    max_reward_failures: int = 3

    def validate(self) -> FinetuneConfig:
        def bad(name, why):
            raise ValueError(f"--{name.replace('_', '-')}: {why}")

        if self.method not in ("prdp", "ddpo"):
            bad("method", f"must be 'prdp' or 'ddpo', got {self.method!r}")
        for name, lo in (("rounds", 1), ("batch", 2), ("epochs", 1), ("minibatch", 2), ("eval_count", 2),
                         ("eval_every", 1), ("max_reward_failures", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                bad(name, f"must be an integer >= {lo}, got {v!r}")
        for name, lo, hi in (("lr", 0.0, 10.0), ("readout_lr", 0.0, 10.0), ("beta", 0.0, 1e6), ("kl", 0.0, 1e6),
                             ("adv_clip", 0.0, 1e6), ("timestep_fraction", 0.0, 1.0)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
                bad(name, f"must be a number in [{lo:g}, {hi:g}], got {v!r}")
        if self.beta <= 0 or self.timestep_fraction <= 0 or self.adv_clip <= 0:
            bad("beta" if self.beta <= 0 else "timestep_fraction" if self.timestep_fraction <= 0 else "adv_clip",
                "must be > 0")
        if self.clip is None:
            self.clip = DEFAULT_CLIP[self.method]
        if not isinstance(self.clip, (int, float)) or not 0 < self.clip < 1:
            bad("clip", f"must be a number in (0, 1), got {self.clip!r}")
        return self


class Finetuner:
    """Finetune ``model`` (updated in place) on ``reward``.

    ``reference``: the pretrained parameters (default: a copy of ``model``'s now);
    ``space``: a feature space (``features(images)``) for the FID, with ``real_images``;
    ``monitor``: a second function of the images, evaluated (not trained on) with the evaluation
    samples, e.g. the class probability when training on its logarithm;
    ``log``: a callable for messages (default ``print``).
    """

    def __init__(self, model: TimeAwareODU, reward, out, cfg: FinetuneConfig, reference: dict | None = None,
                 space=None, real_images=None, base_checkpoint: str = "", reward_name: str = "", monitor=None,
                 log=print, progress: bool = False):
        self.model, self.reward, self.cfg = model, reward, cfg.validate()
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.policy = ODUPolicy(model, steps=cfg.steps, sets=parse_sets(cfg.sets, model.M))
        self.reference = {k: v.copy() for k, v in (reference or model.params).items()}
        self.space = space
        self.real_feats = space.features(real_images) if space is not None and real_images is not None else None
        self.base_checkpoint, self.reward_name = str(base_checkpoint), reward_name
        self.log, self.progress, self.monitor = log, progress, monitor
        self.adam = Adam(model.params, model.M)
        self.round = 0
        self.rows: list[dict] = []

    # ------------------------------------------------------------------ files
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.npz"

    def _meta(self) -> dict:
        return {"finetune": {**asdict(self.cfg), "round": self.round, "reward": self.reward_name,
                             "base_checkpoint": self.base_checkpoint}}

    def save(self) -> None:
        save_model(self.checkpoint_path, self.model, self.adam, self._meta())

    def _write_curve(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CURVE_FIELDS)
        w.writeheader()
        w.writerows(self.rows)
        atomic_write(self.out / "reward_curve.csv", lambda f: f.write(buf.getvalue()))

    def restore(self) -> None:
        """Continue from ``checkpoint.npz``: parameters, Adam state, round, curve; the reference from
        ``reference.npz``. A checkpoint of another geometry or method is refused."""
        want = expected_signature(self.model.cfg)
        _, arrays, meta = load_checkpoint(self.checkpoint_path, expect=want)
        ft = meta.get("finetune")
        if not isinstance(ft, dict) or "round" not in ft:
            raise CheckpointError(f"{self.checkpoint_path}: not a finetuning checkpoint (no 'finetune' meta)")
        if ft.get("method") != self.cfg.method:
            raise CheckpointError(f"{self.checkpoint_path}: made by --method {ft.get('method')}, "
                                  f"not {self.cfg.method}")
        try:
            self.model.load_arrays({k: v for k, v in arrays.items() if not k.startswith("adam")})
            self.adam.load_state_arrays(arrays)
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{self.checkpoint_path}: {exc}") from None
        _, ref, _ = load_checkpoint(self.out / "reference.npz", expect=want)
        self.reference = {k: np.array(ref[k]) for k in self.model.params}
        self.round = int(ft["round"])
        rows = []
        path = self.out / "reward_curve.csv"
        if path.exists():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("round", "").lstrip("-").isdigit()
                        and int(r["round"]) < self.round]
        self.rows = rows

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict:
        x = self.policy.generate(self.cfg.eval_count, seed=[self.cfg.seed, 99991])
        res = {"samples": x}
        try:
            res["reward"] = float(evaluate_reward(self.reward, x).mean())
        except RewardError as exc:
            res["reward"] = float("nan")
            self.log(f"evaluation reward failed: {exc}")
        if self.monitor is not None:
            res["monitor"] = float(evaluate_reward(self.monitor, x).mean())
        if self.real_feats is not None:
            from ..evaluation.metrics import frechet_distance

            res["fid"] = frechet_distance(self.real_feats, self.space.features(x))
        return res

    # ------------------------------------------------------------------ one round
    def _update(self, traj, rewards, rng) -> dict:
        c, pol = self.cfg, self.policy
        S = len(traj.steps)
        n_used = max(1, int(math.ceil(c.timestep_fraction * S)))
        lrs = {"phases": c.lr, "scale": c.readout_lr, "offset": c.readout_lr, "skip": c.readout_lr}
        ref_mu = ref_logp = None
        if c.method == "prdp":
            # the pretrained model's transitions at the stored states: PRDP's log-ratios are taken
            # against it (the KL anchor of the RL objective), once per round
            ref_mu = np.stack([pol.mean(traj.x_t[j], int(traj.steps[j]), self.reference) for j in range(S)])
            ref_logp = np.stack([pol.transition_log_prob(traj.x_next[j], ref_mu[j], int(traj.steps[j]))
                                 for j in range(S)])
        adv = advantages(rewards, c.adv_clip) if c.method == "ddpo" else None
        stats_all, gnorms = [], []
        for _ in range(c.epochs):
            perm = rng.permutation(c.batch)
            for start in range(0, c.batch, c.minibatch):
                idx = np.sort(perm[start:start + c.minibatch]) if c.method == "ddpo" else perm[start:start + c.minibatch]
                if len(idx) < 2:
                    continue
                used = np.sort(rng.choice(S, size=n_used, replace=False)) if n_used < S else np.arange(S)
                sub = traj.subset(idx)
                if c.method == "prdp":
                    # every pair of the minibatch's trajectories (the paper pairs all images of a prompt)
                    pairs = np.stack(np.triu_indices(len(idx), 1), axis=1)
                    st, acc = prdp_minibatch(pol, sub, rewards[idx], pairs, used, c.beta, c.clip, c.kl,
                                             ref_mu[:, idx], ref_logp[:, idx])
                else:
                    st, acc = ddpo_minibatch(pol, sub, adv[idx], used, c.clip)
                gn = grad_norm(acc)
                if not math.isfinite(gn):
                    raise FloatingPointError(f"non-finite gradient in round {self.round}")
                for m, g in acc.items():
                    self.adam.step(m, g, lrs)
                stats_all.append(st)
                gnorms.append(gn)
        keys = ("loss", "clipped_frac", "mean_abs_log_ratio")
        out = {k: float(np.mean([s[k] for s in stats_all])) for k in keys}
        out["kl"] = float(np.mean([s.get("kl", 0.0) for s in stats_all]))
        out["grad_norm"] = float(np.mean(gnorms))
        return out

    def run_round(self) -> dict:
        c, r = self.cfg, self.round
        t0 = time.perf_counter()
        traj = self.policy.sample(c.batch, np.random.default_rng([c.seed, r, 1]), progress=self.progress)
        t1 = time.perf_counter()
        row = {"round": r, "queries": (r + 1) * c.batch, "skipped": 0, "sample_s": round(t1 - t0, 3)}
        try:
            rewards = evaluate_reward(self.reward, traj.final)
        except RewardError as exc:
            row.update(skipped=1, message=str(exc)[:200], round_s=round(time.perf_counter() - t0, 3))
            return row
        st = self._update(traj, rewards, np.random.default_rng([c.seed, r, 2]))
        t2 = time.perf_counter()
        row.update(reward_mean=float(rewards.mean()), reward_std=float(rewards.std()), update_s=round(t2 - t1, 3), **st)
        return row

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False) -> dict:
        from ..plots import save_grid

        c = self.cfg
        if resume:
            self.restore()
            self.log(f"resuming at round {self.round} of {c.rounds}")
        else:
            if self.checkpoint_path.exists():
                raise FileExistsError(f"{self.checkpoint_path} exists: pass --resume to continue it, or another --out")
            save_model(self.out / "reference.npz", _with_params(self.model, self.reference))
            ev = self.evaluate()
            save_grid(ev["samples"][:64], self.out / "samples_before.png", scale=3)
            self.rows = [{"round": -1, "queries": 0, "skipped": 0, "eval_reward": ev["reward"],
                          "eval_monitor": ev.get("monitor", ""), "fid": ev.get("fid", ""),
                          "message": "before finetuning"}]
            self._write_curve()
            self.log(f"before: eval reward {ev['reward']:.4f}" + (f", FID {ev['fid']:.2f}" if "fid" in ev else ""))
        failures = 0
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=c.rounds, initial=self.round, desc=f"finetune ({c.method})")
        try:
            while self.round < c.rounds:
                t0 = time.perf_counter()
                row = self.run_round()
                if row["skipped"]:
                    # no update: the round is recorded (and saved) as skipped, the parameters unchanged
                    failures += 1
                    self.log(f"round {self.round}: skipped ({row['message']}); {failures} of "
                             f"{c.max_reward_failures} allowed consecutive failures")
                    self.round += 1
                    self.rows.append(row)
                    self.save()
                    self._write_curve()
                    if failures >= c.max_reward_failures:
                        raise FinetuneError(f"the reward failed {failures} rounds in a row (last: {row['message']}); "
                                            f"stopped after round {self.round - 1}, the model (unchanged by the "
                                            f"failed rounds) is kept at {self.checkpoint_path}")
                    continue
                failures = 0
                last = self.round + 1 == c.rounds
                if last or (self.round + 1) % c.eval_every == 0:
                    te = time.perf_counter()
                    ev = self.evaluate()
                    row.update(eval_reward=ev["reward"], eval_monitor=ev.get("monitor", ""), fid=ev.get("fid", ""),
                               eval_s=round(time.perf_counter() - te, 3))
                    if last:
                        save_grid(ev["samples"][:64], self.out / "samples_after.png", scale=3)
                row["round_s"] = round(time.perf_counter() - t0, 3)
                self.round += 1
                self.rows.append(row)
                self.save()
                self._write_curve()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(reward=f"{row['reward_mean']:.3f}")
                elif not self.progress:
                    self.log(f"round {self.round - 1}: reward {row['reward_mean']:.4f} +- {row['reward_std']:.4f}, "
                             f"loss {row['loss']:.3g}, clipped {row['clipped_frac']:.2f}"
                             + (f", eval {row['eval_reward']:.4f}" if "eval_reward" in row else "")
                             + (f", FID {row['fid']:.2f}" if row.get("fid", "") != "" else ""))
        finally:
            if bar is not None:
                bar.close()
        summary = self.summary()
        write_json_atomic(self.out / "summary.json", summary)
        try:
            plot_curve(self.rows, self.out / "reward_curve.png", f"{c.method.upper()}: {self.reward_name}")
        except ImportError:  # matplotlib missing: the CSV has the numbers
            pass
        return summary

    def summary(self) -> dict:
        done = [r for r in self.rows if str(r.get("round")) not in ("-1",) and str(r.get("skipped")) in ("0", "0.0")]
        evals = [r for r in self.rows if r.get("eval_reward", "") not in ("", None)]
        f = lambda v: float(v) if v not in ("", None) else None  # noqa: E731
        return {"method": self.cfg.method, "reward": self.reward_name, "rounds": self.round,
                "queries": self.round * self.cfg.batch, "config": asdict(self.cfg),
                "eval_reward_before": f(evals[0]["eval_reward"]) if evals else None,
                "fid_before": f(evals[0].get("fid")) if evals else None,
                "eval_reward_after": f(evals[-1]["eval_reward"]) if len(evals) > 1 else None,
                "fid_after": f(evals[-1].get("fid")) if len(evals) > 1 else None,
                "monitor_before": f(evals[0].get("eval_monitor")) if evals else None,
                "monitor_after": f(evals[-1].get("eval_monitor")) if len(evals) > 1 else None,
                "mean_round_s": float(np.mean([float(r["round_s"]) for r in done])) if done else None,
                "mean_sample_s": float(np.mean([float(r["sample_s"]) for r in done])) if done else None,
                "mean_update_s": float(np.mean([float(r["update_s"]) for r in done])) if done else None}


def _with_params(model: TimeAwareODU, params: dict) -> TimeAwareODU:
    """A shallow stand-in of ``model`` carrying ``params`` (for saving the reference)."""
    clone = object.__new__(TimeAwareODU)
    clone.__dict__.update(model.__dict__)
    clone.params = params
    return clone


def plot_curve(rows, path, title: str = "") -> None:
    from ..plots import _plt, _savefig

    plt = _plt()
    tr = [r for r in rows if str(r.get("round")) != "-1" and str(r.get("skipped")) in ("0", "0.0")]
    ev = [r for r in rows if r.get("eval_reward", "") not in ("", None)]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    if tr:
        q = np.array([float(r["queries"]) for r in tr])
        m = np.array([float(r["reward_mean"]) for r in tr])
        s = np.array([float(r["reward_std"]) for r in tr])
        ax.plot(q, m, label="batch reward (mean)")
        ax.fill_between(q, m - s, m + s, alpha=0.2)
    if ev:
        ax.plot([float(r["queries"]) for r in ev], [float(r["eval_reward"]) for r in ev], "o-", label="eval reward")
    ax.set_xlabel("reward queries")
    ax.set_ylabel("reward")
    fids = [(float(r["queries"]), float(r["fid"])) for r in ev if r.get("fid", "") not in ("", None)]
    if fids:
        ax2 = ax.twinx()
        ax2.plot(*zip(*fids), "s--", color="tab:red", label="FID")
        ax2.set_ylabel("FID to the data", color="tab:red")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title)
    _savefig(fig, path)
