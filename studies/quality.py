"""Quality study of optical diffusion models (not a test; minutes to hours on 2 cores).

For each data set (Fashion-MNIST first 3 classes at 20x20, MNIST at 20x20):

1. train the ODU with the default configuration (``optdiff.config.Config()``; change it with
   ``--set section.key=value``) or load a trained checkpoint (``--checkpoint``);
2. fit the baselines in the same script: the zero predictor and the best linear denoiser
   (least squares ``eps ~ W r_t + c`` per set, :class:`optdiff.evaluation.baselines.LinearDenoiser`,
   with the noise's moments in closed form; ``--linear-samples 20000`` is the sampled fit of the
   results before 2026-12-01);
3. report per-set denoising MSE of ODU / zero / linear on held-out images (paired noise);
4. generate ``--count`` images with the ODU and with the linear denoiser through the same
   sampler and seed, and report FID in the feature space of a small classifier trained here
   (:class:`optdiff.evaluation.metrics.FeatureNet`), with real-vs-real and noise-vs-real rows for scale,
   and with ``--cnn-features`` also in the evaluation's CNN classifier's features;
5. write sample grids, figures, ``results.json`` and ``results.md`` to ``--out``.

Examples::

    python studies/quality.py --datasets fashion-mnist --out runs/quality
    python studies/quality.py --datasets mnist --mnist-dir /path/to/mnist --out runs/quality
    python studies/quality.py --set optics.n=300 --set train.steps=1000 --out runs/quality300

MNIST: only the t10k files may be present: then the model trains on the test split minus
the held-out images (``--mnist-dir`` is passed to the loader as ``data_dir``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the studies package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# studies.common first: it puts the in-tree optdiff on the path when none is installed
from studies.common import SETUPS, add_linear_args, load_split, quality_cnn_net, quality_feature_net  # noqa: E402

# isort: split
import optdiff  # noqa: E402
from optdiff.config import Config, apply_overrides  # noqa: E402
from optdiff.diffusion.model import generate  # noqa: E402
from optdiff.diffusion.trainer import Trainer, load_model, write_json_atomic  # noqa: E402
from optdiff.evaluation.baselines import LinearDenoiser, ZeroPredictor, per_set_mse  # noqa: E402
from optdiff.evaluation.metrics import frechet_distance  # noqa: E402
from optdiff.plots import plot_phases, plot_set_mse, plot_training, plot_trajectory, save_grid  # noqa: E402


def run_dataset(name: str, args, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    data_dir = args.mnist_dir if name == "mnist" else args.fashion_dir
    xtr, ytr, xho, yho = load_split(name, data_dir, args.held_out, args.seed)
    print(f"[{name}] {xtr.shape[0]} training images, {xho.shape[0]} held out", flush=True)
    res: dict = {"dataset": name, "train_images": int(xtr.shape[0]), "held_out": int(xho.shape[0])}

    # ---------------------------------------------------------------- ODU
    t0 = time.perf_counter()
    if args.checkpoint:
        model, _, meta = load_model(args.checkpoint)
        res["train"] = {"checkpoint": args.checkpoint, "step": meta.get("step")}
    else:
        base = {"data": {"dataset": name, "classes": SETUPS[name]["classes"]},
                "train": {"progress": not args.no_progress, "seed": args.seed}}
        cfg = Config.from_dict(apply_overrides(base, args.overrides))
        tr = Trainer(cfg, out / "train", images=xtr, val_images=xho[: cfg.train.val_batch])
        summary = tr.fit(resume=args.resume)
        model = tr.model
        res["train"] = {k: summary[k] for k in ("steps", "elapsed_s", "images_per_s", "light_fraction",
                                                "geometry")}
        plot_training(out / "train" / "train_log.csv", out / "train" / "val_log.csv", out / "training.png",
                      title=f"{name}: training")
    res["config"] = model.cfg.to_dict()
    res["train_wall_s"] = time.perf_counter() - t0
    sched, sets = model.schedule, model.set_ranges

    # ---------------------------------------------------------------- baselines
    t0 = time.perf_counter()
    lin = LinearDenoiser(ridge=args.ridge).fit(xtr, sched, sets, samples_per_set=args.linear_samples, rng=args.seed)
    res["linear_fit_s"] = time.perf_counter() - t0
    res["linear_samples"] = "exact" if args.linear_samples is None else args.linear_samples

    # ---------------------------------------------------------------- per-set MSE (paired noise)
    mse = {}
    for label, pred in (("ODU", model.predict_eps), ("zero", ZeroPredictor()), ("linear", lin.predict)):
        mse[label] = per_set_mse(pred, xho, sched, sets, rng=args.seed + 1, samples=args.mse_samples,
                                 timesteps_per_set=10).tolist()
    res["per_set_mse"] = mse
    res["set_ranges"] = [list(s) for s in sets]
    res["odu_beats_zero_everywhere"] = bool(all(o < z for o, z in zip(mse["ODU"], mse["zero"])))
    plot_set_mse(mse, out / "set_mse.png", set_ranges=sets, title=f"{name}: eps MSE per time set")
    print(table(mse, sets), flush=True)

    # ---------------------------------------------------------------- generation
    # Every sampling seed draws both predictors from the same starting noise; FID's spread over
    # seeds says how much of a difference between the two is chance.
    sc = model.cfg.sample
    sc.sampler, sc.steps, sc.eta, sc.batch = args.sampler, args.sampler_steps, 0.0, 100
    sc.clip_x0 = not args.no_clip
    res["config"]["sample"] = dict(res["config"]["sample"], sampler=sc.sampler, steps=sc.steps, eta=sc.eta,
                                   batch=sc.batch, clip_x0=sc.clip_x0)   # what sampled, not the training default
    seeds = args.sample_seeds or [args.seed]
    gens: dict = {}
    for si, seed in enumerate(seeds):
        sc.seed = seed
        for label, pred in (("ODU", model.predict_eps), ("linear", lin.predict)):
            t0 = time.perf_counter()
            x, traj = generate(pred, sched, sc, args.count, model.H, trajectory=True,
                               progress=not args.no_progress)
            dt = time.perf_counter() - t0
            gens.setdefault(label, []).append(x)
            s_info = res.setdefault("sampling", {}).setdefault(label, {"seconds": 0.0, "nan": 0, "max_abs": 0.0})
            s_info["seconds"] += dt
            s_info["nan"] += int(np.count_nonzero(~np.isfinite(x)))
            s_info["max_abs"] = max(s_info["max_abs"], float(np.nanmax(np.abs(x))))
            if si == 0:
                np.save(out / f"samples_{label.lower()}.npy", x)
                save_grid(x[:100], out / f"samples_{label.lower()}.png", ncol=10)
                plot_trajectory(traj, out / f"trajectory_{label.lower()}.png", count=6,
                                title=f"{name}: {label} {sc.sampler} trajectory")
    from optdiff.odu import init_phases

    plot_phases(model.params["phases"], out / "phases.png", set_ranges=sets, title=f"{name}: phase masks",
                reference=init_phases(model.cfg.optics, noise=0.0))
    save_grid(xho[:100], out / "real_heldout.png", ncol=10)

    # ---------------------------------------------------------------- FID in a small classifier's features
    real_a = xho[: args.count]
    real_b = xtr[np.random.default_rng(args.seed + 2).permutation(xtr.shape[0])[: args.count]]
    noise = np.clip(np.random.default_rng(args.seed + 3).standard_normal(real_a.shape), -1, 1)
    net = quality_feature_net(xtr, ytr, args.seed)
    fid, per_seed = fid_rows(net, gens, real_a, real_b, noise)
    res["fid"] = fid
    res["fid_per_seed"] = {"seeds": list(seeds), **per_seed}
    res["feature_net_accuracy"] = net.accuracy(xho, yho)
    res.update(verdict(fid, per_seed))
    print_fid("MLP", fid, per_seed)
    if args.cnn_features:   # the same samples in the evaluation's CNN features
        cnn = quality_cnn_net(xtr, ytr, xho, yho, name, args.seed)
        fid_c, per_seed_c = fid_rows(cnn, gens, real_a, real_b, noise)
        res["fid_cnn"] = {"accuracy": cnn.accuracy_held_out, "fid": fid_c, "per_seed": per_seed_c,
                          **verdict(fid_c, per_seed_c)}
        print_fid("CNN", fid_c, per_seed_c)
    write_json_atomic(out / "results.json", res)
    return res


def fid_rows(net, gens: dict, real_a, real_b, noise) -> tuple[dict, dict]:
    """FID against ``real_a`` in ``net``'s features: the scale rows (real vs real, noise vs real)
    and each predictor's samples, mean over seeds; and the per-seed FIDs ``{label: [...]}``."""
    fr = net.features(real_a)
    per_seed = {label: [frechet_distance(net.features(np.clip(x, -1, 1)), fr) for x in xs]
                for label, xs in gens.items()}
    fid = {"real (train) vs real (held-out)": frechet_distance(net.features(real_b), fr),
           "noise vs real": frechet_distance(net.features(noise), fr),
           "linear samples vs real": float(np.mean(per_seed["linear"])),
           "ODU samples vs real": float(np.mean(per_seed["ODU"]))}
    return fid, per_seed


