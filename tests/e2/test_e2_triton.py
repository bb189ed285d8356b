"""The Triton block-fill kernels in interpreter mode (TRITON_INTERPRET=1) on small shapes.

Triton decides at import time whether kernels are interpreted, so the check runs in a fresh interpreter with the
variable set (another test may already have imported triton in this process).
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from equitp import e2

pytest.importorskip("triton")

SCRIPT = textwrap.dedent(
    """
    import torch
    from equitp import e2

    s = e2.flip_rot2d(2)
    fin = e2.FieldType(s, [s.regular_repr, s.irrep(1, 1)])
    fout = e2.FieldType(s, [s.irrep(0, 1), s.regular_repr])
    lb = e2.layer_basis(fin, fout, e2.basis_params(3))
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        w = torch.randn(lb.dim, dtype=dtype, requires_grad=True)
        a = lb.expand(w, "block", "triton")
        b = lb.expand(w, "padded")
        tol = dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(a, b, **tol)
        g = torch.randn_like(a).requires_grad_()
        (ga,) = torch.autograd.grad(a, w, g, create_graph=True)
        (gb,) = torch.autograd.grad(b, w, g, create_graph=True)
        torch.testing.assert_close(ga, gb, **tol)
        v = torch.randn_like(ga)
        (ha,) = torch.autograd.grad((ga * v).sum(), g)
        (hb,) = torch.autograd.grad((gb * v).sum(), g)
        torch.testing.assert_close(ha, hb, **tol)
    print("TRITON-OK")
    """
)


def test_triton_fill_matches_padded_in_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "TRITON-OK" in res.stdout, res.stderr[-3000:]


def test_triton_outside_interpreter_on_cpu_raises(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    s = e2.rot2d(2)
    ft = e2.FieldType(s, [s.regular_repr])
    lb = e2.layer_basis(ft, ft, e2.basis_params(3))
    with pytest.raises(ValueError, match="CUDA"):
        lb.expand(torch.randn(lb.dim), "block", "triton")
