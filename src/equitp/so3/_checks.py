"""Argument checks shared by the ``equitp.so3`` modules."""

from __future__ import annotations

import numbers

import torch

__all__: list = []


def check_degree(l, name: str = "l") -> int:  # noqa: E741
    """Return ``l`` as a Python int, raising a clear error unless it is a non-negative integer.

    Args:
        l: the candidate degree (Python or NumPy integer; ``bool`` is rejected).
        name: the argument name used in error messages.

    Raises:
        TypeError: ``l`` is not an integer.
        ValueError: ``l`` is negative.
    """
    if isinstance(l, bool) or not isinstance(l, numbers.Integral):
        raise TypeError(f"{name} must be a non-negative int, got {l!r} of type {type(l).__name__}")
    l = int(l)  # noqa: E741
    if l < 0:
        raise ValueError(f"{name} must be a non-negative int, got {l}")
    return l


def check_triangle(l1: int, l2: int, l3: int) -> None:
    """Raise ``ValueError`` unless ``|l1 - l2| <= l3 <= l1 + l2``."""
    if not abs(l1 - l2) <= l3 <= l1 + l2:
        raise ValueError(
            f"(l1, l2, l3) = ({l1}, {l2}, {l3}) violates the triangle condition |l1 - l2| <= l3 <= l1 + l2"
        )


def resolve_dtype_device(dtype, device):
    """Fill in ``torch.get_default_dtype()`` and the default device, and check the dtype is floating point."""
    if dtype is None:
        dtype = torch.get_default_dtype()
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating point torch.dtype, got {dtype!r}")
    if device is None:
        device = torch.empty(0).device
    return dtype, torch.device(device)


def check_float_tensor(x, name: str) -> torch.Tensor:
    """Raise ``TypeError`` unless ``x`` is a floating point ``torch.Tensor``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating point dtype, got {x.dtype}")
    return x


def cacheable(*tensors) -> bool:
    """Whether freshly built constant tensors may be stored in a module-level cache.

    Not while torch.compile / torch.export trace (tensors made then can be fake or functional wrappers that must not
    leak into later eager calls).
    """
    if torch.compiler.is_compiling():
        return False
    return all(type(t) is torch.Tensor for t in tensors)
