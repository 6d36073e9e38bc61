"""Rigorous bounds for the reference in the accumulator (``score_ref="hi_lo"``, docs/bounds.md §16).

The ``fp16_accurate`` arrangement (docs/precision.md §6, ``pasa_npu.kernel._ref_attention``) subtracts a
per-row reference R = 2^e_hi·h + 2^e_lo·l inside the matrix unit's fp32 accumulator, converts
t = τ·(S − R) to fp16, moves R when a block maximum passes θ (``ref_move_at``), flushes the pending
P·[V − v̄, 1] accumulator into the fp16 O and ℓ at a move, and adds the centre v̄ back at the end.

The theorem (Theorem 6 of docs/bounds.md §16) rests on one fact: for **any** reference trajectory — any
pair (h, l), any sequence of move decisions — attention in real arithmetic is exact, because R enters
each weight as e^{τ(S_r − R^{(j)})}·Π_{later moves} e^{τ(R^{(k−1)} − R^{(k)})} = e^{τ(S_r − R_final)}
(telescoping, ``sympy_checks()["reference_telescoping"]`` in :mod:`pasa_theory.rigorous`), a common
factor that cancels in O/ℓ. So the bound never follows the data-dependent branches: it uses only
branch-independent facts about every trajectory the kernel can take (Lemma 16.1: R^{(j)} stays within
[M_j − Δ, M_j + δ_R] of the running maximum M_j of the exact scores; a move at block k is possible only
where the block maximum comes near M_{k−1}; there is at most one flush per such block), and bounds every
rounding at the largest magnitude its operand can take in any of them.

Torch-free (NumPy); called by :func:`pasa_theory.rigorous.certify` and
:func:`pasa_theory.rigorous.a_priori` when the policy has ``score_ref="hi_lo"``. Hypotheses H1–H3 of
docs/bounds.md §1. The accumulation error of the matrix unit is bounded in :func:`acc_error` (fp32, or a
narrow accumulator ``mma_acc`` fp16/fp22 by Lemma 15.2), the subtraction of the reference in
:meth:`Consts.xi`; a narrow accumulator's chunked Q·Kᵀ is enclosed per element by Theorem 5
(:func:`pasa_theory._accum.matmul_enclosure`) and its pending P·[V − v̄, 1] bounded with Γ of Lemma 15.2
(docs/bounds.md §16.10).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from ._accum import Accumulator, accumulator_of, gamma_acc, matmul_enclosure
from .formats import quantum_array

_F64 = npt.NDArray[np.float64]
_B = npt.NDArray[np.bool_]

U16 = 2.0**-11
U32 = 2.0**-24
ETA16 = 2.0**-25  # half the fp16 subnormal spacing
ETA32 = 2.0**-150
MAX16 = 65504.0
_DEEP = -20.0  # t ≤ −20 ⇒ E(t)(1 + ε_exp) < 2^−25 ⇒ p = fl16(E(t)) = 0 exactly

#: the policy fields this module covers (others raise ValueError in :func:`check_policy`)
COVERED = (
    "score_ref='hi_lo' with mma_acc 'wide', 'fp16' or 'fp22' (any mma_round, mma_chunk; matrix unit fp16 in / "
    "fp32 accumulate / fp16 out), vector unit "
    "fp16, reduce='acc', scale 'acc' or 'scores', any ref_move, ref_move_at, pv_accum, row_sum, v_center, "
    "accum 'pow2' or 'raw', no K smoothing"
)


def check_policy(pol: Any) -> None:
    """``ValueError`` naming what the reference-in-accumulator bounds need, if ``pol`` lacks it."""
    why = []
    if pol.score_ref != "hi_lo":
        why.append("score_ref='hi_lo'")
    if pol.matmul_in.name != "fp16" or pol.matmul_acc.name != "fp32" or pol.matmul_out.name != "fp16":
        why.append("matrix unit fp16 in / fp32 accumulate / fp16 out")
    if pol.vector.name != "fp16":
        why.append("vector unit fp16")
    if pol.reduce != "acc":
        why.append("reduce='acc'")
    if pol.scale not in ("acc", "scores"):
        why.append(f"scale 'acc' or 'scores' (got {pol.scale!r})")
    if pol.accum not in ("pow2", "raw"):
        why.append("accum 'pow2' or 'raw'")
    if pol.smooth_k or pol.modelled_as is not None:
        why.append("one of the package's own kernels without K smoothing")
    if not (pol.ref_move_at >= 0 and math.isfinite(pol.ref_move_at)):
        why.append("a finite ref_move_at >= 0")
    if why:
        raise ValueError(
            f"certify supports the reference in the accumulator (docs/bounds.md §16) for {COVERED}; "
            f"policy {pol.name!r} needs: " + "; ".join(why)
        )


# ---------------------------------------------------------------------------------------------------
# rounding helpers (Lemma 1 of docs/bounds.md)


def hulp(mag: Any, fmt: str) -> _F64:
    """Half an ulp of ``fmt`` at magnitude ``mag`` (|fl(y) − y| ≤ hulp(M) for |y| ≤ M); inf if not finite."""
    m = np.asarray(mag, dtype=np.float64)
    fin = np.isfinite(m)
    return np.where(fin, 0.5 * quantum_array(np.where(fin, np.abs(m), 0.0), fmt), np.inf)


def rnd16(x: Any) -> _F64:
    with np.errstate(over="ignore"):
        return np.asarray(x, dtype=np.float64).astype(np.float16).astype(np.float64)


def gamma(m: float, u: float) -> float:
    mu = float(m) * u
    return mu / (1.0 - mu) if mu < 1.0 else math.inf


def acc_error(absdot: Any, m: int, pol: Any) -> _F64:
    """The matrix unit's accumulation error: a bound on |acc(Σ x_i) − Σ x_i| for m exact products x_i
    with Σ|x_i| ≤ ``absdot``, in any summation order (H1: γ^{32}_m·Σ|x|, Higham Lemma 3.1).

    A narrow accumulator (``mma_acc`` fp16/fp22, rounding after every chunk of ``mma_chunk`` products):
    Γ·Σ|x| + H of Lemma 15.2 (:func:`pasa_theory._accum.gamma_acc`), +inf where a partial sum may pass
    the accumulator's largest finite value (|partial| ≤ Σ|x|(1 + Γ) + H: overflow or saturation)."""
    nacc = accumulator_of(pol)
    if nacc is not None:
        big, small = gamma_acc(m, nacc)
        a = np.asarray(absdot, dtype=np.float64)
        e = a * big + small
        return np.asarray(np.where(a + e <= nacc.maxf, e, np.inf), dtype=np.float64)
    g = gamma(m, U32)
    return np.asarray(absdot, dtype=np.float64) * (g * (1.0 + 2.0**-40))


