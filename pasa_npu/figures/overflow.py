"""Figures of notebook 03 (overflow and resonance): where each method first returns inf/NaN,
accumulators over long sequences, and resonant (phase-aligned) queries and keys.

The overflow envelope (:func:`pasa_theory.bounds.overflow_envelope`) is described in
docs/error-model.md; the kernel's stages in docs/precision.md.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pasa_theory.bounds import InputStats, overflow_envelope

from .. import data
from ..harness import run_case
from ..kernel import shift_parameters
from ..sweep import resolve_point
from ._common import FP16_MAX, FP16_OVERFLOW, METHOD_DOC, fp64_scores, spread
from ._io import FigureResult, Row, run_figure
from ._style import DARK_GREY, GREY, OKABE_ITO, edge_colour, legend_below, method_style, new_figure
from ._sweep import SWEEP_DOC, SweepOptions, figure_points, one, open_runner, sweep_options, values

__all__ = [
    "predicted_overflow_mean",
    "OVERFLOW_METHODS",
    "OverflowSummary",
    "OverflowFrontierSummary",
    "overflow_frontier",
    "AccumulatorOverflowSummary",
    "accumulator_overflow",
    "RESONANCE_METHODS",
    "ResonanceStatisticsSummary",
    "resonance_statistics",
    "ResonanceAccuracySummary",
    "resonance_accuracy",
]


def predicted_overflow_mean(
    method: str,
    dist: str,
    amplitude: float,
    *,
    seq_q: int,
    seq_kv: int,
    heads: int = 1,
    head_dim: int = 128,
    stage: str | None = None,
    hi: float = 4096.0,
) -> tuple[float | None, str | None]:
    """Smallest input mean at which :func:`pasa_theory.bounds.overflow_envelope` predicts an overflow
    for :func:`pasa_npu.data.make_qkv` data (Q, K and V with that mean and ``amplitude``), and the
    stage it names there, by bisection in log scale to 0.1 %; ``(None, None)`` if not below ``hi``.
    This is an estimate from the input statistics alone (see docs/error-model.md).

    ``stage=None`` takes the first stage that overflows (the envelope's ``overflow_stage``);
    ``stage="scores"`` only the matrix-unit score tile (``|q·k|``, ``τ|q·k|`` or PASA's shifted tile
    reaching 65520 in fp16).
    """

    def over(m: float) -> str | None:
        st = InputStats(
            mean_q=m,
            spread_q=amplitude,
            mean_k=m,
            spread_k=amplitude,
            mean_v=m,
            spread_v=amplitude,
            head_dim=head_dim,
            seq_kv=seq_kv,
            seq_q=seq_q,
            heads=heads,
            dist=dist,
        )
        env = overflow_envelope(method, st)
        if stage is None:
            return env.overflow_stage
        return stage if env.peaks[stage] >= env.thresholds[stage] else None

    top = over(hi)
    if top is None:
        return None, None
    lo = 1.0
    if over(lo):
        return lo, over(lo)
    while hi / lo > 1.001:
        mid = math.sqrt(lo * hi)
        s_mid = over(mid)
        if s_mid is None:
            lo = mid
        else:
            hi, top = mid, s_mid
    return hi, top


# -- the overflow frontier -------------------------------------------------------------------------

OVERFLOW_METHODS = ("fa_qk", "fa_q", "smooth_k", "pasa:script", "pasa", "pasa:bf16", "fa_hybrid")
OVERFLOW_FRONTIER_COLUMNS = ("kind", "dist", "amplitude", "method", "mean_finite", "mean_overflow", "stage")
#: The scan's means: 2^(k/2), k = 0 … 20 (1 … 1024).
_MEANS = tuple(2.0 ** (kk / 2) for kk in range(21))
MAX_MEAN_SCANNED = _MEANS[-1]


def _frontier_amplitudes(
    quick: bool, measured: Sequence[float] | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(measured amplitudes, predicted amplitudes). The measured ones are the sweep's (default: those
    of the committed spec of the mode); the prediction adds a finer set inside their range only:
    A = 0 (constant inputs, an exactly uniform softmax) is a different regime, where the envelope
    names the accumulators of the unnormalised presets."""
    if measured is None:
        measured = (0.5, 10.0, 20.0) if quick else (0.5, 5.0, 10.0, 20.0)
    measured = tuple(measured)
    extra = (10.0, 20.0) if quick else tuple(2.0 * i for i in range(1, 11))
    inside = {e for e in extra if min(measured) <= e <= max(measured)}
    return measured, tuple(sorted(set(measured) | inside))


@dataclass(frozen=True)
class OverflowSummary:
    """One method's measured overflow frontier over the cells of :func:`overflow_frontier`."""

    min_overflow_mean: float | None
    max_overflow_mean: float | None
    cells_without_overflow: int
    #: stages the census named at the first overflow
    stages: tuple[str, ...]


@dataclass(frozen=True)
class OverflowFrontierSummary:
    """Headline numbers of :func:`overflow_frontier`."""

    methods: dict[str, OverflowSummary]
    max_mean_scanned: float


def _frontier_search(means: Sequence[float]) -> Generator[float, str | None, Row]:
    """One (dist, amplitude, method)'s search, as a generator: it yields the next mean to probe and is
    sent the first overflowing stage there (None: finite); it returns the row's ``mean_finite``,
    ``mean_overflow`` and ``stage``. Overflow is taken to be monotone in the mean: finite at the largest
    mean counts as finite throughout; otherwise a binary search over ``means`` finds the first
    overflowing one, then bisection narrows the step to 1 %."""
    top = yield means[-1]
    if top is None:  # finite at the largest mean: none in the range
        return dict(mean_finite=means[-1], mean_overflow=None, stage="")
    lo_i, hi_i, stage = -1, len(means) - 1, top
    while hi_i - lo_i > 1:
        mid = (lo_i + hi_i) // 2
        s_mid = yield means[mid]
        if s_mid is None:
            lo_i = mid
        else:
            hi_i, stage = mid, s_mid
    lo, hi = (means[lo_i] if lo_i >= 0 else 0.0), means[hi_i]
    while hi - lo > 0.01 * hi:
        mid = 0.5 * (lo + hi)
        s_mid = yield mid
        if s_mid is None:
            lo = mid
        else:
            hi, stage = mid, s_mid
    return dict(mean_finite=lo, mean_overflow=hi, stage=stage)


def _first_stage(row: Row) -> str | None:
    """The first pipeline stage with inf/NaN of a sweep row whose output is not finite, else None."""
    return (row["first_nonfinite_stage"] or "output") if row["nonfinite"] else None


def _frontier_compute(quick: bool, options: SweepOptions) -> tuple[list[Row], dict[str, str]]:
    """The measured frontier: every (dist, amplitude, method) of the spec searched over the spec's means
    (:func:`_frontier_search`), all searches advancing together, each round's probes one batch of
    sweep points (same seed at every mean: one draw, shifted); the predicted rows from theory."""
    pts, custom = figure_points("overflow_frontier", quick, options.spec)
    setup = _frontier_setup(quick, pts, sorted(values(pts, "mean")), custom)  # checks one shape and seed
    means = sorted(values(pts, "mean"))
    groups: dict[tuple, dict] = {}  # every parameter but the mean → a template point
    for p in pts:
        groups.setdefault(tuple((k, v) for k, v in p.items() if k != "mean"), p)
    searches = {key: _frontier_search(means) for key in groups}
    probes = {key: next(g) for key, g in searches.items()}
    found: dict[tuple, Row] = {}

    def point(key: tuple, mean: float) -> dict:
        # the template's seed for every mean: the same draw, shifted
        return resolve_point(dict(groups[key], mean=mean), where="overflow_frontier probe")

    with open_runner("overflow_frontier", options) as run:
        while probes:
            batch = {key: point(key, m) for key, m in probes.items()}
            rows = run(list(batch.values()))
            nxt = {}
            for key, row in zip(batch, rows):
                try:
                    nxt[key] = searches[key].send(_first_stage(row))
                except StopIteration as done:
                    found[key] = done.value
            probes = nxt
    rows_out: list[Row] = []
    for key, tmpl in groups.items():
        rows_out.append(
            dict(kind="measured", dist=tmpl["dist"], amplitude=tmpl["amplitude"], method=tmpl["method"])
            | found[key]
        )
    amps = values(pts, "amplitude")
    rows_out += _frontier_predicted_rows(
        quick, values(pts, "dist"), amps, values(pts, "method"), one(pts, "seq_q"), one(pts, "seq_kv")
    )
    return rows_out, setup


def _frontier_setup(quick: bool, pts: list[dict], means: list[float], custom: str | None) -> dict[str, str]:
    amps, pred_amps = _frontier_amplitudes(quick, values(pts, "amplitude"))
    dists = values(pts, "dist")
    scan = (
        "2^(k/2), k = 0..20" if tuple(means) == _MEANS else f"{len(means)} means {means[0]:g}..{means[-1]:g}"
    )
    setup = dict(
        data=f"make_qkv, seed {one(pts, 'seed')}, "
        + (
            "both distributions (uniform, hybrid)"
            if tuple(dists) == ("uniform", "hybrid")
            else "distribution " + ", ".join(dists)
        )
        + f"; one draw shifted to each mean; Q, K and V share mean and amplitude; {one(pts, 'input_dtype')} inputs",
        shape=f"batch {one(pts, 'batch')}, heads {one(pts, 'heads')}, kv_heads {one(pts, 'kv_heads')}, "
        f"S1 {one(pts, 'seq_q')}, S2 {one(pts, 'seq_kv')}, d {one(pts, 'head_dim')}, block_kv {one(pts, 'block_kv')}",
        methods=", ".join(values(pts, "method")) + " (pasa = npu_fp16 preset; pasa:script = script preset)",
        measured=f"first mean with inf/NaN in the output (binary search on {scan}, then bisection to 1 %); "
        "amplitudes " + ", ".join(f"{a:g}" for a in amps) + " (measurement)",
        predicted="first mean at which pasa_theory.bounds.overflow_envelope names a stage, from the input statistics "
        "alone; amplitudes " + ", ".join(f"{a:g}" for a in pred_amps) + " (estimate)",
    )
    if custom is not None:
        setup["spec"] = custom
    return setup


def _frontier_predicted_rows(
    quick: bool,
    dists: Sequence[str],
    amplitudes: Sequence[float],
    methods: Sequence[str],
    seq_q: int,
    seq_kv: int,
) -> list[Row]:
    _, pred_amps = _frontier_amplitudes(quick, amplitudes)
    rows: list[Row] = []
    for dist in dists:
        for amp in pred_amps:
            for meth in methods:
                fr, st_ = predicted_overflow_mean(meth, dist, amp, seq_q=seq_q, seq_kv=seq_kv)
                rows.append(
                    dict(
                        kind="predicted",
                        dist=dist,
                        amplitude=amp,
                        method=meth,
                        mean_finite=None,
                        mean_overflow=fr,
                        stage=st_ or "",
                    )
                )
    return rows


def _frontier_summarize(rows: list[Row]) -> OverflowFrontierSummary:
    meas = [r for r in rows if r["kind"] == "measured"]
    out = {}
    for meth in OVERFLOW_METHODS:
        vals = [r["mean_overflow"] for r in meas if r["method"] == meth]
        lo, _, hi = spread(v for v in vals if v is not None)
        out[meth] = OverflowSummary(
            lo,
            hi,
            sum(v is None for v in vals),
            tuple(sorted({r["stage"] for r in meas if r["method"] == meth and r["stage"]})),
        )
    return OverflowFrontierSummary(out, MAX_MEAN_SCANNED)


def _frontier_draw(rows: list[Row], summary: OverflowFrontierSummary) -> Any:
    from matplotlib.legend_handler import HandlerTuple
    from matplotlib.lines import Line2D

    fig, axes = new_figure(5.9, 2, 1, sharex=True)
    top = summary.max_mean_scanned
    edge = top * 1.15  # where "finite up to the largest mean" is drawn
    handles, labels = [], []
    for i, (ax, dist) in enumerate(zip(axes[:, 0], ("uniform", "hybrid"))):
        for meth in OVERFLOW_METHODS:
            st = method_style(meth)
            any_meas = any(
                r["mean_overflow"] is not None
                for r in rows
                if r["kind"] == "measured" and r["method"] == meth
            )
            any_pred = any(
                r["mean_overflow"] is not None
                for r in rows
                if r["kind"] == "predicted" and r["method"] == meth
            )
            pred = sorted(
                (r["amplitude"], r["mean_overflow"])
                for r in rows
                if r["kind"] == "predicted"
                and r["dist"] == dist
                and r["method"] == meth
                and r["mean_overflow"] is not None
            )
            if pred:
                ax.plot(
                    [m for _, m in pred],
                    [a for a, _ in pred],
                    color=st.color,
                    alpha=0.35,
                    linewidth=4,
                    solid_capstyle="butt",
                    zorder=1,
                )
            meas = sorted(
                (r["amplitude"], r["mean_overflow"])
                for r in rows
                if r["kind"] == "measured" and r["dist"] == dist and r["method"] == meth
            )
            xs = [m for _, m in meas if m is not None]
            ys = [a for a, m in meas if m is not None]
            ax.plot(
                xs,
                ys,
                color=st.color,
                marker=st.marker,
                linestyle="-",
                markeredgecolor=edge_colour(st.color),
                zorder=3,
            )
            none = [a for a, m in meas if m is None]
            if any_meas and none:  # overflows in some cells, finite up to `top` in these
                ax.plot(
                    [edge] * len(none),
                    none,
                    linestyle="none",
                    marker=">",
                    color=st.color,
                    markeredgecolor=edge_colour(st.color),
                    markersize=4,
                    zorder=3,
                )
                for a in none:
                    ax.annotate(
                        f"none ≤ {top:.0f}",
                        (edge, a),
                        xytext=(4, 0),
                        textcoords="offset points",
                        ha="left",
                        va="center",
                        fontsize=5.5,
                        color=DARK_GREY,
                    )
            if i == 0:
                label = st.label
                if not any_meas:
                    label += f": none ≤ {top:.0f}" + ("" if any_pred else " (none predicted)")
                elif meth == "pasa:script":
                    label += " (band: score stage only)"
                line = Line2D([], [], color=st.color, marker=st.marker, markeredgecolor=edge_colour(st.color))
                band = Line2D([], [], color=st.color, alpha=0.35, linewidth=4, solid_capstyle="butt")
                handles.append((band, line) if any_pred else line)
                labels.append(label)
        ax.set_xscale("log", base=2)
        ax.set_xlim(8, 4 * top)
        ax.set_ylim(-0.8, 21.5)
        ax.set_yticks([0, 5, 10, 15, 20])
        ax.set_ylabel("amplitude A")
        ax.set_title(f"{dist} inputs (inf/NaN right of each curve)", loc="left", pad=2)
    axes[-1, 0].set_xlabel("mean μ of Q, K and V")
    handles.append(Line2D([], [], color=GREY, alpha=0.5, linewidth=4, solid_capstyle="butt"))
    labels.append("pale band: predicted by the overflow envelope")
    handles.append(Line2D([], [], color=DARK_GREY, marker=">", linestyle="none", markersize=4))
    labels.append(f"finite up to the largest mean tried, {top:.0f}")
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncols=1,
        fontsize=5.8,
        handler_map={tuple: HandlerTuple(ndivide=None, pad=0.0)},
    )
    return fig


