"""Argument validation shared by every attention entry point.

Bad input gets a ``TypeError`` or ``ValueError`` that names the argument and what was expected.
NaN and inf *values* are allowed (they are data, reported by :func:`pasa_npu.metrics.census`).
The rules for scale, β, block sizes and the BNSD layout are :mod:`pasa_theory.schema`'s, the same
that :func:`pasa_theory.predict` applies; this module adds the torch-specific checks (tensors,
dtypes, devices, masks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pasa_theory.schema import check_beta, check_block, check_bnsd, check_scale

__all__ = [
    "Shapes",
    "check_qkv",
    "check_positive_int",
    "check_scale",
    "check_beta",
    "check_mask",
    "check_out_dtype",
    "causal_keep",
]

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class Shapes:
    """Sizes of one attention call in BNSD layout."""

    batch: int
    heads: int
    kv_heads: int
    seq_q: int
    seq_kv: int
    head_dim: int
    v_dim: int

    @property
    def group(self) -> int:
        return self.heads // self.kv_heads


def check_qkv(q: object, k: object, v: object) -> Shapes:
    """Validate q, k, v (BNSD, floating, GQA-compatible) and return their sizes."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(
                f"{name} must be 4-D in BNSD layout (batch, heads, seq, head_dim), got shape {tuple(t.shape)}"
            )
        if t.dtype not in _FLOATS:
            raise TypeError(f"{name} must have a floating dtype in {_FLOATS}, got {t.dtype}")
    assert isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor)
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    B, H, Hkv, S1, S2, D, Dv = check_bnsd(q.shape, k.shape, v.shape)
    return Shapes(B, H, Hkv, S1, S2, D, Dv)


def check_positive_int(name: str, value: object) -> int:
    """A positive int argument (block sizes): :func:`pasa_theory.schema.check_block`."""
    return check_block(value, name)


def check_mask(attn_mask: object, is_causal: object, s: Shapes, device: torch.device) -> torch.Tensor | None:
    """Validate ``attn_mask`` (bool: True = attend, or additive float) against (B, H, S1, S2)."""
    if not isinstance(is_causal, bool):
        raise TypeError(f"is_causal must be a bool, got {type(is_causal).__name__}")
    if attn_mask is None:
        return None
    if not isinstance(attn_mask, torch.Tensor):
        raise TypeError(f"attn_mask must be a torch.Tensor or None, got {type(attn_mask).__name__}")
    if is_causal:
        raise ValueError("attn_mask and is_causal=True cannot both be given (as in torch SDPA)")
    if attn_mask.dtype != torch.bool and attn_mask.dtype not in _FLOATS:
        raise TypeError(
            f"attn_mask must be bool (True = attend) or floating (additive), got {attn_mask.dtype}"
        )
    target = (s.batch, s.heads, s.seq_q, s.seq_kv)
    if attn_mask.dim() > 4:
        raise ValueError(
            f"attn_mask must be broadcastable to (B, H, S1, S2) = {target}, got shape {tuple(attn_mask.shape)}"
        )
    shape = (1,) * (4 - attn_mask.dim()) + tuple(attn_mask.shape)
    if any(m not in (1, t) for m, t in zip(shape, target)):
        raise ValueError(
            f"attn_mask must be broadcastable to (B, H, S1, S2) = {target}, got shape {tuple(attn_mask.shape)}"
        )
    if attn_mask.device != device:
        raise ValueError(f"attn_mask must be on {device}, got {attn_mask.device}")
    return attn_mask.reshape(shape)


def check_out_dtype(out_dtype: object, default: torch.dtype) -> torch.dtype:
    if out_dtype is None:
        return default
    if out_dtype not in _FLOATS:
        raise TypeError(f"out_dtype must be one of {_FLOATS} or None, got {out_dtype!r}")
    assert isinstance(out_dtype, torch.dtype)
    return out_dtype


def causal_keep(rows: torch.Tensor, cols: torch.Tensor, seq_q: int, seq_kv: int) -> torch.Tensor:
    """Bottom-right aligned causal rule: query i may attend key j iff j <= i + (S2 - S1).

    This is the FlashAttention (>= 2.1) convention, the one that makes decode (S1 = 1) attend every
    key. torch SDPA's ``is_causal=True`` is top-left aligned for S1 != S2; the harness passes SDPA an
    explicit bottom-right mask instead.
    """
    return cols.unsqueeze(0) <= rows.unsqueeze(1) + (seq_kv - seq_q)
