"""Configuration of a multi-domain search: the ``[multidomain]`` table, ``[optics]`` and one
``[[domain]]`` table per data set, read from TOML and checked value by value.

Every bad value raises :class:`~optdiff.config.ConfigError` naming the table, the key, the value
and what is allowed (an unknown data set name lists the known ones; ``candidates = 0`` says why
it cannot work; a domain whose ``size`` differs from ``image_size`` is refused, see
docs/multidomain.md for why it is refused rather than resized).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigError, OpticsConfig, _check_choice, _check_int, _check_num, _err
from ..data import DATASETS

__all__ = ["DomainSpec", "SearchConfig", "VARIANTS", "TASKS", "PRIORITISATIONS", "search_config_from_dict"]

TASKS = ("classify", "generate")
PRIORITISATIONS = ("adaptive", "uniform")
#: What a run compares: separate single-domain models, one fully shared model, the searched
#: multi-path model with uniform and with adaptive (reference-based) domain weights, and separate
#: single-domain models whose masks add up to about the multi-path model's distinct masks.
VARIANTS = ("separate", "shared", "multipath-uniform", "multipath-adaptive", "separate-matched")


@dataclass
class DomainSpec:
    """One domain: a data set of :func:`optdiff.data.load_dataset` and how much of it is used."""

    name: str                       # the data set (one of optdiff.data.DATASETS)
    label: str = ""                 # display name; default the data set name (must be unique)
    data_dir: str = ""
    split: str = "all"              # the loader's split; train/val/test are then cut from it
    classes: Any = None             # optional class filter (labels or names)
    size: Any = None                # must equal [multidomain] image_size when given
    limit: int = 0                  # 0: train_limit + val_count + test_count images

    def validate(self, image_size: int, index: int) -> None:
        s = f"domain {index}"
        if not isinstance(self.name, str) or self.name.lower().replace("_", "-") not in DATASETS + ("fashionmnist",):
            raise _err(s, "name", self.name, f"unknown data set; known: {', '.join(DATASETS)}")
        if not isinstance(self.label, str):
            raise _err(s, "label", self.label, "must be a string")
        _check_choice(s, "split", self.split, ("train", "test", "t10k", "all"))
        _check_int(s, "limit", self.limit, 0)
        if self.size is not None:
            _check_int(s, "size", self.size, 2, 1024)
            if self.size != image_size:
                raise _err(s, "size", self.size,
                           f"differs from [multidomain] image_size = {image_size}: all domains share one optical "
                           f"window and one detector layout, so their images must have one size (leave 'size' "
                           f"out and the loader resamples every data set to image_size)")

    @property
    def key(self) -> str:
        return self.label or self.name


@dataclass
class SearchConfig:
    """The ``[multidomain]`` table (see docs/multidomain.md for each key's meaning)."""

    task: str = "classify"
    image_size: int = 12
    positions: int = 3              # L: mask positions of the super-network
    candidates: int = 2             # K: candidate masks per position
    skip: bool = True               # offer "no mask" (free propagation) at each position
    rounds: int = 20                # search rounds (mask training, then controller updates)
    warmup_rounds: int = 3          # rounds of mask training before the controllers learn
    steps_per_round: int = 10       # Adam steps of the masks per round (a batch of every domain each)
    finetune_steps: int = 100       # steps on the final (fixed) paths after the search
    batch: int = 32
    lr: float = 0.05                # masks (Adam)
    readout_lr: float = 0.05        # per-domain read-outs (Adam)
    controller_lr: float = 0.5      # REINFORCE step on the policy logits
    baseline_decay: float = 0.8     # moving-average reward baseline
    controller_samples: int = 2     # paths each controller draws and scores per round
    mask_cost: float = 0.01         # reward cost of a mask, split among the domains that use it
    gamma: float = 1.0              # adaptive prioritisation focus exponent
    min_weight: float = 0.05        # floor of a domain's adaptive weight (before normalising)
    train_limit: int = 2000
    val_count: int = 200
    test_count: int = 500
    T: int = 1000                   # generation: diffusion steps of the linear schedule
    t_range: list = field(default_factory=lambda: [900, 1000])  # generation: the timestep set searched
    seed: int = 0
    threads: int = 1
    variants: list = field(default_factory=lambda: list(VARIANTS))

    def validate(self) -> None:
        s = "multidomain"
        _check_choice(s, "task", self.task, TASKS)
        _check_int(s, "image_size", self.image_size, 2, 1024)
        _check_int(s, "positions", self.positions, 1, 64)
        if not isinstance(self.candidates, int) or isinstance(self.candidates, bool):
            raise _err(s, "candidates", self.candidates, "must be an integer")
        if self.candidates < 1:
            raise _err(s, "candidates", self.candidates,
                       "must be >= 1: with no candidate mask every path is free propagation only (all skips), "
                       "which has nothing to train")
        _check_int(s, "candidates", self.candidates, 1, 64)
        if not isinstance(self.skip, bool):
            raise _err(s, "skip", self.skip, "must be true or false")
        for key in ("rounds", "steps_per_round", "batch", "controller_samples", "val_count", "test_count",
                    "train_limit", "threads"):
            _check_int(s, key, getattr(self, key), 1)
        for key in ("warmup_rounds", "finetune_steps"):
            _check_int(s, key, getattr(self, key), 0)
        for key in ("lr", "readout_lr", "controller_lr"):
            _check_num(s, key, getattr(self, key), 0.0, 100.0)
        _check_num(s, "baseline_decay", self.baseline_decay, 0.0, 1.0)
        if self.baseline_decay == 1.0:
            raise _err(s, "baseline_decay", 1.0, "must be < 1 (1 would keep the first reward forever)")
        _check_num(s, "mask_cost", self.mask_cost, 0.0, 100.0)
        _check_num(s, "gamma", self.gamma, 0.0, 10.0)
        _check_num(s, "min_weight", self.min_weight, 0.0, 10.0, lo_open=True)
        _check_int(s, "T", self.T, 2, 100000)
        tr = self.t_range
        if (not isinstance(tr, (list, tuple)) or len(tr) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                                          for v in tr)
                or not 0 <= tr[0] < tr[1] <= self.T):
            raise _err(s, "t_range", tr, f"must be [lo, hi] integers with 0 <= lo < hi <= T ({self.T})")
        _check_int(s, "seed", self.seed, 0, (1 << 63) - 1)
        if (not isinstance(self.variants, (list, tuple)) or not self.variants
                or any(v not in VARIANTS for v in self.variants) or len(set(self.variants)) != len(self.variants)):
            raise _err(s, "variants", self.variants, f"must be a non-empty list of distinct names from {list(VARIANTS)}")
        if "multipath-adaptive" in self.variants and "separate" not in self.variants:
            raise _err(s, "variants", self.variants,
                       "'multipath-adaptive' needs 'separate': its domain weights compare each domain with its "
                       "single-domain model's validation quality")
        if "separate-matched" in self.variants and not any(v.startswith("multipath") for v in self.variants):
            raise _err(s, "variants", self.variants,
                       "'separate-matched' needs a multipath variant: its size is the multi-path model's")