def overflow_frontier(
    *,
    quick: bool | None = None,
    out: str | Path | None = None,
    from_csv: str | Path | None = None,
    data: str | Path | SweepOptions | None = None,
) -> FigureResult[OverflowFrontierSummary]:
    """The overflow frontier over (mean, amplitude): for each method, the smallest input mean at which
    its output contains inf/NaN (a measurement). Overflow is taken to be monotone in the mean (the
    data are one draw, shifted): a method finite at mean 1024 counts as finite below it (drawn as ▷
    "none ≤ 1024" where the method overflows at other amplitudes); otherwise a binary search over the
    grid 2^(k/2) (1 … 1024) finds the first overflowing grid mean, and bisection narrows it to 1 %.

    Data: :func:`pasa_npu.data.make_qkv` (seed 2024724; the same draw, shifted, for every mean), both
    distributions; full: one head, S1 = S2 = 1407, d = 128, the reference grid's amplitudes
    {0.5, 5, 10, 20}; quick: S1 = S2 = 256, amplitudes {0.5, 10, 20}. Predicted (pale bands, an
    estimate): the mean at which :func:`pasa_theory.bounds.overflow_envelope` first names an
    overflowing stage (:func:`predicted_overflow_mean`), from the input statistics alone, over the
    measured amplitude range (A = 0.5 … 20; at A = 0 the inputs are constant, the softmax exactly
    uniform, and the envelope names the raw accumulators of the script preset and K smoothing: a
    different regime, not drawn). The envelope models the score tile, the block offsets and the
    accumulators of a correctly tracked softmax; it does not model the script preset's
    running-reference bookkeeping, whose rounding lets raw O/ℓ accumulators grow (that is caught a
    posteriori, on the actual tensors, by :func:`pasa_theory.bounds.predict`), so its band is its
    score stage only.
    """
    options = sweep_options(data, from_csv)
    return run_figure(
        "overflow_frontier",
        columns=OVERFLOW_FRONTIER_COLUMNS,
        compute=lambda q: _frontier_compute(q, options),
        summarize=_frontier_summarize,
        draw=_frontier_draw,
        quick=quick,
        out=out,
        from_csv=from_csv,
    )


