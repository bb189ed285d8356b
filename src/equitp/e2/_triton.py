"""Triton GPU kernels for the block fill (see :mod:`._fill`), importable without triton.

* forward: one program per (row ``r`` of the irreps-space kernel, block of field pairs ``f``) accumulates
  ``x[f, col[j]] * val[j, :]`` over the row's stored block numbers and writes ``out[r, f, :]``;
* backward: one program per (element ``e``, block of ``f``) reduces ``g[row[j], f, :] . val[j, :]`` over the
  element's entries (the transposed structure) into ``gx[f, e]``.

They run on CUDA tensors, and on CPU tensors in Triton's interpreter mode (``TRITON_INTERPRET=1``, used by the
tests). Without triton the module imports; calling a kernel raises ``ImportError``.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["triton_available", "fill_forward_triton", "fill_backward_triton"]

_KERNELS: dict[str, Any] = {}
_IMPORT_ERROR: Exception | None = None


def _build() -> dict[str, Any]:
    global _IMPORT_ERROR
    if _KERNELS or _IMPORT_ERROR is not None:
        return _KERNELS
    try:
        import triton
        import triton.language as tl
    except Exception as exc:  # pragma: no cover - depends on the environment
        _IMPORT_ERROR = exc
        return _KERNELS

    @triton.jit
    def _fill_fwd(rowptr_ptr, col_ptr, val_ptr, x_ptr, out_ptr, F, D, S,
                  BLOCK_F: tl.constexpr, BLOCK_S: tl.constexpr):
        row = tl.program_id(0)
        fb = tl.program_id(1)
        offs_f = fb * BLOCK_F + tl.arange(0, BLOCK_F)
        offs_s = tl.arange(0, BLOCK_S)
        mask_f = offs_f < F
        mask_s = offs_s < S
        start = tl.load(rowptr_ptr + row)
        end = tl.load(rowptr_ptr + row + 1)
        acc = tl.zeros([BLOCK_F, BLOCK_S], dtype=x_ptr.dtype.element_ty)
        for j in range(start, end):
            c = tl.load(col_ptr + j).to(tl.int64)
            w = tl.load(x_ptr + offs_f.to(tl.int64) * D + c, mask=mask_f, other=0.0)
            v = tl.load(val_ptr + j * S + offs_s, mask=mask_s, other=0.0)
            acc += w[:, None] * v[None, :]
        base = (row.to(tl.int64) * F + offs_f.to(tl.int64)) * S
        tl.store(out_ptr + base[:, None] + offs_s[None, :], acc, mask=mask_f[:, None] & mask_s[None, :])

    @triton.jit
    def _fill_bwd(t_rowptr_ptr, t_row_ptr, t_val_ptr, g_ptr, gx_ptr, F, D, S,
                  BLOCK_F: tl.constexpr, BLOCK_S: tl.constexpr):
        e = tl.program_id(0)
        fb = tl.program_id(1)
        offs_f = fb * BLOCK_F + tl.arange(0, BLOCK_F)
        offs_s = tl.arange(0, BLOCK_S)
        mask_f = offs_f < F
        mask_s = offs_s < S
        start = tl.load(t_rowptr_ptr + e)
        end = tl.load(t_rowptr_ptr + e + 1)
        acc = tl.zeros([BLOCK_F], dtype=g_ptr.dtype.element_ty)
        for j in range(start, end):
            r = tl.load(t_row_ptr + j).to(tl.int64)
            v = tl.load(t_val_ptr + j * S + offs_s, mask=mask_s, other=0.0)
            base = (r * F + offs_f.to(tl.int64)) * S
            gv = tl.load(g_ptr + base[:, None] + offs_s[None, :], mask=mask_f[:, None] & mask_s[None, :], other=0.0)
            acc += tl.sum(gv * v[None, :], axis=1)
        tl.store(gx_ptr + offs_f.to(tl.int64) * D + e, acc, mask=mask_f)

    _KERNELS["forward"] = _fill_fwd
    _KERNELS["backward"] = _fill_bwd
    return _KERNELS


def triton_available() -> bool:
    """Whether triton imports (kernels then run on CUDA tensors, or anywhere with ``TRITON_INTERPRET=1``)."""
    return bool(_build())


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _kernel(name: str, t: torch.Tensor):
    kernels = _build()
    if not kernels:
        raise ImportError(
            "the 'triton' block-fill executor needs the triton package (pip install 'equitp[gpu]'); "
            f"import failed with: {_IMPORT_ERROR!r}"
        )
    if t.device.type != "cuda" and not _interpreting():
        raise ValueError(
            f"the triton executor runs on CUDA tensors (or on CPU with TRITON_INTERPRET=1); got device {t.device}"
        )
    return kernels[name]


def _blocks(F: int, S: int) -> tuple[int, int]:
    block_s = max(16, 1 << max(S - 1, 0).bit_length())
    block_f = max(1, min(64, 4096 // block_s))
    block_f = min(block_f, max(1, 1 << max(F - 1, 0).bit_length()))
    return block_f, block_s


def fill_forward_triton(structure: Any, x: torch.Tensor) -> torch.Tensor:
    """``out[r, f, :] = sum_j x[f, col[j]] val[j, :]``: ``x`` ``(F, D)`` -> ``(R, F, S)``."""
    kernel = _kernel("forward", x)
    x = x.contiguous()
    F, D = x.shape
    S = structure.num_points
    out = torch.empty((structure.n_rows, F, S), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    bf, bs = _blocks(F, S)
    grid = (structure.n_rows, (F + bf - 1) // bf)
    rowptr, col, val = structure.csr()[:3]
    kernel[grid](rowptr, col, val, x, out, F, D, S, BLOCK_F=bf, BLOCK_S=bs)
    return out


def fill_backward_triton(structure: Any, g: torch.Tensor) -> torch.Tensor:
    """``gx[f, e] = sum_{j in e} g[row[j], f, :] . val[j, :]``: ``g`` ``(R, F, S)`` -> ``(F, D)``."""
    kernel = _kernel("backward", g)
    g = g.contiguous()
    F = g.shape[1]
    S = structure.num_points
    D = structure.n_cols
    gx = torch.empty((F, D), dtype=g.dtype, device=g.device)
    if gx.numel() == 0:
        return gx
    bf, bs = _blocks(F, S)
    grid = (D, (F + bf - 1) // bf)
    t_rowptr, t_row, t_val = structure.csr()[3:]
    kernel[grid](t_rowptr, t_row, t_val, g, gx, F, D, S, BLOCK_F=bf, BLOCK_S=bs)
    return gx
