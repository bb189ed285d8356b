"""The ``e2`` benchmark suite: padded vs block kernel expansion, R2Conv vs Conv2d, network construction.

Run alone with ``python -m equitp.bench._e2_suite [--quick] [--device cuda] [--calibrate]``; ``equitp bench --suite
e2`` calls :func:`run_e2_suite`. Rows (one per case, backend and pass) carry: ``case``, ``tp``
(``"e2-expansion"``, ``"r2conv"``, ``"construction"``), ``impl``/``backend`` (``"padded"``, ``"block"``, ``"auto"``,
``"conv2d"``, ``"e2cnn"``), ``library``, ``device``, ``dtype``, ``batch``, ``pass`` (``"fwd"``, ``"fwd+bwd"``,
``"build"``), ``median_ms``, ``min_ms``, ``max_ms``, ``repeats``, ``peak_mem_mb``, ``flops``, ``bytes`` (stored
basis bytes for expansion rows), ``speedup_vs`` and ``extra`` (padding ratio, cost-model prediction and choice,
whether the choice was the faster one).

Backends are timed in the same process, alternating round by round after warm-up; medians are reported.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import types
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["run_e2_suite", "format_e2_table", "calibrate_cost_model"]


# ---------------------------------------------------------------------------------------------------- helpers
def _fixed_grad(like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A fixed upstream gradient shaped like ``like``, made once per case and reused by every backward (as the tensor
    product runner does): allocating and filling it is the caller's cost, not the expansion's."""
    g = torch.randn(like.shape, generator=gen, dtype=torch.float64)
    return g.to(dtype=like.dtype, device=like.device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_CLOCK = {"fn": time.perf_counter}


def _time_alternating(fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int = 2):
    """Median/min/max milliseconds of each function, timed round-robin (one call of each per round).

    The clock is wall time, or the process's CPU time with ``run_e2_suite(clock="cpu")`` (robust on a shared
    machine; equal to wall time for one thread when the process is not preempted).
    """
    clock = _CLOCK["fn"]
    times: dict[str, list[float]] = {k: [] for k in fns}
    peaks: dict[str, float | None] = {k: None for k in fns}
    for k, f in fns.items():
        for _ in range(warmup):
            f()
        if device.type == "cuda":
            _sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            f()
            _sync(device)
            peaks[k] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    for _ in range(repeats):
        for k, f in fns.items():
            _sync(device)
            t0 = clock()
            f()
            _sync(device)
            times[k].append((clock() - t0) * 1e3)
    return {
        k: dict(median_ms=statistics.median(v), min_ms=min(v), max_ms=max(v), repeats=len(v), peak_mem_mb=peaks[k])
        for k, v in times.items()
    }


def _row(case: str, tp: str, backend: str, device: torch.device, dtype: torch.dtype, batch: int | None,
         pass_: str, stats: dict, library: str = "equitp", **kw) -> dict:
    row = dict(case=case, tp=tp, impl=backend, backend=backend, library=library, device=str(device),
               dtype=str(dtype).replace("torch.", ""), batch=batch, **{"pass": pass_})
    row.update(median_ms=None, min_ms=None, max_ms=None, repeats=None, peak_mem_mb=None, flops=None, bytes=None,
               speedup_vs={}, extra={})
    row.update(stats)
    row.update(kw)
    row["params"] = dict(row["extra"])
    return row


def _load_e2cnn():
    """e2cnn 0.2.3 (a peer only) patched for numpy 2 / recent torch inside its own modules; ``None`` if absent."""
    try:
        import e2cnn  # noqa: F401
        from e2cnn.kernels import irreps_basis, utils
        from e2cnn.nn.modules.r2_conv import basisexpansion_singleblock
    except Exception:  # noqa: BLE001 - absent or broken: no peer rows
        return None
    if getattr(utils, "_equitp_patched", False):
        return e2cnn
    np_shim = types.ModuleType("numpy_copy_shim")
    np_shim.__dict__.update(np.__dict__)
    np_shim.array = lambda obj, *a, copy=True, **k: (  # noqa: E731
        np.asarray(obj, *a, **k) if copy is False else np.array(obj, *a, copy=copy, **k)
    )
    utils.np = np_shim

    def _hash(self):
        gamma = self.gamma.tobytes() if isinstance(self.gamma, np.ndarray) else self.gamma
        return hash(self.in_irrep) + hash(self.out_irrep) + hash(self.mu.tobytes()) + hash(gamma)

    for name in ("R2FlipsSolution", "R2DiscreteRotationsSolution", "R2ContinuousRotationsSolution",
                 "R2FlipsDiscreteRotationsSolution", "R2FlipsContinuousRotationsSolution"):
        getattr(irreps_basis, name).__hash__ = _hash
    torch_shim = types.ModuleType("torch_mask_shim")
    torch_shim.__dict__.update(torch.__dict__)

    def tensor(data, *a, **k):
        out = torch.tensor(data, *a, **k)
        return out.bool() if isinstance(data, np.ndarray) and data.dtype == np.uint8 else out

    def zeros_like(t, *a, **k):
        if t.dtype == torch.bool and "dtype" not in k:
            k["dtype"] = torch.uint8
        return torch.zeros_like(t, *a, **k)

    torch_shim.tensor = tensor
    torch_shim.zeros_like = zeros_like
    basisexpansion_singleblock.torch = torch_shim
    utils._equitp_patched = True
    return e2cnn


def _clear_equitp_caches() -> None:
    from equitp.e2 import _basis, _expansion

    _basis._PAIR_CACHE.clear()
    _basis.irreps_pair_solution.cache_clear()
    _expansion._LAYER_CACHE.clear()
    _expansion._STRUCT_CACHE.clear()


def _numba_threads() -> int | None:
    try:
        import numba

        return numba.get_num_threads()
    except Exception:  # noqa: BLE001
        return None


# ---------------------------------------------------------------------------------------------------- cases
def _expansion_cases(quick: bool) -> list[tuple[str, Any, Any, int]]:
    from equitp import e2

    c4, c8, d8 = e2.rot2d(4), e2.rot2d(8), e2.flip_rot2d(8)
    o2 = e2.flip_rot2d(-1, maximum_frequency=8)
    n = 8 if quick else 32
    m = 4 if quick else 16
    reg = lambda s, k: e2.FieldType(s, [s.regular_repr] * k)  # noqa: E731
    irrep_sum = e2.directsum(c8.irreps * 2, name="c8-irreps-x2")  # 16 channels, identity change of basis
    band = e2.directsum([o2.irrep(0, 0)] + [o2.irrep(1, k) for k in range(9)], name="o2-band8")
    irreps_fields = e2.FieldType(c8, c8.irreps * (4 if quick else 16))
    return [
        (f"C8-regular-{n}x{n}-k5", reg(c8, n), reg(c8, n), 5),
        (f"D8-regular-{m}x{m}-k5", reg(d8, m), reg(d8, m), 5),
        (f"C8-irrepsum16-{m}x{m}-k5", e2.FieldType(c8, [irrep_sum] * m), e2.FieldType(c8, [irrep_sum] * m), 5),
        (f"C8-irreps-fields-{len(irreps_fields)}-k5", irreps_fields, irreps_fields, 5),
        (f"O2-L8-band-{m}x{m}-k7", e2.FieldType(o2, [band] * m), e2.FieldType(o2, [band] * m), 7),
        ("C4-regular-4x4-k3", reg(c4, 4), reg(c4, 4), 3),
    ]


def _bench_expansion(quick, device, dtype, repeats, progress, cases=None) -> list[dict]:
    from equitp import e2

    rows = []
    for name, fin, fout, k in _expansion_cases(quick):
        if cases and not any(c in name for c in cases):
            continue
        if progress:
            progress(f"expansion {name}")
        lb = e2.layer_basis(fin, fout, e2.basis_params(k))
        gen = torch.Generator(device="cpu").manual_seed(0)
        w = (torch.randn(lb.dim, generator=gen, dtype=torch.float64) * 0.1).to(dtype=dtype, device=device)
        w.requires_grad_(True)
        ref = lb.expand(w, "padded").detach()
        err = float((lb.expand(w, "block").detach() - ref).abs().max() / ref.abs().max())
        g_out = _fixed_grad(ref, gen)

        def fwd(expansion):
            return lambda: lb.expand(w, expansion)

        def fwd_bwd(expansion):
            def f():
                y = lb.expand(w, expansion)
                (g,) = torch.autograd.grad(y, w, g_out)
                return g

            return f

        stats_f = _time_alternating({"padded": fwd("padded"), "block": fwd("block")}, device, repeats)
        stats_b = _time_alternating({"padded": fwd_bwd("padded"), "block": fwd_bwd("block")}, device, repeats)
        choice = lb.choose_expansion()
        faster = min(("padded", "block"), key=lambda b: stats_b[b]["median_ms"])
        extra = dict(
            padding_ratio=round(lb.padding_ratio(), 2),
            weights=lb.dim,
            auto_choice=choice,
            measured_faster=faster,
            auto_correct=choice == faster,
            predicted_ms={b: round(1e3 * lb.predicted_seconds(b), 3) for b in ("padded", "block")},
            block_vs_padded_max_rel_err=err,
            stored_bytes_ratio=round(lb.stored_bytes("padded", dtype) / lb.stored_bytes("block", dtype), 2),
            block_executor=lb.block_executor(device),
        )
        # issue 4's target binds where the padding ratio is >= 4: block >= 2x faster fwd+bwd, memory <= 1/4
        speedup_fb = stats_b["padded"]["median_ms"] / stats_b["block"]["median_ms"]
        extra["target_binds"] = extra["padding_ratio"] >= 4
        extra["target_speed_met"] = bool(speedup_fb >= 2) if extra["target_binds"] else None
        extra["target_memory_met"] = bool(extra["stored_bytes_ratio"] >= 4) if extra["target_binds"] else None
        for pass_, stats in (("fwd", stats_f), ("fwd+bwd", stats_b)):
            mult = 1 if pass_ == "fwd" else 2
            for b in ("padded", "block"):
                other = "block" if b == "padded" else "padded"
                rows.append(_row(
                    name, "e2-expansion", b, device, dtype, None, pass_, stats[b],
                    flops=mult * lb.flops(b), bytes=lb.stored_bytes(b, dtype),
                    speedup_vs={other: stats[other]["median_ms"] / stats[b]["median_ms"]}, extra=dict(extra),
                ))
        del w, ref
        gc.collect()
    return rows


def _bench_e2cnn_expansion(quick, device, dtype, repeats, progress) -> list[dict]:
    e2cnn = _load_e2cnn()
    if e2cnn is None:
        return []
    from e2cnn import gspaces
    from e2cnn import nn as enn

    n = 8 if quick else 32
    if progress:
        progress("expansion e2cnn peer")
    gs = gspaces.Rot2dOnR2(8)
    ft = enn.FieldType(gs, [gs.regular_repr] * n)
    conv = enn.R2Conv(ft, ft, 5).to(device=device, dtype=dtype)
    exp = conv._basisexpansion
    w = conv.weights

    with torch.no_grad():
        g_out = _fixed_grad(exp(w), torch.Generator(device="cpu").manual_seed(0))

    def fwd():
        return exp(w)

    def fwd_bwd():
        y = exp(w)
        return torch.autograd.grad(y, w, g_out)

    stats = _time_alternating({"fwd": fwd, "fwd+bwd": fwd_bwd}, device, repeats)
    return [
        _row(f"C8-regular-{n}x{n}-k5", "e2-expansion", "e2cnn", device, dtype, None, p, stats[p], library="e2cnn",
             extra=dict(weights=int(w.numel()), note="e2cnn 0.2.3 BlocksBasisExpansion (padded, per pair)"))
        for p in ("fwd", "fwd+bwd")
    ]


def _bench_r2conv(quick, device, dtype, repeats, progress) -> list[dict]:
    from equitp import e2

    s = e2.rot2d(8)
    n = 4 if quick else 16
    batch = 4 if quick else 16
    size = 32
    ft = e2.FieldType(s, [s.regular_repr] * n)
    name = f"C8-regular-{n}x{n}-k5-{size}px"
    if progress:
        progress(f"r2conv {name}")
    torch.manual_seed(0)
    convs = {b: e2.R2Conv(ft, ft, 5, padding=2, expansion=b).to(device=device, dtype=dtype)
             for b in ("padded", "block")}
    convs["block"].load_state_dict(convs["padded"].state_dict())
    plain = torch.nn.Conv2d(ft.size, ft.size, 5, padding=2).to(device=device, dtype=dtype)
    x = torch.randn(batch, ft.size, size, size, device=device, dtype=dtype)
    with torch.no_grad():
        g_out = _fixed_grad(plain(x), torch.Generator(device="cpu").manual_seed(1))

    def fwd(m):
        return lambda: m(x)

    def fwd_bwd(m):
        def f():
            y = m(x)
            y.backward(g_out)

        return f

    stats_f = _time_alternating({"padded": fwd(convs["padded"]), "block": fwd(convs["block"]),
                                 "conv2d": fwd(plain)}, device, repeats)
    stats_b = _time_alternating({"padded": fwd_bwd(convs["padded"]), "block": fwd_bwd(convs["block"]),
                                 "conv2d": fwd_bwd(plain)}, device, repeats)
    eval_conv = convs["padded"].eval()
    with torch.no_grad():
        stats_e = _time_alternating({"eval": fwd(eval_conv), "conv2d": fwd(plain)}, device, repeats)
    rows = []
    flops = 2 * batch * size * size * ft.size * ft.size * 25
    for pass_, stats, mult in (("fwd", stats_f, 1), ("fwd+bwd", stats_b, 3)):
        for b in ("padded", "block", "conv2d"):
            extra = dict(weights=convs["padded"].basis.dim if b != "conv2d" else plain.weight.numel() + ft.size,
                         image=size, note="training mode: expansion + conv2d" if b != "conv2d" else "plain Conv2d")
            rows.append(_row(name, "r2conv", b, device, dtype, batch, pass_, stats[b],
                             library="equitp" if b != "conv2d" else "torch", flops=mult * flops,
                             speedup_vs={} if b == "conv2d" else {"conv2d": stats["conv2d"]["median_ms"]
                                                                  / stats[b]["median_ms"]},
                             extra=extra))
    rows.append(_row(name, "r2conv", "eval-cached", device, dtype, batch, "fwd", stats_e["eval"], flops=flops,
                     speedup_vs={"conv2d": stats_e["conv2d"]["median_ms"] / stats_e["eval"]["median_ms"]},
                     extra=dict(note="eval mode: cached filter, plain conv2d")))
    return rows


def _build_network(n_layers: int, n_fields: int, kernel_size: int, device, dtype):
    from equitp import e2

    s = e2.rot2d(8)
    ft = e2.FieldType(s, [s.regular_repr] * n_fields)
    return torch.nn.Sequential(*[e2.R2Conv(ft, ft, kernel_size, padding=kernel_size // 2)
                                 for _ in range(n_layers)]).to(device=device, dtype=dtype)


def _bench_construction(quick, device, dtype, repeats, progress) -> list[dict]:
    rows = []
    name = "C8-10-layers-32-regular-k5"
    if progress:
        progress(f"construction {name}")
    cold, warm = [], []
    for _ in range(max(3, repeats // 3)):
        _clear_equitp_caches()
        gc.collect()
        t0 = time.perf_counter()
        net = _build_network(10, 32, 5, device, dtype)
        _sync(device)
        cold.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        net = _build_network(10, 32, 5, device, dtype)
        _sync(device)
        warm.append((time.perf_counter() - t0) * 1e3)
    n_params = sum(p.numel() for p in net.parameters())
    del net
    stat = lambda v: dict(median_ms=statistics.median(v), min_ms=min(v), max_ms=max(v), repeats=len(v))  # noqa: E731
    rows.append(_row(name, "construction", "equitp-cold", device, dtype, None, "build", stat(cold),
                     extra=dict(parameters=n_params, note="empty basis caches, weights initialised")))
    rows.append(_row(name, "construction", "equitp-warm", device, dtype, None, "build", stat(warm),
                     extra=dict(parameters=n_params, note="bases cached by an earlier build")))
    e2cnn = _load_e2cnn()
    if e2cnn is not None and not quick:
        from e2cnn import gspaces
        from e2cnn import nn as enn
        from e2cnn.nn.modules.r2_conv import basisexpansion_singleblock as sb

        if progress:
            progress("construction e2cnn peer (slow)")
        sb._stored_filters.clear()
        t0 = time.perf_counter()
        gs = gspaces.Rot2dOnR2(8)
        ft = enn.FieldType(gs, [gs.regular_repr] * 32)
        enet = enn.SequentialModule(*[enn.R2Conv(ft, ft, 5, padding=2) for _ in range(10)])
        dt = (time.perf_counter() - t0) * 1e3
        e_params = sum(p.numel() for p in enet.parameters())
        del enet
        rows.append(_row(name, "construction", "e2cnn", device, dtype, None, "build",
                         dict(median_ms=dt, min_ms=dt, max_ms=dt, repeats=1), library="e2cnn",
                         extra=dict(parameters=e_params, note="e2cnn 0.2.3, cold")))
        for r in rows[:2]:
            r["speedup_vs"] = {"e2cnn": dt / r["median_ms"]}
    return rows


def run_e2_suite(quick: bool = False, device: str = "cpu", dtype=torch.float32, progress=None,
                 clock: str = "wall", cases: list[str] | None = None) -> list[dict]:
    """Run the e2 suite and return its rows (see the module docstring for the keys).

    Args:
        quick: smaller layers and fewer repeats (a smoke run).
        device: ``"cpu"`` or ``"cuda"``.
        dtype: ``torch.float32`` or ``torch.float64`` (or their names).
        progress: optional callable receiving one short status string per step.
        clock: ``"wall"`` (default) or ``"cpu"`` (process CPU time, CPU device only).
        cases: only the expansion cases whose name contains one of these strings (and no other part of the suite).
    """
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.replace("torch.", ""))
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu'; got {clock!r}")
    dev = torch.device(device)
    if clock == "cpu" and dev.type != "cpu":
        raise ValueError("clock='cpu' measures CPU time and is only meaningful on the CPU device")
    repeats = 5 if quick else 15
    _CLOCK["fn"] = time.process_time if clock == "cpu" else time.perf_counter
    rows = []
    try:
        rows += _bench_expansion(quick, dev, dtype, repeats, progress, cases)
        if not cases:
            rows += _bench_e2cnn_expansion(quick, dev, dtype, repeats, progress)
            rows += _bench_r2conv(quick, dev, dtype, repeats, progress)
            rows += _bench_construction(quick, dev, dtype, repeats, progress)
    finally:
        _CLOCK["fn"] = time.perf_counter
    for r in rows:
        r["extra"]["clock"] = clock
        r["extra"]["threads"] = torch.get_num_threads()
        r["extra"]["numba_threads"] = _numba_threads()
        r["params"] = dict(r["extra"])
    return rows


# ---------------------------------------------------------------------------------------------------- calibration
def calibrate_cost_model(device: str = "cpu", dtype=torch.float32, repeats: int = 15) -> dict[str, float]:
    """Fit the constants of :data:`equitp.e2.COST_MODEL` on this machine from the primitives' timings (C_8
    regular layer, 32 x 32 fields, 5 x 5); the medians of the current clock (``--cpu-time`` for CPU time)."""
    from equitp import e2
    from equitp.e2._fill import block_fill

    dev = torch.device(device)
    s = e2.rot2d(8)
    ft = e2.FieldType(s, [s.regular_repr] * 32)
    lb = e2.layer_basis(ft, ft, e2.basis_params(5))
    p = lb.pairs[0]
    b = p.basis
    F = p.n_out * p.n_in
    O, I, S = b.out_size, b.in_size, b.num_points
    W = torch.randn(F, b.dim, device=dev, dtype=dtype)
    B = lb._padded_tensors(dtype, dev)[0]
    struct, qo, qi = lb._block_tensors(dtype, dev)[0]
    K = torch.randn(O, I * S * F, device=dev, dtype=dtype)
    small = torch.randn(4, device=dev, dtype=dtype)
    gc_plan = lb._gconv_plan(dtype)  # gconv: per-call rows and the gather (CPU only)
    psi = torch.randn(gc_plan.n_psi, dtype=dtype)
    filt = torch.empty(gc_plan.shape, dtype=dtype)
    gather = gc_plan._kernel("gather_ser")
    gc_macs, gc_entries, gc_rows = lb._gconv_counts()
    st = _time_alternating({
        "gemm": lambda: torch.mm(W, B),
        "fill": lambda: block_fill(struct, W),
        "q": lambda: torch.mm(qo, K),
        "move": lambda: K.view(O, I, p.n_out, p.n_in, S).permute(2, 0, 3, 1, 4).contiguous(),
        "op": lambda: small + 1,
        "gather": lambda: gather(gc_plan.i64, gc_plan.i32, gc_plan.flt, psi.numpy(), filt.view(-1).numpy(), 1),
        "rows": gc_plan.rows,
    }, dev, repeats)
    elems = F * O * I * S
    return {
        "gemm_mac": st["gemm"]["median_ms"] * 1e-3 / (F * b.dim * O * I * S),
        "fill_nnz": st["fill"]["median_ms"] * 1e-3 / (F * b.nnz),
        "q_mac": st["q"]["median_ms"] * 1e-3 / (elems * O),
        "move": st["move"]["median_ms"] * 1e-3 / elems,
        "op": st["op"]["median_ms"] * 1e-3,
        "gather": st["gather"]["median_ms"] * 1e-3 / gc_entries,
        "rows_mac": st["rows"]["median_ms"] * 1e-3 / gc_rows,
    }


# ---------------------------------------------------------------------------------------------------- CLI
def format_e2_table(rows: list[dict]) -> str:
    headers = ["case", "tp", "backend", "pass", "median ms", "min-max ms", "speed-up", "pad ratio", "stored KB",
               "mem ratio", "note"]
    lines = []
    for r in rows:
        sp = ", ".join(f"{v:.2f}x vs {k}" for k, v in (r.get("speedup_vs") or {}).items())
        ex = r.get("extra") or {}
        note = ""
        if r["tp"] == "e2-expansion" and "padding_ratio" in ex:
            note = f"auto={ex['auto_choice']}{'' if ex['auto_correct'] else ' (!)'}"
            if r["backend"] == "block":
                note += f", executor={ex.get('block_executor')}"
                if ex.get("target_binds") and r["pass"] == "fwd+bwd":
                    note += (f", target: speed {'met' if ex['target_speed_met'] else 'NOT met'}, memory "
                             f"{'met' if ex['target_memory_met'] else 'NOT met'}")
        elif "note" in ex:
            note = ex["note"]
        lines.append([
            r["case"], r["tp"], r["backend"], r["pass"], f"{r['median_ms']:.3f}",
            f"{r['min_ms']:.3f}-{r['max_ms']:.3f}", sp,
            f"{ex['padding_ratio']}" if "padding_ratio" in ex else "-",
            f"{r['bytes'] / 1024:.1f}" if r.get("bytes") else "-",
            f"1/{ex['stored_bytes_ratio']}" if "stored_bytes_ratio" in ex and r["backend"] == "block" else "-", note,
        ])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    out.append("  ".join("-" * w for w in widths))
    for line in lines:
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths)))
    return "\n".join(out)


