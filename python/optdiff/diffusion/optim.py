"""Adam (Kingma & Ba 2015) over named NumPy arrays with a leading *set* axis, and LR schedules.

Every parameter array of a time-aware model has shape ``[M, ...]`` (one slice per layer set).
:class:`Adam` updates one set's slice at a time and keeps a step counter per set, so sets
trained interleaved or one after another get exactly the same updates as if each had its
own optimiser. The moments are stored in float64 (float32 for float32 parameters) and can be
saved / restored bit-exactly with :meth:`Adam.state_arrays` / :meth:`Adam.load_state_arrays`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = ["Adam", "lr_at"]


class Adam:
    """Adam over ``params`` (``{name: array [M, ...]}``, updated in place).

    Parameters
    ----------
    params
        Arrays updated in place by :meth:`step`.
    sets
        M (the leading axis length of every array).
    beta1, beta2, eps
        The usual Adam constants.
    """

    def __init__(self, params: Mapping[str, np.ndarray], sets: int, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8):
        self.params = params
        self.sets = int(sets)
        for name, p in params.items():
            if p.shape[0] != self.sets:
                raise ValueError(f"parameter {name!r} has leading axis {p.shape[0]}, expected {self.sets} sets")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = np.zeros(self.sets, dtype=np.int64)

    def step(self, set_index: int, grads: Mapping[str, np.ndarray], lrs: Mapping[str, float]) -> None:
        """One Adam update of every parameter's slice ``[set_index]`` with the given gradients.

        ``lrs`` maps each parameter name to its learning rate (0 freezes it).
        """
        s = int(set_index)
        self.t[s] += 1
        t = int(self.t[s])
        bc1 = 1.0 - self.beta1 ** t
        bc2 = 1.0 - self.beta2 ** t
        for name, g in grads.items():
            p = self.params[name]
            g = np.asarray(g, dtype=np.float64)
            if g.shape != p.shape[1:]:
                raise ValueError(f"gradient for {name!r} has shape {g.shape}, expected {p.shape[1:]}")
            m = self.m[name][s].astype(np.float64)
            v = self.v[name][s].astype(np.float64)
            m = self.beta1 * m + (1.0 - self.beta1) * g
            v = self.beta2 * v + (1.0 - self.beta2) * (g * g)
            self.m[name][s] = m
            self.v[name][s] = v
            lr = float(lrs.get(name, 0.0))
            if lr == 0.0:
                continue
            upd = lr * (m / bc1) / (np.sqrt(v / bc2) + self.eps)
            p[s] = p[s].astype(np.float64) - upd

    def state_arrays(self) -> dict:
        out = {"adam_t": self.t.copy()}
        for k in self.params:
            out[f"adam_m.{k}"] = self.m[k]
            out[f"adam_v.{k}"] = self.v[k]
        return out

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        t = np.asarray(arrays["adam_t"])
        if t.shape != self.t.shape:
            raise ValueError(f"optimizer state has {t.shape[0]} sets, expected {self.sets}")
        self.t[...] = t
        for k in self.params:
            for store, prefix in ((self.m, "adam_m."), (self.v, "adam_v.")):
                a = np.asarray(arrays[prefix + k])
                if a.shape != store[k].shape:
                    raise ValueError(f"optimizer state {prefix + k} has shape {a.shape}, expected {store[k].shape}")
                store[k][...] = a


def lr_at(step: int, total: int, base: float, schedule: str = "cosine", warmup: int = 0,
          min_factor: float = 0.05) -> float:
    """Learning rate at (0-based) ``step`` of ``total`` for one set.

    Linear warm-up over ``warmup`` steps, then ``constant`` or ``cosine`` decay from ``base`` to
    ``min_factor * base`` at the last step.
    """
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant" or total <= warmup + 1:
        return base
    if schedule != "cosine":
        raise ValueError(f"unknown lr schedule {schedule!r}")
    frac = min(max((step - warmup) / (total - warmup - 1), 0.0), 1.0)
    return base * (min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * frac)))
