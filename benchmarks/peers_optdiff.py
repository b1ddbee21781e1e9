"""optdiff itself: ``optdiff.PhaseStack`` (see docs/api.md).

``Tool`` ("optdiff") times the training step as a user fitting an intensity would run it: the fused
``mse_loss_and_grad``. ``TapeTool`` ("optdiff_tape") times the general path any other loss takes:
``forward_train``, the loss in NumPy, ``backward``.
"""
from __future__ import annotations

import numpy as np

import optdiff
from benchmarks.common import Case, DDPMStep, ddpm_numpy_update, loss_grad_scale


def make_stack(case: Case):
    return optdiff.PhaseStack(n=case.n, wavelength=case.wavelength, pitch=case.pitch,
                              distances=[case.distance] * case.layers,
                              input_distance=case.distance, padding=case.padding)


class Tool:
    name = "optdiff"

    def __init__(self, case: Case):
        self.case = case

    def setup(self, field, phases, target):
        optdiff.set_num_threads(self.case.threads)
        self.stack = make_stack(self.case)
        self.field, self.phases, self.target = field, phases, target
        self.scale = np.float32(loss_grad_scale(self.case))  # dLoss/dI = scale (I - target)

    def forward(self):
        return self.stack.forward(self.field, self.phases)

    def train(self):
        loss, gphi, I = self.stack.mse_loss_and_grad(self.field, self.phases, self.target, return_intensity=True)
        return I, gphi, loss

    def setup_ddpm(self, x, step: DDPMStep):
        self.x, self.step, self.stream = x, step, 0

    def ddpm_step(self):
        # The real image goes in as the amplitude (no complex copy); the read-out, update and
        # fresh noise are one threaded pass over the intensity buffer (optdiff.ddpm_update).
        s = self.step
        I = self.stack.forward(self.x, self.phases)
        self.stream += 1
        return optdiff.ddpm_update(self.x, I, c1=s.c1, c2=s.c2, sigma=s.sigma, eps_scale=s.a, eps_offset=s.b,
                                   seed=0, stream=self.stream, out=I)

    @staticmethod
    def to_numpy(a):
        return np.asarray(a)


class TapeTool(Tool):
    name = "optdiff_tape"
    modes = ("train",)  # its forward is Tool's

    def train(self):
        I, tape = self.stack.forward_train(self.field, self.phases)
        diff = I - self.target
        loss = float(np.mean(diff * diff))
        diff *= self.scale
        gphi, _ = self.stack.backward(tape, diff)
        return I, gphi, loss


class NumpyUpdateTool(Tool):
    """The DDPM step as it was before optdiff.ddpm_update: the image widened to a complex copy,
    read-out, update and noise in NumPy (for the in-process comparison in interleaved.py)."""
    name = "optdiff_npstep"
    modes = ("ddpm",)

    def setup_ddpm(self, x, step: DDPMStep):
        self.x, self.step, self.rng = x, step, np.random.default_rng(0)

    def ddpm_step(self):
        I = self.stack.forward(self.x.astype(np.complex64), self.phases)
        return ddpm_numpy_update(self.x, I, self.step, self.rng)


TOOLS = {"optdiff_tape": TapeTool, "optdiff_npstep": NumpyUpdateTool}
