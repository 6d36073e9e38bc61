"""Figure of notebook 06 (beyond PASA): every arrangement ÷ ``fa_hybrid`` on the reference grid, the same
under the matrix unit's narrow accumulators, the floor of a fully fp16 vector unit, and the cost model.

Four panels of one CSV (column ``panel``), on the 32 cells of the reference grid (uniform and hybrid ×
mean {0, 10, 20, 30} × amplitude {0.5, 5, 10, 20}, seed 2024724, fp16 inputs):

* ``grid``: relative RMSE (a measurement against the float64 golden) of each method of
  :data:`GRID_METHODS` with the wide (fp32) accumulator at :func:`grid_shape` (the reference GQA group:
  7 query heads, 1 KV head, S = 1407, all rows), and its ratio to ``fa_hybrid`` on the same cell;
* ``mma``: the same for :data:`MMA_METHODS` under every accumulation model of :data:`MMA_MODELS`
  (docs/beyond.md §1) at :func:`mma_shape` (one head, 128 query rows), ratios to the wide ``fa_hybrid``
  of that panel;
* ``floor``: the floor of a fully fp16 vector unit (:func:`pasa_theory.floor.fp16_vector_floor`, an
  estimate: a model, docs/beyond.md §3) on the grid panel's inputs, ÷ the measured ``fa_hybrid``;
* ``cost``: the cost model per tile (:func:`pasa_theory.cost.tile_costs`, docs/beyond.md §2).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pasa_theory import cost as _cost
from pasa_theory import floor as _floor

from ..data import DISTRIBUTIONS
from ..harness import grid_cells, run_case
from ..precision import PRESETS, Precision
from ._io import FigureResult, Row, run_figure
from ._style import GREY, OKABE_ITO, new_figure
from .comparison import ONE_HOT_BELOW

__all__ = [
    "GRID_METHODS",
    "MMA_METHODS",
    "MMA_MODELS",
    "BEYOND_COLUMNS",
    "MethodSpread",
    "BeyondSummary",
    "beyond_pasa",
    "grid_shape",
    "mma_shape",
    "grid_rows",
    "mma_rows",
    "combine",
    "floor_rows",
    "cost_rows",
]

#: Methods of the grid panel: (label, harness method, run precision).
GRID_METHODS: tuple[tuple[str, str, str], ...] = (
    ("pasa:npu_fp16", "pasa", "npu_fp16"),
    ("pasa:fp16_keymean", "pasa", "fp16_keymean"),
    ("pasa:fp16_accurate", "pasa", "fp16_accurate"),
    ("fa_fp16", "fa_qk", "npu_fp16"),
    ("fa_hybrid", "fa_hybrid", "npu_fp16"),
)
#: Methods of the accumulation panel (a subset of the grid panel's).
MMA_METHODS: tuple[tuple[str, str, str], ...] = tuple(
    m for m in GRID_METHODS if m[0] in ("pasa:npu_fp16", "pasa:fp16_accurate", "fa_fp16", "fa_hybrid")
)
#: The accumulation models: name → the Precision fields they set (docs/beyond.md §1).
MMA_MODELS: dict[str, dict[str, Any]] = {
    "wide": {},
    "fp16": dict(mma_acc="fp16", mma_round="nearest", mma_chunk=16),
    "fp22": dict(mma_acc="fp22", mma_round="zero", mma_chunk=16),
}

BEYOND_COLUMNS = (
    "panel",
    "dist",
    "mean",
    "amplitude",
    "method",
    "mma",
    "rel_rmse",
    "nonfinite",
    "first_nonfinite_stage",
    "ratio_to_fa_hybrid",
    "ew_abs_x",
    "matrix_flops",
    "vector_ops",
    "bytes_to_vector",
    "heads",
    "kv_heads",
    "seq",
    "head_dim",
)


def grid_shape(quick: bool) -> dict[str, int]:
    """The grid and floor panels' shape: the reference GQA group of figures/method_comparison.csv, seven
    query heads on one KV head, all 1407 query rows against S2 = 1407 keys, d = 128; quick: one head,
    S1 = 32, S2 = 256."""
    if quick:
        return dict(batch=1, heads=1, kv_heads=1, seq_q=32, seq_kv=256, head_dim=128)
    return dict(batch=1, heads=7, kv_heads=1, seq_q=1407, seq_kv=1407, head_dim=128)


def mma_shape(quick: bool) -> dict[str, int]:
    """The accumulation panel's shape: one query head on one KV head, 128 query rows against the
    reference S2 = 1407 keys, d = 128 (its own wide runs are the denominators). Rows are independent and
    identically distributed, so 128 of them sample a reference-length row's error; the emulation of a
    narrow accumulator costs one rounding pass per chunk of 16 products, and the full group is 77 times
    larger. Quick: the grid panel's shape."""
    if quick:
        return grid_shape(quick)
    return dict(batch=1, heads=1, kv_heads=1, seq_q=128, seq_kv=1407, head_dim=128)


