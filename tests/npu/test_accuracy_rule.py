"""The FlashAttention accuracy rule: error at most twice the same-precision naive baseline's.

    max|out − ref| <= 2·max|naive − ref| + 2·ulp16(max|ref|)

ref is the float64 golden, naive the untiled fp16 attention with Q pre-scaled, computed by
``pasa_npu.yardsticks.attention_ref`` (written separately from the kernel; it equals the kernel's
``fa_naive`` bit for bit, tests/npu/test_yardsticks.py), and
the absolute floor is two fp16 ulps at the output's magnitude (as FA3's ``fwd_atol``). Cases: the
reference grid's 32 cells (one GQA group, 256 queries, 1407 keys, d = 128), none of which overflows
the naive baseline.

* ``fp16_keymean`` (block offsets from the keys' means) satisfies the rule on every cell.
* ``npu_fp16`` (PASA's pseudo-average recovery) satisfies it on every biased cell (mean >= 10),
  where it is 2–30x *more* accurate than the baseline, but not on unbiased wide data (mean 0): there
  it is about 2x the baseline. Why, shown by the tests below: the recovery reads the block offset
  from the mean of the shifted scores, c·mean(S̃), so the rounding error of K̃ = M·K along the
  block-mean direction is multiplied by c = β/(1−β) (κ₂(M) = 1/(1−β)); with one KV block (no
  offsets) or a small β the excess vanishes, and taking the offsets from the keys removes it.
"""

from __future__ import annotations

import pytest
import torch

from pasa_npu import data, golden_attention, metrics, pasa_attention
from pasa_npu.harness import GRID_AMPLITUDES, GRID_MEANS
from pasa_npu.yardsticks import attention_ref

from .helpers import ulp16

SHAPE = dict(batch=1, heads=7, kv_heads=1, seq_q=256, seq_kv=1407, head_dim=128)
CELLS = [(d, m, a) for d in ("uniform", "hybrid") for m in GRID_MEANS for a in GRID_AMPLITUDES]


@pytest.fixture(scope="module")
def cases():
    out = {}
    for d, m, a in CELLS:
        q, k, v = data.make_qkv(d, mean=m, amplitude=a, **SHAPE)
        g = golden_attention(q, k, v)
        naive = attention_ref(q, k, v)
        assert torch.isfinite(naive).all()
        out[(d, m, a)] = (q, k, v, g, naive)
    return out


def _rule(out, g, naive):
    err = float((out.double() - g).abs().max())
    base = float((naive.double() - g).abs().max())
    atol = 2 * float(ulp16(g.abs().max()))
    return err, base, atol, err <= 2 * base + atol


@pytest.mark.parametrize("cell", CELLS, ids=[f"{d}-{m:g}-{a:g}" for d, m, a in CELLS])
def test_keymean_within_twice_the_naive_fp16_error(cases, cell):
    q, k, v, g, naive = cases[cell]
    out = pasa_attention(q, k, v, precision="fp16_keymean")
    err, base, atol, ok = _rule(out, g, naive)
    assert ok, f"{cell}: max err {err:.3e} > 2 x {base:.3e} + {atol:.1e}; {metrics.error_summary(out, g)}"


@pytest.mark.parametrize("cell", [c for c in CELLS if c[1] > 0], ids=lambda c: f"{c[0]}-{c[1]:g}-{c[2]:g}")
def test_npu_fp16_within_twice_the_naive_error_on_biased_data(cases, cell):
    q, k, v, g, naive = cases[cell]
    out = pasa_attention(q, k, v)
    err, base, atol, ok = _rule(out, g, naive)
    assert ok, f"{cell}: max err {err:.3e} > 2 x {base:.3e} + {atol:.1e}"


def test_npu_fp16_beats_the_naive_baseline_on_the_median_biased_cell(cases):
    ratios = sorted(
        metrics.rmse(pasa_attention(q, k, v), g) / metrics.rmse(naive, g)
        for (d, m, a), (q, k, v, g, naive) in cases.items()
        if m >= 10
    )
    print("npu_fp16 / naive RMSE on biased cells:", " ".join(f"{r:.2f}" for r in ratios))
    assert ratios[len(ratios) // 2] < 0.5


def test_why_npu_fp16_exceeds_the_rule_on_unbiased_wide_data(cases):
    q, k, v, g, naive = cases[("uniform", 0.0, 20.0)]
    base = metrics.rmse(naive, g)
    ratio = {
        "npu_fp16": metrics.rmse(pasa_attention(q, k, v), g) / base,
        "one block": metrics.rmse(pasa_attention(q, k, v, block_kv=1408), g) / base,
        "beta=0.5": metrics.rmse(pasa_attention(q, k, v, beta=0.5), g) / base,
        "fp32 vector": metrics.rmse(pasa_attention(q, k, v, precision="hybrid"), g) / base,
        "key_mean": metrics.rmse(pasa_attention(q, k, v, precision="fp16_keymean"), g) / base,
    }
    print("RMSE / naive RMSE on uniform(0, 20):", {k_: round(r, 2) for k_, r in ratio.items()})
    assert ratio["npu_fp16"] > 1.5  # the excess is real ...
    assert ratio["fp32 vector"] > 1.5  # ... not made by the fp16 vector unit,
    assert ratio["one block"] < 1.2  # but by the per-block offsets,
    assert ratio["beta=0.5"] < 1.2  # grows with c = beta/(1-beta),
    assert ratio["key_mean"] < 1.2  # and goes when offsets come from the keys
