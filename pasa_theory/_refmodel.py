"""RMSE estimate of the reference path (``score_ref="hi_lo"``, the ``fp16_accurate`` preset). Private; see
:mod:`pasa_theory.bounds`.

The kernel (``pasa_npu.kernel._ref_attention``, docs/precision.md §6) subtracts a per-row reference R
inside the matrix unit's fp32 accumulator, converts t = τ·(S − R) to fp16 once, moves R when a block's
maximum passes θ, and keeps P·[V − v̄, 1] in the fp32 accumulator between flushes into the fp16 O and ℓ.
This module estimates the RMSE of that path by a **stochastic shadow simulation** (docs/error-model.md
§10): the kernel's steps in float64, one stage function per step, each citing its section —

* :func:`ref_exponents` (setup, §10.1): the exponents of the two augmented columns;
* :func:`centre_values` (setup, §10.1): v̄ and V − v̄ (``v_center``);
* :func:`score_tile` (steps a–a′, §10.2): A = S − R in the accumulator and its conversion t;
* :func:`move_reference` (steps d–e, §10.3): the reference trajectory, R = 2^e_hi·h + 2^e_lo·l and the
  rescaling argument x = τ·(R_old − R_new);
* :func:`exponentials` (step f, §10.4): P = fl(eᵗ) and, for ``row_sum="vector"``, ℓ_j;
* :func:`flush` and :func:`renormalise` (§10.5): the pending accumulator into O and ℓ with α = fl(eˣ)
  and the power-of-two frame 2^−E;
* :func:`output` (end, §10.6): fl(O/ℓ), v̄ added back, the output cast;

composed by :func:`analyse_ref` (§10.7). What is exact and what is random, per sample:

* **random**: the rounding of the score tile t to the matrix unit's output format is a quantisation on
  the format's real grid shifted by a random phase per row (:func:`pasa_theory._errormodel.grid_round`,
  as in §8.11): every error is uniform on one quantum, the order of a row's scores is kept;
* **emulated, not the kernel's order**: the fp32 product Q·Kᵀ is computed by numpy in float32 (its BLAS
  summation order, which need not be torch's: a sample of the same accumulation error);
* **emulated, narrow accumulators** (``mma_acc`` fp16/fp22, §10.10): the kernel's chunked accumulation
  itself — Q·Kᵀ in chunks of ``mma_chunk`` along d (each chunk's products summed by numpy in float32),
  the running sum rounded to the accumulator (``Accumulator.rnd``, nearest or toward zero) after every
  chunk; the two augmented reference columns added as one more chunk; P·[V − v̄, 1] in chunks of
  ``mma_chunk`` along each block's keys into the pending accumulator with its previous value as the
  start (:func:`narrow_matmul`). Overflow of the accumulator to ±inf shows in the flags like any other
  (saturation toward zero is finite, as in the kernel);
* **exact on the sampled values**: every other rounding (the fp32 subtractions, R's two columns, x, α,
  P, the pending accumulator, its conversion, O, ℓ, O/ℓ, the v̄ add-back, the output cast) is applied on
  the format's real grid to the values of the sample, and every decision (where R moves, E′) is taken
  on them, so their errors vary between samples only through the random score rounding;
* **exact**: the golden (float64 attention on the inputs as given).

So the estimate is an average over rounding outcomes of the score tile, not a reproduction of one run;
its per-term breakdown is measured by switching the roundings of one term on at a time (the ``none``
run, exact attention on the rounded inputs, is the ``input`` term). It is an **estimate** (a model), not a
bound. Not modelled: an additive mask (``predict`` takes none), narrow accumulators with operands whose
products are not exact in fp32 (``matmul_in`` wider than fp16/bf16) and e_hi from a mask's bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._accum import Accumulator, accumulator_of
from ._errormodel import Arr, Blocks, ChunkOut, Exact, Mask, Options, grid_round, narrower, ulp
from .formats import FloatFormat, get_format, round_array
from .policies import Policy, require_modelled, unmodelled_steps
from .schema import STAGES

__all__ = [
    "REF_TERMS",
    "require_estimated",
    "RefSetup",
    "ref_exponents",
    "centre_values",
    "score_tile",
    "move_reference",
    "exponentials",
    "flush",
    "renormalise",
    "output",
    "analyse_ref",
    "narrow_matmul",
]

#: The terms whose roundings the simulation switches on one at a time (names of ``pasa_theory.bounds.TERMS``
#: plus ``input``): the fp32 product and subtractions, the score tile's conversion, P, the rescaling
#: (x and α), the pending accumulator with its conversion and O's adds, ℓ, the end.
REF_TERMS = ("scores.acc", "scores.round", "exp.p", "exp.rescale", "accumulator", "row_sum", "output")

_NP = {"fp32": np.float32, "fp64": np.float64}


def _fl(x: Arr | float, F: FloatFormat) -> Arr:
    """x rounded to F (round to nearest even, overflow to ±inf, gradual underflow), in float64: numpy's
    correctly rounded casts for fp32/fp64; for narrower formats x = m·2^e (numpy.frexp) is rounded to the
    quantum 2^(max(e, emin + 1) − p) by numpy.rint, exact in float64 (the rule of
    :func:`pasa_theory.formats.round_array`, faster)."""
    xa = np.asarray(x, dtype=np.float64)
    dt = _NP.get(F.name)
    with np.errstate(over="ignore", invalid="ignore"):
        if dt is not None:
            return xa.astype(dt).astype(np.float64)
        if F.p > 52:
            return round_array(xa, F)
        _, e = np.frexp(xa)
        qe = np.maximum(e, F.emin + 1) - F.p
        r = np.ldexp(np.rint(np.ldexp(xa, -qe)), qe)
        return np.where(np.abs(r) > float(F.max_finite), np.copysign(np.inf, xa), r)


def _threshold(F: FloatFormat) -> float:
    """The round-to-nearest overflow threshold of F (values at or above it round to inf)."""
    return float(F.max_finite) + 0.5 * float(ulp(np.array([float(F.max_finite)]), F)[0])


def require_estimated(pol: Policy) -> Policy:
    """``pol`` if the RMSE estimate describes it: the policies of
    :func:`pasa_theory.policies.require_modelled`, and the reference path (``score_ref="hi_lo"``, with
    any ``ref_move``, ``ref_move_at``, ``pv_accum``, ``row_sum``, ``v_center`` and ``scale``) with the wide
    matrix-unit accumulator or a narrow one (``mma_acc`` fp16/fp22, any ``mma_round``, ``mma_chunk``) whose
    products are exact in the fp32 chunk sum (fp16/bf16 operands, fp32 ``matmul_acc``, docs/error-model.md
    §10.10); ``ValueError`` naming the steps it does not describe otherwise."""
    if pol.score_ref != "hi_lo":
        return require_modelled(pol)
    steps = [s for s in unmodelled_steps(pol) if s.startswith("mma_acc")]
    if steps and not _narrow_exact(pol):
        raise ValueError(f"the error model does not describe policy {pol.name!r} yet: " + ", ".join(steps))
    return pol


def _narrow_exact(pol: Policy) -> bool:
    """Whether the products of ``pol``'s matrix unit are exact in the fp32 chunk sum (what the narrow
    accumulator's emulation here assumes, as the kernel's ``_mma`` does)."""
    return pol.matmul_in.name in ("fp16", "bf16") and pol.matmul_acc.name == "fp32" and not pol.smooth_k


def _acc_add(rd: _Round, term: str, acc: Arr, part: Arr, nacc: Accumulator | None, f32: FloatFormat) -> Arr:
    """One more chunk ``part`` (its products already summed in fp32) added to the matrix unit's
    accumulator ``acc``: fl32(acc + part) for the wide accumulator, rounded once more to the narrow one
    (``Accumulator.rnd``: nearest → ±inf past the threshold, toward zero → saturating) for ``mma_acc``
    fp16/fp22, as the kernel's ``_mma_add``; both roundings belong to ``term``."""
    y = rd(term, acc + part, f32)
    return nacc.rnd(y) if nacc is not None and term in rd.on else y