def _cells(quick: bool) -> dict[str, Any]:
    if quick:
        return dict(means=(0.0, 30.0), amplitudes=(20.0,))
    return {}


def _precision(preset: str, model: str) -> Precision:
    return PRESETS[preset].replace(**MMA_MODELS[model]) if MMA_MODELS[model] else PRESETS[preset]


def _measure(
    panel: str, models: tuple[str, ...], shape: dict[str, int], quick: bool, dists: tuple[str, ...]
) -> list[Row]:
    rows: list[Row] = []
    for cell, q, k, v in grid_cells(shape=shape, dists=dists, progress=False, **_cells(quick)):
        here: list[Row] = []
        for model in models:
            for label, method, preset in GRID_METHODS if panel == "grid" else MMA_METHODS:
                (rec,) = run_case(q, k, v, [method], precision=_precision(preset, model), extra=cell)
                here.append(
                    dict(
                        cell,
                        panel=panel,
                        method=label,
                        mma=model,
                        rel_rmse=rec["rel_rmse"],
                        nonfinite=rec["nonfinite"],
                        first_nonfinite_stage=rec["first_nonfinite_stage"],
                        heads=shape["heads"],
                        kv_heads=shape["kv_heads"],
                        seq=shape["seq_kv"],
                        head_dim=shape["head_dim"],
                    )
                )
        (base,) = [r["rel_rmse"] for r in here if (r["method"], r["mma"]) == ("fa_hybrid", "wide")]
        for r in here:
            ok = base >= ONE_HOT_BELOW and not r["nonfinite"]
            r["ratio_to_fa_hybrid"] = r["rel_rmse"] / base if ok else None
        rows += here
    return rows


def grid_rows(quick: bool, dists: tuple[str, ...] = DISTRIBUTIONS) -> list[Row]:
    """The grid panel on the cells of ``dists``: every method of :data:`GRID_METHODS` with the wide
    accumulator, ratios to ``fa_hybrid`` on the same cell."""
    return _measure("grid", ("wide",), grid_shape(quick), quick, dists)


def mma_rows(quick: bool, dists: tuple[str, ...] = DISTRIBUTIONS) -> list[Row]:
    """The accumulation panel on the cells of ``dists``: :data:`MMA_METHODS` under every model of
    :data:`MMA_MODELS` (the wide one included), ratios to the wide ``fa_hybrid`` on the same cell."""
    return _measure("mma", tuple(MMA_MODELS), mma_shape(quick), quick, dists)


