"""The hardware side of the command line: ``optdiff calibrate`` and ``optdiff train --mode``.

The device is the emulated experiment (``--bench-seed``: its hidden errors); a lab puts its own
:class:`~optdiff.hardware.CaptureDevice` behind the same Python calls
(:func:`~optdiff.hardware.calibrate.calibrate_device`, :class:`~optdiff.hardware.trainer.HardwareTrainer`).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

__all__ = ["add_mode_flags", "add_calibrate_parser", "cmd_calibrate", "make_trainer"]

MODES = ("offline", "online", "experimental-backprop")


def add_mode_flags(p) -> None:
    g = p.add_argument_group("hardware modes (docs/hardware.md)")
    g.add_argument("--mode", choices=MODES, default="offline",
                   help="offline: the ideal model (default); online: forward on the bench, gradients through "
                        "the calibrated twin, refined as training goes; experimental-backprop: forward on the "
                        "bench, gradients through the ideal model")
    g.add_argument("--bench-seed", type=int, default=0, metavar="SEED",
                   help="the emulated experiment the hardware modes run on (seed of its hidden errors)")
    g.add_argument("--twin", metavar="FILE", help="twin.json written by 'optdiff calibrate' (default: the nominal bench)")
    g.add_argument("--refine-every", type=int, default=10, metavar="K",
                   help="online mode: an Adam step of the twin's parameters every K training steps (0: never)")
    g.add_argument("--refine-images", type=int, default=None, metavar="K",
                   help="online mode: frames of the batch each refinement step fits (default: "
                        "optdiff.hardware.online.REFINE_IMAGES, 8)")
    g.add_argument("--slm-aware", action="store_true",
                   help="offline mode: phases shown as the SLM's 8-bit levels and inputs as the DMD's grey "
                        "levels in the forward pass, straight-through gradients (the bench quantises anyway "
                        "in the other modes)")


def add_calibrate_parser(sub, add_config_flags) -> None:
    c = sub.add_parser("calibrate", help="fit the digital twin to pi-patch frames of a bench",
                       description="Capture random square pi-phase patches on the (emulated) bench, fit the "
                                   "digital twin's parameters to the frames, report the discrepancy D = 1 - C "
                                   "before and after; writes calibration.npz, twin.json and calibrate_log.csv.")
    c.add_argument("--out", default="runs/calibrate", help="output folder (default runs/calibrate)")
    c.add_argument("--bench-seed", type=int, default=0, metavar="SEED", help="emulated experiment seed")
    c.add_argument("--frames", type=int, default=200, help="pi-patch frames fitted (default 200)")
    c.add_argument("--holdout", type=int, default=40, help="further frames to measure D on (default 40)")
    c.add_argument("--denoise-batches", type=int, default=0, metavar="K",
                   help="then refine on K batches of denoising frames (K more held out for D)")
    c.add_argument("--quick", action="store_true", help="fewer iterations (a smoke test, not a calibration)")
    c.add_argument("--reveal", action="store_true",
                   help="compare with the emulated bench's hidden truth (studies and tests only)")
    c.add_argument("--calibration-seed", type=int, default=0, help="seed of the random squares")
    c.add_argument("--registration", choices=("fit", "known"), default="fit",
                   help="fit: fit per-patch offsets (default); known: the patches sit where the lab put them "
                        "(one rigid SLM), offsets fixed, the walk between patches fitted as angles")
    c.add_argument("--gap-starts", default=None, metavar="K,K,...",
                   help="registration known: starting gaps of the coarse multi-start in z_gap tolerances "
                        "from nominal (default: the library's, optdiff.hardware.calibrate.GAP_STARTS)")
    c.add_argument("--beam-starts", default=None, metavar="K,K,...",
                   help="registration known: starting beam angles along the fold (x) of the multi-start, in "
                        "beam-angle tolerances from nominal (default: optdiff.hardware.calibrate.BEAM_STARTS)")
    add_config_flags(c)


def _nominal(args):
    """The bench's design: the ``[bench]`` table of ``--config`` (absent: the reference bench)."""
    from .hardware.config import BenchConfig, load_bench_config

    path = getattr(args, "config", None)
    return load_bench_config(path) if path else BenchConfig()


def _device(cfg, seed: int, nominal):
    from .hardware import EmulatedExperiment

    return EmulatedExperiment(seed, cfg.optics, cfg.model.image_size, nominal=nominal)


def _twin(cfg, path, nominal):
    from .hardware.twin import DigitalTwin
    from .hardware.twin_params import TwinParams

    params = TwinParams.load(path) if path else None
    return DigitalTwin(cfg.optics, cfg.model.image_size, nominal, params=params, nthreads=cfg.train.threads)


