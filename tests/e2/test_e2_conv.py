"""R2Conv: exact equivariance, check_equivariance, expansions, state_dict, export, eval cache, bad input."""

import pytest
import torch

from equitp import e2

from _e2cnn_compat import load_e2cnn

DTYPES = [torch.float32, torch.float64]


def _cases():
    c4, c8, d4, d8 = e2.rot2d(4), e2.rot2d(8), e2.flip_rot2d(4), e2.flip_rot2d(8)
    so2 = e2.rot2d(-1, maximum_frequency=3)
    o2 = e2.flip_rot2d(-1, maximum_frequency=3)
    d1 = e2.flip_rot2d(1)
    bl = e2.directsum([o2.irrep(0, 0)] + [o2.irrep(1, k) for k in range(4)], name="o2-bl3")
    return {
        "C4-regular-k3": (e2.FieldType(c4, [c4.regular_repr] * 2), e2.FieldType(c4, [c4.regular_repr] * 2), 3, {}),
        "C8-mixed-k5-pad": (
            e2.FieldType(c8, [c8.regular_repr, c8.trivial_repr, c8.irrep(3)]),
            e2.FieldType(c8, [c8.irrep(1), c8.regular_repr, c8.trivial_repr, c8.irrep(4)]),
            5,
            {"padding": 2},
        ),
        "D4-quotient-k4": (
            e2.FieldType(d4, [d4.regular_repr, d4.quotient_repr((0, 2)), d4.irrep(1, 1)]),
            e2.FieldType(d4, [d4.irrep(0, 2), d4.regular_repr, d4.irrep(1, 0)]),
            4,
            {},
        ),
        "D8-regular-stride2": (
            e2.FieldType(d8, [d8.regular_repr]),
            e2.FieldType(d8, [d8.regular_repr, d8.trivial_repr]),
            3,
            {"stride": 2, "padding": 1},
        ),
        "SO2-irreps-k5": (
            e2.FieldType(so2, [so2.irrep(k) for k in range(4)]),
            e2.FieldType(so2, [so2.irrep(k) for k in (1, 0, 2)]),
            5,
            {},
        ),
        "O2-bandlimited-dil2": (e2.FieldType(o2, [bl]), e2.FieldType(o2, [bl, o2.irrep(1, 0)]), 3, {"dilation": 2}),
        "D1-regular": (e2.FieldType(d1, [d1.regular_repr] * 2), e2.FieldType(d1, [d1.regular_repr]), 5, {}),
    }


CASES = _cases()


def _exact_elements(group):
    if group.continuous:
        import math

        rots = [k * math.pi / 2 for k in range(4)]
        return [(j, a) for j in range(2) for a in rots] if group.flips else rots
    return [g for g in group.elements if group.quarter_turns(g) is not None]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_exact_equivariance(name, dtype):
    fin, fout, k, kw = CASES[name]
    torch.manual_seed(0)
    for expansion in ("padded", "block"):
        conv = e2.R2Conv(fin, fout, k, expansion=expansion, **kw).to(dtype)
        with torch.no_grad():
            conv.bias.normal_() if conv.bias is not None else None
        x = torch.randn(2, fin.size, 15, 15, dtype=dtype)
        y = conv(x)
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        for g in _exact_elements(fin.fibergroup):
            lhs = conv(fin.transform(x, g))
            rhs = fout.transform(y, g)
            assert ((lhs - rhs).abs().max() / y.abs().max()).item() < tol, (expansion, g)


@pytest.mark.parametrize("name", ["C8-mixed-k5-pad", "D4-quotient-k4", "SO2-irreps-k5"])
def test_check_equivariance(name):
    fin, fout, k, kw = CASES[name]
    conv = e2.R2Conv(fin, fout, k, **kw)
    errors = conv.check_equivariance()
    group = fin.fibergroup
    for g, err in errors:
        if group.quarter_turns(g) is not None:
            assert err < 1e-4
        else:
            assert err < 0.15
    assert conv.training


def test_expansions_state_dict_and_export():
    fin, fout, k, kw = CASES["C8-mixed-k5-pad"]
    torch.manual_seed(1)
    a = e2.R2Conv(fin, fout, k, expansion="padded", **kw)
    b = e2.R2Conv(fin, fout, k, expansion="block", initialize=False, **kw)
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()] == ["weights", "bias"]
    assert {n: t.shape for n, t in a.state_dict().items()} == {n: t.shape for n, t in b.state_dict().items()}
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        b.bias.normal_()
    a.load_state_dict(b.state_dict())
    x = torch.randn(3, fin.size, 12, 12)
    ya, yb = a(x), b(x)
    torch.testing.assert_close(ya, yb, atol=1e-5, rtol=1e-5)
    fa, ba = a.expand_parameters()
    fb, bb = b.expand_parameters()
    assert ((fa - fb).abs().max() / fa.abs().max()).item() < 1e-6
    torch.testing.assert_close(ba, bb)
    conv = a.export()
    assert type(conv) is torch.nn.Conv2d
    torch.testing.assert_close(conv(x), ya, atol=1e-5, rtol=1e-5)
    # the "auto" choice only changes speed
    c = e2.R2Conv(fin, fout, k, expansion="auto", **kw)
    c.load_state_dict(a.state_dict())
    torch.testing.assert_close(c(x), ya, atol=1e-5, rtol=1e-5)


