"""Figures of notebook 04 (predicted against measured): the four error products of
:func:`pasa_theory.predict` against the harness's measurements.

Each product is named for what it is (docs/error-model.md §9):

* ``pred_bound`` — the **rigorous a-posteriori bound** (Theorems 1 and 4 of docs/bounds.md §9, §14; 6 for
  ``fp16_accurate``, §16; 8 for the script, §17; a theorem; PASA's conditional on the K̃ the run computed);
* ``pred_prob`` — the **probabilistic bound** (Propositions 3 and 4, §12, §18: holds per element with
  probability ≥ 0.99 under its stated model);
* ``pred_a_priori`` — the **a-priori bound** (Theorems 2, 7 and 9, §11, §16.7, §19.1: every input with the
  same maxima);
* ``pred_rmse`` — the **RMSE estimate**, a stochastic shadow simulation (a model, not a bound; the score
  tile's rounding is emulated where the inputs determine it, docs/error-model.md §8.12);
* ``hull_cap`` — max_r |v_r − o|, what any convex combination of V guarantees: a bound at or above it
  says nothing.

``pasa:script`` has the rigorous bound of Theorem 8 (docs/bounds.md §17, the enclosure of its running
offsets) and the a-priori bound of Theorem 9 (§19.1); ``smooth_k`` the rigorous bound of Lemma 17.4
(fa_qk on the smoothed keys, enclosed) and the a-priori Theorem 2 with Lemma 19.2 (§19.2). A method outside
every theorem's scope has the estimate only
(its bound columns are empty, ``theorem`` says so).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pasa_theory.bounds import TERMS

from .. import data, sweep
from ..predict_report import predict_case
from ._common import METHOD_DOC, spread
from ._io import FigureResult, Row, run_figure
from ._style import GREY, OKABE_ITO, edge_colour, legend_below, method_style, new_figure
from ._sweep import SWEEP_DOC, SweepOptions, figure_points, open_runner, sweep_options

__all__ = [
    "PREDICT_METHODS",
    "PVM_COLUMNS",
    "MethodPrediction",
    "PredictionTotals",
    "PredictedVsMeasuredSummary",
    "ProductStats",
    "PVM_PRODUCTS",
    "pvm_products",
    "rows_from_sweep",
    "pvm_readme_table",
    "PVM_README_ROWS",
    "predicted_vs_measured",
    "BudgetEntry",
    "error_budget",
    "ErrorVsLengthSummary",
    "error_vs_length",
]

#: Methods compared with the rounding-error model (every one :func:`pasa_theory.bounds.predict` models).
PREDICT_METHODS = (
    "pasa",
    "pasa:script",
    "pasa:fp16_keymean",
    "pasa:bf16",
    "pasa:fp16_accurate",
    "fa_qk",
    "fa_q",
    "fa_naive",
    "fa_hybrid",
    "smooth_k",
)
PVM_COLUMNS = (
    "dist",
    "mean",
    "amplitude",
    "seq_q",
    "seq_kv",
    "method",
    "rmse",
    "max_abs_err",
    "nonfinite",
    "first_nonfinite_stage",
    "hull_cap",
    "pred_bound",
    "pred_prob",
    "pred_a_priori",
    "pred_rmse",
    "pred_first_order",
    "theorem",
    "pred_overflow_stage",
    "bound_dominant",
    "dominant",
    "regime",
    "bound_ratio",
    "prob_ratio",
    "a_priori_ratio",
    "rmse_ratio",
    "bound_ok",
    "prob_ok",
    "a_priori_ok",
    "bound_below_cap",
    "prob_below_cap",
    "a_priori_below_cap",
    "rmse_within_1_5x",
    "overflow_ok",
    "seconds",
    "bound_cost",
    "a_priori_cost",
    "estimate_cost",
)

#: The four products as the figure and the README table name them: (key, column, measured column, label).
PVM_PRODUCTS = (
    ("bound", "pred_bound", "max_abs_err", "rigorous (Thms 1, 4, 6, 8)"),
    ("prob", "pred_prob", "max_abs_err", "probabilistic (Props 3, 4)"),
    ("a_priori", "pred_a_priori", "max_abs_err", "a-priori (Thms 2, 7, 9)"),
    ("estimate", "pred_rmse", "rmse", "RMSE estimate"),
)

#: The sweep specification whose points are the figure's data.
PVM_SPEC = Path(__file__).resolve().parents[2] / "examples" / "predicted_vs_measured.toml"


def _theorem(status: Any) -> str:
    """Short form of ``bound_status``: which theorem was evaluated and how, or ``none``."""
    s = str(status or "")
    if s.startswith("theorem 8"):
        return "script (Thm 8)"
    if "observed" in s:
        return "observed K̃"
    if "any summation order" in s:
        return "any-order K̃"
    if s.startswith("theorem 1"):
        return "flash attention"
    if s.startswith("theorem 6"):
        return "reference (Thm 6)"
    return "none"


def _predicted_and_measured(q: Any, k: Any, v: Any, methods: tuple[str, ...], **kw: Any) -> list[Row]:
    """One record per method from :func:`pasa_npu.predict_report.predict_case`: the harness's
    measurement against the float64 golden beside :func:`pasa_theory.bounds.predict_many` on the same
    tensors (the ``pasa-verify --predict`` schema), without the rigorous bound (these figures show the
    estimate)."""
    recs = predict_case(q, k, v, list(methods), rigorous=False, **kw)
    for r in recs:
        r["first_nonfinite_stage"] = r["first_nonfinite_stage"] or ""
        r["pred_overflow_stage"] = r["pred_overflow_stage"] or ""
    return recs


@dataclass(frozen=True)
class MethodPrediction:
    """One method's agreement with the model over the inputs of :func:`predicted_vs_measured`."""

    cases: int
    overflow_measured: int
    overflow_agree: int
    rmse_ratio_median: float | None
    rmse_ratio_min: float | None
    rmse_ratio_max: float | None
    rmse_within_3x: float | None
    bound_holds: float | None
    bound_ratio_median: float | None
    rmse_within_1_5x: float | None = None
    bound_below_cap: float | None = None


