"""Fitting the digital twin's parameters to captured frames (calibration), and the discrepancy
``D = 1 - C`` between two sets of frames.

Objective (a MAP estimate): ``sum w (P(pred) - P(meas))^2 / 2 + |x|^2 / 2`` over unsaturated
pixels (below 97 % of the largest frame value: saturation sits at the unknown gain times the full
well), where ``P`` pools p x p camera pixels (coarse-to-fine: large p first widens the basin for
the beam's walk of tens of pixels), ``w`` is the inverse noise variance (shot noise from the
measured level, read noise, ADC rounding) and ``x = (theta - theta_nominal) / scale`` are the
free parameters in units of their tolerances (:data:`~.twin_params.DEFAULT_SCALES`). The prior
only decides what the data cannot: e.g. a patch offset and a beam displacement on that patch are
the same to the camera, so the tolerances of the offsets set how well the angles are known.
Camera gain and dark level are solved in closed form at every evaluation (variable projection:
the weighted least-squares line through the pooled frames), the rest by L-BFGS-B (SciPy) on the
exact gradient of :meth:`DigitalTwin.backward`; frames are evaluated in a thread pool, one
single-threaded stack call each.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import twin_parts as parts
from .twin import DigitalTwin
from .twin_params import TwinParams

__all__ = ["FitItem", "Stage", "FitResult", "discrepancy", "fit_twin", "items_from_calibration", "map_objective",
           "predict_frames", "DEFAULT_FREE", "DEFAULT_STAGES"]

DEFAULT_FREE = ("z_gap", "mirror_angle", "beam_angle", "patch_offsets", "dmd_offset", "camera_offset",
                "phase_scale", "crosstalk")


@dataclasses.dataclass
class FitItem:
    """Frames ``[B, rows, cols]`` captured with ``images [B, H, W]`` and one set of patterns ``slm``."""

    images: np.ndarray
    slm: np.ndarray
    frames: np.ndarray
    exposure: float | None = None


@dataclasses.dataclass(frozen=True)
class Stage:
    """One L-BFGS-B run: camera pixels pooled ``pool`` x ``pool``, at most ``iters`` iterations, on
    the first ``frames`` items (None: all)."""

    pool: int
    iters: int
    frames: int | None = None


DEFAULT_STAGES = (Stage(8, 40, 60), Stage(4, 40, 100), Stage(2, 40, None), Stage(1, 30, None))


@dataclasses.dataclass
class FitResult:
    params: TwinParams
    history: list
    seconds: float
    free: tuple


def items_from_calibration(cal) -> list[FitItem]:
    """One item per pi-patch frame of a :class:`CalibrationSet`."""
    img = cal.images[None]
    return [FitItem(img, cal.slm_levels(i), cal.frames[i][None].astype(np.float64), cal.exposure)
            for i in range(len(cal))]


def discrepancy(pred, meas) -> float:
    """``D = 1 - C``: C the correlation of mean-removed frames, averaged over frames."""
    a = np.asarray(pred, dtype=np.float64).reshape(-1, np.asarray(pred).shape[-2] * np.asarray(pred).shape[-1])
    b = np.asarray(meas, dtype=np.float64).reshape(a.shape)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    c = np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-300)
    return float(1.0 - np.mean(c))


def predict_frames(twin: DigitalTwin, items, workers: int = 2, clip_bits: int | None = None) -> np.ndarray:
    """The twin's frames for every item (stacked), clipped to the ADC range when ``clip_bits``."""
    twin.stack()
    for it in items:
        twin.base_field(it.images)
    with parts.single_threaded_blas(), ThreadPoolExecutor(max(1, workers)) as pool:
        out = list(pool.map(lambda it: twin.frames(it.images, it.slm, it.exposure), items))
    f = np.concatenate(out)
    return np.clip(f, 0, (1 << clip_bits) - 1) if clip_bits else f


