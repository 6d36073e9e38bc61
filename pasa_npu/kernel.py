"""The tiled attention kernel: PASA and, with the shift switched off, flash attention.

One implementation serves every method and preset. Its numerics are fixed by a
:class:`~pasa_npu.precision.Precision`; the shift (PASA) is a switch. Per Q row chunk and KV block j
(block size n; symbols as in the package README and ``pasa_theory``):

=====  =========================================================  ======================
step   operation                                                  unit / rounding
=====  =========================================================  ======================
setup  M_σ = fl(σ·(I − (β/n)·J)), c (from ``pasa_theory``)        once per call
setup  K̃_j = M_σᵀ·K_j                                            matrix unit, once
a      S̃ = Q_i·K̃_jᵀ                                              matrix unit
b      μ_j = rowmean(S̃) (before any mask)                        vector reduction
c      S̃ ← S̃ masked (−inf) / + additive mask                     vector
d      m_j = rowmax(S̃), P = exp(S̃ − m_j), ℓ_j = rowsum(P)         vector
e–f    reference A and block offset δ_j = c·(μ_j − A)             vector, per row
g–h    fold (m_j, ℓ_j, P·V_j) into the running (m, ℓ, O)          P·V on matrix unit
end    O / ℓ                                                      vector
=====  =========================================================  ======================

Steps e–h follow ``Precision.offset`` (docs/precision.md §2.1, §2.2):

* ``"running"`` (the reference script): A is the running mean of the pseudo-averages,
  A ← μ_j·fl(1/(j+1)) + A_prev·fl(j/(j+1)), δ_j = c·(μ_j − A), δ_p = c·(A_prev − A),
  m_new = max(m_j + δ_j, m + δ_p), and ℓ, O are updated with e^{(m−m_new)+δ_p} and
  e^{(m_j−m_new)+δ_j};
* ``"lazy"`` (npu_fp16): flash-attention bookkeeping in frames — the stored maximum is an actual
  block maximum with its frame offset φ, a block is compared through x = (m_j − m) + (δ_j − φ), the
  holder of the maximum gets weight exactly 1, and A moves only when |δ_j| exceeds ``recenter_at``.

With ``recovery="key_mean"`` the offsets δ_j come from one extra score column per block instead of
from μ_j. With ``score_ref="hi_lo"`` (the ``fp16_accurate`` preset) the call goes to
:func:`_ref_attention` instead, a separate loop keyed on the fields of docs/precision.md §6: the stale
row maximum is subtracted inside the accumulator through two augmented columns, no shift. Without the shift, the same ``"lazy"`` path with δ = 0 is block-local flash attention
(exponentials against the block maximum, then rescaled: the FA-1 arrangement).

Vectorisation: all heads of a GQA group share one matrix product (no per-head Python loop, K and V
are never repeated), and a tile of up to ``_TILE_ELEMENTS`` scores (a run of KV blocks for a chunk
of query rows) is one product and one pass of each vector operation; only the O(T) online
recurrence on per-row statistics is a Python loop. Memory stays O(S·d) whatever the sequence length.

On the CPU, for fp16 presets with ``reduce="acc"`` and no ``attn_mask``, the vector passes of each
tile run in the fused backend of :mod:`pasa_npu._fused` (the score chain, and the bookkeeping with the
update of ℓ and O, one pass per row each; a tile of one KV block in one C call with both products by
torch's own sgemm; bit-identical to the torch passes below, which remain the fallback and the
definition; :func:`fused_backend` says which one runs; docs/benchmarks.md, "The fused CPU backend").

Rows are independent: the result of a query row does not depend on which chunk it is computed in,
up to one caveat of the emulation: torch's fp32 matrix product on the CPU may choose its summation
order by the number of rows in the product, so a ragged last chunk can round a few fp32 scores
differently (pinned in tests/npu/test_yardsticks.py). On the tested shapes ``block_q`` changes speed
and memory only, not a bit of the result (tests/npu/test_kernel_properties.py).
"""

from __future__ import annotations

import functools
import math

import torch

from . import _checks, _fused
from ._setup import ShiftConstants, shift_constants
from .metrics import Census, active_census
from .precision import Precision, get_precision, round_accumulator

__all__ = ["pasa_attention", "flash_attention", "shift_parameters", "shifted_keys", "fused_backend"]

fused_backend = _fused.fused_backend

#: Upper bound on the number of score-tile elements handled at once. Small enough for the tile and
#: its temporaries to stay near the CPU caches (a few MB), large enough to keep Python overhead low;
#: memory therefore stays O(S·d) whatever the sequence length.
_TILE_ELEMENTS = 1 << 19

_NEG_INF = float("-inf")


