"""Reward finetuning study: steer a small MNIST ODU to "3"s with PRDP and with DDPO.

Trains (or reuses) the model of ``studies/finetune_mnist.toml`` (14x14, N = 64, 4 layers,
4 time sets, T = 100), trains one CNN classifier on MNIST (the reward: the probability of
class 3; also the FID's feature space), then finetunes the same model with each method and
seed at the same number of reward queries (rounds x batch). Reports per run the evaluation
reward and FID before and after, the reward curves (``reward_curves.png``, mean over seeds) and
the seconds per round. Each finished run is kept in ``--out/runs/<method>-s<seed>`` and not
redone when the script runs again.

Example (2 shared cores, ~40 min)::

    OMP_NUM_THREADS=1 python studies/finetune.py --mnist-dir /path/to/mnist --out runs/finetune
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the studies package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studies.common import REPO  # noqa: E402  (puts the in-tree optdiff on the path if needed)

# isort: split
from optdiff.config import load_config  # noqa: E402
from optdiff.data import load_dataset  # noqa: E402
from optdiff.diffusion.checkpoint import atomic_write  # noqa: E402
from optdiff.diffusion.trainer import Trainer, load_model, write_json_atomic  # noqa: E402
from optdiff.finetune import FinetuneConfig, Finetuner, make_reward  # noqa: E402
from optdiff.finetune.rewards import load_classifier, save_classifier, train_classifier  # noqa: E402


def base_model(args, out: Path) -> Path:
    ckpt = out / "base" / "checkpoint.npz"
    if ckpt.exists() and (out / "base" / "summary.json").exists():
        return ckpt
    cfg = load_config(REPO / "studies" / "finetune_mnist.toml")
    cfg.data.data_dir = args.mnist_dir
    cfg.validate()
    Trainer(cfg, out / "base").fit(resume=ckpt.exists())
    return ckpt


def classifier(args, out: Path, H: int):
    x, y = load_dataset("mnist", data_dir=args.mnist_dir, split="test", size=H, seed=0)
    path = out / "classifier.npz"
    if not path.exists():
        clf = train_classifier(x[1000:], y[1000:], "mnist", kind="cnn", held_out=(x[:1000], y[:1000]))
        save_classifier(clf, path)
    clf = load_classifier(path, image_size=H)
    acc = clf.accuracy(x[:1000], y[:1000])
    real = x[np.random.default_rng(12345).permutation(x.shape[0])[:1000]]
    return clf, real, acc


def run_one(args, ckpt: Path, clf, real, method: str, seed: int, out: Path) -> dict:
    folder = out / "runs" / f"{method}-s{seed}"
    if (folder / "summary.json").exists():
        return json.loads((folder / "summary.json").read_text())
    model, _, _ = load_model(ckpt, nthreads=1)
    cfg = FinetuneConfig(method=method, rounds=args.rounds, batch=args.batch, epochs=args.epochs,
                         minibatch=args.minibatch, lr=args.lr, beta=args.beta, clip=args.clip, kl=args.kl,
                         sets=args.sets, timestep_fraction=args.timestep_fraction, seed=seed,
                         eval_count=args.eval_count, eval_every=args.eval_every)
    monitor = make_reward("class:3", clf) if args.reward != "class:3" else None
    ft = Finetuner(model, make_reward(args.reward, clf), folder, cfg, space=clf, real_images=real,
                   base_checkpoint=str(ckpt), reward_name=args.reward, monitor=monitor,
                   log=lambda s: print(f"[{method} s{seed}] {s}", flush=True))
    resume = (folder / "checkpoint.npz").exists()
    return ft.fit(resume=resume)


def round_cost(args, ckpt: Path, clf, out: Path, repeats: int = 3) -> dict:
    """Seconds of one round's parts, timed interleaved in this process (the machine is shared, so
    only the ratios within a repeat are robust): sampling the batch, the reward queries, and one
    update epoch of PRDP and of DDPO on the same trajectories (parameters restored after each)."""
    from benchmarks.common import interleaved_times, quartiles

    model, _, _ = load_model(ckpt, nthreads=1)
    reward = make_reward("class:3", clf)
    saved = {k: v.copy() for k, v in model.params.items()}
    fts = {}
    for m in ("prdp", "ddpo"):
        cfg = FinetuneConfig(method=m, batch=args.batch, epochs=1, minibatch=args.minibatch, lr=args.lr,
                             beta=args.beta, clip=args.clip, timestep_fraction=args.timestep_fraction)
        fts[m] = Finetuner(model, reward, out / "cost" / m, cfg, log=lambda s: None)
    traj = fts["prdp"].policy.sample(args.batch, np.random.default_rng(0))
    rewards = reward(traj.final)

    def update(m):
        def run():
            fts[m]._update(traj, rewards, np.random.default_rng(1))
            for k, v in saved.items():
                model.params[k][...] = v
        return run

    tools = {"sample": lambda: fts["prdp"].policy.sample(args.batch, np.random.default_rng(0)),
             "reward": lambda: reward(traj.final), "prdp_epoch": update("prdp"), "ddpo_epoch": update("ddpo")}
    times = interleaved_times(tools, repeats)
    res = {k: quartiles(v) for k, v in times.items()}
    res["prdp_over_ddpo_median"] = float(np.median(np.array(times["prdp_epoch"]) / np.array(times["ddpo_epoch"])))
    res["prdp_epoch_over_sample_median"] = float(np.median(np.array(times["prdp_epoch"]) / np.array(times["sample"])))
    return res


def curves(out: Path, methods, seeds):
    import csv

    res = {}
    for m in methods:
        per = []
        for s in seeds:
            path = out / "runs" / f"{m}-s{s}" / "reward_curve.csv"
            if not path.exists():
                continue
            with open(path) as f:
                rows = [r for r in csv.DictReader(f) if r["round"] != "-1" and r["skipped"] == "0"]
            per.append(([float(r["queries"]) for r in rows], [float(r["reward_mean"]) for r in rows]))
        res[m] = per
    return res


def plot(out: Path, cur: dict, label: str = "class:3") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    colors = {"prdp": "tab:blue", "ddpo": "tab:orange"}
    for m, per in cur.items():
        for q, r in per:
            ax.plot(q, r, color=colors.get(m), alpha=0.35, lw=1)
        if per:
            n = min(len(r) for _, r in per)
            ax.plot(per[0][0][:n], np.mean([r[:n] for _, r in per], axis=0), color=colors.get(m), lw=2.2,
                    label=f"{m.upper()} (mean of {len(per)} seeds)")
    ax.set_xlabel("reward queries")
    ax.set_ylabel(f"batch mean reward ({label})")
    ax.set_title('Finetuning a 14x14 MNIST ODU towards "3"s')
    ax.legend(fontsize=8)
    path = out / "reward_curves.png"
    atomic_write(path, lambda f: fig.savefig(f, dpi=110, bbox_inches="tight", format="png"), binary=True)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mnist-dir", required=True, help="folder with the MNIST IDX files (t10k suffices)")
    p.add_argument("--out", default="runs/finetune")
    p.add_argument("--methods", default="prdp,ddpo")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--reward", default="class:3", choices=("class:3", "logclass:3"),
                   help="trained reward (logclass:3: its log; P(class 3) is then monitored)")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--minibatch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1e-2)
    p.add_argument("--kl", type=float, default=0.0)
    p.add_argument("--sets", default="all")
    p.add_argument("--timestep-fraction", type=float, default=0.5)
    p.add_argument("--eval-count", type=int, default=128)
    p.add_argument("--eval-every", type=int, default=4)
    p.add_argument("--cost-repeats", type=int, default=3, help="interleaved repeats of the cost measurement (0: skip)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    ckpt = base_model(args, out)
    model, _, _ = load_model(ckpt)
    clf, real, acc = classifier(args, out, model.H)
    print(f"classifier held-out accuracy {acc:.3f}", flush=True)
    t0 = time.time()
    results = {}
    for seed in seeds:
        for m in methods:
            results[f"{m}-s{seed}"] = run_one(args, ckpt, clf, real, m, seed, out)
    cur = curves(out, methods, seeds)
    plot(out, cur, args.reward)
    cost = round_cost(args, ckpt, clf, out, args.cost_repeats) if args.cost_repeats > 0 else None
    summary = {"classifier_accuracy": acc, "args": vars(args), "runs": results, "cost": cost,
               "elapsed_s": time.time() - t0}
    write_json_atomic(out / "results.json", summary)
    lines = ["# Reward finetuning: MNIST ODU towards \"3\"s (PRDP vs DDPO)", "",
             f"Command: `OMP_NUM_THREADS=1 python studies/finetune.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
             f"(2 CPU cores shared with other jobs). Classifier (CNN, reward and FID space) held-out accuracy {acc:.3f}.",
             f"Each run: {args.rounds} rounds x {args.batch} reward queries; evaluation on {args.eval_count} samples "
             "with fixed start noise.", "",
             "| run | eval reward before | after | FID before | after | s / round (sample + update) |",
             "| --- | --- | --- | --- | --- | --- |"]
    mon = args.reward != "class:3"
    if mon:
        lines[-2] = lines[-2].replace("| FID before", "| P(3) before | after | FID before")
        lines[-1] += " --- | --- |"
    for k, r in results.items():
        extra = f"{r['monitor_before']:.4f} | {r['monitor_after']:.4f} | " if mon else ""
        lines.append(f"| {k} | {r['eval_reward_before']:.4f} | {r['eval_reward_after']:.4f} | {extra}{r['fid_before']:.2f} | "
                     f"{r['fid_after']:.2f} | {r['mean_round_s']:.1f} ({r['mean_sample_s']:.1f} + {r['mean_update_s']:.1f}) |")
    for m in methods:
        rs = [results[f"{m}-s{s}"] for s in seeds if f"{m}-s{s}" in results]
        d = [r["eval_reward_after"] - r["eval_reward_before"] for r in rs]
        f = [r["fid_after"] - r["fid_before"] for r in rs]
        lines.append("")
        if mon:
            dm = [r["monitor_after"] - r["monitor_before"] for r in rs]
            lines.append(f"{m.upper()}: P(3) change {np.mean(dm):+.4f} (per seed {', '.join(f'{v:+.4f}' for v in dm)})")
        lines.append(f"{m.upper()}: eval reward change {np.mean(d):+.4f} (per seed {', '.join(f'{v:+.4f}' for v in d)}), "
                     f"FID change {np.mean(f):+.2f} (per seed {', '.join(f'{v:+.2f}' for v in f)})")
    if cost:
        lines += ["", f"Cost of a round's parts (B = {args.batch}, one update epoch, timestep fraction "
                  f"{args.timestep_fraction}; seconds, median [quartiles] of {args.cost_repeats} interleaved repeats, "
                  "shared machine):", ""]
        for k in ("sample", "reward", "prdp_epoch", "ddpo_epoch"):
            q = cost[k]
            lines.append(f"* {k}: {q[1]:.2f} [{q[0]:.2f}, {q[2]:.2f}]")
        lines.append(f"* PRDP epoch / DDPO epoch (within a repeat, median): {cost['prdp_over_ddpo_median']:.2f}; "
                     f"PRDP epoch / sampling: {cost['prdp_epoch_over_sample_median']:.2f}")
    atomic_write(out / "results.md", lambda fh: fh.write("\n".join(lines) + "\n"))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