# ---------------------------------------------------------------------------------------------------
# constants of one call (Lemma 16.1)


class Consts:
    """The per-call constants of Lemma 16.1 for a row group: τ as the kernel holds it, θ, and the
    placement slack of the reference (every quantity in accumulator units, i.e. units of S)."""

    def __init__(self, pol: Any, tau: float, Rmax: float, e_hi_max: int) -> None:
        self.pol = pol
        self.tau = tau
        self.place = pol.scale
        self.t32 = float(np.float32(tau))
        self.t16 = float(rnd16(tau))
        self.tc = self.t32 if self.place == "acc" else self.t16  # τ as the conversion applies it
        self.tmax = max(tau, self.tc)
        self.theta = float(rnd16(pol.ref_move_at))
        e_lo_max = e_hi_max - 11
        # Lemma 16.1 (iii): |L| and the placement error δ_place of a pair (h, l)
        lres = U16 * Rmax + 2.0**e_hi_max * (ETA16 + 2.0**-149)
        lres = lres * (1 + 2.0**-20)
        self.Lmax = float(lres + hulp(lres, "fp32") + U16 * lres * 1.01 + 2.0**e_lo_max * ETA16)
        Amax = 2.0 * Rmax
        self.Amax = Amax
        self.place_err = float(
            hulp(Rmax, "fp32")
            + 2.01 * U32 * Amax
            + hulp(Rmax + Amax, "fp32")
            + hulp(lres, "fp32")
            + U16 * lres * 1.01
            + 2.0**e_lo_max * ETA16
        )
        # θ in accumulator units: no move ⇒ max a ≤ θ_up; a move ⇒ max a > θ_lo
        self.theta_up = (self.theta + float(hulp(self.theta, "fp16"))) / (self.t32 * (1 - U32))
        self.theta_lo = self.theta / (self.t32 * (1 + U32))
        self.nacc: Accumulator | None = accumulator_of(pol)
        self.Rmax = Rmax
        if self.nacc is None:
            self.xi_glob = 2.0 * float(hulp(2.0 * Rmax + self.Lmax, "fp32"))
        else:  # inf where |S − R| may pass the narrow accumulator's range (the caller reports overflow)
            self.xi_glob = float(self.xi(2.0 * Rmax + self.Lmax))
        self.rho = -math.log1p(-(2.0**-22)) - math.log1p(-U16)  # H2 and one fp16 rounding

    def xi(self, amag: Any) -> _F64:
        """|fl32(fl32(s − H) − L) − (s − R)| for |s − R| ≤ amag (Lemma 16.2: two fp32 roundings). Narrow
        accumulator (the kernel's ``_minus_ref``, §16.10): |fl_acc(fl32(s − fl32(H + L))) − (s − R)| ≤
        hulp32(R_max + L_max) + hulp32(a′) + err_acc(a′ + hulp32(a′)), a′ = amag + hulp32(R_max + L_max);
        inf past the accumulator's range."""
        a = np.asarray(amag, dtype=np.float64)
        if self.nacc is not None:
            e1 = float(hulp(self.Rmax + self.Lmax, "fp32"))
            e2 = hulp(a + e1, "fp32")
            return np.asarray(e1 + e2 + self.nacc.err_bound((a + e1 + e2) * (1 + 2.0**-40)), dtype=np.float64)
        return np.asarray(hulp(a + self.Lmax, "fp32") + hulp(a + hulp(a + self.Lmax, "fp32"), "fp32"))

    def convert_err(self, amag: Any, pre: Any, upward: bool = False) -> _F64:
        """Error of the conversion t = conv(a) against τ·y, where |a − y| ≤ ``pre`` and |y| ≤ ``amag``
        (Lemma 16.2): ``scale="acc"``: fl16(fl32(τ32·a)); ``"scores"``: fl16(fl16(a)·τ16).

        ``upward``: a bound on t − τ·y only (each fp16 rounding raises a value by at most 16, half the
        largest fp16 spacing; a rounding that overflows goes to −inf for a negative value, i.e. down)."""
        y = np.asarray(amag, dtype=np.float64)
        p = np.asarray(pre, dtype=np.float64)
        mag = y + p

        def h16(x: Any) -> _F64:
            h = hulp(x, "fp16")
            return np.minimum(h, 16.0) if upward else h

        if self.place == "acc":
            return np.asarray(
                self.tmax * p
                + abs(self.t32 - self.tau) * mag
                + hulp(self.t32 * mag, "fp32")
                + h16(self.t32 * mag * (1 + U32))
            )
        h1 = h16(mag)
        return np.asarray(
            self.tmax * (p + h1)
            + abs(self.t16 - self.tau) * mag
            + h16(self.t16 * (mag + h1) * (1 + 2.0**-40))
        )

    def moves_err(self, jsum: Any, count: Any) -> _F64:
        """Σ_k (error of x_k) over ``count`` moves whose jumps |R_new − R_old| sum to ≤ ``jsum``
        (Lemma 16.3 (iii)): :meth:`convert_err` and :meth:`dR_err` are below affine functions of the
        magnitude (half an ulp ≤ u·M + η, Lemma 1), so the sum is bounded by the total jump, which
        telescopes to R_final − R^{(j)}."""
        J = np.asarray(jsum, dtype=np.float64)
        c = np.asarray(count, dtype=np.float64)
        P = 3.0 * (U32 * (J + 2.0 * c * self.Lmax) + c * (ETA32 + 1e-300))  # Σ dR_err
        m = J + P
        if self.place == "acc":
            lin = abs(self.t32 - self.tau) + U32 * self.t32 + U16 * self.t32 * (1 + U32) ** 2
            out = self.tmax * P + lin * m + c * (ETA32 + ETA16)
        else:
            out = (
                self.tmax * (P + U16 * m + c * ETA16)
                + abs(self.t16 - self.tau) * m
                + U16 * self.t16 * (1 + 2.0**-40) * (m * (1 + U16) + c * ETA16)
                + c * ETA16
            )
        return np.asarray(out * (1 + 2.0**-40))

    def dR_err(self, jump: Any) -> _F64:
        """fp32 error of the move's R_old − R_new, evaluated as (h_o − h_n)·2^e_hi + (l_o − l_n)·2^e_lo
        (three fp32 roundings, each at most half an ulp at |jump| + 2·|L|max)."""
        j = np.asarray(jump, dtype=np.float64)
        return np.asarray(3.0 * hulp(j + 2.0 * self.Lmax + 1e-300, "fp32"))


