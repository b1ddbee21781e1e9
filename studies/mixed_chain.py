"""Which time sets cost the ODU its samples: one sampling chain, the ODU at some sets, the linear
denoiser at the others.

The samples of a chain whose sets (one ``--mix``) use the trained ODU and whose other sets use the
least-squares linear denoiser, scored like ``quality.py`` (the same held-out split, linear fit,
sampler (DDIM by default, ``--sampler ddpm`` for the ancestral one), starting noise per sampling
seed, and FID in a small MLP classifier's features), next to the all-ODU and all-linear chains.
A set whose ODU makes the chain's FID better than the all-linear chain's is one where the optics
beat the linear denoiser *for the samples*.

    python studies/mixed_chain.py --checkpoint runs/q/fashion-mnist/train/checkpoint.npz \\
        --mix 0,1,2 --mix 3,4,5,6 --mix 7,8,9 --sample-seeds 0,1,2 --out runs/mixed

Writes ``results.json`` and ``results.md`` to ``--out``.
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

from studies.common import add_data_args, add_linear_args, load_split, quality_feature_net  # noqa: E402

# isort: split
from optdiff.diffusion.model import generate  # noqa: E402
from optdiff.diffusion.trainer import load_model  # noqa: E402
from optdiff.evaluation.baselines import LinearDenoiser  # noqa: E402
from optdiff.evaluation.metrics import frechet_distance  # noqa: E402


def mixed_predictor(model, linear, odu_sets):
    """``predict_eps(x_t, t)`` that asks the ODU at the sets in ``odu_sets`` and ``linear`` elsewhere."""
    odu_sets = frozenset(int(m) for m in odu_sets)

    def predict(x_t, t):
        m = model.set_of(t)
        if m in odu_sets:
            return model.predict_eps(x_t, t)
        return linear.predict(x_t, t)
    return predict


def parse_sets(text: str, M: int) -> tuple[int, ...]:
    sets = tuple(sorted({int(s) for s in text.split(",") if s.strip()}))
    bad = [m for m in sets if not 0 <= m < M]
    if bad:
        raise ValueError(f"--mix {text!r}: sets {bad} are not in 0..{M - 1}")
    return sets


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a trained model (optdiff train / quality.py)")
    add_data_args(ap)
    ap.add_argument("--mix", action="append", default=[], metavar="SETS",
                    help="comma-separated sets that use the ODU in one chain (repeatable)")
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--held-out", type=int, default=1000)
    ap.add_argument("--sampler", default="ddim", choices=("ddpm", "ddim"),
                    help="ddim (deterministic, --sampler-steps calls) or ddpm (ancestral, T calls)")
    ap.add_argument("--sampler-steps", type=int, default=100, help="DDIM steps")
    ap.add_argument("--sample-seeds", default="0", help="comma-separated sampling seeds")
    ap.add_argument("--seed", type=int, default=0, help="data split, linear fit and feature net (as quality.py)")
    add_linear_args(ap)
    ap.add_argument("--out", default="runs/mixed_chain")
    args = ap.parse_args(argv)
    model, _, meta = load_model(args.checkpoint)
    try:
        mixes = [parse_sets(m, model.M) for m in args.mix]
    except ValueError as exc:
        ap.error(str(exc))
    chains = {"all ODU": tuple(range(model.M)), "all linear": ()}
    chains.update({"ODU at " + ",".join(map(str, m)): m for m in mixes})
    seeds = [int(s) for s in args.sample_seeds.split(",") if s.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    xtr, ytr, xho, _ = load_split(args.dataset, args.data_dir, args.held_out, args.seed)
    lin = LinearDenoiser(ridge=args.ridge).fit(xtr, model.schedule, model.set_ranges,
                                               samples_per_set=args.linear_samples, rng=args.seed)
    net = quality_feature_net(xtr, ytr, args.seed)
    fr = net.features(xho[: args.count])
    sc = model.cfg.sample
    sc.sampler, sc.steps, sc.eta, sc.batch, sc.clip_x0 = args.sampler, args.sampler_steps, 0.0, 100, True
    rows = {}
    for label, sets in chains.items():
        fids, t0 = [], time.perf_counter()
        for seed in seeds:
            sc.seed = seed
            x = generate(mixed_predictor(model, lin, sets), model.schedule, sc, args.count, model.H)
            fids.append(frechet_distance(net.features(np.clip(x, -1, 1)), fr))
        rows[label] = {"odu_sets": list(sets), "fid_per_seed": fids, "fid": float(np.mean(fids)),
                       "sd": float(np.std(fids, ddof=1)) if len(fids) > 1 else None,
                       "seconds": time.perf_counter() - t0}
        print(f"{label:24s} FID {rows[label]['fid']:.1f}  per seed {', '.join(f'{f:.1f}' for f in fids)}", flush=True)
    cmd = "python studies/mixed_chain.py " + " ".join(sys.argv[1:] if argv is None else argv)
    res = {"command": cmd, "checkpoint": args.checkpoint, "step": meta.get("step"), "seeds": seeds,
           "sampler": args.sampler, "chains": rows}
    (out / "results.json").write_text(json.dumps(res, indent=1))
    sampler_text = (f"DDIM, {args.sampler_steps} steps" if args.sampler == "ddim"
                    else f"DDPM, {model.schedule.T} steps")
    lines = ["# Mixed sampling chains: the ODU at some sets, the linear denoiser at the others", "",
             f"`{cmd}`", "",
             f"{args.count} samples per chain and seed {seeds} ({sampler_text}), "
             "FID in a small MLP classifier's features against held-out images (as `quality.py`).", "",
             "| chain | FID (mean) | per seed |", "|---|---|---|"]
    for label, r in rows.items():
        lines.append(f"| {label} | {r['fid']:.1f} | {', '.join(f'{f:.1f}' for f in r['fid_per_seed'])} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
