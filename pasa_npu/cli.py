"""``pasa-verify`` (also ``python -m pasa_npu`` and ``make demo``): PASA and its baselines against the
float64 golden.

The default run is the public reference script's default case: uniform data, mean 30, amplitude
0.5, batch 1, 28 query heads, 4 KV heads, S1 = S2 = 1407, d = 128, seed 2024724, fp16 inputs. It
prints one table (method × {β, RMSE, relative RMSE, max error, non-finite count, wall time}), a
legend of its columns and a one-line conclusion. Wall times are the best of ``--repeat`` runs after
a warm-up run. ``--grid`` sweeps both distributions over mean × amplitude; ``--predict`` puts the
rounding-error model's predictions beside the measured errors. Files (CSV + JSON) are written only
to the directory given by ``--out``.

Exit status: 0 on success, 2 on bad arguments (argparse, or a ``ValueError``/``TypeError`` of the
library, whose message is printed as ``pasa-verify: error: ...``), 2 when a method needs hardware
that is not there.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Sequence

import torch

from . import data as _data
from .device import resolve_device
from .harness import GRID_AMPLITUDES, GRID_MEANS, environment_info, run_case, run_grid, write_records
from .methods import DEFAULT_METHODS, METHODS, get_method, run_method
from .precision import DTYPES, PRESETS
from .predict_report import main as predict_main

__all__ = ["build_parser", "main", "format_table", "legend", "conclusion"]

_DTYPES = {name: DTYPES[name] for name in ("fp16", "bf16", "fp32")}  # the input formats offered

#: what each census stage means, for the legend (pipeline order, see :mod:`pasa_npu.metrics`)
STAGE_MEANING = {
    "input": "the inputs themselves",
    "scores": "the score tile (QKᵀ, scaled before or after rounding as the method does)",
    "shift": "PASA's shift and recovery",
    "exp": "the exponentials",
    "row_sum": "the softmax row sums ℓ",
    "accumulator": "the unnormalised output accumulator O",
    "output": "the final division O/ℓ",
}


class _HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` only where the help text does not state the default itself and a
    default exists (no "default: None", no doubled defaults)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or action.default in (None, False, argparse.SUPPRESS)
            or action.option_strings == []
            or isinstance(action.default, bool)
        ):
            return text
        value = action.default
        if isinstance(value, (list, tuple)):
            return text + " (default: " + ",".join(f"{x:g}" for x in value) + ")"
        return text + " (default: %(default)s)"


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _methods(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected at least one method name")
    for n in names:
        try:
            get_method(n)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return names


def build_parser() -> argparse.ArgumentParser:
    method_help = "; ".join(f"{n}: {m.description}" for n, m in METHODS.items())
    p = argparse.ArgumentParser(
        prog="pasa-verify",
        description=(
            "Run PASA and its baselines on the reference benchmark's data and compare them with the "
            "float64 golden attention. Default: the reference script's default case (uniform, mean 30, "
            "amplitude 0.5, 1x28/4 heads, S=1407, d=128, seed 2024724). Nothing is written to disk "
            "unless --out is given."
        ),
        epilog=(
            "Relative RMSE is RMSE / RMS(V), as in the reference script; --format csv/json and the files "
            "also give RMSE / RMS(golden). Methods: "
            + method_help
            + "; pasa:<preset> runs PASA at a preset ("
            + ", ".join(PRESETS)
            + "). Exit status: 0 on success, 2 on bad arguments or a method that needs "
            "absent hardware."
        ),
        formatter_class=_HelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument("--dist", choices=_data.DISTRIBUTIONS, default="uniform", help="input distribution")
    g.add_argument("--mean", type=float, default=30.0, help="mean of Q, K and V")
    g.add_argument(
        "--amplitude",
        type=float,
        default=None,
        help="half-width (uniform) or outlier standard deviation (hybrid); default: 0.5 for uniform, "
        "10 for hybrid, as in the reference script",
    )
    g.add_argument("--batch", type=_positive_int, default=1, help="batch size B")
    g.add_argument("--heads", type=_positive_int, default=28, help="query heads")
    g.add_argument(
        "--kv-heads", type=_positive_int, default=4, help="key/value heads (GQA groups = heads / kv-heads)"
    )
    g.add_argument("--seq-q", type=_positive_int, default=1407, help="query length S1")
    g.add_argument("--seq-kv", type=_positive_int, default=1407, help="key/value length S2")
    g.add_argument("--head-dim", type=_positive_int, default=128, help="head dimension d of Q, K and V")
    g.add_argument(
        "--seed",
        type=int,
        default=_data.REFERENCE_SEED,
        help="seed of the data generator (the reference script's)",
    )
    g.add_argument(
        "--input-dtype", choices=list(_DTYPES), default="fp16", help="dtype the inputs are rounded to"
    )
    g = p.add_argument_group("method")
    g.add_argument(
        "--methods",
        type=_methods,
        default=None,
        help="comma-separated method names; default: "
        + ",".join(DEFAULT_METHODS)
        + ", plus the NPU kernels on an NPU",
    )
    g.add_argument(
        "--precision", choices=sorted(PRESETS), default="npu_fp16", help="preset of the 'pasa' method"
    )
    g.add_argument(
        "--beta",
        type=float,
        default=None,
        help="PASA's beta in (0, 1); default: the preset's, or the optimum that pasa_theory selects",
    )
    g.add_argument(
        "--block-q", type=_positive_int, default=128, help="query rows per chunk (speed and memory only)"
    )
    g.add_argument("--block-kv", type=_positive_int, default=128, help="KV block length n")
    g.add_argument("--scale", type=float, default=None, help="softmax scale; default: 1/sqrt(head_dim)")
    g.add_argument("--causal", action="store_true", help="bottom-right causal mask")
    g.add_argument("--device", default="auto", help="auto (npu, then cuda, then cpu), cpu, cuda, npu")
    g.add_argument(
        "--out-dtype",
        choices=["input", "fp16", "bf16", "fp32", "fp64"],
        default="input",
        help="dtype of every method's output (input: the input dtype, as the reference script)",
    )
    g = p.add_argument_group("sweep, prediction and output")
    g.add_argument(
        "--grid",
        action="store_true",
        help="sweep both distributions over --means x --amplitudes, with a progress bar",
    )
    g.add_argument("--means", type=_floats, default=list(GRID_MEANS), help="grid means")
    g.add_argument("--amplitudes", type=_floats, default=list(GRID_AMPLITUDES), help="grid amplitudes")
    g.add_argument("--dists", default=",".join(_data.DISTRIBUTIONS), help="grid distributions")
    g.add_argument(
        "--predict",
        action="store_true",
        help="also compute the four error products of pasa_theory.predict (rigorous, probabilistic and "
        "a-priori bounds, RMSE estimate) and the hull cap, and print them beside the measured errors",
    )
    g.add_argument(
        "--predict-rows",
        type=_nonnegative_int,
        default=64,
        help="with --predict: query rows per head that are measured and predicted, evenly spaced "
        "(rows are independent without a mask, so they sample the case; causal runs use every "
        "row); 0 = every row (minutes at the default shape)",
    )
    g.add_argument(
        "--no-rigorous",
        action="store_true",
        help="with --predict: skip the rigorous and probabilistic bounds (pasa_theory.rigorous.certify, "
        "about 100-850 kernel runs' worth of work for all rows); the a-priori bound and the estimate remain",
    )
    g.add_argument(
        "--repeat",
        type=_positive_int,
        default=3,
        help="single case: wall time = best of this many runs after one warm-up run",
    )
    g.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="write the table as CSV and JSON (case/grid/predict.csv and .json) into DIR; "
        "default: write nothing",
    )
    g.add_argument(
        "--save", action="store_true", help=argparse.SUPPRESS
    )  # kept for old command lines; needs --out
    g.add_argument("--format", choices=["text", "csv", "json"], default="text", help="stdout format")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _nonfinite_cell(r: dict, numel: int | None) -> str:
    n = r.get("nonfinite")
    if n is None:
        return "-"
    text = str(n)
    if n and numel and n == numel:
        text += " (all"
        text += f", first at {r['first_nonfinite_stage']})" if r.get("first_nonfinite_stage") else ")"
    elif n and r.get("first_nonfinite_stage"):
        text += f" (first at {r['first_nonfinite_stage']})"
    return text


def format_table(records: list[dict], columns: Sequence[str] | None = None, numel: int | None = None) -> str:
    """A fixed-width text table of harness records (``numel``: output elements per method, to mark
    "all")."""
    cols = list(columns or ["method", "beta", "rmse", "rel_rmse", "max_abs_err", "nonfinite", "seconds"])
    heads = {
        "rel_rmse": "rel RMSE (/RMS V)",
        "max_abs_err": "max |err|",
        "nonfinite": "non-finite",
        "seconds": "time [s]",
        "rmse": "RMSE",
        "beta": "beta",
        "rel_rmse_out": "rel RMSE (/RMS out)",
        "first_nonfinite_stage": "first inf/NaN at",
    }

    def fmt(key: str, v) -> str:
        if v is None:
            return "-"
        if key == "beta":
            return f"{v:.10f}"
        if key == "seconds":
            return f"{v:.3f}"
        if isinstance(v, float):
            return f"{v:.3e}" if math.isfinite(v) else str(v)
        return str(v)

    def cell(c: str, r: dict) -> str:
        return _nonfinite_cell(r, numel) if c == "nonfinite" else fmt(c, r.get(c))

    rows = [[cell(c, r) for c in cols] for r in records]
    widths = [max(len(heads.get(c, c)), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    line = "  ".join(heads.get(c, c).ljust(w) for c, w in zip(cols, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in rows]
    return "\n".join(out)


def legend(records: list[dict], numel: int, repeat: int, device: torch.device) -> str:
    """What the columns of :func:`format_table` mean, for the records at hand."""
    lines = [
        "legend:",
        "  beta        PASA's shift coefficient (β in M = I − (β/n)·J), '-' for methods without a shift",
        "  RMSE        root mean square of (output − golden); golden = softmax attention in float64 on the same "
        "rounded inputs",
        "  rel RMSE    RMSE / RMS(V), the reference script's normalisation",
        "  max |err|   largest |output − golden| over all elements",
        f"  non-finite  number of inf/NaN output elements, of {numel} per method; 'all' = every element; "
        "'first at S' = the earliest kernel stage that produced one",
    ]
    stages = [r.get("first_nonfinite_stage") for r in records if r.get("first_nonfinite_stage")]
    for s in dict.fromkeys(stages):
        lines.append(f"              stage {s!r} = {STAGE_MEANING.get(s, s)}")
    lines.append(
        f"  time [s]    best of {repeat} runs after a warm-up run, on {device}: the cost of emulating every "
        "rounding with torch operations, not the speed of a fused kernel"
    )
    return "\n".join(lines)


def conclusion(records: list[dict], numel: int | None = None) -> str:
    """One line: which methods overflowed, and how PASA compares with the fp16 baselines."""
    bad = [r for r in records if r.get("nonfinite")]
    good = [r for r in records if not r.get("nonfinite") and math.isfinite(r.get("rel_rmse", math.nan))]
    parts = []
    for r in bad:
        count = f"all {r['nonfinite']}" if numel and r["nonfinite"] == numel else str(r["nonfinite"])
        parts.append(
            f"{r['method']} gives inf/NaN in {count} output elements, first at the "
            f"{r.get('first_nonfinite_stage') or 'output'} stage"
        )
    if not bad:
        parts.append("every method is finite")
    pasa = next((r for r in good if r["method"] == "pasa"), None)
    base = [r for r in good if r["method"] in ("fa_qk", "fa_q", "fa_naive") and r.get("rel_rmse", 0) > 0]
    if pasa is not None:
        text = f"pasa is finite with rel RMSE {pasa['rel_rmse']:.2e}"
        if base:
            text += (
                " ("
                + ", ".join(f"{pasa['rel_rmse'] / r['rel_rmse']:.2f}x that of {r['method']}" for r in base)
                + ")"
            )
        parts.append(text)
    if good:
        best = min(good, key=lambda r: r["rel_rmse"])
        if pasa is None or best is not pasa:
            parts.append(f"lowest rel RMSE: {best['method']} {best['rel_rmse']:.2e}")
    return "conclusion: " + "; ".join(parts) + "."


def _best_times(records: list[dict], q, k, v, methods: Sequence[str], repeat: int, case_kw: dict) -> None:
    """Replace each record's cold wall time by the best of ``repeat`` runs (the measured run was the warm-up)."""
    dev = resolve_device(case_kw["device"])
    qd, kd, vd = (t.to(dev) for t in (q, k, v))
    kw = {k_: x for k_, x in case_kw.items() if k_ != "device"}
    for rec, name in zip(records, methods):
        best = rec["seconds"] if repeat == 1 else math.inf
        for _ in range(repeat if repeat > 1 else 0):
            t0 = time.perf_counter()
            run_method(name, qd, kd, vd, **kw)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        rec["seconds"] = best


