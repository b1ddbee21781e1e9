"""Figures and image grids (matplotlib with the Agg backend, Pillow for PNG grids).

* :func:`save_grid`        images [K, H, W] in [-1, 1] -> one PNG grid (nearest-neighbour upscale)
* :func:`plot_trajectory`  reverse-diffusion trajectory r_T ... r_0 (rows = samples), like
                           figure 3 of Oguz et al., with the predicted x0 under it
* :func:`plot_phases`      trained phase masks (rows = layer sets, columns = layers)
* :func:`plot_training`    training loss per set and validation MSE vs step from the CSV logs
* :func:`plot_set_mse`     per-set denoising MSE of several predictors (log scale)
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["save_grid", "grid_image", "plot_trajectory", "plot_phases", "plot_training", "plot_set_mse"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint((np.asarray(x, dtype=np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def grid_image(images: np.ndarray, ncol: int | None = None, pad: int = 1, scale: int = 2) -> np.ndarray:
    """Tile images ``[K, H, W]`` (values in [-1, 1], clipped) into one uint8 image."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 3 or x.shape[0] < 1:
        raise ValueError(f"images must be [K, H, W] with K >= 1, got {x.shape}")
    K, H, W = x.shape
    ncol = ncol or int(np.ceil(np.sqrt(K)))
    nrow = int(np.ceil(K / ncol))
    u = _to_u8(np.nan_to_num(x, nan=-1.0))
    if scale > 1:
        u = u.repeat(scale, axis=1).repeat(scale, axis=2)
        H, W = H * scale, W * scale
    out = np.full((nrow * (H + pad) + pad, ncol * (W + pad) + pad), 64, dtype=np.uint8)
    for i in range(K):
        r, c = divmod(i, ncol)
        out[pad + r * (H + pad): pad + r * (H + pad) + H, pad + c * (W + pad): pad + c * (W + pad) + W] = u[i]
    return out


