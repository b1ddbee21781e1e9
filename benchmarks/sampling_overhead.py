"""Full DDPM generation with a time-aware ODU, against the optics alone.

Times a complete ancestral DDPM generation (T=1000 steps, M=10 layer sets) of
`--count` images at N=`--n`, through the real model (encode -> phase stack ->
bin -> read-out -> sampler update), and 1000 bare `PhaseStack.forward` calls on
the same batch: the ratio is the per-step overhead of everything that is not
optics (issue target: within 1.1x). The two are timed alternately `--repeats`
times and the medians compared, so a machine whose speed drifts over a minute
does not bias the ratio.

    python benchmarks/sampling_overhead.py --n 128 --count 64 --threads 2
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import optdiff
from optdiff.config import Config
from optdiff.diffusion.model import TimeAwareODU, generate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=128, help="modulator pixels per side (default 128)")
    ap.add_argument("--count", type=int, default=64, help="images generated (one batch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=1000, help="T, the number of DDPM steps")
    ap.add_argument("--repeats", type=int, default=3, help="alternating timings of each (median)")
    args = ap.parse_args(argv)
    optdiff.set_num_threads(args.threads)

    cfg = Config()
    cfg.optics.n = args.n
    cfg.diffusion.T = args.steps
    cfg.sample.count = cfg.sample.batch = args.count
    model = TimeAwareODU(cfg, nthreads=args.threads)
    schedule = model.schedule

    # Warm up (FFTW plans) outside the timings.
    model.predict_eps(np.zeros((args.count, model.H, model.W)), args.steps - 1)

    field = model.odu.encode(np.zeros((args.count, model.H, model.W)))
    phases = np.ascontiguousarray(model.params["phases"][0])
    stack = model.odu.stack
    gens, fwds = [], []
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        x = generate(model.predict_eps, schedule, cfg.sample, args.count, model.H)
        gens.append(time.perf_counter() - t0)
        assert np.all(np.isfinite(x))
        t0 = time.perf_counter()
        for _ in range(args.steps):
            stack.forward(field, phases)
        fwds.append(time.perf_counter() - t0)
    t_gen, t_fwd = float(np.median(gens)), float(np.median(fwds))
    ratios = ", ".join(f"{g / f:.3f}" for g, f in zip(gens, fwds))
    print(f"N={args.n}, B={args.count}, T={args.steps}, M={cfg.model.sets}, threads={args.threads}")
    print(f"full DDPM generation : {t_gen:8.2f} s  ({args.count / t_gen:.2f} images/s)")
    print(f"{args.steps} stack forwards  : {t_fwd:8.2f} s")
    print(f"generation / forwards: {t_gen / t_fwd:8.3f}x  (medians of {len(gens)}; pairs: {ratios})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
