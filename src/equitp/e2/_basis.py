"""Steerable kernel bases: the analytic solution of the kernel constraint per pair of irreps, sampled on a grid.

For irreps ``psi_in`` (frequency ``n``) and ``psi_out`` (frequency ``m``) the equivariant kernels
``kappa(g x) = psi_out(g) kappa(x) psi_in(g)^-1`` are spanned by ``b(r) A(theta)`` where ``b`` is any radial
profile (here Gaussian rings ``exp(-(r - r_i)^2 / (2 sigma_i^2))``) and the angular parts ``A`` are

* ``1 x 1``: ``cos(mu theta + gamma)``;
* ``1 x 2`` (in 2-dim, out 1-dim): ``[cos, sin](mu theta + gamma)``; ``2 x 1`` its transpose;
* ``2 x 2``: ``psi(mu theta + gamma) chi(s)`` with ``psi`` the rotation matrix and ``chi(1) = diag(1, -1)``;

with the frequencies ``mu`` allowed by the group: for ``C_N`` ``mu = m - (-1)^s n + t N`` (2x2),
``mu = n + m + t N`` (1x2 / 2x1) and ``mu = m - n + t N >= 0`` (1x1), ``gamma in {0, pi/2}``, ``s in {0, 1}``;
``D_N`` fixes ``gamma`` by the flip frequencies (``gamma = 0`` for 2x2, ``j_out pi/2`` for 1x2, ``j_in pi/2`` for 2x1,
``((j_in + j_out) mod 2) pi/2`` for 1x1) and measures angles from the reflection axis; ``SO(2)`` and ``O(2)``
have no aliasing (``t = 0``). Elements that vanish identically are dropped (``sin`` with ``mu = 0``; non-zero
frequencies are zero at the origin).

A basis for two arbitrary representations ``rho = Q (+) psi_i Q^T`` is ``Q_out (+) kappa_ij Q_in^T``. Elements are
ordered as in e2cnn (ring, input irrep position, output irrep position, then the irreps-pair solution), band-limited
per ring by the frequency cut-off, sampled on the ``k x k`` grid, normalised to ``sum |B|^2 = dim psi_out`` and
dropped when their sampled norm vanishes (``< 1e-6``), as e2cnn's R2Conv does.
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache
from typing import Any, Callable, Sequence

import numpy as np

from ._group import Group, Representation

__all__ = ["BasisParams", "basis_params", "PairBasis", "pair_basis", "irreps_pair_solution", "grid_coordinates"]


# ---------------------------------------------------------------------------------------------------- parameters
class _DefaultCutoff:
    """e2cnn's default band limit: 0 at r = 0, else ``min(2r, 2 if r is the outer radius else 2r - (r+1) % 2)``."""

    def __init__(self, max_radius: float):
        self.max_radius = float(max_radius)

    def __call__(self, r: float) -> float:
        if r == 0.0:
            return 0
        return min(2 * r, 2 if r == self.max_radius else 2 * r - (r + 1) % 2)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _DefaultCutoff) and other.max_radius == self.max_radius

    def __hash__(self) -> int:
        return hash(("default-cutoff", self.max_radius))

    def __repr__(self) -> str:
        return f"default(max_radius={self.max_radius:g})"


class _LinearCutoff:
    """Maximum frequency ``factor * r``."""

    def __init__(self, factor: float):
        self.factor = float(factor)

    def __call__(self, r: float) -> float:
        return self.factor * r

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _LinearCutoff) and other.factor == self.factor

    def __hash__(self) -> int:
        return hash(("linear-cutoff", self.factor))

    def __repr__(self) -> str:
        return f"{self.factor:g}*r"


def grid_coordinates(kernel_size: int, dilation: int = 1) -> np.ndarray:
    """Coordinates ``(2, k*k)`` of the filter taps: ``x = dilation*col - c``, ``y = c - dilation*row``, row-major."""
    actual = dilation * (kernel_size - 1) + 1
    origin = actual / 2 - 0.5
    idx = np.arange(kernel_size) * dilation
    yy, xx = np.meshgrid(idx, idx, indexing="ij")
    return np.stack([xx.reshape(-1) - origin, origin - yy.reshape(-1)])


