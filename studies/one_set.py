"""Train one layer set of the ODU alone and compare it with the linear denoiser on that set.

A quick way to study one time set (e.g. the mid-noise sets where the ODU trails the
least-squares linear denoiser) without training all M sets. The loop is the trainer's:
read-out calibrated by least squares, then Adam with warm-up + the configured schedule on
``TimeAwareODU.loss_and_grads``. Validation: eps-MSE on fixed held-out images, timesteps and
noise; the linear denoiser is fitted on the training images and scored on the same batch.

    python studies/one_set.py --set 4 --steps 1000 --o train.lr=0.1

prints one JSON line (validation MSE at 5 checkpoints, linear, zero); ``--out F`` appends it.
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

# studies.common first: it puts the in-tree optdiff on the path when none is installed
import studies.common  # noqa: E402, F401

# isort: split
from optdiff.config import Config, apply_overrides  # noqa: E402
from optdiff.data import load_dataset  # noqa: E402
from optdiff.diffusion.model import TimeAwareODU  # noqa: E402
from optdiff.diffusion.optim import Adam, lr_at  # noqa: E402
from optdiff.evaluation.baselines import LinearDenoiser  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", type=int, default=4, help="layer set to train (0 = least noisy)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--o", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="configuration override, repeatable (e.g. optics.n=160)")
    p.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "mnist", "digits"))
    p.add_argument("--data-dir", default=None, help="dataset folder (required for mnist)")
    p.add_argument("--classes", default="0,1,2", help="class filter ('' = all)")
    p.add_argument("--held-out", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tag", default="")
    p.add_argument("--out", default=None, help="append the JSON line to this file")
    a = p.parse_args(argv)

    classes = [int(c) for c in a.classes.split(",") if c.strip()] or None
    try:
        x = load_dataset(a.dataset, data_dir=a.data_dir, split="train", classes=classes, size=20)[0]
    except FileNotFoundError:  # e.g. only MNIST's test split is on disk
        x = load_dataset(a.dataset, data_dir=a.data_dir, split="test", classes=classes, size=20)[0]
    perm = np.random.default_rng(0).permutation(x.shape[0])
    x_val, x_train = x[perm[:a.held_out]], x[perm[a.held_out:]]

    cfg = Config.from_dict(apply_overrides({"data": {"dataset": a.dataset}}, a.o))
    model = TimeAwareODU(cfg, nthreads=a.threads)
    m, sched, tc = a.set, model.schedule, cfg.train
    if not 0 <= m < model.M:
        p.error(f"--set must be in 0..{model.M - 1}")
    lo, hi = model.set_ranges[m]

    def batch(n, rng):
        idx = rng.integers(0, x_train.shape[0], n)
        t = rng.integers(lo, hi, n)
        eps = rng.standard_normal((n, model.H, model.W))
        return sched.q_sample(x_train[idx], t, eps), t, eps

    vr = np.random.default_rng(99)
    vidx = vr.integers(0, x_val.shape[0], 1000)
    vt = vr.integers(lo, hi, 1000)
    ve = vr.standard_normal((1000, model.H, model.W))
    vx = sched.q_sample(x_val[vidx], vt, ve)

    def val_mse() -> float:
        return float(np.mean((model.predict(vx, vt, m) - ve) ** 2))

    lin = LinearDenoiser(ridge=1e-3).fit(x_train, sched, model.set_ranges, samples_per_set=20000, rng=0)
    pred = np.empty_like(ve)
    for t in np.unique(vt):
        pred[vt == t] = lin.predict(vx[vt == t], int(t))
    linear = float(np.mean((pred - ve) ** 2))

    model.calibrate(m, *batch(512, np.random.default_rng(5)))
    start = val_mse()
    opt, rng, hist = Adam(model.params, model.M), np.random.default_rng(1), []
    t0 = time.perf_counter()
    for k in range(a.steps):
        loss, grads = model.loss_and_grads(m, *batch(tc.batch, rng))
        lr = lr_at(k, a.steps, tc.lr, tc.lr_schedule, tc.warmup, tc.lr_min_factor)
        rlr = lr_at(k, a.steps, tc.readout_lr, tc.lr_schedule, tc.warmup, tc.lr_min_factor)
        opt.step(m, grads, {name: (lr if name == "phases" else rlr) for name in grads})
        if (k + 1) % max(1, a.steps // 5) == 0:
            hist.append(round(val_mse(), 5))
            print(f"  step {k + 1}: val eps-MSE {hist[-1]}", file=sys.stderr, flush=True)
    line = json.dumps({"tag": a.tag, "dataset": a.dataset, "set": m, "steps": a.steps, "overrides": a.o,
                       "val_start": round(start, 5), "val": hist, "linear": round(linear, 5),
                       "zero": round(float(np.mean(ve ** 2)), 4), "seconds": round(time.perf_counter() - t0)})
    print(line, flush=True)
    if a.out:
        with Path(a.out).open("a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
