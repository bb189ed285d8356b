"""The accumulate benchmark cases build, agree with each other, and time (tiny sizes; no timing assertions)."""

import pytest
import torch

from equitp.bench._accumulate_cases import IMPLEMENTATIONS, MODES, _check_agreement, accumulate_cases, main, time_cases


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cases_agree_and_run(dtype):
    cases = accumulate_cases(2, (3, 4), dtype)
    assert {c.implementation for c in cases} == set(IMPLEMENTATIONS)
    assert {c.mode for c in cases} == set(MODES)
    for c in cases:
        assert c.flops > 0 and c.bytes > 0 and c.name.startswith("accumulate/l=2/dims=3x4/")
    _check_agreement(cases, dtype)
    medians = time_cases(cases, repeats=1, warmup=0)
    assert set(medians) == {c.name for c in cases}


def test_python_loops_left_out_for_large_problems_unless_asked():
    names = {c.implementation for c in accumulate_cases(1, (10,), python_loops_max_work=10)}
    assert "python-loops" not in names
    assert {c.implementation for c in accumulate_cases(1, (10,), implementations=["python-loops"])} == {"python-loops"}
    with pytest.raises(ValueError, match="unknown implementations"):
        accumulate_cases(1, (2,), implementations=["cuda-magic"])
    with pytest.raises(ValueError, match="unknown modes"):
        accumulate_cases(1, (2,), modes=["backward-only"])


def test_main_prints_a_table(capsys):
    import numba

    threads = (torch.get_num_threads(), numba.get_num_threads())
    try:
        main(["--l", "1", "--dims", "5", "--repeats", "1", "--warmup", "0", "--threads", "1"])
    finally:
        torch.set_num_threads(threads[0])
        numba.set_num_threads(threads[1])
    out = capsys.readouterr().out
    assert "equitp-cpu" in out and "index_add" in out and "median ms" in out
