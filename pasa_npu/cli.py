"""``pasa-verify`` (also ``python -m pasa_npu``): PASA and its baselines against the float64 golden.

The default run is the public reference script's default case: uniform data, mean 30, amplitude
0.5, batch 1, 28 query heads, 4 KV heads, S1 = S2 = 1407, d = 128, seed 2024724, fp16 inputs. It
prints one table: method × {β, RMSE, relative RMSE, max error, non-finite count, wall time}.
``--grid`` sweeps both distributions over mean × amplitude and writes CSV and JSON.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence

import torch

from . import data as _data
from .device import resolve_device
from .harness import GRID_AMPLITUDES, GRID_MEANS, environment_info, run_case, run_grid, write_records
from .methods import DEFAULT_METHODS, METHODS, get_method, method_names
from .precision import PRESETS
from .predict_report import main as predict_main

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _methods(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
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
            "amplitude 0.5, 1x28/4 heads, S=1407, d=128, seed 2024724)."
        ),
        epilog=(
            "Relative RMSE is RMSE / RMS(V), as in the reference script; --format csv/json also give "
            "RMSE / RMS(golden). Methods: " + method_help + "; pasa:<preset> runs PASA at a preset ("
            + ", ".join(PRESETS) + ")."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument("--dist", choices=_data.DISTRIBUTIONS, default="uniform", help="input distribution")
    g.add_argument("--mean", type=float, default=30.0, help="mean of Q, K and V")
    g.add_argument("--amplitude", type=float, default=None,
                   help="half-width (uniform) or outlier standard deviation (hybrid); default 0.5 / 10 as in the script")
    g.add_argument("--batch", type=int, default=1)
    g.add_argument("--heads", type=int, default=28, help="query heads")
    g.add_argument("--kv-heads", type=int, default=4, help="key/value heads (GQA groups = heads / kv-heads)")
    g.add_argument("--seq-q", type=int, default=1407, help="query length S1")
    g.add_argument("--seq-kv", type=int, default=1407, help="key/value length S2")
    g.add_argument("--head-dim", type=int, default=128)
    g.add_argument("--seed", type=int, default=_data.REFERENCE_SEED)
    g.add_argument("--input-dtype", choices=list(_DTYPES), default="fp16", help="dtype the inputs are rounded to")
    g = p.add_argument_group("method")
    g.add_argument("--methods", type=_methods, default=None,
                   help="comma-separated method names (default: " + ",".join(DEFAULT_METHODS) + ", plus the NPU kernels on an NPU)")
    g.add_argument("--precision", choices=sorted(PRESETS), default="npu_fp16", help="preset of the 'pasa' method")
    g.add_argument("--beta", type=float, default=None, help="PASA's beta in (0,1); default: the preset's or the theory's optimum")
    g.add_argument("--block-q", type=int, default=128, help="query rows per chunk")
    g.add_argument("--block-kv", type=int, default=128, help="KV block length n")
    g.add_argument("--scale", type=float, default=None, help="softmax scale (default 1/sqrt(head_dim))")
    g.add_argument("--causal", action="store_true", help="bottom-right causal mask")
    g.add_argument("--device", default="auto", help="auto (npu, then cuda, then cpu), cpu, cuda, npu")
    g.add_argument("--out-dtype", choices=["input", "fp16", "bf16", "fp32", "fp64"], default="input",
                   help="dtype of every method's output (input: the input dtype, as the reference script)")
    g = p.add_argument_group("sweep and output")
    g.add_argument("--grid", action="store_true",
                   help="sweep both distributions over --means x --amplitudes, with a progress bar; writes CSV and JSON to --out")
    g.add_argument("--means", type=_floats, default=list(GRID_MEANS), help="grid means")
    g.add_argument("--amplitudes", type=_floats, default=list(GRID_AMPLITUDES), help="grid amplitudes")
    g.add_argument("--dists", default=",".join(_data.DISTRIBUTIONS), help="grid distributions")
    g.add_argument("--out", default="results", help="output directory for --grid (and for single runs with --save)")
    g.add_argument("--save", action="store_true", help="also write the single-case table as CSV and JSON")
    g.add_argument("--format", choices=["text", "csv", "json"], default="text", help="stdout format")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--predict", action="store_true",
                   help="also predict every error with the rounding-error model (pasa_theory.bounds) and print predicted "
                        "vs measured side by side; writes predict.csv and predict.json to --out")
    return p


def format_table(records: list[dict], columns: Sequence[str] | None = None) -> str:
    """A fixed-width text table of harness records."""
    cols = list(columns or ["method", "beta", "rmse", "rel_rmse", "max_abs_err", "nonfinite", "seconds"])
    heads = {"rel_rmse": "rel RMSE (/RMS V)", "max_abs_err": "max |err|", "nonfinite": "non-finite",
             "seconds": "time [s]", "rmse": "RMSE", "beta": "beta", "rel_rmse_out": "rel RMSE (/RMS out)",
             "first_nonfinite_stage": "first inf/NaN at"}

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
        text = fmt(c, r.get(c))
        if c == "nonfinite" and r.get("nonfinite") and r.get("first_nonfinite_stage"):
            text += f" (at {r['first_nonfinite_stage']})"
        return text

    rows = [[cell(c, r) for c in cols] for r in records]
    widths = [max(len(heads.get(c, c)), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    line = "  ".join(heads.get(c, c).ljust(w) for c, w in zip(cols, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in rows]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    methods = args.methods
    if methods is None:
        methods = list(DEFAULT_METHODS) + (["npu_fia_ip0", "npu_fia_ip1"] if device.type == "npu" else [])
    for name in methods:
        if get_method(name).npu_only and device.type != "npu":
            print(f"pasa-verify: method {name} needs an Ascend NPU (device is {device})", file=sys.stderr)
            return 2
    out_dtype = None if args.out_dtype == "input" else {**_DTYPES, "fp64": torch.float64}[args.out_dtype]
    case_kw = dict(precision=args.precision, beta=args.beta, block_q=args.block_q, block_kv=args.block_kv,
                   scale=args.scale, is_causal=args.causal, device=device, out_dtype=out_dtype)
    shape = dict(batch=args.batch, heads=args.heads, kv_heads=args.kv_heads, seq_q=args.seq_q,
                 seq_kv=args.seq_kv, head_dim=args.head_dim)
    dtype = _DTYPES[args.input_dtype]
    meta = dict(shape=shape, seed=args.seed, input_dtype=args.input_dtype, methods=methods,
                precision=args.precision, block_q=args.block_q, block_kv=args.block_kv, causal=args.causal)
    if args.predict:
        return predict_main(args, methods, case_kw, shape, dtype, meta)
    if args.grid:
        dists = [d.strip() for d in args.dists.split(",") if d.strip()]
        records = run_grid(methods, dists=dists, means=args.means, amplitudes=args.amplitudes, shape=shape,
                           seed=args.seed, input_dtype=dtype, progress=not args.no_progress, **case_kw)
        csv_path, json_path = write_records(records, args.out, "grid", meta)
        cols = ["dist", "mean", "amplitude", "method", "rmse", "rel_rmse", "max_abs_err", "nonfinite", "seconds"]
        _emit(records, cols, args.format)
        print(f"wrote {csv_path} and {json_path}", file=sys.stderr)
        return 0
    amplitude = args.amplitude if args.amplitude is not None else (0.5 if args.dist == "uniform" else 10.0)
    q, k, v = _data.make_qkv(args.dist, mean=args.mean, amplitude=amplitude, seed=args.seed, dtype=dtype, **shape)
    records = run_case(q, k, v, methods, extra=dict(dist=args.dist, mean=args.mean, amplitude=amplitude), **case_kw)
    if args.format == "text":
        env = environment_info()
        print(f"case: {args.dist} mean={args.mean} amplitude={amplitude} shape={args.batch}x{args.heads}/{args.kv_heads}"
              f"x{args.seq_q}x{args.seq_kv}x{args.head_dim} seed={args.seed} inputs={args.input_dtype} "
              f"device={device} torch={env['torch']} threads={env['threads']}")
    _emit(records, None, args.format)
    if args.save:
        csv_path, json_path = write_records(records, args.out, "case", dict(meta, mean=args.mean, amplitude=amplitude, dist=args.dist))
        print(f"wrote {csv_path} and {json_path}", file=sys.stderr)
    return 0


def _emit(records: list[dict], cols: Sequence[str] | None, fmt: str) -> None:
    if fmt == "text":
        print(format_table(records, cols))
    elif fmt == "csv":
        keys = list(dict.fromkeys(k for r in records for k in r))
        w = csv.DictWriter(sys.stdout, fieldnames=keys)
        w.writeheader()
        w.writerows(records)
    else:
        print(json.dumps([{k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
                          for r in records], indent=1))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
