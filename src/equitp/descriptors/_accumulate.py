"""The sparse accumulation (sparse Clebsch–Gordan contraction) as data.

A :class:`SparseAccumulation` describes the bilinear map

.. code-block:: text

    out[..., mu[i]] += X1[..., m1[i]] * X2[..., m2[i]] * C[i]      for i in range(nnz)

by its three index arrays and the sizes of the three sparse dimensions. The coefficients ``C`` are *not*
part of the descriptor: they are a (differentiable) tensor argument of the operation.

The operation is the contraction of the trilinear form ``T(Y, X1, X2) = sum_i C[i] Y[mu[i]] X1[m1[i]]
X2[m2[i]]`` with one of its slots left open. Leaving another slot open gives the gradients: the
gradient with respect to ``X1`` is the same kind of contraction with the roles of ``out`` and ``X1``
swapped (:meth:`SparseAccumulation.backward_for`), which is why backward and double backward reuse the
forward kernels.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SparseAccumulation", "real_cg_rule"]

_ROLES = ("X1", "X2", "out")


def _as_index_array(value, name: str) -> np.ndarray:
    """Converts ``value`` (numpy array, torch tensor or sequence) to a read-only 1-D int64 array."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got an array of shape {tuple(array.shape)}")
    if array.size == 0:
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {array.dtype}")
    array = np.array(array, dtype=np.int64, copy=True)
    array.setflags(write=False)
    return array


