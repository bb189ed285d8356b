"""The ``SparseAccumulation`` descriptor: value semantics, costs, permuted (backward) descriptors, and the real
Clebsch–Gordan rule."""

import pickle

import numpy as np
import pytest
import torch

from equitp.descriptors import SparseAccumulation, real_cg_rule
from equitp.executors.cpu import _accumulate as cpu_executor
from equitp.executors.reference import _accumulate as reference_executor


def random_descriptor(nnz=40, M1=5, M2=6, output_size=7, seed=0):
    rng = np.random.default_rng(seed)
    return SparseAccumulation(
        m1=rng.integers(0, M1, nnz),
        m2=rng.integers(0, M2, nnz),
        mu=rng.integers(0, output_size, nnz),
        M1=M1,
        M2=M2,
        output_size=output_size,
    )


# -- value semantics ------------------------------------------------------------------------------------------
def test_fields_are_read_only_int64_arrays():
    d = SparseAccumulation(m1=[0, 1], m2=torch.tensor([2, 0], dtype=torch.int32), mu=np.array([1, 1], np.uint8),
                           M1=2, M2=3, output_size=2)
    for array in (d.m1, d.m2, d.mu):
        assert array.dtype == np.int64
        assert not array.flags.writeable
    assert (d.M1, d.M2, d.output_size, d.nnz) == (2, 3, 2, 2)
    with pytest.raises(AttributeError):
        d.M1 = 4
    with pytest.raises(ValueError):
        d.m1[0] = 1


def test_input_arrays_are_copied():
    m1 = np.array([0, 1])
    d = SparseAccumulation(m1=m1, m2=[0, 0], mu=[0, 0], M1=2, M2=1, output_size=1)
    m1[0] = 1
    assert d.m1[0] == 0


def test_equality_hash_repr_pickle():
    a = random_descriptor(seed=1)
    b = SparseAccumulation(a.m1.copy(), a.m2.copy(), a.mu.copy(), a.M1, a.M2, a.output_size)
    c = random_descriptor(seed=2)
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert a != SparseAccumulation(a.m1, a.m2, a.mu, a.M1, a.M2, a.output_size + 1)
    assert len({a, b, c}) == 2
    assert repr(a) == "SparseAccumulation(M1=5, M2=6, output_size=7, nnz=40)"
    assert pickle.loads(pickle.dumps(a)) == a


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(m1=[0, 1], m2=[0], mu=[0, 0]), ValueError, "m1, m2 and mu must have the same length, got 2, 1 and 2"),
        (dict(m1=[[0]], m2=[0], mu=[0]), ValueError, "m1 must be 1-D"),
        (dict(m1=[0.5], m2=[0], mu=[0]), TypeError, "m1 must hold integers, got dtype float64"),
        (dict(m1=[2], m2=[0], mu=[0]), ValueError, "m1 must satisfy 0 <= m1 < M1 = 2, got the value 2"),
        (dict(m1=[0], m2=[-1], mu=[0]), ValueError, "m2 must satisfy .* got the value -1"),
        (dict(m1=[0], m2=[0], mu=[3]), ValueError, "mu must satisfy 0 <= mu < output_size = 3"),
        (dict(m1=[0], m2=[0], mu=[0], M1=-1), ValueError, "M1 must be >= 0, got -1"),
        (dict(m1=[0], m2=[0], mu=[0], M2=2.0), TypeError, "M2 must be an int, got float"),
    ],
)
def test_constructor_validation(kwargs, error, match):
    full = dict(M1=2, M2=2, output_size=3)
    full.update(kwargs)
    with pytest.raises(error, match=match):
        SparseAccumulation(**full)


def test_empty_rule():
    d = SparseAccumulation([], [], [], M1=0, M2=3, output_size=4)
    assert d.nnz == 0 and d.flops(10) == 0
    perm, offsets = d.sorted_by_output()
    assert perm.shape == (0,) and (offsets == 0).all() and offsets.shape == (5,)


# -- costs ----------------------------------------------------------------------------------------------------
def test_flops_and_bytes():
    d = random_descriptor(nnz=40, M1=5, M2=6, output_size=7)
    assert d.flops(batch=100) == 3 * 40 * 100
    assert d.bytes(100, torch.float32) == 100 * (5 + 6 + 7) * 4 + 40 * (4 + 24)
    assert d.bytes(100, np.float64) == 100 * 18 * 8 + 40 * (8 + 24)


# -- permutations and backward --------------------------------------------------------------------------------
def test_permuted_and_backward_for():
    d = random_descriptor(seed=3)
    b1 = d.backward_for("X1")
    assert (b1.M1, b1.M2, b1.output_size) == (d.output_size, d.M2, d.M1)
    assert np.array_equal(b1.mu, d.m1) and np.array_equal(b1.m1, d.mu) and np.array_equal(b1.m2, d.m2)
    b2 = d.backward_for("X2")
    assert (b2.M1, b2.M2, b2.output_size) == (d.M1, d.output_size, d.M2)
    # involutions
    assert b1.backward_for("X1") == d
    assert b2.backward_for("X2") == d
    assert d.permuted(X1="X1", X2="X2", out="out") == d
    with pytest.raises(ValueError, match="permutation"):
        d.permuted(X1="X1", X2="X1", out="out")
    with pytest.raises(ValueError, match="role must be one of"):
        d.permuted(X1="X3", X2="X2", out="out")
    with pytest.raises(ValueError, match="operand must be 'X1' or 'X2'"):
        d.backward_for("C")


