"""Benchmark cases for the sparse accumulation (``equitp.ops.accumulate``) and its classic baselines.

The problem: one real Clebsch–Gordan iteration ``l x l -> l`` (:func:`equitp.descriptors.real_cg_rule`) applied
to inputs with leading dimensions ``leading_dims``. Implementations (all computing the same thing):

* ``equitp-cpu``: ``accumulate(..., backend="cpu")`` (numba kernel; CPU only);
* ``equitp-reference``: ``accumulate(..., backend="reference")`` (gather + ``index_add_``);
* ``python-loops``: a Python loop over the ``nnz`` entries, each a vectorised update of one output column
  (the "python loops" baseline of lab-cosmo's sparse_accumulation); only for small problems;
* ``index_add``: gather both operands for all entries, multiply, ``index_add_`` into the output;
* ``dense-matmul``: outer product ``[N, M1*M2]`` times the dense rule ``[M1*M2, M_out]`` (zeros included);
* ``torch-sparse``: ``torch.sparse.mm`` of the COO rule ``[M_out, M1*M2]`` with the transposed outer product.

Modes: ``forward`` and ``forward+backward`` (gradients with respect to ``X1`` and ``X2``; the coefficients are
constants, as in a CG iteration). Run ``python -m equitp.bench._accumulate_cases`` for a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import statistics
import time
import warnings
from typing import Callable

import torch

from equitp.descriptors import SparseAccumulation, real_cg_rule
from equitp.ops import accumulate

__all__ = ["AccumulateCase", "IMPLEMENTATIONS", "MODES", "accumulate_cases", "accumulate_problem", "time_cases", "main"]

IMPLEMENTATIONS = ("equitp-cpu", "equitp-reference", "python-loops", "index_add", "dense-matmul", "torch-sparse")
MODES = ("forward", "forward+backward")


@dataclasses.dataclass(frozen=True)
class AccumulateCase:
    """One timed callable.

    Attributes:
        name: ``"accumulate/l=8/dims=100x200/float32/<implementation>/<mode>"``.
        implementation: one of :data:`IMPLEMENTATIONS`.
        mode: ``"forward"`` or ``"forward+backward"``.
        fn: zero-argument callable running the case once; returns the output (forward) or the input gradients.
        flops: useful floating-point operations (from the descriptor: ``3 nnz N`` per contraction; the
            backward has two contractions).
        bytes: minimum memory traffic from the descriptor (inputs, outputs and gradients read/written once).
        params: the problem parameters (l, leading_dims, dtype, nnz, rows, ...).
    """

    name: str
    implementation: str
    mode: str
    fn: Callable[[], object]
    flops: int
    bytes: int
    params: dict


def accumulate_problem(l: int = 8, leading_dims=(100, 200), dtype=torch.float32, seed: int = 0) -> dict:
    """Inputs of the benchmark: ``X1, X2`` ``(*leading_dims, 2l+1)``, the real CG rule ``l x l -> l`` and an
    output gradient ``G``; plus its descriptor."""
    m1, m2, mu, C = real_cg_rule(l, l, l, dtype=dtype)
    M = 2 * l + 1
    g = torch.Generator().manual_seed(seed)
    X1 = torch.randn(*leading_dims, M, generator=g, dtype=torch.float64).to(dtype)
    X2 = torch.randn(*leading_dims, M, generator=g, dtype=torch.float64).to(dtype)
    G = torch.randn(*leading_dims, M, generator=g, dtype=torch.float64).to(dtype)
    descriptor = SparseAccumulation(m1, m2, mu, M, M, M)
    return dict(l=l, X1=X1, X2=X2, G=G, mu=mu, m1=m1, m2=m2, C=C, output_size=M, descriptor=descriptor)


# -- implementations: each maps (X1, X2) -> out for one problem -----------------------------------------------------
def _equitp(p, backend):
    mu, m1, m2, C, K = p["mu"], p["m1"], p["m2"], p["C"], p["output_size"]
    return lambda X1, X2: accumulate(X1, X2, mu, K, m1, m2, C, backend=backend)


def _python_loops(p):
    mu, m1, m2, C, K = p["mu"].tolist(), p["m1"].tolist(), p["m2"].tolist(), p["C"], p["output_size"]

    def run(X1, X2):
        out = X1.new_zeros(*X1.shape[:-1], K)
        for i in range(len(mu)):
            out[..., mu[i]] += X1[..., m1[i]] * X2[..., m2[i]] * C[i]
        return out

    return run


def _index_add(p):
    mu, m1, m2, C, K = p["mu"], p["m1"], p["m2"], p["C"], p["output_size"]

    def run(X1, X2):
        out = X1.new_zeros(*X1.shape[:-1], K)
        return out.index_add_(-1, mu, X1[..., m1] * X2[..., m2] * C)

    return run


def _outer(X1, X2):
    leading = X1.shape[:-1]
    return (X1.unsqueeze(-1) * X2.unsqueeze(-2)).reshape(math.prod(leading), X1.shape[-1] * X2.shape[-1])


def _dense_matmul(p):
    M1, M2, K = p["X1"].shape[-1], p["X2"].shape[-1], p["output_size"]
    W = torch.zeros(M1 * M2, K, dtype=p["C"].dtype)
    W.index_put_((p["m1"] * M2 + p["m2"], p["mu"]), p["C"], accumulate=True)

    def run(X1, X2):
        return (_outer(X1, X2) @ W).reshape(*X1.shape[:-1], K)

    return run


def _torch_sparse(p):
    M2, K = p["X2"].shape[-1], p["output_size"]
    M1 = p["X1"].shape[-1]
    with warnings.catch_warnings():  # torch warns that sparse COO support is in beta
        warnings.simplefilter("ignore", UserWarning)
        S = torch.sparse_coo_tensor(
            torch.stack([p["mu"], p["m1"] * M2 + p["m2"]]), p["C"], size=(K, M1 * M2)
        ).coalesce()

    def run(X1, X2):
        return torch.sparse.mm(S, _outer(X1, X2).T).T.reshape(*X1.shape[:-1], K)

    return run


_BUILDERS = {
    "equitp-cpu": lambda p: _equitp(p, "cpu"),
    "equitp-reference": lambda p: _equitp(p, "reference"),
    "python-loops": _python_loops,
    "index_add": _index_add,
    "dense-matmul": _dense_matmul,
    "torch-sparse": _torch_sparse,
}


def accumulate_cases(
    l: int = 8,
    leading_dims=(100, 200),
    dtype=torch.float32,
    *,
    implementations=None,
    modes=MODES,
    seed: int = 0,
    python_loops_max_work: int = 10_000_000,
) -> list:
    """The benchmark cases of one problem size.

    Args:
        l: degree of both inputs and of the output (``M = 2l + 1``; real CG rule in e3nn's convention).
        leading_dims: leading dimensions of ``X1`` and ``X2`` (``N = prod(leading_dims)`` rows).
        dtype: ``torch.float32`` or ``torch.float64``.
        implementations: subset of :data:`IMPLEMENTATIONS` (default: all that apply).
        modes: subset of :data:`MODES`.
        seed: seed of the random inputs.
        python_loops_max_work: ``python-loops`` is left out (unless listed in ``implementations``) when
            ``N * nnz`` exceeds this in forward mode, or a tenth of it in forward+backward mode.

    Returns:
        A list of :class:`AccumulateCase`, grouped by mode, in the order of ``implementations``.
    """
    p = accumulate_problem(l, leading_dims, dtype, seed)
    d: SparseAccumulation = p["descriptor"]
    rows = math.prod(leading_dims)
    explicit = implementations is not None
    if implementations is None:
        implementations = list(IMPLEMENTATIONS)
    unknown = sorted(set(implementations) - set(IMPLEMENTATIONS))
    if unknown:
        raise ValueError(f"unknown implementations {unknown}; valid are {list(IMPLEMENTATIONS)}")
    bad_modes = sorted(set(modes) - set(MODES))
    if bad_modes:
        raise ValueError(f"unknown modes {bad_modes}; valid are {list(MODES)}")
    itemsize = torch.empty((), dtype=dtype).element_size()
    params = dict(l=l, leading_dims=tuple(leading_dims), dtype=str(dtype).replace("torch.", ""), rows=rows, nnz=d.nnz)
    label = f"accumulate/l={l}/dims={'x'.join(map(str, leading_dims))}/{params['dtype']}"
    X1, X2, G = p["X1"], p["X2"], p["G"]
    X1g, X2g = X1.clone().requires_grad_(), X2.clone().requires_grad_()
    cases = []
    for mode in modes:
        for name in implementations:
            # the Python loop's autograd graph has 3 nodes per entry: its backward is 10x costlier than its forward
            limit = python_loops_max_work if mode == "forward" else python_loops_max_work // 10
            if name == "python-loops" and not explicit and rows * d.nnz > limit:
                continue
            impl = _BUILDERS[name](p)
            if mode == "forward":
                fn = (lambda impl=impl: impl(X1, X2))
                flops, nbytes = d.flops(rows), d.bytes(rows, dtype)
            else:
                fn = (lambda impl=impl: torch.autograd.grad(impl(X1g, X2g), (X1g, X2g), G))
                flops = 3 * d.flops(rows)
                # forward traffic, then read G, X1, X2 and write both gradients
                nbytes = d.bytes(rows, dtype) + rows * (2 * d.output_size + 2 * d.M1 + 2 * d.M2) * itemsize
            cases.append(AccumulateCase(f"{label}/{name}/{mode}", name, mode, fn, flops, nbytes, dict(params)))
    return cases


def time_cases(cases, repeats: int = 15, warmup: int = 2, clock: str = "wall") -> dict:
    """Median time (seconds) of each case: warm-up, then ``repeats`` rounds running every case once per round
    in turn (alternating, so drift on a shared machine hits all cases alike).

    ``clock="wall"`` measures elapsed time (``time.perf_counter``); ``clock="cpu"`` measures the CPU time of the
    whole process (``time.process_time``, summed over its threads): robust to other processes competing for the
    cores, but with several threads it is total work, not latency."""
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    now = time.perf_counter if clock == "wall" else time.process_time
    for case in cases:
        for _ in range(warmup):
            case.fn()
    samples = {case.name: [] for case in cases}
    for _ in range(repeats):
        for case in cases:
            start = now()
            case.fn()
            samples[case.name].append(now() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def _check_agreement(cases, dtype) -> None:
    """All implementations of a mode compute the same result (guards the timings against a broken baseline)."""
    tol = 1e-3 if dtype == torch.float32 else 1e-9
    for mode in MODES:
        results = [(c.implementation, c.fn()) for c in cases if c.mode == mode]
        if not results:
            continue
        name0, ref = results[0]
        ref = ref if isinstance(ref, tuple) else (ref,)
        for name, value in results[1:]:
            value = value if isinstance(value, tuple) else (value,)
            for a, b in zip(ref, value):
                err = (a.detach().double() - b.detach().double()).abs().max().item() if a.numel() else 0.0
                scale = max(1.0, a.detach().double().abs().max().item() if a.numel() else 1.0)
                if err > tol * scale:
                    raise AssertionError(f"{name} disagrees with {name0} in {mode}: max abs error {err:.3g}")


def _hardware() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import numba

    return (f"{model}, {os.cpu_count()} logical CPUs; torch {torch.__version__} with {torch.get_num_threads()} "
            f"threads, numba {numba.__version__} with {numba.get_num_threads()} threads")


def main(argv=None) -> None:
    """Times every implementation (median of alternating repeats after warm-up) and prints a table."""
    parser = argparse.ArgumentParser(prog="python -m equitp.bench._accumulate_cases", description=main.__doc__)
    parser.add_argument("--l", type=int, default=8)
    parser.add_argument("--dims", type=int, nargs="+", default=[100, 200], help="leading dimensions")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--implementations", nargs="+", choices=IMPLEMENTATIONS, default=None)
    parser.add_argument("--threads", type=int, default=None, help="threads for torch and numba (default: theirs)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: elapsed time; cpu: process CPU time (for loaded machines; use with --threads 1)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        import numba

        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    cases = accumulate_cases(args.l, tuple(args.dims), dtype, implementations=args.implementations)
    _check_agreement(cases, dtype)
    medians = time_cases(cases, repeats=args.repeats, warmup=args.warmup, clock=args.clock)
    params = cases[0].params
    print(f"sparse accumulation, real CG l={args.l} x {args.l} -> {args.l} (nnz={params['nnz']}), "
          f"leading dims {tuple(args.dims)} ({params['rows']} rows), {args.dtype}")
    print(f"hardware: {_hardware()}")
    print(f"median {args.clock}-clock time of {args.repeats} alternating repeats after {args.warmup} warm-up runs; "
          f"'x equitp-cpu' = time / time of equitp-cpu in the same mode")
    header = f"{'mode':<17} {'implementation':<17} {'median ms':>10} {'x equitp-cpu':>13} {'GFLOP/s':>8} {'GB/s':>7}"
    print(header)
    print("-" * len(header))
    for mode in MODES:
        mode_cases = [c for c in cases if c.mode == mode]
        base = next((medians[c.name] for c in mode_cases if c.implementation == "equitp-cpu"), None)
        for c in mode_cases:
            t = medians[c.name]
            ratio = f"{t / base:13.1f}" if base else f"{'-':>13}"
            print(f"{mode:<17} {c.implementation:<17} {t * 1e3:10.3f} {ratio} "
                  f"{c.flops / t / 1e9:8.2f} {c.bytes / t / 1e9:7.2f}")


if __name__ == "__main__":
    main()
