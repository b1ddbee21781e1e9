"""The ``optdiff ff-train`` configuration: a TOML file with [data], [model] (+ [[model.layers]]) and [train].

Every key is checked; an unknown section or key is refused with the list of known ones (a typo
must not silently fall back to a default). Example (``examples/ff_mnist.toml`` style)::

    [data]
    dataset = "mnist"           # any optdiff data set name; "mnist" pads 28 -> size
    data_dir = "/path/to/mnist"
    counts = [4000, 1000, 1000] # train / validation / test, drawn without overlap
    size = 32
    seed = 0

    [model]
    kind = "ff"                 # "ff", or a backprop baseline: "bp-2conv-fc", "lenet5"
    threshold = 1.0             # goodness threshold theta (> 0)
    scale = "mean"              # goodness = mean (or sum) of squared activities
    embedding = "grating"       # "onehot" (Hinton), "pattern" or "grating" (labels.py)
    strength = 0.5
    vote = "last"               # goodness of the last block decides ("all-but-first": Hinton's sum)
    [[model.layers]]
    kind = "conv"
    channels = 16
    [[model.layers]]
    kind = "fibre"              # or "freespace"; see optical.py for their keys
    modes = 240
    [[model.layers]]
    kind = "fc"
    units = 256

    [train]
    epochs = 10
    batch = 100
    lr = 0.003
    seed = 0
    threads = 1
    readout_lambda = 1.0
    checkpoint_every = 1        # epochs
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from ..config import ConfigError, read_toml
from .goodness import SCALES
from .labels import EMBEDDINGS
from .network import VOTES, check_blocks

__all__ = ["FFConfig", "load_ff_config", "MODEL_KINDS"]

MODEL_KINDS = ("ff", "bp-2conv-fc", "lenet5")


@dataclass
class DataSection:
    dataset: str = "mnist"
    data_dir: str = ""
    counts: list = field(default_factory=lambda: [4000, 1000, 1000])
    size: int = 32
    pad: bool = True
    seed: int = 0


@dataclass
class ModelSection:
    kind: str = "ff"
    threshold: float = 1.0
    scale: str = "mean"
    embedding: str = "grating"
    strength: float = 0.5
    vote: str = "last"
    layers: list = field(default_factory=lambda: [{"kind": "conv", "channels": 16}, {"kind": "conv", "channels": 16},
                                                  {"kind": "fc", "units": 256}])


@dataclass
class TrainSection:
    epochs: int = 10
    batch: int = 100
    lr: float = 3e-3
    seed: int = 0
    threads: int = 1
    readout_lambda: float = 1.0
    checkpoint_every: int = 1


def _int(sec, key, v, lo):
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or v >= 2 ** 31:
        raise ConfigError(f"[{sec}] {key} = {v!r}: must be an integer >= {lo}")


def _num(sec, key, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ConfigError(f"[{sec}] {key} = {v!r}: must be a finite number > 0")


@dataclass
class FFConfig:
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)

    def validate(self) -> FFConfig:
        d, m, t = self.data, self.model, self.train
        if not isinstance(d.counts, list) or len(d.counts) != 3:
            raise ConfigError(f"[data] counts = {d.counts!r}: must be [train, val, test]")
        for c in d.counts:
            _int("data", "counts", c, 1)
        _int("data", "size", d.size, 4)
        _int("data", "seed", d.seed, 0)
        if not isinstance(d.pad, bool):
            raise ConfigError(f"[data] pad = {d.pad!r}: must be true or false")
        if m.kind not in MODEL_KINDS:
            raise ConfigError(f"[model] kind = {m.kind!r}: must be one of {MODEL_KINDS}")
        if isinstance(m.threshold, bool) or not isinstance(m.threshold, (int, float)) \
                or not math.isfinite(m.threshold) or m.threshold <= 0:
            raise ConfigError(f"[model] threshold = {m.threshold!r}: the goodness threshold must be finite and > 0 "
                              f"(a goodness is a sum of squares >= 0)")
        if m.scale not in SCALES:
            raise ConfigError(f"[model] scale = {m.scale!r}: must be one of {SCALES}")
        if m.embedding not in EMBEDDINGS:
            raise ConfigError(f"[model] embedding = {m.embedding!r}: must be one of {EMBEDDINGS}")
        _num("model", "strength", m.strength)
        if m.vote not in VOTES:
            raise ConfigError(f"[model] vote = {m.vote!r}: must be one of {VOTES}")
        if m.kind == "ff":
            try:
                check_blocks(m.layers)
            except ValueError as exc:
                raise ConfigError(f"[model] {exc}") from None
        for key in ("epochs", "batch", "threads", "checkpoint_every"):
            _int("train", key, getattr(t, key), 1)
        _int("train", "seed", t.seed, 0)
        _num("train", "lr", t.lr)
        _num("train", "readout_lambda", t.readout_lambda)
        return self

    @classmethod
    def from_dict(cls, d: dict) -> FFConfig:
        sections = {"data": DataSection, "model": ModelSection, "train": TrainSection}
        unknown = set(d) - set(sections)
        if unknown:
            raise ConfigError(f"unknown section(s) {sorted(unknown)}; known: {sorted(sections)}")
        built = {}
        for name, klass in sections.items():
            sec = d.get(name, {})
            if not isinstance(sec, dict):
                raise ConfigError(f"[{name}] must be a table")
            known = {f.name for f in fields(klass)}
            bad = set(sec) - known
            if bad:
                raise ConfigError(f"[{name}] unknown key(s) {sorted(bad)}; known: {sorted(known)}")
            built[name] = klass(**sec)
        return cls(**built).validate()

    def to_dict(self) -> dict:
        return asdict(self)


def load_ff_config(path) -> FFConfig:
    d = read_toml(path, "ff-train config")
    try:
        return FFConfig.from_dict(d)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
