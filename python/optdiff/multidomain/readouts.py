"""Per-domain read-outs of the binned camera image: detector regions (classification) and the
ODU's per-pixel affine noise estimate (generation), each with its loss, quality and gradients.

Classification: C square detectors on a grid over the binned image; domain d's logits are
``z_c = tau_d * E_c / sum_j E_j + b_dc`` (E_c the light on detector c; the normalisation makes the
decision independent of the total power), loss = cross-entropy, quality = accuracy.
Generation: ``eps_hat = scale_d * I + offset_d`` per pixel, loss = eps-MSE on noisy images
``r_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` with t in the searched timestep set,
quality = -eps-MSE. Gradients are closed-form; the optics' gradient goes on through the
super-network's adjoint.
"""

from __future__ import annotations

import math

import numpy as np

from ..diffusion.schedule import NoiseSchedule

__all__ = ["detector_layout", "ClassifierReadout", "DenoiserReadout"]


def detector_layout(size: int, classes: int) -> np.ndarray:
    """``[classes, size, size]`` boolean detector regions: squares centred in a grid of cells."""
    if classes < 1:
        raise ValueError(f"classes must be >= 1, got {classes}")
    cols = math.ceil(math.sqrt(classes))
    rows = math.ceil(classes / cols)
    if size < max(rows, cols):
        raise ValueError(f"image_size {size} is too small for {classes} detectors ({rows} x {cols} grid)")
    det = np.zeros((classes, size, size), dtype=bool)
    ch, cw = size // rows, size // cols
    sh, sw = max(1, ch // 2), max(1, cw // 2)
    y0, x0 = (size - rows * ch) // 2, (size - cols * cw) // 2
    for c in range(classes):
        r, q = divmod(c, cols)
        top, left = y0 + r * ch + (ch - sh) // 2, x0 + q * cw + (cw - sw) // 2
        det[c, top:top + sh, left:left + sw] = True
    return det


class ClassifierReadout:
    """Detector read-out of ``D`` domains with ``classes[d]`` classes each."""

    kind = "classify"
    quality_name = "accuracy"
    fits = False  # no closed-form fit: trained with Adam only

    def __init__(self, image_size: int, classes: list[int]):
        self.classes = [int(c) for c in classes]
        cmax = max(self.classes)
        self.det = detector_layout(image_size, cmax).astype(np.float64)
        D = len(self.classes)
        self.params = {"tau": np.full((D, 1), 10.0), "bias": np.zeros((D, cmax))}

    def batch(self, x, y, idx, rng):
        """Network inputs and targets for the rows ``idx`` of a domain's data."""
        return x[idx], y[idx]

    def _logits(self, d: int, I: np.ndarray):
        C = self.classes[d]
        E = np.einsum("bhw,chw->bc", I, self.det[:C])
        S = E.sum(axis=1, keepdims=True) + 1e-30
        s = E / S
        return self.params["tau"][d, 0] * s + self.params["bias"][d, :C], s, S

    def quality(self, d: int, I: np.ndarray, y: np.ndarray) -> float:
        z, _, _ = self._logits(d, I)
        return float(np.mean(np.argmax(z, axis=1) == y))

    def loss_and_grads(self, d: int, I: np.ndarray, y: np.ndarray):
        """``(loss, d loss / d I, {param: d loss / d param[d]})``."""
        z, s, S = self._logits(d, I)
        B, C = z.shape
        zs = z - z.max(axis=1, keepdims=True)
        logp = zs - np.log(np.exp(zs).sum(axis=1, keepdims=True))
        loss = float(-np.mean(logp[np.arange(B), y]))
        gz = np.exp(logp)
        gz[np.arange(B), y] -= 1.0
        gz /= B
        grads = {"tau": np.array([np.sum(gz * s)]),
                 "bias": np.pad(gz.sum(axis=0), (0, self.params["bias"].shape[1] - C))}
        gs = self.params["tau"][d, 0] * gz
        gE = (gs - np.sum(gs * s, axis=1, keepdims=True)) / S
        gI = np.einsum("bc,chw->bhw", gE, self.det[:C])
        return loss, gI, grads

    def calibrate(self, d, I, y) -> None:
        """Nothing to fit in closed form (tau and the biases start at 10 and 0)."""


class DenoiserReadout:
    """Per-pixel affine noise read-out of ``D`` domains for timesteps ``t_range`` of a schedule."""

    kind = "generate"
    quality_name = "-eps-MSE"
    fits = True  # calibrate() fits scale and offset by least squares

    def __init__(self, image_size: int, domains: int, T: int, t_range):
        self.schedule = NoiseSchedule(T)
        self.t_lo, self.t_hi = int(t_range[0]), int(t_range[1])
        H = int(image_size)
        self.params = {"scale": np.ones((domains, H, H)), "offset": np.zeros((domains, H, H))}

    def batch(self, x, y, idx, rng):
        """Noisy images (the inputs) and their noise (the targets) for clean images ``x[idx]``."""
        x0 = x[idx]
        t = rng.integers(self.t_lo, self.t_hi, size=x0.shape[0])
        eps = rng.standard_normal(x0.shape)
        return self.schedule.q_sample(x0, t, eps), eps

    def quality(self, d: int, I: np.ndarray, eps: np.ndarray) -> float:
        e = self.params["scale"][d] * I + self.params["offset"][d] - eps
        return -float(np.mean(e * e))

    def loss_and_grads(self, d: int, I: np.ndarray, eps: np.ndarray):
        diff = self.params["scale"][d] * I + self.params["offset"][d] - eps
        loss = float(np.mean(diff * diff))
        g = (2.0 / diff.size) * diff
        grads = {"scale": np.sum(g * I, axis=0), "offset": np.sum(g, axis=0)}
        return loss, g * self.params["scale"][d], grads

    def calibrate(self, d: int, I: np.ndarray, eps: np.ndarray) -> None:
        """Least-squares scale and offset per pixel on a batch (the masks fixed)."""
        mi, me = I.mean(axis=0), eps.mean(axis=0)
        cov = np.mean((I - mi) * (eps - me), axis=0)
        var = np.mean((I - mi) ** 2, axis=0)
        scale = cov / (var + 1e-12 * (var.max() + 1e-30))
        self.params["scale"][d] = scale
        self.params["offset"][d] = me - scale * mi
