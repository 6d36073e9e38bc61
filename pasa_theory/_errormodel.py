"""Numerical engine of the rounding-error model (numpy, float64). Private; see :mod:`pasa_theory.bounds`.

Everything here is evaluated on *exact* quantities: the float64 scores, softmax weights, block
statistics and the exact-arithmetic trajectory of the kernel's bookkeeping (which block holds the
running maximum, where the lazy reference is re-centred). Each rounding of the kernel is a term
``fl(x) = x + δ`` with

* deterministic bound ``|δ| <= u|x| + min_sub/2`` (standard model plus gradual underflow), zero when
  the operation is exact (a subtraction whose result is representable on the operands' grid, a
  product by 1, exp(0));
* variance ``ulp(x)^2/12`` (uniform rounding error, independent between roundings), zero for exact
  operations and for values below half the smallest subnormal (those flush deterministically and
  belong to the systematic part).

Constants that the kernel rounds once (τ in the vector format, the entries of M, c) and deterministic
flushes to zero (P, γ, α below half the smallest subnormal) are *systematic*: their effect is
evaluated exactly, by softmax attention with the perturbed logits.

Every term is classified by how it reaches the output (docs/error-model.md §3, §4):
key-level and block-level perturbations of the log-weights (consistent in numerator and
denominator), prefix-level ones (a rescaling of the whole history), numerator-only and
denominator-only relative errors, and the final rounding.

:func:`analyse` runs one chunk through per-stage functions that follow the kernel's steps a–h
(docs/error-model.md §8): :func:`score_tile_flash` / :func:`score_tile_shifted` (a, b),
:func:`exponentials` (d), :func:`pseudo_average_recovery` / :func:`key_mean_offsets` (b, f),
:func:`running_offsets` / :func:`lazy_offsets` (e–g), :func:`rescaling_factors` (h), then
:func:`systematic_weights`, :func:`consistent_variance`, :func:`non_consistent` (h),
:func:`output_stage` (end), :func:`accumulator_overflow`, :func:`total_bound` and :func:`mean_square`
(with :func:`_shadow_simulation` for nonlinear rows). The stages share a :class:`Chunk` (context and
ledgers) and pass small typed results (:class:`ScoreTile`, :class:`Exponentials`, :class:`Trajectory`,
:class:`Flushes`, :class:`Weights`, :class:`Consistent`, :class:`NonConsistent`, :class:`Output`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple, TypeAlias, TypedDict

import numpy as np
import numpy.typing as npt

from . import _accum, _scoreemu
from .formats import FloatFormat, get_format, quantum_array, round_array, torch_scalar
from .policies import Policy, ShiftConstants
from .schema import STAGES

#: float64 arrays (per row, key, block or output element), boolean masks, index arrays
Arr: TypeAlias = npt.NDArray[np.float64]
Mask: TypeAlias = npt.NDArray[np.bool_]
IntArr: TypeAlias = npt.NDArray[np.intp]
#: a term's values: an array broadcast to the ledger's shape, or a scalar
Values: TypeAlias = Arr | float

F32 = get_format("fp32")
F64 = get_format("fp64")

#: Term names of the breakdown, each with the census stage it belongs to.
TERM_STAGE = {
    "systematic": "scores",
    "input": "input",
    "scores.input": "scores",
    "scores.kt": "scores",
    "scores.round": "scores",
    "scores.scale": "scores",
    "scores.acc": "scores",
    "recovery.kt": "shift",
    "recovery.scores": "shift",
    "recovery.mean": "shift",
    "recovery.keymean": "shift",
    "bookkeeping": "shift",
    "exp.arg": "exp",
    "exp.p": "exp",
    "exp.rescale": "exp",
    "absorption": "accumulator",
    "pv.p_cast": "accumulator",
    "pv.round": "accumulator",
    "row_sum": "row_sum",
    "accumulator": "accumulator",
    "output": "output",
    "golden": "output",
}


# -- rounding primitives --------------------------------------------------------------------------------
def _c(F: FloatFormat) -> tuple[float, float]:
    return float(F.u), float(F.min_subnormal)


#: Spacing of ``F`` at |x| (its binade's quantum; the subnormal quantum below ``min_normal``).
ulp = quantum_array


def rbound(x: Arr, F: FloatFormat) -> Arr:
    """Standard-model bound on |fl(x) − x|: u|x| + min_sub/2 (Higham 2002, eq. (2.4), with underflow)."""
    u, ms = _c(F)
    ax = np.abs(x)
    return np.where(np.isfinite(ax), u * ax + 0.5 * ms, 0.0)


def rvar(x: Arr, F: FloatFormat) -> Arr:
    """Variance ulp(x)²/12 of the rounding error of x (0 below min_sub/2: deterministic flush)."""
    _, ms = _c(F)
    ax = np.abs(x)
    q = ulp(ax, F)
    return np.where(np.isfinite(ax) & (ax >= 0.5 * ms), q * q / 12.0, 0.0)


def rvb(x: Arr, F: FloatFormat) -> tuple[Arr, Arr]:
    """(:func:`rvar`, :func:`rbound`) of x in one pass over its magnitude."""
    u, ms = _c(F)
    ax = np.abs(x)
    q = ulp(ax, F)
    fin = np.isfinite(ax)
    var = np.where(fin & (ax >= 0.5 * ms), q * q * (1.0 / 12.0), 0.0)
    bnd = np.where(fin, u * ax + 0.5 * ms, 0.0)
    return var, bnd


def exact_sub2(a: Arr, b: Arr, F: FloatFormat) -> tuple[Mask, Mask]:
    """:func:`exact_sub` with margins 1 (for variances) and 4 (for bounds), sharing the quanta."""
    with np.errstate(invalid="ignore"):
        d = a - b
        ok = np.isfinite(d) & np.isfinite(a) & np.isfinite(b)
    m = np.minimum(ulp(a, F), ulp(b, F))
    qd = ulp(d, F)
    return ok & (qd <= m), ok & (qd * 4.0 <= m)


def exact_sub(a: Arr, b: Arr, F: FloatFormat, margin: float = 1.0) -> Mask:
    """Where fl(a − b) of two F-values is exact: ulp(a − b)·margin <= min(ulp(a), ulp(b)).

    The difference of two floats is a multiple of the smaller quantum, so it is representable when
    its own quantum is not larger (Sterbenz's lemma is the special case b/2 <= a <= 2b). ``margin``
    > 1 keeps the claim safe for operands that carry rounding errors (binade crossings).
    """
    with np.errstate(invalid="ignore"):
        d = a - b
        ok = np.isfinite(d) & np.isfinite(a) & np.isfinite(b)
    return ok & (ulp(d, F) * margin <= np.minimum(ulp(a, F), ulp(b, F)))


def erf(x: Arr) -> Arr:
    """Vectorised error function (Abramowitz & Stegun 7.1.26, |error| <= 1.5e-7), for probabilities."""
    x = np.asarray(x, dtype=np.float64)
    sgn = np.sign(x)
    a = np.minimum(np.abs(x), 30.0)  # erf(30) = 1 to double precision
    t_ = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (
        ((((1.061405429 * t_ - 1.453152027) * t_) + 1.421413741) * t_ - 0.284496736) * t_ + 0.254829592
    ) * t_ * np.exp(-a * a)
    return sgn * y


def gamma(k: float | Arr, F: FloatFormat) -> Arr:
    """γ_k = k·u/(1 − k·u) (Higham 2002, Lemma 3.1)."""
    u = float(F.u)
    ku = np.asarray(k, dtype=np.float64) * u
    return np.where(ku < 1, ku / np.maximum(1 - ku, 1e-300), np.inf)


def narrower(a: FloatFormat, b: FloatFormat) -> bool:
    """Whether a cast from format b to format a rounds (a has fewer bits or a smaller range)."""
    return a.p < b.p or a.emax < b.emax


def log_rel(rel: Arr) -> Arr:
    """A log-space bound E with |log(1+δ)| <= E for |δ| <= rel (rel < 1)."""
    r = np.minimum(rel, 0.999)
    return -np.log1p(-r)


# -- exact context ---------------------------------------------------------------------------------------
@dataclass
class Exact:
    """Exact quantities of one (batch, KV head, query-row chunk): R rows, S2 keys."""

    q: Arr  # (R, d) queries as fed to the kernel (rounded to the matmul format)
    k: Arr  # (S2, d)
    v: Arr  # (S2, dv)
    pos: IntArr  # (R,) query positions (for the causal rule)
    tau: float
    seq_q: int
    causal: bool
    s: Arr = field(init=False)  # (R, S2) τ·q·k
    vis: Mask | None = field(init=False)
    p: Arr = field(init=False)  # softmax weights
    lse: Arr = field(init=False)
    o: Arr = field(init=False)  # exact output (R, dv)

    def __post_init__(self) -> None:
        S2 = self.k.shape[0]
        self.s = (self.q @ self.k.T) * self.tau
        if self.causal:
            self.vis = np.arange(S2)[None, :] <= (self.pos[:, None] + (S2 - self.seq_q))
        else:
            self.vis = None
        z = self.s if self.vis is None else np.where(self.vis, self.s, -np.inf)
        mx = z.max(axis=1)
        mx = np.where(np.isfinite(mx), mx, 0.0)
        w = np.exp(z - mx[:, None])
        den = w.sum(axis=1)
        self.lse = mx + np.log(np.where(den > 0, den, 1.0))
        self.p = w / np.where(den > 0, den, 1.0)[:, None]
        self.o = self.p @ self.v
        #: the golden the error is measured against (exact attention on the inputs as given)
        self.o_ref = self.o


@dataclass
class Blocks:
    """The KV blocking of a policy: padding (kv_tail), block means and per-block softmax statistics."""

    n: int
    T: int
    idx: IntArr  # (L,) real key index of each padded column, −1 for zero padding
    real: Mask  # (L,) column is a real key
    s: Arr  # (R, L) scores of padded columns (pads: their source key's, or 0)
    vis: Mask  # (R, L) visible (real and not masked)
    kpad: Arr  # (L, d)
    vpad: Arr  # (L, dv)
    mu: Arr  # (R, T) block means of s over all n columns (before masks)
    mhat: Arr  # (R, T) block max of visible scores (−inf if none)


def make_blocks(ex: Exact, n: int, tail: str) -> Blocks:
    S2 = ex.k.shape[0]
    T = -(-S2 // n)
    L = T * n
    pad = L - S2
    idx = np.arange(L)
    if pad:
        if tail == "zero" or (tail == "script" and S2 < n):
            idx[S2:] = -1
        else:  # "wrap", or "script" with S2 >= n: preceding real rows, cyclically
            idx[S2:] = np.arange(S2 - pad, S2) % S2
    real = np.arange(L) < S2
    src = np.where(idx >= 0, idx, 0)
    s = ex.s[:, src]
    s = np.where(idx[None, :] >= 0, s, 0.0)
    kpad = np.where((idx >= 0)[:, None], ex.k[src], 0.0)
    vpad = np.where((idx >= 0)[:, None], ex.v[src], 0.0)
    vis = np.broadcast_to(real[None, :], s.shape).copy()
    if ex.vis is not None:
        vis[:, :S2] &= ex.vis
    R = s.shape[0]
    mu = s.reshape(R, T, n).mean(axis=2)
    mhat = np.where(vis, s, -np.inf).reshape(R, T, n).max(axis=2)
    return Blocks(n, T, idx, real, s, vis, kpad, vpad, mu, mhat)


# -- per-policy analysis: options, results, the ledgers the stages write -----------------------------------
@dataclass
class Options:
    out_format: FloatFormat
    mc_samples: int = 8
    mc_threshold: float = 0.1  # rows whose random log-weight std exceeds this go to Monte Carlo
    mc_max_rows: int = 1024  # at most this many Monte Carlo rows per chunk (evenly strided)
    seed: int = 0


@dataclass
class ChunkOut:
    """Per-chunk results: per-element bound, per-element predicted mean square, diagnostics."""

    bound: Arr  # (R, dv)
    ms: Arr  # (R, dv) predicted mean-square error
    terms_var: dict[str, float]  # Σ over elements of each term's linearised variance
    terms_bound: dict[str, float]  # max over elements of each term's first-order bound
    overflow: dict[str, bool]
    nonlinear_rows: int
    mc_rows: int
    max_log_std: float
    #: the shadow simulation's emulated score tile (docs/error-model.md §8.12): elements emulated and
    #: order-ambiguous ("tile", "tile_straddles", "kt", "kt_straddles"); empty where not emulated
    emulation: dict[str, int] = field(default_factory=dict)


class GridRounding(NamedTuple):
    """One rounding of many values onto one grid (modelled in the shadow simulation as quantisation with
    a random grid phase, docs/error-model.md §8.11)."""

    values: Arr
    fmt: FloatFormat
    factor: float  # from the rounded quantity to score (logit) units


class ConsistentTerms:
    """The ledger of consistent perturbations of the log-weights (docs/error-model.md §3, §8.0): per key
    (R, L), per block (R, T) and per history prefix (R, T), each a variance and a log-space bound.

    Terms are kept in the order the stages add them; the totals are summed in that order.
    """

    def __init__(self, R: int, L: int, T: int) -> None:
        self.R, self.L, self.T = R, L, T
        self.key_var: dict[str, Arr] = {}
        self.key_bound: dict[str, Arr] = {}
        self.block_var: dict[str, Arr] = {}
        self.block_bound: dict[str, Arr] = {}
        self.prefix_var: dict[str, Arr] = {}
        self.prefix_bound: dict[str, Arr] = {}
        #: single roundings of many values on one grid: name -> their GridRoundings
        self.key_grids: dict[str, list[GridRounding]] = {}
        self.block_grids: dict[str, list[GridRounding]] = {}

    @staticmethod
    def _add(
        dv: dict[str, Arr], db: dict[str, Arr], name: str, var: Values, bnd: Values, shape: tuple[int, int]
    ) -> None:
        var_b = np.broadcast_to(np.asarray(var, dtype=np.float64), shape)
        bnd_b = np.broadcast_to(np.asarray(bnd, dtype=np.float64), shape)
        if name in dv:
            dv[name] = dv[name] + var_b
            db[name] = db[name] + bnd_b
        else:
            dv[name] = np.array(var_b)
            db[name] = np.array(bnd_b)

    def key(self, name: str, var: Values, bnd: Values, grid: GridRounding | None = None) -> None:
        """A perturbation of the logit of each key (R, L)."""
        self._add(self.key_var, self.key_bound, name, var, bnd, (self.R, self.L))
        if grid is not None:
            self.key_grids.setdefault(name, []).append(grid)

    def block(self, name: str, var: Values, bnd: Values, grid: GridRounding | None = None) -> None:
        """A perturbation common to all keys of a block (R, T), eq. (E3)."""
        self._add(self.block_var, self.block_bound, name, var, bnd, (self.R, self.T))
        if grid is not None:
            self.block_grids.setdefault(name, []).append(grid)

    def prefix(self, name: str, var: Values, bnd: Values) -> None:
        """A rescaling of the whole history before block t (R, T), eq. (E4)."""
        self._add(self.prefix_var, self.prefix_bound, name, var, bnd, (self.R, self.T))


class Breakdown:
    """Per error term: Σ over output elements of its variance, max over them of its bound."""

    def __init__(self) -> None:
        self.var: dict[str, float] = {}
        self.bound: dict[str, float] = {}

    def add_var(self, name: str, x: float) -> None:
        self.var[name] = self.var.get(name, 0.0) + x

    def max_bound(self, name: str, x: float) -> None:
        self.bound[name] = max(self.bound.get(name, 0.0), x)


def _tau_v(pol: Policy, tau: float) -> float:
    """τ in the vector format as torch stores it: through fp32 first (a Python float or float64 tensor
    converted to fp16/bf16 is rounded twice; docs/bounds.md §13.1)."""
    return float(round_array(np.array([torch_scalar(tau, pol.vector.p)]), pol.vector)[0])


def _threshold(F: FloatFormat) -> float:
    """Round-to-nearest overflow threshold of F (65520 in fp16)."""
    return F.overflow_threshold_float


def _acc_moments(
    cx: Chunk, a: Arr, b: Arr, stage: str
) -> tuple[_accum.Accumulator, Arr, Arr, tuple[float, float]] | None:
    """A narrow accumulator's error on the product a·b (docs/beyond.md §5.3): None for ``mma_acc="wide"``,
    else (accumulator, mean, variance, (Γ, H) of Lemma 15.2) in the product's units; flags ``stage`` when
    a partial sum reaches the accumulator's overflow threshold (to nearest) or saturates (toward zero).
    The last rounding's variance is left out when the matmul output format has the accumulator's grid
    (the caller's rounding to ``matmul_out`` stands for it)."""
    acc = _accum.accumulator_of(cx.pol)
    if acc is None:
        return None
    Fo = cx.pol.matmul_out
    mean, var, peak = _accum.matmul_moments(
        a, b, acc, final_on_grid=(Fo.p, Fo.emin) == (acc.fmt.p, acc.fmt.emin)
    )
    limit = acc.fmt.overflow_threshold_float if acc.mode == "nearest" else acc.maxf
    if np.max(peak, initial=0.0) >= limit:
        cx.overflow[stage] = True
    return acc, mean, var, _accum.gamma_acc(a.shape[-1], acc)


@dataclass
class Chunk:
    """What every stage reads (the policy, the exact chunk and its blocking, the formats) and the two
    ledgers they write: the consistent terms and the overflow flags (docs/error-model.md §8.0)."""

    pol: Policy
    ex: Exact
    bl: Blocks
    opts: Options
    #: τ as the kernel applies it (rounded to the vector format where it multiplies on the vector unit)
    tau_v: float
    #: τ_v/τ: the systematic change of every logit by the rounded scale
    rho: float
    #: block index of each padded column
    block_of: IntArr
    #: ‖q‖ per row, ‖k‖ per padded column
    q_norm: Arr
    k_norm: Arr
    terms: ConsistentTerms
    overflow: dict[str, bool]
    #: what the shadow simulation emulated (:class:`ChunkOut` ``emulation``)
    emulation: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, pol: Policy, ex: Exact, bl: Blocks, opts: Options) -> Chunk:
        R, L = bl.s.shape
        tau = ex.tau
        tau_v = _tau_v(pol, tau) if pol.placement in ("q", "scores") else tau
        return cls(
            pol=pol,
            ex=ex,
            bl=bl,
            opts=opts,
            tau_v=tau_v,
            rho=tau_v / tau,
            block_of=np.repeat(np.arange(bl.T), bl.n),
            q_norm=np.sqrt((ex.q**2).sum(axis=1)),
            k_norm=np.sqrt((bl.kpad**2).sum(axis=1)),
            terms=ConsistentTerms(R, L, bl.T),
            overflow={st: False for st in STAGES},
        )

    @property
    def R(self) -> int:  # query rows of the chunk
        return int(self.bl.s.shape[0])

    @property
    def L(self) -> int:  # padded key columns, T·n
        return int(self.bl.s.shape[1])

    @property
    def n(self) -> int:  # block size
        return self.bl.n

    @property
    def T(self) -> int:  # number of KV blocks
        return self.bl.T

    @property
    def d(self) -> int:
        return int(self.ex.q.shape[1])

    @property
    def dv(self) -> int:
        return int(self.ex.v.shape[1])

    @property
    def uv(self) -> float:  # unit roundoff of the vector unit
        return float(self.pol.vector.u)


# -- step a (and b): the score tile ---------------------------------------------------------------------------
@dataclass
class ScoreTile:
    """The score tile as the vector unit sees it and the logits the exact softmax would see.

    ``vector_scores`` are exact values of the tile the vector unit holds (S̃ in score units for PASA, the
    scaled scores for flash attention); ``logits`` are the scores after the exact recovery, with the
    kernel's once-rounded constants (τ_v, the entries of M, c): the systematic logits (§8.7).
    """

    vector_scores: Arr  # (R, L)
    logits: Arr  # (R, L)
    block_max: Arr  # (R, T) max of the visible vector scores per block (−inf if none)
    #: names of the key-level terms that are score errors (the recovery multiplies their block mean by c)
    score_terms: tuple[str, ...] = ()
    #: PASA only: block means μ̃_j of S̃ (the pseudo-averages) and the operands of the shifted product
    pseudo_averages: Arr | None = None
    shifted: ShiftedOperands | None = None


@dataclass
class ShiftedOperands:
    """What the key-mean recovery needs from the shifted score product (PASA)."""

    q_operand: Arr  # (R, d) the Q operand of the matrix unit (Q·τ_v for scale="q")
    to_score_units: float  # from the matmul output to score units (τ_v for scale="scores", else 1)
    key_block_means: Arr  # (T, d) k̄_j
    abs_keys: Arr  # (T, n, d) |K| per block
    bn: float  # b·n of M_r = a·I − b·J
    #: (T, d) variance of the block mean of the K̃ rounding errors, with the keys whose errors coincide
    #: counted together (:func:`_kt_block_mean_var`, docs/error-model.md §8.4)
    kt_mean_var: Arr | None = None


def _prescaled_queries(cx: Chunk) -> tuple[Arr, Arr, Arr]:
    """scale="q": Q·τ_v rounded on the vector unit, then cast to the operand format (E1): the values,
    their rounding variance and bound."""
    Fm, Fv = cx.pol.matmul_in, cx.pol.vector
    qs = cx.ex.q * cx.tau_v
    vq = rvar(qs, Fv)
    bq = rbound(qs, Fv)
    if narrower(Fm, Fv):
        vq = vq + rvar(qs, Fm)
        bq = bq + rbound(qs, Fm)
    return qs, vq, bq


def _smoothed_keys(cx: Chunk) -> tuple[Arr | None, Arr]:
    """``smooth_k``: K' = fl(K − fl(mean K)) in the vector format (the mean's offset is a row constant,
    harmless, eq. (E3)); the unscaled scores q·K'ᵀ and ‖K'‖ per column. Without it: the unscaled scores
    for scale="scores" (None for "q") and ‖K‖."""
    pol, ex, bl, Fv = cx.pol, cx.ex, cx.bl, cx.pol.vector
    if pol.smooth_k:
        kbar = round_array(ex.k.mean(axis=0, keepdims=True), Fv)
        kprime = bl.kpad - kbar
        kprime = np.where(bl.idx[:, None] >= 0, kprime, 0.0)
        raw = ex.q @ kprime.T  # unscaled score of the smoothed keys
        cx.terms.key(
            "scores.input",
            cx.tau_v**2 * ((ex.q**2) @ rvar(kprime, Fv).T),
            cx.tau_v * (np.abs(ex.q) @ rbound(kprime, Fv).T),
        )
        return raw, np.sqrt((kprime**2).sum(axis=1))
    return (bl.s / ex.tau if pol.placement == "scores" else None), cx.k_norm


def score_tile_flash(cx: Chunk) -> ScoreTile:
    """Step a of flash attention: S = fl(fl(Q·Kᵀ)·τ_v) (scale="scores") or fl(fl(Q·τ_v)·Kᵀ) (scale="q").

    docs/error-model.md §8.1: the matrix product by (E1), each rounding a key-level term; overflow of
    the product (and of the scaled tile on the vector unit) by §6.
    """
    pol, ex, bl, terms, ovf = cx.pol, cx.ex, cx.bl, cx.terms, cx.overflow
    Fa, Fo, Fv = pol.matmul_acc, pol.matmul_out, pol.vector
    tau, tau_v, rho = ex.tau, cx.tau_v, cx.rho
    raw, kpn = _smoothed_keys(cx)
    if pol.placement == "scores":
        assert raw is not None
        sv = rho * tau * raw  # fl_v(raw·τ_v) exact value
        v_, b_ = rvb(raw, Fo)
        terms.key("scores.round", tau_v**2 * v_, tau_v * b_, grid=GridRounding(raw, Fo, tau_v))
        if narrower(Fv, Fo):
            terms.key("scores.round", tau_v**2 * rvar(raw, Fv), tau_v * rbound(raw, Fv))
        terms.key("scores.scale", *rvb(sv, Fv), grid=GridRounding(sv, Fv, 1.0))
        nar = _acc_moments(cx, ex.q, bl.kpad.T, "scores")
        if nar is None:
            terms.key("scores.acc", 0.0, gamma(cx.d, Fa) * tau_v * np.outer(cx.q_norm, kpn))
        else:  # a narrow accumulator (docs/beyond.md §5.3): random part, and its bias on the logits
            _, bias, var, (g_a, h_a) = nar
            terms.key("scores.acc", tau_v**2 * var, tau_v * (g_a * (np.abs(ex.q) @ np.abs(bl.kpad).T) + h_a))
        if np.nanmax(np.abs(raw), initial=0.0) >= _threshold(Fo) or (
            narrower(Fv, Fo) and np.nanmax(np.abs(raw), initial=0.0) >= _threshold(Fv)
        ):
            ovf["scores"] = True
        elif np.nanmax(np.abs(sv), initial=0.0) >= _threshold(Fv):
            ovf["exp"] = True
        logits = rho * bl.s if not pol.smooth_k else rho * tau * raw
        if nar is not None:
            logits = logits + tau_v * nar[1]
    else:  # "q": Q pre-scaled on the vector unit, then an operand
        qs, vq, bq = _prescaled_queries(cx)
        kbar = ex.k.mean(axis=0, keepdims=True)
        kc = np.where(bl.idx[:, None] >= 0, bl.kpad - kbar, 0.0)
        terms.key("scores.input", vq @ (kc**2).T, bq @ np.abs(kc).T)
        sv = rho * bl.s
        terms.key("scores.round", *rvb(sv, Fo), grid=GridRounding(sv, Fo, 1.0))
        if narrower(Fv, Fo):
            terms.key("scores.round", rvar(sv, Fv), rbound(sv, Fv))
        qq = round_array(round_array(qs, Fv), pol.matmul_in)
        nar = _acc_moments(cx, np.where(np.isfinite(qq), qq, 0.0), bl.kpad.T, "scores")
        if nar is None:
            terms.key("scores.acc", 0.0, gamma(cx.d, Fa) * np.outer(np.sqrt((qs**2).sum(axis=1)), cx.k_norm))
        else:
            terms.key("scores.acc", nar[2], nar[3][0] * (np.abs(qs) @ np.abs(bl.kpad).T) + nar[3][1])
        if not np.all(np.isfinite(qq)) or np.max(np.abs(qq @ ex.k.T), initial=0.0) >= _threshold(Fo):
            ovf["scores"] = True
        logits = rho * bl.s if nar is None else rho * bl.s + nar[1]
    block_max = np.where(bl.vis, sv, -np.inf).reshape(cx.R, cx.T, cx.n).max(axis=2)
    return ScoreTile(vector_scores=sv, logits=logits, block_max=block_max)


def _shifted_keys(cx: Chunk, consts: ShiftConstants) -> tuple[Arr, Arr, Arr, Arr, Arr, Arr | None]:
    """Setup: K̃ = M_r·K on the matrix unit (M_r = aI − bJ, accumulated over the n keys of a block,
    rounded to the output and operand formats, E1). Returns K̃ (exact), its rounding variance and bound,
    the block means k̄_j, |K| per block and the mean error of a narrow accumulator (None when wide;
    docs/beyond.md §5.3)."""
    pol, bl = cx.pol, cx.bl
    Fm, Fa, Fo = pol.matmul_in, pol.matmul_acc, pol.matmul_out
    n, T, d = cx.n, cx.T, cx.d
    blk = cx.block_of
    kb = bl.kpad.reshape(T, n, d).mean(axis=1)  # block means of the keys
    kt = consts.a * bl.kpad - (consts.b * n) * kb[blk]  # K̃ = M_r K, exact (M_r = aI − bJ)
    vk = rvar(kt, Fo)
    bk = rbound(kt, Fo)
    if narrower(Fm, Fo):
        vk = vk + rvar(kt, Fm)
        bk = bk + rbound(kt, Fm)
    absk = np.abs(bl.kpad).reshape(T, n, d)
    mag = abs(consts.diag) * np.abs(bl.kpad) + abs(consts.off) * absk.sum(axis=1)[blk]
    m_hat = np.full((n, n), consts.off)
    np.fill_diagonal(m_hat, consts.diag)
    acc = _accum.accumulator_of(pol)
    if acc is None:
        return kt, vk, bk + gamma(n, Fa) * mag, kb, absk, None
    # a narrow accumulator (docs/beyond.md §5.3): the same chunk sum off·Σ_chunk K is added to the
    # accumulator of every key of the block, so keys in one binade round alike and the errors are
    # correlated across the block (the recovery's c·mean_j amplifies them). K̃ depends on K only: it is
    # evaluated exactly (the enclosure of Theorem 5 on pinned operands, then the casts to matmul_out and
    # the operand format), and its whole error is systematic.
    enc = _accum.matmul_enclosure(m_hat.T, m_hat.T, bl.kpad.reshape(T, n, d), bl.kpad.reshape(T, n, d), acc)
    if np.any(enc.overflow):
        cx.overflow["scores"] = True
    run = round_array(round_array(0.5 * (enc.lo + enc.hi), Fo), Fm).reshape(T * n, d)
    bias = np.where(np.isfinite(run), run - kt, 0.0)
    g_a, h_a = _accum.gamma_acc(n, acc)
    return kt, np.zeros_like(vk), np.abs(bias) + g_a * mag + h_a, kb, absk, bias


#: Fourier terms of the rounding error's autocorrelation kept in :func:`_kt_block_mean_var`
KT_FOURIER_TERMS = 16


def _kt_block_mean_var(pol: Policy, consts: ShiftConstants, kpad: Arr, kt: Arr, vk: Arr, n: int) -> Arr:
    """Variance (T, d) of mean_j(fl(K̃) − K̃) over the n keys of each block, per column.

    K̃_r = a·K_r + C_j with C_j = −b·Σ_{s∈j} K_s common to the block (M_r = aI − bJ, a = diag − off).
    The rounding error of K̃_r is the sawtooth s_q(C_j + a·K_r) on its grid q: with the phase of C_j
    uniform, two keys of one quantum q have covariance q²·B₂(t)/2, t = frac((a·K_r − a·K_s)/q), B₂ the
    Bernoulli polynomial (1/12 for t = 0: where a·K_r lies on the grid, as when a = τ = 1/8 at d = 64,
    all such keys' errors coincide; zero on average for scattered t: independent errors). Keys of a finer
    quantum q_f and a coarser one share the fine grid's harmonics: covariance Σ_k (−1)^k q_f²
    cos(2πk·Δ/q_f)/(2π²k²) (−q_f²/24 on the grid). Summed by the Fourier series of B₂ over
    :data:`KT_FOURIER_TERMS` harmonics (the diagonal exactly). docs/error-model.md §8.4.
    """
    L, d = kpad.shape
    T = L // n
    Fl = pol.matmul_in if narrower(pol.matmul_in, pol.matmul_out) else pol.matmul_out
    own = consts.a * kpad  # (L, d) the key's own part of K̃ (exact)
    qk = ulp(np.abs(kt), Fl)
    normal = np.abs(kt) >= float(Fl.min_normal)
    qb = np.where(normal, qk, 0.0).reshape(T, n, d)
    # quanta whose keys could matter: n_q·q within 1/16 of the largest (a group below that changes the
    # block mean's variance by < 1/256 even if its errors coincide); the other keys stay independent
    quanta = np.unique(qb[qb > 0])  # ascending
    strength = np.array([float(((qb == qv).sum(axis=1) * qv).max()) for qv in quanta])
    quanta = quanta[strength >= strength.max(initial=0.0) / 16.0]
    kept = np.isin(qb, quanta) & (qb > 0)
    iid = np.where(kept, 0.0, vk.reshape(T, n, d)).sum(axis=1)
    ph = np.where(kept, own.reshape(T, n, d) / np.where(kept, qb, 1.0), 0.0)
    z1 = np.exp(2j * np.pi * (ph - np.floor(ph)))  # e^{2πi·own/q} per key, on its own quantum
    K = KT_FOURIER_TERMS
    ks = np.arange(1, K + 1)
    w = 1.0 / (2.0 * np.pi**2 * ks**2)
    total = np.zeros((T, d))
    for i, qf in enumerate(quanta):
        inf_ = qb == qf
        nf = inf_.sum(axis=1)
        zf = np.where(inf_, z1, 0.0)
        zk = np.ones_like(zf)
        sk = []
        for _ in ks:
            zk = zk * zf
            sk.append(zk.sum(axis=1))
        total += qf * qf * nf / 12.0
        for kk in range(K):
            total += qf * qf * w[kk] * (np.abs(sk[kk]) ** 2 - nf)
        for qc in quanta[i + 1 :]:
            m = int(round(qc / qf))
            inc = qb == qc
            zc = np.where(inc, z1, 0.0)
            zc_m = zc**m  # the coarse keys' phase on the fine grid (q_c = m·q_f)
            zk = np.ones_like(zc_m)
            for kk in range(K):
                zk = zk * zc_m
                cross = np.real(sk[kk] * np.conj(zk.sum(axis=1)))
                total += 2.0 * (-1.0) ** (kk + 1) * qf * qf * w[kk] * cross
    return (iid + np.maximum(total, 0.0)) / float(n * n)


def score_tile_shifted(cx: Chunk, consts: ShiftConstants) -> ScoreTile:
    """Setup and steps a–b of PASA: S̃ = Q·K̃ᵀ and its block means μ̃_j (the pseudo-averages).

    docs/error-model.md §8.2: the rounding of K̃ reaches the logits through q (``scores.kt``), the
    rounding of S̃ is a key-level term (E1); the systematic logits are the exact recovery
    ŝ = S̃ + c·μ̃ with the stored constants (E6); overflow of K̃ and of the tile by §6.
    """
    pol, ex, bl, terms, ovf = cx.pol, cx.ex, cx.bl, cx.terms, cx.overflow
    Fa, Fo, Fv = pol.matmul_acc, pol.matmul_out, pol.vector
    R, T, n = cx.R, cx.T, cx.n
    a, b, c, sigma = consts.a, consts.b, consts.c, consts.sigma
    rho, s, place = cx.rho, bl.s, pol.placement
    bn = b * n
    mu_hat = bl.mu  # block means of τq·k over the padded block
    mu_col = mu_hat[:, cx.block_of]
    f = cx.tau_v if place == "scores" else 1.0  # factor from the matmul output to score units
    kt, vk, bk, kb, absk, kt_bias = _shifted_keys(cx, consts)
    if place == "q":
        qs, vq, bq = _prescaled_queries(cx)
        terms.key("scores.input", vq @ (kt**2).T, bq @ np.abs(kt).T)
        qq = qs
    else:
        qq = ex.q
    terms.key("scores.kt", f**2 * ((qq**2) @ vk.T), f * (np.abs(qq) @ bk.T))
    # S̃ in score units: ρ·(a·s − bn·μ)/σ; for "scores" the matmul output is S̃/τ_v
    st = rho * (a * s - bn * mu_col) / sigma
    st_raw = st / f
    v_, b_ = rvb(st_raw, Fo)
    terms.key("scores.round", f**2 * v_, f * b_, grid=GridRounding(st_raw, Fo, f))
    if narrower(Fv, Fo):
        terms.key("scores.round", f**2 * rvar(st_raw, Fv), f * rbound(st_raw, Fv))
    if place == "scores":
        terms.key("scores.scale", *rvb(st, Fv), grid=GridRounding(st, Fv, 1.0))
    ktn = np.sqrt((kt**2).sum(axis=1))
    nar = _acc_moments(cx, qq, kt.T, "scores")
    if nar is None:
        terms.key("scores.acc", 0.0, gamma(cx.d, Fa) * f * np.outer(np.sqrt((qq**2).sum(axis=1)), ktn))
    else:  # a narrow accumulator (docs/beyond.md §5.3)
        g_a, h_a = nar[3]
        terms.key("scores.acc", f**2 * nar[2], f * (g_a * (np.abs(qq) @ np.abs(kt).T) + h_a))
    # overflow of K̃ and of the score tile (operands as the kernel rounds them)
    kt_r = round_array(round_array(kt, Fo), pol.matmul_in)
    if not np.all(np.isfinite(kt_r)):
        ovf["scores"] = True
    else:
        qm = round_array(round_array(qq, Fv), pol.matmul_in) if place == "q" else qq
        if np.max(np.abs(qm @ kt_r.T), initial=0.0) >= _threshold(Fo):
            ovf["scores"] = True
        elif place == "scores" and np.max(np.abs(st), initial=0.0) >= _threshold(Fv):
            ovf["exp"] = True
    block_max = np.where(bl.vis, st, -np.inf).reshape(R, T, n).max(axis=2)
    mu_t = st.reshape(R, T, n).mean(axis=2)  # block means of S̃ (the pseudo-averages)
    if pol.recovery == "key_mean":
        logits = rho * (a * s - bn * mu_hat[:, :1]) / sigma
    else:
        logits = rho * (a * s + (c * (a - bn) - bn) * mu_col) / sigma
    if nar is not None:  # the accumulators' biases on S̃ (K̃ through q), recovered with c·mean_j (E6)
        e = f * nar[1] + (0.0 if kt_bias is None else f * (qq @ kt_bias.T))
        if pol.recovery == "pseudo_average":
            e = e + c * e.reshape(R, T, n).mean(axis=2)[:, cx.block_of]
        logits = logits + e
    return ScoreTile(
        vector_scores=st,
        logits=logits,
        block_max=block_max,
        score_terms=("scores.input", "scores.kt", "scores.round", "scores.scale", "scores.acc"),
        pseudo_averages=mu_t,
        shifted=ShiftedOperands(qq, f, kb, absk, bn, _kt_block_mean_var(pol, consts, bl.kpad, kt, vk, n)),
    )


# -- step d: exponentials ---------------------------------------------------------------------------------------
@dataclass
class PCast:
    """P rounded again to the operand format for P·V (numerator only)."""

    flushed: Mask  # (R, L) P below half the operand format's smallest subnormal
    rel_var: Arr  # (R, L) relative variance of the cast
    rel_bound: Arr  # (R, L) relative bound of the cast


@dataclass
class Exponentials:
    """Step d: which weights flush to zero in the vector format, exp's own error, the P cast."""

    flushed: Mask  # (R, L)
    fn_error: float  # relative error of the exponential itself (fp32 libm: 2 ulps; else 1 ulp)
    cast: PCast | None


def exponentials(cx: Chunk, tile: ScoreTile) -> Exponentials:
    """Step d: x = fl(S̃ − m_j), P = fl(exp(x)), and, where P·V takes a narrower operand, fl_m(P).

    docs/error-model.md §8.3: the subtraction is exact where ulp(x) <= min(ulp(S̃), ulp(m_j)) (margin 1
    for variances, 4 for bounds); exp(0) = 1 is exact; P below min_sub/2 flushes (systematic, §8.7).
    """
    pol, bl, terms = cx.pol, cx.bl, cx.terms
    Fm, Fv = pol.matmul_in, pol.vector
    uv = cx.uv
    vis = bl.vis
    mcol = tile.block_max[:, cx.block_of]
    sv_col = tile.vector_scores
    with np.errstate(invalid="ignore"):
        x = np.where(vis, sv_col - mcol, -np.inf)  # argument of exp (<= 0)
    xf = np.where(vis, x, 0.0)
    e1_, e4_ = exact_sub2(sv_col, mcol, Fv)
    v_, b_ = rvb(xf, Fv)
    ex_var = np.where(vis & ~e1_, v_, 0.0)
    ex_bnd = np.where(vis & ~e4_, b_, 0.0)
    terms.key("exp.arg", ex_var, ex_bnd)
    P = np.where(vis, np.exp(xf), 0.0)
    ms_v = float(Fv.min_subnormal)
    flush_v = vis & (P < 0.5 * ms_v)
    fn_err = 2.0 * float(F32.u) if narrower(Fv, F32) else 2.0 * uv  # exp's own error (fp32 libm or 1 ulp)
    live = vis & ~flush_v & (xf != 0)
    Ps = np.where(live, P, 1.0)
    relv = np.where(live, rvar(Ps, Fv) / Ps**2 + (fn_err**2) / 3.0, 0.0)
    relb = np.where(live, (uv * Ps + 0.5 * ms_v) / Ps + fn_err, 0.0)
    terms.key("exp.p", relv, log_rel(relb))
    cast = None
    if Fv is not Fm and narrower(Fm, Fv):  # P rounded again for P·V (numerator only)
        msm = float(Fm.min_subnormal)
        flush_m = vis & ~flush_v & (P < 0.5 * msm)
        livem = vis & ~flush_v & ~flush_m & (xf != 0)
        Pm = np.where(livem, P, 1.0)
        cast = PCast(
            flushed=flush_m,
            rel_var=np.where(livem, rvar(Pm, Fm) / Pm**2, 0.0),
            rel_bound=np.where(livem, (float(Fm.u) * Pm + 0.5 * msm) / Pm, 0.0),
        )
    return Exponentials(flushed=flush_v, fn_error=fn_err, cast=cast)


# -- steps b and f: recovery ------------------------------------------------------------------------------------------
def pseudo_average_recovery(cx: Chunk, consts: ShiftConstants, tile: ScoreTile) -> None:
    """Steps b and f with ``recovery="pseudo_average"``: the recovery adds c·μ̃_j to the block.

    docs/error-model.md §8.4: every key-level score error e reaches the block through c·mean_j(e) (E6),
    and the pseudo-average's own rounding (the fp32 reduction, the rounded or centred mean, the pairwise
    tree) is a block-level term amplified by c.
    """
    pol, terms = cx.pol, cx.terms
    Fv, Fr = pol.vector, pol.reduce_format
    R, T, n, uv, c = cx.R, cx.T, cx.n, cx.uv, consts.c
    st, mu_t = tile.vector_scores, tile.pseudo_averages
    assert mu_t is not None
    sv_keys = {k: v for k, v in terms.key_var.items() if k in tile.score_terms}
    sb_keys = {k: v for k, v in terms.key_bound.items() if k in tile.score_terms}
    for name in tile.score_terms:
        if name not in sv_keys:
            continue
        tgt = "recovery.kt" if name == "scores.kt" else "recovery.scores"
        bsum = sb_keys[name].reshape(R, T, n).sum(axis=2)
        so = tile.shifted
        if name == "scores.kt" and so is not None and so.kt_mean_var is not None:
            # the K̃ errors of a block are correlated (_kt_block_mean_var): q·mean_j(ΔK̃) directly
            vmean = so.to_score_units**2 * ((so.q_operand**2) @ so.kt_mean_var.T)
        else:
            vmean = sv_keys[name].reshape(R, T, n).sum(axis=2) / n**2
        terms.block(tgt, c * c * vmean, c * bsum / n)
    absmean = np.abs(st).reshape(R, T, n).mean(axis=2)
    terms.block("recovery.mean", 0.0, c * gamma(n, Fr) * absmean)
    if pol.pseudo_average == "rounded":
        terms.block(
            "recovery.mean", c * c * rvar(mu_t, Fv), c * rbound(mu_t, Fv), grid=GridRounding(mu_t, Fv, c)
        )
    if pol.reduce == "pairwise":
        levels = max(1, math.ceil(math.log2(n)))
        dev = st.reshape(R, T, n) - (mu_t[:, :, None] if pol.pseudo_average == "centered" else 0.0)
        sq = (dev**2).sum(axis=2)
        ab = np.abs(dev).sum(axis=2)
        terms.block("recovery.mean", c * c * levels * (uv**2 / 3.0) * sq / n**2, c * levels * uv * ab / n)
        if pol.pseudo_average == "centered":
            terms.block(
                "recovery.mean",
                c * c * rvar(dev, Fv).sum(axis=2) / n**2,
                c * rbound(dev, Fv).sum(axis=2) / n,
            )


def key_mean_offsets(cx: Chunk, consts: ShiftConstants, tile: ScoreTile) -> Arr:
    """Steps b and f with ``recovery="key_mean"``: δ_j = fl(q·Δk_j), Δk_j = fl(b·n·(k̄_j − k̄_0)).

    docs/error-model.md §8.4: one extra score column per block (E1), a block-level term without the
    amplification by c. Returns the exact offsets δ_j (R, T) in score units.
    """
    pol, bl = cx.pol, cx.bl
    Fm, Fo, Fv, Fr = pol.matmul_in, pol.matmul_out, pol.vector, pol.reduce_format
    so = tile.shifted
    assert so is not None
    qq, f, kb, bn = so.q_operand, so.to_score_units, so.key_block_means, so.bn
    dk = bn * (kb - kb[:1])
    vdk = rvar(dk, Fm) + rvar(dk, F32)
    bdk = rbound(dk, Fm) + rbound(dk, F32) + gamma(cx.n, Fr) * bn * so.abs_keys.mean(axis=1)
    vblk = f**2 * ((qq**2) @ vdk.T)
    bblk = f * (np.abs(qq) @ bdk.T)
    dkey = cx.rho * bn * (bl.mu - bl.mu[:, :1]) / consts.sigma
    cx.terms.block("recovery.keymean", vblk + f**2 * rvar(dkey / f, Fo), bblk + f * rbound(dkey / f, Fo))
    if pol.placement == "scores":
        cx.terms.block("recovery.keymean", rvar(dkey, Fv), rbound(dkey, Fv))
    if np.max(np.abs(dkey / f), initial=0.0) >= _threshold(Fo):
        cx.overflow["shift"] = True
    return dkey


# -- steps e–g: the bookkeeping trajectory -------------------------------------------------------------------------
@dataclass
class Trajectory:
    """The exact-arithmetic trajectory of the online recurrence's bookkeeping (steps e–g)."""

    running_max: Arr  # (R, T) M_t = max_{j<=t} m̂_j of the recovered scores
    takes_over: Mask  # (R, T) block t raises the running maximum (block 0 always)
    alpha_on: Mask  # (R, T) the history is rescaled by α_t before block t is added
    gamma_on: Mask  # (R, T) block t is rescaled by γ_t before it is added
    #: offset="running": variances of the rounded max candidates fl(m_j + δ_j) and fl(m + δ_p)
    candidate_var: tuple[Arr, Arr] | None = None
    #: offset="running": probability that those additions are exact (no residue, factor exactly 1)
    candidate_exact: tuple[Arr, Arr] | None = None


def _takeovers(mhat: Arr) -> tuple[Arr, Mask]:
    M_run = np.maximum.accumulate(mhat, axis=1)  # running max of the recovered scores
    take = np.zeros(mhat.shape, dtype=bool)
    take[:, 0] = True
    with np.errstate(invalid="ignore"):
        take[:, 1:] = mhat[:, 1:] > M_run[:, :-1]
    return M_run, take


def _trailing_quantum(y: Arr) -> Arr:
    """The largest power of two that divides y (y ≠ 0 on a binary grid with <= 53 significant bits)."""
    m, e = np.frexp(np.abs(y))
    M = np.round(m * 2.0**53).astype(np.int64)
    low = (M & -M).astype(np.float64)
    return np.ldexp(low, e - 53)


def _exact_add_probability(x: Arr, y: Arr, F: FloatFormat) -> Arr:
    """Probability that fl(x + y) = x + y for a stored x and an offset y, both on the grid of ``F``
    (docs/error-model.md §8.5).

    The sum is exact iff both addends are multiples of its quantum q = ulp(x + y). The offset y is known
    exactly (:func:`_stored_offsets`): its bits are its own, a multiple of its trailing power of two; the
    stored maximum x is known to within its score errors, so its bits below ulp(x) are taken as random.
    Hence exact for sure where ulp(x) and y's trailing quantum are both >= q, otherwise with probability
    min(ulp x, trailing quantum of y)/q; y = 0 adds nothing.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        q = ulp(np.abs(x + y), F)
        ty = np.where(y != 0, _trailing_quantum(np.where(y != 0, y, 1.0)), np.inf)
        fine = np.minimum(ulp(np.abs(x), F), ty)
        p = np.where(np.isfinite(fine / q), np.minimum(1.0, fine / q), 0.0)
    return np.where((y == 0) | (x == 0), 1.0, p)


def _stored_offsets(pol: Policy, mu_t: Arr, c: float) -> tuple[Arr, Arr]:
    """δ_j = c·(μ_j − A) and δ_p = c·(A_prev − A) as the vector unit forms them (R, T), from the exact
    block means: the running mean A is kept on the grid, A = fl(fl(fl(μ_t)·r₁) + fl(A·r₂)) with the
    rounded mean (``pseudo_average="rounded"``) or A = fl(A + fl(fl(μ_t − A)·r₁)) (centred),
    r₁ = fl(1/(t+1)), r₂ = fl(t/(t+1)) (docs/error-model.md §8.5).

    Both offsets are differences of values on one grid times c: they are exactly 0 where the rounded
    block mean equals the stored A (δ_j) or where the update of A is below half its quantum and A stays
    put (δ_p), which happens on most blocks once A is large — and then the max candidate is the
    maximum itself and its rescaling factor is exactly 1.
    """
    F = pol.vector
    R, T = mu_t.shape
    rounded = pol.pseudo_average == "rounded"
    a = round_array(mu_t[:, 0], F)
    dj = np.zeros((R, T))
    dp = np.zeros((R, T))
    for t in range(1, T):
        r1 = float(round_array(np.array([1.0 / (t + 1)]), F)[0])
        if rounded:
            r2 = float(round_array(np.array([t / (t + 1)]), F)[0])
            mu = round_array(mu_t[:, t], F)
            new = round_array(round_array(mu * r1, F) + round_array(a * r2, F), F)
            e = mu - new
        else:
            e0 = round_array(mu_t[:, t] - a, F)
            new = round_array(a + round_array(e0 * r1, F), F)
            e = e0 - (new - a)
        dj[:, t] = round_array(e * c, F)
        dp[:, t] = round_array((a - new) * c, F)
        a = new
    return dj, dp


def running_offsets(cx: Chunk, consts: ShiftConstants, tile: ScoreTile) -> Trajectory:
    """Steps e–g with ``offset="running"`` (the reference script, docs/precision.md §2.1).

    docs/error-model.md §8.5: A is the running mean of the pseudo-averages; the block offset
    δ_j = c·(μ̃_j − A), the history offset δ_p = c·(A_prev − A) and the max candidates m_j + δ_j,
    m + δ_p are vector roundings, block-level (E3) and prefix-level (E4) terms; a subtraction of two
    stored values is exact where ulp of the difference is not larger than theirs. Every block rescales
    both the history (α) and itself (γ).
    """
    Fv, terms = cx.pol.vector, cx.terms
    R, T, c = cx.R, cx.T, consts.c
    mS, mu_t = tile.block_max, tile.pseudo_averages
    assert mu_t is not None
    M_run, take = _takeovers(cx.bl.mhat)
    A = np.cumsum(mu_t, axis=1) / np.arange(1, T + 1)
    dj = c * (mu_t - A)
    dp = np.zeros((R, T))
    dp[:, 1:] = c * (A[:, :-1] - A[:, 1:])
    Rb = mS + c * mu_t
    ref = np.maximum.accumulate(Rb, axis=1) - c * A
    # block level: μ̃ − A, ×c, mj − ref, + dj ; prefix level: A_prev − A, ×c, m − ref, + dp
    e1 = mu_t - A
    terms.block(
        "bookkeeping",
        c * c * np.where(exact_sub(mu_t, A, Fv), 0.0, rvar(e1, Fv)) + rvar(dj, Fv),
        c * np.where(exact_sub(mu_t, A, Fv, 4.0), 0.0, rbound(e1, Fv)) + rbound(dj, Fv),
    )
    with np.errstate(invalid="ignore"):
        g1 = np.where(np.isfinite(mS), mS - ref, 0.0)
        g2 = g1 + dj
    terms.block(
        "bookkeeping",
        np.where(exact_sub(mS, ref, Fv), 0.0, rvar(g1, Fv)) + rvar(g2, Fv),
        np.where(exact_sub(mS, ref, Fv, 4.0), 0.0, rbound(g1, Fv)) + rbound(g2, Fv),
    )
    a1 = np.zeros((R, T))
    a1[:, 1:] = A[:, :-1] - A[:, 1:]
    r1 = np.zeros((R, T))
    r1[:, 1:] = ref[:, :-1] - ref[:, 1:]
    r2 = r1 + dp
    pv_ = np.zeros((R, T))
    pb_ = np.zeros((R, T))
    pv_[:, 1:] = (
        c * c * np.where(exact_sub(A[:, :-1], A[:, 1:], Fv), 0.0, rvar(a1[:, 1:], Fv))
        + rvar(dp[:, 1:], Fv)
        + np.where(exact_sub(ref[:, :-1], ref[:, 1:], Fv), 0.0, rvar(r1[:, 1:], Fv))
        + rvar(r2[:, 1:], Fv)
    )
    pb_[:, 1:] = (
        c * np.where(exact_sub(A[:, :-1], A[:, 1:], Fv, 4.0), 0.0, rbound(a1[:, 1:], Fv))
        + rbound(dp[:, 1:], Fv)
        + np.where(exact_sub(ref[:, :-1], ref[:, 1:], Fv, 4.0), 0.0, rbound(r1[:, 1:], Fv))
        + rbound(r2[:, 1:], Fv)
    )
    terms.prefix("bookkeeping", pv_, pb_)
    alpha_on = np.zeros((R, T), dtype=bool)
    alpha_on[:, 1:] = True
    gamma_on = np.zeros((R, T), dtype=bool)
    gamma_on[:, 1:] = True
    shift_peak = np.maximum(np.abs(dj).max(axis=1), np.abs(dp).max(axis=1))
    with np.errstate(invalid="ignore"):
        cand_b = np.where(np.isfinite(mS), mS + dj, 0.0)
        cand_p = np.zeros((R, T))
        cand_p[:, 1:] = np.where(np.isfinite(ref[:, :-1]), ref[:, :-1] + dp[:, 1:], 0.0)
    _shift_overflow(cx, shift_peak)
    # exactness of the max candidates, with the offsets as the kernel stores them (§8.5)
    dj_s, dp_s = _stored_offsets(cx.pol, mu_t, c)
    with np.errstate(invalid="ignore"):
        ex_b = _exact_add_probability(np.where(np.isfinite(mS), round_array(mS, Fv), 0.0), dj_s, Fv)
        ex_p = np.ones((R, T))
        ex_p[:, 1:] = _exact_add_probability(
            np.where(np.isfinite(ref[:, :-1]), round_array(ref[:, :-1], Fv), 0.0), dp_s[:, 1:], Fv
        )
    return Trajectory(M_run, take, alpha_on, gamma_on, (rvar(cand_b, Fv), rvar(cand_p, Fv)), (ex_b, ex_p))


def lazy_offsets(
    cx: Chunk, consts: ShiftConstants | None, tile: ScoreTile, key_offsets: Arr | None
) -> Trajectory:
    """Steps e–g with ``offset="lazy"`` (npu_fp16, docs/precision.md §2.2), and flash attention (δ = 0).

    docs/error-model.md §8.5: the stored maximum is a block maximum in its frame (offset φ); block t is
    compared through x = (m_t − m) + (δ_t − φ). Each rounding of x is a block-level term (E3) where the
    block does not take over, a prefix-level term (E4) where it does; the re-centring of A (|δ_t| >
    ``recenter_at``) moves its roundings to the history. The trajectory is followed on exact values.
    """
    pol, terms, Fv = cx.pol, cx.terms, cx.pol.vector
    R, T = cx.R, cx.T
    shift = consts is not None
    mS, mu_t, mhat = tile.block_max, tile.pseudo_averages, cx.bl.mhat
    M_run, take = _takeovers(mhat)
    alpha_on = np.zeros((R, T), dtype=bool)
    gamma_on = np.zeros((R, T), dtype=bool)
    alpha_on[:, 1:] = take[:, 1:]
    gamma_on[:, 1:] = ~take[:, 1:]
    shift_peak = np.zeros(R)
    centred = shift and pol.recovery == "pseudo_average"
    c = consts.c if consts is not None else 0.0
    mh = mS[:, 0].copy()  # the stored maximum
    phi = np.zeros(R)  # its frame's offset
    Aref = mu_t[:, 0].copy() if centred and mu_t is not None else np.zeros(R)  # the reference A
    rc = pol.recenter_at
    bv = np.zeros((R, T))
    bb = np.zeros((R, T))
    prv = np.zeros((R, T))
    prb = np.zeros((R, T))
    for t in range(1, T):
        live_t = np.isfinite(mhat[:, t])
        if centred:
            assert mu_t is not None
            e = mu_t[:, t] - Aref
            dd = c * e
            far = np.abs(dd) > rc
            # the block's own offset: rounding of e (c-amplified) and of c·e (unless re-centred)
            bv[:, t] += c * c * rvar(e, Fv) + np.where(far, 0.0, rvar(dd, Fv))
            bb[:, t] += c * rbound(e, Fv) + np.where(far, 0.0, rbound(dd, Fv))
            newphi = phi - dd
            prv[:, t] += np.where(far, rvar(dd, Fv) + rvar(newphi, Fv), 0.0)
            prb[:, t] += np.where(far, rbound(dd, Fv) + rbound(newphi, Fv), 0.0)
            shift_peak = np.maximum(shift_peak, np.abs(dd))
            shift_peak = np.maximum(shift_peak, np.where(far, np.abs(newphi), 0.0))
            Aref = np.where(far, mu_t[:, t], Aref)
            phi = np.where(far, newphi, phi)
            dd = np.where(far, 0.0, dd)
        elif shift:  # key_mean
            assert key_offsets is not None
            dd = key_offsets[:, t]
        else:
            dd = np.zeros(R)
        off = dd - phi
        if shift:
            shift_peak = np.maximum(shift_peak, np.abs(off))
        with np.errstate(invalid="ignore"):
            md = np.where(live_t, mS[:, t] - mh, 0.0)
        cv = np.where(live_t & ~exact_sub(mS[:, t], mh, Fv), rvar(md, Fv), 0.0)
        cb = np.where(live_t & ~exact_sub(mS[:, t], mh, Fv, 4.0), rbound(md, Fv), 0.0)
        if shift:
            xx = md + off
            cv = (
                cv
                + np.where(exact_sub(dd, phi, Fv), 0.0, rvar(off, Fv))
                + np.where(exact_sub(md, -off, Fv), 0.0, rvar(xx, Fv))
            )
            cb = (
                cb
                + np.where(exact_sub(dd, phi, Fv, 4.0), 0.0, rbound(off, Fv))
                + np.where(exact_sub(md, -off, Fv, 4.0), 0.0, rbound(xx, Fv))
            )
        cv = np.where(live_t, cv, 0.0)
        cb = np.where(live_t, cb, 0.0)
        tk = take[:, t] & live_t
        bv[:, t] += np.where(tk, 0.0, cv)
        bb[:, t] += np.where(tk, 0.0, cb)
        prv[:, t] += np.where(tk, cv, 0.0)
        prb[:, t] += np.where(tk, cb, 0.0)
        mh = np.where(tk, mS[:, t], mh)
        phi = np.where(tk, dd, phi)
    terms.block("bookkeeping", bv, bb)
    terms.prefix("bookkeeping", prv, prb)
    if shift:
        _shift_overflow(cx, shift_peak)
    return Trajectory(M_run, take, alpha_on, gamma_on)


def _shift_overflow(cx: Chunk, shift_peak: Arr) -> None:
    if np.max(shift_peak, initial=0.0) >= _threshold(cx.pol.vector):
        cx.overflow["shift"] = True


# -- step h: the rescaling factors -----------------------------------------------------------------------------------
@dataclass
class Flushes:
    """Rescaling factors that flush to zero in the vector format (the block, resp. the history, drops)."""

    gamma: Mask  # (R, T) γ_t = e^{m̂_t − M_t} below min_sub/2
    alpha: Mask  # (R, T) α_t = e^{M_{t−1} − M_t} below min_sub/2


def rescaling_factors(cx: Chunk, traj: Trajectory, fn_err: float) -> Flushes:
    """Step h: γ_t = e^{m̂_t − M_t} (a block, block-level E3) and α_t = e^{M_{t−1} − M_t} (the history,
    prefix-level E4), each one rounding of exp. docs/error-model.md §8.6."""
    Fv, uv = cx.pol.vector, cx.uv
    R, T = cx.R, cx.T
    mhat, M_run = cx.bl.mhat, traj.running_max
    ms_v = float(Fv.min_subnormal)
    with np.errstate(invalid="ignore", over="ignore"):
        gfac = np.where(np.isfinite(mhat), np.exp(mhat - M_run), 0.0)
        afac = np.ones((R, T))
        afac[:, 1:] = np.exp(np.where(np.isfinite(M_run[:, :-1]), M_run[:, :-1] - M_run[:, 1:], -np.inf))
    g_flush = traj.gamma_on & (gfac < 0.5 * ms_v)
    a_flush = traj.alpha_on & (afac < 0.5 * ms_v)
    g_live = traj.gamma_on & ~g_flush & (gfac < 1.0)
    a_live = traj.alpha_on & ~a_flush & (afac < 1.0)
    gs = np.where(g_live, gfac, 1.0)
    as_ = np.where(a_live, afac, 1.0)
    cx.terms.block(
        "exp.rescale",
        np.where(g_live, rvar(gs, Fv) / gs**2 + fn_err**2 / 3, 0.0),
        np.where(g_live, log_rel((uv * gs + 0.5 * ms_v) / gs + fn_err), 0.0),
    )
    cx.terms.prefix(
        "exp.rescale",
        np.where(a_live, rvar(as_, Fv) / as_**2 + fn_err**2 / 3, 0.0),
        np.where(a_live, log_rel((uv * as_ + 0.5 * ms_v) / as_ + fn_err), 0.0),
    )
    return Flushes(gamma=g_flush, alpha=a_flush)


# -- systematic weights ---------------------------------------------------------------------------------------------
@dataclass
class Weights:
    """The softmax of the systematic logits with the deterministic flushes, and its block statistics."""

    keep: Mask  # (R, L) keys whose weight survives every flush
    p: Arr  # (R, L) weights p_r
    V: Arr  # (L, dv) values of the padded columns
    tiles: Arr  # (R, T, dv) Y_j = Σ_{r∈j} p_r v_r (normalised P·V_j)
    block_sums: Arr  # (R, T) W_j = Σ_{r∈j} p_r (normalised ℓ_j)
    o: Arr  # (R, dv) the consistent output Σ_r p_r v_r
    o_sys: Arr  # (R, dv) with the P-cast flushes (numerator only)
    sys_err: Arr  # (R, dv) o_sys − O_exact
    B: Arr  # (R, T, dv) B_j = Σ_{r∈j} p_r (v_r − o), eq. (E3)
    prefix_before: Arr  # (R, T, dv) P_{t−1} = Σ_{j<t} B_j, eq. (E4)
    Ncum: Arr  # (R, T, dv) running sums of the tiles through block t
    Lcum: Arr  # (R, T) running sums of the block sums through block t
    prevN: Arr  # (R, T, dv) the same before block t
    prevL: Arr  # (R, T)


def systematic_weights(
    cx: Chunk, tile: ScoreTile, expo: Exponentials, traj: Trajectory, flushes: Flushes
) -> Weights:
    """The systematic part: softmax of the logits with the once-rounded constants, without the keys that
    flush deterministically (P, γ, α below min_sub/2), evaluated exactly (E7). docs/error-model.md §8.7."""
    R, T, n, dv = cx.R, cx.T, cx.n, cx.dv
    blk = cx.block_of
    keep = cx.bl.vis & ~expo.flushed
    if flushes.gamma.any():
        keep &= ~flushes.gamma[:, blk]
    if flushes.alpha.any():
        # α_t flushes: every block before t is dropped
        dead = np.zeros((R, T), dtype=bool)
        for t in range(1, T):
            dead[:, :t] |= flushes.alpha[:, t : t + 1]
        keep &= ~dead[:, blk]
    zs = np.where(keep, tile.logits, -np.inf)
    zmax = zs.max(axis=1)
    zmax = np.where(np.isfinite(zmax), zmax, 0.0)
    w = np.exp(zs - zmax[:, None])
    wden = w.sum(axis=1)
    wden_safe = np.where(wden > 0, wden, 1.0)
    pw = w / wden_safe[:, None]
    V = cx.bl.vpad
    Y = np.matmul(pw.reshape(R, T, n).transpose(1, 0, 2), V.reshape(T, n, dv)).transpose(1, 0, 2)
    Wb = pw.reshape(R, T, n).sum(axis=2)
    o_cons = Y.sum(axis=1)
    o_sys = o_cons
    cast = expo.cast
    if cast is not None and (cast.flushed & keep).any():
        pn = np.where(cast.flushed, 0.0, pw)
        o_sys = pn @ V
    sys_err = o_sys - cx.ex.o_ref
    B = Y - Wb[:, :, None] * o_cons[:, None, :]
    Pref = np.cumsum(B, axis=1)
    Ncum, Lcum, prevN, prevL = _running_sums(Y, Wb)
    prev = np.zeros_like(Pref)
    prev[:, 1:] = Pref[:, :-1]
    return Weights(keep, pw, V, Y, Wb, o_cons, o_sys, sys_err, B, prev, Ncum, Lcum, prevN, prevL)


# -- consistent terms -------------------------------------------------------------------------------------------------
@dataclass
class Consistent:
    """The consistent perturbations of the log-weights: totals, their variance and bound on o."""

    key_tot_var: Arr  # (R, L) Σ of the key-level variances (kept keys)
    key_tot_bound: Arr  # (R, L)
    block_tot_var: Arr  # (R, T)
    prefix_tot_var: Arr  # (R, T)
    key_var: Arr  # (R, dv) Σ_r p_r² σ_r² (v_r − o)², eq. (E2)
    block_var: Arr  # (R, dv) Σ_j σ_j² B_j², eq. (E3)
    prefix_var: Arr  # (R, dv) Σ_t σ_t² P_{t−1}², eq. (E4)
    bound: Arr  # (R, dv) the bound via (E7), capped by the hull
    mean_log_bound: Arr  # (R,) Ē = Σ_r p_r E_r
    excess: Arr  # (R,) X = Σ_r p_r (e^{E_r} − 1)
    cap: Arr  # (R, dv) max_r |v_r − o| over the visible keys
    dominant_block: IntArr  # (R,) j* = argmax_j W_j


def consistent_variance(cx: Chunk, w: Weights, brk: Breakdown) -> Consistent:
    """Variances of the consistent terms through (E2)–(E4) and their breakdown; the bound through (E7)
    (docs/error-model.md §8.8 and §5.1)."""
    terms = cx.terms
    R, T, L = cx.R, cx.T, cx.L
    keep, pw, V, B, prev = w.keep, w.p, w.V, w.B, w.prefix_before
    kv_tot = np.zeros((R, L))
    kb_tot = np.zeros((R, L))
    for name in terms.key_var:
        kv_tot += terms.key_var[name]
        kb_tot += terms.key_bound[name]
    kv_tot = np.where(keep, kv_tot, 0.0)
    kb_tot = np.where(keep, kb_tot, 0.0)
    bv_tot = sum(terms.block_var.values(), np.zeros((R, T)))
    pv_tot = sum(terms.prefix_var.values(), np.zeros((R, T)))

    p2 = pw * pw
    wkey = p2 * kv_tot
    m1 = wkey @ (V * V)
    m2 = wkey @ V
    m0 = wkey.sum(axis=1)
    o = w.o
    key_var = np.maximum(m1 - 2 * o * m2 + (o**2) * m0[:, None], 0.0)  # Σ p²σ²(v − o)²
    blk_var = np.einsum("rt,rtd->rd", bv_tot, B * B)
    pre_var = np.einsum("rt,rtd->rd", pv_tot, prev * prev)

    # breakdown of the consistent variance
    share_den = (p2 * kv_tot).sum(axis=1)
    for name in terms.key_var:
        sh = (p2 * np.where(keep, terms.key_var[name], 0.0)).sum(axis=1) / np.where(
            share_den > 0, share_den, 1.0
        )
        brk.add_var(name, float((key_var.sum(axis=1) * sh).sum()))
    for name in terms.block_var:
        brk.add_var(name, float(np.einsum("rt,rtd->", terms.block_var[name], B * B)))
    for name in terms.prefix_var:
        brk.add_var(name, float(np.einsum("rt,rtd->", terms.prefix_var[name], prev * prev)))
    return _consistent_bound(cx, w, brk, kv_tot, kb_tot, bv_tot, pv_tot, key_var, blk_var, pre_var)


def _consistent_bound(
    cx: Chunk,
    w: Weights,
    brk: Breakdown,
    kv_tot: Arr,
    kb_tot: Arr,
    bv_tot: Arr,
    pv_tot: Arr,
    key_var: Arr,
    blk_var: Arr,
    pre_var: Arr,
) -> Consistent:
    """The consistent perturbations bounded without linearisation (E7), capped by the hull of V.

    docs/error-model.md §5.1, §8.8: relative to the dominant block j* (a perturbation common to all keys
    is harmless), block j moves against j* by at most Z_j + Z_j* plus the history rescalings between
    them, H_(j, j*]; Σ_r p_r φ_r >= e^{−Ē} by Jensen.
    """
    terms, ex = cx.terms, cx.ex
    R, T = cx.R, cx.T
    blk = cx.block_of
    keep, pw, V, B, prev, o_cons = w.keep, w.p, w.V, w.B, w.prefix_before, w.o
    bb_tot = sum(terms.block_bound.values(), np.zeros((R, T)))
    pb_tot = sum(terms.prefix_bound.values(), np.zeros((R, T)))
    jstar = w.block_sums.argmax(axis=1)
    rr = np.arange(R)
    Cpre = np.cumsum(pb_tot, axis=1)
    Hb = np.abs(Cpre - Cpre[rr, jstar][:, None])
    Zb = np.where(np.arange(T)[None, :] == jstar[:, None], 0.0, bb_tot + bb_tot[rr, jstar][:, None] + Hb)
    Ecol = np.where(keep, kb_tot + Zb[:, blk], 0.0)
    # Σ_r p_r φ_r >= Σ_r p_r e^{−E_r} >= e^{−Σ_r p_r E_r} (Jensen): the mean, not the max, of the log bounds
    Ebar = (pw * Ecol).sum(axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        Xrow = np.where(pw > 0, pw * np.expm1(np.minimum(Ecol, 700.0)), 0.0).sum(axis=1)
    vbar = ex.v.mean(axis=0)
    with np.errstate(over="ignore", invalid="ignore"):
        avr = np.where(
            pw > 0, pw * np.exp(np.minimum(Zb, 700.0)[:, blk]) * np.expm1(np.minimum(kb_tot, 700.0)), 0.0
        )
    key_b = avr @ np.abs(V - vbar) + avr.sum(axis=1)[:, None] * np.abs(vbar - o_cons)
    blk_b = np.einsum(
        "rt,rtd->rd", np.where(np.abs(B).max(axis=2) > 0, np.expm1(np.minimum(Zb, 700.0)), 0.0), np.abs(B)
    )
    cons_b = np.exp(Ebar)[:, None] * (key_b + blk_b)
    cons_b = np.where(np.isfinite(cons_b), cons_b, np.inf)  # overflowed exponentials: no better than the cap
    # hull cap: the perturbed output is a convex combination of the visible values (a prefix of the keys)
    vmax, vmin = _hull(ex, np.asarray(keep.any(axis=1)), o_cons)
    cap = np.maximum(vmax - o_cons, o_cons - vmin)
    cons_b = np.minimum(cons_b, cap)
    # first-order bound of each consistent term (for the breakdown): key-level terms share the key-level
    # bound in proportion to Σ_r p_r·E_r
    key_b1 = pw * kb_tot
    key_b1 = key_b1 @ np.abs(V - vbar) + key_b1.sum(axis=1)[:, None] * np.abs(vbar - o_cons)
    kden = (pw * kb_tot).sum(axis=1)
    for name in terms.key_bound:
        sh = (pw * np.where(keep, terms.key_bound[name], 0.0)).sum(axis=1) / np.where(kden > 0, kden, 1.0)
        brk.max_bound(name, float(np.max(key_b1 * sh[:, None], initial=0.0)))
    for name in terms.block_bound:
        brk.max_bound(
            name, float(np.max(np.einsum("rt,rtd->rd", terms.block_bound[name], np.abs(B)), initial=0.0))
        )
    for name in terms.prefix_bound:
        brk.max_bound(
            name, float(np.max(np.einsum("rt,rtd->rd", terms.prefix_bound[name], np.abs(prev)), initial=0.0))
        )
    return Consistent(
        key_tot_var=kv_tot,
        key_tot_bound=kb_tot,
        block_tot_var=bv_tot,
        prefix_tot_var=pv_tot,
        key_var=key_var,
        block_var=blk_var,
        prefix_var=pre_var,
        bound=cons_b,
        mean_log_bound=Ebar,
        excess=Xrow,
        cap=cap,
        dominant_block=jstar,
    )


# -- step h and the end: non-consistent terms --------------------------------------------------------------------------
class NonConsistentSum:
    """Running sums of the non-consistent terms' variance and first-order bound on o (R, dv), each term
    also entered in the breakdown."""

    def __init__(self, shape: tuple[int, int], brk: Breakdown) -> None:
        self.var = np.zeros(shape)
        self.bound = np.zeros(shape)
        self.brk = brk

    def add(self, name: str, var: Arr, bnd: Arr) -> None:
        self.var = self.var + var
        self.bound = self.bound + bnd
        self.brk.add_var(name, float(var.sum()))
        self.brk.max_bound(name, float(np.max(bnd, initial=0.0)))


@dataclass
class NonConsistent:
    """Numerator-only and denominator-only errors of the online recurrence (step h), first order."""

    sums: NonConsistentSum
    absorption: Arr  # (R, dv) deterministic error of o from dropped contributions
    step: Mask  # (R, T) block t >= 1 is folded into a live history
    running_frame: Arr  # (R, T) e^{lse − M_t}: the normalised running sums times this are the stored ones
    tile_stored: Arr  # (R, T, dv) P·V_j as stored (block frame)
    dropped: AbsorptionMasks  # what the exact weights drop, and the sizes that decide it
    #: (R, dv) the mean numerator error of a narrow P·V accumulator (docs/beyond.md §5.3), in ``absorption``
    acc_bias: Arr | None = None


def non_consistent(
    cx: Chunk,
    expo: Exponentials,
    traj: Trajectory,
    flushes: Flushes,
    w: Weights,
    brk: Breakdown,
) -> NonConsistent:
    """Step h: the P cast for P·V, the tiles P·V_j and row sums ℓ_j, the step products α·ℓ, α·O, γ·ℓ_j,
    γ·P·V_j and the sums ℓ_t, O_t, in the frames the kernel stores them (docs/error-model.md §8.9).

    Numerator-only errors y move o by y/ℓ, denominator-only ones by −o·d/ℓ (E5). A contribution below
    half a quantum of what it is added to is dropped deterministically (:func:`_absorption`), otherwise
    its rounding is random but never larger than the contribution itself.
    """
    pol, terms = cx.pol, cx.terms
    Fa, Fo, Fv, Fr = pol.matmul_acc, pol.matmul_out, pol.vector, pol.reduce_format
    R, T, n, dv, uv = cx.R, cx.T, cx.n, cx.dv, cx.uv
    ms_v = float(Fv.min_subnormal)
    pw, V, Y, Wb, o_cons = w.p, w.V, w.tiles, w.block_sums, w.o
    mhat, M_run = cx.bl.mhat, traj.running_max
    nc = NonConsistentSum((R, dv), brk)
    add = nc.add
    vabs_max = np.abs(V).max(axis=0)
    lse = cx.ex.lse

    if expo.cast is not None:
        wn = (pw * pw) * expo.cast.rel_var
        an = pw * expo.cast.rel_bound
        add("pv.p_cast", wn @ (V * V), an @ np.abs(V))
    with np.errstate(over="ignore", invalid="ignore"):
        fblk = np.where(
            np.isfinite(mhat), np.exp(np.clip(lse[:, None] - mhat, -700, 700)), 0.0
        )  # block frame
        frun = np.where(
            np.isfinite(M_run), np.exp(np.clip(lse[:, None] - M_run, -700, 700)), 0.0
        )  # running frame
    fblk = np.where(Wb > 0, fblk, 0.0)
    # Block row sums ℓ_j (den) and tiles P·V_j (num); contributions below half a quantum are dropped
    # deterministically (see _absorption), the other roundings are random but never larger than the rest.
    step = np.zeros((R, T), dtype=bool)
    step[:, 1:] = np.isfinite(M_run[:, 1:]) & (Wb[:, 1:] > 0)
    det, am_ = _absorption(pw, V, n, T, step, Fv, Fo, Y=Y, Wb=Wb, o=o_cons, prev=(w.prevN, w.prevL))
    rest, delta, live_b = am_["rest"], am_["delta"], Wb > 0
    l_abs, pv_abs, absl, abso = am_["l_abs"], am_["pv_abs"], am_["absl"], am_["abso"]
    hist_small_l, hist_small_o = am_["hist_small_l"], am_["hist_small_o"]
    small_l, small_o = am_["small_l"], am_["small_o"]
    lj = Wb * fblk
    lj_s = np.where(lj > 0, lj, 1.0)
    lrel_b = uv + gamma(n, Fr) + (max(1, math.ceil(math.log2(n))) * uv if pol.reduce == "pairwise" else 0.0)
    lrel_v = np.where(lj > 0, rvar(lj_s, Fv) / lj_s**2, 0.0)
    if pol.reduce == "pairwise":
        lrel_v = lrel_v + 2.0 * uv**2 / 3.0
    dvar = np.where(l_abs, 0.0, np.minimum((Wb**2) * lrel_v, rest**2))
    dbnd = np.minimum(Wb * lrel_b, rest * (1 + gamma(n, Fr)))
    pvf = Y * fblk[:, :, None]
    fb1 = np.where(fblk > 0, fblk, 1.0)[:, :, None]
    pv_v, pv_b = rvb(pvf, Fo)
    pv_v = pv_v / fb1**2
    pv_b = pv_b / np.where(fblk > 0, fblk, np.inf)[:, :, None]
    if narrower(Fv, Fo):
        pv_v = pv_v + rvar(pvf, Fv) / fb1**2
        pv_b = pv_b + rbound(pvf, Fv) / np.where(fblk > 0, fblk, np.inf)[:, :, None]
    pv_v = np.where(pv_abs | ~live_b[:, :, None], 0.0, np.minimum(pv_v, delta**2))
    # a narrow accumulator (docs/beyond.md §5.3): chunk roundings of P·V_j in the block frame, their
    # variance with the tile's rounding and their mean as a deterministic numerator error
    # the kernel's P = e^{x − m_j} ≤ 1: the weights in the frame of their own block maximum
    pmax = pw.reshape(R, T, n).max(axis=2)
    facc = np.where(pmax > 0, 1.0 / np.where(pmax > 0, pmax, 1.0), 0.0)
    p_stored = (pw * facc[:, cx.block_of]).reshape(R, T, n).transpose(1, 0, 2)
    nar = _acc_moments(cx, p_stored, V.reshape(T, n, dv), "accumulator")
    g_pv, h_pv = (gamma(n, Fa), 0.0) if nar is None else nar[3]
    acc_bias: Arr | None = None
    if nar is not None:
        fbs = np.where(facc > 0, facc, np.inf)[:, :, None]
        pv_v = pv_v + np.where(live_b[:, :, None], nar[2].transpose(1, 0, 2) / fbs**2, 0.0)
        acc_bias = np.where(live_b[:, :, None], nar[1].transpose(1, 0, 2) / fbs, 0.0).sum(axis=1)
    pv_b = np.where(
        live_b[:, :, None],
        np.minimum(pv_b, np.abs(delta))
        + g_pv * Wb[:, :, None] * vabs_max
        + h_pv / np.where(facc > 0, facc, np.inf)[:, :, None],
        0.0,
    )
    add("pv.round", pv_v.sum(axis=1), pv_b.sum(axis=1))
    if acc_bias is not None:
        det = det + acc_bias
    # Step products and sums of the online recurrence (t >= 1), in the running frame. In the lazy/flash
    # bookkeeping one factor is exactly 1; a sum of two stored values drops the smaller addend when it is
    # below half a quantum of the larger (deterministic, in ℓ and in each column of O), and otherwise is
    # never off by more than the smaller addend.
    ns_var = np.zeros((R, dv))
    ns_b = np.zeros((R, dv))
    fr = np.where(frun > 0, frun, 1.0)

    def rel_of(vals_norm: Arr, frame: Arr) -> tuple[Arr, Arr]:
        v_, b_ = rvb(vals_norm * frame, Fv)
        return v_ / (frame * frame), b_ / frame

    am = traj.alpha_on & step & ~flushes.alpha
    if traj.candidate_exact is not None:
        # running reference: every block rescales a live history by α, also a block whose own weights
        # all flush (W_j = 0): α·ℓ and α·O are rounded there too (§8.9)
        hist = np.zeros((R, T), dtype=bool)
        hist[:, 1:] = w.prevL[:, 1:] > 0
        am = traj.alpha_on & hist & ~flushes.alpha
    gm = traj.gamma_on & step & ~flushes.gamma
    # running reference: α (and γ of the holding block) round to exactly 1 when the bookkeeping residue
    # is below u/2, and then the product is exact
    if traj.candidate_var is not None:
        # residue of the exponent chains: their own roundings plus the rounding of the max candidate
        # fl(m_j + δ_j) (resp. fl(m + δ_p)) that both exponents share (the recovery terms cancel there)
        cand_blk, cand_pre = traj.candidate_var
        sx_a = np.sqrt(np.maximum(terms.prefix_var.get("bookkeeping", 0.0) + cand_pre, 1e-300))
        sx_g = np.sqrt(np.maximum(terms.block_var.get("bookkeeping", 0.0) + cand_blk, 1e-300))
        p1_a = erf(uv / (2 * math.sqrt(2.0) * sx_a))
        p1_g = erf(uv / (2 * math.sqrt(2.0) * sx_g))
        if traj.candidate_exact is not None:  # an exact max candidate leaves no residue at all (§8.5)
            ex_b, ex_p = traj.candidate_exact
            p1_a = ex_p + (1.0 - ex_p) * p1_a
            p1_g = ex_b + (1.0 - ex_b) * p1_g
        p1_a = np.where(traj.takes_over, 0.0, p1_a)
        p1_g = np.where(mhat >= M_run, p1_g, 0.0)
    else:
        p1_a = np.zeros((R, T))
        p1_g = np.zeros((R, T))
    # α·ℓ, α·O (history); γ·ℓ_t, γ·PV_t (new block): a product absorbed in the following sum does not count
    fr3 = fr[:, :, None]
    lv_, lb_ = rel_of(w.prevL, fr)
    dvar += np.where(am & ~(absl & hist_small_l), lv_ * (1 - p1_a), 0.0)
    dbnd += np.where(am, lb_, 0.0)
    nv_, nb_ = rel_of(w.prevN, fr3)
    ns_var += np.where((am[:, :, None] & ~(abso & hist_small_o)), nv_ * (1 - p1_a)[:, :, None], 0.0).sum(
        axis=1
    )
    ns_b += np.where(am[:, :, None], nb_, 0.0).sum(axis=1)
    lv_, lb_ = rel_of(Wb, fr)
    # γ·ℓ_t is exact where the block's row sum is stored as exactly 1 (its rest dropped, l_abs)
    dvar += np.where(gm & ~(absl & ~hist_small_l) & ~l_abs, lv_ * (1 - p1_g), 0.0)
    dbnd += np.where(gm, lb_, 0.0)
    nv_, nb_ = rel_of(Y, fr3)
    ns_var += np.where((gm[:, :, None] & ~(abso & ~hist_small_o)), nv_ * (1 - p1_g)[:, :, None], 0.0).sum(
        axis=1
    )
    ns_b += np.where(gm[:, :, None], nb_, 0.0).sum(axis=1)
    # the sums ℓ_t and O_t
    lv_, lb_ = rel_of(w.Lcum, fr)
    dvar += np.where(step & ~absl, np.minimum(lv_, small_l**2), 0.0)
    dbnd += np.where(step, np.minimum(lb_, small_l), 0.0)
    nv_, nb_ = rel_of(w.Ncum, fr3)
    ns_var += np.where(step[:, :, None] & ~abso, np.minimum(nv_, small_o**2), 0.0).sum(axis=1)
    ns_b += np.where(step[:, :, None], np.minimum(nb_, np.abs(small_o)), 0.0).sum(axis=1)
    if pol.accum == "pow2":  # power-of-two renormalisation and scaled contributions: exact unless subnormal
        ns_b += 2.0 * T * 0.5 * ms_v
    den_var_o = (o_cons**2) * dvar.sum(axis=1)[:, None]
    den_b_o = np.abs(o_cons) * dbnd.sum(axis=1)[:, None]
    add("row_sum", den_var_o, den_b_o)
    add("accumulator", ns_var, ns_b)
    # with a narrow accumulator the systematic logits can move whole blocks (the biases above): the tile
    # the kernel stores is then judged in the frame of its own block maximum (P ≤ 1), as the kernel's
    tile_stored = pvf if nar is None else Y * facc[:, :, None]
    return NonConsistent(nc, det, step, frun, tile_stored, am_, acc_bias)


def _normal_tail(z: Arr) -> Arr:
    """P(Z > z) for a standard normal Z (math.erfc, exact to double precision)."""
    return np.asarray(_erfc(z / math.sqrt(2.0)), dtype=np.float64) * 0.5


_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def marginal_absorption(cx: Chunk, w: Weights, cons: Consistent, nc: NonConsistent) -> Arr:
    """Mean square of o from block-level absorption decisions that the random errors of the weights can
    flip (docs/error-model.md §8.9).

    :func:`_absorption` decides on the exact weights. In the block frame (top key P = 1 exactly) the rest
    of a tile, y = Σ_{r≠top} P_r v_r, and of a row sum, Σ_{r≠top} P_r, carry the key-level log-weight
    errors σ_r² of their keys and of the top key: y + e with e ~ N(0, σ_y²). A dropped rest within a few
    σ_y of half a quantum h crosses it with probability P₊ = P(Z > (h − |y|)/σ_y) (and the far side with
    P₋ = P(Z > (h + |y|)/σ_y)); the stored tile (ℓ_j) then moves by one quantum q, which moves o by
    δ = ±q·p_top (−o·q·p_top for ℓ_j) on top of its deterministic error e₀ and survives the final
    rounding. Returned: Σ P·((e₀ + δ)² − e₀²) per element (R, dv); exactly 0 where every such decision
    is certain (half a quantum more than 8 σ_y away, probability < 1e-15).
    """
    pol, uv = cx.pol, cx.uv
    Fv, Fo = pol.vector, pol.matmul_out
    R, T, n, dv = cx.R, cx.T, cx.n, cx.dv
    am = nc.dropped
    out = np.zeros((R, dv))
    if not (am["pv_abs"].any() or am["l_abs"].any()):
        return out
    pw, V = w.p, w.V
    e0 = w.o_sys + nc.absorption - cx.ex.o_ref  # the deterministic error of o
    kv3 = cons.key_tot_var.reshape(R, T, n)
    top = am["top_index"]
    ptop, vt = am["top_weight"], am["top_value"]
    kv_top = np.take_along_axis(kv3, top[:, :, None], axis=2)[:, :, 0]
    a3 = (pw * pw * cons.key_tot_var).reshape(R, T, n)  # p_r² σ_r²
    a_top = ptop * ptop * kv_top
    pt = np.where(ptop > 0, ptop, 1.0)
    z_certain = 8.0
    # tiles P·V_j, rounded to the coarser of the matrix output and vector formats
    Fpv = Fo if float(Fo.u) >= uv else Fv
    delta = am["delta"]
    var_y = (
        np.matmul(a3.transpose(1, 0, 2), (V * V).reshape(T, n, dv)).transpose(1, 0, 2)
        - a_top[:, :, None] * vt * vt
        + delta * delta * kv_top[:, :, None]
    )
    sd = np.sqrt(np.maximum(var_y, 0.0)) / pt[:, :, None]  # block frame
    h = 0.5 * ulp(vt, Fpv)
    y = np.abs(delta) / pt[:, :, None]
    sel = am["pv_abs"] & (sd > 0) & (h - y < z_certain * sd)
    if sel.any():
        r_, t_, c_ = np.nonzero(sel)
        sdv, hv, yv = sd[sel], h[sel], y[sel]
        step_ = 2.0 * hv * pt[r_, t_] * np.sign(delta[sel])  # the flip's move of o (normalised)
        p_up = _normal_tail((hv - yv) / sdv)
        p_dn = _normal_tail((hv + yv) / sdv)
        e = e0[r_, c_]
        contrib = p_up * ((e + step_) ** 2 - e * e) + p_dn * ((e - step_) ** 2 - e * e)
        np.add.at(out, (r_, c_), contrib)
    # row sums ℓ_j = fl(1 + rest) in the vector format (stored as 1 where dropped)
    rest = am["rest"]
    var_r = np.maximum(a3.sum(axis=2) - a_top + rest * rest * kv_top, 0.0)
    sdl = np.sqrt(var_r) / pt
    hl = 0.5 * ulp(np.ones((R, T)), Fv)
    yl = rest / pt
    sel_l = am["l_abs"] & (sdl > 0) & (hl - yl < z_certain * sdl)
    if sel_l.any():
        r_, t_ = np.nonzero(sel_l)
        p_up = _normal_tail((hl[sel_l] - yl[sel_l]) / sdl[sel_l])
        dl = -(w.o[r_] * (2.0 * hl[sel_l] * pt[r_, t_])[:, None])  # ℓ one quantum larger: o moves by −o·q
        e = e0[r_]
        np.add.at(out, r_, p_up[:, None] * ((e + dl) ** 2 - e * e))
    return out


# -- the end: O/ℓ and the output cast; the golden's own error ----------------------------------------------------------
@dataclass
class Output:
    """The final division and cast (one rounding onto the grid of the coarser format)."""

    last_format: FloatFormat  # the coarser of the vector and output formats
    pre_rounding_var: Arr  # (R, dv) random non-consistent variance before the final rounding
    mean_square: Arr  # (R, dv) E[(fl(o_pred + e) − O_exact)²]
    golden_bound: Arr  # (R, dv) error of the float64 golden itself
    flip_var: Arr  # (R, dv) variance from marginal absorption decisions (:func:`marginal_absorption`)


def output_stage(
    cx: Chunk, w: Weights, cons: Consistent, nc: NonConsistent, flip_var: Arr, brk: Breakdown
) -> Output:
    """End: fl(O/ℓ) and the cast to the output format, rounded exactly around the predicted value.

    docs/error-model.md §8.10: one rounding of o_pred = o_sys + (absorption) onto the grid of the coarser
    of the vector and output formats, after Gaussian errors of the accumulated variance s². The mean square
    is Σ_g P(fl(o_pred + e) = g)·(g − O_exact)² over the grid points g: for s much below the quantum it is
    the deterministic rounding of o_pred, for s above it s² + q²/12. The float64 golden's own error is
    bounded by a few float64 unit roundoffs of its magnitudes.
    """
    ex, Fv, out_fmt = cx.ex, cx.pol.vector, cx.opts.out_format
    F_last = out_fmt if narrower(out_fmt, Fv) else Fv
    o_pred = w.o_sys + nc.absorption
    sums = nc.sums
    nc_pre_var = sums.var.copy()  # random non-consistent errors before the final rounding
    pre_sd = np.sqrt(sums.var + cons.key_var + cons.block_var + cons.prefix_var)
    q_last = ulp(o_pred, F_last)
    final_ms = _rounded_ms(o_pred, pre_sd, q_last, ex.o_ref, F_last)
    outv = np.maximum(final_ms - (o_pred - ex.o_ref) ** 2 - pre_sd**2, 0.0)  # the rounding's own share
    outb = rbound(np.abs(w.o_sys) + cons.bound, Fv)
    if narrower(out_fmt, Fv):
        outb = outb + rbound(np.abs(w.o_sys) + cons.bound, out_fmt)
    sums.add("output", outv, outb)
    # error of the float64 golden itself
    gold_b = (
        4
        * float(F64.u)
        * (
            (cx.L + cx.d + 4) * np.abs(w.V).max(axis=0)[None, :]
            + np.outer(cx.q_norm * ex.tau * cx.k_norm.max(initial=0.0), np.ones(cx.dv)) * cons.cap
        )
    )
    brk.max_bound("golden", float(np.max(gold_b, initial=0.0)))
    # a flipped absorption moves a tile or ℓ_j by one quantum of a value on the output grid: it survives
    # the final rounding unchanged
    return Output(F_last, nc_pre_var, np.maximum(final_ms + flip_var, 0.0), gold_b, flip_var)


def accumulator_overflow(cx: Chunk, w: Weights, nc: NonConsistent) -> None:
    """Overflow of the block tiles P·V_j, of ℓ and O (raw or power-of-two renormalised accumulators) and
    of the output cast, on the exact values (docs/error-model.md §6)."""
    pol, ovf, Fv, Fo, out_fmt = cx.pol, cx.overflow, cx.pol.vector, cx.pol.matmul_out, cx.opts.out_format
    R, T = cx.R, cx.T
    pvf, frun, Lcum, Ncum = nc.tile_stored, nc.running_frame, w.Lcum, w.Ncum
    if nc.acc_bias is not None:
        # a narrow accumulator's biases can move whole blocks (docs/beyond.md §5.3): the running frame of
        # the weights themselves (the kernel's running maximum follows them), not the exact one
        run = np.maximum.accumulate(w.p.reshape(R, T, cx.n).max(axis=2), axis=1)
        frun = np.where(run > 0, 1.0 / np.where(run > 0, run, 1.0), 0.0)
    if np.max(np.abs(pvf), initial=0.0) >= _threshold(Fo) or (
        narrower(Fv, Fo) and np.max(np.abs(pvf), initial=0.0) >= _threshold(Fv)
    ):
        ovf["accumulator"] = True
    if pol.accum == "raw":
        if np.max(Lcum * frun, initial=0.0) >= _threshold(Fv):
            ovf["row_sum"] = True
        if np.max(np.abs(Ncum) * frun[:, :, None], initial=0.0) >= _threshold(Fv):
            ovf["accumulator"] = True
    else:
        lt = Lcum * frun
        with np.errstate(divide="ignore"):
            scale = np.ones((R, T))
            scale[:, 1:] = np.exp2(-np.floor(np.log2(np.where(lt[:, :-1] > 0, lt[:, :-1], 1.0))))
        if np.max(np.abs(Ncum) * (frun * scale)[:, :, None], initial=0.0) >= _threshold(Fv):
            ovf["accumulator"] = True
    if narrower(out_fmt, Fv) and np.max(np.abs(w.o_sys), initial=0.0) >= _threshold(out_fmt):
        ovf["output"] = True


def total_bound(
    cx: Chunk, w: Weights, cons: Consistent, nc: NonConsistent, out: Output, brk: Breakdown
) -> tuple[Arr, Arr]:
    """The "deterministic bound" of docs/error-model.md §5.1 per element, and the systematic error
    (o_sys plus the absorption, minus O_exact).

    The non-consistent roundings act on magnitudes of the perturbed run:
    Σ p'|v| <= e^{Ē}(Σ p|v| + X·max|v|); each is capped by the magnitude-only bound of :func:`_crude_nc`.
    """
    vabs_max = np.abs(w.V).max(axis=0)
    crude = _crude_nc(cx.pol, cx.T, cx.n, vabs_max, cx.R)
    infl = np.exp(cons.mean_log_bound) * (1.0 + cons.excess)
    nc_b = nc.sums.bound
    nc_b_total = np.minimum(nc_b * infl[:, None] + (infl - 1.0)[:, None] * crude, np.maximum(crude, nc_b))
    det = nc.absorption
    sys_err = w.sys_err + det
    # a flip that moves o towards O_exact lowers the mean square (flip_var < 0 there): the per-term
    # breakdown, a mean square, is floored at 0, as output_stage floors the total per element
    brk.var["absorption"] = max(float((det**2).sum()) + float(out.flip_var.sum()), 0.0)
    brk.bound["absorption"] = float(np.max(np.abs(det), initial=0.0))
    bound = np.abs(sys_err) + cons.bound + nc_b_total + out.golden_bound
    brk.bound["systematic"] = float(np.max(np.abs(sys_err), initial=0.0))
    brk.var["systematic"] = float((sys_err**2).sum())
    return bound, sys_err


# -- the mean square: linear, or the shadow simulation for nonlinear rows -----------------------------------------------
def mean_square(
    cx: Chunk,
    consts: ShiftConstants | None,
    tile: ScoreTile,
    expo: Exponentials,
    w: Weights,
    cons: Consistent,
    nc: NonConsistent,
    out: Output,
    sys_err: Arr,
) -> tuple[Arr, int, int, float]:
    """Per-element mean square error (docs/error-model.md §5.2, §8.11), the number of nonlinear rows, the
    number simulated, and the largest per-row log-weight standard deviation.

    Per row, the random log-weight spread relative to the dominant block (a common shift is harmless),
    weighted by the keys' weights: rows above ``mc_threshold`` are in the nonlinear regime and evaluated
    by :func:`_shadow_simulation`; the others keep the analytic mean square of :func:`output_stage`.
    Where there are more nonlinear rows than ``mc_max_rows``, half of the budget goes to the rows with the
    largest consistent bound, the other half is strided over the rest, which then stand for all of them
    (their linearised random part scaled by the ratio found on the strided sample).
    """
    R, T, opts = cx.R, cx.T, cx.opts
    blk = cx.block_of
    jstar, bv_tot, pv_tot = cons.dominant_block, cons.block_tot_var, cons.prefix_tot_var
    rr = np.arange(R)
    Vb_rel = np.where(
        np.arange(T)[None, :] == jstar[:, None],
        0.0,
        bv_tot
        + bv_tot[rr, jstar][:, None]
        + np.abs(np.cumsum(pv_tot, axis=1) - np.cumsum(pv_tot, axis=1)[rr, jstar][:, None]),
    )
    log_std = np.sqrt((w.p * np.where(w.keep, cons.key_tot_var + Vb_rel[:, blk], 0.0)).sum(axis=1))
    ms = out.mean_square
    nl = log_std > opts.mc_threshold
    n_nl = int(nl.sum())
    mc_rows = 0
    if n_nl and opts.mc_samples > 0:
        cand = np.nonzero(nl)[0]
        budget = opts.mc_max_rows
        if cand.size > budget:
            pot = cons.bound[cand].max(axis=1)
            order = cand[np.argsort(-pot, kind="stable")]
            top = order[: budget // 2]
            others = np.sort(order[budget // 2 :])
            strided = others[np.linspace(0, others.size - 1, budget - top.size).round().astype(int)]
            rows = np.unique(np.concatenate([top, strided]))
        else:
            others = np.zeros(0, dtype=int)
            strided = others
            rows = cand
        mc_rows = rows.size
        shadow = ShadowInputs(
            step=nc.step[rows],
            nc_var=out.pre_rounding_var[rows],
            last_format=out.last_format,
            p_cast_flush=expo.cast.flushed if expo.cast is not None else None,
            acc_bias=None if nc.acc_bias is None else nc.acc_bias[rows],
        )
        ms_mc = _shadow_simulation(cx, consts, tile, w.keep, rows, shadow)
        ms_rows = ms.copy()
        ms_rows[rows] = ms_mc
        if others.size > strided.size:
            pos = np.searchsorted(rows, strided)
            rnd_mc = np.maximum(ms_mc[pos] - sys_err[strided] ** 2, 0.0).sum()
            rnd_lin = np.maximum(ms[strided] - sys_err[strided] ** 2, 0.0).sum()
            ratio = float(rnd_mc / rnd_lin) if rnd_lin > 0 else 1.0
            rest = np.setdiff1d(others, strided)
            ms_rows[rest] = (sys_err[rest] ** 2) + np.maximum(ms[rest] - sys_err[rest] ** 2, 0.0) * ratio
        ms = ms_rows
    return ms, n_nl, mc_rows, float(np.max(log_std, initial=0.0))


# -- the analysis of one chunk -------------------------------------------------------------------------------------------
def analyse(pol: Policy, consts: ShiftConstants | None, ex: Exact, bl: Blocks, opts: Options) -> ChunkOut:
    """Bound, predicted mean square and overflow flags of ``pol`` on one chunk (see module docstring).

    The stages follow the kernel (docs/error-model.md §8): the score tile (step a, with K̃ and the
    pseudo-averages for PASA), the exponentials (d), the recovery (b, f), the bookkeeping trajectory
    (e–g), the rescaling factors (h), then the composition: systematic weights, consistent terms,
    non-consistent terms (h), the output (end), the overflow flags, the bound and the mean square. The
    order of the first five matters: the consistent terms are summed in the order they are entered.
    """
    cx = Chunk.of(pol, ex, bl, opts)
    shift = pol.shift and consts is not None
    # steps a (and b): the score tile
    tile = score_tile_shifted(cx, consts) if shift and consts is not None else score_tile_flash(cx)
    # step d: exp(S̃ − m_j) and the P cast
    expo = exponentials(cx, tile)
    # steps b, f: the recovery; steps e–g: the bookkeeping trajectory
    key_offsets = None
    if shift and consts is not None:
        if pol.recovery == "pseudo_average":
            pseudo_average_recovery(cx, consts, tile)
        else:
            key_offsets = key_mean_offsets(cx, consts, tile)
    if shift and consts is not None and pol.offset == "running" and pol.recovery == "pseudo_average":
        traj = running_offsets(cx, consts, tile)
    else:
        traj = lazy_offsets(cx, consts if shift else None, tile, key_offsets)
    if shift and pol.recovery == "pseudo_average" and pol.reduce == "pairwise":
        assert tile.pseudo_averages is not None
        if _pairwise_peak(tile.vector_scores, cx.n, cx.T, tile.pseudo_averages, pol) >= _threshold(
            pol.vector
        ):
            cx.overflow["shift"] = True
    # step h: the rescaling factors α, γ
    flushes = rescaling_factors(cx, traj, expo.fn_error)
    # composition
    brk = Breakdown()
    w = systematic_weights(cx, tile, expo, traj, flushes)
    cons = consistent_variance(cx, w, brk)
    nc = non_consistent(cx, expo, traj, flushes, w, brk)
    flip_var = marginal_absorption(cx, w, cons, nc)
    out = output_stage(cx, w, cons, nc, flip_var, brk)
    accumulator_overflow(cx, w, nc)
    bound, sys_err = total_bound(cx, w, cons, nc, out, brk)
    ms, n_nl, mc_rows, max_log_std = mean_square(cx, consts, tile, expo, w, cons, nc, out, sys_err)
    return ChunkOut(bound, ms, brk.var, brk.bound, cx.overflow, n_nl, mc_rows, max_log_std, cx.emulation)


def _rounded_ms(o: Arr, s: Arr, q: Arr, ref: Arr, F: FloatFormat) -> Arr:
    """E[(fl(o + e) − ref)²] for e ~ N(0, s²) rounded onto F's grid of spacing q around o."""
    g0 = round_array(o, F)
    big = s >= 4 * q
    out = (o - ref) ** 2 + s * s + q * q / 12.0
    small = ~big
    if small.any():
        os_, ss, qs, rs, g = o[small], s[small], q[small], ref[small], g0[small]
        K = int(min(17, np.ceil(4 * np.max(ss / qs, initial=0.0)) + 1))

        def phi(x: Arr) -> Arr:
            return 0.5 * (1.0 + erf(x))

        acc = np.zeros_like(os_)
        tot = np.zeros_like(os_)
        sd = np.maximum(ss, 1e-300) * np.sqrt(2.0)
        for kk in range(-K, K + 1):
            gk = g + kk * qs
            pk = phi((gk + qs / 2 - os_) / sd) - phi((gk - qs / 2 - os_) / sd)
            pk = np.where(ss > 0, pk, 1.0 if kk == 0 else 0.0)
            acc += pk * (gk - rs) ** 2
            tot += pk
        out[small] = acc / np.where(tot > 0, tot, 1.0)
    return out


def _running_sums(Y: Arr, Wb: Arr) -> tuple[Arr, Arr, Arr, Arr]:
    """Running sums of the tiles and block row sums over the blocks (axis 1), through each block
    (Ncum, Lcum) and before it (prevN, prevL: the history a step adds to)."""
    Ncum = np.cumsum(Y, axis=1)
    Lcum = np.cumsum(Wb, axis=1)
    prevN = np.zeros_like(Ncum)
    prevN[:, 1:] = Ncum[:, :-1]
    prevL = np.zeros_like(Lcum)
    prevL[:, 1:] = Lcum[:, :-1]
    return Ncum, Lcum, prevN, prevL


class AbsorptionMasks(TypedDict):
    """What :func:`_absorption` found dropped, and the sizes that decide it (normalised by ℓ)."""

    rest: Arr  # (R, T) W_j minus the block's top weight
    delta: Arr  # (R, T, dv) the tile minus its top key's contribution
    l_abs: Mask  # (R, T) ℓ_j stored as exactly 1
    pv_abs: Mask  # (R, T, dv) the tile stored as its top key's value
    absl: Mask  # (R, T) the smaller addend of ℓ_t = ℓ_{t−1} + ℓ_j dropped
    abso: Mask  # (R, T, dv) the same in O
    hist_small_l: Mask  # (R, T) the history is the smaller addend of ℓ
    hist_small_o: Mask  # (R, T, dv) the same in O
    small_l: Arr  # (R, T) the smaller addend of ℓ
    small_o: Arr  # (R, T, dv) the smaller addend of O
    top_index: IntArr  # (R, T) the block's key of largest weight (P = 1 exactly in the block frame)
    top_weight: Arr  # (R, T) its weight
    top_value: Arr  # (R, T, dv) its value


def _absorption(
    pw: Arr,
    V: Arr,
    n: int,
    T: int,
    step: Mask,
    Fv: FloatFormat,
    Fo: FloatFormat,
    *,
    Y: Arr | None = None,
    Wb: Arr | None = None,
    o: Arr | None = None,
    prev: tuple[Arr, Arr] | None = None,
) -> tuple[Arr, AbsorptionMasks]:
    """Deterministic error of o from contributions that are dropped because they lie below half a quantum.

    A tile P·V_j is its top key's value (P = 1 exactly) plus the rest, ℓ_j is 1 plus the rest: the rest is
    dropped when it is below half a quantum of that value. A step of the online recurrence adds two stored
    values (in the lazy/flash bookkeeping one of them scaled by exactly 1): the smaller addend is dropped
    when it is below half a quantum of the larger, in ℓ and separately in each column of O. A dropped
    denominator part d changes o by +o·d, a dropped numerator part y by −y (first order, normalised).
    ``Y``, ``Wb``, ``o`` and ``prev`` (prevN, prevL of :func:`_running_sums`) are computed from ``pw`` and
    ``V`` when not given. Returns the error and the masks of what was dropped (for the variance of the
    other roundings).
    """
    R, L = pw.shape
    dv = V.shape[1]
    uv = float(Fv.u)
    pr3 = pw.reshape(R, T, n)
    V3 = V.reshape(T, n, dv)
    if Y is None:
        Y = np.matmul(pr3.transpose(1, 0, 2), V3).transpose(1, 0, 2)
    if Wb is None:
        Wb = pr3.sum(axis=2)
    if o is None:
        o = Y.sum(axis=1)
    targ = pr3.argmax(axis=2)
    ptop = np.take_along_axis(pr3, targ[:, :, None], axis=2)[:, :, 0]
    vt = V3[np.arange(T)[None, :], targ]
    rest = np.maximum(Wb - ptop, 0.0)
    live_b = Wb > 0
    l_abs = live_b & (rest < uv * ptop)  # ℓ_j stored as exactly 1 (block frame)
    det = o * np.where(l_abs, rest, 0.0).sum(axis=1)[:, None]
    delta = Y - ptop[:, :, None] * vt  # the tile minus its top value (normalised)
    Fpv = Fo if float(Fo.u) >= uv else Fv
    pv_abs = live_b[:, :, None] & (np.abs(delta) < 0.5 * ulp(vt, Fpv) * ptop[:, :, None])
    det = det - np.where(pv_abs, delta, 0.0).sum(axis=1)
    # kernel frames from the weights themselves: the running state is relative to its largest key
    pmax_run = np.maximum.accumulate(ptop, axis=1)
    fr = np.where(pmax_run > 0, 1.0 / np.where(pmax_run > 0, pmax_run, 1.0), 1.0)
    prevN, prevL = _running_sums(Y, Wb)[2:] if prev is None else prev
    hist_small_l = prevL <= Wb
    small_l = np.minimum(prevL, Wb)
    large_l = np.maximum(prevL, Wb)
    absl = step & (small_l < 0.5 * ulp(large_l * fr, Fv) / fr)
    det = det + o * np.where(absl, small_l, 0.0).sum(axis=1)[:, None]
    hist_small_o = np.abs(prevN) <= np.abs(Y)
    small_o = np.where(hist_small_o, prevN, Y)
    large_o = np.where(hist_small_o, Y, prevN)
    fr3 = fr[:, :, None]
    abso = step[:, :, None] & (np.abs(small_o) < 0.5 * ulp(np.abs(large_o) * fr3, Fv) / fr3)
    det = det - np.where(abso, small_o, 0.0).sum(axis=1)
    masks = AbsorptionMasks(
        rest=rest,
        delta=delta,
        l_abs=l_abs,
        pv_abs=pv_abs,
        absl=absl,
        abso=abso,
        hist_small_l=hist_small_l,
        hist_small_o=hist_small_o,
        small_l=small_l,
        small_o=small_o,
        top_index=targ,
        top_weight=ptop,
        top_value=vt,
    )
    return det, masks


def grid_round(x: Arr, F: FloatFormat, phase: Arr) -> Arr:
    """Round x to F's grid shifted by ``phase`` quanta (0 <= phase < 1): quantisation with a random phase.

    One rounding of many values onto one grid keeps their order and makes errors of values closer than
    a quantum dependent; a random phase keeps every error's marginal uniform on one quantum.
    """
    q = ulp(x, F)
    return q * (np.rint(x / q + phase) - phase)


def _suffix(pv_tot: Arr) -> Arr:
    """Σ_{t>j} of prefix-level variances (a block is rescaled by every later history rescaling)."""
    out = np.zeros_like(pv_tot)
    if pv_tot.shape[1] > 1:
        out[:, :-1] = np.cumsum(pv_tot[:, ::-1], axis=1)[:, ::-1][:, 1:]
    return out


def _crude_nc(pol: Policy, T: int, n: int, vabs_max: Arr, R: int) -> Arr:
    """Bound of the non-consistent terms from magnitudes alone, valid for any weights.

    Every numerator value is a weighted mean of values (|·| <= max|v|) and every denominator fraction
    is <= 1 (|o| <= max|v|): tiles P·V and row sums (one rounding per block, fractions summing to 1),
    three roundings per online step in ℓ and three in O, P cast for P·V, final division and cast, and
    the fp32 accumulation of the tiles.
    """
    uv = float(pol.vector.u)
    uo = float(pol.matmul_out.u)
    um = float(pol.matmul_in.u)
    ua = float(pol.matmul_acc.u)
    lv = max(1, math.ceil(math.log2(n))) if pol.reduce == "pairwise" else 1
    per = (uo + uv) + (lv * uv + n * ua) + 6 * max(T - 1, 0) * uv + um + 2 * uv + n * ua
    return np.broadcast_to(1.01 * per * vabs_max[None, :], (R, vabs_max.shape[0])) + 2.0 * T * float(
        pol.vector.min_subnormal
    )


def _hull(ex: Exact, any_visible: Mask, o: Arr) -> tuple[Arr, Arr]:
    """Per row, the componentwise max and min of V over the row's visible keys (a prefix when causal)."""
    S2 = ex.v.shape[0]
    if ex.vis is None:
        vmax = np.broadcast_to(ex.v.max(axis=0), o.shape).copy()
        vmin = np.broadcast_to(ex.v.min(axis=0), o.shape).copy()
    else:
        last = np.clip(ex.pos + (S2 - ex.seq_q), -1, S2 - 1)
        cmax = np.maximum.accumulate(ex.v, axis=0)
        cmin = np.minimum.accumulate(ex.v, axis=0)
        li = np.clip(last, 0, S2 - 1)
        vmax, vmin = cmax[li], cmin[li]
        vmax = np.where((last >= 0)[:, None], vmax, o)
        vmin = np.where((last >= 0)[:, None], vmin, o)
    vmax = np.where(any_visible[:, None], vmax, o)
    vmin = np.where(any_visible[:, None], vmin, o)
    return vmax, vmin


def _pairwise_peak(st: Arr, n: int, T: int, mu_t: Arr, pol: Policy) -> float:
    """Largest partial sum of the vector-format binary tree of the block-mean reduction."""
    R = st.shape[0]
    x = st.reshape(R, T, n)
    blocks = x[:, :1] if pol.pseudo_average == "centered" else x
    width = 1 << (n - 1).bit_length()
    y = np.concatenate([blocks, np.zeros(blocks.shape[:2] + (width - n,))], axis=2) if width != n else blocks
    peak = 0.0
    while y.shape[2] > 1:
        h = y.shape[2] // 2
        y = y[..., :h] + y[..., h:]
        peak = max(peak, float(np.max(np.abs(y), initial=0.0)))
    if pol.pseudo_average == "centered" and T > 1:
        dev = x[:, 1:] - mu_t[:, :1, None]
        y = np.concatenate([dev, np.zeros(dev.shape[:2] + (width - n,))], axis=2) if width != n else dev
        while y.shape[2] > 1:
            h = y.shape[2] // 2
            y = y[..., :h] + y[..., h:]
            peak = max(peak, float(np.max(np.abs(y), initial=0.0)))
    return peak


@dataclass
class ShadowInputs:
    """What the shadow simulation takes from the linear analysis, for the simulated rows."""

    step: Mask  # (Rm, T) block t >= 1 is folded into a live history
    nc_var: Arr  # (Rm, dv) variance of the non-consistent roundings before the final one
    last_format: FloatFormat  # the format of the final rounding
    p_cast_flush: Mask | None  # (R, L) weights flushed by the P cast (all rows), or None
    acc_bias: Arr | None = None  # (Rm, dv) mean numerator error of a narrow P·V accumulator


def _shadow_simulation(
    cx: Chunk, consts: ShiftConstants | None, tile: ScoreTile, keep: Mask, rows: IntArr, sh: ShadowInputs
) -> Arr:
    """Mean square error over random rounding outcomes, without linearisation, for the nonlinear rows
    ``rows`` (docs/error-model.md §8.11, §8.12): a *stochastic shadow simulation* whose score tile is
    emulated; the rest is not an emulation of the kernel.

    Per sample (``mc_samples`` of them, seeded):

    * emulated, where the policy allows it (:func:`pasa_theory._scoreemu.applies`: wide accumulator, no
      smoothed keys): the score tile the vector unit holds — Q·τ_v for scale="q", K̃ for PASA, the fp32
      dot products, their rounding to ``matmul_out`` and the vector format, the scaling by τ_v — is
      computed from the inputs (:class:`pasa_theory._scoreemu.ScoreEmulator`, §8.12): exact wherever
      every fp32 summation order gives the same rounded value, a random one of the two candidates (per
      sample) only for the order-ambiguous elements; it replaces every ``scores.*`` term and the
      correlated K̃ part of ``recovery.kt`` (both are in the emulated tile);
    * random, on the real grid: the one-rounding-of-many-values terms that are not emulated (the rounded
      pseudo-averages; the score tile where the policy is not emulated) are quantised on the format's
      actual grid, shifted by a random phase per row (:func:`grid_round`): each error uniform on one
      quantum, order kept;
    * random, model: every other consistent term (exp argument, exp, bookkeeping, rescaling factors,
      and K̃ and Q·τ where not emulated) is an independent uniform error with the model's variance (E8);
      the recovery adds c times the block mean of the sampled (or emulated) score errors (E6);
    * exact: the softmax of the perturbed logits (E7, no linearisation) and the tiles and sums it gives;
    * decided on the sampled weights: which contributions are absorbed (:func:`_absorption`);
    * random, Gaussian: the remaining non-consistent errors (tile, row-sum and step roundings), with the
      linear analysis' variance;
    * exact: the final rounding of o onto the grid of the coarser of the vector and output formats
      (``round_array``), against the float64 golden.
    """
    pol, terms, opts = cx.pol, cx.terms, cx.opts
    T, n, blk = cx.T, cx.n, cx.block_of
    V = cx.bl.vpad
    s_err_names = tile.score_terms
    rng = np.random.default_rng(opts.seed + int(rows.size) * 7919)
    Rm = rows.size
    L = tile.logits.shape[1]
    dv = V.shape[1]
    zb = np.where(keep[rows], tile.logits[rows], -np.inf)
    vs = np.zeros((Rm, L))
    vo = np.zeros((Rm, L))
    grids: list[tuple[Arr, FloatFormat, float, bool]] = []
    emu = None
    if _scoreemu.applies(pol):
        emu = _scoreemu.ScoreEmulator(
            pol, consts, cx.ex.q[rows], cx.bl.kpad, n, cx.ex.tau, cx.tau_v, tile.vector_scores[rows]
        )
        cx.emulation = dict(
            tile=Rm * L,
            tile_straddles=emu.tile_straddles,
            kt=0 if emu.kt is None else int(emu.kt.rn.size),
            kt_straddles=emu.kt_straddles,
        )
    for name, var in terms.key_var.items():
        if emu is not None and name.startswith("scores."):
            continue  # in the emulated tile (§8.12)
        gv = np.zeros((Rm, L))
        for x, F, f in terms.key_grids.get(name, []):
            xr = np.broadcast_to(x, (terms.R, L))[rows]
            gv += f * f * rvar(xr, F)
            grids.append((xr, F, f, name in s_err_names))
        rem = np.maximum(var[rows] - gv, 0.0)
        if name in s_err_names:
            vs += rem
        else:
            vo += rem
    bvo = np.zeros((Rm, T))
    bgrids: list[tuple[Arr, FloatFormat, float]] = []
    c = consts.c if consts is not None else 0.0
    # the rounded pseudo-average fl_v(mean_j(stored tile)) from the emulated tile (§8.12)
    emu_mean = (
        emu is not None
        and consts is not None
        and pol.recovery == "pseudo_average"
        and pol.pseudo_average == "rounded"
        and pol.reduce == "acc"
    )
    for name, var in terms.block_var.items():
        if emu is not None and name == "recovery.kt":
            continue  # the emulated K̃ carries its correlations within a block exactly (§8.12)
        if emu_mean and name == "recovery.mean":
            continue  # emulated from the drawn tile below
        if name == "recovery.kt" and "scores.kt" in terms.key_var:
            # c·mean of the sampled K̃ errors enters through the score errors below; what the correlation
            # of those errors within a block adds (§8.4) is sampled here as a block-level error
            iid = c * c * terms.key_var["scores.kt"][rows].reshape(Rm, T, n).sum(axis=2) / n**2
            bvo += np.maximum(var[rows] - iid, 0.0)
            continue
        if name in ("recovery.kt", "recovery.scores"):
            continue
        gv = np.zeros((Rm, T))
        for x, F, f in terms.block_grids.get(name, []):
            xr = x[rows]
            gv += f * f * rvar(xr, F)
            bgrids.append((xr, F, f))
        bvo += np.maximum(var[rows] - gv, 0.0)
    pvo = sum((v[rows] for v in terms.prefix_var.values()), np.zeros((Rm, T)))
    shift_mean = bool(s_err_names) and pol.recovery == "pseudo_average"
    hs, ho = np.sqrt(3 * vs), np.sqrt(3 * vo)
    hb, hp = np.sqrt(3 * bvo), np.sqrt(3 * pvo)
    nc_sd = np.sqrt(sh.nc_var)
    V3 = V.reshape(T, n, dv)
    nm = None if sh.p_cast_flush is None else ~sh.p_cast_flush[rows]
    target = cx.ex.o_ref[rows]
    out = np.zeros((Rm, dv))
    any_s, any_o = bool(np.any(hs > 0)), bool(np.any(ho > 0))
    for _ in range(opts.mc_samples):
        es = hs * rng.uniform(-1, 1, (Rm, L)) if any_s else np.zeros((Rm, L))
        eo = ho * rng.uniform(-1, 1, (Rm, L)) if any_o else 0.0
        for xr, F, f, is_s in grids:
            e = f * (grid_round(xr, F, rng.uniform(0, 1, (Rm, 1))) - xr)
            e = np.where(np.isfinite(e), e, 0.0)
            if is_s:
                es = es + e
            else:
                eo = eo + e
        e_tile = None
        if emu is not None:
            e_tile = emu.sample(rng)
            if s_err_names:
                es = es + e_tile
            else:
                eo = eo + e_tile
        zeta = hb * rng.uniform(-1, 1, (Rm, T))
        if emu_mean and emu is not None and e_tile is not None:
            assert tile.pseudo_averages is not None
            mu_ex = tile.pseudo_averages[rows]
            zeta = zeta + c * (emu.block_means(e_tile, pol.vector, pol.reduce_format, rng) - mu_ex)
            # the other (modelled) score errors reach the block through c·mean as before
            zeta = zeta + c * (es - e_tile).reshape(Rm, T, n).mean(axis=2)
        elif shift_mean:
            zeta = zeta + c * es.reshape(Rm, T, n).mean(axis=2)
        for xr, F, f in bgrids:
            zeta = zeta + f * (grid_round(xr, F, rng.uniform(0, 1, (Rm, 1))) - xr)
        eta = hp * rng.uniform(-1, 1, (Rm, T))
        z = zb + es + eo + (zeta + _suffix(eta))[:, blk]
        zm = z.max(axis=1, keepdims=True)
        zm = np.where(np.isfinite(zm), zm, 0.0)
        w = np.exp(z - zm)
        den = w.sum(axis=1, keepdims=True)
        pw = w / np.where(den > 0, den, 1.0)
        pr3 = pw.reshape(Rm, T, n)
        Y = np.matmul(pr3.transpose(1, 0, 2), V3).transpose(1, 0, 2)
        Wb = pr3.sum(axis=2)
        o1 = Y.sum(axis=1)
        det, _ = _absorption(pw, V, n, T, sh.step, pol.vector, pol.matmul_out, Y=Y, Wb=Wb, o=o1)
        if nm is not None:
            o1 = np.where(nm, pw, 0.0) @ V
        o2 = o1 + det + nc_sd * rng.standard_normal((Rm, dv))
        if sh.acc_bias is not None:
            o2 = o2 + sh.acc_bias
        fin = round_array(o2, sh.last_format)
        out += (fin - target) ** 2
    return out / opts.mc_samples
