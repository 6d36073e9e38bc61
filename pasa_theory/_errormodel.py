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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .formats import FloatFormat, get_format, quantum_array, round_array
from .policies import Policy, ShiftConstants

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


def rbound(x: np.ndarray, F: FloatFormat) -> np.ndarray:
    """Standard-model bound on |fl(x) − x|: u|x| + min_sub/2 (Higham 2002, eq. (2.4), with underflow)."""
    u, ms = _c(F)
    ax = np.abs(x)
    return np.where(np.isfinite(ax), u * ax + 0.5 * ms, 0.0)


def rvar(x: np.ndarray, F: FloatFormat) -> np.ndarray:
    """Variance ulp(x)²/12 of the rounding error of x (0 below min_sub/2: deterministic flush)."""
    _, ms = _c(F)
    ax = np.abs(x)
    q = ulp(ax, F)
    return np.where(np.isfinite(ax) & (ax >= 0.5 * ms), q * q / 12.0, 0.0)


def rvb(x: np.ndarray, F: FloatFormat) -> tuple[np.ndarray, np.ndarray]:
    """(:func:`rvar`, :func:`rbound`) of x in one pass over its magnitude."""
    u, ms = _c(F)
    ax = np.abs(x)
    q = ulp(ax, F)
    fin = np.isfinite(ax)
    var = np.where(fin & (ax >= 0.5 * ms), q * q * (1.0 / 12.0), 0.0)
    bnd = np.where(fin, u * ax + 0.5 * ms, 0.0)
    return var, bnd


def exact_sub2(a: np.ndarray, b: np.ndarray, F: FloatFormat) -> tuple[np.ndarray, np.ndarray]:
    """:func:`exact_sub` with margins 1 (for variances) and 4 (for bounds), sharing the quanta."""
    with np.errstate(invalid="ignore"):
        d = a - b
        ok = np.isfinite(d) & np.isfinite(a) & np.isfinite(b)
    m = np.minimum(ulp(a, F), ulp(b, F))
    qd = ulp(d, F)
    return ok & (qd <= m), ok & (qd * 4.0 <= m)


def exact_sub(a: np.ndarray, b: np.ndarray, F: FloatFormat, margin: float = 1.0) -> np.ndarray:
    """Where fl(a − b) of two F-values is exact: ulp(a − b)·margin <= min(ulp(a), ulp(b)).

    The difference of two floats is a multiple of the smaller quantum, so it is representable when
    its own quantum is not larger (Sterbenz's lemma is the special case b/2 <= a <= 2b). ``margin``
    > 1 keeps the claim safe for operands that carry rounding errors (binade crossings).
    """
    with np.errstate(invalid="ignore"):
        d = a - b
        ok = np.isfinite(d) & np.isfinite(a) & np.isfinite(b)
    return ok & (ulp(d, F) * margin <= np.minimum(ulp(a, F), ulp(b, F)))


def erf(x: np.ndarray) -> np.ndarray:
    """Vectorised error function (Abramowitz & Stegun 7.1.26, |error| <= 1.5e-7), for probabilities."""
    x = np.asarray(x, dtype=np.float64)
    sgn = np.sign(x)
    a = np.minimum(np.abs(x), 30.0)  # erf(30) = 1 to double precision
    t_ = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (
        ((((1.061405429 * t_ - 1.453152027) * t_) + 1.421413741) * t_ - 0.284496736) * t_ + 0.254829592
    ) * t_ * np.exp(-a * a)
    return sgn * y


def gamma(k: float | np.ndarray, F: FloatFormat) -> Any:
    """γ_k = k·u/(1 − k·u) (Higham 2002, Lemma 3.1)."""
    u = float(F.u)
    ku = np.asarray(k, dtype=np.float64) * u
    return np.where(ku < 1, ku / np.maximum(1 - ku, 1e-300), np.inf)


def narrower(a: FloatFormat, b: FloatFormat) -> bool:
    """Whether a cast from format b to format a rounds (a has fewer bits or a smaller range)."""
    return a.p < b.p or a.emax < b.emax


def log_rel(rel: np.ndarray) -> np.ndarray:
    """A log-space bound E with |log(1+δ)| <= E for |δ| <= rel (rel < 1)."""
    r = np.minimum(rel, 0.999)
    return -np.log1p(-r)


# -- exact context ---------------------------------------------------------------------------------------
@dataclass
class Exact:
    """Exact quantities of one (batch, KV head, query-row chunk): R rows, S2 keys."""

    q: np.ndarray  # (R, d) queries as fed to the kernel (rounded to the matmul format)
    k: np.ndarray  # (S2, d)
    v: np.ndarray  # (S2, dv)
    pos: np.ndarray  # (R,) query positions (for the causal rule)
    tau: float
    seq_q: int
    causal: bool
    s: np.ndarray = field(init=False)  # (R, S2) τ·q·k
    vis: np.ndarray | None = field(init=False)
    p: np.ndarray = field(init=False)  # softmax weights
    lse: np.ndarray = field(init=False)
    o: np.ndarray = field(init=False)  # exact output (R, dv)

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
    idx: np.ndarray  # (L,) real key index of each padded column, −1 for zero padding
    real: np.ndarray  # (L,) column is a real key
    s: np.ndarray  # (R, L) scores of padded columns (pads: their source key's, or 0)
    vis: np.ndarray  # (R, L) visible (real and not masked)
    kpad: np.ndarray  # (L, d)
    vpad: np.ndarray  # (L, dv)
    mu: np.ndarray  # (R, T) block means of s over all n columns (before masks)
    mhat: np.ndarray  # (R, T) block max of visible scores (−inf if none)


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


# -- per-policy analysis -------------------------------------------------------------------------------------
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

    bound: np.ndarray  # (R, dv)
    ms: np.ndarray  # (R, dv) predicted mean-square error
    terms_var: dict[str, float]  # Σ over elements of each term's linearised variance
    terms_bound: dict[str, float]  # max over elements of each term's first-order bound
    overflow: dict[str, bool]
    nonlinear_rows: int
    mc_rows: int
    max_log_std: float


