"""The embedded benchmark configurations (GUIDE §4) and the suites that run them.

A `Case` is a problem without a size: which tensor product (``tp``), on which irreps. A `Suite` is a list of
``(case label, batch, quick batch)`` entries: the same case can run at several sizes, and ``--quick`` runs the
entries that have a quick batch, at that batch.

Tensor-product kinds (``tp``):

* ``channelwise``: ``equitp.channelwise_tensor_product`` (``uvu``, one output block per allowed path, weights per
  item), the convolution product of MACE and NequIP; ``irreps_out`` is the output filter.
* ``fully-connected``: ``equitp.FullyConnectedTensorProduct`` (``uvw``); weights per item or shared.
* ``full``: ``equitp.FullTensorProduct`` (``uvuv``, no weights, outputs sorted); ``irreps_out`` is the output filter
  (empty: every path).
* ``accumulate``: ``equitp.ops.accumulate`` with the real Clebsch–Gordan rule ``l x l -> l``; the batch is the
  number of rows (product of the leading dimensions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

__all__ = ["Case", "Suite", "CASES", "SUITES", "TP_KINDS", "PASSES", "sh_irreps", "accumulate_dims"]

#: tensor-product kinds a case can have
TP_KINDS = ("channelwise", "fully-connected", "full", "accumulate")
#: the passes a row can report
PASSES = ("fwd", "bwd", "fwd+bwd", "double-bwd")


@dataclass(frozen=True)
class Case:
    """One benchmark configuration.

    Attributes:
        label: unique name (``mace-large``, ``mimo-L3``, ``accumulate-l8``, ...).
        tp: one of :data:`TP_KINDS`.
        irreps_in1, irreps_in2: input irreps (e3nn syntax; empty for ``accumulate``).
        irreps_out: output irreps (``fully-connected``) or output filter (``channelwise``, ``full``; empty: none).
        shared_weights: one weight vector for the batch (True) or one per item (False).
        batch: the nominal batch (GUIDE §4 sizes), used when a case is named with ``--case`` and no ``--batch``.
        params: extra parameters, reported in each row (``family`` and ``L`` of a sweep case, ``l`` of an
            accumulate case, ...).
        description: one line for ``equitp cases``.
    """

    label: str
    tp: str
    irreps_in1: str = ""
    irreps_in2: str = ""
    irreps_out: str = ""
    shared_weights: bool = False
    batch: int = 10_000
    params: Tuple[Tuple[str, object], ...] = ()
    description: str = ""

    @property
    def param_dict(self) -> Dict[str, object]:
        return dict(self.params)


@dataclass(frozen=True)
class Suite:
    """A named list of ``(case label, batch, quick batch or None)`` entries.

    Attributes:
        name: the suite's name (``--suite``).
        description: one line for ``equitp cases``.
        entries: the cases and their sizes; an entry whose quick batch is None is left out by ``--quick``.
        repeats: timed rounds (alternating over the implementations) per pass.
        warmup: untimed rounds before them.
        passes: passes reported by default.
        budget_s: seconds of timed rounds per loop of one case before the rounds are cut (at least 3 run).
        external: the suite's rows come from another module (``e2``).
    """

    name: str
    description: str
    entries: Tuple[Tuple[str, int, Optional[int]], ...] = ()
    repeats: int = 5
    warmup: int = 1
    passes: Tuple[str, ...] = ("fwd", "bwd", "fwd+bwd")
    budget_s: float = 20.0
    external: bool = False


def sh_irreps(lmax: int, lmin: int = 0) -> str:
    """``"0e+1o+2e+..."``: one copy of each irrep ``lmin..lmax`` with the parity of the spherical harmonics."""
    return "+".join(f"{l}{'e' if l % 2 == 0 else 'o'}" for l in range(lmin, lmax + 1))


def _sh_irrep(l: int) -> str:
    return f"{l}{'e' if l % 2 == 0 else 'o'}"


def accumulate_dims(batch: int, inner: int = 200) -> Tuple[int, ...]:
    """Leading dimensions of an accumulate problem with ``batch`` rows: ``(batch // inner, inner)`` when ``inner``
    divides ``batch``, else ``(batch,)``."""
    if batch >= inner and batch % inner == 0:
        return (batch // inner, inner)
    return (batch,)


def _build_cases() -> Dict[str, Case]:
    cases = []
    # -- channelwise (uvu), GUIDE §4 ------------------------------------------------------------------------------
    nequip = lambda lmax, mul: "+".join(f"{mul}x{l}o+{mul}x{l}e" for l in range(lmax + 1))  # noqa: E731
    channelwise = [
        ("mace-large", "128x0e+128x1o+128x2e", "1x0e+1x1o+1x2e+1x3o", "128x0e+128x1o+128x2e+128x3o"),
        ("mace-medium", "128x0e+128x1o", "1x0e+1x1o+1x2e+1x3o", "128x0e+128x1o+128x2e"),
        ("nequip-lips", nequip(2, 32), "0e+1o+2e", nequip(2, 32)),
        ("nequip-revmd17-aspirin", nequip(1, 64), "0e+1o", nequip(1, 64)),
        ("nequip-revmd17-toluene", nequip(2, 64), "0e+1o+2e", nequip(2, 64)),
        ("nequip-revmd17-benzene", nequip(3, 64), "0e+1o+2e+3o", nequip(3, 64)),
        ("nequip-water", nequip(1, 32), "0e+1o", nequip(1, 32)),
    ]
    for label, i1, i2, f in channelwise:
        cases.append(Case(label, "channelwise", i1, i2, f, False, 10_000, (("family", "standard"),),
                          "channelwise (uvu), weights per item"))
    # -- fully connected (uvw), GUIDE §4 --------------------------------------------------------------------------
    diffdock = "10x1o+10x1e+48x0e+48x0o"
    tetris = "64x0e+24x1e+24x1o+16x2e+16x2o"
    fully_connected = [
        ("diffdock-l1", diffdock, "1x0e+1x1o", diffdock, False),
        ("diffdock-l2", diffdock, "1x0e+1x1o+1x2e", diffdock, False),
        ("tetris-poly-1", "1x0e+1x1o+1x2e+1x3o", "1x0e+1x1o+1x2e+1x3o", tetris, True),
        ("tetris-poly-2", tetris, "1x0e+1x1o+1x2e", "0o+6x0e", True),
    ]
    for label, i1, i2, o, shared in fully_connected:
        cases.append(Case(label, "fully-connected", i1, i2, o, shared, 10_000, (("family", "standard"),),
                          f"fully connected (uvw), {'shared weights' if shared else 'weights per item'}"))
    # -- degree sweeps, single channel, full CG product ------------------------------------------------------------
    for L in range(1, 11):
        if L % 2 == 0:  # L x L -> L with SH parities is forbidden for odd L: an empty product, not timed
            cases.append(Case(f"siso-L{L}", "full", _sh_irrep(L), _sh_irrep(L), _sh_irrep(L), False, 10_000,
                              (("family", "siso"), ("L", L)), f"single in, single out: {_sh_irrep(L)} x itself -> "
                              f"{_sh_irrep(L)}"))
        cases.append(Case(f"simo-L{L}", "full", _sh_irrep(L), _sh_irrep(L), sh_irreps(2 * L), False, 10_000,
                          (("family", "simo"), ("L", L)), f"single in, multiple out: {_sh_irrep(L)} x itself -> "
                          f"l <= {2 * L}"))
        cases.append(Case(f"mimo-L{L}", "full", sh_irreps(L), sh_irreps(L), sh_irreps(2 * L), False, 10_000,
                          (("family", "mimo"), ("L", L)), f"multiple in, multiple out: 0e+...+{_sh_irrep(L)} x "
                          f"itself -> l <= {2 * L}"))
    # -- the full product of issue 2's performance target ----------------------------------------------------------
    cases.append(Case("full-l6", "full", sh_irreps(6), sh_irreps(6), "", False, 10_000, (("family", "full"), ("L", 6)),
                      "full single-channel product of 0e+1o+...+6e with itself, every path (outputs up to l=12)"))
    # -- roofline: one uvu path l x l -> l with 128 channels, growing l --------------------------------------------
    for l in range(0, 9):
        cases.append(Case(f"roofline-l{l}", "channelwise", f"128x{l}e", f"1x{l}e", f"128x{l}e", False, 10_000,
                          (("family", "roofline"), ("l", l)), f"single uvu path 128x{l}e x {l}e -> 128x{l}e"))
    # -- sparse accumulation --------------------------------------------------------------------------------------
    for l in (2, 3, 5, 8):
        cases.append(Case(f"accumulate-l{l}", "accumulate", batch=20_000, params=(("family", "accumulate"), ("l", l)),
                          description=f"accumulate, real CG rule {l} x {l} -> {l}; batch = rows (leading dims "
                          f"(batch/200, 200))"))
    return {c.label: c for c in cases}


#: every embedded case, by label
CASES: Dict[str, Case] = _build_cases()

_STANDARD = [c.label for c in CASES.values() if c.param_dict.get("family") == "standard"]


def _build_suites() -> Dict[str, Suite]:
    suites = [
        Suite(
            "default",
            "what `equitp bench` runs: the standard configurations and a short sweep (L <= 4) at batch 250, the "
            "l=8 accumulation at 20,000 rows (2-3 min on 2 cores; --quick: a subset at batch 64, < 1 min)",
            tuple((label, 250, 64 if label in ("mace-large", "diffdock-l2", "tetris-poly-2") else None)
                  for label in _STANDARD)
            + tuple((f"{fam}-L{L}", 250, 64 if L == 2 and fam != "simo" else None)
                    for fam in ("siso", "simo", "mimo") for L in (1, 2, 3, 4) if f"{fam}-L{L}" in CASES)
            + (("accumulate-l8", 20_000, 4_000),),
            repeats=5,
            budget_s=4.0,
        ),
        Suite(
            "standard",
            "the GUIDE §4 channelwise (uvu) and fully connected (uvw) configurations at batch 10,000",
            tuple((label, 10_000, 1_000) for label in _STANDARD),
            repeats=5,
        ),
        Suite(
            "sweep",
            "single-channel full CG product, L = 1..10, SISO / SIMO / MIMO, batch 1,000 (odd-L SISO is an empty "
            "product and is left out)",
            tuple((f"{fam}-L{L}", 1000, 100 if L <= 4 else None)
                  for fam in ("siso", "simo", "mimo") for L in range(1, 11) if f"{fam}-L{L}" in CASES),
            repeats=3,
        ),
        Suite(
            "accumulate",
            "sparse accumulation (real CG rule l x l -> l) against its classic baselines: index_add, dense matmul "
            "of the outer product, torch sparse COO matmul, python loops (small sizes)",
            (("accumulate-l2", 20_000, 5_000), ("accumulate-l3", 20_000, 5_000), ("accumulate-l5", 20_000, 5_000),
             ("accumulate-l8", 20_000, 5_000), ("accumulate-l8", 200_000, None)),
            repeats=7,
        ),
        Suite(
            "roofline",
            "single uvu path of growing l (128 channels, batch 10,000): from memory-bound to compute-bound",
            tuple((f"roofline-l{l}", 10_000, 1_000) for l in range(0, 9)),
            repeats=5,
        ),
        Suite(
            "core",
            "issue 2's performance targets at batch 10,000 float32: mace-large, nequip-revmd17-benzene, "
            "diffdock-l2, the full product of 0e+...+6e with itself, accumulate l=8 at dims (100, 200)",
            (("mace-large", 10_000, 1_000), ("nequip-revmd17-benzene", 10_000, 1_000), ("diffdock-l2", 10_000, 1_000),
             ("full-l6", 10_000, 1_000), ("accumulate-l8", 20_000, 5_000)),
            repeats=5,
        ),
        Suite(
            "e2",
            "E(2)-steerable kernel expansion, padded vs block (equitp.bench._e2_suite)",
            external=True,
        ),
    ]
    return {s.name: s for s in suites}


#: the embedded suites, by name
SUITES: Dict[str, Suite] = _build_suites()
