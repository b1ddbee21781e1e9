"""The Python stages of benchmarks/gpu_check.sh: the CUDA backend on a GPU, checked, then timed.

    python benchmarks/gpu_bench.py info    --json OUT/results.json   # versions, device, cuFFT record
    python benchmarks/gpu_bench.py smoke   --json ...   # every entry point once, NumPy + PyTorch inputs
    python benchmarks/gpu_bench.py checks  --json ...   # two streams, memory per sample, large N, OOM
    python benchmarks/gpu_bench.py bench   --json ...   # training step and DDPM step vs PyTorch / JAX
    python benchmarks/gpu_bench.py profile --json ...   # per-kernel times of one fused step vs floors

``--dry`` runs every stage quickly on the CPU instead: backend ``cuda-emu`` (the CUDA host code and
kernel bodies compiled for the CPU), NumPy arrays, PyTorch/JAX on the CPU, tiny sizes; it checks the
script, not the GPU. Each stage merges its results into the JSON file (rewritten atomically after
every case, so a stage stopped by its timeout keeps what it finished) and exits non-zero when a
check fails. Every timed tool is first checked against the complex128 reference
(benchmarks/common.py: scipy.fft on the CPU), float32 tolerance 1e-3 relative (docs/gpu.md).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import traceback

# JAX must not take 75% of the GPU before PyTorch and optdiff get any.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks.common import (  # noqa: E402
    Case,
    DDPMStep,
    ddpm_input,
    ddpm_noise_errors,
    ddpm_reference_mean,
    loss_grad_scale,
    make_inputs,
    reference,
)
from benchmarks.gpu_floors import ddpm_floor, kernel_floors, step_floor  # noqa: E402

TOL = 1e-3  # float32 against the complex128 reference (relative 2-norm)


def rel_err(a, b) -> float:
    """||a - b|| / ||b||, complex-aware (benchmarks.common.rel_err is for real arrays)."""
    a, b = np.asarray(a), np.asarray(b)
    kind = np.complex128 if np.iscomplexobj(a) or np.iscomplexobj(b) else np.float64
    a, b = a.astype(kind), b.astype(kind)
    nb = float(np.linalg.norm(b.ravel()))
    return float(np.linalg.norm((a - b).ravel()) / (nb if nb > 0 else 1.0))
RECIPE = dict(layers=4, n=300, sets=10, epochs=250, images=10000)  # images: an assumption, see docs/gpu.md


# --------------------------------------------------------------------------- results file

class Results:
    """results.json: {stage: {...}}; rewritten atomically after every change."""

    def __init__(self, path: str | None, stage: str):
        self.path, self.stage = path, stage
        self.data = {}
        if path and os.path.exists(path):
            try:
                with open(path) as fh:
                    self.data = json.load(fh)
            except (OSError, ValueError):
                self.data = {}
        self.mine = self.data.setdefault(stage, {})

    def save(self):
        if not self.path:
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(self.data, fh, indent=1, default=str)
        os.replace(tmp, self.path)

    def put(self, key, value):
        self.mine[key] = value
        self.save()

    def append(self, key, value):
        self.mine.setdefault(key, []).append(value)
        self.save()


# --------------------------------------------------------------------------- environment

class Env:
    """Where things run: the real GPU (torch CUDA tensors) or, with --dry, the CPU emulation."""

    def __init__(self, dry: bool, need_gpu: bool = True):
        self.dry = dry
        self.backend = "cuda-emu" if dry else "cuda"
        # GPU_CHECK_PEERS=0 (dry runs only): no PyTorch/JAX peers, for a quick test of the script
        self.peers = not dry or os.environ.get("GPU_CHECK_PEERS", "1") != "0"
        torch = None
        if self.peers:
            try:
                import torch
            except ImportError:
                torch = None
        self.torch = torch
        self.tdev = "cpu" if dry or torch is None or not torch.cuda.is_available() else "cuda"
        if not dry and need_gpu and self.tdev != "cuda":
            raise SystemExit("PyTorch has no CUDA device here: the GPU stages need one (or use --dry)")

    def dev(self, a: np.ndarray):
        """An input for optdiff: NumPy in the dry run, a torch CUDA tensor on the GPU."""
        if self.dry:
            return np.ascontiguousarray(a)
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.tdev)

    def host(self, x) -> np.ndarray:
        if isinstance(x, np.ndarray):
            return x
        if hasattr(x, "detach"):
            return x.detach().cpu().numpy()
        if hasattr(x, "get"):
            return x.get()
        return np.asarray(x)

    def sync(self):
        if self.tdev == "cuda":
            self.torch.cuda.synchronize()


def timed(fn, env: Env, budget: float = 0.4, min_reps: int = 3, max_reps: int = 50) -> dict:
    """Median seconds per call (after two warm-up calls), synchronised around each call."""
    for _ in range(2):
        fn()
    env.sync()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < budget and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        env.sync()
        times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median": statistics.median(times), "q1": q[0], "q3": q[2], "reps": len(times)}


# --------------------------------------------------------------------------- stage: info

def stage_info(env: Env, res: Results) -> int:
    from optdiff.optics.backends import cuda as cb

    out = {"gpu_present": cb.gpu_present(), "cufft_record": cb.cufft_record(),
           "python": sys.version.split()[0], "numpy": np.__version__}
    name = "_cuda_emu" if env.dry else "_cuda"
    mod, why = cb._load(name)  # the module itself, with the cuFFT preload, not through a backend
    out["preload"] = cb._preload_text() if name == "_cuda" else "emulation: no cuFFT"
    ok = mod is not None
    if mod is None:
        out["import_error"] = why
    else:
        out.update(module=mod.__file__, emulation=bool(mod.EMULATION), runtime=mod.runtime_version(),
                   driver=mod.driver_version(), cufft=mod.cufft_version(), device_count=mod.device_count(),
                   no_device_reason=mod.no_device_reason())
        if out["device_count"] > 0:
            out["device"] = mod.device_name(0)
        ok = out["device_count"] > 0
    if env.torch is not None:
        t = env.torch
        out["torch"] = {"version": t.__version__, "cuda": t.version.cuda, "available": t.cuda.is_available()}
        if t.cuda.is_available():
            p = t.cuda.get_device_properties(0)
            out["torch"].update(device=p.name, sms=p.multi_processor_count, memory=p.total_memory)
    try:
        if not env.peers:
            raise RuntimeError("peers off (GPU_CHECK_PEERS=0)")
        import jax

        out["jax"] = {"version": jax.__version__, "devices": [str(d) for d in jax.devices()]}
    except Exception as exc:  # JAX is optional: say why it is missing
        out["jax"] = {"error": f"{type(exc).__name__}: {exc}"}
    res.put("info", out)
    print(json.dumps(out, indent=1, default=str))
    return 0 if ok else 1


# --------------------------------------------------------------------------- stage: smoke

def stage_smoke(env: Env, res: Results) -> int:
    """Every entry point once with NumPy and (on the GPU) PyTorch inputs, against the CPU backend;
    small enough for compute-sanitizer."""
    import optdiff

    rng = np.random.default_rng(5)
    n, B, L = 8, 2, 2
    geo = dict(wavelength=850e-9, pitch=9.2e-6)
    kinds = ["numpy"] + ([] if env.dry else ["torch"])
    failures = []

    def close(name, got, ref, tol=1e-4):
        err = rel_err(env.host(got), ref)
        if not err <= tol:
            failures.append(f"{name}: relative error {err:.3g}")

    x = (rng.standard_normal((B, n, n)) + 1j * rng.standard_normal((B, n, n))).astype(np.complex64)
    ph = rng.uniform(-3, 3, (L, n, n)).astype(np.float32)
    tgt = rng.uniform(0, 1, (B, n, n)).astype(np.float32)
    amp = np.abs(x).astype(np.float32)
    for kind in kinds:
        d = (lambda a: a.copy()) if kind == "numpy" else (lambda a: env.torch.from_numpy(a.copy()).cuda())
        for pad in (1, 2):
            kw = dict(geo, distance=2e-3, padding=pad, tilt=(0.01, 0.0))
            cpu, gpu = optdiff.Propagator(n, **kw), optdiff.Propagator(n, backend=env.backend, **kw)
            close(f"{kind} propagator forward p{pad}", gpu.forward(d(x)), cpu.forward(x))
            close(f"{kind} propagator adjoint p{pad}", gpu.adjoint(d(x)), cpu.adjoint(x))
            skw = dict(geo, distances=[2e-3] * L, input_distance=1e-3, padding=pad)
            cs, gs = optdiff.PhaseStack(n, **skw), optdiff.PhaseStack(n, backend=env.backend, **skw)
            close(f"{kind} stack forward p{pad}", gs.forward(d(x), d(ph)), cs.forward(x, ph))
            close(f"{kind} stack forward real p{pad}", gs.forward(d(amp), d(ph)), cs.forward(amp.astype(np.complex64), ph))
            close(f"{kind} camera_field p{pad}", gs.camera_field(d(x), d(ph)), cs.camera_field(x, ph))
            g = rng.standard_normal((B, n, n)).astype(np.float32)
            for recompute in (False, True):
                _, tc = cs.forward_train(x, ph)
                ref = cs.backward(tc, g, input_grad=True, param_grads=True)
                _, tg = gs.forward_train(d(x), d(ph), recompute=recompute)
                got = gs.backward(tg, d(g), input_grad=True, param_grads=True)
                close(f"{kind} backward p{pad} rc{recompute} phases", got[0], ref[0])
                close(f"{kind} backward p{pad} rc{recompute} field", got[1], ref[1])
                close(f"{kind} backward p{pad} rc{recompute} distances", got[2].distances, ref[2].distances, 1e-3)
            lc, gc = cs.mse_loss_and_grad(x, ph, tgt)
            lg, gg = gs.mse_loss_and_grad(d(x), d(ph), d(tgt))
            close(f"{kind} mse grad p{pad}", gg, gc)
            if abs(lg - lc) > 1e-4 * abs(lc):
                failures.append(f"{kind} mse loss p{pad}: {lg} vs {lc}")
        out = d(np.full((3, 5), np.nan, np.float32))
        optdiff.standard_normal(out=out, seed=3, stream=1, offset=7, backend=env.backend)
        close(f"{kind} standard_normal", out, optdiff.standard_normal((3, 5), seed=3, stream=1, offset=7), 1e-5)
        xs, es = rng.standard_normal(40).astype(np.float32), rng.standard_normal(40).astype(np.float32)
        kw = dict(c1=1.01, c2=0.3, sigma=0.2, eps_scale=0.5, eps_offset=-0.1, seed=4, stream=2, offset=3)
        close(f"{kind} ddpm_update", optdiff.ddpm_update(d(xs), d(es), backend=env.backend, **kw),
              optdiff.ddpm_update(xs, es, **kw), 1e-5)
        be = optdiff.get_backend(env.backend)
        img = rng.uniform(0, 1, (B, 12, 12)).astype(np.float32)
        binned = env.host(be.bin_readout(d(img), (5, 5), 2))
        want = img[:, 1:11, 1:11].reshape(B, 5, 2, 5, 2).mean(axis=(2, 4))
        close(f"{kind} bin_readout", binned, want, 1e-6)
        back = env.host(be.bin_readout_backward(d(np.ones((B, 5, 5), np.float32)), 12, 2))
        if abs(back.sum() - B * 25) > 1e-3:
            failures.append(f"{kind} bin_readout_backward: sum {back.sum()}")
    env.sync()
    res.put("smoke", {"kinds": kinds, "failures": failures})
    print("smoke:", "ok" if not failures else failures)
    return 1 if failures else 0


# --------------------------------------------------------------------------- stage: checks

def _stack(env, case: Case):
    import optdiff

    return optdiff.PhaseStack(n=case.n, wavelength=case.wavelength, pitch=case.pitch,
                              distances=[case.distance] * case.layers, input_distance=case.distance,
                              padding=case.padding, backend=env.backend)


def stage_checks(env: Env, res: Results) -> int:
    """Two streams, memory per sample, a large N, and out-of-memory as an exception."""
    import optdiff  # noqa: F401  (the backend is loaded through it)
    from optdiff.optics.backends import cuda as cb

    failed = []
    mod = optdiff.get_backend(env.backend).mod
    # 1. forward on one stream, backward on another (item 7): equal to one stream.
    case = Case(n=16 if env.dry else 128, padding=2, batch=4 if env.dry else 256)
    f, p, t = make_inputs(case)
    st = _stack(env, case)
    g = env.dev(np.random.default_rng(1).standard_normal(f.shape).astype(np.float32))
    _, tape = st.forward_train(env.dev(f), env.dev(p))
    ref = env.host(st.backward(tape, g)[0])
    if env.tdev == "cuda":
        torch = env.torch
        s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
        F, P = env.dev(f), env.dev(p)
        env.sync()
        worst = 0.0
        for _ in range(5):
            with torch.cuda.stream(s1):
                _, tape = st.forward_train(F, P)
            with torch.cuda.stream(s2):
                got = st.backward(tape, g)[0]
            s2.synchronize()
            worst = max(worst, rel_err(env.host(got), ref))
        res.put("two_streams", {"max_rel_diff": worst, "case": case.key()})
        if worst > 1e-6:
            failed.append(f"two streams: backward differs from one stream by {worst:.3g}")
    else:
        res.put("two_streams", "dry run: streams are emulated (tests/test_cuda.py checks the ordering call)")

    # 2. memory per sample of the fused step: the pool's high-water mark over the samples of a chunk.
    mem = []
    for n in ((16,) if env.dry else (128, 300)):
        case = Case(n=n, padding=2, batch=8 if env.dry else 64)
        f, p, t = make_inputs(case)
        st = _stack(env, case)
        F, P, T = env.dev(f), env.dev(p), env.dev(t)
        row = {"n": n, "padding": 2, "batch": case.batch, "workspace_limit": mod.get_workspace_limit()}
        if env.tdev == "cuda":
            mod.trim_memory_pool()
            env.sync()
            free0 = env.torch.cuda.mem_get_info()[0]
            st.mse_loss_and_grad(F, P, T)
            env.sync()
            used = free0 - env.torch.cuda.mem_get_info()[0]  # pool memory kept (< its release threshold)
            row.update(measured_bytes=used, measured_per_sample=used / case.batch)
        row["predicted_per_sample"] = step_floor(case)["workspace_per_sample"]
        mem.append(row)
        res.put("memory", mem)

    # 3. a large N (tape and fused agree, finite), then 4. out of memory as MemoryError.
    big = Case(n=24 if env.dry else 1024, padding=2, batch=2 if env.dry else 16, layers=2)
    f, p, t = make_inputs(big)
    st = _stack(env, big)
    F, P, T = env.dev(f), env.dev(p), env.dev(t)
    loss, gf = st.mse_loss_and_grad(F, P, T)
    inten, tape = st.forward_train(F, P)
    gt = st.backward(tape, (inten - T) * loss_grad_scale(big))[0]
    d = rel_err(env.host(gt), env.host(gf))
    res.put("large_n", {"case": big.key(), "fused_vs_tape": d, "loss": loss})
    if not (d < 1e-4 and math.isfinite(loss)):
        failed.append(f"large N: fused vs tape {d:.3g}, loss {loss}")
    if env.tdev == "cuda":
        huge = Case(n=300, padding=2, batch=30000, layers=4)  # ~300 GB of scratch in one chunk
        old = mod.get_workspace_limit()
        mod.set_workspace_limit(1 << 40)
        try:
            F = env.torch.randn((huge.batch, 300, 300), dtype=env.torch.complex64, device="cuda")
            P = env.torch.rand((4, 300, 300), device="cuda")
            T = env.torch.rand((huge.batch, 300, 300), device="cuda")
            _stack(env, huge).mse_loss_and_grad(F, P, T)
            res.put("oom", "no error: the step fitted")
        except MemoryError as exc:
            res.put("oom", f"MemoryError: {exc}")
        except Exception as exc:
            res.put("oom", f"{type(exc).__name__}: {exc}")
            failed.append(f"out of memory gave {type(exc).__name__}, not MemoryError: {exc}")
        finally:
            mod.set_workspace_limit(old)
            mod.trim_memory_pool()  # what the failed call cached under the lifted budget
            F = P = T = None
            env.torch.cuda.empty_cache()
            cb.clear_plan_cache()
    res.put("failures", failed)
    print("checks:", "ok" if not failed else failed)
    return 1 if failed else 0


# --------------------------------------------------------------------------- stage: bench

def _torch_stack(env, case):
    from benchmarks.peers_torch import TorchStack

    return TorchStack(case).to(env.tdev)


def _tools(env: Env, case: Case, field, phases, target, compiled: bool):
    """name -> train step returning (I, grad, loss); all on the same device."""
    st = _stack(env, case)
    F, P, T = env.dev(field), env.dev(phases), env.dev(target)
    scale = np.float32(loss_grad_scale(case))
    tools = {}

    def fused():
        loss, g, inten = st.mse_loss_and_grad(F, P, T, return_intensity=True)
        return inten, g, loss

    def tape():
        inten, tp = st.forward_train(F, P)
        diff = inten - T
        g = st.backward(tp, diff * scale)[0]
        return inten, g, None

    tools["optdiff_fused"] = fused
    tools["optdiff_tape"] = tape
    torch = env.torch
    if torch is not None:
        model = _torch_stack(env, case)
        tf = torch.from_numpy(field).to(env.tdev)
        tt = torch.from_numpy(target).to(env.tdev)
        tp_ = torch.from_numpy(phases.copy()).to(env.tdev).requires_grad_(True)

        def torch_step(m):
            def step():
                tp_.grad = None
                inten = m(tf, tp_)
                loss = torch.mean((inten - tt) ** 2)
                loss.backward()
                return inten.detach(), tp_.grad, loss.detach()
            return step

        tools["torch_eager"] = torch_step(model)
        if compiled:
            tools["torch_compiled"] = torch_step(torch.compile(_torch_stack(env, case)))
    try:
        if not env.peers:
            raise RuntimeError("peers off (GPU_CHECK_PEERS=0)")
        import jax

        from benchmarks.peers_jax import build

        _, _, train = build(case)
        jf, jp, jt = jax.device_put(field), jax.device_put(phases), jax.device_put(target)

        def jax_step():
            (loss, inten), g = train(jp, jf, jt)
            g.block_until_ready()
            return inten, g, loss

        tools["jax_jit"] = jax_step
    except Exception as exc:  # JAX missing or without a GPU plugin: recorded, not fatal
        tools["jax_jit"] = exc
    return tools


def _cpu_step(case: Case, field, phases, target):
    """The fused step on optdiff's CPU backend (the large-batch baseline without PyTorch)."""
    import optdiff

    st = optdiff.PhaseStack(n=case.n, wavelength=case.wavelength, pitch=case.pitch,
                            distances=[case.distance] * case.layers, input_distance=case.distance,
                            padding=case.padding)
    loss, g, inten = st.mse_loss_and_grad(field, phases, target, return_intensity=True)
    return inten, g, loss


