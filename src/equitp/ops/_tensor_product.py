"""``equitp::tp_contract``: the tensor product's one operator, registered with ``torch.library``.

``tp_contract(desc, target, backend, weightless, W, x, y, z)`` returns the gradient of the descriptor's form
``S(W, x, y, z)`` with respect to operand ``target`` (0 weight, 1 in1, 2 in2, 3 out), the other three given.
The tensor product is ``target = 3``. ``S`` is linear in x, y, z, and in W for the weighted paths (``weightless``
says whether the paths without weights, constant in W, are included). The backward of ``tp_contract`` for operand
``k`` is therefore ``tp_contract`` with ``target = k`` and the incoming gradient in the slot of the old target: the
same contraction with roles permuted. Double (and higher) backward come for free.
"""

from __future__ import annotations

import threading
from typing import List, Optional

import torch

from ..descriptors._tensor_product import TensorProductDescriptor
from ._accumulate import BACKEND_DEVICES, _resolve_backend
from ._eager import eager_inference

__all__ = ["tensor_product", "register_descriptor", "BACKENDS"]

BACKENDS = ("reference", "cpu")

_registry: List[TensorProductDescriptor] = []
_index = {}
_lock = threading.Lock()


def register_descriptor(desc: TensorProductDescriptor) -> int:
    """Intern a descriptor and return its integer id (the op's constant argument)."""
    i = desc.__dict__.get("_op_id")
    if i is not None:
        return i
    with _lock:
        i = _index.get(desc)
        if i is None:
            i = len(_registry)
            _registry.append(desc)
            _index[desc] = i
        desc.__dict__["_op_id"] = i
        return i


def resolve_backend(backend: Optional[str], device: torch.device) -> str:
    """Pick an executor name: None chooses the best for ``device``. The tensor-product executors are those of the
    shared backend registry (``ops._accumulate.BACKEND_DEVICES`` / ``DEFAULT_BACKEND``) named in :data:`BACKENDS`."""
    return _resolve_backend(backend, device, backends={b: BACKEND_DEVICES[b] for b in BACKENDS})


def _run(desc_id: int, target: int, backend: str, weightless: bool, ops):
    desc = _registry[desc_id]
    if backend == "cpu":
        from ..executors.cpu._tensor_product import tensor_product_cpu

        ops = [None if o is None else o.contiguous() for o in ops]
        return tensor_product_cpu(desc, target, ops, weightless)
    from ..executors.reference._tensor_product import tensor_product_reference

    return tensor_product_reference(desc, target, ops, weightless)


@torch.library.custom_op("equitp::tp_contract", mutates_args=())
def tp_contract(
    desc_id: int,
    target: int,
    backend: str,
    weightless: bool,
    w: Optional[torch.Tensor],
    x: Optional[torch.Tensor],
    y: Optional[torch.Tensor],
    z: Optional[torch.Tensor],
) -> torch.Tensor:
    return _run(desc_id, target, backend, weightless, [w, x, y, z])


@tp_contract.register_fake
def _(desc_id, target, backend, weightless, w, x, y, z):
    desc = _registry[desc_id]
    ops = [w, x, y, z]
    ref = next(o for t, o in enumerate(ops) if t != 0 and t != target and o is not None)
    n = ref.shape[0]
    if target == 0:
        shape = (n, desc.weight_numel) if w.dim() == 2 else (desc.weight_numel,)
        return ref.new_empty(shape)
    return ref.new_empty((n, desc.operand_dim(target)))


def _setup_context(ctx, inputs, output):
    desc_id, target, backend, weightless, w, x, y, z = inputs
    ctx.desc_id, ctx.target, ctx.backend, ctx.weightless = desc_id, target, backend, weightless
    ctx.w_batched = w is not None and w.dim() == 2
    ctx.save_for_backward(w, x, y, z)


