"""Distillation start: pull each set's ODU towards the least-squares linear denoiser of that set.

Before the noise loss (``train.distill_steps`` > 0), the phases and read-out of every set are
fitted to the linear denoiser's prediction ``W r_t + c`` on noised training images. The target
has none of the irreducible variance of the eps loss (eps is only partly predictable from
r_t), so the optics move towards the best linear map with less gradient noise; the noise loss
then refines from there.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .model import TimeAwareODU
from .optim import Adam

__all__ = ["DistillError", "distill_set", "distill_model"]


class DistillError(RuntimeError):
    """The distillation loss or its gradient is not finite."""


def distill_set(model: TimeAwareODU, m: int, linear, images: np.ndarray, steps: int, opt: Adam,
                lr: float, readout_lr: float, batch: int, rng, callback=None, draw_only: bool = False) -> float:
    """Fit set ``m`` of ``model`` (phases and read-out) to a linear denoiser's prediction.

    ``steps`` Adam steps (``opt``, constant rates) on ``mean((eps_hat - linear(r_t))^2)`` over
    noised ``images`` of the set; ``linear``: anything with ``predict(r, t)`` that is one affine
    map per set (:class:`optdiff.evaluation.baselines.LinearDenoiser`). ``callback(step, loss)``
    after each step. Returns the last loss. ``draw_only``: only draw the steps' random numbers
    (a set trained elsewhere, so that the stream stays in step for the next set).
    """
    lo, hi = model.set_ranges[m]
    loss = float("nan")
    for k in range(int(steps)):
        idx = rng.integers(0, images.shape[0], size=batch)
        t = rng.integers(lo, hi, size=batch)
        noise = rng.standard_normal((batch, model.H, model.W))
        if draw_only:
            continue
        r = model.schedule.q_sample(images[idx], t, noise)
        loss, grads = model.loss_and_grads(m, r, t, linear.predict(r, lo))
        if not math.isfinite(loss) or not all(np.all(np.isfinite(g)) for g in grads.values()):
            raise DistillError(f"non-finite distillation loss ({loss}) in set {m}; lower train.lr")
        opt.step(m, grads, {name: (lr if name == "phases" else readout_lr) for name in grads})
        if callback is not None:
            callback(k, loss)
    return loss


def distill_model(model: TimeAwareODU, images: np.ndarray, tc, progress: bool = False, sets=None) -> float:
    """``tc.distill_steps`` steps of :func:`distill_set` on every set; returns the seconds spent.
    ``sets``: train only these (a set trained as its own task); the others' random numbers are
    drawn and dropped, so each set sees what it sees in the serial run.

    The linear denoiser is fitted here on ``images`` (20000 noised images per set, ridge 1e-3,
    as in the quality study); the optimiser and the random stream are its own (seeded by
    ``tc.seed``), so the noise loss afterwards starts with a fresh warm-up and the same batches
    as without distillation.
    """
    from ..evaluation.baselines import LinearDenoiser  # the baseline is only needed here

    t0 = time.perf_counter()
    own = set(range(model.M)) if sets is None else {int(m) for m in sets}
    rng = np.random.default_rng([tc.seed, 161803])
    lin = LinearDenoiser(ridge=1e-3).fit(images, model.schedule, model.set_ranges, samples_per_set=20000, rng=rng)
    opt = Adam(model.params, model.M, tc.beta1, tc.beta2)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=tc.distill_steps * len(own), desc="distill", unit="step", dynamic_ncols=True)

    def tick(_k, loss):
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")

    try:
        for m in range(model.M):
            distill_set(model, m, lin, images, tc.distill_steps, opt, tc.lr, tc.readout_lr, tc.batch, rng,
                        callback=None if bar is None else tick, draw_only=m not in own)
    finally:
        if bar is not None:
            bar.close()
    return time.perf_counter() - t0
