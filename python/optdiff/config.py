"""Configuration of an optical diffusion model run: dataclasses, TOML loading, validation.

A run is described by one :class:`Config` made of five sections, each a dataclass and each a
table in a TOML file (every key optional; missing keys take the defaults below)::

    [optics]      # the physical optical denoising unit (ODU), SI units (metres, radians)
    n = 100                 # modulator / camera pixels per side (N); the reference work used 300
    layers = 4              # phase layers L
    wavelength = 850e-9
    pitch = 9.2e-6
    distance = 34.2e-3      # between layers (a mirror 17.1 mm from the SLM: 2 x 17.1 mm)
    ...
    [model]       # time-aware policy: M layer sets, digital read-out
    [diffusion]   # DDPM schedule
    [data]        # data set
    [train]       # optimiser, batches, logging, checkpoints
    [sample]      # sampler

:func:`load_config` reads a TOML file (``tomllib``), :func:`Config.from_dict` builds from a dict,
:meth:`Config.to_dict` gives the JSON/TOML-friendly dict stored in checkpoints,
:func:`apply_overrides` applies ``section.key=value`` strings (the CLI's ``--set``).
Every value is checked by :meth:`Config.validate`; a bad value raises :class:`ConfigError`
(a ``ValueError``) naming the section, the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

__all__ = [
    "ConfigError", "OpticsConfig", "ModelConfig", "DiffusionConfig", "DataConfig",
    "TrainConfig", "SampleConfig", "Config", "load_config", "apply_overrides", "config_to_toml",
    "ENCODINGS", "READOUTS", "SKIPS", "INITS", "TARGETS",
]

ENCODINGS = ("amplitude", "phase", "complex")
READOUTS = ("scalar", "pixel", "subpixel")
SKIPS = ("none", "scalar", "pixel")
INITS = ("imaging", "relay", "4f", "lens", "zero", "random")
TARGETS = ("eps", "x0")


class ConfigError(ValueError):
    """A configuration value has the wrong type, shape or range (message says which and why)."""


def _err(section: str, key: str, value: Any, want: str) -> ConfigError:
    return ConfigError(f"[{section}] {key} = {value!r}: {want}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    try:
        return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(float(v))
    except OverflowError:  # an integer beyond float's range
        return False


_COUNT_MAX = (1 << 31) - 1   # bound of every count without its own (steps, batches, limits, ...)
_SEED_MAX = (1 << 63) - 1    # seeds: any int64 (what TOML and JSON readers everywhere take)


def _check_int(sec, key, v, lo=None, hi=_COUNT_MAX):
    if not _is_int(v):
        raise _err(sec, key, v, "must be an integer")
    if lo is not None and v < lo:
        raise _err(sec, key, v, f"must be >= {lo}")
    if hi is not None and v > hi:
        raise _err(sec, key, v, f"must be <= {hi}")


def _check_num(sec, key, v, lo=None, hi=None, lo_open=False):
    if not _is_num(v):
        raise _err(sec, key, v, "must be a finite number")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise _err(sec, key, v, f"must be {'>' if lo_open else '>='} {lo}")
    if hi is not None and v > hi:
        raise _err(sec, key, v, f"must be <= {hi}")


def _check_choice(sec, key, v, choices):
    if v not in choices:
        raise _err(sec, key, v, f"must be one of {', '.join(map(repr, choices))}")


@dataclass
class OpticsConfig:
    """The physical ODU. Geometry defaults follow Oguz et al. (4 layers, 9.2 um, 850 nm, 34.2 mm).

    ``n`` is smaller than the reference work's 300 by default so that a run fits on 2 CPU cores;
    ``upsample`` (k) modulator pixels per image pixel per side (0 = the largest k with
    ``k * image_size <= fill * n``). ``encoding``: how the image is written on the input field
    (``amplitude``: a = clip(amp_bias + amp_scale * r, 0, 1), what an amplitude-only modulator shows;
    ``phase``: exp(i * phase_scale * r), what a phase-only modulator shows; ``complex``:
    a = amp_bias + amp_scale * r unclipped, may be negative (needs a complex modulator)).
    ``init``: starting phases (``imaging``: lenses that relay the input onto the camera,
    ``4f``: a 4f system with the Fourier plane on layer 2, ``zero``: free space, ``random``);
    ``init_noise``: std of random phases added (radians). ``camera_flip``: rotate the binned
    camera image by 180 degrees (``"auto"``: when the initial optics invert the image).
    """

    n: int = 128
    layers: int = 4
    wavelength: float = 850e-9
    pitch: float = 9.2e-6
    distance: float = 34.2e-3
    camera_distance: float = 0.0        # hop from the last layer to the camera; 0 = same as distance
    input_distance: float = 0.0         # hop from the input modulator to layer 0; 0 = none
    method: str = "as"
    padding: int = 2
    upsample: int = 0
    fill: float = 0.8
    encoding: str = "amplitude"
    amp_bias: float = 0.25
    amp_scale: float = 0.125
    phase_scale: float = 0.5
    camera_flip: Any = "auto"
    init: str = "imaging"
    init_noise: float = 0.3
    init_noise_corr: float = 0.0

    def validate(self, image_size: int) -> None:
        s = "optics"
        _check_int("model", "image_size", image_size, 2, 1024)
        _check_int(s, "n", self.n, 4, 4096)
        _check_int(s, "layers", self.layers, 1, 64)
        _check_num(s, "wavelength", self.wavelength, 1e-8, 1e-4)
        _check_num(s, "pitch", self.pitch, 1e-8, 1e-2)
        if self.pitch <= self.wavelength / 2:
            raise _err(s, "pitch", self.pitch, f"must exceed half the wavelength ({self.wavelength / 2:g} m)")
        _check_num(s, "distance", self.distance, 0.0, 10.0, lo_open=True)
        _check_num(s, "camera_distance", self.camera_distance, 0.0, 10.0)
        _check_num(s, "input_distance", self.input_distance, 0.0, 10.0)
        _check_choice(s, "method", self.method, ("as", "bl-as", "fresnel"))
        if self.padding not in (1, 2) or isinstance(self.padding, bool):
            raise _err(s, "padding", self.padding, "must be 1 (periodic) or 2 (linear convolution)")
        _check_int(s, "upsample", self.upsample, 0, 4096)
        _check_num(s, "fill", self.fill, 0.0, 1.0, lo_open=True)
        _check_choice(s, "encoding", self.encoding, ENCODINGS)
        _check_num(s, "amp_bias", self.amp_bias, -10.0, 10.0)
        _check_num(s, "amp_scale", self.amp_scale, 0.0, 10.0, lo_open=True)
        _check_num(s, "phase_scale", self.phase_scale, 0.0, 10.0, lo_open=True)
        if not (isinstance(self.camera_flip, bool) or self.camera_flip == "auto"):
            raise _err(s, "camera_flip", self.camera_flip, 'must be true, false or "auto"')
        _check_choice(s, "init", self.init, INITS)
        if self.init in ("relay", "4f") and self.layers < 4:
            raise _err(s, "init", self.init, f"needs at least 4 layers (layers = {self.layers})")
        _check_num(s, "init_noise", self.init_noise, 0.0, 100.0)
        _check_num(s, "init_noise_corr", self.init_noise_corr, 0.0, 1000.0)
        k = self.pixels_per_image_pixel(image_size)
        if k < 1 or k * image_size > self.n:
            raise ConfigError(
                f"[optics] upsample = {self.upsample}: the image ({image_size} x {image_size} pixels, "
                f"{k} modulator pixels each) does not fit on the {self.n} x {self.n} modulator; "
                f"use n >= {image_size * max(k, 1)} or a smaller upsample")

    def pixels_per_image_pixel(self, image_size: int) -> int:
        """k: modulator pixels per image pixel (per side)."""
        if self.upsample:
            return int(self.upsample)
        return max(int(self.fill * self.n) // int(image_size), 1)

    @property
    def camera_hop(self) -> float:
        return float(self.camera_distance) if self.camera_distance > 0 else float(self.distance)


@dataclass
class ModelConfig:
    """Time-aware policy: ``sets`` (M) consecutive timestep sets, each with its own phase layers
    and digital read-out ``eps = scale * I + offset (+ skip * r_t)``; no timestep input.

    ``readout``: ``pixel`` (a scale and offset per binned camera pixel and set), ``scalar`` (one
    each per set) or ``subpixel`` (a signed gain per unbinned camera pixel before binning and an
    offset per binned pixel: each output reads a weighted sum of its k x k camera pixels, so its
    quadratic form in r_t can be indefinite, as with differential detection). ``skip``: optional
    digital term ``c * r_t`` (``none``, ``scalar``, ``pixel``).
    ``x0_sets``: list of sets whose read-out predicts x0, converted digitally to
    eps = (r_t - sqrt(abar_t) x0) / sqrt(1 - abar_t) with the known timestep (measured: better
    for sets 1-2, worse for set 0 whose noise level spans 0.01..0.3); ``"auto"`` = every set
    but set 0 that ends by t = 0.3 T (sets 1 and 2 for T = 1000, M = 10).
    """

    image_size: int = 20
    sets: int = 10
    readout: str = "subpixel"
    skip: str = "pixel"
    x0_sets: Any = "auto"

    def x0_set_list(self, T: int) -> list:
        """The x0-predicting sets (``"auto"`` resolved for ``T`` steps)."""
        if self.x0_sets != "auto":
            return sorted(int(v) for v in self.x0_sets)
        q, r = divmod(T, self.sets)
        out, start = [], 0
        for m in range(self.sets):
            stop = start + q + (1 if m < r else 0)
            if m >= 1 and stop <= 0.3 * T:
                out.append(m)
            start = stop
        return out

    def validate(self) -> None:
        s = "model"
        _check_int(s, "image_size", self.image_size, 2, 1024)
        _check_int(s, "sets", self.sets, 1, 100000)
        _check_choice(s, "readout", self.readout, READOUTS)
        _check_choice(s, "skip", self.skip, SKIPS)
        if self.x0_sets == "auto":
            return
        if not isinstance(self.x0_sets, (list, tuple)) or not all(
                _is_int(v) and 0 <= v < self.sets for v in self.x0_sets):
            raise _err(s, "x0_sets", self.x0_sets, f"must be a list of set indices in 0..{self.sets - 1}")


@dataclass
class DiffusionConfig:
    """DDPM noise schedule (Ho et al. 2020): linear betas 1e-4 .. 0.02 over T = 1000 steps."""

    T: int = 1000
    schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def validate(self, sets: int) -> None:
        s = "diffusion"
        _check_int(s, "T", self.T, 1, 100000)
        _check_choice(s, "schedule", self.schedule, ("linear", "cosine"))
        _check_num(s, "beta_start", self.beta_start, 0.0, 1.0, lo_open=True)
        _check_num(s, "beta_end", self.beta_end, 0.0, 1.0, lo_open=True)
        if self.beta_end < self.beta_start or self.beta_end >= 1.0:
            raise ConfigError(f"[diffusion] need beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if sets > self.T:
            raise ConfigError(f"[model] sets = {sets}: cannot split T = {self.T} timesteps into more sets than steps")


@dataclass
class DataConfig:
    """Training data (see :func:`optdiff.data.load_dataset`); ``val_count`` held-out images."""

    dataset: str = "digits"
    data_dir: str = ""
    split: str = "train"
    classes: list | None = None
    limit: int = 0
    val_count: int = 256

    def validate(self) -> None:
        s = "data"
        _check_choice(s, "dataset", self.dataset, ("digits", "fashion-mnist", "mnist", "quickdraw", "folder", "npy"))
        if not isinstance(self.data_dir, str):
            raise _err(s, "data_dir", self.data_dir, "must be a string (a folder)")
        _check_choice(s, "split", self.split, ("train", "test", "t10k", "all"))
        if self.classes is not None:
            if not isinstance(self.classes, (list, tuple)) or not self.classes or not all(
                    _is_int(c) or isinstance(c, str) for c in self.classes):
                raise _err(s, "classes", self.classes, "must be a non-empty list of labels or class names")
            if self.dataset == "npy":
                raise _err(s, "classes", self.classes, 'has no meaning for dataset = "npy" (no labels)')
        _check_int(s, "limit", self.limit, 0)
        _check_int(s, "val_count", self.val_count, 1)


@dataclass
class TrainConfig:
    """Optimiser and bookkeeping. ``steps`` is per set (total = steps * sets).

    ``order``: ``interleaved`` (round robin over the sets) or ``sequential`` (set 0 .. M-1).
    ``lr_schedule``: ``cosine`` (decay to ``lr_min_factor * lr`` over each set's steps after
    ``warmup`` steps) or ``constant``. ``set_weights``: per-set loss weights (empty = all 1).
    ``threads`` and ``backend`` say where the work runs, not what is computed: a checkpoint made
    on one backend loads on any other.
    ``distill_steps`` (0 = off): a distillation start. Before the noise loss, every set's
    phases and read-out take this many Adam steps (rate ``lr``, constant) towards the prediction
    of the least-squares linear denoiser of that set on noised training images: a target
    without the noise's variance, which the optics then refine on the noise loss.
    """

    steps: int = 1000
    batch: int = 32
    lr: float = 3e-2
    readout_lr: float = 6e-3
    lr_schedule: str = "cosine"
    lr_min_factor: float = 0.05
    warmup: int = 10
    order: str = "interleaved"
    beta1: float = 0.9
    beta2: float = 0.999
    seed: int = 0
    val_every: int = 100
    val_batch: int = 128
    ckpt_every: int = 200
    calibrate: bool = True
    set_weights: list = field(default_factory=list)
    threads: int = 2
    progress: bool = True
    backend: str = "cpu"  # where the optics run: "cpu", "cuda" (a GPU), "cuda-emu" (tests)
    distill_steps: int = 0  # per set, before the noise loss: fit the linear denoiser's prediction

    def validate(self, sets: int) -> None:
        s = "train"
        _check_int(s, "steps", self.steps, 0)
        _check_int(s, "batch", self.batch, 1, 1 << 16)
        _check_num(s, "lr", self.lr, 0.0, 10.0, lo_open=True)
        _check_num(s, "readout_lr", self.readout_lr, 0.0, 10.0)
        _check_choice(s, "lr_schedule", self.lr_schedule, ("cosine", "constant"))
        _check_num(s, "lr_min_factor", self.lr_min_factor, 0.0, 1.0)
        _check_int(s, "warmup", self.warmup, 0)
        _check_choice(s, "order", self.order, ("interleaved", "sequential"))
        _check_num(s, "beta1", self.beta1, 0.0, 0.999999)
        _check_num(s, "beta2", self.beta2, 0.0, 0.99999999)
        _check_int(s, "seed", self.seed, 0, _SEED_MAX)
        _check_int(s, "val_every", self.val_every, 0)
        _check_int(s, "val_batch", self.val_batch, 1)
        _check_int(s, "ckpt_every", self.ckpt_every, 0)
        if not isinstance(self.calibrate, bool):
            raise _err(s, "calibrate", self.calibrate, "must be true or false")
        if not isinstance(self.set_weights, (list, tuple)):
            raise _err(s, "set_weights", self.set_weights, "must be a list of numbers")
        if self.set_weights:
            if len(self.set_weights) != sets:
                raise _err(s, "set_weights", self.set_weights, f"must list one weight per set ({sets})")
            for w in self.set_weights:
                if not _is_num(w) or w <= 0:
                    raise _err(s, "set_weights", self.set_weights, "weights must be positive finite numbers")
        _check_int(s, "threads", self.threads, 1, 1024)
        if not isinstance(self.progress, bool):
            raise _err(s, "progress", self.progress, "must be true or false")
        _check_choice(s, "backend", self.backend, ("cpu", "cuda", "cuda-emu"))
        _check_int(s, "distill_steps", self.distill_steps, 0)


@dataclass
class SampleConfig:
    """Sampler: ``ddpm`` (ancestral, T calls) or ``ddim`` (``steps`` calls, ``eta``)."""

    sampler: str = "ddpm"
    steps: int = 100
    eta: float = 0.0
    count: int = 64
    batch: int = 64
    clip_x0: bool = True
    seed: int = 0

    def validate(self, T: int) -> None:
        s = "sample"
        _check_choice(s, "sampler", self.sampler, ("ddpm", "ddim"))
        _check_int(s, "steps", self.steps, 1, T if self.sampler == "ddim" else _COUNT_MAX)
        _check_num(s, "eta", self.eta, 0.0, 10.0)
        _check_int(s, "count", self.count, 1)
        _check_int(s, "batch", self.batch, 1)
        if not isinstance(self.clip_x0, bool):
            raise _err(s, "clip_x0", self.clip_x0, "must be true or false")
        _check_int(s, "seed", self.seed, 0, _SEED_MAX)


#: Tables a run file may hold that other modules own and validate: ``[bench]`` is the bench's
#: design (optdiff.hardware.config), read by the hardware training modes and ``optdiff calibrate``.
#: They are not part of a model's configuration (nor of its checkpoint).
EXTERNAL_SECTIONS = ("bench",)

_SECTIONS = {
    "optics": OpticsConfig, "model": ModelConfig, "diffusion": DiffusionConfig,
    "data": DataConfig, "train": TrainConfig, "sample": SampleConfig,
}


@dataclass
class Config:
    optics: OpticsConfig = field(default_factory=OpticsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def validate(self) -> Config:
        self.model.validate()
        self.optics.validate(self.model.image_size)
        self.diffusion.validate(self.model.sets)
        self.data.validate()
        self.train.validate(self.model.sets)
        self.sample.validate(self.diffusion.T)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], validate: bool = True) -> Config:
        if not isinstance(d, Mapping):
            raise ConfigError(f"configuration must be a table/dict, got {type(d).__name__}")
        unknown = set(d) - set(_SECTIONS) - set(EXTERNAL_SECTIONS)
        if unknown:
            raise ConfigError(f"unknown configuration section(s) {sorted(unknown)}; known: {sorted(_SECTIONS)}")
        parts = {}
        for name, klass in _SECTIONS.items():
            sec = d.get(name, {})
            if not isinstance(sec, Mapping):
                raise ConfigError(f"[{name}] must be a table, got {sec!r}")
            parts[name] = _build_section(name, klass, sec)
        cfg = cls(**parts)
        return cfg.validate() if validate else cfg

    def model_signature(self) -> dict:
        """What a checkpoint must match to be loaded into this model (shapes and physics)."""
        o, m = self.optics, self.model
        return {"n": o.n, "layers": o.layers, "sets": m.sets, "image_size": m.image_size,
                "wavelength": o.wavelength, "pitch": o.pitch, "distance": o.distance,
                "readout": m.readout, "skip": m.skip, "x0_sets": m.x0_set_list(self.diffusion.T)}


def _build_section(name: str, klass, sec: Mapping[str, Any]):
    fields = {f.name: f for f in dataclasses.fields(klass)}
    unknown = set(sec) - set(fields)
    if unknown:
        raise ConfigError(f"[{name}] unknown key(s) {sorted(unknown)}; known: {sorted(fields)}")
    kwargs = {}
    defaults = klass()
    for key, value in sec.items():
        default = getattr(defaults, key)
        # TOML integers are fine where floats are expected
        if isinstance(default, float) and _is_int(value) and _is_num(value):
            value = float(value)
        if isinstance(default, list) and isinstance(value, tuple):
            value = list(value)
        if key == "classes" and value is not None and not isinstance(value, (list, tuple)):
            raise _err(name, key, value, "must be a list of labels or class names")
        if default is not None and key not in ("classes", "camera_flip", "x0_sets") and not isinstance(value, type(default)) and not (
                isinstance(default, float) and _is_num(value)):
            raise _err(name, key, value, f"must be of type {type(default).__name__}")
        kwargs[key] = value
    return klass(**kwargs)


def read_toml(path: str | os.PathLike, what: str = "config file") -> dict:
    """A TOML file as a dict; ConfigError naming the file when it is missing or not TOML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def load_config(path: str | os.PathLike, overrides: Sequence[str] = (), validate: bool = True) -> Config:
    """Read a TOML config file, apply ``section.key=value`` overrides, validate."""
    d = read_toml(path)
    try:
        return Config.from_dict(apply_overrides(d, overrides), validate=validate)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string


