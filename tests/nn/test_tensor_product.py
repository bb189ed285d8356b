"""TensorProduct and friends: agreement with e3nn 0.6 (outputs and gradients), both executors, layouts, batch shapes,
autograd (gradcheck / gradgradcheck), equivariance, torch.compile and bad inputs."""

import pytest
import numpy as np
import torch

import equitp
from equitp.testing import assert_equivariant

o3 = pytest.importorskip("e3nn.o3")

BACKENDS = ["reference", "cpu", "cpu-channels", "cpu-items", "cpu-uvw"]


@pytest.fixture(autouse=True)
def _kernel_family(request, monkeypatch):
    """``cpu-channels`` / ``cpu-items`` / ``cpu-uvw``: the CPU backend with its generic channel-vectorised, item-blocked or
    fully connected kernels forced (the last applies to products whose paths are all weighted ``uvw``)."""
    from equitp.executors.cpu import _tensor_product as cpu

    backend = request.node.callspec.params.get("backend") if hasattr(request.node, "callspec") else None
    if backend in ("cpu-channels", "cpu-items", "cpu-uvw"):
        monkeypatch.setattr(cpu, "KERNEL_FAMILY", backend.split("-")[1])
    yield


def _be(backend):
    return "cpu" if backend.startswith("cpu") else backend
DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}

I1, I2, IO = "3x0e+2x1o+2x2e+1x1e", "2x0e+1x1o+2x2e", "3x0e+2x1o+4x1e+2x2e+2x3o+1x0o"


def _instructions(mode, i1=I1, i2=I2, io=IO):
    A, B, C = o3.Irreps(i1), o3.Irreps(i2), o3.Irreps(io)
    out = []
    for a, (m1, r1) in enumerate(A):
        for b, (m2, r2) in enumerate(B):
            for c, (mo, ro) in enumerate(C):
                if ro not in r1 * r2:
                    continue
                ok = {
                    "uvw": True,
                    "uvu": m1 == mo,
                    "uvv": m2 == mo,
                    "uuw": m1 == m2,
                    "uuu": m1 == m2 == mo,
                    "uvuv": m1 * m2 == mo,
                }[mode]
                if ok:
                    has_w = True if mode == "uvw" else (len(out) % 3 != 1)
                    if mode == "uuw" and not has_w and mo != 1:
                        has_w = True
                    out.append((a, b, c, mode, has_w, 1.0 + 0.25 * (len(out) % 2)))
    return out


def _e3nn(cls, *args, dtype, **kwargs):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # e3nn builds its Wigner 3j buffers in the default dtype
    try:
        return cls(*args, **kwargs)
    finally:
        torch.set_default_dtype(old)


def _to_ir_mul(x, irreps):
    parts = []
    for sl, (mul, ir) in zip(irreps.slices(), irreps):
        parts.append(x[..., sl].reshape(*x.shape[:-1], mul, ir.dim).transpose(-1, -2).reshape(*x.shape[:-1], -1))
    return torch.cat(parts, -1) if parts else x


def _check_close(a, b, dtype, what):
    scale = b.abs().max().clamp_min(1.0)
    err = ((a - b).abs().max() / scale).item()
    assert err <= TOL[dtype], f"{what}: relative error {err:.3g} > {TOL[dtype]:g}"


def _check_against_reference(tp, ref, n, dtype, shared=False):
    """Random inputs for ``n`` items (per-item weights unless ``shared``): ``tp``'s output and every gradient (x, y,
    weights) equal ``ref``'s. Returns the inputs, the output gradient and the reference gradients."""
    x = torch.randn(n, tp.irreps_in1.dim, dtype=dtype, requires_grad=True)
    y = torch.randn(n, tp.irreps_in2.dim, dtype=dtype, requires_grad=True)
    w = torch.randn(*(() if shared else (n,)), tp.weight_numel, dtype=dtype, requires_grad=True)
    g = torch.randn(n, tp.irreps_out.dim, dtype=dtype)
    out, out_ref = tp(x, y, w), ref(x, y, w)
    _check_close(out, out_ref, dtype, "output")
    grads = torch.autograd.grad(out, (x, y, w), g)
    grads_ref = torch.autograd.grad(out_ref, (x, y, w), g)
    for name, a, b in zip(("x", "y", "weight"), grads, grads_ref):
        _check_close(a, b, dtype, f"grad {name}")
    return (x, y, w), g, grads_ref