@dataclass(frozen=True)
class PredictionTotals:
    """Totals over every (input, method) of :func:`predicted_vs_measured` (counts over the compared,
    i.e. non-overflowing, cases; the ``pasa-verify --predict`` summary)."""

    cases: int
    compared: int
    bound_ok: int
    rmse_within_3x: int
    rmse_within_3x_fraction: float
    rmse_within_2x: int
    overflow_ok: int
    overflow_cases: int
    median_bound_ratio: float
    median_rmse_ratio: float
    #: cases with a rigorous bound computed, and the estimate within 1.5x
    bounded: int = 0
    rmse_within_1_5x: int = 0


@dataclass(frozen=True)
class PredictedVsMeasuredSummary:
    """Headline numbers of :func:`predicted_vs_measured`."""

    methods: dict[str, MethodPrediction]
    all: PredictionTotals
    #: per product over every method it covers (:func:`pvm_products`)
    products: dict[str, ProductStats] = field(default_factory=dict)


def _row_of(rec: dict[str, Any]) -> Row:
    """One sweep result row as the figure's row (the columns of :data:`PVM_COLUMNS`, NaN and nulls as
    empty cells)."""
    row: Row = {}
    for c in PVM_COLUMNS:
        x = rec.get(c)
        if c == "theorem":
            x = _theorem(rec.get("bound_status"))
        elif isinstance(x, float) and math.isnan(x):
            x = None
        elif c in ("first_nonfinite_stage", "pred_overflow_stage", "bound_dominant") and x is None:
            x = ""
        elif hasattr(x, "item"):
            x = x.item()
        row[c] = x
    return row


def _sorted(rows: list[Row]) -> list[Row]:
    order = {m: i for i, m in enumerate(PREDICT_METHODS)}
    return sorted(
        rows, key=lambda r: (r["dist"], r["mean"], r["amplitude"], r["seq_kv"], order.get(r["method"], 99))
    )


def rows_from_sweep(out: str | Path) -> list[Row]:
    """The figure's rows from a sweep dataset (``pasa-sweep examples/predicted_vs_measured.toml
    --out DIR``, :func:`pasa_npu.sweep.load`): one per point, the columns of :data:`PVM_COLUMNS`, NaN and
    nulls as empty cells, sorted by (dist, mean, amplitude, S2, method order)."""
    df = sweep.load(out)
    bad = df[df["status"] != "ok"]
    if len(bad):
        raise RuntimeError(f"{len(bad)} failed sweep points under {out}: {bad['error'].iloc[0]}")
    return _sorted([_row_of(rec) for rec in df.to_dict("records")])