class _Acc:
    """Collects key-level, block-level and prefix-level consistent terms (variance, log-space bound)."""

    def __init__(self, R: int, L: int, T: int) -> None:
        self.R, self.L, self.T = R, L, T
        self.key_v: dict[str, np.ndarray] = {}
        self.key_b: dict[str, np.ndarray] = {}
        self.blk_v: dict[str, np.ndarray] = {}
        self.blk_b: dict[str, np.ndarray] = {}
        self.pre_v: dict[str, np.ndarray] = {}
        self.pre_b: dict[str, np.ndarray] = {}
        #: single roundings of many values on one grid (modelled in Monte Carlo as quantisation with a
        #: random grid phase): name -> list of (values, format, factor to score units)
        self.grid_key: dict[str, list] = {}
        self.grid_blk: dict[str, list] = {}

    @staticmethod
    def _add(dv: dict, db: dict, name: str, var: Any, bnd: Any, shape: tuple) -> None:
        var = np.broadcast_to(np.asarray(var, dtype=np.float64), shape)
        bnd = np.broadcast_to(np.asarray(bnd, dtype=np.float64), shape)
        if name in dv:
            dv[name] = dv[name] + var
            db[name] = db[name] + bnd
        else:
            dv[name] = np.array(var)
            db[name] = np.array(bnd)

    def key(self, name: str, var: Any, bnd: Any, grid: tuple | None = None) -> None:
        self._add(self.key_v, self.key_b, name, var, bnd, (self.R, self.L))
        if grid is not None:
            self.grid_key.setdefault(name, []).append(grid)

    def blk(self, name: str, var: Any, bnd: Any, grid: tuple | None = None) -> None:
        self._add(self.blk_v, self.blk_b, name, var, bnd, (self.R, self.T))
        if grid is not None:
            self.grid_blk.setdefault(name, []).append(grid)

    def pre(self, name: str, var: Any, bnd: Any) -> None:
        self._add(self.pre_v, self.pre_b, name, var, bnd, (self.R, self.T))


def _tau_v(pol: Policy, tau: float) -> float:
    return float(round_array(np.array([tau]), pol.vector)[0])


