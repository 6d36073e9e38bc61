r"""Paper figures: every figure of the notebooks, each made by one named function.

Each public figure function (listed in :data:`FIGURES`) computes its data, draws it and, given an
output folder, writes ``<name>.pdf`` (vector), ``<name>.png`` (300 dpi) and ``<name>.csv`` (the data
behind the figure: the drawing reads nothing else). It returns a :class:`FigureResult`, which
displays itself in a notebook. ``make figures`` runs them all::

    python -m pasa_npu.figures --all --out figures            # full mode: the committed figures
    python -m pasa_npu.figures --only kappa_landscape --quick  # small shapes, seconds
    python -m pasa_npu.figures --list

**Quick mode** (``quick=True``, or the environment variable ``PASA_QUICK=1`` when ``quick`` is not
given) uses small shapes and coarse sweeps; the notebooks run in it under ``make test``. Full mode
uses the shapes stated in each function's docstring; the figures cited by the README are committed
from it.

**Determinism.** Every random input comes from a fixed seed (the generators of :mod:`pasa_npu.data`);
the PDF carries no date, producer or creator and the PNG no software tag, so running the same command
twice gives the same bytes (checked by ``tests/test_figures.py``). CSV numbers are written with 10
significant digits; wall times are never written.

**Style** (:data:`STYLE_RC`, :data:`METHOD_STYLES`): single-column width (:data:`COLUMN_WIDTH` =
3.4 in), 8 pt text, the Okabe–Ito colour-blind-safe palette (:data:`OKABE_ITO`), and one fixed colour,
marker and line style per method in every figure. matplotlib is imported inside the functions only:
``import pasa_npu.figures`` does not load it.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pasa_theory as _pt

__all__ = [
    "OKABE_ITO",
    "COLUMN_WIDTH",
    "STYLE_RC",
    "MethodStyle",
    "METHOD_STYLES",
    "method_style",
    "quick_mode",
    "comparison_shape",
    "COMPARISON_METHODS",
    "ONE_HOT_BELOW",
    "predicted_overflow_mean",
    "FigureResult",
    "FIGURES",
    "make_figure",
    "save_figure",
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
]

# ---------------------------------------------------------------------------------------------------
# style

#: The Okabe–Ito palette (M. Okabe and K. Ito, "Color Universal Design", 2008), safe for the common
#: colour-vision deficiencies.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}
#: Neutral greys for reference baselines (wide-precision methods), outside the eight hues.
GREY = "#999999"
DARK_GREY = "#555555"

#: Single-column figure width in inches (two-column journal and conference formats).
COLUMN_WIDTH = 3.4

#: The rc settings every figure is drawn and saved under.
STYLE_RC: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.labelsize": 8,
    "axes.titlesize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 6.5,
    "legend.frameon": False,
    "legend.handlelength": 2.2,
    "lines.linewidth": 1.0,
    "lines.markersize": 3.5,
    "axes.linewidth": 0.6,
    "axes.grid": True,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.35,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "axes.prop_cycle": None,  # set lazily (needs matplotlib's cycler)
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "savefig.dpi": 300,
    "figure.dpi": 100,
    "mathtext.fontset": "dejavusans",
}

#: PDF/PNG metadata that would change between runs (dates, versions), removed.
PDF_METADATA = {"CreationDate": None, "Producer": None, "Creator": None}
PNG_METADATA = {"Software": None}


@dataclass(frozen=True)
class MethodStyle:
    """How one method is drawn in every figure."""

    label: str
    color: str
    marker: str
    linestyle: str

    def line(self) -> dict[str, Any]:
        """Keyword arguments for ``Axes.plot``."""
        return dict(color=self.color, marker=self.marker, linestyle=self.linestyle, label=self.label,
                    markeredgecolor=_edge(self.color))


def _edge(color: str) -> str:
    # yellow and light greys need a dark outline to be visible on white
    return DARK_GREY if color in (OKABE_ITO["yellow"], GREY) else color


#: One style per harness method name (:mod:`pasa_npu.methods`), fixed across all figures.
METHOD_STYLES: dict[str, MethodStyle] = {
    "pasa": MethodStyle("PASA (npu_fp16)", OKABE_ITO["blue"], "o", "-"),
    "pasa:npu_fp16": MethodStyle("PASA (npu_fp16)", OKABE_ITO["blue"], "o", "-"),
    "pasa:script": MethodStyle("PASA (reference script)", OKABE_ITO["sky_blue"], "s", "--"),
    "pasa:fp16_keymean": MethodStyle("PASA (key-mean offsets)", OKABE_ITO["bluish_green"], "D", "-."),
    "pasa:bf16": MethodStyle("PASA (bf16)", OKABE_ITO["reddish_purple"], "P", "-"),
    "pasa:fp16_strict": MethodStyle("PASA (fp16 reductions)", "#332288", "v", ":"),
    "pasa:hybrid": MethodStyle("PASA (fp32 vector unit)", "#882255", "<", ":"),
    "pasa:fp32": MethodStyle("PASA (fp32)", DARK_GREY, ">", ":"),
    "pasa:fp64": MethodStyle("PASA (fp64)", OKABE_ITO["blue"], "o", "-"),
    "fa_qk": MethodStyle("FA fp16, QKᵀ then scale", OKABE_ITO["vermillion"], "X", "-"),
    "fa_q": MethodStyle("FA fp16, Q pre-scaled", OKABE_ITO["orange"], "^", "--"),
    "fa_naive": MethodStyle("naive fp16 attention", OKABE_ITO["black"], "+", ":"),
    "fa_hybrid": MethodStyle("FA fp16/fp32 hybrid", GREY, "*", "--"),
    "smooth_k": MethodStyle("K smoothing + FA fp16", OKABE_ITO["yellow"], "h", "-"),
    "sdpa": MethodStyle("torch SDPA (fp16 in/out)", DARK_GREY, "x", ":"),
}


def method_style(method: str) -> MethodStyle:
    """The fixed style of a harness method (``ValueError`` for a name without one)."""
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, got {type(method).__name__}")
    try:
        return METHOD_STYLES[method]
    except KeyError:
        raise ValueError(f"method: no figure style for {method!r}; styled methods: {sorted(METHOD_STYLES)}") from None


def quick_mode(quick: bool | None = None) -> bool:
    """``quick`` if given, else whether ``PASA_QUICK`` is set to something other than ``""``/``0``."""
    if quick is not None:
        if not isinstance(quick, bool):
            raise TypeError(f"quick must be a bool or None, got {type(quick).__name__}")
        return quick
    return os.environ.get("PASA_QUICK", "").strip().lower() not in ("", "0", "false", "no")


def _style_rc() -> dict[str, Any]:
    from cycler import cycler

    rc = dict(STYLE_RC)
    rc["axes.prop_cycle"] = cycler(color=list(OKABE_ITO.values()))
    return rc


def _legend_below(fig, ncols: int = 2, **kw) -> None:
    """One legend for the whole figure, under the axes (constrained layout makes room for it)."""
    fig.legend(loc="outside lower center", ncols=ncols, **kw)


def _new_figure(height: float, nrows: int = 1, ncols: int = 1, **kw):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(COLUMN_WIDTH, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


# ---------------------------------------------------------------------------------------------------
# results, saving and the registry


@dataclass
class FigureResult:
    """A drawn figure with the rows behind it.

    ``rows`` are the CSV rows (dicts with the keys ``columns``), ``summary`` the headline numbers
    derived from them, ``paths`` the files written (empty if no output folder was given).
    """

    name: str
    figure: Any
    columns: tuple[str, ...]
    rows: list[dict]
    summary: dict = field(default_factory=dict)
    paths: tuple[Path, ...] = ()
    quick: bool = False

    def png_bytes(self, dpi: int = 150) -> bytes:
        buf = io.BytesIO()
        with _rc():
            self.figure.savefig(buf, format="png", dpi=dpi, metadata=PNG_METADATA)
        return buf.getvalue()

    def _repr_png_(self) -> bytes:  # shown by Jupyter
        return self.png_bytes()

    def select(self, **where: Any) -> list[dict]:
        """The rows whose fields equal the given values."""
        return [r for r in self.rows if all(r.get(k) == v for k, v in where.items())]


def _rc():
    import matplotlib

    return matplotlib.rc_context(_style_rc())


def _fmt(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, bool):
        return "1" if x else "0"
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return format(x, ".10g")
    return str(x)


def write_csv(path: str | Path, columns: Sequence[str], rows: Iterable[dict]) -> Path:
    """Write rows as CSV with fixed formatting (10 significant digits, ``\\n`` line ends)."""
    path = Path(path)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([_fmt(r.get(c)) for c in columns])
    return path


def save_figure(result: FigureResult, out: str | Path) -> tuple[Path, ...]:
    """Write ``<name>.pdf``, ``<name>.png`` and ``<name>.csv`` into ``out`` (created if missing)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pdf, png, csv_ = (out / f"{result.name}.{ext}" for ext in ("pdf", "png", "csv"))
    with _rc():
        result.figure.savefig(pdf, format="pdf", metadata=PDF_METADATA)
        result.figure.savefig(png, format="png", dpi=300, metadata=PNG_METADATA)
    write_csv(csv_, result.columns, result.rows)
    result.paths = (pdf, png, csv_)
    return result.paths


@dataclass(frozen=True)
class FigureSpec:
    name: str
    function: Callable[..., FigureResult]
    notebook: str
    description: str
    cited: bool


#: Registry: figure name → spec (the function, the notebook showing it, whether the README cites it).
FIGURES: dict[str, FigureSpec] = {}


def _register(notebook: str, description: str, cited: bool = False):
    def deco(compute: Callable[[bool], tuple[tuple[str, ...], list[dict], dict]]):
        name = compute.__name__.lstrip("_").removeprefix("data_")
        draw = globals()[f"_draw_{name}"] if f"_draw_{name}" in globals() else None

        def figure_function(*, quick: bool | None = None, out: str | Path | None = None) -> FigureResult:
            q = quick_mode(quick)
            columns, rows, summary = compute(q)
            drawer = draw or globals()[f"_draw_{name}"]
            with _rc():
                fig = drawer(rows, summary)
            result = FigureResult(name, fig, tuple(columns), rows, summary, quick=q)
            if out is not None:
                save_figure(result, out)
            return result

        figure_function.__name__ = name
        figure_function.__qualname__ = name
        figure_function.__module__ = __name__
        figure_function.__doc__ = (compute.__doc__ or "") + _COMMON_DOC
        FIGURES[name] = FigureSpec(name, figure_function, notebook, description, cited)
        return compute


    return deco


_COMMON_DOC = """
    Keyword arguments: ``quick`` (small shapes; default from ``PASA_QUICK``) and ``out`` (a folder:
    write ``<name>.pdf``, ``.png`` and ``.csv`` there). Returns a :class:`FigureResult`.
"""


def make_figure(name: str, *, quick: bool | None = None, out: str | Path | None = None) -> FigureResult:
    """Run the figure function called ``name`` (see :data:`FIGURES`)."""
    if name not in FIGURES:
        raise ValueError(f"name: unknown figure {name!r}; figures: {', '.join(FIGURES)}")
    return FIGURES[name].function(quick=quick, out=out)


