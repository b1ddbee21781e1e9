"""Fuzz cases of the model side: the ODU, TimeAwareODU (predict_eps, loss_and_grads),
NoiseSchedule and the DDPM/DDIM samplers."""

from __future__ import annotations

import dataclasses

import numpy as np

from optdiff.config import Config, OpticsConfig
from optdiff.diffusion.model import TimeAwareODU
from optdiff.diffusion.samplers import ddim_sample, ddpm_sample
from optdiff.diffusion.schedule import NoiseSchedule
from optdiff.odu import ODU

from .cases import CLEAN, Builder, Case, call_desc, entry, expect_array
from .values import (
    HUGE_INTS,
    NON_FINITE,
    NON_INTEGERS,
    NOT_NUMBERS,
    absurd_real,
    bad_integer,
    bad_real,
    noncontiguous_copy,
    pick,
    random_real,
    readonly_copy,
    unaligned_copy,
    with_nonfinite,
    wrong_rank,
)

H = 6


def tiny_config(**over) -> Config:
    d = {"optics": {"n": 16, "upsample": 2, "distance": 3e-3, "layers": 2},
         "model": {"image_size": H, "sets": 3}, "diffusion": {"T": 30, "beta_end": 0.2},
         "train": {"threads": 1, "progress": False}, "sample": {"count": 2, "batch": 2}}
    for k, v in over.items():
        d.setdefault(k, {}).update(v)
    return Config.from_dict(d)


def model(ctx) -> TimeAwareODU:
    return ctx.get("model", lambda: TimeAwareODU(tiny_config(), nthreads=1))


def _optics_alts():
    """(field, good, bad makers, odd makers) of OpticsConfig."""
    cnt = lambda lo, hi: [("bad", lambda r: bad_integer(r, also=[lo - 1, hi + 1, 2**64 + 4, 10**400]))]  # noqa: E731
    num = lambda: [("bad", lambda r: pick(r, NOT_NUMBERS + NON_FINITE + [True]))]  # noqa: E731
    return [
        ("n", 16, cnt(4, 4096), []), ("layers", 2, cnt(1, 64), []),
        ("wavelength", 850e-9, num() + [("range", lambda r: pick(r, [0.0, -1e-6, 1.0]))], []),
        ("pitch", 9.2e-6, num() + [("range", lambda r: pick(r, [0.0, 1e-9, 1.0]))], []),
        ("distance", 3e-3, num() + [("range", lambda r: pick(r, [0.0, -1e-3, 11.0]))], [("absurd", lambda r: 1e-300)]),
        ("camera_distance", 0.0, num() + [("range", lambda r: -1.0)], []),
        ("input_distance", 0.0, num(), [("some", lambda r: 2e-3)]),
        ("method", "as", [("bad", lambda r: pick(r, ["x", None, 1]))], [("other", lambda r: pick(r, ["bl-as", "fresnel"]))]),
        ("padding", 2, [("bad", lambda r: pick(r, [0, 3, 1.0, True, "2", None]))], [("periodic", lambda r: 1)]),
        ("upsample", 2, cnt(0, 4096) + [("toolarge", lambda r: 5)], [("auto", lambda r: 0)]),
        ("fill", 0.8, num() + [("range", lambda r: pick(r, [0.0, 1.5]))], []),
        ("encoding", "amplitude", [("bad", lambda r: pick(r, ["x", None]))], [("other", lambda r: pick(r, ["phase", "complex"]))]),
        ("amp_bias", 0.5, num(), [("range", lambda r: 9.0)]),
        ("amp_scale", 0.125, num() + [("range", lambda r: 0.0)], []),
        ("camera_flip", "auto", [("bad", lambda r: pick(r, ["yes", 1, None]))], [("bool", lambda r: True)]),
        ("init", "imaging", [("bad", lambda r: pick(r, ["lens2", None, 3]))],
         [("other", lambda r: pick(r, ["relay", "4f", "lens", "zero", "random"]))]),
        ("init_noise", 0.3, num() + [("range", lambda r: -1.0)], []),
    ]


