"""The pool of large CPU output buffers: a buffer still referenced anywhere is never handed out; a released one is."""

from collections import OrderedDict

import numpy as np
import torch

from equitp.executors.cpu import _pool


def _fresh_pool(monkeypatch):
    monkeypatch.setattr(_pool, "POOL_ENABLED", True)
    monkeypatch.setattr(_pool, "_pool_storages", OrderedDict())


def test_released_buffers_are_reused_live_ones_never(monkeypatch):
    _fresh_pool(monkeypatch)
    shape = (512, 1024)  # 2 MiB of float32: pooled
    a = _pool.empty(shape, torch.float32)
    b = _pool.empty(shape, torch.float32)
    view = b[3:7]  # a view keeps b's buffer alive too
    assert a.data_ptr() != b.data_ptr()
    pa, pb = a.data_ptr(), b.data_ptr()
    counts = [torch._C._storage_Use_Count(st._cdata) for st in _pool._pool_storages[(512 * 1024, torch.float32)]]
    del a
    c = _pool.empty(shape, torch.float32)
    assert c.data_ptr() == pa, f"released buffer not reused (use counts before release: {counts})"
    del b
    d = _pool.empty(shape, torch.float32)
    assert d.data_ptr() not in (pa, pb)  # b's buffer is still held by its view
    arr = d.numpy()  # a numpy array of d keeps it alive after d is gone
    del d
    e = _pool.empty(shape, torch.float32)
    assert e.data_ptr() != arr.ctypes.data
    del view


def test_small_and_disabled_allocations_bypass_the_pool(monkeypatch):
    _fresh_pool(monkeypatch)
    _pool.empty((4, 4), torch.float32)
    assert not _pool._pool_storages
    monkeypatch.setattr(_pool, "POOL_ENABLED", False)
    t = _pool.empty((512, 1024), torch.float64)
    assert t.shape == (512, 1024) and t.dtype == torch.float64
    assert not _pool._pool_storages
    assert np.dtype("float64").itemsize * t.numel() == t.untyped_storage().nbytes()
