"""The optical denoising unit (ODU): encode -> upsample -> L phase layers -> camera -> bin.

Physical pipeline for a batch of (noisy) images ``r [B, H, W]``:

1. **Encode** each image pixel into the complex input field (``OpticsConfig.encoding``):

   * ``"amplitude"`` (default): amplitude ``a = clip(amp_bias + amp_scale * r, 0, 1)``, zero
     phase. This is what an *amplitude-only* modulator (or an intensity SLM between crossed
     polarisers, after calibration) can show: non-negative amplitudes up to full transmission.
     The bias (0.5) puts mid-grey at half transmission so the camera intensity
     ``|E|^2 ~ |bias * h|^2 + 2 bias Re(h^* (h * scale r)) + ...`` is dominated by a term
     *linear* in ``r`` (the bias acts as a co-propagating reference); the default scale 1/8 maps
     ``r in [-4, 4]`` (the range of r_t at the noisiest steps) onto ``[0, 1]`` without clipping.
   * ``"phase"``: ``exp(i * phase_scale * r)`` with unit amplitude: what a *phase-only* modulator
     (the reference work's SLM) shows. It has no intensity contrast by itself; the optics must
     convert phase to intensity (e.g. a Zernike-like Fourier-plane step the training can learn).
   * ``"complex"``: real amplitude ``amp_bias + amp_scale * r`` *without* clipping, which may be
     negative (a pi phase shift): needs a full complex modulator (or two SLMs); a simulation aid.

   Pixels outside the image window are dark (zero field).
2. **Upsample**: each image pixel covers ``k x k`` modulator pixels, the ``kH x kW`` block is
   centred on the ``N x N`` grid.
3. **Propagate** through the :class:`~optdiff.propagation.PhaseStack` (L phase masks, a hop of
   ``distance`` after each, the last hop ``camera_distance`` to the camera).
4. **Read out**: camera intensity ``[B, N, N]`` area-binned over the centred ``kH x kW`` region
   to ``[B, H, W]`` (mean over each ``k x k`` block); with ``camera_flip`` (``"auto"``: when the
   initial optics invert the image) the binned image is
   rotated by 180 degrees (an imaging relay with magnification -1 forms an inverted image; a
   camera reads its pixels in any order, so this costs nothing physically).

The digital read-out that turns the binned intensity into a noise estimate lives in
:mod:`optdiff.model` (a scale and offset per set). Gradients come only from
``PhaseStack.forward_train`` / ``PhaseStack.backward`` (the exact adjoint in C++).
"""

from __future__ import annotations

import math
import threading
import warnings

import numpy as np

from ..config import OpticsConfig
from ..optics import PhaseStack, Tape

__all__ = ["ODU", "LightLossWarning", "lens_phase", "init_phases", "resolve_init", "image_inverted",
           "LOW_LIGHT_FRACTION"]

#: Below this fraction of the input power reaching the camera's read-out window, a warning is issued.
LOW_LIGHT_FRACTION = 0.25


class LightLossWarning(UserWarning):
    """The configuration sends most of the input light outside the camera's read-out window."""


def _grid(n: int, pitch: float) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(n) - (n - 1) / 2.0) * pitch
    return np.meshgrid(c, c, indexing="ij")


def lens_phase(n: int, pitch: float, wavelength: float, focal: float) -> np.ndarray:
    """Thin-lens phase ``-pi (x^2 + y^2) / (lambda f)`` (float64 ``[n, n]``, converging for f > 0).

    Sign convention of the propagators: fields go as exp(+ikz), so a converging lens has a
    negative quadratic phase. Sampling is alias-free for ``|x| < lambda f / (2 pitch)``.
    """
    x, y = _grid(n, pitch)
    return -math.pi * (x * x + y * y) / (wavelength * focal)


