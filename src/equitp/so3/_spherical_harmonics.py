r"""Real spherical harmonics in e3nn's convention, by a vectorised recurrence.

Convention (identical to ``e3nn.o3.spherical_harmonics``): for an input ``x = (x, y, z)`` the *y* axis is the polar
axis. With the standard coordinates ``(X, Y, Z) = (z, x, y)``, polar angle ``theta`` (from ``Z``) and azimuth ``phi``
(from ``X`` towards ``Y``), the component ``m`` (ordered ``m = -l..l``) of degree ``l`` is the textbook real harmonic
without Condon-Shortley phase:

.. math::

    Y_{l m} = \sqrt{2}\, N_{l |m|}\, P_l^{|m|}(\cos\theta) \sin(|m| \phi) \quad (m < 0), \qquad
    N_{l 0} P_l(\cos\theta) \quad (m = 0), \qquad
    \sqrt{2}\, N_{l m}\, P_l^{m}(\cos\theta) \cos(m \phi) \quad (m > 0),

multiplied by ``|x|^l`` (so that every component is a homogeneous polynomial of degree ``l`` in ``x``) unless
``normalize=True``. Hence ``Y^1 = c (x, y, z)``.

Algorithm: the azimuthal factors ``|x|^m sin^m(theta) (cos, sin)(m phi)`` are ``Re/Im (X + iY)^m`` (a two-term
recurrence in ``m``), and the remaining Legendre factors ``|x|^(l-m) P_l^m / sin^m(theta)`` are polynomials in ``Z``
and ``|x|^2`` obtained by the normalised three-term recurrence in ``l``, vectorised over ``m``. Every step is a plain
torch operation, so the result is differentiable any number of times.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import List, Sequence, Tuple, Union

import numpy as np
import torch

from ._checks import cacheable, check_degree, check_float_tensor

__all__ = ["spherical_harmonics"]

_NORMALIZATIONS = ("integral", "component", "norm")


def _parse_ls(ls) -> Tuple[int, ...]:
    """The list of degrees requested by ``ls``: an int, a sequence of ints, or irreps (a string, an ``Irreps``/e3nn
    object, or any iterable of ``(mul, ir)`` pairs)."""
    if isinstance(ls, bool):
        raise TypeError(f"ls must be an int, a sequence of ints or irreps, got {ls!r}")
    if isinstance(ls, numbers.Integral):
        return (check_degree(ls, "ls"),)
    if isinstance(ls, str) or hasattr(ls, "ls") or (hasattr(ls, "l") and hasattr(ls, "p")):
        return _degrees_of_irreps(ls)  # a string, or an Irreps / Irrep (ours or e3nn's)
    try:
        items = list(ls)
    except TypeError:
        raise TypeError(f"ls must be an int, a sequence of ints or irreps, got {type(ls).__name__}") from None
    if not items:
        raise ValueError("ls: expected at least one degree, got an empty sequence")
    if all(isinstance(l, numbers.Integral) and not isinstance(l, bool) for l in items):
        return tuple(check_degree(l, "ls[i]") for l in items)
    if any(isinstance(l, (bool, float)) for l in items):
        raise TypeError(f"ls must hold non-negative ints, got {items!r}")
    return _degrees_of_irreps(ls)


def _degrees_of_irreps(irreps) -> Tuple[int, ...]:
    from equitp.irreps import Irreps  # lazy: the irreps layer sits beside, not under, this module

    try:
        irreps = Irreps(irreps)
    except (TypeError, ValueError) as e:
        raise type(e)(f"ls: {e}") from None
    degrees: List[int] = []
    parities = set()
    for mul, ir in irreps:
        degrees.extend([ir.l] * mul)
        parities.add((ir.l, ir.p))
    if not all(p == (-1) ** l for l, p in parities) and not all(p == 1 for _, p in parities):
        raise ValueError(
            f"ls: irreps {irreps!s} mix parities; spherical harmonics of a vector have parity (-1)^l "
            "(e.g. '0e+1o+2e'), those of a pseudovector have parity +1"
        )
    if not degrees:
        raise ValueError(f"ls: expected at least one degree, got {irreps!r}")
    return tuple(degrees)


@functools.lru_cache(maxsize=None)
def _recurrence_constants(lmax: int, normalization: str):
    """Per-degree constants of the normalised Legendre recurrence, with the output normalisation folded in.

    With ``q_lm = sigma_l sqrt((2l+1)(l-m)!/(l+m)!) |x|^(l-m) P_l^m / sin^m`` (``sigma_l`` the normalisation):

    * ``q_lm = a_lm Z q_(l-1)m - b_lm |x|^2 q_(l-2)m`` for ``m <= l-1`` (``b`` vanishes at ``m = l-1``),
    * ``q_ll = d_l`` (a constant).
    """
    if normalization == "component":
        sigma = [1.0] * (lmax + 1)
    elif normalization == "integral":
        sigma = [1 / math.sqrt(4 * math.pi)] * (lmax + 1)
    else:
        sigma = [1 / math.sqrt(2 * l + 1) for l in range(lmax + 1)]
    a, b, d = [None], [None], [sigma[0]]
    diag = 1.0
    for l in range(1, lmax + 1):
        m = np.arange(l, dtype=np.float64)
        a.append(np.sqrt((4.0 * l * l - 1) / (l * l - m * m)) * (sigma[l] / sigma[l - 1]))
        if l >= 2:
            m2 = np.arange(l - 1, dtype=np.float64)
            b.append(
                np.sqrt((2 * l + 1) * ((l - 1) ** 2 - m2 * m2) / ((2 * l - 3) * (l * l - m2 * m2)))
                * (sigma[l] / sigma[l - 2])
            )
        else:
            b.append(None)
        diag *= math.sqrt((2 * l + 1) / (2 * l))
        d.append(diag * sigma[l])
    return a, b, d


_TENSOR_CACHE: dict = {}


@torch.compiler.assume_constant_result  # constant tables: evaluated eagerly under torch.compile / export
def _constants_as_tensors(lmax: int, normalization: str, dtype: torch.dtype, device: torch.device):
    key = (lmax, normalization, dtype, device)
    hit = _TENSOR_CACHE.get(key)
    if hit is not None:
        return hit
    a, b, d = _recurrence_constants(lmax, normalization)

    def t(v):
        return None if v is None else torch.as_tensor(v, dtype=dtype, device=device)[:, None]

    # Row l of the Legendre table holds m = 0..l; output block l needs |m| for m = -l..l.
    expand = [torch.as_tensor(list(range(l, 0, -1)) + list(range(l + 1)), device=device) for l in range(lmax + 1)]
    value = ([t(v) for v in a], [t(v) for v in b], list(d), expand)
    if cacheable(*expand):
        if len(_TENSOR_CACHE) > 256:
            _TENSOR_CACHE.clear()
        _TENSOR_CACHE[key] = value
    return value


def _legendre_rows(lmax: int, Z: torch.Tensor, r2, a, b, d) -> List[torch.Tensor]:
    """``q_lm`` for ``l = 0..lmax``: a list whose entry ``l`` has shape ``(l + 1, N)`` (rows ``m = 0..l``).

    ``r2`` is ``|x|^2`` of shape ``(N,)`` or None for unit vectors.
    """
    N = Z.shape[0]
    rows = [Z.new_full((1, N), d[0])]
    for l in range(1, lmax + 1):
        prev = rows[l - 1]
        t = prev * Z * a[l]  # (l, N)
        parts = []
        if l >= 2:
            older = rows[l - 2] if r2 is None else rows[l - 2] * r2
            parts.append(t[: l - 1] - older * b[l])
            parts.append(t[l - 1 :])
        else:
            parts.append(t)
        parts.append(Z.new_full((1, N), d[l]))
        rows.append(torch.cat(parts, dim=0))
    return rows


def _azimuth_rows(lmax: int, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Rows ``m = -lmax..lmax`` (row ``lmax + m``) of ``sqrt(2) Im (X+iY)^|m|`` (m<0), ``1`` (m=0),
    ``sqrt(2) Re (X+iY)^m`` (m>0); shape ``(2 lmax + 1, N)``."""
    one = torch.ones_like(X)
    if lmax == 0:
        return one[None]
    s2 = math.sqrt(2.0)
    c, s = [X * s2], [Y * s2]
    for _ in range(2, lmax + 1):
        cm, sm = c[-1], s[-1]
        c.append(X * cm - Y * sm)
        s.append(X * sm + Y * cm)
    return torch.stack(s[::-1] + [one] + c, dim=0)


