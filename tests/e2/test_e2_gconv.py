"""The gconv CPU block kernel (orbit representatives of the grid's symmetries + gather): the orbit tables reproduce
the padded basis, same filter and gradients as the pure-torch block reference and the padded expansion, double
backward, adjoint backward, equivariance, compact storage, and the executor ``auto`` picks."""

import numpy as np
import pytest
import torch

from equitp import e2
from equitp.e2 import _gconv
from equitp.e2._gconv import GConvPlan, gconv_expand, grid_orbits, row_plan

from test_e2_expansion import LAYERS


def _extra_layers():
    c4, c3, d8, d1 = e2.rot2d(4), e2.rot2d(3), e2.flip_rot2d(8), e2.flip_rot2d(1)
    c8 = e2.rot2d(8)
    return {
        # even kernel, dilation: the quarter turns still map the grid onto itself
        "C4-regular-even-dilated": (e2.FieldType(c4, [c4.regular_repr] * 2), e2.FieldType(c4, [c4.regular_repr]),
                                    4, 2),
        # C3: no quarter turn in the group, every row is its own representative
        "C3-regular": (e2.FieldType(c3, [c3.regular_repr] * 2), e2.FieldType(c3, [c3.regular_repr] * 2), 5, 1),
        "D8-regular": (e2.FieldType(d8, [d8.regular_repr] * 2), e2.FieldType(d8, [d8.regular_repr]), 5, 1),
        # irreps at quarter turns are signed permutations (signs in the gather)
        "C8-irreps-signed": (e2.FieldType(c8, [c8.irrep(1), c8.irrep(2), c8.irrep(3)]),
                             e2.FieldType(c8, [c8.irrep(3), c8.irrep(1), c8.irrep(4)]), 5, 1),
        "D1-regular-trivial": (e2.FieldType(d1, [d1.regular_repr, d1.trivial_repr]),
                               e2.FieldType(d1, [d1.trivial_repr, d1.regular_repr]), 3, 1),
        # runs shorter than one SIMD vector (copied element by element): 2 x 2 and 1 x 1 grids, signed rows
        "C4-mixed-k2": (e2.FieldType(c4, [c4.regular_repr, c4.irrep(1), c4.trivial_repr]),
                        e2.FieldType(c4, [c4.irrep(1), c4.regular_repr, c4.trivial_repr]),
                        e2.basis_params(2, rings=[0.0, 0.7071], sigma=0.6), None),
        "C8-mixed-k1": (e2.FieldType(c8, [c8.regular_repr, c8.irrep(2)]),
                        e2.FieldType(c8, [c8.regular_repr, c8.irrep(2)]), 1, 1),
    }


ALL = {**{k: (a, b, c, 1) for k, (a, b, c) in LAYERS.items()}, **_extra_layers()}


def _layer(name):
    fin, fout, k, dil = ALL[name]
    params = k if isinstance(k, e2.BasisParams) else e2.basis_params(k, dilation=dil)
    return e2.layer_basis(fin, fout, params)


@pytest.mark.parametrize("name", sorted(ALL))
def test_orbit_tables_reproduce_the_padded_basis(name):
    """``dense[:, o, i, s] = sign[o, i] dense[:, reps[rep_of[o]], in_src[o, i], sigma[elem_of[o], s]]``: the rows
    of the representatives determine the whole sampled basis (float64, to rounding)."""
    lb = _layer(name)
    for p in lb.pairs:
        b = p.basis
        reps, rep_of, elem_of, in_src, sign, sigma = grid_orbits(b)
        dense = b.dense()
        rows = dense[:, reps]  # (D, R, I, S)
        rebuilt = rows[:, rep_of[:, None, None], in_src[:, :, None], sigma[elem_of][:, None, :]]
        rebuilt = rebuilt * sign[None, :, :, None]
        np.testing.assert_allclose(rebuilt, dense, atol=1e-12 * max(1.0, np.abs(dense).max()))


@pytest.mark.parametrize("name", sorted(ALL))
def test_row_plan_reproduces_the_grid_permutations(name):
    """Each row's source (representative row or stage) composed with its reversal flag is the row's grid permutation
    ``sigma[elem_of[o]]``, from the row's own representative."""
    lb = _layer(name)
    for p in lb.pairs:
        reps, rep_of, elem_of, in_src, sign, sigma = grid_orbits(p.basis)
        kind, src, st_r, st_h = row_plan(rep_of, elem_of, sigma)
        S = sigma.shape[1]
        for o in range(len(rep_of)):
            if kind[o] < 2:
                r, perm = src[o], np.arange(S)
            else:
                r, perm = st_r[src[o]], sigma[st_h[src[o]]]
            if kind[o] & 1:
                perm = perm[::-1]
            assert r == rep_of[o]
            np.testing.assert_array_equal(perm, sigma[elem_of[o]])


