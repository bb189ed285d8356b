"""The benchmark harness on tiny cases: rows and their schema, peers that are missing or fail, out-of-memory
problems, outputs (CSV, JSON, PNG). No timing is asserted."""

import json
import math
import sys

import pytest
import torch

from equitp.bench import (
    CASES,
    PASSES,
    PEERS,
    ROW_KEYS,
    SUITES,
    TP_KINDS,
    format_table,
    plan,
    run_benchmark,
    to_csv,
    to_json,
    write_outputs,
)
from equitp.bench import _impls, _runner
from equitp.bench._machine import MemoryProbe, measure_roofline

TINY = dict(batch=6, repeats=1, warmup=1, measure_machine=False)


@pytest.fixture
def fake_roofline(monkeypatch):
    """A fixed roofline instead of measuring one (the measurement itself is tested once, below)."""
    roof = {"copy_bandwidth_gb_per_s": 10.0, "gemm_gflops_per_s": 50.0, "roofline_dtype": "float32",
            "thp_active": None}
    monkeypatch.setattr(_runner, "measure_roofline", lambda device, dtype, quick=False: dict(roof))
    return roof


def _rows(result, **match):
    return [r for r in result["rows"] if all(r.get(k) == v for k, v in match.items())]


@pytest.fixture(scope="module")
def water_e3nn():
    pytest.importorskip("e3nn")
    return run_benchmark(cases=["nequip-water"], peers=["e3nn"], **TINY)


# -- configurations -----------------------------------------------------------------------------------------------
def test_standard_configurations_are_embedded():
    channelwise = {"mace-large", "mace-medium", "nequip-lips", "nequip-revmd17-aspirin", "nequip-revmd17-toluene",
                   "nequip-revmd17-benzene", "nequip-water"}
    fully_connected = {"diffdock-l1", "diffdock-l2", "tetris-poly-1", "tetris-poly-2"}
    standard = {c.label for c, _ in plan("standard")}
    assert standard == channelwise | fully_connected
    assert all(CASES[c].tp == "channelwise" for c in channelwise)
    assert all(CASES[c].tp == "fully-connected" for c in fully_connected)
    assert CASES["mace-large"].irreps_out == "128x0e+128x1o+128x2e+128x3o"
    assert CASES["tetris-poly-2"].shared_weights and not CASES["diffdock-l2"].shared_weights
    for label, _, _ in SUITES["sweep"].entries:
        assert CASES[label].tp == "full" and 1 <= CASES[label].param_dict["L"] <= 10
    assert {c.tp for c in CASES.values()} <= set(TP_KINDS)


def test_plan_selection():
    assert [(c.label, b) for c, b in plan(cases=["mace-large"])] == [("mace-large", 10_000)]
    assert [(c.label, b) for c, b in plan(cases=["mace-large"], quick=True)] == [("mace-large", 1_000)]
    assert {b for _, b in plan("standard", batch=7)} == {7}
    assert all(c.tp == "accumulate" for c, _ in plan("default", tps=["accumulate"]))
    assert len(plan("default", quick=True)) < len(plan("default"))
    assert [c.label for c, _ in plan("core", cases=["diffdock-l2"])] == ["diffdock-l2"]
    assert plan("e2") == []


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(suite="nope"), "suite"),
        (dict(cases=["mace-large", "nope"]), "case"),
        (dict(tps=["nope"]), "tp"),
        (dict(batch=0), "batch"),
    ],
)
def test_plan_bad_names_list_the_valid_ones(kwargs, word):
    with pytest.raises(ValueError, match=word) as info:
        plan(**kwargs)
    if word == "suite":
        assert "standard" in str(info.value) and "accumulate" in str(info.value)
    if word == "case":
        assert "mace-large" in str(info.value) and "'nope'" in str(info.value)


def test_case_not_in_suite():
    with pytest.raises(ValueError, match="not in suite 'core'"):
        plan("core", cases=["nequip-water"])


@pytest.mark.parametrize(
    "kwargs, valid",
    [
        (dict(backends=["triton9"]), "cpu"),
        (dict(peers=["nope"]), "e3nn"),
        (dict(passes=["sideways"]), "fwd+bwd"),
        (dict(dtype="float16"), "float64"),
        (dict(device="tpu"), "cuda"),
    ],
)
def test_run_bad_names_list_the_valid_ones(kwargs, valid):
    with pytest.raises(ValueError, match="valid") as info:
        run_benchmark(cases=["nequip-water"], **TINY, **kwargs)
    assert valid in str(info.value)


