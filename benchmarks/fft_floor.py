"""The FFT floor: only the batched 2D FFTs the algorithm needs, on the padded grid.

Forward:  2 (L+1) batched FFTs of [B, G, G] complex64 (one forward + one inverse per propagation).
Training: 4 (L+1) (the forward's plus an adjoint propagation per hop).  An implementation that
skips the gradient of the input field needs only 2 (L+1) + 2 L; the driver reports that count
too (``train_min``, scaled from the measured training floor).

Measured with pyFFTW in-place plans (FFTW_MEASURE by default, ``--floor-planner patient``
optional), threads = t: the best a plain batched FFTW call can do; no multiplies, no copies.
"""
from __future__ import annotations

import numpy as np

from benchmarks.common import Case
from benchmarks.peers_pyfftw import inplace_plans, load_wisdom, save_wisdom


class Tool:
    name = "fft_floor"
    checked = False  # computes FFTs only: nothing to compare

    def __init__(self, case: Case, planner: str = "measure", wisdom: str | None = None):
        self.case, self.planner, self.wisdom = case, planner, wisdom

    def setup(self, field, phases, target):
        c = self.case
        load_wisdom(self.wisdom)
        self.buf, self.fwd, self.inv = inplace_plans((c.batch, c.grid, c.grid), c.threads,
                                                     self.planner)
        save_wisdom(self.wisdom)
        # FFTW's run time does not depend on the data; unnormalised forward/inverse pairs grow
        # the values by G^2 each, so a zero buffer keeps every repeat free of inf/NaN.
        self.buf[...] = 0

    def _pairs(self, k):
        f, i = self.fwd.execute, self.inv.execute
        for _ in range(k):
            f()
            i()

    def forward(self):
        self._pairs(self.case.num_props)

    def train(self):
        self._pairs(2 * self.case.num_props)

    def setup_ddpm(self, x, step):
        pass

    def ddpm_step(self):
        self._pairs(self.case.num_props)

    @staticmethod
    def to_numpy(a):
        return np.asarray(a)


def fft_counts(case: Case) -> dict:
    L = case.layers
    return {"forward": 2 * (L + 1), "train": 4 * (L + 1), "train_min": 2 * (L + 1) + 2 * L}
