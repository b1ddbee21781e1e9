"""A diffractive classifier (D2NN) on MNIST in JAX, with optdiff.jax as the optical layer.

The image is an amplitude on the first of L phase masks; after each mask the field travels a
distance d (angular spectrum, zero-padded); ten square detectors on the camera collect the
intensity, and the share of light on each is the class score (softmax cross-entropy). Only the
phases are trained, with optax's Adam when installed, else a small Adam written here.

    python examples/d2nn_jax.py --data-dir /path/to/mnist              # optdiff.jax (XLA FFI)
    python examples/d2nn_jax.py --data-dir /path/to/mnist --impl jnp-fft  # the same model in jnp.fft

`--impl jnp-fft` is the same physics written with jnp.fft (the transfer function is optdiff's,
so both give the same numbers); benchmarks/jax_interop.py times the two training steps.
Only the MNIST test split (t10k) is needed: its first images train, the last --eval-size test.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

import optdiff
import optdiff.jax as oj
from optdiff.data import load_dataset


@dataclass(frozen=True)
class D2NNConfig:
    n: int = 96  # grid side (pixels)
    layers: int = 3
    image_size: int = 48  # the digit is resized to this and centred on the grid
    wavelength: float = 850e-9
    pitch: float = 9.2e-6
    distance: float = 10e-3  # mask to mask and last mask to camera [m]
    temperature: float = 10.0  # logits = temperature * (share of light on each detector)

    def optics(self) -> dict:
        return dict(wavelength=self.wavelength, pitch=self.pitch, padding=2, method="as")


def detector_masks(n: int) -> np.ndarray:
    """Ten square detectors (rows of 3, 4, 3) as 0/1 masks [10, n, n]."""
    side = max(1, n // 10)
    centres = [(0.3, x) for x in (0.3, 0.5, 0.7)] + [(0.5, x) for x in (0.2, 0.4, 0.6, 0.8)] + \
              [(0.7, x) for x in (0.3, 0.5, 0.7)]
    masks = np.zeros((10, n, n), np.float32)
    for c, (cy, cx) in enumerate(centres):
        y0, x0 = int(cy * n) - side // 2, int(cx * n) - side // 2
        masks[c, y0:y0 + side, x0:x0 + side] = 1.0
    return masks


def embed(images: np.ndarray, n: int) -> np.ndarray:
    """Images in [-1, 1], [B, s, s] -> amplitudes in [0, 1] centred on an n x n grid."""
    b, s, _ = images.shape
    out = np.zeros((b, n, n), np.float32)
    o = (n - s) // 2
    out[:, o:o + s, o:o + s] = (images + 1.0) / 2.0
    return out


def optdiff_forward(cfg: D2NNConfig):
    """(phases [L,n,n], amplitude [B,n,n]) -> camera intensity, through optdiff.jax."""
    stack = oj.PhaseStack(cfg.n, distances=[cfg.distance] * cfg.layers, **cfg.optics())
    return lambda phases, amp: stack(amp, phases)


def jnp_forward(cfg: D2NNConfig, dtype=np.complex64):
    """The same model written with jnp.fft: zero-pad to 2n (field top-left), multiply by optdiff's
    transfer function, crop; a mask before each hop."""
    n = cfg.n
    H = jnp.asarray(optdiff.Propagator(n, distance=cfg.distance, **cfg.optics()).transfer_function(dtype=dtype))

    def hop(u):
        U = jnp.pad(u, ((0, 0), (0, n), (0, n)))
        return jnp.fft.ifft2(jnp.fft.fft2(U) * H)[:, :n, :n]

    def forward(phases, amp):
        u = amp.astype(dtype)
        for l in range(cfg.layers):
            u = hop(u * jnp.exp(1j * phases[l]).astype(dtype))
        return jnp.abs(u) ** 2

    return forward


def logits(intensity, masks, temperature):
    energy = jnp.einsum("bij,cij->bc", intensity, masks)
    return temperature * energy / (jnp.sum(energy, axis=1, keepdims=True) + 1e-12)


def make_loss(forward, masks, temperature):
    def loss(phases, amp, labels):
        z = logits(forward(phases, amp), masks, temperature)
        logp = jax.nn.log_softmax(z)
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1)), z

    return loss


def adam(lr: float):
    """optax.adam when installed, else the same update written out: (init, update) pair."""
    try:
        import optax
    except ImportError:
        optax = None
    if optax is not None:
        opt = optax.adam(lr)

        def update(grads, state, params):
            upd, state = opt.update(grads, state, params)
            return optax.apply_updates(params, upd), state

        return opt.init, update, "optax.adam"

    b1, b2, eps = 0.9, 0.999, 1e-8

    def init(params):
        return (jnp.zeros_like(params), jnp.zeros_like(params), jnp.zeros((), jnp.int32))

    def update(grads, state, params):
        m, v, t = state
        t = t + 1
        m = b1 * m + (1 - b1) * grads
        v = b2 * v + (1 - b2) * grads ** 2
        mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        return params - lr * mhat / (jnp.sqrt(vhat) + eps), (m, v, t)

    return init, update, "Adam (hand-written; optax not installed)"


def make_train_step(forward, masks, temperature, opt_update):
    loss = make_loss(forward, jnp.asarray(masks), temperature)

    @jax.jit
    def step(phases, state, amp, labels):
        (value, _), grads = jax.value_and_grad(loss, has_aux=True)(phases, amp, labels)
        phases, state = opt_update(grads, state, phases)
        return phases, state, value

    return step


def make_predict(forward, masks, temperature):
    m = jnp.asarray(masks)
    return jax.jit(lambda phases, amp: jnp.argmax(logits(forward(phases, amp), m, temperature), axis=1))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", required=True, help="folder with the MNIST IDX files (t10k-images-idx3-ubyte[.gz], ...)")
    p.add_argument("--impl", choices=("optdiff", "jnp-fft"), default="optdiff",
                   help="optical layer: optdiff.jax (C++ core through XLA's FFI) or the same model in jnp.fft")
    p.add_argument("--n", type=int, default=96, help="grid side in pixels")
    p.add_argument("--layers", type=int, default=3, help="number of phase masks")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--train-size", type=int, default=8000, help="images used for training (from the start of t10k)")
    p.add_argument("--eval-size", type=int, default=2000, help="held-out images (from the end of t10k)")
    p.add_argument("--threads", type=int, default=None, help="threads of optdiff's core (default: its setting)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    for name in ("n", "layers", "epochs", "batch", "train_size", "eval_size"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.n < 16:
        p.error("--n must be at least 16 (the detectors need room)")
    return a


def main(argv=None):
    args = parse_args(argv)
    if args.threads is not None:
        oj.set_num_threads(args.threads)
    cfg = D2NNConfig(n=args.n, layers=args.layers, image_size=args.n // 2)
    x, y = load_dataset("mnist", args.data_dir, split="test", size=cfg.image_size)
    if args.train_size + args.eval_size > len(x):
        raise SystemExit(f"--train-size + --eval-size must be at most {len(x)} (images in the split)")
    amp = embed(x.astype(np.float32), cfg.n)
    tr_x, tr_y = amp[:args.train_size], y[:args.train_size].astype(np.int32)
    te_x, te_y = amp[-args.eval_size:], y[-args.eval_size:].astype(np.int32)

    forward = optdiff_forward(cfg) if args.impl == "optdiff" else jnp_forward(cfg)
    masks = detector_masks(cfg.n)
    init, update, opt_name = adam(args.lr)
    step = make_train_step(forward, masks, cfg.temperature, update)
    predict = make_predict(forward, masks, cfg.temperature)
    rng = np.random.default_rng(args.seed)
    phases = jnp.asarray(rng.uniform(-0.1, 0.1, size=(cfg.layers, cfg.n, cfg.n)).astype(np.float32))
    state = init(phases)
    print(f"D2NN {cfg.layers} layers, {cfg.n}x{cfg.n}, {args.impl}"
          f"{' (FFI)' if args.impl == 'optdiff' and oj.ffi_available() else ''}, {opt_name}")

    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    steps_per_epoch = args.train_size // args.batch
    times = []
    for epoch in range(args.epochs):
        order = rng.permutation(args.train_size)
        it = range(steps_per_epoch)
        bar = tqdm(it, desc=f"epoch {epoch + 1}", unit="step") if tqdm else it
        for s in bar:
            idx = order[s * args.batch:(s + 1) * args.batch]
            t0 = time.perf_counter()
            phases, state, loss = step(phases, state, tr_x[idx], tr_y[idx])
            loss = float(loss)  # waits for the step
            times.append(time.perf_counter() - t0)
            if tqdm:
                bar.set_postfix(loss=f"{loss:.3f}")
        correct = sum(int(jnp.sum(predict(phases, te_x[i:i + 500]) == te_y[i:i + 500]))
                      for i in range(0, len(te_x), 500))
        print(f"epoch {epoch + 1}: loss {loss:.4f}, held-out accuracy {correct / len(te_x):.3f}")
    steady = times[1:] if len(times) > 1 else times  # the first step compiles
    print(f"training step: median {1e3 * float(np.median(steady)):.1f} ms (batch {args.batch}, "
          f"{len(steady)} steps after the first)")
    return correct / len(te_x)


if __name__ == "__main__":
    main()