# -- rows ---------------------------------------------------------------------------------------------------------
def test_rows_for_equitp_and_e3nn(water_e3nn):
    rows = water_e3nn["rows"]
    assert {r["impl"] for r in rows} == {"equitp-cpu", "e3nn"}
    assert {r["pass"] for r in rows} == {"fwd", "bwd", "fwd+bwd"}
    for r in rows:
        assert tuple(r) == ROW_KEYS
        assert r["error"] is None, r["error"]
        assert r["case"] == "nequip-water" and r["tp"] == "channelwise" and r["batch"] == 6
        assert r["device"] == "cpu" and r["dtype"] == "float32"
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["flops"] > 0 and r["bytes"] > 0 and r["gflops_per_s"] > 0 and r["gb_per_s"] > 0
        assert r["roofline_fraction"] is None  # no machine measurement in this test
        # both compute e3nn's product: compared with the float64 reference executor
        assert r["max_abs_err"] < 1e-4
    for r in _rows(water_e3nn, library="equitp"):
        assert set(r["speedup_vs"]) == {"e3nn"}
        e3nn_row = _rows(water_e3nn, impl="e3nn", **{"pass": r["pass"]})[0]
        assert math.isclose(r["speedup_vs"]["e3nn"], e3nn_row["median_ms"] / r["median_ms"])
    for r in _rows(water_e3nn, library="e3nn"):
        assert r["speedup_vs"] == {}


def test_flops_come_from_the_descriptor(water_e3nn):
    import equitp

    c = CASES["nequip-water"]
    d = equitp.channelwise_tensor_product(c.irreps_in1, c.irreps_in2, c.irreps_out).descriptor
    for r in water_e3nn["rows"]:
        assert r["flops"] == d.flops(6, r["pass"])
        assert r["bytes"] == d.bytes(6, itemsize=4, shared_weights=False, pass_=r["pass"])


def test_double_backward_and_float64():
    result = run_benchmark(cases=["tetris-poly-2"], peers=[], dtype="float64", passes=["double-bwd"], **TINY)
    (row,) = result["rows"]
    assert row["pass"] == "double-bwd" and row["dtype"] == "float64" and row["error"] is None
    assert row["flops"] is None and row["median_ms"] > 0
    assert row["max_abs_err"] < 1e-10


def test_roofline_fraction_with_machine(fake_roofline):
    result = run_benchmark(cases=["mimo-L1"], peers=[], passes=["fwd"], batch=4, repeats=1, quick=True)
    (row,) = result["rows"]
    m = result["machine"]
    assert m["copy_bandwidth_gb_per_s"] > 0 and m["gemm_gflops_per_s"] > 0
    bound = min(m["gemm_gflops_per_s"], m["copy_bandwidth_gb_per_s"] * row["flops"] / row["bytes"])
    assert math.isclose(row["roofline_fraction"], row["gflops_per_s"] / bound, rel_tol=1e-6)
    for key in ("cpu_model", "cpu_count", "torch_threads", "gpu", "torch", "equitp", "thp_mem_alloc_enable"):
        assert key in m


def test_accumulate_rows_against_baselines():
    result = run_benchmark(cases=["accumulate-l2"], peers=["index_add", "dense-matmul"], **TINY)
    eq = _rows(result, impl="equitp-cpu")
    assert {r["pass"] for r in eq} == {"fwd", "bwd", "fwd+bwd"}
    for r in result["rows"]:
        assert r["error"] is None, r["error"]
        assert r["max_abs_err"] < 1e-5
    for r in eq:
        assert set(r["speedup_vs"]) == {"index_add", "dense-matmul"}
        assert r["params"]["l"] == 2 and r["params"]["nnz"] > 0


def test_missing_peer_is_a_row(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuequivariance_torch", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "cuequivariance", None)
    result = run_benchmark(cases=["nequip-water"], peers=["cuequivariance", "openequivariance"], **TINY)
    for name, reason in (("cuequivariance", "not installed"), ("openequivariance", "needs CUDA")):
        rows = _rows(result, impl=name)
        assert len(rows) == 3
        for r in rows:
            assert r["error"].startswith("skipped:") and reason in r["error"]
            assert r["median_ms"] is None
    for r in _rows(result, library="equitp"):
        assert r["error"] is None and r["speedup_vs"] == {}
    assert "not installed" in format_table(result)


def test_failing_implementation_is_a_row(monkeypatch):
    def broken(case, problem):
        def fn(x, y, w):
            raise RuntimeError("kernel exploded")

        return _impls.Impl("broken", "torch", "broken", fn)

    monkeypatch.setitem(PEERS, "broken", _impls.Peer("broken", "torch", ("channelwise",), False, broken, "fails"))
    result = run_benchmark(cases=["nequip-water"], peers=["broken"], **TINY)
    for r in _rows(result, impl="broken"):
        assert r["error"] == "failed: RuntimeError: kernel exploded"
    for r in _rows(result, impl="equitp-cpu"):
        assert r["error"] is None and r["median_ms"] > 0


def test_slow_peer_gets_fewer_rounds(monkeypatch):
    import time

    def slow(case, problem):
        def fn(x, y, w):
            time.sleep(0.05)
            return torch.zeros(x.shape[0], problem.g.shape[-1])

        return _impls.Impl("slow", "torch", "slow", fn, comparable=False)

    monkeypatch.setitem(PEERS, "slow", _impls.Peer("slow", "torch", ("channelwise",), False, slow, "sleeps"))
    result = run_benchmark(cases=["nequip-water"], peers=["slow"], passes=["fwd"], batch=6, repeats=5, warmup=1,
                           budget_s=0.09, measure_machine=False)
    (eq,) = _rows(result, impl="equitp-cpu")
    (sl,) = _rows(result, impl="slow")
    assert sl["repeats"] == 1 and eq["repeats"] >= 3
    assert eq["speedup_vs"]["slow"] > 0


def test_failing_case_does_not_stop_the_run(monkeypatch):
    real = _runner.make_problem

    def make_problem(case, *args, **kwargs):
        if case.label == "nequip-water":
            raise MemoryError("cannot allocate")
        return real(case, *args, **kwargs)

    monkeypatch.setattr(_runner, "make_problem", make_problem)
    result = run_benchmark(cases=["nequip-water", "mimo-L1"], peers=[], **TINY)
    failed = _rows(result, case="nequip-water")
    assert len(failed) == 3 and all(r["error"].startswith("out of memory") for r in failed)
    assert all(r["error"] is None for r in _rows(result, case="mimo-L1"))


@pytest.mark.parametrize(
    "exc",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                     "tried to allocate 40000000000000 bytes. Error code 12 (Cannot allocate memory)"),
    ],
)
def test_out_of_memory_in_a_timed_round_is_a_row(monkeypatch, exc):
    calls = []

    def greedy(case, problem):
        def fn(x, y, w):
            calls.append(1)
            if len(calls) > 1:  # the warm-up call passes, the first timed round runs out of memory
                raise exc
            return torch.zeros(x.shape[0], problem.g.shape[-1])

        return _impls.Impl("greedy", "torch", "greedy", fn, comparable=False)

    monkeypatch.setitem(PEERS, "greedy", _impls.Peer("greedy", "torch", ("channelwise",), False, greedy, "allocates"))
    result = run_benchmark(cases=["nequip-water"], peers=["greedy"], passes=["fwd"], **TINY)
    (row,) = _rows(result, impl="greedy")
    assert row["error"].startswith("out of memory:") and row["median_ms"] is None
    (eq,) = _rows(result, impl="equitp-cpu")
    assert eq["error"] is None and eq["median_ms"] > 0 and eq["speedup_vs"] == {}


