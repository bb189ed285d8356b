"""Steerable kernel bases: the analytic constraint, completeness, sampling, e2cnn's counts and values."""

import math

import numpy as np
import pytest
import torch

from equitp import e2
from equitp.e2._basis import _sample_angular

from _e2cnn_compat import load_e2cnn

GROUPS = [
    e2.cyclic_group(1),
    e2.cyclic_group(3),
    e2.cyclic_group(4),
    e2.cyclic_group(6),
    e2.dihedral_group(1),
    e2.dihedral_group(4),
    e2.dihedral_group(5),
    e2.so2_group(3),
    e2.o2_group(3),
]


def _test_elements(group, rng):
    if not group.continuous:
        return group.elements
    angles = list(rng.uniform(0, 2 * math.pi, 4))
    if group.flips:
        return [(0, a) for a in angles] + [(1, a) for a in angles]
    return angles


def _act(group, g, theta):
    """Angle (measured from the reflection axis for groups with flips) of g applied to the point at theta."""
    j = group.flip_of(g)
    return (-1) ** j * theta + group.rotation_angle(g)


def _angular(group, ir_in, ir_out, F, theta):
    mu, gamma, s = e2.irreps_pair_solution(group, ir_in.id, ir_out.id, F)
    A = _sample_angular(mu, gamma, s, ir_out.size, ir_in.size, theta, np.zeros(len(theta), dtype=bool))
    keep = np.abs(mu) <= F
    return A[keep][:, : ir_out.size, : ir_in.size]  # (n, do, di, P)


@pytest.mark.parametrize("group", GROUPS, ids=str)
def test_solutions_satisfy_constraint_and_are_complete(group):
    """kappa(g x) = psi_out(g) kappa(x) psi_in(g)^T, and the solutions span every band-limited solution."""
    rng = np.random.default_rng(1)
    F = 5
    theta = rng.uniform(0, 2 * math.pi, 23)
    elements = _test_elements(group, rng)
    for ir_in in group.irreps:
        for ir_out in group.irreps:
            A = _angular(group, ir_in, ir_out, F, theta)
            for g in elements:
                Ag = _angular(group, ir_in, ir_out, F, _act(group, g, theta))
                expected = np.einsum("ab,nbcp,dc->nadp", ir_out(g), A, ir_in(g))
                np.testing.assert_allclose(Ag, expected, atol=1e-10)
            # independent oracle: null space of the constraint on Fourier modes |k| <= F
            do, di = ir_out.size, ir_in.size
            ks = np.arange(F + 1)

            def modes(t):  # (P, 2F+1): 1, cos k t, sin k t
                return np.concatenate([np.cos(ks[None, :] * t[:, None]), np.sin(ks[None, 1:] * t[:, None])], 1)

            n_modes = 2 * F + 1
            rows = []
            for g in elements:
                Mg = modes(_act(group, g, theta))  # (P, m)
                M0 = modes(theta)
                # unknown X (do, di, m): A(t) = X . modes(t); constraint A(g t) - psi_out A(t) psi_in^T = 0
                lhs = np.einsum("pm,ax,by->pabxym", Mg, np.eye(do), np.eye(di))
                rhs = np.einsum("pm,ax,by->pabxym", M0, ir_out(g), ir_in(g))
                rows.append((lhs - rhs).reshape(len(theta) * do * di, do * di * n_modes))
            system = np.concatenate(rows, 0)
            sv = np.linalg.svd(system, compute_uv=False)
            null_dim = int((sv < 1e-8 * max(1.0, sv.max())).sum()) + max(0, system.shape[1] - len(sv))
            assert A.shape[0] == null_dim, (ir_in.name, ir_out.name)
            if A.shape[0]:
                flat = A.reshape(A.shape[0], -1)
                assert np.linalg.matrix_rank(flat, tol=1e-8) == A.shape[0]


# weight counts of e2cnn 0.2.3's R2Conv (default rings, sigma and cut-off), measured with e2cnn
E2CNN_WEIGHTS = [
    # (space, in fields, out fields, kernel_size, number of weights)
    ("C8", [("regular", 32)], [("regular", 32)], 5, 90112),
    ("C8", [("regular", 1)], [("regular", 1)], 5, 88),
    ("C8", [("trivial", 1)], [("regular", 1)], 5, 11),
    ("C4", [("regular", 1)], [("regular", 1)], 3, 24),
    ("C8", [("regular", 1)], [("regular", 1)], 4, 40),
    ("C1", [("regular", 1)], [("regular", 1)], 5, 11),
    ("D4", [("regular", 1)], [("regular", 1)], 5, 88),
    ("D8", [("regular", 1)], [("regular", 1)], 5, 176),
    ("D1", [("regular", 1)], [("regular", 1)], 5, 22),
    ("C8", [(1, 1)], [(2, 1)], 7, 8),
    ("SO2", [(0, 1)], [(2, 1)], 7, 6),
    ("SO2", [(1, 1)], [(3, 1)], 9, 10),
    ("O2", [((1, 1), 1)], [((1, 2), 1)], 7, 4),
    ("O2", [((1, 0), 1)], [((1, 1), 1)], 5, 2),
]


def _space(name):
    if name == "SO2":
        return e2.rot2d(-1, maximum_frequency=4)
    if name == "O2":
        return e2.flip_rot2d(-1, maximum_frequency=4)
    return (e2.rot2d if name[0] == "C" else e2.flip_rot2d)(int(name[1:]))


def _rep(space, key):
    if key == "regular":
        return space.regular_repr
    if key == "trivial":
        return space.trivial_repr
    return space.irrep(*key) if isinstance(key, tuple) else space.irrep(key)


