r"""Wigner 3j symbols and Wigner D matrices in e3nn's real basis.

* ``wigner_3j(l1, l2, l3)`` is the unique (up to sign) invariant tensor of ``D^l1 x D^l2 x D^l3``, with e3nn's sign
  and Frobenius norm 1. It is computed exactly (see ``_exact``) and cached: in memory, and on disk as ``.npy``
  float64 tables in the user cache directory (``_cache``).
* ``wigner_D(l, alpha, beta, gamma)`` represents ``R = Y(alpha) X(beta) Y(gamma)`` on the degree-``l`` spherical
  harmonics: ``Y^l(R x) = D^l(R) Y^l(x)``. Rotations about the polar (y) axis act on the ``(m, -m)`` pairs as plane
  rotations by ``m * angle``; the rotation about x is conjugated to one about y by the fixed matrix
  ``J_l = D^l(Z(-pi/2))``, so that ``D = Y(alpha) J Y(beta) J^T Y(gamma)`` (one matmul; differentiable through the
  cosines and sines only). ``J_l`` is computed once per ``l`` in float64 by exact quadrature of the harmonics.
"""

from __future__ import annotations

import functools
import math
from typing import Tuple

import numpy as np
import torch

from . import _cache
from ._checks import cacheable, check_degree, check_float_tensor, check_triangle, resolve_dtype_device
from ._exact import real_wigner_3j_array

__all__ = ["wigner_3j", "clebsch_gordan_sparse", "wigner_D"]


@functools.lru_cache(maxsize=None)
def _wigner_3j_table(l1: int, l2: int, l3: int) -> np.ndarray:
    arr = _cache.cached_table(
        "wigner_3j",
        f"w3j_{l1}_{l2}_{l3}",
        (2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1),
        lambda: real_wigner_3j_array(l1, l2, l3),
    )
    arr = np.array(arr, dtype=np.float64, copy=True)
    arr.flags.writeable = False
    return arr


def _checked_triple(l1, l2, l3) -> Tuple[int, int, int]:
    l1, l2, l3 = check_degree(l1, "l1"), check_degree(l2, "l2"), check_degree(l3, "l3")
    check_triangle(l1, l2, l3)
    return l1, l2, l3


def wigner_3j(l1: int, l2: int, l3: int, dtype=None, device=None) -> torch.Tensor:
    r"""Wigner 3j symbols :math:`C^{l_1 l_2 l_3}_{m_1 m_2 m_3}` in e3nn's real basis (equal to ``e3nn.o3.wigner_3j``).

    Properties: invariance :math:`C_{ijk} = C_{abc} D^{l_1}_{ai}(g) D^{l_2}_{bj}(g) D^{l_3}_{ck}(g)` for every rotation
    ``g`` (with ``D`` from `wigner_D`), and Frobenius norm 1. Entries are exact to float64 rounding (computed in exact
    arithmetic, zeros are exact).

    Args:
        l1, l2, l3: non-negative integers satisfying ``|l1 - l2| <= l3 <= l1 + l2``.
        dtype: floating dtype of the result (default ``torch.get_default_dtype()``).
        device: device of the result (default: the default device).

    Returns:
        A new tensor of shape ``(2 l1 + 1, 2 l2 + 1, 2 l3 + 1)``, indices ``m = -l..l``.

    Raises:
        TypeError: a degree is not an integer, or ``dtype`` is not floating point.
        ValueError: a degree is negative, or the triangle condition fails.

    Examples:
        >>> C = wigner_3j(1, 1, 0, dtype=torch.float64)
        >>> torch.allclose(C[:, :, 0], torch.eye(3, dtype=torch.float64) / 3**0.5)
        True
    """
    l1, l2, l3 = _checked_triple(l1, l2, l3)
    dtype, device = resolve_dtype_device(dtype, device)
    return _wigner_3j_tensor(l1, l2, l3, dtype, device)


@torch.compiler.assume_constant_result
def _wigner_3j_tensor(l1: int, l2: int, l3: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(_wigner_3j_table(l1, l2, l3), dtype=dtype, device=device)


def clebsch_gordan_sparse(l1: int, l2: int, l3: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Non-zero entries of ``wigner_3j(l1, l2, l3)``, as NumPy arrays.

    Args:
        l1, l2, l3: degrees satisfying the triangle condition.

    Returns:
        ``(i, j, k, values)``: int64 index arrays (``i`` into ``2 l1 + 1``, ``j`` into ``2 l2 + 1``, ``k`` into
        ``2 l3 + 1``, i.e. ``m + l``) and the float64 values, in row-major (``i``, then ``j``, then ``k``) order.
        Mathematically zero entries are excluded exactly (no threshold).

    Examples:
        >>> i, j, k, v = clebsch_gordan_sparse(1, 1, 2)
        >>> len(v)
        11
    """
    l1, l2, l3 = _checked_triple(l1, l2, l3)
    C = _wigner_3j_table(l1, l2, l3)
    i, j, k = np.nonzero(C)
    return i.astype(np.int64), j.astype(np.int64), k.astype(np.int64), C[i, j, k].copy()


# -- Wigner D ----------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _j_matrix(l: int) -> np.ndarray:  # noqa: E741
    """``D^l`` of the rotation ``Z(-pi/2)`` (maps e_y to e_x), float64, by exact quadrature of the harmonics."""
    from ._s2grid import _gauss_legendre
    from ._spherical_harmonics import _spherical_harmonics_numpy

    n_beta, n_alpha = l + 1, 2 * l + 2
    cb, w = _gauss_legendre(n_beta)
    alpha = np.arange(n_alpha) * (2 * math.pi / n_alpha)
    sb = np.sqrt(np.clip(1 - cb * cb, 0, None))
    # e3nn's point (sin b sin a, cos b, sin b cos a)
    xyz = np.stack(
        [sb[:, None] * np.sin(alpha), np.broadcast_to(cb[:, None], (n_beta, n_alpha)), sb[:, None] * np.cos(alpha)],
        axis=-1,
    ).reshape(-1, 3)
    weight = np.repeat(w, n_alpha) * (2 * math.pi / n_alpha)
    rotated = np.stack([xyz[:, 1], -xyz[:, 0], xyz[:, 2]], axis=-1)  # Z(-pi/2) @ xyz
    sl = slice(l * l, (l + 1) ** 2)
    Y = _spherical_harmonics_numpy(l, xyz)[:, sl]
    YR = _spherical_harmonics_numpy(l, rotated)[:, sl]
    J = np.einsum("n,ni,nj->ij", weight, YR, Y)
    J.flags.writeable = False
    return J


_J_CACHE: dict = {}


@torch.compiler.assume_constant_result  # a constant table: evaluated eagerly under torch.compile / export
def _j_tensor(l: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:  # noqa: E741
    key = (l, dtype, device)
    J = _J_CACHE.get(key)
    if J is None:
        J = torch.tensor(_j_matrix(l), dtype=dtype, device=device)
        if cacheable(J):
            if len(_J_CACHE) > 512:
                _J_CACHE.clear()
            _J_CACHE[key] = J
    return J


def _rot_y_left(theta: torch.Tensor, M: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``D_y(theta) @ M`` with ``D_y[m, m] = cos(m theta)``, ``D_y[m, -m] = -sin(m theta)``."""
    mt = theta[..., None] * m
    return torch.cos(mt)[..., :, None] * M - torch.sin(mt)[..., :, None] * M.flip(-2)


def _rot_y_right(M: torch.Tensor, theta: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``M @ D_y(theta)``."""
    mt = theta[..., None] * m
    return M * torch.cos(mt)[..., None, :] + M.flip(-1) * torch.sin(mt)[..., None, :]


def wigner_D(l: int, alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:  # noqa: E741
    r"""Real Wigner D matrix of degree ``l`` for ``R = Y(alpha) X(beta) Y(gamma)`` (equal to ``e3nn.o3.wigner_D``).

    Satisfies ``D(identity) = I``, ``D(R1 R2) = D(R1) D(R2)``, ``D(R)^-1 = D(R)^T`` and
    ``spherical_harmonics(l, x @ R.T) = spherical_harmonics(l, x) @ D(R).T``. For ``l = 1``, ``D = R``.

    Args:
        l: non-negative integer degree.
        alpha, beta, gamma: Euler angles (floating tensors or Python floats), broadcast together to shape ``(...)``.

    Returns:
        Tensor of shape ``(..., 2l+1, 2l+1)`` (rows and columns ``m = -l..l``), differentiable in the angles.

    Examples:
        >>> a, b, c = rand_angles(4)  # doctest: +SKIP
        >>> wigner_D(1, a, b, c)      # equals angles_to_matrix(a, b, c)  # doctest: +SKIP
    """
    l = check_degree(l, "l")  # noqa: E741
    angles = []
    for name, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not isinstance(v, torch.Tensor):
            v = torch.as_tensor(v, dtype=torch.get_default_dtype())
        angles.append(check_float_tensor(v, name))
    dtype = torch.promote_types(torch.promote_types(angles[0].dtype, angles[1].dtype), angles[2].dtype)
    alpha, beta, gamma = torch.broadcast_tensors(*(a.to(dtype) for a in angles))
    device = alpha.device
    if l == 0:
        return torch.ones(alpha.shape + (1, 1), dtype=dtype, device=device)
    m = torch.arange(-l, l + 1, dtype=dtype, device=device)
    J = _j_tensor(l, dtype, device)
    M = J @ _rot_y_left(beta, J.t().expand(beta.shape + J.shape), m)
    return _rot_y_right(_rot_y_left(alpha, M, m), gamma, m)