@entry("ODU", weight=3)
def gen_odu(rng, ctx):
    b = Builder(rng)
    for name, good, bad, odd in _optics_alts():
        b.arg(name, good, bad=bad, odd=odd)
    b.arg("image_size", H, bad=[("bad", lambda r: bad_integer(r, also=[0, -1, 2**64 + 4]))])
    b.arg("precision", pick(rng, ["single", "double"]), bad=[("bad", lambda r: pick(r, ["half", None, 1]))])
    v, kind, names, tags = b.finish()
    fields = {f.name for f in dataclasses.fields(OpticsConfig)}
    opt = OpticsConfig(**{k: v[k] for k in v if k in fields})
    r = random_real(rng, (2, H, H), np.float64)

    def call():
        odu = ODU(opt, v["image_size"], nthreads=1, precision=v["precision"])
        from optdiff.odu import init_phases
        ph = init_phases(opt, rng=0, image_size=v["image_size"]).astype(odu.rdtype)
        return odu.intensity(r, ph)
    return Case("ODU", kind, call, call_desc("ODU(OpticsConfig", v) + ").intensity(r)", names, tags,
                lambda I: expect_array(I, (2, H, H), np.float64))


@entry("ODU.intensity", weight=3)
def gen_odu_intensity(rng, ctx):
    m = model(ctx)
    odu = m.odu
    b = Builder(rng)
    r = random_real(rng, pick(rng, [(1, H, H), (3, H, H), (H, H)]), np.float64)
    b.arg("r", r, bad=[("shape", lambda x: np.zeros((2, H + 1, H))), ("rank", lambda x: wrong_rank(x, r)),
                       ("dtype", lambda x: r.astype(np.complex128)), ("nonfinite", lambda x: with_nonfinite(x, r)),
                       ("notarray", lambda x: pick(x, [None, "r"]))],
          odd=[("noncontiguous", lambda x: noncontiguous_copy(r)), ("readonly", lambda x: readonly_copy(r)),
               ("int", lambda x: np.ones(r.shape, np.int32)), ("huge", lambda x: r * 1e300)])
    ph = m.params["phases"][0]
    b.arg("phases", ph, bad=[("shape", lambda x: ph[:1].copy()), ("notarray", lambda x: ph.tolist()),
                             ("nonfinite", lambda x: with_nonfinite(x, ph))],
          odd=[("float64", lambda x: ph.astype(np.float64)), ("noncontiguous", lambda x: noncontiguous_copy(ph)),
               ("unaligned", lambda x: unaligned_copy(ph))])
    v, kind, names, tags = b.finish()
    names = names + (("images",) if "r" in names else ())
    B = r.shape[0] if r.ndim == 3 else 1
    return Case("ODU.intensity", kind, lambda: odu.intensity(v["r"], v["phases"]), call_desc("ODU.intensity", v),
                names, tags, lambda I: expect_array(I, (B, H, H), np.float64))


@entry("TimeAwareODU.predict_eps", weight=4)
def gen_predict_eps(rng, ctx):
    m = model(ctx)
    b = Builder(rng)
    x = random_real(rng, (int(rng.integers(1, 4)), H, H), pick(rng, [np.float64, np.float32]))
    b.arg("x_t", x, bad=[("shape", lambda r: np.zeros((2, H, H + 1))), ("rank", lambda r: wrong_rank(r, x)),
                         ("complex", lambda r: x.astype(np.complex128)), ("nonfinite", lambda r: with_nonfinite(r, x)),
                         ("notarray", lambda r: pick(r, [None, "x", [[1.0]]]))],
          odd=[("noncontiguous", lambda r: noncontiguous_copy(x)), ("int", lambda r: np.zeros(x.shape, np.int64)),
               ("empty", lambda r: np.zeros((0, H, H))), ("huge", lambda r: x * 1e300)])
    b.arg("t", int(rng.integers(0, 30)), bad=[("bad", lambda r: pick(r, NOT_NUMBERS + NON_INTEGERS + [-1, 30] + HUGE_INTS))],
          odd=[("numpy", lambda r: np.int16(r.integers(0, 30)))])
    b.arg("batch", pick(rng, [256, 1, 2]), bad=[("bad", lambda r: bad_integer(r, also=[0, -1]))])
    v, kind, names, tags = b.finish()
    B = x.shape[0]

    def check(e):
        shape = (0, H, H) if isinstance(v["x_t"], np.ndarray) and v["x_t"].shape[0] == 0 else (B, H, H)
        return expect_array(e, shape, np.float64)
    return Case("TimeAwareODU.predict_eps", kind, lambda: m.predict_eps(v["x_t"], v["t"], batch=v["batch"]),
                call_desc("TimeAwareODU.predict_eps", v), names, tags, check)