def narrow_matmul(a: Arr, b: Arr, nacc: Accumulator, init: Arr | None = None) -> Arr:
    """Emulation of the kernel's ``_mma`` with a narrow accumulator (docs/error-model.md §10.10): the
    contraction cut into chunks of ``nacc.chunk``, each chunk's products summed by numpy in float32 (its
    summation order: a sample of the fp32 chunk-sum error, ≤ (k−1)·2^−24 relative), added to the running
    accumulator in float32 and rounded to the accumulator after every chunk, the first included; ``init``
    the accumulator's value before (D = A·B + C). Values in float64."""
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    acc = None if init is None else np.asarray(init, dtype=np.float64)
    k = nacc.chunk
    with np.errstate(over="ignore", invalid="ignore"):
        for c0 in range(0, a.shape[-1], k):
            part = (a32[..., c0 : c0 + k] @ b32[..., c0 : c0 + k, :]).astype(np.float64)
            y = part if acc is None else (acc + part).astype(np.float32).astype(np.float64)
            acc = nacc.rnd(y)
    if acc is None:
        return np.zeros(a.shape[:-1] + b.shape[-1:])
    return acc


class _Round:
    """The roundings of one simulation: term names switched on, the random phase of the score tile."""

    def __init__(self, on: frozenset[str], phase: Arr | None) -> None:
        self.on, self.phase = on, phase

    def __call__(self, term: str, x: Arr, F: FloatFormat) -> Arr:
        return _fl(x, F) if term in self.on else x

    def shifted(self, term: str, x: Arr, F: FloatFormat) -> Arr:
        """x (rows, …) rounded to F's grid shifted by the row's random phase (the score tile's grid), or
        to the real grid without a phase; finite values beyond F's range round to ±inf."""
        if term not in self.on:
            return x
        if self.phase is None:
            return _fl(x, F)
        t = grid_round(x, F, self.phase.reshape((-1,) + (1,) * (x.ndim - 1)))
        return np.where(np.isfinite(x) & (np.abs(x) < _threshold(F)), t, _fl(x, F))


