"""``equitp.ops.accumulate``: the sparse (Clebsch–Gordan) contraction as a differentiable torch op.

Two operators are registered with :mod:`torch.library` in the ``equitp`` namespace; both work on 2-D
operands (leading dimensions flattened into rows) and take the executor name as a string:

* ``equitp::accumulate_fwd(X1, X2, mu, m1, m2, C, output_size, backend) -> out``:
  ``out[r, mu[i]] += X1[r, m1[i]] * X2[r, m2[i]] * C[i]``.
* ``equitp::accumulate_coeff_grad(G, X1, X2, mu, m1, m2, backend) -> grad_C``:
  ``grad_C[i] = sum_r G[r, mu[i]] * X1[r, m1[i]] * X2[r, m2[i]]``.

Both are slots of one trilinear form ``T(G, X1, X2; C)``, so every gradient is again one of the two ops with the
index arrays permuted (the gradient of ``X1`` is ``accumulate_fwd(G, X2, m1, mu, m2, C, M1)``, ...). The autograd
formulas call the registered ops themselves, hence double and higher backward work, also under
``torch.compile``.

Backend registry (shared with the other ops of equitp): :data:`BACKEND_DEVICES` maps a backend name to the
device types it runs on, :data:`DEFAULT_BACKEND` maps a device type to the backend chosen by
``backend=None``, and :func:`_resolve_backend` applies both with clear errors.
"""

import functools
import math

import numpy as np
import torch
from torch import Tensor

from equitp.descriptors._accumulate import SparseAccumulation
from equitp.executors.cpu import _accumulate as _cpu
from equitp.executors.reference import _accumulate as _reference
from equitp.ops._eager import eager_inference

__all__ = ["accumulate"]

#: Backend name -> device types it can run on (``None``: every device torch supports).
BACKEND_DEVICES: dict = {"reference": None, "cpu": ("cpu",)}
#: Device type -> backend chosen by ``backend=None``; device types not listed fall back to ``"reference"``.
DEFAULT_BACKEND: dict = {"cpu": "cpu"}

_EXECUTORS = {"reference": _reference, "cpu": _cpu}
_FLOAT_DTYPES = (torch.float32, torch.float64)
_INDEX_DTYPES = (torch.int32, torch.int64)


def _resolve_backend(name, device, *, backends: dict = None, defaults: dict = None) -> str:
    """Validates a backend name for tensors on ``device``, or picks the default one.

    Args:
        name: ``None`` (choose for ``device``) or a backend name (a key of ``backends``).
        device: the ``torch.device`` of the operands.
        backends: name -> device types (``None`` = any); defaults to :data:`BACKEND_DEVICES`.
        defaults: device type -> default name; defaults to :data:`DEFAULT_BACKEND` (else ``"reference"``).

    Returns:
        The backend name to use.

    Raises:
        TypeError: ``name`` is neither ``None`` nor a string.
        ValueError: unknown name (the message lists the valid ones), or a backend that cannot run on
            ``device`` (e.g. ``"cpu"`` with CUDA tensors).
    """
    backends = BACKEND_DEVICES if backends is None else backends
    defaults = DEFAULT_BACKEND if defaults is None else defaults
    device = torch.device(device)
    if name is None:
        return defaults.get(device.type, "reference")
    if not isinstance(name, str):
        raise TypeError(f"backend must be None or a string, got {type(name).__name__} {name!r}")
    if name not in backends:
        raise ValueError(f"unknown backend {name!r}; valid backends are {sorted(backends)} (or None for automatic)")
    device_types = backends[name]
    if device_types is not None and device.type not in device_types:
        raise ValueError(
            f"backend {name!r} runs on {', '.join(device_types)} tensors only, got tensors on {device}; "
            f"use backend=None to choose automatically"
        )
    return name


# -- descriptors from index tensors (cached) -----------------------------------------------------------------
def _index_bytes(t: Tensor) -> bytes:
    return t.detach().to(device="cpu", dtype=torch.int64).contiguous().numpy().tobytes()


@functools.lru_cache(maxsize=1024)
def _cached_descriptor(mu: bytes, m1: bytes, m2: bytes, M1: int, M2: int, output_size: int) -> SparseAccumulation:
    return SparseAccumulation(
        m1=np.frombuffer(m1, dtype=np.int64),
        m2=np.frombuffer(m2, dtype=np.int64),
        mu=np.frombuffer(mu, dtype=np.int64),
        M1=M1,
        M2=M2,
        output_size=output_size,
    )


def _descriptor(mu: Tensor, m1: Tensor, m2: Tensor, M1: int, M2: int, output_size: int) -> SparseAccumulation:
    """The descriptor of an index triple; validates the index ranges (ValueError) on first use."""
    return _cached_descriptor(_index_bytes(mu), _index_bytes(m1), _index_bytes(m2), int(M1), int(M2), int(output_size))


