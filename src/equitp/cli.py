"""The ``equitp`` command: ``equitp bench`` (the benchmark) and ``equitp cases`` (the embedded configurations).

``equitp bench`` times equitp's executors against e3nn, cuequivariance-torch, openequivariance and the classic
sparse-accumulation baselines, prints a table, and writes ``results.csv``, ``results.json`` and PNG plots into
``--out`` (default ``./equitp-bench/``). See ``docs/bench.md`` for the method and the JSON schema.

Large CPU allocations are backed by transparent huge pages (``THP_MEM_ALLOC_ENABLE=1``, honoured by torch when set
before its first allocation): fresh multi-megabyte buffers then cost a few page faults instead of hundreds of
thousands, for equitp and every peer alike. Set ``THP_MEM_ALLOC_ENABLE=0`` in the environment to measure without.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="equitp", description="equitp: equivariant tensor products, benchmarked.")
    sub = parser.add_subparsers(dest="command", metavar="{bench,cases}")
    sub.required = True
    b = sub.add_parser(
        "bench",
        help="time tensor products against their peers and the machine's roofline",
        description="Time equitp's tensor products and sparse contractions against e3nn, cuequivariance-torch, "
        "openequivariance and classic baselines, in the same process, alternating, after warm-up. With no "
        "arguments: the 'default' suite (about 2-3 minutes on a 2-core CPU; --quick: under a minute).",
    )
    b.add_argument("--suite", metavar="NAME", help="suite to run (see `equitp cases`); default: 'default'")
    b.add_argument("--case", nargs="+", metavar="LABEL", help="cases to run (filters --suite when given, else runs "
                   "the named cases at their nominal batch)")
    b.add_argument("--tp", nargs="+", metavar="KIND", help="tensor-product kinds to keep: channelwise, "
                   "fully-connected, full, accumulate")
    b.add_argument("--backend", nargs="+", metavar="NAME", help="equitp executors to time (default: the one chosen "
                   "for the device: 'cpu' on CPU)")
    b.add_argument("--peer", nargs="*", metavar="NAME", help="peers to time (default: e3nn, cuequivariance, "
                   "openequivariance and the accumulate baselines); '--peer' alone: none")
    b.add_argument("--device", default="cpu", metavar="cpu|cuda", help="device (default cpu)")
    b.add_argument("--dtype", default="float32", metavar="float32|float64", help="dtype (default float32)")
    b.add_argument("--batch", type=int, metavar="N", help="batch of every case (for accumulate: the number of rows)")
    b.add_argument("--quick", action="store_true", help="the suite's quick subset at small sizes, 3 rounds")
    b.add_argument("--out", default="equitp-bench", metavar="DIR", help="output folder (default ./equitp-bench/)")
    b.add_argument("--format", default="table", metavar="table|csv|json|markdown",
                   help="what to print (default table; the CSV and JSON files are written in every case)")
    b.add_argument("--pass", dest="passes", nargs="+", metavar="PASS", help="passes to report: fwd, bwd, fwd+bwd "
                   "(default) and double-bwd")
    b.add_argument("--repeats", type=int, metavar="N", help="timed rounds per loop (default: the suite's)")
    b.add_argument("--warmup", type=int, metavar="N", help="untimed rounds per loop (default: the suite's)")
    b.add_argument("--budget", type=float, metavar="SECONDS",
                   help="time budget of the timed rounds of one loop of one case (at least 3 rounds; default: the "
                   "suite's, 20 s, 4 s for 'default')")
    b.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    c = sub.add_parser("cases", help="list the embedded suites, cases and peers",
                       description="List the embedded suites, benchmark cases and peers.")
    c.add_argument("--suite", metavar="NAME", help="only the cases of this suite")
    return parser


class _Progress:
    """Progress on stderr: a rich progress bar on a terminal, plain lines otherwise."""

    def __init__(self):
        self._bar = None
        self._task = None
        if sys.stderr.isatty():
            try:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

                self._bar = Progress(TextColumn("{task.description:<48}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            except ImportError:
                self._bar = None

    def __enter__(self):
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def __call__(self, description: str, done: int, total: int) -> None:
        if self._bar is not None:
            if self._task is None:
                self._task = self._bar.add_task(description, total=total)
            self._bar.update(self._task, description=description, completed=done, total=total)
        elif description != "done":
            print(f"[{done + 1:>3}/{total}] {description}", file=sys.stderr, flush=True)


def _fail(parser: argparse.ArgumentParser, command: str, message: str) -> int:
    print(f"equitp {command}: error: {message}", file=sys.stderr)
    return 2


def _bench(args, parser) -> int:
    from .bench import format_table, to_csv, to_json, to_markdown, write_outputs
    from .bench._runner import run_benchmark

    if args.format not in ("table", "csv", "json", "markdown"):
        return _fail(parser, "bench", f"unknown format {args.format!r}; valid formats are: table, csv, json, markdown")
    progress = _Progress()
    try:
        with progress:
            result = run_benchmark(
                suite=args.suite, cases=args.case, tps=args.tp, backends=args.backend, peers=args.peer,
                device=args.device, dtype=args.dtype, batch=args.batch, quick=args.quick, passes=args.passes,
                repeats=args.repeats, warmup=args.warmup, budget_s=args.budget, progress=progress,
            )
    except ValueError as exc:
        return _fail(parser, "bench", str(exc))
    try:
        written = write_outputs(result, args.out, plots=not args.no_plots)
    except OSError as exc:
        print(f"equitp bench: could not write to {args.out}: {exc}", file=sys.stderr)
        written = None
    if args.format == "json":
        print(to_json(result))
    elif args.format == "csv":
        print(to_csv(result), end="")
    elif args.format == "markdown":
        print(to_markdown(result))
    else:
        print(format_table(result))
    if written:
        files = [written["csv"], written["json"]] + list(written["plots"])
        print(f"wrote {', '.join(os.path.basename(f) for f in files)} to {os.path.abspath(args.out)}",
              file=sys.stderr)
        if written.get("plot_error"):
            print(written["plot_error"], file=sys.stderr)
    return 0


def _cases(args, parser) -> int:
    from .bench import CASES, PEERS, SUITES

    if args.suite is not None and args.suite not in SUITES:
        return _fail(parser, "cases", f"unknown suite {args.suite!r}; valid suites are: {', '.join(SUITES)}")
    member = {}
    for s in SUITES.values():
        for label, batch, _ in s.entries:
            member.setdefault(label, []).append(s.name)
    print("suites:")
    for s in SUITES.values():
        if args.suite is None or s.name == args.suite:
            print(f"  {s.name:<11} {s.description}")
    labels = list(CASES)
    if args.suite is not None:
        labels = list(dict.fromkeys(label for label, _, _ in SUITES[args.suite].entries))
    print("\ncases:")
    width = max([len(label) for label in labels] + [5])
    for label in labels:
        c = CASES[label]
        if c.tp == "accumulate":
            what = c.description
        else:
            out = c.irreps_out or "every path"
            weights = "" if c.tp == "full" else (", shared weights" if c.shared_weights else ", weights per item")
            what = f"{c.irreps_in1} x {c.irreps_in2} -> {out}{weights}"
        suites = ",".join(dict.fromkeys(member.get(label, [])))
        print(f"  {label:<{width}}  {c.tp:<15} {what}  [batch {c.batch}; suites: {suites or '-'}]")
    if args.suite is None:
        print("\npeers:")
        for p in PEERS.values():
            flag = "" if p.default or "opt-in" in p.description else " (opt-in: name it with --peer)"
            print(f"  {p.name:<17} {', '.join(p.kinds):<37} {p.description}{flag}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``equitp`` console script; returns the exit status (2 for bad arguments)."""
    # read by torch at its first CPU allocation, which comes after this point: importing equitp allocates nothing
    # (``machine.thp_active`` in the results says whether large buffers did get huge pages)
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "bench":
        return _bench(args, parser)
    return _cases(args, parser)


if __name__ == "__main__":
    sys.exit(main())
