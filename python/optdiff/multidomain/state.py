"""Checkpoints of a variant run: every array (masks, read-outs, both Adams, controllers, weights,
paths) in one atomic optdiff checkpoint, with the configuration it belongs to.

Loading a checkpoint of another configuration, variant or domain list is a
:class:`~optdiff.diffusion.checkpoint.CheckpointError` naming what differs; a corrupt file is one
too (the checkpoint module checks every member's CRC).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..diffusion.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .search import VariantRun

__all__ = ["run_signature", "save_run", "restore_run"]


def run_signature(run: VariantRun) -> dict:
    """What a checkpoint must match to be resumed: the configuration, the variant and the domains."""
    search = dataclasses.asdict(run.search)
    search.pop("variants")  # which other variants run does not change this one
    sig = {"variant": run.variant, "search": search, "matched_masks": run.matched_masks,
           "optics": dataclasses.asdict(run.net.odu.optics), "domains": run.keys,
           "domain_sizes": [int(d.train_x.shape[0]) for d in run.domains],
           "references": None if run.references is None else run.references.tolist()}
    return sig


def _arrays(run: VariantRun) -> dict:
    a = {"masks": run.net.masks, "weights": run.weights, "paths": np.array(run.paths, dtype=np.int64),
         "train_paths": np.array(run.train_paths, dtype=np.int64)}
    for k, v in run.readout.params.items():
        a[f"readout.{k}"] = v
    for k, v in run.mask_opt.state_arrays().items():
        a[f"mask_opt.{k}"] = v
    for k, v in run.readout_opt.state_arrays().items():
        a[f"readout_opt.{k}"] = v
    for d, c in enumerate(run.controllers or []):
        a[f"controller{d}.theta"] = c.theta
        a[f"controller{d}.baseline"] = np.array(c.baseline, dtype=np.float64)
    return a


def save_run(path, run: VariantRun) -> None:
    save_checkpoint(path, run_signature(run), _arrays(run), meta={"round": run.round, "history": run.history})


def restore_run(path, run: VariantRun) -> None:
    """Load ``path`` into ``run`` (built from the same configuration); CheckpointError otherwise."""
    sig = run_signature(run)
    config, arrays, meta = load_checkpoint(path, expect=sig)
    want = _arrays(run)
    if set(arrays) != set(want):
        raise CheckpointError(f"{path}: arrays {sorted(set(arrays) ^ set(want))} differ from this run's")
    for name, a in want.items():
        if arrays[name].shape != np.shape(a):
            raise CheckpointError(f"{path}: array {name!r} has shape {arrays[name].shape}, expected {np.shape(a)}")
    rnd = meta.get("round")
    if not isinstance(rnd, int) or not 0 <= rnd <= run.total_rounds or not isinstance(meta.get("history"), list):
        raise CheckpointError(f"{path}: bad round {rnd!r} or history in the checkpoint's meta")
    run.net.masks[...] = arrays["masks"]
    run.weights = arrays["weights"].astype(np.float64).copy()
    run.paths = [tuple(int(c) for c in p) for p in arrays["paths"]]
    run.train_paths = [tuple(int(c) for c in p) for p in arrays["train_paths"]]
    for k, v in run.readout.params.items():
        v[...] = arrays[f"readout.{k}"]
    run.mask_opt.load_state_arrays({k[len("mask_opt."):]: v for k, v in arrays.items() if k.startswith("mask_opt.")})
    run.readout_opt.load_state_arrays({k[len("readout_opt."):]: v for k, v in arrays.items()
                                       if k.startswith("readout_opt.")})
    for d, c in enumerate(run.controllers or []):
        c.load_state(arrays[f"controller{d}.theta"], arrays[f"controller{d}.baseline"])
    run.round = rnd
    run.history = meta["history"]
