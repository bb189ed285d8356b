"""Irreducible representations of O(3) and their direct sums.

`Irrep` is the irrep of O(3) of degree ``l`` and parity ``p`` (``+1`` even, ``-1`` odd); `Irreps` is a direct sum of
irreps with multiplicities, written as in e3nn: ``"16x0e + 8x1o + 2e"``. Both are immutable, hashable tuples, so they
compare equal to (and can be built from) e3nn's ``o3.Irrep`` / ``o3.Irreps``.

This module imports nothing else of equitp at import time (the Wigner-D helpers are looked up lazily).
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator, NamedTuple, Tuple, Union

__all__ = ["Irrep", "Irreps", "MulIr"]

_IRREP_RE = re.compile(r"^(\d+)([eoy])$")
_MUL_IRREP_RE = re.compile(r"^(?:(\d+)\s*x\s*)?(\d+)([eoy])$")


class Irrep(tuple):
    """An irreducible representation of O(3): degree ``l >= 0`` and parity ``p`` in {+1, -1}.

    Args:
        l: the degree, or a string such as ``"1o"``/``"2e"``/``"1y"`` (``y`` is the parity of spherical harmonics,
            ``(-1)^l``), or another ``Irrep``-like pair ``(l, p)`` (an e3nn ``o3.Irrep`` is accepted).
        p: the parity, +1 or -1 (only when ``l`` is an int).

    Examples:
        >>> Irrep("1o")
        1o
        >>> Irrep(2, 1).dim
        5
        >>> Irrep("1o") == Irrep(1, -1)
        True
    """

    def __new__(cls, l: Union[int, str, "Irrep", tuple], p: int = None):  # noqa: E741
        if p is None:
            if isinstance(l, Irrep):
                return l
            if isinstance(l, str):
                token = l.strip()
                m = _IRREP_RE.match(token)
                if m is None:
                    raise ValueError(f"irrep: cannot parse {l!r}; expected a token like '0e', '1o' or '2y'")
                deg = int(m.group(1))
                par = {"e": 1, "o": -1, "y": (-1) ** deg}[m.group(2)]
                return super().__new__(cls, (deg, par))
            if hasattr(l, "l") and hasattr(l, "p") and not isinstance(l, (int, str)):
                l, p = int(l.l), int(l.p)
            elif isinstance(l, tuple) and len(l) == 2:
                l, p = l
            else:
                raise TypeError(f"irrep: expected a string like '1o', an (l, p) pair or an Irrep, got {l!r}")
        if isinstance(l, bool) or not isinstance(l, int):
            try:
                import numbers

                if isinstance(l, numbers.Integral) and not isinstance(l, bool):
                    l = int(l)
                else:
                    raise TypeError
            except TypeError:
                raise TypeError(f"irrep: l must be a non-negative int, got {l!r} of type {type(l).__name__}") from None
        if l < 0:
            raise ValueError(f"irrep: l must be >= 0, got {l}")
        if p not in (1, -1):
            raise ValueError(f"irrep: parity p must be +1 or -1, got {p!r}")
        return super().__new__(cls, (int(l), int(p)))

    @property
    def l(self) -> int:  # noqa: E743
        """The degree."""
        return self[0]

    @property
    def p(self) -> int:
        """The parity (+1 even, -1 odd)."""
        return self[1]

    @property
    def dim(self) -> int:
        """The dimension ``2l + 1``."""
        return 2 * self[0] + 1

    def is_scalar(self) -> bool:
        """True for ``0e``."""
        return self == (0, 1)

    def __repr__(self) -> str:
        return f"{self[0]}{'e' if self[1] == 1 else 'o'}"

    __str__ = __repr__

    def __mul__(self, other):
        """The irreps in the tensor product ``self ⊗ other`` (``|l1-l2| .. l1+l2``, parity ``p1 p2``), or
        ``int * Irrep`` style multiplicity when ``other`` is an int (returns an `Irreps`)."""
        if isinstance(other, int) and not isinstance(other, bool):
            return Irreps([(other, self)])
        other = Irrep(other)
        p = self.p * other.p
        return tuple(Irrep(l, p) for l in range(abs(self.l - other.l), self.l + other.l + 1))

    def __rmul__(self, other):
        if isinstance(other, int) and not isinstance(other, bool):
            return Irreps([(other, self)])
        return NotImplemented

    def __add__(self, other):
        return Irreps(self) + Irreps(other)

    def __radd__(self, other):
        return Irreps(other) + Irreps(self)

    @classmethod
    def iterator(cls, lmax: int = None) -> Iterator["Irrep"]:
        """All irreps ``0e, 0o, 1o, 1e, 2e, 2o, ...`` up to ``lmax`` (forever when ``lmax`` is None)."""
        l = 0  # noqa: E741
        while lmax is None or l <= lmax:
            yield Irrep(l, (-1) ** l)
            yield Irrep(l, -((-1) ** l))
            l += 1  # noqa: E741

    def D_from_angles(self, alpha, beta, gamma, k=None):
        """The representation matrix of ``(R(alpha, beta, gamma), inversion^k)``: ``p^k D^l(alpha, beta, gamma)``.

        Shape ``(..., 2l+1, 2l+1)``.
        """
        import torch

        from equitp.so3 import wigner_D

        alpha, beta, gamma = torch.broadcast_tensors(
            torch.as_tensor(alpha), torch.as_tensor(beta), torch.as_tensor(gamma)
        )
        D = wigner_D(self.l, alpha, beta, gamma)
        if k is not None:
            k = torch.as_tensor(k, dtype=D.dtype, device=D.device)
            D = D * (self.p**k)[..., None, None]
        return D

    def D_from_matrix(self, R):
        """The representation matrix of an orthogonal 3x3 matrix ``R`` (rotation or rotoinversion)."""
        import torch

        from equitp.so3 import matrix_to_angles

        d = torch.det(R).sign()
        R = d[..., None, None] * R
        k = (1 - d) / 2
        return self.D_from_angles(*matrix_to_angles(R), k)


class MulIr(NamedTuple):
    """A multiplicity and an irrep: ``mul`` copies of ``ir``."""

    mul: int
    ir: Irrep

    @property
    def dim(self) -> int:
        return self.mul * self.ir.dim

    def __repr__(self) -> str:
        return f"{self.mul}x{self.ir}"

    __str__ = __repr__


class _SortResult(NamedTuple):
    irreps: "Irreps"
    p: Tuple[int, ...]
    inv: Tuple[int, ...]


def _parse_token(token: str, text: str) -> MulIr:
    m = _MUL_IRREP_RE.match(token)
    if m is None:
        raise ValueError(
            f"irreps: cannot parse token {token!r} in {text!r}; expected tokens like '16x0e', '1o' or '2x1e' "
            "joined by '+'"
        )
    mul = int(m.group(1)) if m.group(1) is not None else 1
    return MulIr(mul, Irrep(m.group(2) + m.group(3)))


class Irreps(tuple):
    """A direct sum of O(3) irreps with multiplicities, as e3nn writes them.

    Accepts a string (``"16x0e + 8x1o"``), an `Irrep`, an e3nn ``o3.Irreps``/``o3.Irrep``, or an iterable of
    ``(mul, ir)`` pairs / irreps. Iterating gives `MulIr` ``(mul, ir)`` pairs.

    Examples:
        >>> irreps = Irreps("16x0e + 8x1o")
        >>> irreps.dim, irreps.num_irreps, irreps.ls[:2]
        (40, 24, [0, 0])
        >>> Irreps("1o + 2x1o").simplify()
        3x1o
    """

    def __new__(cls, irreps=None):
        if isinstance(irreps, Irreps):
            return irreps
        out = []
        if irreps is None:
            pass
        elif isinstance(irreps, Irrep):
            out.append(MulIr(1, irreps))
        elif isinstance(irreps, str):
            text = irreps.strip()
            if text:
                for token in text.split("+"):
                    tok = re.sub(r"\s+", "", token)
                    if tok == "":
                        raise ValueError(f"irreps: empty token in {irreps!r}")
                    out.append(_parse_token(tok, irreps))
        elif hasattr(irreps, "l") and hasattr(irreps, "p"):
            out.append(MulIr(1, Irrep(irreps)))
        else:
            try:
                items = list(irreps)
            except TypeError:
                raise TypeError(
                    f"irreps: expected a string, an Irreps, an Irrep or an iterable of (mul, ir), got "
                    f"{type(irreps).__name__}"
                ) from None
            # e3nn's Irrep is itself iterable: treat any object with .l and .p as one irrep
            if hasattr(irreps, "l") and hasattr(irreps, "p"):
                out.append(MulIr(1, Irrep(irreps)))
            else:
                for item in items:
                    if isinstance(item, str):
                        out.append(MulIr(1, Irrep(item)))
                    elif isinstance(item, Irrep) or (hasattr(item, "l") and hasattr(item, "p")):
                        out.append(MulIr(1, Irrep(item)))
                    elif hasattr(item, "mul") and hasattr(item, "ir") or (isinstance(item, tuple) and len(item) == 2):
                        mul, ir = (item.mul, item.ir) if hasattr(item, "mul") else item
                        if isinstance(mul, bool) or not isinstance(mul, int):
                            raise TypeError(f"irreps: multiplicity must be an int, got {mul!r} in {irreps!r}")
                        if mul < 0:
                            raise ValueError(f"irreps: multiplicity must be >= 0, got {mul} in {irreps!r}")
                        ir = Irrep(ir) if isinstance(ir, (str, Irrep)) or hasattr(ir, "l") else Irrep(tuple(ir))
                        out.append(MulIr(mul, ir))
                    else:
                        raise TypeError(f"irreps: cannot interpret {item!r} as (mul, ir)")
        self = super().__new__(cls, out)
        self._dim = sum(mul * ir.dim for mul, ir in out)  # immutable: computed once (the ops check it on every call)
        return self

    # -- sizes --------------------------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Total dimension ``sum(mul * (2l + 1))``."""
        return self._dim

    @property
    def num_irreps(self) -> int:
        """Total number of irreps ``sum(mul)``."""
        return sum(mul for mul, _ in self)

    @property
    def ls(self):
        """The degree of every irrep, repeated by multiplicity."""
        return [ir.l for mul, ir in self for _ in range(mul)]

    @property
    def lmax(self) -> int:
        """The largest degree."""
        if len(self) == 0:
            raise ValueError("irreps: lmax of an empty Irreps is undefined")
        return max(ir.l for _, ir in self)

    def slices(self):
        """The ``slice`` of each block ``(mul, ir)`` in a vector of dimension ``self.dim``."""
        s = []
        i = 0
        for mul_ir in self:
            s.append(slice(i, i + mul_ir.dim))
            i += mul_ir.dim
        return s

    def count(self, ir) -> int:
        """Multiplicity of ``ir`` summed over the blocks."""
        ir = Irrep(ir)
        return sum(mul for mul, irr in self if irr == ir)

    def __contains__(self, ir) -> bool:
        try:
            ir = Irrep(ir)
        except (TypeError, ValueError):
            return super().__contains__(ir)
        return any(irr == ir for _, irr in self)

    # -- transformations -----------------------------------------------------------------------------------------------
    def simplify(self) -> "Irreps":
        """Merge consecutive blocks of the same irrep and drop empty ones (does not sort)."""
        out = []
        for mul, ir in self:
            if mul == 0:
                continue
            if out and out[-1][1] == ir:
                out[-1] = (out[-1][0] + mul, ir)
            else:
                out.append((mul, ir))
        return Irreps(out)

    def remove_zero_multiplicities(self) -> "Irreps":
        return Irreps([(mul, ir) for mul, ir in self if mul > 0])

    def sort(self) -> _SortResult:
        """Sort the blocks by irrep (``l`` then parity ``-1`` before ``+1``, as e3nn).

        Returns:
            ``(irreps, p, inv)``: the sorted irreps, the permutation ``p`` (block ``i`` goes to position ``p[i]``)
            and its inverse ``inv``.
        """
        keys = [(ir.l, ir.p, i) for i, (_, ir) in enumerate(self)]
        inv = tuple(k[2] for k in sorted(keys))
        p = [0] * len(inv)
        for new, old in enumerate(inv):
            p[old] = new
        return _SortResult(Irreps([self[i] for i in inv]), tuple(p), inv)

    def filter(self, keep=None, drop=None) -> "Irreps":
        """Keep only the blocks whose irrep is in ``keep`` (or drop those in ``drop``)."""
        if keep is not None:
            keep_set = {mi.ir for mi in Irreps(keep)} if not callable(keep) else None
            return Irreps([(mul, ir) for mul, ir in self if (keep(ir) if keep_set is None else ir in keep_set)])
        if drop is not None:
            drop_set = {mi.ir for mi in Irreps(drop)}
            return Irreps([(mul, ir) for mul, ir in self if ir not in drop_set])
        return self

    # -- operators ----------------------------------------------------------------------------------------------------
    def __getitem__(self, i):
        x = super().__getitem__(i)
        if isinstance(i, slice):
            return Irreps(x)
        return x

    def __add__(self, other) -> "Irreps":
        return Irreps(tuple(self) + tuple(Irreps(other)))

    def __radd__(self, other) -> "Irreps":
        return Irreps(other) + self

    def __mul__(self, other) -> "Irreps":
        if isinstance(other, Irreps):
            raise NotImplementedError("irreps: use a tensor product to multiply two Irreps")
        if isinstance(other, bool) or not isinstance(other, int):
            raise TypeError(f"irreps: can only repeat an Irreps an int number of times, got {other!r}")
        return Irreps(tuple(self) * other)

    __rmul__ = __mul__

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            try:
                other = Irreps(other)
            except (ValueError, TypeError):
                return False
        return tuple.__eq__(self, tuple(other)) if isinstance(other, tuple) else NotImplemented

    def __ne__(self, other) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = tuple.__hash__

    def __repr__(self) -> str:
        return "+".join(repr(mul_ir) for mul_ir in self)

    __str__ = __repr__

    # -- representation -----------------------------------------------------------------------------------------------
    def D_from_angles(self, alpha, beta, gamma, k=None):
        """Block-diagonal representation matrix, shape ``(..., dim, dim)``, in ``mul_ir`` layout."""
        import torch

        blocks = [ir.D_from_angles(alpha, beta, gamma, k) for mul, ir in self for _ in range(mul)]
        if not blocks:
            return torch.zeros(0, 0)
        return torch.block_diag(*blocks) if blocks[0].dim() == 2 else _batched_block_diag(blocks)

    def D_from_matrix(self, R):
        """Block-diagonal representation matrix of an orthogonal 3x3 matrix ``R``."""
        import torch

        from equitp.so3 import matrix_to_angles

        d = torch.det(R).sign()
        k = (1 - d) / 2
        return self.D_from_angles(*matrix_to_angles(d[..., None, None] * R), k)

    @staticmethod
    def spherical_harmonics(lmax: int, p: int = -1) -> "Irreps":
        """``1x0e + 1x1o + ... + 1x(lmax)`` with parity ``p^l``."""
        return Irreps([(1, (l, p**l)) for l in range(lmax + 1)])


def _batched_block_diag(blocks):
    import torch

    n = sum(b.shape[-1] for b in blocks)
    out = blocks[0].new_zeros(blocks[0].shape[:-2] + (n, n))
    i = 0
    for b in blocks:
        d = b.shape[-1]
        out[..., i : i + d, i : i + d] = b
        i += d
    return out


def as_irreps(irreps, name: str = "irreps") -> Irreps:
    """Coerce ``irreps`` (string, e3nn object, `Irreps`) to `Irreps`, naming ``name`` in errors."""
    try:
        return Irreps(irreps)
    except (ValueError, TypeError) as e:
        raise type(e)(f"{name}: {e}") from None


IrrepsLike = Union[str, Irreps, Irrep, Iterable]
