"""How well can pi-patch frames pin down the fold's angles? The Fisher information of a set of
calibration frames at the camera's noise level, with respect to the twin's parameters.

At an emulated bench's true parameters, the twin's mean frames ``f`` (DN) for ``--frames``
random pi-patch patterns (the patterns ``capture_calibration`` shows) and their Jacobian
``J = d f / d x`` by central differences in double precision, ``x`` the parameters in units of
their tolerances; gain and dark level (solved in closed form by the fit) are nuisance columns.
With the fit's noise model (``w = 1 / var``: shot noise, read noise, ADC rounding; pixels the fit
leaves out as saturated get no weight), ``F = J^T W J``. Reported:

* the Cramer-Rao bound (``sqrt(diag(F^-1))``, no prior) of each angle, in urad, with the
  patch registration known (``patch_offsets`` fixed: patterns on one rigid SLM) and free;
* the smallest eigenvalues of ``F`` with the registration free, its eigenvector, and how far
  the symmetry "beam angle + d, every patch offset and the camera offset + the beam's extra walk
  there" is from exact in the simulation (physically exact to paraxial order: a tilted field
  is a shifted one; in the simulation the grid's edge and the camera's area resampling of
  sub-pixel shifts break it a little, artefacts the real bench does not share);
* the posterior std with the fit's prior (``F + I``), which is what decides the split when
  the registration is free.

    python studies/calibration_resolution.py --seed 0 --frames 200 --out runs/calibration-resolution

Writes ``resolution.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import studies.common  # noqa: F401,E402  (finds optdiff)
from optdiff.config import OpticsConfig  # noqa: E402
from optdiff.hardware import EmulatedExperiment  # noqa: E402
from optdiff.hardware.calibration import capture_calibration  # noqa: E402
from optdiff.hardware.config import BenchConfig  # noqa: E402
from optdiff.hardware.fit import DEFAULT_FREE, items_from_calibration  # noqa: E402
from optdiff.hardware.twin import DigitalTwin  # noqa: E402
from optdiff.hardware.twin_params import TwinParams  # noqa: E402
from studies.calibration import hidden_errors  # noqa: E402

ANGLES = ("mirror_angle", "beam_angle")


def labels(params: TwinParams, names) -> list[str]:
    out = []
    for n in names:
        a = params.array(n)
        if a.ndim == 0:
            out.append(n)
        elif a.ndim == 1:
            out += [f"{n}.{'xy'[i]}" for i in range(a.size)]
        else:
            out += [f"{n}[{i}].{'xy'[j]}" for i in range(a.shape[0]) for j in range(a.shape[1])]
    return out


def jacobian(twin, truth: TwinParams, items, free, scales, step):
    """Central differences of the mean frames [K*R*C] in tolerance units, plus gain and dark columns."""
    def frames(p):
        twin.set_params(p)
        return np.concatenate([twin.frames(it.images, it.slm, it.exposure) for it in items]).reshape(-1)

    v0 = truth.vector(free)
    f0 = frames(truth)
    cols = []
    for i in range(v0.size):
        dv = np.zeros_like(v0)
        dv[i] = step * scales[i]
        cols.append((frames(truth.with_vector(free, v0 + dv)) - frames(truth.with_vector(free, v0 - dv))) / (2 * step))
    twin.set_params(truth)
    gain_col = (f0 - truth.dark_level) * 0.05            # d f / d gain, gain in units of 5 %
    dark_col = np.full_like(f0, 3.0)                     # dark level in units of 3 DN
    return f0, np.stack(cols + [gain_col, dark_col], axis=1)


def symmetry_residual(twin, truth: TwinParams, items, db: float) -> dict:
    """Per axis: how much the frames change when the beam angle moves by ``db`` and every patch
    offset and the camera offset move with the beam's walk (the symmetry), relative to how much
    they change when the beam angle alone moves. 0: an exact symmetry (angles unidentifiable)."""
    def frames(p):
        twin.set_params(p)
        return np.concatenate([twin.frames(it.images, it.slm, it.exposure) for it in items])

    f0 = frames(truth)
    land0 = twin.geometry.landing.copy()
    out = {}
    for ax, a in enumerate("xy"):
        b = np.array(truth.beam_angle)
        b[ax] += db
        moved = truth.replace(beam_angle=b)
        twin.set_params(moved)
        walk = twin.geometry.landing[:, ax] - land0[:, ax]        # the beam's extra walk, per plane
        offs = np.array(truth.patch_offsets)
        offs[:, ax] += walk[:-1]
        cam = np.array(truth.camera_offset)
        cam[ax] += walk[-1]
        alone = np.linalg.norm(frames(moved) - f0)
        out[a] = float(np.linalg.norm(frames(moved.replace(patch_offsets=offs, camera_offset=cam)) - f0) / alone)
    twin.set_params(truth)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=200, help="pi-patch frames (the calibration's budget)")
    ap.add_argument("--angles", choices=("normal", "magnitude"), default="magnitude",
                    help="HiddenErrors.angle_draw of the emulated bench")
    ap.add_argument("--registration", choices=("rigid", "per-patch"), default="rigid",
                    help="rigid: one SLM shift shared by the patches; per-patch: independent offsets")
    ap.add_argument("--grid", type=int, default=None,
                    help="simulated square per patch (default n); a larger one moves the grid's edge, "
                         "an aperture the real bench does not have, away from the light")
    ap.add_argument("--step", type=float, default=0.02, help="finite-difference step, tolerance units")
    ap.add_argument("--out", default="runs/calibration-resolution")
    args = ap.parse_args(argv)
    if args.frames < 1 or not args.step > 0:
        raise SystemExit("--frames must be >= 1 and --step > 0")
    t0 = time.perf_counter()
    optics = OpticsConfig()
    exp = EmulatedExperiment(args.seed, optics, 20, errors=hidden_errors(args.angles, args.registration))
    truth_cfg = BenchConfig.from_dict(exp.reveal_truth()["config"])
    truth = TwinParams.from_config(truth_cfg, optics.layers)
    cal = capture_calibration(exp, args.frames, seed=args.seed, nominal=exp.nominal)
    items = items_from_calibration(cal)
    twin = DigitalTwin(optics, 20, exp.nominal, truth, grid=args.grid, nthreads=1, precision="double")
    free = tuple(DEFAULT_FREE)
    scales = truth.scales(free)
    f0, J = jacobian(twin, truth, items, free, scales, args.step)
    cam = exp.nominal.camera
    g0 = cam.dn_per_electron
    var = g0 * np.maximum(f0 - truth.dark_level, 0.0) + (g0 * cam.read_noise) ** 2 + 1.0 / 12.0
    top = float(np.max(cal.frames))
    w = (cal.frames.reshape(-1) < min(0.97 * top, (1 << cam.bits) - 3)) / var
    F = J.T @ (w[:, None] * J)
    names = labels(truth, free) + ["gain", "dark_level"]
    reg = [i for i, n in enumerate(names) if n.startswith("patch_offsets")]
    keep = [i for i in range(len(names)) if i not in reg]
    ang = [i for i, n in enumerate(names) if n.split(".")[0] in ANGLES]
    unit = np.concatenate([scales, [0.05, 3.0]])       # tolerance units -> physical (gain: relative)

    def crb(idx):
        cov = np.linalg.pinv(F[np.ix_(idx, idx)], rcond=1e-15)
        return {names[i]: float(np.sqrt(max(cov[k, k], 0.0)) * unit[i]) for k, i in enumerate(idx) if i in ang}

    ev, evec = np.linalg.eigh(F)
    null = evec[:, 0]
    sym = symmetry_residual(twin, truth, items, 20e-6)
    post = np.linalg.inv(F + np.diag([0.0 if n in ("gain", "dark_level") else 1.0 for n in names]) + 1e-12 * np.eye(len(names)))
    res = {
        "args": vars(args), "seconds": time.perf_counter() - t0,
        "truth_urad": {n: (np.asarray(getattr(truth, n)) * 1e6).tolist() for n in ANGLES},
        "crb_urad_registration_known": {k: v * 1e6 for k, v in crb(keep).items()},
        "crb_urad_registration_free": {k: v * 1e6 for k, v in crb(list(range(len(names)))).items()},
        "posterior_std_urad_registration_free_with_prior": {names[i]: float(np.sqrt(post[i, i]) * unit[i] * 1e6) for i in ang},
        "smallest_eigenvalues": ev[:6].tolist(), "largest_eigenvalue": float(ev[-1]),
        "smallest_eigenvector": {n: float(v) for n, v in zip(names, null) if abs(v) > 0.05},
        "beam_symmetry_residual": sym, "names": names,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"resolution-seed{args.seed}-{args.angles}-{args.registration}-grid{twin.grid}.json").write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "names"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
