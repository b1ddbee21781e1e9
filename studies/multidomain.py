"""Multi-path optical networks for three domains (issue 21): per-domain quality of the searched
multi-path model (uniform and adaptive domain weights) against separate single-domain models and
one fully shared model, with the number of distinct masks (the SLM area), over several seeds.

Classification (a diffractive classifier with detector regions): scikit-learn's 8x8 digits
(upsampled), MNIST (t10k files; train/val/test cut from them) and Fashion-MNIST. Generation
(optional, ``--generate``): the ODU's eps-MSE on one timestep set for two or three domains.

    python studies/multidomain.py --mnist-dir /path/to/mnist --seeds 0,1,2 --generate \
        --out studies/results/multidomain

Each seed's run is an ``optdiff multidomain`` run folder under ``--out`` (resumable: rerun the
same command to continue). Writes ``results.md``, ``results.json`` and ``paths-*.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402,F401  (makes optdiff importable)
import numpy as np  # noqa: E402

from optdiff.multidomain import (  # noqa: E402
    load_domains,
    plot_paths,
    results_table,
    run_variants,
    search_config_from_dict,
)

SEARCH = {"image_size": 12, "positions": 3, "candidates": 2, "skip": True, "rounds": 40, "warmup_rounds": 5,
          "steps_per_round": 10, "finetune_steps": 200, "batch": 32, "lr": 0.05, "readout_lr": 0.05,
          "controller_lr": 0.5, "controller_samples": 2, "mask_cost": 0.01, "train_limit": 3000,
          "val_count": 300, "test_count": 1000}
OPTICS = {"n": 32, "distance": 10e-3, "padding": 2, "init": "zero", "init_noise": 0.1, "amp_bias": 0.5,
          "amp_scale": 0.5}


def domains(mnist_dir: str, names):
    table = {"digits": {"name": "digits"},
             "mnist": {"name": "mnist", "data_dir": mnist_dir, "split": "test"},
             "fashion-mnist": {"name": "fashion-mnist", "split": "all"}}
    return [table[n] for n in names]


def config(task: str, seed: int, mnist_dir: str, names, quick: bool) -> dict:
    s = dict(SEARCH, task=task, seed=seed)
    o = dict(OPTICS)
    if task == "generate":
        # the ODU: biased amplitude encoding (the bias acts as a reference wave), imaging start
        # 4 positions and 4 mm hops: the relay start images 2-pixel features at N = 32 (light fraction
        # 0.95, eps-MSE 0.095 after the read-out fit on Fashion-MNIST; 3 positions with one lens: 0.98)
        o.update(init="imaging", init_noise=0.05, amp_bias=0.5, amp_scale=0.125, distance=4e-3)
        s.update(positions=4, t_range=[400, 500], lr=0.02, test_count=500)
    if quick:
        s.update(rounds=4, warmup_rounds=1, steps_per_round=3, finetune_steps=6, train_limit=300, val_count=60,
                 test_count=100)
    return {"multidomain": s, "optics": o, "domain": domains(mnist_dir, names)}


def run_one(cfg: dict, out: Path) -> dict:
    s, optics, specs = search_config_from_dict(cfg)
    doms = load_domains(specs, s)
    resume = any(out.glob("checkpoint-*.npz"))
    res = run_variants(s, optics, doms, out, resume=resume, progress=sys.stderr.isatty())
    (out / "results.md").write_text(results_table(res))
    plot_paths(res, out / "paths.png")
    return res


def summarise(task: str, runs: dict) -> tuple[str, dict]:
    """Mean and std over seeds per variant and domain, distinct masks per seed."""
    first = next(iter(runs.values()))
    variants = list(first)
    keys = first[variants[0]]["domains"]
    qname = first[variants[0]]["quality_name"]
    rows, summary = [], {}
    for v in variants:
        q = np.array([[runs[sd][v]["test_quality"][k] for k in keys] for sd in runs])   # [seeds, domains]
        masks = [runs[sd][v]["distinct_masks"] for sd in runs]
        summary[v] = {"mean": dict(zip(keys, q.mean(0).tolist())), "std": dict(zip(keys, q.std(0).tolist())),
                      "domain_mean": float(q.mean()), "distinct_masks": masks,
                      "mask_pixels": [runs[sd][v]["mask_pixels"] for sd in runs],
                      "paths": {sd: runs[sd][v]["path_text"] for sd in runs}}
        cells = [f"{q[:, i].mean():.4f} ± {q[:, i].std():.4f}" for i in range(len(keys))]
        rows.append(f"| {v} | " + " | ".join(cells) + f" | {q.mean():.4f} | {', '.join(map(str, masks))} |")
    head = ("| variant | " + " | ".join(f"{k} {qname}" for k in keys) + " | mean | distinct masks per seed |\n"
            + "|" + "---|" * (len(keys) + 3))
    text = f"### {task} ({len(runs)} seed(s): {', '.join(map(str, runs))}; test sets; mean ± std over seeds)\n\n"
    text += head + "\n" + "\n".join(rows) + "\n\nChosen paths (mK = candidate K at that position, . = skip):\n\n"
    for v in variants:
        if v.startswith("multipath"):
            for sd in runs:
                text += f"* {v}, seed {sd}: " + "; ".join(f"{k} `{p}`" for k, p in runs[sd][v]["path_text"].items())
                shared = runs[sd][v]["shared_masks"]
                text += f"; shared masks {sorted(shared)}\n" if shared else "; nothing shared\n"
    return text, summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mnist-dir", required=True, help="folder with MNIST's IDX files (t10k alone suffices)")
    ap.add_argument("--out", default="runs/multidomain-study")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    ap.add_argument("--domains", default="digits,mnist,fashion-mnist")
    ap.add_argument("--generate", action="store_true", help="also the generation variant (ODU eps-MSE)")
    ap.add_argument("--generate-domains", default="mnist,fashion-mnist")
    ap.add_argument("--generate-seeds", default="0")
    ap.add_argument("--quick", action="store_true", help="a smoke test (minutes), not a result")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [("classify", int(s), args.domains.split(",")) for s in args.seeds.split(",")]
    if args.generate:  # first seed of generation first: the variant most likely to need a look
        gen = [("generate", int(s), args.generate_domains.split(",")) for s in args.generate_seeds.split(",")]
        jobs = gen[:1] + jobs + gen[1:]
    runs: dict = {}
    t0 = time.time()
    for task, seed, names in jobs:
        t = time.time()
        res = run_one(config(task, seed, args.mnist_dir, names, args.quick), out / f"{task}-seed{seed}")
        runs.setdefault(task, {})[seed] = res
        print(f"{task} seed {seed}: {time.time() - t:.0f} s", flush=True)
    text, summary = "# Multi-path optical networks: study results\n\n", {}
    for task, r in runs.items():
        t, summary[task] = summarise(task, r)
        text += t + "\n"
    text += f"Wall time {time.time() - t0:.0f} s (this invocation) on a shared 2-core machine.\n"
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"summary": summary, "runs": runs,
                                                  "config": {task: config(task, 0, "<mnist-dir>", [], args.quick)
                                                             for task in runs}}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
