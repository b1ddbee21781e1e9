"""Tables and a figure from the JSON lines of studies/design_classes.py.

    python studies/design_classes_summary.py runs/design_classes/designs.jsonl studies/results/design_classes

writes ``results.md`` (per data set and time set: each design and start, eps-MSE after each
evaluation with its wall-clock seconds, the linear denoiser, the digital terms alone, the
fraction of the linear denoiser's gain over the digital terms that the design reached, the
optics' share of the prediction) and ``curves.png`` (eps-MSE against wall-clock time).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def gain(mse: float, r: dict) -> float:
    """Fraction of the way from the digital terms alone (diag) to the full linear denoiser."""
    return (r["diag"] - mse) / (r["diag"] - r["linear"])


def markdown(rows: list[dict]) -> str:
    out = ["# Optical designs against the linear denoiser, one time set at a time", "",
           "eps-MSE on 1000 held-out noised images of the set (the same images for every row); "
           "`linear`: least-squares linear denoiser; `diag`: the best per-pixel skip + offset (no optics); "
           "`gain`: (diag - ODU) / (diag - linear), the share of the linear denoiser's improvement over "
           "the digital terms that the optics reached (1 = level with linear); `optics share`: fraction of "
           "the prediction's variance carried by the camera term; `digital only`: eps-MSE with the camera "
           "image frozen at its mean. Wall-clock seconds on a 2-core machine shared with ~8 other jobs "
           "(load average 8-26 during these runs): compare seconds within a table, not with other machines.", ""]
    keys = sorted({(r["dataset"], r["set"]) for r in rows})
    for ds, m in keys:
        sub = [r for r in rows if (r["dataset"], r["set"]) == (ds, m)]
        ref = sub[0]
        out += [f"## {ds}, set {m}", "",
                f"linear {ref['linear']:.5f}, diag (skip + offset only) {ref['diag']:.5f}, zero {ref['zero']:.4f}", "",
                "| design | start | curve: steps (phase) s -> eps-MSE | final | / linear | gain | optics share "
                "| digital only | light |", "|---|---|---|---|---|---|---|---|---|"]
        for r in sub:
            curve = "; ".join(f"{c['step']} ({c['phase'][0]}) {c['s']:.0f} s: {c['mse']:.4f}" for c in r["curve"][1:])
            out.append(f"| {r['design']} | {r['start']} | {curve} | {r['final']:.5f} | {r['final'] / r['linear']:.2f} "
                       f"| {gain(r['final'], r):.2f} | {r['optics_share']:.3f} | {r['digital_only']:.4f} "
                       f"| {r['light']:.2f} |")
        out.append("")
    return "\n".join(out)


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(r["dataset"], r["set"]) for r in rows})
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False)
    for ax, (ds, m) in zip(axes[0], keys):
        sub = [r for r in rows if (r["dataset"], r["set"]) == (ds, m)]
        for r in sub:
            ax.plot([c["s"] for c in r["curve"]], [c["mse"] for c in r["curve"]], "o-",
                    label=f"{r['design']} / {r['start']}")
        ax.axhline(sub[0]["linear"], color="k", ls="--", label="linear denoiser")
        ax.axhline(sub[0]["diag"], color="grey", ls=":", label="skip + offset only")
        ax.set(title=f"{ds}, set {m}", xlabel="wall-clock s (shared 2-core machine)", ylabel="held-out eps-MSE")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jsonl", help="the --out file of design_classes.py")
    ap.add_argument("out", help="folder for results.md, results.json, curves.png")
    a = ap.parse_args(argv)
    rows = load(a.jsonl)
    if not rows:
        print(f"{a.jsonl}: no runs", file=sys.stderr)
        return 1
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(markdown(rows))
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    figure(rows, out / "curves.png")
    print(out / "results.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