def resolve_init(optics: OpticsConfig) -> str:
    """The concrete phase init that ``init = "imaging"`` stands for in this geometry.

    ``relay`` for the reference geometry (4 layers, equal hops, no input hop): measured at
    N = 100..300 it images white noise with a pixel correlation of 0.97-0.99 where the 4f
    system reaches 0.67 (N=100) .. 0.99 (N=300), because its field lenses keep the light
    inside the window. ``4f`` for more than 4 equal hops, else ``lens`` (one imaging lens).
    Other inits are returned unchanged.
    """
    kind = optics.init
    if kind != "imaging":
        return kind
    L, d = optics.layers, optics.distance
    hops = [d] * (L - 1) + [optics.camera_hop]
    equal = all(abs(h - d) < 1e-9 * d for h in hops) and optics.input_distance == 0
    if L == 4 and equal:
        return "relay"
    if L >= 4 and equal:
        return "4f"
    return "lens"


def image_inverted(optics: OpticsConfig) -> bool:
    """Whether the init's optics form an inverted image (magnification -1) on the camera."""
    return resolve_init(optics) in ("4f", "lens")


def init_phases(optics: OpticsConfig, kind: str | None = None, rng=None,
                noise: float | None = None, image_size: int | None = None) -> np.ndarray:
    """Starting phases ``[L, N, N]`` float32 for one layer set.

    ``imaging`` (default): lenses that image the input onto the camera, chosen by
    :func:`resolve_init`: ``relay`` (a field lens f=d on layer 0 and f=d/2 lenses on layers
    1-3: two 2f-2f relays, upright image, the least vignetting at small N), ``4f`` (lenses
    f=d on layers 1 and 3, the Fourier plane on layer 2, inverted image) or ``lens`` (one lens
    on the middle layer with 1/f = 1/s_in + 1/s_out, inverted). The ODU starts as an imager,
    so at the noisiest sets eps ~ r_t is predicted from step 0. With ``encoding = "phase"``
    a Zernike phase-contrast step (+pi/2 on the zero-order spot) is put on the Fourier plane
    (layer 1 of the relay, layer 2 of the 4f system), which turns the phase image into an
    intensity image (measured pixel correlation with white-noise input 0.99 instead of 0.30);
    ``image_size`` sets the spot size (default 20). ``zero``: free space (for
    the reference geometry at N = 100 this is a far-field blur, not an image). ``random``:
    uniform phases in [-pi, pi). ``noise`` (default ``optics.init_noise``) adds Gaussian
    phases of that std to break the symmetry.
    """
    kind = optics.init if kind is None else kind
    noise = optics.init_noise if noise is None else noise
    rng = np.random.default_rng(rng)
    L, n = optics.layers, optics.n
    hops = [optics.distance] * (L - 1) + [optics.camera_hop]
    pre = optics.input_distance
    ph = np.zeros((L, n, n), dtype=np.float64)
    lens = lambda f: lens_phase(n, optics.pitch, optics.wavelength, f)  # noqa: E731
    if kind in ("imaging", "4f", "relay"):
        kind = resolve_init(optics) if kind == "imaging" else kind
        d = optics.distance
        if kind == "relay":
            # field lens f=d on layer 0, then f=d/2 on layers 1..3: layer 1 images the input
            # 1:1 onto layer 2 (2f-2f), layer 3 images layer 2 onto the camera; layer 2 is a
            # field lens. Upright image (magnification +1), least vignetting at small N.
            ph[0] = lens(d)
            for j in (1, 2, 3):
                ph[j] = lens(d / 2)
        elif kind == "4f":
            if L < 4:
                raise ValueError("init '4f' needs at least 4 layers")
            # input (layer 0) -d- lens f=d -d- Fourier plane -d- lens f=d -d- camera: inverted image
            ph[1] = lens(hops[0])
            ph[3] = lens(hops[2])
        else:  # "lens": one lens on the middle layer images the input plane onto the camera
            j = L // 2
            s_in = pre + sum(hops[:j])
            s_out = sum(hops[j:])
            if s_in > 0:  # L == 1 without an input hop: nothing to image with
                ph[j] = lens(1.0 / (1.0 / s_in + 1.0 / s_out))
        if optics.encoding == "phase" and kind in ("relay", "4f"):
            H = 20 if image_size is None else int(image_size)
            k = optics.pixels_per_image_pixel(H)
            # zero-order spot diameter ~ lambda f / (window width) at the Fourier plane (f = d)
            spot = optics.wavelength * d / (k * H * optics.pitch ** 2)
            radius = max(1.0, 0.3 * spot)
            c = np.arange(n) - (n - 1) / 2.0
            disc = np.hypot(c[:, None], c[None, :]) <= radius
            ph[1 if kind == "relay" else 2][disc] += math.pi / 2
    elif kind == "zero":
        pass
    elif kind == "random":
        ph = rng.uniform(-math.pi, math.pi, size=(L, n, n))
    else:
        raise ValueError(f"unknown phase init {kind!r}")
    if noise:
        z = rng.standard_normal((L, n, n))
        corr = optics.init_noise_corr
        if corr > 0:  # smooth the noise over ~corr pixels so that it scatters little light out
            from scipy.ndimage import gaussian_filter

            z = gaussian_filter(z, sigma=(0, corr, corr), mode="wrap")
            z /= max(float(z.std()), 1e-12)
        ph = ph + noise * z
    ph = np.mod(ph + math.pi, 2 * math.pi) - math.pi  # wrap (exp(i phi) is periodic)
    return ph.astype(np.float32)


