"""``R2Conv``: the E(2)-steerable convolution on plain ``(batch, channels, H, W)`` tensors."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ._basis import basis_params
from ._expansion import EXPANSIONS, LayerBasis, layer_basis
from ._expansion import EXECUTORS
from ._gspace import FieldType, GeometricTensor

__all__ = ["R2Conv"]


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _pair(value: Any, name: str, minimum: int) -> tuple[int, int]:
    if _is_int(value):
        value = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        value = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints; got {value!r}")
    if min(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return value


class R2Conv(torch.nn.Module):
    r"""Convolution equivariant under translations and the group of ``in_type.gspace`` (C_N, D_N, SO(2), O(2)).

    The filter is a learnt combination of a steerable kernel basis,
    ``kappa(g x) = rho_out(g) kappa(x) rho_in(g)^-1``, built as e2cnn's R2Conv builds it (same rings, widths,
    frequency cut-off, element order, normalisation and weight layout, so weight vectors are interchangeable with
    e2cnn's for the same field types and the number of weights is the same).

    Args:
        in_type: field type of the input; channels ``in_type.size``.
        out_type: field type of the output (same space).
        kernel_size: filter size ``k >= 1`` (even sizes allowed).
        padding: zero padding (int or pair).
        stride: stride (int or pair).
        dilation: dilation (int, the basis is sampled on the dilated grid).
        bias: learn a bias for every trivial irrep in the output fields.
        expansion: ``"padded"`` (one dense basis per representation pair, one GEMM), ``"block"`` (stored irreps
            blocks, sparse fill, then ``Q_out``/``Q_in``) or ``"auto"`` (the cheaper by the cost model). Both give
            the same filter; parameters and ``state_dict`` do not depend on it.
        sigma: ring widths (float or one per ring); default as e2cnn.
        frequencies_cutoff: ``None`` (e2cnn's default policy), a float ``f`` (maximum frequency ``f * r``) or a
            callable ``r -> maximum frequency``.
        rings: ring radii; default ``linspace(0, (k-1)//2, ceil(k/2)) * dilation``.
        initialize: draw the weights with e2cnn's generalised He initialisation (else zeros).
        executor: kernel of the block fill: ``"auto"``, ``"numba"``, ``"triton"`` or ``"torch"``.

    Shapes:
        input ``(batch, in_type.size, H, W)`` (or a :class:`GeometricTensor` of ``in_type``), output
        ``(batch, out_type.size, H_out, W_out)`` (a :class:`GeometricTensor` if the input was one).

    Attributes:
        weights: ``(basis.dim,)`` learnable coefficients.
        bias: ``(T,)`` learnable bias of the ``T`` trivial irreps of ``out_type`` (or ``None``).
        basis: the shared :class:`LayerBasis`.
        expansion: the expansion in use (``"padded"`` or ``"block"``).

    In eval mode the expanded filter and bias are cached and reused until the parameters change.
    """

    def __init__(
        self,
        in_type: FieldType,
        out_type: FieldType,
        kernel_size: int,
        padding: int | tuple[int, int] = 0,
        stride: int | tuple[int, int] = 1,
        dilation: int = 1,
        bias: bool = True,
        expansion: str = "auto",
        sigma: float | Sequence[float] | None = None,
        frequencies_cutoff: float | Callable[[float], float] | None = None,
        rings: Sequence[float] | None = None,
        initialize: bool = True,
        executor: str = "auto",
    ):
        super().__init__()
        if not isinstance(in_type, FieldType):
            raise TypeError(f"in_type must be a FieldType; got {type(in_type).__name__}")
        if not isinstance(out_type, FieldType):
            raise TypeError(f"out_type must be a FieldType; got {type(out_type).__name__}")
        if in_type.gspace != out_type.gspace:
            raise ValueError(
                f"in_type and out_type must belong to the same space; got {in_type.gspace} and {out_type.gspace}"
            )
        if expansion not in EXPANSIONS:
            raise ValueError(f"expansion must be one of {EXPANSIONS}; got {expansion!r}")
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}; got {executor!r}")
        if not _is_int(dilation):
            raise TypeError(f"dilation must be an int; got {dilation!r}")
        params = basis_params(kernel_size, dilation, rings, sigma, frequencies_cutoff)
        self.in_type = in_type
        self.out_type = out_type
        self.kernel_size = int(kernel_size)
        self.padding = _pair(padding, "padding", 0)
        self.stride = _pair(stride, "stride", 1)
        self.dilation = int(dilation)
        self.basis: LayerBasis = layer_basis(in_type, out_type, params)
        self.expansion_requested = expansion
        self.expansion = self.basis.choose_expansion() if expansion == "auto" else expansion
        self.executor = executor
        self.weights = torch.nn.Parameter(torch.empty(self.basis.dim))
        if bias and self.basis.num_bias > 0:
            self.bias = torch.nn.Parameter(torch.zeros(self.basis.num_bias))
        else:
            self.register_parameter("bias", None)
        self._cache: tuple | None = None
        if initialize:
            self.reset_parameters()
        else:
            with torch.no_grad():
                self.weights.zero_()

    # ------------------------------------------------------------------ parameters
    def reset_parameters(self) -> None:
        """Generalised He initialisation (as e2cnn), bias zero."""
        std = self.basis.he_init_std_tensor(self.weights.dtype, self.weights.device)
        with torch.no_grad():
            self.weights.normal_()
            self.weights.mul_(std)
            if self.bias is not None:
                self.bias.zero_()
        self._cache = None

    def _check_parameters(self) -> None:
        w = self.weights
        if not isinstance(w, torch.Tensor) or w.dim() != 1 or w.shape[0] != self.basis.dim:
            shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise ValueError(f"weights must have shape ({self.basis.dim},); got {shape}")
        if self.bias is not None and (self.bias.dim() != 1 or self.bias.shape[0] != self.basis.num_bias):
            raise ValueError(f"bias must have shape ({self.basis.num_bias},); got {tuple(self.bias.shape)}")

    def expand_parameters(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The filter ``(C_out, C_in, k, k)`` and bias ``(C_out,)`` (or ``None``), differentiable in the parameters."""
        self._check_parameters()
        filt = self.basis.expand(self.weights, self.expansion, self.executor)
        bias = None
        if self.bias is not None:
            bias = self.basis.bias_expansion(self.bias.dtype, self.bias.device) @ self.bias
        return filt, bias

    def _cache_key(self) -> tuple:
        w = self.weights
        b = self.bias
        return (
            w._version, w.data_ptr(), w.dtype, w.device,
            None if b is None else (b._version, b.data_ptr()),
        )

    def _eval_parameters(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        key = self._cache_key()
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                filt, bias = self.expand_parameters()
            self._cache = (key, filt, bias)
        return self._cache[1], self._cache[2]

    def train(self, mode: bool = True) -> "R2Conv":
        self._cache = None
        return super().train(mode)

    # ------------------------------------------------------------------ forward
    def forward(self, input: torch.Tensor | GeometricTensor) -> torch.Tensor | GeometricTensor:
        wrapped = isinstance(input, GeometricTensor)
        if wrapped:
            if input.type != self.in_type:
                raise ValueError(f"input has field type {input.type}, expected {self.in_type}")
            x = input.tensor
        else:
            x = input
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor or a GeometricTensor; got {type(input).__name__}")
        if x.dim() != 4 or x.shape[1] != self.in_type.size:
            raise ValueError(f"input must have shape (batch, {self.in_type.size}, H, W); got {tuple(x.shape)}")
        if self.training:
            filt, bias = self.expand_parameters()
        else:
            filt, bias = self._eval_parameters()
        out = F.conv2d(x, filt, bias, stride=self.stride, padding=self.padding, dilation=self.dilation)
        return GeometricTensor(out, self.out_type) if wrapped else out

    def evaluate_output_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int, int]:
        """Output shape for an input of shape ``(batch, C_in, H, W)``."""
        if len(input_shape) != 4 or input_shape[1] != self.in_type.size:
            raise ValueError(f"input_shape must be (batch, {self.in_type.size}, H, W); got {tuple(input_shape)}")
        b, _, h, w = input_shape
        span = self.dilation * (self.kernel_size - 1)
        ho = (h + 2 * self.padding[0] - span - 1) // self.stride[0] + 1
        wo = (w + 2 * self.padding[1] - span - 1) // self.stride[1] + 1
        return b, self.out_type.size, ho, wo

    def export(self) -> torch.nn.Conv2d:
        """A plain :class:`torch.nn.Conv2d` computing the same map with the current parameters."""
        with torch.no_grad():
            filt, bias = self.expand_parameters()
        conv = torch.nn.Conv2d(
            self.in_type.size,
            self.out_type.size,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            bias=bias is not None,
            device=filt.device,
            dtype=filt.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(filt)
            if bias is not None:
                conv.bias.copy_(bias)
        return conv.train(self.training)

    # ------------------------------------------------------------------ checks
    def check_equivariance(
        self,
        atol: float | None = None,
        rtol: float = 0.15,
        elements: Sequence[Any] | None = None,
        assertion: bool = True,
        verbose: bool = False,
    ) -> list[tuple[Any, float]]:
        """Compare ``conv(g x)`` with ``g conv(x)`` on a smooth random input, for each group element.

        Rotations by multiples of ``pi/2`` and reflections move pixels exactly, so their error is rounding only
        (checked against ``atol``, default ``1e-4`` in float32 and ``1e-10`` in float64); other rotations are
        interpolated (bilinear) and their error, measured inside a central disk, is checked against ``rtol``.

        Returns:
            ``[(element, relative error), ...]``: ``max |difference| / max |output|``.

        Raises:
            AssertionError: if ``assertion`` and an error exceeds its tolerance.
        """
        gspace = self.in_type.gspace
        group = gspace.fibergroup
        if elements is None:
            elements = list(gspace.testing_elements)
            if group.continuous:
                n = 8
                angles = [2 * math.pi * i / n for i in range(n)]
                elements = [(j, a) for j in range(2) for a in angles] if group.flips else angles
        w = self.weights
        dtype, device = w.dtype, w.device
        if atol is None:
            atol = 1e-10 if dtype == torch.float64 else 1e-4
        # a square input whose output grid is symmetric about the centre
        span = self.dilation * (self.kernel_size - 1)
        s0, p0 = self.stride[0], self.padding[0]
        if self.stride[0] != self.stride[1] or self.padding[0] != self.padding[1]:
            raise ValueError("check_equivariance needs equal strides and paddings along both axes")
        m = 11
        n = s0 * (m - 1) + span + 1 - 2 * p0
        while n < 9 + self.kernel_size:
            m += 2
            n = s0 * (m - 1) + span + 1 - 2 * p0
        n = 4 * n + 1 if s0 == 1 else n
        gen = torch.Generator(device="cpu").manual_seed(0)
        coarse = torch.randn(2, self.in_type.size, max(4, n // 6), max(4, n // 6), generator=gen, dtype=torch.float64)
        x = F.interpolate(coarse, size=(n, n), mode="bicubic", align_corners=True).to(dtype=dtype, device=device)
        was_training = self.training
        results = []
        try:
            self.eval()
            with torch.no_grad():
                y = self(x)
                ho = y.shape[-1]
                yy, xx = torch.meshgrid(torch.arange(ho, device=device), torch.arange(ho, device=device), indexing="ij")
                c = (ho - 1) / 2
                disk = ((yy - c) ** 2 + (xx - c) ** 2) <= (ho / 4) ** 2
                for g in elements:
                    exact = group.quarter_turns(g) is not None
                    y1 = self.out_type.transform(y, g)
                    y2 = self(self.in_type.transform(x, g))
                    diff = (y1 - y2).abs()
                    scale = y.abs().max().clamp_min(1e-30)
                    if exact:
                        err = float(diff.max() / scale)
                    else:
                        err = float(diff[..., disk].max() / y[..., disk].abs().max().clamp_min(1e-30))
                    results.append((g, err))
                    if verbose:
                        print(f"{g}: relative error {err:.3e} ({'exact' if exact else 'interpolated'})")
                    if assertion:
                        tol = atol if exact else rtol
                        assert err <= tol, f"equivariance error {err:.3e} for element {g} exceeds {tol:.1e}"
        finally:
            self.train(was_training)
        return results

    def extra_repr(self) -> str:
        s = f"{self.in_type}, {self.out_type}, kernel_size={self.kernel_size}, expansion={self.expansion!r}"
        if self.stride != (1, 1):
            s += f", stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != 1:
            s += f", dilation={self.dilation}"
        if self.bias is None:
            s += ", bias=False"
        return s