# ---------------------------------------------------------------------------------------------------
# shared helpers

FP16_MAX = float(_pt.get_format("fp16").max_finite)
#: Smallest magnitude that rounds to inf in fp16 (round to nearest even).
FP16_OVERFLOW = float(_pt.get_format("fp16").overflow_threshold)
U64 = float(_pt.get_format("fp64").u)


def _spread(xs: Iterable[float]) -> tuple:
    """``(min, median, max)`` of the values, or ``(None, None, None)`` when there are none."""
    import statistics

    xs = list(xs)
    return (min(xs), statistics.median(xs), max(xs)) if xs else (None, None, None)


def _log_ticks_label(ax, axis: str = "y") -> None:
    from matplotlib.ticker import LogLocator

    loc = LogLocator(base=10, numticks=12)
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_locator(loc)


def _overflow_stage(method: str, q, k, v, *, precision: str = "npu_fp16", **kw) -> str | None:
    """Run ``method``; the first pipeline stage with inf/NaN if the output is not finite, else None."""
    from . import metrics
    from .methods import run_method

    with metrics.census() as cen:
        out = run_method(method, q, k, v, precision=precision, **kw)
    if metrics.nonfinite_count(out) == 0:
        return None
    return cen.first_stage or "output"


def _fp64_scores(q, k, scale: float | None = None):
    """τ·Q·Kᵀ in float64 (B, H, S1, S2), GQA by head groups."""
    import torch

    B, H, S1, d = q.shape
    Hkv = k.shape[1]
    tau = d**-0.5 if scale is None else scale
    qq = q.to(torch.float64).view(B, Hkv, H // Hkv, S1, d)
    s = torch.einsum("bhgid,bhjd->bhgij", qq, k.to(torch.float64)) * tau
    return s.reshape(B, H, S1, k.shape[2])


# ---------------------------------------------------------------------------------------------------
# notebook 1: the scheme, exactness in fp64



@_register("01_shifting_scheme", "PASA in float64 equals attention up to float64 rounding, for every β and block size")
def _data_fp64_exactness(quick: bool):
    """PASA computed entirely in float64 against the float64 golden, over β and the block size n.

    Data: uniform, mean 2, amplitude 1 (a bias of about 45 in every score and a soft softmax: the
    largest weight of a row is about 0.06), seed 0 of :func:`pasa_npu.data.make_qkv`,
    float64 inputs; full: 1 x 2/1 heads, S1 = 300, S2 = 1000 (a ragged last block), d = 128; quick:
    S1 = 64, S2 = 300. β = 1 − 2^-k (k = 1 … 13), n ∈ {16, 64, 128, 256}. The same-precision yardstick
    is flash attention with Q pre-scaled (``fa_q``, n = 128) in float64: its error is the float64 rounding
    of an operation order different from the golden's (untiled float64 attention with the golden's order
    would match it exactly).
    The error is max|out − golden| in units of u64·max|golden| (u64 = 2^-53); values below 0.5 are
    drawn at 0.5.
    """
    import torch

    from . import data, golden_attention
    from .harness import run_case

    shape = dict(batch=1, heads=2, kv_heads=1, seq_q=64 if quick else 300, seq_kv=300 if quick else 1000, head_dim=128)
    q, k, v = data.make_qkv("uniform", mean=2.0, amplitude=1.0, seed=0, dtype=torch.float64, **shape)
    golden = golden_attention(q, k, v)
    unit = U64 * float(golden.abs().max())
    ks = (1, 3, 5, 7, 9, 11, 13) if quick else tuple(range(1, 14))
    ns = (16, 128) if quick else (16, 64, 128, 256)
    rows = []
    (rec,) = run_case(q, k, v, ("fa_q",), precision="fp64", golden=golden)
    err = rec["max_abs_err"]
    rows.append(dict(method="fa_q", block_kv=128, beta=None, c=None, max_abs_err=err, err_units=err / unit))
    for n in ns:
        for kk in ks:
            beta = 1.0 - 2.0**-kk
            (rec,) = run_case(q, k, v, ("pasa",), precision="fp64", beta=beta, block_kv=n, golden=golden)
            err = rec["max_abs_err"]
            rows.append(dict(method="pasa:fp64", block_kv=n, beta=beta, c=beta / (1 - beta), max_abs_err=err,
                             err_units=err / unit))
    pasa = [r for r in rows if r["method"] == "pasa:fp64"]
    base = rows[0]["err_units"]
    worst_small_c = max(r["err_units"] for r in pasa if r["c"] <= 64)
    summary = dict(
        unit=unit,
        fa_q_units=base,
        pasa_max_units=max(r["err_units"] for r in pasa),
        pasa_max_units_c_le_64=worst_small_c,
        pasa_over_fa_q_c_le_64=worst_small_c / base if base > 0 else math.inf,
        pasa_max_abs_err=max(r["max_abs_err"] for r in pasa),
    )
    return ("method", "block_kv", "beta", "c", "max_abs_err", "err_units"), rows, summary


def _draw_fp64_exactness(rows, summary):
    fig, axes = _new_figure(2.9)
    ax = axes[0, 0]
    st = method_style("pasa:fp64")
    markers = {16: "o", 64: "s", 128: "D", 256: "^"}
    styles = {16: "-", 64: "--", 128: "-.", 256: ":"}
    for n in sorted({r["block_kv"] for r in rows if r["method"] == "pasa:fp64"}):
        pts = sorted((r["c"], max(r["err_units"], 0.5)) for r in rows if r["method"] == "pasa:fp64" and r["block_kv"] == n)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=st.color, marker=markers.get(n, "o"),
                linestyle=styles.get(n, "-"), label=f"PASA fp64, n = {n}", markerfacecolor="white")
    r = next(r for r in rows if r["method"] == "fa_q")
    fa = method_style("fa_q")
    ax.axhline(max(r["err_units"], 0.5), color=fa.color, linestyle=fa.linestyle, label="FA fp64, Q pre-scaled (n = 128)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"recovery coefficient $c = \beta/(1-\beta)$")
    ax.set_ylabel(r"max error / ($u_{64}\cdot\max|O|$)")
    _legend_below(fig, ncols=2)
    return fig


# ---------------------------------------------------------------------------------------------------
# notebook 2: the optimal β

_FP_FORMATS = (("fp16", "fp16"), ("bf16", "bf16"), ("fp8_e4m3", "fp16"), ("fp8_e5m2", "fp16"))
_BETA_WINDOW = (0.93, 0.995)
#: Published values: the reference README's β and the script's final β (docs/method.md §6.4), and the fixed
#: points re-solved for the matrix with the softmax scale 1/√128 folded in (docs/method.md §7).
PUBLISHED_BETAS = {"0.9689939 (README)": 0.9689939, "0.984497 (script)": 0.984497}
FOLDED_BETAS = {"0.9689528 (τ folded)": 0.9689528165, "0.9847111 (τ folded)": 0.9847111441}


@_register("02_optimal_beta", "every fixed point of the β equation per rounding cell, per format and block size, with |κ|")
def _data_beta_fixed_points(quick: bool):
    """Fixed points of the paper form (B4) of the β equation in β ∈ [0.93, 0.995], one per rounding
    cell that contains its own solution, for fp16, bf16, fp8 e4m3 and e5m2 and n = 16 … 1024 (quick:
    n ∈ {64, 128, 256}); σ = 1 (scale not folded). Colour: |κ| (B3) with c = β/(1 − β) stored in the
    vector format (fp16 for the fp8 matrices, else the matrix format). Rings: the β chosen by
    :func:`pasa_theory.select_beta` where the selection window [31/32, 64/65] holds a candidate.
    """
    import pasa_theory as pt

    ns = (64, 128, 256) if quick else (16, 32, 64, 128, 256, 512, 1024)
    rows = []
    selected = {}
    for fmt, vfmt in _FP_FORMATS:
        for n in ns:
            fps = pt.fixed_points(fmt, n, interval=(str(_BETA_WINDOW[0]), str(_BETA_WINDOW[1])), vector_format=vfmt,
                                  dps=20)
            try:
                sel = float(pt.select_beta(fmt, n, vector_format=vfmt, dps=20))
            except ValueError:
                sel = None
            selected[(fmt, n)] = sel
            for fp in fps:
                b = float(fp.beta)
                rows.append(dict(format=fmt, vector_format=vfmt, n=n, beta=b, c=float(fp.c),
                                 c_stored=float(fp.c_repr), kappa=float(fp.kappa), selected=(sel is not None and b == sel)))
    summary = dict(
        cells=len(rows),
        per_format={fmt: sum(1 for r in rows if r["format"] == fmt) for fmt, _ in _FP_FORMATS},
        selected={f"{f} n={n}": s for (f, n), s in selected.items()},
    )
    cols = ("format", "vector_format", "n", "beta", "c", "c_stored", "kappa", "selected")
    return cols, rows, summary


def _draw_beta_fixed_points(rows, summary):
    import matplotlib as mpl
    import numpy as np

    fmts = [f for f, _ in _FP_FORMATS]
    fig, axes = _new_figure(5.2, len(fmts), 1, sharex=True)
    kap = np.array([abs(r["kappa"]) for r in rows])
    floor = 1e-9
    norm = mpl.colors.LogNorm(vmin=max(floor, float(kap[kap > 0].min()) if (kap > 0).any() else floor),
                              vmax=float(kap.max()) if len(kap) else 1.0)
    cmap = mpl.colormaps["cividis"]
    ns = sorted({r["n"] for r in rows})
    for ax, fmt in zip(axes[:, 0], fmts):
        sub = [r for r in rows if r["format"] == fmt]
        for r in sub:
            y = ns.index(r["n"])
            ax.vlines(r["beta"], y - 0.38, y + 0.38, color=cmap(norm(max(abs(r["kappa"]), floor))), linewidth=0.9)
            if r["selected"]:
                ax.plot(r["beta"], y, marker="o", markersize=6, markerfacecolor="none",
                        markeredgecolor=OKABE_ITO["vermillion"], markeredgewidth=1.0, linestyle="none")
        ax.axvspan(*(float(w) for w in _pt.selection_window()), color=GREY, alpha=0.15, linewidth=0)
        for b in PUBLISHED_BETAS.values():
            ax.axvline(b, color=OKABE_ITO["black"], linewidth=0.6, linestyle="--")
        ax.set_yticks(range(len(ns)), [str(n) for n in ns])
        ax.set_ylim(-0.6, len(ns) - 0.4)
        ax.set_ylabel("n")
        vf = sub[0]["vector_format"] if sub else ""
        ax.set_title(f"{fmt} (c stored in {vf}): {len(sub)} fixed points", loc="left", pad=2, fontsize=7)
        ax.grid(False)
    axes[-1, 0].set_xlim(*_BETA_WINDOW)
    axes[-1, 0].set_xlabel(r"$\beta$  (dashed: published 0.9689939, 0.984497;" "\n"
                           "shaded: selection window; rings: selected β)")
    sm = mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=axes[:, 0].tolist(), label=r"$|\kappa|$ of the fixed point (c stored)", location="bottom",
                 shrink=0.8, pad=0.01, aspect=40)
    return fig


