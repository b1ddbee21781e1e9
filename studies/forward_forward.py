"""Forward-Forward with optics between layers: the reference comparison on MNIST 32x32.

Oguz et al. (Optics Letters 48, 5249, 2023) trained with Forward-Forward (FF) 2 conv + optics +
1 FC, 3 conv + 1 FC, and with backprop 2 conv + 1 FC, on a 4000/1000/1000 split of MNIST at
32 x 32. This study runs the same comparison with optdiff.ff, for each optical transform:

* ``bp-2conv-fc``          backprop, conv16-conv16-linear (cross-entropy)
* ``lenet5``               backprop LeNet-5
* ``ff-3conv-fc``          FF conv16-conv16-conv16(no pool)-fc256
* ``ff-2conv-fs-fc``       FF conv16-conv16, fixed random free-space phase stack (optdiff PhaseStack), fc256
* ``ff-2conv-fs-adj-fc``   the same with the masks trained on their own goodness through the adjoint
* ``ff-2conv-fibre-fc``    FF conv16-conv16, multimode fibre (240 modes, linear), fc256
* ``ff-2conv-kerr-fc``     the same with the Kerr nonlinearity (1 rad)

Only MNIST's 10k test file is on this machine, so the 4000/1000/1000 images are drawn without
overlap from it (seeded). Each seed runs in its own process (``--seeds 1``); ``--summarise``
gathers ``runs.jsonl`` into ``results.md`` (mean and spread over seeds) and ``accuracy.png``.
``--untrained`` adds the floor: the ridge read-out on the FF networks before any training.

    OMP_NUM_THREADS=1 python studies/forward_forward.py --mnist-dir DIR --seeds 0 &
    OMP_NUM_THREADS=1 python studies/forward_forward.py --mnist-dir DIR --seeds 1 &
    python studies/forward_forward.py --summarise
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import studies.common  # noqa: F401,E402  (finds optdiff)
from optdiff.diffusion.checkpoint import atomic_write  # noqa: E402
from optdiff.ff.config import FFConfig  # noqa: E402
from optdiff.ff.data import load_split  # noqa: E402
from optdiff.ff.trainer import FFTrainer  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "forward_forward"

CONV = [{"kind": "conv", "channels": 16}, {"kind": "conv", "channels": 16}]
FC = [{"kind": "fc", "units": 256}]
FS = {"kind": "freespace", "layers": 2, "upsample": 2, "camera": 32, "distance": 3e-3}
FIBRE = {"kind": "fibre", "modes": 240, "pixels": 1024}
MODELS = {
    "bp-2conv-fc": ("bp-2conv-fc", None),
    "lenet5": ("lenet5", None),
    "ff-3conv-fc": ("ff", CONV + [{"kind": "conv", "channels": 16, "pool": False}] + FC),
    "ff-2conv-fs-fc": ("ff", CONV + [FS] + FC),
    "ff-2conv-fs-adj-fc": ("ff", CONV + [{**FS, "trainable": True}] + FC),
    "ff-2conv-fibre-fc": ("ff", CONV + [FIBRE] + FC),
    "ff-2conv-kerr-fc": ("ff", CONV + [{**FIBRE, "kerr": 1.0}] + FC),
}


def config(name: str, seed: int, ff_epochs: int, bp_epochs: int, lr: float) -> FFConfig:
    kind, layers = MODELS[name]
    model = {"kind": kind, "embedding": "grating", "vote": "last", "threshold": 1.0, "scale": "mean"}
    if layers is not None:
        model["layers"] = [dict(b, **({"seed": seed} if b["kind"] in ("freespace", "fibre") else {})) for b in layers]
    return FFConfig.from_dict({
        "data": {"dataset": "mnist", "counts": [4000, 1000, 1000], "size": 32, "seed": seed},
        "model": model,
        "train": {"epochs": ff_epochs if kind == "ff" else bp_epochs, "batch": 100,
                  "lr": lr if kind == "ff" else 1e-3, "seed": seed, "threads": 1}})


def run(args) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        *data, source = load_split("mnist", args.mnist_dir, (4000, 1000, 1000), 32, seed)
        for name in args.models:
            t0 = time.perf_counter()
            cfg = config(name, seed, args.ff_epochs, args.bp_epochs, args.lr)
            tr = FFTrainer(cfg, Path(args.runs) / f"{name}-s{seed}", data=data, progress=False, name=name)
            rows = tr.run(resume=True)
            for r in rows:
                r.update(seed=seed, source_split=source, wall_seconds=time.perf_counter() - t0,
                         log=tr.log)
                with open(OUT / "runs.jsonl", "a") as f:
                    f.write(json.dumps(r) + "\n")
            print(name, seed, [(r["inference"], round(r["test_acc"], 4)) for r in rows],
                  f"{time.perf_counter() - t0:.0f} s", flush=True)


def untrained(args) -> None:
    """The ridge read-out on the FF networks before any training (random conv weights): the floor."""
    from optdiff.ff.readout import RidgeReadout

    OUT.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        *data, source = load_split("mnist", args.mnist_dir, (4000, 1000, 1000), 32, seed)
        (xt, yt), (xv, yv), (xs, ys) = data
        for name in args.models:
            if MODELS[name][0] != "ff":
                continue
            cfg = config(name, seed, 1, 1, args.lr)
            tr = FFTrainer(cfg, Path(args.runs) / f"{name}-untrained-s{seed}", data=data, progress=False, name=name)
            ro = RidgeReadout(cfg.train.readout_lambda).fit(tr.net.features(xt), yt, 10)
            r = {"model": f"{name} (untrained)", "inference": "readout", "seed": seed, "epochs": 0,
                 "train_seconds": 0.0, "params": tr.net.parameter_count() + ro.W.size + ro.bias.size, "flops": 0,
                 "val_acc": float((ro.predict(tr.net.features(xv)) == yv).mean()),
                 "test_acc": float((ro.predict(tr.net.features(xs)) == ys).mean()), "source_split": source}
            with open(OUT / "runs.jsonl", "a") as f:
                f.write(json.dumps(r) + "\n")
            print(r["model"], seed, round(r["test_acc"], 4), flush=True)


def summarise() -> None:
    rows = [json.loads(line) for line in open(OUT / "runs.jsonl")]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["model"], r["inference"]), {})[r["seed"]] = r  # a rerun replaces its seed
    lines = ["| model | inference | seeds | test acc (mean +- std) | val acc | params | FLOPs/inference | "
             "optics sim FLOPs | train time (s) | epochs |", "|---|---|---|---|---|---|---|---|---|---|"]
    order = list(MODELS) + [f"{m} (untrained)" for m in MODELS]
    summary = []
    for (model, inf), by_seed in sorted(groups.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])):
        rs = list(by_seed.values())
        acc = np.array([r["test_acc"] for r in rs])
        val = np.array([r["val_acc"] for r in rs])
        t = np.array([r["train_seconds"] for r in rs])
        s = {"model": model, "inference": inf, "seeds": sorted(by_seed), "test_mean": acc.mean(),
             "test_std": acc.std(ddof=1) if len(acc) > 1 else 0.0, "val_mean": val.mean(), "params": rs[0]["params"],
             "flops": rs[0]["flops"], "optics_sim_flops": rs[0].get("optics_sim_flops", 0), "train_s": t.mean(),
             "epochs": rs[0]["epochs"]}
        summary.append(s)
        lines.append(f"| {model} | {inf} | {len(rs)} | {100 * s['test_mean']:.2f} +- {100 * s['test_std']:.2f} % | "
                     f"{100 * s['val_mean']:.2f} % | {s['params']:,} | {s['flops']:,} | {s['optics_sim_flops']:,} | "
                     f"{s['train_s']:.0f} | {s['epochs']} |")
    table = "\n".join(lines) + "\n"
    atomic_write(OUT / "results.md", lambda f: f.write(table))
    atomic_write(OUT / "summary.json", lambda f: json.dump(summary, f, indent=1, default=float))
    print(table)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    labels = [f"{s['model']}\n({s['inference']})" for s in summary]
    ax.bar(range(len(summary)), [100 * s["test_mean"] for s in summary],
           yerr=[100 * s["test_std"] for s in summary], color="tab:blue", capsize=3)
    ax.set_xticks(range(len(summary)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("MNIST 32x32, 4000/1000/1000 from the t10k file")
    fig.tight_layout()
    fig.savefig(OUT / "accuracy.png", dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mnist-dir", help="folder with the MNIST IDX files")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--ff-epochs", type=int, default=6)
    p.add_argument("--bp-epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=3e-3, help="Adam step of the FF blocks")
    p.add_argument("--runs", default="runs/forward_forward", help="checkpoints of each run")
    p.add_argument("--summarise", action="store_true", help="only gather runs.jsonl into results.md")
    p.add_argument("--untrained", action="store_true",
                   help="only the ridge read-out of the untrained FF networks (random weights): the floor")
    args = p.parse_args()
    if args.summarise:
        summarise()
        return
    if not args.mnist_dir:
        p.error("--mnist-dir is required")
    untrained(args) if args.untrained else run(args)


if __name__ == "__main__":
    main()
