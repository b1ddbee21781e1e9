"""Per-time-set gradient accumulation shared by the finetuning objectives."""

from __future__ import annotations

import numpy as np

__all__ = ["add_grads", "grad_norm"]


def add_grads(acc: dict, m: int, grads: dict) -> None:
    """``acc[m][name] += grads[name]`` (creating the entries)."""
    slot = acc.setdefault(int(m), {})
    for k, v in grads.items():
        if k in slot:
            slot[k] = slot[k] + v
        else:
            slot[k] = np.array(v, dtype=np.float64, copy=True)


def grad_norm(acc: dict) -> float:
    return float(np.sqrt(sum(float(np.sum(v * v)) for g in acc.values() for v in g.values())))