_KAPPA_SERIES = (
    ("sigma1_c_beta", r"$\sigma=1$, $c=\mathrm{fl}(\beta/(1-\beta))$ (equation's setting)", OKABE_ITO["black"], "-"),
    ("tau_c_beta", r"$\sigma=\tau$ folded, $c=\mathrm{fl}(\beta/(1-\beta))$ (reference script)", OKABE_ITO["sky_blue"], "-"),
    ("tau_c_star", r"$\sigma=\tau$ folded, $c=\mathrm{fl}(c^*)$ from rounded $M$ (npu_fp16)", OKABE_ITO["blue"], "-"),
)


@_register("02_optimal_beta", "κ(β) for fp16, n = 128: the equation's setting, the reference script's and npu_fp16's", cited=True)
def _data_kappa_landscape(quick: bool):
    """κ(β) of eq. (B3) for fp16, n = 128, β ∈ [0.955, 0.99], c stored in fp16, in three settings:
    σ = 1 with c = fl(β/(1 − β)) (what the β equation assumes), σ = τ = 1/√128 folded into M with the
    same c (what the reference script computes), and σ = τ with c = fl(c*), c* the coefficient that
    makes κ vanish for the rounded matrix (npu_fp16). Dense samples (2000; quick 600) plus the exact
    fixed points of (B4) in the window for σ = 1 and σ = τ, the published β values and npu_fp16's β.
    """
    import numpy as np

    import pasa_theory as pt

    from .kernel import shift_parameters

    tau = 1 / math.sqrt(128)
    lo, hi = 0.955, 0.99
    betas = np.linspace(lo, hi, 600 if quick else 2000)
    rows = []
    for b in betas:
        b = float(b)
        k1 = float(pt.kappa("fp16", 128, b, vector_format="fp16"))
        k2 = float(pt.kappa("fp16", 128, b, vector_format="fp16", scale=tau))
        cs = pt.recovery_coefficient("fp16", 128, b, scale=tau, vector_format="fp16", source="rounded_m")
        k3 = float(pt.kappa("fp16", 128, b, c=cs, scale=tau))
        for key, val in zip(("sigma1_c_beta", "tau_c_beta", "tau_c_star"), (k1, k2, k3)):
            rows.append(dict(kind="curve", series=key, beta=b, kappa=val, label=""))
    for key, scale in (("sigma1_c_beta", None), ("tau_c_beta", tau)):
        for fp in pt.fixed_points("fp16", 128, interval=(str(lo), str(hi)), scale=scale, vector_format="fp16", dps=20):
            rows.append(dict(kind="fixed_point", series=key, beta=float(fp.beta), kappa=float(fp.kappa), label=""))
    marks = {**PUBLISHED_BETAS, **FOLDED_BETAS}
    for label, b in marks.items():
        scale = tau if "folded" in label else None
        rows.append(dict(kind="published", series="tau_c_beta" if scale else "sigma1_c_beta", beta=b,
                         kappa=float(pt.kappa("fp16", 128, b, vector_format="fp16", scale=scale)), label=label))
    b_npu = shift_parameters("npu_fp16", head_dim=128).beta
    cs = pt.recovery_coefficient("fp16", 128, b_npu, scale=tau, vector_format="fp16", source="rounded_m")
    rows.append(dict(kind="selected", series="tau_c_star", beta=b_npu,
                     kappa=float(pt.kappa("fp16", 128, b_npu, c=cs, scale=tau)), label="npu_fp16 β"))
    # the reference script's own combination: σ = τ folded, β = 0.984497, c = fl(β/(1 − β))
    ref = next(r for r in rows if r["kind"] == "published" and r["beta"] == 0.984497)
    summary = dict(
        kappa_readme_beta_sigma1=next(r["kappa"] for r in rows if r["kind"] == "published" and r["beta"] == 0.9689939),
        kappa_script_beta_sigma1=ref["kappa"],
        kappa_script_beta_tau=float(pt.kappa("fp16", 128, 0.984497, vector_format="fp16", scale=tau)),
        kappa_folded_fixed_point=next(r["kappa"] for r in rows if r["label"] == "0.9847111 (τ folded)"),
        npu_fp16_beta=b_npu,
        kappa_npu_fp16=rows[-1]["kappa"],
        median_abs_kappa={key: float(np.median([abs(r["kappa"]) for r in rows if r["kind"] == "curve" and r["series"] == key]))
                          for key, *_ in _KAPPA_SERIES},
    )
    return ("kind", "series", "beta", "kappa", "label"), rows, summary


def _draw_kappa_landscape(rows, summary):
    fig, axes = _new_figure(3.6)
    ax = axes[0, 0]
    floor = 1e-8
    for key, label, color, ls in _KAPPA_SERIES:
        pts = [(r["beta"], max(abs(r["kappa"]), floor)) for r in rows if r["kind"] == "curve" and r["series"] == key]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, linestyle=ls, linewidth=0.7, label=label,
                drawstyle="steps-mid")
    for key, color in (("sigma1_c_beta", OKABE_ITO["black"]), ("tau_c_beta", OKABE_ITO["sky_blue"])):
        pts = [(r["beta"], max(abs(r["kappa"]), floor)) for r in rows if r["kind"] == "fixed_point" and r["series"] == key]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle="none", marker="o", markersize=2.5,
                markerfacecolor="white", markeredgecolor=color, markeredgewidth=0.7,
                label="fixed points of (B4)" if key == "sigma1_c_beta" else None)
    for r in rows:
        if r["kind"] == "published":
            folded = "folded" in r["label"]
            ax.axvline(r["beta"], color=OKABE_ITO["sky_blue"] if folded else OKABE_ITO["black"],
                       linestyle=":" if folded else "--", linewidth=0.6)
        if r["kind"] == "selected":
            ax.plot(r["beta"], max(abs(r["kappa"]), floor), marker="*", markersize=8, linestyle="none",
                    color=OKABE_ITO["vermillion"], label=f"npu_fp16 β = {r['beta']:.7f}")
    ax.set_yscale("log")
    ax.set_ylim(floor / 2, 0.2)
    ax.set_xlim(0.955, 0.99)
    ax.plot([], [], color=OKABE_ITO["black"], linestyle="--", linewidth=0.6, label="published β: 0.9689939, 0.984497")
    ax.plot([], [], color=OKABE_ITO["sky_blue"], linestyle=":", linewidth=0.6,
            label=r"the same re-solved with $\tau$ folded: 0.9689528, 0.9847111")
    ax.set_xlabel(r"$\beta$ (fp16, n = 128)")
    ax.set_ylabel(r"$|\kappa|$ per unit of $\sigma\mu$ (floor $10^{-8}$)")
    _legend_below(fig, ncols=1, fontsize=6)
    return fig


# ---------------------------------------------------------------------------------------------------
# notebook 3: overflow and resonance

_OVERFLOW_METHODS = ("fa_qk", "fa_q", "smooth_k", "pasa:script", "pasa", "pasa:bf16", "fa_hybrid")
def predicted_overflow_mean(method: str, dist: str, amplitude: float, *, seq_q: int, seq_kv: int, heads: int = 1,
                            head_dim: int = 128, stage: str | None = None,
                            hi: float = 4096.0) -> tuple[float | None, str | None]:
    """Smallest input mean at which :func:`pasa_theory.bounds.overflow_envelope` predicts an overflow
    for :func:`pasa_npu.data.make_qkv` data (Q, K and V with that mean and ``amplitude``), and the
    stage it names there, by bisection in log scale to 0.1 %; ``(None, None)`` if not below ``hi``.

    ``stage=None`` takes the first stage that overflows (the envelope's ``overflow_stage``);
    ``stage="scores"`` only the matrix-unit score tile (``|q·k|``, ``τ|q·k|`` or PASA's shifted tile
    reaching 65520 in fp16).
    """
    from pasa_theory.bounds import InputStats, overflow_envelope

    def over(m: float) -> str | None:
        st = InputStats(mean_q=m, spread_q=amplitude, mean_k=m, spread_k=amplitude, mean_v=m, spread_v=amplitude,
                        head_dim=head_dim, seq_kv=seq_kv, seq_q=seq_q, heads=heads, dist=dist)
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


@_register("03_overflow_resonance", "the input mean at which each method first overflows, measured and predicted", cited=True)
def _data_overflow_frontier(quick: bool):
    """The overflow frontier over (mean, amplitude): for each method, the smallest input mean at which
    its output contains inf/NaN. Overflow is taken to be monotone in the mean (the data are one draw,
    shifted): a method finite at mean 1024 counts as finite below it; otherwise a binary search over
    the grid 2^(k/2) (1 … 1024) finds the first overflowing grid mean, and bisection narrows it to 1 %.

    Data: :func:`pasa_npu.data.make_qkv` (seed 2024724; the same draw, shifted, for every mean), both
    distributions; full: one head, S1 = S2 = 1407, d = 128, the reference grid's amplitudes
    {0.5, 5, 10, 20}; quick: S1 = S2 = 256, amplitudes {0.5, 10, 20}. Predicted (pale bands): the mean
    at which :func:`pasa_theory.bounds.overflow_envelope` first names an overflowing stage
    (:func:`predicted_overflow_mean`), from the input statistics alone. The envelope models the
    score tile, the block offsets and the accumulators of a correctly tracked softmax; it does not
    model the reference script's running-reference bookkeeping, whose rounding lets raw O/ℓ
    accumulators grow (that is caught a posteriori, on the actual tensors, by
    :func:`pasa_theory.bounds.predict`).
    """
    from . import data

    shape = dict(batch=1, heads=1, kv_heads=1, seq_q=256 if quick else 1407, seq_kv=256 if quick else 1407, head_dim=128)
    amps = (0.5, 10.0, 20.0) if quick else (0.5, 5.0, 10.0, 20.0)
    means = [2.0 ** (kk / 2) for kk in range(0, 21)]
    rows = []
    for dist in data.DISTRIBUTIONS:
        for amp in amps:
            def stage_at(meth: str, m: float) -> str | None:
                return _overflow_stage(meth, *data.make_qkv(dist, mean=m, amplitude=amp, **shape))

            for meth in _OVERFLOW_METHODS:
                top = stage_at(meth, means[-1])
                if top is None:                        # finite at the largest mean: none in the range
                    rows.append(dict(kind="measured", dist=dist, amplitude=amp, method=meth, mean_finite=means[-1],
                                     mean_overflow=None, stage=""))
                    continue
                # binary search over the scan grid (the first overflowing grid mean), then to 1 %
                lo_i, hi_i, stage = -1, len(means) - 1, top
                while hi_i - lo_i > 1:
                    mid = (lo_i + hi_i) // 2
                    s_mid = stage_at(meth, means[mid])
                    if s_mid is None:
                        lo_i = mid
                    else:
                        hi_i, stage = mid, s_mid
                lo, hi = (means[lo_i] if lo_i >= 0 else 0.0), means[hi_i]
                while hi - lo > 0.01 * hi:
                    mid = 0.5 * (lo + hi)
                    s_mid = stage_at(meth, mid)
                    if s_mid is None:
                        lo = mid
                    else:
                        hi, stage = mid, s_mid
                rows.append(dict(kind="measured", dist=dist, amplitude=amp, method=meth, mean_finite=lo,
                                 mean_overflow=hi, stage=stage))
    for dist in data.DISTRIBUTIONS:
        for amp in sorted(set(amps) | set([0.0, 10.0, 20.0] if quick else [2.0 * i for i in range(11)])):
            for meth in _OVERFLOW_METHODS:
                fr, st_ = predicted_overflow_mean(meth, dist, amp, seq_q=shape["seq_q"], seq_kv=shape["seq_kv"])
                rows.append(dict(kind="predicted", dist=dist, amplitude=amp, method=meth, mean_finite=None,
                                 mean_overflow=fr, stage=st_ or ""))
    meas = [r for r in rows if r["kind"] == "measured"]

    def frontier(meth, dist=None):
        vals = [r["mean_overflow"] for r in meas if r["method"] == meth and (dist is None or r["dist"] == dist)]
        lo, _, hi = _spread(v for v in vals if v is not None)
        return lo, hi, sum(v is None for v in vals)

    summary = {meth: dict(zip(("min_overflow_mean", "max_overflow_mean", "cells_without_overflow"), frontier(meth)))
               for meth in _OVERFLOW_METHODS}
    summary["stages"] = {meth: sorted({r["stage"] for r in meas if r["method"] == meth and r["stage"]})
                         for meth in _OVERFLOW_METHODS}
    summary["max_mean_scanned"] = means[-1]
    cols = ("kind", "dist", "amplitude", "method", "mean_finite", "mean_overflow", "stage")
    return cols, rows, summary


