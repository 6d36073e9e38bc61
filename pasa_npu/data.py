"""Data generators: the reference benchmark's distributions and stress cases of the field.

:func:`make_qkv` reproduces the public reference script's ``gendata`` exactly: the same formulas,
the same RNG calls in the same order (Python ``random``, NumPy and torch seeded with the same seed;
Q, then K, then V), drawn in float32 and then cast to ``dtype``. The same seed therefore gives the
same tensors as the script.

Distributions (design decision D12: ``amplitude`` of the hybrid case is a standard deviation, as in
the script; FA3's "N(0,100)" outliers correspond to amplitude = 10):

* ``"uniform"``: x = (U[0,1) − 0.5)·2·amplitude + mean.
* ``"hybrid"``: x = N(mean, 1) + N(0, amplitude)·Bernoulli(p = 0.001).

Stress cases used by tests, benchmarks and notebooks: :func:`make_biased_v` (long sequence, biased
V), :func:`make_resonant` (Q and K phase-aligned or anti-aligned along the head dimension).
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["make_qkv", "make_biased_v", "make_resonant", "DISTRIBUTIONS", "REFERENCE_SEED", "REFERENCE_SHAPE"]

DISTRIBUTIONS = ("uniform", "hybrid")
#: The reference script's seed.
REFERENCE_SEED = 2024724
#: The reference benchmark's shape: batch 1, 28 query heads, 4 KV heads, S = 1280 + 127, d = 128.
REFERENCE_SHAPE = dict(batch=1, heads=28, kv_heads=4, seq_q=1407, seq_kv=1407, head_dim=128)


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_float(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def make_qkv(
    dist: str,
    *,
    batch: int,
    heads: int,
    kv_heads: int,
    seq_q: int,
    seq_kv: int,
    head_dim: int,
    mean: float,
    amplitude: float,
    seed: int = REFERENCE_SEED,
    dtype: torch.dtype = torch.float16,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q (batch, heads, seq_q, head_dim), K and V (batch, kv_heads, seq_kv, head_dim), on the CPU.

    Same formulas and RNG call order as the reference script's ``gendata``; drawn in float32, then
    cast to ``dtype`` (the script uses bfloat16; fp16 is the default here).
    """
    if dist not in DISTRIBUTIONS:
        raise ValueError(f"dist must be one of {DISTRIBUTIONS}, got {dist!r}")
    _check_sizes(batch=batch, heads=heads, kv_heads=kv_heads, seq_q=seq_q, seq_kv=seq_kv, head_dim=head_dim)
    if heads % kv_heads:
        raise ValueError(f"heads ({heads}) must be a multiple of kv_heads ({kv_heads})")
    mean = _check_float("mean", mean)
    amplitude = _check_float("amplitude", amplitude)
    if amplitude < 0:
        raise ValueError(f"amplitude must be >= 0, got {amplitude}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    qs = (batch, heads, seq_q, head_dim)
    ks = (batch, kv_heads, seq_kv, head_dim)
    f32 = torch.float32
    # In-place operations in the script's order ((r − 0.5)·2·A + mean, each rounded in fp32), and
    # each tensor cast before the next is drawn: the same values with a third of the peak memory.
    out = []
    for shape in (qs, ks, ks):
        if dist == "uniform":
            x = torch.rand(shape, dtype=f32).sub_(0.5).mul_(2.0).mul_(amplitude).add_(mean)
        else:
            x = torch.normal(mean, 1.0, size=shape, dtype=f32)
            outlier = torch.normal(0.0, amplitude, size=shape, dtype=f32)
            x.add_(outlier.mul_(torch.from_numpy(np.random.binomial(size=shape, n=1, p=0.001))))
            del outlier
        out.append(x.to(dtype))
        del x
    q, k, v = out
    return q, k, v


def make_biased_v(
    *,
    seq_kv: int = 8192,
    seq_q: int = 128,
    heads: int = 4,
    kv_heads: int = 4,
    head_dim: int = 128,
    qk_amplitude: float = 0.05,
    v_mean: float = 30.0,
    v_amplitude: float = 0.5,
    seed: int = 0,
    dtype: torch.dtype = torch.float16,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearly uniform attention over a long, biased V (|q|, |k| small; V ≈ v_mean ± v_amplitude).

    The unnormalised accumulator O of a flash kernel grows to ≈ v_mean·S2, which passes fp16's
    65504 at S2 ≈ 2200 for v_mean = 30 (docs/precision.md §2.4).
    """
    _check_sizes(seq_kv=seq_kv, seq_q=seq_q, heads=heads, kv_heads=kv_heads, head_dim=head_dim)
    g = torch.Generator().manual_seed(seed)
    q = (torch.rand((1, heads, seq_q, head_dim), generator=g) - 0.5) * 2 * qk_amplitude
    k = (torch.rand((1, kv_heads, seq_kv, head_dim), generator=g) - 0.5) * 2 * qk_amplitude
    v = (torch.rand((1, kv_heads, seq_kv, head_dim), generator=g) - 0.5) * 2 * v_amplitude + v_mean
    return q.to(dtype), k.to(dtype), v.to(dtype)


def make_resonant(
    *,
    phase: str = "aligned",
    seq_q: int = 256,
    seq_kv: int = 256,
    heads: int = 4,
    kv_heads: int = 4,
    head_dim: int = 128,
    amplitude: float = 20.0,
    frequency: float = 3.0,
    noise: float = 0.5,
    bias: float = 0.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float16,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q and K sharing one sinusoid along the head dimension ("resonance", docs/method.md §8).

    ``phase="aligned"`` (0°) gives k ≈ q, ``"anti"`` (180°) gives k ≈ −q, ``"random"`` draws an
    independent phase per token (the non-resonant control). Every token carries the pattern with a
    random amplitude in [0.5, 1]·amplitude plus N(0, noise) noise and an optional common ``bias``.
    Scores then scale like τ·amplitude²·d/2 (coherent) instead of τ·amplitude²·√d (incoherent).
    """
    if phase not in ("aligned", "anti", "random"):
        raise ValueError(f"phase must be 'aligned', 'anti' or 'random', got {phase!r}")
    _check_sizes(seq_q=seq_q, seq_kv=seq_kv, heads=heads, kv_heads=kv_heads, head_dim=head_dim)
    g = torch.Generator().manual_seed(seed)
    i = torch.arange(head_dim, dtype=torch.float64)

    def tokens(n_heads: int, seq: int, sign: float, random_phase: bool) -> torch.Tensor:
        amp = amplitude * (0.5 + 0.5 * torch.rand((1, n_heads, seq, 1), generator=g, dtype=torch.float64))
        ph = (
            torch.rand((1, n_heads, seq, 1), generator=g, dtype=torch.float64) * 2 * torch.pi
            if random_phase
            else torch.zeros((1, n_heads, seq, 1), dtype=torch.float64)
        )
        wave = torch.sin(2 * torch.pi * frequency * i / head_dim + ph)
        eps = noise * torch.randn((1, n_heads, seq, head_dim), generator=g, dtype=torch.float64)
        return sign * amp * wave + eps + bias

    q = tokens(heads, seq_q, 1.0, phase == "random")
    k = tokens(kv_heads, seq_kv, -1.0 if phase == "anti" else 1.0, phase == "random")
    v = torch.randn((1, kv_heads, seq_kv, head_dim), generator=g, dtype=torch.float64)
    return q.to(dtype), k.to(dtype), v.to(dtype)
