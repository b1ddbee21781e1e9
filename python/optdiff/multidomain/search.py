"""One variant's training: shared masks trained with Adam on the domains' paths, alternating with
REINFORCE steps of the per-domain path controllers, then fine-tuning on the chosen paths.

Variants (all with the same number of mask-training steps):

* ``separate``: K = D candidates, no skip, domain d fixed on candidate d everywhere: D independent
  single-domain models (nothing is shared; one joint loop only for bookkeeping).
* ``shared``: K = 1, no skip, every domain on the same L masks (only read-outs differ).
* ``multipath-uniform`` / ``multipath-adaptive``: K candidates and the skip, one controller per
  domain, domain weights uniform or adaptive (:mod:`~optdiff.multidomain.prioritise`).
* ``separate-matched``: like ``separate``, but each domain has masks at only ``matched_masks``
  evenly spaced positions (skips elsewhere), so the D models together need about as many masks as
  the multi-path model.

Round r: every domain draws a path from its controller; ``steps_per_round`` Adam steps of the
masks on the weighted sum of the domains' losses on those paths; after ``warmup_rounds``, each
controller scores ``controller_samples`` paths on its validation set (reward = quality - cost)
and takes a REINFORCE step; the domains' best paths are re-read and validated, which updates the
adaptive weights. After ``rounds`` rounds, ``finetune_steps`` more steps on the best paths.
A read-out with a closed-form fit (generation's per-pixel affine map) is refitted by least squares
whenever its domain trains on another path, and temporarily for scoring a path it was not
trained on: it belongs to one optical path, and a stale one would score the path, not the optics.
Every random draw comes from ``default_rng([seed, variant, round, purpose, ...])``, so a run
resumed from any round's checkpoint continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import math

import numpy as np

from ..diffusion.optim import Adam
from .controller import PathController
from .domains import DomainData, domain_index
from .prioritise import adaptive_weights, uniform_weights
from .readouts import ClassifierReadout, DenoiserReadout
from .supernet import SuperNet, distinct_masks, format_path

__all__ = ["VariantRun", "path_costs"]

_VARIANT_ID = {"separate": 0, "shared": 1, "multipath-uniform": 2, "multipath-adaptive": 3, "separate-matched": 4}


def matched_positions(L: int, m: int) -> list[int]:
    """``m`` evenly spaced positions of ``L`` (the last one always included)."""
    if not 1 <= m <= L:
        raise ValueError(f"matched_masks must be in 1..{L} (the positions), got {m}")
    return sorted({int(round(x)) for x in np.linspace(L - 1, 0, m)})


def path_costs(path, others) -> float:
    """A path's mask cost: each of its masks counts 1 / (1 + number of other paths using it), so
    the costs of all domains' paths add up to the number of distinct masks."""
    used = [set((pos, c) for pos, c in enumerate(p) if c >= 0) for p in others]
    return float(sum(1.0 / (1 + sum((pos, c) in u for u in used)) for pos, c in enumerate(path) if c >= 0))


