"""Image-resolution sweep: a table and a figure from an ``optdiff report`` whose data sets are one
data set at several image sizes (studies/report/resolution-fashion-mnist.toml: the same ODU
optics and training budget at 20x20, 24x24 and 28x28, the linear denoiser as reference).

The report gives, per resolution, FID / KID in a CNN trained at that resolution: those values
compare models at one resolution but not resolutions with each other (each is another feature
space). So this script adds one common space: every model's samples are resampled to the
smallest resolution (area averaging, as the data loader resamples) and their FID to that
resolution's held-out images is computed in its feature network. The *resampling floor* row
is the same for the held-out images of each resolution: what resampling alone costs.

Outputs in ``--out``: ``results.md`` (table), ``results.json`` (every number), ``resolution.png``.

Example::

    python -m optdiff report studies/report/resolution-fashion-mnist.toml --out runs/resolution-fashion-mnist
    python studies/resolution.py runs/resolution-fashion-mnist --config studies/report/resolution-fashion-mnist.toml \\
        --out studies/results/resolution-fashion-mnist
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the studies package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studies.common import REPO  # noqa: E402,F401  (puts the in-tree optdiff on the path if needed)

# isort: split
from optdiff.config import Config  # noqa: E402
from optdiff.data.datasets import resize_images  # noqa: E402
from optdiff.diffusion.checkpoint import load_checkpoint  # noqa: E402
from optdiff.diffusion.trainer import write_json_atomic  # noqa: E402
from optdiff.evaluation.metrics import FeatureNet, check_samples, frechet_distance  # noqa: E402


def feature_space(report_dir: Path, label: str, dataset: str, size: int, space: str):
    """The feature network the report trained for data set ``label``."""
    path = report_dir / "features" / label / f"{space}.npz"
    if space == "cnn":
        from optdiff.evaluation.cnn_features import CNNFeatureNet

        return CNNFeatureNet.load(path, dataset=dataset, image_size=size)
    return FeatureNet.from_arrays(load_checkpoint(path)[1])


def to_size(x: np.ndarray, size: int) -> np.ndarray:
    """Images resampled to ``size x size`` (area when shrinking), clipped to [-1, 1]."""
    return np.clip(resize_images(x, size), -1.0, 1.0) if x.shape[1] != size else x


def bootstrap_std(f_real: np.ndarray, f_fake: np.ndarray, rounds: int = 50, seed: int = 0) -> float:
    """Spread of the FID from the finite sample: its standard deviation over ``rounds`` redraws (with
    replacement) of the generated images' features, the real ones fixed."""
    rng = np.random.default_rng([seed, 77])
    n = f_fake.shape[0]
    return float(np.std([frechet_distance(f_real, f_fake[rng.integers(0, n, n)]) for _ in range(rounds)]))


def summarize(report_dir, config_path) -> dict:
    """Per resolution and model: the report's numbers and the FID in the smallest resolution's space."""
    from optdiff.evaluation.report import _load_data
    from optdiff.evaluation.report_config import load_report_config

    report_dir = Path(report_dir)
    res = json.loads((report_dir / "report.json").read_text())
    cfg = load_report_config(config_path)
    specs = sorted(cfg.datasets, key=lambda d: d.image_size)
    if len({d.dataset for d in specs}) != 1 or len({d.image_size for d in specs}) != len(specs):
        raise ValueError(f"{config_path}: a resolution sweep needs one data set at distinct image sizes, got "
                         f"{[(d.dataset, d.image_size) for d in specs]}")
    base = specs[0]
    space = "cnn" if "cnn" in cfg.settings.features else cfg.settings.features[0]
    common = feature_space(report_dir, base.label, base.dataset, base.image_size, space)
    real_by = {d.label: _load_data(d, cfg.settings.seed, cfg.base_dir)[2] for d in specs}
    f_base = common.features(real_by[base.label])
    rows = []
    for d in specs:
        dres = res["datasets"][d.label]
        floor = frechet_distance(f_base, common.features(to_size(real_by[d.label], base.image_size)))
        for name, r in dres["models"].items():
            row = {"resolution": d.image_size, "dataset": d.label, "model": name, "kind": r["kind"],
                   "params": r["params"], "flops_per_step": r["flops_per_step"], "resampling_floor": floor}
            q = (r.get("quality") or {}).get(space)
            if q:
                row.update(fid=q["fid"], kid=q["kid"], kid_std=q["kid_std"], n_fake=q["n_fake"])
            if r.get("mse"):
                row["mse"] = r["mse"]
            x = check_samples(np.load(report_dir / r["samples_file"]), d.image_size, what=f"samples of {name}")
            f_fake = common.features(to_size(x, base.image_size))
            row["fid_common"] = frechet_distance(f_base, f_fake)
            row["fid_common_std"] = bootstrap_std(f_base, f_fake, seed=cfg.settings.seed)
            if r["kind"] == "odu":
                head = load_checkpoint(report_dir / "models" / d.label / name / "checkpoint.npz")[0]
                optics = Config.from_dict(head["run"]).optics
                row["pixels_per_image_pixel"] = optics.pixels_per_image_pixel(d.image_size)
                row["n"] = optics.n
            train = report_dir / "parts" / d.label / name / "train.json"
            if train.is_file():
                row["train_seconds"] = json.loads(train.read_text())["seconds"]
            rows.append(row)
    return {"space": space, "common_size": base.image_size, "rows": rows,
            "settings": {"samples": cfg.settings.samples, "sampler": cfg.settings.sampler,
                         "sample_steps": cfg.settings.sample_steps, "threads": cfg.settings.threads}}


