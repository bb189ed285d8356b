r"""Exact Clebsch-Gordan coefficients and their real form, in the field of sums of square roots of rationals.

A number is stored as ``{k: c}`` meaning :math:`\sum_k c_k \sqrt{k}` with ``k`` a square-free positive integer and
``c_k`` a non-zero ``Fraction``. Complex Clebsch-Gordan coefficients (Condon-Shortley) are of the form
:math:`S \sqrt{P}` with rational ``S`` and ``P`` (Racah's formula), and the complex-to-real change of basis only
adds factors :math:`1/\sqrt{2}`, so the real coefficients are computed with no rounding at all; they are converted
to float64 once, with a correctly rounded square root.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Dict, Tuple

import numpy as np

__all__: list = []

Surd = Dict[int, Fraction]


@functools.lru_cache(maxsize=None)
def _factorial(n: int) -> int:
    return math.factorial(n)


@functools.lru_cache(maxsize=4096)
def _square_free_decomposition(n: int) -> Tuple[int, int]:
    """``n = s**2 * k`` with ``k`` square-free; returns ``(s, k)``. ``n`` has only small prime factors here."""
    s, k = 1, 1
    p = 2
    while p * p <= n:
        if n % p == 0:
            e = 0
            while n % p == 0:
                n //= p
                e += 1
            s *= p ** (e // 2)
            if e % 2:
                k *= p
        p += 1 if p == 2 else 2
    return s, k * n


def surd_sqrt(q: Fraction) -> Surd:
    """Exact square root of a non-negative rational."""
    if q < 0:  # pragma: no cover - internal
        raise ValueError("square root of a negative rational")
    if q == 0:
        return {}
    num, den = q.numerator, q.denominator
    s, k = _square_free_decomposition(num * den)
    return {k: Fraction(s, den)}


def surd_mul(x: Surd, y: Surd) -> Surd:
    out: Surd = {}
    for k1, c1 in x.items():
        for k2, c2 in y.items():
            g = math.gcd(k1, k2)
            k = (k1 // g) * (k2 // g)
            out[k] = out.get(k, 0) + c1 * c2 * g
    return {k: c for k, c in out.items() if c != 0}


def surd_scale(x: Surd, c: Fraction) -> Surd:
    return {k: v * c for k, v in x.items()} if c != 0 else {}


def surd_to_float(x: Surd) -> float:
    """Round to float64: each term as ``sign(c) sqrt(c^2 k)`` (correctly rounded), summed with ``math.fsum``."""
    terms = []
    for k, c in x.items():
        v = math.sqrt(c * c * k)  # Fraction -> float is correctly rounded, then one correctly rounded sqrt
        terms.append(v if c > 0 else -v)
    return math.fsum(terms)


def complex_clebsch_gordan(j1: int, m1: int, j2: int, m2: int, j3: int, m3: int) -> Surd:
    r"""Exact :math:`\langle j_1 m_1 j_2 m_2 | j_3 m_3 \rangle` (Condon-Shortley phase), by Racah's formula."""
    if m1 + m2 != m3 or abs(m1) > j1 or abs(m2) > j2 or abs(m3) > j3:
        return {}
    if not abs(j1 - j2) <= j3 <= j1 + j2:
        return {}
    f = _factorial
    prefactor = Fraction(
        (2 * j3 + 1) * f(j3 + j1 - j2) * f(j3 - j1 + j2) * f(j1 + j2 - j3)
        * f(j3 + m3) * f(j3 - m3) * f(j1 - m1) * f(j1 + m1) * f(j2 - m2) * f(j2 + m2),
        f(j1 + j2 + j3 + 1),
    )
    kmin = max(0, j2 - j3 - m1, j1 - j3 + m2)
    kmax = min(j1 + j2 - j3, j1 - m1, j2 + m2)
    # Common denominator: every factorial at the largest argument it takes over k (a! divides b! for a <= b).
    common = (
        f(kmax) * f(j1 + j2 - j3 - kmin) * f(j1 - m1 - kmin) * f(j2 + m2 - kmin)
        * f(j3 - j2 + m1 + kmax) * f(j3 - j1 - m2 + kmax)
    )
    numerator = 0
    for k in range(kmin, kmax + 1):
        den = f(k) * f(j1 + j2 - j3 - k) * f(j1 - m1 - k) * f(j2 + m2 - k) * f(j3 - j2 + m1 + k) * f(j3 - j1 - m2 + k)
        numerator += -(common // den) if k % 2 else common // den
    if numerator == 0:
        return {}
    total = Fraction(numerator, common)
    return surd_scale(surd_sqrt(prefactor), total)


@functools.lru_cache(maxsize=None)
def _real_from_complex(l: int, m: int):  # noqa: E741
    r"""Coefficients of the complex basis vector ``|l m>`` on the real basis, without the global phase.

    Following the standard relation between complex and real harmonics:
    ``m < 0``: :math:`(|l,|m|\rangle_r - i |l,-|m|\rangle_r)/\sqrt2`; ``m = 0``: :math:`|l,0\rangle_r`;
    ``m > 0``: :math:`(-1)^m (|l,m\rangle_r + i |l,-m\rangle_r)/\sqrt2`.

    Returns a tuple of ``(mu, (re, im), n)``: real index ``mu``, coefficient ``(re + i im) * 2^(-n/2)``.
    """
    if m == 0:
        return ((0, (1, 0), 0),)
    a = abs(m)
    if m < 0:
        return ((a, (1, 0), 1), (-a, (0, -1), 1))
    s = -1 if m % 2 else 1
    return ((m, (s, 0), 1), (-m, (0, s), 1))


_INV_SQRT2_POWERS = {0: {1: Fraction(1)}, 1: {2: Fraction(1, 2)}, 2: {1: Fraction(1, 2)}, 3: {2: Fraction(1, 4)}}


def real_wigner_3j_exact(l1: int, l2: int, l3: int) -> Dict[Tuple[int, int, int], Surd]:
    r"""Exact non-zero entries of e3nn's real Wigner 3j tensor, keyed by ``(m1, m2, m3)`` with ``m = -l..l``.

    Definition (e3nn 0.6): with ``Q_l`` the unitary change of basis (columns real, rows complex, including the global
    factor ``(-i)^l``), :math:`C = \mathrm{Re} \sum Q_1[a, m_1] Q_2[b, m_2] \overline{Q_3[c, m_3]}
    \langle l_1 a\, l_2 b | l_3 c\rangle / \sqrt{2 l_3 + 1}`, which has Frobenius norm 1.
    """
    # Each real entry (mu1, mu2, mu3) receives contributions from one orbit {(a, b), (-a, -b)} of complex entries,
    # whose coefficients are equal up to the sign <l1 -a l2 -b | l3 -c> = (-1)^(l1+l2-l3) <l1 a l2 b | l3 c>. So the
    # hot loop only accumulates small integers per real entry, times the exact value of the orbit's representative.
    norm = surd_sqrt(Fraction(1, 2 * l3 + 1))
    scale = {n: surd_mul(norm, _INV_SQRT2_POWERS[n]) for n in range(4)}  # 2^(-n/2) / sqrt(2 l3 + 1)
    sym = -1 if (l1 + l2 - l3) % 2 else 1
    terms: Dict[Tuple[int, int], Surd] = {}
    acc: Dict[Tuple[int, int, int], list] = {}  # key -> [representative (a, b), re, im]
    for a in range(-l1, l1 + 1):
        for b in range(-l2, l2 + 1):
            c = a + b
            if abs(c) > l3:
                continue
            rep = max((a, b), (-a, -b))
            term = terms.get(rep)
            if term is None:
                cg = complex_clebsch_gordan(l1, rep[0], l2, rep[1], l3, rep[0] + rep[1])
                term = terms[rep] = surd_mul(cg, scale[(a != 0) + (b != 0) + (c != 0)]) if cg else {}
            if not term:
                continue
            factor = 1 if rep == (a, b) else sym
            for mu1, (r1, i1), _ in _real_from_complex(l1, a):
                for mu2, (r2, i2), _ in _real_from_complex(l2, b):
                    # (r1 + i i1)(r2 + i i2)
                    r12, i12 = r1 * r2 - i1 * i2, r1 * i2 + i1 * r2
                    for mu3, (r3, i3), _ in _real_from_complex(l3, c):
                        # times conj(r3 + i i3)
                        re, im = r12 * r3 + i12 * i3, i12 * r3 - r12 * i3
                        if re == 0 and im == 0:
                            continue
                        slot = acc.get((mu1, mu2, mu3))
                        if slot is None:
                            slot = acc[(mu1, mu2, mu3)] = [rep, 0, 0]
                        elif slot[0] != rep:  # pragma: no cover - impossible by the orbit argument
                            raise AssertionError(f"internal error: two orbits meet at {(mu1, mu2, mu3)}")
                        slot[1] += factor * re
                        slot[2] += factor * im
    # Global phase (-i)^l1 (-i)^l2 conj((-i)^l3) = (-i)^(l1 + l2 - l3); keep the real part.
    phase = (l1 + l2 - l3) % 4
    out: Dict[Tuple[int, int, int], Surd] = {}
    for key, (rep, re, im) in acc.items():
        # phase 0: re + i im; 1: -i (re + i im) = im - i re; 2: -re - i im; 3: i (re + i im) = -im + i re
        real, imag = ((re, im), (im, -re), (-re, -im), (-im, re))[phase]
        if imag:  # pragma: no cover - guaranteed by the (-i)^l convention
            raise AssertionError(f"internal error: non-real 3j entry for {(l1, l2, l3)} at {key}")
        if real:
            out[key] = surd_scale(terms[rep], Fraction(real))
    return out


def real_wigner_3j_array(l1: int, l2: int, l3: int) -> np.ndarray:
    """float64 array ``(2l1+1, 2l2+1, 2l3+1)`` of :func:`real_wigner_3j_exact`, exact zeros kept exact."""
    arr = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1), dtype=np.float64)
    for (m1, m2, m3), v in real_wigner_3j_exact(l1, l2, l3).items():
        arr[m1 + l1, m2 + l2, m3 + l3] = surd_to_float(v)
    return arr
