"""Shared pieces of the benchmark suite: geometry, transfer function, inputs, float64 reference,
timing, memory and thread/core control.

The computation every tool performs (see benchmarks/README.md):

    u_0 = P(x)                       input hop (input plane -> mask 0)
    w_l = u_l * exp(i phi_l)         l = 0..L-1
    u_{l+1} = P(w_l)                 mask l -> mask l+1, last one to the camera
    I = |u_L|^2

P is the angular-spectrum propagator with the split-step transfer function
H = exp(-i dz (kx^2+ky^2) / (k + sqrt(k^2-kx^2-ky^2))) (zero where evanescent), on an n x n
periodic grid (padding 1) or on a 2n x 2n grid with the field embedded top-left and the result
cropped top-left (padding 2).  The training step is forward + loss + gradient of
loss = mean((I - target)^2) with respect to all L phase masks (not the input field).
"""
from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

WAVELENGTH = 850e-9
PITCH = 9.2e-6
DISTANCE = 34.2e-3

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON_DIR = os.path.join(REPO, "python")


@dataclasses.dataclass(frozen=True)
class Case:
    n: int
    padding: int = 2
    threads: int = 1
    batch: int = 64
    layers: int = 4
    wavelength: float = WAVELENGTH
    pitch: float = PITCH
    distance: float = DISTANCE
    seed: int = 1234

    @property
    def grid(self) -> int:
        """Side of the FFT grid (n * padding)."""
        return self.n * self.padding

    @property
    def num_props(self) -> int:
        """Propagations in one forward pass: the input hop plus one after each mask."""
        return self.layers + 1

    def key(self) -> str:
        return f"N{self.n}_p{self.padding}_t{self.threads}_B{self.batch}_L{self.layers}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Case:
        return cls(**d)


# --------------------------------------------------------------------------- physics

def transfer_function(grid: int, wavelength: float = WAVELENGTH, pitch: float = PITCH,
                      distance: float = DISTANCE, dtype=np.complex128,
                      scale: float = 1.0) -> np.ndarray:
    """Angular-spectrum transfer function on a grid x grid lattice, FFT (unshifted) order.

    Evaluated in float64 and cast once. ``scale`` multiplies H (used to fold the 1/grid^2 of
    the inverse FFT into H so no tool pays an extra normalisation pass).
    """
    k = 2.0 * math.pi / wavelength
    f = np.fft.fftfreq(grid, d=pitch) * (2.0 * math.pi)
    kr2 = f[:, None] ** 2 + f[None, :] ** 2
    arg = k * k - kr2
    prop = arg > 0.0
    root = np.sqrt(np.where(prop, arg, 0.0))
    phase = -distance * kr2 / (k + root)
    H = np.where(prop, np.exp(1j * phase), 0.0) * scale
    return H.astype(dtype)


def make_inputs(case: Case, dtype=np.complex64):
    """Deterministic inputs for one case: field [B,n,n] complex, phases [L,n,n], target [B,n,n].

    The field is a random complex field of unit mean intensity; the target has the same scale so
    the loss gradient is not dominated by either term.
    """
    rng = np.random.default_rng(case.seed)
    B, n, L = case.batch, case.n, case.layers
    rdt = np.float32 if np.dtype(dtype) == np.complex64 else np.float64
    field = np.empty((B, n, n), dtype=dtype)
    field.real = rng.standard_normal((B, n, n), dtype=np.float64) * math.sqrt(0.5)
    field.imag = rng.standard_normal((B, n, n), dtype=np.float64) * math.sqrt(0.5)
    phases = rng.uniform(0.0, 2.0 * math.pi, size=(L, n, n)).astype(rdt)
    target = rng.uniform(0.0, 2.0, size=(B, n, n)).astype(rdt)
    return field, phases, target


def loss_grad_scale(case: Case) -> float:
    """dLoss/dI = (2 / numel) (I - target) for loss = mean((I - target)^2)."""
    return 2.0 / float(case.batch * case.n * case.n)


# --------------------------------------------------------------------------- DDPM sampling step

