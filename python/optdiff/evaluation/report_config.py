"""The ``optdiff report`` configuration: a TOML file naming data sets, models and metrics, checked
whole before any work starts (every problem is a ``ConfigError`` naming section, key and value).

::

    [report]                       # all keys optional
    metrics = ["mse", "fid", "kid", "is", "chain"]
    samples = 500                  # generated images per model for FID / KID / IS
    sample_counts = [500]          # also the metrics of the first k samples, for each k listed
    features = ["cnn", "mlp"]      # feature spaces (+ Inception-v3 with --inception-weights)
    T = 1000                       # DDPM: linear betas beta_start..beta_end, eps-prediction
    sets = 10                      # time sets of the per-set eps-MSE (the ODU's M when there is one)

    [datasets.digits]              # one table per data set; `dataset` defaults to the table name
    image_size = 20
    held_out = 500
    reference = "held_out"         # real images the samples are compared with ("train": all training images)

    [models.odu]                   # one table per model; `kind` defaults to the table name
    kind = "odu"
    config = "examples/default.toml"   # train it (or checkpoint = "runs/x/checkpoint.npz")
    set = ["train.steps=1000"]

    [models.fc_matched]
    kind = "fc"
    size = "matched"               # "reference" (1200 units), "matched" (the ODU's M L N^2) or a count
    steps = 2000                   # (or checkpoint = a net trained before: evaluated as it is)

See docs/evaluation.md for every key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..config import ConfigError, read_toml

__all__ = ["ReportConfig", "DatasetSpec", "ModelSpec", "load_report_config", "METRICS", "MODEL_KINDS",
           "FEATURE_SPACES", "KNOWN_DATASETS"]

METRICS = ("mse", "fid", "kid", "is", "chain")
MODEL_KINDS = ("odu", "linear", "fc", "unet", "samples")
FEATURE_SPACES = ("cnn", "mlp")
REFERENCES = ("held_out", "train")  # the real images sample metrics compare with
#: Keys that only say how to train a model: a model loaded from a checkpoint cannot take them.
_NET_KEYS = ("size", "steps", "batch", "lr", "work_size")
TRAINING_KEYS = {"linear": ("samples_per_set", "ridge"), "fc": _NET_KEYS, "unet": _NET_KEYS}
KNOWN_DATASETS = ("digits", "fashion-mnist", "mnist", "quickdraw", "folder", "npy")


@dataclass
class Settings:
    title: str = "optdiff report"
    seed: int = 0
    threads: int = 2
    T: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    sets: int = 10
    metrics: list = field(default_factory=lambda: ["mse", "fid", "kid", "is"])
    samples: int = 500
    sample_counts: list = field(default_factory=list)  # metrics also of the first k samples, each k
    sample_batch: int = 100
    sampler: str = "ddpm"
    sample_steps: int = 100
    kid_subsets: int = 50
    kid_subset_size: int = 1000
    is_splits: int = 10
    mse_samples: int = 512
    chain_steps: list = field(default_factory=lambda: [999, 800, 600, 400, 200, 100, 50, 0])
    chain_samples: int = 200
    chain_which: str = "x0"
    features: list = field(default_factory=lambda: ["cnn"])
    feature_epochs: int = 8
    speed: bool = True
    speed_batch: int = 64
    speed_repeats: int = 3
    speed_reference_sizes: bool = False
    gpu_backend: str = "cuda"      # the ODU's GPU row ("" = none; "cuda-emu" runs the GPU code on the CPU)
    inception_weights: str = ""


@dataclass
class DatasetSpec:
    label: str
    dataset: str = ""
    data_dir: str = ""
    classes: list | None = None
    image_size: int = 20
    split: str = "train"
    limit: int = 0
    held_out: int = 500
    features_checkpoint: str = ""
    reference: str = "held_out"    # the real images FID / KID / IS compare with: "held_out" or "train"


@dataclass
class ModelSpec:
    label: str
    kind: str = ""
    checkpoint: Any = ""       # odu, linear, fc, unet: path, or {dataset label: path}: trained before
    config: str = ""           # odu: TOML to train from
    set: list = field(default_factory=list)
    size: Any = "matched"      # fc / unet: "reference", "matched" or a parameter count
    steps: int = 1000          # fc / unet training steps
    batch: int = 64
    lr: float = 1e-3
    work_size: int = 76        # fc / unet: side of the grid the net works on (the reference work's 76)
    samples_per_set: Any = "exact"  # linear: "exact" (the noise's moments in closed form) or a sample count
    ridge: float = 1e-3
    samples: Any = ""          # kind "samples": .npy path, or {dataset label: path}


@dataclass
class ReportConfig:
    settings: Settings
    datasets: list
    models: list
    base_dir: Path
    raw: dict

    def model(self, kind: str) -> list:
        return [m for m in self.models if m.kind == kind]


def _err(where: str, key: str, value, want: str) -> ConfigError:
    return ConfigError(f"[{where}] {key} = {value!r}: {want}")


def _fill(obj, table: dict, where: str):
    known = {f.name: f for f in fields(obj) if f.name != "label"}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"[{where}] unknown key(s) {unknown}; known: {sorted(known)}")
    for key, value in table.items():
        default = getattr(obj, key)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise _err(where, key, value, "must be true or false")
        if isinstance(default, int) and not isinstance(default, bool) and (isinstance(value, bool) or not isinstance(value, int)):
            raise _err(where, key, value, "must be an integer")
        if isinstance(default, float) and (isinstance(value, bool) or not isinstance(value, (int, float))
                                           or not math.isfinite(value)):
            raise _err(where, key, value, "must be a number")
        if isinstance(default, str) and key not in ("checkpoint", "size", "samples", "samples_per_set") \
                and not isinstance(value, str):
            raise _err(where, key, value, "must be a string")
        if isinstance(default, list) and not isinstance(value, list):
            raise _err(where, key, value, "must be a list")
        setattr(obj, key, float(value) if isinstance(default, float) else value)
    return obj


def _positive(where, obj, *keys, lo=1):
    for k in keys:
        if getattr(obj, k) < lo:
            raise _err(where, k, getattr(obj, k), f"must be >= {lo}")


def _check_settings(s: Settings) -> None:
    w = "report"
    _positive(w, s, "threads", "T", "sets", "samples", "sample_batch", "sample_steps", "kid_subsets",
              "is_splits", "mse_samples", "chain_samples", "feature_epochs", "speed_batch", "speed_repeats")
    _positive(w, s, "seed", lo=0)
    if not 0 < s.beta_start <= s.beta_end < 1:
        raise ConfigError(f"[report] need 0 < beta_start <= beta_end < 1, got {s.beta_start}, {s.beta_end}")
    if s.sets > s.T:
        raise _err(w, "sets", s.sets, f"cannot split T = {s.T} steps into more sets")
    for m in s.metrics:
        if m not in METRICS:
            raise _err(w, "metrics", s.metrics, f"unknown metric {m!r}; known: {', '.join(METRICS)}")
    for f in s.features:
        if f not in FEATURE_SPACES:
            raise _err(w, "features", s.features, f"unknown feature space {f!r}; known: {', '.join(FEATURE_SPACES)} "
                       f"(Inception-v3: --inception-weights PATH)")
    if s.sampler not in ("ddpm", "ddim"):
        raise _err(w, "sampler", s.sampler, "must be 'ddpm' or 'ddim'")
    if s.sampler == "ddim" and s.sample_steps > s.T:
        raise _err(w, "sample_steps", s.sample_steps, f"DDIM steps must be <= T = {s.T}")
    if s.gpu_backend not in ("", "cuda", "cuda-emu"):
        raise _err(w, "gpu_backend", s.gpu_backend, "must be 'cuda', 'cuda-emu' or '' (no GPU row)")
    if s.chain_which not in ("x0", "xt"):
        raise _err(w, "chain_which", s.chain_which, "must be 'x0' (predicted x0) or 'xt' (the noisy state)")
    quality = {"fid", "kid", "is", "chain"} & set(s.metrics)
    if quality and not s.features and not s.inception_weights:
        raise _err(w, "features", s.features, f"metrics {sorted(quality)} need a feature space")
    if {"fid", "kid"} & set(s.metrics) and s.samples < 2:
        raise _err(w, "samples", s.samples, "FID and KID need at least 2 samples")
    if "is" in s.metrics and s.samples < s.is_splits:
        raise _err(w, "samples", s.samples, f"IS needs at least is_splits = {s.is_splits} samples")
    for k in s.sample_counts:
        if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= s.samples:
            raise _err(w, "sample_counts", s.sample_counts, f"must list sample counts in 2..samples = {s.samples}")
        if "is" in s.metrics and k < s.is_splits:
            raise _err(w, "sample_counts", s.sample_counts, f"IS needs at least is_splits = {s.is_splits} samples")
    if "chain" in s.metrics:
        if s.chain_samples < 2:
            raise _err(w, "chain_samples", s.chain_samples, "the FID along the chain needs at least 2 samples")
        bad = [t for t in s.chain_steps if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < s.T]
        if bad or not s.chain_steps:
            raise _err(w, "chain_steps", s.chain_steps, f"must list timesteps in 0..{s.T - 1}")


def _check_dataset(d: DatasetSpec, s: Settings) -> None:
    w = f"datasets.{d.label}"
    d.dataset = d.dataset or d.label
    if d.dataset not in KNOWN_DATASETS:
        raise _err(w, "dataset", d.dataset, f"unknown data set; known: {', '.join(KNOWN_DATASETS)}")
    _positive(w, d, "image_size", lo=4)
    _positive(w, d, "limit", lo=0)
    _positive(w, d, "held_out", lo=2)
    if d.split not in ("train", "test", "t10k", "all"):
        raise _err(w, "split", d.split, "must be train, test or all")
    if d.classes is not None and (not isinstance(d.classes, list) or not d.classes):
        raise _err(w, "classes", d.classes, "must be a non-empty list of labels or class names")
    if {"fid", "kid"} & set(s.metrics) and d.held_out < 2:
        raise _err(w, "held_out", d.held_out, "FID and KID need at least 2 real images")
    if d.reference not in REFERENCES:
        raise _err(w, "reference", d.reference, f"must be one of {', '.join(REFERENCES)}")


def _check_model(m: ModelSpec, datasets: list, has_odu: bool, raw: dict) -> None:
    w = f"models.{m.label}"
    m.kind = m.kind or m.label
    if m.kind not in MODEL_KINDS:
        raise _err(w, "kind", m.kind, f"unknown model; known: {', '.join(MODEL_KINDS)}")
    labels = [d.label for d in datasets]

    def per_dataset(key):
        v = getattr(m, key)
        if isinstance(v, str):
            if v and len(labels) > 1:
                raise _err(w, key, v, f"name one file per data set: {{{', '.join(f'{x} = ...' for x in labels)}}}")
            return {labels[0]: v} if v else {}
        if isinstance(v, dict):
            unknown = sorted(set(v) - set(labels))
            if unknown:
                raise _err(w, key, v, f"unknown data set label(s) {unknown}; the report's: {labels}")
            if not all(isinstance(p, str) and p for p in v.values()):
                raise _err(w, key, v, "paths must be non-empty strings")
            return dict(v)
        raise _err(w, key, v, "must be a path or a table {data set label = path}")

    m.checkpoint, m.samples = per_dataset("checkpoint"), per_dataset("samples")
    if m.kind == "odu":
        if bool(m.config) == bool(m.checkpoint):
            raise ConfigError(f"[{w}] an ODU needs either config = TOML to train from or checkpoint = a trained "
                              f"model (not both, not neither)")
        if not all(isinstance(o, str) and "=" in o for o in m.set):
            raise _err(w, "set", m.set, "must be a list of 'section.key=value' strings")
    if m.checkpoint and m.kind not in ("odu", "linear", "fc", "unet"):
        raise _err(w, "checkpoint", m.checkpoint, f"a model of kind {m.kind!r} has no checkpoint")
    if m.checkpoint and set(m.checkpoint) != set(labels):
        raise _err(w, "checkpoint", m.checkpoint, f"name a checkpoint for every data set: {labels}")
    if m.checkpoint and m.kind != "odu":
        given = sorted(set(TRAINING_KEYS[m.kind]) & set(raw))
        if given:
            raise ConfigError(f"[{w}] {given} say how to train the model, but checkpoint = ... loads one trained "
                              f"before: remove them (the checkpoint fixes the network)")
    if m.kind == "samples" and set(m.samples) != set(labels):
        raise _err(w, "samples", m.samples, f"name a .npy file of samples for every data set: {labels}")
    if m.kind in ("fc", "unet"):
        from ..evaluation.digital import TORCH_EXTRA, torch_available

        if not torch_available():
            raise ConfigError(f"[{w}] the {m.kind} baseline needs PyTorch: {TORCH_EXTRA}")
        if m.checkpoint:  # the checkpoint fixes the network: no size to check
            return
        if m.size not in ("reference", "matched") and (isinstance(m.size, bool) or not isinstance(m.size, int)
                                                        or m.size < 1):
            raise _err(w, "size", m.size, "must be 'reference', 'matched' or a positive parameter count")
        if m.size == "matched" and not has_odu:
            raise _err(w, "size", m.size, "'matched' needs an ODU model in the report (or give a parameter count)")
        _positive(w, m, "steps", lo=0)
        _positive(w, m, "batch")
        _positive(w, m, "work_size", lo=4)
        if m.kind == "unet" and m.work_size % 4:
            raise _err(w, "work_size", m.work_size, "must be divisible by 4 for the U-Net (two 2x2 poolings)")
        if not m.lr > 0:
            raise _err(w, "lr", m.lr, "must be > 0")
    if m.kind == "linear" and m.samples_per_set != "exact" and (
            isinstance(m.samples_per_set, bool) or not isinstance(m.samples_per_set, int) or m.samples_per_set < 2):
        raise _err(w, "samples_per_set", m.samples_per_set, "must be 'exact' or a sample count >= 2")


def load_report_config(path, inception_weights: str | None = None) -> ReportConfig:
    """Read and check a report TOML; relative paths in it are relative to its folder."""
    path = Path(path)
    raw = read_toml(path, "report configuration")
    unknown = sorted(set(raw) - {"report", "datasets", "models"})
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}; known: report, datasets, models")
    s = _fill(Settings(), raw.get("report", {}), "report")
    if inception_weights:  # from the command line: relative to the working folder
        s.inception_weights = str(Path(inception_weights).resolve())
    _check_settings(s)
    if not raw.get("datasets"):
        raise ConfigError(f"{path}: no [datasets.NAME] table: name at least one data set")
    if not raw.get("models"):
        raise ConfigError(f"{path}: no [models.NAME] table: name at least one model")
    for sec in ("datasets", "models"):
        if not isinstance(raw[sec], dict) or not all(isinstance(v, dict) for v in raw[sec].values()):
            raise ConfigError(f"{path}: [{sec}] must hold tables [{sec}.NAME]")
    datasets = [_fill(DatasetSpec(k), v, f"datasets.{k}") for k, v in raw["datasets"].items()]
    for d in datasets:
        _check_dataset(d, s)
    models = [_fill(ModelSpec(k), v, f"models.{k}") for k, v in raw["models"].items()]
    has_odu = any((v.get("kind") or k) == "odu" for k, v in raw["models"].items())
    for m in models:
        _check_model(m, datasets, has_odu, raw["models"][m.label])
    if len([m for m in models if m.kind == "odu"]) > 1 and any(m.size == "matched" for m in models):
        raise ConfigError(f"{path}: size = 'matched' is ambiguous with several ODU models; give parameter counts")
    base = path.resolve().parent
    for p in [s.inception_weights] + [d.features_checkpoint for d in datasets]:
        if p and not (base / p).is_file():
            raise ConfigError(f"{path}: file not found: {base / p}")
    for m in models:
        for p in list(m.checkpoint.values()) + list(m.samples.values()) + ([m.config] if m.config else []):
            if not (base / p).is_file():
                raise ConfigError(f"[models.{m.label}] file not found: {base / p}")
    cfg = ReportConfig(s, datasets, models, base, raw)
    _check_contents(cfg)
    if "cnn" in s.features:  # last: a mistake in the file is reported whether or not torch is here
        from ..evaluation.digital import TORCH_EXTRA, torch_available

        if not torch_available():
            raise ConfigError(f"[report] features = ['cnn'] needs PyTorch: {TORCH_EXTRA} (or use 'mlp')")
    return cfg


def _odu_run_config(m: ModelSpec, d: DatasetSpec, cfg: ReportConfig):
    """The run configuration of ODU ``m`` on data set ``d`` (its checkpoint's, or the one to train)."""
    from ..config import Config, load_config
    from ..diffusion.checkpoint import load_checkpoint

    w = f"models.{m.label}"
    if m.checkpoint:
        path = cfg.base_dir / m.checkpoint[d.label]
        header, _, _ = load_checkpoint(path)  # CheckpointError (a ValueError) for a damaged file
        if "run" not in header:
            raise ConfigError(f"[{w}] {path}: not an ODU checkpoint (no run configuration)")
        run = Config.from_dict(header["run"])
        if run.model.image_size != d.image_size:
            raise ConfigError(f"[{w}] {path}: the ODU works on {run.model.image_size}x{run.model.image_size} images, "
                              f"data set {d.label!r} is {d.image_size}x{d.image_size}")
        s, dif = cfg.settings, run.diffusion
        if (dif.T, dif.schedule) != (s.T, "linear") or abs(dif.beta_start - s.beta_start) > 1e-12 \
                or abs(dif.beta_end - s.beta_end) > 1e-12:
            raise ConfigError(f"[{w}] {path}: trained with T={dif.T}, {dif.schedule} betas {dif.beta_start}.."
                              f"{dif.beta_end}; the report uses T={s.T}, linear {s.beta_start}..{s.beta_end}")
        return run
    return load_config(cfg.base_dir / m.config, list(m.set) + [f"model.image_size={d.image_size}", f"diffusion.T={cfg.settings.T}"])


def _check_contents(cfg: ReportConfig) -> None:
    """What the files a report names hold: ODU sizes and schedules, feature networks' data sets,
    sample arrays' shapes and ranges, and whether the digital nets can match the ODU's size."""
    import numpy as np

    from ..diffusion.checkpoint import load_checkpoint
    from .metrics import check_samples

    s = cfg.settings
    for d in cfg.datasets:
        if d.features_checkpoint:
            path = cfg.base_dir / d.features_checkpoint
            head = load_checkpoint(path)[0]
            if head.get("format") != "optdiff-feature-cnn":
                raise ConfigError(f"[datasets.{d.label}] features_checkpoint {path}: not a CNN feature network")
            if head.get("dataset") != d.dataset or head.get("image_size") != d.image_size:
                raise ConfigError(f"[datasets.{d.label}] features_checkpoint {path}: the feature network was trained "
                                  f"on {head.get('dataset')!r} at {head.get('image_size')}x{head.get('image_size')}, "
                                  f"not on {d.dataset!r} at {d.image_size}x{d.image_size}")
        odu_params = None
        for m in cfg.models:
            if m.kind == "odu":
                run = _odu_run_config(m, d, cfg)
                odu_params = run.model.sets * run.optics.layers * run.optics.n ** 2
            if m.kind == "samples":
                path = cfg.base_dir / m.samples[d.label]
                try:
                    x = np.load(path, allow_pickle=False)
                except (ValueError, OSError) as exc:
                    raise ConfigError(f"[models.{m.label}] {path}: not a readable .npy file ({exc})") from None
                try:
                    check_samples(x, d.image_size, what=f"[models.{m.label}] samples {path}", min_count=s.samples)
                except ValueError as exc:
                    raise ConfigError(str(exc)) from None
        for m in cfg.models:
            if m.checkpoint and m.kind in ("linear", "fc", "unet"):
                _check_trained(m, d, cfg)
            elif m.kind in ("fc", "unet") and m.size != "reference":
                from .digital.nets import match_width

                try:
                    match_width(m.kind, odu_params if m.size == "matched" else m.size, work_size=m.work_size)
                except ValueError as exc:
                    raise ConfigError(f"[models.{m.label}] size = {m.size!r}: {exc}") from None


def _check_trained(m: ModelSpec, d: DatasetSpec, cfg: ReportConfig) -> None:
    """A linear / FC / U-Net checkpoint given to the report: its kind, image size and (when the file
    records it) noise schedule must be the report's."""
    from ..diffusion.checkpoint import load_checkpoint

    w, s = f"models.{m.label}", cfg.settings
    path = cfg.base_dir / m.checkpoint[d.label]
    head, arrays, meta = load_checkpoint(path)  # CheckpointError (a ValueError) for a damaged file
    if m.kind == "linear":
        if head.get("format") != "optdiff-linear-denoiser":
            raise ConfigError(f"[{w}] {path}: not a linear denoiser checkpoint (format {head.get('format')!r})")
        size = tuple(int(v) for v in arrays["image_shape"])
        if size != (d.image_size, d.image_size):
            raise ConfigError(f"[{w}] {path}: the linear denoiser works on {size[0]}x{size[1]} images, data set "
                              f"{d.label!r} is {d.image_size}x{d.image_size}")
        sched = {"T": head.get("T"), **{k: head[k] for k in ("beta_start", "beta_end") if k in head}}
    else:
        if head.get("format") != "optdiff-digital-denoiser" or head.get("kind") != m.kind:
            raise ConfigError(f"[{w}] {path}: not a {m.kind} checkpoint (format {head.get('format')!r}, kind "
                              f"{head.get('kind')!r})")
        if head.get("image_size") != d.image_size:
            raise ConfigError(f"[{w}] {path}: the {m.kind} works on {head.get('image_size')}x{head.get('image_size')} "
                              f"images, data set {d.label!r} is {d.image_size}x{d.image_size}")
        sched = meta.get("schedule") or {}
    want = {"T": s.T, "beta_start": s.beta_start, "beta_end": s.beta_end}
    bad = {k: v for k, v in sched.items() if v is not None and abs(float(v) - want[k]) > 1e-12}
    if bad:
        raise ConfigError(f"[{w}] {path}: trained with {bad}; the report uses T={s.T}, linear betas "
                          f"{s.beta_start}..{s.beta_end}")
