"""Multithreaded, vectorised CPU kernels (numba) for the Clebsch–Gordan tensor product.

Two kernels evaluate every pass of a `TensorProductDescriptor`:

* `_forward_form`: ``C[c, k] += sum W A[a, i] B[b, j] coef`` over the paths of a plan (see
  ``descriptors._tensor_product._Plan``). The forward pass is ``(A, B, C) = (in1, in2, out)``; the gradients with
  respect to ``in1`` and ``in2`` are the same kernel on the permuted plan (``(in2, grad_out) -> in1`` and
  ``(in1, grad_out) -> in2``).
* `_weight_form`: ``gW[...] += sum A[a, i] B[b, j] G[c, k] coef``, the gradient with respect to the weights.

Items (rows) are distributed over threads in chunks; each item's operands are transposed into small thread-local
buffers in ``ir_mul`` order so the innermost loops run over contiguous channels and vectorise.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

__all__ = ["tensor_product_cpu"]

_FORM, _HASW, _WOFF, _WA, _WB, _WC = 0, 1, 2, 3, 4, 5
_AOFF, _AMUL, _ADIM, _BOFF, _BMUL, _BDIM, _COFF, _CMUL, _CDIM, _N0, _N1 = 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16
_ASTR, _BSTR, _CSTR = 17, 18, 19


@numba.njit(fastmath=True, cache=True)
def _load(src, dst, segs, transpose):
    # src: one item (dim,) in the global layout; dst: local buffer in ir_mul order (X[u, i] at off + i * mul + u)
    if not transpose:
        dst[:] = src
        return
    for s in range(segs.shape[0]):
        off = segs[s, 0]
        mul = segs[s, 1]
        d = segs[s, 2]
        if d == 1:
            dst[off : off + mul] = src[off : off + mul]
            continue
        blk = src[off : off + mul * d]
        for i in range(d):
            row = dst[off + i * mul : off + (i + 1) * mul]
            col = blk[i:]
            for u in range(mul):
                row[u] = col[u * d]


@numba.njit(fastmath=True, cache=True)
def _store(src, dst, segs, transpose):
    if not transpose:
        dst[:] = src
        return
    for s in range(segs.shape[0]):
        off = segs[s, 0]
        mul = segs[s, 1]
        d = segs[s, 2]
        if d == 1:
            dst[off : off + mul] = src[off : off + mul]
            continue
        blk = dst[off : off + mul * d]
        for i in range(d):
            row = src[off + i * mul : off + (i + 1) * mul]
            col = blk[i:]
            for u in range(mul):
                col[u * d] = row[u]


@numba.njit(fastmath=True, cache=True)
def _contract_T(T, Ab, Bb, a_off, a_mul, a_str, b_off, b_str, b, ci, cj, ck, cv, n0, n1, same_ab):
    # T[k * a_mul + a] += coef * A[a, i] * B[b, j]   (same_ab: B indexed by a too); X[u, i] is at off + i * str + u
    # (slices instead of offset indexing: numba's negative-index wraparound would block vectorisation)
    for n in range(n0, n1):
        ia = a_off + ci[n] * a_str
        jb = b_off + cj[n] * b_str
        tk = ck[n] * a_mul
        Ts = T[tk : tk + a_mul]
        As = Ab[ia : ia + a_mul]
        if same_ab:
            c = cv[n]
            Bs = Bb[jb : jb + a_mul]
            for a in range(a_mul):
                Ts[a] += c * As[a] * Bs[a]
        else:
            c = cv[n] * Bb[jb + b]
            for a in range(a_mul):
                Ts[a] += c * As[a]


@numba.njit(fastmath=True, cache=True)
def _zero(X, n):
    Xs = X[:n]
    for r in range(n):
        Xs[r] = 0.0


@numba.njit(fastmath=True, cache=True)
def _scaled_add(Cb, c_off, c_str, T, n_mul, c_dim, Wrow, w_off, w_str, hasw):
    # Cb[c_off + k * c_str + a] += W[w_off + a * w_str] * T[k * n_mul + a]
    for k in range(c_dim):
        cr = c_off + k * c_str
        Cs = Cb[cr : cr + n_mul]
        Ts = T[k * n_mul : (k + 1) * n_mul]
        if not hasw:
            for a in range(n_mul):
                Cs[a] += Ts[a]
        elif w_str == 1:
            Ws = Wrow[w_off : w_off + n_mul]
            for a in range(n_mul):
                Cs[a] += Ws[a] * Ts[a]
        else:
            for a in range(n_mul):
                Cs[a] += Wrow[w_off + a * w_str] * Ts[a]


@numba.njit(fastmath=True, cache=True)
def _mix(Cb, c_off, c_str, c_mul, T, a_mul, c_dim, Wrow, w_off, wa, wc):
    # Cb[c_off + k * c_str + c] += sum_a T[k * a_mul + a] * W[w_off + a * wa + c * wc]
    for k in range(c_dim):
        cr = c_off + k * c_str
        Cs = Cb[cr : cr + c_mul]
        for a in range(a_mul):
            t = T[k * a_mul + a]
            wr = w_off + a * wa
            if wc == 1:
                Ws = Wrow[wr : wr + c_mul]
                for c in range(c_mul):
                    Cs[c] += t * Ws[c]
            else:
                for c in range(c_mul):
                    Cs[c] += t * Wrow[wr + c * wc]


@numba.njit(fastmath=True, cache=True)
def _item_ff(table, ci, cj, ck, cv, Wrow, Ab, Bb, Cb, T, weightless):
    """One item of the forward form: ``Cb += sum_paths W A B coef`` (local ir_mul buffers)."""
    npath = table.shape[0]
    for p in range(npath):
        form = table[p, _FORM]
        hasw = table[p, _HASW] != 0
        if not hasw and not weightless:
            continue
        w_off = table[p, _WOFF]
        wa = table[p, _WA]
        wb = table[p, _WB]
        wc = table[p, _WC]
        a_off = table[p, _AOFF]
        a_mul = table[p, _AMUL]
        b_off = table[p, _BOFF]
        b_mul = table[p, _BMUL]
        c_off = table[p, _COFF]
        c_mul = table[p, _CMUL]
        c_dim = table[p, _CDIM]
        n0 = table[p, _N0]
        n1 = table[p, _N1]
        a_str = table[p, _ASTR]
        b_str = table[p, _BSTR]
        c_str = table[p, _CSTR]
        if form == 1:  # uvu: C[a, k] += W[a, b] T_b[k, a]
            for b in range(b_mul):
                _zero(T, c_dim * a_mul)
                _contract_T(T, Ab, Bb, a_off, a_mul, a_str, b_off, b_str, b, ci, cj, ck, cv, n0, n1, False)
                _scaled_add(Cb, c_off, c_str, T, a_mul, c_dim, Wrow, w_off + b * wb, wa, hasw)
        elif form == 2:  # uvv: C[b, k] += W[a, b] T_a[k, b]   (roles of a and b swapped)
            for a in range(a_mul):
                _zero(T, c_dim * b_mul)
                _contract_T(T, Bb, Ab, b_off, b_mul, b_str, a_off, a_str, a, cj, ci, ck, cv, n0, n1, False)
                _scaled_add(Cb, c_off, c_str, T, b_mul, c_dim, Wrow, w_off + a * wa, wb, hasw)
        elif form == 0:  # uvw: C[c, k] += sum_a W[a, b, c] T_b[k, a]
            for b in range(b_mul):
                _zero(T, c_dim * a_mul)
                _contract_T(T, Ab, Bb, a_off, a_mul, a_str, b_off, b_str, b, ci, cj, ck, cv, n0, n1, False)
                _mix(Cb, c_off, c_str, c_mul, T, a_mul, c_dim, Wrow, w_off + b * wb, wa, wc)
        elif form == 3:  # uuw: C[c, k] += sum_a W[a, c] T[k, a]
            _zero(T, c_dim * a_mul)
            _contract_T(T, Ab, Bb, a_off, a_mul, a_str, b_off, b_str, 0, ci, cj, ck, cv, n0, n1, True)
            if hasw:
                _mix(Cb, c_off, c_str, c_mul, T, a_mul, c_dim, Wrow, w_off, wa, wc)
            else:
                for k in range(c_dim):
                    s = 0.0
                    for a in range(a_mul):
                        s += T[k * a_mul + a]
                    # a weightless path: constant along the output channel (e.g. d/dy of a weightless uvu)
                    cr = c_off + k * c_str
                    for c in range(c_mul):
                        Cb[cr + c] += s
        else:  # uuu: C[a, k] += W[a] T[k, a]
            _zero(T, c_dim * a_mul)
            _contract_T(T, Ab, Bb, a_off, a_mul, a_str, b_off, b_str, 0, ci, cj, ck, cv, n0, n1, True)
            _scaled_add(Cb, c_off, c_str, T, a_mul, c_dim, Wrow, w_off, wa, hasw)


@numba.njit(nogil=True, fastmath=True, cache=True)
def _forward_form(table, ci, cj, ck, cv, W, w_batched, A, B, C, segA, segB, segC, transpose, tsize, z0, z1, weightless):
    Ab = np.empty(A.shape[1], dtype=A.dtype)
    Bb = np.empty(B.shape[1], dtype=A.dtype)
    Cb = np.empty(C.shape[1], dtype=A.dtype)
    T = np.empty(tsize, dtype=A.dtype)
    for z in range(z0, z1):
        _load(A[z], Ab, segA, transpose)
        _load(B[z], Bb, segB, transpose)
        _zero(Cb, C.shape[1])
        _item_ff(table, ci, cj, ck, cv, W[z] if w_batched else W[0], Ab, Bb, Cb, T, weightless)
        _store(Cb, C[z], segC, transpose)



@numba.njit(fastmath=True, cache=True)
def _dot_into(GW, w_off, w_str, T, n_mul, g_dim, Gb, g_off, g_str):
    # GW[w_off + a * w_str] += sum_k T[k * n_mul + a] * G[g_off + k * g_str + a]
    for k in range(g_dim):
        Ts = T[k * n_mul : (k + 1) * n_mul]
        gr = g_off + k * g_str
        Gs = Gb[gr : gr + n_mul]
        if w_str == 1:
            Ws = GW[w_off : w_off + n_mul]
            for a in range(n_mul):
                Ws[a] += Ts[a] * Gs[a]
        else:
            for a in range(n_mul):
                GW[w_off + a * w_str] += Ts[a] * Gs[a]


@numba.njit(fastmath=True, cache=True)
def _outer_into(GW, w_off, wa, wc, T, a_mul, g_dim, Gb, g_off, g_str, g_mul):
    # GW[w_off + a * wa + c * wc] += sum_k T[k * a_mul + a] * G[g_off + k * g_str + c]
    for k in range(g_dim):
        gr = g_off + k * g_str
        Gs = Gb[gr : gr + g_mul]
        for a in range(a_mul):
            t = T[k * a_mul + a]
            wr = w_off + a * wa
            if wc == 1:
                Ws = GW[wr : wr + g_mul]
                for c in range(g_mul):
                    Ws[c] += t * Gs[c]
            else:
                for c in range(g_mul):
                    GW[wr + c * wc] += t * Gs[c]


@numba.njit(fastmath=True, cache=True)
def _item_wf(table, ci, cj, ck, cv, GWrow, Ab, Bb, Gb, T):
    """One item of the weight form: ``GWrow += sum_paths A B G coef``."""
    npath = table.shape[0]
    for p in range(npath):
        form = table[p, _FORM]
        w_off = table[p, _WOFF]
        wa = table[p, _WA]
        wb = table[p, _WB]
        wc = table[p, _WC]
        a_off = table[p, _AOFF]
        a_mul = table[p, _AMUL]
        b_off = table[p, _BOFF]
        b_mul = table[p, _BMUL]
        g_off = table[p, _COFF]
        g_mul = table[p, _CMUL]
        g_dim = table[p, _CDIM]
        n0 = table[p, _N0]
        n1 = table[p, _N1]
        a_str = table[p, _ASTR]
        b_str = table[p, _BSTR]
        g_str = table[p, _CSTR]
        if form == 0 or form == 1:
            for b in range(b_mul):
                _zero(T, g_dim * a_mul)
                _contract_T(T, Ab, Bb, a_off, a_mul, a_str, b_off, b_str, b, ci, cj, ck, cv, n0, n1, False)
                if form == 1:  # uvu: gW[a, b] += sum_k T[k, a] G[k, a]
                    _dot_into(GWrow, w_off + b * wb, wa, T, a_mul, g_dim, Gb, g_off, g_str)
                else:  # uvw: gW[a, b, c] += sum_k T[k, a] G[k, c]
                    _outer_into(GWrow, w_off + b * wb, wa, wc, T, a_mul, g_dim, Gb, g_off, g_str, g_mul)
        elif form == 2:  # uvv: gW[a, b] += sum_k T_a[k, b] G[k, b]
            for a in range(a_mul):
                _zero(T, g_dim * b_mul)
                _contract_T(T, Bb, Ab, b_off, b_mul, b_str, a_off, a_str, a, cj, ci, ck, cv, n0, n1, False)
                _dot_into(GWrow, w_off + a * wa, wb, T, b_mul, g_dim, Gb, g_off, g_str)
        else:
            _zero(T, g_dim * a_mul)
            _contract_T(T, Ab, Bb, a_off, a_mul, a_str, b_off, b_str, 0, ci, cj, ck, cv, n0, n1, True)
            if form == 3:  # uuw: gW[a, c] += sum_k T[k, a] G[k, c]
                _outer_into(GWrow, w_off, wa, wc, T, a_mul, g_dim, Gb, g_off, g_str, g_mul)
            else:  # uuu: gW[a] += sum_k T[k, a] G[k, a]
                _dot_into(GWrow, w_off, wa, T, a_mul, g_dim, Gb, g_off, g_str)


@numba.njit(nogil=True, fastmath=True, cache=True)
def _weight_form(table, ci, cj, ck, cv, GW, w_batched, A, B, G, segA, segB, segG, transpose, tsize, z0, z1, q):
    # GW: (N, numel) if w_batched else (nchunks, numel) partial sums, this call owning row q
    numel = GW.shape[1]
    Ab = np.empty(A.shape[1], dtype=A.dtype)
    Bb = np.empty(B.shape[1], dtype=A.dtype)
    Gb = np.empty(G.shape[1], dtype=A.dtype)
    T = np.empty(tsize, dtype=A.dtype)
    if not w_batched:
        _zero(GW[q], numel)
    for z in range(z0, z1):
        _load(A[z], Ab, segA, transpose)
        _load(B[z], Bb, segB, transpose)
        _load(G[z], Gb, segG, transpose)
        GWrow = GW[z] if w_batched else GW[q]
        if w_batched:
            _zero(GWrow, numel)
        _item_wf(table, ci, cj, ck, cv, GWrow, Ab, Bb, Gb, T)


@numba.njit(nogil=True, fastmath=True, cache=True)
def _backward_fused(
    t1, i1, j1, k1, v1, t2, i2, j2, k2, v2, tw, iw, jw, kw, vw,
    W, w_batched, X, Y, G, GX, GY, GW, need_x, need_y, need_w,
    seg1, seg2, seg3, transpose, tsize, weightless, z0, z1, q,
):  # fmt: skip
    """All input gradients of the forward product in one pass over the items (each operand read once):
    ``GX = ff(t1; W, Y, G)``, ``GY = ff(t2; W, X, G)``, ``GW = wf(tw; X, Y, G)``."""
    Xb = np.empty(X.shape[1], dtype=X.dtype)
    Yb = np.empty(Y.shape[1], dtype=X.dtype)
    Gb = np.empty(G.shape[1], dtype=X.dtype)
    GXb = np.empty(X.shape[1], dtype=X.dtype)
    GYb = np.empty(Y.shape[1], dtype=X.dtype)
    T = np.empty(tsize, dtype=X.dtype)
    numel = GW.shape[1]
    if need_w and not w_batched:
        _zero(GW[q], numel)
    for z in range(z0, z1):
        _load(X[z], Xb, seg1, transpose)
        _load(Y[z], Yb, seg2, transpose)
        _load(G[z], Gb, seg3, transpose)
        Wrow = W[z] if w_batched else W[0]
        if need_x:
            _zero(GXb, X.shape[1])
            _item_ff(t1, i1, j1, k1, v1, Wrow, Yb, Gb, GXb, T, weightless)
            _store(GXb, GX[z], seg1, transpose)
        if need_y:
            _zero(GYb, Y.shape[1])
            _item_ff(t2, i2, j2, k2, v2, Wrow, Xb, Gb, GYb, T, weightless)
            _store(GYb, GY[z], seg2, transpose)
        if need_w:
            GWrow = GW[z] if w_batched else GW[q]
            if w_batched:
                _zero(GWrow, numel)
            _item_wf(tw, iw, jw, kw, vw, GWrow, Xb, Yb, Gb, T)



def _segs(irreps) -> np.ndarray:
    rows = [(s.start, mul, ir.dim) for s, (mul, ir) in zip(irreps.slices(), irreps)]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


class _CpuPlan:
    """numpy views of a descriptor's plan for the kernels, cached per (descriptor, dtype)."""

    def __init__(self, desc, np_dtype):
        plan = desc.plan
        self.segs = {1: _segs(desc.irreps_in1), 2: _segs(desc.irreps_in2), 3: _segs(desc.irreps_out)}
        self.forms = {}
        for t in (1, 2, 3):
            table, ci, cj, ck, cv = plan.forms[t]
            self.forms[t] = (table, ci, cj, ck, cv.astype(np_dtype))
        table, ci, cj, ck, cv = plan.weight_form
        self.weight_form = (table, ci, cj, ck, cv.astype(np_dtype))
        tsize = 1
        for table, *_ in list(self.forms.values()) + [self.weight_form]:
            if len(table):
                # T holds c_dim x max(a_mul, b_mul)
                tsize = max(tsize, int((table[:, 14] * np.maximum(table[:, 7], table[:, 10])).max()))
        self.tsize = tsize