@pytest.mark.parametrize("mode", ["uvw", "uvu", "uvv", "uuw", "uuu", "uvuv"])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_e3nn_every_mode(mode, shared, dtype, backend):
    torch.manual_seed(0)
    ins = _instructions(mode)
    ref = _e3nn(o3.TensorProduct, I1, I2, IO, ins, shared_weights=shared, internal_weights=False, dtype=dtype)
    tp = equitp.TensorProduct(I1, I2, IO, ins, shared_weights=shared, internal_weights=False, backend=_be(backend))
    assert tp.weight_numel == ref.weight_numel
    n = 7
    x = torch.randn(n, tp.irreps_in1.dim, dtype=dtype, requires_grad=True)
    y = torch.randn(n, tp.irreps_in2.dim, dtype=dtype, requires_grad=True)
    wshape = (tp.weight_numel,) if shared else (n, tp.weight_numel)
    w = torch.randn(wshape, dtype=dtype, requires_grad=True)
    out_ref = ref(x, y, w) if tp.weight_numel else ref(x, y)
    out = tp(x, y, w if tp.weight_numel else None)
    _check_close(out, out_ref, dtype, "output")
    g = torch.randn_like(out)
    inputs = [x, y] + ([w] if tp.weight_numel else [])
    grads_ref = torch.autograd.grad(out_ref, inputs, g)
    grads = torch.autograd.grad(out, inputs, g)
    for name, a, b in zip(["x", "y", "weight"], grads, grads_ref):
        _check_close(a, b, dtype, f"grad {name}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_ir_mul_layout(dtype, backend):
    torch.manual_seed(1)
    ins = _instructions("uvw") + _instructions("uvu")
    a = equitp.TensorProduct(I1, I2, IO, ins, shared_weights=False, backend=_be(backend))
    b = equitp.TensorProduct(I1, I2, IO, ins, shared_weights=False, layout="ir_mul", backend=_be(backend))
    x = torch.randn(5, a.irreps_in1.dim, dtype=dtype)
    y = torch.randn(5, a.irreps_in2.dim, dtype=dtype)
    w = torch.randn(5, a.weight_numel, dtype=dtype)
    out_a = a(x, y, w)
    out_b = b(_to_ir_mul(x, a.irreps_in1), _to_ir_mul(y, a.irreps_in2), w)
    _check_close(out_b, _to_ir_mul(out_a, a.irreps_out), dtype, "ir_mul output")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_fully_connected_full_elementwise_match_e3nn(dtype, backend):
    torch.manual_seed(2)
    cases = [
        (equitp.FullyConnectedTensorProduct, o3.FullyConnectedTensorProduct, ("2x0e+3x1o+1x2e", "0e+1o+2e", "4x0e+2x1o+3x1e+2x2e"), {}),
        (equitp.FullTensorProduct, o3.FullTensorProduct, ("2x0e+1x1o+1x2e", "1x0e+2x1o"), {}),
        (equitp.FullTensorProduct, o3.FullTensorProduct, ("2x0e+1x1o+1x2e", "1x0e+2x1o"), {"filter_ir_out": ["1o", "2e"]}),
        (equitp.ElementwiseTensorProduct, o3.ElementwiseTensorProduct, ("3x0e+2x1o", "1x1o+4x0e"), {}),
    ]
    for mine, theirs, args, kw in cases:
        ref = _e3nn(theirs, *args, dtype=dtype, **kw)
        tp = mine(*args, backend=_be(backend), **kw)
        assert tp.irreps_out == ref.irreps_out, (mine.__name__, tp.irreps_out, ref.irreps_out)
        assert tp.weight_numel == ref.weight_numel
        x = torch.randn(4, tp.irreps_in1.dim, dtype=dtype)
        y = torch.randn(4, tp.irreps_in2.dim, dtype=dtype)
        if tp.weight_numel:
            with torch.no_grad():
                tp.weight.copy_(ref.weight.to(torch.float32))
            tp = tp.to(dtype)
            ref = ref.to(dtype)
            with torch.no_grad():
                ref.weight.copy_(tp.weight)
        _check_close(tp(x, y), ref(x, y), dtype, mine.__name__)


@pytest.mark.parametrize("dtype", DTYPES)
def test_channelwise_matches_e3nn(dtype):
    torch.manual_seed(3)
    i1, i2, filt = "8x0e+8x1o+8x2e", "0e+1o+2e+3o", "8x0e+8x1o+8x2e+8x3o"
    tp = equitp.channelwise_tensor_product(i1, i2, filt)
    A, B, F = o3.Irreps(i1), o3.Irreps(i2), o3.Irreps(filt)
    outs, ins = [], []
    for a, (m1, r1) in enumerate(A):
        for b, (_, r2) in enumerate(B):
            for r in r1 * r2:
                if r in [ir for _, ir in F]:
                    ins.append((a, b, len(outs), "uvu", True))
                    outs.append((m1, r))
    ref = _e3nn(o3.TensorProduct, A, B, o3.Irreps(outs), ins, shared_weights=False, internal_weights=False, dtype=dtype)
    assert tp.irreps_out == ref.irreps_out and tp.weight_numel == ref.weight_numel
    x = torch.randn(6, A.dim, dtype=dtype)
    y = torch.randn(6, B.dim, dtype=dtype)
    w = torch.randn(6, tp.weight_numel, dtype=dtype)
    _check_close(tp(x, y, w), ref(x, y, w), dtype, "channelwise")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_shapes_and_broadcasting(backend, dtype):
    torch.manual_seed(4)
    tp = equitp.channelwise_tensor_product("3x0e+2x1o", "0e+1o", "3x0e+2x1o+2x1e", backend=_be(backend))
    ref = equitp.channelwise_tensor_product("3x0e+2x1o", "0e+1o", "3x0e+2x1o+2x1e", backend="reference")
    d1, d2, nw = tp.irreps_in1.dim, tp.irreps_in2.dim, tp.weight_numel
    for lead_x, lead_y, lead_w in [((0,), (0,), (0,)), ((1,), (1,), (1,)), ((13,), (13,), (13,)), ((2, 3), (3,), (1, 3)), ((4, 1), (1, 5), (4, 5))]:
        x = torch.randn(*lead_x, d1, dtype=dtype)
        y = torch.randn(*lead_y, d2, dtype=dtype)
        w = torch.randn(*lead_w, nw, dtype=dtype)
        out = tp(x, y, w)
        lead = torch.broadcast_shapes(lead_x, lead_y, lead_w)
        assert out.shape == (*lead, tp.irreps_out.dim)
        torch.testing.assert_close(out, ref(x, y, w))
        if out.numel():
            # item by item: the broadcast result is the product of the broadcast items
            xe, ye, we = torch.broadcast_tensors(x[..., :1], y[..., :1], w[..., :1])
            del xe, ye, we


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["uvw", "uvu", "uvv", "uuw", "uuu", "uvuv"])
def test_gradcheck_and_gradgradcheck(backend, mode):
    torch.manual_seed(5)
    i1, i2, io = "2x0e+2x1o", "2x0e+1x1o+2x1e", "2x0e+2x1o+2x1e+4x2e+1x0o+2x0o"
    ins = _instructions(mode, i1, i2, io)[:4]
    for shared in (True, False):
        tp = equitp.TensorProduct(i1, i2, io, ins, shared_weights=shared, internal_weights=False, backend=_be(backend))
        n = 3
        x = torch.randn(n, tp.irreps_in1.dim, dtype=torch.float64, requires_grad=True)
        y = torch.randn(n, tp.irreps_in2.dim, dtype=torch.float64, requires_grad=True)
        args = [x, y]
        if tp.weight_numel:
            w = torch.randn((tp.weight_numel,) if shared else (n, tp.weight_numel), dtype=torch.float64, requires_grad=True)
            args.append(w)
        f = lambda *a: tp(*a)  # noqa: E731
        assert torch.autograd.gradcheck(f, args, fast_mode=True)
        assert torch.autograd.gradgradcheck(f, args, fast_mode=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_equivariance(backend, dtype):
    torch.manual_seed(6)
    tp = equitp.FullyConnectedTensorProduct("2x0e+2x1o+1x2e+1x1e", "0e+1o+2e", "2x0e+2x1o+2x1e+2x2e+1x2o+1x3o", backend=_be(backend))
    tp = tp.to(dtype)
    assert_equivariant(tp, [tp.irreps_in1, tp.irreps_in2], tp.irreps_out, dtype=dtype)


def test_uvu_per_item_weights_equivariance_and_double_backward_forces():
    """Forces as -dE/dr with create_graph, then a loss on forces: the MLIP training pattern."""
    torch.manual_seed(7)
    tp = equitp.channelwise_tensor_product("4x0e+4x1o", "0e+1o+2e", "4x0e+4x1o", backend="cpu").double()
    ref = equitp.channelwise_tensor_product("4x0e+4x1o", "0e+1o+2e", "4x0e+4x1o", backend="reference").double()
    r = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    feats = torch.randn(5, tp.irreps_in1.dim, dtype=torch.float64)
    w = torch.randn(5, tp.weight_numel, dtype=torch.float64, requires_grad=True)

    def energy(m):
        sh = equitp.spherical_harmonics([0, 1, 2], r, normalize=True, normalization="component")
        return m(feats, sh, w)[:, :4].sum()

    res = []
    for m in (tp, ref):
        e = energy(m)
        (forces,) = torch.autograd.grad(-e, r, create_graph=True)
        (gw,) = torch.autograd.grad(forces.pow(2).sum(), w)
        res.append((e.detach(), forces.detach(), gw))
    for a, b in zip(*res):
        torch.testing.assert_close(a, b)


def test_torch_compile_and_create_graph():
    torch.manual_seed(8)
    tp = equitp.channelwise_tensor_product("4x0e+4x1o", "0e+1o", "4x0e+4x1o", backend="cpu")
    x = torch.randn(6, tp.irreps_in1.dim, requires_grad=True)
    y = torch.randn(6, tp.irreps_in2.dim)
    w = torch.randn(6, tp.weight_numel)

    def f(x, y, w):
        out = tp(x, y, w)
        (g,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
        return g.pow(2).sum()

    eager = f(x, y, w)
    compiled = torch.compile(f, fullgraph=False)(x, y, w)
    torch.testing.assert_close(eager, compiled)
    cf = torch.compile(lambda a, b, c: tp(a, b, c), fullgraph=True)
    torch.testing.assert_close(cf(x, y, w), tp(x, y, w))


def test_inference_calls_skip_the_op_dispatch_only_where_nothing_must_see_the_op(monkeypatch):
    # eager calls with nothing for autograd to record run the executor directly (the op's dispatch costs ~10 us a call);
    # autograd, torch.compile, dispatch modes and fake tensors must still go through the registered op
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import TorchDispatchMode

    import equitp.ops._tensor_product as optp

    torch.manual_seed(9)
    tp = equitp.FullyConnectedTensorProduct("3x0e+2x1o", "0e+1o", "2x0e+2x1o", shared_weights=False, backend="cpu")
    x, y, w = torch.randn(5, 9), torch.randn(5, 4), torch.randn(5, tp.weight_numel)
    with torch.no_grad():
        direct = tp(x, y, w)
    through_op = optp.tp_contract(optp.register_descriptor(tp.descriptor), 3, "cpu", True, w, x, y, None)
    torch.testing.assert_close(direct, through_op, rtol=0, atol=0)

    calls = []
    real = optp.tp_contract

    def counting(*args):
        calls.append(args[1])
        return real(*args)

    monkeypatch.setattr(optp, "tp_contract", counting)
    with torch.no_grad():
        tp(x, y, w)
    tp(x, y, w)  # grad enabled, but no input requires grad: still nothing to record
    assert calls == []
    tp(x.clone().requires_grad_(), y, w)
    with torch.inference_mode():
        tp(x, y, w)
    assert calls == [3]

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(str(func))
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Record() as rec:
        tp(x, y, w)
    assert any("tp_contract" in n for n in rec.names)
    with FakeTensorMode():
        out = tp(torch.empty(7, 9), torch.empty(7, 4), torch.empty(7, tp.weight_numel))
    assert out.shape == (7, tp.irreps_out.dim)
    monkeypatch.setattr(optp, "tp_contract", real)
    with torch.no_grad():
        compiled = torch.compile(lambda a, b, c: tp(a, b, c), fullgraph=True)(x, y, w)
    torch.testing.assert_close(compiled, direct)
    # a torch.jit.trace must record the op, not constants computed outside it: the trace replays on new inputs
    with torch.no_grad():
        traced = torch.jit.trace(lambda a, b, c: tp(a, b, c), (x, y, w), check_trace=False)
        x2, y2, w2 = torch.randn(5, 9), torch.randn(5, 4), torch.randn(5, tp.weight_numel)
        torch.testing.assert_close(traced(x2, y2, w2), tp(x2, y2, w2))
    assert "tp_contract" in str(traced.graph)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors_run_the_reference_executor():
    """Until the GPU kernels exist, CUDA tensors take the reference executor: same outputs and gradients as the CPU
    kernel, double backward through it, the module's weights and coefficients moved with ``.to``, and the CPU kernel
    refusing CUDA tensors by name."""
    torch.manual_seed(12)
    for make in (
        lambda b: equitp.FullyConnectedTensorProduct("3x0e+2x1o+1x2e", "0e+1o+2e", "2x0e+2x1o+1x2e", backend=b),
        lambda b: equitp.channelwise_tensor_product("4x0e+4x1o", "0e+1o+2e", "4x0e+4x1o+4x2e", backend=b),
    ):
        cpu = make("cpu").double()
        gpu = make(None).double().cuda()
        gpu.load_state_dict(cpu.state_dict())
        x = torch.randn(7, cpu.irreps_in1.dim, dtype=torch.float64, requires_grad=True)
        y = torch.randn(7, cpu.irreps_in2.dim, dtype=torch.float64, requires_grad=True)
        args = [x, y] if cpu.internal_weights else [x, y, torch.randn(7, cpu.weight_numel, dtype=torch.float64)]
        gargs = [a.detach().cuda().requires_grad_() for a in args]
        out_c, out_g = cpu(*args), gpu(*gargs)
        assert out_g.device.type == "cuda"
        torch.testing.assert_close(out_g.cpu(), out_c, rtol=TOL[torch.float64], atol=TOL[torch.float64])
        gc = torch.autograd.grad(out_c.pow(2).sum(), args[:2])
        gg = torch.autograd.grad(out_g.pow(2).sum(), gargs[:2])
        for a, b in zip(gc, gg):
            torch.testing.assert_close(b.cpu(), a, rtol=1e-9, atol=1e-9)
        small = [a[:2].detach().requires_grad_() for a in gargs]
        assert torch.autograd.gradgradcheck(lambda *a: gpu(*a), small, fast_mode=True)
        with pytest.raises(ValueError, match="backend 'cpu' runs on cpu tensors only"):
            make("cpu").double().cuda()(*gargs)
    r = torch.randn(5, 3, dtype=torch.float64)
    sh = equitp.spherical_harmonics([0, 1, 2, 3], r.cuda(), normalize=True)
    assert sh.device.type == "cuda"
    torch.testing.assert_close(sh.cpu(), equitp.spherical_harmonics([0, 1, 2, 3], r, normalize=True))


def test_nan_propagates():
    tp = equitp.channelwise_tensor_product("2x0e+2x1o", "0e+1o", "2x0e+2x1o", backend="cpu")
    x = torch.randn(3, tp.irreps_in1.dim)
    x[1, 0] = float("nan")
    out = tp(x, torch.randn(3, 4), torch.randn(3, tp.weight_numel))
    assert torch.isnan(out[1]).any() and not torch.isnan(out[0]).any()


def test_internal_weights_and_repr():
    tp = equitp.FullyConnectedTensorProduct("2x0e+1x1o", "1x1o", "1x0e+1x1e")
    assert isinstance(tp.weight, torch.nn.Parameter) and tp.weight.shape == (tp.weight_numel,)
    out = tp(torch.randn(3, 5), torch.randn(3, 3))
    out.sum().backward()
    assert tp.weight.grad is not None
    assert "paths" in repr(tp) and "CG non-zeros" in repr(tp.descriptor)
    d = tp.descriptor
    assert hash(d) == hash(equitp.FullyConnectedTensorProduct("2x0e+1x1o", "1x1o", "1x0e+1x1e").descriptor)
    assert d.flops(10) > 0 and d.bytes(10) > 0


class TestBadInput:
    def test_selection_rules(self):
        with pytest.raises(ValueError, match="triangle"):
            equitp.TensorProduct("1x1o", "1x1o", "1x3e", [(0, 0, 0, "uvw", True)])
        with pytest.raises(ValueError, match="parity"):
            equitp.TensorProduct("1x1o", "1x1o", "1x0o", [(0, 0, 0, "uvw", True)])

    def test_instruction_shape_and_mode(self):
        with pytest.raises(ValueError, match="out of range"):
            equitp.TensorProduct("1x0e", "1x0e", "1x0e", [(1, 0, 0, "uvw", True)])
        with pytest.raises(ValueError, match="mode"):
            equitp.TensorProduct("1x0e", "1x0e", "1x0e", [(0, 0, 0, "xyz", True)])
        with pytest.raises(ValueError, match="mul_out == mul_in1"):
            equitp.TensorProduct("2x0e", "1x0e", "3x0e", [(0, 0, 0, "uvu", True)])
        with pytest.raises(ValueError, match="normalization"):
            equitp.TensorProduct("1x0e", "1x0e", "1x0e", [(0, 0, 0, "uvw", True)], irrep_normalization="bogus")

    def test_malformed_irreps(self):
        with pytest.raises(ValueError, match="irreps_in1.*'3q'"):
            equitp.FullyConnectedTensorProduct("2x0e+3q", "1o", "1o")

    def test_tensors(self):
        tp = equitp.channelwise_tensor_product("2x0e+2x1o", "0e+1o", "2x0e+2x1o")
        x, y, w = torch.randn(3, 8), torch.randn(3, 4), torch.randn(3, tp.weight_numel)
        with pytest.raises(ValueError, match="x: expected last dimension 8"):
            tp(torch.randn(3, 7), y, w)
        with pytest.raises(ValueError, match="y: expected last dimension 4"):
            tp(x, torch.randn(3, 5), w)
        with pytest.raises(ValueError, match="weight: expected last dimension"):
            tp(x, y, torch.randn(3, tp.weight_numel + 1))
        with pytest.raises(TypeError, match="dtype"):
            tp(x, y.double(), w)
        with pytest.raises(TypeError, match="floating-point"):
            tp(x.long(), y, w)
        with pytest.raises(ValueError, match="broadcast"):
            tp(x, torch.randn(4, 4), w)
        with pytest.raises(ValueError, match="weight: this module has no internal weights"):
            tp(x, y)
        with pytest.raises(ValueError, match="backend"):
            equitp.channelwise_tensor_product("2x0e", "0e", "2x0e", backend="cuda-magic")


def test_cpu_output_pool_never_aliases_live_tensors():
    """Large CPU outputs come from a pool of storages nobody references: a live result is never overwritten."""
    torch.manual_seed(9)
    tp = equitp.channelwise_tensor_product("32x0e+32x1o", "0e+1o", "32x0e+32x1o", backend="cpu")
    n = 4000  # outputs above the pool's 1 MiB threshold
    args = [(torch.randn(n, tp.irreps_in1.dim), torch.randn(n, 4), torch.randn(n, tp.weight_numel)) for _ in range(3)]
    a = tp(*args[0])
    a_copy = a.clone()
    b = tp(*args[1])
    assert a.data_ptr() != b.data_ptr()
    torch.testing.assert_close(a, a_copy)
    ptr = b.data_ptr()
    del b
    c = tp(*args[2])  # may reuse b's freed storage, never a's
    assert c.data_ptr() != a.data_ptr()
    torch.testing.assert_close(a, a_copy)
    torch.testing.assert_close(c, equitp.channelwise_tensor_product("32x0e+32x1o", "0e+1o", "32x0e+32x1o", backend="reference")(*args[2]))
    del ptr


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("layout", ["mul_ir", "ir_mul"])
@pytest.mark.parametrize("order", [None, "t-first", "x-first"])
def test_fully_connected_kernel_chosen_and_matches_reference(monkeypatch, dtype, shared, layout, order):
    """DiffDock-like fully connected products run on the dedicated ``uvw`` kernel (the automatic choice), and its
    output and every gradient (x, y, weights; fused and one at a time) equal the reference executor's, with each
    path's order chosen per path (None) or forced to one order for every path."""
    from equitp.executors.cpu import _tensor_product as cpu

    monkeypatch.setattr(cpu, "UVW_ORDER", order)
    monkeypatch.setattr(cpu, "_plans", {})
    torch.manual_seed(3)
    i1, i2 = "11x1o+9x1e+40x0e+37x0o+3x2e", "1x0e+2x1o+1x2e"  # odd widths and an in2 with two channels
    kw = dict(shared_weights=shared, internal_weights=False, layout=layout)
    tp = equitp.FullyConnectedTensorProduct(i1, i2, i1, backend="cpu", **kw).to(dtype)
    ref = equitp.FullyConnectedTensorProduct(i1, i2, i1, backend="reference", **kw).to(dtype)
    plan = cpu._get_plan(tp.descriptor, dtype)
    assert plan.uvw and plan.uvw_cover and plan.uvw_assign and cpu._fully_connected(plan)
    table = plan.weight_form[0]
    x_first = plan.uvw_xw.astype(bool)
    if order is None:  # scalar inputs into higher-l outputs go x-first, higher-l inputs into scalars t-first
        assert x_first[(table[:, cpu._ADIM] == 1) & (table[:, cpu._CDIM] > 1)].all()
        assert not x_first[(table[:, cpu._ADIM] > 1) & (table[:, cpu._CDIM] == 1)].any()
    else:
        assert x_first.all() == (order == "x-first") and x_first.any() == (order == "x-first")
    (x, y, w), g, grads_ref = _check_against_reference(tp, ref, 41, dtype, shared)
    # one gradient at a time (the op's single-target path) equals the fused backward
    for i, name in enumerate(("x", "y", "weight")):
        (single,) = torch.autograd.grad(tp(x, y, w), (x, y, w)[i], g)
        _check_close(single, grads_ref[i], dtype, f"single grad {name}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_fully_connected_forward_kernel_equals_general_pass(monkeypatch, dtype):
    """The forward-only fully connected kernel (`_uvw_forward`, Clebsch-Gordan rows summed in registers and assigned)
    and the general pass (`_uvw_pass`, which the plan falls back to when a path's CG has an empty row) give the same
    output, equal to the reference executor's, per-item and shared weights, both layouts."""
    from equitp.executors.cpu import _tensor_product as cpu

    torch.manual_seed(5)
    i1, i2 = "11x1o+9x1e+40x0e+37x0o+3x2e", "1x0e+2x1o+1x2e"
    calls = []
    parallel = cpu._parallel

    def recording(kernel, *args, **kwargs):
        calls.append(kernel)
        return parallel(kernel, *args, **kwargs)

    monkeypatch.setattr(cpu, "_parallel", recording)
    for layout in ("mul_ir", "ir_mul"):
        for shared in (False, True):
            kw = dict(shared_weights=shared, internal_weights=False, layout=layout)
            tp = equitp.FullyConnectedTensorProduct(i1, i2, i1, backend="cpu", **kw).to(dtype)
            ref = equitp.FullyConnectedTensorProduct(i1, i2, i1, backend="reference", **kw).to(dtype)
            x, y = torch.randn(37, tp.irreps_in1.dim, dtype=dtype), torch.randn(37, tp.irreps_in2.dim, dtype=dtype)
            w = torch.randn(*(() if shared else (37,)), tp.weight_numel, dtype=dtype)
            plan = cpu._get_plan(tp.descriptor, dtype)
            assert plan.uvw_assign
            with torch.no_grad():
                expected = ref(x, y, w)
                outs = {}
                for assign, kernel in ((True, cpu._uvw_forward), (False, cpu._uvw_pass)):
                    plan.uvw_assign = assign  # the plan is cached: restored below
                    calls.clear()
                    try:
                        outs[assign] = tp(x, y, w)
                    finally:
                        plan.uvw_assign = True
                    assert calls == [kernel]
                _check_close(outs[True], expected, dtype, "forward kernel")
                _check_close(outs[False], expected, dtype, "general pass")
                assert not torch.equal(outs[True], torch.zeros_like(outs[True]))


@pytest.mark.parametrize(
    "irreps, fully_connected",
    [
        (("10x1o+10x1e+48x0e+48x0o", "1x0e+1x1o+1x2e", "10x1o+10x1e+48x0e+48x0o"), True),  # diffdock-l2
        (("48x0e", "1x0e", "12x0e"), True),
        (("10x1o+10x1e", "1x0e+1x1o+1x2e", "10x1o+10x1e"), True),
        (("1x0e+1x1o+1x2e+1x3o", "1x0e+1x1o+1x2e+1x3o", "64x0e+24x1e+24x1o+16x2e+16x2o"), False),  # tetris-poly-1
        (("64x0e+24x1e+24x1o+16x2e+16x2o", "1x0e+1x1o+1x2e", "0o+6x0e"), False),  # tetris-poly-2
        (("4x1o+4x1e", "1x0e+1x1o+1x2e", "4x1o+4x1e"), False),
    ],
)
def test_fully_connected_products_pick_their_kernel_family(irreps, fully_connected):
    """Fully connected products run the fully connected kernel when their paths have at least a SIMD vector of input
    and of output channels (work-weighted), the item-blocked kernels otherwise (one input channel, as in tetris-poly-1,
    or few output channels): the faster of the two in each of these cases (measured, see _use_blocked)."""
    from equitp.executors.cpu import _tensor_product as cpu

    tp = equitp.FullyConnectedTensorProduct(*irreps, backend="cpu", shared_weights=False, internal_weights=False)
    plan = cpu._get_plan(tp.descriptor, torch.float32)
    assert plan.uvw
    assert cpu._fully_connected(plan) == fully_connected
    assert cpu._blocked(plan) != fully_connected


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shared", [False, True])
def test_fully_connected_kernel_wide_rows_match_reference(dtype, shared):
    """Rows of one SIMD vector or more (the register-blocked micro-kernels): multiplicities just over one and two
    vectors (the last vector overlaps and is masked), 53 scalar outputs (whole chunks of six vectors for the wide
    kernels, 48 float32 / 24 float64 columns, then a masked rest) and outputs with 5 and 7 components (row groups of
    three and one), forward and every gradient against the reference executor."""
    torch.manual_seed(4)
    i1, i2, io = "11x1o+9x2e+20x0e+5x3o", "0e+1o+2e", "13x2e+17x1o+9x3o+53x0e+4x1e"
    kw = dict(shared_weights=shared, internal_weights=False)
    tp = equitp.FullyConnectedTensorProduct(i1, i2, io, backend="cpu", **kw).to(dtype)
    ref = equitp.FullyConnectedTensorProduct(i1, i2, io, backend="reference", **kw).to(dtype)
    _check_against_reference(tp, ref, 9, dtype, shared)


@pytest.mark.parametrize(
    "i1, i2, io, seed, tol",
    [
        # vector transposes: multiplicities of one vector plus a rest (13, 21), of whole vectors (16, 32) and below one
        # vector (5), l = 4 (nine components, element by element)
        ("13x0e+16x1o+21x2e+32x3o+5x1e+9x4e", "0e+1o+2e+3o", "13x0e+16x1o+21x2e+32x3o+5x1e+9x4e+16x3e", 5, 7),
        # rows of eight SIMD vectors per pass (64 float32 / 32 float64 channels) followed by four, one and a scalar
        # rest (multiplicities 64, 77 and 100; 100 = 64 + 32 + 4 in float32)
        ("77x0e+100x1o+64x2e", "0e+1o+2e", "77x0e+100x1o+64x2e+100x2e", 9, 5),
    ],
    ids=["transposes", "wide-rows"],
)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["mul_ir", "ir_mul"])
def test_channelwise_register_rows_and_vector_transposes_match_reference(monkeypatch, dtype, layout, i1, i2, io, seed,
                                                                         tol):
    """The per-item kernels' channelwise paths summed in registers per output row (uvu forward, uvv for the input
    gradient, the same register rows with the operands' roles swapped) and the vectorised layout changes of rows with
    3, 5 and 7 components, forward and every gradient against the reference executor."""
    from equitp.executors.cpu import _tensor_product as cpu

    monkeypatch.setattr(cpu, "KERNEL_FAMILY", "channels")
    torch.manual_seed(seed)
    args = (i1, i2, io)
    tp = equitp.channelwise_tensor_product(*args, backend="cpu", layout=layout).to(dtype)
    ref = equitp.channelwise_tensor_product(*args, backend="reference", layout=layout).to(dtype)
    _check_against_reference(tp, ref, tol, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["mul_ir", "ir_mul"])
def test_non_temporal_stores_match_reference(monkeypatch, dtype, layout):
    """Outputs and gradients written with non-temporal stores (large outputs; here forced for every size): rows of
    whole SIMD vectors of channels with 1, 3, 5 and 7 components give the reference executor's values, forward and
    every gradient; the non-temporal path is taken for the output, the input gradient and the weight gradient."""
    from equitp.executors.cpu import _tensor_product as cpu

    monkeypatch.setattr(cpu, "KERNEL_FAMILY", "channels")
    monkeypatch.setattr(cpu, "NT_MIN_BYTES", 0)
    taken = []
    use_nt, use_nt_flat = cpu._use_nt, cpu._use_nt_flat
    monkeypatch.setattr(cpu, "_use_nt", lambda plan, t, out: taken.append((t, use_nt(plan, t, out))) or taken[-1][1])
    monkeypatch.setattr(cpu, "_use_nt_flat", lambda out: taken.append((0, use_nt_flat(out))) or taken[-1][1])
    torch.manual_seed(6)
    args = ("16x0e+16x1o+32x2e+16x3o", "0e+1o+2e+3o", "16x0e+16x1o+32x2e+16x3o")
    tp = equitp.channelwise_tensor_product(*args, backend="cpu", layout=layout).to(dtype)
    ref = equitp.channelwise_tensor_product(*args, backend="reference", layout=layout).to(dtype)
    _check_against_reference(tp, ref, 11, dtype)
    assert {(3, True), (1, True), (0, True)} <= set(taken), taken


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_temporal_weight_gradient_of_the_fully_connected_kernel(monkeypatch, dtype):
    """The fully connected kernel's per-item weight gradient summed in a local row and written with non-temporal
    stores (forced for every size) equals the reference executor's, as do the output and the input gradients."""
    from equitp.executors.cpu import _tensor_product as cpu

    monkeypatch.setattr(cpu, "KERNEL_FAMILY", "uvw")
    monkeypatch.setattr(cpu, "NT_MIN_BYTES", 0)
    taken = []
    use_nt_flat = cpu._use_nt_flat
    monkeypatch.setattr(cpu, "_use_nt_flat", lambda out: taken.append(use_nt_flat(out)) or taken[-1])
    torch.manual_seed(7)
    args = ("8x0e+8x1o+16x2e", "0e+1o", "8x0e+8x1o+16x2e")  # 8 x 8 and 8 x 16 weight blocks, numel 1152
    tp = equitp.FullyConnectedTensorProduct(*args, backend="cpu", shared_weights=False, internal_weights=False)
    ref = equitp.FullyConnectedTensorProduct(*args, backend="reference", shared_weights=False, internal_weights=False)
    _check_against_reference(tp.to(dtype), ref.to(dtype), 13, dtype)
    assert True in taken


def test_non_temporal_layout_rule():
    """Rows go through non-temporal stores only as whole, aligned SIMD vectors: multiplicities of whole vectors and
    2l+1 in 1, 3, 5, 7 in mul_ir; any row of whole vectors in ir_mul."""
    from equitp.executors.cpu import _tensor_product as cpu

    def segs(s):
        return cpu._segs(equitp.Irreps(s))

    assert cpu._nt_layout(segs("16x0e+8x1o+24x3o"), True, 8)
    assert not cpu._nt_layout(segs("16x0e+12x1o"), True, 8)  # 12 channels: not whole vectors
    assert not cpu._nt_layout(segs("8x4e"), True, 8)  # nine components: no vector interleave
    assert cpu._nt_layout(segs("8x4e"), False, 8)  # ir_mul: 72 elements, whole vectors
    assert not cpu._nt_layout(segs("3x1o"), False, 8)  # 9 elements


@pytest.mark.parametrize("lanes", [None, 5])  # None: SIMD-vector rows; 5 items: the plain lane loops
@pytest.mark.parametrize("flat_max", [0, 10**9])
@pytest.mark.parametrize("mode", ["uvw", "uvu", "uuw", "uvuv"])
def test_item_blocked_flat_and_path_kernels_match_reference(monkeypatch, flat_max, mode, lanes):
    """The item-blocked family runs the flat (CSR) kernels unless the expansion is too large, then the per-path ones:
    both agree with the reference executor, forward and every gradient, with per-item weights."""
    from equitp.executors.cpu import _tensor_product as cpu

    monkeypatch.setattr(cpu, "KERNEL_FAMILY", "items")
    monkeypatch.setattr(cpu, "LANES", lanes)
    monkeypatch.setattr(cpu, "_FLAT_MAX", flat_max)
    monkeypatch.setattr(cpu, "_plans", {})
    torch.manual_seed(5)
    dtype = torch.float64
    kw = dict(shared_weights=False, internal_weights=False)
    ins = _instructions(mode)
    tp = equitp.TensorProduct(I1, I2, IO, ins, backend="cpu", **kw).to(dtype)
    ref = equitp.TensorProduct(I1, I2, IO, ins, backend="reference", **kw).to(dtype)
    n = 150  # full blocks and a partial one, for 32 or 64 items per block
    x = torch.randn(n, tp.irreps_in1.dim, dtype=dtype, requires_grad=True)
    y = torch.randn(n, tp.irreps_in2.dim, dtype=dtype, requires_grad=True)
    w = torch.randn(n, tp.weight_numel, dtype=dtype, requires_grad=True)
    out, out_ref = tp(x, y, w), ref(x, y, w)
    _check_close(out, out_ref, dtype, "output")
    assert (cpu._get_plan(tp.descriptor, dtype).flat(3) is None) == (flat_max == 0)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (x, y, w), g), torch.autograd.grad(out_ref, (x, y, w), g)):
        _check_close(a, b, dtype, "gradient")


