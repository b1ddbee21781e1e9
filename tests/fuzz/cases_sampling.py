"""Fuzz cases of the sampling-step kernels and the thread setting: standard_normal (shape,
dtype, bound, thread-count determinism, offsets), ddpm_update (the formula in float64, in place),
set_num_threads."""

from __future__ import annotations

import numpy as np

import optdiff

from .cases import Builder, Case, call_desc, entry, expect_array
from .values import (
    NON_INTEGERS,
    NOT_NUMBERS,
    absurd_real,
    bad_real,
    bad_u64,
    noncontiguous_copy,
    pick,
    random_real,
    readonly_copy,
    unaligned_copy,
    with_nonfinite,
    wrong_dtype,
)

U64 = 1 << 64
BOUND = 6.67
NEW = object()   # "a fresh out array" (made after the arguments are final)


def _u64_good(rng):
    return pick(rng, [0, 1, int(rng.integers(0, 2**63)), U64 - 1, 2**32, 2**32 - 1])


@entry("standard_normal", weight=8)
def gen_standard_normal(rng, ctx):
    b = Builder(rng)
    shape = pick(rng, [5, (3,), (2, 3), (4, 5, 7), (1, 1, 1, 1), (0,), (2, 0, 3), (1000,), (3, 33, 17)])
    size = int(np.prod(shape))
    b.arg("shape", shape, bad=[("bad", lambda r: pick(r, [-1, (2, -3), 2.5, (2, 1.5), True, "3", (None,),
                                                          (2**64 + 4,), 10**400, [[2]]]))])
    b.arg("seed", _u64_good(rng), bad=[("bad", bad_u64)])
    b.arg("stream", _u64_good(rng), bad=[("bad", bad_u64)])
    edge = U64 - size if size else U64 - 1
    b.arg("offset", pick(rng, [0, 7, int(rng.integers(0, 2**62)), edge - 1 if edge else 0]),
          bad=[("bad", bad_u64), ("pastend", lambda r: U64 - size + int(r.integers(1, 5000)))],
          odd=[("lastnumbers", lambda r: edge)])     # numbers 2**64 - size .. 2**64 - 1: the very end
    b.arg("dtype", pick(rng, [np.float32, np.float64, "float32", None]),  # None: float32, or out's dtype
          bad=[("bad", lambda r: pick(r, [np.int32, np.complex64, "int", np.float16, object]))])
    _out = pick(rng, [None, NEW])
    dt0 = np.dtype(np.float32 if b.args["dtype"] is None else b.args["dtype"])
    b.arg("out", _out, bad=[("dtype", lambda r: np.empty(shape, pick(r, [np.int32, np.float16, np.complex64]))),
                            ("shape", lambda r: np.empty((size + 1,), dt0)),
                            ("readonly", lambda r: readonly_copy(np.empty(shape, dt0))),
                            ("noncontiguous", lambda r: noncontiguous_copy(np.empty((size, 2), dt0))),
                            ("notarray", lambda r: pick(r, [[0.0], "out"]))],
          odd=[("unaligned", lambda r: unaligned_copy(np.zeros(shape, dt0)))])
    b.arg("nthreads", pick(rng, [None, 1, 2]), bad=[("bad", lambda r: pick(r, [0, -1, 2**64 + 4, 1.5, True, "2"]))])
    v, kind, names, tags = b.finish()
    if v["out"] is NEW:
        v["out"] = np.empty(shape, dt0)
    kw = {k: v[k] for k in ("seed", "stream", "offset", "dtype", "out", "nthreads")}

    def check(z):
        dt = np.dtype(v["dtype"] or np.float32) if v["out"] is None else v["out"].dtype
        want_shape = (shape,) if isinstance(shape, int) else shape
        prob = expect_array(z, want_shape, dt)
        if prob:
            return prob
        if z.size and float(np.max(np.abs(z))) > BOUND:
            return "wrong_value", f"|z| = {float(np.max(np.abs(z)))} > {BOUND}"
        one = optdiff.standard_normal(shape, seed=v["seed"], stream=v["stream"], offset=v["offset"], dtype=dt,
                                      nthreads=1)
        if one.tobytes() != z.tobytes():
            return "wrong_value", "not bitwise the numbers of nthreads=1"
        if z.size >= 2 and v["offset"] + z.size < U64:
            tail = optdiff.standard_normal(z.size - 1, seed=v["seed"], stream=v["stream"], offset=v["offset"] + 1,
                                           dtype=dt)
            if tail.tobytes() != z.reshape(-1)[1:].tobytes():
                return "wrong_value", "numbers offset+1.. differ from the same numbers drawn with offset+1"
        return None
    return Case("standard_normal", kind, lambda: optdiff.standard_normal(v["shape"], **kw),
                call_desc("optdiff.standard_normal", v), names, tags, check)


def _coef_bad(rng):
    return bad_real(rng)


