"""The problems (inputs of one case at one size) and the implementations timed on them: equitp's backends and one
small adapter per peer.

Every implementation is a callable ``fn(x, y, w) -> out`` on the problem's tensors (``w`` None without weights), so
one timing loop serves all of them. An adapter that cannot run here raises `Unavailable` with a one-line reason
(the row says ``skipped: <reason>``); any other exception becomes the row's ``error``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

from ._cases import Case, accumulate_dims

__all__ = [
    "Unavailable",
    "Impl",
    "Problem",
    "PEERS",
    "equitp_backends",
    "make_problem",
    "build_equitp",
    "build_peer",
    "peers_for",
]


class Unavailable(Exception):
    """An implementation that cannot run here (not installed, wrong device, unsupported case): not a failure."""


@dataclass
class Impl:
    """One timed implementation.

    Attributes:
        name: the row's ``impl`` (``equitp-cpu``, ``e3nn``, ``index_add``, ...); peers are keyed by it in
            ``speedup_vs``.
        library: ``equitp``, ``e3nn``, ``cuequivariance``, ``openequivariance`` or ``torch`` (classic baselines).
        backend: equitp's executor, or the peer's variant (``eager``, ``compile``, ``naive``, ...).
        fn: ``fn(x, y, w) -> out``.
        comparable: the output has equitp's layout and normalisation, so ``max_abs_err`` against the reference
            executor is meaningful.
    """

    name: str
    library: str
    backend: str
    fn: Callable
    comparable: bool = True


@dataclass
class Problem:
    """The inputs of one case at one batch size, and its cost model.

    Attributes:
        x, y: ``(batch, dim1)``, ``(batch, dim2)`` inputs (for ``accumulate``: ``(*leading_dims, 2l+1)``);
            autograd leaves (``requires_grad=True``).
        w: ``(batch, weight_numel)`` (weights per item), ``(weight_numel,)`` (shared) or None; a leaf too.
        g: gradient of the output, shaped like the output.
        oracle: ``oracle(x, y, w) -> out`` in float64 with equitp's reference executor.
        descriptor: the equitp descriptor (flop and byte counts).
    """

    case: Case
    batch: int
    device: torch.device
    dtype: torch.dtype
    x: torch.Tensor
    y: torch.Tensor
    w: Optional[torch.Tensor]
    g: torch.Tensor
    oracle: Callable
    descriptor: object
    extra: Dict[str, object] = field(default_factory=dict)

    @property
    def itemsize(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    def flops(self, pass_: str) -> Optional[int]:
        """Useful FLOPs of ``pass_`` from the descriptor (None for ``double-bwd``, which has no count)."""
        if pass_ == "double-bwd":
            return None
        d = self.descriptor
        if self.case.tp == "accumulate":
            fwd = d.flops(self.batch)
            return {"fwd": fwd, "bwd": 2 * fwd, "fwd+bwd": 3 * fwd}[pass_]
        return int(d.flops(self.batch, pass_))

    def bytes(self, pass_: str) -> Optional[int]:
        """Compulsory memory traffic of ``pass_`` from the descriptor (None for ``double-bwd``)."""
        if pass_ == "double-bwd":
            return None
        d = self.descriptor
        if self.case.tp == "accumulate":
            fwd = d.bytes(self.batch, self.dtype)
            bwd = self.batch * (2 * d.output_size + 2 * d.M1 + 2 * d.M2) * self.itemsize
            return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[pass_]
        return int(d.bytes(self.batch, itemsize=self.itemsize, shared_weights=self.case.shared_weights, pass_=pass_))

    def inputs(self) -> List[torch.Tensor]:
        return [t for t in (self.x, self.y, self.w) if t is not None]

    def sliced(self, n: int) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
        """The first ``n`` items (rows) of every batched operand, for the error check."""
        if self.case.tp == "accumulate":
            M1, M2 = self.x.shape[-1], self.y.shape[-1]
            x, y = self.x.reshape(-1, M1)[:n], self.y.reshape(-1, M2)[:n]
            g = self.g.reshape(-1, self.g.shape[-1])[:n]
            return x, y, None, g
        w = self.w
        if w is not None and w.dim() == 2:
            w = w[:n]
        return self.x[:n], self.y[:n], w, self.g[:n]


# -- equitp ----------------------------------------------------------------------------------------------------------
def equitp_backends(tp: str) -> Tuple[str, ...]:
    """equitp's executors for a kind of case."""
    if tp == "accumulate":
        from ..ops._accumulate import BACKEND_DEVICES

        return tuple(BACKEND_DEVICES)
    from ..ops._tensor_product import BACKENDS

    return tuple(BACKENDS)


def default_backend(device: torch.device) -> str:
    """The executor ``backend=None`` picks on ``device``."""
    return "cpu" if device.type == "cpu" else "reference"


