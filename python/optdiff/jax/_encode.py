"""Hops as the 7 float64 values the FFI handlers take, and the checks of JAX arguments.

A hop is (wavelength, pitch, distance, method code, padding, tilt_x, tilt_y); a stack's hops are
its input hop (if any) followed by one hop per layer, flattened into one float64 attribute.
"""

from __future__ import annotations

import numpy as np

from optdiff.optics.specs import HopSpec, StackSpec

METHOD_CODES = {"as": 0, "angular_spectrum": 0, "bl-as": 1, "band_limited": 1, "fresnel": 2}

COMPLEX_OF = {np.dtype(np.float32): np.dtype(np.complex64), np.dtype(np.float64): np.dtype(np.complex128)}
REAL_OF = {c: r for r, c in COMPLEX_OF.items()}


def hop_values(h: HopSpec) -> list[float]:
    return [h.wavelength, h.pitch, h.distance, float(METHOD_CODES[h.method]), float(h.padding), *h.tilt]


def stack_values(spec: StackSpec) -> np.ndarray:
    hops = ([spec.input_hop] if spec.input_hop is not None else []) + list(spec.hops)
    return np.array([v for h in hops for v in hop_values(h)], dtype=np.float64)


def _dtype(x, name):
    dt = getattr(x, "dtype", None)
    if dt is None:
        raise TypeError(f"{name} must be a JAX or NumPy array, got {type(x).__name__}")
    return np.dtype(dt)


def check_field(field, n: int, name: str = "field"):
    """A complex64/complex128 (or real float32/float64 amplitude) array [..., n, n]; returns its complex dtype."""
    dt = _dtype(field, name)
    if dt in REAL_OF:
        cdt = dt
    elif dt in COMPLEX_OF:
        cdt = COMPLEX_OF[dt]
    else:
        raise TypeError(f"{name} must be complex64/complex128 (or a real float32/float64 amplitude), "
                        f"got {dt} (convert with .astype(jnp.complex64) first)")
    shape = tuple(field.shape)
    if len(shape) < 2 or shape[-2:] != (n, n):
        raise ValueError(f"{name} must have shape [..., {n}, {n}] to match the grid size n={n}, got {shape}")
    return cdt


def check_phases(phases, layers: int, n: int, field_complex_dtype):
    dt = _dtype(phases, "phases")
    want = REAL_OF[np.dtype(field_complex_dtype)]
    if dt != want:
        raise TypeError(f"phases must have dtype {want} to match the field's {field_complex_dtype}, got {dt}")
    if tuple(phases.shape) != (layers, n, n):
        raise ValueError(f"phases must have shape (L, n, n) = ({layers}, {n}, {n}), got {tuple(phases.shape)}")
