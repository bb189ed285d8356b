"""Every bad input of ``equitp.ops.accumulate`` raises a clear error naming the argument."""

import pytest
import torch

from equitp.ops import accumulate
from equitp.ops._accumulate import _resolve_backend

BACKENDS = ["cpu", "reference"]


def good(dtype=torch.float64):
    X1 = torch.randn(3, 4, dtype=dtype)
    X2 = torch.randn(3, 5, dtype=dtype)
    mu = torch.tensor([0, 2, 1])
    m1 = torch.tensor([3, 0, 1])
    m2 = torch.tensor([4, 4, 0])
    C = torch.randn(3, dtype=dtype)
    return dict(X1=X1, X2=X2, mu=mu, output_size=3, m1=m1, m2=m2, C=C)


def call(backend=None, **changes):
    kwargs = good()
    kwargs.update(changes)
    return accumulate(**kwargs, backend=backend)


def test_good_inputs_pass():
    assert call().shape == (3, 3)


@pytest.mark.parametrize(
    "changes, error, match",
    [
        (dict(X1=[[1.0]]), TypeError, "X1 must be a torch.Tensor"),
        (dict(X2=3.0), TypeError, "X2 must be a torch.Tensor"),
        (dict(C=None), TypeError, "C must be a torch.Tensor"),
        (dict(mu=[0, 1, 2]), TypeError, "mu must be a torch.Tensor"),
        (dict(X1=torch.ones(3, 4, dtype=torch.int64)), TypeError, "X1 must have dtype float32 or float64, got torch.int64"),
        (dict(X2=torch.ones(3, 5, dtype=torch.float16)), TypeError, "X2 must have dtype float32 or float64"),
        (dict(X1=torch.ones(3, 4, dtype=torch.complex128)), TypeError, "X1 must have dtype"),
        (dict(X1=torch.tensor(1.0, dtype=torch.float64)), ValueError, "X1 must have at least 1 dimension"),
        (dict(X2=torch.randn(3, 5, dtype=torch.float32)), TypeError, "same dtype.*float64.*float32"),
        (dict(C=torch.randn(3, dtype=torch.float32)), TypeError, "C must have the dtype of X1"),
        (dict(C=torch.randn(3, 1, dtype=torch.float64)), ValueError, r"C must be 1-D, got shape \(3, 1\)"),
        (dict(mu=torch.tensor([0.0, 1.0, 2.0])), TypeError, "mu must have dtype int64 or int32, got torch.float32"),
        (dict(m1=torch.tensor([0, 1, 1], dtype=torch.int16)), TypeError, "m1 must have dtype int64 or int32"),
        (dict(m2=torch.tensor([[0, 1, 1]])), ValueError, r"m2 must be 1-D, got shape \(1, 3\)"),
        (dict(mu=torch.tensor([0, 1])), ValueError, r"mu must have the length of C \(3\), got 2"),
        (dict(m1=torch.tensor([0, 1, 2, 3])), ValueError, r"m1 must have the length of C \(3\), got 4"),
        (dict(m2=torch.tensor([0])), ValueError, "m2 must have the length of C"),
        (dict(output_size=-1), ValueError, "output_size must be >= 0, got -1"),
        (dict(output_size=3.0), TypeError, "output_size must be an int, got float"),
        (dict(output_size=True), TypeError, "output_size must be an int, got bool"),
        (dict(X2=torch.randn(2, 5, dtype=torch.float64)), ValueError, r"leading dimensions of X1 \(3,\) and X2 \(2,\)"),
        (dict(X1=torch.randn(4, 3, 4, dtype=torch.float64), X2=torch.randn(2, 3, 5, dtype=torch.float64)), ValueError,
         "not broadcastable"),
    ],
)
def test_bad_arguments(changes, error, match):
    with pytest.raises(error, match=match):
        call(**changes)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(mu=torch.tensor([0, 3, 1])), r"mu must satisfy 0 <= mu < output_size = 3, got the value 3"),
        (dict(mu=torch.tensor([0, -1, 1])), "mu must satisfy.*got the value -1"),
        (dict(m1=torch.tensor([0, 4, 1])), r"m1 must satisfy 0 <= m1 < M1 = 4, got the value 4"),
        (dict(m1=torch.tensor([0, 1, -2], dtype=torch.int32)), "m1 must satisfy.*-2"),
        (dict(m2=torch.tensor([5, 0, 0])), r"m2 must satisfy 0 <= m2 < M2 = 5, got the value 5"),
        (dict(output_size=0), "mu must satisfy 0 <= mu < output_size = 0"),
    ],
)
def test_out_of_range_indices(backend, changes, match):
    with pytest.raises(ValueError, match=match):
        call(backend=backend, **changes)


def test_out_of_range_raises_also_for_empty_rows():
    with pytest.raises(ValueError, match="mu must satisfy"):
        call(X1=torch.randn(0, 4, dtype=torch.float64), X2=torch.randn(0, 5, dtype=torch.float64), mu=torch.tensor([0, 9, 1]))


def test_mixed_devices():
    meta = dict(device="meta")
    with pytest.raises(ValueError, match="X1 and X2 must be on the same device, got X1 on cpu and X2 on meta"):
        call(X2=torch.empty(3, 5, dtype=torch.float64, **meta))
    with pytest.raises(ValueError, match="C must be on the same device as X1"):
        call(C=torch.empty(3, dtype=torch.float64, **meta))
    with pytest.raises(ValueError, match="m2 must be on the same device as X1"):
        call(m2=torch.empty(3, dtype=torch.int64, **meta))


def test_unknown_backend_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown backend 'triton2'; valid backends are \['cpu', 'reference'\]"):
        call(backend="triton2")
    with pytest.raises(TypeError, match="backend must be None or a string"):
        call(backend=1)


def test_resolve_backend():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert _resolve_backend(None, cpu) == "cpu"
    assert _resolve_backend(None, cuda) == "reference"
    assert _resolve_backend("reference", cuda) == "reference"
    assert _resolve_backend("cpu", "cpu") == "cpu"
    with pytest.raises(ValueError, match="backend 'cpu' runs on cpu tensors only, got tensors on cuda:0"):
        _resolve_backend("cpu", cuda)
    # the registry is extensible: the lead adds GPU backends here
    registry = {"reference": None, "cpu": ("cpu",), "triton": ("cuda",)}
    assert _resolve_backend(None, cuda, backends=registry, defaults={"cpu": "cpu", "cuda": "triton"}) == "triton"
    with pytest.raises(ValueError, match="backend 'triton' runs on cuda tensors only"):
        _resolve_backend("triton", cpu, backends=registry)


def test_cpu_backend_refuses_other_devices():
    kwargs = {k: (v.to("meta") if isinstance(v, torch.Tensor) else v) for k, v in good().items()}
    with pytest.raises(ValueError, match="backend 'cpu' runs on cpu tensors only, got tensors on meta"):
        accumulate(**kwargs, backend="cpu")
