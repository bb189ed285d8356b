"""Multithreaded, vectorised numba kernels for the sparse accumulation (CPU).

Layout: the operands arrive as C-contiguous 2-D arrays ``X1 (N, M1)``, ``X2 (N, M2)``, ``out (N, K)`` (the
leading dimensions flattened into ``N``; the sparse dimension last and contiguous).

Strategy of :func:`_contract_kernel` (``out[r, mu[i]] += X1[r, m1[i]] * X2[r, m2[i]] * C[i]``):

* The rows are cut into blocks of ``_BLOCK`` rows; a fixed number of tasks (independent of the thread count,
  so results are reproducible) each own a contiguous range of blocks and run in parallel (``prange``).
  Each output element is written by exactly one task: no atomics.
* Per block, the ``X1``/``X2`` rows are transposed into small task-local buffers ``(M, _BLOCK)`` (in L1), so
  that every rule entry becomes a contiguous, SIMD-vectorised AXPY-like update over ``_BLOCK`` rows.
* The rule is grouped by output index once per descriptor (:func:`_plan`, cached): for each output ``k`` the
  accumulator row ``(k, 0:_BLOCK)`` stays hot while its entries are summed, then the block is transposed back.
  Unsorted ``mu`` is therefore handled by construction.

:func:`_coefficient_grad_kernel` computes ``grad_C[i] = sum_r G[r, mu[i]] X1[r, m1[i]] X2[r, m2[i]]`` with the
same blocking, per-task partial sums (float64) and a final reduction over tasks.

The fastmath flags allow reassociation and FMA contraction but *not* ``nnan``/``ninf``, so NaN and inf
propagate as in the reference executor.
"""

from __future__ import annotations

import contextlib
import functools

import numba
import numpy as np
import torch
from numba import prange

from equitp.descriptors._accumulate import SparseAccumulation

__all__ = ["accumulate", "accumulate_coefficient_grad"]

# Rows per block (SIMD loop length); a compile-time constant of the kernels.
_BLOCK = 128
# Upper bound on the number of parallel tasks; fixed so the summation order does not depend on threads.
_MAX_TASKS = 64
# Below this much work (rows x (nnz + dense columns)) a call runs on the calling thread only: waking the
# thread pool costs more than it saves, and on a loaded machine a parallel region can stall for a time slice.
_SERIAL_WORK = 1 << 18
# fastmath without the no-NaN / no-inf assumptions: NaN and inf must propagate.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp", "afn"}


@numba.njit(parallel=True, fastmath=_FASTMATH, cache=True)
def _contract_kernel(x1, x2, c, i1, i2, offsets, out):  # pragma: no cover - compiled
    n = x1.shape[0]
    d1 = x1.shape[1]
    d2 = x2.shape[1]
    n_out = out.shape[1]
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    n_tasks = min(n_blocks, _MAX_TASKS)
    for task in prange(n_tasks):
        first = task * n_blocks // n_tasks
        last = (task + 1) * n_blocks // n_tasks
        a = np.zeros((d1, _BLOCK), dtype=x1.dtype)
        b = np.zeros((d2, _BLOCK), dtype=x1.dtype)
        acc = np.zeros((n_out, _BLOCK), dtype=x1.dtype)
        for block in range(first, last):
            r0 = block * _BLOCK
            rows = min(_BLOCK, n - r0)
            if rows < _BLOCK:  # last, partial block: clear stale lanes
                for m in range(d1):
                    for r in range(rows, _BLOCK):
                        a[m, r] = 0
                for m in range(d2):
                    for r in range(rows, _BLOCK):
                        b[m, r] = 0
            for r in range(rows):
                for m in range(d1):
                    a[m, r] = x1[r0 + r, m]
                for m in range(d2):
                    b[m, r] = x2[r0 + r, m]
            for k in range(n_out):
                for r in range(_BLOCK):
                    acc[k, r] = 0
                # entries of output k, two at a time (halves the loads/stores of the accumulator row);
                # unsigned indices spare numba's negative-index wraparound and let LLVM vectorise over r
                e = offsets[k]
                end = offsets[k + 1]
                while e + 1 < end:
                    c0 = c[e]
                    p0 = np.uint64(i1[e])
                    q0 = np.uint64(i2[e])
                    c1 = c[e + 1]
                    p1 = np.uint64(i1[e + 1])
                    q1 = np.uint64(i2[e + 1])
                    for r in range(_BLOCK):
                        acc[k, r] += c0 * a[p0, r] * b[q0, r] + c1 * a[p1, r] * b[q1, r]
                    e += 2
                if e < end:
                    c0 = c[e]
                    p0 = np.uint64(i1[e])
                    q0 = np.uint64(i2[e])
                    for r in range(_BLOCK):
                        acc[k, r] += c0 * a[p0, r] * b[q0, r]
            for r in range(rows):
                for k in range(n_out):
                    out[r0 + r, k] = acc[k, r]


