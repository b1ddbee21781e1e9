"""optdiff.jax against pure JAX: the D2NN training step, and the wrapper's overhead.

Two measurements, each interleaved in one process (benchmarks/common.py: every round calls every
tool once in a shuffled order, so machine load hits all of them alike):

1. the diffractive classifier's jitted training step (forward, softmax cross-entropy on ten
   detectors, gradient of the L phase masks, Adam) of examples/d2nn_jax.py, with the optics in
   optdiff.jax against the same model written with jnp.fft (its transfer function is optdiff's);
   the losses and gradients are checked to agree before anything is timed;
2. the wrapper's overhead: a jitted forward + VJP of the phase stack through optdiff.jax against
   the same work through optdiff's NumPy API (forward_train + backward), same inputs.

    python benchmarks/jax_interop.py --sizes 128 256 --batch 64 --out benchmarks/results/jax_interop.md
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import optdiff
import optdiff.jax as oj
from benchmarks.common import interleaved_times, quartiles

REPO = Path(__file__).resolve().parent.parent


def _load_example():
    spec = importlib.util.spec_from_file_location("d2nn_jax", REPO / "examples" / "d2nn_jax.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["d2nn_jax"] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def train_step_tools(d2nn, n: int, batch: int, layers: int, seed: int):
    """{name: zero-argument callable} for one D2NN training step per implementation, checked to agree."""
    cfg = d2nn.D2NNConfig(n=n, layers=layers, image_size=n // 2)
    masks = d2nn.detector_masks(n)
    rng = np.random.default_rng(seed)
    amp = jnp.asarray(rng.uniform(0, 1, (batch, n, n)).astype(np.float32))
    labels = jnp.asarray(rng.integers(0, 10, batch).astype(np.int32))
    phases = jnp.asarray(rng.uniform(-np.pi, np.pi, (layers, n, n)).astype(np.float32))
    init, update, _ = d2nn.adam(0.05)
    forwards = {"optdiff.jax": d2nn.optdiff_forward(cfg), "jnp.fft": d2nn.jnp_forward(cfg)}

    # agreement first: loss and phase gradient of both models at the same point
    got = {}
    for name, fwd in forwards.items():
        loss = d2nn.make_loss(fwd, jnp.asarray(masks), cfg.temperature)
        (value, _), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(phases, amp, labels)
        got[name] = (float(value), np.asarray(g))
    (l1, g1), (l2, g2) = got.values()
    agree = {"loss_rel": abs(l1 - l2) / abs(l2), "grad_rel": _rel(g1, g2)}
    if agree["loss_rel"] > 1e-4 or agree["grad_rel"] > 1e-3:
        raise SystemExit(f"N={n}: the two models disagree ({agree}); not timing them")

    tools = {}
    for name, fwd in forwards.items():
        step = d2nn.make_train_step(fwd, masks, cfg.temperature, update)
        state = {"p": phases, "s": init(phases)}

        def run(step=step, state=state):
            state["p"], state["s"], loss = step(state["p"], state["s"], amp, labels)
            loss.block_until_ready()

        tools[name] = run
    return tools, agree


def overhead_tools(n: int, batch: int, layers: int, seed: int):
    """optdiff.jax's jitted forward + VJP against the same work through the NumPy API."""
    kw = dict(wavelength=850e-9, pitch=9.2e-6, distances=[10e-3] * layers, padding=2)
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(batch, n, n)) + 1j * rng.normal(size=(batch, n, n))).astype(np.complex64)
    ph = rng.uniform(-np.pi, np.pi, (layers, n, n)).astype(np.float32)
    w = rng.normal(size=(batch, n, n)).astype(np.float32)
    js = oj.PhaseStack(n, **kw)
    ns = optdiff.PhaseStack(n, **kw)
    xj, phj, wj = jnp.asarray(x), jnp.asarray(ph), jnp.asarray(w)
    grad = jax.jit(jax.grad(lambda p: jnp.sum(wj * js(xj, p))))

    def numpy_step():
        _, tape = ns.forward_train(x, ph)
        return ns.backward(tape, w)[0]

    agree = _rel(grad(phj), numpy_step())
    if agree > 1e-5:
        raise SystemExit(f"N={n}: optdiff.jax and the NumPy API disagree ({agree:.2e})")
    return {"optdiff.jax": lambda: grad(phj).block_until_ready(), "optdiff NumPy API": numpy_step}, agree