# -- setup (§10.1) ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RefSetup:
    """What the kernel fixes once per call: the augmented columns' exponents, τ where it is applied."""

    e_hi: int
    e_lo: int
    tau_ref: float  # from S − R (accumulator units) to tile units: τ, or 1 for scale="q"
    place: str  # "acc", "scores" or "q"


def _place(pol: Policy) -> str:
    return pol.scale if pol.scale in ("acc", "scores", "q") else "scores"  # "m": no shifting matrix here


def queries(pol: Policy, q: Arr, tau: float) -> Arr:
    """The queries as the kernel's product sees them: Q in the operand format, pre-scaled by fl(τ) on the
    vector unit for ``scale="q"`` (docs/error-model.md §10.1)."""
    qm = _fl(q, pol.matmul_in)
    if _place(pol) == "q":
        qm = _fl(_fl(qm * _fl(np.array(tau), pol.vector), pol.vector), pol.matmul_in)
    return qm


def ref_exponents(pol: Policy, q: Arr, k: Arr, tau: float) -> RefSetup:
    """Setup (docs/error-model.md §10.1): e_hi >= 0, the smallest with max_i Σ|q_i|·max|k| / 2^e_hi below
    2^emax of the operand format, and e_lo = e_hi − p, on all rows of the call (as the kernel); ``q``, ``k``
    in any shape whose last axis is d, rounded to the operand format here (``q`` pre-scaled for
    ``scale="q"``)."""
    F = pol.matmul_in
    qm = queries(pol, q, tau)
    km = _fl(k, F)
    bound = float(np.abs(qm).sum(axis=-1).max(initial=0.0)) * float(np.abs(km).max(initial=0.0))
    emax = F.emax
    e_hi = max(0, math.ceil(math.log2(bound)) - emax) if bound > 0 and math.isfinite(bound) else 0
    place = _place(pol)
    return RefSetup(e_hi, e_hi - F.p, 1.0 if place == "q" else tau, place)