def _filter_irs(irreps: str):
    from ..irreps import Irreps

    return [mi.ir for mi in Irreps(irreps)] if irreps else None


def _equitp_module(case: Case, backend: Optional[str]):
    import equitp

    if case.tp == "channelwise":
        return equitp.channelwise_tensor_product(case.irreps_in1, case.irreps_in2, case.irreps_out,
                                                 shared_weights=case.shared_weights, internal_weights=False,
                                                 backend=backend)
    if case.tp == "fully-connected":
        return equitp.FullyConnectedTensorProduct(case.irreps_in1, case.irreps_in2, case.irreps_out,
                                                  shared_weights=case.shared_weights, internal_weights=False,
                                                  backend=backend)
    if case.tp == "full":
        return equitp.FullTensorProduct(case.irreps_in1, case.irreps_in2, filter_ir_out=_filter_irs(case.irreps_out),
                                        backend=backend)
    raise ValueError(f"tp: unknown tensor-product kind {case.tp!r}")


def _check_device(device: torch.device) -> None:
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Unavailable("CUDA is not available on this machine")


def make_problem(case: Case, batch: int, device: torch.device, dtype: torch.dtype, seed: int = 0) -> Problem:
    """Random inputs (standard normal, fixed seed) for ``case`` at ``batch`` items, on ``device``.

    Raises:
        Unavailable: the device is absent, or the problem needs more memory than the machine has available.
    """
    _check_device(device)
    gen = torch.Generator().manual_seed(seed)
    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype).to(device).requires_grad_(True)

    if case.tp == "accumulate":
        from ..descriptors import SparseAccumulation, real_cg_rule
        from ..ops import accumulate

        l = int(case.param_dict["l"])
        m1, m2, mu, C = real_cg_rule(l, l, l, dtype=dtype)
        M = 2 * l + 1
        d = SparseAccumulation(m1, m2, mu, M, M, M)
        _check_memory(8 * batch * M * torch.empty((), dtype=dtype).element_size(), device)
        dims = accumulate_dims(batch)
        x, y, g = rand(*dims, M), rand(*dims, M), rand(*dims, M).detach()
        rule = dict(mu=mu.to(device), m1=m1.to(device), m2=m2.to(device), C=C.to(device), output_size=M)
        C64 = rule["C"].double()

        def oracle(a, b, w=None):
            return accumulate(a, b, rule["mu"], M, rule["m1"], rule["m2"], C64, backend="reference")

        return Problem(case, batch, device, dtype, x, y, None, g, oracle, d,
                       extra=dict(rule=rule, leading_dims=dims, l=l, nnz=d.nnz))
    reference = _equitp_module(case, "reference").to(device=device, dtype=torch.float64)
    d = reference.descriptor
    itemsize = torch.empty((), dtype=dtype).element_size()
    _check_memory(d.bytes(batch, itemsize=itemsize, shared_weights=case.shared_weights, pass_="fwd+bwd"), device)
    x = rand(batch, d.irreps_in1.dim)
    y = rand(batch, d.irreps_in2.dim)
    w = None
    if d.weight_numel > 0:
        w = rand(d.weight_numel) if case.shared_weights else rand(batch, d.weight_numel)
    g = rand(batch, d.irreps_out.dim).detach()
    return Problem(case, batch, device, dtype, x, y, w, g, reference, d)


def _check_memory(nbytes: int, device: torch.device) -> None:
    """Refuses a problem whose operands alone exceed what the device has free (a row, not an OOM kill)."""
    free = None
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable"):
                        free = int(line.split()[1]) * 1024
        except OSError:
            free = None
    if free is not None and nbytes > 0.8 * free:
        raise Unavailable(f"out of memory: the operands need about {nbytes / 1e9:.1f} GB, "
                          f"{free / 1e9:.1f} GB are free on {device}")


def build_equitp(case: Case, backend: str, problem: Problem) -> Impl:
    """equitp on ``backend`` for ``case``."""
    if backend == "cpu" and problem.device.type != "cpu":
        raise Unavailable(f"backend 'cpu' runs on CPU tensors only (device is {problem.device})")
    if case.tp == "accumulate":
        from ..ops import accumulate

        r = problem.extra["rule"]
        mu, m1, m2, C, K = r["mu"], r["m1"], r["m2"], r["C"], r["output_size"]
        return Impl(f"equitp-{backend}", "equitp", backend,
                    lambda a, b, w=None: accumulate(a, b, mu, K, m1, m2, C, backend=backend))
    module = _equitp_module(case, backend).to(device=problem.device, dtype=problem.dtype)
    return Impl(f"equitp-{backend}", "equitp", backend, lambda x, y, w: module(x, y, w))


