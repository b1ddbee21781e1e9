"""Rewards for finetuning, all computable offline, and the checks every reward value goes through.

* ``class:K``: the probability of class ``K`` under the project's classifier (the CNN of
  :mod:`optdiff.evaluation.cnn_features`, or the MLP ``FeatureNet`` without PyTorch).
* ``logclass:K``: its logarithm (floored at ``log 1e-12``): the same optimum, but a graded signal
  where almost every sample has a small probability of class ``K``.
* ``legibility`` (alias ``confidence``): the classifier's largest class probability.
* ``module:function``: a user callable ``f(images [B, H, W] in [-1, 1]) -> rewards [B]``
  (``module`` importable, e.g. a file on ``PYTHONPATH``).

:func:`evaluate_reward` calls a reward and raises :class:`RewardError` (with the reason) when it
raises, returns NaN/Inf or the wrong shape: the finetuner skips that round.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np

from ..diffusion.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = ["RewardError", "make_reward", "evaluate_reward", "load_classifier", "train_classifier",
           "save_classifier", "MLP_FORMAT"]

MLP_FORMAT = "optdiff-feature-mlp"


class RewardError(RuntimeError):
    """A reward call failed (raised, non-finite values or a wrong shape)."""


class _ClassProb:
    prefix = "class"

    def __init__(self, clf, k: int):
        classes = [int(c) for c in np.asarray(clf.classes)]
        self.name = f"{self.prefix}:{k}"
        if k not in classes:
            raise ValueError(f"--reward {self.name}: the classifier knows the classes {classes}, not {k}")
        self.clf, self.col = clf, classes.index(k)

    def __call__(self, images):
        return self.clf.predict_proba(images)[:, self.col]


class _LogClassProb(_ClassProb):
    prefix = "logclass"

    def __call__(self, images):
        return np.log(np.maximum(super().__call__(images), 1e-12))


class _Confidence:
    name = "legibility"

    def __init__(self, clf):
        self.clf = clf

    def __call__(self, images):
        return self.clf.predict_proba(images).max(axis=1)


def _callable(spec: str) -> Callable:
    mod_name, _, fn_name = spec.rpartition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(f"--reward {spec!r}: cannot import module {mod_name!r} ({exc})") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ValueError(f"--reward {spec!r}: module {mod_name!r} has no callable {fn_name!r}")
    return fn


def needs_classifier(spec: str) -> bool:
    s = str(spec).strip()
    return s.startswith(("class:", "logclass:")) or s in ("legibility", "confidence")


def make_reward(spec: str, classifier=None) -> Callable:
    """The reward function for ``spec`` (see the module docstring); ``classifier`` for the
    classifier rewards (an object with ``classes`` and ``predict_proba``)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"--reward must be 'class:K', 'logclass:K', 'legibility' or 'module:function', got {spec!r}")
    s = spec.strip()
    if needs_classifier(s):
        if classifier is None:
            raise ValueError(f"--reward {s!r} needs a classifier")
        if s in ("legibility", "confidence"):
            return _Confidence(classifier)
        try:
            k = int(s.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"--reward {s!r}: the class must be an integer label, e.g. class:3") from None
        return _LogClassProb(classifier, k) if s.startswith("log") else _ClassProb(classifier, k)
    if ":" in s:
        return _callable(s)
    raise ValueError(f"--reward must be 'class:K', 'logclass:K', 'legibility' or 'module:function', got {spec!r}")


def evaluate_reward(fn: Callable, images: np.ndarray) -> np.ndarray:
    """``fn(images)`` as float64 ``[B]``, or :class:`RewardError` saying what went wrong."""
    B = images.shape[0]
    try:
        r = fn(images)
    except Exception as exc:  # a user's reward may raise anything: the round is skipped
        raise RewardError(f"the reward raised {type(exc).__name__}: {exc}") from exc
    try:
        r = np.asarray(r, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise RewardError(f"the reward returned something that is not an array of numbers ({exc})") from None
    if r.shape != (B,):
        raise RewardError(f"the reward returned shape {r.shape}, expected ({B},) (one number per image)")
    if not np.all(np.isfinite(r)):
        raise RewardError(f"the reward returned {int(np.count_nonzero(~np.isfinite(r)))} NaN/Inf value(s)")
    return r


# ---------------------------------------------------------------------------- classifiers
def train_classifier(images, labels, dataset: str, kind: str = "cnn", seed: int = 0, epochs: int = 6,
                     held_out=None):
    """A classifier of ``images`` (``[K, H, W]`` in [-1, 1]): the CNN (needs PyTorch) or the MLP."""
    if kind == "cnn":
        from ..evaluation.cnn_features import CNNFeatureNet

        net = CNNFeatureNet(images.shape[1], np.unique(labels), dataset, seed=seed)
        return net.fit(images, labels, epochs=epochs, held_out=held_out)
    if kind == "mlp":
        from ..evaluation.metrics import FeatureNet

        net = FeatureNet(seed=seed).fit(images, labels)
        net.dataset, net.image_size = dataset, int(images.shape[1])
        return net
    raise ValueError(f"--classifier-kind must be 'cnn' or 'mlp', got {kind!r}")


def save_classifier(net, path) -> None:
    """Atomic checkpoint of either classifier kind."""
    if hasattr(net, "save"):
        net.save(path)
    else:
        save_checkpoint(path, {"format": MLP_FORMAT, "dataset": net.dataset, "image_size": net.image_size},
                        net.to_arrays())


def load_classifier(path, image_size: int | None = None):
    """Load a classifier saved by :func:`save_classifier` (or ``optdiff report``); with
    ``image_size`` refuse one made for other images."""
    from ..evaluation.metrics import FeatureNet

    cfg, arrays, _ = load_checkpoint(path)
    fmt = cfg.get("format")
    if fmt == MLP_FORMAT:
        try:
            net = FeatureNet.from_arrays(arrays)
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{path}: damaged MLP classifier ({exc})") from None
        net.dataset, net.image_size = cfg.get("dataset"), int(cfg.get("image_size", 0))
    elif fmt == "optdiff-feature-cnn":
        from ..evaluation.cnn_features import CNNFeatureNet

        net = CNNFeatureNet.load(path)
    else:
        raise CheckpointError(f"{path}: not a classifier checkpoint (format {fmt!r})")
    if image_size is not None and int(net.image_size) != int(image_size):
        raise ValueError(f"--classifier {path}: made for {net.image_size}x{net.image_size} images, the model "
                         f"makes {image_size}x{image_size}")
    return net
