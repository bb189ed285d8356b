"""Explicit SIMD vectors for the numba CPU kernels.

numba compiles loops over array elements through LLVM's loop vectoriser, which keeps accumulators in memory: a loop
``O[c] += t * W[a, c]`` over a short row reloads and stores ``O`` for every ``a`` (a dependency through memory) and runs
its tail scalar. The intrinsics here give the kernels values of LLVM vector type instead (``<8 x float>`` for float32,
``<4 x double>`` for float64, one AVX register; LLVM splits them on narrower machines), so a micro-kernel can keep
its accumulators in registers across a whole contraction, like a GEMM micro-kernel. Portable LLVM IR only: no
target-specific instructions.

``vload(a, i)`` / ``vstore(a, i, v)``: the ``vwidth(a)`` elements ``a[i:i + vwidth(a)]`` (unaligned; the caller keeps
them in bounds). ``vfma(acc, v, s)``: ``acc + v * s`` for a scalar ``s``. ``vadd``, ``vmul``: element-wise.
``vzero(a)``: a zero vector of ``a``'s dtype. ``vreverse(v)``: the elements in reverse order (one shuffle).
``vstore_nt`` / ``vinterleave_nt``: non-temporal stores (they bypass the caches; see :func:`vstore_nt`), ordered by
``store_fence()``.

Wide vectors (``wwidth(a)`` = twice ``vwidth(a)``: 64 bytes, one AVX-512 register; LLVM splits them into two AVX
registers where AVX-512 is missing): ``wzero``, ``wload``, ``wstore``; ``vfma``, ``vadd``, ``vmul`` take them too. For
kernels bound by multiply-adds on operands in the L1 cache, whose buffers are aligned to 64 bytes (a misaligned wide
load spans two cache lines: with unaligned buffers the wide rows of the pair-product kernel ran no faster than the
AVX ones).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic, models, register_model


class Vector(types.Type):
    """A SIMD vector value of ``n`` elements of ``dtype`` (numba type)."""

    def __init__(self, dtype, n):
        self.dtype = dtype
        self.n = n
        super().__init__(name=f"Vector({dtype}x{n})")


_VECTORS = {types.float32: Vector(types.float32, 8), types.float64: Vector(types.float64, 4)}


_WIDE = {types.float32: Vector(types.float32, 16), types.float64: Vector(types.float64, 8)}


def _wide_of(arrty):
    _vector_of(arrty)
    return _WIDE[arrty.dtype]


def _wide_type(vt, n):
    # the LLVM vector type of n elements of the Vector type vt's dtype
    elt = ir.FloatType() if vt.dtype == types.float32 else ir.DoubleType()
    return ir.VectorType(elt, n)


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _wide_type(fe_type, fe_type.n))


def _vector_of(arrty):
    if not isinstance(arrty, types.Array) or arrty.dtype not in _VECTORS:
        raise TypeError(f"SIMD vectors need a float32 or float64 array, got {arrty}")
    return _VECTORS[arrty.dtype]


def _element_pointer(context, builder, arrty, arr, idx):
    ary = context.make_array(arrty)(context, builder, arr)
    return builder.gep(ary.data, [idx])


def _named(name: str, fn):
    # an intrinsic made by a factory, under its own name
    fn.__name__ = fn.__qualname__ = name
    return intrinsic(fn)


def _width(name: str, vector_of):
    def width(typingctx, arr):
        n = vector_of(arr).n

        def codegen(context, builder, sig, args):
            return ir.Constant(ir.IntType(64), n)

        return types.intp(arr), codegen

    return _named(name, width)


def _zero(name: str, vector_of):
    def zero(typingctx, arr):
        vt = vector_of(arr)

        def codegen(context, builder, sig, args):
            return ir.Constant(context.get_value_type(sig.return_type), None)

        return vt(arr), codegen

    return _named(name, zero)


def _load(name: str, vector_of):
    def load(typingctx, arr, idx):
        vt = vector_of(arr)

        def codegen(context, builder, sig, args):
            ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
            lt = context.get_value_type(sig.return_type)
            return builder.load(builder.bitcast(ptr, lt.as_pointer()), align=sig.args[0].dtype.bitwidth // 8)

        return vt(arr, idx), codegen

    return _named(name, load)


def _store(name: str, vector_of):
    def store(typingctx, arr, idx, v):
        if vector_of(arr) != v:
            raise TypeError(f"cannot store {v} into {arr}")

        def codegen(context, builder, sig, args):
            ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
            val = args[2]
            builder.store(val, builder.bitcast(ptr, val.type.as_pointer()), align=sig.args[0].dtype.bitwidth // 8)
            return context.get_dummy_value()

        return types.void(arr, idx, v), codegen

    return _named(name, store)


# the vector (AVX register) and wide-vector (AVX-512 register) forms of the same four intrinsics
vwidth = _width("vwidth", _vector_of)
vzero = _zero("vzero", _vector_of)
vload = _load("vload", _vector_of)
vstore = _store("vstore", _vector_of)
wwidth = _width("wwidth", _wide_of)
wzero = _zero("wzero", _wide_of)
wload = _load("wload", _wide_of)
wstore = _store("wstore", _wide_of)


def _nontemporal(builder, store) -> None:
    # mark a store non-temporal (x86: movnt*, the line is written to memory without being read for ownership)
    store.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))


@intrinsic
def vstore_nt(typingctx, arr, idx, v):
    """``vstore`` as a non-temporal store: the data goes to memory without the line being read for ownership first and
    without displacing the caches. For large outputs written once (a 36 KB row per item of a 363 MB output: 4.7 us per
    item through the caches, 1.9 us non-temporal, one thread of a Xeon). The address must be aligned to the vector's
    size (``vwidth * itemsize`` bytes; a misaligned one faults on x86), and the kernel calls :func:`store_fence`
    before its results are read by another thread."""
    if _vector_of(arr) != v:
        raise TypeError(f"cannot store {v} into {arr}")

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        val = args[2]
        nbytes = val.type.count * sig.args[0].dtype.bitwidth // 8
        _nontemporal(builder, builder.store(val, builder.bitcast(ptr, val.type.as_pointer()), align=nbytes))
        return context.get_dummy_value()

    return types.void(arr, idx, v), codegen


@intrinsic
def store_fence(typingctx):
    """A full memory fence: orders the non-temporal stores before it with every later memory access."""

    def codegen(context, builder, sig, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


def _prefetch_codegen(locality: int):
    # llvm.prefetch(address, rw = 0 (read), locality, cache type = 1 (data)); x86: locality 3 -> prefetcht0,
    # 2 -> prefetcht1
    def codegen(context, builder, sig, args):
        i8p = ir.IntType(8).as_pointer()
        ptr = builder.bitcast(_element_pointer(context, builder, sig.args[0], args[0], args[1]), i8p)
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, locality), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return codegen


@intrinsic
def prefetch(typingctx, arr, idx):
    """A hint to bring the cache line of ``arr[idx]`` into the L1 cache (x86: ``prefetcht0``). A hint, not an access:
    an index past the array's end (the next row of a stream) neither faults nor reads, so kernels may prefetch a fixed
    distance ahead of where they read without bounds checks."""
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None
    return types.void(arr, idx), _prefetch_codegen(3)


@intrinsic
def prefetch_l2(typingctx, arr, idx):
    """As :func:`prefetch`, but into the L2 cache only (x86: ``prefetcht1``): for a stream read once, whose lines
    need not wait in L1 (a core's L1 holds a few KB of a stream; the L2 the whole prefetch distance)."""
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None
    return types.void(arr, idx), _prefetch_codegen(2)


def _broadcast(builder, scalar, vt):
    undef = ir.Constant(vt, ir.Undefined)
    v = builder.insert_element(undef, scalar, ir.Constant(ir.IntType(32), 0))
    zeros = ir.Constant(ir.VectorType(ir.IntType(32), vt.count), [0] * vt.count)
    return builder.shuffle_vector(v, undef, zeros)


@intrinsic
def vfma(typingctx, acc, v, s):
    if not isinstance(acc, Vector) or acc != v or not isinstance(s, (types.Float, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        acc_, v_, s_ = args
        s_ = context.cast(builder, s_, sig.args[2], sig.args[0].dtype)
        prod = builder.fmul(v_, _broadcast(builder, s_, acc_.type), flags=["fast"])
        return builder.fadd(acc_, prod, flags=["fast"])

    return acc(acc, v, s), codegen


@intrinsic
def vadd(typingctx, a, b):
    if not isinstance(a, Vector) or a != b:
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1], flags=["fast"])

    return a(a, b), codegen


@intrinsic
def vmul(typingctx, a, b):
    if not isinstance(a, Vector) or a != b:
        return None

    def codegen(context, builder, sig, args):
        return builder.fmul(args[0], args[1], flags=["fast"])

    return a(a, b), codegen


@intrinsic
def vreverse(typingctx, v):
    """The vector's elements in reverse order (a constant shuffle)."""
    if not isinstance(v, Vector):
        return None

    def codegen(context, builder, sig, args):
        x = args[0]
        n = x.type.count
        mask = ir.Constant(ir.VectorType(ir.IntType(32), n), list(range(n - 1, -1, -1)))
        return builder.shuffle_vector(x, ir.Constant(x.type, ir.Undefined), mask)

    return v(v), codegen


@intrinsic
def vsum(typingctx, v):
    """The sum of a vector's elements (a tree of halving shuffles and adds)."""
    if not isinstance(v, Vector):
        return None

    def codegen(context, builder, sig, args):
        x = args[0]
        n = x.type.count
        i32 = ir.IntType(32)
        while n > 1:
            half = n // 2
            undef = ir.Constant(x.type, ir.Undefined)
            lo = builder.shuffle_vector(x, undef, ir.Constant(ir.VectorType(i32, half), list(range(half))))
            hi = builder.shuffle_vector(x, undef, ir.Constant(ir.VectorType(i32, half), list(range(half, n))))
            x = builder.fadd(lo, hi, flags=["fast"])
            n = half
        return builder.extract_element(x, ir.Constant(i32, 0))

    return v.dtype(v), codegen


def _transpose(name: str, vector_of, stages, doc: str):
    # a square transpose intrinsic: the rows loaded as half vectors, rows i and i + n/2 paired per half at load time
    # (t[part][i] = [row i, elements of half `part` | row i + n/2, same elements]), then `stages(shuf, t, n)` gives the
    # n output rows, stored at dst_off + j * dst_stride
    def transpose(typingctx, src, src_off, src_stride, dst, dst_off, dst_stride):
        vt = vector_of(src)
        if vector_of(dst) != vt:
            return None
        n = vt.n

        def codegen(context, builder, sig, args):
            s_arr, s_off, s_str, d_arr, d_off, d_str = args
            sty, dty = sig.args[0], sig.args[3]
            lt = context.get_value_type(vt)
            align = sty.dtype.bitwidth // 8
            i64 = ir.IntType(64)
            i32 = ir.IntType(32)
            h = n // 2
            half_t = ir.VectorType(lt.element, h)

            def half(row, part):  # elements part * h .. part * h + h of row `row`
                idx = builder.add(builder.add(s_off, builder.mul(s_str, ir.Constant(i64, row))),
                                  ir.Constant(i64, part * h))
                ptr = _element_pointer(context, builder, sty, s_arr, idx)
                return builder.load(builder.bitcast(ptr, half_t.as_pointer()), align=align)

            def shuf(a, b, mask):
                return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, n), mask))

            cat = list(range(n))
            t = [[shuf(half(i, part), half(i + h, part), cat) for i in range(h)] for part in range(2)]
            cols = stages(shuf, t, n)
            for j in range(n):
                idx = builder.add(d_off, builder.mul(d_str, ir.Constant(i64, j)))
                ptr = _element_pointer(context, builder, dty, d_arr, idx)
                builder.store(cols[j], builder.bitcast(ptr, lt.as_pointer()), align=align)
            return context.get_dummy_value()

        return types.void(src, src_off, src_stride, dst, dst_off, dst_stride), codegen

    transpose.__doc__ = doc
    return _named(name, transpose)


