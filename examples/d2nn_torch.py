"""A diffractive classifier (D2NN) on MNIST, trained with PyTorch through optdiff.torch.OpticalStack.

The digit is the amplitude of a coherent input field; it propagates through L phase masks
(free-space hops between them, angular spectrum, zero-padded to a linear convolution) to a
camera. Ten square detector regions on the camera plane, one per class, collect the light;
their powers, divided by the total and scaled by a temperature, are the logits of a
cross-entropy loss. Any torch optimiser trains the masks (Adam here).

``--impl optdiff`` runs the optics through optdiff's C++ core (``OpticalStack``); ``--impl
torch-fft`` is the same model written in pure ``torch.fft`` (same physics and transfer function),
the comparison the benchmark ``benchmarks/torch_interop.py`` times.

    python examples/d2nn_torch.py --data-dir /path/to/mnist --n 128 --layers 4 --steps 300
    python examples/d2nn_torch.py --data-dir /path/to/mnist --impl torch-fft --steps 50

MNIST is read from IDX files (``train-images-idx3-ubyte.gz`` ...) in ``--data-dir``. When only
the ``t10k`` files are there, the test split is divided: the first 80% train, the rest is held out.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch
from torch import nn

IMPLS = ("optdiff", "torch-fft")
WAVELENGTH, PITCH, DISTANCE = 850e-9, 9.2e-6, 20e-3


# --------------------------------------------------------------------------- the optics, in pure torch

def transfer_function(grid: int, wavelength: float, pitch: float, distance: float) -> np.ndarray:
    """Angular spectrum H = exp(-i dz kr^2 / (k + sqrt(k^2 - kr^2))), 0 where evanescent; FFT order,
    evaluated in float64 (optdiff's "as" method)."""
    k = 2 * math.pi / wavelength
    kf = 2 * math.pi * np.fft.fftfreq(grid, d=pitch)
    kr2 = kf[:, None] ** 2 + kf[None, :] ** 2
    arg = k * k - kr2
    inside = arg > 0
    phase = -distance * kr2 / (k + np.sqrt(np.where(inside, arg, 0.0)))
    return np.where(inside, np.exp(1j * phase), 0.0)


class TorchFFTStack(nn.Module):
    """The same stack as ``OpticalStack(padding=2, input_distance=d)`` with torch.fft and autograd."""

    def __init__(self, n: int, *, wavelength: float, pitch: float, distances, input_distance: float,
                 dtype=torch.float32):
        super().__init__()
        self.n = n
        cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
        hs = [transfer_function(2 * n, wavelength, pitch, d) for d in [input_distance, *distances]]
        self.register_buffer("H", torch.from_numpy(np.stack(hs)).to(cdtype))
        self.phases = nn.Parameter(torch.zeros(len(distances), n, n, dtype=dtype))

    def hop(self, u: torch.Tensor, i: int) -> torch.Tensor:
        n = self.n
        spectrum = torch.fft.fft2(u, s=(2 * n, 2 * n))  # zero-pad right/bottom: a linear convolution
        return torch.fft.ifft2(spectrum * self.H[i])[..., :n, :n]

    def forward(self, field: torch.Tensor) -> torch.Tensor:
        masks = torch.polar(torch.ones_like(self.phases), self.phases)
        u = self.hop(field.to(self.H.dtype), 0)
        for l in range(self.phases.shape[0]):
            u = self.hop(u * masks[l], l + 1)
        return u.real.square() + u.imag.square()


# --------------------------------------------------------------------------- the classifier

def detector_masks(n: int, classes: int = 10) -> torch.Tensor:
    """Ten square regions (side n/10) in rows of 3, 4 and 3 around the centre: [10, n, n] of 0/1."""
    w = max(1, n // 10)
    centres = [(0.3, x) for x in (0.3, 0.5, 0.7)] + [(0.5, x) for x in (0.2, 0.4, 0.6, 0.8)] + \
              [(0.7, x) for x in (0.3, 0.5, 0.7)]
    masks = torch.zeros(classes, n, n)
    for c, (fy, fx) in enumerate(centres[:classes]):
        y, x = int(round(fy * n)) - w // 2, int(round(fx * n)) - w // 2
        masks[c, y:y + w, x:x + w] = 1.0
    return masks


class D2NN(nn.Module):
    """images [B, h, w] in [0, 1] -> logits [B, 10]."""

    def __init__(self, impl: str = "optdiff", n: int = 128, layers: int = 4, distance: float = DISTANCE,
                 wavelength: float = WAVELENGTH, pitch: float = PITCH, temperature: float = 10.0,
                 dtype=torch.float32, seed: int = 0):
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        if layers < 1 or n < 20:
            raise ValueError(f"need layers >= 1 and n >= 20, got layers={layers}, n={n}")
        geometry = dict(wavelength=wavelength, pitch=pitch, distances=[distance] * layers, input_distance=distance)
        if impl == "optdiff":
            import optdiff.torch as odt

            self.optics = odt.OpticalStack(n, **geometry, dtype=dtype)
        else:
            self.optics = TorchFFTStack(n, **geometry, dtype=dtype)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # the same start for both implementations
            self.optics.phases.copy_(torch.rand(self.optics.phases.shape, generator=g, dtype=dtype) * 0.2)
        self.n, self.temperature = n, temperature
        self.register_buffer("detectors", detector_masks(n).to(dtype).reshape(10, n * n))
        self.dtype = dtype

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Digits scaled to the central n/2 x n/2 of the input plane, zero around: amplitudes [B, n, n]."""
        n, s = self.n, self.n // 2
        x = nn.functional.interpolate(images[:, None].to(self.dtype), size=(s, s), mode="bilinear",
                                      align_corners=False)[:, 0]
        o = (n - s) // 2
        return nn.functional.pad(x, (o, n - s - o, o, n - s - o)).contiguous()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        intensity = self.optics(self.encode(images))
        power = intensity.reshape(intensity.shape[0], -1) @ self.detectors.T       # [B, 10]
        return self.temperature * power / power.sum(dim=1, keepdim=True).clamp_min(1e-30)


def train_step(model: D2NN, opt: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor) -> float:
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    opt.step()
    return float(loss.detach())


@torch.no_grad()
def accuracy(model: D2NN, images: torch.Tensor, labels: torch.Tensor, batch: int = 256) -> float:
    hits = sum(int((model(images[i:i + batch]).argmax(1) == labels[i:i + batch]).sum())
               for i in range(0, len(images), batch))
    return hits / max(1, len(images))


# --------------------------------------------------------------------------- data and the command

def load_mnist(data_dir: str, limit: int | None, seed: int):
    """(train images, train labels, held-out images, held-out labels): float32 [K, 28, 28] in [0, 1]."""
    from optdiff.data import load_dataset

    def get(split):
        x, y = load_dataset("mnist", data_dir=data_dir, split=split, size=None, seed=seed)
        return torch.from_numpy(((x + 1) / 2).astype(np.float32)), torch.from_numpy(y)

    try:
        xtr, ytr = get("train")
        xte, yte = get("test")
    except FileNotFoundError:
        x, y = get("test")  # only t10k on disk: hold out its last 20%
        cut = int(0.8 * len(x))
        xtr, ytr, xte, yte = x[:cut], y[:cut], x[cut:], y[cut:]
        print(f"only the MNIST test split found: training on its first {cut} images, holding out {len(x) - cut}")
    if limit:
        xtr, ytr = xtr[:limit], ytr[:limit]
    return xtr, ytr, xte, yte


def save_figure(model: D2NN, images: torch.Tensor, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = model.optics.phases.detach().numpy()
    with torch.no_grad():
        intensity = model.optics(model.encode(images[:1]))[0].numpy()
    L = phases.shape[0]
    fig, ax = plt.subplots(1, L + 2, figsize=(2.6 * (L + 2), 2.8))
    ax[0].imshow(model.encode(images[:1])[0].numpy(), cmap="gray")
    ax[0].set_title("input")
    for l in range(L):
        ax[l + 1].imshow(np.mod(phases[l], 2 * np.pi), cmap="twilight")
        ax[l + 1].set_title(f"mask {l + 1}")
    ax[-1].imshow(intensity, cmap="inferno")
    ax[-1].contour(model.detectors.reshape(10, model.n, model.n).sum(0).numpy(), levels=[0.5], colors="c",
                   linewidths=0.5)
    ax[-1].set_title("camera + detectors")
    for a in ax:
        a.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="folder with the MNIST IDX files (.gz or raw)")
    p.add_argument("--impl", choices=IMPLS, default="optdiff",
                   help="optics through optdiff's core (default) or the same model in pure torch.fft")
    p.add_argument("--n", type=int, default=128, help="pixels per side of every plane (default 128)")
    p.add_argument("--layers", type=int, default=4, help="phase masks (default 4)")
    p.add_argument("--distance", type=float, default=DISTANCE, help="every hop, metres (default 0.02)")
    p.add_argument("--steps", type=int, default=200, help="training steps (default 200)")
    p.add_argument("--batch", type=int, default=64, help="images per step (default 64)")
    p.add_argument("--lr", type=float, default=0.05, help="Adam's learning rate (default 0.05)")
    p.add_argument("--limit", type=int, default=None, help="use at most this many training images")
    p.add_argument("--eval", type=int, default=1000, help="held-out images for the accuracy (0: skip)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for optdiff and torch alike (default: optdiff's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for phases.npy, summary.json and d2nn.png")
    args = p.parse_args(argv)
    for name in ("n", "layers", "steps", "batch"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be positive, got {getattr(args, name)}")
    return args


def main(argv=None) -> dict:
    from tqdm import tqdm

    import optdiff

    args = parse_args(argv)
    if args.threads:
        optdiff.set_num_threads(args.threads)
    torch.set_num_threads(optdiff.get_num_threads())  # the same compute for both implementations
    torch.manual_seed(args.seed)
    xtr, ytr, xte, yte = load_mnist(args.data_dir, args.limit, args.seed)
    model = D2NN(args.impl, n=args.n, layers=args.layers, distance=args.distance, seed=args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(args.seed)
    losses, t0 = [], time.perf_counter()
    bar = tqdm(range(args.steps), desc=f"D2NN {args.impl} n={args.n}", unit="step")
    for _ in bar:
        idx = torch.randint(len(xtr), (args.batch,), generator=g)
        losses.append(train_step(model, opt, xtr[idx], ytr[idx]))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    step_s = (time.perf_counter() - t0) / args.steps
    acc = accuracy(model, xte[:args.eval], yte[:args.eval]) if args.eval else float("nan")
    summary = dict(impl=args.impl, n=args.n, layers=args.layers, steps=args.steps, batch=args.batch,
                   threads=optdiff.get_num_threads(), seconds_per_step=step_s, first_loss=losses[0],
                   last_loss=float(np.mean(losses[-10:])), heldout_accuracy=acc, heldout_images=min(args.eval,
                                                                                                   len(xte)))
    print(json.dumps(summary, indent=1))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        np.save(os.path.join(args.out, "phases.npy"), model.optics.phases.detach().numpy())
        with open(os.path.join(args.out, "summary.json"), "w") as fh:
            json.dump(summary, fh, indent=1)
        save_figure(model, xte, os.path.join(args.out, "d2nn.png"))
    return summary


if __name__ == "__main__":
    main()
