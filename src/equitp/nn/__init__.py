"""Modules: Clebsch–Gordan tensor products with e3nn's signatures."""

from ._tensor_product import (
    ElementwiseTensorProduct,
    FullTensorProduct,
    FullyConnectedTensorProduct,
    TensorProduct,
    channelwise_tensor_product,
)

__all__ = [
    "TensorProduct",
    "FullyConnectedTensorProduct",
    "FullTensorProduct",
    "ElementwiseTensorProduct",
    "channelwise_tensor_product",
]