def analyse(pol: Policy, consts: ShiftConstants | None, ex: Exact, bl: Blocks, opts: Options) -> ChunkOut:
    """Bound, predicted mean square and overflow flags of ``pol`` on one chunk (see module docstring)."""
    R, L = bl.s.shape
    n, T = bl.n, bl.T
    dv = ex.v.shape[1]
    d = ex.q.shape[1]
    Fm, Fa, Fo, Fv = pol.matmul_in, pol.matmul_acc, pol.matmul_out, pol.vector
    Fr = pol.reduce_format
    uv = float(Fv.u)
    tau = ex.tau
    place = pol.placement
    tau_v = _tau_v(pol, tau) if place in ("q", "scores") else tau
    rho = tau_v / tau
    blk = np.repeat(np.arange(T), n)  # block of each padded column
    vis = bl.vis
    s = bl.s
    acc = _Acc(R, L, T)
    ovf = {st: False for st in ("input", "scores", "shift", "exp", "row_sum", "accumulator", "output")}
    thr = lambda F: F.overflow_threshold_float  # noqa: E731
    qn = np.sqrt((ex.q**2).sum(axis=1))  # ‖q‖ per row
    kn = np.sqrt((bl.kpad**2).sum(axis=1))  # ‖k‖ per padded column

    # ---- score formation: the score the vector unit sees (sv) and the recovered logits (z_sys) -----------
    shift = pol.shift and consts is not None
    mS = None  # frame-local block maxima of the vector-unit score
    if not shift:
        if pol.smooth_k:
            # K' = fl(K − fl(mean K)) in the vector format; the mean's offset is a row constant (harmless)

            kbar = round_array(ex.k.mean(axis=0, keepdims=True), Fv)
            kprime = bl.kpad - kbar
            kprime = np.where(bl.idx[:, None] >= 0, kprime, 0.0)
            raw = ex.q @ kprime.T  # unscaled score of the smoothed keys
            acc.key(
                "scores.input",
                tau_v**2 * ((ex.q**2) @ rvar(kprime, Fv).T),
                tau_v * (np.abs(ex.q) @ rbound(kprime, Fv).T),
            )
            kpn = np.sqrt((kprime**2).sum(axis=1))
        else:
            raw = s / tau if place == "scores" else None
            kpn = kn
        if place == "scores":
            sv = rho * tau * raw  # fl_v(raw·τ_v) exact value
            v_, b_ = rvb(raw, Fo)
            acc.key("scores.round", tau_v**2 * v_, tau_v * b_, grid=(raw, Fo, tau_v))
            if narrower(Fv, Fo):
                acc.key("scores.round", tau_v**2 * rvar(raw, Fv), tau_v * rbound(raw, Fv))
            acc.key("scores.scale", *rvb(sv, Fv), grid=(sv, Fv, 1.0))
            acc.key("scores.acc", 0.0, gamma(d, Fa) * tau_v * np.outer(qn, kpn))
            if np.nanmax(np.abs(raw), initial=0.0) >= thr(Fo) or (
                narrower(Fv, Fo) and np.nanmax(np.abs(raw), initial=0.0) >= thr(Fv)
            ):
                ovf["scores"] = True
            elif np.nanmax(np.abs(sv), initial=0.0) >= thr(Fv):
                ovf["exp"] = True
            z_sys = rho * bl.s if not pol.smooth_k else rho * tau * raw
        else:  # "q": Q pre-scaled on the vector unit, then an operand
            qs = ex.q * tau_v
            vq = rvar(qs, Fv)
            bq = rbound(qs, Fv)
            if narrower(Fm, Fv):
                vq = vq + rvar(qs, Fm)
                bq = bq + rbound(qs, Fm)
            kbar = ex.k.mean(axis=0, keepdims=True)
            kc = np.where(bl.idx[:, None] >= 0, bl.kpad - kbar, 0.0)
            acc.key("scores.input", vq @ (kc**2).T, bq @ np.abs(kc).T)
            sv = rho * s
            acc.key("scores.round", *rvb(sv, Fo), grid=(sv, Fo, 1.0))
            if narrower(Fv, Fo):
                acc.key("scores.round", rvar(sv, Fv), rbound(sv, Fv))
            acc.key("scores.acc", 0.0, gamma(d, Fa) * np.outer(np.sqrt((qs**2).sum(axis=1)), kn))
            qq = round_array(round_array(qs, Fv), Fm)
            if not np.all(np.isfinite(qq)) or np.max(np.abs(qq @ ex.k.T), initial=0.0) >= thr(Fo):
                ovf["scores"] = True
            z_sys = rho * s
        mS = np.where(vis, sv, -np.inf).reshape(R, T, n).max(axis=2)
        s_err_names: tuple[str, ...] = ()
    else:
        a, b, c, sigma = consts.a, consts.b, consts.c, consts.sigma
        bn = b * n
        mu_hat = bl.mu  # block means of τq·k over the padded block
        mu_col = mu_hat[:, blk]
        f = tau_v if place == "scores" else 1.0  # factor from the matmul output to score units
        kb = bl.kpad.reshape(T, n, d).mean(axis=1)  # block means of the keys
        kt = a * bl.kpad - bn * kb[blk]  # K̃ = M_r K, exact (M_r = aI − bJ)
        vk = rvar(kt, Fo)
        bk = rbound(kt, Fo)
        if narrower(Fm, Fo):
            vk = vk + rvar(kt, Fm)
            bk = bk + rbound(kt, Fm)
        absk = np.abs(bl.kpad).reshape(T, n, d)
        bk = bk + gamma(n, Fa) * (
            abs(consts.diag) * np.abs(bl.kpad) + abs(consts.off) * absk.sum(axis=1)[blk]
        )
        if place == "q":
            qs = ex.q * tau_v
            vq = rvar(qs, Fv)
            bq = rbound(qs, Fv)
            if narrower(Fm, Fv):
                vq, bq = vq + rvar(qs, Fm), bq + rbound(qs, Fm)
            acc.key("scores.input", vq @ (kt**2).T, bq @ np.abs(kt).T)
            qq = qs
        else:
            qq = ex.q
        acc.key("scores.kt", f**2 * ((qq**2) @ vk.T), f * (np.abs(qq) @ bk.T))
        # S̃ in score units: ρ·(a·s − bn·μ)/σ; for "scores" the matmul output is S̃/τ_v
        st = rho * (a * s - bn * mu_col) / sigma
        st_raw = st / f
        v_, b_ = rvb(st_raw, Fo)
        acc.key("scores.round", f**2 * v_, f * b_, grid=(st_raw, Fo, f))
        if narrower(Fv, Fo):
            acc.key("scores.round", f**2 * rvar(st_raw, Fv), f * rbound(st_raw, Fv))
        if place == "scores":
            acc.key("scores.scale", *rvb(st, Fv), grid=(st, Fv, 1.0))
        ktn = np.sqrt((kt**2).sum(axis=1))
        acc.key("scores.acc", 0.0, gamma(d, Fa) * f * np.outer(np.sqrt((qq**2).sum(axis=1)), ktn))
        # overflow of K̃ and of the score tile (operands as the kernel rounds them)

        kt_r = round_array(round_array(kt, Fo), Fm)
        if not np.all(np.isfinite(kt_r)):
            ovf["scores"] = True
        else:
            qm = round_array(round_array(qq, Fv), Fm) if place == "q" else qq
            if np.max(np.abs(qm @ kt_r.T), initial=0.0) >= thr(Fo):
                ovf["scores"] = True
            elif place == "scores" and np.max(np.abs(st), initial=0.0) >= thr(Fv):
                ovf["exp"] = True
        s_err_names = ("scores.input", "scores.kt", "scores.round", "scores.scale", "scores.acc")
        mS = np.where(vis, st, -np.inf).reshape(R, T, n).max(axis=2)
        mu_t = st.reshape(R, T, n).mean(axis=2)  # block means of S̃ (the pseudo-averages)
        if pol.recovery == "key_mean":
            z_sys = rho * (a * s - bn * mu_hat[:, :1]) / sigma
        else:
            z_sys = rho * (a * s + (c * (a - bn) - bn) * mu_col) / sigma

    # ---- exp argument and P ------------------------------------------------------------------------------------
    mcol = mS[:, blk]
    sv_col = st if shift else sv
    with np.errstate(invalid="ignore"):
        x = np.where(vis, sv_col - mcol, -np.inf)  # argument of exp (<= 0)
    xf = np.where(vis, x, 0.0)
    e1_, e4_ = exact_sub2(sv_col, mcol, Fv)
    v_, b_ = rvb(xf, Fv)
    ex_var = np.where(vis & ~e1_, v_, 0.0)
    ex_bnd = np.where(vis & ~e4_, b_, 0.0)
    acc.key("exp.arg", ex_var, ex_bnd)
    P = np.where(vis, np.exp(xf), 0.0)
    ms_v = float(Fv.min_subnormal)
    flush_v = vis & (P < 0.5 * ms_v)
    fn_err = 2.0 * float(F32.u) if narrower(Fv, F32) else 2.0 * uv  # exp's own error (fp32 libm or 1 ulp)
    live = vis & ~flush_v & (xf != 0)
    Ps = np.where(live, P, 1.0)
    relv = np.where(live, rvar(Ps, Fv) / Ps**2 + (fn_err**2) / 3.0, 0.0)
    relb = np.where(live, (uv * Ps + 0.5 * ms_v) / Ps + fn_err, 0.0)
    acc.key("exp.p", relv, log_rel(relb))
    p_cast = Fv is not Fm and narrower(Fm, Fv)  # P rounded again for P·V (numerator only)
    if p_cast:
        msm = float(Fm.min_subnormal)
        flush_m = vis & ~flush_v & (P < 0.5 * msm)
        livem = vis & ~flush_v & ~flush_m & (xf != 0)
        Pm = np.where(livem, P, 1.0)
        num_relv = np.where(livem, rvar(Pm, Fm) / Pm**2, 0.0)
        num_relb = np.where(livem, (float(Fm.u) * Pm + 0.5 * msm) / Pm, 0.0)
    else:
        flush_m = None

    # ---- pseudo-average recovery (block level) -----------------------------------------------------------------
    if shift:
        if pol.recovery == "pseudo_average":
            sv_keys = {k: v for k, v in acc.key_v.items() if k in s_err_names}
            sb_keys = {k: v for k, v in acc.key_b.items() if k in s_err_names}
            for name in s_err_names:
                if name not in sv_keys:
                    continue
                tgt = "recovery.kt" if name == "scores.kt" else "recovery.scores"
                vsum = sv_keys[name].reshape(R, T, n).sum(axis=2)
                bsum = sb_keys[name].reshape(R, T, n).sum(axis=2)
                acc.blk(tgt, c * c * vsum / n**2, c * bsum / n)
            absmean = np.abs(st).reshape(R, T, n).mean(axis=2)
            acc.blk("recovery.mean", 0.0, c * gamma(n, Fr) * absmean)
            if pol.pseudo_average == "rounded":
                acc.blk("recovery.mean", c * c * rvar(mu_t, Fv), c * rbound(mu_t, Fv), grid=(mu_t, Fv, c))
            if pol.reduce == "pairwise":
                levels = max(1, math.ceil(math.log2(n)))
                dev = st.reshape(R, T, n) - (mu_t[:, :, None] if pol.pseudo_average == "centered" else 0.0)
                sq = (dev**2).sum(axis=2)
                ab = np.abs(dev).sum(axis=2)
                acc.blk("recovery.mean", c * c * levels * (uv**2 / 3.0) * sq / n**2, c * levels * uv * ab / n)
                if pol.pseudo_average == "centered":
                    acc.blk(
                        "recovery.mean",
                        c * c * rvar(dev, Fv).sum(axis=2) / n**2,
                        c * rbound(dev, Fv).sum(axis=2) / n,
                    )
        else:  # key_mean: δ_j = fl(q·Δk_j), Δk_j = fl(b·n·(k̄_j − k̄_0))
            dk = bn * (kb - kb[:1])
            vdk = rvar(dk, Fm) + rvar(dk, F32)
            bdk = rbound(dk, Fm) + rbound(dk, F32) + gamma(n, Fr) * bn * absk.mean(axis=1)
            vblk = f**2 * ((qq**2) @ vdk.T)
            bblk = f * (np.abs(qq) @ bdk.T)
            dkey = rho * bn * (mu_hat - mu_hat[:, :1]) / sigma
            acc.blk("recovery.keymean", vblk + f**2 * rvar(dkey / f, Fo), bblk + f * rbound(dkey / f, Fo))
            if place == "scores":
                acc.blk("recovery.keymean", rvar(dkey, Fv), rbound(dkey, Fv))
            if np.max(np.abs(dkey / f), initial=0.0) >= thr(Fo):
                ovf["shift"] = True

    # ---- bookkeeping trajectory (exact arithmetic), flushes, step roundings ---------------------------------------
    mhat = bl.mhat
    M_run = np.maximum.accumulate(mhat, axis=1)  # running max of the recovered scores
    take = np.zeros((R, T), dtype=bool)
    take[:, 0] = True
    with np.errstate(invalid="ignore"):
        take[:, 1:] = mhat[:, 1:] > M_run[:, :-1]
    running = shift and pol.offset == "running" and pol.recovery == "pseudo_average"
    shift_peak = np.zeros(R)
    if running:
        A = np.cumsum(mu_t, axis=1) / np.arange(1, T + 1)
        dj = c * (mu_t - A)
        dp = np.zeros((R, T))
        dp[:, 1:] = c * (A[:, :-1] - A[:, 1:])
        Rb = mS + c * mu_t
        ref = np.maximum.accumulate(Rb, axis=1) - c * A
        # block level: μ̃ − A, ×c, mj − ref, + dj ; prefix level: A_prev − A, ×c, m − ref, + dp
        e1 = mu_t - A
        acc.blk(
            "bookkeeping",
            c * c * np.where(exact_sub(mu_t, A, Fv), 0.0, rvar(e1, Fv)) + rvar(dj, Fv),
            c * np.where(exact_sub(mu_t, A, Fv, 4.0), 0.0, rbound(e1, Fv)) + rbound(dj, Fv),
        )
        with np.errstate(invalid="ignore"):
            g1 = np.where(np.isfinite(mS), mS - ref, 0.0)
            g2 = g1 + dj
        acc.blk(
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
        acc.pre("bookkeeping", pv_, pb_)
        alpha_on = np.zeros((R, T), dtype=bool)
        alpha_on[:, 1:] = True
        gamma_on = np.zeros((R, T), dtype=bool)
        gamma_on[:, 1:] = True
        shift_peak = np.maximum(np.abs(dj).max(axis=1), np.abs(dp).max(axis=1))
        with np.errstate(invalid="ignore"):
            cand_b = np.where(np.isfinite(mS), mS + dj, 0.0)
            cand_p = np.zeros((R, T))
            cand_p[:, 1:] = np.where(np.isfinite(ref[:, :-1]), ref[:, :-1] + dp[:, 1:], 0.0)
        run_res = dict(blk=rvar(cand_b, Fv), pre=rvar(cand_p, Fv))
    else:
        alpha_on = np.zeros((R, T), dtype=bool)
        gamma_on = np.zeros((R, T), dtype=bool)
        alpha_on[:, 1:] = take[:, 1:]
        gamma_on[:, 1:] = ~take[:, 1:]
        mh = mS[:, 0].copy()
        phi = np.zeros(R)
        if shift and pol.recovery == "pseudo_average":
            Aref = mu_t[:, 0].copy()
            rc = pol.recenter_at
        bv = np.zeros((R, T))
        bb = np.zeros((R, T))
        prv = np.zeros((R, T))
        prb = np.zeros((R, T))
        for t in range(1, T):
            live_t = np.isfinite(mhat[:, t])
            if shift and pol.recovery == "pseudo_average":
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
                dd = dkey[:, t]
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
        acc.blk("bookkeeping", bv, bb)
        acc.pre("bookkeeping", prv, prb)
    if shift and np.max(shift_peak, initial=0.0) >= thr(Fv):
        ovf["shift"] = True
    if shift and pol.recovery == "pseudo_average" and pol.reduce == "pairwise":
        if _pairwise_peak(st, n, T, mu_t, pol) >= thr(Fv):
            ovf["shift"] = True

    # rescaling factors γ_t = e^{m̂_t − M_t} (block) and α_t = e^{M_{t−1} − M_t} (history)
    with np.errstate(invalid="ignore", over="ignore"):
        gfac = np.where(np.isfinite(mhat), np.exp(mhat - M_run), 0.0)
        afac = np.ones((R, T))
        afac[:, 1:] = np.exp(np.where(np.isfinite(M_run[:, :-1]), M_run[:, :-1] - M_run[:, 1:], -np.inf))
    g_flush = gamma_on & (gfac < 0.5 * ms_v)
    a_flush = alpha_on & (afac < 0.5 * ms_v)
    g_live = gamma_on & ~g_flush & (gfac < 1.0)
    a_live = alpha_on & ~a_flush & (afac < 1.0)
    gs = np.where(g_live, gfac, 1.0)
    as_ = np.where(a_live, afac, 1.0)
    acc.blk(
        "exp.rescale",
        np.where(g_live, rvar(gs, Fv) / gs**2 + fn_err**2 / 3, 0.0),
        np.where(g_live, log_rel((uv * gs + 0.5 * ms_v) / gs + fn_err), 0.0),
    )
    acc.pre(
        "exp.rescale",
        np.where(a_live, rvar(as_, Fv) / as_**2 + fn_err**2 / 3, 0.0),
        np.where(a_live, log_rel((uv * as_ + 0.5 * ms_v) / as_ + fn_err), 0.0),
    )

    # ---- systematic weights (constants and deterministic flushes), sensitivities ----------------------------------
    keep = vis & ~flush_v
    if g_flush.any():
        keep &= ~g_flush[:, blk]
    if a_flush.any():
        # α_t flushes: every block before t is dropped
        dead = np.zeros((R, T), dtype=bool)
        for t in range(1, T):
            dead[:, :t] |= a_flush[:, t : t + 1]
        keep &= ~dead[:, blk]
    zs = np.where(keep, z_sys, -np.inf)
    zmax = zs.max(axis=1)
    zmax = np.where(np.isfinite(zmax), zmax, 0.0)
    w = np.exp(zs - zmax[:, None])
    wden = w.sum(axis=1)
    wden_safe = np.where(wden > 0, wden, 1.0)
    pw = w / wden_safe[:, None]
    V = bl.vpad
    Y = np.matmul(pw.reshape(R, T, n).transpose(1, 0, 2), V.reshape(T, n, dv)).transpose(1, 0, 2)
    Wb = pw.reshape(R, T, n).sum(axis=2)
    o_cons = Y.sum(axis=1)
    o_sys = o_cons
    if p_cast and flush_m is not None and (flush_m & keep).any():
        pn = np.where(flush_m, 0.0, pw)
        o_sys = pn @ V
    sys_err = o_sys - ex.o_ref
    B = Y - Wb[:, :, None] * o_cons[:, None, :]
    Pref = np.cumsum(B, axis=1)
    Ncum, Lcum, prevN, prevL = _running_sums(Y, Wb)

    # ---- consistent terms: totals -------------------------------------------------------------------------------
    kv_tot = np.zeros((R, L))
    kb_tot = np.zeros((R, L))
    for name in acc.key_v:
        kv_tot += acc.key_v[name]
        kb_tot += acc.key_b[name]
    kv_tot = np.where(keep, kv_tot, 0.0)
    kb_tot = np.where(keep, kb_tot, 0.0)
    bv_tot = sum(acc.blk_v.values(), np.zeros((R, T)))
    bb_tot = sum(acc.blk_b.values(), np.zeros((R, T)))
    pv_tot = sum(acc.pre_v.values(), np.zeros((R, T)))
    pb_tot = sum(acc.pre_b.values(), np.zeros((R, T)))

    p2 = pw * pw
    wkey = p2 * kv_tot
    Vsq = V * V
    m1 = wkey @ Vsq
    m2 = wkey @ V
    m0 = wkey.sum(axis=1)
    key_var = np.maximum(m1 - 2 * o_cons * m2 + (o_cons**2) * m0[:, None], 0.0)  # Σ p²σ²(v − o)²
    blk_var = np.einsum("rt,rtd->rd", bv_tot, B * B)
    prev = np.zeros_like(Pref)
    prev[:, 1:] = Pref[:, :-1]
    pre_var = np.einsum("rt,rtd->rd", pv_tot, prev * prev)

    # breakdown of the consistent variance
    terms_var: dict[str, float] = {}
    terms_bound: dict[str, float] = {}
    share_den = (p2 * kv_tot).sum(axis=1)
    for name in acc.key_v:
        sh = (p2 * np.where(keep, acc.key_v[name], 0.0)).sum(axis=1) / np.where(share_den > 0, share_den, 1.0)
        terms_var[name] = terms_var.get(name, 0.0) + float((key_var.sum(axis=1) * sh).sum())
    for name in acc.blk_v:
        terms_var[name] = terms_var.get(name, 0.0) + float(np.einsum("rt,rtd->", acc.blk_v[name], B * B))
    for name in acc.pre_v:
        terms_var[name] = terms_var.get(name, 0.0) + float(
            np.einsum("rt,rtd->", acc.pre_v[name], prev * prev)
        )

    # ---- consistent terms: deterministic bound (rigorous in the log-weights, capped by the hull) ----------------
    # Bound relative to the dominant block j* (a perturbation common to all keys is harmless): block j
    # moves against j* by at most Z_j + Z_j* plus the history rescalings between them, H_(j, j*].
    jstar = Wb.argmax(axis=1)
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
    vmax, vmin = _hull(ex, keep.any(axis=1), o_cons)
    cap = np.maximum(vmax - o_cons, o_cons - vmin)
    cons_b = np.minimum(cons_b, cap)
    # first-order bound of each consistent term (for the breakdown): key-level terms share the key-level
    # bound in proportion to Σ_r p_r·E_r
    key_b1 = pw * kb_tot
    key_b1 = key_b1 @ np.abs(V - vbar) + key_b1.sum(axis=1)[:, None] * np.abs(vbar - o_cons)
    kden = (pw * kb_tot).sum(axis=1)
    for name in acc.key_b:
        sh = (pw * np.where(keep, acc.key_b[name], 0.0)).sum(axis=1) / np.where(kden > 0, kden, 1.0)
        terms_bound[name] = max(terms_bound.get(name, 0.0), float(np.max(key_b1 * sh[:, None], initial=0.0)))
    for name in acc.blk_b:
        terms_bound[name] = max(
            terms_bound.get(name, 0.0),
            float(np.max(np.einsum("rt,rtd->rd", acc.blk_b[name], np.abs(B)), initial=0.0)),
        )
    for name in acc.pre_b:
        terms_bound[name] = max(
            terms_bound.get(name, 0.0),
            float(np.max(np.einsum("rt,rtd->rd", acc.pre_b[name], np.abs(prev)), initial=0.0)),
        )

    # ---- non-consistent terms (first order): numerator-only, denominator-only, output ------------------------------
    nc_var = np.zeros((R, dv))
    nc_b = np.zeros((R, dv))
    vabs_max = np.abs(V).max(axis=0)
    lse = ex.lse

    def add(name: str, var: np.ndarray, bnd: np.ndarray) -> None:
        nonlocal nc_var, nc_b
        nc_var = nc_var + var
        nc_b = nc_b + bnd
        terms_var[name] = terms_var.get(name, 0.0) + float(var.sum())
        terms_bound[name] = max(terms_bound.get(name, 0.0), float(np.max(bnd, initial=0.0)))

    if p_cast:
        wn = p2 * num_relv
        an = pw * num_relb
        add("pv.p_cast", wn @ Vsq, an @ np.abs(V))
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
    det, am_ = _absorption(pw, V, n, T, step, Fv, Fo, Y=Y, Wb=Wb, o=o_cons, prev=(prevN, prevL))
    rest, delta, live_b = am_["rest"], am_["delta"], Wb > 0
    l_abs, pv_abs, absl, abso = am_["l_abs"], am_["pv_abs"], am_["absl"], am_["abso"]
    hist_small_l, hist_small_o, small_l, small_o = (
        am_["hist_small_l"],
        am_["hist_small_o"],
        am_["small_l"],
        am_["small_o"],
    )
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
    pv_b = np.where(
        live_b[:, :, None], np.minimum(pv_b, np.abs(delta)) + gamma(n, Fa) * Wb[:, :, None] * vabs_max, 0.0
    )
    add("pv.round", pv_v.sum(axis=1), pv_b.sum(axis=1))
    # Step products and sums of the online recurrence (t >= 1), in the running frame. In the lazy/flash
    # bookkeeping one factor is exactly 1; a sum of two stored values drops the smaller addend when it is
    # below half a quantum of the larger (deterministic, in ℓ and in each column of O), and otherwise is
    # never off by more than the smaller addend.
    ns_var = np.zeros((R, dv))
    ns_b = np.zeros((R, dv))
    fr = np.where(frun > 0, frun, 1.0)

    def rel_of(vals_norm: np.ndarray, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v_, b_ = rvb(vals_norm * frame, Fv)
        return v_ / (frame * frame), b_ / frame

    am = alpha_on & step & ~a_flush
    gm = gamma_on & step & ~g_flush
    # running reference: α (and γ of the holding block) round to exactly 1 when the bookkeeping residue
    # is below u/2, and then the product is exact
    if running:
        # residue of the exponent chains: their own roundings plus the rounding of the max candidate
        # fl(m_j + δ_j) (resp. fl(m + δ_p)) that both exponents share (the recovery terms cancel there)
        sx_a = np.sqrt(np.maximum(acc.pre_v.get("bookkeeping", 0.0) + run_res["pre"], 1e-300))
        sx_g = np.sqrt(np.maximum(acc.blk_v.get("bookkeeping", 0.0) + run_res["blk"], 1e-300))
        p1_a = np.where(take, 0.0, erf(uv / (2 * math.sqrt(2.0) * sx_a)))
        p1_g = np.where(mhat >= M_run, erf(uv / (2 * math.sqrt(2.0) * sx_g)), 0.0)
    else:
        p1_a = np.zeros((R, T))
        p1_g = np.zeros((R, T))
    # α·ℓ, α·O (history); γ·ℓ_t, γ·PV_t (new block): a product absorbed in the following sum does not count
    fr3 = fr[:, :, None]
    lv_, lb_ = rel_of(prevL, fr)
    dvar += np.where(am & ~(absl & hist_small_l), lv_ * (1 - p1_a), 0.0)
    dbnd += np.where(am, lb_, 0.0)
    nv_, nb_ = rel_of(prevN, fr3)
    ns_var += np.where((am[:, :, None] & ~(abso & hist_small_o)), nv_ * (1 - p1_a)[:, :, None], 0.0).sum(
        axis=1
    )
    ns_b += np.where(am[:, :, None], nb_, 0.0).sum(axis=1)
    lv_, lb_ = rel_of(Wb, fr)
    dvar += np.where(gm & ~(absl & ~hist_small_l), lv_ * (1 - p1_g), 0.0)
    dbnd += np.where(gm, lb_, 0.0)
    nv_, nb_ = rel_of(Y, fr3)
    ns_var += np.where((gm[:, :, None] & ~(abso & ~hist_small_o)), nv_ * (1 - p1_g)[:, :, None], 0.0).sum(
        axis=1
    )
    ns_b += np.where(gm[:, :, None], nb_, 0.0).sum(axis=1)
    # the sums ℓ_t and O_t
    lv_, lb_ = rel_of(Lcum, fr)
    dvar += np.where(step & ~absl, np.minimum(lv_, small_l**2), 0.0)
    dbnd += np.where(step, np.minimum(lb_, small_l), 0.0)
    nv_, nb_ = rel_of(Ncum, fr3)
    ns_var += np.where(step[:, :, None] & ~abso, np.minimum(nv_, small_o**2), 0.0).sum(axis=1)
    ns_b += np.where(step[:, :, None], np.minimum(nb_, np.abs(small_o)), 0.0).sum(axis=1)
    if pol.accum == "pow2":  # power-of-two renormalisation and scaled contributions: exact unless subnormal
        ns_b += 2.0 * T * 0.5 * ms_v
    den_var_o = (o_cons**2) * dvar.sum(axis=1)[:, None]
    den_b_o = np.abs(o_cons) * dbnd.sum(axis=1)[:, None]
    add("row_sum", den_var_o, den_b_o)
    add("accumulator", ns_var, ns_b)
    # final division and output cast. A cast to a format 2^8 times coarser than the vector format rounds
    # a value known to far better than its quantum: its error fl(o) − o is deterministic (systematic).
    # Final division and output cast: one rounding of the predicted value o_pred = o_sys + (absorption)
    # onto the grid of the coarser of the vector and output formats, after random errors of standard
    # deviation s. The mean square is Σ_g P(fl(o_pred + e) = g)·(g − o_ref)² over the grid points g
    # (Gaussian e): for s much below the quantum it is the deterministic rounding of o_pred (exact when a
    # row is absorbed into one key, whose value is representable), for s above it s² + q²/12.
    F_last = opts.out_format if narrower(opts.out_format, Fv) else Fv
    o_pred = o_sys + det
    nc_pre_var = nc_var.copy()  # random non-consistent errors before the final rounding
    pre_sd = np.sqrt(nc_var + key_var + blk_var + pre_var)
    q_last = ulp(o_pred, F_last)
    final_ms = _rounded_ms(o_pred, pre_sd, q_last, ex.o_ref, F_last)
    outv = np.maximum(final_ms - (o_pred - ex.o_ref) ** 2 - pre_sd**2, 0.0)  # the rounding's own share
    outb = rbound(np.abs(o_sys) + cons_b, Fv)
    if narrower(opts.out_format, Fv):
        outb = outb + rbound(np.abs(o_sys) + cons_b, opts.out_format)
    add("output", outv, outb)
    # error of the float64 golden itself
    gold_b = (
        4
        * float(F64.u)
        * (
            (L + d + 4) * np.abs(V).max(axis=0)[None, :]
            + np.outer(qn * tau * kn.max(initial=0.0), np.ones(dv)) * cap
        )
    )
    terms_bound["golden"] = float(np.max(gold_b, initial=0.0))

    # overflow of the block tiles, ℓ and O (raw accumulators), output
    if np.max(np.abs(pvf), initial=0.0) >= thr(Fo) or (
        narrower(Fv, Fo) and np.max(np.abs(pvf), initial=0.0) >= thr(Fv)
    ):
        ovf["accumulator"] = True
    if pol.accum == "raw":
        if np.max(Lcum * frun, initial=0.0) >= thr(Fv):
            ovf["row_sum"] = True
        if np.max(np.abs(Ncum) * frun[:, :, None], initial=0.0) >= thr(Fv):
            ovf["accumulator"] = True
    else:
        lt = Lcum * frun
        with np.errstate(divide="ignore"):
            scale = np.ones((R, T))
            scale[:, 1:] = np.exp2(-np.floor(np.log2(np.where(lt[:, :-1] > 0, lt[:, :-1], 1.0))))
        if np.max(np.abs(Ncum) * (frun * scale)[:, :, None], initial=0.0) >= thr(Fv):
            ovf["accumulator"] = True
    if narrower(opts.out_format, Fv) and np.max(np.abs(o_sys), initial=0.0) >= thr(opts.out_format):
        ovf["output"] = True

    # ---- total bound ---------------------------------------------------------------------------------------------
    # the non-consistent roundings act on magnitudes of the perturbed run: Σ p'|v| <= e^{Ē}(Σ p|v| + X·max|v|)
    crude = _crude_nc(pol, T, n, vabs_max, R)
    infl = np.exp(Ebar) * (1.0 + Xrow)
    nc_b_total = np.minimum(nc_b * infl[:, None] + (infl - 1.0)[:, None] * crude, np.maximum(crude, nc_b))
    sys_err = sys_err + det
    terms_var["absorption"] = float((det**2).sum())
    terms_bound["absorption"] = float(np.max(np.abs(det), initial=0.0))
    bound = np.abs(sys_err) + cons_b + nc_b_total + gold_b
    terms_bound["systematic"] = float(np.max(np.abs(sys_err), initial=0.0))
    terms_var["systematic"] = float((sys_err**2).sum())

    # ---- mean square: analytic (linear) or Monte Carlo (nonlinear rows) -----------------------------------------------
    # Per-row random log-weight spread relative to the dominant block (a common shift is harmless),
    # weighted by the keys' weights: rows above ``mc_threshold`` are in the nonlinear regime.
    Vb_rel = np.where(
        np.arange(T)[None, :] == jstar[:, None],
        0.0,
        bv_tot
        + bv_tot[rr, jstar][:, None]
        + np.abs(np.cumsum(pv_tot, axis=1) - np.cumsum(pv_tot, axis=1)[rr, jstar][:, None]),
    )
    log_std = np.sqrt((pw * np.where(keep, kv_tot + Vb_rel[:, blk], 0.0)).sum(axis=1))
    ms = final_ms
    nl = log_std > opts.mc_threshold
    n_nl = int(nl.sum())
    mc_rows = 0
    if n_nl and opts.mc_samples > 0:
        # Rows for Monte Carlo: the half of the budget with the largest potential error (the consistent
        # bound) always; the other half strided over the remaining nonlinear rows, which then stand for all
        # of them (their linearised value scaled by the ratio found on the strided sample).
        cand = np.nonzero(nl)[0]
        budget = opts.mc_max_rows
        if cand.size > budget:
            pot = cons_b[cand].max(axis=1)
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
        ctx = dict(step=step[rows], nc_var=nc_pre_var[rows], F_last=F_last, Fv=Fv, Fo=Fo)
        ms_mc = _monte_carlo(
            rows,
            z_sys,
            keep,
            acc,
            s_err_names if shift else (),
            pol,
            consts,
            blk,
            n,
            T,
            V,
            ex.o_ref,
            flush_m if p_cast else None,
            opts,
            ctx,
        )
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
    return ChunkOut(
        bound, ms, terms_var, terms_bound, ovf, n_nl, mc_rows, float(np.max(log_std, initial=0.0))
    )


def _rounded_ms(o: np.ndarray, s: np.ndarray, q: np.ndarray, ref: np.ndarray, F: FloatFormat) -> np.ndarray:
    """E[(fl(o + e) − ref)²] for e ~ N(0, s²) rounded onto F's grid of spacing q around o."""
    g0 = round_array(o, F)
    big = s >= 4 * q
    out = (o - ref) ** 2 + s * s + q * q / 12.0
    small = ~big
    if small.any():
        os_, ss, qs, rs, g = o[small], s[small], q[small], ref[small], g0[small]
        K = int(min(17, np.ceil(4 * np.max(ss / qs, initial=0.0)) + 1))

        def phi(x: np.ndarray) -> np.ndarray:
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


def _running_sums(Y: np.ndarray, Wb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Running sums of the tiles and block row sums over the blocks (axis 1), through each block
    (Ncum, Lcum) and before it (prevN, prevL: the history a step adds to)."""
    Ncum = np.cumsum(Y, axis=1)
    Lcum = np.cumsum(Wb, axis=1)
    prevN = np.zeros_like(Ncum)
    prevN[:, 1:] = Ncum[:, :-1]
    prevL = np.zeros_like(Lcum)
    prevL[:, 1:] = Lcum[:, :-1]
    return Ncum, Lcum, prevN, prevL


def _absorption(
    pw: np.ndarray,
    V: np.ndarray,
    n: int,
    T: int,
    step: np.ndarray,
    Fv: FloatFormat,
    Fo: FloatFormat,
    *,
    Y: np.ndarray | None = None,
    Wb: np.ndarray | None = None,
    o: np.ndarray | None = None,
    prev: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, dict]:
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
    masks = dict(
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
    )
    return det, masks


def grid_round(x: np.ndarray, F: FloatFormat, phase: np.ndarray) -> np.ndarray:
    """Round x to F's grid shifted by ``phase`` quanta (0 <= phase < 1): quantisation with a random phase.

    One rounding of many values onto one grid keeps their order and makes errors of values closer than
    a quantum dependent; a random phase keeps every error's marginal uniform on one quantum.
    """
    q = ulp(x, F)
    return q * (np.rint(x / q + phase) - phase)


def _suffix(pv_tot: np.ndarray) -> np.ndarray:
    """Σ_{t>j} of prefix-level variances (a block is rescaled by every later history rescaling)."""
    out = np.zeros_like(pv_tot)
    if pv_tot.shape[1] > 1:
        out[:, :-1] = np.cumsum(pv_tot[:, ::-1], axis=1)[:, ::-1][:, 1:]
    return out


def _crude_nc(pol: Policy, T: int, n: int, vabs_max: np.ndarray, R: int) -> np.ndarray:
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


def _hull(ex: Exact, any_visible: np.ndarray, o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _pairwise_peak(st: np.ndarray, n: int, T: int, mu_t: np.ndarray, pol: Policy) -> float:
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


def _monte_carlo(
    rows: np.ndarray,
    z_sys: np.ndarray,
    keep: np.ndarray,
    acc: _Acc,
    s_err_names: tuple,
    pol: Policy,
    consts: ShiftConstants | None,
    blk: np.ndarray,
    n: int,
    T: int,
    V: np.ndarray,
    o_ref: np.ndarray,
    flush_m: np.ndarray | None,
    opts: Options,
    ctx: dict,
) -> np.ndarray:
    """Mean square error over random rounding outcomes, without linearisation (nonlinear rows).

    Per sample: one rounding of many values on one grid (the score tile, the rounded pseudo-averages) is
    quantisation with a random grid phase per row; every other consistent term is an independent uniform
    error with the model's variance; the recovery adds c times the block mean of the sampled score errors.
    The softmax is evaluated exactly, the absorption of small contributions is decided on the sampled
    weights, the remaining non-consistent errors are Gaussian, and the final rounding is applied.
    """
    rng = np.random.default_rng(opts.seed + int(rows.size) * 7919)
    Rm = rows.size
    L = z_sys.shape[1]
    dv = V.shape[1]
    zb = np.where(keep[rows], z_sys[rows], -np.inf)
    vs = np.zeros((Rm, L))
    vo = np.zeros((Rm, L))
    grids = []
    for name, var in acc.key_v.items():
        gv = np.zeros((Rm, L))
        for x, F, f in acc.grid_key.get(name, []):
            xr = np.broadcast_to(x, (acc.R, L))[rows]
            gv += f * f * rvar(xr, F)
            grids.append((xr, F, f, name in s_err_names))
        rem = np.maximum(var[rows] - gv, 0.0)
        if name in s_err_names:
            vs += rem
        else:
            vo += rem
    bvo = np.zeros((Rm, T))
    bgrids = []
    for name, var in acc.blk_v.items():
        if name in ("recovery.kt", "recovery.scores"):
            continue
        gv = np.zeros((Rm, T))
        for x, F, f in acc.grid_blk.get(name, []):
            xr = x[rows]
            gv += f * f * rvar(xr, F)
            bgrids.append((xr, F, f))
        bvo += np.maximum(var[rows] - gv, 0.0)
    pvo = sum((v[rows] for v in acc.pre_v.values()), np.zeros((Rm, T)))
    c = consts.c if consts is not None else 0.0
    shift_mean = bool(s_err_names) and pol.recovery == "pseudo_average"
    hs, ho = np.sqrt(3 * vs), np.sqrt(3 * vo)
    hb, hp = np.sqrt(3 * bvo), np.sqrt(3 * pvo)
    nc_sd = np.sqrt(ctx["nc_var"])
    V3 = V.reshape(T, n, dv)
    nm = None if flush_m is None else ~flush_m[rows]
    target = o_ref[rows]
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
        zeta = hb * rng.uniform(-1, 1, (Rm, T))
        if shift_mean:
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
        det, _ = _absorption(pw, V, n, T, ctx["step"], ctx["Fv"], ctx["Fo"], Y=Y, Wb=Wb, o=o1)
        if nm is not None:
            o1 = np.where(nm, pw, 0.0) @ V
        o2 = o1 + det + nc_sd * rng.standard_normal((Rm, dv))
        fin = round_array(o2, ctx["F_last"])
        out += (fin - target) ** 2
    return out / opts.mc_samples
