"""The numba SIMD helpers of the CPU kernels: unmanaged views (no reference counting) read the same data, also through
a function that is not inlined; vector loads, stores and multiply-adds with a scalar tail."""

import numpy as np
import pytest

numba = pytest.importorskip("numba")

from equitp.executors.cpu._simd import (  # noqa: E402
    keepalive, prefetch, prefetch_l2, store_fence, unmanaged, vadd, vdeinterleave, vfma, vinterleave, vinterleave_nt,
    vload, vmul, vstore, vstore_nt, vtranspose, vwidth, vzero, wload, wstore, wtranspose, wwidth, wzero,
)


def _sum_windows(arr, u):
    s = 0.0
    for i in range(arr.shape[0] - 3):
        s += u[i:i + 3].sum()
    return s


@numba.njit
def _managed(n):
    a = np.arange(n).astype(np.float32)
    return _sum_windows(a, a)


@numba.njit
def _unmanaged(n):
    a = np.arange(n).astype(np.float32)
    s = _sum_windows(a, unmanaged(a))
    keepalive(a)
    return s


_sum_windows = numba.njit(_sum_windows)


@numba.njit
def _axpy(y, x, c):
    vw = vwidth(y)
    i = 0
    while i + vw <= y.shape[0]:
        vstore(y, i, vfma(vload(y, i), vload(x, i), c))
        i += vw
    while i < y.shape[0]:
        y[i] += c * x[i]
        i += 1
    z = vzero(y)
    vstore(y, 0, vfma(z, vload(y, 0), 1.0))  # a zero vector plus the first lanes: unchanged


@pytest.mark.parametrize("n", [4, 10, 37])
def test_unmanaged_views_read_the_same_data(n):
    expected = sum(float(np.arange(i, i + 3).sum()) for i in range(n - 3))
    assert _unmanaged(n) == pytest.approx(expected)
    assert _managed(n) == pytest.approx(expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_axpy_with_tail(dtype):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(19).astype(dtype), rng.standard_normal(19).astype(dtype)
    expected = y + 0.5 * x
    _axpy(y, x, 0.5)
    np.testing.assert_allclose(y, expected, rtol=1e-6)


@numba.njit
def _split(src, dst, mul, d):
    for u in range(0, mul - mul % vwidth(src), vwidth(src)):
        if d == 3:
            vdeinterleave(src, u * 3, 3, dst, u, mul)
        elif d == 5:
            vdeinterleave(src, u * 5, 5, dst, u, mul)
        else:
            vdeinterleave(src, u * 7, 7, dst, u, mul)


@numba.njit
def _merge(src, dst, mul, d):
    for u in range(0, mul - mul % vwidth(src), vwidth(src)):
        if d == 3:
            vinterleave(src, u, mul, 3, dst, u * 3)
        elif d == 5:
            vinterleave(src, u, mul, 5, dst, u * 5)
        else:
            vinterleave(src, u, mul, 7, dst, u * 7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [3, 5, 7])
def test_vector_interleave_is_the_layout_change(dtype, d):
    """vdeinterleave turns groups of d components (mul_ir) into one row per component (ir_mul); vinterleave undoes it."""
    mul = 32
    x = np.random.default_rng(d).standard_normal(mul * d).astype(dtype)
    y = np.zeros(mul * d, dtype=dtype)
    _split(x, y, mul, d)
    np.testing.assert_array_equal(y.reshape(d, mul), x.reshape(mul, d).T)
    z = np.zeros(mul * d, dtype=dtype)
    _merge(y, z, mul, d)
    np.testing.assert_array_equal(z, x)


@numba.njit
def _merge_nt(src, dst, mul, d):
    for u in range(0, mul, vwidth(src)):
        if d == 1:
            vstore_nt(dst, u, vload(src, u))
        elif d == 3:
            vinterleave_nt(src, u, mul, 3, dst, u * 3)
        elif d == 5:
            vinterleave_nt(src, u, mul, 5, dst, u * 5)
        else:
            vinterleave_nt(src, u, mul, 7, dst, u * 7)
    store_fence()


def _aligned(n, dtype):
    # a zeroed array whose data starts on a 64-byte boundary (non-temporal vector stores need vector alignment)
    raw = np.zeros(n + 64, dtype=dtype)
    k = (-raw.ctypes.data % 64) // raw.itemsize
    return raw[k:k + n]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 3, 5, 7])
