"""Sparse products as data: index rules, sizes, flop/byte counts and derived (backward) descriptors."""

from ._accumulate import SparseAccumulation, real_cg_rule
from ._tensor_product import Path, TensorProductDescriptor

__all__ = [
    "SparseAccumulation",
    "real_cg_rule",
    "Path",
    "TensorProductDescriptor",
]
