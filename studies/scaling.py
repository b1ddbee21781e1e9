"""Scaling study: how does the ODU's sample quality change with its size (not a test; minutes to hours)?

Sweeps pixels per layer N, layers L and time sets M (one at a time around a base configuration)
with the *total* number of training steps held fixed (``--total-steps``: a model with M sets gets
``total // M`` steps per set), trains each ODU on the same images, draws ``--samples`` images with
the same sampler and start noise, and computes the FID in a CNN classifier's features (trained
once on the data; the MLP ``FeatureNet`` without PyTorch). Then fits the power law
``FID = a * P^b`` (P = M L N^2 phases) by least squares on log-log axes and gives the exponent
``b`` with a 95% interval from a bootstrap over the configurations (and the regression's
t-interval), next to the reference work's -0.15.

Each finished configuration is written to ``--out/points/<name>.json`` and not redone when the
script is run again. Outputs: ``results.json``, ``results.md``, ``scaling.png``.

Examples::

    python studies/scaling.py --out runs/scaling                      # digits, 12x12, small sizes (~20 min)
    python studies/scaling.py --n 48,64,96,128 --layers 2,4,6 --sets 1,2,5,10 --image-size 20 \\
        --dataset mnist --data-dir /path/to/mnist --split test --total-steps 3000 --out runs/scaling-mnist
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
from optdiff.config import ConfigError, load_config  # noqa: E402
from optdiff.data import load_dataset  # noqa: E402
from optdiff.diffusion.checkpoint import atomic_write  # noqa: E402
from optdiff.diffusion.model import generate  # noqa: E402
from optdiff.diffusion.trainer import Trainer, split_train_val, write_json_atomic  # noqa: E402
from optdiff.evaluation.metrics import FeatureNet, frechet_distance  # noqa: E402

REFERENCE_EXPONENT = -0.15  # the reference work's FID-vs-parameters power law (as given in issue #15)


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v.strip()]


def configurations(args) -> list[dict]:
    """One-at-a-time sweeps around the base (N, L, M), each point named like n64-l4-m4."""
    base = {"n": args.base_n, "layers": args.base_layers, "sets": args.base_sets}
    pts = {}
    for key, values in (("n", args.n), ("layers", args.layers), ("sets", args.sets)):
        for v in values:
            p = dict(base, **{key: v})
            pts[f"n{p['n']}-l{p['layers']}-m{p['sets']}"] = p
    return [dict(p, name=k) for k, p in pts.items()]


def fit_power_law(params, fids, boot: int = 2000, seed: int = 0) -> dict:
    """Least squares of log FID on log P: exponent b, its bootstrap and t-based 95% intervals."""
    x, y = np.log(np.asarray(params, float)), np.log(np.asarray(fids, float))
    A = np.stack([np.ones_like(x), x], axis=1)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    n = x.size
    out = {"exponent": float(coef[1]), "prefactor": float(np.exp(coef[0])), "points": int(n)}
    if n >= 3:
        resid = y - A @ coef
        se = float(np.sqrt(resid @ resid / (n - 2) / np.sum((x - x.mean()) ** 2)))
        from scipy import stats

        tq = float(stats.t.ppf(0.975, n - 2))
        out["t_interval"] = [float(coef[1] - tq * se), float(coef[1] + tq * se)]
        rng = np.random.default_rng(seed)
        bs = []
        for _ in range(boot):
            i = rng.integers(0, n, n)
            if np.ptp(x[i]) == 0:
                continue
            bs.append(np.polyfit(x[i], y[i], 1)[0])
        out["bootstrap_interval"] = [float(np.percentile(bs, 2.5)), float(np.percentile(bs, 97.5))]
    return out


def feature_space(xtr, ytr, xho, yho, image_size: int, name: str, seed: int):
    try:
        from optdiff.evaluation.cnn_features import CNNFeatureNet

        net = CNNFeatureNet(image_size, np.unique(ytr), name, seed=seed).fit(xtr, ytr, held_out=(xho, yho))
        return net, "cnn", net.accuracy_held_out
    except ImportError:
        net = FeatureNet(seed=seed).fit(xtr, ytr)
        return net, "mlp", net.accuracy(xho, yho)


def run_point(p: dict, args, xtr, xho, space, out: Path) -> dict:
    steps = max(1, args.total_steps // p["sets"])
    over = list(args.overrides) + [f"optics.n={p['n']}", f"optics.layers={p['layers']}", f"model.sets={p['sets']}",
                                   f"model.image_size={args.image_size}", f"train.steps={steps}",
                                   f"diffusion.T={args.T}", "train.progress=false", "train.val_every=0",
                                   f"train.seed={args.seed}", f"train.threads={args.threads}"]
    cfg = load_config(args.config, over)
    folder = out / "models" / p["name"]
    t0 = time.perf_counter()
    tr = Trainer(cfg, folder, images=xtr, val_images=xho[:64], log=False)
    summary = tr.fit(resume=(folder / "checkpoint.npz").exists())
    train_s = time.perf_counter() - t0
    sc = cfg.sample
    sc.sampler, sc.steps, sc.batch, sc.seed = args.sampler, args.sample_steps, 100, args.seed
    t0 = time.perf_counter()
    x = generate(tr.model.predict_eps, tr.model.schedule, sc, args.samples, args.image_size)
    atomic_write(folder / "samples.npy", lambda f: np.save(f, x), binary=True)
    fid = frechet_distance(space.features(xho), space.features(np.clip(x, -1, 1)))
    return {**p, "params": p["sets"] * p["layers"] * p["n"] ** 2, "steps_per_set": steps, "fid": fid,
            "val_mse": summary["val_mse"], "train_s": train_s, "sample_s": time.perf_counter() - t0,
            "light_fraction": summary.get("light_fraction")}


def plot(points, fit, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, marker in (("n", "o"), ("layers", "s"), ("sets", "^")):
        sel = [q for q in points if q["varied"] == key]
        ax.plot([q["params"] for q in sel], [q["fid"] for q in sel], marker, label=f"vary {key}")
    P = np.geomspace(min(q["params"] for q in points), max(q["params"] for q in points), 50)
    ax.plot(P, fit["prefactor"] * P ** fit["exponent"], "k--", label=f"fit: exponent {fit['exponent']:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("phases M L N^2")
    ax.set_ylabel("FID")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "examples" / "tiny.toml"), help="base ODU configuration")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value for every ODU")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-dir", default="")
    ap.add_argument("--split", default="train")
    ap.add_argument("--image-size", type=int, default=12)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--held-out", type=int, default=300)
    ap.add_argument("--base-n", type=int, default=48)
    ap.add_argument("--base-layers", type=int, default=4)
    ap.add_argument("--base-sets", type=int, default=4)
    ap.add_argument("--n", type=_ints, default=[32, 48, 64, 96])
    ap.add_argument("--layers", type=_ints, default=[1, 2, 4, 6])
    ap.add_argument("--sets", type=_ints, default=[1, 2, 4, 8])
    ap.add_argument("--total-steps", type=int, default=400, help="training steps summed over the sets (fixed)")
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--sampler", default="ddim")
    ap.add_argument("--sample-steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/scaling")
    args = ap.parse_args(argv)
    out = Path(args.out)
    (out / "points").mkdir(parents=True, exist_ok=True)
    x, y = load_dataset(args.dataset, data_dir=args.data_dir or None, split=args.split, size=args.image_size,
                        limit=args.limit or None, seed=args.seed)
    idx = np.arange(x.shape[0])
    tr_i, ho_i = split_train_val(idx, args.held_out, args.seed)
    xtr, ytr, xho, yho = x[tr_i], y[tr_i], x[ho_i], y[ho_i]
    space, space_name, acc = feature_space(xtr, ytr, xho, yho, args.image_size, args.dataset, args.seed)
    print(f"features: {space_name}, held-out accuracy {acc:.3f}; {xtr.shape[0]} training images", flush=True)
    points = []
    for p in configurations(args):
        path = out / "points" / f"{p['name']}.json"
        if path.is_file():
            points.append(json.loads(path.read_text()))
            continue
        try:
            q = run_point(p, args, xtr, xho, space, out)
        except ConfigError as exc:
            print(f"{p['name']}: skipped ({exc})", flush=True)
            continue
        write_json_atomic(path, q)
        points.append(q)
        print(f"{p['name']}: {q['params']} phases, FID {q['fid']:.3f} ({q['train_s']:.0f} s training)", flush=True)
    base = (args.base_n, args.base_layers, args.base_sets)
    for q in points:
        diff = [k for k, b in zip(("n", "layers", "sets"), base) if q[k] != b]
        q["varied"] = diff[0] if diff else "base"
    fit = fit_power_law([q["params"] for q in points], [q["fid"] for q in points])
    m_sweep = sorted((q["sets"], q["fid"]) for q in points if q["varied"] in ("sets", "base") and
                     q["n"] == args.base_n and q["layers"] == args.base_layers)
    res = {"args": vars(args), "features": space_name, "feature_accuracy": acc, "points": points, "fit": fit,
           "reference_exponent": REFERENCE_EXPONENT, "m_sweep": m_sweep}
    write_json_atomic(out / "results.json", res)
    plot([q for q in points if q["varied"] != "base"] + [dict(q, varied="n") for q in points if q["varied"] == "base"],
         fit, out / "scaling.png")
    lines = ["# Scaling study", "", f"`python studies/scaling.py {' '.join(sys.argv[1:] if argv is None else argv)}`", "",
             f"Data: {args.dataset} {args.image_size}x{args.image_size}, {xtr.shape[0]} training / {xho.shape[0]} "
             f"held-out images; T = {args.T}; {args.total_steps} training steps in total per model; "
             f"{args.samples} samples ({args.sampler}, {args.sample_steps} steps); FID in {space_name} features "
             f"(held-out accuracy {acc:.3f}).", "",
             "| N | L | M | phases | steps per set | FID |", "|---|---|---|---|---|---|"]
    for q in sorted(points, key=lambda q: q["params"]):
        lines.append(f"| {q['n']} | {q['layers']} | {q['sets']} | {q['params']:,} | {q['steps_per_set']} | {q['fid']:.3f} |")
    ci = fit.get("bootstrap_interval")
    lines += ["", f"Power law FID = a P^b over {fit['points']} configurations: **b = {fit['exponent']:.3f}**"
              + (f", 95% bootstrap interval [{ci[0]:.3f}, {ci[1]:.3f}], t-interval "
                 f"[{fit['t_interval'][0]:.3f}, {fit['t_interval'][1]:.3f}]" if ci else "")
              + f" (the reference work: {REFERENCE_EXPONENT}).", "",
              "M sweep (N, L at the base): " + ", ".join(f"M={m}: {f:.3f}" for m, f in m_sweep), "",
              "![scaling](scaling.png)"]
    atomic_write(out / "results.md", lambda f: f.write("\n".join(lines) + "\n"))
    print("\n".join(lines[-5:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
