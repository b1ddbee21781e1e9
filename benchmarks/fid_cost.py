"""Cost of evaluation: FID (and KID, IS) of 5000 generated images once the samples exist.

Issue #15 asks for "FID of 5000 samples in under a minute on 2 cores once the samples exist".
This times, on this machine, in the CNN feature space of ``optdiff report`` (and the MLP's when
its file is given), interleaved over ``--repeats`` rounds:

* ``fid``: the features of the samples and of ``--count`` real images, then FID;
* ``fid_vs_stats``: the features of the samples only, FID against reference statistics computed
  once (how pytorch-fid is used with a stored ``.npz`` of the data set's statistics);
* ``fid_report``: FID, KID (50 subsets of 1000) and IS of both sets, what the report computes.

    python benchmarks/fid_cost.py --samples runs/report-fashion-mnist-5000/models/fashion-mnist/odu/samples.npy \\
        --cnn runs/report-fashion-mnist/features/fashion-mnist/cnn.npz --threads 2

The real images are the first ``--count`` of the data set's training split (Fashion-MNIST 0-2
at 20x20 by default). Prints a Markdown table (``--out FILE`` also writes it) with the median and
quartiles of each, the machine's load average and how busy its CPUs were (a shared machine
slows every number down).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", required=True, help=".npy of generated images [K, H, H] in [-1, 1], K >= --count")
    ap.add_argument("--cnn", required=True, help="the CNN feature network (optdiff report's features/<data>/cnn.npz)")
    ap.add_argument("--mlp", default="", help="also the MLP feature network (features/<data>/mlp.npz)")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--classes", default="0,1,2", help="comma-separated class labels ('' = all)")
    ap.add_argument("--count", type=int, default=5000, help="samples and real images compared (default 5000)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="", help="also write the table to this file")
    a = ap.parse_args(argv)
    if a.count < 2 or a.threads < 1 or a.repeats < 1:
        ap.error("--count must be >= 2, --threads and --repeats >= 1")
    return a


def main(argv=None) -> int:
    a = _args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.common import THREAD_ENV

    for k in THREAD_ENV:  # before numpy / torch start their thread pools
        os.environ[k] = str(a.threads)
    import numpy as np
    import torch

    from benchmarks.common import cpu_busy_seconds, interleaved_times, quartiles
    from optdiff.data import load_dataset
    from optdiff.diffusion.checkpoint import load_checkpoint
    from optdiff.evaluation.cnn_features import CNNFeatureNet
    from optdiff.evaluation.metrics import FeatureNet, check_samples, fid_report, frechet_distance

    torch.set_num_threads(a.threads)
    fake = check_samples(np.load(a.samples, allow_pickle=False), what=f"--samples {a.samples}", min_count=a.count)
    fake = fake[:a.count]
    H = fake.shape[1]
    classes = [int(c) for c in a.classes.split(",") if c.strip()] or None
    real, _ = load_dataset(a.dataset, data_dir=a.data_dir or None, split="train", classes=classes, size=H, seed=0)
    if real.shape[0] < a.count:
        raise SystemExit(f"--count {a.count}: the data set has only {real.shape[0]} training images")
    real = real[:a.count]
    spaces = {"cnn": CNNFeatureNet.load(a.cnn, dataset=a.dataset, image_size=H)}
    if a.mlp:
        spaces["mlp"] = FeatureNet.from_arrays(load_checkpoint(a.mlp)[1])

    tools, values = {}, {}
    for name, sp in spaces.items():
        stats_real = sp.features(real)  # the stored reference statistics' features, computed once

        def fid(sp=sp, name=name):
            values[f"{name}: fid"] = frechet_distance(sp.features(real), sp.features(fake))

        def fid_vs_stats(sp=sp, name=name, fr=stats_real):
            values[f"{name}: fid_vs_stats"] = frechet_distance(fr, sp.features(fake))

        def report(sp=sp, name=name):
            r = fid_report(sp, real, fake, kid_subsets=50, kid_subset_size=1000, is_splits=10, seed=0)
            values[f"{name}: fid_report"] = (r["fid"], r["kid"], r["is"])

        tools.update({f"{name}: fid": fid, f"{name}: fid_vs_stats": fid_vs_stats, f"{name}: fid_report": report})
    load0, busy0, t0 = os.getloadavg(), cpu_busy_seconds(), time.perf_counter()
    times = interleaved_times(tools, a.repeats)
    wall, busy = time.perf_counter() - t0, cpu_busy_seconds() - busy0
    load1 = os.getloadavg()
    lines = [f"Cost of evaluation: {a.count} samples ({a.samples}) vs {a.count} real images "
             f"({a.dataset}, classes {a.classes or 'all'}, {H}x{H}), {a.threads} thread(s), {a.repeats} rounds "
             f"(interleaved, after one warm-up call each).", "",
             "| what | median s | quartiles s | value |", "|---|---|---|---|"]
    for k, ts in times.items():
        q1, med, q3 = quartiles(ts)
        v = values[k]
        val = f"FID {v[0]:.4g}, KID {v[1]:.4g}, IS {v[2]:.3g}" if isinstance(v, tuple) else f"FID {v:.4g}"
        lines.append(f"| {k} | {med:.3g} | {q1:.3g} .. {q3:.3g} | {val} |")
    lines += ["", f"Machine: {os.cpu_count()} CPUs; load average {load0[0]:.2f} before, {load1[0]:.2f} after; "
                  f"the CPUs were busy {busy / max(wall, 1e-9):.2f} cores on average during the {wall:.0f} s of "
                  f"timing (this process: {a.threads} thread(s)); a shared machine slows every number."]
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
