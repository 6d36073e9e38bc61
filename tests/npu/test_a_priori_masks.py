"""Theorem 2 (the a-priori bound) with an additive ``attn_mask`` (docs/bounds.md §17.5), attacked.

Every case runs the real kernel with the mask, measures max|O − O_exact| against the float64 golden on the
same mask and requires it below ``a_priori(method, stats_of(q, k, v, attn_mask=mask))``. The mask's own
rounding (to fp32, then to the vector format) and the rounding of s̃ + fl(B) must be in the constants:
with scores ≈ 0 and mask entries of a few hundred (fp16 spacing 0.25–0.5) the bound computed as if there
were no mask is below the measured error.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pasa_npu.golden import golden_attention
from pasa_npu.methods import run_method
from pasa_theory import rigorous
from tests.npu.helpers import grid_qkv, seeded_mask

CASES = [
    ("fa_qk", "npu_fp16"),
    ("fa_q", "npu_fp16"),
    ("fa_hybrid", "npu_fp16"),
    ("pasa", "npu_fp16"),
    ("pasa", "hybrid"),
    ("pasa", "fp16_keymean"),
    ("pasa", "fp16_strict"),
]


def _err_and_bound(method, prec, q, k, v, mask):
    out = run_method(method, q, k, v, precision=prec, attn_mask=mask).double()
    gold = golden_attention(q, k, v, attn_mask=mask)
    err = float((out - gold).abs().max())
    st = rigorous.stats_of(q, k, v, attn_mask=mask)
    return err, st, rigorous.a_priori(method, st, precision=prec)


@pytest.mark.parametrize("method,prec", CASES)
@pytest.mark.parametrize("seed,amp,mscale", [(1, 0.5, 1.0), (2, 0.5, 3.0), (3, 1.0, 8.0)])
def test_a_priori_holds_with_additive_masks(method, prec, seed, amp, mscale):
    """Random small inputs (the regime where Theorem 2 is finite) with N(0, (3·mscale)²) masks, −∞ entries
    and fully masked rows included (seeded_mask 'additive')."""
    q, k, v = grid_qkv(16, 300, 2, d=64, seed=seed, mean=0.0, amp=amp, dtype=torch.float16)
    mask = seeded_mask("additive", 16, 300, 2, seed=seed) * mscale
    err, st, apb = _err_and_bound(method, prec, q, k, v, mask)
    assert st.mask_max > 0
    assert err <= apb.bound, f"{method}@{prec}: err {err:.3e} > a-priori bound {apb.bound:.3e}"


def test_boolean_masks_keep_mask_max_zero():
    q, k, v = grid_qkv(8, 100, 1, d=32, seed=4, dtype=torch.float16)
    assert rigorous.stats_of(q, k, v, attn_mask=seeded_mask("bool", 8, 100, 1)).mask_max == 0.0


@pytest.mark.parametrize("method,prec", [("fa_qk", "npu_fp16"), ("pasa", "fp16_keymean")])
def test_the_mask_terms_are_needed(method, prec):
    """q = k = 0 (every score 0) and a mask of distinct values in [300, 500] that are not fp16 numbers: the
    error comes from rounding the mask (up to 0.125) and s̃ + fl(B) only. Theorem 2 with the mask terms
    holds; the same theorem with mask_max = 0 (the mask ignored) is below the measured error."""
    g = torch.Generator().manual_seed(5)
    S1, S2, d = 4, 256, 32
    q = torch.zeros(1, 1, S1, d, dtype=torch.float16)
    k = torch.zeros(1, 1, S2, d, dtype=torch.float16)
    v = (2 * torch.rand(1, 1, S2, d, generator=g) - 1).half()
    mask = 300 + 200 * torch.rand(1, 1, S1, S2, generator=g, dtype=torch.float64)
    mask[..., :8] = 499.97  # a shared top value, so the maximum's block is not alone
    err, st, apb = _err_and_bound(method, prec, q, k, v, mask)
    assert err <= apb.bound, f"err {err:.3e} > bound {apb.bound:.3e}"
    naive = rigorous.a_priori(method, dataclasses.replace(st, mask_max=0.0), precision=prec).bound
    assert err > naive, f"the bound without the mask terms ({naive:.3e}) holds here (err {err:.3e})"


def test_mask_max_must_be_finite_and_hi_lo_refuses_it():
    st = rigorous.InputStats(1.0, 1.0, 1.0, 2.0, 64, 256, mask_max=float("nan"))
    with pytest.raises(ValueError, match="mask_max"):
        rigorous.a_priori("fa_qk", st)
    with pytest.raises(ValueError, match="additive attn_mask"):
        rigorous.a_priori("pasa:fp16_accurate", dataclasses.replace(st, mask_max=3.0))
