"""Design phase masks that shape a beam into a target intensity, with optdiff's fused MSE step.

A Gaussian beam passes L phase masks (free-space hops between them, then to the camera); Adam
adjusts the masks so the camera intensity matches a target (a ring by default, or the digit
'8' drawn from scikit-learn's 8x8 set). The gradient of mean((I - target)^2) comes from
``PhaseStack.mse_loss_and_grad``: forward, loss and exact adjoint in one C++ call.

    python examples/fit_intensity.py --n 128 --layers 3 --steps 300 --out runs/fit
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

import optdiff


def gaussian_beam(n: int, pitch: float, waist: float) -> np.ndarray:
    x = (np.arange(n) - (n - 1) / 2) * pitch
    r2 = x[None, :] ** 2 + x[:, None] ** 2
    return np.exp(-r2 / waist ** 2).astype(np.complex64)


def target_pattern(kind: str, n: int) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n]
    r = np.hypot(x - (n - 1) / 2, y - (n - 1) / 2) / n
    if kind == "ring":
        return np.exp(-((r - 0.18) / 0.03) ** 2)
    if kind == "digit":
        from sklearn.datasets import load_digits

        img = load_digits().images[8] / 16.0  # an '8', 8 x 8
        k = max(n // 16, 1)
        big = np.kron(img, np.ones((k, k)))
        out = np.zeros((n, n))
        o = (n - big.shape[0]) // 2
        out[o:o + big.shape[0], o:o + big.shape[1]] = big
        return out
    raise ValueError(f"unknown target {kind!r}: use ring or digit")


def fit(n=128, layers=3, steps=300, lr=0.05, target="ring", threads=None, seed=0, log_every=50):
    """Returns (phases, losses, intensity, target) after ``steps`` Adam steps."""
    if threads:
        optdiff.set_num_threads(threads)
    pitch, wavelength, dz = 9.2e-6, 850e-9, 20e-3
    stack = optdiff.PhaseStack(n, wavelength=wavelength, pitch=pitch, distances=[dz] * layers,
                               padding=2)
    field = gaussian_beam(n, pitch, waist=0.25 * n * pitch)[None]
    t = target_pattern(target, n)
    # Same power as the beam: the target is reachable up to what leaves the window.
    t = (t * (np.abs(field[0]) ** 2).sum() / t.sum()).astype(np.float32)[None]
    rng = np.random.default_rng(seed)
    phases = rng.uniform(-0.1, 0.1, (layers, n, n)).astype(np.float32)
    m, v = np.zeros_like(phases), np.zeros_like(phases)
    losses = []
    t0 = time.perf_counter()
    for k in range(1, steps + 1):
        loss, g = stack.mse_loss_and_grad(field, phases, t)
        losses.append(loss)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        phases -= (lr * (m / (1 - 0.9 ** k)) / (np.sqrt(v / (1 - 0.999 ** k)) + 1e-12)).astype(np.float32)
        if log_every and (k % log_every == 0 or k == 1):
            print(f"step {k:5d}  loss {loss:.4e}  ({time.perf_counter() - t0:.1f} s)", flush=True)
    return phases, np.array(losses), stack.forward(field, phases)[0], t[0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=int, default=128, help="grid size N (pixels of 9.2 um)")
    p.add_argument("--layers", type=int, default=3, help="phase masks (20 mm apart)")
    p.add_argument("--steps", type=int, default=300, help="Adam steps")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (radians)")
    p.add_argument("--target", choices=["ring", "digit"], default="ring")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--out", default="runs/fit", help="folder for fit.png and phases.npy")
    a = p.parse_args(argv)
    phases, losses, inten, t = fit(a.n, a.layers, a.steps, a.lr, a.target, a.threads)
    print(f"loss {losses[0]:.4e} -> {losses[-1]:.4e} ({losses[0] / losses[-1]:.1f}x lower)")
    os.makedirs(a.out, exist_ok=True)
    np.save(os.path.join(a.out, "phases.npy"), phases)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(14, 3.4))
    ax[0].imshow(t, cmap="inferno")
    ax[0].set_title("target intensity")
    ax[1].imshow(inten, cmap="inferno")
    ax[1].set_title(f"camera after {a.steps} steps")
    ax[2].imshow(np.angle(np.exp(1j * phases[0])), cmap="twilight")
    ax[2].set_title("mask 1 phase")
    ax[3].semilogy(losses)
    ax[3].set_xlabel("Adam step")
    ax[3].set_title("loss mean((I - target)^2)")
    for x in ax[:3]:
        x.axis("off")
    fig.tight_layout()
    path = os.path.join(a.out, "fit.png")
    fig.savefig(path, dpi=100)
    print(f"wrote {path} and phases.npy")


if __name__ == "__main__":
    main()
