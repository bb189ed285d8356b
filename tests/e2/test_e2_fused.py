"""The fused CPU block kernel: same filter and gradients as the pure-torch block reference and the padded expansion,
double backward, compact storage (shared identical blocks), the executor ``auto`` picks."""

import numpy as np
import pytest
import torch

from equitp import e2
from equitp.e2._fused import FusedPlan, fused_expand

from test_e2_expansion import LAYERS


def _plan(name, dtype, fold):
    fin, fout, k = LAYERS[name]
    lb = e2.layer_basis(fin, fout, e2.basis_params(k))
    return lb, FusedPlan(lb, dtype, fold=fold)


@pytest.mark.parametrize("fold", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_fused_matches_reference_and_padded(name, dtype, fold):
    lb, plan = _plan(name, dtype, fold)
    torch.manual_seed(1)
    w = torch.randn(lb.dim, dtype=dtype, requires_grad=True)
    got = fused_expand(plan, w).view(lb._filter_shape)
    ref = lb.expand(w, "block", "torch")  # pure torch: gather fill + Q GEMMs
    padded = lb.expand(w, "padded")
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    scale = padded.abs().max()
    assert ((got - ref).abs().max() / scale).item() <= tol
    assert ((got - padded).abs().max() / scale).item() <= tol
    g = torch.randn_like(got)
    (gw,) = torch.autograd.grad(got, w, g)
    (gw_ref,) = torch.autograd.grad(ref, w, g)
    assert ((gw - gw_ref).abs().max() / gw_ref.abs().max()).item() <= 10 * tol


@pytest.mark.parametrize("fold", [False, True])
def test_fused_gradcheck_and_double_backward(fold):
    s = e2.flip_rot2d(2)
    fin = e2.FieldType(s, [s.regular_repr, s.irrep(1, 1), s.regular_repr])
    fout = e2.FieldType(s, [s.irrep(0, 1), s.regular_repr])
    lb = e2.layer_basis(fin, fout, e2.basis_params(3))
    plan = FusedPlan(lb, torch.float64, fold=fold)
    w = torch.randn(lb.dim, dtype=torch.float64, requires_grad=True)
    f = lambda x: fused_expand(plan, x)  # noqa: E731
    assert torch.autograd.gradcheck(f, (w,))
    assert torch.autograd.gradgradcheck(f, (w,))


def test_fused_transpose_is_adjoint():
    """<K(w), G> = <w, K^T(G)>: the backward kernel is the transposed contraction."""
    lb, plan = _plan("C8-mixed", torch.float64, None)
    w = torch.randn(lb.dim, dtype=torch.float64)
    g = torch.randn(lb.out_type.size, lb.in_type.size, lb.num_points, dtype=torch.float64)
    lhs = (plan.forward(w) * g).sum()
    rhs = (w * plan.transpose(g)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


def test_fused_edge_batches():
    """One field on a side (one task), and a layer whose pairs leave filter entries empty (zeros)."""
    s = e2.rot2d(4)
    for fin, fout in [
        (e2.FieldType(s, [s.regular_repr]), e2.FieldType(s, [s.regular_repr])),
        (e2.FieldType(s, [s.irrep(1), s.trivial_repr]), e2.FieldType(s, [s.irrep(2), s.regular_repr])),
    ]:
        lb = e2.layer_basis(fin, fout, e2.basis_params(3))
        w = torch.randn(lb.dim, dtype=torch.float64)
        torch.testing.assert_close(lb.expand(w, "block", "fused"), lb.expand(w, "padded"), rtol=1e-12, atol=1e-12)


def test_fused_shares_identical_blocks_and_stays_small():
    d8 = e2.flip_rot2d(8)
    ft = e2.FieldType(d8, [d8.regular_repr] * 2)  # D8 regular: the 2-dim irreps appear twice
    lb = e2.layer_basis(ft, ft, e2.basis_params(5))
    b = lb.pairs[0].basis
    plan = FusedPlan(lb, torch.float32, fold=False)
    rows = plan.flt.size  # distinct rows * S + changes of basis
    assert rows < b.nnz / 2  # identical irreps-pair blocks stored once
    assert plan.stored_bytes * 4 <= lb.stored_bytes("padded")
    c4 = e2.rot2d(4)
    ft4 = e2.FieldType(c4, [c4.regular_repr] * 4)
    lb4 = e2.layer_basis(ft4, ft4, e2.basis_params(3))
    assert lb4.padding_ratio() >= 4
    assert lb4.stored_bytes("block", executor="fused") * 4 <= lb4.stored_bytes("padded")


def test_auto_executor_choice():
    """``auto`` takes the executor of least predicted time on CPU: gconv for regular fields of C_8 (4 quarter turns),
    fused for a sum of all irreps with identity changes of basis (few rows share an orbit); folded off the CPU."""
    c8 = e2.rot2d(8)
    reg = e2.FieldType(c8, [c8.regular_repr] * 2)
    irr = e2.directsum(c8.irreps * 2, name="c8-irreps-x2")
    sums = e2.FieldType(c8, [irr] * 4)
    lb_reg = e2.layer_basis(reg, reg, e2.basis_params(5))
    lb_sums = e2.layer_basis(sums, sums, e2.basis_params(5))
    for lb in (lb_reg, lb_sums):
        candidates = ("gconv", "folded") + (() if any(p.folded for p in lb.pairs) else ("fused",))
        times = {e: lb.predicted_seconds("block", executor=e) for e in candidates}
        assert lb.block_executor() == min(times, key=times.get)
    assert lb_reg.block_executor() == "gconv"
    assert lb_sums.block_executor() == "fused"
    assert lb_sums.block_executor("meta") == "folded"


def test_fused_bad_input():
    lb, plan = _plan("C8-regular", torch.float32, None)
    with pytest.raises(ValueError, match="fused"):
        fused_expand(plan, torch.randn(lb.dim, dtype=torch.float64))
    with pytest.raises(ValueError, match="fused"):
        lb.expand(torch.randn(lb.dim, dtype=torch.float64, device="meta"), "block", "fused")
    with pytest.raises(ValueError, match="float32 or float64"):
        FusedPlan(lb, torch.float16)
