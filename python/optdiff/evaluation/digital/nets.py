"""The reference work's digital denoisers in PyTorch: a fully connected network and a U-Net, both
working on the image interpolated to 76 x 76 and told the timestep by a sinusoidal embedding;
and ``match_width``, which sizes them to a parameter count (an ODU's M x L x N^2 phases).

Both take ``x_t`` float ``[B, H, W]`` (or ``[B, 1, H, W]``) and integer timesteps ``t [B]`` and
return the predicted noise ``[B, H, W]``. The image is resized to ``work_size`` (76) bilinearly
on the way in and area-averaged back to ``H x W`` on the way out.

``FCDenoiser`` (4 linear layers, ``width`` = 1200 units in the reference size)::

    x -> 76x76 -> flatten -> FC1 -> BN -> SiLU (+ emb1(t)) -> FC2 -> BN -> SiLU
      -> FC3 -> BN -> SiLU (+ emb2(t)) -> FC4 -> 76x76 -> H x W

``UNetDenoiser`` (2 down blocks, a bottleneck, 2 up blocks; 3x3 convolutions, 32 in all with
the default 6 per block: 1 input + 5 x 6 + 1 output)::

    x -> 76x76 -> conv(1, c1) -> D1(c1, c1) -> pool -> D2(c1, c2) -> pool -> B(c2, c3)
      -> up, cat D2 -> U2(c3 + c2, c2) -> up, cat D1 -> U1(c2 + c1, c1) -> conv(c1, 1) -> H x W

Each block is ``convs_per_block`` x (3x3 conv -> BatchNorm -> SiLU) with the time embedding
(a linear map of the sinusoidal features to the block's channels) added after its first conv.
Pooling is 2 x 2 average (76 -> 38 -> 19), upsampling nearest x2. The reference work gives the
layer structure, not the channel widths; ``REFERENCE_SIZES`` records the widths used here.
"""

from __future__ import annotations

import math

from ._torch import require_torch

torch = require_torch("optdiff.evaluation.digital.nets (the FC and U-Net baselines)")
nn = torch.nn
F = torch.nn.functional

__all__ = ["SinusoidalEmbedding", "Resize", "FCDenoiser", "UNetDenoiser", "fc_param_count",
           "unet_param_count", "match_width", "build_net", "REFERENCE_SIZES", "count_params",
           "odu_param_count", "WORK_SIZE", "TEMB_DIM"]

#: Side of the square grid the digital nets work on (the reference work's 76 x 76).
WORK_SIZE = 76
#: Number of sinusoidal time features.
TEMB_DIM = 128
#: Widths of the reference-size networks (FC: 1200 units, from the reference work; U-Net:
#: channels c1, c2, c3 = 64, 128, 256, chosen here: the reference work does not state them).
REFERENCE_SIZES = {"fc": {"width": 1200}, "unet": {"c1": 64, "c2": 128, "c3": 256}}


class SinusoidalEmbedding(nn.Module):
    """``t [B]`` -> ``[sin(t f_k), cos(t f_k)]``, ``f_k = 10000^(-k / (dim/2))`` (Vaswani et al.)."""

    def __init__(self, dim: int = TEMB_DIM):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"embedding dim must be an even number >= 2, got {dim}")
        half = dim // 2
        self.dim = dim
        self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(half) / half),
                             persistent=False)

    def forward(self, t):
        a = t.to(self.freqs.dtype)[:, None] * self.freqs[None, :]
        return torch.cat([torch.sin(a), torch.cos(a)], dim=1)


class Resize(nn.Module):
    """Resize ``[B, C, h, w]`` to ``size x size``: bilinear when enlarging, area mean when shrinking."""

    def __init__(self, size: int):
        super().__init__()
        self.size = int(size)

    def forward(self, x):
        if x.shape[-1] == self.size and x.shape[-2] == self.size:
            return x
        if x.shape[-1] < self.size:
            return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return F.adaptive_avg_pool2d(x, (self.size, self.size))


def _image_batch(x, image_size: int):
    if x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4 or x.shape[1] != 1 or tuple(x.shape[-2:]) != (image_size, image_size):
        raise ValueError(f"x must be [B, {image_size}, {image_size}] (or [B, 1, ...]), got {tuple(x.shape)}")
    return x


