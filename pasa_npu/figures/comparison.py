"""Figures of notebook 05 (method comparison): every method on the reference grid, and the error
against β.

The presets compared here are described in docs/precision.md; the choice of β in docs/method.md.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import pasa_theory as pt

from .. import data
from ..kernel import shift_parameters
from ..precision import DTYPES
from ._common import METHOD_DOC, PUBLISHED_BETAS, spread
from ._io import FigureResult, Row, run_figure
from ._style import GREY, OKABE_ITO, edge_colour, method_style, new_figure
from ._sweep import SWEEP_DOC, SweepOptions, figure_points, fmt_list, one, open_runner, sweep_options, values

__all__ = [
    "COMPARISON_METHODS",
    "ONE_HOT_BELOW",
    "comparison_shape",
    "GRID_COLUMNS",
    "MethodRatios",
    "MethodComparisonSummary",
    "method_comparison",
    "BetaSweepMethod",
    "BetaSweepSummary",
    "beta_sweep",
]

#: Methods of the accuracy table (the figure draws all but the baseline fa_naive, which is the yardstick).
COMPARISON_METHODS = (
    "pasa",
    "pasa:script",
    "pasa:fp16_keymean",
    "pasa:fp16_strict",
    "pasa:hybrid",
    "pasa:bf16",
    "fa_qk",
    "fa_q",
    "fa_naive",
    "fa_hybrid",
    "smooth_k",
    "sdpa",
)
_COMPARISON_DRAWN = (
    "pasa",
    "pasa:script",
    "pasa:fp16_keymean",
    "pasa:bf16",
    "fa_qk",
    "fa_q",
    "smooth_k",
    "fa_hybrid",
    "sdpa",
)
GRID_COLUMNS = (
    "dist",
    "mean",
    "amplitude",
    "method",
    "beta",
    "rmse",
    "rel_rmse",
    "rel_rmse_out",
    "max_abs_err",
    "nonfinite",
    "first_nonfinite_stage",
    "ratio_to_naive",
    "seq_q",
    "seq_kv",
    "head_dim",
    "heads",
    "kv_heads",
    "block_kv",
)

#: Cells where naive fp16 attention's relative RMSE is below u16² = 2^-22 are left out of the ratios.
ONE_HOT_BELOW = 2.0**-22


def comparison_shape(quick: bool) -> dict[str, int]:
    """The shape of the accuracy grid: one GQA group of the reference benchmark (1 x 7/1 heads,
    S1 = S2 = 1407, d = 128) in full mode; 1 x 1/1 heads, S1 = 128, S2 = 384 in quick mode."""
    if quick:
        return dict(batch=1, heads=1, kv_heads=1, seq_q=128, seq_kv=384, head_dim=128)
    return dict(data.REFERENCE_SHAPE, heads=7, kv_heads=1)


@dataclass(frozen=True)
class MethodRatios:
    """One method's relative RMSE ÷ naive fp16 attention's over the grid (None: no finite cell)."""

    overflow_cells: int
    ratio_biased_min: float | None
    ratio_biased_median: float | None
    ratio_biased_max: float | None
    ratio_unbiased_min: float | None
    ratio_unbiased_median: float | None
    ratio_unbiased_max: float | None
    rel_rmse_median: float


@dataclass(frozen=True)
class MethodComparisonSummary:
    """Headline numbers of :func:`method_comparison`."""

    methods: dict[str, MethodRatios]
    #: npu_fp16's relative RMSE ÷ the script preset's, (min, median, max) over the non-one-hot cells
    #: (None where the sweep has no such cell)
    pasa_over_reference: tuple[float | None, float | None, float | None]
    cells_one_hot: list[tuple[str, float, float]]
    fa_qk_overflow_cells: list[tuple[str, float, float]]


def _cell(r: Row) -> tuple[str, float, float]:
    return (r["dist"], r["mean"], r["amplitude"])


def _comparison_compute(quick: bool, options: SweepOptions) -> tuple[list[Row], dict[str, str]]:
    """The grid's rows from its sweep (the committed spec of the mode, or ``options.spec``)."""
    pts, custom = figure_points("method_comparison", quick, options.spec)
    if "fa_naive" not in values(pts, "method"):
        raise ValueError("spec: method_comparison needs the baseline method 'fa_naive' in its points")
    setup = _comparison_setup(pts, custom)  # first: it checks the spec has one shape, seed and format
    with open_runner("method_comparison", options) as run:
        recs = run(pts)
    naive = {_cell(r): r["rel_rmse"] for r in recs if r["method"] == "fa_naive"}
    rows: list[Row] = []
    for r in recs:
        row = {c: r.get(c) for c in GRID_COLUMNS if c != "ratio_to_naive"}
        base = naive[_cell(r)]
        # None where the method overflowed, or where naive attention is exact to below u16² (a one-hot
        # softmax: an outlier key dominates every row, so a finite method returns a row of V and the
        # ratio only measures which key won)
        ok = not r["nonfinite"] and math.isfinite(base) and base >= ONE_HOT_BELOW
        row["ratio_to_naive"] = r["rel_rmse"] / base if ok else None
        rows.append(row)
    return rows, setup