def _contract_grads(desc_id, backend, weightless, t, ops, grad, needs):
    """Gradients for the four operand slots of ``tp_contract(target=t)`` given the incoming ``grad``: for each operand
    ``k``, the same contraction with target ``k`` and ``grad`` in slot ``t``."""
    grads = [None, None, None, None]
    for k in range(4):
        if k == t or ops[k] is None or not needs[k]:
            continue
        args = list(ops)
        args[t] = grad
        if k == 0:
            # the weight slot of a weight-gradient call carries a zero-size marker: 2-D per item, 1-D shared
            args[0] = grad.new_empty((0, 0)) if ops[0].dim() == 2 else grad.new_empty((0,))
        else:
            args[k] = None
        # paths without weights are constant in the weight: once the weight slot holds a direction (the backward of a
        # weight gradient, t == 0), only the weighted paths remain
        grads[k] = tp_contract(desc_id, k, backend, weightless and t != 0, *args)
    return grads


def _backward(ctx, grad):
    ops = list(ctx.saved_tensors)
    needs = ctx.needs_input_grad[4:]
    if ctx.target == 3 and ctx.backend == "cpu" and sum(bool(n) for n in needs[:3]) >= 2:
        # the fused CPU kernel: all input gradients in one pass over grad_out (numerically the same contractions)
        gw, gx, gy = tp_backward(
            ctx.desc_id, ctx.backend, ctx.weightless, ops[0], ops[1], ops[2], grad,
            bool(needs[0]) and ops[0] is not None, bool(needs[1]), bool(needs[2]),
        )  # fmt: skip
        grads = [gw if needs[0] and ops[0] is not None else None, gx if needs[1] else None, gy if needs[2] else None, None]
    else:
        grads = _contract_grads(ctx.desc_id, ctx.backend, ctx.weightless, ctx.target, ops, grad, needs)
    return None, None, None, None, *grads


