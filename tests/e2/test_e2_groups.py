"""Groups, irreps and representations of equitp.e2: homomorphism, orthogonality, regular/quotient structure."""

import itertools
import math

import numpy as np
import pytest

from equitp import e2

from _e2cnn_compat import load_e2cnn

GROUPS = [
    e2.cyclic_group(1),
    e2.cyclic_group(2),
    e2.cyclic_group(5),
    e2.cyclic_group(8),
    e2.dihedral_group(1),
    e2.dihedral_group(3),
    e2.dihedral_group(4),
    e2.so2_group(3),
    e2.o2_group(3),
]


def _elements(group, n=7, seed=0):
    if not group.continuous:
        return group.elements
    rng = np.random.default_rng(seed)
    angles = list(rng.uniform(0, 2 * math.pi, n))
    if group.flips:
        return [(int(j), a) for j, a in zip(rng.integers(0, 2, n), angles)]
    return angles


def _representations(group):
    reps = list(group.irreps)
    if not group.continuous:
        reps.append(group.regular_representation)
    reps.append(e2.directsum(group.irreps[:3]))
    return reps


@pytest.mark.parametrize("group", GROUPS, ids=str)
def test_homomorphism_and_orthogonality(group):
    els = _elements(group)
    for rep in _representations(group):
        for a, b in itertools.product(els, els):
            np.testing.assert_allclose(rep(a) @ rep(b), rep(group.combine(a, b)), atol=1e-12)
        for a in els:
            m = rep(a)
            np.testing.assert_allclose(m @ m.T, np.eye(rep.size), atol=1e-12)
            np.testing.assert_allclose(rep(group.inverse(a)), m.T, atol=1e-12)
        np.testing.assert_allclose(rep(group.identity), np.eye(rep.size), atol=1e-12)


@pytest.mark.parametrize("group", [g for g in GROUPS if not g.continuous], ids=str)
def test_regular_representation_permutes_elements(group):
    reg = group.regular_representation
    els = group.elements
    assert reg.size == group.order == len(els)
    assert reg.pointwise
    index = {g: i for i, g in enumerate(els)}
    for h in els:
        expected = np.zeros((reg.size, reg.size))
        for g in els:
            expected[index[group.combine(h, g)], index[g]] = 1.0
        np.testing.assert_allclose(reg(h), expected, atol=1e-12)
    # every irrep appears dim / dim(End) times
    for ir in group.irreps:
        count = sum(1 for x in reg.irreps if x is ir)
        assert count == ir.size // ir.endomorphism_dim


@pytest.mark.parametrize(
    "group, subgroup_id, size",
    [
        (e2.cyclic_group(8), 2, 4),
        (e2.cyclic_group(8), 4, 2),
        (e2.cyclic_group(6), 3, 2),
        (e2.dihedral_group(4), (None, 2), 4),
        (e2.dihedral_group(4), (0, 2), 2),
        (e2.dihedral_group(6), (1, 3), 2),
        (e2.dihedral_group(4), (0, 1), 4),
    ],
)
def test_quotient_representation(group, subgroup_id, size):
    rep = group.quotient_representation(subgroup_id)
    assert rep.size == size and rep.pointwise
    for a in group.elements:
        m = rep(a)
        # a permutation matrix
        np.testing.assert_allclose(np.sort(m, axis=1)[:, -1], 1.0, atol=1e-12)
        np.testing.assert_allclose(np.abs(m).sum(1), 1.0, atol=1e-12)
        for b in group.elements[:4]:
            np.testing.assert_allclose(rep(a) @ rep(b), rep(group.combine(a, b)), atol=1e-12)
    assert group.quotient_representation(subgroup_id) is rep


def test_spaces_and_irrep_indexing():
    s = e2.rot2d(8)
    assert s.fibergroup is e2.cyclic_group(8)
    assert s.irrep(3).size == 2 and s.irrep(4).size == 1 and s.irrep(0).is_trivial()
    d = e2.flip_rot2d(6)
    assert d.irrep(1, 2).size == 2 and d.irrep(0, 3).size == 1 and d.irrep(1, 0).size == 1
    so2 = e2.rot2d(-1, maximum_frequency=4)
    assert so2.fibergroup.continuous and len(so2.irreps) == 5
    o2 = e2.flip_rot2d(-1)
    assert o2.fibergroup.maximum_frequency == 10
    assert e2.rot2d(1).regular_repr.size == 1
    assert e2.flip_rot2d(1).regular_repr.size == 2


def test_bad_inputs():
    with pytest.raises(ValueError, match="N"):
        e2.rot2d(0)
    with pytest.raises(TypeError, match="N"):
        e2.rot2d(2.5)
    with pytest.raises(ValueError, match="maximum_frequency"):
        e2.rot2d(4, maximum_frequency=3)
    with pytest.raises(ValueError, match="maximum_frequency"):
        e2.so2_group(-1)
    with pytest.raises(ValueError, match="irrep id"):
        e2.rot2d(8).irrep(5)
    with pytest.raises(ValueError, match="irrep id"):
        e2.flip_rot2d(8).irrep(0, 1)
    with pytest.raises(ValueError, match="continuous"):
        e2.rot2d(-1).regular_repr
    with pytest.raises(ValueError, match="subgroup_id"):
        e2.rot2d(8).quotient_repr(3)
    with pytest.raises(ValueError, match=r"representations\[1\]"):
        e2.directsum([e2.rot2d(4).irrep(1), e2.rot2d(8).irrep(1)])
    with pytest.raises(ValueError, match="element"):
        e2.rot2d(4).regular_repr(5)
    s4, s8 = e2.rot2d(4), e2.rot2d(8)
    with pytest.raises(ValueError, match=r"representations\[0\]"):
        e2.FieldType(s4, [s8.regular_repr])
    with pytest.raises(ValueError, match="empty"):
        e2.FieldType(s4, [])


def test_regular_representation_matches_e2cnn():
    e2cnn = load_e2cnn()
    if e2cnn is None:
        pytest.skip("e2cnn not installed")
    from e2cnn import gspaces

    for ours, theirs in [
        (e2.rot2d(8), gspaces.Rot2dOnR2(8)),
        (e2.rot2d(5), gspaces.Rot2dOnR2(5)),
        (e2.flip_rot2d(4), gspaces.FlipRot2dOnR2(4)),
    ]:
        a, b = ours.regular_repr, theirs.regular_repr
        assert [ir.name for ir in a.irreps] == list(b.irreps)
        np.testing.assert_allclose(a.change_of_basis, b.change_of_basis, atol=1e-12)
        for g in ours.fibergroup.elements:
            np.testing.assert_allclose(a(g), b(g), atol=1e-12)
