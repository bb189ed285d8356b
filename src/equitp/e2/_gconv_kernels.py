"""numba kernels of :mod:`._gconv` (CPU), imported on first use.

Module-level functions, so that numba's on-disk cache reuses the compiled code in later processes (functions defined
inside a function are recompiled in every process).
"""

import numba
import numpy as np


@numba.njit(cache=True, inline="always")
def _unpack(i64, i32, flt):
    # header: P, meta offset, task_off offset, fstart offset, n_elem, C_in, S, n_brow, n_psi, C_out, k,
    # every filter entry written (no zero fill), dim
    P = i64[0]
    meta = i64[i64[1]:i64[1] + P * 19].reshape((P, 19))
    task_off = i64[i64[2]:i64[2] + P + 1]
    fstart = i64[i64[3]:]
    elem = i32[:5 * i64[4]].reshape((i64[4], 5))
    tab = i32[5 * i64[4]:]
    return meta, task_off, fstart, elem, tab, i64[5], i64[6], i64[7], i64[8]


@numba.njit(cache=True, inline="always")
def _rows(meta, elem, flt, S, brow):
    # brow[p: e, r, i, s] = sum_{a, b} Q_out[rep_r, oo + a] beta_e[a, b, s] Q_in[i, ii + b]
    tmp = np.empty(2 * S, dtype=brow.dtype)
    for p in range(meta.shape[0]):
        O = meta[p, 2]
        I = meta[p, 3]
        D = meta[p, 4]
        R = meta[p, 5]
        e0 = meta[p, 9]
        b0 = meta[p, 10]
        qo = meta[p, 16]
        qi = meta[p, 17]
        IS = I * S
        RIS = R * IS
        for e in range(D):
            oo = elem[e0 + e, 0]
            ii = elem[e0 + e, 1]
            do = elem[e0 + e, 2]
            di = elem[e0 + e, 3]
            vr = elem[e0 + e, 4]
            dst = brow[b0 + e * RIS:b0 + (e + 1) * RIS]
            for r in range(R):
                for j in range(di * S):
                    tmp[j] = 0.0
                for a in range(do):
                    c = flt[qo + r * O + oo + a]
                    if c != 0.0:
                        for b in range(di):
                            src = flt[(vr + a * di + b) * S:(vr + a * di + b + 1) * S]
                            t = tmp[b * S:(b + 1) * S]
                            for s in range(S):
                                t[s] += c * src[s]
                row = dst[r * IS:(r + 1) * IS]
                if qi < 0:
                    for j in range(IS):
                        row[j] = 0.0
                    for b in range(di):
                        d = row[(ii + b) * S:(ii + b + 1) * S]
                        t = tmp[b * S:(b + 1) * S]
                        for s in range(S):
                            d[s] = t[s]
                else:
                    for i in range(I):
                        d = row[i * S:(i + 1) * S]
                        for s in range(S):
                            d[s] = 0.0
                        for b in range(di):
                            c = flt[qi + i * I + ii + b]
                            if c != 0.0:
                                t = tmp[b * S:(b + 1) * S]
                                for s in range(S):
                                    d[s] += c * t[s]


@numba.njit(cache=True, inline="always")
def _task(meta, task_off, t, p):
    while t >= task_off[p + 1]:
        p += 1
    return p, t - task_off[p]


# Orbit tables of a pair (int32, from meta[p, 13]): rep_of (O), elem_of (O), in_src (O, I), sigma (nH, S).
@numba.njit(cache=True, inline="always")
def _tables(meta, tab, flt, S, p, idx, sgn):
    # per output row o and filter entry j = i * S + s of a field pair: idx[o * IS + j] the entry (r, b, s') of
    # the pair's psi block it reads, sgn its sign
    O = meta[p, 2]
    I = meta[p, 3]
    IS = I * S
    tb = meta[p, 13]
    t_sig = tb + 2 * O + O * I
    sg = meta[p, 15]
    for o in range(O):
        r0 = tab[tb + o] * IS
        h = tab[tb + O + o]
        for i in range(I):
            b = tab[tb + 2 * O + o * I + i]
            v = 1.0 if sg < 0 else flt[sg + o * I + i]
            for s in range(S):
                idx[o * IS + i * S + s] = r0 + b * S + tab[t_sig + h * S + s]
                sgn[o * IS + i * S + s] = v


@numba.njit(cache=True, inline="always")
def _scratch(meta, S, like):
    n = 0
    for p in range(meta.shape[0]):
        n = max(n, meta[p, 2] * meta[p, 3] * S)
    return np.empty(n, dtype=np.int32), np.empty(n, dtype=like.dtype)


