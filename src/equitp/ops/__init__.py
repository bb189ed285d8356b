"""Differentiable, ``torch.library``-registered operations of equitp (backend chosen per device or ``backend=``)."""

from ._accumulate import accumulate
from ._tensor_product import tensor_product, tp_contract

__all__ = [
    "accumulate",
    "tensor_product",
    "tp_contract",
]
