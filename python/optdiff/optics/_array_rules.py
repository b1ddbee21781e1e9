"""Shape and dtype rules for arrays the compiled code cannot inspect (device arrays).

The CPU binding checks NumPy arrays itself (``csrc/python/bindings.cpp``); the CUDA binding takes
raw device addresses, so its arrays are checked here, with the CPU binding's words: one message
per mistake, whatever the backend.
"""

from __future__ import annotations

import numpy as np


def shape_str(shape) -> str:
    return str(tuple(int(s) for s in shape))


def dtype(name: str, got, want) -> None:
    got, want = np.dtype(got), np.dtype(want)
    if got != want:
        raise TypeError(f"{name} must have dtype {want}, got {got} (convert with .astype(np.{want}) first)")


def batch(name: str, shape, n: int) -> int:
    """A field batch [B, n, n] or one [n, n]; returns B."""
    if len(shape) not in (2, 3):
        raise ValueError(f"{name} must have shape [B, n, n] or [n, n] with n = {n}, got rank {len(shape)} "
                         f"shape {shape_str(shape)}")
    if tuple(shape[-2:]) != (n, n):
        raise ValueError(f"{name} must end in ({n}, {n}) to match the propagator's n, got shape {shape_str(shape)}")
    b = int(shape[0]) if len(shape) == 3 else 1
    if b == 0:
        raise ValueError(f"{name} has a batch of 0 samples; pass at least one field")
    return b


def same_shape(name: str, shape, refname: str, refshape) -> None:
    if tuple(shape) != tuple(refshape):
        raise ValueError(f"{name} must have the shape of {refname} {shape_str(refshape)}, got {shape_str(shape)}")


def phases(shape, n: int, L: int) -> None:
    if tuple(shape) != (L, n, n):
        raise ValueError(f"phases must have shape (L, n, n) = ({L}, {n}, {n}), got {shape_str(shape)}")


def writeable(name: str, array) -> None:
    if isinstance(array, np.ndarray) and not array.flags.writeable:
        raise ValueError(f"{name} must be writeable")


def loss_not_finite(real) -> str:
    return ("the loss is not finite: field or target contains NaN or infinite values, or the intensity "
            f"overflows {np.dtype(real)} (scale the field down)")


def overlap(a, b, an: str, bn: str, allow_same: bool = True) -> None:
    """Partial overlap of host arrays would corrupt results; the same array means in place
    (unless ``allow_same`` is false: an output must not replace an input read throughout)."""
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)) or a.nbytes == 0 or b.nbytes == 0:
        return
    a0, b0 = a.__array_interface__["data"][0], b.__array_interface__["data"][0]
    if allow_same and a0 == b0 and a.nbytes == b.nbytes:
        return
    if a0 < b0 + b.nbytes and b0 < a0 + a.nbytes:
        raise ValueError(f"{an} and {bn} overlap in memory" + (" without being the same array" if allow_same else ""))


def gradients_overflow(real) -> str:
    return (f"the gradients overflow {np.dtype(real)}: field or grad_intensity too large (scale them down)")


def update_overflows(real, in_place: bool) -> str:
    return (("x or eps contains NaN or infinite values, or " if in_place else "") +
            f"the update overflows {np.dtype(real)} (c1, c2, sigma, eps_scale, eps_offset or the values too "
            "large); out holds the non-finite result")


def finite_message(name: str) -> str:
    return f"{name} contains NaN or infinite values"
