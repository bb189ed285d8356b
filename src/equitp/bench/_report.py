"""Outputs of a benchmark run: the terminal table, CSV and JSON files, and PNG plots (matplotlib, optional)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Dict, List, Optional

from ._runner import ROW_KEYS

__all__ = ["format_table", "to_csv", "to_json", "to_markdown", "write_outputs", "make_plots"]


# short peer names for the table's headers
_SHORT = {"cuequivariance": "cueq", "openequivariance": "oeq", "e3nn-compile": "e3nn-c", "dense-matmul": "dense",
          "torch-sparse": "sparse", "python-loops": "loops"}


def _fmt(v, spec: str = ".3g") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return format(v, spec)
    return str(v)


def _ms(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def _machine_line(machine: dict) -> str:
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ""
    roof = ""
    if machine.get("copy_bandwidth_gb_per_s") is not None:
        roof = (f"; roofline: copy {machine['copy_bandwidth_gb_per_s']:.1f} GB/s, GEMM "
                f"{machine['gemm_gflops_per_s']:.0f} GFLOP/s ({machine.get('roofline_dtype')})")
    return (f"{machine.get('cpu_model')} ({machine.get('cpu_count')} logical CPUs, torch threads "
            f"{machine.get('torch_threads')}){gpu}; torch {machine.get('torch')}, equitp {machine.get('equitp')}, "
            f"e3nn {machine.get('e3nn')}, cuequivariance-torch {machine.get('cuequivariance_torch')}{roof}")


def _render(headers: List[str], lines: List[List[str]], right: set) -> str:
    widths = [max([len(h)] + [len(line[i]) for line in lines]) for i, h in enumerate(headers)]

    def fmt_line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [fmt_line(headers), "  ".join("-" * w for w in widths)]
    out += [fmt_line(line).rstrip() for line in lines]
    return "\n".join(out)


def format_table(result: dict) -> str:
    """The terminal table: one line per (case, pass, equitp executor), with each peer's median and the speed-up
    (peer time / equitp time); one table per kind of product; reasons for skipped peers in the notes."""
    rows = result["rows"]
    parts = [f"machine: {_machine_line(result['machine'])}"]
    cfg = result.get("config", {})
    parts.append(f"suite {cfg.get('suite') or '-'}, {cfg.get('device')}, {cfg.get('dtype')}; median of up to "
                 f"{cfg.get('repeats')} alternating rounds after {cfg.get('warmup')} warm-up; "
                 f"'x peer' = peer time / equitp time (> 1: equitp is faster)")
    used = {r["impl"] for r in rows}
    short = ", ".join(f"{v} = {k}" for k, v in _SHORT.items() if k in used)
    if short:
        parts.append(f"peers: {short}")
    notes: Dict[str, set] = {}
    groups: Dict[str, List[dict]] = {}
    for r in rows:
        groups.setdefault("e2" if r.get("suite") == "e2" else (r.get("tp") or "-"), []).append(r)
    for tp, group in groups.items():
        if tp == "e2":
            parts.append(_format_generic(group, "e2"))
            continue
        peers = list(dict.fromkeys(r["impl"] for r in group if r["library"] != "equitp" and r.get("error") is None))
        headers = ["case", "batch", "pass", "impl", "median ms", "min-max ms", "GFLOP/s", "GB/s", "roofline",
                   "max err", "peak MB"]
        for p in peers:
            headers += [f"{_SHORT.get(p, p)} ms", f"x {_SHORT.get(p, p)}"]
        headers.append("note")
        medians = {(r["case"], r["batch"], r["pass"], r["impl"]): r for r in group}
        lines = []
        for r in group:
            if r["library"] != "equitp":
                if r.get("error"):
                    notes.setdefault(f"{r['impl']}: {r['error']}", set()).add(r["case"])
                continue
            line = [r["case"], str(r["batch"]), str(r["pass"]), r["impl"], _ms(r["median_ms"]),
                    f"{_ms(r['min_ms'])}-{_ms(r['max_ms'])}" if r["min_ms"] is not None else "-",
                    _fmt(r["gflops_per_s"]), _fmt(r["gb_per_s"]),
                    f"{100 * r['roofline_fraction']:.1f}%" if r["roofline_fraction"] is not None else "-",
                    _fmt(r["max_abs_err"], ".1e"), _fmt(r["peak_mem_mb"], ".0f")]
            for p in peers:
                other = medians.get((r["case"], r["batch"], r["pass"], p))
                line.append(_ms(other["median_ms"]) if other and other.get("median_ms") is not None else "-")
                sp = (r.get("speedup_vs") or {}).get(p)
                line.append(f"{sp:.1f}" if sp is not None else "-")
            line.append((r.get("error") or "")[:60])
            lines.append(line)
        if lines:
            right = set(range(4, len(headers) - 1)) | {1}
            parts.append(f"\n[{tp}]\n" + _render(headers, lines, right))
    if notes:
        parts.append("\nnotes:")
        for text, cases in notes.items():
            which = "all cases" if len(cases) > 3 else ", ".join(sorted(cases))
            parts.append(f"  {text} ({which})")
    return "\n".join(parts)


def to_markdown(result: dict) -> str:
    """The rows as Markdown tables (one per kind of product): per case, pass and equitp executor, its median
    (min-max), GFLOP/s and roofline fraction, each peer's median and the speed-up; then the machine."""
    rows = result["rows"]
    out = []
    groups: Dict[str, List[dict]] = {}
    for r in rows:
        groups.setdefault("e2" if r.get("suite") == "e2" else (r.get("tp") or "-"), []).append(r)
    for tp, group in groups.items():
        peers = list(dict.fromkeys(r["impl"] for r in group if r["library"] != "equitp" and r.get("error") is None))
        headers = ["case", "batch", "pass", "equitp", "median ms (min-max)", "GFLOP/s", "roofline", "max err"]
        for p in peers:
            headers += [f"{p} ms", f"x {p}"]
        by_key = {(r["case"], r["batch"], r["pass"], r["impl"]): r for r in group}
        lines = []
        for r in group:
            if r["library"] != "equitp":
                continue
            if r.get("error"):
                lines.append([r["case"], str(r["batch"]), str(r["pass"]), r["backend"] or "-", r["error"]]
                             + [""] * (len(headers) - 5))
                continue
            line = [r["case"], str(r["batch"]), str(r["pass"]), r["backend"],
                    f"{_ms(r['median_ms'])} ({_ms(r['min_ms'])}-{_ms(r['max_ms'])})", _fmt(r["gflops_per_s"]),
                    f"{100 * r['roofline_fraction']:.1f}%" if r["roofline_fraction"] is not None else "-",
                    _fmt(r["max_abs_err"], ".1e")]
            for p in peers:
                other = by_key.get((r["case"], r["batch"], r["pass"], p))
                line.append(_ms(other["median_ms"]) if other and other.get("median_ms") is not None else "-")
                sp = (r.get("speedup_vs") or {}).get(p)
                line.append(f"**{sp:.1f}**" if sp is not None else "-")
            lines.append(line)
        if not lines:
            continue
        out.append(f"**{tp}**\n")
        out.append("| " + " | ".join(headers) + " |")
        out.append("|" + "|".join("---" if i < 4 else "---:" for i in range(len(headers))) + "|")
        out += ["| " + " | ".join(line) + " |" for line in lines]
        out.append("")
    skipped = {}
    for r in rows:
        if r["library"] != "equitp" and r.get("error"):
            skipped.setdefault(f"{r['impl']}: {r['error']}", set()).add(r["case"])
    for text, cases in skipped.items():
        out.append(f"- {text} ({'all cases' if len(cases) > 3 else ', '.join(sorted(cases))})")
    out.append(f"\nMachine: {_machine_line(result['machine'])}.")
    return "\n".join(out)