def _check(env, out, ref) -> dict:
    inten, g, loss = out
    I_ref, g_ref, loss_ref = ref
    errs = {"err_I": rel_err(env.host(inten), I_ref), "err_grad": rel_err(env.host(g), g_ref)}
    if loss is not None:
        errs["err_loss"] = abs(float(env.host(loss)) - float(loss_ref)) / abs(float(loss_ref))
    return errs


def _ddpm_tools(env: Env, case: Case, phases):
    import optdiff

    st = _stack(env, case)
    s = DDPMStep.at(500)
    x = ddpm_input(case)
    X, P = env.dev(x), env.dev(phases)
    state = {"stream": 0}

    def opt():
        inten = st.forward(X, P)  # the real image as the amplitude, no complex copy
        state["stream"] += 1
        return optdiff.ddpm_update(X, inten, c1=s.c1, c2=s.c2, sigma=s.sigma, eps_scale=s.a,
                                   eps_offset=s.b, seed=0, stream=state["stream"], out=inten,
                                   backend=env.backend)

    tools = {"optdiff": opt}
    torch = env.torch
    if torch is not None:
        model = _torch_stack(env, case)
        tx, tp = torch.from_numpy(x).to(env.tdev), torch.from_numpy(phases).to(env.tdev)
        gen = torch.Generator(device=env.tdev).manual_seed(0)

        def teager():
            with torch.inference_mode():
                inten = model(tx.to(torch.complex64), tp)
                eps = inten * s.a + s.b
                z = torch.randn(tx.shape, generator=gen, device=env.tdev)
                return (tx - s.c2 * eps) * s.c1 + s.sigma * z

        tools["torch_eager"] = teager
    try:
        if not env.peers:
            raise RuntimeError("peers off (GPU_CHECK_PEERS=0)")
        from benchmarks.peers_jax import Tool

        jt = Tool(case)
        jt.setup(*make_inputs(case))
        jt.setup_ddpm(x, s)
        tools["jax_jit"] = jt.ddpm_step
    except Exception as exc:
        tools["jax_jit"] = exc
    return tools, s


