"""The figures' style: single-column width, 8 pt text, the Okabe–Ito palette, one style per method.

matplotlib is imported inside the helpers that need it (it is an optional, heavy dependency):
importing this module does not load it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "OKABE_ITO",
    "GREY",
    "DARK_GREY",
    "COLUMN_WIDTH",
    "STYLE_RC",
    "PDF_METADATA",
    "PNG_METADATA",
    "MethodStyle",
    "METHOD_STYLES",
    "method_style",
    "edge_colour",
    "style_rc",
    "rc",
    "new_figure",
    "legend_below",
]

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
        return dict(
            color=self.color,
            marker=self.marker,
            linestyle=self.linestyle,
            label=self.label,
            markeredgecolor=edge_colour(self.color),
        )


def edge_colour(color: str) -> str:
    """The marker edge colour for ``color``: yellow and light grey get a dark outline to show on white."""
    return DARK_GREY if color in (OKABE_ITO["yellow"], GREY) else color


#: One style per harness method name (:mod:`pasa_npu.methods`), fixed across all figures.
METHOD_STYLES: dict[str, MethodStyle] = {
    "pasa": MethodStyle("PASA (npu_fp16)", OKABE_ITO["blue"], "o", "-"),
    "pasa:npu_fp16": MethodStyle("PASA (npu_fp16)", OKABE_ITO["blue"], "o", "-"),
    "pasa:script": MethodStyle("PASA (script preset)", OKABE_ITO["sky_blue"], "s", "--"),
    "pasa:fp16_keymean": MethodStyle("PASA (key-mean offsets)", OKABE_ITO["bluish_green"], "D", "-."),
    "pasa:bf16": MethodStyle("PASA (bf16)", OKABE_ITO["reddish_purple"], "P", "-"),
    "pasa:fp16_strict": MethodStyle("PASA (fp16 reductions)", "#332288", "v", ":"),
    "pasa:hybrid": MethodStyle("PASA (fp32 vector unit)", "#882255", "<", ":"),
    "pasa:fp32": MethodStyle("PASA (fp32)", DARK_GREY, ">", ":"),
    "pasa:fp64": MethodStyle("PASA (fp64)", OKABE_ITO["blue"], "o", "-"),
    "pasa:fp16_accurate": MethodStyle("fp16_accurate (reference in the accumulator)", "#117733", "d", "-"),
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
        raise ValueError(
            f"method: no figure style for {method!r}; styled methods: {sorted(METHOD_STYLES)}"
        ) from None


def style_rc() -> dict[str, Any]:
    """:data:`STYLE_RC` with the palette as the colour cycle (imports matplotlib's cycler)."""
    from cycler import cycler

    out = dict(STYLE_RC)
    out["axes.prop_cycle"] = cycler(color=list(OKABE_ITO.values()))
    return out


def rc() -> Any:
    """A context manager applying :func:`style_rc` (imports matplotlib)."""
    import matplotlib

    return matplotlib.rc_context(style_rc())


def legend_below(fig: Any, ncols: int = 2, **kw: Any) -> None:
    """One legend for the whole figure, under the axes (constrained layout makes room for it)."""
    fig.legend(loc="outside lower center", ncols=ncols, **kw)


def new_figure(height: float, nrows: int = 1, ncols: int = 1, **kw: Any) -> tuple[Any, Any]:
    """A single-column figure (width :data:`COLUMN_WIDTH`) with an ``nrows × ncols`` array of axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(COLUMN_WIDTH, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes
