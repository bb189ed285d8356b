"""numba kernels of :mod:`._gconv` (CPU), imported on first use.

Module-level functions, so that numba's on-disk cache reuses the compiled code in later processes (functions defined
inside a function are recompiled in every process). The row copies use explicit SIMD vectors
(:mod:`equitp.executors.cpu._simd`): LLVM's loop vectoriser runs rows of ``S = 25`` entries scalar (its vector loop
steps 32 elements), and array helpers inlined by numba would add reference counting calls in the loop; the copy
loops are therefore written out in the kernels.
"""

import numba
import numpy as np

from ..executors.cpu._simd import keepalive, unmanaged, vadd, vfma, vload, vmul, vreverse, vstore, vsum, vwidth, vzero


@numba.njit(cache=True, inline="always")
def _unpack(i64, i32, flt):
    # header: P, meta offset, task_off offset, fstart offset, n_elem, C_in, S, n_brow, n_psi, C_out, k,
    # every filter entry written (no zero fill), dim
    # views of the unmanaged arguments (the calling kernel's arguments, alive for the call): slicing them in the loops
    # updates no reference count (see executors.cpu._simd.unmanaged)
    i64 = unmanaged(i64)
    i32 = unmanaged(i32)
    P = i64[0]
    meta = i64[i64[1]:i64[1] + P * 21].reshape((P, 21))
    task_off = i64[i64[2]:i64[2] + P + 1]
    fstart = i64[i64[3]:]
    elem = i32[:5 * i64[4]].reshape((i64[4], 5))
    tab = i32[5 * i64[4]:]
    return meta, task_off, fstart, elem, tab, i64[5], i64[6], i64[7], i64[8]


@numba.njit(cache=True, inline="always")
def _rows(meta, elem, flt, S, brow):
    # brow[p: e, r, i, s] = sum_{a, b} Q_out[rep_r, oo + a] beta_e[a, b, s] Q_in[i, ii + b]
    tmp_buf = np.empty(2 * S, dtype=brow.dtype)
    tmp = unmanaged(tmp_buf)
    flt = unmanaged(flt)
    brow = unmanaged(brow)
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
    keepalive(tmp_buf)


@numba.njit(cache=True, inline="always")
def _task(meta, task_off, t, p):
    while t >= task_off[p + 1]:
        p += 1
    return p, t - task_off[p]


# Orbit tables of a pair (int32, from meta[p, 13]): rep_of (O), elem_of (O), in_src (O, I), sigma (nH, S); row plan
# (from meta[p, 19]): kind (O), src (O), stage rep (n_st), stage element (n_st), n_st = meta[p, 20].
#
# Row o of a field pair's filter block is ``sign[o, i] * X[src[o], in_src[o, i], perm(s)]`` per input index i, where
# by kind: 0: X = the psi block (src = rep_of[o]), perm = identity; 1: psi, perm = reversal (the half turn on a
# centred grid); 2: stage src, identity; 3: stage src, reversal. A stage k is ``psi[st_r[k], b, sigma[st_h[k], t]]``
# (one scalar gather of I S entries per field pair); rows of the other grid symmetries are vector copies (reversed
# or not) of the psi block or of a stage, in runs of consecutive input indices.
@numba.njit(cache=True, inline="always")
def _stage_index(meta, tab, S, p, stix):
    # stix[k * IS + b * S + t] = offset in the psi block of stage k's entry (b, t)
    I = meta[p, 3]
    IS = I * S
    O = meta[p, 2]
    tb = meta[p, 13]
    t_sig = tb + 2 * O + O * I
    rp = meta[p, 19]
    n_st = meta[p, 20]
    for k in range(n_st):
        r0 = tab[rp + 2 * O + k] * IS
        h = tab[rp + 2 * O + n_st + k]
        for b in range(I):
            for t in range(S):
                stix[k * IS + b * S + t] = r0 + b * S + tab[t_sig + h * S + t]


@numba.njit(cache=True, inline="always")
def _scratch(meta, S, like):
    n = 1
    for p in range(meta.shape[0]):
        n = max(n, meta[p, 20] * meta[p, 3] * S)
    return np.empty(n, dtype=np.int64), np.empty(n, dtype=like.dtype)


