"""``python -m pasa_npu.figures``: write the figures into a folder."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from ._registry import FIGURES, make_figure


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pasa_npu.figures --all --out figures [--quick | --from-csv DIR] [--only NAME ...] [--list]``."""
    p = argparse.ArgumentParser(
        prog="python -m pasa_npu.figures",
        description="Write the paper figures (<name>.pdf, .png and .csv) into a folder.",
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
    args = p.parse_args(argv)
    if args.list:
        for spec in FIGURES.values():
            print(
                f"{spec.name:22} {'cited ' if spec.cited else '      '}{spec.notebook:24} {spec.description}"
            )
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
        if args.from_csv:
            res = make_figure(name, out=args.out, from_csv=args.from_csv)
        else:
            res = make_figure(name, quick=True if args.quick else None, out=args.out)
        print(
            f"{name}: {', '.join(str(x) for x in res.paths)} ({time.perf_counter() - t0:.1f} s)", flush=True
        )
    return 0