@numba.njit(cache=True, inline="always", fastmath=True)
def _gather(meta, task_off, fstart, tab, flt, c_in, S, psi, out, t0, t1):
    # out[(oc + o), (ic + i), s] = sign * psi[f, rep_of[o], in_src[o, i], sigma[elem_of[o], s]]
    idx, sgn = _scratch(meta, S, out)
    p = 0
    q = -1
    for t in range(t0, t1):
        p, fo = _task(meta, task_off, t, p)
        O = meta[p, 2]
        if p != q:
            _tables(meta, tab, flt, S, p, idx, sgn)
            q = p
        n_in = meta[p, 1]
        IS = meta[p, 3] * S
        RIS = meta[p, 5] * IS
        oc = fstart[meta[p, 7] + fo]
        signed = meta[p, 15] >= 0
        for fi in range(n_in):  # one psi block (in L1) feeds the O rows
            b0 = meta[p, 11] + (fo * n_in + fi) * RIS
            seg = psi[b0:b0 + RIS]
            ic = fstart[meta[p, 8] + fi]
            for o in range(O):
                d0 = ((oc + o) * c_in + ic) * S
                dst = out[d0:d0 + IS]
                ix = idx[o * IS:(o + 1) * IS]
                if signed:
                    sv = sgn[o * IS:(o + 1) * IS]
                    for j in range(IS):
                        dst[j] = sv[j] * seg[ix[j]]
                else:
                    for j in range(IS):
                        dst[j] = seg[ix[j]]


@numba.njit(cache=True, inline="always", fastmath=True)
def _scatter(meta, task_off, fstart, tab, flt, c_in, S, g, gpsi, t0, t1):
    # transpose of the gather: gpsi[f, rep_of[o], in_src[o, i], sigma[elem_of[o], s]] += sign * g[(oc + o),
    # (ic + i), s]. Unsigned pairs sum, for each psi entry, the entries of the rows of its orbit (offsets
    # off[member, k] from the field pair's first filter entry; orbits of 1, 2, 4, 8 rows written out); signed
    # pairs add entry by entry.
    idx, sgn = _scratch(meta, S, g)
    off = np.empty(idx.shape[0], dtype=np.int64)
    n_rows = 0
    for p in range(meta.shape[0]):
        n_rows = max(n_rows, meta[p, 2])
    ptr = np.empty(n_rows + 1, dtype=np.int64)
    p = 0
    q = -1
    for t in range(t0, t1):
        p, fo = _task(meta, task_off, t, p)
        O = meta[p, 2]
        IS = meta[p, 3] * S
        R = meta[p, 5]
        RIS = R * IS
        signed = meta[p, 15] >= 0
        if p != q:
            _tables(meta, tab, flt, S, p, idx, sgn)
            q = p
            if not signed:
                tb = meta[p, 13]
                c = 0
                for r in range(R):
                    ptr[r] = c
                    for o in range(O):
                        if tab[tb + o] == r:
                            for j in range(IS):
                                off[c * IS + idx[o * IS + j] - r * IS] = o * c_in * S + j
                            c += 1
                ptr[R] = c
        n_in = meta[p, 1]
        oc = fstart[meta[p, 7] + fo]
        base = meta[p, 11] + fo * n_in * RIS
        for fi in range(n_in):
            seg = gpsi[base + fi * RIS:base + (fi + 1) * RIS]
            g0 = (oc * c_in + fstart[meta[p, 8] + fi]) * S
            if not signed:
                for r in range(R):
                    dst = seg[r * IS:(r + 1) * IS]
                    m0 = ptr[r]
                    M = ptr[r + 1] - m0
                    a0 = off[m0 * IS:(m0 + 1) * IS]
                    if M == 1:
                        for k in range(IS):
                            dst[k] = g[g0 + a0[k]]
                    elif M == 2:
                        a1 = off[(m0 + 1) * IS:(m0 + 2) * IS]
                        for k in range(IS):
                            dst[k] = g[g0 + a0[k]] + g[g0 + a1[k]]
                    elif M == 4:
                        a1 = off[(m0 + 1) * IS:(m0 + 2) * IS]
                        a2 = off[(m0 + 2) * IS:(m0 + 3) * IS]
                        a3 = off[(m0 + 3) * IS:(m0 + 4) * IS]
                        for k in range(IS):
                            dst[k] = g[g0 + a0[k]] + g[g0 + a1[k]] + g[g0 + a2[k]] + g[g0 + a3[k]]
                    elif M == 8:
                        a1 = off[(m0 + 1) * IS:(m0 + 2) * IS]
                        a2 = off[(m0 + 2) * IS:(m0 + 3) * IS]
                        a3 = off[(m0 + 3) * IS:(m0 + 4) * IS]
                        a4 = off[(m0 + 4) * IS:(m0 + 5) * IS]
                        a5 = off[(m0 + 5) * IS:(m0 + 6) * IS]
                        a6 = off[(m0 + 6) * IS:(m0 + 7) * IS]
                        a7 = off[(m0 + 7) * IS:(m0 + 8) * IS]
                        for k in range(IS):
                            dst[k] = ((g[g0 + a0[k]] + g[g0 + a1[k]]) + (g[g0 + a2[k]] + g[g0 + a3[k]])) + (
                                (g[g0 + a4[k]] + g[g0 + a5[k]]) + (g[g0 + a6[k]] + g[g0 + a7[k]]))
                    else:  # orbit sizes divide |H| (a subgroup of the 8 grid symmetries): not reached
                        for k in range(IS):
                            acc = 0.0
                            for m in range(m0, m0 + M):
                                acc += g[g0 + off[m * IS + k]]
                            dst[k] = acc
                continue
            for j in range(RIS):
                seg[j] = 0.0
            for o in range(O):
                src = g[g0 + o * c_in * S:g0 + o * c_in * S + IS]
                ix = idx[o * IS:(o + 1) * IS]
                sv = sgn[o * IS:(o + 1) * IS]
                for j in range(IS):
                    seg[ix[j]] += sv[j] * src[j]