def _legendre_rows_numpy(lmax: int, z: np.ndarray, normalization: str) -> List[np.ndarray]:
    """float64 NumPy twin of `_legendre_rows` for unit vectors (used to build constant tables outside autograd and
    outside any torch tracing)."""
    a, b, d = _recurrence_constants(lmax, normalization)
    z = np.asarray(z, dtype=np.float64)
    rows = [np.full((1, z.size), d[0])]
    for l in range(1, lmax + 1):
        t = rows[l - 1] * z * a[l][:, None]
        if l >= 2:
            t[: l - 1] -= rows[l - 2] * b[l][:, None]
        rows.append(np.concatenate([t, np.full((1, z.size), d[l])], axis=0))
    return rows


def _spherical_harmonics_numpy(lmax: int, xyz: np.ndarray, normalization: str = "integral") -> np.ndarray:
    """float64 NumPy evaluation of degrees ``0..lmax`` at unit vectors ``xyz`` ``(n, 3)``; shape ``(n, (lmax+1)^2)``."""
    xyz = np.asarray(xyz, dtype=np.float64)
    X, Y, Z = xyz[:, 2], xyz[:, 0], xyz[:, 1]
    rows = _legendre_rows_numpy(lmax, Z, normalization)
    c, s = [np.ones_like(X)], [np.zeros_like(X)]
    for _ in range(lmax):
        c, s = c + [X * c[-1] - Y * s[-1]], s + [X * s[-1] + Y * c[-1]]
    out = []
    for l in range(lmax + 1):
        for m in range(-l, l + 1):
            trig = 1.0 if m == 0 else math.sqrt(2.0) * (c[m] if m > 0 else s[-m])
            out.append(rows[l][abs(m)] * trig)
    return np.stack(out, axis=-1)