@numba.njit(cache=True, inline="always", fastmath=True)
def _gather(meta, task_off, fstart, tab, flt, c_in, S, psi, out, t0, t1):
    # out[(oc + o), (ic + i), s] = sign * psi[f, rep_of[o], in_src[o, i], sigma[elem_of[o], s]] by the row plan
    stix, stage = _scratch(meta, S, out)
    one = flt.dtype.type(1.0)
    vw = vwidth(out)
    z = vzero(out)
    p = 0
    q = -1
    for t in range(t0, t1):
        p, fo = _task(meta, task_off, t, p)
        if p != q:
            _stage_index(meta, tab, S, p, stix)
            q = p
        O = meta[p, 2]
        I = meta[p, 3]
        n_in = meta[p, 1]
        IS = I * S
        RIS = meta[p, 5] * IS
        oc = fstart[meta[p, 7] + fo]
        sg = meta[p, 15]
        rp = meta[p, 19]
        n_st = meta[p, 20]
        ins0 = meta[p, 13] + 2 * O  # in_src[o, i] = tab[ins0 + o * I + i]
        for fi in range(n_in):  # one psi block (in L1) feeds the O rows
            p0 = meta[p, 11] + (fo * n_in + fi) * RIS
            for j in range(n_st * IS):
                stage[j] = psi[np.uint64(p0 + stix[j])]
            ic = fstart[meta[p, 8] + fi]
            for o in range(O):
                d0 = ((oc + o) * c_in + ic) * S
                kd = tab[rp + o]
                x0 = tab[rp + O + o] * IS + (p0 if kd < 2 else 0)
                i = 0
                while i < I:
                    b = tab[ins0 + o * I + i]
                    v = one if sg < 0 else flt[sg + o * I + i]
                    e = d0 + i * S
                    n = 1
                    if kd & 1:  # reversed: out[e + j] = v X[a - j]
                        while i + n < I and tab[ins0 + o * I + i + n] == b - n and (
                                sg < 0 or flt[sg + o * I + i + n] == v):
                            n += 1
                        L = n * S
                        a = x0 + (b + 1) * S - 1
                        if L < vw:
                            if kd < 2:
                                for j in range(L):
                                    out[e + j] = v * psi[a - j]
                            else:
                                for j in range(L):
                                    out[e + j] = v * stage[a - j]
                        elif kd < 2:  # whole vectors, the last one overlapping
                            j = 0
                            while j + vw < L:
                                vstore(out, e + j, vfma(z, vreverse(vload(psi, a - j - vw + 1)), v))
                                j += vw
                            vstore(out, e + L - vw, vfma(z, vreverse(vload(psi, a - L + 1)), v))
                        else:
                            j = 0
                            while j + vw < L:
                                vstore(out, e + j, vfma(z, vreverse(vload(stage, a - j - vw + 1)), v))
                                j += vw
                            vstore(out, e + L - vw, vfma(z, vreverse(vload(stage, a - L + 1)), v))
                    else:  # out[e + j] = v X[a + j]
                        while i + n < I and tab[ins0 + o * I + i + n] == b + n and (
                                sg < 0 or flt[sg + o * I + i + n] == v):
                            n += 1
                        L = n * S
                        a = x0 + b * S
                        if L < vw:
                            if kd < 2:
                                for j in range(L):
                                    out[e + j] = v * psi[a + j]
                            else:
                                for j in range(L):
                                    out[e + j] = v * stage[a + j]
                        elif kd < 2:
                            j = 0
                            while j + vw < L:
                                vstore(out, e + j, vfma(z, vload(psi, a + j), v))
                                j += vw
                            vstore(out, e + L - vw, vfma(z, vload(psi, a + L - vw), v))
                        else:
                            j = 0
                            while j + vw < L:
                                vstore(out, e + j, vfma(z, vload(stage, a + j), v))
                                j += vw
                            vstore(out, e + L - vw, vfma(z, vload(stage, a + L - vw), v))
                    i += n


