r"""Paper figures: every figure of the notebooks, each made by one plain function.

One module per notebook, plus the shared style and I/O:

=============================  ======================================================================
:mod:`.scheme`                 01 the shifting scheme: ``fp64_exactness``
:mod:`.optimal_beta`           02 the optimal β: ``beta_fixed_points``, ``kappa_landscape``
:mod:`.overflow`               03 overflow and resonance: ``overflow_frontier``, ``accumulator_overflow``,
                               ``resonance_statistics``, ``resonance_accuracy``
:mod:`.predicted`              04 predicted against measured: ``predicted_vs_measured``,
                               ``error_budget``, ``error_vs_length``
:mod:`.comparison`             05 method comparison: ``method_comparison``, ``beta_sweep``
:mod:`._style`, :mod:`._io`    style (palette, widths, one style per method); CSV, saving, the runner
=============================  ======================================================================

Each figure function computes its data (or, with ``from_csv=``, reads the CSV it wrote before),
draws it and, given ``out=`` (a folder), writes ``<name>.pdf`` (vector), ``<name>.png`` (300 dpi)
and ``<name>.csv``: the data set-up as ``# key: value`` header lines, then the rows behind the
figure (the drawing reads nothing else). It returns a :class:`FigureResult` whose ``summary`` is a
dataclass of the figure's module; it displays itself in a notebook. Nothing is written unless
``out`` is given; :data:`FIGURES_DIR` is the repository's ``figures/`` folder, found from the
package's location, not the working directory. ``make figures`` runs them all::

    python -m pasa_npu.figures --all --out figures            # full mode: the committed figures
    python -m pasa_npu.figures --only kappa_landscape --quick  # small shapes, seconds
    python -m pasa_npu.figures --cited --from-csv figures --out figures   # redraw from the CSVs
    python -m pasa_npu.figures --list

**Quick mode** (``quick=True``, or the environment variable ``PASA_QUICK=1`` when ``quick`` is not
given) uses small shapes and coarse sweeps; the notebooks run in it under ``make test``.

**Determinism.** Every random input comes from a fixed seed (the generators of :mod:`pasa_npu.data`);
the PDF carries no date, producer or creator and the PNG no software tag, so running the same command
twice gives the same bytes. CSV numbers are written with 10 significant digits; wall times never.

**Style** (:data:`STYLE_RC`, :data:`METHOD_STYLES`): single-column width (:data:`COLUMN_WIDTH` =
3.4 in), 8 pt text, the Okabe–Ito colour-blind-safe palette (:data:`OKABE_ITO`), and one fixed colour,
marker and line style per method in every figure. matplotlib is imported inside the drawing helpers
only: ``import pasa_npu.figures`` does not load it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._common import FOLDED_BETAS, FP16_MAX, FP16_OVERFLOW, PUBLISHED_BETAS, U64
from ._io import FIGURES_DIR, FigureResult, quick_mode, read_csv, save_figure, write_csv
from ._style import COLUMN_WIDTH, DARK_GREY, GREY, METHOD_STYLES, OKABE_ITO, STYLE_RC, MethodStyle, method_style
from .comparison import (
    COMPARISON_METHODS,
    GRID_COLUMNS,
    ONE_HOT_BELOW,
    BetaSweepMethod,
    BetaSweepSummary,
    MethodComparisonSummary,
    MethodRatios,
    beta_sweep,
    comparison_shape,
    method_comparison,
)
from .optimal_beta import BetaFixedPointsSummary, KappaLandscapeSummary, beta_fixed_points, kappa_landscape
from .overflow import (
    OVERFLOW_METHODS,
    RESONANCE_METHODS,
    AccumulatorOverflowSummary,
    OverflowFrontierSummary,
    OverflowSummary,
    ResonanceAccuracySummary,
    ResonanceStatisticsSummary,
    accumulator_overflow,
    overflow_frontier,
    predicted_overflow_mean,
    resonance_accuracy,
    resonance_statistics,
)
from .predicted import (
    PREDICT_METHODS,
    PVM_COLUMNS,
    BudgetEntry,
    ErrorVsLengthSummary,
    MethodPrediction,
    PredictedVsMeasuredSummary,
    PredictionTotals,
    error_budget,
    error_vs_length,
    predicted_vs_measured,
)
from .scheme import Fp64ExactnessSummary, fp64_exactness

__all__ = [
    "OKABE_ITO", "GREY", "DARK_GREY", "COLUMN_WIDTH", "STYLE_RC", "MethodStyle", "METHOD_STYLES", "method_style",
    "quick_mode", "FIGURES_DIR", "comparison_shape", "COMPARISON_METHODS", "ONE_HOT_BELOW", "PREDICT_METHODS",
    "OVERFLOW_METHODS", "RESONANCE_METHODS", "predicted_overflow_mean", "FigureResult", "FigureSpec", "FIGURES",
    "make_figure", "save_figure", "write_csv", "read_csv", "main",
    # figures
    "fp64_exactness", "beta_fixed_points", "kappa_landscape", "overflow_frontier", "accumulator_overflow",
    "resonance_statistics", "resonance_accuracy", "method_comparison", "beta_sweep", "predicted_vs_measured",
    "error_budget", "error_vs_length",
    # their summaries
    "Fp64ExactnessSummary", "BetaFixedPointsSummary", "KappaLandscapeSummary", "OverflowSummary",
    "OverflowFrontierSummary", "AccumulatorOverflowSummary", "ResonanceStatisticsSummary", "ResonanceAccuracySummary",
    "MethodPrediction", "PredictionTotals", "PredictedVsMeasuredSummary", "BudgetEntry", "ErrorVsLengthSummary",
    "MethodRatios", "MethodComparisonSummary", "BetaSweepMethod", "BetaSweepSummary",
    # constants
    "FP16_MAX", "FP16_OVERFLOW", "U64", "PUBLISHED_BETAS", "FOLDED_BETAS", "GRID_COLUMNS", "PVM_COLUMNS",
]


@dataclass(frozen=True)
class FigureSpec:
    """One entry of :data:`FIGURES`: the function, the notebook showing it, whether the README cites it."""

    name: str
    function: Callable[..., FigureResult[Any]]
    notebook: str
    description: str
    cited: bool


def _spec(function: Callable[..., FigureResult[Any]], notebook: str, description: str, cited: bool = False) -> FigureSpec:
    return FigureSpec(function.__name__, function, notebook, description, cited)


#: Registry: figure name → spec, in notebook order.
FIGURES: dict[str, FigureSpec] = {s.name: s for s in (
    _spec(fp64_exactness, "01_shifting_scheme",
          "PASA in float64 equals attention up to float64 rounding, for every β and block size"),
    _spec(beta_fixed_points, "02_optimal_beta",
          "every fixed point of the β equation per rounding cell, per format and block size, with |κ|"),
    _spec(kappa_landscape, "02_optimal_beta",
          "κ(β) for fp16, n = 128: the equation's setting, the script preset's and npu_fp16's", cited=True),
    _spec(overflow_frontier, "03_overflow_resonance",
          "the input mean at which each method first overflows, measured and predicted", cited=True),
    _spec(accumulator_overflow, "03_overflow_resonance",
          "unnormalised O/ℓ accumulators overflow at S2·mean(V) ≈ 65520; renormalised ones never"),
    _spec(resonance_statistics, "03_overflow_resonance",
          "resonance: score magnitude, row bias and what the shift removes, over phases, amplitudes and seeds",
          cited=True),
    _spec(resonance_accuracy, "03_overflow_resonance",
          "resonance: each method's error relative to naive fp16 attention, aligned and random phase"),
    _spec(predicted_vs_measured, "04_predicted_vs_measured",
          "predicted against measured error for every method over the grid and sequence lengths", cited=True),
    _spec(error_budget, "04_predicted_vs_measured",
          "per-stage error budget of PASA's presets and fp16 flash attention on one case"),
    _spec(error_vs_length, "04_predicted_vs_measured", "error against the sequence length, measured and predicted"),
    _spec(method_comparison, "05_method_comparison",
          "accuracy of every method relative to naive fp16 attention on the reference grid", cited=True),
    _spec(beta_sweep, "05_method_comparison",
          "error against β over several data draws, with the c·ulp(μ̃)/2 sawtooth of the script preset", cited=True),
)}


def make_figure(name: str, *, quick: bool | None = None, out: str | Path | None = None,
                from_csv: str | Path | None = None) -> FigureResult[Any]:
    """Run the figure function called ``name`` (see :data:`FIGURES`)."""
    if name not in FIGURES:
        raise ValueError(f"name: unknown figure {name!r}; figures: {', '.join(FIGURES)}")
    return FIGURES[name].function(quick=quick, out=out, from_csv=from_csv)


from ._cli import main  # noqa: E402 (the command line needs FIGURES)
