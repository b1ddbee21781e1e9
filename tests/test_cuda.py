"""Tests of the CUDA backend (optdiff.optics.backends.cuda, module optdiff._cuda).

Every CUDA entry point is compared with the CPU back end (backend="cpu") to
1e-5 (float32) / 1e-12 (float64) relative to the largest reference value,
plus adjointness <Ax, y> = <x, A^H y> and finite-difference gradients
computed on the device.

These tests run
  * on a CUDA device ("cuda"), when optdiff._cuda is built and a device is
    present: NumPy inputs, device arrays through __cuda_array_interface__,
    and CuPy / PyTorch arrays when those are installed;
  * through optdiff._cuda_emu ("cuda-emu"), when it was built
    (-DOPTDIFF_CUDA_EMULATION=ON): the same host code and kernel bodies on the
    CPU, with FFTW standing in for cuFFT;
and are skipped otherwise. test_import_and_device_count_without_gpu always runs.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import os
import sys
import threading

import numpy as np
import pytest
from helpers import unaligned

import optdiff
from optdiff.optics.backends import cuda as cb
from optdiff.optics.backends.cuda_arrays import DeviceArray

HAS_GPU = cb.cuda_device_count() > 0
try:
    _EMU = importlib.import_module("optdiff._cuda_emu")
except ImportError:
    _EMU = None

WL, PITCH = 850e-9, 9.2e-6
TOL = {np.complex64: 1e-5, np.complex128: 1e-12, np.float32: 1e-5, np.float64: 1e-12}


# ---------------------------------------------------------------------------
# The one test that needs no GPU
# ---------------------------------------------------------------------------

def test_import_and_device_count_without_gpu():
    count = cb.cuda_device_count()  # must never raise
    assert isinstance(count, int) and count >= 0
    assert isinstance(cb.cuda_unavailable_reason(), str)
    if not glob.glob("/dev/nvidia[0-9]*"):  # no GPU on this machine
        assert count == 0
        assert cb.cuda_unavailable_reason() != ""
    assert ("cuda" in optdiff.available_backends()) == (count > 0)


# ---------------------------------------------------------------------------
# Fixtures: which implementation, which array kind
# ---------------------------------------------------------------------------

_EVIDENCE: dict = {}


def _cuda_or_skip() -> None:
    """Skip when this machine has no GPU; FAIL (with the stored reason) when it has one but the
    CUDA backend cannot use it (a broken build, a missing cuFFT, a driver too old), or when
    OPTDIFF_REQUIRE_CUDA=1 says a device is expected (benchmarks/gpu_check.sh sets it)."""
    if HAS_GPU:
        return
    reason = cb.cuda_unavailable_reason()
    probe = cb.gpu_present
    if probe not in _EVIDENCE:  # once per probe: nvidia-smi may take a while on a broken driver
        _EVIDENCE[probe] = probe()
    evidence = _EVIDENCE[probe]
    if evidence or os.environ.get("OPTDIFF_REQUIRE_CUDA") == "1":
        pytest.fail(f"a GPU is expected here ({evidence or 'OPTDIFF_REQUIRE_CUDA=1'}) but "
                    f"backend='cuda' is unusable: {reason}", pytrace=False)
    pytest.skip(f"no CUDA device: {reason}")


@pytest.fixture(params=["cuda", "cuda-emu"])
def backend(request):
    if request.param == "cuda":
        _cuda_or_skip()
        yield "cuda"
        return
    if _EMU is None:
        pytest.skip("optdiff._cuda_emu not built (configure with -DOPTDIFF_CUDA_EMULATION=ON)")
    yield "cuda-emu"


class _HostCAI:
    """A host array posing as device memory (valid only with the emulation module); `stream`:
    the v3 interface's stream (any integer: the emulated streams are only names)."""

    def __init__(self, a, stream=None):
        self.a = np.ascontiguousarray(a)
        self.stream = stream

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.a.shape, "typestr": self.a.dtype.str, "data": (self.a.ctypes.data, False),
                "version": 3, "strides": None, "stream": self.stream}


def _to_kind(a: np.ndarray, kind: str, backend: str):
    a = np.array(a, order="C", copy=True)  # never alias the caller's reference data
    if kind == "numpy":
        return a
    if kind == "cai":
        if backend == "cuda-emu":
            return _HostCAI(a)
        d = optdiff.get_backend(backend).device_array(a.shape, a.dtype, 0)
        d._buf.upload(a, 0)
        return d
    if kind == "cupy":
        import cupy

        return cupy.asarray(a)
    if kind == "torch":
        import torch

        return torch.from_numpy(a).cuda()
    raise AssertionError(kind)


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, _HostCAI):
        return x.a
    if isinstance(x, DeviceArray):
        return x.get()
    mod = type(x).__module__.split(".")[0]
    if mod == "cupy":
        import cupy

        return cupy.asnumpy(x)
    if mod == "torch":
        return x.detach().cpu().numpy()
    raise AssertionError(type(x))


@pytest.fixture(params=["numpy", "cai", "cupy", "torch"])
def kind(request, backend):
    k = request.param
    if k in ("cupy", "torch"):
        if backend != "cuda":
            pytest.skip(f"{k} arrays need a real device")
        pytest.importorskip(k)
    return k


def _normal(backend, out, **kw):
    return optdiff.standard_normal(out=out, backend=backend, **kw)


def _ddpm(backend, x, eps, out=None, **kw):
    return optdiff.ddpm_update(x, eps, out=out, backend=backend, **kw)


def _close(got, ref, dtype, what=""):
    got, ref = _to_numpy(got), np.asarray(ref)
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    assert got.dtype == ref.dtype, (what, got.dtype, ref.dtype)
    scale = max(float(np.abs(ref).max()), 1e-300)
    err = float(np.abs(got.astype(np.complex128) - ref).max()) / scale
    assert err <= TOL[dtype], f"{what}: relative error {err:.3g} > {TOL[dtype]:g}"


def _field(rng, shape, dtype):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


# ---------------------------------------------------------------------------
# Propagator
# ---------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("padding", [1, 2])
@pytest.mark.parametrize("method,tilt", [("as", (0.0, 0.0)), ("bl-as", (0.01, -0.02)),
                                         ("fresnel", (0.0, 0.015))])
def test_propagator_matches_cpu(backend, kind, dtype, padding, method, tilt):
    rng = np.random.default_rng(1)
    n = 20
    kw = dict(wavelength=WL, pitch=PITCH, distance=7e-3, method=method, padding=padding, tilt=tilt)
    cpu = optdiff.Propagator(n, backend="cpu", **kw)
    gpu = optdiff.Propagator(n, backend=backend, **kw)
    x = _field(rng, (3, n, n), dtype)
    _close(gpu.forward(_to_kind(x, kind, backend)), cpu.forward(x), dtype, "forward")
    _close(gpu.adjoint(_to_kind(x, kind, backend)), cpu.adjoint(x), dtype, "adjoint")
    _close(gpu.forward(_to_kind(x[0], kind, backend)), cpu.forward(x[0]), dtype, "single field")
    np.testing.assert_array_equal(gpu.transfer_function(dtype), cpu.transfer_function(dtype))