# -- the registered operators --------------------------------------------------------------------------------
def _accumulate_direct(X1, X2, mu, m1, m2, C, output_size: int, backend: str) -> Tensor:
    descriptor = _descriptor(mu, m1, m2, X1.shape[1], X2.shape[1], output_size)
    return _EXECUTORS[backend].accumulate(descriptor, X1, X2, C)


@torch.library.custom_op("equitp::accumulate_fwd", mutates_args=())
def _accumulate_fwd(
    X1: Tensor, X2: Tensor, mu: Tensor, m1: Tensor, m2: Tensor, C: Tensor, output_size: int, backend: str
) -> Tensor:
    return _accumulate_direct(X1, X2, mu, m1, m2, C, output_size, backend)


@_accumulate_fwd.register_fake
def _accumulate_fwd_fake(X1, X2, mu, m1, m2, C, output_size, backend):
    return X1.new_empty((X1.shape[0], output_size))


def _accumulate_fwd_setup(ctx, inputs, output):
    X1, X2, mu, m1, m2, C, output_size, backend = inputs
    ctx.save_for_backward(X1, X2, mu, m1, m2, C)
    ctx.backend = backend


def _accumulate_fwd_backward(ctx, grad):
    X1, X2, mu, m1, m2, C = ctx.saved_tensors
    backend = ctx.backend
    grad_X1 = grad_X2 = grad_C = None
    if ctx.needs_input_grad[0]:  # roles (out, X2) -> (X1, X2): contract G with X2 into the m1 slots
        grad_X1 = _accumulate_fwd(grad, X2, m1, mu, m2, C, X1.shape[1], backend)
    if ctx.needs_input_grad[1]:  # roles (X1, out) -> (X1, X2)
        grad_X2 = _accumulate_fwd(X1, grad, m2, m1, mu, C, X2.shape[1], backend)
    if ctx.needs_input_grad[5]:
        grad_C = _accumulate_coeff_grad(grad, X1, X2, mu, m1, m2, backend)
    return grad_X1, grad_X2, None, None, None, grad_C, None, None


_accumulate_fwd.register_autograd(_accumulate_fwd_backward, setup_context=_accumulate_fwd_setup)


@torch.library.custom_op("equitp::accumulate_coeff_grad", mutates_args=())
def _accumulate_coeff_grad(
    G: Tensor, X1: Tensor, X2: Tensor, mu: Tensor, m1: Tensor, m2: Tensor, backend: str
) -> Tensor:
    descriptor = _descriptor(mu, m1, m2, X1.shape[1], X2.shape[1], G.shape[1])
    return _EXECUTORS[backend].accumulate_coefficient_grad(descriptor, G, X1, X2)


@_accumulate_coeff_grad.register_fake
def _accumulate_coeff_grad_fake(G, X1, X2, mu, m1, m2, backend):
    return G.new_empty((mu.shape[0],))


def _accumulate_coeff_grad_setup(ctx, inputs, output):
    G, X1, X2, mu, m1, m2, backend = inputs
    ctx.save_for_backward(G, X1, X2, mu, m1, m2)
    ctx.backend = backend


def _accumulate_coeff_grad_backward(ctx, grad):
    G, X1, X2, mu, m1, m2 = ctx.saved_tensors
    backend = ctx.backend
    grad_G = grad_X1 = grad_X2 = None
    if ctx.needs_input_grad[0]:
        grad_G = _accumulate_fwd(X1, X2, mu, m1, m2, grad, G.shape[1], backend)
    if ctx.needs_input_grad[1]:
        grad_X1 = _accumulate_fwd(G, X2, m1, mu, m2, grad, X1.shape[1], backend)
    if ctx.needs_input_grad[2]:
        grad_X2 = _accumulate_fwd(X1, G, m2, m1, mu, grad, X2.shape[1], backend)
    return grad_G, grad_X1, grad_X2, None, None, None, None


_accumulate_coeff_grad.register_autograd(_accumulate_coeff_grad_backward, setup_context=_accumulate_coeff_grad_setup)


# -- public entry point ---------------------------------------------------------------------------------------
def _check_tensor(value, name: str) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")


def _check_index(value, name: str, device: torch.device) -> None:
    _check_tensor(value, name)
    if value.dtype not in _INDEX_DTYPES:
        raise TypeError(f"{name} must have dtype int64 or int32, got {value.dtype}")
    if value.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(value.shape)}")
    if value.device != device:
        raise ValueError(f"{name} must be on the same device as X1 ({device}), got {value.device}")