class VariantRun:
    """Training state of one variant: super-network, read-outs, controllers, optimisers, history."""

    def __init__(self, search, optics, domains: list[DomainData], variant: str, references=None,
                 precision: str = "single", matched_masks: int | None = None):
        if variant not in _VARIANT_ID:
            raise ValueError(f"variant must be one of {sorted(_VARIANT_ID)}, got {variant!r}")
        if not domains:
            raise ValueError("give at least one domain")
        self.search, self.variant, self.domains = search, variant, domains
        self.keys = [d.key for d in domains]
        D, L = len(domains), optics.layers
        if variant == "separate":
            K, skip, fixed = D, False, [(d,) * L for d in range(D)]
        elif variant == "shared":
            K, skip, fixed = 1, False, [(0,) * L] * D
        elif variant == "separate-matched":
            if matched_masks is None:
                raise ValueError("variant 'separate-matched' needs matched_masks (masks per domain)")
            where = matched_positions(L, int(matched_masks))
            K, skip = D, len(where) < L
            fixed = [tuple(d if pos in where else -1 for pos in range(L)) for d in range(D)]
        else:
            K, skip, fixed = search.candidates, search.skip, None
        self.net = SuperNet(optics, search.image_size, K, skip, seed=search.seed, nthreads=search.threads,
                            precision=precision)
        if search.task == "classify":
            self.readout = ClassifierReadout(search.image_size, [d.classes for d in domains])
        else:
            self.readout = DenoiserReadout(search.image_size, D, search.T, search.t_range)
        self.controllers = None if fixed else [PathController(L, K, skip) for _ in range(D)]
        self.paths = list(fixed) if fixed else [c.best_path() for c in self.controllers]
        self.matched_masks = None if variant != "separate-matched" else int(matched_masks)
        self.adaptive = variant == "multipath-adaptive"
        if self.adaptive:
            ref = np.asarray(references, dtype=np.float64) if references is not None else None
            if ref is None or ref.shape != (D,):
                raise ValueError(f"variant 'multipath-adaptive' needs one reference quality per domain ({D}), "
                                 f"got {references!r}")
            self.references = ref
        else:
            self.references = None
        self.weights = uniform_weights(D)
        self.mask_opt = Adam({"masks": self.net.masks.reshape(L * K, self.net.n, self.net.n)}, sets=L * K)
        self.readout_opt = Adam(self.readout.params, sets=D)
        self.round = 0
        self.history: list[dict] = []
        self.val = [self.readout.batch(d.val_x, d.val_y, np.arange(d.val_x.shape[0]), self._rng(0, 90, i))
                    for i, d in enumerate(domains)]
        # the batch a read-out with a closed-form fit (generation) is fitted on, whenever its domain
        # moves to another path: a per-pixel affine read-out belongs to one optical path
        self.fit = [self.readout.batch(d.train_x, d.train_y, np.arange(min(256, d.train_x.shape[0])),
                                       self._rng(0, 91, i)) for i, d in enumerate(domains)]
        self.train_paths = list(self.paths)  # the path each domain's read-out was last fitted/trained on
        for i in range(D):
            self._refit(i, self.paths[i])

    # ------------------------------------------------------------------ bookkeeping
    @property
    def total_rounds(self) -> int:
        s = self.search
        return s.rounds + math.ceil(s.finetune_steps / s.steps_per_round)

    @property
    def done(self) -> bool:
        return self.round >= self.total_rounds

    def _rng(self, r: int, purpose: int, *more) -> np.random.Generator:
        return np.random.default_rng([self.search.seed, _VARIANT_ID[self.variant], r, purpose, *more])

    def path_of(self, name: str) -> tuple[int, ...]:
        return self.paths[domain_index(self.keys, name)]

    def _refit(self, d: int, path) -> None:
        if not self.readout.fits:
            return
        x, t = self.fit[d]
        self.readout.calibrate(d, self.net.intensity(x, path), t)

    def _quality(self, d: int, path, x, t) -> float:
        """Quality of ``path`` on (x, t); a fitted read-out is refitted to a path it was not trained
        on for the measurement only (restored afterwards)."""
        path = tuple(path)
        if not (self.readout.fits and path != tuple(self.train_paths[d])):
            return self.readout.quality(d, self.net.intensity(x, path), t)
        saved = {k: v[d].copy() for k, v in self.readout.params.items()}
        self._refit(d, path)
        q = self.readout.quality(d, self.net.intensity(x, path), t)
        for k, v in saved.items():
            self.readout.params[k][d] = v
        return q

    def validate_path(self, d: int, path) -> float:
        x, t = self.val[d]
        return self._quality(d, path, x, t)

    # ------------------------------------------------------------------ training
    def train_step(self, paths, rng) -> list[float]:
        """One Adam step of the masks (and read-outs) on a batch of every domain; the losses."""
        s, acc, losses = self.search, {}, []
        for d, dom in enumerate(self.domains):
            idx = rng.integers(0, dom.train_x.shape[0], size=s.batch)
            x, t = self.readout.batch(dom.train_x, dom.train_y, idx, rng)
            I, tape = self.net.intensity_train(x, paths[d])
            loss, gI, g_ro = self.readout.loss_and_grads(d, I, t)
            w = float(self.weights[d])
            for key, g in self.net.backward(tape, w * gI, paths[d]).items():
                acc[key] = acc[key] + g if key in acc else g
            self.readout_opt.step(d, {k: w * g for k, g in g_ro.items()},
                                  {k: s.readout_lr for k in self.readout.params})
            losses.append(loss)
        for (pos, c), g in sorted(acc.items()):
            self.mask_opt.step(pos * self.net.K + c, {"masks": g}, {"masks": s.lr})
        return losses

    def controller_step(self, r: int) -> list[dict]:
        s, out = self.search, []
        best = list(self.paths)
        for d, ctl in enumerate(self.controllers):
            rng = self._rng(r, 2, d)
            paths = [ctl.sample(rng) for _ in range(s.controller_samples)]
            others = best[:d] + best[d + 1:]
            qual = [self.validate_path(d, p) for p in paths]
            rewards = [q - s.mask_cost * path_costs(p, others) for q, p in zip(qual, paths)]
            ctl.update(paths, rewards, s.controller_lr, s.baseline_decay)
            out.append({"paths": [format_path(p) for p in paths], "rewards": rewards})
        return out

    def run_round(self) -> dict:
        """Train one round (search or fine-tune); returns its history row."""
        s, r = self.search, self.round
        search_round = r < s.rounds
        if search_round and self.controllers:
            paths = [c.sample(self._rng(r, 0, d)) for d, c in enumerate(self.controllers)]
        else:
            paths = list(self.paths)
        for d, p in enumerate(paths):
            if self.readout.fits and tuple(p) != tuple(self.train_paths[d]):
                self._refit(d, p)
            self.train_paths[d] = tuple(p)
        steps = s.steps_per_round if search_round else min(s.steps_per_round,
                                                           s.finetune_steps - (r - s.rounds) * s.steps_per_round)
        losses = [self.train_step(paths, self._rng(r, 1, k)) for k in range(steps)]
        ctl = None
        if search_round and self.controllers and r >= s.warmup_rounds:
            ctl = self.controller_step(r)
        if self.controllers:
            self.paths = [c.best_path() for c in self.controllers]
        quality = [self.validate_path(d, p) for d, p in enumerate(self.paths)]
        if self.adaptive:
            self.weights = adaptive_weights(quality, self.references, self.readout.kind, s.gamma, s.min_weight)
        row = {"round": r, "phase": "search" if search_round else "finetune",
               "train_paths": [format_path(p) for p in paths],
               "loss": np.mean(losses, axis=0).tolist() if losses else None,
               "val_quality": quality, "paths": [format_path(p) for p in self.paths],
               "weights": self.weights.tolist(), "distinct_masks": len(distinct_masks(self.paths)),
               "controller": ctl}
        self.history.append(row)
        self.round += 1
        return row

    # ------------------------------------------------------------------ results
    def test_quality(self) -> list[float]:
        out = []
        for d, dom in enumerate(self.domains):
            x, t = self.readout.batch(dom.test_x, dom.test_y, np.arange(dom.test_x.shape[0]), self._rng(0, 92, d))
            out.append(self._quality(d, self.paths[d], x, t))
        return out

    def results(self) -> dict:
        masks = distinct_masks(self.paths)
        users = {f"{pos}:{c}": [self.keys[d] for d, p in enumerate(self.paths) if p[pos] == c] for pos, c in masks}
        n2 = self.net.n ** 2
        readout = sum(int(np.prod(a.shape[1:])) for a in self.readout.params.values())
        return {
            "variant": self.variant, "task": self.search.task, "quality_name": self.readout.quality_name,
            "domains": self.keys, "paths": {k: list(p) for k, p in zip(self.keys, self.paths)},
            "path_text": {k: format_path(p) for k, p in zip(self.keys, self.paths)},
            "positions": self.net.L, "candidates": self.net.K, "skip": self.net.skip,
            "distinct_masks": len(masks), "mask_users": users,
            "shared_masks": {m: u for m, u in users.items() if len(u) > 1},
            "mask_pixels": len(masks) * n2, "readout_parameters": readout * len(self.keys),
            "parameters": len(masks) * n2 + readout * len(self.keys),
            "val_quality": dict(zip(self.keys, self.history[-1]["val_quality"])) if self.history else None,
            "test_quality": dict(zip(self.keys, self.test_quality())),
            "references": None if self.references is None else self.references.tolist(),
            "rounds": self.round, "matched_masks": self.matched_masks,
        }
