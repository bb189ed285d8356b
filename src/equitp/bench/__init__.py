"""``equitp bench``: tensor products and sparse contractions timed against their peers and the hardware's roofline.

The command line (``equitp bench``, ``equitp cases``) is in :mod:`equitp.cli`; this package holds the embedded
configurations (`CASES`, `SUITES`), the peer adapters (`PEERS`), the runner (`run_benchmark`) and the outputs
(`format_table`, `to_csv`, `to_json`, `write_outputs`, `make_plots`). The JSON schema of a result is documented in
``docs/bench.md``.

Example:
    >>> from equitp.bench import run_benchmark, format_table
    >>> result = run_benchmark(cases=["nequip-water"], batch=64, repeats=1, peers=[],
    ...                        measure_machine=False)  # doctest: +SKIP
    >>> print(format_table(result))  # doctest: +SKIP
"""

from ._cases import CASES, PASSES, SUITES, TP_KINDS, Case, Suite
from ._impls import PEERS
from ._report import format_table, make_plots, to_csv, to_json, to_markdown, write_outputs
from ._runner import ROW_KEYS, plan, run_benchmark

__all__ = [
    "CASES",
    "SUITES",
    "PEERS",
    "PASSES",
    "TP_KINDS",
    "ROW_KEYS",
    "Case",
    "Suite",
    "plan",
    "run_benchmark",
    "format_table",
    "to_csv",
    "to_json",
    "to_markdown",
    "write_outputs",
    "make_plots",
]
