"""Speed and energy of a denoising step (the reference work's Table 1, generated): FLOPs of the
simulated ODU counted from its FFTs, throughput measured here, energy from measured time x power
(RAPL counters when readable, else a stated power), and the optical bench from its parts.

Every constant below is listed with its source in docs/evaluation.md. NumPy only: the digital
nets' FLOPs come from :mod:`optdiff.evaluation.digital.flops` (PyTorch).
"""

from __future__ import annotations

import glob
import math
import os
import statistics
import time
from collections.abc import Callable

__all__ = ["fft_flops", "odu_flops", "read_rapl_uj", "measure_rate", "cpu_power_watts",
           "optical_bench_rows", "REFERENCE_ROWS", "BENCH", "DEFAULT_CPU_WATTS", "GPU_WATTS",
           "cost_table_markdown", "energy_row"]

#: Optical bench parts (values as given in issue #15 for the reference work's setup, arXiv:2407.10897).
BENCH = {
    "dmd_watts": 4.5,              # DMD (input modulator) electrical power
    "dmd_joules_per_pixel": 24e-9,  # DMD energy per displayed pixel
    "dmd_patterns_per_s": 23148,    # DMD binary pattern rate
    "camera_watts": 3.0,            # camera electrical power
    "camera_joules_per_pixel": 14e-9,  # camera energy per read pixel
    "slm_watts": 0.0,               # phase layers: passive (static SLM patterns / fabricated masks)
}

#: The reference work's own figures (quoted, not recomputed): lab bench and projection.
REFERENCE_ROWS = [
    {"model": "reference work: lab bench (quoted)", "images_per_s": 23.0, "joules_per_image": 0.23},
    {"model": "reference work: projection (quoted)", "images_per_s": None, "joules_per_image": 0.015},
]

#: Power attributed to the 2 CPU cores used here when RAPL is not readable: an AMD EPYC 7763's
#: TDP (280 W) over its 64 cores, times 2. lscpu names only "AMD EPYC"; an assumption, stated.
DEFAULT_CPU_WATTS = 2 * 280.0 / 64
#: NVIDIA H200 (SXM) board power limit, for a GPU row.
GPU_WATTS = 700.0


def fft_flops(points: int) -> float:
    """FLOPs of one complex FFT of ``points`` values: ``5 n log2 n`` (the radix-2 count FFTW's
    benchmarks use); a 2-D FFT of ``N' x N'`` has ``n = N'^2``."""
    return 5.0 * points * math.log2(points) if points > 1 else 0.0


