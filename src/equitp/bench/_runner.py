"""The benchmark runner: selects the cases, times equitp and its peers in the same process, alternating, after
warm-up, and turns the samples into result rows (schema in ``docs/bench.md``).

Method (GUIDE §5):

* every implementation of a case is built and run on the same input tensors;
* three loops per case: ``fwd`` (inference forward under ``torch.no_grad``), ``train`` (forward then
  ``torch.autograd.grad`` of the output against a fixed output gradient: its backward part is the ``bwd`` sample, the
  whole the ``fwd+bwd`` sample) and ``double`` (``double-bwd``: the backward of ``<grad, v>`` through a first
  backward built with ``create_graph=True``; only the second backward is timed);
* each loop: ``warmup`` untimed rounds, then up to ``repeats`` timed rounds; a round runs every implementation once,
  in a rotating order, so drift on a shared machine hits all of them alike; the median and the min-max are reported;
* rounds are capped by a time budget per loop, judged from the first timed round: at least 3 rounds, except for
  an implementation whose call there exceeded a third of the budget, which runs only in the first
  ``max(1, budget / its time)`` rounds (its row's ``repeats`` says how many), so a very slow peer cannot stall
  the run;
* a failing implementation (an exception, out of memory) gets an ``error`` in its rows and leaves the loop; the rest
  runs on.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ._cases import CASES, PASSES, SUITES, TP_KINDS, Case
from ._impls import (
    PEERS,
    Impl,
    Problem,
    Unavailable,
    build_equitp,
    build_peer,
    default_backend,
    equitp_backends,
    make_problem,
    peers_for,
)
from ._machine import MemoryProbe, machine_info, measure_roofline, synchronize

__all__ = ["run_benchmark", "plan", "ROW_KEYS"]

#: the keys of every result row, in order
ROW_KEYS = (
    "suite", "case", "tp", "impl", "library", "backend", "device", "dtype", "batch", "pass",
    "median_ms", "min_ms", "max_ms", "repeats", "peak_mem_mb", "flops", "bytes", "gflops_per_s", "gb_per_s",
    "roofline_fraction", "speedup_vs", "max_abs_err", "error", "params",
)  # fmt: skip

_LOOP_PASSES = {"fwd": ("fwd",), "train": ("bwd", "fwd+bwd"), "double": ("double-bwd",)}
_ERROR_ITEMS = 16  # items of the batch on which max_abs_err is computed
_MIN_ROUNDS = 3


def _unknown(kind: str, names, valid) -> None:
    bad = [n for n in names if n not in valid]
    if bad:
        plural = kind + ("es" if kind.endswith("s") else "s")
        raise ValueError(f"unknown {kind} {', '.join(map(repr, bad))}; valid {plural} are: {', '.join(valid)}")


def plan(
    suite: Optional[str] = None,
    cases: Optional[Sequence[str]] = None,
    tps: Optional[Sequence[str]] = None,
    batch: Optional[int] = None,
    quick: bool = False,
) -> List[tuple]:
    """The ``(case, batch)`` entries a run would time.

    Args:
        suite: a suite name (default ``"default"``); ``cases`` then filters its entries. With ``suite=None`` and
            ``cases`` given, the named cases run at their nominal batch.
        cases: case labels.
        tps: tensor-product kinds to keep.
        batch: overrides every entry's batch.
        quick: the suite's quick entries at their quick batch (a tenth of the nominal batch for named cases).

    Raises:
        ValueError: an unknown suite, case or tp (the message lists the valid ones), or a bad batch.
    """
    if suite is not None:
        _unknown("suite", [suite], list(SUITES))
    if cases:
        _unknown("case", cases, list(CASES))
    if tps:
        _unknown("tp", tps, list(TP_KINDS))
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ValueError(f"batch: expected a positive integer, got {batch!r}")
    if suite is None and cases:
        entries = [(CASES[c], max(1, CASES[c].batch // 10) if quick else CASES[c].batch) for c in dict.fromkeys(cases)]
    else:
        s = SUITES[suite or "default"]
        if s.external:
            return []
        entries = [(CASES[label], q if quick else b) for label, b, q in s.entries if not quick or q is not None]
        if cases:
            in_suite = [label for label, _, _ in s.entries]
            missing = [c for c in cases if c not in in_suite]
            if missing:
                raise ValueError(f"case {', '.join(map(repr, missing))} is not in suite {s.name!r}; its cases are: "
                                 f"{', '.join(dict.fromkeys(in_suite))}")
            entries = [(c, b) for c, b in entries if c.label in cases]
    if tps:
        kept = [(c, b) for c, b in entries if c.tp in tps]
        if entries and not kept:
            where = f"suite {s.name!r}" if not (suite is None and cases) else "the named cases"
            have = list(dict.fromkeys(c.tp for c, _ in entries))
            raise ValueError(f"no case of {where} has tp {', '.join(map(repr, tps))}; its tps are: {', '.join(have)}")
        entries = kept
    if batch is not None:
        entries = [(c, batch) for c, _ in entries]
    return list(dict.fromkeys(entries))


# -- one step of each loop: returns {pass: seconds} ------------------------------------------------------------------
def _fwd_step(impl: Impl, p: Problem) -> Dict[str, float]:
    with torch.no_grad():
        synchronize(p.device)
        t0 = time.perf_counter()
        out = impl.fn(p.x, p.y, p.w)
        synchronize(p.device)
        t1 = time.perf_counter()
    del out
    return {"fwd": t1 - t0}


def _leaves(p: Problem):
    """The problem's inputs as autograd leaves (``make_problem`` creates them with ``requires_grad=True``)."""
    return p.x, p.y, p.w