# -- accumulators over long sequences --------------------------------------------------------------

_ACC_METHODS = ("pasa", "pasa:script", "fa_q", "fa_hybrid")
ACCUMULATOR_OVERFLOW_COLUMNS = ("v_mean", "seq_kv", "x", "method", "rel_rmse", "nonfinite", "stage")
_V_MEANS = (10.0, 30.0)


@dataclass(frozen=True)
class AccumulatorOverflowSummary:
    """Headline numbers of :func:`accumulator_overflow` (keys: mean(V))."""

    predicted_threshold_seq_kv: dict[float, float]
    reference_first_overflow_seq_kv: dict[float, int | None]
    reference_last_finite_seq_kv: dict[float, int | None]
    npu_fp16_nonfinite: int
    npu_fp16_max_rel_rmse: float


def _acc_compute(quick: bool) -> tuple[list[Row], dict[str, str]]:
    seqs = (1024, 2048, 4096) if quick else (256, 512, 1024, 1536, 2048, 2176, 2304, 3072, 4096, 6144, 8192)
    rows: list[Row] = []
    for vm in _V_MEANS:
        for s2 in seqs:
            q, k, v = data.make_biased_v(
                seq_kv=s2,
                seq_q=32 if quick else 128,
                heads=1 if quick else 4,
                kv_heads=1 if quick else 4,
                v_mean=vm,
                seed=0,
            )
            for rec in run_case(q, k, v, _ACC_METHODS):
                bad = rec["nonfinite"]
                rows.append(
                    dict(
                        v_mean=vm,
                        seq_kv=s2,
                        x=s2 * vm / FP16_OVERFLOW,
                        method=rec["method"],
                        rel_rmse=rec["rel_rmse"],
                        nonfinite=bad,
                        stage=(rec["first_nonfinite_stage"] or "output") if bad else "",
                    )
                )
    setup = dict(
        data="make_biased_v (|q|, |k| <= 0.05, V = v_mean +- 0.5), seed 0, fp16 inputs",
        shape=f"batch 1, heads {1 if quick else 4}, kv_heads {1 if quick else 4}, S1 {32 if quick else 128}, "
        f"S2 {', '.join(map(str, seqs))}, d 128, block_kv 128",
        v_mean=", ".join(f"{x:g}" for x in _V_MEANS),
        methods=", ".join(_ACC_METHODS),
        measured="relative RMSE against the float64 golden, inf/NaN and its first stage (measurement)",
        predicted="S2 * v_mean = 65520 for unnormalised fp16 accumulators (closed form)",
    )
    return rows, setup


