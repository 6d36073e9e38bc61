"""Figure data through ``pasa-sweep``: each kernel-run figure's data is a sweep spec, run into a
resumable Parquet dataset (:mod:`pasa_npu.sweep`) and read back as rows.

A sweep-backed figure (:data:`SWEEP_FIGURES`) has a spec per mode in ``examples/figures/``
(``<name>.toml`` for the committed figure, ``quick/<name>.toml`` for the quick mode; the method
comparison's full spec is ``examples/reference_grid.toml``, the predicted-vs-measured one
``examples/predicted_vs_measured.toml``). Its compute step expands the spec (or
the spec given by the caller), runs the points not yet in ``data/<name>/`` with the chosen executor
(serial by default; joblib processes or Dask, as ``pasa-sweep``), reads the rows of exactly those
points back and turns them into the figure's table. Without ``data`` the points go to a temporary
folder that is deleted afterwards. Guide: docs/sweeps.md, "Figures".
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import sweep as _sweep

__all__ = [
    "SPECS_DIR",
    "SWEEP_FIGURES",
    "SweepOptions",
    "spec_path",
    "figure_points",
    "open_runner",
    "read_points",
    "sweep_options",
]

#: Where the figure specs live: the repository's ``examples/figures/`` (found from the package).
SPECS_DIR = Path(__file__).resolve().parents[2] / "examples" / "figures"

#: Sweep-backed figures → (full-mode spec, quick-mode spec).
SWEEP_FIGURES: dict[str, tuple[Path, Path]] = {
    "method_comparison": (
        SPECS_DIR.parent / "reference_grid.toml",
        SPECS_DIR / "quick" / "method_comparison.toml",
    ),
    "beta_sweep": (SPECS_DIR / "beta_sweep.toml", SPECS_DIR / "quick" / "beta_sweep.toml"),
    "overflow_frontier": (
        SPECS_DIR / "overflow_frontier.toml",
        SPECS_DIR / "quick" / "overflow_frontier.toml",
    ),
    "predicted_vs_measured": (
        SPECS_DIR.parent / "predicted_vs_measured.toml",
        SPECS_DIR / "quick" / "predicted_vs_measured.toml",
    ),
}

_EXECUTORS = ("serial", "processes", "dask")

#: Appended to the docstrings of the sweep-backed figure functions.
SWEEP_DOC = """
    ``data``: the figure's data is a ``pasa-sweep`` run of its spec (:func:`spec_path`; quick or full
    mode); ``data`` is a folder keeping the Parquet dataset (``<data>/<name>/``, resumable) or a
    :class:`SweepOptions` (folder, a replacement spec, executor, workers, Dask scheduler); ``None``:
    a temporary folder, serially. The CSV's set-up is read off the spec's points.
"""


@dataclass(frozen=True)
class SweepOptions:
    """Where and how a sweep-backed figure runs its points.

    ``data``: root folder of the figure datasets (the points go to ``data/<figure>/``; ``None``: a
    temporary folder); ``spec``: a TOML spec replacing the committed one (e.g. the same study at a
    larger size); ``executor``, ``workers``, ``scheduler``: as ``pasa-sweep``; ``progress``: a tqdm bar.
    """

    data: str | Path | None = None
    spec: str | Path | None = None
    executor: str = "serial"
    workers: int | None = None
    scheduler: str | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        if self.executor not in _EXECUTORS:
            raise ValueError(f"executor must be one of {_EXECUTORS}, got {self.executor!r}")
        if self.workers is not None and (
            isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1
        ):
            raise ValueError(f"workers must be a positive int or None, got {self.workers!r}")
        if self.scheduler is not None and self.executor != "dask":
            raise ValueError("scheduler is only used with executor='dask'")
        for name in ("data", "spec"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, (str, Path)):
                raise TypeError(f"{name} must be a path or None, got {type(v).__name__}")


def spec_path(name: str, quick: bool) -> Path:
    """The committed spec of figure ``name`` in quick or full mode."""
    if name not in SWEEP_FIGURES:
        raise ValueError(f"name: {name!r} is not a sweep-backed figure; those are {', '.join(SWEEP_FIGURES)}")
    return SWEEP_FIGURES[name][1 if quick else 0]


def figure_points(name: str, quick: bool, spec: str | Path | None = None) -> tuple[list[dict], str | None]:
    """The resolved points of the figure's spec (``spec`` if given, else the committed one), and the
    spec's file name when it is not the committed one (recorded in the CSV's set-up)."""
    path = Path(spec) if spec is not None else spec_path(name, quick)
    pts = _sweep.load_spec(path).points()
    committed = spec is None or Path(spec).resolve() == spec_path(name, quick).resolve()
    return pts, None if committed else path.name


def read_points(out: str | Path, points: Sequence[dict]) -> list[dict]:
    """The result rows of ``points`` from the dataset under ``out``, in the order of ``points``
    (:func:`pasa_npu.sweep.load_rows`: a null, e.g. ``beta`` of a method without a shift, stays
    ``None`` and a measured NaN stays NaN). Raises if a point is missing or failed, naming the first
    failure."""
    hashes = [_sweep.point_hash(p) for p in points]
    try:
        rows = _sweep.load_rows(out, hashes)
    except ValueError as e:
        raise ValueError(f"data: {e}") from None
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        raise ValueError(
            f"data: {len(bad)} of {len(points)} points in {out} failed; first: {bad[0]['error']}"
            " (rerun with pasa-sweep --retry-failed)"
        )
    return rows


Runner = Callable[[Sequence[dict]], list[dict]]


@contextlib.contextmanager
def open_runner(name: str, options: SweepOptions) -> Iterator[Runner]:
    """A function ``run(points) -> rows`` that runs the points missing from ``<data>/<name>/`` with
    the options' executor and returns every point's row (in order); a temporary folder if no ``data``."""
    with contextlib.ExitStack() as stack:
        if options.data is None:
            out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"pasa-{name}-")))
        else:
            out = Path(options.data) / name

        def run(points: Sequence[dict]) -> list[dict]:
            pts = list(points)
            _sweep.run(
                pts,
                out,
                executor=options.executor,
                workers=1 if options.executor == "serial" else options.workers,
                scheduler=options.scheduler,
                progress=options.progress,
                log=None if options.progress else (lambda msg: None),
            )
            return read_points(out, pts)

        yield run


def values(points: Sequence[dict], key: str) -> list[Any]:
    """The distinct values of parameter ``key`` over the points, in first-seen order."""
    return list(dict.fromkeys(p[key] for p in points))


def one(points: Sequence[dict], key: str) -> Any:
    """The value of parameter ``key`` shared by every point; ValueError if they differ."""
    vals = values(points, key)
    if len(vals) != 1:
        raise ValueError(f"spec: this figure needs one value of {key!r} over its points, got {vals}")
    return vals[0]


def fmt_list(xs: Sequence[float]) -> str:
    """``0, 10, 20`` (``%g``) for the CSV set-up."""
    return ", ".join(f"{x:g}" for x in xs)


def isnan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def sweep_options(data: str | Path | SweepOptions | None, from_csv: str | Path | None) -> SweepOptions:
    """The ``data`` argument of a sweep-backed figure as :class:`SweepOptions` (a path: its ``data``)."""
    if data is not None and from_csv is not None:
        raise ValueError("data: give either data (a sweep) or from_csv (a CSV), not both")
    if data is None:
        return SweepOptions()
    if isinstance(data, SweepOptions):
        return data
    if not isinstance(data, (str, Path)):
        raise TypeError(f"data must be a folder, a SweepOptions or None, got {type(data).__name__}")
    return SweepOptions(data=data)
