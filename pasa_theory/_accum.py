"""The matrix unit's narrow accumulators (``mma_acc`` "fp16"/"fp22"): one accumulation model for every
error product (docs/beyond.md §5, docs/bounds.md §15).

The model (``pasa_npu.kernel._mma``): a product A·B with contraction length d is cut into m = ⌈d/k⌉
chunks of k = ``mma_chunk`` products; each chunk's exact products are summed in fp32 in any order (the
chunk sum t̂_c), added to the running accumulator in fp32 (ŷ_c = fl32(acc_{c−1} + t̂_c)) and rounded to
the accumulator format, to nearest (ties to even) or toward zero (acc_c = fl_acc(ŷ_c)), the first
chunk included (acc_0 = 0, or the stored C of D = A·B + C).

Three views of that one model, each named for what it is:

* :func:`matmul_enclosure` / :func:`chunk_step` — a **bound** (Theorem 5, docs/bounds.md §15.1): an
  interval per element holding the accumulator of every run allowed by the model, from intervals of the
  operands; every rounding is monotone, so the running sum is enclosed by its rounded endpoints, and
  the error of the actual operands is bounded per chunk at the largest value its operand can take;
* :func:`gamma_acc` — the **a-priori constant** (Lemma 15.2): |acc_m − Σx| ≤ Γ·Σ|x| + H for every input,
  Γ = (1 + γ_k^{32})(1 + β)^m − 1, β = u_32 + ε(1 + u_32), H = ((1 + β)^m − 1)/β·η';
* :func:`matmul_moments` — the **estimate** (docs/beyond.md §5.3): mean and variance of the
  accumulated rounding error per element under the uniform model, with the bias of truncation
  (mean −sign(y)·q/2 per rounding) and the deterministic rounding of a chunk smaller than a quantum.

Torch-free (NumPy), no dependency on the rest of the error model: the callers (:mod:`pasa_theory.rigorous`,
:mod:`pasa_theory._enclosure`, :mod:`pasa_theory._errormodel`) pass operands and get arrays back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .formats import FloatFormat, quantum_array, round_array
from .schema import MMA_FORMATS

__all__ = [
    "Accumulator",
    "accumulator_of",
    "gamma_acc",
    "prob_gamma_acc",
    "Enclosed",
    "chunk_step",
    "matmul_enclosure",
    "rounding_moments",
    "matmul_moments",
    "sympy_checks",
]

_F64 = npt.NDArray[np.float64]

#: unit roundoff of the in-chunk sum and of the addition to the accumulator (fp32, ``matmul_acc``)
U32 = 2.0**-24
#: half the fp32 subnormal spacing: the absolute part of an fp32 addition's rounding
ETA32 = 2.0**-150
#: float64 evaluation margin of an enclosure endpoint, relative to the magnitude summed (as in rigorous)
WIDEN = 2.0**-38


@dataclass(frozen=True)
class Accumulator:
    """A narrow accumulator: its format (``fmt``, an IEEE-like :class:`FloatFormat` with subnormals),
    rounding ``mode`` ("nearest": to nearest, ties to even; "zero": toward zero, saturating) and the
    chunk length ``chunk`` (products summed in fp32 before each rounding)."""

    fmt: FloatFormat
    mode: str
    chunk: int

    @property
    def name(self) -> str:
        return self.fmt.name

    @property
    def u(self) -> float:
        """The format's unit roundoff 2^−p."""
        return float(self.fmt.u)

    @property
    def eps(self) -> float:
        """Relative bound of one rounding in the normal range: u (nearest) or 2u (toward zero: one ulp)."""
        return self.u if self.mode == "nearest" else 2.0 * self.u

    @property
    def eta(self) -> float:
        """Absolute bound of one rounding in the subnormal range: half the subnormal spacing (nearest) or
        the whole spacing (toward zero)."""
        ms = float(self.fmt.min_subnormal)
        return 0.5 * ms if self.mode == "nearest" else ms

    @property
    def maxf(self) -> float:
        return float(self.fmt.max_finite)

    def steps(self, d: int) -> int:
        """m = ⌈d/k⌉: the roundings of a contraction of length d."""
        return -(-int(d) // self.chunk)

    def rnd(self, x: Any) -> _F64:
        """x rounded to the accumulator (exact, float64; monotone). Nearest: ±inf past the overflow
        threshold; toward zero: saturates at ±max finite."""
        return round_array(np.asarray(x, dtype=np.float64), self.fmt, _MODES[self.mode])

    def err_bound(self, mag: Any) -> _F64:
        """≥ |fl_acc(y) − y| for every |y| ≤ mag: half a quantum at mag (nearest) or one quantum (toward
        zero), the subnormal spacing included; inf where mag may overflow or saturate (mag > max finite)."""
        mag = np.abs(np.asarray(mag, dtype=np.float64))
        ok = np.isfinite(mag) & (mag <= self.maxf)
        q = quantum_array(np.where(ok, mag, 0.0), self.fmt)
        return np.where(ok, q * (0.5 if self.mode == "nearest" else 1.0), np.inf)


_MODES = {"nearest": "nearest_even", "zero": "toward_zero"}


def accumulator_of(pol: Any) -> Accumulator | None:
    """The :class:`Accumulator` of a policy or precision with fields ``mma_acc``, ``mma_round``,
    ``mma_chunk``; None for ``mma_acc="wide"`` (accumulate in ``matmul_acc``, round once)."""
    name = str(pol.mma_acc)
    if name == "wide":
        return None
    if name not in MMA_FORMATS:
        raise ValueError(f"mma_acc must be 'wide' or one of {sorted(MMA_FORMATS)}, got {name!r}")
    mode = str(pol.mma_round)
    if mode not in _MODES:
        raise ValueError(f"mma_round must be 'nearest' or 'zero', got {mode!r}")
    p, emin, emax = MMA_FORMATS[name]
    return Accumulator(FloatFormat(name, p=p, emin=emin, emax=emax), mode, int(pol.mma_chunk))


def _gamma(m: int, u: float) -> float:
    mu = m * u
    return mu / (1.0 - mu) if mu < 1.0 else math.inf


# ---------------------------------------------------------------------------------------------------
# (b) the a-priori constant (Lemma 15.2)


def gamma_acc(d: int, acc: Accumulator) -> tuple[float, float]:
    """(Γ, H) with |acc_m − Σx| ≤ Γ·(|C| + Σ|x|) + H for every sum of d exact products x (and a stored
    start C) accumulated by ``acc`` without overflow (docs/bounds.md §15.2, Lemma 15.2):

    Γ = (1 + γ_k^{32})(1 + β)^m − 1,  H = ((1 + β)^m − 1)/β · (η + (1 + ε)·η_32),  β = u_32 + ε(1 + u_32),

    m = ⌈d/k⌉ roundings of relative size ε (u to nearest, 2u toward zero) and absolute size η. Evaluated
    upward: (1 + β)^m − 1 through expm1/log1p (no cancellation), the result widened by 2^−30."""
    m = acc.steps(d)
    beta = U32 + acc.eps * (1.0 + U32)
    grow1 = math.expm1(m * math.log1p(beta))  # (1 + β)^m − 1 without cancellation
    g = _gamma(min(acc.chunk, max(int(d), 1)), U32)
    rel = grow1 + g * (1.0 + grow1)
    absolute = grow1 / beta * (acc.eta + (1.0 + acc.eps) * ETA32)
    return rel * (1 + 2.0**-30), absolute * (1 + 2.0**-30)


def prob_gamma_acc(d: int, acc: Accumulator) -> tuple[float, float, float]:
    """The probabilistic companion of :func:`gamma_acc` (docs/bounds.md §15.4): (Γ_det, Γ_rand, H) with
    |acc_m − Σx| ≤ Γ_det·S + λ·Γ_rand·S + H with probability ≥ 1 − 2e^{−λ²/2} when the m roundings to
    nearest are mean-zero given the past (the model of docs/bounds.md §12), S = |C| + Σ|x|.

    Γ_rand = ε·√m·(1 + Γ) bounds the square root of Σ_c (ε|ŷ_c|)²/S²; Γ_det keeps the fp32 parts
    worst-case. Toward zero the roundings are biased (mean −sign·q/2): Γ_rand = 0 and Γ_det = Γ. The
    caller multiplies Γ_rand by its λ (one λ for all the martingale's increments)."""
    rel, absolute = gamma_acc(d, acc)
    if acc.mode != "nearest":
        return rel, 0.0, absolute
    m = acc.steps(d)
    g = _gamma(min(acc.chunk, max(int(d), 1)), U32)
    grow1 = math.expm1(m * math.log1p(U32))
    det = (grow1 + g * (1.0 + grow1)) * (1 + 2.0**-30)
    rand = acc.eps * math.sqrt(m) * (1.0 + rel) * (1 + 2.0**-30)
    return det, rand, absolute


# ---------------------------------------------------------------------------------------------------
# (a) the enclosure (Theorem 5)


@dataclass(frozen=True)
class Enclosed:
    """Result of :func:`matmul_enclosure`: ``lo ≤ acc ≤ hi`` (values of the accumulator format) for every
    run; ``err`` ≥ |acc − A·B| for the actual operands; ``overflow`` where a partial sum may pass the
    accumulator's largest finite value (to inf to nearest, saturating toward zero)."""

    lo: _F64
    hi: _F64
    err: _F64
    overflow: npt.NDArray[np.bool_]


def chunk_step(
    acc_lo: _F64, acc_hi: _F64, t_lo: _F64, t_hi: _F64, mag: _F64, terms: int, acc: Accumulator
) -> Enclosed:
    """One chunk: acc ← fl_acc(fl32(acc + t̂)), with acc ∈ [acc_lo, acc_hi] (accumulator values), the
    exact chunk sum t ∈ [t_lo, t_hi] of ``terms`` exact products with Σ|products| ≤ mag, t̂ its fp32 sum in
    any order (|t̂ − t| ≤ γ_terms·mag). ``err``: the bound of this step's own error (fp32 sum, fp32
    addition and the rounding to the accumulator at the largest |ŷ| the enclosure allows)."""
    g = _gamma(max(int(terms), 1), U32)
    amag = np.maximum(np.abs(acc_lo), np.abs(acc_hi))
    rad = g * mag + WIDEN * (mag + amag)
    with np.errstate(invalid="ignore", over="ignore"):
        y_lo = (acc_lo + t_lo) - rad
        y_hi = (acc_hi + t_hi) + rad
        y_lo = np.asarray(y_lo, dtype=np.float64).astype(np.float32).astype(np.float64)  # fl32: monotone
        y_hi = np.asarray(y_hi, dtype=np.float64).astype(np.float32).astype(np.float64)
    ymag = np.maximum(np.abs(y_lo), np.abs(y_hi))
    over = ~(ymag <= acc.maxf)
    lo, hi = acc.rnd(y_lo), acc.rnd(y_hi)
    lo = np.where(over, -np.inf, lo)
    hi = np.where(over, np.inf, hi)
    err = g * mag + U32 * ymag + ETA32 + acc.err_bound(ymag)
    return Enclosed(lo, hi, err, over)


def matmul_enclosure(
    a_lo: _F64,
    a_hi: _F64,
    b_lo: _F64,
    b_hi: _F64,
    acc: Accumulator,
    init: tuple[_F64, _F64] | None = None,
) -> Enclosed:
    """Enclosure of the narrow accumulator of A·B (+ C) for A ∈ [a_lo, a_hi] (..., R, d) and
    B ∈ [b_lo, b_hi] (..., d, L) whose products are exact in fp32 (fp16 or bf16 operands), chunks of
    ``acc.chunk`` along d in order (Theorem 5, docs/bounds.md §15.1). ``init``: an enclosure of the
    stored C (accumulator values) for D = A·B + C. A pinned operand has lo = hi.

    ``err`` ≥ |acc − (A·B + C)| for the actual operands: the sum over chunks of each step's bound
    (:func:`chunk_step`), every rounding bounded at the largest partial sum the enclosure allows."""
    a_lo, a_hi = np.asarray(a_lo, dtype=np.float64), np.asarray(a_hi, dtype=np.float64)
    b_lo, b_hi = np.asarray(b_lo, dtype=np.float64), np.asarray(b_hi, dtype=np.float64)
    d = a_lo.shape[-1]
    a_mid, a_rad = 0.5 * (a_lo + a_hi), 0.5 * (a_hi - a_lo)
    b_mid, b_rad = 0.5 * (b_lo + b_hi), 0.5 * (b_hi - b_lo)
    a_abs = np.maximum(np.abs(a_lo), np.abs(a_hi))
    b_abs = np.maximum(np.abs(b_lo), np.abs(b_hi))
    pinned = not (np.any(a_rad) or np.any(b_rad))
    shape = np.broadcast_shapes(a_lo.shape[:-1] + (1,), b_lo.shape[:-2] + (1, b_lo.shape[-1]))
    if init is None:
        lo = np.zeros(shape)
        hi = np.zeros(shape)
    else:
        lo, hi = np.broadcast_to(init[0], shape).copy(), np.broadcast_to(init[1], shape).copy()
    err = np.zeros(shape)
    over = np.zeros(shape, dtype=bool)
    k = acc.chunk
    for c0 in range(0, d, k):
        sl = slice(c0, min(d, c0 + k))
        am, bm = a_mid[..., sl], b_mid[..., sl, :]
        t = am @ bm
        mag = a_abs[..., sl] @ b_abs[..., sl, :]
        if pinned:
            t_lo = t_hi = t
        else:
            spread = np.abs(am) @ b_rad[..., sl, :] + a_rad[..., sl] @ (np.abs(bm) + b_rad[..., sl, :])
            spread = spread * (1 + 2.0**-40)
            t_lo, t_hi = t - spread, t + spread
        st = chunk_step(lo, hi, t_lo, t_hi, mag, sl.stop - sl.start, acc)
        lo, hi, over = st.lo, st.hi, over | st.overflow
        err = err + st.err
    return Enclosed(lo, hi, err * (1 + 2.0**-40), over)


# ---------------------------------------------------------------------------------------------------
# (c) the estimate: mean and variance of the accumulated rounding error


def rounding_moments(y: _F64, t: _F64, acc: Accumulator) -> tuple[_F64, _F64]:
    """Mean and variance of fl_acc(y) − y for y = a + t, a the accumulator before the chunk (on the
    accumulator's grid) and t the chunk's contribution (docs/beyond.md §5.3; q = the quantum at |y|):

    * |t| ≥ q: the error is uniform on one quantum: to nearest mean 0, variance q²/12 (≤ u²|y|²/3, the
      envelope of the standard model); toward zero mean −sign(y)·q/2 (the bias), variance q²/12;
    * |t| < q: deterministic (the low bits of y are those of t): to nearest fl_q(t) − t (the chunk is
      absorbed when |t| < q/2); toward zero −t if t has the sign of y, else −sign(y)·(q − |t|)."""
    ay = np.abs(y)
    fin = np.isfinite(ay)
    q = quantum_array(np.where(fin, ay, 0.0), acc.fmt)
    at = np.abs(t)
    uniform = at >= q
    sy = np.sign(y)
    if acc.mode == "nearest":
        mu_u = np.zeros_like(ay)
        det = q * np.rint(t / q) - t
    else:
        mu_u = -sy * q / 2
        same = np.sign(t) == sy
        det = np.where(same, -t, -sy * (q - at))
    mean = np.where(uniform, mu_u, det)
    var = np.where(uniform, q * q / 12.0, 0.0)
    return np.where(fin, mean, 0.0), np.where(fin, var, 0.0)


def matmul_moments(
    a: _F64, b: _F64, acc: Accumulator, final_on_grid: bool = False
) -> tuple[_F64, _F64, _F64]:
    """(mean, var, peak) of the narrow accumulator's error on A·B (exact operands (..., R, d) and
    (..., d, L)): Σ over the m chunk roundings of :func:`rounding_moments` at the exact partial sums
    (an estimate: the partial sums of the run differ from the exact ones by the errors before them,
    which the model neglects, as it neglects the fp32 in-chunk sums). ``peak``: the largest |partial sum|
    per element (overflow of the accumulator where it reaches the overflow threshold).

    ``final_on_grid``: the caller already models the last rounding onto the same grid as a random
    rounding (the matmul output format is the accumulator's): the last chunk's variance is left out,
    its mean kept (0 to nearest)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d = a.shape[-1]
    k = acc.chunk
    y: _F64 | None = None
    mean: _F64 | None = None
    var: _F64 | None = None
    peak: _F64 | None = None
    starts = list(range(0, d, k))
    for i, c0 in enumerate(starts):
        t = a[..., c0 : c0 + k] @ b[..., c0 : c0 + k, :]
        y = t if y is None else y + t
        mu, vv = rounding_moments(y, t, acc)
        if final_on_grid and i == len(starts) - 1:
            vv = np.zeros_like(vv)
        mean = mu if mean is None else mean + mu
        var = vv if var is None else var + vv
        peak = np.abs(y) if peak is None else np.maximum(peak, np.abs(y))
    assert mean is not None and var is not None and peak is not None
    return mean, var, peak


def sympy_checks() -> dict[str, bool]:
    """The algebra of Lemma 15.2, checked symbolically (each entry True):

    * ``recurrence``: E_c = (1 + β)E_{c−1} + βS + γ(1 + β)A_c + η' with E_0 = 0, S_c ≤ S and Σ_c A_c ≤ S
      is at most ((1 + β)^m − 1)S + γ(1 + β)^m·S + ((1 + β)^m − 1)/β·η' (for m = 1…6, by expanding the
      recurrence with A_c = S on the worst chunk and comparing coefficients of S and η');
    * ``step``: one step's bound expands to that recurrence: |e_c| ≤ |e_{c−1}| + γA + u32·Y + ε·((1 + u32)Y)
      with Y = S + |e_{c−1}| + γA;
    * ``gamma_form``: Γ = (1 + γ)(1 + β)^m − 1 is the coefficient of S above."""
    import sympy as sp

    beta, S, g, eta, u32, eps, e, A = sp.symbols("beta S gamma eta u32 epsilon e A", positive=True)
    out: dict[str, bool] = {}
    ok = True
    for m in range(1, 7):
        # worst case: the γ-weight on the first chunk grows the most; bound Σ_c (1+β)^{m−c} γ(1+β)A_c
        # by γ(1+β)^m Σ A_c ≤ γ(1+β)^m S
        E = sp.Integer(0)
        for c in range(1, m + 1):
            Ac = S if c == 1 else sp.Integer(0)
            E = (1 + beta) * E + beta * S + g * (1 + beta) * Ac + eta
        closed = ((1 + beta) ** m - 1) * S + g * (1 + beta) ** m * S + ((1 + beta) ** m - 1) / beta * eta
        ok &= sp.simplify(sp.expand(E - closed)) == 0
    out["recurrence"] = bool(ok)
    Y = S + e + g * A
    step = e + g * A + u32 * Y + eps * (1 + u32) * Y
    rec = (
        (1 + (u32 + eps * (1 + u32))) * e
        + (u32 + eps * (1 + u32)) * S
        + g * (1 + (u32 + eps * (1 + u32))) * A
    )
    out["step"] = bool(sp.simplify(sp.expand(step - rec)) == 0)
    m_ = sp.symbols("m", positive=True, integer=True)
    coef = ((1 + beta) ** m_ - 1) + g * (1 + beta) ** m_
    out["gamma_form"] = bool(sp.simplify(coef - ((1 + g) * (1 + beta) ** m_ - 1)) == 0)
    return out
