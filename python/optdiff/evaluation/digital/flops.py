"""FLOPs of one forward pass of a PyTorch module, counted with forward hooks on its layers.

Conventions (per image; one multiply-accumulate = 2 FLOPs; documented in docs/evaluation.md):

==================  ===========================================================
``Linear``          ``2 * in * out`` (+ ``out`` with a bias)
``Conv2d``          ``2 * (Cin / groups) * kh * kw * Cout * Hout * Wout`` (+ bias)
``BatchNorm``       ``2`` per element (inference: folded scale and shift)
``SiLU``            ``4`` per element (negate, exp, add, divide-multiply)
``AvgPool2d``       ``kh * kw`` per output element
``Upsample``        nearest: 0 (copies); ``Resize``: bilinear 7 per output
                    element, area mean 1 per input element + 1 per output element
embedding           ``SinusoidalEmbedding``: 3 per feature (scale, sin or cos)
adds                the time embedding added in ``FCDenoiser`` (2 x width) and in
                    each U-Net block (C x H x W): counted on those modules
==================  ===========================================================

Reshapes, concatenations and copies count 0. The Linear/Conv part agrees with PyTorch's own
``torch.utils.flop_counter.FlopCounterMode`` (tested); the rest is this table.
"""

from __future__ import annotations

from ._torch import require_torch

torch = require_torch("optdiff.evaluation.digital.flops")
nn = torch.nn

from .nets import FCDenoiser, Resize, SinusoidalEmbedding, UNetDenoiser, _Block  # noqa: E402

__all__ = ["count_flops"]


def _numel(x) -> int:
    return int(x.numel())


def _flops(module, inputs, output) -> int:
    x = inputs[0] if inputs else None
    if isinstance(module, nn.Linear):
        rows = _numel(output) // module.out_features
        return rows * (2 * module.in_features * module.out_features + (module.out_features if module.bias is not None else 0))
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        per_out = 2 * (module.in_channels // module.groups) * kh * kw + (1 if module.bias is not None else 0)
        return _numel(output) * per_out
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return 2 * _numel(output)
    if isinstance(module, nn.SiLU):
        return 4 * _numel(output)
    if isinstance(module, nn.AvgPool2d):
        k = module.kernel_size
        return (k * k if isinstance(k, int) else k[0] * k[1]) * _numel(output)
    if isinstance(module, nn.Upsample):
        return 0 if module.mode == "nearest" else 7 * _numel(output)
    if isinstance(module, Resize):
        if x.shape[-1] == module.size:
            return 0
        return 7 * _numel(output) if x.shape[-1] < module.size else _numel(x) + _numel(output)
    if isinstance(module, SinusoidalEmbedding):
        return 3 * _numel(output)
    if isinstance(module, _Block):
        return _numel(output)                      # the embedding added after the first conv
    if isinstance(module, FCDenoiser):
        return 2 * output.shape[0] * module.config["width"]
    return 0


def count_flops(net, image_size: int, batch: int = 2) -> dict:
    """FLOPs of one denoising step of ``net`` per image, counted on a forward pass of ``batch``.

    Returns ``{"total": int, "by_type": {layer type: int}}`` (per image). The net is put in eval
    mode (BatchNorm as in inference); its weights are untouched.
    """
    counted = (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.SiLU, nn.AvgPool2d, nn.Upsample,
               Resize, SinusoidalEmbedding, _Block, FCDenoiser, UNetDenoiser)
    by_type: dict[str, int] = {}
    handles = []

    def hook(module, inputs, output):
        f = _flops(module, inputs, output)
        if f:
            by_type[type(module).__name__] = by_type.get(type(module).__name__, 0) + f

    for m in net.modules():
        if isinstance(m, counted):
            handles.append(m.register_forward_hook(hook))
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(batch, image_size, image_size), torch.zeros(batch, dtype=torch.long))
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    per_image = {k: v // batch for k, v in by_type.items()}
    return {"total": int(sum(per_image.values())), "by_type": per_image}
