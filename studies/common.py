"""What the studies share: finding optdiff, and the data sets with their held-out split.

Importing this module makes ``import optdiff`` work: an installed optdiff is used as it is;
without one, the in-tree package (``python/``, after ``./dev build``) is put on the path.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PYTHON_DIR = REPO / "python"


def _find_optdiff() -> None:
    try:
        import optdiff  # noqa: F401
    except ImportError:
        if PYTHON_DIR.is_dir() and str(PYTHON_DIR) not in sys.path:
            sys.path.insert(0, str(PYTHON_DIR))


_find_optdiff()

from optdiff.data import load_dataset  # noqa: E402

# The data sets of the studies: Fashion-MNIST's first three classes, all of MNIST, both at 20x20.
SETUPS = {
    "fashion-mnist": {"classes": [0, 1, 2]},
    "mnist": {"classes": None},
}


def load_split(name: str, data_dir, held_out: int, seed: int):
    """(train images, train labels, held-out images, held-out labels) at 20x20.

    The held-out images are ``held_out`` test images picked with ``seed``; when only the test
    split is on disk (e.g. MNIST's t10k files) they are taken from it and the rest is trained on.
    """
    classes = SETUPS[name]["classes"]
    try:
        xtr, ytr = load_dataset(name, data_dir=data_dir, split="train", classes=classes, size=20)
        xte, yte = load_dataset(name, data_dir=data_dir, split="test", classes=classes, size=20)
        rng = np.random.default_rng(seed)
        pick = rng.permutation(xte.shape[0])[:held_out]
        return xtr, ytr, xte[pick], yte[pick]
    except FileNotFoundError:
        x, y = load_dataset(name, data_dir=data_dir, split="test", classes=classes, size=20)
        perm = np.random.default_rng(seed).permutation(x.shape[0])
        ho, tr = perm[:held_out], perm[held_out:]
        return x[tr], y[tr], x[ho], y[ho]


def add_data_args(ap) -> None:
    """``--dataset`` and ``--data-dir``, as every study that uses :func:`load_split` takes them."""
    ap.add_argument("--dataset", default="fashion-mnist", choices=tuple(SETUPS))
    ap.add_argument("--data-dir", default=None, help="folder of the IDX files (MNIST: required)")


def linear_samples(value: str):
    """``--linear-samples``: a count of noised images per set for the sampled fit, or ``exact``
    (None: the least-squares denoiser with the noise's moments in closed form)."""
    if value.strip().lower() == "exact":
        return None
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a sample count or 'exact', got {value!r}") from None
    if n < 2:
        raise argparse.ArgumentTypeError(f"expected at least 2 samples per set, got {n}")
    return n


def add_linear_args(ap, default: str = "exact") -> None:
    """``--linear-samples N|exact`` and ``--ridge``: how the linear denoiser baseline is fitted."""
    ap.add_argument("--linear-samples", type=linear_samples, default=linear_samples(default), metavar="N|exact",
                    help=f"noised images per set for the linear denoiser's fit, or 'exact' for the noise's "
                         f"moments in closed form (default {default})")
    ap.add_argument("--ridge", type=float, default=1e-3,
                    help="ridge of the least-squares fits (the linear denoiser's and a study's own)")


def noised(x0, count, t_range, schedule, rng):
    """``count`` noised images of one time set: ``(r, t, eps)``, images drawn uniformly from
    ``x0``, ``t`` uniformly in ``t_range``, in that order from ``rng``."""
    idx = rng.integers(0, x0.shape[0], count)
    t = rng.integers(*t_range, count)
    eps = rng.standard_normal((count,) + x0.shape[1:])
    return schedule.q_sample(x0[idx], t, eps), t, eps


def append_jsonl(path, row: dict) -> None:
    """Append one JSON line to ``path`` (``None``: do nothing)."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with Path(path).open("a") as f:
            f.write(json.dumps(row) + "\n")


def quality_feature_net(xtr, ytr, seed: int):
    """The small MLP classifier whose features ``quality.py`` (and the studies that compare with
    it) compute FID in, trained on the training split."""
    from threadpoolctl import threadpool_limits

    from optdiff.evaluation.metrics import FeatureNet

    # The MLP's training is not the same at every BLAS thread count (measured: features differ by
    # half their range between 1 and 2 threads), so FIDs would move with OMP_NUM_THREADS. Two
    # threads, as every quality.py run in the tree, whatever the environment says.
    with threadpool_limits(limits=2, user_api="blas"):
        return FeatureNet(hidden=(256, 64), max_iter=60, seed=seed).fit(xtr, ytr)


def quality_cnn_net(xtr, ytr, xho, yho, dataset: str, seed: int):
    """The evaluation's CNN classifier (:class:`optdiff.evaluation.cnn_features.CNNFeatureNet`, the
    report's recipe: 8 epochs, seeded), trained on the training split; the second feature space of
    ``quality.py --cnn-features``. Needs PyTorch (the ``torch`` extra)."""
    import torch

    from optdiff.evaluation.cnn_features import CNNFeatureNet

    # Like the MLP above: one thread count for the training, whatever the environment says, so
    # that the features (and the FIDs in them) do not move with it.
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        return CNNFeatureNet(xtr.shape[1], np.unique(ytr), dataset, seed=seed).fit(xtr, ytr, held_out=(xho, yho))
    finally:
        torch.set_num_threads(threads)