def _format_generic(group: List[dict], title: str) -> str:
    headers = ["case", "tp", "impl", "batch", "pass", "median ms", "min-max ms", "speed-up", "note"]
    lines = []
    for r in group:
        sp = ", ".join(f"x{v:.1f} vs {k}" for k, v in (r.get("speedup_vs") or {}).items() if v is not None)
        lines.append([str(r.get("case")), str(r.get("tp")), str(r.get("impl")), str(r.get("batch")),
                      str(r.get("pass")), _ms(r.get("median_ms")),
                      f"{_ms(r.get('min_ms'))}-{_ms(r.get('max_ms'))}" if r.get("min_ms") is not None else "-",
                      sp, (r.get("error") or "")[:80]])
    return f"\n[{title}]\n" + _render(headers, lines, {3, 5, 6})


def _flatten(row: dict, peers: List[str]) -> dict:
    flat = {}
    for k in ROW_KEYS:
        v = row.get(k)
        if k == "speedup_vs":
            flat[k] = json.dumps(_clean(v or {}), sort_keys=True)
            for p in peers:
                flat[f"speedup_vs.{p}"] = (v or {}).get(p)
        elif k == "params":
            flat[k] = json.dumps(v, sort_keys=True) if v else ""
        else:
            flat[k] = v
    return flat


