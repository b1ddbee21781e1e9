"""Peer (c): pyFFTW with FFTW_MEASURE plans built once and reused (threads = t).

One aligned [B, G, G] complex64 work buffer with in-place forward/backward plans executed via
``FFTW.execute()`` (no per-call checks, no normalisation: 1/G^2 is folded into H).  The
modulation, the tape copy and the adjoint all run in place with NumPy ufuncs.
"""
from __future__ import annotations

import os

import numpy as np
import pyfftw

from benchmarks.common import Case, DDPMStep, ddpm_numpy_update, loss_grad_scale, transfer_function

PLANNER_FLAGS = {"measure": "FFTW_MEASURE", "patient": "FFTW_PATIENT",
                 "estimate": "FFTW_ESTIMATE", "exhaustive": "FFTW_EXHAUSTIVE"}


def load_wisdom(path: str | None) -> None:
    if path and os.path.exists(path):
        with open(path, "rb") as fh:
            data = fh.read()
        try:
            pyfftw.import_wisdom(tuple(data.split(b"\0SEP\0")))
        except Exception:  # stale/corrupt wisdom: plan from scratch
            pass


def save_wisdom(path: str | None) -> None:
    if not path:
        return
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(b"\0SEP\0".join(pyfftw.export_wisdom()))
    os.replace(tmp, path)


def inplace_plans(shape, threads: int, planner: str = "measure", dtype=np.complex64):
    """Aligned buffer plus in-place forward and backward 2D plans over its last two axes."""
    buf = pyfftw.empty_aligned(shape, dtype=dtype)
    flag = PLANNER_FLAGS[planner]
    fwd = pyfftw.FFTW(buf, buf, axes=(-2, -1), direction="FFTW_FORWARD", flags=(flag,),
                      threads=threads)
    inv = pyfftw.FFTW(buf, buf, axes=(-2, -1), direction="FFTW_BACKWARD", flags=(flag,),
                      threads=threads)
    buf[...] = 0  # planning may scribble over the buffer
    return buf, fwd, inv


class PyFFTWStack:
    name = "pyfftw"

    def __init__(self, case: Case, planner: str = "measure", train: bool = True):
        self.case = case
        B, n, G, L = case.batch, case.n, case.grid, case.layers
        self.buf, self.fwd, self.inv = inplace_plans((B, G, G), case.threads, planner)
        H = transfer_function(G, case.wavelength, case.pitch, case.distance,
                              dtype=np.complex64, scale=1.0 / (G * G))
        self.H, self.Hc = H, np.conj(H)
        self.view = self.buf[:, :n, :n]
        self.tape = np.empty((L, B, n, n), dtype=np.complex64) if train else None
        self.coef = np.empty((B, n, n), dtype=np.float32)

    def _zero_pad(self):
        n = self.case.n
        if self.case.padding != 1:
            self.buf[:, :n, n:] = 0
            self.buf[:, n:, :] = 0

    def _propagate(self, H):
        """buf (top-left n x n holds the field, padding zeroed) -> propagated field in `view`."""
        self.fwd.execute()
        self.buf *= H
        self.inv.execute()

    def _masks(self, phases):
        return np.exp(1j * phases)  # complex64 for float32 phases

    def forward(self, field, phases, keep_tape: bool = False):
        t = self._masks(phases)
        v = self.view
        v[...] = field
        self._zero_pad()
        self._propagate(self.H)
        for l in range(self.case.layers):
            v *= t[l]
            if keep_tape:
                self.tape[l] = v
            self._zero_pad()
            self._propagate(self.H)
        I = v.real * v.real
        I += v.imag * v.imag
        return I, t

    def train(self, field, phases, target):
        L = self.case.layers
        I, t = self.forward(field, phases, keep_tape=True)
        v = self.view
        diff = np.subtract(I, target, out=self.coef)
        loss = float(np.mean(diff * diff))
        diff *= np.float32(2.0 * loss_grad_scale(self.case))
        v *= diff                                   # dLoss/du_L
        gphi = np.empty((L,) + phases.shape[1:], dtype=np.float32)
        for l in range(L - 1, -1, -1):
            self._zero_pad()
            self._propagate(self.Hc)                # view = dLoss/dw_l
            w = self.tape[l]
            gphi[l] = (w.real * v.imag - w.imag * v.real).sum(axis=0)
            if l > 0:
                v *= np.conj(t[l])
        return I, gphi, loss


class Tool:
    name = "pyfftw"

    def __init__(self, case: Case, planner: str = "measure", wisdom: str | None = None):
        self.case, self.planner, self.wisdom = case, planner, wisdom

    def setup(self, field, phases, target):
        load_wisdom(self.wisdom)
        self.stack = PyFFTWStack(self.case, self.planner)
        save_wisdom(self.wisdom)
        self.field, self.phases, self.target = field, phases, target

    def forward(self):
        return self.stack.forward(self.field, self.phases)[0]

    def train(self):
        return self.stack.train(self.field, self.phases, self.target)

    def setup_ddpm(self, x, step: DDPMStep):
        self.x, self.step, self.rng = x, step, np.random.default_rng(0)

    def ddpm_step(self):
        I = self.stack.forward(self.x, self.phases)[0]   # view[...] = x encodes the amplitude
        return ddpm_numpy_update(self.x, I, self.step, self.rng)

    @staticmethod
    def to_numpy(a):
        return np.asarray(a)