def _pvm_compute(quick: bool, options: SweepOptions) -> tuple[list[Row], dict[str, str]]:
    """The figure's rows from its sweep (the committed spec of the mode, or ``options.spec``)."""
    pts, custom = figure_points("predicted_vs_measured", quick, options.spec)
    with open_runner("predicted_vs_measured", options) as run:
        recs = run(pts)
    return _sorted([_row_of(r) for r in recs]), _pvm_setup(pts, quick, custom)


def _pvm_setup(pts: list[dict], quick: bool, custom: str | None = None) -> dict[str, str]:
    spec = custom or (
        "examples/figures/quick/predicted_vs_measured.toml"
        if quick
        else "examples/predicted_vs_measured.toml"
    )

    def vals(key: str) -> str:
        return ", ".join(
            f"{x:g}" if isinstance(x, float) else str(x) for x in dict.fromkeys(p[key] for p in pts)
        )

    return dict(
        data=f"make_qkv, seed 2024724, dist {vals('dist')} x mean {vals('mean')} x amplitude {vals('amplitude')}; "
        f"fp16 inputs; the points of {spec} (pasa-sweep, predict = true)",
        shape=f"batch 1, heads 1, kv_heads 1, S1 {vals('seq_q')} (a row sample: rows are i.i.d. without a mask), "
        f"S2 {vals('seq_kv')}, d 128, block_kv 128",
        methods=vals("method"),
        measured="rmse, max_abs_err against the float64 golden on the sampled rows; inf/NaN and its first stage",
        pred_bound="rigorous a-posteriori bound (a theorem): Theorem 1 with the enclosure of Theorem 4 (docs/bounds.md "
        "§9, §13, §14; the shifting presets conditional on the K-tilde the run computed), Theorem 6 (§16) for "
        "pasa:fp16_accurate; empty where not covered (theorem = none)",
        pred_prob="probabilistic bound, Propositions 3 and 4 of docs/bounds.md (§12, §18; §16.6 for "
        "pasa:fp16_accurate), confidence 0.99 (a theorem under its model)",
        pred_a_priori="a-priori bound, Theorem 2 of docs/bounds.md (Theorem 7 for pasa:fp16_accurate, Theorem 9 "
        "for pasa:script), for every input with the same maxima (a theorem)",
        pred_rmse="RMSE estimate: stochastic shadow simulation of pasa_theory.bounds, the score tile's rounding "
        "emulated where the inputs determine it (docs/error-model.md §8.11-§8.12; §10 for pasa:fp16_accurate; "
        "a model, not a bound)",
        pred_first_order="first-order evaluation along the exact trajectory (the former max_abs_bound; not a bound)",
        hull_cap="max over rows of max_r |v_r - o|: a bound at or above it is vacuous",
        cost="bound_cost, a_priori_cost, estimate_cost: seconds of the product / seconds of the method's kernel "
        "run on the same rows, single-threaded, one run each (noisy)",
    )


def _pvm_summarize(rows: list[Row]) -> PredictedVsMeasuredSummary:
    methods = {}
    for meth in PREDICT_METHODS:
        sub = [r for r in rows if r["method"] == meth]
        ratios = [r["rmse_ratio"] for r in sub if r["rmse_ratio"] is not None]
        r_min, r_med, r_max = spread(ratios)
        bounds_ = [bool(r["bound_ok"]) for r in sub if r["bound_ok"] is not None]
        bratios = [r["bound_ratio"] for r in sub if r["bound_ratio"] is not None]
        methods[meth] = MethodPrediction(
            cases=len(sub),
            overflow_measured=sum(1 for r in sub if r["nonfinite"]),
            overflow_agree=sum(1 for r in sub if r["overflow_ok"]),
            rmse_ratio_median=r_med,
            rmse_ratio_min=r_min,
            rmse_ratio_max=r_max,
            rmse_within_3x=sum(1 for x in ratios if 1 / 3 <= x <= 3) / len(ratios) if ratios else None,
            bound_holds=sum(bounds_) / len(bounds_) if bounds_ else None,
            bound_ratio_median=statistics.median(bratios) if bratios else None,
            rmse_within_1_5x=sum(1 for x in ratios if 1 / 1.5 <= x <= 1.5) / len(ratios) if ratios else None,
            bound_below_cap=(
                sum(bool(r["bound_below_cap"]) for r in sub if r["bound_below_cap"] is not None)
                / len(bounds_)
                if bounds_
                else None
            ),
        )
    ok = [r for r in rows if r["rmse_ratio"] is not None]
    rr = [r["rmse_ratio"] for r in ok]
    bounded = [r for r in rows if r["bound_ok"] is not None]
    br = [r["bound_ratio"] for r in bounded if r["bound_ratio"] is not None]
    within3 = sum(1 for x in rr if 1 / 3 <= x <= 3)
    totals = PredictionTotals(
        cases=len(rows),
        compared=len(ok),
        bound_ok=sum(bool(r["bound_ok"]) for r in bounded),
        rmse_within_3x=within3,
        rmse_within_3x_fraction=within3 / len(ok) if ok else math.nan,
        rmse_within_2x=sum(1 for x in rr if 0.5 <= x <= 2),
        overflow_ok=sum(bool(r["overflow_ok"]) for r in rows),
        overflow_cases=sum(bool(r["nonfinite"]) for r in rows),
        median_bound_ratio=statistics.median(br) if br else math.nan,
        median_rmse_ratio=statistics.median(rr) if rr else math.nan,
        bounded=len(bounded),
        rmse_within_1_5x=sum(1 for x in rr if 1 / 1.5 <= x <= 1.5),
    )
    return PredictedVsMeasuredSummary(methods, totals, products=pvm_products(rows))