@pytest.mark.parametrize("executor", [reference_executor, cpu_executor], ids=["reference", "cpu"])
def test_backward_descriptors_give_the_autograd_gradients(executor):
    d = random_descriptor(seed=4)
    X1 = torch.randn(30, d.M1, dtype=torch.float64, requires_grad=True)
    X2 = torch.randn(30, d.M2, dtype=torch.float64, requires_grad=True)
    C = torch.randn(d.nnz, dtype=torch.float64, requires_grad=True)
    G = torch.randn(30, d.output_size, dtype=torch.float64)
    out = reference_executor.accumulate(d, X1, X2, C)
    grad_X1, grad_X2, grad_C = torch.autograd.grad(out, (X1, X2, C), G)
    with torch.no_grad():
        torch.testing.assert_close(executor.accumulate(d.backward_for("X1"), G, X2, C), grad_X1)
        torch.testing.assert_close(executor.accumulate(d.backward_for("X2"), X1, G, C), grad_X2)
        torch.testing.assert_close(executor.accumulate_coefficient_grad(d, G, X1, X2), grad_C)


def test_sorted_by_output():
    d = random_descriptor(nnz=100, output_size=9, seed=5)
    perm, offsets = d.sorted_by_output()
    assert sorted(perm.tolist()) == list(range(100))
    assert offsets[0] == 0 and offsets[-1] == 100 and len(offsets) == 10
    for k in range(9):
        group = perm[offsets[k]:offsets[k + 1]]
        assert (d.mu[group] == k).all()
        assert (np.diff(group) > 0).all()  # stable


# -- the real Clebsch–Gordan rule -----------------------------------------------------------------------------
@pytest.mark.parametrize("l1, l2, l_out, nnz", [(3, 4, 5, 93), (5, 5, 5, 126), (8, 8, 8, 361), (1, 1, 1, 6), (0, 0, 0, 1)])
def test_real_cg_nnz(l1, l2, l_out, nnz):
    m1, m2, mu, C = real_cg_rule(l1, l2, l_out)
    assert len(C) == len(m1) == len(m2) == len(mu) == nnz
    assert C.dtype == torch.float64 and m1.dtype == torch.int64
    keys = (mu * 100 + m1) * 100 + m2
    assert (keys[1:] > keys[:-1]).all()  # sorted by (mu, m1, m2), no duplicates


@pytest.mark.parametrize("l1, l2, l_out", [(1, 1, 0), (1, 2, 2), (2, 2, 4), (3, 4, 5)])
def test_real_cg_matches_e3nn(l1, l2, l_out):
    o3 = pytest.importorskip("e3nn.o3")
    m1, m2, mu, C = real_cg_rule(l1, l2, l_out, normalization="wigner_3j")
    dense = torch.zeros(2 * l1 + 1, 2 * l2 + 1, 2 * l_out + 1, dtype=torch.float64)
    dense[m1, m2, mu] = C
    torch.testing.assert_close(dense, o3.wigner_3j(l1, l2, l_out, dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("l1, l2, l_out", [(1, 1, 1), (2, 3, 4), (4, 4, 2)])
def test_real_cg_is_orthogonal(l1, l2, l_out):
    m1, m2, mu, C = real_cg_rule(l1, l2, l_out)
    matrix = torch.zeros((2 * l1 + 1) * (2 * l2 + 1), 2 * l_out + 1, dtype=torch.float64)
    matrix[m1 * (2 * l2 + 1) + m2, mu] = C
    torch.testing.assert_close(matrix.T @ matrix, torch.eye(2 * l_out + 1, dtype=torch.float64))


def test_from_real_cg_and_rule_errors():
    d, C = SparseAccumulation.from_real_cg(2, 3, 4)
    assert (d.M1, d.M2, d.output_size) == (5, 7, 9) and d.nnz == len(C) and C.dtype == np.float64
    assert real_cg_rule(2, 2, 2, dtype=torch.float32)[3].dtype == torch.float32
    with pytest.raises(ValueError, match="violates"):
        real_cg_rule(1, 1, 3)
    with pytest.raises(ValueError, match="normalization must be"):
        real_cg_rule(1, 1, 1, normalization="norm")
    with pytest.raises(ValueError, match="l1 must be a non-negative int"):
        real_cg_rule(-1, 1, 1)


def test_cpu_executor_checks_shapes():
    d = random_descriptor(seed=6)
    X1 = torch.randn(4, d.M1, dtype=torch.float64)
    X2 = torch.randn(4, d.M2, dtype=torch.float64)
    C = torch.randn(d.nnz, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"X1 must have shape \(N, 5\)"):
        cpu_executor.accumulate(d, X1[:, :3], X2, C)
    with pytest.raises(ValueError, match=r"X2 must have shape \(N, 6\) with N shared"):
        cpu_executor.accumulate(d, X1, X2[:3], C)
    with pytest.raises(ValueError, match=r"C must have shape \(40,\)"):
        cpu_executor.accumulate(d, X1, X2, C[:5])
    with pytest.raises(TypeError, match="one dtype"):
        cpu_executor.accumulate(d, X1, X2.float(), C)
    with pytest.raises(ValueError, match=r"G must have shape \(N, 7\)"):
        cpu_executor.accumulate_coefficient_grad(d, X1, X1, X2)
