"""Structural properties of the tiled kernel, checked bit for bit.

* rows are independent: ``block_q`` and the internal tile budget change speed and memory only;
* GQA shares K/V without changing a bit relative to repeated K/V (MHA);
* the padded KV tail is exactly a masked column: explicit padding plus a mask gives the same bits;
* power-of-two renormalised accumulators equal the unnormalised ones bit for bit when nothing
  overflows, and stay finite where the unnormalised ones overflow;
* the same call twice gives the same bits.
"""

from __future__ import annotations

import math

import pytest
import torch

import pasa_npu.kernel as kernel
from pasa_npu import PRESETS, data, flash_attention, metrics, pasa_attention

from .helpers import U16, ulp16


def _qkv(s1=300, s2=700, heads=8, kv_heads=2, d=64, mean=10.0, amp=5.0, dist="uniform", seed=5):
    return data.make_qkv(
        dist,
        batch=1,
        heads=heads,
        kv_heads=kv_heads,
        seq_q=s1,
        seq_kv=s2,
        head_dim=d,
        mean=mean,
        amplitude=amp,
        seed=seed,
    )


@pytest.mark.parametrize("preset", ["npu_fp16", "script", "fp16_strict", "bf16"])
@pytest.mark.parametrize("causal", [False, True])
def test_block_q_does_not_change_a_bit(preset, causal):
    q, k, v = _qkv()
    base = pasa_attention(q, k, v, precision=preset, is_causal=causal)
    for bq in (1, 7, 64, 1000):
        assert torch.equal(pasa_attention(q, k, v, precision=preset, is_causal=causal, block_q=bq), base), bq


def test_tile_budget_does_not_change_a_bit(monkeypatch):
    q, k, v = _qkv(s2=1025)
    keep = torch.rand((1, 8, 300, 1025), generator=torch.Generator().manual_seed(0)) > 0.2
    base = [pasa_attention(q, k, v), flash_attention(q, k, v), pasa_attention(q, k, v, attn_mask=keep)]
    monkeypatch.setattr(kernel, "_TILE_ELEMENTS", 1)  # one KV block per pass
    again = [pasa_attention(q, k, v), flash_attention(q, k, v), pasa_attention(q, k, v, attn_mask=keep)]
    for a, b in zip(base, again):
        assert torch.equal(a, b)


def test_query_rows_are_independent():
    q, k, v = _qkv(s1=1407)
    full = pasa_attention(q, k, v)
    part = pasa_attention(q[:, :, 100:197], k, v)
    assert torch.equal(full[:, :, 100:197], part)


def test_gqa_equals_repeated_kv():
    q, k, v = _qkv(heads=8, kv_heads=2)
    gqa = pasa_attention(q, k, v)
    mha = pasa_attention(q, k.repeat_interleave(4, dim=1), v.repeat_interleave(4, dim=1))
    assert torch.equal(gqa, mha)


@pytest.mark.parametrize("preset", ["npu_fp16", "script"])
@pytest.mark.parametrize("s2", [1407, 97, 1])
def test_padding_is_exactly_a_masked_column(preset, s2):
    q, k, v = _qkv(s1=50, s2=s2)
    prec = PRESETS[preset]
    n = 128
    pad = (-s2) % n
    kp, vp = kernel._pad_rows(k, n, prec.kv_tail), kernel._pad_rows(v, n, prec.kv_tail)
    keep = torch.ones((50, s2 + pad), dtype=torch.bool)
    keep[:, s2:] = False
    implicit = pasa_attention(q, k, v, precision=prec)
    explicit = pasa_attention(q, kp, vp, precision=prec, attn_mask=keep)
    assert torch.equal(implicit, explicit)


def test_padding_rules():
    x = torch.arange(5, dtype=torch.float32).view(1, 1, 5, 1)
    assert kernel._pad_rows(x, 4, "wrap").flatten().tolist() == [0, 1, 2, 3, 4, 2, 3, 4]
    assert kernel._pad_rows(x, 8, "wrap").flatten().tolist() == [0, 1, 2, 3, 4, 2, 3, 4]
    assert kernel._pad_rows(x, 16, "wrap").flatten().tolist()[5:] == [4, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    assert kernel._pad_rows(x, 8, "zero").flatten().tolist() == [0, 1, 2, 3, 4, 0, 0, 0]
    assert kernel._pad_rows(x, 8, "script").flatten().tolist() == [0, 1, 2, 3, 4, 0, 0, 0]  # S2 < n: zeros
    assert kernel._pad_rows(x, 4, "script").flatten().tolist() == [0, 1, 2, 3, 4, 2, 3, 4]  # last rows


@pytest.mark.parametrize("mean,amp", [(10.0, 0.5), (30.0, 5.0), (20.0, 20.0)])
def test_pow2_accumulators_equal_raw_bit_for_bit(mean, amp):
    q, k, v = _qkv(s1=200, s2=1407, mean=mean, amp=amp)
    raw = PRESETS["npu_fp16"].replace(accum="raw")
    a = pasa_attention(q, k, v)
    b = pasa_attention(q, k, v, precision=raw)
    assert torch.isfinite(b).all()
    assert torch.equal(a, b), metrics.error_summary(a, b)


def test_long_biased_v_stays_finite_with_npu_fp16_and_overflows_raw():
    q, k, v = data.make_biased_v(seq_kv=8192, seq_q=64, heads=2, kv_heads=2)
    golden = __import__("pasa_npu").golden_attention(q, k, v)
    with metrics.census() as c_ok:
        out = pasa_attention(q, k, v)
    assert c_ok.total == 0 and torch.isfinite(out).all()
    rel = metrics.relative_rmse_out(out, golden)
    assert rel < 4 * U16, f"relative RMSE {rel:.2e}"
    for prec in ("script", PRESETS["npu_fp16"].replace(accum="raw")):
        with metrics.census() as c_bad:
            bad = pasa_attention(q, k, v, precision=prec)
        assert not torch.isfinite(bad).all()
        assert c_bad.first_stage == "accumulator", str(c_bad)


def test_same_call_same_bits():
    q, k, v = _qkv(dist="hybrid", amp=10.0)
    assert torch.equal(pasa_attention(q, k, v), pasa_attention(q, k, v))


def test_pairwise_row_sum_is_a_binary_tree_in_fp16():
    import numpy as np

    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 5, 8, 13, 128, 200):
        x = (torch.rand((4, n), generator=g) * 100).half()

        def tree(vals):  # independent: numpy float16 adds round every partial sum
            vals = list(vals) + [np.float16(0)] * ((1 << (len(vals) - 1).bit_length()) - len(vals))
            while len(vals) > 1:
                h = len(vals) // 2
                vals = [np.float16(vals[i] + vals[i + h]) for i in range(h)]
            return vals[0]

        want = torch.tensor([float(tree(row.numpy())) for row in x], dtype=torch.float16)
        got = kernel._row_sum(x, PRESETS["fp16_strict"]).flatten()
        assert torch.equal(got, want), n


