"""Nonlinearities, pooling and batch norm of equitp.e2: equivariance and bad input."""

import pytest
import torch

from equitp import e2

DTYPES = [torch.float32, torch.float64]


def _check(module, fin, fout, dtype, elements):
    x = torch.randn(3, fin.size, 7, 7, dtype=dtype)
    y = module(x)
    for g in elements:
        torch.testing.assert_close(module(fin.transform(x, g)), fout.transform(y, g))


@pytest.mark.parametrize("dtype", DTYPES)
def test_equivariance(dtype):
    d4 = e2.flip_rot2d(4)
    point = e2.FieldType(d4, [d4.regular_repr, d4.trivial_repr, d4.quotient_repr((None, 2)), d4.regular_repr])
    mixed = e2.FieldType(d4, [d4.irrep(1, 1), d4.regular_repr, d4.irrep(0, 2), d4.irrep(1, 1)])
    els = d4.fibergroup.elements
    for m in [e2.ReLU(point), e2.PointwiseNonLinearity(point, "p_elu"), e2.PointwiseNonLinearity(point, "p_tanh")]:
        _check(m, point, point, dtype, els)
    for fn in ["n_relu", "n_sigmoid"]:
        m = e2.NormNonLinearity(mixed, fn).to(dtype)
        _check(m, mixed, mixed, dtype, els)
    gp = e2.GroupPooling(point)
    assert gp.out_type.size == len(point)
    _check(gp, point, gp.out_type, dtype, els)
    npool = e2.NormPool(mixed)
    _check(npool, mixed, npool.out_type, dtype, els)
    bn = e2.InnerBatchNorm(point).to(dtype)
    _check(bn, point, point, dtype, els)
    bn.eval()
    _check(bn, point, point, dtype, els)


def test_small_equivariant_network():
    """conv -> batch norm -> relu -> conv -> group pooling: invariant output under C_8 quarter turns."""
    s = e2.rot2d(8)
    fin = e2.FieldType(s, [s.trivial_repr])
    hid = e2.FieldType(s, [s.regular_repr] * 2)
    net = torch.nn.Sequential(
        e2.R2Conv(fin, hid, 5, padding=2), e2.InnerBatchNorm(hid), e2.ReLU(hid),
        e2.R2Conv(hid, hid, 3, padding=1, expansion="block"), e2.GroupPooling(hid),
    ).double()
    x = torch.randn(2, 1, 13, 13, dtype=torch.float64)
    y = net(x)
    for g in (2, 4, 6):
        torch.testing.assert_close(net(fin.transform(x, g)), torch.rot90(y, g // 2, dims=(-2, -1)))
    y.sum().backward()
    assert net[0].weights.grad is not None and net[3].weights.grad is not None


def test_geometric_tensor_passthrough():
    s = e2.rot2d(4)
    ft = e2.FieldType(s, [s.regular_repr] * 2)
    x = e2.GeometricTensor(torch.randn(1, 8, 5, 5), ft)
    out = e2.GroupPooling(ft)(e2.ReLU(ft)(x))
    assert isinstance(out, e2.GeometricTensor) and out.type.size == 2


def test_bad_inputs():
    s = e2.rot2d(4)
    irreps = e2.FieldType(s, [s.irrep(1)])
    with pytest.raises(ValueError, match="field 0"):
        e2.ReLU(irreps)
    with pytest.raises(ValueError, match="field 0"):
        e2.GroupPooling(irreps)
    with pytest.raises(ValueError, match="field 0"):
        e2.InnerBatchNorm(irreps)
    with pytest.raises(ValueError, match="function"):
        e2.NormNonLinearity(irreps, "n_softplus")
    with pytest.raises(TypeError, match="in_type"):
        e2.ReLU([s.regular_repr])
    with pytest.raises(ValueError, match="input"):
        e2.NormNonLinearity(irreps)(torch.randn(1, 3, 4, 4))