def _from_table(cls, table, where: str):
    if not isinstance(table, dict):
        raise ConfigError(f"[{where}] must be a table, got {type(table).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - names)
    if unknown:
        raise ConfigError(f"[{where}] unknown key(s) {unknown}; known: {sorted(names)}")
    return cls(**table)


def search_config_from_dict(d: dict) -> tuple[SearchConfig, OpticsConfig, list[DomainSpec]]:
    """``(search, optics, domains)`` from a TOML dict; every value checked (ConfigError)."""
    if not isinstance(d, dict):
        raise ConfigError("the configuration must be a TOML table")
    unknown = sorted(set(d) - {"multidomain", "optics", "domain"})
    if unknown:
        raise ConfigError(f"unknown table(s) {unknown}; a multi-domain config has [multidomain], [optics] and "
                          f"[[domain]] tables")
    search = _from_table(SearchConfig, d.get("multidomain", {}), "multidomain")
    search.validate()
    optics_table = dict(d.get("optics", {}))
    if "layers" in optics_table and optics_table["layers"] != search.positions:
        raise ConfigError(f"[optics] layers = {optics_table['layers']!r} differs from [multidomain] positions = "
                          f"{search.positions}: the super-network has one layer per position (leave layers out)")
    optics_table["layers"] = search.positions
    optics = _from_table(OpticsConfig, optics_table, "optics")
    optics.validate(search.image_size)
    tables = d.get("domain")
    if not isinstance(tables, list) or len(tables) < 1:
        raise ConfigError("[[domain]]: give at least one domain table ([[domain]] name = \"digits\" ...)")
    domains = [_from_table(DomainSpec, t, f"domain {i}") for i, t in enumerate(tables)]
    for i, dom in enumerate(domains):
        dom.validate(search.image_size, i)
    keys = [dom.key for dom in domains]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"[[domain]]: domain names must be unique (give a 'label' to tell two tables of one "
                          f"data set apart), got {keys}")
    return search, optics, domains