def _machine_line(device: str) -> str:
    try:
        from ._machine import machine_info

        info = machine_info(torch.device(device))
        return ", ".join(f"{k}={v}" for k, v in info.items() if v is not None)
    except Exception:  # noqa: BLE001
        import os
        import platform

        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller layers, fewer repeats")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--calibrate", action="store_true", help="fit the cost-model constants and print them")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--cpu-time", action="store_true", help="time with the process CPU clock (shared machines)")
    parser.add_argument("--case", action="append", default=None,
                        help="only expansion cases whose name contains this (repeatable)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        try:
            import numba

            numba.set_num_threads(args.threads)
        except Exception:  # noqa: BLE001
            pass
    dtype = getattr(torch, args.dtype)
    print(f"machine: {_machine_line(args.device)}; torch threads {torch.get_num_threads()}")
    if args.calibrate:
        if args.cpu_time:
            _CLOCK["fn"] = time.process_time
        for k, v in calibrate_cost_model(args.device, dtype).items():
            print(f"{k:10s} {v:.3e}")
        return 0
    rows = run_e2_suite(quick=args.quick, device=args.device, dtype=dtype,
                        progress=lambda m: print(f"  ... {m}", file=sys.stderr, flush=True),
                        clock="cpu" if args.cpu_time else "wall", cases=args.case)
    print(format_e2_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