def _train_step(impl: Impl, p: Problem) -> Dict[str, float]:
    x, y, w = _leaves(p)
    leaves = [t for t in (x, y, w) if t is not None]
    synchronize(p.device)
    t0 = time.perf_counter()
    out = impl.fn(x, y, w)
    synchronize(p.device)
    t1 = time.perf_counter()
    grads = torch.autograd.grad(out, leaves, p.g, allow_unused=True)
    synchronize(p.device)
    t2 = time.perf_counter()
    del out, grads
    return {"bwd": t2 - t1, "fwd+bwd": t2 - t0}


def _double_step(impl: Impl, p: Problem) -> Dict[str, float]:
    x, y, w = _leaves(p)
    leaves = [t for t in (x, y, w) if t is not None]
    out = impl.fn(x, y, w)
    grads = torch.autograd.grad(out, leaves, p.g, create_graph=True, allow_unused=True)
    s = sum((gr * t.detach()).sum() for gr, t in zip(grads, leaves) if gr is not None)
    synchronize(p.device)
    t0 = time.perf_counter()
    second = torch.autograd.grad(s, leaves, allow_unused=True)
    synchronize(p.device)
    t1 = time.perf_counter()
    del out, grads, s, second
    return {"double-bwd": t1 - t0}


_STEPS = {"fwd": _fwd_step, "train": _train_step, "double": _double_step}


def _pass_outputs(fn: Callable, x, y, w, g, loop: str) -> List[Optional[torch.Tensor]]:
    """The tensors a loop computes, on a slice of the batch: the output (``fwd``), the output and the input gradients
    (``train``), the second-order gradients (``double``)."""
    if loop == "fwd":
        with torch.no_grad():
            return [fn(x, y, w)]
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in (x, y, w)]
    present = [t for t in leaves if t is not None]
    out = fn(*leaves)
    if loop == "train":
        grads = torch.autograd.grad(out, present, g, allow_unused=True)
        return [out.detach()] + [None if gr is None else gr.detach() for gr in grads]
    grads = torch.autograd.grad(out, present, g, create_graph=True, allow_unused=True)
    s = sum((gr * t.detach()).sum() for gr, t in zip(grads, present) if gr is not None)
    second = torch.autograd.grad(s, present, allow_unused=True)
    return [None if gr is None else gr.detach() for gr in second]


