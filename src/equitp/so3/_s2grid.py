r"""Quadrature grids on the sphere and the separable spherical-harmonic transforms on them.

The grid is a product grid in e3nn's angles: ``res_beta`` Gauss-Legendre nodes in ``cos(beta)`` (``beta`` is the polar
angle, from the +y axis) times ``res_alpha`` uniform azimuths ``alpha_j = 2 pi j / res_alpha``; the point of
``(beta_i, alpha_j)`` is ``angles_to_xyz(alpha_j, beta_i) = (sin b sin a, cos b, sin b cos a)``.
The rule :math:`\int_{S^2} f \approx \sum_{ij} w_i f(\beta_i, \alpha_j)` is exact for every band-limited ``f`` of
degree ``<= min(2 res_beta - 1, res_alpha - 1)``.

Consequently ``grid_to_sh(sh_to_grid(x))`` returns ``x`` exactly (to rounding) when ``res_beta >= lmax + 1`` and
``res_alpha >= 2 lmax + 1``, and the product of two signals of degrees ``L1`` and ``L2`` is projected exactly onto
degree ``L3`` (the Gaunt tensor product) when ``res_beta >= ceil((L1 + L2 + L3 + 1) / 2)`` and
``res_alpha >= L1 + L2 + L3 + 1``.

The transforms are separable: coefficients ``(..., (lmax+1)^2)`` are first contracted over ``l`` with a Legendre table
``(2 lmax + 1, res_beta, lmax + 1)`` (batched over ``m``), then over ``m`` with an azimuth table
``(2 lmax + 1, res_alpha)``: ``O(lmax^3)`` per signal.
"""

from __future__ import annotations

import functools
import math
from typing import Tuple

import numpy as np
import torch

from ._checks import cacheable, check_degree, check_float_tensor, resolve_dtype_device

__all__ = ["s2_grid", "sh_to_grid", "grid_to_sh"]

_NORMALIZATIONS = ("integral", "component", "norm")


@functools.lru_cache(maxsize=None)
def _gauss_legendre(n: int) -> Tuple[np.ndarray, np.ndarray]:
    """Nodes (descending, so that beta ascends) and weights of the n-point Gauss-Legendre rule on [-1, 1]."""
    x, w = np.polynomial.legendre.leggauss(n)
    x, w = x[::-1].copy(), w[::-1].copy()
    x.flags.writeable = False
    w.flags.writeable = False
    return x, w


def _check_res(res, name: str) -> int:
    res = check_degree(res, name)
    if res < 1:
        raise ValueError(f"{name} must be >= 1, got {res}")
    return res


