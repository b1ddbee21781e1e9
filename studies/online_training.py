"""The reference work's Fig. 7 experiment, small: does training with the bench in the loop beat
training an ideal model and deploying it on an imperfect bench?

An emulated bench (hidden alignment errors of a few mrad, camera noise, SLM and DMD quantisation,
fringing) and four ways to train the same model on the bundled digits:

* offline: the ideal model, deployed on the bench as it is;
* online: forward on the bench, gradients through a digital twin whose mirror and beam angles
  start 20 % off the truth (the rest calibrated), refined from the training frames as it goes;
* experimental backpropagation (Wright et al. 2022): forward on the bench, gradients through the
  ideal model;
* calibrated: online with the twin at the true parameters (the perfectly calibrated case).

Curves of the bench eps-MSE (fixed held-out batch per time set, measured on the bench) per training
step, the online twin's discrepancy D on the current phases, and samples generated on the bench
(DDIM) scored by FID in a small classifier's features against held-out digits.

    python studies/online_training.py --out runs/online_training          # ~20-40 min on 2 cores

Writes ``results.json``, ``results.md`` and ``fig7.png`` to ``--out``.
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
from optdiff.config import Config, OpticsConfig, SampleConfig  # noqa: E402
from optdiff.data import load_dataset  # noqa: E402
from optdiff.diffusion.model import generate  # noqa: E402
from optdiff.diffusion.trainer import Trainer, validation_batch  # noqa: E402
from optdiff.evaluation import FeatureNet, frechet_distance  # noqa: E402
from optdiff.hardware import BenchConfig, EmulatedExperiment  # noqa: E402
from optdiff.hardware.fit import discrepancy  # noqa: E402
from optdiff.hardware.online import REFINE_IMAGES, BenchODU  # noqa: E402
from optdiff.hardware.trainer import HardwareTrainer  # noqa: E402
from optdiff.hardware.twin import DigitalTwin  # noqa: E402
from optdiff.hardware.twin_params import TwinParams  # noqa: E402

MODES = ("offline", "online", "experimental-backprop", "calibrated")


def config(args) -> Config:
    cfg = Config()
    cfg.optics = OpticsConfig(n=args.n)
    cfg.model.image_size, cfg.model.sets = 20, args.sets
    t = cfg.train
    t.steps, t.batch, t.val_every, t.ckpt_every, t.progress, t.threads = args.steps, args.batch, 0, 0, False, 2
    t.val_batch, t.seed = 32, args.seed
    return cfg


def bench_mse(model, odu, val, args) -> list[float]:
    keep = model.odu
    model.odu = odu
    try:
        out = []
        for m in range(model.M):
            r, t, eps = validation_batch(model, val, m, args.val_images, args.seed)
            out.append(model.set_mse(m, r, t, eps))
        return out
    finally:
        model.odu = keep


def twin_discrepancy(twin, device, model, val, args) -> float:
    r = val[: args.val_images]
    frames = device.capture(r, model.params["phases"][0])
    return discrepancy(np.clip(twin.frames(r, model.params["phases"][0]), 0, 4095), frames)


def run_mode(mode, cfg, train, val, truth, args, out) -> dict:
    dev = EmulatedExperiment(args.bench_seed, cfg.optics, 20)       # the same bench for every mode
    eval_dev = EmulatedExperiment(args.bench_seed, cfg.optics, 20)
    nominal = BenchConfig()
    folder = out / mode
    if mode == "offline":
        tr = Trainer(cfg, folder, images=train, val_images=val, log=False)
        ev = BenchODU(tr.model.odu, eval_dev, "deploy", DigitalTwin(cfg.optics, 20, nominal))
    else:
        if mode == "online":
            p = truth.replace(mirror_angle=tuple(1.2 * np.asarray(truth.mirror_angle)),
                              beam_angle=tuple(1.2 * np.asarray(truth.beam_angle)))
        elif mode == "calibrated":
            p = truth
        else:
            p = None
        twin = DigitalTwin(cfg.optics, 20, nominal, p, nthreads=2)
        tr = HardwareTrainer(cfg, folder, dev, "online" if mode != "experimental-backprop" else mode, twin,
                             refine_every=args.refine_every if mode == "online" else 0,
                             refine_images=args.refine_images, images=train,
                             val_images=val, log=False)
        ev = BenchODU(tr.hw._ideal, eval_dev, tr.hw.mode, twin)   # evaluation: its own captures
    curve, dcurve, t0 = [], [], time.perf_counter()
    total = tr.total_steps
    while tr.step < total:
        tr.fit(resume=tr.step > 0, max_steps=min(args.eval_every, total - tr.step))
        mse = bench_mse(tr.model, ev, val, args)
        row = {"step": tr.step, "bench_mse": mse, "seconds": time.perf_counter() - t0}
        if mode == "online":
            row["twin_D"] = twin_discrepancy(tr.hw.twin, eval_dev, tr.model, val, args)
            dcurve.append(row["twin_D"])
        curve.append(row)
        print(f"  {mode:22s} step {tr.step:5d}  bench eps-MSE {np.mean(mse):.4f}  "
              + (f"twin D {row['twin_D']:.4f}  " if "twin_D" in row else "") + f"{row['seconds']:.0f} s", flush=True)
    res = {"mode": mode, "curve": curve, "final_bench_mse": curve[-1]["bench_mse"]}
    if mode == "offline":   # also with the read-out refitted on the bench (phases unchanged)
        res["ideal_mse"] = bench_mse(tr.model, tr.model.odu, val, args)
        kept, ideal = {k: v.copy() for k, v in tr.model.params.items()}, tr.model.odu
        tr.model.odu = ev
        tr.calibrate()
        res["readout_refit_bench_mse"] = bench_mse(tr.model, ev, val, args)
        tr.model.odu = ideal
        for k, v in kept.items():
            tr.model.params[k][...] = v
    res["samples"] = sample(tr.model, ev, cfg, args)
    if mode == "offline":
        res["ideal_samples"] = sample(tr.model, tr.model.odu, cfg, args)
    return res


def sample(model, odu, cfg, args) -> np.ndarray:
    keep = model.odu
    model.odu = odu
    try:
        sc = SampleConfig(sampler="ddim", steps=args.sample_steps, eta=1.0, count=args.samples,
                          batch=args.samples, seed=args.seed)
        return generate(model.predict_eps, model.schedule, sc, args.samples, 20)
    finally:
        model.odu = keep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--sets", type=int, default=4)
    ap.add_argument("--steps", type=int, default=150, help="training steps per set")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--eval-every", type=int, default=60, help="training steps between bench evaluations")
    ap.add_argument("--val-images", type=int, default=64)
    ap.add_argument("--refine-every", type=int, default=5)
    ap.add_argument("--refine-images", type=int, default=REFINE_IMAGES, help="frames per refinement step")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--sample-steps", type=int, default=50)
    ap.add_argument("--bench-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--out", default="runs/online_training")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = config(args)
    x, y = load_dataset("digits", size=20)
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(x.shape[0])
    nval = max(args.val_images, x.shape[0] // 5)
    val, train, ytrain = x[perm[:nval]], x[perm[nval:]], y[perm[nval:]]
    truth = TwinParams.from_config(
        BenchConfig.from_dict(EmulatedExperiment(args.bench_seed, cfg.optics, 20).reveal_truth()["config"]),
        cfg.optics.layers)
    results = {}
    for mode in args.modes.split(","):
        results[mode] = run_mode(mode, cfg, train, val, truth, args, out)
    net = FeatureNet(hidden=(128,), seed=0).fit(train, ytrain)
    real = net.features(val)
    for res in results.values():
        res["fid"] = frechet_distance(real, net.features(res["samples"]))
        if "ideal_samples" in res:
            res["ideal_fid"] = frechet_distance(real, net.features(res["ideal_samples"]))
    write(results, args, out)
    return 0


def write(results, args, out) -> None:
    def plain(v):
        return v.tolist() if isinstance(v, np.ndarray) else v
    (out / "results.json").write_text(json.dumps(
        {"args": vars(args), "results": {m: {k: plain(v) for k, v in r.items() if "samples" not in k}
                                         for m, r in results.items()}}, indent=1))
    cmd = "python studies/online_training.py " + " ".join(sys.argv[1:])
    lines = [f"# Training with the bench in the loop (Fig. 7, small)\n\n`{cmd}`\n",
             f"N = {args.n}, {args.sets} time sets x {args.steps} steps, batch {args.batch}; emulated bench seed "
             f"{args.bench_seed}; bench eps-MSE on {args.val_images} held-out noisy digits per set (camera noise on); "
             f"{args.samples} DDIM samples ({args.sample_steps} steps) generated on the bench, FID in a small "
             "classifier's features against held-out digits.\n",
             "| mode | bench eps-MSE per set (final) | mean | FID of bench samples |", "| --- | --- | --- | --- |"]
    for m, r in results.items():
        f = r["final_bench_mse"]
        lines.append(f"| {m} | {', '.join(f'{v:.4f}' for v in f)} | {np.mean(f):.4f} | {r['fid']:.1f} |")
    off = results.get("offline")
    if off:
        lines += ["", f"Offline, read-out refitted on the bench: {', '.join(f'{v:.4f}' for v in off['readout_refit_bench_mse'])} "
                  f"(mean {np.mean(off['readout_refit_bench_mse']):.4f}); the ideal model in simulation: "
                  f"{', '.join(f'{v:.4f}' for v in off['ideal_mse'])} (mean {np.mean(off['ideal_mse']):.4f}), "
                  f"samples FID {off['ideal_fid']:.1f}."]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    np.savez(out / "samples.npz", **{k.replace("-", "_"): r["samples"] for k, r in results.items()},
             **({"ideal": results["offline"]["ideal_samples"]} if "offline" in results else {}))
    figure(results, out)


def figure(results, out) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(15, 7))
    ax = fig.add_subplot(2, 3, 1)
    styles = {"offline": "o-", "online": "s--", "experimental-backprop": "^-", "calibrated": "x:"}
    for m, r in results.items():
        ax.plot([c["step"] for c in r["curve"]], [np.mean(c["bench_mse"]) for c in r["curve"]],
                styles.get(m, "o-"), label=m)
    ax.set_xlabel("training step")
    ax.set_ylabel("bench eps-MSE (mean over sets)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    on = results.get("online")
    if on:
        ax = fig.add_subplot(2, 3, 4)
        ax.semilogy([c["step"] for c in on["curve"]], [c["twin_D"] for c in on["curve"]], "o-")
        ax.set_xlabel("training step")
        ax.set_ylabel("online twin: D on the bench")
    panels = [(m, r["samples"], r["fid"]) for m, r in results.items()]
    if "offline" in results:
        panels.insert(0, ("ideal model, simulated", results["offline"]["ideal_samples"], results["offline"]["ideal_fid"]))
    for i, (m, samples, fid) in enumerate(panels):
        ax = fig.add_subplot(2, 6, 3 + i if i < 4 else 9 + i - 4)
        s = np.pad(samples[:16], ((0, 0), (1, 1), (1, 1)), constant_values=1.0)
        grid = np.block([[s[4 * a + b] for b in range(4)] for a in range(4)])
        ax.imshow(grid, cmap="gray", vmin=-1, vmax=1)
        ax.set_title(f"{m}\nFID {fid:.0f}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "fig7.png", dpi=110)


if __name__ == "__main__":
    sys.exit(main())