def odu_flops(n: int, layers: int, image_size: int, padding: int = 2, input_hop: bool = False,
              k: int | None = None) -> dict:
    """FLOPs per image of one simulated ODU denoising step (textbook count, see docs/evaluation.md).

    Per hop (``layers`` hops, one more with ``input_hop``): zero-pad to ``N' = padding * n``, 2-D
    FFT, multiply by the transfer function (6 FLOPs per complex product), inverse FFT. Per layer:
    a complex product with ``exp(i phi)``. Encode: 3 per image pixel; camera ``|E|^2``: 3 per
    modulator pixel; binning: 1 per summed pixel + 1 per image pixel; read-out
    ``scale I + offset + skip r``: 5 per image pixel. The sampler's own update is not counted
    (the same for every model).
    """
    npad = padding * n
    hops = layers + (1 if input_hop else 0)
    k = k if k is not None else max(int(0.8 * n) // image_size, 1)
    hw = image_size * image_size
    parts = {
        "fft": hops * 2 * fft_flops(npad * npad),
        "transfer": hops * 6 * npad * npad,
        "phase_masks": layers * 6 * n * n,
        "encode": 3 * hw,
        "camera": 3 * n * n,
        "bin": (k * image_size) ** 2 + hw,
        "readout": 5 * hw,
    }
    return {"total": float(sum(parts.values())), "by_part": parts}


def read_rapl_uj() -> int | None:
    """Sum of the package energy counters (micro-joules) under /sys/class/powercap, or None when
    none is readable (no RAPL, a VM, or no permission)."""
    total, found = 0, False
    for path in glob.glob("/sys/class/powercap/intel-rapl:*/energy_uj"):
        if path.count(":") != 1:        # packages only (sub-zones are included in them)
            continue
        try:
            with open(path) as f:
                total += int(f.read().strip())
            found = True
        except (OSError, ValueError):
            return None
    return total if found else None


def cpu_power_watts() -> tuple[float, str]:
    """(power, source) used for CPU rows when RAPL cannot be read."""
    env = os.environ.get("OPTDIFF_CPU_WATTS")
    if env:
        return float(env), "OPTDIFF_CPU_WATTS"
    return DEFAULT_CPU_WATTS, "stated: 2 cores of a 280 W, 64-core AMD EPYC 7763 (assumed model)"


def measure_rate(step: Callable[[], object], batch: int, repeats: int = 5, warmup: int = 1,
                 min_seconds: float = 0.0) -> dict:
    """Time ``step()`` (one denoising step of ``batch`` images): median over ``repeats`` runs after
    ``warmup`` runs. Returns ``{"seconds_per_step", "image_steps_per_s", "joules_per_image_step"
    (RAPL, or None), "energy_source"}``."""
    for _ in range(max(0, warmup)):
        step()
    times, joules = [], []
    for _ in range(max(1, repeats)):
        e0 = read_rapl_uj()
        t0 = time.perf_counter()
        step()
        while time.perf_counter() - t0 < min_seconds:
            step()
        dt = time.perf_counter() - t0
        e1 = read_rapl_uj()
        times.append(dt)
        if e0 is not None and e1 is not None and e1 >= e0:
            joules.append((e1 - e0) * 1e-6)
    sec = statistics.median(times)
    out = {"seconds_per_step": sec, "image_steps_per_s": batch / sec,
           "joules_per_image_step": None, "energy_source": None}
    if len(joules) == len(times):
        out["joules_per_image_step"] = statistics.median(joules) / batch
        out["energy_source"] = "RAPL (whole package)"
    return out


def energy_row(model: str, params: int | None, flops: float | None, rate: dict, steps: int,
               watts: float | None = None, power_source: str = "") -> dict:
    """A table row for a measured model: images/s and J/image for a ``steps``-step generation."""
    per_step = rate["image_steps_per_s"]
    if rate.get("joules_per_image_step") is not None:
        jpi, src = rate["joules_per_image_step"] * steps, rate["energy_source"]
    else:
        if watts is None:
            watts, power_source = cpu_power_watts()
        jpi, src = watts / per_step * steps, f"{watts:g} W x measured time" + (" (stated power)" if power_source else "")
    return {"model": model, "params": params, "flops_per_step": flops, "image_steps_per_s": per_step,
            "images_per_s": per_step / steps, "joules_per_image": jpi, "energy_source": src}


def optical_bench_rows(image_size: int, steps: int, params: int | None = None) -> list[dict]:
    """The optical bench from its parts, for ``steps`` denoising steps of ``image_size``^2 images.

    One DMD pattern and one camera frame per step; the phase layers are passive. Two estimates:
    the parts' power over the DMD-limited rate, and the per-pixel energies (DMD + camera) times
    the pixels shown per step: the second is what the reference work projects.
    """
    b = BENCH
    rate = b["dmd_patterns_per_s"] / steps
    watts = b["dmd_watts"] + b["camera_watts"] + b["slm_watts"]
    px = image_size * image_size
    per_pixel = (b["dmd_joules_per_pixel"] + b["camera_joules_per_pixel"]) * px * steps
    return [
        {"model": "optical bench, parts' power", "params": params, "flops_per_step": 0.0,
         "image_steps_per_s": b["dmd_patterns_per_s"], "images_per_s": rate, "joules_per_image": watts / rate,
         "energy_source": f"({b['dmd_watts']:g} W DMD + {b['camera_watts']:g} W camera) / {rate:.1f} images/s"},
        {"model": "optical bench, per-pixel energies", "params": params, "flops_per_step": 0.0,
         "image_steps_per_s": b["dmd_patterns_per_s"], "images_per_s": rate, "joules_per_image": per_pixel,
         "energy_source": f"(24 + 14) nJ x {px} pixels x {steps} steps"},
    ]


def _fmt(v, kind: str) -> str:
    if v is None:
        return "-"
    if kind == "int":
        return f"{int(v):,}"
    if kind == "flops":
        return f"{v:.3g}"
    if kind == "energy":
        return f"{v * 1e3:.3g} mJ" if v < 1 else f"{v:.3g} J"
    return f"{v:.3g}"


def cost_table_markdown(rows: list[dict]) -> str:
    """Markdown table: model, parameters, FLOPs per step, image-steps/s, images/s, energy per image."""
    lines = ["| model | parameters | FLOPs per denoising step | image-steps/s | images/s (full chain) "
             "| energy per image | energy from |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {_fmt(r.get('params'), 'int')} | {_fmt(r.get('flops_per_step'), 'flops')} "
                     f"| {_fmt(r.get('image_steps_per_s'), 'num')} | {_fmt(r.get('images_per_s'), 'num')} "
                     f"| {_fmt(r.get('joules_per_image'), 'energy')} | {r.get('energy_source') or 'quoted'} |")
    return "\n".join(lines)
