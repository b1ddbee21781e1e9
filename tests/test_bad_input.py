"""Bad input never crashes and never returns garbage: it raises, naming the argument."""

import re

import numpy as np
import pytest
from helpers import GEOM, random_field, unaligned

import optdiff

N, L = 12, 2


def prop(backend="cpu"):
    return optdiff.Propagator(N, distance=1e-3, padding=2, backend=backend, **GEOM)


def stack(backend="cpu"):
    return optdiff.PhaseStack(N, distances=[1e-3] * L, padding=2, backend=backend, **GEOM)


@pytest.mark.parametrize("kw,needle", [
    (dict(wavelength=0.0), "wavelength"), (dict(wavelength=-1e-6), "wavelength"),
    (dict(wavelength=float("nan")), "wavelength"), (dict(pitch=0.0), "pitch"),
    (dict(pitch=-1.0), "pitch"), (dict(pitch=float("inf")), "pitch"),
    (dict(distance=float("nan")), "distance"), (dict(padding=3), "padding"),
    (dict(padding=0), "padding"), (dict(padding=True), "padding"), (dict(method="rayleigh"), "method"),
    (dict(tilt=(2.0, 0.0)), "tilt"), (dict(tilt=(0.1,)), "tilt"), (dict(tilt="ab"), "tilt"),
])
def test_bad_physics_parameters(kw, needle, backend):
    args = dict(wavelength=850e-9, pitch=9.2e-6, distance=1e-3, padding=2)
    args.update(kw)
    with pytest.raises(ValueError, match=needle):
        optdiff.Propagator(N, backend=backend, **args)


@pytest.mark.parametrize("method", ["as", "bl-as", "fresnel"])
@pytest.mark.parametrize("kw,needle", [
    (dict(distance=1e300), "distance"), (dict(distance=-1e300), "distance"),
    (dict(wavelength=1.7e308), "wavelength"), (dict(wavelength=1e-300), "wavelength"),
    (dict(pitch=5e-324), "pitch"), (dict(pitch=1e-160), "pitch"), (dict(pitch=1e308), "pitch"),
    (dict(pitch=1e300, tilt=(0.1, 0.0)), "tilt"),
])
def test_finite_but_absurd_parameters(method, kw, needle):
    """Finite values whose transfer function or tilt would overflow (all-NaN fields) are refused."""
    args = dict(GEOM, distance=1e-3, padding=2, method=method)
    args.update(kw)
    with pytest.raises(ValueError, match=needle):
        optdiff.Propagator(64, **args)
    tilt = args.pop("tilt", (0.0, 0.0))
    d = args.pop("distance")
    layer = 1 if needle in ("distance", "tilt") else 0  # wavelength and pitch are every hop's
    with pytest.raises(ValueError, match=f"layer {layer}: .*{needle}"):
        optdiff.PhaseStack(64, distances=[1e-3, d], tilts=[(0.0, 0.0), tilt], **args)
    if layer == 1:
        with pytest.raises(ValueError, match=f"input hop: .*{needle}"):
            optdiff.PhaseStack(64, distances=[1e-3], input_distance=d, input_tilt=tilt, **args)


@pytest.mark.parametrize("method", ["as", "bl-as", "fresnel"])
def test_largest_allowed_distance_gives_a_finite_field(method, rng):
    """The bound in the message is the real one: just inside it the field stays finite."""
    with pytest.raises(ValueError, match="distance") as e:
        optdiff.Propagator(32, distance=1e300, method=method, padding=2, **GEOM)
    limit = float(re.search(r"below ([0-9.e+]+) m", str(e.value)).group(1))
    x = random_field(rng, (2, 32, 32), np.complex128)
    for d in (0.99 * limit, -0.99 * limit):
        y = optdiff.Propagator(32, distance=d, method=method, padding=2, **GEOM).forward(x)
        assert np.isfinite(y).all()


@pytest.mark.parametrize("n", [0, 1, -5, 2.5, "8", None, True])
def test_bad_grid_size(n, backend):
    with pytest.raises(ValueError, match="n must"):
        optdiff.Propagator(n, distance=1e-3, backend=backend, **GEOM)


def test_bad_stack_parameters(backend):
    with pytest.raises(ValueError, match="distances"):
        optdiff.PhaseStack(N, distances=[], backend=backend, **GEOM)
    with pytest.raises(ValueError, match="tilts"):
        optdiff.PhaseStack(N, distances=[1e-3, 1e-3], tilts=np.zeros((3, 2)), backend=backend, **GEOM)
    with pytest.raises(ValueError, match="distance"):
        optdiff.PhaseStack(N, distances=[1e-3, float("nan")], backend=backend, **GEOM)
    with pytest.raises(ValueError, match="backend"):
        optdiff.PhaseStack(N, distances=[1e-3], backend="tpu", **GEOM)