def e_hi_upper(qa: _F64, ka: _F64) -> int:
    """An upper bound on the kernel's e_hi (``pasa_npu.kernel._ref_exponents``): its fp32 evaluation of
    max_i Σ|q_i|·max|k| is enclosed by the float64 value × (1 ± 2⁻¹⁶), and e_hi increases with it."""
    bound = float(np.abs(qa).sum(axis=-1).max(initial=0.0)) * float(np.abs(ka).max(initial=0.0))
    bound *= 1 + 2.0**-16
    if not (bound > 0 and math.isfinite(bound)):
        return 0
    return max(0, math.ceil(math.log2(bound)) - 15)


# ---------------------------------------------------------------------------------------------------
# the centre v̄ (v_center): its candidates under any fp32 summation order


def vbar_candidates(v: _F64, mode: str, limit: int = 64) -> tuple[_F64, bool]:
    """The values the kernel's v̄ (``pasa_npu.kernel._center_v``) can take, per column, for V (S2, Dv)
    (fp16 values): (K, Dv) candidates (K ≥ 1; columns with fewer candidates repeat their last one) and
    whether the list is complete (False: more than ``limit`` per column; the caller then uses the
    interval [min, max] of the candidates only)."""
    Dv = v.shape[1]
    if mode == "none":
        return np.zeros((1, Dv)), True
    S2 = v.shape[0]
    mean = v.mean(axis=0)
    mag = np.abs(v).sum(axis=0) / S2
    rad = gamma(S2 + 1, U32) * mag + U32 * np.abs(mean) * 1.01 + 1e-300 + 2.0**-40 * mag
    lo, hi = mean - rad, mean + rad
    if mode == "grid":
        quantum = quantum_array(np.abs(v).max(axis=0), "fp16")
        a = np.round(lo / quantum)
        b = np.round(hi / quantum)
        cnt = (b - a).astype(np.int64) + 1
        K = int(min(cnt.max(initial=1), limit))
        steps = np.minimum(np.arange(K)[:, None], cnt[None, :] - 1)
        cands = (a[None, :] + steps) * quantum[None, :]
        return rnd16(cands), bool(cnt.max(initial=1) <= limit)
    # "mean": fp16 rounding of the fp32 mean; enumerate the fp16 values between the rounded ends
    clo, chi = rnd16(lo), rnd16(hi)
    out = [clo]
    cur = clo.astype(np.float16)
    complete = True
    for _ in range(limit - 1):
        nxt = np.where(cur.astype(np.float64) < chi, np.nextafter(cur, np.float16(np.inf)), cur)
        if np.array_equal(nxt, cur):
            break
        cur = nxt
        out.append(cur.astype(np.float64))
    else:
        complete = bool(np.all(cur.astype(np.float64) >= chi))
    cands = np.stack(out)
    if not complete:
        cands = np.stack([clo, chi])
    return cands, complete


def centring_terms(vp: _F64, cands: _F64, complete: bool) -> tuple[_F64, _F64, _F64, _F64]:
    """For padded V (L, Dv) and the v̄ candidates (K, Dv): max over candidates of |fl16(v − v̄)| and of
    |ρ| = |fl16(v − v̄) − (v − v̄)| per entry (L, Dv), of |v̄| (Dv), and the candidates' hull
    (2, Dv) — with an incomplete list, v̄ anywhere in [min, max] (then ρ ≤ half an ulp at |v| + |v̄|)."""
    vcabs = np.zeros_like(vp)
    rho = np.zeros_like(vp)
    for c in cands:
        vc = rnd16(vp - c[None, :])
        vcabs = np.maximum(vcabs, np.abs(vc))
        rho = np.maximum(rho, np.abs(vc - (vp - c[None, :])))
    hull = np.stack([cands.min(axis=0), cands.max(axis=0)])
    if not complete:
        big = np.abs(vp) + np.abs(hull).max(axis=0)[None, :]
        vcabs = np.maximum(vcabs, big * (1 + U16))
        rho = np.maximum(rho, hulp(big, "fp16"))
    return vcabs, rho, np.abs(hull).max(axis=0), hull


# ---------------------------------------------------------------------------------------------------
# Theorem 6: one row group


def _flush_schedule(pol: Any, mp: _B, j0: npt.NDArray[np.int64], T: int) -> tuple[_F64, _F64]:
    """Where flushes can happen, per row and j (R, T), right after blocks ≤ j have been accumulated:
    move flushes (α = fl16(e^x) may differ from 1: one before every block k where a move is possible)
    and plain flushes (α = 1 exactly: every block with ``pv_accum="vector"``, and the end)."""
    R = mp.shape[0]
    Fm = np.zeros((R, T))
    Fm[:, : T - 1] += mp[:, 1:]
    Fp = np.zeros((R, T))
    if pol.pv_accum == "vector":
        Fp += 1.0
    else:
        Fp[:, T - 1] += 1.0
    cols = np.arange(T)[None, :]
    on = cols >= j0[:, None]
    return np.where(on, Fm, 0.0), np.where(on, Fp, 0.0)


def _overflowed(R: int, Dv: int, rows: _B) -> dict[str, Any]:
    """The result of :func:`run_group` where a narrow accumulator may overflow or saturate (§16.10):
    bound +inf on ``rows`` (every row that sees a key: the group's constants are not certified), 0 on the
    rows that see no key (their output is 0, as in :func:`run_group`), overflow flagged."""
    total = np.where(rows[:, None], np.inf, np.zeros((R, Dv)))
    bound = np.where(rows, np.inf, 0.0)
    return dict(
        bound=bound,
        cap=np.where(rows, np.inf, 0.0),
        terms=dict(score_accumulation=math.inf if rows.any() else 0.0),
        worst=(math.inf, "score_accumulation:overflow") if rows.any() else (0.0, ""),
        overflow=bool(rows.any()),
        prob=bound,
        total=total,
        moves_possible=np.zeros(R, dtype=np.int64),
    )


