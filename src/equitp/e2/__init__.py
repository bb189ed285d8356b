"""E(2)-steerable convolutions: groups C_N, D_N, SO(2), O(2), steerable kernel bases, padded and block expansion.

Quick start::

    >>> import torch
    >>> from equitp import e2
    >>> space = e2.rot2d(8)                                   # C_8 acting on the plane
    >>> feat = e2.FieldType(space, [space.regular_repr] * 4)  # 4 regular fields: 32 channels
    >>> conv = e2.R2Conv(feat, feat, kernel_size=5, padding=2)
    >>> conv(torch.randn(1, 32, 16, 16)).shape
    torch.Size([1, 32, 16, 16])
    >>> conv.weights.numel()                                  # as e2cnn's R2Conv
    1408

The kernel basis of a layer is shared by every layer with the same field types and sampling; the weights are
expanded into the filter by one of two methods that give the same filter: ``"padded"`` (one dense basis per
representation pair and one GEMM, e2cnn's method) or ``"block"`` (only the irreps blocks are stored, filled by a
sparse kernel -- numba on CPU, Triton on GPU -- then the changes of basis are applied). ``expansion="auto"`` picks
the cheaper one by a cost model (see ``docs/e2.md``).
"""

from ._basis import BasisParams, PairBasis, basis_params, grid_coordinates, irreps_pair_solution, pair_basis
from ._conv import R2Conv
from ._expansion import COST_MODEL, EXPANSIONS, LayerBasis, layer_basis
from ._expansion import EXECUTORS
from ._group import (
    Group,
    IrreducibleRepresentation,
    Representation,
    cyclic_group,
    dihedral_group,
    directsum,
    o2_group,
    so2_group,
)
from ._gspace import FieldType, GeometricTensor, GSpace2D, flip_rot2d, rot2d
from ._nn import GroupPooling, InnerBatchNorm, NormNonLinearity, NormPool, PointwiseNonLinearity, ReLU
from ._triton import triton_available

__all__ = [
    # groups and representations
    "Group",
    "IrreducibleRepresentation",
    "Representation",
    "cyclic_group",
    "dihedral_group",
    "so2_group",
    "o2_group",
    "directsum",
    # spaces and fields
    "GSpace2D",
    "rot2d",
    "flip_rot2d",
    "FieldType",
    "GeometricTensor",
    # kernel bases and expansions
    "BasisParams",
    "basis_params",
    "grid_coordinates",
    "irreps_pair_solution",
    "PairBasis",
    "pair_basis",
    "LayerBasis",
    "layer_basis",
    "EXPANSIONS",
    "EXECUTORS",
    "COST_MODEL",
    "triton_available",
    # modules
    "R2Conv",
    "PointwiseNonLinearity",
    "ReLU",
    "NormNonLinearity",
    "GroupPooling",
    "NormPool",
    "InnerBatchNorm",
]