def _acc_summarize(rows: list[Row]) -> AccumulatorOverflowSummary:
    ref = [r for r in rows if r["method"] == "pasa:script"]
    return AccumulatorOverflowSummary(
        predicted_threshold_seq_kv={vm: FP16_OVERFLOW / vm for vm in _V_MEANS},
        reference_first_overflow_seq_kv={
            vm: min((r["seq_kv"] for r in ref if r["v_mean"] == vm and r["nonfinite"]), default=None)
            for vm in _V_MEANS
        },
        reference_last_finite_seq_kv={
            vm: max((r["seq_kv"] for r in ref if r["v_mean"] == vm and not r["nonfinite"]), default=None)
            for vm in _V_MEANS
        },
        npu_fp16_nonfinite=sum(bool(r["nonfinite"]) for r in rows if r["method"] == "pasa"),
        npu_fp16_max_rel_rmse=max(r["rel_rmse"] for r in rows if r["method"] == "pasa"),
    )


def _acc_draw(rows: list[Row], summary: AccumulatorOverflowSummary) -> Any:
    fig, axes = new_figure(3.7, 2, 1, sharex=True, gridspec_kw=dict(height_ratios=[0.7, 4.0]))
    ox, ax = axes[:, 0]
    for meth in _ACC_METHODS:
        st = method_style(meth)
        for row_y, (vm, fill) in enumerate(((10.0, "white"), (30.0, None))):
            pts = sorted(
                (r["x"], r["rel_rmse"], r["nonfinite"])
                for r in rows
                if r["method"] == meth and r["v_mean"] == vm
            )
            xs = [p[0] for p in pts if not p[2]]
            ys = [p[1] for p in pts if not p[2]]
            lab = f"{st.label}, mean(V) = {vm:.0f}" if meth in ("pasa", "pasa:script") or vm == 30.0 else None
            ax.plot(
                xs,
                ys,
                color=st.color,
                marker=st.marker,
                linestyle=st.linestyle,
                label=lab,
                markerfacecolor=fill or st.color,
                markeredgecolor=edge_colour(st.color),
            )
            bad = [p[0] for p in pts if p[2]]
            if bad:  # inf/NaN: its own category, not a number
                ox.plot(
                    bad,
                    [row_y] * len(bad),
                    linestyle="none",
                    marker=st.marker,
                    color=st.color,
                    markerfacecolor=fill or st.color,
                    markeredgecolor=edge_colour(st.color),
                )
    for axis in (ax, ox):
        axis.axvline(1.0, color=OKABE_ITO["black"], linestyle="--", linewidth=0.7)
    ox.set_yticks([0, 1], ["mean(V) 10", "mean(V) 30"], fontsize=5.8)
    ox.set_ylim(-0.6, 1.6)
    ox.grid(axis="y", visible=False)
    ox.set_title("inf/NaN in the output (any run)", loc="left", pad=2, fontsize=7)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(r"$S_2\cdot$mean(V) / 65520  (dashed: predicted overflow)")
    ax.set_ylabel("relative RMSE (RMSE / RMS(V))")
    legend_below(fig, ncols=1, fontsize=6)
    return fig


