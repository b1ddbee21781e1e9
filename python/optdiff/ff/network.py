"""(torch) Forward-Forward networks: conv and FC layers with local goodness losses, optical blocks.

A network is a list of blocks. Each trainable block sees the previous block's output, layer-
normalised (divided by its root mean square over the sample, so only its direction is passed on,
as in Hinton 2022) and detached: nothing is backpropagated from one block into another. A block's
own loss is :func:`~optdiff.ff.goodness.ff_loss` of its output's goodness on positive (correct
label embedded) and negative (wrong label) images, minimised by its own Adam optimiser.

Block specs (dicts): ``{"kind": "conv", "channels": C, "kernel": 3, "pool": True}``,
``{"kind": "fc", "units": U}``, ``{"kind": "freespace", ...FreeSpaceTransform arguments...,
"trainable": False}``, ``{"kind": "fibre", ...FibreTransform arguments...}``. Fixed optics have no
loss; trainable free-space masks get their goodness gradient from the phase stack's adjoint.

Inference: ``predict_goodness`` embeds every label and picks the one with the largest goodness
summed over the trainable blocks after the first (all of them when there is only one; or
only the last one with ``vote="last"``);
``features`` gives the normalised outputs of the blocks after the first with the neutral label,
for the ridge read-out.
"""

from __future__ import annotations

import numpy as np

from .goodness import SCALES, check_threshold, ff_loss, goodness
from .labels import check_embedding, embed_labels, neutral_embedding, wrong_labels
from .optical import FibreTransform, FreeSpaceTransform

__all__ = ["FFNet", "layer_norm", "check_blocks", "BLOCK_KINDS", "VOTES", "NonFiniteActivations"]

BLOCK_KINDS = ("conv", "fc", "freespace", "fibre")
#: Which trainable blocks' goodness is summed at inference: Hinton's choice, or only the last one
#: (a conv layer sees a small patch, so its goodness mostly measures the label pattern, not the match).
VOTES = ("all-but-first", "last")
_BLOCK_KEYS = {"conv": {"channels", "kernel", "pool"}, "fc": {"units"},
               "freespace": {"layers", "upsample", "n", "camera", "distance", "wavelength", "pitch", "padding",
                             "phase_scale", "seed", "trainable"},
               "fibre": {"modes", "pixels", "phase_scale", "kerr", "segments", "seed"}}


class NonFiniteActivations(FloatingPointError):
    """A block produced NaN or Inf activations (training stops; the last checkpoint is kept)."""


def check_blocks(blocks) -> list[dict]:
    """Validate block specs: a non-empty list, known kinds and keys, positive sizes, one trainable block."""
    if not isinstance(blocks, (list, tuple)) or not blocks:
        raise ValueError("layers: a network needs at least one block (got an empty list)")
    out = []
    for i, b in enumerate(blocks):
        if not isinstance(b, dict) or b.get("kind") not in BLOCK_KINDS:
            raise ValueError(f"layers[{i}]: a block is a table with kind in {BLOCK_KINDS}, got {b!r}")
        extra = set(b) - {"kind"} - _BLOCK_KEYS[b["kind"]]
        if extra:
            raise ValueError(f"layers[{i}] ({b['kind']}): unknown keys {sorted(extra)}; known: "
                             f"{sorted(_BLOCK_KEYS[b['kind']])}")
        for key in ("channels", "units", "kernel"):
            if key in b and (isinstance(b[key], bool) or not isinstance(b[key], int) or b[key] < 1):
                raise ValueError(f"layers[{i}] ({b['kind']}): {key} must be an integer >= 1 (an empty layer "
                                 f"cannot be trained), got {b[key]!r}")
        if b["kind"] == "conv" and "channels" not in b or b["kind"] == "fc" and "units" not in b:
            raise ValueError(f"layers[{i}] ({b['kind']}): {'channels' if b['kind'] == 'conv' else 'units'} is required")
        out.append(dict(b))
    if not any(b["kind"] in ("conv", "fc") or b.get("trainable") for b in out):
        raise ValueError("layers: no trainable block (a conv, fc or trainable freespace block is needed)")
    return out


def layer_norm(y):
    """y divided by its root mean square over each sample (torch)."""
    flat = y.reshape(y.shape[0], -1)
    return y / (flat.pow(2).mean(1).sqrt().reshape(-1, *([1] * (y.ndim - 1))) + 1e-8)