def bad_fields(rng):
    """(array, expected exception, word the message must contain)."""
    good = random_field(rng, (2, N, N), np.complex64)
    nan = good.copy()
    nan[1, 3, 4] = np.nan
    inf = good.copy()
    inf[0, 0, 0] = np.inf + 0j
    return [
        (good.real.copy(), TypeError, "complex"),
        (good.astype(np.complex256) if hasattr(np, "complex256") else good.real.copy(), TypeError, "complex"),
        (np.zeros((2, N, N), np.int32), TypeError, "complex"),
        (good[:, ::2, :], ValueError, "field"),
        (good[:, :, ::-1], ValueError, "contiguous"),
        (np.asfortranarray(good[0]), ValueError, "contiguous"),
        (good[:, :N - 1, :N - 1].copy(), ValueError, "field"),
        (np.zeros((2, N, N + 1), np.complex64), ValueError, "field"),
        (np.zeros((N,), np.complex64), ValueError, "rank"),
        (np.zeros((1, 2, N, N), np.complex64), ValueError, "rank"),
        (np.zeros((0, N, N), np.complex64), ValueError, "batch"),
        (nan, ValueError, "NaN"),
        (inf, ValueError, "NaN or infinite"),
        ([[0j] * N] * N, TypeError, "NumPy"),
    ]


def test_propagator_rejects_bad_fields(rng, backend):
    p = prop(backend)
    for arr, exc, word in bad_fields(rng):
        for fn in (p.forward, p.adjoint):
            with pytest.raises(exc, match=word):
                fn(arr)


def test_propagator_rejects_bad_out(rng, backend):
    p = prop(backend)
    x = random_field(rng, (2, N, N), np.complex64)
    with pytest.raises(TypeError, match="out"):
        p.forward(x, out=np.empty((2, N, N), np.complex128))
    with pytest.raises(ValueError, match="out"):
        p.forward(x, out=np.empty((3, N, N), np.complex64))
    ro = np.empty_like(x)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        p.forward(x, out=ro)
    big = np.zeros((3, N, N), np.complex64)
    with pytest.raises(ValueError, match="overlap"):
        p.forward(big[:2], out=big[1:])


def test_stack_rejects_bad_inputs(rng, backend):
    s = stack(backend)
    x = random_field(rng, (2, N, N), np.complex64)
    ph = np.zeros((L, N, N), np.float32)
    for arr, exc, word in bad_fields(rng):
        real_amplitude = isinstance(arr, np.ndarray) and arr.dtype == np.float32 and arr.shape == x.shape
        if not real_amplitude:  # forward takes a real float32 field with float32 phases (an amplitude)
            with pytest.raises(exc, match=word):
                s.forward(arr, ph)
        with pytest.raises(exc, match=word):
            s.forward_train(arr, ph)
    amp = np.abs(x)
    amp[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        s.forward(amp, ph)
    with pytest.raises(TypeError, match="phases must be float64"):
        s.forward(amp.astype(np.float64), ph)
    with pytest.raises(ValueError, match="contiguous"):
        s.forward(np.abs(x)[:, :, ::-1], ph)
    bad_phases = [
        (ph.astype(np.float64), TypeError, "phases"),
        (np.zeros((L + 1, N, N), np.float32), ValueError, "phases"),
        (np.zeros((L, N, N + 1), np.float32), ValueError, "phases"),
        (np.zeros((N, N), np.float32), ValueError, "phases"),
        (np.zeros((L, N, 2 * N), np.float32)[:, :, ::2], ValueError, "contiguous"),
        (np.full((L, N, N), np.nan, np.float32), ValueError, "phases"),
        (ph.tolist(), TypeError, "phases"),
    ]
    for arr, exc, word in bad_phases:
        with pytest.raises(exc, match=word):
            s.forward(x, arr)
    _, tape = s.forward_train(x, ph)
    for g, exc, word in [
        (np.zeros((2, N, N), np.float64), TypeError, "grad_intensity"),
        (np.zeros((3, N, N), np.float32), ValueError, "grad_intensity"),
        (np.full((2, N, N), np.inf, np.float32), ValueError, "grad_intensity"),
        (np.zeros((2, N, 2 * N), np.float32)[:, :, ::2], ValueError, "contiguous"),
    ]:
        with pytest.raises(exc, match=word):
            s.backward(tape, g)
    with pytest.raises(TypeError, match="tape"):
        s.backward("not a tape", np.zeros((2, N, N), np.float32))


def test_nthreads_validation(rng, backend):
    p = prop(backend)
    x = random_field(rng, (1, N, N), np.complex64)
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="nthreads"):
            p.forward(x, nthreads=bad)
    for bad in (0, -2, 1.0):
        with pytest.raises(ValueError, match="threads"):
            optdiff.set_num_threads(bad)
    with pytest.raises(ValueError, match="effort"):
        optdiff.set_planner_effort("exhaustive")


