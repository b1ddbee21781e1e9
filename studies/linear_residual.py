"""Is the ODU's sample deficit in the linearly fixable part of its error? (a digital diagnostic)

For a trained model, per time set: fit by least squares the affine map of ``x_t`` that best
predicts the ODU's residual ``eps - eps_ODU(x_t)`` on noised training images, and report the
held-out eps-MSE of the ODU, of the ODU plus that correction and of the linear denoiser. Then
sample (DDIM, as ``quality.py``) with the ODU, the corrected ODU and the linear denoiser from the
same starting noise per seed and report FID in ``quality.py``'s MLP features.

The correction is a digital term that sees ``x_t``: it is not a design and not the optics' win.
It says where the ODU's error lies: a linear denoiser's error is orthogonal to every affine
function of ``x_t`` (the least-squares orthogonality), an ODU's need not be. If the corrected
ODU's samples beat the linear denoiser's while the plain ODU's do not, the ODU's nonlinear gains
are real and what its samples lack is the affine part, which the eps-MSE (lower than the linear
denoiser's at every set) hides.

    python studies/linear_residual.py --checkpoint runs/q/fashion-mnist/train/checkpoint.npz \\
        --sample-seeds 0,1,2 --out runs/linear-residual
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

from studies.common import add_data_args, add_linear_args, load_split, noised, quality_feature_net  # noqa: E402
from studies.mixed_chain import parse_sets  # noqa: E402

# isort: split
from optdiff.diffusion.model import generate  # noqa: E402
from optdiff.diffusion.trainer import load_model  # noqa: E402
from optdiff.evaluation.baselines import LinearDenoiser, affine_ridge  # noqa: E402
from optdiff.evaluation.metrics import frechet_distance  # noqa: E402


def affine(fit, x) -> np.ndarray:
    """The affine map ``fit = (W, c)`` at the images ``x [B, H, W]``, shaped like them."""
    W, c = fit
    return (np.asarray(x, dtype=np.float64).reshape(len(x), -1) @ W.T + c).reshape(np.shape(x))


class ResidualCorrected:
    """``predict_eps(x_t, t)`` = the model's prediction + the affine fit of its residual for t's set
    (only at ``sets``; default: every set)."""

    def __init__(self, model, maps, sets=None):
        self.model, self.maps = model, maps
        self.sets = frozenset(range(len(maps)) if sets is None else (int(m) for m in sets))

    def __call__(self, x_t, t):
        e = self.model.predict_eps(x_t, t)
        m = self.model.set_of(t)
        return e + affine(self.maps[m], x_t) if m in self.sets else e


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a trained model (optdiff train / quality.py)")
    add_data_args(ap)
    ap.add_argument("--fit-samples", type=int, default=8000, help="noised training images per set for the fit")
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--held-out", type=int, default=1000)
    ap.add_argument("--sampler-steps", type=int, default=100, help="DDIM steps")
    ap.add_argument("--sample-seeds", default="0", help="comma-separated sampling seeds")
    ap.add_argument("--seed", type=int, default=0, help="data split, linear fit and feature net (as quality.py)")
    add_linear_args(ap)
    ap.add_argument("--fix", action="append", default=[], metavar="SETS",
                    help="comma-separated sets where one more chain applies the fix (repeatable)")
    ap.add_argument("--placebo", action="store_true",
                    help="also run each fixed chain with a placebo fix: the affine map fitted to the residuals "
                         "shuffled across images (no relation to x_t left, the same fit noise)")
    ap.add_argument("--out", default="runs/linear_residual")
    args = ap.parse_args(argv)
    if args.fit_samples < 2:
        ap.error("--fit-samples must be >= 2")
    model, _, meta = load_model(args.checkpoint)
    try:
        fixes = [parse_sets(f, model.M) for f in args.fix]
    except ValueError as exc:
        ap.error(str(exc).replace("--mix", "--fix"))
    seeds = [int(s) for s in args.sample_seeds.split(",") if s.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    xtr, ytr, xho, _ = load_split(args.dataset, args.data_dir, args.held_out, args.seed)
    sched = model.schedule
    lin = LinearDenoiser(ridge=args.ridge).fit(xtr, sched, model.set_ranges, args.linear_samples, rng=args.seed)

    maps, placebos, mse = [], [], []
    for m, rng_m in enumerate(model.set_ranges):
        r, t, e = noised(xtr, args.fit_samples, rng_m, sched, np.random.default_rng([args.seed, 7, m]))
        res = (e - model.predict(r, t, m)).reshape(len(r), -1)
        maps.append(affine_ridge(r.reshape(len(r), -1), res, args.ridge))
        if args.placebo:   # the same residuals paired with other images' x_t: only the fit's noise is left
            shuffled = res[np.random.default_rng([args.seed, 9, m]).permutation(len(res))]
            placebos.append(affine_ridge(r.reshape(len(r), -1), shuffled, args.ridge))
        vr, vt, ve = noised(xho, 1000, rng_m, sched, np.random.default_rng([args.seed, 8, m]))
        po = model.predict(vr, vt, m)
        row = {"set": m, "ODU": float(np.mean((po - ve) ** 2)),
               "ODU + affine fix": float(np.mean((po + affine(maps[m], vr) - ve) ** 2)),
               "linear": float(np.mean((lin.predict(vr, rng_m[0]) - ve) ** 2))}
        if args.placebo:
            row["ODU + placebo fix"] = float(np.mean((po + affine(placebos[m], vr) - ve) ** 2))
        mse.append(row)
        print(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}), flush=True)

    net = quality_feature_net(xtr, ytr, args.seed)
    fr = net.features(xho[: args.count])
    sc = model.cfg.sample
    sc.sampler, sc.steps, sc.eta, sc.batch, sc.clip_x0 = "ddim", args.sampler_steps, 0.0, 100, True
    chains = {"ODU": model.predict_eps, "ODU + affine fix": ResidualCorrected(model, maps), "linear": lin.predict}
    chains.update({"ODU + fix at " + ",".join(map(str, f)): ResidualCorrected(model, maps, f) for f in fixes})
    if args.placebo:
        chains["ODU + placebo fix"] = ResidualCorrected(model, placebos)
        chains.update({"ODU + placebo at " + ",".join(map(str, f)): ResidualCorrected(model, placebos, f)
                       for f in fixes})
    fids = {}
    for label, pred in chains.items():
        t0, per = time.perf_counter(), []
        for seed in seeds:
            sc.seed = seed
            x = generate(pred, sched, sc, args.count, model.H)
            per.append(frechet_distance(net.features(np.clip(x, -1, 1)), fr))
        fids[label] = {"fid": float(np.mean(per)), "per_seed": per, "seconds": time.perf_counter() - t0}
        print(f"{label:18s} FID {fids[label]['fid']:.1f}  per seed {', '.join(f'{f:.1f}' for f in per)}", flush=True)

    cmd = "python studies/linear_residual.py " + " ".join(sys.argv[1:] if argv is None else argv)
    (out / "results.json").write_text(json.dumps({"command": cmd, "step": meta.get("step"), "seeds": seeds,
                                                  "per_set_mse": mse, "fid": fids}, indent=1))
    lines = ["# The ODU's residual: its affine part removed (a digital diagnostic, not a design)", "",
             f"`{cmd}`", "", "Held-out eps-MSE per set (1000 noised images per set):", "",
             "| set | " + " | ".join(list(mse[0])[1:]) + " |", "|---" * len(mse[0]) + "|"]
    lines += ["| " + " | ".join([str(r["set"])] + [f"{v:.5f}" for v in list(r.values())[1:]]) + " |" for r in mse]
    lines += ["", f"FID, {args.count} DDIM samples ({args.sampler_steps} steps) per seed {seeds}, "
              "MLP features as `quality.py`:", "", "| chain | FID (mean) | per seed |", "|---|---|---|"]
    lines += [f"| {k} | {v['fid']:.1f} | {', '.join(f'{f:.1f}' for f in v['per_seed'])} |" for k, v in fids.items()]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