_plans = {}


def _get_plan(desc, dtype):
    key = (desc, dtype)
    p = _plans.get(key)
    if p is None:
        p = _CpuPlan(desc, np.float32 if dtype == torch.float32 else np.float64)
        _plans[key] = p
    return p


_pool = None
_pool_size = 0


def _num_threads() -> int:
    return max(1, torch.get_num_threads())


def _parallel(fn, n: int, *args):
    """Run ``fn(*args, z0, z1, chunk_index)`` over ``n`` rows split in one chunk per thread (the kernels release the
    GIL). Returns the number of chunks."""
    global _pool, _pool_size
    nt = min(_num_threads(), max(1, n // 16))
    bounds = [(n * i) // nt for i in range(nt + 1)]
    if nt == 1:
        fn(*args, 0, n, 0)
        return 1
    if _pool is None or _pool_size < nt:
        from concurrent.futures import ThreadPoolExecutor

        _pool = ThreadPoolExecutor(max_workers=nt, thread_name_prefix="equitp-cpu")
        _pool_size = nt
    futures = [_pool.submit(fn, *args, bounds[i], bounds[i + 1], i) for i in range(1, nt)]
    fn(*args, bounds[0], bounds[1], 0)
    for f in futures:
        f.result()
    return nt


_ROLES = {3: (1, 2), 1: (2, 3), 2: (1, 3)}


def tensor_product_cpu(desc, target: int, operands, weightless: bool = True):
    """Evaluate ``dS/d(operand target)`` of the descriptor's 4-linear form on the CPU.

    Args:
        desc: a ``TensorProductDescriptor``.
        target: 0 (weight), 1 (in1), 2 (in2) or 3 (out).
        operands: a list of 4 tensors indexed like the operands; ``operands[target]`` is ignored. Batched operands are
            2-D ``(N, dim)`` contiguous; the weight is ``(N, numel)`` (per item) or ``(numel,)`` (shared).

    Returns:
        The target operand: ``(N, dim)``, or ``(numel,)`` for shared weights.
    """
    W = operands[0]
    ref = operands[1] if target != 1 else operands[2]
    dtype = ref.dtype
    N = ref.shape[0]
    w_batched = W is not None and W.dim() == 2
    plan = _get_plan(desc, dtype)
    transpose = desc.layout == "mul_ir"
    if target == 0:
        numel = desc.weight_numel
        A, B, G = operands[1], operands[2], operands[3]
        if w_batched:
            out = torch.empty((N, numel), dtype=dtype)
            if N == 0 or numel == 0:
                return out.zero_()
            gw = out
        else:
            if N == 0 or numel == 0:
                return torch.zeros(numel, dtype=dtype)
            gw = torch.empty((_num_threads(), numel), dtype=dtype)
        table, ci, cj, ck, cv = plan.weight_form
        nch = _parallel(
            _weight_form, N, table, ci, cj, ck, cv, gw.numpy(), w_batched, A.numpy(), B.numpy(), G.numpy(),
            plan.segs[1], plan.segs[2], plan.segs[3], transpose, plan.tsize,
        )  # fmt: skip
        return out if w_batched else gw[:nch].sum(0)

    a, b = _ROLES[target]
    A, B = operands[a], operands[b]
    dim_c = desc.operand_dim(target)
    out = torch.empty((N, dim_c), dtype=dtype)
    if N == 0:
        return out
    if W is None or W.numel() == 0:
        Wn = np.zeros((1, 1), dtype=out.numpy().dtype)
        w_batched = False
    else:
        Wn = W.numpy() if w_batched else W.reshape(1, -1).numpy()
    table, ci, cj, ck, cv = plan.forms[target]
    _parallel(
        lambda *args: _forward_form(*args[:-1], weightless), N, table, ci, cj, ck, cv, Wn, w_batched, A.numpy(),
        B.numpy(), out.numpy(), plan.segs[a], plan.segs[b], plan.segs[target], transpose, plan.tsize,
    )  # fmt: skip
    return out


def tensor_product_cpu_backward(desc, operands, needs, weightless: bool = True):
    """All requested input gradients of the forward product in one fused pass.

    Args:
        desc: the descriptor.
        operands: ``[W, x, y, grad_out]`` (``W`` may be None without weights).
        needs: booleans ``(need_weight, need_x, need_y)``.

    Returns:
        ``(grad_weight, grad_x, grad_y)`` (None where not needed). Equal to ``tensor_product_cpu`` with targets 0, 1, 2.
    """
    W, X, Y, G = operands
    dtype = X.dtype
    N = X.shape[0]
    need_w, need_x, need_y = needs
    need_w = bool(need_w and W is not None and desc.weight_numel > 0)
    w_batched = W is not None and W.dim() == 2
    plan = _get_plan(desc, dtype)
    np_dtype = X.numpy().dtype
    gx = torch.empty((N, X.shape[1]), dtype=dtype) if need_x else None
    gy = torch.empty((N, Y.shape[1]), dtype=dtype) if need_y else None
    numel = desc.weight_numel
    if need_w:
        gw = torch.empty((N, numel), dtype=dtype) if w_batched else torch.empty((_num_threads(), numel), dtype=dtype)
    else:
        gw = None
    if N == 0:
        if need_w and not w_batched:
            gw = torch.zeros(numel, dtype=dtype)
        return gw, gx, gy
    if W is None or W.numel() == 0:
        Wn = np.zeros((1, 1), dtype=np_dtype)
        w_batched_k = False
    else:
        Wn = W.numpy() if w_batched else W.reshape(1, -1).numpy()
        w_batched_k = w_batched
    dummy = np.zeros((1, 1), dtype=np_dtype)
    nch = _parallel(
        _backward_fused, N, *plan.forms[1], *plan.forms[2], *plan.weight_form,
        Wn, w_batched_k, X.numpy(), Y.numpy(), G.numpy(),
        gx.numpy() if need_x else dummy, gy.numpy() if need_y else dummy, gw.numpy() if need_w else dummy,
        need_x, need_y, need_w, plan.segs[1], plan.segs[2], plan.segs[3], desc.layout == "mul_ir", plan.tsize,
        weightless,
    )  # fmt: skip
    if need_w and not w_batched:
        gw = gw[:nch].sum(0)
    return gw, gx, gy
