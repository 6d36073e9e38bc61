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
:mod:`.beyond`                 06 beyond PASA: ``beyond_pasa``
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

**Sweeps.** The figures whose data is a sweep of kernel runs (:data:`SWEEP_FIGURES`:
``method_comparison``, ``beta_sweep``, ``overflow_frontier``) compute it with :mod:`pasa_npu.sweep`
from a TOML spec in ``examples/`` (:func:`spec_path`) and take ``data=`` (a folder keeping the
Parquet datasets, or :class:`SweepOptions` with a spec, an executor, workers, a Dask scheduler)::

    python -m pasa_npu.figures --all --out figures --sweep-data results/figures --executor processes
    python -m pasa_npu.figures --only method_comparison --spec big.toml --sweep-data results/big

(guide: docs/sweeps.md, "Figures").

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

from ._cli import main
from ._common import FOLDED_BETAS, FP16_MAX, FP16_OVERFLOW, PUBLISHED_BETAS, U64
from ._io import FIGURES_DIR, FigureResult, quick_mode, read_csv, save_figure, write_csv
from ._registry import FIGURES, FigureSpec, make_figure
from ._style import (
    COLUMN_WIDTH,
    DARK_GREY,
    GREY,
    METHOD_STYLES,
    OKABE_ITO,
    STYLE_RC,
    MethodStyle,
    method_style,
)
from ._sweep import SPECS_DIR, SWEEP_FIGURES, SweepOptions, figure_points, read_points, spec_path
from .beyond import BeyondSummary, MethodSpread, beyond_pasa
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
    "OKABE_ITO",
    "GREY",
    "DARK_GREY",
    "COLUMN_WIDTH",
    "STYLE_RC",
    "MethodStyle",
    "METHOD_STYLES",
    "method_style",
    "quick_mode",
    "FIGURES_DIR",
    "comparison_shape",
    "COMPARISON_METHODS",
    "ONE_HOT_BELOW",
    "PREDICT_METHODS",
    "OVERFLOW_METHODS",
    "RESONANCE_METHODS",
    "predicted_overflow_mean",
    "FigureResult",
    "FigureSpec",
    "FIGURES",
    "make_figure",
    "SweepOptions",
    "SWEEP_FIGURES",
    "SPECS_DIR",
    "spec_path",
    "figure_points",
    "read_points",
    "save_figure",
    "write_csv",
    "read_csv",
    "main",
    # figures
    "fp64_exactness",
    "beta_fixed_points",
    "kappa_landscape",
    "overflow_frontier",
    "accumulator_overflow",
    "resonance_statistics",
    "resonance_accuracy",
    "method_comparison",
    "beta_sweep",
    "predicted_vs_measured",
    "error_budget",
    "error_vs_length",
    "beyond_pasa",
    # their summaries
    "Fp64ExactnessSummary",
    "BetaFixedPointsSummary",
    "KappaLandscapeSummary",
    "OverflowSummary",
    "OverflowFrontierSummary",
    "AccumulatorOverflowSummary",
    "ResonanceStatisticsSummary",
    "ResonanceAccuracySummary",
    "MethodPrediction",
    "PredictionTotals",
    "PredictedVsMeasuredSummary",
    "BudgetEntry",
    "ErrorVsLengthSummary",
    "MethodRatios",
    "MethodComparisonSummary",
    "BetaSweepMethod",
    "BetaSweepSummary",
    "BeyondSummary",
    "MethodSpread",
    # constants
    "FP16_MAX",
    "FP16_OVERFLOW",
    "U64",
    "PUBLISHED_BETAS",
    "FOLDED_BETAS",
    "GRID_COLUMNS",
    "PVM_COLUMNS",
]
