"""optdiff.torch: gradients (gradcheck), agreement with the NumPy core, no copies, no_grad,
torch.compile without graph breaks, batch dimensions and bad input."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import optdiff  # noqa: E402
import optdiff.torch as odt  # noqa: E402
from optdiff.torch import ops  # noqa: E402

WL, PITCH, DZ = 850e-9, 9.2e-6, 5e-3
GEOM = dict(wavelength=WL, pitch=PITCH, distances=[DZ, 2 * DZ], input_distance=DZ)
TOL = {torch.float32: dict(rtol=2e-5, atol=1e-6), torch.float64: dict(rtol=1e-12, atol=1e-13)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny problems: one thread (two OpenMP threads on a loaded 2-core machine wait on each other).
    before = optdiff.get_num_threads()
    optdiff.set_num_threads(1)
    yield
    optdiff.set_num_threads(before)


def field(shape, dtype=torch.complex128, seed=0):
    g = torch.Generator().manual_seed(seed)
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    return torch.complex(torch.randn(shape, generator=g, dtype=real), torch.randn(shape, generator=g, dtype=real))


def stack(n, dtype=torch.float64, **kw):
    return odt.OpticalStack(n, **{**GEOM, **kw}, dtype=dtype, init="uniform", generator=torch.Generator().manual_seed(1))


def core_stack(n, **kw):
    return optdiff.PhaseStack(n, **{**GEOM, **kw})


# --------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("recompute", [False, True])
def test_stack_gradcheck_field_and_phases(recompute):
    m = stack(8)
    f = field((2, 8, 8)).requires_grad_()
    p = m.phases.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda f, p: odt.stack_intensity(f, p, m.geometry, recompute=recompute), (f, p))


def test_stack_gradcheck_real_amplitudes_and_tilts():
    m = stack(8, tilts=[(1e-3, -2e-3), (0.0, 5e-4)], input_tilt=(2e-3, 0.0), method="bl-as", padding=1)
    a = torch.rand(2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).requires_grad_()
    p = m.phases.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, p: odt.stack_intensity(a, p, m.geometry), (a, p))


@pytest.mark.parametrize("adjoint", [False, True])
def test_propagate_gradcheck(adjoint):
    f = field((2, 8, 8)).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda f: odt.propagate(f, wavelength=WL, pitch=PITCH, distance=DZ, tilt=(1e-3, 0.0), adjoint=adjoint), (f,))


def test_a_second_derivative_is_refused_with_a_message():
    m = stack(8)
    f = field((1, 8, 8))
    (g,) = torch.autograd.grad(m(f).sum(), m.phases, create_graph=True)  # a first derivative is fine
    with pytest.raises(RuntimeError, match="no second derivative"):
        g.sum().backward()


def test_fused_mse_gradcheck_and_equals_the_taped_loss():
    m = stack(8)
    f, t = field((2, 8, 8)), torch.rand(2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    p = m.phases.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda p: odt.stack_mse(f, p, t, m.geometry), (p,))
    loss = m.mse_loss(f, t)
    loss.backward()
    g_fused = m.phases.grad.clone()
    m.zero_grad()
    ref = torch.nn.functional.mse_loss(m(f), t)
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(g_fused, m.phases.grad, rtol=1e-10, atol=1e-14)


def test_fused_mse_refuses_inputs_that_require_grad_by_name():
    m = stack(8)
    f, t = field((2, 8, 8)), torch.rand(2, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="field requires grad, but the fused MSE step differentiates the phases only"):
        m.mse_loss(f.requires_grad_(), t)
    with pytest.raises(ValueError, match="target requires grad"):
        m.mse_loss(f.detach(), t.requires_grad_())
    with pytest.raises(ValueError, match="target must be torch.float64 shaped like the field"):
        m.mse_loss(f.detach(), torch.rand(2, 4, 4, dtype=torch.float64))


# --------------------------------------------------------------------------- agreement with the core

@pytest.mark.parametrize("real", [torch.float32, torch.float64])
def test_module_equals_the_numpy_core(real):
    n, cdt = 16, {torch.float32: torch.complex64, torch.float64: torch.complex128}[real]
    m = stack(n, dtype=real)
    f = field((3, n, n), cdt).requires_grad_()
    I = m(f)
    gI = torch.rand(I.shape, dtype=real, generator=torch.Generator().manual_seed(2))
    I.backward(gI)
    st = core_stack(n)
    ph = m.phases.detach().numpy()
    I_ref, tape = st.forward_train(f.detach().numpy(), ph)
    g_ph, g_f = st.backward(tape, gI.numpy(), input_grad=True)
    np.testing.assert_allclose(I.detach().numpy(), I_ref, **TOL[real])
    np.testing.assert_allclose(m.phases.grad.numpy(), g_ph, **TOL[real])
    np.testing.assert_allclose(f.grad.numpy(), g_f, **TOL[real])


def test_propagation_module_equals_the_core_and_its_adjoint():
    n = 16
    p = odt.Propagation(n, wavelength=WL, pitch=PITCH, distance=DZ, method="fresnel")
    core = optdiff.Propagator(n, wavelength=WL, pitch=PITCH, distance=DZ, method="fresnel")
    f, g = field((2, n, n), seed=4), field((2, n, n), seed=5)
    np.testing.assert_allclose(p(f).numpy(), core.forward(f.numpy()), rtol=1e-13, atol=1e-13)
    # <A f, g> = <f, A^H g>
    lhs, rhs = torch.vdot(p(f).flatten(), g.flatten()), torch.vdot(f.flatten(), p.adjoint(g).flatten())
    assert abs(complex(lhs - rhs)) < 1e-10 * abs(complex(lhs))


def test_batch_dimensions():
    n = 8
    m = stack(n)
    f = field((2, 3, n, n))
    I = m(f)
    assert I.shape == (2, 3, n, n)
    torch.testing.assert_close(I.reshape(6, n, n), m(f.reshape(6, n, n)), rtol=0, atol=0)
    torch.testing.assert_close(m(f[1, 2]), I[1, 2], rtol=1e-14, atol=0)   # one [n, n] field
    fr = f.clone().requires_grad_()
    m(fr).sum().backward()
    assert fr.grad.shape == (2, 3, n, n) and m.phases.grad.shape == (2, n, n)


def test_no_grad_and_inference_mode_keep_no_tape(monkeypatch):
    n = 8
    m = stack(n)
    f = field((2, n, n))
    calls = []
    st = ops._stack(torch.device("cpu"), n, *m.geometry.op_args())
    orig = st.forward_train
    monkeypatch.setattr(st, "forward_train", lambda *a, **k: calls.append(1) or orig(*a, **k))
    with torch.no_grad():
        I0 = m(f)
    with torch.inference_mode():
        I1 = m(f)
    assert not I0.requires_grad and not I1.requires_grad and calls == []
    I2 = m(f)
    assert I2.requires_grad and calls == [1]
    torch.testing.assert_close(I0, I2.detach(), rtol=0, atol=0)
    torch.testing.assert_close(I1, I0, rtol=0, atol=0)


# --------------------------------------------------------------------------- no copies

def test_cpu_tensors_reach_the_core_without_copies(monkeypatch):
    n = 8
    m = stack(n, dtype=torch.float32)
    f = field((2, 3, n, n), torch.complex64).requires_grad_()
    st = ops._stack(torch.device("cpu"), n, *m.geometry.op_args())
    seen = {}
    fwd, bwd = st.forward_train, st.backward

    def forward_train(x, p, *a, **k):
        seen["field"], seen["phases"] = x, p
        seen["out"] = fwd(x, p, *a, **k)
        return seen["out"]

    def backward(tape, g, *a, **k):
        seen["grad_intensity"] = g
        seen["grads"] = bwd(tape, g, *a, **k)
        return seen["grads"]

    monkeypatch.setattr(st, "forward_train", forward_train)
    monkeypatch.setattr(st, "backward", backward)
    I = m(f)
    gI = torch.ones(I.shape, dtype=torch.float32)
    I.backward(gI)
    assert seen["field"].ctypes.data == f.data_ptr() and np.shares_memory(seen["field"], f.detach().numpy())
    assert seen["phases"].ctypes.data == m.phases.data_ptr()
    assert I.data_ptr() == seen["out"][0].ctypes.data               # the core's output, not a copy
    assert seen["grad_intensity"].ctypes.data == gI.data_ptr()
    assert f.grad.data_ptr() == seen["grads"][1].ctypes.data
    # propagate: the output tensor is the array the core wrote
    p = odt.Propagation(n, wavelength=WL, pitch=PITCH, distance=DZ)
    core = ops._propagator(torch.device("cpu"), n, WL, PITCH, DZ, "as", 2, [0.0, 0.0])
    got = {}
    orig = core.forward
    monkeypatch.setattr(core, "forward", lambda x, *a: got.setdefault("io", (x, orig(x, *a)))[1])
    out = p(f.detach())
    assert got["io"][0].ctypes.data == f.data_ptr() and out.data_ptr() == got["io"][1].ctypes.data


def test_lazy_conjugate_and_negative_views_are_resolved():
    n = 8
    m = stack(n)
    f = field((2, n, n))
    with torch.no_grad():
        torch.testing.assert_close(m(f.conj()), m(f.conj().resolve_conj()), rtol=0, atol=0)
        torch.testing.assert_close(m(-f), m((-f).clone()), rtol=0, atol=0)
    p = odt.Propagation(n, wavelength=WL, pitch=PITCH, distance=DZ)
    torch.testing.assert_close(p(f.conj()), p(f.conj().resolve_conj()), rtol=0, atol=0)


# --------------------------------------------------------------------------- torch.compile

def test_compile_fullgraph_matches_eager():
    n = 8
    m = stack(n, dtype=torch.float32)
    p = odt.Propagation(n, wavelength=WL, pitch=PITCH, distance=DZ)
    f = field((2, 2, n, n), torch.complex64)

    def loss(x):
        return (m(p.adjoint(p(x))) ** 2).mean()

    xc = f.clone().requires_grad_()
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)  # fullgraph: a break raises
    lc = compiled(xc)
    lc.backward()
    gc = m.phases.grad.clone()
    m.zero_grad()
    xe = f.clone().requires_grad_()
    le = loss(xe)
    le.backward()
    torch.testing.assert_close(lc, le)
    torch.testing.assert_close(gc, m.phases.grad)
    torch.testing.assert_close(xc.grad, xe.grad)


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.float16, torch.bfloat16])
def test_integer_and_half_dtypes_name_the_field(dtype):
    m = stack(8, dtype=torch.float32)
    f = torch.ones(2, 8, 8, dtype=dtype)
    with pytest.raises(TypeError, match="field must be"):
        m(f)
    with pytest.raises(TypeError, match="field must be complex64 or complex128"):
        odt.propagate(f, wavelength=WL, pitch=PITCH, distance=DZ)


def test_bad_input_names_the_argument():
    n = 8
    m = stack(n, dtype=torch.float32)
    f = field((2, n, n), torch.complex64)
    with pytest.raises(TypeError, match="phases must be torch.float64"):       # precision mismatch
        odt.stack_intensity(f.to(torch.complex128), m.phases, m.geometry)
    with pytest.raises(ValueError, match="field must be contiguous"):         # a transposed view
        m(f.transpose(-1, -2))
    with pytest.raises(ValueError, match="field must be contiguous"):
        odt.propagate(field((2, n, 2 * n), torch.complex64)[..., ::2], wavelength=WL, pitch=PITCH, distance=DZ)
    with pytest.raises(ValueError, match="phases must be contiguous"):
        odt.stack_intensity(f, m.phases.detach().transpose(1, 2), m.geometry)
    with pytest.raises(ValueError, match="phases is on meta but field on cpu"):  # two devices
        odt.stack_intensity(f, m.phases.detach().to("meta"), m.geometry)
    with pytest.raises(ValueError, match="field is on device meta"):
        odt.propagate(f.to("meta"), wavelength=WL, pitch=PITCH, distance=DZ)
    with pytest.raises(ValueError, match=r"field must end in \(8, 8\)"):
        m(field((2, 16, 16), torch.complex64))
    with pytest.raises(ValueError, match=r"phases must have shape \(2, 8, 8\)"):
        odt.stack_intensity(f, torch.zeros(3, n, n), m.geometry)
    with pytest.raises(ValueError, match=r"field must have shape \[\.\.\., n, n\]"):
        m(torch.zeros(8, dtype=torch.complex64))
    with pytest.raises(TypeError, match="field must be a torch.Tensor"):
        m(np.zeros((2, n, n), np.complex64))
    with pytest.raises(ValueError, match="batch of 0 samples"):
        m(torch.zeros(0, n, n, dtype=torch.complex64))


def test_bad_physics_is_refused_when_the_module_is_made():
    with pytest.raises(ValueError, match="wavelength"):
        odt.OpticalStack(8, wavelength=-1.0, pitch=PITCH, distances=[DZ])
    with pytest.raises(ValueError, match="distance"):
        odt.Propagation(8, wavelength=WL, pitch=PITCH, distance=float("nan"))
    with pytest.raises(ValueError, match="init must have shape"):
        odt.OpticalStack(8, wavelength=WL, pitch=PITCH, distances=[DZ], init=torch.zeros(2, 8, 8))
    with pytest.raises(TypeError, match="dtype must be"):
        odt.OpticalStack(8, wavelength=WL, pitch=PITCH, distances=[DZ], dtype=torch.float16)


def test_a_cuda_tensor_without_a_usable_cuda_backend_is_a_clear_error():
    from optdiff.optics.backends.cuda import cuda_device_count

    if cuda_device_count() > 0:
        pytest.skip("a CUDA device is present: the backend runs")
    # CPU-only PyTorch cannot make a CUDA tensor, so the check that every op runs first is called
    # with the device itself; it never falls back to a copy.
    with pytest.raises(RuntimeError, match=r"field is a CUDA tensor \(cuda:0\) but optdiff's CUDA backend cannot "
                                           r"run: .*pass field.cpu\(\)"):
        ops._stack(torch.device("cuda:0"), 8, *stack(8).geometry.op_args())


@pytest.mark.gpu
def test_cuda_tensors_stay_on_the_device_and_agree_with_the_cpu():
    """Runs only where PyTorch has CUDA and optdiff's CUDA backend finds a device."""
    from optdiff.optics.backends.cuda import cuda_device_count

    if not torch.cuda.is_available() or cuda_device_count() == 0:
        pytest.skip("needs PyTorch with CUDA and optdiff's CUDA backend on a device")
    n = 16
    m = stack(n, dtype=torch.float32)
    f = field((2, 3, n, n), torch.complex64)
    t = torch.rand(2, 3, n, n, generator=torch.Generator().manual_seed(7))
    fr = f.clone().requires_grad_()
    I_cpu = m(fr)
    I_cpu.backward(t)
    g_cpu, gf_cpu = m.phases.grad.clone(), fr.grad.clone()
    p = odt.Propagation(n, wavelength=WL, pitch=PITCH, distance=DZ)
    out_cpu = p(f)
    m.zero_grad()
    m.to("cuda")
    fc, tc = f.cuda().requires_grad_(), t.cuda()
    side = torch.cuda.Stream()  # the ops must run on torch's current stream, whichever it is
    with torch.cuda.stream(side):
        I = m(fc)
        I.backward(tc)
        out = p(fc.detach())
        with torch.no_grad():
            I_ng = m(fc.detach())
    torch.cuda.synchronize()
    assert I.device.type == m.phases.grad.device.type == fc.grad.device.type == out.device.type == "cuda"
    scale = float(I_cpu.abs().max())
    torch.testing.assert_close(I.cpu(), I_cpu.detach(), rtol=1e-4, atol=1e-5 * scale)
    torch.testing.assert_close(I_ng.cpu(), I_cpu.detach(), rtol=1e-4, atol=1e-5 * scale)
    torch.testing.assert_close(m.phases.grad.cpu(), g_cpu, rtol=1e-3, atol=1e-4 * float(g_cpu.abs().max()))
    torch.testing.assert_close(fc.grad.cpu(), gf_cpu, rtol=1e-3, atol=1e-4 * float(gf_cpu.abs().max()))
    torch.testing.assert_close(out.cpu(), out_cpu, rtol=1e-4, atol=1e-5 * float(out_cpu.abs().max()))
