"""Padded and block expansions: identical filters, gradients to second order, storage, bad weights."""

import numpy as np
import pytest
import torch

from equitp import e2

from _e2cnn_compat import load_e2cnn

DTYPES = [torch.float32, torch.float64]


def _layers():
    c8 = e2.rot2d(8)
    d4 = e2.flip_rot2d(4)
    so2 = e2.rot2d(-1, maximum_frequency=3)
    o2 = e2.flip_rot2d(-1, maximum_frequency=3)
    mix_c8 = e2.directsum([c8.irrep(k) for k in range(5)], name="c8-all-irreps")
    bl_o2 = e2.directsum([o2.irrep(0, 0)] + [o2.irrep(1, k) for k in range(4)], name="o2-bl3")
    return {
        "C8-regular": (e2.FieldType(c8, [c8.regular_repr] * 3), e2.FieldType(c8, [c8.regular_repr] * 2), 5),
        # fields of several kinds, interleaved (non-contiguous placement of each representation pair)
        "C8-mixed": (
            e2.FieldType(c8, [c8.regular_repr, c8.trivial_repr, c8.irrep(1), c8.regular_repr, mix_c8]),
            e2.FieldType(c8, [c8.irrep(2), c8.regular_repr, c8.trivial_repr, mix_c8, c8.irrep(4)]),
            5,
        ),
        "D4-quotient": (
            e2.FieldType(d4, [d4.regular_repr, d4.quotient_repr((None, 2)), d4.irrep(1, 1)]),
            e2.FieldType(d4, [d4.quotient_repr((0, 2)), d4.regular_repr, d4.irrep(0, 2)]),
            3,
        ),
        "SO2-irreps": (
            e2.FieldType(so2, [so2.irrep(k) for k in range(4)]),
            e2.FieldType(so2, [so2.irrep(k) for k in (2, 0, 3, 1)]),
            7,
        ),
        "O2-bandlimited": (e2.FieldType(o2, [bl_o2] * 2), e2.FieldType(o2, [bl_o2]), 5),
        "C1-even": (e2.FieldType(e2.rot2d(1), [e2.rot2d(1).trivial_repr] * 3),
                    e2.FieldType(e2.rot2d(1), [e2.rot2d(1).trivial_repr] * 2), 4),
    }


LAYERS = _layers()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_padded_and_block_give_the_same_filter(name, dtype):
    fin, fout, k = LAYERS[name]
    lb = e2.layer_basis(fin, fout, e2.basis_params(k))
    torch.manual_seed(0)
    w = torch.randn(lb.dim, dtype=dtype)
    padded = lb.expand(w, "padded")
    assert padded.shape == (fout.size, fin.size, k, k) and padded.dtype == dtype
    scale = padded.abs().max()
    for executor in ("torch", "auto"):
        block = lb.expand(w, "block", executor)
        assert ((block - padded).abs().max() / scale).item() <= (1e-6 if dtype == torch.float32 else 1e-12)
    # reference: dense basis built independently in float64
    ref = torch.zeros(fout.size, fin.size, k * k, dtype=torch.float64)
    wd = w.double()
    for p in lb.pairs:
        B = torch.as_tensor(p.basis.dense())
        ww = wd[p.start:p.end].view(p.n_out, p.n_in, -1)
        blk = torch.einsum("xyd,doiz->xoyiz", ww, B).reshape(len(p.out_idx), len(p.in_idx), -1)
        ref[torch.as_tensor(p.out_idx)[:, None], torch.as_tensor(p.in_idx)[None, :]] = blk
    torch.testing.assert_close(padded.double().reshape(ref.shape), ref, atol=1e-5 * scale.item(), rtol=1e-5)


def test_numba_executor_matches():
    """The numba CPU kernels (float64 only here: every dtype is one more compilation in CI)."""
    fin, fout, k = LAYERS["C8-mixed"]
    lb = e2.layer_basis(fin, fout, e2.basis_params(k))
    for dtype in [torch.float64]:
        w = torch.randn(lb.dim, dtype=dtype, requires_grad=True)
        a = lb.expand(w, "block", "numba")
        b = lb.expand(w, "padded")
        torch.testing.assert_close(a, b, atol=1e-5 if dtype == torch.float32 else 1e-12, rtol=1e-5)
        g = torch.randn_like(a)
        (ga,) = torch.autograd.grad(a, w, g)
        (gb,) = torch.autograd.grad(b, w, g)
        torch.testing.assert_close(ga, gb, atol=1e-4 if dtype == torch.float32 else 1e-11, rtol=1e-5)