@numba.njit(cache=True, inline="always", fastmath=True)
def _scatter(meta, task_off, fstart, tab, flt, c_in, S, g, gpsi, t0, t1):
    # transpose of the gather: gpsi[f, rep_of[o], in_src[o, i], sigma[elem_of[o], s]] += sign * g[(oc + o),
    # (ic + i), s]; rows of kinds 0 / 1 add into the psi block, 2 / 3 into their stage (vectors), then each stage is
    # added into the psi block through its index (scalar)
    stix, stage = _scratch(meta, S, g)
    one = flt.dtype.type(1.0)
    vw = vwidth(g)
    p = 0
    q = -1
    for t in range(t0, t1):
        p, fo = _task(meta, task_off, t, p)
        if p != q:
            _stage_index(meta, tab, S, p, stix)
            q = p
        O = meta[p, 2]
        I = meta[p, 3]
        n_in = meta[p, 1]
        IS = I * S
        RIS = meta[p, 5] * IS
        oc = fstart[meta[p, 7] + fo]
        sg = meta[p, 15]
        rp = meta[p, 19]
        n_st = meta[p, 20]
        ins0 = meta[p, 13] + 2 * O
        for fi in range(n_in):
            p0 = meta[p, 11] + (fo * n_in + fi) * RIS
            for j in range(RIS):
                gpsi[p0 + j] = 0.0
            for j in range(n_st * IS):
                stage[j] = 0.0
            ic = fstart[meta[p, 8] + fi]
            for o in range(O):
                d0 = ((oc + o) * c_in + ic) * S
                kd = tab[rp + o]
                x0 = tab[rp + O + o] * IS + (p0 if kd < 2 else 0)
                i = 0
                while i < I:
                    b = tab[ins0 + o * I + i]
                    v = one if sg < 0 else flt[sg + o * I + i]
                    e = d0 + i * S
                    n = 1
                    j = 0
                    if kd & 1:  # X[a - j] += v g[e + j]
                        while i + n < I and tab[ins0 + o * I + i + n] == b - n and (
                                sg < 0 or flt[sg + o * I + i + n] == v):
                            n += 1
                        L = n * S
                        a = x0 + (b + 1) * S - 1
                        if kd < 2:
                            while j + vw <= L:
                                c = a - j - vw + 1
                                vstore(gpsi, c, vfma(vload(gpsi, c), vreverse(vload(g, e + j)), v))
                                j += vw
                            while j < L:
                                gpsi[a - j] += v * g[e + j]
                                j += 1
                        else:
                            while j + vw <= L:
                                c = a - j - vw + 1
                                vstore(stage, c, vfma(vload(stage, c), vreverse(vload(g, e + j)), v))
                                j += vw
                            while j < L:
                                stage[a - j] += v * g[e + j]
                                j += 1
                    else:  # X[a + j] += v g[e + j]
                        while i + n < I and tab[ins0 + o * I + i + n] == b + n and (
                                sg < 0 or flt[sg + o * I + i + n] == v):
                            n += 1
                        L = n * S
                        a = x0 + b * S
                        if kd < 2:
                            while j + vw <= L:
                                vstore(gpsi, a + j, vfma(vload(gpsi, a + j), vload(g, e + j), v))
                                j += vw
                            while j < L:
                                gpsi[a + j] += v * g[e + j]
                                j += 1
                        else:
                            while j + vw <= L:
                                vstore(stage, a + j, vfma(vload(stage, a + j), vload(g, e + j), v))
                                j += vw
                            while j < L:
                                stage[a + j] += v * g[e + j]
                                j += 1
                    i += n
            for j in range(n_st * IS):
                gpsi[np.uint64(p0 + stix[j])] += stage[j]


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


