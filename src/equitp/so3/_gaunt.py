r"""Gaunt coefficients: integrals of products of three real spherical harmonics.

:math:`G_{m_1 m_2 m_3} = \int_{S^2} Y_{l_1 m_1} Y_{l_2 m_2} Y_{l_3 m_3}\, d\Omega` with e3nn's real harmonics in
``"integral"`` normalisation. ``G`` is an invariant tensor, hence a multiple of the 3j tensor ``C``
(`wigner_3j`, norm 1). The multiple is ``<G, C> = 4 pi sum_m C_m Y_m1(x) Y_m2(x) Y_m3(x)`` (an invariant, so any
point ``x`` will do); at the pole ``x = e_y`` only ``m = 0`` survives and :math:`Y_{l0}(e_y) = \sqrt{(2l+1)/4\pi}`:

.. math:: G = \sqrt{\frac{(2l_1+1)(2l_2+1)(2l_3+1)}{4\pi}}\; C_{000}\; C.

``C_000`` vanishes when ``l1 + l2 + l3`` is odd, so does ``G``. The value is exact up to float64 rounding.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np
import torch

from ._checks import check_degree, resolve_dtype_device
from ._exact import real_wigner_3j_exact, surd_mul, surd_sqrt, surd_to_float

__all__ = ["gaunt"]


@functools.lru_cache(maxsize=None)
def _gaunt_table(l1: int, l2: int, l3: int) -> np.ndarray:
    out = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1), dtype=np.float64)
    if not abs(l1 - l2) <= l3 <= l1 + l2 or (l1 + l2 + l3) % 2:
        out.flags.writeable = False
        return out
    C = real_wigner_3j_exact(l1, l2, l3)
    factor = surd_mul(C[(0, 0, 0)], surd_sqrt(Fraction((2 * l1 + 1) * (2 * l2 + 1) * (2 * l3 + 1))))
    inv_sqrt_4pi = 1 / math.sqrt(4 * math.pi)
    for (m1, m2, m3), v in C.items():
        out[m1 + l1, m2 + l2, m3 + l3] = surd_to_float(surd_mul(factor, v)) * inv_sqrt_4pi
    out.flags.writeable = False
    return out


def gaunt(l1: int, l2: int, l3: int, dtype=None, device=None) -> torch.Tensor:
    r"""Gaunt coefficients :math:`\int_{S^2} Y_{l_1 m_1} Y_{l_2 m_2} Y_{l_3 m_3}` of e3nn's real harmonics.

    The harmonics are in ``"integral"`` normalisation (orthonormal on the sphere), so ``gaunt`` gives the coefficients
    of the pointwise product: :math:`Y_{l_1 m_1} Y_{l_2 m_2} = \sum_{l_3 m_3} G_{m_1 m_2 m_3} Y_{l_3 m_3}`.

    Args:
        l1, l2, l3: non-negative integer degrees. Any triple is accepted; the result is zero unless
            ``|l1 - l2| <= l3 <= l1 + l2`` and ``l1 + l2 + l3`` is even.
        dtype, device: of the result (torch defaults when None).

    Returns:
        A new tensor of shape ``(2 l1 + 1, 2 l2 + 1, 2 l3 + 1)``, indices ``m = -l..l``.

    Examples:
        >>> G = gaunt(0, 1, 1, dtype=torch.float64)
        >>> torch.allclose(G[0], torch.eye(3, dtype=torch.float64) / (4 * math.pi) ** 0.5)
        True
    """
    l1, l2, l3 = check_degree(l1, "l1"), check_degree(l2, "l2"), check_degree(l3, "l3")
    dtype, device = resolve_dtype_device(dtype, device)
    return _gaunt_tensor(l1, l2, l3, dtype, device)


@torch.compiler.assume_constant_result
def _gaunt_tensor(l1: int, l2: int, l3: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(_gaunt_table(l1, l2, l3), dtype=dtype, device=device)