def _comparison_setup(pts: list[dict], custom: str | None) -> dict[str, str]:
    """The CSV set-up, read off the sweep's points (one shape, seed and input format per figure)."""
    sh = {k: one(pts, k) for k in ("batch", "heads", "kv_heads", "seq_q", "seq_kv", "head_dim", "block_kv")}
    grid = (
        f"make_qkv {' and '.join(values(pts, 'dist'))} x mean {fmt_list(values(pts, 'mean'))} x amplitude "
        f"{fmt_list(values(pts, 'amplitude'))}, seed {one(pts, 'seed')}, {one(pts, 'input_dtype')} inputs"
    )
    setup = dict(
        data=("the reference grid: " if custom is None else "") + grid,
        shape=f"batch {sh['batch']}, heads {sh['heads']}, kv_heads {sh['kv_heads']}, S1 {sh['seq_q']}, "
        f"S2 {sh['seq_kv']}, d {sh['head_dim']}, block_kv {sh['block_kv']}",
        methods=", ".join(values(pts, "method")),
        rel_rmse="RMSE / RMS(V) against the float64 golden (measurement)",
        ratio_to_naive="rel_rmse / that of fa_naive on the same cell; empty where the method overflowed or "
        "fa_naive's rel_rmse < 2^-22 (one-hot softmax)",
    )
    if one(pts, "precision") != "npu_fp16":
        setup["precision"] = one(pts, "precision")
    if custom is not None:
        setup["spec"] = custom
    return setup


def _comparison_summarize(rows: list[Row]) -> MethodComparisonSummary:
    naive = {_cell(r): r["rel_rmse"] for r in rows if r["method"] == "fa_naive"}

    def ratios(meth: str, biased: bool) -> list[float]:
        return [
            r["ratio_to_naive"]
            for r in rows
            if r["method"] == meth and r["ratio_to_naive"] is not None and ((r["mean"] > 0) == biased)
        ]

    present = {r["method"] for r in rows}  # a spec may sweep fewer methods than the committed one
    methods = {}
    for meth in [m for m in COMPARISON_METHODS if m in present]:
        b, u = spread(ratios(meth, True)), spread(ratios(meth, False))
        methods[meth] = MethodRatios(
            overflow_cells=sum(1 for r in rows if r["method"] == meth and r["nonfinite"]),
            ratio_biased_min=b[0],
            ratio_biased_median=b[1],
            ratio_biased_max=b[2],
            ratio_unbiased_min=u[0],
            ratio_unbiased_median=u[1],
            ratio_unbiased_max=u[2],
            rel_rmse_median=statistics.median(
                [r["rel_rmse"] for r in rows if r["method"] == meth and not r["nonfinite"]] or [math.nan]
            ),
        )
    ref = {_cell(r): r["rel_rmse"] for r in rows if r["method"] == "pasa:script"}
    vs_ref = [
        r["rel_rmse"] / ref[_cell(r)]
        for r in rows
        if r["method"] == "pasa" and _cell(r) in ref and naive[_cell(r)] >= ONE_HOT_BELOW
    ]
    return MethodComparisonSummary(
        methods=methods,
        pasa_over_reference=spread(vs_ref),
        cells_one_hot=sorted(c for c, x in naive.items() if x < ONE_HOT_BELOW),
        fa_qk_overflow_cells=sorted(_cell(r) for r in rows if r["method"] == "fa_qk" and r["nonfinite"]),
    )


