"""What the benchmark runs on: hardware and software names, the machine's roofline (copy bandwidth and GEMM
throughput, measured once per run) and a peak-memory probe."""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import gc
import os
import platform
import sys
import time
from importlib import metadata
from typing import Dict, Optional

import torch

__all__ = ["machine_info", "measure_roofline", "MemoryProbe", "synchronize"]


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info(device: torch.device) -> Dict[str, object]:
    """Names the hardware and software of this run (without the roofline, see :func:`measure_roofline`)."""
    import equitp

    try:
        import numba

        numba_version, numba_threads = numba.__version__, numba.get_num_threads()
    except ImportError:  # pragma: no cover - numba is a dependency
        numba_version, numba_threads = None, None
    gpu = None
    if torch.cuda.is_available():
        index = device.index if device.type == "cuda" and device.index is not None else 0
        gpu = torch.cuda.get_device_name(index)
    mem_total = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    mem_total = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "numba_threads": numba_threads,
        "memory_gb": mem_total,
        "gpu": gpu,
        "device": str(device),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "equitp": equitp.__version__,
        "numba": numba_version,
        "numpy": _version("numpy"),
        "e3nn": _version("e3nn"),
        "cuequivariance_torch": _version("cuequivariance-torch"),
        "openequivariance": _version("openequivariance"),
        "thp_mem_alloc_enable": os.environ.get("THP_MEM_ALLOC_ENABLE"),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _anon_huge_pages_kb() -> Optional[int]:
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("AnonHugePages"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def measure_roofline(device: torch.device, dtype: torch.dtype, quick: bool = False) -> Dict[str, object]:
    """The machine's two roofs, measured now.

    * copy bandwidth: ``dst.copy_(src)`` of a 128 MiB tensor (256 MiB moved: read + write), best of a few runs;
    * GEMM throughput: a 2048 x 2048 matmul in ``dtype`` (``2 n^3`` FLOPs), best of a few runs.

    Returns ``{"copy_bandwidth_gb_per_s", "gemm_gflops_per_s", "roofline_dtype", "thp_active"}``; ``thp_active``
    says whether the copy buffers were backed by transparent huge pages (None where it cannot be read).
    """
    runs = 3 if quick else 5
    nbytes = 128 * 2**20
    huge_before = _anon_huge_pages_kb()
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    huge_after = _anon_huge_pages_kb()
    best = float("inf")
    for _ in range(runs + 1):
        synchronize(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    bandwidth = 2 * nbytes / best / 1e9
    del src, dst
    n = 2048
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g, dtype=dtype).to(device)
    b = torch.randn(n, n, generator=g, dtype=dtype).to(device)
    best = float("inf")
    for _ in range(runs + 1):
        synchronize(device)
        t0 = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    gemm = 2 * n**3 / best / 1e9
    thp = None
    if device.type == "cpu" and huge_before is not None and huge_after is not None:
        thp = huge_after > huge_before
    return {
        "copy_bandwidth_gb_per_s": round(bandwidth, 2),
        "gemm_gflops_per_s": round(gemm, 2),
        "roofline_dtype": str(dtype).replace("torch.", ""),
        "thp_active": thp,
    }


def _read_status_kb(key: str) -> Optional[int]:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


class MemoryProbe:
    """Peak memory of one call, in MiB.

    On CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated before. On Linux CPUs: the rise of the
    process's resident-set high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``) above the resident
    set before the call, after ``malloc_trim`` has returned free heap memory to the system. Memory that the C
    allocator keeps and reuses during the call is not seen, so the CPU figure is a lower bound. ``peak_mb`` is None
    where neither works (tracemalloc does not see torch's allocations).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mb: Optional[float] = None

    @contextlib.contextmanager
    def measure(self):
        self.peak_mb = None
        if self.device.type == "cuda":
            synchronize(self.device)
            base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            yield self
            synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - base) / 2**20
            return
        base = None
        try:
            gc.collect()
            _malloc_trim()
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            base = _read_status_kb("VmRSS")
        except OSError:
            base = None
        yield self
        if base is not None:
            try:
                hwm = _read_status_kb("VmHWM")
                if hwm is not None:
                    self.peak_mb = max(0.0, (hwm - base) / 1024)
            except OSError:
                self.peak_mb = None


_LIBC = []


def _malloc_trim() -> None:
    """Returns the C heap's free memory to the system (glibc only; a no-op elsewhere)."""
    if not _LIBC:
        try:
            _LIBC.append(ctypes.CDLL("libc.so.6").malloc_trim)
        except (OSError, AttributeError):
            _LIBC.append(None)
    if _LIBC[0] is not None:
        _LIBC[0](0)