@entry("ddpm_update", weight=8)
def gen_ddpm_update(rng, ctx):
    b = Builder(rng)
    dt = np.dtype(pick(rng, [np.float32, np.float64]))
    shape = pick(rng, [(2, 5, 5), (1, 8, 8), (7,), (3, 4), (2, 3, 4, 5), (1000,)])
    xbuf = np.zeros(int(np.prod(shape)) + 1, dt)     # x is a view, so that out can overlap it
    x = xbuf[:-1].reshape(shape)
    x[...] = random_real(rng, shape, dt)
    eps = random_real(rng, shape, dt)

    def arr_alts(a, name):
        grow = 1 if name == "x" else 2   # x and eps both spoilt must still differ in shape
        return ([("dtype", lambda r: wrong_dtype(r, a, (np.float32, np.float64))),
                 ("shape", lambda r: np.zeros(a.shape[:-1] + (a.shape[-1] + grow,), a.dtype)),
                 ("noncontiguous", lambda r: noncontiguous_copy(a)),
                 ("nonfinite", lambda r: with_nonfinite(r, a)), ("notarray", lambda r: pick(r, [a.tolist(), None]))],
                [("unaligned", lambda r: unaligned_copy(a)), ("readonly", lambda r: readonly_copy(a)),
                 ("huge", lambda r: (a * pick(r, [1e30, 3e38] if dt == np.float32 else [1e300, 1e307])).astype(dt))])
    b.arg("x", x, *arr_alts(x, "x"))
    b.arg("eps", eps, *arr_alts(eps, "eps"))
    for k, good in (("c1", float(rng.uniform(0.9, 1.1))), ("c2", float(rng.uniform(0, 0.2))),
                    ("sigma", pick(rng, [0.0, float(rng.uniform(0, 0.2))])),
                    ("eps_scale", pick(rng, [1.0, float(rng.uniform(-3, 3))])),
                    ("eps_offset", pick(rng, [0.0, float(rng.uniform(-1, 1))]))):
        bad = [("bad", _coef_bad)] + ([("negative", lambda r: pick(r, [-0.1, -1e300]))] if k == "sigma" else [])
        b.arg(k, good, bad=bad, odd=[("absurd", absurd_real)])
    for k in ("seed", "stream"):
        b.arg(k, _u64_good(rng), bad=[("bad", bad_u64)])
    b.arg("offset", pick(rng, [0, 11]), bad=[("bad", bad_u64), ("pastend", lambda r: U64 - 1)])
    out_mode = pick(rng, ["none", "new", "x", "eps"])
    b.arg("out", None, bad=[("dtype", lambda r: np.empty(shape, np.float64 if dt == np.float32 else np.float32)),
                            ("shape", lambda r: np.empty((2,) + shape, dt)),
                            ("readonly", lambda r: readonly_copy(np.empty(shape, dt))),
                            ("overlap", lambda r: xbuf[1:].reshape(shape)),
                            ("noncontiguous", lambda r: noncontiguous_copy(np.empty(shape, dt)))],
          odd=[("unaligned", lambda r: unaligned_copy(np.zeros(shape, dt)))])
    b.arg("nthreads", pick(rng, [None, 1, 2]), bad=[("bad", lambda r: pick(r, [0, -3, 1.5, True, "2", 2**64]))])
    v, kind, names, tags = b.finish()
    if "out" not in names:
        if out_mode == "new":
            v["out"] = np.empty(shape, dt)
        elif out_mode in ("x", "eps") and isinstance(v[out_mode], np.ndarray) and v[out_mode].flags.writeable:
            v["out"] = v[out_mode]
    x0 = v["x"].copy() if isinstance(v["x"], np.ndarray) else None
    e0 = v["eps"].copy() if isinstance(v["eps"], np.ndarray) else None
    kw = {k: v[k] for k in ("c1", "c2", "sigma", "seed", "stream", "offset", "eps_scale", "eps_offset", "out",
                            "nthreads")}

    def check(res):
        fin = np.all(np.isfinite(x0)) and np.all(np.isfinite(e0))
        prob = expect_array(res, x0.shape, x0.dtype, finite=fin)
        if prob or kind != "good":
            return prob
        z = (optdiff.standard_normal(x0.shape, seed=v["seed"], stream=v["stream"], offset=v["offset"], dtype=x0.dtype)
             .astype(np.float64) if v["sigma"] else 0.0)
        xd, ed = x0.astype(np.float64), e0.astype(np.float64)
        e = v["eps_scale"] * ed + v["eps_offset"]
        want = v["c1"] * (xd - v["c2"] * e) + v["sigma"] * z
        mag = abs(v["c1"]) * (np.abs(xd) + abs(v["c2"]) * (np.abs(v["eps_scale"] * ed) + abs(v["eps_offset"]))) \
            + abs(v["sigma"]) * np.abs(z)
        tol = (4e-6 if x0.dtype == np.float32 else 1e-14) * (mag + 1e-30)
        bad = np.abs(res.astype(np.float64) - want) > tol
        if np.any(bad):
            return "wrong_value", f"{int(bad.sum())} values differ from c1 (x - c2 e) + sigma z beyond rounding"
        return None
    return Case("ddpm_update", kind, lambda: optdiff.ddpm_update(v["x"], v["eps"], **kw),
                call_desc("optdiff.ddpm_update", v), names, tags, check)


@entry("set_num_threads", weight=1)
def gen_set_num_threads(rng, ctx):
    b = Builder(rng, p_odd=0.0)
    b.arg("n", int(rng.integers(1, 9)),
          bad=[("bad", lambda r: pick(r, NOT_NUMBERS + NON_INTEGERS + [0, -1, 2**31, 2**64 + 4, 10**400]))])
    v, kind, names, tags = b.finish()

    def call():
        try:
            optdiff.set_num_threads(v["n"])
            return optdiff.get_num_threads()
        finally:
            optdiff.set_num_threads(1)
    return Case("set_num_threads", kind, call, call_desc("optdiff.set_num_threads", v), names, tags,
                lambda got: None if got == v["n"] else ("wrong_value", f"get_num_threads() = {got}"))
