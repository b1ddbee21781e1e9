"""The sampling-step operations: counter-based normals, the fused DDPM update, real-input forward.

The normals are checked three ways: a slow NumPy reference of Philox4x32-10 (itself checked
against the Random123 known-answer vectors) followed by Box-Muller in float64; statistics of
a million draws; and the numbering promises (thread count, offsets, dtypes).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import optdiff
from optdiff import _core

M32 = 0xFFFFFFFF


# ---------------------------------------------------------------------------
# Reference: Philox4x32-10 and Box-Muller, written from the published algorithm
# ---------------------------------------------------------------------------

def philox_ref(ctr, key):
    """ctr: uint64 array [k, 4] of 32-bit words, key: (k0, k1). Returns [k, 4] words."""
    c = [ctr[:, i].astype(np.uint64) for i in range(4)]
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    for r in range(10):
        if r:
            k0 = (k0 + np.uint64(0x9E3779B9)) & np.uint64(M32)
            k1 = (k1 + np.uint64(0xBB67AE85)) & np.uint64(M32)
        p0 = np.uint64(0xD2511F53) * c[0]
        p1 = np.uint64(0xCD9E8D57) * c[2]
        hi0, lo0 = p0 >> np.uint64(32), p0 & np.uint64(M32)
        hi1, lo1 = p1 >> np.uint64(32), p1 & np.uint64(M32)
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
    return np.stack(c, axis=1)


def test_reference_philox_matches_known_answers():
    # Random123's kat_vectors for philox4x32 with 10 rounds: counter, key -> output.
    cases = [
        ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
        ([M32] * 4, [M32, M32], [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
        ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
         [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
    ]
    for ctr, key, want in cases:
        got = philox_ref(np.array([ctr], dtype=np.uint64), key)[0]
        assert [int(v) for v in got] == want


def normals_ref(seed: int, stream: int, count: int, offset: int = 0) -> np.ndarray:
    """Normal numbers offset .. offset+count-1 in float64 from the reference bits."""
    j0, j1 = offset // 4, (offset + count - 1) // 4 + 1
    j = np.arange(j0, j1, dtype=np.uint64)
    ctr = np.stack([j & np.uint64(M32), j >> np.uint64(32),
                    np.full_like(j, stream & M32), np.full_like(j, stream >> 32)], axis=1)
    bits = philox_ref(ctr, (seed & M32, seed >> 32))
    out = np.empty((len(j), 4))
    for pair in (0, 1):
        rb, ab = bits[:, 2 * pair], bits[:, 2 * pair + 1]
        # The uniforms as the core forms them in float32 (a signed int converted and scaled).
        u = (np.float32(1) * (rb >> np.uint64(1)).astype(np.int32).astype(np.float32)
             * np.float32(2.0 ** -31) + np.float32(2.0 ** -32)).astype(np.float64)
        v = (ab.astype(np.uint32).view(np.int32).astype(np.float32) * np.float32(2.0 ** -32)).astype(np.float64)
        r = np.sqrt(-2.0 * np.log(u))
        out[:, 2 * pair] = r * np.cos(2 * np.pi * v)
        out[:, 2 * pair + 1] = r * np.sin(2 * np.pi * v)
    flat = out.ravel()
    start = offset - 4 * j0
    return flat[start:start + count]


@pytest.mark.parametrize("seed,stream", [(0, 0), (1, 2), (2**63 + 12345, 2**40 + 7), (2**64 - 1, 2**64 - 1)])
def test_normals_match_reference(seed, stream):
    count = 4099
    got = optdiff.standard_normal(count, seed=seed, stream=stream, dtype=np.float64)
    want = normals_ref(seed, stream, count)
    # float32 evaluation of ln and sin/cos: a few float32 ulps of the larger of |z| and 1.
    np.testing.assert_allclose(got, want, rtol=0, atol=4e-6 * max(1.0, float(np.abs(want).max())))
    assert np.abs(got).max() <= 6.67


def test_offsets_cut_one_stream_into_pieces():
    full = optdiff.standard_normal(5000, seed=7, stream=3)
    for offset, count in [(1, 10), (253, 1000), (255, 2), (256, 4744), (4999, 1)]:
        part = optdiff.standard_normal(count, seed=7, stream=3, offset=offset)
        np.testing.assert_array_equal(part, full[offset:offset + count])
    np.testing.assert_allclose(optdiff.standard_normal(5, seed=7, stream=3, offset=2**62 + 3),
                               normals_ref(7, 3, 5, offset=2**62 + 3), rtol=0, atol=3e-5)


def test_end_of_stream_reproducers_of_issue_13_do_not_crash():
    """Issue #13 item 1: offset + count = 2**64 wrapped to 0 in C++ (a segfault, or reads past a
    stack buffer for smaller counts). Run in a child process so a crash fails only this test."""
    code = ("import numpy as np, optdiff\n"
            "z = optdiff.standard_normal(4096, seed=0, offset=2**64 - 4096)\n"
            "x = np.zeros(4096, np.float32)\n"
            "y = optdiff.ddpm_update(x, x, c1=1, c2=0, sigma=1, seed=0, stream=0, offset=2**64 - 4096)\n"
            "assert np.array_equal(y, z) and np.isfinite(z).all()\n")
    env = dict(os.environ)
    pkg_parent = str(Path(optdiff.__file__).resolve().parent.parent)  # the optdiff imported here
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                       cwd=str(Path(__file__).resolve().parent))
    assert r.returncode == 0, f"exit status {r.returncode}\n{r.stderr}"


@pytest.mark.parametrize("count", [1, 3, 4, 5, 255, 256, 257, 1000, 4096, 4099])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_last_numbers_of_a_stream(count, dtype):
    """offset + count may be exactly 2**64: the last numbers of the stream, for any count."""
    offset = 2**64 - count
    z = optdiff.standard_normal(count, seed=5, stream=6, offset=offset, dtype=dtype)
    want = normals_ref(5, 6, count, offset)
    np.testing.assert_allclose(z, want, rtol=0, atol=4e-6 * max(1.0, float(np.abs(want).max())))
    longer = optdiff.standard_normal(count + 3, seed=5, stream=6, offset=offset - 3, dtype=dtype)
    np.testing.assert_array_equal(longer[3:], z)
    x = np.linspace(-1.0, 1.0, count).astype(dtype)
    out = optdiff.ddpm_update(x, np.zeros_like(x), c1=1.0, c2=0.0, sigma=1.0, seed=5, stream=6, offset=offset)
    np.testing.assert_array_equal(out, x + z)


def test_the_core_checks_the_stream_range():
    """The range check is the C++ one (no Python copy): ValueError naming offset."""
    for count, offset in [(8, 2**64 - 4), (4097, 2**64 - 4096), (2, 2**64 - 1)]:
        with pytest.raises(ValueError, match=f"^offset {offset} \\+ count {count} runs past the end of the stream"):
            _core.standard_normal(np.empty(count, np.float32), 0, 0, offset)
        with pytest.raises(ValueError, match="offset .* runs past the end of the stream"):
            x = np.zeros(count, np.float64)
            _core.ddpm_update(x, x, np.empty_like(x), 1.0, 0.0, 1.0, 1.0, 0.0, 0, 0, offset)
        with pytest.raises(ValueError, match="offset .* runs past the end of the stream"):
            optdiff.standard_normal(count, seed=0, offset=offset)
    _core.standard_normal(np.empty(4, np.float32), 0, 0, 2**64 - 4)  # exactly to the end: fine


def test_same_numbers_for_any_thread_count_and_dtype():
    shape = (3, 333, 257)  # several threads' worth of blocks, not a multiple of 4
    a = optdiff.standard_normal(shape, seed=11, stream=5, nthreads=1)
    b = optdiff.standard_normal(shape, seed=11, stream=5, nthreads=2)
    c = optdiff.standard_normal(shape, seed=11, stream=5, dtype=np.float64, nthreads=2)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(c, a.astype(np.float64))
    out = np.full(shape, np.nan, dtype=np.float32)
    assert optdiff.standard_normal(shape, seed=11, stream=5, out=out) is out
    np.testing.assert_array_equal(out, a)


def test_streams_and_seeds_differ():
    a = optdiff.standard_normal(4096, seed=1, stream=0)
    assert not np.array_equal(a, optdiff.standard_normal(4096, seed=1, stream=1))
    assert not np.array_equal(a, optdiff.standard_normal(4096, seed=2, stream=0))
    # Independent streams are uncorrelated (|r| ~ 1/sqrt(n) = 0.016).
    assert abs(np.corrcoef(a, optdiff.standard_normal(4096, seed=1, stream=1))[0, 1]) < 0.07


def test_normal_statistics():
    from scipy import stats

    z = optdiff.standard_normal(1 << 20, seed=2024, stream=1).astype(np.float64)
    n = z.size
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(stats.skew(z)) < 5 * np.sqrt(6 / n)
    assert abs(stats.kurtosis(z)) < 5 * np.sqrt(24 / n)
    # Fixed seed: deterministic; a wrong distribution (e.g. uniform sums, a bad angle) fails hard.
    assert stats.kstest(z, "norm").pvalue > 1e-4
    # Neighbours (same counter: lags 1-3; next counter: lag 4) are uncorrelated.
    for lag in (1, 2, 3, 4):
        r = np.corrcoef(z[:-lag], z[lag:])[0, 1]
        assert abs(r) < 5 / np.sqrt(n), (lag, r)
    # Tails: P(|z| > 3) = 0.0027.
    assert abs(np.mean(np.abs(z) > 3) - 0.0027) < 5 * np.sqrt(0.0027 / n)


# ---------------------------------------------------------------------------
# The fused DDPM update
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ddpm_update_matches_numpy(dtype, backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 37, 41)).astype(dtype)
    inten = rng.random((4, 37, 41)).astype(dtype)
    k = dict(c1=1.0101, c2=0.137, sigma=0.09, eps_scale=0.5, eps_offset=-0.25, seed=9, stream=499, offset=6)
    got = optdiff.ddpm_update(x, inten, **k, backend=backend)
    z = optdiff.standard_normal(x.shape, seed=9, stream=499, offset=6, dtype=np.float64)
    want = k["c1"] * (x - k["c2"] * (k["eps_scale"] * inten.astype(np.float64) + k["eps_offset"])) + k["sigma"] * z
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * 8)
    assert got.dtype == dtype
    # In place over x and over eps give the same numbers.
    x2, e2 = x.copy(), inten.copy()
    assert optdiff.ddpm_update(x2, inten, **k, backend=backend, out=x2) is x2
    assert optdiff.ddpm_update(x, e2, **k, backend=backend, out=e2) is e2
    np.testing.assert_array_equal(x2, got)
    np.testing.assert_array_equal(e2, got)


def test_ddpm_update_without_noise_and_thread_invariance():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(100_003).astype(np.float32)
    e = rng.standard_normal(100_003).astype(np.float32)
    got = optdiff.ddpm_update(x, e, c1=2.0, c2=0.5, sigma=0.0, seed=0, stream=0)
    np.testing.assert_allclose(got, 2.0 * (x - 0.5 * e), rtol=1e-6, atol=1e-6)
    a = optdiff.ddpm_update(x, e, c1=1.1, c2=0.2, sigma=0.3, seed=4, stream=8, nthreads=1)
    b = optdiff.ddpm_update(x, e, c1=1.1, c2=0.2, sigma=0.3, seed=4, stream=8, nthreads=2)
    np.testing.assert_array_equal(a, b)


def test_sampler_ops_reject_bad_input(backend):
    x = np.zeros((4, 4), np.float32)
    k = dict(c1=1.0, c2=0.1, sigma=0.1, seed=0, stream=0)
    with pytest.raises(ValueError, match="eps must have the shape of x"):
        optdiff.ddpm_update(x, np.zeros((4, 5), np.float32), **k, backend=backend)
    with pytest.raises(TypeError, match="eps must have dtype float32"):
        optdiff.ddpm_update(x, np.zeros((4, 4), np.float64), **k, backend=backend)
    with pytest.raises(TypeError, match="float32 or float64"):
        optdiff.ddpm_update(x.astype(np.complex64), x.astype(np.complex64), **k, backend=backend)
    with pytest.raises(ValueError, match="C-contiguous"):
        optdiff.ddpm_update(np.zeros((4, 8), np.float32)[:, ::2], x, **k, backend=backend)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        optdiff.ddpm_update(x, x, **{**k, "sigma": -1.0}, backend=backend)
    with pytest.raises(ValueError, match="finite"):
        optdiff.ddpm_update(x, x, **{**k, "c1": float("nan")}, backend=backend)
    with pytest.raises(ValueError, match="seed"):
        optdiff.standard_normal(3, seed=-1, backend=backend)
    with pytest.raises(ValueError, match="stream"):
        optdiff.standard_normal(3, seed=0, stream=2**64, backend=backend)
    with pytest.raises(TypeError, match="dtype"):
        optdiff.standard_normal(3, seed=0, dtype=np.int32, backend=backend)
    with pytest.raises(ValueError, match="shape"):
        optdiff.standard_normal((2, 2), seed=0, out=np.zeros(4, np.float32), backend=backend)
    with pytest.raises(ValueError, match="past the end"):
        optdiff.standard_normal(8, seed=0, offset=2**64 - 4, backend=backend)
    np.testing.assert_array_equal(optdiff.standard_normal(4, seed=0, offset=2**64 - 4, backend=backend),
                                  optdiff.standard_normal(5, seed=0, offset=2**64 - 5, backend=backend)[1:])
    assert optdiff.standard_normal((0, 3), seed=0, backend=backend).shape == (0, 3)


# ---------------------------------------------------------------------------
# Real-input forward
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("input_distance", [3e-3, None])  # the real field feeds the input hop or mask 0
@pytest.mark.parametrize("padding", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_of_a_real_field_equals_the_complex_one(padding, dtype, input_distance, backend):
    n = 24
    stack = optdiff.PhaseStack(n, wavelength=850e-9, pitch=9.2e-6, distances=[5e-3, 4e-3, 6e-3],
                               input_distance=input_distance, padding=padding,
                               tilts=[(0.0, 0.0), (1e-3, -2e-3), (0.0, 5e-4)], backend=backend)
    rng = np.random.default_rng(3)
    amp = rng.random((5, n, n)).astype(dtype)
    phases = rng.uniform(-np.pi, np.pi, (3, n, n)).astype(dtype)
    cdt = np.complex64 if dtype == np.float32 else np.complex128
    want = stack.forward(amp.astype(cdt), phases)
    got = stack.forward(amp, phases, nthreads=2)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(stack.forward(amp[0], phases), want[0])
    with pytest.raises(TypeError, match="phases must be"):
        stack.forward(amp, phases.astype(np.float64 if dtype == np.float32 else np.float32))


def test_coefficients_beyond_float32_are_refused_for_float32_arrays(backend):
    x = np.ones(8, np.float32)
    with pytest.raises(ValueError, match="c2 = .*float32"):
        optdiff.ddpm_update(x, x, c1=1.0, c2=1e39, sigma=0.0, seed=0, stream=0, backend=backend)
    got = optdiff.ddpm_update(x.astype(np.float64), x.astype(np.float64), c1=1.0, c2=1e39, sigma=0.0, seed=0,
                              stream=0, backend=backend)
    assert np.all(np.isfinite(got))  # float64 holds it
