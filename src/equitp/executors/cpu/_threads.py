"""The threads that run the CPU kernels' chunks.

The tensor-product kernels release the GIL, so any threads can run them. Where PyTorch's intra-op thread pool is GNU
OpenMP (libgomp: the Linux wheels), the chunks run on *that pool's own threads*, entered through libgomp's
``GOMP_parallel`` with a ctypes callback: after each parallel torch operation its OpenMP workers spin-wait for the next
parallel region (libgomp's default spin count, milliseconds on this hardware), and a pool of threads of our own would
share the cores with those spinning workers. Measured on the 2-vCPU Xeon, two threads: full l <= 6 forward right after
a 2048 x 2048 matmul 11.9-12.5 ms on Python threads, 10.0-10.3 ms on torch's OpenMP threads (10.0 ms with
``OMP_WAIT_POLICY=passive``, which removes the spinning but has to be set before torch starts); the mace-large
channelwise forward after a ``Linear(256, 256)``, as in a network: 4.7-4.8 -> 2.7-2.8 ms at batch 1,000, 1.42 -> 0.97
ms at batch 250. Starting a team costs more than handing work to Python threads (34 against 13 us with nothing else
running), which is why the numba ``prange`` kernels of sub-millisecond E(2) expansions were left on numba's own
threads (on these threads the C8 block expansion took 2.0 instead of 1.75 ms, alternating with the padded one).

Elsewhere (torch without libgomp, or ``EQUITP_CPU_THREADS=python``) a ``ThreadPoolExecutor`` runs them.
"""

from __future__ import annotations

import ctypes
import os
from typing import Callable

import torch

#: "auto": torch's OpenMP threads where torch uses libgomp, else Python threads; "python": always Python threads
THREADS = os.environ.get("EQUITP_CPU_THREADS", "auto")

_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_gomp_parallel = None  # libgomp's GOMP_parallel, False when unavailable, None before the first look
_pool = None
_pool_size = 0


def _find_gomp():
    """``GOMP_parallel`` of the libgomp that torch runs its intra-op parallelism on, or None."""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    lib = None
    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp.so.1")  # the copy torch's wheels ship
    if os.path.exists(path):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            pass
    if lib is None:  # torch linked against a libgomp outside its package (already loaded: found by its soname)
        try:
            lib = ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD | os.RTLD_LOCAL)
        except (OSError, AttributeError):
            return None
    fn = getattr(lib, "GOMP_parallel", None)
    if fn is None:
        return None
    fn.argtypes = [_CALLBACK, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    fn.restype = None
    return fn


def backend() -> str:
    """``"openmp"`` (torch's libgomp threads) or ``"python"`` (a ThreadPoolExecutor)."""
    global _gomp_parallel
    if THREADS == "python":
        return "python"
    if _gomp_parallel is None:
        _gomp_parallel = _find_gomp() or False
    return "openmp" if _gomp_parallel else "python"


def run_team(worker: Callable[[], None], n_threads: int) -> None:
    """Run ``worker()`` on ``n_threads`` threads at once, the calling thread among them, and return when every call has
    returned; the first exception raised by a call is raised here. The workers share their work themselves (e.g. by
    taking chunks from a shared counter)."""
    if n_threads <= 1:
        worker()
        return
    if backend() == "openmp":
        errors: list[BaseException] = []

        def body(_data):
            try:
                worker()
            except BaseException as e:  # noqa: BLE001  (re-raised in the calling thread below)
                errors.append(e)

        _gomp_parallel(_CALLBACK(body), None, n_threads, 0)
        if errors:
            raise errors[0]
        return
    global _pool, _pool_size
    if _pool is None or _pool_size < n_threads:
        from concurrent.futures import ThreadPoolExecutor

        _pool = ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="equitp-cpu")
        _pool_size = n_threads
    futures = [_pool.submit(worker) for _ in range(1, n_threads)]
    try:
        worker()
    finally:
        for f in futures:
            f.exception()  # wait for every worker
    for f in futures:
        f.result()
