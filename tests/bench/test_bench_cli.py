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
        (["bench", "--suite", "standard", "--tp", "full"], "fully-connected"),
        (["cases", "--suite", "nope"], "sweep"),
    ],
)
def test_unknown_names_exit_2_and_list_valid(argv, valid, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert ("unknown" in captured.err or "no case" in captured.err) and valid in captured.err


def test_bad_batch_exits_2(capsys):
    assert main(["bench", "--case", "nequip-water", "--batch", "0"]) == 2
    assert "batch" in capsys.readouterr().err


def test_bench_json_to_stdout_and_files(tmp_path, capsys, monkeypatch):
    pytest.importorskip("e3nn")
    from equitp.bench import _runner

    roof = {"copy_bandwidth_gb_per_s": 10.0, "gemm_gflops_per_s": 50.0, "roofline_dtype": "float32"}
    monkeypatch.setattr(_runner, "measure_roofline", lambda device, dtype, quick=False: dict(roof))
    out = tmp_path / "res"
    # the acceptance command `equitp bench --case mace-large --format json`, at a tiny batch
    status = main(["bench", "--case", "mace-large", "--batch", "2", "--repeats", "1", "--peer", "e3nn",
                   "--pass", "fwd", "--format", "json", "--out", str(out), "--no-plots"])
    assert status == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["machine"]["thp_mem_alloc_enable"] is not None
    (eq,) = [r for r in data["rows"] if r["impl"] == "equitp-cpu"]
    assert eq["speedup_vs"]["e3nn"] > 0 and eq["roofline_fraction"] > 0
    assert {r["impl"] for r in data["rows"]} == {"equitp-cpu", "e3nn"}
    assert (out / "results.csv").exists() and (out / "results.json").exists()
    assert "mace-large" in captured.err  # progress


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_bench_table_and_csv_to_stdout(tmp_path, capsys, fmt):
    out = tmp_path / "res"
    status = main(["bench", "--case", "nequip-water", "--batch", "4", "--repeats", "1", "--peer", "openequivariance",
                   "--pass", "fwd", "--format", fmt, "--out", str(out), "--no-plots"])
    assert status == 0
    text = capsys.readouterr().out
    if fmt == "table":
        assert text.startswith("machine: ") and "nequip-water" in text and "equitp-cpu" in text
        assert "openequivariance: skipped:" in text  # the reason a peer is skipped
    else:
        lines = text.splitlines()
        assert lines[0].startswith("suite,case,tp,impl,") and len(lines) == 3
        assert (out / "results.csv").read_text() == text


def test_progress_bar_on_a_terminal(monkeypatch):
    pytest.importorskip("rich")
    import io

    from equitp import cli

    class Tty(io.StringIO):
        def isatty(self):
            return True

    err = Tty()
    monkeypatch.setattr(cli.sys, "stderr", err)
    with cli._Progress() as progress:
        assert progress._bar is not None
        for i in range(3):
            progress(f"step {i}", i, 3)
        progress("done", 3, 3)
    assert "step" in err.getvalue()


def test_progress_lines_otherwise(capsys):
    from equitp import cli

    progress = cli._Progress()
    assert progress._bar is None  # pytest's stderr is not a terminal
    with progress:
        progress("mace-large (batch 4) fwd", 0, 2)
        progress("done", 2, 2)
    assert capsys.readouterr().err == "[  1/2] mace-large (batch 4) fwd\n"


def test_cases_lists_suites_cases_and_peers(capsys):
    assert main(["cases"]) == 0
    out = capsys.readouterr().out
    for word in ("default", "standard", "sweep", "accumulate", "roofline", "mace-large", "mimo-L10",
                 "accumulate-l8", "openequivariance", "index_add"):
        assert word in out
    assert main(["cases", "--suite", "core"]) == 0
    out = capsys.readouterr().out
    assert "full-l6" in out and "nequip-water" not in out