def to_csv(result: dict) -> str:
    """The rows as CSV: the row keys in order (every row key is a column), ``speedup_vs`` and ``params`` as JSON
    strings, and ``speedup_vs`` also flattened into one ``speedup_vs.<peer>`` column per peer timed or planned (empty
    where that peer was not timed)."""
    rows = result["rows"]
    peers = list(dict.fromkeys(p for r in rows for p in (r.get("speedup_vs") or {})))
    peers += [p for p in dict.fromkeys(r.get("impl") for r in rows
                                       if r.get("library") not in (None, "equitp") and r.get("impl"))
              if p not in peers]
    fields = list(ROW_KEYS)
    i = fields.index("speedup_vs") + 1
    fields = fields[:i] + [f"speedup_vs.{p}" for p in peers] + fields[i:]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(_flatten(r, peers))
    return buf.getvalue()


def _clean(v):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def to_json(result: dict) -> str:
    """``{"machine": ..., "config": ..., "rows": [...]}`` as JSON (NaN and infinities written as null)."""
    return json.dumps(_clean(result), indent=1)


def write_outputs(result: dict, out_dir: str, plots: bool = True) -> Dict[str, str]:
    """Writes ``results.csv``, ``results.json`` and the PNG plots into ``out_dir`` (created if needed).

    Returns:
        ``{"csv": path, "json": path, "plots": [paths], "plot_error": reason or absent}``.
    """
    os.makedirs(out_dir, exist_ok=True)
    written = {}
    path = os.path.join(out_dir, "results.csv")
    with open(path, "w") as f:
        f.write(to_csv(result))
    written["csv"] = path
    path = os.path.join(out_dir, "results.json")
    with open(path, "w") as f:
        f.write(to_json(result))
    written["json"] = path
    written["plots"] = []
    if plots:
        errors: List[str] = []
        try:  # a plot that fails never loses the table, the CSV or the JSON
            written["plots"] = make_plots(result, out_dir, errors=errors)
        except ImportError:
            errors.append("matplotlib is not installed (pip install matplotlib): no plots")
        if errors:
            written["plot_error"] = "; ".join(errors)
    return written


# -- plots -----------------------------------------------------------------------------------------------------------
def _ok(r: dict) -> bool:
    return r.get("error") is None and r.get("median_ms") is not None