@pytest.mark.parametrize("chunk", [64, 12])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("irreps, layout", [("0e+1o+2e+3o", "mul_ir"), ("3x0e+2x1o+2x2e", "ir_mul")])
def test_item_blocked_vector_store_matches_reference(monkeypatch, dtype, irreps, layout, chunk):
    """Outputs whose element order is the lane buffer's (single channels, or the ir_mul layout) are computed and stored
    in chunks of target elements, by SIMD transposes of whole squares plus element-wise edges: full and partial blocks
    of items, odd output sizes, chunks of whole vectors (64) and not (12)."""
    from equitp.executors.cpu import _tensor_product as cpu

    monkeypatch.setattr(cpu, "FLAT_CHUNK", chunk)
    torch.manual_seed(6)
    tp = equitp.FullTensorProduct(irreps, irreps, backend="cpu", layout=layout).to(dtype)
    ref = equitp.FullTensorProduct(irreps, irreps, backend="reference", layout=layout).to(dtype)
    plan = cpu._get_plan(tp.descriptor, dtype)
    assert cpu._blocked(plan) and plan.flat(3) is not None
    assert np.array_equal(plan.gmap[3], np.arange(tp.irreps_out.dim))
    n = 2 * cpu._flat_lanes(plan) + 13
    x = torch.randn(n, tp.irreps_in1.dim, dtype=dtype, requires_grad=True)
    y = torch.randn(n, tp.irreps_in2.dim, dtype=dtype, requires_grad=True)
    out, out_ref = tp(x, y), ref(x, y)
    _check_close(out, out_ref, dtype, "output")
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (x, y), g), torch.autograd.grad(out_ref, (x, y), g)):
        _check_close(a, b, dtype, "gradient")


