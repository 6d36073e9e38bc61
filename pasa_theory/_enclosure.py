"""Element-wise enclosure of the kernel's run (docs/bounds.md §14): interval propagation through steps a–h.

Every quantity the kernel stores (scores, block maxima, means, reference, offsets, exponentials, row
sums, P·V tiles, ℓ and O) is carried as an interval [lo, hi] per element that contains the value of
*every* run allowed by the hypotheses H1–H3 of ``docs/bounds.md`` §1 (any fp32 summation order, any
exponential within :data:`pasa_theory.rigorous.EXP32_REL`). Rounding to nearest is monotone, so a
rounded quantity is enclosed by its rounded endpoints; an operation on exactly known (pinned) operands
gives a pinned result. Most of the run is pinned — only fp32 sums of unknown order and the last bit of
an exponential open an interval — so the enclosure of the output is usually one or two fp16 values
wide, and the bound |O_computed − O_exact| ≤ max(hi − o, o − lo) is close to the actual error.

What makes it a theorem rather than an emulation:

* fp32 accumulations (Q·K̃ᵀ, block means, row sums, P·V) are enclosed by the exact sum of the
  enclosed terms ± γ^{32}_m·Σ|terms| at their largest values (H1), never by the order torch used;
* every float64 operation of the enclosure itself is checked: products and sums go through the
  error-free transformations TwoProduct/TwoSum, and an endpoint whose float64 evaluation was inexact
  is moved one float64 ulp outward; exponentials are widened by 2⁻⁴⁸ relative (H3) and by the
  subnormal fp32 spacing;
* a data-dependent branch (take-over x > 0, re-centring |δ| > 16) whose enclosure allows both
  outcomes is *not* followed: the row is marked undecided and :mod:`pasa_theory.rigorous` uses its
  branch-covering bound (Theorem 1) for it instead (the minimum of two valid bounds is a valid bound);
* the pow2 renormalisation of ℓ and O (``accum="pow2"``) depends on the other rows of the kernel's row
  chunk, so the scale 2^−t is not known: it is exact except where a stored value may be subnormal,
  which the enclosure covers by an absolute widening η·2^t_max, with 2^t ≤ max(1, max ℓ) (Lemma 14.2).

Torch-free; called by :class:`pasa_theory.rigorous._Engine`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from . import _accum

_F64 = npt.NDArray[np.float64]
_B = npt.NDArray[np.bool_]

_SPLIT = 134217729.0  # 2^27 + 1, Veltkamp's splitter for float64
_EXP_MARGIN = 2.0**-48  # H3 (float64 exp below 2^-50) plus the float64 products of the margin
_FP32_ETA = 2.0**-150  # half the fp32 subnormal spacing: absolute error of an fp32 exp near underflow


# ---------------------------------------------------------------------------------------------------
# outward float64 arithmetic (error-free transformations)


def _two_sum_err(a: _F64, b: _F64, s: _F64) -> _F64:
    """Knuth's TwoSum: the exact a + b − fl64(a + b) (0 when the float64 sum was exact)."""
    bb = s - a
    return (a - (s - bb)) + (b - bb)


def _split(a: _F64) -> tuple[_F64, _F64]:
    c = _SPLIT * a
    hi = c - (c - a)
    return hi, a - hi


def _two_prod_err(a: _F64, b: _F64, p: _F64) -> _F64:
    """Dekker's TwoProduct: the exact a·b − fl64(a·b) (finite operands far from overflow)."""
    ah, al = _split(a)
    bh, bl = _split(b)
    return al * bl - (((p - ah * bh) - al * bh) - ah * bl)


def _down(x: _F64, err: _F64) -> _F64:
    """A float64 ≤ the exact x + err (x the float64 result, err its exact error)."""
    return np.where(err < 0, np.nextafter(x, -np.inf), x)


def _up(x: _F64, err: _F64) -> _F64:
    return np.where(err > 0, np.nextafter(x, np.inf), x)


def add(alo: Any, ahi: Any, blo: Any, bhi: Any) -> tuple[_F64, _F64]:
    """Enclosure of a + b for a ∈ [alo, ahi], b ∈ [blo, bhi] (float64 endpoints, exact sums enclosed)."""
    with np.errstate(invalid="ignore", over="ignore"):
        lo = np.asarray(alo + blo, dtype=np.float64)
        hi = np.asarray(ahi + bhi, dtype=np.float64)
        fin_lo, fin_hi = np.isfinite(lo), np.isfinite(hi)
        elo = np.where(fin_lo, _two_sum_err(np.asarray(alo, float), np.asarray(blo, float), lo), 0.0)
        ehi = np.where(fin_hi, _two_sum_err(np.asarray(ahi, float), np.asarray(bhi, float), hi), 0.0)
    return _down(lo, np.nan_to_num(elo)), _up(hi, np.nan_to_num(ehi))


def neg(lo: _F64, hi: _F64) -> tuple[_F64, _F64]:
    return -hi, -lo


def mul(alo: Any, ahi: Any, blo: Any, bhi: Any) -> tuple[_F64, _F64]:
    """Enclosure of a·b over the box (all four endpoint products, each enclosed exactly)."""
    cands_lo = []
    cands_hi = []
    with np.errstate(invalid="ignore", over="ignore"):
        for x in (alo, ahi):
            for y in (blo, bhi):
                xa = np.asarray(x, dtype=np.float64)
                ya = np.asarray(y, dtype=np.float64)
                p = xa * ya
                p = np.where((xa == 0) | (ya == 0), 0.0, p)  # 0·inf does not occur in a run: 0
                fin = np.isfinite(p) & (np.abs(p) < 1e300) & (np.abs(p) > 1e-290)
                e = np.where(fin, _two_prod_err(np.where(fin, xa, 0.0), np.where(fin, ya, 0.0), p), 0.0)
                tiny = (p != 0) & ~fin & np.isfinite(p)  # |p| below 1e-290: one ulp is not enough
                cands_lo.append(np.where(tiny, p - 1e-280, _down(p, np.nan_to_num(e))))
                cands_hi.append(np.where(tiny, p + 1e-280, _up(p, np.nan_to_num(e))))
    return np.minimum.reduce(cands_lo), np.maximum.reduce(cands_hi)