def _max_abs_err(impl: Impl, p: Problem, loop: str) -> Dict[str, Optional[float]]:
    """``max |impl - reference executor in float64|`` per pass of ``loop``, on the first items of the batch."""
    x, y, w, g = p.sliced(_ERROR_ITEMS)
    ours = _pass_outputs(impl.fn, x, y, w, g, loop)
    cache = p.extra.setdefault("oracle", {})
    if loop not in cache:
        to64 = (lambda t: None if t is None else t.detach().double())  # noqa: E731
        cache[loop] = _pass_outputs(p.oracle, to64(x), to64(y), to64(w), to64(g), loop)
    ref = cache[loop]

    def err(a_list, b_list):
        e = 0.0
        for a, b in zip(a_list, b_list):
            if a is None or b is None:
                continue
            if a.shape != b.shape:
                raise ValueError(f"output shape {tuple(a.shape)} differs from the reference's {tuple(b.shape)}")
            if a.numel():
                e = max(e, (a.double() - b).abs().max().item())
        return e

    if loop == "fwd":
        return {"fwd": err(ours, ref)}
    if loop == "train":
        return {"bwd": err(ours[1:], ref[1:]), "fwd+bwd": err(ours, ref)}
    return {"double-bwd": err(ours, ref)}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, Unavailable):
        return f"skipped: {exc}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, MemoryError) or "out of memory" in text.lower() or "can't allocate memory" in text.lower():
        return f"out of memory: {text}"[:300]
    return f"failed: {type(exc).__name__}: {text}"[:300]


class _Timing:
    """Samples, peak memory, errors of one implementation across the loops of a case."""

    def __init__(self, impl: Impl):
        self.impl = impl
        self.samples: Dict[str, List[float]] = {}
        self.peak_mb: Dict[str, Optional[float]] = {}
        self.error: Dict[str, str] = {}
        self.max_abs_err: Dict[str, Optional[float]] = {}


def _time_loop(loop: str, timings: List[_Timing], p: Problem, warmup: int, repeats: int, budget_s: float) -> None:
    step = _STEPS[loop]
    passes = _LOOP_PASSES[loop]
    active = list(timings)

    def fail(t: _Timing, exc: BaseException) -> None:
        for q in passes:
            t.error[q] = _describe(exc)
        active.remove(t)

    probe = MemoryProbe(p.device)
    for w in range(max(1, warmup)):
        for t in list(active):
            try:
                if w == 0:  # peak memory on the first call, before the implementation's own caches hold anything
                    with probe.measure():
                        step(t.impl, p)
                    for q in passes:
                        t.peak_mb[q] = probe.peak_mb
                else:
                    step(t.impl, p)
            except Exception as exc:  # noqa: BLE001 - a failing implementation becomes a row
                fail(t, exc)

    def run_round(r: int, members: List[_Timing]) -> None:
        k = r % len(members) if members else 0
        for t in members[k:] + members[:k]:
            if t not in active:
                continue
            try:
                sample = step(t.impl, p)
            except Exception as exc:  # noqa: BLE001
                fail(t, exc)
                continue
            for q in passes:
                t.samples.setdefault(q, []).append(sample[q])

    run_round(0, list(active))
    # further rounds: as many as the budget allows (at least 3, at most `repeats`) for the implementations whose
    # call (timed in round 0, after warm-up) fits a third of the budget; a slower one runs only in the first
    # max(1, budget / its time) rounds
    first = {id(t): max(t.samples[q][0] for q in passes) for t in active}
    slow = {id(t) for t in active if first[id(t)] > budget_s / _MIN_ROUNDS}
    fast_round = sum(first[id(t)] for t in active if id(t) not in slow)
    rounds = repeats if fast_round <= 0 else min(repeats, max(_MIN_ROUNDS, int(budget_s / fast_round)))
    limit = {id(t): rounds if id(t) not in slow else min(rounds, max(1, int(budget_s / first[id(t)])))
             for t in active}
    for r in range(1, rounds):
        members = [t for t in active if r < limit[id(t)]]
        if not members:
            break
        run_round(r, members)
    for t in timings:
        if t.impl.comparable and not any(q in t.error for q in passes):
            try:
                t.max_abs_err.update(_max_abs_err(t.impl, p, loop))
            except Exception:  # noqa: BLE001 - the check is informative, never fatal
                pass
    gc.collect()


def _row(base: dict, impl_name: str, library: str, backend: str, pass_: str, **values) -> dict:
    row = {k: None for k in ROW_KEYS}
    row.update(base)
    row.update(impl=impl_name, library=library, backend=backend, speedup_vs={})
    row["pass"] = pass_
    row.update(values)
    return row


