"""Peer (b): PyTorch on the CPU, torch.fft + autograd, default settings.

``torch.fft.fft2(x, s=(2n, 2n))`` zero-pads bottom/right (the field sits top-left), the inverse
is unnormalised (``norm="forward"``) with 1/grid^2 folded into H, the crop is a slice.  Gradients
come from ``loss.backward()``; the forward-only pass runs under ``torch.inference_mode()``.
The THP variant is the same code in a process started with THP_MEM_ALLOC_ENABLE=1.
"""
from __future__ import annotations

import numpy as np
import torch

from benchmarks.common import Case, DDPMStep, transfer_function


class TorchStack(torch.nn.Module):
    def __init__(self, case: Case):
        super().__init__()
        self.case = case
        G = case.grid
        H = transfer_function(G, case.wavelength, case.pitch, case.distance,
                              dtype=np.complex64, scale=1.0 / (G * G))
        self.register_buffer("H", torch.from_numpy(H))

    def prop(self, w):
        n, G = self.case.n, self.case.grid
        if G == n:
            X = torch.fft.fft2(w)
        else:
            X = torch.fft.fft2(w, s=(G, G))
        u = torch.fft.ifft2(X * self.H, norm="forward")
        if G != n:
            u = u[..., :n, :n]
        return u

    def forward(self, field, phases):
        t = torch.polar(torch.ones_like(phases), phases)
        u = self.prop(field)
        for l in range(self.case.layers):
            u = self.prop(u * t[l])
        return u.real.square() + u.imag.square()


class Tool:
    name = "torch"

    def __init__(self, case: Case):
        self.case = case

    def setup(self, field, phases, target):
        torch.set_num_threads(self.case.threads)
        self.model = TorchStack(self.case)
        self.field = torch.from_numpy(field)
        self.phases = torch.from_numpy(phases.copy()).requires_grad_(True)
        self.target = torch.from_numpy(target)

    def forward(self):
        with torch.inference_mode():
            return self.model(self.field, self.phases)

    def train(self):
        self.phases.grad = None
        I = self.model(self.field, self.phases)
        loss = torch.mean((I - self.target) ** 2)
        loss.backward()
        return I.detach(), self.phases.grad, float(loss.detach())

    def setup_ddpm(self, x, step: DDPMStep):
        self.x = torch.from_numpy(x)
        self.step = step
        self.gen = torch.Generator().manual_seed(0)

    def ddpm_step(self):
        s = self.step
        with torch.inference_mode():
            I = self.model(self.x.to(torch.complex64), self.phases)
            eps = I * s.a + s.b
            z = torch.randn(self.x.shape, generator=self.gen, dtype=torch.float32)
            return (self.x - s.c2 * eps) * s.c1 + s.sigma * z

    @staticmethod
    def to_numpy(a):
        if isinstance(a, torch.Tensor):
            return a.detach().numpy()
        return np.asarray(a)
