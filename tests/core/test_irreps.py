"""Irrep / Irreps: parsing, sizes, slices, simplify, sort, equality with e3nn, errors; the test kit."""

import pytest
import torch

import equitp
from equitp import Irrep, Irreps
from equitp.testing import assert_equivariant, equivariance_error, random_irreps


def test_parse_and_sizes():
    irreps = Irreps("16x0e + 8x1o+2e")
    assert [(m, str(ir)) for m, ir in irreps] == [(16, "0e"), (8, "1o"), (1, "2e")]
    assert irreps.dim == 16 + 24 + 5
    assert irreps.num_irreps == 25
    assert irreps.ls == [0] * 16 + [1] * 8 + [2]
    assert irreps.lmax == 2
    assert irreps.slices() == [slice(0, 16), slice(16, 40), slice(40, 45)]
    assert Irreps("2x1e") == Irreps([(2, (1, 1))]) == "2x1e"
    assert Irrep("1y") == Irrep(1, -1) and Irrep("2y") == Irrep(2, 1)
    assert Irreps("") == Irreps() and Irreps().dim == 0


def test_simplify_sort_hash():
    assert Irreps("1o + 2x1o + 0e + 0x2e").simplify() == Irreps("3x1o+0e")
    s = Irreps("3x1o+0e+2e+0o").sort()
    assert s.irreps == Irreps("0o+0e+3x1o+2e")
    assert [s.irreps[s.p[i]] for i in range(4)] == list(Irreps("3x1o+0e+2e+0o"))
    assert {Irreps("0e+1o"): 1}[Irreps("1x0e + 1x1o")] == 1
    assert Irrep("1o") * Irrep("1o") == (Irrep("0e"), Irrep("1e"), Irrep("2e"))
    assert Irreps("0e") + "1o" == Irreps("0e+1o") and 2 * Irreps("1o") == Irreps("1o+1o")


@pytest.mark.parametrize("bad", ["16x0e+8xq", "1x", "+1o", "2x1z", "abc", "1x-1e"])
def test_malformed_names_token(bad):
    with pytest.raises(ValueError, match="irrep"):
        Irreps(bad)


def test_bad_types():
    with pytest.raises(TypeError):
        Irreps(3.5)
    with pytest.raises(ValueError, match="parity"):
        Irrep(1, 0)
    with pytest.raises(ValueError, match=">= 0"):
        Irrep(-1, 1)


def test_e3nn_interop():
    o3 = pytest.importorskip("e3nn.o3")
    a = o3.Irreps("16x0e+8x1o+2e")
    assert Irreps(a) == a and a == Irreps(a)
    assert Irreps(o3.Irrep("1o")) == Irreps("1o") and Irrep(o3.Irrep("2e")) == Irrep("2e")
    assert Irreps(a).sort().p == a.sort().p


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_D_from_matrix_is_a_representation(dtype):
    irreps = Irreps("2x0e+1o+2e+1e+3o")
    R1, R2 = equitp.rand_matrix(dtype=dtype), -equitp.rand_matrix(dtype=dtype)
    D = lambda R: irreps.D_from_matrix(R)  # noqa: E731
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    assert (D(R1 @ R2) - D(R1) @ D(R2)).abs().max() < tol
    # parity: inversion acts as p on each block
    Dinv = irreps.D_from_matrix(-torch.eye(3, dtype=dtype))
    expected = torch.cat([torch.full((mul * ir.dim,), float(ir.p), dtype=dtype) for mul, ir in irreps])
    assert (Dinv - torch.diag(expected)).abs().max() < tol


def test_assert_equivariant_detects_a_broken_function():
    tp = equitp.FullyConnectedTensorProduct("2x0e+1x1o", "1x1o", "1x0e+1x1e").double()
    assert_equivariant(tp, [tp.irreps_in1, tp.irreps_in2], tp.irreps_out)
    broken = lambda x, y: tp(x, y) + x[:, 2:3].repeat(1, 4)  # noqa: E731  (mixes a vector component into scalars)
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(broken, [tp.irreps_in1, tp.irreps_in2], tp.irreps_out)
    # the cross product of two vectors is a pseudo-vector: declared as "1o" it fails the parity check only
    cross = lambda x, y: torch.linalg.cross(x[:, 2:5], y)  # noqa: E731
    err = equivariance_error(cross, ["2x0e+1x1o", "1x1o"], "1o")
    assert err["rotation"] < 1e-9 and err["rotoinversion"] > 1e-3
    assert max(equivariance_error(cross, ["2x0e+1x1o", "1x1o"], "1e").values()) < 1e-9


def test_random_irreps():
    irs = random_irreps(5, lmax=2, mul_max=3, seed=0)
    assert len(irs) == 5 and all(ir.lmax <= 2 and ir.num_irreps >= 1 for ir in irs)
    assert random_irreps(seed=1) == random_irreps(seed=1)
