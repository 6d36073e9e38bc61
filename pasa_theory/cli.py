"""``pasa-alpha``: compute PASA's β (and its recovery coefficient) for formats and block sizes.

For each format, block size and form of the β equation, the table lists the fixed point reached from
each start (the reference solver's starts ``1 − 2**-4``, ``1 − 2**-5``, ``1 − 2**-6`` unless ``--start``
is given) and the one chosen by the selection criterion (row ``selected``; :mod:`pasa_theory.selection`).
Every value is computed exactly (:mod:`pasa_theory.roots`); ``—`` marks a row without a fixed point,
and a numbered note under the table (a footnote in LaTeX, the ``note`` column in CSV) says why (e.g. fp8
at large blocks, where ``−β/n`` rounds to 0) and which call admits one. For a single query (one
format, block and form) a row without β also gives a note on stderr and exit status 1.

The command is called ``pasa-alpha`` because the reference implementation names the coefficient
``afa`` (alpha); ``pasa-beta`` is the same command under the name used in the documentation.

Columns: format, n (block), form, scale, start, β, a and b of ``M_r = aI − bJ``, ``c_repr`` (β/(1 − β)
stored in the vector format), ``kappa`` (per-block constant error with ``c_repr``, eq. B3),
``bias`` (1 − β).

Examples::

    pasa-alpha                                   # fp16, n = 128, paper form
    pasa-alpha --format bf16 --block 64,256 --form both
    pasa-alpha --scale "1/sqrt(128)" --digits 12
    pasa-alpha --all --output-format latex --caption "Optimal beta" > beta_table.tex
    python -m pasa_theory --all --output-format csv
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from collections.abc import Sequence
from fractions import Fraction

import mpmath

from ._real import RealInput, as_real, check_open_unit, check_positive
from .formats import FloatFormat, get_format
from .roots import DEFAULT_STARTS, fixed_point_from
from .selection import DEFAULT_MAX_BIAS, DEFAULT_MAX_GAIN, select_beta, selection_window
from .shifting import normalize_form

__all__ = ["main", "build_parser", "compute_rows", "ALL_FORMATS", "ALL_BLOCKS"]

#: Formats and block sizes of ``--all``.
ALL_FORMATS = ("fp16", "bf16", "fp8_e4m3", "fp8_e5m2")
ALL_BLOCKS = (16, 32, 64, 128, 256, 512, 1024)
COLUMNS = ("format", "n", "form", "scale", "start", "beta", "a", "b", "c_repr", "kappa", "bias")
#: Extra column of the CSV output: why a row has no β (empty otherwise).
NOTE_COLUMN = "note"
_VALUES = ("beta", "a", "b", "c_repr", "kappa", "bias")


def _digits(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0 or value > 200:
        raise argparse.ArgumentTypeError(f"expected an integer between 0 and 200, got {value}")
    return value


def _blocks(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        try:
            n = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected block sizes such as 128 or 64,128, got {text!r}"
            ) from None
        if n < 2:
            raise argparse.ArgumentTypeError(f"block sizes must be >= 2, got {n}")
        out.append(n)
    return out


def _formats(text: str) -> list[str]:
    out = []
    for part in text.split(","):
        try:
            out.append(get_format(part, argname="--format").name)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return out


def _forms(text: str) -> list[str]:
    if text.strip().lower() == "both":
        return ["paper", "kappa"]
    try:
        return [normalize_form(part) for part in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pasa-alpha",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Optimal beta of PASA's shifting matrix M = sigma*(I - (beta/n)J) stored in a format FMT\n"
            "for KV block size n: the exact fixed points of the rounding-aware beta equation reached\n"
            "from each start, and the one chosen by the selection criterion (smallest |kappa| with c\n"
            "stored in the vector format, among the fixed points with bias 1-beta <= --max-bias and\n"
            "gain c = beta/(1-beta) <= --max-gain). A row without beta gets a note saying why and\n"
            "which call admits one.\n\n"
            "Why 'alpha': the PASA reference implementation calls this coefficient afa (alpha);\n"
            "the package and its documentation call it beta. 'pasa-beta' is the same command."
        ),
        epilog=(
            "forms:\n"
            "  paper  beta/(1-beta) = sigma*b*n/(a*(a-b*n))   (reproduces the published 0.9689939)\n"
            "  kappa  the same plus (sigma-a)/a, i.e. zero per-block error kappa with the exact c\n"
            "         (what the reference solver optimal_para.py iterates; alias: code)\n"
            "columns:\n"
            "  start   the iteration's start, or 'selected' for the criterion's choice\n"
            "  beta    the fixed point (exact; printed to --digits places); '—' = none reached\n"
            "  a, b    the rounded matrix is exactly a*I - b*J\n"
            "  c_repr  c = beta/(1-beta) stored in the vector format\n"
            "  kappa   per-block constant error of the recovery with c_repr, per unit of the\n"
            "          scaled block mean\n"
            "  bias    1 - beta, the fraction of the block mean left in the shifted scores\n"
            "examples:\n"
            "  pasa-alpha --format bf16 --block 64,256 --form both\n"
            "  pasa-alpha --scale '1/sqrt(128)' --digits 12\n"
            "  pasa-alpha --all --output-format latex --caption 'Optimal beta' > beta_table.tex\n"
            "exit status: 0, or 1 when a single query (one format, block and form) has a row\n"
            "without beta (the reason is printed on stderr); 2 for bad arguments"
        ),
    )
    p.add_argument(
        "--format",
        dest="formats",
        type=_formats,
        default=None,
        metavar="FMT[,FMT]",
        help="storage format(s) of M: fp16, bf16, fp32, fp64, fp8_e4m3, fp8_e5m2 (default fp16)",
    )
    p.add_argument(
        "--block",
        dest="blocks",
        type=_blocks,
        default=None,
        metavar="N[,N]",
        help="KV block size(s) n >= 2 (default 128)",
    )
    p.add_argument(
        "--form",
        dest="forms",
        type=_forms,
        default=None,
        metavar="FORM",
        help="paper, kappa (alias code) or both (default paper)",
    )
    p.add_argument(
        "--scale",
        default=None,
        metavar="EXPR",
        help="softmax scale folded into M, e.g. '1/sqrt(128)' (exact) or 0.0883883476 (decimal); "
        "default: not folded",
    )
    p.add_argument(
        "--start",
        dest="starts",
        action="append",
        default=None,
        metavar="BETA0",
        help="start of the iteration, e.g. 31/32 (repeatable; default 15/16, 31/32, 63/64)",
    )
    p.add_argument(
        "--vector-format",
        default=None,
        metavar="FMT",
        help="format the recovery coefficient c is stored in (default: the --format)",
    )
    p.add_argument(
        "--digits",
        type=_digits,
        default=10,
        metavar="D",
        help="decimal places of beta in the table (default 10)",
    )
    p.add_argument(
        "--no-select",
        dest="select",
        action="store_false",
        help="omit the row chosen by the selection criterion",
    )
    p.add_argument(
        "--max-bias",
        default="1/32",
        metavar="RHO",
        help="selection: largest admissible bias 1-beta (default 1/32)",
    )
    p.add_argument(
        "--max-gain",
        default="64",
        metavar="G",
        help="selection: largest admissible gain c = beta/(1-beta) (default 64)",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="table for formats fp16, bf16, fp8_e4m3, fp8_e5m2 x blocks 16..1024 x both forms",
    )
    p.add_argument(
        "--output-format",
        choices=("text", "csv", "latex"),
        default="text",
        help="text (aligned columns, notes below), csv (with a note column), or latex (booktabs "
        "longtable with caption and footnotes)",
    )
    p.add_argument(
        "--caption",
        default=None,
        metavar="TEXT",
        help="caption of the table (LaTeX: \\caption; text: a title line)",
    )
    p.add_argument("--time", action="store_true", help="report the computation time on stderr")
    return p


def _round_decimal(x: mpmath.mpf, digits: int) -> str:
    """β to ``digits`` decimal places, correctly rounded (half away from zero) from the mpf."""
    with mpmath.workdps(digits + 20):
        scaled = mpmath.mpf(x) * mpmath.mpf(10) ** digits
        q = int(mpmath.floor(scaled + mpmath.mpf(1) / 2))
    s = str(q).rjust(digits + 1, "0")
    return f"{s[:-digits]}.{s[-digits:]}" if digits else s


def _sci(x: mpmath.mpf) -> str:
    v = float(x)
    if v != v:
        return "nan"
    return "0" if v == 0 else f"{v:.2e}"


def compute_rows(
    formats: Sequence[str],
    blocks: Sequence[int],
    forms: Sequence[str],
    *,
    scale: RealInput = None,
    starts: Sequence[RealInput] | None = None,
    vector_format: str | FloatFormat | None = None,
    digits: int = 10,
    select: bool = True,
    max_bias: RealInput = None,
    max_gain: RealInput = None,
) -> list[dict[str, str]]:
    """The table as a list of rows (dicts keyed by :data:`COLUMNS`), all values as text."""
    max_bias = DEFAULT_MAX_BIAS if max_bias is None else max_bias
    max_gain = DEFAULT_MAX_GAIN if max_gain is None else max_gain
    starts = list(DEFAULT_STARTS) if starts is None else list(starts)
    dps = max(digits + 10, 20)
    rows = []
    for fmt in formats:
        for n in blocks:
            for form in forms:
                jobs: list[tuple[str, RealInput]] = [(str(s), s) for s in starts]
                if select:
                    jobs.append(("selected", None))
                for label, start in jobs:
                    row = {
                        "format": fmt,
                        "n": str(n),
                        "form": form,
                        "scale": "1" if scale is None else str(scale),
                        "start": label,
                    }
                    try:
                        if start is None:
                            fp = select_beta(
                                fmt,
                                n,
                                form=form,
                                scale=scale,
                                vector_format=vector_format,
                                dps=dps,
                                max_bias=max_bias,
                                max_gain=max_gain,
                            )
                        else:
                            fp = fixed_point_from(
                                fmt, n, start, form=form, scale=scale, vector_format=vector_format, dps=dps
                            )
                    except ValueError as exc:
                        row.update({k: "—" for k in _VALUES})
                        row[NOTE_COLUMN] = _reason(exc, fmt, n, start)
                    else:
                        assert fp.bias is not None  # the solver always sets it
                        row.update(
                            beta=_round_decimal(fp.beta, digits),
                            a=f"{float(fp.a):.10g}",
                            b=f"{float(fp.b):.10g}",
                            c_repr=f"{float(fp.c_repr):.10g}",
                            kappa=_sci(fp.kappa),
                            bias=f"{float(fp.bias):.4g}",
                        )
                    rows.append(row)
    return rows


def _reason(exc: ValueError, fmt: str, n: int, start: RealInput) -> str:
    """The reason a row has no β, in one line (the solver's message without its argument prefix)."""
    text = str(exc)
    for prefix in ("fmt, n: ", "start: "):
        text = text.removeprefix(prefix)
    if start is not None:
        text = f"from start {start}: {text}"
    return text


def _notes(rows: list[dict[str, str]]) -> tuple[list[str], dict[int, int]]:
    """Distinct reasons in order of appearance, and for each row index the number of its note."""
    reasons: list[str] = []
    marks: dict[int, int] = {}
    for i, r in enumerate(rows):
        note = r.get(NOTE_COLUMN)
        if note:
            if note not in reasons:
                reasons.append(note)
            marks[i] = reasons.index(note) + 1
    return reasons, marks


def _render_text(rows: list[dict[str, str]], caption: str | None = None) -> str:
    reasons, marks = _notes(rows)
    shown = [dict(r, beta=f"— [{marks[i]}]") if i in marks else r for i, r in enumerate(rows)]
    widths = {c: max(len(c), *(len(r[c]) for r in shown)) for c in COLUMNS}
    lines = [caption] if caption else []
    lines.append("  ".join(c.ljust(widths[c]) for c in COLUMNS))
    lines.append("  ".join("-" * widths[c] for c in COLUMNS))
    for r in shown:
        lines.append(
            "  ".join(
                r[c].rjust(widths[c]) if c in ("n", "beta", "kappa") else r[c].ljust(widths[c])
                for c in COLUMNS
            )
        )
    if reasons:
        lines.append("")
        lines += [f"[{k}] {text}" for k, text in enumerate(reasons, 1)]
    return "\n".join(lines) + "\n"


def _render_csv(rows: list[dict[str, str]], caption: str | None = None) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=(*COLUMNS, NOTE_COLUMN), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k, "") == "—" else r.get(k, "")) for k in (*COLUMNS, NOTE_COLUMN)})
    return buf.getvalue()