def accumulator_overflow(
    *, quick: bool | None = None, out: str | Path | None = None, from_csv: str | Path | None = None
) -> FigureResult[AccumulatorOverflowSummary]:
    """Long sequences over a biased V (:func:`pasa_npu.data.make_biased_v`: |q|, |k| <= 0.05, so the
    attention is nearly uniform, V ≈ v_mean ± 0.5), v_mean ∈ {10, 30}, S2 from 256 to 8192 (quick:
    three lengths, one head, 32 queries; full: 4 heads, 128 queries). The script preset keeps O and
    ℓ unnormalised in fp16, so it is predicted to overflow once O ≈ S2·v_mean passes 65520; npu_fp16
    renormalises them by powers of two every block. x = S2·v_mean/65520 (1 = predicted threshold).
    Relative RMSE and inf/NaN are measurements.
    """
    return run_figure(
        "accumulator_overflow",
        columns=ACCUMULATOR_OVERFLOW_COLUMNS,
        compute=_acc_compute,
        summarize=_acc_summarize,
        draw=_acc_draw,
        quick=quick,
        out=out,
        from_csv=from_csv,
    )


# -- resonance -------------------------------------------------------------------------------------

_RES_PHASES = ("aligned", "anti", "random")
RESONANCE_METHODS = (
    "pasa",
    "pasa:script",
    "pasa:fp16_keymean",
    "fa_qk",
    "fa_q",
    "fa_naive",
    "smooth_k",
    "pasa:bf16",
    "fa_hybrid",
)
_PHASE_STYLE = {"aligned": "-", "anti": "--", "random": ":"}
#: Histogram bins (log10) of the per-row statistics of :func:`resonance_statistics`.
_BIAS_BINS = [(-3.0 + 0.1 * i, -3.0 + 0.1 * (i + 1)) for i in range(50)]  # |row mean| / row std
_SHIFT_BINS = [(-0.5 + 0.05 * i, -0.5 + 0.05 * (i + 1)) for i in range(50)]  # max|s| / max|s̃|
_RESONANCE_CACHE: dict[bool, tuple[list[Row], list[Row], list[Row]]] = {}


def _resonance_shape(quick: bool) -> tuple[tuple[float, ...], range, tuple[int, int, int]]:
    amps = (8.0, 24.0, 40.0) if quick else (4.0, 8.0, 12.0, 16.0, 20.0, 24.0, 28.0, 32.0, 36.0, 40.0, 48.0)
    seeds = range(2) if quick else range(8)
    return amps, seeds, ((128, 256, 1) if quick else (256, 512, 2))


def _resonance_setup(quick: bool) -> dict[str, str]:
    amps, seeds, (sq, skv, heads) = _resonance_shape(quick)
    return dict(
        data="make_resonant (one sinusoid of frequency 3 over the head dimension, per-token amplitude in [A/2, A], "
        f"noise 0.5), phases aligned, anti, random; seeds {seeds.start}..{seeds.stop - 1}; fp16 inputs",
        shape=f"batch 1, heads {heads}, kv_heads {heads}, S1 {sq}, S2 {skv}, d 128, block_kv 128",
        amplitudes=", ".join(f"{a:g}" for a in amps),
    )


def _histogram(values: Any, bins: list[tuple[float, float]]) -> list[int]:
    x = torch.log10(values.flatten())
    return [int(((x >= lo) & (x < hi)).sum()) for lo, hi in bins]


def _resonance_runs(quick: bool) -> tuple[list[Row], list[Row], list[Row]]:
    """Score statistics, per-row histograms and method records over (phase, amplitude, seed); computed
    once per mode and shared by :func:`resonance_statistics` and :func:`resonance_accuracy`."""
    key = bool(quick)
    if key in _RESONANCE_CACHE:
        return _RESONANCE_CACHE[key]
    amps, seeds, (sq, skv, heads) = _resonance_shape(quick)
    beta = shift_parameters("npu_fp16", head_dim=128).beta
    stats: list[Row] = []
    recs: list[Row] = []
    hist = {ph: ([0] * len(_BIAS_BINS), [0] * len(_SHIFT_BINS)) for ph in _RES_PHASES}
    for phase in _RES_PHASES:
        for amp in amps:
            for seed in seeds:
                q, k, v = data.make_resonant(
                    phase=phase, amplitude=amp, seed=seed, seq_q=sq, seq_kv=skv, heads=heads, kv_heads=heads
                )
                s = fp64_scores(q, k)  # τ·q·k, float64
                rmean, rstd = s.mean(-1), s.std(-1)
                bias = rmean.abs() / rstd
                blocks = s.view(*s.shape[:-1], -1, 128)  # exact-arithmetic shift by β × block row mean
                shifted = (blocks - beta * blocks.mean(-1, keepdim=True)).flatten(-2)
                shrink = s.abs().amax(-1) / shifted.abs().amax(-1)
                hb, hs = hist[phase]
                for i, c in enumerate(_histogram(bias, _BIAS_BINS)):
                    hb[i] += c
                for i, c in enumerate(_histogram(shrink, _SHIFT_BINS)):
                    hs[i] += c
                stats.append(
                    dict(
                        phase=phase,
                        amplitude=amp,
                        seed=seed,
                        max_abs_qk=float(s.abs().max()) * 128**0.5,
                        bias_to_spread_median=float(bias.median()),
                        shift_shrink_median=float(shrink.median()),
                    )
                )
                for r in run_case(q, k, v, RESONANCE_METHODS):
                    recs.append(
                        dict(
                            phase=phase,
                            amplitude=amp,
                            seed=seed,
                            method=r["method"],
                            rel_rmse=r["rel_rmse"],
                            nonfinite=r["nonfinite"],
                            stage=r["first_nonfinite_stage"] or "",
                        )
                    )
    hrows: list[Row] = []
    for ph in _RES_PHASES:
        hb, hs = hist[ph]
        hrows += [
            dict(kind="hist_bias_to_spread", phase=ph, bin_lo=lo, bin_hi=hi, count=c)
            for (lo, hi), c in zip(_BIAS_BINS, hb)
        ]
        hrows += [
            dict(kind="hist_shift_shrink", phase=ph, bin_lo=lo, bin_hi=hi, count=c)
            for (lo, hi), c in zip(_SHIFT_BINS, hs)
        ]
    _RESONANCE_CACHE[key] = (stats, hrows, recs)
    return stats, hrows, recs


