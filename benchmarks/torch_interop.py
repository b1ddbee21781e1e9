"""optdiff.torch against a direct optdiff call, and the D2NN training step against pure torch.fft.

(1) The wrapper's overhead: the same work through ``optdiff.torch`` (tensors, custom operators,
autograd) and through ``optdiff.Propagator`` / ``optdiff.PhaseStack`` on NumPy arrays, at N=128,
B=64 by default: one propagation, the stack's forward pass (no grad), and the stack's training
pass (forward with tape + backward from a given dLoss/dI).
(2) The diffractive classifier of ``examples/d2nn_torch.py``: one training step (forward,
detectors, cross-entropy, backward, Adam) with ``OpticalStack`` against the same model written
with ``torch.fft``, at each ``--d2nn N:B``.

Every pair runs interleaved in one process (``benchmarks.common.interleaved_times``: a shuffled
order each round); ratios are taken within a round and reported as median [first quartile,
third quartile]. torch uses as many threads as optdiff. Outputs are checked to agree first.

    python benchmarks/torch_interop.py --rounds 15 --d2nn 128:64 256:32 --d2nn-rounds 5
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import optdiff  # noqa: E402
import optdiff.torch as odt  # noqa: E402
from benchmarks import common  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_example():
    spec = importlib.util.spec_from_file_location("d2nn_torch", os.path.join(REPO, "examples", "d2nn_torch.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def ratio_stats(num, den):
    return common.quartiles([a / b for a, b in zip(num, den)])


def overhead(n: int, batch: int, layers: int, rounds: int) -> list[dict]:
    wl, pitch, dz = common.WAVELENGTH, common.PITCH, common.DISTANCE
    field_np, phases_np, _ = common.make_inputs(common.Case(n=n, batch=batch, layers=layers), np.complex64)
    gI_np = np.random.default_rng(1).uniform(0.0, 1.0, field_np.shape).astype(np.float32)
    field, gI = torch.from_numpy(field_np), torch.from_numpy(gI_np)

    prop = optdiff.Propagator(n, wavelength=wl, pitch=pitch, distance=dz)
    tprop = odt.Propagation(n, wavelength=wl, pitch=pitch, distance=dz)
    geom = dict(wavelength=wl, pitch=pitch, distances=[dz] * layers, input_distance=dz)
    st = optdiff.PhaseStack(n, **geom)
    module = odt.OpticalStack(n, **geom, init=torch.from_numpy(phases_np))

    def direct_train():
        I, tape = st.forward_train(field_np, phases_np)
        return I, st.backward(tape, gI_np)[0]

    def torch_train():
        module.phases.grad = None
        I = module(field)
        I.backward(gI)
        return I, module.phases.grad

    def torch_forward():
        with torch.no_grad():
            return module(field)

    # The same numbers before timing (the same core underneath: equal to rounding of the sums).
    np.testing.assert_allclose(tprop(field).numpy(), prop.forward(field_np), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(torch_forward().numpy(), st.forward(field_np, phases_np), rtol=1e-5, atol=1e-6)
    (I0, g0), (I1, g1) = direct_train(), torch_train()
    np.testing.assert_allclose(I1.detach().numpy(), I0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g1.numpy(), g0, rtol=1e-4, atol=1e-6 * float(np.abs(g0).max()))

    rows = [fixed_cost(layers)]
    target_np = np.random.default_rng(2).uniform(0.0, 2.0, field_np.shape).astype(np.float32)
    target = torch.from_numpy(target_np)

    def torch_mse():
        module.phases.grad = None
        loss = module.mse_loss(field, target)
        loss.backward()
        return loss, module.phases.grad

    l0, gm0 = st.mse_loss_and_grad(field_np, phases_np, target_np)
    l1, gm1 = torch_mse()
    np.testing.assert_allclose(float(l1.detach()), l0, rtol=1e-5)
    np.testing.assert_allclose(gm1.numpy(), gm0, rtol=1e-4, atol=1e-6 * float(np.abs(gm0).max()))

    cases = [("propagation (one hop)", lambda: prop.forward(field_np), lambda: tprop(field)),
             (f"stack forward, no grad (L={layers})", lambda: st.forward(field_np, phases_np), torch_forward),
             (f"stack forward + backward (L={layers})", direct_train, torch_train),
             (f"fused MSE loss + gradient (L={layers})", lambda: st.mse_loss_and_grad(field_np, phases_np, target_np),
              torch_mse)]
    for name, direct, wrapped in cases:
        t = common.interleaved_times({"direct": direct, "torch": wrapped}, rounds)
        q = ratio_stats(t["torch"], t["direct"])
        rows.append(dict(case=name, direct=common.quartiles(t["direct"])[1], torch=common.quartiles(t["torch"])[1],
                         ratio=q))
        print(f"{name}: overhead {100 * (q[1] - 1):+.1f}% [{100 * (q[0] - 1):+.1f}, {100 * (q[2] - 1):+.1f}]",
              flush=True)
    return rows


def fixed_cost(layers: int, calls: int = 3000) -> dict:
    """The wrapper's cost per call, alone: the training pass on a grid so small (n=8, B=1, one
    thread) that the core's work is a few microseconds; the difference of the medians is what
    optdiff.torch adds to every call, whatever the size."""
    before = optdiff.get_num_threads()
    optdiff.set_num_threads(1)
    try:
        geom = dict(wavelength=common.WAVELENGTH, pitch=common.PITCH, distances=[common.DISTANCE] * layers,
                    input_distance=common.DISTANCE)
        st = optdiff.PhaseStack(8, **geom)
        module = odt.OpticalStack(8, **geom, init="uniform")
        f_np = np.ones((1, 8, 8), np.complex64)
        g_np = np.ones((1, 8, 8), np.float32)
        ph_np = module.phases.detach().numpy().copy()
        f, g = torch.from_numpy(f_np), torch.from_numpy(g_np)

        def direct():
            I, tape = st.forward_train(f_np, ph_np)
            return st.backward(tape, g_np)

        def wrapped():
            module.phases.grad = None
            module(f).backward(g)

        t = common.interleaved_times({"direct": direct, "torch": wrapped}, calls)
    finally:
        optdiff.set_num_threads(before)
    d, w = common.quartiles(t["direct"])[1], common.quartiles(t["torch"])[1]
    print(f"fixed cost per training call: {1e6 * (w - d):.0f} us (direct {1e6 * d:.0f} us)", flush=True)
    return dict(case="fixed cost: forward + backward at n=8, B=1, 1 thread", direct=d, torch=w, ratio=None)


def d2nn(ex, n: int, batch: int, layers: int, rounds: int) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 28, 28, generator=g)
    y = torch.randint(10, (batch,), generator=g)
    models = {impl: ex.D2NN(impl, n=n, layers=layers) for impl in ex.IMPLS}
    # Agreement first: the same start, logits and gradients of one batch.
    logits = {k: m(x) for k, m in models.items()}
    for k in ex.IMPLS:
        torch.nn.functional.cross_entropy(logits[k], y).backward()
    a, b = (logits[k].detach() for k in ex.IMPLS)
    ga, gb = (models[k].optics.phases.grad for k in ex.IMPLS)
    err_logits, err_grad = float((a - b).norm() / b.norm()), float((ga - gb).norm() / gb.norm())
    if err_logits > 1e-4 or err_grad > 1e-3:
        raise SystemExit(f"the implementations disagree at n={n}: logits {err_logits:.2e}, gradient {err_grad:.2e}")
    opts = {k: torch.optim.Adam(m.parameters(), lr=0.01) for k, m in models.items()}
    tools = {k: (lambda k=k: ex.train_step(models[k], opts[k], x, y)) for k in ex.IMPLS}
    t = common.interleaved_times(tools, rounds)
    q = ratio_stats(t["torch-fft"], t["optdiff"])
    row = dict(n=n, batch=batch, layers=layers, optdiff=common.quartiles(t["optdiff"])[1],
               torchfft=common.quartiles(t["torch-fft"])[1], speedup=q, err_logits=err_logits, err_grad=err_grad,
               rounds=rounds)
    print(f"D2NN n={n} B={batch}: optdiff.torch {row['optdiff']:.3f} s, torch.fft {row['torchfft']:.3f} s, "
          f"speed-up {q[1]:.2f}x [{q[0]:.2f}, {q[2]:.2f}]", flush=True)
    return row


def write_report(path: str, argv: list[str], args, rows, d2nn_rows) -> None:
    cmd = "python benchmarks/torch_interop.py " + " ".join(argv)
    lines = [
        "# optdiff.torch: wrapper overhead and the D2NN training step against torch.fft",
        "",
        f"Command: `{cmd}`",
        "",
        f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()} "
        f"({os.cpu_count()} cores), torch {torch.__version__}, optdiff {optdiff.get_num_threads()} threads and "
        f"torch.set_num_threads({torch.get_num_threads()}). **The machine was shared with other agents' jobs**: "
        "absolute times are inflated and noisy; the ratios come from interleaved rounds (shuffled order "
        "each round, ratio taken within the round) and are the meaningful figures. "
        "Median [first quartile, third quartile] over rounds.",
        "",
    ]
    if rows:
        lines += [f"## Wrapper overhead (N={args.n}, B={args.batch}, complex64, padding 2, {args.rounds} rounds)",
                  "",
                  "| operation | direct optdiff (ms) | optdiff.torch (ms) | overhead |",
                  "| --- | ---: | ---: | ---: |"]
        for r in rows:
            q = r["ratio"]
            if q is None:  # the fixed cost: an absolute difference
                lines.append(f"| {r['case']} | {1e3 * r['direct']:.3f} | {1e3 * r['torch']:.3f} | "
                             f"+{1e6 * (r['torch'] - r['direct']):.0f} us per call |")
                continue
            lines.append(f"| {r['case']} | {1e3 * r['direct']:.1f} | {1e3 * r['torch']:.1f} | "
                         f"{100 * (q[1] - 1):+.1f}% [{100 * (q[0] - 1):+.1f}, {100 * (q[2] - 1):+.1f}] |")
        lines += ["", "Target: at most 5%. Direct: `Propagator.forward`, `PhaseStack.forward`, "
                  "`PhaseStack.forward_train` + `backward`, `PhaseStack.mse_loss_and_grad` on NumPy arrays; "
                  "optdiff.torch: `Propagation`, `OpticalStack` under `no_grad`, `OpticalStack` + "
                  "`I.backward(grad)`, `OpticalStack.mse_loss` + `loss.backward()` on tensors. The fixed "
                  "cost is the difference of the medians at a size where the core's work is a few "
                  "microseconds: what the wrapper adds to any call.", ""]
    if d2nn_rows:
        lines += ["## D2NN training step: optdiff.torch.OpticalStack against the same model in torch.fft",
                  "",
                  "One step = encode, L phase masks with angular-spectrum hops (padding 2, input hop), "
                  "detector powers, cross-entropy, backward, Adam (`examples/d2nn_torch.py`, random 28x28 "
                  "images).",
                  "",
                  "| N | B | L | optdiff.torch (s) | torch.fft (s) | speed-up | rounds | logits rel. err. | grad rel. err. |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in d2nn_rows:
            q = r["speedup"]
            lines.append(f"| {r['n']} | {r['batch']} | {r['layers']} | {r['optdiff']:.3f} | {r['torchfft']:.3f} | "
                         f"{q[1]:.2f}x [{q[0]:.2f}, {q[2]:.2f}] | {r['rounds']} | {r['err_logits']:.1e} | "
                         f"{r['err_grad']:.1e} |")
        lines += ["", "Target: at least 3x faster on CPU at N=128-256.", ""]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        fh.write("\n".join(lines))
    print(f"wrote {path}")


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=128, help="grid of the overhead part (default 128)")
    ap.add_argument("--batch", type=int, default=64, help="batch of the overhead part (default 64)")
    ap.add_argument("--layers", type=int, default=4, help="phase masks, both parts (default 4)")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds of the overhead part")
    ap.add_argument("--d2nn", nargs="*", default=["128:64", "256:32"],
                    help="N:B pairs of the D2NN part (default 128:64 256:32; none: skip)")
    ap.add_argument("--d2nn-rounds", type=int, default=5, help="interleaved rounds per D2NN size (default 5)")
    ap.add_argument("--threads", type=int, default=None, help="threads for both (default: optdiff's default)")
    ap.add_argument("--skip-overhead", action="store_true", help="only the D2NN part")
    ap.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "torch_interop.md"))
    args = ap.parse_args(argv)
    try:
        sizes = [tuple(int(v) for v in s.split(":")) for s in args.d2nn]
        assert all(len(s) == 2 and min(s) > 0 for s in sizes)
    except (ValueError, AssertionError):
        ap.error(f"--d2nn takes N:B pairs of positive integers, got {args.d2nn}")
    if args.threads:
        optdiff.set_num_threads(args.threads)
    torch.set_num_threads(optdiff.get_num_threads())
    rows = [] if args.skip_overhead else overhead(args.n, args.batch, args.layers, args.rounds)
    ex = load_example()
    d2nn_rows = [d2nn(ex, n, b, args.layers, args.d2nn_rounds) for n, b in sizes]
    write_report(args.out, argv, args, rows, d2nn_rows)


if __name__ == "__main__":
    main()