def div_pos(alo: _F64, ahi: _F64, blo: _F64, bhi: _F64) -> tuple[_F64, _F64]:
    """Enclosure of a/b for b ∈ [blo, bhi], blo > 0 (float64 division widened by two ulps)."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        c = np.stack([alo / blo, alo / bhi, ahi / blo, ahi / bhi])
    lo, hi = c.min(axis=0), c.max(axis=0)
    return np.nextafter(np.nextafter(lo, -np.inf), -np.inf), np.nextafter(np.nextafter(hi, np.inf), np.inf)


# ---------------------------------------------------------------------------------------------------
# rounding


def round_ideal(x: _F64, p: int) -> _F64:
    """Round to nearest even with p significand bits and an unbounded exponent range (exact in float64)."""
    m, e = np.frexp(x)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(x), np.ldexp(np.rint(np.ldexp(m, p)), e - p), x)


def exp_enclosure(ylo: _F64, yhi: _F64, fmt: Any, rel: float) -> tuple[_F64, _F64]:
    """Enclosure of fl_fmt(E(y)) for y ∈ [ylo, yhi] (H2: |E(y) − e^y| ≤ rel·e^y, E(0) = 1, E(y) ≤ 1 for
    y ≤ 0; near fp32 underflow an absolute fp32 half-spacing more; E(−∞) = 0)."""
    with np.errstate(over="ignore", invalid="ignore"):
        lo = np.exp(ylo) * (1.0 - rel - _EXP_MARGIN) - _FP32_ETA
        hi = np.exp(yhi) * (1.0 + rel + _EXP_MARGIN) + _FP32_ETA
    lo = np.where(ylo == -np.inf, 0.0, np.maximum(lo, 0.0))
    hi = np.where(yhi == -np.inf, 0.0, hi)
    rlo, rhi = fmt.rnd(lo), fmt.rnd(hi)
    rhi = np.where(yhi <= 0, np.minimum(rhi, 1.0), rhi)
    rlo = np.where(ylo == 0, 1.0, rlo)
    rhi = np.where(yhi == 0, 1.0, rhi)
    return rlo, rhi


def sum_enclosure(
    lo: _F64, hi: _F64, mag: _F64, m: int, u_acc: float, widen: float, grid: _F64 | None = None
) -> tuple[_F64, _F64]:
    """Enclosure of an accumulator result Σ x over m terms in any order (H1) from the enclosure
    [lo, hi] of the exact sum and mag ≥ Σ|x| at the terms' largest values: ± γ_m·mag plus the float64
    evaluation margin ``widen``·mag (the sums lo, hi, mag were formed in float64).

    ``grid``: a power of two g of which every term is an integer multiple. If mag ≤ g/u_acc, every
    partial sum, in any order, is a multiple of g of magnitude ≤ mag, hence representable: the sum is
    exact (Lemma 14.3), and so is its float64 evaluation when mag ≤ 2^53·g."""
    mu = m * u_acc
    g = mu / (1.0 - mu)
    rad = (g + widen) * mag
    if grid is not None:
        rad = np.where(mag <= grid / u_acc, 0.0, rad)
    return lo - rad, hi + rad


def tree_error(absx: _F64, u_acc: float) -> _F64:
    """Any-order bound on |fl(Σx) − Σx| over the last axis (Lemma 14.3): Σ_nodes u·|node|, with the
    k-th internal node in post-order holding at most k + 1 leaves, so |node_k| ≤ S_{k+1}·(1 + γ_m)
    (S_k the sum of the k largest |x|): u·(1 + γ_m)·Σ_{k=2}^{m} S_k. About half of γ_m·Σ|x| for
    terms of equal size, never more."""
    m = absx.shape[-1]
    srt = -np.sort(-absx, axis=-1)
    S = np.cumsum(srt, axis=-1)
    mu = m * u_acc
    return u_acc * (1.0 + mu / (1.0 - mu)) * (1.0 + 2.0**-40) * S[..., 1:].sum(axis=-1)


def mean_enclosure(blo: _F64, bhi: _F64, vd: Any, f32: Any, widen: float) -> tuple[_F64, _F64]:
    """Enclosure of the fp32 mean (sum in fp32 in any order, then one division by n) of the rows of
    a tile of vector-format numbers enclosed by [blo, bhi] (R × n): an interval of fp32 numbers."""
    n = blo.shape[1]
    absm = np.maximum(np.abs(blo), np.abs(bhi))
    mag = absm.sum(axis=1)
    g = grid_of(blo, bhi, vd)
    exact = mag <= g / f32.u  # every partial sum representable: the fp32 sum is exact
    rad = np.where(exact, 0.0, tree_error(absm, f32.u)) + widen * mag * np.where(exact, 0.0, 1.0)
    lo, hi = blo.sum(axis=1) - rad, bhi.sum(axis=1) + rad  # exact sums in float64 when exact
    lo, hi = np.nextafter(lo, -np.inf), np.nextafter(hi, np.inf)
    if n & (n - 1) == 0:  # a division by a power of two is exact
        return f32.rnd(lo / n), f32.rnd(hi / n)
    # otherwise one more fp32 rounding (a division, or a product with a rounded 1/n: two)
    dr = 2.5 * f32.u * mag / n
    return f32.rnd(lo / n - dr), f32.rnd(hi / n + dr)


def pairwise_sum(lo: _F64, hi: _F64, fmt: Any) -> tuple[_F64, _F64]:
    """Enclosure of the vector unit's pairwise row sum (``reduce="pairwise"``, ``pasa_npu.kernel._row_sum``)
    over the last axis for terms in [lo, hi]: the row is padded with zeros to a power of two and halved,
    x[:h] + x[h:], each sum rounded to ``fmt``. Addition and rounding are monotone, so the same tree on
    the lower and the upper endpoints (each float64 sum enclosed outward) encloses the result (Lemma 13.2)."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    m = lo.shape[-1]
    width = 1 << (m - 1).bit_length()
    if width != m:
        pad = [(0, 0)] * (lo.ndim - 1) + [(0, width - m)]
        lo, hi = np.pad(lo, pad), np.pad(hi, pad)
    while lo.shape[-1] > 1:
        h = lo.shape[-1] // 2
        s_lo, _ = add(lo[..., :h], lo[..., :h], lo[..., h:], lo[..., h:])
        _, s_hi = add(hi[..., :h], hi[..., :h], hi[..., h:], hi[..., h:])
        lo, hi = fmt.rnd(s_lo), fmt.rnd(s_hi)
    return lo[..., 0], hi[..., 0]


def pairwise_error(mag: _F64, fmt: Any) -> _F64:
    """≥ |pairwise_sum(x) − Σx| for every x with |x_r| ≤ mag_r (last axis): a running error bound over
    the same tree, each node's rounding at most half an ulp at its largest magnitude (Lemma 13.2)."""
    mag = np.asarray(mag, dtype=np.float64)
    m = mag.shape[-1]
    width = 1 << (m - 1).bit_length()
    if width != m:
        mag = np.pad(mag, [(0, 0)] * (mag.ndim - 1) + [(0, width - m)])
    err = np.zeros_like(mag)
    while mag.shape[-1] > 1:
        h = mag.shape[-1] // 2
        node = (mag[..., :h] + mag[..., h:] + err[..., :h] + err[..., h:]) * (1 + 2.0**-50)
        err = err[..., :h] + err[..., h:] + _hulp_bound(node, fmt)
        mag = mag[..., :h] + mag[..., h:]
    return np.asarray(err[..., 0] * (1 + 2.0**-50), dtype=np.float64)


def block_mean_enclosure(eng: Any, blo: _F64, bhi: _F64) -> tuple[_F64, _F64]:
    """Enclosure of the block mean μ_j whose rounding to the vector format is the first reference A
    (step b): the fp32 mean (``reduce="acc"``, :func:`mean_enclosure`), or fl(tree(s̃))/n before its
    rounding for ``reduce="pairwise"`` (the tree in the vector format, :func:`pairwise_sum`)."""
    if eng.pol.reduce != "pairwise":
        return mean_enclosure(blo, bhi, eng.vd, eng.f32, 2.0**-38)
    n = blo.shape[1]
    t_lo, t_hi = pairwise_sum(blo, bhi, eng.vd)
    with np.errstate(invalid="ignore"):
        return np.nextafter(t_lo / n, -np.inf), np.nextafter(t_hi / n, np.inf)


def deviation_enclosure(
    eng: Any, blo: _F64, bhi: _F64, mu_lo: _F64, mu_hi: _F64, a_lo: _F64, a_hi: _F64
) -> tuple[_F64, _F64]:
    """Enclosure of e_j = the block's deviation from the reference A as the kernel rounds it
    (``pseudo_average="centered"``): fl_vd(fl32(μ_j − A)) for ``reduce="acc"``; for ``"pairwise"``
    fl_vd(tree(fl_vd(s̃ − A))/n) (``pasa_npu.kernel._BlockMeans.centered``)."""
    vd = eng.vd
    if eng.pol.reduce != "pairwise":
        dlo, dhi = add(mu_lo, mu_hi, -a_hi, -a_lo)
        return vd.rnd(eng.f32.rnd(dlo)), vd.rnd(eng.f32.rnd(dhi))
    n = blo.shape[1]
    x_lo, _ = add(blo, blo, -a_hi[:, None], -a_hi[:, None])
    _, x_hi = add(bhi, bhi, -a_lo[:, None], -a_lo[:, None])
    t_lo, t_hi = pairwise_sum(vd.rnd(x_lo), vd.rnd(x_hi), vd)
    with np.errstate(invalid="ignore"):
        return vd.rnd(np.nextafter(t_lo / n, -np.inf)), vd.rnd(np.nextafter(t_hi / n, np.inf))


