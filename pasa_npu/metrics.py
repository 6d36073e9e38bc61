"""Accuracy metrics (all evaluated in float64) and the non-finite census.

Metrics follow the public reference script where it defines them:

* ``rmse``: sqrt(mean((out − golden)²)).
* ``relative_rmse``: RMSE / RMS(V) — the reference script's normalisation (design decision D11:
  the paper's numbers are assumed to use this one). RMS(V) is taken over the value tensor as given
  (KV heads, not repeated for GQA), exactly as the script does.
* ``relative_rmse_out``: RMSE / RMS(golden) — the normalisation by the output, reported beside it.
* ``max_abs_error``: max |out − golden|.

Non-finite outputs make every metric non-finite: they are a finding, never hidden.

The census records, stage by stage, how many non-finite values the kernels produced::

    with census() as c:
        out = pasa_attention(q, k, v)
    c.first_stage   # None, or the earliest pipeline stage that produced inf/NaN
    c.counts        # {"scores": 0, "exp": 0, ...}

Stages, in pipeline order: ``input`` (non-finite inputs), ``scores`` (matrix-unit score tile, before
masking), ``shift`` (block means, running reference and recovery offsets), ``exp`` (the
exponentiated tile), ``row_sum`` (block row sums and the running ℓ), ``accumulator`` (the running
O) and ``output``. Counts are numbers of non-finite values produced at that stage, summed over
tiles and blocks. ``-inf`` coming from a mask is not counted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from pasa_theory import schema

__all__ = [
    "rmse",
    "relative_rmse",
    "relative_rmse_out",
    "max_abs_error",
    "nonfinite_count",
    "Census",
    "census",
    "STAGES",
    "error_summary",
]

STAGES = schema.STAGES  # written once, torch-free; pasa_theory.bounds uses the same order


def _f64(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    return x.detach().to(device="cpu", dtype=torch.float64)


def _pair(out: torch.Tensor, golden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    o, g = _f64(out), _f64(golden)
    if o.shape != g.shape:
        raise ValueError(
            f"out and golden must have the same shape, got {tuple(o.shape)} and {tuple(g.shape)}"
        )
    return o, g


def rmse(out: torch.Tensor, golden: torch.Tensor) -> float:
    """Root-mean-square error sqrt(Σ(out − golden)²/N), in float64."""
    o, g = _pair(out, golden)
    return float(torch.sqrt(torch.mean((o - g) ** 2)))


def _rms(x: torch.Tensor) -> float:
    x = _f64(x)
    return float(torch.sqrt(torch.mean(x * x)))


def relative_rmse(out: torch.Tensor, golden: torch.Tensor, v: torch.Tensor) -> float:
    """RMSE / RMS(V): the reference script's relative RMSE (V as given, KV heads only)."""
    return rmse(out, golden) / _rms(v)


def relative_rmse_out(out: torch.Tensor, golden: torch.Tensor) -> float:
    """RMSE / RMS(golden)."""
    return rmse(out, golden) / _rms(golden)


def max_abs_error(out: torch.Tensor, golden: torch.Tensor) -> float:
    """max |out − golden| (NaN if any output is NaN, inf if any is ±inf where golden is finite)."""
    o, g = _pair(out, golden)
    d = (o - g).abs()
    if torch.isnan(d).any():
        return float("nan")
    return float(d.max())


_COUNT_CHUNK = 1 << 22


def nonfinite_count(x: torch.Tensor) -> int:
    """Number of inf/NaN entries (counted in chunks: summing a boolean mask of a large tensor would
    materialise an int64 copy of it, 8 bytes per element)."""
    flat = x.detach().reshape(-1)
    total = 0
    for i in range(0, flat.numel(), _COUNT_CHUNK):
        part = flat[i : i + _COUNT_CHUNK]
        total += part.numel() - int(torch.count_nonzero(torch.isfinite(part)))
    return total


def error_summary(out: torch.Tensor, golden: torch.Tensor) -> str:
    """A self-explaining line for test failures: max/mean error, the worst element and both values."""
    o, g = _pair(out, golden)
    d = (o - g).abs()
    bad = int((~torch.isfinite(o)).sum())
    finite = torch.where(torch.isfinite(d), d, torch.zeros_like(d))
    idx = int(torch.argmax(finite))
    where = tuple(int(i) for i in torch.unravel_index(torch.tensor(idx), o.shape))
    return (
        f"max abs err {float(finite.max()):.3e}, mean abs err {float(finite.mean()):.3e}, "
        f"worst at {where}: out={float(o.reshape(-1)[idx])!r} golden={float(g.reshape(-1)[idx])!r}, "
        f"non-finite outputs {bad}/{o.numel()}"
    )


@dataclass
class Census:
    """Non-finite values produced per pipeline stage (see the module docstring)."""

    counts: dict[str, int] = field(default_factory=lambda: {s: 0 for s in STAGES})

    def record(self, stage: str, *tensors: torch.Tensor) -> None:
        if stage not in self.counts:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self.counts[stage] += sum(nonfinite_count(t) for t in tensors if t is not None)

    @property
    def first_stage(self) -> str | None:
        """The earliest stage, in pipeline order, that produced a non-finite value."""
        for s in STAGES:
            if self.counts[s]:
                return s
        return None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __str__(self) -> str:
        parts = ", ".join(f"{s}={n}" for s, n in self.counts.items() if n)
        return f"first non-finite at {self.first_stage}: {parts}" if parts else "all finite"


_local = threading.local()


def active_census() -> Census | None:
    """The innermost census being recorded on this thread, if any (used by the kernels)."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


@contextmanager
def census() -> Iterator[Census]:
    """Record non-finite values per stage for the kernels called inside the ``with`` block."""
    c = Census()
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(c)
    try:
        yield c
    finally:
        stack.pop()