def _stack_function():
    import torch

    class StackFn(torch.autograd.Function):
        """Free-space masks as a torch op whose backward is the phase stack's adjoint."""

        @staticmethod
        def forward(ctx, a, phases, transform):
            feats, tape = transform.forward_train(a.detach().numpy(), np.ascontiguousarray(phases.detach().numpy()))
            ctx.tape, ctx.transform = tape, transform
            return torch.from_numpy(feats)

        @staticmethod
        def backward(ctx, g):
            g_ph = ctx.transform.backward(ctx.tape, np.ascontiguousarray(g.detach().numpy()))
            return None, torch.from_numpy(np.asarray(g_ph, np.float32)), None

    return StackFn


class _Optics:
    """An optical transform as a block: flattened input -> camera features ``[B, F]``."""

    def __init__(self, spec: dict, in_features: int, nthreads):
        import torch

        kw = {k: v for k, v in spec.items() if k not in ("kind", "trainable")}
        self.trainable = bool(spec.get("trainable", False))
        if spec["kind"] == "freespace":
            self.transform = FreeSpaceTransform(in_features, nthreads=nthreads, **kw)
            self.phases = torch.nn.Parameter(torch.from_numpy(self.transform.phases.copy()),
                                             requires_grad=self.trainable)
        else:
            if self.trainable:
                raise ValueError("fibre: the transmission matrix is fixed (trainable is for freespace blocks)")
            self.transform = FibreTransform(in_features, **kw)
            self.phases = None
        self.out_features = self.transform.out_features
        self._fn = _stack_function() if self.trainable else None

    def parameters(self):
        return [self.phases] if self.trainable else []

    def __call__(self, x):
        import torch

        a = x.reshape(x.shape[0], -1)
        if self.trainable and torch.is_grad_enabled():
            return self._fn.apply(a, self.phases, self.transform)
        ph = None if self.phases is None else np.ascontiguousarray(self.phases.detach().numpy())
        feats = self.transform(a.detach().numpy()) if ph is None else self.transform(a.detach().numpy(), ph)
        return torch.from_numpy(np.asarray(feats, np.float32))


