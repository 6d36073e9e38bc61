"""Yardsticks written separately from the kernel, to judge it.

:func:`attention_ref`
    Plain untiled softmax attention at one precision, in the style of FlashAttention's test reference
    ``attention_ref(upcast, reorder_ops)``: the whole score matrix at once, no blocks, no online
    statistics, no shift. It is the same-precision baseline of the FlashAttention accuracy rule
    ("at most twice the error of the naive attention in the same precision"). It shares no code with
    :mod:`pasa_npu.kernel`.
:func:`tile_loop_attention`
    The ``npu_fp16`` arrangement of PASA written as a readable loop: one query row chunk of one head, one
    KV block at a time, every step of docs/precision.md §2 in order, no buffers, no multi-block tiles, no
    GQA sharing. The vectorised kernel must equal it bit for bit (tests/npu/test_yardsticks.py).

Both model the hardware of docs/precision.md §1 the same way the kernel does (a matrix product
accumulates in fp32 and rounds once; an element-wise fp16 operation is computed in fp32 and rounded
once; row reductions accumulate in fp32 and round once), because that model is the definition being
checked; everything else is written from the method description, not from the kernel.
"""

from __future__ import annotations

import math

import torch

from pasa_theory import policies
from pasa_theory.schema import check_beta, check_block, check_bnsd, check_scale

__all__ = ["attention_ref", "tile_loop_attention"]


def _matmul(a: torch.Tensor, b: torch.Tensor, out: torch.dtype) -> torch.Tensor:
    """Matrix unit: operands as given, fp32 accumulation (fp64 for fp64 operands), one rounding to ``out``."""
    acc = torch.float64 if a.dtype == torch.float64 else torch.float32
    return torch.matmul(a.to(acc), b.to(acc)).to(out)


