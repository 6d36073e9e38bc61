"""``python -m pasa_npu.figures``: write the figures into a folder."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from ._registry import FIGURES, make_figure
from ._sweep import SweepOptions


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pasa_npu.figures --all --out figures [--quick | --from-csv DIR] [--only NAME ...] [--list]
    [--sweep-data DIR] [--executor E] [--workers N] [--scheduler ADDR] [--spec TOML]``."""
    p = argparse.ArgumentParser(
        prog="python -m pasa_npu.figures",
        description="Write the paper figures (<name>.pdf, .png and .csv) into a folder. The figures whose data "
        "is a sweep of kernel runs (marked 'sweep' by --list) run their spec's points through pasa-sweep first "
        "(docs/sweeps.md).",
    )
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--all", action="store_true", help="every figure")
    sel.add_argument(
        "--only", action="append", metavar="NAME", help="one figure (repeatable, or comma-separated)"
    )
    sel.add_argument(
        "--cited", action="store_true", help="only the figures the README cites (the committed ones)"
    )
    p.add_argument("--list", action="store_true", help="list the figures and exit")
    p.add_argument(
        "--out", default="figures", help="output folder (default: figures, relative to the current directory)"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small shapes (as PASA_QUICK=1)")
    mode.add_argument(
        "--from-csv",
        metavar="DIR",
        help="redraw from DIR/<name>.csv (written by an earlier run) instead of computing",
    )
    sw = p.add_argument_group("sweeps (figures whose data is a sweep of kernel runs)")
    sw.add_argument(
        "--sweep-data",
        metavar="DIR",
        help="keep each sweep's Parquet dataset in DIR/<figure>/ (resumable: finished points are not rerun); "
        "default: a temporary folder",
    )
    sw.add_argument("--executor", choices=("serial", "processes", "dask"), default="serial")
    sw.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    sw.add_argument("--scheduler", default=None, help="address of a running dask scheduler (tcp://host:8786)")
    sw.add_argument(
        "--spec",
        metavar="TOML",
        help="run this spec instead of the committed one (with one --only figure), e.g. the study at a larger size",
    )
    args = p.parse_args(argv)
    if args.list:
        for spec in FIGURES.values():
            flags = ("cited " if spec.cited else "      ") + ("sweep " if spec.sweep else "      ")
            print(f"{spec.name:22} {flags}{spec.notebook:24} {spec.description}")
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
    if args.spec is not None and (len(names) != 1 or not FIGURES[names[0]].sweep):
        p.error("--spec needs exactly one --only figure whose data is a sweep")
    if args.from_csv and (args.sweep_data or args.spec):
        p.error("--from-csv redraws from the CSVs; it runs no sweep (drop --sweep-data and --spec)")
    try:
        options = SweepOptions(
            data=args.sweep_data,
            spec=args.spec,
            executor=args.executor,
            workers=args.workers,
            scheduler=args.scheduler,
            progress=True,
        )
    except (ValueError, TypeError) as e:
        p.error(str(e))
    for name in names:
        t0 = time.perf_counter()
        if args.from_csv:
            res = make_figure(name, out=args.out, from_csv=args.from_csv)
        else:
            res = make_figure(
                name,
                quick=True if args.quick else None,
                out=args.out,
                data=options if FIGURES[name].sweep else None,
            )
        print(
            f"{name}: {', '.join(str(x) for x in res.paths)} ({time.perf_counter() - t0:.1f} s)", flush=True
        )
    return 0
