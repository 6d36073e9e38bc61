"""pasa_npu: the executable tiled PASA in torch, its baselines, golden reference, data and metrics.

Runs on CPU by default; the same code runs on ``cuda``, and on ``npu`` when ``torch_npu`` (Ascend
CANN) is installed. β and the recovery coefficient come from :mod:`pasa_theory`.
"""
from . import data, metrics
from .kernel import flash_attention, pasa_attention
from .precision import PRESETS, Precision, get_precision
from .reference import reference_attention

__all__ = [
    "pasa_attention",
    "flash_attention",
    "reference_attention",
    "Precision",
    "PRESETS",
    "get_precision",
    "data",
    "metrics",
]
__version__ = "0.1.0"