@pytest.mark.gpu
@pytest.mark.parametrize("padding", [1, 2])
def test_propagator_in_place_and_out(backend, kind, padding):
    rng = np.random.default_rng(2)
    n = 16
    kw = dict(wavelength=WL, pitch=PITCH, distance=5e-3, padding=padding, tilt=(0.01, 0.0))
    cpu = optdiff.Propagator(n, backend="cpu", **kw)
    gpu = optdiff.Propagator(n, backend=backend, **kw)
    x = _field(rng, (2, n, n), np.complex128)
    y = _to_kind(x, kind, backend)
    assert gpu.forward(y, out=y) is y
    _close(y, cpu.forward(x), np.complex128, "in-place forward")
    out = _to_kind(np.zeros_like(x), kind, backend)
    assert gpu.adjoint(_to_kind(x, kind, backend), out=out) is out
    _close(out, cpu.adjoint(x), np.complex128, "adjoint into out")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("padding", [1, 2])
def test_propagator_adjointness(backend, dtype, padding):
    rng = np.random.default_rng(3)
    n = 24
    gpu = optdiff.Propagator(n, backend=backend, wavelength=WL, pitch=PITCH, distance=9e-3, method="as",
                            padding=padding, tilt=(0.02, -0.01))
    x = _field(rng, (2, n, n), dtype)
    y = _field(rng, (2, n, n), dtype)
    lhs = np.vdot(gpu.forward(x).astype(np.complex128), y.astype(np.complex128))
    rhs = np.vdot(x.astype(np.complex128), gpu.adjoint(y).astype(np.complex128))
    scale = np.linalg.norm(x) * np.linalg.norm(y)
    assert abs(lhs - rhs) / scale < TOL[dtype]


@pytest.mark.gpu
def test_dispatch_from_optdiff_classes(backend):
    rng = np.random.default_rng(4)
    n = 16
    kw = dict(wavelength=WL, pitch=PITCH, distance=4e-3, padding=2)
    x = _field(rng, (2, n, n), np.complex64)
    _close(optdiff.Propagator(n, backend=backend, **kw).forward(x),
           optdiff.Propagator(n, backend="cpu", **kw).forward(x), np.complex64)
    skw = dict(wavelength=WL, pitch=PITCH, distances=[3e-3, 5e-3], padding=2)
    ph = rng.uniform(-np.pi, np.pi, (2, n, n)).astype(np.float32)
    _close(optdiff.PhaseStack(n, backend=backend, **skw).forward(x, ph),
           optdiff.PhaseStack(n, backend="cpu", **skw).forward(x, ph), np.float32)


# ---------------------------------------------------------------------------
# Phase stack
# ---------------------------------------------------------------------------

def _stack_kwargs(padding, with_input, with_tilts, L=3):
    return dict(wavelength=WL, pitch=PITCH, distances=[4e-3, 6e-3, 5e-3][:L], method="bl-as",
                padding=padding,
                tilts=(np.array([[0.01, 0.0], [0.0, -0.015], [0.02, 0.01]])[:L] if with_tilts else None),
                input_distance=3e-3 if with_input else None,
                input_tilt=(0.01, 0.005) if with_input else (0.0, 0.0))


def _stack_pair(backend, n, L, padding, with_input, with_tilts):
    """The same stack on the CPU and as a CudaPhaseStack."""
    kw = _stack_kwargs(padding, with_input, with_tilts, L)
    return optdiff.PhaseStack(n, backend="cpu", **kw), optdiff.PhaseStack(n, backend=backend, **kw)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("padding", [1, 2])
@pytest.mark.parametrize("with_input,with_tilts", [(False, False), (True, True)])
def test_stack_matches_cpu(backend, kind, dtype, padding, with_input, with_tilts):
    rng = np.random.default_rng(5)
    n, B, L = 16, 3, 3
    real = np.float32 if dtype == np.complex64 else np.float64
    cpu, gpu = _stack_pair(backend, n, L, padding, with_input, with_tilts)
    assert gpu.num_layers == L and gpu.n == n
    x = _field(rng, (B, n, n), dtype)
    ph = rng.uniform(-np.pi, np.pi, (L, n, n)).astype(real)
    g = rng.standard_normal((B, n, n)).astype(real)
    X, P, G = (_to_kind(a, kind, backend) for a in (x, ph, g))

    _close(gpu.forward(X, P), cpu.forward(x, ph), real, "intensity")
    _close(gpu.camera_field(X, P), cpu.camera_field(x, ph), dtype, "camera field")
    I_ref, tape_ref = cpu.forward_train(x, ph)
    gph_ref, gx_ref = cpu.backward(tape_ref, g, input_grad=True)
    for recompute in (False, True):
        I, tape = gpu.forward_train(X, P, recompute=recompute)
        _close(I, I_ref, real, "forward_train intensity")
        assert (tape.nbytes == 0) == recompute
        gph, gx = gpu.backward(tape, G, input_grad=True)
        _close(gph, gph_ref, real, f"grad phases (recompute={recompute})")
        _close(gx, gx_ref, dtype, f"grad field (recompute={recompute})")
        gph2, none = gpu.backward(tape, G, input_grad=False)
        assert none is None
        _close(gph2, gph_ref, real, "grad phases without input grad")


@pytest.mark.gpu
def test_stack_single_field_and_saved_layout(backend):
    rng = np.random.default_rng(6)
    n = 12
    kw = _stack_kwargs(2, True, True, 2)
    cpu = optdiff.PhaseStack(n, backend="cpu", **kw)
    gpu = optdiff.PhaseStack(n, backend=backend, **kw)
    x = _field(rng, (n, n), np.complex128)
    ph = rng.uniform(-3, 3, (2, n, n))
    _close(gpu.forward(x, ph), cpu.forward(x, ph), np.float64, "single field")
    _, t_ref = cpu.forward_train(x, ph)
    _, t = gpu.forward_train(x, ph)
    saved = np.empty((1, 3, n, n), np.complex128)
    t.saved.download(saved, 0)  # the tape keeps the CPU layout [B, L+1, n, n]
    _close(saved, t_ref.saved, np.complex128, "saved fields")
    g = rng.standard_normal((n, n))
    gph, gx = gpu.backward(t, g, input_grad=True)
    gph_ref, gx_ref = cpu.backward(t_ref, g, input_grad=True)
    _close(gph, gph_ref, np.float64, "grad phases")
    _close(gx, gx_ref, np.complex128, "grad field")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_stack_chunked_batches(backend, dtype):
    """A 1 MiB scratch budget splits the batch into several chunks; results must not change."""
    rng = np.random.default_rng(7)
    n, B = 16, 150  # 2n x 2n padded fields: 150 samples need 2-5 chunks
    real = np.float32 if dtype == np.complex64 else np.float64
    kw = _stack_kwargs(2, True, False, 2)
    cpu = optdiff.PhaseStack(n, backend="cpu", **kw)
    gpu = optdiff.PhaseStack(n, backend=backend, **kw)
    x = _field(rng, (B, n, n), dtype)
    ph = rng.uniform(-np.pi, np.pi, (2, n, n)).astype(real)
    g = rng.standard_normal((B, n, n)).astype(real)
    I_ref, t_ref = cpu.forward_train(x, ph)
    gph_ref, gx_ref = cpu.backward(t_ref, g, input_grad=True)
    mod = optdiff.get_backend(backend).mod
    old = mod.get_workspace_limit()
    mod.set_workspace_limit(1 << 20)
    try:
        for recompute in (False, True):
            I, t = gpu.forward_train(x, ph, recompute=recompute)
            _close(I, I_ref, real, "intensity")
            gph, gx = gpu.backward(t, g, input_grad=True)
            _close(gph, gph_ref, real, "grad phases")
            _close(gx, gx_ref, dtype, "grad field")
    finally:
        mod.set_workspace_limit(old)