def _comparison_draw(rows: list[Row], summary: MethodComparisonSummary) -> Any:
    fig, axes = new_figure(3.4, 1, 2, sharey=True, gridspec_kw=dict(width_ratios=[5.0, 1.0], wspace=0.02))
    ax, ox = axes[0, 0], axes[0, 1]
    present = {r["method"] for r in rows}
    meths = [m for m in _COMPARISON_DRAWN if m in present]
    cells = sorted({_cell(r) for r in rows})
    by = {(r["method"], _cell(r)): r for r in rows}
    for i, meth in enumerate(meths):
        st = method_style(meth)
        y0 = len(meths) - 1 - i
        n_over = 0
        for j, cell in enumerate(cells):
            r = by.get((meth, cell))
            if r is None:  # a spec that does not run every method on every cell
                continue
            jitter = ((j * 7) % 16 - 7.5) * 0.03
            fill = st.color if cell[1] > 0 else "white"
            if r["nonfinite"]:  # its own category, not a number on the ratio axis
                ox.plot(
                    ((j * 5) % 11 - 5) * 0.07,
                    y0 + jitter,
                    linestyle="none",
                    marker=st.marker,
                    color=st.color,
                    markerfacecolor=fill,
                    markeredgecolor=edge_colour(st.color),
                    markersize=3.2,
                    markeredgewidth=0.6,
                )
                n_over += 1
                continue
            if r["ratio_to_naive"] is None:
                continue  # one-hot cell (see ONE_HOT_BELOW)
            ax.plot(
                r["ratio_to_naive"],
                y0 + jitter,
                linestyle="none",
                marker=st.marker,
                color=st.color,
                markerfacecolor=fill,
                markeredgecolor=edge_colour(st.color),
                markersize=3.2,
                markeredgewidth=0.6,
            )
        if n_over:
            ox.annotate(f"{n_over} of {len(cells)}", (0.08, y0 + 0.3), ha="center", va="bottom", fontsize=5.8)
    ax.axvline(1.0, color=OKABE_ITO["black"], linewidth=0.7)
    ax.set_yticks(range(len(meths)), [method_style(m).label for m in reversed(meths)])
    ax.set_ylim(-0.6, len(meths) - 0.3)
    ax.set_xscale("log")
    ax.set_xlabel("relative RMSE ÷ naive fp16 attention's\n(filled: mean > 0, open: mean 0)")
    ax.grid(axis="y", visible=False)
    ox.set_xlim(-0.6, 0.75)
    ox.set_xticks([0.0], ["inf/NaN"], fontsize=7)
    ox.set_facecolor("#F2F2F2")
    ox.grid(False)
    ox.tick_params(left=False)
    return fig


def method_comparison(
    *,
    quick: bool | None = None,
    out: str | Path | None = None,
    from_csv: str | Path | None = None,
    data: str | Path | SweepOptions | None = None,
) -> FigureResult[MethodComparisonSummary]:
    """The reference benchmark's grid (uniform and hybrid × mean {0, 10, 20, 30} × amplitude
    {0.5, 5, 10, 20}, seed 2024724, fp16 inputs; shape :func:`comparison_shape`) for every method of
    :data:`COMPARISON_METHODS`. Plotted: each method's relative RMSE divided by that of naive fp16
    attention (``fa_naive``) on the same cell (a ratio of measurements); filled markers for biased
    cells (mean > 0), open for mean 0. Cells where the method returned inf/NaN are drawn in a separate
    "inf/NaN" column, with their count, not on the ratio axis; cells with a one-hot softmax (naive
    error below 2^-22) are left out.
    """
    options = sweep_options(data, from_csv)
    return run_figure(
        "method_comparison",
        columns=GRID_COLUMNS,
        compute=lambda q: _comparison_compute(q, options),
        summarize=_comparison_summarize,
        draw=_comparison_draw,
        quick=quick,
        out=out,
        from_csv=from_csv,
    )


# -- error against β -------------------------------------------------------------------------------


def _binade_teeth(betas: Any, mu_tilde_of: Any) -> list[float]:
    """β where fl's binade of the shifted block mean μ̃(β) changes (μ̃ decreasing in β)."""
    teeth = []
    prev: tuple[float, int] | None = None
    for b in betas:
        e = math.floor(math.log2(mu_tilde_of(b)))
        if prev is not None and e != prev[1]:
            lo, hi = prev[0], b
            for _ in range(50):
                mid = 0.5 * (lo + hi)
                if math.floor(math.log2(mu_tilde_of(mid))) == prev[1]:
                    lo = mid
                else:
                    hi = mid
            teeth.append(hi)
        prev = (b, e)
    return teeth


