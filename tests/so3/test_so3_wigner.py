"""Tests of wigner_D, wigner_3j and clebsch_gordan_sparse (equitp.so3)."""

import itertools
import math

import numpy as np
import pytest
import torch

import equitp.so3 as so3
from equitp.so3 import _cache, _wigner

DTYPES = [torch.float32, torch.float64]


def _tol(dtype):
    return dict(rtol=1e-4, atol=2e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _triples(lmax):
    return [(a, b, c) for a, b, c in itertools.product(range(lmax + 1), repeat=3) if abs(a - b) <= c <= a + b]


# -- Wigner D ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_wigner_D_matches_e3nn(dtype):
    o3 = pytest.importorskip("e3nn.o3")
    a, b, c = so3.rand_angles(6, dtype=dtype, generator=_gen(0))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # e3nn builds its generators in the default dtype
    try:
        for l in range(7):  # noqa: E741
            torch.testing.assert_close(so3.wigner_D(l, a, b, c), o3.wigner_D(l, a, b, c), **_tol(dtype))
    finally:
        torch.set_default_dtype(previous)


@pytest.mark.parametrize("dtype", DTYPES)
def test_wigner_D_is_orthogonal_representation(dtype):
    R1 = so3.rand_matrix(5, dtype=torch.float64, generator=_gen(1))
    R2 = so3.rand_matrix(5, dtype=torch.float64, generator=_gen(2))
    A1, A2, A12 = (tuple(t.to(dtype) for t in so3.matrix_to_angles(R)) for R in (R1, R2, R1 @ R2))
    for l in (0, 1, 2, 5, 9, 14):  # noqa: E741
        D1, D2, D12 = so3.wigner_D(l, *A1), so3.wigner_D(l, *A2), so3.wigner_D(l, *A12)
        eye = torch.eye(2 * l + 1, dtype=dtype).expand_as(D1)
        torch.testing.assert_close(D12, D1 @ D2, **_tol(dtype))
        torch.testing.assert_close(D1 @ D1.transpose(-1, -2), eye, **_tol(dtype))
        torch.testing.assert_close(so3.wigner_D(l, *so3.inverse_angles(*A1)), D1.transpose(-1, -2), **_tol(dtype))
        torch.testing.assert_close(so3.wigner_D(l, *so3.identity_angles(5, dtype=dtype)), eye, **_tol(dtype))


def test_wigner_D_degree_one_is_the_rotation():
    a, b, c = so3.rand_angles(10, dtype=torch.float64, generator=_gen(3))
    torch.testing.assert_close(so3.wigner_D(1, a, b, c), so3.angles_to_matrix(a, b, c))


def test_wigner_D_shapes_and_broadcasting():
    a = torch.zeros(4, 1)
    b = torch.zeros(1, 3)
    assert so3.wigner_D(2, a, b, 0.0).shape == (4, 3, 5, 5)
    assert so3.wigner_D(0, a, b, 0.0).shape == (4, 3, 1, 1)
    assert so3.wigner_D(3, 0.1, 0.2, 0.3).shape == (7, 7)
    assert so3.wigner_D(2, torch.zeros(0), 0.0, 0.0).shape == (0, 5, 5)
    assert so3.wigner_D(2, torch.zeros(2, dtype=torch.float64), 0.0, 0.0).dtype == torch.float64


def test_wigner_D_gradcheck():
    a, b, c = so3.rand_angles(2, dtype=torch.float64, requires_grad=True, generator=_gen(4))
    assert torch.autograd.gradcheck(lambda a, b, c: so3.wigner_D(3, a, b, c), (a, b, c))
    assert torch.autograd.gradgradcheck(lambda a, b, c: so3.wigner_D(2, a, b, c), (a, b, c))


def test_wigner_D_bad_inputs():
    with pytest.raises(ValueError, match="non-negative"):
        so3.wigner_D(-1, 0.0, 0.0, 0.0)
    with pytest.raises(TypeError, match="int"):
        so3.wigner_D(1.0, 0.0, 0.0, 0.0)
    with pytest.raises(TypeError, match="floating"):
        so3.wigner_D(1, torch.tensor([1]), 0.0, 0.0)


# -- Wigner 3j --------------------------------------------------------------------------------------------------------


def test_wigner_3j_matches_e3nn_small():
    o3 = pytest.importorskip("e3nn.o3")
    for l1, l2, l3 in _triples(3):
        ours = so3.wigner_3j(l1, l2, l3, dtype=torch.float64)
        torch.testing.assert_close(ours, o3.wigner_3j(l1, l2, l3, dtype=torch.float64), rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_wigner_3j_invariance_all_triples(dtype):
    """(D1 x D2 x D3) C = C for all triples up to l = 6; Frobenius norm 1."""
    angles = so3.rand_angles(dtype=torch.float64, generator=_gen(5))
    D = [so3.wigner_D(l, *angles).to(dtype).numpy() for l in range(7)]
    tol = 2e-6 if dtype == torch.float32 else 1e-13
    worst_rot, worst_norm = 0.0, 0.0
    for l1, l2, l3 in _triples(6):
        C = so3.wigner_3j(l1, l2, l3, dtype=dtype)
        assert C.shape == (2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1) and C.dtype == dtype
        C = C.numpy()
        # NumPy for these many tiny contractions: cheap and independent of torch's thread pool.
        rotated = np.einsum("ia,jb,kc,abc->ijk", D[l1], D[l2], D[l3], C, optimize=True)
        worst_rot = max(worst_rot, float(np.abs(rotated - C).max()))
        worst_norm = max(worst_norm, abs(float(np.linalg.norm(C)) - 1))
    assert worst_rot < tol and worst_norm < tol, (worst_rot, worst_norm)


def test_wigner_3j_intertwines_tensor_product():
    """(D1 kron D2) C = C D3 as matrices (the intertwining form of invariance), l up to 10 at a few triples."""
    angles = so3.rand_angles(dtype=torch.float64, generator=_gen(6))
    for l1, l2, l3 in [(10, 10, 10), (7, 9, 4), (10, 3, 13), (5, 5, 0)]:
        C = so3.wigner_3j(l1, l2, l3, dtype=torch.float64).reshape((2 * l1 + 1) * (2 * l2 + 1), 2 * l3 + 1)
        D12 = torch.kron(so3.wigner_D(l1, *angles), so3.wigner_D(l2, *angles))
        torch.testing.assert_close(D12 @ C, C @ so3.wigner_D(l3, *angles), rtol=1e-10, atol=1e-12)


def test_wigner_3j_permutation_symmetry():
    for l1, l2, l3 in _triples(4):
        C = so3.wigner_3j(l1, l2, l3, dtype=torch.float64)
        s = (-1) ** (l1 + l2 + l3)
        swapped = so3.wigner_3j(l2, l1, l3, dtype=torch.float64)
        torch.testing.assert_close(swapped, s * C.permute(1, 0, 2), rtol=0, atol=0)
        torch.testing.assert_close(so3.wigner_3j(l2, l3, l1, dtype=torch.float64), C.permute(1, 2, 0), rtol=0, atol=0)


def _complex_to_real(l):  # noqa: E741
    """Unitary Q (rows complex m, columns real m), Wikipedia's relation times e3nn's global (-i)^l."""
    Q = np.zeros((2 * l + 1, 2 * l + 1), dtype=complex)
    for m in range(-l, l + 1):
        if m < 0:
            Q[l + m, l - m] = 1 / math.sqrt(2)
            Q[l + m, l + m] = -1j / math.sqrt(2)
        elif m == 0:
            Q[l, l] = 1
        else:
            Q[l + m, l + m] = (-1) ** m / math.sqrt(2)
            Q[l + m, l - m] = 1j * (-1) ** m / math.sqrt(2)
    return (-1j) ** l * Q


def test_wigner_3j_from_sympy_clebsch_gordan():
    """Real 3j rebuilt from sympy's exact complex Clebsch-Gordan coefficients."""
    wigner = pytest.importorskip("sympy.physics.wigner")
    for l1, l2, l3 in _triples(3):
        cg = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1))
        for m1, m2 in itertools.product(range(-l1, l1 + 1), range(-l2, l2 + 1)):
            if abs(m1 + m2) <= l3:
                cg[l1 + m1, l2 + m2, l3 + m1 + m2] = float(wigner.clebsch_gordan(l1, l2, l3, m1, m2, m1 + m2))
        Q1, Q2, Q3 = _complex_to_real(l1), _complex_to_real(l2), _complex_to_real(l3)
        C = np.einsum("ai,bj,ck,abc->ijk", Q1, Q2, Q3.conj(), cg)
        assert np.abs(C.imag).max() < 1e-14
        expected = C.real / np.linalg.norm(C.real)
        np.testing.assert_allclose(so3.wigner_3j(l1, l2, l3, dtype=torch.float64).numpy(), expected, rtol=0, atol=1e-14)


