"""Compiled instances made on first use, one per precision (and device): each one plans its FFTs,
and most runs use a single precision."""

from __future__ import annotations

import threading

import numpy as np

_SUFFIX = {np.dtype(np.complex64): "32", np.dtype(np.complex128): "64"}


class PerPrecision:
    """``get(dtype, device)`` returns ``make(suffix, device)`` for a complex dtype, made once."""

    def __init__(self, make):
        self._make, self._made, self._lock = make, {}, threading.Lock()

    def get(self, dtype, device=None):
        key = (np.dtype(dtype), device)
        with self._lock:
            obj = self._made.get(key)
            if obj is None:
                obj = self._made[key] = self._make(_SUFFIX[key[0]], device)
            return obj
