"""Figures of notebook 01 (the shifting scheme): PASA run entirely in float64 is attention.

The method itself (the shifting matrix, the online recovery) is described in docs/method.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import data
from ..golden import golden_attention
from ..harness import run_case
from ._common import METHOD_DOC, U64
from ._io import FigureResult, Row, run_figure
from ._style import legend_below, method_style, new_figure

__all__ = ["Fp64ExactnessSummary", "fp64_exactness", "FP64_EXACTNESS_COLUMNS"]

FP64_EXACTNESS_COLUMNS = ("method", "block_kv", "beta", "c", "max_abs_err", "err_units")


@dataclass(frozen=True)
class Fp64ExactnessSummary:
    """Headline numbers of :func:`fp64_exactness` (errors in units of u64·max|golden|)."""

    unit: float
    fa_q_units: float
    pasa_max_units: float
    pasa_max_units_c_le_64: float
    pasa_over_fa_q_c_le_64: float
    pasa_max_abs_err: float


def _compute(quick: bool) -> tuple[list[Row], dict[str, str]]:
    shape = dict(
        batch=1, heads=2, kv_heads=1, seq_q=64 if quick else 300, seq_kv=300 if quick else 1000, head_dim=128
    )
    q, k, v = data.make_qkv("uniform", mean=2.0, amplitude=1.0, seed=0, dtype=torch.float64, **shape)
    golden = golden_attention(q, k, v)
    unit = U64 * float(golden.abs().max())
    ks = (1, 3, 5, 7, 9, 11, 13) if quick else tuple(range(1, 14))
    ns = (16, 128) if quick else (16, 64, 128, 256)
    rows: list[Row] = []
    (rec,) = run_case(q, k, v, ("fa_q",), precision="fp64", golden=golden)
    err = rec["max_abs_err"]
    rows.append(dict(method="fa_q", block_kv=128, beta=None, c=None, max_abs_err=err, err_units=err / unit))
    for n in ns:
        for kk in ks:
            beta = 1.0 - 2.0**-kk
            (rec,) = run_case(q, k, v, ("pasa",), precision="fp64", beta=beta, block_kv=n, golden=golden)
            err = rec["max_abs_err"]
            rows.append(
                dict(
                    method="pasa:fp64",
                    block_kv=n,
                    beta=beta,
                    c=beta / (1 - beta),
                    max_abs_err=err,
                    err_units=err / unit,
                )
            )
    setup = dict(
        data="make_qkv uniform, mean 2, amplitude 1, seed 0, float64 inputs",
        shape=f"batch 1, heads 2, kv_heads 1, S1 {shape['seq_q']}, S2 {shape['seq_kv']}, d 128",
        methods="pasa at precision fp64; fa_q at fp64 with block_kv 128 (yardstick)",
        beta="1 - 2^-k for k in " + ", ".join(map(str, ks)),
        block_kv=", ".join(map(str, ns)),
        golden="float64 untiled attention",
        err_units="max|out - golden| / (u64 * max|golden|), u64 = 2^-53 (measurement)",
    )
    return rows, setup


def _summarize(rows: list[Row]) -> Fp64ExactnessSummary:
    pasa = [r for r in rows if r["method"] == "pasa:fp64"]
    base_row = next(r for r in rows if r["method"] == "fa_q")
    base = base_row["err_units"]
    unit = base_row["max_abs_err"] / base if base else math.nan
    worst_small_c = max(r["err_units"] for r in pasa if r["c"] <= 64)
    return Fp64ExactnessSummary(
        unit=unit,
        fa_q_units=base,
        pasa_max_units=max(r["err_units"] for r in pasa),
        pasa_max_units_c_le_64=worst_small_c,
        pasa_over_fa_q_c_le_64=worst_small_c / base if base > 0 else math.inf,
        pasa_max_abs_err=max(r["max_abs_err"] for r in pasa),
    )


def _draw(rows: list[Row], summary: Fp64ExactnessSummary) -> Any:
    fig, axes = new_figure(2.9)
    ax = axes[0, 0]
    st = method_style("pasa:fp64")
    markers = {16: "o", 64: "s", 128: "D", 256: "^"}
    styles = {16: "-", 64: "--", 128: "-.", 256: ":"}
    for n in sorted({r["block_kv"] for r in rows if r["method"] == "pasa:fp64"}):
        pts = sorted(
            (r["c"], max(r["err_units"], 0.5))
            for r in rows
            if r["method"] == "pasa:fp64" and r["block_kv"] == n
        )
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            color=st.color,
            marker=markers.get(n, "o"),
            linestyle=styles.get(n, "-"),
            label=f"PASA fp64, n = {n}",
            markerfacecolor="white",
        )
    r = next(r for r in rows if r["method"] == "fa_q")
    fa = method_style("fa_q")
    ax.axhline(
        max(r["err_units"], 0.5),
        color=fa.color,
        linestyle=fa.linestyle,
        label="FA fp64, Q pre-scaled (n = 128)",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"recovery coefficient $c = \beta/(1-\beta)$")
    ax.set_ylabel(r"max error / ($u_{64}\cdot\max|O|$)")
    legend_below(fig, ncols=2)
    return fig


def fp64_exactness(
    *, quick: bool | None = None, out: str | Path | None = None, from_csv: str | Path | None = None
) -> FigureResult[Fp64ExactnessSummary]:
    """PASA computed entirely in float64 against the float64 golden, over β and the block size n.

    Data: uniform, mean 2, amplitude 1 (a bias of about 45 in every score and a soft softmax: the
    largest weight of a row is about 0.06), seed 0 of :func:`pasa_npu.data.make_qkv`, float64 inputs;
    full: 1 x 2/1 heads, S1 = 300, S2 = 1000 (a ragged last block), d = 128; quick: S1 = 64, S2 = 300.
    β = 1 − 2^-k (k = 1 … 13), n ∈ {16, 64, 128, 256}. The same-precision yardstick is flash attention
    with Q pre-scaled (``fa_q``, n = 128) in float64: its error is the float64 rounding of an operation
    order different from the golden's. The error is max|out − golden| in units of u64·max|golden|
    (u64 = 2^-53), a measurement; values below 0.5 are drawn at 0.5.
    """
    return run_figure(
        "fp64_exactness",
        columns=FP64_EXACTNESS_COLUMNS,
        compute=_compute,
        summarize=_summarize,
        draw=_draw,
        quick=quick,
        out=out,
        from_csv=from_csv,
    )


fp64_exactness.__doc__ = (fp64_exactness.__doc__ or "") + METHOD_DOC
