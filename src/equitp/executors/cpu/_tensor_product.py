"""Multithreaded, vectorised CPU kernels (numba) for the Clebsch–Gordan tensor product.

Two forms evaluate every pass of a `TensorProductDescriptor`:

* the forward form ``C[c, k] += sum W A[a, i] B[b, j] coef`` over the paths of a plan (see
  ``descriptors._tensor_product._Plan``). The forward pass is ``(A, B, C) = (in1, in2, out)``; the gradients with
  respect to ``in1`` and ``in2`` are the same form on the permuted plan (``(in2, grad_out) -> in1`` and
  ``(in1, grad_out) -> in2``);
* the weight form ``gW[...] += sum A[a, i] B[b, j] G[c, k] coef``, the gradient with respect to the weights.

Each form has kernels of three families, chosen per plan (`_use_blocked`, `_uvw_eligible`; ``KERNEL_FAMILY`` forces
one in tests):

* per item, vectors over channels (`_forward_form`, `_weight_form`, `_backward_fused`): each item's operands are
  transposed into small thread-local buffers in ``ir_mul`` order so the innermost loops run over contiguous channels
  (channelwise ``uvu`` rows summed in registers: `_uvu_rows`);
* fully connected ``uvw`` products (`_uvw_forward` for the output alone, `_uvw_pass` for any set of outputs and
  gradients): per item and path ``T = CG(x, y)`` then ``O += T W``, or ``U = X W`` then ``O += CG(U, y)``, with
  register-blocked micro-kernels over the output channels;
* item-blocked, vectors over items (`_forward_form_blocked`, `_forward_flat`, `_forward_pairs`, `_weight_flat`):
  blocks of 32-64 items in lane buffers, for products with few channels (single-channel full products, tetris).

Items (rows) are distributed over threads in chunks (`_parallel`). Large outputs are written with non-temporal
stores where their layout allows (`_use_nt`, `_use_nt_flat`).
"""

from __future__ import annotations

import itertools

import numba
import numpy as np
import torch

from ._simd import (
    keepalive, load_at, prefetch, prefetch_l2, store_at, store_fence, unmanaged, vadd, vdeinterleave, vfma, vinterleave,
    vinterleave_nt, vload, vmul, vstore, vstore_nt, vsum, vtranspose, vwidth, vzero, wload, wstore, wtranspose, wwidth,
    wzero,
)
from ._threads import run_team

__all__ = ["tensor_product_cpu"]

_FORM, _HASW, _WOFF, _WA, _WB, _WC = 0, 1, 2, 3, 4, 5
_AOFF, _AMUL, _ADIM, _BOFF, _BMUL, _BDIM, _COFF, _CMUL, _CDIM, _N0, _N1 = 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16
_ASTR, _BSTR, _CSTR = 17, 18, 19


@numba.njit(fastmath=True, cache=True, inline="always")
def _copy_flat(src, s0, dst, d0, n):
    # dst.flat[d0 : d0 + n] = src.flat[s0 : s0 + n] (different arrays) by vector loads and stores, the last vector
    # moved back to end at n (it rewrites a few elements with the same values); shorter runs element by element.
    # Written out because LLVM's vectorised element loop steps 32 elements at a time and copies the rest (16 of a
    # 48-channel block) one by one
    VW = vwidth(dst)
    if n < VW:
        for u in range(n):
            store_at(dst, d0 + u, load_at(src, s0 + u))
        return
    u = 0
    while u + VW < n:
        vstore(dst, d0 + u, vload(src, s0 + u))
        u += VW
    vstore(dst, d0 + n - VW, vload(src, s0 + n - VW))


@numba.njit(fastmath=True, cache=True, inline="always")
def _load_row(src, z, dst, segs, transpose):
    # row z of the 2-D src (global layout) into the item buffer dst (ir_mul order: X[u, i] at off + i * mul + u), by
    # flat element indices: no views (each would update a reference count, an atomic operation; a few dozen per item
    # added up to ~15% of the fully connected kernel's time). Blocks of l = 1, 2, 3 are split into their components
    # a vector of channels at a time (vdeinterleave: one wide load and one shuffle per component), the rest of the
    # channels element by element
    n = src.shape[1]
    base = z * n
    if not transpose:
        _copy_flat(src, base, dst, 0, n)
        return
    VW = vwidth(dst)
    for s in range(segs.shape[0]):
        off = segs[s, 0]
        mul = segs[s, 1]
        d = segs[s, 2]
        b = base + off
        nv = mul - mul % VW
        if d == 1:
            _copy_flat(src, b, dst, off, mul)
            continue
        if nv and nv < mul:  # the last vector of channels moved back to end at mul (rewrites a few with the same values)
            nv = mul
        if d == 3:
            for u in range(0, nv, VW):
                v = min(u, mul - VW)
                vdeinterleave(src, b + 3 * v, 3, dst, off + v, mul)
        elif d == 5:
            for u in range(0, nv, VW):
                v = min(u, mul - VW)
                vdeinterleave(src, b + 5 * v, 5, dst, off + v, mul)
        elif d == 7:
            for u in range(0, nv, VW):
                v = min(u, mul - VW)
                vdeinterleave(src, b + 7 * v, 7, dst, off + v, mul)
        else:
            nv = 0
        for i in range(d):
            for u in range(nv, mul):
                store_at(dst, off + i * mul + u, load_at(src, b + u * d + i))


@numba.njit(fastmath=True, cache=True, inline="always")
def _store_row(src, dst, z, segs, transpose):
    # the item buffer src (ir_mul order) into row z of the 2-D dst (global layout), by flat element indices (the
    # inverse of _load_row, with vinterleave for l = 1, 2, 3)
    n = dst.shape[1]
    base = z * n
    if not transpose:
        _copy_flat(src, 0, dst, base, n)
        return
    VW = vwidth(src)
    for s in range(segs.shape[0]):
        off = segs[s, 0]
        mul = segs[s, 1]
        d = segs[s, 2]
        b = base + off
        nv = mul - mul % VW
        if d == 1:
            _copy_flat(src, off, dst, b, mul)
            continue
        if nv and nv < mul:  # as in _load_row: the last vector of channels moved back to end at mul
            nv = mul
        if d == 3:
            for u in range(0, nv, VW):
                v = min(u, mul - VW)
                vinterleave(src, off + v, mul, 3, dst, b + 3 * v)
        elif d == 5:
            for u in range(0, nv, VW):
                v = min(u, mul - VW)
                vinterleave(src, off + v, mul, 5, dst, b + 5 * v)
        elif d == 7:
            for u in range(0, nv, VW):
                v = min(u, mul - VW)
                vinterleave(src, off + v, mul, 7, dst, b + 7 * v)
        else:
            nv = 0
        for i in range(d):
            for u in range(nv, mul):
                store_at(dst, b + u * d + i, load_at(src, off + i * mul + u))


@numba.njit(fastmath=True, cache=True, inline="always")
def _store_row_nt(src, dst, z, segs, transpose):
    # _store_row with non-temporal vector stores (the row goes to memory without being read for ownership and without
    # displacing the caches). Only for layouts that _nt_layout accepts (rows and blocks in whole, aligned vectors of
    # channels; d = 1, 3, 5, 7) and a vector-aligned dst; the kernel calls store_fence at its end
    n = dst.shape[1]
    base = z * n
    VW = vwidth(src)
    if not transpose:
        _copy_nt(src, dst, base, n)
        return
    for s in range(segs.shape[0]):
        off = segs[s, 0]
        mul = segs[s, 1]
        d = segs[s, 2]
        b = base + off
        if d == 1:
            for u in range(0, mul, VW):
                vstore_nt(dst, b + u, vload(src, off + u))
        elif d == 3:
            for u in range(0, mul, VW):
                vinterleave_nt(src, off + u, mul, 3, dst, b + 3 * u)
        elif d == 5:
            for u in range(0, mul, VW):
                vinterleave_nt(src, off + u, mul, 5, dst, b + 5 * u)
        else:
            for u in range(0, mul, VW):
                vinterleave_nt(src, off + u, mul, 7, dst, b + 7 * u)


@numba.njit(fastmath=True, cache=True, inline="always")
def _cg_rows(Dst, d_off, d_str, Src, s_off, s_str, c_mul, Yb, b_off, b_str, b, ri, rs, cj, cv, n0, n1):
    # Dst[ri[n]] += cv[n] y[j_n] Src[rs[n]] over the CG entries n: one c_mul-wide multiply-add per entry
    for n in range(n0, n1):
        d = d_off + ri[n] * d_str
        r = s_off + rs[n] * s_str
        coef = cv[n] * Yb[b_off + cj[n] * b_str + b]
        Ds = Dst[d : d + c_mul]
        Ss = Src[r : r + c_mul]
        for c in range(c_mul):
            Ds[c] += coef * Ss[c]


@numba.njit(fastmath=True, cache=True, inline="always")
def _contract_T(T, Ab, Bb, a_off, a_mul, a_str, b_off, b_str, b, ci, cj, ck, cv, n0, n1, same_ab):
    # T[k * a_mul + a] += coef * A[a, i] * B[b, j]   (same_ab: B indexed by a too); X[u, i] is at off + i * str + u
    # (slices instead of offset indexing: numba's negative-index wraparound would block vectorisation)
    if not same_ab:
        _cg_rows(T, 0, a_mul, Ab, a_off, a_str, a_mul, Bb, b_off, b_str, b, ck, ci, cj, cv, n0, n1)
        return
    for n in range(n0, n1):
        ia = a_off + ci[n] * a_str
        jb = b_off + cj[n] * b_str
        tk = ck[n] * a_mul
        Ts = T[tk : tk + a_mul]
        As = Ab[ia : ia + a_mul]
        c = cv[n]
        Bs = Bb[jb : jb + a_mul]
        for a in range(a_mul):
            Ts[a] += c * As[a] * Bs[a]


@numba.njit(fastmath=True, cache=True, inline="always")
def _zero(X, n):
    for r in range(n):
        store_at(X, r, 0.0)


@numba.njit(fastmath=True, cache=True, inline="always")
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


@numba.njit(fastmath=True, cache=True, inline="always")
def _mix(Cb, c_off, c_str, c_mul, T, a_mul, c_dim, Wrow, w_off, wa, wc):
    # Cb[c_off + k * c_str + c] += sum_a T[k * a_mul + a] * W[w_off + a * wa + c * wc]
    if c_mul == 1 and wa == 1:
        # one output channel (e.g. the gradient of a channelwise product w.r.t. its single-channel input): dots
        Ws = Wrow[w_off : w_off + a_mul]
        for k in range(c_dim):
            Ts = T[k * a_mul : (k + 1) * a_mul]
            acc = 0.0
            for a in range(a_mul):
                acc += Ts[a] * Ws[a]
            Cb[c_off + k * c_str] += acc
        return
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


@numba.njit(fastmath=True, cache=True, inline="always")
def _uvu_rows(Cb, c_off, c_str, Ab, a_off, a_str, a_mul, Bb, b_off, b_str, b, Wrow, w_off, ci, cj, ck, cv, n0, n1):
    # C[k, a] += W[a] sum_{n: ck[n] = k} cv[n] B[j_n, b] A[i_n, a] over the entries n0:n1 of a path with contiguous
    # weights, sorted by output row k (_sort_by_target): per output row and chunk of eight (then four, then one) vectors
    # of channels the sum stays in registers, then one multiply by W and one read-modify-write of C. Eight vectors (64
    # float32 channels) per pass, so an entry's coefficient and indices are loaded once for all of benzene's channels,
    # and load_at for the index arrays (no negative-index selects): nequip-revmd17-benzene forward 72-74 -> 58-61 ms,
    # mace-large 29-30 -> 24-25 ms at two threads. (The T-buffer route, _contract_T then _scaled_add, zeroes a row of
    # T, stores and reloads it for every entry and passes over T once more for W.)
    VW = vwidth(Cb)
    n = n0
    while n < n1:
        k = load_at(ck, n)
        m = n + 1
        while m < n1 and load_at(ck, m) == k:
            m += 1
        cr = c_off + k * c_str
        a0 = 0
        while a0 + 8 * VW <= a_mul:
            x0 = vzero(Cb)
            x1 = vzero(Cb)
            x2 = vzero(Cb)
            x3 = vzero(Cb)
            x4 = vzero(Cb)
            x5 = vzero(Cb)
            x6 = vzero(Cb)
            x7 = vzero(Cb)
            for e in range(n, m):
                coef = load_at(cv, e) * load_at(Bb, b_off + load_at(cj, e) * b_str + b)
                r = a_off + load_at(ci, e) * a_str + a0
                x0 = vfma(x0, vload(Ab, r), coef)
                x1 = vfma(x1, vload(Ab, r + VW), coef)
                x2 = vfma(x2, vload(Ab, r + 2 * VW), coef)
                x3 = vfma(x3, vload(Ab, r + 3 * VW), coef)
                x4 = vfma(x4, vload(Ab, r + 4 * VW), coef)
                x5 = vfma(x5, vload(Ab, r + 5 * VW), coef)
                x6 = vfma(x6, vload(Ab, r + 6 * VW), coef)
                x7 = vfma(x7, vload(Ab, r + 7 * VW), coef)
            c = cr + a0
            w = w_off + a0
            vstore(Cb, c, vadd(vload(Cb, c), vmul(vload(Wrow, w), x0)))
            vstore(Cb, c + VW, vadd(vload(Cb, c + VW), vmul(vload(Wrow, w + VW), x1)))
            vstore(Cb, c + 2 * VW, vadd(vload(Cb, c + 2 * VW), vmul(vload(Wrow, w + 2 * VW), x2)))
            vstore(Cb, c + 3 * VW, vadd(vload(Cb, c + 3 * VW), vmul(vload(Wrow, w + 3 * VW), x3)))
            vstore(Cb, c + 4 * VW, vadd(vload(Cb, c + 4 * VW), vmul(vload(Wrow, w + 4 * VW), x4)))
            vstore(Cb, c + 5 * VW, vadd(vload(Cb, c + 5 * VW), vmul(vload(Wrow, w + 5 * VW), x5)))
            vstore(Cb, c + 6 * VW, vadd(vload(Cb, c + 6 * VW), vmul(vload(Wrow, w + 6 * VW), x6)))
            vstore(Cb, c + 7 * VW, vadd(vload(Cb, c + 7 * VW), vmul(vload(Wrow, w + 7 * VW), x7)))
            a0 += 8 * VW
        while a0 + 4 * VW <= a_mul:
            x0 = vzero(Cb)
            x1 = vzero(Cb)
            x2 = vzero(Cb)
            x3 = vzero(Cb)
            for e in range(n, m):
                coef = load_at(cv, e) * load_at(Bb, b_off + load_at(cj, e) * b_str + b)
                r = a_off + load_at(ci, e) * a_str + a0
                x0 = vfma(x0, vload(Ab, r), coef)
                x1 = vfma(x1, vload(Ab, r + VW), coef)
                x2 = vfma(x2, vload(Ab, r + 2 * VW), coef)
                x3 = vfma(x3, vload(Ab, r + 3 * VW), coef)
            c = cr + a0
            w = w_off + a0
            vstore(Cb, c, vadd(vload(Cb, c), vmul(vload(Wrow, w), x0)))
            vstore(Cb, c + VW, vadd(vload(Cb, c + VW), vmul(vload(Wrow, w + VW), x1)))
            vstore(Cb, c + 2 * VW, vadd(vload(Cb, c + 2 * VW), vmul(vload(Wrow, w + 2 * VW), x2)))
            vstore(Cb, c + 3 * VW, vadd(vload(Cb, c + 3 * VW), vmul(vload(Wrow, w + 3 * VW), x3)))
            a0 += 4 * VW
        while a0 + VW <= a_mul:
            x0 = vzero(Cb)
            for e in range(n, m):
                coef = load_at(cv, e) * load_at(Bb, b_off + load_at(cj, e) * b_str + b)
                x0 = vfma(x0, vload(Ab, a_off + load_at(ci, e) * a_str + a0), coef)
            c = cr + a0
            vstore(Cb, c, vadd(vload(Cb, c), vmul(vload(Wrow, w_off + a0), x0)))
            a0 += VW
        while a0 < a_mul:
            t = 0.0
            for e in range(n, m):
                t += cv[e] * Bb[b_off + cj[e] * b_str + b] * Ab[a_off + ci[e] * a_str + a0]
            Cb[cr + a0] += Wrow[w_off + a0] * t
            a0 += 1
        n = m


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
        # uvu / uvv paths with contiguous weights: output rows summed in registers (_uvu_rows), no T buffer. (A like
        # fast path for uuw paths into one channel, measured, was slower than the T route in the backward.)
        if form == 1 and hasw and wa == 1 and a_mul >= vwidth(Cb):
            for b in range(b_mul):
                _uvu_rows(Cb, c_off, c_str, Ab, a_off, a_str, a_mul, Bb, b_off, b_str, b, Wrow, w_off + b * wb,
                          ci, cj, ck, cv, n0, n1)
        elif form == 2 and hasw and wb == 1 and b_mul >= vwidth(Cb):  # uvv: the operands' roles swapped
            for a in range(a_mul):
                _uvu_rows(Cb, c_off, c_str, Bb, b_off, b_str, b_mul, Ab, a_off, a_str, a, Wrow, w_off + a * wa,
                          cj, ci, ck, cv, n0, n1)
        elif form == 1:  # uvu: C[a, k] += W[a, b] T_b[k, a]
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
def _forward_form(
    table, ci, cj, ck, cv, W, w_batched, A, B, C, segA, segB, segC, transpose, tsize, nt, z0, z1, weightless
):  # fmt: skip
    # nt: C's rows written with non-temporal stores (_store_row_nt)
    Ab = np.empty(A.shape[1], dtype=A.dtype)
    Bb = np.empty(B.shape[1], dtype=A.dtype)
    Cb = np.empty(C.shape[1], dtype=A.dtype)
    T = np.empty(tsize, dtype=A.dtype)
    for z in range(z0, z1):
        _load_row(A, z, Ab, segA, transpose)
        _load_row(B, z, Bb, segB, transpose)
        _zero(Cb, C.shape[1])
        _item_ff(table, ci, cj, ck, cv, W[z] if w_batched else W[0], Ab, Bb, Cb, T, weightless)
        if nt:
            _store_row_nt(Cb, C, z, segC, transpose)
        else:
            _store_row(Cb, C, z, segC, transpose)
    if nt:
        store_fence()