def pasa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    beta: float | None = None,
    block_q: int = 128,
    block_kv: int = 128,
    is_causal: bool = False,
    attn_mask: torch.Tensor | None = None,
    precision: str | Precision = "npu_fp16",
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """PASA: tiled attention with online pseudo-average shifting, emulated at the given precision.

    Args:
        q, k, v: BNSD tensors (batch, heads, seq, head_dim). ``q`` heads must be a multiple of the
            ``k``/``v`` heads (GQA/MQA); ``v`` may have its own head dim. Any S1, S2 >= 1.
        scale: softmax scale τ; ``None`` means 1/sqrt(head_dim).
        beta: shift parameter in (0, 1); ``None`` means the preset's pinned β if it has one (only
            ``"script"``: the script's 0.984497), otherwise the theory's optimal β for the
            matrix-unit format, block size ``block_kv`` and scale placement
            (:func:`pasa_theory.optimal_beta`).
        block_q: query rows per chunk (speed and memory only; results do not depend on it).
        block_kv: KV block length n (the size of the shifting matrix).
        is_causal: bottom-right aligned causal mask (query i sees key j iff j <= i + S2 − S1).
        attn_mask: bool (True = attend) or additive float mask broadcastable to (B, H, S1, S2).
            Rows with no visible key return 0, as torch SDPA does.
        precision: preset name (``"npu_fp16"``, ``"script"``, ``"fp16_strict"``, ``"fp16_keymean"``,
            ``"hybrid"``, ``"bf16"``, ``"fp32"``, ``"fp64"``, ``"fp16_accurate"``) or a
            :class:`~pasa_npu.Precision`. A precision with ``score_ref="hi_lo"`` (``"fp16_accurate"``)
            subtracts a running reference inside the accumulator instead of shifting (docs/precision.md
            §6): no shifting matrix, so ``beta`` is not used.
        out_dtype: dtype of the result; ``None`` means ``q.dtype``.

    Returns:
        The attention output, shape (B, H, S1, v_dim). inf/NaN in it are reported, not hidden: wrap
        the call in :func:`pasa_npu.metrics.census` to learn at which stage they appeared.
    """
    return _tiled_attention(
        q,
        k,
        v,
        scale=scale,
        beta=beta,
        block_q=block_q,
        block_kv=block_kv,
        is_causal=is_causal,
        attn_mask=attn_mask,
        precision=precision,
        out_dtype=out_dtype,
        shift=True,
    )


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    block_kv: int = 128,
    is_causal: bool = False,
    attn_mask: torch.Tensor | None = None,
    precision: str | Precision = "npu_fp16",
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The same tiled flash attention without the shift: the baseline PASA is judged against.

    The scale placement comes from ``precision.scale``; ``"m"`` (no shifting matrix here) means τ is
    applied to the rounded scores on the vector unit, the vendor high-performance arrangement, whose
    QKᵀ overflows fp16 once |q·k| > 65504. Use ``precision.replace(scale="q")`` for pre-scaled Q.
    With ``block_kv >= S2`` this is plain (untiled) softmax attention in the same precision: the naive
    same-precision baseline of the FlashAttention accuracy rule.
    """
    return _tiled_attention(
        q,
        k,
        v,
        scale=scale,
        beta=None,
        block_q=128,
        block_kv=block_kv,
        is_causal=is_causal,
        attn_mask=attn_mask,
        precision=precision,
        out_dtype=out_dtype,
        shift=False,
    )


def _shift_keys(km: torch.Tensor, consts: ShiftConstants, prec: Precision, n: int) -> torch.Tensor:
    """K̃_j = M_σᵀ·K_j for every block of the padded keys at once (matrix unit), as an operand again."""
    B, Hkv, L, D = km.shape
    acc, mi = prec.matmul_acc, prec.matmul_in
    # consts.off and consts.diag are the already rounded entries (representable in matmul_in): the
    # matrix is built in that dtype directly, so no float64 tensor exists on the device (Ascend has none)
    m_sig = torch.full((n, n), consts.off, dtype=mi, device=km.device)
    m_sig.diagonal().fill_(consts.diag)
    kt = _matmul(m_sig.t().to(acc), km.view(B, Hkv, L // n, n, D).to(acc), prec).to(mi)
    return kt.view(B, Hkv, L, D)


def shifted_keys(
    k: torch.Tensor,
    *,
    precision: str | Precision = "npu_fp16",
    block_kv: int = 128,
    scale: float | None = None,
    beta: float | None = None,
) -> torch.Tensor:
    """The shifted keys K̃ = M_σᵀ·K (per KV block, tail padded by the policy) exactly as
    :func:`pasa_attention` computes them, in the matrix-unit dtype: shape (B, Hkv, ⌈S2/n⌉·n, d).

    For inspection and for timing the once-per-call cost of the shift (design decision D10).
    """
    if not isinstance(k, torch.Tensor) or k.dim() != 4 or not k.dtype.is_floating_point:
        raise TypeError("k must be a floating 4-D BNSD torch.Tensor")
    prec = get_precision(precision)
    n = _checks.check_positive_int("block_kv", block_kv)
    consts = shift_parameters(prec, head_dim=k.shape[-1], block_kv=n, scale=scale, beta=beta)
    return _shift_keys(_pad_rows(k.to(prec.matmul_in), n, prec.kv_tail), consts, prec, n)


def shift_parameters(
    precision: str | Precision = "npu_fp16",
    *,
    head_dim: int,
    block_kv: int = 128,
    scale: float | None = None,
    beta: float | None = None,
) -> ShiftConstants:
    """β, the rounded entries of the (scaled) shifting matrix and c that :func:`pasa_attention` uses.

    The same resolution as inside the kernel, exposed for reports and notebooks.
    """
    prec = get_precision(precision)
    tau = _checks.check_scale(scale, _checks.check_positive_int("head_dim", head_dim))
    n = _checks.check_positive_int("block_kv", block_kv)
    sigma = tau if prec.scale == "m" else 1.0
    return shift_constants(prec, n, _checks.check_beta(beta), sigma)


# ---------------------------------------------------------------------------------------------
# vector-unit primitives


def _row_sum(x: torch.Tensor, prec: Precision) -> torch.Tensor:
    """Sum over the last dim, rounded to the vector dtype as the policy says.

    ``reduce="acc"``: torch's reductions of fp16/bf16 tensors accumulate in fp32 and round once
    (checked by the tests), so the native reduction is the model; wider dtypes accumulate in
    themselves. ``reduce="pairwise"``: a binary tree in the vector dtype.
    """
    if prec.reduce == "acc":
        return x.sum(dim=-1, keepdim=True)
    n = x.shape[-1]
    width = 1 << (n - 1).bit_length()
    if width != n:
        x = torch.nn.functional.pad(x, (0, width - n))
    while x.shape[-1] > 1:
        half = x.shape[-1] // 2
        x = x[..., :half] + x[..., half:]
    return x


def _row_mean(x: torch.Tensor, prec: Precision) -> torch.Tensor:
    """Block row mean: the sum (per policy) divided by n; one rounding for ``reduce="acc"``."""
    n = x.shape[-1]
    if prec.reduce == "acc":
        # one rounding of the fp32-accumulated mean; not fl(fl(sum)/n), whose sum can overflow
        return x.mean(dim=-1, keepdim=True)
    return _row_sum(x, prec) / torch.tensor(n, dtype=prec.vector, device=x.device)


def _mma(
    a: torch.Tensor,
    b: torch.Tensor,
    prec: Precision,
    out: torch.Tensor | None = None,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Matrix unit, up to its output rounding: ``a @ b`` for operands already in ``matmul_acc``, returned
    as the accumulator's values in ``a``'s dtype (into ``out`` if given).

    ``prec.mma_acc="wide"`` (every preset): accumulate in ``matmul_acc`` (torch's matmul). ``"fp16"`` or
    ``"fp22"`` (docs/beyond.md §1): the contraction dimension is cut into chunks of ``prec.mma_chunk``; each
    chunk's products are summed in ``a``'s dtype (fp32 for every fp16-operand preset: the products are
    exact, their sum of k terms carries a relative error <= (k−1)·2^−24, far below the accumulator's
    quantum), added to the running accumulator in that dtype, and the sum is rounded to the accumulator
    format (:func:`pasa_npu.precision.round_accumulator`) after every chunk, the first included.
    ``init``: the accumulator's value before the product (D = A·B + C; ``out`` is not used then).
    """
    if prec.mma_acc == "wide":
        r = torch.matmul(a, b, out=out)
        return r if init is None else init + r
    k = prec.mma_chunk
    acc: torch.Tensor | None = None if init is None else init.clone()
    for c0 in range(0, a.shape[-1], k):
        part = torch.matmul(a[..., c0 : c0 + k], b[..., c0 : c0 + k, :])
        acc = round_accumulator(part if acc is None else acc.add_(part), prec)
    assert acc is not None
    return acc if out is None or init is not None else out.copy_(acc)


def _mma_add(acc: torch.Tensor, part: torch.Tensor, prec: Precision) -> torch.Tensor:
    """One more chunk ``part`` (its products already summed) added to the accumulator values ``acc``
    and rounded to a narrow accumulator (:func:`_mma`); ``acc + part`` for ``mma_acc="wide"``."""
    if prec.mma_acc == "wide":
        return acc + part
    return round_accumulator(acc + part, prec)


def _matmul(a: torch.Tensor, b: torch.Tensor, prec: Precision) -> torch.Tensor:
    """Matrix unit: operands already in ``matmul_acc``; accumulate (:func:`_mma`) and round once to
    ``matmul_out``."""
    return _mma(a, b, prec).to(prec.matmul_out)


def _renorm_threshold(v: torch.Tensor, prec: Precision, n: int) -> float:
    """When to renormalise pow2 accumulators: the largest power of two T in [2, 2^14] with
    (T + n)·max|V| <= max_finite(vector)/2, so that neither ℓ nor O can overflow between two
    renormalisations. Renormalising is exact, so T only changes how often it happens, not a bit of
    the result; the larger T, the fewer operations."""
    vmax = float(v.detach().abs().amax()) if v.numel() else 0.0
    if not math.isfinite(vmax):
        return 2.0
    room = torch.finfo(prec.vector).max / 2 / max(vmax, 1e-30) - n
    if room < 2:
        return 2.0
    if not math.isfinite(room):  # V = 0 in a wide format: no bound from V
        return float(2**14)
    return float(2 ** min(14, math.floor(math.log2(room))))


# ---------------------------------------------------------------------------------------------
# online recurrence (steps e–h)


