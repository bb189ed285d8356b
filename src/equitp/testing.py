"""Test kit: check that a function of irreps-valued tensors is O(3)-equivariant, and draw random irreps.

Example:
    >>> import torch, equitp
    >>> tp = equitp.FullyConnectedTensorProduct("2x0e+1x1o", "1x1o", "1x0e+1x1e")
    >>> errors = assert_equivariant(tp, irreps_in=[tp.irreps_in1, tp.irreps_in2], irreps_out=tp.irreps_out)
"""

from __future__ import annotations

import random
from typing import Callable, Optional, Sequence

import torch

from .irreps import Irreps, as_irreps

__all__ = ["assert_equivariant", "equivariance_error", "random_irreps"]


def _default_tol(dtype: torch.dtype) -> float:
    return {torch.float32: 1e-3, torch.float64: 1e-9}.get(dtype, 1e-3)


def equivariance_error(
    func: Callable,
    irreps_in: Sequence,
    irreps_out,
    batch: int = 5,
    dtype: torch.dtype = torch.float64,
    device=None,
    parity: bool = True,
    ntrials: int = 2,
    generator: Optional[torch.Generator] = None,
):
    """Largest ``|f(D_in(g) x) - D_out(g) f(x)|`` over random rotations (and rotoinversions when ``parity``).

    Args:
        func: the function, called as ``func(*xs)`` with one tensor ``(batch, irreps.dim)`` per entry of
            ``irreps_in`` (layout ``mul_ir``).
        irreps_in: the irreps of each argument.
        irreps_out: the irreps of the output (a single tensor).
        batch: number of random items.
        dtype, device: of the random inputs.
        parity: also test ``-R`` (rotation composed with inversion).
        ntrials: random group elements per kind.

    Returns:
        A dict ``{"rotation": err, "rotoinversion": err}`` of max absolute errors, relative to the output scale.
    """
    from .so3 import rand_matrix

    irreps_in = [as_irreps(ir, f"irreps_in[{i}]") for i, ir in enumerate(irreps_in)]
    irreps_out = as_irreps(irreps_out, "irreps_out")
    xs = [torch.randn(batch, ir.dim, dtype=dtype, device=device, generator=generator) for ir in irreps_in]
    out = func(*xs)
    scale = out.detach().abs().max().clamp_min(1e-12)
    errors = {}
    kinds = [("rotation", 1.0)] + ([("rotoinversion", -1.0)] if parity else [])
    for name, sign in kinds:
        err = 0.0
        for _ in range(ntrials):
            R = sign * rand_matrix(dtype=dtype, device=device)
            rot_x = [x @ ir.D_from_matrix(R).to(dtype=dtype, device=device).T for x, ir in zip(xs, irreps_in)]
            lhs = func(*rot_x)
            rhs = out @ irreps_out.D_from_matrix(R).to(dtype=dtype, device=device).T
            err = max(err, ((lhs - rhs).abs().max() / scale).item())
        errors[name] = err
    return errors


def assert_equivariant(
    func: Callable,
    irreps_in: Sequence,
    irreps_out,
    tolerance: Optional[float] = None,
    **kwargs,
):
    """Assert that ``func`` is equivariant under random rotations and rotoinversions (see `equivariance_error`).

    Returns:
        The error dict; raises ``AssertionError`` naming the failing transformation otherwise.
    """
    dtype = kwargs.get("dtype", torch.float64)
    tol = _default_tol(dtype) if tolerance is None else tolerance
    errors = equivariance_error(func, irreps_in, irreps_out, **kwargs)
    bad = {k: v for k, v in errors.items() if not v <= tol}
    if bad:
        raise AssertionError(f"not equivariant: relative errors {bad} exceed tolerance {tol:g}")
    return errors


def random_irreps(
    n: int = 1,
    lmax: int = 3,
    mul_max: int = 4,
    blocks_max: int = 4,
    allow_empty: bool = False,
    seed: Optional[int] = None,
):
    """Random `Irreps` for property tests.

    Args:
        n: how many (returns one `Irreps` when ``n == 1``, else a list).
        lmax: largest degree.
        mul_max: largest multiplicity.
        blocks_max: largest number of blocks.
        allow_empty: allow an empty `Irreps`.
        seed: for reproducibility.
    """
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        nb = rng.randint(0 if allow_empty else 1, blocks_max)
        out.append(
            Irreps([(rng.randint(1, mul_max), (rng.randint(0, lmax), rng.choice((1, -1)))) for _ in range(nb)])
        )
    return out[0] if n == 1 else out
