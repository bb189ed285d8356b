"""Tests of equitp.so3.spherical_harmonics against independent oracles and e3nn."""

import math

import pytest
import torch

from equitp.so3 import (
    angles_to_xyz,
    matrix_to_angles,
    rand_matrix,
    s2_grid,
    spherical_harmonics,
    wigner_D,
)

DTYPES = [torch.float32, torch.float64]
NORMALIZATIONS = ["integral", "component", "norm"]


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)


def _points(n, dtype, seed=0, unit=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    if unit:
        x = x / x.norm(dim=-1, keepdim=True)
    return x.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("normalize", [True, False])
def test_matches_e3nn(dtype, normalization, normalize):
    o3 = pytest.importorskip("e3nn.o3")
    x = _points(200, dtype, seed=1)
    ls = list(range(13))  # e3nn 0.6 implements l <= 12
    ours = spherical_harmonics(ls, x, normalize, normalization)
    ref = o3.spherical_harmonics(ls, x, normalize, normalization)
    scale = ref.abs().amax(dim=0).clamp(min=1)
    torch.testing.assert_close(ours / scale, ref / scale, **_tol(dtype))


@pytest.mark.parametrize("ls", [3, [2, 0, 2], "1o+3o", "0e+1o+2e", "2x1o+0e"])
def test_matches_e3nn_ls_forms(ls):
    o3 = pytest.importorskip("e3nn.o3")
    x = _points(20, torch.float64, seed=2)
    torch.testing.assert_close(spherical_harmonics(ls, x, False), o3.spherical_harmonics(ls, x, False))


def test_accepts_irreps_objects():
    from equitp.irreps import Irrep, Irreps

    x = _points(5, torch.float64)
    ref = spherical_harmonics([0, 1, 2], x, True)
    torch.testing.assert_close(spherical_harmonics(Irreps("0e+1o+2e"), x, True), ref)
    torch.testing.assert_close(spherical_harmonics(Irreps("0e+1e+2e"), x, True), ref)  # pseudovector input
    torch.testing.assert_close(spherical_harmonics([(1, (0, 1)), (1, "1o"), (1, (2, 1))], x, True), ref)
    torch.testing.assert_close(spherical_harmonics(Irrep("1o"), x, True), ref[:, 1:4])
    torch.testing.assert_close(spherical_harmonics(range(3), x, True), ref)
    o3 = pytest.importorskip("e3nn.o3")
    torch.testing.assert_close(spherical_harmonics(o3.Irreps("0e+1o+2e"), x, True), ref)


def test_explicit_low_degrees():
    """Closed forms (component normalisation): Y0 = 1, Y1 = sqrt3 (x, y, z), Y2 with y the polar axis."""
    x = _points(10, torch.float64, unit=True)
    X, Y, Z = x.unbind(-1)
    Y2 = torch.stack(
        [
            math.sqrt(15) * X * Z,
            math.sqrt(15) * X * Y,
            math.sqrt(5) * (Y**2 - 0.5 * (X**2 + Z**2)),
            math.sqrt(15) * Y * Z,
            math.sqrt(15) / 2 * (Z**2 - X**2),
        ],
        dim=-1,
    )
    sh = spherical_harmonics([0, 1, 2], x, False, "component")
    torch.testing.assert_close(sh[:, 0], torch.ones(10, dtype=torch.float64))
    torch.testing.assert_close(sh[:, 1:4], math.sqrt(3) * x)
    torch.testing.assert_close(sh[:, 4:9], Y2)


def test_textbook_formula_with_sympy():
    """Y_lm = sqrt(2) N_l|m| P_l^|m|(cos t) (sin|m|phi | cos m phi) with standard axes (X, Y, Z) = (z, x, y)."""
    sympy = pytest.importorskip("sympy")
    x = _points(6, torch.float64, seed=3, unit=True)
    X, Y, Z = x[:, 2], x[:, 0], x[:, 1]
    theta, phi = torch.acos(Z), torch.atan2(Y, X)
    t = sympy.Symbol("t")
    for l in range(7):  # noqa: E741
        sh = spherical_harmonics(l, x, False, "integral")
        for m in range(-l, l + 1):
            a = abs(m)
            # sympy's assoc_legendre includes the Condon-Shortley phase (-1)^m; the real basis has none.
            P = sympy.lambdify(t, (-1) ** a * sympy.assoc_legendre(l, a, t), "math")
            N = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - a) / math.factorial(l + a))
            for n in range(x.shape[0]):
                trig = 1.0 if m == 0 else math.sqrt(2) * (math.cos(m * phi[n]) if m > 0 else math.sin(a * phi[n]))
                expected = N * P(float(torch.cos(theta[n]))) * trig
                assert abs(sh[n, m + l].item() - expected) < 1e-12, (l, m, n)


