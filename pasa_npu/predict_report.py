"""``pasa-verify --predict``: the rounding-error model's predictions beside the measured errors.

For every case (one input, or every cell of ``--grid``) and method, the harness measures the error
against the float64 golden (:func:`pasa_npu.harness.run_case`, with the non-finite census) and
:func:`pasa_theory.bounds.predict_many` predicts it from the same tensors. One record per (case,
method) holds both; the table is written as CSV and JSON by :func:`pasa_npu.harness.write_records`
(schema in the docstring of :mod:`pasa_theory.bounds`) and summarised by :func:`summary`:

* ``bound_ok``: the deterministic bound is at least the measured max error (cases without overflow);
* ``rmse_within_3x``: the RMSE estimate is within a factor 3 of the measured RMSE;
* ``overflow_ok``: an overflow is predicted exactly where one is measured (census or non-finite
  output), and at the same first stage.

``pasa-verify --predict`` measures and predicts 64 evenly spaced query rows per head by default
(:func:`sample_rows`; ``--predict-rows 0`` for all), which costs seconds instead of minutes at the
reference shape and says so in its output.

Bounds more than 100x above the measured maximum are listed with the term that dominates the bound
and why it is loose (:data:`LOOSE_BECAUSE`).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

import pasa_theory.bounds as pb

from . import data as _data
from .harness import GRID_AMPLITUDES, GRID_MEANS, grid_cells, run_case, write_records

__all__ = [
    "predict_case",
    "predict_grid",
    "sample_rows",
    "row_indices",
    "summary",
    "format_table",
    "format_summary",
    "LOOSE_BECAUSE",
    "main",
]

#: Why a bound dominated by a term can lie far (> 100x) above the measured maximum.
LOOSE_BECAUSE = {
    "recovery.kt": "worst case of c·mean|ΔS̃| with c = β/(1−β): the bound adds the moduli of n = 128 rounding "
    "errors of K̃ = M·K before multiplying by c, the typical block mean grows like √n; exponentiated "
    "over two blocks it saturates at the hull cap max|v − o|",
    "recovery.scores": "worst case of c times the mean of n = 128 tile roundings (aligned signs), exponentiated",
    "recovery.mean": "worst case c·u|μ̃| of the rounded pseudo-average, exponentiated; the typical error is √3 smaller "
    "and errors of nearby block means are correlated by the grid",
    "scores.kt": "|q|ᵀ·u|K̃| sums d = 128 aligned roundings of K̃ (typical: √d smaller)",
    "scores.round": "u·|score| for every key with aligned signs, exponentiated; near-tied rows hit the hull cap",
    "scores.scale": "u·|score| for every key with aligned signs, exponentiated",
    "scores.input": "|Δq'|ᵀ|k − k̄| sums d aligned roundings of the pre-scaled Q (typical: √d smaller)",
    "scores.acc": "γ_d(u₃₂)·‖q‖‖k‖: Higham's worst case for the fp32 dot products (all d errors aligned); the "
    "measured error is dominated by the fp16 output cast, far below it",
    "exp.p": "relative u on every weight with aligned signs",
    "exp.arg": "u·|s − m| for every key with aligned signs",
    "row_sum": "u per rounding of ℓ at every step, all aligned (typical: √T smaller)",
    "accumulator": "u per rounding of O at every step, all aligned (typical: √T smaller)",
    "output": "u|o| for the final rounding, attained only if o sits at a rounding midpoint",
    "pv.round": "u per tile element, all aligned",
    "pv.p_cast": "u on every weight cast for P·V, aligned",
    "absorption": "dropped contributions bounded by their full size",
    "systematic": "exact systematic error",
}

_FLOAT_OK = (int, float)


def _ratio(num: float, den: float) -> float:
    if den is None or num is None or not (math.isfinite(num) and math.isfinite(den)) or den <= 0:
        return math.nan
    return num / den


def _merge(meas: dict, pred, shape: dict, extra: dict) -> dict:
    rec = dict(meas)
    rec.update(extra)
    rec.update(pred.as_record())
    measured_ovf = bool(rec.get("nonfinite")) or rec.get("first_nonfinite_stage") is not None
    rec["meas_overflow"] = measured_ovf
    rec["overflow_ok"] = (measured_ovf == pred.overflow) and (
        not measured_ovf or rec.get("first_nonfinite_stage") == pred.overflow_stage
    )
    if measured_ovf or pred.overflow:
        rec.update(rmse_ratio=math.nan, bound_ratio=math.nan, bound_ok=None, rmse_within_3x=None)
    else:
        rr = _ratio(pred.rmse_estimate, rec["rmse"])
        br = _ratio(pred.max_abs_bound, rec["max_abs_err"])
        rec.update(
            rmse_ratio=rr,
            bound_ratio=br,
            bound_ok=bool(pred.max_abs_bound >= rec["max_abs_err"]),
            rmse_within_3x=bool(math.isfinite(rr) and 1 / 3 <= rr <= 3)
            if rec["rmse"] > 0
            else pred.rmse_estimate == 0,
        )
    rec["loose_because"] = (
        LOOSE_BECAUSE.get(pred.bound_dominant, "")
        if math.isfinite(rec["bound_ratio"]) and rec["bound_ratio"] > 100
        else ""
    )
    return rec


def predict_case(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    methods: Sequence[str],
    *,
    extra: dict | None = None,
    precision="npu_fp16",
    beta=None,
    block_q: int = 128,
    block_kv: int = 128,
    scale=None,
    is_causal: bool = False,
    device="cpu",
    out_dtype=None,
    mc_samples: int = 8,
    seed: int = 0,
    progress: bool = False,
) -> list[dict]:
    """Measured (harness) and predicted errors of ``methods`` on one (q, k, v), one record per method.

    ``progress``: a tqdm bar on stderr, one step per method (the prediction is then made method by
    method; :func:`pasa_theory.bounds.predict_many` seeds its Monte Carlo per row chunk, so the numbers
    are the same either way).
    """
    extra = dict(extra or {})
    meas = run_case(
        q,
        k,
        v,
        methods,
        precision=precision,
        beta=beta,
        block_q=block_q,
        block_kv=block_kv,
        scale=scale,
        is_causal=is_causal,
        device=device,
        extra=extra,
        out_dtype=out_dtype,
    )
    kw = dict(
        precision=precision,
        beta=beta,
        block_kv=block_kv,
        scale=scale,
        is_causal=is_causal,
        out_dtype=out_dtype,
        mc_samples=mc_samples,
        seed=seed,
    )
    if progress:
        preds = []
        with tqdm(list(methods), desc="predict", unit="method", file=sys.stderr) as bar:
            for m in bar:
                bar.set_postfix(method=m)
                preds += pb.predict_many([m], q, k, v, **kw)
    else:
        preds = pb.predict_many(list(methods), q, k, v, **kw)
    shape = dict(
        seq_q=q.shape[2], seq_kv=k.shape[2], head_dim=q.shape[3], heads=q.shape[1], kv_heads=k.shape[1]
    )
    ext = dict(causal=is_causal, seed_model=seed)
    return [_merge(m, p, shape, ext) for m, p in zip(meas, preds)]


def predict_grid(
    methods: Sequence[str],
    *,
    dists=_data.DISTRIBUTIONS,
    means=GRID_MEANS,
    amplitudes=GRID_AMPLITUDES,
    shape: dict | None = None,
    seed: int = _data.REFERENCE_SEED,
    input_dtype: torch.dtype = torch.float16,
    progress: bool = True,
    rows: int | None = None,
    **case_kw,
) -> list[dict]:
    """:func:`predict_case` on every cell of the reference grid (deterministic: seeded data and model);
    ``rows``: measure and predict only that many evenly spaced query rows per head (:func:`sample_rows`)."""
    out: list[dict] = []
    for cell, q, k, v in grid_cells(
        dists=dists,
        means=means,
        amplitudes=amplitudes,
        shape=shape,
        seed=seed,
        input_dtype=input_dtype,
        progress=progress,
        desc="predict",
    ):
        out += predict_case(sample_rows(q, rows), k, v, methods, extra=dict(cell, seed=seed), **case_kw)
    return out


def row_indices(seq_q: int, rows: int | None) -> list[int]:
    """``rows`` evenly spaced query positions in ``range(seq_q)``, first and last included (every
    position if ``rows`` is None, 0 or at least ``seq_q``)."""
    if not rows or rows >= seq_q:
        return list(range(seq_q))
    if rows == 1:
        return [0]
    return [(i * (seq_q - 1)) // (rows - 1) for i in range(rows)]


def sample_rows(q: torch.Tensor, rows: int | None) -> torch.Tensor:
    """The query rows :func:`row_indices` picks (BNSD, along S1).

    Without a mask every query row's output depends only on that row of Q and on all of K and V,
    and the kernels' results do not depend on how rows are chunked (up to the CPU matrix product's
    shape-dependent fp32 summation order, see :mod:`pasa_npu.kernel`), so the sampled rows' outputs,
    errors and predictions are those of the same rows in the full case (tested bit for bit). Causal masks tie a row to its
    position relative to S1, so callers must not sample them.
    """
    idx = row_indices(q.shape[2], rows)
    return q if len(idx) == q.shape[2] else q[:, :, idx]


def summary(records: list[dict]) -> dict:
    """Hit rates and median ratios of a prediction table (see the module docstring)."""
    ok = [r for r in records if r.get("bound_ok") is not None]
    b_ok = sum(bool(r["bound_ok"]) for r in ok)
    r_ok = sum(bool(r["rmse_within_3x"]) for r in ok)
    o_ok = sum(bool(r["overflow_ok"]) for r in records)
    br = [r["bound_ratio"] for r in ok if math.isfinite(r["bound_ratio"])]
    rr = [r["rmse_ratio"] for r in ok if math.isfinite(r["rmse_ratio"])]
    loose = [
        dict(
            dist=r.get("dist"),
            mean=r.get("mean"),
            amplitude=r.get("amplitude"),
            method=r["method"],
            bound_ratio=r["bound_ratio"],
            bound_dominant=r["bound_dominant"],
            why=r["loose_because"],
        )
        for r in ok
        if math.isfinite(r["bound_ratio"]) and r["bound_ratio"] > 100
    ]
    return dict(
        cases=len(records),
        compared=len(ok),
        bound_ok=b_ok,
        rmse_within_3x=r_ok,
        rmse_within_3x_fraction=(r_ok / len(ok)) if ok else math.nan,
        overflow_ok=o_ok,
        overflow_cases=sum(bool(r["meas_overflow"]) for r in records),
        median_bound_ratio=statistics.median(br) if br else math.nan,
        median_rmse_ratio=statistics.median(rr) if rr else math.nan,
        loose_bounds=loose,
    )


def format_table(records: list[dict]) -> str:
    """Predicted against measured, side by side, one line per (case, method).

    Columns: measured RMSE, predicted RMSE (estimate), their ratio ``pred/meas``; measured max error,
    the first-order bound, their ratio ``bound/max``; overflow stage measured/predicted; the term that
    dominates the predicted RMSE.
    """
    head = (
        f"{'dist':8} {'mean':>5} {'amp':>5} {'method':18} {'RMSE':>9} {'pred RMSE':>9} {'pred/meas':>9} "
        f"{'max|err|':>9} {'bound':>9} {'bound/max':>9} {'overflow meas/pred':>22}  dominant term"
    )
    lines = [head, "-" * len(head)]

    def f(x) -> str:
        return f"{x:9.2e}" if isinstance(x, _FLOAT_OK) and math.isfinite(x) else f"{str(x):>9}"

    for r in records:
        ovf = f"{r.get('first_nonfinite_stage') or '-'}/{r.get('pred_overflow_stage') or '-'}"
        rr = r["rmse_ratio"]
        br = r["bound_ratio"]
        lines.append(
            f"{str(r.get('dist', '-')):8} {r.get('mean', math.nan):5g} {r.get('amplitude', math.nan):5g} {r['method']:18} "
            f"{f(r['rmse'])} {f(r['pred_rmse'])} {rr:9.2f} {f(r['max_abs_err'])} {f(r['pred_bound'])} {br:9.1f} "
            f"{ovf:>22}  {r['dominant']}"
        )
    return "\n".join(lines)


def format_summary(s: dict) -> str:
    lines = [
        f"bound >= measured max error: {s['bound_ok']}/{s['compared']}",
        f"RMSE estimate within 3x of measured: {s['rmse_within_3x']}/{s['compared']} "
        f"({100 * s['rmse_within_3x_fraction']:.1f}%)",
        f"overflow predicted iff measured (same stage): {s['overflow_ok']}/{s['cases']} "
        f"({s['overflow_cases']} measured overflows)",
        f"median ratio predicted/measured: bound {s['median_bound_ratio']:.3g}, RMSE {s['median_rmse_ratio']:.3g}",
    ]
    if s["loose_bounds"]:
        lines.append(f"bounds more than 100x above the measured max: {len(s['loose_bounds'])}; dominated by")
        by: dict[str, int] = {}
        for x in s["loose_bounds"]:
            by[x["bound_dominant"]] = by.get(x["bound_dominant"], 0) + 1
        for term, cnt in sorted(by.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {term} ({cnt}): {LOOSE_BECAUSE.get(term, '')}")
    return "\n".join(lines)


def main(args, methods: Sequence[str], case_kw: dict, shape: dict, dtype: torch.dtype, meta: dict) -> int:
    """Entry point of ``pasa-verify --predict`` (arguments already parsed by :mod:`pasa_npu.cli`)."""
    rows = (
        None
        if (args.causal or not args.predict_rows or args.predict_rows >= args.seq_q)
        else args.predict_rows
    )
    if rows is None:
        why = " (causal mask: rows depend on their position)" if args.causal and args.predict_rows else ""
        note = f"measured and predicted on all {args.seq_q} query rows per head{why}"
    else:
        note = (
            f"measured and predicted on {rows} of {args.seq_q} query rows per head, evenly spaced (rows are "
            f"independent without a mask; --predict-rows 0 for all)"
        )
    progress = not args.no_progress
    if args.grid:
        dists = [d.strip() for d in args.dists.split(",") if d.strip()]
        records = predict_grid(
            methods,
            dists=dists,
            means=args.means,
            amplitudes=args.amplitudes,
            shape=shape,
            seed=args.seed,
            input_dtype=dtype,
            progress=progress,
            rows=rows,
            **case_kw,
        )
    else:
        amplitude = (
            args.amplitude if args.amplitude is not None else (0.5 if args.dist == "uniform" else 10.0)
        )
        q, k, v = _data.make_qkv(
            args.dist, mean=args.mean, amplitude=amplitude, seed=args.seed, dtype=dtype, **shape
        )
        records = predict_case(
            sample_rows(q, rows),
            k,
            v,
            methods,
            progress=progress,
            extra=dict(dist=args.dist, mean=args.mean, amplitude=amplitude, seed=args.seed),
            **case_kw,
        )
    s = summary(records)
    if args.format == "text":
        print(note)
        print(format_table(records))
        print()
        print(format_summary(s))
    elif args.format == "csv":
        keys = list(dict.fromkeys(k_ for r in records for k_ in r))
        w = csv.DictWriter(sys.stdout, fieldnames=keys)
        w.writeheader()
        w.writerows(records)
    else:
        print(json.dumps(dict(summary=s, rows=note, records=records), indent=1, default=str))
    if args.out is not None:
        safe = {k_: (str(x) if isinstance(x, float) and not math.isfinite(x) else x) for k_, x in s.items()}
        csv_path, json_path = write_records(
            records,
            args.out,
            "predict",
            dict(meta, summary=safe, query_rows=row_indices(args.seq_q, rows), rows=note),
        )
        print(f"wrote {csv_path} and {json_path}", file=sys.stderr)
    else:
        if args.format != "text":
            print(f"pasa-verify --predict: {note}", file=sys.stderr)
        print("pasa-verify: not saved (--out DIR writes predict.csv and predict.json)", file=sys.stderr)
    return 0