RESONANCE_STATISTICS_COLUMNS = (
    "kind",
    "phase",
    "amplitude",
    "seed",
    "max_abs_qk",
    "bias_to_spread_median",
    "shift_shrink_median",
    "fa_qk_output_nonfinite",
    "fa_qk_scores_nonfinite",
    "bin_lo",
    "bin_hi",
    "count",
)


@dataclass(frozen=True)
class ResonanceStatisticsSummary:
    """Headline numbers of :func:`resonance_statistics` (keys: phase)."""

    predicted_overflow_amplitude: float
    fa_qk_first_overflow_amplitude: dict[str, float | None]
    fa_qk_first_score_overflow_amplitude: dict[str, float | None]
    fa_qk_last_finite_amplitude: dict[str, float | None]
    bias_to_spread_median: dict[str, float]
    shift_shrink_median: dict[str, float]
    max_qk_over_prediction: dict[str, float]
    rows_per_phase: int


def _res_stats_compute(quick: bool) -> tuple[list[Row], dict[str, str]]:
    stats, hrows, recs = _resonance_runs(quick)
    rows = [dict(kind="stats", **x) for x in stats] + hrows
    over: dict[tuple[str, float], list[bool]] = {}
    inner: dict[tuple[str, float], list[bool]] = {}
    for r in recs:
        if r["method"] == "fa_qk":
            over.setdefault((r["phase"], r["amplitude"]), []).append(bool(r["nonfinite"]))
            inner.setdefault((r["phase"], r["amplitude"]), []).append(bool(r["stage"]))
    for (ph, amp), flags in sorted(over.items()):
        rows.append(
            dict(
                kind="fa_qk_overflow",
                phase=ph,
                amplitude=amp,
                fa_qk_output_nonfinite=sum(flags) / len(flags),
                fa_qk_scores_nonfinite=sum(inner[(ph, amp)]) / len(flags),
            )
        )
    return rows, _res_stats_setup(quick)


def _res_stats_setup(quick: bool) -> dict[str, str]:
    return _resonance_setup(quick) | dict(
        methods="fa_qk (its overflow); the other panels are statistics of the data",
        max_abs_qk="largest unscaled |q.k| of the input, float64 (exact statistic of the data)",
        histograms="over all query rows: log10(|row mean| / row std) and log10(max|s| / max|s_shifted|), "
        "s shifted by npu_fp16's beta times the 128-key block row mean in exact arithmetic",
        fa_qk="fraction of seeds with inf/NaN in fa_qk's output / in its scores (measurement)",
    )


def _res_stats_summarize(rows: list[Row]) -> ResonanceStatisticsSummary:
    stats = [r for r in rows if r["kind"] == "stats"]
    ov = [r for r in rows if r["kind"] == "fa_qk_overflow"]

    def first(col: str, ph: str) -> float | None:
        return min((r["amplitude"] for r in ov if r["phase"] == ph and r[col] > 0), default=None)

    return ResonanceStatisticsSummary(
        predicted_overflow_amplitude=math.sqrt(2 * FP16_OVERFLOW / 128),
        fa_qk_first_overflow_amplitude={ph: first("fa_qk_output_nonfinite", ph) for ph in _RES_PHASES},
        fa_qk_first_score_overflow_amplitude={ph: first("fa_qk_scores_nonfinite", ph) for ph in _RES_PHASES},
        fa_qk_last_finite_amplitude={
            ph: max(
                (r["amplitude"] for r in ov if r["phase"] == ph and r["fa_qk_output_nonfinite"] == 0),
                default=None,
            )
            for ph in _RES_PHASES
        },
        bias_to_spread_median={
            ph: statistics.median(x["bias_to_spread_median"] for x in stats if x["phase"] == ph)
            for ph in _RES_PHASES
        },
        shift_shrink_median={
            ph: statistics.median(x["shift_shrink_median"] for x in stats if x["phase"] == ph)
            for ph in _RES_PHASES
        },
        max_qk_over_prediction={
            ph: max(x["max_abs_qk"] / (x["amplitude"] ** 2 * 64) for x in stats if x["phase"] == ph)
            for ph in _RES_PHASES
        },
        rows_per_phase=sum(
            r["count"] for r in rows if r["kind"] == "hist_bias_to_spread" and r["phase"] == "aligned"
        ),
    )


