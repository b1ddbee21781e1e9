"""How good can a denoiser of the ODU's near-linear form be? Least squares, no optics.

With a biased amplitude encoding the camera intensity is dominated by a term linear in the
image, and an imaging relay with Fourier-plane phase filters makes that term a shift-invariant
filter of the input. Read out per pixel (scale, offset, skip), the ODU is then close to the
class

    conv+diag:  eps ~ s(x) (g * r)(x) + c(x) r(x) + o(x)     g: one kernel of radius R

This script fits, by least squares on noised images of one time set, the best member of

    diag:       eps ~ c(x) r(x) + o(x)                        (the digital skip alone)
    conv+diag:  as above (alternating least squares over s and (g, c, o))
    full:       eps ~ W r + c                                 (the linear baseline of studies/quality.py)

and reports their eps-MSE on held-out images: the gap between conv+diag and full is what a
shift-invariant optical filter cannot reach, however long it trains.

    python studies/linear_classes.py --dataset fashion-mnist --set 4
    python studies/linear_classes.py --dataset mnist --data-dir <MNIST folder> --set 4

Memory: ~3 x samples x H^2 x (2R+1)^2 x 8 bytes (2000 samples, R = 8: ~5.5 GB).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the studies package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# the same training / held-out split as the quality study (and optdiff on the path if needed)
from studies.common import add_data_args, load_split, noised  # noqa: E402

# isort: split
from optdiff.diffusion.schedule import NoiseSchedule, timestep_sets  # noqa: E402
from optdiff.evaluation.baselines import LinearDenoiser  # noqa: E402


def shifted(r, radius):
    """[n, H, W, K]: r(x + d) for every offset d of the (2R+1)^2 kernel, zero outside the image."""
    n, H, W = r.shape
    R = radius
    p = np.zeros((n, H + 2 * R, W + 2 * R))
    p[:, R:R + H, R:R + W] = r
    return np.stack([p[:, R + dy:R + dy + H, R + dx:R + dx + W]
                     for dy in range(-R, R + 1) for dx in range(-R, R + 1)], axis=-1)


def per_pixel_lstsq(feats, y, ridge=1e-9):
    """Independent least squares at every pixel: feats [n, H, W, F], y [n, H, W] -> [H, W, F]."""
    G = np.einsum("nhwf,nhwg->hwfg", feats, feats) + ridge * np.eye(feats.shape[-1])
    return np.linalg.solve(G, np.einsum("nhwf,nhw->hwf", feats, y)[..., None])[..., 0]


def fit_conv_diag(r, eps, radius, iters=3):
    """Alternating least squares for s(x) (g * r)(x) + c(x) r(x) + o(x); returns (g, coef[H, W, 3])."""
    Phi = shifted(r, radius)                               # [n, H, W, K]
    K = Phi.shape[-1]
    base = np.stack([r, np.ones_like(r)], -1)              # per-pixel regressors [n, H, W, 2]
    base_inv = np.linalg.inv(np.einsum("nhwa,nhwb->hwab", base, base))
    # eps with its per-pixel (r, 1) part removed: (c, o) are re-fitted per pixel for any g
    e_res = eps - np.einsum("nhwa,hwa->nhw", base, (base_inv @ np.einsum("nhwb,nhw->hwb", base, eps)[..., None])[..., 0])
    s = np.ones(r.shape[1:])
    coef = None
    for _ in range(iters):
        Z = Phi * s[None, :, :, None]
        Z -= np.einsum("nhwa,hwak->nhwk", base, base_inv @ np.einsum("nhwb,nhwk->hwbk", base, Z))
        Zf = Z.reshape(-1, K)
        A = Zf.T @ Zf
        g = np.linalg.solve(A + 1e-8 * np.trace(A) / K * np.eye(K), Zf.T @ e_res.reshape(-1))
        del Z, Zf
        coef = per_pixel_lstsq(np.stack([Phi @ g, r, np.ones_like(r)], -1), eps)
        s = coef[..., 0]
    return g, coef


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(ap)
    ap.add_argument("--set", type=int, default=4, help="time set (of M=10 over T=1000)")
    ap.add_argument("--radius", type=int, default=8, help="kernel radius R of the shift-invariant filter")
    ap.add_argument("--samples", type=int, default=2000, help="noised training images for diag / conv+diag")
    ap.add_argument("--test", type=int, default=4000, help="noised held-out images for the MSE")
    args = ap.parse_args(argv)

    xtr, _, xte, _ = load_split(args.dataset, args.data_dir, 1000, 0)
    schedule = NoiseSchedule(1000)
    t_range = timestep_sets(1000, 10)[args.set]
    rtr, _, etr = noised(xtr, args.samples, t_range, schedule, np.random.default_rng(1))
    rte, _, ete = noised(xte, args.test, t_range, schedule, np.random.default_rng(2))

    def mse(pred):
        return float(np.mean((pred - ete) ** 2))

    t0 = time.perf_counter()
    out = {"zero": mse(np.zeros_like(ete))}
    cd = per_pixel_lstsq(np.stack([rtr, np.ones_like(rtr)], -1), etr)
    out["diag"] = mse(cd[..., 0] * rte + cd[..., 1])
    g, coef = fit_conv_diag(rtr, etr, args.radius)
    conv_te = shifted(rte, args.radius) @ g
    out[f"conv+diag (R={args.radius})"] = mse(coef[..., 0] * conv_te + coef[..., 1] * rte + coef[..., 2])
    lin = LinearDenoiser(ridge=1e-3).fit(xtr, schedule, [t_range], samples_per_set=20000, rng=0)
    out["full linear"] = mse(lin.predict(rte, t_range[0]))
    print(f"{args.dataset}, set {args.set} (t {t_range[0]}-{t_range[1] - 1}), eps-MSE on {args.test} "
          f"held-out noised images ({time.perf_counter() - t0:.0f} s):")
    print("| class | eps-MSE |\n|---|---|")
    for k, v in out.items():
        print(f"| {k} | {v:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