@numba.njit(fastmath=True, cache=True, inline="always")
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


@numba.njit(fastmath=True, cache=True, inline="always")
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
        _load_row(A, z, Ab, segA, transpose)
        _load_row(B, z, Bb, segB, transpose)
        _load_row(G, z, Gb, segG, transpose)
        GWrow = GW[z] if w_batched else GW[q]
        if w_batched:
            _zero(GWrow, numel)
        _item_wf(table, ci, cj, ck, cv, GWrow, Ab, Bb, Gb, T)


@numba.njit(nogil=True, fastmath=True, cache=True)
def _backward_fused(
    t1, i1, j1, k1, v1, t2, i2, j2, k2, v2, tw, iw, jw, kw, vw,
    W, w_batched, X, Y, G, GX, GY, GW, need_x, need_y, need_w,
    seg1, seg2, seg3, transpose, tsize, weightless, nt_x, nt_y, nt_w, z0, z1, q,
):  # fmt: skip
    """All input gradients of the forward product in one pass over the items (each operand read once):
    ``GX = ff(t1; W, Y, G)``, ``GY = ff(t2; W, X, G)``, ``GW = wf(tw; X, Y, G)``. ``nt_x``, ``nt_y``, ``nt_w``: that
    gradient's rows are written with non-temporal stores (per-item weight gradient: summed in a local row first)."""
    Xb = np.empty(X.shape[1], dtype=X.dtype)
    Yb = np.empty(Y.shape[1], dtype=X.dtype)
    Gb = np.empty(G.shape[1], dtype=X.dtype)
    GXb = np.empty(X.shape[1], dtype=X.dtype)
    GYb = np.empty(Y.shape[1], dtype=X.dtype)
    T = np.empty(tsize, dtype=X.dtype)
    numel = GW.shape[1]
    GWb = np.empty(numel if nt_w else 0, dtype=X.dtype)
    if need_w and not w_batched:
        _zero(GW[q], numel)
    for z in range(z0, z1):
        _load_row(X, z, Xb, seg1, transpose)
        _load_row(Y, z, Yb, seg2, transpose)
        _load_row(G, z, Gb, seg3, transpose)
        Wrow = W[z] if w_batched else W[0]
        if need_x:
            _zero(GXb, X.shape[1])
            _item_ff(t1, i1, j1, k1, v1, Wrow, Yb, Gb, GXb, T, weightless)
            if nt_x:
                _store_row_nt(GXb, GX, z, seg1, transpose)
            else:
                _store_row(GXb, GX, z, seg1, transpose)
        if need_y:
            _zero(GYb, Y.shape[1])
            _item_ff(t2, i2, j2, k2, v2, Wrow, Xb, Gb, GYb, T, weightless)
            if nt_y:
                _store_row_nt(GYb, GY, z, seg2, transpose)
            else:
                _store_row(GYb, GY, z, seg2, transpose)
        if need_w:
            if nt_w:
                _zero(GWb, numel)
                _item_wf(tw, iw, jw, kw, vw, GWb, Xb, Yb, Gb, T)
                _copy_nt(GWb, GW, z * numel, numel)
                continue
            GWrow = GW[z] if w_batched else GW[q]
            if w_batched:
                _zero(GWrow, numel)
            _item_wf(tw, iw, jw, kw, vw, GWrow, Xb, Yb, Gb, T)
    if nt_x or nt_y or nt_w:
        store_fence()



def _segs(irreps) -> np.ndarray:
    rows = [(s.start, mul, ir.dim) for s, (mul, ir) in zip(irreps.slices(), irreps)]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def _gmap(segs, transpose: bool) -> np.ndarray:
    """Index in the global layout of each element of an item buffer in ir_mul order."""
    g = []
    for off, mul, d in segs:
        for i in range(d):
            for u in range(mul):
                g.append(off + u * d + i if transpose else off + i * mul + u)
    return np.asarray(g, dtype=np.int64)


def _nt_layout(segs, transpose: bool, vw: int) -> bool:
    """Whether rows of this layout can be written by `_store_row_nt`: a row is whole SIMD vectors (``vw`` elements)
    and, in ``mul_ir``, every block has whole vectors of channels and ``2l+1`` in 1, 3, 5, 7."""
    n = int(sum(int(m) * int(d) for _, m, d in segs))
    if n == 0 or n % vw:
        return False
    if not transpose:
        return True
    return all(int(m) % vw == 0 and int(d) in (1, 3, 5, 7) for _, m, d in segs)


#: outputs of at least this many bytes are written with non-temporal stores where their layout allows it: an output
#: this large does not stay in the caches for its consumer anyway, and a store that skips the read for ownership
#: writes it in about half the time (mace-large forward, a 363 MB output: 7.9 -> 5.2 us per item on one thread of a
#: Xeon); smaller outputs are written through the caches, where the next operation finds them
NT_MIN_BYTES = 16 << 20


def _nt_sized(out: torch.Tensor) -> bool:
    """``out`` is large enough for non-temporal stores and its data starts on a vector boundary (32 bytes)."""
    return out.numel() * out.element_size() >= NT_MIN_BYTES and out.data_ptr() % 32 == 0


def _use_nt_flat(out: torch.Tensor, row_multiple: int | None = None) -> bool:
    """Write the 2-D ``out`` with non-temporal stores of whole vectors, its rows having a multiple of ``row_multiple``
    elements (default: one SIMD vector, for kernels that store row by row; 1 for kernels that store whole blocks of
    rows, contiguous)."""
    vw = 32 // out.element_size() if row_multiple is None else row_multiple
    return out.shape[1] % vw == 0 and _nt_sized(out)


def _use_nt(plan, target: int, out: torch.Tensor) -> bool:
    """Write ``out`` (a 2-D output of the kernels, rows of operand ``target``) with non-temporal stores."""
    return plan.nt_layout[target] and _nt_sized(out)


def _sort_by_target(table, ci, cj, ck, cv):
    """The form's entries sorted by output row ``ck`` within each path (stable; only a sum's order changes), so that
    a kernel can accumulate an output row's entries in registers (:func:`_uvu_rows`)."""
    order = np.arange(len(ck))
    for row in table:
        n0, n1 = int(row[_N0]), int(row[_N1])
        if n1 - n0 > 1:
            order[n0:n1] = n0 + np.argsort(ck[n0:n1], kind="stable")
    return table, ci[order], cj[order], ck[order], cv[order]