@dataclasses.dataclass(frozen=True)
class DDPMStep:
    """Coefficients of one ancestral DDPM step x_t -> x_{t-1} (linear beta schedule, T=1000).

    The optical denoiser: the noisy image is amplitude-encoded as the input field, the ODU
    (phase stack) maps it to a camera intensity, and an affine read-out gives the noise estimate
    eps = a * I + b.  x_{t-1} = c1 (x_t - c2 eps) + sigma z with fresh Gaussian z.
    """
    c1: float
    c2: float
    sigma: float
    a: float = 0.5
    b: float = -0.5

    @classmethod
    def at(cls, t: int = 500, T: int = 1000) -> DDPMStep:
        betas = np.linspace(1e-4, 0.02, T)
        alphas = 1.0 - betas
        abar = np.cumprod(alphas)
        c1 = 1.0 / math.sqrt(alphas[t])
        c2 = betas[t] / math.sqrt(1.0 - abar[t])
        sigma = math.sqrt(betas[t] * (1.0 - abar[t - 1]) / (1.0 - abar[t]))
        return cls(c1=c1, c2=c2, sigma=sigma)


def ddpm_numpy_update(x: np.ndarray, intensity: np.ndarray, step: DDPMStep,
                      rng: np.random.Generator) -> np.ndarray:
    """x_{t-1} from x_t and the ODU intensity, in float32 NumPy (used by the NumPy-based tools)."""
    eps = intensity * np.float32(step.a)
    eps += np.float32(step.b)
    out = x - np.float32(step.c2) * eps
    out *= np.float32(step.c1)
    z = rng.standard_normal(x.shape, dtype=np.float32)
    z *= np.float32(step.sigma)
    out += z
    return out


def ddpm_input(case: Case) -> np.ndarray:
    """x_t of the DDPM step timing: float32 [B, n, n] standard normal (the same in every tool)."""
    rng = np.random.default_rng(case.seed + 1)
    return rng.standard_normal((case.batch, case.n, case.n), dtype=np.float32)


def ddpm_noise_errors(out, mean_ref: np.ndarray, sigma: float) -> dict:
    """A DDPM step's output against the reference mean c1 (x - c2 eps): what is left, divided
    by sigma, must be the fresh standard normal noise (its mean 0 and standard deviation 1)."""
    z = (np.asarray(out, dtype=np.float64) - mean_ref) / sigma
    return {"err_noise_mean": abs(float(z.mean())), "err_noise_std": abs(float(z.std()) - 1.0)}


# --------------------------------------------------------------------------- float64 reference

def reference(case: Case, workers: int | None = None):
    """Intensity, phase gradient and loss in complex128 with scipy.fft (the check's ground truth)."""
    from benchmarks.peers_numpy import NumpyStack

    field, phases, target = make_inputs(case, np.complex64)
    st = NumpyStack(case, dtype=np.complex128, workers=workers or case.threads)
    I, g, loss = st.train(field.astype(np.complex128), phases.astype(np.float64),
                          target.astype(np.float64))
    return I, g, loss


def ddpm_reference_mean(case: Case, workers: int | None = None) -> np.ndarray:
    """c1 (x - c2 (a I + b)) in complex128/float64 for ddpm_input(case): the step without noise."""
    from benchmarks.peers_numpy import NumpyStack

    _, phases, _ = make_inputs(case, np.complex64)
    x = ddpm_input(case).astype(np.float64)
    st = NumpyStack(case, dtype=np.complex128, workers=workers or case.threads)
    I = st.forward(x.astype(np.complex128), phases.astype(np.float64))
    s = DDPMStep.at(500)
    return s.c1 * (x - s.c2 * (s.a * I + s.b))