class _UsageError(Exception):
    pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.save and args.out is None:
        parser.error("--save needs --out DIR (files are written only where --out says)")
    try:
        return _run(args)
    except _UsageError as e:
        print(f"pasa-verify: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as e:
        # the library's own argument checks (β, scale, shapes, devices): the same message as from Python
        print(f"pasa-verify: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    methods = args.methods
    if methods is None:
        methods = list(DEFAULT_METHODS) + (["npu_fia_ip0", "npu_fia_ip1"] if device.type == "npu" else [])
    for name in methods:
        if get_method(name).npu_only and device.type != "npu":
            raise _UsageError(f"method {name} needs an Ascend NPU (device is {device})")
    out_dtype = None if args.out_dtype == "input" else {**_DTYPES, "fp64": torch.float64}[args.out_dtype]
    case_kw = dict(
        precision=args.precision,
        beta=args.beta,
        block_q=args.block_q,
        block_kv=args.block_kv,
        scale=args.scale,
        is_causal=args.causal,
        device=device,
        out_dtype=out_dtype,
    )
    shape = dict(
        batch=args.batch,
        heads=args.heads,
        kv_heads=args.kv_heads,
        seq_q=args.seq_q,
        seq_kv=args.seq_kv,
        head_dim=args.head_dim,
    )
    dtype = _DTYPES[args.input_dtype]
    meta = dict(
        shape=shape,
        seed=args.seed,
        input_dtype=args.input_dtype,
        methods=methods,
        precision=args.precision,
        block_q=args.block_q,
        block_kv=args.block_kv,
        causal=args.causal,
    )
    if args.predict:
        return predict_main(args, methods, case_kw, shape, dtype, meta)
    if args.grid:
        dists = [d.strip() for d in args.dists.split(",") if d.strip()]
        records = run_grid(
            methods,
            dists=dists,
            means=args.means,
            amplitudes=args.amplitudes,
            shape=shape,
            seed=args.seed,
            input_dtype=dtype,
            progress=not args.no_progress,
            **case_kw,
        )
        cols = [
            "dist",
            "mean",
            "amplitude",
            "method",
            "rmse",
            "rel_rmse",
            "max_abs_err",
            "nonfinite",
            "seconds",
        ]
        _emit(records, cols, args.format, numel=args.batch * args.heads * args.seq_q * args.head_dim)
        if args.out is not None:
            csv_path, json_path = write_records(records, args.out, "grid", meta)
            print(f"wrote {csv_path} and {json_path}", file=sys.stderr)
        else:
            print("pasa-verify: not saved (--out DIR writes grid.csv and grid.json)", file=sys.stderr)
        return 0
    amplitude = args.amplitude if args.amplitude is not None else (0.5 if args.dist == "uniform" else 10.0)
    q, k, v = _data.make_qkv(
        args.dist, mean=args.mean, amplitude=amplitude, seed=args.seed, dtype=dtype, **shape
    )
    records = run_case(
        q, k, v, methods, extra=dict(dist=args.dist, mean=args.mean, amplitude=amplitude), **case_kw
    )
    _best_times(records, q, k, v, methods, args.repeat, case_kw)
    numel = args.batch * args.heads * args.seq_q * args.head_dim
    if args.format == "text":
        env = environment_info()
        print(
            f"case: {args.dist} mean={args.mean:g} amplitude={amplitude:g} shape B x H/Hkv x S1 x S2 x d = "
            f"{args.batch}x{args.heads}/{args.kv_heads}x{args.seq_q}x{args.seq_kv}x{args.head_dim} seed={args.seed} "
            f"inputs={args.input_dtype} device={device} torch={env['torch']} threads={env['threads']}"
        )
    _emit(records, None, args.format, numel=numel)
    if args.format == "text":
        print()
        print(legend(records, numel, args.repeat, device))
        print(conclusion(records, numel))
    if args.out is not None:
        csv_path, json_path = write_records(
            records,
            args.out,
            "case",
            dict(
                meta,
                mean=args.mean,
                amplitude=amplitude,
                dist=args.dist,
                timing=f"best of {args.repeat} after a warm-up",
            ),
        )
        print(f"wrote {csv_path} and {json_path}", file=sys.stderr)
    return 0


def _emit(records: list[dict], cols: Sequence[str] | None, fmt: str, numel: int | None = None) -> None:
    if fmt == "text":
        print(format_table(records, cols, numel=numel))
    elif fmt == "csv":
        keys = list(dict.fromkeys(k for r in records for k in r))
        w = csv.DictWriter(sys.stdout, fieldnames=keys)
        w.writeheader()
        w.writerows(records)
    else:
        print(
            json.dumps(
                [
                    {
                        k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v)
                        for k, v in r.items()
                    }
                    for r in records
                ],
                indent=1,
            )
        )


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