def apply_overrides(d: Mapping[str, Any], overrides: Sequence[str]) -> dict:
    """Return a copy of ``d`` with each ``section.key=value`` applied (value parsed as TOML)."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"configuration must be a table/dict, got {type(d).__name__}")
    if isinstance(overrides, (str, bytes)) or not hasattr(overrides, "__iter__"):
        raise ConfigError(f"overrides must be a list of 'section.key=value' strings, got {overrides!r}")
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in d.items()}
    for item in overrides:
        if not isinstance(item, str):
            raise ConfigError(f"override {item!r} must be a string 'section.key=value'")
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. optics.n=120)")
        lhs, rhs = item.split("=", 1)
        section, key = lhs.strip().split(".", 1)
        if section not in _SECTIONS:
            raise ConfigError(f"override {item!r}: unknown section {section!r}; known: {sorted(_SECTIONS)}")
        out.setdefault(section, {})
        if not isinstance(out[section], dict):
            raise ConfigError(f"[{section}] must be a table")
        out[section][key.strip()] = _parse_value(rhs.strip())
    return out


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        return repr(float(v))  # numpy numbers too: repr(np.float64(1)) is 'np.float64(1.0)', not TOML
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def config_to_toml(cfg: Config) -> str:
    """A TOML text that :func:`load_config` reads back to ``cfg`` (``None`` values are omitted)."""
    lines = []
    for name, sec in cfg.to_dict().items():
        lines.append(f"[{name}]")
        for k, v in sec.items():
            if v is not None:
                lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    return "\n".join(lines)