def verdict(fid: dict, per_seed: dict) -> dict:
    """Whether the ODU's samples beat the linear denoiser's: in the mean, and on how many seeds."""
    return {"odu_beats_linear_fid": bool(fid["ODU samples vs real"] < fid["linear samples vs real"]),
            "odu_beats_linear_seeds": int(sum(o < l for o, l in zip(per_seed["ODU"], per_seed["linear"])))}


def print_fid(space: str, fid: dict, per_seed: dict) -> None:
    for k, v in fid.items():
        print(f"  FID ({space}) {k:34s} {v:10.3f}", flush=True)
    if len(per_seed["ODU"]) > 1:
        for label, v in per_seed.items():
            print(f"  FID ({space}) {label} per sampling seed: " + ", ".join(f"{f:.2f}" for f in v), flush=True)


def table(mse: dict, sets) -> str:
    names = list(mse)
    lines = ["| set | t | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for m, (a, b) in enumerate(sets):
        lines.append(f"| {m} | {a}-{b - 1} | " + " | ".join(f"{mse[n][m]:.4f}" for n in names) + " |")
    return "\n".join(lines)


def linear_fit_words(samples) -> str:
    return ("with the noise's moments in closed form (exact)" if samples == "exact"
            else f"on {samples} noised images per set")


def markdown(results: list[dict], args) -> str:
    out = ["# optdiff quality study", "", f"command: `python studies/quality.py {' '.join(args.argv)}`", ""]
    for r in results:
        out += [f"## {r['dataset']}", "",
                f"{r['train_images']} training images, {r['held_out']} held out; "
                f"training {r['train_wall_s']:.0f} s; sampler {r['config']['sample']['sampler']}; linear "
                f"denoiser fitted {linear_fit_words(r.get('linear_samples', 20000))}", "",
                "### eps-MSE per time set (held-out images, paired noise)", "",
                table(r["per_set_mse"], r["set_ranges"]), "",
                f"ODU beats the zero predictor at every set: **{r['odu_beats_zero_everywhere']}**", "",
                "### FID (features of a small MLP classifier trained here; "
                f"held-out accuracy {r['feature_net_accuracy']:.3f})", "", "| pair | FID |", "|---|---|"]
        out += [f"| {k} | {v:.3f} |" for k, v in r["fid"].items()]
        ps = r.get("fid_per_seed", {})
        if len(ps.get("seeds", [])) > 1:
            out += ["", f"sample FIDs are means over sampling seeds {ps['seeds']}; per seed: "
                    + "; ".join(f"{k} " + ", ".join(f"{f:.2f}" for f in ps[k]) for k in ("ODU", "linear"))
                    + f" (ODU better on {r['odu_beats_linear_seeds']} of {len(ps['seeds'])} seeds)"]
        out += ["", f"ODU samples beat the linear denoiser's samples: **{r['odu_beats_linear_fid']}**", ""]
        c = r.get("fid_cnn")
        if c:
            out += ["### FID in the evaluation's CNN features (the same samples; "
                    f"held-out accuracy {c['accuracy']:.3f})", "", "| pair | FID |", "|---|---|"]
            out += [f"| {k} | {v:.3f} |" for k, v in c["fid"].items()]
            out += ["", "per seed: " + "; ".join(f"{k} " + ", ".join(f"{f:.2f}" for f in c["per_seed"][k])
                                                for k in ("ODU", "linear"))
                    + f" (ODU better on {c['odu_beats_linear_seeds']} of {len(c['per_seed']['ODU'])} seeds)", "",
                    f"ODU samples beat the linear denoiser's samples (CNN): **{c['odu_beats_linear_fid']}**", ""]
        out += [
                "sampling: " + ", ".join(f"{k}: {v['seconds']:.0f} s, NaN {v['nan']}, max |x| {v['max_abs']:.2f}"
                                         for k, v in r["sampling"].items()), ""]
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="fashion-mnist,mnist", help="comma-separated: fashion-mnist, mnist")
    p.add_argument("--fashion-dir", default=None, help="Fashion-MNIST folder (default: the loader's search)")
    p.add_argument("--mnist-dir", default=None, help="MNIST folder (IDX files)")
    p.add_argument("--out", default="runs/quality")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="change the ODU configuration (default: optdiff's defaults)")
    p.add_argument("--checkpoint", default=None, help="evaluate this trained model instead of training")
    p.add_argument("--resume", action="store_true", help="resume training from out/<dataset>/train")
    p.add_argument("--count", type=int, default=500, help="images generated per model (default 500)")
    p.add_argument("--held-out", type=int, default=1000)
    p.add_argument("--mse-samples", type=int, default=1000, help="noised images per set for the MSE table")
    p.add_argument("--sampler", default="ddpm", choices=("ddpm", "ddim"))
    p.add_argument("--sampler-steps", type=int, default=100, help="DDIM steps")
    p.add_argument("--no-clip", action="store_true", help="do not clip predicted x0 while sampling")
    add_linear_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-seeds", type=lambda v: [int(x) for x in v.split(",") if x.strip()], default=None,
                   metavar="S1,S2,...", help="sampling seeds; FID is averaged over them (default: --seed)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cnn-features", action="store_true",
                   help="also report FID in the evaluation's CNN features (needs PyTorch: the torch extra)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    optdiff.set_num_threads(args.threads)
    args.overrides = list(args.overrides) + [f"train.threads={args.threads}"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        if name not in SETUPS:
            p.error(f"unknown data set {name!r}")
        results.append(run_dataset(name, args, out / name))
    (out / "results.md").write_text(markdown(results, args))
    write_json_atomic(out / "results.json", results)
    print(f"wrote {out / 'results.md'}")


if __name__ == "__main__":
    main()