_SWEEP_METHODS = ("pasa:script", "pasa", "pasa:fp16_keymean")
BETA_SWEEP_COLUMNS = (
    "kind",
    "method",
    "beta",
    "rel_rmse_median",
    "rel_rmse_min",
    "rel_rmse_max",
    "draws",
    "predicted_offset_error",
)


@dataclass(frozen=True)
class BetaSweepMethod:
    """One method of :func:`beta_sweep`: the range of its median error over β, and the median ratio
    of the error just below a predicted tooth to just above it (None: no tooth inside the sweep)."""

    min: float
    max: float
    jump_at_teeth: float | None


@dataclass(frozen=True)
class BetaSweepSummary:
    """Headline numbers of :func:`beta_sweep`."""

    naive_rel_rmse_median: float
    teeth: tuple[float, ...]
    draws: int
    methods: dict[str, BetaSweepMethod]


def _sweep_compute(quick: bool, options: SweepOptions) -> tuple[list[Row], dict[str, str]]:
    """Measured rows from the sweep (the committed spec of the mode, or ``options.spec``); the
    predicted rows from theory and the data's median q·k̄."""
    pts, custom = figure_points("beta_sweep", quick, options.spec)
    if "fa_naive" not in values(pts, "method"):
        raise ValueError("spec: beta_sweep needs the baseline method 'fa_naive' in its points")
    shape = {k: one(pts, k) for k in ("batch", "heads", "kv_heads", "seq_q", "seq_kv", "head_dim")}
    cell = {k: one(pts, k) for k in ("dist", "mean", "amplitude")}
    dtype = DTYPES[one(pts, "input_dtype")]
    with open_runner("beta_sweep", options) as run:
        recs = run(pts)
    per: dict[tuple[str, float], list[float]] = {}
    naive: list[float] = []
    for r in recs:
        if r["method"] == "fa_naive":
            naive.append(r["rel_rmse"])
        else:
            per.setdefault((r["method"], r["beta_requested"]), []).append(r["rel_rmse"])
    seeds = values(pts, "seed")
    qkbar = [_median_q_kbar(*data.make_qkv(**cell, seed=s, dtype=dtype, **shape)[:2]) for s in seeds]
    med_qkbar = statistics.median(qkbar)

    def mu_tilde(beta: float) -> float:
        sp = shift_parameters("script", head_dim=128, beta=float(beta))
        a, bb = sp.diag - sp.off, -sp.off
        return (a - bb * 128) * med_qkbar

    empty = dict(
        rel_rmse_median=None, rel_rmse_min=None, rel_rmse_max=None, draws=None, predicted_offset_error=None
    )
    rows: list[Row] = []
    for (meth, b), vals in sorted(per.items()):
        rows.append(
            dict(
                kind="measured",
                method=meth,
                beta=b,
                rel_rmse_median=statistics.median(vals),
                rel_rmse_min=min(vals),
                rel_rmse_max=max(vals),
                draws=len(vals),
                predicted_offset_error=None,
            )
        )
    rows.append(
        dict(
            kind="baseline",
            method="fa_naive",
            beta=None,
            rel_rmse_median=statistics.median(naive),
            rel_rmse_min=min(naive),
            rel_rmse_max=max(naive),
            draws=len(naive),
            predicted_offset_error=None,
        )
    )
    for b in np.linspace(0.90, 0.995, 1200):
        b = float(b)
        rows.append(
            empty
            | dict(
                kind="predicted",
                method="pasa:script",
                beta=b,
                predicted_offset_error=b / (1 - b) * float(pt.ulp(mu_tilde(b), "fp16")) / 2,
            )
        )
    for t in _binade_teeth(np.linspace(0.90, 0.995, 2000), mu_tilde):
        rows.append(empty | dict(kind="predicted_tooth", method="pasa:script", beta=float(t)))
    for b in PUBLISHED_BETAS.values():
        rows.append(empty | dict(kind="published", method="", beta=b))
    rows.append(
        empty | dict(kind="selected", method="pasa", beta=shift_parameters("npu_fp16", head_dim=128).beta)
    )
    return rows, _sweep_setup(pts, custom, med_qkbar)


