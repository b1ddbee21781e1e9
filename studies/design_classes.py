"""Optical designs judged by how much of the linear denoiser they can express, before long training.

For one time set, each *design* (a buildable optics configuration: phase-only layers, a
modulator encoding, an intensity camera, the digital per-pixel read-out and skip) is started
in one or both ways and trained on that set alone, with the eps-MSE on 1000 fixed held-out
noised images logged against wall-clock time:

* ``imaging``: the trainer's start (imaging phases + noise, read-out by least squares), then
  the noise loss;
* ``distill``: the same, then ``--distill-steps`` steps towards the least-squares linear
  denoiser's prediction (:func:`optdiff.diffusion.trainer.distill_set`), then the noise loss.

What the distilled ODU reaches is a member of the design's class: an *upper* bound on that
class's best eps-MSE (the class optimum is at most this), measured in the same units as the
full linear denoiser (``linear``) and the digital terms alone (``diag``: the best per-pixel
``c r + o``, what the skip and offset do without optics). For the relay, the shift-invariant
model of ``linear_classes.py`` (conv+diag) is the reference that says how far a relay whose
Fourier-plane phases are trained stays behind.

The skip term's share: ``optics_share`` is the fraction of the prediction's variance (over
the held-out images, per pixel, summed) carried by the camera term ``scale * I`` (in eps
units, with the x0 read-out's factor), the rest being the digital terms; ``digital_only`` is
the eps-MSE of the trained model with the camera image replaced by its mean (optics removed).

The quadratic term's gain: with the affine amplitude encoding the camera intensity of an input
``r`` is exactly ``|E0 + H r|^2`` (``E0`` the bias's field), so its linear term is the odd part
``(I(r) - I(-r)) / 2`` and ``I(0) + (I(r) - I(-r)) / 2`` is the intensity without the quadratic
term. ``linear_part`` is the trained model's eps-MSE with that intensity: an affine predictor
of ``r`` for each ``t`` (``clipped``: the share of modulator pixels the encoding clips, where this
is not exact), so it cannot beat the least-squares linear denoiser (one affine map per set) by
more than that fit's sampling error, except at the x0 read-out's sets (1-2), whose conversion
to eps uses ``t``. ``quad_gain = linear_part - odu``: what the quadratic term buys. The ODU beats
the linear denoiser at a set only if ``quad_gain > linear_part - linear``.

    python studies/design_classes.py --set 4 --designs relay,free --starts imaging,distill
    python studies/design_classes.py --dataset mnist --data-dir <MNIST folder> --set 4

One JSON line per run (appended to ``--out``). Designs: see ``DESIGNS``.
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

from studies.common import add_data_args, append_jsonl, load_split, noised  # noqa: E402
from studies.linear_classes import per_pixel_lstsq  # noqa: E402

# isort: split
from optdiff.config import Config, apply_overrides  # noqa: E402
from optdiff.diffusion.distill import distill_set  # noqa: E402
from optdiff.diffusion.model import TimeAwareODU  # noqa: E402
from optdiff.diffusion.optim import Adam, lr_at  # noqa: E402
from optdiff.evaluation.baselines import LinearDenoiser  # noqa: E402

#: name -> configuration overrides. All are buildable: phase-only layers, an amplitude modulator
#: (bias + signal), an intensity camera. ``relay`` and ``free`` are the same hardware (4 layers at
#: 34.2 mm, the reference work's free-space geometry at N = 128, k = 5): they differ in the start.
DESIGNS = {
    "relay": [],
    "free": ["optics.init=zero"],                       # no lenses: the reference work's start
    "layers6": ["optics.layers=6"],                     # two more layers (4f start on 4 of them)
    "bias025": ["optics.amp_bias=0.25"],                # the quadratic term twice as strong
    "n160k8": ["optics.n=160", "optics.upsample=8"],    # more modulator pixels per image pixel
    # the reference work's size: 300 x 300 layers, 15 modulator pixels per image pixel (20 x 20)
    "ref300": ["optics.n=300", "optics.upsample=15", "optics.init=zero"],
    "ref300relay": ["optics.n=300", "optics.upsample=15"],
    "phase": ["optics.encoding=phase"],                 # a phase modulator: exp(i s r), nonlinear in r
    # a signed gain per camera pixel before binning: indefinite quadratic forms per output
    "subpixel": ["model.readout=subpixel"],
    "subpixel_free": ["model.readout=subpixel", "optics.init=zero"],   # non-local fields at the camera
    "subpixel_bias025": ["model.readout=subpixel", "optics.amp_bias=0.25"],
    # smaller biases: the quadratic term stronger still, but more modulator pixels clip at 0
    "subpixel_bias0188": ["model.readout=subpixel", "optics.amp_bias=0.1875"],
    "subpixel_bias0125": ["model.readout=subpixel", "optics.amp_bias=0.125"],
}


def shares(model, m, r, t, eps):
    """(optics_share, digital_only eps-MSE) of set m on held-out (r, t, eps); see the module doc."""
    I = model.camera_image(r, m)
    # the part of `out` that the camera varies (the read-out is affine in the camera image)
    opt = model.readout(m, I, r) - model.readout(m, np.broadcast_to(I.mean(axis=0), I.shape), r)
    if m in model.x0_sets:
        _, b = model._x0_factors(m, t)
        opt = -b * opt
    pred = model.predict(r, t, m)
    share = float(np.sum(opt.var(axis=0)) / max(np.sum(pred.var(axis=0)), 1e-30))
    digital = pred - opt                                    # camera image frozen at its mean
    return share, float(np.mean((digital - eps) ** 2))


def empirical_bayes(x_train, r, t, schedule, chunk: int = 250) -> np.ndarray:
    """The posterior mean of eps given ``r`` when the prior is the training images themselves
    (uniform over ``x_train``): a nonlinear denoiser that needs no training, so the headroom
    below the linear denoiser at a set is measured, not guessed. It memorises at the least noisy
    sets (the posterior sits on the nearest training image), where it says nothing."""
    X = x_train.reshape(x_train.shape[0], -1)
    xx = np.einsum("ij,ij->i", X, X)
    out = np.empty(r.shape)
    for i in range(0, r.shape[0], chunk):
        R = r[i:i + chunk].reshape(-1, X.shape[1])
        ab = schedule.alpha_bar[np.asarray(t)[i:i + chunk]]
        s, v = np.sqrt(ab)[:, None], (1.0 - ab)[:, None]
        logw = (2 * s * (R @ X.T) - s * s * xx[None, :]) / (2 * v)   # -|R - s X|^2 / 2v + const(R)
        w = np.exp(logw - logw.max(axis=1, keepdims=True))
        x0 = (w @ X) / w.sum(axis=1, keepdims=True)
        out[i:i + chunk] = ((R - s * x0) / np.sqrt(v)).reshape(r[i:i + chunk].shape)
    return out


def linear_part(model, m, r, t) -> tuple[float, float]:
    """The prediction of set m with the camera intensity's quadratic term
    removed, and the share of clipped modulator pixels; see the module doc."""
    I = model.camera_image(r, m)
    odd = 0.5 * (I - model.camera_image(-r, m))
    I0 = model.camera_image(np.zeros_like(r[:1]), m)
    out = model.readout(m, I0 + odd, r)
    if m in model.x0_sets:
        a, b = model._x0_factors(m, t)
        out = a * r - b * out
    o = model.cfg.optics
    amp = o.amp_bias + o.amp_scale * r
    clipped = float(np.mean((amp < 0) | (amp > 1))) if o.encoding == "amplitude" else float("nan")
    return out, clipped


def run_one(args, design, start, m, xtr, val, lin, results):
    over = [f"data.dataset={args.dataset}", f"train.threads={args.threads}"] + DESIGNS[design] + args.o
    cfg = Config.from_dict(apply_overrides({}, over))
    model = TimeAwareODU(cfg, nthreads=args.threads)
    tc, sched = cfg.train, model.schedule
    lo, hi = model.set_ranges[m]
    vr, vt, ve = val

    def val_mse():
        return float(np.mean((model.predict(vr, vt, m) - ve) ** 2))

    rng = np.random.default_rng(1)
    model.calibrate(m, *noised(xtr, 512, (lo, hi), sched, np.random.default_rng(5)))
    t0 = time.perf_counter()
    curve = [{"phase": "start", "step": 0, "s": 0.0, "mse": round(val_mse(), 5)}]
    every = max(1, args.steps // args.evals)
    if start == "distill":
        opt = Adam(model.params, model.M)
        drng = np.random.default_rng(2)
        for k0 in range(0, args.distill_steps, every):
            n = min(every, args.distill_steps - k0)
            distill_set(model, m, lin, xtr, n, opt, tc.lr, tc.readout_lr, tc.batch, drng)
            curve.append({"phase": "distill", "step": k0 + n, "s": round(time.perf_counter() - t0, 1),
                          "mse": round(val_mse(), 5)})
            print(f"  {design}/{start} set {m} distill {k0 + n}: {curve[-1]['mse']}", file=sys.stderr, flush=True)
    steps = args.steps - (args.distill_steps if start == "distill" else 0)  # the same total step budget
    opt = Adam(model.params, model.M)
    for k in range(steps):
        r, t, eps = noised(xtr, tc.batch, (lo, hi), sched, rng)
        _, grads = model.loss_and_grads(m, r, t, eps)
        lr = lr_at(k, steps, tc.lr, tc.lr_schedule, tc.warmup, tc.lr_min_factor)
        rlr = lr_at(k, steps, tc.readout_lr, tc.lr_schedule, tc.warmup, tc.lr_min_factor)
        opt.step(m, grads, {name: (lr if name == "phases" else rlr) for name in grads})
        if (k + 1) % every == 0 or k + 1 == steps:
            curve.append({"phase": "noise", "step": k + 1, "s": round(time.perf_counter() - t0, 1),
                          "mse": round(val_mse(), 5)})
            print(f"  {design}/{start} set {m} noise {k + 1}: {curve[-1]['mse']}", file=sys.stderr, flush=True)
    share, digital = shares(model, m, vr, vt, ve)
    lin_pred, clipped = linear_part(model, m, vr, vt)
    line = {"dataset": args.dataset, "set": m, "design": design, "start": start, "overrides": over[2:],
            "distill_steps": args.distill_steps if start == "distill" else 0, "steps": args.steps,
            "curve": curve, "final": curve[-1]["mse"], "wall_s": curve[-1]["s"],
            "optics_share": round(share, 4), "digital_only": round(digital, 5),
            "linear_part": round(float(np.mean((lin_pred - ve) ** 2)), 5), "clipped": round(clipped, 5),
            "light": round(model.odu.light_fraction(model.params["phases"][m]), 4), **results[m]}
    print(json.dumps(line), flush=True)
    append_jsonl(args.out, line)


def tilt_as_ramp(n=48, layers=3, seed=0) -> float:
    """Relative difference between a stack with tilted hops and the same stack, untilted, whose masks
    carry the ramps ``k sin(tilt)`` instead (the hop's x tilt on the mask's second axis).

    ~1e-15: a tilted (off-axis, folded) hop adds nothing to the class of a design whose masks are
    free phases, as long as the ramp is sampled (|sin tilt| < lambda / (2 pitch)).
    """
    from optdiff.optics import PhaseStack

    lam, pitch = 850e-9, 9.2e-6
    rng = np.random.default_rng(seed)
    ph = rng.uniform(-1, 1, (layers, n, n))
    field = rng.standard_normal((2, n, n)) + 1j * rng.standard_normal((2, n, n))
    tilts = rng.uniform(-0.02, 0.02, (layers, 2))
    common = dict(wavelength=lam, pitch=pitch, distances=[8.55e-3] * layers)
    tilted = PhaseStack(n, tilts=tilts, **common).forward(field, ph)
    c = (np.arange(n) - (n - 1) / 2) * pitch
    rows, cols = np.meshgrid(c, c, indexing="ij")
    k = 2 * np.pi / lam
    ramped = ph + k * (np.sin(tilts[:, 0])[:, None, None] * cols + np.sin(tilts[:, 1])[:, None, None] * rows)
    plain = PhaseStack(n, **common).forward(field, ramped)
    return float(np.abs(plain - tilted).max() / np.abs(tilted).max())


def checkpoint_shares(path, dataset, data_dir) -> list[dict]:
    """Per set of a trained checkpoint: ODU, linear, diag and linear-part eps-MSE, optics_share and
    digital_only."""
    from optdiff.diffusion.trainer import load_model

    model, _, _ = load_model(path, nthreads=1)
    xtr, _, xte, _ = load_split(dataset, data_dir, 1000, 0)
    sched = model.schedule
    lin = LinearDenoiser(ridge=1e-3).fit(xtr, sched, model.set_ranges, samples_per_set=20000, rng=0)
    rows = []
    for m, (lo, hi) in enumerate(model.set_ranges):
        vr, vt, ve = noised(xte, 1000, (lo, hi), sched, np.random.default_rng(99 + m))
        rtr, _, etr = noised(xtr, 2000, (lo, hi), sched, np.random.default_rng(3))
        cd = per_pixel_lstsq(np.stack([rtr, np.ones_like(rtr)], -1), etr)
        share, digital = shares(model, m, vr, vt, ve)
        lin_pred, clipped = linear_part(model, m, vr, vt)
        row = {"set": m, "odu": float(np.mean((model.predict(vr, vt, m) - ve) ** 2)),
               "linear_part": float(np.mean((lin_pred - ve) ** 2)), "clipped": clipped,
               "linear": float(np.mean((lin.predict(vr, lo) - ve) ** 2)),
               "diag": float(np.mean((cd[..., 0] * vr + cd[..., 1] - ve) ** 2)),
               "optics_share": share, "digital_only": digital,
               "light": model.odu.light_fraction(model.params["phases"][m])}
        print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(ap)
    ap.add_argument("--set", default="4", help="time sets (of M = 10), comma-separated")
    ap.add_argument("--designs", default="relay,free", help=f"comma-separated, of {', '.join(DESIGNS)}")
    ap.add_argument("--starts", default="imaging,distill", help="comma-separated: imaging, distill")
    ap.add_argument("--distill-steps", type=int, default=400)
    ap.add_argument("--steps", type=int, default=800,
                    help="steps per run in all (the distill start: distill steps + noise-loss steps)")
    ap.add_argument("--evals", type=int, default=4, help="held-out evaluations per phase")
    ap.add_argument("--o", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="extra configuration override for every design, repeatable")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="append the JSON lines to this file")
    ap.add_argument("--checkpoint", default=None,
                    help="instead of training: per-set eps-MSE and the optics' share of a trained model")
    ap.add_argument("--tilt-check", action="store_true", help="only print tilt_as_ramp()'s difference")
    ap.add_argument("--headroom", action="store_true",
                    help="only print, per --set, the linear denoiser's and the empirical-Bayes denoiser's eps-MSE")
    args = ap.parse_args(argv)
    if args.tilt_check:
        print(f"tilted hops vs ramps on the masks: max relative difference {tilt_as_ramp():.2e}")
        return 0
    if args.checkpoint:
        rows = checkpoint_shares(args.checkpoint, args.dataset, args.data_dir)
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))
        return 0
    if not 0 <= args.distill_steps <= args.steps:
        ap.error("--distill-steps must be in 0..--steps (the runs share one step budget)")
    sets = [int(s) for s in args.set.split(",") if s.strip()]
    designs = [d for d in args.designs.split(",") if d.strip()]
    starts = [s for s in args.starts.split(",") if s.strip()]
    for d in designs:
        if d not in DESIGNS:
            ap.error(f"--designs: unknown design {d!r}; known: {', '.join(DESIGNS)}")
    for s in starts:
        if s not in ("imaging", "distill"):
            ap.error(f"--starts: unknown start {s!r}; use imaging, distill")

    xtr, _, xte, _ = load_split(args.dataset, args.data_dir, 1000, 0)
    base = TimeAwareODU(Config.from_dict({}), nthreads=1)  # the schedule and sets every design shares
    sched = base.schedule
    lin = LinearDenoiser(ridge=1e-3).fit(xtr, sched, base.set_ranges, samples_per_set=20000, rng=0)
    vals, results = {}, {}
    for m in sets:
        rng = np.random.default_rng(99 + m)
        vr, vt, ve = noised(xte, 1000, base.set_ranges[m], sched, rng)
        vals[m] = (vr, vt, ve)
        if args.headroom:
            row = {"dataset": args.dataset, "set": m,
                   "linear": round(float(np.mean((lin.predict(vr, base.set_ranges[m][0]) - ve) ** 2)), 5),
                   "empirical_bayes": round(float(np.mean((empirical_bayes(xtr, vr, vt, sched) - ve) ** 2)), 5)}
            print(json.dumps(row), flush=True)
            append_jsonl(args.out, row)
            continue
        lo = base.set_ranges[m][0]
        rtr, _, etr = noised(xtr, 2000, base.set_ranges[m], sched, np.random.default_rng(3))
        cd = per_pixel_lstsq(np.stack([rtr, np.ones_like(rtr)], -1), etr)
        results[m] = {"linear": round(float(np.mean((lin.predict(vr, lo) - ve) ** 2)), 5),
                      "diag": round(float(np.mean((cd[..., 0] * vr + cd[..., 1] - ve) ** 2)), 5),
                      "zero": round(float(np.mean(ve ** 2)), 4)}
        print(f"set {m}: {results[m]}", file=sys.stderr, flush=True)
    if args.headroom:
        return 0
    for m in sets:
        for d in designs:
            for s in starts:
                run_one(args, d, s, m, xtr, vals[m], lin, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