def _q90(xs: list[float]) -> float:
    ys = sorted(xs)
    if not ys:
        return math.nan
    pos = 0.9 * (len(ys) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ys) - 1)
    return ys[lo] + (ys[hi] - ys[lo]) * (pos - lo) if math.isfinite(ys[hi]) or pos == lo else ys[hi]


@dataclass(frozen=True)
class ProductStats:
    """One product over the figure's compared cases (no overflow measured or predicted, product computed):
    ``holds`` is the fraction of bounds >= the measured max|err| (estimate: within 1.5x of the measured
    RMSE), ``below_cap`` the fraction of bounds below the hull cap, ratios product/measured, and the
    median cost as a ratio to one kernel run on the same rows."""

    product: str
    methods: tuple[str, ...]
    cases: int
    holds: float
    below_cap: float | None
    median_ratio: float
    p90_ratio: float
    median_cost: float


def pvm_products(rows: list[Row], methods: tuple[str, ...] | None = None) -> dict[str, ProductStats]:
    """:class:`ProductStats` of each product of :data:`PVM_PRODUCTS` over ``rows`` (restricted to
    ``methods`` if given); the README's table is this, read from the committed CSV."""
    sub = [r for r in rows if methods is None or r["method"] in methods]
    out = {}
    for key, _col, _ref, _label in PVM_PRODUCTS:
        if key == "estimate":
            ok = [r for r in sub if r["rmse_within_1_5x"] is not None]
            hits = [bool(r["rmse_within_1_5x"]) for r in ok]
            ratios = [r["rmse_ratio"] for r in ok]
            below = None
            cost_col = "estimate_cost"
        else:
            ok = [r for r in sub if r[f"{key}_ok"] is not None]
            hits = [bool(r[f"{key}_ok"]) for r in ok]
            ratios = [r[f"{key}_ratio"] for r in ok]
            below = sum(bool(r[f"{key}_below_cap"]) for r in ok) / len(ok) if ok else None
            cost_col = "bound_cost" if key == "prob" else f"{key}_cost"
        costs = [r[cost_col] for r in ok if r[cost_col] is not None]
        out[key] = ProductStats(
            product=key,
            methods=tuple(dict.fromkeys(r["method"] for r in ok)),
            cases=len(ok),
            holds=sum(hits) / len(hits) if hits else math.nan,
            below_cap=below,
            median_ratio=statistics.median(ratios) if ratios else math.nan,
            p90_ratio=_q90(ratios),
            median_cost=statistics.median(costs) if costs else math.nan,
        )
    return out


#: Rows of the README's table: (product key, methods or None for every method the product covers).
PVM_README_ROWS = (
    ("bound", None),
    ("bound", ("pasa",)),
    ("prob", None),
    ("a_priori", None),
    ("a_priori", ("pasa",)),
    ("estimate", None),
    ("estimate", ("pasa",)),
)
_PRODUCT_NAMES = {
    "bound": "rigorous a-posteriori bound (theorem)",
    "prob": "probabilistic bound, δ = 0.01 (theorem under its model)",
    "a_priori": "a-priori bound (theorem, every input with the same maxima)",
    "estimate": "RMSE estimate (model)",
}