class _Online:
    """Running statistics of one Q row chunk: m, ℓ, O and (with the shift) the reference A."""

    def __init__(
        self,
        rows_shape: tuple[int, ...],
        v_dim: int,
        prec: Precision,
        c: torch.Tensor | None,
        masked: bool,
        census: Census | None,
        device: torch.device,
        renorm_at: float = 2.0,
    ) -> None:
        vd = prec.vector
        self.prec = prec
        self.c = c
        self.masked = masked
        self.census = census
        self.m = torch.full((*rows_shape, 1), _NEG_INF, dtype=vd, device=device)
        self.l = torch.zeros((*rows_shape, 1), dtype=vd, device=device)
        self.o = torch.zeros((*rows_shape, v_dim), dtype=vd, device=device)
        self._o_in = torch.empty_like(self.o)
        self.a: torch.Tensor | None = None
        # pow2 accumulators: (ℓ, O) are stored times 2^-t (t per row); ``self.down`` = 2^-t in vd.
        # Renormalising (all rows) once some ℓ reaches ``renorm_at`` keeps ℓ < renorm_at + n and
        # |O| < (renorm_at + n)·max|V|; see :func:`_renorm_threshold`.
        self.t: torch.Tensor | None = None
        self.down: torch.Tensor | None = None
        self.renorm_at = renorm_at
        self.recenter = torch.tensor(prec.recenter_at, dtype=prec.vector, device=device)
        self.phi: torch.Tensor | None = None
        fi = torch.finfo(prec.vector)
        self.max_shift = int(round(-math.log2(fi.smallest_normal) - math.log2(fi.eps)))
        self._weights: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.device = device

    def _running_weights(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = self._weights.get(j)
        if w is None:
            vd = self.prec.vector
            w = (
                torch.tensor(1.0 / (j + 1), dtype=vd, device=self.device),
                torch.tensor(j / (j + 1), dtype=vd, device=self.device),
            )
            self._weights[j] = w
        return w

    def update(
        self,
        j: int,
        means: _BlockMeans | _KeyOffsets | None,
        jj: int,
        mj: torch.Tensor,
        lj: torch.Tensor,
        pv: torch.Tensor,
    ) -> None:
        """Fold block j (row max mj, row sum lj, tile product pv) into the running statistics."""
        if self.c is not None and self.prec.offset == "running" and not isinstance(means, _KeyOffsets):
            alpha, gamma = self._running(j, means, jj, mj)
        else:
            alpha, gamma = self._switch(means, jj, mj)
        l_in = gamma * lj
        if self.down is not None:  # pow2: bring the new terms to the stored scale
            l_in = l_in * self.down
        self.l = alpha * self.l + l_in  # h
        if alpha.dtype == gamma.dtype == pv.dtype == self.o.dtype == self._o_in.dtype:
            o_in = torch.mul(gamma, pv, out=self._o_in)  # the same roundings, in reused memory
            if self.down is not None:
                o_in.mul_(self.down)
            self.o.mul_(alpha).add_(o_in)  # fl(fl(α·O) + o_in)
        else:  # mixed dtypes: torch's type promotion decides
            o_in = gamma * pv
            if self.down is not None:
                o_in = o_in * self.down
            self.o = alpha * self.o + o_in
        if self.census is not None:
            self.census.record("row_sum", self.l)
            self.census.record("accumulator", self.o)
        if self.prec.accum == "pow2" and bool((self.l >= self.renorm_at).any()):
            self._renormalise()

    def _deviation(self, means: _BlockMeans, jj: int, ref: torch.Tensor) -> torch.Tensor:
        """e_j = μ_j − ref in the vector dtype: rounded once from the accumulator (``centered``) or
        as the difference of the rounded mean μ̃_j (``rounded``)."""
        if self.prec.pseudo_average == "centered":
            return means.centered(jj, ref)
        return means.rounded(jj) - ref

    def _running(self, j: int, means: _BlockMeans, jj: int, mj: torch.Tensor):
        """The reference script's bookkeeping (steps e–h): statistics kept relative to c·A, A the
        running mean of the block pseudo-averages, moved every block; the offsets enter the
        exponents as e^{(m − m_new) + δ_p} and e^{(m_j − m_new) + δ_j}."""
        c = self.c
        first = self.a is None
        a_prev = means.rounded(jj) if first else self.a
        if self.prec.pseudo_average == "rounded":
            mu = means.rounded(jj)
            r1, r2 = self._running_weights(j)
            a = mu * r1 + a_prev * r2  # e: running mean of pseudo-averages
            dj = (mu - a) * c  # f: offset of this block from the reference
            dp = (a_prev - a) * c  #    move of the reference
        else:
            r1, _ = self._running_weights(j)
            e = means.centered(jj, a_prev)  # fl(μ_j − A_prev): only the deviation is rounded
            a = a_prev + e * r1  # A_prev + (μ_j − A_prev)/(j+1)
            delta = a - a_prev  # exact for nearby values
            dj = (e - delta) * c  # c·(μ_j − A)
            dp = -delta * c  # c·(A_prev − A)
        if first:
            dp = torch.zeros_like(dp)  # no history yet
        self.a = a
        if self.census is not None:
            self.census.record("shift", a, dj, dp)
        m_new = torch.maximum(mj + dj, self.m + dp)  # g
        ref = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new) if self.masked else m_new
        alpha = torch.exp((self.m - ref) + dp)
        gamma = torch.exp((mj - ref) + dj)
        self.m = m_new
        return alpha, gamma

    def _switch(self, means: _BlockMeans | _KeyOffsets | None, jj: int, mj: torch.Tensor):
        """Flash-attention bookkeeping with frames (steps e–h for ``offset="lazy"``, and flash
        attention itself when there is no shift).

        The stored maximum m is an actual block maximum, kept in the frame of the block that set it;
        φ is that frame's offset from the reference frame c·A. Block j's frame is offset by
        δ_j = c·(μ_j − A); relative to the stored frame its maximum lies at
        x = (m_j − m) + (δ_j − φ). If x > 0 the block takes over (m ← m_j, φ ← δ_j) and the
        history is rescaled by e^{−x}; otherwise the block is weighted by e^{x}. Whichever holds the
        maximum gets weight exactly 1, the difference m_j − m of two maxima is exact when they are
        within a factor 2, and only the small offset δ_j − φ is added in. A is held fixed and
        re-centred on the current block only where |δ_j| > recenter_at (exact recovery holds for
        any reference).
        """
        x = mj - self.m
        if isinstance(means, _KeyOffsets):
            dj = means.block(jj)  # δ_j straight from the score product
            if self.phi is None:
                self.phi = torch.zeros_like(dj)
            off = dj - self.phi
            x = x + off
            if self.census is not None:
                self.census.record("shift", dj, off)
        elif self.c is not None:
            assert means is not None
            c = self.c
            first = self.a is None
            a = means.rounded(jj) if first else self.a
            e = self._deviation(means, jj, a)  # μ_j − A
            dj = e * c  # δ_j
            if first:
                self.phi = torch.zeros_like(dj)
            else:
                far = dj.abs() > self.recenter
                if bool(far.any()):  # re-centre A on this block's mean
                    a_new = torch.where(far, a + e, a)
                    delta = a_new - a  # exact for nearby values
                    dj = torch.where(far, (e - delta) * c, dj)
                    self.phi = torch.where(far, self.phi - delta * c, self.phi)
                    a = a_new
            self.a = a
            off = dj - self.phi
            x = x + off
            if self.census is not None:
                self.census.record("shift", a, dj, off)
        if self.masked:  # both −inf: nothing seen yet, nothing new
            x = torch.where(torch.isnan(x), torch.full_like(x, _NEG_INF), x)
        take = x > 0
        alpha = torch.exp(torch.clamp(-x, max=0.0))  # e^{−x} if the block takes over, else 1
        gamma = torch.exp(torch.clamp(x, max=0.0))  # 1 if the block takes over, else e^{x}
        self.m = torch.where(take, mj, self.m)
        if self.phi is not None:
            self.phi = torch.where(take, dj, self.phi)
        return alpha, gamma

    def _renormalise(self) -> None:
        # Scale ℓ and O by 2^-s, s = floor(log2 ℓ) per row, so that ℓ ∈ [1, 2). Multiplying by a power
        # of two is exact in binary floating point (outside the subnormal range), so O/ℓ keeps every
        # bit of the unnormalised value while neither can overflow. Later blocks' contributions are
        # multiplied by the accumulated 2^-t (``self.down``) before they are added.
        vd = self.prec.vector
        _, e = torch.frexp(self.l.float())
        s = torch.where((self.l > 0) & torch.isfinite(self.l), e - 1, torch.zeros_like(e))
        t = s if self.t is None else self.t + s
        if int(t.max()) > self.max_shift:  # 2^-t no longer representable in vd: stop here
            raise OverflowError(
                f"pow2 accumulators need a scale of 2^-{int(t.max())}, beyond {vd}'s range; use a wider vector dtype"
            )
        f = torch.exp2(-s.to(torch.float32)).to(vd)
        self.l = self.l * f
        self.o.mul_(f)
        self.t = t
        self.down = torch.exp2(-t.to(torch.float32)).to(vd)

    def result(self) -> torch.Tensor:
        out = self.o / self.l  # final normalisation
        if self.masked:  # rows that saw no key: 0, as SDPA
            out = torch.where(self.l == 0, torch.zeros_like(out), out)
        return out