@entry("TimeAwareODU.loss_and_grads", weight=4)
def gen_loss_and_grads(rng, ctx):
    mdl = model(ctx)
    b = Builder(rng)
    m = int(rng.integers(0, 3))
    lo, hi = mdl.set_ranges[m]
    B = int(rng.integers(1, 4))
    r = random_real(rng, (B, H, H), np.float64)
    eps = random_real(rng, (B, H, H), np.float64)
    t = rng.integers(lo, hi, size=B)
    b.arg("m", m, bad=[("bad", lambda x: pick(x, NOT_NUMBERS + NON_INTEGERS + [-1, 3, 2**64 + 4]))])
    b.arg("r", r, bad=[("shape", lambda x: np.zeros((B, H + 1, H))), ("nonfinite", lambda x: with_nonfinite(x, r)),
                       ("notarray", lambda x: None)])
    b.arg("t", t, bad=[("float", lambda x: t.astype(float)), ("bool", lambda x: np.ones(B, bool)),
                       ("range", lambda x: np.full(B, 10**6)), ("otherset", lambda x: np.full(B, (hi % 30))),
                       ("length", lambda x: np.full(B + 1, lo))],
          odd=[("scalar", lambda x: int(lo))])
    b.arg("eps", eps, bad=[("shape", lambda x: eps[:, :2]), ("nonfinite", lambda x: with_nonfinite(x, eps))])
    b.arg("weight", 1.0, bad=[("bad", bad_real)], odd=[("absurd", absurd_real)])
    v, kind, names, tags = b.finish()

    def check(res):
        loss, grads = res
        if not isinstance(loss, float):
            return "wrong_shape", f"loss is {type(loss).__name__}"
        if not np.isfinite(loss) and np.isfinite(v["weight"]) and abs(v["weight"]) < 1e300:
            return "nonfinite", f"loss {loss}"
        for k, g in grads.items():
            p = expect_array(g, mdl.params[k].shape[1:], g.dtype, finite=abs(v["weight"]) < 1e300, name=f"grads[{k}]")
            if p:
                return p
        return None
    return Case("TimeAwareODU.loss_and_grads", kind,
                lambda: mdl.loss_and_grads(v["m"], v["r"], v["t"], v["eps"], weight=v["weight"]),
                call_desc("TimeAwareODU.loss_and_grads", v), names, tags, check)


@entry("NoiseSchedule", weight=3)
def gen_schedule(rng, ctx):
    b = Builder(rng)
    b.arg("T", int(rng.integers(1, 200)), bad=[("bad", lambda r: bad_integer(r, also=[0, -1, 2**64 + 4, 10**400, 10**9]))])
    kind_ = b.arg("kind", pick(rng, ["linear", "cosine", "Linear"]), bad=[("bad", lambda r: pick(r, ["quadratic", None, 1]))])
    b.arg("beta_start", 1e-4, bad=[("bad", bad_real)] + ([("range", lambda r: pick(r, [0.0, -1e-4, 2.0]))]
                                                            if kind_.lower() == "linear" else []))
    b.arg("beta_end", 0.02, bad=[("bad", bad_real)] + ([("range", lambda r: pick(r, [1.0, 1e-5, -0.1]))]
                                                          if kind_.lower() == "linear" else []))
    b.arg("cosine_s", 0.008, bad=[("bad", bad_real), ("range", lambda r: -0.1)], odd=[("absurd", absurd_real)])
    b.arg("max_beta", 0.999, bad=[("bad", bad_real), ("range", lambda r: pick(r, [0.0, 1.0, 2.0]))])
    v, kind, names, tags = b.finish()

    def check(s):
        T = v["T"]
        for name in ("betas", "alphas", "alpha_bar", "posterior_variance", "posterior_mean_coef1",
                     "posterior_mean_coef2", "sqrt_recip_alpha_bar"):
            p = expect_array(getattr(s, name), (T,), np.float64, name=name)
            if p:
                return p
        ab = s.alpha_bar
        if np.any(ab <= 0) or np.any(ab > 1) or np.any(np.diff(ab) > 0):
            return "wrong_value", "alpha_bar must decrease within (0, 1]"
        return None
    return Case("NoiseSchedule", kind, lambda: NoiseSchedule(**v), call_desc("NoiseSchedule", v), names, tags, check)


