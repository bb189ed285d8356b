"""The threads of the CPU kernels (`executors.cpu._threads`): a team of n threads runs the worker n times at once, the
first exception comes back to the caller, torch's OpenMP threads are used where torch has libgomp, and the tensor
products give the same results on either kind of thread."""

import sys
import threading

import pytest
import torch

import equitp
from equitp.executors.cpu import _threads

BACKENDS = ["auto", "python"]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    monkeypatch.setattr(_threads, "THREADS", request.param)
    return request.param


@pytest.mark.parametrize("n", [1, 2, 3])
def test_team_runs_the_worker_once_per_thread_at_once(backend, n):
    """Each of the n threads calls the worker once, all of them inside the call (a barrier of n parties passes only
    if the n calls overlap in time)."""
    barrier = threading.Barrier(n, timeout=30)
    idents = []
    lock = threading.Lock()

    def worker():
        with lock:
            idents.append(threading.get_ident())
        barrier.wait()

    _threads.run_team(worker, n)
    assert len(idents) == n and len(set(idents)) == n
    assert threading.get_ident() in idents  # the caller is one of the team


def test_team_raises_the_workers_exception(backend):
    calls = []

    def worker():
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("from a worker")

    with pytest.raises(ValueError, match="from a worker"):
        _threads.run_team(worker, 2)
    assert len(calls) == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="torch's Linux wheels use GNU OpenMP")
def test_openmp_threads_where_torch_uses_libgomp(monkeypatch):
    monkeypatch.setattr(_threads, "THREADS", "auto")
    uses_gomp = "parallel backend: OpenMP" in torch.__config__.parallel_info()
    assert _threads.backend() == ("openmp" if uses_gomp and _threads._find_gomp() is not None else "python")
    monkeypatch.setattr(_threads, "THREADS", "python")
    assert _threads.backend() == "python"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_products_agree_on_either_kind_of_thread(monkeypatch, dtype):
    """A fully connected product (forward and gradients) and the full single-channel product, split over two
    threads, equal the reference executor's results with both thread backends."""
    from equitp.executors.cpu import _tensor_product as cpu

    monkeypatch.setattr(cpu, "PARALLEL_MIN_FLOPS", 1)  # split even these small batches over the threads
    monkeypatch.setattr(cpu, "_plans", {})
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(3)
        irr = "3x1o+2x0e"
        fc = equitp.FullyConnectedTensorProduct(irr, "0e+1o", irr, shared_weights=False, internal_weights=False)
        full = equitp.FullTensorProduct("0e+1o+2e", "0e+1o+2e")
        n = 301
        x = torch.randn(n, fc.irreps_in1.dim, dtype=dtype, requires_grad=True)
        y = torch.randn(n, fc.irreps_in2.dim, dtype=dtype, requires_grad=True)
        w = torch.randn(n, fc.weight_numel, dtype=dtype, requires_grad=True)
        a = torch.randn(n, 9, dtype=dtype)
        b = torch.randn(n, 9, dtype=dtype)
        results = {}
        for kind in BACKENDS:
            monkeypatch.setattr(_threads, "THREADS", kind)
            out = fc(x, y, w)
            grads = torch.autograd.grad(out, (x, y, w), torch.ones_like(out))
            results[kind] = (out.detach(), *grads, full(a, b))
        ref_fc = equitp.FullyConnectedTensorProduct(irr, "0e+1o", irr, shared_weights=False, internal_weights=False,
                                                    backend="reference")
        ref_full = equitp.FullTensorProduct("0e+1o+2e", "0e+1o+2e", backend="reference")
        out = ref_fc(x, y, w)
        expected = (out.detach(), *torch.autograd.grad(out, (x, y, w), torch.ones_like(out)), ref_full(a, b))
        tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
        for kind in BACKENDS:
            for got, want in zip(results[kind], expected):
                torch.testing.assert_close(got, want, **tol)
    finally:
        torch.set_num_threads(old)