def _rounded(
    r_lo: _F64, r_hi: _F64, t_lo: _F64, t_hi: _F64, fmt: Any, extra: Any
) -> tuple[_F64, _F64, tuple[_F64, _F64]]:
    """A rounding fl(y), y ∈ [t_lo, t_hi], enclosed by [r_lo, r_hi], with the enclosure of its residual
    fl(y) − y: the difference of the enclosures intersected with ± (half an ulp at max|y| + ``extra``)."""
    d_lo, d_hi = add(r_lo, r_hi, -t_hi, -t_lo)
    h = _hulp_bound(np.maximum(np.abs(t_lo), np.abs(t_hi)), fmt) + extra
    with np.errstate(invalid="ignore"):
        res = (np.maximum(d_lo, -h), np.minimum(d_hi, h))
    return r_lo, r_hi, res


def _scaled(
    lo: _F64, hi: _F64, res: tuple[_F64, _F64], fmt: Any, bmax: _F64, pow2: bool
) -> tuple[_F64, _F64, tuple[_F64, _F64]]:
    """The multiplication by 2^−t of a pow2 update (exact unless subnormal: ± η·2^t_max more)."""
    if not pow2:
        return lo, hi, res
    mag_min = np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(np.abs(lo), np.abs(hi)))
    b = bmax[:, None] if np.ndim(lo) == 2 else bmax
    w = np.where(mag_min < fmt.tiny * b, fmt.eta * b, 0.0)
    return lo - w, hi + w, (res[0] - w, res[1] + w)


def _hulp_bound(mag: _F64, fmt: Any) -> _F64:
    """≥ |fl(y) − y| for every |y| ≤ mag in ``fmt`` with subnormals and an unbounded exponent range:
    half an ulp at mag (p bits) or half the subnormal spacing, whichever is larger."""
    _, e = np.frexp(np.asarray(mag, dtype=np.float64))
    with np.errstate(over="ignore"):
        h = np.where(np.isfinite(mag), np.ldexp(1.0, e - fmt.p - 1), np.inf)
    return np.maximum(h, fmt.eta)


def next_up(a: _F64, fmt: Any) -> _F64:
    """The least number of ``fmt`` above each ``a`` of ``fmt`` (+inf past the largest finite): a plus
    the spacing at a (a ≥ 0), or at the magnitudes just below |a| (a < 0)."""
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        below = np.where(a < 0, np.nextafter(a, 0.0), a)
        r = a + fmt.spacing_min(below, below)
        return np.where(np.isfinite(a) & (r > fmt.maxf), np.inf, r)


def grid_of(lo: _F64, hi: _F64, fmt: Any, axis: int = -1) -> _F64:
    """The largest power of two of which every value of ``fmt`` in each [lo, hi] is a multiple, reduced
    over ``axis``: the smallest spacing of the format over the intervals."""
    return np.asarray(fmt.spacing_min(lo, hi), dtype=np.float64).min(axis=axis)


# ---------------------------------------------------------------------------------------------------
# the run, enclosed


def _pick(yes: _B, both: _B, ylo: _F64, yhi: _F64, nlo: _F64, nhi: _F64) -> tuple[_F64, _F64]:
    """The enclosure after a branch: the 'yes' outcome, the 'no' outcome, or the hull of both."""
    lo = np.where(yes, ylo, np.where(both, np.minimum(ylo, nlo), nlo))
    hi = np.where(yes, yhi, np.where(both, np.maximum(yhi, nhi), nhi))
    return lo, hi


def enclose_run(eng: Any, slo: _F64, shi: _F64, vis: _B, vp: _F64, center: _F64) -> tuple[_F64, _F64, _B]:
    """Enclosure [out_lo, out_hi] (R × d_v) of the kernel's output for one row group, and the rows whose
    enclosure is not available (a possible overflow): ``bad`` (R,).

    ``eng`` is the :class:`pasa_theory.rigorous._Engine` of the group (formats, constants, n, T);
    [slo, shi] the enclosure of the score tile s̃ as the vector unit holds it (Lemma 3); ``vis`` the
    visible (unmasked, unpadded) columns; ``vp`` the padded V; ``center`` (R × d_v) any constants c₀
    (the float64 golden output): besides O and ℓ the run encloses D = O − c₀·ℓ (Lemma 14.4), whose
    enclosure does not lose the correlation of O and ℓ, and the output is enclosed by c₀ + D/ℓ too.

    With the shift, the reference A = fl(μ₀) is split into cases (Lemma 14.1): when the enclosure of
    μ₀ straddles a rounding boundary of the vector format, A takes one of two values, each with μ₀
    restricted to the values that round to it, and every later offset depends on that one value; the
    enclosure is the hull of the cases.
    """
    r_lo, r_hi, bad, p_lo, p_hi = _split_reference(eng, slo, shi, vis, vp, center)
    eng.prob_out = (p_lo, p_hi) if getattr(eng, "prob_lam", None) is not None else None
    return r_lo, r_hi, bad


def _split_reference(
    eng: Any, slo: _F64, shi: _F64, vis: _B, vp: _F64, center: _F64
) -> tuple[_F64, _F64, _B, _F64, _F64]:
    """:func:`enclose_run` with the probabilistic enclosure of §18 (hull of the cases) as well."""
    pol, vd = eng.pol, eng.vd
    if not pol.shift or pol.recovery == "key_mean":  # no reference A to split (key_mean: Lemma 13.3)
        return _cases(eng, slo, shi, vis, vp, center, None, None)
    n = eng.n
    m0 = eng.T * n if getattr(eng, "mean_tile", None) is not None else 0  # the means' tile (Lemma 13.4)
    mu_lo, mu_hi = block_mean_enclosure(eng, slo[:, m0 : m0 + n], shi[:, m0 : m0 + n])
    a_lo, a_hi = vd.rnd(mu_lo), vd.rnd(mu_hi)
    if np.array_equal(a_lo, a_hi):
        return _cases(eng, slo, shi, vis, vp, center, None, None)
    up, dn = next_up(a_lo, vd), -next_up(-a_hi, vd)
    two = (up == a_hi) & np.isfinite(up)  # exactly two candidates: split; more: no split (hull)
    nan = np.full_like(a_lo, np.nan)
    out_lo = np.full((slo.shape[0], vp.shape[1]), np.inf)
    out_hi = np.full((slo.shape[0], vp.shape[1]), -np.inf)
    pr_lo, pr_hi = out_lo.copy(), out_hi.copy()
    bad = np.zeros(slo.shape[0], dtype=bool)
    # case A = a_lo: μ₀ ≤ the midpoint above a_lo; case A = a_hi: μ₀ ≥ the midpoint below a_hi
    for a0, m_lo, m_hi in (
        (np.where(two, a_lo, nan), np.full_like(mu_lo, -np.inf), np.where(two, (a_lo + up) / 2, np.inf)),
        (np.where(two, a_hi, nan), np.where(two, (dn + a_hi) / 2, -np.inf), np.full_like(mu_hi, np.inf)),
    ):
        r_lo, r_hi, b, p_lo, p_hi = _cases(eng, slo, shi, vis, vp, center, a0, (m_lo, m_hi))
        out_lo, out_hi, bad = np.minimum(out_lo, r_lo), np.maximum(out_hi, r_hi), bad | b
        pr_lo, pr_hi = np.minimum(pr_lo, p_lo), np.maximum(pr_hi, p_hi)
    return out_lo, out_hi, bad, pr_lo, pr_hi


