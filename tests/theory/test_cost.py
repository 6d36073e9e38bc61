"""The tile cost model (pasa_theory.cost, docs/beyond.md §2): counts computed by hand here."""

from __future__ import annotations

import pytest

from pasa_theory import cost


def test_fa_fp16_by_hand():
    # 128 x 128 tile, d = dv = 128: QKᵀ and P·V 2·128³ each; 5 ops per score, 5 per row, 2 per O element;
    # fp16 scores (128² · 2 bytes) and P·V (128² · 2 bytes) to the vector unit
    c = cost.tile_costs("fa_fp16")
    assert c.matrix_flops == 8_388_608
    assert c.vector_ops == 81_920 + 640 + 32_768
    assert c.bytes_to_vector == 65_536


def test_fa_hybrid_by_hand():
    c = cost.tile_costs("fa_hybrid")
    assert c.matrix_flops == 8_388_608
    assert c.vector_ops == 98_304 + 640 + 32_768  # one more op per score: P to fp16
    assert c.bytes_to_vector == 131_072  # fp32 scores and P·V


def test_pasa_by_hand():
    # K̃ = M·K: 2·128·128·128 = 4_194_304 per KV block, shared by 11 query tiles
    c = cost.tile_costs("pasa")
    assert c.matrix_flops == pytest.approx(8_388_608 + 4_194_304 / 11, rel=1e-15)
    assert c.vector_ops == 81_920 + 1_024 + 32_768
    assert c.bytes_to_vector == 65_536


def test_fp16_accurate_by_hand():
    # no repeat (kv_blocks large, no recompute): QKᵀ with d + 16 = 144, P·V with dv + 16 = 144
    c = cost.tile_costs("fp16_accurate", kv_blocks=10**9, recompute_fraction=0.0, flush_fraction=0.0)
    assert c.matrix_flops == pytest.approx(2 * 16_384 * 144 * 2, rel=1e-8)
    assert c.vector_ops == pytest.approx(2 * 16_384 + 768, rel=1e-8)
    assert c.bytes_to_vector == pytest.approx(32_768, rel=1e-8)
    # first pass (1/11), 10 % recomputed, flushes 0.1 + 1/11 of the tiles
    c = cost.tile_costs("fp16_accurate", recompute_fraction=0.1)
    extra = 0.1 + 1 / 11
    assert c.matrix_flops == pytest.approx((1 + extra) * 2 * 16_384 * 144 + 2 * 16_384 * 144, rel=1e-12)
    assert c.vector_ops == pytest.approx((2 + extra) * 16_384 + 768 + extra * 2 * 128 * 128, rel=1e-12)
    assert c.bytes_to_vector == pytest.approx((1 + extra) * 32_768 + extra * 2 * 128 * 144, rel=1e-12)


def test_padding_granule():
    # one augmented column costs a whole granule: pad 16 -> +16 columns, pad 1 -> +2 and +1
    a = cost.tile_costs("fp16_accurate", kv_blocks=10**9, flush_fraction=0.0, pad=1)
    assert a.matrix_flops == pytest.approx(2 * 16_384 * 130 + 2 * 16_384 * 129, rel=1e-8)


def test_table_and_checks():
    assert [c.arrangement for c in cost.cost_table()] == list(cost.ARRANGEMENTS)
    with pytest.raises(ValueError, match="arrangement"):
        cost.tile_costs("fa_bf16")
    with pytest.raises(ValueError, match="recompute_fraction"):
        cost.tile_costs("fp16_accurate", recompute_fraction=1.5)
    with pytest.raises(TypeError, match="block_q"):
        cost.tile_costs("pasa", block_q=1.5)
