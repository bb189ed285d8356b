"""Spaces of the plane ``R^2`` acted on by a subgroup of O(2), field types and a tensor wrapper.

Image convention: a tensor ``(batch, channels, H, W)``; pixel ``(row, col)`` is the point
``(x, y) = (col - c_x, c_y - row)`` (``y`` up), as in e2cnn. A group element ``g = r^k f^j`` acts on the plane by
first the reflection ``x -> -x`` (axis ``pi/2``) when ``j = 1``, then the counter-clockwise rotation; it transforms
a field by ``[g f](p) = rho(g) f(g^-1 p)``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ._group import (
    Group,
    IrreducibleRepresentation,
    Representation,
    cyclic_group,
    dihedral_group,
    directsum,
    o2_group,
    so2_group,
)

__all__ = ["GSpace2D", "rot2d", "flip_rot2d", "FieldType", "GeometricTensor"]


class GSpace2D:
    """The plane with the action of ``C_N``, ``D_N``, ``SO(2)`` or ``O(2)``; build with :func:`rot2d` or
    :func:`flip_rot2d`.

    Attributes:
        fibergroup: the :class:`Group`.
        flips: whether reflections are included (reflection axis: the vertical axis, angle ``pi/2``).
        N: number of rotations (``-1`` for continuous rotations).
        axis: angle of the reflection axis (``pi/2``).
    """

    axis = math.pi / 2

    def __init__(self, group: Group):
        self.fibergroup = group
        self.flips = group.flips
        self.N = group.N
        if group.continuous:
            base = "Flip_Continuous-Rotations" if group.flips else "Continuous-Rotations"
        else:
            base = f"Flip_{group.N}-Rotations" if group.flips else f"{group.N}-Rotations"
        self.name = base

    def __deepcopy__(self, memo: dict) -> "GSpace2D":
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GSpace2D) and self.fibergroup == other.fibergroup

    def __hash__(self) -> int:
        return hash(("GSpace2D", self.fibergroup))

    def __repr__(self) -> str:
        return f"GSpace2D({self.fibergroup.name})"

    @property
    def trivial_repr(self) -> IrreducibleRepresentation:
        return self.fibergroup.trivial_representation

    @property
    def regular_repr(self) -> Representation:
        """Regular representation (finite groups only; raises ``ValueError`` for SO(2)/O(2))."""
        return self.fibergroup.regular_representation

    @property
    def irreps(self) -> list[IrreducibleRepresentation]:
        return self.fibergroup.irreps

    def irrep(self, *id: int) -> IrreducibleRepresentation:
        """``irrep(k)`` for C_N / SO(2), ``irrep(j, k)`` for D_N / O(2)."""
        return self.fibergroup.irrep(*id)

    def quotient_repr(self, subgroup_id: Any) -> Representation:
        """Quotient representation ``G/H``; see :meth:`Group.quotient_representation`."""
        return self.fibergroup.quotient_representation(subgroup_id)

    def type(self, *representations: Representation) -> "FieldType":
        return FieldType(self, list(representations))

    @property
    def testing_elements(self) -> list:
        return self.fibergroup.testing_elements()

    def basespace_action(self, x: torch.Tensor, element: Any) -> torch.Tensor:
        """Move the pixels of ``x`` (``(..., H, W)``) by ``element``: ``out(p) = x(g^-1 p)``.

        Exact (a permutation of pixels) when the rotation is a multiple of ``pi/2`` and ``H == W``; otherwise the
        rotation is interpolated bilinearly about the image centre (zero outside).
        """
        self.fibergroup._check_element(element)
        if Group.flip_of(element):
            x = x.flip(-1)
        q = self.fibergroup.quarter_turns(element)
        if q is not None:
            if q == 0:
                return x.clone()
            if x.shape[-1] != x.shape[-2] and q % 2 == 1:
                raise ValueError(f"a quarter turn needs a square image; got shape {tuple(x.shape[-2:])}")
            return torch.rot90(x, q, dims=(-2, -1))
        return _rotate_bilinear(x, self.fibergroup.rotation_angle(element))


def _rotate_bilinear(x: torch.Tensor, angle: float) -> torch.Tensor:
    """Counter-clockwise rotation of the image plane (``y`` up) by ``angle`` about the centre, bilinear."""
    shape = x.shape
    h, w = shape[-2], shape[-1]
    flat = x.reshape(-1, 1, h, w) if x.dim() != 4 else x
    n, c = flat.shape[0], flat.shape[1]
    rows = torch.arange(h, dtype=x.dtype, device=x.device)
    cols = torch.arange(w, dtype=x.dtype, device=x.device)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy = cy - rows[:, None]
    xx = cols[None, :] - cx
    ca, sa = math.cos(angle), math.sin(angle)
    # source point g^-1 p = R(-angle) p
    xs = ca * xx + sa * yy
    ys = -sa * xx + ca * yy
    src_col = xs + cx
    src_row = cy - ys
    grid = torch.stack(
        [2 * src_col / max(w - 1, 1) - 1, 2 * src_row / max(h - 1, 1) - 1], dim=-1
    ).expand(n, h, w, 2)
    out = torch.nn.functional.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.reshape(shape)


def rot2d(N: int, maximum_frequency: int | None = None) -> GSpace2D:
    """The plane acted on by ``C_N`` (``N >= 1``) or, with ``N = -1``, by ``SO(2)``.

    Args:
        N: number of discrete rotations, or ``-1`` for continuous rotations.
        maximum_frequency: highest irrep frequency of SO(2) (``N = -1`` only; default 10).

    Raises:
        ValueError: on ``N`` not ``>= 1`` or ``-1``, or ``maximum_frequency`` given for a finite group.
    """
    return _make_space(N, maximum_frequency, flips=False)


def flip_rot2d(N: int, maximum_frequency: int | None = None) -> GSpace2D:
    """The plane acted on by ``D_N`` (``N >= 1``) or, with ``N = -1``, by ``O(2)``; reflection axis vertical.

    Args:
        N: number of discrete rotations, or ``-1`` for continuous rotations.
        maximum_frequency: highest irrep frequency of O(2) (``N = -1`` only; default 10).
    """
    return _make_space(N, maximum_frequency, flips=True)


def _make_space(N: Any, maximum_frequency: Any, flips: bool) -> GSpace2D:
    if not isinstance(N, (int, np.integer)) or isinstance(N, bool):
        raise TypeError(f"N must be an int (>= 1, or -1 for continuous rotations); got {type(N).__name__}")
    if N == -1:
        mf = 10 if maximum_frequency is None else maximum_frequency
        group = o2_group(mf) if flips else so2_group(mf)
    else:
        if N < 1:
            raise ValueError(f"N must be >= 1 (or -1 for continuous rotations); got {N}")
        if maximum_frequency is not None:
            raise ValueError(f"maximum_frequency is only for N = -1 (continuous rotations); got N = {N}")
        group = dihedral_group(int(N)) if flips else cyclic_group(int(N))
    return GSpace2D(group)


class FieldType:
    """A feature space: a list of fields, each transforming by one :class:`Representation` of the space's group.

    Channels are laid out field after field: field ``i`` occupies channels ``[start_i, start_i + size_i)``.

    Args:
        gspace: the :class:`GSpace2D`.
        representations: one representation per field.

    Raises:
        ValueError: on an empty list or a representation of another group.
    """

    def __init__(self, gspace: GSpace2D, representations: Sequence[Representation]):
        if not isinstance(gspace, GSpace2D):
            raise TypeError(f"gspace must be a GSpace2D; got {type(gspace).__name__}")
        reps = list(representations)
        if not reps:
            raise ValueError("representations must not be empty")
        for i, r in enumerate(reps):
            if not isinstance(r, Representation):
                raise TypeError(f"representations[{i}] must be a Representation; got {type(r).__name__}")
            if r.group != gspace.fibergroup:
                raise ValueError(
                    f"representations[{i}] ({r.name}) belongs to the group {r.group.name}, but the space acts "
                    f"with {gspace.fibergroup.name}"
                )
        self.gspace = gspace
        self.representations = tuple(reps)
        self.size = sum(r.size for r in reps)
        starts = np.cumsum([0] + [r.size for r in reps])
        self.field_starts = tuple(int(s) for s in starts[:-1])
        self._hash = hash((gspace, self.representations))

    @property
    def fibergroup(self) -> Group:
        return self.gspace.fibergroup

    def __deepcopy__(self, memo: dict) -> "FieldType":
        return self

    def __len__(self) -> int:
        return len(self.representations)

    def __iter__(self):
        return iter(self.representations)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, FieldType)
            and self.gspace == other.gspace
            and self.representations == other.representations
        )

    def __hash__(self) -> int:
        return self._hash

    def __add__(self, other: "FieldType") -> "FieldType":
        if not isinstance(other, FieldType) or other.gspace != self.gspace:
            raise ValueError("can only concatenate field types of the same space")
        return FieldType(self.gspace, self.representations + other.representations)

    def __repr__(self) -> str:
        names = [r.name for r in self.representations]
        short = []
        for n in names:
            if short and short[-1][0] == n:
                short[-1][1] += 1
            else:
                short.append([n, 1])
        body = ", ".join(f"{c}x{n}" if c > 1 else n for n, c in short)
        return f"[{self.gspace.fibergroup.name}: {{{body}}} ({self.size})]"

    @property
    def representation(self) -> Representation:
        """The whole feature space as one representation (direct sum of the fields')."""
        return directsum(self.representations)

    def fiber_matrix(self, element: Any) -> np.ndarray:
        """Block-diagonal ``(size, size)`` matrix acting on the channels for ``element``."""
        self.fibergroup._check_element(element)
        m = np.zeros((self.size, self.size))
        cache: dict = {}
        for s, r in zip(self.field_starts, self.representations):
            if r not in cache:
                cache[r] = r(element)
            m[s:s + r.size, s:s + r.size] = cache[r]
        return m

    def transform(self, tensor: torch.Tensor, element: Any) -> torch.Tensor:
        """``[g f](p) = rho(g) f(g^-1 p)`` on a ``(batch, size, H, W)`` tensor."""
        if tensor.dim() != 4 or tensor.shape[1] != self.size:
            raise ValueError(f"tensor must have shape (batch, {self.size}, H, W); got {tuple(tensor.shape)}")
        rho = torch.as_tensor(self.fiber_matrix(element), dtype=tensor.dtype, device=tensor.device)
        moved = self.gspace.basespace_action(tensor, element)
        return torch.einsum("ij,bjhw->bihw", rho, moved)

    def index_select(self, indices: Iterable[int]) -> "FieldType":
        return FieldType(self.gspace, [self.representations[i] for i in indices])


class GeometricTensor:
    """A ``(batch, channels, H, W)`` tensor together with its :class:`FieldType`.

    Args:
        tensor: the data; ``tensor.shape[1]`` must equal ``type.size``.
        type: the field type.
    """

    def __init__(self, tensor: torch.Tensor, type: FieldType):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"tensor must be a torch.Tensor; got {tensor.__class__.__name__}")
        if not isinstance(type, FieldType):
            raise TypeError("type must be a FieldType")
        if tensor.dim() != 4 or tensor.shape[1] != type.size:
            raise ValueError(f"tensor must have shape (batch, {type.size}, H, W); got {tuple(tensor.shape)}")
        self.tensor = tensor
        self.type = type

    @property
    def shape(self) -> torch.Size:
        return self.tensor.shape

    def transform(self, element: Any) -> "GeometricTensor":
        return GeometricTensor(self.type.transform(self.tensor, element), self.type)

    def __repr__(self) -> str:
        return f"GeometricTensor({tuple(self.tensor.shape)}, {self.type})"