def test_row_plan_of_quarter_turns():
    """C_8 regular: per representative the identity row is copied, the half turn reversed, and one stage (90
    degrees) serves the rows of 90 and 270 degrees."""
    c8 = e2.rot2d(8)
    ft = e2.FieldType(c8, [c8.regular_repr])
    reps, rep_of, elem_of, in_src, sign, sigma = grid_orbits(e2.layer_basis(ft, ft, e2.basis_params(5)).pairs[0].basis)
    kind, src, st_r, st_h = row_plan(rep_of, elem_of, sigma)
    assert kind.tolist() == [0, 0, 2, 2, 1, 1, 3, 3] and src.tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    assert st_r.tolist() == [0, 1] and len(set(st_h.tolist())) == 1


def test_orbit_counts():
    """Quarter turns (and reflections for D_N) that belong to the group reduce the computed rows."""
    counts = {}
    for name, space, n in [("C8", e2.rot2d(8), 8), ("D8", e2.flip_rot2d(8), 16), ("C4", e2.rot2d(4), 4),
                           ("C6", e2.rot2d(6), 6), ("C3", e2.rot2d(3), 3)]:
        ft = e2.FieldType(space, [space.regular_repr])
        b = e2.layer_basis(ft, ft, e2.basis_params(5)).pairs[0].basis
        counts[name] = (len(grid_orbits(b)[0]), n)
    # H = C_4 (free on the regular rows): O / 4; D_8: 8 grid symmetries; C_6: only the half turn; C_3: identity
    assert counts == {"C8": (2, 8), "D8": (2, 16), "C4": (1, 4), "C6": (3, 6), "C3": (3, 3)}


@pytest.mark.parametrize("small", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(ALL))
def test_gconv_matches_reference_and_padded(name, dtype, small):
    lb = _layer(name)
    plan = GConvPlan(lb, dtype)
    plan.small = small  # both paths: one numba call, or numba + torch GEMMs
    torch.manual_seed(1)
    w = torch.randn(lb.dim, dtype=dtype, requires_grad=True)
    got = gconv_expand(plan, w)
    ref = lb.expand(w, "block", "torch")  # pure torch: gather fill + Q GEMMs
    padded = lb.expand(w, "padded")
    assert got.shape == padded.shape and got.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    scale = padded.abs().max()
    assert ((got - ref).abs().max() / scale).item() <= tol
    assert ((got - padded).abs().max() / scale).item() <= tol
    g = torch.randn_like(got)
    (gw,) = torch.autograd.grad(got, w, g)
    (gw_ref,) = torch.autograd.grad(ref, w, g)
    assert ((gw - gw_ref).abs().max() / gw_ref.abs().max()).item() <= 10 * tol


@pytest.mark.parametrize("small", [True, False])
@pytest.mark.parametrize("name", ["D4-quotient", "C8-irreps-signed", "D1-regular-trivial"])
def test_gconv_gradcheck_and_double_backward(name, small):
    lb = _layer(name)
    plan = GConvPlan(lb, torch.float64)
    plan.small = small
    w = torch.randn(lb.dim, dtype=torch.float64, requires_grad=True)
    f = lambda x: gconv_expand(plan, x)  # noqa: E731
    assert torch.autograd.gradcheck(f, (w,))
    assert torch.autograd.gradgradcheck(f, (w,))


