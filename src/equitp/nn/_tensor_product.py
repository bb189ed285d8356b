"""Tensor-product modules with e3nn 0.6's signatures: `TensorProduct`, `FullyConnectedTensorProduct`,
`FullTensorProduct`, `ElementwiseTensorProduct` and `channelwise_tensor_product`.

The same weights give the same output as e3nn (same instruction order, normalisation and weight layout); the work is
done by ``equitp.ops.tensor_product`` on the executor chosen by ``backend``.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from ..descriptors._tensor_product import TensorProductDescriptor
from ..irreps import Irreps, as_irreps
from ..ops._tensor_product import register_descriptor, resolve_backend, tensor_product

__all__ = [
    "TensorProduct",
    "FullyConnectedTensorProduct",
    "FullTensorProduct",
    "ElementwiseTensorProduct",
    "channelwise_tensor_product",
]


class TensorProduct(torch.nn.Module):
    """Clebsch–Gordan tensor product with e3nn's instructions, normalisation and weight layout.

    Args:
        irreps_in1, irreps_in2, irreps_out: irreps (strings, `Irreps` or e3nn objects).
        instructions: tuples ``(i_in1, i_in2, i_out, mode, has_weight[, path_weight])`` with modes ``uvw``, ``uvu``,
            ``uvv``, ``uuw``, ``uuu``, ``uvuv``.
        in1_var, in2_var, out_var: per-block variances (e3nn's meaning).
        irrep_normalization: ``"component"`` (default), ``"norm"`` or ``"none"``.
        path_normalization: ``"element"`` (default), ``"path"`` or ``"none"``.
        internal_weights: hold the weights as a parameter (default: ``shared_weights`` and there are weights).
        shared_weights: one weight vector for all items (default True) or one per item (passed to ``forward``).
        layout: ``"mul_ir"`` (e3nn's, each block ``[mul, 2l+1]``) or ``"ir_mul"`` (``[2l+1, mul]``).
        backend: ``None`` (numba kernel on CPU, reference elsewhere), ``"cpu"`` or ``"reference"``.

    Shapes: ``x (..., irreps_in1.dim)``, ``y (..., irreps_in2.dim)`` with broadcasting leading dims; ``weight``
    ``(weight_numel,)`` when shared else ``(..., weight_numel)``; output ``(..., irreps_out.dim)``.

    Example:
        >>> tp = TensorProduct("2x1o", "1x1o", "2x0e", [(0, 0, 0, "uvu", True)])
        >>> tp(torch.randn(4, 6), torch.randn(4, 3)).shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        irreps_in1,
        irreps_in2,
        irreps_out,
        instructions: Sequence[tuple],
        in1_var: Optional[Sequence[float]] = None,
        in2_var: Optional[Sequence[float]] = None,
        out_var: Optional[Sequence[float]] = None,
        irrep_normalization: Optional[str] = None,
        path_normalization: Optional[str] = None,
        internal_weights: Optional[bool] = None,
        shared_weights: Optional[bool] = None,
        layout: str = "mul_ir",
        backend: Optional[str] = None,
    ):
        super().__init__()
        self.descriptor = TensorProductDescriptor(
            irreps_in1,
            irreps_in2,
            irreps_out,
            instructions,
            in1_var=in1_var,
            in2_var=in2_var,
            out_var=out_var,
            irrep_normalization=irrep_normalization,
            path_normalization=path_normalization,
            layout=layout,
        )
        register_descriptor(self.descriptor)  # an integer id, a constant under torch.compile
        if backend is not None:
            resolve_backend(backend, torch.device("cpu"))
        self.backend = backend
        self.irreps_in1 = self.descriptor.irreps_in1
        self.irreps_in2 = self.descriptor.irreps_in2
        self.irreps_out = self.descriptor.irreps_out
        self.instructions = self.descriptor.paths
        self.weight_numel = self.descriptor.weight_numel
        if shared_weights is False and internal_weights is None:
            internal_weights = False
        if shared_weights is None:
            shared_weights = True
        if internal_weights is None:
            internal_weights = shared_weights and self.weight_numel > 0
        if internal_weights and not shared_weights:
            raise ValueError("internal_weights=True needs shared_weights=True")
        self.shared_weights = shared_weights
        self.internal_weights = internal_weights
        if internal_weights and self.weight_numel > 0:
            self.weight = torch.nn.Parameter(torch.randn(self.weight_numel))
        else:
            self.register_buffer("weight", torch.Tensor())

    @property
    def layout(self) -> str:
        return self.descriptor.layout

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out} | "
            f"{len(self.instructions)} paths | {self.weight_numel} weights)"
        )

    def _get_weight(self, weight: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if self.weight_numel == 0:
            return None
        if weight is None:
            if not self.internal_weights:
                raise ValueError(
                    f"weight: this module has no internal weights; pass a tensor of {self.weight_numel} weights"
                    + ("" if self.shared_weights else " per item (..., weight_numel)")
                )
            return self.weight
        if self.shared_weights and weight.dim() != 1:
            raise ValueError(
                f"weight: shared_weights=True expects shape ({self.weight_numel},), got {tuple(weight.shape)}"
            )
        return weight

    def forward(self, x: torch.Tensor, y: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The tensor product of ``x`` and ``y`` (see the class docstring for shapes)."""
        return tensor_product(self.descriptor, x, y, self._get_weight(weight), backend=self.backend)

    def right(self, y: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The linear map ``x -> tp(x, y)`` as a matrix ``(..., irreps_in1.dim, irreps_out.dim)``."""
        eye = torch.eye(self.irreps_in1.dim, dtype=y.dtype, device=y.device)
        out = self.forward(eye.reshape((self.irreps_in1.dim,) + (1,) * (y.dim() - 1) + (-1,)), y, weight)
        return out.movedim(0, -2)


def _check_channelwise_filter(filter_ir_out):
    if filter_ir_out is None:
        return None
    return {mi.ir for mi in as_irreps(filter_ir_out, "filter_ir_out")}


class FullyConnectedTensorProduct(TensorProduct):
    """All paths ``(i1, i2) -> i_out`` allowed by the selection rules, each fully connected (``uvw``), as e3nn's."""

    def __init__(self, irreps_in1, irreps_in2, irreps_out, irrep_normalization=None, path_normalization=None, **kwargs):
        irreps_in1 = as_irreps(irreps_in1, "irreps_in1")
        irreps_in2 = as_irreps(irreps_in2, "irreps_in2")
        irreps_out = as_irreps(irreps_out, "irreps_out")
        instr = [
            (i1, i2, io, "uvw", True, 1.0)
            for i1, (_, ir1) in enumerate(irreps_in1)
            for i2, (_, ir2) in enumerate(irreps_in2)
            for io, (_, iro) in enumerate(irreps_out)
            if iro in ir1 * ir2
        ]
        super().__init__(
            irreps_in1,
            irreps_in2,
            irreps_out,
            instr,
            irrep_normalization=irrep_normalization,
            path_normalization=path_normalization,
            **kwargs,
        )


class FullTensorProduct(TensorProduct):
    """The full tensor product (``uvuv``, no weights) with outputs sorted, as e3nn's, optionally filtered."""

    def __init__(self, irreps_in1, irreps_in2, filter_ir_out=None, irrep_normalization: str = None, **kwargs):
        irreps_in1 = as_irreps(irreps_in1, "irreps_in1").simplify()
        irreps_in2 = as_irreps(irreps_in2, "irreps_in2").simplify()
        keep = _check_channelwise_filter(filter_ir_out)
        out = []
        instr = []
        for i1, (m1, ir1) in enumerate(irreps_in1):
            for i2, (m2, ir2) in enumerate(irreps_in2):
                for ir in ir1 * ir2:
                    if keep is not None and ir not in keep:
                        continue
                    instr.append((i1, i2, len(out), "uvuv", False))
                    out.append((m1 * m2, ir))
        out_sorted, p, _ = Irreps(out).sort()
        instr = [(i1, i2, p[io], mode, w) for i1, i2, io, mode, w in instr]
        super().__init__(irreps_in1, irreps_in2, out_sorted, instr, irrep_normalization=irrep_normalization, **kwargs)


class ElementwiseTensorProduct(TensorProduct):
    """Tensor product of the i-th irrep of ``x`` with the i-th irrep of ``y`` (``uuu``, no weights), as e3nn's."""

    def __init__(self, irreps_in1, irreps_in2, filter_ir_out=None, irrep_normalization: str = None, **kwargs):
        irreps_in1 = as_irreps(irreps_in1, "irreps_in1").simplify()
        irreps_in2 = as_irreps(irreps_in2, "irreps_in2").simplify()
        if irreps_in1.num_irreps != irreps_in2.num_irreps:
            raise ValueError(
                f"irreps_in2: expected as many irreps as irreps_in1 ({irreps_in1.num_irreps}), "
                f"got {irreps_in2.num_irreps} ({irreps_in2})"
            )
        keep = _check_channelwise_filter(filter_ir_out)
        a: List = list(irreps_in1)
        b: List = list(irreps_in2)
        i = 0
        while i < len(a):
            (m1, ir1), (m2, ir2) = a[i], b[i]
            if m1 < m2:
                b[i] = (m1, ir2)
                b.insert(i + 1, (m2 - m1, ir2))
            if m2 < m1:
                a[i] = (m2, ir1)
                a.insert(i + 1, (m1 - m2, ir1))
            i += 1
        out = []
        instr = []
        for i, ((mul, ir1), (_, ir2)) in enumerate(zip(a, b)):
            for ir in ir1 * ir2:
                if keep is not None and ir not in keep:
                    continue
                instr.append((i, i, len(out), "uuu", False))
                out.append((mul, ir))
        super().__init__(Irreps(a), Irreps(b), Irreps(out), instr, irrep_normalization=irrep_normalization, **kwargs)


def channelwise_tensor_product(
    irreps_in1,
    irreps_in2,
    filter_irreps_out,
    shared_weights: bool = False,
    internal_weights: bool = False,
    **kwargs,
) -> TensorProduct:
    """The channelwise (``uvu``) product of MACE and NequIP: one output block per allowed path.

    For every block ``(mul, ir1)`` of ``irreps_in1``, ``ir2`` of ``irreps_in2`` and every ``ir_out`` in ``ir1 x ir2``
    that appears in ``filter_irreps_out``, one output block ``(mul, ir_out)`` with a ``uvu`` path. Outputs are in path
    order (not sorted), as MACE builds them. Weights per item by default (``shared_weights=False``), as in a
    convolution whose weights come from a radial network.

    Example:
        >>> tp = channelwise_tensor_product("8x0e+8x1o", "0e+1o", "8x0e+8x1o")
        >>> str(tp.irreps_out), tp.weight_numel
        ('8x0e+8x1o+8x1o+8x0e', 32)
    """
    irreps_in1 = as_irreps(irreps_in1, "irreps_in1")
    irreps_in2 = as_irreps(irreps_in2, "irreps_in2")
    keep = {mi.ir for mi in as_irreps(filter_irreps_out, "filter_irreps_out")}
    out = []
    instr = []
    for i1, (mul, ir1) in enumerate(irreps_in1):
        for i2, (_, ir2) in enumerate(irreps_in2):
            for ir in ir1 * ir2:
                if ir in keep:
                    instr.append((i1, i2, len(out), "uvu", True))
                    out.append((mul, ir))
    if not instr:
        raise ValueError(
            f"filter_irreps_out: no path of {irreps_in1} x {irreps_in2} reaches any of {sorted(keep)}"
        )
    return TensorProduct(
        irreps_in1, irreps_in2, Irreps(out), instr, shared_weights=shared_weights, internal_weights=internal_weights, **kwargs
    )