def _draw_overflow_frontier(rows, summary):
    fig, axes = _new_figure(5.0, 2, 1, sharex=True)
    top = summary["max_mean_scanned"]
    for i, (ax, dist) in enumerate(zip(axes[:, 0], ("uniform", "hybrid"))):
        for meth in _OVERFLOW_METHODS:
            st = method_style(meth)
            pred = sorted((r["amplitude"], r["mean_overflow"]) for r in rows
                          if r["kind"] == "predicted" and r["dist"] == dist and r["method"] == meth
                          and r["mean_overflow"] is not None)
            if pred:
                ax.plot([m for _, m in pred], [a for a, _ in pred], color=st.color, alpha=0.35, linewidth=3.5,
                        solid_capstyle="butt", zorder=1)
            meas = sorted((r["amplitude"], r["mean_overflow"]) for r in rows
                          if r["kind"] == "measured" and r["dist"] == dist and r["method"] == meth)
            xs = [m for _, m in meas if m is not None]
            ys = [a for a, m in meas if m is not None]
            label = (st.label if xs else st.label + f": none up to μ = {top:.0f}") if i == 0 else None
            ax.plot(xs, ys, color=st.color, marker=st.marker, linestyle="-", label=label,
                    markeredgecolor=_edge(st.color), zorder=3)
        ax.set_xscale("log", base=2)
        ax.set_xlim(8, 2 * top)
        ax.set_ylim(-0.8, 21)
        ax.set_yticks([0, 5, 10, 15, 20])
        ax.set_ylabel("amplitude A")
        ax.set_title(f"{dist} inputs (inf/NaN right of each curve)", loc="left", pad=2)
    axes[0, 0].plot([], [], color=GREY, alpha=0.5, linewidth=3.5, label="predicted (overflow envelope)")
    axes[-1, 0].set_xlabel("mean μ of Q, K and V")
    _legend_below(fig, ncols=2, fontsize=5.8)
    return fig


_ACC_METHODS = ("pasa", "pasa:script", "fa_q", "fa_hybrid")


@_register("03_overflow_resonance", "unnormalised O/ℓ accumulators overflow at S2·mean(V) ≈ 65520; renormalised ones never")
def _data_accumulator_overflow(quick: bool):
    """Long sequences over a biased V (:func:`pasa_npu.data.make_biased_v`: |q|, |k| <= 0.05, so the
    attention is nearly uniform, V ≈ v_mean ± 0.5), v_mean ∈ {10, 30}, S2 from 256 to 8192 (quick:
    three lengths, one head, 32 queries; full: 4 heads, 128 queries). The reference preset keeps O and
    ℓ unnormalised in fp16, so it is predicted to overflow once O ≈ S2·v_mean passes 65520; npu_fp16
    renormalises them by powers of two every block. x = S2·v_mean/65520 (1 = predicted threshold).
    """
    from . import data
    from .harness import run_case

    seqs = (1024, 2048, 4096) if quick else (256, 512, 1024, 1536, 2048, 2176, 2304, 3072, 4096, 6144, 8192)
    rows = []
    for vm in (10.0, 30.0):
        for s2 in seqs:
            q, k, v = data.make_biased_v(seq_kv=s2, seq_q=32 if quick else 128, heads=1 if quick else 4,
                                         kv_heads=1 if quick else 4, v_mean=vm, seed=0)
            for rec in run_case(q, k, v, _ACC_METHODS):
                bad = rec["nonfinite"]
                rows.append(dict(v_mean=vm, seq_kv=s2, x=s2 * vm / FP16_OVERFLOW, method=rec["method"],
                                 rel_rmse=rec["rel_rmse"], nonfinite=bad,
                                 stage=(rec["first_nonfinite_stage"] or "output") if bad else ""))
    ref = [r for r in rows if r["method"] == "pasa:script"]
    first = {vm: min((r["seq_kv"] for r in ref if r["v_mean"] == vm and r["nonfinite"]), default=None) for vm in (10.0, 30.0)}
    last_ok = {vm: max((r["seq_kv"] for r in ref if r["v_mean"] == vm and not r["nonfinite"]), default=None) for vm in (10.0, 30.0)}
    summary = dict(
        predicted_threshold_seq_kv={vm: FP16_OVERFLOW / vm for vm in (10.0, 30.0)},
        reference_first_overflow_seq_kv=first,
        reference_last_finite_seq_kv=last_ok,
        npu_fp16_nonfinite=sum(r["nonfinite"] for r in rows if r["method"] == "pasa"),
        npu_fp16_max_rel_rmse=max(r["rel_rmse"] for r in rows if r["method"] == "pasa"),
    )
    return ("v_mean", "seq_kv", "x", "method", "rel_rmse", "nonfinite", "stage"), rows, summary


def _draw_accumulator_overflow(rows, summary):
    fig, axes = _new_figure(3.4)
    ax = axes[0, 0]
    finite = [r["rel_rmse"] for r in rows if not r["nonfinite"] and r["rel_rmse"] > 0]
    ceiling = max(finite) * 8
    for meth in _ACC_METHODS:
        st = method_style(meth)
        for vm, fill in ((10.0, "white"), (30.0, None)):
            pts = sorted((r["x"], r["rel_rmse"], r["nonfinite"]) for r in rows if r["method"] == meth and r["v_mean"] == vm)
            xs = [p[0] for p in pts if not p[2]]
            ys = [p[1] for p in pts if not p[2]]
            lab = f"{st.label}, mean(V) = {vm:.0f}" if meth in ("pasa", "pasa:script") or vm == 30.0 else None
            ax.plot(xs, ys, color=st.color, marker=st.marker, linestyle=st.linestyle, label=lab,
                    markerfacecolor=fill or st.color, markeredgecolor=_edge(st.color))
            bad = [p[0] for p in pts if p[2]]
            if bad:
                ax.plot(bad, [ceiling] * len(bad), linestyle="none", marker="X", color=st.color,
                        markerfacecolor=fill or st.color, markeredgecolor=_edge(st.color))
    ax.axvline(1.0, color=OKABE_ITO["black"], linestyle="--", linewidth=0.7)
    ax.axhline(ceiling, color=GREY, linewidth=0.5)
    ax.text(0.02, ceiling, "inf/NaN", va="bottom", ha="left", fontsize=6, transform=ax.get_yaxis_transform())
    ax.text(1.03, 0.45, "predicted overflow", rotation=90, va="center", fontsize=6,
            transform=ax.get_xaxis_transform())
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(r"$S_2\cdot$mean(V) / 65520")
    ax.set_ylabel("relative RMSE (RMSE / RMS(V))")
    _legend_below(fig, ncols=1, fontsize=6)
    return fig


_RES_PHASES = ("aligned", "anti", "random")
_RES_METHODS = ("pasa", "pasa:script", "pasa:fp16_keymean", "fa_qk", "fa_q", "fa_naive", "smooth_k", "pasa:bf16",
                "fa_hybrid")
_PHASE_STYLE = {"aligned": "-", "anti": "--", "random": ":"}
#: Histogram bins (log10) of the per-row statistics of :func:`resonance_statistics`.
_BIAS_BINS = [(-3.0 + 0.1 * i, -3.0 + 0.1 * (i + 1)) for i in range(50)]      # |row mean| / row std
_SHIFT_BINS = [(-0.5 + 0.05 * i, -0.5 + 0.05 * (i + 1)) for i in range(50)]   # max|s| / max|s̃|
_RESONANCE_CACHE: dict[bool, tuple[list[dict], list[dict], list[dict]]] = {}


def _histogram(values, bins) -> list[int]:
    import torch

    x = torch.log10(values.flatten())
    return [int(((x >= lo) & (x < hi)).sum()) for lo, hi in bins]