@pytest.mark.gpu
@pytest.mark.parametrize("padding", [1, 2])
def test_stack_gradients_finite_differences(backend, padding):
    """dLoss/dphi and dLoss/dfield against central differences of the device forward pass (float64)."""
    rng = np.random.default_rng(8)
    n, B, L = 10, 2, 2
    gpu = optdiff.PhaseStack(n, backend=backend, **_stack_kwargs(padding, True, True, L))
    x = _field(rng, (B, n, n), np.complex128)
    ph = rng.uniform(-np.pi, np.pi, (L, n, n))
    w = rng.standard_normal((B, n, n))  # loss = sum(w * I)

    def loss(xx, pp):
        return float(np.sum(w * gpu.forward(xx, pp)))

    _, tape = gpu.forward_train(x, ph)
    gph, gx = gpu.backward(tape, w, input_grad=True)
    eps = 1e-6
    for (l, r, c) in [(0, 3, 4), (1, 5, 5), (1, 0, 9)]:
        dp = np.zeros_like(ph)
        dp[l, r, c] = eps
        fd = (loss(x, ph + dp) - loss(x, ph - dp)) / (2 * eps)
        assert abs(fd - gph[l, r, c]) <= 1e-6 * max(1.0, abs(fd)), (l, r, c, fd, gph[l, r, c])
    for (b, r, c) in [(0, 2, 2), (1, 7, 3)]:
        for unit in (1.0, 1j):  # gradient convention: dL/dRe + i dL/dIm
            dx = np.zeros_like(x)
            dx[b, r, c] = eps * unit
            fd = (loss(x + dx, ph) - loss(x - dx, ph)) / (2 * eps)
            got = gx[b, r, c].real if unit == 1.0 else gx[b, r, c].imag
            assert abs(fd - got) <= 1e-6 * max(1.0, abs(fd)), (b, r, c, unit, fd, got)


# ---------------------------------------------------------------------------
# Read-out binning
# ---------------------------------------------------------------------------

def _bin_reference(img, h, w, k):
    n = img.shape[-1]
    r0, c0 = (n - h * k) // 2, (n - w * k) // 2
    region = img[..., r0:r0 + h * k, c0:c0 + w * k]
    return region.reshape(region.shape[:-2] + (h, k, w, k)).mean(axis=(-3, -1))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("h,w,k", [(4, 5, 3), (1, 1, 19), (19, 19, 1), (2, 6, 3)])
def test_bin_readout(backend, kind, dtype, h, w, k):
    rng = np.random.default_rng(9)
    n = 19
    img = rng.random((3, n, n)).astype(dtype)
    got = optdiff.get_backend(backend).bin_readout(_to_kind(img, kind, backend), (h, w), k)
    _close(got, _bin_reference(img, h, w, k), dtype, "binning")
    y = rng.random((3, h, w)).astype(dtype)
    back = _to_numpy(optdiff.get_backend(backend).bin_readout_backward(_to_kind(y, kind, backend), n, k))
    assert back.shape == (3, n, n) and back.dtype == dtype
    lhs = np.vdot(_bin_reference(img, h, w, k).astype(np.float64), y)
    rhs = np.vdot(img.astype(np.float64), back)
    assert abs(lhs - rhs) <= TOL[dtype] * abs(lhs)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

# ---------------------------------------------------------------------------
# One hop tuple and one set of messages for both compiled modules
# ---------------------------------------------------------------------------

def _hop_modules():
    """The compiled CUDA-side modules that are built (neither needs a device to check a hop)."""
    mods = [_EMU] if _EMU is not None else []
    try:
        mods.append(importlib.import_module("optdiff._cuda"))
    except ImportError:
        pass
    if not mods:
        pytest.skip("neither optdiff._cuda nor optdiff._cuda_emu is built")
    return mods


GOOD_HOP = (WL, PITCH, 3e-3, "bl-as", 2, 0.01, -0.02)
BAD_HOPS = [
    ((WL, PITCH, 1e-3, "rayleigh", 2, 0.0, 0.0), "method must be 'as' .* got 'rayleigh'"),
    ((WL, PITCH, 1e-3, 1, 2, 0.0, 0.0), "method must be 'as' .* got 1"),  # the old integer code
    ((WL, PITCH, 1e-3, "as", True, 0.0, 0.0), "padding must be 1 .* got True"),
    ((WL, PITCH, 1e-3, "as", 2.0, 0.0, 0.0), "padding must be 1 .* got 2.0"),
    ((WL, PITCH, 1e-3, "as", 3, 0.0, 0.0), "padding must be 1 .* got 3"),
    ((-1.0, PITCH, 1e-3, "as", 2, 0.0, 0.0), "wavelength"),
    ((WL, "x", 1e-3, "as", 2, 0.0, 0.0), "pitch must be a real number"),
    ((WL, PITCH, 1e-3, "as", 2, 2.0, 0.0), "tilt"),
    ((WL, PITCH, 1e-3, "as", 2, 0.0), "a hop must be a tuple"),
]


def test_hop_tuple_is_taken_by_both_modules():
    from optdiff import _core

    cpu = _core.Propagator64(8, GOOD_HOP)
    assert cpu.spec == GOOD_HOP
    for mod in _hop_modules():
        mod.validate_hop(8, GOOD_HOP)
        mod.validate_stack(8, [GOOD_HOP, GOOD_HOP], GOOD_HOP)
        np.testing.assert_array_equal(mod.transfer_function(8, GOOD_HOP, True, False), cpu.transfer_function())


@pytest.mark.parametrize("hop,message", BAD_HOPS)
def test_bad_hop_gives_one_message_from_both_modules(hop, message):
    from optdiff import _core

    with pytest.raises(ValueError, match=message) as cpu:
        _core.Propagator64(8, hop)
    with pytest.raises(ValueError) as cpu_stack:
        _core.PhaseStack32(8, [GOOD_HOP, hop], None)
    assert str(cpu_stack.value) == "layer 1: " + str(cpu.value)
    for mod in _hop_modules():
        for call in (lambda: mod.validate_hop(8, hop), lambda: mod.transfer_function(8, hop)):
            with pytest.raises(ValueError) as gpu:
                call()
            assert str(gpu.value) == str(cpu.value)
        with pytest.raises(ValueError) as gpu_stack:
            mod.validate_stack(8, [GOOD_HOP], hop)
        assert str(gpu_stack.value) == "input hop: " + str(cpu.value)


