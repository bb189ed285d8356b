"""Correctness of ``equitp.ops.accumulate``: executors against each other, against a brute-force loop and
against a dense einsum; gradients (gradcheck / gradgradcheck, including C); torch.compile; edge cases."""

import itertools

import numpy as np
import pytest
import torch

from equitp.ops import accumulate

BACKENDS = ["cpu", "reference"]
DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float64: dict(rtol=1e-10, atol=1e-10)}


def random_rule(nnz, M1, M2, output_size, dtype=torch.float64, seed=0):
    """An unsorted random rule with repeated outputs (and possibly repeated triples)."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randint(0, output_size, (nnz,), generator=g)
    m1 = torch.randint(0, M1, (nnz,), generator=g)
    m2 = torch.randint(0, M2, (nnz,), generator=g)
    C = torch.randn(nnz, generator=g, dtype=torch.float64).to(dtype)
    return mu, m1, m2, C


def e3nn_cg_rule(l1, l2, l_out, dtype=torch.float64, shuffle_seed=None):
    """Real CG rule from e3nn (an independent oracle), optionally shuffled (unsorted mu)."""
    o3 = pytest.importorskip("e3nn.o3")
    w = o3.wigner_3j(l1, l2, l_out, dtype=torch.float64) * (2 * l_out + 1) ** 0.5
    m1, m2, mu = torch.nonzero(w.abs() > 1e-10, as_tuple=True)
    C = w[m1, m2, mu]
    if shuffle_seed is not None:
        perm = torch.randperm(len(C), generator=torch.Generator().manual_seed(shuffle_seed))
        m1, m2, mu, C = m1[perm], m2[perm], mu[perm], C[perm]
    return mu, m1, m2, C.to(dtype), w.to(dtype)


def loop_oracle(X1, X2, mu, output_size, m1, m2, C):
    """Brute force with Python loops in float64 (tiny inputs only)."""
    X1 = X1.detach().to(torch.float64)
    X2 = X2.detach().to(torch.float64)
    leading = torch.broadcast_shapes(X1.shape[:-1], X2.shape[:-1])
    X1 = X1.expand(*leading, X1.shape[-1])
    X2 = X2.expand(*leading, X2.shape[-1])
    out = torch.zeros(*leading, output_size, dtype=torch.float64)
    for index in itertools.product(*(range(n) for n in leading)):
        for i in range(len(C)):
            out[index + (int(mu[i]),)] += X1[index + (int(m1[i]),)] * X2[index + (int(m2[i]),)] * float(C[i])
    return out


# -- forward --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape1, shape2",
    [
        ((), ()),  # no leading dims
        ((1,), (1,)),
        ((3, 2), (3, 2)),
        ((2, 1, 3), (4, 1)),  # broadcasting both ways
        ((1,), (5,)),
        ((0,), (0,)),  # empty
        ((2, 0), (1,)),  # empty after broadcasting
    ],
)
def test_forward_matches_loop_oracle(backend, dtype, shape1, shape2):
    M1, M2, K = 4, 3, 5
    mu, m1, m2, C = random_rule(17, M1, M2, K, dtype=dtype, seed=1)
    g = torch.Generator().manual_seed(2)
    X1 = torch.randn(*shape1, M1, generator=g, dtype=torch.float64).to(dtype)
    X2 = torch.randn(*shape2, M2, generator=g, dtype=torch.float64).to(dtype)
    out = accumulate(X1, X2, mu, K, m1, m2, C, backend=backend)
    expected = loop_oracle(X1, X2, mu, K, m1, m2, C)
    assert out.shape == expected.shape == torch.broadcast_shapes(shape1, shape2) + (K,)
    assert out.dtype == dtype
    torch.testing.assert_close(out.to(torch.float64), expected, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 7, 127, 128, 129, 1000, 9001])
def test_cpu_matches_reference_random_unsorted(dtype, rows):
    mu, m1, m2, C = random_rule(300, 9, 7, 11, dtype=dtype, seed=rows)
    assert not bool((mu[1:] >= mu[:-1]).all()), "the rule must be unsorted"
    g = torch.Generator().manual_seed(3)
    X1 = torch.randn(rows, 9, generator=g, dtype=dtype)
    X2 = torch.randn(rows, 7, generator=g, dtype=dtype)
    a = accumulate(X1, X2, mu, 11, m1, m2, C, backend="cpu")
    b = accumulate(X1, X2, mu, 11, m1, m2, C, backend="reference")
    torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("l1, l2, l_out", [(0, 0, 0), (1, 1, 1), (2, 1, 3), (3, 4, 5), (8, 8, 8)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_real_cg_rule_matches_dense_einsum(backend, dtype, l1, l2, l_out):
    mu, m1, m2, C, w = e3nn_cg_rule(l1, l2, l_out, dtype=dtype, shuffle_seed=l1 + l2)
    g = torch.Generator().manual_seed(4)
    X1 = torch.randn(3, 50, 2 * l1 + 1, generator=g, dtype=dtype)
    X2 = torch.randn(3, 50, 2 * l2 + 1, generator=g, dtype=dtype)
    out = accumulate(X1, X2, mu, 2 * l_out + 1, m1, m2, C, backend=backend)
    expected = torch.einsum("...i,...j,ijk->...k", X1, X2, w)
    torch.testing.assert_close(out, expected, **TOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
def test_int32_indices_and_default_backend(backend):
    mu, m1, m2, C = random_rule(40, 5, 6, 7, seed=5)
    X1 = torch.randn(10, 5, dtype=torch.float64)
    X2 = torch.randn(10, 6, dtype=torch.float64)
    a = accumulate(X1, X2, mu.int(), 7, m1.int(), m2.int(), C, backend=backend)
    b = accumulate(X1, X2, mu, 7, m1, m2, C)  # backend=None -> "cpu" on CPU tensors
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_rule_gives_zeros(backend, dtype):
    empty = torch.zeros(0, dtype=torch.int64)
    X1 = torch.randn(4, 3, 2, dtype=dtype, requires_grad=True)
    X2 = torch.randn(4, 3, 5, dtype=dtype, requires_grad=True)
    C = torch.zeros(0, dtype=dtype, requires_grad=True)
    out = accumulate(X1, X2, empty, 6, empty, empty, C, backend=backend)
    assert out.shape == (4, 3, 6)
    assert (out == 0).all()
    grads = torch.autograd.grad(out.sum(), [X1, X2, C])
    assert (grads[0] == 0).all() and (grads[1] == 0).all() and grads[2].shape == (0,)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_output_size_and_outputs_without_entries(backend):
    X1 = torch.randn(5, 3, dtype=torch.float64)
    X2 = torch.randn(5, 3, dtype=torch.float64)
    empty = torch.zeros(0, dtype=torch.int64)
    assert accumulate(X1, X2, empty, 0, empty, empty, torch.zeros(0, dtype=torch.float64), backend=backend).shape == (5, 0)
    # output 1 and 3 receive no entry: they must be exactly zero
    out = accumulate(X1, X2, torch.tensor([0, 2, 0]), 4, torch.tensor([0, 1, 2]), torch.tensor([2, 1, 0]),
                     torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), backend=backend)
    assert (out[:, [1, 3]] == 0).all()
    torch.testing.assert_close(out[:, 0], X1[:, 0] * X2[:, 2] + 3 * X1[:, 2] * X2[:, 0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_propagate(backend, dtype):
    mu, m1, m2, C = torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([0, 0]), torch.ones(2, dtype=dtype)
    X1 = torch.ones(300, 2, dtype=dtype)
    X2 = torch.ones(300, 1, dtype=dtype)
    X1[7, 0] = float("nan")
    X1[200, 1] = float("inf")
    out = accumulate(X1, X2, mu, 2, m1, m2, C, backend=backend)
    assert torch.isnan(out[7, 0]) and torch.isinf(out[200, 1])
    assert torch.isfinite(out[8]).all() and torch.isfinite(out[:7]).all()


def test_non_contiguous_inputs():
    mu, m1, m2, C = random_rule(50, 6, 6, 6, seed=6)
    base = torch.randn(40, 12, dtype=torch.float64)
    X1 = base[::2, ::2]  # strided view
    X2 = base.t()[:6].t()[1::2]
    a = accumulate(X1, X2, mu, 6, m1, m2, C, backend="cpu")
    b = accumulate(X1.contiguous(), X2.contiguous(), mu, 6, m1, m2, C, backend="reference")
    torch.testing.assert_close(a, b)


# -- gradients ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape1, shape2", [((300,), (300,)), ((2, 1, 70), (1, 3, 70)), ((0,), (0,))])
def test_backward_cpu_matches_reference(dtype, shape1, shape2):
    mu, m1, m2, C = random_rule(60, 5, 4, 6, dtype=dtype, seed=7)
    g = torch.Generator().manual_seed(8)
    X1 = torch.randn(*shape1, 5, generator=g, dtype=torch.float64).to(dtype)
    X2 = torch.randn(*shape2, 4, generator=g, dtype=torch.float64).to(dtype)
    leading = torch.broadcast_shapes(shape1, shape2)
    G = torch.randn(*leading, 6, generator=g, dtype=torch.float64).to(dtype)
    results = []
    for backend in BACKENDS:
        inputs = [t.clone().requires_grad_() for t in (X1, X2, C)]
        out = accumulate(inputs[0], inputs[1], mu, 6, m1, m2, inputs[2], backend=backend)
        grads = torch.autograd.grad(out, inputs, G, create_graph=True)
        # second order: differentiate a scalar function of the first gradients
        scalar = sum((gr * torch.cos(torch.arange(gr.numel(), dtype=dtype)).reshape(gr.shape)).sum() for gr in grads)
        second = torch.autograd.grad(scalar, inputs, allow_unused=True)
        results.append((out, grads, second))
    (out_a, grads_a, second_a), (out_b, grads_b, second_b) = results
    tol = dict(rtol=1e-3, atol=1e-3) if dtype == torch.float32 else TOL[dtype]
    torch.testing.assert_close(out_a, out_b, **tol)
    for a, b in zip(grads_a + second_a, grads_b + second_b):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_and_gradgradcheck(backend):
    mu, m1, m2, C = random_rule(25, 4, 3, 5, seed=9)
    g = torch.Generator().manual_seed(10)
    X1 = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    X2 = torch.randn(3, 3, generator=g, dtype=torch.float64, requires_grad=True)  # broadcast
    C = C.clone().requires_grad_()

    def f(x1, x2, c):
        return accumulate(x1, x2, mu, 5, m1, m2, c, backend=backend)

    assert torch.autograd.gradcheck(f, (X1, X2, C))
    assert torch.autograd.gradgradcheck(f, (X1, X2, C))


@pytest.mark.parametrize("backend", BACKENDS)
def test_third_order_gradient(backend):
    """The output is trilinear in (X1, X2, C): its third derivative is constant and known."""
    mu, m1, m2, C = random_rule(20, 3, 3, 4, seed=11)
    X1 = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    X2 = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    C = C.clone().requires_grad_()
    out = accumulate(X1, X2, mu, 4, m1, m2, C, backend=backend).sum()
    (g1,) = torch.autograd.grad(out, X1, create_graph=True)
    (g12,) = torch.autograd.grad(g1.sum(), X2, create_graph=True)
    (g123,) = torch.autograd.grad(g12.sum(), C)
    # d^3 sum(out) / (sum over X1) (sum over X2) dC[i] = number of rows (5) for every entry
    torch.testing.assert_close(g123, torch.full_like(g123, 5.0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_coefficient_gradient_is_the_reduction(backend):
    mu, m1, m2, C = random_rule(30, 4, 5, 6, seed=12)
    X1 = torch.randn(2, 9, 4, dtype=torch.float64)
    X2 = torch.randn(2, 9, 5, dtype=torch.float64)
    G = torch.randn(2, 9, 6, dtype=torch.float64)
    C = C.clone().requires_grad_()
    out = accumulate(X1, X2, mu, 6, m1, m2, C, backend=backend)
    (grad_C,) = torch.autograd.grad(out, C, G)
    expected = (G[..., mu] * X1[..., m1] * X2[..., m2]).sum(dim=(0, 1))
    torch.testing.assert_close(grad_C, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend):
    mu, m1, m2, C = random_rule(12, 3, 4, 5, seed=13)
    X1 = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    X2 = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    G = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    C = C.clone().requires_grad_()
    torch.library.opcheck(torch.ops.equitp.accumulate_fwd.default, (X1, X2, mu, m1, m2, C, 5, backend))
    torch.library.opcheck(torch.ops.equitp.accumulate_coeff_grad.default, (G, X1, X2, mu, m1, m2, backend))


# -- torch.compile --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_fullgraph(backend):
    """Inductor, fullgraph, with broadcasting; first-order gradients flow through the compiled graph.

    The compiled graph holds little besides the custom op, so no C++ kernel needs compiling (keeps the test fast).
    """
    torch._dynamo.reset()
    mu, m1, m2, C = random_rule(30, 5, 5, 5, seed=14)

    def f(x1, x2, c):
        return accumulate(x1, x2, mu, 5, m1, m2, c, backend=backend)

    compiled = torch.compile(f, fullgraph=True)
    X1 = torch.randn(4, 7, 5, dtype=torch.float64)
    X2 = torch.randn(7, 5, dtype=torch.float64)
    G = torch.randn(4, 7, 5, dtype=torch.float64)
    inputs_eager = [t.clone().requires_grad_() for t in (X1, X2, C)]
    inputs_compiled = [t.clone().requires_grad_() for t in (X1, X2, C)]
    out_eager = f(*inputs_eager)
    out_compiled = compiled(*inputs_compiled)
    torch.testing.assert_close(out_compiled, out_eager)
    grads_eager = torch.autograd.grad(out_eager, inputs_eager, G)
    grads_compiled = torch.autograd.grad(out_compiled, inputs_compiled, G)
    for a, b in zip(grads_compiled, grads_eager):
        torch.testing.assert_close(a, b)


def test_inference_calls_skip_the_op_dispatch_only_where_nothing_must_see_the_op(monkeypatch):
    # eager calls with nothing for autograd to record run the executor directly; autograd, torch.compile and fake
    # tensors go through the registered op (equitp::accumulate_fwd)
    from torch._subclasses.fake_tensor import FakeTensorMode

    import equitp.ops._accumulate as opacc

    mu, m1, m2, C = random_rule(40, 6, 5, 7, dtype=torch.float32, seed=21)
    X1, X2 = torch.randn(9, 6), torch.randn(9, 5)
    calls = []
    real = opacc._accumulate_fwd

    def counting(*args):
        calls.append(args[-1])
        return real(*args)

    monkeypatch.setattr(opacc, "_accumulate_fwd", counting)
    direct = accumulate(X1, X2, mu, 7, m1, m2, C, backend="cpu")
    assert calls == []
    torch.testing.assert_close(direct, real(X1, X2, mu, m1, m2, C, 7, "cpu"), rtol=0, atol=0)
    accumulate(X1.clone().requires_grad_(), X2, mu, 7, m1, m2, C, backend="cpu")
    assert calls == ["cpu"]
    with FakeTensorMode(allow_non_fake_inputs=True):  # the index tensors and C stay real
        out = accumulate(torch.empty(3, 6), torch.empty(3, 5), mu, 7, m1, m2, C, backend="cpu")
    assert out.shape == (3, 7)
    monkeypatch.setattr(opacc, "_accumulate_fwd", real)
    torch._dynamo.reset()
    with torch.no_grad():
        compiled = torch.compile(lambda a, b: accumulate(a, b, mu, 7, m1, m2, C, backend="cpu"), fullgraph=True)
        torch.testing.assert_close(compiled(X1, X2), direct)


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_forces_double_backward(backend):
    """Forces-style training: the first gradient is taken inside the compiled function, then differentiated.

    (AOTAutograd cannot differentiate the backward graph of a compiled function a second time; tracing
    ``torch.autograd.grad`` into the graph is the supported way.)
    """
    torch._dynamo.reset()
    mu, m1, m2, C = random_rule(30, 5, 5, 5, seed=17)

    def forces(x1, x2, c):
        energy = accumulate(x1, x2, mu, 5, m1, m2, c, backend=backend).pow(2).sum()
        return torch.autograd.grad(energy, x1, create_graph=True)[0]

    X1 = torch.randn(4, 7, 5, dtype=torch.float64, requires_grad=True)
    X2 = torch.randn(7, 5, dtype=torch.float64)
    c_eager, c_compiled = C.clone().requires_grad_(), C.clone().requires_grad_()
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        F_compiled = torch.compile(forces, fullgraph=True)(X1, X2, c_compiled)
    F_eager = forces(X1, X2, c_eager)
    torch.testing.assert_close(F_compiled, F_eager)
    (g_compiled,) = torch.autograd.grad(F_compiled.pow(2).sum(), c_compiled)
    (g_eager,) = torch.autograd.grad(F_eager.pow(2).sum(), c_eager)
    torch.testing.assert_close(g_compiled, g_eager)


def test_torch_export():
    mu, m1, m2, C = random_rule(10, 3, 4, 5, seed=18)

    class Module(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.C = torch.nn.Parameter(C.clone())

        def forward(self, x1, x2):
            return accumulate(x1, x2, mu, 5, m1, m2, self.C)

    module = Module()
    X1 = torch.randn(6, 3, dtype=torch.float64)
    X2 = torch.randn(6, 4, dtype=torch.float64)
    exported = torch.export.export(module, (X1, X2))
    assert "equitp.accumulate_fwd" in exported.graph_module.code
    torch.testing.assert_close(exported.module()(X1, X2), module(X1, X2))


# -- descriptor cache / consistency ---------------------------------------------------------------------------
def test_same_rule_in_any_order_gives_the_same_result():
    mu, m1, m2, C = random_rule(200, 8, 8, 8, seed=15)
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(16))
    X1 = torch.randn(77, 8, dtype=torch.float64)
    X2 = torch.randn(77, 8, dtype=torch.float64)
    a = accumulate(X1, X2, mu, 8, m1, m2, C, backend="cpu")
    b = accumulate(X1, X2, mu[perm], 8, m1[perm], m2[perm], C[perm], backend="cpu")
    sorted_ = np.argsort(mu.numpy(), kind="stable")
    c = accumulate(X1, X2, mu[sorted_], 8, m1[sorted_], m2[sorted_], C[sorted_], backend="cpu")
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)


# -- CUDA (runs only where a GPU is present) ------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_reference_backend():
    mu, m1, m2, C = random_rule(50, 6, 5, 7, seed=19)
    X1 = torch.randn(3, 40, 6, dtype=torch.float64)
    X2 = torch.randn(40, 5, dtype=torch.float64)
    expected = accumulate(X1, X2, mu, 7, m1, m2, C, backend="cpu")
    inputs = [t.cuda().requires_grad_() for t in (X1, X2, C)]
    mu_c, m1_c, m2_c = mu.cuda(), m1.cuda(), m2.cuda()
    out = accumulate(inputs[0], inputs[1], mu_c, 7, m1_c, m2_c, inputs[2])  # backend=None -> "reference"
    torch.testing.assert_close(out.cpu(), expected.detach())
    small = [X1[:, :4].cuda().requires_grad_(), X2[:4].cuda().requires_grad_(), C.cuda().requires_grad_()]

    def f(a, b, c):
        return accumulate(a, b, mu_c, 7, m1_c, m2_c, c)

    assert torch.autograd.gradcheck(f, small)
    assert torch.autograd.gradgradcheck(f, small)
    with pytest.raises(ValueError, match="backend 'cpu' runs on cpu tensors only"):
        accumulate(inputs[0], inputs[1], mu_c, 7, m1_c, m2_c, inputs[2], backend="cpu")