def centre_values(pol: Policy, v: Arr, rd: _Round) -> tuple[Arr, Arr | None]:
    """Setup (docs/error-model.md §10.1): V − v̄ as the matrix unit's operand and v̄ (``v_center``); v̄ is the
    column mean over the sequence rounded to fp32, then (``"grid"``) to a multiple of ulp(max|V|) of its
    column, then to the vector format; V − v̄ is one vector-unit rounding (``input``, exact in the top
    binade for ``"grid"``)."""
    vm = _fl(v, pol.matmul_in)
    if pol.v_center == "none":
        return vm, None
    f32 = get_format("fp32")
    mean = _fl(vm.mean(axis=0, keepdims=True), f32)
    if pol.v_center == "grid":
        quantum = ulp(np.abs(vm).max(axis=0, keepdims=True), pol.vector)
        mean = np.rint(mean / quantum) * quantum
    vbar = _fl(mean, pol.vector)
    return rd("input", rd("input", vm - vbar, pol.vector), pol.matmul_in), vbar


# -- steps a–a′: the score tile (§10.2) ----------------------------------------------------------------------
def _convert(pol: Policy, st: RefSetup, a: Arr, rd: _Round, random_phase: bool) -> Arr:
    """Accumulator values (S − R) to the vector format: τ at the conversion (``"acc"``: fl32(τ·A), one
    rounding to the output format), on the rounded tile (``"scores"``: fl(fl(A)·fl(τ))), or already in Q
    (``"q"``). The rounding to the output format is ``scores.round``, on a randomly shifted grid per row
    where ``random_phase`` (the tile; not the one-column x)."""
    f32 = pol.matmul_acc
    Fo, Fv = pol.matmul_out, pol.vector
    if st.place == "acc":
        a = rd("scores.acc", a * _fl(np.array(st.tau_ref), f32), f32)
    if "scores.round" in rd.on:
        t = rd.shifted("scores.round", a, Fo) if random_phase else _fl(a, Fo)
        if narrower(Fv, Fo):  # the cast to the vector format rounds again only where it is narrower
            t = _fl(t, Fv)
    else:
        t = a
    if st.place == "scores":
        t = rd("scores.round", t * _fl(np.array(st.tau_ref), Fv), Fv)
    return t


def score_tile(pol: Policy, st: RefSetup, s: Arr, hi: Arr, lo: Arr, rd: _Round) -> tuple[Arr, Arr]:
    """Steps a–a′ (docs/error-model.md §10.2): A = fl32(fl32(S − 2^e_hi·h) − 2^e_lo·l) (the two exact
    products added last; ``scores.acc``) and the tile t = conversion of A. ``s`` (rows, n) is the product
    Q·K_jᵀ as the accumulator holds it; returns (A, t)."""
    f32 = pol.matmul_acc
    fh, fl_ = 2.0**st.e_hi, 2.0**st.e_lo
    nacc = accumulator_of(pol)
    if nacc is not None:
        # narrow accumulator (§10.10): the two columns' products (exact, summed in fp32) as one more chunk,
        # fl_acc(fl32(S_acc − fl32(2^e_hi·h + 2^e_lo·l))) (the kernel's _RefState._minus_ref)
        ref = rd("scores.acc", hi * fh + lo * fl_, f32)
        a = _acc_add(rd, "scores.acc", s, -ref[:, None], nacc, f32)
        return a, _convert(pol, st, a, rd, True)
    a = rd("scores.acc", rd("scores.acc", s - (hi * fh)[:, None], f32) - (lo * fl_)[:, None], f32)
    return a, _convert(pol, st, a, rd, True)


# -- steps d–e: the reference trajectory (§10.3) ---------------------------------------------------------------
def _pair(pol: Policy, st: RefSetup, target: Arr) -> tuple[Arr, Arr]:
    """(h, l) in the operand format with 2^e_hi·h + 2^e_lo·l ≈ target (exact emulation of the kernel's
    choice: R's placement is not a rounding error, any R gives exact attention)."""
    F, f32 = pol.matmul_in, pol.matmul_acc
    hi = _fl(target / 2.0**st.e_hi, F)
    lo = _fl(_fl(target - hi * 2.0**st.e_hi, f32) / 2.0**st.e_lo, F)
    return hi, lo