def test_fuzz_random_bad_inputs_never_crash(rng):
    """Random mutations of valid inputs: each call either succeeds with a
    finite result of the right shape or raises TypeError/ValueError."""
    p, s = prop(), stack()
    dtypes = [np.complex64, np.complex128, np.float32, np.float64, np.int64, np.bool_, object]
    for _trial in range(300):
        shape = tuple(int(v) for v in rng.integers(0, 2 * N, size=rng.integers(0, 5)))
        if rng.random() < 0.3:
            shape = (int(rng.integers(0, 4)), N, N)
        dt = dtypes[rng.integers(len(dtypes))]
        try:
            arr = np.zeros(shape, dtype=dt)
            if arr.size and np.issubdtype(arr.dtype, np.number):
                arr[...] = rng.standard_normal(shape)
                if rng.random() < 0.2:
                    arr.flat[rng.integers(arr.size)] = np.nan
            if arr.ndim >= 2 and rng.random() < 0.2:
                arr = arr[..., ::-1]
        except (TypeError, ValueError):
            continue
        ph_shape = (L, N, N) if rng.random() < 0.7 else tuple(int(v) for v in rng.integers(0, N + 2, 3))
        ph = np.zeros(ph_shape, dtype=np.float32 if rng.random() < 0.8 else np.float64)
        for call in (lambda: p.forward(arr), lambda: p.adjoint(arr), lambda: s.forward(arr, ph),
                     lambda: s.backward(s.forward_train(arr, ph)[1], np.ones(arr.shape, ph.dtype))):
            try:
                out = call()
            except (TypeError, ValueError):
                continue
            res = out[0] if isinstance(out, tuple) else out
            assert np.all(np.isfinite(res))


@pytest.mark.parametrize("dtype,big,name", [(np.complex64, 1e30, "float32"), (np.complex128, 1e200, "float64")])
def test_intensity_overflow_is_an_error(dtype, big, name):
    """A finite field whose |E|^2 overflows raises instead of returning Inf (issue #13 item 7)."""
    s = stack()
    x = np.full((2, N, N), big, dtype)
    ph = np.zeros((L, N, N), np.float32 if dtype == np.complex64 else np.float64)
    message = f"field is too large: the intensity overflows {name}"
    with pytest.raises(ValueError, match=message):
        s.forward(x, ph)
    with pytest.raises(ValueError, match=message):
        s.forward_train(x, ph)
    with pytest.raises(ValueError, match=message):
        s.forward(x.real.copy(), ph)  # a real (amplitude) field
    with pytest.raises(ValueError, match="intensity overflows"):
        s.mse_loss_and_grad(x, ph, np.zeros(x.shape, ph.dtype))
    ok = np.full((2, N, N), np.sqrt(big), dtype)  # |E|^2 ~ big * (gain of the stack): finite
    assert np.isfinite(s.forward(ok, ph)).all()


def test_misaligned_arrays_are_refused(rng):
    """Views whose data is not aligned to their dtype (np.frombuffer at an odd offset) never
    reach the C++ loops: every public entry point raises ValueError naming the argument."""
    p, s = prop(), stack()
    x = random_field(rng, (2, N, N), np.complex64)
    ph = np.zeros((L, N, N), np.float32)
    t = np.ones((2, N, N), np.float32)
    _, tape = s.forward_train(x, ph)
    cases = [
        ("field", lambda: p.forward(unaligned(x))),
        ("field", lambda: p.adjoint(unaligned(x))),
        ("out", lambda: p.forward(x, out=unaligned(x))),
        ("out", lambda: p.adjoint(x, out=unaligned(x))),
        ("field", lambda: s.forward(unaligned(x), ph)),
        ("field", lambda: s.forward(unaligned(np.abs(x)), ph)),  # a real field
        ("phases", lambda: s.forward(x, unaligned(ph))),
        ("out", lambda: s.forward(x, ph, out=unaligned(t))),
        ("field", lambda: s.forward_train(unaligned(x), ph)),
        ("phases", lambda: s.forward_train(x, unaligned(ph))),
        ("grad_intensity", lambda: s.backward(tape, unaligned(t))),
        ("field", lambda: s.mse_loss_and_grad(unaligned(x), ph, t)),
        ("phases", lambda: s.mse_loss_and_grad(x, unaligned(ph), t)),
        ("target", lambda: s.mse_loss_and_grad(x, ph, unaligned(t))),
        ("out", lambda: optdiff.standard_normal(t.shape, seed=0, out=unaligned(t))),
        ("x", lambda: optdiff.ddpm_update(unaligned(t), t, c1=1, c2=0, sigma=1, seed=0, stream=0)),
        ("eps", lambda: optdiff.ddpm_update(t, unaligned(t), c1=1, c2=0, sigma=1, seed=0, stream=0)),
        ("out", lambda: optdiff.ddpm_update(t, t, c1=1, c2=0, sigma=1, seed=0, stream=0, out=unaligned(t))),
    ]
    for name, call in cases:
        with pytest.raises(ValueError, match=f"^{name} is not aligned"):
            call()
    tape.saved = unaligned(tape.saved)
    with pytest.raises(ValueError, match="^saved is not aligned"):
        s.backward(tape, t)