def floor_rows(quick: bool) -> list[Row]:
    """The floor panel: :func:`pasa_theory.floor.fp16_vector_floor` on the measured panels' inputs (an
    estimate), as ``method="floor"`` (the fully fp16 vector unit) and ``"fa_hybrid_model"``."""
    shape = grid_shape(quick)
    rows: list[Row] = []
    for cell, q, k, v in grid_cells(shape=shape, progress=False, **_cells(quick)):
        est = _floor.fp16_vector_floor(q.double().numpy(), k.double().numpy(), v.double().numpy())
        for method, value in (("floor", est.rel_rmse_floor), ("fa_hybrid_model", est.rel_rmse_hybrid)):
            rows.append(
                dict(
                    cell,
                    panel="floor",
                    method=method,
                    mma="wide",
                    rel_rmse=value,
                    nonfinite=0,
                    ew_abs_x=est.ew_abs_x_max,
                    heads=shape["heads"],
                    kv_heads=shape["kv_heads"],
                    seq=shape["seq_kv"],
                    head_dim=shape["head_dim"],
                )
            )
    return rows


#: The cost panel's parameters (the reference shape; 5 % of fp16_accurate's tiles recomputed).
COST_PARAMETERS: dict[str, Any] = dict(
    block_q=128, block_kv=128, head_dim=128, pad=16, q_tiles=11, kv_blocks=11, recompute_fraction=0.05
)


def cost_rows(quick: bool = False) -> list[Row]:
    """The cost panel: :func:`pasa_theory.cost.cost_table` with :data:`COST_PARAMETERS` (counts, the
    same in both modes)."""
    return [
        dict(
            panel="cost",
            method=c.arrangement,
            matrix_flops=c.matrix_flops,
            vector_ops=c.vector_ops,
            bytes_to_vector=c.bytes_to_vector,
        )
        for c in _cost.cost_table(**COST_PARAMETERS)
    ]


def _cell(r: Row) -> tuple[str, float, float]:
    return (r["dist"], r["mean"], r["amplitude"])


def combine(grid: list[Row], mma: list[Row], floor: list[Row], cost: list[Row]) -> list[Row]:
    """The four panels as one table; the floor rows get their ratio to the measured ``fa_hybrid`` of
    the grid panel on the same cell."""
    hyb = {_cell(r): r["rel_rmse"] for r in grid if r["method"] == "fa_hybrid"}
    out = [dict(r) for r in floor]
    for r in out:
        base = hyb[_cell(r)]
        r["ratio_to_fa_hybrid"] = r["rel_rmse"] / base if base >= ONE_HOT_BELOW else None
    return [*grid, *mma, *out, *cost]


def _compute(quick: bool) -> tuple[list[Row], dict[str, str]]:
    rows = combine(grid_rows(quick), mma_rows(quick), floor_rows(quick), cost_rows(quick))
    return rows, _setup(quick)


def _setup(quick: bool) -> dict[str, str]:
    g, m = grid_shape(quick), mma_shape(quick)
    cells = "mean 0, 30 x amplitude 20" if quick else "mean 0, 10, 20, 30 x amplitude 0.5, 5, 10, 20"
    return dict(
        data=f"the reference grid: make_qkv uniform and hybrid x {cells}, seed 2024724, fp16 inputs",
        shape=f"batch 1, heads {g['heads']}, kv_heads {g['kv_heads']}, S1 {g['seq_q']}, S2 {g['seq_kv']}, "
        f"d {g['head_dim']}, block_kv 128 (panels grid and floor); panel mma: heads {m['heads']}, kv_heads "
        f"{m['kv_heads']}, S1 {m['seq_q']}, S2 {m['seq_kv']}, with its own wide runs as denominators",
        methods="pasa:npu_fp16, pasa:fp16_keymean, pasa:fp16_accurate (PASA presets), fa_fp16 (fa_qk), "
        "fa_hybrid; mma panel without fp16_keymean",
        mma="wide: matmul_acc, one rounding; fp16: fp16 accumulator, round to nearest even, chunk 16; "
        "fp22: e8m13 accumulator, round toward zero, chunk 16 (docs/beyond.md §1)",
        rel_rmse="RMSE / RMS(V) against the float64 golden (measurement; panel floor: estimate, "
        "pasa_theory.floor)",
        ratio_to_fa_hybrid="rel_rmse / that of fa_hybrid with the wide accumulator on the same cell and "
        "shape (panel floor: the estimate / the measured fa_hybrid of the grid panel); empty on inf/NaN "
        "and where fa_hybrid's rel_rmse < 2^-22 (one-hot softmax)",
        ew_abs_x="panel floor: the largest weight-averaged |x| = E_w|tau s - m| over the cell's rows (exact)",
        cost="panel cost: per 128 x 128 tile, counts of pasa_theory.cost (an estimate by counting), "
        + ", ".join(f"{k} {v}" for k, v in COST_PARAMETERS.items()),
    )