class _CpuPlan:
    """numpy views of a descriptor's plan for the kernels, cached per (descriptor, dtype)."""

    def __init__(self, desc, np_dtype):
        plan = desc.plan
        self.segs = {1: _segs(desc.irreps_in1), 2: _segs(desc.irreps_in2), 3: _segs(desc.irreps_out)}
        self.forms = {}
        for t in (1, 2, 3):
            table, ci, cj, ck, cv = _sort_by_target(*plan.forms[t])
            self.forms[t] = (table, ci, cj, ck, cv.astype(np_dtype))
        table, ci, cj, ck, cv = plan.weight_form
        self.weight_form = (table, ci, cj, ck, cv.astype(np_dtype))
        tsize = 1
        for table, *_ in list(self.forms.values()) + [self.weight_form]:
            if len(table):
                # T holds c_dim x max(a_mul, b_mul)
                tsize = max(tsize, int((table[:, 14] * np.maximum(table[:, 7], table[:, 10])).max()))
        self.tsize = tsize
        self.uvw = _uvw_eligible(desc, self.weight_form)
        self.blocked = _use_blocked(desc, self.uvw)
        wt = self.weight_form[0]
        self.uvw_cover = bool(self.uvw and int((wt[:, 7] * wt[:, 10] * wt[:, 13]).sum()) == desc.weight_numel)
        self.uvw_xw, self.uvw_size = _uvw_order(wt) if self.uvw else (np.zeros(0, np.int8), 1)
        if UVW_ORDER is not None:
            self.uvw_xw[:] = (UVW_ORDER == "x-first") & (wt[:, _ASTR] == wt[:, _AMUL])
        # the fully connected forward kernel (`_uvw_forward`): the weight form's entries sorted by output component
        # within each path. It assigns (rather than accumulates) each row of a path's CG(x, y), so it applies only when
        # every output component has an entry, which the orthogonality of the 3j symbols guarantees (sum_ij C_ijk^2 =
        # 1 / (2 l3 + 1)); the general `_uvw_pass` runs otherwise
        self.uvw_form = _sort_by_target(*self.weight_form) if self.uvw else None
        ck = self.weight_form[3]
        self.uvw_assign = self.uvw and all(len(np.unique(ck[r[_N0]:r[_N1]])) == r[_CDIM] for r in wt)
        # for the item-blocked kernels: global index of each ir_mul element of in1, in2, out; identity for the weights
        self.gmap = {t: _gmap(self.segs[t], desc.layout == "mul_ir") for t in (1, 2, 3)}
        vw = 32 // np.dtype(np_dtype).itemsize  # elements of one SIMD vector (vwidth)
        self.nt_layout = {t: _nt_layout(self.segs[t], desc.layout == "mul_ir", vw) for t in (1, 2, 3)}
        self.gmap[0] = np.arange(max(desc.weight_numel, 1), dtype=np.int64)
        # rows per thread so that each thread gets PARALLEL_MIN_FLOPS of work (forward pass as the measure)
        self.min_rows = max(16, -(-PARALLEL_MIN_FLOPS // max(int(desc.flops(1)), 1)))
        self.dims = {0: desc.weight_numel, 1: desc.irreps_in1.dim, 2: desc.irreps_in2.dim, 3: desc.irreps_out.dim}
        self.itemsize = np.dtype(np_dtype).itemsize
        self._flat = {}
        self._pairs = {}

    def pairs(self, target: int):
        """The pair groups (`_pair_groups`) of a form's flat expansion, for `_forward_pairs`; None where that kernel
        does not apply (entries with weights, target elements not in lane-buffer order, no flat expansion)."""
        if target not in self._pairs:
            flat = self.flat(target)
            ok = flat is not None and flat[6] and np.array_equal(self.gmap[target], np.arange(self.dims[target]))
            groups = None
            if ok:
                a, b = _ROLES[target]
                seg_a, seg_b = self.segs[a][:, 0], self.segs[b][:, 0]
                groups = _pair_groups(flat[0], flat[1], flat[2], flat[3], seg_a, seg_b, self.dims[target], PAIR_GROUP)
                if len(groups[5]) < PAIR_MIN_REUSE * max(len(groups[3]), 1):
                    groups = None  # products used about once each (e.g. the input gradients of a full product)
            self._pairs[target] = groups
        return self._pairs[target]

    def flat(self, target: int):
        """The flat (CSR) expansion of a form for the item-blocked kernels (target 0: the weight form), built on first
        use; None when too large."""
        if target not in self._flat:
            form = self.weight_form if target == 0 else self.forms[target]
            self._flat[target] = _flatten(*form, weight_target=target == 0)
        return self._flat[target]


_plans = {}

from ._pool import empty as _empty  # noqa: E402  (large outputs from the buffer pool)

#: order of the fully connected kernel's paths for tests and benchmarks: None (per path, fewer multiply-adds),
#: "t-first" or "x-first" (every path; set before the plan is built)
UVW_ORDER = None

#: kernel family override for tests and benchmarks: None (automatic), "channels" (the generic channel-vectorised
#: kernels), "items" (item-blocked) or "uvw" (the fully connected kernel where it applies, else "channels")
KERNEL_FAMILY = None


def _blocked(plan) -> bool:
    if KERNEL_FAMILY is None:
        return plan.blocked
    return KERNEL_FAMILY == "items"


def _fully_connected(plan) -> bool:
    if KERNEL_FAMILY is None:
        return plan.uvw and not plan.blocked
    return KERNEL_FAMILY == "uvw" and plan.uvw


def _get_plan(desc, dtype):
    key = (desc, dtype)
    p = _plans.get(key)
    if p is None:
        p = _CpuPlan(desc, np.float32 if dtype == torch.float32 else np.float64)
        _plans[key] = p
    return p


def _num_threads() -> int:
    return max(1, torch.get_num_threads())


#: chunks per thread: the rows are cut into this many chunks per thread and the threads take the next free chunk, so
#: a core slowed down by something else (another process, a noisy neighbour on a virtual machine) does less of the work.
#: On the 2-vCPU Xeon the second core ran the same chunks ~40% slower, and with 4 chunks per thread the faster one
#: then waited up to a chunk at the end: 8 chunks measured full-l6 forward 13.9/13.2 -> 13.2/12.9 ms, diffdock-l2
#: 20.4/19.9 -> 19.5/19.5 ms, mace-large unchanged (alternating with e3nn, two rounds)
CHUNKS_PER_THREAD = 8


def _num_chunks() -> int:
    """The most chunks `_parallel` uses (rows of a partial-sum buffer)."""
    return _num_threads() * CHUNKS_PER_THREAD


#: floating-point operations a thread must get before a product is split over threads: handing rows to a pool thread
#: costs tens of microseconds (more on a virtual machine), about what ~1 MFLOP of kernel work takes here
PARALLEL_MIN_FLOPS = 1_000_000


def _parallel(fn, n: int, *args, min_rows: int = 16):
    """Run ``fn(*args, z0, z1, chunk_index)`` over ``n`` rows split in chunks that the threads take in turn (the
    kernels release the GIL; the threads are torch's own OpenMP workers where torch has them, see `._threads`); each
    thread gets at least ``min_rows`` rows, at most `_num_chunks()` chunks. Returns the number of chunks."""
    nt = min(_num_threads(), max(1, n // max(min_rows, 1)))
    if nt == 1:
        fn(*args, 0, n, 0)
        return 1
    nch = min(nt * CHUNKS_PER_THREAD, max(nt, n // max(min_rows, 16)))
    bounds = [(n * i) // nch for i in range(nch + 1)]
    counter = itertools.count()

    def worker():
        while True:
            i = next(counter)  # atomic under the GIL
            if i >= nch:
                return
            fn(*args, bounds[i], bounds[i + 1], i)

    run_team(worker, nt)
    return nch


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
            out = _empty((N, numel), dtype)
            if N == 0 or numel == 0:
                return out.zero_()
            gw = out
        else:
            if N == 0 or numel == 0:
                return torch.zeros(numel, dtype=dtype)
            gw = torch.empty((_num_chunks(), numel), dtype=dtype)
        if _fully_connected(plan):
            nch = _uvw_run(desc, plan, W, A, B, G, {"gw": gw}, transpose)
            return out if w_batched else gw[:nch].sum(0)
        table, ci, cj, ck, cv = plan.weight_form
        if _blocked(plan) and plan.flat(0) is not None:
            nch = _parallel(
                _weight_flat, N, *plan.flat(0)[:6], gw.numpy(), w_batched, A.numpy(), B.numpy(), G.numpy(),
                plan.gmap[1], plan.gmap[2], plan.gmap[3], plan.gmap[0], _lanes(plan, w_batched),
                min_rows=plan.min_rows,
            )  # fmt: skip
            return out if w_batched else gw[:nch].sum(0)
        if _blocked(plan):
            nch = _parallel(
                _weight_form_blocked, N, table, ci, cj, ck, cv, gw.numpy(), w_batched, A.numpy(), B.numpy(),
                G.numpy(), plan.gmap[1], plan.gmap[2], plan.gmap[3], plan.gmap[0], _lanes(plan, w_batched),
                min_rows=plan.min_rows,
            )  # fmt: skip
            return out if w_batched else gw[:nch].sum(0)
        nch = _parallel(
            _weight_form, N, table, ci, cj, ck, cv, gw.numpy(), w_batched, A.numpy(), B.numpy(), G.numpy(),
            plan.segs[1], plan.segs[2], plan.segs[3], transpose, plan.tsize,
            min_rows=plan.min_rows,
        )  # fmt: skip
        return out if w_batched else gw[:nch].sum(0)

    a, b = _ROLES[target]
    A, B = operands[a], operands[b]
    dim_c = desc.operand_dim(target)
    out = _empty((N, dim_c), dtype)
    if N == 0:
        return out
    if W is None or W.numel() == 0:
        Wn = np.zeros((1, 1), dtype=out.numpy().dtype)
        w_batched = False
    else:
        Wn = W.numpy() if w_batched else W.reshape(1, -1).numpy()
    if _fully_connected(plan) and W is not None and W.numel() > 0:
        X, Y, G = operands[1], operands[2], operands[3]
        _uvw_run(desc, plan, W, X, Y, G, {3: {"out": out}, 1: {"gx": out}, 2: {"gy": out}}[target], transpose)
        return out
    table, ci, cj, ck, cv = plan.forms[target]
    if _blocked(plan) and plan.pairs(target) is not None:
        rows, ptr, _, _, _, co, _ = plan.flat(target)
        _parallel(
            lambda *args: _forward_pairs(*args[:-1]), N, rows, ptr, co, *plan.pairs(target), A.numpy(), B.numpy(),
            out.numpy(), plan.gmap[a], plan.gmap[b], _pair_lanes(plan), _use_nt_flat(out, 1),
            min_rows=plan.min_rows,
        )  # fmt: skip
        return out
    if _blocked(plan) and plan.flat(target) is not None:
        _parallel(
            lambda *args: _forward_flat(*args[:-1], weightless), N, *plan.flat(target), Wn, w_batched, A.numpy(),
            B.numpy(), out.numpy(), plan.gmap[a], plan.gmap[b], plan.gmap[target], plan.gmap[0], _flat_lanes(plan),
            FLAT_CHUNK,
            min_rows=plan.min_rows,
        )  # fmt: skip
        return out
    if _blocked(plan):
        _parallel(
            lambda *args: _forward_form_blocked(*args[:-1], weightless), N, table, ci, cj, ck, cv, Wn, w_batched,
            A.numpy(), B.numpy(), out.numpy(), plan.gmap[a], plan.gmap[b], plan.gmap[target], plan.gmap[0],
            _lanes(plan, w_batched),
            min_rows=plan.min_rows,
        )  # fmt: skip
        return out
    _parallel(
        lambda *args: _forward_form(*args[:-1], weightless), N, table, ci, cj, ck, cv, Wn, w_batched, A.numpy(),
        B.numpy(), out.numpy(), plan.segs[a], plan.segs[b], plan.segs[target], transpose, plan.tsize,
        _use_nt(plan, target, out),
        min_rows=plan.min_rows,
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
    plan = _get_plan(desc, X.dtype)
    if _fully_connected(plan) and W is not None and W.numel() > 0 and X.shape[0] > 0:
        N = X.shape[0]
        need_w, need_x, need_y = needs
        outs = {}
        if need_x:
            outs["gx"] = _empty((N, X.shape[1]), X.dtype)
        if need_y:
            outs["gy"] = _empty((N, Y.shape[1]), X.dtype)
        if need_w:
            w_batched = W.dim() == 2
            outs["gw"] = (_empty((N, desc.weight_numel), X.dtype) if w_batched
                          else torch.empty((_num_chunks(), desc.weight_numel), dtype=X.dtype))
        nch = _uvw_run(desc, plan, W, X, Y, G, outs, desc.layout == "mul_ir")
        gw = outs.get("gw")
        if gw is not None and W.dim() != 2:
            gw = gw[:nch].sum(0)
        return gw, outs.get("gx"), outs.get("gy")
    if _blocked(plan):
        # item-blocked kernels: the three gradients as three passes (small operands)
        gw = tensor_product_cpu(desc, 0, [W.new_empty((0, 0)) if W.dim() == 2 else W.new_empty((0,)), X, Y, G]) if (
            needs[0] and W is not None and desc.weight_numel > 0) else None
        gx = tensor_product_cpu(desc, 1, [W, None, Y, G], weightless) if needs[1] else None
        gy = tensor_product_cpu(desc, 2, [W, X, None, G], weightless) if needs[2] else None
        return gw, gx, gy
    dtype = X.dtype
    N = X.shape[0]
    need_w, need_x, need_y = needs
    need_w = bool(need_w and W is not None and desc.weight_numel > 0)
    w_batched = W is not None and W.dim() == 2
    np_dtype = X.numpy().dtype
    gx = _empty((N, X.shape[1]), dtype) if need_x else None
    gy = _empty((N, Y.shape[1]), dtype) if need_y else None
    numel = desc.weight_numel
    if need_w:
        gw = _empty((N, numel), dtype) if w_batched else torch.empty((_num_chunks(), numel), dtype=dtype)
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
        weightless, need_x and _use_nt(plan, 1, gx), need_y and _use_nt(plan, 2, gy),
        need_w and w_batched and _use_nt_flat(gw),
        min_rows=plan.min_rows,
    )  # fmt: skip
    if need_w and not w_batched:
        gw = gw[:nch].sum(0)
    return gw, gx, gy


# ---------------------------------------------------------------------------------------------------------------------
# Item-blocked kernels for low multiplicities (e.g. single-channel products): the vector lanes are items (see _lanes)
# instead of channels. A block of items is transposed into local buffers X[element, lane]; each CG non-zero and channel tuple
# is then one vectorised multiply-add over the lanes.
# ---------------------------------------------------------------------------------------------------------------------
#: items per block; None: chosen per plan by _lanes (an int overrides it, for tests and experiments). The count is
#: passed to the kernels as a run-time value on purpose: with a compile-time trip count LLVM unrolls the lane loops
#: completely and then leaves them scalar (numba cannot prove the buffers distinct); with a run-time count the loop
#: vectoriser emits AVX code behind one alias check
LANES = None
#: bytes of lane buffers (all operands of a block) that the lane count is chosen to fit in (about the L2 cache)
LANE_BUFFER_BYTES = 768 * 1024


def _lanes(plan, w_batched: bool) -> int:
    """Items per block: 64 when the block's lane buffers fit in LANE_BUFFER_BYTES, else 32 (more items per entry
    amortise the per-entry overhead; too many spill the buffers out of the cache)."""
    if LANES is not None:
        return LANES
    per_lane = (plan.dims[1] + plan.dims[2] + plan.dims[3] + (plan.dims[0] if w_batched else 0)) * plan.itemsize
    return 64 if per_lane * 64 <= LANE_BUFFER_BYTES else 32


def _pair_lanes(plan) -> int:
    """Items per block of the pair-product kernel: four wide SIMD vectors (64 float32 / 32 float64 items), one
    accumulator each over a target row's entries (the kernel's row loop is written for exactly four)."""
    return 4 * (64 // plan.itemsize)


def _flat_lanes(plan) -> int:
    """Items per block of the flat forward kernel: four SIMD vectors (32 float32 / 16 float64 items), whose
    accumulators stay in registers over a target row's entries (`_flat_rows_vec`); more lanes only push the lane
    buffers out of the cache (measured: full l<=6 product 53 ms at 32 lanes, 88 ms at 64, one thread)."""
    if LANES is not None:
        return LANES
    return 4 * (32 // plan.itemsize)


@numba.njit(fastmath=True, cache=True, inline="always")
def _is_identity(gmap):
    for e in range(gmap.shape[0]):
        if gmap[e] != e:
            return False
    return True


@numba.njit(fastmath=True, cache=True, inline="always")
def _load_block_vec(src, z0, nb, dst, L):
    # _load_block for an operand whose elements are in lane-buffer order (identity gmap): squares of VW items x VW
    # elements transposed in registers, the edges element by element; lanes nb..L-1 zeroed
    E = src.shape[1]
    VW = vwidth(dst)
    nl = nb - nb % VW
    ne = E - E % VW
    for l0 in range(0, nl, VW):
        for e0 in range(0, ne, VW):
            vtranspose(src, (z0 + l0) * E + e0, E, dst, e0 * L + l0, L)
    for lane in range(nl):
        for e in range(ne, E):
            store_at(dst, e * L + lane, load_at(src, (z0 + lane) * E + e))
    for lane in range(nl, nb):
        for e in range(E):
            store_at(dst, e * L + lane, load_at(src, (z0 + lane) * E + e))
    for lane in range(nb, L):
        for e in range(E):
            store_at(dst, e * L + lane, 0.0)


@numba.njit(fastmath=True, cache=True, inline="always")
def _load_block(src, z0, nb, dst, gmap, L):
    # dst[e * L + lane] = src[z0 + lane, gmap[e]] (e: ir_mul element index, gmap: its index in the global layout);
    # lanes nb..L-1 zeroed. Elements already in lane-buffer order (single channels, ir_mul, weights): SIMD transposes
    E = gmap.shape[0]
    if E == src.shape[1] and _is_identity(gmap):
        _load_block_vec(src, z0, nb, dst, L)
        return
    for lane in range(nb):
        row = src[z0 + lane]
        for e in range(E):
            dst[e * L + lane] = row[gmap[e]]
    for lane in range(nb, L):
        for e in range(E):
            dst[e * L + lane] = 0.0


@numba.njit(fastmath=True, cache=True, inline="always")
def _store_block(src, dst, z0, nb, gmap, L):
    # dst[z0 + lane, gmap[e]] = src[e * L + lane] for the first nb lanes (identity gmap: SIMD transposes)
    E = gmap.shape[0]
    if E == dst.shape[1] and _is_identity(gmap):
        _store_chunk_vec(src, dst.reshape(dst.shape[0] * E), z0, nb, E, L, 0, E, False)
        return
    for lane in range(nb):
        row = dst[z0 + lane]
        for e in range(E):
            row[gmap[e]] = src[e * L + lane]


@numba.njit(fastmath=True, cache=True, inline="always")
def _lanes_fma(Cb, cr, Ab, ar, Bb, br, Wb, wr, coef, w_mode, L):
    # Cb[cr lanes] += coef * W * A[ar lanes] * B[br lanes]; w_mode 0: W = 1, 1: scalar Wb[wr], 2: lanes Wb[wr lanes]
    Cs = Cb[cr * L : cr * L + L]
    As = Ab[ar * L : ar * L + L]
    Bs = Bb[br * L : br * L + L]
    if w_mode == 2:
        Ws = Wb[wr * L : wr * L + L]
        for q in range(L):
            Cs[q] += coef * Ws[q] * As[q] * Bs[q]
    else:
        c = coef * Wb[wr] if w_mode == 1 else coef
        for q in range(L):
            Cs[q] += c * As[q] * Bs[q]


@numba.njit(fastmath=True, cache=True, inline="always")
def _lanes_prod_acc(Gw, wr, Ab, ar, Bb, br, Cb, cr, coef, L):
    # Gw[wr lanes] += coef * A * B * C (lanes)
    Gs = Gw[wr * L : wr * L + L]
    As = Ab[ar * L : ar * L + L]
    Bs = Bb[br * L : br * L + L]
    Cs = Cb[cr * L : cr * L + L]
    for q in range(L):
        Gs[q] += coef * As[q] * Bs[q] * Cs[q]


@numba.njit(fastmath=True, cache=True, inline="always")
def _block_paths(table, ci, cj, ck, cv, Wb, w_mode_on, Ab, Bb, Cb, weightless, weight_target, L):
    # forward form (weight_target False): Cb += W A B coef; weight form (True): Wb += A B Cb coef
    for p in range(table.shape[0]):
        form = table[p, _FORM]
        hasw = table[p, _HASW] != 0
        if not weight_target and not hasw and not weightless:
            continue
        w_mode = w_mode_on if hasw else 0
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
        a_str = table[p, _ASTR]
        b_str = table[p, _BSTR]
        c_str = table[p, _CSTR]
        for n in range(table[p, _N0], table[p, _N1]):
            coef = cv[n]
            ai = a_off + ci[n] * a_str
            bj = b_off + cj[n] * b_str
            ck_ = c_off + ck[n] * c_str
            for a in range(a_mul):
                if form == 0 or form == 1 or form == 2:
                    nb_ = b_mul
                else:
                    nb_ = 1
                for bb in range(nb_):
                    b = a if (form == 3 or form == 4) else bb
                    if form == 0 or form == 3:
                        nc = c_mul
                    else:
                        nc = 1
                    for cc in range(nc):
                        if form == 1 or form == 4:
                            c = a
                        elif form == 2:
                            c = b
                        else:
                            c = cc
                        if form == 0:
                            wr = w_off + a * wa + b * wb + c * wc
                        elif form == 1:
                            wr = w_off + a * wa + b * wb
                        elif form == 2:
                            wr = w_off + a * wa + b * wb
                        elif form == 3:
                            wr = w_off + a * wa + c * wc
                        else:
                            wr = w_off + a * wa
                        if weight_target:
                            _lanes_prod_acc(Wb, wr, Ab, ai + a, Bb, bj + b, Cb, ck_ + c, coef, L)
                        else:
                            _lanes_fma(Cb, ck_ + c, Ab, ai + a, Bb, bj + b, Wb, wr, coef, w_mode, L)


@numba.njit(nogil=True, fastmath=True, cache=True)
def _forward_form_blocked(table, ci, cj, ck, cv, W, w_batched, A, B, C, segA, segB, segC, segW, L, z0, z1, weightless):
    Ab = np.empty(A.shape[1] * L, dtype=A.dtype)
    Bb = np.empty(B.shape[1] * L, dtype=A.dtype)
    Cb = np.empty(C.shape[1] * L, dtype=A.dtype)
    Wb = np.empty(W.shape[1] * L if w_batched else W.shape[1], dtype=A.dtype)
    if not w_batched:
        Wb[:] = W[0]
    for zb in range(z0, z1, L):
        nb = min(L, z1 - zb)
        _load_block(A, zb, nb, Ab, segA, L)
        _load_block(B, zb, nb, Bb, segB, L)
        if w_batched:
            _load_block(W, zb, nb, Wb, segW, L)
        Cb[:] = 0.0
        _block_paths(table, ci, cj, ck, cv, Wb, 2 if w_batched else 1, Ab, Bb, Cb, weightless, False, L)
        _store_block(Cb, C, zb, nb, segC, L)


@numba.njit(nogil=True, fastmath=True, cache=True)
def _weight_form_blocked(table, ci, cj, ck, cv, GW, w_batched, A, B, G, segA, segB, segG, segW, L, z0, z1, q):
    numel = GW.shape[1]
    Ab = np.empty(A.shape[1] * L, dtype=A.dtype)
    Bb = np.empty(B.shape[1] * L, dtype=A.dtype)
    Gb = np.empty(G.shape[1] * L, dtype=A.dtype)
    Wb = np.zeros(numel * L, dtype=A.dtype)
    for zb in range(z0, z1, L):
        nb = min(L, z1 - zb)
        _load_block(A, zb, nb, Ab, segA, L)
        _load_block(B, zb, nb, Bb, segB, L)
        _load_block(G, zb, nb, Gb, segG, L)
        if w_batched:
            Wb[:] = 0.0
        _block_paths(table, ci, cj, ck, cv, Wb, 0, Ab, Bb, Gb, True, True, L)
        if w_batched:
            _store_block(Wb, GW, zb, nb, segW, L)
    if not w_batched:
        for r in range(numel):
            s = 0.0
            for lane in range(L):
                s += Wb[r * L + lane]
            GW[q, r] = s


def _use_blocked(desc, fully_connected: bool = False) -> bool:
    """Item-blocked kernels when the per-item loops would be short: the work-weighted length of the innermost
    channel loop (the mixing loop over output channels for uvw/uuw) is below 16; for a product the fully connected
    kernel can run, when the work-weighted ``min(mul_in1, mul_out)`` is below 8 (that kernel's loops run over the
    input channels and over the output channels a SIMD vector at a time, once per item and path: with fewer channels
    per path its fixed cost per path dominates, which the item-blocked kernels share among 32 items). Measured per
    item, single thread: tetris-poly-1 (one input channel, 16-64 output channels) 2.9x faster item-blocked; 48x0e x 0e
    -> 12x0e and 10x1o+10x1e x 0e+1o+2e -> 10x1o+10x1e 2.2x and 1.3x faster fully connected."""
    num = den = 0.0
    for p, (_, _, _, v) in zip(desc.paths, desc.sparse_paths):
        m1 = desc.irreps_in1[p.i_in1].mul
        m2 = desc.irreps_in2[p.i_in2].mul
        mo = desc.irreps_out[p.i_out].mul
        d3 = desc.irreps_out[p.i_out].ir.dim
        if fully_connected:
            vec, work = min(m1, mo), len(v) * m1 * m2 + d3 * m1 * m2 * mo
        elif p.mode in ("uvw", "uuw"):
            vec, work = mo, len(v) * m1 * m2 + d3 * m1 * m2 * mo
        elif p.mode in ("uvv", "uvuv"):
            vec, work = m2, len(v) * m1 * m2
        else:
            vec, work = m1, len(v) * m1 * m2
        num += work * vec
        den += work
    return den > 0 and num / den < (8 if fully_connected else 16)


# ---------------------------------------------------------------------------------------------------------------------
# Fully connected products (every path ``uvw`` with weights, e3nn's weight layout W[u, v, w]): one kernel for the
# forward pass and every gradient, organised around the two small matrix products of each path,
#   T[k, u] = sum_n coef X[u, i_n] Y[v, j_n]     (CG contraction, vectorised over u)
#   M[k, u] = sum_w W[u, v, w] G[w, k]           (dot products over contiguous w)
# out[w, k] += sum_u T[k, u] W[u, v, w]; gW[u, v, w] = sum_k T[k, u] G[w, k];
# gX[u, i_n] += coef Y[v, j_n] M[k_n, u]; gY[v, j_n] += coef sum_u X[u, i_n] M[k_n, u].
# The generic forms route the gradients through loops over the output channels with one-channel vectors; these keep
# every inner loop on a channel axis, and the fused backward computes M once for both input gradients.
# ---------------------------------------------------------------------------------------------------------------------


@numba.njit(fastmath=True, cache=True, inline="always")
def _vector_span(c0, c_mul, VW):
    # the two vectors covering columns c0 .. min(c0 + 2 VW, c_mul) of a row of c_mul >= VW columns: their offsets and
    # how many of their trailing lanes are theirs (a vector that would run past the row is moved back to end at c_mul
    # and its lanes already covered by the first are masked; with one vector's worth left the second has no lanes)
    rem = c_mul - c0
    if rem >= 2 * VW:
        return c0, VW, c0 + VW, VW
    if rem > VW:
        return c0, VW, c_mul - VW, rem - VW
    return c_mul - VW, rem, c_mul - VW, 0


@numba.njit(fastmath=True, cache=True, inline="always")
def _vector_rmw(Ob, r, o1, o2, x, y, m1, m2):
    # Ob[r + o1 ...] += x * m1 and Ob[r + o2 ...] += y * m2, where the spans may overlap and m2 masks the overlap: both
    # loaded first (a load partly overlapping the previous store would wait for it), the second stored first (its
    # overlap lanes hold the old values, which the first store then overwrites with the sums)
    a = vload(Ob, r + o1)
    b = vload(Ob, r + o2)
    vstore(Ob, r + o2, vadd(b, vmul(y, m2)))
    vstore(Ob, r + o1, vadd(a, vmul(x, m1)))


@numba.njit(fastmath=True, cache=True, inline="always")
def _axpy_vec(D, d, S, s, coef, n):
    # D[d : d + n] += coef * S[s : s + n]: whole vectors, then the rest element by element. No slices (a slice view
    # costs a reference count update, and LLVM versions a short loop behind run-time alias checks), and no overlapping
    # vectors (a load that partly overlaps the previous store cannot be forwarded from it and waits for the store)
    VW = vwidth(D)
    c = 0
    while c + VW <= n:
        vstore(D, d + c, vfma(vload(D, d + c), vload(S, s + c), coef))
        c += VW
    while c < n:
        D[d + c] += coef * S[s + c]
        c += 1


@numba.njit(fastmath=True, cache=True, inline="always")
def _dot_vec(A, a, B, b, n):
    # sum_c A[a + c] B[b + c] over c < n: whole vectors, then the rest element by element
    VW = vwidth(A)
    acc = vzero(A)
    c = 0
    while c + VW <= n:
        acc = vfma(acc, vmul(vload(A, a + c), vload(B, b + c)), 1.0)
        c += VW
    t = vsum(acc)
    while c < n:
        t += A[a + c] * B[b + c]
        c += 1
    return t


@numba.njit(fastmath=True, cache=True, inline="always")
def _cg_rows_vec(Dst, d_off, d_str, Src, s_off, s_str, c_mul, Yb, b_off, b_str, b, ri, rs, cj, cv, n0, n1, MASK):
    # _cg_rows with SIMD rows when they hold at least one vector
    if c_mul < vwidth(Dst):
        _cg_rows(Dst, d_off, d_str, Src, s_off, s_str, c_mul, Yb, b_off, b_str, b, ri, rs, cj, cv, n0, n1)
        return
    for n in range(n0, n1):
        coef = cv[n] * Yb[b_off + cj[n] * b_str + b]
        _axpy_vec(Dst, d_off + ri[n] * d_str, Src, s_off + rs[n] * s_str, coef, c_mul)


#: how far ahead of its reads the fully connected kernel prefetches the weights, in 64-byte lines (see _prefetch_row)
PREFETCH_LINES = 48


@numba.njit(fastmath=True, cache=True, inline="always")
def _prefetch_row(Wrow, r, n, to_l2):
    # prefetch the weights PREFETCH_LINES lines ahead of the n elements read from Wrow[r]: one hint per 64-byte line
    # (one wide vector; rows narrower than a line give one hint each). Called only where the weights are per item and
    # stream from memory (a shared row stays in cache): the hardware prefetchers alone leave that stream idle while
    # the core computes (diffdock-l2 forward, two threads: 14.2-14.6 ms without, 12.9-13.1 ms with hints 3 KB ahead).
    # to_l2 (a literal at each call site, folded once inlined): into L2 only (prefetcht1), as the output micro-kernels
    # do: the forward reads each line once, 3-4% faster than with the lines pulled into L1 ahead of their use;
    # otherwise into L1 (prefetcht0), as the weight-gradient micro-kernels do (their gradient rows stream out beside
    # the weights: 6% slower with L2 hints)
    L = wwidth(Wrow)
    d = r + PREFETCH_LINES * L
    for o in range(0, n, L):
        if to_l2:
            prefetch_l2(Wrow, d + o)
        else:
            prefetch(Wrow, d + o)


@numba.njit(fastmath=True, cache=True, inline="always")
def _uvw_out_vec3(Ob, r0, c_str, c_mul, T, t0, a_mul, Wrow, wbase, wa, MASK, stream):
    # three output rows (r0, r0 + c_str, r0 + 2 c_str) += T[t0 + k a_mul + a] W[a, :], two vectors of columns at a time,
    # the six accumulators in registers over the whole a loop
    VW = vwidth(Wrow)
    c0 = 0
    while c0 < c_mul:
        o1, q1, o2, q2 = _vector_span(c0, c_mul, VW)
        x0 = vzero(Wrow)
        x1 = vzero(Wrow)
        x2 = vzero(Wrow)
        y0 = vzero(Wrow)
        y1 = vzero(Wrow)
        y2 = vzero(Wrow)
        for a in range(a_mul):
            wr = wbase + a * wa
            if stream and c0 == 0:
                _prefetch_row(Wrow, wr, c_mul, True)
            w = vload(Wrow, wr + o1)
            v = vload(Wrow, wr + o2)
            s0 = T[t0 + a]
            s1 = T[t0 + a_mul + a]
            s2 = T[t0 + 2 * a_mul + a]
            x0 = vfma(x0, w, s0)
            x1 = vfma(x1, w, s1)
            x2 = vfma(x2, w, s2)
            y0 = vfma(y0, v, s0)
            y1 = vfma(y1, v, s1)
            y2 = vfma(y2, v, s2)
        m1 = vload(MASK, q1)
        m2 = vload(MASK, q2)
        _vector_rmw(Ob, r0, o1, o2, x0, y0, m1, m2)
        _vector_rmw(Ob, r0 + c_str, o1, o2, x1, y1, m1, m2)
        _vector_rmw(Ob, r0 + 2 * c_str, o1, o2, x2, y2, m1, m2)
        c0 += 2 * VW


@numba.njit(fastmath=True, cache=True, inline="always")
def _uvw_out_wide1(Ob, r0, c0, T, t0, a_mul, Wrow, wbase, wa, stream):
    # one output row's columns c0 .. c0 + 6 VW (all inside the row) += T[t0 + a] W[a, c0 ...]: six accumulators, so
    # each row of W is read once, front to back (the two-vector kernel below would stride down the rows three times,
    # which the hardware prefetchers follow poorly when W streams from memory), and six independent chains per a
    VW = vwidth(Wrow)
    x0 = vzero(Wrow)
    x1 = vzero(Wrow)
    x2 = vzero(Wrow)
    x3 = vzero(Wrow)
    x4 = vzero(Wrow)
    x5 = vzero(Wrow)
    for a in range(a_mul):
        wr = wbase + a * wa + c0
        if stream:
            _prefetch_row(Wrow, wr, 6 * VW, True)
        s = T[t0 + a]
        x0 = vfma(x0, vload(Wrow, wr), s)
        x1 = vfma(x1, vload(Wrow, wr + VW), s)
        x2 = vfma(x2, vload(Wrow, wr + 2 * VW), s)
        x3 = vfma(x3, vload(Wrow, wr + 3 * VW), s)
        x4 = vfma(x4, vload(Wrow, wr + 4 * VW), s)
        x5 = vfma(x5, vload(Wrow, wr + 5 * VW), s)
    r = r0 + c0
    vstore(Ob, r, vadd(vload(Ob, r), x0))
    vstore(Ob, r + VW, vadd(vload(Ob, r + VW), x1))
    vstore(Ob, r + 2 * VW, vadd(vload(Ob, r + 2 * VW), x2))
    vstore(Ob, r + 3 * VW, vadd(vload(Ob, r + 3 * VW), x3))
    vstore(Ob, r + 4 * VW, vadd(vload(Ob, r + 4 * VW), x4))
    vstore(Ob, r + 5 * VW, vadd(vload(Ob, r + 5 * VW), x5))


@numba.njit(fastmath=True, cache=True, inline="always")
def _uvw_out_vec1(Ob, r0, c_mul, T, t0, a_mul, Wrow, wbase, wa, MASK, stream):
    # one output row += T[t0 + a] W[a, :]: whole chunks of six vectors by the wide kernel, the rest two vectors at a
    # time with even and odd a in separate accumulators (two independent chains per vector)
    VW = vwidth(Wrow)
    c0 = 0
    while c_mul - c0 >= 6 * VW:
        _uvw_out_wide1(Ob, r0, c0, T, t0, a_mul, Wrow, wbase, wa, stream)
        c0 += 6 * VW
    start = c0
    while c0 < c_mul:
        o1, q1, o2, q2 = _vector_span(c0, c_mul, VW)
        x0 = vzero(Wrow)
        y0 = vzero(Wrow)
        x1 = vzero(Wrow)
        y1 = vzero(Wrow)
        first = stream and c0 == start
        a = 0
        while a + 1 < a_mul:
            wr = wbase + a * wa
            if first:
                _prefetch_row(Wrow, wr + c0, c_mul - c0, True)
                _prefetch_row(Wrow, wr + wa + c0, c_mul - c0, True)
            s0 = T[t0 + a]
            s1 = T[t0 + a + 1]
            x0 = vfma(x0, vload(Wrow, wr + o1), s0)
            y0 = vfma(y0, vload(Wrow, wr + o2), s0)
            x1 = vfma(x1, vload(Wrow, wr + wa + o1), s1)
            y1 = vfma(y1, vload(Wrow, wr + wa + o2), s1)
            a += 2
        if a < a_mul:
            wr = wbase + a * wa
            if first:
                _prefetch_row(Wrow, wr + c0, c_mul - c0, True)
            s0 = T[t0 + a]
            x0 = vfma(x0, vload(Wrow, wr + o1), s0)
            y0 = vfma(y0, vload(Wrow, wr + o2), s0)
        _vector_rmw(Ob, r0, o1, o2, vadd(x0, x1), vadd(y0, y1), vload(MASK, q1), vload(MASK, q2))
        c0 += 2 * VW


# _uvw_out and _uvw_grads are called, not inlined: inlined at their four call sites the SIMD micro-kernels doubled the
# compile time of _uvw_pass (71 s instead of 36 s per dtype, cold cache); the call costs nothing measurable here
@numba.njit(fastmath=True, cache=True)
def _uvw_out(Ob, c_off, c_str, c_mul, c_dim, T, a_mul, Wrow, wbase, wa, MASK, stream):
    _uvw_out_body(Ob, c_off, c_str, c_mul, c_dim, T, a_mul, Wrow, wbase, wa, MASK, stream)


@numba.njit(fastmath=True, cache=True, inline="always")
def _uvw_out_body(Ob, c_off, c_str, c_mul, c_dim, T, a_mul, Wrow, wbase, wa, MASK, stream):
    # O[k, c] += sum_a T[k, a] W[a, c]. Rows of at least one SIMD vector: register-blocked micro-kernels (three output
    # rows x two vectors of columns, accumulated over all a; MASK = [0] * VW + [1] * VW selects a vector's lanes).
    # Narrower rows: output rows in groups of three and input channels in pairs (or fours), so each loaded row of W
    # feeds several multiply-adds and each output row is loaded and stored once per pair of channels
    if c_mul >= vwidth(Wrow):
        k0 = 0
        while k0 < c_dim:
            if c_dim - k0 >= 3:
                _uvw_out_vec3(Ob, c_off + k0 * c_str, c_str, c_mul, T, k0 * a_mul, a_mul, Wrow, wbase, wa, MASK, stream)
                k0 += 3
            else:
                _uvw_out_vec1(Ob, c_off + k0 * c_str, c_mul, T, k0 * a_mul, a_mul, Wrow, wbase, wa, MASK, stream)
                k0 += 1
        return
    k0 = 0
    while k0 < c_dim:
        r0 = c_off + k0 * c_str
        O0 = Ob[r0 : r0 + c_mul]
        T0 = T[k0 * a_mul : (k0 + 1) * a_mul]
        if c_dim - k0 >= 3:
            O1 = Ob[r0 + c_str : r0 + c_str + c_mul]
            O2 = Ob[r0 + 2 * c_str : r0 + 2 * c_str + c_mul]
            T1 = T[(k0 + 1) * a_mul : (k0 + 2) * a_mul]
            T2 = T[(k0 + 2) * a_mul : (k0 + 3) * a_mul]
            a = 0
            while a + 1 < a_mul:
                wr = wbase + a * wa
                Ws = Wrow[wr : wr + c_mul]
                Vs = Wrow[wr + wa : wr + wa + c_mul]
                t0, t1, t2 = T0[a], T1[a], T2[a]
                s0, s1, s2 = T0[a + 1], T1[a + 1], T2[a + 1]
                for c in range(c_mul):
                    w = Ws[c]
                    v = Vs[c]
                    O0[c] += t0 * w + s0 * v
                    O1[c] += t1 * w + s1 * v
                    O2[c] += t2 * w + s2 * v
                a += 2
            if a < a_mul:
                wr = wbase + a * wa
                Ws = Wrow[wr : wr + c_mul]
                t0, t1, t2 = T0[a], T1[a], T2[a]
                for c in range(c_mul):
                    w = Ws[c]
                    O0[c] += t0 * w
                    O1[c] += t1 * w
                    O2[c] += t2 * w
            k0 += 3
        else:
            a = 0
            while a + 3 < a_mul:
                wr = wbase + a * wa
                W0 = Wrow[wr : wr + c_mul]
                W1 = Wrow[wr + wa : wr + wa + c_mul]
                W2 = Wrow[wr + 2 * wa : wr + 2 * wa + c_mul]
                W3 = Wrow[wr + 3 * wa : wr + 3 * wa + c_mul]
                t0, t1, t2, t3 = T0[a], T0[a + 1], T0[a + 2], T0[a + 3]
                for c in range(c_mul):
                    O0[c] += t0 * W0[c] + t1 * W1[c] + t2 * W2[c] + t3 * W3[c]
                a += 4
            while a < a_mul:
                wr = wbase + a * wa
                Ws = Wrow[wr : wr + c_mul]
                t0 = T0[a]
                for c in range(c_mul):
                    O0[c] += t0 * Ws[c]
                a += 1
            k0 += 1


@numba.njit(fastmath=True, cache=True, inline="always")
def _gw_vec_store(GWrow, g, o1, o2, v1, v2, m1, m2, assign):
    # gW row spans: written (both spans hold true values, so overlapping writes agree) or accumulated with the masks
    if assign:
        vstore(GWrow, g + o2, v2)
        vstore(GWrow, g + o1, v1)
    else:
        _vector_rmw(GWrow, g, o1, o2, v1, v2, m1, m2)


@numba.njit(fastmath=True, cache=True, inline="always")
def _uvw_grads_vec3(GWrow, Wrow, wbase, wa, Gb, r0, c_str, c_mul, T, t0, M, a_mul, do_gw, assign, need_m, MASK, stream):
    # three rows of G (r0 + k c_str) held in registers per two vectors of columns; per a: gW[a] (+)= sum_k T[k, a] G[k]
    # and M[k, a] (+)= <W[a], G[k]> (the W vectors masked so overlapping spans count once)
    VW = vwidth(Wrow)
    c0 = 0
    while c0 < c_mul:
        o1, q1, o2, q2 = _vector_span(c0, c_mul, VW)
        m1 = vload(MASK, q1)
        m2 = vload(MASK, q2)
        g01 = vload(Gb, r0 + o1)
        g02 = vload(Gb, r0 + o2)
        g11 = vload(Gb, r0 + c_str + o1)
        g12 = vload(Gb, r0 + c_str + o2)
        g21 = vload(Gb, r0 + 2 * c_str + o1)
        g22 = vload(Gb, r0 + 2 * c_str + o2)
        first = c0 == 0
        for a in range(a_mul):
            if do_gw:
                s0 = T[t0 + a]
                s1 = T[t0 + a_mul + a]
                s2 = T[t0 + 2 * a_mul + a]
                v1 = vfma(vfma(vfma(vzero(Wrow), g01, s0), g11, s1), g21, s2)
                v2 = vfma(vfma(vfma(vzero(Wrow), g02, s0), g12, s1), g22, s2)
                _gw_vec_store(GWrow, wbase + a * wa, o1, o2, v1, v2, m1, m2, assign)
            if need_m:
                wr = wbase + a * wa
                if stream and first:
                    _prefetch_row(Wrow, wr, c_mul, False)
                w1 = vmul(vload(Wrow, wr + o1), m1)
                w2 = vmul(vload(Wrow, wr + o2), m2)
                d0 = vsum(vadd(vmul(w1, g01), vmul(w2, g02)))
                d1 = vsum(vadd(vmul(w1, g11), vmul(w2, g12)))
                d2 = vsum(vadd(vmul(w1, g21), vmul(w2, g22)))
                if first:
                    M[t0 + a] = d0
                    M[t0 + a_mul + a] = d1
                    M[t0 + 2 * a_mul + a] = d2
                else:
                    M[t0 + a] += d0
                    M[t0 + a_mul + a] += d1
                    M[t0 + 2 * a_mul + a] += d2
        c0 += 2 * VW


@numba.njit(fastmath=True, cache=True, inline="always")
def _uvw_grads_wide1(GWrow, Wrow, wbase, wa, Gb, r0, c0, T, t0, M, a_mul, do_gw, assign, need_m, stream):
    # columns c0 .. c0 + 6 VW (all inside the row) of one row of G in six registers: gW[a, c0 ...] (+)= T[a] G and
    # M[a] (+)= <W[a, c0 ...], G>, each row of W and gW swept once, front to back
    VW = vwidth(Wrow)
    g0 = vload(Gb, r0 + c0)
    g1 = vload(Gb, r0 + c0 + VW)
    g2 = vload(Gb, r0 + c0 + 2 * VW)
    g3 = vload(Gb, r0 + c0 + 3 * VW)
    g4 = vload(Gb, r0 + c0 + 4 * VW)
    g5 = vload(Gb, r0 + c0 + 5 * VW)
    first = c0 == 0
    for a in range(a_mul):
        wr = wbase + a * wa + c0
        if do_gw:
            s = T[t0 + a]
            if assign:
                z = vzero(Wrow)
                vstore(GWrow, wr, vfma(z, g0, s))
                vstore(GWrow, wr + VW, vfma(z, g1, s))
                vstore(GWrow, wr + 2 * VW, vfma(z, g2, s))
                vstore(GWrow, wr + 3 * VW, vfma(z, g3, s))
                vstore(GWrow, wr + 4 * VW, vfma(z, g4, s))
                vstore(GWrow, wr + 5 * VW, vfma(z, g5, s))
            else:
                vstore(GWrow, wr, vfma(vload(GWrow, wr), g0, s))
                vstore(GWrow, wr + VW, vfma(vload(GWrow, wr + VW), g1, s))
                vstore(GWrow, wr + 2 * VW, vfma(vload(GWrow, wr + 2 * VW), g2, s))
                vstore(GWrow, wr + 3 * VW, vfma(vload(GWrow, wr + 3 * VW), g3, s))
                vstore(GWrow, wr + 4 * VW, vfma(vload(GWrow, wr + 4 * VW), g4, s))
                vstore(GWrow, wr + 5 * VW, vfma(vload(GWrow, wr + 5 * VW), g5, s))
        if need_m:
            if stream:
                _prefetch_row(Wrow, wr, 6 * VW, False)
            d01 = vadd(vmul(vload(Wrow, wr), g0), vmul(vload(Wrow, wr + VW), g1))
            d23 = vadd(vmul(vload(Wrow, wr + 2 * VW), g2), vmul(vload(Wrow, wr + 3 * VW), g3))
            d45 = vadd(vmul(vload(Wrow, wr + 4 * VW), g4), vmul(vload(Wrow, wr + 5 * VW), g5))
            d = vsum(vadd(vadd(d01, d23), d45))
            if first:
                M[t0 + a] = d
            else:
                M[t0 + a] += d


@numba.njit(fastmath=True, cache=True, inline="always")
def _uvw_grads_vec1(GWrow, Wrow, wbase, wa, Gb, r0, c_mul, T, t0, M, a_mul, do_gw, assign, need_m, MASK, stream):
    # one row of G: gW[a] (+)= T[a] G and M[a] (+)= <W[a], G>; whole chunks of six vectors by the wide kernel, the
    # rest two vectors at a time
    VW = vwidth(Wrow)
    c0 = 0
    while c_mul - c0 >= 6 * VW:
        _uvw_grads_wide1(GWrow, Wrow, wbase, wa, Gb, r0, c0, T, t0, M, a_mul, do_gw, assign, need_m, stream)
        c0 += 6 * VW
    while c0 < c_mul:
        o1, q1, o2, q2 = _vector_span(c0, c_mul, VW)
        m1 = vload(MASK, q1)
        m2 = vload(MASK, q2)
        g1 = vload(Gb, r0 + o1)
        g2 = vload(Gb, r0 + o2)
        first = c0 == 0
        for a in range(a_mul):
            if do_gw:
                s0 = T[t0 + a]
                _gw_vec_store(
                    GWrow, wbase + a * wa, o1, o2, vfma(vzero(Wrow), g1, s0), vfma(vzero(Wrow), g2, s0), m1, m2, assign
                )
            if need_m:
                wr = wbase + a * wa
                if stream and first:
                    _prefetch_row(Wrow, wr, c_mul, False)
                d = vsum(vadd(vmul(vmul(vload(Wrow, wr + o1), m1), g1), vmul(vmul(vload(Wrow, wr + o2), m2), g2)))
                if first:
                    M[t0 + a] = d
                else:
                    M[t0 + a] += d
        c0 += 2 * VW


@numba.njit(fastmath=True, cache=True)
def _uvw_grads(
    GWrow, Wrow, wbase, wa, Gb, c_off, c_str, c_mul, c_dim, T, M, a_mul, do_gw, gw_set, need_m, MASK, stream,
):  # fmt: skip
    # gW[a, c] (+)= sum_k T[k, a] G[k, c] and M[k, a] = sum_c W[a, c] G[k, c], in one sweep: output rows of G in
    # groups of three, so each loaded element of G, W and gW serves several multiply-adds; with ``gw_set`` the first
    # group writes gW instead of accumulating (no zeroing pass). Rows of at least one SIMD vector: the register-blocked
    # kernels above
    if c_mul >= vwidth(Wrow):
        k0 = 0
        while k0 < c_dim:
            assign = gw_set and k0 == 0
            if c_dim - k0 >= 3:
                _uvw_grads_vec3(
                    GWrow, Wrow, wbase, wa, Gb, c_off + k0 * c_str, c_str, c_mul, T, k0 * a_mul, M, a_mul, do_gw,
                    assign, need_m, MASK, stream,
                )  # fmt: skip
                k0 += 3
            else:
                _uvw_grads_vec1(
                    GWrow, Wrow, wbase, wa, Gb, c_off + k0 * c_str, c_mul, T, k0 * a_mul, M, a_mul, do_gw, assign,
                    need_m, MASK, stream,
                )  # fmt: skip
                k0 += 1
        return
    for a in range(a_mul):
        wr = wbase + a * wa
        Ws = Wrow[wr : wr + c_mul]
        GWs = GWrow[wr : wr + c_mul]
        k0 = 0
        while k0 < c_dim:
            r0 = c_off + k0 * c_str
            G0 = Gb[r0 : r0 + c_mul]
            t0 = T[k0 * a_mul + a]
            assign = gw_set and k0 == 0
            if c_dim - k0 >= 3:
                G1 = Gb[r0 + c_str : r0 + c_str + c_mul]
                G2 = Gb[r0 + 2 * c_str : r0 + 2 * c_str + c_mul]
                t1 = T[(k0 + 1) * a_mul + a]
                t2 = T[(k0 + 2) * a_mul + a]
                if do_gw and assign:
                    for c in range(c_mul):
                        GWs[c] = t0 * G0[c] + t1 * G1[c] + t2 * G2[c]
                elif do_gw:
                    for c in range(c_mul):
                        GWs[c] += t0 * G0[c] + t1 * G1[c] + t2 * G2[c]
                if need_m:
                    s0 = 0.0
                    s1 = 0.0
                    s2 = 0.0
                    for c in range(c_mul):
                        w = Ws[c]
                        s0 += w * G0[c]
                        s1 += w * G1[c]
                        s2 += w * G2[c]
                    M[k0 * a_mul + a] = s0
                    M[(k0 + 1) * a_mul + a] = s1
                    M[(k0 + 2) * a_mul + a] = s2
                k0 += 3
            else:
                if do_gw and assign:
                    for c in range(c_mul):
                        GWs[c] = t0 * G0[c]
                elif do_gw:
                    for c in range(c_mul):
                        GWs[c] += t0 * G0[c]
                if need_m:
                    s0 = 0.0
                    for c in range(c_mul):
                        s0 += Ws[c] * G0[c]
                    M[k0 * a_mul + a] = s0
                k0 += 1


@numba.njit(fastmath=True, cache=True, inline="always")
def _uvw_path_fields(tab, p):
    # the columns of path p's row of the fully connected kernel's table that its loops use
    return (tab[p, _WOFF], tab[p, _WA], tab[p, _WB], tab[p, _AOFF], tab[p, _AMUL], tab[p, _ADIM], tab[p, _BOFF],
            tab[p, _BMUL], tab[p, _COFF], tab[p, _CMUL], tab[p, _CDIM], tab[p, _N0], tab[p, _N1], tab[p, _ASTR],
            tab[p, _BSTR], tab[p, _CSTR])


@numba.njit(fastmath=True, cache=True, inline="always")
def _uvw_item(
    tab, ci, cj, ck, cv, xw, Wrow, Xb, Yb, Gb, Ob, GXb, GYb, GWrow, do_out, do_gx, do_gy, do_gw, gw_set, T, M, U, MASK,
    stream,
):  # fmt: skip
    for p in range(tab.shape[0]):
        (w_off, wa, wb, a_off, a_mul, a_dim, b_off, b_mul, c_off, c_mul, c_dim, n0, n1, a_str, b_str,
         c_str) = _uvw_path_fields(tab, p)
        need_m = do_gx or do_gy
        for b in range(b_mul):
            wbase = w_off + b * wb
            if xw[p]:
                # x-first order (fewer input than output components): U = X W (a_dim x c_mul), then the CG entries
                # map U's rows to the output rows; the gradients go through V = CG(y, G) (a_dim x c_mul), so that
                # gW = X^T V, gX = V W^T and gy = <U, G> per entry
                Xs = Xb[a_off : a_off + a_dim * a_mul]
                if do_out or do_gy:
                    _zero(U, a_dim * c_mul)
                    _uvw_out(U, 0, c_mul, c_mul, a_dim, Xs, a_mul, Wrow, wbase, wa, MASK, stream)
                if do_out:
                    _cg_rows_vec(Ob, c_off, c_str, U, 0, c_mul, c_mul, Yb, b_off, b_str, b, ck, ci, cj, cv, n0, n1, MASK)
                if do_gy:
                    wide = c_mul >= vwidth(U)
                    for n in range(n0, n1):
                        r = c_off + ck[n] * c_str
                        if wide:
                            s = _dot_vec(U, ci[n] * c_mul, Gb, r, c_mul)
                        else:
                            Us = U[ci[n] * c_mul : (ci[n] + 1) * c_mul]
                            Gs = Gb[r : r + c_mul]
                            s = 0.0
                            for c in range(c_mul):
                                s += Us[c] * Gs[c]
                        GYb[b_off + cj[n] * b_str + b] += cv[n] * s
                if do_gw or do_gx:
                    _zero(T, a_dim * c_mul)
                    _cg_rows_vec(T, 0, c_mul, Gb, c_off, c_str, c_mul, Yb, b_off, b_str, b, ci, ck, cj, cv, n0, n1, MASK)
                    _uvw_grads(
                        GWrow, Wrow, wbase, wa, T, 0, c_mul, c_mul, a_dim, Xs, M, a_mul, do_gw, gw_set, do_gx, MASK,
                        stream,
                    )
                    if do_gx:
                        GXs = GXb[a_off : a_off + a_dim * a_mul]
                        for r in range(a_dim * a_mul):
                            GXs[r] += M[r]
                continue
            if do_out or do_gw:
                _zero(T, c_dim * a_mul)
                _cg_rows_vec(T, 0, a_mul, Xb, a_off, a_str, a_mul, Yb, b_off, b_str, b, ck, ci, cj, cv, n0, n1, MASK)
            if do_out:
                _uvw_out(Ob, c_off, c_str, c_mul, c_dim, T, a_mul, Wrow, wbase, wa, MASK, stream)
            if do_gw or need_m:
                _uvw_grads(
                    GWrow, Wrow, wbase, wa, Gb, c_off, c_str, c_mul, c_dim, T, M, a_mul, do_gw, gw_set, need_m, MASK,
                    stream,
                )
            if need_m and a_mul >= vwidth(M):
                for n in range(n0, n1):
                    mk = ck[n] * a_mul
                    ia = a_off + ci[n] * a_str
                    jb = b_off + cj[n] * b_str + b
                    if do_gx:
                        _axpy_vec(GXb, ia, M, mk, cv[n] * Yb[jb], a_mul)
                    if do_gy:
                        GYb[jb] += cv[n] * _dot_vec(Xb, ia, M, mk, a_mul)
            elif need_m:
                for n in range(n0, n1):
                    mk = ck[n] * a_mul
                    Ms = M[mk : mk + a_mul]
                    ia = a_off + ci[n] * a_str
                    jb = b_off + cj[n] * b_str + b
                    if do_gx:
                        coef = cv[n] * Yb[jb]
                        GXs = GXb[ia : ia + a_mul]
                        for a in range(a_mul):
                            GXs[a] += coef * Ms[a]
                    if do_gy:
                        Xs = Xb[ia : ia + a_mul]
                        s = 0.0
                        for a in range(a_mul):
                            s += Xs[a] * Ms[a]
                        GYb[jb] += cv[n] * s


@numba.njit(fastmath=True, cache=True, inline="always")
def _carve(buf, p0, n):
    # the n elements of buf from p0, and the offset after them
    return buf[p0:p0 + n], p0 + n


@numba.njit(nogil=True, fastmath=True, cache=True)
def _uvw_pass(
    tab, ci, cj, ck, cv, xw, W, w_batched, X, Y, G, O, GX, GY, GW, do_out, do_gx, do_gy, do_gw, gw_cover,
    seg1, seg2, seg3, transpose, tsize, nt_gw, z0, z1, q,
):  # fmt: skip
    """Items ``z0:z1`` of the fully connected kernel: the output (``do_out``) and/or the gradients; ``GW`` is
    ``(N, numel)`` for per-item weights, else ``(nchunks, numel)`` partial sums with this call owning row ``q``.
    ``gw_cover``: the paths cover every weight, so per-item weight gradients are written without zeroing first.
    ``nt_gw``: per-item weight gradients are summed in a local row and written with non-temporal stores."""
    dt = W.dtype
    # one allocation for all the item buffers, used through unmanaged views: the per-item views and the calls to
    # _uvw_out/_uvw_grads then update no reference count (see _simd.unmanaged); W and GW are arguments, kept alive by
    # the caller
    VW = vwidth(W)
    sizes = (X.shape[1], Y.shape[1], G.shape[1], O.shape[1], GX.shape[1], GY.shape[1], tsize, tsize, tsize, 2 * VW,
             GW.shape[1] if nt_gw else 0)
    buf = np.zeros(sum(sizes), dtype=dt)
    ubuf = unmanaged(buf)
    Xb, p0 = _carve(ubuf, 0, sizes[0])
    Yb, p0 = _carve(ubuf, p0, sizes[1])
    Gb, p0 = _carve(ubuf, p0, sizes[2])
    Ob, p0 = _carve(ubuf, p0, sizes[3])
    GXb, p0 = _carve(ubuf, p0, sizes[4])
    GYb, p0 = _carve(ubuf, p0, sizes[5])
    T, p0 = _carve(ubuf, p0, tsize)
    M, p0 = _carve(ubuf, p0, tsize)
    U, p0 = _carve(ubuf, p0, tsize)
    MASK, p0 = _carve(ubuf, p0, 2 * VW)
    GWb, p0 = _carve(ubuf, p0, sizes[10])
    MASK[VW:] = 1.0
    W = unmanaged(W)
    GW = unmanaged(GW)
    numel = GW.shape[1]
    if do_gw and not w_batched:
        _zero(GW[q], numel)
    need_x = do_out or do_gw or do_gy
    need_y = do_out or do_gw or do_gx
    need_g = do_gw or do_gx or do_gy
    for z in range(z0, z1):
        if need_x:
            _load_row(X, z, Xb, seg1, transpose)
        if need_y:
            _load_row(Y, z, Yb, seg2, transpose)
        if need_g:
            _load_row(G, z, Gb, seg3, transpose)
        if do_out:
            _zero(Ob, O.shape[1])
        if do_gx:
            _zero(GXb, GX.shape[1])
        if do_gy:
            _zero(GYb, GY.shape[1])
        GWrow = GW[z] if (do_gw and w_batched) else GW[q if do_gw else 0]
        if nt_gw:
            GWrow = GWb
        gw_set = do_gw and w_batched and gw_cover
        if do_gw and w_batched and not gw_cover:
            _zero(GWrow, numel)
        _uvw_item(
            tab, ci, cj, ck, cv, xw, W[z] if w_batched else W[0], Xb, Yb, Gb, Ob, GXb, GYb, GWrow,
            do_out, do_gx, do_gy, do_gw, gw_set, T, M, U, MASK, w_batched,
        )  # fmt: skip
        if do_out:
            _store_row(Ob, O, z, seg3, transpose)
        if do_gx:
            _store_row(GXb, GX, z, seg1, transpose)
        if do_gy:
            _store_row(GYb, GY, z, seg2, transpose)
        if nt_gw:
            _copy_nt(GWb, GW, z * numel, numel)
    if nt_gw:
        store_fence()
    keepalive(buf)


@numba.njit(fastmath=True, cache=True, inline="always")
def _zero_vec(D, d, n):
    # D[d : d + n] = 0 by vector stores (a memset call here would make LLVM spill and reload every live vector
    # register around it), the last vector moved back to end at d + n; n >= vwidth
    VW = vwidth(D)
    z = vzero(D)
    c = 0
    while c + VW < n:
        vstore(D, d + c, z)
        c += VW
    vstore(D, d + n - VW, z)


@numba.njit(fastmath=True, cache=True, inline="always")
def _cg_groups_vec(D, d_off, d_str, S, s_off, s_str, n_col, Yb, b_off, b_str, b, ci, cj, ck, cv, n0, n1, assign, MASK):
    # D[d_off + k d_str + c] (=, assign; else +=) sum over the entries n with ck[n] = k of cv[n] y[j_n] S[s_off + ci[n]
    # s_str + c], for rows of n_col >= vwidth columns; the entries are sorted by ck, so each target row is summed in
    # registers (two vectors of columns at a time) and written once, with no store-to-load chain through memory
    VW = vwidth(D)
    c0 = 0
    while c0 < n_col:
        o1, q1, o2, q2 = _vector_span(c0, n_col, VW)
        n = n0
        while n < n1:
            k = load_at(ck, n)
            x = vzero(D)
            y = vzero(D)
            while n < n1 and load_at(ck, n) == k:
                coef = load_at(cv, n) * load_at(Yb, b_off + load_at(cj, n) * b_str + b)
                r = s_off + load_at(ci, n) * s_str
                x = vfma(x, vload(S, r + o1), coef)
                y = vfma(y, vload(S, r + o2), coef)
                n += 1
            r = d_off + k * d_str
            if assign:
                vstore(D, r + o2, y)
                vstore(D, r + o1, x)
            else:
                _vector_rmw(D, r, o1, o2, x, y, vload(MASK, q1), vload(MASK, q2))
        c0 += 2 * VW


@numba.njit(fastmath=True, cache=True, inline="always")
def _uvw_forward_path(tab, p, ci, cj, ck, cv, xw, Wrow, Xb, Yb, Ob, T, MASK, stream):
    # path p of one item: Ob += the path's contribution (see _uvw_forward)
    VW = vwidth(Wrow)
    (w_off, wa, wb, a_off, a_mul, a_dim, b_off, b_mul, c_off, c_mul, c_dim, n0, n1, a_str, b_str,
     c_str) = _uvw_path_fields(tab, p)
    for b in range(b_mul):
        wbase = w_off + b * wb
        if xw[p]:
            # U (a_dim x c_mul) = X W, then the output rows += CG(U, y)
            n = a_dim * c_mul
            if n >= VW:
                _zero_vec(T, 0, n)
            else:
                _zero(T, n)
            _uvw_out_body(
                T, 0, c_mul, c_mul, a_dim, Xb[a_off : a_off + a_dim * a_mul], a_mul, Wrow, wbase, wa, MASK, stream
            )
            if c_mul >= VW:
                _cg_groups_vec(Ob, c_off, c_str, T, 0, c_mul, c_mul, Yb, b_off, b_str, b, ci, cj, ck, cv, n0, n1, False,
                               MASK)
            else:
                _cg_rows(Ob, c_off, c_str, T, 0, c_mul, c_mul, Yb, b_off, b_str, b, ck, ci, cj, cv, n0, n1)
            continue
        # T (c_dim x a_mul) = CG(x, y), then the output rows += T W
        if a_mul >= VW:
            _cg_groups_vec(T, 0, a_mul, Xb, a_off, a_str, a_mul, Yb, b_off, b_str, b, ci, cj, ck, cv, n0, n1, True, MASK)
        else:
            _zero(T, c_dim * a_mul)
            _cg_rows(T, 0, a_mul, Xb, a_off, a_str, a_mul, Yb, b_off, b_str, b, ck, ci, cj, cv, n0, n1)
        _uvw_out_body(Ob, c_off, c_str, c_mul, c_dim, T, a_mul, Wrow, wbase, wa, MASK, stream)


@numba.njit(fastmath=True, cache=True, inline="always")
def _uvw_forward_load(X, Y, z, Xb, Yb, Ob, seg1, seg2, transpose):
    _load_row(X, z, Xb, seg1, transpose)
    _load_row(Y, z, Yb, seg2, transpose)
    if Ob.shape[0] >= vwidth(Ob):
        _zero_vec(Ob, 0, Ob.shape[0])
    else:
        _zero(Ob, Ob.shape[0])


@numba.njit(nogil=True, fastmath=True, cache=True)
def _uvw_forward(tab, ci, cj, ck, cv, xw, W, w_batched, X, Y, O, seg1, seg2, seg3, transpose, tsize, z0, z1, q):
    """Items ``z0:z1`` of the fully connected kernel's forward pass, ``O = sum_paths (CG(x, y) W)``: per item and
    path either ``T = CG(x, y)`` (the Clebsch-Gordan entries, sorted by output component, summed in registers) then
    ``O += T W``, or (x-first, see `_uvw_order`) ``U = X W`` then ``O += CG(U, y)``; every row of ``T`` receives an
    entry (`_CpuPlan.uvw_assign`), so ``T`` is assigned, never zeroed. Unlike `_uvw_pass` (any set of outputs), nothing
    here is called out of line: the micro-kernels inline into one loop (the calls and their reference counting cost
    some 11% of the forward pass)."""
    dt = W.dtype
    VW = vwidth(W)
    sizes = (X.shape[1], Y.shape[1], O.shape[1], tsize, 2 * VW)
    buf = np.zeros(sum(sizes), dtype=dt)
    ubuf = unmanaged(buf)
    Xb, p0 = _carve(ubuf, 0, sizes[0])
    Yb, p0 = _carve(ubuf, p0, sizes[1])
    Ob, p0 = _carve(ubuf, p0, sizes[2])
    T, p0 = _carve(ubuf, p0, sizes[3])
    MASK, p0 = _carve(ubuf, p0, sizes[4])
    MASK[VW:] = 1.0
    W = unmanaged(W)
    tab, ci, cj, ck, cv, xw = unmanaged(tab), unmanaged(ci), unmanaged(cj), unmanaged(ck), unmanaged(cv), unmanaged(xw)
    for z in range(z0, z1):
        _uvw_forward_load(X, Y, z, Xb, Yb, Ob, seg1, seg2, transpose)
        Wrow = W[z] if w_batched else W[0]
        for p in range(tab.shape[0]):
            _uvw_forward_path(tab, p, ci, cj, ck, cv, xw, Wrow, Xb, Yb, Ob, T, MASK, w_batched)
        _store_row(Ob, O, z, seg3, transpose)
    keepalive(buf)


def _uvw_eligible(desc, weight_form) -> bool:
    """The fully connected kernel applies when every path is a weighted ``uvw`` path in e3nn's ``W[u, v, w]`` layout."""
    table = weight_form[0]
    if len(desc.paths) == 0 or len(table) == 0:
        return False
    if any(p.mode != "uvw" or not p.has_weight for p in desc.paths):
        return False
    if len(table) != len(desc.paths):  # a path without CG entries is left out of the table
        return False
    return bool(
        np.all(table[:, _FORM] == 0)
        and np.all(table[:, _WC] == 1)
        and np.all(table[:, _WB] == table[:, _CMUL])
        and np.all(table[:, _WA] == table[:, _BMUL] * table[:, _CMUL])
    )


def _uvw_run(desc, plan, W, X, Y, G, outs, transpose):
    """Run the fully connected kernel; ``outs`` maps 'out', 'gx', 'gy', 'gw' to output tensors (or absent)."""
    ref = X if X is not None else Y
    np_dtype = ref.numpy().dtype
    N = ref.shape[0]
    dummy = np.zeros((1, 1), dtype=np_dtype)
    w_batched = W.dim() == 2
    Wn = W.numpy() if w_batched else W.reshape(1, -1).numpy()

    def arr(t):
        return dummy if t is None else t.numpy()

    gw = outs.get("gw")
    if set(outs) == {"out"} and plan.uvw_assign:
        return _parallel(
            _uvw_forward, N, *plan.uvw_form, plan.uvw_xw, Wn, w_batched, arr(X), arr(Y), outs["out"].numpy(),
            plan.segs[1], plan.segs[2], plan.segs[3], transpose, plan.uvw_size,
            min_rows=plan.min_rows,
        )  # fmt: skip
    return _parallel(
        _uvw_pass, N, *plan.weight_form, plan.uvw_xw, Wn, w_batched, arr(X), arr(Y), arr(G), arr(outs.get("out")),
        arr(outs.get("gx")), arr(outs.get("gy")), arr(gw), "out" in outs, "gx" in outs, "gy" in outs, gw is not None,
        plan.uvw_cover, plan.segs[1], plan.segs[2], plan.segs[3], transpose, plan.uvw_size,
        gw is not None and w_batched and _use_nt_flat(gw),
        min_rows=plan.min_rows,
    )  # fmt: skip


def _uvw_order(table):
    """Per path of the fully connected kernel, whether to multiply the input by the weights first (``x-first``:
    ``U = X W``, then the Clebsch-Gordan entries) instead of contracting the inputs first (``T = CG(x, y)``, then
    ``T W``): the order with fewer multiply-adds, e.g. x-first for scalar inputs into vector outputs (one row of
    ``X W`` instead of three rows of ``T W``). Returns the flags and the buffer size both orders need."""
    a_mul, a_dim, c_mul, c_dim = table[:, _AMUL], table[:, _ADIM], table[:, _CMUL], table[:, _CDIM]
    nnz = table[:, _N1] - table[:, _N0]
    t_first = c_dim * a_mul * c_mul + nnz * a_mul
    x_first = a_dim * a_mul * c_mul + nnz * c_mul
    xw = ((x_first < t_first) & (table[:, _ASTR] == a_mul)).astype(np.int8)
    size = int(max(1, (c_dim * np.maximum(a_mul, table[:, _BMUL])).max(), (a_dim * np.maximum(a_mul, c_mul)).max()))
    return xw, size


# ---------------------------------------------------------------------------------------------------------------------
# Flat item-blocked kernels: the paths of a form expanded, once per plan, into scalar entries
#   C[t] += coef * W[w] * A[a] * B[b]     (element indices of the ir_mul item buffers; w = -1: no weight)
# grouped by their target element t (rows / ptr, like CSR). Each entry is then one multiply-add over the L lanes with
# no per-entry index arithmetic or branching on the path's mode, and each target row of the lane buffer is written
# while it is hot. Used by the item-blocked family when the expansion stays small (see _FLAT_MAX).
# ---------------------------------------------------------------------------------------------------------------------
#: at most this many flat entries per form (five 8-byte arrays: 40 MB); larger expansions use the per-path kernels
_FLAT_MAX = 1_000_000


def _flatten(table, ci, cj, ck, cv, weight_target: bool):
    """Expand a form's paths into entries (target, a, b, w, coef) sorted by target; returns the CSR arrays
    ``rows, ptr, ea, eb, ew, coef`` and whether no entry has a weight, or None when the expansion would exceed
    ``_FLAT_MAX`` entries."""
    parts = []
    total = 0
    for row in table:
        form, hasw, w_off, wa, wb, wc = (int(v) for v in row[:6])
        a_off, a_mul, _, b_off, b_mul, _, c_off, c_mul, _, n0, n1, a_str, b_str, c_str = (int(v) for v in row[6:20])
        n = np.arange(n0, n1)
        if len(n) == 0:
            continue
        if form == 0:
            a, b, c = np.meshgrid(np.arange(a_mul), np.arange(b_mul), np.arange(c_mul), indexing="ij")
            wr = a * wa + b * wb + c * wc
        elif form == 1:
            a, b = np.meshgrid(np.arange(a_mul), np.arange(b_mul), indexing="ij")
            c = a
            wr = a * wa + b * wb
        elif form == 2:
            a, b = np.meshgrid(np.arange(a_mul), np.arange(b_mul), indexing="ij")
            c = b
            wr = a * wa + b * wb
        elif form == 3:
            a, c = np.meshgrid(np.arange(a_mul), np.arange(c_mul), indexing="ij")
            b = a
            wr = a * wa + c * wc
        else:
            a = np.arange(a_mul)
            b = c = a
            wr = a * wa
        a, b, c, wr = (np.ravel(v) for v in (a, b, c, wr))
        total += len(n) * len(a)
        if total > _FLAT_MAX:
            return None
        ea = (a_off + ci[n] * a_str)[:, None] + a[None, :]
        eb = (b_off + cj[n] * b_str)[:, None] + b[None, :]
        ec = (c_off + ck[n] * c_str)[:, None] + c[None, :]
        ew = np.broadcast_to((w_off + wr)[None, :] if hasw else np.full_like(wr, -1)[None, :], ea.shape)
        co = np.broadcast_to(cv[n][:, None], ea.shape)
        parts.append([v.ravel() for v in (ec, ea, eb, ew, co)])
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, np.zeros(1, dtype=np.int64), empty, empty, empty, np.zeros(0, dtype=cv.dtype), True
    ec, ea, eb, ew, co = (np.concatenate(v) for v in zip(*parts))
    if weight_target:
        # target = weight index; the third operand's element takes the place of the weight index
        ec, ew = ew, ec
    order = np.argsort(ec, kind="stable")
    ec, ea, eb, ew, co = ec[order], ea[order], eb[order], ew[order], co[order]
    rows, starts = np.unique(ec, return_index=True)
    ptr = np.append(starts, len(ec)).astype(np.int64)
    return (rows.astype(np.int64), ptr, ea.astype(np.int64), eb.astype(np.int64), ew.astype(np.int64),
            np.ascontiguousarray(co), bool(np.all(ew < 0)))


@numba.njit(fastmath=True, cache=True, inline="always")
def _flat_row_range_vec(rows, ptr, ea, eb, ew, co, unweighted, w_batched, Wsh, Ab, Bb, Wb, Cb, L, weightless,
                        r0, r1, e0, e1):
    # target elements e0:e1 of the lane buffer, at Cb[(e - e0) * L:], from the flat rows r0:r1 (their targets lie in
    # e0:e1), with explicit SIMD vectors: four vectors of lanes of a target row accumulated in registers over all its
    # entries, then stored once (no zeroing pass, no reload per entry); target elements without entries are zeroed.
    # L is a multiple of four vectors.
    VW = vwidth(Ab)
    covered = e0
    for r in range(r0, r1):
        if covered < rows[r]:  # elements without entries
            _zero(Cb[(covered - e0) * L :], (rows[r] - covered) * L)
        covered = rows[r] + 1
        t = (rows[r] - e0) * L
        for l0 in range(0, L, 4 * VW):
            x0 = vzero(Ab)
            x1 = vzero(Ab)
            x2 = vzero(Ab)
            x3 = vzero(Ab)
            for n in range(ptr[r], ptr[r + 1]):
                c = co[n]
                a = ea[n] * L + l0
                b = eb[n] * L + l0
                if not unweighted:
                    w = ew[n]
                    if w < 0:
                        if not weightless:
                            continue
                    elif w_batched:
                        v = w * L + l0
                        x0 = vfma(x0, vmul(vmul(vload(Ab, a), vload(Bb, b)), vload(Wb, v)), c)
                        x1 = vfma(x1, vmul(vmul(vload(Ab, a + VW), vload(Bb, b + VW)), vload(Wb, v + VW)), c)
                        x2 = vfma(x2, vmul(vmul(vload(Ab, a + 2 * VW), vload(Bb, b + 2 * VW)), vload(Wb, v + 2 * VW)), c)
                        x3 = vfma(x3, vmul(vmul(vload(Ab, a + 3 * VW), vload(Bb, b + 3 * VW)), vload(Wb, v + 3 * VW)), c)
                        continue
                    else:
                        c = c * Wsh[w]
                x0 = vfma(x0, vmul(vload(Ab, a), vload(Bb, b)), c)
                x1 = vfma(x1, vmul(vload(Ab, a + VW), vload(Bb, b + VW)), c)
                x2 = vfma(x2, vmul(vload(Ab, a + 2 * VW), vload(Bb, b + 2 * VW)), c)
                x3 = vfma(x3, vmul(vload(Ab, a + 3 * VW), vload(Bb, b + 3 * VW)), c)
            vstore(Cb, t + l0, x0)
            vstore(Cb, t + l0 + VW, x1)
            vstore(Cb, t + l0 + 2 * VW, x2)
            vstore(Cb, t + l0 + 3 * VW, x3)
    if covered < e1:
        _zero(Cb[(covered - e0) * L :], (e1 - covered) * L)


@numba.njit(fastmath=True, cache=True, inline="always")
def _flat_rows_vec(rows, ptr, ea, eb, ew, co, unweighted, w_batched, Wsh, Ab, Bb, Wb, Cb, L, weightless):
    # every target element of the lane buffer (see _flat_row_range_vec)
    _flat_row_range_vec(rows, ptr, ea, eb, ew, co, unweighted, w_batched, Wsh, Ab, Bb, Wb, Cb, L, weightless,
                        0, rows.shape[0], 0, Cb.shape[0] // L)


#: target elements per chunk of the chunked flat forward kernel (a run-time argument): a chunk's lane rows (64 x 32
#: float32 lanes, 8 KB) stay in the L1 cache between their computation and their store. Measured, full l <= 6
#: product, one thread of a Xeon: 23.7 ms per 10,000 items with one store pass per block, 22.4 ms in chunks of 64
FLAT_CHUNK = 64


@numba.njit(fastmath=True, cache=True, inline="always")
def _flat_chunks_vec(rows, ptr, ea, eb, ew, co, unweighted, w_batched, Wsh, Ab, Bb, Wb, Cb, L, weightless,
                     Cflat, zb, nb, E, chunk):
    # a block's output (target elements in lane-buffer order, E per item) in chunks of `chunk` elements: each chunk
    # is computed into the start of Cb and stored to the items' rows at once, so the stores (misses to memory) drain
    # while the next chunk is computed, instead of one store pass over the whole block (307 KB for the full l <= 6
    # product, an L2-resident buffer read back with stride) after all the computing
    r = 0
    R = rows.shape[0]
    for e0 in range(0, E, chunk):
        e1 = min(E, e0 + chunk)
        r0 = r
        while r < R and rows[r] < e1:
            r += 1
        _flat_row_range_vec(rows, ptr, ea, eb, ew, co, unweighted, w_batched, Wsh, Ab, Bb, Wb, Cb, L, weightless,
                            r0, r, e0, e1)
        _store_chunk_vec(Cb, Cflat, zb, nb, E, L, e0, e1, False)


@numba.njit(fastmath=True, cache=True, inline="always")
def _copy_nt(src, dst, d0, n):
    # dst[d0:d0 + n] = src[:n], the vector-aligned part of dst (whose data is vector-aligned) with non-temporal stores
    VW = vwidth(src)
    h = min(n, (VW - d0 % VW) % VW)
    for i in range(h):
        store_at(dst, d0 + i, load_at(src, i))
    i = h
    while i + VW <= n:
        vstore_nt(dst, d0 + i, vload(src, i))
        i += VW
    while i < n:
        store_at(dst, d0 + i, load_at(src, i))
        i += 1


@numba.njit(fastmath=True, cache=True, inline="always")
def _store_chunk_vec(src, Cflat, z0, nb, E, L, e0, e1, wide):
    # Cflat[(z0 + lane) * E + e] = src[(e - e0) * L + lane] for e in e0:e1 and the first nb lanes: squares of VW x VW
    # (wide: wwidth x wwidth, `wtranspose`) transposed in registers, the edges element by element
    VW = wwidth(src) if wide else vwidth(src)
    nl = nb - nb % VW
    ne = e1 - (e1 - e0) % VW
    for e in range(e0, ne, VW):
        for l0 in range(0, nl, VW):
            if wide:
                wtranspose(src, (e - e0) * L + l0, L, Cflat, (z0 + l0) * E + e, E)
            else:
                vtranspose(src, (e - e0) * L + l0, L, Cflat, (z0 + l0) * E + e, E)
    for lane in range(nl):
        base = (z0 + lane) * E
        for e in range(ne, e1):
            Cflat[base + e] = src[(e - e0) * L + lane]
    for lane in range(nl, nb):
        base = (z0 + lane) * E
        for e in range(e0, e1):
            Cflat[base + e] = src[(e - e0) * L + lane]


#: distinct (in1, in2) element pairs per group of the pair-product kernel (`_forward_pairs`): a group's products
#: (pairs x lanes, 48 KB for 192 pairs of 64 float32 lanes) stay in the L1/L2 caches while its target rows read them
PAIR_GROUP = 192


#: entries per formed product below which the pair-product kernel is not used: the full l <= 6 product's forward
#: reads each product 6.9 times (21,762 entries, 3,177 products in 17 groups); its input gradients once (no gain)
PAIR_MIN_REUSE = 2.0


def _pair_groups(rows, ptr, ea, eb, seg_a, seg_b, n_target: int, budget: int):
    """Group the target rows of a flat form so that each group's entries use at most ``budget`` distinct ``(a, b)``
    element pairs (a row with more is a group of its own). Rows are taken in the order of the irreps blocks of their
    first entry's ``a`` and ``b`` (``seg_a``, ``seg_b``: the blocks' first elements), so rows fed by the same blocks (a
    path's output components, and the paths of the same pair of input irreps, which an output sorted by l keeps apart)
    share a group and its products.

    Returns:
        ``(order, g_rows, g_pairs, pa, pb, el, gaps, maxp)``: group ``g`` holds the rows ``order[g_rows[g]:g_rows[g +
        1]]`` and the pairs ``pa[k], pb[k]`` for ``k`` in ``g_pairs[g]:g_pairs[g + 1]``; ``el[n]`` is entry ``n``'s
        pair index within its group; ``gaps`` the target elements without entries; ``maxp`` the most pairs of a group.
    """
    first = ptr[:-1]
    key_a = np.searchsorted(seg_a, ea[first], side="right")
    key_b = np.searchsorted(seg_b, eb[first], side="right")
    order = np.lexsort((np.arange(len(rows)), key_b, key_a))
    el = np.empty(len(ea), dtype=np.int64)
    g_rows, g_pairs, pa, pb = [0], [0], [], []
    local: dict = {}
    for i, r in enumerate(order.tolist()):
        n0, n1 = int(ptr[r]), int(ptr[r + 1])
        keys = list(zip(ea[n0:n1].tolist(), eb[n0:n1].tolist()))
        new = {k for k in keys if k not in local}
        if local and len(local) + len(new) > budget:
            g_rows.append(i)
            g_pairs.append(len(pa))
            local = {}
        for m, k in enumerate(keys):
            j = local.get(k)
            if j is None:
                j = local[k] = len(local)
                pa.append(k[0])
                pb.append(k[1])
            el[n0 + m] = j
    g_rows.append(len(rows))
    g_pairs.append(len(pa))
    g_pairs_a = np.asarray(g_pairs, dtype=np.int64)
    maxp = int(np.diff(g_pairs_a).max()) if len(g_pairs_a) > 1 else 0
    gaps = np.setdiff1d(np.arange(n_target), rows).astype(np.int64)
    return (order.astype(np.int64), np.asarray(g_rows, dtype=np.int64), g_pairs_a, np.asarray(pa, dtype=np.int64),
            np.asarray(pb, dtype=np.int64), el, gaps, maxp)


@numba.njit(fastmath=True, cache=True, inline="always")
def _aligned_empty(n, dt):
    # an uninitialised 1-D array of n elements whose data starts on a 64-byte boundary (a view of a larger array)
    buf = np.empty(n + 16, dtype=dt)  # 16 elements: at least 64 bytes
    k = (64 - buf.ctypes.data % 64) % 64 // buf.itemsize
    return buf[k:k + n]


@numba.njit(fastmath=True, cache=True, inline="always")
def _stream_rows(S, Ep, E, sz, se, Cflat, d_pos, k, tmp):
    # k vectors of Cflat from d_pos on (a vector boundary) with non-temporal stores, taken from the item rows of S
    # (item z at z * Ep, Ep >= E) from item sz, element se on; a vector that spans items is assembled in tmp. Returns
    # the advanced (sz, se, d_pos)
    VW = vwidth(S)
    for _ in range(k):
        if se + VW <= E:
            vstore_nt(Cflat, d_pos, vload(S, sz * Ep + se))
            se += VW
        else:
            for j in range(VW):
                if se == E:
                    sz += 1
                    se = 0
                store_at(tmp, j, load_at(S, sz * Ep + se))
                se += 1
            vstore_nt(Cflat, d_pos, vload(tmp, 0))
        d_pos += VW
    return sz, se, d_pos


@numba.njit(nogil=True, fastmath=True, cache=True)
def _forward_pairs(rows, ptr, co, order, g_rows, g_pairs, pa, pb, el, gaps, maxp, A, B, C, segA, segB, L, nt, z0, z1):
    """The flat forward kernel for forms without weights whose target elements are in lane-buffer order (single
    channels): per group of target rows (`_pair_groups`), the products ``A[a] B[b]`` of its distinct element pairs
    are formed once per block of items, then each target row sums ``coef * P[pair]`` over its entries in registers
    (one vector load per entry and vector instead of two and a multiply; the full l <= 6 product has 21,762 entries
    over 2,401 distinct pairs, 3,177 products formed in 17 groups); the block's output is stored at the end
    (`_store_chunk_vec`), for ``nt`` (large outputs) as described below. L: four wide vectors (`_pair_lanes`), the
    lane buffers aligned to 64 bytes.

    With ``nt``, a block's output is transposed into the item-major staging buffer ``S`` when the block is done, and
    streamed out with non-temporal stores a few vectors after each target row of the *next* block: the stores drain to
    memory while the multiply-adds run (streamed at the end of each block instead, the two phases took about equally
    long and did not overlap: full l <= 6 forward 19.1 -> 16.4 ms on one thread, 10.5-11.0 -> 9.1-10.1 ms on two;
    one store per entry instead of a few per row: 18.4 / 9.7 ms; cached instead of non-temporal stores: 21.0 / 11.5).
    The rows of ``S`` are padded to whole wide vectors (stride ``Ep``), and the block is transposed in squares of wide
    vectors (`_store_chunk_vec` with ``wide``): each store writes one whole cache line (with ``Ep = E`` = 2,401 and
    8 x 8 squares most stores straddled two lines).

    Against eight AVX accumulators, unaligned buffers, unpadded rows and 8 x 8 transposes (full l <= 6 forward, same
    process, alternating): 17.5 -> 15.8 ms on one thread, 9.5-9.8 -> 8.7-8.8 ms on two; the wide accumulators alone
    gave 17.0 -> 16.1 ms, 32-byte aligned rows with 8 x 8 transposes another 0.4 ms."""
    dt = A.dtype
    VW = vwidth(C)
    WW = wwidth(C)
    E = C.shape[1]
    Ep = (E + WW - 1) // WW * WW
    Ab = _aligned_empty(A.shape[1] * L, dt)
    Bb = _aligned_empty(B.shape[1] * L, dt)
    Cb = _aligned_empty(E * L, dt)
    Pb = _aligned_empty(maxp * L, dt)
    S = _aligned_empty(L * Ep if nt else 0, dt)
    tmp = _aligned_empty(VW, dt)
    Cflat = C.reshape(C.shape[0] * E)
    G = g_rows.shape[0] - 1
    n_rows = g_rows[G]
    sz = 0  # the streamed block: item and element of S, place in Cflat, whole vectors left, vectors per row
    se = 0
    d_pos = 0
    pending = 0
    per_row = 0
    for zb in range(z0, z1, L):
        nb = min(L, z1 - zb)
        _load_block(A, zb, nb, Ab, segA, L)
        _load_block(B, zb, nb, Bb, segB, L)
        for i in range(gaps.shape[0]):
            t = gaps[i] * L
            for l0 in range(0, L, WW):
                wstore(Cb, t + l0, wzero(Cb))
        for g in range(G):
            k0 = g_pairs[g]
            for k in range(k0, g_pairs[g + 1]):
                p = (k - k0) * L
                a = load_at(pa, k) * L
                b = load_at(pb, k) * L
                wstore(Pb, p, vmul(wload(Ab, a), wload(Bb, b)))
                wstore(Pb, p + WW, vmul(wload(Ab, a + WW), wload(Bb, b + WW)))
                wstore(Pb, p + 2 * WW, vmul(wload(Ab, a + 2 * WW), wload(Bb, b + 2 * WW)))
                wstore(Pb, p + 3 * WW, vmul(wload(Ab, a + 3 * WW), wload(Bb, b + 3 * WW)))
            for i in range(g_rows[g], g_rows[g + 1]):
                r = load_at(order, i)
                t = load_at(rows, r) * L
                n1 = load_at(ptr, r + 1)
                n0 = load_at(ptr, r)
                # four wide vectors of lanes per entry: four independent multiply-add chains in one pass over the
                # entries (with four AVX vectors and 32 lanes, the per-entry index work weighed twice as much: 23 ms
                # against 21.3 ms, full l <= 6 forward on one thread)
                x0 = wzero(Cb)
                x1 = wzero(Cb)
                x2 = wzero(Cb)
                x3 = wzero(Cb)
                for n in range(n0, n1):
                    c = load_at(co, n)
                    p = load_at(el, n) * L
                    x0 = vfma(x0, wload(Pb, p), c)
                    x1 = vfma(x1, wload(Pb, p + WW), c)
                    x2 = vfma(x2, wload(Pb, p + 2 * WW), c)
                    x3 = vfma(x3, wload(Pb, p + 3 * WW), c)
                wstore(Cb, t, x0)
                wstore(Cb, t + WW, x1)
                wstore(Cb, t + 2 * WW, x2)
                wstore(Cb, t + 3 * WW, x3)
                if pending > 0:
                    k = min(per_row, pending)
                    sz, se, d_pos = _stream_rows(S, Ep, E, sz, se, Cflat, d_pos, k, tmp)
                    pending -= k
        if nt:
            _stream_rows(S, Ep, E, sz, se, Cflat, d_pos, pending, tmp)  # the rest of the previous block
            _store_chunk_vec(Cb, S, 0, nb, Ep, L, 0, E, True)
            d0 = zb * E
            n = nb * E
            h = min(n, (VW - d0 % VW) % VW)  # up to the first vector boundary of C, and the tail: plain stores now
            for i in range(h):
                store_at(Cflat, d0 + i, load_at(S, i // E * Ep + i % E))
            pending = (n - h) // VW
            for i in range(h + pending * VW, n):
                store_at(Cflat, d0 + i, load_at(S, i // E * Ep + i % E))
            sz = h // E
            se = h % E
            d_pos = d0 + h
            per_row = (pending + n_rows - 1) // max(n_rows, 1)
        else:
            _store_chunk_vec(Cb, Cflat, zb, nb, E, L, 0, E, False)
    if nt:
        _stream_rows(S, Ep, E, sz, se, Cflat, d_pos, pending, tmp)
        store_fence()


@numba.njit(nogil=True, fastmath=True, cache=True)
def _forward_flat(rows, ptr, ea, eb, ew, co, unweighted, W, w_batched, A, B, C, segA, segB, segC, segW, L, chunk, z0,
                  z1, weightless):
    # chunk: target elements per chunk of _flat_chunks_vec (FLAT_CHUNK)
    dt = A.dtype
    Ab = np.empty(A.shape[1] * L, dtype=dt)
    Bb = np.empty(B.shape[1] * L, dtype=dt)
    Cb = np.empty(C.shape[1] * L, dtype=dt)
    Wb = np.empty(W.shape[1] * L if w_batched else 1, dtype=dt)
    Wsh = W[0]
    # target elements in the same order in the lane buffer and in the output (e.g. all multiplicities 1): the store is
    # a transpose of whole SIMD-vector squares
    c_identity = True
    for e in range(segC.shape[0]):
        if segC[e] != e:
            c_identity = False
    Cflat = C.reshape(C.shape[0] * C.shape[1])
    for zb in range(z0, z1, L):
        nb = min(L, z1 - zb)
        _load_block(A, zb, nb, Ab, segA, L)
        _load_block(B, zb, nb, Bb, segB, L)
        if w_batched:
            _load_block(W, zb, nb, Wb, segW, L)
        if L % (4 * vwidth(Ab)) == 0:
            if c_identity:
                _flat_chunks_vec(rows, ptr, ea, eb, ew, co, unweighted, w_batched, Wsh, Ab, Bb, Wb, Cb, L, weightless,
                                 Cflat, zb, nb, C.shape[1], chunk)
                continue
            _flat_rows_vec(rows, ptr, ea, eb, ew, co, unweighted, w_batched, Wsh, Ab, Bb, Wb, Cb, L, weightless)
            _store_block(Cb, C, zb, nb, segC, L)
            continue
        _zero(Cb, C.shape[1] * L)
        if unweighted:  # no entry has a weight: the plain loop
            for r in range(rows.shape[0]):
                t = rows[r] * L
                Cs = Cb[t : t + L]
                for n in range(ptr[r], ptr[r + 1]):
                    As = Ab[ea[n] * L : ea[n] * L + L]
                    Bs = Bb[eb[n] * L : eb[n] * L + L]
                    c = co[n]
                    for q in range(L):
                        Cs[q] += c * As[q] * Bs[q]
            _store_block(Cb, C, zb, nb, segC, L)
            continue
        for r in range(rows.shape[0]):
            t = rows[r] * L
            Cs = Cb[t : t + L]
            for n in range(ptr[r], ptr[r + 1]):
                w = ew[n]
                if w < 0 and not weightless:
                    continue
                As = Ab[ea[n] * L : ea[n] * L + L]
                Bs = Bb[eb[n] * L : eb[n] * L + L]
                c = co[n]
                if w >= 0 and w_batched:
                    Ws = Wb[w * L : w * L + L]
                    for q in range(L):
                        Cs[q] += c * Ws[q] * As[q] * Bs[q]
                else:
                    if w >= 0:
                        c = c * Wsh[w]
                    for q in range(L):
                        Cs[q] += c * As[q] * Bs[q]
        _store_block(Cb, C, zb, nb, segC, L)


@numba.njit(nogil=True, fastmath=True, cache=True)
def _weight_flat(rows, ptr, ea, eb, eg, co, GW, w_batched, A, B, G, segA, segB, segG, segW, L, z0, z1, q):
    dt = A.dtype
    numel = GW.shape[1]
    Ab = np.empty(A.shape[1] * L, dtype=dt)
    Bb = np.empty(B.shape[1] * L, dtype=dt)
    Gb = np.empty(G.shape[1] * L, dtype=dt)
    Wb = np.zeros(numel * L, dtype=dt)
    for zb in range(z0, z1, L):
        nb = min(L, z1 - zb)
        _load_block(A, zb, nb, Ab, segA, L)
        _load_block(B, zb, nb, Bb, segB, L)
        _load_block(G, zb, nb, Gb, segG, L)
        if w_batched:
            _zero(Wb, numel * L)
        for r in range(rows.shape[0]):
            t = rows[r] * L
            Ws = Wb[t : t + L]
            for n in range(ptr[r], ptr[r + 1]):
                As = Ab[ea[n] * L : ea[n] * L + L]
                Bs = Bb[eb[n] * L : eb[n] * L + L]
                Gs = Gb[eg[n] * L : eg[n] * L + L]
                c = co[n]
                for k in range(L):
                    Ws[k] += c * As[k] * Bs[k] * Gs[k]
        if w_batched:
            _store_block(Wb, GW, zb, nb, segW, L)
    if not w_batched:
        for r in range(numel):
            s = 0.0
            for lane in range(L):
                s += Wb[r * L + lane]
            GW[q, r] = s
