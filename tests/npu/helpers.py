"""Small helpers shared by the pasa_npu tests."""
from __future__ import annotations

import torch

from pasa_npu.metrics import error_summary

#: unit roundoff of fp16 (torch.finfo(torch.float16).eps is 2u).
U16 = 2.0 ** -11


def assert_close_rel(out: torch.Tensor, golden: torch.Tensor, rtol: float, what: str = "") -> None:
    """max|out − golden| <= rtol·max|golden|, with a self-explaining message."""
    o, g = out.double(), golden.double()
    err = float((o - g).abs().max())
    scale = float(g.abs().max())
    assert torch.isfinite(o).all() and err <= rtol * scale, (
        f"{what}: max|err|/max|golden| = {err / scale:.3e} > {rtol:.1e}; {error_summary(o, g)}"
    )


def ulp16(x: torch.Tensor) -> torch.Tensor:
    """Spacing of fp16 numbers at |x| (normal range), as float64."""
    x = x.double().abs().clamp_min(2.0 ** -14)
    return torch.exp2(torch.floor(torch.log2(x)) - 10)