def _run_entry(case: Case, batch: int, ctx: dict) -> List[dict]:
    device, dtype, passes = ctx["device"], ctx["dtype"], ctx["passes"]
    base = dict(suite=ctx["suite"], case=case.label, tp=case.tp, device=str(device),
                dtype=str(dtype).replace("torch.", ""), batch=batch, params=dict(case.params))
    backends = ctx["backends"] or [default_backend(device)]
    backends = [b for b in backends if b in equitp_backends(case.tp)]
    peer_names = peers_for(case, None, ctx["peers"])
    planned = [(f"equitp-{b}", "equitp", b) for b in backends] + [(n, PEERS[n].library, n) for n in peer_names]
    try:
        problem = make_problem(case, batch, device, dtype)
    except Exception as exc:  # noqa: BLE001 - out of memory or no device: one row per implementation and pass
        reason = _describe(exc)
        return [_row(base, n, lib, be, q, error=reason) for n, lib, be in planned for q in passes]
    if case.tp == "accumulate":
        base["params"] = dict(case.params, leading_dims=list(problem.extra["leading_dims"]), nnz=problem.extra["nnz"])
    rows: List[dict] = []
    timings: List[_Timing] = []
    for b in backends:
        try:
            timings.append(_Timing(build_equitp(case, b, problem)))
        except Exception as exc:  # noqa: BLE001
            rows += [_row(base, f"equitp-{b}", "equitp", b, q, error=_describe(exc)) for q in passes]
    for name in peers_for(case, problem, ctx["peers"]):
        try:
            timings.append(_Timing(build_peer(name, case, problem)))
        except Exception as exc:  # noqa: BLE001
            rows += [_row(base, name, PEERS[name].library, name, q, error=_describe(exc)) for q in passes]
    loops = [loop for loop, qs in _LOOP_PASSES.items() if any(q in passes for q in qs)]
    for loop in loops:
        if ctx["progress"] is not None:
            ctx["progress"](f"{case.label} (batch {batch}) {loop}")
        _time_loop(loop, timings, problem, ctx["warmup"], ctx["repeats"], ctx["budget_s"])
        ctx["done"] += 1
    roof = ctx["roofline"]
    peak_flops = roof["gemm_gflops_per_s"] * 1e9 if roof else None
    bandwidth = roof["copy_bandwidth_gb_per_s"] * 1e9 if roof else None
    medians = {}
    for t in timings:
        for q in passes:
            if q in t.samples and q not in t.error:
                medians[(t.impl.name, q)] = statistics.median(t.samples[q])
    for t in timings:
        impl = t.impl
        for q in passes:
            if q in t.error or q not in t.samples:
                rows.append(_row(base, impl.name, impl.library, impl.backend, q,
                                 error=t.error.get(q, "failed: no sample")))
                continue
            s = t.samples[q]
            med = medians[(impl.name, q)]
            flops, nbytes = problem.flops(q), problem.bytes(q)
            values = dict(median_ms=med * 1e3, min_ms=min(s) * 1e3, max_ms=max(s) * 1e3, repeats=len(s),
                          peak_mem_mb=t.peak_mb.get(q), flops=flops, bytes=nbytes,
                          max_abs_err=t.max_abs_err.get(q) if impl.comparable else None)
            if flops is not None and med > 0:
                values["gflops_per_s"] = flops / med / 1e9
            if nbytes is not None and med > 0:
                values["gb_per_s"] = nbytes / med / 1e9
            if flops and nbytes and peak_flops and bandwidth and med > 0:
                values["roofline_fraction"] = (flops / med) / min(peak_flops, bandwidth * flops / nbytes)
            row = _row(base, impl.name, impl.library, impl.backend, q, **values)
            if impl.library == "equitp":
                row["speedup_vs"] = {
                    other.impl.name: medians[(other.impl.name, q)] / med
                    for other in timings
                    if other.impl.library != "equitp" and (other.impl.name, q) in medians and med > 0
                }
            rows.append(row)
    order = {name: i for i, (name, _, _) in enumerate(planned)}
    rows.sort(key=lambda r: (PASSES.index(r["pass"]) if r["pass"] in PASSES else 9, order.get(r["impl"], 99)))
    del problem, timings
    gc.collect()
    return rows


