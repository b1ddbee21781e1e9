"""Does an FID verdict survive retraining the feature network? (a check on ``quality.py``'s results)

``quality.py`` saves the first sampling seed's samples (``samples_odu.npy``, ``samples_linear.npy``
in ``<out>/<dataset>``). This script scores them against the same held-out images in the features
of the MLP and of the CNN classifier (``studies.common``), each trained with several seeds, and
reports per feature seed the FID of both sample sets and which is ahead. The MLP with feature seed
= ``quality.py``'s ``--seed`` reproduces its first sampling seed's FIDs.

    python studies/feature_seeds.py --samples runs/q/fashion-mnist --feature-seeds 0,1,2,3,4

Writes ``feature_seeds.json`` and ``feature_seeds.md`` to ``--samples``' folder (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the studies package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studies.common import add_data_args, load_split, quality_cnn_net, quality_feature_net  # noqa: E402

# isort: split
from optdiff.evaluation.metrics import frechet_distance  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", required=True, help="quality.py's per-dataset folder (samples_*.npy)")
    add_data_args(ap)
    ap.add_argument("--feature-seeds", default="0,1,2", help="comma-separated training seeds of the feature nets")
    ap.add_argument("--spaces", default="mlp,cnn", help="comma-separated: mlp, cnn (cnn needs PyTorch)")
    ap.add_argument("--count", type=int, default=500, help="held-out images to compare with (quality.py's --count)")
    ap.add_argument("--held-out", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0, help="the data split (quality.py's --seed)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    folder = Path(args.samples)
    paths = {"ODU": folder / "samples_odu.npy", "linear": folder / "samples_linear.npy"}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        ap.error(f"--samples: {', '.join(missing)} not found (run quality.py first)")
    samples = {k: np.clip(np.load(p), -1, 1) for k, p in paths.items()}
    spaces = [s.strip() for s in args.spaces.split(",") if s.strip()]
    bad = [s for s in spaces if s not in ("mlp", "cnn")]
    if bad:
        ap.error(f"--spaces: unknown {bad}; known: mlp, cnn")
    fseeds = [int(s) for s in args.feature_seeds.split(",") if s.strip()]
    xtr, ytr, xho, yho = load_split(args.dataset, args.data_dir, args.held_out, args.seed)
    real = xho[: args.count]
    rows = []
    for space in spaces:
        for fs in fseeds:
            net = (quality_feature_net(xtr, ytr, fs) if space == "mlp"
                   else quality_cnn_net(xtr, ytr, xho, yho, args.dataset, fs))
            fr = net.features(real)
            fid = {k: frechet_distance(net.features(x), fr) for k, x in samples.items()}
            rows.append({"space": space, "feature_seed": fs, **fid})
            print(f"{space} seed {fs}: FID ODU {fid['ODU']:.2f}, linear {fid['linear']:.2f}", flush=True)
    out = Path(args.out) if args.out else folder
    out.mkdir(parents=True, exist_ok=True)
    cmd = "python studies/feature_seeds.py " + " ".join(sys.argv[1:] if argv is None else argv)
    (out / "feature_seeds.json").write_text(json.dumps({"command": cmd, "rows": rows}, indent=1))
    lines = ["# FID of the saved samples in retrained feature networks", "", f"`{cmd}`", "",
             "| features | seed | FID ODU | FID linear | ahead |", "|---|---|---|---|---|"]
    lines += [f"| {r['space']} | {r['feature_seed']} | {r['ODU']:.2f} | {r['linear']:.2f} | "
              f"{'ODU' if r['ODU'] < r['linear'] else 'linear'} |" for r in rows]
    (out / "feature_seeds.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
