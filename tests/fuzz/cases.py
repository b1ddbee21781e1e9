"""Case generation: one :class:`Case` from ``(seed, index)``, the registry of entry generators,
and :func:`judge`, which runs a case and classifies its outcome.

Outcomes: ``ok`` and ``clean_error`` pass; the failures are ``crash`` and ``hang`` (seen by the
parent), ``nonfinite`` (NaN/Inf out of finite inputs), ``wrong_shape`` (shape or dtype),
``wrong_value`` (differs from the NumPy reference or a stated property), ``accepted_bad`` (a
certainly invalid argument went through), ``rejected_good`` (valid arguments refused),
``bad_message`` (the error does not name the argument) and ``bad_exception`` (another
exception type than the entry may raise).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .values import all_finite, describe

PASS = ("ok", "clean_error")
FAILURES = ("crash", "hang", "nonfinite", "wrong_shape", "wrong_value", "accepted_bad", "rejected_good",
            "bad_message", "bad_exception", "harness_error")
CLEAN = (TypeError, ValueError, MemoryError)


@dataclass
class Case:
    entry: str
    kind: str                                   # "good", "bad" or "odd"
    call: Callable[[], Any]
    desc: str
    names: tuple = ()                           # arguments the error message must name (bad/odd)
    tags: tuple = ()                            # what was done to the arguments
    check: Callable[[Any], tuple | None] | None = None
    allowed: tuple = CLEAN
    timeout: float = 20.0
    finite_inputs: bool = True


class Builder:
    """Collects an entry's arguments with their good value and the ways to spoil each one.

    ``mode`` is drawn first: ``bad`` corrupts one argument (sometimes two) with a certainly invalid
    value, ``odd`` replaces one with a value of uncertain validity, ``good`` keeps all.
    """

    def __init__(self, rng, p_bad=0.55, p_odd=0.2):
        self.rng = rng
        u = rng.random()
        self.mode = "bad" if u < p_bad else ("odd" if u < p_bad + p_odd else "good")
        self.args: dict[str, Any] = {}
        self._alts: dict[str, tuple] = {}

    def arg(self, name, good, bad=(), odd=()):
        """``bad``/``odd``: lists of ``(tag, maker)``, ``maker(rng)`` -> value."""
        self.args[name] = good
        self._alts[name] = (list(bad), list(odd))
        return good

    def finish(self):
        """Apply the mode; returns ``(values, kind, names, tags)``."""
        rng = self.rng
        kind, names, tags = "good", [], []
        pool = "bad" if self.mode == "bad" else ("odd" if self.mode == "odd" else None)
        if pool:
            idx = 0 if pool == "bad" else 1
            cands = [n for n, alts in self._alts.items() if alts[idx]]
            if cands:
                k = 2 if (pool == "bad" and len(cands) > 1 and rng.random() < 0.15) else 1
                for n in rng.choice(cands, size=k, replace=False):
                    tag, maker = self._alts[n][idx][int(rng.integers(len(self._alts[n][idx])))]
                    self.args[n] = value = maker(rng)
                    names.append(n)
                    tags.append(f"{n}:{tag}")
                    if isinstance(value, (str, os.PathLike)) and len(str(value)) >= 3:
                        names.append("=" + str(value))   # a message may name a path or name by its value
                    elif isinstance(value, dict):        # ... or the offending key of a dict
                        names.extend("=" + str(k) for k in value if len(str(k)) >= 1)
                kind = pool
        return dict(self.args), kind, tuple(names), tuple(tags)


_REGISTRY: list[tuple[str, float, Callable]] = []


def entry(name: str, weight: float = 1.0):
    """Register ``gen(rng, ctx) -> Case`` for entry ``name``; ``weight`` sets its share of cases."""
    def deco(fn):
        _REGISTRY.append((name, weight, fn))
        return fn
    return deco


def entries() -> list[str]:
    """Names of the entries a plain run draws from (weight > 0)."""
    _load()
    return [n for n, w, _ in _REGISTRY if w > 0]


def _load():
    if not _REGISTRY:
        from . import cases_io, cases_model, cases_optics, cases_sampling, cases_selftest  # noqa: F401 - they register


def make_case(seed: int, index: int, ctx, only: set | None = None) -> Case:
    """The case ``index`` of the run ``seed``: the same in every process."""
    _load()
    reg = [r for r in _REGISTRY if only is None or r[0] in only]
    rng = np.random.default_rng([seed, index])
    w = np.array([r[1] for r in reg], dtype=float)
    if w.sum() == 0:   # only weight-0 entries asked for by name
        w[:] = 1.0
    name, _, gen = reg[int(rng.choice(len(reg), p=w / w.sum()))]
    case = gen(rng, ctx)
    case.entry = case.entry or name
    return case


def call_desc(fn: str, values: dict) -> str:
    return f"{fn}(" + ", ".join(f"{k}={describe(v)}" for k, v in values.items()) + ")"


# The core names a stack's hops by position: "layer 2: distance ..." is distances[2], "input hop: ..."
# is input_distance / input_tilt. Those count as naming the argument.
ALIASES = {"distances": {"distance"}, "tilts": {"tilt"}, "input_distance": {"input hop"},
           "input_tilt": {"input hop"}}


def _names_in(names, msg: str) -> bool:
    low = msg.lower()
    for n in names:
        if n.startswith("="):
            if n[1:] in msg:
                return True
            continue
        base = re.sub(r"\[.*$", "", n).lower()
        words = {base} | ALIASES.get(base, set())
        if any(re.search(rf"(?<![a-z0-9_]){re.escape(w)}(?![a-z0-9_])", low) for w in words):
            return True
    return False


def judge(case: Case) -> tuple[str, str]:
    """Run ``case``; ``(outcome, detail)``."""
    try:
        with np.errstate(all="ignore"):
            result = case.call()
    except case.allowed as exc:
        msg = f"{type(exc).__name__}: {exc}"
        if case.kind == "good":
            return "rejected_good", msg
        if case.names and not isinstance(exc, MemoryError) and not _names_in(case.names, str(exc)):
            return "bad_message", f"{msg}  [should name {', '.join(n for n in case.names if n[:1] != '=')}]"
        return "clean_error", ""
    except Exception as exc:  # noqa: BLE001 - classifying is the point
        return "bad_exception", f"{type(exc).__name__}: {str(exc)[:300]}"
    if case.kind == "bad":
        return "accepted_bad", f"returned {describe(result) if not isinstance(result, tuple) else tuple(map(describe, result))}"
    if case.check is not None:
        try:
            with np.errstate(all="ignore"):
                problem = case.check(result)
        except Exception as exc:  # noqa: BLE001
            return "harness_error", f"check failed: {type(exc).__name__}: {exc}"
        if problem:
            return problem
    return "ok", ""


# ------------------------------------------------------------------------------- checks
def expect_array(result, shape, dtype, finite=True, name="result") -> tuple | None:
    if not isinstance(result, np.ndarray):
        return "wrong_shape", f"{name} is {type(result).__name__}, not an ndarray"
    if tuple(result.shape) != tuple(shape) or result.dtype != np.dtype(dtype):
        return "wrong_shape", f"{name} is {result.dtype} {list(result.shape)}, expected {np.dtype(dtype)} {list(shape)}"
    if finite and not all_finite(result):
        return "nonfinite", f"{name} has {int(np.count_nonzero(~np.isfinite(result)))} NaN/Inf values from finite inputs"
    return None


def expect_close(got, want, rtol, name="result", scale=None) -> tuple | None:
    """Relative L2 error vs the reference, relative to ``scale`` (default: the reference's norm;
    pass the input's norm where the output may cancel out, e.g. a dark camera)."""
    got = np.asarray(got, dtype=np.complex128)
    want = np.asarray(want, dtype=np.complex128)
    scale = max(float(np.linalg.norm(want.ravel())), float(scale or 0.0))
    err = float(np.linalg.norm((got - want).ravel()))
    if not err <= rtol * max(scale, 1e-300) + 1e-300:
        return "wrong_value", f"{name}: relative error {err / max(scale, 1e-300):.3g} > {rtol:g} vs the NumPy reference"
    return None


def first_problem(*problems):
    for p in problems:
        if p:
            return p
    return None


@dataclass
class Context:
    """Per-process things cases share (built the same way in every worker)."""

    tmp: Any = None
    cache: dict = field(default_factory=dict)

    def get(self, key, make):
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]
