"""Pure-torch reference executor (the oracle) for the sparse accumulation.

Gathers the rule's columns of ``X1`` and ``X2``, multiplies by ``C`` and scatters into the output with
``index_add_`` (any order of ``mu``, repeated outputs add up). Runs on every device torch supports. Memory:
one ``(N, nnz)`` temporary per call; simple rather than fast.
"""

from __future__ import annotations

import functools

import torch

from equitp.descriptors._accumulate import SparseAccumulation

__all__ = ["accumulate", "accumulate_coefficient_grad"]


@functools.lru_cache(maxsize=1024)
def _index_tensors(descriptor: SparseAccumulation, device: torch.device):
    """The descriptor's ``(mu, m1, m2)`` as int64 tensors on ``device`` (cached per descriptor and device)."""
    arrays = (descriptor.mu, descriptor.m1, descriptor.m2)
    return tuple(torch.tensor(a, dtype=torch.int64, device=device) for a in arrays)


def accumulate(descriptor: SparseAccumulation, X1: torch.Tensor, X2: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """``out[r, mu[i]] += X1[r, m1[i]] * X2[r, m2[i]] * C[i]``.

    Args:
        descriptor: the rule.
        X1: ``(N, M1)`` tensor.
        X2: ``(N, M2)`` tensor, same dtype and device.
        C: ``(nnz,)`` coefficients in the descriptor's entry order.

    Returns:
        ``(N, output_size)`` tensor.
    """
    mu, m1, m2 = _index_tensors(descriptor, X1.device)
    out = X1.new_zeros((X1.shape[0], descriptor.output_size))
    out.index_add_(1, mu, X1[:, m1] * X2[:, m2] * C)
    return out


def accumulate_coefficient_grad(
    descriptor: SparseAccumulation, G: torch.Tensor, X1: torch.Tensor, X2: torch.Tensor
) -> torch.Tensor:
    """``grad_C[i] = sum_r G[r, mu[i]] * X1[r, m1[i]] * X2[r, m2[i]]``.

    Args:
        descriptor: the rule.
        G: ``(N, output_size)`` tensor.
        X1: ``(N, M1)`` tensor.
        X2: ``(N, M2)`` tensor.

    Returns:
        ``(nnz,)`` tensor in the descriptor's entry order.
    """
    mu, m1, m2 = _index_tensors(descriptor, X1.device)
    return (G[:, mu] * X1[:, m1] * X2[:, m2]).sum(dim=0)
