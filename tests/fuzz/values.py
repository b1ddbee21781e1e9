"""Value pools for the fuzz cases: bad scalars of every kind, and arrays good, odd and broken.

A *bad* value is certainly invalid for the argument (the call must raise, naming it); an *odd*
value may or may not be accepted (then the result must still be finite and well shaped); a
*good* value must work.
"""

from __future__ import annotations

import numpy as np

NAN, INF = float("nan"), float("inf")


class Opaque:
    """An object no entry point can use."""

    def __repr__(self):
        return "Opaque()"


# Things that are not numbers at all (bad wherever a number is expected).
NOT_NUMBERS = [None, "1", "", b"1", [1.0], (1,), {}, Opaque(), complex(1, 1), np.array([1.0, 2.0])]
# Not finite.
NON_FINITE = [NAN, INF, -INF, np.float32("nan"), np.float64("-inf")]
# Integers beyond any machine type.
HUGE_INTS = [2**64 + 4, 10**400, -(10**400), 2**63, 2**64, -(2**63) - 1]
# Values that are numbers but never integers.
NON_INTEGERS = [1.5, 2.0, np.float32(3.0), True, False, np.bool_(True), 1e300, -0.5]


def pick(rng, items):
    return items[int(rng.integers(len(items)))]


def bad_real(rng, also=()):
    """A value no real-number parameter accepts."""
    return pick(rng, NOT_NUMBERS + NON_FINITE + [True, False, np.bool_(False)] + list(also))


def bad_integer(rng, also=()):
    return pick(rng, NOT_NUMBERS + NON_INTEGERS + NON_FINITE + list(also))


def bad_u64(rng):
    return pick(rng, NOT_NUMBERS + NON_INTEGERS + [-1, -(2**63), 2**64, 2**64 + 4, 10**400])


def absurd_real(rng):
    """Finite but physically absurd: may be refused or accepted (then outputs must stay finite)."""
    return pick(rng, [1e300, -1e300, 1.7e308, 5e-324, -5e-324, 1e-300, 1e30, 0.0, -0.0, 2.2e-308, 1e-30,
                      np.float32(1e30), np.finfo(np.float64).max])


# --------------------------------------------------------------------------------- arrays
def random_complex(rng, shape, dtype, scale=1.0):
    return ((rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * scale).astype(dtype)


def random_real(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def unaligned_copy(a: np.ndarray) -> np.ndarray:
    """A copy of ``a`` at an odd address (C-contiguous, writeable, ``flags.aligned`` False)."""
    buf = bytearray(a.nbytes + 1)
    u = np.frombuffer(buf, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    u[...] = a
    return u


def slack_copy(a: np.ndarray) -> np.ndarray:
    """A copy of ``a`` that is the start of a buffer one element longer, so that ``overlapping(a)``
    (the same buffer shifted by one element) really overlaps it."""
    buf = np.zeros(a.size + 1, a.dtype)
    v = buf[:-1].reshape(a.shape)
    v[...] = a
    return v


def overlapping(a: np.ndarray, dtype=None, shape=None) -> np.ndarray:
    """A view of ``a``'s memory shifted by one element of ``dtype`` (``a`` from :func:`slack_copy`)."""
    dtype = np.dtype(dtype or a.dtype)
    shape = a.shape if shape is None else shape
    base = a.base if a.base is not None else a
    raw = base.reshape(-1).view(np.uint8)
    k = int(np.prod(shape)) * dtype.itemsize
    if raw.size < dtype.itemsize + k:
        raise ValueError("no room for an overlapping view: make the array with slack_copy")
    return raw[dtype.itemsize:dtype.itemsize + k].view(dtype).reshape(shape)


def readonly_copy(a: np.ndarray) -> np.ndarray:
    b = a.copy()
    b.setflags(write=False)
    return b


def noncontiguous_copy(a: np.ndarray) -> np.ndarray:
    """Same values, strided (every other element of a twice-as-large last axis)."""
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


def fortran_copy(a: np.ndarray) -> np.ndarray:
    return np.asfortranarray(a) if a.ndim >= 2 and a.shape[-1] > 1 and a.shape[-2] > 1 else noncontiguous_copy(a)


def with_nonfinite(rng, a: np.ndarray) -> np.ndarray:
    b = a.copy()
    v = pick(rng, [np.nan, np.inf, -np.inf])
    idx = tuple(int(rng.integers(s)) for s in b.shape)
    if np.iscomplexobj(b):
        b[idx] = pick(rng, [complex(v, 0.0), complex(0.0, v), complex(v, v)])
    else:
        b[idx] = v
    return b


def wrong_dtype(rng, a: np.ndarray, allowed) -> np.ndarray:
    """The values in a dtype not in ``allowed``."""
    choices = [np.int32, np.int64, np.uint8, np.bool_, np.float16, np.float32, np.float64,
               np.complex64, np.complex128, np.clongdouble, np.longdouble, object]
    choices = [d for d in choices if np.dtype(d) not in {np.dtype(x) for x in allowed}]
    d = np.dtype(pick(rng, choices))
    with np.errstate(all="ignore"):
        if d.kind == "O":
            return a.astype(object)
        if np.iscomplexobj(a) and d.kind not in "c":
            return a.real.astype(d)
        return a.astype(d)


def wrong_rank(rng, a: np.ndarray) -> np.ndarray:
    """0-d, 1-d, 4-d or 5-d versions of ``a``."""
    k = int(rng.integers(4))
    if k == 0:
        return np.asarray(a.reshape(-1)[0])
    if k == 1:
        return np.ascontiguousarray(a.reshape(-1))
    if k == 2:
        return np.ascontiguousarray(a.reshape((1,) * (4 - a.ndim) + a.shape))
    return np.ascontiguousarray(a.reshape((1,) * (5 - a.ndim) + a.shape))


def describe(v) -> str:
    """Short description of a value for case listings."""
    if isinstance(v, np.ndarray):
        flags = []
        if not v.flags.c_contiguous:
            flags.append("non-contiguous")
        if not v.flags.aligned:
            flags.append("unaligned")
        if not v.flags.writeable:
            flags.append("read-only")
        if v.dtype.kind in "fc" and v.size and not np.all(np.isfinite(v)):
            flags.append("non-finite")
        if v.dtype.kind in "fc" and v.size and np.all(np.isfinite(v)):
            m = float(np.max(np.abs(v)))
            if m > 1e6:
                flags.append(f"max|v|={m:.3g}")
        return f"<{v.dtype} {list(v.shape)}{' ' + ' '.join(flags) if flags else ''}>"
    if isinstance(v, (list, tuple)) and len(v) > 6:
        return f"<{type(v).__name__} of {len(v)}>"
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def all_finite(*arrays) -> bool:
    for a in arrays:
        if isinstance(a, np.ndarray) and a.dtype.kind in "fc" and a.size and not np.all(np.isfinite(a)):
            return False
    return True