def test_non_temporal_stores_write_the_same_values(dtype, d):
    """vstore_nt and vinterleave_nt store what vstore and vinterleave store (aligned destination)."""
    mul = 24 if dtype == np.float32 else 12
    y = np.random.default_rng(d).standard_normal(mul * d).astype(dtype)  # ir_mul rows
    z = _aligned(mul * d, dtype)
    assert z.ctypes.data % 32 == 0
    _merge_nt(y, z, mul, d)
    np.testing.assert_array_equal(z, y.reshape(d, mul).T.reshape(-1))


@numba.njit
def _transpose_blocks(src, dst, rows, cols, wide):
    w = wwidth(src) if wide else vwidth(src)
    for i0 in range(0, rows, w):
        for j0 in range(0, cols, w):
            if wide:
                wtranspose(src, i0 * cols + j0, cols, dst, j0 * rows + i0, rows)
            else:
                vtranspose(src, i0 * cols + j0, cols, dst, j0 * rows + i0, rows)


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_transpose_of_squares(dtype, wide):
    """vtranspose moves each vwidth x vwidth square to its transposed place (strided rows on both sides); wtranspose
    each wwidth x wwidth square (16 x 16 float32, 8 x 8 float64)."""
    rows, cols = 32, 48
    x = np.random.default_rng(1).standard_normal(rows * cols).astype(dtype)
    y = np.zeros(rows * cols, dtype=dtype)
    _transpose_blocks(x, y, rows, cols, wide)
    np.testing.assert_array_equal(y.reshape(cols, rows), x.reshape(rows, cols).T)


@numba.njit
def _wide_ops(x, y, out, c):
    # out = c * x + x * y + y at unaligned offsets, by wide vectors, with a scalar tail
    ww = wwidth(x)
    i = 0
    while i + ww <= x.shape[0]:
        a, b = wload(x, i), wload(y, i)
        wstore(out, i, vadd(vfma(wzero(x), a, c), vadd(vmul(a, b), b)))
        i += ww
    while i < x.shape[0]:
        out[i] = c * x[i] + x[i] * y[i] + y[i]
        i += 1
    return ww


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wide_vectors_are_twice_the_width(dtype):
    """wload / wstore / wzero move wwidth = 2 vwidth elements (64 bytes); vfma, vadd and vmul take wide vectors."""
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal(53).astype(dtype), rng.standard_normal(53).astype(dtype)
    out = np.zeros(53, dtype=dtype)
    ww = _wide_ops(x[1:], y[1:], out[1:], 0.5)  # 52 elements from an unaligned start: whole vectors and a tail
    assert ww * np.dtype(dtype).itemsize == 64
    np.testing.assert_allclose(out[1:], 0.5 * x[1:] + x[1:] * y[1:] + y[1:], rtol=1e-6)
    assert out[0] == 0


@numba.njit
def _sum_prefetching(a, ahead):
    s = 0.0
    for i in range(a.shape[0]):
        prefetch(a, i + ahead)  # past the end for the last `ahead` elements: a hint, never an access
        s += a[i]
    return s


@numba.njit
def _sum_prefetching_l2(a, ahead):
    s = 0.0
    for i in range(a.shape[0]):
        prefetch_l2(a, i + ahead)
        s += a[i]
    return s


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel, instruction", [(_sum_prefetching, "prefetcht0"), (_sum_prefetching_l2, "prefetcht1")])
def test_prefetch_is_a_hint_even_past_the_end(dtype, kernel, instruction):
    # a prefetch far past the array's end (here a million elements) must neither fault nor change a result, and on
    # x86 it must compile to the prefetch instruction of its cache level (not a load, which could fault)
    a = np.arange(1, 101, dtype=dtype)
    for ahead in (0, 16, 1 << 20):
        assert kernel(a, ahead) == 5050.0
    import platform

    if platform.machine() in ("x86_64", "AMD64"):
        asm = kernel.inspect_asm(kernel.signatures[-1])
        assert instruction in asm
