"""Figures of notebook 07 (real models). Each function draws one figure from analysis records and, when
``save`` is true, writes ``figures/real_models_<stem>.{png,pdf,csv}`` in the repository (the folder is
found from this package's location, not the working directory)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "figures_dir",
    "write_csv",
    "layer_error_heatmap",
    "end_to_end_bars",
    "bias_sweep_plot",
    "activation_histograms",
]


def figures_dir() -> Path:
    """The repository's ``figures/`` folder (next to the ``pasa_npu`` package)."""
    return Path(__file__).resolve().parents[2] / "figures"


def write_csv(records: Sequence[dict], stem: str) -> Path:
    """``figures/real_models_<stem>.csv`` with the union of the records' keys as columns."""
    path = figures_dir() / f"real_models_{stem}.csv"
    keys = list(dict.fromkeys(k for r in records for k in r))
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in records:
            w.writerow({k: r.get(k) for k in keys})
    return path


def _finish(fig, stem: str, records: Sequence[dict], save: bool):
    if save:
        d = figures_dir()
        fig.savefig(d / f"real_models_{stem}.png", dpi=110, bbox_inches="tight")
        fig.savefig(d / f"real_models_{stem}.pdf", bbox_inches="tight", metadata={"CreationDate": None})
        write_csv(records, stem)
    return fig


def layer_error_heatmap(records: Sequence[dict], *, title: str, save: bool = False):
    """Per-layer error heatmap: rows methods, columns layers, colour log10 of the median over heads of
    the relative RMSE (emulated on the captured fp16-rounded inputs; white: inf/NaN)."""
    import matplotlib.pyplot as plt

    heads = [r for r in records if r["head"] >= 0]
    methods = list(dict.fromkeys(r["method"] for r in heads))
    layers = sorted({r["layer"] for r in heads})
    grid = np.full((len(methods), len(layers)), np.nan)
    for i, m in enumerate(methods):
        for j, li in enumerate(layers):
            v = [r["rel_rmse"] for r in heads if r["method"] == m and r["layer"] == li]
            v = [x for x in v if math.isfinite(x)]
            if v:
                grid[i, j] = math.log10(float(np.median(v)))
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(layers) + 3), 0.4 * len(methods) + 1.5))
    im = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(methods)), methods)
    ax.set_xticks(range(len(layers)), [str(x) for x in layers], fontsize=7)
    ax.set_xlabel("layer")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="log10 median-over-heads relative RMSE")
    rows = [r for r in records if r["head"] == -1] or list(records)
    return _finish(fig, "layer_errors", rows, save)


def end_to_end_bars(records: Sequence[dict], *, save: bool = False):
    """KL to golden and |perplexity / golden − 1| per method (SmolLM2, mean over texts), and 1 − embedding
    cosine (MiniLM)."""
    import matplotlib.pyplot as plt

    dec = [r for r in records if r.get("kl_to_golden") is not None]
    enc = [r for r in records if r.get("embedding_cosine") is not None]
    methods = list(dict.fromkeys(r["method"] for r in records))

    def mean(rs, f):
        v = [f(r) for r in rs]
        return sum(v) / len(v) if v else math.nan

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    kl = [mean([r for r in dec if r["method"] == m], lambda r: r["kl_to_golden"]) for m in methods]
    pp = [
        mean(
            [r for r in dec if r["method"] == m], lambda r: abs(r["perplexity"] / r["golden_perplexity"] - 1)
        )
        for m in methods
    ]
    cs = [mean([r for r in enc if r["method"] == m], lambda r: 1 - r["embedding_cosine"]) for m in methods]
    for ax, vals, lab in zip(
        axes,
        (kl, pp, cs),
        (
            "SmolLM2: mean KL(golden ‖ method)",
            "SmolLM2: |perplexity / golden − 1|",
            "MiniLM: 1 − cosine(embedding, golden)",
        ),
    ):
        ax.barh(range(len(methods)), [v if v and math.isfinite(v) and v > 0 else float("nan") for v in vals])
        ax.set_xscale("log")
        ax.set_yticks(range(len(methods)), methods, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(lab, fontsize=9)
    fig.tight_layout()
    return _finish(fig, "end_to_end", records, save)


def bias_sweep_plot(records: Sequence[dict], *, layers: Sequence[int], save: bool = False):
    """Injected per-channel K bias: perplexity and KL to golden against the bias size, per method; a cross
    marks where the method's output is inf/NaN (plotted at the top)."""
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in records))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for m in methods:
        rs = sorted((r for r in records if r["method"] == m), key=lambda r: r["size"])
        x = [r["max_abs_qk"] for r in rs]
        for ax, key in zip(axes, ("perplexity", "kl_to_golden")):
            y = [r[key] if r[key] is not None and math.isfinite(r[key]) else float("nan") for r in rs]
            (line,) = ax.plot(x, y, "o-", label=m, ms=3)
            bad = [xx for xx, r in zip(x, rs) if r["nonfinite_output"]]
            if bad:
                top = ax.get_ylim()[1]
                ax.plot(bad, [top] * len(bad), "x", color=line.get_color(), ms=8)
    g = [r["golden_perplexity"] for r in records]
    axes[0].axhline(g[0], color="k", lw=0.8, ls=":", label="golden")
    for ax in axes:
        ax.axvline(65504, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("max |q·k| in the injected layers (grey: fp16 max)")
    axes[1].set_yscale("log")
    axes[0].set_ylabel("perplexity")
    axes[1].set_ylabel("mean KL(golden ‖ method)")
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"SmolLM2 with an INJECTED per-channel K bias in layers {list(layers)} "
        "(exact attention unchanged); x: inf/NaN output",
        fontsize=9,
    )
    fig.tight_layout()
    return _finish(
        fig,
        "bias_sweep",
        [dict(r, nonfinite_layers=" ".join(map(str, r["nonfinite_layers"]))) for r in records],
        save,
    )


def activation_histograms(stats: dict[str, Sequence[dict]], *, save: bool = False):
    """Distributions over (layer, head) of max|q·k|, the row bias-to-spread ratio of the scores, the
    cosine of mean query and mean key (resonance), and the K per-channel bias, one curve per model."""
    import matplotlib.pyplot as plt

    keys = (
        ("max_abs_qk", "max |q·k| (fp16 max 65504)", True),
        ("row_bias_to_spread", "median |row mean| / row std", True),
        ("mean_alignment", "cos(mean q, mean k)", False),
        ("k_bias", "‖mean k‖ / RMS k", False),
    )
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.3))
    for ax, (k, lab, logx) in zip(axes, keys):
        for name, rs in stats.items():
            v = np.array([r[k] for r in rs], dtype=float)
            if logx:
                v = np.log10(v[v > 0])
            ax.hist(v, bins=30, histtype="step", label=name, density=True)
        ax.set_xlabel(("log10 " if logx else "") + lab, fontsize=8)
    axes[0].legend(fontsize=7)
    fig.suptitle("real activations, one sample per (layer, head)", fontsize=9)
    fig.tight_layout()
    rows = [dict(model=name, **r) for name, rs in stats.items() for r in rs]
    return _finish(fig, "activation_stats", rows, save)