@pytest.mark.parametrize("kw", [dict(input_distance=float("nan")), dict(input_tilt=(2.0, 0.0)),
                                dict(distances=[4e-3, float("inf")]), dict(method="rayleigh"),
                                dict(padding=True), dict(padding=3), dict(wavelength=0.0)])
def test_stack_errors_are_the_same_on_both_backends(backend, kw):
    args = dict(wavelength=WL, pitch=PITCH, distances=[4e-3, 5e-3], padding=2, input_distance=3e-3)
    args.update(kw)
    with pytest.raises(ValueError) as cpu:
        optdiff.PhaseStack(12, **args)
    with pytest.raises(ValueError) as gpu:
        optdiff.PhaseStack(12, backend=backend, **args)
    assert str(gpu.value) == str(cpu.value)
    single = {k: v for k, v in args.items() if k not in ("distances", "input_distance", "input_tilt")}
    if "distances" not in kw and "input_distance" not in kw and "input_tilt" not in kw:
        with pytest.raises(ValueError) as cpu:
            optdiff.Propagator(12, distance=4e-3, **single)
        with pytest.raises(ValueError) as gpu:
            optdiff.Propagator(12, backend=backend, distance=4e-3, **single)
        assert str(gpu.value) == str(cpu.value)


@pytest.mark.gpu
def test_argument_errors(backend):
    n = 8
    p = optdiff.Propagator(n, backend=backend, wavelength=WL, pitch=PITCH, distance=1e-3)
    x = np.zeros((2, n, n), np.complex64)
    with pytest.raises(TypeError, match="field"):
        p.forward(np.zeros((2, n, n), np.float32))
    with pytest.raises(ValueError, match="shape"):
        p.forward(np.zeros((2, n, n + 1), np.complex64))
    with pytest.raises(ValueError, match="contiguous"):
        p.forward(np.zeros((2, n, 2 * n), np.complex64)[:, :, ::2])
    bad = x.copy()
    bad[1, 2, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        p.forward(bad)
    with pytest.raises(TypeError, match="device array"):
        p.forward(_to_kind(x, "cai", backend), out=x)
    with pytest.raises(ValueError, match="wavelength"):
        optdiff.Propagator(n, backend=backend, wavelength=0.0, pitch=PITCH, distance=1e-3)
    s = optdiff.PhaseStack(n, backend=backend, wavelength=WL, pitch=PITCH, distances=[1e-3, 2e-3])
    ph = np.zeros((2, n, n), np.float32)
    with pytest.raises(TypeError, match="phases"):
        s.forward(x, ph.astype(np.float64))
    with pytest.raises(TypeError, match="host"):
        s.forward(_to_kind(x, "cai", backend), ph)
    _, tape = s.forward_train(x, ph)
    with pytest.raises(ValueError, match="shape"):
        s.backward(tape, np.zeros((3, n, n), np.float32))
    with pytest.raises(TypeError, match="tape"):
        s.backward(object(), np.zeros((2, n, n), np.float32))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("padding", [1, 2])
def test_stack_mse_loss_and_grad_matches_cpu(backend, kind, dtype, padding):
    """The fused intensity-MSE step on the device against the CPU's, through PhaseStack(backend="cuda")."""
    rng = np.random.default_rng(9)
    n, B, L = 16, 5, 3
    real = np.float32 if dtype == np.complex64 else np.float64
    kw = _stack_kwargs(padding, True, True, L)
    cpu = optdiff.PhaseStack(n, backend="cpu", **kw)
    gpu = optdiff.PhaseStack(n, backend=backend, **kw)
    x = _field(rng, (B, n, n), dtype)
    ph = rng.uniform(-np.pi, np.pi, (L, n, n)).astype(real)
    target = rng.uniform(0, 1, (B, n, n)).astype(real)
    loss_ref, g_ref, I_ref = cpu.mse_loss_and_grad(x, ph, target, return_intensity=True)
    X, P, Tg = (_to_kind(a, kind, backend) for a in (x, ph, target))
    loss, g, I = gpu.mse_loss_and_grad(X, P, Tg, return_intensity=True)
    _close(I, I_ref, real, "intensity")
    _close(g, g_ref, real, "grad phases")
    assert abs(loss - loss_ref) <= (1e-5 if real == np.float32 else 1e-12) * loss_ref
    loss2, g2 = gpu.mse_loss_and_grad(X, P, Tg)
    assert loss2 == loss
    _close(g2, g_ref, real, "grad phases without intensity")


@pytest.mark.gpu
def test_stack_mse_loss_and_grad_chunked_and_checked(backend):
    """A 1 MiB scratch budget splits the batch into chunks: the loss and gradient must not change."""
    rng = np.random.default_rng(10)
    n, B, L = 16, 150, 2
    kw = _stack_kwargs(2, True, False, L)
    cpu = optdiff.PhaseStack(n, backend="cpu", **kw)
    gpu = optdiff.PhaseStack(n, backend=backend, **kw)
    x = _field(rng, (B, n, n), np.complex128)
    ph = rng.uniform(-np.pi, np.pi, (L, n, n))
    target = rng.uniform(0, 1, (B, n, n))
    loss_ref, g_ref = cpu.mse_loss_and_grad(x, ph, target)
    mod = optdiff.get_backend(backend).mod
    old = mod.get_workspace_limit()
    mod.set_workspace_limit(1 << 20)
    try:
        loss, g = gpu.mse_loss_and_grad(x, ph, target)
    finally:
        mod.set_workspace_limit(old)
    _close(g, g_ref, np.float64, "grad phases (chunked)")
    assert abs(loss - loss_ref) <= 1e-12 * loss_ref
    with pytest.raises(TypeError, match="target must have dtype float64"):
        gpu.mse_loss_and_grad(x, ph, target.astype(np.float32))
    with pytest.raises(ValueError, match="target must have the shape of field"):
        gpu.mse_loss_and_grad(x, ph, target[:3])
    bad = target.copy()
    bad[4, 2, 2] = np.inf
    with pytest.raises(ValueError, match="target contains NaN or infinite"):
        gpu.mse_loss_and_grad(x, ph, bad)
    with pytest.raises(ValueError, match="batch of 0 samples"):
        gpu.mse_loss_and_grad(x[:0], ph, target[:0])


# ---------------------------------------------------------------------------
# Sampling step: standard_normal, ddpm_update (against the CPU's)
# ---------------------------------------------------------------------------

NOISE_ATOL = 1e-6  # float32-accurate normals; a GPU may contract a*b+c to an FMA
SEED, STREAM = 2**63 + 5, 2**33 + 7  # both 32-bit words of key and stream in use


def _nan_filled(shape, dtype, kind, backend):
    """An output array of `kind` whose every element must be overwritten (NaN until then)."""
    return _to_kind(np.full(shape, np.nan, dtype), kind, backend)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,offset", [((1,), 0), ((3,), 1), ((6,), 3), ((7, 11), 6), ((2, 3, 167), 2),
                                          ((37,), 2**40 + 3), ((5,), 2**63 + 1)])