def _cases(env: Env, args) -> list:
    if env.dry:  # both paddings, the reference batch and a "large" one
        return [Case(n=16, padding=1, batch=8), Case(n=16, padding=2, batch=4)]
    order = [128, 300, 64, 256]  # the targets' sizes first: a timeout keeps them
    cases = [Case(n=n, padding=p, batch=64) for n in order for p in (1, 2)]
    big = {64: 2048, 128: 1024, 256: 256, 300: 256}
    cases += [Case(n=n, padding=p, batch=big[n]) for n in order for p in (2, 1)]
    return cases


def _time_train(env, case, tools, ref, field, phases, target, failed) -> dict:
    """Check each tool's step (against `ref`, else against a baseline at the same batch), then
    time the ones that pass with the NaN/Inf checks off."""
    from optdiff.optics.backends import cuda as cb

    train, baseline = {}, None
    for name, fn in tools.items():
        if isinstance(fn, Exception):
            train[name] = {"error": f"{type(fn).__name__}: {fn}"}
            continue
        try:
            cb.set_finite_checks(True)
            c0 = time.perf_counter()
            out = fn()
            env.sync()
            first = time.perf_counter() - c0
            if ref is not None:
                errs = _check(env, out, ref)
            else:
                if baseline is None:
                    baseline = (("torch_eager", tools["torch_eager"]()) if "torch_eager" in tools
                                else ("optdiff_cpu", _cpu_step(case, field, phases, target)))
                base = tuple(env.host(v) if v is not None else None for v in baseline[1])
                errs = {f"vs_{baseline[0]}_{k}": v for k, v in _check(env, out, base).items()}
            ok = bool(errs) and all(v <= TOL for v in errs.values())  # unchecked: not timed
            entry = dict(errs, first_call_s=first, checked=ok)
            if ok:
                cb.set_finite_checks(False)  # timing without the NaN/Inf read-backs
                tm = timed(fn, env, budget=0.02 if env.dry else 0.4)
                entry.update(tm, images_per_s=case.batch / tm["median"])
            else:
                failed.append(f"{case.key()} {name}: check failed {errs}")
            train[name] = entry
        except Exception as exc:
            train[name] = {"error": f"{type(exc).__name__}: {exc}"}
            if name.startswith("optdiff"):
                failed.append(f"{case.key()} {name}: {type(exc).__name__}: {exc}")
                traceback.print_exc()
        finally:
            cb.set_finite_checks(True)
    return train