def _narrow_pend(
    pol: Any,
    nacc: Accumulator,
    n: int,
    T: int,
    live: _B,
    vis: _B,
    Shi: _F64,
    RLj: _F64,
    eps_t: _F64,
    C: Consts,
    vcabs: _F64,
) -> tuple[float, float, _F64]:
    """The pending accumulator P·[V − v̄, 1] in a narrow accumulator (docs/bounds.md §16.10): the kernel's
    ``_mma(P, V_j, init=pend)`` rounds after every chunk of k keys of a block, so a segment between two
    flushes (all T blocks for ``pv_accum="matrix"``, one for ``"vector"``) is one chunked sum of exact
    products (fp16·fp16) with m = (T or 1)·⌈n/k⌉ roundings: Lemma 15.2 gives (Γ_seg, H_seg) with
    |pend − Σ P(v − v̄)| ≤ Γ_seg·Σ P|v − v̄| + H_seg. Returns (Γ_seg, H_seg, magnitude bound per row of every
    partial sum: Σ_r P_r^up·max(|v_r − v̄|, 1)·(1 + Γ_seg) + H_seg, P_r^up = e^{t_r^up} from the tile's
    upper bound t_r ≤ τ·(S_r − R^{(j)}) + ε_t, deep columns 0)."""
    blocks = T if pol.pv_accum == "matrix" else 1
    m = blocks * -(-n // nacc.chunk)
    big, small = gamma_acc(m * nacc.chunk, nacc)
    tmin = min(C.tau, C.tc) * (1 - 2.0**-20)
    with np.errstate(invalid="ignore", over="ignore"):
        arg = Shi - RLj
        tb = np.where(arg >= 0, C.tmax * arg, tmin * arg) + eps_t
        p_up = np.where(
            live, np.exp(np.minimum(tb, 800.0)) * (1 + 2.0**-22) * (1 + U16) * 1.001 + 2.0**-24, 0.0
        )
    p_up = np.where(np.isnan(p_up), np.inf, p_up)
    col = np.maximum(vcabs.max(axis=1) if vcabs.shape[1] else np.zeros(vcabs.shape[0]), 1.0)
    with np.errstate(invalid="ignore", over="ignore"):
        mag = (p_up @ col) * (1 + big) * (1 + 2.0**-40) + small
    return big, small, np.where(np.isnan(mag), np.inf, mag)


def run_group(
    pol: Any,
    tau: float,
    n: int,
    qg: _F64,
    kp: _F64,
    vp: _F64,
    vis: _B,
    cands: _F64,
    complete: bool,
    e_hi_max: int,
    golden: Any,
    S2: int,
) -> dict[str, Any]:
    """Theorem 6 for the rows ``qg`` (R, D) of one KV head: per row and output column, a bound on
    |out − O_exact|. ``kp``, ``vp``: keys and values padded to T·n rows; ``vis`` (R, L) the visible
    columns; ``cands`` the v̄ candidates; ``golden(s64, sig, vis, vp) -> (o64, eps_o)`` the float64
    reference of Lemma 8. Returns the same keys as :meth:`pasa_theory.rigorous._Engine.run`."""
    R, D = qg.shape
    L, Dv = vp.shape
    T = L // n
    blk = np.repeat(np.arange(T), n)
    # exact scores (accumulator units) and their float64 error (Lemma 8 without τ)
    S = qg @ kp.T
    absdot = np.abs(qg) @ np.abs(kp).T
    sig = gamma(D + 2, 2.0**-53) * absdot
    absdot_hi = absdot * (1 + gamma(D + 2, 2.0**-53))
    eacc = acc_error(absdot_hi, D, pol)
    nacc = accumulator_of(pol)
    if nacc is not None:  # Theorem 5 on the actual operands: the kernel's chunks of Q·Kᵀ, per element
        qk_enc = matmul_enclosure(qg, qg, kp.T, kp.T, nacc)
        eacc = np.minimum(eacc, np.where(qk_enc.overflow, np.inf, qk_enc.err))
        if np.any(vis & ~np.isfinite(eacc)):  # R_max of Lemma 16.1 is per group: no row is certified
            return _overflowed(R, Dv, np.asarray(vis.any(axis=1), dtype=bool))
    Slo, Shi = S - sig, S + sig
    ninf = -np.inf
    with np.errstate(invalid="ignore"):
        Bhi = np.where(vis, Shi, ninf).reshape(R, T, n).max(axis=2)
        Blo = np.where(vis, Slo, ninf).reshape(R, T, n).max(axis=2)
    anyvis: _B = np.asarray(vis.reshape(R, T, n).any(axis=2), dtype=bool)
    nonempty: _B = np.asarray(anyvis.any(axis=1), dtype=bool)
    j0 = np.where(nonempty, np.argmax(anyvis, axis=1), T)
    Mhi = np.maximum.accumulate(Bhi, axis=1)
    Mlo = np.maximum.accumulate(Blo, axis=1)
    Sabs = float(np.max(np.where(vis, np.abs(S) + sig, 0.0), initial=0.0))
    eacc_row = np.max(np.where(vis, eacc, 0.0), axis=1, initial=0.0)
    eacc_max = float(eacc_row.max(initial=0.0))
    # Lemma 16.1: the band of the reference around the running maximum (first pass with a generous Rmax)
    theta_s = (float(rnd16(pol.ref_move_at)) + 1.0) / (float(np.float32(tau)) * (1 - U32))
    Rmax = 2.0 * (Sabs + eacc_max + theta_s) + 2.0
    C = Consts(pol, tau, Rmax, e_hi_max)
    if not math.isfinite(C.xi_glob):  # narrow accumulator: S − R may pass its range (§16.10)
        return _overflowed(R, Dv, nonempty)
    dR = eacc_row + C.xi_glob + C.place_err  # δ_R: |R_new − (block max of S)| at a move, per row
    Delta = np.maximum(C.theta_up + C.xi_glob + eacc_row, dR) + T * max(0.0, C.place_err - C.theta_lo)
    if not float(np.max(Sabs + Delta, initial=0.0)) <= Rmax:  # the first pass was not generous enough
        raise AssertionError("Lemma 16.1: Rmax bootstrap failed")
    # Lemma 16.1 (iv): the reference as an interval per block, decisions followed where they are decided
    xi_a = eacc_row + C.xi_glob  # |a_r − (S_r − R)| ≤ xi_a for every column of the row
    RL = np.full((R, T), ninf)  # R^{(j)}: the reference block j's exponentials are taken against
    RH = np.full((R, T), ninf)
    mp = np.zeros((R, T), dtype=bool)  # a move at block j is possible
    rl = np.full(R, ninf)
    rh = np.full(R, ninf)
    started = np.zeros(R, dtype=bool)
    with np.errstate(invalid="ignore"):
        for j in range(T):
            first = anyvis[:, j] & ~started
            act = anyvis[:, j] & started
            poss = act & (Bhi[:, j] + xi_a - rl > C.theta_lo)
            cert = act & (Blo[:, j] - xi_a - rh > C.theta_up)
            mv_lo = np.maximum(Blo[:, j] - dR, rl + C.theta_lo - C.place_err)
            mv_hi = Bhi[:, j] + dR
            nl = np.where(cert, mv_lo, np.where(poss, np.minimum(rl, mv_lo), rl))
            nh = np.where(poss, np.maximum(rh, mv_hi), rh)
            nl = np.where(first, Blo[:, j] - dR, nl)
            nh = np.where(first, Bhi[:, j] + dR, nh)
            # the band of Lemma 16.1 (ii): M_j − Δ ≤ R^{(j)} ≤ M_j + δ_R
            rl = np.where(started | first, np.maximum(nl, Mlo[:, j] - Delta), nl)
            rh = np.where(started | first, np.minimum(nh, Mhi[:, j] + dR), nh)
            RL[:, j], RH[:, j] = rl, rh
            mp[:, j] = poss
            started |= first
    PL = np.concatenate([np.full((R, 1), ninf), RL[:, :-1]], axis=1)  # before the move at j
    PH = np.concatenate([np.full((R, 1), ninf), RH[:, :-1]], axis=1)
    cols = np.arange(T)[None, :]
    with np.errstate(invalid="ignore"):
        jump = np.where(mp, Bhi + dR[:, None] - PL, 0.0)  # R_new − R_old at a move
    jump = np.where(np.isfinite(jump), np.maximum(jump, 0.0), 0.0)
    pre_x = C.dR_err(jump)
    eps_x = np.where(mp, C.convert_err(jump, pre_x), 0.0)
    xmag = np.where(mp, C.tmax * (jump + pre_x) * (1 + 2.0**-20) + eps_x, 0.0)
    overflow = np.any(xmag >= MAX16 * (1 - U16), axis=1)  # x may round to −inf: outside Theorem 6
    # chain of later moves for a column of block j: Σ_{k>j, possible} (ε_x,k + ρ)
    later = np.where(mp, eps_x + C.rho, 0.0)
    rev = np.cumsum(later[:, ::-1], axis=1)[:, ::-1]
    chain = np.concatenate([rev[:, 1:], np.zeros((R, 1))], axis=1)
    # or by the telescoped total jump after block j: Σ_{k>j} |jump_k| ≤ R_final − R^{(j)} + 2·#moves·δ_place
    cnt_rev = np.cumsum(mp[:, ::-1], axis=1)[:, ::-1].astype(float)
    cnt = np.concatenate([cnt_rev[:, 1:], np.zeros((R, 1))], axis=1)
    with np.errstate(invalid="ignore"):
        jtot = np.maximum(RH[:, -1:] - RL, 0.0) + 2.0 * cnt * C.place_err
    jtot = np.where(np.isfinite(jtot), jtot, np.inf)
    chain_t = np.where(cnt > 0, C.moves_err(jtot, cnt) + cnt * C.rho, 0.0)
    chain = np.minimum(chain, np.where(np.isnan(chain_t), np.inf, chain_t))
    # α may underflow (absolute part, Lemma 16.3): x < log(tiny16) possible
    uf_alpha = mp & (-xmag < math.log(2.0**-14) + 1.0)
    ufa = uf_alpha.astype(float)
    ufa_rev = np.cumsum(ufa[:, ::-1], axis=1)[:, ::-1]
    ufa_after = np.concatenate([ufa_rev[:, 1:], np.zeros((R, 1))], axis=1)
    # step a′: the tile against R^{(j)} (Lemma 16.2), per column
    RLj, RHj = RL[:, blk], RH[:, blk]
    with np.errstate(invalid="ignore"):
        dist = np.where(vis, np.maximum(Shi - RLj, RHj - Slo), 0.0)  # ≥ |S_r − R^{(j)}|
    dist = np.where(np.isfinite(dist), dist, 0.0)
    y0 = dist + eacc
    pre_t = eacc + C.xi(y0)
    eps_t = C.convert_err(dist, pre_t)
    eps_up = C.convert_err(dist, pre_t, upward=True)
    if pol.ref_move == "rebase":
        # the old tile, against R^{(j−1)}, shifted by x: one more fp16 rounding
        with np.errstate(invalid="ignore"):
            dist_old = np.where(vis, np.maximum(Shi - PL[:, blk], PH[:, blk] - Slo), 0.0)
        dist_old = np.where(np.isfinite(dist_old), dist_old, 0.0)
        pre_o = eacc + C.xi(dist_old + eacc)
        eps_o_t = C.convert_err(dist_old, pre_o)
        tnew = C.tmax * (dist + pre_t) * (1 + 2.0**-20) + eps_t
        eps_rb = eps_o_t + eps_x[:, blk] + hulp(tnew + eps_o_t + eps_x[:, blk], "fp16")
        eps_t = np.where(mp[:, blk], np.maximum(eps_t, eps_rb), eps_t)
        up_rb = C.convert_err(dist_old, pre_o, upward=True) + eps_x[:, blk] + 16.0
        eps_up = np.where(mp[:, blk], np.maximum(eps_up, up_rb), eps_up)
    # deep columns: t ≤ −20 in every trajectory ⇒ p = 0 exactly (rounding is monotone, overflow to −inf
    # included), so they contribute nothing
    with np.errstate(invalid="ignore"):
        y_up = tau * (Shi - RLj)
        t_up = y_up + np.abs(y_up) * 2.0**-40 + eps_up
    deep = vis & (t_up <= _DEEP)
    live = vis & ~deep
    tmag = np.where(live, C.tmax * (dist + pre_t) * (1 + 2.0**-20) + eps_t, 0.0)
    overflow |= np.any(tmag >= MAX16 * (1 - U16), axis=1)
    if nacc is not None:  # S − R of a live column may pass the narrow accumulator's range
        overflow |= np.any(live & ~np.isfinite(eps_t), axis=1)
    E = np.where(live, eps_t + C.rho + chain[:, blk], 0.0)  # |log W_r − τ(S_r − R_final)| (Lemma 16.3)
    with np.errstate(invalid="ignore"):
        t_hi = np.where(live, C.tmax * np.maximum(Shi - RLj, 0.0) + eps_t, 0.0)  # t ≤ t_hi
    Pmax = math.exp(float(np.max(t_hi, initial=0.0)))
    Pmax *= (1 + 2.0**-22) * (1 + U16) * 1.001
    uf_p = live & (-(C.tmax * dist) - eps_t < math.log(2.0**-14) + 1.0)  # p may be subnormal
    a_r = np.where(live, (uf_p * 1.0 + Pmax * ufa_after[:, blk]) * (ETA16 + ETA32) * 1.001, 0.0)
    Z = a_r.sum(axis=1)
    # Lemma 16.3: Ŵ_r = e^{τ(S_r − M)} e^{±E_r}, M the float64 row maximum, κ = e^{τ(M − R_final)}
    M = np.max(np.where(vis, S, ninf), axis=1, keepdims=True)
    M = np.where(np.isfinite(M), M, 0.0)
    sigt = tau * sig
    s64 = tau * S
    a64 = 4 * 2.0**-53 * (np.abs(s64) + np.abs(tau * M))
    x0 = s64 - tau * M
    with np.errstate(over="ignore", invalid="ignore"):
        Whi = np.where(live, np.exp(x0 + sigt + a64 + E) * (1 + 2.0**-50), 0.0)
        Wlo = np.where(live, np.exp(x0 - sigt - a64 - E) * (1 - 2.0**-50), 0.0)
        wmid = np.where(vis, np.exp(x0), 0.0)
        whi = np.where(vis, np.exp(x0 + sigt + a64) * (1 + 2.0**-50), 0.0)
        wlo = np.where(vis, np.exp(x0 - sigt - a64) * (1 - 2.0**-50), 0.0)
    # κ ≥ K_lo: R_final ≤ M + δ_R (exact maximum ≤ float64 M + σ)
    sig_row = np.max(np.where(vis, sigt, 0.0), axis=1, initial=0.0)
    Rfin_hi = np.where(nonempty, RH[:, -1], M[:, 0])  # R_final ≤ RH, κ = e^{τ(M − R_final)}
    Klo = np.exp(-np.maximum(tau * (Rfin_hi - M[:, 0]), 0.0) * (1 + 2.0**-40) - sig_row) * (1 - 2.0**-50)
    SWlo = Wlo.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = SWlo - Z / Klo
        frac = np.where(denom > 0, 1.0 / np.where(denom > 0, denom, 1.0), np.inf) * (1 + 2.0**-40)
    # golden (Lemma 8) and the ratio lemma (Lemma 6 with the generalised normalisation of Lemma 16.3)
    o64, eps_o = golden(s64, sigt, vis, vp)
    cprime = ((Wlo + Whi).sum(axis=1) / 2) / np.where(wmid.sum(axis=1) > 0, wmid.sum(axis=1), 1.0)
    with np.errstate(invalid="ignore", over="ignore"):
        dev = np.maximum(Whi - cprime[:, None] * wlo, cprime[:, None] * whi - Wlo)
    dev = np.where(vis, np.where(np.isnan(dev), np.inf, np.maximum(dev, 0.0)), 0.0)
    vcabs, rho_v, vbar_abs, hull = centring_terms(vp, cands, complete)
    BA = np.zeros((R, Dv))
    capd = np.zeros((R, Dv))
    chunk = max(1, (1 << 22) // max(1, L * Dv))
    for r0 in range(0, R, chunk):
        r1 = min(R, r0 + chunk)
        vis3 = vis[r0:r1, :, None]
        dv0 = np.where(vis3, np.abs(vp[None, :, :] - o64[r0:r1, None, :]), 0.0)
        capd[r0:r1] = dv0.max(axis=1)
        dv = np.where(vis3, dv0 + eps_o[r0:r1, None, :], 0.0)
        num = np.einsum("rl,rld->rd", dev[r0:r1], dv)
        absn = np.einsum("rl,rld->rd", a_r[r0:r1], dv)
        with np.errstate(invalid="ignore", over="ignore"):
            ba = frac[r0:r1, None] * (num + absn / Klo[r0:r1, None])
        BA[r0:r1] = np.where(np.isnan(ba), np.inf, ba)
    cap = capd.max(axis=1) if Dv else np.zeros(R)
    # Lemma 16.4: the accumulators, per block mass U_j ≥ Σ_{r∈j} W_r/ΣW (and with |v − v̄|)
    with np.errstate(invalid="ignore", over="ignore"):
        Uj = frac[:, None] * (
            np.add.reduceat(Whi, np.arange(0, L, n), axis=1)
            + np.add.reduceat(a_r, np.arange(0, L, n), axis=1) / Klo[:, None]
        )
        UVj = np.stack(
            [
                frac[:, None]
                * (
                    (Whi[:, j * n : (j + 1) * n] + a_r[:, j * n : (j + 1) * n] / Klo[:, None])
                    @ vcabs[j * n : (j + 1) * n]
                )
                for j in range(T)
            ],
            axis=1,
        )
    Fm, Fp = _flush_schedule(pol, mp, j0, T)
    F = Fm + Fp
    nflush = F.sum(axis=1)
    g = 1.0 / (1.0 - (4 * (nflush + T) + 8) * U16 - 2.0**-20)
    PU = np.cumsum(Uj, axis=1) * g[:, None]
    PUV = np.cumsum(UVj, axis=1) * g[:, None, None]
    inv_sw = frac / Klo  # ≥ 1/ΣW
    eta_k = ETA16 * (inv_sw[:, None] + 2.0 * PU)  # one rounding's absolute part (Lemma 16.4 (iv))
    seg = n * T + T if pol.pv_accum == "matrix" else n + 1
    gseg = gamma(seg, U32)
    u_inc = U32 + U16 * (1 + U32)  # fl16(fl32(pend·α·2^−E′)): one fp32 and one fp16 rounding
    act = cols >= j0[:, None]
    eta_O = (F[:, :, None] * 3 * eta_k[:, :, None]).sum(axis=1)
    eta_l = np.zeros(R)
    if nacc is not None:  # §16.10: pend accumulated in chunks over each block's keys (Lemma 15.2)
        gseg, eta_p, pmag = _narrow_pend(pol, nacc, n, T, live, vis, Shi, RLj, eps_t, C, vcabs)
        overflow |= pmag > nacc.maxf
        eta_n = eta_p * (inv_sw / Klo + 2.0 * PU[:, -1])  # its absolute part, in units of the output
        eta_O = eta_O + eta_n[:, None]
        eta_l = eta_n
    if pol.row_sum == "vector" and pol.accum == "pow2":  # O·2^−s of a renormalisation: subnormal only
        eta_O = eta_O + (act * eta_k).sum(axis=1)[:, None]
    # (i) crude: every rounding at the absolute mass Σ W|v − v̄| accumulated so far
    EO_abs = (
        gseg * PUV[:, -1, :]
        + u_inc * PUV[:, -1, :]
        + (Fm[:, :, None] * U16 * PUV).sum(axis=1)
        + (F[:, :, None] * U16 * PUV).sum(axis=1)
        + eta_O
    )
    EO_abs = np.where(np.isnan(EO_abs), np.inf, EO_abs)
    # (ii) fine: the stored O and the increments are signed partial sums, |Σ_{r≤j} W_r (v_r − v̄)|/ΣW ≤
    # PO_j (exact weights' partial sum plus the weights' deviation), plus the rounding errors so far
    dev1 = np.where(vis, np.maximum(np.maximum(Whi - wlo, whi - Wlo), 0.0), 0.0)
    Pw = np.zeros((R, T, Dv))
    for c in cands:
        vc = rnd16(vp - c[None, :])
        part = np.stack([wmid[:, j * n : (j + 1) * n] @ vc[j * n : (j + 1) * n] for j in range(T)], axis=1)
        Pw = np.maximum(
            Pw,
            np.abs(np.cumsum(part, axis=1)) * (1 + 2.0**-40)
            + 2.0**-40 * (np.abs(wmid) @ np.abs(vc))[:, None, :],
        )
    if not complete:
        Pw = np.full_like(Pw, np.inf)
    with np.errstate(invalid="ignore", over="ignore"):
        dv_part = np.stack(
            [
                (dev1[:, j * n : (j + 1) * n] + a_r[:, j * n : (j + 1) * n] / Klo[:, None])
                @ vcabs[j * n : (j + 1) * n]
                for j in range(T)
            ],
            axis=1,
        )
        PO = frac[:, None, None] * (Pw + np.cumsum(dv_part, axis=1)) * (1 + 2.0**-40)
        POg = np.minimum(PO * g[:, None, None], PUV) + EO_abs[:, None, :]
        maxPO = np.maximum.accumulate(POg, axis=1)
        maxprev = np.concatenate([np.zeros((R, 1, Dv)), maxPO[:, :-1]], axis=1)
        inc_sum = np.minimum(PUV[:, -1, :], (F[:, :, None] * (POg + maxprev)).sum(axis=1))
        EO_fine = (
            gseg * PUV[:, -1, :]
            + u_inc * inc_sum
            + (Fm[:, :, None] * U16 * maxPO).sum(axis=1)
            + (F[:, :, None] * U16 * POg).sum(axis=1)
            + eta_O
        )
    EO = np.where(np.isnan(EO_fine), EO_abs, np.minimum(EO_abs, EO_fine))
    if pol.row_sum == "matrix":
        El = gseg * PU[:, -1] + u_inc * PU[:, -1] + (Fm * U16 * PU + F * (U16 * PU + 3 * eta_k)).sum(axis=1)
        El = El + eta_l
    else:
        lj = gamma(n, U32) * (1 + U16) + U16
        El = (act * (lj * Uj + U16 * PU + 3 * eta_k)).sum(axis=1) + (Fm * U16 * PU + F * eta_k).sum(axis=1)
    El = np.where(np.isnan(El), np.inf, El)
    EO = np.where(np.isnan(EO), np.inf, EO)
    # |O_W(v − v̄)| ≤ |o − v̄| + ρ + B_A (the computed weights' average of v − v̄)
    ocen = np.maximum(np.abs(o64 - hull[0][None, :]), np.abs(o64 - hull[1][None, :]))
    with np.errstate(invalid="ignore", over="ignore"):
        Brho = frac[:, None] * ((Whi + a_r / Klo[:, None]) @ rho_v)  # ≥ |Σ W ρ|/ΣW
    Brho = np.minimum(np.where(np.isnan(Brho), np.inf, Brho), rho_v.max(axis=0, initial=0.0)[None, :])
    ocur = ocen + eps_o + BA + Brho
    with np.errstate(invalid="ignore", divide="ignore"):
        BC = np.where(El[:, None] < 1, (EO + ocur * El[:, None]) / (1 - El[:, None]), np.inf)
    Y = ocur + BC
    centred = pol.v_center != "none"
    h_y = hulp(Y, "fp16")
    Bend = h_y + (hulp(Y + h_y + vbar_abs[None, :], "fp16") if centred else 0.0)
    total = (BA + Brho + BC + Bend + eps_o) * (1.0 + 2.0**-30)
    total = np.where(np.isnan(total), np.inf, total)
    # Lemma 16.5: the last roundings are monotone, so out ∈ [fl(fl(o′ − v̄ − B) + v̄), fl(fl(o′ − v̄ + B) + v̄)]
    # for each candidate v̄ (B the error of Ô/ℓ̂ before them); the smaller of two valid bounds is valid
    if complete:
        B1 = BA + Brho + BC + eps_o
        enc = np.zeros((R, Dv))
        with np.errstate(invalid="ignore", over="ignore"):
            for c in cands if centred else np.zeros((1, Dv)):
                lo = np.nextafter(np.nextafter((o64 - c[None, :]) - B1, -np.inf), -np.inf)
                hi = np.nextafter(np.nextafter((o64 - c[None, :]) + B1, np.inf), np.inf)
                olo, ohi = rnd16(rnd16(lo) + c[None, :]), rnd16(rnd16(hi) + c[None, :])
                enc = np.maximum(enc, np.maximum(ohi - o64, o64 - olo))
        enc = (enc + eps_o) * (1.0 + 2.0**-30)
        enc = np.where(np.isnan(enc) | ~np.isfinite(B1), np.inf, enc)
        enc_better = enc < total
        total = np.minimum(total, enc)
    else:
        enc_better = np.zeros((R, Dv), dtype=bool)
    total = np.where(nonempty[:, None], total, 0.0)
    total = np.where(overflow[:, None], np.inf, total)
    parts = dict(weights=BA, centring=Brho, accumulators=BC, output_rounding=Bend, golden=eps_o)
    terms = {
        k: float(np.nanmax(np.where(nonempty[:, None], val, 0.0))) if np.size(val) else 0.0
        for k, val in parts.items()
    }
    if R and Dv:
        r_w, d_w = np.unravel_index(
            np.argmax(np.where(np.isfinite(total), total, np.finfo(float).max)), total.shape
        )
        name = max(
            parts,
            key=lambda k: float(np.nan_to_num(np.broadcast_to(parts[k], total.shape)[r_w, d_w], nan=-1.0)),
        )
        if enc_better[r_w, d_w]:
            name = "output_enclosure"
        elif name == "weights":
            wp = dict(
                score_accumulation=float(np.max(np.where(live[r_w], tau * eacc[r_w], 0.0), initial=0.0)),
                conversion=float(
                    np.max(np.where(live[r_w], eps_t[r_w] - C.tmax * eacc[r_w], 0.0), initial=0.0)
                ),
                moves=float(np.max(chain[r_w], initial=0.0)),
            )
            name = "weights:" + max(wp, key=wp.__getitem__)
        worst = (float(total[r_w, d_w]), name)
    else:
        worst = (0.0, "")
    return dict(
        bound=total.max(axis=1) if Dv else np.zeros(R),
        cap=np.where(nonempty, cap, 0.0),
        terms=terms,
        worst=worst,
        overflow=bool(overflow.any()),
        prob=total.max(axis=1) if Dv else np.zeros(R),
        total=total,
        moves_possible=mp.sum(axis=1),
    )


# ---------------------------------------------------------------------------------------------------
# Theorem 7: the a-priori bound


def a_priori_ref(
    pol: Any,
    *,
    tau: float,
    n: int,
    d: int,
    S2: int,
    q_max: float,
    k_max: float,
    v_abs: float,
    v_spread: float,
) -> tuple[float, float, dict[str, float], bool]:
    """Theorem 7 (docs/bounds.md §16.7): (bound, Λ, terms, overflow_possible) for every input with
    max|q| ≤ q_max, max|k| ≤ k_max, max|v| ≤ v_abs, column spread of V ≤ v_spread, head dim d, S2 keys,
    block n. Lemmas 16.1–16.5 with every per-column quantity replaced by its worst case over the class:
    |S| ≤ d·q_max·k_max, a move possible at every block after the first, every partial sum at the total."""
    T = -(-S2 // n)
    Sabs = d * q_max * k_max
    eacc = float(acc_error(Sabs, d, pol))
    theta_s = (float(rnd16(pol.ref_move_at)) + 1.0) / (float(np.float32(tau)) * (1 - U32))
    Rmax = 2.0 * (Sabs + eacc + theta_s) + 2.0
    bound_e = Sabs * (1 + 2.0**-16)
    e_hi = max(0, math.ceil(math.log2(bound_e)) - 15) if bound_e > 0 else 0
    C = Consts(pol, tau, Rmax, e_hi)
    if not (math.isfinite(eacc) and math.isfinite(C.xi_glob)):  # a narrow accumulator's range (§16.10)
        return math.inf, math.inf, dict(score_accumulation=math.inf), True
    dR = eacc + C.xi_glob + C.place_err
    Delta = max(C.theta_up + C.xi_glob + eacc, dR) + T * max(0.0, C.place_err - C.theta_lo)
    terms: dict[str, float] = {}
    # Lemma 16.2 at the worst live column (t > −20 possible): |S_r − R| ≤ dist
    dist_all = 2 * Sabs + Delta
    up = float(C.convert_err(dist_all, eacc + C.xi(dist_all + eacc), upward=True))
    dist = min(dist_all, (-_DEEP + up) / tau + Delta + dR)
    pre_t = eacc + float(C.xi(dist + eacc))
    eps_t = float(C.convert_err(dist, pre_t))
    jump = 2 * Sabs + dR + Delta
    eps_x = float(C.convert_err(jump, C.dR_err(jump))) if T > 1 else 0.0
    xmag = C.tmax * (jump + float(C.dR_err(jump))) * (1 + 2.0**-20) + eps_x
    if pol.ref_move == "rebase" and T > 1:
        d_old = min(dist + jump, dist_all)  # |S_r − R_old| for a column of a block that moves R
        eps_o = float(C.convert_err(d_old, eacc + C.xi(d_old + eacc)))
        t_new = C.tmax * (dist + pre_t) * (1 + 2.0**-20) + eps_t
        eps_t = max(eps_t, eps_o + eps_x + float(hulp(t_new + eps_o + eps_x, "fp16")))
    # Lemma 16.3 (iii): the moves' errors through the telescoped total jump (≤ R_final − R_first)
    moves = min((T - 1) * eps_x, float(C.moves_err(2 * Sabs + 2 * dR + 2 * (T - 1) * C.place_err, T - 1)))
    lam = eps_t + C.rho + moves + (T - 1) * C.rho
    overflow = (T > 1 and xmag >= MAX16 * (1 - U16)) or not math.isfinite(lam)
    Pmax = math.exp(min(C.tmax * Delta + eps_t, 700.0)) * (1 + 2.0**-22) * (1 + U16) * 1.001
    Z = S2 * (1 + Pmax * (T - 1)) * (ETA16 + ETA32) * 1.001
    Klo = math.exp(-C.tmax * dR * (1 + 2.0**-20))
    centred = pol.v_center != "none"
    # v̄ lies in the column's hull up to its roundings (fp32 mean, grid or fp16): |v − v̄| ≤ spread + 3 hulp
    vdev = min(2 * v_abs, v_spread + 3 * float(hulp(v_abs, "fp16")) + 2.0**-20 * v_abs)
    vc_max = (vdev if centred else v_abs) * (1 + U16)
    rho = float(hulp(2 * v_abs, "fp16")) if centred else 0.0
    if pol.accum == "pow2":
        overflow |= 2 * vc_max * (1 + 2.0**-8) >= MAX16
    else:
        overflow |= S2 * Pmax * max(1.0, vc_max) * (1 + 2.0**-8) >= MAX16
    seg = n * T + T if pol.pv_accum == "matrix" else n + 1
    gseg = gamma(seg, U32)
    h_pend = 0.0
    if C.nacc is not None:  # §16.10: the pending accumulator's chunks (Lemma 15.2) and its range
        blocks = T if pol.pv_accum == "matrix" else 1
        gseg, h_pend = gamma_acc(blocks * -(-n // C.nacc.chunk) * C.nacc.chunk, C.nacc)
        pmag = min(S2, blocks * n) * Pmax * max(1.0, vc_max) * (1 + gseg) * (1 + 2.0**-8) + h_pend
        overflow |= pmag > C.nacc.maxf
    with np.errstate(over="ignore"):
        eL = math.exp(min(lam, 700.0))
        den = 1.0 / eL - Z / Klo
    if den <= 0 or overflow:
        return math.inf, lam, dict(weights=math.inf), bool(overflow)
    deep = S2 * math.exp(_DEEP + C.tmax * dR)
    BA = (math.expm1(lam) + deep + Z / Klo) * v_spread / den
    Ut = (eL + Z / Klo) / den
    UVt = Ut * vc_max
    Fm = T - 1
    Fp = T if pol.pv_accum == "vector" else 1
    F = Fm + Fp
    g = 1.0 / (1.0 - (4 * (F + T) + 8) * U16 - 2.0**-20)
    u_inc = U32 + U16 * (1 + U32)
    eta_k = ETA16 * (1.0 / (Klo * den) + 2.0 * Ut * g)
    eta_n = h_pend * (1.0 / (Klo * den) + 2.0 * Ut * g)  # the narrow pend's absolute part (0 if wide)
    EO = eta_n + (gseg + u_inc) * UVt * g + (Fm + F) * U16 * UVt * g + 3 * F * eta_k
    if pol.row_sum == "vector":
        lj = gamma(n, U32) * (1 + U16) + U16
        El = lj * Ut * g + T * (U16 * Ut * g + 3 * eta_k) + Fm * U16 * Ut * g + F * eta_k
        EO += T * eta_k
    else:
        El = eta_n + (gseg + u_inc) * Ut * g + (Fm + F) * U16 * Ut * g + 3 * F * eta_k
    ocur = (vdev if centred else v_abs) + BA + rho  # |O_W(v − v̄)| ≤ |o − v̄| + B_A + ρ
    BC = (EO + ocur * El) / (1 - El) if El < 1 else math.inf
    Y = ocur + BC
    Bend = float(hulp(Y, "fp16")) + (
        float(hulp(Y + v_abs + float(hulp(Y, "fp16")), "fp16")) if centred else 0.0
    )
    bound = (BA + rho + BC + Bend) * (1.0 + 2.0**-30)
    terms.update(
        score_accumulation=C.tmax * eacc,
        conversion=eps_t - C.tmax * eacc,
        moves=moves + (T - 1) * C.rho,
        weights=BA,
        centring=rho,
        accumulators=BC,
        output_rounding=Bend,
    )
    return float(bound), float(lam), terms, bool(overflow)