def _res_stats_draw(rows: list[Row], summary: ResonanceStatisticsSummary) -> Any:
    from matplotlib.lines import Line2D

    fig, axes = new_figure(6.4, 4, 1, gridspec_kw=dict(height_ratios=[3.0, 1.15, 2.2, 2.2]))
    ax, ox, bx, cx = axes[:, 0]
    ax.sharex(ox)
    stats = [r for r in rows if r["kind"] == "stats"]
    amps = sorted({r["amplitude"] for r in stats})
    for ph in _RES_PHASES:
        sub = [r for r in stats if r["phase"] == ph]
        med = [statistics.median(r["max_abs_qk"] for r in sub if r["amplitude"] == a) for a in amps]
        lo = [min(r["max_abs_qk"] for r in sub if r["amplitude"] == a) for a in amps]
        hi = [max(r["max_abs_qk"] for r in sub if r["amplitude"] == a) for a in amps]
        ax.errorbar(
            amps,
            med,
            yerr=[[m - low for m, low in zip(med, lo)], [h - m for m, h in zip(med, hi)]],
            color=OKABE_ITO["black"],
            linestyle=_PHASE_STYLE[ph],
            marker="o",
            markersize=2.5,
            markerfacecolor="white",
            capsize=1.5,
            elinewidth=0.5,
        )
        for kind, axis in (("hist_bias_to_spread", bx), ("hist_shift_shrink", cx)):
            h = sorted(
                (r["bin_lo"], r["bin_hi"], r["count"]) for r in rows if r["kind"] == kind and r["phase"] == ph
            )
            total = sum(c for *_, c in h) or 1
            edges = [10 ** h[0][0]] + [10**b for _, b, _ in h]
            axis.stairs(
                [c / total for *_, c in h],
                edges,
                color=OKABE_ITO["black"],
                linestyle=_PHASE_STYLE[ph],
                linewidth=1.0,
            )
    xa = np.linspace(min(amps), max(amps), 100)
    ax.plot(xa, xa**2 * 64, color=OKABE_ITO["vermillion"], alpha=0.4, linewidth=3.5, zorder=0)
    ax.axhline(FP16_MAX, color=OKABE_ITO["vermillion"], linewidth=0.6)
    ax.text(max(amps), FP16_MAX / 1.4, "fp16 max 65504", fontsize=6, va="top", ha="right")
    ax.set_yscale("log")
    ax.set_ylabel(r"max $|q\cdot k|$")
    ax.set_title("(a) largest |q·k|: median and range over seeds", loc="left", pad=2)
    ax.tick_params(labelbottom=False)
    # (a') where fa_qk overflows: one row per phase, a category axis
    fa = method_style("fa_qk")
    for r in rows:
        if r["kind"] != "fa_qk_overflow" or r["fa_qk_scores_nonfinite"] == 0:
            continue
        y = _RES_PHASES.index(r["phase"])
        ox.plot(
            r["amplitude"],
            y,
            marker=fa.marker,
            color=fa.color,
            linestyle="none",
            markersize=4,
            markerfacecolor=fa.color if r["fa_qk_output_nonfinite"] > 0 else "white",
        )
    ox.set_yticks(range(len(_RES_PHASES)), list(_RES_PHASES), fontsize=6)
    ox.set_ylim(len(_RES_PHASES) - 0.5, -0.5)
    ox.set_xlim(min(amps) - 2, max(amps) + 2)
    ox.grid(axis="y", visible=False)
    ox.set_xlabel("resonance amplitude A")
    ox.set_title(f"(a′) {fa.label} overflows (any seed)", loc="left", pad=2)
    bx.set_xscale("log")
    bx.set_xlim(1e-3, 30)
    bx.set_xlabel("|row mean| / row std of the scores")
    bx.set_ylabel("fraction of rows")
    bx.set_title("(b) common bias of a score row", loc="left", pad=2)
    cx.set_xscale("log")
    cx.set_xlim(0.5, 10)
    cx.set_xlabel(r"$\max|s| / \max|\tilde s|$ per row (shift by $\beta\times$block row mean)")
    cx.set_ylabel("fraction of rows")
    cx.set_title("(c) how much PASA's shift shrinks the largest score", loc="left", pad=2)
    handles = [
        Line2D(
            [],
            [],
            color=OKABE_ITO["black"],
            linestyle=_PHASE_STYLE[ph],
            marker="o" if i == 0 else None,
            markersize=2.5,
            markerfacecolor="white",
        )
        for i, ph in enumerate(_RES_PHASES)
    ]
    labels = [f"{ph} phase" for ph in _RES_PHASES]
    handles += [
        Line2D([], [], color=OKABE_ITO["vermillion"], alpha=0.4, linewidth=3.5),
        Line2D([], [], marker=fa.marker, color=fa.color, linestyle="none"),
        Line2D([], [], marker=fa.marker, color=fa.color, markerfacecolor="white", linestyle="none"),
    ]
    labels += [
        r"coherent prediction $A^2 d/2$ (a)",
        "inf/NaN in the output (a′)",
        "only scores overflow, to −inf (a′)",
    ]
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=5.8)
    return fig


def resonance_statistics(
    *, quick: bool | None = None, out: str | Path | None = None, from_csv: str | Path | None = None
) -> FigureResult[ResonanceStatisticsSummary]:
    """Q and K sharing one sinusoid along the head dimension (:func:`pasa_npu.data.make_resonant`,
    frequency 3, noise 0.5): phase-aligned, anti-aligned, and with a random phase per token; amplitudes
    A = 4 … 48, 8 seeds each (quick: 3 amplitudes, 2 seeds); S1 = 256, S2 = 512, 2 heads, d = 128 (quick:
    128, 256, 1 head). (a) max|q·k| against A (median, min and max over seeds; exact statistics of the
    data) with the coherent prediction A²·d/2 (per-token amplitudes up to A, |cos| up to 1) and fp16's
    limit; (a′) the amplitudes at which the vendor-style FA (``fa_qk``) overflows in some seed, one row
    per phase (filled: inf/NaN in the output; open: only scores overflowed, to −inf, which the softmax
    absorbs; a measurement); (b) histogram over all query rows of |row mean| / row std of the scores;
    (c) histogram of max|s| / max|s̃|, how much PASA's shift (β of npu_fp16 times the 128-key block row
    mean, exact arithmetic) shrinks each row's largest score.
    """
    return run_figure(
        "resonance_statistics",
        columns=RESONANCE_STATISTICS_COLUMNS,
        compute=_res_stats_compute,
        summarize=_res_stats_summarize,
        draw=_res_stats_draw,
        quick=quick,
        out=out,
        from_csv=from_csv,
    )


