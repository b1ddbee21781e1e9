"""What a training step costs in each training mode: interleaved rounds, ratios to the ideal step.

Each round times, in a shuffled order, one ``TimeAwareODU.loss_and_grads`` of the same batch in
the modes ``offline`` (the ideal ODU), ``online`` (capture on the emulated bench, forward and
backward of the digital twin; its refinement step every ``--refine-every`` steps, on
``--refine-images`` frames of the batch, is timed apart),
``experimental-backprop`` (capture, then the ideal ODU's forward and backward), the emulated
capture alone, the twin's forward and backward alone, and the twin's refinement step. Ratios to
the offline step are taken within a round and reported as the median and interquartile range.
The twin's cache of input fields is emptied before each call (a training step has new images).
The derived row ``online_minus_capture`` (the online step less the emulated capture of the same
round) is what the step costs with a real bench, whose capture is exposure time, not compute.
The derived row ``online_with_refinement`` is the online step plus its share of a refinement step
(``twin_refine_step / refine_every`` of the same round): what an online training step costs on
average.

    python benchmarks/hardware_train_step.py --n 128 --batch 32 --threads 1 --rounds 30
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))

import numpy as np  # noqa: E402

import optdiff  # noqa: E402
from benchmarks import common  # noqa: E402
from optdiff.config import Config, OpticsConfig  # noqa: E402
from optdiff.diffusion import TimeAwareODU  # noqa: E402
from optdiff.hardware import EmulatedExperiment  # noqa: E402
from optdiff.hardware.online import REFINE_IMAGES, BenchODU  # noqa: E402
from optdiff.hardware.twin import DigitalTwin  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--refine-every", type=int, default=10, help="online mode's refinement period (default 10)")
    ap.add_argument("--refine-images", type=int, default=REFINE_IMAGES,
                    help=f"frames per refinement step (default {REFINE_IMAGES})")
    ap.add_argument("--json", default=None, help="also write the per-round times (s) to this file")
    args = ap.parse_args(argv)
    optdiff.set_num_threads(args.threads)
    cfg = Config()
    cfg.optics = OpticsConfig(n=args.n)
    cfg.model.image_size, cfg.model.sets = 20, 10
    model = TimeAwareODU(cfg, nthreads=args.threads)
    ideal = model.odu
    exp = EmulatedExperiment(0, cfg.optics, 20)
    twin = DigitalTwin(cfg.optics, 20, nthreads=args.threads)
    online = BenchODU(ideal, exp, "online", twin, refine_every=0)
    refining = BenchODU(ideal, exp, "online", twin, refine_every=args.refine_every,
                        refine_images=args.refine_images)
    eb = BenchODU(ideal, exp, "experimental-backprop", DigitalTwin(cfg.optics, 20))
    rng = np.random.default_rng(0)
    lo, hi = model.set_ranges[0]
    x0 = rng.uniform(-1, 1, (args.batch, 20, 20))
    t = rng.integers(lo, hi, args.batch)
    eps = rng.standard_normal(x0.shape)
    r = model.schedule.q_sample(x0, t, eps)

    def step(odu):
        def run():
            twin.clear_cache()   # a training step has new images: no cached input field
            model.odu = odu
            model.loss_and_grads(0, r, t, eps)
        return run

    frames = online.capture(r, model.params["phases"][0])
    start = twin.params

    def refine():   # what the online step adds every refine_every steps: the frames are the step's
        twin.clear_cache()
        refining.refine(r, model.params["phases"][0], frames)
        twin.set_params(start)   # every round times the same twin

    g_binned = np.ones((args.batch, 20, 20))

    def twin_only():   # what the online step runs on the twin: its tape, then the fused adjoint
        twin.clear_cache()
        ctx = twin.forward_tape(r, model.params["phases"][0])
        twin.phase_grad(ctx, online.binning.grid_adjoint(g_binned, *ctx.camera[:2], twin.rdtype))

    tools = {"offline": step(ideal), "online": step(online), "experimental-backprop": step(eb),
             "capture_only": lambda: online.capture(r, model.params["phases"][0]),
             "twin_forward_backward": twin_only, "twin_refine_step": refine}
    times = common.interleaved_times(tools, args.rounds, seed=None)
    base = np.array(times["offline"])
    print(f"N = {args.n}, B = {args.batch}, {args.threads} threads, {args.rounds} rounds; "
          f"offline step median {1e3 * statistics.median(base):.1f} ms")
    times["online_minus_capture"] = list(np.array(times["online"]) - np.array(times["capture_only"]))
    times["online_with_refinement"] = list(np.array(times["online"])
                                           + np.array(times["twin_refine_step"]) / max(args.refine_every, 1))
    print(f"refinement every {args.refine_every} steps on {args.refine_images} of {args.batch} frames")
    print("\n".join(common.ratio_table(times, "offline")))
    if args.json:
        import json
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "times_s": times}, fh, indent=1)


if __name__ == "__main__":
    main()