def _validate(X1, X2, mu, output_size, m1, m2, C):
    _check_tensor(X1, "X1")
    _check_tensor(X2, "X2")
    for name, x in (("X1", X1), ("X2", X2)):
        if x.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must have dtype float32 or float64, got {x.dtype}")
        if x.ndim < 1:
            raise ValueError(f"{name} must have at least 1 dimension (..., M), got a 0-d tensor")
    if X2.dtype != X1.dtype:
        raise TypeError(f"X1 and X2 must have the same dtype, got X1 {X1.dtype} and X2 {X2.dtype}")
    device = X1.device
    if X2.device != device:
        raise ValueError(f"X1 and X2 must be on the same device, got X1 on {device} and X2 on {X2.device}")
    _check_tensor(C, "C")
    if C.dtype != X1.dtype:
        raise TypeError(f"C must have the dtype of X1 and X2 ({X1.dtype}), got {C.dtype}")
    if C.ndim != 1:
        raise ValueError(f"C must be 1-D, got shape {tuple(C.shape)}")
    if C.device != device:
        raise ValueError(f"C must be on the same device as X1 ({device}), got {C.device}")
    for name, index in (("mu", mu), ("m1", m1), ("m2", m2)):
        _check_index(index, name, device)
        if index.shape[0] != C.shape[0]:
            raise ValueError(f"{name} must have the length of C ({C.shape[0]}), got {index.shape[0]}")
    if isinstance(output_size, bool) or not isinstance(output_size, (int, np.integer, torch.SymInt)):
        raise TypeError(f"output_size must be an int, got {type(output_size).__name__} {output_size!r}")
    if output_size < 0:
        raise ValueError(f"output_size must be >= 0, got {output_size}")
    try:
        leading = torch.broadcast_shapes(X1.shape[:-1], X2.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"the leading dimensions of X1 {tuple(X1.shape[:-1])} and X2 {tuple(X2.shape[:-1])} "
            f"are not broadcastable"
        ) from None
    return tuple(leading)


def accumulate(
    X1: Tensor,
    X2: Tensor,
    mu: Tensor,
    output_size: int,
    m1: Tensor,
    m2: Tensor,
    C: Tensor,
    backend: str = None,
) -> Tensor:
    """Sparse accumulation: ``out[..., mu[i]] += X1[..., m1[i]] * X2[..., m2[i]] * C[i]`` for every ``i``.

    This is one iteration of a Clebsch–Gordan product written as a sparse bilinear map (the operation of
    lab-cosmo's ``sparse_accumulation``), generalised to any leading dimensions, unsorted ``mu`` and
    higher-order gradients.

    Args:
        X1: ``(..., M1)`` float32 or float64 tensor.
        X2: ``(..., M2)`` tensor of the same dtype and device. The leading dimensions of ``X1`` and ``X2``
            broadcast against each other (standard torch broadcasting).
        mu: ``(nnz,)`` int64 or int32 output indices, ``0 <= mu < output_size``, any order.
        output_size: size of the last dimension of the result (``>= 0``).
        m1: ``(nnz,)`` int64 or int32 indices into ``X1``, ``0 <= m1 < M1``.
        m2: ``(nnz,)`` int64 or int32 indices into ``X2``, ``0 <= m2 < M2``.
        C: ``(nnz,)`` coefficients, dtype of ``X1``.
        backend: ``None`` (default: ``"cpu"`` for CPU tensors, ``"reference"`` elsewhere), ``"cpu"`` (the
            multithreaded numba kernel; CPU tensors only) or ``"reference"`` (pure torch, every device).

    Returns:
        ``(*broadcast(X1.shape[:-1], X2.shape[:-1]), output_size)`` tensor; zeros where no entry writes. NaN and
        inf in the inputs propagate to the outputs they contribute to, in every backend.

    Differentiable with respect to ``X1``, ``X2`` and ``C``, to any order: each gradient is the same
    contraction with the roles of the operands permuted. Registered as the ``torch.library`` ops
    ``equitp::accumulate_fwd`` and ``equitp::accumulate_coeff_grad``, so it works under ``torch.compile``.

    Raises:
        TypeError: a non-tensor argument, a non-float ``X1``/``X2``, mixed float dtypes, an index tensor that
            is not int32/int64, or a non-int ``output_size``.
        ValueError: wrong number of dimensions, length mismatch between ``mu``, ``m1``, ``m2`` and ``C``,
            tensors on different devices, non-broadcastable leading dimensions, negative ``output_size``,
            out-of-range indices, or an unknown / unsuitable ``backend``.

    Example:
        >>> X1 = torch.tensor([[1.0, 2.0]])
        >>> X2 = torch.tensor([[3.0, 4.0]])
        >>> mu, m1, m2 = torch.tensor([1, 0, 1]), torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1])
        >>> accumulate(X1, X2, mu, 2, m1, m2, torch.tensor([1.0, 1.0, 0.5]))
        tensor([[6., 7.]])
    """
    leading = _validate(X1, X2, mu, output_size, m1, m2, C)
    backend = _resolve_backend(backend, X1.device)
    output_size = int(output_size) if isinstance(output_size, np.integer) else output_size
    M1, M2 = X1.shape[-1], X2.shape[-1]
    rows = math.prod(leading)
    x1 = X1.expand(*leading, M1).reshape(rows, M1)
    x2 = X2.expand(*leading, M2).reshape(rows, M2)
    mu, m1, m2 = (index.to(torch.int64) for index in (mu, m1, m2))
    run = _accumulate_direct if eager_inference(x1, x2, mu, m1, m2, C) else _accumulate_fwd
    out = run(x1, x2, mu, m1, m2, C, output_size, backend)
    return out.reshape(*leading, output_size)
