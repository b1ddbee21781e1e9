"""Peer (a): NumPy + scipy.fft (workers = threads) with a hand-written adjoint.

Written the way a competent NumPy user would: ``fft2(..., s=(2n, 2n))`` does the top-left zero
padding, the inverse FFT is unnormalised (``norm="forward"``) with 1/grid^2 folded into H, the
inverse transform overwrites its input, and the tape keeps the modulated fields w_l.
"""
from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from benchmarks.common import Case, DDPMStep, ddpm_numpy_update, loss_grad_scale, transfer_function


class NumpyStack:
    name = "numpy"

    def __init__(self, case: Case, dtype=np.complex64, workers: int | None = None):
        self.case = case
        self.dtype = np.dtype(dtype)
        self.rdtype = np.float32 if self.dtype == np.complex64 else np.float64
        self.workers = workers or case.threads
        G = case.grid
        self.H = transfer_function(G, case.wavelength, case.pitch, case.distance,
                                   dtype=self.dtype, scale=1.0 / (G * G))
        self.Hc = np.conj(self.H)

    # -- propagation and its exact adjoint
    def _prop(self, w: np.ndarray, H: np.ndarray) -> np.ndarray:
        n, G = self.case.n, self.case.grid
        if G == n:
            X = sfft.fft2(w, workers=self.workers)
        else:  # zero-pad to G x G at the bottom/right = field embedded top-left
            X = sfft.fft2(w, s=(G, G), workers=self.workers)
        X *= H
        u = sfft.ifft2(X, norm="forward", workers=self.workers, overwrite_x=True)
        if G != n:
            u = u[..., :n, :n]
        return u

    def _masks(self, phases: np.ndarray) -> np.ndarray:
        return np.exp(1j * phases.astype(self.rdtype, copy=False)).astype(self.dtype, copy=False)

    # -- public API shared by all tools
    def forward(self, field: np.ndarray, phases: np.ndarray) -> np.ndarray:
        t = self._masks(phases)
        u = self._prop(field, self.H)
        for l in range(self.case.layers):
            u = self._prop(u * t[l], self.H)
        return u.real * u.real + u.imag * u.imag

    def train(self, field: np.ndarray, phases: np.ndarray, target: np.ndarray):
        L = self.case.layers
        t = self._masks(phases)
        u = self._prop(field, self.H)
        tape = []
        for l in range(L):
            w = u * t[l]
            tape.append(w)
            u = self._prop(w, self.H)
        I = u.real * u.real + u.imag * u.imag
        diff = I - target
        loss = float(np.mean(diff * diff))
        # dLoss/du (gradient convention d/dRe + i d/dIm) = 2 u dLoss/dI
        g = u * (diff * self.rdtype(2.0 * loss_grad_scale(self.case)))
        gphi = np.empty((L,) + phases.shape[1:], dtype=self.rdtype)
        for l in range(L - 1, -1, -1):
            gw = self._prop(g, self.Hc)       # dLoss/dw_l = P^H dLoss/du_{l+1}
            w = tape[l]
            # dLoss/dphi = Im(conj(w) gw), summed over the batch
            gphi[l] = (w.real * gw.imag - w.imag * gw.real).sum(axis=0)
            if l > 0:
                g = gw * np.conj(t[l])
        return I, gphi, loss


class Tool:
    """Benchmark adapter: inputs stay in NumPy, outputs are NumPy."""
    name = "numpy"

    def __init__(self, case: Case):
        self.case = case

    def setup(self, field, phases, target):
        self.stack = NumpyStack(self.case)
        self.field, self.phases, self.target = field, phases, target

    def forward(self):
        return self.stack.forward(self.field, self.phases)

    def train(self):
        return self.stack.train(self.field, self.phases, self.target)

    def setup_ddpm(self, x, step: DDPMStep):
        self.x, self.step, self.rng = x, step, np.random.default_rng(0)

    def ddpm_step(self):
        I = self.stack.forward(self.x.astype(np.complex64), self.phases)
        return ddpm_numpy_update(self.x, I, self.step, self.rng)

    @staticmethod
    def to_numpy(a):
        return np.asarray(a)