def _resonance_runs(quick: bool) -> tuple[list[dict], list[dict], list[dict]]:
    """Score statistics, per-row histograms and method records over (phase, amplitude, seed); computed
    once per mode and shared by :func:`resonance_statistics` and :func:`resonance_accuracy`."""
    key = bool(quick)
    if key in _RESONANCE_CACHE:
        return _RESONANCE_CACHE[key]
    import torch

    from . import data
    from .harness import run_case
    from .kernel import shift_parameters

    amps = (8.0, 24.0, 40.0) if quick else (4.0, 8.0, 12.0, 16.0, 20.0, 24.0, 28.0, 32.0, 36.0, 40.0, 48.0)
    seeds = range(2) if quick else range(8)
    sq, skv, heads = (128, 256, 1) if quick else (256, 512, 2)
    beta = shift_parameters("npu_fp16", head_dim=128).beta
    stats, recs = [], []
    hist = {ph: ([0] * len(_BIAS_BINS), [0] * len(_SHIFT_BINS)) for ph in _RES_PHASES}
    for phase in _RES_PHASES:
        for amp in amps:
            for seed in seeds:
                q, k, v = data.make_resonant(phase=phase, amplitude=amp, seed=seed, seq_q=sq, seq_kv=skv,
                                             heads=heads, kv_heads=heads)
                s = _fp64_scores(q, k)                    # τ·q·k, float64
                rmean, rstd = s.mean(-1), s.std(-1)
                bias = rmean.abs() / rstd
                blocks = s.view(*s.shape[:-1], -1, 128)   # exact-arithmetic shift by β × block row mean
                shifted = (blocks - beta * blocks.mean(-1, keepdim=True)).flatten(-2)
                shrink = s.abs().amax(-1) / shifted.abs().amax(-1)
                hb, hs = hist[phase]
                for i, c in enumerate(_histogram(bias, _BIAS_BINS)):
                    hb[i] += c
                for i, c in enumerate(_histogram(shrink, _SHIFT_BINS)):
                    hs[i] += c
                stats.append(dict(phase=phase, amplitude=amp, seed=seed,
                                  max_abs_qk=float(s.abs().max()) * 128**0.5,
                                  bias_to_spread_median=float(bias.median()),
                                  shift_shrink_median=float(shrink.median())))
                for r in run_case(q, k, v, _RES_METHODS):
                    recs.append(dict(phase=phase, amplitude=amp, seed=seed, method=r["method"], rel_rmse=r["rel_rmse"],
                                     nonfinite=r["nonfinite"], stage=r["first_nonfinite_stage"] or ""))
    hrows = []
    for ph in _RES_PHASES:
        hb, hs = hist[ph]
        hrows += [dict(kind="hist_bias_to_spread", phase=ph, bin_lo=lo, bin_hi=hi, count=c) for (lo, hi), c in zip(_BIAS_BINS, hb)]
        hrows += [dict(kind="hist_shift_shrink", phase=ph, bin_lo=lo, bin_hi=hi, count=c) for (lo, hi), c in zip(_SHIFT_BINS, hs)]
    _RESONANCE_CACHE[key] = (stats, hrows, recs)
    return stats, hrows, recs


@_register("03_overflow_resonance", "resonance: score magnitude, row bias and what the shift removes, over phases, amplitudes and seeds", cited=True)
def _data_resonance_statistics(quick: bool):
    """Q and K sharing one sinusoid along the head dimension (:func:`pasa_npu.data.make_resonant`,
    frequency 3, noise 0.5): phase-aligned, anti-aligned, and with a random phase per token; amplitudes
    A = 4 … 48, 8 seeds each (quick: 3 amplitudes, 2 seeds); S1 = 256, S2 = 512, 2 heads, d = 128 (quick:
    128, 256, 1 head). (a) max|q·k| against A (median, min and max over seeds) with the coherent
    prediction A²·d/2 (per-token amplitudes up to A, |cos| up to 1) and fp16's limit; crosses mark where
    the vendor-style FA overflows (rows, bottom to top: aligned, anti, random; filled: inf/NaN in the
    output; open: only scores overflowed, to −inf, which the softmax absorbs); (b) histogram over all query rows of |row mean| / row std of the scores;
    (c) histogram of max|s| / max|s̃|, how much PASA's shift (β of npu_fp16 times the 128-key block row
    mean, exact arithmetic) shrinks each row's largest score.
    """
    import statistics as st_

    stats, hrows, recs = _resonance_runs(quick)
    rows = [dict(kind="stats", **x) for x in stats] + hrows
    over, inner = {}, {}
    for r in recs:
        if r["method"] == "fa_qk":
            over.setdefault((r["phase"], r["amplitude"]), []).append(bool(r["nonfinite"]))
            inner.setdefault((r["phase"], r["amplitude"]), []).append(bool(r["stage"]))
    for (ph, amp), flags in sorted(over.items()):
        rows.append(dict(kind="fa_qk_overflow", phase=ph, amplitude=amp, fa_qk_output_nonfinite=sum(flags) / len(flags),
                         fa_qk_scores_nonfinite=sum(inner[(ph, amp)]) / len(flags)))
    first_inner = {ph: min((a for (p, a), f in inner.items() if p == ph and any(f)), default=None) for ph in _RES_PHASES}
    first_over = {ph: min((a for (p, a), f in over.items() if p == ph and any(f)), default=None) for ph in _RES_PHASES}
    last_ok = {ph: max((a for (p, a), f in over.items() if p == ph and not any(f)), default=None) for ph in _RES_PHASES}
    summary = dict(
        predicted_overflow_amplitude=math.sqrt(2 * FP16_OVERFLOW / 128),
        fa_qk_first_overflow_amplitude=first_over,
        fa_qk_first_score_overflow_amplitude=first_inner,
        fa_qk_last_finite_amplitude=last_ok,
        bias_to_spread_median={ph: st_.median(x["bias_to_spread_median"] for x in stats if x["phase"] == ph) for ph in _RES_PHASES},
        shift_shrink_median={ph: st_.median(x["shift_shrink_median"] for x in stats if x["phase"] == ph) for ph in _RES_PHASES},
        max_qk_over_prediction={ph: max(x["max_abs_qk"] / (x["amplitude"] ** 2 * 64) for x in stats if x["phase"] == ph)
                                for ph in _RES_PHASES},
        rows_per_phase=sum(r["count"] for r in hrows if r["kind"] == "hist_bias_to_spread" and r["phase"] == "aligned"),
    )
    cols = ("kind", "phase", "amplitude", "seed", "max_abs_qk", "bias_to_spread_median", "shift_shrink_median",
            "fa_qk_output_nonfinite", "fa_qk_scores_nonfinite", "bin_lo", "bin_hi", "count")
    return cols, rows, summary


def _draw_resonance_statistics(rows, summary):
    import statistics as st_

    import numpy as np

    fig, axes = _new_figure(5.6, 3, 1)
    ax, bx, cx = axes[:, 0]
    stats = [r for r in rows if r["kind"] == "stats"]
    amps = sorted({r["amplitude"] for r in stats})
    for ph in _RES_PHASES:
        sub = [r for r in stats if r["phase"] == ph]
        med = [st_.median(r["max_abs_qk"] for r in sub if r["amplitude"] == a) for a in amps]
        lo = [min(r["max_abs_qk"] for r in sub if r["amplitude"] == a) for a in amps]
        hi = [max(r["max_abs_qk"] for r in sub if r["amplitude"] == a) for a in amps]
        ax.errorbar(amps, med, yerr=[[m - l for m, l in zip(med, lo)], [h - m for m, h in zip(med, hi)]],
                    color=OKABE_ITO["black"], linestyle=_PHASE_STYLE[ph], marker="o", markersize=2.5,
                    markerfacecolor="white", capsize=1.5, elinewidth=0.5, label=f"{ph} phase")
        for kind, axis in (("hist_bias_to_spread", bx), ("hist_shift_shrink", cx)):
            h = sorted((r["bin_lo"], r["bin_hi"], r["count"]) for r in rows if r["kind"] == kind and r["phase"] == ph)
            total = sum(c for *_, c in h) or 1
            edges = [10 ** h[0][0]] + [10 ** b for _, b, _ in h]
            axis.stairs([c / total for *_, c in h], edges, color=OKABE_ITO["black"], linestyle=_PHASE_STYLE[ph],
                        linewidth=1.0)
    xa = np.linspace(min(amps), max(amps), 100)
    ax.plot(xa, xa**2 * 64, color=OKABE_ITO["vermillion"], linestyle=(0, (2, 1.5)), linewidth=0.8,
            label=r"predicted $A^2 d/2$")
    ax.axhline(FP16_MAX, color=OKABE_ITO["vermillion"], linewidth=0.6)
    ax.text(min(amps), FP16_MAX * 1.15, "fp16 max 65504", fontsize=6, va="bottom")
    fa = method_style("fa_qk")
    for r in rows:
        if r["kind"] != "fa_qk_overflow" or r["fa_qk_scores_nonfinite"] == 0:
            continue
        y = FP16_MAX * {"aligned": 2.5, "anti": 4.0, "random": 6.4}[r["phase"]]
        ax.plot(r["amplitude"], y, marker=fa.marker, color=fa.color, linestyle="none", markersize=3,
                markerfacecolor=fa.color if r["fa_qk_output_nonfinite"] > 0 else "white")
    ax.plot([], [], marker=fa.marker, color=fa.color, linestyle="none", label=fa.label + ": inf/NaN out")
    ax.plot([], [], marker=fa.marker, color=fa.color, markerfacecolor="white", linestyle="none",
            label="only in the scores (−inf, weight 0)")
    ax.set_yscale("log")
    ax.set_xlabel("resonance amplitude A")
    ax.set_ylabel(r"max $|q\cdot k|$")
    ax.set_title("(a) largest score (unscaled)", loc="left", pad=2)
    ax.legend(loc="lower right", fontsize=5.6)
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
    for ph in _RES_PHASES:
        cx.plot([], [], color=OKABE_ITO["black"], linestyle=_PHASE_STYLE[ph], label=f"{ph} phase")
    cx.legend(loc="upper right", fontsize=5.6)
    return fig


_RES_DRAWN = ("pasa", "pasa:script", "pasa:fp16_keymean", "fa_qk", "fa_q", "smooth_k", "pasa:bf16", "fa_hybrid")


@_register("03_overflow_resonance", "resonance: each method's error relative to naive fp16 attention, aligned and random phase")
def _data_resonance_accuracy(quick: bool):
    """Same runs as :func:`resonance_statistics`. For every input, each method's relative RMSE divided
    by that of naive fp16 attention on the same input (a paired ratio, so the seeds' very different
    softmax sharpness cancels); drawn: the median over seeds against the amplitude, for phase-aligned
    (solid, filled) and random-phase (dotted, open) inputs. Runs with inf/NaN are counted, not averaged.
    """
    import statistics as st_

    _, _, recs = _resonance_runs(quick)
    naive = {(r["phase"], r["amplitude"], r["seed"]): r["rel_rmse"] for r in recs if r["method"] == "fa_naive"}
    groups: dict[tuple, list[dict]] = {}
    for r in recs:
        groups.setdefault((r["phase"], r["method"], r["amplitude"]), []).append(r)
    rows = []
    for (ph, meth, amp), rs in sorted(groups.items()):
        fin = [r for r in rs if not r["nonfinite"]]
        ratios = [r["rel_rmse"] / naive[(ph, amp, r["seed"])] for r in fin if naive[(ph, amp, r["seed"])] > 0]
        r_min, r_med, r_max = _spread(ratios)
        rows.append(dict(phase=ph, method=meth, amplitude=amp, seeds=len(rs), overflowed=len(rs) - len(fin),
                         rel_rmse_median=st_.median(r["rel_rmse"] for r in fin) if fin else None,
                         ratio_median=r_med, ratio_min=r_min, ratio_max=r_max))

    def med(ph, meth):
        vals = [r["ratio_median"] for r in rows if r["phase"] == ph and r["method"] == meth and r["ratio_median"] is not None]
        return st_.median(vals) if vals else None

    summary = dict(ratio_to_naive_median={ph: {m: med(ph, m) for m in _RES_METHODS} for ph in _RES_PHASES},
                   overflowed={m: sum(r["overflowed"] for r in rows if r["method"] == m) for m in _RES_METHODS})
    cols = ("phase", "method", "amplitude", "seeds", "overflowed", "rel_rmse_median", "ratio_median", "ratio_min",
            "ratio_max")
    return cols, rows, summary