def rel_err(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    nb = float(np.linalg.norm(b.ravel()))
    return float(np.linalg.norm((a - b).ravel()) / (nb if nb > 0 else 1.0))


def output_errors(mode: str, out, I_ref, g_ref, loss_ref, to_numpy=np.asarray) -> dict:
    """Relative errors of a tool's forward output (I) or training output (I, g, loss)."""
    if mode == "forward":
        return {"err_I": rel_err(to_numpy(out), I_ref)}
    I, g, loss = out
    return {"err_I": rel_err(to_numpy(I), I_ref), "err_grad": rel_err(to_numpy(g), g_ref),
            "err_loss": abs(float(loss) - float(loss_ref)) / abs(float(loss_ref))}


# --------------------------------------------------------------------------- timing

def time_call(fn: Callable[[], object], repeats: int = 5, warmup: int = 0, min_time: float = 0.05,
              budget: float = 10.0, min_repeats: int = 2) -> dict:
    """timeit-style median per-call time of ``fn`` (which has already been called once).

    After ``warmup`` untimed calls, one timed probe call picks ``number`` (calls per repeat) so a
    repeat lasts >= ``min_time``; a probe that is already that long counts as the first repeat,
    otherwise it is discarded as one more warm-up.  The repeat count is cut down (to no fewer
    than ``min_repeats``) so the measurement stays within ``budget`` seconds.
    """
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    fn()
    probe = time.perf_counter() - t0
    times = []
    if probe >= min_time:
        number = 1
        times.append(probe)
    else:
        number = max(1, int(math.ceil(min_time / max(probe, 1e-9))))
    per_repeat = number * probe
    reps = max(min_repeats, min(repeats, int(budget // max(per_repeat, 1e-9))))
    while len(times) < reps:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return {
        "median": statistics.median(times),
        "min": min(times),
        "max": max(times),
        "repeats": len(times),
        "number": number,
    }


# --------------------------------------------------------------------------- memory

def _status(field: str) -> int:
    """A /proc/self/status entry in bytes (0 when unavailable)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss_bytes() -> int:
    return _status("VmRSS")


def hwm_bytes() -> int:
    v = _status("VmHWM")
    if v == 0:  # non-Linux fallback: ru_maxrss (KiB on Linux, bytes on macOS)
        import resource
        import sys
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        v = r if sys.platform == "darwin" else r * 1024
    return v


def reset_hwm() -> bool:
    """Reset the peak-RSS mark to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- threads

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS")


def thread_env(threads: int, base: dict | None = None) -> dict:
    """Environment for a worker limited to `threads` threads (set before any import)."""
    env = dict(os.environ if base is None else base)
    for k in THREAD_ENV:
        env[k] = str(threads)
    # XLA's CPU client sizes its pools from the cores the process may use (the worker pins them
    # before importing JAX); with one thread, also keep Eigen single-threaded.
    flags = env.get("XLA_FLAGS", "")
    if threads == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        env["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
    return env


def pin_cores(threads: int) -> list[int]:
    """Restrict this process to `threads` cores so every tool gets the same compute."""
    try:
        avail = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return []
    cores = avail[:max(1, threads)]
    try:
        os.sched_setaffinity(0, cores)
    except OSError:
        return avail
    return cores


# ------------------------------------------------------------------ interleaved timing, machine load

def interleaved_times(tools: dict[str, Callable[[], object]], rounds: int, seed: int | None = 0) -> dict:
    """Each tool warmed up once, then ``rounds`` rounds that call every tool once in a shuffled
    order; per tool the list of its call times. Ratios taken within a round cancel the drift."""
    import random

    for fn in tools.values():  # plans, caches, buffers
        fn()
    times = {name: [] for name in tools}
    rng, order = random.Random(seed), list(tools)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            tools[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def quartiles(xs) -> tuple[float, float, float]:
    """First quartile, median, third quartile, interpolated between the values (never beyond them)."""
    xs = list(xs)
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) >= 2 else [xs[0]] * 3
    return q[0], statistics.median(xs), q[2]


def ratio_table(times: dict, base: str) -> list[str]:
    """One line per tool of ``interleaved_times``: median time, and the median and interquartile
    range of its per-round ratio to ``base`` (a drifting machine moves both sides of a round)."""
    ref = times[base]
    lines = [f"{'tool':<24} {'median ms':>10} {'ratio':>7} {'IQR of ratio':>14}"]
    for k, ts in times.items():
        q1, med, q3 = quartiles(t / b for t, b in zip(ts, ref))
        lines.append(f"{k:<24} {1e3 * statistics.median(ts):10.2f} {med:7.2f} {q1:6.2f} .. {q3:5.2f}")
    return lines


def cpu_busy_seconds() -> float:
    """Busy CPU time of the whole machine so far (all cores, /proc/stat), in seconds; 0 if unknown."""
    try:
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:]]
        idle = f[3] + (f[4] if len(f) > 4 else 0)
        return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return 0.0


def own_cpu_seconds() -> float:
    """CPU time of this process and its reaped children."""
    import resource

    r, s = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime + s.ru_utime + s.ru_stime


def wait_quiet(max_wait: float, threshold: float = 0.15, window: float = 1.0) -> float:
    """Wait (up to max_wait s) until other processes use < threshold cores; return their load."""
    t_end = time.perf_counter() + max_wait
    while True:
        b0, c0, t0 = cpu_busy_seconds(), own_cpu_seconds(), time.perf_counter()
        time.sleep(window)
        load = (cpu_busy_seconds() - b0 - (own_cpu_seconds() - c0)) / (time.perf_counter() - t0)
        if load < threshold or time.perf_counter() >= t_end:
            return load