def test_exact_complex_clebsch_gordan_vs_sympy():
    wigner = pytest.importorskip("sympy.physics.wigner")
    from equitp.so3._exact import complex_clebsch_gordan, surd_to_float

    for l1, l2, l3 in [(1, 1, 1), (2, 1, 3), (3, 3, 2), (4, 2, 3)]:
        for m1, m2 in itertools.product(range(-l1, l1 + 1), range(-l2, l2 + 1)):
            m3 = m1 + m2
            if abs(m3) > l3:
                continue
            expected = float(wigner.clebsch_gordan(l1, l2, l3, m1, m2, m3))
            assert abs(surd_to_float(complex_clebsch_gordan(l1, m1, l2, m2, l3, m3)) - expected) < 1e-15


def test_wigner_3j_known_values():
    C = so3.wigner_3j(1, 1, 0, dtype=torch.float64)
    torch.testing.assert_close(C[:, :, 0], torch.eye(3, dtype=torch.float64) / math.sqrt(3))
    # (1, 1, 1) is the normalised Levi-Civita tensor (up to e3nn's sign)
    eps = torch.zeros(3, 3, 3, dtype=torch.float64)
    for (i, j, k), s in {(0, 1, 2): 1, (1, 2, 0): 1, (2, 0, 1): 1, (0, 2, 1): -1, (2, 1, 0): -1, (1, 0, 2): -1}.items():
        eps[i, j, k] = s
    C = so3.wigner_3j(1, 1, 1, dtype=torch.float64)
    torch.testing.assert_close(C.abs(), eps.abs() / math.sqrt(6))
    assert torch.allclose(C, eps / math.sqrt(6)) or torch.allclose(C, -eps / math.sqrt(6))


