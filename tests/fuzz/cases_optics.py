"""Fuzz cases of the optical core: Propagator, propagate, PhaseStack (all methods),
standard_normal, ddpm_update, set_num_threads. Good cases are checked against tests/reference.py
(propagation, stacks, a central-difference check of the gradients in double precision) or the
documented properties (thread-count determinism, offsets, the DDPM formula)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import optdiff

from .cases import Builder, Case, call_desc, entry, expect_array, expect_close, first_problem
from .values import (
    NON_FINITE,
    NON_INTEGERS,
    NOT_NUMBERS,
    absurd_real,
    bad_integer,
    bad_real,
    fortran_copy,
    noncontiguous_copy,
    overlapping,
    pick,
    random_complex,
    random_real,
    readonly_copy,
    slack_copy,
    unaligned_copy,
    with_nonfinite,
    wrong_dtype,
    wrong_rank,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import reference as ref  # noqa: E402  (tests/reference.py)

CDT = (np.complex64, np.complex128)
RTOL = {np.dtype(np.complex64): 3e-4, np.dtype(np.complex128): 1e-9,
        np.dtype(np.float32): 3e-4, np.dtype(np.float64): 1e-9}
REAL = {np.dtype(np.complex64): np.float32, np.dtype(np.complex128): np.float64}


def _nthreads(b: Builder):
    return b.arg("nthreads", pick(b.rng, [None, None, 1, 2]),  # None (the default count) is valid
                 bad=[("bad", lambda r: pick(r, [x for x in NOT_NUMBERS if x is not None] + NON_INTEGERS
                                             + [0, -1, 2**31, 2**64 + 4, 10**400, float("nan")]))])


def _geometry(b: Builder, stack=False):
    rng = b.rng
    g = {}
    g["n"] = b.arg("n", pick(rng, [3, 4, 5, 8, 12, 16]),
                   bad=[("bad", lambda r: bad_integer(r, also=[0, 1, -5, 16385, 2**64 + 4, 10**400]))])
    g["wavelength"] = b.arg("wavelength", pick(rng, [850e-9, 633e-9, 1.55e-6]),
                            bad=[("bad", bad_real), ("nonpositive", lambda r: pick(r, [0.0, -850e-9, -1.0]))],
                            odd=[("absurd", absurd_real)])
    g["pitch"] = b.arg("pitch", pick(rng, [9.2e-6, 4e-6, 2e-5]),
                       bad=[("bad", bad_real), ("nonpositive", lambda r: pick(r, [0.0, -9.2e-6]))],
                       odd=[("absurd", absurd_real)])
    g["method"] = b.arg("method", pick(rng, list(optdiff.METHODS)),
                        bad=[("bad", lambda r: pick(r, ["rayleigh", "", None, 3, b"as", "AS "]))])
    g["padding"] = b.arg("padding", pick(rng, [1, 2]),
                         bad=[("bad", lambda r: bad_integer(r, also=[0, 3, -1, 2**64 + 4]))])
    tilt_bad = [("bad", lambda r: pick(r, [(2.0, 0.0), (0.0, float("nan")), (0.1,), "ab", None, (0, 0, 0),
                                           (float("inf"), 0.0), (None, 0.0), 3.0, ("0", 0.0), (0.0, 10**400)]))]
    tilt_odd = [("steep", lambda r: (float(r.uniform(-1.5, 1.5)), float(r.uniform(-1.5, 1.5))))]
    if stack:
        L = int(rng.integers(1, 4))
        g["distances"] = b.arg("distances", [float(rng.uniform(-4e-3, 6e-3)) for _ in range(L)],
                               bad=[("bad", lambda r: pick(r, [[], "abc", None, 5.0, [float("nan")], [1e-3, None],
                                                               [1e-3, "x"], [[1e-3, 2e-3]], [float("inf")] * L]))],
                               odd=[("absurd", lambda r: [absurd_real(r) for _ in range(L)])])
        g["tilts"] = b.arg("tilts", pick(rng, [None, [(0.0, 0.01)] * L]),
                           bad=[("shape", lambda r: np.zeros((L + 1, 2))),
                                ("value", lambda r: [(float("nan"), 0.0)] * L),
                                ("angle", lambda r: [(2.0, 0.0)] * L), ("type", lambda r: "tilts")],
                           odd=[("steep", lambda r: [(float(r.uniform(-1.5, 1.5)), 0.0)] * L)])
        g["input_distance"] = b.arg("input_distance", pick(rng, [None, 2e-3, 0.0]),
                                    bad=[("bad", lambda r: pick(r, NON_FINITE + ["1e-3", [1e-3], True]))],
                                    odd=[("absurd", absurd_real)])
        g["input_tilt"] = b.arg("input_tilt", pick(rng, [(0.0, 0.0), (0.01, -0.02)]), bad=tilt_bad, odd=tilt_odd)
    else:
        g["distance"] = b.arg("distance", pick(rng, [1e-3, -2e-3, 0.0, 5e-3]),
                              bad=[("bad", bad_real)], odd=[("absurd", absurd_real)])
        g["tilt"] = b.arg("tilt", pick(rng, [(0.0, 0.0), (0.01, -0.02)]), bad=tilt_bad, odd=tilt_odd)
    return g


_HUGE = {True: [1e15, 1e18, 1e30, 1e36], False: [1e15, 1e30, 1e150, 1e300]}   # single / double precision


def _field_alts(rng, good: np.ndarray, allowed=CDT, zero_batch_bad=True):
    """bad / odd alternatives of a field-like input ``good``."""
    n = good.shape[-1]
    bad = [("dtype", lambda r: wrong_dtype(r, good, allowed)),
           ("rank", lambda r: wrong_rank(r, good)),
           ("size", lambda r: np.zeros(good.shape[:-2] + (n + 1, n + 1), good.dtype)),
           ("nonsquare", lambda r: np.zeros(good.shape[:-1] + (n + 1,), good.dtype)),
           ("noncontiguous", lambda r: noncontiguous_copy(good)),
           ("fortran", lambda r: fortran_copy(good)),
           ("nonfinite", lambda r: with_nonfinite(r, good)),
           ("notarray", lambda r: pick(r, [good.tolist(), None, "field", 3.0]))]
    if zero_batch_bad and good.ndim == 3:
        bad.append(("emptybatch", lambda r: np.zeros((0,) + good.shape[1:], good.dtype)))
    odd = [("unaligned", lambda r: unaligned_copy(good)),
           ("readonly", lambda r: readonly_copy(good)),
           ("huge", lambda r: (good * pick(r, _HUGE[good.dtype in (np.complex64, np.float32)])).astype(good.dtype)),
           ("tiny", lambda r: (good * 1e-300).astype(good.dtype))]
    return bad, odd


def _out_alts(rng, shape, dtype, overlap_with=None):
    bad = [("dtype", lambda r: np.empty(shape, pick(r, [np.int32, np.float16] + [d for d in (
               np.float32, np.float64, np.complex64, np.complex128) if np.dtype(d) != np.dtype(dtype)]))),
           ("shape", lambda r: np.empty((shape[0] + 1,) + tuple(shape[1:]) if len(shape) else (2,), dtype)),
           ("readonly", lambda r: readonly_copy(np.empty(shape, dtype))),
           ("noncontiguous", lambda r: noncontiguous_copy(np.empty(shape, dtype))),
           ("notarray", lambda r: pick(r, [[0.0], "out", 1.0]))]
    if overlap_with is not None:
        bad.append(("overlap", lambda r, a=overlap_with: overlapping(a, dtype, shape)))
    odd = [("unaligned", lambda r: unaligned_copy(np.zeros(shape, dtype)))]
    return bad, odd


def _ref_prop(field, g, adjoint=False):
    f = ref.adjoint if adjoint else ref.propagate
    x = np.asarray(field)
    flat = x.reshape((-1,) + x.shape[-2:])
    out = np.stack([f(u, g["pitch"], g["wavelength"], g["distance"], g["method"], g["padding"], tuple(g["tilt"]))
                    for u in flat])
    return out.reshape(x.shape)


def _batch_field(rng, n, dtype, real=False):
    """A field at the start of a buffer with room for one more element (so out can overlap it)."""
    shape = pick(rng, [(n, n), (1, n, n), (2, n, n), (3, n, n)])
    return slack_copy(random_real(rng, shape, REAL[np.dtype(dtype)]) if real else random_complex(rng, shape, dtype))


# ---------------------------------------------------------------------------- Propagator
@entry("Propagator", weight=4)
def gen_propagator(rng, ctx):
    b = Builder(rng)
    _geometry(b)
    b.arg("backend", "cpu", bad=[("bad", lambda r: pick(r, ["tpu", 3, None, "CPU"]))])
    v, kind, names, tags = b.finish()
    n = v["n"] if isinstance(v["n"], int) and 2 <= v["n"] <= 64 else 4
    field = np.ones((n, n), np.complex64)

    def call():
        p = optdiff.Propagator(v["n"], wavelength=v["wavelength"], pitch=v["pitch"], distance=v["distance"],
                               method=v["method"], padding=v["padding"], tilt=v["tilt"], backend=v["backend"])
        return p.forward(field), p.transfer_function()

    def check(res):
        out, H = res
        return first_problem(expect_array(out, (n, n), np.complex64, name="forward"),
                             expect_array(H, (n * v["padding"],) * 2, np.complex128, name="transfer_function"))
    return Case("Propagator", kind, call, call_desc("Propagator", v) + ".forward(ones)", names, tags, check)


def _propagator_and_field(b, rng):
    g = {"n": pick(rng, [3, 4, 5, 8, 12, 16]), "wavelength": 850e-9, "pitch": 9.2e-6,
         "distance": pick(rng, [1e-3, -2e-3, 0.0]), "method": pick(rng, list(optdiff.METHODS)),
         "padding": pick(rng, [1, 2]), "tilt": pick(rng, [(0.0, 0.0), (0.01, -0.02)])}
    dtype = pick(rng, CDT)
    return g, dtype, _batch_field(rng, g["n"], dtype)


@entry("Propagator.forward/adjoint", weight=10)
def gen_apply(rng, ctx):
    b = Builder(rng)
    g, dtype, field = _propagator_and_field(b, rng)
    adjoint = bool(rng.integers(2))
    fbad, fodd = _field_alts(rng, field)
    b.arg("field", field, bad=fbad, odd=fodd)
    obad, oodd = _out_alts(rng, field.shape, dtype, overlap_with=field)
    out_choice = pick(rng, ["none", "new", "inplace"])
    _nthreads(b)
    b.arg("out", None, bad=obad, odd=oodd)
    v, kind, names, tags = b.finish()
    if kind == "good" or "out" not in names:
        if out_choice == "new":
            v["out"] = np.empty_like(v["field"]) if isinstance(v["field"], np.ndarray) else None
        elif out_choice == "inplace" and isinstance(v["field"], np.ndarray) and v["field"].flags.writeable:
            v["out"] = v["field"]
    p = optdiff.Propagator(g["n"], wavelength=g["wavelength"], pitch=g["pitch"], distance=g["distance"],
                           method=g["method"], padding=g["padding"], tilt=g["tilt"])
    before = v["field"].copy() if isinstance(v["field"], np.ndarray) else None
    fn = p.adjoint if adjoint else p.forward

    def call():
        return fn(v["field"], out=v["out"], nthreads=v["nthreads"])

    def check(res):
        x = before
        prob = expect_array(res, x.shape, x.dtype, finite=np.all(np.isfinite(x)))
        if prob or kind != "good":
            return prob
        if v["out"] is not None and res is not v["out"]:
            return "wrong_value", "the result is not the out array"
        return expect_close(res, _ref_prop(x, g, adjoint), RTOL[x.dtype])
    name = "Propagator.adjoint" if adjoint else "Propagator.forward"
    return Case(name, kind, call, f"{name}[{g}](" + call_desc("", v)[1:], names, tags, check)


@entry("Propagator.transfer_function", weight=1)
def gen_transfer(rng, ctx):
    b = Builder(rng, p_odd=0.0)
    g, _, _ = _propagator_and_field(b, rng)
    b.arg("dtype", pick(rng, [np.complex64, np.complex128, "complex64"]),
          bad=[("bad", lambda r: pick(r, [np.float32, np.int8, "float", None, 3, object]))])
    v, kind, names, tags = b.finish()
    p = optdiff.Propagator(g["n"], **{k: g[k] for k in ("wavelength", "pitch", "distance", "method", "padding", "tilt")})

    def check(H):
        npad = g["n"] * g["padding"]
        prob = expect_array(H, (npad, npad), np.dtype(v["dtype"]))
        if prob:
            return prob
        want = ref.transfer_function(npad, g["pitch"], g["wavelength"], g["distance"], g["method"])
        return expect_close(H, want, 1e-5 if np.dtype(v["dtype"]) == np.complex64 else 1e-10)
    return Case("Propagator.transfer_function", kind, lambda: p.transfer_function(v["dtype"]),
                f"Propagator[{g}].transfer_function(dtype={v['dtype']!r})", names, tags, check)


@entry("propagate", weight=3)
def gen_propagate(rng, ctx):
    b = Builder(rng)
    _geometry(b)
    b.args.pop("n")
    b._alts.pop("n")
    dtype = pick(rng, CDT)
    n = pick(rng, [3, 4, 8, 12])
    field = _batch_field(rng, n, dtype)
    fbad, fodd = _field_alts(rng, field)
    b.arg("field", field, bad=[x for x in fbad if x[0] != "size"], odd=fodd)   # n comes from the field
    _nthreads(b)
    v, kind, names, tags = b.finish()
    kw = {k: v[k] for k in ("wavelength", "pitch", "distance", "method", "padding", "tilt", "nthreads")}

    def check(res):
        prob = expect_array(res, field.shape, dtype, finite=np.all(np.isfinite(v["field"])))
        if prob or kind != "good":
            return prob
        return expect_close(res, _ref_prop(field, v), RTOL[np.dtype(dtype)])
    return Case("propagate", kind, lambda: optdiff.propagate(v["field"], **kw), call_desc("optdiff.propagate", v),
                names, tags, check)


# ---------------------------------------------------------------------------- PhaseStack
def _stack_geometry(rng):
    L = int(rng.integers(1, 4))
    g = {"n": pick(rng, [3, 4, 5, 8, 12]), "wavelength": 850e-9, "pitch": 9.2e-6,
         "distances": [float(rng.uniform(-3e-3, 5e-3)) for _ in range(L)],
         "method": pick(rng, list(optdiff.METHODS)), "padding": pick(rng, [1, 2]),
         "tilts": pick(rng, [None, [(0.01, -0.005)] * L]), "input_distance": pick(rng, [None, 1e-3]),
         "input_tilt": pick(rng, [(0.0, 0.0), (0.0, 0.01)])}
    return g, L


def _make_stack(g):
    return optdiff.PhaseStack(g["n"], wavelength=g["wavelength"], pitch=g["pitch"], distances=g["distances"],
                              method=g["method"], padding=g["padding"], tilts=g["tilts"],
                              input_distance=g["input_distance"], input_tilt=g["input_tilt"])


def _ref_camera(g, field, phases):
    x = np.asarray(field)
    flat = x.reshape((-1,) + x.shape[-2:]).astype(np.complex128)
    out = np.stack([ref.stack_camera_field(u, np.asarray(phases, np.float64), g["pitch"], g["wavelength"],
                                           g["distances"], g["method"], g["padding"], g["tilts"],
                                           g["input_distance"], g["input_tilt"]) for u in flat])
    return out.reshape(x.shape)


def _energy(field) -> float:
    """Norm of |field|^2: the scale of a camera intensity (it may cancel out, the input does not)."""
    return float(np.linalg.norm((np.abs(np.asarray(field, np.complex128)) ** 2).ravel()))


def _ref_intensity(g, field, phases):
    return np.abs(_ref_camera(g, field, phases)) ** 2


def _stack_inputs(b: Builder, rng, g, L, real_ok=False, name="field"):
    dtype = pick(rng, CDT)
    real = real_ok and rng.random() < 0.3
    field = _batch_field(rng, g["n"], dtype, real=real)
    fbad, fodd = _field_alts(rng, field, allowed=(CDT + ((np.float32, np.float64) if real_ok else ())))
    if real:  # a real field needs phases of its own dtype, anything else is refused
        fbad = [x for x in fbad if x[0] != "dtype"]
    b.arg(name, field, bad=fbad, odd=fodd)
    rdt = REAL[np.dtype(dtype)]
    phases = random_real(rng, (L, g["n"], g["n"]), rdt, scale=2.0)
    n = g["n"]
    b.arg("phases", phases,
          bad=[("dtype", lambda r: wrong_dtype(r, phases, (rdt,))), ("rank", lambda r: wrong_rank(r, phases)),
               ("layers", lambda r: np.zeros((L + 1, n, n), rdt)), ("size", lambda r: np.zeros((L, n + 1, n + 1), rdt)),
               ("noncontiguous", lambda r: noncontiguous_copy(phases)), ("nonfinite", lambda r: with_nonfinite(r, phases)),
               ("notarray", lambda r: pick(r, [phases.tolist(), None, 0.0]))],
          odd=[("unaligned", lambda r: unaligned_copy(phases)), ("readonly", lambda r: readonly_copy(phases)),
               ("huge", lambda r: (phases * 1e6).astype(rdt))])
    return field, phases, dtype


@entry("PhaseStack", weight=4)
def gen_stack(rng, ctx):
    b = Builder(rng)
    _geometry(b, stack=True)
    b.arg("backend", "cpu", bad=[("bad", lambda r: pick(r, ["tpu", 3, None]))])
    v, kind, names, tags = b.finish()
    if "distances" in names and v["tilts"] is not None:
        names += ("tilts",)   # spoilt distances may change L, and then the tilts' shape is wrong first
    n = v["n"] if isinstance(v["n"], int) and 2 <= v["n"] <= 64 else 4
    L = len(v["distances"]) if isinstance(v["distances"], list) and v["distances"] else 1

    def call():
        st = optdiff.PhaseStack(v["n"], wavelength=v["wavelength"], pitch=v["pitch"], distances=v["distances"],
                                method=v["method"], padding=v["padding"], tilts=v["tilts"],
                                input_distance=v["input_distance"], input_tilt=v["input_tilt"], backend=v["backend"])
        return st.forward(np.ones((1, n, n), np.complex64), np.zeros((st.num_layers, n, n), np.float32))
    check = (lambda res: expect_array(res, (1, n, n), np.float32)) if L else None
    return Case("PhaseStack", kind, call, call_desc("PhaseStack", v) + ".forward(ones, zeros)", names, tags, check)


@entry("PhaseStack.forward", weight=10)
def gen_stack_forward(rng, ctx):
    b = Builder(rng)
    g, L = _stack_geometry(rng)
    st = _make_stack(g)
    field, phases, dtype = _stack_inputs(b, rng, g, L, real_ok=True)
    rdt = REAL[np.dtype(dtype)]
    obad, oodd = _out_alts(rng, field.shape, rdt, overlap_with=field)
    if phases.size >= field.size:
        obad.append(("overlap-phases", lambda r: phases.reshape(-1)[:field.size].reshape(field.shape)))
    b.arg("out", pick(rng, [None, "new"]), bad=obad, odd=oodd)
    _nthreads(b)
    v, kind, names, tags = b.finish()
    if isinstance(v["out"], str) and v["out"] == "new":
        v["out"] = np.empty(field.shape, rdt)
    x, ph = (a.copy() if isinstance(a, np.ndarray) else a for a in (v["field"], v["phases"]))

    def check(res):
        prob = expect_array(res, field.shape, rdt, finite=all(np.all(np.isfinite(a)) for a in (x, ph)))
        if prob or kind != "good":
            return prob
        return expect_close(res, _ref_intensity(g, x, ph), RTOL[np.dtype(rdt)], scale=_energy(x))
    return Case("PhaseStack.forward", kind, lambda: st.forward(v["field"], v["phases"], out=v["out"],
                nthreads=v["nthreads"]), f"PhaseStack[{g}].forward" + call_desc("", v), names, tags, check)


@entry("PhaseStack.camera_field", weight=4)
def gen_camera(rng, ctx):
    b = Builder(rng)
    g, L = _stack_geometry(rng)
    st = _make_stack(g)
    field, phases, dtype = _stack_inputs(b, rng, g, L)
    _nthreads(b)
    v, kind, names, tags = b.finish()

    def check(res):
        prob = expect_array(res, field.shape, dtype, finite=np.all(np.isfinite(v["field"])))
        if prob or kind != "good":
            return prob
        return expect_close(res, _ref_camera(g, field, phases), RTOL[np.dtype(dtype)],
                            scale=float(np.linalg.norm(np.abs(field).ravel())))
    return Case("PhaseStack.camera_field", kind, lambda: st.camera_field(v["field"], v["phases"], nthreads=v["nthreads"]),
                f"PhaseStack[{g}].camera_field" + call_desc("", v), names, tags, check)


def _fd_phases(g, field, phases, weight, grad):
    """Central difference of sum(weight * I) along a random direction vs <grad, direction>."""
    d = np.random.default_rng(7).standard_normal(phases.shape)
    h = 1e-5
    lp = float(np.sum(weight * _ref_intensity(g, field, phases + h * d)))
    lm = float(np.sum(weight * _ref_intensity(g, field, phases - h * d)))
    fd, an = (lp - lm) / (2 * h), float(np.sum(grad * d))
    scale = abs(fd) + abs(an) + 1e-9 * float(np.sum(np.abs(weight * _ref_intensity(g, field, phases))))
    return None if abs(fd - an) <= 1e-5 * scale else ("wrong_value", f"phase gradient {an:.9g} vs central difference {fd:.9g}")


def _fd_field(g, field, phases, weight, grad):
    rng = np.random.default_rng(8)
    d = rng.standard_normal(field.shape) + 1j * rng.standard_normal(field.shape)
    h = 1e-5
    lp = float(np.sum(weight * _ref_intensity(g, field + h * d, phases)))
    lm = float(np.sum(weight * _ref_intensity(g, field - h * d, phases)))
    fd, an = (lp - lm) / (2 * h), float(np.sum((np.conj(grad) * d).real))
    scale = abs(fd) + abs(an) + 1e-9
    return None if abs(fd - an) <= 1e-5 * scale else ("wrong_value", f"field gradient {an:.9g} vs central difference {fd:.9g}")


@entry("PhaseStack.forward_train", weight=4)
def gen_forward_train(rng, ctx):
    b = Builder(rng)
    g, L = _stack_geometry(rng)
    st = _make_stack(g)
    field, phases, dtype = _stack_inputs(b, rng, g, L)
    recompute = bool(rng.integers(2))
    _nthreads(b)
    v, kind, names, tags = b.finish()
    rdt = REAL[np.dtype(dtype)]

    def check(res):
        if not (isinstance(res, tuple) and len(res) == 2 and isinstance(res[1], optdiff.Tape)):
            return "wrong_shape", f"forward_train returned {type(res).__name__}, not (intensity, Tape)"
        prob = expect_array(res[0], field.shape, rdt, finite=all(np.all(np.isfinite(a)) for a in (v["field"], v["phases"])))
        if prob or kind != "good":
            return prob
        return expect_close(res[0], _ref_intensity(g, field, phases), RTOL[np.dtype(rdt)], scale=_energy(field))
    return Case("PhaseStack.forward_train", kind,
                lambda: st.forward_train(v["field"], v["phases"], recompute=recompute, nthreads=v["nthreads"]),
                f"PhaseStack[{g}].forward_train(recompute={recompute}, " + call_desc("", v)[1:], names, tags, check)


@entry("PhaseStack.backward", weight=6)
def gen_backward(rng, ctx):
    b = Builder(rng)
    g, L = _stack_geometry(rng)
    st = _make_stack(g)
    dtype = pick(rng, CDT)
    rdt = REAL[np.dtype(dtype)]
    field = _batch_field(rng, g["n"], dtype)
    phases = random_real(rng, (L, g["n"], g["n"]), rdt, scale=2.0)
    recompute = bool(rng.integers(2))
    f0, p0 = field.copy(), phases.copy()
    _, tape = st.forward_train(field, phases, recompute=recompute)
    field[...] = 0          # the tape keeps copies: later edits must not change the gradients
    phases[...] = 1
    other = _make_stack(dict(g, n=g["n"] + 1))
    b.arg("tape", tape, bad=[("none", lambda r: None), ("notape", lambda r: {"field": field}),
                             ("foreign", lambda r: other.forward_train(np.ones((1, g["n"] + 1, g["n"] + 1), dtype),
                                                                      np.zeros((L, g["n"] + 1, g["n"] + 1), rdt))[1])])
    w = random_real(rng, field.shape, rdt)
    gbad, godd = _field_alts(rng, w, allowed=(rdt,), zero_batch_bad=True)
    b.arg("grad_intensity", w, bad=gbad, odd=[x for x in godd if x[0] != "tiny"])
    input_grad = bool(rng.integers(2))
    _nthreads(b)
    v, kind, names, tags = b.finish()
    if "tape" in names:
        names = names + ("phases", "field")

    def check(res):
        if not (isinstance(res, tuple) and len(res) == 2):
            return "wrong_shape", "backward must return (grad_phases, grad_field)"
        fin = np.all(np.isfinite(v["grad_intensity"]))
        prob = first_problem(expect_array(res[0], (L, g["n"], g["n"]), rdt, finite=fin, name="grad_phases"),
                             expect_array(res[1], field.shape, dtype, finite=fin, name="grad_field") if input_grad else
                             (None if res[1] is None else ("wrong_shape", "grad_field must be None")))
        if prob or kind != "good" or dtype != np.complex128:
            return prob
        return first_problem(_fd_phases(g, f0, p0, w, res[0]), _fd_field(g, f0, p0, w, res[1]) if input_grad else None)
    return Case("PhaseStack.backward", kind,
                lambda: st.backward(v["tape"], v["grad_intensity"], input_grad=input_grad, nthreads=v["nthreads"]),
                f"PhaseStack[{g}].backward(recompute={recompute}, input_grad={input_grad}, " + call_desc("", v)[1:],
                names, tags, check)


@entry("PhaseStack.mse_loss_and_grad", weight=6)
def gen_mse(rng, ctx):
    b = Builder(rng)
    g, L = _stack_geometry(rng)
    st = _make_stack(g)
    field, phases, dtype = _stack_inputs(b, rng, g, L)
    rdt = REAL[np.dtype(dtype)]
    target = np.abs(random_real(rng, field.shape, rdt))
    tbad, todd = _field_alts(rng, target, allowed=(rdt,))
    b.arg("target", target, bad=tbad, odd=[x for x in todd if x[0] != "tiny"])
    ret = bool(rng.integers(2))
    _nthreads(b)
    v, kind, names, tags = b.finish()
    if "field" in names or "target" in names:
        names = tuple(set(names) | {"field", "target"})   # a NaN is caught in the loss, naming both

    def check(res):
        if not isinstance(res, tuple) or len(res) != (3 if ret else 2):
            return "wrong_shape", f"returned {type(res).__name__} of {len(res) if isinstance(res, tuple) else '?'}"
        fin = all(np.all(np.isfinite(a)) for a in (v["field"], v["phases"], v["target"]))
        loss = res[0]
        if not isinstance(loss, float):
            return "wrong_shape", f"loss is {type(loss).__name__}, not float"
        prob = first_problem(None if (np.isfinite(loss) or not fin) else ("nonfinite", f"loss {loss}"),
                             expect_array(res[1], (L, g["n"], g["n"]), rdt, finite=fin, name="grad_phases"),
                             expect_array(res[2], field.shape, rdt, finite=fin, name="intensity") if ret else None)
        if prob or kind != "good":
            return prob
        I = _ref_intensity(g, field, phases)
        want = float(np.mean((I - target) ** 2))
        if not abs(loss - want) <= RTOL[np.dtype(rdt)] * 10 * (abs(want) + 1e-12):
            return "wrong_value", f"loss {loss!r} vs reference {want!r}"
        if dtype == np.complex128:
            return _fd_phases(g, field, phases, 2.0 * (I - target) / I.size, res[1])
        return None
    return Case("PhaseStack.mse_loss_and_grad", kind,
                lambda: st.mse_loss_and_grad(v["field"], v["phases"], v["target"], return_intensity=ret,
                                             nthreads=v["nthreads"]),
                f"PhaseStack[{g}].mse_loss_and_grad(return_intensity={ret}, " + call_desc("", v)[1:], names, tags, check)