tp_contract.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("equitp::tp_backward", mutates_args=())
def tp_backward(
    desc_id: int,
    backend: str,
    weightless: bool,
    w: Optional[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    grad: torch.Tensor,
    need_w: bool,
    need_x: bool,
    need_y: bool,
) -> List[torch.Tensor]:
    """Fused ``[tp_contract(target=k) for k in (weight, in1, in2)]`` with ``grad`` in the output slot (CPU)."""
    from ..executors.cpu._tensor_product import tensor_product_cpu_backward

    desc = _registry[desc_id]
    ops = [None if o is None else o.contiguous() for o in (w, x, y, grad)]
    gw, gx, gy = tensor_product_cpu_backward(desc, ops, (need_w, need_x, need_y), weightless)
    empty = x.new_empty(0)
    return [empty if gw is None else gw, empty if gx is None else gx, empty if gy is None else gy]


@tp_backward.register_fake
def _(desc_id, backend, weightless, w, x, y, grad, need_w, need_x, need_y):
    desc = _registry[desc_id]
    n = x.shape[0]
    gw = (x.new_empty((n, desc.weight_numel)) if w.dim() == 2 else x.new_empty((desc.weight_numel,))) if need_w else x.new_empty(0)
    gx = x.new_empty((n, desc.irreps_in1.dim)) if need_x else x.new_empty(0)
    gy = x.new_empty((n, desc.irreps_in2.dim)) if need_y else x.new_empty(0)
    return [gw, gx, gy]


def _bw_setup_context(ctx, inputs, output):
    desc_id, backend, weightless, w, x, y, grad, need_w, need_x, need_y = inputs
    ctx.desc_id, ctx.backend, ctx.weightless = desc_id, backend, weightless
    ctx.needs = (need_w, need_x, need_y)
    ctx.save_for_backward(w, x, y, grad)


def _bw_backward(ctx, grads):
    ggw, ggx, ggy = grads
    # each output k is tp_contract(target=k; W, x, y, grad): sum the backward of each
    ops = list(ctx.saved_tensors)
    needs = ctx.needs_input_grad[3:7]
    total = [None, None, None, None]
    for k, gk in zip((0, 1, 2), (ggw, ggx, ggy)):
        if not ctx.needs[k] or gk is None or gk.numel() == 0:
            continue
        args = list(ops)
        args[k] = args[0].new_empty((0, 0)) if (k == 0 and ops[0].dim() == 2) else (args[0].new_empty((0,)) if k == 0 else None)
        g = _contract_grads(ctx.desc_id, ctx.backend, ctx.weightless and k != 0, k, args, gk, needs)
        total = [a if b is None else (b if a is None else a + b) for a, b in zip(total, g)]
    return (None, None, None, *total, None, None, None)


tp_backward.register_autograd(_bw_backward, setup_context=_bw_setup_context)


def tensor_product(
    desc: TensorProductDescriptor,
    x: torch.Tensor,
    y: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    backend: Optional[str] = None,
) -> torch.Tensor:
    """The tensor product described by ``desc``.

    Args:
        desc: a `TensorProductDescriptor`.
        x: ``(..., irreps_in1.dim)``.
        y: ``(..., irreps_in2.dim)``; leading dims broadcast against ``x``'s.
        weight: ``(weight_numel,)`` shared by all items, or ``(..., weight_numel)`` per item (broadcast with the
            inputs' leading dims). Required when the descriptor has weights.
        backend: ``None`` (best for the device), ``"reference"`` (pure torch) or ``"cpu"`` (numba kernel).

    Returns:
        ``(..., irreps_out.dim)`` in the descriptor's layout.
    """
    if not isinstance(desc, TensorProductDescriptor):
        raise TypeError(f"desc: expected a TensorProductDescriptor, got {type(desc).__name__}")
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")
        if t.dim() < 1:
            raise ValueError(f"{name}: expected at least 1 dimension (..., dim), got a 0-d tensor")
    if x.shape[-1] != desc.irreps_in1.dim:
        raise ValueError(
            f"x: expected last dimension {desc.irreps_in1.dim} (irreps_in1 = {desc.irreps_in1}), got shape {tuple(x.shape)}"
        )
    if y.shape[-1] != desc.irreps_in2.dim:
        raise ValueError(
            f"y: expected last dimension {desc.irreps_in2.dim} (irreps_in2 = {desc.irreps_in2}), got shape {tuple(y.shape)}"
        )
    if x.dtype != y.dtype:
        raise TypeError(f"y: expected dtype {x.dtype} (the dtype of x), got {y.dtype}")
    if x.device != y.device:
        raise ValueError(f"y: expected device {x.device} (the device of x), got {y.device}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"x: expected float32 or float64, got {x.dtype}")
    try:
        lead = torch.broadcast_shapes(x.shape[:-1], y.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"y: leading dims {tuple(y.shape[:-1])} do not broadcast with x's {tuple(x.shape[:-1])}"
        ) from None
    w_batched = False
    if desc.weight_numel > 0:
        if weight is None:
            raise ValueError(f"weight: this tensor product needs {desc.weight_numel} weights, got None")
        if not isinstance(weight, torch.Tensor):
            raise TypeError(f"weight: expected a torch.Tensor, got {type(weight).__name__}")
        if weight.dtype != x.dtype:
            raise TypeError(f"weight: expected dtype {x.dtype} (the dtype of x), got {weight.dtype}")
        if weight.device != x.device:
            raise ValueError(f"weight: expected device {x.device} (the device of x), got {weight.device}")
        if weight.dim() == 0 or weight.shape[-1] != desc.weight_numel:
            raise ValueError(
                f"weight: expected last dimension weight_numel = {desc.weight_numel}, got shape {tuple(weight.shape)}"
            )
        if weight.dim() > 1:
            try:
                lead = torch.broadcast_shapes(lead, weight.shape[:-1])
            except RuntimeError:
                raise ValueError(
                    f"weight: leading dims {tuple(weight.shape[:-1])} do not broadcast with the inputs' {tuple(lead)}"
                ) from None
            w_batched = True
    elif weight is not None and weight.numel() != 0:
        raise ValueError(f"weight: this tensor product has no weights, got a tensor of shape {tuple(weight.shape)}")
    backend = resolve_backend(backend, x.device)
    n = 1
    for s in lead:
        n *= s
    xf = x.expand(*lead, x.shape[-1]).reshape(n, x.shape[-1])
    yf = y.expand(*lead, y.shape[-1]).reshape(n, y.shape[-1])
    if desc.weight_numel == 0:
        wf = None
    elif w_batched:
        wf = weight.expand(*lead, weight.shape[-1]).reshape(n, weight.shape[-1])
    else:
        wf = weight
    desc_id = register_descriptor(desc)
    if eager_inference(wf, xf, yf):
        out = _run(desc_id, 3, backend, True, [wf, xf, yf, None])
    else:
        out = tp_contract(desc_id, 3, backend, True, wf, xf, yf, None)
    return out.reshape(*lead, desc.irreps_out.dim)
