"""Peer (d): JAX on the CPU, ``jax.jit`` of the forward and of ``jax.value_and_grad``.

Same formulation as the PyTorch peer (fft2 with s= for the top-left zero padding, unnormalised
inverse with 1/grid^2 folded into H).  Inputs are placed on the device once; every call ends in
``block_until_ready``.  The worker sets XLA's intra-op thread count and pins the process to the
case's cores before JAX is imported.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import Case, DDPMStep, transfer_function


def build(case: Case):
    n, G, L = case.n, case.grid, case.layers
    H = jnp.asarray(transfer_function(G, case.wavelength, case.pitch, case.distance,
                                      dtype=np.complex64, scale=1.0 / (G * G)))

    def prop(w):
        X = jnp.fft.fft2(w) if G == n else jnp.fft.fft2(w, s=(G, G))
        u = jnp.fft.ifft2(X * H, norm="forward")
        return u if G == n else u[..., :n, :n]

    def intensity(field, phases):
        t = jnp.exp(1j * phases)
        u = prop(field)
        for l in range(L):
            u = prop(u * t[l])
        return u.real * u.real + u.imag * u.imag

    def loss_fn(phases, field, target):
        I = intensity(field, phases)
        return jnp.mean((I - target) ** 2), I

    fwd = jax.jit(intensity)
    train = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    return intensity, fwd, train


class Tool:
    name = "jax"

    def __init__(self, case: Case):
        self.case = case

    def setup(self, field, phases, target):
        self.intensity, self._fwd, self._train = build(self.case)
        self.field = jax.device_put(field)
        self.phases = jax.device_put(phases)
        self.target = jax.device_put(target)

    def forward(self):
        return self._fwd(self.field, self.phases).block_until_ready()

    def train(self):
        (loss, I), g = self._train(self.phases, self.field, self.target)
        g.block_until_ready()
        return I, g, float(loss)

    def setup_ddpm(self, x, step: DDPMStep):
        intensity = self.intensity

        def ddpm(x, phases, key):
            I = intensity(x.astype(jnp.complex64), phases)
            eps = I * step.a + step.b
            z = jax.random.normal(key, x.shape, dtype=jnp.float32)
            return (x - step.c2 * eps) * step.c1 + step.sigma * z

        self._ddpm = jax.jit(ddpm)
        self.x = jax.device_put(x)
        self.key = jax.random.PRNGKey(0)

    def ddpm_step(self):
        return self._ddpm(self.x, self.phases, self.key).block_until_ready()

    @staticmethod
    def to_numpy(a):
        return np.asarray(a)