def _ftype(space, fields):
    reps = []
    for key, n in fields:
        reps += [_rep(space, key)] * n
    return e2.FieldType(space, reps)


@pytest.mark.parametrize("case", E2CNN_WEIGHTS, ids=lambda c: f"{c[0]}-k{c[3]}-{c[4]}")
def test_weight_counts_match_e2cnn(case):
    name, fin, fout, k, count = case
    s = _space(name)
    lb = e2.layer_basis(_ftype(s, fin), _ftype(s, fout), e2.basis_params(k))
    assert lb.dim == count


def test_sampled_basis_properties():
    s = e2.rot2d(8)
    p = e2.basis_params(5)
    b = e2.pair_basis(s.regular_repr, s.regular_repr, p)
    assert e2.pair_basis(s.regular_repr, s.regular_repr, e2.basis_params(5)) is b  # shared
    assert hash(p) == hash(e2.basis_params(5))
    dense = b.dense()
    assert dense.shape == (88, 8, 8, 25)
    # normalised: sum |B|^2 = dim of the output irrep
    norms = (dense ** 2).reshape(88, -1).sum(1)
    np.testing.assert_allclose(norms, b.out_dim, rtol=1e-12)
    # the padding ratio: dense numbers over stored block numbers
    assert b.nnz == int((b.out_dim * b.in_dim).sum()) * 25
    # defaults: rings 0, 1, 2; sigma 0.005 at r = 0, 0.6, and 0.4 for the last ring
    assert p.rings == (0.0, 1.0, 2.0) and p.sigma == (0.005, 0.6, 0.4) and p.maximum_frequency == 2


def test_basis_params_bad_inputs():
    with pytest.raises(ValueError, match="kernel_size"):
        e2.basis_params(0)
    with pytest.raises(TypeError, match="kernel_size"):
        e2.basis_params(3.0)
    with pytest.raises(ValueError, match="rings"):
        e2.basis_params(5, rings=[0.0, 5.0])
    with pytest.raises(ValueError, match="sigma"):
        e2.basis_params(5, rings=[0.0, 1.0], sigma=[0.5])
    with pytest.raises(ValueError, match="sigma"):
        e2.basis_params(5, sigma=-1.0)
    with pytest.raises(ValueError, match="frequencies_cutoff"):
        e2.basis_params(5, frequencies_cutoff=-1.0)
    with pytest.raises(TypeError, match="frequencies_cutoff"):
        e2.basis_params(5, frequencies_cutoff="high")
    s = e2.rot2d(4)
    with pytest.raises(ValueError, match="empty"):  # the 2x2 grid misses every ring
        e2.layer_basis(e2.FieldType(s, [s.trivial_repr]), e2.FieldType(s, [s.trivial_repr]), e2.basis_params(2))


E2CNN_CASES = [
    ("C8", "regular", "regular", 5, {}),
    ("C6", (3,), (1,), 5, {}),
    ("C8", "regular", "regular", 5, {"frequencies_cutoff": 3.0}),
    ("C8", "regular", "regular", 5, {"dilation": 2}),
    ("C8", "regular", "regular", 5, {"sigma": 0.5, "rings": [0.0, 1.5, 2.5]}),
    ("C8", "regular", "regular", 4, {}),
    ("D4", "regular", "regular", 5, {}),
    ("D6", (1, 3), (1, 2), 7, {}),
    ("D1", "regular", "regular", 5, {}),
    ("SO2", (1,), (3,), 9, {}),
    ("O2", (1, 1), (1, 2), 7, {}),
]


@pytest.mark.parametrize("case", E2CNN_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-k{c[3]}")
def test_sampled_basis_equals_e2cnn(case):
    if load_e2cnn() is None:
        pytest.skip("e2cnn not installed")
    from e2cnn import gspaces
    from e2cnn import nn as enn

    name, a, b, k, kw = case
    if name == "SO2":
        es = gspaces.Rot2dOnR2(-1, maximum_frequency=4)
    elif name == "O2":
        es = gspaces.FlipRot2dOnR2(-1, maximum_frequency=4)
    elif name == "D1":
        es = gspaces.Flip2dOnR2()
    elif name[0] == "C":
        es = gspaces.Rot2dOnR2(int(name[1:]))
    else:
        es = gspaces.FlipRot2dOnR2(int(name[1:]))
    s = _space(name)

    def erep(key):
        return es.regular_repr if key == "regular" else es.irrep(*key)

    conv = enn.R2Conv(enn.FieldType(es, [erep(a)]), enn.FieldType(es, [erep(b)]), k, **kw)
    theirs = [m.sampled_basis for _, m in conv._basisexpansion.named_modules() if hasattr(m, "sampled_basis")][0]
    params = e2.basis_params(k, kw.get("dilation", 1), kw.get("rings"), kw.get("sigma"), kw.get("frequencies_cutoff"))
    ours = e2.pair_basis(_rep(s, a), _rep(s, b), params).dense()
    assert ours.shape == tuple(theirs.shape)
    np.testing.assert_allclose(ours, theirs.double().numpy(), atol=2e-6)
    # same weights -> same filter
    lb = e2.layer_basis(e2.FieldType(s, [_rep(s, a)]), e2.FieldType(s, [_rep(s, b)]), params)
    w = conv.weights.detach().double()
    filt, _ = conv.expand_parameters()
    for expansion in ("padded", "block"):
        torch.testing.assert_close(lb.expand(w, expansion), filt.double(), atol=2e-6, rtol=1e-5)