def _latex_escape(s: str) -> str:
    out = s.replace("\\", r"\textbackslash{}")
    for ch in "_&%#$":
        out = out.replace(ch, "\\" + ch)
    return out.replace("~", r"\textasciitilde{}").replace("^", r"\textasciicircum{}")


def _latex_sci(s: str) -> str:
    if s == "—":
        return "--"
    if "e" not in s or s in ("inf", "-inf"):
        return {"inf": "$\\infty$", "-inf": "$-\\infty$", "nan": "NaN"}.get(s, f"${s}$")
    mant, exp = s.split("e")
    return f"${mant}\\times 10^{{{int(exp)}}}$"


_DEFAULT_CAPTION = (
    "Fixed points $\\beta^\\ast$ of the rounding-aware $\\beta$ equation of PASA (computed exactly by "
    "pasa-alpha), with the entries $a$, $b$ of the rounded matrix $aI - bJ$, the stored recovery "
    "coefficient $c_{\\mathrm{repr}}$, the per-block error $\\kappa$ and the bias $1-\\beta$."
)


def _render_latex(rows: list[dict[str, str]], caption: str | None = None) -> str:
    """A booktabs + longtable table (``\\usepackage{booktabs,longtable}``) with a caption; rows without β
    carry a footnote mark, and the notes follow the table's last rule."""
    reasons, marks = _notes(rows)
    head = [
        "format",
        "$n$",
        "form",
        "$\\sigma$",
        "$\\beta_0$",
        "$\\beta^\\ast$",
        "$a$",
        "$b$",
        "$c_{\\mathrm{repr}}$",
        "$\\kappa$",
        "$1-\\beta$",
    ]
    ncol = len(head)
    header = " & ".join(head) + " \\\\"
    lines = [
        "% generated by pasa-alpha (pasa_theory.cli); do not edit by hand",
        "% needs \\usepackage{booktabs} and \\usepackage{longtable}",
        "\\begin{longtable}{lrllllllrrr}",
        f"\\caption{{{caption or _DEFAULT_CAPTION}}}\\\\",
        "\\toprule",
        header,
        "\\midrule",
        "\\endfirsthead",
        "\\toprule",
        header,
        "\\midrule",
        "\\endhead",
        f"\\midrule\\multicolumn{{{ncol}}}{{r}}{{\\emph{{continued on the next page}}}}\\\\",
        "\\endfoot",
        "\\endlastfoot",
    ]
    for i, r in enumerate(rows):
        beta = r["beta"] if r["beta"] != "—" else "--"
        if i in marks:
            beta = f"--\\textsuperscript{{{marks[i]}}}"
        cells = [
            _latex_escape(r["format"]),
            r["n"],
            r["form"],
            _latex_escape(r["scale"]),
            _latex_escape(r["start"]),
            beta,
            r["a"] if r["a"] != "—" else "--",
            r["b"] if r["b"] != "—" else "--",
            {"—": "--", "nan": "NaN", "inf": "$\\infty$"}.get(r["c_repr"], r["c_repr"]),
            _latex_sci(r["kappa"]),
            r["bias"] if r["bias"] != "—" else "--",
        ]
        lines.append(" & ".join(cells) + " \\\\")
    lines.append("\\bottomrule")
    for k, text in enumerate(reasons, 1):
        lines.append(
            f"\\multicolumn{{{ncol}}}{{p{{0.95\\linewidth}}}}{{\\footnotesize\\textsuperscript{{{k}}} "
            f"{_latex_escape(text)}}}\\\\"
        )
    lines.append("\\end{longtable}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pasa-alpha`` and ``python -m pasa_theory``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.all:
        formats = args.formats or list(ALL_FORMATS)
        blocks = args.blocks or list(ALL_BLOCKS)
        forms = args.forms or ["paper", "kappa"]
    else:
        formats = args.formats or ["fp16"]
        blocks = args.blocks or [128]
        forms = args.forms or ["paper"]
    starts: list[Fraction | str] | None = None
    if args.starts:
        starts = []
        for s in args.starts:
            try:
                r = as_real(s, "--start")
                check_open_unit(r, "--start")
            except (TypeError, ValueError) as exc:
                parser.error(str(exc))
            starts.append(r.exact if r.exact is not None else s)
    scale = args.scale
    if scale is not None and scale.strip().lower() in ("none", "1"):
        scale = None

    try:
        if scale is not None:
            check_positive(as_real(scale, "--scale"), "--scale")
        if args.vector_format is not None:
            get_format(args.vector_format, argname="--vector-format")
        selection_window(args.max_bias, args.max_gain)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc).replace("max_bias", "--max-bias").replace("max_gain", "--max-gain"))
    t0 = time.perf_counter()
    rows = compute_rows(
        formats,
        blocks,
        forms,
        scale=scale,
        starts=starts,
        vector_format=args.vector_format,
        digits=args.digits,
        select=args.select,
        max_bias=args.max_bias,
        max_gain=args.max_gain,
    )
    elapsed = time.perf_counter() - t0
    render = {"text": _render_text, "csv": _render_csv, "latex": _render_latex}[args.output_format]
    sys.stdout.write(render(rows, args.caption))
    if args.time:
        sys.stderr.write(f"pasa-alpha: {len(rows)} rows in {elapsed:.2f} s\n")
    single = len(formats) == len(blocks) == len(forms) == 1
    missing = [r for r in rows if r.get(NOTE_COLUMN)]
    if single and missing:
        for row in missing:
            sys.stderr.write(
                f"pasa-alpha: no beta for {row['format']}, n = {row['n']}, start {row['start']}: "
                f"{row[NOTE_COLUMN]}\n"
            )
        return 1
    return 0