@pytest.mark.parametrize("nt", [False, True])
@pytest.mark.parametrize("group", [192, 5])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out", ["0e+1o+1e+2e+2o+3o+3e+4e+0o", "0e+1o+0o", "0e+1o+2e+3o"])
def test_pair_product_kernel_matches_reference(monkeypatch, dtype, group, nt, out):
    """Forward of weightless single-channel products by the pair-product kernel (products of element pairs formed once
    per group of target rows): one group or many (groups of five pairs, rows with more pairs than that alone), output
    elements without any path (zeros), full and partial blocks of items, the output stored directly or (``nt``, forced
    for every size) through the staging block, streamed out with non-temporal stores during the next block and after
    the last. Item rows of 41 elements (staging rows padded to whole wide vectors), of 5 (a vector of the output spans
    two or three items) and of 16 (no padding)."""
    from equitp.executors.cpu import _tensor_product as cpu

    if nt:
        monkeypatch.setattr(cpu, "NT_MIN_BYTES", 0)
    taken = []
    use_nt_flat = cpu._use_nt_flat
    monkeypatch.setattr(cpu, "_use_nt_flat", lambda *a: taken.append(use_nt_flat(*a)) or taken[-1])
    monkeypatch.setattr(cpu, "PAIR_GROUP", group)
    monkeypatch.setattr(cpu, "PAIR_MIN_REUSE", 0.0)  # small groups form the same products again: below the default
    monkeypatch.setattr(cpu, "_plans", {})
    torch.manual_seed(8)
    i1 = o3.Irreps("0e+1o+2e")
    io = o3.Irreps(out)  # 0o: no path
    ins = [(a, b, c, "uuu", False) for a, (_, r1) in enumerate(i1) for b, (_, r2) in enumerate(i1)
           for c, (_, r3) in enumerate(io) if r3 in r1 * r2]
    args = (str(i1), str(i1), str(io), ins)
    tp = equitp.TensorProduct(*args, backend="cpu").to(dtype)
    ref = equitp.TensorProduct(*args, backend="reference").to(dtype)
    plan = cpu._get_plan(tp.descriptor, dtype)
    groups = plan.pairs(3)
    assert groups is not None and list(groups[6]) == ([tp.irreps_out.dim - 1] if out.endswith("0o") else [])
    assert (len(groups[1]) - 1 > 1) == (group == 5)
    assert np.diff(plan.flat(3)[1]).max() > 5  # a row with more pairs than a group of five holds
    n = 2 * cpu._pair_lanes(plan) + 7
    x = torch.randn(n, tp.irreps_in1.dim, dtype=dtype)
    y = torch.randn(n, tp.irreps_in2.dim, dtype=dtype)
    _check_close(tp(x, y), ref(x, y), dtype, "output")
    assert taken == [nt]