class FCDenoiser(nn.Module):
    """The reference work's fully connected noise predictor (see the module docstring)."""

    kind = "fc"

    def __init__(self, image_size: int = 20, width: int = 1200, work_size: int = WORK_SIZE,
                 temb_dim: int = TEMB_DIM):
        super().__init__()
        if width < 1 or image_size < 2 or work_size < 2:
            raise ValueError(f"need width >= 1 and sizes >= 2, got {width}, {image_size}, {work_size}")
        self.config = {"kind": "fc", "image_size": int(image_size), "width": int(width),
                       "work_size": int(work_size), "temb_dim": int(temb_dim)}
        D = work_size * work_size
        self.image_size, self.work_size = image_size, work_size
        self.resize_in, self.resize_out = Resize(work_size), Resize(image_size)
        self.fc1, self.fc2 = nn.Linear(D, width), nn.Linear(width, width)
        self.fc3, self.fc4 = nn.Linear(width, width), nn.Linear(width, D)
        self.bn1, self.bn2, self.bn3 = (nn.BatchNorm1d(width) for _ in range(3))
        self.act = nn.SiLU()
        self.embed = SinusoidalEmbedding(temb_dim)
        self.emb1, self.emb2 = nn.Linear(temb_dim, width), nn.Linear(temb_dim, width)

    def forward(self, x, t):
        x = _image_batch(x, self.image_size)
        B = x.shape[0]
        e = self.embed(t)
        h = self.resize_in(x).reshape(B, -1)
        h = self.act(self.bn1(self.fc1(h))) + self.emb1(e)
        h = self.act(self.bn2(self.fc2(h)))
        h = self.act(self.bn3(self.fc3(h))) + self.emb2(e)
        h = self.fc4(h).reshape(B, 1, self.work_size, self.work_size)
        return self.resize_out(h)[:, 0]


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, convs: int, temb_dim: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False)
                                   for i in range(convs))
        self.norms = nn.ModuleList(nn.BatchNorm2d(cout) for _ in range(convs))
        self.act = nn.SiLU()
        self.emb = nn.Linear(temb_dim, cout)

    def forward(self, h, e):
        for i, (conv, bn) in enumerate(zip(self.convs, self.norms)):
            h = self.act(bn(conv(h)))
            if i == 0:
                h = h + self.emb(e)[:, :, None, None]
        return h


class UNetDenoiser(nn.Module):
    """The reference work's U-Net noise predictor (see the module docstring)."""

    kind = "unet"

    def __init__(self, image_size: int = 20, c1: int = 64, c2: int = 128, c3: int = 256,
                 convs_per_block: int = 6, work_size: int = WORK_SIZE, temb_dim: int = TEMB_DIM):
        super().__init__()
        if min(c1, c2, c3, convs_per_block) < 1:
            raise ValueError(f"channel counts and convs_per_block must be >= 1, got {c1}, {c2}, {c3}, "
                             f"{convs_per_block}")
        if work_size % 4:
            raise ValueError(f"work_size must be divisible by 4 (two 2x2 poolings), got {work_size}")
        self.config = {"kind": "unet", "image_size": int(image_size), "c1": int(c1), "c2": int(c2),
                       "c3": int(c3), "convs_per_block": int(convs_per_block),
                       "work_size": int(work_size), "temb_dim": int(temb_dim)}
        self.image_size = image_size
        n = convs_per_block
        self.resize_in, self.resize_out = Resize(work_size), Resize(image_size)
        self.embed = SinusoidalEmbedding(temb_dim)
        self.inc = nn.Conv2d(1, c1, 3, padding=1)
        self.down1, self.down2 = _Block(c1, c1, n, temb_dim), _Block(c1, c2, n, temb_dim)
        self.mid = _Block(c2, c3, n, temb_dim)
        self.up2, self.up1 = _Block(c3 + c2, c2, n, temb_dim), _Block(c2 + c1, c1, n, temb_dim)
        self.outc = nn.Conv2d(c1, 1, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x, t):
        x = _image_batch(x, self.image_size)
        e = self.embed(t)
        h0 = self.inc(self.resize_in(x))
        d1 = self.down1(h0, e)
        d2 = self.down2(self.pool(d1), e)
        m = self.mid(self.pool(d2), e)
        u2 = self.up2(torch.cat([self.upsample(m), d2], dim=1), e)
        u1 = self.up1(torch.cat([self.upsample(u2), d1], dim=1), e)
        return self.resize_out(self.outc(u1))[:, 0]


