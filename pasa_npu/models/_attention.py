"""The attention hook: every attention call of a model forward pass goes through one of these.

An :class:`AttentionHook` is called as ``hook(layer, q, k, v, is_causal=...)`` with the BNSD tensors the
model's attention receives (after RoPE, before the scale) and returns the attention output in the
activation dtype. It routes the call to a harness method by name:

``golden``              :func:`pasa_npu.golden_attention`: float64 softmax attention on the inputs as
                        given (the run every other one is compared with).
any harness method      :func:`pasa_npu.methods.run_method` (``pasa``, ``pasa:<preset>``, ``fa_qk``,
                        ``fa_q``, ``fa_naive``, ``fa_hybrid``, ``smooth_k``, ``sdpa``, …) at
                        ``precision`` (default ``npu_fp16``). The methods round q, k, v to their input
                        format themselves.
``<method>@<preset>``   shorthand for a method at a precision preset, e.g. ``sdpa@bf16``, ``pasa@bf16``.
``golden@<preset>``     float64 attention on q, k, v first rounded to the preset's matrix-input format
                        (``golden@npu_fp16``): the floor that storing the inputs in that format sets.

With ``record=True`` the hook also computes, on the same inputs, the golden output and keeps per layer
the largest absolute error of the method against it (the *local* error of that layer's attention: the
inputs are the ones this run produced, so the error does not include what earlier layers passed on) and
the number of non-finite outputs with the first pipeline stage that produced one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import metrics
from ..golden import golden_attention
from ..methods import get_method, run_method
from ..precision import PRESETS

__all__ = ["AttentionHook", "parse_method", "GOLDEN"]

GOLDEN = "golden"

#: a function applied to (layer, q, k) before the attention sees them; returns the new (q, k)
Inject = Callable[[int, torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


def parse_method(method: str, precision: str | None = None) -> tuple[str, str | None]:
    """Split ``"<method>@<preset>"`` and validate both parts; returns ``(method, precision)``.

    ``precision`` given both ways is an error. ``golden`` takes no precision (it is float64)."""
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, got {type(method).__name__}")
    if "@" in method:
        method, _, at = method.partition("@")
        if precision is not None:
            raise ValueError(f"precision given twice: in method ({at!r}) and as precision ({precision!r})")
        precision = at
    if precision is not None:
        if not isinstance(precision, str):
            raise TypeError(f"precision must be a preset name (str) or None, got {type(precision).__name__}")
        if precision not in PRESETS:
            raise ValueError(f"precision must be one of {sorted(PRESETS)} or None, got {precision!r}")
    if method == GOLDEN:
        return method, precision
    get_method(method)  # raises a ValueError naming the accepted methods
    return method, precision


class AttentionHook:
    """Routes every attention call of a forward pass through one method (see the module docstring)."""

    def __init__(
        self,
        method: str = GOLDEN,
        precision: str | None = None,
        *,
        beta: float | None = None,
        block_kv: int = 128,
        record: bool = False,
        inject: Inject | None = None,
        keep_inputs: bool = False,
    ) -> None:
        self.method, self.precision = parse_method(method, precision)
        self.beta = beta
        self.block_kv = block_kv
        self.record = bool(record)
        self.inject = inject
        self.keep_inputs = bool(keep_inputs)
        #: per layer: max |out − golden| on this run's inputs (record=True)
        self.max_abs_err: list[float] = []
        #: per layer: number of non-finite output elements and the first stage that produced one
        self.nonfinite: list[int] = []
        self.first_stage: list[str | None] = []
        #: per layer: (q, k, v) as the attention received them (keep_inputs=True)
        self.inputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    @property
    def label(self) -> str:
        return self.method if self.precision is None else f"{self.method}@{self.precision}"

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, is_causal: bool) -> torch.Tensor:
        """The method's output on (q, k, v), in q's dtype; no recording."""
        if self.method == GOLDEN:
            act = q.dtype
            if self.precision is not None:
                dt = PRESETS[self.precision].matmul_in
                q, k, v = q.to(dt), k.to(dt), v.to(dt)
            return golden_attention(q, k, v, is_causal=is_causal).to(device=q.device, dtype=act)
        return run_method(
            self.method,
            q,
            k,
            v,
            precision=self.precision or "npu_fp16",
            beta=self.beta,
            block_kv=self.block_kv,
            is_causal=is_causal,
            out_dtype=q.dtype,
        )

    def __call__(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, is_causal: bool
    ) -> torch.Tensor:
        if self.inject is not None:
            q, k = self.inject(layer, q, k)
        if self.keep_inputs:
            self.inputs.append((q.detach().clone(), k.detach().clone(), v.detach().clone()))
        with metrics.census() as cen:
            out = self.attend(q, k, v, is_causal=is_causal)
        if self.record:
            nf = metrics.nonfinite_count(out)
            self.nonfinite.append(nf)
            self.first_stage.append(cen.first_stage if (nf or cen.total) else None)
            if self.method == GOLDEN and self.precision is None:
                self.max_abs_err.append(0.0)
            else:
                gold = golden_attention(q, k, v, is_causal=is_causal)
                self.max_abs_err.append(metrics.max_abs_error(out, gold))
        return out