def test_case_failing_outside_the_guards_does_not_stop_the_run(monkeypatch):
    real = _runner._time_loop

    def time_loop(loop, timings, problem, *args):
        if problem.case.label == "nequip-water":
            raise RuntimeError("harness bug")
        return real(loop, timings, problem, *args)

    monkeypatch.setattr(_runner, "_time_loop", time_loop)
    seen = []
    result = run_benchmark(cases=["nequip-water", "mimo-L1"], peers=["openequivariance"], passes=["fwd"],
                           progress=lambda text, done, total: seen.append((done, total)), **TINY)
    failed = _rows(result, case="nequip-water")
    assert {r["impl"] for r in failed} == {"equitp-cpu", "openequivariance"}
    assert all(r["error"] == "failed: RuntimeError: harness bug" for r in failed)
    assert all(r["error"] is None and r["median_ms"] > 0 for r in _rows(result, case="mimo-L1"))
    assert seen[-1] == (2, 2)


def test_tp_filter_that_leaves_nothing_lists_the_kinds():
    with pytest.raises(ValueError, match="its tps are: channelwise, fully-connected"):
        plan("standard", tps=["accumulate"])


def test_batch_too_large_is_reported_per_row():
    result = run_benchmark(cases=["mace-large"], peers=[], batch=10**12, repeats=1, measure_machine=False)
    assert len(result["rows"]) == 3
    for r in result["rows"]:
        assert "out of memory" in r["error"] and r["batch"] == 10**12


def test_absent_gpu_is_a_row():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = run_benchmark(cases=["nequip-water"], peers=[], device="cuda", **TINY)
    assert result["rows"] and all("CUDA is not available" in r["error"] for r in result["rows"])


def test_e2_suite_absent(monkeypatch):
    monkeypatch.setitem(sys.modules, "equitp.bench._e2_suite", None)
    result = run_benchmark(suite="e2", **TINY)
    (row,) = result["rows"]
    assert row["suite"] == "e2" and row["error"].startswith("skipped:")


def test_e2_suite_rows_are_normalised(monkeypatch):
    import types

    calls = []

    def run_e2_suite(quick=False, device="cpu", dtype=torch.float32, progress=None):
        calls.append((quick, device, dtype))
        progress("expansion C8")
        return [{"case": "C8", "tp": "e2-expansion", "impl": "block", "library": "equitp", "pass": "fwd",
                 "median_ms": 1.0, "speedup_vs": {"padded": 2.0}, "extra": {"padding_ratio": 3.0}}]

    fake = types.ModuleType("equitp.bench._e2_suite")
    fake.run_e2_suite = run_e2_suite
    monkeypatch.setitem(sys.modules, "equitp.bench._e2_suite", fake)
    seen = []
    result = run_benchmark(suite="e2", quick=True, progress=lambda text, done, total: seen.append(text), **TINY)
    assert calls == [(True, "cpu", torch.float32)]
    (row,) = result["rows"]
    assert tuple(row) == ROW_KEYS and row["suite"] == "e2" and row["tp"] == "e2-expansion"
    assert row["params"] == {"padding_ratio": 3.0} and row["speedup_vs"] == {"padded": 2.0}
    assert any("expansion C8" in text for text in seen)
    assert "[e2]" in format_table(result)


# -- outputs ------------------------------------------------------------------------------------------------------
def test_json_schema(water_e3nn):
    data = json.loads(to_json(water_e3nn))
    assert set(data) == {"machine", "config", "rows"}
    assert data["config"]["passes"] == ["fwd", "bwd", "fwd+bwd"]
    for r in data["rows"]:
        assert list(r) == list(ROW_KEYS)
        assert r["pass"] in PASSES
        assert isinstance(r["speedup_vs"], dict)
        for key in ("median_ms", "min_ms", "max_ms", "gflops_per_s", "gb_per_s", "max_abs_err"):
            assert isinstance(r[key], float)
        assert isinstance(r["flops"], int) and isinstance(r["bytes"], int)


def test_csv_flattens_speedups(water_e3nn):
    lines = to_csv(water_e3nn).splitlines()
    header = lines[0].split(",")
    assert "speedup_vs.e3nn" in header and "speedup_vs" in header
    assert len(lines) == 1 + len(water_e3nn["rows"])


# the fields issue 3 asks of every row, and of the machine
ISSUE_ROW_FIELDS = ("case", "tp", "backend", "device", "dtype", "batch", "pass", "median_ms", "min_ms", "max_ms",
                    "peak_mem_mb", "flops", "bytes", "gflops_per_s", "gb_per_s", "roofline_fraction", "speedup_vs",
                    "max_abs_err")
