"""The results table (Markdown) and the figure of the chosen paths (matplotlib).

The figure has one panel per variant: positions left to right, candidate masks bottom to top and
the skip on top; each domain's path is a coloured line through its choices, slightly offset so
that a mask shared by several domains shows several lines through one cell.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["results_table", "plot_paths"]


def results_table(results: dict) -> str:
    """Markdown: per variant, each domain's test quality, the mean, distinct masks, parameters, paths."""
    if not results:
        return "(no finished variant)\n"
    first = next(iter(results.values()))
    keys, qname = first["domains"], first["quality_name"]
    head = ["variant"] + [f"{k} {qname}" for k in keys] + ["mean", "distinct masks", "SLM pixels", "parameters"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v, r in results.items():
        q = [r["test_quality"][k] for k in keys]
        lines.append("| " + " | ".join([v] + [f"{x:.4f}" for x in q] + [f"{np.mean(q):.4f}", str(r["distinct_masks"]),
                                                                        str(r["mask_pixels"]), str(r["parameters"])])
                     + " |")
    lines += ["", "Paths (per position: mK = candidate K, . = skip):", ""]
    for v, r in results.items():
        lines.append(f"* {v}: " + "; ".join(f"{k}: `{r['path_text'][k]}`" for k in keys)
                     + (f"; shared: {r['shared_masks']}" if r["shared_masks"] else "; nothing shared"))
    return "\n".join(lines) + "\n"


def plot_paths(results: dict, path) -> Path:
    """Save the figure of every variant's paths to ``path`` (PNG); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = list(results.items())
    fig, axes = plt.subplots(1, len(items), figsize=(3.2 * len(items) + 1, 3.2), squeeze=False)
    for ax, (v, r) in zip(axes[0], items):
        L, K, keys = r["positions"], r["candidates"], r["domains"]
        rows = K + (1 if r["skip"] else 0)
        for pos in range(L):
            for c in range(K):
                used = f"{pos}:{c}" in r["mask_users"]
                ax.add_patch(plt.Rectangle((pos - 0.35, c - 0.35), 0.7, 0.7, fill=used, alpha=0.15 if used else 1,
                                           edgecolor="0.6", facecolor="0.5"))
        for d, k in enumerate(keys):
            p = r["paths"][k]
            off = (d - (len(keys) - 1) / 2) * 0.12
            ys = [K if c < 0 else c for c in p]
            ax.plot(np.arange(L) + off, np.asarray(ys) + off, "o-", lw=2, label=k)
        ax.set_xticks(range(L), [f"pos {i}" for i in range(L)])
        ax.set_yticks(range(rows), [f"m{c}" for c in range(K)] + (["skip"] if r["skip"] else []))
        ax.set_xlim(-0.6, L - 0.4)
        ax.set_ylim(-0.6, rows - 0.4)
        ax.set_title(f"{v}\n{r['distinct_masks']} distinct masks", fontsize=9)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
