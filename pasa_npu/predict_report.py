"""``pasa-verify --predict``: the four error products beside the measured errors.

For every case (one input, or every cell of ``--grid``) and method, the harness measures the error
against the float64 golden (:func:`pasa_npu.harness.run_case`, with the non-finite census) and
:func:`pasa_theory.bounds.predict_many` computes, from the same tensors (docs/error-model.md §9):

* ``pred_bound`` — the **rigorous a-posteriori bound** (Theorem 1, a theorem); for PASA conditional on
  the K̃ the run computed (``pasa_npu.shifted_keys``; ``observed_kt=False``: K̃ enclosed for every
  summation order);
* ``pred_prob`` — the **probabilistic bound** (Proposition 3) at ``confidence``;
* ``pred_a_priori`` — the **a-priori bound** (Theorem 2) for every input with the same maxima. For the
  ``fp64`` arrangements (docs/bounds.md §19.3–§19.4: the rigorous bound is Theorem 2 at each row's
  maxima) the measured error is against the float64 golden, whose own error is of the kernel's size,
  so ``bound_ok``, ``a_priori_ok`` and the ratios are no validation there
  (tests/npu/test_a_priori_fp64.py measures against mpmath instead);
* ``pred_rmse`` — the **RMSE estimate** (stochastic shadow simulation, a model);
* ``hull_cap`` — max_r |v_r − o|: a bound at or above it is vacuous.

One record per (case, method) holds them with the measurement; the table is written as CSV and JSON
by :func:`pasa_npu.harness.write_records` and summarised by :func:`summary` and :func:`product_table`:

* ``bound_ok``/``prob_ok``/``a_priori_ok``: the bound is at least the measured max error (``None``
  where it was not computed or an overflow is measured or predicted; the probabilistic bound is a
  per-element statement with probability ≥ ``confidence``, checked here on the max);
* ``*_ratio``: bound (or estimate) / measured; ``*_below_cap``: the bound is below ``hull_cap``;
* ``rmse_within_1_5x`` (and the former ``rmse_within_3x``): the estimate within that factor;
* ``*_cost``: seconds of the product / seconds of the method's kernel run on the same rows;
* ``overflow_ok``: an overflow is predicted exactly where one is measured, at the same first stage.

``pasa-verify --predict`` measures and predicts 64 evenly spaced query rows per head by default
(:func:`sample_rows`; ``--predict-rows 0`` for all), which costs seconds instead of minutes at the
reference shape and says so in its output; ``--no-rigorous`` skips the rigorous and probabilistic
bounds (about 100–850 kernel runs' worth of work for all rows, docs/bounds.md §14).

Rigorous bounds more than 100x above the measured maximum are listed with the part of the bound that
dominates; the former first-order evaluation (``pred_first_order``, not a bound) keeps its
per-term explanations in :data:`LOOSE_BECAUSE`.
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
from pasa_theory.policies import resolve

from . import data as _data
from .harness import GRID_AMPLITUDES, GRID_MEANS, grid_cells, run_case, write_records
from .kernel import shifted_keys
from .methods import get_method

__all__ = [
    "PRODUCTS",
    "product_table",
    "format_products",
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

#: The four products: record column, what it is compared with, name, and what it is.
PRODUCTS = (
    ("bound", "pred_bound", "max_abs_err", "rigorous a-posteriori bound (Theorem 1)"),
    ("prob", "pred_prob", "max_abs_err", "probabilistic bound (Proposition 3)"),
    ("a_priori", "pred_a_priori", "max_abs_err", "a-priori bound (Theorem 2)"),
    ("estimate", "pred_rmse", "rmse", "RMSE estimate (stochastic shadow simulation)"),
)


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
    kernel_s = rec.get("seconds")
    for name, col, sec in (
        ("bound", "pred_bound", "bound_seconds"),
        ("a_priori", "pred_a_priori", "a_priori_seconds"),
        ("estimate", "pred_rmse", "pred_seconds"),
    ):
        rec[f"{name}_cost"] = _ratio(rec[sec], kernel_s) if rec.get(col) is not None else math.nan
    compared = not (measured_ovf or pred.overflow)
    cap = rec["hull_cap"]
    for name, col, ref, _ in PRODUCTS[:3] + (("first_order", "pred_first_order", "max_abs_err", ""),):
        val = rec.get(col)
        if not compared or val is None:
            rec.update({f"{name}_ratio": math.nan, f"{name}_ok": None, f"{name}_below_cap": None})
            continue
        rec[f"{name}_ratio"] = math.inf if (val == math.inf and rec[ref] > 0) else _ratio(val, rec[ref])
        rec[f"{name}_ok"] = bool(val >= rec[ref])
        rec[f"{name}_below_cap"] = bool(val < cap)
    if not compared:
        rec.update(rmse_ratio=math.nan, rmse_within_1_5x=None, rmse_within_3x=None)
    else:
        rr = _ratio(pred.rmse_estimate, rec["rmse"])
        zero = pred.rmse_estimate == 0 if rec["rmse"] <= 0 else None
        rec.update(
            rmse_ratio=rr,
            rmse_within_1_5x=bool(math.isfinite(rr) and 1 / 1.5 <= rr <= 1.5) if zero is None else zero,
            rmse_within_3x=bool(math.isfinite(rr) and 1 / 3 <= rr <= 3) if zero is None else zero,
        )
    loose = math.isfinite(rec["bound_ratio"]) and rec["bound_ratio"] > 100
    rec["loose_because"] = (
        f"rigorous bound dominated by {pred.bound_dominant} (docs/bounds.md §10)" if loose else ""
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
    confidence: float = 0.99,
    rigorous: bool = True,
    observed_kt: bool = True,
) -> list[dict]:
    """Measured (harness) and predicted errors of ``methods`` on one (q, k, v), one record per method.

    ``rigorous=False`` skips the rigorous and probabilistic bounds; ``observed_kt`` (PASA) makes the
    rigorous bound conditional on the K̃ the run computed (``pasa_npu.shifted_keys``, the same call
    as the kernel's setup) instead of enclosing K̃ for every summation order.

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
        confidence=confidence,
        rigorous=rigorous,
    )
    if rigorous and observed_kt:
        kts = {}
        for m in methods:
            pol = resolve(m, precision)
            if pol.shift and pol.score_ref == "none":  # score_ref="hi_lo" uses no shifting matrix
                prec = get_method(m).precision(precision)
                kts[m] = shifted_keys(k, precision=prec, block_kv=block_kv, scale=scale, beta=beta)
        kw["shifted_keys"] = kts
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


