"""equitp.so3 under torch.export / torch.compile: traceable, and tracing never poisons the eager caches."""

import pytest
import torch

import equitp.so3 as so3


class _SH(torch.nn.Module):
    def forward(self, x):
        return so3.spherical_harmonics([0, 1, 2, 4], x, True)


class _D(torch.nn.Module):
    def forward(self, a, b, c):
        return so3.wigner_D(4, a, b, c)


class _Grid(torch.nn.Module):
    def forward(self, x):
        return so3.grid_to_sh(so3.sh_to_grid(x, 6, 11) ** 2, 4)


def test_export_matches_eager():
    # Fresh dtype/device keys so that the first construction of every constant table happens while tracing.
    dtype = torch.float64
    x = torch.randn(7, 3, dtype=dtype)
    a, b, c = so3.rand_angles(5, dtype=dtype)
    y = torch.randn(2, 9, dtype=dtype)
    for module, args in [(_SH(), (x,)), (_D(), (a, b, c)), (_Grid(), (y,))]:
        ep = torch.export.export(module, args, strict=False)
        out = ep.module()(*args)
        eager = module(*args)
        assert type(eager) is torch.Tensor
        torch.testing.assert_close(out, eager)


def test_compile_fullgraph():
    def g(x, a):
        return so3.spherical_harmonics(3, x, False) @ so3.wigner_D(3, a, a, a).T

    f = torch.compile(g, backend="eager", fullgraph=True)
    x, a = torch.randn(4, 3), torch.rand(())
    torch.testing.assert_close(f(x, a), so3.spherical_harmonics(3, x, False) @ so3.wigner_D(3, a, a, a).T)