def test_item_block_size_fits_the_lane_buffers_in_cache():
    """64 items per block while the block's lane buffers fit in LANE_BUFFER_BYTES, 32 beyond."""
    from equitp.executors.cpu import _tensor_product as cpu

    small = equitp.FullTensorProduct("0e+1o+2e+3o+4e+5o+6e", "0e+1o+2e+3o+4e+5o+6e")  # 49 + 49 + 2401 floats
    large = equitp.FullTensorProduct("0e+1o+2e+3o+4e+5o+6e+7o+8e", "0e+1o+2e+3o+4e+5o+6e+7o+8e")  # 81 + 81 + 6561
    assert cpu._lanes(cpu._get_plan(small.descriptor, torch.float32), False) == 64
    assert cpu._lanes(cpu._get_plan(large.descriptor, torch.float32), False) == 32
    assert cpu._lanes(cpu._get_plan(small.descriptor, torch.float64), False) == 32
    # the flat forward kernel: four SIMD vectors of items (accumulators in registers)
    assert cpu._flat_lanes(cpu._get_plan(small.descriptor, torch.float32)) == 32
    assert cpu._flat_lanes(cpu._get_plan(small.descriptor, torch.float64)) == 16


@pytest.mark.parametrize("family", ["uvw", "channels", "items"])
def test_shared_weight_gradient_sums_every_chunk(monkeypatch, family):
    """With shared weights the CPU kernels sum per-chunk partial gradients; with many rows (several chunks per thread)
    the sum equals the reference executor's."""
    from equitp.executors.cpu import _tensor_product as cpu

    monkeypatch.setattr(cpu, "KERNEL_FAMILY", family)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # two workers, 2 * CHUNKS_PER_THREAD chunks, any machine
    monkeypatch.setattr(cpu, "PARALLEL_MIN_FLOPS", 0)  # split even this small product
    monkeypatch.setattr(cpu, "_plans", {})
    chunks = []
    parallel = cpu._parallel
    monkeypatch.setattr(cpu, "_parallel", lambda *a, **k: chunks.append(parallel(*a, **k)) or chunks[-1])
    torch.manual_seed(11)
    dtype = torch.float64
    i1, i2, io = "6x0e+5x1o+3x2e", "1x0e+1x1o", "4x0e+3x1o+2x1e+2x2e"
    kw = dict(shared_weights=True, internal_weights=False)
    tp = equitp.FullyConnectedTensorProduct(i1, i2, io, backend="cpu", **kw).to(dtype)
    ref = equitp.FullyConnectedTensorProduct(i1, i2, io, backend="reference", **kw).to(dtype)
    n = 1000
    x = torch.randn(n, tp.irreps_in1.dim, dtype=dtype)
    y = torch.randn(n, tp.irreps_in2.dim, dtype=dtype)
    w = torch.randn(tp.weight_numel, dtype=dtype, requires_grad=True)
    g = torch.randn(n, tp.irreps_out.dim, dtype=dtype)
    (gw,) = torch.autograd.grad(tp(x, y, w), w, g)
    (gw_ref,) = torch.autograd.grad(ref(x, y, w), w, g)
    _check_close(gw, gw_ref, dtype, "shared weight gradient")
    assert cpu.CHUNKS_PER_THREAD > 1 and max(chunks) == 2 * cpu.CHUNKS_PER_THREAD


def test_small_products_stay_on_one_thread(monkeypatch):
    """A product with little work per call is not handed to the thread pool (the hand-off costs more than it saves);
    a large one is split."""
    from equitp.executors.cpu import _tensor_product as cpu

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    chunks = []
    parallel = cpu._parallel
    monkeypatch.setattr(cpu, "_parallel", lambda *a, **k: chunks.append(parallel(*a, **k)) or chunks[-1])
    tp = equitp.FullTensorProduct("2e", "2e", backend="cpu")
    tp(torch.randn(500, 5), torch.randn(500, 5))
    assert chunks == [1]
    big = equitp.channelwise_tensor_product("32x0e+32x1o", "0e+1o", "32x0e+32x1o", backend="cpu")
    big(torch.randn(4000, 128), torch.randn(4000, 4), torch.randn(4000, big.weight_numel))
    assert chunks[-1] > 1