@pytest.mark.parametrize("dtype", DTYPES)
def test_orthonormal_by_quadrature(dtype):
    lmax = 14  # beyond e3nn's range
    beta, alpha, w = s2_grid(lmax + 1, 2 * lmax + 1, dtype=torch.float64)
    xyz = angles_to_xyz(alpha[None, :], beta[:, None]).to(dtype)
    Y = spherical_harmonics(list(range(lmax + 1)), xyz, True).to(torch.float64)
    gram = torch.einsum("i,ija,ijb->ab", w, Y, Y)
    torch.testing.assert_close(gram, torch.eye(gram.shape[0], dtype=torch.float64), **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_addition_theorem(dtype):
    """sum_m Y_lm(x) Y_lm(y) = (2l+1)/(4 pi) P_l(x.y) for unit x, y (integral normalisation)."""
    x, y = _points(50, torch.float64, 4, unit=True), _points(50, torch.float64, 5, unit=True)
    c = (x * y).sum(-1)
    P = [torch.ones_like(c), c]
    for l in range(1, 15):  # noqa: E741
        P.append(((2 * l + 1) * c * P[l] - l * P[l - 1]) / (l + 1))
    for l in range(16):  # noqa: E741
        lhs = (spherical_harmonics(l, x.to(dtype), True) * spherical_harmonics(l, y.to(dtype), True)).sum(-1)
        rhs = (2 * l + 1) / (4 * math.pi) * P[l]
        torch.testing.assert_close(lhs.double(), rhs, **_tol(dtype))


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_normalization_conventions(normalization):
    x = _points(30, torch.float64, unit=True)
    for l in (0, 1, 5, 13):  # noqa: E741
        sq = spherical_harmonics(l, x, False, normalization).pow(2).sum(-1)
        expected = {"component": 2 * l + 1, "norm": 1.0, "integral": (2 * l + 1) / (4 * math.pi)}[normalization]
        torch.testing.assert_close(sq, torch.full_like(sq, expected))


@pytest.mark.parametrize("dtype", DTYPES)
def test_equivariance(dtype):
    R = rand_matrix(8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = _points(8, torch.float64, 6)
    angles = matrix_to_angles(R)
    ls = list(range(15))
    Yx = spherical_harmonics(ls, x.to(dtype), True)
    YRx = spherical_harmonics(ls, torch.einsum("nij,nj->ni", R, x).to(dtype), True)
    i = 0
    for l in ls:  # noqa: E741
        D = wigner_D(l, *angles).to(dtype)
        block = slice(i, i + 2 * l + 1)
        torch.testing.assert_close(YRx[:, block], torch.einsum("nij,nj->ni", D, Yx[:, block]), **_tol(dtype))
        i += 2 * l + 1


def test_parity_and_homogeneity():
    x = _points(10, torch.float64, 7)
    ls = list(range(13))
    Y = spherical_harmonics(ls, x, False)
    sign = torch.cat([torch.full((2 * l + 1,), (-1.0) ** l, dtype=torch.float64) for l in ls])
    torch.testing.assert_close(spherical_harmonics(ls, -x, False), Y * sign)
    scale = torch.cat([torch.full((2 * l + 1,), 1.7**l, dtype=torch.float64) for l in ls])
    torch.testing.assert_close(spherical_harmonics(ls, 1.7 * x, False), Y * scale)
    torch.testing.assert_close(spherical_harmonics(ls, 1.7 * x, True), spherical_harmonics(ls, x, True))


def test_shapes_and_edge_cases():
    x = torch.randn(2, 3, 4, 3)
    assert spherical_harmonics([0, 1, 2], x, True).shape == (2, 3, 4, 9)
    assert spherical_harmonics(2, torch.randn(3), True).shape == (5,)
    assert spherical_harmonics(3, torch.zeros(0, 3), False).shape == (0, 7)
    y = spherical_harmonics([0, 1, 2], torch.zeros(2, 3), True, "component")  # zero vector -> as e3nn
    torch.testing.assert_close(y, torch.tensor([[1.0] + [0.0] * 8] * 2))
    assert spherical_harmonics(1, torch.randn(4, 3, dtype=torch.float64), True).dtype == torch.float64


@pytest.mark.parametrize("normalize", [True, False])
def test_gradcheck(normalize):
    x = _points(2, torch.float64, 8).requires_grad_(True)
    f = lambda x: spherical_harmonics([0, 1, 2, 4], x, normalize)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


def test_grad_matches_e3nn():
    o3 = pytest.importorskip("e3nn.o3")
    x = _points(10, torch.float64, 9).requires_grad_(True)
    w = torch.randn(10, 36, dtype=torch.float64)
    (g1,) = torch.autograd.grad((spherical_harmonics(list(range(6)), x, True) * w).sum(), x)
    (g2,) = torch.autograd.grad((o3.spherical_harmonics(list(range(6)), x, True) * w).sum(), x)
    torch.testing.assert_close(g1, g2)


def test_bad_inputs():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="normalization"):
        spherical_harmonics(1, x, True, "bogus")
    with pytest.raises(ValueError, match="shape"):
        spherical_harmonics(1, torch.randn(4, 2), True)
    with pytest.raises(TypeError, match="floating"):
        spherical_harmonics(1, torch.ones(4, 3, dtype=torch.int64), True)
    with pytest.raises(TypeError, match="torch.Tensor"):
        spherical_harmonics(1, [[1.0, 2.0, 3.0]], True)
    with pytest.raises(ValueError, match="non-negative"):
        spherical_harmonics(-1, x, True)
    with pytest.raises(ValueError, match="non-negative"):
        spherical_harmonics([0, -2], x, True)
    with pytest.raises(TypeError):
        spherical_harmonics(1.5, x, True)
    with pytest.raises(TypeError):
        spherical_harmonics(True, x, True)
    with pytest.raises(TypeError, match="ints"):
        spherical_harmonics([1.0, 2.0], x, True)
    with pytest.raises(TypeError):
        spherical_harmonics(None, x, True)
    with pytest.raises(ValueError, match="empty"):
        spherical_harmonics([], x, True)
    with pytest.raises(ValueError, match="parit"):
        spherical_harmonics("1o+2o", x, True)
    with pytest.raises(ValueError):
        spherical_harmonics("1q", x, True)
    with pytest.raises(TypeError, match="normalize"):
        spherical_harmonics(1, x, "yes")