def move_reference(
    pol: Policy, st: RefSetup, a: Arr, vis: Mask, hi: Arr, lo: Arr, seen: Mask, rd: _Round
) -> tuple[Mask, Mask, Arr, Arr, Arr]:
    """Steps d–e (docs/error-model.md §10.3): the block maximum b of τ·A over the visible keys (read off
    the accumulator); the first block with a visible key sets R there, a later one moves it when fl(b) > θ.
    Returns (move, first, h′, l′, x) with x = conversion of τ·(R_old − R_new) (one more score: the two
    column differences, ``exp.rescale``), 0 where R does not move or is set for the first time."""
    f32, Fv = pol.matmul_acc, pol.vector
    tau32 = _fl(np.array(st.tau_ref), f32)
    am = a if st.place == "q" else rd("scores.acc", a * tau32, f32)
    mb = np.where(vis, am, -np.inf).max(axis=1)
    first = ~seen & np.isfinite(mb)
    theta = float(_fl(np.array(pol.ref_move_at), Fv))
    move = first | (seen & (_fl(mb, Fv) > theta))
    if not move.any():
        return move, first, hi, lo, np.zeros_like(hi)
    fh, fl_ = 2.0**st.e_hi, 2.0**st.e_lo
    mbs = np.where(move, mb, 0.0)
    target = _fl(_fl(hi * fh + lo * fl_, f32) + _fl(mbs / tau32, f32), f32)
    h2, l2 = _pair(pol, st, np.where(move, target, 0.0))
    h2, l2 = np.where(move, h2, hi), np.where(move, l2, lo)
    diff = rd("exp.rescale", _fl((hi - h2) * fh, f32) + _fl((lo - l2) * fl_, f32), f32)
    # x = τ·(R_old − R_new) < 0 is the negated maximum of the tile against R_old: rounded on the tile's
    # shifted grid reflected, fl(x) = −fl_φ(−x), so that the top key's t_old + x is exact where it is in the
    # kernel (both round the same value); rounding x on the unshifted grid would lose that cancellation
    rr = _Round(rd.on - {"scores.round"} | ({"scores.round"} if "exp.rescale" in rd.on else set()), rd.phase)
    x = -_convert(pol, st, -diff[:, None], rr, True)[:, 0]
    x = np.where(move & seen, x, 0.0)
    return move, first, h2, l2, x


# -- step f: the exponentials (§10.4) -------------------------------------------------------------------------
def exponentials(pol: Policy, t: Arr, vis: Mask, rd: _Round) -> tuple[Arr, Arr | None]:
    """Step f (docs/error-model.md §10.4): P = fl(eᵗ) on the vector unit (``exp.p``; masked keys 0), and
    for ``row_sum="vector"`` ℓ_j = Σ P rounded once (``reduce="acc"``) or by a pairwise tree
    (``row_sum``)."""
    Fv = pol.vector
    with np.errstate(over="ignore"):
        p = rd("exp.p", np.where(vis, np.exp(np.where(vis, t, 0.0)), 0.0), Fv)
    if pol.row_sum != "vector":
        return p, None
    if pol.reduce == "acc":
        return p, rd("row_sum", p.sum(axis=1), Fv)
    x = p
    width = 1 << (x.shape[1] - 1).bit_length()
    if width != x.shape[1]:
        x = np.pad(x, ((0, 0), (0, width - x.shape[1])))
    while x.shape[1] > 1:
        half = x.shape[1] // 2
        x = rd("row_sum", x[:, :half] + x[:, half:], Fv)
    return p, x[:, 0]


# -- flushes and the pow2 frame (§10.5) -------------------------------------------------------------------------
@dataclass
class _State:
    """One chunk's running state: R's columns, whether R is set, O and ℓ (times 2^−E), E, the pending
    fp32 accumulator of P·[V − v̄, 1] (ℓ's column last for ``row_sum="matrix"``)."""

    hi: Arr
    lo: Arr
    seen: Mask
    o: Arr
    lsum: Arr
    e: Arr
    pend: Arr


def flush(pol: Policy, stt: _State, sel: Mask, x: Arr, dv: int, rd: _Round) -> None:
    """Rows ``sel`` (docs/error-model.md §10.5): α = fl(eˣ) (``exp.rescale``; 1 for x = 0), E′ = ⌊log2
    max(ℓ_new, 1)⌋ (``accum="pow2"``), the pending accumulator converted once with the factor α·2^−E′
    (``accumulator``; ℓ's column: ``row_sum``), O ← fl(fl(α·2^(E−E′)·O) + that) (``accumulator``), ℓ
    likewise (``row_sum``), pending reset."""
    Fv, f32, Fo = pol.vector, pol.matmul_acc, pol.matmul_out
    alpha = rd("exp.rescale", np.exp(x), Fv)
    e_new = stt.e
    if pol.accum == "pow2":
        tot = _fl(alpha * _fl(stt.lsum * np.exp2(stt.e), f32), f32)
        if pol.row_sum == "matrix":
            tot = _fl(tot + _fl(alpha * stt.pend[:, dv], f32), f32)
        with np.errstate(divide="ignore", invalid="ignore"):
            e_new = np.floor(np.log2(np.maximum(np.where(np.isfinite(tot), tot, 1.0), 1.0)))
    f_old = alpha * np.exp2(stt.e - e_new)
    f_in = alpha * np.exp2(-e_new)
    inc_o = rd("accumulator", rd("accumulator", stt.pend[:, :dv] * f_in[:, None], f32), Fo)
    o = rd("accumulator", rd("accumulator", stt.o * f_old[:, None], Fv) + rd("accumulator", inc_o, Fv), Fv)
    lsum = rd("row_sum", stt.lsum * f_old, Fv)
    if pol.row_sum == "matrix":
        inc_l = rd("row_sum", rd("row_sum", stt.pend[:, dv] * f_in, f32), Fo)
        lsum = rd("row_sum", lsum + rd("row_sum", inc_l, Fv), Fv)
    stt.o = np.where(sel[:, None], o, stt.o)
    stt.lsum = np.where(sel, lsum, stt.lsum)
    stt.e = np.where(sel, e_new, stt.e)
    stt.pend = np.where(sel[:, None], 0.0, stt.pend)


def renormalise(pol: Policy, stt: _State, renorm_at: float) -> None:
    """``row_sum="vector"``, ``accum="pow2"`` (docs/error-model.md §10.5): rows whose ℓ reached the
    threshold are scaled by 2^−s, s = ⌊log2 ℓ⌋ (exact)."""
    if pol.accum != "pow2":
        return
    big = stt.lsum >= renorm_at
    if not big.any():
        return
    s = np.where(big, np.floor(np.log2(np.where(big, stt.lsum, 1.0))), 0.0)
    stt.lsum = stt.lsum * np.exp2(-s)
    stt.o = stt.o * np.exp2(-s)[:, None]
    stt.e = stt.e + s


def _renorm_threshold(pol: Policy, vc: Arr, n: int) -> float:
    """The kernel's renormalisation threshold (pasa_npu.kernel._renorm_threshold): the largest power of two
    T in [2, 2^14] with (T + n)·max|V − v̄| <= max_finite/2 (exact scalings: it changes no bit)."""
    vmax = float(np.abs(vc).max(initial=0.0))
    if not math.isfinite(vmax):
        return 2.0
    room = float(pol.vector.max_finite) / 2 / max(vmax, 1e-30) - n
    if room < 2:
        return 2.0
    if not math.isfinite(room):
        return float(2**14)
    return float(2 ** min(14, math.floor(math.log2(room))))


# -- the end (§10.6) --------------------------------------------------------------------------------------------
def output(pol: Policy, stt: _State, vbar: Arr | None, out_fmt: FloatFormat, rd: _Round) -> Arr:
    """End (docs/error-model.md §10.6): fl(O/ℓ) (``output``), rows that saw no key 0, v̄ added back
    (``output``), the cast to the output format (``output``)."""
    Fv = pol.vector
    with np.errstate(divide="ignore", invalid="ignore"):
        o = rd("output", stt.o / stt.lsum[:, None], Fv)
    o = np.where(stt.lsum[:, None] == 0, 0.0, o)
    if vbar is not None:
        o = np.where(stt.lsum[:, None] == 0, 0.0, rd("output", o + vbar, Fv))
    return rd("output", o, out_fmt)


# -- one simulation and the composition (§10.7) -------------------------------------------------------------------
def _simulate(
    pol: Policy,
    st: RefSetup,
    ex: Exact,
    bl: Blocks,
    out_fmt: FloatFormat,
    rd: _Round,
    s32: Arr,
    ovf: dict[str, bool] | None,
) -> Arr:
    """One pass of the kernel's steps over the chunk with the roundings of ``rd``; the output (R, dv).
    ``ovf``: where given, the stages that produced a non-finite value (the census's rule)."""
    R, n, T = ex.q.shape[0], bl.n, bl.T
    dv = ex.v.shape[1]
    vc, vbar = centre_values(pol, ex.v, rd)
    vpad = np.where((bl.idx >= 0)[:, None], vc[np.where(bl.idx >= 0, bl.idx, 0)], 0.0)
    if pol.row_sum == "matrix":
        vpad = np.concatenate([vpad, np.ones((vpad.shape[0], 1))], axis=1)
    renorm_at = _renorm_threshold(pol, vc, n) if pol.accum == "pow2" else math.inf
    width = dv + (pol.row_sum == "matrix")
    stt = _State(
        np.zeros(R),
        np.zeros(R),
        np.zeros(R, dtype=bool),
        np.zeros((R, dv)),
        np.zeros(R),
        np.zeros(R),
        np.zeros((R, width)),
    )
    f32 = pol.matmul_acc
    nacc = accumulator_of(pol)
    for j in range(T):
        c = slice(j * n, (j + 1) * n)
        s, vis = s32[:, c], bl.vis[:, c]
        a, _ = score_tile(pol, st, s, stt.hi, stt.lo, rd)
        move, first, h2, l2, x = move_reference(pol, st, a, vis, stt.hi, stt.lo, stt.seen, rd)
        if move.any():
            flush(pol, stt, move & stt.seen, x, dv, rd)
            t_old = _convert(pol, st, a, rd, True) if pol.ref_move == "rebase" else None
            stt.hi, stt.lo, stt.seen = h2, l2, stt.seen | first
            a2, t = score_tile(pol, st, s, stt.hi, stt.lo, rd)
            if t_old is not None:
                rebased = rd("exp.rescale", t_old + x[:, None], pol.vector)
                t = np.where((move & ~first)[:, None], rebased, t)
        else:
            _, t = score_tile(pol, st, s, stt.hi, stt.lo, rd)
        if ovf is not None and not np.isfinite(np.where(vis, t, 0.0)).all():
            ovf["scores"] = True
        t = np.where(vis, t, -np.inf)
        p, lj = exponentials(pol, t, vis, rd)
        if lj is not None:
            lj = rd("row_sum", lj * np.exp2(-stt.e), pol.vector)
            stt.lsum = rd("row_sum", stt.lsum + lj, pol.vector)
            renormalise(pol, stt, renorm_at)
        pm = rd("exp.p", p, pol.matmul_in)
        if nacc is not None and "accumulator" in rd.on:  # §10.10: chunks over the block's n keys, into pend
            stt.pend = narrow_matmul(pm, vpad[c], nacc, init=stt.pend)
        else:
            pv = rd("accumulator", pm @ vpad[c], f32)
            stt.pend = rd("accumulator", stt.pend + pv, f32)
        if pol.pv_accum == "vector":
            flush(pol, stt, np.ones(R, dtype=bool), np.zeros(R), dv, rd)
    flush(pol, stt, np.ones(R, dtype=bool), np.zeros(R), dv, rd)
    if ovf is not None:
        if not np.isfinite(stt.lsum).all():
            ovf["row_sum"] = True
        if not np.isfinite(stt.o).all():
            ovf["accumulator"] = True
    o = output(pol, stt, vbar, out_fmt, rd)
    if ovf is not None and not np.isfinite(o).all():
        ovf["output"] = True
    return o


def analyse_ref(pol: Policy, st: RefSetup, ex: Exact, bl: Blocks, opts: Options) -> ChunkOut:
    """The RMSE estimate of one chunk for a ``score_ref="hi_lo"`` policy (docs/error-model.md §10.7).

    The mean square per output element is the average over ``opts.mc_samples`` (at least 1) simulations
    with every rounding on and a fresh random phase of the score tile per row; the breakdown
    (``terms_var``) is, per term of :data:`REF_TERMS`, the excess of a simulation with only that term's
    roundings on over the ``input`` run (none on: exact attention on the inputs as the kernel sees them),
    on a quarter of the samples (at least one); overflow flags come from the full simulation (a stage is flagged where it
    produces inf/NaN, as the census counts). ``bound`` is NaN: there is no first-order evaluation of this
    path."""
    R, dv = ex.q.shape[0], ex.v.shape[1]
    rng = np.random.default_rng(opts.seed)
    f32 = pol.matmul_acc
    qm = queries(pol, ex.q, ex.tau)
    km = _fl(bl.kpad, pol.matmul_in)
    # the product as the accumulator holds it: float32 (numpy's summation order); exact for the ablations
    nacc = accumulator_of(pol)
    with np.errstate(over="ignore", invalid="ignore"):
        if nacc is not None:  # the kernel's chunked narrow accumulation (§10.10)
            s32 = narrow_matmul(qm, km.T, nacc)
        else:
            s32 = (
                (qm.astype(np.float32) @ km.astype(np.float32).T).astype(np.float64)
                if f32.name == "fp32"
                else qm @ km.T
            )
    s64 = qm @ km.T
    all_on = frozenset(REF_TERMS) | {"input"}
    ovf = {s_: False for s_ in STAGES}
    samples = max(1, opts.mc_samples)
    ms = np.zeros((R, dv))
    ref = ex.o_ref
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for _ in range(samples):
            o = _simulate(pol, st, ex, bl, opts.out_format, _Round(all_on, rng.random((R,))), s32, ovf)
            ms += (o - ref) ** 2
        ms /= samples
        # the breakdown: one term at a time against the run with no rounding
        base = _simulate(pol, st, ex, bl, opts.out_format, _Round(frozenset(), None), s64, None)
        base_ms = (base - ref) ** 2
        terms_var = {"input": float(base_ms.sum())}
        k = max(1, samples // 4)
        for term in REF_TERMS:
            on = frozenset({term})
            acc = np.zeros((R, dv))
            for _ in range(k):
                o = _simulate(
                    pol,
                    st,
                    ex,
                    bl,
                    opts.out_format,
                    _Round(on, rng.random((R,))),
                    s32 if term == "scores.acc" else s64,
                    None,
                )
                acc += (o - ref) ** 2
            terms_var[term] = max(float(acc.sum() / k - base_ms.sum()), 0.0)
    # the random log-weight spread of the score tile's rounding, weighted by the keys' weights (diagnostic)
    Fo = pol.matmul_out
    with np.errstate(invalid="ignore"):
        tt = bl.s - np.where(bl.vis, bl.s, -np.inf).max(axis=1, keepdims=True)
        qv = np.where(bl.vis, ulp(np.abs(np.where(bl.vis, tt, 0.0)), Fo) ** 2 / 12.0, 0.0)
    pw = np.where(bl.vis, np.exp(np.where(bl.vis, tt, -np.inf)), 0.0)
    pw = pw / np.maximum(pw.sum(axis=1, keepdims=True), 1e-300)
    log_std = float(np.sqrt((pw * qv).sum(axis=1)).max(initial=0.0))
    return ChunkOut(
        bound=np.full((R, dv), math.nan),
        ms=ms,
        terms_var=terms_var,
        terms_bound={},
        overflow=ovf,
        nonlinear_rows=R,
        mc_rows=R,
        max_log_std=log_std,
    )
