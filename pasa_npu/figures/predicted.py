"""Figures of notebook 04 (predicted against measured): the rounding-error model of
:mod:`pasa_theory.bounds` against the harness's measurements.

The model's two numbers are named for what they are (see docs/error-model.md): the
**first-order a-posteriori evaluation** ("deterministic bound", ``pred_bound``) sums the moduli of
the linearised rounding-error terms evaluated on the actual tensors (a worst-case alignment of the
first-order terms, not a theorem about every input), and the **RMSE estimate** (``pred_rmse``) adds
the same terms in quadrature under an independence model.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pasa_theory.bounds import TERMS

from .. import data
from ..harness import GRID_AMPLITUDES, GRID_MEANS
from ..predict_report import predict_case
from ._common import METHOD_DOC, spread
from ._io import FigureResult, Row, run_figure
from ._style import GREY, OKABE_ITO, edge_colour, legend_below, method_style, new_figure

__all__ = [
    "PREDICT_METHODS",
    "PVM_COLUMNS",
    "MethodPrediction",
    "PredictionTotals",
    "PredictedVsMeasuredSummary",
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
    "pred_rmse",
    "pred_bound",
    "pred_overflow_stage",
    "dominant",
    "bound_dominant",
    "regime",
    "rmse_ratio",
    "bound_ratio",
    "bound_ok",
    "overflow_ok",
)


def _predicted_and_measured(q: Any, k: Any, v: Any, methods: tuple[str, ...], **kw: Any) -> list[Row]:
    """One record per method from :func:`pasa_npu.predict_report.predict_case`: the harness's
    measurement against the float64 golden beside :func:`pasa_theory.bounds.predict_many` on the same
    tensors (the ``pasa-verify --predict`` schema)."""
    recs = predict_case(q, k, v, list(methods), **kw)
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


@dataclass(frozen=True)
class PredictedVsMeasuredSummary:
    """Headline numbers of :func:`predicted_vs_measured`."""

    methods: dict[str, MethodPrediction]
    all: PredictionTotals


def _pvm_compute(quick: bool) -> tuple[list[Row], dict[str, str]]:
    means, amps = ((0.0, 30.0), (0.5, 20.0)) if quick else (GRID_MEANS, GRID_AMPLITUDES)
    seqs = (256, 768) if quick else (256, 1024, 4096)
    s1 = 32 if quick else 128
    rows: list[Row] = []
    for dist in data.DISTRIBUTIONS:
        for m in means:
            for a in amps:
                for s2 in seqs:
                    q, k, v = data.make_qkv(
                        dist,
                        mean=m,
                        amplitude=a,
                        batch=1,
                        heads=1,
                        kv_heads=1,
                        seq_q=s1,
                        seq_kv=s2,
                        head_dim=128,
                    )
                    for r in _predicted_and_measured(q, k, v, PREDICT_METHODS):
                        # the CSV leaves the ratios of overflowing cases empty (None), not NaN
                        rows.append(
                            {c: r.get(c) for c in PVM_COLUMNS}
                            | dict(dist=dist, mean=m, amplitude=a)
                            | {
                                key: r[key] if math.isfinite(r[key]) else None
                                for key in ("rmse_ratio", "bound_ratio")
                            }
                        )
    return rows, _pvm_setup(quick)


def _pvm_setup(quick: bool) -> dict[str, str]:
    means, amps = ((0.0, 30.0), (0.5, 20.0)) if quick else (GRID_MEANS, GRID_AMPLITUDES)
    seqs = (256, 768) if quick else (256, 1024, 4096)
    s1 = 32 if quick else 128
    return dict(
        data="make_qkv, seed 2024724, dist uniform and hybrid x mean "
        + ", ".join(f"{x:g}" for x in means)
        + " x amplitude "
        + ", ".join(f"{x:g}" for x in amps)
        + "; fp16 inputs",
        shape=f"batch 1, heads 1, kv_heads 1, S1 {s1}, S2 {', '.join(map(str, seqs))}, d 128, block_kv 128",
        methods=", ".join(PREDICT_METHODS),
        measured="rmse, max_abs_err against the float64 golden; inf/NaN and its first stage (measurement)",
        pred_rmse="RMSE estimate of pasa_theory.bounds.predict: first-order terms in quadrature (estimate)",
        pred_bound="first-order a-posteriori evaluation on the actual tensors, moduli of the linearised terms "
        "summed (called the deterministic bound in pasa_theory.bounds; not a theorem for all inputs)",
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
        )
    ok = [r for r in rows if r["bound_ok"] is not None]
    rr = [r["rmse_ratio"] for r in ok if r["rmse_ratio"] is not None]
    br = [r["bound_ratio"] for r in ok if r["bound_ratio"] is not None]
    within3 = sum(1 for x in rr if 1 / 3 <= x <= 3)
    totals = PredictionTotals(
        cases=len(rows),
        compared=len(ok),
        bound_ok=sum(bool(r["bound_ok"]) for r in ok),
        rmse_within_3x=within3,
        rmse_within_3x_fraction=within3 / len(ok) if ok else math.nan,
        rmse_within_2x=sum(1 for x in rr if 0.5 <= x <= 2),
        overflow_ok=sum(bool(r["overflow_ok"]) for r in rows),
        overflow_cases=sum(bool(r["nonfinite"]) for r in rows),
        median_bound_ratio=statistics.median(br) if br else math.nan,
        median_rmse_ratio=statistics.median(rr) if rr else math.nan,
    )
    return PredictedVsMeasuredSummary(methods, totals)


def _pvm_draw(rows: list[Row], summary: PredictedVsMeasuredSummary) -> Any:
    fig, axes = new_figure(5.6, 2, 1)
    ax, bx = axes[:, 0]
    for meth in PREDICT_METHODS:
        st = method_style(meth)
        sub = [r for r in rows if r["method"] == meth and r["rmse_ratio"] is not None]
        kw = dict(
            linestyle="none",
            marker=st.marker,
            color=st.color,
            markeredgecolor=edge_colour(st.color),
            markersize=2.6,
            markeredgewidth=0.5,
            alpha=0.85,
        )
        ax.plot([r["rmse"] for r in sub], [r["pred_rmse"] for r in sub], label=st.label, **kw)
        sub = [r for r in rows if r["method"] == meth and r["bound_ratio"] is not None]
        bx.plot([r["max_abs_err"] for r in sub], [r["pred_bound"] for r in sub], **kw)
    for axis, (mx, my) in ((ax, ("rmse", "pred_rmse")), (bx, ("max_abs_err", "pred_bound"))):
        vals = [r[c] for r in rows for c in (mx, my) if r["rmse_ratio"] is not None and r[c] > 0]
        a, b = min(vals) / 2, max(vals) * 2
        xs = np.array([a, b])
        axis.plot(xs, xs, color=OKABE_ITO["black"], linewidth=0.8, label="y = x" if axis is ax else None)
        if axis is ax:
            axis.plot(xs, 3 * xs, color=GREY, linestyle="--", linewidth=0.6, label="×3, ÷3")
            axis.plot(xs, xs / 3, color=GREY, linestyle="--", linewidth=0.6)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlim(a, b)
        axis.set_ylim(a, b)
    s = summary.all
    ax.set_title(
        f"(a) RMSE estimate: {100 * s.rmse_within_3x_fraction:.0f} % of {s.compared} within 3×",
        loc="left",
        pad=2,
    )
    ax.set_xlabel("measured RMSE")
    ax.set_ylabel("estimated RMSE")
    bx.set_title(
        f"(b) first-order evaluation ≥ max|error| in {100 * s.bound_ok / s.compared:.0f} %", loc="left", pad=2
    )
    bx.set_xlabel("measured max|error|")
    bx.set_ylabel("first-order a-posteriori bound")
    legend_below(fig, ncols=2, fontsize=5.8)
    return fig


def predicted_vs_measured(
    *, quick: bool | None = None, out: str | Path | None = None, from_csv: str | Path | None = None
) -> FigureResult[PredictedVsMeasuredSummary]:
    """The rounding-error model of :mod:`pasa_theory.bounds` against the harness, input by input:
    (a) the RMSE estimate (first-order terms in quadrature, an estimate) against the measured RMSE,
    (b) the first-order a-posteriori evaluation (``pred_bound``, the moduli of the linearised terms on
    the actual tensors; the module calls it the deterministic bound) against the measured max|error|,
    both measured against the float64 golden, for every method of :data:`PREDICT_METHODS`. Inputs:
    the reference grid (uniform and hybrid × mean {0, 10, 20, 30} × amplitude {0.5, 5, 10, 20}, seed
    2024724), one head, S1 = 128, S2 ∈ {256, 1024, 4096}, d = 128 (quick: means {0, 30} × amplitudes
    {0.5, 20}, S1 = 32, S2 ∈ {256, 768}). Overflows are compared separately: predicted inf/NaN against
    measured inf/NaN.
    """
    return run_figure(
        "predicted_vs_measured",
        columns=PVM_COLUMNS,
        compute=_pvm_compute,
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
ERROR_VS_LENGTH_COLUMNS = ("seq_kv", "method", "rmse", "pred_rmse", "max_abs_err", "pred_bound", "nonfinite")


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
                    pred_bound=r["pred_bound"],
                    nonfinite=r["nonfinite"],
                )
            )
    setup = dict(
        data="make_qkv uniform, mean 10, amplitude 0.5, seed 2024724; fp16 inputs",
        shape=f"batch 1, heads 1, kv_heads 1, S1 {16 if quick else 64}, S2 {', '.join(map(str, seqs))}, d 128, "
        "block_kv 128",
        methods=", ".join(_LENGTH_METHODS),
        rmse="measured against the float64 golden; pred_rmse: RMSE estimate; pred_bound: first-order a-posteriori "
        "evaluation",
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
    attention and the hybrid. The first-order a-posteriori evaluations are in the CSV (``pred_bound``).
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