def spherical_harmonics(
    ls: Union[int, Sequence[int], str, object],
    x: torch.Tensor,
    normalize: bool,
    normalization: str = "integral",
) -> torch.Tensor:
    r"""Real spherical harmonics :math:`Y^l(x)`, numerically identical to ``e3nn.o3.spherical_harmonics``.

    The harmonics are polynomials of the Cartesian coordinates, equivariant
    (``Y^l(R x) = D^l(R) Y^l(x)`` with ``D^l = wigner_D(l, *matrix_to_angles(R))``), with the *y* axis as polar axis
    (see the module docstring for the explicit formula). Components are ordered ``m = -l..l`` within each degree and
    degrees follow ``ls``.

    Args:
        ls: the degree(s): an int, a sequence of ints (repeats allowed), or irreps (a string such as
            ``"0e+1o+2e"`` or an ``Irreps`` object; every irrep must have parity ``(-1)^l``, or all parity ``+1``).
        x: tensor of shape ``(..., 3)``, floating point.
        normalize: whether to project ``x`` onto the unit sphere first (zero vectors map to zero, as in e3nn).
            Without it every component of degree ``l`` is a homogeneous polynomial of degree ``l``.
        normalization: ``"integral"`` (``\int_{S^2} Y_{lm}^2 = 1``, the default), ``"component"``
            (``|Y^l(x)|^2 = 2l+1`` on the sphere) or ``"norm"`` (``|Y^l(x)| = 1`` on the sphere).

    Returns:
        Tensor of shape ``(..., sum(2l+1 for l in ls))`` with the dtype and device of ``x``.

    Raises:
        TypeError: ``x`` is not a floating point tensor, or ``ls`` has the wrong type.
        ValueError: bad ``normalization``, negative degree, ``x.shape[-1] != 3``.

    Examples:
        >>> import torch
        >>> spherical_harmonics(1, torch.tensor([[0.0, 2.0, 0.0]]), normalize=True, normalization="component")
        tensor([[0.0000, 1.7321, 0.0000]])
        >>> spherical_harmonics([0, 1, 2], torch.randn(5, 3), normalize=True).shape
        torch.Size([5, 9])
    """
    degrees = _parse_ls(ls)
    x = check_float_tensor(x, "x")
    if x.dim() == 0 or x.shape[-1] != 3:
        raise ValueError(f"x must have shape (..., 3), got {tuple(x.shape)}")
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
    if not isinstance(normalize, (bool, np.bool_)):
        raise TypeError(f"normalize must be a bool, got {normalize!r}")

    lmax = max(degrees)
    a, b, d, expand = _constants_as_tensors(lmax, normalization, x.dtype, x.device)
    batch = x.shape[:-1]
    x = x.reshape(-1, 3)
    if normalize:
        x = torch.nn.functional.normalize(x, dim=-1)
    # e3nn's axes: standard (X, Y, Z) = (z, x, y), with Z the polar axis.
    X, Y, Z = x[:, 2], x[:, 0], x[:, 1]
    # |x|^2 even after normalisation: it is 1 except for zero vectors, which must give 0 for l > 0 as in e3nn.
    r2 = None if lmax < 2 else (x * x).sum(dim=-1)

    q = _legendre_rows(lmax, Z, r2, a, b, d)
    cs = _azimuth_rows(lmax, X, Y)
    blocks = {}
    for l in dict.fromkeys(degrees):
        # (2l+1, N) in rows layout, handed to cat transposed: one pass writes the (N, dim) output.
        blocks[l] = (torch.index_select(q[l], 0, expand[l]) * cs[lmax - l : lmax + l + 1]).t()
    out = torch.cat([blocks[l] for l in degrees], dim=1)
    return out.reshape(batch + (out.shape[1],))
