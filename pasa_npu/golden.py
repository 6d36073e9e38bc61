"""The float64 golden: softmax attention on the given (already rounded) inputs.

Deliberately plain and independent of the tiled kernel: one score matrix per row chunk, the
textbook max-subtracted softmax, everything in float64. Chunking over query rows only bounds memory
(rows are independent), it does not change the arithmetic.

The golden is always computed on the CPU: the inputs are copied there first, whatever device they
live on, because accelerators such as Ascend NPUs have no float64 arithmetic. The result is a CPU
float64 tensor; :mod:`pasa_npu.metrics` compares outputs from any device with it.
"""

from __future__ import annotations

import torch

from . import _checks

__all__ = ["golden_attention"]

_CHUNK_ELEMENTS = 1 << 24


def golden_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    attn_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax attention in float64 on the inputs as given (BNSD, GQA by head groups).

    Masks follow :func:`pasa_npu.pasa_attention`: bool True = attend, float = additive, causal is
    bottom-right aligned; a row with no visible key returns 0. Returns float64 on the CPU, whatever
    the inputs' device (computed there: no float64 is needed on an accelerator).
    """
    sh = _checks.check_qkv(q, k, v)
    tau = _checks.check_scale(scale, sh.head_dim)
    cpu = torch.device("cpu")
    if q.device != cpu or k.device != cpu or v.device != cpu:
        q, k, v = (t.detach().to(cpu) for t in (q, k, v))
        if isinstance(attn_mask, torch.Tensor):
            attn_mask = attn_mask.detach().to(cpu)
    mask = _checks.check_mask(attn_mask, is_causal, sh, q.device)
    B, H, Hkv, G, S1, S2 = sh.batch, sh.heads, sh.kv_heads, sh.group, sh.seq_q, sh.seq_kv
    q64 = q.to(torch.float64).view(B, Hkv, G, S1, sh.head_dim)
    k64 = k.to(torch.float64)
    v64 = v.to(torch.float64)
    if mask is not None:
        mask = mask.expand(B, H, S1, S2).reshape(B, Hkv, G, S1, S2)
    out = torch.empty((B, Hkv, G, S1, sh.v_dim), dtype=torch.float64, device=q.device)
    step = max(1, _CHUNK_ELEMENTS // (B * H * S2))
    cols = torch.arange(S2, device=q.device)
    for i0 in range(0, S1, step):
        i1 = min(S1, i0 + step)
        s = torch.einsum("bhgid,bhjd->bhgij", q64[:, :, :, i0:i1], k64) * tau
        if is_causal:
            keep = _checks.causal_keep(torch.arange(i0, i1, device=q.device), cols, S1, S2)
            s = s.masked_fill(~keep, float("-inf"))
        if mask is not None:
            tile = mask[..., i0:i1, :]
            s = (
                s.masked_fill(~tile, float("-inf"))
                if tile.dtype == torch.bool
                else s + tile.to(torch.float64)
            )
        mx = s.amax(dim=-1, keepdim=True)
        mx = torch.where(torch.isneginf(mx), torch.zeros_like(mx), mx)
        p = torch.exp(s - mx)
        denom = p.sum(dim=-1, keepdim=True)
        o = torch.einsum("bhgij,bhjd->bhgid", p, v64)
        out[:, :, :, i0:i1] = torch.where(denom == 0, torch.zeros_like(o), o / denom)
    return out.view(B, H, S1, sh.v_dim)