def _draw_resonance_accuracy(rows, summary):
    fig, axes = _new_figure(3.6)
    ax = axes[0, 0]
    finite = [r["ratio_median"] for r in rows if r["ratio_median"] is not None and r["method"] in _RES_DRAWN]
    ceiling = max(finite) * 3
    for i, meth in enumerate(_RES_DRAWN):
        st = method_style(meth)
        for ph in ("aligned", "random"):
            pts = sorted((r["amplitude"], r) for r in rows if r["method"] == meth and r["phase"] == ph)
            xs = [a for a, r in pts if r["ratio_median"] is not None]
            ys = [r["ratio_median"] for _, r in pts if r["ratio_median"] is not None]
            fill = st.color if ph == "aligned" else "white"
            ax.plot(xs, ys, color=st.color, marker=st.marker, linestyle=_PHASE_STYLE[ph], markerfacecolor=fill,
                    markeredgecolor=_edge(st.color), label=st.label if ph == "aligned" else None)
            over = [a for a, r in pts if r["overflowed"]]
            if over:                                   # one row of crosses per method, stacked
                dx = 0.0 if ph == "aligned" else 0.9          # side by side: aligned, then random
                ax.plot([a + dx for a in over], [ceiling * 1.45 ** (i % 4)] * len(over), linestyle="none", marker="X",
                        color=st.color,
                        markerfacecolor=fill, markeredgecolor=_edge(st.color))
    ax.axhline(1.0, color=OKABE_ITO["black"], linewidth=0.7)
    ax.axhline(ceiling / 1.5, color=GREY, linewidth=0.5)
    ax.text(0.01, ceiling, "inf/NaN (some seeds)", fontsize=5.8, va="bottom", transform=ax.get_yaxis_transform())
    ax.plot([], [], color=OKABE_ITO["black"], linestyle="-", label="aligned phase (filled)")
    ax.plot([], [], color=OKABE_ITO["black"], linestyle=":", label="random phase (open)")
    ax.set_yscale("log")
    ax.set_xlabel("resonance amplitude A")
    ax.set_ylabel("relative RMSE ÷ naive fp16 attention's\n(median over seeds)")
    _legend_below(fig, ncols=2, fontsize=5.8)
    return fig


# ---------------------------------------------------------------------------------------------------
# notebook 4: predicted against measured (pasa_theory.bounds)

#: Methods compared with the rounding-error model (every one :func:`pasa_theory.bounds.predict` models).
PREDICT_METHODS = ("pasa", "pasa:script", "pasa:fp16_keymean", "pasa:bf16", "fa_qk", "fa_q", "fa_naive",
                   "fa_hybrid", "smooth_k")
_PVM_COLUMNS = ("dist", "mean", "amplitude", "seq_q", "seq_kv", "method", "rmse", "max_abs_err", "nonfinite",
                "first_nonfinite_stage", "pred_rmse", "pred_bound", "pred_overflow_stage", "dominant",
                "bound_dominant", "regime", "rmse_ratio", "bound_ratio", "bound_ok", "overflow_ok")


def _predicted_and_measured(q, k, v, methods, **kw) -> list[dict]:
    """One record per method from :func:`pasa_npu.predict_report.predict_case`: the harness's
    measurement against the float64 golden beside :func:`pasa_theory.bounds.predict_many` on the same
    tensors (the ``pasa-verify --predict`` schema)."""
    from .predict_report import predict_case

    recs = predict_case(q, k, v, list(methods), **kw)
    for r in recs:
        r["first_nonfinite_stage"] = r["first_nonfinite_stage"] or ""
        r["pred_overflow_stage"] = r["pred_overflow_stage"] or ""
    return recs


@_register("04_predicted_vs_measured", "predicted against measured error for every method over the grid and sequence lengths", cited=True)
def _data_predicted_vs_measured(quick: bool):
    """The rounding-error model of :mod:`pasa_theory.bounds` against the harness, input by input:
    (a) the probabilistic RMSE estimate against the measured RMSE, (b) the deterministic bound against
    the measured max|error|, both against the float64 golden, for every method of
    :data:`PREDICT_METHODS`. Inputs: the reference grid (uniform and hybrid × mean {0, 10, 20, 30} ×
    amplitude {0.5, 5, 10, 20}, seed 2024724), one head, S1 = 128, S2 ∈ {256, 1024, 4096}, d = 128
    (quick: means {0, 30} × amplitudes {0.5, 20}, S1 = 32, S2 ∈ {256, 768}). Overflows are compared
    separately: predicted inf/NaN against measured inf/NaN.
    """
    import statistics as st_

    from . import data
    from .harness import GRID_AMPLITUDES, GRID_MEANS
    from .predict_report import summary as predict_summary

    means, amps = ((0.0, 30.0), (0.5, 20.0)) if quick else (GRID_MEANS, GRID_AMPLITUDES)
    seqs = (256, 768) if quick else (256, 1024, 4096)
    s1 = 32 if quick else 128
    recs, rows = [], []
    for dist in data.DISTRIBUTIONS:
        for m in means:
            for a in amps:
                for s2 in seqs:
                    q, k, v = data.make_qkv(dist, mean=m, amplitude=a, batch=1, heads=1, kv_heads=1, seq_q=s1,
                                            seq_kv=s2, head_dim=128)
                    for r in _predicted_and_measured(q, k, v, PREDICT_METHODS):
                        recs.append(r)
                        # the CSV leaves the ratios of overflowing cases empty (None), not NaN
                        rows.append({c: r.get(c) for c in _PVM_COLUMNS} | dict(dist=dist, mean=m, amplitude=a)
                                    | {key: r[key] if math.isfinite(r[key]) else None
                                       for key in ("rmse_ratio", "bound_ratio")})
    summary = {}
    for meth in PREDICT_METHODS:
        sub = [r for r in rows if r["method"] == meth]
        ratios = [r["rmse_ratio"] for r in sub if r["rmse_ratio"] is not None]
        r_min, r_med, r_max = _spread(ratios)
        bounds_ = [r["bound_ok"] for r in sub if r["bound_ok"] is not None]
        summary[meth] = dict(
            cases=len(sub), overflow_measured=sum(1 for r in sub if r["nonfinite"]),
            overflow_agree=sum(1 for r in sub if r["overflow_ok"]),
            rmse_ratio_median=r_med, rmse_ratio_min=r_min, rmse_ratio_max=r_max,
            rmse_within_3x=sum(1 for x in ratios if 1 / 3 <= x <= 3) / len(ratios) if ratios else None,
            bound_holds=sum(bounds_) / len(bounds_) if bounds_ else None,
            bound_ratio_median=st_.median(r["bound_ratio"] for r in sub if r["bound_ratio"] is not None)
            if any(r["bound_ratio"] is not None for r in sub) else None,
        )
    # the totals of pasa-verify --predict (counts over the compared, i.e. non-overflowing, cases)
    summary["all"] = predict_summary(recs)
    summary["all"]["rmse_within_2x"] = sum(1 for r in recs if r["bound_ok"] is not None and 0.5 <= r["rmse_ratio"] <= 2)
    return _PVM_COLUMNS, rows, summary


def _draw_predicted_vs_measured(rows, summary):
    import numpy as np

    fig, axes = _new_figure(5.6, 2, 1)
    ax, bx = axes[:, 0]
    for meth in PREDICT_METHODS:
        st = method_style(meth)
        sub = [r for r in rows if r["method"] == meth and r["rmse_ratio"] is not None]
        kw = dict(linestyle="none", marker=st.marker, color=st.color, markeredgecolor=_edge(st.color), markersize=2.6,
                  markeredgewidth=0.5, alpha=0.85)
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
    s = summary["all"]
    ax.set_title(f"(a) RMSE: {100 * s['rmse_within_3x_fraction']:.0f} % of {s['compared']} within 3×", loc="left", pad=2)
    ax.set_xlabel("measured RMSE")
    ax.set_ylabel("predicted RMSE")
    bx.set_title(f"(b) bound on max|error|: holds in {100 * s['bound_ok'] / s['compared']:.0f} %", loc="left", pad=2)
    bx.set_xlabel("measured max|error|")
    bx.set_ylabel("deterministic bound")
    _legend_below(fig, ncols=2, fontsize=5.8)
    return fig


_BUDGET_METHODS = ("pasa:script", "pasa", "pasa:fp16_keymean", "fa_q")


@_register("04_predicted_vs_measured", "per-stage error budget of PASA's presets and fp16 flash attention on one case")
def _data_error_budget(quick: bool):
    """The RMS contribution of every error term of the model (:data:`pasa_theory.bounds.TERMS`, in
    pipeline order; linearised, they add in quadrature) for the reference preset, npu_fp16,
    fp16_keymean and fp16 flash attention with Q pre-scaled, on the reference script's default case
    (uniform, mean 30, amplitude 0.5, seed 2024724; one head, S1 = 256, S2 = 1407, d = 128; quick:
    S1 = 32), with each method's predicted and measured RMSE.
    """
    from pasa_theory.bounds import TERMS

    from . import data

    q, k, v = data.make_qkv("uniform", mean=30.0, amplitude=0.5, batch=1, heads=1, kv_heads=1,
                            seq_q=32 if quick else 256, seq_kv=1407, head_dim=128)
    rows = []
    summary = {}
    for r in _predicted_and_measured(q, k, v, _BUDGET_METHODS):
        terms = {t: r.get(f"rms.{t}", 0.0) for t in TERMS}
        for t in TERMS:
            rows.append(dict(kind="term", method=r["method"], term=t, rms=terms[t]))
        rows.append(dict(kind="predicted_rmse", method=r["method"], term="", rms=r["pred_rmse"]))
        rows.append(dict(kind="measured_rmse", method=r["method"], term="", rms=r["rmse"]))
        summary[r["method"]] = dict(measured=r["rmse"], predicted=r["pred_rmse"], dominant=r["dominant"],
                                    regime=r["regime"], top3=sorted(terms.items(), key=lambda kv: -kv[1])[:3])
    return ("kind", "method", "term", "rms"), rows, summary


