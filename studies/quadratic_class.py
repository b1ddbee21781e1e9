"""How far below the linear denoiser can any quadratic denoiser go? The amplitude ODU's ceiling.

With the affine amplitude encoding (field ``b + a r`` on the modulator, phase-only layers in
between, free space, an intensity camera) every camera pixel reads ``|e0 + h r|^2``: a polynomial
of degree two in the noisy image ``r``. Binning, the per-pixel read-out (scale, offset) and the
skip keep it one. So at each time set the amplitude ODU is a member of

    quadratic:  eps ~ c + W r + Q(r)       Q: one quadratic form of r per output pixel

and it cannot beat the best member of that class, whatever its layers, geometry or training.
The class has D + D (D + 1) / 2 parameters per output pixel (80,600 at 20 x 20), too many to
solve exactly, so this study measures two members that approach its optimum from above:

* ``pca_k``: exact least squares on the features ``[1, r, z_a z_b (a <= b)]`` with ``z`` the
  image's first ``k`` principal components (of the training images): all quadratic forms within
  those ``k`` directions, solved in closed form (no optimiser to blame);
* ``square_h``: ``c + W r + V (U r)^2``, a width-``h`` network with a square activation (every
  quadratic form of rank <= ``h`` shared through ``U``), trained with Adam on fresh noised images
  from the least-squares linear start (``V = 0``), so it starts at the linear floor.

* ``local_R`` (``--local R``): the linear fit plus, per output pixel, the products of the pixels
  within ``R`` of it: the forms an optics with a local point-spread function (the relay) makes.

All are compared with ``linear`` (the same least squares on ``[1, r]`` with the same samples, so
a gain is not a sample-size artefact) on 1000 held-out noised images, the same ones
``design_classes.py`` uses. If neither gets far below ``linear`` at a set, no amplitude-encoded
ODU can: that is the bound on the optics, not on training. The phase encoding (``exp(i s r)``)
is not polynomial and not bounded by this.

    python studies/quadratic_class.py --set 0,1,2,3,4,5,6 --out studies/results/quadratic_class/fashion-mnist.jsonl
    python studies/quadratic_class.py --dataset mnist --data-dir <MNIST folder> --set 4

One JSON line per set (appended to ``--out``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the studies package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studies.common import add_data_args, append_jsonl, load_split, noised  # noqa: E402

# isort: split
from optdiff.diffusion.schedule import NoiseSchedule, timestep_sets  # noqa: E402


def noised_flat(x0, count, t_range, schedule, rng):
    """``count`` (r, eps) pairs of one set (:func:`studies.common.noised`), images flattened."""
    r, _, eps = noised(x0, count, t_range, schedule, rng)
    return r.reshape(count, -1), eps.reshape(count, -1)


def pair_products(z):
    """[n, k(k+1)/2]: ``z_a z_b`` for ``a <= b``."""
    a, b = np.triu_indices(z.shape[1])
    return z[:, a] * z[:, b]


class QuadraticLstsq:
    """Least squares on ``[1, r, pair_products(P (r - mu))]``; ``k = 0`` is the affine fit."""

    def __init__(self, basis: np.ndarray, mean: np.ndarray, ridge: float = 1e-6):
        self.P, self.mu, self.ridge = basis, mean, float(ridge)   # P: [k, D] orthonormal rows
        self.coef = None

    def features(self, r):
        f = [np.ones((r.shape[0], 1)), r]
        if self.P.shape[0]:
            f.append(pair_products((r - self.mu) @ self.P.T))
        return np.concatenate(f, axis=1)

    def fit(self, draw, samples: int, chunk: int = 4000) -> QuadraticLstsq:
        """``draw(n) -> (r, eps)``; the normal equations accumulated over chunks, a ridge of
        ``ridge * trace / F`` on every feature but the constant (scale-free, just a stabiliser)."""
        G = rhs = None
        done = 0
        while done < samples:
            r, e = draw(min(chunk, samples - done))
            F = self.features(r)
            G = F.T @ F if G is None else G + F.T @ F
            rhs = F.T @ e if rhs is None else rhs + F.T @ e
            done += r.shape[0]
        rest = np.arange(1, G.shape[0])                       # every feature but the constant
        G[rest, rest] += self.ridge * np.trace(G) / G.shape[0]
        self.coef = np.linalg.solve(G, rhs)
        return self

    def predict(self, r):
        return self.features(r) @ self.coef


class SquareNet:
    """``c + W r + V (U r)^2`` with Adam; gradients by hand (checked against finite differences
    in the tests). Starts from an affine ``(W, c)`` with ``V = 0``.

    ``semidefinite``: ``V[j, h] = a[j] w[j, h]^2``, so output ``j``'s quadratic form
    ``a[j] U^T diag(w[j]^2) U`` has one sign: the form a binned camera block read out with one
    scale gives (``scale_j * sum_p |h_p r|^2``)."""

    def __init__(self, W, c, width: int, seed: int = 0, semidefinite: bool = False):
        rng = np.random.default_rng(seed)
        D = W.shape[1]
        self.semidefinite = bool(semidefinite)
        self.p = {"W": W.copy(), "c": c.copy(), "U": rng.standard_normal((width, D)) / np.sqrt(D)}
        if self.semidefinite:
            self.p["a"] = np.zeros(W.shape[0])
            self.p["w"] = np.ones((W.shape[0], width))
        else:
            self.p["V"] = np.zeros((W.shape[0], width))
        self.m = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.step_count = 0

    def V(self):
        p = self.p
        return p["a"][:, None] * p["w"] ** 2 if self.semidefinite else p["V"]

    def predict(self, r):
        p = self.p
        return p["c"] + r @ p["W"].T + ((r @ p["U"].T) ** 2) @ self.V().T

    def loss_and_grads(self, r, e):
        p = self.p
        V = self.V()
        h = r @ p["U"].T
        q = h * h
        d = p["c"] + r @ p["W"].T + q @ V.T - e
        n = r.shape[0]
        g = 2.0 * d / (n * d.shape[1])                    # d(mean squared error)/d(prediction)
        dq = g @ V
        dV = g.T @ q
        grads = {"c": g.sum(0), "W": g.T @ r, "U": (2.0 * h * dq).T @ r}
        if self.semidefinite:
            w2 = p["w"] ** 2
            grads["a"] = np.sum(dV * w2, axis=1)
            grads["w"] = dV * 2.0 * p["a"][:, None] * p["w"]
        else:
            grads["V"] = dV
        return float(np.mean(d * d)), grads

    def step(self, r, e, lr, b1=0.9, b2=0.999, tiny=1e-12):
        loss, grads = self.loss_and_grads(r, e)
        self.step_count += 1
        k = self.step_count
        for name, gr in grads.items():
            self.m[name] = b1 * self.m[name] + (1 - b1) * gr
            self.v[name] = b2 * self.v[name] + (1 - b2) * gr * gr
            mh, vh = self.m[name] / (1 - b1 ** k), self.v[name] / (1 - b2 ** k)
            self.p[name] -= lr * mh / (np.sqrt(vh) + tiny)
        return loss


def local_products(r, side, i, j, radius, mean):
    """[n, P]: products of the centred pixels within ``radius`` of pixel (i, j) (each pair once)."""
    nb = [a * side + b for a in range(i - radius, i + radius + 1) for b in range(j - radius, j + radius + 1)
          if 0 <= a < side and 0 <= b < side]
    return pair_products(r[:, nb] - mean[nb])


def local_quadratic(r, e, vr, lin, radius, mean):
    """Held-out prediction of ``lin`` plus, per output pixel, least squares of the linear fit's
    residual on the products of the pixels within ``radius`` of it (the forms an optics with a
    local point-spread function could make; two-stage, so a lower estimate of that class's gain)."""
    side = int(round(np.sqrt(r.shape[1])))
    res, pred = e - lin.predict(r), lin.predict(vr)
    for i in range(side):
        for j in range(side):
            F, Fv = local_products(r, side, i, j, radius, mean), local_products(vr, side, i, j, radius, mean)
            mu = F.mean(axis=0)
            F, Fv = F - mu, Fv - mu
            G = F.T @ F
            G[np.diag_indices_from(G)] += 1e-6 * np.trace(G) / G.shape[0]
            p = i * side + j
            pred[:, p] += Fv @ np.linalg.solve(G, F.T @ res[:, p])
    return pred


def principal_axes(x0, k):
    """The first ``k`` principal directions of the training images (rows) and their mean."""
    X = x0.reshape(x0.shape[0], -1)
    mu = X.mean(axis=0)
    _, _, vt = np.linalg.svd(X - mu, full_matrices=False)
    return vt[:k], mu


def run_set(m, xtr, xte, sched, ranges, ks, widths, samples, steps, batch, lr, seed,
            semidefinite=False, radii=(), log=print):
    tr = ranges[m]
    vr, ve = noised_flat(xte, 1000, tr, sched, np.random.default_rng(99 + m))
    row = {"set": m, "t": list(tr), "zero": round(float(np.mean(ve ** 2)), 5)}
    axes, mu = principal_axes(xtr, max(ks + [0]))

    def mse(pred):
        return round(float(np.mean((pred - ve) ** 2)), 6)

    def draw_from(s):
        rng = np.random.default_rng(s)
        return lambda n: noised_flat(xtr, n, tr, sched, rng)

    t0 = time.perf_counter()
    lin = QuadraticLstsq(axes[:0], mu).fit(draw_from(seed), samples)
    row["linear"] = mse(lin.predict(vr))
    for k in ks:
        if k == 0:
            continue
        t1 = time.perf_counter()
        q = QuadraticLstsq(axes[:k], mu).fit(draw_from(seed), samples)
        row[f"pca_{k}"] = mse(q.predict(vr))
        log(f"set {m}: pca_{k} {row[f'pca_{k}']} (linear {row['linear']}), {time.perf_counter() - t1:.0f} s")
    for rad in radii:
        t1 = time.perf_counter()
        r, e = draw_from(seed)(samples)
        row[f"local_{rad}"] = mse(local_quadratic(r, e, vr, lin, rad, mu))
        log(f"set {m}: local_{rad} {row[f'local_{rad}']} (linear {row['linear']}), {time.perf_counter() - t1:.0f} s")
    W, c = lin.coef[1:].T, lin.coef[0]
    for h in widths:
        for semi in (False, True) if semidefinite else (False,):
            name = f"{'semidef' if semi else 'square'}_{h}"
            t1 = time.perf_counter()
            net = SquareNet(W, c, h, seed=seed, semidefinite=semi)
            draw = draw_from(seed + 1)
            for i in range(steps):
                r, e = draw(batch)
                net.step(r, e, lr * 0.5 * (1 + np.cos(np.pi * i / steps)))   # cosine decay to 0
            row[name] = mse(net.predict(vr))
            log(f"set {m}: {name} {row[name]} (linear {row['linear']}), {time.perf_counter() - t1:.0f} s")
    best = min(v for k_, v in row.items() if k_.startswith(("pca_", "square_", "semidef_", "local_")))
    row["best_over_linear"] = round(best / row["linear"], 4)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(ap)
    ap.add_argument("--set", default="4", help="time sets (of M = 10), comma-separated")
    ap.add_argument("--pca", default="16,32,64", help="k values of the exact PCA-quadratic fits (comma-separated)")
    ap.add_argument("--widths", default="1024", help="widths of the trained square networks (comma-separated)")
    ap.add_argument("--samples", type=int, default=60000, help="least-squares samples per fit")
    ap.add_argument("--steps", type=int, default=4000, help="Adam steps per square network")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--local", default="", help="radii of the local quadratic fits (comma-separated; ~3 min for 1)")
    ap.add_argument("--semidefinite", action="store_true",
                    help="also train each width with one-signed quadratic forms per output (semidef_h)")
    ap.add_argument("--out", default=None, help="append the JSON lines to this file")
    args = ap.parse_args(argv)

    def ints(text, name, lo):
        try:
            vals = [int(s) for s in text.split(",") if s.strip()]
        except ValueError:
            ap.error(f"{name}: comma-separated integers expected, got {text!r}")
        if any(v < lo for v in vals):
            ap.error(f"{name}: values must be >= {lo}, got {text!r}")
        return vals

    sets, ks, widths = ints(args.set, "--set", 0), ints(args.pca, "--pca", 0), ints(args.widths, "--widths", 1)
    radii = ints(args.local, "--local", 0)
    if any(s > 9 for s in sets):
        ap.error(f"--set: sets are 0..9, got {args.set!r}")
    if args.samples < 2 or args.steps < 1 or args.batch < 1:
        ap.error("--samples must be >= 2, --steps and --batch >= 1")
    xtr, _, xte, _ = load_split(args.dataset, args.data_dir, 1000, 0)
    sched = NoiseSchedule()
    ranges = timestep_sets(sched.T, 10)
    for m in sets:
        row = {"dataset": args.dataset, **run_set(m, xtr, xte, sched, ranges, ks, widths, args.samples,
                                                  args.steps, args.batch, args.lr, args.seed, args.semidefinite, radii,
                                                  log=lambda s: print(s, file=sys.stderr, flush=True))}
        print(json.dumps(row), flush=True)
        append_jsonl(args.out, row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
