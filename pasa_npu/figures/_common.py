"""Constants and small helpers shared by the figure modules."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any

import torch

import pasa_theory as _pt

__all__ = [
    "FP16_MAX",
    "FP16_OVERFLOW",
    "U64",
    "spread",
    "fp64_scores",
    "PUBLISHED_BETAS",
    "FOLDED_BETAS",
    "METHOD_DOC",
]

FP16_MAX = float(_pt.get_format("fp16").max_finite)
#: Smallest magnitude that rounds to inf in fp16 (round to nearest even).
FP16_OVERFLOW = float(_pt.get_format("fp16").overflow_threshold)
U64 = float(_pt.get_format("fp64").u)

#: Published values: the β of the published README and the script's final β (see docs/method.md),
#: and the fixed points re-solved for the matrix with the softmax scale 1/√128 folded in.
PUBLISHED_BETAS = {"0.9689939 (README)": 0.9689939, "0.984497 (script)": 0.984497}
FOLDED_BETAS = {"0.9689528 (τ folded)": 0.9689528165, "0.9847111 (τ folded)": 0.9847111441}

#: The keyword arguments every public figure function takes (appended to their docstrings' text).
METHOD_DOC = """
    Keyword arguments: ``quick`` (small shapes; default from ``PASA_QUICK``), ``out`` (a folder: write
    ``<name>.pdf``, ``.png`` and ``.csv`` there) and ``from_csv`` (redraw from a CSV this function
    wrote, or a folder holding it, instead of computing).
"""


def spread(xs: Iterable[float]) -> tuple[Any, Any, Any]:
    """``(min, median, max)`` of the values, or ``(None, None, None)`` when there are none."""
    vals = list(xs)
    return (min(vals), statistics.median(vals), max(vals)) if vals else (None, None, None)


def finite(x: Any) -> bool:
    """Whether ``x`` is a number (not ``None``) and finite."""
    return x is not None and math.isfinite(x)


def fp64_scores(q: Any, k: Any, scale: float | None = None) -> Any:
    """τ·Q·Kᵀ in float64 (B, H, S1, S2), GQA by head groups."""
    B, H, S1, d = q.shape
    Hkv = k.shape[1]
    tau = d**-0.5 if scale is None else scale
    qq = q.to(torch.float64).view(B, Hkv, H // Hkv, S1, d)
    s = torch.einsum("bhgid,bhjd->bhgij", qq, k.to(torch.float64)) * tau
    return s.reshape(B, H, S1, k.shape[2])
