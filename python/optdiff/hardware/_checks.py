"""Parameter checks of the bench parts: every physically impossible value is a ValueError that
names the parameter (``Part.name = value: why``), raised when the part is built."""

from __future__ import annotations

import math
import operator

import numpy as np


def _fail(name: str, value, want: str) -> ValueError:
    if isinstance(value, np.generic):   # say 0.2, not np.float64(0.2)
        value = value.item()
    return ValueError(f"{name} = {value!r}: {want}")


def real(value, name: str, lo: float | None = None, hi: float | None = None,
         lo_open: bool = False, hi_open: bool = False) -> float:
    """A finite real number within [lo, hi] (open ends where asked)."""
    if isinstance(value, (bool, np.bool_, str, bytes)) or value is None:
        raise _fail(name, value, "must be a real number")
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise _fail(name, value, "must be a finite real number") from None
    if not math.isfinite(v):
        raise _fail(name, value, "must be finite")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise _fail(name, value, f"must be {'>' if lo_open else '>='} {lo:g}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise _fail(name, value, f"must be {'<' if hi_open else '<='} {hi:g}")
    return v


def positive(value, name: str, hi: float | None = None) -> float:
    return real(value, name, lo=0.0, lo_open=True, hi=hi)


def integer(value, name: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise _fail(name, value, "must be an integer")
    try:
        v = operator.index(value)
    except TypeError:
        raise _fail(name, value, "must be an integer") from None
    if lo is not None and v < lo:
        raise _fail(name, value, f"must be >= {lo}")
    if hi is not None and v > hi:
        raise _fail(name, value, f"must be <= {hi}")
    return v


def pair(value, name: str, bound: float | None = None) -> tuple[float, float]:
    """(x, y): two finite reals, each within +-bound."""
    if isinstance(value, (str, bytes)):
        raise _fail(name, value, "must be a pair (x, y)")
    try:
        a, b = value
    except (TypeError, ValueError):
        raise _fail(name, value, "must be a pair (x, y)") from None
    lo = None if bound is None else -bound
    return (real(a, f"{name}[0]", lo, bound), real(b, f"{name}[1]", lo, bound))


def int_pair(value, name: str, lo: int = 1, hi: int | None = None) -> tuple[int, int]:
    if isinstance(value, (str, bytes)):
        raise _fail(name, value, "must be a pair of integers")
    try:
        a, b = value
    except (TypeError, ValueError):
        raise _fail(name, value, "must be a pair of integers (rows, cols)") from None
    return (integer(a, f"{name}[0]", lo, hi), integer(b, f"{name}[1]", lo, hi))


def flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise _fail(name, value, "must be true or false")
    return bool(value)


def choice(value, name: str, choices: tuple) -> str:
    if not isinstance(value, str) or value not in choices:
        raise _fail(name, value, f"must be one of {', '.join(map(repr, choices))}")
    return value