class FFNet:
    """A Forward-Forward network on images ``[B, H, W]``.

    ``theta``: goodness threshold (> 0); ``scale``: "sum" or "mean" goodness; ``embedding``:
    "onehot" or "pattern" (:mod:`.labels`); ``lr``: Adam step of every block; ``seed``: the
    initial weights (torch) and the optics' seeds are in the block specs.
    """

    def __init__(self, blocks, image_shape, num_classes: int = 10, theta: float = 1.0, scale: str = "mean",
                 embedding: str = "onehot", strength: float = 0.5, lr: float = 1e-3, seed: int = 0,
                 nthreads: int | None = None, vote: str = "all-but-first"):
        import torch

        self.theta = check_threshold(theta, "threshold")
        if scale not in SCALES:
            raise ValueError(f"goodness scale must be one of {SCALES}, got {scale!r}")
        if vote not in VOTES:
            raise ValueError(f"vote must be one of {VOTES}, got {vote!r}")
        self.scale, self.embedding, self.strength, self.vote = scale, embedding, float(strength), vote
        self.num_classes = check_embedding(embedding, num_classes, tuple(image_shape))
        self.specs = check_blocks(blocks)
        self.image_shape = tuple(int(s) for s in image_shape)
        torch.manual_seed(seed)
        self.blocks, shape = [], (1, *self.image_shape)
        for spec in self.specs:
            block, shape = self._build(spec, shape, nthreads)
            self.blocks.append(block)
        self.opts = [torch.optim.Adam(list(b.parameters()), lr=lr) if self._trainable(b) else None
                     for b in self.blocks]

    @staticmethod
    def _trainable(block) -> bool:
        return bool(list(block.parameters())) and any(p.requires_grad for p in block.parameters())

    def _build(self, spec, shape, nthreads):
        import torch
        from torch import nn

        kind = spec["kind"]
        if kind == "conv":
            if len(shape) != 3:
                raise ValueError("layers: a conv block cannot follow an fc or optical block (its output is flat)")
            c, k = spec["channels"], spec.get("kernel", 3)
            mods = [nn.Conv2d(shape[0], c, k, padding=k // 2), nn.ReLU()]
            h, w = shape[1], shape[2]
            if spec.get("pool", True):
                mods.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            if h < 1 or w < 1:
                raise ValueError(f"layers: the image is pooled to nothing at a conv block ({shape})")
            return nn.Sequential(*mods), (c, h, w)
        if kind == "fc":
            n_in = int(np.prod(shape))
            return nn.Sequential(nn.Flatten(), nn.Linear(n_in, spec["units"]), nn.ReLU()), (spec["units"],)
        block = _Optics(spec, int(np.prod(shape)), nthreads)
        del torch
        return block, (block.out_features,)

    # ------------------------------------------------------------------ passes
    def _run(self, x, train: bool):
        """Outputs of every block for images ``x [B, 1, H, W]`` (torch); trains each block when ``train``."""
        import torch

        outs, h, losses = [], x, []
        half = x.shape[0] // 2
        for i, (block, opt) in enumerate(zip(self.blocks, self.opts)):
            with torch.set_grad_enabled(train and opt is not None):
                y = block(h.detach())
                if not torch.isfinite(y).all():
                    raise NonFiniteActivations(f"layer {i} ({self.specs[i]['kind']}) produced NaN or infinite "
                                               f"activations")
                if train and opt is not None:
                    g = goodness(y, self.scale)
                    loss = ff_loss(g[:half], g[half:], self.theta)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    losses.append(float(loss.detach()))
            outs.append(y.detach())
            h = layer_norm(y.detach())
        return outs, losses

    def _tensor(self, imgs):
        import torch

        return torch.from_numpy(np.ascontiguousarray(imgs, np.float32))[:, None]

    def train_step(self, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> list[float]:
        """One step on a batch: positives (true labels) and negatives (random wrong labels) together."""
        e = dict(kind=self.embedding, strength=self.strength)
        pos = embed_labels(images, labels, self.num_classes, **e)
        neg = embed_labels(images, wrong_labels(labels, self.num_classes, rng), self.num_classes, **e)
        return self._run(self._tensor(np.concatenate([pos, neg])), train=True)[1]

    def _scored(self):
        """Indices of the blocks whose goodness votes at inference."""
        t = [i for i, o in enumerate(self.opts) if o is not None]
        if self.vote == "last":
            return t[-1:]
        return t[1:] if len(t) > 1 else t

    def predict_goodness(self, images: np.ndarray, chunk: int = 500) -> np.ndarray:
        """Label with the largest summed goodness, trying every label (C forward passes)."""
        import torch

        scored, preds = self._scored(), []
        with torch.no_grad():
            for s in range(0, len(images), chunk):
                x = images[s:s + chunk]
                G = np.zeros((len(x), self.num_classes))
                for c in range(self.num_classes):
                    emb = embed_labels(x, np.full(len(x), c), self.num_classes, kind=self.embedding,
                                       strength=self.strength)
                    outs, _ = self._run(self._tensor(emb), train=False)
                    G[:, c] = sum(goodness(outs[i], self.scale).numpy() for i in scored)
                preds.append(G.argmax(1))
        return np.concatenate(preds)

    def features(self, images: np.ndarray, chunk: int = 500) -> np.ndarray:
        """Layer-normalised outputs of the blocks after the first, neutral label, ``[B, F]`` (read-out)."""
        import torch

        feats = []
        with torch.no_grad():
            for s in range(0, len(images), chunk):
                emb = neutral_embedding(images[s:s + chunk], self.num_classes, kind=self.embedding,
                                        strength=self.strength)
                outs, _ = self._run(self._tensor(emb), train=False)
                use = outs[1:] if len(outs) > 1 else outs
                feats.append(torch.cat([layer_norm(o).reshape(o.shape[0], -1) for o in use], 1).numpy())
        return np.concatenate(feats)

    # ------------------------------------------------------------------ state
    def state_arrays(self) -> dict:
        """Every parameter and Adam moment as NumPy arrays (for checkpoints)."""
        out = {}
        for i, (block, opt) in enumerate(zip(self.blocks, self.opts)):
            for j, p in enumerate(block.parameters()):
                out[f"b{i}.p{j}"] = p.detach().numpy().copy()
                st = opt.state.get(p, {}) if opt is not None else {}
                for key in ("exp_avg", "exp_avg_sq", "step"):
                    if key in st:
                        out[f"b{i}.p{j}.{key}"] = np.asarray(st[key].detach().numpy()).copy()
        return out

    def load_arrays(self, arrays: dict) -> None:
        import torch

        for i, (block, opt) in enumerate(zip(self.blocks, self.opts)):
            for j, p in enumerate(block.parameters()):
                key = f"b{i}.p{j}"
                if key not in arrays or arrays[key].shape != tuple(p.shape):
                    raise ValueError(f"checkpoint does not match the network: {key} missing or of another shape")
                with torch.no_grad():
                    p.copy_(torch.from_numpy(arrays[key]))
                if opt is not None and f"{key}.exp_avg" in arrays:
                    opt.state[p] = {k: torch.from_numpy(arrays[f"{key}.{k}"].copy())
                                    for k in ("exp_avg", "exp_avg_sq", "step")}

    def parameter_count(self) -> int:
        return int(sum(p.numel() for b in self.blocks for p in b.parameters() if p.requires_grad))
