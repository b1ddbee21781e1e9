"""Memory-traffic and FFT-work floors of the CUDA backend's fused training step, per kernel.

The floor of a kernel is the bytes it must move if it reads each input once and writes each output
once (cuda/optics.cpp decides which kernels run on which buffers; docs/gpu.md has the formulas in
words). Divided by the measured copy bandwidth (bytes read + written per second) it is the time no
version of that kernel can beat; the profile stage of benchmarks/gpu_bench.py sets the measured
per-kernel times against it. The FFT floor is counted twice: the bytes of one read and one write
of every transformed element per pass (cuFFT needs 1-3 passes; 1 is the floor), and the
conventional 5 N log2 N flops of a length-N complex transform.

Complex64 fields (8 bytes), float32 phases/intensities (4 bytes), float64 partial sums; the
benchmarks' geometry: an input hop plus L layers, every hop with the case's padding.
"""
from __future__ import annotations

import math

from benchmarks.common import Case

C, R, D = 8, 4, 8  # bytes of complex64, float32, float64
THREADS, TARGET_BLOCKS, MAX_GROUPS = 256, 8192, 512  # cuda/kernels.cu


def groups(side: int, batch: int) -> int:
    """backward_groups(): partial-sum groups of the reductions (cuda/kernels.cu lanes_for)."""
    blocks_x = max(1, -(-side * side // THREADS))
    return max(1, min(-(-TARGET_BLOCKS // blocks_x), batch, MAX_GROUPS))


def fft_work(case: Case) -> tuple[int, float]:
    """(bytes, flops) of the transforms of ONE hop (forward + inverse) over the batch."""
    n, p, B = case.n, case.padding, case.batch
    np_ = n * p
    if p == 1:  # one batched 2-D transform of n x n each way
        pts = 2 * B * n * n
        return pts * 2 * C, 2 * B * 5.0 * n * n * math.log2(n * n)
    # rows only where data is (n of the 2n rows) forward, and only the kept rows inverse;
    # all 2n columns both ways (cuda/optics.cpp, hop_transform)
    row_pts, col_pts = 2 * B * n * np_, 2 * B * np_ * np_
    flops = (2 * B * n + 2 * B * np_) * 5.0 * np_ * math.log2(np_)
    return (row_pts + col_pts) * 2 * C, flops


def kernel_floors(case: Case) -> dict:
    """{kernel: {"bytes", "launches", "formula"}} for one fused step (mse_loss_and_grad)."""
    n, p, B, L = case.n, case.padding, case.batch, case.layers
    nn, npp = n * n, (n * p) ** 2
    hops_fwd, hops_bwd = L + 1, L  # the input hop's adjoint is not needed without grad_input
    fb, fflops = fft_work(case)
    gres = groups(n, B)
    out = {
        "LayerModulationFn": (L * nn * (R + C), L, "L n^2 (4 + 8): phases in, M_l out"),
        "PadLoadFn": (B * npp * C * (L + 1) + B * nn * C * (1 + 2 * L) + L * nn * C, L + 1,
                      "(L+1) B np^2 8 written (zeros included) + B n^2 8 (1 + 2L) read/saved + L n^2 8 M_l"),
        "MultiplyTransferFn": ((hops_fwd + hops_bwd) * (2 * B * npp * C + npp * C), hops_fwd + hops_bwd,
                               "(2L+1) (2 B np^2 8 + np^2 8): field in and out, H"),
        "CameraFn": (B * nn * (C + R + C), 1, "B n^2 (8 in + 4 intensity + 8 saved E_L)"),
        "MseResidualFn": (B * nn * 3 * R + gres * nn * D, 1, "B n^2 3 4 + groups n^2 8"),
        "ReduceGroupsFn": ((L + 1) * (gres * nn * D + nn * R), L + 1, "(L+1) (groups n^2 8 + n^2 4)"),
        "IntensityBackwardPadFn": (B * (nn * (C + R) + npp * C), 1, "B (n^2 (8 + 4) + np^2 8)"),
        "LayerBackwardFn": (L * B * nn * 2 * C + (L - 1) * B * npp * C + L * (nn * C + groups(n * p, B) * nn * D),
                            L, "L B n^2 2 8 (grad_w, w_l) + (L-1) B np^2 8 (next padded input) + M_l, partials"),
        "cuFFT": ((hops_fwd + hops_bwd) * fb, 4 * (hops_fwd + hops_bwd) if p == 2 else 2 * (hops_fwd + hops_bwd),
                  "(2L+1) hops x one read + one write per transformed point per pass"),
    }
    res = {k: {"bytes": int(b), "launches": int(c), "formula": f} for k, (b, c, f) in out.items()}
    res["cuFFT"]["flops"] = (hops_fwd + hops_bwd) * fflops
    return res


def step_floor(case: Case) -> dict:
    """Whole fused step: summed kernel byte floors, FFT flops, the scratch a sample needs."""
    ks = kernel_floors(case)
    n, p, L = case.n, case.padding, case.layers
    nn, npp = n * n, (n * p) ** 2
    # cuda/optics.cpp mse_loss_and_grad: w0 (np^2) + tape (L+1) n^2 complex + I and g (n^2 real)
    # per sample, plus cuFFT's work area from the same pool (about one padded field per sample
    # for the column transforms; an estimate, the measured number is in results.json)
    per_sample = npp * C + (L + 1) * nn * C + 2 * nn * R
    return {"bytes": sum(v["bytes"] for v in ks.values()), "fft_flops": ks["cuFFT"]["flops"],
            "workspace_per_sample": per_sample, "workspace_per_sample_with_fft_area": per_sample + npp * C}


def ddpm_floor(case: Case) -> dict:
    """One DDPM sampling step: the stack's forward pass on the real image (no tape) and the
    update x' = c1 (x - c2 (a I + b)) + sigma z (read x and I, write x')."""
    n, p, B, L = case.n, case.padding, case.batch, case.layers
    nn, npp = n * n, (n * p) ** 2
    fb, fflops = fft_work(case)
    hops = L + 1
    bytes_ = (L * nn * (R + C)                                    # M_l
              + B * npp * C * hops + B * nn * (R + C * L) + L * nn * C  # pad loads (real input first)
              + hops * (2 * B * npp * C + npp * C)                # H
              + B * nn * (C + R)                                  # camera: E in, I out
              + hops * fb                                         # transforms
              + B * nn * 3 * R)                                   # the update
    return {"bytes": int(bytes_), "fft_flops": hops * fflops}
