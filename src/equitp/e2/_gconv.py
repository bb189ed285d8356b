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
``(F, D) @ (D, O I S)`` -- and the other rows are gathered from them. For the regular representation of ``C_8`` ``R
= 2`` of 8 (4 quarter turns), of ``D_8`` 2 of 16, of ``C_4`` 1 of 4.

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

from ._folded import workspace

__all__ = ["GConvPlan", "gconv_expand", "grid_orbits"]

_META = 19
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


# ---------------------------------------------------------------------------------------------------- kernels
def _build_kernels() -> dict[str, Any]:
    if _KERNELS:
        return _KERNELS
    import numba

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

    def gather_body(meta, task_off, fstart, tab, flt, c_in, S, psi, out, t0, t1):
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

    def scatter_body(meta, task_off, fstart, tab, flt, c_in, S, g, gpsi, t0, t1):
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

    gather_in = numba.njit(cache=True, inline="always", fastmath=True)(gather_body)
    scatter_in = numba.njit(cache=True, inline="always", fastmath=True)(scatter_body)

    def rows(i64, i32, flt, brow):
        meta, task_off, fstart, elem, tab, c_in, S, n_brow, n_psi = _unpack(i64, i32, flt)
        _rows(meta, elem, flt, S, brow)

    def gather(i64, i32, flt, psi, out, n_chunks):
        meta, task_off, fstart, elem, tab, c_in, S, n_brow, n_psi = _unpack(i64, i32, flt)
        n = task_off[-1]
        for c in numba.prange(n_chunks):
            gather_in(meta, task_off, fstart, tab, flt, c_in, S, psi, out, c * n // n_chunks, (c + 1) * n // n_chunks)

    def scatter(i64, i32, flt, g, gpsi, n_chunks):
        meta, task_off, fstart, elem, tab, c_in, S, n_brow, n_psi = _unpack(i64, i32, flt)
        n = task_off[-1]
        for c in numba.prange(n_chunks):
            scatter_in(meta, task_off, fstart, tab, flt, c_in, S, g, gpsi, c * n // n_chunks, (c + 1) * n // n_chunks)

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
        gather_in(meta, task_off, fstart, tab, flt, c_in, S, psi, out, 0, task_off[-1])
        return out4

    def small_transpose(i64, i32, flt, g4):
        meta, task_off, fstart, elem, tab, c_in, S, n_brow, n_psi = _unpack(i64, i32, flt)
        g = g4.reshape(g4.size)
        gw = np.empty(i64[12], dtype=flt.dtype)
        brow = np.empty(n_brow, dtype=flt.dtype)
        _rows(meta, elem, flt, S, brow)
        gpsi = np.empty(n_psi, dtype=flt.dtype)
        scatter_in(meta, task_off, fstart, tab, flt, c_in, S, g, gpsi, 0, task_off[-1])
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

    _KERNELS["rows"] = numba.njit(cache=True, fastmath=True)(rows)
    _KERNELS["gather_ser"] = numba.njit(cache=True, fastmath=True)(gather)
    _KERNELS["gather_par"] = numba.njit(cache=True, fastmath=True, parallel=True)(gather)
    _KERNELS["scatter_ser"] = numba.njit(cache=True, fastmath=True)(scatter)
    _KERNELS["scatter_par"] = numba.njit(cache=True, fastmath=True, parallel=True)(scatter)
    _KERNELS["small_forward"] = numba.njit(cache=True, fastmath=True)(small_forward)
    _KERNELS["small_transpose"] = numba.njit(cache=True, fastmath=True)(small_transpose)
    return _KERNELS


# ---------------------------------------------------------------------------------------------------- plan
class GConvPlan:
    """Packed structure of a layer's orbit expansion for the CPU kernels (one dtype).

    Args:
        layer: the :class:`~equitp.e2.LayerBasis`.
        dtype: ``torch.float32`` or ``torch.float64``.

    Attributes:
        i64: int64 header, per representation pair ``meta`` ``(P, 19)`` (``n_out, n_in, O, I, D, R``, weight start,
            offsets of its output / input field starts, of its elements, of its rows in the rebuilt basis ``brow``
            and of its ``psi`` block (``(F, R I S)``), the length of its rows (``D R I S``), offset of its orbit
            tables, ``F``, offsets of its signs (-1: all +1), of ``Q_out[reps, :]`` and of ``Q_in`` (-1: identity),
            ``|H|``), the task offsets (one task per output field) and the field start channels.
        i32: the element table ``(sum D, 5)`` (row, column, ``d_out``, ``d_in``, first value row) and per pair the
            orbit tables (``rep_of`` ``(O,)``, ``elem_of`` ``(O,)``, ``in_src`` ``(O, I)``, ``sigma`` ``(|H|, S)``);
            the kernels expand them into per-entry index tables of ``O I S`` entries at each call.
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
                [p.n_out, p.n_in, O, I, D, R, p.start, of, if_, e0, n_brow, n_psi, D * RIS, tb, F, sg, qo, qi, nH]
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
            args = {"rows": (x,), "small_forward": (x,), "small_transpose": (x.reshape(1, 1, 1, 1),)}.get(
                name, (x, x, 1)
            )
            types = tuple(numba.typeof(a) for a in (self.i64, self.i32, self.flt) + args)
            entry = disp.overloads.get(types)
            if entry is None:
                disp.compile(types)
                entry = disp.overloads[types]
            entry = self._entry[name] = entry.entry_point
        return entry

    def _small(self) -> tuple:
        """Entry points of the one-call kernels (forward, transpose)."""
        if self._small_entries is None:
            self._small_entries = (self._kernel("small_forward"), self._kernel("small_transpose"))
        return self._small_entries

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
            return torch.from_numpy(self._small()[0](self.i64, self.i32, self.flt, w.contiguous().numpy())), None
        # numpy's allocator backs large arrays with transparent huge pages where the kernel offers them (madvise):
        # the filter is written by the gather without one page fault per 4 KB
        npd = self.flt.dtype
        out = torch.from_numpy(np.empty(self.shape, dtype=npd) if self.full else np.zeros(self.shape, dtype=npd))
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
            return torch.from_numpy(self._small()[1](self.i64, self.i32, self.flt, g.numpy()))
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
            return torch.from_numpy(plan._small()[0](plan.i64, plan.i32, plan.flt, w.numpy(force=True)))
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
            return torch.from_numpy(plan._small()[1](plan.i64, plan.i32, plan.flt, g.numpy())), None
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
    if not w.is_contiguous():
        w = w.contiguous()
    if w.requires_grad and torch.is_grad_enabled():
        return _GConv.apply(w, plan)
    return plan.forward(w)[0]