_RES_DRAWN = (
    "pasa",
    "pasa:script",
    "pasa:fp16_keymean",
    "fa_qk",
    "fa_q",
    "smooth_k",
    "pasa:bf16",
    "fa_hybrid",
)
RESONANCE_ACCURACY_COLUMNS = (
    "phase",
    "method",
    "amplitude",
    "seeds",
    "overflowed",
    "rel_rmse_median",
    "ratio_median",
    "ratio_min",
    "ratio_max",
)


@dataclass(frozen=True)
class ResonanceAccuracySummary:
    """Headline numbers of :func:`resonance_accuracy`."""

    #: phase → method → median over amplitudes of the per-amplitude median ratio to naive fp16 (None: no finite run)
    ratio_to_naive_median: dict[str, dict[str, float | None]]
    #: method → runs with inf/NaN
    overflowed: dict[str, int]


def _res_acc_compute(quick: bool) -> tuple[list[Row], dict[str, str]]:
    _, _, recs = _resonance_runs(quick)
    naive = {
        (r["phase"], r["amplitude"], r["seed"]): r["rel_rmse"] for r in recs if r["method"] == "fa_naive"
    }
    groups: dict[tuple[str, str, float], list[Row]] = {}
    for r in recs:
        groups.setdefault((r["phase"], r["method"], r["amplitude"]), []).append(r)
    rows: list[Row] = []
    for (ph, meth, amp), rs in sorted(groups.items()):
        fin = [r for r in rs if not r["nonfinite"]]
        ratios = [r["rel_rmse"] / naive[(ph, amp, r["seed"])] for r in fin if naive[(ph, amp, r["seed"])] > 0]
        r_min, r_med, r_max = spread(ratios)
        rows.append(
            dict(
                phase=ph,
                method=meth,
                amplitude=amp,
                seeds=len(rs),
                overflowed=len(rs) - len(fin),
                rel_rmse_median=statistics.median(r["rel_rmse"] for r in fin) if fin else None,
                ratio_median=r_med,
                ratio_min=r_min,
                ratio_max=r_max,
            )
        )
    setup = _resonance_setup(quick) | dict(
        methods=", ".join(RESONANCE_METHODS),
        ratio="relative RMSE / that of fa_naive on the same input, against the float64 golden (measurement)",
    )
    return rows, setup


def _res_acc_summarize(rows: list[Row]) -> ResonanceAccuracySummary:
    def med(ph: str, meth: str) -> float | None:
        vals = [
            r["ratio_median"]
            for r in rows
            if r["phase"] == ph and r["method"] == meth and r["ratio_median"] is not None
        ]
        return statistics.median(vals) if vals else None

    return ResonanceAccuracySummary(
        ratio_to_naive_median={ph: {m: med(ph, m) for m in RESONANCE_METHODS} for ph in _RES_PHASES},
        overflowed={m: sum(r["overflowed"] for r in rows if r["method"] == m) for m in RESONANCE_METHODS},
    )


def _res_acc_draw(rows: list[Row], summary: ResonanceAccuracySummary) -> Any:
    fig, axes = new_figure(3.8)
    ax = axes[0, 0]
    for meth in _RES_DRAWN:
        st = method_style(meth)
        n_over = summary.overflowed.get(meth, 0)
        label = st.label + (f" (inf/NaN: {n_over} runs, left out)" if n_over else "")
        for ph in ("aligned", "random"):
            pts = sorted((r["amplitude"], r) for r in rows if r["method"] == meth and r["phase"] == ph)
            xs = [a for a, r in pts if r["ratio_median"] is not None]
            ys = [r["ratio_median"] for _, r in pts if r["ratio_median"] is not None]
            fill = st.color if ph == "aligned" else "white"
            ax.plot(
                xs,
                ys,
                color=st.color,
                marker=st.marker,
                linestyle=_PHASE_STYLE[ph],
                markerfacecolor=fill,
                markeredgecolor=edge_colour(st.color),
                label=label if ph == "aligned" else None,
            )
    ax.axhline(1.0, color=OKABE_ITO["black"], linewidth=0.7)
    ax.plot([], [], color=OKABE_ITO["black"], linestyle="-", label="aligned phase (filled)")
    ax.plot([], [], color=OKABE_ITO["black"], linestyle=":", label="random phase (open)")
    ax.set_yscale("log")
    ax.set_xlabel("resonance amplitude A")
    ax.set_ylabel("relative RMSE ÷ naive fp16's\n(median over finite seeds)")
    legend_below(fig, ncols=1, fontsize=5.8)
    return fig


def resonance_accuracy(
    *, quick: bool | None = None, out: str | Path | None = None, from_csv: str | Path | None = None
) -> FigureResult[ResonanceAccuracySummary]:
    """Same runs as :func:`resonance_statistics`. For every input, each method's relative RMSE divided
    by that of naive fp16 attention on the same input (a paired ratio of measurements, so the seeds'
    very different softmax sharpness cancels); drawn: the median over seeds against the amplitude, for
    phase-aligned (solid, filled) and random-phase (dotted, open) inputs. Runs with inf/NaN are
    counted (in the legend), not averaged.
    """
    return run_figure(
        "resonance_accuracy",
        columns=RESONANCE_ACCURACY_COLUMNS,
        compute=_res_acc_compute,
        summarize=_res_acc_summarize,
        draw=_res_acc_draw,
        quick=quick,
        out=out,
        from_csv=from_csv,
    )


for _f in (overflow_frontier, accumulator_overflow, resonance_statistics, resonance_accuracy):
    _f.__doc__ = (_f.__doc__ or "") + METHOD_DOC
del _f
overflow_frontier.__doc__ = (overflow_frontier.__doc__ or "") + SWEEP_DOC