def _pool(a: np.ndarray, p: int) -> np.ndarray:
    if p == 1:
        return a
    B, R, C = a.shape
    R, C = R // p * p, C // p * p
    return a[:, :R, :C].reshape(B, R // p, p, C // p, p).mean(axis=(2, 4))


def _unpool(g: np.ndarray, p: int, shape) -> np.ndarray:
    if p == 1:
        return g
    out = np.zeros(shape)
    B, r, c = g.shape
    out[:, :r * p, :c * p] = np.repeat(np.repeat(g, p, axis=1), p, axis=2) / (p * p)
    return out


class _Objective:
    """f(x) and its gradient for one stage (see the module docstring)."""

    def __init__(self, twin, items, free, start, scales, pool, sat, noise, workers):
        self.twin, self.items, self.free, self.start, self.scales = twin, items, free, start, scales
        self.p, self.workers = pool, workers
        self.meas = [_pool(it.frames, pool) for it in items]
        # a pooled pixel counts only when none of its pixels is saturated
        self.mask = [_pool((it.frames < sat).astype(np.float64), pool) > 0.999 for it in items]
        self.w = [m / np.maximum(_pool(noise(it.frames), pool) / (pool * pool), 1e-6)
                  for m, it in zip(self.mask, items)]
        self.evals = 0
        self.last = None

    def params_of(self, x) -> TwinParams:
        return self.start.with_vector(self.free, self.start.vector(self.free) + x * self.scales)

    def __call__(self, x):
        tw = self.twin
        tw.set_params(self.params_of(x))
        tw.stack()
        with ThreadPoolExecutor(self.workers) as ex:
            fw = list(ex.map(lambda it: tw.forward_train(it.images, it.slm, it.exposure), self.items))
        # gain and dark level: weighted least squares of the pooled frames on the electrons
        xs = [_pool(ctx.cam_intensity * ctx.gain_factor, self.p) for _, ctx in fw]
        S = np.zeros((2, 2))
        t = np.zeros(2)
        for e, y, w in zip(xs, self.meas, self.w):
            S += [[np.sum(w * e * e), np.sum(w * e)], [np.sum(w * e), np.sum(w)]]
            t += [np.sum(w * e * y), np.sum(w * y)]
        gain, dark = np.linalg.solve(S + 1e-12 * np.trace(S) * np.eye(2), t)
        gain = max(float(gain), 1e-9)
        tw.set_params(tw.params.replace(gain=gain, dark_level=float(dark)))
        loss = 0.0
        grads = []

        def back(i):
            e, y, w = xs[i], self.meas[i], self.w[i]
            r = gain * e + dark - y
            g = _unpool(w * r, self.p, fw[i][0].shape)
            return 0.5 * float(np.sum(w * r * r)), tw.backward(fw[i][1], g)[0]

        with ThreadPoolExecutor(self.workers) as ex:
            res = list(ex.map(back, range(len(self.items))))
        for li, gi in res:
            loss += li
            grads.append(np.concatenate([np.asarray(gi[n], dtype=np.float64).reshape(-1) for n in self.free]))
        g = np.sum(grads, axis=0) * self.scales + x
        f = loss + 0.5 * float(x @ x)
        self.evals += 1
        self.last = (f, loss, gain, dark)
        return f, g


def unsaturated_below(top: float, dark: float) -> float:
    """The frame value below which a pixel counts as unsaturated: saturated pixels pile up at the
    top, so the top 3 % of the signal range above the dark level is left out (3 % of the whole range
    would leave out every pixel of a frame a fraction of a DN above the dark level)."""
    return dark + 0.97 * (top - dark)


def noise_model(twin: DigitalTwin, items, saturation: float | None = None):
    """(saturation level, variance of a frame value in DN^2 as a function of the frames)."""
    cam = twin.nominal.camera
    if saturation is None:
        top = max(float(np.max(it.frames)) for it in items)
        saturation = min(unsaturated_below(top, cam.dark_level), (1 << cam.bits) - 3 if cam.bits else np.inf)
    g0, read = cam.dn_per_electron, cam.read_noise

    def noise(frames):   # shot noise, read noise, ADC rounding
        return g0 * np.maximum(frames - cam.dark_level, 0.0) + (g0 * read) ** 2 + 1.0 / 12.0

    return saturation, noise


def map_objective(twin: DigitalTwin, items, params: TwinParams, start: TwinParams, free, *, pool: int = 1,
                  workers: int = 2) -> float:
    """The fit's objective (data term with gain and dark level solved, plus the prior around
    ``start``) at ``params``; the twin ends at ``params`` with the solved gain and dark level."""
    free = tuple(free)
    sat, noise = noise_model(twin, items)
    scales = start.scales(free)
    obj = _Objective(twin, items, free, start, scales, pool, sat, noise, workers)
    with parts.single_threaded_blas():
        f, _ = obj((params.vector(free) - start.vector(free)) / scales)
    return float(f)


def fit_twin(twin: DigitalTwin, items, *, free=DEFAULT_FREE, stages=DEFAULT_STAGES, scales: dict | None = None,
             workers: int = 2, saturation: float | None = None, log=None) -> FitResult:
    """Fit ``twin``'s free parameters (starting from its current ones) to ``items``; the twin ends
    with the fitted parameters. ``log(dict)`` is called after every iteration."""
    free = tuple(free)
    for n in ("gain", "dark_level"):
        if n in free:
            raise ValueError(f"{n} is solved in closed form at every step; leave it out of free")
    sat, noise = noise_model(twin, items, saturation)
    start = twin.params
    scales = start.scales(free, scales)
    x = np.zeros(scales.size)
    lo = np.full(x.size, -np.inf)
    bounds_of = {"crosstalk": 0.0, "phase_scale": 0.05}
    i = 0
    for n in free:
        size = start.array(n).size
        if n in bounds_of:
            lo[i:i + size] = (bounds_of[n] - start.array(n).reshape(-1)) / scales[i:i + size]
        i += size
    history, t0 = [], time.perf_counter()
    with parts.single_threaded_blas():
        _run_stages(twin, items, stages, free, start, scales, sat, noise, workers, x, lo, history, t0, log)
    return FitResult(twin.params, history, time.perf_counter() - t0, free)


def _run_stages(twin, items, stages, free, start, scales, sat, noise, workers, x, lo, history, t0, log):
    from scipy.optimize import minimize

    for si, st in enumerate(stages):
        chosen = items if st.frames is None else items[:st.frames]
        obj = _Objective(twin, chosen, free, start, scales, st.pool, sat, noise, workers)

        def cb(xk, obj=obj, si=si, st=st):
            f, data, gain, dark = obj.last
            # objective, gain and dark level of the last evaluation (the iterate's, or a line search's)
            row = {"stage": si, "pool": st.pool, "evals": obj.evals, "objective": f, "data": data,
                   "gain": gain, "dark_level": dark, "seconds": time.perf_counter() - t0,
                   "params": obj.params_of(xk).to_dict()}
            history.append(row)
            if log:
                log(row)

        res = minimize(obj, x, jac=True, method="L-BFGS-B", callback=cb,
                       bounds=list(zip(lo, np.full(x.size, np.inf))), options={"maxiter": st.iters})
        x = res.x
        obj(x)   # leave the twin at the stage's optimum (gain and dark solved there)
