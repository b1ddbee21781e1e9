"""Torch tensors in front of the optical core: argument checks and zero-copy hand-over.

Every check here reads only a tensor's metadata (type, dtype, device, shape, strides), so the
same functions run on real tensors, on torch.compile's fake tensors and inside the ops. CPU
tensors become NumPy views of the same memory (``Tensor.numpy()``); CUDA tensors are handed to
the CUDA backend as they are. Nothing is converted, moved or made contiguous behind the
caller's back: a tensor that would need it is refused with a message naming the argument.
"""

from __future__ import annotations

import numpy as np
import torch

COMPLEX = (torch.complex64, torch.complex128)
REAL_OF = {torch.complex64: torch.float32, torch.complex128: torch.float64}
COMPLEX_OF = {r: c for c, r in REAL_OF.items()}
NUMPY_OF = {torch.complex64: np.complex64, torch.complex128: np.complex128,
            torch.float32: np.float32, torch.float64: np.float64}
DEVICES = ("cpu", "cuda")


def tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.device.type not in DEVICES:
        raise ValueError(f"{name} is on device {x.device}; optdiff runs on 'cpu' or 'cuda' tensors")
    if x.is_sparse or x.layout != torch.strided:
        raise ValueError(f"{name} must be a dense (strided) tensor, got layout {x.layout}")
    return x


def contiguous(x: torch.Tensor, name: str) -> None:
    if not x.is_contiguous():
        raise ValueError(f"{name} must be contiguous (strides {tuple(x.stride())} for shape "
                         f"{tuple(x.shape)}); optdiff.torch never copies behind your back: pass "
                         f"{name}.contiguous()")


def field(x, name: str = "field", allow_real: bool = False) -> torch.Tensor:
    """A field [..., n, n]: complex64/complex128 (or float32/float64 amplitudes with allow_real)."""
    x = tensor(x, name)
    kinds = (COMPLEX + tuple(COMPLEX_OF)) if allow_real else COMPLEX
    if x.dtype not in kinds:
        what = "complex64 or complex128" + (" (or float32/float64 amplitudes)" if allow_real else "")
        raise TypeError(f"{name} must be {what}, got {x.dtype}; convert with {name}.to(torch.complex64) "
                        "first (integer and half-precision tensors are not supported)")
    if x.dim() < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{name} must have shape [..., n, n] (square in its last two dims), got "
                         f"{tuple(x.shape)}")
    contiguous(x, name)
    return x


def phases(p, name: str, real_dtype: torch.dtype, n: int, layers: int | None = None) -> torch.Tensor:
    p = tensor(p, name)
    if p.dtype != real_dtype:
        raise TypeError(f"{name} must be {real_dtype} to go with the field's precision, got {p.dtype}")
    if p.dim() != 3 or p.shape[-2:] != (n, n) or (layers is not None and p.shape[0] != layers):
        want = f"({layers if layers is not None else 'L'}, {n}, {n})"
        raise ValueError(f"{name} must have shape {want} to match the field's n = {n}, got {tuple(p.shape)}")
    contiguous(p, name)
    return p


def same_device(a: torch.Tensor, an: str, b: torch.Tensor, bn: str) -> None:
    if a.device != b.device:
        raise ValueError(f"{bn} is on {b.device} but {an} on {a.device}; put both on one device "
                         "(optdiff.torch never moves tensors between devices)")


def real_dtype(x: torch.Tensor) -> torch.dtype:
    return REAL_OF.get(x.dtype, x.dtype)


def batched(x: torch.Tensor) -> torch.Tensor:
    """[..., n, n] -> [B, n, n], a view (the tensor is contiguous)."""
    n = x.shape[-1]
    return x.reshape(-1, n, n)


def resolved(x: torch.Tensor) -> torch.Tensor:
    """The tensor with its values materialised: a lazy conj()/neg() view is resolved (one copy)."""
    x = x.detach()
    if x.is_conj():
        x = x.resolve_conj()
    if x.is_neg():
        x = x.resolve_neg()
    return x


def host(x: torch.Tensor) -> np.ndarray:
    """A NumPy view of a contiguous CPU tensor (same memory)."""
    return resolved(x).numpy()


def from_host(a: np.ndarray) -> torch.Tensor:
    """A tensor sharing the NumPy array's memory (the array stays alive with the tensor)."""
    return torch.from_numpy(a)


def check_backend(device: torch.device, name: str = "field"):
    """The optdiff backend for tensors on ``device``; a clear error when it cannot run there."""
    from ..optics.backends import get_backend

    if device.type == "cpu":
        return get_backend("cpu")
    if device.type != "cuda":
        raise ValueError(f"{name} is on device {device}; optdiff runs on 'cpu' or 'cuda' tensors")
    try:
        return get_backend("cuda")
    except RuntimeError as exc:
        raise RuntimeError(f"{name} is a CUDA tensor ({device}) but optdiff's CUDA backend cannot run: {exc}. "
                           f"optdiff.torch never copies to another device: pass {name}.cpu() to run on the "
                           "CPU, or use an optdiff built with CUDA on a machine with a device") from None
