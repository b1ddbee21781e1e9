"""GPU benchmark: optdiff's CUDA backend against PyTorch (torch.fft + autograd) on the same GPU.

Training step of the ODU phase stack (input hop + L masks, angular spectrum,
complex64, loss mean((I - target)^2), gradients for all phases), in images/s,
both tools on device-resident tensors, CUDA-synchronised timing, medians.

    python benchmarks/gpu_train_step.py --n 64 128 256 300 --padding 1 2 --batch 64

Without a GPU it says so and exits 0; on a machine with a GPU that optdiff or PyTorch cannot use,
it exits 1 with the reason. benchmarks/gpu_check.sh runs the full, checked comparison
(benchmarks/gpu_bench.py); this script is the quick one.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

WAVELENGTH, PITCH, DISTANCE = 850e-9, 9.2e-6, 34.2e-3


def transfer_function(grid: int) -> np.ndarray:
    f = np.fft.fftfreq(grid, PITCH)
    fx, fy = np.meshgrid(f, f)
    k = 2 * np.pi / WAVELENGTH
    kt2 = (2 * np.pi) ** 2 * (fx**2 + fy**2)
    kz = np.sqrt(np.maximum(k**2 - kt2, 0.0))
    h = np.where(kt2 < k**2, np.exp(-1j * DISTANCE * kt2 / (k + kz)), 0.0)
    return (h / grid**2).astype(np.complex64)


def median_time(fn, sync, repeats: int) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_case(torch, optdiff, n: int, padding: int, batch: int, layers: int, repeats: int) -> dict:
    dev = torch.device("cuda")
    g = torch.Generator(device="cpu").manual_seed(0)
    field = torch.complex(torch.rand(batch, n, n, generator=g), torch.zeros(batch, n, n)).to(dev)
    phases = (2 * np.pi * torch.rand(layers, n, n, generator=g)).to(dev)
    target = torch.rand(batch, n, n, generator=g).to(dev)
    grid = n * padding
    H = torch.from_numpy(transfer_function(grid)).to(dev)

    def prop(u):
        X = torch.fft.fft2(u, s=(grid, grid)) if grid != n else torch.fft.fft2(u)
        out = torch.fft.ifft2(X * H, norm="forward")
        return out[..., :n, :n] if grid != n else out

    ph = phases.clone().requires_grad_(True)

    def torch_step():
        ph.grad = None
        u = prop(field)
        for l in range(layers):
            u = prop(u * torch.polar(torch.ones_like(ph[l]), ph[l]))
        loss = ((u.real.square() + u.imag.square() - target) ** 2).mean()
        loss.backward()

    stack = optdiff.PhaseStack(n, wavelength=WAVELENGTH, pitch=PITCH, distances=[DISTANCE] * layers,
                               input_distance=DISTANCE, padding=padding, backend="cuda")
    scale = 2.0 / target.numel()

    def optdiff_step():
        inten, tape = stack.forward_train(field, phases)
        stack.backward(tape, (inten - target) * scale)

    sync = torch.cuda.synchronize
    t_torch = median_time(torch_step, sync, repeats)
    t_opt = median_time(optdiff_step, sync, repeats)
    return dict(n=n, padding=padding, torch=batch / t_torch, optdiff=batch / t_opt, speedup=t_torch / t_opt)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[64, 128, 256, 300])
    ap.add_argument("--padding", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed: nothing to compare against (pip install torch).")
        return 0
    import optdiff

    if "cuda" not in optdiff.available_backends() or not torch.cuda.is_available():
        from optdiff.optics.backends.cuda import cuda_unavailable_reason, gpu_present

        evidence = gpu_present()
        if evidence:  # a GPU is here: "skipped" would hide a broken build (issue 22, item 1)
            print(f"A GPU is present ({evidence}) but the benchmark cannot use it: optdiff: "
                  f"{cuda_unavailable_reason() or 'ok'}; torch.cuda.is_available() = {torch.cuda.is_available()}")
            return 1
        print("No CUDA device (or no CUDA build of optdiff/PyTorch) here: GPU benchmark skipped.")
        return 0
    print(f"GPU: {torch.cuda.get_device_name()}; B={args.batch}, L={args.layers}, complex64\n")
    print("| N | pad | optdiff img/s | PyTorch img/s | speed-up |\n|---|---|---|---|---|")
    for n in args.n:
        for p in args.padding:
            r = run_case(torch, optdiff, n, p, args.batch, args.layers, args.repeats)
            print(f"| {n} | {p} | {r['optdiff']:.0f} | {r['torch']:.0f} | {r['speedup']:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