def _failed_entry(case: Case, batch: int, ctx: dict, exc: BaseException) -> List[dict]:
    """One row per planned implementation and pass of a case that failed as a whole, each saying why."""
    base = dict(suite=ctx["suite"], case=case.label, tp=case.tp, device=str(ctx["device"]),
                dtype=str(ctx["dtype"]).replace("torch.", ""), batch=batch, params=dict(case.params))
    reason = _describe(exc)
    try:
        backends = [b for b in (ctx["backends"] or [default_backend(ctx["device"])]) if b in equitp_backends(case.tp)]
        planned = [(f"equitp-{b}", "equitp", b) for b in backends]
        planned += [(n, PEERS[n].library, n) for n in peers_for(case, None, ctx["peers"])]
    except Exception:  # noqa: BLE001
        planned = [("equitp", "equitp", None)]
    return [_row(base, n, lib, be, q, error=reason) for n, lib, be in planned for q in ctx["passes"]]


def _run_e2(ctx: dict) -> List[dict]:
    """The ``e2`` suite, written in ``equitp.bench._e2_suite`` (imported lazily: it may not exist yet)."""
    base = dict(suite="e2", case="e2", tp="e2", device=str(ctx["device"]),
                dtype=str(ctx["dtype"]).replace("torch.", ""))
    try:
        from ._e2_suite import run_e2_suite
    except ImportError as exc:
        return [_row(base, "equitp", "equitp", None, None,
                     error=f"skipped: the e2 suite (equitp.bench._e2_suite) is not available ({exc})")]

    def progress(*args, **kwargs):
        if ctx["progress"] is not None:
            text = " ".join(str(a) for a in args) or " ".join(f"{k}={v}" for k, v in kwargs.items())
            ctx["progress"](f"e2 {text}"[:80])

    try:
        raw = run_e2_suite(quick=ctx["quick"], device=str(ctx["device"]), dtype=ctx["dtype"], progress=progress)
    except Exception as exc:  # noqa: BLE001
        return [_row(base, "equitp", "equitp", None, None, error=_describe(exc))]
    rows = []
    for r in raw:
        row = {k: None for k in ROW_KEYS}
        row.update(base)
        row.update({k: v for k, v in r.items() if k in row})
        extra = {k: v for k, v in r.items() if k not in row}
        if extra:  # keys outside the schema go to params (a dict named "extra" is merged into them)
            params = dict(row.get("params") or {})
            for k, v in extra.items():
                if k == "extra" and isinstance(v, dict):
                    params.update(v)
                else:
                    params[k] = v
            row["params"] = params
        row["suite"] = "e2"
        if row.get("speedup_vs") is None:
            row["speedup_vs"] = {}
        rows.append(row)
    return rows