@pytest.mark.parametrize("small", [True, False])
def test_gconv_transpose_is_adjoint(small):
    """<K(w), G> = <w, K^T(G)>: the backward kernel is the transposed contraction."""
    lb = _layer("C8-mixed")
    plan = GConvPlan(lb, torch.float64)
    plan.small = small
    w = torch.randn(lb.dim, dtype=torch.float64)
    g = torch.randn(plan.shape, dtype=torch.float64)
    lhs = (plan.forward(w)[0] * g).sum()
    rhs = (w * plan.transpose(g)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


def test_gconv_parallel_chunks(monkeypatch):
    """The gather / scatter split over threads gives the same result as one chunk."""
    numba = pytest.importorskip("numba")
    monkeypatch.setattr(_gconv, "_PARALLEL_MIN_ENTRIES", 0)
    lb = _layer("C8-mixed")
    plan = GConvPlan(lb, torch.float64)
    plan.small = False
    w = torch.randn(lb.dim, dtype=torch.float64)
    g = torch.randn(plan.shape, dtype=torch.float64)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = plan.forward(w)[0], plan.transpose(g)
        numba.set_num_threads(max(2, numba.config.NUMBA_NUM_THREADS) if numba.config.NUMBA_NUM_THREADS > 1 else 1)
        many = plan.forward(w)[0], plan.transpose(g)
    finally:
        numba.set_num_threads(before)
    torch.testing.assert_close(one[0], many[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(one[1], many[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("space", [e2.rot2d(8), e2.flip_rot2d(4)])
def test_gconv_r2conv_is_equivariant(space):
    ft = e2.FieldType(space, [space.regular_repr] * 2)
    torch.manual_seed(0)
    conv = e2.R2Conv(ft, ft, 5, padding=2, expansion="block", executor="gconv").double()
    conv.check_equivariance()  # exact for quarter turns and reflections, interpolated otherwise


def test_gconv_storage_and_auto_choice():
    """The benchmark's regular layers: stored basis at most a quarter of the padded one, and ``auto`` runs gconv."""
    cases = [(e2.rot2d(8), 4, 5), (e2.flip_rot2d(8), 2, 5), (e2.rot2d(4), 4, 3)]
    for space, n, k in cases:
        ft = e2.FieldType(space, [space.regular_repr] * n)
        lb = e2.layer_basis(ft, ft, e2.basis_params(k))
        assert lb.padding_ratio() >= 4
        assert lb.block_executor() == "gconv"
        assert lb.stored_bytes("block", executor="gconv") * 4 <= lb.stored_bytes("padded")
        assert lb.stored_bytes("block") == lb.stored_bytes("block", executor="gconv")
        w = torch.randn(lb.dim)
        torch.testing.assert_close(lb.expand(w, "block"), lb.expand(w, "padded"), rtol=1e-5, atol=1e-6)


def test_gconv_results_do_not_alias_buffers():
    lb = _layer("C8-regular")
    plan = GConvPlan(lb, torch.float32)
    for small in (True, False):
        plan.small = small
        w1, w2 = torch.randn(lb.dim), torch.randn(lb.dim)
        a = gconv_expand(plan, w1)
        a_copy = a.clone()
        gconv_expand(plan, w2)
        torch.testing.assert_close(a, a_copy)


def test_gconv_bad_input():
    lb = _layer("C8-regular")
    plan = GConvPlan(lb, torch.float32)
    with pytest.raises(ValueError, match="gconv"):
        gconv_expand(plan, torch.randn(lb.dim, dtype=torch.float64))
    with pytest.raises(ValueError, match="gconv"):
        lb.expand(torch.randn(lb.dim, dtype=torch.float64, device="meta"), "block", "gconv")
    with pytest.raises(ValueError, match="float32 or float64"):
        GConvPlan(lb, torch.float16)


def test_gconv_filter_comes_from_the_pool_and_never_aliases(monkeypatch):
    """Large filters come from the CPU buffer pool (executors/cpu/_pool.py, whose reuse of released buffers is tested
    there): the filter's storage is one the pool keeps, and a live filter (held directly or saved by autograd) is
    never handed out again."""
    from collections import OrderedDict

    from equitp.executors.cpu import _pool

    monkeypatch.setattr(_pool, "_pool_storages", OrderedDict())  # an empty pool: other tests' free buffers aside
    c8 = e2.rot2d(8)
    ft = e2.FieldType(c8, [c8.regular_repr] * 16)  # a 1.6 MB filter: above the pool's 1 MiB threshold
    lb = e2.layer_basis(ft, ft, e2.basis_params(5))
    plan = GConvPlan(lb, torch.float32)
    assert not plan.small
    w1, w2 = torch.randn(lb.dim), torch.randn(lb.dim, requires_grad=True)
    a = gconv_expand(plan, w1)
    pooled = [st.data_ptr() for sts in _pool._pool_storages.values() for st in sts]
    assert a.data_ptr() in pooled
    a_copy = a.clone()
    b = gconv_expand(plan, w2)  # alive, and saved by nobody
    c = gconv_expand(plan, w1 * 2)
    torch.testing.assert_close(a, a_copy)
    torch.testing.assert_close(c, 2 * a_copy)
    assert len({a.data_ptr(), b.data_ptr(), c.data_ptr()}) == 3
    (gw,) = torch.autograd.grad(b, w2, torch.ones_like(b))
    (gw_padded,) = torch.autograd.grad(lb.expand(w2, "padded"), w2, torch.ones_like(b))
    torch.testing.assert_close(gw, gw_padded, rtol=1e-4, atol=1e-4)
