"""Equivariant nonlinearities, pooling over fields and batch normalisation for :class:`FieldType` feature maps.

All modules take a ``(batch, in_type.size, H, W)`` tensor or a :class:`GeometricTensor` and return the same kind.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ._gspace import FieldType, GeometricTensor

__all__ = [
    "PointwiseNonLinearity",
    "ReLU",
    "NormNonLinearity",
    "GroupPooling",
    "NormPool",
    "InnerBatchNorm",
]


def _check_type(in_type: Any, pointwise: bool, module: str) -> FieldType:
    if not isinstance(in_type, FieldType):
        raise TypeError(f"in_type must be a FieldType; got {type(in_type).__name__}")
    if pointwise:
        for i, r in enumerate(in_type.representations):
            if not r.pointwise:
                raise ValueError(
                    f"{module} needs fields whose representation permutes channels (trivial, regular, quotient); "
                    f"in_type field {i} is {r.name}"
                )
    return in_type


def _unwrap(module: torch.nn.Module, input: Any) -> tuple[torch.Tensor, bool]:
    wrapped = isinstance(input, GeometricTensor)
    if wrapped:
        if input.type != module.in_type:
            raise ValueError(f"input has field type {input.type}, expected {module.in_type}")
        x = input.tensor
    else:
        x = input
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor or a GeometricTensor; got {type(input).__name__}")
    if x.dim() != 4 or x.shape[1] != module.in_type.size:
        raise ValueError(f"input must have shape (batch, {module.in_type.size}, H, W); got {tuple(x.shape)}")
    return x, wrapped


def _field_groups(ft: FieldType) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """Fields grouped by size: ``(size, field indices, channel indices (n_fields, size))``."""
    groups: dict[int, list[int]] = {}
    for f, r in enumerate(ft.representations):
        groups.setdefault(r.size, []).append(f)
    out = []
    for size, fields in groups.items():
        starts = torch.tensor([ft.field_starts[f] for f in fields])
        out.append((size, torch.tensor(fields), starts[:, None] + torch.arange(size)[None, :]))
    return out


_POINTWISE = {
    "p_relu": torch.relu,
    "p_elu": F.elu,
    "p_sigmoid": torch.sigmoid,
    "p_tanh": torch.tanh,
}


class PointwiseNonLinearity(torch.nn.Module):
    """A scalar function applied channel by channel; equivariant for trivial, regular and quotient fields.

    Args:
        in_type: the field type (every field must permute its channels).
        function: ``"p_relu"``, ``"p_elu"``, ``"p_sigmoid"`` or ``"p_tanh"``.
    """

    def __init__(self, in_type: FieldType, function: str = "p_relu"):
        super().__init__()
        self.in_type = _check_type(in_type, True, type(self).__name__)
        self.out_type = in_type
        if function not in _POINTWISE:
            raise ValueError(f"function must be one of {sorted(_POINTWISE)}; got {function!r}")
        self.function = function

    def forward(self, input: Any) -> Any:
        x, wrapped = _unwrap(self, input)
        y = _POINTWISE[self.function](x)
        return GeometricTensor(y, self.out_type) if wrapped else y


class ReLU(PointwiseNonLinearity):
    """Channel-wise ReLU for trivial, regular and quotient fields."""

    def __init__(self, in_type: FieldType):
        super().__init__(in_type, "p_relu")


class NormNonLinearity(torch.nn.Module):
    """Scale every field by a function of its norm: ``x -> x * f(|x| - b) / |x|`` (any orthogonal field).

    Args:
        in_type: the field type.
        function: ``"n_relu"`` (``f = relu``) or ``"n_sigmoid"`` (``f(t) = |x| sigmoid(t)``, i.e. gating by the
            norm).
        bias: learn one threshold ``b`` per field (initialised to 0.1), else ``b = 0``.
    """

    def __init__(self, in_type: FieldType, function: str = "n_relu", bias: bool = True):
        super().__init__()
        self.in_type = _check_type(in_type, False, type(self).__name__)
        self.out_type = in_type
        if function not in ("n_relu", "n_sigmoid"):
            raise ValueError(f"function must be 'n_relu' or 'n_sigmoid'; got {function!r}")
        self.function = function
        if bias:
            self.bias = torch.nn.Parameter(torch.full((len(in_type),), 0.1))
        else:
            self.register_parameter("bias", None)
        self._groups = _field_groups(in_type)

    def forward(self, input: Any) -> Any:
        x, wrapped = _unwrap(self, input)
        out = torch.empty_like(x)
        for size, fields, channels in self._groups:
            idx = channels.to(x.device)
            v = x[:, idx.reshape(-1)].view(x.shape[0], idx.shape[0], size, *x.shape[2:])
            norm = v.pow(2).sum(2, keepdim=True).clamp_min(1e-12).sqrt()
            b = 0.0
            if self.bias is not None:
                b = self.bias[fields.to(x.device)].view(1, -1, 1, 1, 1)
            if self.function == "n_relu":
                scale = torch.relu(norm - b) / norm
            else:
                scale = torch.sigmoid(norm - b)
            out[:, idx.reshape(-1)] = (v * scale).reshape(x.shape[0], -1, *x.shape[2:])
        return GeometricTensor(out, self.out_type) if wrapped else out


class GroupPooling(torch.nn.Module):
    """Max over the channels of each field: a regular/quotient/trivial field becomes one invariant channel.

    Attributes:
        out_type: one trivial field per input field.
    """

    def __init__(self, in_type: FieldType):
        super().__init__()
        self.in_type = _check_type(in_type, True, type(self).__name__)
        self.out_type = FieldType(in_type.gspace, [in_type.gspace.trivial_repr] * len(in_type))
        self._groups = _field_groups(in_type)

    def forward(self, input: Any) -> Any:
        x, wrapped = _unwrap(self, input)
        if len(self._groups) == 1:
            size = self._groups[0][0]
            y = x.reshape(x.shape[0], -1, size, *x.shape[2:]).amax(2)
        else:
            y = x.new_empty((x.shape[0], len(self.in_type), *x.shape[2:]))
            for size, fields, channels in self._groups:
                idx = channels.to(x.device)
                v = x[:, idx.reshape(-1)].view(x.shape[0], idx.shape[0], size, *x.shape[2:])
                y[:, fields.to(x.device)] = v.amax(2)
        return GeometricTensor(y, self.out_type) if wrapped else y


class NormPool(torch.nn.Module):
    """The norm of each field: one invariant channel per field (any orthogonal field)."""

    def __init__(self, in_type: FieldType):
        super().__init__()
        self.in_type = _check_type(in_type, False, type(self).__name__)
        self.out_type = FieldType(in_type.gspace, [in_type.gspace.trivial_repr] * len(in_type))
        self._groups = _field_groups(in_type)

    def forward(self, input: Any) -> Any:
        x, wrapped = _unwrap(self, input)
        y = x.new_empty((x.shape[0], len(self.in_type), *x.shape[2:]))
        for size, fields, channels in self._groups:
            idx = channels.to(x.device)
            v = x[:, idx.reshape(-1)].view(x.shape[0], idx.shape[0], size, *x.shape[2:])
            y[:, fields.to(x.device)] = v.pow(2).sum(2).clamp_min(1e-12).sqrt()
        return GeometricTensor(y, self.out_type) if wrapped else y


class InnerBatchNorm(torch.nn.Module):
    """Batch normalisation with one mean / variance (and affine pair) per field, shared by its channels.

    Equivariant for trivial, regular and quotient fields (their channels are permuted by the group).
    """

    def __init__(self, in_type: FieldType, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True):
        super().__init__()
        self.in_type = _check_type(in_type, True, type(self).__name__)
        self.out_type = in_type
        self._groups = _field_groups(in_type)
        self.norms = torch.nn.ModuleList(
            torch.nn.BatchNorm3d(len(fields), eps=eps, momentum=momentum, affine=affine)
            for _, fields, _ in self._groups
        )

    def forward(self, input: Any) -> Any:
        x, wrapped = _unwrap(self, input)
        if len(self._groups) == 1:
            size = self._groups[0][0]
            y = self.norms[0](x.reshape(x.shape[0], -1, size, *x.shape[2:])).reshape(x.shape)
        else:
            y = torch.empty_like(x)
            for (size, fields, channels), bn in zip(self._groups, self.norms):
                idx = channels.to(x.device).reshape(-1)
                v = x[:, idx].view(x.shape[0], -1, size, *x.shape[2:])
                y[:, idx] = bn(v).reshape(x.shape[0], -1, *x.shape[2:])
        return GeometricTensor(y, self.out_type) if wrapped else y