# ------------------------------------------------------------------------------ sizes
def count_params(net) -> int:
    """Trainable parameters of a module (BatchNorm running statistics are buffers, not counted)."""
    return int(sum(p.numel() for p in net.parameters() if p.requires_grad))


def fc_param_count(width: int, work_size: int = WORK_SIZE, temb_dim: int = TEMB_DIM) -> int:
    """Parameters of ``FCDenoiser(width=width)`` (closed form; equals :func:`count_params`)."""
    D, w = work_size * work_size, width
    return (D * w + w) + 2 * (w * w + w) + (w * D + D) + 3 * 2 * w + 2 * (temb_dim * w + w)


def unet_param_count(c1: int, c2: int, c3: int, convs_per_block: int = 6, temb_dim: int = TEMB_DIM) -> int:
    """Parameters of ``UNetDenoiser(c1=..., c2=..., c3=...)`` (closed form)."""
    def block(cin, cout):
        n = convs_per_block
        return 9 * cin * cout + (n - 1) * 9 * cout * cout + n * 2 * cout + temb_dim * cout + cout
    return ((9 * c1 + c1) + block(c1, c1) + block(c1, c2) + block(c2, c3) + block(c3 + c2, c2)
            + block(c2 + c1, c1) + (9 * c1 + 1))


def odu_param_count(n: int, layers: int, sets: int) -> int:
    """The ODU's trained phases: M x L x N^2 (the per-pixel read-out, 3 H W per set, is not counted)."""
    return int(sets) * int(layers) * int(n) ** 2


def match_width(kind: str, target: int, tol: float = 0.05, convs_per_block: int = 6,
                work_size: int = WORK_SIZE, temb_dim: int = TEMB_DIM) -> tuple[dict, int]:
    """Widths that give ``kind`` (``"fc"`` or ``"unet"``) about ``target`` parameters.

    FC: the integer ``width`` whose count is closest. U-Net: ``c2 = 2 c1`` and the bottleneck
    ``c3`` in ``2 c1 .. 8 c1`` searched together (``c3`` near ``4 c1`` preferred on ties), since
    ``c1`` alone moves the count in steps too coarse for small targets.

    Returns ``(widths, count)``; raises ``ValueError`` when no size is within ``tol`` (relative)
    of ``target``, naming the closest size.
    """
    target = int(target)
    if target < 1:
        raise ValueError(f"target parameter count must be >= 1, got {target}")
    if kind == "fc":
        best = min((abs(fc_param_count(w, work_size, temb_dim) - target), w) for w in range(1, 8193))
        widths = {"width": best[1]}
        count = fc_param_count(best[1], work_size, temb_dim)
    elif kind == "unet":
        cands = []
        for c1 in range(1, 257):
            for c3 in range(2 * c1, 8 * c1 + 1):
                p = unet_param_count(c1, 2 * c1, c3, convs_per_block, temb_dim)
                cands.append((abs(p - target), abs(c3 - 4 * c1), c1, c3, p))
            if unet_param_count(c1, 2 * c1, 2 * c1, convs_per_block, temb_dim) > 2 * target:
                break
        _, _, c1, c3, count = min(cands)
        widths = {"c1": c1, "c2": 2 * c1, "c3": c3}
    else:
        raise ValueError(f"unknown digital model kind {kind!r}; known: 'fc', 'unet'")
    if abs(count - target) > tol * target:
        raise ValueError(f"no {kind} size has {target} parameters within {tol:.0%}: the closest, {widths}, "
                         f"has {count}")
    return widths, count


def build_net(config: dict):
    """A fresh network from its ``config`` dict (``net.config``, as stored in checkpoints)."""
    cfg = dict(config)
    kind = cfg.pop("kind", None)
    if kind == "fc":
        return FCDenoiser(**cfg)
    if kind == "unet":
        return UNetDenoiser(**cfg)
    raise ValueError(f"unknown digital model kind {kind!r}; known: 'fc', 'unet'")