def _draw_error_budget(rows, summary):
    fig, axes = _new_figure(4.4)
    ax = axes[0, 0]
    used = {r["term"] for r in rows if r["kind"] == "term" and r["rms"] > 0}
    terms = []                                              # pipeline order (the rows list every term)
    for r in rows:
        if r["kind"] == "term" and r["term"] in used and r["term"] not in terms:
            terms.append(r["term"])
    meths = [m for m in _BUDGET_METHODS if any(r["method"] == m for r in rows)]
    h = 0.8 / len(meths)
    for i, meth in enumerate(meths):
        st = method_style(meth)
        vals = {r["term"]: r["rms"] for r in rows if r["kind"] == "term" and r["method"] == meth}
        ys = [len(terms) - 1 - j + (len(meths) / 2 - i - 0.5) * h for j in range(len(terms))]
        ax.barh(ys, [vals.get(t, 0.0) for t in terms], height=h, color=st.color, edgecolor=_edge(st.color),
                linewidth=0.4, label=st.label)
        pred = next(r["rms"] for r in rows if r["kind"] == "predicted_rmse" and r["method"] == meth)
        meas = next(r["rms"] for r in rows if r["kind"] == "measured_rmse" and r["method"] == meth)
        y_tot = len(terms) + 0.6 + (len(meths) / 2 - i - 0.5) * h
        ax.barh([y_tot], [pred], height=h, color=st.color, edgecolor=_edge(st.color), linewidth=0.4)
        ax.plot([meas], [y_tot], marker="|", color=OKABE_ITO["black"], markersize=5, markeredgewidth=1.2, linestyle="none")
    ax.plot([], [], marker="|", color=OKABE_ITO["black"], linestyle="none", markersize=5, markeredgewidth=1.2,
            label="measured RMSE")
    ax.set_yticks([len(terms) - 1 - j for j in range(len(terms))] + [len(terms) + 0.6], terms + ["total (predicted)"],
                  fontsize=6.5)
    ax.set_xscale("log")
    ax.set_xlabel("RMS contribution to the output error")
    ax.grid(axis="y", visible=False)
    _legend_below(fig, ncols=2, fontsize=6)
    return fig


_LENGTH_METHODS = ("pasa:script", "pasa", "pasa:fp16_keymean", "fa_q", "fa_hybrid")


@_register("04_predicted_vs_measured", "error against the sequence length, measured and predicted")
def _data_error_vs_length(quick: bool):
    """Measured RMSE (markers) and the model's RMSE estimate (lines) against the KV length S2 = 2^7 …
    2^14 (quick: 2^7 … 2^10) on a biased case with a soft softmax (uniform, mean 10, amplitude 0.5,
    seed 2024724; one head, S1 = 64, d = 128; quick: S1 = 16), for PASA's presets, fp16 flash
    attention and the hybrid. The deterministic bounds are in the CSV (``pred_bound``).
    """
    from . import data

    seqs = [2**e for e in range(7, 11 if quick else 15)]
    recs, rows = [], []
    for s2 in seqs:
        q, k, v = data.make_qkv("uniform", mean=10.0, amplitude=0.5, batch=1, heads=1, kv_heads=1,
                                seq_q=16 if quick else 64, seq_kv=s2, head_dim=128)
        for r in _predicted_and_measured(q, k, v, _LENGTH_METHODS):
            recs.append(r)
            rows.append(dict(seq_kv=s2, method=r["method"], rmse=r["rmse"], pred_rmse=r["pred_rmse"],
                             max_abs_err=r["max_abs_err"], pred_bound=r["pred_bound"], nonfinite=r["nonfinite"]))
    ratios = [r["rmse_ratio"] for r in recs if math.isfinite(r["rmse_ratio"])]
    summary = dict(rmse_ratio_min=min(ratios), rmse_ratio_max=max(ratios), seq_kv=seqs)
    return ("seq_kv", "method", "rmse", "pred_rmse", "max_abs_err", "pred_bound", "nonfinite"), rows, summary


def _draw_error_vs_length(rows, summary):
    fig, axes = _new_figure(3.3)
    ax = axes[0, 0]
    for meth in _LENGTH_METHODS:
        st = method_style(meth)
        pts = sorted((r["seq_kv"], r["rmse"], r["pred_rmse"]) for r in rows if r["method"] == meth and not r["nonfinite"])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle="none", marker=st.marker, color=st.color,
                markeredgecolor=_edge(st.color), label=st.label)
        ax.plot([p[0] for p in pts], [p[2] for p in pts], linestyle=st.linestyle, color=st.color, marker="none")
    ax.plot([], [], color=OKABE_ITO["black"], linestyle="-", label="lines: predicted RMSE")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(r"KV sequence length $S_2$")
    ax.set_ylabel("RMSE (markers: measured)")
    _legend_below(fig, ncols=2, fontsize=5.8)
    return fig


# ---------------------------------------------------------------------------------------------------
# notebook 5: method comparison and β

#: Methods of the accuracy table (the figure draws all but the baseline fa_naive, which is the yardstick).
COMPARISON_METHODS = ("pasa", "pasa:script", "pasa:fp16_keymean", "pasa:fp16_strict", "pasa:hybrid", "pasa:bf16",
                      "fa_qk", "fa_q", "fa_naive", "fa_hybrid", "smooth_k", "sdpa")
_COMPARISON_DRAWN = ("pasa", "pasa:script", "pasa:fp16_keymean", "pasa:bf16", "fa_qk", "fa_q", "smooth_k",
                     "fa_hybrid", "sdpa")
_GRID_COLUMNS = ("dist", "mean", "amplitude", "method", "beta", "rmse", "rel_rmse", "rel_rmse_out", "max_abs_err",
                 "nonfinite", "first_nonfinite_stage", "ratio_to_naive", "seq_q", "seq_kv", "head_dim", "heads",
                 "kv_heads", "block_kv")


#: Cells where naive fp16 attention's relative RMSE is below u16² = 2^-22 are left out of the ratios.
ONE_HOT_BELOW = 2.0**-22


def comparison_shape(quick: bool) -> dict:
    """The shape of the accuracy grid: one GQA group of the reference benchmark (1 x 7/1 heads,
    S1 = S2 = 1407, d = 128) in full mode; 1 x 1/1 heads, S1 = 128, S2 = 384 in quick mode."""
    from . import data

    if quick:
        return dict(batch=1, heads=1, kv_heads=1, seq_q=128, seq_kv=384, head_dim=128)
    return dict(data.REFERENCE_SHAPE, heads=7, kv_heads=1)


@_register("05_method_comparison", "accuracy of every method relative to naive fp16 attention on the reference grid", cited=True)
def _data_method_comparison(quick: bool):
    """The reference benchmark's grid (uniform and hybrid × mean {0, 10, 20, 30} × amplitude
    {0.5, 5, 10, 20}, seed 2024724, fp16 inputs; shape :func:`comparison_shape`) for every method of
    :data:`COMPARISON_METHODS`. Plotted: each method's relative RMSE divided by that of naive fp16
    attention (``fa_naive``) on the same cell; filled markers for biased cells (mean > 0), open for
    mean 0; cells with inf/NaN on the right.
    """
    import statistics as st_

    from .harness import run_grid

    recs = run_grid(COMPARISON_METHODS, shape=comparison_shape(quick), progress=False)
    naive = {(r["dist"], r["mean"], r["amplitude"]): r["rel_rmse"] for r in recs if r["method"] == "fa_naive"}
    rows = []
    for r in recs:
        row = {c: r.get(c) for c in _GRID_COLUMNS if c != "ratio_to_naive"}
        base = naive[(r["dist"], r["mean"], r["amplitude"])]
        # None where the method overflowed, or where naive attention is exact to below u16² (a one-hot
        # softmax: an outlier key dominates every row, so a finite method returns a row of V and the
        # ratio only measures which key won)
        ok = not r["nonfinite"] and math.isfinite(base) and base >= ONE_HOT_BELOW
        row["ratio_to_naive"] = r["rel_rmse"] / base if ok else None
        rows.append(row)

    def ratios(meth, biased):
        return [r["ratio_to_naive"] for r in rows if r["method"] == meth and r["ratio_to_naive"] is not None
                and ((r["mean"] > 0) == biased)]

    summary = {}
    for meth in COMPARISON_METHODS:
        b, u = _spread(ratios(meth, True)), _spread(ratios(meth, False))
        summary[meth] = dict(
            overflow_cells=sum(1 for r in rows if r["method"] == meth and r["nonfinite"]),
            ratio_biased_min=b[0], ratio_biased_median=b[1], ratio_biased_max=b[2],
            ratio_unbiased_min=u[0], ratio_unbiased_median=u[1], ratio_unbiased_max=u[2],
            rel_rmse_median=st_.median([r["rel_rmse"] for r in rows if r["method"] == meth and not r["nonfinite"]] or [math.nan]),
        )
    ref = {(r["dist"], r["mean"], r["amplitude"]): r["rel_rmse"] for r in rows if r["method"] == "pasa:script"}
    vs_ref = [r["rel_rmse"] / ref[(r["dist"], r["mean"], r["amplitude"])] for r in rows
              if r["method"] == "pasa" and naive[(r["dist"], r["mean"], r["amplitude"])] >= ONE_HOT_BELOW]
    summary["pasa_over_reference"] = dict(min=min(vs_ref), median=st_.median(vs_ref), max=max(vs_ref))
    summary["cells_one_hot"] = sorted(c for c, x in naive.items() if x < ONE_HOT_BELOW)
    summary["fa_qk_overflow_cells"] = sorted((r["dist"], r["mean"], r["amplitude"]) for r in rows
                                             if r["method"] == "fa_qk" and r["nonfinite"])
    return _GRID_COLUMNS, rows, summary


def _draw_method_comparison(rows, summary):
    fig, axes = _new_figure(3.3)
    ax = axes[0, 0]
    meths = list(_COMPARISON_DRAWN)
    finite = [r["ratio_to_naive"] for r in rows if r["ratio_to_naive"] is not None and r["method"] in meths]
    right = max(finite) * 4
    cells = sorted({(r["dist"], r["mean"], r["amplitude"]) for r in rows})
    for i, meth in enumerate(meths):
        st = method_style(meth)
        y0 = len(meths) - 1 - i
        for j, cell in enumerate(cells):
            r = next(r for r in rows if r["method"] == meth and (r["dist"], r["mean"], r["amplitude"]) == cell)
            if r["ratio_to_naive"] is None and not r["nonfinite"]:
                continue                                   # one-hot cell (see ONE_HOT_BELOW)
            jitter = ((j * 7) % 16 - 7.5) * 0.03
            biased = cell[1] > 0
            x = r["ratio_to_naive"] if r["ratio_to_naive"] is not None else right
            ax.plot(x, y0 + jitter, linestyle="none", marker=st.marker if r["ratio_to_naive"] is not None else ">",
                    color=st.color, markerfacecolor=st.color if biased else "white", markeredgecolor=_edge(st.color),
                    markersize=3.2, markeredgewidth=0.6)
    ax.axvline(1.0, color=OKABE_ITO["black"], linewidth=0.7)
    ax.axvline(right / 1.6, color=GREY, linewidth=0.5)
    ax.text(right, len(meths) - 0.4, "inf/NaN", ha="center", va="bottom", fontsize=6)
    ax.set_yticks(range(len(meths)), [method_style(m).label for m in reversed(meths)])
    ax.set_ylim(-0.6, len(meths) - 0.1)
    ax.set_xscale("log")
    ax.set_xlim(right=right * 1.8)
    ax.set_xlabel("relative RMSE ÷ naive fp16 attention's\n(filled: mean > 0, open: mean 0)")
    ax.grid(axis="y", visible=False)
    return fig


def _binade_teeth(betas, mu_tilde_of) -> list[float]:
    """β where fl's binade of the shifted block mean μ̃(β) changes (μ̃ decreasing in β)."""
    teeth = []
    prev = None
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


