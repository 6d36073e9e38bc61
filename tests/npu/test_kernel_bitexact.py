"""The kernel's outputs are bit-identical to those of the kernel before its speed work.

Expected values: SHA-256 digests of the output bytes, computed with the unmodified kernel (commit
e4ad218) on this torch build; they cover PASA at several presets, ragged lengths, causal masks, GQA
and the flash-attention baselines. Any change in a rounding step (an op order, a fused kernel, a
different dtype round trip) changes a digest. The digests depend on the floating-point kernels of
the torch build (fp32 GEMM summation order), so they are checked only on the pinned CPU build.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from pasa_npu import data
from pasa_npu.methods import run_method

pytestmark = pytest.mark.skipif(
    torch.__version__ != "2.13.0+cpu", reason="digests recorded with the pinned torch 2.13.0 CPU build"
)

CASES = [
    # name, dist, mean, amp, shape, method, kw
    (
        "ref_group_pasa",
        "uniform",
        30.0,
        0.5,
        dict(batch=1, heads=7, kv_heads=1, seq_q=300, seq_kv=1407, head_dim=128),
        "pasa",
        {},
    ),
    (
        "ragged_causal_gqa",
        "hybrid",
        10.0,
        10.0,
        dict(batch=2, heads=4, kv_heads=2, seq_q=77, seq_kv=333, head_dim=64),
        "pasa",
        dict(is_causal=True),
    ),
    (
        "reference_preset",
        "uniform",
        20.0,
        5.0,
        dict(batch=1, heads=2, kv_heads=1, seq_q=130, seq_kv=700, head_dim=128),
        "pasa:script",
        {},
    ),
    (
        "keymean",
        "uniform",
        30.0,
        0.5,
        dict(batch=1, heads=2, kv_heads=2, seq_q=65, seq_kv=520, head_dim=128),
        "pasa:fp16_keymean",
        {},
    ),
    (
        "strict_ragged",
        "hybrid",
        0.0,
        20.0,
        dict(batch=1, heads=3, kv_heads=1, seq_q=129, seq_kv=261, head_dim=96),
        "pasa:fp16_strict",
        dict(is_causal=True),
    ),
    (
        "bf16",
        "uniform",
        10.0,
        0.5,
        dict(batch=1, heads=2, kv_heads=1, seq_q=50, seq_kv=300, head_dim=128),
        "pasa:bf16",
        {},
    ),
    (
        "fa_qk",
        "uniform",
        0.0,
        5.0,
        dict(batch=1, heads=4, kv_heads=1, seq_q=100, seq_kv=500, head_dim=128),
        "fa_qk",
        {},
    ),
    (
        "fa_q_causal",
        "uniform",
        20.0,
        0.5,
        dict(batch=1, heads=2, kv_heads=2, seq_q=200, seq_kv=200, head_dim=128),
        "fa_q",
        dict(is_causal=True),
    ),
    (
        "fa_hybrid",
        "hybrid",
        10.0,
        10.0,
        dict(batch=1, heads=2, kv_heads=1, seq_q=64, seq_kv=384, head_dim=128),
        "fa_hybrid",
        {},
    ),
    (
        "hybrid_preset",
        "uniform",
        30.0,
        20.0,
        dict(batch=1, heads=2, kv_heads=1, seq_q=64, seq_kv=257, head_dim=128),
        "pasa:hybrid",
        {},
    ),
    (
        "overflow_fa_qk",
        "uniform",
        30.0,
        0.5,
        dict(batch=1, heads=1, kv_heads=1, seq_q=40, seq_kv=300, head_dim=128),
        "fa_qk",
        {},
    ),
]

EXPECTED = {
    "ref_group_pasa": "b47c906f91483f1ea67adfbbdc57e84e2a19cb7492b88c7bf89b3b86546cc882",
    "ragged_causal_gqa": "12a02bc68cba23a7b400cbfcef7ab10855aee90723d79d782e39b7d28fce2403",
    "reference_preset": "1736c8bdfd29026190b4f11a204e7289bfafde77d0d055aa60ac039723f60e33",
    "keymean": "054da388ba0849dd62480a48246231ced22fcc5421c4b93624280e92ed7e2a78",
    "strict_ragged": "dcb34aafb8ff3f65516bd7a9348ac2cf3ff98a7193934cb832d5d410819ac2bc",
    "bf16": "181e1b7363485f146ecd21ccfb6399d4d23cdf4bc8312f466e89f84104475af1",
    "fa_qk": "7b6836b28c854f8836cc0feafc871f4002684c13602bd126e0aa1cfb1c20a459",
    "fa_q_causal": "472c781f1f838d22f6076ee0e700578f578d14b26ab3d054908984299861aad4",
    "fa_hybrid": "20ca73ee464d2be2ef7548cf5c6f62b89a6dc7209984ad30d00c020aaab9fd8d",
    "hybrid_preset": "efaac415e102bac6b2955f57f672ee49b3e6463087d64c4eafa8c4b84aa8ab42",
    "overflow_fa_qk": "327a4b9f0a3e95c35595c445c9a057dcc339d47d511f12ae32fa64da59087cbe",
}


@pytest.mark.parametrize("name, dist, mean, amp, shape, method, kw", CASES, ids=[c[0] for c in CASES])
def test_output_bytes_match_the_unmodified_kernel(name, dist, mean, amp, shape, method, kw):
    q, k, v = data.make_qkv(dist, mean=mean, amplitude=amp, seed=11, **shape)
    out = run_method(method, q, k, v, **kw)
    digest = hashlib.sha256(out.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()
    assert digest == EXPECTED[name], (
        f"{name}: output differs from the unmodified kernel ({method}, {shape}); non-finite: "
        f"{int((~torch.isfinite(out)).sum())}"
    )


def test_a_policy_with_wider_coefficients_keeps_the_unmodified_kernel_bytes():
    # coef_dtype fp32 with an fp16 vector unit: the running weights are promoted to fp32 (the
    # accumulator follows torch's type promotion), which the in-place updates must not change
    from pasa_npu import pasa_attention
    from pasa_npu.precision import get_precision

    q, k, v = data.make_qkv(
        "uniform",
        mean=20.0,
        amplitude=5.0,
        batch=1,
        heads=2,
        kv_heads=1,
        seq_q=70,
        seq_kv=300,
        head_dim=128,
        seed=3,
    )
    out = pasa_attention(q, k, v, precision=get_precision("npu_fp16").replace(coef_dtype=torch.float32))
    digest = hashlib.sha256(out.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()
    # recorded by running this case on the kernel as it was before the speed work (commit e4ad218)
    assert digest == "9997873439f350fbd6e6f90ee17af0badaa28c052bd37f41e27a5e545aa864dc"