@dataclass(frozen=True)
class MethodSpread:
    """A method's ratio to ``fa_hybrid`` over the cells: max and median of the finite ratios, and the
    number of cells with inf/NaN (None: no finite cell)."""

    max: float | None
    median: float | None
    nonfinite_cells: int
    cells: int


@dataclass(frozen=True)
class BeyondSummary:
    """Headline numbers of :func:`beyond_pasa`: ratios to ``fa_hybrid`` per method on the grid, per
    accumulation model and method, the floor's (estimate ÷ measurement), the largest E_w|x|, and the
    cost table (matrix FLOPs, vector ops, bytes to the vector unit per tile)."""

    grid: dict[str, MethodSpread]
    mma: dict[str, dict[str, MethodSpread]]
    floor: MethodSpread
    ew_abs_x_max: float
    cost: dict[str, tuple[float, float, float]]


def _spread(rows: list[Row]) -> MethodSpread:
    xs = [r["ratio_to_fa_hybrid"] for r in rows if r["ratio_to_fa_hybrid"] is not None]
    return MethodSpread(
        max(xs) if xs else None,
        statistics.median(xs) if xs else None,
        sum(1 for r in rows if r["nonfinite"]),
        len(rows),
    )


def _summarize(rows: list[Row]) -> BeyondSummary:
    def pick(panel: str, method: str, mma: str = "wide") -> list[Row]:
        return [r for r in rows if r["panel"] == panel and r["method"] == method and r["mma"] == mma]

    floor = pick("floor", "floor")
    return BeyondSummary(
        grid={m[0]: _spread(pick("grid", m[0])) for m in GRID_METHODS},
        mma={model: {m[0]: _spread(pick("mma", m[0], model)) for m in MMA_METHODS} for model in MMA_MODELS},
        floor=_spread(floor),
        ew_abs_x_max=max(r["ew_abs_x"] for r in floor),
        cost={
            r["method"]: (r["matrix_flops"], r["vector_ops"], r["bytes_to_vector"])
            for r in rows
            if r["panel"] == "cost"
        },
    )


_COLOURS = {
    "pasa:npu_fp16": (OKABE_ITO["blue"], "o"),
    "pasa:fp16_keymean": (OKABE_ITO["sky_blue"], "s"),
    "pasa:fp16_accurate": (OKABE_ITO["bluish_green"], "D"),
    "fa_fp16": (OKABE_ITO["vermillion"], "X"),
    "fa_hybrid": (GREY, "*"),
}
_MODEL_X = {"wide": 0, "fp16": 1, "fp22": 2}


