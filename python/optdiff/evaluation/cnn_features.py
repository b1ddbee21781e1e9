"""A small CNN classifier per data set whose penultimate layer is a metric feature space (PyTorch).

``CNNFeatureNet`` replaces the MLP ``FeatureNet`` as the default space for FID/KID/IS on
optdiff's data sets: two 3x3 conv blocks (32 and 64 channels, BatchNorm, ReLU, 2x2 max pool),
a 128-unit ReLU layer (the features) and a linear classifier (the probabilities for IS).
Trained by optdiff on the data set's training images (Adam, a few epochs, seeded); its held-out
accuracy is stored in its checkpoint together with the data set's name, image size and classes,
so a metric computed in the features of a net made for another data set is refused
(``check_for``). The features are scaled by one number fixed at training time, so that the
training images' features have a mean variance of 1 per dimension: FID and KID then come out in
comparable units whatever the net (scaling the features by s scales FID by s^2). Checkpoints are optdiff checkpoints (atomic, CRC-checked, no pickle).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..diffusion.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .digital._torch import require_torch

torch = require_torch("the CNN feature network (optdiff.evaluation.cnn_features)")
nn = torch.nn

__all__ = ["CNNFeatureNet", "FEATURE_FORMAT"]

FEATURE_FORMAT = "optdiff-feature-cnn"


class _Net(nn.Module):
    def __init__(self, image_size: int, classes: int, hidden: int = 128):
        super().__init__()
        side = image_size // 4
        if side < 1:
            raise ValueError(f"image_size must be >= 4 for two 2x2 poolings, got {image_size}")
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * side * side, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, classes)


class CNNFeatureNet:
    """Small CNN classifier (see the module docstring). ``dataset`` names the data it is for."""

    name = "cnn"

    def __init__(self, image_size: int, classes: Sequence[int], dataset: str, hidden: int = 128, seed: int = 0):
        self.image_size, self.dataset, self.hidden, self.seed = int(image_size), str(dataset), int(hidden), int(seed)
        self.classes = np.asarray(sorted(int(c) for c in classes), dtype=np.int64)
        if self.classes.size < 2:
            raise ValueError("a feature classifier needs at least two classes")
        torch.manual_seed(self.seed)
        self.net = _Net(self.image_size, int(self.classes.size), self.hidden).eval()
        self.accuracy_held_out: float | None = None
        self.feature_scale = 1.0

    # ------------------------------------------------------------------ training
    def fit(self, images, labels, epochs: int = 8, batch: int = 128, lr: float = 2e-3,
            held_out=None) -> CNNFeatureNet:
        """Train on ``images [K, H, W]`` in [-1, 1] and integer ``labels``; ``held_out = (images, labels)``
        sets ``accuracy_held_out``."""
        x, y = self._inputs(images), self._label_index(labels)
        rng = np.random.default_rng([self.seed, 1234])
        torch.manual_seed(self.seed)
        opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        lossf = nn.CrossEntropyLoss()
        self.net.train()
        for _ in range(int(epochs)):
            perm = rng.permutation(x.shape[0])
            for i in range(0, x.shape[0], int(batch)):
                idx = torch.from_numpy(perm[i:i + int(batch)])
                if idx.numel() < 2:
                    continue
                loss = lossf(self.net.head(self.net.body(x[idx])), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.net.eval()
        self.feature_scale = 1.0
        f = self.features(images[: 4096])
        self.feature_scale = float(1.0 / np.sqrt(max(float(np.mean(np.var(f, axis=0))), 1e-12)))
        if held_out is not None:
            self.accuracy_held_out = self.accuracy(*held_out)
        return self

    def _inputs(self, images):
        from .metrics import check_samples

        x = check_samples(images, self.image_size, what=f"images for the {self.dataset} CNN")
        return torch.from_numpy(x.astype(np.float32))[:, None]

    def _label_index(self, labels):
        lab = np.asarray(labels).astype(np.int64)
        pos = np.searchsorted(self.classes, lab)
        if np.any(pos >= self.classes.size) or np.any(self.classes[np.minimum(pos, self.classes.size - 1)] != lab):
            raise ValueError(f"labels outside the classifier's classes {self.classes.tolist()}")
        return torch.from_numpy(pos)

    # ------------------------------------------------------------------ evaluation
    def _run(self, images, head: bool, batch: int = 512) -> np.ndarray:
        x = self._inputs(images)
        outs = []
        with torch.no_grad():
            for i in range(0, x.shape[0], batch):
                f = self.net.body(x[i:i + batch])
                outs.append(torch.softmax(self.net.head(f).double(), dim=1) if head else f.double() * self.feature_scale)
        return torch.cat(outs).numpy() if outs else np.zeros((0, self.hidden))

    def features(self, images) -> np.ndarray:
        """Penultimate-layer activations times ``feature_scale``, float64 ``[K, hidden]``."""
        return self._run(images, head=False)

    def predict_proba(self, images) -> np.ndarray:
        """Class probabilities float64 ``[K, C]`` (columns ordered as ``classes``)."""
        return self._run(images, head=True)

    def predict(self, images) -> np.ndarray:
        return self.classes[np.argmax(self.predict_proba(images), axis=1)]

    def accuracy(self, images, labels) -> float:
        return float(np.mean(self.predict(images) == np.asarray(labels)))

    def check_for(self, dataset: str, image_size: int) -> None:
        """ValueError unless this net was made for ``dataset`` at ``image_size``."""
        if dataset != self.dataset or int(image_size) != self.image_size:
            raise ValueError(f"the feature network was trained on {self.dataset!r} at {self.image_size}x"
                             f"{self.image_size}, not on {dataset!r} at {image_size}x{image_size}: "
                             f"train one for this data set")

    # ------------------------------------------------------------------ storage
    def save(self, path):
        """Atomic optdiff checkpoint with the weights, data set, classes and accuracy."""
        cfg = {"format": FEATURE_FORMAT, "version": 1, "dataset": self.dataset, "image_size": self.image_size,
               "classes": self.classes.tolist(), "hidden": self.hidden, "seed": self.seed,
               "feature_scale": self.feature_scale}
        arrays = {k: v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}
        return save_checkpoint(path, cfg, arrays, {"accuracy_held_out": self.accuracy_held_out})

    @classmethod
    def load(cls, path, dataset: str | None = None, image_size: int | None = None) -> CNNFeatureNet:
        """Load a :meth:`save` file; with ``dataset`` / ``image_size`` refuse a net made for other data."""
        cfg, arrays, meta = load_checkpoint(path)
        if cfg.get("format") != FEATURE_FORMAT:
            raise CheckpointError(f"{path}: not an optdiff CNN feature network (format {cfg.get('format')!r})")
        try:
            obj = cls(cfg["image_size"], cfg["classes"], cfg["dataset"], cfg.get("hidden", 128), cfg.get("seed", 0))
            obj.net.load_state_dict({k: torch.from_numpy(np.array(a)) for k, a in arrays.items()}, strict=True)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: damaged CNN feature network ({exc})"[:2000]) from None
        obj.net.eval()
        obj.accuracy_held_out = meta.get("accuracy_held_out")
        obj.feature_scale = float(cfg.get("feature_scale", 1.0))
        if dataset is not None or image_size is not None:
            obj.check_for(dataset if dataset is not None else obj.dataset,
                          image_size if image_size is not None else obj.image_size)
        return obj
