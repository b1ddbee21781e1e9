"""(torch) Backpropagation baselines of the reference comparison: 2conv+FC and LeNet-5.

``bp_2conv_fc``: the FF network's two conv blocks (3x3, ReLU, 2x2 max-pool) and one linear layer
to the classes, trained end to end with cross-entropy. ``lenet5``: LeNet-5 on 32 x 32 inputs
(conv 6@5x5, pool, conv 16@5x5, pool, FC 120, FC 84, FC classes; ReLU and max-pool, the modern
variant of LeCun et al. 1998).
"""

from __future__ import annotations

import numpy as np

__all__ = ["bp_2conv_fc", "lenet5", "train_backprop", "predict", "BASELINES"]


def bp_2conv_fc(channels=(16, 16), image_size: int = 32, num_classes: int = 10):
    from torch import nn

    c1, c2 = channels
    side = image_size // 4
    return nn.Sequential(nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(c2 * side * side, num_classes))


def lenet5(image_size: int = 32, num_classes: int = 10):
    from torch import nn

    side = ((image_size - 4) // 2 - 4) // 2
    return nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(16 * side * side, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                         nn.Linear(84, num_classes))


BASELINES = {"bp-2conv-fc": bp_2conv_fc, "lenet5": lenet5}


def train_epoch(model, opt, images: np.ndarray, labels: np.ndarray, batch: int, rng: np.random.Generator) -> float:
    """One epoch of cross-entropy training; returns the mean loss. Raises on a non-finite loss."""
    import torch
    import torch.nn.functional as F

    model.train()
    perm, total = rng.permutation(len(images)), 0.0
    for s in range(0, len(images), batch):
        i = perm[s:s + batch]
        x = torch.from_numpy(images[i])[:, None]
        loss = F.cross_entropy(model(x), torch.from_numpy(labels[i]).long())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"backprop baseline: non-finite loss at sample offset {s}")
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(i)
    return total / len(images)


def predict(model, images: np.ndarray, chunk: int = 1000) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(images[s:s + chunk])[:, None]).argmax(1).numpy()
                               for s in range(0, len(images), chunk)])


def train_backprop(model, images, labels, epochs: int, lr: float = 1e-3, batch: int = 100, seed: int = 0):
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng([seed, 0xB9])
    return [train_epoch(model, opt, images, labels, batch, rng) for _ in range(epochs)]
