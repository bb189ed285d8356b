"""The ``equitp`` command line: bad names exit with status 2 and list the valid ones; a tiny run prints JSON and
writes its files; ``equitp cases`` lists the configurations."""

import json

import pytest

from equitp.cli import main


@pytest.mark.parametrize(
    "argv, valid",
    [
        (["bench", "--suite", "nope"], "standard"),
        (["bench", "--case", "nope"], "mace-large"),
        (["bench", "--tp", "nope"], "channelwise"),
        (["bench", "--backend", "nope"], "reference"),
        (["bench", "--peer", "nope"], "cuequivariance"),
        (["bench", "--format", "nope"], "json"),
        (["bench", "--dtype", "float16"], "float64"),
        (["bench", "--device", "tpu"], "cuda"),
        (["bench", "--pass", "nope"], "double-bwd"),
        (["cases", "--suite", "nope"], "sweep"),
    ],
)
def test_unknown_names_exit_2_and_list_valid(argv, valid, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "unknown" in captured.err and valid in captured.err


def test_bad_batch_exits_2(capsys):
    assert main(["bench", "--case", "nequip-water", "--batch", "0"]) == 2
    assert "batch" in capsys.readouterr().err


def test_bench_json_to_stdout_and_files(tmp_path, capsys, monkeypatch):
    pytest.importorskip("e3nn")
    from equitp.bench import _runner

    roof = {"copy_bandwidth_gb_per_s": 10.0, "gemm_gflops_per_s": 50.0, "roofline_dtype": "float32"}
    monkeypatch.setattr(_runner, "measure_roofline", lambda device, dtype, quick=False: dict(roof))
    out = tmp_path / "res"
    status = main(["bench", "--case", "nequip-water", "--batch", "4", "--repeats", "1", "--peer", "e3nn",
                   "--pass", "fwd", "--format", "json", "--out", str(out), "--no-plots"])
    assert status == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["machine"]["thp_mem_alloc_enable"] is not None
    (eq,) = [r for r in data["rows"] if r["impl"] == "equitp-cpu"]
    assert eq["speedup_vs"]["e3nn"] > 0 and eq["roofline_fraction"] > 0
    assert {r["impl"] for r in data["rows"]} == {"equitp-cpu", "e3nn"}
    assert (out / "results.csv").exists() and (out / "results.json").exists()
    assert "nequip-water" in captured.err  # progress


def test_cases_lists_suites_cases_and_peers(capsys):
    assert main(["cases"]) == 0
    out = capsys.readouterr().out
    for word in ("default", "standard", "sweep", "accumulate", "roofline", "mace-large", "mimo-L10",
                 "accumulate-l8", "openequivariance", "index_add"):
        assert word in out
    assert main(["cases", "--suite", "core"]) == 0
    out = capsys.readouterr().out
    assert "full-l6" in out and "nequip-water" not in out
