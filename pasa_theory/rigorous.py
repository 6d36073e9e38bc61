"""Rigorous a-posteriori rounding-error bound for the tiled attention kernel (a theorem, not a model).

:func:`certify` returns, for given inputs, a number ``max_abs_bound`` with

    max |O_computed − O_exact| ≤ max_abs_bound

for every output element of the certified query rows, where ``O_computed`` is what the kernel of
:mod:`pasa_npu` returns for the method/precision and ``O_exact`` is exact softmax attention on the
same (already fp16) inputs with the float64 scale τ. The proof is in ``docs/bounds.md`` (§2–§9); each
function below cites the lemma it evaluates. The hypotheses (``docs/bounds.md`` §1) are:

* H1 every vector-unit operation is the exact result rounded to nearest (ties to even) in its format,
  a matrix product takes exact operands, accumulates in fp32 in any order (with or without fused
  multiply-add) and rounds once; fp32 sums of m terms err by at most γ_m·Σ|terms|
  (γ_m = m·u/(1 − m·u));
* H2 the exponential of the vector unit is an fp32 routine with relative error at most
  :data:`EXP32_REL` before the final rounding (checked exhaustively on all fp16 arguments and on
  10⁶ fp32 arguments by ``tests/npu/test_rigorous.py``, for torch's CPU ``exp`` only: another
  device's exponential must be checked the same way before the bound is used there);
* H3 NumPy's float64 ``exp`` has relative error below 2⁻⁵⁰ and its float64 arithmetic is IEEE.

How it is made rigorous (``docs/bounds.md`` §1):

* every computed fp quantity is *enclosed*: an interval [lo, hi] that contains the value the kernel
  computes, whatever the accumulation order; round-to-nearest is monotone, so a rounded quantity is
  enclosed by the rounded endpoints (ties and rounding boundaries are inside);
* every rounding is bounded at the largest magnitude its operand can take (half an ulp there), and
  a subtraction of two fp numbers is counted exact only when it is provably exact;
* every data-dependent branch (the running-maximum take-over, the re-centring of the reference,
  underflow of an exponential) is covered: the errors of both outcomes are added whenever the
  enclosures allow both;
* the output is compared through a branch-independent identity (Lemma 5, telescoping of the
  take-over factors) and a ratio lemma (Lemma 6), so no quantity is evaluated "along the exact
  trajectory";
* the float64 evaluation of the bound is accounted for: enclosure endpoints are widened by 2⁻³⁸ of
  the magnitude of what was summed, exponentials by 2⁻⁵⁰ plus their argument's error, and the final
  sum of non-negative terms is multiplied by 1 + 2⁻³⁰ (§9);
* besides this worst-case composition (Theorem 1), the run itself is enclosed element by element
  (``docs/bounds.md`` §14, Theorem 4, :mod:`pasa_theory._enclosure`): every stored quantity as an
  interval that holds its value in every run allowed by H1–H3, so that operations on known operands
  stay known and the bound is close to the kernel's own error; per output element the smaller of the
  two bounds is returned (``dominant`` starts with ``enclosure`` where Theorem 4 is the smaller).

Supported arrangements (others raise ``ValueError``; docs/bounds.md §9 Scope and §13): matrix unit
fp16, bf16 or fp32 in / fp32 accumulate / fp16, bf16 or fp32 out; vector unit fp16, bf16 or fp32;
row reductions ``reduce="acc"`` or ``"pairwise"`` (the vector unit's tree, §13.2); with the shift:
``offset="lazy"``, τ folded into M, and either ``recovery="pseudo_average"`` with
``pseudo_average="centered"`` or ``recovery="key_mean"`` (§13.3) — the presets ``npu_fp16``,
``hybrid``, ``bf16``, ``fp32``, ``fp16_strict``, ``fp16_keymean``; ``offset="running"`` with rounded
pseudo-averages and raw accumulators, the ``script`` preset (Theorem 8 of ``docs/bounds.md`` §17, the
enclosure only: :mod:`pasa_theory._running`); without it: flash attention with τ on the scores or on Q
(``fa_qk``, ``fa_q``, ``fa_naive``, ``fa_hybrid``) at those precisions, and ``smooth_k`` (the keys minus
their rounded mean, enclosed: ``docs/bounds.md`` §17.3). ``a_priori`` covers the script (Theorem 9,
§19.1), ``smooth_k`` (Lemma 19.2, ``InputStats.k_dev``, §19.2), additive masks through
``InputStats.mask_max`` (§17.5), and the ``fp64`` arrangements (every unit in float64: ``pasa:fp64`` and
the flash baselines at the ``fp64`` precision) with H1–H2 restated for float64 (γ^{64},
:data:`EXP64_REL`; ``docs/bounds.md`` §19.3); for those ``certify`` has no enclosure (§17.4) and returns
that theorem at each row's own maxima (§19.4).
Masks: the bottom-right causal mask, the padded tail and a boolean or additive ``attn_mask`` (§13.4).
The matrix unit may also accumulate narrowly (``mma_acc`` "fp16"/"fp22", ``mma_round`` nearest/zero):
H1 is then replaced for its products by the chunked model of ``docs/bounds.md`` §15 (Theorem 5,
:mod:`pasa_theory._accum`).
The reference in the accumulator (``score_ref="hi_lo"``, the ``fp16_accurate`` preset and its policy
variants, wide accumulator) is bounded by :mod:`pasa_theory._refbound` (Theorems 6 and 7 of
``docs/bounds.md`` §16, branch-independent: the exact output does not depend on the reference's trajectory).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from . import _accum, _enclosure, _refbound, _running, policies
from .formats import get_format, quantum_array, torch_scalar
from .schema import DTYPE_FORMATS, check_block, check_bnsd, check_scale, format_name

__all__ = [
    "Certificate",
    "certify",
    "EXP32_REL",
    "EXP64_REL",
    "gamma",
    "SUPPORTED_METHODS",
    "InputStats",
    "stats_of",
    "APrioriBound",
    "a_priori",
    "sympy_checks",
]

#: A float64 array (every enclosure, bound and weight below is one).
_F64 = npt.NDArray[np.float64]
_Bool = npt.NDArray[np.bool_]
#: A value the format helpers take: a Python float or a float64 array.
_Real = float | npt.NDArray[np.float64]

#: H2: relative error bound of the fp32 exponential before its result is rounded to the vector format.
EXP32_REL = 2.0**-22

#: H2 for a float64 vector unit (``a_priori`` at the ``fp64`` preset, docs/bounds.md §19.3): relative error
#: bound of torch's float64 ``exp`` (2 ulps; measured worst 0.519 ulp on 10⁶ seeded arguments against
#: mpmath, tests/npu/test_a_priori_fp64.py), plus 2⁻¹⁰⁷⁴ absolute for subnormal results. Its result is
#: the stored value.
EXP64_REL = 2.0**-51

#: Methods whose arrangement :func:`certify` handles (``pasa`` and ``fa_*`` at the precisions of
#: docs/bounds.md §9 Scope: npu_fp16, hybrid, bf16, fp32, fp16_strict, fp16_keymean; and every unit in
#: float64, ``pasa:fp64`` or ``precision="fp64"``, by Theorem 2 at each row's maxima, §19.4).
SUPPORTED_METHODS = (
    "pasa",
    "pasa:npu_fp16",
    "pasa:hybrid",
    "pasa:bf16",
    "pasa:fp32",
    "pasa:fp16_strict",
    "pasa:fp16_keymean",
    "pasa:script",
    "pasa:fp64",
    "fa_qk",
    "fa_q",
    "fa_naive",
    "fa_hybrid",
    "smooth_k",
)

_SAFETY = 1.0 + 2.0**-30  # §9: float64 evaluation of a sum of non-negative terms
_WIDEN = 2.0**-38  # §9: float64 error of an enclosure endpoint, relative to its magnitude
_EXP64 = 2.0**-50  # H3


@dataclass(frozen=True)
class _Fmt:
    name: str
    p: int  # significand bits, implicit bit included
    emin: int
    maxf: float
    np_dtype: Any

    @property
    def u(self) -> float:
        return 2.0**-self.p

    @property
    def eta(self) -> float:
        """Half the spacing of the subnormals: the largest absolute error of rounding in that range."""
        return 2.0 ** (self.emin - self.p)

    @property
    def tiny(self) -> float:
        return 2.0**self.emin

    @property
    def overflow_at(self) -> float:
        """The smallest magnitude that rounds to ±inf (to nearest, ties to even): maxf + half its ulp;
        a value below it rounds to a finite number."""
        return self.maxf + 2.0 ** (math.floor(math.log2(self.maxf)) - self.p)

    def rnd(self, x: _Real) -> _F64:
        """Round to nearest even (float64 → format → float64); monotone, overflow gives ±inf.

        A format without a NumPy dtype (bf16) is rounded as torch converts a float64 to it: to fp32
        first, then to ``p`` bits (:func:`_round_bits`). That double rounding is monotone and equals
        the single rounding on every fp32 value and on every exact result of +, −, ×, ÷ of two
        numbers of the format (24 ≥ 2·8 + 2), which is all an enclosure needs (docs/bounds.md §13.1)."""
        with np.errstate(over="ignore"):
            if self.np_dtype is None:
                x32 = np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float64)
                return _round_bits(x32, self.p, self.emin, self.maxf)
            return np.asarray(x, dtype=np.float64).astype(self.np_dtype).astype(np.float64)

    def hulp(self, mag: _Real) -> _F64:
        """Half an ulp at magnitude ``mag``: |fl(y) − y| ≤ hulp(M) for every |y| ≤ M (Lemma 1).

        Half the quantum of :func:`pasa_theory.formats.quantum_array` (the package's one ulp), inf
        where ``mag`` is not finite."""
        mag = np.asarray(mag, dtype=np.float64)
        finite = np.isfinite(mag)
        return np.where(finite, 0.5 * quantum_array(np.where(finite, mag, 0.0), self.name), np.inf)

    def spacing_min(self, lo: _Real, hi: _Real) -> _F64:
        """Smallest spacing of the format over the values in [lo, hi]: the quantum at the smallest
        magnitude in the interval (the subnormal spacing when it contains 0 or is not finite)."""
        lo = np.asarray(lo, dtype=np.float64)
        hi = np.asarray(hi, dtype=np.float64)
        m = np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(np.abs(lo), np.abs(hi)))
        return quantum_array(np.where(np.isfinite(m), m, 0.0), self.name)

    def sub_err(self, xlo: _Real, xhi: _Real, ylo: _Real, yhi: _Real) -> _F64:
        """Error bound of fl(x − y) for x ∈ [xlo, xhi], y ∈ [ylo, yhi] both in this format: 0 when
        the difference is provably representable (Lemma 2), else half an ulp at its largest size."""
        d = np.maximum(np.abs(np.asarray(xhi) - ylo), np.abs(np.asarray(xlo) - yhi))
        g = np.minimum(self.spacing_min(xlo, xhi), self.spacing_min(ylo, yhi))
        with np.errstate(invalid="ignore"):
            exact = d <= (2.0**self.p) * g
        return np.where(exact, 0.0, self.hulp(d))


def _round_bits(x: _F64, p: int, emin: int, maxf: float) -> _F64:
    """Round float64 ``x`` to nearest, ties to even, with ``p`` significand bits, subnormals below
    2^emin and overflow to ±inf past ``maxf`` (exact in float64: a scaling by a power of two, np.rint)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        _, e = np.frexp(x)
        q = np.ldexp(1.0, np.maximum(e - p, emin - p + 1))
        r = np.rint(x / q) * q
        r = np.where(np.abs(r) > maxf, np.copysign(np.inf, x), r)
        return np.where(np.isfinite(x), r, x)


def _fmt(name: str, np_dtype: Any) -> _Fmt:
    """The constants of ``name`` read from :func:`pasa_theory.formats.get_format` (one definition)."""
    f = get_format(name)
    return _Fmt(name, f.p, f.emin, float(f.max_finite), np_dtype)


_FORMATS = {
    "fp16": _fmt("fp16", np.float16),
    "fp32": _fmt("fp32", np.float32),
    "fp64": _fmt("fp64", np.float64),
    "bf16": _fmt("bf16", None),  # no NumPy dtype: rounded by _round_bits
}


def _scale_in(vd: _Fmt, tau: float) -> float:
    """The softmax scale as the kernel stores it in the vector format: torch converts a Python float (or a
    float64 tensor) to fp16/bf16 through fp32, a double rounding that differs from rounding τ once where
    fl32(τ) is a midpoint of the format (docs/bounds.md §13.1)."""
    return float(vd.rnd(torch_scalar(tau, vd.p)))


def gamma(m: int | float, u: float) -> float:
    """γ_m = m·u/(1 − m·u) (Higham, *Accuracy and Stability*, Lemma 3.1); inf when m·u ≥ 1."""
    mu = float(m) * u
    return mu / (1.0 - mu) if mu < 1.0 else math.inf


@dataclass(frozen=True)
class Certificate:
    """Result of :func:`certify`: a rigorous a-posteriori bound (a theorem under ``docs/bounds.md`` §1).

    ``max_abs_bound`` ≥ max |O_computed − O_exact| over every element of the certified rows;
    ``row_bound[b, h, i]`` the same per row (max over the head dim); ``hull_cap`` = max over rows of
    max_r |v_r − o| (the trivial bound: the output lies in the hull of V), ``row_hull_cap`` per row;
    ``terms`` the largest value over rows of each part of the bound; ``dominant`` the part that is
    largest at the worst row. ``overflow`` is True when the enclosures cannot exclude an inf/NaN in
    the run (then the bound is inf).
    """

    method: str
    precision: str
    max_abs_bound: float
    hull_cap: float
    rows: npt.NDArray[np.int64]
    row_bound: _F64
    row_hull_cap: _F64
    terms: dict[str, float] = field(default_factory=dict)
    dominant: str = ""
    overflow: bool = False
    #: probabilistic bound (docs/bounds.md §12): each element's error is below its ``row_prob_bound``
    #: entry's row value with probability ≥ ``confidence`` under the model stated there
    prob_abs_bound: float = math.inf
    row_prob_bound: _F64 | None = None
    confidence: float = 0.99

    @property
    def vacuous(self) -> bool:
        """True when the bound says no more than the trivial hull cap."""
        return not (self.max_abs_bound < self.hull_cap)


# ---------------------------------------------------------------------------------------------------
# input handling


def _as_array(name: str, x: Any) -> _F64:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = (
            x.detach().cpu().float().numpy()
            if str(x.dtype) in ("torch.bfloat16",)
            else x.detach().cpu().numpy()
        )
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array-like of reals (BNSD), got {type(x).__name__}") from None
    if a.ndim != 4:
        raise ValueError(f"{name} must be 4-D BNSD (batch, heads, seq, head_dim), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite")
    return a


def _check_representable(name: str, a: _F64, fmt: _Fmt) -> None:
    if not np.array_equal(fmt.rnd(a), a):
        raise ValueError(
            f"{name} must hold values exactly representable in {fmt.name} (the kernel's matmul_in); "
            "round the inputs first, the bound is for the rounded inputs"
        )


def _pad(x: _F64, n: int, rule: str) -> _F64:
    """``pasa_npu.kernel._pad_rows`` (sequence dim 2) in NumPy: the same padding rule."""
    s = x.shape[2]
    pad = (-s) % n
    if pad == 0:
        return x
    if rule == "zero" or (rule == "script" and s < n):
        extra = np.zeros((*x.shape[:2], pad, x.shape[3]))
    else:
        extra = x[:, :, np.arange(s - pad, s) % s]
    return np.concatenate((x, extra), axis=2)


#: Formats of the matrix unit's operands and output and of the vector unit that the bound handles
#: (docs/bounds.md §13.1); the accumulator (matrix unit and ``reduce="acc"``) is fp32.
_CERT_FORMATS = ("fp16", "bf16", "fp32")


def _float64_units(pol: policies.Policy) -> bool:
    """Every unit of ``pol`` in float64 (the ``fp64`` preset): the arrangement of docs/bounds.md §19.3,
    which :func:`a_priori` covers and :func:`certify` bounds by that theorem at each row's maxima
    (§19.4, no enclosure: §17.4)."""
    units = (pol.matmul_in, pol.matmul_acc, pol.matmul_out, pol.vector, pol.coef_dtype)
    return all(f.name == "fp64" for f in units)


def _check_policy(pol: policies.Policy, *, float64: bool = False) -> None:
    """ValueError naming what ``pol`` lacks for the theorems; ``float64=True`` (``a_priori`` only) also
    accepts every unit in float64 (docs/bounds.md §19.3)."""
    why = []
    wide = float64 and _float64_units(pol)
    also = " (or every unit in fp64: docs/bounds.md §19.3–§19.4)" if float64 else ""
    if not wide and (pol.matmul_in.name not in _CERT_FORMATS or pol.matmul_acc.name != "fp32"):
        why.append("matrix unit fp16, bf16 or fp32 in / fp32 accumulate" + also)
    if not wide and (pol.matmul_out.name not in _CERT_FORMATS or pol.vector.name not in _CERT_FORMATS):
        why.append("matmul_out and vector in fp16, bf16 or fp32" + also)
    if pol.modelled_as is not None:
        why.append("one of the package's own kernels")
    if policies.unmodelled_steps(pol):
        why.append("none of the steps " + ", ".join(policies.unmodelled_steps(pol)))
    if pol.shift:
        centered = pol.recovery == "key_mean" or pol.pseudo_average == "centered"
        # offset="running" (the script's bookkeeping, docs/bounds.md §17): rounded pseudo-averages, raw
        # accumulators, the wide matrix-unit accumulator
        running = (
            pol.offset == "running"
            and pol.recovery == "pseudo_average"
            and pol.pseudo_average == "rounded"
            and pol.accum == "raw"
            and pol.mma_acc == "wide"
        )
        if not ((pol.offset == "lazy" and centered) or running):
            why.append(
                "offset='lazy' with recovery='key_mean' or pseudo_average='centered', or offset='running' "
                "with pseudo_average='rounded', accum='raw' and mma_acc='wide' (the script)"
            )
        if pol.placement != "m":
            why.append("the softmax scale folded into M")
        if pol.coef_dtype.name != pol.vector.name:
            why.append("c stored in the vector format")
    if why:
        raise ValueError(
            f"certify supports {SUPPORTED_METHODS} at the precisions of docs/bounds.md §9 (Scope); policy {pol.name!r} "
            f"(shift={pol.shift}) needs: " + "; ".join(why)
        )


# ---------------------------------------------------------------------------------------------------
# enclosures of the score tile (steps setup, a)


def _shifted_keys(kp: _F64, n: int, diag: float, off: float, mi: _Fmt, mo: _Fmt) -> tuple[_F64, _F64]:
    """Enclosure of K̃_j = fl(M̂ᵀ·K_j) (Lemma 3): exact value ± γ^{fp32}_n·Σ|M̂||K|, then rounded."""
    L, D = kp.shape
    kb = kp.reshape(L // n, n, D)
    colsum = kb.sum(axis=1, keepdims=True)
    colabs = np.abs(kb).sum(axis=1, keepdims=True)
    centre = (diag - off) * kb + off * colsum
    mag = abs(diag - off) * np.abs(kb) + abs(off) * colabs + abs(off) * np.abs(kb)
    rad = gamma(n, 2.0**-24) * mag + _WIDEN * mag
    lo = mi.rnd(mo.rnd(centre - rad)).reshape(L, D)
    hi = mi.rnd(mo.rnd(centre + rad)).reshape(L, D)
    return lo, hi


def _shifted_keys_narrow(
    kp: _F64, n: int, diag: float, off: float, mi: _Fmt, mo: _Fmt, acc: _accum.Accumulator
) -> tuple[_F64, _F64]:
    """Lemma 3 with a narrow accumulator (docs/bounds.md §15.1): K̃_j = M̂ᵀ·K_j enclosed chunk by chunk
    (:func:`pasa_theory._accum.matmul_enclosure`), then rounded to matmul_out and the operand format;
    a partial sum that may overflow or saturate gives ±inf (overflow)."""
    L, D = kp.shape
    m_hat = np.full((n, n), off)
    np.fill_diagonal(m_hat, diag)
    kb = kp.reshape(L // n, n, D)
    enc = _accum.matmul_enclosure(m_hat.T, m_hat.T, kb, kb, acc)
    lo, hi = mi.rnd(mo.rnd(enc.lo)).reshape(L, D), mi.rnd(mo.rnd(enc.hi)).reshape(L, D)
    return lo, hi


def _score_tile_narrow(qm: _F64, klo: _F64, khi: _F64, acc: _accum.Accumulator) -> tuple[_F64, _F64]:
    """Lemma 3 with a narrow accumulator (docs/bounds.md §15.1, Theorem 5): the accumulator of Q·K̃ᵀ,
    chunks of k along d, each rounding at the largest partial sum the enclosure allows; ±inf where a
    partial sum may overflow (to nearest) or saturate (toward zero): the run's overflow."""
    enc = _accum.matmul_enclosure(qm, qm, klo.T, khi.T, acc)
    return enc.lo, enc.hi


def _score_tile(qm: _F64, klo: _F64, khi: _F64) -> tuple[_F64, _F64]:
    """Enclosure of the fp32 accumulator Q·K̃ᵀ (Lemma 3): midpoint–radius products
    ± γ^{fp32}_D·Σ|q||k̃|."""
    D = qm.shape[1]
    mid = (klo + khi) * 0.5
    rad = (khi - klo) * 0.5
    aq = np.abs(qm)
    dot = qm @ mid.T
    mag = aq @ np.maximum(np.abs(klo), np.abs(khi)).T
    spread = aq @ rad.T
    e = gamma(D, 2.0**-24) * mag + _WIDEN * mag
    return dot - spread - e, dot + spread + e


def _key_offsets(eng: _Engine, qg: _F64, kp: _F64) -> tuple[_F64, _F64]:
    """Enclosure (R × T) of the block offsets of ``recovery="key_mean"`` (Lemma 13.3): k̄_j the fp32
    mean of block j of the padded keys (any order, :func:`_enclosure.mean_enclosure`), Δk_j =
    fl_in(fl32(fl32(k̄_j − k̄_0)·fl32(−off·n))) (Δk_0 = 0 exactly), δ_j = fl_vd(fl_out(acc32(q·Δk_j)))
    (Lemma 3 (ii)); the same steps as ``pasa_npu.kernel._tiled_attention``."""
    n, T, f32, mi = eng.n, eng.T, eng.f32, eng.mi
    D = kp.shape[1]
    tile = kp.reshape(T, n, D).transpose(0, 2, 1).reshape(T * D, n)
    kb_lo, kb_hi = _enclosure.mean_enclosure(tile, tile, mi, f32, _WIDEN)
    kb_lo, kb_hi = kb_lo.reshape(T, D), kb_hi.reshape(T, D)
    d_lo, d_hi = _enclosure.add(kb_lo, kb_hi, -kb_hi[:1], -kb_lo[:1])
    d_lo, d_hi = f32.rnd(d_lo), f32.rnd(d_hi)
    d_lo[0] = d_hi[0] = 0.0  # k̄_0 − k̄_0 of one fp32 value
    s32 = float(f32.rnd(-eng.off * n))
    t_lo, t_hi = _enclosure.mul(d_lo, d_hi, s32, s32)
    dk_lo, dk_hi = mi.rnd(f32.rnd(t_lo)), mi.rnd(f32.rnd(t_hi))
    lo, hi = _score_tile(qg, dk_lo, dk_hi)
    return eng.vd.rnd(eng.mo.rnd(lo)), eng.vd.rnd(eng.mo.rnd(hi))


# ---------------------------------------------------------------------------------------------------
# the certificate


def certify(
    method: str,
    q: Any,
    k: Any,
    v: Any,
    *,
    precision: Any = "npu_fp16",
    beta: float | None = None,
    block_kv: int = 128,
    scale: float | None = None,
    is_causal: bool = False,
    rows: Any = None,
    shifted_keys: Any = None,
    attn_mask: Any = None,
    confidence: float = 0.99,
    out_format: Any = None,
) -> Certificate:
    """Rigorous a-posteriori bound on max|O_computed − O_exact| for the harness method ``method``.

    Args mirror :func:`pasa_npu.methods.run_method`: q (B, H, S1, d), k and v (B, Hkv, S2, ·) as
    arrays or tensors whose values are exactly representable in fp16; ``rows``: query positions to
    certify (default: all). Returns a :class:`Certificate`. Torch-free (NumPy).

    ``confidence``: for the probabilistic companion ``prob_abs_bound`` (docs/bounds.md §12), each
    output element's error is below its probabilistic bound with probability ≥ ``confidence`` under
    the stated model (the roundings of the ℓ and O accumulators independent-in-mean, |δ| ≤ u).

    ``shifted_keys`` (PASA only): the shifted keys K̃ the run used, (B, Hkv, ⌈S2/n⌉·n, d), as
    ``pasa_npu.shifted_keys`` returns them. Without it K̃ is *enclosed* for every fp32 summation
    order of M̂ᵀK (Lemma 3), which is rigorous for any matrix unit but wide when K is biased (each
    entry of K̃ sums n terms of size |β·τ·k̄|/n·n that cancel); with it the bound is conditional on
    that observed setup product (everything after it is still enclosed).

    ``attn_mask``: as the kernel takes it, broadcastable to (B, H, S1, S2), not together with
    ``is_causal``: boolean (True = attend; step c sets the masked scores to −∞ after the block means) or
    additive float (finite or −∞, rounded to the vector format and added after the block means;
    docs/bounds.md §13.4).

    ``out_format``: the format the output is cast to at the end (the kernel returns ``q.dtype``): a
    format name or dtype; ``None`` means ``q``'s dtype when it is fp16, bf16 or fp32 (a tensor or a
    NumPy array), else (float64 arrays) the matrix unit's input format, the dtype the inputs are
    representable in (fp16 for every fp16 precision, as before this argument existed).

    A theorem under the hypotheses H1–H3 of ``docs/bounds.md`` §1 (proof §2–§9 and §14), not an
    estimate: per element the smaller of Theorem 1 (§9) and the enclosure of the run (Theorem 4, §14).
    """
    pol = policies.resolve(method, precision)
    hi_lo = pol.score_ref == "hi_lo"  # the reference in the accumulator: Theorem 6 (docs/bounds.md §16)
    fp64 = _float64_units(pol)  # every unit in float64: Theorem 2 at each row's maxima (docs/bounds.md §19.4)
    if hi_lo:
        _refbound.check_policy(pol)
    else:
        _check_policy(pol, float64=True)
    out_name = _out_format(q, out_format, pol.matmul_in.name)
    block_kv = check_block(block_kv)
    if not isinstance(is_causal, bool):
        raise TypeError(f"is_causal must be a bool, got {type(is_causal).__name__}")
    qa, ka, va = _as_array("q", q), _as_array("k", k), _as_array("v", v)
    B, H, _, S1, S2, D, _ = check_bnsd(qa.shape, ka.shape, va.shape)
    keep, bias = _mask_arrays(attn_mask, is_causal, (B, H, S1, S2))
    Hkv = ka.shape[1]
    mi = _FORMATS[pol.matmul_in.name]
    for name, a in (("q", qa), ("k", ka), ("v", va)):
        _check_representable(name, a, mi)
    tau = check_scale(scale, D)
    if rows is None:
        sel = np.arange(S1)
    else:
        sel = np.asarray(rows, dtype=np.int64).reshape(-1)
        if sel.size == 0 or sel.min() < 0 or sel.max() >= S1:
            raise ValueError(f"rows must be query positions in [0, {S1}), got {rows!r}")
    n = S2 if pol.untiled else int(block_kv)
    if pol.shift and n < 2:
        raise ValueError(f"block_kv must be >= 2 for PASA, got {n}")

    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, (int, float))
        or not (0.0 < confidence < 1.0)
    ):
        raise ValueError(f"confidence must be a probability in (0, 1), got {confidence!r}")
    # Propositions 3 and 4 together: four Azuma events of probability ≤ 2e^{−λ²/2} each (docs/bounds.md §18)
    lam_p = math.sqrt(2.0 * math.log(8.0 / (1.0 - confidence)))
    if fp64:
        if shifted_keys is not None:
            raise ValueError("shifted_keys: not used for the fp64 arrangement (docs/bounds.md §19.4)")
        if out_name != "fp64":
            raise ValueError(
                f"out_format: the fp64 arrangement is covered with a float64 output only, got {out_name}"
            )
        return _certify_fp64(
            method, pol, qa, ka, va, keep, bias, sel, precision=precision, beta=beta, block_kv=n,
            scale=scale, is_causal=is_causal, confidence=confidence,
        )  # fmt: skip
    if hi_lo:
        if shifted_keys is not None:
            raise ValueError(
                "shifted_keys applies to PASA's shifting matrix, which score_ref='hi_lo' does not use"
            )
        if keep is not None or bias is not None:
            raise ValueError(
                "attn_mask: not covered for score_ref='hi_lo' (docs/bounds.md §16.9); use is_causal"
            )
        if out_name != pol.matmul_in.name:
            raise ValueError(
                f"out_format: score_ref='hi_lo' is covered with the output in {pol.matmul_in.name} only, got {out_name}"
            )
        return _certify_ref(
            method, pol, qa, ka, va, tau=tau, n=n, sel=sel, is_causal=is_causal, confidence=confidence
        )
    kt_obs = None
    if shifted_keys is not None:
        if not pol.shift:
            raise ValueError("shifted_keys applies to PASA methods only")
        kt_obs = _as_array("shifted_keys", shifted_keys)
        L = -(-S2 // n) * n
        if kt_obs.shape != (B, Hkv, L, D):
            raise ValueError(f"shifted_keys must have shape {(B, Hkv, L, D)}, got {kt_obs.shape}")
        _check_representable("shifted_keys", kt_obs, mi)
    eng = _Engine(pol, tau, n, S1, S2, D, beta, is_causal, out_name)
    eng.lam_p = lam_p
    eng.prob_lam = lam_p
    G = H // Hkv
    out = _GroupResults(B, H, sel.size)
    for b in range(B):
        for hk in range(Hkv):
            kp = _pad(ka[b : b + 1, hk : hk + 1], n, pol.kv_tail)[0, 0]
            vp = _pad(va[b : b + 1, hk : hk + 1], n, pol.kv_tail)[0, 0]
            qg = qa[b, hk * G : (hk + 1) * G][:, sel].reshape(G * sel.size, D)
            ridx = np.tile(sel, G)
            eng.keep = (
                None if keep is None else keep[b, hk * G : (hk + 1) * G][:, sel].reshape(G * sel.size, S2)
            )
            if bias is not None:
                b64 = bias[b, hk * G : (hk + 1) * G][:, sel].reshape(G * sel.size, S2)
                eng.bias = (b64, eng.vd.rnd(eng.f32.rnd(b64)))  # torch rounds a float64 through fp32
            if pol.smooth_k:  # the kernel's keys are fl(K − fl(mean K)); the golden stays on K (Lemma 17.4)
                eng.k_tile = _smoothed_keys(ka[b, hk], eng.vd, eng.f32, n, pol.kv_tail, eng.mi)
            res = eng.run(qg, ka[b, hk], kp, vp, ridx, None if kt_obs is None else kt_obs[b, hk])
            out.add(b, hk, G, res)
    return out.certificate(method, pol, sel, confidence)


class _GroupResults:
    """The per-(batch, KV head) results of :func:`certify` gathered into the tables of a
    :class:`Certificate` (one implementation for the shifting and the reference paths)."""

    def __init__(self, B: int, H: int, R: int) -> None:
        self.bound = np.zeros((B, H, R))
        self.cap = np.zeros((B, H, R))
        self.prob = np.zeros((B, H, R))
        self.terms: dict[str, float] = {}
        self.worst: tuple[float, str] = (-1.0, "")
        self.overflow = False

    def add(self, b: int, hk: int, G: int, res: dict[str, Any]) -> None:
        """The result ``res`` of the row group of batch ``b``, KV head ``hk`` (G query heads)."""
        heads, R = slice(hk * G, (hk + 1) * G), self.bound.shape[2]
        self.bound[b, heads] = res["bound"].reshape(G, R)
        self.cap[b, heads] = res["cap"].reshape(G, R)
        self.prob[b, heads] = res["prob"].reshape(G, R)
        self.overflow |= bool(res["overflow"])
        for key, val in res["terms"].items():
            self.terms[key] = max(self.terms.get(key, 0.0), val)
        if res["worst"][0] > self.worst[0]:
            self.worst = res["worst"]

    def certificate(
        self, method: str, pol: policies.Policy, sel: npt.NDArray[np.int64], confidence: float
    ) -> Certificate:
        return Certificate(
            method=method,
            precision=pol.name,
            max_abs_bound=float(self.bound.max(initial=0.0)),
            hull_cap=float(self.cap.max(initial=0.0)),
            rows=sel,
            row_bound=self.bound,
            row_hull_cap=self.cap,
            terms=self.terms,
            dominant=self.worst[1],
            overflow=self.overflow,
            prob_abs_bound=float(self.prob.max(initial=0.0)),
            row_prob_bound=self.prob,
            confidence=float(confidence),
        )


def _row_sum_rel(pol: policies.Policy, n: int) -> float:
    """Relative error bound of the block row sum ℓ_j of n non-negative terms (step d): accumulation in
    ``pol.reduce_format`` (fp32; float64 for a float64 vector unit, docs/bounds.md §19.3) in any order,
    then one rounding to the vector format if it is narrower (``reduce="acc"``, Lemma 7), or the vector
    unit's pairwise tree of depth ⌈log₂ n⌉, γ_⌈log₂ n⌉ in the vector format (``"pairwise"``,
    Lemma 13.2; Higham, Accuracy and Stability, §4.2). A sum of two non-negative numbers is exact
    when it is subnormal, so the relative form holds there too."""
    u = _FORMATS[pol.vector.name].u
    if pol.reduce == "pairwise":
        return gamma(max(1, (n - 1).bit_length()), u)
    acc = pol.reduce_format
    uv = u if pol.vector.name != acc.name else 0.0
    return gamma(n, 2.0**-acc.p) * (1 + uv) + uv


def _mask_arrays(
    attn_mask: Any, is_causal: bool, target: tuple[int, int, int, int]
) -> tuple[npt.NDArray[np.bool_] | None, _F64 | None]:
    """``attn_mask`` as (keep, bias) arrays of shape ``target`` = (B, H, S1, S2), the kernel's rule
    (``pasa_npu._checks.check_mask``): None; a boolean mask (True = attend): (mask, None); an additive
    float mask: (mask > −∞, mask with −∞ set to 0), its entries finite or −∞."""
    if attn_mask is None:
        return None, None
    if is_causal:
        raise ValueError("attn_mask and is_causal=True cannot both be given (as in torch SDPA)")
    if hasattr(attn_mask, "detach"):  # a torch tensor, without importing torch
        attn_mask = attn_mask.detach().cpu()
        attn_mask = (
            attn_mask.numpy() if str(attn_mask.dtype) != "torch.bfloat16" else attn_mask.float().numpy()
        )
    m = np.asarray(attn_mask)
    if m.dtype != np.bool_ and not np.issubdtype(m.dtype, np.floating):
        raise TypeError(f"attn_mask must be bool (True = attend) or floating (additive), got dtype {m.dtype}")
    if m.ndim > 4:
        raise ValueError(f"attn_mask must be broadcastable to (B, H, S1, S2) = {target}, got shape {m.shape}")
    shape = (1,) * (4 - m.ndim) + m.shape
    if any(a not in (1, t) for a, t in zip(shape, target, strict=True)):
        raise ValueError(f"attn_mask must be broadcastable to (B, H, S1, S2) = {target}, got shape {m.shape}")
    m = np.broadcast_to(m.reshape(shape), target)
    if m.dtype == np.bool_:
        return m, None
    m = m.astype(np.float64)
    if not np.all(np.isfinite(m) | (m == -np.inf)):
        raise ValueError("attn_mask: an additive mask must hold finite values or -inf")
    keep = m > -np.inf
    return keep, np.where(keep, m, 0.0)


def _out_format(q: Any, out_format: Any, default: str) -> str:
    """The output format of :func:`certify` (see its ``out_format``)."""
    name: str
    if out_format is not None:
        name = format_name(out_format, "out_format")
    else:
        found: str | None = DTYPE_FORMATS.get(str(getattr(q, "dtype", "")).removeprefix("torch."))
        name = found if found in _CERT_FORMATS and found is not None else default
    if name not in _FORMATS:
        raise ValueError(f"out_format must be one of {list(_FORMATS)}, got {out_format!r}")
    return name


def _golden(s64: _F64, sig: _F64, vis: npt.NDArray[np.bool_], vp: _F64, S2: int) -> tuple[_F64, _F64]:
    """The float64 golden o' (R, Dv) and its error bound ε_o (Lemma 8) from the float64 scaled scores
    s64 (R, L), their error σ and the visible columns."""
    Dv = vp.shape[1]
    M = np.max(np.where(vis, s64, -np.inf), axis=1, keepdims=True)
    M = np.where(np.isfinite(M), M, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        a64 = 4 * 2.0**-53 * (np.abs(s64) + np.abs(M))
        wmid = np.where(vis, np.exp(s64 - M), 0.0)
    sw = wmid.sum(axis=1, keepdims=True)
    sw = np.where(sw > 0, sw, 1.0)
    o64 = (wmid @ vp) / sw
    lam64 = np.max(np.where(vis, sig + a64, 0.0), axis=1, initial=0.0) + _EXP64
    vabs = np.abs(vp).max() if vp.size else 0.0
    eps_o = (np.expm1(2 * lam64) * 1.01)[:, None] * (vabs + np.abs(o64)) + 2.1 * gamma(
        S2 + 2, 2.0**-53
    ) * vabs
    return o64, eps_o * np.ones((1, Dv))


def _visible(ridx: npt.NDArray[np.int64], L: int, S1: int, S2: int, causal: bool) -> npt.NDArray[np.bool_]:
    """Visible columns (R, L): unpadded, and not in the future under the bottom-right causal mask."""
    cols = np.arange(L)
    vis = np.broadcast_to(cols < S2, (ridx.size, L)).copy()
    if causal:
        vis &= cols[None, :] <= ridx[:, None] + (S2 - S1)
    return vis


def _certify_fp64(
    method: str,
    pol: policies.Policy,
    qa: _F64,
    ka: _F64,
    va: _F64,
    keep: Any,
    bias: Any,
    sel: npt.NDArray[np.int64],
    *,
    precision: Any,
    beta: float | None,
    block_kv: int,
    scale: float | None,
    is_causal: bool,
    confidence: float,
) -> Certificate:
    """The rigorous bound for the all-float64 arrangement (docs/bounds.md §19.4): Theorem 2 (§19.3) at
    each certified row's own statistics — max|q| of the row, max|k|, max|v| and the column spread of V of
    its KV head, the row's largest finite additive-mask entry. A theorem for these inputs (they are in
    the class Theorem 2 covers); no enclosure of the run, which in float64 would need directed rounding
    (§17.4), so it is as loose as Theorem 2 (10²–10⁵× the measured error). The hull cap is computed from
    the float64 golden (Lemma 8's o′; for reading only). ``prob_abs_bound`` is the same number."""
    B, H, S1, D = qa.shape
    Hkv, S2 = ka.shape[1], ka.shape[2]
    G = H // Hkv
    R = sel.size
    row_bound = np.zeros((B, H, R))
    row_cap = np.zeros((B, H, R))
    tau = check_scale(scale, D)
    vis_all = _visible(sel, S2, S1, S2, is_causal)[:, :S2]  # (R, S2) bottom-right causal
    overflow = False
    for b in range(B):
        for hk in range(Hkv):
            kk, vv = ka[b, hk], va[b, hk]
            k_max = float(np.abs(kk).max(initial=0.0))
            v_abs = float(np.abs(vv).max(initial=0.0))
            v_spread = float(np.max(vv.max(axis=0) - vv.min(axis=0))) if vv.size else 0.0
            for h in range(hk * G, (hk + 1) * G):
                qq = qa[b, h][sel]  # (R, D)
                s = tau * (qq @ kk.T)
                vis = vis_all.copy()
                if keep is not None:
                    vis &= np.broadcast_to(keep, (B, H, S1, S2))[b, h][sel]
                mask_rows = np.zeros(R)
                if bias is not None:
                    bb = np.broadcast_to(bias, (B, H, S1, S2))[b, h][sel]
                    vis &= np.isfinite(bb)
                    s = s + np.where(np.isfinite(bb), bb, 0.0)
                    mask_rows = np.where(np.isfinite(bb), np.abs(bb), 0.0).max(axis=1, initial=0.0)
                # the hull cap from the float64 golden (Lemma 8's o′; for reading only, not a bound)
                o64, _ = _golden(s, np.zeros_like(s), vis, vv, S2)
                dv = np.where(vis[:, :, None], np.abs(vv[None, :, :] - o64[:, None, :]), 0.0)
                row_cap[b, h] = np.where(vis.any(axis=1), dv.max(axis=(1, 2), initial=0.0), 0.0)
                for i in range(R):
                    st = InputStats(float(np.abs(qq[i]).max(initial=0.0)), k_max, v_abs, v_spread, D, S2,
                                    float(mask_rows[i]))  # fmt: skip
                    ap = a_priori(method, st, precision=precision, beta=beta, block_kv=block_kv, scale=scale)
                    row_bound[b, h, i] = ap.bound
                    overflow |= ap.overflow_possible

    bound = float(row_bound.max(initial=0.0))
    return Certificate(
        method=method,
        precision=pol.name,
        max_abs_bound=bound,
        hull_cap=float(row_cap.max(initial=0.0)),
        rows=sel,
        row_bound=row_bound,
        row_hull_cap=row_cap,
        terms={"theorem2_at_row_maxima": bound},
        dominant="theorem2_at_row_maxima",
        overflow=overflow,
        prob_abs_bound=bound,
        row_prob_bound=row_bound.copy(),
        confidence=confidence,
    )


def _certify_ref(
    method: str,
    pol: policies.Policy,
    qa: _F64,
    ka: _F64,
    va: _F64,
    *,
    tau: float,
    n: int,
    sel: npt.NDArray[np.int64],
    is_causal: bool,
    confidence: float,
) -> Certificate:
    """Theorem 6 (docs/bounds.md §16): the reference in the accumulator (``score_ref="hi_lo"``)."""
    B, H, S1, _ = qa.shape
    Hkv, S2 = ka.shape[1], ka.shape[2]
    G = H // Hkv
    e_hi = _refbound.e_hi_upper(qa, ka)
    out = _GroupResults(B, H, sel.size)
    L = -(-S2 // n) * n
    for b in range(B):
        for hk in range(Hkv):
            kp = _pad(ka[b : b + 1, hk : hk + 1], n, pol.kv_tail)[0, 0]
            vp = _pad(va[b : b + 1, hk : hk + 1], n, pol.kv_tail)[0, 0]
            qg = qa[b, hk * G : (hk + 1) * G][:, sel].reshape(G * sel.size, -1)
            vis = _visible(np.tile(sel, G), L, S1, S2, is_causal)
            cands, complete = _refbound.vbar_candidates(va[b, hk], pol.v_center)
            with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                res = _refbound.run_group(
                    pol,
                    tau,
                    n,
                    qg,
                    kp,
                    vp,
                    vis,
                    cands,
                    complete,
                    e_hi,
                    lambda s64, sig, vis_, vp_: _golden(s64, sig, vis_, vp_, S2),
                    S2,
                )
            # docs/bounds.md §16.6: the probabilistic bound of this path is the rigorous one
            out.add(b, hk, G, dict(res, prob=res["bound"]))
    return out.certificate(method, pol, sel, confidence)


class _Engine:
    """The per-(batch, KV head) evaluation of the bound: steps a–h of ``docs/bounds.md``."""

    #: Azuma multiplier of the probabilistic bound (docs/bounds.md §12), set by :func:`certify`.
    lam_p: float
    #: §18: the same multiplier for the probabilistic enclosure (None: not computed), and its result
    prob_lam: float | None = None
    prob_out: tuple[_F64, _F64] | None = None

    def __init__(
        self,
        pol: policies.Policy,
        tau: float,
        n: int,
        S1: int,
        S2: int,
        D: int,
        beta: float | None,
        is_causal: bool,
        out_format: str = "fp16",
    ) -> None:
        self.pol = pol
        self.tau = tau
        self.n = n
        # offset="running" (the script): its own steps b, e–g in the enclosure (docs/bounds.md §17)
        self.running_offsets = _running.RunningOffsets if pol.shift and pol.offset == "running" else None
        self.S1, self.S2, self.D = S1, S2, D
        self.T = -(-S2 // n)
        self.L = self.T * n
        self.causal = is_causal
        self.mi = _FORMATS[pol.matmul_in.name]
        self.mo = _FORMATS[pol.matmul_out.name]
        self.vd = _FORMATS[pol.vector.name]
        self.f32 = _FORMATS["fp32"]
        self.out = _FORMATS[out_format]  # the result is cast to the input dtype
        self.c: float | None = None
        if pol.shift:
            consts = policies.shift_constants(pol, n, beta, tau)
            self.diag = float(self.mi.rnd(consts.diag))
            self.off = float(self.mi.rnd(consts.off)) if n > 1 else 0.0
            self.c = float(consts.c)
            self.recenter = float(self.vd.rnd(pol.recenter_at))
        vd = self.vd
        # ρ_exp: |log(p / e^y)| for a result in the normal range (H2 and one rounding)
        self.rho_exp = -math.log1p(-EXP32_REL) - math.log1p(-vd.u)
        self.eta_exp = vd.eta + _FORMATS["fp32"].eta  # absolute part (underflow) of one exp result
        self.exp_rel = EXP32_REL
        #: the matrix unit's narrow accumulator (docs/bounds.md §15), None for mma_acc="wide"
        self.acc = _accum.accumulator_of(pol)
        #: §14: also enclose the run element-wise and keep the smaller bound per element
        self.use_enclosure = True
        #: the boolean ``attn_mask`` of the current row group (R × S2), True = attend; None: no mask
        self.keep: npt.NDArray[np.bool_] | None = None
        #: an additive ``attn_mask`` of the current row group: (as given, rounded to the vector format)
        self.bias: tuple[_F64, _F64] | None = None
        #: with an additive mask, the enclosure of the score tile before it (the block means' tile)
        self.mean_tile: tuple[_F64, _F64] | None = None
        #: ``recovery="key_mean"``: enclosure (R × T) of the block offsets δ_j of the current row group
        self.key_offs: tuple[_F64, _F64] | None = None
        #: ``smooth_k``: enclosure of the padded smoothed keys of the current KV head (Lemma 17.4)
        self.k_tile: tuple[_F64, _F64] | None = None

    # -- step a: scores ------------------------------------------------------------------------
    def scores(self, qg: _F64, kp: _F64, kt_obs: _F64 | None) -> tuple[_F64, _F64]:
        pol, vd, mo, mi = self.pol, self.vd, self.mo, self.mi
        if pol.shift and kt_obs is not None:
            klo = khi = kt_obs
            qm = qg
        elif pol.shift and self.acc is not None:
            klo, khi = _shifted_keys_narrow(kp, self.n, self.diag, self.off, mi, mo, self.acc)
            qm = qg
        elif pol.shift:
            klo, khi = _shifted_keys(kp, self.n, self.diag, self.off, mi, mo)
            qm = qg
        else:
            # smooth_k: the enclosure of the smoothed keys fl(K − fl(mean K)) (Lemma 17.4), else K itself
            klo, khi = self.k_tile if self.k_tile is not None else (kp, kp)
            qm = qg
            if pol.placement == "q":
                tv = _scale_in(vd, self.tau)
                qm = mi.rnd(vd.rnd(qg * tv))
        if self.acc is not None:
            lo, hi = _score_tile_narrow(qm, klo, khi, self.acc)
        else:
            lo, hi = _score_tile(qm, klo, khi)
        lo, hi = vd.rnd(mo.rnd(lo)), vd.rnd(mo.rnd(hi))
        if not pol.shift and pol.placement == "scores":
            tv = _scale_in(vd, self.tau)
            lo, hi = vd.rnd(lo * tv), vd.rnd(hi * tv)
        return lo, hi

    def visible(self, ridx: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        vis = _visible(ridx, self.L, self.S1, self.S2, self.causal)
        if self.keep is not None:  # a boolean attn_mask (Lemma 13.4): its rows for this row group
            vis[:, : self.S2] &= self.keep
        return vis

    # -- the whole row group -------------------------------------------------------------------
    def run(
        self,
        qg: _F64,
        k_real: _F64,
        kp: _F64,
        vp: _F64,
        ridx: npt.NDArray[np.int64],
        kt_obs: _F64 | None = None,
    ) -> dict[str, Any]:
        pol, tau = self.pol, self.tau
        R = qg.shape[0]
        slo, shi = self.scores(qg, kp, kt_obs)
        self.key_offs = _key_offsets(self, qg, kp) if pol.shift and pol.recovery == "key_mean" else None
        vis = self.visible(ridx)
        # exact scores s' (float64) and their error σ (Lemma 8)
        s64 = tau * (qg @ kp.T)
        sig = (gamma(self.D + 2, 2.0**-53) * tau) * (np.abs(qg) @ np.abs(kp).T)
        self.mean_tile = None
        if self.bias is not None:  # step c, additive mask (Lemma 13.4): s̃ ← fl(s̃ + fl(mask))
            self.mean_tile = (slo, shi)
            b_vd = np.zeros_like(slo)
            b_vd[:, : self.S2] = self.bias[1]
            t_lo, _ = _enclosure.add(slo, slo, b_vd, b_vd)
            _, t_hi = _enclosure.add(shi, shi, b_vd, b_vd)
            slo, shi = self.vd.rnd(t_lo), self.vd.rnd(t_hi)
            b64 = np.zeros_like(s64)
            b64[:, : self.S2] = self.bias[0]
            s64 = s64 + b64
            sig = sig + 2.0**-52 * (np.abs(s64) + np.abs(b64))
        nonempty = cast("npt.NDArray[np.bool_]", vis.any(axis=1))
        overflow = np.zeros(R, dtype=bool)
        overflow |= ~np.all(np.isfinite(slo) | ~vis, axis=1) | ~np.all(np.isfinite(shi) | ~vis, axis=1)
        if pol.shift:
            overflow |= ~np.all(np.isfinite(slo), axis=1) | ~np.all(np.isfinite(shi), axis=1)

        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            if (
                pol.shift and pol.offset == "running"
            ):  # the script's bookkeeping: Theorem 8 (docs/bounds.md §17)
                res = _result_without_theorem1(self, s64, sig, vis, vp, nonempty, overflow)
                self._tighten(res, slo, shi, vis, vp, nonempty)
                # a row without an enclosure (it may overflow) keeps +∞: inf/NaN cannot be excluded there
                res["overflow"] = bool(res["overflow"]) or bool(np.any(np.isinf(res["bound"])))
                return res
            rec = self.recurrence(slo, shi, vis)
            overflow |= rec["overflow"]
            # NaN produced by inf − inf in a bound is mapped to inf (never to a finite value) below
            res = self.combine(slo, shi, vis, s64, sig, vp, rec, nonempty, overflow)
            if self.use_enclosure:
                self._tighten(res, slo, shi, vis, vp, nonempty)
            return res

    # -- §14: the element-wise enclosure of the run; the smaller of two valid bounds is valid ----------
    def _tighten(
        self,
        res: dict[str, Any],
        slo: _F64,
        shi: _F64,
        vis: npt.NDArray[np.bool_],
        vp: _F64,
        nonempty: npt.NDArray[np.bool_],
    ) -> None:
        if self.mean_tile is not None:  # the tile of the block means travels as L more columns (Lemma 13.4)
            slo = np.concatenate([slo, self.mean_tile[0]], axis=1)
            shi = np.concatenate([shi, self.mean_tile[1]], axis=1)
        if self.key_offs is not None:  # the offsets travel as T more columns of the tile (Lemma 13.3)
            slo = np.concatenate([slo, self.key_offs[0]], axis=1)
            shi = np.concatenate([shi, self.key_offs[1]], axis=1)
        r_lo, r_hi, bad = _enclosure.enclose_run(self, slo, shi, vis, vp, res["o64"])
        o64, eps_o = res["o64"], res["eps_o"]
        with np.errstate(invalid="ignore"):
            dev = np.maximum(r_hi - o64, o64 - r_lo)
            enc = (dev + eps_o) * _SAFETY
        enc = np.where(bad[:, None] | np.isnan(enc), np.inf, enc)
        enc = np.where(nonempty[:, None], enc, 0.0)
        total, totp = res["total"], res["totp"]
        better = enc < total
        total = np.where(better, enc, total)
        totp = np.minimum(totp, total)
        if self.prob_out is not None:  # Proposition 4 (docs/bounds.md §18)
            p_lo, p_hi = self.prob_out
            with np.errstate(invalid="ignore"):
                encp = (np.maximum(p_hi - o64, o64 - p_lo) + eps_o) * _SAFETY
            encp = np.where(bad[:, None] | np.isnan(encp), np.inf, encp)
            encp = np.where(nonempty[:, None], encp, 0.0)
            totp = np.minimum(totp, encp)
        res["bound"] = total.max(axis=1)
        res["prob"] = totp.max(axis=1)
        res["terms"]["enclosure"] = float(np.max(np.where(better, enc, 0.0))) if enc.size else 0.0
        res["enclosed_rows"] = int((~bad & nonempty).sum())
        if total.size and np.any(better):
            r_w, d_w = np.unravel_index(
                np.argmax(np.where(np.isfinite(total), total, np.finfo(float).max)), total.shape
            )
            if better[r_w, d_w]:
                half = 0.5 * (r_hi[r_w, d_w] - r_lo[r_w, d_w])
                off = abs(0.5 * (r_hi[r_w, d_w] + r_lo[r_w, d_w]) - o64[r_w, d_w])
                res["worst"] = (float(total[r_w, d_w]), "enclosure:" + ("error" if off >= half else "width"))
            else:
                res["worst"] = (float(total[r_w, d_w]), res["worst"][1])

    # -- steps b, e–g: block offsets, reference, running maximum (Lemmas 4–5) ---------------------
    def recurrence(self, slo: _F64, shi: _F64, vis: npt.NDArray[np.bool_]) -> dict[str, Any]:
        pol, vd, f32, n, T = self.pol, self.vd, self.f32, self.n, self.T
        R = slo.shape[0]
        c = cast(float, self.c)  # a float whenever it is used (pol.shift)
        ninf = np.full(R, -np.inf)
        m_lo = m_hi = ninf
        phi_lo = phi_hi = np.zeros(R)
        a_lo = a_hi = np.zeros(R)
        started = np.zeros(R, dtype=bool)
        G_lo_off = np.zeros((R, T))  # c·mean32 lower end (0 without shift)
        G_hi_off = np.zeros((R, T))
        errD = np.zeros((R, T))
        notake_err = np.zeros((R, T))  # ε_j + ρ_j if block j may not take over
        take_err = np.zeros((R, T))  # ε_k + ρ_k if block k may take over
        tau_err = np.zeros((R, T))  # |τ_k|: re-centring jump of the stored frame
        may_take = np.zeros((R, T), dtype=bool)
        may_stay = np.zeros((R, T), dtype=bool)
        uf_gamma = np.zeros((R, T), dtype=bool)
        uf_alpha = np.zeros((R, T), dtype=bool)
        mj_lo_all = np.full((R, T), -np.inf)
        mj_hi_all = np.full((R, T), -np.inf)
        overflow = np.zeros(R, dtype=bool)
        for j in range(T):
            cs = slice(j * n, (j + 1) * n)
            blo, bhi, bvis = slo[:, cs], shi[:, cs], vis[:, cs]
            anyvis = bvis.any(axis=1)
            mj_lo = np.where(anyvis, np.max(np.where(bvis, blo, -np.inf), axis=1), -np.inf)
            mj_hi = np.where(anyvis, np.max(np.where(bvis, bhi, -np.inf), axis=1), -np.inf)
            mj_lo_all[:, j], mj_hi_all[:, j] = mj_lo, mj_hi
            # the tile of the block means: before the additive mask (Lemma 13.4)
            mt = self.mean_tile
            tlo, thi = (mt[0][:, cs], mt[1][:, cs]) if mt is not None else (blo, bhi)
            if pol.shift and self.key_offs is not None:
                # Lemma 13.3: δ_j = fl(q·Δk_j) from one more score column, no reference, no re-centring
                dj_lo, dj_hi = self.key_offs[0][:, j], self.key_offs[1][:, j]
                G_lo_off[:, j], G_hi_off[:, j] = dj_lo, dj_hi
                overflow |= ~(np.isfinite(dj_lo) & np.isfinite(dj_hi))
            elif pol.shift:
                first = j == 0
                if pol.reduce == "pairwise":
                    # Lemma 13.2: μ_j is the exact mean of the tile; A = fl(fl(tree(s̃))/n) and
                    # e = fl(tree(fl(s̃ − A))/n) enclosed over the kernel's tree, err_e ≥ |e − (μ_j − A)|
                    amag = np.maximum(np.abs(tlo), np.abs(thi)).mean(axis=1)
                    mlo = tlo.mean(axis=1) - _WIDEN * amag
                    mhi = thi.mean(axis=1) + _WIDEN * amag
                    if first:
                        t_lo, t_hi = _enclosure.block_mean_enclosure(self, tlo, thi)
                        a_lo, a_hi = vd.rnd(t_lo), vd.rnd(t_hi)
                    e_lo, e_hi = _enclosure.deviation_enclosure(self, tlo, thi, mlo, mhi, a_lo, a_hi)
                    xmag = np.maximum(np.abs(tlo - a_hi[:, None]), np.abs(thi - a_lo[:, None]))
                    xr = vd.hulp(xmag)  # the n roundings fl(s̃ − A)
                    tree = _enclosure.pairwise_error(xmag + xr, vd)
                    emag0 = np.maximum(np.abs(e_lo), np.abs(e_hi))
                    err_e = (xr.sum(axis=1) + tree) / n + vd.hulp(emag0) + _WIDEN * (xmag.sum(axis=1) / n)
                else:
                    # step b: fp32 block mean of the (unmasked) tile, Lemma 4
                    amag = np.maximum(np.abs(tlo), np.abs(thi)).mean(axis=1)
                    em = gamma(n + 1, f32.u) * amag + _WIDEN * amag
                    mlo = tlo.mean(axis=1) - em
                    mhi = thi.mean(axis=1) + em
                    if first:
                        a_lo, a_hi = vd.rnd(mlo), vd.rnd(mhi)
                    # e = fl_vd(fl32(mean32 − A))
                    dlo, dhi = mlo - a_hi, mhi - a_lo
                    dmag = np.maximum(np.abs(dlo), np.abs(dhi))
                    e_lo, e_hi = vd.rnd(f32.rnd(dlo)), vd.rnd(f32.rnd(dhi))
                    err_e = f32.hulp(dmag) + (vd.hulp(dmag * (1 + f32.u)) if vd.name != "fp32" else 0.0)
                G_lo_off[:, j] = c * mlo
                G_hi_off[:, j] = c * mhi
                emag = np.maximum(np.abs(e_lo), np.abs(e_hi))
                d0_lo, d0_hi = vd.rnd(e_lo * c), vd.rnd(e_hi * c)
                errD0 = c * err_e + vd.hulp(emag * c)
                if first:
                    dj_lo, dj_hi, errD[:, j] = d0_lo, d0_hi, errD0
                else:
                    far_pos = np.maximum(np.abs(d0_lo), np.abs(d0_hi)) > self.recenter
                    far_cert = (d0_lo > self.recenter) | (d0_hi < -self.recenter)
                    # a_new = fl(a + e) with a + e = mean32 + (e − (mean32 − a)): enclosed from the
                    # mean itself (no dependency blow-up); δa = fl(a_new − a) = e + (rounding of a + e)
                    # + its own rounding; fl(e − δa) is then at most those two roundings (Lemma 4).
                    amag = np.maximum(np.abs(a_lo), np.abs(a_hi)) + emag
                    err_an = vd.hulp(amag)
                    an_lo, an_hi = vd.rnd(mlo - err_e - err_an), vd.rnd(mhi + err_e + err_an)
                    an_lo = vd.rnd(np.maximum(an_lo, a_lo + e_lo - err_an))
                    an_hi = vd.rnd(np.minimum(an_hi, a_hi + e_hi + err_an))
                    err_de = vd.sub_err(an_lo, an_hi, a_lo, a_hi)
                    de_lo, de_hi = vd.rnd(e_lo - err_an), vd.rnd(e_hi + err_an)
                    gap = err_an + err_de
                    ed_lo, ed_hi = vd.rnd(-gap), vd.rnd(gap)
                    err_ed = vd.sub_err(e_lo, e_hi, de_lo, de_hi)
                    d1_lo, d1_hi = vd.rnd(ed_lo * c), vd.rnd(ed_hi * c)
                    errD1 = c * (err_e + err_de + err_ed) + vd.hulp(
                        np.maximum(np.abs(ed_lo), np.abs(ed_hi)) * c
                    )
                    dc_lo, dc_hi = vd.rnd(de_lo * c), vd.rnd(de_hi * c)
                    err_dc = vd.hulp(np.maximum(np.abs(de_lo), np.abs(de_hi)) * c)
                    p1_lo, p1_hi = vd.rnd(phi_lo - dc_hi), vd.rnd(phi_hi - dc_lo)
                    err_p1 = vd.sub_err(phi_lo, phi_hi, dc_lo, dc_hi)
                    tau_err[:, j] = np.where(far_pos, err_p1 + err_dc + c * err_de, 0.0)
                    errD[:, j] = np.where(far_cert, errD1, np.where(far_pos, np.maximum(errD0, errD1), errD0))
                    # enclosures after the (possible) re-centring: hull of both outcomes
                    dj_lo = np.where(far_cert, d1_lo, np.where(far_pos, np.minimum(d0_lo, d1_lo), d0_lo))
                    dj_hi = np.where(far_cert, d1_hi, np.where(far_pos, np.maximum(d0_hi, d1_hi), d0_hi))
                    phi_lo = np.where(far_cert, p1_lo, np.where(far_pos, np.minimum(phi_lo, p1_lo), phi_lo))
                    phi_hi = np.where(far_cert, p1_hi, np.where(far_pos, np.maximum(phi_hi, p1_hi), phi_hi))
                    a_lo = np.where(far_cert, an_lo, np.where(far_pos, np.minimum(a_lo, an_lo), a_lo))
                    a_hi = np.where(far_cert, an_hi, np.where(far_pos, np.maximum(a_hi, an_hi), a_hi))
                if not (
                    np.all(np.isfinite(dj_lo))
                    and np.all(np.isfinite(dj_hi))
                    and np.all(np.isfinite(a_lo))
                    and np.all(np.isfinite(a_hi))
                ):
                    overflow |= ~(
                        np.isfinite(dj_lo) & np.isfinite(dj_hi) & np.isfinite(a_lo) & np.isfinite(a_hi)
                    )
            else:
                dj_lo = dj_hi = np.zeros(R)
            # steps f–g: x = fl(fl(m_j − m) + fl(δ_j − φ)); take-over when x > 0
            act = started & anyvis
            with np.errstate(invalid="ignore"):
                dm_lo, dm_hi = vd.rnd(mj_lo - m_hi), vd.rnd(mj_hi - m_lo)
                err_dm = vd.sub_err(mj_lo, mj_hi, m_lo, m_hi)
                if pol.shift:
                    of_lo, of_hi = vd.rnd(dj_lo - phi_hi), vd.rnd(dj_hi - phi_lo)
                    err_of = vd.sub_err(dj_lo, dj_hi, phi_lo, phi_hi)
                    y_lo, y_hi = dm_lo + of_lo, dm_hi + of_hi
                    x_lo, x_hi = vd.rnd(y_lo), vd.rnd(y_hi)
                    eps = err_dm + err_of + vd.hulp(np.maximum(np.abs(y_lo), np.abs(y_hi)))
                else:
                    x_lo, x_hi = dm_lo, dm_hi
                    eps = err_dm
            x_lo = np.where(act, x_lo, 0.0)
            x_hi = np.where(act, x_hi, 0.0)
            overflow |= act & ~(np.isfinite(x_lo) & np.isfinite(x_hi))
            take_pos = act & (x_hi > 0)
            stay_pos = act & (x_lo <= 0)
            take_cert = (~started & anyvis) | (act & (x_lo > 0))
            may_take[:, j] = take_pos | take_cert
            may_stay[:, j] = stay_pos
            err = np.where(act, eps, 0.0) + self.rho_exp
            notake_err[:, j] = np.where(stay_pos, err, 0.0)
            take_err[:, j] = np.where(take_pos, err, 0.0)
            with np.errstate(over="ignore"):
                uf_gamma[:, j] = stay_pos & (np.exp(np.minimum(x_lo, 0.0) - eps) * (1 - EXP32_REL) < vd.tiny)
                uf_alpha[:, j] = take_pos & (np.exp(-np.maximum(x_hi, 0.0) - eps) * (1 - EXP32_REL) < vd.tiny)
            # state update: hull of both outcomes where the decision is open
            new_m_lo = np.where(take_cert, mj_lo, np.where(take_pos, np.minimum(m_lo, mj_lo), m_lo))
            new_m_hi = np.where(take_cert, mj_hi, np.where(take_pos, np.maximum(m_hi, mj_hi), m_hi))
            m_lo, m_hi = new_m_lo, new_m_hi
            if pol.shift:
                phi_lo = np.where(take_cert, dj_lo, np.where(take_pos, np.minimum(phi_lo, dj_lo), phi_lo))
                phi_hi = np.where(take_cert, dj_hi, np.where(take_pos, np.maximum(phi_hi, dj_hi), phi_hi))
            started = started | anyvis
        return dict(
            G_lo_off=G_lo_off,
            G_hi_off=G_hi_off,
            errD=errD,
            notake_err=notake_err,
            take_err=take_err,
            tau_err=tau_err,
            may_take=may_take,
            may_stay=may_stay,
            uf_gamma=uf_gamma,
            uf_alpha=uf_alpha,
            mj_lo=mj_lo_all,
            mj_hi=mj_hi_all,
            overflow=overflow,
        )

    # -- steps d, h, end: weights, accumulators, output (Lemmas 6–9) ------------------------------
    def combine(
        self,
        slo: _F64,
        shi: _F64,
        vis: npt.NDArray[np.bool_],
        s64: _F64,
        sig: _F64,
        vp: _F64,
        rec: dict[str, Any],
        nonempty: npt.NDArray[np.bool_],
        overflow: npt.NDArray[np.bool_],
    ) -> dict[str, Any]:
        pol, vd, mo, n, T, S2 = self.pol, self.vd, self.mo, self.n, self.T, self.S2
        R, L = slo.shape
        Dv = vp.shape[1]
        blk = np.repeat(np.arange(T), n)  # block of each column
        # chain error of block j: its own non-take-over exp, later take-overs and re-centrings (Lemma 5)
        later = rec["take_err"] + rec["tau_err"]
        rev = np.cumsum(later[:, ::-1], axis=1)[:, ::-1]
        after = np.concatenate([rev[:, 1:], np.zeros((R, 1))], axis=1)  # Σ_{k>j}
        chain = rec["notake_err"] + after
        # underflowing factors of the chain of block j (absolute parts, Lemma 6)
        ufa = rec["uf_alpha"].astype(float)
        ufa_rev = np.cumsum(ufa[:, ::-1], axis=1)[:, ::-1]
        ufa_after = np.concatenate([ufa_rev[:, 1:], np.zeros((R, 1))], axis=1)
        chain_uf = rec["uf_gamma"].astype(float) + ufa_after
        # computed-frame exponent G_r = s̃_r + D_j enclosure (Lemma 5)
        G_lo = slo + (rec["G_lo_off"] - rec["errD"])[:, blk]
        G_hi = shi + (rec["G_hi_off"] + rec["errD"])[:, blk]
        # ρ^p_r: rounding of s̃_r − m_j and of the exponential (step d)
        mjl, mjh = rec["mj_lo"][:, blk], rec["mj_hi"][:, blk]
        with np.errstate(invalid="ignore"):
            err_sub = np.where(vis, vd.sub_err(slo, shi, mjl, mjh), 0.0)
            y_lo = np.where(vis, slo - mjh, -np.inf)
        rho_p = err_sub + self.rho_exp
        with np.errstate(over="ignore", invalid="ignore"):
            uf_p = vis & (np.exp(y_lo - err_sub) * (1 - EXP32_REL) < vd.tiny)
        Rr = rho_p + chain[:, blk]
        M = np.max(np.where(vis, s64, -np.inf), axis=1, keepdims=True)
        M = np.where(np.isfinite(M), M, 0.0)
        opmag = (
            np.abs(slo)
            + np.abs(shi)
            + (np.abs(rec["G_lo_off"]) + np.abs(rec["G_hi_off"]) + rec["errD"])[:, blk]
        )
        with np.errstate(invalid="ignore", over="ignore"):
            argerr = 4 * 2.0**-53 * (np.where(vis, opmag, 0.0) + np.abs(M) + Rr)
            Wlo = np.where(vis, np.exp(G_lo - M - Rr - argerr) * (1 - _EXP64), 0.0)
            Whi = np.where(vis, np.exp(G_hi - M + Rr + argerr) * (1 + _EXP64), 0.0)
            # §12: the exponential's own rounding of p_r as a random relative error θ_r (not enclosed)
            Rd = Rr - self.rho_exp
            Whi_d = np.where(vis, np.exp(G_hi - M + Rd + argerr) * (1 + _EXP64), 0.0)
            Wlo_d = np.where(vis, np.exp(G_lo - M - Rd - argerr) * (1 - _EXP64), 0.0)
            a64 = 4 * 2.0**-53 * (np.abs(s64) + np.abs(M))
            wmid = np.where(vis, np.exp(s64 - M), 0.0)
            wlo = np.where(vis, np.exp(s64 - M - sig - a64) * (1 - _EXP64), 0.0)
            whi = np.where(vis, np.exp(s64 - M + sig + a64) * (1 + _EXP64), 0.0)
        # absolute parts (computed frame, Lemma 6): η per underflowing factor
        a_r = np.where(vis, (uf_p.astype(float) + chain_uf[:, blk]) * self.eta_exp * 1.001, 0.0)
        Z = a_r.sum(axis=1)
        o64, eps_o = _golden(s64, sig, vis, vp, S2)
        # Lemma 6 (ratio lemma) per row and column, rows in chunks to bound memory
        SWlo = Wlo.sum(axis=1)
        cprime = ((Wlo + Whi).sum(axis=1) / 2) / np.where(wmid.sum(axis=1) > 0, wmid.sum(axis=1), 1.0)
        with np.errstate(invalid="ignore", over="ignore"):
            dev = np.maximum(Whi - cprime[:, None] * wlo, cprime[:, None] * whi - Wlo)
        dev = np.where(vis, np.where(np.isnan(dev), np.inf, np.maximum(dev, 0.0)), 0.0)
        cprime_d = ((Wlo_d + Whi_d).sum(axis=1) / 2) / np.where(wmid.sum(axis=1) > 0, wmid.sum(axis=1), 1.0)
        with np.errstate(invalid="ignore", over="ignore"):
            dev_d = np.maximum(Whi_d - cprime_d[:, None] * wlo, cprime_d[:, None] * whi - Wlo_d)
        dev_d = np.where(vis, np.where(np.isnan(dev_d), np.inf, np.maximum(dev_d, 0.0)), 0.0)
        t_exp = (1 + EXP32_REL) * (1 + vd.u) - 1
        BA_p = np.zeros((R, Dv))
        BA = np.zeros((R, Dv))
        cap = np.zeros(R)
        capd = np.zeros((R, Dv))
        vmax = np.zeros((R, Dv))
        chunk = max(1, (1 << 22) // max(1, L * Dv))
        absvp = np.abs(vp)
        stackw = np.stack([dev, a_r, dev_d])
        for r0 in range(0, R, chunk):
            r1 = min(R, r0 + chunk)
            vis3 = vis[r0:r1, :, None]
            dv0 = np.where(vis3, np.abs(vp[None, :, :] - o64[r0:r1, None, :]), 0.0)  # |v_r − o'|
            capd[r0:r1] = dv0.max(axis=1)
            vmax[r0:r1] = np.where(vis3, absvp[None], 0.0).max(axis=1)
            dv = np.where(vis3, dv0 + eps_o[r0:r1, None, :], 0.0)  # ≥ |v_r − o|
            num, absn, num_d = np.einsum("krl,rld->krd", stackw[:, r0:r1], dv)
            with np.errstate(divide="ignore", invalid="ignore"):
                ba = (1 + Z[r0:r1, None]) * num / SWlo[r0:r1, None] + absn
            BA[r0:r1] = np.where((SWlo[r0:r1, None] > 0) & ~np.isnan(ba), ba, np.inf)
            rnd_d = np.sqrt(np.einsum("rl,rld->rd", Whi_d[r0:r1] ** 2, dv * dv))
            with np.errstate(divide="ignore", invalid="ignore"):
                bp = (1 + Z[r0:r1, None]) * (num_d + self.lam_p * t_exp * rnd_d) / SWlo[r0:r1, None] + absn
            BA_p[r0:r1] = np.where((SWlo[r0:r1, None] > 0) & ~np.isnan(bp), bp, np.inf)
        cap = capd.max(axis=1) if Dv else cap
        # Lemma 7: ℓ and O accumulators, running error bound in the final frame
        with np.errstate(divide="ignore"):
            # κ/ΣW ≤ frac (per normalised weight)
            frac = np.where(SWlo > 0, (1 + Z) / np.where(SWlo > 0, SWlo, 1.0), np.inf)
        Bj = np.add.reduceat(Whi, np.arange(0, L, n), axis=1)  # Σ_{r∈j} W_hi
        Zj = np.add.reduceat(a_r, np.arange(0, L, n), axis=1)
        Uj = frac[:, None] * Bj + Zj  # ≥ Σ_{r∈j} W_r / ΣW
        absv = np.abs(vp)
        UVj = np.stack(
            [
                frac[:, None] * (Whi[:, j * n : (j + 1) * n] @ absv[j * n : (j + 1) * n])
                + (a_r[:, j * n : (j + 1) * n] @ absv[j * n : (j + 1) * n])
                for j in range(T)
            ],
            axis=1,
        )
        u = vd.u
        u32 = 2.0**-24
        eta = vd.eta
        pow2 = pol.accum == "pow2"
        big = 2.0 * S2 if pow2 else 1.0  # 2^t ≤ 2·S2 (Lemma 7)
        g_den = 1.0 - (3 * T + 8) * u - 2.0**-20
        gr = 1.0 / g_den if g_den > 0 else math.inf  # growth of partial sums (Lemma 7)
        PU = np.cumsum(Uj, axis=1) * gr
        PUV = np.cumsum(UVj, axis=1) * gr
        lj_rel = _row_sum_rel(pol, n)
        mo_round = 0.0 if mo.name == "fp32" else mo.u
        to_vd = 0.0 if (vd.name == mo.name or vd.name == "fp32") else vd.u
        # the P·V accumulator: γ_n^{32} (wide) or Γ_acc, H_acc of a narrow one (Lemma 15.2)
        g_pv, h_pv = (gamma(n, u32), 0.0) if self.acc is None else _accum.gamma_acc(n, self.acc)
        pv_rel = g_pv * (1 + mo_round) * (1 + to_vd) + mo_round + to_vd
        # Lemma 7.1: the block product P·V_j (P ≤ 1: s̃ − m_j ≤ 0) is rounded to matmul_out (and to the
        # vector format); where Σ_{r∈j visible}|v_r| widened by its accumulation can reach that format's
        # overflow threshold, the kernel's product may be ±inf and the row gets +∞ (overflow)
        pv_big = np.zeros(R)
        for j in range(T):
            blk_v = vis[:, j * n : (j + 1) * n].astype(float) @ absv[j * n : (j + 1) * n]
            pv_big = np.maximum(pv_big, blk_v.max(axis=1, initial=0.0))
        pv_lim = min(f.overflow_at for f in ([mo, vd] if to_vd else [mo]))
        overflow = overflow | (nonempty & ~(pv_big * (1 + g_pv) + h_pv < pv_lim))
        p_cast = vd.name != self.mi.name  # P rounded to fp16 before P·V
        if p_cast:
            pv_rel += self.mi.u
        may_take = rec["may_take"]
        may_stay = rec["may_stay"]
        first_col = np.zeros((R, T), dtype=bool)
        first_col[:, 0] = True
        ntk = np.where(first_col, 0.0, may_take.astype(float))  # α ≠ 1 possible (j > 0)
        stay = may_stay.astype(float)
        PUprev = np.concatenate([np.zeros((R, 1)), PU[:, :-1]], axis=1)
        PUVprev = np.concatenate([np.zeros((R, 1, Dv)), PUV[:, :-1]], axis=1)
        addf = np.where(first_col, 0.0, 1.0)
        El = (
            lj_rel * Uj
            + stay * (u * (1 + lj_rel) * Uj + eta)
            + (eta * big if pow2 else 0.0)
            + ntk * (u * PUprev + eta * big)
            + addf * u * PU
            + (eta * big if pow2 else 0.0)
        ).sum(axis=1)
        eta_mo = 0.0 if mo.name == "fp32" else mo.eta
        pv_abs = eta_mo + (eta if to_vd else 0.0) + h_pv
        if self.acc is not None:  # a P·V partial sum (≤ n·max|v| in the block frame) may overflow
            if not (n * float(np.abs(vp).max(initial=0.0)) * (1 + g_pv) + h_pv < self.acc.maxf):
                overflow = overflow | nonempty
        pv_abs_v: _Real
        if p_cast:
            pv_abs_v = self.mi.eta * np.stack(
                [
                    np.where(vis[:, j * n : (j + 1) * n], 1.0, 0.0) @ absv[j * n : (j + 1) * n]
                    for j in range(T)
                ],
                axis=1,
            )
        else:
            pv_abs_v = 0.0
        EO = (
            pv_rel * UVj
            + pv_abs
            + pv_abs_v
            + stay[:, :, None] * (u * (1 + pv_rel) * UVj + eta)
            + (eta * big if pow2 else 0.0)
            + ntk[:, :, None] * (u * PUVprev + eta * big)
            + addf[:, :, None] * u * PUV
            + (eta * big if pow2 else 0.0)
        ).sum(axis=1)
        El = np.where(np.isnan(El), np.inf, El)
        EO = np.where(np.isnan(EO), np.inf, EO)
        # §12: the same roundings as a martingale (Azuma): Σ δ_k X_k with |δ_k X_k| ≤ M_k, mean zero
        # given the past → |Σ| ≤ λ·sqrt(Σ M_k²) w.p. ≥ 1 − 2e^{−λ²/2}; fp32 sums and η parts stay worst-case.
        ul = u if vd.name != "fp32" and pol.reduce != "pairwise" else 0.0
        ml2 = (
            (ul * Uj) ** 2
            + (stay * u * (1 + lj_rel) * Uj) ** 2
            + (ntk * u * PUprev) ** 2
            + (addf * u * PU) ** 2
        ).sum(axis=1)
        l_det = (
            (lj_rel if pol.reduce == "pairwise" else gamma(n, u32) * (1 + ul)) * Uj
            + stay * eta
            + 2 * (eta * big if pow2 else 0.0)
            + ntk * eta * big
        ).sum(axis=1)
        pv_r = mo_round + to_vd + (self.mi.u if p_cast else 0.0)
        # §15.4: a narrow accumulator's roundings to nearest are martingale increments too; toward zero
        # they are biased and stay worst-case
        g_det, g_rand = g_pv, 0.0
        if self.acc is not None:
            g_det, g_rand, _ = _accum.prob_gamma_acc(n, self.acc)
        mo2 = (
            (pv_r * UVj) ** 2
            + (g_rand * UVj) ** 2
            + (stay[:, :, None] * u * (1 + pv_rel) * UVj) ** 2
            + (ntk[:, :, None] * u * PUVprev) ** 2
            + (addf[:, :, None] * u * PUV) ** 2
        ).sum(axis=1)
        o_det = (
            g_det * (1 + pv_r) * UVj
            + pv_abs
            + pv_abs_v
            + stay[:, :, None] * eta
            + 2 * (eta * big if pow2 else 0.0)
            + ntk[:, :, None] * eta * big
        ).sum(axis=1)
        Elp = self.lam_p * np.sqrt(ml2) + l_det
        EOp = self.lam_p * np.sqrt(mo2) + o_det
        Elp = np.where(np.isnan(Elp), np.inf, Elp)
        EOp = np.where(np.isnan(EOp), np.inf, EOp)
        ocur = np.abs(o64) + eps_o + BA
        with np.errstate(invalid="ignore", divide="ignore"):
            BC = np.where(El[:, None] < 1, (EO + ocur * El[:, None]) / (1 - El[:, None]), np.inf)
        # Lemma 9 (fallback): whatever the weights, O_computed stays near the hull of the visible V
        eps_l = (1 + lj_rel) * (1 + gamma(2 * T + 2, u)) - 1
        eps_O = (1 + pv_rel) * (1 + gamma(2 * T + 2, u)) - 1
        eta_all = (4 * T + 4) * eta * big + T * (eta + pv_abs) + (self.mi.eta * n if p_cast else 0.0) * T
        ZA = Z[:, None] * (capd + eps_o)
        with np.errstate(invalid="ignore", over="ignore"):
            fb = (
                capd + eps_o + ZA + eps_O * vmax + eta_all * vmax + (np.abs(o64) + eps_o) * (eps_l + eta_all)
            ) / (1 - eps_l - eta_all)
        fb = np.where((1 - eps_l - eta_all > 0) & ~np.isnan(fb), fb, np.inf)
        BAC = BA + BC
        BAC = np.where(np.isfinite(BAC) & (BAC < fb), BAC, fb)
        with np.errstate(invalid="ignore", divide="ignore"):
            BCp = np.where(Elp[:, None] < 1, (EOp + ocur * Elp[:, None]) / (1 - Elp[:, None]), np.inf)
        BA_p = np.minimum(BA_p, BA)
        with np.errstate(invalid="ignore", divide="ignore"):
            ocur_p = np.abs(o64) + eps_o + BA_p
            BCp = np.where(Elp[:, None] < 1, (EOp + ocur_p * Elp[:, None]) / (1 - Elp[:, None]), np.inf)
        BACp = np.minimum(np.where(np.isnan(BA_p + BCp), np.inf, BA_p + BCp), BAC)
        yp = np.abs(o64) + eps_o + BACp
        Bendp = vd.hulp(yp) + (self.out.hulp(yp * (1 + vd.u)) if vd.name != self.out.name else 0.0)
        totp = (BACp + Bendp + eps_o) * _SAFETY
        totp = np.where(nonempty[:, None], totp, 0.0)
        totp = np.where(overflow[:, None], np.inf, totp)
        fallback = ~(BA + BC < fb)
        # end: O/ℓ rounded to the vector format, then to the output format
        ymax = np.abs(o64) + eps_o + BAC
        Bend = vd.hulp(ymax) + (self.out.hulp(ymax * (1 + vd.u)) if vd.name != self.out.name else 0.0)
        total = (BAC + Bend + eps_o) * _SAFETY
        total = np.where(nonempty[:, None], total, 0.0)
        total = np.where(overflow[:, None], np.inf, total)
        bound = total.max(axis=1)
        cap = np.where(nonempty, cap, 0.0)
        # attribution (largest part at the worst element)
        BA = np.where(fallback, np.nan, BA)
        BC = np.where(fallback, np.nan, BC)
        parts = dict(
            weights=BA,
            accumulators=BC,
            output_rounding=Bend,
            golden=eps_o,
            hull_fallback=np.where(fallback, fb, 0.0),
        )
        terms = {
            k_: (
                float(np.nanmax(np.where(nonempty[:, None], val, 0.0)))
                if np.any(np.isfinite(val))
                else math.inf
            )
            for k_, val in parts.items()
        }
        if R:
            r_w, d_w = np.unravel_index(
                np.argmax(np.where(np.isfinite(total), total, np.finfo(float).max)), total.shape
            )
            name = max(parts, key=lambda k_: np.nan_to_num(parts[k_][r_w, d_w], nan=-1.0, posinf=np.inf))
            if name == "weights":
                name = "weights:" + self._weight_part(rec, slo, shi, rho_p, chain, blk, r_w)
            worst = (float(total[r_w, d_w]), name)
        else:
            worst = (0.0, "")
        return dict(
            bound=bound,
            cap=cap,
            terms=terms,
            worst=worst,
            overflow=overflow.any(),
            prob=totp.max(axis=1),
            total=total,
            totp=totp,
            o64=o64,
            eps_o=eps_o,
        )

    def _weight_part(
        self,
        rec: dict[str, Any],
        slo: _F64,
        shi: _F64,
        rho_p: _F64,
        chain: _F64,
        blk: npt.NDArray[np.intp],
        r: int | np.integer[Any],
    ) -> str:
        """Which part of the exponent enclosure is widest on row r: score/offset enclosure, exp, chain."""
        width_scores = float(np.max(shi[r] - slo[r] + (rec["G_hi_off"][r] - rec["G_lo_off"][r])[blk]))
        width_offsets = float(np.max(2 * rec["errD"][r]))
        width_exp = float(np.max(2 * rho_p[r]))
        width_chain = float(np.max(2 * chain[r]))
        parts = dict(scores=width_scores, offsets=width_offsets, exp=width_exp, recurrence=width_chain)
        return max(parts, key=parts.__getitem__)


# ===================================================================================================
# A-priori forward error theorem (docs/bounds.md §11)


@dataclass(frozen=True)
class InputStats:
    """What the a-priori theorem needs to know about the inputs (all upper bounds).

    ``q_max`` ≥ max|q|, ``k_max`` ≥ max|k|, ``v_abs`` ≥ max|v|, ``v_spread`` ≥ max over columns of
    (max_r v_r − min_r v_r) (which bounds max_r |v_r − o|), ``head_dim`` d, ``seq_kv`` S2; ``mask_max`` ≥
    the largest |B| over the finite entries of an additive ``attn_mask`` B (0: none, or a boolean mask;
    docs/bounds.md §17.5); ``k_dev`` (optional) ≥ max over heads, key columns and keys of |k_r − k̄*|, k̄*
    the exact mean of the column over the sequence (what ``smooth_k`` subtracts, before its rounding;
    the column spread max k − min k is a valid, up to 2× larger, value; None: only k_max is known,
    docs/bounds.md §19.2).
    """

    q_max: float
    k_max: float
    v_abs: float
    v_spread: float
    head_dim: int
    seq_kv: int
    mask_max: float = 0.0
    k_dev: float | None = None


def stats_of(q: Any, k: Any, v: Any, attn_mask: Any = None) -> InputStats:
    """The :class:`InputStats` of concrete inputs (for tests and tables); ``attn_mask`` as the kernel takes
    it (an additive one sets ``mask_max``)."""
    qa, ka, va = _as_array("q", q), _as_array("k", k), _as_array("v", v)
    spread = float(np.max(va.max(axis=2) - va.min(axis=2))) if va.size else 0.0
    B, H, _, S1, S2, _, _ = check_bnsd(qa.shape, ka.shape, va.shape)
    _, bias = _mask_arrays(attn_mask, False, (B, H, S1, S2))
    k_max = float(np.abs(ka).max())
    # k_dev: the deviation from the exact column mean, rounded up (docs/bounds.md §19.2): the float64 mean
    # errs by at most γ⁶⁴_{S2+1}·max|k|, each |k − mean| by one more rounding
    m64 = ka.mean(axis=2, keepdims=True)
    k_dev = (float(np.abs(ka - m64).max()) + gamma(S2 + 2, 2.0**-53) * k_max) * (1 + 2.0**-50)
    return InputStats(
        float(np.abs(qa).max()),
        k_max,
        float(np.abs(va).max()),
        spread,
        int(qa.shape[3]),
        int(ka.shape[2]),
        0.0 if bias is None else float(np.abs(bias).max(initial=0.0)),
        k_dev,
    )


@dataclass(frozen=True)
class APrioriBound:
    """Result of :func:`a_priori`: a theorem for *every* input with the given :class:`InputStats`."""

    method: str
    precision: str
    bound: float
    exponent_error: float  # Λ: every weight's relative error is within e^{±Λ} (Lemma 11.1)
    terms: dict[str, float] = field(default_factory=dict)
    overflow_possible: bool = False
    #: intermediate magnitudes of the proof, where it has named ones (Theorem 9: Lemma 19.1's S_A, D, Dp,
    #: H, M, Xg, Xa, …; docs/bounds.md §19.1), for checking them against a run
    lemma: dict[str, float] = field(default_factory=dict)


def a_priori(
    method: str,
    stats: InputStats,
    *,
    precision: Any = "npu_fp16",
    beta: float | None = None,
    block_kv: int = 128,
    scale: float | None = None,
) -> APrioriBound:
    """A-priori forward error bound: max|O_computed − O_exact| ≤ ``bound`` for every input (q, k, v)
    with max|q| ≤ q_max, max|k| ≤ k_max, max|v| ≤ v_abs, column spread of V ≤ v_spread, head dim d
    and S2 keys, under hypotheses H1–H3 (docs/bounds.md §1); the stage-by-stage statement and proof are
    docs/bounds.md §11 (Theorem 2), its algebra checked by :func:`sympy_checks`; for the script's running
    bookkeeping (``offset="running"``) Theorem 9 (§19.1), whose intermediate magnitudes are returned
    in ``lemma``. The pseudo-averages are bounded as tile means (Lemma 19.0, §19.1).

    It bounds the worst case over all such inputs, so it is far above the error of a typical input
    (the a-posteriori :func:`certify` is the tight product); it says when fully fp16 attention is safe
    at all (e.g. ``overflow_possible``) and how the error scales with d, n, S2, β, c and u.

    ``smooth_k`` (docs/bounds.md §19.2, Lemma 19.2): fa_qk's theorem on the smoothed keys K″ = K − k̄ + ε,
    whose magnitude comes from ``stats.k_dev`` (the keys' largest deviation from their exact sequence mean;
    without it from 2·k_max: smoothing can double a key) plus the mean's error, and whose rounding ε
    (|ε| ≤ δ: K − k̄ rounded to the vector format, then cast to the matrix unit's) adds τ·d·q_max·δ to
    every exponent (the term ``smoothed_keys``); the mean k̄ itself shifts a whole score row and cancels.
    The inputs are numbers of the matrix unit's format, as for every method here.

    The accumulator (matrix unit, means and row sums) and the exponential are fp32 (H1, H2 with
    :data:`EXP32_REL`), except where every unit is float64 (``precision="fp64"``: ``pasa``,
    ``pasa:fp64``, ``fa_qk``, ``fa_q``, ``fa_naive``, ``fa_hybrid``): then float64 accumulation in any
    order (γ^{64}) and torch's float64 ``exp`` (:data:`EXP64_REL`), docs/bounds.md §19.3; ``certify``
    evaluates it at each row's maxima for fp64 (§19.4).
    """
    pol = policies.resolve(method, precision)
    hi_lo = pol.score_ref == "hi_lo"  # the reference in the accumulator: Theorem 7 (docs/bounds.md §16.7)
    if hi_lo:
        _refbound.check_policy(pol)
    else:
        _check_policy(pol, float64=True)
    if pol.shift and pol.offset == "running" and pol.reduce != "acc":
        raise ValueError(
            f"a_priori does not cover policy {pol.name!r}: offset='running' (the script's bookkeeping) with "
            f"reduce={pol.reduce!r}; Theorem 9 (docs/bounds.md §19.1) takes the fp32 block mean (reduce='acc')"
        )
    if not isinstance(stats, InputStats):
        raise TypeError(f"stats must be an InputStats (see stats_of), got {type(stats).__name__}")
    if stats.k_dev is not None and not (math.isfinite(stats.k_dev) and stats.k_dev >= 0):
        raise ValueError(f"stats.k_dev must be None or finite and >= 0, got {stats.k_dev!r}")
    d, S2 = stats.head_dim, stats.seq_kv
    n = S2 if pol.untiled else check_block(block_kv)
    T = -(-S2 // n)
    tau = check_scale(scale, d)
    if hi_lo:
        if stats.mask_max:
            raise ValueError(
                "a_priori does not cover an additive attn_mask for score_ref='hi_lo' (docs/bounds.md §16.9)"
            )
        b, lam_r, terms_r, ovf = _refbound.a_priori_ref(
            pol,
            tau=tau,
            n=n,
            d=d,
            S2=S2,
            q_max=stats.q_max,
            k_max=stats.k_max,
            v_abs=stats.v_abs,
            v_spread=stats.v_spread,
        )
        return APrioriBound(method, pol.name, b, lam_r, terms_r, ovf)
    vd, mo, mi = _FORMATS[pol.vector.name], _FORMATS[pol.matmul_out.name], _FORMATS[pol.matmul_in.name]
    # the accumulator (matrix unit and reductions) and the exponential's routine: fp32 (H1, H2), or float64
    # when every unit is (docs/bounds.md §19.3)
    f_acc = _FORMATS[pol.reduce_format.name]
    u, u_acc = vd.u, f_acc.u
    exp_rel = EXP64_REL if f_acc.name == "fp64" else EXP32_REL
    # float64 evaluation of (1 + x)(1 + y) − 1 below: ≤ 3·2⁻⁵³ absolute, below 2⁻³¹ of the result (inside
    # _SAFETY) for fp32 accumulators, where it is ≥ γ_4(u) ≥ 2⁻²²; added for float64 ones (§19.3)
    ev = 2.0**-51 if f_acc.name == "fp64" else 0.0
    um = 0.0 if mo.name == f_acc.name else mo.u
    g32d = gamma(d, u_acc)
    Qm, Km = stats.q_max, stats.k_max
    e_sk, ovf_sk = 0.0, False
    if pol.smooth_k:  # Lemma 19.2: fa_qk on K″ = K − k̄ + ε, |K″| ≤ Km, |ε| ≤ δ; τ·q·k̄ is common to a row
        Km, delta, ovf_sk = _smoothed_key_bounds(pol, stats)
        e_sk = tau * d * Qm * delta
    # a narrow accumulator (docs/bounds.md §15.2): Γ_acc in place of γ^{32}, plus its absolute part H
    # (raw units of the product), and every partial sum below its largest finite value
    acc = _accum.accumulator_of(pol)
    h_d = h_n = 0.0
    g32n = gamma(n, u_acc)
    if acc is not None:
        g32d, h_d = _accum.gamma_acc(d, acc)
        g32n, h_n = _accum.gamma_acc(n, acc)
    acc_peak = 0.0  # the largest partial sum of an accumulator (checked against acc.maxf)
    rho = -math.log1p(-exp_rel) - math.log1p(-u)
    terms: dict[str, float] = {}
    # an additive mask (docs/bounds.md §17.5): fl(B) = fl_vd(fl32(B)) errs by eB, |fl(B)| ≤ Bp, and the
    # exponent tile fl(s̃ + fl(B)) is rounded once more at |s̃| + Bp (``mask_sum`` below, per branch)
    Bm = float(stats.mask_max)
    if not (math.isfinite(Bm) and Bm >= 0):
        raise ValueError(f"stats.mask_max must be finite and >= 0, got {stats.mask_max!r}")
    eB = float(f_acc.hulp(Bm) + vd.hulp(Bm * (1 + u_acc))) if Bm else 0.0
    Bp = Bm + eB

    def mask_sum(S: float) -> float:  # the rounding of s̃ + fl(B) for |s̃| ≤ S
        return (u * (S + Bp) * (1 + u) + vd.eta) if Bm else 0.0

    lemma: dict[str, float] = {}
    floor_scale = 1.0  # the script (Theorem 9): ℓ ≥ e^{−floor} and products of α, γ ≤ e^{floor}
    raw_peak = 0.0  # the script's raw accumulators: ℓ ≤ raw_peak, |O| ≤ raw_peak·max|v| (before rounding)
    if pol.shift:
        consts = policies.shift_constants(pol, n, beta, tau)
        diag, off, c = float(mi.rnd(consts.diag)), float(mi.rnd(consts.off)), float(consts.c)
        a, b = diag - off, -off
        Kt = (abs(a) + abs(b) * n) * Km  # |M̂ᵀk| (Lemma 11.2)
        EK = g32n * (abs(diag) + abs(off) * (n - 1)) * Km * (1 + mi.u) + h_n + mi.u * Kt + mi.eta
        Ktm = Kt + EK
        St = d * Qm * Ktm * (1 + g32d) * (1 + um) + h_d * (1 + um)  # |s̃| ≤ St
        es = d * Qm * EK + g32d * d * Qm * Ktm + h_d + um * St + mo.eta  # |s̃ − q·M̂ᵀk|
        acc_peak = max(
            (abs(diag) + abs(off) * (n - 1)) * Km * (1 + g32n) + h_n, d * Qm * Ktm * (1 + g32d) + h_d
        )
        a_tau, kappa = _recovery_residuals(diag, off, c, tau, n)  # |a − τ|, |κ| (Lemma 11.3)
        a_bn = _exact_up(abs(Fraction(diag) + (n - 1) * Fraction(off)))  # |a − b·n| (Lemma 19.0)
        Pq = d * Qm * Km
        sysm = a_tau * Pq + kappa * Pq
        # Lemma 19.0 (docs/bounds.md §19.1): the block means are means of the whole tile (all n entries,
        # before the mask), whose exact value is (a − b·n)·q·k̄; with the score error and the fp32 mean's
        # γ_{n+1}·St, |μ_j| ≤ Smean, usually far below max|s̃| = St (the shift removes the mean)
        g1 = gamma(n + 1, u_acc)
        Smean = a_bn * Pq + es + g1 * St
        if pol.offset == "running":
            # Theorem 9 (docs/bounds.md §19.1): the script's bookkeeping; every weight's exponent is
            # s̃_r + c·μ̃_j − H_T plus the telescoped residuals of Lemma 19.1 (_running.a_priori_terms)
            Bx = Bp + mask_sum(St)
            em = eB + mask_sum(St)
            run = _running.a_priori_terms(
                Sx=St + Bx, Smean=Smean, c=c, T=T, rho=rho, vd=vd, f32=_FORMATS["fp32"]
            )
            lemma = dict(run, Smean=Smean)
            offs = c * (g1 * St + run["mu_round"])  # c·|μ̃_j − mean(s̃)|: the fp32 mean and its rounding
            lam = sysm + (1 + c) * es + em + offs + (u * 2 * (St + Bx) + rho) + run["residual"]
            Smax = St + Bx
            acc_max = St
            vec_max = max(run["Xg"], run["Xa"], run["M"] + max(run["D"], run["Dp"]), run["H"], 2 * Smax)
            floor_scale = math.exp(2 * run["floor"]) if run["floor"] < 300 else math.inf
            raw_peak = float(S2) * math.exp(run["floor"]) if run["floor"] < 700 else math.inf
            terms.update(
                systematic=sysm,
                scores=(1 + c) * es + em,
                offsets=offs,
                exp=u * 2 * (St + Bx) + rho,
                running=run["residual"],
            )
        elif pol.recovery == "key_mean":
            # Lemma 13.3: s̃*_r + δ*_j = a·q·k_r − b·n·q·k̄_0 (common to all blocks); δ_j = fl(q·Δk_j),
            # Δk_j = fl_in(fl32(fl32(k̄_j − k̄_0)·fl32(b·n))), k̄ the fp32 block means of the keys
            Dk = 2 * Km * (1 + g1) * b * n * (1 + u_acc) ** 3 * (1 + mi.u) + mi.eta  # |Δk|
            eDk = b * n * 2 * Km * ((1 + g1) * (1 + u_acc) ** 3 - 1 + ev) + mi.u * Dk + mi.eta
            So = d * Qm * Dk * (1 + g32d) * (1 + um)  # |δ_j|
            eoff = d * Qm * eDk + g32d * d * Qm * Dk + um * So + mo.eta
            sysm = a_tau * Pq
            Sm = St + Bp + mask_sum(St)  # the exponent tile (maxima, s̃ − m_j) with the mask
            es += eB + mask_sum(St)
            eps_k = u * (4 * Sm + 4 * So) * (1 + u) ** 2
            lam = sysm + es + eoff + (u * 2 * Sm + rho) + T * (eps_k + rho)
            Smax = Sm
            acc_max = max(St, So)
            vec_max = (4 * Sm + 4 * So) * (1 + u) ** 2
            terms.update(
                systematic=sysm,
                scores=es,
                offsets=eoff,
                exp=u * 2 * Sm + rho,
                recurrence=T * (eps_k + rho),
            )
        else:
            if pol.reduce == "pairwise":
                # Lemma 13.2: A = fl(fl(tree(s̃))/n), |A| ≤ Sa; e = fl(tree(fl(s̃ − A))/n) against the exact
                # mean: n roundings of s̃ − A, the tree (γ of depth ⌈log₂ n⌉), the division
                gt = gamma(max(1, (n - 1).bit_length()), u)
                Sa = St * (1 + gt) * (1 + u) ** 2
                Xm = (St + Sa) * (1 + u)
                errE = u * Xm + gt * Xm * (1 + u) + u * Xm * (1 + gt) * (1 + u) + 3 * vd.eta
                mean_err = 0.0  # μ_j is the exact mean of the tile
                tree_max = n * max(St, Xm) * (1 + gt)  # the largest node of either tree
                Smx = Sa  # ≥ St: the maxima of step f below
            else:
                Sa = min(St, Smean * (1 + u) + vd.eta)  # |μ_j| and |A| = |fl(μ_0)|
                errE = (u_acc + u) * 2 * Sa * (1 + u_acc)
                mean_err = c * g1 * St  # the accumulator's mean against the exact mean
                tree_max = 0.0
                Smx = St
            errD = c * Sa * (2 * u_acc + 12 * u) * (1 + u) ** 2 + c * errE
            Phi = 4 * c * Sa * (1 + u)
            tau_k = u * (Phi + 6 * c * Sa) * (1 + u) ** 2
            # with an additive mask the maxima and s̃ − m_j are those of the masked tile (the offsets are not)
            Bx = Bp + mask_sum(St)
            eps_k = u * (4 * Smx + 4 * Bx + 4 * Phi) * (1 + u) ** 2
            em = eB + mask_sum(St)  # the mask's own roundings enter every weight's exponent once
            lam = (
                sysm
                + (1 + c) * es
                + em
                + mean_err
                + errD
                + (u * 2 * (St + Bx) + rho)
                + T * (eps_k + rho + tau_k)
            )
            Smax = St + Bx
            acc_max = St  # the rounded score product itself
            vec_max = max((4 * Smx + 4 * Bx + 4 * Phi) * (1 + u) ** 2, tree_max)  # largest vector operand (f)
            terms.update(
                systematic=sysm,
                scores=(1 + c) * es + em,
                offsets=errD + mean_err,
                exp=u * 2 * (St + Bx) + rho,
                recurrence=T * (eps_k + rho + tau_k),
            )
    else:
        tv = _scale_in(vd, tau)
        if pol.placement == "q":
            Qs = Qm * tv * (1 + u) * (1 + mi.u)
            eq = (abs(tv - tau) + u * tv + mi.u * tv * (1 + u)) * Qm + mi.eta
            Smax = d * Qs * Km * (1 + g32d) * (1 + um) * (1 + u) + h_d * (1 + um) * (1 + u)
            acc_max = Smax
            es = d * Km * eq + g32d * d * Qs * Km + h_d + um * Smax + mo.eta
            acc_peak = d * Qs * Km * (1 + g32d) + h_d
        else:
            Pq = d * Qm * Km
            Smax = tv * Pq * (1 + g32d) * (1 + um) * (1 + u) + tv * h_d * (1 + um) * (1 + u)
            acc_max = Pq * (1 + g32d) * (1 + um) + h_d * (1 + um)  # QKᵀ is rounded before τ
            es = tv * (g32d * Pq + um * Pq * (1 + g32d)) * (1 + u) + u * Smax + abs(tv - tau) * Pq + vd.eta
            es += tv * (0.0 if mo.name == f_acc.name else mo.eta) * (1 + u)  # a subnormal score product
            es += tv * h_d * (1 + um) * (1 + u)
            acc_peak = Pq * (1 + g32d) + h_d
        if Bm:  # the masked tile: the mask's roundings in every exponent, the maxima up to |s̃| + |fl(B)|
            es += eB + mask_sum(Smax)
            Smax = Smax + Bp + mask_sum(Smax)
        lam = es + e_sk + (u * 2 * Smax + rho) + T * (u * 2 * Smax + rho)
        terms.update(scores=es, exp=u * 2 * Smax + rho, recurrence=T * (u * 2 * Smax + rho))
        if pol.smooth_k:
            terms.update(smoothed_keys=e_sk)
        vec_max = 2 * Smax * (1 + u)
    # overflow: the rounded score product, the scores and every vector-unit operand of steps d–g
    overflow = not (acc_max < mo.maxf and Smax < vd.maxf and vec_max < vd.maxf) or ovf_sk
    # the block product P·V_j (P ≤ 1) rounded to matmul_out and the vector format (Lemma 7.1)
    pv_lim = min(mo.overflow_at, vd.overflow_at if vd.name != "fp32" else math.inf)
    overflow = overflow or not (n * stats.v_abs * (1 + g32n) + h_n < pv_lim)
    if acc is not None:  # the narrow accumulators' partial sums: scores (and K̃), and P·V (≤ n·max|v|)
        pv_peak = n * stats.v_abs * (1 + g32n) + h_n
        overflow = overflow or not (acc_peak < acc.maxf and pv_peak < acc.maxf)
    Vs, Va = stats.v_spread, stats.v_abs
    Z = (
        (T + 2) * S2 * (vd.eta + f_acc.eta) * 1.001 * floor_scale
    )  # float64 units: η = 2⁻¹⁰⁷⁵ evaluates to 0 (§19.3)
    with np.errstate(over="ignore"):
        BA = (math.exp(lam) * math.expm1(lam) * (1 + Z) + Z) * Vs if lam < 700 else math.inf
    # accumulators (Lemma 7 with every partial sum bounded by the total, Lemma 11.4)
    lj_rel = _row_sum_rel(pol, n)
    to_vd = 0.0 if (vd.name == mo.name or vd.name == "fp32") else vd.u
    pv_rel = g32n * (1 + um) * (1 + to_vd) + um + to_vd + (mi.u if vd.name != mi.name else 0.0)
    big = 2.0 * S2 if pol.accum == "pow2" else 1.0
    eta_all = (
        (4 * T + 4) * vd.eta * big
        + T * (vd.eta + (0.0 if mo.name == f_acc.name else mo.eta) + h_n)
        + (mi.eta * n * T if vd.name != mi.name else 0.0)
    )
    eta_all *= floor_scale
    eps_l = (1 + lj_rel) * (1 + gamma(2 * T + 2, u)) - 1 + eta_all + ev
    eps_O = (1 + pv_rel) * (1 + gamma(2 * T + 2, u)) - 1 + eta_all + ev
    BC = (eps_O * Va + (Va + BA) * eps_l) / (1 - eps_l) if eps_l < 1 else math.inf
    fb = (Vs * (1 + Z) + eps_O * Va + Va * eps_l) / (1 - eps_l) if eps_l < 1 else math.inf  # Lemma 9
    main = min(BA + BC, fb)
    ymax = Va + main
    out = mi  # the kernel returns the inputs' dtype; the inputs are in matmul_in
    Bend = float(vd.hulp(ymax)) + (float(out.hulp(ymax * (1 + vd.u))) if vd.name != out.name else 0.0)
    bound = (main + Bend) * _SAFETY
    if raw_peak and not (raw_peak * (1 + eps_l) * max(1.0, Va) < vd.maxf):  # raw ℓ, O (Theorem 9)
        overflow = True
    if overflow:
        bound = math.inf
    terms.update(weights=BA, accumulators=BC, hull_fallback=fb, output_rounding=Bend)
    return APrioriBound(method, pol.name, float(bound), float(lam), terms, overflow, lemma)


def _holds(a: _Fmt, b: _Fmt) -> bool:
    """Every number of the binary format ``b`` is a number of ``a`` (a conversion b → a is exact)."""
    return a.p >= b.p and a.emin <= b.emin and a.maxf >= b.maxf


def _smoothed_key_bounds(pol: policies.Policy, stats: InputStats) -> tuple[float, float, bool]:
    """Lemma 19.2 (docs/bounds.md §19.2), the a-priori constants of ``smooth_k``'s keys: (K_p, δ, overflow)
    with |K″| ≤ K_p and K″ = K − k̄ + ε, |ε| ≤ δ element-wise, for the operand K″ = fl_in(fl_vd(K₀ − k̄))
    the kernel multiplies (K₀ = fl_vd(K), k̄ = fl_vd(the fp32 mean of K₀ over the sequence, any order);
    ``pasa_npu.methods._smooth_k``), and ``overflow`` if the mean's sum, K₀ or K″ can overflow.

    k̄ errs against the exact mean k̄* by at most e_k̄ = γ³²_{S2+1}·k₀ + 2η₃₂ (+ half an ulp of the vector
    format at k₀ + that, unless the vector unit is fp32), so |K₀ − k̄| ≤ D = min(k_dev + 2e_in, 2k₀) + e_k̄;
    the subtraction rounds by hulp_vd(D), the cast to the matrix unit's format by hulp_in (unless it holds
    the vector format). k̄'s error is common to a column: it moves the scores by the row constant τ·q·k̄
    and enters the magnitude K_p only."""
    vd, mi, f32 = _FORMATS[pol.vector.name], _FORMATS[pol.matmul_in.name], _FORMATS["fp32"]
    S2, Km = stats.seq_kv, float(stats.k_max)
    e_in = 0.0 if _holds(vd, mi) else float(vd.hulp(Km))  # k.to(vector): exact where it holds the inputs
    k0 = Km + e_in
    g = gamma(S2 + 1, f32.u)
    e_mu = g * k0 + 2 * f32.eta  # the fp32 mean (sum in any order, one division or a rounded 1/S2 product)
    e_kb = e_mu + (0.0 if vd.name == "fp32" else float(vd.hulp(k0 + e_mu)))
    dev = 2 * k0 if stats.k_dev is None else min(float(stats.k_dev) + 2 * e_in, 2 * k0)
    D = dev + e_kb  # |K₀ − k̄|
    r_sub = float(vd.hulp(D))
    r_cast = 0.0 if _holds(mi, vd) else float(mi.hulp(D + r_sub))
    Kp = D + r_sub + r_cast
    overflow = not (S2 * k0 * (1 + g) < f32.maxf and k0 < vd.maxf and Kp < vd.maxf and Kp < mi.maxf)
    return Kp, e_in + r_sub + r_cast, overflow


def _exact_up(x: Fraction) -> float:
    """The rational ``x`` rounded up to a float64."""
    f = float(x)
    return f if Fraction(f) >= x else math.nextafter(f, math.inf)


def _recovery_residuals(diag: float, off: float, c: float, tau: float, n: int) -> tuple[float, float]:
    """|a − τ| and |κ| = |c(a − bn) − bn| of Lemma 11.3 (a = diag − off, b = −off) in exact rational
    arithmetic, rounded up to float64. For fp16/bf16/fp32 constants the float64 evaluation is exact; for
    float64 ones a − τ and κ are differences of nearly equal numbers that float64 would round to 0 or to
    a multiple of its ulp (docs/bounds.md §19.3)."""
    A, B = Fraction(diag) - Fraction(off), -Fraction(off)
    out = []
    for x in (abs(A - Fraction(tau)), abs(Fraction(c) * (A - B * n) - B * n)):
        f = float(x)
        out.append(f if Fraction(f) >= x else math.nextafter(f, math.inf))
    return out[0], out[1]


def _result_without_theorem1(
    eng: Any, s64: _F64, sig: _F64, vis: _Bool, vp: _F64, nonempty: _Bool, overflow: _Bool
) -> dict[str, Any]:
    """The per-row-group result of ``_Engine.run`` before the enclosure for ``offset="running"``: the
    float64 golden and its error (Lemma 8), the hull cap, and a bound of +∞ on every row that sees a
    key (Theorem 1's telescoping, Lemma 5, is for the lazy bookkeeping; Theorem 8 is the enclosure,
    which ``_Engine._tighten`` then applies). A row whose enclosure is not available stays at +∞."""
    R, Dv = s64.shape[0], vp.shape[1]
    o64, eps_o = _golden(s64, sig, vis, vp, eng.S2)
    with np.errstate(invalid="ignore"):
        dv = np.where(vis[:, :, None], np.abs(vp[None, :, :] - o64[:, None, :]), 0.0)
    cap = np.where(nonempty, dv.max(axis=(1, 2)) if Dv else 0.0, 0.0)
    total = np.where(nonempty[:, None], np.inf, 0.0) * np.ones((R, Dv))
    return dict(
        bound=total.max(axis=1, initial=0.0),
        cap=cap,
        terms={"no_enclosure": _inf_if(np.any(nonempty))},
        worst=(np.inf if np.any(nonempty) else 0.0, "no_enclosure" if np.any(nonempty) else ""),
        overflow=bool(np.any(overflow)),
        prob=total.max(axis=1, initial=0.0),
        total=total,
        totp=total.copy(),
        o64=o64,
        eps_o=eps_o,
    )


def _inf_if(flag: Any) -> float:
    return float("inf") if bool(flag) else 0.0


def _smoothed_keys(k: _F64, vd: Any, f32: Any, n: int, kv_tail: str, mi: Any = None) -> tuple[_F64, _F64]:
    """Lemma 17.4: enclosure of the keys the ``smooth_k`` method gives the kernel, K′ = fl(K − k̄) with
    k̄ = fl(mean over the sequence of K) (``pasa_npu.methods._smooth_k``: torch's mean of a vector-format
    tensor sums in fp32, in an order H1 leaves open, divides once in fp32 and rounds to the vector
    format — checked against torch in tests/npu/test_rigorous_script.py), then cast to the matrix unit's
    input format ``mi`` (the kernel's ``k.to(matmul_in)``: a rounding where the vector format is wider,
    e.g. ``hybrid``, fp32 → fp16), padded to a multiple of n by the policy's tail rule. ``k`` is one KV
    head, (S2, d); returns (lo, hi), each (⌈S2/n⌉·n, d)."""
    k = vd.rnd(k)  # the method's k.to(vector): exact where the vector format holds the inputs
    kt = np.ascontiguousarray(k.T)  # (d, S2): the mean of each column is a row mean
    m_lo, m_hi = _enclosure.mean_enclosure(kt, kt, vd, f32, 2.0**-38)
    kb_lo, kb_hi = vd.rnd(m_lo), vd.rnd(m_hi)
    # k − k̄ of two numbers of the format is exact in float64; rounding is monotone
    lo, hi = vd.rnd(k - kb_hi[None, :]), vd.rnd(k - kb_lo[None, :])
    if mi is not None:
        lo, hi = mi.rnd(lo), mi.rnd(hi)
    lo = _pad(lo[None, None], n, kv_tail)[0, 0]
    hi = _pad(hi[None, None], n, kv_tail)[0, 0]
    return lo, hi


def sympy_checks() -> dict[str, bool]:
    """The algebra of the lemmas in docs/bounds.md, checked symbolically (each entry True).

    * ``ratio_identity`` (Lemma 6): Σ W_r(v_r − o) = Σ (W_r − c·w_r)(v_r − o) when o = Σ w v / Σ w;
    * ``ratio_bound`` (Lemma 11.1): for λ ∈ [−Λ, Λ], |e^λ − 1| ≤ e^Λ − 1 and 1/e^{−Λ} = e^Λ, so
      |O(w e^λ) − O(w)| ≤ e^Λ(e^Λ − 1)·max|v − o|. What is checked symbolically are the ingredients: the
      endpoint values, e^Λ − 1 ≥ 1 − e^{−Λ} (their difference is (e^Λ − 1)²e^{−Λ}) and the monotone
      derivative; the inequality itself then follows by the triangle inequality, and is sampled
      against float64 in ``tests/theory/test_rigorous.py``;
    * ``telescoping`` (Lemma 5): for T = 4 blocks and every take-over pattern, the product of the
      exact factors γ_j Π_{k>j} α_k equals e^{G_j − H_final} (exact exponentials);
    * ``recovery`` (Lemma 11.3): s̃*_r + c·mean(s̃*) = a·q·k_r + (c(a − b n) − b n)·mean(q·k) for the
      rounded M̂ = a I − b J, and the residual vanishes at c = b n / (a − b n);
    * ``quotient`` (Lemma 7): (S_O + E_O)/(S_ℓ + E_ℓ) − S_O/S_ℓ = (E_O − (S_O/S_ℓ)·E_ℓ)/(S_ℓ + E_ℓ);
    * ``key_mean_recovery`` (Lemma 13.3): with K̃ = M̂ᵀK (M̂ = aI − bJ) and δ_j = b·n·q·(k̄_j − k̄_0),
      s̃*_r + δ_j = a·q·k_r − b·n·q·k̄_0 for every block j: the offset that remains is common to all
      blocks and cancels in the softmax;
    * ``pairwise_deviation`` (Lemma 13.2): e − (μ − A) = (e − t/n) + (t − Σx̂)/n + (Σx̂ − Σ(s − A))/n
      for e = fl(t/n), t the tree sum of x̂_r = fl(s_r − A) and μ the exact mean of s.
    * ``reference_telescoping`` (Lemma 16.3): for T = 4 blocks, every move pattern and any reference
      values, e^{τ(S_r − R^{(j)})}·Π_{later moves k} e^{τ(R^{(k−1)} − R^{(k)})} = e^{τ(S_r − R_final)};
    * ``running_frame`` (Lemma 17.3): the script's exponents and stored maximum in the frame H = m + c·A
      (:func:`pasa_theory._running.sympy_checks`); ``running_telescope`` (Lemma 19.1): the exponent
      arguments x_γ, x_α in that frame for any stored maximum, and their telescoped sum over blocks;
    * ``normalisation`` (Lemma 16.3): κ/(κΣŴ − Z) = 1/(ΣŴ − Z/κ), the step that replaces ΣW ≥ 1 of
      Lemma 6 by a lower bound on the common factor κ;
    * ``smoothed_keys`` (Lemma 19.2): with K″_r = k_r − k̄ + ε_r, τq·K″_r = τq·k_r + τq·ε_r − τq·k̄, and the
      softmax average of v over the exponents τq·K″_r equals that over τq·k_r + τq·ε_r (the row constant
      −τq·k̄ cancels).
    """
    import sympy as sp

    out: dict[str, bool] = {}
    m = 5
    W = sp.symbols(f"W0:{m}", positive=True)
    w = sp.symbols(f"w0:{m}", positive=True)
    v = sp.symbols(f"v0:{m}", real=True)
    cc = sp.symbols("c", positive=True)
    o = sum(wi * vi for wi, vi in zip(w, v, strict=True)) / sum(w)
    lhs = sum(Wi * (vi - o) for Wi, vi in zip(W, v, strict=True))
    rhs = sum((Wi - cc * wi) * (vi - o) for Wi, wi, vi in zip(W, w, v, strict=True))
    out["ratio_identity"] = sp.simplify(lhs - rhs) == 0
    lam, Lam = sp.symbols("lambda Lambda", real=True)
    f = sp.exp(lam) - 1
    out["ratio_bound"] = bool(
        sp.simplify(f.subs(lam, Lam) - (sp.exp(Lam) - 1)) == 0
        and sp.simplify(-f.subs(lam, -Lam) - (1 - sp.exp(-Lam))) == 0
        and sp.simplify((sp.exp(Lam) - 1) - (1 - sp.exp(-Lam)) - (sp.exp(Lam) - 1) ** 2 * sp.exp(-Lam)) == 0
        and sp.diff(f, lam) == sp.exp(lam)
    )
    Gs = sp.symbols("G0:4", real=True)
    ok = True
    for takes in itertools.product([False, True], repeat=3):
        H = Gs[0]
        fac = {0: {"gamma": sp.Integer(1)}}
        alphas, gammas, Hs = [None], [sp.Integer(1)], [H]
        for j in range(1, 4):
            x = Gs[j] - H
            if takes[j - 1]:
                alphas.append(sp.exp(-x))
                gammas.append(sp.Integer(1))
                H = Gs[j]
            else:
                alphas.append(sp.Integer(1))
                gammas.append(sp.exp(x))
            Hs.append(H)
        for j in range(4):
            prod = gammas[j]
            for kk in range(j + 1, 4):
                prod *= alphas[kk]
            ok &= sp.simplify(prod - sp.exp(Gs[j] - H)) == 0
    del fac
    out["telescoping"] = bool(ok)
    a_, b_, c_ = sp.symbols("a b c", real=True)
    nn = 3
    qk = sp.symbols(f"qk0:{nn}", real=True)
    mean_qk = sum(qk) / nn
    st = [a_ * x - b_ * sum(qk) for x in qk]
    mean_st = sum(st) / nn
    ok = all(
        sp.simplify(st[r] + c_ * mean_st - (a_ * qk[r] + (c_ * (a_ - b_ * nn) - b_ * nn) * mean_qk)) == 0
        for r in range(nn)
    )
    resid = (c_ * (a_ - b_ * nn) - b_ * nn).subs(c_, b_ * nn / (a_ - b_ * nn))
    out["recovery"] = bool(ok and sp.simplify(resid) == 0)
    # §16 (Lemma 16.3): the reference in the accumulator. Column r of block j is exponentiated against
    # R^{(j)}; every later move multiplies by e^{τ(R_old − R_new)}; whatever the move pattern and the
    # values of the references, the product is e^{τ(S_r − R_final)}: one factor common to every column.
    tau_s = sp.symbols("tau", positive=True)
    Rs = sp.symbols("R0:4", real=True)
    Sr = sp.symbols("S_r", real=True)
    ok = True
    for moves in itertools.product([False, True], repeat=3):
        refs = [Rs[0]]
        for j in range(1, 4):
            refs.append(Rs[j] if moves[j - 1] else refs[-1])
        for j in range(4):
            w = sp.exp(tau_s * (Sr - refs[j]))
            for kk in range(j + 1, 4):
                if moves[kk - 1]:
                    w *= sp.exp(tau_s * (refs[kk - 1] - refs[kk]))
            ok &= sp.simplify(w - sp.exp(tau_s * (Sr - refs[3]))) == 0
    out["reference_telescoping"] = bool(ok)
    # Lemma 16.3: the normalisation with a common factor κ and absolute parts a_r (Σ W ≥ κΣŴ − Σ|a|)
    kap, Zs = sp.symbols("kappa Z", positive=True)
    Wh = sp.symbols("What0:3", positive=True)
    ar = sp.symbols("a0:3", real=True)
    sumW = kap * sum(Wh) + sum(ar)
    out["normalisation"] = bool(
        sp.simplify(kap / (kap * sum(Wh) - Zs) - 1 / (sum(Wh) - Zs / kap)) == 0
        and sp.simplify(sumW - kap * sum(Wh) - sum(ar)) == 0
    )
    SO, SL, EO, EL = sp.symbols("S_O S_l E_O E_l", real=True)
    out["quotient"] = sp.simplify((SO + EO) / (SL + EL) - SO / SL - (EO - SO / SL * EL) / (SL + EL)) == 0
    # Lemma 13.3: two blocks of nn keys (one key coordinate; the dot product is linear in it)
    qs = sp.symbols("q", real=True)
    k0 = sp.symbols(f"k0_0:{nn}", real=True)
    k1 = sp.symbols(f"k1_0:{nn}", real=True)
    kbar0, kbar1 = sum(k0) / nn, sum(k1) / nn
    ok = True
    for blk, kbar in ((k0, kbar0), (k1, kbar1)):
        for r in range(nn):
            st_r = qs * (a_ * blk[r] - b_ * sum(blk))
            delta = b_ * nn * qs * (kbar - kbar0)
            ok &= sp.simplify(st_r + delta - (a_ * qs * blk[r] - b_ * nn * qs * kbar0)) == 0
    out["key_mean_recovery"] = bool(ok)
    ee, tt, AA = sp.symbols("e t A", real=True)
    xh = sp.symbols(f"xh0:{nn}", real=True)
    ss = sp.symbols(f"s0:{nn}", real=True)
    mu = sum(ss) / nn
    rhs = (ee - tt / nn) + (tt - sum(xh)) / nn + (sum(xh) - sum(si - AA for si in ss)) / nn
    out["pairwise_deviation"] = sp.simplify(ee - (mu - AA) - rhs) == 0
    # Lemma 19.2 / Theorem 2 for smooth_k: 3 keys of 2 coordinates, K″_r = k_r − k̄ + ε_r
    tq = sp.symbols("tau", positive=True)
    qv = sp.symbols("qd0:2", real=True)
    kb = sp.symbols("kb0:2", real=True)
    kr = [sp.symbols(f"k{r}_0:2", real=True) for r in range(3)]
    er = [sp.symbols(f"eps{r}_0:2", real=True) for r in range(3)]
    vr = sp.symbols("vs0:3", real=True)

    def dot(x: Any, y: Any) -> Any:
        return sum(xi * yi for xi, yi in zip(x, y, strict=True))

    xs = [tq * dot(qv, [kr[r][i] - kb[i] + er[r][i] for i in range(2)]) for r in range(3)]
    split = all(
        sp.expand(xs[r] - (tq * dot(qv, kr[r]) + tq * dot(qv, er[r]) - tq * dot(qv, kb))) == 0
        for r in range(3)
    )
    ys = [tq * dot(qv, kr[r]) + tq * dot(qv, er[r]) for r in range(3)]
    avg_x = sum(sp.exp(x) * vi for x, vi in zip(xs, vr, strict=True)) / sum(sp.exp(x) for x in xs)
    avg_y = sum(sp.exp(y) * vi for y, vi in zip(ys, vr, strict=True)) / sum(sp.exp(y) for y in ys)
    out["smoothed_keys"] = bool(split and sp.simplify(avg_x - avg_y) == 0)
    out.update(_running.sympy_checks())  # Lemmas 17.3 and 19.1 (docs/bounds.md §17, §19.1)
    return out