#: Depth of the case split on undecided take-overs (2^depth cases per row at most); deeper undecided
#: blocks are enclosed by the hull of both outcomes.
SPLIT_DEPTH = 4


def _cases(
    eng: Any,
    slo: _F64,
    shi: _F64,
    vis: _B,
    vp: _F64,
    center: _F64,
    a0: _F64 | None,
    mu0: tuple[_F64, _F64] | None,
    force: npt.NDArray[np.int8] | None = None,
    depth: int = 0,
) -> tuple[_F64, _F64, _B, _F64, _F64]:
    """Lemma 14.1: the first undecided take-over of a row splits it into the two cases (take, stay),
    each enclosed with the decision given, recursively up to :data:`SPLIT_DEPTH`; the row's enclosure
    is the hull of its cases. Every run takes one of the two decisions, so it lies in one case, and a
    case keeps the frame (m, φ) and the accumulators consistent, which the hull of both outcomes
    inside one enclosure does not (the take-over rescales ℓ and O by e^{−x} and moves the frame by x)."""
    r_lo, r_hi, bad, first, p_lo, p_hi = _run(eng, slo, shi, vis, vp, center, a0, mu0, force)
    rows = np.flatnonzero(first >= 0)
    if depth >= SPLIT_DEPTH or rows.size == 0:
        return r_lo, r_hi, bad, p_lo, p_hi
    T = eng.T
    base = np.full((slo.shape[0], T), -1, dtype=np.int8) if force is None else force
    sub_lo = np.full((rows.size, vp.shape[1]), np.inf)
    sub_hi = np.full((rows.size, vp.shape[1]), -np.inf)
    sub_bad = np.zeros(rows.size, dtype=bool)
    sp_lo, sp_hi = sub_lo.copy(), sub_hi.copy()
    for decision in (1, 0):
        f = base[rows].copy()
        f[np.arange(rows.size), first[rows]] = decision
        c_lo, c_hi, c_bad, cp_lo, cp_hi = _cases(
            eng,
            slo[rows],
            shi[rows],
            vis[rows],
            vp,
            center[rows],
            None if a0 is None else a0[rows],
            None if mu0 is None else (mu0[0][rows], mu0[1][rows]),
            f,
            depth + 1,
        )
        sub_lo, sub_hi, sub_bad = np.minimum(sub_lo, c_lo), np.maximum(sub_hi, c_hi), sub_bad | c_bad
        sp_lo, sp_hi = np.minimum(sp_lo, cp_lo), np.maximum(sp_hi, cp_hi)
    r_lo[rows], r_hi[rows], bad[rows] = sub_lo, sub_hi, sub_bad
    p_lo[rows], p_hi[rows] = sp_lo, sp_hi
    return r_lo, r_hi, bad, p_lo, p_hi


def _prob_step(
    al_lo: _F64,
    al_hi: _F64,
    ga_lo: _F64,
    ga_hi: _F64,
    pd_lo: _F64,
    pd_hi: _F64,
    pc_lo: _F64,
    pc_hi: _F64,
    qq: _F64,
    c0: _F64,
    ro: tuple[tuple[_F64, _F64], ...],
    rl: tuple[tuple[_F64, _F64], ...],
) -> tuple[_F64, _F64, _F64]:
    """One block of step h for Proposition 4 (docs/bounds.md §18): D_det ← α·D_det + γ·Pc + (the residuals
    pinned to one sign, enclosed as in Lemma 14.4), Q ← α_hi²·Q + Σ M_k² over the residuals whose
    enclosure contains 0 in its interior (M_k = max(|r_lo|, |r_hi|); c₀·M for those of ℓ)."""
    t_lo, t_hi = mul(al_lo[:, None], al_hi[:, None], pd_lo, pd_hi)
    u_lo, u_hi = mul(ga_lo[:, None], ga_hi[:, None], pc_lo, pc_hi)
    t_lo, t_hi = add(t_lo, t_hi, u_lo, u_hi)
    m2o = np.zeros_like(t_lo)
    for r_lo, r_hi in ro:  # O's residuals (R × d_v)
        two = (r_lo < 0) & (r_hi > 0)
        t_lo, t_hi = add(t_lo, t_hi, np.where(two, 0.0, r_lo), np.where(two, 0.0, r_hi))
        m2o = m2o + np.where(two, np.maximum(-r_lo, r_hi), 0.0) ** 2
    m2l = np.zeros_like(al_lo)
    for r_lo, r_hi in rl:  # ℓ's residuals (R), entering as −c₀·r
        two = (r_lo < 0) & (r_hi > 0)
        w_lo, w_hi = mul(c0, c0, np.where(two, 0.0, r_lo)[:, None], np.where(two, 0.0, r_hi)[:, None])
        t_lo, t_hi = add(t_lo, t_hi, -w_hi, -w_lo)
        m2l = m2l + np.where(two, np.maximum(-r_lo, r_hi), 0.0) ** 2
    q = al_hi[:, None] ** 2 * qq + m2o + c0**2 * m2l[:, None]
    return t_lo, t_hi, q * (1 + 2.0**-40)