def make_trainer(args, cfg, out):
    """The trainer of ``--mode``: the plain Trainer offline, a HardwareTrainer otherwise."""
    mode = getattr(args, "mode", "offline")
    if mode == "offline":
        from .diffusion.trainer import Trainer

        tr = Trainer(cfg, out)
        if getattr(args, "slm_aware", False):
            from .hardware.slm_aware import QuantisedODU

            tr.model.odu = QuantisedODU(tr.model.odu)
        return tr
    if getattr(args, "slm_aware", False):
        raise ValueError("--slm-aware is for --mode offline: on the bench the SLM quantises the phases itself")
    from .hardware.online import REFINE_IMAGES
    from .hardware.trainer import HardwareTrainer

    if args.refine_every < 0:
        raise ValueError(f"--refine-every {args.refine_every}: must be >= 0")
    refine_images = getattr(args, "refine_images", None)
    refine_images = REFINE_IMAGES if refine_images is None else refine_images
    if refine_images < 1:
        raise ValueError(f"--refine-images {refine_images}: must be >= 1")
    if mode == "online" and not args.twin:
        print("optdiff train: --mode online without --twin: the twin starts from the nominal bench "
              "(run 'optdiff calibrate' first for a calibrated one)", file=sys.stderr)
    nominal = _nominal(args)
    return HardwareTrainer(cfg, out, _device(cfg, args.bench_seed, nominal), mode, _twin(cfg, args.twin, nominal),
                           refine_every=args.refine_every, refine_images=refine_images)


def cmd_calibrate(args, build_config) -> dict:
    from .hardware.calibrate import BEAM_STARTS, GAP_STARTS, calibrate_device, compare_with_truth
    from .hardware.fit import DEFAULT_STAGES, Stage

    for name in ("frames", "holdout", "denoise_batches"):
        if getattr(args, name) < (1 if name == "frames" else 0):
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= "
                             f"{1 if name == 'frames' else 0}")
    starts = {"gap_starts": GAP_STARTS, "beam_starts": BEAM_STARTS}
    for name in starts:
        text = getattr(args, name, None)
        if text:
            try:
                starts[name] = tuple(float(k) for k in text.split(","))
            except ValueError:
                raise ValueError(f"--{name.replace('_', '-')} {text!r}: must be comma-separated numbers") from None
    cfg = build_config(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = _device(cfg, args.bench_seed, _nominal(args))
    stages = (Stage(8, 15, 30), Stage(4, 10, 60), Stage(2, 5, None)) if args.quick else DEFAULT_STAGES
    rows = []

    def log(row):
        rows.append(row)
        if not getattr(args, "no_progress", False):
            p = row["params"]
            print(f"  stage {row['stage']} (pool {row['pool']}) eval {row['evals']:3d}  objective "
                  f"{row['objective']:.4g}  z_gap {p['z_gap'] * 1e3:.4f} mm  {row['seconds']:.0f} s",
                  file=sys.stderr)

    print(f"optdiff calibrate: {args.frames} pi-patch frames (+{args.holdout} held out) from the emulated "
          f"bench seed {args.bench_seed} -> {out}", file=sys.stderr)
    twin, report, cal = calibrate_device(device, cfg.optics, cfg.model.image_size, device.nominal,
                                         frames=args.frames, holdout=args.holdout, seed=args.calibration_seed,
                                         stages=stages, denoise_batches=args.denoise_batches,
                                         registration=getattr(args, "registration", "fit"), **starts,
                                         log=log)
    cal.save(out / "calibration.npz")
    result = {"report": report.to_dict(), "bench_seed": args.bench_seed}
    if args.reveal:
        result["truth"] = compare_with_truth(report.params, device.reveal_truth(), report.start)
    report.params.save(out / "twin.json", result)
    with open(out / "calibrate_log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["stage", "pool", "evals", "objective", "data", "gain", "dark_level",
                                          "seconds", "z_gap", "mirror_angle", "beam_angle"])
        w.writeheader()
        for r in rows:
            p = r["params"]
            w.writerow({**{k: r[k] for k in ("stage", "pool", "evals", "objective", "data", "gain", "dark_level",
                                              "seconds")},
                        "z_gap": p["z_gap"], "mirror_angle": json.dumps(p["mirror_angle"]),
                        "beam_angle": json.dumps(p["beam_angle"])})
    p = report.params
    print(f"D (held-out pi-patch frames): before {report.discrepancy_before:.4g}, after "
          f"{report.discrepancy_after:.4g}")
    if report.denoise_after is not None:
        print(f"D (held-out denoising frames): before {report.denoise_before:.4g}, after {report.denoise_after:.4g}")
    print(f"z_gap {p.z_gap * 1e3:.4f} mm, mirror angle ({p.mirror_angle[0] * 1e3:+.4f}, "
          f"{p.mirror_angle[1] * 1e3:+.4f}) mrad, beam angle ({p.beam_angle[0] * 1e3:+.4f}, "
          f"{p.beam_angle[1] * 1e3:+.4f}) mrad, phase scale {p.phase_scale:.4f}, fringing {p.crosstalk:.3f} px")
    if args.reveal:
        t = result["truth"]
        print(f"truth: z_gap {t['z_gap']['true'] * 1e3:.4f} mm (error {t['z_gap']['relative_error'] * 100:.2f} %), "
              f"mirror ({t['mirror_angle']['true'][0] * 1e3:+.4f}, {t['mirror_angle']['true'][1] * 1e3:+.4f}) mrad, "
              f"beam ({t['beam_angle']['true'][0] * 1e3:+.4f}, {t['beam_angle']['true'][1] * 1e3:+.4f}) mrad")
    print(f"twin: {out / 'twin.json'}  ({report.fit_seconds:.0f} s fitting, {report.capture_seconds:.0f} s capturing)")
    return result