def _time_ddpm(env, case, phases, with_reference, failed) -> dict:
    """DDPM step per tool: (out - mean) / sigma must be standard normal (5 standard errors), the
    mean from the complex128 reference (B=64) or from PyTorch eager / the CPU backend in float32."""
    from optdiff.optics.backends import cuda as cb

    dtools, s = _ddpm_tools(env, case, phases)
    if with_reference:
        mean_ref, src = ddpm_reference_mean(case, workers=os.cpu_count()), "complex128"
    else:
        x = ddpm_input(case)
        if env.torch is not None:
            model = _torch_stack(env, case)
            with env.torch.inference_mode():
                inten = env.host(model(env.torch.from_numpy(x).to(env.tdev).to(env.torch.complex64),
                                       env.torch.from_numpy(phases).to(env.tdev)))
            src = "torch_eager float32"
        else:
            import optdiff

            st = optdiff.PhaseStack(n=case.n, wavelength=case.wavelength, pitch=case.pitch,
                                    distances=[case.distance] * case.layers,
                                    input_distance=case.distance, padding=case.padding)
            inten, src = st.forward(x, phases), "optdiff cpu float32"
        mean_ref = s.c1 * (x.astype(np.float64) - s.c2 * (s.a * inten.astype(np.float64) + s.b))
    ddpm = {"_mean_from": src}
    for name, fn in dtools.items():
        if isinstance(fn, Exception):
            ddpm[name] = {"error": f"{type(fn).__name__}: {fn}"}
            continue
        try:
            out = env.host(fn())
            entry = ddpm_noise_errors(out, mean_ref, s.sigma)
            m = out.size
            ok = entry["err_noise_mean"] < 5 / math.sqrt(m) and entry["err_noise_std"] < 5 / math.sqrt(2 * m)
            entry["checked"] = ok
            if ok:
                cb.set_finite_checks(False)
                tm = timed(fn, env, budget=0.02 if env.dry else 0.3)
                entry.update(tm, images_per_s=case.batch / tm["median"])
            else:
                failed.append(f"{case.key()} ddpm {name}: check failed {entry}")
            ddpm[name] = entry
        except Exception as exc:
            ddpm[name] = {"error": f"{type(exc).__name__}: {exc}"}
            if name == "optdiff":
                failed.append(f"{case.key()} ddpm optdiff: {type(exc).__name__}: {exc}")
        finally:
            cb.set_finite_checks(True)
    return ddpm