def test_acc_row_reductions_round_once_from_fp32():
    g = torch.Generator().manual_seed(1)
    x = (torch.rand((64, 11, 128), generator=g) * 300 - 100).half()
    p = PRESETS["npu_fp16"]
    assert torch.equal(kernel._row_sum(x, p), x.double().sum(-1, keepdim=True).float().half())
    assert torch.equal(kernel._row_mean(x, p), (x.double().sum(-1, keepdim=True) / 128).float().half())


def test_shifted_keys_are_the_rounded_product_of_the_rounded_matrix():
    from fractions import Fraction

    import pasa_theory
    from pasa_npu.kernel import shift_parameters, shifted_keys

    k = data.make_qkv(
        "uniform", batch=1, heads=2, kv_heads=2, seq_q=1, seq_kv=256, head_dim=16, mean=30, amplitude=5
    )[1]
    sp = shift_parameters("npu_fp16", head_dim=16)
    diag, off = pasa_theory.shifting_entries("fp16", 128, sp.beta, scale=16**-0.5)
    assert (sp.diag, sp.off) == (float(diag), float(off))  # the entries come from the theory
    kt = shifted_keys(k)
    # independent float64 product with the same rounded entries, rounded once to fp16
    kb = k.double().view(1, 2, 2, 128, 16)
    exact = float(diag) * kb + float(off) * (kb.sum(dim=3, keepdim=True) - kb)
    want = exact.view(1, 2, 256, 16).half()
    # model: fp32 accumulation of n = 128 products (Higham: |error| <= gamma_n(u32)·Σ|terms|), then
    # one fp16 rounding (half an ulp)
    abs_terms = abs(float(diag)) * kb.abs() + abs(float(off)) * (kb.abs().sum(dim=3, keepdim=True) - kb.abs())
    n_u32 = 128 * 2.0**-24
    bound = (n_u32 / (1 - n_u32)) * abs_terms.view(1, 2, 256, 16) + 0.5 * ulp16(exact.view(1, 2, 256, 16))
    err = (kt.double() - exact.view(1, 2, 256, 16)).abs()
    assert bool((err <= bound).all()), f"worst err/bound {float((err / bound).max()):.3f}"
    assert float((kt != want).double().mean()) < 0.05  # usually the correctly rounded value
    assert Fraction(float(diag)) == diag


def test_shift_removes_the_bias_from_the_score_tile():
    from pasa_npu.kernel import shifted_keys

    q, k, _ = data.make_qkv(
        "uniform", batch=1, heads=1, kv_heads=1, seq_q=8, seq_kv=128, head_dim=128, mean=30, amplitude=0.5
    )
    raw = (q.double() @ k.double().transpose(-1, -2)) / 128**0.5
    shifted = q.double() @ shifted_keys(k).double().transpose(-1, -2)
    assert float(raw.abs().max()) > 10000 and float(shifted.abs().max()) < 0.05 * float(raw.abs().max())


@pytest.mark.parametrize(
    "vmax,expected", [(30.0, 512.0), (1e-3, 16384.0), (250.0, 2.0), (float("inf"), 2.0), (0.0, 16384.0)]
)
def test_pow2_renormalisation_threshold(vmax, expected):
    v = torch.full((1, 1, 4, 8), vmax, dtype=torch.float16)
    t = kernel._renorm_threshold(v, PRESETS["npu_fp16"], 128)
    assert t == expected
    if math.isfinite(vmax) and t > 2:
        assert (t + 128) * vmax <= 65504 / 2 < (2 * t + 128) * vmax or t == 16384


def test_large_values_near_the_tile_limit_stay_finite_at_long_sequences():
    # V ~ 250: the P·V tile reaches 128 * 250 = 32000 < 65504, the unnormalised O reaches 250 * S2
    q, k, v = data.make_biased_v(seq_kv=4096, seq_q=16, heads=1, kv_heads=1, v_mean=250.0, v_amplitude=2.0)
    with metrics.census() as c:
        out = pasa_attention(q, k, v)
    assert c.total == 0 and torch.isfinite(out).all()
    raw = pasa_attention(q, k, v, precision=PRESETS["npu_fp16"].replace(accum="raw"))
    assert not torch.isfinite(raw).all()