class _BlockMeans:
    """Row means of the blocks of one score tile (step b), before any mask.

    ``rounded(j)`` is μ̃_j rounded to the vector dtype; ``centered(j, ref)`` is fl(mean_j − ref) with
    one rounding: from the wide accumulator for ``reduce="acc"``, or as a vector-dtype tree over
    fl(S̃ − ref) for ``reduce="pairwise"``.
    """

    def __init__(self, s: torch.Tensor, prec: Precision, wide: torch.Tensor | None = None) -> None:
        self.prec = prec
        self.tile = None
        if prec.reduce == "acc":
            # ``wide``: the same values as ``s`` already in reduce_dtype (the mean of a narrow tensor
            # with dtype= converts it to a fresh wide copy first; reading a reused one is the same sum)
            self.mean = (s if wide is None else wide).mean(dim=-1, keepdim=True, dtype=prec.reduce_dtype)
        else:
            self.mean = _row_mean(s, prec)
            if prec.pseudo_average == "centered":
                self.tile = s.clone()

    def rounded(self, j: int) -> torch.Tensor:
        return self.mean[:, :, :, j].to(self.prec.vector)

    def centered(self, j: int, ref: torch.Tensor) -> torch.Tensor:
        if self.tile is None:
            return (self.mean[:, :, :, j] - ref.to(self.mean.dtype)).to(self.prec.vector)
        return _row_mean(self.tile[:, :, :, j] - ref, self.prec)