def make_plots(result: dict, out_dir: str, errors: Optional[List[str]] = None) -> List[str]:
    """PNG plots of the rows present: ``runtime_vs_L.png`` (sweep cases: median time against L per family and
    implementation), ``speedup.png`` (equitp's speed-up over each peer per case and pass), ``roofline.png``
    (achieved GFLOP/s against arithmetic intensity under the measured roofs). Returns the paths written.

    With ``errors`` a list, a plot that fails is left out and its reason appended there (the others are written);
    without it, the exception propagates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if _ok(r)]
    paths = []
    plots = (("runtime_vs_L.png", lambda: _plot_runtime_vs_l(plt, rows, out_dir)),
             ("speedup.png", lambda: _plot_speedup(plt, rows, out_dir)),
             ("roofline.png", lambda: _plot_roofline(plt, rows, result["machine"], out_dir)))
    for name, plot in plots:
        try:
            p = plot()
        except Exception as exc:  # noqa: BLE001
            plt.close("all")
            if errors is None:
                raise
            errors.append(f"{name} failed: {type(exc).__name__}: {exc}"[:300])
            continue
        if p:
            paths.append(p)
    return paths


def _plot_runtime_vs_l(plt, rows, out_dir) -> Optional[str]:
    from matplotlib.ticker import MaxNLocator

    sweep = [r for r in rows if (r.get("params") or {}).get("family") in ("siso", "simo", "mimo")]
    if not sweep:
        return None
    families = [f for f in ("siso", "simo", "mimo") if any(r["params"]["family"] == f for r in sweep)]
    fig, axes = plt.subplots(1, len(families), figsize=(5 * len(families), 4), squeeze=False)
    for ax, fam in zip(axes[0], families):
        for q, style in (("fwd", "-"), ("fwd+bwd", "--")):
            sel = [r for r in sweep if r["params"]["family"] == fam and r["pass"] == q]
            for impl in dict.fromkeys(r["impl"] for r in sel):
                pts = sorted((r["params"]["L"], r["median_ms"]) for r in sel if r["impl"] == impl)
                ax.plot([a for a, _ in pts], [b for _, b in pts], style, marker="o", ms=3, label=f"{impl} {q}")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("L")
        ax.set_ylabel("median time (ms)")
        batch = sorted({r["batch"] for r in sweep if r["params"]["family"] == fam})
        ax.set_title(f"{fam.upper()} (batch {', '.join(map(str, batch))})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out_dir, "runtime_vs_L.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_speedup(plt, rows, out_dir) -> Optional[str]:
    eq = [r for r in rows if r["library"] == "equitp" and r.get("speedup_vs")]
    peers = list(dict.fromkeys(p for r in eq for p in r["speedup_vs"]))
    if not peers:
        return None
    passes = [q for q in ("fwd", "bwd", "fwd+bwd", "double-bwd") if any(r["pass"] == q for r in eq)]
    fig, axes = plt.subplots(len(peers), 1, figsize=(max(6, 0.5 * len(eq) / max(1, len(passes)) + 3),
                                                     3.2 * len(peers)), squeeze=False)
    for ax, peer in zip(axes[:, 0], peers):
        sel = [r for r in eq if peer in r["speedup_vs"]]
        labels = list(dict.fromkeys(f"{r['case']}\n{r['impl']}" if len({x['impl'] for x in sel}) > 1
                                    else r["case"] for r in sel))
        width = 0.8 / max(1, len(passes))
        for k, q in enumerate(passes):
            vals = []
            for lab in labels:
                match = [r for r in sel if r["pass"] == q and (lab == r["case"] or lab == f"{r['case']}\n{r['impl']}")]
                vals.append(match[0]["speedup_vs"][peer] if match else float("nan"))
            ax.bar([i + (k - (len(passes) - 1) / 2) * width for i in range(len(labels))], vals, width, label=q)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(f"speed-up vs {peer}")
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out_dir, "speedup.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_roofline(plt, rows, machine, out_dir) -> Optional[str]:
    pts = [r for r in rows if r.get("flops") and r.get("bytes") and r.get("gflops_per_s")]
    bw, peak = machine.get("copy_bandwidth_gb_per_s"), machine.get("gemm_gflops_per_s")
    if not pts or not bw or not peak:
        return None
    fig, ax = plt.subplots(figsize=(7, 5))
    ai = [r["flops"] / r["bytes"] for r in pts]
    lo, hi = min(ai + [peak / bw]) / 2, max(ai + [peak / bw]) * 2
    xs = [lo * (hi / lo) ** (i / 100) for i in range(101)]
    ax.plot(xs, [min(peak, bw * x) for x in xs], "k-", lw=1.2, label=f"roof: {bw:.0f} GB/s, {peak:.0f} GFLOP/s")
    for impl in dict.fromkeys(r["impl"] for r in pts):
        sel = [r for r in pts if r["impl"] == impl]
        filled = sel[0]["library"] == "equitp"
        ax.scatter([r["flops"] / r["bytes"] for r in sel], [r["gflops_per_s"] for r in sel], s=18,
                   marker="o" if filled else "x", label=impl, alpha=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte, from the descriptor)")
    ax.set_ylabel("achieved GFLOP/s")
    ax.set_title("roofline position (every row with a FLOP count)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out_dir, "roofline.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
