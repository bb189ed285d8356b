"""Fused block expansion on CPU: fill, ``Q_in``, ``Q_out`` and placement of a whole layer in one kernel call.

For every field pair ``f`` of every representation pair of a layer, one task computes, in a buffer that stays in
the core's cache (``O * I * S`` numbers),

1. the irreps-space kernel ``khat = sum_e w[f, e] beta_e`` (only the stored irreps blocks, ``nnz`` numbers),
2. ``M = khat Q_in^T`` -- only over the irreps-space entries some block covers, skipping the zeros of ``Q_in``,
3. ``kappa = Q_out M`` -- skipping the zeros of ``Q_out`` -- written straight into the filter
   ``(C_out, C_in, S)`` at the channels of the two fields (each row of ``I * S`` numbers contiguous),

and skips a step whose change of basis is the identity. Nothing of size ``F * O * I * S`` is written except the
filter itself, so the method is not bound by the memory traffic of separate ``Q`` products, and the whole layer is
one call (little Python overhead per expansion).

The backward is the same computation transposed (``G -> Q_out^T G Q_in -> <beta_e, .>``): the transpose kernel.
The derivative of the transpose is the forward, so double backward comes for free.

Storage (:class:`FusedPlan`): the distinct irreps-block bases only -- elements with equal sampled blocks (the same
irreps pair, ring and solution in a representation that repeats an irrep) share one copy -- as ``(rows, S)`` values
plus an int32 element table ``(D, 5)`` (row, column, ``d_out``, ``d_in``, value row), the list of covered
irreps-space entries, and each distinct change of basis once (``O x O``).

The pure-torch reference of this kernel is the ``"torch"`` block executor (:mod:`._fill` gather + two GEMMs); both
must give the padded expansion's filter.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["FusedPlan", "fused_expand", "fused_available"]

_KERNELS: dict[str, Any] = {}

# meta columns
_META = 14


def _build_kernels() -> dict[str, Any]:
    if _KERNELS:
        return _KERNELS
    import numba

    @numba.njit(cache=True)
    def _unpack(i64, i32, flt):
        # header of i64: P, meta, task_off, fstart offsets (i64), elem, cov offsets and sizes (i32), vals rows,
        # gam and qmat offsets (flt), C_in, buffer size, S
        P = i64[0]
        meta = i64[i64[1]:i64[1] + P * 14].reshape((P, 14))
        task_off = i64[i64[2]:i64[2] + P + 1]
        fstart = i64[i64[3]:i64[4]]
        elem = i32[i64[5]:i64[5] + 5 * i64[6]].reshape((i64[6], 5))
        cov = i32[i64[7]:i64[7] + i64[8]]
        S = i64[14]
        vals = flt[:i64[9] * S].reshape((i64[9], S))
        gam = flt[i64[10]:i64[11]]
        qmat = flt[i64[11]:]
        return meta, task_off, fstart, elem, vals, gam, cov, qmat, i64[12], i64[13]

    @numba.njit(cache=True, inline="always")
    def _task(meta, task_off, fstart, S, t, p):
        # task t (one pair of fields of pair-of-types p, found by advancing p): its sizes, element and covered-entry
        # ranges, changes of basis, first filter channels of the two fields and first weight
        while t >= task_off[p + 1]:
            p += 1
        n_in = meta[p, 1]
        I = meta[p, 3]
        D = meta[p, 4]
        f = t - task_off[p]
        fo = f // n_in
        fi = f - fo * n_in
        oc0 = fstart[meta[p, 6] + fo]
        ic0 = fstart[meta[p, 7] + fi]
        return (p, meta[p, 2], I, D, I * S, meta[p, 8], meta[p, 9], meta[p, 10], meta[p, 11], meta[p, 12], oc0, ic0,
                meta[p, 5] + f * D)

    # Inner loops index row views with the loop variable only (a range index is known non-negative, so numba emits
    # no wrap-around test and LLVM vectorises the loop).
    def forward(i64, i32, flt, w, out, n_chunks):
        meta, task_off, fstart, elem, vals, gam, cov, qmat, c_in, bufsize = _unpack(i64, i32, flt)
        # meta (P, 14) int64; task_off (P + 1,); fstart: field start channels; elem (sum D, 5) int32;
        # vals (rows, S) irreps-block rows; gam flat folded blocks; cov covered irreps-space entries o * I + i;
        # qmat flat changes of basis; w (dim,); out flat (C_out * C_in * S,)
        S = vals.shape[1]
        n_tasks = task_off[-1]
        for c in numba.prange(n_chunks):
            t0 = c * n_tasks // n_chunks
            t1 = (c + 1) * n_tasks // n_chunks
            kh = np.empty(bufsize, dtype=out.dtype)
            mb = np.empty(bufsize, dtype=out.dtype)
            p = 0
            for t in range(t0, t1):
                p, O, I, D, IS, e0, c0, nc, qo, qi, oc0, ic0, wb = _task(meta, task_off, fstart, S, t, p)
                mv = mb[:O * IS]
                if meta[p, 13]:
                    # folded pair: M = sum_e w_e (beta_e Q_in^T), each term d_out contiguous rows of M
                    for j in range(O * IS):
                        mv[j] = 0.0
                    for e in range(D):
                        we = w[wb + e]
                        n = elem[e0 + e, 2] * IS
                        d0 = elem[e0 + e, 0] * IS
                        s0 = elem[e0 + e, 4]
                        dst = mb[d0:d0 + n]
                        src = gam[s0:s0 + n]
                        for j in range(n):
                            dst[j] += we * src[j]
                    m = mb
                else:
                    # 1. fill the covered irreps-space entries
                    for k in range(c0, c0 + nc):
                        row = kh[cov[k] * S:cov[k] * S + S]
                        for s in range(S):
                            row[s] = 0.0
                    for e in range(D):
                        we = w[wb + e]
                        oo = elem[e0 + e, 0]
                        ii = elem[e0 + e, 1]
                        do = elem[e0 + e, 2]
                        di = elem[e0 + e, 3]
                        r = elem[e0 + e, 4]
                        for a in range(do):
                            for b in range(di):
                                base = (oo + a) * IS + (ii + b) * S
                                row = kh[base:base + S]
                                val = vals[r]
                                for s in range(S):
                                    row[s] += we * val[s]
                                r += 1
                    # 2. M = khat Q_in^T (over covered entries, zeros of Q_in skipped)
                    if qi >= 0:
                        for j in range(O * IS):
                            mv[j] = 0.0
                        for k in range(c0, c0 + nc):
                            oh = cov[k] // I
                            q = cov[k] - oh * I
                            src = kh[cov[k] * S:cov[k] * S + S]
                            for i in range(I):
                                v = qmat[qi + i * I + q]
                                if v != 0.0:
                                    dst = mb[oh * IS + i * S:oh * IS + i * S + S]
                                    for s in range(S):
                                        dst[s] += v * src[s]
                        m = mb
                    elif nc < O * I:
                        # entries no block covers were not written: copy the covered ones into a zeroed buffer
                        for j in range(O * IS):
                            mv[j] = 0.0
                        for k in range(c0, c0 + nc):
                            dst = mb[cov[k] * S:cov[k] * S + S]
                            src = kh[cov[k] * S:cov[k] * S + S]
                            for s in range(S):
                                dst[s] = src[s]
                        m = mb
                    else:
                        m = kh
                # 3. kappa = Q_out M, written into the filter rows of the two fields
                for o in range(O):
                    d0 = ((oc0 + o) * c_in + ic0) * S
                    dst = out[d0:d0 + IS]
                    if qo < 0:
                        src = m[o * IS:o * IS + IS]
                        for j in range(IS):
                            dst[j] = src[j]
                    else:
                        first = True
                        for oh in range(O):
                            v = qmat[qo + o * O + oh]
                            if v != 0.0:
                                src = m[oh * IS:oh * IS + IS]
                                if first:
                                    for j in range(IS):
                                        dst[j] = v * src[j]
                                    first = False
                                else:
                                    for j in range(IS):
                                        dst[j] += v * src[j]
                        if first:
                            for j in range(IS):
                                dst[j] = 0.0

    def transpose(i64, i32, flt, g, gw, n_chunks):
        meta, task_off, fstart, elem, vals, gam, cov, qmat, c_in, bufsize = _unpack(i64, i32, flt)
        # g flat (C_out * C_in * S,) filter gradient -> gw (dim,)
        S = vals.shape[1]
        n_tasks = task_off[-1]
        for c in numba.prange(n_chunks):
            t0 = c * n_tasks // n_chunks
            t1 = (c + 1) * n_tasks // n_chunks
            tb = np.empty(bufsize, dtype=g.dtype)
            hb = np.empty(bufsize, dtype=g.dtype)
            p = 0
            for t in range(t0, t1):
                p, O, I, D, IS, e0, c0, nc, qo, qi, oc0, ic0, wb = _task(meta, task_off, fstart, S, t, p)
                # 1. T = Q_out^T G (rows of G read in place)
                for oh in range(O):
                    dst = tb[oh * IS:oh * IS + IS]
                    if qo < 0:
                        s0 = ((oc0 + oh) * c_in + ic0) * S
                        src = g[s0:s0 + IS]
                        for j in range(IS):
                            dst[j] = src[j]
                    else:
                        first = True
                        for o in range(O):
                            v = qmat[qo + o * O + oh]
                            if v != 0.0:
                                s0 = ((oc0 + o) * c_in + ic0) * S
                                src = g[s0:s0 + IS]
                                if first:
                                    for j in range(IS):
                                        dst[j] = v * src[j]
                                    first = False
                                else:
                                    for j in range(IS):
                                        dst[j] += v * src[j]
                        if first:
                            for j in range(IS):
                                dst[j] = 0.0
                if meta[p, 13]:
                    # folded pair: gw[f, e] = <beta_e Q_in^T, T[rows of e]>
                    for e in range(D):
                        n = elem[e0 + e, 2] * IS
                        d0 = elem[e0 + e, 0] * IS
                        s0 = elem[e0 + e, 4]
                        src = tb[d0:d0 + n]
                        gv = gam[s0:s0 + n]
                        acc = 0.0
                        for j in range(n):
                            acc += gv[j] * src[j]
                        gw[wb + e] = acc
                    continue
                # 2. Ghat = T Q_in, on the covered entries only
                if qi >= 0:
                    for k in range(c0, c0 + nc):
                        oh = cov[k] // I
                        q = cov[k] - oh * I
                        dst = hb[cov[k] * S:cov[k] * S + S]
                        for s in range(S):
                            dst[s] = 0.0
                        for i in range(I):
                            v = qmat[qi + i * I + q]
                            if v != 0.0:
                                src = tb[oh * IS + i * S:oh * IS + i * S + S]
                                for s in range(S):
                                    dst[s] += v * src[s]
                    h = hb
                else:
                    h = tb
                # 3. gw[f, e] = <beta_e, Ghat>
                for e in range(D):
                    oo = elem[e0 + e, 0]
                    ii = elem[e0 + e, 1]
                    do = elem[e0 + e, 2]
                    di = elem[e0 + e, 3]
                    r = elem[e0 + e, 4]
                    acc = 0.0
                    for a in range(do):
                        for b in range(di):
                            base = (oo + a) * IS + (ii + b) * S
                            src = h[base:base + S]
                            val = vals[r]
                            for s in range(S):
                                acc += val[s] * src[s]
                            r += 1
                    gw[wb + e] = acc

    _KERNELS["forward_par"] = numba.njit(parallel=True, fastmath=True, cache=True)(forward)
    _KERNELS["transpose_par"] = numba.njit(parallel=True, fastmath=True, cache=True)(transpose)
    _KERNELS["forward_ser"] = numba.njit(parallel=False, fastmath=True, cache=True)(forward)
    _KERNELS["transpose_ser"] = numba.njit(parallel=False, fastmath=True, cache=True)(transpose)
    return _KERNELS


def fused_available() -> bool:
    """Whether numba (the fused kernel's compiler) can be imported."""
    try:
        import numba  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


# Layers with fewer multiply-adds than this per expansion run on one thread (thread start-up would dominate).
_PARALLEL_MIN_WORK = 200_000


class FusedPlan:
    """Packed structure of a layer's block expansion for the fused CPU kernels (one dtype).

    Args:
        layer: the :class:`~equitp.e2.LayerBasis`.
        dtype: ``torch.float32`` or ``torch.float64``.
        fold: apply ``Q_in`` to the stored blocks (``beta_e Q_in^T``, ``d_out x I x S`` numbers per element) for pairs
            with a dense ``Q_in``: ``None`` where the folded blocks stay at most a quarter of the padded basis (the
            pair's ``folded`` flag), or ``True`` / ``False`` for every such pair (tests).

    Attributes:
        i64: int64 header, then per representation pair ``meta`` ``(P, 14)`` (``n_out, n_in, O, I, D``, weight
            start, offsets of its output / input field starts, of its elements and covered entries, their number,
            offsets of ``Q_out`` / ``Q_in`` in the changes of basis (-1: identity), folded flag), the task offsets
            and the field start channels.
        i32: the element table ``(sum D, 5)`` (row, column, ``d_out``, ``d_in``, offset of its values) and the covered
            irreps-space entries ``o * I + i``.
        flt: the distinct irreps-block rows ``(rows, S)`` (elements with identical blocks share them), the distinct
            folded blocks ``beta_e Q_in^T`` (flat), the distinct changes of basis (``O x O`` each).
        stored_bytes: bytes of the three arrays (everything the expansion keeps for this dtype).
    """

    def __init__(self, layer: Any, dtype: torch.dtype, fold: bool | None = None):
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"the fused block kernel needs float32 or float64; got {dtype}")
        npd = np.float32 if dtype == torch.float32 else np.float64
        S = layer.num_points
        meta, task_off, fstart, elem, cov = [], [0], [], [], []
        rows: list[np.ndarray] = []
        row_of: dict[bytes, int] = {}
        n_rows = 0
        q_blocks: list[np.ndarray] = []
        q_of: dict[Any, int] = {}
        q_len = 0
        bufsize = 1
        work = 0
        in_starts = {}
        for start, r in zip(layer.in_type.field_starts, layer.in_type.representations):
            in_starts.setdefault(r.name, []).append(start)
        out_starts = {}
        for start, r in zip(layer.out_type.field_starts, layer.out_type.representations):
            out_starts.setdefault(r.name, []).append(start)

        def q_offset(rep) -> int:
            nonlocal q_len
            if rep.identity_change_of_basis:
                return -1
            if rep not in q_of:
                q_of[rep] = q_len
                q_blocks.append(np.asarray(rep.change_of_basis, dtype=np.float64).reshape(-1))
                q_len += rep.size * rep.size
            return q_of[rep]

        gam: list[np.ndarray] = []
        gam_of: dict[bytes, int] = {}
        n_gam = 0
        for p in layer.pairs:
            b = p.basis
            O, I, D = b.out_size, b.in_size, b.dim
            folded = p.folded if fold is None else bool(fold) and not b.in_repr.identity_change_of_basis
            q_in = b.in_repr.change_of_basis
            of = len(fstart)
            fstart += out_starts[b.out_repr.name]
            if_ = len(fstart)
            fstart += in_starts[b.in_repr.name]
            covered = np.zeros((O, I), dtype=bool)
            e0 = len(elem)
            for e in range(D):
                do, di = int(b.out_dim[e]), int(b.in_dim[e])
                oo, ii = int(b.out_offset[e]), int(b.in_offset[e])
                blk = np.ascontiguousarray(b.values[e, :do, :di])
                if folded:  # beta_e Q_in^T: (d_out, I, S), stored flat
                    g = np.ascontiguousarray(np.einsum("abs,qb->aqs", blk, q_in[:, ii:ii + di]).reshape(-1))
                    key = g.tobytes()
                    r = gam_of.get(key)
                    if r is None:
                        r = gam_of[key] = n_gam
                        gam.append(g)
                        n_gam += g.size
                else:
                    key = blk.tobytes() + bytes([do, di])
                    r = row_of.get(key)
                    if r is None:
                        r = row_of[key] = n_rows
                        rows.append(blk.reshape(do * di, S))
                        n_rows += do * di
                elem.append((oo, ii, do, di, r))
                covered[oo:oo + do, ii:ii + di] = True
            c0 = len(cov)
            if not folded:
                cov += np.nonzero(covered.reshape(-1))[0].tolist()
            meta.append((p.n_out, p.n_in, O, I, D, p.start, of, if_, e0, c0, len(cov) - c0,
                         q_offset(b.out_repr), -1 if folded else q_offset(b.in_repr), int(folded)))
            F = p.n_out * p.n_in
            task_off.append(task_off[-1] + F)
            bufsize = max(bufsize, O * I * S)
            if folded:
                work += F * (int(b.out_dim.sum()) * I * S + O * O * I * S)
            else:
                work += F * (b.nnz + O * I * S * (O + I))
        self.gam = np.ascontiguousarray(np.concatenate(gam) if gam else np.zeros(1), dtype=npd)
        self.meta = np.array(meta, dtype=np.int64).reshape(-1, _META)
        self.task_off = np.array(task_off, dtype=np.int64)
        self.fstart = np.array(fstart, dtype=np.int64)
        self.elem = np.array(elem, dtype=np.int32).reshape(-1, 5)
        self.vals = np.ascontiguousarray(np.concatenate(rows, 0) if rows else np.zeros((0, S)), dtype=npd)
        self.cov = np.array(cov, dtype=np.int32)
        self.qmat = np.ascontiguousarray(np.concatenate(q_blocks) if q_blocks else np.zeros(1), dtype=npd)
        self.bufsize = int(bufsize)
        self.work = int(work)
        self.c_out = layer.out_type.size
        self.c_in = layer.in_type.size
        self.num_points = S
        self.dim = layer.dim
        self.dtype = dtype
        # every filter entry written by some pair? (else the filter starts from zeros)
        covered_channels = sum(p.n_out * p.basis.out_size * p.n_in * p.basis.in_size for p in layer.pairs)
        self.full = covered_channels == self.c_out * self.c_in
        # packed for the kernels (few arguments: numba's per-call cost grows with their number)
        P = len(self.meta)
        head = 15
        o_meta = head
        o_task = o_meta + self.meta.size
        o_fs = o_task + self.task_off.size
        o_end = o_fs + self.fstart.size
        self.i64 = np.concatenate([
            np.array([P, o_meta, o_task, o_fs, o_end, 0, len(self.elem), self.elem.size, self.cov.size,
                      len(self.vals), self.vals.size, self.vals.size + self.gam.size, self.c_in, self.bufsize, S],
                     dtype=np.int64),
            self.meta.reshape(-1), self.task_off, self.fstart,
        ])
        self.i32 = np.concatenate([self.elem.reshape(-1), self.cov]).astype(np.int32)
        self.flt = np.ascontiguousarray(np.concatenate([self.vals.reshape(-1), self.gam, self.qmat]), dtype=npd)
        self.stored_bytes = int(self.i64.nbytes + self.i32.nbytes + self.flt.nbytes)
        self.n_tasks = int(self.task_off[-1])
        self.n_pairs = P
        del self.meta, self.task_off, self.fstart, self.elem, self.vals, self.gam, self.cov, self.qmat  # packed above
        self._entry: dict[str, Any] = {}

    def _kernel(self, name: str):
        """The compiled kernel's entry point for this plan's argument types (skips numba's dispatch)."""
        import numba

        threads = numba.get_num_threads()
        parallel = threads > 1 and self.work >= _PARALLEL_MIN_WORK
        key = name + ("_par" if parallel else "_ser")
        entry = self._entry.get(key)
        if entry is None:
            disp = _build_kernels()[key]
            npd = self.flt.dtype.type
            x = np.zeros(1, dtype=npd)
            disp(self.i64, self.i32, self.flt, x, x, 0)  # compile (or load from cache) for these types
            sig = [s for s in disp.signatures if s[3].dtype == numba.from_dtype(self.flt.dtype)][0]
            entry = self._entry[key] = disp.overloads[sig].entry_point
        return entry, (min(threads, self.n_tasks) if parallel else 1)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """``(dim,)`` weights -> ``(C_out, C_in, S)`` filter."""
        w = w.detach().contiguous()
        shape = (self.c_out, self.c_in, self.num_points)
        out = torch.empty(shape, dtype=w.dtype) if self.full else torch.zeros(shape, dtype=w.dtype)
        if out.numel() and self.dim:
            kern, n_chunks = self._kernel("forward")
            kern(self.i64, self.i32, self.flt, w.numpy(), out.view(-1).numpy(), n_chunks)
        return out

    def transpose(self, g: torch.Tensor) -> torch.Tensor:
        """``(C_out, C_in, S)`` filter gradient -> ``(dim,)`` weight gradient."""
        g = g.detach().contiguous()
        gw = torch.empty(self.dim, dtype=g.dtype)
        if self.dim:
            kern, n_chunks = self._kernel("transpose")
            kern(self.i64, self.i32, self.flt, g.view(-1).numpy(), gw.numpy(), n_chunks)
        return gw


class _Fused(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, plan: FusedPlan) -> torch.Tensor:
        ctx.plan = plan
        return plan.forward(w)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor):
        gw = None
        if ctx.needs_input_grad[0]:
            gw = _FusedTransposed.apply(g, ctx.plan)
        return gw, None


class _FusedTransposed(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, g: torch.Tensor, plan: FusedPlan) -> torch.Tensor:
        ctx.plan = plan
        return plan.transpose(g)

    @staticmethod
    def backward(ctx: Any, gg: torch.Tensor):
        out = None
        if ctx.needs_input_grad[0]:
            out = _Fused.apply(gg, ctx.plan)
        return out, None


def fused_expand(plan: FusedPlan, w: torch.Tensor) -> torch.Tensor:
    """The layer's filter ``(C_out, C_in, S)`` from its weights ``(dim,)`` (CPU, float32/float64), with autograd."""
    if w.device.type != "cpu" or w.dtype != plan.dtype:
        raise ValueError(f"the fused block kernel needs {plan.dtype} CPU weights; got {w.dtype} on {w.device}")
    if torch.is_grad_enabled() and w.requires_grad:
        return _Fused.apply(w, plan)
    return plan.forward(w)