class _Buffers:
    """Work buffers reused across tiles of one call: large fresh allocations cost page faults that
    are a sizeable part of a tile's time on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._store: dict[tuple, torch.Tensor] = {}

    def get(self, name: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        key = (name, tuple(shape), dtype)
        t = self._store.get(key)
        if t is None:
            self._store = {k: v for k, v in self._store.items() if k[0] != name}  # one shape per name
            t = self._store[key] = torch.empty(shape, dtype=dtype, device=self.device)
        return t


class _KeyOffsets:
    """Block offsets δ_j = q·Δk_j for ``recovery="key_mean"``: one score column per block, where
    Δk_j = fl(b·n·(k̄_j − k̄_0)) (k̄ the block mean of the keys as fed to the shift, b = −M_off)."""

    def __init__(self, offsets: torch.Tensor) -> None:
        self.offsets = offsets  # (B, Hkv, rows, nb)

    def block(self, j: int) -> torch.Tensor:
        return self.offsets[:, :, :, j : j + 1]


# ---------------------------------------------------------------------------------------------
# the kernel


def _pad_rows(x: torch.Tensor, n: int, rule: str) -> torch.Tensor:
    """Extend the sequence dim (2) of a BNSD tensor to a multiple of ``n`` (``Precision.kv_tail``)."""
    s = x.shape[2]
    pad = (-s) % n
    if pad == 0:
        return x
    if rule == "zero" or (rule == "script" and s < n):
        extra = x.new_zeros((*x.shape[:2], pad, x.shape[3]))
    else:  # "wrap", or "script" with S2 >= n: the preceding real rows, cyclically if S2 < pad
        idx = torch.arange(s - pad, s, device=x.device) % s
        extra = x.index_select(2, idx)
    return torch.cat((x, extra), dim=2)


def _tiled_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None,
    beta: float | None,
    block_q: int,
    block_kv: int,
    is_causal: bool,
    attn_mask: torch.Tensor | None,
    precision: str | Precision,
    out_dtype: torch.dtype | None,
    shift: bool,
) -> torch.Tensor:
    prec = get_precision(precision)
    sh = _checks.check_qkv(q, k, v)
    tau = _checks.check_scale(scale, sh.head_dim)
    beta = _checks.check_beta(beta)
    block_q = _checks.check_positive_int("block_q", block_q)
    n = _checks.check_positive_int("block_kv", block_kv)
    mask = _checks.check_mask(attn_mask, is_causal, sh, q.device)
    out_dtype = _checks.check_out_dtype(out_dtype, q.dtype)
    if prec.score_ref != "none":  # the reference in the accumulator, no shifting matrix (§6)
        return _ref_attention(
            q,
            k,
            v,
            tau=tau,
            block_q=block_q,
            n=n,
            sh=sh,
            prec=prec,
            is_causal=is_causal,
            mask=mask,
            out_dtype=out_dtype,
        )
    if shift and n < 2:
        raise ValueError(f"block_kv must be >= 2 for PASA (the shifting matrix is n x n), got {n}")

    B, H, Hkv, G = sh.batch, sh.heads, sh.kv_heads, sh.group
    S1, S2, D, Dv = sh.seq_q, sh.seq_kv, sh.head_dim, sh.v_dim
    dev = q.device
    vd, mi, acc = prec.vector, prec.matmul_in, prec.matmul_acc
    cen = active_census()
    if cen is not None:
        cen.record("input", q, k, v)

    place = prec.scale if (shift or prec.scale != "m") else "scores"
    T = -(-S2 // n)

    # Inputs to the matrix unit.
    qm = q.to(mi)
    if place == "q":
        qm = (qm.to(vd) * torch.tensor(tau, dtype=vd, device=dev)).to(mi)
    km = _pad_rows(k.to(mi), n, prec.kv_tail)
    vc, vbar = _center_v(v, prec)  # V itself unless v_center is set
    vm = _pad_rows(vc, n, prec.kv_tail)

    c: torch.Tensor | None = None
    dk_acc: torch.Tensor | None = None
    if shift:
        sigma = tau if place == "m" else 1.0
        consts: ShiftConstants = shift_constants(prec, n, beta, sigma)
        kt_acc = _shift_keys(km, consts, prec, n).to(acc)
        c = torch.tensor(consts.c, dtype=prec.coef_dtype, device=dev)
        if prec.recovery == "key_mean":
            # Δk_j = fl(b·n·(k̄_j − k̄_0)): block means of the keys (vector reduction, wide
            # accumulator), their offsets from block 0, scaled like the shift, rounded to an operand.
            kbar = km.view(B, Hkv, T, n, D).mean(dim=3, dtype=prec.reduce_dtype)
            dk_acc = ((kbar - kbar[:, :, :1]) * (-consts.off * n)).to(mi).to(acc)
    else:
        kt_acc = km.to(acc)
    v_acc = vm.to(acc).view(B, Hkv, T, n, Dv)
    tau_v = torch.tensor(tau, dtype=vd, device=dev) if place == "scores" else None
    tau_acc = torch.tensor(tau, dtype=acc, device=dev) if place == "acc" else None

    masked = is_causal or mask is not None
    if mask is not None:
        mask = mask.expand(B, H, S1, S2)
    q5 = qm.view(B, Hkv, G, S1, D)
    out = torch.empty((B, H, S1, Dv), dtype=out_dtype, device=dev)
    out5 = out.view(B, Hkv, G, S1, Dv)

    renorm_at = _renorm_threshold(vc, prec, n) if prec.accum == "pow2" else math.inf
    bufs = _Buffers(dev)
    fused = None
    fz = _fused.get_backend() if _fused.applies(prec, dev, cen) and mask is None else None
    c_ok = c is None or c.dtype == torch.float16
    if fz is not None and c_ok and not (shift and prec.offset == "running" and dk_acc is None):
        mode = 3 if dk_acc is not None else ((1 if prec.pseudo_average == "centered" else 2) if shift else 0)
        fused = _FusedTiles(fz, prec, mode, n, kt_acc, v_acc, dk_acc, tau_v, tau_acc, masked)
    for i0 in range(0, S1, block_q):
        r = min(block_q, S1 - i0)
        rows = G * r
        qi = torch.empty((B, Hkv, rows, D), dtype=acc, device=dev)  # the block's rows, widened in one copy
        qi.view(B, Hkv, G, r, D).copy_(q5[:, :, :, i0 : i0 + r])
        state = _Online((B, Hkv, rows), Dv, prec, c, masked, cen, dev, renorm_at)
        per_block = B * Hkv * rows * n
        nb_max = max(1, _TILE_ELEMENTS // per_block)
        for j0 in range(0, T, nb_max):
            j1 = min(T, j0 + nb_max)
            nb = j1 - j0
            c0, c1 = j0 * n, j1 * n
            if fused is not None:
                causal = (i0 - c0, r, S2 - S1) if is_causal else None  # _checks.causal_keep
                tail = S2 - (c1 - n) if c1 > S2 else None
                if fused.tile(state, qi, j0, j1, causal, tail, bufs):
                    continue
                fused = None  # a NaN or an overflow: the torch passes from here on (NaN payloads)
            # a: S̃ = Q·K̃ᵀ on the matrix unit, rounded once to matmul_out (then to the vector dtype)
            s_acc = _mma(
                qi,
                kt_acc[:, :, c0:c1].transpose(-1, -2),
                prec,
                out=bufs.get("s_acc", (B, Hkv, rows, nb * n), acc),
            )
            if tau_acc is not None:  # scale="acc": τ applied at the conversion of the accumulator
                s_acc.mul_(tau_acc)
            s = bufs.get("s_out", s_acc.shape, prec.matmul_out).copy_(s_acc)
            if vd != prec.matmul_out:
                s = s.to(vd)
            s = s.view(B, Hkv, rows, nb, n)
            wide = None
            if (
                shift
                and tau_v is None
                and vd == prec.matmul_out
                and prec.reduce == "acc"
                and prec.reduce_dtype == acc
            ):
                # the rounded tile back in the accumulator buffer: the block means read it without a
                # fresh conversion, and its row max is the rounded max (rounding is monotonic)
                wide = s_acc.copy_(s.view(s_acc.shape)).view(B, Hkv, rows, nb, n)
            if cen is not None:
                cen.record("scores", s)
            if tau_v is not None:
                s.mul_(tau_v)
            if dk_acc is not None:  # b (key_mean)
                means = _key_offsets(qi, dk_acc[:, :, j0:j1], prec, tau_acc, tau_v)
            else:
                means = _BlockMeans(s, prec, wide) if shift else None  # b
            if masked or c1 > S2:
                s = _apply_masks(s, i0, r, c0, c1, sh, is_causal, mask, vd)  # c
                mj = s.amax(dim=-1, keepdim=True)  # d
            else:
                # rounding is monotonic, so the max of the rounded tile is the rounded max of the
                # accumulator tile (and the wide max is the faster pass)
                mj = s_acc.view(B, Hkv, rows, nb, n).amax(dim=-1, keepdim=True).to(prec.matmul_out).to(vd)
                if tau_v is not None:
                    mj = mj * tau_v
            ref = torch.where(torch.isneginf(mj), torch.zeros_like(mj), mj) if masked else mj
            p = torch.exp_(torch.sub(s, ref, out=s) if s.is_contiguous() else s - ref)
            lj = _row_sum(p, prec)
            if cen is not None:
                cen.record("exp", p)
                cen.record("row_sum", lj)
            p_acc = bufs.get("p_acc", (B, Hkv, nb, rows, n), acc)
            p_acc.copy_((p if vd == mi else p.to(mi)).transpose(2, 3))
            pv = _mma(p_acc, v_acc[:, :, j0:j1], prec, out=bufs.get("pv_acc", (B, Hkv, nb, rows, Dv), acc))
            pv = bufs.get("pv_out", pv.shape, prec.matmul_out).copy_(pv)
            if vd != prec.matmul_out:
                pv = pv.to(vd)  # P·V_j
            for jj in range(nb):
                state.update(j0 + jj, means, jj, mj[:, :, :, jj], lj[:, :, :, jj], pv[:, :, jj])
        o = state.result()
        if vbar is not None:  # v_center: add v̄ back (vector unit); rows that saw no key stay 0
            o = torch.where(state.l == 0, torch.zeros_like(o), o + vbar)
        out5[:, :, :, i0 : i0 + r] = o.view(B, Hkv, G, r, Dv).to(out_dtype)
    if cen is not None:
        cen.record("output", out)
    return out


class _FusedTiles:
    """Steps a–h of whole tiles on the fused CPU backend (:mod:`pasa_npu._fused`), bit-identical to
    the torch passes of :func:`_tiled_attention`.

    Per tile: for each group of (batch, KV head) pairs (one pair at a time when the tile holds one KV
    block, so that a group's scores, P and P·V stay in the core's L2 cache; the products of a group are
    the same bits as those of the batched product), S̃ = Q·K̃ᵀ (torch), the score chain (rounding,
    block means, masks, maxima, exp, row sums, P), P·V (torch), and the bookkeeping with the update of
    O. After every KV block of all groups, the pow2 accumulators are renormalised if any ℓ reached the
    threshold, as in :meth:`_Online.update`. Where a tile's scores or a block's results are not finite
    (overflow, NaN) the state is restored and False returned: the caller's torch passes take the tile
    (torch propagates NaN payloads differently in its vector and scalar loops).

    A tile of one KV block runs in one C call where the backend's products match torch.matmul
    (:meth:`_direct`, ``_fused.direct()``): the same passes in the same order, without Python between
    the groups.
    """

    def __init__(self, fz, prec, mode, n, kt, v, dk, tau_v, tau_acc, masked) -> None:
        self.fz, self.prec, self.mode, self.n = fz, prec, mode, n
        B, Hkv, L, D = kt.shape
        self.bh = B * Hkv
        self.kt = kt.reshape(self.bh, L, D)
        self.v = v.reshape(self.bh, *v.shape[2:])  # (BH, T, n, Dv)
        self.dk = None if dk is None else dk.reshape(self.bh, *dk.shape[2:])
        self.tau_v, self.tau_acc, self.masked = tau_v, tau_acc, masked
        self.tau_s = None if tau_v is None else float(tau_v)
        # one C call per tile of one KV block (both products by torch's sgemm; _fused.direct)
        self._chunks: dict[int, int | None] = {}  # rows -> piece of pasa_tile, None: products differ
        self._consts: tuple | None = None
        self.direct = (
            _fused.direct()
            and mode in (0, 1, 2)
            and tau_acc is None
            and prec.mma_acc == "wide"
            and self.kt.is_contiguous()
            and self.v.is_contiguous()
        )

    def tile(self, state: _Online, qi: torch.Tensor, j0: int, j1: int, causal, tail, bufs: _Buffers) -> bool:
        prec, fz, n, bh, acc = self.prec, self.fz, self.n, self.bh, self.prec.matmul_acc
        nb, rows, D = j1 - j0, qi.shape[2], qi.shape[3]
        Dv = self.v.shape[-1]
        q3 = qi.reshape(bh, rows, D)
        mode = self.mode
        if nb == 1 and self.direct and q3.is_contiguous():
            if rows not in self._chunks:
                ch = fz.chunk(rows)
                self._chunks[rows] = ch if fz.gemm_matches(rows, n, D, Dv, ch) else None
            ch = self._chunks[rows]
            if ch is not None:
                done = self._direct(state, q3, j0, causal, tail, bufs, ch)
                if done is not None:
                    return done
        # groups of (batch, KV head) pairs: one pair when a tile is one KV block (L2-sized pieces)
        step = 1 if nb == 1 else bh
        saved = self._save(state, whole=nb > 1)
        if mode in (1, 2) and state.a is None:
            state.a = torch.empty_like(state.m)
        if mode != 0 and state.phi is None:
            state.phi = torch.zeros_like(state.m)
        first = (saved[2] is None) if mode in (1, 2) else (saved[3] is None)
        consts = (state.c, state.recenter, state.renorm_at)
        gs = step
        s_buf = bufs.get("f_s", (gs, rows, nb * n), acc)
        p_acc = bufs.get("f_p", (gs, nb, rows, n), acc)
        pv_buf = bufs.get("f_pv", (gs, nb, rows, Dv), acc)
        stat5 = (1, gs, rows, nb, 1)
        o3 = (
            bufs.get("f_mj", stat5, prec.vector),
            bufs.get("f_lj", stat5, prec.vector),
            bufs.get("f_mean", stat5, acc),
        )
        wide = prec.mma_acc == "wide"
        big = False
        for g0 in range(0, bh, step):
            g1 = g0 + gs
            kt = self.kt[g0:g1, j0 * n : j1 * n].transpose(-1, -2)
            if wide:  # _mma for a wide accumulator: the product itself
                s_acc = torch.matmul(q3[g0:g1], kt, out=s_buf)
            else:
                s_acc = _mma(q3[g0:g1], kt, prec, out=s_buf)
            if self.tau_acc is not None:
                s_acc.mul_(self.tau_acc)
            chained = fz.chain(
                s_acc, (1, gs, rows, nb, n), self.tau_s, mode in (1, 2), self.masked, p_acc, o3, tail, causal
            )
            if chained is None:
                return self._restore(state, saved)
            mj, lj, mean = chained
            if mode == 3:
                assert self.dk is not None
                stat = _key_offsets(q3[g0:g1], self.dk[g0:g1, j0:j1], prec, self.tau_acc, self.tau_v).offsets
            else:
                stat = mean
            vb = self.v[g0:g1, j0:j1]
            pv = torch.matmul(p_acc, vb, out=pv_buf) if wide else _mma(p_acc, vb, prec, out=pv_buf)
            if nb == 1:
                rc = self._step(state, 0, first, (mj, lj, stat, pv), consts, g0, g1)
                if rc < 0:
                    return self._restore(state, saved)
                big = big or rc == 1
                continue
            for jj in range(nb):  # one group: the blocks of the tile in order
                rc = self._step(state, jj, first and jj == 0, (mj, lj, stat, pv), consts, 0, bh)
                if rc < 0:  # back to the state before the tile: torch redoes all its blocks
                    return self._restore(state, saved)
                state.o, state._o_in = state._o_in, state.o
                if prec.accum == "pow2" and rc == 1:
                    state._renormalise()
                first = False
            return True
        state.o, state._o_in = state._o_in, state.o
        if prec.accum == "pow2" and big:
            state._renormalise()
        return True

    def _direct(
        self, state: _Online, q3: torch.Tensor, j0: int, causal, tail, bufs: _Buffers, ch: int
    ) -> bool | None:
        """:meth:`tile` for a tile of one KV block in one C call (``_fused.Backend.tile``): the same
        passes in the same order, with the products by the sgemm torch.matmul calls. None where the
        state is not contiguous (the Python loop then takes the tile)."""
        fz, n, bh, mode = self.fz, self.n, self.bh, self.mode
        rows, D = q3.shape[1], q3.shape[2]
        Dv = self.v.shape[-1]
        if not all(
            t is None or t.is_contiguous() for t in (state.m, state.l, state.a, state.phi, state.down)
        ):
            return None  # the Python tile loop
        new_a = mode in (1, 2) and state.a is None
        new_phi = mode != 0 and state.phi is None
        if new_a:
            state.a = torch.empty_like(state.m)
        if new_phi:
            state.phi = torch.zeros_like(state.m)
        first = new_a if mode in (1, 2) else (state.phi is None or new_phi)
        st = (state.m, state.l, state.a, state.phi, state.down)
        f32, f16 = torch.float32, torch.float16
        work = (
            bufs.get("d_s", (ch * n,), f32),
            bufs.get("d_p", (ch * n,), f32),
            bufs.get("d_pv", (ch * Dv,), f32),
            bufs.get("d_mean", (ch,), f32),
            bufs.get("d_mj", (ch,), f16),
            bufs.get("d_lj", (ch,), f16),
            bufs.get("d_work", (6 * ch + 2 * bh * rows,), f32),
        )
        L, T = self.kt.shape[1], self.v.shape[1]
        dims = [bh, rows, D, Dv, n, L * D, T * n * Dv, n if tail is None else tail, int(causal is not None)]
        dims += [*(causal if causal is not None else (0, 1, 0)), mode, int(first), int(self.masked)]
        dims += [int(mode in (1, 2)), fz.lanes, fz.pairing, ch]
        consts = self._consts
        if consts is None:  # the same for every tile of the call
            c = state.c
            consts = (0.0 if self.tau_s is None else self.tau_s, 0 if c is None else _fused._bits16(c))
            consts = self._consts = (*consts, _fused._bits16(state.recenter), state.renorm_at)
        kt_ptr = self.kt.data_ptr() + j0 * n * D * self.kt.element_size()
        v_ptr = self.v.data_ptr() + j0 * n * Dv * self.v.element_size()
        rc = fz.tile(dims, consts, q3, kt_ptr, v_ptr, st, (state.o, state._o_in), work)
        if rc < 0 or rc == 2:  # m, ℓ, A, φ are as before: the torch passes take the tile
            if new_a:
                state.a = None
            if new_phi:
                state.phi = None
            return False
        state.o, state._o_in = state._o_in, state.o
        if self.prec.accum == "pow2" and rc == 1:
            state._renormalise()
        return True

    def _step(self, state, jj, first, tile, consts, g0, g1) -> int:
        bh = self.bh
        rows = state.m.numel() // bh
        m3, l3 = state.m.view(bh, rows), state.l.view(bh, rows)  # current tensors (renormalising replaces ℓ)
        a3 = None if state.a is None else state.a.view(bh, rows)
        p3 = None if state.phi is None else state.phi.view(bh, rows)
        down = None if state.down is None else state.down.view(bh, rows)[g0:g1]
        o_in = state.o.view(bh, rows, -1)[g0:g1]
        o_out = state._o_in.view(bh, rows, -1)[g0:g1]
        sl = (m3[g0:g1], l3[g0:g1], None if a3 is None else a3[g0:g1], None if p3 is None else p3[g0:g1])
        return self.fz.step(self.mode, first, self.masked, jj, tile, consts, sl, down, o_in, o_out)

    @staticmethod
    def _save(state: _Online, whole: bool) -> tuple:
        """Copies of what a tile may change before it is known to be finite: the per-row statistics
        the step writes in place, and with ``whole`` (several blocks per tile, O swapped and
        renormalised between them) O, t and 2^−t too."""
        rows = tuple(None if t is None else t.clone() for t in (state.m, state.l, state.a, state.phi))
        return (*rows, state.o.clone() if whole else None, state.t, state.down)

    @staticmethod
    def _restore(state: _Online, saved) -> bool:
        state.m, state.l, state.a, state.phi, o, state.t, state.down = saved
        if o is not None:
            state.o = o
        return False


def _key_offsets(
    qi: torch.Tensor,
    dk: torch.Tensor,
    prec: Precision,
    tau_acc: torch.Tensor | None,
    tau_v: torch.Tensor | None,
) -> _KeyOffsets:
    """Step b for ``recovery="key_mean"``: the offsets q·Δk_j of a tile's blocks (one score column each)."""
    offs_acc = _mma(qi, dk.transpose(-1, -2), prec)
    if tau_acc is not None:
        offs_acc = offs_acc * tau_acc
    offs = offs_acc.to(prec.matmul_out).to(prec.vector)
    return _KeyOffsets(offs if tau_v is None else offs * tau_v)


