"""Forward-Forward for the ODU's own phase layers, against adjoint training (NumPy, no torch).

A chain of ``sets`` ODU layer sets (each: image as amplitude on the modulator, L phase masks, the
camera binned to the image size) classifies images. With Forward-Forward each set has its own
loss: the goodness of its binned camera image, g = mean((I / I0)^2) over the pixels (I0: the mean
intensity of the first training batch through the initial optics, fixed after), logistic in
g - theta with theta = the median goodness of that batch, on positive (true label embedded as
Hinton's one-hot pixels) and negative (wrong label) images. The gradient of that local loss
reaches the set's masks through the set's own exact adjoint (:meth:`ODU.backward`); nothing
crosses from one set to another. Set k+1 sees set k's binned image divided by its maximum.
Inference: the label whose embedding gives the largest summed goodness, or a ridge read-out on the
camera images with every label pixel at 1/C.

The comparison is the same optics trained end to end with the adjoint: one set with a linear
soft-max read-out of its binned camera image (cross-entropy, Adam on the masks and the read-out),
and, as the floor, the initial optics with the ridge read-out.
"""

from __future__ import annotations

import numpy as np

from ..config import OpticsConfig
from ..odu.unit import ODU, init_phases
from .goodness import ff_loss, ff_loss_grad
from .labels import embed_labels, neutral_embedding, wrong_labels
from .readout import RidgeReadout

__all__ = ["ODUForwardForward", "ODUAdjointClassifier", "small_optics"]


def small_optics(n: int = 32, layers: int = 2) -> OpticsConfig:
    """A small ODU geometry (image pixels as amplitudes 0..1, imaging start)."""
    return OpticsConfig(n=n, layers=layers, amp_bias=0.0, amp_scale=1.0, distance=5e-3, init="imaging",
                        init_noise=0.3)


class _Adam:
    def __init__(self, shape, lr):
        self.m, self.v, self.t, self.lr = np.zeros(shape), np.zeros(shape), 0, lr

    def step(self, p, g):
        self.t += 1
        self.m = 0.9 * self.m + 0.1 * g
        self.v = 0.999 * self.v + 0.001 * g * g
        mh, vh = self.m / (1 - 0.9 ** self.t), self.v / (1 - 0.999 ** self.t)
        p -= (self.lr * mh / (np.sqrt(vh) + 1e-8)).astype(p.dtype)


def _finite(x, what):
    if not np.isfinite(x).all():
        raise FloatingPointError(f"{what}: NaN or infinite camera values")
    return x


class ODUForwardForward:
    """``sets`` chained ODU layer sets, each trained on its own goodness."""

    def __init__(self, optics: OpticsConfig, image_size: int, num_classes: int = 10, sets: int = 2,
                 lr: float = 0.05, seed: int = 0):
        if sets < 1:
            raise ValueError(f"sets must be >= 1, got {sets}")
        self.odu = ODU(optics, image_size)
        self.C = num_classes
        rng = np.random.default_rng([seed, 0x0D0])
        self.phases = [init_phases(optics, rng=rng, image_size=image_size) for _ in range(sets)]
        self.opts = [_Adam(p.shape, lr) for p in self.phases]
        self.scale = self.theta = None

    def _next_input(self, I):
        return I / (I.reshape(len(I), -1).max(1)[:, None, None] + 1e-12)

    def _goodness(self, I):
        return ((I / self.scale) ** 2).mean(axis=(1, 2))

    def train_step(self, images, labels, rng):
        B = len(images)
        pos = embed_labels(images, labels, self.C)
        neg = embed_labels(images, wrong_labels(labels, self.C, rng), self.C)
        x, losses = np.concatenate([pos, neg]).astype(np.float64), []
        for k, ph in enumerate(self.phases):
            I, tape = self.odu.intensity_train(x, ph)
            _finite(I, f"layer set {k}")
            if self.scale is None:  # fixed once, from the first batch through the initial optics
                self.scale = float(I.mean())
                self.theta = float(np.median(self._goodness(I)))
            g = self._goodness(I)
            losses.append(float(ff_loss(g[:B], g[B:], self.theta)))
            dp, dn = ff_loss_grad(g[:B], g[B:], self.theta)
            dg = np.concatenate([dp, dn])
            g_I = dg[:, None, None] * 2 * I / (self.scale ** 2 * I[0].size)
            self.opts[k].step(ph, self.odu.backward(tape, g_I))
            x = self._next_input(I)
        return losses

    def _cameras(self, x):
        outs = []
        for ph in self.phases:
            I = _finite(self.odu.intensity(x, ph), "inference")
            outs.append(I)
            x = self._next_input(I)
        return outs

    def predict_goodness(self, images):
        G = np.zeros((len(images), self.C))
        for c in range(self.C):
            outs = self._cameras(embed_labels(images, np.full(len(images), c), self.C).astype(np.float64))
            G[:, c] = sum(self._goodness(I) for I in outs)
        return G.argmax(1)

    def features(self, images):
        outs = self._cameras(neutral_embedding(images, self.C).astype(np.float64))
        f = np.concatenate([I.reshape(len(I), -1) for I in outs], 1)
        return f / (np.sqrt((f ** 2).mean(1, keepdims=True)) + 1e-12)


class ODUAdjointClassifier:
    """One ODU layer set and a linear soft-max read-out, trained end to end with the adjoint."""

    def __init__(self, optics: OpticsConfig, image_size: int, num_classes: int = 10, lr: float = 0.05,
                 lr_readout: float = 0.01, seed: int = 0, train_optics: bool = True):
        self.odu = ODU(optics, image_size)
        self.C = num_classes
        rng = np.random.default_rng([seed, 0x0D0])
        self.phases = init_phases(optics, rng=rng, image_size=image_size)
        D = image_size * image_size
        self.W = rng.standard_normal((D, num_classes)) * 0.01
        self.b = np.zeros(num_classes)
        self.train_optics = train_optics
        self.opt_ph, self.opt_W, self.opt_b = _Adam(self.phases.shape, lr), _Adam(self.W.shape, lr_readout), \
            _Adam(self.b.shape, lr_readout)
        self.scale = None

    def _logits(self, I):
        f = I.reshape(len(I), -1) / self.scale
        return f, f @ self.W + self.b

    def train_step(self, images, labels, rng):
        I, tape = self.odu.intensity_train(np.asarray(images, np.float64), self.phases)
        _finite(I, "layer set 0")
        if self.scale is None:
            self.scale = float(I.mean())
        f, z = self._logits(I)
        z = z - z.max(1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        B = len(images)
        loss = float(-np.log(p[np.arange(B), labels] + 1e-12).mean())
        dz = p.copy()
        dz[np.arange(B), labels] -= 1
        dz /= B
        g_f = dz @ self.W.T
        self.opt_W.step(self.W, f.T @ dz)
        self.opt_b.step(self.b, dz.sum(0))
        if self.train_optics:
            self.opt_ph.step(self.phases, self.odu.backward(tape, g_f.reshape(I.shape) / self.scale))
        return [loss]

    def predict(self, images):
        return self._logits(self.odu.intensity(np.asarray(images, np.float64), self.phases))[1].argmax(1)


def ridge_accuracy(model, train, evals, lam: float = 1e-2):
    """Ridge read-out fitted on ``train`` features, accuracy on each of ``evals``."""
    ro = RidgeReadout(lam).fit(model.features(train[0]), train[1], model.C)
    return [float((ro.predict(model.features(x)) == y).mean()) for x, y in evals]
