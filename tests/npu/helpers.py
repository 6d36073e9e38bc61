"""Small helpers shared by the pasa_npu tests."""

from __future__ import annotations

import numpy as np
import torch

from pasa_npu import data
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


def grid_qkv(s1, s2, group, kv_heads=1, d=32, seed=0, mean=1.0, amp=1.0, dtype=torch.float64, dist="uniform"):
    """Seeded q, k, v from ``data.make_qkv`` (batch 1, ``group`` query heads per KV head), float64 by
    default: the exactness tests' inputs."""
    return data.make_qkv(
        dist,
        batch=1,
        heads=group * kv_heads,
        kv_heads=kv_heads,
        seq_q=s1,
        seq_kv=s2,
        head_dim=d,
        mean=mean,
        amplitude=amp,
        seed=seed,
        dtype=dtype,
    )


def seeded_mask(kind, s1, s2, heads, seed=1):
    """A seeded attention mask: None for ``None``/``"causal"``; ``"bool"`` per head (last key always
    kept); ``"bool_rows"`` broadcast over heads with every 7th row fully masked; otherwise additive
    (float64, N(0, 3²))."""
    if kind in (None, "causal"):
        return None
    g = torch.Generator().manual_seed(seed)
    if kind == "bool":
        keep = torch.rand((1, heads, s1, s2), generator=g) > 0.4
        keep[..., -1] = True
        return keep
    if kind == "bool_rows":  # broadcast over heads, with fully masked rows
        keep = torch.rand((s1, s2), generator=g) > 0.4
        keep[::7] = False
        return keep
    return torch.randn((1, 1, s1, s2), generator=g, dtype=torch.float64) * 3  # additive


def assert_rows_within_bound(err: np.ndarray, cert, what: str = "") -> None:
    """Every finite per-row error of a run is at most the certificate's row bound, and every row whose
    output is inf/NaN has an infinite bound (a theorem: one violation fails); the message gives the
    number of violating rows, the worst one and the largest error and bound."""
    finite = np.isfinite(err)
    bad = finite & (err > cert.row_bound)
    assert not bad.any(), (
        f"{what}: bound violated on {int(bad.sum())} rows; worst err {err[bad].max():.3e} vs bound "
        f"{cert.row_bound[bad][np.argmax(err[bad])]:.3e}; max err {np.nanmax(err):.3e}, "
        f"max bound {cert.max_abs_bound:.3e}"
    )
    assert np.all(np.isinf(cert.row_bound[~finite])), f"{what}: inf/NaN output with a finite bound"
