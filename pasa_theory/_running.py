"""The reference script's bookkeeping (``offset="running"``, the ``script`` preset), enclosed element-wise:
Theorem 8 of ``docs/bounds.md`` §17.

The script keeps its running statistics relative to c·A, A the running mean of the rounded block
pseudo-averages, moved at *every* block (``pasa_npu.kernel._Online._running``):

    μ̃_j = fl(μ_j)                               (the fp32 block mean rounded to the vector format)
    A_j  = fl(fl(μ̃_j·r₁) + fl(A_{j−1}·r₂)),     r₁ = fl(1/(j+1)), r₂ = fl(j/(j+1))   (A_0 = μ̃_0)
    δ_j  = fl(fl(μ̃_j − A_j)·c),  δ_p = fl(fl(A_{j−1} − A_j)·c)                      (δ_p = 0 at j = 0)
    m′   = max(fl(m_j + δ_j), fl(m + δ_p))
    α    = fl(E(fl(fl(m − m′) + δ_p))),  γ = fl(E(fl(fl(m_j − m′) + δ_j)))

and then the same step h as every other arrangement (ℓ ← fl(fl(α·ℓ) + fl(γ·ℓ_j)), O likewise, raw
accumulators). There is no data-dependent branch: the maximum is monotone in both candidates, so
the enclosure of m′ is the maximum of theirs (Lemma 17.1), and every other operation is a rounded
+, −, × or exponential of enclosed operands (monotone, docs/bounds.md §2). α and γ may exceed 1 (the
rounding of m + δ_p and m_j + δ_j can put m′ below either candidate's exact value): no step below
assumes otherwise.

:class:`RunningOffsets` is called once per KV block by :func:`pasa_theory._enclosure._run` in place
of the lazy arrangement's steps b, e–g; it returns the enclosures of α and γ (the rest of that
function, steps d and h and the centred accumulator of Lemma 14.4, is shared). Torch-free.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _enclosure as en

_F64 = npt.NDArray[np.float64]
_B = npt.NDArray[np.bool_]


def running_weights(j: int, vd: Any, f32: Any) -> tuple[tuple[float, float], tuple[float, float]]:
    """Enclosures of the two weights of the running mean at block j, r₁ = fl(1/(j+1)) and
    r₂ = fl(j/(j+1)), as the kernel makes them (``torch.tensor(python_float, dtype=vd)``). torch may
    convert the float64 to the vector format directly or through fp32 (docs/bounds.md §13.1); the two
    differ only where fl₃₂(y) is a midpoint of the format, so each weight is enclosed by the hull of
    both roundings (usually one value)."""
    out = []
    for y in (1.0 / (j + 1), j / (j + 1)):
        a = np.asarray(y, dtype=np.float64)
        c1 = float(vd.rnd(a))
        c2 = float(vd.rnd(f32.rnd(a)))
        out.append((min(c1, c2), max(c1, c2)))
    return out[0], out[1]


class RunningOffsets:
    """State of the script's bookkeeping for one row group of the enclosure: A and the stored m.

    ``a0`` pins the first reference where not NaN (a case of the split of Lemma 14.1 on fl(μ₀),
    :func:`pasa_theory._enclosure.enclose_run`); ``mu0`` restricts the first block mean to that case.
    """

    def __init__(self, eng: Any, R: int, a0: _F64 | None, mu0: tuple[_F64, _F64] | None) -> None:
        self.eng = eng
        self.a0 = a0
        self.mu0 = mu0
        self.a_lo = np.zeros(R)
        self.a_hi = np.zeros(R)
        self.m_lo = np.full(R, -np.inf)  # the stored m (in the frame of c·A); −∞ until a key was seen
        self.m_hi = np.full(R, -np.inf)
        self.h_lo = np.full(R, -np.inf)  # H = m + c·A, the stored maximum in the absolute frame (Lemma 17.3)
        self.h_hi = np.full(R, -np.inf)
        self.bad = np.zeros(R, dtype=bool)

    def candidate(self, m_lo: _F64, m_hi: _F64, d_lo: _F64, d_hi: _F64) -> tuple[_F64, _F64]:
        """Enclosure of a candidate of the running maximum, fl(m + δ), in the vector format."""

        vd = self.eng.vd
        x_lo, x_hi = en.add(m_lo, m_hi, d_lo, d_hi)
        return vd.rnd(x_lo), vd.rnd(x_hi)

    def exponent(
        self, a_lo: _F64, a_hi: _F64, b_lo: _F64, b_hi: _F64, d_lo: _F64, d_hi: _F64
    ) -> tuple[_F64, _F64]:
        """Enclosure of fl(fl(a − b) + d) in the vector format (the argument of α or γ), each rounding
        monotone (docs/bounds.md §2)."""

        vd = self.eng.vd
        x_lo, x_hi = en.add(a_lo, a_hi, -b_hi, -b_lo)
        x_lo, x_hi = en.add(vd.rnd(x_lo), vd.rnd(x_hi), d_lo, d_hi)
        return vd.rnd(x_lo), vd.rnd(x_hi)

    def _pseudo_average(self, j: int, tlo: _F64, thi: _F64) -> tuple[_F64, _F64]:
        """Enclosure of μ̃_j = fl(μ_j), μ_j the fp32 block mean (restricted by ``mu0`` at j = 0)."""

        mu_lo, mu_hi = en.block_mean_enclosure(self.eng, tlo, thi)
        if j == 0 and self.mu0 is not None:
            mu_lo, mu_hi = np.maximum(mu_lo, self.mu0[0]), np.minimum(mu_hi, self.mu0[1])
        return self.eng.vd.rnd(mu_lo), self.eng.vd.rnd(mu_hi)

    def undecided(self, j: int, tlo: _F64, thi: _F64, force: npt.NDArray[np.int8] | None) -> _B:
        """Rows whose μ̃_j can take exactly two values and is not given by ``force`` (Lemma 17.2): the
        case split of :func:`pasa_theory._enclosure._cases` then encloses the run once with each value,
        which keeps A, the offsets and m consistent (their hull would carry c·ulp(μ̃) into every later
        exponent). j = 0 is split by :func:`pasa_theory._enclosure.enclose_run` already."""

        if j == 0:
            return np.zeros(tlo.shape[0], dtype=bool)
        mt_lo, mt_hi = self._pseudo_average(j, tlo, thi)
        up = en.next_up(mt_lo, self.eng.vd)
        two = (mt_lo < mt_hi) & (up == mt_hi) & np.isfinite(up)
        if force is not None:
            two &= force[:, j] < 0
        return np.asarray(two, dtype=bool)

    def _frame(self, j: int, *pairs: _Pair) -> tuple[_F64, _F64, _F64, _F64]:
        """Lemma 17.3 (:func:`_frame_step`)."""
        return _frame_step(self, j, *pairs)

    def block(
        self,
        j: int,
        tlo: _F64,
        thi: _F64,
        mj_lo: _F64,
        mj_hi: _F64,
        force: npt.NDArray[np.int8] | None = None,
    ) -> tuple[_F64, _F64, _F64, _F64]:
        """Steps b, e–g of block j: [tlo, thi] the tile whose block mean is taken (before any mask),
        [mj_lo, mj_hi] the block maximum over the visible columns (−∞ where none). Returns the
        enclosures (α_lo, α_hi, γ_lo, γ_hi) of the factors of step h, and updates A and m."""

        eng = self.eng
        vd, f32, c = eng.vd, eng.f32, float(eng.c)
        mt_lo, mt_hi = self._pseudo_average(j, tlo, thi)  # μ̃_j (pseudo_average="rounded")
        if force is not None and j > 0:  # a case of the split (Lemma 17.2): μ̃_j is the lower or upper value
            fj = force[:, j]
            mt_lo, mt_hi = np.where(fj == 1, mt_hi, mt_lo), np.where(fj == 0, mt_lo, mt_hi)
        if j == 0:
            if self.a0 is not None:
                pin = ~np.isnan(self.a0)
                mt_lo, mt_hi = np.where(pin, self.a0, mt_lo), np.where(pin, self.a0, mt_hi)
            # A_0 = fl(fl(μ̃·1) + fl(μ̃·0)) = μ̃ and δ_0 = fl(fl(μ̃ − μ̃)·c) = 0, δ_p = 0: the same value twice
            # (an interval subtraction would lose that correlation)
            a_lo, a_hi = mt_lo, mt_hi
            dj_lo = dj_hi = dp_lo = dp_hi = np.zeros_like(mt_lo)
        else:
            (r1_lo, r1_hi), (r2_lo, r2_hi) = running_weights(j, vd, f32)
            t1_lo, t1_hi = en.mul(mt_lo, mt_hi, r1_lo, r1_hi)
            t2_lo, t2_hi = en.mul(self.a_lo, self.a_hi, r2_lo, r2_hi)
            s_lo, s_hi = en.add(vd.rnd(t1_lo), vd.rnd(t1_hi), vd.rnd(t2_lo), vd.rnd(t2_hi))
            a_lo, a_hi = vd.rnd(s_lo), vd.rnd(s_hi)
            # δ_j = fl(fl(μ̃_j − A_j)·c), δ_p = fl(fl(A_{j−1} − A_j)·c)
            e_lo, e_hi = en.add(mt_lo, mt_hi, -a_hi, -a_lo)
            e_lo, e_hi = en.mul(vd.rnd(e_lo), vd.rnd(e_hi), c, c)
            dj_lo, dj_hi = vd.rnd(e_lo), vd.rnd(e_hi)
            e_lo, e_hi = en.add(self.a_lo, self.a_hi, -a_hi, -a_lo)
            e_lo, e_hi = en.mul(vd.rnd(e_lo), vd.rnd(e_hi), c, c)
            dp_lo, dp_hi = vd.rnd(e_lo), vd.rnd(e_hi)
        a_prev = (self.a_lo, self.a_hi)
        self.a_lo, self.a_hi = a_lo, a_hi
        self.bad |= ~(np.isfinite(a_lo) & np.isfinite(a_hi) & np.isfinite(dj_lo) & np.isfinite(dj_hi))
        self.bad |= ~(np.isfinite(dp_lo) & np.isfinite(dp_hi))
        with np.errstate(invalid="ignore"):
            # the two candidates of the maximum, fl(m_j + δ_j) and fl(m + δ_p) (−∞ stays −∞)
            cj_lo, cj_hi = self.candidate(mj_lo, mj_hi, dj_lo, dj_hi)
            cm_lo, cm_hi = self.candidate(self.m_lo, self.m_hi, dp_lo, dp_hi)
            cj_lo, cj_hi = (
                np.where(mj_lo == -np.inf, -np.inf, cj_lo),
                np.where(mj_hi == -np.inf, -np.inf, cj_hi),
            )
            cm_lo = np.where(self.m_lo == -np.inf, -np.inf, cm_lo)
            cm_hi = np.where(self.m_hi == -np.inf, -np.inf, cm_hi)
            # Lemma 17.1: max is monotone in both arguments
            n_lo, n_hi = np.maximum(cj_lo, cm_lo), np.maximum(cj_hi, cm_hi)
            # a row that saw no key yet has m′ = −∞ and the kernel subtracts 0 instead (masked rows)
            none = n_hi == -np.inf
            ref_lo, ref_hi = np.where(none, 0.0, n_lo), np.where(none, 0.0, n_hi)
            # x_α = fl(fl(m − m′) + δ_p), x_γ = fl(fl(m_j − m′) + δ_j); −∞ − finite = −∞
            xa_lo, xa_hi = self.exponent(self.m_lo, self.m_hi, ref_lo, ref_hi, dp_lo, dp_hi)
            xg_lo, xg_hi = self.exponent(mj_lo, mj_hi, ref_lo, ref_hi, dj_lo, dj_hi)
        xa_lo, xa_hi = (
            np.where(self.m_lo == -np.inf, -np.inf, xa_lo),
            np.where(self.m_hi == -np.inf, -np.inf, xa_hi),
        )
        xg_lo, xg_hi = np.where(mj_lo == -np.inf, -np.inf, xg_lo), np.where(mj_hi == -np.inf, -np.inf, xg_hi)
        if j == 0:  # the first block: m′ = fl(m_0 + 0) = m_0 and x_γ = fl(fl(m_0 − m_0) + 0) = 0 exactly
            xg_lo, xg_hi = np.where(mj_hi > -np.inf, 0.0, xg_lo), np.where(mj_hi > -np.inf, 0.0, xg_hi)
        with np.errstate(invalid="ignore", over="ignore"):
            xa_lo, xa_hi, xg_lo, xg_hi = self._frame(
                j, (mt_lo, mt_hi), a_prev, (a_lo, a_hi), (mj_lo, mj_hi), (dj_lo, dj_hi), (dp_lo, dp_hi),
                (cj_lo, cj_hi), (cm_lo, cm_hi), (n_lo, n_hi), (xa_lo, xa_hi), (xg_lo, xg_hi),
            )  # fmt: skip
        self.bad |= np.isnan(xa_lo) | np.isnan(xa_hi) | np.isnan(xg_lo) | np.isnan(xg_hi)
        self.bad |= (xa_hi == np.inf) | (xg_hi == np.inf) | np.isnan(n_lo) | np.isnan(n_hi)
        self.bad |= (n_hi == np.inf) | ((n_lo == -np.inf) & (n_hi > -np.inf))
        xa_lo, xa_hi = np.nan_to_num(xa_lo, nan=0.0), np.nan_to_num(xa_hi, nan=0.0)
        xg_lo, xg_hi = np.nan_to_num(xg_lo, nan=0.0), np.nan_to_num(xg_hi, nan=0.0)
        al_lo, al_hi = en.exp_enclosure(xa_lo, xa_hi, vd, eng.exp_rel)
        ga_lo, ga_hi = en.exp_enclosure(xg_lo, xg_hi, vd, eng.exp_rel)
        self.m_lo, self.m_hi = n_lo, n_hi
        return al_lo, al_hi, ga_lo, ga_hi


_Pair = tuple[_F64, _F64]


def _mag(x: _Pair, vd: Any) -> _F64:
    """An upper bound of |y| for every exact y whose rounding lies in [lo, hi] (|y| ≤ |fl(y)|(1 + u) + η)."""
    m = np.maximum(np.abs(x[0]), np.abs(x[1]))
    return np.asarray(m * (1 + 2 * vd.u) + vd.eta, dtype=np.float64)


def _frame_step(
    self: RunningOffsets,
    j: int,
    mt: _Pair,
    a_prev: _Pair,
    a: _Pair,
    mj: _Pair,
    dj: _Pair,
    dp: _Pair,
    cj: _Pair,
    cm: _Pair,
    mn: _Pair,
    xa: _Pair,
    xg: _Pair,
) -> tuple[_F64, _F64, _F64, _F64]:
    """Lemma 17.3: the exponents of α and γ in the frame H = m + c·A, intersected with their direct
    enclosures (both contain the kernel's value, so their intersection does); updates H.

    With P = m_j + c·μ̃_j and the residuals e₁ = δ_j − c(μ̃_j − A_j), e₂ = δ_p − c(A_{j−1} − A_j),
    r_j, r_m of the two candidates and r₃…r₆ of the exponents' roundings (each bounded by Lemmas 1–2 at
    the largest magnitude its operand can take, from the direct enclosures):
    x_γ = −max(r_j, H_{j−1} + e₂ + r_m − P − e₁) + r₃ + r₄,  x_α = −max(r_m, P + e₁ + r_j − H_{j−1} − e₂) + r₅ + r₆,
    H_j = max(P + e₁ + r_j, H_{j−1} + e₂ + r_m). A does not appear: its ambiguity (times c) cancels, as in
    the kernel (``sympy_checks()["running_frame"]``)."""

    vd, c = self.eng.vd, float(self.eng.c)
    big = 2.0**-50  # float64 sums of a few non-negative error terms, and the outward margin below

    def lower(x: _F64, e: _F64) -> _F64:  # a float64 ≤ x − e (e ≥ 0)
        return en.add(x, x, -e, -e)[0]

    def upper(x: _F64, e: _F64) -> _F64:
        return en.add(x, x, e, e)[1]

    t_lo, t_hi = en.mul(mt[0], mt[1], c, c)
    vis = np.isfinite(mj[0]) & np.isfinite(mj[1])
    p_lo, p_hi = en.add(np.where(vis, mj[0], 0.0), np.where(vis, mj[1], 0.0), t_lo, t_hi)
    started = np.isfinite(self.h_lo) & np.isfinite(self.h_hi)
    if j == 0:  # H_0 = m_0 + c·A_0 = P (m′ = m_0, A_0 = μ̃_0)
        self.h_lo, self.h_hi = np.where(vis, p_lo, -np.inf), np.where(vis, p_hi, -np.inf)
        return xa[0], xa[1], xg[0], xg[1]
    h = vd.hulp
    e1 = c * vd.sub_err(mt[0], mt[1], a[0], a[1]) + h(_mag(dj, vd))
    e2 = c * vd.sub_err(a_prev[0], a_prev[1], a[0], a[1]) + h(_mag(dp, vd))
    rj, rm = h(_mag(cj, vd)), h(_mag(cm, vd))
    ref = (np.where(np.isfinite(mn[0]), mn[0], 0.0), np.where(np.isfinite(mn[1]), mn[1], 0.0))
    r34 = vd.sub_err(np.where(vis, mj[0], 0.0), np.where(vis, mj[1], 0.0), *ref) + h(_mag(xg, vd))
    mo = (np.where(started, self.m_lo, 0.0), np.where(started, self.m_hi, 0.0))
    r56 = vd.sub_err(*mo, *ref) + h(_mag(xa, vd))
    hp_lo, hp_hi = np.where(started, self.h_lo, 0.0), np.where(started, self.h_hi, 0.0)
    d_lo, d_hi = en.add(hp_lo, hp_hi, -p_hi, -p_lo)  # H_{j−1} − P
    err = (e1 + e2) * (1 + big)
    # x_γ (a visible block): X = H_{j−1} − P + e₂ + r_m − e₁ (−∞ for a row that saw no key before)
    x_lo = np.where(started, lower(d_lo, (err + rm) * (1 + big)), -np.inf)
    x_hi = np.where(started, upper(d_hi, (err + rm) * (1 + big)), -np.inf)
    r = r34 * (1 + big)
    g_lo = lower(-np.maximum(rj, x_hi), r)
    g_hi = upper(-np.maximum(-rj, x_lo), r)
    # x_α (a row that saw a key): Y = P − H_{j−1} + e₁ + r_j − e₂ (−∞ for a block without a visible key)
    y_lo = np.where(vis, lower(-d_hi, (err + rj) * (1 + big)), -np.inf)
    y_hi = np.where(vis, upper(-d_lo, (err + rj) * (1 + big)), -np.inf)
    r = r56 * (1 + big)
    f_lo = lower(-np.maximum(rm, y_hi), r)
    f_hi = upper(-np.maximum(-rm, y_lo), r)
    # intersect with the direct enclosures where the frame applies
    use_g = vis & np.isfinite(g_lo) & np.isfinite(g_hi)
    use_a = started & np.isfinite(f_lo) & np.isfinite(f_hi)
    xg_lo, xg_hi = np.where(use_g, np.fmax(xg[0], g_lo), xg[0]), np.where(use_g, np.fmin(xg[1], g_hi), xg[1])
    xa_lo, xa_hi = np.where(use_a, np.fmax(xa[0], f_lo), xa[0]), np.where(use_a, np.fmin(xa[1], f_hi), xa[1])
    # H_j = max(P + e₁ + r_j, H_{j−1} + e₂ + r_m), intersected with m′ + c·A_j
    c1_lo = np.where(vis, lower(p_lo, (e1 + rj) * (1 + big)), -np.inf)
    c1_hi = np.where(vis, upper(p_hi, (e1 + rj) * (1 + big)), -np.inf)
    c2_lo = np.where(started, lower(hp_lo, (e2 + rm) * (1 + big)), -np.inf)
    c2_hi = np.where(started, upper(hp_hi, (e2 + rm) * (1 + big)), -np.inf)
    hn_lo, hn_hi = np.maximum(c1_lo, c2_lo), np.maximum(c1_hi, c2_hi)
    fin = np.isfinite(mn[0]) & np.isfinite(mn[1])
    ca_lo, ca_hi = en.mul(a[0], a[1], c, c)
    q_lo, q_hi = en.add(ref[0], ref[1], ca_lo, ca_hi)
    hn_lo = np.where(fin, np.fmax(hn_lo, q_lo), hn_lo)
    hn_hi = np.where(fin, np.fmin(hn_hi, q_hi), hn_hi)
    bad = (xg_lo > xg_hi) | (xa_lo > xa_hi) | (hn_lo > hn_hi)  # cannot happen for a run: a bug guard
    self.bad |= bad
    self.h_lo, self.h_hi = np.where(fin, hn_lo, -np.inf), np.where(fin, hn_hi, -np.inf)
    return xa_lo, xa_hi, xg_lo, xg_hi


def a_priori_terms(
    *, Sx: float, Smean: float, c: float, T: int, rho: float, vd: Any, f32: Any
) -> dict[str, float]:
    """The running bookkeeping's part of the a-priori bound (Lemma 19.1, docs/bounds.md §19.1).

    For every input whose masked score tile satisfies |s̃ + fl(B)| ≤ ``Sx``, whose fp32 block means
    satisfy |μ_j| ≤ ``Smean`` (the tile mean is (a − b·n)·q·k̄ up to the score error, Lemma 19.0, so
    this is far below max|s̃|), T blocks, stored c, and an exponential with log-relative error ≤ ``rho``:
    bounds, over the whole run, of the pseudo-averages
    |μ̃| ≤ ``S_mu``, the running mean |A| ≤ ``S_A``, the offsets |δ_j| ≤ ``D``, |δ_p| ≤ ``Dp``, the frame
    |H| ≤ ``H``, the stored maximum |m′| ≤ ``M``, the exponent arguments |x_γ| ≤ ``Xg``, |x_α| ≤ ``Xa``;
    ``mu_round`` (|μ̃_j − μ_j|), and ``residual``: every weight's exponent is s̃_r + c·μ̃_j − H_T
    (common to the row) plus at most ``residual`` (the telescoped roundings of steps f–g and the
    exponentials of α and γ, Lemma 19.1); ``floor``: the largest weight of a row is ≥ e^{−floor}, and
    no product of the factors α, γ exceeds e^{floor}. Each rounding is bounded by the half ulp of the
    largest value its operand can take (``vd.hulp``, Lemma 1). Plain floats."""

    def h(x: float) -> float:  # |fl(y) − y| for every |y| ≤ x
        return float(vd.hulp(x))

    def up(x: float) -> float:  # |fl(y)| for every |y| ≤ x
        return x + h(x)

    S_mu = up(Smean)  # μ̃ = fl(μ)
    mu_round = h(Smean)
    # A_j = fl(fl(μ̃·r₁) + fl(A·r₂)), r₁ + r₂ ≤ (1 + u)(1 + u₃₂) (each weight rounded, maybe through fp32)
    w = (1 + vd.u) * (1 + f32.u)
    S_A = S_mu
    for _ in range(T):
        S_A = up(up(S_A * w) + 2 * h(S_A))  # ≥ fl(x₁ + x₂) with |x₁| + |x₂| ≤ (|μ̃|r₁ + |A|r₂) + 2 roundings
    DA, DP = S_mu + S_A, 2 * S_A  # |μ̃ − A|, |A_{j−1} − A_j|
    D, Dp = up(c * up(DA)), up(c * up(DP))
    E1 = c * h(DA) + h(c * up(DA))  # δ_j = c(μ̃ − A) + e₁
    E2 = c * h(DP) + h(c * up(DP))  # δ_p = c(A_{j−1} − A_j) + e₂
    # H_k = max(P_k + e₁ + r_j, H_{k−1} + e₂ + r_m), |P| ≤ Sx + c·S_mu, and |m′| ≤ |H| + c·S_A; the
    # candidates' roundings are at most hulp(M + max(D, Dp)) with M the bound on |m′|: a fixed point,
    # reached from below by iteration (each step is monotone and the map contracts by (T + 1)·u)
    Dm = max(D, Dp)
    H0 = Sx + c * S_mu + E1 + T * E2
    H = H0
    for _ in range(200):
        Rc = h((H + c * S_A) + Dm)
        H_new = H0 + (T + 1) * Rc
        if H_new <= H:
            break
        H = H_new
    else:  # no fixed point below the format's range: the bookkeeping may overflow
        H = math.inf
    M = H + c * S_A
    Rc = h(M + Dm)
    R3, R4 = h(Sx + M), h(up(Sx + M) + D)  # fl(m_j − m′), fl(· + δ_j)
    R5, R6 = h(2 * M), h(up(2 * M) + Dp)  # fl(m − m′), fl(· + δ_p)
    Xg, Xa = up(up(Sx + M) + D), up(up(2 * M) + Dp)
    residual = (E1 + R3 + R4 + rho) + T * (E2 + R5 + R6 + rho)
    floor = residual + E1 + Rc + T * (E2 + Rc)
    return dict(
        S_mu=S_mu,
        S_A=S_A,
        D=D,
        Dp=Dp,
        H=H,
        M=M,
        Xg=Xg,
        Xa=Xa,
        mu_round=mu_round,
        residual=residual,
        floor=floor,
    )


def sympy_checks() -> dict[str, bool]:
    """The algebra of Lemma 17.3, checked symbolically (each entry True).

    ``running_frame``: with δ_j = c(μ̃ − A) + e₁, δ_p = c(A′ − A) + e₂ (A′ = A_{j−1}), H′ = m + c·A′,
    P = m_j + c·μ̃ and the candidates C_j = m_j + δ_j + r_j, C_m = m + δ_p + r_m: C_m − C_j = X − r_j and
    C_j − C_m = Y − r_m with X = H′ + e₂ + r_m − P − e₁, Y = P + e₁ + r_j − H′ − e₂ (so m′ = C_j exactly
    when r_j ≥ X, and m′ = C_m when r_m ≥ Y); in either case (m_j − m′) + δ_j = −max(r_j, X),
    (m − m′) + δ_p = −max(r_m, Y) and m′ + c·A = max(P + e₁ + r_j, H′ + e₂ + r_m); A appears nowhere.
    """
    import sympy as sp

    m, mj, mu, a_p, a, c, e1, e2, rj, rm = sp.symbols("m m_j mu A_p A c e1 e2 r_j r_m", real=True)
    dj = c * (mu - a) + e1
    dp = c * (a_p - a) + e2
    hp = m + c * a_p
    p = mj + c * mu
    cj = mj + dj + rj
    cm = m + dp + rm
    x = hp + e2 + rm - p - e1
    y = p + e1 + rj - hp - e2
    ok = sp.simplify(cm - cj - (x - rj)) == 0 and sp.simplify(cj - cm - (y - rm)) == 0
    for mp, xg, xa, hn in ((cj, -rj, -y, p + e1 + rj), (cm, -x, -rm, hp + e2 + rm)):
        ok = ok and sp.simplify((mj - mp) + dj - xg) == 0
        ok = ok and sp.simplify((m - mp) + dp - xa) == 0
        ok = ok and sp.simplify(mp + c * a - hn) == 0
        ok = ok and not any(s in (sp.simplify(xg).free_symbols | sp.simplify(xa).free_symbols) for s in (a,))
    # Lemma 19.1: x_γ = P_j − H_j + e₁ + r₃ + r₄ and x_α = H_{j−1} − H_j + e₂ + r₅ + r₆ for any stored
    # m′ (no case on which candidate won), so a weight of block j carries Σ = P_j − H_T + residuals
    r3, r4, r5, r6, mp = sp.symbols("r3 r4 r5 r6 m_new", real=True)
    xg = (mj - mp) + dj + r3 + r4
    xa = (m - mp) + dp + r5 + r6
    hn = mp + c * a
    tel = sp.simplify(xg - (p - hn + e1 + r3 + r4)) == 0 and sp.simplify(xa - (hp - hn + e2 + r5 + r6)) == 0
    # three blocks: x_γ of block 0 plus x_α of blocks 1 and 2 telescopes to P_0 − H_2 + the residuals
    Ps = sp.symbols("P0:3", real=True)
    Hs = sp.symbols("H0:3", real=True)
    E = sp.symbols("E0:3", real=True)  # e₁ + r₃ + r₄ (block 0), e₂ + r₅ + r₆ (blocks 1, 2)
    total = (Ps[0] - Hs[0] + E[0]) + (Hs[0] - Hs[1] + E[1]) + (Hs[1] - Hs[2] + E[2])
    tel = tel and sp.simplify(total - (Ps[0] - Hs[2] + E[0] + E[1] + E[2])) == 0
    return {"running_frame": bool(ok), "running_telescope": bool(tel)}