def s2_grid(res_beta: int, res_alpha: int, dtype=None, device=None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gauss-Legendre x uniform product grid on the sphere.

    Args:
        res_beta: number of polar nodes (Gauss-Legendre in ``cos(beta)``).
        res_alpha: number of azimuthal nodes (uniform in ``[0, 2 pi)``).
        dtype, device: of the returned tensors.

    Returns:
        ``(beta, alpha, weight)`` of shapes ``(res_beta,)``, ``(res_alpha,)``, ``(res_beta,)``: ``beta`` ascending in
        ``(0, pi)``; ``weight[i]`` is the quadrature weight of every point of ring ``i`` (it includes the azimuthal
        factor ``2 pi / res_alpha``), so ``weight.sum() * res_alpha == 4 pi``.

    Examples:
        >>> beta, alpha, w = s2_grid(4, 7, dtype=torch.float64)
        >>> round(float(w.sum() * 7), 12) == round(4 * math.pi, 12)
        True
    """
    res_beta, res_alpha = _check_res(res_beta, "res_beta"), _check_res(res_alpha, "res_alpha")
    dtype, device = resolve_dtype_device(dtype, device)
    x, w = _gauss_legendre(res_beta)
    beta = torch.as_tensor(np.arccos(x), dtype=dtype, device=device)
    alpha = torch.arange(res_alpha, dtype=torch.float64).mul(2 * math.pi / res_alpha).to(dtype=dtype, device=device)
    weight = torch.as_tensor(w * (2 * math.pi / res_alpha), dtype=dtype, device=device)
    return beta, alpha, weight


@functools.lru_cache(maxsize=64)
def _tables_np(lmax: int, res_beta: int, res_alpha: int, normalization: str):
    """Synthesis and analysis tables in float64.

    Returns ``(P, P_analysis, A, A_analysis, pack, unpack)``: ``P[m + lmax, i, l]`` the ``beta``-part of ``Y_lm`` on
    ring ``i`` (zero for ``l < |m|``); ``P_analysis`` the same times the Gauss-Legendre weight and divided by
    ``int Y_lm^2``; ``A[m + lmax, j]`` the azimuthal factor and ``A_analysis`` the same times ``2 pi / res_alpha``;
    ``pack`` (``(2lmax+1) * (lmax+1)``) gathers coefficients into the
    ``(m, l)`` array (invalid slots point anywhere, ``P`` is zero there); ``unpack`` (``(lmax+1)^2``) gathers back.
    """
    from ._spherical_harmonics import _legendre_rows_numpy

    x, w = _gauss_legendre(res_beta)
    sin_beta = np.sqrt(np.clip(1 - x * x, 0, None))
    rows = _legendre_rows_numpy(lmax, x, normalization)  # rows[l]: (l+1, res_beta), m = 0..l
    L = lmax
    P = np.zeros((2 * L + 1, res_beta, L + 1))
    for l in range(L + 1):
        for m in range(-l, l + 1):
            am = abs(m)
            P[m + L, :, l] = rows[l][am] * sin_beta**am * (math.sqrt(2.0) if m else 1.0)
    # int Y_lm^2 over the sphere for the chosen normalisation
    if normalization == "integral":
        sq = np.ones(L + 1)
    elif normalization == "component":
        sq = np.full(L + 1, 4 * math.pi)
    else:
        sq = np.array([4 * math.pi / (2 * l + 1) for l in range(L + 1)])
    P_an = P * w[None, :, None] / sq[None, None, :]
    alpha = np.arange(res_alpha) * (2 * math.pi / res_alpha)
    A = np.zeros((2 * L + 1, res_alpha))
    for m in range(-L, L + 1):
        A[m + L] = np.cos(m * alpha) if m > 0 else (np.sin(-m * alpha) if m < 0 else 1.0)
    A_an = A * (2 * math.pi / res_alpha)
    pack = np.zeros((2 * L + 1, L + 1), dtype=np.int64)
    for m in range(-L, L + 1):
        for l in range(abs(m), L + 1):
            pack[m + L, l] = l * l + l + m
    unpack = np.array([(m + L) * (L + 1) + l for l in range(L + 1) for m in range(-l, l + 1)], dtype=np.int64)
    return P, P_an, A, A_an, pack.reshape(-1), unpack


_TABLE_CACHE: dict = {}


@torch.compiler.assume_constant_result  # constant tables: evaluated eagerly under torch.compile / export
def _tables(lmax, res_beta, res_alpha, normalization, dtype, device):
    key = (lmax, res_beta, res_alpha, normalization, dtype, device)
    hit = _TABLE_CACHE.get(key)
    if hit is None:
        P, P_an, A, A_an, pack, unpack = _tables_np(lmax, res_beta, res_alpha, normalization)
        hit = tuple(torch.as_tensor(t, dtype=dtype, device=device) for t in (P, P_an, A, A_an)) + tuple(
            torch.as_tensor(t, device=device) for t in (pack, unpack)
        )
        if cacheable(*hit):
            if len(_TABLE_CACHE) > 64:
                _TABLE_CACHE.clear()
            _TABLE_CACHE[key] = hit
    return hit


def _check_normalization(normalization):
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")


def sh_to_grid(x: torch.Tensor, res_beta: int, res_alpha: int, normalization: str = "integral") -> torch.Tensor:
    """Evaluate ``f = sum_lm x_lm Y_lm`` on the `s2_grid` points.

    Args:
        x: coefficients of shape ``(..., (lmax+1)^2)`` for degrees ``0..lmax`` in order, ``m = -l..l`` within each.
        res_beta, res_alpha: grid resolution (see `s2_grid`).
        normalization: normalisation of the ``Y_lm`` (as in `spherical_harmonics`), default ``"integral"``.

    Returns:
        Grid values of shape ``(..., res_beta, res_alpha)``, ``[..., i, j]`` at ``(beta_i, alpha_j)``.
    """
    x = check_float_tensor(x, "x")
    _check_normalization(normalization)
    res_beta, res_alpha = _check_res(res_beta, "res_beta"), _check_res(res_alpha, "res_alpha")
    if x.dim() == 0 or math.isqrt(x.shape[-1]) ** 2 != x.shape[-1] or x.shape[-1] == 0:
        raise ValueError(f"x must have shape (..., (lmax+1)^2), got {tuple(x.shape)}")
    lmax = math.isqrt(x.shape[-1]) - 1
    P, _, A, _, pack, _ = _tables(lmax, res_beta, res_alpha, normalization, x.dtype, x.device)
    xp = x[..., pack].unflatten(-1, (2 * lmax + 1, lmax + 1))  # (..., m, l)
    F = torch.einsum("...ml,mil->...mi", xp, P)  # (..., m, beta)
    return torch.einsum("...mi,mj->...ij", F, A)


def grid_to_sh(f: torch.Tensor, lmax: int, normalization: str = "integral") -> torch.Tensor:
    """Project grid values onto the spherical harmonics of degrees ``0..lmax`` by quadrature.

    Inverse of `sh_to_grid` for signals of degree ``<= lmax`` when ``res_beta >= lmax + 1`` and
    ``res_alpha >= 2 lmax + 1``; in general the exact projection of any signal of degree ``<= D`` when
    ``res_beta >= ceil((D + lmax + 1) / 2)`` and ``res_alpha >= D + lmax + 1``.

    Args:
        f: grid values ``(..., res_beta, res_alpha)`` on the `s2_grid` points.
        lmax: largest degree of the output.
        normalization: normalisation of the ``Y_lm`` the coefficients refer to (default ``"integral"``).

    Returns:
        Coefficients of shape ``(..., (lmax+1)^2)``.
    """
    f = check_float_tensor(f, "f")
    _check_normalization(normalization)
    lmax = check_degree(lmax, "lmax")
    if f.dim() < 2:
        raise ValueError(f"f must have shape (..., res_beta, res_alpha), got {tuple(f.shape)}")
    res_beta, res_alpha = f.shape[-2], f.shape[-1]
    _, P_an, _, A_an, _, unpack = _tables(lmax, res_beta, res_alpha, normalization, f.dtype, f.device)
    G = torch.einsum("...ij,mj->...mi", f, A_an)  # (..., m, beta)
    X = torch.einsum("...mi,mil->...ml", G, P_an)  # (..., m, l)
    return X.flatten(-2)[..., unpack]