def sum_sq_bound(amax: _F64, total: _F64, m: int) -> _F64:
    """≥ Σ_{k=2}^{m} S_k² for m terms with |x| ≤ amax and Σ|x| ≤ total, S_k the sum of the k largest
    |x| (S_k ≤ min(k·amax, total)): the quadrature form of :func:`tree_error` (Proposition 4)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        kk = np.clip(np.floor(np.where(amax > 0, total / np.where(amax > 0, amax, 1.0), m)), 1, m)
    head = (kk * (kk + 1) * (2 * kk + 1) / 6 - 1) * amax**2
    return np.asarray((head + (m - kk) * total**2) * (1 + 2.0**-40), dtype=np.float64)


def _prob_block(
    eng: Any,
    lam: float,
    smid: _F64,
    srad: _F64,
    rpv: tuple[_F64, _F64],
    acc_rad: _F64,
    h_pv: _F64,
    rl: tuple[_F64, _F64],
    l_rad: _F64,
    h_l: _F64,
    c0: _F64,
    pv_terms: tuple[_F64, _F64, _F64, _F64, _F64],
    p: tuple[_F64, _F64],
    q: tuple[_F64 | None, _F64],
) -> tuple[_F64, _F64, _F64]:
    """Pc = pv_j − c₀ℓ_j of Lemma 14.4 for Proposition 4 (docs/bounds.md §18): an interval without the
    modelled roundings of step d, and Σ M² of those (R × d_v). Modelled, where the rigorous residual
    interval takes both signs: the rounding ρ of the accumulated P·V_j (|ρ| ≤ h_pv) and of ℓ_j
    (|ρ| ≤ h_l, times c₀); the fp32 accumulations' node roundings (Lemma 14.3's tree, each ≤ u·S_{k+1}
    (1 + γ_m)) where λ·√Σ M² is below the worst-case radius (wide accumulators and ``reduce="acc"``
    only); the casts q_r = fl(p_r) of P to the matrix unit's format, each ≤ hulp(p_hi)."""
    u32, n = eng.f32.u, eng.n
    g = 1.0 + (n * u32) / (1 - n * u32)
    q_hi, vjp, vjn, vja, qv_mag = pv_terms
    rpv_lo, rpv_hi = rpv
    two = (rpv_lo < 0) & (rpv_hi > 0)
    det = acc_rad
    m2 = np.where(two, h_pv, 0.0) ** 2
    if eng.acc is None:
        amax = q_hi.max(axis=1)[:, None] * vja.max(axis=0)[None, :]
        m_acc = u32 * g * np.sqrt(sum_sq_bound(amax, qv_mag, n)) * (1 + 2.0**-30)
        mod = two & (lam * m_acc < acc_rad)
        det = np.where(mod, 0.0, acc_rad)
        m2 = m2 + np.where(mod, m_acc, 0.0) ** 2
    r_lo, r_hi = np.where(two, -det, rpv_lo), np.where(two, det, rpv_hi)
    pc_lo, pc_hi = smid - srad + r_lo, smid + srad + r_hi
    rl_lo, rl_hi = rl
    two_l = (rl_lo < 0) & (rl_hi > 0)
    det_l = l_rad
    m2l = np.where(two_l, h_l, 0.0) ** 2
    p_lo, p_hi = p
    if eng.pol.reduce != "pairwise":
        m_l = u32 * g * np.sqrt(sum_sq_bound(p_hi.max(axis=1), p_hi.sum(axis=1), n)) * (1 + 2.0**-30)
        mod_l = two_l & (lam * m_l < l_rad)
        det_l = np.where(mod_l, 0.0, l_rad)
        m2l = m2l + np.where(mod_l, m_l, 0.0) ** 2
    t_lo, t_hi = np.where(two_l, -det_l, rl_lo), np.where(two_l, det_l, rl_hi)
    t_lo, t_hi = mul(c0, c0, t_lo[:, None], t_hi[:, None])
    pc_lo, pc_hi = add(pc_lo, pc_hi, -t_hi, -t_lo)
    q_lo = q[0]
    if q_lo is not None:  # c₀·Σ(q − p): per term, the casts that may take both signs are modelled
        h = _hulp_bound(p_hi, eng.mi)
        d_lo, d_hi = np.maximum(q_lo - p_hi, -h), np.minimum(q_hi - p_lo, h)
        two_q = (d_lo < 0) & (d_hi > 0)
        dq_lo = np.where(two_q, 0.0, d_lo).sum(axis=1)
        dq_hi = np.where(two_q, 0.0, d_hi).sum(axis=1)
        dq_lo, dq_hi = dq_lo - 2.0**-40 * np.abs(dq_lo), dq_hi + 2.0**-40 * np.abs(dq_hi)
        m2l = m2l + (np.where(two_q, np.maximum(-d_lo, d_hi), 0.0) ** 2).sum(axis=1)
        t_lo, t_hi = mul(c0, c0, dq_lo[:, None], dq_hi[:, None])
        pc_lo, pc_hi = add(pc_lo, pc_hi, t_lo, t_hi)
    return pc_lo, pc_hi, (m2 + c0**2 * m2l[:, None]) * (1 + 2.0**-40)