def test_standard_normal_matches_cpu(backend, kind, dtype, shape, offset):
    ref = optdiff.standard_normal(shape, seed=SEED, stream=STREAM, offset=offset, dtype=dtype)
    out = _nan_filled(shape, dtype, kind, backend)
    assert _normal(backend, out, seed=SEED, stream=STREAM, offset=offset) is out
    got = _to_numpy(out)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    np.testing.assert_allclose(got, ref, rtol=0, atol=NOISE_ATOL)
    # Another stream gives other numbers (the stream reaches the counter).
    other = _normal(backend, np.empty(shape, dtype), seed=SEED, stream=STREAM + 1, offset=offset)
    assert not np.allclose(other, ref, rtol=0, atol=1e-3)


@pytest.mark.gpu
def test_standard_normal_pieces_and_end_of_stream(backend, kind):
    """Pieces drawn with their own offsets are the whole array; offset + size may reach 2**64."""
    whole = optdiff.standard_normal(1003, seed=7, stream=3, offset=5)
    parts = [_nan_filled((k,), np.float32, kind, backend) for k in (1, 6, 9, 987)]
    start = 5
    for p in parts:
        _normal(backend, p, seed=7, stream=3, offset=start)
        start += _to_numpy(p).size
    np.testing.assert_allclose(np.concatenate([_to_numpy(p) for p in parts]), whole, rtol=0, atol=NOISE_ATOL)

    # The last counter of a stream (2**62 - 1) holds numbers 2**64 - 4 .. 2**64 - 1.
    end = _nan_filled((9,), np.float32, kind, backend)
    _normal(backend, end, seed=7, stream=3, offset=2**64 - 9)
    ref = optdiff.standard_normal(9, seed=7, stream=3, offset=2**64 - 9)
    np.testing.assert_allclose(_to_numpy(end), ref, rtol=0, atol=NOISE_ATOL)
    assert len(set(ref.tolist())) == 9


def _ddpm_args(sigma):
    return dict(c1=1.013, c2=0.37, sigma=sigma, eps_scale=0.8, eps_offset=-0.15, seed=SEED, stream=STREAM,
                offset=6)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sigma", [0.0, 0.3])
def test_ddpm_update_matches_cpu(backend, kind, dtype, sigma):
    rng = np.random.default_rng(11)
    shape = (3, 7, 5)  # 105 values: the last Philox counter is partly used
    x = rng.standard_normal(shape).astype(dtype)
    v = rng.uniform(0, 1, shape).astype(dtype)
    kw = _ddpm_args(sigma)
    ref = optdiff.ddpm_update(x, v, **kw)
    # Independent of both implementations: the formula with the CPU's noise.
    z = optdiff.standard_normal(shape, seed=SEED, stream=STREAM, offset=6, dtype=dtype)
    formula = kw["c1"] * (x - kw["c2"] * (kw["eps_scale"] * v + kw["eps_offset"])) + sigma * z
    np.testing.assert_allclose(ref, formula, rtol=1e-5, atol=1e-5)
    if dtype == np.float32:
        tol = dict(rtol=2e-6, atol=NOISE_ATOL)
    else:
        tol = dict(rtol=1e-12, atol=NOISE_ATOL if sigma else 1e-12)

    got = _ddpm(backend, _to_kind(x, kind, backend), _to_kind(v, kind, backend), **kw)
    assert _to_numpy(got).dtype == dtype
    np.testing.assert_allclose(_to_numpy(got), ref, **tol)

    out = _nan_filled(shape, dtype, kind, backend)
    assert _ddpm(backend, _to_kind(x, kind, backend), _to_kind(v, kind, backend), out, **kw) is out
    np.testing.assert_allclose(_to_numpy(out), ref, **tol)

    X, V = _to_kind(x, kind, backend), _to_kind(v, kind, backend)
    assert _ddpm(backend, X, V, X, **kw) is X  # in place over x
    np.testing.assert_allclose(_to_numpy(X), ref, **tol)
    np.testing.assert_array_equal(_to_numpy(V), v)
    X, V = _to_kind(x, kind, backend), _to_kind(v, kind, backend)
    assert _ddpm(backend, X, V, out=V, **kw) is V  # in place over eps
    np.testing.assert_allclose(_to_numpy(V), ref, **tol)
    np.testing.assert_array_equal(_to_numpy(X), x)


@pytest.mark.gpu
def test_ddpm_update_empty_and_offsets(backend):
    """Empty arrays are fine; the noise follows the offset (a step split in two equals the whole)."""
    e = np.zeros((0, 4), np.float32)
    assert _ddpm(backend, e, e, c1=1, c2=0, sigma=1, seed=0, stream=0).shape == (0, 4)
    assert _normal(backend, e.copy(), seed=0).shape == (0, 4)
    rng = np.random.default_rng(12)
    x = rng.standard_normal(50).astype(np.float32)
    v = rng.standard_normal(50).astype(np.float32)
    kw = dict(c1=1.0, c2=0.5, sigma=0.7, seed=4, stream=1)
    whole = _ddpm(backend, x, v, offset=3, **kw)
    a = _ddpm(backend, x[:21], v[:21], offset=3, **kw)
    b = _ddpm(backend, x[21:], v[21:], offset=24, **kw)
    np.testing.assert_array_equal(np.concatenate([a, b]), whole)
    shifted = _ddpm(backend, x, v, offset=4, **kw)
    assert np.abs(shifted - whole).max() > 0.1


# ---------------------------------------------------------------------------
# Real input fields (amplitudes) in the stack's forward pass
# ---------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("padding", [1, 2])
@pytest.mark.parametrize("with_input", [False, True])  # the real field feeds the input hop or layer 0
def test_stack_forward_real_field(backend, kind, dtype, padding, with_input):
    rng = np.random.default_rng(13)
    n, B, L = 16, 3, 3
    real = np.float32 if dtype == np.complex64 else np.float64
    cpu, gpu = _stack_pair(backend, n, L, padding, with_input, True)
    amp = rng.uniform(0, 1, (B, n, n)).astype(real)
    ph = rng.uniform(-np.pi, np.pi, (L, n, n)).astype(real)
    ref = cpu.forward(amp.astype(dtype), ph)  # the complex field with zero imaginary part
    A, P = _to_kind(amp, kind, backend), _to_kind(ph, kind, backend)
    _close(gpu.forward(A, P), ref, real, "real-field intensity")
    _close(gpu.forward(_to_kind(amp.astype(dtype), kind, backend), P), ref, real, "complex-field intensity")
    out = _nan_filled((B, n, n), real, kind, backend)
    assert gpu.forward(A, P, out=out) is out
    _close(out, ref, real, "real-field intensity into out")
    _close(gpu.forward(_to_kind(amp[1], kind, backend), P), ref[1], real, "single real field")
    np.testing.assert_array_equal(_to_numpy(A), amp)  # the input is only read