def _draw(rows: list[Row], summary: BeyondSummary) -> Any:
    fig, axes = new_figure(5.6, 3, 1, gridspec_kw=dict(height_ratios=[2.2, 1.8, 1.0]))
    ax, mx, tx = axes[0, 0], axes[1, 0], axes[2, 0]
    grid = [r for r in rows if r["panel"] == "grid"]
    cells = sorted({_cell(r) for r in grid})
    idx = {c: i for i, c in enumerate(cells)}
    for label, _, _ in GRID_METHODS:
        if label == "fa_hybrid":
            continue
        colour, marker = _COLOURS[label]
        pts = [(idx[_cell(r)], r["ratio_to_fa_hybrid"]) for r in grid if r["method"] == label]
        pts = [p for p in pts if p[1] is not None]
        ax.plot(
            *zip(*pts, strict=True), marker=marker, color=colour, linestyle="none", markersize=3, label=label
        )
    fl = sorted(
        (idx[_cell(r)], r["ratio_to_fa_hybrid"])
        for r in rows
        if r["panel"] == "floor" and r["method"] == "floor"
    )
    ax.plot(
        *zip(*fl, strict=True),
        color=OKABE_ITO["black"],
        linestyle="--",
        linewidth=0.8,
        label="floor (estimate)",
    )
    ax.axhline(1.0, color=GREY, linewidth=0.6)
    ax.axhline(5.0, color=GREY, linewidth=0.6, linestyle=":")
    ax.set_yscale("log")
    ax.set_xticks(range(len(cells)), [f"{'u' if c[0] == 'uniform' else 'h'}{c[1]:g}/{c[2]:g}" for c in cells])
    ax.tick_params(axis="x", labelrotation=90, labelsize=5)
    ax.set_ylabel("rel. RMSE ÷ fa_hybrid")
    ax.legend(fontsize=5, ncols=2, loc="upper left")
    for label, _, _ in MMA_METHODS:
        colour, marker = _COLOURS[label]
        off = (list(m[0] for m in MMA_METHODS).index(label) - 1.5) * 0.15
        for r in rows:
            if r["panel"] == "mma" and r["method"] == label and r["ratio_to_fa_hybrid"] is not None:
                mx.plot(
                    _MODEL_X[r["mma"]] + off,
                    r["ratio_to_fa_hybrid"],
                    marker=marker,
                    color=colour,
                    markersize=2.2,
                    linestyle="none",
                )
    mx.set_yscale("log")
    mx.set_xticks(list(_MODEL_X.values()), ["fp32 accumulator", "fp16 accumulator", "FP22 (e8m13, RZ)"])
    mx.set_ylabel("÷ fa_hybrid (fp32 acc.)")
    mx.axhline(1.0, color=GREY, linewidth=0.6)
    tx.axis("off")
    cost = summary.cost
    base = cost["fa_fp16"]
    text = [
        [
            a,
            f"{c[0] / 1e6:.2f}",
            f"{c[1] / 1e3:.1f}",
            f"{c[2] / 1e3:.1f}",
            f"{c[0] / base[0]:.2f}/{c[1] / base[1]:.2f}/{c[2] / base[2]:.2f}",
        ]
        for a, c in cost.items()
    ]
    tab = tx.table(
        cellText=text,
        colLabels=["per tile", "MFLOP", "k vec ops", "kB to vec", "÷ fa_fp16 (each)"],
        colWidths=[0.22, 0.13, 0.15, 0.15, 0.35],
        loc="center",
    )
    tab.auto_set_font_size(False)
    tab.set_fontsize(5.5)
    return fig


def beyond_pasa(
    *, quick: bool | None = None, out: str | Path | None = None, from_csv: str | Path | None = None
) -> FigureResult[BeyondSummary]:
    """Beyond PASA (docs/beyond.md): top, each arrangement's relative RMSE ÷ ``fa_hybrid``'s per cell
    of the reference grid (measurements) with the floor of a fully fp16 vector unit (an estimate,
    dashed) and the 5× line (dotted); middle, the same ratios under the matrix unit's accumulation
    models (one query head; ratios to ``fa_hybrid`` with the fp32 accumulator); bottom, the cost model
    per tile (counts)."""
    return run_figure(
        "beyond_pasa",
        columns=BEYOND_COLUMNS,
        compute=_compute,
        summarize=_summarize,
        draw=_draw,
        quick=quick,
        out=out,
        from_csv=from_csv,
    )