@numba.njit(cache=True, inline="always", fastmath=True)
def _small_gemm(psi, p0, w, w0, brow, b0, F, D, RIS):
    # psi[p0 + f RIS + j] = sum_e w[w0 + f D + e] brow[b0 + e RIS + j]: four rows f at a time, so that each loaded
    # vector of brow feeds four independent accumulation chains (one per row), vectors of j then the scalar tail
    VW = vwidth(psi)
    nv = RIS - RIS % VW
    f = 0
    while f < F:
        nf = min(4, F - f)
        d0 = p0 + f * RIS
        wf = w0 + f * D
        if nf == 4:
            for j in range(0, nv, VW):
                a0 = vzero(psi)
                a1 = vzero(psi)
                a2 = vzero(psi)
                a3 = vzero(psi)
                for e in range(D):
                    v = vload(brow, b0 + e * RIS + j)
                    a0 = vfma(a0, v, w[wf + e])
                    a1 = vfma(a1, v, w[wf + D + e])
                    a2 = vfma(a2, v, w[wf + 2 * D + e])
                    a3 = vfma(a3, v, w[wf + 3 * D + e])
                vstore(psi, d0 + j, a0)
                vstore(psi, d0 + RIS + j, a1)
                vstore(psi, d0 + 2 * RIS + j, a2)
                vstore(psi, d0 + 3 * RIS + j, a3)
            for j in range(nv, RIS):
                t0 = 0.0
                t1 = 0.0
                t2 = 0.0
                t3 = 0.0
                for e in range(D):
                    x = brow[b0 + e * RIS + j]
                    t0 += w[wf + e] * x
                    t1 += w[wf + D + e] * x
                    t2 += w[wf + 2 * D + e] * x
                    t3 += w[wf + 3 * D + e] * x
                psi[d0 + j] = t0
                psi[d0 + RIS + j] = t1
                psi[d0 + 2 * RIS + j] = t2
                psi[d0 + 3 * RIS + j] = t3
        else:
            for q in range(nf):
                dq = d0 + q * RIS
                wq = wf + q * D
                for j in range(0, nv, VW):
                    a0 = vzero(psi)
                    for e in range(D):
                        a0 = vfma(a0, vload(brow, b0 + e * RIS + j), w[wq + e])
                    vstore(psi, dq + j, a0)
                for j in range(nv, RIS):
                    t = 0.0
                    for e in range(D):
                        t += w[wq + e] * brow[b0 + e * RIS + j]
                    psi[dq + j] = t
        f += nf


@numba.njit(cache=True, inline="always", fastmath=True)
def _small_gemm_t(gw, w0, gpsi, p0, brow, b0, F, D, RIS):
    # gw[w0 + f D + e] = sum_j gpsi[p0 + f RIS + j] brow[b0 + e RIS + j]: the transpose of _small_gemm, as dot
    # products: four e at a time against one row f (each loaded vector of gpsi feeds four chains), whole vectors of j
    # then the scalar tail, one horizontal sum per dot product
    VW = vwidth(gpsi)
    nv = RIS - RIS % VW
    for f in range(F):
        g0 = p0 + f * RIS
        e = 0
        while e < D:
            if D - e >= 4:
                r = b0 + e * RIS
                a0 = vzero(gpsi)
                a1 = vzero(gpsi)
                a2 = vzero(gpsi)
                a3 = vzero(gpsi)
                for j in range(0, nv, VW):
                    g = vload(gpsi, g0 + j)
                    a0 = vadd(a0, vmul(g, vload(brow, r + j)))
                    a1 = vadd(a1, vmul(g, vload(brow, r + RIS + j)))
                    a2 = vadd(a2, vmul(g, vload(brow, r + 2 * RIS + j)))
                    a3 = vadd(a3, vmul(g, vload(brow, r + 3 * RIS + j)))
                t0 = vsum(a0)
                t1 = vsum(a1)
                t2 = vsum(a2)
                t3 = vsum(a3)
                for j in range(nv, RIS):
                    x = gpsi[g0 + j]
                    t0 += x * brow[r + j]
                    t1 += x * brow[r + RIS + j]
                    t2 += x * brow[r + 2 * RIS + j]
                    t3 += x * brow[r + 3 * RIS + j]
                gw[w0 + f * D + e] = t0
                gw[w0 + f * D + e + 1] = t1
                gw[w0 + f * D + e + 2] = t2
                gw[w0 + f * D + e + 3] = t3
                e += 4
            else:
                r = b0 + e * RIS
                a0 = vzero(gpsi)
                for j in range(0, nv, VW):
                    a0 = vadd(a0, vmul(vload(gpsi, g0 + j), vload(brow, r + j)))
                t = vsum(a0)
                for j in range(nv, RIS):
                    t += gpsi[g0 + j] * brow[r + j]
                gw[w0 + f * D + e] = t
                e += 1