@numba.njit(parallel=True, fastmath=_FASTMATH, cache=True)
def _coefficient_grad_kernel(g, x1, x2, i_out, i1, i2, partial):  # pragma: no cover - compiled
    n = x1.shape[0]
    d1 = x1.shape[1]
    d2 = x2.shape[1]
    n_out = g.shape[1]
    nnz = i_out.shape[0]
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    n_tasks = partial.shape[0]
    for task in prange(n_tasks):
        first = task * n_blocks // n_tasks
        last = (task + 1) * n_blocks // n_tasks
        a = np.zeros((d1, _BLOCK), dtype=x1.dtype)
        b = np.zeros((d2, _BLOCK), dtype=x1.dtype)
        h = np.zeros((n_out, _BLOCK), dtype=x1.dtype)
        for block in range(first, last):
            r0 = block * _BLOCK
            rows = min(_BLOCK, n - r0)
            if rows < _BLOCK:
                for m in range(d1):
                    for r in range(rows, _BLOCK):
                        a[m, r] = 0
                for m in range(d2):
                    for r in range(rows, _BLOCK):
                        b[m, r] = 0
                for m in range(n_out):
                    for r in range(rows, _BLOCK):
                        h[m, r] = 0
            for r in range(rows):
                for m in range(d1):
                    a[m, r] = x1[r0 + r, m]
                for m in range(d2):
                    b[m, r] = x2[r0 + r, m]
                for m in range(n_out):
                    h[m, r] = g[r0 + r, m]
            for e in range(nnz):
                s = np.uint64(i_out[e])
                p = np.uint64(i1[e])
                q = np.uint64(i2[e])
                total = x1.dtype.type(0)
                for r in range(_BLOCK):
                    total += h[s, r] * a[p, r] * b[q, r]
                partial[task, e] += total


@functools.lru_cache(maxsize=1024)
def _plan(descriptor: SparseAccumulation):
    """Rule grouped by output index, once per descriptor: ``(perm, m1_sorted, m2_sorted, offsets)``."""
    perm, offsets = descriptor.sorted_by_output()
    m1 = np.ascontiguousarray(descriptor.m1[perm])
    m2 = np.ascontiguousarray(descriptor.m2[perm])
    perm = np.ascontiguousarray(perm)
    return perm, m1, m2, offsets


@contextlib.contextmanager
def _threads_for(work: int):
    """Runs small problems single-threaded (``numba.set_num_threads`` is thread-local and cheap)."""
    if work >= _SERIAL_WORK or numba.get_num_threads() == 1:
        yield
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def _check(descriptor: SparseAccumulation, **tensors: torch.Tensor) -> None:
    """Device, dtype and shape checks (the kernels do no bounds checking, so shapes must match exactly)."""
    expected = {"X1": descriptor.M1, "X2": descriptor.M2, "G": descriptor.output_size}
    rows = None
    dtype = None
    for name, t in tensors.items():
        if t.device.type != "cpu":
            raise ValueError(f"the 'cpu' executor needs CPU tensors, got {name} on {t.device}")
        if t.dtype not in (torch.float32, torch.float64) or (dtype is not None and t.dtype != dtype):
            raise TypeError(f"the 'cpu' executor needs float32 or float64 operands of one dtype, got {name} of "
                            f"dtype {t.dtype}")
        dtype = t.dtype
        if name == "C":
            if tuple(t.shape) != (descriptor.nnz,):
                raise ValueError(f"C must have shape ({descriptor.nnz},), got {tuple(t.shape)}")
            continue
        if t.ndim != 2 or t.shape[1] != expected[name] or (rows is not None and t.shape[0] != rows):
            raise ValueError(f"{name} must have shape (N, {expected[name]}) with N shared by all operands, "
                             f"got {tuple(t.shape)}")
        rows = t.shape[0]


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().resolve_neg().contiguous().numpy()


def accumulate(descriptor: SparseAccumulation, X1: torch.Tensor, X2: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """``out[r, mu[i]] += X1[r, m1[i]] * X2[r, m2[i]] * C[i]`` with the numba kernel.

    Args:
        descriptor: the rule (any order of ``mu``).
        X1: ``(N, M1)`` CPU tensor, float32 or float64.
        X2: ``(N, M2)``, same dtype.
        C: ``(nnz,)`` coefficients, same dtype, in the descriptor's entry order.

    Returns:
        ``(N, output_size)`` tensor of the inputs' dtype.
    """
    _check(descriptor, X1=X1, X2=X2, C=C)
    perm, m1, m2, offsets = _plan(descriptor)
    x1 = _numpy(X1)
    x2 = _numpy(X2)
    c = np.ascontiguousarray(_numpy(C)[perm])
    out = np.empty((x1.shape[0], descriptor.output_size), dtype=x1.dtype)
    n = x1.shape[0]
    if n > 0 and descriptor.output_size > 0:
        with _threads_for(n * (descriptor.nnz + x1.shape[1] + x2.shape[1] + descriptor.output_size)):
            _contract_kernel(x1, x2, c, m1, m2, offsets, out)
    return torch.from_numpy(out)


def accumulate_coefficient_grad(
    descriptor: SparseAccumulation, G: torch.Tensor, X1: torch.Tensor, X2: torch.Tensor
) -> torch.Tensor:
    """``grad_C[i] = sum_r G[r, mu[i]] * X1[r, m1[i]] * X2[r, m2[i]]`` with the numba kernel.

    Args:
        descriptor: the rule.
        G: ``(N, output_size)`` CPU tensor (the gradient of ``out``), float32 or float64.
        X1: ``(N, M1)``, same dtype.
        X2: ``(N, M2)``, same dtype.

    Returns:
        ``(nnz,)`` tensor of the inputs' dtype, in the descriptor's entry order. Partial sums are float64.
    """
    _check(descriptor, G=G, X1=X1, X2=X2)
    g = _numpy(G)
    x1 = _numpy(X1)
    x2 = _numpy(X2)
    n = x1.shape[0]
    n_tasks = min((n + _BLOCK - 1) // _BLOCK, _MAX_TASKS)
    if n_tasks == 0 or descriptor.nnz == 0:
        return torch.zeros(descriptor.nnz, dtype=G.dtype)
    partial = np.zeros((n_tasks, descriptor.nnz), dtype=np.float64)
    with _threads_for(n * (descriptor.nnz + x1.shape[1] + x2.shape[1] + descriptor.output_size)):
        _coefficient_grad_kernel(g, x1, x2, descriptor.mu, descriptor.m1, descriptor.m2, partial)
    return torch.from_numpy(partial.sum(axis=0).astype(x1.dtype))