def pvm_readme_table(rows: list[Row]) -> str:
    """The README's markdown table of the four products over ``rows`` (the committed CSV's): per product
    (over every method it covers, and for ``pasa``) the compared cases, how often it holds (bounds: >=
    the measured max|err|; estimate: within 1.5x of the measured RMSE), how often a bound is below the
    hull cap, the median and 90th percentile of product/measured and the median cost per kernel run."""

    def pc(x: float | None) -> str:
        return "—" if x is None or not math.isfinite(x) else f"{100 * x:.0f} %"

    def num(x: float) -> str:
        if not math.isfinite(x):
            return "∞" if x > 0 else "—"
        return f"{x:.3g}" if x < 1000 else f"{x:.2g}".replace("e+0", "·10^").replace("e+", "·10^")

    lines = [
        "| product | methods | cases | holds | below hull cap | median ratio | p90 ratio | cost ÷ kernel run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, meths in PVM_README_ROWS:
        st = pvm_products(rows, meths)[key]
        who = "`pasa` (npu_fp16)" if meths else ", ".join(f"`{m}`" for m in st.methods)
        lines.append(
            f"| {_PRODUCT_NAMES[key]} | {who} | {st.cases} | {pc(st.holds)} | {pc(st.below_cap)} | "
            f"{num(st.median_ratio)} | {num(st.p90_ratio)} | {num(st.median_cost)} |"
        )
    return "\n".join(lines)


def _pvm_draw(rows: list[Row], summary: PredictedVsMeasuredSummary) -> Any:
    fig, axes = new_figure(5.6, 2, 2)
    panels = [axes[0, 0], axes[0, 1], axes[1, 0], axes[1, 1]]
    finite_vals = [
        r[c]
        for r in rows
        for c in ("max_abs_err", "rmse", "hull_cap", "pred_bound", "pred_prob", "pred_a_priori", "pred_rmse")
        if r["rmse_ratio"] is not None and r[c] is not None and 0 < r[c] < math.inf
    ]
    lo, hi = min(finite_vals) / 2, max(finite_vals) * 2
    top = hi / 1.4  # infinite (vacuous) bounds are drawn at the top edge
    for ax, (key, col, ref, label) in zip(panels, PVM_PRODUCTS):
        st_ok = summary.products[key]
        for meth in PREDICT_METHODS:
            st = method_style(meth)
            sub = [
                r for r in rows if r["method"] == meth and r["rmse_ratio"] is not None and r[col] is not None
            ]
            if not sub:
                continue
            ys = [min(r[col], top) for r in sub]
            ax.plot(
                [r[ref] for r in sub],
                ys,
                linestyle="none",
                marker=st.marker,
                color=st.color,
                markeredgecolor=edge_colour(st.color),
                markersize=2.4,
                markeredgewidth=0.4,
                alpha=0.85,
                label=st.label if key == "estimate" else None,
            )
        if key != "estimate":
            cap = [r for r in rows if r["rmse_ratio"] is not None and r[col] is not None]
            ax.plot(
                [r[ref] for r in cap],
                [r["hull_cap"] for r in cap],
                linestyle="none",
                marker="_",
                color=GREY,
                markersize=4,
                markeredgewidth=0.6,
                zorder=0,
                label="hull cap max|v − o|" if key == "bound" else None,
            )
        xs = np.array([lo, hi])
        ax.plot(xs, xs, color=OKABE_ITO["black"], linewidth=0.7, label="y = x" if key == "bound" else None)
        if key == "estimate":
            ax.plot(xs, 1.5 * xs, color=GREY, linestyle="--", linewidth=0.6, label="×1.5, ÷1.5")
            ax.plot(xs, xs / 1.5, color=GREY, linestyle="--", linewidth=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.tick_params(labelsize=5.5)
        hit = f"{100 * st_ok.holds:.0f} %"
        if key == "estimate":
            title = f"(d) {label} (model)\n{hit} within 1.5×"
            ax.set_xlabel("measured RMSE", fontsize=6)
        else:
            below = f"{100 * st_ok.below_cap:.0f} %" if st_ok.below_cap is not None else "-"
            title = (
                f"({'abc'[[p[0] for p in PVM_PRODUCTS].index(key)]}) {label}\nholds {hit}, < hull cap {below}"
            )
            ax.set_xlabel("measured max|error|", fontsize=6)
        ax.set_title(title, loc="left", pad=2, fontsize=6)
    panels[0].set_ylabel("bound", fontsize=6)
    panels[2].set_ylabel("bound (∞ at the top edge)", fontsize=6)
    panels[3].set_ylabel("estimated RMSE", fontsize=6)
    legend_below(fig, ncols=2, fontsize=5.4)
    return fig


def predicted_vs_measured(
    *,
    quick: bool | None = None,
    out: str | Path | None = None,
    from_csv: str | Path | None = None,
    data: str | Path | SweepOptions | None = None,
) -> FigureResult[PredictedVsMeasuredSummary]:
    """The four error products of :func:`pasa_theory.predict` against the harness, input by input
    (measured on x): (a) the rigorous a-posteriori bound (Theorems 1, 4, 6 and 8, a theorem), (b) the
    probabilistic bound (Propositions 3 and 4, confidence 0.99), (c) the a-priori bound (Theorems 2, 7, 9; ∞ drawn at the top
    edge) against the measured max|error|, each with the hull cap max|v − o| (grey dashes: a bound
    above them is vacuous), and (d) the RMSE estimate (a stochastic shadow simulation, a model, with the score tile's rounding emulated
    where the inputs determine it)
    against the measured RMSE, all measured against the float64 golden, for every method of
    :data:`PREDICT_METHODS` (the bounds where the theorems cover the method). Data: the points of
    ``examples/predicted_vs_measured.toml`` run by :mod:`pasa_npu.sweep` (:func:`rows_from_sweep`):
    the reference grid (uniform and hybrid × mean {0, 10, 20, 30} × amplitude {0.5, 5, 10, 20}, seed
    2024724), one head, a row sample of S1 = 16 query rows, S2 ∈ {256, 1024}, d = 128 (quick:
    means {0, 30} × amplitudes {0.5, 20}, S2 = 256, S1 = 8, four methods). Overflows are compared
    separately: predicted inf/NaN against measured inf/NaN.
    """
    options = sweep_options(data, from_csv)
    return run_figure(
        "predicted_vs_measured",
        columns=PVM_COLUMNS,
        compute=lambda q: _pvm_compute(q, options),
        summarize=_pvm_summarize,
        draw=_pvm_draw,
        quick=quick,
        out=out,
        from_csv=from_csv,
    )


# -- the error budget ------------------------------------------------------------------------------

_BUDGET_METHODS = ("pasa:script", "pasa", "pasa:fp16_keymean", "fa_q")
ERROR_BUDGET_COLUMNS = ("kind", "method", "term", "rms", "dominant", "regime")


@dataclass(frozen=True)
class BudgetEntry:
    """One method's budget in :func:`error_budget`."""

    measured: float
    predicted: float
    dominant: str
    regime: str
    #: the three largest terms, (name, RMS contribution), largest first
    top3: tuple[tuple[str, float], ...]


def _budget_compute(quick: bool) -> tuple[list[Row], dict[str, str]]:
    q, k, v = data.make_qkv(
        "uniform",
        mean=30.0,
        amplitude=0.5,
        batch=1,
        heads=1,
        kv_heads=1,
        seq_q=32 if quick else 256,
        seq_kv=1407,
        head_dim=128,
    )
    rows: list[Row] = []
    for r in _predicted_and_measured(q, k, v, _BUDGET_METHODS):
        for t in TERMS:
            rows.append(dict(kind="term", method=r["method"], term=t, rms=r.get(f"rms.{t}", 0.0)))
        rows.append(
            dict(
                kind="predicted_rmse",
                method=r["method"],
                term="",
                rms=r["pred_rmse"],
                dominant=r["dominant"],
                regime=r["regime"],
            )
        )
        rows.append(dict(kind="measured_rmse", method=r["method"], term="", rms=r["rmse"]))
    setup = dict(
        data="make_qkv uniform, mean 30, amplitude 0.5, seed 2024724 (the script's default case); fp16 inputs",
        shape=f"batch 1, heads 1, kv_heads 1, S1 {32 if quick else 256}, S2 1407, d 128, block_kv 128",
        methods=", ".join(_BUDGET_METHODS),
        term="RMS contribution of each linearised error term of pasa_theory.bounds (estimate)",
        measured_rmse="against the float64 golden (measurement)",
    )
    return rows, setup


def _budget_summarize(rows: list[Row]) -> dict[str, BudgetEntry]:
    out = {}
    for meth in dict.fromkeys(r["method"] for r in rows):
        terms = {r["term"]: r["rms"] for r in rows if r["kind"] == "term" and r["method"] == meth}
        pred = next(r for r in rows if r["kind"] == "predicted_rmse" and r["method"] == meth)
        meas = next(r for r in rows if r["kind"] == "measured_rmse" and r["method"] == meth)
        out[meth] = BudgetEntry(
            measured=meas["rms"],
            predicted=pred["rms"],
            dominant=pred["dominant"],
            regime=pred["regime"],
            top3=tuple(sorted(terms.items(), key=lambda kv: -kv[1])[:3]),
        )
    return out


def _budget_draw(rows: list[Row], summary: dict[str, BudgetEntry]) -> Any:
    fig, axes = new_figure(4.4)
    ax = axes[0, 0]
    used = {r["term"] for r in rows if r["kind"] == "term" and r["rms"] > 0}
    terms: list[str] = []  # pipeline order (the rows list every term)
    for r in rows:
        if r["kind"] == "term" and r["term"] in used and r["term"] not in terms:
            terms.append(r["term"])
    meths = [m for m in _BUDGET_METHODS if any(r["method"] == m for r in rows)]
    h = 0.8 / len(meths)
    for i, meth in enumerate(meths):
        st = method_style(meth)
        vals = {r["term"]: r["rms"] for r in rows if r["kind"] == "term" and r["method"] == meth}
        ys = [len(terms) - 1 - j + (len(meths) / 2 - i - 0.5) * h for j in range(len(terms))]
        ax.barh(
            ys,
            [vals.get(t, 0.0) for t in terms],
            height=h,
            color=st.color,
            edgecolor=edge_colour(st.color),
            linewidth=0.4,
            label=st.label,
        )
        y_tot = len(terms) + 0.6 + (len(meths) / 2 - i - 0.5) * h
        ax.barh(
            [y_tot],
            [summary[meth].predicted],
            height=h,
            color=st.color,
            edgecolor=edge_colour(st.color),
            linewidth=0.4,
        )
        ax.plot(
            [summary[meth].measured],
            [y_tot],
            marker="|",
            color=OKABE_ITO["black"],
            markersize=5,
            markeredgewidth=1.2,
            linestyle="none",
        )
    ax.plot(
        [],
        [],
        marker="|",
        color=OKABE_ITO["black"],
        linestyle="none",
        markersize=5,
        markeredgewidth=1.2,
        label="measured RMSE",
    )
    ax.set_yticks(
        [len(terms) - 1 - j for j in range(len(terms))] + [len(terms) + 0.6],
        terms + ["total (estimated)"],
        fontsize=6.5,
    )
    ax.set_xscale("log")
    ax.set_xlabel("RMS contribution to the output error (estimate)")
    ax.grid(axis="y", visible=False)
    legend_below(fig, ncols=2, fontsize=6)
    return fig


def error_budget(
    *, quick: bool | None = None, out: str | Path | None = None, from_csv: str | Path | None = None
) -> FigureResult[dict[str, BudgetEntry]]:
    """The RMS contribution of every error term of the model (:data:`pasa_theory.bounds.TERMS`, in
    pipeline order; linearised, they add in quadrature: an estimate) for the script preset, npu_fp16,
    fp16_keymean and fp16 flash attention with Q pre-scaled, on the script's default case (uniform,
    mean 30, amplitude 0.5, seed 2024724; one head, S1 = 256, S2 = 1407, d = 128; quick: S1 = 32),
    with each method's estimated and measured RMSE. The summary maps each method to a
    :class:`BudgetEntry`.
    """
    return run_figure(
        "error_budget",
        columns=ERROR_BUDGET_COLUMNS,
        compute=_budget_compute,
        summarize=_budget_summarize,
        draw=_budget_draw,
        quick=quick,
        out=out,
        from_csv=from_csv,
    )


# -- against the sequence length -------------------------------------------------------------------

_LENGTH_METHODS = ("pasa:script", "pasa", "pasa:fp16_keymean", "fa_q", "fa_hybrid")
ERROR_VS_LENGTH_COLUMNS = (
    "seq_kv",
    "method",
    "rmse",
    "pred_rmse",
    "max_abs_err",
    "pred_first_order",
    "nonfinite",
)


@dataclass(frozen=True)
class ErrorVsLengthSummary:
    """Headline numbers of :func:`error_vs_length`: estimated / measured RMSE over every finite run."""

    rmse_ratio_min: float
    rmse_ratio_max: float
    seq_kv: tuple[int, ...]


def _length_compute(quick: bool) -> tuple[list[Row], dict[str, str]]:
    seqs = [2**e for e in range(7, 11 if quick else 15)]
    rows: list[Row] = []
    for s2 in seqs:
        q, k, v = data.make_qkv(
            "uniform",
            mean=10.0,
            amplitude=0.5,
            batch=1,
            heads=1,
            kv_heads=1,
            seq_q=16 if quick else 64,
            seq_kv=s2,
            head_dim=128,
        )
        for r in _predicted_and_measured(q, k, v, _LENGTH_METHODS):
            rows.append(
                dict(
                    seq_kv=s2,
                    method=r["method"],
                    rmse=r["rmse"],
                    pred_rmse=r["pred_rmse"],
                    max_abs_err=r["max_abs_err"],
                    pred_first_order=r["pred_first_order"],
                    nonfinite=r["nonfinite"],
                )
            )
    setup = dict(
        data="make_qkv uniform, mean 10, amplitude 0.5, seed 2024724; fp16 inputs",
        shape=f"batch 1, heads 1, kv_heads 1, S1 {16 if quick else 64}, S2 {', '.join(map(str, seqs))}, d 128, "
        "block_kv 128",
        methods=", ".join(_LENGTH_METHODS),
        rmse="measured against the float64 golden; pred_rmse: RMSE estimate; pred_first_order: first-order "
        "evaluation along the exact trajectory (not a bound)",
    )
    return rows, setup


def _length_summarize(rows: list[Row]) -> ErrorVsLengthSummary:
    ratios = [
        r["pred_rmse"] / r["rmse"]
        for r in rows
        if not r["nonfinite"] and r["rmse"] > 0 and math.isfinite(r["pred_rmse"] / r["rmse"])
    ]
    return ErrorVsLengthSummary(min(ratios), max(ratios), tuple(sorted({r["seq_kv"] for r in rows})))


def _length_draw(rows: list[Row], summary: ErrorVsLengthSummary) -> Any:
    fig, axes = new_figure(3.3)
    ax = axes[0, 0]
    for meth in _LENGTH_METHODS:
        st = method_style(meth)
        pts = sorted(
            (r["seq_kv"], r["rmse"], r["pred_rmse"])
            for r in rows
            if r["method"] == meth and not r["nonfinite"]
        )
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            linestyle="none",
            marker=st.marker,
            color=st.color,
            markeredgecolor=edge_colour(st.color),
            label=st.label,
        )
        ax.plot(
            [p[0] for p in pts], [p[2] for p in pts], linestyle=st.linestyle, color=st.color, marker="none"
        )
    ax.plot([], [], color=OKABE_ITO["black"], linestyle="-", label="lines: estimated RMSE")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(r"KV sequence length $S_2$")
    ax.set_ylabel("RMSE (markers: measured)")
    legend_below(fig, ncols=2, fontsize=5.8)
    return fig


def error_vs_length(
    *, quick: bool | None = None, out: str | Path | None = None, from_csv: str | Path | None = None
) -> FigureResult[ErrorVsLengthSummary]:
    """Measured RMSE (markers) and the model's RMSE estimate (lines) against the KV length S2 = 2^7 …
    2^14 (quick: 2^7 … 2^10) on a biased case with a soft softmax (uniform, mean 10, amplitude 0.5,
    seed 2024724; one head, S1 = 64, d = 128; quick: S1 = 16), for PASA's presets, fp16 flash
    attention and the hybrid. The first-order evaluations (not bounds) are in the CSV (``pred_first_order``).
    """
    return run_figure(
        "error_vs_length",
        columns=ERROR_VS_LENGTH_COLUMNS,
        compute=_length_compute,
        summarize=_length_summarize,
        draw=_length_draw,
        quick=quick,
        out=out,
        from_csv=from_csv,
    )


for _f in (predicted_vs_measured, error_budget, error_vs_length):
    _f.__doc__ = (_f.__doc__ or "") + METHOD_DOC
del _f


predicted_vs_measured.__doc__ = (predicted_vs_measured.__doc__ or "") + SWEEP_DOC
