"""pasa_npu: the executable tiled PASA in torch, its baselines, the float64 golden, data and metrics.

Runs on CPU by default; the same code runs on ``cuda``, and on ``npu`` when ``torch_npu`` (Ascend
CANN) is installed. β and the recovery coefficient come from :mod:`pasa_theory`.
"""

import warnings

from . import data, metrics
from .golden import golden_attention
from .kernel import flash_attention, pasa_attention
from .precision import PRESETS, Precision, get_precision

__all__ = [
    "pasa_attention",
    "flash_attention",
    "golden_attention",
    "Precision",
    "PRESETS",
    "get_precision",
    "data",
    "metrics",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    if name == "reference_attention":
        warnings.warn("reference_attention is now called golden_attention", DeprecationWarning, stacklevel=2)
        return golden_attention
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