@pytest.mark.gpu
def test_stack_forward_real_field_chunked_and_dispatch(backend):
    """Chunks of a real batch start at their own samples; PhaseStack(backend="cuda") takes real fields."""
    rng = np.random.default_rng(14)
    n, B = 16, 150
    kw = _stack_kwargs(2, True, False, 2)
    cpu = optdiff.PhaseStack(n, backend="cpu", **kw)
    amp = rng.uniform(0, 1, (B, n, n)).astype(np.float32)
    ph = rng.uniform(-np.pi, np.pi, (2, n, n)).astype(np.float32)
    ref = cpu.forward(amp.astype(np.complex64), ph)
    gpu = optdiff.PhaseStack(n, backend=backend, **kw)
    mod = optdiff.get_backend(backend).mod
    old = mod.get_workspace_limit()
    mod.set_workspace_limit(1 << 20)
    try:
        _close(gpu.forward(amp, ph), ref, np.float32, "chunked real-field intensity")
    finally:
        mod.set_workspace_limit(old)


# ---------------------------------------------------------------------------
# Errors of the new entry points
# ---------------------------------------------------------------------------

@pytest.mark.gpu
def test_sampler_and_real_field_errors(backend):
    f32 = np.zeros(10, np.float32)
    dev = _to_kind(f32, "cai", backend)
    with pytest.raises(TypeError, match="out must be float32 or float64, got int32"):
        _normal(backend, np.zeros(10, np.int32), seed=0)
    with pytest.raises(TypeError, match="must be a NumPy array or a CUDA device array"):
        _normal(backend, [0.0, 1.0], seed=0)
    with pytest.raises(ValueError, match="seed must be an integer"):
        _normal(backend, f32.copy(), seed=-1)
    with pytest.raises(ValueError, match="stream must be an integer"):
        _normal(backend, f32.copy(), seed=0, stream=2**64)
    with pytest.raises(ValueError, match="past the end of the stream"):
        _normal(backend, f32.copy(), seed=0, offset=2**64 - 9)
    with pytest.raises(ValueError, match="contiguous"):
        _normal(backend, np.zeros(20, np.float32)[::2], seed=0)
    ro = f32.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        _normal(backend, ro, seed=0)

    kw = _ddpm_args(0.3)
    with pytest.raises(TypeError, match="eps must have dtype float32, got float64"):
        _ddpm(backend, f32, f32.astype(np.float64), **kw)
    with pytest.raises(ValueError, match="eps must have the shape of x"):
        _ddpm(backend, f32, f32[:9].copy(), **kw)
    with pytest.raises(TypeError, match="out must have dtype float32"):
        _ddpm(backend, f32, f32, np.zeros(10, np.float64), **kw)
    with pytest.raises(TypeError, match="eps is a device array but x is a NumPy array"):
        _ddpm(backend, f32, dev, **kw)
    with pytest.raises(TypeError, match="out is a NumPy \\(host\\) array but x is on the GPU"):
        _ddpm(backend, dev, _to_kind(f32, "cai", backend), f32.copy(), **kw)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        _ddpm(backend, f32, f32, **_ddpm_args(-0.1))
    with pytest.raises(ValueError, match="must be finite"):
        _ddpm(backend, f32, f32, **dict(kw, c1=np.nan))
    buf = np.zeros(12, np.float32)
    with pytest.raises(ValueError, match="out overlaps x"):
        _ddpm(backend, buf[:10], f32, buf[2:], **kw)
    if backend == "cuda-emu":  # views of one block of "device" memory
        dbuf = np.zeros(12, np.float32)
        with pytest.raises(ValueError, match="out overlaps eps"):
            _ddpm(backend, dev, _HostCAI(dbuf[1:11]), _HostCAI(dbuf[:10]), **kw)

    n = 8
    s = optdiff.PhaseStack(n, backend=backend, wavelength=WL, pitch=PITCH, distances=[1e-3, 2e-3])
    amp = np.ones((2, n, n), np.float32)
    with pytest.raises(TypeError, match="phases must be float32 to go with a float32 field, got float64"):
        s.forward(amp, np.zeros((2, n, n), np.float64))
    with pytest.raises(ValueError, match="shape"):
        s.forward(np.ones((2, n, n + 1), np.float32), np.zeros((2, n, n), np.float32))
    with pytest.raises(TypeError, match="real float32/float64 amplitudes"):
        s.forward(np.ones((2, n, n), np.int64), np.zeros((2, n, n), np.float32))
    with pytest.raises(TypeError, match="field must be complex64 or complex128, got float32"):
        s.camera_field(amp, np.zeros((2, n, n), np.float32))  # only forward reads amplitudes
    with pytest.raises(TypeError, match="host"):
        s.forward(_to_kind(amp, "cai", backend), np.zeros((2, n, n), np.float32))


@pytest.mark.gpu
def test_overflowing_intensity_and_misaligned_arrays(backend):
    """Issue #13 items 7 and 8 on the CUDA back end: an intensity that overflows raises the CPU's
    ValueError; NumPy inputs are copied to the device (alignment does not matter), misaligned
    device addresses are refused naming the argument."""
    n = 8
    geom = dict(wavelength=WL, pitch=PITCH, distances=[1e-3, 2e-3])
    s, cpu = optdiff.PhaseStack(n, backend=backend, **geom), optdiff.PhaseStack(n, **geom)
    big = np.full((2, n, n), 1e30, np.complex64)
    ph = np.zeros((2, n, n), np.float32)
    with pytest.raises(ValueError) as want:
        cpu.forward(big, ph)
    for call in (lambda: s.forward(big, ph), lambda: s.forward_train(big, ph),
                 lambda: s.forward(big.real.copy(), ph),
                 lambda: s.forward(_to_kind(big, "cai", backend), _to_kind(ph, "cai", backend))):
        with pytest.raises(ValueError) as got:
            call()
        assert str(got.value) == str(want.value)

    rng = np.random.default_rng(3)
    x = _field(rng, (2, n, n), np.complex64)
    p = optdiff.Propagator(n, backend=backend, wavelength=WL, pitch=PITCH, distance=1e-3)
    np.testing.assert_array_equal(p.forward(unaligned(x)), p.forward(x))
    np.testing.assert_array_equal(s.forward(unaligned(x), unaligned(ph)), s.forward(x, ph))
    if backend != "cuda-emu":
        return
    # Host memory posing as device memory (emulation only): the module checks the addresses.
    f32 = np.zeros(10, np.float32)
    cases = [
        ("field", lambda: p.forward(_HostCAI(unaligned(x)))),
        ("field", lambda: s.forward(_HostCAI(unaligned(x)), _HostCAI(ph))),
        ("phases", lambda: s.forward(_HostCAI(x), _HostCAI(unaligned(ph)))),
        ("target", lambda: s.mse_loss_and_grad(_HostCAI(x), _HostCAI(ph), _HostCAI(unaligned(ph)))),
        ("out", lambda: _normal(backend, _HostCAI(unaligned(f32)), seed=0)),
        ("x", lambda: _ddpm(backend, _HostCAI(unaligned(f32)), _HostCAI(f32), **_ddpm_args(0.3))),
        ("eps", lambda: _ddpm(backend, _HostCAI(f32), _HostCAI(unaligned(f32)), **_ddpm_args(0.3))),
    ]
    for name, call in cases:
        with pytest.raises(ValueError, match=f"^{name} is not aligned"):
            call()


