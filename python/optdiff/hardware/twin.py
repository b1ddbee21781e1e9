"""The digital twin: a differentiable model of the bench whose physical parameters
(:class:`TwinParams`: gap, mirror and beam angles, patch, DMD and camera offsets, the SLM's LUT and
fringing width, camera gain and dark level) are learnable.

Forward: images -> the nominal DMD relay (dither, aperture) moved by the DMD offset and the beam's
landing on patch 0 (a Fourier shift) -> patterns through the LUT model and the fringing blur ->
PhaseStack with the fold's distances and tilts (lattice frame) -> camera area resampling at the
relay's offset -> ``gain * electrons_per_intensity * I + dark`` (mean frames in DN; no noise,
rounding or saturation: the fit masks saturated pixels).

Backward: d loss / d frames -> every parameter, by the chain rule: the camera map and its offset
derivative, the stack's exact adjoint with its parameter gradients (``param_grads``: distances,
tilts), the fold's Jacobian (:mod:`.twin_geometry`), the input field's shift derivative and the
LUT / blur derivatives; and d loss / d (model phases in radians), straight through the SLM's
level rounding. No finite differences anywhere.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..config import OpticsConfig
from ..optics import PhaseStack
from . import protocol, resample
from . import twin_parts as parts
from .config import BenchConfig
from .twin_geometry import fold_geometry
from .twin_params import TwinParams

__all__ = ["DigitalTwin", "TwinContext"]


@dataclasses.dataclass
class TwinContext:
    """What :meth:`DigitalTwin.backward` needs from :meth:`DigitalTwin.forward_train`."""

    tape: object
    stack: PhaseStack
    geometry: object
    shift_px: np.ndarray
    base: np.ndarray | None   # unshifted input fields [B, g, g] (None: made from ``images`` when asked)
    intensity: np.ndarray     # [B, g, g] at the camera plane
    cam_intensity: np.ndarray | None  # [B, rows, cols] resampled, before photometry (None until asked)
    gain_factor: float        # electrons per unit intensity at this exposure
    shown: np.ndarray         # [L, g, g] LUT phases before the blur
    u: np.ndarray | None      # [L, g, g] LUT drive (None for float phases shown exactly)
    float_phases: bool
    camera: tuple = ()        # (cy, cx, gain, dark_level) of the parameters at the forward pass
    images: object = None     # what was shown (for ``base`` when it was not made)


class DigitalTwin:
    """The twin of a bench with design ``nominal`` for the ODU geometry ``optics`` / ``image_size``.

    ``params`` (default: the nominal values) are the current beliefs; :meth:`set_params` changes
    them. ``grid`` as for :class:`Bench`. The twin always works in the lattice frame.
    """

    def __init__(self, optics: OpticsConfig, image_size: int, nominal: BenchConfig | None = None,
                 params: TwinParams | None = None, *, grid: int | None = None, nthreads: int | None = None,
                 precision: str = "single"):
        optics.validate(image_size)
        if optics.encoding != "amplitude" or optics.input_distance != 0:
            raise ValueError("the twin models the bench: optics.encoding must be 'amplitude' and "
                             "optics.input_distance 0")
        nom = BenchConfig() if nominal is None else nominal
        if nom.fold.mirror_planes:
            raise ValueError("FoldedPropagation.mirror_planes: the twin models the fold without mirror planes")
        self.optics, self.nominal = optics, nom
        self.n, self.L, self.H = optics.n, optics.layers, int(image_size)
        self.k = optics.pixels_per_image_pixel(image_size)
        self.grid = self.n if grid is None else int(grid)
        if self.grid < self.n or (self.grid - self.n) % 2:
            raise ValueError(f"grid = {grid!r}: must be >= n = {self.n} with grid - n even")
        self._pad = (self.grid - self.n) // 2
        self.pitch, self.wavelength = optics.pitch, optics.wavelength
        self.nthreads = nthreads
        if precision not in ("single", "double"):
            raise ValueError(f"precision must be 'single' or 'double', got {precision!r}")
        self.cdtype = np.complex64 if precision == "single" else np.complex128
        self.rdtype = np.float32 if precision == "single" else np.float64
        self.fold_angle = nom.fold.design_angle(self.pitch)
        self._relay = dataclasses.replace(nom.dmd, offset=(0.0, 0.0)).relay(
            self.grid, self.k, (self.H, self.H), self.pitch, self.wavelength)
        cam = nom.camera
        self.rows, self.cols = cam.roi
        self.footprint = cam.footprint() / self.pitch
        area = (nom.fold.patch_size * self.pitch) ** 2
        self.epi = cam.electrons_at(self.wavelength, area)
        self.camera_exposure = cam.exposure
        self.slm_levels = nom.slm.levels
        self.quantise = nom.slm.quantise
        self._stacks: dict = {}
        self._inputs: dict = {}
        self._last_shift = None
        self._shifted_lowpass = None
        self.set_params(TwinParams.from_config(nom, self.L) if params is None else params)

    # ------------------------------------------------------------------ parameters
    def set_params(self, params: TwinParams) -> None:
        if not isinstance(params, TwinParams):
            raise TypeError(f"params must be TwinParams, got {type(params).__name__}")
        p = params
        if not (p.z_gap > 0 and p.phase_scale > 0 and p.crosstalk >= 0 and p.gain > 0):
            raise ValueError(f"twin parameters out of range: z_gap {p.z_gap}, phase_scale {p.phase_scale}, "
                             f"crosstalk {p.crosstalk}, gain {p.gain}")
        self.params = p
        self.geometry = fold_geometry(p.geometry_vector(), layers=self.L, pitch=self.pitch,
                                      patch_pitch=self.nominal.fold.patch_pitch, fold_angle=self.fold_angle,
                                      camera_hop=self.nominal.fold.camera_hop)
        self.kernels = parts.blur_kernels(p.crosstalk, radius=max(2, int(math.ceil(0.5 + 7.5 * max(p.crosstalk, 0.2)))))
        cs = (np.asarray(p.camera_offset)) / self.pitch        # lattice frame: camera_shift = 0
        g, f = self.grid, self.footprint
        self.cy, self.dcy = parts.overlap_and_derivative(self.rows, g / 2 + cs[1] - self.rows * f / 2, f, g)
        self.cx, self.dcx = parts.overlap_and_derivative(self.cols, g / 2 + cs[0] - self.cols * f / 2, f, g)

    def stack(self) -> PhaseStack:
        """The phase stack of the current geometry (cached per geometry)."""
        key = (tuple(self.geometry.distances), self.geometry.tilts.tobytes())
        s = self._stacks.get(key)
        if s is None:
            if len(self._stacks) > 8:
                self._stacks.clear()
            o = self.optics
            s = PhaseStack(self.grid, wavelength=self.wavelength, pitch=self.pitch,
                           distances=list(self.geometry.distances), tilts=self.geometry.tilts,
                           method=o.method, padding=o.padding)
            self._stacks[key] = s
        return s

    def bench_config(self) -> BenchConfig:
        """The bench the twin believes in (for a :class:`Bench` that simulates it)."""
        return self.params.to_config(self.nominal, self.pitch)

    # ------------------------------------------------------------------ pieces
    def amplitudes(self, images) -> np.ndarray:
        r = protocol.check_images(images, (self.H, self.H), self.nominal.dmd.bits)
        if np.issubdtype(r.dtype, np.integer):
            return r
        o = self.optics
        return np.clip(o.amp_bias + o.amp_scale * r.astype(np.float64), 0.0, 1.0)

    def base_field(self, images) -> np.ndarray:
        """The relayed DMD image on the grid before the lateral shift, ``[B, g, g]`` float32 (cached)."""
        a = self.amplitudes(images)
        key = (a.dtype.str, a.shape, a.tobytes())
        f = self._inputs.get(key)
        if f is None:
            if len(self._inputs) > 4:
                self._inputs.clear()
            f = self._relay.field(a)
            self._inputs[key] = f
        return f

    def _shifted(self, base: np.ndarray, shift, derivative: bool = False) -> tuple:
        """(field,) or (field, d/dx, d/dy) of ``base`` moved by ``shift`` pixels; the last result
        is kept, so the frames of one image (a calibration set) share one transform."""
        key = (id(base), float(shift[0]), float(shift[1]), derivative)
        hit = self._last_shift
        if hit is not None and hit[0] == key and hit[1] is base:
            return hit[2]
        res = parts.fourier_shift(base, shift, derivative=derivative, dtype=self.cdtype, workers=self.nthreads)
        res = res if derivative else (res,)
        self._last_shift = (key, base, res)
        return res

    def clear_cache(self) -> None:
        """Forget the cached input fields and shift (a benchmark of steps with new images; memory)."""
        self._inputs.clear()
        self._last_shift = None

    def input_shift_px(self) -> np.ndarray:
        return (np.asarray(self.params.dmd_offset) + self.geometry.landing[0]) / self.pitch

    def phases(self, slm):
        """The stack's phases ``[L, g, g]`` (float32; float64 for ``precision="double"``) of patterns ``[L, n, n]`` and the LUT state."""
        s = protocol.check_slm(slm, (self.L, self.n, self.n), self.nominal.slm.bits)
        p = self.params
        exact = not np.issubdtype(s.dtype, np.integer) and not self.quantise
        if exact:
            u = np.mod(s.astype(np.float64), 2 * math.pi) / (2 * math.pi)
        else:
            lv = s.astype(np.int64) if np.issubdtype(s.dtype, np.integer) else \
                self.nominal.slm.levels_of_phase(s).astype(np.int64)
            u = lv / self.slm_levels
        if self._pad:
            u = np.pad(u, ((0, 0), (self._pad,) * 2, (self._pad,) * 2))
        shown = parts.lut(u, p.phase_scale, p.lut_curvature)
        K = self.kernels[0]
        return parts.blur_axes(shown, K, K).astype(self.rdtype), shown, u, not np.issubdtype(s.dtype, np.integer)

    # ------------------------------------------------------------------ forward
    def forward_tape(self, images, slm, exposure=None, *, fresh_images: bool = False) -> TwinContext:
        """The stack's forward pass and the context for :meth:`backward` / :meth:`phase_grad`,
        without the camera map: the online step's gradient needs no twin frames
        (:meth:`frames_of` makes them when asked).

        ``fresh_images`` (images not seen before, as in a training step): the relay's low-pass and
        the input's shift as one product per side (:class:`~.twin_parts.ShiftedLowpass`, no FFTs
        and no cached field; equal to float32 rounding); otherwise the cached field is shifted."""
        t = protocol.check_exposure(exposure)
        shift = self.input_shift_px()
        rel = self._relay
        if fresh_images and rel.matched and rel.lowpass is not None:
            canvas, (by, bx) = rel.canvas(self.amplitudes(images))
            key = (float(shift[0]), float(shift[1]), by.start, by.stop, bx.start, bx.stop)
            op = self._shifted_lowpass
            if op is None or op[0] != key:
                op = (key, parts.ShiftedLowpass(rel.lowpass[:, by], rel.lowpass[:, bx], shift, self.cdtype))
                self._shifted_lowpass = op
            base, field = None, op[1](canvas[:, by, bx])
        else:
            base = self.base_field(images)
            field = self._shifted(base, shift)[0]
        ph, shown, u, floats = self.phases(slm)
        stack = self.stack()
        I, tape = stack.forward_train(field, ph, nthreads=self.nthreads)
        gf = self.epi * (1.0 if t is None else t / self.camera_exposure)
        p = self.params
        return TwinContext(tape, stack, self.geometry, shift, base, I, None, gf, shown, u, floats,
                           (self.cy, self.cx, p.gain, p.dark_level), images)

    def frames_of(self, ctx: TwinContext) -> np.ndarray:
        """Mean frames ``[B, rows, cols]`` (float64 DN) of a forward context (camera map and
        photometry of the parameters it was made with)."""
        cy, cx, gain, dark = ctx.camera
        if ctx.cam_intensity is None:
            ctx.cam_intensity = resample.apply(ctx.intensity.astype(np.float64), cy, cx)
        return gain * ctx.gain_factor * ctx.cam_intensity + dark

    def forward_train(self, images, slm, exposure=None) -> tuple[np.ndarray, TwinContext]:
        """Mean frames ``[B, rows, cols]`` (float64 DN) and the context for :meth:`backward`."""
        ctx = self.forward_tape(images, slm, exposure)
        return self.frames_of(ctx), ctx

    def frames(self, images, slm, exposure=None) -> np.ndarray:
        return self.forward_train(images, slm, exposure)[0]

    # ------------------------------------------------------------------ backward
    def backward(self, ctx: TwinContext, grad_frames: np.ndarray, params: bool = True,
                 phase_grad: bool = False):
        """Gradients from d loss / d frames ``[B, rows, cols]``.

        Returns ``(grads, grad_phases)``: ``grads`` maps every :class:`TwinParams` name to its
        gradient (an array of the parameter's shape; None without ``params``); ``grad_phases``
        ``[L, n, n]`` (float64) is d loss / d the patterns in radians, straight through the level
        rounding (None without ``phase_grad``).
        """
        p, G = self.params, np.asarray(grad_frames, dtype=np.float64)
        A = p.gain * ctx.gain_factor
        Gc = G * A
        g_I = np.ascontiguousarray(resample.apply(Gc, self.cy.T, self.cx.T), dtype=self.rdtype)
        out = None
        if params:
            gph, gx, pg = ctx.stack.backward(ctx.tape, g_I, input_grad=True, nthreads=self.nthreads,
                                             param_grads=True)
        else:
            gph, gx = ctx.stack.backward(ctx.tape, g_I, nthreads=self.nthreads)
        gph = gph.astype(np.float64)
        K, dK = self.kernels
        gB = parts.blur_axes(gph, K, K)     # the blur is symmetric: its adjoint is itself
        if params:
            if ctx.cam_intensity is None:
                self.frames_of(ctx)
            out = self._param_grads(ctx, G, Gc, gph, gB, gx, pg)
        return out, (self._pattern_grad(ctx, gB) if phase_grad else None)

    def phase_grad(self, ctx: TwinContext, grad_intensity: np.ndarray) -> np.ndarray:
        """d loss / d the patterns in radians ``[L, n, n]`` (float64) from d loss / d the stack's
        intensity ``[B, grid, grid]`` (the camera map's adjoint already applied, e.g. fused with
        a binning's): :meth:`backward`'s phase gradient without the camera and parameter terms."""
        g_I = np.ascontiguousarray(grad_intensity, dtype=self.rdtype)
        gph, _ = ctx.stack.backward(ctx.tape, g_I, nthreads=self.nthreads)
        K, _ = self.kernels
        return self._pattern_grad(ctx, parts.blur_axes(gph.astype(np.float64), K, K))

    def _pattern_grad(self, ctx: TwinContext, gB: np.ndarray) -> np.ndarray:
        """Through the LUT (straight through the level rounding) and the crop to the patterns."""
        p = self.params
        d = parts.lut_derivatives(ctx.u, p.phase_scale, p.lut_curvature)[2] / (2 * math.pi)
        return (gB * d)[:, self._pad:self._pad + self.n, self._pad:self._pad + self.n]

    def _param_grads(self, ctx, G, Gc, gph, gB, gx, pg) -> dict:
        p, geo = self.params, ctx.geometry
        grads = {"gain": np.array(float(np.sum(G * ctx.cam_intensity)) * ctx.gain_factor),
                 "dark_level": np.array(float(np.sum(G)))}
        I = ctx.intensity.astype(np.float64)
        gcx = float(np.sum(Gc * resample.apply(I, self.cy, self.dcx))) / self.pitch
        gcy = float(np.sum(Gc * resample.apply(I, self.dcy, self.cx))) / self.pitch
        grads["camera_offset"] = np.array([gcx, gcy])
        # the input field's shift (DMD offset + landing on patch 0), in pixels
        base = ctx.base if ctx.base is not None else self.base_field(ctx.images)
        _, dfx, dfy = self._shifted(base, ctx.shift_px, derivative=True)
        gx64 = gx.astype(np.complex128)
        gs = np.array([np.sum(gx64.real * dfx.real + gx64.imag * dfx.imag),
                       np.sum(gx64.real * dfy.real + gx64.imag * dfy.imag)]) / self.pitch
        grads["dmd_offset"] = gs
        gvec = pg.distances @ geo.d_distances + np.einsum("la,lap->p", pg.tilts, geo.d_tilts) + gs @ geo.d_landing[0]
        L = self.L
        grads["z_gap"] = np.array(gvec[0])
        grads["mirror_angle"] = gvec[1:3]
        grads["beam_angle"] = gvec[3:5]
        grads["patch_offsets"] = gvec[5:].reshape(L, 2)
        ds, dc, _ = parts.lut_derivatives(ctx.u, p.phase_scale, p.lut_curvature)
        grads["phase_scale"] = np.array(float(np.sum(gB * ds)))
        grads["lut_curvature"] = np.array(float(np.sum(gB * dc)))
        K, dK = self.kernels
        if K is None:
            grads["crosstalk"] = np.array(0.0)
        else:
            dphi = parts.blur_axes(ctx.shown, dK, K) + parts.blur_axes(ctx.shown, K, dK)
            grads["crosstalk"] = np.array(float(np.sum(gph * dphi)))
        return grads

    def __repr__(self) -> str:
        return f"DigitalTwin(n={self.n}, grid={self.grid}, layers={self.L}, z_gap={self.params.z_gap:g})"
