"""A bench's configuration: its four parts as one dataclass, read from and written to the ``[bench]``
table of a TOML file (sub-tables ``[bench.dmd]``, ``[bench.slm]``, ``[bench.fold]``,
``[bench.camera]``; every key optional, defaults = the reference bench; ``"none"`` where a
value may be absent, e.g. ``full_well = "none"``).

It lives here rather than in :mod:`optdiff.config` because that module's six sections are the
checkpoint format and ``optdiff.config`` must not import the hardware (the parts import it).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigError, OpticsConfig, read_toml
from .camera import Camera
from .dmd import DMD
from .fold import FoldedPropagation
from .slm import SLM

__all__ = ["BenchConfig", "load_bench_config", "bench_config_to_toml"]

PARTS = {"dmd": DMD, "slm": SLM, "fold": FoldedPropagation, "camera": Camera}
# fields that may be None, written "none" in TOML (which has no null)
NULLABLE = {"dmd": {"magnification", "relay_na"}, "slm": {"lut"}, "fold": {"fold_angle", "camera_hop"},
            "camera": {"bits", "full_well", "gain", "electrons_per_intensity"}}


@dataclass(frozen=True)
class BenchConfig:
    """DMD, SLM, folded propagation and camera; ``seed`` seeds the camera noise."""

    dmd: DMD = field(default_factory=DMD)
    slm: SLM = field(default_factory=SLM)
    fold: FoldedPropagation = field(default_factory=FoldedPropagation)
    camera: Camera = field(default_factory=Camera)
    seed: int = 0

    def __post_init__(self):
        for name, klass in PARTS.items():
            if not isinstance(getattr(self, name), klass):
                raise ValueError(f"BenchConfig.{name} must be a {klass.__name__}, got {getattr(self, name)!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 1 << 63:
            raise ValueError(f"BenchConfig.seed = {self.seed!r}: must be an integer in [0, 2**63)")

    @classmethod
    def ideal(cls, optics: OpticsConfig) -> BenchConfig:
        """Every imperfection off, geometry of ``optics``: the bench computes what the ideal ODU does."""
        return cls(dmd=DMD.ideal(), slm=SLM.ideal(optics.pitch),
                   fold=FoldedPropagation.ideal(optics.distance, optics.camera_hop),
                   camera=Camera.ideal(optics.n, optics.pitch))

    def replace(self, **parts) -> BenchConfig:
        """A copy with parts replaced, or with part fields changed: ``replace(slm=dict(crosstalk=0))``."""
        new = {}
        for name, value in parts.items():
            if isinstance(value, Mapping):
                value = dataclasses.replace(getattr(self, name), **value)
            new[name] = value
        return dataclasses.replace(self, **new)

    def to_dict(self) -> dict:
        """Plain nested dict (lists for tuples, None kept) for JSON and TOML."""
        def plain(v):
            return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v
        out: dict[str, Any] = {"seed": self.seed}
        for name in PARTS:
            out[name] = {k: plain(v) for k, v in dataclasses.asdict(getattr(self, name)).items()}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BenchConfig:
        """Build from a ``[bench]`` table; unknown keys and bad values are a ConfigError naming them."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"[bench] must be a table, got {d!r}")
        unknown = set(d) - set(PARTS) - {"seed"}
        if unknown:
            raise ConfigError(f"[bench] unknown key(s) {sorted(unknown)}; known: {sorted(PARTS) + ['seed']}")
        parts = {}
        for name, klass in PARTS.items():
            sec = d.get(name, {})
            if not isinstance(sec, Mapping):
                raise ConfigError(f"[bench.{name}] must be a table, got {sec!r}")
            known = {f.name for f in dataclasses.fields(klass)}
            bad = set(sec) - known
            if bad:
                raise ConfigError(f"[bench.{name}] unknown key(s) {sorted(bad)}; known: {sorted(known)}")
            kw = {k: None if (v == "none" and k in NULLABLE[name]) else tuple(v) if isinstance(v, list) else v
                  for k, v in sec.items()}
            try:
                parts[name] = klass(**kw)
            except ValueError as exc:
                raise ConfigError(f"[bench.{name}] {exc}") from None
        try:
            return cls(seed=d.get("seed", 0), **parts)
        except ValueError as exc:
            raise ConfigError(f"[bench] {exc}") from None


def load_bench_config(path: str | os.PathLike) -> BenchConfig:
    """The ``[bench]`` table of a TOML file (other tables ignored; none: the reference bench)."""
    d = read_toml(path)
    try:
        return BenchConfig.from_dict(d.get("bench", {}))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "[" + ", ".join(_toml(x) for x in v) + "]"


def bench_config_to_toml(cfg: BenchConfig) -> str:
    """The ``[bench]`` table that :func:`load_bench_config` reads back to ``cfg`` (None as ``"none"``)."""
    d = cfg.to_dict()
    lines = ["[bench]", f"seed = {d['seed']}", ""]
    for name in PARTS:
        lines.append(f"[bench.{name}]")
        lines += [f"{k} = {_toml('none' if v is None else v)}" for k, v in d[name].items()]
        lines.append("")
    return "\n".join(lines)
