"""Expansion of the learnable weights of an equivariant convolution into its filter: padded and block.

A layer maps ``in_type`` to ``out_type``. Fields are grouped by representation; every pair of representations
``(R_in, R_out)`` with a non-empty :class:`PairBasis` (``D`` elements) owns a contiguous slice of the weights laid
out ``(F_out, F_in, D)`` (``F_*`` the number of fields of that representation), pairs sorted by
``(R_in.name, R_out.name)`` -- the layout of e2cnn's R2Conv, so weight vectors are interchangeable.

* **padded** (e2cnn's method): per pair one dense sampled basis ``(D, O, I, S)`` (``Q_out kappa Q_in^T``, zeros of
  the irreps blocks included) and one GEMM ``(F, D) @ (D, O*I*S)``.
* **block**: per pair only the irreps blocks are stored (``nnz = sum_e d_out d_in S`` numbers, a CSR matrix); the
  irreps-space kernel ``khat = M @ w^T`` is filled by a sparse kernel (numba on CPU, Triton on GPU), then
  ``Q_out`` and ``Q_in`` are applied by two small GEMMs (skipped when a change of basis is the identity).

Both produce the same filter (to rounding) and are differentiable to any order.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from ._basis import BasisParams, PairBasis, pair_basis
from ._fill import FillStructure, block_fill
from ._folded import FoldedPlan, folded_expand, workspace
from ._fused import FusedPlan, fused_available, fused_expand
from ._gconv import _SMALL_MACS as _GCONV_SMALL_MACS
from ._gconv import GConvPlan, gconv_expand, gconv_expand_checked, grid_orbits
from ._gspace import FieldType

__all__ = ["LayerBasis", "layer_basis", "EXPANSIONS", "EXECUTORS", "COST_MODEL"]

EXPANSIONS = ("auto", "padded", "block")
# Block-expansion executors: "gconv" (rows of the orbit representatives of the grid's symmetries + gather, CPU,
# :mod:`._gconv`), "fused" (the whole layer in one CPU kernel, :mod:`._fused`), or a block-fill kernel followed by the
# Q products ("numba", "triton", "torch" -- the pure-torch reference); "auto" picks by device and cost model.
EXECUTORS = ("auto", "gconv", "fused", "numba", "triton", "torch")

# Cost model constants (seconds per unit), fitted on the 2-core AMD EPYC of the benchmark (float32, CPU, torch 2.13,
# one thread, CPU time: ``python -m equitp.bench._e2_suite --calibrate --threads 1 --cpu-time``, then rounded).
# Only their ratios matter for ``expansion="auto"``; docs/e2.md lists the predictions next to the measurements.
COST_MODEL = {
    "gemm_mac": 3.0e-11,  # one multiply-add of the padded GEMM (forward or backward)
    "fold_mac": 5.0e-11,  # one multiply-add of the folded-block GEMMs (inner size = elements per output irrep)
    "fill_nnz": 4.0e-10,  # one stored block number times one field pair (sparse fill, forward or backward)
    "q_mac": 1.0e-10,  # one multiply-add of the Q_out / Q_in products (inner size O or I: memory bound)
    "move": 5.0e-10,  # one filter element moved by a strided copy (transpose, scatter)
    "op": 2.0e-5,  # fixed cost of one launched op
    "fused_mac": 3.0e-10,  # one multiply-add of the fused CPU kernel (fill, Q_in, Q_out in cache; short vectors)
    "gather": 1.2e-9,  # one filter entry gathered from / summed into the representative rows (gconv, numba)
    "rows_mac": 1.5e-9,  # one multiply-add of the per-call rebuild of the representative rows (gconv)
    "small_mac": 2.0e-10,  # one multiply-add of the GEMM loops of gconv's one-call path for small layers
}


class _PairPlan:
    """One representation pair of a layer: its basis, weight slice, and channel indices."""

    def __init__(self, basis: PairBasis, start: int, n_out: int, n_in: int, out_idx: np.ndarray, in_idx: np.ndarray):
        self.basis = basis
        self.start = start
        self.n_out = n_out
        self.n_in = n_in
        self.end = start + n_out * n_in * basis.dim
        self.out_idx = out_idx  # (n_out * O,) channel of each output row of the pair block
        self.in_idx = in_idx
        self.out_contiguous = bool(np.all(np.diff(out_idx) == 1))
        self.in_contiguous = bool(np.all(np.diff(in_idx) == 1))
        # Q_in folded into the stored blocks when it is dense and the folded blocks stay small (<= 1/4 of padded)
        self.folded = (not basis.in_repr.identity_change_of_basis) and 4 * int(basis.out_dim.sum()) <= (
            basis.dim * basis.out_size
        )
        self.folded_numbers = int(basis.out_dim.sum()) * basis.in_size * basis.num_points


class _DeviceTensors:
    """Per (dtype, device) tensors of a layer plan, built lazily."""

    def __init__(self):
        self.padded: list | None = None
        self.folded: list | None = None
        self.index: list | None = None
        self.bias: torch.Tensor | None = None
        self.std: torch.Tensor | None = None


_FUSED_AVAILABLE = fused_available()


def _covered(b: PairBasis) -> int:
    """Number of irreps-space entries ``(o, i)`` some block of ``b`` covers."""
    cov = np.zeros((b.out_size, b.in_size), dtype=bool)
    for e in range(b.dim):
        cov[b.out_offset[e]:b.out_offset[e] + b.out_dim[e], b.in_offset[e]:b.in_offset[e] + b.in_dim[e]] = True
    return int(cov.sum())


def _nonzeros_per_row(rep) -> float:
    q = np.asarray(rep.change_of_basis)
    return float((np.abs(q) > 0).sum()) / q.shape[0]

_STRUCT_CACHE: dict[tuple, Any] = {}
_STRUCT_LOCK = threading.Lock()


def _shared(key: tuple, build):
    """Tensors derived from a :class:`PairBasis`, shared by all layers that use it (per dtype / device)."""
    value = _STRUCT_CACHE.get(key)
    if value is None:
        with _STRUCT_LOCK:
            value = _STRUCT_CACHE.get(key)
            if value is None:
                value = build()
                _STRUCT_CACHE[key] = value
    return value


class LayerBasis:
    """The kernel basis of a layer ``in_type -> out_type`` and the two ways of expanding weights into filters.

    Args:
        in_type, out_type: field types of one space.
        params: sampling parameters (:func:`basis_params`).

    Attributes:
        dim: number of weights.
        pairs: the representation pairs with a non-empty basis, in weight order.
    """

    def __init__(self, in_type: FieldType, out_type: FieldType, params: BasisParams):
        if not isinstance(in_type, FieldType):
            raise TypeError(f"in_type must be a FieldType; got {type(in_type).__name__}")
        if not isinstance(out_type, FieldType):
            raise TypeError(f"out_type must be a FieldType; got {type(out_type).__name__}")
        if in_type.gspace != out_type.gspace:
            raise ValueError(
                f"in_type and out_type must belong to the same space; got {in_type.gspace} and {out_type.gspace}"
            )
        self.in_type = in_type
        self.out_type = out_type
        self.params = params
        self.kernel_size = params.kernel_size
        S = params.num_points

        def fields(ft: FieldType) -> dict[str, tuple]:
            by_name: dict[str, list] = defaultdict(list)
            rep_of: dict[str, Any] = {}
            for f, (start, r) in enumerate(zip(ft.field_starts, ft.representations)):
                if r.name in rep_of and rep_of[r.name] != r:
                    raise ValueError(f"two different representations named {r.name!r} in one field type")
                rep_of[r.name] = r
                by_name[r.name].append(start)
            return {n: (rep_of[n], starts) for n, (starts) in by_name.items()}

        ins = fields(in_type)
        outs = fields(out_type)
        self.pairs: list[_PairPlan] = []
        start = 0
        for in_name, out_name in sorted((a, b) for a in ins for b in outs):
            r_in, in_starts = ins[in_name]
            r_out, out_starts = outs[out_name]
            basis = pair_basis(r_in, r_out, params)
            if basis.dim == 0:
                continue
            out_idx = (np.array(out_starts)[:, None] + np.arange(r_out.size)[None, :]).reshape(-1)
            in_idx = (np.array(in_starts)[:, None] + np.arange(r_in.size)[None, :]).reshape(-1)
            plan = _PairPlan(basis, start, len(out_starts), len(in_starts), out_idx, in_idx)
            self.pairs.append(plan)
            start = plan.end
        self.dim = start
        if self.dim == 0:
            raise ValueError(
                f"the kernel basis from {in_type} to {out_type} is empty for {params}: increase kernel_size, "
                "rings, sigma or frequencies_cutoff"
            )
        self.num_points = S
        self.single = (
            len(self.pairs) == 1
            and self.pairs[0].n_out * self.pairs[0].basis.out_size == out_type.size
            and self.pairs[0].n_in * self.pairs[0].basis.in_size == in_type.size
            and self.pairs[0].out_contiguous
            and self.pairs[0].in_contiguous
        )
        self._bias_np = self._bias_expansion()
        self._device: dict[tuple, _DeviceTensors] = {}
        self._fused_plans: dict[torch.dtype, FusedPlan] = {}  # CPU plans of the fused block kernel, per dtype
        self._filter_shape = (out_type.size, in_type.size, self.kernel_size, self.kernel_size)
        self._gconv_plans: dict[torch.dtype, GConvPlan] = {}  # CPU plans of the gconv block kernel, per dtype
        self._auto_cpu: str | None = None  # block executor of "auto" on CPU, chosen on first use
        self._auto_plans: dict[torch.dtype, tuple] = {}  # (plan, is gconv) of auto's CPU kernel, per dtype
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ descriptive
    def __reduce__(self):
        return (layer_basis, (self.in_type, self.out_type, self.params))

    def __deepcopy__(self, memo: dict) -> "LayerBasis":
        return self  # immutable and shared

    def __repr__(self) -> str:
        return (
            f"LayerBasis({self.in_type} -> {self.out_type}, kernel_size={self.kernel_size}, dim={self.dim}, "
            f"pairs={len(self.pairs)})"
        )

    @property
    def num_bias(self) -> int:
        return self._bias_np.shape[1]

    def _bias_expansion(self) -> np.ndarray:
        """``(C_out, T)``: the columns of each output field's ``Q`` that carry a trivial irrep."""
        cols = []
        for start, r in zip(self.out_type.field_starts, self.out_type.representations):
            p = 0
            for ir in r.irreps:
                if ir.is_trivial():
                    c = np.zeros(self.out_type.size)
                    c[start:start + r.size] = r.change_of_basis[:, p]
                    cols.append(c)
                p += ir.size
        if not cols:
            return np.zeros((self.out_type.size, 0))
        return np.stack(cols, 1)

    def he_init_std(self) -> np.ndarray:
        """Per-weight standard deviations of e2cnn's generalised He initialisation, ``(dim,)`` float64.

        For a weight of element ``e`` into output irrep position ``o``: ``1 / sqrt(n_types(o) * n(e.in_irrep, o))``
        with ``n_types(o)`` the number of distinct input irreps feeding ``o`` and ``n(psi, o)`` the number of
        basis elements (over all input fields) from irrep ``psi`` into ``o``.
        """
        counts: dict[tuple, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for p in self.pairs:
            b = p.basis
            for oo, name in zip(b.out_position, b.in_irrep_names):
                counts[(b.out_repr.name, int(oo))][name] += p.n_in
        std = np.empty(self.dim)
        for p in self.pairs:
            b = p.basis
            per = np.array(
                [
                    1.0 / math.sqrt(len(counts[(b.out_repr.name, int(oo))]) * counts[(b.out_repr.name, int(oo))][name])
                    for oo, name in zip(b.out_position, b.in_irrep_names)
                ]
            )
            std[p.start:p.end] = np.broadcast_to(per, (p.n_out, p.n_in, b.dim)).reshape(-1)
        return std

    def he_init_std_tensor(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """:meth:`he_init_std` as a cached tensor."""
        t = self._tensors(dtype, device)
        if t.std is None:
            t.std = torch.tensor(self.he_init_std(), dtype=dtype, device=device)
        return t.std

    def padding_ratio(self) -> float:
        """Dense basis size over stored block size, summed over pairs (``sum D O I S / sum nnz``)."""
        dense = sum(p.basis.dim * p.basis.out_size * p.basis.in_size * self.num_points for p in self.pairs)
        nnz = sum(p.basis.nnz for p in self.pairs)
        return dense / nnz

    def block_executor(self, device: torch.device | str = "cpu") -> str:
        """The block executor ``executor="auto"`` runs on ``device``.

        On CPU (numba installed) the one the cost model predicts fastest for forward + backward among ``"gconv"``
        (representative rows + gather), ``"fused"`` (only for layers without folded pairs) and ``"folded"`` (the
        :mod:`._folded` GEMMs for folded pairs, the fill for the others); elsewhere ``"folded"``.
        """
        if torch.device(device).type != "cpu" or not _FUSED_AVAILABLE:
            return "folded"
        if self._auto_cpu is None:
            candidates = ["gconv", "folded"] + ([] if any(p.folded for p in self.pairs) else ["fused"])
            self._auto_cpu = min(candidates, key=lambda e: self.predicted_seconds("block", executor=e))
        return self._auto_cpu

    def stored_bytes(self, expansion: str, dtype: torch.dtype = torch.float32, executor: str = "auto") -> int:
        """Bytes of basis data one expansion keeps per dtype and device (values, indices, changes of basis).

        ``"padded"``: the dense bases ``(D, O, I, S)``. ``"block"``: what ``executor`` keeps (``"auto"``: the executor
        :meth:`block_executor` picks on CPU): ``"fused"``: the packed plan of :mod:`._fused` (distinct irreps-block
        rows, element table, covered entries, distinct changes of basis); ``"gconv"``: the same irreps blocks and
        element table, ``Q_out`` at the representative rows, ``Q_in`` and the orbit tables (the representative rows
        themselves are rebuilt at each call and live only until the backward); ``"folded"``: per pair either the
        folded blocks (``sum_e d_out I S`` numbers) and ``Q_out``, or the CSR blocks and ``Q_out``/``Q_in``; a fill
        executor (``"torch"``: rows padded to the longest row; ``"triton"``/``"numba"``: CSR by rows and by
        elements) and ``Q_out``/``Q_in``. The float64 master copy of the blocks shared by all dtypes is not counted
        (nor the padded basis's).
        """
        item = torch.empty((), dtype=dtype).element_size()
        if expansion == "block" and executor == "auto":
            executor = self.block_executor("cpu")
        if expansion == "block" and executor == "fused":
            return self._fused_plan(dtype).stored_bytes
        if expansion == "block" and executor == "gconv":
            return self._gconv_plan(dtype).stored_bytes
        total = 0
        seen = set()
        for p in self.pairs:
            b = p.basis
            if b in seen:
                continue
            seen.add(b)
            if expansion == "padded":
                total += b.dim * b.out_size * b.in_size * self.num_points * item
            elif expansion == "block":
                if p.folded and executor == "folded":
                    total += p.folded_numbers * item + b.dim * 8
                else:
                    fs = FillStructure(b.fill_arrays(), b.out_size * b.in_size, b.dim, dtype, torch.device("cpu"))
                    total += fs.stored_bytes("torch" if executor == "folded" else executor)
                    if not b.in_repr.identity_change_of_basis:
                        total += b.in_size ** 2 * item
                if not b.out_repr.identity_change_of_basis:
                    total += b.out_size ** 2 * item
            else:
                raise ValueError(f"expansion must be 'padded' or 'block'; got {expansion!r}")
        return total

    def flops(self, expansion: str) -> int:
        """Floating-point operations of one forward expansion (multiply-adds count 2)."""
        S = self.num_points
        total = 0
        for p in self.pairs:
            b = p.basis
            F = p.n_out * p.n_in
            if expansion == "padded":
                total += 2 * F * b.dim * b.out_size * b.in_size * S
            elif expansion == "block" and p.folded:
                total += 2 * F * p.folded_numbers
                if not b.out_repr.identity_change_of_basis:
                    total += 2 * F * b.out_size * b.in_size * S * b.out_size
            elif expansion == "block":
                total += 2 * F * b.nnz
                elems = F * b.out_size * b.in_size * S
                if not b.out_repr.identity_change_of_basis:
                    total += 2 * elems * b.out_size
                if not b.in_repr.identity_change_of_basis:
                    total += 2 * elems * b.in_size
            else:
                raise ValueError(f"expansion must be 'padded' or 'block'; got {expansion!r}")
        return total

    def _gconv_counts(self) -> tuple[int, int, int]:
        """gconv's work per pass: GEMM multiply-adds ``sum F D R I S``, filter entries ``sum F O I S`` and the
        multiply-adds of the per-call rebuild of the representative rows."""
        S = self.num_points
        macs = entries = rows = 0
        for p in self.pairs:
            b = p.basis
            R = len(grid_orbits(b)[0])
            F = p.n_out * p.n_in
            macs += F * b.dim * R * b.in_size * S
            entries += F * b.out_size * b.in_size * S
            per = int((b.out_dim * b.in_dim).sum())
            if not b.in_repr.identity_change_of_basis:
                per += int(b.in_dim.sum()) * b.in_size
            rows += R * S * per
        return macs, entries, rows

    def predicted_seconds(self, expansion: str, backward: bool = True, executor: str = "auto") -> float:
        """Cost-model time of one expansion (forward, plus backward if ``backward``), see :data:`COST_MODEL`.

        ``executor`` (block expansion): ``"auto"`` (what ``executor="auto"`` runs on CPU), ``"gconv"``, ``"fused"``
        or ``"folded"``.
        """
        c = COST_MODEL
        S = self.num_points
        t = 0.0
        passes = 2.0 if backward else 1.0
        if expansion == "block" and executor == "auto":
            executor = self.block_executor("cpu")
        if expansion == "block" and executor == "gconv":
            macs, entries, rows = self._gconv_counts()
            if macs < _GCONV_SMALL_MACS:  # one autograd node and one kernel call per pass (~2.5 small ops)
                return passes * (c["small_mac"] * macs + c["gather"] * entries + 2.5 * c["op"]) + c["rows_mac"] * rows
            ops = 3 + len(self.pairs)  # autograd node, rows / gather kernels, one GEMM per pair
            return passes * (c["gemm_mac"] * macs + c["gather"] * entries + ops * c["op"]) + c["rows_mac"] * rows
        if expansion == "block" and executor == "fused":
            # one kernel call per pass (fixed cost measured as ~5 small torch ops): fill + Q_in (covered entries,
            # non-zeros of Q_in) + Q_out (non-zeros) per pair
            for p in self.pairs:
                b = p.basis
                F = p.n_out * p.n_in
                elems = F * b.out_size * b.in_size * S
                work = b.nnz
                if not b.in_repr.identity_change_of_basis:
                    work += _covered(b) * S * _nonzeros_per_row(b.in_repr)
                if not b.out_repr.identity_change_of_basis:
                    work += b.out_size * b.in_size * S * _nonzeros_per_row(b.out_repr)
                t += passes * (c["fused_mac"] * F * work + c["move"] * elems)
            return t + passes * 5 * c["op"]  # autograd node, allocation, kernel call: ~5 small ops
        if expansion == "block" and executor not in ("folded", "auto"):
            raise ValueError(f"executor must be 'auto', 'gconv', 'fused' or 'folded'; got {executor!r}")
        for p in self.pairs:
            b = p.basis
            F = p.n_out * p.n_in
            elems = F * b.out_size * b.in_size * S
            if expansion == "padded":
                t += passes * (c["gemm_mac"] * F * b.dim * b.out_size * b.in_size * S + c["move"] * elems)
                t += passes * 3 * c["op"]
            elif expansion == "block" and p.folded:
                n_groups = len(set(b.out_offset.tolist()))
                t += passes * (c["fold_mac"] * F * p.folded_numbers + c["move"] * elems)
                if not b.out_repr.identity_change_of_basis:
                    t += passes * c["q_mac"] * elems * b.out_size
                t += passes * (2 * n_groups + 3) * c["op"]
            elif expansion == "block":
                nq = 0
                q = 0
                if not b.out_repr.identity_change_of_basis:
                    q += b.out_size
                    nq += 1
                if not b.in_repr.identity_change_of_basis:
                    q += b.in_size
                    nq += 1
                t += passes * (c["fill_nnz"] * F * b.nnz + c["q_mac"] * elems * q + 2 * c["move"] * elems)
                t += passes * (4 + nq) * c["op"]
            else:
                raise ValueError(f"expansion must be 'padded' or 'block'; got {expansion!r}")
        if not self.single:
            t += passes * c["move"] * self.out_type.size * self.in_type.size * S
        return t

    def choose_expansion(self) -> str:
        """``"block"`` or ``"padded"``, whichever the cost model predicts faster for forward + backward."""
        return "block" if self.predicted_seconds("block") < self.predicted_seconds("padded") else "padded"

    # ------------------------------------------------------------------ tensors
    def _tensors(self, dtype: torch.dtype, device: torch.device) -> _DeviceTensors:
        key = (dtype, device)
        t = self._device.get(key)
        if t is None:
            with self._lock:
                t = self._device.get(key)
                if t is None:
                    t = _DeviceTensors()
                    self._device[key] = t
        return t

    def _padded_tensors(self, dtype: torch.dtype, device: torch.device) -> list:
        t = self._tensors(dtype, device)
        if t.padded is None:
            t.padded = [
                _shared(
                    ("padded", p.basis, dtype, device),
                    lambda b=p.basis: torch.tensor(b.dense(), dtype=dtype, device=device).reshape(b.dim, -1),
                )
                for p in self.pairs
            ]
        return t.padded

    def _block_tensors(self, dtype: torch.dtype, device: torch.device, skip: list | None = None) -> list:
        """Per pair ``(FillStructure, Q_out or None, Q_in or None)``; ``None`` for the pairs flagged in ``skip``."""
        out = []
        for i, p in enumerate(self.pairs):
            if skip is not None and skip[i]:
                out.append(None)
                continue
            b = p.basis

            def build(b=b):
                s = FillStructure(b.fill_arrays(), b.out_size * b.in_size, b.dim, dtype, device)
                qo = None
                qi = None
                if not b.out_repr.identity_change_of_basis:
                    qo = torch.tensor(b.out_repr.change_of_basis, dtype=dtype, device=device)
                if not b.in_repr.identity_change_of_basis:
                    qi = torch.tensor(b.in_repr.change_of_basis, dtype=dtype, device=device)
                return s, qo, qi

            out.append(_shared(("block", b, dtype, device), build))
        return out

    def _folded_tensors(self, dtype: torch.dtype, device: torch.device) -> list:
        t = self._tensors(dtype, device)
        if t.folded is None:
            t.folded = [
                _shared(("folded", p.basis, dtype, device), lambda b=p.basis: FoldedPlan(b, dtype, device))
                if p.folded else None
                for p in self.pairs
            ]
        return t.folded

    def _gconv_plan(self, dtype: torch.dtype) -> GConvPlan:
        plan = self._gconv_plans.get(dtype)
        if plan is None:
            with self._lock:
                plan = self._gconv_plans.get(dtype)
                if plan is None:
                    plan = self._gconv_plans[dtype] = GConvPlan(self, dtype)
        return plan

    def _fused_plan(self, dtype: torch.dtype) -> FusedPlan:
        plan = self._fused_plans.get(dtype)
        if plan is None:
            with self._lock:
                plan = self._fused_plans.get(dtype)
                if plan is None:
                    plan = self._fused_plans[dtype] = FusedPlan(self, dtype)
        return plan

    def _index_tensors(self, device: torch.device) -> list:
        t = self._tensors(torch.int64, device)
        if t.index is None:
            t.index = [
                (
                    torch.as_tensor(p.out_idx, device=device).view(-1, 1),
                    torch.as_tensor(p.in_idx, device=device).view(1, -1),
                )
                for p in self.pairs
            ]
        return t.index

    def bias_expansion(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """``(C_out, T)`` matrix mapping the ``T`` bias parameters (one per trivial irrep) to channels."""
        t = self._tensors(dtype, device)
        if t.bias is None:
            t.bias = torch.as_tensor(self._bias_np, dtype=dtype, device=device)
        return t.bias

    # ------------------------------------------------------------------ expansion
    def _check_weights(self, weights: torch.Tensor) -> None:
        if not isinstance(weights, torch.Tensor):
            raise TypeError(f"weights must be a torch.Tensor; got {type(weights).__name__}")
        if weights.dim() != 1 or weights.shape[0] != self.dim:
            raise ValueError(f"weights must have shape ({self.dim},); got {tuple(weights.shape)}")
        if not weights.is_floating_point():
            raise TypeError(f"weights must be a floating-point tensor; got {weights.dtype}")

    def _assemble(self, blocks: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
        """Place per-pair ``(F_o*O, F_i*I, S)`` blocks into the ``(C_out, C_in, S)`` filter."""
        S = self.num_points
        if self.single:
            return blocks[0]
        filt = weights.new_zeros((self.out_type.size, self.in_type.size, S))
        index = self._index_tensors(weights.device)
        for p, blk, (oi, ii) in zip(self.pairs, blocks, index):
            if p.out_contiguous and p.in_contiguous:
                o0, i0 = int(p.out_idx[0]), int(p.in_idx[0])
                filt[o0:o0 + len(p.out_idx), i0:i0 + len(p.in_idx)] = blk
            else:
                filt[oi, ii] = blk
        return filt

    def expand_padded(self, weights: torch.Tensor) -> torch.Tensor:
        """Filter ``(C_out, C_in, k, k)`` by the padded expansion (one GEMM per representation pair)."""
        self._check_weights(weights)
        dense = self._padded_tensors(weights.dtype, weights.device)
        blocks = []
        for p, B in zip(self.pairs, dense):
            b = p.basis
            w = weights[p.start:p.end].view(p.n_out * p.n_in, b.dim)
            reuse = not (torch.is_grad_enabled() and w.requires_grad)
            if reuse:  # the GEMM result is not kept by autograd: reuse a buffer
                k = torch.mm(w, B, out=workspace("padded-k", w.shape[0] * B.shape[1], w).view(w.shape[0], -1))
            else:
                k = torch.mm(w, B)
            k = k.view(p.n_out, p.n_in, b.out_size, b.in_size, self.num_points)
            blk = k.transpose(1, 2).reshape(p.n_out * b.out_size, p.n_in * b.in_size, self.num_points)
            if reuse and blk.data_ptr() == k.data_ptr():
                blk = blk.clone()  # a view of the buffer (one field on a side): copy before the buffer is reused
            blocks.append(blk)
        return self._assemble(blocks, weights).view(
            self.out_type.size, self.in_type.size, self.kernel_size, self.kernel_size
        )

    def expand_block(self, weights: torch.Tensor, executor: str = "auto") -> torch.Tensor:
        """Filter ``(C_out, C_in, k, k)`` by the block expansion.

        Only the irreps blocks are stored; they are filled with the weights, then ``Q_out`` and ``Q_in`` are applied.
        Executors:

        * ``"gconv"`` (CPU, float32/float64): per representation pair only the filter rows of the orbit
          representatives of the grid's symmetries (quarter turns, reflections) are computed, by one GEMM with rows
          rebuilt from the irreps blocks at each call; the other rows are gathered from them (:mod:`._gconv`).
        * ``"fused"`` (CPU, float32/float64): the whole layer in one numba kernel call
          (:mod:`._fused`): per field pair fill, ``Q_in`` and ``Q_out`` in a cache-resident buffer, written straight
          into the filter; its backward is the transposed kernel.
        * ``"numba"``, ``"triton"``, ``"torch"``: per representation pair the sparse block fill of :mod:`._fill`
          (``"torch"``: the pure-torch reference, gather + batched matmul) followed by two small GEMMs for
          ``Q_out`` / ``Q_in`` (skipped for identity changes of basis).
        * ``"auto"``: on CPU the executor the cost model predicts fastest (:meth:`block_executor`): ``"gconv"``,
          ``"fused"`` or the following; otherwise (and on CUDA) pairs with a dense ``Q_in`` whose folded blocks stay
          small apply ``Q_in`` to the ``D`` stored blocks (:mod:`._folded`: torch GEMMs), the others take the fill
          (Triton on CUDA when installed).

        Args:
            weights: ``(dim,)``.
            executor: one of :data:`EXECUTORS`.
        """
        if executor == "auto" and type(weights) is torch.Tensor and weights.is_cpu:
            fast = self._auto_plans.get(weights.dtype)  # fast path: the plan of auto's CPU kernel is built
            if fast is not None and weights.dim() == 1 and weights.shape[0] == self.dim:
                if fast[1]:  # the plans are per dtype and the device is checked: skip gconv_expand's checks
                    return gconv_expand_checked(fast[0], weights)
                return fused_expand(fast[0], weights).view(self._filter_shape)
        self._check_weights(weights)
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}; got {executor!r}")
        if executor == "auto" and self._fused_ok(weights):
            chosen = self.block_executor("cpu")
            if chosen in ("fused", "gconv"):
                plan = self._gconv_plan(weights.dtype) if chosen == "gconv" else self._fused_plan(weights.dtype)
                self._auto_plans[weights.dtype] = (plan, chosen == "gconv")
                executor = chosen
        if executor == "gconv":
            if weights.device.type != "cpu" or weights.dtype not in (torch.float32, torch.float64):
                raise ValueError(
                    f"the gconv executor needs float32/float64 CPU weights; got {weights.dtype} on {weights.device}"
                )
            return gconv_expand(self._gconv_plan(weights.dtype), weights)
        if executor == "fused":
            if weights.device.type != "cpu" or weights.dtype not in (torch.float32, torch.float64):
                raise ValueError(
                    f"the fused executor needs float32/float64 CPU weights; got {weights.dtype} on {weights.device}"
                )
            return fused_expand(self._fused_plan(weights.dtype), weights).view(self._filter_shape)
        folded = self._folded_tensors(weights.dtype, weights.device) if executor == "auto" else [None] * len(
            self.pairs
        )
        tensors = self._block_tensors(weights.dtype, weights.device, [fp is not None for fp in folded])
        S = self.num_points
        blocks = []
        for p, tens, fp in zip(self.pairs, tensors, folded):
            b = p.basis
            O, I = b.out_size, b.in_size
            F = p.n_out * p.n_in
            w = weights[p.start:p.end].view(F, b.dim)
            if fp is not None:
                blocks.append(folded_expand(fp, w, p.n_out, p.n_in))
                continue
            struct, qo, qi = tens
            khat = block_fill(struct, w, executor)  # (O*I, F, S): rows (o, i), columns (f_out, f_in)
            if qo is not None:
                khat = torch.mm(qo, khat.view(O, I * F * S))
            if qi is not None:
                khat = torch.matmul(qi, khat.view(O, I, F * S))
            k = khat.view(O, I, p.n_out, p.n_in, S).permute(2, 0, 3, 1, 4)
            blocks.append(k.reshape(p.n_out * O, p.n_in * I, S))
        return self._assemble(blocks, weights).view(
            self.out_type.size, self.in_type.size, self.kernel_size, self.kernel_size
        )

    @staticmethod
    def _fused_ok(weights: torch.Tensor) -> bool:
        return weights.device.type == "cpu" and weights.dtype in (torch.float32, torch.float64) and _FUSED_AVAILABLE

    def expand(self, weights: torch.Tensor, expansion: str = "padded", executor: str = "auto") -> torch.Tensor:
        """Filter ``(C_out, C_in, k, k)`` from ``weights`` (``(dim,)``) by ``expansion`` ``"padded"``/``"block"``."""
        if expansion == "padded":
            return self.expand_padded(weights)
        if expansion == "block":
            return self.expand_block(weights, executor)
        raise ValueError(f"expansion must be 'padded' or 'block'; got {expansion!r}")


_LAYER_CACHE: dict[tuple, LayerBasis] = {}
_LAYER_LOCK = threading.Lock()


def layer_basis(in_type: FieldType, out_type: FieldType, params: BasisParams) -> LayerBasis:
    """Cached :class:`LayerBasis`: identical layers of a network share one object (and its device tensors)."""
    key = (in_type, out_type, params)
    lb = _LAYER_CACHE.get(key)
    if lb is None:
        with _LAYER_LOCK:
            lb = _LAYER_CACHE.get(key)
            if lb is None:
                lb = LayerBasis(in_type, out_type, params)
                _LAYER_CACHE[key] = lb
    return lb