@_register("05_method_comparison", "error against β over several data draws, with the c·ulp(μ̃)/2 sawtooth of the reference preset", cited=True)
def _data_beta_sweep(quick: bool):
    """Relative RMSE against β ∈ [0.90, 0.995] (64 values; quick 16) for PASA at the reference preset,
    npu_fp16 and fp16_keymean, with naive fp16 attention for comparison; median and range over 8 data
    draws (quick: 2) of the reference script's default case (uniform, mean 30, amplitude 0.5, seeds
    2024724 + i; 1 head, S1 = 256, S2 = 1407, d = 128; quick: S1 = 64).

    Predicted (right axis): the reference preset rounds each block's pseudo-average μ̃ to fp16 and
    the recovery multiplies that rounding error, up to half an ulp, by c = β/(1 − β): the bound
    c·ulp(μ̃)/2 on the error of a block offset, with μ̃ = (a − b·n)·median(q·k̄) from the rounded
    τ-folded matrix (a, b) and the data. Within a binade of μ̃ it grows like c; where μ̃ drops into the
    next binade the ulp halves (the teeth). npu_fp16 rounds only each block mean's deviation from a
    running reference, and fp16_keymean takes the offsets from the keys' block means.
    """
    import statistics as st_

    import numpy as np
    import torch

    from . import data, golden_attention
    from .harness import run_case
    from .kernel import shift_parameters

    shape = dict(batch=1, heads=1, kv_heads=1, seq_q=64 if quick else 256, seq_kv=1407, head_dim=128)
    seeds = [data.REFERENCE_SEED + i for i in range(2 if quick else 8)]
    betas = [float(b) for b in np.linspace(0.90, 0.995, 16 if quick else 64)]
    per: dict[tuple[str, float], list[float]] = {}
    naive, qkbar = [], []
    for seed in seeds:
        q, k, v = data.make_qkv("uniform", mean=30.0, amplitude=0.5, seed=seed, **shape)
        golden = golden_attention(q, k, v)
        naive += [r["rel_rmse"] for r in run_case(q, k, v, ["fa_naive"], golden=golden)]
        for b in betas:
            for r in run_case(q, k, v, list(_SWEEP_METHODS), beta=b, golden=golden):
                per.setdefault((r["method"], b), []).append(r["rel_rmse"])
        # q·k̄_j per row and full 128-key block, float64: the scale of the shifted block means
        kf = k.to(torch.float64)[:, :, : (k.shape[2] // 128) * 128]
        kbar = kf.view(kf.shape[0], kf.shape[1], -1, 128, kf.shape[3]).mean(dim=3)
        qkbar.append(float(torch.einsum("bhid,bhjd->bhij", q.to(torch.float64), kbar).median()))
    med_qkbar = st_.median(qkbar)

    def mu_tilde(beta: float) -> float:
        sp = shift_parameters("script", head_dim=128, beta=float(beta))
        a, bb = sp.diag - sp.off, -sp.off
        return (a - bb * 128) * med_qkbar

    rows = []
    for (meth, b), vals in sorted(per.items()):
        rows.append(dict(kind="measured", method=meth, beta=b, rel_rmse_median=st_.median(vals), rel_rmse_min=min(vals),
                         rel_rmse_max=max(vals), draws=len(vals), predicted_offset_error=None))
    rows.append(dict(kind="baseline", method="fa_naive", beta=None, rel_rmse_median=st_.median(naive),
                     rel_rmse_min=min(naive), rel_rmse_max=max(naive), draws=len(naive), predicted_offset_error=None))
    for b in np.linspace(0.90, 0.995, 1200):
        b = float(b)
        mt = mu_tilde(b)
        rows.append(dict(kind="predicted", method="pasa:script", beta=b, rel_rmse_median=None, rel_rmse_min=None,
                         rel_rmse_max=None, draws=None, predicted_offset_error=b / (1 - b) * float(_pt.ulp(mt, "fp16")) / 2))
    for t in _binade_teeth(np.linspace(0.90, 0.995, 2000), mu_tilde):
        rows.append(dict(kind="predicted_tooth", method="pasa:script", beta=float(t), rel_rmse_median=None,
                         rel_rmse_min=None, rel_rmse_max=None, draws=None, predicted_offset_error=None))
    for b in PUBLISHED_BETAS.values():
        rows.append(dict(kind="published", method="", beta=b, rel_rmse_median=None, rel_rmse_min=None,
                         rel_rmse_max=None, draws=None, predicted_offset_error=None))
    rows.append(dict(kind="selected", method="pasa", beta=shift_parameters("npu_fp16", head_dim=128).beta,
                     rel_rmse_median=None, rel_rmse_min=None, rel_rmse_max=None, draws=None, predicted_offset_error=None))

    def med(meth):
        return [r["rel_rmse_median"] for r in rows if r["kind"] == "measured" and r["method"] == meth]

    teeth = [r["beta"] for r in rows if r["kind"] == "predicted_tooth"]

    def jump(meth):
        """Median over the teeth of (median error just below a tooth) / (just above)."""
        xs = [r for r in rows if r["kind"] == "measured" and r["method"] == meth]
        ratios = []
        for t in teeth:
            below = [r for r in xs if r["beta"] < t]
            above = [r for r in xs if r["beta"] > t]
            if below and above:
                ratios.append(below[-1]["rel_rmse_median"] / above[0]["rel_rmse_median"])
        return st_.median(ratios) if ratios else None

    summary = dict(
        naive_rel_rmse_median=st_.median(naive),
        median_q_kbar=med_qkbar,
        teeth=teeth,
        draws=len(seeds),
        **{f"{m}_min": min(med(m)) for m in _SWEEP_METHODS},
        **{f"{m}_max": max(med(m)) for m in _SWEEP_METHODS},
        **{f"{m}_jump_at_teeth": jump(m) for m in _SWEEP_METHODS},
    )
    cols = ("kind", "method", "beta", "rel_rmse_median", "rel_rmse_min", "rel_rmse_max", "draws", "predicted_offset_error")
    return cols, rows, summary


def _draw_beta_sweep(rows, summary):
    fig, axes = _new_figure(3.5)
    ax = axes[0, 0]
    for meth in _SWEEP_METHODS:
        st = method_style(meth)
        pts = sorted((r["beta"], r) for r in rows if r["kind"] == "measured" and r["method"] == meth)
        xs = [b for b, _ in pts]
        ax.fill_between(xs, [r["rel_rmse_min"] for _, r in pts], [r["rel_rmse_max"] for _, r in pts], color=st.color,
                        alpha=0.18, linewidth=0)
        ax.plot(xs, [r["rel_rmse_median"] for _, r in pts], color=st.color, marker=st.marker, linestyle=st.linestyle,
                markersize=2.2, label=st.label + " (median; band: range)", markeredgecolor=_edge(st.color))
    base = next(r for r in rows if r["kind"] == "baseline")
    nst = method_style("fa_naive")
    ax.axhline(base["rel_rmse_median"], color=nst.color, linestyle=nst.linestyle, linewidth=0.8, label=nst.label)
    for r in rows:
        if r["kind"] in ("published", "selected"):
            ax.plot(r["beta"], 1.0, marker="v", color=OKABE_ITO["black" if r["kind"] == "published" else "vermillion"],
                    transform=ax.get_xaxis_transform(), linestyle="none", clip_on=False, markersize=4)
    ax.set_yscale("log")
    ax.set_xlabel(r"$\beta$")
    ax.set_ylabel("relative RMSE (RMSE / RMS(V))")
    bx = ax.twinx()
    pred = sorted((r["beta"], r["predicted_offset_error"]) for r in rows if r["kind"] == "predicted")
    bx.plot([p[0] for p in pred], [p[1] for p in pred], color=OKABE_ITO["sky_blue"], linestyle=":", linewidth=0.9)
    bx.set_yscale("log")
    bx.set_ylabel(r"predicted $c\cdot\mathrm{ulp}(\tilde\mu)/2$ (score units)", color=OKABE_ITO["sky_blue"])
    bx.grid(False)
    ax.plot([], [], color=OKABE_ITO["sky_blue"], linestyle=":", label=r"reference: predicted offset error $c\cdot\mathrm{ulp}(\tilde\mu)/2$ (right)")
    ax.plot([], [], marker="v", color=OKABE_ITO["black"], linestyle="none", label="published β")
    ax.plot([], [], marker="v", color=OKABE_ITO["vermillion"], linestyle="none", label="npu_fp16's β")
    _legend_below(fig, ncols=1, fontsize=5.8)
    return fig


# ---------------------------------------------------------------------------------------------------
# the public figure functions (one per entry of FIGURES)

fp64_exactness = FIGURES["fp64_exactness"].function
beta_fixed_points = FIGURES["beta_fixed_points"].function
kappa_landscape = FIGURES["kappa_landscape"].function
overflow_frontier = FIGURES["overflow_frontier"].function
accumulator_overflow = FIGURES["accumulator_overflow"].function
resonance_statistics = FIGURES["resonance_statistics"].function
resonance_accuracy = FIGURES["resonance_accuracy"].function
method_comparison = FIGURES["method_comparison"].function
beta_sweep = FIGURES["beta_sweep"].function
predicted_vs_measured = FIGURES["predicted_vs_measured"].function
error_budget = FIGURES["error_budget"].function
error_vs_length = FIGURES["error_vs_length"].function

# ---------------------------------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pasa_npu.figures --all --out figures [--quick] [--only NAME ...] [--list]``."""
    p = argparse.ArgumentParser(
        prog="python -m pasa_npu.figures",
        description="Write the paper figures (<name>.pdf, .png and .csv) into a folder.",
    )
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--all", action="store_true", help="every figure")
    sel.add_argument("--only", action="append", metavar="NAME", help="one figure (repeatable, or comma-separated)")
    sel.add_argument("--cited", action="store_true", help="only the figures the README cites (the committed ones)")
    p.add_argument("--list", action="store_true", help="list the figures and exit")
    p.add_argument("--out", default="figures", help="output folder (default: figures)")
    p.add_argument("--quick", action="store_true", help="small shapes (as PASA_QUICK=1)")
    args = p.parse_args(argv)
    if args.list:
        for spec in FIGURES.values():
            print(f"{spec.name:22} {'cited ' if spec.cited else '      '}{spec.notebook:24} {spec.description}")
        return 0
    if args.all:
        names = list(FIGURES)
    elif args.cited:
        names = [n for n, s in FIGURES.items() if s.cited]
    elif args.only:
        names = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
        unknown = [n for n in names if n not in FIGURES]
        if unknown:
            p.error(f"unknown figure(s) {', '.join(unknown)}; figures: {', '.join(FIGURES)}")
    else:
        p.error("choose --all, --cited or --only NAME (or --list)")
    for name in names:
        t0 = time.perf_counter()
        res = make_figure(name, quick=True if args.quick else None, out=args.out)
        print(f"{name}: {', '.join(str(x) for x in res.paths)} ({time.perf_counter() - t0:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