def _quantile(xs: list[float], q: float) -> float:
    """The q-quantile (linear interpolation, numpy's default) of a non-empty list; NaN if empty."""
    if not xs:
        return math.nan
    ys = sorted(xs)
    pos = q * (len(ys) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ys) - 1)
    return ys[lo] + (ys[hi] - ys[lo]) * (pos - lo)


def product_table(records: list[dict], *, by_method: bool = True) -> list[dict]:
    """Per product (and per method, plus ``method = "all"``): over the compared cases (no overflow
    measured or predicted, product computed), ``cases``, ``holds`` (bounds: the fraction >= the
    measured max error; estimate: the fraction within 1.5x of the measured RMSE), ``below_cap`` (bounds:
    the fraction below the hull cap), the median and 90th percentile of product/measured, and the
    median cost as a ratio to one kernel run on the same rows (NaN where not timed)."""
    groups: list[tuple[str, list[dict]]] = [("all", records)]
    if by_method:
        groups += [
            (m, [r for r in records if r["method"] == m]) for m in dict.fromkeys(r["method"] for r in records)
        ]
    out = []
    for meth, recs in groups:
        for name, _col, _ref, what in PRODUCTS:
            if name == "estimate":
                ok = [r for r in recs if r.get("rmse_within_1_5x") is not None]
                hit = [bool(r["rmse_within_1_5x"]) for r in ok]
                ratios = [r["rmse_ratio"] for r in ok if math.isfinite(r["rmse_ratio"])]
                below: list[bool] = []
                cost_col = "estimate_cost"
            else:
                ok = [r for r in recs if r.get(f"{name}_ok") is not None]
                hit = [bool(r[f"{name}_ok"]) for r in ok]
                ratios = [r[f"{name}_ratio"] for r in ok if not math.isnan(r[f"{name}_ratio"])]
                below = [bool(r[f"{name}_below_cap"]) for r in ok]
                cost_col = "bound_cost" if name == "prob" else f"{name}_cost"
            costs = [r[cost_col] for r in ok if math.isfinite(r.get(cost_col, math.nan))]
            out.append(
                dict(
                    method=meth,
                    product=name,
                    what=what,
                    cases=len(ok),
                    holds=sum(hit) / len(hit) if hit else math.nan,
                    below_cap=sum(below) / len(below) if below else math.nan,
                    median_ratio=statistics.median(ratios) if ratios else math.nan,
                    p90_ratio=_quantile(ratios, 0.9),
                    cost=statistics.median(costs) if costs else math.nan,
                )
            )
    return out


