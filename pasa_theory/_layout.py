"""The BNSD shape rules of an attention call, shared by :mod:`pasa_theory.bounds` and ``pasa_npu``
(torch-free: it reads shapes as tuples)."""
from __future__ import annotations

from collections.abc import Sequence


def check_bnsd(q_shape: Sequence[int], k_shape: Sequence[int], v_shape: Sequence[int]) -> tuple[int, ...]:
    """Check that 4-D q, k, v shapes (batch, heads, seq, head_dim) form one attention call (same batch,
    k and v with the same heads and length, q and k with the same head dim, no empty dimension, q heads
    a multiple of the k/v heads) and return ``(B, H, Hkv, S1, S2, D, Dv)``; ``ValueError`` otherwise."""
    q_shape, k_shape, v_shape = tuple(q_shape), tuple(k_shape), tuple(v_shape)
    B, H, S1, D = q_shape
    Bk, Hkv, S2, Dk = k_shape
    Bv, Hv, S2v, Dv = v_shape
    if Bk != B or Bv != B:
        raise ValueError(f"batch sizes differ: q {B}, k {Bk}, v {Bv}")
    if Hv != Hkv or S2v != S2:
        raise ValueError(f"k and v must agree in heads and sequence length, got k {k_shape} and v {v_shape}")
    if Dk != D:
        raise ValueError(f"head dims differ: q has {D}, k has {Dk}")
    if min(B, H, S1, D, Hkv, S2, Dv) < 1:
        raise ValueError(f"empty dimension: q {q_shape}, k {k_shape}, v {v_shape}")
    if H % Hkv:
        raise ValueError(f"q heads ({H}) must be a multiple of k/v heads ({Hkv}) for GQA/MQA")
    return B, H, Hkv, S1, S2, D, Dv
