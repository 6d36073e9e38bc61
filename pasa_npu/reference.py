"""Former home of the float64 golden; use :func:`pasa_npu.golden_attention` (:mod:`pasa_npu.golden`)."""

from __future__ import annotations

import warnings
from typing import Any

from .golden import golden_attention

__all__: list[str] = []


def __getattr__(name: str) -> Any:
    if name == "reference_attention":
        warnings.warn(
            "reference_attention is now called golden_attention (pasa_npu.golden_attention)",
            DeprecationWarning,
            stacklevel=2,
        )
        return golden_attention
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
