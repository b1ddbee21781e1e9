"""Known patch registration: re-express a fitted fold with the patches where the lab put them.

The four patches are regions of one SLM, so where each pattern sits relative to the others is a
pixel index the lab chooses. What the frames fix is where the light crosses each pattern (and
where it reaches the camera); with per-patch offsets free, a beam angle and the offsets that
follow its walk give the same frames, so the angles come out only as well as the offsets'
prior. With the registration known, the walk between patches *is* the angles.

Calibration uses both (``calibrate_device(..., registration="known")``): the coarse stages fit
with the offsets free, which lets the walk move without climbing out of a basin (a flexible
model finds the landing points from far away), then :func:`register` finds the angles and the
DMD and camera offsets that put the light at the same places with the offsets at their known
values, and the fine stages go on from there with the offsets fixed.
"""

from __future__ import annotations

import numpy as np

from .twin_geometry import fold_geometry
from .twin_params import TwinParams

__all__ = ["light_positions", "register"]

SOLVED = ("mirror_angle", "beam_angle", "dmd_offset", "camera_offset")


def light_positions(twin, params: TwinParams) -> np.ndarray:
    """``[L + 1, 2]`` (metres): where the relayed DMD image's centre crosses each patch pattern
    (in that pattern's frame), and, last, where it reaches the camera plane relative to the
    camera's axis: everything of the fold's geometry that the frames depend on."""
    g = fold_geometry(params.geometry_vector(), layers=twin.L, pitch=twin.pitch,
                      patch_pitch=twin.nominal.fold.patch_pitch, fold_angle=twin.fold_angle,
                      camera_hop=twin.nominal.fold.camera_hop)
    start = np.asarray(params.dmd_offset) + g.landing[0]      # the input's shift on patch 0's pattern
    q = start + g.landing - g.landing[0]                      # the lattice frame: tilts carry the differences
    q[-1] -= np.asarray(params.camera_offset)
    return q


def register(twin, params: TwinParams, offsets=None) -> TwinParams:
    """``params`` with the patch offsets set to ``offsets`` (default: the twin's nominal ones)
    and the mirror and beam angles and the DMD and camera offsets chosen (least squares, in
    units of their tolerances) so that the light crosses every pattern and reaches the camera
    where it did with ``params``. Gap and everything else unchanged."""
    from scipy.optimize import least_squares

    if offsets is None:
        offsets = TwinParams.from_config(twin.nominal, twin.L).patch_offsets
    base = params.replace(patch_offsets=np.asarray(offsets, dtype=np.float64).reshape(twin.L, 2))
    target = light_positions(twin, params)
    scales = base.scales(SOLVED)

    def residual(x):
        p = base.with_vector(SOLVED, x * scales)
        return ((light_positions(twin, p) - target) / twin.pitch).reshape(-1)   # in SLM pixels

    res = least_squares(residual, base.vector(SOLVED) / scales, xtol=1e-12, ftol=1e-12, gtol=1e-12)
    return base.with_vector(SOLVED, res.x * scales)