def _sweep_setup(pts: list[dict], custom: str | None, med_qkbar: float) -> dict[str, str]:
    """The CSV set-up, read off the sweep's points."""
    cell = {k: one(pts, k) for k in ("dist", "mean", "amplitude")}
    seeds = values(pts, "seed")
    betas = [p["beta"] for p in pts if p["method"] != "fa_naive"]
    script_case = cell == dict(dist="uniform", mean=30.0, amplitude=0.5)
    pasa = [m for m in values(pts, "method") if m != "fa_naive"]
    setup = dict(
        data=f"make_qkv {cell['dist']}, mean {cell['mean']:g}, amplitude {cell['amplitude']:g}"
        + (" (the script's default case)" if script_case else "")
        + f", seeds {seeds[0]}..{seeds[-1]} ({len(seeds)} draws); {one(pts, 'input_dtype')} inputs",
        shape=f"batch {one(pts, 'batch')}, heads {one(pts, 'heads')}, kv_heads {one(pts, 'kv_heads')}, "
        f"S1 {one(pts, 'seq_q')}, S2 {one(pts, 'seq_kv')}, d {one(pts, 'head_dim')}, block_kv {one(pts, 'block_kv')}",
        methods=", ".join(pasa) + " at each beta; fa_naive once per draw",
        beta=f"{len(set(betas))} values in [{min(betas):.2f}, {max(betas):.3f}]",
        measured="relative RMSE (RMSE / RMS(V)) against the float64 golden: median, min, max over the draws "
        "(measurement)",
        predicted=f"c * ulp(mu_tilde) / 2 with mu_tilde = (a - b n) * median(q . kbar) = (a - b n) * {med_qkbar:.6g}, "
        "a, b from the rounded tau-folded matrix of the script preset (a bound on one block offset's "
        "error, in score units)",
    )
    if custom is not None:
        setup["spec"] = custom
    return setup


