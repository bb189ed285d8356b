"""The Clebsch–Gordan tensor product as data.

A `TensorProductDescriptor` describes the 4-linear form

    S(W, x, y, z) = sum_paths  c_p  sum_{(i, j, k)}  C^{l1 l2 l3}_{ijk}  sum_{channels}  W_p[...] x[u, i] y[v, j] z[w, k]

over the weights ``W``, the two inputs ``x`` (``irreps_in1``), ``y`` (``irreps_in2``) and an output-shaped operand ``z``
(``irreps_out``). The tensor product is the gradient of ``S`` with respect to ``z``; the gradients with respect to
``x``, ``y`` and ``W`` (the backward pass) are the same form with the operands' roles permuted, so every executor only
has to evaluate "the gradient of ``S`` with respect to operand ``t`` given the three others" (see ``equitp.ops``).

The descriptor is immutable and hashable, holds the sparse Clebsch–Gordan coefficients (non-zeros only, normalisation
folded in), and counts FLOPs and bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Optional, Sequence, Tuple

import numpy as np

from ..irreps import Irreps, as_irreps

__all__ = ["TensorProductDescriptor", "Path", "OPERANDS", "MODES"]

#: the four operands of the form, in order
OPERANDS = ("weight", "in1", "in2", "out")
#: connection modes: which channel index each of (in1, in2, out) carries
MODES = ("uvw", "uvu", "uvv", "uuw", "uuu", "uvuv")


@dataclass(frozen=True)
class Path:
    """One instruction of the tensor product.

    Attributes:
        i_in1, i_in2, i_out: block indices in ``irreps_in1``, ``irreps_in2``, ``irreps_out``.
        mode: connection mode (``uvw``, ``uvu``, ``uvv``, ``uuw``, ``uuu``).
        has_weight: whether the path has learnable weights.
        path_weight: the user's path weight (before normalisation).
        coefficient: the normalisation factor applied to the path (e3nn's ``sqrt(alpha)``, path weight included).
        weight_offset: offset of the path's weights in the flat weight vector (``-1`` without weights).
        weight_shape: shape of the path's weights (e3nn's ``path_shape``).
    """

    i_in1: int
    i_in2: int
    i_out: int
    mode: str
    has_weight: bool
    path_weight: float
    coefficient: float
    weight_offset: int
    weight_shape: Tuple[int, ...]

    @property
    def weight_numel(self) -> int:
        return math.prod(self.weight_shape) if self.has_weight else 0


def _weight_shape(mode: str, m1: int, m2: int, mo: int) -> Tuple[int, ...]:
    return {"uvw": (m1, m2, mo), "uvu": (m1, m2), "uvv": (m1, m2), "uuw": (m1, mo), "uuu": (m1,), "uvuv": (m1, m2)}[mode]


def _num_elements(mode: str, m1: int, m2: int) -> int:
    return {"uvw": m1 * m2, "uvu": m2, "uvv": m1, "uuw": m1, "uuu": 1, "uvuv": 1}[mode]


class TensorProductDescriptor:
    """A sparse Clebsch–Gordan tensor product, as data.

    Args:
        irreps_in1, irreps_in2, irreps_out: the operands' irreps (strings, `Irreps` or e3nn objects).
        instructions: e3nn instruction tuples ``(i_in1, i_in2, i_out, mode, has_weight[, path_weight])``.
        in1_var, in2_var, out_var: per-block variances (e3nn's meaning); default 1.
        irrep_normalization: ``"component"`` (default), ``"norm"`` or ``"none"``.
        path_normalization: ``"element"`` (default), ``"path"`` or ``"none"``.
        layout: ``"mul_ir"`` (each block stored ``[mul, 2l+1]``, e3nn's) or ``"ir_mul"`` (``[2l+1, mul]``).

    The normalisation is e3nn 0.6's, so the same weights give the same output as ``e3nn.o3.TensorProduct``.
    """

    def __init__(
        self,
        irreps_in1,
        irreps_in2,
        irreps_out,
        instructions: Sequence[tuple],
        in1_var: Optional[Sequence[float]] = None,
        in2_var: Optional[Sequence[float]] = None,
        out_var: Optional[Sequence[float]] = None,
        irrep_normalization: Optional[str] = None,
        path_normalization: Optional[str] = None,
        layout: str = "mul_ir",
    ):
        self.irreps_in1 = as_irreps(irreps_in1, "irreps_in1")
        self.irreps_in2 = as_irreps(irreps_in2, "irreps_in2")
        self.irreps_out = as_irreps(irreps_out, "irreps_out")
        if irrep_normalization is None:
            irrep_normalization = "component"
        if path_normalization is None:
            path_normalization = "element"
        if irrep_normalization not in ("component", "norm", "none"):
            raise ValueError(
                f"irrep_normalization: expected 'component', 'norm' or 'none', got {irrep_normalization!r}"
            )
        if path_normalization not in ("element", "path", "none"):
            raise ValueError(f"path_normalization: expected 'element', 'path' or 'none', got {path_normalization!r}")
        if layout not in ("mul_ir", "ir_mul"):
            raise ValueError(f"layout: expected 'mul_ir' or 'ir_mul', got {layout!r}")
        self.irrep_normalization = irrep_normalization
        self.path_normalization = path_normalization
        self.layout = layout

        in1_var = self._variances(in1_var, self.irreps_in1, "in1_var")
        in2_var = self._variances(in2_var, self.irreps_in2, "in2_var")
        out_var = self._variances(out_var, self.irreps_out, "out_var")

        raw = [self._check_instruction(n, ins) for n, ins in enumerate(instructions)]

        paths = []
        offset = 0
        for i1, i2, io, mode, has_weight, path_weight in raw:
            (m1, ir1), (m2, ir2), (mo, iro) = self.irreps_in1[i1], self.irreps_in2[i2], self.irreps_out[io]
            alpha = {"component": iro.dim, "norm": ir1.dim * ir2.dim, "none": 1}[irrep_normalization]
            if path_normalization == "element":
                x = sum(
                    in1_var[r[0]] * in2_var[r[1]] * _num_elements(r[3], self.irreps_in1[r[0]].mul, self.irreps_in2[r[1]].mul)
                    for r in raw
                    if r[2] == io
                )
            elif path_normalization == "path":
                x = in1_var[i1] * in2_var[i2] * _num_elements(mode, m1, m2)
                x *= sum(1 for r in raw if r[2] == io)
            else:
                x = 1.0
            if x > 0:
                alpha /= x
            alpha *= out_var[io]
            alpha *= path_weight
            shape = _weight_shape(mode, m1, m2, mo)
            paths.append(
                Path(i1, i2, io, mode, has_weight, path_weight, math.sqrt(alpha), offset if has_weight else -1, shape)
            )
            if has_weight:
                offset += math.prod(shape)
        self.paths: Tuple[Path, ...] = tuple(paths)
        self.weight_numel: int = offset
        self._key = (
            tuple(self.irreps_in1),
            tuple(self.irreps_in2),
            tuple(self.irreps_out),
            tuple((p.i_in1, p.i_in2, p.i_out, p.mode, p.has_weight, p.coefficient) for p in self.paths),
            layout,
        )

    # -- construction helpers ------------------------------------------------------------------------------------------
    @staticmethod
    def _variances(var, irreps, name):
        if var is None:
            return [1.0] * len(irreps)
        var = [float(v) for v in var]
        if len(var) != len(irreps):
            raise ValueError(f"{name}: expected {len(irreps)} variances (one per block of irreps), got {len(var)}")
        return var

    def _check_instruction(self, n, ins):
        if not isinstance(ins, (tuple, list)) or len(ins) not in (5, 6):
            raise ValueError(
                f"instructions[{n}]: expected (i_in1, i_in2, i_out, mode, has_weight[, path_weight]), got {ins!r}"
            )
        i1, i2, io, mode, has_weight = ins[:5]
        path_weight = float(ins[5]) if len(ins) == 6 else 1.0
        for name, i, irreps in (("i_in1", i1, self.irreps_in1), ("i_in2", i2, self.irreps_in2), ("i_out", io, self.irreps_out)):
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
                raise TypeError(f"instructions[{n}]: {name} must be an int, got {i!r}")
            if not 0 <= i < len(irreps):
                raise ValueError(
                    f"instructions[{n}]: {name}={i} is out of range for irreps with {len(irreps)} blocks ({irreps})"
                )
        i1, i2, io = int(i1), int(i2), int(io)
        if mode not in MODES:
            raise ValueError(f"instructions[{n}]: mode must be one of {sorted(MODES)}, got {mode!r}")
        if not isinstance(has_weight, (bool, np.bool_)):
            raise TypeError(f"instructions[{n}]: has_weight must be a bool, got {has_weight!r}")
        (m1, ir1), (m2, ir2), (mo, iro) = self.irreps_in1[i1], self.irreps_in2[i2], self.irreps_out[io]
        if not abs(ir1.l - ir2.l) <= iro.l <= ir1.l + ir2.l:
            raise ValueError(
                f"instructions[{n}]: {ir1} x {ir2} -> {iro} violates the triangle rule |l1-l2| <= l3 <= l1+l2 "
                f"(expected l3 in [{abs(ir1.l - ir2.l)}, {ir1.l + ir2.l}], got {iro.l})"
            )
        if ir1.p * ir2.p != iro.p:
            raise ValueError(
                f"instructions[{n}]: {ir1} x {ir2} -> {iro} violates parity (expected p = {ir1.p * ir2.p}, got {iro.p})"
            )
        if mode == "uvu" and m1 != mo:
            raise ValueError(f"instructions[{n}]: mode 'uvu' needs mul_out == mul_in1, got mul_in1={m1}, mul_out={mo}")
        if mode == "uvv" and m2 != mo:
            raise ValueError(f"instructions[{n}]: mode 'uvv' needs mul_out == mul_in2, got mul_in2={m2}, mul_out={mo}")
        if mode in ("uuw", "uuu") and m1 != m2:
            raise ValueError(f"instructions[{n}]: mode {mode!r} needs mul_in1 == mul_in2, got {m1} and {m2}")
        if mode == "uuu" and m1 != mo:
            raise ValueError(f"instructions[{n}]: mode 'uuu' needs mul_out == mul_in1, got mul_in1={m1}, mul_out={mo}")
        if mode == "uvuv" and m1 * m2 != mo:
            raise ValueError(
                f"instructions[{n}]: mode 'uvuv' needs mul_out == mul_in1 * mul_in2, got {m1} * {m2} != {mo}"
            )
        if mode == "uuw" and not has_weight and mo != 1:
            raise ValueError(f"instructions[{n}]: mode 'uuw' without weights needs mul_out == 1, got {mo}")
        if mode == "uvw" and not has_weight:
            raise ValueError(f"instructions[{n}]: mode 'uvw' requires has_weight=True")
        return i1, i2, io, mode, bool(has_weight), path_weight

    # -- identity ------------------------------------------------------------------------------------------------------
    def __eq__(self, other):
        return isinstance(other, TensorProductDescriptor) and self._key == other._key

    def __hash__(self):
        return hash(self._key)

    def __repr__(self):
        lines = [
            f"TensorProductDescriptor({self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out}, "
            f"{len(self.paths)} paths, {self.weight_numel} weights, {self.nnz} CG non-zeros, layout={self.layout})"
        ]
        for p in self.paths[:12]:
            ir1, ir2, iro = self.irreps_in1[p.i_in1], self.irreps_in2[p.i_in2], self.irreps_out[p.i_out]
            lines.append(
                f"  [{p.i_in1}] {ir1} x [{p.i_in2}] {ir2} -> [{p.i_out}] {iro}  {p.mode}"
                f"{' w' + str(p.weight_shape) if p.has_weight else ''}  c={p.coefficient:.4g}"
            )
        if len(self.paths) > 12:
            lines.append(f"  ... {len(self.paths) - 12} more")
        return "\n".join(lines)

    # -- coefficients --------------------------------------------------------------------------------------------------
    @cached_property
    def sparse_paths(self):
        """For each path, its Clebsch–Gordan non-zeros ``(i, j, k, value)`` (numpy, value in float64), with the
        path's normalisation coefficient folded into ``value``."""
        import torch

        from ..so3 import wigner_3j

        out = []
        for p in self.paths:
            l1 = self.irreps_in1[p.i_in1].ir.l
            l2 = self.irreps_in2[p.i_in2].ir.l
            l3 = self.irreps_out[p.i_out].ir.l
            C = wigner_3j(l1, l2, l3, dtype=torch.float64).numpy()
            i, j, k = np.nonzero(np.abs(C) > 1e-14)
            v = C[i, j, k] * p.coefficient
            out.append((i.astype(np.int32), j.astype(np.int32), k.astype(np.int32), v))
        return tuple(out)

    @property
    def nnz(self) -> int:
        """Total number of Clebsch–Gordan non-zeros over the paths."""
        return int(sum(len(s[3]) for s in self.sparse_paths))

    # -- costs ---------------------------------------------------------------------------------------------------------
    def _path_dims(self, p: Path):
        (m1, ir1), (m2, ir2), (mo, iro) = self.irreps_in1[p.i_in1], self.irreps_in2[p.i_in2], self.irreps_out[p.i_out]
        return m1, m2, mo, ir1.dim, ir2.dim, iro.dim

    def flops(self, batch: int = 1, pass_: str = "fwd") -> int:
        """Floating-point operations of the sparse algorithm (a multiply-add counts 2) for ``batch`` items.

        ``pass_`` is ``"fwd"``, ``"bwd"`` (all three input gradients) or ``"fwd+bwd"``.
        """
        fwd = 0
        for p, (_, _, _, v) in zip(self.paths, self.sparse_paths):
            m1, m2, mo, d1, d2, d3 = self._path_dims(p)
            nnz = len(v)
            if p.mode == "uvw":
                fwd += 2 * nnz * m1 * m2 + 2 * d3 * m1 * m2 * mo
            elif p.mode in ("uvu", "uvv", "uvuv"):
                fwd += 2 * nnz * m1 * m2 + 2 * d3 * m1 * m2
            elif p.mode == "uuw":
                fwd += 2 * nnz * m1 + 2 * d3 * m1 * mo
            else:
                fwd += 2 * nnz * m1 + 2 * d3 * m1
        fwd *= batch
        if pass_ == "fwd":
            return fwd
        if pass_ == "bwd":
            return 3 * fwd
        if pass_ == "fwd+bwd":
            return 4 * fwd
        raise ValueError(f"pass_: expected 'fwd', 'bwd' or 'fwd+bwd', got {pass_!r}")

    def bytes(self, batch: int = 1, itemsize: int = 4, shared_weights: bool = False, pass_: str = "fwd") -> int:
        """Compulsory memory traffic (each operand read or written once) for ``batch`` items."""
        w = self.weight_numel * (1 if shared_weights else batch)
        io = (self.irreps_in1.dim + self.irreps_in2.dim) * batch
        o = self.irreps_out.dim * batch
        fwd = w + io + o
        if pass_ == "fwd":
            n = fwd
        elif pass_ == "bwd":
            n = 2 * (w + io) + o  # read inputs and grad_out, write the three gradients
        elif pass_ == "fwd+bwd":
            n = fwd + 2 * (w + io) + o
        else:
            raise ValueError(f"pass_: expected 'fwd', 'bwd' or 'fwd+bwd', got {pass_!r}")
        return n * itemsize

    def operand_dim(self, t: int) -> int:
        """Per-item size of operand ``t`` (0 weight, 1 in1, 2 in2, 3 out)."""
        return (self.weight_numel, self.irreps_in1.dim, self.irreps_in2.dim, self.irreps_out.dim)[t]

    # -- execution plan ------------------------------------------------------------------------------------------------
    @cached_property
    def plan(self) -> "_Plan":
        return _Plan(self)


# codes of the forward-form modes used by the kernels
MODE_CODE = {"uvw": 0, "uvu": 1, "uvv": 2, "uuw": 3, "uuu": 4}


def _weight_strides(mode: str, m1: int, m2: int, mo: int) -> Tuple[int, int, int]:
    """Stride of the weight tensor along the channel index of (in1, in2, out); 0 where the operand's channel index
    does not index a new weight axis (it coincides with another one's)."""
    if mode == "uvw":
        return (m2 * mo, mo, 1)
    if mode == "uvu":
        return (m2, 1, 0)
    if mode == "uvv":
        return (m2, 1, 0)
    if mode == "uuw":
        return (mo, 0, 1)
    return (1, 0, 0)


class _Plan:
    """Flat numpy arrays of a descriptor, for the kernels: the forward form (A, B -> C) for each target operand.

    For target ``t`` in {1, 2, 3} the kernels compute ``C[c, k] += sum W A[a, i] B[b, j] coef``; this class maps
    operands (A, B, C) to (in1, in2, out) in the permuted roles, with the CG index arrays permuted to match.
    """

    # for target t: which original operands play A, B (C is t); and the permutation of (i, j, k) index arrays
    ROLES = {3: (1, 2), 1: (2, 3), 2: (1, 3)}

    def __init__(self, d: TensorProductDescriptor):
        self.d = d
        irreps = (None, d.irreps_in1, d.irreps_in2, d.irreps_out)
        self.seg_offsets = {t: [s.start for s in irreps[t].slices()] for t in (1, 2, 3)}
        self.forms = {}
        for t in (1, 2, 3):
            self.forms[t] = self._build(t)
        self.weight_form = self._build_weight()

    def _path_operand_info(self, p: Path):
        """Per operand: (offset, channel count, ir dim, row stride) in the ir_mul-ordered item buffer."""
        d = self.d
        blocks = {1: p.i_in1, 2: p.i_in2, 3: p.i_out}
        irreps = {1: d.irreps_in1, 2: d.irreps_in2, 3: d.irreps_out}
        info = {}
        for t in (1, 2, 3):
            mul, ir = irreps[t][blocks[t]]
            info[t] = (self.seg_offsets[t][blocks[t]], mul, ir.dim, mul)
        return info

    def _sub_paths(self):
        """The paths as (mode, has_weight, weight_offset, info, cg); a ``uvuv`` path is split, for each channel u of
        in1, into a ``uvv`` path on a one-channel slice of in1 and an ``mul_in2``-channel slice of out."""
        d = self.d
        for p, cg in zip(d.paths, d.sparse_paths):
            info = self._path_operand_info(p)
            if p.mode != "uvuv":
                yield p.mode, p.has_weight, p.weight_offset, info, cg
                continue
            m1, m2 = info[1][1], info[2][1]
            for u in range(m1):
                sub = {
                    1: (info[1][0] + u, 1, info[1][2], info[1][3]),
                    2: info[2],
                    3: (info[3][0] + u * m2, m2, info[3][2], info[3][3]),
                }
                yield "uvv", p.has_weight, (p.weight_offset + u * m2) if p.has_weight else -1, sub, cg

    def _build(self, t: int):
        d = self.d
        A, B = self.ROLES[t]
        rows = []
        ci, cj, ck, cv = [], [], [], []
        nnz_start = 0
        for mode, has_weight, weight_offset, info, (si, sj, sk, sv) in self._sub_paths():
            m1, m2, mo = info[1][1], info[2][1], info[3][1]
            if m1 == 0 or m2 == 0 or mo == 0 or len(sv) == 0:
                continue
            chan = dict(zip((1, 2, 3), mode))  # the mode's letters are the channel indices of (in1, in2, out)
            strides = dict(zip((1, 2, 3), _weight_strides(mode, m1, m2, mo)))
            ca, cb, cc = chan[A], chan[B], chan[t]
            # forward-form mode from the coincidence pattern of channel letters
            if ca == cb == cc:
                form = "uuu"
            elif ca == cc:
                form = "uvu"
            elif cb == cc:
                form = "uvv"
            elif ca == cb:
                form = "uuw"
            else:
                form = "uvw"
            # weight stride along each distinct channel index of the form: (a, b, c)
            # an index shared by several operands gets the sum of their strides (only one is non-zero)
            sa, sb, sc = strides[A], strides[B], strides[t]
            if form == "uuu":
                wa, wb, wc = sa + sb + sc, 0, 0
            elif form == "uvu":
                wa, wb, wc = sa + sc, sb, 0
            elif form == "uvv":
                wa, wb, wc = sa, sb + sc, 0
            elif form == "uuw":
                wa, wb, wc = sa + sb, 0, sc
            else:
                wa, wb, wc = sa, sb, sc
            idx = {1: si, 2: sj, 3: sk}
            n = len(sv)
            ci.append(idx[A])
            cj.append(idx[B])
            ck.append(idx[t])
            cv.append(sv)
            rows.append(
                [MODE_CODE[form], int(has_weight), weight_offset, wa, wb, wc]
                + list(info[A][:3])
                + list(info[B][:3])
                + list(info[t][:3])
                + [nnz_start, nnz_start + n, info[A][3], info[B][3], info[t][3]]
            )
            nnz_start += n
        return _pack(rows, ci, cj, ck, cv)

    def _build_weight(self):
        # target = weight: A = in1, B = in2, G = out, original modes
        d = self.d
        rows = []
        ci, cj, ck, cv = [], [], [], []
        nnz_start = 0
        for mode, has_weight, weight_offset, info, (si, sj, sk, sv) in self._sub_paths():
            if not has_weight:
                continue
            m1, m2, mo = info[1][1], info[2][1], info[3][1]
            if m1 == 0 or m2 == 0 or mo == 0 or len(sv) == 0:
                continue
            wa, wb, wc = _weight_strides(mode, m1, m2, mo)
            ci.append(si)
            cj.append(sj)
            ck.append(sk)
            cv.append(sv)
            n = len(sv)
            rows.append(
                [MODE_CODE[mode], 1, weight_offset, wa, wb, wc]
                + list(info[1][:3])
                + list(info[2][:3])
                + list(info[3][:3])
                + [nnz_start, nnz_start + n, info[1][3], info[2][3], info[3][3]]
            )
            nnz_start += n
        return _pack(rows, ci, cj, ck, cv)


# column names of a plan row
ROW = (
    "form", "has_weight", "w_off", "wa", "wb", "wc",
    "a_off", "a_mul", "a_dim", "b_off", "b_mul", "b_dim", "c_off", "c_mul", "c_dim", "n0", "n1",
    "a_str", "b_str", "c_str",
)  # fmt: skip


def _pack(rows, ci, cj, ck, cv):
    table = np.asarray(rows, dtype=np.int64).reshape(-1, len(ROW))
    cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt))
    return table, cat(ci, np.int64), cat(cj, np.int64), cat(ck, np.int64), cat(cv, np.float64)
