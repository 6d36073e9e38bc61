"""Overflow at constructed boundaries, and PASA's protection from it.

fp16's largest finite value is 65504; under round-to-nearest-even a value overflows to inf iff
|x| >= 65520 = 65504 + ulp/2 (a tie, broken towards the even "65536"). The vendor-style flash
attention (QKᵀ rounded before scaling) must overflow exactly there; PASA must not overflow at all.
"""

from __future__ import annotations

import pytest
import torch

from pasa_npu import data, golden_attention, metrics, pasa_attention
from pasa_npu.methods import run_method

from .helpers import two_term_scores


@pytest.mark.parametrize(
    "k1,overflows", [(0.0, False), (15.0, False), (15.5, False), (16.0, True), (17.0, True)]
)
def test_fa_qk_overflows_exactly_at_the_fp16_rounding_threshold(k1, overflows):
    q, k, v = two_term_scores(255.875, k1)  # 256 * 255.875 = 65504
    exact = 65504.0 + k1
    assert (abs(exact) >= 65520.0) == overflows
    with metrics.census() as c:
        out = run_method("fa_qk", q, k, v, block_kv=4)
    assert (c.first_stage == "scores") == overflows, str(c)
    assert bool(torch.isfinite(out).all()) != overflows
    with metrics.census() as c:
        out = run_method("pasa", q, k, v, block_kv=4)
    assert c.total == 0 and torch.isfinite(out).all()


def test_pasa_survives_where_every_unshifted_fp16_arrangement_overflows():
    # mean 90, d = 128: tau * q.k ~ 128 * 8100 / sqrt(128) = 91640 > 65504 even with Q pre-scaled.
    q, k, v = data.make_qkv(
        "uniform", batch=1, heads=2, kv_heads=1, seq_q=64, seq_kv=300, head_dim=128, mean=90, amplitude=0.5
    )
    golden = golden_attention(q, k, v)
    for m in ("fa_qk", "fa_q", "fa_naive"):
        with metrics.census() as c:
            out = run_method(m, q, k, v)
        assert not torch.isfinite(out).all() and c.first_stage == "scores", (m, str(c))
    with metrics.census() as c:
        out = run_method("pasa", q, k, v)
    assert c.total == 0, str(c)
    assert metrics.relative_rmse(out, golden, v) < 0.05


def test_a_pure_fp16_row_sum_caps_the_range_of_the_pseudo_average():
    # fp16_strict adds the block row sums pairwise in fp16: the sum of n = 128 shifted scores
    # (each ~ (1 − β)·τ·q·k ≈ 0.026 · 128 · 60² / sqrt(128) ≈ 850 at mean 60) passes 65504 although
    # every score and the mean are representable; with a wide accumulator (npu_fp16) it does not.
    q, k, v = data.make_qkv(
        "uniform", batch=1, heads=2, kv_heads=1, seq_q=64, seq_kv=300, head_dim=128, mean=60, amplitude=0.5
    )
    with metrics.census() as strict:
        pasa_attention(q, k, v, precision="fp16_strict")
    with metrics.census() as wide:
        pasa_attention(q, k, v, precision="npu_fp16")
    assert strict.first_stage == "shift", str(strict)
    assert wide.total == 0, str(wide)