# -- e3nn --------------------------------------------------------------------------------------------------------------
def _import(name: str, pip: str):
    try:
        return __import__(name, fromlist=["_"])
    except ImportError:
        raise Unavailable(f"{pip} is not installed (pip install {pip})") from None


def _e3nn_module(case: Case):
    o3 = _import("e3nn.o3", "e3nn")
    I1, I2 = o3.Irreps(case.irreps_in1), o3.Irreps(case.irreps_in2)
    if case.tp == "channelwise":
        keep = {ir for _, ir in o3.Irreps(case.irreps_out)}
        out, instructions = [], []
        for i1, (mul, ir1) in enumerate(I1):
            for i2, (_, ir2) in enumerate(I2):
                for ir in ir1 * ir2:
                    if ir in keep:
                        instructions.append((i1, i2, len(out), "uvu", True))
                        out.append((mul, ir))
        return o3.TensorProduct(I1, I2, o3.Irreps(out), instructions, shared_weights=case.shared_weights,
                                internal_weights=False)
    if case.tp == "fully-connected":
        return o3.FullyConnectedTensorProduct(I1, I2, o3.Irreps(case.irreps_out), shared_weights=case.shared_weights,
                                              internal_weights=False)
    if case.tp == "full":
        keep = [ir for _, ir in o3.Irreps(case.irreps_out)] if case.irreps_out else None
        return o3.FullTensorProduct(I1, I2, filter_ir_out=keep)
    raise Unavailable(f"e3nn has no {case.tp!r} product")


def _e3nn_fn(module, has_weight: bool):
    if has_weight:
        return lambda x, y, w: module(x, y, w)
    return lambda x, y, w: module(x, y)


def _build_e3nn(case: Case, problem: Problem) -> Impl:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = _e3nn_module(case).to(device=problem.device, dtype=problem.dtype)
    return Impl("e3nn", "e3nn", "eager", _e3nn_fn(module, problem.w is not None))


def _build_e3nn_compile(case: Case, problem: Problem) -> Impl:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = _e3nn_module(case).to(device=problem.device, dtype=problem.dtype)
    compiled = torch.compile(module)
    return Impl("e3nn-compile", "e3nn", "compile", _e3nn_fn(compiled, problem.w is not None))


