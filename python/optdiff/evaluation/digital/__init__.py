"""Digital baseline denoisers in PyTorch: the reference work's fully connected network and U-Net,
trained with the same DDPM as the optics (optional extra: ``pip install optdiff[torch]``).

Importing this package does not import PyTorch. Its modules do, and raise an ``ImportError``
naming the extra when PyTorch is missing:

* :mod:`.nets`   ``FCDenoiser``, ``UNetDenoiser``, ``match_width`` (sizes matched to an ODU);
* :mod:`.train`  ``train_ddpm`` (eps-prediction DDPM), ``TorchPredictor`` (the samplers'
  ``predict_eps(x, t)``), ``save_net`` / ``load_net`` (atomic optdiff checkpoints);
* :mod:`.flops`  a FLOP counter for PyTorch modules (forward hooks).

The least-squares ``LinearDenoiser`` (:mod:`optdiff.evaluation.baselines`, NumPy) is the third
baseline and needs no extra.
"""

from ._torch import TORCH_EXTRA, require_torch, torch_available

__all__ = ["TORCH_EXTRA", "require_torch", "torch_available"]