def _keep_mask(
    S1: int,
    S2: int,
    is_causal: bool,
    attn_mask: torch.Tensor | None,
    shape: tuple[int, ...],
    device: torch.device,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(boolean keep mask, additive mask), both broadcast to ``shape`` = (B, H, S1, S2), or None."""
    keep = None
    if is_causal:
        rows = torch.arange(S1, device=device)[:, None]
        cols = torch.arange(S2, device=device)[None, :]
        keep = (cols <= rows + (S2 - S1)).expand(shape)  # bottom-right aligned (FlashAttention >= 2.1)
    bias = None
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            keep = attn_mask.expand(shape) if keep is None else keep & attn_mask.expand(shape)
        else:
            bias = attn_mask.expand(shape)
    return keep, bias


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    attn_mask: torch.Tensor | None = None,
    upcast: bool = False,
    reorder_ops: bool = True,
) -> torch.Tensor:
    """Untiled softmax attention computed in q's dtype (or in fp32 with ``upcast=True``).

    ``reorder_ops=True`` pre-scales Q by τ (one rounding) before QKᵀ; ``False`` rounds QKᵀ first and
    applies τ to the rounded scores (the arrangement that overflows fp16 once |q·k| > 65504). Then
    m = rowmax, P = fl(exp(fl(S − m))), ℓ = rowsum(P) (wide accumulator, one rounding), O = fl(P·V)
    (matrix unit) and the output fl(O/ℓ), cast to q's dtype. GQA by head groups; masks as
    :func:`pasa_npu.pasa_attention` (bool True = attend, float additive, rows without a key give 0).
    """
    B, H, Hkv, S1, S2, D, Dv = check_bnsd(q.shape, k.shape, v.shape)
    tau = check_scale(scale, D)
    dt = torch.float32 if upcast else q.dtype
    G = H // Hkv
    qd, kd, vd = q.to(dt), k.to(dt), v.to(dt)
    kd = kd.repeat_interleave(G, dim=1)
    vd = vd.repeat_interleave(G, dim=1)
    t = torch.tensor(tau, dtype=dt)
    if reorder_ops:
        s = _matmul(qd * t, kd.transpose(-1, -2), dt)
    else:
        s = _matmul(qd, kd.transpose(-1, -2), dt) * t
    keep, bias = _keep_mask(S1, S2, is_causal, attn_mask, (B, H, S1, S2), q.device)
    if keep is not None:
        s = s.masked_fill(~keep, float("-inf"))
    if bias is not None:
        s = s + bias.to(dt)
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
    p = torch.exp(s - m)
    ell = p.sum(dim=-1, keepdim=True)
    o = _matmul(p, vd, dt)
    out = torch.where(ell == 0, torch.zeros_like(o), o / ell)
    return out.to(q.dtype)


def _renorm_at(vmax: float, n: int) -> float:
    """The pow2 accumulators' renormalisation threshold (docs/precision.md §2.4): the largest power of two T
    in [2, 2¹⁴] with (T + n)·max|V| <= 65504/2, so that neither ℓ nor O can overflow in between."""
    if not math.isfinite(vmax):
        return 2.0
    room = 65504.0 / 2 / max(vmax, 1e-30) - n
    if room < 2:
        return 2.0
    return float(2 ** min(14, math.floor(math.log2(room))))


def tile_loop_attention(
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
) -> torch.Tensor:
    """PASA with the ``npu_fp16`` preset, one row chunk of one head and one KV block at a time.

    fp16 operands, fp32 accumulation and fp16 results on the matrix unit; fp16 vector unit; τ folded into
    M; c from the rounded matrix (κ = 0, :mod:`pasa_theory`); centred pseudo-averages; the lazy offset
    re-centred past |δ| > 16; power-of-two renormalised O and ℓ; the last KV block filled with the
    preceding real keys (masked). Returns fp16 (q's dtype).
    """
    B, H, Hkv, S1, S2, D, Dv = check_bnsd(q.shape, k.shape, v.shape)
    tau = check_scale(scale, D)
    n = check_block(block_kv, "block_kv")
    bq = check_block(block_q, "block_q")
    beta = check_beta(beta)
    f16, f32 = torch.float16, torch.float32
    G = H // Hkv
    consts = policies.shift_constants(policies.resolve("pasa", "npu_fp16"), n, beta, tau)
    c = torch.tensor(consts.c, dtype=f16)
    recenter = torch.tensor(16.0, dtype=f16)
    # the shifting matrix M_σ, rounded once to fp16 (entries from pasa_theory)
    M = torch.full((n, n), consts.off, dtype=torch.float64)
    M.fill_diagonal_(consts.diag)
    M = M.to(f16)
    T = -(-S2 // n)
    pad = T * n - S2
    # the tail block is filled with the preceding real keys (cyclically if S2 < pad); masked below
    idx = torch.cat([torch.arange(S2), torch.arange(S2 - pad, S2) % S2])
    kp, vp = k.to(f16)[:, :, idx], v.to(f16)[:, :, idx]
    keep, bias = _keep_mask(S1, S2, is_causal, attn_mask, (B, H, S1, S2), q.device)
    renorm_at = _renorm_at(float(v.abs().amax()), n)
    max_shift = 14 + 10  # 2^-t must stay an fp16 value: 2^-24 is the least
    out = torch.empty((B, H, S1, Dv), dtype=f16)
    for b in range(B):
        for h in range(H):
            hk = h // G  # the KV head of query head h (GQA)
            kt = [_matmul(M.t(), kp[b, hk, j * n : (j + 1) * n], f16) for j in range(T)]  # K̃_j = M_σᵀ K_j
            for i0 in range(0, S1, bq):
                i1 = min(S1, i0 + bq)
                qi = q[b, h, i0:i1].to(f16)
                r = i1 - i0
                m = torch.full((r, 1), float("-inf"), dtype=f16)
                ell = torch.zeros((r, 1), dtype=f16)
                o = torch.zeros((r, Dv), dtype=f16)
                a = phi = None  # the offset A and the frame of the held maximum
                t_acc = down = None  # pow2 scale 2^-t of the stored (ℓ, O)
                for j in range(T):
                    c0, c1 = j * n, (j + 1) * n
                    s = _matmul(qi, kt[j].t(), f16)  # a: S̃ = Q_i K̃_jᵀ
                    mean = s.mean(dim=-1, keepdim=True, dtype=f32)  # b: block mean, before any mask
                    # c: padded columns, causal and boolean masks to −inf; additive mask in fp16
                    real = torch.arange(c0, c1) < S2
                    keep_j = real.expand(r, n).clone()
                    if keep is not None:
                        kk = torch.zeros((r, n), dtype=torch.bool)
                        kk[:, real] = keep[b, h, i0:i1, c0 : min(c1, S2)]
                        keep_j &= kk
                    s = s.masked_fill(~keep_j, float("-inf"))
                    if bias is not None:
                        bb = torch.zeros((r, n), dtype=f16)
                        bb[:, real] = bias[b, h, i0:i1, c0 : min(c1, S2)].to(f16)
                        s = s + bb
                    # d: block-local statistics
                    mj = s.amax(dim=-1, keepdim=True)
                    ref = torch.where(torch.isneginf(mj), torch.zeros_like(mj), mj)
                    p = torch.exp(s - ref)
                    lj = p.sum(dim=-1, keepdim=True)
                    pv = _matmul(p, vp[b, hk, c0:c1], f16)
                    # e–f: offset of this block from A, rounded once from the wide mean (centred)
                    first = a is None
                    if first:
                        a = mean.to(f16)
                    e = (mean - a.to(f32)).to(f16)
                    dj = e * c
                    if first:
                        phi = torch.zeros_like(dj)
                    else:
                        far = dj.abs() > recenter  # re-centre A on this block where the offset is large
                        if bool(far.any()):
                            a_new = torch.where(far, a + e, a)
                            delta = a_new - a
                            dj = torch.where(far, (e - delta) * c, dj)
                            phi = torch.where(far, phi - delta * c, phi)
                            a = a_new
                    # g: compare this block's maximum with the held one, in the held frame
                    x = (mj - m) + (dj - phi)
                    x = torch.where(torch.isnan(x), torch.full_like(x, float("-inf")), x)
                    take = x > 0
                    alpha = torch.exp(torch.clamp(-x, max=0.0))
                    gamma = torch.exp(torch.clamp(x, max=0.0))
                    m = torch.where(take, mj, m)
                    phi = torch.where(take, dj, phi)
                    # h: fold the block into (ℓ, O), at the stored power-of-two scale
                    l_in, o_in = gamma * lj, gamma * pv
                    if down is not None:
                        l_in, o_in = l_in * down, o_in * down
                    ell = alpha * ell + l_in
                    o = alpha * o + o_in
                    if bool((ell >= renorm_at).any()):
                        _, ex = torch.frexp(ell.float())
                        sh = torch.where((ell > 0) & torch.isfinite(ell), ex - 1, torch.zeros_like(ex))
                        t_acc = sh if t_acc is None else t_acc + sh
                        if int(t_acc.max()) > max_shift:
                            raise OverflowError("pow2 accumulators left fp16's range")
                        f = torch.exp2(-sh.to(f32)).to(f16)
                        ell, o = ell * f, o * f
                        down = torch.exp2(-t_acc.to(f32)).to(f16)
                res = o / ell
                res = torch.where(ell == 0, torch.zeros_like(res), res)
                out[b, h, i0:i1] = res
    return out.to(q.dtype)
