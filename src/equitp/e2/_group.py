"""Subgroups of O(2): C_N, D_N, SO(2) and O(2), their real irreps and representations.

Conventions (the same as e2cnn, so that field types, bases and weights line up):

* elements of C_N are integers ``k`` (rotation by ``2 pi k / N``); elements of D_N are pairs ``(j, k)`` meaning
  ``r^k f^j`` (first the reflection ``f`` if ``j = 1``, then the rotation ``r^k``); elements of SO(2) are angles
  and elements of O(2) pairs ``(j, angle)``;
* irreps of C_N and SO(2) are indexed by their frequency ``k``, irreps of D_N and O(2) by ``(j, k)``: ``j`` the
  flip frequency, ``k`` the rotation frequency; a 2-dimensional irrep maps a rotation by ``theta`` to the rotation
  matrix ``[[cos k theta, -sin k theta], [sin k theta, cos k theta]]`` and the reflection to ``diag(1, -1)``;
* every representation is ``rho(g) = Q (direct sum of irreps)(g) Q^T`` with an orthogonal change of basis ``Q``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = [
    "Group",
    "IrreducibleRepresentation",
    "Representation",
    "cyclic_group",
    "dihedral_group",
    "so2_group",
    "o2_group",
    "directsum",
]


def _rotation_matrix(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _cos_sin_of_fraction(numerator: int, denominator: int) -> tuple[float, float]:
    """cos and sin of ``2 pi numerator / denominator``, exact at multiples of a quarter turn."""
    n = numerator % denominator
    if (4 * n) % denominator == 0:
        q = (4 * n) // denominator
        return ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[q]
    angle = 2.0 * math.pi * n / denominator
    return math.cos(angle), math.sin(angle)


class Representation:
    """A real orthogonal representation ``rho(g) = Q (psi_1 + ... + psi_n)(g) Q^T`` of a :class:`Group`.

    Do not build directly: use the group's ``regular_representation``, ``quotient_representation``,
    ``irrep(...)``, ``trivial_representation`` or :func:`directsum`.

    Attributes:
        group: the group.
        name: unique name within the group (as in e2cnn: ``"regular"``, ``"irrep_1"``, ``"quotient[2]"``, ...).
        irreps: tuple of :class:`IrreducibleRepresentation`, in the order of the blocks of the direct sum.
        change_of_basis: ``Q``, float64 array ``(size, size)``, orthogonal.
        change_of_basis_inv: ``Q^T``.
        size: dimension of the representation.
        pointwise: whether ``rho(g)`` is a permutation matrix for every ``g`` (trivial, regular and quotient
            representations), so that pointwise nonlinearities commute with it.
    """

    def __init__(
        self,
        group: "Group",
        name: str,
        irreps: Sequence["IrreducibleRepresentation"],
        change_of_basis: np.ndarray,
        pointwise: bool = False,
    ):
        self.group = group
        self.name = name
        self.irreps = tuple(irreps)
        q = np.array(change_of_basis, dtype=np.float64, copy=True)
        size = sum(ir.size for ir in self.irreps)
        if q.shape != (size, size):
            raise ValueError(f"change_of_basis must have shape {(size, size)}, got {q.shape}")
        if not np.allclose(q.T @ q, np.eye(size), atol=1e-9):
            raise ValueError("change_of_basis must be an orthogonal matrix")
        q.setflags(write=False)
        self.change_of_basis = q
        qi = np.ascontiguousarray(q.T)
        qi.setflags(write=False)
        self.change_of_basis_inv = qi
        self.size = size
        self.pointwise = bool(pointwise)
        self.identity_change_of_basis = bool(np.array_equal(q, np.eye(size)))
        self._key = (group, name, tuple(ir.name for ir in self.irreps), q.tobytes())
        self._hash = hash(self._key)

    @property
    def irreducible(self) -> bool:
        return False

    def __deepcopy__(self, memo: dict) -> "Representation":
        return self  # immutable

    def is_trivial(self) -> bool:
        """Whether this is the trivial (1-dimensional, constant) representation."""
        return self.size == 1 and self.irreps[0].is_trivial()

    def __call__(self, element: Any) -> np.ndarray:
        """The matrix ``rho(element)``, float64 ``(size, size)``."""
        blocks = [ir(element) for ir in self.irreps]
        d = np.zeros((self.size, self.size))
        p = 0
        for b in blocks:
            n = b.shape[0]
            d[p:p + n, p:p + n] = b
            p += n
        if self.identity_change_of_basis:
            return d
        return self.change_of_basis @ d @ self.change_of_basis_inv

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Representation) and self._key == other._key

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"{self.group.name}|[{self.name}]:{self.size}"


class IrreducibleRepresentation(Representation):
    """A real irreducible representation of a :class:`Group`.

    Attributes:
        id: the index used by ``group.irrep(*id)``: ``(k,)`` for C_N / SO(2), ``(j, k)`` for D_N / O(2).
        frequency: rotation frequency ``k``.
        flip_frequency: ``j`` (0 for groups without reflections).
        complex_type: whether the real irrep is of complex type (a 2-dimensional irrep of C_N or SO(2)): its
            endomorphism algebra is 2-dimensional, so it appears once (not twice) in the regular representation.
    """

    def __init__(self, group: "Group", id: tuple, size: int, frequency: int, flip_frequency: int, complex_type: bool):
        self.id = tuple(id)
        self.frequency = int(frequency)
        self.flip_frequency = int(flip_frequency)
        self.complex_type = bool(complex_type)
        self.group = group
        self.size = size
        name = "irrep_" + ",".join(str(i) for i in self.id)
        self.name = name
        self.irreps = (self,)
        q = np.eye(size)
        q.setflags(write=False)
        self.change_of_basis = q
        self.change_of_basis_inv = q
        self.pointwise = self.is_trivial()
        self.identity_change_of_basis = True
        self._key = (group, name, (name,), q.tobytes())
        self._hash = hash(self._key)

    @property
    def irreducible(self) -> bool:
        return True

    @property
    def endomorphism_dim(self) -> int:
        return 2 if self.complex_type else 1

    def is_trivial(self) -> bool:
        return self.size == 1 and self.frequency == 0 and self.flip_frequency == 0

    def __call__(self, element: Any) -> np.ndarray:
        return self.group._irrep_matrix(self, element)

    def character(self, element: Any) -> float:
        return float(np.trace(self(element)))


class Group:
    """A subgroup of O(2): ``C_N`` (``flips=False``, ``N >= 1``), ``D_N`` (``flips=True``), ``SO(2)`` / ``O(2)``
    (``N = -1``, irreps up to ``maximum_frequency``).

    Groups are cached singletons: ``cyclic_group(8) is cyclic_group(8)``.
    """

    def __init__(self, N: int, flips: bool, maximum_frequency: int | None = None):
        self.N = N
        self.flips = flips
        self.continuous = N == -1
        self.maximum_frequency = maximum_frequency
        if self.continuous:
            self.name = ("O(2)" if flips else "SO(2)") + f"[{maximum_frequency}]"
        else:
            self.name = ("D%d" if flips else "C%d") % N
        self._key = (N, flips, maximum_frequency)
        self._irreps: dict[tuple, IrreducibleRepresentation] = {}
        self._representations: dict[str, Representation] = {}
        for irrep_id in self._irrep_ids():
            self._irreps[irrep_id] = self._build_irrep(irrep_id)
        for ir in self._irreps.values():
            self._representations[ir.name] = ir

    # ------------------------------------------------------------------ structure
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Group) and self._key == other._key

    def __hash__(self) -> int:
        return hash(("Group",) + self._key)

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self):
        return (_group_from_key, self._key)

    def __deepcopy__(self, memo: dict) -> "Group":
        return self

    @property
    def order(self) -> int:
        """Number of elements, ``-1`` for continuous groups."""
        if self.continuous:
            return -1
        return 2 * self.N if self.flips else self.N

    @property
    def elements(self) -> list:
        """The elements in canonical order (finite groups only)."""
        if self.continuous:
            raise ValueError(f"the group {self.name} is continuous and has no finite list of elements")
        if self.flips:
            return [(j, k) for j in range(2) for k in range(self.N)]
        return list(range(self.N))

    @property
    def identity(self):
        if self.flips:
            return (0, 0.0) if self.continuous else (0, 0)
        return 0.0 if self.continuous else 0

    def is_element(self, element: Any) -> bool:
        if self.flips:
            if not (isinstance(element, tuple) and len(element) == 2 and element[0] in (0, 1)):
                return False
            r = element[1]
        else:
            r = element
        if self.continuous:
            return isinstance(r, (int, float, np.integer, np.floating)) and not isinstance(r, bool)
        return isinstance(r, (int, np.integer)) and not isinstance(r, bool) and 0 <= int(r) < self.N

    def _check_element(self, element: Any, argument: str = "element") -> None:
        if not self.is_element(element):
            form = {
                (False, False): f"an int in [0, {self.N})",
                (True, False): f"a pair (j, k) with j in {{0, 1}} and k an int in [0, {self.N})",
                (False, True): "an angle (float)",
                (True, True): "a pair (j, angle) with j in {0, 1}",
            }[(self.flips, self.continuous)]
            raise ValueError(f"{argument} must be an element of {self.name}: {form}; got {element!r}")

    def combine(self, a: Any, b: Any) -> Any:
        """The product ``a b`` (apply ``b`` first)."""
        if self.flips:
            ja, ra = a
            jb, rb = b
            if self.continuous:
                return ((ja + jb) % 2, (ra + (-1) ** ja * rb) % (2 * math.pi))
            return ((ja + jb) % 2, (ra + (-1) ** ja * rb) % self.N)
        if self.continuous:
            return (a + b) % (2 * math.pi)
        return (a + b) % self.N

    def inverse(self, a: Any) -> Any:
        if self.flips:
            j, r = a
            if j == 1:
                return a
            return (0, (-r) % (2 * math.pi)) if self.continuous else (0, (-r) % self.N)
        return (-a) % (2 * math.pi) if self.continuous else (-a) % self.N

    def rotation_angle(self, element: Any) -> float:
        """Angle of the rotation part of ``element`` in radians."""
        r = element[1] if self.flips else element
        return float(r) if self.continuous else 2.0 * math.pi * int(r) / self.N

    def quarter_turns(self, element: Any) -> int | None:
        """Number of quarter turns of the rotation part if it is a multiple of ``pi/2``, else ``None``."""
        r = element[1] if self.flips else element
        if self.continuous:
            q = float(r) / (math.pi / 2)
            return int(round(q)) % 4 if abs(q - round(q)) < 1e-12 else None
        r = int(r)
        return (4 * r // self.N) % 4 if (4 * r) % self.N == 0 else None

    @staticmethod
    def flip_of(element: Any) -> int:
        return int(element[0]) if isinstance(element, tuple) else 0

    def testing_elements(self) -> list:
        """Elements used by equivariance checks: all elements of finite groups, 52 per coset for SO(2)/O(2)."""
        if not self.continuous:
            return self.elements
        angles = [2 * math.pi * i / 52 for i in range(52)]
        if self.flips:
            return [(j, a) for j in range(2) for a in angles]
        return angles

    # ------------------------------------------------------------------ irreps
    def _irrep_ids(self) -> list[tuple]:
        N, L = self.N, self.maximum_frequency
        if not self.flips:
            top = L if self.continuous else N // 2
            return [(k,) for k in range(top + 1)]
        if self.continuous:
            return [(0, 0)] + [(1, k) for k in range(L + 1)]
        ids = [(0, 0)] + [(1, k) for k in range(N // 2 + 1)]
        if N % 2 == 0:
            ids.append((0, N // 2))
        return ids

    def _build_irrep(self, irrep_id: tuple) -> IrreducibleRepresentation:
        if self.flips:
            j, k = irrep_id
        else:
            j, k = 0, irrep_id[0]
        one_dim = k == 0 or (not self.continuous and self.N % 2 == 0 and 2 * k == self.N)
        size = 1 if one_dim else 2
        complex_type = size == 2 and not self.flips
        return IrreducibleRepresentation(self, irrep_id, size, k, j, complex_type)

    @property
    def irreps(self) -> list[IrreducibleRepresentation]:
        """All irreps (for SO(2)/O(2) up to ``maximum_frequency``), in canonical order."""
        return list(self._irreps.values())

    def irrep(self, *id: int) -> IrreducibleRepresentation:
        """The irrep of frequency ``k`` (C_N, SO(2)) or of flip/rotation frequencies ``(j, k)`` (D_N, O(2))."""
        if len(id) == 1 and isinstance(id[0], tuple):
            id = id[0]
        key = tuple(int(i) if isinstance(i, (int, np.integer)) and not isinstance(i, bool) else i for i in id)
        if key not in self._irreps:
            valid = ", ".join(str(i if len(i) > 1 else i[0]) for i in self._irreps)
            raise ValueError(f"irrep id {id!r} is not an irrep of {self.name}; valid ids: {valid}")
        return self._irreps[key]

    @property
    def trivial_representation(self) -> IrreducibleRepresentation:
        return self.irreps[0]

    def _irrep_matrix(self, irrep: IrreducibleRepresentation, element: Any) -> np.ndarray:
        self._check_element(element)
        j = self.flip_of(element) if self.flips else 0
        r = element[1] if self.flips else element
        k = irrep.frequency
        if self.continuous:
            c, s = math.cos(k * float(r)), math.sin(k * float(r))
        else:
            c, s = _cos_sin_of_fraction(k * int(r), self.N)
        if irrep.size == 1:
            value = 1.0 if k == 0 else c
            if irrep.flip_frequency == 1 and j == 1:
                value = -value
            return np.array([[value]])
        m = np.array([[c, -s], [s, c]])
        if j == 1:
            m[:, 1] *= -1.0
        return m

    # ------------------------------------------------------------------ representations
    def _register(self, rep: Representation) -> Representation:
        existing = self._representations.get(rep.name)
        if existing is not None:
            if existing != rep:
                raise ValueError(f"a different representation named {rep.name!r} already exists for {self.name}")
            return existing
        self._representations[rep.name] = rep
        return rep

    @property
    def representations(self) -> dict[str, Representation]:
        return dict(self._representations)

    @property
    def regular_representation(self) -> Representation:
        """The regular representation (finite groups only), acting by ``rho(h) e_g = e_{hg}``."""
        if self.continuous:
            raise ValueError(f"the group {self.name} is continuous: it has no (finite) regular representation")
        if "regular" not in self._representations:
            self._register(self._permutation_representation("regular", None))
        return self._representations["regular"]

    def quotient_representation(self, subgroup_id: Any) -> Representation:
        """The permutation representation on the cosets ``G/H`` (finite groups only).

        Args:
            subgroup_id: for C_N the order ``M`` of the subgroup ``C_M`` (``M`` divides ``N``); for D_N a pair
                ``(axis, M)`` as in e2cnn: ``(None, M)`` is the rotation subgroup ``C_M``, ``(a, M)`` the
                dihedral subgroup generated by ``r^(N/M)`` and ``r^a f`` (``0 <= a < N/M``).
        """
        if self.continuous:
            raise ValueError(f"the group {self.name} is continuous: it has no finite quotient representations")
        members = self._subgroup_elements(subgroup_id)
        name = f"quotient[{subgroup_id}]"
        if name not in self._representations:
            self._register(self._permutation_representation(name, members))
        return self._representations[name]

    def _subgroup_elements(self, subgroup_id: Any) -> list:
        N = self.N
        if not self.flips:
            if not (isinstance(subgroup_id, (int, np.integer)) and not isinstance(subgroup_id, bool)
                    and subgroup_id >= 1 and N % int(subgroup_id) == 0):
                raise ValueError(f"subgroup_id for {self.name} must be an int M >= 1 dividing {N}; got {subgroup_id!r}")
            ratio = N // int(subgroup_id)
            return [k * ratio for k in range(int(subgroup_id))]
        if not (isinstance(subgroup_id, tuple) and len(subgroup_id) == 2):
            raise ValueError(f"subgroup_id for {self.name} must be a pair (axis, M); got {subgroup_id!r}")
        axis, M = subgroup_id
        if not (isinstance(M, (int, np.integer)) and M >= 1 and N % int(M) == 0):
            raise ValueError(f"subgroup_id[1] must be an int M >= 1 dividing {N}; got {M!r}")
        ratio = N // int(M)
        rotations = [(0, k * ratio) for k in range(int(M))]
        if axis is None:
            return rotations
        if not (isinstance(axis, (int, np.integer)) and 0 <= axis < ratio):
            raise ValueError(f"subgroup_id[0] must be None or an int in [0, {ratio}); got {axis!r}")
        return rotations + [(1, (k * ratio + int(axis)) % N) for k in range(int(M))]

    def _permutation_representation(self, name: str, subgroup: list | None) -> Representation:
        """Decompose the permutation representation on ``G/H`` into irreps (Peter-Weyl style change of basis)."""
        elements = self.elements
        if subgroup is None:
            subgroup = [self.identity]
        # cosets g H, each labelled by its first element in canonical order
        coset_of: dict = {}
        representatives: list = []
        for g in elements:
            if g in coset_of:
                continue
            representatives.append(g)
            for h in subgroup:
                coset_of[self.combine(g, h)] = len(representatives) - 1
        n = len(representatives)
        irreps: list[IrreducibleRepresentation] = []
        columns: list[np.ndarray] = []
        for ir in self.irreps:
            d = ir.size
            # H-invariant vectors of the irrep
            proj = sum(ir(h) for h in subgroup) / len(subgroup)
            if np.allclose(proj, np.eye(d)):
                fixed = np.eye(d)
            else:
                w, v = np.linalg.eigh((proj + proj.T) / 2)
                fixed = v[:, w > 0.5]
            mult = fixed.shape[1] // ir.endomorphism_dim
            if mult == 0:
                continue
            mats = np.stack([ir(g) for g in representatives])  # (n, d, d)
            blocks = []
            for c in range(mult):
                v = fixed[:, c]
                # Q[x, :] = sqrt(d / n) (psi(g_x) v)^T: an intertwiner psi -> rho
                blocks.append(math.sqrt(d / n) * np.einsum("xij,j->xi", mats, v))
            block = np.concatenate(blocks, axis=1)  # (n, mult * d)
            gram = block.T @ block
            if not np.allclose(gram, np.eye(gram.shape[0]), atol=1e-10):
                w, v = np.linalg.eigh(gram)
                block = block @ (v @ np.diag(w ** -0.5) @ v.T)
            irreps += [ir] * mult
            columns.append(block)
        q = np.concatenate(columns, axis=1)
        if q.shape != (n, n):
            raise RuntimeError(f"decomposition of {name} failed: change of basis of shape {q.shape}, expected {(n, n)}")
        return Representation(self, name, irreps, q, pointwise=True)


def _group_from_key(N: int, flips: bool, maximum_frequency: int | None) -> Group:
    return _get_group(N, flips, maximum_frequency)


_GROUPS: dict[tuple, Group] = {}


def _get_group(N: int, flips: bool, maximum_frequency: int | None) -> Group:
    key = (N, flips, maximum_frequency)
    if key not in _GROUPS:
        _GROUPS[key] = Group(N, flips, maximum_frequency)
    return _GROUPS[key]


def _check_order(N: Any) -> int:
    if not isinstance(N, (int, np.integer)) or isinstance(N, bool):
        raise TypeError(f"N must be an int (>= 1, or -1 for continuous rotations); got {type(N).__name__}")
    if N < 1:
        raise ValueError(f"N must be >= 1 (or -1 for continuous rotations); got {N}")
    return int(N)


def _check_maximum_frequency(maximum_frequency: Any) -> int:
    if not isinstance(maximum_frequency, (int, np.integer)) or isinstance(maximum_frequency, bool):
        raise TypeError(f"maximum_frequency must be a non-negative int; got {type(maximum_frequency).__name__}")
    if maximum_frequency < 0:
        raise ValueError(f"maximum_frequency must be a non-negative int; got {maximum_frequency}")
    return int(maximum_frequency)


def cyclic_group(N: int) -> Group:
    """The cyclic group C_N of ``N >= 1`` rotations by multiples of ``2 pi / N``."""
    return _get_group(_check_order(N), False, None)


def dihedral_group(N: int) -> Group:
    """The dihedral group D_N: ``N >= 1`` rotations and ``N`` reflections."""
    return _get_group(_check_order(N), True, None)


def so2_group(maximum_frequency: int = 10) -> Group:
    """SO(2) with irreps of frequency ``0 .. maximum_frequency``."""
    return _get_group(-1, False, _check_maximum_frequency(maximum_frequency))


def o2_group(maximum_frequency: int = 10) -> Group:
    """O(2) with irreps ``(0, 0)`` and ``(1, k)``, ``k = 0 .. maximum_frequency``."""
    return _get_group(-1, True, _check_maximum_frequency(maximum_frequency))


def directsum(representations: Iterable[Representation], name: str | None = None) -> Representation:
    """Direct sum of representations of one group (block-diagonal change of basis).

    Args:
        representations: the summands, in order.
        name: name of the result; defaults to ``"[a]_[b]_..."`` of the summands' names, as in e2cnn.

    Raises:
        ValueError: on an empty list or summands of different groups.
    """
    reps = list(representations)
    if not reps:
        raise ValueError("representations must not be empty")
    for i, r in enumerate(reps):
        if not isinstance(r, Representation):
            raise TypeError(f"representations[{i}] must be a Representation; got {type(r).__name__}")
        if r.group != reps[0].group:
            raise ValueError(f"representations[{i}] belongs to {r.group.name}, expected {reps[0].group.name}")
    if name is None:
        name = "_".join(f"[{r.name}]" for r in reps)
    size = sum(r.size for r in reps)
    q = np.zeros((size, size))
    p = 0
    irreps: list[IrreducibleRepresentation] = []
    for r in reps:
        q[p:p + r.size, p:p + r.size] = r.change_of_basis
        p += r.size
        irreps += list(r.irreps)
    pointwise = all(r.pointwise for r in reps)
    return reps[0].group._register(Representation(reps[0].group, name, irreps, q, pointwise=pointwise))
