"""The figure registry: every figure function by name, with its notebook and whether the README cites it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._io import FigureResult
from ._sweep import SWEEP_FIGURES, SweepOptions
from .beyond import beyond_pasa
from .comparison import beta_sweep, method_comparison
from .optimal_beta import beta_fixed_points, kappa_landscape
from .overflow import accumulator_overflow, overflow_frontier, resonance_accuracy, resonance_statistics
from .predicted import error_budget, error_vs_length, predicted_vs_measured
from .scheme import fp64_exactness

__all__ = ["FigureSpec", "FIGURES", "make_figure"]


@dataclass(frozen=True)
class FigureSpec:
    """One entry of :data:`FIGURES`: the function, the notebook showing it, whether the README cites it."""

    name: str
    function: Callable[..., FigureResult[Any]]
    notebook: str
    description: str
    cited: bool

    @property
    def sweep(self) -> bool:
        """Whether the figure's data is a sweep of kernel runs (a spec in ``examples/``, see
        :data:`pasa_npu.figures.SWEEP_FIGURES`); such a figure takes ``data=``."""
        return self.name in SWEEP_FIGURES


def _spec(
    function: Callable[..., FigureResult[Any]], notebook: str, description: str, cited: bool = False
) -> FigureSpec:
    return FigureSpec(function.__name__, function, notebook, description, cited)


#: Registry: figure name → spec, in notebook order.
FIGURES: dict[str, FigureSpec] = {
    s.name: s
    for s in (
        _spec(
            fp64_exactness,
            "01_shifting_scheme",
            "PASA in float64 equals attention up to float64 rounding, for every β and block size",
        ),
        _spec(
            beta_fixed_points,
            "02_optimal_beta",
            "every fixed point of the β equation per rounding cell, per format and block size, with |κ|",
        ),
        _spec(
            kappa_landscape,
            "02_optimal_beta",
            "κ(β) for fp16, n = 128: the equation's setting, the script preset's and npu_fp16's",
            cited=True,
        ),
        _spec(
            overflow_frontier,
            "03_overflow_resonance",
            "the input mean at which each method first overflows, measured and predicted",
            cited=True,
        ),
        _spec(
            accumulator_overflow,
            "03_overflow_resonance",
            "unnormalised O/ℓ accumulators overflow at S2·mean(V) ≈ 65520; renormalised ones never",
        ),
        _spec(
            resonance_statistics,
            "03_overflow_resonance",
            "resonance: score magnitude, row bias and what the shift removes, over phases, amplitudes and seeds",
            cited=True,
        ),
        _spec(
            resonance_accuracy,
            "03_overflow_resonance",
            "resonance: each method's error relative to naive fp16 attention, aligned and random phase",
        ),
        _spec(
            predicted_vs_measured,
            "04_predicted_vs_measured",
            "predicted against measured error for every method over the grid and sequence lengths",
            cited=True,
        ),
        _spec(
            error_budget,
            "04_predicted_vs_measured",
            "per-stage error budget of PASA's presets and fp16 flash attention on one case",
        ),
        _spec(
            error_vs_length,
            "04_predicted_vs_measured",
            "error against the sequence length, measured and predicted",
        ),
        _spec(
            method_comparison,
            "05_method_comparison",
            "accuracy of every method relative to naive fp16 attention on the reference grid",
            cited=True,
        ),
        _spec(
            beta_sweep,
            "05_method_comparison",
            "error against β over several data draws, with the c·ulp(μ̃)/2 sawtooth of the script preset",
            cited=True,
        ),
        _spec(
            beyond_pasa,
            "06_beyond_pasa",
            "each arrangement ÷ fa_hybrid per grid cell with the fully fp16 floor, under the accumulation "
            "models, and the cost model",
            cited=True,
        ),
    )
}


def make_figure(
    name: str,
    *,
    quick: bool | None = None,
    out: str | Path | None = None,
    from_csv: str | Path | None = None,
    data: str | Path | SweepOptions | None = None,
) -> FigureResult[Any]:
    """Run the figure function called ``name`` (see :data:`FIGURES`); ``data`` (where and how to run
    its sweep) only for the sweep-backed figures."""
    if name not in FIGURES:
        raise ValueError(f"name: unknown figure {name!r}; figures: {', '.join(FIGURES)}")
    if data is None:
        return FIGURES[name].function(quick=quick, out=out, from_csv=from_csv)
    if not FIGURES[name].sweep:
        raise ValueError(
            f"data: figure {name!r} is not computed by a sweep; those are {', '.join(SWEEP_FIGURES)}"
        )
    return FIGURES[name].function(quick=quick, out=out, from_csv=from_csv, data=data)
