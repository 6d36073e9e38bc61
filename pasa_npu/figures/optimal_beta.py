"""Figures of notebook 02 (the optimal β): the fixed points of the β equation and the κ landscape.

The β equations (paper form and κ form) and κ, the per-block error left by the rounded shifting
matrix, are derived in docs/method.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import pasa_theory as pt

from ..kernel import shift_parameters
from ._common import FOLDED_BETAS, METHOD_DOC, PUBLISHED_BETAS
from ._io import FigureResult, Row, run_figure
from ._style import GREY, OKABE_ITO, new_figure

__all__ = [
    "BetaFixedPointsSummary",
    "beta_fixed_points",
    "KappaLandscapeSummary",
    "kappa_landscape",
    "BETA_FIXED_POINTS_COLUMNS",
    "KAPPA_LANDSCAPE_COLUMNS",
]

_FP_FORMATS = (("fp16", "fp16"), ("bf16", "bf16"), ("fp8_e4m3", "fp16"), ("fp8_e5m2", "fp16"))
_BETA_WINDOW = (0.93, 0.995)
BETA_FIXED_POINTS_COLUMNS = ("format", "vector_format", "n", "beta", "c", "c_stored", "kappa", "selected")


@dataclass(frozen=True)
class BetaFixedPointsSummary:
    """Headline numbers of :func:`beta_fixed_points`."""

    cells: int
    #: format → number of fixed points in the window
    per_format: dict[str, int]
    #: ``"<format> n=<n>"`` → the selected β, or None where the selection window holds no candidate
    selected: dict[str, float | None]


def _fixed_points_compute(quick: bool) -> tuple[list[Row], dict[str, str]]:
    ns = (64, 128, 256) if quick else (16, 32, 64, 128, 256, 512, 1024)
    rows: list[Row] = []
    for fmt, vfmt in _FP_FORMATS:
        for n in ns:
            fps = pt.fixed_points(
                fmt, n, interval=(str(_BETA_WINDOW[0]), str(_BETA_WINDOW[1])), vector_format=vfmt, dps=20
            )
            try:
                sel: float | None = float(pt.select_beta(fmt, n, vector_format=vfmt, dps=20))
            except ValueError:
                sel = None
            for fp in fps:
                b = float(fp.beta)
                rows.append(
                    dict(
                        format=fmt,
                        vector_format=vfmt,
                        n=n,
                        beta=b,
                        c=float(fp.c),
                        c_stored=float(fp.c_repr),
                        kappa=float(fp.kappa),
                        selected=(sel is not None and b == sel),
                    )
                )
    setup = dict(
        quantity="fixed points of the paper form of the beta equation (exact rational arithmetic; see docs/method.md)",
        formats="fp16, bf16, fp8_e4m3 and fp8_e5m2 (c stored in fp16 for the fp8 matrices)",
        n=", ".join(map(str, ns)),
        interval=f"beta in [{_BETA_WINDOW[0]}, {_BETA_WINDOW[1]}], sigma = 1",
        selected="pasa_theory.select_beta where the selection window holds a candidate",
    )
    return rows, setup


def _fixed_points_summarize(rows: list[Row]) -> BetaFixedPointsSummary:
    selected: dict[str, float | None] = {}
    for r in rows:
        key = f"{r['format']} n={r['n']}"
        if r["selected"]:
            selected[key] = r["beta"]
        else:
            selected.setdefault(key, None)
    return BetaFixedPointsSummary(
        cells=len(rows),
        per_format={fmt: sum(1 for r in rows if r["format"] == fmt) for fmt, _ in _FP_FORMATS},
        selected=selected,
    )


def _fixed_points_draw(rows: list[Row], summary: BetaFixedPointsSummary) -> Any:
    import matplotlib as mpl

    fmts = [f for f, _ in _FP_FORMATS]
    fig, axes = new_figure(5.2, len(fmts), 1, sharex=True)
    kap = np.array([abs(r["kappa"]) for r in rows])
    floor = 1e-9
    norm = mpl.colors.LogNorm(
        vmin=max(floor, float(kap[kap > 0].min()) if (kap > 0).any() else floor),
        vmax=float(kap.max()) if len(kap) else 1.0,
    )
    cmap = mpl.colormaps["cividis"]
    ns = sorted({r["n"] for r in rows})
    for ax, fmt in zip(axes[:, 0], fmts):
        sub = [r for r in rows if r["format"] == fmt]
        for r in sub:
            y = ns.index(r["n"])
            ax.vlines(
                r["beta"], y - 0.38, y + 0.38, color=cmap(norm(max(abs(r["kappa"]), floor))), linewidth=0.9
            )
            if r["selected"]:
                ax.plot(
                    r["beta"],
                    y,
                    marker="o",
                    markersize=6,
                    markerfacecolor="none",
                    markeredgecolor=OKABE_ITO["vermillion"],
                    markeredgewidth=1.0,
                    linestyle="none",
                )
        ax.axvspan(*(float(w) for w in pt.selection_window()), color=GREY, alpha=0.15, linewidth=0)
        for b in PUBLISHED_BETAS.values():
            ax.axvline(b, color=OKABE_ITO["black"], linewidth=0.6, linestyle="--")
        ax.set_yticks(range(len(ns)), [str(n) for n in ns])
        ax.set_ylim(-0.6, len(ns) - 0.4)
        ax.set_ylabel("n")
        vf = sub[0]["vector_format"] if sub else ""
        ax.set_title(f"{fmt} (c stored in {vf}): {len(sub)} fixed points", loc="left", pad=2, fontsize=7)
        ax.grid(False)
    axes[-1, 0].set_xlim(*_BETA_WINDOW)
    axes[-1, 0].set_xlabel(
        r"$\beta$  (dashed: published 0.9689939, 0.984497;"
        "\n"
        "shaded: selection window; rings: selected β)"
    )
    sm = mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(
        sm,
        ax=axes[:, 0].tolist(),
        label=r"$|\kappa|$ of the fixed point (c stored)",
        location="bottom",
        shrink=0.8,
        pad=0.01,
        aspect=40,
    )
    return fig


def beta_fixed_points(
    *, quick: bool | None = None, out: str | Path | None = None, from_csv: str | Path | None = None
) -> FigureResult[BetaFixedPointsSummary]:
    """Fixed points of the paper form of the β equation in β ∈ [0.93, 0.995], one per rounding cell
    that contains its own solution, for fp16, bf16, fp8 e4m3 and e5m2 and n = 16 … 1024 (quick:
    n ∈ {64, 128, 256}); σ = 1 (scale not folded). Exact values (rational arithmetic). Colour: |κ|
    with c = β/(1 − β) stored in the vector format (fp16 for the fp8 matrices, else the matrix
    format). Rings: the β chosen by :func:`pasa_theory.select_beta` where the selection window
    [31/32, 64/65] holds a candidate. See docs/method.md for the equations.
    """
    return run_figure(
        "beta_fixed_points",
        columns=BETA_FIXED_POINTS_COLUMNS,
        compute=_fixed_points_compute,
        summarize=_fixed_points_summarize,
        draw=_fixed_points_draw,
        quick=quick,
        out=out,
        from_csv=from_csv,
    )


# -- κ(β) ------------------------------------------------------------------------------------------

#: (series key, panel title, colour) of the three κ settings of :func:`kappa_landscape`.
_KAPPA_SERIES = (
    (
        "sigma1_c_beta",
        r"(a) $\sigma=1$, $c=\mathrm{fl}(\beta/(1-\beta))$: the equation's setting",
        OKABE_ITO["black"],
    ),
    (
        "tau_c_beta",
        r"(b) $\sigma=\tau$ folded, $c=\mathrm{fl}(\beta/(1-\beta))$: script preset",
        OKABE_ITO["sky_blue"],
    ),
    (
        "tau_c_star",
        r"(c) $\sigma=\tau$ folded, $c=\mathrm{fl}(c^*)$ from the rounded $M$: npu_fp16",
        OKABE_ITO["blue"],
    ),
)
KAPPA_LANDSCAPE_COLUMNS = ("kind", "series", "beta", "kappa", "label")
_TAU = 1 / math.sqrt(128)
_SCRIPT_BETA = 0.984497
_README_BETA = 0.9689939


@dataclass(frozen=True)
class KappaLandscapeSummary:
    """Headline numbers of :func:`kappa_landscape` (exact κ of the stored constants, fp16, n = 128)."""

    kappa_readme_beta_sigma1: float
    kappa_script_beta_sigma1: float
    kappa_script_beta_tau: float
    kappa_folded_fixed_point: float
    npu_fp16_beta: float
    kappa_npu_fp16: float
    #: series key → median |κ| over the sampled β
    median_abs_kappa: dict[str, float]


def _kappa_compute(quick: bool) -> tuple[list[Row], dict[str, str]]:
    lo, hi = 0.955, 0.99
    betas = np.linspace(lo, hi, 600 if quick else 2000)
    rows: list[Row] = []
    for b in betas:
        b = float(b)
        k1 = float(pt.kappa("fp16", 128, b, vector_format="fp16"))
        k2 = float(pt.kappa("fp16", 128, b, vector_format="fp16", scale=_TAU))
        cs = pt.recovery_coefficient("fp16", 128, b, scale=_TAU, vector_format="fp16", source="rounded_m")
        k3 = float(pt.kappa("fp16", 128, b, c=cs, scale=_TAU))
        for key, val in zip(("sigma1_c_beta", "tau_c_beta", "tau_c_star"), (k1, k2, k3)):
            rows.append(dict(kind="curve", series=key, beta=b, kappa=val, label=""))
    for key, scale in (("sigma1_c_beta", None), ("tau_c_beta", _TAU)):
        for fp in pt.fixed_points(
            "fp16", 128, interval=(str(lo), str(hi)), scale=scale, vector_format="fp16", dps=20
        ):
            rows.append(
                dict(kind="fixed_point", series=key, beta=float(fp.beta), kappa=float(fp.kappa), label="")
            )
    for label, b in {**PUBLISHED_BETAS, **FOLDED_BETAS}.items():
        scale = _TAU if "folded" in label else None
        rows.append(
            dict(
                kind="published",
                series="tau_c_beta" if scale else "sigma1_c_beta",
                beta=b,
                kappa=float(pt.kappa("fp16", 128, b, vector_format="fp16", scale=scale)),
                label=label,
            )
        )
    b_npu = shift_parameters("npu_fp16", head_dim=128).beta
    cs = pt.recovery_coefficient("fp16", 128, b_npu, scale=_TAU, vector_format="fp16", source="rounded_m")
    rows.append(
        dict(
            kind="selected",
            series="tau_c_star",
            beta=b_npu,
            kappa=float(pt.kappa("fp16", 128, b_npu, c=cs, scale=_TAU)),
            label="npu_fp16 β",
        )
    )
    # the script's own combination: σ = τ folded, β = 0.984497, c = fl(β/(1 − β))
    rows.append(
        dict(
            kind="script",
            series="tau_c_beta",
            beta=_SCRIPT_BETA,
            kappa=float(pt.kappa("fp16", 128, _SCRIPT_BETA, vector_format="fp16", scale=_TAU)),
            label="script: 0.984497 with τ folded",
        )
    )
    setup = dict(
        quantity="kappa(beta) of the stored constants, exact (pasa_theory.kappa; see docs/method.md); not data-dependent",
        format="fp16 matrix and vector format, n = 128, tau = 1/sqrt(128)",
        beta=f"{len(betas)} samples in [{lo}, {hi}] plus the exact fixed points",
        series="sigma1_c_beta: sigma 1, c = fl(beta/(1-beta)); tau_c_beta: tau folded into M, same c (script preset); "
        "tau_c_star: tau folded, c = fl(c*) from the rounded M (npu_fp16)",
    )
    return rows, setup


def _kappa_summarize(rows: list[Row]) -> KappaLandscapeSummary:
    def at(kind: str, beta: float | None = None, label: str | None = None) -> Row:
        return next(
            r
            for r in rows
            if r["kind"] == kind
            and (beta is None or r["beta"] == beta)
            and (label is None or r["label"] == label)
        )

    sel = at("selected")
    return KappaLandscapeSummary(
        kappa_readme_beta_sigma1=at("published", _README_BETA)["kappa"],
        kappa_script_beta_sigma1=at("published", _SCRIPT_BETA)["kappa"],
        kappa_script_beta_tau=at("script")["kappa"],
        kappa_folded_fixed_point=at("published", label="0.9847111 (τ folded)")["kappa"],
        npu_fp16_beta=sel["beta"],
        kappa_npu_fp16=sel["kappa"],
        median_abs_kappa={
            key: float(
                np.median([abs(r["kappa"]) for r in rows if r["kind"] == "curve" and r["series"] == key])
            )
            for key, *_ in _KAPPA_SERIES
        },
    )


def _kappa_draw(rows: list[Row], summary: KappaLandscapeSummary) -> Any:
    fig, axes = new_figure(4.6, 3, 1, sharex=True, sharey=True)
    floor = 1e-8
    for ax, (key, title, color) in zip(axes[:, 0], _KAPPA_SERIES):
        pts = [
            (r["beta"], max(abs(r["kappa"]), floor))
            for r in rows
            if r["kind"] == "curve" and r["series"] == key
        ]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, linewidth=0.6, drawstyle="steps-mid")
        fps = [
            (r["beta"], max(abs(r["kappa"]), floor))
            for r in rows
            if r["kind"] == "fixed_point" and r["series"] == key
        ]
        if fps:
            ax.plot(
                [p[0] for p in fps],
                [p[1] for p in fps],
                linestyle="none",
                marker="o",
                markersize=2.5,
                markerfacecolor="white",
                markeredgecolor=OKABE_ITO["vermillion"],
                markeredgewidth=0.7,
                label="exact fixed points" if key == "sigma1_c_beta" else None,
            )
        for r in rows:
            if r["series"] != key:
                continue
            if r["kind"] == "published":
                folded = "folded" in r["label"]
                ax.axvline(
                    r["beta"],
                    color=OKABE_ITO["black"],
                    linestyle="--",
                    linewidth=0.6,
                    label=None
                    if r["beta"]
                    != max(x["beta"] for x in rows if x["kind"] == "published" and x["series"] == key)
                    else ("published β, re-solved with τ folded" if folded else "published β"),
                )
            if r["kind"] == "script":
                ax.plot(
                    r["beta"],
                    max(abs(r["kappa"]), floor),
                    marker="s",
                    markersize=4,
                    linestyle="none",
                    color=OKABE_ITO["vermillion"],
                    label=r"script's $\beta$ = 0.984497",
                )
            if r["kind"] == "selected":
                ax.plot(
                    r["beta"],
                    max(abs(r["kappa"]), floor),
                    marker="*",
                    markersize=7,
                    linestyle="none",
                    color=OKABE_ITO["vermillion"],
                    label=f"npu_fp16's β = {r['beta']:.7f}",
                )
        ax.set_title(title, loc="left", pad=2, fontsize=6.8)
        ax.set_yscale("log")
        ax.set_ylabel(r"$|\kappa|$")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=5.8, handlelength=1.2, borderpad=0.2, labelspacing=0.2)
    axes[0, 0].set_ylim(floor / 2, 0.3)
    axes[-1, 0].set_xlim(0.955, 0.99)
    axes[-1, 0].set_xlabel(r"$\beta$  (fp16, n = 128; $|\kappa|$ floored at $10^{-8}$)")
    return fig


def kappa_landscape(
    *, quick: bool | None = None, out: str | Path | None = None, from_csv: str | Path | None = None
) -> FigureResult[KappaLandscapeSummary]:
    """κ(β) for fp16, n = 128, β ∈ [0.955, 0.99], c stored in fp16, one panel per setting:
    (a) σ = 1 with c = fl(β/(1 − β)) (what the β equation assumes), (b) σ = τ = 1/√128 folded into M
    with the same c (what the script preset computes), (c) σ = τ with c = fl(c*), c* the coefficient
    that makes κ vanish for the rounded matrix (npu_fp16). Exact values of the stored constants (no
    data): dense samples (2000; quick 600) plus the exact fixed points in the window for σ = 1 and
    σ = τ, the published β values and npu_fp16's β. κ is defined in docs/method.md.
    """
    return run_figure(
        "kappa_landscape",
        columns=KAPPA_LANDSCAPE_COLUMNS,
        compute=_kappa_compute,
        summarize=_kappa_summarize,
        draw=_kappa_draw,
        quick=quick,
        out=out,
        from_csv=from_csv,
    )


beta_fixed_points.__doc__ = (beta_fixed_points.__doc__ or "") + METHOD_DOC
kappa_landscape.__doc__ = (kappa_landscape.__doc__ or "") + METHOD_DOC