@numba.njit(cache=True, inline="always", fastmath=True)
def _small_forward(i64, i32, flt, w, out):
    # the whole expansion in one call: rows, psi = W @ rows per pair (loops), gather into ``out`` (the flat filter)
    meta, task_off, fstart, elem, tab, c_in, S, n_brow, n_psi = _unpack(i64, i32, flt)
    if not i64[11]:
        for j in range(out.size):
            out[j] = 0.0
    brow_buf = np.empty(n_brow, dtype=flt.dtype)
    brow = unmanaged(brow_buf)
    _rows(meta, elem, flt, S, brow)
    psi_buf = np.empty(n_psi, dtype=flt.dtype)
    psi = unmanaged(psi_buf)
    w = unmanaged(w)
    for p in range(meta.shape[0]):
        F = meta[p, 14]
        D = meta[p, 4]
        RIS = meta[p, 5] * meta[p, 3] * S
        w0 = meta[p, 6]
        b0 = meta[p, 10]
        _small_gemm(psi, meta[p, 11], w, w0, brow, b0, F, D, RIS)
    _gather(meta, task_off, fstart, tab, flt, c_in, S, psi, out, 0, task_off[-1])
    keepalive(brow_buf)
    keepalive(psi_buf)


@numba.njit(cache=True, inline="always", fastmath=True)
def _small_transpose(i64, i32, flt, g, gw):
    # the transpose: rows, scatter of the filter gradient ``g`` (flat) into gpsi, gw = gpsi @ rows^T per pair
    meta, task_off, fstart, elem, tab, c_in, S, n_brow, n_psi = _unpack(i64, i32, flt)
    brow_buf = np.empty(n_brow, dtype=flt.dtype)
    brow = unmanaged(brow_buf)
    _rows(meta, elem, flt, S, brow)
    gpsi_buf = np.empty(n_psi, dtype=flt.dtype)
    gpsi = unmanaged(gpsi_buf)
    _scatter(meta, task_off, fstart, tab, flt, c_in, S, g, gpsi, 0, task_off[-1])
    for p in range(meta.shape[0]):
        F = meta[p, 14]
        D = meta[p, 4]
        RIS = meta[p, 5] * meta[p, 3] * S
        w0 = meta[p, 6]
        b0 = meta[p, 10]
        _small_gemm_t(gw, w0, gpsi, meta[p, 11], brow, b0, F, D, RIS)
    keepalive(brow_buf)
    keepalive(gpsi_buf)


# The small-layer passes with a C calling convention (``numba.cfunc``, built per dtype by ``_gconv.small_kernels``):
# called through ctypes with the plan's and the tensors' data pointers, they skip the unboxing of numba's array
# arguments and the boxing of a returned array: for the 2,304-entry C4 layer a forward call takes 6.0 us (the ctypes
# call ~1.3 us, the result's torch.empty ~1.2 us, the work ~4.5 us) against 7.5 us for an ``entry_point`` call of
# the array-taking, array-returning kernel.
def small_forward_c(i64p, n64, i32p, n32, fltp, nflt, wp, outp):
    i64 = numba.carray(i64p, n64)
    i32 = numba.carray(i32p, n32)
    flt = numba.carray(fltp, nflt)
    w = numba.carray(wp, i64[12])
    out = numba.carray(outp, i64[9] * i64[5] * i64[6])
    _small_forward(i64, i32, flt, w, out)


def small_transpose_c(i64p, n64, i32p, n32, fltp, nflt, gp, gwp):
    i64 = numba.carray(i64p, n64)
    i32 = numba.carray(i32p, n32)
    flt = numba.carray(fltp, nflt)
    g = numba.carray(gp, i64[9] * i64[5] * i64[6])
    gw = numba.carray(gwp, i64[12])
    _small_transpose(i64, i32, flt, g, gw)