def _in_lane_stages(shuf, t, n):
    # after the pairing, the rest stays within 128-bit lanes: two stages of in-lane shuffles for 8 x float32 (16 in
    # all; three stages of interleaves would take 24, some crossing lanes), one for 4 x float64 (4)
    cols = []
    if n == 8:
        lo = [0, 8, 1, 9, 4, 12, 5, 13]  # unpcklps
        hi = [2, 10, 3, 11, 6, 14, 7, 15]  # unpckhps
        ev = [0, 1, 8, 9, 4, 5, 12, 13]  # first two of each lane of a, then of b
        od = [2, 3, 10, 11, 6, 7, 14, 15]
        for part in range(2):
            t0, t1, t2, t3 = t[part]
            u0, u1 = shuf(t0, t1, lo), shuf(t0, t1, hi)
            u2, u3 = shuf(t2, t3, lo), shuf(t2, t3, hi)
            cols += [shuf(u0, u2, ev), shuf(u0, u2, od), shuf(u1, u3, ev), shuf(u1, u3, od)]
    elif n == 4:
        for part in range(2):
            t0, t1 = t[part]
            cols += [shuf(t0, t1, [0, 4, 2, 6]), shuf(t0, t1, [1, 5, 3, 7])]
    else:  # pragma: no cover - only 8 x float32 and 4 x float64 vectors exist
        raise NotImplementedError(n)
    return cols


