"""Figure results, the CSV format (with the data set-up in its header), saving, and the runner.

A figure's CSV starts with ``# key: value`` comment lines (the data set-up: shape, heads, seed, dtype,
block sizes, methods, mode), then one header row, then the rows the drawing reads. :func:`read_csv`
skips the comment lines, so any figure can be redrawn from its committed CSV alone
(``from_csv=``; ``python -m pasa_npu.figures --from-csv figures``).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from ._style import PDF_METADATA, PNG_METADATA, rc

__all__ = [
    "FIGURES_DIR",
    "FigureResult",
    "quick_mode",
    "write_csv",
    "read_csv",
    "save_figure",
    "run_figure",
    "Row",
]

#: The repository's ``figures/`` folder, found from this package's location (not the working
#: directory): where ``make figures`` writes and the notebooks save when asked.
FIGURES_DIR = Path(__file__).resolve().parents[2] / "figures"

#: One CSV row: column name → value (``None`` for an empty cell).
Row = dict[str, Any]
S = TypeVar("S")


def quick_mode(quick: bool | None = None) -> bool:
    """``quick`` if given, else whether ``PASA_QUICK`` is set to something other than ``""``/``0``."""
    if quick is not None:
        if not isinstance(quick, bool):
            raise TypeError(f"quick must be a bool or None, got {type(quick).__name__}")
        return quick
    return os.environ.get("PASA_QUICK", "").strip().lower() not in ("", "0", "false", "no")


@dataclass
class FigureResult(Generic[S]):
    """A drawn figure, the rows behind it, its data set-up and its typed summary.

    ``rows`` are the CSV rows (dicts with the keys ``columns``), ``setup`` the data set-up written as
    the CSV's comment header, ``summary`` the headline numbers derived from the rows (a dataclass
    of the figure's module), ``paths`` the files written (empty if no output folder was given).
    """

    name: str
    figure: Any
    columns: tuple[str, ...]
    rows: list[Row]
    summary: S
    setup: dict[str, str] = field(default_factory=dict)
    paths: tuple[Path, ...] = ()
    quick: bool = False

    def png_bytes(self, dpi: int = 150) -> bytes:
        buf = io.BytesIO()
        with rc():
            self.figure.savefig(buf, format="png", dpi=dpi, metadata=PNG_METADATA)
        return buf.getvalue()

    def _repr_png_(self) -> bytes:  # shown by Jupyter
        return self.png_bytes()

    def select(self, **where: Any) -> list[Row]:
        """The rows whose fields equal the given values."""
        return [r for r in self.rows if all(r.get(k) == v for k, v in where.items())]


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


def write_csv(
    path: str | Path, columns: Sequence[str], rows: Iterable[Row], setup: Mapping[str, str] | None = None
) -> Path:
    """Write rows as CSV with fixed formatting (10 significant digits, ``\\n`` line ends), preceded by
    one ``# key: value`` line per entry of ``setup``."""
    path = Path(path)
    with path.open("w", newline="") as fh:
        for key, value in (setup or {}).items():
            text = " ".join(str(value).split())
            fh.write(f"# {key}: {text}\n")
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([_fmt(r.get(c)) for c in columns])
    return path


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def read_csv(path: str | Path) -> tuple[dict[str, str], tuple[str, ...], list[Row]]:
    """``(setup, columns, rows)`` of a figure CSV written by :func:`write_csv`.

    Comment lines (``#``) at the top are the set-up. A column whose non-empty cells all parse as
    numbers is numeric (``int`` where the text is an integer, else ``float``; an empty cell is
    ``None``); any other column keeps its text (an empty cell is ``""``).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"from_csv: no such file {path}")
    with path.open(newline="") as fh:
        lines = fh.read().splitlines()
    setup, columns, rows = _parse(lines)
    if not columns:
        raise ValueError(f"from_csv: {path} has no header row")
    return setup, columns, rows


def _parse(lines: list[str]) -> tuple[dict[str, str], tuple[str, ...], list[Row]]:
    setup: dict[str, str] = {}
    body = 0
    while body < len(lines) and lines[body].startswith("#"):
        key, _, value = lines[body][1:].strip().partition(":")
        setup[key.strip()] = value.strip()
        body += 1
    table = list(csv.reader(lines[body:]))
    if not table:
        return setup, (), []
    columns = tuple(table[0])
    raw = [dict(zip(columns, r)) for r in table[1:]]
    numeric = set()
    for c in columns:
        try:
            [_number(r[c]) for r in raw if r[c] != ""]
        except ValueError:
            continue
        numeric.add(c)
    rows = [
        {c: ((_number(r[c]) if r[c] != "" else None) if c in numeric else r[c]) for c in columns} for r in raw
    ]
    return setup, columns, rows


def as_written(columns: Sequence[str], rows: Iterable[Row]) -> list[Row]:
    """The rows as :func:`read_csv` returns them after :func:`write_csv` (10 significant digits, typed
    per column): what every summary and drawing reads, so that a figure computed now and one redrawn
    from its CSV are the same bytes."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_fmt(r.get(c)) for c in columns])
    return _parse(buf.getvalue().splitlines())[2]


def save_figure(result: FigureResult[Any], out: str | Path) -> tuple[Path, ...]:
    """Write ``<name>.pdf``, ``<name>.png`` and ``<name>.csv`` into ``out`` (created if missing)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pdf, png, csv_ = (out / f"{result.name}.{ext}" for ext in ("pdf", "png", "csv"))
    with rc():
        result.figure.savefig(pdf, format="pdf", metadata=PDF_METADATA)
        result.figure.savefig(png, format="png", dpi=300, metadata=PNG_METADATA)
    write_csv(csv_, result.columns, result.rows, result.setup)
    result.paths = (pdf, png, csv_)
    return result.paths


#: ``compute(quick) -> (rows, setup)``: runs the experiment.
Compute = Callable[[bool], tuple[list[Row], dict[str, str]]]


def run_figure(
    name: str,
    *,
    columns: Sequence[str],
    compute: Compute,
    summarize: Callable[[list[Row]], S],
    draw: Callable[[list[Row], S], Any],
    quick: bool | None,
    out: str | Path | None,
    from_csv: str | Path | None,
) -> FigureResult[S]:
    """Compute (or read from ``from_csv``: a CSV file, or a folder holding ``<name>.csv``), summarise,
    draw, and save into ``out`` if given. The summary and the drawing read the rows only, as the CSV
    holds them (:func:`as_written`)."""
    if from_csv is not None:
        if quick is not None:
            raise ValueError("quick: give either quick or from_csv (the CSV states its own mode)")
        path = Path(from_csv)
        if path.is_dir():
            path = path / f"{name}.csv"
        setup, found, rows = read_csv(path)
        if tuple(found) != tuple(columns):
            raise ValueError(
                f"from_csv: {path} has the columns {found}, figure {name!r} reads {tuple(columns)}"
            )
        mode = setup.get("mode", "full")
        q = mode == "quick"
        if setup.get("figure", name) != name:
            raise ValueError(f"from_csv: {path} holds figure {setup.get('figure')!r}, not {name!r}")
    else:
        q = quick_mode(quick)
        computed, extra = compute(q)
        rows = as_written(columns, computed)
        setup = {"figure": name, "mode": "quick" if q else "full", **extra}
    summary = summarize(rows)
    with rc():
        fig = draw(rows, summary)
    result = FigureResult(name, fig, tuple(columns), rows, summary, setup=setup, quick=q)
    if out is not None:
        save_figure(result, out)
    return result
