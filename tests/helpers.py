"""Shared helpers for the tests (tolerances tied to dtype, random fields)."""

import os

import numpy as np

GEOM = dict(wavelength=850e-9, pitch=9.2e-6)

TOL = {np.complex64: 1e-5, np.complex128: 1e-12}
ADJ_TOL = {np.complex64: 1e-6, np.complex128: 1e-13}


def random_field(rng, shape, dtype=np.complex128):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def unaligned(a):
    """A C-contiguous, writeable copy of `a` whose data is not aligned (flags.aligned is False)."""
    raw = np.zeros(a.nbytes + 1, np.uint8)
    v = np.frombuffer(raw.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    v[...] = a
    assert not v.flags.aligned and v.flags.c_contiguous and v.flags.writeable
    return v


def rel_err(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def mnist_dir():
    """The MNIST test split beside the repository (tests and benchmarks only)."""
    d = os.environ.get("OPTDIFF_TEST_MNIST_DIR")
    if d:
        return d
    here = os.path.dirname(os.path.abspath(__file__))
    cand = os.path.join(here, "..", "..", "shared", "datasets", "mnist")
    return cand if os.path.isdir(cand) else None


def squares(k=120, size=8, seed=0):
    """A structured toy image set: bright 3x3 squares at random places on -1, [k, size, size]."""
    rng = np.random.default_rng(seed)
    x = -np.ones((k, size, size))
    for i in range(k):
        a, b = rng.integers(0, size - 3, 2)
        x[i, a:a + 3, b:b + 3] = rng.uniform(0.3, 1.0)
    return x
