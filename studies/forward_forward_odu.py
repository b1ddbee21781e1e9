"""Forward-Forward for the ODU's own phase layers versus adjoint training, on scikit-learn's 8x8 digits.

Rows (test accuracy, 1000/300/300 split of the bundled digits, n=32 grid, 2 masks per set):

* initial optics + ridge read-out, one set and the untrained ``--sets`` chain (the floor),
* initial optics + soft-max read-out trained alone (masks frozen),
* FF: ``--sets`` chained layer sets, each trained on the goodness of its own camera image (the
  local loss's gradient through that set's adjoint only); goodness inference and ridge read-out,
* adjoint: one set + linear soft-max read-out trained end to end with the exact adjoint.

    OMP_NUM_THREADS=1 python studies/forward_forward_odu.py --seeds 0 1 2
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
from optdiff import set_num_threads  # noqa: E402
from optdiff.diffusion.checkpoint import atomic_write  # noqa: E402
from optdiff.ff.data import load_split  # noqa: E402
from optdiff.ff.odu_ff import ODUAdjointClassifier, ODUForwardForward, ridge_accuracy, small_optics  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "forward_forward"


def _train(model, x, y, epochs, batch, seed):
    log = []
    for e in range(epochs):
        rng = np.random.default_rng([seed, e, 0x0D])
        perm = rng.permutation(len(x))
        log.append(np.mean([model.train_step(x[perm[s:s + batch]], y[perm[s:s + batch]], rng)
                            for s in range(0, len(x), batch)], axis=0).round(4).tolist())
    return log


def run_seed(seed, epochs, sets, batch=50):
    (xt, yt), (xv, yv), (xs, ys), _ = load_split("digits", None, (1000, 300, 300), size=8, seed=seed, pad=False)
    optics, rows = small_optics(), []

    def row(name, inference, val, test, t, log=None):
        rows.append({"model": name, "inference": inference, "seed": seed, "val_acc": val, "test_acc": test,
                     "train_seconds": t, "log": log})

    for k in sorted({1, sets}):  # untrained chains: what the ridge read-out gets without any training
        floor = ODUForwardForward(optics, 8, sets=k, seed=seed)
        floor.scale = 1.0
        v, s = ridge_accuracy(floor, (xt, yt), [(xv, yv), (xs, ys)])
        row(f"initial optics, {k} set{'s' if k > 1 else ''}", "ridge", v, s, 0.0)
    for name, train_optics in (("initial optics, soft-max trained", False), ("adjoint end to end", True)):
        m = ODUAdjointClassifier(optics, 8, seed=seed, train_optics=train_optics)
        t0 = time.perf_counter()
        log = _train(m, xt, yt, epochs, batch, seed)
        t = time.perf_counter() - t0
        row(name, "soft-max", float((m.predict(xv) == yv).mean()), float((m.predict(xs) == ys).mean()), t, log)
    ff = ODUForwardForward(optics, 8, sets=sets, seed=seed)
    t0 = time.perf_counter()
    log = _train(ff, xt, yt, epochs, batch, seed)
    t = time.perf_counter() - t0
    row(f"FF, {sets} sets", "goodness", float((ff.predict_goodness(xv) == yv).mean()),
        float((ff.predict_goodness(xs) == ys).mean()), t, log)
    v, s = ridge_accuracy(ff, (xt, yt), [(xv, yv), (xs, ys)])
    row(f"FF, {sets} sets", "ridge", v, s, t, log)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--sets", type=int, default=2)
    p.add_argument("--out", default=str(OUT / "odu"))
    a = p.parse_args()
    set_num_threads(1)
    rows = []
    for seed in a.seeds:
        rows += run_seed(seed, a.epochs, a.sets)
        print(json.dumps([(r["model"], r["inference"], r["test_acc"]) for r in rows[-6:]]), flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    groups = {}
    for r in rows:
        groups.setdefault((r["model"], r["inference"]), []).append(r)
    lines = ["| model | inference | seeds | test acc (mean +- std) | val acc | train time (s) |", "|---|---|---|---|---|---|"]
    for (m, inf), rs in groups.items():
        acc = np.array([r["test_acc"] for r in rs])
        sd = acc.std(ddof=1) if len(acc) > 1 else 0.0
        lines.append(f"| {m} | {inf} | {len(rs)} | {100 * acc.mean():.1f} +- {100 * sd:.1f} % | "
                     f"{100 * np.mean([r['val_acc'] for r in rs]):.1f} % | {np.mean([r['train_seconds'] for r in rs]):.0f} |")
    table = "\n".join(lines) + "\n"
    atomic_write(out.with_suffix(".md"), lambda f: f.write(table))
    atomic_write(out.with_suffix(".json"), lambda f: json.dump(rows, f, indent=1))
    print(table)


if __name__ == "__main__":
    main()