def _run(
    eng: Any,
    slo: _F64,
    shi: _F64,
    vis: _B,
    vp: _F64,
    center: _F64,
    a0: _F64 | None,
    mu0: tuple[_F64, _F64] | None,
    force: npt.NDArray[np.int8] | None = None,
) -> tuple[_F64, _F64, _B, npt.NDArray[np.int64], _F64, _F64]:
    """One enclosed run; ``a0`` pins the reference of the rows where it is not NaN and ``mu0`` restricts
    the enclosure of the first block mean (a case of :func:`enclose_run`).

    Also returns the probabilistic enclosure of the output (Proposition 4, docs/bounds.md §18) when
    ``eng.prob_lam`` is set (else a copy of the rigorous one): D = D_det + S, where S collects the
    step-h residuals whose enclosure allows both signs, carried as Q ≥ Σ_k (w_k·M_k)², and
    |S| ≤ λ·√Q under the model of §18."""
    pol, vd, f32, n, T = eng.pol, eng.vd, eng.f32, eng.n, eng.T
    mo, mi = eng.mo, eng.mi
    u32 = f32.u
    widen = 2.0**-38
    rel = eng.exp_rel
    R = slo.shape[0]
    Dv = vp.shape[1]
    pow2 = pol.accum == "pow2"
    # offset="running" (the script): its own steps b, e–g, no take-over branch (docs/bounds.md §17)
    # (the class comes from the caller, pasa_theory.rigorous: _running is built on this module)
    factory = getattr(eng, "running_offsets", None)
    running = factory(eng, R, a0, mu0) if factory is not None else None
    # an additive mask: the tile of the block means (before the mask) follows as T·n more columns;
    # recovery="key_mean": the enclosure of the block offsets δ_j follows as T more columns
    L = T * n
    extra = L if getattr(eng, "mean_tile", None) is not None else 0
    key_offs = (
        (slo[:, L + extra :], shi[:, L + extra :]) if pol.shift and pol.recovery == "key_mean" else None
    )
    # accumulator rounding: ideal (unbounded exponent) in the unscaled frame for pow2 (Lemma 14.2)
    p_vd = vd.p

    def rnd_acc(lo: _F64, hi: _F64, bmax: _F64) -> tuple[_F64, _F64]:
        if not pow2:
            return vd.rnd(lo), vd.rnd(hi)
        rlo, rhi = round_ideal(lo, p_vd), round_ideal(hi, p_vd)
        mag_min = np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(np.abs(lo), np.abs(hi)))
        sub = mag_min < vd.tiny * bmax[:, None] if lo.ndim == 2 else mag_min < vd.tiny * bmax
        w = vd.eta * (bmax[:, None] if lo.ndim == 2 else bmax)
        return np.where(sub, np.minimum(rlo, lo - w), rlo), np.where(sub, np.maximum(rhi, hi + w), rhi)

    def sub_w(lo: _F64, hi: _F64, bmax: _F64) -> _F64:
        """η·2^t_max where a value in [lo, hi] may be subnormal once scaled by 2^−t (pow2), else 0."""
        if not pow2:
            return np.zeros(np.shape(lo))
        mag_min = np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(np.abs(lo), np.abs(hi)))
        b = bmax[:, None] if np.ndim(lo) == 2 else bmax
        return np.where(mag_min < vd.tiny * b, vd.eta * b, 0.0)

    bad = np.zeros(R, dtype=bool)
    dead = np.zeros(R, dtype=bool)  # rows whose given decisions no run can take
    first = np.full(R, -1)
    m_lo = np.full(R, -np.inf)
    m_hi = np.full(R, -np.inf)
    l_lo = np.zeros(R)
    l_hi = np.zeros(R)
    o_lo = np.zeros((R, Dv))
    o_hi = np.zeros((R, Dv))
    dd_lo = np.zeros((R, Dv))  # D = O − c₀·ℓ (Lemma 14.4)
    dd_hi = np.zeros((R, Dv))
    lam = getattr(eng, "prob_lam", None)
    pd_lo = np.zeros((R, Dv))  # §18: D_det, D without the modelled residuals
    pd_hi = np.zeros((R, Dv))
    qq = np.zeros((R, Dv))  # §18: Q, the quadrature sum of the modelled residuals' bounds
    c0 = center
    a_lo = a_hi = phi_lo = phi_hi = np.zeros(R)
    bmax = np.ones(R)  # ≥ 2^t (Lemma 14.2)
    bmin = np.ones(R)  # ≤ 2^t
    c = eng.c
    vpos, vneg, vabs = np.maximum(vp, 0.0), np.minimum(vp, 0.0), np.abs(vp)
    for j in range(T):
        cs = slice(j * n, (j + 1) * n)
        blo, bhi, bvis = slo[:, cs], shi[:, cs], vis[:, cs]
        anyvis: _B = np.asarray(bvis.any(axis=1), dtype=bool)
        # step d: block maximum over the visible columns (rounding is monotone)
        mj_lo = np.where(anyvis, np.max(np.where(bvis, blo, -np.inf), axis=1), -np.inf)
        mj_hi = np.where(anyvis, np.max(np.where(bvis, bhi, -np.inf), axis=1), -np.inf)
        if key_offs is not None:  # δ_j from the extra score column (Lemma 13.3)
            dj_lo, dj_hi = key_offs[0][:, j], key_offs[1][:, j]
            bad |= ~(np.isfinite(dj_lo) & np.isfinite(dj_hi))
        elif pol.shift and running is None:
            # step b: fp32 mean of the whole (unmasked) tile, an fp32 number (H1, Lemma 14.3)
            tlo, thi = (
                (slo[:, L + j * n : L + (j + 1) * n], shi[:, L + j * n : L + (j + 1) * n])
                if extra
                else (blo, bhi)
            )
            mu_lo, mu_hi = block_mean_enclosure(eng, tlo, thi)
            if j == 0 and mu0 is not None:
                mu_lo, mu_hi = np.maximum(mu_lo, mu0[0]), np.minimum(mu_hi, mu0[1])
            if j == 0:
                a_lo, a_hi = vd.rnd(mu_lo), vd.rnd(mu_hi)
                if a0 is not None:
                    a_lo, a_hi = np.where(np.isnan(a0), a_lo, a0), np.where(np.isnan(a0), a_hi, a0)
            # e = fl_vd(fl32(μ − A)) (pairwise: fl(tree(fl(s̃ − A))/n)), δ = fl(e·c)
            e_lo, e_hi = deviation_enclosure(eng, tlo, thi, mu_lo, mu_hi, a_lo, a_hi)
            d_lo, d_hi = mul(e_lo, e_hi, c, c)
            dj_lo, dj_hi = vd.rnd(d_lo), vd.rnd(d_hi)
            if j == 0:
                phi_lo = phi_hi = np.zeros(R)
            else:
                far_lo = (dj_lo > eng.recenter) | (dj_hi < -eng.recenter)  # certainly far
                near = (dj_lo >= -eng.recenter) & (dj_hi <= eng.recenter)  # certainly near
                both = ~(far_lo | near)  # undecided: the hull of both outcomes (Lemma 14.1)
                # re-centre where far: a′ = fl(A + e), δa = fl(a′ − A), δ = fl(fl(e − δa)·c), φ −= fl(δa·c)
                an_lo, an_hi = add(a_lo, a_hi, e_lo, e_hi)
                an_lo, an_hi = vd.rnd(an_lo), vd.rnd(an_hi)
                da_lo, da_hi = add(an_lo, an_hi, -a_hi, -a_lo)
                da_lo, da_hi = vd.rnd(da_lo), vd.rnd(da_hi)
                ed_lo, ed_hi = add(e_lo, e_hi, -da_hi, -da_lo)
                ed_lo, ed_hi = vd.rnd(ed_lo), vd.rnd(ed_hi)
                t_lo, t_hi = mul(ed_lo, ed_hi, c, c)
                d1_lo, d1_hi = vd.rnd(t_lo), vd.rnd(t_hi)
                t_lo, t_hi = mul(da_lo, da_hi, c, c)
                dc_lo, dc_hi = vd.rnd(t_lo), vd.rnd(t_hi)
                p1_lo, p1_hi = add(phi_lo, phi_hi, -dc_hi, -dc_lo)
                p1_lo, p1_hi = vd.rnd(p1_lo), vd.rnd(p1_hi)
                dj_lo, dj_hi = _pick(far_lo, both, d1_lo, d1_hi, dj_lo, dj_hi)
                phi_lo, phi_hi = _pick(far_lo, both, p1_lo, p1_hi, phi_lo, phi_hi)
                a_lo, a_hi = _pick(far_lo, both, an_lo, an_hi, a_lo, a_hi)
            bad |= ~(np.isfinite(dj_lo) & np.isfinite(dj_hi) & np.isfinite(a_lo) & np.isfinite(a_hi))
            bad |= ~(np.isfinite(phi_lo) & np.isfinite(phi_hi))
        # steps f–g: x = fl(fl(m_j − m) + fl(δ_j − φ)); take-over iff x > 0 (first visible block: +∞)
        started = np.isfinite(m_lo)
        act = started & anyvis
        with np.errstate(invalid="ignore"):
            x_lo, x_hi = add(mj_lo, mj_hi, -m_hi, -m_lo)
            x_lo, x_hi = vd.rnd(x_lo), vd.rnd(x_hi)
            if pol.shift and running is None:
                f_lo, f_hi = add(dj_lo, dj_hi, -phi_hi, -phi_lo)
                f_lo, f_hi = vd.rnd(f_lo), vd.rnd(f_hi)
                x_lo, x_hi = add(x_lo, x_hi, f_lo, f_hi)
                x_lo, x_hi = vd.rnd(x_lo), vd.rnd(x_hi)
        x_lo, x_hi = np.where(act, x_lo, 0.0), np.where(act, x_hi, 0.0)
        bad |= act & ~(np.isfinite(x_lo) & np.isfinite(x_hi))
        take = (~started & anyvis) | (act & (x_lo > 0))
        stay = act & (x_hi <= 0)
        amb = act & ~(take | stay)  # x̂ may be on either side of 0
        mt = slice(L + j * n, L + (j + 1) * n) if extra else cs  # the block means' tile (Lemma 13.4)
        if running is not None:  # no take-over branch; the split is on μ̃_j instead (Lemma 17.2)
            amb = running.undecided(j, slo[:, mt], shi[:, mt], force)
        if (
            force is not None and running is None
        ):  # a case of the split (Lemma 14.1): the decision of this block is given
            fj = force[:, j]
            dead |= act & (((fj == 1) & stay) | ((fj == 0) & take))
            ftake, fstay = amb & (fj == 1), amb & (fj == 0)
            # x̂ > 0 is at least the least positive number of the vector format (2·η)
            x_lo = np.where(ftake, np.maximum(x_lo, 2.0 * vd.eta), x_lo)
            x_hi = np.where(fstay, np.minimum(x_hi, 0.0), x_hi)
            take, stay, amb = take | ftake, stay | fstay, amb & ~(ftake | fstay)
        first = np.where(amb & (first < 0), j, first)  # an undecided block left: the hull of both outcomes
        # α = E(−x) on take-over (else 1), γ = E(x) if the block stays (else 1); x > 0 ⇒ E(−x) ≤ 1
        al_lo, al_hi = exp_enclosure(-x_hi, -x_lo, vd, rel)
        al_lo = np.where(act & (take | amb), al_lo, np.where(take, 0.0, 1.0))  # first block: α·ℓ = 0·0
        al_hi = np.where(act & take, al_hi, np.where(take, 0.0, 1.0))
        ga_lo, ga_hi = exp_enclosure(x_lo, x_hi, vd, rel)
        ga_lo, ga_hi = np.where(stay | amb, ga_lo, 1.0), np.where(stay, ga_hi, 1.0)
        if running is not None:
            al_lo, al_hi, ga_lo, ga_hi = running.block(j, slo[:, mt], shi[:, mt], mj_lo, mj_hi, force)
        # step d: p = fl(E(fl(s̃ − m_j))), ≤ 0 argument; masked columns 0
        with np.errstate(invalid="ignore"):
            y_lo, y_hi = add(blo, bhi, -mj_hi[:, None], -mj_lo[:, None])
        y_lo, y_hi = vd.rnd(y_lo), np.minimum(vd.rnd(y_hi), 0.0)
        # a column that is the only possible maximum is the maximum: fl(s̃_r − m_j) = 0 exactly
        cand = bvis & (bhi >= mj_lo[:, None])
        only = cand & (cand.sum(axis=1) == 1)[:, None]
        y_lo, y_hi = np.where(only, 0.0, y_lo), np.where(only, 0.0, y_hi)
        y_lo = np.where(bvis, y_lo, -np.inf)
        y_hi = np.where(bvis, y_hi, -np.inf)
        p_lo, p_hi = exp_enclosure(y_lo, y_hi, vd, rel)
        # ℓ_j = fl_vd(sum32 p)
        if pol.reduce == "pairwise":  # a tree in the vector format, every node rounded (Lemma 13.2)
            lj_lo, lj_hi = pairwise_sum(p_lo, p_hi, vd)
            lj_acc_lo = p_lo.sum(axis=1) - pairwise_error(p_hi, vd)
        else:
            gp = grid_of(np.where(bvis, p_lo, 1.0), np.where(bvis, p_hi, 1.0), vd)
            lj_lo, lj_hi = sum_enclosure(
                p_lo.sum(axis=1), p_hi.sum(axis=1), p_hi.sum(axis=1), n, u32, widen, gp
            )
            lj_acc_lo = lj_lo
        # the maximising column contributes E(0) = 1 and the sum of non-negative terms is monotone: ℓ_j ≥ 1
        lj_lo, lj_hi = vd.rnd(np.maximum(lj_lo, np.where(anyvis, 1.0, 0.0))), vd.rnd(lj_hi)
        # P·V_j: P in the matmul format, fp32 accumulate, rounded to matmul_out then to vd
        cast = vd.name != mi.name
        if cast:
            q_lo, q_hi = mi.rnd(p_lo), mi.rnd(p_hi)
        else:
            q_lo, q_hi = p_lo, p_hi
        vjp, vjn, vja = vpos[cs], vneg[cs], vabs[cs]
        ex_lo = q_lo @ vjp + q_hi @ vjn  # the exact Σ q·v over the box of q (float64, ± widen below)
        ex_hi = q_hi @ vjp + q_lo @ vjn
        qv_mag = q_hi @ vja
        if eng.acc is None:
            pv_lo, pv_hi = sum_enclosure(ex_lo, ex_hi, qv_mag, n, u32, widen)
            acc_rad = ex_lo - pv_lo  # γ_n·Σ|q v| + the float64 margin
        else:  # a narrow accumulator (docs/bounds.md §15.1): chunk by chunk, its error bound for the run's q
            enc = _accum.matmul_enclosure(q_lo, q_hi, vp[cs], vp[cs], eng.acc)
            pv_lo, pv_hi, acc_rad = enc.lo, enc.hi, enc.err + widen * qv_mag
        pv_lo, pv_hi = vd.rnd(mo.rnd(pv_lo)), vd.rnd(mo.rnd(pv_hi))
        bad |= ~(np.all(np.isfinite(pv_lo) & np.isfinite(pv_hi), axis=1) & np.isfinite(lj_hi))
        # Pc = pv − c₀·ℓ_j = Σ q(v − c₀) + c₀·Σ(q − p) + r_pv − c₀·r_ℓ (Lemma 14.4)
        pmid = 0.5 * (q_lo + q_hi)
        prad = 0.5 * (q_hi - q_lo) + 2.0**-52 * q_hi
        vbar = vp[cs].mean(axis=0)
        spv = pmid @ vp[cs]
        smid = spv - c0 * pmid.sum(axis=1)[:, None]
        srad = (
            prad @ np.abs(vp[cs] - vbar)
            + prad.sum(axis=1)[:, None] * np.abs(vbar - c0)
            + widen * (pmid @ vja + np.abs(c0) * pmid.sum(axis=1)[:, None] + np.abs(spv))
        )
        srad = srad * (1 + 2.0**-40)
        h_pv = _hulp_bound(np.maximum(np.abs(pv_lo), np.abs(pv_hi)) * (1 + 2 * max(mo.u, vd.u)), mo)
        if vd.name != mo.name:
            h_pv = h_pv + _hulp_bound(np.maximum(np.abs(pv_lo), np.abs(pv_hi)), vd)
        rpv_lo = np.maximum(pv_lo - ex_hi - widen * qv_mag, -(acc_rad + h_pv))
        rpv_hi = np.minimum(pv_hi - ex_lo + widen * qv_mag, acc_rad + h_pv)
        l_ex_lo, l_ex_hi = p_lo.sum(axis=1), p_hi.sum(axis=1)
        l_rad = l_ex_lo - lj_acc_lo  # the accumulation radius of ℓ_j
        h_l = _hulp_bound(lj_hi * (1 + 2 * vd.u), vd)
        rl_lo = np.maximum(lj_lo - l_ex_hi - widen * l_ex_hi, -(l_rad + h_l))
        rl_hi = np.minimum(lj_hi - l_ex_lo + widen * l_ex_hi, l_rad + h_l)
        pc_lo, pc_hi = smid - srad + rpv_lo, smid + srad + rpv_hi
        t_lo, t_hi = mul(c0, c0, rl_lo[:, None], rl_hi[:, None])
        pc_lo, pc_hi = add(pc_lo, pc_hi, -t_hi, -t_lo)
        if cast:  # c₀·Σ(q − p): the cast of P to the matmul format
            dq_lo = np.maximum((q_lo - p_hi).sum(axis=1), -_hulp_bound(p_hi, mi).sum(axis=1))
            dq_hi = np.minimum((q_hi - p_lo).sum(axis=1), _hulp_bound(p_hi, mi).sum(axis=1))
            dq_lo, dq_hi = dq_lo - 2.0**-40 * np.abs(dq_lo), dq_hi + 2.0**-40 * np.abs(dq_hi)  # float64 sums
            t_lo, t_hi = mul(c0, c0, dq_lo[:, None], dq_hi[:, None])
            pc_lo, pc_hi = add(pc_lo, pc_hi, t_lo, t_hi)
        if lam is not None:  # §18: Pc with the roundings of step d that may take both signs moved to Q
            pcp_lo, pcp_hi, m2pc = _prob_block(
                eng, lam, smid, srad, (rpv_lo, rpv_hi), acc_rad, h_pv, (rl_lo, rl_hi), l_rad, h_l, c0,
                (q_hi, vpos[cs], vneg[cs], vja, qv_mag), (p_lo, p_hi), (q_lo if cast else None, q_hi),
            )  # fmt: skip
        # step h: ℓ ← fl(fl(α·ℓ) + fl(fl(γ·ℓ_j)·2^−t)), O likewise (unscaled frame, Lemma 14.2), and
        # D ← α·D + γ·Pc + (r₁ + r₂ + r₃) − c₀·(r₄ + r₅ + r₆), r the residuals of the roundings (Lemma 14.4)
        upd = anyvis
        if running is not None:
            # the script moves its reference at every block, so a row that has seen a key is rescaled by
            # α (≠ 1 in general) and rounded even where this block has no visible key (γ = 0 there):
            # O ← fl(α·O), ℓ ← fl(α·ℓ) (Lemma 17.1; the lazy bookkeeping leaves them unchanged, α = 1)
            upd = anyvis | (l_hi > 0)
        t_lo, t_hi = mul(ga_lo, ga_hi, lj_lo, lj_hi)
        li_lo, li_hi, r5 = _rounded(vd.rnd(t_lo), vd.rnd(t_hi), t_lo, t_hi, vd, 0.0)
        li_lo, li_hi, r5 = _scaled(li_lo, li_hi, r5, vd, bmax, pow2)
        t_lo, t_hi = mul(al_lo, al_hi, l_lo, l_hi)
        la_lo, la_hi, r4 = _rounded(*rnd_acc(t_lo, t_hi, bmax), t_lo, t_hi, vd, sub_w(t_lo, t_hi, bmax))
        t_lo, t_hi = add(la_lo, la_hi, li_lo, li_hi)
        nl_lo, nl_hi, r6 = _rounded(*rnd_acc(t_lo, t_hi, bmax), t_lo, t_hi, vd, sub_w(t_lo, t_hi, bmax))
        t_lo, t_hi = mul(ga_lo[:, None], ga_hi[:, None], pv_lo, pv_hi)
        oi_lo, oi_hi, r2 = _rounded(vd.rnd(t_lo), vd.rnd(t_hi), t_lo, t_hi, vd, 0.0)
        oi_lo, oi_hi, r2 = _scaled(oi_lo, oi_hi, r2, vd, bmax, pow2)
        if pow2:  # the new term scaled by 2^−t ≤ 1/bmin must not overflow either
            big_in = np.maximum(np.abs(oi_lo), np.abs(oi_hi)).max(axis=1) if Dv else np.zeros(R)
            bad |= upd & ~(np.maximum(big_in, li_hi) < vd.maxf * (1 - vd.u) * bmin)
        t_lo, t_hi = mul(al_lo[:, None], al_hi[:, None], o_lo, o_hi)
        oa_lo, oa_hi, r1 = _rounded(*rnd_acc(t_lo, t_hi, bmax), t_lo, t_hi, vd, sub_w(t_lo, t_hi, bmax))
        t_lo, t_hi = add(oa_lo, oa_hi, oi_lo, oi_hi)
        no_lo, no_hi, r3 = _rounded(*rnd_acc(t_lo, t_hi, bmax), t_lo, t_hi, vd, sub_w(t_lo, t_hi, bmax))
        # D
        t_lo, t_hi = mul(al_lo[:, None], al_hi[:, None], dd_lo, dd_hi)
        u_lo, u_hi = mul(ga_lo[:, None], ga_hi[:, None], pc_lo, pc_hi)
        t_lo, t_hi = add(t_lo, t_hi, u_lo, u_hi)
        ro_lo, ro_hi = add(*add(r1[0], r1[1], r2[0], r2[1]), r3[0], r3[1])
        rl4_lo, rl4_hi = add(*add(r4[0], r4[1], r5[0], r5[1]), r6[0], r6[1])
        t_lo, t_hi = add(t_lo, t_hi, ro_lo, ro_hi)
        u_lo, u_hi = mul(c0, c0, rl4_lo[:, None], rl4_hi[:, None])
        nd_lo, nd_hi = add(t_lo, t_hi, -u_hi, -u_lo)
        if lam is not None:  # §18: the same update with the two-signed residuals moved into Q
            qn_lo, qn_hi, qn = _prob_step(
                al_lo, al_hi, ga_lo, ga_hi, pd_lo, pd_hi, pcp_lo, pcp_hi, qq, c0, (r1, r2, r3), (r4, r5, r6)
            )
            qn = qn + ga_hi[:, None] ** 2 * m2pc * (1 + 2.0**-40)
            pd_lo, pd_hi = np.where(upd[:, None], qn_lo, pd_lo), np.where(upd[:, None], qn_hi, pd_hi)
            qq = np.where(upd[:, None], qn, qq)
        # ℓ ≥ 1 once a block was seen: a take-over adds fl(ℓ_j) ≥ 1, a stay adds to the stored ℓ ≥ 1
        # (roundings are monotone and the terms non-negative; a renormalisation scales unscaled ℓ by 1)
        if running is None:  # (the script's γ may be below 1: no such floor there)
            nl_lo = np.maximum(nl_lo, 1.0)
        l_lo, l_hi = np.where(upd, nl_lo, l_lo), np.where(upd, nl_hi, l_hi)
        o_lo, o_hi = np.where(upd[:, None], no_lo, o_lo), np.where(upd[:, None], no_hi, o_hi)
        dd_lo, dd_hi = np.where(upd[:, None], nd_lo, dd_lo), np.where(upd[:, None], nd_hi, dd_hi)
        if pow2:
            # a renormalisation after this block sets 2^t ∈ (ℓ/2, ℓ]; O·2^−s is exact unless subnormal
            bmax = np.maximum(bmax, np.where(upd, 2.0 ** np.ceil(np.log2(np.maximum(l_hi, 1.0))), 1.0))
            bmin = np.minimum(bmin, np.where(upd & (l_lo > 0), l_lo / 2, 1.0))
            w = sub_w(o_lo, o_hi, bmax)
            o_lo, o_hi = o_lo - w, o_hi + w
            dd_lo, dd_hi = dd_lo - w, dd_hi + w
            pd_lo, pd_hi = pd_lo - w, pd_hi + w
            # the stored values (unscaled / 2^t) must stay below the vector format's overflow threshold
            big = np.maximum(np.abs(o_lo), np.abs(o_hi)).max(axis=1) if Dv else np.zeros(R)
            lim = vd.maxf * (1 - vd.u) * bmin
            bad |= ~((big < lim) & (l_hi < lim))
        else:
            big = np.maximum(np.abs(o_lo), np.abs(o_hi)).max(axis=1) if Dv else np.zeros(R)
            bad |= ~((big < vd.maxf) & (l_hi < vd.maxf))
        # the row's frame: m and φ follow a take-over
        m_lo, m_hi = _pick(take, amb, mj_lo, mj_hi, m_lo, m_hi)
        if pol.shift and running is None:
            phi_lo, phi_hi = _pick(take, amb, dj_lo, dj_hi, phi_lo, phi_hi)
    if running is not None:
        bad |= running.bad
    # end: out = fl_out(fl_vd(O/ℓ)); rows that saw no key give 0
    seen = l_lo > 0
    q_lo, q_hi = div_pos(o_lo, o_hi, np.where(seen, l_lo, 1.0)[:, None], np.where(seen, l_hi, 1.0)[:, None])
    d_lo, d_hi = div_pos(dd_lo, dd_hi, np.where(seen, l_lo, 1.0)[:, None], np.where(seen, l_hi, 1.0)[:, None])
    d_lo, d_hi = add(c0, c0, d_lo, d_hi)  # O/ℓ = c₀ + D/ℓ: the same quotient, enclosed twice
    q_lo, q_hi = np.maximum(q_lo, d_lo), np.minimum(q_hi, d_hi)
    out = eng.out
    r_lo, r_hi = out.rnd(vd.rnd(q_lo)), out.rnd(vd.rnd(q_hi))
    if lam is not None:  # §18: D ∈ D_det ± λ√Q (the event of Proposition 4), then the same quotient
        s = lam * np.sqrt(qq) * (1 + 2.0**-40)
        d_lo, d_hi = div_pos(
            pd_lo - s, pd_hi + s, np.where(seen, l_lo, 1.0)[:, None], np.where(seen, l_hi, 1.0)[:, None]
        )
        d_lo, d_hi = add(c0, c0, d_lo, d_hi)
        d_lo, d_hi = np.maximum(q_lo, d_lo), np.minimum(q_hi, d_hi)
        p_lo, p_hi = out.rnd(vd.rnd(d_lo)), out.rnd(vd.rnd(d_hi))
    else:
        p_lo, p_hi = r_lo.copy(), r_hi.copy()
    nothing = ~np.isfinite(m_lo)
    bad |= ~seen & ~nothing
    r_lo = np.where(nothing[:, None], 0.0, r_lo)
    r_hi = np.where(nothing[:, None], 0.0, r_hi)
    bad |= ~np.all(np.isfinite(r_lo) & np.isfinite(r_hi), axis=1)
    r_lo = np.where(dead[:, None], np.inf, r_lo)
    r_hi = np.where(dead[:, None], -np.inf, r_hi)
    p_lo = np.where(nothing[:, None], 0.0, np.where(dead[:, None], np.inf, p_lo))
    p_hi = np.where(nothing[:, None], 0.0, np.where(dead[:, None], -np.inf, p_hi))
    return r_lo, r_hi, bad & ~dead, first, p_lo, p_hi
