"""The folded geometry as the digital twin sees it: hop distances, hop tilts and landing points of
the lattice frame (:meth:`FoldedPropagation.layout`) as functions of the alignment parameters,
with their exact Jacobians (forward-mode derivatives of the ray formulas, no finite differences).

The parameters are the vector ``p = [z_gap, mirror_x, mirror_y, beam_x, beam_y, offset_0x,
offset_0y, ..., offset_(L-1)y]`` (metres, radians). The design fold angle stays fixed (the beam
keeps its design direction; a gap error shows as a walk along the fold), as in the emulated bench.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Dual", "FoldGeometry", "fold_geometry", "geometry_size"]


class Dual:
    """A value with its derivatives with respect to P parameters: ``v`` shape S, ``d`` shape S + (P,)."""

    __slots__ = ("v", "d")

    def __init__(self, v, d):
        self.v = np.asarray(v, dtype=np.float64)
        self.d = np.asarray(d, dtype=np.float64)

    @staticmethod
    def const(v, P: int) -> Dual:
        v = np.asarray(v, dtype=np.float64)
        return Dual(v, np.zeros(v.shape + (P,)))

    def _other(self, o) -> Dual:
        return o if isinstance(o, Dual) else Dual.const(o, self.d.shape[-1])

    def __add__(self, o):
        o = self._other(o)
        return Dual(self.v + o.v, self.d + o.d)

    __radd__ = __add__

    def __sub__(self, o):
        o = self._other(o)
        return Dual(self.v - o.v, self.d - o.d)

    def __rsub__(self, o):
        return self._other(o) - self

    def __neg__(self):
        return Dual(-self.v, -self.d)

    def __mul__(self, o):
        o = self._other(o)
        return Dual(self.v * o.v, self.d * o.v[..., None] + o.d * self.v[..., None])

    __rmul__ = __mul__

    def __truediv__(self, o):
        o = self._other(o)
        return Dual(self.v / o.v, (self.d * o.v[..., None] - o.d * self.v[..., None]) / (o.v ** 2)[..., None])

    def __getitem__(self, i):
        return Dual(self.v[i], self.d[i])


def tan(x: Dual) -> Dual:
    t = np.tan(x.v)
    return Dual(t, x.d * (1.0 + t * t)[..., None])


def arctan(x: Dual) -> Dual:
    return Dual(np.arctan(x.v), x.d / (1.0 + x.v * x.v)[..., None])


def stack(items) -> Dual:
    return Dual(np.stack([i.v for i in items]), np.stack([i.d for i in items]))


def geometry_size(layers: int) -> int:
    """Length of the geometry parameter vector for ``layers`` patches."""
    return 5 + 2 * layers


@dataclass(frozen=True)
class FoldGeometry:
    """Values and Jacobians (last axis: the P geometry parameters)."""

    distances: np.ndarray      # [L]
    d_distances: np.ndarray    # [L, P]
    tilts: np.ndarray          # [L, 2]
    d_tilts: np.ndarray        # [L, 2, P]
    landing: np.ndarray        # [L + 1, 2]
    d_landing: np.ndarray      # [L + 1, 2, P]


def fold_geometry(p, *, layers: int, pitch: float, patch_pitch: int, fold_angle: float,
                  camera_hop: float | None = None) -> FoldGeometry:
    """The lattice-frame layout of :class:`FoldedPropagation` (no mirror planes) at parameters ``p``.

    ``fold_angle`` is the design angle (fixed); ``camera_hop`` None means ``2 z_gap``.
    """
    L = layers
    p = np.asarray(p, dtype=np.float64)
    P = geometry_size(L)
    if p.shape != (P,):
        raise ValueError(f"geometry parameters: expected {P} values, got shape {p.shape}")
    var = Dual(p, np.eye(P))
    z, al, be = var[0], var[1:3], var[3:5]
    offs = [var[5 + 2 * j: 7 + 2 * j] for j in range(L)]
    th0 = np.array([fold_angle, 0.0])
    zc = 2.0 * z if camera_hop is None else Dual.const(camera_hop, P)
    second = [z] * (L - 1) + [zc - z]
    X = [Dual.const(np.zeros(2), P)]
    for j in range(L):
        a = be + 2.0 * j * al
        bounce = X[j] + z * tan(a + th0)
        X.append(bounce + second[j] * tan(a + 2.0 * al + th0))
    step = patch_pitch * pitch
    centres = np.zeros((L + 1, 2))
    centres[:L, 0] = np.arange(L) * step
    centres[L] = centres[L - 1] + (np.array([step, 0.0]) if camera_hop is None else camera_hop * np.tan(th0))
    landing = [X[j] - centres[j] - (offs[j] if j < L else 0.0) for j in range(L + 1)]
    hops = [2.0 * z] * (L - 1) + [zc]
    taus = [arctan((landing[j + 1] - landing[j]) / hops[j]) for j in range(L)]
    tilts = [taus[0]] + [taus[j] - taus[j - 1] for j in range(1, L)]
    d, t, y = stack(hops), stack(tilts), stack(landing)
    return FoldGeometry(d.v, d.d, t.v, t.d, y.v, y.d)