@numba.njit(cache=True, fastmath=True)
def rows(i64, i32, flt, brow):
    meta, task_off, fstart, elem, tab, c_in, S, n_brow, n_psi = _unpack(i64, i32, flt)
    _rows(meta, elem, flt, S, brow)


@numba.njit(cache=True, fastmath=True)
def gather_ser(i64, i32, flt, psi, out, n_chunks):
    meta, task_off, fstart, elem, tab, c_in, S, n_brow, n_psi = _unpack(i64, i32, flt)
    _gather(meta, task_off, fstart, tab, flt, c_in, S, psi, out, 0, task_off[-1])


@numba.njit(cache=True, fastmath=True, parallel=True)
def gather_par(i64, i32, flt, psi, out, n_chunks):
    meta, task_off, fstart, elem, tab, c_in, S, n_brow, n_psi = _unpack(i64, i32, flt)
    n = task_off[-1]
    for c in numba.prange(n_chunks):
        _gather(meta, task_off, fstart, tab, flt, c_in, S, psi, out, c * n // n_chunks, (c + 1) * n // n_chunks)


@numba.njit(cache=True, fastmath=True)
def scatter_ser(i64, i32, flt, g, gpsi, n_chunks):
    meta, task_off, fstart, elem, tab, c_in, S, n_brow, n_psi = _unpack(i64, i32, flt)
    _scatter(meta, task_off, fstart, tab, flt, c_in, S, g, gpsi, 0, task_off[-1])


@numba.njit(cache=True, fastmath=True, parallel=True)
def scatter_par(i64, i32, flt, g, gpsi, n_chunks):
    meta, task_off, fstart, elem, tab, c_in, S, n_brow, n_psi = _unpack(i64, i32, flt)
    n = task_off[-1]
    for c in numba.prange(n_chunks):
        _scatter(meta, task_off, fstart, tab, flt, c_in, S, g, gpsi, c * n // n_chunks, (c + 1) * n // n_chunks)


@numba.njit(cache=True, fastmath=True)
def small_forward(i64, i32, flt, w):
    # the whole expansion in one call: rows, psi = W @ rows per pair (loops), gather; returns the filter
    meta, task_off, fstart, elem, tab, c_in, S, n_brow, n_psi = _unpack(i64, i32, flt)
    k = i64[10]
    if i64[11]:
        out4 = np.empty((i64[9], c_in, k, k), dtype=flt.dtype)
    else:
        out4 = np.zeros((i64[9], c_in, k, k), dtype=flt.dtype)
    out = out4.reshape(out4.size)
    brow = np.empty(n_brow, dtype=flt.dtype)
    _rows(meta, elem, flt, S, brow)
    psi = np.empty(n_psi, dtype=flt.dtype)
    for p in range(meta.shape[0]):
        F = meta[p, 14]
        D = meta[p, 4]
        RIS = meta[p, 5] * meta[p, 3] * S
        w0 = meta[p, 6]
        b0 = meta[p, 10]
        for f in range(F):
            dst = psi[meta[p, 11] + f * RIS:meta[p, 11] + (f + 1) * RIS]
            for j in range(RIS):
                dst[j] = 0.0
            for e in range(D):
                we = w[w0 + f * D + e]
                src = brow[b0 + e * RIS:b0 + (e + 1) * RIS]
                for j in range(RIS):
                    dst[j] += we * src[j]
    _gather(meta, task_off, fstart, tab, flt, c_in, S, psi, out, 0, task_off[-1])
    return out4


@numba.njit(cache=True, fastmath=True)
def small_transpose(i64, i32, flt, g4):
    meta, task_off, fstart, elem, tab, c_in, S, n_brow, n_psi = _unpack(i64, i32, flt)
    g = g4.reshape(g4.size)
    gw = np.empty(i64[12], dtype=flt.dtype)
    brow = np.empty(n_brow, dtype=flt.dtype)
    _rows(meta, elem, flt, S, brow)
    gpsi = np.empty(n_psi, dtype=flt.dtype)
    _scatter(meta, task_off, fstart, tab, flt, c_in, S, g, gpsi, 0, task_off[-1])
    for p in range(meta.shape[0]):
        F = meta[p, 14]
        D = meta[p, 4]
        RIS = meta[p, 5] * meta[p, 3] * S
        w0 = meta[p, 6]
        b0 = meta[p, 10]
        for f in range(F):
            src = gpsi[meta[p, 11] + f * RIS:meta[p, 11] + (f + 1) * RIS]
            for e in range(D):
                bv = brow[b0 + e * RIS:b0 + (e + 1) * RIS]
                acc = 0.0
                for j in range(RIS):
                    acc += bv[j] * src[j]
                gw[w0 + f * D + e] = acc
    return gw