def test_eval_cache_and_geometric_tensor():
    fin, fout, k, kw = CASES["C4-regular-k3"]
    conv = e2.R2Conv(fin, fout, k, **kw)
    x = torch.randn(2, fin.size, 9, 9)
    y_train = conv(x)
    conv.eval()
    y_eval = conv(x)
    torch.testing.assert_close(y_eval, y_train)
    assert conv(x) is not None and conv._cache is not None
    filt, bias = conv.expand_parameters()
    with torch.no_grad():
        conv.weights.mul_(2.0)  # an in-place change in eval mode invalidates the cached filter
    expected = torch.nn.functional.conv2d(x, 2 * filt, bias)
    torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=1e-5)
    conv.train()
    gt = e2.GeometricTensor(x, fin)
    out = conv(gt)
    assert isinstance(out, e2.GeometricTensor) and out.type == fout
    assert conv.evaluate_output_shape(x.shape) == tuple(out.tensor.shape)


def test_gradients_flow_in_both_expansions():
    fin, fout, k, kw = CASES["D4-quotient-k4"]
    torch.manual_seed(2)
    a = e2.R2Conv(fin, fout, k, expansion="padded", **kw).double()
    b = e2.R2Conv(fin, fout, k, expansion="block", **kw).double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, fin.size, 8, 8, dtype=torch.float64)
    ga = torch.autograd.grad(a(x).pow(2).sum(), [a.weights, a.bias])
    gb = torch.autograd.grad(b(x).pow(2).sum(), [b.weights, b.bias])
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v)


def test_bad_inputs():
    c4, c8 = e2.rot2d(4), e2.rot2d(8)
    f4 = e2.FieldType(c4, [c4.regular_repr])
    f8 = e2.FieldType(c8, [c8.regular_repr])
    with pytest.raises(ValueError, match="same space"):
        e2.R2Conv(f4, f8, 3)
    with pytest.raises(TypeError, match="in_type"):
        e2.R2Conv([c4.regular_repr], f4, 3)
    with pytest.raises(ValueError, match="kernel_size"):
        e2.R2Conv(f4, f4, 0)
    with pytest.raises(TypeError, match="kernel_size"):
        e2.R2Conv(f4, f4, 3.5)
    with pytest.raises(ValueError, match="expansion"):
        e2.R2Conv(f4, f4, 3, expansion="dense")
    with pytest.raises(ValueError, match="stride"):
        e2.R2Conv(f4, f4, 3, stride=0)
    with pytest.raises(ValueError, match="padding"):
        e2.R2Conv(f4, f4, 3, padding=-1)
    conv = e2.R2Conv(f4, f4, 3)
    with pytest.raises(ValueError, match="input"):
        conv(torch.randn(1, 5, 9, 9))
    with pytest.raises(ValueError, match="input"):
        conv(torch.randn(4, 9, 9))
    with pytest.raises(ValueError, match="field type"):
        conv(e2.GeometricTensor(torch.randn(1, 4, 9, 9), e2.FieldType(c4, [c4.trivial_repr] * 4)))
    conv.weights = torch.nn.Parameter(torch.randn(conv.basis.dim + 3))
    with pytest.raises(ValueError, match="weights"):
        conv(torch.randn(1, 4, 9, 9))
    good = e2.R2Conv(f4, f4, 3)
    with pytest.raises(RuntimeError, match="size mismatch"):
        good.load_state_dict({"weights": torch.randn(good.basis.dim + 1), "bias": good.bias.detach()})


@pytest.mark.parametrize("name", ["C8-mixed-k5-pad", "D4-quotient-k4"])
def test_same_output_as_e2cnn(name):
    if load_e2cnn() is None:
        pytest.skip("e2cnn not installed")
    from e2cnn import gspaces
    from e2cnn import nn as enn

    if name.startswith("C8"):
        es = gspaces.Rot2dOnR2(8)
        fin = enn.FieldType(es, [es.regular_repr, es.trivial_repr, es.irrep(3)])
        fout = enn.FieldType(es, [es.irrep(1), es.regular_repr, es.trivial_repr, es.irrep(4)])
        k, kw = 5, {"padding": 2}
    else:
        es = gspaces.FlipRot2dOnR2(4)
        fin = enn.FieldType(es, [es.regular_repr, es.irrep(1, 1)])
        fout = enn.FieldType(es, [es.irrep(1, 1), es.regular_repr, es.trivial_repr])
        k, kw = 4, {}
    theirs = enn.R2Conv(fin, fout, k, **kw)
    with torch.no_grad():
        theirs.bias.normal_()
    s = e2.rot2d(8) if name.startswith("C8") else e2.flip_rot2d(4)

    def mine(ft):
        return e2.FieldType(
            s, [s.regular_repr if r.name == "regular" else _irrep_by_name(s, r.name) for r in ft.representations]
        )

    ours = e2.R2Conv(mine(fin), mine(fout), k, **kw)
    ours.load_state_dict({"weights": theirs.weights.detach().clone(), "bias": theirs.bias.detach().clone()})
    x = torch.randn(2, fin.size, 11, 11)
    ref = theirs(enn.GeometricTensor(x, fin)).tensor
    torch.testing.assert_close(ours(x), ref, atol=1e-5, rtol=1e-4)


def _irrep_by_name(space, name):
    ids = tuple(int(v) for v in name[len("irrep_"):].split(","))
    return space.irrep(*ids)


def test_deepcopy_and_pickle_share_the_basis():
    import copy
    import io

    fin, fout, k, kw = CASES["D4-quotient-k4"]
    m = torch.nn.Sequential(e2.R2Conv(fin, fout, k, **kw), e2.NormNonLinearity(fout))
    m2 = copy.deepcopy(m)
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    m3 = torch.load(buf, weights_only=False)
    x = torch.randn(1, fin.size, 9, 9)
    torch.testing.assert_close(m2(x), m(x))
    torch.testing.assert_close(m3(x), m(x))
    assert m2[0].basis is m[0].basis and m3[0].basis is m[0].basis
