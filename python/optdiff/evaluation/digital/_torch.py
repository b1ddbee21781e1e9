"""The one place that imports PyTorch for optdiff: a clear ImportError naming the extra when it is missing."""

from __future__ import annotations

import importlib

__all__ = ["TORCH_EXTRA", "require_torch", "torch_available"]

#: How to get PyTorch for optdiff's digital baselines and CNN / Inception metrics.
TORCH_EXTRA = "pip install optdiff[torch]"


def require_torch(what: str = "the digital baselines"):
    """``import torch`` or raise ``ImportError`` saying which feature needs it and how to install it."""
    try:
        return importlib.import_module("torch")
    except ImportError as exc:
        raise ImportError(f"{what} need PyTorch, which is not installed ({exc}); install the optional "
                          f"extra: {TORCH_EXTRA} (a CPU wheel is enough)") from None


def torch_available() -> bool:
    """True when ``import torch`` works (nothing is imported otherwise)."""
    try:
        require_torch()
    except ImportError:
        return False
    return True