def _apply_masks(
    s: torch.Tensor,
    i0: int,
    r: int,
    c0: int,
    c1: int,
    sh: _checks.Shapes,
    is_causal: bool,
    mask: torch.Tensor | None,
    vd: torch.dtype,
) -> torch.Tensor:
    """Step c: −inf on padded columns, causal and boolean masks; add an additive mask (rounded to vd)."""
    B, Hkv, rows, nb, n = s.shape
    S1, S2, G = sh.seq_q, sh.seq_kv, sh.group
    dev = s.device
    cols = torch.arange(c0, c1, device=dev)
    keep = None
    if c1 > S2:  # padded tail columns (last block only)
        s[:, :, :, -1, S2 - (c1 - n) :] = _NEG_INF
    if is_causal and (c1 - 1) > (i0 + (S2 - S1)):  # some key in the tile lies in the future
        rr = torch.arange(i0, i0 + r, device=dev)
        causal = _checks.causal_keep(rr, cols, S1, S2)  # (r, L)
        causal = causal.unsqueeze(0).expand(G, r, c1 - c0).reshape(1, 1, rows, nb, n)
        keep = causal if keep is None else keep & causal
    bias = None
    if mask is not None:
        w = min(c1, S2) - c0
        tile = mask[:, :, i0 : i0 + r, c0 : c0 + w]
        if mask.dtype == torch.bool:
            full = torch.zeros((B, sh.heads, r, c1 - c0), dtype=torch.bool, device=dev)
            full[..., :w] = tile
            m = full.view(B, Hkv, rows, nb, n)
            keep = m if keep is None else keep & m
        else:
            full = torch.zeros((B, sh.heads, r, c1 - c0), dtype=vd, device=dev)
            full[..., :w] = tile.to(vd)
            bias = full.view(B, Hkv, rows, nb, n)
    if keep is not None:
        s = s.masked_fill(~keep, _NEG_INF)
    if bias is not None:
        s = s + bias
    return s


# ---------------------------------------------------------------------------------------------
# the reference in the accumulator (Precision.score_ref = "hi_lo"; docs/precision.md §6)