# ---------------------------------------------------------------------------
# Issue 22: what a first run on a GPU could hit, tested where the CPU can
# ---------------------------------------------------------------------------

def test_gpu_present_means_cuda_usable():
    """On a machine with an NVIDIA GPU a broken CUDA build is a failure, not a skip (item 1)."""
    evidence = cb.gpu_present()
    if evidence or os.environ.get("OPTDIFF_REQUIRE_CUDA") == "1":
        assert HAS_GPU, f"{evidence or 'OPTDIFF_REQUIRE_CUDA=1'} but: {cb.cuda_unavailable_reason()}"
    else:
        assert evidence == ""


def test_gpu_present_sees_device_nodes_and_nvidia_smi(monkeypatch, tmp_path):
    monkeypatch.setattr(cb.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(cb.shutil, "which", lambda name: None)
    assert cb.gpu_present() == ""
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-x)'\n")
    smi.chmod(0o755)
    monkeypatch.setattr(cb.shutil, "which", lambda name: str(smi))
    assert "NVIDIA H200" in cb.gpu_present()
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    assert cb.gpu_present() == ""  # a driverless nvidia-smi is no evidence
    monkeypatch.setattr(cb.glob, "glob", lambda pattern: ["/dev/nvidia0"])
    assert cb.gpu_present() == "device node /dev/nvidia0"


def test_broken_cuda_on_a_gpu_machine_fails_the_tests(monkeypatch):
    """The fixture's decision: skip without a GPU, fail with the stored reason with one."""
    monkeypatch.setattr(sys.modules[__name__], "HAS_GPU", False)
    monkeypatch.setattr(cb, "cuda_unavailable_reason", lambda: "stored import error XYZ")
    monkeypatch.delenv("OPTDIFF_REQUIRE_CUDA", raising=False)
    monkeypatch.setattr(cb, "gpu_present", lambda: "")
    with pytest.raises(pytest.skip.Exception, match="stored import error XYZ"):
        _cuda_or_skip()
    monkeypatch.setattr(cb, "gpu_present", lambda: "device node /dev/nvidia0")
    with pytest.raises(pytest.fail.Exception, match="/dev/nvidia0.*stored import error XYZ"):
        _cuda_or_skip()
    monkeypatch.setattr(cb, "gpu_present", lambda: "")
    monkeypatch.setenv("OPTDIFF_REQUIRE_CUDA", "1")
    with pytest.raises(pytest.fail.Exception, match="OPTDIFF_REQUIRE_CUDA=1"):
        _cuda_or_skip()


def _module_needed(path: str) -> list:
    import re
    import shutil
    import subprocess

    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf not installed")
    dyn = subprocess.run([readelf, "-d", path], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)


def test_cufft_soname_recorded_at_configure_time():
    """The record next to the module names the cuFFT soname the module needs (item 3)."""
    spec = importlib.util.find_spec("optdiff._cuda")
    if spec is None:
        pytest.skip("optdiff._cuda not built")
    rec = cb.cufft_record()
    assert rec, "no _cuda_cufft.txt next to the module (cmake/OptdiffCUDA.cmake writes it)"
    needed = [n for n in _module_needed(os.path.realpath(spec.origin)) if n.startswith("libcufft")]
    assert needed == [rec["soname"]]
    assert os.path.exists(os.path.join(rec["libdir"], rec["soname"]))


def test_cufft_candidates_are_exactly_the_soname(tmp_path):
    rec = {"soname": "libcufft.so.12", "libdir": "/build/machine/lib", "cuda_major": "13"}
    got = cb.cufft_candidates(rec, environ={"CUDA_HOME": "/opt/cuda"}, nvidia_roots=["/sp/nvidia"])
    assert got == ["/build/machine/lib/libcufft.so.12", "/opt/cuda/lib64/libcufft.so.12",
                   "/opt/cuda/lib/libcufft.so.12", "/usr/local/cuda/lib64/libcufft.so.12",
                   "/sp/nvidia/cu13/lib/libcufft.so.12", "/sp/nvidia/cufft/lib/libcufft.so.12"]
    assert cb.cufft_candidates({}, environ={}, nvidia_roots=[]) == []
    (tmp_path / "_cuda_cufft.txt").write_text("# comment\nsoname=libcufft.so.11\nlibdir=/x\ncuda_major=12\n")
    assert cb.cufft_record(str(tmp_path)) == {"soname": "libcufft.so.11", "libdir": "/x", "cuda_major": "12"}
    assert cb.cufft_record(str(tmp_path / "missing")) == {}


