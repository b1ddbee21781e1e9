"""Command line interface: ``optdiff {train, sample, denoise, show, demo, report, calibrate}`` (also
``python -m optdiff``); ``calibrate`` and ``train --mode`` live in :mod:`optdiff.cli_hardware`.

Configuration comes from a TOML file (``--config run.toml``, see ``examples/``), then generic
overrides (``--set section.key=value``, repeatable), then the dedicated flags (``--n``,
``--steps``, ...), later ones winning. ``sample``, ``denoise`` and ``show`` read the model's
configuration from the checkpoint; their flags change only sampling / data settings.

Exit status: 0 on success, 2 for bad usage or configuration, 1 for other errors (missing or
corrupt files, mismatched checkpoints, diverging training); errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["main", "build_parser"]

DEMO_CONFIG = {
    # the fallback when Fashion-MNIST is not installed: scikit-learn's 8x8 digits (blurry at 20x20)
    "optics": {"n": 128},
    "model": {"sets": 10},
    "data": {"dataset": "digits", "val_count": 256},
    "train": {"steps": 600, "batch": 32, "val_every": 1000, "ckpt_every": 1000},
    "sample": {"sampler": "ddpm", "count": 64, "batch": 64},
}
# T-shirts, trousers and pullovers at 20x20 read at a glance even when the samples are noisy
# (./dev demo installs Debian's dataset-fashion-mnist; time measured, see README)
DEMO_FASHION_DATA = {"dataset": "fashion-mnist", "classes": [0, 1, 2], "val_count": 256}


def demo_config() -> dict:
    """The demo's base configuration: Fashion-MNIST 0-2 when Debian's package is installed, else
    the embedded digits (with a note on stderr)."""
    from .data.datasets import installed_fashion_mnist

    base = {k: dict(v) for k, v in DEMO_CONFIG.items()}
    if installed_fashion_mnist("train") is not None:
        base["data"] = dict(DEMO_FASHION_DATA)
    else:
        print("optdiff demo: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); "
              "using scikit-learn's 8x8 digits, whose samples are blurrier", file=sys.stderr)
    return base


class UsageError(Exception):
    pass


def _count(lowest: int):
    """argparse type: a decimal integer >= ``lowest`` (what a count, seed or thread number must be)."""
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lowest}, got {text!r}") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lowest}, got {text!r}")
        if value >= 1 << 63:
            raise argparse.ArgumentTypeError(f"must be an integer < 2**63, got {text!r}")
        return value
    parse.__name__ = "integer"
    return parse


# ------------------------------------------------------------------------------------ parser
def _add_config_flags(p: argparse.ArgumentParser, model_flags: bool = True) -> None:
    g = p.add_argument_group("configuration")
    g.add_argument("--config", metavar="FILE", help="TOML configuration file (see examples/)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one configuration value (TOML syntax), e.g. --set optics.n=160; repeatable")
    if model_flags:
        g.add_argument("--n", type=int, help="modulator pixels per side N (optics.n)")
        g.add_argument("--layers", type=int, help="phase layers L (optics.layers)")
        g.add_argument("--sets", type=int, help="time sets M (model.sets)")
        g.add_argument("--image-size", type=int, help="image side H = W (model.image_size)")
        g.add_argument("--encoding", choices=("amplitude", "phase", "complex"), help="optics.encoding")
        g.add_argument("--init", help="initial phases: imaging, relay, 4f, lens, zero, random (optics.init)")
        g.add_argument("--skip", choices=("none", "scalar", "pixel"), help="digital skip term (model.skip)")
        g.add_argument("--steps", type=int, help="training steps per set (train.steps)")
        g.add_argument("--batch", type=int, help="minibatch size (train.batch)")
        g.add_argument("--lr", type=float, help="phase learning rate (train.lr)")
        g.add_argument("--order", choices=("interleaved", "sequential"), help="set order (train.order)")
    _add_data_flags(p)
    p.add_argument("--seed", type=_count(0), help="random seed (train.seed and sample.seed)")
    p.add_argument("--threads", type=_count(1), help="CPU threads (train.threads)")
    p.add_argument("--backend", choices=("cpu", "cuda", "cuda-emu"),
                   help="where the optics run: cpu (train.backend, default cpu), cuda (a GPU) or cuda-emu (tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_data_flags(p):
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help="digits (default, needs no files), fashion-mnist, mnist, quickdraw, folder, npy")
    g.add_argument("--data-dir", help="folder with the data set files (or the .npy file for npy)")
    g.add_argument("--split", help="train, test or all")
    g.add_argument("--classes", help="comma-separated class labels or names, e.g. 0,1,2")
    g.add_argument("--limit", type=int, help="use at most this many images")


def _add_sample_flags(p):
    g = p.add_argument_group("sampling")
    g.add_argument("--sampler", choices=("ddpm", "ddim"), help="ancestral DDPM (T steps) or DDIM")
    g.add_argument("--sample-steps", type=int, help="DDIM steps (sample.steps)")
    g.add_argument("--eta", type=float, help="DDIM eta (0 = deterministic)")
    g.add_argument("--count", type=int, help="number of images (sample.count)")
    g.add_argument("--no-clip", action="store_true", help="do not clip the predicted x0 to [-1, 1]")


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    p = argparse.ArgumentParser(
        prog="optdiff",
        description="Optical diffusion models: train, sample and inspect time-aware stacks of "
                    "diffractive phase layers (Oguz et al., NeurIPS 2024).")
    p.add_argument("--version", action="version", version=f"optdiff {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a model", description="Train all M layer sets; writes "
                       "checkpoint.npz, train_log.csv, val_log.csv, summary.json, training.png to --out.")
    t.add_argument("--out", default="runs/train", help="output folder (default runs/train)")
    t.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue from --out/checkpoint.npz (or the given checkpoint)")
    t.add_argument("--max-steps", type=_count(0), help="stop after this many more steps (checkpoint kept)")
    _add_config_flags(t)
    from .cli_hardware import add_calibrate_parser, add_mode_flags

    add_mode_flags(t)
    add_calibrate_parser(sub, _add_config_flags)

    s = sub.add_parser("sample", help="generate images", description="Generate images with a trained "
                       "model; writes samples.png (grid) and samples.npy (float64 [K, H, W] in [-1, 1]).")
    s.add_argument("checkpoint", help="checkpoint.npz of a trained model")
    s.add_argument("--out", default=None, help="output folder (default: the checkpoint's folder)")
    _add_sample_flags(s)
    s.add_argument("--seed", type=_count(0), help="sampling seed (sample.seed)")
    s.add_argument("--threads", type=_count(1), help="CPU threads")
    s.add_argument("--backend", choices=("cpu", "cuda", "cuda-emu"),
                   help="where the optics run: cpu (default), cuda (a GPU) or cuda-emu (tests)")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="sample.KEY=VALUE",
                   help="override a [sample] value")
    s.add_argument("--no-progress", action="store_true")

    d = sub.add_parser("denoise", help="per-set denoising MSE on held-out data",
                       description="Noise held-out images at timesteps of every set and report the "
                       "eps-MSE of the model next to the zero predictor (and, with --linear, the best "
                       "linear denoiser fitted on the training data).")
    d.add_argument("checkpoint")
    _add_data_flags(d)
    d.add_argument("--samples", type=_count(1), default=256, help="noised images per set (default 256)")
    d.add_argument("--linear", action="store_true", help="also fit and report the least-squares linear denoiser (exact: the noise's moments in closed form)")
    d.add_argument("--json", dest="json_out", help="write the results to this JSON file")
    d.add_argument("--seed", type=_count(0), default=0)
    d.add_argument("--threads", type=_count(1))
    d.add_argument("--backend", choices=("cpu", "cuda", "cuda-emu"),
                   help="where the optics run: cpu (default), cuda (a GPU) or cuda-emu (tests)")

    w = sub.add_parser("show", help="figures: generation trajectory and phase masks",
                       description="Write trajectory.png (r_T ... r_0 for a few samples, like figure 3 "
                       "of the reference work), phases.png (trained masks) and, when the training logs "
                       "are next to the checkpoint, training.png.")
    w.add_argument("checkpoint")
    w.add_argument("--out", default=None, help="output folder (default: the checkpoint's folder)")
    w.add_argument("--rows", type=_count(1), default=6, help="samples shown in the trajectory (default 6)")
    _add_sample_flags(w)
    w.add_argument("--seed", type=_count(0))
    w.add_argument("--threads", type=_count(1))
    w.add_argument("--backend", choices=("cpu", "cuda", "cuda-emu"),
                   help="where the optics run: cpu (default), cuda (a GPU) or cuda-emu (tests)")
    w.add_argument("--set", dest="overrides", action="append", default=[])

    m = sub.add_parser("demo", help="train a small model on Fashion-MNIST 0-2 and write samples and figures",
                       description="Train a small model (N=128, 10 sets x 600 steps) on Fashion-MNIST "
                       "classes 0-2 at 20x20 (Debian's dataset-fashion-mnist; scikit-learn's digits when "
                       "it is not installed), about 5 minutes on 2 idle cores, then sample 64 images and "
                       "draw figures. --config/--set override any of it.")
    m.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    _add_config_flags(m)
    r = sub.add_parser("report", help="train or load the models a TOML names, evaluate, write a Markdown report",
                       description="Train or load the models and data sets named in a report TOML (see "
                       "docs/evaluation.md), evaluate them (per-set eps-MSE, FID/KID/IS, FID along the chain, "
                       "speed and energy) and write report.md, report.json and figures to --out. Resumable: "
                       "finished parts are not redone.")
    r.add_argument("config", help="report TOML")
    r.add_argument("--out", default="runs/report", help="output folder (default runs/report)")
    r.add_argument("--inception-weights", metavar="PATH", help="pytorch-fid's Inception-v3 weights file on disk "
                   "(pt_inception-2015-12-05-6726825d.pth) for the standard FID rows; nothing is downloaded")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    parsers = {"train": t, "sample": s, "denoise": d, "show": w, "demo": m, "report": r}
    for ext in _extensions():
        ext.register(sub, parsers, _add_config_flags)
    for sp in (t, s, d, w, m):
        sp.add_argument("--planner", choices=("estimate", "measure", "patient"),
                        help="FFTW planning (default measure: plans chosen by timing, fastest, but two "
                             "processes may pick different plans and round differently; estimate: "
                             "bitwise reproducible across processes and resumes, slower steps)")
    return p


# ------------------------------------------------------------------------------------ helpers
def _fail(msg: str, code: int = 1) -> int:
    print(f"optdiff: error: {msg}", file=sys.stderr)
    return code


def _flag_overrides(args) -> list[str]:
    out = []
    pairs = [("n", "optics.n"), ("layers", "optics.layers"), ("sets", "model.sets"),
             ("image_size", "model.image_size"), ("steps", "train.steps"), ("batch", "train.batch"),
             ("lr", "train.lr"), ("limit", "data.limit"), ("threads", "train.threads")]
    for attr, key in pairs:
        v = getattr(args, attr, None)
        if v is not None:
            out.append(f"{key}={v!r}")
    for attr, key in (("encoding", "optics.encoding"), ("init", "optics.init"), ("skip", "model.skip"),
                      ("order", "train.order"), ("dataset", "data.dataset"), ("data_dir", "data.data_dir"),
                      ("split", "data.split"), ("sampler", "sample.sampler"), ("backend", "train.backend")):
        v = getattr(args, attr, None)
        if v is not None:
            out.append(f"{key}={json.dumps(v)}")
    if getattr(args, "classes", None):
        items = [c.strip() for c in args.classes.split(",") if c.strip()]
        vals = [int(c) if c.lstrip("-").isdigit() else c for c in items]
        out.append(f"data.classes={json.dumps(vals)}")
    if getattr(args, "seed", None) is not None and args.command != "denoise":
        if args.command in ("train", "demo"):
            out.append(f"train.seed={args.seed}")
        out.append(f"sample.seed={args.seed}")
    for attr, key in (("sample_steps", "sample.steps"), ("eta", "sample.eta"), ("count", "sample.count")):
        v = getattr(args, attr, None)
        if v is not None:
            out.append(f"{key}={v!r}")
    if getattr(args, "no_clip", False):
        out.append("sample.clip_x0=false")
    if getattr(args, "no_progress", False) and hasattr(args, "steps"):
        out.append("train.progress=false")
    return out


def _build_config(args, base: dict | None = None):
    from .config import Config, apply_overrides, load_config

    overrides = list(args.overrides) + _flag_overrides(args)
    if getattr(args, "config", None):
        if base:
            import tomllib

            with open(args.config, "rb") as f:
                d = tomllib.load(f)
            merged = {k: dict(v) for k, v in base.items()}
            for k, v in d.items():
                merged.setdefault(k, {}).update(v)
            return Config.from_dict(apply_overrides(merged, overrides))
        return load_config(args.config, overrides)
    return Config.from_dict(apply_overrides(base or {}, overrides))


def _model_from_checkpoint(args, allowed_sections=("sample", "data")):
    """Load a model; ``--set`` / flags may change only sampling and data settings."""
    from .config import Config, ConfigError, apply_overrides
    from .diffusion.trainer import load_model

    model, _, meta = load_model(args.checkpoint, nthreads=getattr(args, "threads", None),
                                backend=getattr(args, "backend", None))
    overrides = list(getattr(args, "overrides", [])) + _flag_overrides(args)
    for o in overrides:
        sec = o.split(".", 1)[0]
        if o.startswith(("train.threads", "train.backend")):
            continue
        if sec not in allowed_sections:
            raise ConfigError(f"{o!r}: only {', '.join(allowed_sections)} settings can change for a trained model")
    cfg = Config.from_dict(apply_overrides(model.cfg.to_dict(), overrides))
    model.cfg.sample = cfg.sample
    model.cfg.data = cfg.data
    return model, meta


def _threads(args, cfg=None):
    from .optics import set_num_threads

    n = getattr(args, "threads", None) or (cfg.train.threads if cfg is not None else None)
    if n:
        set_num_threads(int(n))


# ------------------------------------------------------------------------------------ commands
def cmd_train(args, base: dict | None = None, out: Path | None = None) -> dict:
    from .diffusion.trainer import Trainer
    from .plots import plot_training

    cfg = _build_config(args, base)
    out = Path(out or args.out)
    _threads(args, cfg)
    resume = getattr(args, "resume", False)
    if resume is True and not (out / "checkpoint.npz").exists():
        raise FileNotFoundError(f"--resume: no checkpoint to resume from at {out / 'checkpoint.npz'}")
    if isinstance(resume, str) and not Path(resume).exists():
        raise FileNotFoundError(f"--resume: checkpoint not found: {resume}")
    from .cli_hardware import make_trainer

    tr = make_trainer(args, cfg, out) if hasattr(args, "mode") else Trainer(cfg, out)
    g = tr.model.odu.describe()
    print(f"optdiff train: N={g['n']} L={g['layers']} M={cfg.model.sets} k={g['k']} "
          f"({g['image_pixel_um']:.1f} um per image pixel), NA {g['na']:.4f}, "
          f"bandwidth/Nyquist {g['bandwidth_ratio']:.2f}; {tr.images.shape[0]} training images "
          f"({cfg.data.dataset}), {tr.total_steps} steps -> {out}", file=sys.stderr)
    summary = tr.fit(resume=getattr(args, "resume", False), max_steps=getattr(args, "max_steps", None))
    try:
        plot_training(out / "train_log.csv", out / "val_log.csv", out / "training.png")
    except Exception as exc:  # a figure must not lose a finished training run
        warnings.warn(f"could not draw training.png: {exc}", stacklevel=2)
    print(_mse_table({"ODU": summary["val_mse"], "zero": summary["zero_mse"]}, tr.model.set_ranges))
    print(f"checkpoint: {summary['checkpoint']}  ({summary['steps']} steps, {summary['elapsed_s']:.0f} s, "
          f"{summary['images_per_s'] or 0:.0f} images/s)")
    return summary


def _mse_table(cols: dict, set_ranges) -> str:
    names = list(cols)
    lines = ["set  timesteps   " + "  ".join(f"{n:>9s}" for n in names)]
    for m, (a, b) in enumerate(set_ranges):
        lines.append(f"{m:3d}  {a:4d}-{b - 1:<5d}  " + "  ".join(f"{cols[n][m]:9.4f}" for n in names))
    return "\n".join(lines)


def cmd_sample(args) -> Path:
    from .diffusion.model import generate
    from .plots import save_grid

    model, _ = _model_from_checkpoint(args)
    _threads(args, model.cfg)
    sc = model.cfg.sample
    out = Path(args.out) if args.out else Path(args.checkpoint).parent
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    x = generate(model.predict_eps, model.schedule, sc, sc.count, model.H,
                 progress=not args.no_progress)
    dt = time.perf_counter() - t0
    _save_npy(out / "samples.npy", x)
    save_grid(x, out / "samples.png")
    print(f"{x.shape[0]} samples ({sc.sampler}, seed {sc.seed}) in {dt:.1f} s -> {out / 'samples.png'}, "
          f"{out / 'samples.npy'}")
    return out


def _save_npy(path: Path, x: np.ndarray) -> None:
    from .diffusion.checkpoint import atomic_write

    atomic_write(path, lambda f: np.save(f, x), binary=True)


def cmd_denoise(args) -> dict:
    from .diffusion.trainer import load_images, split_train_val
    from .evaluation.baselines import LinearDenoiser, ZeroPredictor, per_set_mse

    model, _ = _model_from_checkpoint(args, allowed_sections=("data", "sample"))
    _threads(args, model.cfg)
    cfg = model.cfg
    # the trainer's held-out split (same val_count and seed) of the configured data set; with
    # --dataset / --data-dir / --split the same split of that data (the linear baseline is
    # fitted on the other part)
    x = load_images(cfg)
    train, held = split_train_val(x, cfg.data.val_count, cfg.train.seed)
    cols = {"ODU": per_set_mse(model.predict_eps, held, model.schedule, model.set_ranges,
                               rng=args.seed, samples=args.samples),
            "zero": per_set_mse(ZeroPredictor(), held, model.schedule, model.set_ranges,
                                rng=args.seed, samples=args.samples)}
    if args.linear:
        lin = LinearDenoiser().fit(train, model.schedule, model.set_ranges)
        cols["linear"] = per_set_mse(lin.predict, held, model.schedule, model.set_ranges,
                                     rng=args.seed, samples=args.samples)
    print(_mse_table(cols, model.set_ranges))
    res = {k: np.asarray(v).tolist() for k, v in cols.items()}
    res["set_ranges"] = [list(s) for s in model.set_ranges]
    res["held_out_images"] = int(held.shape[0])
    if args.json_out:
        from .diffusion.trainer import write_json_atomic

        write_json_atomic(args.json_out, res)
    return res


def _lens_reference(model):
    """The initial phases without noise (the lenses), or None for a zero / random init."""
    from .odu import init_phases

    if model.cfg.optics.init in ("zero", "random"):
        return None
    return init_phases(model.cfg.optics, noise=0.0, image_size=model.H)


def cmd_show(args) -> Path:
    from .diffusion.model import generate
    from .plots import plot_phases, plot_training, plot_trajectory

    model, meta = _model_from_checkpoint(args)
    _threads(args, model.cfg)
    ck = Path(args.checkpoint)
    out = Path(args.out) if args.out else ck.parent
    out.mkdir(parents=True, exist_ok=True)
    sc = model.cfg.sample
    sc.batch = min(sc.batch, max(1, args.rows))
    _, traj = generate(model.predict_eps, model.schedule, sc, max(1, args.rows), model.H, trajectory=True)
    paths = [plot_trajectory(traj, out / "trajectory.png", count=args.rows,
                             title=f"generation trajectory ({sc.sampler}, step {meta.get('step', '?')})"),
             plot_phases(model.params["phases"], out / "phases.png", set_ranges=model.set_ranges,
                         reference=_lens_reference(model))]
    if (ck.parent / "train_log.csv").exists():
        paths.append(plot_training(ck.parent / "train_log.csv", ck.parent / "val_log.csv", out / "training.png"))
    for p in paths:
        print(p)
    return out


def cmd_demo(args) -> Path:
    from .diffusion.model import generate
    from .plots import plot_phases, plot_set_mse, plot_trajectory, save_grid

    out = Path(args.out)
    t0 = time.perf_counter()
    summary = cmd_train(args, base=demo_config(), out=out)
    from .diffusion.trainer import load_model

    model, _, _ = load_model(out / "checkpoint.npz")
    sc = model.cfg.sample
    x, traj = generate(model.predict_eps, model.schedule, sc, sc.count, model.H, trajectory=True,
                       progress=not args.no_progress)
    _save_npy(out / "samples.npy", x)
    save_grid(x, out / "samples.png")
    plot_trajectory(traj, out / "trajectory.png", count=6)
    plot_phases(model.params["phases"], out / "phases.png", set_ranges=model.set_ranges,
                reference=_lens_reference(model))
    plot_set_mse({"ODU": summary["val_mse"], "zero": summary["zero_mse"]}, out / "set_mse.png",
                 set_ranges=model.set_ranges)
    total = time.perf_counter() - t0
    print(f"demo finished in {total:.0f} s: {out}/samples.png, trajectory.png, phases.png, "
          f"training.png, set_mse.png")
    return out


def cmd_report(args) -> Path:
    from .evaluation.report import run_report

    path = run_report(args.config, args.out, inception_weights=args.inception_weights,
                      progress=not args.no_progress, log=lambda msg: print(msg, file=sys.stderr))
    print(path)
    return path


def cmd_calibrate(args) -> dict:
    from .cli_hardware import cmd_calibrate as run

    return run(args, _build_config)


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "denoise": cmd_denoise, "show": cmd_show, "demo": cmd_demo,
            "report": cmd_report, "calibrate": cmd_calibrate}


def _extensions():
    """The ``optdiff/cli_*.py`` modules that add subcommands, in name order.

    Each has ``register(sub, parsers, add_config_flags)`` (adds its parsers; may add flags to the
    built-in ones in ``parsers``) and ``COMMANDS`` (name -> handler, merged over the built-in
    table), so a new system adds a command without editing this file.
    """
    import importlib
    import pkgutil

    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                   if m.name.startswith("cli_"))
    mods = [importlib.import_module(f".{name}", __package__) for name in names]
    return [m for m in mods if hasattr(m, "register")]


def _commands() -> dict:
    table = dict(COMMANDS)
    for ext in _extensions():
        table.update(ext.COMMANDS)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    from .config import ConfigError
    from .diffusion.checkpoint import CheckpointError
    from .diffusion.trainer import TrainingError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        if getattr(args, "planner", None):
            from .optics import set_planner_effort

            set_planner_effort(args.planner)
        _commands()[args.command](args)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    except (CheckpointError, TrainingError, FileNotFoundError, FloatingPointError) as exc:
        return _fail(str(exc), 1)
    except (ValueError, TypeError, OSError) as exc:
        return _fail(f"{type(exc).__name__}: {exc}", 1)
    except KeyboardInterrupt:
        return _fail("interrupted (the last checkpoint is kept)", 130)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
