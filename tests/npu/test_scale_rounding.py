"""A user-given softmax scale is stored as torch stores it (docs/bounds.md §13.1): torch converts a
Python float to fp16 through fp32, which differs from one rounding where fl32(τ) is an fp16 midpoint.
The bound pinned to the other fp16 neighbour of τ encloses another run than the kernel's."""

from __future__ import annotations

import numpy as np
import torch

from pasa_npu.golden import golden_attention
from pasa_npu.methods import run_method
from pasa_theory import rigorous
from tests.npu.helpers import grid_qkv

#: 0.125 + 2^-14 is the midpoint of the fp16 neighbours 0.125 and 0.125 + 2^-13; 2^-40 above it,
#: fl32 lands on the midpoint (ties to even: 0.125) while one rounding to fp16 goes up.
MIDPOINT_SCALE = 0.125 + 2.0**-14 + 2.0**-40


def test_the_constructed_scale_is_a_double_rounding_case():
    assert float(np.float32(MIDPOINT_SCALE)) == 0.125 + 2.0**-14
    assert float(np.float16(MIDPOINT_SCALE)) == 0.125 + 2.0**-13  # one rounding
    assert float(torch.tensor(MIDPOINT_SCALE, dtype=torch.float16)) == 0.125  # torch: through fp32


def test_a_user_scale_on_an_fp16_midpoint_is_rounded_as_torch_does():
    # fa_qk multiplies the scores by the stored τ, fa_q folds it into Q; one fp16 ulp of τ (relative
    # 2^-10) moves the exponents beyond the enclosure's width (with τ rounded once, fa_q's bound was
    # violated on 2 of 8 rows: err 0.02053 > bound 0.0195)
    q, k, v = grid_qkv(8, 256, 1, d=64, seed=11, mean=3.0, amp=2.0, dtype=torch.float16)
    for method in ("fa_qk", "fa_q"):
        out = run_method(method, q, k, v, scale=MIDPOINT_SCALE).double()
        gold = golden_attention(q, k, v, scale=MIDPOINT_SCALE).double()
        err = (out - gold).abs().amax(dim=-1).flatten().numpy()
        cert = rigorous.certify(method, q, k, v, scale=MIDPOINT_SCALE)
        bound = np.asarray(cert.row_bound).flatten()
        bad = np.flatnonzero(err > bound)
        assert bad.size == 0, (
            f"{method}: bound violated on {bad.size} of {err.size} rows; worst err {err[bad].max():.4g} vs "
            f"bound {bound[bad[np.argmax(err[bad])]]:.4g} (max err {err.max():.4g}, mean err {err.mean():.4g})"
        )


def test_torch_scalar_is_what_torch_stores():
    from pasa_theory.formats import torch_scalar

    for x in (MIDPOINT_SCALE, 1 / 3, 0.1, 2.0**-20 * 3):
        for dtype, p in ((torch.float16, 11), (torch.bfloat16, 8)):
            want = float(torch.tensor(x, dtype=dtype))
            got = float(torch.tensor(torch_scalar(x, p), dtype=torch.float64).to(torch.float32).to(dtype))
            assert got == want, (x, dtype, got, want)
        assert torch_scalar(x, 53) == float(torch.tensor(x, dtype=torch.float64))  # float64 stores x