ISSUE_MACHINE_FIELDS = ("cpu_model", "torch_threads", "gpu", "torch", "equitp")


def _csv_rows(result):
    import csv
    import io

    return list(csv.DictReader(io.StringIO(to_csv(result))))


def test_every_issue_field_in_csv_and_json(water_e3nn):
    data = json.loads(to_json(water_e3nn))
    assert set(ISSUE_MACHINE_FIELDS) <= set(data["machine"])
    assert data["machine"]["torch_threads"] >= 1 and data["machine"]["equitp"]
    for r in data["rows"]:
        assert set(ISSUE_ROW_FIELDS) <= set(r)
    table = _csv_rows(water_e3nn)
    assert len(table) == len(data["rows"])
    for line, r in zip(table, data["rows"]):
        assert set(ISSUE_ROW_FIELDS) <= set(line)
        assert json.loads(line["speedup_vs"]) == r["speedup_vs"]
        if r["library"] == "equitp":
            assert math.isclose(float(line["speedup_vs.e3nn"]), r["speedup_vs"]["e3nn"], rel_tol=1e-9)
        assert math.isclose(float(line["median_ms"]), r["median_ms"], rel_tol=1e-9)


def test_csv_columns_without_any_timed_peer():
    # no peer timed (openequivariance is skipped on CPU): the speed-up columns are still there, empty
    result = run_benchmark(cases=["nequip-water"], peers=["openequivariance"], passes=["fwd"], **TINY)
    if torch.cuda.is_available():
        pytest.skip("openequivariance may run here")
    table = _csv_rows(result)
    assert {line["impl"] for line in table} == {"equitp-cpu", "openequivariance"}
    for line in table:
        assert set(ROW_KEYS) <= set(line)
        assert line["speedup_vs"] == "{}" and line["speedup_vs.openequivariance"] == ""
    (skipped,) = [line for line in table if line["impl"] == "openequivariance"]
    assert skipped["error"].startswith("skipped:") and "CUDA" in skipped["error"]


def test_plot_failure_keeps_the_other_outputs(tmp_path, water_e3nn, monkeypatch):
    pytest.importorskip("matplotlib")
    from equitp.bench import _report

    def broken(*args, **kwargs):
        raise ValueError("no axes today")

    monkeypatch.setattr(_report, "_plot_speedup", broken)
    written = write_outputs(water_e3nn, str(tmp_path))
    assert "speedup.png failed: ValueError: no axes today" in written["plot_error"]
    assert (tmp_path / "results.csv").exists() and (tmp_path / "results.json").exists()
    assert not (tmp_path / "speedup.png").exists()


def test_outputs_written(tmp_path, water_e3nn, fake_roofline):
    pytest.importorskip("matplotlib")
    sweep = run_benchmark(cases=["mimo-L1", "mimo-L2"], peers=[], batch=4, repeats=1, quick=True)
    merged = dict(water_e3nn, rows=water_e3nn["rows"] + sweep["rows"], machine=sweep["machine"])
    written = write_outputs(merged, str(tmp_path))
    assert (tmp_path / "results.csv").stat().st_size > 0
    assert json.loads((tmp_path / "results.json").read_text())["rows"]
    names = {p.split("/")[-1] for p in written["plots"]}
    assert names == {"runtime_vs_L.png", "speedup.png", "roofline.png"}
    for name in names:
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_table_names_machine_and_speedups(water_e3nn):
    text = format_table(water_e3nn)
    assert "nequip-water" in text and "x e3nn" in text and "equitp-cpu" in text


# -- machine ------------------------------------------------------------------------------------------------------
def test_memory_probe_sees_a_large_allocation():
    probe = MemoryProbe(torch.device("cpu"))
    with probe.measure():
        x = torch.ones(16 * 2**20 // 4)  # 16 MiB, touched
        del x
    if probe.peak_mb is None:
        pytest.skip("no /proc/self/clear_refs here")
    assert probe.peak_mb > 8


def test_measure_roofline_keys():
    roof = measure_roofline(torch.device("cpu"), torch.float32, quick=True)
    assert roof["copy_bandwidth_gb_per_s"] > 0 and roof["gemm_gflops_per_s"] > 0
    assert roof["roofline_dtype"] == "float32"