def test_wigner_3j_returns_fresh_tensor():
    a = so3.wigner_3j(2, 2, 2)
    a.zero_()
    assert so3.wigner_3j(2, 2, 2).abs().sum() > 0
    assert so3.wigner_3j(2, 2, 2).dtype == torch.get_default_dtype()


def test_wigner_3j_bad_inputs():
    with pytest.raises(ValueError, match="triangle"):
        so3.wigner_3j(1, 1, 3)
    with pytest.raises(ValueError, match="triangle"):
        so3.clebsch_gordan_sparse(0, 2, 1)
    with pytest.raises(ValueError, match="non-negative"):
        so3.wigner_3j(-1, 1, 1)
    with pytest.raises(TypeError, match="l2"):
        so3.wigner_3j(1, 1.0, 1)
    with pytest.raises(TypeError):
        so3.wigner_3j(True, 1, 1)
    with pytest.raises(TypeError, match="dtype"):
        so3.wigner_3j(1, 1, 1, dtype=torch.int64)
    assert so3.wigner_3j(np.int64(1), 1, 2).shape == (3, 3, 5)


def test_clebsch_gordan_sparse_matches_dense():
    for l1, l2, l3 in [(1, 1, 2), (3, 4, 5), (5, 5, 5), (2, 3, 4)]:
        i, j, k, v = so3.clebsch_gordan_sparse(l1, l2, l3)
        assert i.dtype == j.dtype == k.dtype == np.int64 and v.dtype == np.float64
        dense = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1))
        dense[i, j, k] = v
        np.testing.assert_array_equal(dense, so3.wigner_3j(l1, l2, l3, dtype=torch.float64).numpy())
        assert np.all(v != 0)
        order = np.lexsort((k, j, i))
        np.testing.assert_array_equal(order, np.arange(len(v)))
    # Known counts of non-zeros: real coupling (l, l, 2l)... and a selection rule count check.
    assert len(so3.clebsch_gordan_sparse(1, 1, 2)[3]) == 11


# -- disk cache -------------------------------------------------------------------------------------------------------


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EQUITP_CACHE_DIR", str(tmp_path / "cache"))
    _wigner._wigner_3j_table.cache_clear()
    yield tmp_path / "cache"
    _wigner._wigner_3j_table.cache_clear()


def test_disk_cache_writes_plain_npy(fresh_cache):
    C = so3.wigner_3j(3, 4, 5, dtype=torch.float64)
    path = fresh_cache / "so3-v1" / "wigner_3j" / "w3j_3_4_5.npy"
    assert path.is_file()
    arr = np.load(path, allow_pickle=False)
    assert arr.dtype == np.float64
    np.testing.assert_array_equal(arr, C.numpy())
    # a second process-level miss reads the file back
    _wigner._wigner_3j_table.cache_clear()
    torch.testing.assert_close(so3.wigner_3j(3, 4, 5, dtype=torch.float64), C, rtol=0, atol=0)


def test_disk_cache_ignores_corrupt_files(fresh_cache):
    expected = so3.wigner_3j(2, 2, 3, dtype=torch.float64)
    path = fresh_cache / "so3-v1" / "wigner_3j" / "w3j_2_2_3.npy"
    np.save(path, np.zeros((2, 2)))  # wrong shape
    _wigner._wigner_3j_table.cache_clear()
    torch.testing.assert_close(so3.wigner_3j(2, 2, 3, dtype=torch.float64), expected, rtol=0, atol=0)
    path.write_bytes(b"not a npy file")
    _wigner._wigner_3j_table.cache_clear()
    torch.testing.assert_close(so3.wigner_3j(2, 2, 3, dtype=torch.float64), expected, rtol=0, atol=0)


def test_disk_cache_unwritable_is_silent(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    monkeypatch.setenv("EQUITP_CACHE_DIR", str(blocker / "sub"))  # cannot create a directory under a file
    _wigner._wigner_3j_table.cache_clear()
    try:
        assert so3.wigner_3j(2, 1, 1).shape == (5, 3, 3)
    finally:
        _wigner._wigner_3j_table.cache_clear()


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("EQUITP_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _cache.cache_dir() == tmp_path / "xdg" / "equitp"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _cache.cache_dir() == tmp_path / "home" / ".cache" / "equitp"
    monkeypatch.setenv("EQUITP_CACHE_DIR", str(tmp_path / "explicit"))
    assert _cache.cache_dir() == tmp_path / "explicit"