def _predictor(name):
    return {"zero": lambda x, t: np.zeros_like(x), "half": lambda x, t: 0.5 * x,
            "nan": lambda x, t: np.full_like(x, np.nan), "shape": lambda x, t: x[:, :1],
            "complex": lambda x, t: x.astype(np.complex128)}[name]


@entry("ddpm_sample/ddim_sample", weight=4)
def gen_sampler(rng, ctx):
    b = Builder(rng)
    ddim = bool(rng.integers(2))
    T = int(rng.integers(1, 25))
    sched = NoiseSchedule(T, pick(rng, ["linear", "cosine"]), 1e-3, 0.2)
    b.arg("predict_eps", pick(rng, ["zero", "half"]), bad=[("broken", lambda r: pick(r, ["nan", "shape", "complex"])),
                                                          ("notcallable", lambda r: pick(r, [None, 3]))])
    b.arg("schedule", sched, bad=[("bad", lambda r: pick(r, [None, "linear", 1000]))])
    shape = pick(rng, [(1, 3, 3), (2, 4, 4), (3, 2)])
    b.arg("shape", shape, bad=[("bad", lambda r: pick(r, [(0, 3, 3), (2, 2.5, 2), (True, 2, 2), (-1, 2), "33", 5,
                                                          (2**64 + 4, 1), (1,)]))])
    b.arg("rng", int(rng.integers(0, 1000)), bad=[("bad", lambda r: pick(r, [1.5, "seed", -1, True, [1.5]]))],
          odd=[("generator", lambda r: np.random.default_rng(3)), ("none", lambda r: None)])
    b.arg("clip_x0", pick(rng, [True, False]))
    traj = bool(rng.integers(2))
    b.arg("trajectory_steps", None, bad=[("bad", lambda r: pick(r, [[T + 5], [1.5], "1", 3, [None]]))]
          if traj else [])
    if ddim:
        b.arg("steps", int(rng.integers(1, T + 1)), bad=[("bad", lambda r: bad_integer(r, also=[0, T + 1, -1]))])
        b.arg("eta", pick(rng, [0.0, 1.0, 0.3]), bad=[("bad", bad_real), ("negative", lambda r: -0.5)],
              odd=[("absurd", absurd_real)])
    v, kind, names, tags = b.finish()
    if traj and v["trajectory_steps"] is None and kind == "good" and not ddim:
        v["trajectory_steps"] = [0, T - 1]
    pred = _predictor(v["predict_eps"]) if isinstance(v["predict_eps"], str) else v["predict_eps"]
    kw = dict(clip_x0=v["clip_x0"], return_trajectory=traj, trajectory_steps=v["trajectory_steps"])
    if ddim:
        kw.update(steps=v["steps"], eta=v["eta"])
    fn = ddim_sample if ddim else ddpm_sample
    if isinstance(v["predict_eps"], str) and v["predict_eps"] == "nan":
        names = names + ("t",)  # FloatingPointError naming the timestep

    def check(res):
        x = res[0] if traj else res
        p = expect_array(x, shape, np.float64)
        if p:
            return p
        if v["clip_x0"] and np.max(np.abs(x)) > 1 + 1e-9:
            return "wrong_value", f"clip_x0 sample leaves [-1, 1]: {np.max(np.abs(x))}"
        return None
    name = "ddim_sample" if ddim else "ddpm_sample"
    return Case(name, kind, lambda: fn(pred, v["schedule"], v["shape"], v["rng"], **kw),
                call_desc(name, v), names, tags, check, allowed=CLEAN + (FloatingPointError,))