def _generation(env: Env) -> dict:
    """A whole DDPM generation, measured: 64 images, N=128 (16 dry), padding 2, T=1000 steps (20
    dry), M=10 phase sets switched every T/M steps, finite checks off."""
    import optdiff
    from optdiff.optics.backends import cuda as cb

    n, T, M, B = (16, 20, 10, 8) if env.dry else (128, 1000, 10, 64)
    case = Case(n=n, padding=2, batch=B)
    st = _stack(env, case)
    rng = np.random.default_rng(7)
    sets = [env.dev(rng.uniform(0, 2 * np.pi, (case.layers, n, n)).astype(np.float32)) for _ in range(M)]
    x = env.dev(rng.standard_normal((B, n, n)).astype(np.float32))
    betas = np.linspace(1e-4, 0.02, T)
    steps = [DDPMStep.at(t, T) for t in range(T - 1, 0, -1)]
    cb.set_finite_checks(False)
    try:
        env.sync()
        t0 = time.perf_counter()
        for i, s in enumerate(steps):
            inten = st.forward(x, sets[min(M - 1, (T - 1 - i) * M // T)])
            x = optdiff.ddpm_update(x, inten, c1=s.c1, c2=s.c2, sigma=s.sigma, eps_scale=s.a,
                                    eps_offset=s.b, seed=1, stream=0, offset=i * B * n * n, out=inten,
                                    backend=env.backend)
        env.sync()
        secs = time.perf_counter() - t0
    finally:
        cb.set_finite_checks(True)
    final = env.host(x)
    return {"n": n, "padding": 2, "batch": B, "steps": len(steps), "sets": M, "seconds": secs,
            "images_per_s": B / secs, "finite": bool(np.isfinite(final).all()), "beta_max": float(betas[-1])}


def stage_bench(env: Env, res: Results, args) -> int:
    failed = []
    refs = {}
    for case in _cases(env, args):
        row = {"case": case.key(), "n": case.n, "padding": case.padding, "batch": case.batch}
        t0 = time.perf_counter()
        field, phases, target = make_inputs(case)
        # the complex128 reference at B=64 (8 in the dry run); a large batch is checked against
        # PyTorch eager at the same batch instead (itself checked at B=64; the reference would
        # take minutes on the CPU)
        if case.batch == (8 if env.dry else 64):
            refs[case.key()] = reference(case, workers=os.cpu_count())
        tools = _tools(env, case, field, phases, target, compiled=False)
        row["train"] = _time_train(env, case, tools, refs.get(case.key()), field, phases, target, failed)
        row["train_floor"] = step_floor(case)
        row["ddpm"] = _time_ddpm(env, case, phases, case.key() in refs, failed)
        row["ddpm_floor"] = ddpm_floor(case)
        row["seconds"] = time.perf_counter() - t0
        res.append("cases", row)
        _print_row(row)
    gen = _generation(env)
    res.put("generation", gen)
    print("generation:", gen)
    if not gen["finite"]:
        failed.append("generation: non-finite images")
    # torch.compile last (tens of seconds of compilation per shape): a timeout loses only these.
    if env.torch is not None and not env.dry:
        for key in ("N128_p2_t1_B64_L4", "N300_p2_t1_B64_L4"):
            row = next((r for r in res.mine.get("cases", []) if r["case"] == key), None)
            if row is None or key not in refs:
                continue
            case = Case(n=row["n"], padding=row["padding"], batch=row["batch"])
            field, phases, target = make_inputs(case)
            tools = _tools(env, case, field, phases, target, compiled=True)
            got = _time_train(env, case, {"torch_compiled": tools["torch_compiled"]}, refs[key], field,
                              phases, target, failed)
            row["train"].update(got)
            res.save()
            _print_row(row)
    res.put("projections", projections(res.mine.get("cases", []), gen))
    res.put("failures", failed)
    print(json.dumps(res.mine["projections"], indent=1))
    return 1 if failed else 0


def _print_row(row):
    tr = row["train"]
    peers = {k: v.get("images_per_s") for k, v in tr.items() if not k.startswith("optdiff")}
    best = max((v for v in peers.values() if v), default=None)
    fused = tr.get("optdiff_fused", {}).get("images_per_s")
    ratio = f"{fused / best:.2f}x" if fused and best else "-"
    d = row["ddpm"].get("optdiff", {}).get("images_per_s")
    print(f"{row['case']}: fused {fused or '-'} img/s, best peer {best or '-'} ({ratio}); "
          f"ddpm {d or '-'} img/s", flush=True)


def projections(cases: list, generation: dict | None = None) -> dict:
    """The issue's targets from the measured step times (None where the case was not measured)."""
    def ips(n, p, b, section, tool):
        for c in cases:
            if (c["n"], c["padding"], c["batch"]) == (n, p, b):
                return c[section].get(tool, {}).get("images_per_s")
        return None

    out = {"generation_measured_s": (generation or {}).get("seconds")}
    for p in (1, 2):
        d128 = ips(128, p, 64, "ddpm", "optdiff")
        out[f"ddpm_64_images_N128_T1000_p{p}_s"] = 1000 * 64 / d128 if d128 else None
        best300 = max((ips(300, p, b, "ddpm", "optdiff") or 0) for b in (64, 256)) or None
        out[f"generation_N300_T1000_p{p}_images_per_s"] = best300 / 1000 if best300 else None
        tr300 = max((ips(300, p, b, "train", "optdiff_fused") or 0) for b in (64, 256)) or None
        r = RECIPE
        out[f"recipe_hours_p{p}"] = (r["epochs"] * r["images"] / tr300 / 3600) if tr300 else None
    out["recipe_assumed"] = dict(RECIPE, note="one training step per image and epoch over all M sets; "
                                 "hours scale linearly with the subset size")
    return out


# --------------------------------------------------------------------------- stage: profile

KERNELS = ("LayerModulationFn", "PadLoadFn", "MultiplyTransferFn", "CameraFn", "MseResidualFn",
           "ReduceGroupsFn", "IntensityBackwardPadFn", "LayerBackwardFn", "CropStoreFn", "FiniteFn")


def stage_profile(env: Env, res: Results, args) -> int:
    """Per-kernel device time of one fused step (torch.profiler sees every kernel of the process,
    optdiff's and cuFFT's) against each kernel's byte floor at the measured copy bandwidth."""
    case = Case(n=16, padding=2, batch=4) if env.dry else Case(n=300, padding=2, batch=64)
    floors = kernel_floors(case)
    out = {"case": case.key(), "floors": floors}
    if env.tdev != "cuda":
        out["note"] = "dry run: floors only (no device timer)"
        res.put("profile", out)
        print(json.dumps(out, indent=1))
        return 0
    torch = env.torch
    a = torch.empty(1 << 29, dtype=torch.float32, device="cuda")  # 2 GiB
    b = torch.empty_like(a)
    b.copy_(a)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    torch.cuda.synchronize()
    bw = 10 * 2 * a.numel() * 4 / (time.perf_counter() - t0)  # bytes read + written per second
    del a, b
    out["copy_bandwidth_Bps"] = bw
    f, p, t = make_inputs(case)
    st = _stack(env, case)
    F, P, T = env.dev(f), env.dev(p), env.dev(t)
    from optdiff.optics.backends import cuda as cb

    cb.set_finite_checks(False)
    for _ in range(3):
        st.mse_loss_and_grad(F, P, T)
    torch.cuda.synchronize()
    from torch.profiler import ProfilerActivity, profile

    reps = 5
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            st.mse_loss_and_grad(F, P, T)
        torch.cuda.synchronize()
    cb.set_finite_checks(True)
    per = {}
    for ev in prof.key_averages():
        us = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        if not us:
            continue
        name = next((k for k in KERNELS if k in ev.key), "cuFFT" if "fft" in ev.key.lower() else "other")
        per[name] = per.get(name, 0.0) + us * 1e-6 / reps
    rows = []
    for name, secs in sorted(per.items(), key=lambda kv: -kv[1]):
        fl = floors.get(name, {})
        floor_s = fl.get("bytes", 0) / bw if fl else None
        rows.append({"kernel": name, "measured_s": secs, "floor_bytes": fl.get("bytes"),
                     "floor_s": floor_s, "over_floor": secs / floor_s if floor_s else None})
    out["kernels"] = rows
    total_floor = step_floor(case)["bytes"] / bw
    out["step_measured_s"] = sum(per.values())
    out["step_floor_s"] = total_floor
    res.put("profile", out)
    for r in rows:
        print(f"{r['kernel']:24s} {r['measured_s'] * 1e3:8.3f} ms  floor "
              f"{(r['floor_s'] or 0) * 1e3:8.3f} ms  x{r['over_floor'] or float('nan'):.1f}")
    return 0


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stage", choices=["info", "smoke", "checks", "bench", "profile"])
    ap.add_argument("--json", help="results file to merge this stage's results into")
    ap.add_argument("--dry", action="store_true", help="on the CPU through cuda-emu, tiny sizes")
    args = ap.parse_args(argv)
    env = Env(args.dry, need_gpu=args.stage != "info")  # info reports whatever it finds
    res = Results(args.json, args.stage)
    res.put("started", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    fn = {"info": lambda: stage_info(env, res), "smoke": lambda: stage_smoke(env, res),
          "checks": lambda: stage_checks(env, res), "bench": lambda: stage_bench(env, res, args),
          "profile": lambda: stage_profile(env, res, args)}[args.stage]
    rc = fn()
    res.put("rc", rc)
    return rc


if __name__ == "__main__":
    sys.exit(main())
