"""Tests of gaunt, s2_grid, sh_to_grid and grid_to_sh (equitp.so3)."""

import itertools
import math

import pytest
import torch

import equitp.so3 as so3

DTYPES = [torch.float32, torch.float64]


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)


def _grid_sh(ls, res_beta, res_alpha):
    beta, alpha, w = so3.s2_grid(res_beta, res_alpha, dtype=torch.float64)
    xyz = so3.angles_to_xyz(alpha[None, :], beta[:, None])
    return [so3.spherical_harmonics(l, xyz, True) for l in ls], w


def test_gaunt_matches_quadrature():
    """Independent route: Gauss-Legendre x uniform quadrature of Y1 Y2 Y3 (exact at this resolution)."""
    lmax = 6
    beta, alpha, w = so3.s2_grid((3 * lmax) // 2 + 1, 3 * lmax + 1, dtype=torch.float64)
    Y = so3.spherical_harmonics(list(range(lmax + 1)), so3.angles_to_xyz(alpha[None, :], beta[:, None]), True)
    Yw = Y * w[:, None, None]
    full = torch.einsum("pa,pb,pc->abc", Yw.flatten(0, 1), Y.flatten(0, 1), Y.flatten(0, 1))
    for l1, l2, l3 in itertools.product(range(lmax + 1), repeat=3):
        expected = full[l1 * l1 : (l1 + 1) ** 2, l2 * l2 : (l2 + 1) ** 2, l3 * l3 : (l3 + 1) ** 2]
        torch.testing.assert_close(so3.gaunt(l1, l2, l3, dtype=torch.float64), expected, rtol=0, atol=1e-14)


def test_gaunt_matches_sympy_real_gaunt():
    wigner = pytest.importorskip("sympy.physics.wigner")
    if not hasattr(wigner, "real_gaunt"):
        pytest.skip("sympy without real_gaunt")
    for l1, l2, l3 in [(1, 1, 2), (1, 2, 3)]:
        G = so3.gaunt(l1, l2, l3, dtype=torch.float64)
        for m1, m2, m3 in itertools.product(range(-l1, l1 + 1), range(-l2, l2 + 1), range(-l3, l3 + 1)):
            expected = float(wigner.real_gaunt(l1, l2, l3, m1, m2, m3))
            assert abs(G[l1 + m1, l2 + m2, l3 + m3].item() - expected) < 1e-15


def test_gaunt_is_proportional_to_wigner_3j():
    for l1, l2, l3 in [(2, 3, 3), (4, 4, 4), (5, 3, 4), (6, 6, 8)]:
        G = so3.gaunt(l1, l2, l3, dtype=torch.float64)
        C = so3.wigner_3j(l1, l2, l3, dtype=torch.float64)
        c = (G * C).sum()
        torch.testing.assert_close(G, c * C, rtol=0, atol=1e-15)
        # |<G, C>|^2 = (2l1+1)(2l2+1)(2l3+1)/(4 pi) * (l1 l2 l3; 0 0 0)^2 > 0 for even l1 + l2 + l3
        assert c.abs() > 1e-3


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaunt_selection_rules_and_symmetry(dtype):
    assert torch.count_nonzero(so3.gaunt(1, 1, 1, dtype=dtype)) == 0  # odd sum
    assert torch.count_nonzero(so3.gaunt(2, 3, 2, dtype=dtype)) == 0
    assert torch.count_nonzero(so3.gaunt(0, 1, 3, dtype=dtype)) == 0  # triangle violated: zero, not an error
    assert so3.gaunt(0, 1, 3, dtype=dtype).shape == (1, 3, 7)
    G = so3.gaunt(2, 3, 3, dtype=dtype)
    torch.testing.assert_close(so3.gaunt(3, 2, 3, dtype=dtype), G.permute(1, 0, 2), rtol=0, atol=0)
    torch.testing.assert_close(so3.gaunt(3, 3, 2, dtype=dtype), G.permute(1, 2, 0), rtol=0, atol=0)
    G000 = so3.gaunt(0, 0, 0, dtype=dtype)
    torch.testing.assert_close(G000, torch.full((1, 1, 1), 1 / math.sqrt(4 * math.pi), dtype=dtype))
    assert so3.gaunt(1, 1, 2, dtype=dtype).dtype == dtype


def test_gaunt_product_expansion():
    """Y_l1(x) * Y_l2(x) = sum_l3 G Y_l3(x) pointwise."""
    x = torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    l1, l2 = 3, 4
    lhs = torch.einsum("na,nb->nab", so3.spherical_harmonics(l1, x, True), so3.spherical_harmonics(l2, x, True))
    rhs = sum(
        torch.einsum("abc,nc->nab", so3.gaunt(l1, l2, l3, dtype=torch.float64), so3.spherical_harmonics(l3, x, True))
        for l3 in range(abs(l1 - l2), l1 + l2 + 1)
    )
    torch.testing.assert_close(lhs, rhs)


def test_gaunt_bad_inputs():
    with pytest.raises(ValueError, match="non-negative"):
        so3.gaunt(-1, 1, 1)
    with pytest.raises(TypeError, match="l3"):
        so3.gaunt(1, 1, "2")


# -- grids ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_s2_grid(dtype):
    beta, alpha, w = so3.s2_grid(6, 11, dtype=dtype)
    assert beta.shape == (6,) and alpha.shape == (11,) and w.shape == (6,) and beta.dtype == dtype
    assert torch.all(beta[1:] > beta[:-1]) and 0 < beta[0] and beta[-1] < math.pi
    torch.testing.assert_close(w.sum() * 11, torch.tensor(4 * math.pi, dtype=dtype), **_tol(dtype))
    torch.testing.assert_close(alpha[1] - alpha[0], torch.tensor(2 * math.pi / 11, dtype=dtype), **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalization", ["integral", "component", "norm"])
def test_sh_grid_roundtrip_and_values(dtype, normalization):
    lmax = 7
    x = torch.randn(3, 2, (lmax + 1) ** 2, dtype=dtype, generator=torch.Generator().manual_seed(1))
    f = so3.sh_to_grid(x, lmax + 1, 2 * lmax + 1, normalization)
    assert f.shape == (3, 2, lmax + 1, 2 * lmax + 1)
    torch.testing.assert_close(so3.grid_to_sh(f, lmax, normalization), x, **_tol(dtype))
    beta, alpha, _ = so3.s2_grid(lmax + 1, 2 * lmax + 1, dtype=dtype)
    xyz = so3.angles_to_xyz(alpha[None, :], beta[:, None])
    Y = so3.spherical_harmonics(list(range(lmax + 1)), xyz, True, normalization)
    torch.testing.assert_close(f, torch.einsum("ijk,...k->...ij", Y, x), **_tol(dtype))
    # oversampled grids are exact as well; lower output degree = truncation
    f2 = so3.sh_to_grid(x, lmax + 3, 2 * lmax + 4, normalization)
    torch.testing.assert_close(so3.grid_to_sh(f2, lmax - 2, normalization), x[..., : (lmax - 1) ** 2], **_tol(dtype))


def test_grid_product_gives_gaunt_tensor_product():
    L1, L2, L3 = 3, 2, 4
    res_beta, res_alpha = (L1 + L2 + L3) // 2 + 1, L1 + L2 + L3 + 1
    g = torch.Generator().manual_seed(2)
    x1 = torch.randn(5, (L1 + 1) ** 2, dtype=torch.float64, generator=g)
    x2 = torch.randn(5, (L2 + 1) ** 2, dtype=torch.float64, generator=g)
    out = so3.grid_to_sh(so3.sh_to_grid(x1, res_beta, res_alpha) * so3.sh_to_grid(x2, res_beta, res_alpha), L3)
    expected = torch.zeros(5, (L3 + 1) ** 2, dtype=torch.float64)
    for l1, l2, l3 in itertools.product(range(L1 + 1), range(L2 + 1), range(L3 + 1)):
        G = so3.gaunt(l1, l2, l3, dtype=torch.float64)
        expected[:, l3 * l3 : (l3 + 1) ** 2] += torch.einsum(
            "abc,na,nb->nc", G, x1[:, l1 * l1 : (l1 + 1) ** 2], x2[:, l2 * l2 : (l2 + 1) ** 2]
        )
    torch.testing.assert_close(out, expected)


def test_grid_transforms_gradcheck():
    x = torch.randn(2, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: so3.grid_to_sh(so3.sh_to_grid(x, 3, 5) ** 2, 2), (x,))


def test_grid_bad_inputs():
    with pytest.raises(ValueError, match="lmax"):
        so3.sh_to_grid(torch.randn(3, 8), 4, 7)
    with pytest.raises(ValueError, match="res_beta"):
        so3.sh_to_grid(torch.randn(3, 9), 0, 7)
    with pytest.raises(ValueError, match="normalization"):
        so3.sh_to_grid(torch.randn(3, 9), 4, 7, "bogus")
    with pytest.raises(ValueError, match="res_beta, res_alpha"):
        so3.grid_to_sh(torch.randn(5), 2)
    with pytest.raises(TypeError, match="floating"):
        so3.grid_to_sh(torch.ones(3, 4, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="res_alpha"):
        so3.s2_grid(3, -1)