def _median_q_kbar(q: Any, k: Any) -> float:
    """Median over rows and full 128-key blocks of q·k̄_j in float64: the scale of the shifted block means."""
    kf = k.to(torch.float64)[:, :, : (k.shape[2] // 128) * 128]
    kbar = kf.view(kf.shape[0], kf.shape[1], -1, 128, kf.shape[3]).mean(dim=3)
    return float(torch.einsum("bhid,bhjd->bhij", q.to(torch.float64), kbar).median())


def _sweep_summarize(rows: list[Row]) -> BetaSweepSummary:
    teeth = [r["beta"] for r in rows if r["kind"] == "predicted_tooth"]

    def med(meth: str) -> list[float]:
        return [r["rel_rmse_median"] for r in rows if r["kind"] == "measured" and r["method"] == meth]

    def jump(meth: str) -> float | None:
        """Median over the teeth of (median error just below a tooth) / (just above)."""
        xs = sorted(
            (r for r in rows if r["kind"] == "measured" and r["method"] == meth), key=lambda r: r["beta"]
        )
        ratios = []
        for t in teeth:
            below = [r for r in xs if r["beta"] < t]
            above = [r for r in xs if r["beta"] > t]
            if below and above:
                ratios.append(below[-1]["rel_rmse_median"] / above[0]["rel_rmse_median"])
        return statistics.median(ratios) if ratios else None

    base = next(r for r in rows if r["kind"] == "baseline")
    return BetaSweepSummary(
        naive_rel_rmse_median=base["rel_rmse_median"],
        teeth=tuple(teeth),
        draws=base["draws"],
        methods={m: BetaSweepMethod(min(med(m)), max(med(m)), jump(m)) for m in _SWEEP_METHODS if med(m)},
    )


def _sweep_draw(rows: list[Row], summary: BetaSweepSummary) -> Any:
    from matplotlib.lines import Line2D

    fig, axes = new_figure(4.6, 2, 1, sharex=True, gridspec_kw=dict(height_ratios=[2.3, 1.0]))
    ax, px = axes[:, 0]
    handles, labels = [], []
    series = {}
    for meth in _SWEEP_METHODS:
        series[meth] = sorted((r["beta"], r) for r in rows if r["kind"] == "measured" and r["method"] == meth)
    for meth, pts in series.items():  # every range first, under every median line
        st = method_style(meth)
        xs = [b for b, _ in pts]
        ax.fill_between(
            xs,
            [r["rel_rmse_min"] for _, r in pts],
            [r["rel_rmse_max"] for _, r in pts],
            color=st.color,
            alpha=0.10,
            linewidth=0,
            zorder=1,
        )
    for meth, pts in series.items():
        st = method_style(meth)
        ax.plot(
            [b for b, _ in pts],
            [r["rel_rmse_median"] for _, r in pts],
            color=st.color,
            marker=st.marker,
            linestyle=st.linestyle,
            markersize=2.2,
            markeredgecolor=edge_colour(st.color),
            zorder=3,
        )
        handles.append(
            Line2D(
                [],
                [],
                color=st.color,
                marker=st.marker,
                linestyle=st.linestyle,
                markersize=2.2,
                markeredgecolor=edge_colour(st.color),
            )
        )
        labels.append(st.label)
    base = next(r for r in rows if r["kind"] == "baseline")
    nst = method_style("fa_naive")
    ax.axhline(base["rel_rmse_median"], color=nst.color, linestyle=nst.linestyle, linewidth=0.8, zorder=2)
    handles.append(Line2D([], [], color=nst.color, linestyle=nst.linestyle, linewidth=0.8))
    labels.append(nst.label + " (β-independent)")
    teeth = [r["beta"] for r in rows if r["kind"] == "predicted_tooth"]
    for axis in (ax, px):
        for t in teeth:
            axis.axvline(t, color=GREY, linestyle=":", linewidth=0.7, zorder=0)
    for r in rows:
        if r["kind"] in ("published", "selected"):
            ax.plot(
                r["beta"],
                1.0,
                marker="v",
                color=OKABE_ITO["black" if r["kind"] == "published" else "vermillion"],
                transform=ax.get_xaxis_transform(),
                linestyle="none",
                clip_on=False,
                markersize=4,
            )
    ax.set_yscale("log")
    ax.set_ylabel("relative RMSE\n(median; band: range over draws)")
    ax.set_title(f"(a) measured, {summary.draws} data draws", loc="left", pad=8)
    pred = sorted((r["beta"], r["predicted_offset_error"]) for r in rows if r["kind"] == "predicted")
    ref = method_style("pasa:script")
    px.plot([p[0] for p in pred], [p[1] for p in pred], color=ref.color, linewidth=0.9)
    px.set_ylabel(r"$c\cdot\mathrm{ulp}(\tilde\mu)/2$" "\n(score units)")
    px.set_title("(b) predicted offset error of the script preset", loc="left", pad=2)
    px.set_xlabel(r"$\beta$  (dotted: predicted teeth)")
    handles += [
        Line2D([], [], marker="v", color=OKABE_ITO["black"], linestyle="none"),
        Line2D([], [], marker="v", color=OKABE_ITO["vermillion"], linestyle="none"),
    ]
    labels += ["published β", "npu_fp16's β"]
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=5.8)
    return fig


def beta_sweep(
    *,
    quick: bool | None = None,
    out: str | Path | None = None,
    from_csv: str | Path | None = None,
    data: str | Path | SweepOptions | None = None,
) -> FigureResult[BetaSweepSummary]:
    """Relative RMSE against β ∈ [0.90, 0.995] (64 values; quick 16) for PASA at the script preset,
    npu_fp16 and fp16_keymean, with naive fp16 attention for comparison; (a) median and range over
    8 data draws (quick: 2) of the script's default case (uniform, mean 30, amplitude 0.5, seeds
    2024724 + i; 1 head, S1 = 256, S2 = 1407, d = 128; quick: S1 = 64): measurements.

    (b) Predicted: the script preset rounds each block's pseudo-average μ̃ to fp16 and the recovery
    multiplies that rounding error, up to half an ulp, by c = β/(1 − β): the bound c·ulp(μ̃)/2 on the
    error of a block offset, with μ̃ = (a − b·n)·median(q·k̄) from the rounded τ-folded matrix (a, b)
    and the data. Within a binade of μ̃ it grows like c; where μ̃ drops into the next binade the ulp
    halves (the teeth, dotted in both panels). npu_fp16 rounds only each block mean's deviation from
    a running reference, and fp16_keymean takes the offsets from the keys' block means.
    """
    options = sweep_options(data, from_csv)
    return run_figure(
        "beta_sweep",
        columns=BETA_SWEEP_COLUMNS,
        compute=lambda q: _sweep_compute(q, options),
        summarize=_sweep_summarize,
        draw=_sweep_draw,
        quick=quick,
        out=out,
        from_csv=from_csv,
    )


method_comparison.__doc__ = (method_comparison.__doc__ or "") + METHOD_DOC
beta_sweep.__doc__ = (beta_sweep.__doc__ or "") + METHOD_DOC
method_comparison.__doc__ = (method_comparison.__doc__ or "") + SWEEP_DOC
beta_sweep.__doc__ = (beta_sweep.__doc__ or "") + SWEEP_DOC
