"""Block expansion with ``Q_in`` applied to the stored blocks (for pairs whose input change of basis is dense).

``kappa_f = Q_out (sum_e w_fe beta_e) Q_in^T = Q_out sum_e w_fe (beta_e Q_in^T)``: applying ``Q_in`` to the ``D``
stored irreps blocks costs nothing per field pair, and ``beta_e Q_in^T`` still only occupies the ``d_out`` rows of
its output irrep. Grouping the elements by output irrep position ``a`` turns the fill into one GEMM per row ``r``
of that irrep, ``(F, P_a) @ (P_a, I * S)``, each written in place into row ``r`` of an ``(O, F_out, F_in * I * S)``
buffer (no reordering copy); ``Q_out`` is then one batched product over the output fields that reads this buffer with strides and writes the
filter's layout.
Backward is the transposed computation (written by hand, and differentiable again: double backward is the
forward).
"""

from __future__ import annotations

from typing import Any

import threading

import numpy as np
import torch

from ._basis import PairBasis

__all__ = ["FoldedPlan", "folded_expand", "workspace"]

_WORKSPACE = threading.local()


def workspace(name: str, numel: int, like: torch.Tensor) -> torch.Tensor:
    """A reusable flat buffer (per thread, name, dtype and device) for intermediates that autograd does not keep.

    Large fresh allocations are page-faulted on first touch; reusing them saves a memory pass per buffer.
    """
    store = getattr(_WORKSPACE, "buffers", None)
    if store is None:
        store = _WORKSPACE.buffers = {}
    key = (name, like.dtype, like.device)
    buf = store.get(key)
    if buf is None or buf.numel() < numel:
        buf = torch.empty(numel, dtype=like.dtype, device=like.device)
        store[key] = buf
    return buf[:numel]


class FoldedPlan:
    """Tensors of the folded block expansion of one representation pair (one dtype / device).

    Attributes:
        perm: ``(D,)`` element order grouping the output irrep positions.
        groups: ``[(row offset a0, d_a, start, stop, gamma (P_a, d_a * I * S))]`` in ``perm`` order.
        q_out: ``(O, O)`` or ``None`` for an identity change of basis.
    """

    def __init__(self, basis: PairBasis, dtype: torch.dtype, device: torch.device):
        O, I, S = basis.out_size, basis.in_size, basis.num_points
        q_in = basis.in_repr.change_of_basis
        order: list[int] = []
        groups = []
        start = 0
        for a0 in sorted(set(basis.out_offset.tolist())):
            E = np.nonzero(basis.out_offset == a0)[0]
            da = int(basis.out_dim[E[0]])
            gam = np.zeros((len(E), da, I, S))
            for j, e in enumerate(E):
                b0, db = int(basis.in_offset[e]), int(basis.in_dim[e])
                gam[j] = np.einsum("abs,qb->aqs", basis.values[e, :da, :db], q_in[:, b0:b0 + db])
            groups.append(
                (int(a0), da, start, start + len(E), torch.tensor(gam.reshape(len(E), -1), dtype=dtype, device=device))
            )
            order += [int(e) for e in E]
            start += len(E)
        self.perm = torch.tensor(order, dtype=torch.long, device=device)
        self.groups = groups
        self.q_out = None
        if not basis.out_repr.identity_change_of_basis:
            self.q_out = torch.tensor(basis.out_repr.change_of_basis, dtype=dtype, device=device)
        self.O, self.I, self.S, self.D = O, I, S, basis.dim
        self.stored = sum(g[4].numel() for g in groups) + (0 if self.q_out is None else O * O)


def _forward(p: FoldedPlan, w: torch.Tensor, n_out: int, n_in: int) -> torch.Tensor:
    """``w`` ``(F, D)`` -> ``(n_out, O, n_in * I * S)``.

    The GEMM results are placed in an ``(O, n_out, n_in * I * S)`` buffer; ``Q_out`` is then one batched product
    over the output fields reading that buffer with strides, written in the filter's layout.
    """
    wp = w.index_select(1, p.perm)
    x = workspace("folded-x", p.O * n_out * n_in * p.I * p.S, w).view(p.O, n_out, n_in, p.I * p.S)
    F = n_out * n_in
    for a0, da, s0, s1, gam in p.groups:
        rows = gam.view(gam.shape[0], da, -1)
        for r in range(da):  # one GEMM per irreps-space row, written in place (no reordering copy)
            torch.mm(wp[:, s0:s1], rows[:, r], out=x[a0 + r].view(F, -1))
    x = x.view(p.O, n_out, -1).transpose(0, 1)
    if p.q_out is not None:
        return torch.matmul(p.q_out, x)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # never return (a view of) the workspace
    return out.copy_(x)


def _backward(p: FoldedPlan, g: torch.Tensor, n_out: int, n_in: int) -> torch.Tensor:
    """``g`` ``(n_out, O, n_in * I * S)`` -> ``(F, D)``."""
    g = g.reshape(n_out, p.O, -1)
    if p.q_out is not None:
        buf = workspace("folded-g", g.numel(), g).view(g.shape)
        g = torch.matmul(p.q_out.t(), g, out=buf)
    g = g.view(n_out, p.O, n_in, -1)
    gwp = g.new_empty((p.D, n_out * n_in))  # transposed: the GEMMs then have the long side as output columns
    F = n_out * n_in
    for a0, da, s0, s1, gam in p.groups:
        ga = workspace("folded-ga", F * gam.shape[1], g).view(n_out, n_in, da, -1)
        ga.copy_(g[:, a0:a0 + da].transpose(1, 2))
        torch.mm(gam, ga.view(F, -1).t(), out=gwp[s0:s1])
    gw = torch.empty_like(gwp)
    gw[p.perm] = gwp
    return gw.t()


class _Folded(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, plan: FoldedPlan, n_out: int, n_in: int) -> torch.Tensor:
        ctx.plan, ctx.n_out, ctx.n_in = plan, n_out, n_in
        return _forward(plan, w, n_out, n_in)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor):
        gw = None
        if ctx.needs_input_grad[0]:
            gw = _FoldedTransposed.apply(g, ctx.plan, ctx.n_out, ctx.n_in)
        return gw, None, None, None


class _FoldedTransposed(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, g: torch.Tensor, plan: FoldedPlan, n_out: int, n_in: int) -> torch.Tensor:
        ctx.plan, ctx.n_out, ctx.n_in = plan, n_out, n_in
        return _backward(plan, g, n_out, n_in)

    @staticmethod
    def backward(ctx: Any, gg: torch.Tensor):
        out = None
        if ctx.needs_input_grad[0]:
            out = _Folded.apply(gg.contiguous(), ctx.plan, ctx.n_out, ctx.n_in)
        return out, None, None, None


def folded_expand(plan: FoldedPlan, w: torch.Tensor, n_out: int, n_in: int) -> torch.Tensor:
    """The pair's filter block ``(n_out * O, n_in * I, S)`` from its weights ``w`` ``(n_out * n_in, D)``."""
    out = _Folded.apply(w.contiguous(), plan, n_out, n_in)
    return out.view(n_out * plan.O, n_in * plan.I, plan.S)