def _spacing(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """ulp(x) in ``dtype`` (the spacing of the binade of |x|; the subnormal spacing below the normal
    range), in x's dtype. x >= 0."""
    fi = torch.finfo(dtype)
    p = 1 - round(math.log2(fi.eps))  # digits, implicit bit included
    _, e = torch.frexp(x)  # x = f·2^e, f in [0.5, 1): ulp = 2^(e − p)
    tiny = fi.smallest_normal * fi.eps
    return torch.clamp(torch.exp2((e - p).to(x.dtype)), min=tiny)


def _center_v(v: torch.Tensor, prec: Precision) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``Precision.v_center``: V − v̄ as a matrix-unit operand and v̄ (vector dtype, (B, Hkv, 1, Dv)).

    v̄ is V's per-column mean over the sequence (wide accumulator), rounded once to the vector format
    (``"mean"``) or to a multiple of ulp(max|V|) of its column (``"grid"``): then V − v̄ is exact for
    every entry in the binade of max|V| (a mean off that grid shifts all of them by the same rounding,
    a per-column bias). The subtraction is a vector operation; softmax rows sum to 1, so adding v̄
    back at the end restores the output exactly in real arithmetic."""
    vm = v.to(prec.matmul_in)
    if prec.v_center == "none":
        return vm, None
    wide = prec.reduce_dtype
    mean = vm.mean(dim=2, keepdim=True, dtype=wide)
    if prec.v_center == "grid":
        quantum = _spacing(vm.abs().amax(dim=2, keepdim=True).to(wide), prec.vector)
        mean = torch.round(mean / quantum) * quantum  # powers of two: exact scalings
    vbar = mean.to(prec.vector)
    return (vm.to(prec.vector) - vbar).to(prec.matmul_in), vbar


def _ref_exponents(
    qm: torch.Tensor, km: torch.Tensor, prec: Precision, extra: float = 0.0
) -> tuple[int, int]:
    """Exponents (e_hi, e_lo) of the two augmented columns: R = 2^e_hi·h + 2^e_lo·l with h, l in
    ``matmul_in``. e_hi is the smallest >= 0 for which |R|/2^e_hi stays below 2^emax for any score
    (|S| <= max_i Σ|q_i|·max|k|, plus ``extra`` for an additive mask); e_lo = e_hi − p puts the residual
    R − 2^e_hi·h (at most 2^e_hi·ulp(h)/2) near the top of the format again."""
    fi = torch.finfo(prec.matmul_in)
    emax = math.floor(math.log2(fi.max))
    p = 1 - round(math.log2(fi.eps))
    wide = prec.reduce_dtype
    bound = float(qm.abs().sum(dim=-1, dtype=wide).amax()) * float(km.abs().amax().to(wide)) + extra
    e_hi = max(0, math.ceil(math.log2(bound)) - emax) if bound > 0 and math.isfinite(bound) else 0
    return e_hi, e_hi - p


class _RefState:
    """Running state of one Q row chunk for ``score_ref="hi_lo"`` (docs/precision.md §6).

    The reference R = 2^e_hi·h + 2^e_lo·l (h, l in ``matmul_in``, the entries of the two augmented
    columns of Q; K holds the constants 2^e_hi, 2^e_lo) is subtracted inside the accumulator, so the
    converted tile holds t = τ·(S − R). O and ℓ (vector dtype) are kept in R's frame, times 2^−E (E
    per row, exact power-of-two renormalisation for ``accum="pow2"``); ``pend`` is the matrix unit's
    accumulator of P·[V, 1] since the last flush (``pv_accum="matrix"``).
    """

    def __init__(self, qi, prec, tau_ref, e_hi, e_lo, dv, renorm_at, census) -> None:
        rows = qi.shape[:-1]
        acc, vd = prec.matmul_acc, prec.vector
        dev = qi.device
        self.prec, self.census, self.renorm_at = prec, census, renorm_at
        self.tau_ref = tau_ref  # factor from S − R (acc units) to tile units: τ, or 1 for scale="q"
        self.place = prec.scale if prec.scale != "m" else "scores"  # no shifting matrix here
        self.tau_acc = torch.tensor(tau_ref, dtype=acc, device=dev)
        self.tau_vd = torch.tensor(tau_ref, dtype=vd, device=dev)
        self.theta = torch.tensor(prec.ref_move_at, dtype=vd, device=dev)
        self.f_hi, self.f_lo = 2.0**e_hi, 2.0**e_lo
        self.hi = torch.zeros((*rows, 1), dtype=acc, device=dev)  # values representable in matmul_in
        self.lo = torch.zeros_like(self.hi)
        self.seen = torch.zeros((*rows, 1), dtype=torch.bool, device=dev)  # R set (a key was visible)
        self.o = torch.zeros((*rows, dv), dtype=vd, device=dev)
        self.lsum = torch.zeros((*rows, 1), dtype=vd, device=dev)
        self.e = torch.zeros((*rows, 1), dtype=acc, device=dev)  # O, ℓ stored times 2^−E
        width = dv + (prec.row_sum == "matrix")
        self.pend = torch.zeros((*rows, width), dtype=acc, device=dev)
        self.dv = dv
        self.moves = 0  # reference moves after the first (emulation statistics)

    # -- the matrix unit -------------------------------------------------------------------------
    def _minus_ref(self, s: torch.Tensor, hi: torch.Tensor, lo: torch.Tensor) -> torch.Tensor:
        """S − R in the accumulator: the two augmented columns' products (exact) added last (with a
        narrow accumulator, as one more chunk after the d columns of Q·Kᵀ: docs/beyond.md §1)."""
        if self.prec.mma_acc != "wide":
            return _mma_add(s, -(hi * self.f_hi + lo * self.f_lo), self.prec)
        return (s - hi * self.f_hi) - lo * self.f_lo

    def _convert(self, a: torch.Tensor) -> torch.Tensor:
        """Accumulator values (S − R) to the vector dtype as the scale placement says: τ at the
        conversion (``"acc"``), on the rounded scores (``"scores"``), or already in Q (``"q"``)."""
        prec = self.prec
        if self.place == "acc":
            return (a * self.tau_acc).to(prec.matmul_out).to(prec.vector)
        t = a.to(prec.matmul_out).to(prec.vector)
        return t * self.tau_vd if self.place == "scores" else t

    def _pair(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, l) in ``matmul_in`` with 2^e_hi·h + 2^e_lo·l ≈ target (acc units). Any pair is exact
        attention; only how close R lies to the row maximum depends on this choice."""
        mi, acc = self.prec.matmul_in, self.prec.matmul_acc
        hi = (target / self.f_hi).to(mi).to(acc)
        lo = ((target - hi * self.f_hi) / self.f_lo).to(mi).to(acc)
        return hi, lo

    # -- one KV block ------------------------------------------------------------------------------
    def block(self, s: torch.Tensor, masker, v_blk: torch.Tensor) -> None:
        """Fold one KV block: ``s`` its accumulator scores (rows, n), ``masker`` applies the masks
        to a tile (or None), ``v_blk`` the block of [V − v̄, 1] in the accumulator dtype."""
        prec, vd = self.prec, self.prec.vector
        a = self._minus_ref(s, self.hi, self.lo)
        # the row maximum that places R, from the accumulator with the masks (any R is exact; reading
        # it before the conversion keeps an overflowing first tile from placing R at inf)
        am = a * self.tau_acc if self.place != "q" else a.clone()
        if masker is not None:
            am = masker(am)
        mb = am.amax(dim=-1, keepdim=True)
        first = ~self.seen & torch.isfinite(mb)
        move = first | (self.seen & (mb.to(vd) > self.theta))
        t_old = None
        if bool(move.any()):
            target = self.hi * self.f_hi + self.lo * self.f_lo + mb / self.tau_acc
            target = torch.where(move, target, torch.zeros_like(target))
            hi, lo = self._pair(target)
            hi = torch.where(move, hi, self.hi)
            lo = torch.where(move, lo, self.lo)
            # x = τ·(R_old − R_new), computed like one more score (two columns, converted once)
            x = self._convert((self.hi - hi) * self.f_hi + (self.lo - lo) * self.f_lo)
            x = torch.where(move & self.seen, x, torch.zeros_like(x))
            self.moves += int((move & self.seen).sum())
            self._flush(move & self.seen, x)
            if prec.ref_move == "rebase":
                t_old = self._convert(a)
            self.hi, self.lo = hi, lo
            self.seen = self.seen | first
            a = self._minus_ref(s, self.hi, self.lo)  # the tile against the new reference
            t = self._convert(a)
            if t_old is not None:  # rebase: moved rows shift their old tile on the vector unit
                t = torch.where(move & ~first, t_old + x, t)
        else:
            t = self._convert(a)
        if self.census is not None:
            self.census.record("scores", t)
        if masker is not None:
            t = masker(t)
        p = torch.exp(t)  # masked entries: exp(−inf) = 0
        if self.census is not None:
            self.census.record("exp", p)
        if prec.row_sum == "vector":
            lj = _row_sum(p, prec) * torch.exp2(-self.e).to(vd)  # O, ℓ are kept times 2^−E
            self.lsum = self.lsum + lj
            self._renormalise()
        pm = p if vd == prec.matmul_in else p.to(prec.matmul_in)
        # P·[V, 1] on the matrix unit, into its accumulator
        self.pend = _mma(pm.to(prec.matmul_acc), v_blk, prec, init=self.pend)
        if prec.pv_accum == "vector":  # rounded into O after every block
            self._flush(torch.ones_like(self.seen), torch.zeros_like(self.lsum))

    # -- accumulators --------------------------------------------------------------------------
    def _flush(self, sel: torch.Tensor, x: torch.Tensor) -> None:
        """Rows ``sel``: O ← fl(fl(α·O) + fl(α·pend)), ℓ likewise, α = fl(e^x) (x = 0: α = 1), the
        pending accumulator converted once with the factor α·2^−E′ (a power of two times α: one
        rounding); E′ = ⌊log2 max(ℓ_new, 1)⌋ (``accum="pow2"``), so that ℓ < 2 after a flush."""
        prec, vd, acc = self.prec, self.prec.vector, self.prec.matmul_acc
        alpha = torch.exp(x)
        alpha_acc = alpha.to(acc)
        e_new = self.e
        if prec.accum == "pow2":
            tot = alpha_acc * (self.lsum.to(acc) * torch.exp2(self.e))
            if prec.row_sum == "matrix":
                tot = tot + alpha_acc * self.pend[..., self.dv :]
            # ℓ >= 1 after the first visible block (R is placed at a block maximum, whose weight is 1),
            # so ℓ < 1 is transient (a move flushes before the new block adds its mass): E′ >= 0
            _, ex = torch.frexp(torch.clamp(tot, min=1.0))
            e_new = (ex - 1).to(acc)
        f_old = alpha_acc * torch.exp2(self.e - e_new)
        f_in = alpha_acc * torch.exp2(-e_new)
        inc = (self.pend * f_in).to(prec.matmul_out).to(vd)
        o = (self.o.to(acc) * f_old).to(vd) + inc[..., : self.dv]
        lsum = (self.lsum.to(acc) * f_old).to(vd)
        if prec.row_sum == "matrix":
            lsum = lsum + inc[..., self.dv :]
        self.o = torch.where(sel, o, self.o)
        self.lsum = torch.where(sel, lsum, self.lsum)
        self.e = torch.where(sel, e_new, self.e)
        self.pend = torch.where(sel, torch.zeros_like(self.pend), self.pend)
        if self.census is not None:
            self.census.record("row_sum", self.lsum)
            self.census.record("accumulator", self.o)

    def _renormalise(self) -> None:
        """``row_sum="vector"``, ``accum="pow2"``: rows whose ℓ reached the threshold are scaled by
        2^−s, s = floor(log2 ℓ) (exact), so that ℓ and O cannot overflow between flushes."""
        if self.prec.accum != "pow2" or not bool((self.lsum >= self.renorm_at).any()):
            return
        acc = self.prec.matmul_acc
        big = self.lsum >= self.renorm_at
        _, ex = torch.frexp(self.lsum.to(acc))
        s = torch.where(big, (ex - 1).to(acc), torch.zeros_like(self.e))
        f = torch.exp2(-s)
        self.lsum = (self.lsum.to(acc) * f).to(self.prec.vector)
        self.o = (self.o.to(acc) * f).to(self.prec.vector)
        self.e = self.e + s

    def result(self) -> torch.Tensor:
        self._flush(torch.ones_like(self.seen), torch.zeros_like(self.lsum))
        out = self.o / self.lsum
        return torch.where(self.lsum == 0, torch.zeros_like(out), out)  # rows that saw no key: 0


