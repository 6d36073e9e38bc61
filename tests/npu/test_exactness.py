"""With precision="fp64" every method is softmax attention: equal to golden_attention to <= 1e-12
relative (max|err| / max|golden|), over ragged S1/S2, GQA groups 1/4/7, causal, masks and decode.

This is the exactness half of the "global recovering" claim (docs/method.md §4): the shift, the online
recovery and every padding rule cancel exactly in exact arithmetic, so in fp64 only fp64 rounding is
left.
"""

from __future__ import annotations

import pytest
import torch

from pasa_npu import PRESETS, flash_attention, golden_attention, pasa_attention
from pasa_npu.methods import run_method

from .helpers import assert_close_rel, grid_qkv, seeded_mask

RTOL = 1e-12
F64 = torch.float64


_qkv = grid_qkv
_mask = seeded_mask


SHAPES = [(1, 1), (1, 1407), (97, 97), (128, 128), (97, 1025), (1025, 97), (1407, 1407), (128, 1025), (2, 3)]


@pytest.mark.parametrize("s1,s2", SHAPES)
@pytest.mark.parametrize("group", [1, 4, 7])
def test_pasa_and_flash_exact_in_fp64(s1, s2, group):
    q, k, v = _qkv(s1, s2, group)
    golden = golden_attention(q, k, v)
    assert_close_rel(pasa_attention(q, k, v, precision="fp64", out_dtype=F64), golden, RTOL, "pasa")
    assert_close_rel(flash_attention(q, k, v, precision="fp64", out_dtype=F64), golden, RTOL, "flash")


@pytest.mark.parametrize("mask_kind", ["causal", "bool", "bool_rows", "additive"])
@pytest.mark.parametrize("s1,s2", [(97, 1025), (1025, 97), (1, 1407), (300, 300), (1, 1)])
def test_masks_exact_in_fp64(mask_kind, s1, s2):
    group = 4
    q, k, v = _qkv(s1, s2, group, kv_heads=2)
    mask = _mask(mask_kind, s1, s2, q.shape[1])
    causal = mask_kind == "causal"
    golden = golden_attention(q, k, v, is_causal=causal, attn_mask=mask)
    for fn in (pasa_attention, flash_attention):
        out = fn(q, k, v, precision="fp64", out_dtype=F64, is_causal=causal, attn_mask=mask)
        assert_close_rel(out, golden, RTOL, f"{fn.__name__} {mask_kind}")


METHODS = ["pasa", "pasa:fp64", "fa_qk", "fa_q", "fa_naive", "fa_hybrid", "smooth_k", "sdpa"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("causal", [False, True])
def test_every_harness_method_exact_in_fp64(method, causal):
    q, k, v = _qkv(300, 1025, group=7, kv_heads=2)
    golden = golden_attention(q, k, v, is_causal=causal)
    out = run_method(method, q, k, v, precision="fp64", is_causal=causal, out_dtype=F64)
    assert_close_rel(out, golden, RTOL, method)


@pytest.mark.parametrize(
    "variant",
    [
        dict(kv_tail="zero"),
        dict(kv_tail="script"),
        dict(kv_tail="wrap"),
        dict(scale="q"),
        dict(scale="scores"),
        dict(reduce="pairwise"),
        dict(accum="pow2"),
        dict(coef="beta"),
        dict(recovery="key_mean"),
        dict(offset="running"),
        dict(pseudo_average="rounded"),
        dict(pseudo_average="rounded", offset="running"),
        dict(recenter_at=1e-3),
    ],
)
@pytest.mark.parametrize("s2", [1, 97, 1025])
def test_policy_variants_exact_in_fp64(variant, s2):
    q, k, v = _qkv(97, s2, group=4)
    prec = PRESETS["fp64"].replace(**variant)
    golden = golden_attention(q, k, v)
    assert_close_rel(pasa_attention(q, k, v, precision=prec, out_dtype=F64), golden, RTOL, str(variant))


@pytest.mark.parametrize("beta", [0.5, 0.9375, 0.984497, 0.999])
@pytest.mark.parametrize("block_kv", [2, 64, 128, 300])
def test_any_beta_and_block_size_exact(beta, block_kv):
    q, k, v = _qkv(97, 1025, group=1, kv_heads=2, mean=3.0)
    golden = golden_attention(q, k, v)
    out = pasa_attention(q, k, v, precision="fp64", beta=beta, block_kv=block_kv, out_dtype=F64)
    assert_close_rel(out, golden, RTOL, f"beta={beta} n={block_kv}")


def test_fully_masked_rows_are_zero_everywhere():
    q, k, v = _qkv(16, 40, group=2)
    keep = torch.ones((16, 40), dtype=torch.bool)
    keep[3] = False
    for out in (
        golden_attention(q, k, v, attn_mask=keep),
        pasa_attention(q, k, v, attn_mask=keep, precision="fp64"),
        flash_attention(q, k, v, attn_mask=keep, precision="fp64"),
        pasa_attention(q.half(), k.half(), v.half(), attn_mask=keep, precision="script"),
        torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep, enable_gqa=True),
    ):
        assert torch.equal(out[:, :, 3], torch.zeros_like(out[:, :, 3]))
        assert torch.isfinite(out).all()


def test_causal_is_bottom_right_aligned():
    # decode: one query sees every key; S1 > S2: the first S1 - S2 queries see nothing.
    q, k, v = _qkv(1, 50, group=1)
    assert_close_rel(golden_attention(q, k, v, is_causal=True), golden_attention(q, k, v), 1e-15, "decode")
    q, k, v = _qkv(10, 4, group=1)
    out = golden_attention(q, k, v, is_causal=True)
    assert torch.equal(out[:, :, :6], torch.zeros_like(out[:, :, :6]))
    assert_close_rel(out[:, :, 9:], golden_attention(q[:, :, 9:], k, v), 1e-15, "last row sees all")


def test_golden_attention_matches_sdpa_math():
    q, k, v = _qkv(64, 80, group=4, kv_heads=2)
    sd = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    assert_close_rel(golden_attention(q, k, v), sd, 1e-13, "sdpa fp64")