class BasisParams:
    """Hashable sampling parameters of a kernel basis (grid, rings, widths, band limit).

    Build with :func:`basis_params`, which applies e2cnn's R2Conv defaults.
    """

    def __init__(self, kernel_size: int, dilation: int, rings: tuple, sigma: tuple, cutoff: Callable[[float], float]):
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.rings = rings
        self.sigma = sigma
        self.cutoff = cutoff
        self.maximum_frequency = int(max(cutoff(r) for r in rings))
        self._key = (kernel_size, dilation, rings, sigma, cutoff)
        self._hash = hash(self._key)

    @property
    def grid(self) -> np.ndarray:
        return grid_coordinates(self.kernel_size, self.dilation)

    @property
    def num_points(self) -> int:
        return self.kernel_size * self.kernel_size

    def __deepcopy__(self, memo: dict) -> "BasisParams":
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BasisParams) and self._key == other._key

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return (
            f"BasisParams(kernel_size={self.kernel_size}, dilation={self.dilation}, rings={list(self.rings)}, "
            f"sigma={list(self.sigma)}, cutoff={self.cutoff!r})"
        )


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def basis_params(
    kernel_size: int,
    dilation: int = 1,
    rings: Sequence[float] | None = None,
    sigma: float | Sequence[float] | None = None,
    frequencies_cutoff: float | Callable[[float], float] | None = None,
) -> BasisParams:
    """Sampling parameters with e2cnn's R2Conv defaults.

    Args:
        kernel_size: filter size ``k >= 1`` (even sizes allowed).
        dilation: spacing of the taps (``>= 1``).
        rings: ring radii; default ``linspace(0, (k-1)//2, ceil(k/2)) * dilation``.
        sigma: ring widths (one float for all, or one per ring); default 0.6, 0.4 for the last ring, 0.005 at r=0.
        frequencies_cutoff: ``None`` for e2cnn's default policy, a float ``f`` for ``f * r``, or a callable
            ``r -> maximum frequency``.

    Raises:
        TypeError / ValueError: on invalid values, naming the argument.
    """
    if not _is_int(kernel_size):
        raise TypeError(f"kernel_size must be an int; got {type(kernel_size).__name__}")
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be >= 1; got {kernel_size}")
    if not _is_int(dilation):
        raise TypeError(f"dilation must be an int; got {type(dilation).__name__}")
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1; got {dilation}")
    kernel_size, dilation = int(kernel_size), int(dilation)
    grid = grid_coordinates(kernel_size, dilation)
    max_radius = float(np.sqrt((grid ** 2).sum(0)).max())
    if rings is None:
        n_rings = math.ceil(kernel_size / 2)
        ring_list = [float(r) * dilation for r in np.linspace(0, (kernel_size - 1) // 2, n_rings)]
    else:
        try:
            ring_list = [float(r) for r in rings]
        except TypeError:
            raise TypeError(f"rings must be a sequence of floats; got {type(rings).__name__}") from None
        if not ring_list:
            raise ValueError("rings must not be empty")
        for r in ring_list:
            if not (0.0 <= r <= max_radius + 1e-12):
                raise ValueError(f"rings must lie in [0, {max_radius:.4g}] (the grid's radius); got {r}")
    if sigma is None:
        sig = [0.6] * (len(ring_list) - 1) + [0.4]
        sig = [0.005 if r == 0.0 else s for r, s in zip(ring_list, sig)]
    elif isinstance(sigma, (int, float, np.floating, np.integer)) and not isinstance(sigma, bool):
        sig = [float(sigma)] * len(ring_list)
    else:
        try:
            sig = [float(s) for s in sigma]
        except TypeError:
            raise TypeError(f"sigma must be a float or a sequence of floats; got {type(sigma).__name__}") from None
        if len(sig) != len(ring_list):
            raise ValueError(f"sigma must have one width per ring ({len(ring_list)}); got {len(sig)}")
    for s in sig:
        if not s > 0:
            raise ValueError(f"sigma must be positive; got {s}")
    if frequencies_cutoff is None:
        cutoff: Callable[[float], float] = _DefaultCutoff(kernel_size // 2)
    elif isinstance(frequencies_cutoff, (int, float, np.floating, np.integer)) and not isinstance(
        frequencies_cutoff, bool
    ):
        if frequencies_cutoff < 0:
            raise ValueError(f"frequencies_cutoff must be >= 0; got {frequencies_cutoff}")
        cutoff = _LinearCutoff(float(frequencies_cutoff))
    elif callable(frequencies_cutoff):
        cutoff = frequencies_cutoff
    else:
        raise TypeError(
            f"frequencies_cutoff must be None, a float or a callable; got {type(frequencies_cutoff).__name__}"
        )
    return BasisParams(kernel_size, dilation, tuple(ring_list), tuple(sig), cutoff)


# ---------------------------------------------------------------------------------------------------- irreps pairs
def _offsets(base: int, N: int, maximum_frequency: int, non_negative: bool = False) -> range:
    """Integers ``t`` with ``min_f <= base + t N <= maximum_frequency`` (``min_f = 0`` or ``-maximum_frequency``)."""
    low = 0 if non_negative else -maximum_frequency
    return range(math.ceil((low - base) / N), math.floor((maximum_frequency - base) / N) + 1)


@lru_cache(maxsize=None)
def irreps_pair_solution(
    group: Group, in_id: tuple, out_id: tuple, maximum_frequency: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Angular basis for the irreps pair ``(in, out)``: arrays ``(mu, gamma, s)``, one entry per element.

    ``maximum_frequency`` bounds ``|mu|`` for finite groups (ignored for SO(2)/O(2)). ``s`` is 0 except for 2x2
    blocks. Order as in e2cnn.
    """
    ir_in = group.irrep(*in_id)
    ir_out = group.irrep(*out_id)
    n, m = ir_in.frequency, ir_out.frequency
    di, do = ir_in.size, ir_out.size
    mus: list[int] = []
    gammas: list[float] = []
    ss: list[int] = []
    half = math.pi / 2
    if not group.flips:
        cont = group.continuous
        N = group.N
        F = maximum_frequency
        if do == 2 and di == 2:
            for gamma in (0.0, half):
                for s in (0, 1):
                    k = m - n * (-1) ** s
                    ts = [0] if cont else _offsets(k, N, F)
                    for t in ts:
                        mus.append(k + t * (0 if cont else N))
                        gammas.append(gamma)
                        ss.append(s)
        elif do == 1 and di == 1:
            for gamma in (0.0, half):
                k = m - n
                ts = [0] if cont else _offsets(k, N, F, non_negative=True)
                for t in ts:
                    mu = k + t * (0 if cont else N)
                    if mu > 0 or gamma == 0.0:
                        mus.append(mu)
                        gammas.append(gamma)
                        ss.append(0)
        else:
            for gamma in (0.0, half):
                k = n + m
                ts = [0] if cont else _offsets(k, N, F)
                for t in ts:
                    mus.append(k + t * (0 if cont else N))
                    gammas.append(gamma)
                    ss.append(0)
    else:
        cont = group.continuous
        N = group.N
        F = maximum_frequency
        fi, fo = ir_in.flip_frequency, ir_out.flip_frequency
        if do == 2 and di == 2:
            for s in (0, 1):
                k = m - n * (-1) ** s
                ts = [0] if cont else _offsets(k, N, F)
                for t in ts:
                    mus.append(k + t * (0 if cont else N))
                    gammas.append(0.0)
                    ss.append(s)
        elif do == 1 and di == 1:
            gamma = ((fi + fo) % 2) * half
            k = m - n
            ts = [0] if cont else _offsets(k, N, F, non_negative=True)
            for t in ts:
                mu = k + t * (0 if cont else N)
                if mu > 0 or gamma == 0.0:
                    mus.append(mu)
                    gammas.append(gamma)
                    ss.append(0)
        else:
            gamma = (fo if di == 2 else fi) * half
            k = n + m
            ts = [0] if cont else _offsets(k, N, F)
            for t in ts:
                mus.append(k + t * (0 if cont else N))
                gammas.append(gamma)
                ss.append(0)
    return np.array(mus, dtype=np.int64), np.array(gammas, dtype=np.float64), np.array(ss, dtype=np.int64)


def _sample_angular(
    mu: np.ndarray, gamma: np.ndarray, s: np.ndarray, do: int, di: int, angles: np.ndarray, origin: np.ndarray
) -> np.ndarray:
    """Angular parts ``(n_elements, 2, 2, P)`` (zero padded to 2x2) at ``angles`` (``(P,)``)."""
    x = mu[:, None] * angles[None, :] + gamma[:, None]
    c, sn = np.cos(x), np.sin(x)
    out = np.zeros((len(mu), 2, 2, len(angles)))
    if do == 1 and di == 1:
        out[:, 0, 0] = c
    elif do == 1:
        out[:, 0, 0] = c
        out[:, 0, 1] = sn
    elif di == 1:
        out[:, 0, 0] = c
        out[:, 1, 0] = sn
    else:
        sign = np.where(s == 0, 1.0, -1.0)[:, None]
        out[:, 0, 0] = c
        out[:, 0, 1] = -sign * sn
        out[:, 1, 0] = sn
        out[:, 1, 1] = sign * c
    if origin.any():
        out[np.ix_(mu != 0, [0, 1], [0, 1], origin)] = 0.0
    return out


# ---------------------------------------------------------------------------------------------------- pair basis
class PairBasis:
    """Sampled, normalised basis of equivariant kernels from ``in_repr`` to ``out_repr`` (one field pair).

    Attributes:
        dim: number of basis elements ``D``.
        out_size, in_size: ``O = out_repr.size``, ``I = in_repr.size``; ``S = k*k`` sampling points.
        values: float64 ``(D, 2, 2, S)``: each element's irreps block ``(d_out, d_in, S)``, zero padded to 2x2.
        out_offset, in_offset: ``(D,)`` row / column of the block in the irreps-space kernel ``(O, I)``.
        out_dim, in_dim: ``(D,)`` irreps sizes of the block.
        out_position, in_position: ``(D,)`` index of the output / input irrep within the representation.
        in_irrep_names: ``(D,)`` names of the input irreps.
        ring, frequency, gamma, s: ``(D,)`` attributes of the elements.

    The dense (padded) basis is ``dense() = Q_out blocks Q_in^T``, ``(D, O, I, S)``; the block basis is the
    ``values`` with their offsets (``nnz = sum_e d_out d_in S`` stored numbers).
    """

    def __init__(self, in_repr: Representation, out_repr: Representation, params: BasisParams):
        if in_repr.group != out_repr.group:
            raise ValueError(f"in_repr ({in_repr.group.name}) and out_repr ({out_repr.group.name}) differ in group")
        self.in_repr = in_repr
        self.out_repr = out_repr
        self.params = params
        group = in_repr.group
        self.group = group
        grid = params.grid
        radii = np.sqrt((grid ** 2).sum(0))
        origin = radii < 1e-9
        angles = np.arctan2(grid[1], grid[0])
        angles[origin] = 0.0
        if group.flips:
            angles = angles - math.pi / 2
        rings = np.array(params.rings)
        sig = np.array(params.sigma)
        radial = np.exp(-0.5 * (rings[:, None] - radii[None, :]) ** 2 / sig[:, None] ** 2)  # (R, S)
        cut = [params.cutoff(r) for r in params.rings]
        maxf = params.maximum_frequency

        in_irreps = in_repr.irreps
        out_irreps = out_repr.irreps
        in_off = np.cumsum([0] + [ir.size for ir in in_irreps])
        out_off = np.cumsum([0] + [ir.size for ir in out_irreps])
        # angular solutions per irreps type pair, sampled once
        solutions: dict[tuple[str, str], tuple] = {}
        for ii in {ir.name: ir for ir in in_irreps}.values():
            for oo in {ir.name: ir for ir in out_irreps}.values():
                mu, gamma, s = irreps_pair_solution(group, ii.id, oo.id, maxf)
                ang = _sample_angular(mu, gamma, s, oo.size, ii.size, angles, origin)
                solutions[(ii.name, oo.name)] = (mu, gamma, s, ang)

        values, rec = [], []
        for ring_index in range(len(rings)):
            rad = radial[ring_index]
            for ip, ir_i in enumerate(in_irreps):
                for op, ir_o in enumerate(out_irreps):
                    mu, gamma, s, ang = solutions[(ir_i.name, ir_o.name)]
                    if len(mu) == 0:
                        continue
                    keep = np.abs(mu) <= cut[ring_index]
                    if not keep.any():
                        continue
                    el = ang[keep] * rad[None, None, None, :]
                    norms2 = (el ** 2).reshape(len(el), -1).sum(1) / ir_o.size
                    norms = np.sqrt(np.where(norms2 < 1e-15, 0.0, norms2))
                    alive = norms >= 1e-6
                    if not alive.any():
                        continue
                    el = el[alive] / norms[alive, None, None, None]
                    idx = np.nonzero(keep)[0][alive]
                    values.append(el)
                    for j in idx:
                        rec.append((ring_index, ip, op, int(mu[j]), float(gamma[j]), int(s[j])))
        self.dim = len(rec)
        self.out_size = out_repr.size
        self.in_size = in_repr.size
        self.num_points = params.num_points
        if self.dim == 0:
            self.values = np.zeros((0, 2, 2, self.num_points))
            rec_arr = np.zeros((0, 6))
        else:
            self.values = np.concatenate(values, 0)
            rec_arr = np.array(rec, dtype=np.float64)
        self.ring = rec_arr[:, 0].astype(np.int64)
        self.in_position = rec_arr[:, 1].astype(np.int64)
        self.out_position = rec_arr[:, 2].astype(np.int64)
        self.frequency = rec_arr[:, 3].astype(np.int64)
        self.gamma = rec_arr[:, 4]
        self.s = rec_arr[:, 5].astype(np.int64)
        in_sizes = np.array([ir.size for ir in in_irreps])
        out_sizes = np.array([ir.size for ir in out_irreps])
        self.in_offset = in_off[self.in_position].astype(np.int64)
        self.out_offset = out_off[self.out_position].astype(np.int64)
        self.in_dim = in_sizes[self.in_position].astype(np.int64)
        self.out_dim = out_sizes[self.out_position].astype(np.int64)
        self.in_irrep_names = [in_irreps[p].name for p in self.in_position]
        self.nnz = int((self.in_dim * self.out_dim).sum()) * self.num_points
        self._dense: np.ndarray | None = None
        self._csr: tuple | None = None
        self._lock = threading.Lock()
        self._key = (in_repr, out_repr, params)

    def __reduce__(self):
        return (pair_basis, (self.in_repr, self.out_repr, self.params))

    def __deepcopy__(self, memo: dict) -> "PairBasis":
        return self  # immutable and shared

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PairBasis) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"PairBasis({self.in_repr.name} -> {self.out_repr.name}, dim={self.dim}, S={self.num_points})"

    def irreps_blocks(self) -> np.ndarray:
        """The basis in the irreps bases, dense: ``(D, O, I, S)`` (zeros outside each element's block)."""
        D, O, I, S = self.dim, self.out_size, self.in_size, self.num_points
        out = np.zeros((D, O, I, S))
        for e in range(D):
            o0, i0, do, di = self.out_offset[e], self.in_offset[e], self.out_dim[e], self.in_dim[e]
            out[e, o0:o0 + do, i0:i0 + di] = self.values[e, :do, :di]
        return out

    def dense(self) -> np.ndarray:
        """The padded basis ``Q_out blocks Q_in^T``: float64 ``(D, O, I, S)`` (cached, read-only)."""
        with self._lock:
            if self._dense is None:
                blocks = self.irreps_blocks()
                if not self.out_repr.identity_change_of_basis:
                    blocks = np.einsum("po,doiz->dpiz", self.out_repr.change_of_basis, blocks)
                if not self.in_repr.identity_change_of_basis:
                    blocks = np.einsum("doiz,qi->doqz", blocks, self.in_repr.change_of_basis)
                blocks = np.ascontiguousarray(blocks)
                blocks.setflags(write=False)
                self._dense = blocks
            return self._dense

    def fill_arrays(self) -> tuple[np.ndarray, ...]:
        """Vector-CSR form of the stored blocks for the block fill.

        Rows ``r = o * I + i`` are the entries of the irreps-space kernel; each stored number is a vector over the
        ``S`` grid points. Returns ``(rowptr, col, val, t_rowptr, t_row, t_val)``: ``rowptr`` ``(O*I + 1,)``,
        ``col`` ``(nnz_v,)`` element index, ``val`` float64 ``(nnz_v, S)``; the ``t_*`` arrays hold the same entries
        grouped by element (``t_rowptr`` ``(D + 1,)``, ``t_row`` the row of each entry). ``nnz_v * S == nnz``.
        """
        with self._lock:
            if self._csr is None:
                I = self.in_size
                rows, cols, vals = [], [], []
                for e in range(self.dim):
                    do, di = self.out_dim[e], self.in_dim[e]
                    o = self.out_offset[e] + np.arange(do)
                    i = self.in_offset[e] + np.arange(di)
                    rows.append((o[:, None] * I + i[None, :]).reshape(-1))
                    cols.append(np.full(do * di, e))
                    vals.append(self.values[e, :do, :di].reshape(do * di, -1))
                if rows:
                    rows_a = np.concatenate(rows)
                    cols_a = np.concatenate(cols)
                    vals_a = np.concatenate(vals, 0)
                else:
                    rows_a = cols_a = np.zeros(0, dtype=np.int64)
                    vals_a = np.zeros((0, self.num_points))
                n_rows = self.out_size * self.in_size
                order = np.lexsort((cols_a, rows_a))
                rowptr = np.concatenate([[0], np.cumsum(np.bincount(rows_a, minlength=n_rows))])
                t_order = np.lexsort((rows_a, cols_a))
                t_rowptr = np.concatenate([[0], np.cumsum(np.bincount(cols_a, minlength=self.dim))])
                arrays = (
                    rowptr.astype(np.int32),
                    cols_a[order].astype(np.int32),
                    np.ascontiguousarray(vals_a[order]),
                    t_rowptr.astype(np.int32),
                    rows_a[t_order].astype(np.int32),
                    np.ascontiguousarray(vals_a[t_order]),
                )
                for a in arrays:
                    a.setflags(write=False)
                self._csr = arrays
            return self._csr


_PAIR_CACHE: dict[tuple, PairBasis] = {}
_PAIR_LOCK = threading.Lock()


def pair_basis(in_repr: Representation, out_repr: Representation, params: BasisParams) -> PairBasis:
    """Cached :class:`PairBasis`: layers with the same field-type pair and sampling share one object."""
    key = (in_repr, out_repr, params)
    basis = _PAIR_CACHE.get(key)
    if basis is None:
        with _PAIR_LOCK:
            basis = _PAIR_CACHE.get(key)
            if basis is None:
                basis = PairBasis(in_repr, out_repr, params)
                _PAIR_CACHE[key] = basis
    return basis
