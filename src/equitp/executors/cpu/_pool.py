"""A pool of large CPU output buffers.

On many machines the first touch of a freshly allocated large tensor (page faults, zeroing by the kernel) costs more
than the product that fills it: a 360 MB output takes 25-35 ms to fault in here, a third of what the product costs.
Large outputs are therefore taken from a small pool of storages that nobody references any more (use count 1: only
the pool holds them), like a caching allocator: a training or inference loop that calls the same product with the same
shapes gets its previous, already released, buffers back. A buffer still referenced anywhere (a tensor, a view, a
saved tensor of autograd, a numpy array made from it) is never handed out. At most three storages per (size, dtype)
and 16 sizes are kept, least recently used first out. Set ``EQUITP_CPU_POOL=0`` to disable.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import torch

POOL_ENABLED = os.environ.get("EQUITP_CPU_POOL", "1") != "0"
_POOL_MIN_BYTES = 1 << 20
_POOL_KEYS = 16
_POOL_PER_KEY = 3
_pool_storages: OrderedDict = OrderedDict()


def empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised contiguous CPU tensor of ``shape`` and ``dtype``: from the pool when it is large (>= 1 MiB)."""
    numel = 1
    for s_ in shape:
        numel *= s_
    itemsize = torch.empty(0, dtype=dtype).element_size()
    if not POOL_ENABLED or numel * itemsize < _POOL_MIN_BYTES:
        return torch.empty(shape, dtype=dtype)
    key = (numel, dtype)
    storages = _pool_storages.get(key)
    if storages is None:
        storages = _pool_storages[key] = []
        while len(_pool_storages) > _POOL_KEYS:
            _pool_storages.popitem(last=False)
    else:
        _pool_storages.move_to_end(key)
    for st in storages:
        if torch._C._storage_Use_Count(st._cdata) == 1:
            return torch.empty(0, dtype=dtype).set_(st, 0, tuple(shape))
    t = torch.empty(shape, dtype=dtype)
    if len(storages) < _POOL_PER_KEY:
        storages.append(t.untyped_storage())
    return t
