"""Parameter and FLOP counts (one multiply-add = 2 FLOPs; activations, pooling and norms not counted).

Conv: 2 C_in C_out k^2 H_out W_out per sample; linear: 2 n_in n_out. Shapes come from one dummy
forward pass with hooks. Optical blocks are counted apart: free on the bench, their digital
simulation cost is :meth:`FreeSpaceTransform.flops` / :meth:`FibreTransform.flops`.
"""

from __future__ import annotations

__all__ = ["torch_flops", "ffnet_costs", "model_params"]


def torch_flops(module, input_shape) -> int:
    """FLOPs of one sample through a torch module with Conv2d/Linear layers."""
    import torch
    from torch import nn

    total = [0]

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            total[0] += 2 * m.in_channels // m.groups * m.out_channels * k * out.shape[-2] * out.shape[-1]
        elif isinstance(m, nn.Linear):
            total[0] += 2 * m.in_features * m.out_features

    hs = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            module(torch.zeros(1, *input_shape))
    finally:
        for h in hs:
            h.remove()
    return int(total[0])


def model_params(module) -> int:
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


def ffnet_costs(net, readout_features: int | None = None) -> dict:
    """Digital FLOPs of one forward pass of an FFNet, of goodness inference (C passes) and of the read-out."""
    import torch

    x = torch.zeros(1, 1, *net.image_shape)
    digital = optical_sim = 0
    for block, spec in zip(net.blocks, net.specs):
        if spec["kind"] in ("conv", "fc"):
            digital += torch_flops(block, tuple(x.shape[1:]))
            with torch.no_grad():
                x = block(x)
        else:
            optical_sim += block.transform.flops()
            x = torch.zeros(1, block.out_features)
    C = net.num_classes
    out = {"params": net.parameter_count(), "flops_forward": digital, "flops_goodness": C * digital,
           "optics_sim_flops": optical_sim}
    if readout_features:
        out["readout_params"] = (readout_features + 1) * C
        out["flops_readout"] = digital + 2 * readout_features * C
    return out
