"""Block expansion by orbits of the grid's symmetries (CPU): group-convolution structure of the kernel.

An equivariant kernel satisfies ``kappa(h x) = rho_out(h) kappa(x) rho_in(h)^T`` for every group element ``h``. Let
``H`` be the elements that map the sampling grid onto itself (quarter turns, and the reflections of ``D_N``, that
belong to the group) and for which both representations are *signed permutations* (regular, quotient and trivial
representations always are; so are irreps at quarter turns). For such an ``h`` with ``rho_out(h)[o, r] = s_o`` and
``rho_in(h)[i, b] = s_i``::

    kappa(y)[o, i] = s_o s_i kappa(h^-1 y)[r, b]

and ``h^-1 y`` is again a grid point: the filter rows ``o`` of an ``H``-orbit of output indices are signed
permutations (over input index and grid point) of the row of one representative ``r``. Only the ``R`` rows of the
orbit representatives are computed -- a GEMM ``(F, D) @ (D, R I S)`` per representation pair instead of the padded
``(F, D) @ (D, O I S)`` -- and the other rows are gathered from them (:func:`row_plan`: rows of the identity and of the
half turn are SIMD copies, plain or reversed, of the representatives' rows; the other grid permutations are gathered
once per field pair into a small stage that serves their rows and those of their composition with the half turn).
For the regular representation of ``C_8`` ``R = 2`` of 8 (4 quarter turns), of ``D_8`` 2 of 16, of ``C_4`` 1 of 4.

The ``D x R I S`` basis rows are not stored: every call rebuilds them from the irreps blocks
(``Q_out[r, :] beta_e Q_in^T``, ``D R (d_out d_in + d_in I) S`` multiply-adds, independent of the number of field
pairs), so the stored basis is that of the fused kernel: the distinct irreps blocks, an element table, the rows
``Q_out[r, :]``, ``Q_in``, and the orbit tables (``O`` + ``O I`` + ``|H| S`` integers per pair). The rows live only
from the forward to the backward of one expansion.

Backward is the transposed computation (scatter-add of the filter gradient into the representative rows, then
``(F, R I S) @ (R I S, D)``); its derivative is the forward, so double backward comes for free. Small layers run in
one numba call per pass (rows, GEMM loops and gather), larger ones use torch's GEMM between two numba calls.

The pure-torch reference is the ``"torch"`` block executor; tests check this one against it and the padded
expansion.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import torch

from ..executors.cpu._pool import empty as pooled_empty
from ._folded import workspace

__all__ = ["GConvPlan", "gconv_expand", "grid_orbits"]

_META = 21
_KERNELS: dict[str, Any] = {}
# layers with fewer GEMM multiply-adds than this run the whole expansion in one numba call per pass
_SMALL_MACS = 400_000
# and with more gathered filter entries than this split the gather / scatter over threads
_PARALLEL_MIN_ENTRIES = 200_000


# ---------------------------------------------------------------------------------------------------- orbits
def _signed_permutation(m: np.ndarray, tol: float = 1e-9) -> np.ndarray | None:
    r = np.rint(m)
    if np.abs(m - r).max() > tol:
        return None
    a = np.abs(r)
    if not (np.all(a.sum(0) == 1) and np.all(a.sum(1) == 1)):
        return None
    return r


def _grid_elements(group) -> list:
    """Group elements whose rotation is a multiple of a quarter turn (the candidates for mapping the grid)."""
    if group.continuous:
        rots = [k * math.pi / 2 for k in range(4)]
        return [(j, a) for j in range(2) for a in rots] if group.flips else rots
    return [g for g in group.elements if group.quarter_turns(g) is not None]


def _act(group, g, points: np.ndarray) -> np.ndarray:
    """``g . p`` for points ``(2, n)``: the reflection ``x -> -x`` (if any), then the rotation."""
    p = points.copy()
    if group.flips and group.flip_of(g):
        p[0] = -p[0]
    t = group.rotation_angle(g)
    c, s = math.cos(t), math.sin(t)
    return np.stack([c * p[0] - s * p[1], s * p[0] + c * p[1]])


_ORBIT_CACHE: dict[Any, tuple] = {}
_ORBIT_LOCK = threading.Lock()


def grid_orbits(basis) -> tuple:
    """Orbit tables of a :class:`~equitp.e2.PairBasis` (cached).

    Returns ``(reps, rep_of, elem_of, in_src, sign, sigma)``: ``reps`` ``(R,)`` the output indices whose rows are
    computed; for every output index ``o``: ``rep_of[o]`` (position in ``reps``), ``elem_of[o]`` (which grid
    symmetry ``h`` maps the representative's row onto it); ``in_src`` ``(O, I)`` the input index ``b`` read for
    ``(o, i)``; ``sign`` ``(O, I)`` the product of the two signs; ``sigma`` ``(|H|, S)`` the grid point ``h^-1 y_s``.
    ``filter[o, i, s] = sign[o, i] * rows[rep_of[o], in_src[o, i], sigma[elem_of[o], s]]``.
    """
    key = basis
    hit = _ORBIT_CACHE.get(key)
    if hit is not None:
        return hit
    group = basis.group
    grid = basis.params.grid
    S = grid.shape[1]
    O, I = basis.out_size, basis.in_size
    hs = []
    for g in _grid_elements(group):
        moved = _act(group, g, grid)  # h . p for every grid point p
        d = np.abs(moved[:, :, None] - grid[:, None, :]).max(0)
        img = d.argmin(1)
        if d[np.arange(S), img].max() > 1e-9 or len(set(img.tolist())) != S:
            continue
        ro = _signed_permutation(basis.out_repr(g))
        ri = _signed_permutation(basis.in_repr(g))
        if ro is None or ri is None:
            continue
        sigma = np.empty(S, dtype=np.int64)
        sigma[img] = np.arange(S)  # sigma[s] = p with h . p = y_s
        hs.append((sigma, ro, ri))
    # the identity always qualifies, so every output index gets a representative
    rep_of = np.full(O, -1, dtype=np.int64)
    elem_of = np.zeros(O, dtype=np.int64)
    out_sign = np.ones(O)
    reps = []
    for o in range(O):
        if rep_of[o] >= 0:
            continue
        r = len(reps)
        reps.append(o)
        for k, (sigma, ro, ri) in enumerate(hs):
            a = int(np.nonzero(ro[:, o])[0][0])  # rho_out(h) e_o = +-e_a: row o of the rep maps to row a
            if rep_of[a] < 0:
                rep_of[a], elem_of[a], out_sign[a] = r, k, ro[a, o]
    in_src = np.empty((O, I), dtype=np.int64)
    sign = np.empty((O, I))
    for o in range(O):
        ri = hs[elem_of[o]][2]
        b = np.abs(ri).argmax(1)  # rho_in(h)[i, b] != 0
        in_src[o] = b
        sign[o] = out_sign[o] * ri[np.arange(I), b]
    sigma = np.stack([h[0] for h in hs])
    value = (np.array(reps, dtype=np.int64), rep_of, elem_of, in_src, sign, sigma)
    with _ORBIT_LOCK:
        _ORBIT_CACHE[key] = value
    return value


def row_plan(rep_of: np.ndarray, elem_of: np.ndarray, sigma: np.ndarray) -> tuple:
    """How the kernels produce each filter row of a pair from the representatives' rows ``psi`` (see
    :func:`grid_orbits`).

    Returns ``(kind, src, st_r, st_h)``. ``kind[o]``: 0 copy of ``psi[src[o]]`` (identity grid permutation), 1 its
    reversal (the half turn on a centred grid), 2 copy of stage ``src[o]``, 3 its reversal. Stage ``k`` is
    ``psi[st_r[k], :, sigma[st_h[k]]]``: one scalar gather per field pair that serves every row whose grid
    permutation is ``sigma[st_h[k]]`` or its reversal (for quarter turns: the rows of 90 and 270 degrees).
    """
    S = sigma.shape[1]
    ident = np.arange(S)
    kind = np.empty(len(rep_of), dtype=np.int64)
    src = np.empty(len(rep_of), dtype=np.int64)
    stages: list[tuple[int, int]] = []
    for o in range(len(rep_of)):
        r, sg = int(rep_of[o]), sigma[elem_of[o]]
        if np.array_equal(sg, ident):
            kind[o], src[o] = 0, r
        elif np.array_equal(sg, ident[::-1]):
            kind[o], src[o] = 1, r
        else:
            for k, (r2, h2) in enumerate(stages):
                if r2 == r and np.array_equal(sigma[h2], sg):
                    kind[o], src[o] = 2, k
                    break
                if r2 == r and np.array_equal(sigma[h2][::-1], sg):
                    kind[o], src[o] = 3, k
                    break
            else:
                kind[o], src[o] = 2, len(stages)
                stages.append((r, int(elem_of[o])))
    st_r = np.array([r for r, _ in stages], dtype=np.int64)
    st_h = np.array([h for _, h in stages], dtype=np.int64)
    return kind, src, st_r, st_h


# ---------------------------------------------------------------------------------------------------- kernels
def _build_kernels() -> dict[str, Any]:
    if not _KERNELS:
        from . import _gconv_kernels as k

        for name in ("rows", "gather_ser", "gather_par", "scatter_ser", "scatter_par"):
            _KERNELS[name] = getattr(k, name)
    return _KERNELS


_SMALL_C: dict[Any, tuple] = {}
_SMALL_LOCK = threading.Lock()


def small_kernels(dtype: np.dtype) -> tuple:
    """The small-layer (forward, transpose) kernels for float ``dtype`` as ctypes functions of eight arguments: the
    plan's int64, int32 and float arrays (pointer, length each), then the weights' and the filter's data pointers
    (forward: weights in, filter out; transpose: filter gradient in, weight gradient out). Compiled once per dtype
    (numba ``cfunc``, cached on disk like the other kernels)."""
    dtype = np.dtype(dtype)
    pair = _SMALL_C.get(dtype)
    if pair is None:
        with _SMALL_LOCK:
            pair = _SMALL_C.get(dtype)
            if pair is None:
                import ctypes

                import numba
                from numba import types as nt

                from . import _gconv_kernels as k

                ft = nt.CPointer(numba.from_dtype(dtype))
                sig = nt.void(nt.CPointer(nt.int64), nt.int64, nt.CPointer(nt.int32), nt.int64, ft, nt.int64, ft, ft)
                proto = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p, ctypes.c_int64] * 3 + [ctypes.c_void_p] * 2))
                compiled = [numba.cfunc(sig, cache=True, fastmath=True)(f) for f in (k.small_forward_c,
                                                                                    k.small_transpose_c)]
                # the cfunc objects own the machine code: keep them alive with the ctypes functions
                pair = _SMALL_C[dtype] = tuple(proto(c.address) for c in compiled) + tuple(compiled)
    return pair


# ---------------------------------------------------------------------------------------------------- plan
class GConvPlan:
    """Packed structure of a layer's orbit expansion for the CPU kernels (one dtype).

    Args:
        layer: the :class:`~equitp.e2.LayerBasis`.
        dtype: ``torch.float32`` or ``torch.float64``.

    Attributes:
        i64: int64 header, per representation pair ``meta`` ``(P, 21)`` (``n_out, n_in, O, I, D, R``, weight start,
            offsets of its output / input field starts, of its elements, of its rows in the rebuilt basis ``brow``
            and of its ``psi`` block (``(F, R I S)``), the length of its rows (``D R I S``), offset of its orbit
            tables, ``F``, offsets of its signs (-1: all +1), of ``Q_out[reps, :]`` and of ``Q_in`` (-1: identity),
            ``|H|``, offset of its row plan, number of its stages), the task offsets (one task per output field) and
            the field start channels.
        i32: the element table ``(sum D, 5)`` (row, column, ``d_out``, ``d_in``, first value row) and per pair the
            orbit tables (``rep_of`` ``(O,)``, ``elem_of`` ``(O,)``, ``in_src`` ``(O, I)``, ``sigma`` ``(|H|, S)``)
            and the row plan of :func:`row_plan` (``kind`` ``(O,)``, ``src`` ``(O,)``, stage rows and elements); the
            kernels expand the stages' index tables (``I S`` entries each) at each call.
        flt: the distinct irreps-block rows ``(rows, S)``, then per pair the signs (if any), ``Q_out[reps, :]`` and
            ``Q_in``.
        stored_bytes: bytes of the three arrays.
        macs: multiply-adds of the GEMMs of one pass (``sum F D R I S``).
    """

    def __init__(self, layer: Any, dtype: torch.dtype):
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"the gconv block kernel needs float32 or float64; got {dtype}")
        npd = np.float32 if dtype == torch.float32 else np.float64
        S = layer.num_points
        in_starts: dict[str, list] = {}
        for start, r in zip(layer.in_type.field_starts, layer.in_type.representations):
            in_starts.setdefault(r.name, []).append(start)
        out_starts: dict[str, list] = {}
        for start, r in zip(layer.out_type.field_starts, layer.out_type.representations):
            out_starts.setdefault(r.name, []).append(start)
        rows: list[np.ndarray] = []
        row_of: dict[bytes, int] = {}
        n_rows = 0
        elem, tab, meta, fstart, task_off = [], [], [], [], [0]
        extra: list[np.ndarray] = []  # per pair signs / Q rows, appended after the value rows
        extra_len = 0
        n_brow = n_psi = 0
        macs = 0
        entries = 0
        pending = []
        for p in layer.pairs:
            b = p.basis
            O, I, D = b.out_size, b.in_size, b.dim
            reps, rep_of, elem_of, in_src, sign, sigma = grid_orbits(b)
            R = len(reps)
            of = len(fstart)
            fstart += out_starts[b.out_repr.name]
            if_ = len(fstart)
            fstart += in_starts[b.in_repr.name]
            e0 = len(elem)
            RIS = R * I * S
            for e in range(D):
                do, di = int(b.out_dim[e]), int(b.in_dim[e])
                blk = np.ascontiguousarray(b.values[e, :do, :di])
                key = blk.tobytes() + bytes([do, di])
                r = row_of.get(key)
                if r is None:
                    r = row_of[key] = n_rows
                    rows.append(blk.reshape(do * di, S))
                    n_rows += do * di
                elem.append((int(b.out_offset[e]), int(b.in_offset[e]), do, di, r))
            tb = len(tab)
            nH = len(sigma)
            for part in (rep_of, elem_of, in_src, sigma):
                tab += np.asarray(part).reshape(-1).tolist()
            rp = len(tab)
            kind, src, st_r, st_h = row_plan(rep_of, elem_of, sigma)
            for part in (kind, src, st_r, st_h):
                tab += part.tolist()
            F = p.n_out * p.n_in
            flt_parts = []
            if np.all(sign == 1.0):
                sg = -1
            else:
                sg = extra_len
                flt_parts.append(sign.reshape(-1))
                extra_len += sign.size
            q_out = np.asarray(b.out_repr.change_of_basis)[reps, :]
            qo = extra_len
            flt_parts.append(q_out.reshape(-1))
            extra_len += q_out.size
            if b.in_repr.identity_change_of_basis:
                qi = -1
            else:
                qi = extra_len
                flt_parts.append(np.asarray(b.in_repr.change_of_basis).reshape(-1))
                extra_len += I * I
            extra += flt_parts
            pending.append(
                [p.n_out, p.n_in, O, I, D, R, p.start, of, if_, e0, n_brow, n_psi, D * RIS, tb, F, sg, qo, qi, nH, rp,
                 len(st_r)]
            )
            n_brow += D * RIS
            n_psi += F * RIS
            macs += F * D * RIS
            entries += F * O * I * S
            task_off.append(task_off[-1] + p.n_out)
        vals = np.concatenate(rows, 0).reshape(-1) if rows else np.zeros(0)
        shift = vals.size  # signs / Q rows follow the value rows
        for m in pending:
            m[15] = m[15] + shift if m[15] >= 0 else -1
            m[16] += shift
            m[17] = m[17] + shift if m[17] >= 0 else -1
            meta.append(m)
        self.flt = np.ascontiguousarray(np.concatenate([vals] + extra) if extra else vals, dtype=npd)
        covered = sum(p.n_out * p.basis.out_size * p.n_in * p.basis.in_size for p in layer.pairs)
        self.full = covered == layer.out_type.size * layer.in_type.size
        P = len(meta)
        head = 13
        meta_a = np.array(meta, dtype=np.int64).reshape(-1)
        o_meta = head
        o_task = o_meta + meta_a.size
        o_fs = o_task + len(task_off)
        self.i64 = np.concatenate([
            np.array([P, o_meta, o_task, o_fs, len(elem), layer.in_type.size, S, n_brow, n_psi, layer.out_type.size,
                      layer.kernel_size, int(self.full), layer.dim], dtype=np.int64),
            meta_a, np.array(task_off, dtype=np.int64), np.array(fstart, dtype=np.int64),
        ])
        self.i32 = np.concatenate([np.array(elem, dtype=np.int32).reshape(-1), np.array(tab, dtype=np.int32)])
        self.stored_bytes = int(self.i64.nbytes + self.i32.nbytes + self.flt.nbytes)
        self.pairs = [(m[6], m[14], m[4], m[5] * m[3] * S, m[10], m[11]) for m in meta]  # w0, F, D, RIS, brow, psi
        self.n_brow, self.n_psi = n_brow, n_psi
        self.macs = int(macs)
        self.entries = int(entries)
        self.small = macs < _SMALL_MACS
        self.n_tasks = int(task_off[-1])
        self.dim = layer.dim
        self.dtype = dtype
        self.shape = (layer.out_type.size, layer.in_type.size, layer.kernel_size, layer.kernel_size)
        self._entry: dict[str, Any] = {}
        self._small_entries: tuple | None = None

    def _kernel(self, name: str):
        """The compiled kernel's entry point for this plan's argument types (skips numba's dispatch)."""
        entry = self._entry.get(name)
        if entry is None:
            import numba

            disp = _build_kernels()[name]
            x = np.zeros(1, dtype=self.flt.dtype)
            args = (x,) if name == "rows" else (x, x, 1)
            types = tuple(numba.typeof(a) for a in (self.i64, self.i32, self.flt) + args)
            entry = disp.overloads.get(types)
            if entry is None:
                disp.compile(types)
                entry = disp.overloads[types]
            entry = self._entry[name] = entry.entry_point
        return entry

    def _small(self) -> tuple:
        """The one-call kernels (forward, transpose) and the plan's own three arrays as their leading arguments."""
        if self._small_entries is None:
            fwd, tr = small_kernels(self.flt.dtype)[:2]
            head = tuple(x for a in (self.i64, self.i32, self.flt) for x in (a.ctypes.data, a.size))
            self._small_entries = (fwd, tr, head)
        return self._small_entries

    def small_forward(self, w: torch.Tensor) -> torch.Tensor:
        """Small layers: the filter from contiguous ``(dim,)`` weights of the plan's dtype, in one kernel call."""
        fwd, _, head = self._small()
        out = torch.empty(self.shape, dtype=self.dtype)
        fwd(*head, w.data_ptr(), out.data_ptr())
        return out

    def small_transpose(self, g: torch.Tensor) -> torch.Tensor:
        """Small layers: the ``(dim,)`` weight gradient from a contiguous filter gradient, in one kernel call."""
        _, tr, head = self._small()
        gw = torch.empty(self.dim, dtype=self.dtype)
        tr(*head, g.data_ptr(), gw.data_ptr())
        return gw

    def _chunks(self) -> tuple[str, int]:
        import numba

        threads = numba.get_num_threads()
        if threads > 1 and self.entries >= _PARALLEL_MIN_ENTRIES and self.n_tasks > 1:
            return "_par", min(threads, self.n_tasks)
        return "_ser", 1

    def rows(self) -> torch.Tensor:
        """The rebuilt representative rows of all pairs, flat (``sum D R I S``)."""
        brow = torch.empty(self.n_brow, dtype=self.dtype)
        if self.n_brow:
            self._kernel("rows")(self.i64, self.i32, self.flt, brow.numpy())
        return brow

    def forward(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(dim,)`` weights -> (filter ``(C_out, C_in, k, k)``, the rebuilt rows or ``None`` for small layers)."""
        w = w.detach()
        if self.small:
            return self.small_forward(w.contiguous()), None
        # the filter from the CPU buffer pool (executors.cpu._pool): a training loop gets the previous step's released
        # filter back instead of faulting in fresh pages (about as long as the gather itself for a 6.5 MB filter)
        out = pooled_empty(self.shape, self.dtype)
        if not self.full:
            out.zero_()
        brow = self.rows()
        psi = workspace("gconv-psi", self.n_psi, w)
        for w0, F, D, RIS, b0, p0 in self.pairs:
            torch.mm(w[w0:w0 + F * D].view(F, D), brow[b0:b0 + D * RIS].view(D, RIS),
                     out=psi[p0:p0 + F * RIS].view(F, RIS))
        suffix, n_chunks = self._chunks()
        self._kernel("gather" + suffix)(self.i64, self.i32, self.flt, psi.numpy(), out.view(-1).numpy(), n_chunks)
        return out, brow

    def transpose(self, g: torch.Tensor, brow: torch.Tensor | None = None) -> torch.Tensor:
        """``(C_out, C_in, k, k)`` filter gradient -> ``(dim,)`` weight gradient (``brow``: rows from the forward)."""
        g = g.detach().reshape(self.shape).contiguous()
        if self.small:
            return self.small_transpose(g)
        if brow is None:
            brow = self.rows()
        gpsi = workspace("gconv-gpsi", self.n_psi, g)
        suffix, n_chunks = self._chunks()
        self._kernel("scatter" + suffix)(self.i64, self.i32, self.flt, g.view(-1).numpy(), gpsi.numpy(), n_chunks)
        gw = torch.empty(self.dim, dtype=self.dtype)
        for w0, F, D, RIS, b0, p0 in self.pairs:
            torch.mm(gpsi[p0:p0 + F * RIS].view(F, RIS), brow[b0:b0 + D * RIS].view(D, RIS).t(),
                     out=gw[w0:w0 + F * D].view(F, D))
        return gw


class _GConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, plan: GConvPlan) -> torch.Tensor:
        ctx.plan = plan
        if plan.small:  # lean path: one kernel call, no other torch op
            ctx.brow = None
            return plan.small_forward(w)
        out, ctx.brow = plan.forward(w)
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor):
        if not ctx.needs_input_grad[0]:
            return None, None
        if torch.is_grad_enabled():  # create_graph: the transpose must be differentiable again
            return _GConvTransposed.apply(g, ctx.plan), None
        plan = ctx.plan
        if plan.small and g.is_contiguous() and g.shape == plan.shape:
            return plan.small_transpose(g), None
        return plan.transpose(g, ctx.brow), None


class _GConvTransposed(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, g: torch.Tensor, plan: GConvPlan) -> torch.Tensor:
        ctx.plan = plan
        return plan.transpose(g)

    @staticmethod
    def backward(ctx: Any, gg: torch.Tensor):
        if not ctx.needs_input_grad[0]:
            return None, None
        if torch.is_grad_enabled():
            return _GConv.apply(gg, ctx.plan), None
        return ctx.plan.forward(gg)[0], None


def gconv_expand(plan: GConvPlan, w: torch.Tensor) -> torch.Tensor:
    """The layer's filter ``(C_out, C_in, k, k)`` from its weights ``(dim,)`` (CPU, float32/float64), with
    autograd (backward = the transposed kernel, differentiable again)."""
    if w.dtype != plan.dtype or w.device.type != "cpu":
        raise ValueError(f"the gconv block kernel needs {plan.dtype} CPU weights; got {w.dtype} on {w.device}")
    return gconv_expand_checked(plan, w)


def gconv_expand_checked(plan: GConvPlan, w: torch.Tensor) -> torch.Tensor:
    """:func:`gconv_expand` for weights already known to be CPU tensors of the plan's dtype and ``(dim,)`` shape (the
    layer's fast path, which has checked them)."""
    if not w.is_contiguous():
        w = w.contiguous()
    if w.requires_grad and torch.is_grad_enabled():
        return _GConv.apply(w, plan)
    return plan.forward(w)[0]