def _block_swap_stages(shuf, t, n):
    # the pairing is the first stage (b = n/2) of the block swaps; each further stage (b = n/4 .. 1) swaps the
    # off-diagonal b x b blocks of the row pairs (i, i + b), i // b even, one two-source shuffle per row: within each
    # 2b chunk row i keeps its first b and takes row i + b's first b, row i + b takes row i's second b
    r = t[0] + t[1]
    b = n // 4
    while b >= 1:
        chunks = range(0, n, 2 * b)
        lo = [x for c in chunks for x in list(range(c, c + b)) + list(range(n + c, n + c + b))]
        hi = [x for c in chunks for x in list(range(c + b, c + 2 * b)) + list(range(n + c + b, n + c + 2 * b))]
        nr = list(r)
        for i in range(n):
            if (i // b) % 2 == 0:
                nr[i] = shuf(r[i], r[i + b], lo)
                nr[i + b] = shuf(r[i], r[i + b], hi)
        r = nr
        b //= 2
    return r


vtranspose = _transpose("vtranspose", _vector_of, _in_lane_stages, """Transpose one square block of ``vwidth`` x
    ``vwidth`` elements: ``dst[dst_off + j * dst_stride + i] = src[src_off + i * src_stride + j]``. Both arrays are 1-D
    of the same dtype.

    The rows are loaded as half vectors and paired across the two 128-bit lanes (row ``i`` and row ``i + n/2`` of the
    same column half in one vector, a load and an insert), so the rest of the transpose stays within lanes: two stages
    of in-lane shuffles for float32 (16 shuffles for 8 x 8; three stages of interleaves would take 24, some crossing
    lanes), one for float64 (4 for 4 x 4).""")

wtranspose = _transpose("wtranspose", _wide_of, _block_swap_stages, """:func:`vtranspose` for a square of ``wwidth``
    x ``wwidth`` elements (16 x 16 float32, 8 x 8 float64), in wide vectors.

    Rows ``i`` and ``i + n/2`` are paired by their half vectors at load time (the first stage of the block swaps);
    the remaining ``log2(n) - 1`` stages each swap the off-diagonal ``b x b`` blocks of the row pairs ``(i, i + b)``
    with one two-source shuffle per row: 48 shuffles for 16 x 16 float32 (0.19 per element; ``vtranspose``'s 8 x 8:
    0.25), and whole 64-byte rows stored (aligned to a cache line when ``dst`` is).""")


def _contiguous(arrty):
    if not isinstance(arrty, types.Array) or arrty.layout != "C":
        raise TypeError(f"flat element access needs a C-contiguous array, got {arrty}")


@intrinsic
def load_at(typingctx, arr, idx):
    """``arr.flat[idx]`` of a C-contiguous array of any rank, unchecked: no view (numba's slice views update a
    reference count, an atomic operation) and no negative-index wraparound (a select per access that also keeps LLVM
    from recognising consecutive accesses). The caller keeps ``idx`` in bounds."""
    _contiguous(arr)
    if not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.load(_element_pointer(context, builder, sig.args[0], args[0], args[1]))

    return arr.dtype(arr, idx), codegen


@intrinsic
def store_at(typingctx, arr, idx, v):
    """``arr.flat[idx] = v`` of a C-contiguous array of any rank, unchecked (see :func:`load_at`)."""
    _contiguous(arr)
    if not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        val = context.cast(builder, args[2], sig.args[2], sig.args[0].dtype)
        builder.store(val, _element_pointer(context, builder, sig.args[0], args[0], args[1]))
        return context.get_dummy_value()

    return types.void(arr, idx, v), codegen


@intrinsic
def unmanaged(typingctx, arr):
    """``arr`` without its memory manager (a null ``meminfo``): views of it and calls that pass it on update no
    reference count. numba counts references to an array's buffer with atomic operations on one shared word: a view
    taken per item, or an array passed to a function that is not inlined, costs two of them, and when two threads do
    it on the same array (the weights) the word moves between their cores at every update. The caller keeps the
    original alive while the result is in use: an argument of the calling kernel is, a local buffer needs
    :func:`keepalive` after its last use through the result."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, sig, args):
        src = context.make_array(sig.args[0])(context, builder, args[0])
        dst = context.make_array(sig.return_type)(context, builder)
        dst.meminfo = ir.Constant(dst.meminfo.type, None)
        dst.parent = ir.Constant(dst.parent.type, None)
        dst.nitems = src.nitems
        dst.itemsize = src.itemsize
        dst.data = src.data
        dst.shape = src.shape
        dst.strides = src.strides
        return dst._getvalue()

    return arr(arr), codegen


@intrinsic
def keepalive(typingctx, arr):
    """A use of ``arr`` that does nothing: placed after the last use of its :func:`unmanaged` view, it keeps numba
    from releasing it earlier."""

    def codegen(context, builder, sig, args):
        return context.get_dummy_value()

    return types.void(arr), codegen


def _interleave_types(src, d, dst):
    # (vector type, vwidth, d) for vdeinterleave / vinterleave: d a compile-time constant, both arrays C-contiguous of
    # the same float dtype; None when d is not a constant or the dtypes differ
    if not isinstance(d, types.IntegerLiteral):
        return None
    _contiguous(src)
    _contiguous(dst)
    vt = _vector_of(src)
    if _vector_of(dst) != vt:
        return None
    return vt, vt.n, d.literal_value


@intrinsic
def vdeinterleave(typingctx, src, src_off, d, dst, dst_off, dst_stride):
    """``dst[dst_off + i * dst_stride + k] = src[src_off + k * d + i]`` for ``i < d``, ``k < vwidth``: ``vwidth``
    consecutive groups of ``d`` elements (e.g. the ``2l+1`` components of ``vwidth`` channels in e3nn's ``mul_ir``
    layout) split into ``d`` vectors, one per component (``ir_mul``). One wide load, one shuffle and one vector store per
    component; ``d`` must be a compile-time constant. Flat offsets into C-contiguous arrays of the same dtype."""
    typed = _interleave_types(src, d, dst)
    if typed is None:
        return None
    vt, n, D = typed

    def codegen(context, builder, sig, args):
        s_arr, s_off, _, d_arr, d_off, d_str = args
        sty, dty = sig.args[0], sig.args[3]
        align = sty.dtype.bitwidth // 8
        wide_t = _wide_type(vt, n * D)
        ptr = _element_pointer(context, builder, sty, s_arr, s_off)
        wide = builder.load(builder.bitcast(ptr, wide_t.as_pointer()), align=align)
        i32, i64 = ir.IntType(32), ir.IntType(64)
        lt = context.get_value_type(vt)
        for i in range(D):
            mask = ir.Constant(ir.VectorType(i32, n), [k * D + i for k in range(n)])
            v = builder.shuffle_vector(wide, ir.Constant(wide_t, ir.Undefined), mask)
            idx = builder.add(d_off, builder.mul(d_str, ir.Constant(i64, i)))
            p = _element_pointer(context, builder, dty, d_arr, idx)
            builder.store(v, builder.bitcast(p, lt.as_pointer()), align=align)
        return context.get_dummy_value()

    return types.void(src, src_off, d, dst, dst_off, dst_stride), codegen


def _interleave_codegen(vt, n, D, nt):
    def codegen(context, builder, sig, args):
        s_arr, s_off, s_str, _, d_arr, d_off = args
        sty, dty = sig.args[0], sig.args[4]
        align = sty.dtype.bitwidth // 8
        i32, i64 = ir.IntType(32), ir.IntType(64)
        lt = context.get_value_type(vt)
        parts = []
        for i in range(D):
            idx = builder.add(s_off, builder.mul(s_str, ir.Constant(i64, i)))
            p = _element_pointer(context, builder, sty, s_arr, idx)
            parts.append(builder.load(builder.bitcast(p, lt.as_pointer()), align=align))
        P = 1
        while P < D:
            P *= 2
        width = n
        while len(parts) < P:
            parts.append(ir.Constant(lt, ir.Undefined))
        while len(parts) > 1:  # concatenate pairwise: <n> -> <2n> -> ... -> <P n>
            cat = ir.Constant(ir.VectorType(i32, 2 * width), list(range(2 * width)))
            parts = [builder.shuffle_vector(parts[j], parts[j + 1], cat) for j in range(0, len(parts), 2)]
            width *= 2
        mask = ir.Constant(ir.VectorType(i32, n * D), [i * n + k for k in range(n) for i in range(D)])
        out = builder.shuffle_vector(parts[0], ir.Constant(parts[0].type, ir.Undefined), mask)
        if not nt:
            p = _element_pointer(context, builder, dty, d_arr, d_off)
            builder.store(out, builder.bitcast(p, _wide_type(vt, n * D).as_pointer()), align=align)
            return context.get_dummy_value()
        undef = ir.Constant(out.type, ir.Undefined)
        for i in range(D):  # D aligned vectors, non-temporal
            part = builder.shuffle_vector(out, undef, ir.Constant(ir.VectorType(i32, n), list(range(i * n, i * n + n))))
            p = _element_pointer(context, builder, dty, d_arr, builder.add(d_off, ir.Constant(i64, i * n)))
            _nontemporal(builder, builder.store(part, builder.bitcast(p, lt.as_pointer()), align=align * n))
        return context.get_dummy_value()

    return codegen


@intrinsic
def vinterleave(typingctx, src, src_off, src_stride, d, dst, dst_off):
    """The inverse of :func:`vdeinterleave`: ``dst[dst_off + k * d + i] = src[src_off + i * src_stride + k]`` for
    ``i < d``, ``k < vwidth`` (``d`` vectors, one per component, merged into ``vwidth`` consecutive groups of ``d``)."""
    typed = _interleave_types(src, d, dst)
    if typed is None:
        return None
    vt, n, D = typed
    return types.void(src, src_off, src_stride, d, dst, dst_off), _interleave_codegen(vt, n, D, False)


@intrinsic
def vinterleave_nt(typingctx, src, src_off, src_stride, d, dst, dst_off):
    """:func:`vinterleave` with non-temporal stores (see :func:`vstore_nt`): ``dst_off`` must be aligned to a vector."""
    typed = _interleave_types(src, d, dst)
    if typed is None:
        return None
    vt, n, D = typed
    return types.void(src, src_off, src_stride, d, dst, dst_off), _interleave_codegen(vt, n, D, True)