def table(summary: dict) -> str:
    sp, c = summary["space"], summary["common_size"]
    L = [f"| resolution | model | modulator pixels per image pixel | FID ({sp}, own resolution) | KID ({sp}) | "
         f"FID ({sp} at {c}x{c}, resampled; ± bootstrap std) | resampling floor | eps-MSE first / middle / last set | training s |",
         "|---" * 9 + "|"]

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    for r in summary["rows"]:
        m, k = r.get("mse"), r.get("pixels_per_image_pixel")
        cells = [str(r["resolution"]), r["model"], f"{k} ({k * r['resolution']} of {r['n']})" if k else "-",
                 num(r.get("fid"), ".4g"),
                 f"{r['kid']:.3g} ± {r['kid_std']:.2g}" if "kid" in r else "-",
                 f"{r['fid_common']:.4g} ± {r['fid_common_std']:.2g}", num(r["resampling_floor"], ".3g"),
                 " / ".join(f"{m[i]:.3g}" for i in (0, len(m) // 2 - 1, len(m) - 1)) if m else "-",
                 num(r.get("train_seconds"), ".0f")]
        L.append("| " + " | ".join(cells) + " |")
    return "\n".join(L)


def plot(summary: dict, path: Path) -> Path:
    from optdiff.plots import _plt, _savefig

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    sp, c = summary["space"], summary["common_size"]
    for model in dict.fromkeys(r["model"] for r in summary["rows"]):
        rs = [r for r in summary["rows"] if r["model"] == model]
        x = [r["resolution"] for r in rs]
        axes[0].plot(x, [r.get("fid", np.nan) for r in rs], "o-", label=model)
        axes[1].errorbar(x, [r["fid_common"] for r in rs], yerr=[r["fid_common_std"] for r in rs], fmt="o-",
                         capsize=3, label=model)
    floor = {r["resolution"]: r["resampling_floor"] for r in summary["rows"]}
    axes[1].plot(list(floor), list(floor.values()), "k:", label="resampling floor (real images)")
    axes[0].set_title(f"FID in a {sp.upper()} trained at each resolution", fontsize=9)
    axes[1].set_title(f"FID after resampling to {c}x{c} (one {sp.upper()})", fontsize=9)
    for ax in axes:
        ax.set_xlabel("image resolution (pixels per side)")
        ax.set_ylabel("FID")
        ax.set_xticks(sorted(floor))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _savefig(fig, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", help="the --out folder of the finished optdiff report")
    ap.add_argument("--config", required=True, help="the report's TOML (for the data sets and the split)")
    ap.add_argument("--out", required=True, help="folder for results.md, results.json, resolution.png")
    args = ap.parse_args(argv)
    if not (Path(args.report) / "report.json").is_file():
        ap.error(f"{args.report}: no report.json (run optdiff report to the end first)")
    s = summarize(args.report, args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", s)
    plot(s, out / "resolution.png")
    st = s["settings"]
    text = (f"# Image-resolution sweep\n\nFrom `{args.report}` ({args.config}); {st['samples']} samples per model "
            f"({st['sampler']}, {st['sample_steps']} steps); {st['threads']} thread(s).\n\n" + table(s) +
            "\n\n![FID against resolution](resolution.png)\n")
    (out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