def _as_size(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def _check_range(array: np.ndarray, size: int, name: str, size_name: str) -> None:
    if array.size == 0:
        return
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= size:
        bad = low if low < 0 else high
        raise ValueError(f"{name} must satisfy 0 <= {name} < {size_name} = {size}, got the value {bad}")


class SparseAccumulation:
    """Immutable description of the sparse bilinear map ``out[mu[i]] += X1[m1[i]] * X2[m2[i]] * C[i]``.

    Args:
        m1: ``(nnz,)`` integer indices into the last dimension of ``X1``, ``0 <= m1 < M1``.
        m2: ``(nnz,)`` integer indices into the last dimension of ``X2``, ``0 <= m2 < M2``.
        mu: ``(nnz,)`` integer indices into the last dimension of ``out``, ``0 <= mu < output_size``. Any order
            is allowed (no sorting is assumed); repeated triples simply add up.
        M1: size of the last dimension of ``X1``.
        M2: size of the last dimension of ``X2``.
        output_size: size of the last dimension of ``out``.

    The index arrays are stored as read-only ``int64`` numpy arrays, in the order given (entry ``i`` of the
    descriptor pairs with coefficient ``C[i]``). Descriptors compare equal and hash equal when all six
    fields are equal, so executors can cache per-descriptor plans.

    Example:
        >>> d = SparseAccumulation(m1=[0, 1], m2=[0, 1], mu=[0, 0], M1=2, M2=2, output_size=1)
        >>> d
        SparseAccumulation(M1=2, M2=2, output_size=1, nnz=2)
        >>> d.flops(batch=10)
        60
        >>> d.backward_for("X1")
        SparseAccumulation(M1=1, M2=2, output_size=2, nnz=2)
    """

    __slots__ = ("_m1", "_m2", "_mu", "_M1", "_M2", "_output_size", "_hash")

    def __init__(self, m1, m2, mu, M1: int, M2: int, output_size: int):
        m1_, m2_, mu_ = (_as_index_array(m1, "m1"), _as_index_array(m2, "m2"), _as_index_array(mu, "mu"))
        if not (len(m1_) == len(m2_) == len(mu_)):
            raise ValueError(
                f"m1, m2 and mu must have the same length, got {len(m1_)}, {len(m2_)} and {len(mu_)}"
            )
        M1_ = _as_size(M1, "M1")
        M2_ = _as_size(M2, "M2")
        out_ = _as_size(output_size, "output_size")
        _check_range(m1_, M1_, "m1", "M1")
        _check_range(m2_, M2_, "m2", "M2")
        _check_range(mu_, out_, "mu", "output_size")
        self._m1, self._m2, self._mu = m1_, m2_, mu_
        self._M1, self._M2, self._output_size = M1_, M2_, out_
        self._hash = hash((M1_, M2_, out_, m1_.tobytes(), m2_.tobytes(), mu_.tobytes()))

    # -- fields ---------------------------------------------------------------------------------------------
    @property
    def m1(self) -> np.ndarray:
        """``(nnz,)`` read-only int64 indices into ``X1``."""
        return self._m1

    @property
    def m2(self) -> np.ndarray:
        """``(nnz,)`` read-only int64 indices into ``X2``."""
        return self._m2

    @property
    def mu(self) -> np.ndarray:
        """``(nnz,)`` read-only int64 indices into ``out``."""
        return self._mu

    @property
    def M1(self) -> int:
        """Size of the last dimension of ``X1``."""
        return self._M1

    @property
    def M2(self) -> int:
        """Size of the last dimension of ``X2``."""
        return self._M2

    @property
    def output_size(self) -> int:
        """Size of the last dimension of ``out``."""
        return self._output_size

    @property
    def nnz(self) -> int:
        """Number of entries (non-zero coefficients) of the rule."""
        return len(self._mu)

    def indices(self, role: str) -> np.ndarray:
        """The index array of one operand: ``role`` is ``"X1"`` (m1), ``"X2"`` (m2) or ``"out"`` (mu)."""
        return {"X1": self._m1, "X2": self._m2, "out": self._mu}[self._check_role(role)]

    def size(self, role: str) -> int:
        """The size of the sparse dimension of one operand: ``"X1"`` (M1), ``"X2"`` (M2), ``"out"``."""
        return {"X1": self._M1, "X2": self._M2, "out": self._output_size}[self._check_role(role)]

    # -- value semantics ------------------------------------------------------------------------------------
    def __eq__(self, other) -> bool:
        if not isinstance(other, SparseAccumulation):
            return NotImplemented
        return (
            self._hash == other._hash
            and (self._M1, self._M2, self._output_size) == (other._M1, other._M2, other._output_size)
            and np.array_equal(self._m1, other._m1)
            and np.array_equal(self._m2, other._m2)
            and np.array_equal(self._mu, other._mu)
        )

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return (
            f"SparseAccumulation(M1={self._M1}, M2={self._M2}, output_size={self._output_size}, nnz={self.nnz})"
        )

    def __setattr__(self, name, value):
        if hasattr(self, "_hash"):
            raise AttributeError("SparseAccumulation is immutable")
        object.__setattr__(self, name, value)

    def __reduce__(self):
        return (type(self), (self._m1, self._m2, self._mu, self._M1, self._M2, self._output_size))

    # -- costs ----------------------------------------------------------------------------------------------
    def flops(self, batch: int) -> int:
        """Floating-point operations of one application to ``batch`` rows.

        Each entry costs two multiplications and one addition per row: ``3 * nnz * batch``.
        """
        return 3 * self.nnz * int(batch)

    def bytes(self, batch: int, dtype) -> int:
        """Minimum memory traffic of one application to ``batch`` rows.

        Counts reading ``X1`` (``batch * M1``) and ``X2`` (``batch * M2``), writing ``out``
        (``batch * output_size``), all of element type ``dtype``, plus the rule: ``nnz`` coefficients of
        ``dtype`` and three int64 index arrays.

        Args:
            batch: number of rows (the product of the leading dimensions).
            dtype: numpy or torch floating dtype, or anything with an ``itemsize``.
        """
        itemsize = _itemsize(dtype)
        dense = int(batch) * (self._M1 + self._M2 + self._output_size) * itemsize
        rule = self.nnz * (itemsize + 3 * 8)
        return dense + rule

    # -- derived descriptors --------------------------------------------------------------------------------
    def permuted(self, X1: str, X2: str, out: str) -> SparseAccumulation:
        """The same trilinear form with the operand roles permuted.

        Each argument names which role of ``self`` fills that slot of the new descriptor. For example
        ``permuted(X1="out", X2="X2", out="X1")`` computes ``new_out[m1[i]] += G[mu[i]] * X2[m2[i]]``: the
        gradient with respect to ``X1`` of ``self`` contracted with an output gradient ``G``.

        Args:
            X1: role of ``self`` ("X1", "X2" or "out") that becomes the new first input.
            X2: role of ``self`` that becomes the new second input.
            out: role of ``self`` that becomes the new output.

        Returns:
            A new descriptor; its entry ``i`` still pairs with coefficient ``C[i]``.
        """
        roles = (self._check_role(X1), self._check_role(X2), self._check_role(out))
        if sorted(roles) != sorted(_ROLES):
            raise ValueError(f"X1, X2 and out must be a permutation of {_ROLES}, got {roles}")
        return SparseAccumulation(
            m1=self.indices(X1),
            m2=self.indices(X2),
            mu=self.indices(out),
            M1=self.size(X1),
            M2=self.size(X2),
            output_size=self.size(out),
        )

    def backward_for(self, operand: str) -> SparseAccumulation:
        """The descriptor whose application to ``(G, other input)`` gives the gradient of ``operand``.

        * ``backward_for("X1")``: ``grad_X1[m1[i]] += G[mu[i]] * X2[m2[i]] * C[i]``, inputs ``(G, X2)``.
        * ``backward_for("X2")``: ``grad_X2[m2[i]] += X1[m1[i]] * G[mu[i]] * C[i]``, inputs ``(X1, G)``.

        The gradient with respect to ``C`` is not a contraction of this kind but a reduction over rows:
        ``grad_C[i] = sum_rows G[mu[i]] * X1[m1[i]] * X2[m2[i]]``.
        """
        if operand == "X1":
            return self.permuted(X1="out", X2="X2", out="X1")
        if operand == "X2":
            return self.permuted(X1="X1", X2="out", out="X2")
        raise ValueError(f"operand must be 'X1' or 'X2', got {operand!r}")

    def sorted_by_output(self) -> tuple[np.ndarray, np.ndarray]:
        """Groups the entries by output index.

        Returns:
            ``(perm, offsets)``: ``perm`` is the stable permutation sorting ``mu`` ascending (so entry ``perm[j]``
            is the ``j``-th in output order) and ``offsets`` has length ``output_size + 1``: the entries writing
            output ``k`` are ``perm[offsets[k]:offsets[k + 1]]``.
        """
        perm = np.argsort(self._mu, kind="stable")
        counts = np.bincount(self._mu, minlength=self._output_size)
        offsets = np.zeros(self._output_size + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return perm, offsets

    @classmethod
    def from_real_cg(
        cls, l1: int, l2: int, l_out: int, *, normalization: str = "component"
    ) -> tuple[SparseAccumulation, np.ndarray]:
        """The real Clebsch–Gordan rule coupling ``l1 x l2 -> l_out`` (see :func:`real_cg_rule`).

        Returns:
            ``(descriptor, C)`` with ``C`` a float64 numpy array of length ``descriptor.nnz``.
        """
        m1, m2, mu, C = real_cg_rule(l1, l2, l_out, normalization=normalization)
        d = cls(m1, m2, mu, 2 * l1 + 1, 2 * l2 + 1, 2 * l_out + 1)
        return d, C.numpy()

    # -- helpers --------------------------------------------------------------------------------------------
    @staticmethod
    def _check_role(role: str) -> str:
        if role not in _ROLES:
            raise ValueError(f"role must be one of {_ROLES}, got {role!r}")
        return role


def _itemsize(dtype) -> int:
    """Bytes per element of a torch or numpy dtype (or a numpy scalar type such as ``np.float32``)."""
    size = getattr(dtype, "itemsize", None)
    if isinstance(size, (int, np.integer)):
        return int(size)
    return int(np.dtype(dtype).itemsize)


def real_cg_rule(l1: int, l2: int, l_out: int, *, normalization: str = "component", dtype=None, atol: float = 0.0):
    """The non-zero entries of the real Clebsch–Gordan coupling ``l1 x l2 -> l_out`` in e3nn's basis.

    The coefficients are those of :func:`equitp.so3.wigner_3j` (e3nn 0.6's real basis, m = -l..l, so that
    index ``m + l`` of a ``2l+1`` vector is component ``m``), computed in float64. Its zeros are exact, so the
    default ``atol = 0`` keeps exactly the mathematical non-zeros (361 of 4913 for ``l1 = l2 = l_out = 8``).

    Args:
        l1: degree of the first input (``M1 = 2 l1 + 1``).
        l2: degree of the second input (``M2 = 2 l2 + 1``).
        l_out: degree of the output (``output_size = 2 l_out + 1``); must satisfy the triangle condition
            ``|l1 - l2| <= l_out <= l1 + l2``.
        normalization: ``"component"`` (default): ``C = sqrt(2 l_out + 1) * wigner_3j``, the orthogonal
            Clebsch–Gordan matrix: ``sum_{m1, m2} C[m1, m2, mu] C[m1, m2, nu] = delta(mu, nu)`` and the output
            of two unit-norm-per-component inputs keeps unit norm per component, as e3nn's
            ``irrep_normalization="component"``. ``"wigner_3j"``: the Wigner 3j symbol itself (Frobenius norm 1).
        dtype: torch floating dtype of ``C`` (default float64).
        atol: entries with ``|wigner_3j| <= atol`` are dropped (default 0: only exact zeros).

    Returns:
        ``(m1, m2, mu, C)``: three int64 torch tensors and one float tensor, all of length nnz, sorted by
        ``mu``, then ``m1``, then ``m2``. ``accumulate(X1, X2, mu, 2 * l_out + 1, m1, m2, C)`` then equals
        ``einsum("...i,...j,ijk->...k", X1, X2, C_dense)``.

    Example:
        >>> m1, m2, mu, C = real_cg_rule(8, 8, 8)
        >>> len(C)
        361
    """
    import torch

    from equitp.so3 import wigner_3j

    for name, value in (("l1", l1), ("l2", l2), ("l_out", l_out)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if not abs(l1 - l2) <= l_out <= l1 + l2:
        raise ValueError(f"(l1, l2, l_out) = ({l1}, {l2}, {l_out}) violates |l1 - l2| <= l_out <= l1 + l2")
    if normalization == "component":
        scale = math.sqrt(2 * l_out + 1)
    elif normalization == "wigner_3j":
        scale = 1.0
    else:
        raise ValueError(f"normalization must be 'component' or 'wigner_3j', got {normalization!r}")
    dtype = torch.float64 if dtype is None else dtype

    w = wigner_3j(int(l1), int(l2), int(l_out), dtype=torch.float64).detach().cpu().numpy()
    m1, m2, mu = np.nonzero(np.abs(w) > atol)
    order = np.lexsort((m2, m1, mu))
    m1, m2, mu = m1[order], m2[order], mu[order]
    C = w[m1, m2, mu] * scale
    as_index = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))  # noqa: E731
    return as_index(m1), as_index(m2), as_index(mu), torch.from_numpy(C).to(dtype)