def run_benchmark(
    suite: Optional[str] = None,
    cases: Optional[Sequence[str]] = None,
    tps: Optional[Sequence[str]] = None,
    backends: Optional[Sequence[str]] = None,
    peers: Optional[Sequence[str]] = None,
    device: str = "cpu",
    dtype: str = "float32",
    batch: Optional[int] = None,
    quick: bool = False,
    passes: Optional[Sequence[str]] = None,
    repeats: Optional[int] = None,
    warmup: Optional[int] = None,
    budget_s: Optional[float] = None,
    threads: Optional[int] = None,
    measure_machine: bool = True,
    progress: Optional[Callable[[str, int, int], None]] = None,
) -> dict:
    """Runs a benchmark and returns ``{"machine": {...}, "config": {...}, "rows": [...]}``.

    Args:
        suite: suite name (default ``"default"``; see :data:`equitp.bench.SUITES`).
        cases: case labels (see :data:`equitp.bench.CASES`); without ``suite`` they run at their nominal batch.
        tps: tensor-product kinds to keep (``channelwise``, ``fully-connected``, ``full``, ``accumulate``).
        backends: equitp executors to time (default: the one ``backend=None`` picks for the device).
        peers: peers to time (default: every default peer that has the case's kind); ``[]`` for none.
        device: ``"cpu"`` or ``"cuda"``.
        dtype: ``"float32"`` or ``"float64"``.
        batch: overrides the batch of every case (for ``accumulate``: the number of rows).
        quick: the suite's quick entries (smaller sizes, fewer rounds).
        passes: passes to report (default: the suite's, ``fwd``, ``bwd``, ``fwd+bwd``); ``double-bwd`` on request.
        repeats, warmup: timed and untimed rounds (default: the suite's; ``quick``: at most 3 and 1).
        budget_s: time budget (seconds) of the timed rounds of one loop of one case; at least 3 rounds run
            (default: the suite's, 20 s; 4 s for ``default``).
        threads: torch threads (default ``os.cpu_count()``).
        measure_machine: measure the roofline (copy bandwidth, GEMM) once; without it ``roofline_fraction`` is None.
        progress: ``progress(description, done, total)``, called before each timed loop.

    Raises:
        ValueError: unknown suite, case, tp, backend, peer, pass, device or dtype (the message lists the valid ones).
    """
    if dtype not in ("float32", "float64"):
        raise ValueError(f"unknown dtype {dtype!r}; valid dtypes are: float32, float64")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}; valid devices are: cpu, cuda")
    all_backends = sorted(set(equitp_backends("channelwise")) | set(equitp_backends("accumulate")))
    if backends:
        _unknown("backend", backends, all_backends)
    if peers:
        _unknown("peer", peers, list(PEERS))
    if passes:
        _unknown("pass", passes, list(PASSES))
    entries = plan(suite, cases, tps, batch, quick)
    s = SUITES[suite or "default"]
    torch_dtype = getattr(torch, dtype)
    torch_device = torch.device(device)
    torch.set_num_threads(threads or os.cpu_count() or 1)
    if repeats is not None and repeats < 1:
        raise ValueError(f"repeats: expected a positive integer, got {repeats}")
    if warmup is not None and warmup < 0:
        raise ValueError(f"warmup: expected a non-negative integer, got {warmup}")
    repeats = repeats if repeats is not None else (min(3, s.repeats) if quick else s.repeats)
    warmup = warmup if warmup is not None else s.warmup
    budget_s = budget_s if budget_s is not None else s.budget_s
    passes = tuple(q for q in PASSES if q in (passes or s.passes))
    machine = machine_info(torch_device)
    roofline = None
    loops_per_entry = sum(1 for qs in _LOOP_PASSES.values() if any(q in passes for q in qs))
    total = len(entries) * loops_per_entry + (1 if s.external else 0)
    if measure_machine:
        if progress is not None:
            progress("measuring the roofline (copy, GEMM)", 0, total)
        try:
            roofline = measure_roofline(torch_device, torch_dtype, quick=quick)
        except Exception as exc:  # noqa: BLE001 - e.g. no CUDA: rows say why, the roofline is left out
            machine["roofline_error"] = _describe(exc)
    if roofline:
        machine.update(roofline)
    ctx = dict(suite=s.name if (suite or not cases) else None, device=torch_device, dtype=torch_dtype, passes=passes,
               backends=list(backends) if backends else None, peers=list(peers) if peers is not None else None,
               warmup=warmup, repeats=repeats, budget_s=budget_s, roofline=roofline, quick=quick, done=0)
    if progress is not None:
        ctx["progress"] = lambda text: progress(text, ctx["done"], total)
    else:
        ctx["progress"] = None
    started = time.perf_counter()
    rows: List[dict] = []
    if s.external and not cases:
        rows += _run_e2(ctx)
        ctx["done"] += 1
    entry_times = []
    for case, b in entries:
        t0 = time.perf_counter()
        done = ctx["done"]
        try:
            rows += _run_entry(case, b, ctx)
        except Exception as exc:  # noqa: BLE001 - a case that fails outside the per-implementation guards: its rows
            rows += _failed_entry(case, b, ctx, exc)  # say why, the other cases run
            gc.collect()
        ctx["done"] = done + loops_per_entry
        entry_times.append({"case": case.label, "batch": b, "wall_s": round(time.perf_counter() - t0, 2)})
    if progress is not None:
        progress("done", total, total)
    config = dict(suite=ctx["suite"], cases=list(cases) if cases else None, tps=list(tps) if tps else None,
                  backends=ctx["backends"], peers=ctx["peers"], device=str(torch_device), dtype=dtype, batch=batch,
                  quick=quick, passes=list(passes), repeats=repeats, warmup=warmup, budget_s=budget_s,
                  wall_s=round(time.perf_counter() - started, 1), entries=entry_times)
    return {"machine": machine, "config": config, "rows": rows}