def _mask_block(
    x: torch.Tensor,
    *,
    at: tuple[int, int, int, int],
    sh: _checks.Shapes,
    causal: bool,
    mask: torch.Tensor | None,
    vd: torch.dtype,
) -> torch.Tensor:
    """Step c on one block's tile (rows, n) of the chunk at rows i0:i0+r, columns c0:c1 (an additive
    mask rounded to the vector dtype ``vd``, then added in the tile's dtype)."""
    i0, r, c0, c1 = at
    B, Hkv = x.shape[:2]
    x5 = x.reshape(B, Hkv, x.shape[2], 1, c1 - c0)
    return _apply_masks(x5, i0, r, c0, c1, sh, causal, mask, vd).view(x.shape)


def _ref_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    tau: float,
    block_q: int,
    n: int,
    sh: _checks.Shapes,
    prec: Precision,
    is_causal: bool,
    mask: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """Attention with the reference in the accumulator (``score_ref="hi_lo"``, docs/precision.md §6):
    per query row chunk and KV block, S − R on the matrix unit (the augmented columns), τ at the
    conversion, P = exp(t) on the vector unit, P·[V − v̄, 1] on the matrix unit; no shifting matrix."""
    B, H, Hkv, G = sh.batch, sh.heads, sh.kv_heads, sh.group
    S1, S2, D, Dv = sh.seq_q, sh.seq_kv, sh.head_dim, sh.v_dim
    dev = q.device
    vd, mi, acc = prec.vector, prec.matmul_in, prec.matmul_acc
    cen = active_census()
    if cen is not None:
        cen.record("input", q, k, v)
    T = -(-S2 // n)
    qm = q.to(mi)
    if prec.scale == "q":
        qm = (qm.to(vd) * torch.tensor(tau, dtype=vd, device=dev)).to(mi)
    tau_ref = 1.0 if prec.scale == "q" else tau
    km = _pad_rows(k.to(mi), n, prec.kv_tail)
    vc, vbar = _center_v(v, prec)
    v_acc = _pad_rows(vc, n, prec.kv_tail).to(acc)
    if prec.row_sum == "matrix":  # ℓ from a ones column of the same product
        v_acc = torch.cat((v_acc, torch.ones_like(v_acc[..., :1])), dim=-1)
    v_acc = v_acc.view(B, Hkv, T, n, -1)
    bias = 0.0  # an additive mask moves the maxima, hence R, by up to max|mask| (in score units)
    if mask is not None and mask.dtype != torch.bool:
        finite = mask.abs()[torch.isfinite(mask)]  # −inf entries mask, they do not move R
        bias = float(finite.amax()) / tau_ref if finite.numel() else 0.0
    e_hi, e_lo = _ref_exponents(qm, km, prec, bias)
    k_acc = km.to(acc)
    renorm_at = _renorm_threshold(vc, prec, n) if prec.accum == "pow2" else math.inf
    masked = is_causal or mask is not None
    if mask is not None:
        mask = mask.expand(B, H, S1, S2)
    q5 = qm.view(B, Hkv, G, S1, D)
    out = torch.empty((B, H, S1, Dv), dtype=out_dtype, device=dev)
    out5 = out.view(B, Hkv, G, S1, Dv)
    for i0 in range(0, S1, block_q):
        r = min(block_q, S1 - i0)
        rows = G * r
        qi = q5[:, :, :, i0 : i0 + r].reshape(B, Hkv, rows, D).to(acc)
        state = _RefState(qi, prec, tau_ref, e_hi, e_lo, Dv, renorm_at, cen)
        nb_max = max(1, _TILE_ELEMENTS // (B * Hkv * rows * n))
        for j0 in range(0, T, nb_max):
            j1 = min(T, j0 + nb_max)
            s_acc = _mma(qi, k_acc[:, :, j0 * n : j1 * n].transpose(-1, -2), prec)
            for j in range(j0, j1):
                c0, c1 = j * n, (j + 1) * n
                masker = None
                if masked or c1 > S2:
                    masker = functools.partial(
                        _mask_block, at=(i0, r, c0, c1), sh=sh, causal=is_causal, mask=mask, vd=vd
                    )
                state.block(s_acc[..., c0 - j0 * n : c1 - j0 * n], masker, v_acc[:, :, j])
        o = state.result()
        if vbar is not None:  # add v̄ back (vector unit); rows that saw no key stay 0
            o = torch.where(state.lsum == 0, torch.zeros_like(o), o + vbar)
        out5[:, :, :, i0 : i0 + r] = o.view(B, Hkv, G, r, Dv).to(out_dtype)
    if cen is not None:
        cen.record("output", out)
    return out