# -- cuequivariance-torch ----------------------------------------------------------------------------------------------
def _build_cuequivariance(case: Case, problem: Problem) -> Impl:
    cue = _import("cuequivariance", "cuequivariance-torch")
    cuet = _import("cuequivariance_torch", "cuequivariance-torch")
    on_cpu = problem.device.type != "cuda"
    I1, I2 = cue.Irreps("O3", case.irreps_in1), cue.Irreps("O3", case.irreps_in2)
    kw = dict(device=problem.device, dtype=problem.dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if case.tp == "channelwise":
            keep = [ir for _, ir in cue.Irreps("O3", case.irreps_out)]
            module = cuet.ChannelWiseTensorProduct(I1, I2, keep, layout=cue.mul_ir, shared_weights=case.shared_weights,
                                                   internal_weights=False, method="naive" if on_cpu else None, **kw)
        elif case.tp == "fully-connected":
            module = cuet.FullyConnectedTensorProduct(I1, I2, cue.Irreps("O3", case.irreps_out), layout=cue.mul_ir,
                                                      shared_weights=case.shared_weights, internal_weights=False,
                                                      method="naive" if on_cpu else None, **kw)
        elif case.tp == "full":
            if any(mul != 1 for mul, _ in I1) or any(mul != 1 for mul, _ in I2):
                raise Unavailable("the cuequivariance adapter runs the full product on single-channel inputs only")
            keep = [ir for _, ir in cue.Irreps("O3", case.irreps_out)] if case.irreps_out else None
            poly = cue.descriptors.full_tensor_product(I1, I2, keep).polynomial
            method = "naive"
            if not on_cpu:
                try:  # its CUDA kernel where the segments allow it
                    module = cuet.SegmentedPolynomial(poly, method="uniform_1d").to(problem.device)
                    method = "uniform_1d"
                except Exception:  # noqa: BLE001
                    method = "naive"
            if method == "naive":
                module = cuet.SegmentedPolynomial(poly, method="naive").to(problem.device)
            return Impl("cuequivariance", "cuequivariance", method, lambda x, y, w: module([x, y])[0],
                        comparable=False)
        else:
            raise Unavailable(f"cuequivariance has no {case.tp!r} product")
    if case.shared_weights:
        fn = (lambda x, y, w: module(x, y, w.reshape(1, -1)))
    else:
        fn = (lambda x, y, w: module(x, y, w))
    # outputs in cuequivariance's own order and weight layout: timed, not compared
    return Impl("cuequivariance", "cuequivariance", getattr(module, "method", "naive"), fn, comparable=False)


# -- openequivariance ------------------------------------------------------------------------------------------------
def _build_openequivariance(case: Case, problem: Problem) -> Impl:
    if problem.device.type != "cuda":
        raise Unavailable(f"openequivariance needs CUDA (device is {problem.device})")
    if case.tp not in ("channelwise", "fully-connected"):
        raise Unavailable(f"openequivariance has no {case.tp!r} product (uvu and uvw only)")
    oeq = _import("openequivariance", "openequivariance")
    e3nn_module = _e3nn_module(case)
    instructions = [(i.i_in1, i.i_in2, i.i_out, i.connection_mode, i.has_weight) for i in e3nn_module.instructions]
    problem_spec = oeq.TPProblem(e3nn_module.irreps_in1, e3nn_module.irreps_in2, e3nn_module.irreps_out, instructions,
                                 shared_weights=case.shared_weights, internal_weights=False,
                                 irrep_dtype=problem.dtype, weight_dtype=problem.dtype)
    module = oeq.TensorProduct(problem_spec)
    return Impl("openequivariance", "openequivariance", "cuda", lambda x, y, w: module(x, y, w))


# -- classic baselines of the sparse accumulation ---------------------------------------------------------------------
def _build_accumulate_baseline(name: str):
    def build(case: Case, problem: Problem) -> Impl:
        if problem.device.type != "cpu":
            raise Unavailable(f"the {name} baseline runs on CPU only in this version")
        from . import _accumulate_cases as ac

        if name not in ac.IMPLEMENTATIONS:
            raise Unavailable(f"{name} is not an implementation of equitp.bench._accumulate_cases")
        r = problem.extra["rule"]
        p = dict(X1=problem.x, X2=problem.y, mu=r["mu"], m1=r["m1"], m2=r["m2"], C=r["C"], output_size=r["output_size"])
        run = ac._BUILDERS[name](p)
        return Impl(name, "torch", name, lambda a, b, w=None: run(a, b))

    return build


#: ``python-loops`` runs by default only when rows x nnz is at most this (it is a Python loop over the non-zeros)
PYTHON_LOOPS_MAX_WORK = 1_000_000


@dataclass(frozen=True)
class Peer:
    """A peer: what it is, where it runs, which kinds of case it has and whether it runs by default."""

    name: str
    library: str
    kinds: Tuple[str, ...]
    default: bool
    build: Callable
    description: str


_TP_KINDS = ("channelwise", "fully-connected", "full")

#: Peers by name (``--peer``).
PEERS: Dict[str, Peer] = {
    p.name: p
    for p in (
        Peer("e3nn", "e3nn", _TP_KINDS, True, _build_e3nn, "e3nn 0.6 o3.TensorProduct, eager"),
        Peer("e3nn-compile", "e3nn", _TP_KINDS, False, _build_e3nn_compile,
             "e3nn 0.6 under torch.compile (opt-in: compiling takes minutes on a small CPU)"),
        Peer("cuequivariance", "cuequivariance", _TP_KINDS, True, _build_cuequivariance,
             "cuequivariance-torch: its naive torch path on CPU, its CUDA kernels on a GPU"),
        Peer("openequivariance", "openequivariance", ("channelwise", "fully-connected"), True,
             _build_openequivariance, "openequivariance JIT CUDA kernels (GPU only)"),
        Peer("index_add", "torch", ("accumulate",), True, _build_accumulate_baseline("index_add"),
             "gather both operands, multiply, index_add_ into the output"),
        Peer("dense-matmul", "torch", ("accumulate",), True, _build_accumulate_baseline("dense-matmul"),
             "outer product [N, M1*M2] times the dense rule (zeros included)"),
        Peer("torch-sparse", "torch", ("accumulate",), True, _build_accumulate_baseline("torch-sparse"),
             "torch.sparse.mm of the COO rule with the transposed outer product"),
        Peer("python-loops", "torch", ("accumulate",), True, _build_accumulate_baseline("python-loops"),
             "a Python loop over the non-zeros (by default only when rows * nnz <= 1e6)"),
    )
}


def peers_for(case: Case, problem: Optional[Problem], names: Optional[List[str]]) -> List[str]:
    """The peers that apply to ``case``: the named ones (all that have its kind) or, when ``names`` is None, the
    default ones (``python-loops`` only on small problems)."""
    chosen = []
    for name, peer in PEERS.items():
        if case.tp not in peer.kinds:
            continue
        if names is None:
            if not peer.default:
                continue
            if name == "python-loops" and problem is not None:
                if problem.batch * problem.extra.get("nnz", 0) > PYTHON_LOOPS_MAX_WORK:
                    continue
        elif name not in names:
            continue
        chosen.append(name)
    return chosen


def build_peer(name: str, case: Case, problem: Problem) -> Impl:
    """The peer ``name`` on ``case``'s problem (raises `Unavailable` with the reason when it cannot run)."""
    return PEERS[name].build(case, problem)