def test_failed_import_reason_names_the_cufft_search(monkeypatch):
    """The import error and what the preload looked for end up in the reason text."""
    monkeypatch.setattr(cb, "_modules", {})
    monkeypatch.setattr(cb, "cufft_record", lambda: {"soname": "libcufft.so.12", "libdir": "/nowhere"})
    monkeypatch.setattr(cb, "cufft_candidates", lambda rec: ["/nowhere/libcufft.so.12"])

    def fail(name):
        raise ImportError("libcufft.so.12: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(cb.importlib, "import_module", fail)
    reason = cb.cuda_unavailable_reason()
    assert "cannot open shared object file" in reason
    assert "libcufft.so.12 not found" in reason and "$CUDA_HOME/lib64" in reason
    assert cb.cuda_device_count() == 0


def _emu_only(backend):
    if backend != "cuda-emu":
        pytest.skip("checks the emulation module's plan cache (the same code as cuFFT's)")


@pytest.mark.gpu
def test_fft_plan_cache_keys_the_per_thread_stream_by_thread(backend):
    """Handle 2 (cudaStreamPerThread) is one stream per thread: no plan is shared (item 5)."""
    _emu_only(backend)
    mod = _EMU
    assert mod.stream_identity(0) == mod.stream_identity(1) == (0, 0)
    assert mod.stream_identity(12345) == (12345, 0)
    ids = []
    threads = [threading.Thread(target=lambda: ids.append(mod.stream_identity(2))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ids[0][0] == ids[1][0] == 2 and ids[0][1] != ids[1][1] and 0 not in (ids[0][1], ids[1][1])

    n = 12
    rng = np.random.default_rng(21)
    x = _field(rng, (2, n, n), np.complex64)
    kw = dict(wavelength=WL, pitch=PITCH, distance=4e-3, padding=1)
    ref = optdiff.Propagator(n, backend="cpu", **kw).forward(x)
    p = optdiff.Propagator(n, backend="cuda-emu", **kw)
    p.forward(x)  # make the per-precision instance before the threads share it
    for stream, want in ((2, 2), (0, 1)):
        mod.clear_plan_cache()
        outs = []
        run = [threading.Thread(target=lambda: outs.append(_to_numpy(p.forward(_HostCAI(x, stream)))))
               for _ in range(2)]
        for t in run:
            t.start()
        for t in run:
            t.join()
        assert mod.plan_cache_stats()["cached"] == want, stream  # one 2-D plan per stream identity
        for o in outs:
            _close(o, ref, np.complex64, f"stream {stream}")


@pytest.mark.gpu
def test_fft_plan_cache_evicts_without_blocking(backend):
    """More geometries than the cache holds: the LRU stays at 32, evicted plans are destroyed
    (once idle and unused, outside the lock) and results stay right (item 6)."""
    _emu_only(backend)
    mod = _EMU
    mod.clear_plan_cache()
    before = mod.plan_cache_stats()["destroyed"]
    rng = np.random.default_rng(22)
    kw = dict(wavelength=WL, pitch=PITCH, distance=2e-3, padding=1)
    for n in range(4, 44):  # 40 sizes, one 2-D plan each
        optdiff.Propagator(n, backend="cuda-emu", **kw).forward(_field(rng, (1, n, n), np.complex64))
    st = mod.plan_cache_stats()
    assert st["cached"] == 32
    assert st["destroyed"] - before + st["retired"] == 8  # every evicted plan is retired or gone
    assert st["retired"] <= 1  # reaped at the next plan lookup (the last eviction waits for one)
    x = _field(rng, (2, 4, 4), np.complex64)
    _close(optdiff.Propagator(4, backend="cuda-emu", **kw).forward(x),
           optdiff.Propagator(4, backend="cpu", **kw).forward(x), np.complex64, "after eviction")
    mod.clear_plan_cache()
    st = mod.plan_cache_stats()
    assert st["cached"] == 0 and st["retired"] == 0


@pytest.mark.gpu
def test_backward_orders_itself_after_the_tapes_stream(backend, monkeypatch):
    """Forward on one stream, backward on another: an event wait orders them (item 7)."""
    _emu_only(backend)
    calls = []
    real_wait = _EMU.stream_wait
    monkeypatch.setattr(_EMU, "stream_wait", lambda *a: (calls.append(a), real_wait(*a))[1])
    rng = np.random.default_rng(23)
    n, B, L = 8, 2, 2
    cpu, gpu = _stack_pair(backend, n, L, 2, True, False)
    x = _field(rng, (B, n, n), np.complex64)
    ph = rng.uniform(-np.pi, np.pi, (L, n, n)).astype(np.float32)
    g = rng.standard_normal((B, n, n)).astype(np.float32)
    _, tape_ref = cpu.forward_train(x, ph)
    ref = cpu.backward(tape_ref, g, input_grad=True)
    _, tape = gpu.forward_train(_HostCAI(x, 5), _HostCAI(ph, 5))
    assert tape.stream == 5
    got = gpu.backward(tape, _HostCAI(g, 7), input_grad=True)
    assert calls == [(7, 5, 0)]  # waiter, producer, device
    _close(got[0], ref[0], np.float32, "grad_phases across streams")
    _close(got[1], ref[1], np.complex64, "grad_field across streams")
    _, tape = gpu.forward_train(_HostCAI(x, 7), _HostCAI(ph, 7))
    gpu.backward(tape, _HostCAI(g, 7))
    assert len(calls) == 1  # same stream: nothing to order


def test_torch_lazy_conj_and_neg_views_are_resolved_or_refused():
    """``t.conj()`` shares the unconjugated memory: inputs resolved, outputs refused (item 8)."""
    torch = pytest.importorskip("torch")
    from optdiff.optics.backends.cuda_arrays import torch_resolved

    t = torch.randn(5, dtype=torch.complex64)
    c = t.conj()
    assert c.is_conj() and c.data_ptr() == t.data_ptr()  # what made it a defect
    r = torch_resolved(c, "field")
    assert not r.is_conj() and r.data_ptr() != t.data_ptr()
    np.testing.assert_array_equal(r.numpy(), np.conj(t.numpy()))
    assert torch_resolved(t, "field") is t  # no copy without a flag
    with pytest.raises(ValueError, match="out is a lazily conjugated or negated PyTorch view"):
        torch_resolved(c, "out", output=True)
    neg = c.imag  # the imaginary part of a conjugate view is a lazily negated view
    assert neg.is_neg()
    np.testing.assert_array_equal(torch_resolved(neg, "x").numpy(), -t.numpy().imag)


@pytest.mark.gpu
def test_torch_conj_views_on_the_device(backend):
    if backend != "cuda":
        pytest.skip("PyTorch CUDA tensors need a real device")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(24)
    n = 12
    x = _field(rng, (2, n, n), np.complex64)
    kw = dict(wavelength=WL, pitch=PITCH, distance=3e-3, padding=2)
    ref = optdiff.Propagator(n, backend="cpu", **kw).forward(np.conj(x))
    gpu = optdiff.Propagator(n, backend="cuda", **kw)
    _close(gpu.forward(torch.from_numpy(x).cuda().conj()), ref, np.complex64, "conj view input")
    with pytest.raises(ValueError, match="lazily conjugated"):
        gpu.forward(torch.from_numpy(x).cuda(), out=torch.zeros(2, n, n, dtype=torch.complex64,
                                                                   device="cuda").conj())


def _offset_view(a: np.ndarray, offset: int) -> np.ndarray:
    """A copy of `a` whose data starts `offset` bytes past a 64-byte boundary."""
    raw = np.zeros(a.nbytes + 64 + offset, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    v = np.frombuffer(raw.data, dtype=a.dtype, count=a.size, offset=start).reshape(a.shape)
    v[...] = a
    return v


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,offset,need", [(np.complex64, 4, 8), (np.complex128, 8, 16)])
def test_complex_device_arrays_need_their_full_alignment(backend, dtype, offset, need):
    """cuFFT works in place on the caller's arrays as float2/double2: an address aligned for
    the real part only (4 bytes for complex64, 8 for complex128) is refused by name (item 9)."""
    _emu_only(backend)
    rng = np.random.default_rng(25)
    n = 8
    x = _field(rng, (2, n, n), dtype)
    p = optdiff.Propagator(n, backend=backend, wavelength=WL, pitch=PITCH, distance=1e-3, padding=1)
    bad = _offset_view(x, offset)
    assert bad.flags.aligned  # NumPy itself finds it aligned (alignof the real part)
    with pytest.raises(ValueError, match=f"^field is not aligned.*multiple of {need} bytes"):
        p.forward(_HostCAI(bad))
    with pytest.raises(ValueError, match=f"^out is not aligned.*multiple of {need} bytes"):
        p.forward(_HostCAI(x), out=_HostCAI(_offset_view(np.zeros_like(x), offset)))
    # The module checks too (addresses from any caller), under its own argument names.
    impl = getattr(_EMU, "Propagator" + ("32" if dtype == np.complex64 else "64"))(
        n, (WL, PITCH, 1e-3, "as", 1, 0.0, 0.0))
    src, dst = _offset_view(x, need), _offset_view(np.zeros_like(x), offset)
    with pytest.raises(ValueError, match=f"^output is not aligned.*multiple of {need} bytes"):
        impl.forward(src.ctypes.data, dst.ctypes.data, 2, 0)
    good = _offset_view(x, need)
    _close(_to_numpy(p.forward(_HostCAI(good))), p.forward(x), dtype, "aligned view")
