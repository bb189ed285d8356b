"""The block fill: the irreps-space kernels ``khat[r, f, :] = sum_e w[f, e] beta_e[r, :]`` of all field pairs.

Rows ``r = o * I + i`` index the irreps-space kernel entry ``(o, i)``; each stored block number is a vector over
the ``S`` grid points. The fill is a sparse (vector-valued CSR) times dense product ``khat = M (x) w``:

* forward ``out[r, f, s] = sum_{j in row r} x[f, col[j]] * val[j, s]``, ``x`` ``(F, D)`` the weights of the
  ``F`` field pairs, ``out`` ``(R, F, S)``;
* backward ``gx[f, e] = sum_{j: col[j] = e} sum_s g[row[j], f, s] * val[j, s]`` -- the same contraction with the
  roles of ``x`` and ``out`` exchanged (the transposed structure), so double backward comes for free.

Executors (same structure, same result): ``"numba"`` (CPU kernels), ``"triton"`` (GPU kernels in :mod:`._triton`,
also CPU under ``TRITON_INTERPRET=1``) and ``"torch"`` (reference: gather + batched matmul, any device).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["FillStructure", "block_fill", "EXECUTORS"]

EXECUTORS = ("auto", "numba", "triton", "torch")

_NUMBA: dict[str, Any] = {}


def _numba_kernels():
    if not _NUMBA:
        import numba

        @numba.njit(parallel=True, fastmath=True, cache=True)
        def fill_forward(rowptr, col, valp, x, out):  # pragma: no cover - compiled
            # x (F, D) weights; valp (nnz, SP) block vectors zero padded to SP >= S; out (R, F, S)
            n_rows = out.shape[0]
            F = out.shape[1]
            S = out.shape[2]
            SP = valp.shape[1]
            FC = 64
            nfc = (F + FC - 1) // FC
            for task in numba.prange(n_rows * nfc):
                r = task // nfc
                f0 = (task % nfc) * FC
                nf = min(FC, F - f0)
                acc = np.zeros((FC, SP), dtype=out.dtype)
                for j in range(rowptr[r], rowptr[r + 1]):
                    c = col[j]
                    for f in range(nf):
                        w = x[f0 + f, c]
                        for s in range(SP):
                            acc[f, s] += w * valp[j, s]
                for f in range(nf):
                    for s in range(S):
                        out[r, f0 + f, s] = acc[f, s]

        @numba.njit(parallel=True, fastmath=True, cache=True)
        def fill_backward(t_rowptr, t_row, t_val, g, gxt):  # pragma: no cover - compiled
            # g (R, F, S); gxt (D, F)
            D = gxt.shape[0]
            F = gxt.shape[1]
            S = g.shape[2]
            for e in numba.prange(D):
                for f in range(F):
                    gxt[e, f] = 0.0
                for j in range(t_rowptr[e], t_rowptr[e + 1]):
                    r = t_row[j]
                    for f in range(F):
                        acc = 0.0
                        for s in range(S):
                            acc += g[r, f, s] * t_val[j, s]
                        gxt[e, f] += acc

        _NUMBA["forward"] = fill_forward
        _NUMBA["backward"] = fill_backward
    return _NUMBA


class FillStructure:
    """The vector CSR matrix ``M`` (``R`` rows, ``D`` columns, vectors of length ``S``) for one dtype / device.

    Holds the shared float64 arrays of :meth:`PairBasis.fill_arrays`; each executor builds (once, lazily) only the
    form it uses: device CSR tensors (triton), dtype-cast numpy arrays (numba) or rows padded to the longest row
    (torch).

    Args:
        arrays: ``(rowptr, col, val, t_rowptr, t_row, t_val)``: CSR by rows (``val`` ``(nnz, S)``) and the same
            entries grouped by column (element).
        n_rows, n_cols: ``R`` and ``D``.
        dtype, device: where the tensors live.
    """

    def __init__(self, arrays: tuple, n_rows: int, n_cols: int, dtype: torch.dtype, device: torch.device):
        self.arrays = arrays
        self.n_rows = n_rows
        self.n_cols = n_cols
        self.num_points = arrays[2].shape[1]
        self.nnz = int(arrays[2].shape[0])
        self.dtype = dtype
        self.device = device
        self._csr: tuple | None = None
        self._np: tuple | None = None
        self._gather: tuple | None = None

    def csr(self) -> tuple[torch.Tensor, ...]:
        """Device tensors ``(rowptr, col, val, t_rowptr, t_row, t_val)`` (indices int32)."""
        if self._csr is None:
            rowptr, col, val, t_rowptr, t_row, t_val = self.arrays
            dev = self.device
            self._csr = (
                torch.tensor(rowptr, device=dev),
                torch.tensor(col, device=dev),
                torch.tensor(val, dtype=self.dtype, device=dev),
                torch.tensor(t_rowptr, device=dev),
                torch.tensor(t_row, device=dev),
                torch.tensor(t_val, dtype=self.dtype, device=dev),
            )
        return self._csr

    def numba_arrays(self) -> tuple[np.ndarray, ...]:
        """numpy arrays in the structure's dtype; forward values zero padded to a multiple of 8 points."""
        if self._np is None:
            if self.device.type != "cpu" or self.dtype not in (torch.float32, torch.float64):
                raise ValueError(f"the numba executor needs float32/float64 CPU tensors; got {self.dtype}")
            rowptr, col, val, t_rowptr, t_row, t_val = self.arrays
            npd = np.float32 if self.dtype == torch.float32 else np.float64
            sp = -(-val.shape[1] // 8) * 8
            valp = np.zeros((val.shape[0], sp), dtype=npd)
            valp[:, : val.shape[1]] = val
            self._np = (rowptr, col, valp, t_rowptr, t_row, np.ascontiguousarray(t_val, dtype=npd))
        return self._np

    def gather_form(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Rows padded to ``P`` entries: (column index ``(R*P,)`` with ``D`` for padding, values ``(R, P, S)``)."""
        if self._gather is None:
            rowptr, col, val = self.arrays[:3]
            counts = np.diff(rowptr).astype(np.int64)
            P = max(int(counts.max()) if self.n_rows else 0, 1)
            rows = np.repeat(np.arange(self.n_rows), counts)
            pos = np.arange(self.nnz) - np.repeat(rowptr[:-1].astype(np.int64), counts)
            idx = np.full((self.n_rows, P), self.n_cols, dtype=np.int64)
            idx[rows, pos] = col
            vals = np.zeros((self.n_rows, P, self.num_points))
            vals[rows, pos] = val
            self._gather = (
                torch.tensor(idx.reshape(-1), device=self.device),
                torch.tensor(vals, dtype=self.dtype, device=self.device),
                P,
            )
        return self._gather

    def stored_bytes(self, executor: str) -> int:
        """Bytes of the form ``executor`` keeps (``"torch"``: padded rows; ``"triton"``/``"numba"``: CSR twice)."""
        item = torch.empty((), dtype=self.dtype).element_size()
        if executor == "torch":
            P = max(int(np.diff(self.arrays[0]).max()) if self.n_rows else 0, 1)
            return self.n_rows * P * (self.num_points * item + 8)
        nnz_v = self.nnz
        return 2 * nnz_v * (self.num_points * item + 4) + (self.n_rows + self.n_cols + 2) * 4


def _forward_torch(s: FillStructure, x: torch.Tensor) -> torch.Tensor:
    idx, vals, P = s.gather_form()
    F = x.shape[0]
    xt = torch.cat([x.t(), x.new_zeros((1, F))], 0)  # (D + 1, F), last row for padding
    g = xt[idx].view(s.n_rows, P, F)
    return torch.bmm(g.transpose(1, 2), vals)  # (R, F, S)


def _backward_torch(s: FillStructure, g: torch.Tensor) -> torch.Tensor:
    idx, vals, P = s.gather_form()
    F = g.shape[1]
    part = torch.bmm(vals, g.transpose(1, 2))  # (R, P, F)
    gxt = g.new_zeros((s.n_cols + 1, F))
    gxt.index_add_(0, idx, part.reshape(-1, F))
    return gxt[: s.n_cols].t()


def _forward_numba(s: FillStructure, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().contiguous()
    out = torch.empty((s.n_rows, x.shape[0], s.num_points), dtype=x.dtype)
    if out.numel():
        rowptr, col, valp = s.numba_arrays()[:3]
        _numba_kernels()["forward"](rowptr, col, valp, x.numpy(), out.numpy())
    return out


def _backward_numba(s: FillStructure, g: torch.Tensor) -> torch.Tensor:
    g = g.detach().contiguous()
    gxt = torch.empty((s.n_cols, g.shape[1]), dtype=g.dtype)
    if gxt.numel():
        t_rowptr, t_row, t_val = s.numba_arrays()[3:]
        _numba_kernels()["backward"](t_rowptr, t_row, t_val, g.numpy(), gxt.numpy())
    return gxt.t()


def _resolve(executor: str, t: torch.Tensor) -> str:
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}; got {executor!r}")
    if executor != "auto":
        return executor
    if t.device.type == "cuda":
        from ._triton import triton_available

        return "triton" if triton_available() else "torch"
    # On CPU the gather + batched-matmul formulation is as fast as the numba kernels on the benchmark layers
    # (docs/e2.md) and needs no compilation, so "auto" uses it; "numba" stays available explicitly.
    return "torch"


def _check_device(ex: str, t: torch.Tensor) -> None:
    if ex == "numba" and (t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64)):
        raise ValueError(f"the numba executor needs float32/float64 CPU tensors; got {t.dtype} on {t.device}")


def _fill_forward(s: FillStructure, x: torch.Tensor, executor: str) -> torch.Tensor:
    ex = _resolve(executor, x)
    _check_device(ex, x)
    if ex == "numba":
        return _forward_numba(s, x)
    if ex == "triton":
        from ._triton import fill_forward_triton

        return fill_forward_triton(s, x)
    return _forward_torch(s, x)


def _fill_backward(s: FillStructure, g: torch.Tensor, executor: str) -> torch.Tensor:
    ex = _resolve(executor, g)
    _check_device(ex, g)
    if ex == "numba":
        return _backward_numba(s, g)
    if ex == "triton":
        from ._triton import fill_backward_triton

        return fill_backward_triton(s, g)
    return _backward_torch(s, g)


class _Fill(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, structure: FillStructure, executor: str) -> torch.Tensor:
        ctx.structure = structure
        ctx.executor = executor
        return _fill_forward(structure, x, executor)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor):
        gx = None
        if ctx.needs_input_grad[0]:
            gx = _FillTransposed.apply(g.contiguous(), ctx.structure, ctx.executor)
        return gx, None, None


class _FillTransposed(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, g: torch.Tensor, structure: FillStructure, executor: str) -> torch.Tensor:
        ctx.structure = structure
        ctx.executor = executor
        return _fill_backward(structure, g, executor)

    @staticmethod
    def backward(ctx: Any, gg: torch.Tensor):
        out = None
        if ctx.needs_input_grad[0]:
            out = _Fill.apply(gg.contiguous(), ctx.structure, ctx.executor)
        return out, None, None


def block_fill(structure: FillStructure, x: torch.Tensor, executor: str = "auto") -> torch.Tensor:
    """Irreps-space kernels ``(R, F, S)`` from the weights ``x`` ``(F, D)`` of ``F`` field pairs, with autograd.

    Args:
        structure: the stored blocks (:class:`FillStructure`).
        x: ``(F, D)`` weights, same dtype and device as the structure.
        executor: ``"auto"`` (triton on CUDA when installed, else torch), ``"numba"``, ``"triton"`` or ``"torch"``.
    """
    if x.dim() != 2 or x.shape[1] != structure.n_cols:
        raise ValueError(f"x must have shape (F, {structure.n_cols}); got {tuple(x.shape)}")
    if x.dtype != structure.dtype or x.device != structure.device:
        raise ValueError(
            f"x must be {structure.dtype} on {structure.device} like the structure; got {x.dtype} on {x.device}"
        )
    return _Fill.apply(x.contiguous(), structure, executor)
