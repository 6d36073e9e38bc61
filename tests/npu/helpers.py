"""Small helpers shared by the pasa_npu tests."""

from __future__ import annotations

import torch

from pasa_npu.metrics import error_summary

#: unit roundoff of fp16 (torch.finfo(torch.float16).eps is 2u).
U16 = 2.0**-11


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
    x = x.double().abs().clamp_min(2.0**-14)
    return torch.exp2(torch.floor(torch.log2(x)) - 10)


def two_term_scores(k0: float, k1: float, s2: int = 8):
    """Inputs with one constructed score: q = [256, 1, 0, …], key 0 = [k0, k1, 0, …], so
    q·k0 = 256·k0 + k1 exactly (small integers and eighths); the other keys score 256. d = 16,
    4 query rows, ``s2`` keys, V seeded."""
    d = 16
    q = torch.zeros((1, 1, 4, d), dtype=torch.float16)
    q[..., 0], q[..., 1] = 256.0, 1.0
    k = torch.zeros((1, 1, s2, d), dtype=torch.float16)
    k[0, 0, :, 0] = 1.0
    k[0, 0, 0, 0], k[0, 0, 0, 1] = k0, k1
    v = torch.randn((1, 1, s2, d), generator=torch.Generator().manual_seed(0)).half()
    return q, k, v