class ODU:
    """One optical denoising unit geometry (shared by every layer set of a model).

    Parameters
    ----------
    optics : OpticsConfig
        Physical parameters (see :mod:`optdiff.config`).
    image_size : int
        H = W of the images.
    nthreads : int or None
        Threads for the optical core (None: the global default).
    precision : "single" or "double"
        complex64 / float32 phases (training) or complex128 / float64 (gradient checks).
    backend : "cpu", "cuda" or "cuda-emu"
        Where the phase stack runs (see :mod:`optdiff.optics.backends`). Images, phases and
        read-outs stay NumPy arrays; on "cuda" each optical call moves its batch to the GPU
        and the camera image back.
    """

    def __init__(self, optics: OpticsConfig, image_size: int, nthreads: int | None = None,
                 precision: str = "single", backend="cpu"):
        optics.validate(image_size)
        self.optics = optics
        self.H = self.W = int(image_size)
        self.n = optics.n
        self.L = optics.layers
        self.k = optics.pixels_per_image_pixel(image_size)
        self.off = (self.n - self.k * self.H) // 2
        self.nthreads = nthreads
        self.flip = optics.camera_flip if isinstance(optics.camera_flip, bool) else image_inverted(optics)
        if precision not in ("single", "double"):
            raise ValueError("precision must be 'single' or 'double'")
        self.cdtype = np.complex64 if precision == "single" else np.complex128
        self.rdtype = np.float32 if precision == "single" else np.float64
        hops = [optics.distance] * (optics.layers - 1) + [optics.camera_hop]
        self.stack = PhaseStack(
            optics.n, wavelength=optics.wavelength, pitch=optics.pitch, distances=hops,
            method=optics.method, padding=optics.padding,
            input_distance=optics.input_distance if optics.input_distance > 0 else None, backend=backend)
        # Binning as two small matrix products, b = A I A^T with A [H, kH] holding 1/k on each
        # pixel's block (rows reversed for camera_flip): BLAS does it ~9x faster than a strided
        # mean over k x k blocks, which was the largest non-optical cost of a sampling step.
        A = np.kron(np.eye(self.H), np.full((1, self.k), 1.0 / self.k))
        A = np.ascontiguousarray(A[::-1]) if self.flip else A
        self._bin_mat = {np.dtype(np.float64): A, np.dtype(np.float32): A.astype(np.float32)}
        self._scratch = threading.local()  # per-thread reusable buffers of intensity()

    # ------------------------------------------------------------------ geometry helpers
    @property
    def window(self) -> tuple[slice, slice]:
        s = slice(self.off, self.off + self.k * self.H)
        return s, s

    def numerical_aperture(self) -> float:
        """Half-angle sine subtended by the N-pixel window at one layer spacing (coherent NA)."""
        half = self.n * self.optics.pitch / 2
        return half / math.hypot(half, self.optics.distance)

    def describe(self) -> dict:
        o = self.optics
        return {
            "n": self.n, "layers": self.L, "k": self.k, "image_size": self.H,
            "window_pixels": self.k * self.H, "image_pixel_um": self.k * o.pitch * 1e6,
            "aperture_mm": self.n * o.pitch * 1e3, "na": self.numerical_aperture(),
            # coherent 4f cutoff / image Nyquist: >= 1 means the relay resolves single image pixels
            "bandwidth_ratio": (self.n * o.pitch / (2 * o.wavelength * o.distance)) / (1 / (2 * self.k * o.pitch)),
            "fresnel_number": (self.n * o.pitch / 2) ** 2 / (o.wavelength * o.distance),
        }

    def _check_images(self, r: np.ndarray, name: str = "images") -> np.ndarray:
        r = np.asarray(r)
        if r.ndim == 2:
            r = r[None]
        if r.ndim != 3 or r.shape[1:] != (self.H, self.W):
            raise ValueError(f"{name} must have shape [B, {self.H}, {self.W}] (the model's image size), "
                             f"got {tuple(np.shape(r))}")
        if not np.issubdtype(r.dtype, np.floating) and not np.issubdtype(r.dtype, np.integer):
            raise TypeError(f"{name} must be real numbers, got {r.dtype}")
        if not np.isfinite(r).all():  # the encoding would clip +-Inf silently
            raise ValueError(f"{name} contains NaN or infinite values")
        return r

    # ------------------------------------------------------------------ encode / bin
    def encode_values(self, r: np.ndarray) -> np.ndarray:
        """Complex value of each image pixel on the modulator ``[B, H, W]``."""
        o = self.optics
        r = np.asarray(r, dtype=np.float64)
        if o.encoding == "amplitude":
            return np.clip(o.amp_bias + o.amp_scale * r, 0.0, 1.0).astype(self.cdtype)
        if o.encoding == "complex":
            return (o.amp_bias + o.amp_scale * r).astype(self.cdtype)
        return np.exp(1j * o.phase_scale * r).astype(self.cdtype)

    def encode(self, r: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Input field ``[B, N, N]`` (complex64): encoded pixels as centred k x k blocks, dark border.

        ``out``: a ``[B, N, N]`` field whose border is already dark (zero), e.g. one written by an
        earlier call: only the image window is rewritten.
        """
        r = self._check_images(r)
        v = self.encode_values(r)
        B = v.shape[0]
        if out is None:
            out = np.zeros((B, self.n, self.n), dtype=self.cdtype)
        k = self.k
        sy, sx = self.window
        # repeat along x first, then copy each k*W-long row k times: contiguous inner copies run
        # ~2x faster than broadcasting into a k-long inner axis (splitting the window's row axis
        # into (pixel, sub-pixel) is always a view, never a copy)
        rows = np.repeat(v, k, axis=2)
        out[:, sy, sx].reshape(B, self.H, k, self.W * k)[...] = rows[:, :, None, :]
        return out

    def bin(self, intensity: np.ndarray) -> np.ndarray:
        """Area-bin camera intensity ``[B, N, N]`` to ``[B, H, W]`` (float64; flipped with camera_flip)."""
        sy, sx = self.window
        w = intensity[:, sy, sx]
        A = self._bin_mat.get(w.dtype)
        if A is None:
            w, A = w.astype(np.float64), self._bin_mat[np.dtype(np.float64)]
        return np.ascontiguousarray(A @ w @ A.T, dtype=np.float64)

    def unbin(self, g_binned: np.ndarray) -> np.ndarray:
        """Adjoint of :meth:`bin`: ``[B, H, W]`` -> ``[B, N, N]`` (each block gets g / k^2)."""
        g = np.asarray(g_binned, dtype=np.float64)
        A = self._bin_mat[np.dtype(np.float64)]
        out = np.zeros((g.shape[0], self.n, self.n), dtype=self.rdtype)
        sy, sx = self.window
        out[:, sy, sx] = A.T @ g @ A
        return out

    def bin_window(self, window: np.ndarray) -> np.ndarray:
        """:meth:`bin` of a camera-window array ``[B, kH, kW]`` (e.g. weighted intensity)."""
        A = self._bin_mat[np.dtype(np.float64)]
        return np.ascontiguousarray(A @ np.asarray(window, dtype=np.float64) @ A.T)

    def unbin_window(self, g_binned: np.ndarray) -> np.ndarray:
        """Adjoint of :meth:`bin_window`: ``[B, H, W]`` -> ``[B, kH, kW]`` (float64)."""
        A = self._bin_mat[np.dtype(np.float64)]
        return A.T @ np.asarray(g_binned, dtype=np.float64) @ A

    def camera_blocks(self, window: np.ndarray) -> np.ndarray:
        """``[B, kH, kW]`` camera window -> ``[B, H, W, k*k]``: the k x k camera pixels that bin
        into each image pixel (in image coordinates, so flipped with camera_flip)."""
        B, k = window.shape[0], self.k
        blocks = window.reshape(B, self.H, k, self.W, k).transpose(0, 1, 3, 2, 4).reshape(B, self.H, self.W, k * k)
        return blocks[:, ::-1, ::-1] if self.flip else blocks

    def window_from_blocks(self, blocks: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`camera_blocks` for one ``[H, W, k*k]`` array -> ``[kH, kW]``."""
        k = self.k
        b = blocks[::-1, ::-1] if self.flip else blocks
        return np.ascontiguousarray(b.reshape(self.H, self.W, k, k).transpose(0, 2, 1, 3).reshape(self.H * k, self.W * k))

    # ------------------------------------------------------------------ optics
    def _phases(self, phases: np.ndarray) -> np.ndarray:
        if not isinstance(phases, np.ndarray) or phases.shape != (self.L, self.n, self.n):
            raise ValueError(f"phases must be an array [L={self.L}, N={self.n}, N={self.n}], "
                             f"got {getattr(phases, 'shape', type(phases).__name__)}")
        if phases.dtype != self.rdtype or not phases.flags.c_contiguous:
            phases = np.ascontiguousarray(phases, dtype=self.rdtype)
        return phases

    def camera(self, r: np.ndarray, phases: np.ndarray) -> np.ndarray:
        """Full camera intensity ``[B, N, N]`` for images ``r``."""
        return self.stack.forward(self.encode(r), self._phases(phases), nthreads=self.nthreads)

    def _camera_reused(self, r: np.ndarray, phases: np.ndarray) -> np.ndarray:
        """:meth:`camera` into this thread's reused buffers (valid until its next call)."""
        r = self._check_images(r)
        # A sampler calls this once per step with the same batch size: reuse this thread's input
        # field (its dark border stays zero) and camera buffer instead of allocating both.
        sc = self._scratch
        B = r.shape[0]
        if getattr(sc, "field", None) is None or sc.field.shape[0] != B:
            sc.field = np.zeros((B, self.n, self.n), dtype=self.cdtype)
            sc.camera = np.empty((B, self.n, self.n), dtype=self.rdtype)
        field = self.encode(r, out=sc.field)
        return self.stack.forward(field, self._phases(phases), out=sc.camera, nthreads=self.nthreads)

    def intensity(self, r: np.ndarray, phases: np.ndarray) -> np.ndarray:
        """Binned camera intensity ``[B, H, W]`` (float64)."""
        return self.bin(self._camera_reused(r, phases))

    def intensity_train(self, r: np.ndarray, phases: np.ndarray) -> tuple[np.ndarray, Tape]:
        """Binned intensity and the tape for :meth:`backward`."""
        I, tape = self.stack.forward_train(self.encode(r), self._phases(phases), nthreads=self.nthreads)
        return self.bin(I), tape

    def window_intensity(self, r: np.ndarray, phases: np.ndarray) -> np.ndarray:
        """Camera intensity in the read-out window, unbinned: ``[B, kH, kW]`` (float64)."""
        sy, sx = self.window
        return self._camera_reused(r, phases)[:, sy, sx].astype(np.float64)   # a copy: the buffer is reused

    def window_train(self, r: np.ndarray, phases: np.ndarray) -> tuple[np.ndarray, Tape]:
        """Unbinned window intensity ``[B, kH, kW]`` and the tape for :meth:`backward_window`."""
        I, tape = self.stack.forward_train(self.encode(r), self._phases(phases), nthreads=self.nthreads)
        sy, sx = self.window
        return np.asarray(I[:, sy, sx], dtype=np.float64), tape

    def backward_window(self, tape: Tape, g_window: np.ndarray) -> np.ndarray:
        """Phase gradient ``[L, N, N]`` (float64) from dLoss/d(window intensity) ``[B, kH, kW]``."""
        g = np.zeros((g_window.shape[0], self.n, self.n), dtype=self.rdtype)
        sy, sx = self.window
        g[:, sy, sx] = g_window
        g_phases, _ = self.stack.backward(tape, g, nthreads=self.nthreads)
        return g_phases.astype(np.float64)

    def backward(self, tape: Tape, g_binned: np.ndarray) -> np.ndarray:
        """Phase gradient ``[L, N, N]`` (float64) from dLoss/d(binned intensity) ``[B, H, W]``."""
        g_phases, _ = self.stack.backward(tape, self.unbin(g_binned), nthreads=self.nthreads)
        return g_phases.astype(np.float64)

    def light_fraction(self, phases: np.ndarray, r: np.ndarray | None = None) -> float:
        """Fraction of the input power that reaches the camera's read-out window.

        ``r`` defaults to a mid-grey image (all zeros). Energy is conserved by the hops except
        for light leaving the N x N window (padding 2) and evanescent components.
        """
        if r is None:
            r = np.zeros((1, self.H, self.W))
        field = self.encode(r)
        p_in = float(np.sum(np.abs(field.astype(np.complex128)) ** 2))
        if p_in <= 0:
            return 0.0
        I = self.stack.forward(field, self._phases(phases), nthreads=self.nthreads)
        sy, sx = self.window
        return float(np.sum(I[:, sy, sx], dtype=np.float64)) / p_in

    def check_light(self, phases: np.ndarray, what: str = "configuration",
                    threshold: float = LOW_LIGHT_FRACTION, hint: str | None = None) -> float:
        """:meth:`light_fraction`, with a :class:`LightLossWarning` when it is below ``threshold``."""
        frac = self.light_fraction(phases)
        if frac < threshold:
            d = self.describe()
            if hint is None:
                hint = "Use init='imaging', a larger n, or a shorter distance."
            warnings.warn(
                f"{what}: only {100 * frac:.1f}% of the input light reaches the camera window "
                f"(N={self.n}, pitch={self.optics.pitch:g} m, distance={self.optics.distance:g} m, "
                f"NA~{d['na']:.3f}); light leaves the {d['aperture_mm']:.2f} mm aperture. {hint}",
                LightLossWarning, stacklevel=2)
        return frac