def summary(records: list[dict]) -> dict:
    """Hit rates and ratios of a prediction table (see the module docstring); ``products`` is
    :func:`product_table` over all methods."""
    ok = [r for r in records if r.get("rmse_within_3x") is not None]
    r_ok = sum(bool(r["rmse_within_3x"]) for r in ok)
    r15 = sum(bool(r["rmse_within_1_5x"]) for r in ok)
    o_ok = sum(bool(r["overflow_ok"]) for r in records)
    bounded = [r for r in records if r.get("bound_ok") is not None]
    br = [r["bound_ratio"] for r in bounded if math.isfinite(r["bound_ratio"])]
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
        for r in bounded
        if math.isfinite(r["bound_ratio"]) and r["bound_ratio"] > 100
    ]
    return dict(
        cases=len(records),
        compared=len(ok),
        bounded=len(bounded),
        bound_ok=sum(bool(r["bound_ok"]) for r in bounded),
        prob_ok=sum(bool(r["prob_ok"]) for r in records if r.get("prob_ok") is not None),
        a_priori_ok=sum(bool(r["a_priori_ok"]) for r in records if r.get("a_priori_ok") is not None),
        rmse_within_1_5x=r15,
        rmse_within_1_5x_fraction=(r15 / len(ok)) if ok else math.nan,
        rmse_within_3x=r_ok,
        rmse_within_3x_fraction=(r_ok / len(ok)) if ok else math.nan,
        overflow_ok=o_ok,
        overflow_cases=sum(bool(r["meas_overflow"]) for r in records),
        median_bound_ratio=statistics.median(br) if br else math.nan,
        median_rmse_ratio=statistics.median(rr) if rr else math.nan,
        loose_bounds=loose,
        products=product_table(records, by_method=False),
    )


def _f(x) -> str:
    return (
        f"{x:9.2e}"
        if isinstance(x, _FLOAT_OK) and math.isfinite(x)
        else f"{str(x if x is not None else '-'):>9}"
    )


def _r(x) -> str:
    return f"{x:7.3g}" if isinstance(x, _FLOAT_OK) and math.isfinite(x) else f"{'-':>7}"


def format_table(records: list[dict]) -> str:
    """Measured against the four products, one line per (case, method).

    Columns: measured max|err|, the hull cap max|v − o|; the rigorous bound, bound/max and whether it
    holds (``ok``/``NO``/``-`` not computed or overflow); the probabilistic bound and prob/max; the
    a-priori bound and apriori/max; the measured RMSE, the RMSE estimate and ``pred/meas``; overflow
    stage measured/predicted.
    """
    head = (
        f"{'dist':8} {'mean':>5} {'amp':>5} {'method':18} {'max|err|':>9} {'hull cap':>9} "
        f"{'bound':>9} {'bound/max':>9} {'hit':>3} {'prob':>9} {'prob/max':>8} {'a-priori':>9} "
        f"{'apri/max':>8} {'RMSE':>9} {'est RMSE':>9} {'pred/meas':>9} {'overflow meas/pred':>22}"
    )
    lines = [head, "-" * len(head)]

    def hit(x) -> str:
        return "-" if x is None else ("ok" if x else "NO")

    for r in records:
        ovf = f"{r.get('first_nonfinite_stage') or '-'}/{r.get('pred_overflow_stage') or '-'}"
        lines.append(
            f"{str(r.get('dist', '-')):8} {r.get('mean', math.nan):5g} {r.get('amplitude', math.nan):5g} "
            f"{r['method']:18} {_f(r['max_abs_err'])} {_f(r['hull_cap'])} {_f(r['pred_bound'])} "
            f"{_r(r['bound_ratio']):>9} {hit(r['bound_ok']):>3} {_f(r['pred_prob'])} {_r(r['prob_ratio']):>8} "
            f"{_f(r['pred_a_priori'])} {_r(r['a_priori_ratio']):>8} {_f(r['rmse'])} {_f(r['pred_rmse'])} "
            f"{_r(r['rmse_ratio']):>9} {ovf:>22}"
        )
    notes = sorted({f"{r['method']}: {r['bound_status']}" for r in records if r.get("bound_status")})
    lines += ["", "what was computed:"] + [f"  {n}" for n in notes]
    return "\n".join(lines)


