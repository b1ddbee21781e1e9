"""Fine-tune a trained model with a penalty on the affine part of its error (a training loss only).

``studies/linear_residual.py`` found that the ODU's samples lose to the linear denoiser's in the
MLP's features because of the affine part of its error (the least-squares fit of
``eps_hat - eps`` on ``x_t``): adding that fit back digitally puts the samples ahead, while a
placebo fit (the same residuals shuffled across images) does not. A least-squares linear
denoiser has no such part (the normal equations); an ODU trained on the noise MSE keeps one,
small in the MSE, systematic along the sampling chain.

This study asks whether the optics can be trained to shed it. The loss becomes
``MSE + weight * mean((A x~ + b)^2)`` with ``A x~ + b`` the affine fit of the residual
(``x~ = x_t - E[x_t]``). Its gradient with respect to ``eps_hat`` is the MSE's with the target
``eps`` moved by ``-weight * (A x~ + b)``, so only the target changes: the same optics, read-out
and adjoint gradients. ``A = Cov(residual, x_t) Cov(x_t)^-1``: the first factor a running
(exponential) mean over the training batches, the second exact (the noise's moments in closed
form, :func:`optdiff.diffusion.schedule.noised_moments`).

The fine-tune starts from ``--checkpoint`` (parameters, Adam state and the random stream), runs
``--steps`` steps per set at a constant rate, and writes ``checkpoint.npz`` for
``studies/quality.py --checkpoint``. ``--weight 0`` is the control: the same batches and rates
without the penalty.

    python studies/affine_penalty.py --checkpoint runs/q/fashion-mnist/train/checkpoint.npz \\
        --weight 2 --steps 1500 --out runs/affine-penalty
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

from studies.common import add_data_args, load_split, noised  # noqa: E402

# isort: split
from optdiff.diffusion.schedule import noised_moments  # noqa: E402
from optdiff.diffusion.trainer import Trainer, load_model, save_model, write_json_atomic  # noqa: E402


class AffinePenalty:
    """Per set, a running estimate of the least-squares affine fit of the residual on ``x_t``,
    and the training target that adds ``weight * mean(fit^2)`` to the MSE.

    ``decay``: the running mean's factor per update of a set (window ~ ``1 / (1 - decay)``
    batches). The target is moved only once a set has had a full window of updates.
    """

    def __init__(self, images, schedule, set_ranges, weight: float, decay: float = 0.995, ridge: float = 1e-3):
        if not weight >= 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        if not 0 < decay < 1:
            raise ValueError(f"decay must lie in (0, 1), got {decay}")
        flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
        self.weight, self.decay = float(weight), float(decay)
        self.schedule, self.set_ranges = schedule, [tuple(r) for r in set_ranges]
        M, D = len(set_ranges), flat.shape[1]
        moments = noised_moments(schedule, flat, self.set_ranges)     # exact, per set
        self.mean = [mean for mean, _, _ in moments]
        self.cov = [cov for _, cov, _ in moments]
        self.precision = [np.linalg.inv(cov + ridge * np.eye(D)) for cov in self.cov]
        self.cross = np.zeros((M, D, D))       # running E[residual (x_t - E[x_t])^T]
        self.res_mean = np.zeros((M, D))       # running E[residual]
        self.count = np.zeros(M, dtype=np.int64)

    @property
    def window(self) -> int:
        return int(np.ceil(1.0 / (1.0 - self.decay)))

    def fit(self, m: int, r) -> np.ndarray:
        """The current affine fit of set ``m``'s residual at ``x_t = r``, ``[B, D]`` (zeros before any update)."""
        flat = np.asarray(r, dtype=np.float64).reshape(len(r), -1)
        if self.count[m] == 0:
            return np.zeros_like(flat)
        unbias = 1.0 - self.decay ** self.count[m]          # the running means start at zero
        xc = flat - self.mean[m]
        return (xc @ self.precision[m]) @ self.cross[m].T / unbias + self.res_mean[m] / unbias

    def target(self, m: int, r, eps) -> np.ndarray:
        """The MSE target whose gradient is that of MSE + weight * penalty (``eps`` until warm)."""
        if self.weight == 0 or self.count[m] < self.window:
            return eps
        return eps - self.weight * self.fit(m, r).reshape(np.shape(eps))

    def update(self, m: int, r, eps_hat, eps) -> None:
        """Fold one batch's residual ``eps_hat - eps`` into set ``m``'s running means."""
        B = len(r)
        res = (np.asarray(eps_hat) - np.asarray(eps)).reshape(B, -1)
        xc = np.asarray(r, dtype=np.float64).reshape(B, -1) - self.mean[m]
        d = self.decay
        self.cross[m] = d * self.cross[m] + (1 - d) * (res.T @ xc) / B
        self.res_mean[m] = d * self.res_mean[m] + (1 - d) * res.mean(axis=0)
        self.count[m] += 1

    def affine_energy(self, model, m: int, images, count: int, rng) -> float:
        """The mean square (per pixel) of the affine part of ``model``'s set-``m`` residual,
        without the fit's noise: with ``A1, A2`` the affine maps fitted on two independent halves
        of ``count`` noised ``images``, ``tr(A1 Cov(x_t) A2^T) / D`` is unbiased for
        ``tr(A Cov(x_t) A^T) / D``, whereas one fit's own value carries ~``D / count`` of the MSE
        in noise (as large as the signal here). Uses this object's exact moments of set m."""
        maps = []
        for _ in range(2):
            r, t, e = noised(images, count // 2, self.set_ranges[m], self.schedule, rng)
            res = (model.predict(r, t, m) - e).reshape(len(r), -1)
            maps.append((res.T @ (r.reshape(len(r), -1) - self.mean[m]) / len(r)) @ self.precision[m])
        return float(np.trace(maps[0] @ self.cov[m] @ maps[1].T) / len(self.mean[m]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="the trained model to fine-tune")
    add_data_args(ap)
    ap.add_argument("--weight", type=float, required=True, help="the penalty's weight (0: the control)")
    ap.add_argument("--steps", type=int, default=1500, help="fine-tune steps per set")
    ap.add_argument("--sets", default="", help="comma-separated sets to fine-tune (default: all)")
    ap.add_argument("--lr", type=float, default=3e-3, help="phase learning rate (constant)")
    ap.add_argument("--readout-lr", type=float, default=6e-4, help="read-out learning rate (constant)")
    ap.add_argument("--decay", type=float, default=0.995, help="running mean's factor per set step")
    ap.add_argument("--energy-samples", type=int, default=20000,
                    help="noised training images per set for the affine energy before and after")
    ap.add_argument("--held-out", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0, help="data split (as quality.py)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/affine_penalty")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error("--steps must be >= 1")
    if not args.weight >= 0 or not 0 < args.decay < 1:
        ap.error("--weight must be >= 0 and --decay in (0, 1)")
    if args.energy_samples < 4:
        ap.error("--energy-samples must be >= 4")
    model, _, _ = load_model(args.checkpoint)
    sets = [int(s) for s in args.sets.split(",") if s.strip()] or list(range(model.M))
    if any(not 0 <= m < model.M for m in sets):
        ap.error(f"--sets must name sets in 0..{model.M - 1}")
    cfg = model.cfg
    cfg.train.threads, cfg.train.progress = args.threads, False
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    xtr, _, xho, _ = load_split(args.dataset, args.data_dir, args.held_out, args.seed)
    tr = Trainer(cfg, out / "train", images=xtr, val_images=xho[: cfg.train.val_batch], log=False)
    tr.restore(args.checkpoint)
    model = tr.model
    pen = AffinePenalty(xtr, model.schedule, model.set_ranges, args.weight, args.decay)

    def measure() -> dict:   # the same draws before and after: a paired comparison
        val = tr.validate()["val_mse"]
        return {s: {"val_mse": val[s], "affine_energy": pen.affine_energy(
            model, s, xtr, args.energy_samples, np.random.default_rng([args.seed, 13, s]))} for s in sets}

    before = measure()
    print("before: " + json.dumps(before), flush=True)
    t0 = time.perf_counter()
    for k in range(args.steps * len(sets)):
        m = sets[k % len(sets)]
        r, t, eps = tr._batch(m)
        loss, grads, pred = model.loss_and_grads(m, r, t, pen.target(m, r, eps), return_pred=True)
        if not all(np.all(np.isfinite(g)) for g in grads.values()):
            raise SystemExit(f"non-finite gradient at fine-tune step {k} (set {m}): lower --lr or --weight")
        pen.update(m, r, pred, eps)
        tr.opt.step(m, grads, {name: (args.lr if name == "phases" else args.readout_lr) for name in grads})
        tr.step += 1
    elapsed = time.perf_counter() - t0
    after = measure()
    fine = {"from": args.checkpoint, "weight": args.weight, "steps_per_set": args.steps, "sets": sets,
            "lr": args.lr, "readout_lr": args.readout_lr, "decay": args.decay, "seconds": elapsed}
    save_model(out / "checkpoint.npz", model, tr.opt,
               {"step": tr.step, "elapsed_s": tr.elapsed + elapsed, "rng_state": tr.rng.bit_generator.state,
                "total_steps": tr.total_steps, "images": int(xtr.shape[0]), "distill_s": tr.distill_s,
                "affine_penalty": fine})
    cmd = "python studies/affine_penalty.py " + " ".join(sys.argv[1:] if argv is None else argv)
    write_json_atomic(out / "results.json", {"command": cmd, **fine, "before": before, "after": after})
    print("set | val MSE before -> after | affine energy before -> after")
    for s in sets:
        b, a = before[s], after[s]
        print(f"{s} | {b['val_mse']:.6f} -> {a['val_mse']:.6f} | {b['affine_energy']:.3g} -> {a['affine_energy']:.3g}")
    print(f"wrote {out / 'checkpoint.npz'} ({elapsed:.0f} s of fine-tuning)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