def _atomic_save(save_fn, path: Path) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")
    try:
        save_fn(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_grid(images: np.ndarray, path, ncol: int | None = None, scale: int = 2) -> Path:
    """Write a PNG grid of ``images`` ([K, H, W] in [-1, 1])."""
    from PIL import Image

    img = Image.fromarray(grid_image(images, ncol=ncol, scale=scale), mode="L")
    return _atomic_save(lambda p: img.save(p, format="PNG"), path)


def _savefig(fig, path) -> Path:
    plt = _plt()
    out = _atomic_save(lambda p: fig.savefig(p, dpi=110, bbox_inches="tight", format="png"), path)
    plt.close(fig)
    return out


def plot_trajectory(traj: Mapping[str, np.ndarray], path, count: int = 6, title: str = "") -> Path:
    """Generation trajectory: for each of ``count`` samples, r_t at the recorded timesteps
    (descending t, left to right, ending with the final sample r_0) and, below, the x0
    predicted at that step."""
    plt = _plt()
    ts = np.asarray(traj["t"])
    xs = np.asarray(traj["x"])[:, :count]
    x0 = np.asarray(traj["x0_pred"])[:, :count]
    final = traj.get("final")
    S, B = xs.shape[:2]
    cols = S + (1 if final is not None else 0)
    fig, axes = plt.subplots(2 * B, cols, figsize=(1.1 * cols, 1.15 * 2 * B), squeeze=False)
    for b in range(B):
        for j in range(cols):
            for k, (arr, _lab) in enumerate(((xs, "r"), (x0, "x0"))):
                ax = axes[2 * b + k, j]
                ax.set_xticks([])
                ax.set_yticks([])
                if j < S:
                    ax.imshow(np.clip(arr[j, b], -1, 1), cmap="gray", vmin=-1, vmax=1)
                    if b == 0 and k == 0:
                        ax.set_title(f"t={int(ts[j])}", fontsize=7)
                elif k == 0:
                    ax.imshow(np.clip(final[b], -1, 1), cmap="gray", vmin=-1, vmax=1)
                    if b == 0:
                        ax.set_title("r_0", fontsize=7)
                else:
                    ax.axis("off")
                if j == 0:
                    ax.set_ylabel("r_t" if k == 0 else "x0 pred", fontsize=6)
    height = 1.15 * 2 * B
    fig.subplots_adjust(top=1 - 0.45 / height, hspace=0.08, wspace=0.05)
    fig.suptitle(title or "reverse diffusion r_T ... r_0 (rows: r_t, predicted x0)", fontsize=9,
                 y=1 - 0.1 / height)
    return _savefig(fig, path)


def plot_phases(phases: np.ndarray, path, sets: Sequence[int] | None = None,
                set_ranges: Sequence | None = None, title: str = "",
                reference: np.ndarray | None = None) -> Path:
    """Phase masks ``[M, L, N, N]`` (wrapped to [-pi, pi), cyclic colour map).

    With ``reference`` ([L, N, N], e.g. the initial lens phases without noise) each set gets a
    second row showing ``phases - reference``: what training (and the initial noise) added to
    the lenses, which the wrapped lens rings otherwise hide.
    """
    plt = _plt()
    ph = np.asarray(phases)
    M, L = ph.shape[:2]
    if sets is None:
        sets = sorted(set([0, M // 2, M - 1])) if M > 3 else list(range(M))
    rows = [(m, False) for m in sets]
    if reference is not None:
        rows = [r for m in sets for r in ((m, False), (m, True))]
    fig, axes = plt.subplots(len(rows), L, figsize=(2.0 * L, 2.0 * len(rows)), squeeze=False)
    im = None
    for i, (m, diff) in enumerate(rows):
        for l in range(L):
            ax = axes[i, l]
            val = ph[m, l] - (reference[l] if diff else 0.0)
            w = np.mod(val + np.pi, 2 * np.pi) - np.pi
            im = ax.imshow(w, cmap="twilight", vmin=-np.pi, vmax=np.pi)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"layer {l}", fontsize=8)
            if l == 0:
                lab = f"set {m}"
                if set_ranges is not None:
                    a, b = set_ranges[m]
                    lab += f" (t {a}-{b - 1})"
                lab += "\nminus lenses" if diff else "\nphase"
                ax.set_ylabel(lab, fontsize=7)
    height = 2.0 * len(rows)
    fig.subplots_adjust(top=1 - 0.4 / height)
    fig.colorbar(im, ax=axes, shrink=0.6, label="phase [rad]")
    fig.suptitle(title or "trained phase masks", fontsize=9, y=1 - 0.1 / height)
    return _savefig(fig, path)


def _read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot_training(train_csv, val_csv, path, title: str = "") -> Path:
    """Loss per set (smoothed) and validation MSE per set vs global step."""
    plt = _plt()
    tr = _read_csv(train_csv)
    va = _read_csv(val_csv) if val_csv and Path(val_csv).exists() else []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    sets = sorted({int(r["set"]) for r in tr} | {int(r["set"]) for r in va})
    cmap = plt.get_cmap("viridis")
    for m in sets:
        rows = [r for r in tr if int(r["set"]) == m]
        if rows:
            st = np.array([int(r["step"]) for r in rows])
            lo = np.array([float(r["loss"]) for r in rows])
            k = max(1, len(lo) // 30)
            sm = np.convolve(lo, np.ones(k) / k, mode="valid")
            axes[0].plot(st[k - 1:], sm, color=cmap(m / max(1, len(sets) - 1)), label=f"set {m}")
        vr = [r for r in va if int(r["set"]) == m]
        if vr:
            axes[1].plot([int(r["step"]) for r in vr], [float(r["val_mse"]) for r in vr], "o-", ms=3,
                         color=cmap(m / max(1, len(sets) - 1)), label=f"set {m}")
    for ax, lab in zip(axes, ("training loss (eps MSE)", "validation eps MSE")):
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    axes[1].axhline(1.0, color="k", ls=":", lw=1, label="zero predictor")
    axes[1].legend(fontsize=6, ncol=2)
    fig.suptitle(title or "training", fontsize=9)
    return _savefig(fig, path)


def plot_set_mse(results: Mapping[str, Sequence[float]], path, set_ranges=None, title: str = "") -> Path:
    """Per-set MSE of several predictors, e.g. ``{"ODU": [...], "zero": [...], "linear": [...]}``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, vals in results.items():
        v = np.asarray(vals, dtype=np.float64)
        ax.plot(np.arange(v.size), np.maximum(v, 1e-6), "o-", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("time set (0 = least noisy)")
    ax.set_ylabel("eps MSE")
    if set_ranges is not None:
        ax.set_xticks(range(len(set_ranges)))
        ax.set_xticklabels([f"{a}-{b - 1}" for a, b in set_ranges], rotation=45, fontsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "denoising MSE per time set", fontsize=9)
    return _savefig(fig, path)