@pytest.mark.parametrize("expansion", ["padded", "block"])
def test_gradcheck(expansion):
    s = e2.flip_rot2d(2)
    fin = e2.FieldType(s, [s.regular_repr, s.irrep(1, 1)])
    fout = e2.FieldType(s, [s.irrep(0, 1), s.regular_repr])
    lb = e2.layer_basis(fin, fout, e2.basis_params(3))
    w = torch.randn(lb.dim, dtype=torch.float64, requires_grad=True)
    f = lambda x: lb.expand(x, expansion)  # noqa: E731
    assert torch.autograd.gradcheck(f, (w,))
    assert torch.autograd.gradgradcheck(f, (w,))


def test_double_backward_through_block_fill():
    """The backward of the fill is the transposed fill; its derivative is the fill again."""
    fin, fout, k = LAYERS["D4-quotient"]
    lb = e2.layer_basis(fin, fout, e2.basis_params(k))
    w = torch.randn(lb.dim, dtype=torch.float64, requires_grad=True)
    v = torch.randn(lb.dim, dtype=torch.float64)
    out = {}
    for expansion in ("padded", "block"):
        y = lb.expand(w, expansion)
        (g,) = torch.autograd.grad((y ** 3).sum(), w, create_graph=True)
        (h,) = torch.autograd.grad((g * v).sum(), w)
        out[expansion] = (g.detach(), h)
    torch.testing.assert_close(out["padded"][0], out["block"][0])
    torch.testing.assert_close(out["padded"][1], out["block"][1])


def test_storage_and_padding_ratio():
    s = e2.rot2d(8)
    ft = e2.FieldType(s, [s.regular_repr] * 4)
    lb = e2.layer_basis(ft, ft, e2.basis_params(5))
    assert lb.padding_ratio() > 4
    assert lb.stored_bytes("block") <= lb.stored_bytes("padded") / 4
    assert lb.flops("block") < lb.flops("padded") / 2
    # irreps fields: nothing to pad, nothing saved
    ir = e2.FieldType(s, [s.irrep(1), s.irrep(2)])
    lb2 = e2.layer_basis(ir, ir, e2.basis_params(5))
    assert lb2.padding_ratio() == pytest.approx(1.0)
    assert lb2.choose_expansion() in ("padded", "block")


def test_bad_weights():
    s = e2.rot2d(4)
    ft = e2.FieldType(s, [s.regular_repr])
    lb = e2.layer_basis(ft, ft, e2.basis_params(3))
    with pytest.raises(ValueError, match="weights"):
        lb.expand(torch.randn(lb.dim + 1))
    with pytest.raises(ValueError, match="weights"):
        lb.expand(torch.randn(1, lb.dim))
    with pytest.raises(TypeError, match="weights"):
        lb.expand(torch.ones(lb.dim, dtype=torch.int64))
    with pytest.raises(ValueError, match="expansion"):
        lb.expand(torch.randn(lb.dim), "sparse")
    with pytest.raises(ValueError, match="executor"):
        lb.expand(torch.randn(lb.dim), "block", "cuda-magic")
    with pytest.raises(ValueError, match="same space"):
        e2.layer_basis(ft, e2.FieldType(e2.rot2d(8), [e2.rot2d(8).regular_repr]), e2.basis_params(3))


def test_he_initialisation_matches_e2cnn():
    if load_e2cnn() is None:
        pytest.skip("e2cnn not installed")
    from e2cnn import gspaces
    from e2cnn import nn as enn
    from e2cnn.nn.init import _generalized_he_init_variances

    es = gspaces.Rot2dOnR2(4)
    s = e2.rot2d(4)
    conv = enn.R2Conv(
        enn.FieldType(es, [es.regular_repr, es.trivial_repr, es.irrep(1)]),
        enn.FieldType(es, [es.irrep(2), es.regular_repr]),
        5,
    )
    lb = e2.layer_basis(
        e2.FieldType(s, [s.regular_repr, s.trivial_repr, s.irrep(1)]),
        e2.FieldType(s, [s.irrep(2), s.regular_repr]),
        e2.basis_params(5),
    )
    np.testing.assert_allclose(lb.he_init_std(), _generalized_he_init_variances(conv._basisexpansion).numpy(),
                               rtol=1e-6)
    np.testing.assert_allclose(lb._bias_np, conv.bias_expansion.numpy(), atol=1e-7)


@pytest.mark.parametrize("name", ["SO2-irreps", "C8-mixed", "C8-regular"])
def test_results_do_not_alias_reused_buffers(name):
    """Intermediate buffers are reused between calls; returned filters must stay intact."""
    fin, fout, k = LAYERS[name]
    lb = e2.layer_basis(fin, fout, e2.basis_params(k))
    w1, w2 = torch.randn(lb.dim), torch.randn(lb.dim)
    with torch.no_grad():
        for expansion in ("padded", "block"):
            a = lb.expand(w1, expansion)
            a_copy = a.clone()
            lb.expand(w2, expansion)
            torch.testing.assert_close(a, a_copy)
