"""What the bench model costs next to the ideal ODU: one forward pass, interleaved rounds.

Each round times, in a shuffled order, the ideal ODU's camera intensity (``ODU.camera``), the
default bench's capture (DMD with dither and relay aperture, SLM with LUT, quantisation and
cross-talk, folded stack, camera with noise and ADC), the same bench without its camera
(``Bench.intensity``) and the stages of the bench one by one. Ratios are taken within a round
(a drifting machine moves both sides) and reported as the median and interquartile range.

    python benchmarks/hardware_cost.py --n 128 --batch 32 --threads 2 --rounds 30
"""
from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))

import numpy as np  # noqa: E402

import optdiff  # noqa: E402
from benchmarks import common  # noqa: E402
from optdiff.config import OpticsConfig  # noqa: E402
from optdiff.hardware import Bench  # noqa: E402
from optdiff.odu import ODU, init_phases  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--image-size", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--grid", type=int, default=None, help="Bench(grid=...): simulated square per patch")
    args = ap.parse_args(argv)
    optdiff.set_num_threads(args.threads)
    optics = OpticsConfig(n=args.n)
    H = args.image_size
    phases = init_phases(optics, image_size=H, rng=0)
    images = np.random.default_rng(0).uniform(-1, 1, (args.batch, H, H))
    odu, bench = ODU(optics, H), Bench(optics, H, grid=args.grid)
    field, ph = bench.input_field(images), bench.phases(phases)
    inten = bench.stack.forward(field, ph)
    tools = {
        "odu_camera": lambda: odu.camera(images, phases),
        "bench_capture": lambda: bench.capture(images, phases),
        "bench_intensity": lambda: bench.intensity(images, phases),
        "stage_dmd": lambda: bench.input_field(images),
        "stage_slm": lambda: bench.phases(phases),
        "stage_stack": lambda: bench.stack.forward(field, ph),
        "stage_camera": lambda: bench.readout.frames(inten, bench.rng),
    }
    times = common.interleaved_times(tools, args.rounds, seed=None)
    print(f"N={args.n}, grid={bench.grid}, B={args.batch}, image {H}x{H}, threads {args.threads}, "
          f"rounds {args.rounds}; ratio = per-round time / ODU.camera time")
    print("\n".join(common.ratio_table(times, "odu_camera")))


if __name__ == "__main__":
    main()
