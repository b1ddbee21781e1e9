"""Python-side argument checks of the optical core: only what C++ cannot see.

Types and Python values that do not fit a C++ parameter are checked here; every check of a
value's meaning (ranges, finiteness, physics) is made once, in C++, for every backend. A scalar
parameter of the wrong kind (a float where an integer is needed, None, a string) is a bad value:
ValueError naming it, like any other bad parameter value. Arrays of the wrong dtype: TypeError.
"""

from __future__ import annotations

import operator

import numpy as np

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
REAL_OF = {np.dtype(np.complex64): np.dtype(np.float32), np.dtype(np.complex128): np.dtype(np.float64)}
COMPLEX_OF = {r: c for c, r in REAL_OF.items()}
U64 = 1 << 64
_I64 = 1 << 63


def integer(value, name: str) -> int:
    """An exact integer (bool, float and other truncating types refused)."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None


def grid_size(n) -> int:
    try:
        n = integer(n, "n")
    except ValueError:
        raise ValueError(f"n must be an integer number of pixels per side (2 to 16384), got {n!r}") from None
    if not 0 <= n < _I64:
        raise ValueError(f"n must be between 2 and 16384 pixels per side, got {n}")
    return n


def nthreads(value: int | None) -> int:
    """0 means the default thread count."""
    if value is None:
        return 0
    n = integer(value, "nthreads")
    if n < 1 or n >= 1 << 31:
        raise ValueError(f"nthreads must be a positive integer or None, got {value!r}")
    return n


def u64(value, name: str) -> int:
    v = integer(value, name)
    if not 0 <= v < U64:
        raise ValueError(f"{name} must be an integer in [0, 2**64), got {value!r}")
    return v


def real(value, name: str) -> float:
    """A Python float; its meaning (sign, finiteness) is checked in C++."""
    if isinstance(value, (bool, np.bool_)) or value is None or isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} must be a finite real number, got {value!r} (too large for a float)") from None
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {type(value).__name__} {value!r}") from None


def pair(value, name: str) -> tuple[float, float]:
    try:
        a, b = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of angles (x, y) in radians, got {value!r}") from None
    return real(a, f"{name}[0]"), real(b, f"{name}[1]")


def dtype(value, allowed, name: str = "dtype") -> np.dtype:
    """``np.dtype(value)``, which must be one of ``allowed``; TypeError naming ``name`` otherwise."""
    kinds = " or ".join(str(np.dtype(a)) for a in allowed)
    try:
        d = np.dtype(value)
    except TypeError:
        raise TypeError(f"{name} must be {kinds}, got {value!r}") from None
    if d not in allowed:
        raise TypeError(f"{name} must be {kinds}, got {d}")
    return d