def _table(times: dict, base: str) -> list[str]:
    rows = ["| implementation | median ms | quartiles ms | per-round ratio to " + base + " (median) |",
            "|---|---:|---:|---:|"]
    for name, ts in times.items():
        q1, med, q3 = quartiles(ts)
        ratios = [t / b for t, b in zip(ts, times[base])]
        rows.append(f"| {name} | {1e3 * med:.1f} | {1e3 * q1:.1f} - {1e3 * q3:.1f} | {quartiles(ratios)[1]:.2f} |")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="grid sides N")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds per training-step measurement")
    p.add_argument("--overhead-rounds", type=int, default=20,
                   help="interleaved rounds per wrapper-overhead measurement (the difference is small: more rounds)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads of optdiff's core")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the Markdown results here")
    a = p.parse_args(argv)
    if min(a.sizes) < 16 or a.batch < 1 or a.layers < 1 or a.rounds < 2 or a.overhead_rounds < 2:
        p.error("--sizes >= 16, --batch >= 1, --layers >= 1, --rounds and --overhead-rounds >= 2")
    if not oj.ffi_available():
        print("warning: optdiff._jax_ffi is not built; optdiff.jax runs through jax.pure_callback", file=sys.stderr)
    oj.set_num_threads(a.threads)
    d2nn = _load_example()
    load0 = os.getloadavg()
    lines = ["# optdiff.jax vs pure JAX", "",
             "Command: `python benchmarks/jax_interop.py " + " ".join(sys.argv[1:] if argv is None else argv) + "`", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, **shared with other "
             f"jobs** (load average {load0[0]:.1f} at the start); times are therefore noisy, and ratios are taken "
             "within each interleaved round (every tool once per round, shuffled order). "
             f"jax {jax.__version__}, optdiff core threads {a.threads}, XLA's own threading default; "
             f"optdiff.jax path: {'XLA FFI' if oj.ffi_available() else 'pure_callback'}; float32/complex64, "
             f"L={a.layers} masks, padding 2 (angular spectrum), batch {a.batch}, {a.rounds} rounds per training "
             f"step, {a.overhead_rounds} per overhead measurement.", ""]
    for n in a.sizes:
        tools, agree = train_step_tools(d2nn, n, a.batch, a.layers, a.seed)
        times = interleaved_times(tools, a.rounds, seed=a.seed)
        lines += [f"## D2NN training step, N={n}", "",
                  f"Agreement before timing: loss rel. diff {agree['loss_rel']:.1e}, "
                  f"phase-gradient max rel. diff {agree['grad_rel']:.1e}.", ""]
        lines += _table(times, "optdiff.jax") + [""]
        print("\n".join(lines[-(len(times) + 3):]), flush=True)
    for n in a.sizes:
        tools, agree = overhead_tools(n, a.batch, a.layers, a.seed)
        times = interleaved_times(tools, a.overhead_rounds, seed=a.seed)
        lines += [f"## Wrapper overhead: stack forward + VJP, N={n}", "",
                  f"Gradients agree to {agree:.1e} (max rel.).", ""]
        lines += _table(times, "optdiff NumPy API") + [""]
        print("\n".join(lines[-(len(times) + 3):]), flush=True)
    lines.append(f"Load average at the end: {os.getloadavg()[0]:.1f}.")
    text = "\n".join(lines) + "\n"
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = a.out.with_name(f".{a.out.name}.tmp-{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, a.out)
    print(text)


if __name__ == "__main__":
    main()
