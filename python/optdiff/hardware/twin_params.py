"""The digital twin's physical parameters: what calibration fits and online training refines.

============== ======== ================================================================
name           shape    meaning (units)
============== ======== ================================================================
z_gap          []       mirror to SLM (m); hops 2 z_gap
mirror_angle   [2]      mirror tilt x, y (rad); the beam turns by twice it per bounce
beam_angle     [2]      input beam x, y (rad)
patch_offsets  [L, 2]   registration of each patch pattern x, y (m)
dmd_offset     [2]      relayed DMD image on the SLM x, y (m)
camera_offset  [2]      camera relay axis x, y (m)
phase_scale    []       true / nominal phase range of the SLM's LUT
lut_curvature  []       nonlinearity of the LUT (``SLM.lut_curvature``)
crosstalk      []       fringing width, Gaussian std in SLM pixels
gain           []       DN per photo-electron
dark_level     []       DN
============== ======== ================================================================

Each has a *scale* (its typical error, the unit of the optimiser's normalised coordinates and of
the calibration prior): the lab's tolerances, defaults those of :class:`HiddenErrors`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import BenchConfig

__all__ = ["TwinParams", "PARAM_NAMES", "DEFAULT_SCALES"]

PARAM_NAMES = ("z_gap", "mirror_angle", "beam_angle", "patch_offsets", "dmd_offset", "camera_offset",
               "phase_scale", "lut_curvature", "crosstalk", "gain", "dark_level")
GEOMETRY = ("z_gap", "mirror_angle", "beam_angle", "patch_offsets")

#: typical error of each parameter (absolute units; z_gap and gain relative to their value)
DEFAULT_SCALES = {"z_gap": 0.02, "mirror_angle": 0.5e-3, "beam_angle": 1.5e-3, "patch_offsets": 10e-6,
                  "dmd_offset": 5e-6, "camera_offset": 20e-6, "phase_scale": 0.03, "lut_curvature": 0.1,
                  "crosstalk": 0.05, "gain": 0.05, "dark_level": 3.0}
RELATIVE = ("z_gap", "gain")


@dataclass(frozen=True)
class TwinParams:
    """One value of every twin parameter (arrays as tuples; see the module docstring)."""

    z_gap: float
    mirror_angle: tuple
    beam_angle: tuple
    patch_offsets: tuple
    dmd_offset: tuple
    camera_offset: tuple
    phase_scale: float
    lut_curvature: float
    crosstalk: float
    gain: float
    dark_level: float

    @classmethod
    def from_config(cls, cfg: BenchConfig, layers: int) -> TwinParams:
        """The parameters a bench configuration stands for (the nominal one: the twin's start)."""
        f, s, c = cfg.fold, cfg.slm, cfg.camera
        offs = f.patch_offsets if f.patch_offsets else ((0.0, 0.0),) * layers
        if s.lut is not None:
            raise ValueError("the twin models the LUT as phase_scale and lut_curvature; an explicit SLM.lut "
                             "is not supported")
        return cls(f.z_gap, tuple(f.mirror_angle), tuple(f.beam_angle), tuple(map(tuple, offs)),
                   tuple(cfg.dmd.offset), tuple(c.offset), s.phase_scale, s.lut_curvature, s.crosstalk,
                   c.dn_per_electron, c.dark_level)

    def to_config(self, nominal: BenchConfig, pitch: float) -> BenchConfig:
        """``nominal`` with these values (fold angle fixed at the nominal design angle, lattice frame)."""
        return nominal.replace(
            fold=dict(z_gap=self.z_gap, mirror_angle=self.mirror_angle, beam_angle=self.beam_angle,
                      patch_offsets=self.patch_offsets, fold_angle=nominal.fold.design_angle(pitch),
                      frame="lattice", mirror_planes=False),
            slm=dict(phase_scale=self.phase_scale, lut_curvature=self.lut_curvature, crosstalk=self.crosstalk),
            dmd=dict(offset=self.dmd_offset),
            camera=dict(gain=self.gain, dark_level=self.dark_level, offset=self.camera_offset))

    def replace(self, **kw) -> TwinParams:
        return dataclasses.replace(self, **{k: _plain(v) for k, v in kw.items()})

    def array(self, name: str) -> np.ndarray:
        return np.asarray(getattr(self, name), dtype=np.float64)

    def geometry_vector(self) -> np.ndarray:
        """``[z_gap, mirror x, y, beam x, y, offsets...]`` (see :mod:`.twin_geometry`)."""
        return np.concatenate([[self.z_gap], self.array("mirror_angle"), self.array("beam_angle"),
                               self.array("patch_offsets").reshape(-1)])

    def vector(self, names) -> np.ndarray:
        return np.concatenate([self.array(n).reshape(-1) for n in names])

    def with_vector(self, names, v) -> TwinParams:
        v = np.asarray(v, dtype=np.float64)
        kw, i = {}, 0
        for n in names:
            shape = self.array(n).shape
            size = int(np.prod(shape))
            kw[n] = v[i:i + size].reshape(shape)
            i += size
        if i != v.size:
            raise ValueError(f"vector of {v.size} values for parameters of {i}")
        return self.replace(**kw)

    def scales(self, names, scales: dict | None = None) -> np.ndarray:
        """The typical error of every entry of :meth:`vector` (absolute units)."""
        s = dict(DEFAULT_SCALES, **(scales or {}))
        out = []
        for n in names:
            v = s[n] * (abs(getattr(self, n)) if n in RELATIVE else 1.0)
            out.append(np.full(self.array(n).size, float(v)))
        return np.concatenate(out)

    def to_dict(self) -> dict:
        return {k: _jsonable(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> TwinParams:
        missing = set(PARAM_NAMES) - set(d)
        if missing:
            raise ValueError(f"twin parameters: missing {sorted(missing)}")
        return cls(**{k: _plain(d[k]) for k in PARAM_NAMES})

    def save(self, path, extra: dict | None = None) -> Path:
        """Write ``{"twin_params": ..., **extra}`` as JSON (a temporary name, then renamed)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"twin_params": self.to_dict(), **(extra or {})}, indent=2) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path) -> TwinParams:
        with open(path) as f:
            d = json.load(f)
        return cls.from_dict(d.get("twin_params", d))

    def size(self, names) -> int:
        return sum(self.array(n).size for n in names)


def _plain(v):
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, list):
        return tuple(_plain(x) for x in v)
    if isinstance(v, tuple):
        return tuple(_plain(x) for x in v)
    if isinstance(v, np.generic):
        return v.item()
    return float(v)


def _jsonable(v):
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return v