def format_products(table: list[dict]) -> str:
    """:func:`product_table` as text: per (method, product) the hit rate, the fraction below the hull
    cap, median and 90th percentile of product/measured, and cost per kernel run."""
    head = (
        f"{'method':18} {'product':9} {'cases':>5} {'holds':>6} {'<cap':>6} {'median':>8} {'p90':>8} "
        f"{'cost':>8}  what"
    )
    lines = [head, "-" * len(head)]

    def pc(x: float) -> str:
        return f"{100 * x:5.0f}%" if math.isfinite(x) else f"{'-':>6}"

    for t in table:
        lines.append(
            f"{t['method']:18} {t['product']:9} {t['cases']:5d} {pc(t['holds'])} {pc(t['below_cap'])} "
            f"{_r(t['median_ratio']):>8} {_r(t['p90_ratio']):>8} {_r(t['cost']):>8}  {t['what']}"
        )
    lines.append(
        "holds: bounds >= measured max|err| (estimate: within 1.5x of the measured RMSE); <cap: bound below "
        "max|v − o|; median/p90 of product/measured; cost: seconds / one kernel run on the same rows"
    )
    return "\n".join(lines)


def format_summary(s: dict) -> str:
    lines = [
        f"rigorous bound >= measured max error: {s['bound_ok']}/{s['bounded']} "
        f"(computed for {s['bounded']} of {s['compared']} compared cases)",
        f"RMSE estimate within 1.5x of measured: {s['rmse_within_1_5x']}/{s['compared']} "
        f"({100 * s['rmse_within_1_5x_fraction']:.1f}%), within 3x: {s['rmse_within_3x']}/{s['compared']}",
        f"overflow predicted iff measured (same stage): {s['overflow_ok']}/{s['cases']} "
        f"({s['overflow_cases']} measured overflows)",
        f"median ratio: rigorous bound/max {s['median_bound_ratio']:.3g}, RMSE estimate/measured "
        f"{s['median_rmse_ratio']:.3g}",
    ]
    if s["loose_bounds"]:
        lines.append(
            f"rigorous bounds more than 100x above the measured max: {len(s['loose_bounds'])}; dominated by"
        )
        by: dict[str, int] = {}
        for x in s["loose_bounds"]:
            by[x["bound_dominant"]] = by.get(x["bound_dominant"], 0) + 1
        for term, cnt in sorted(by.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {term} ({cnt})")
    return "\n".join(lines)


def main(args, methods: Sequence[str], case_kw: dict, shape: dict, dtype: torch.dtype, meta: dict) -> int:
    """Entry point of ``pasa-verify --predict`` (arguments already parsed by :mod:`pasa_npu.cli`)."""
    rows = (
        None
        if (args.causal or not args.predict_rows or args.predict_rows >= args.seq_q)
        else args.predict_rows
    )
    if args.no_rigorous:
        note_b = "; rigorous and probabilistic bounds not computed (--no-rigorous)"
    else:
        note_b = "; PASA's rigorous bound conditional on the K̃ the run computed"
    if rows is None:
        why = " (causal mask: rows depend on their position)" if args.causal and args.predict_rows else ""
        note = f"measured and predicted on all {args.seq_q} query rows per head{why}"
    else:
        note = (
            f"measured and predicted on {rows} of {args.seq_q} query rows per head, evenly spaced (rows are "
            f"independent without a mask; --predict-rows 0 for all)"
        )
    note += note_b
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
            rigorous=not args.no_rigorous,
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
            rigorous=not args.no_rigorous,
            **case_kw,
        )
    s = summary(records)
    if args.format == "text":
        print(note)
        print(format_table(records))
        print()
        print(format_products(product_table(records)))
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
