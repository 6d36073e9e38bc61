"""Analyses of PASA and its baselines inside the real models (used by notebook 07; plain dict records).

* :func:`layer_errors`: every method on every layer's real attention inputs (measured, emulated), with the
  error model's prediction on the same tensors (:func:`pasa_theory.bounds.predict_many`, an *estimate*
  of the RMSE and a *first-order evaluation* of the max error, not a theorem) beside it.
* :func:`activation_stats`: where each layer and head sits relative to the overflow envelope (max|q·k|,
  per-channel bias of Q and K, and the row statistics of the scores that the resonance argument is about).
* :func:`end_to_end`: perplexity, KL to golden, top-1 agreement (SmolLM2) or embedding cosine (MiniLM).
* :func:`bias_sweep`: an **injected** per-channel bias on K (optionally Q) in chosen layers, swept in
  size; K-only bias adds q·c to every score of a row, so exact attention (and the golden run) is unchanged
  and any change is numerical.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence

import torch

import pasa_theory.bounds as pb
from pasa_theory.policies import resolve

from .. import metrics
from ..golden import golden_attention
from ..kernel import shift_parameters, shifted_keys
from ..methods import get_method, run_method
from ..precision import PRESETS
from ._attention import AttentionHook, parse_method
from ._base import Model
from .texts import long_text

__all__ = [
    "DEFAULT_METHODS",
    "layer_errors",
    "prediction_summary",
    "activation_stats",
    "end_to_end",
    "channel_bias",
    "bias_sweep",
    "head_rel_rmse",
]

#: Methods compared on the real models (``<method>@<preset>`` runs a method at a preset).
DEFAULT_METHODS = (
    "pasa",
    "pasa:script",
    "fa_qk",
    "fa_q",
    "fa_hybrid",
    "pasa:fp16_accurate",
    "smooth_k",
    "sdpa",
    "pasa@bf16",
    "sdpa@bf16",
)


def _split(method: str) -> tuple[str, str]:
    m, p = parse_method(method)
    return m, (p or "npu_fp16")


def head_rel_rmse(out: torch.Tensor, gold: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per query head (B, H): RMSE over (S, d) of out against gold, divided by the RMS of that head's V
    (the harness's ``rel_rmse``, :func:`pasa_npu.metrics.relative_rmse`, head by head). float64."""
    err = (out.to(torch.float64) - gold.to(torch.float64)).pow(2).mean(dim=(-2, -1)).sqrt()
    g = out.shape[1] // v.shape[1]
    rv = v.to(torch.float64).pow(2).mean(dim=(-2, -1)).sqrt().repeat_interleave(g, dim=1)
    return err / rv


def layer_errors(
    captures: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    methods: Sequence[str] = DEFAULT_METHODS,
    *,
    is_causal: bool,
    layers: Sequence[int] | None = None,
    predict: bool = True,
    rigorous: bool = True,
    input_precision: str = "npu_fp16",
    block_kv: int = 128,
) -> list[dict]:
    """Every method on the captured attention inputs of each layer; one record per (layer, method, head).

    The inputs are first rounded to ``input_precision``'s matrix-input format (fp16): the golden is float64
    attention on those rounded inputs, as in the harness, so the errors are those of the attention
    arithmetic. Measured: ``rel_rmse`` (per head, :func:`head_rel_rmse`), ``max_abs_err``, ``nonfinite``,
    ``stage``. With ``predict``, per (layer, method) the error model's ``pred_rmse`` (estimate) and
    ``pred_bound`` (first-order evaluation of max|err|, not a proven bound) and ``pred_overflow`` on the same rounded tensors, with the
    measured ``rmse`` of the whole layer beside them (records with ``head = -1``).

    With ``predict`` and ``rigorous`` (default) also ``pred_rigorous``: the **rigorous a-posteriori bound**
    on max|err| (``max_abs_bound`` of :func:`pasa_theory.predict`, :func:`pasa_theory.rigorous.certify`,
    a theorem, docs/bounds.md §9) on all query rows, ``None`` where the theorems do not cover the method
    (``pred_rigorous_status``, predict's ``bound_status``, says why), and ``pred_hull_cap`` (max_r|v_r − o|,
    the trivial bound). For the shifting PASA policies the bound is conditional on the K̃ the run computed
    (``pasa_npu.shifted_keys``, passed as predict's ``shifted_keys``), as
    :func:`pasa_npu.predict_report.predict_case` with ``observed_kt=True`` does (same selection of methods,
    same call; predict_case itself is not used because it re-runs the methods). ``rigorous=False`` skips
    the bound (about 100–850 kernel runs' worth of float64 work, docs/bounds.md §14).
    """

    dt = PRESETS[input_precision].matmul_in
    layers = range(len(captures)) if layers is None else layers
    recs: list[dict] = []
    for li in layers:
        q, k, v = (t.to(dt) for t in captures[li])
        gold = golden_attention(q, k, v, is_causal=is_causal)
        preds = {}
        if predict:
            by_prec: dict[str, list[tuple[str, str]]] = {}
            for m in methods:
                name, prec = _split(m)
                by_prec.setdefault(prec, []).append((m, name))
            for prec, pairs in by_prec.items():
                kts = {}
                if rigorous:
                    for _m, n in pairs:
                        pol = resolve(n, prec)
                        if pol.shift and pol.score_ref == "none":  # as predict_case(observed_kt=True)
                            kts[n] = shifted_keys(
                                k.cpu(), precision=get_method(n).precision(prec), block_kv=block_kv
                            )
                got = pb.predict_many(
                    [n for _, n in pairs],
                    q.cpu(),
                    k.cpu(),
                    v.cpu(),
                    precision=prec,
                    block_kv=block_kv,
                    is_causal=is_causal,
                    rigorous=rigorous,
                    shifted_keys=kts or None,
                )
                preds.update({m: p for (m, _), p in zip(pairs, got)})
        for m in methods:
            name, prec = _split(m)
            t0 = time.perf_counter()
            with metrics.census() as cen:
                out = run_method(
                    name, q, k, v, precision=prec, is_causal=is_causal, block_kv=block_kv, out_dtype=q.dtype
                )
            sec = time.perf_counter() - t0
            nf = metrics.nonfinite_count(out)
            rr = head_rel_rmse(out, gold, v)[0]
            base = dict(
                layer=li, method=m, nonfinite=nf, stage=cen.first_stage if (nf or cen.total) else None
            )
            for h in range(rr.numel()):
                recs.append(dict(base, head=h, rel_rmse=float(rr[h])))
            whole = dict(
                base,
                head=-1,
                rel_rmse=metrics.relative_rmse(out, gold, v),
                rmse=metrics.rmse(out, gold),
                max_abs_err=metrics.max_abs_error(out, gold),
                seconds=sec,
            )
            p = preds.get(m)
            if p is not None:
                whole.update(
                    pred_rmse=p.rmse_estimate,
                    pred_bound=p.first_order_estimate,
                    pred_overflow=p.overflow,
                    pred_dominant=p.dominant,
                )
                if rigorous:
                    whole.update(
                        pred_rigorous=p.max_abs_bound,
                        pred_rigorous_status=p.bound_status,
                        pred_hull_cap=p.hull_cap,
                    )
            recs.append(whole)
    return recs


def prediction_summary(records: Sequence[dict]) -> dict:
    """Hit rates of the error model on the real tensors, per method and overall (an out-of-sample test:
    the model was built and checked on synthetic inputs). ``bound_ok``: measured max|err| <= bound;
    ``within_3x``: predicted RMSE within a factor 3 of the measured; ``overflow_ok``: predicted overflow
    equals measured non-finite output. Also the median ratio predicted/measured RMSE and ``within_1_5x``
    (the estimate within a factor 1.5).

    Where the records carry the rigorous bound (``pred_rigorous``, :func:`layer_errors` with
    ``rigorous=True``): ``rigorous_cases`` (cases the theorems cover, bound not None), ``rigorous_ok``
    (measured max|err| <= the rigorous bound; a theorem, so anything short of ``rigorous_cases`` is a bug),
    ``rigorous_below_cap`` (bound < the hull cap max_r|v_r − o|, i.e. not vacuous) and the median, min and
    max of rigorous bound / measured max|err| (cases with a finite non-zero error)."""
    rows = [r for r in records if r.get("head") == -1 and "pred_rmse" in r]
    out: dict = {}

    def summ(rs):
        fin = [r for r in rs if not r["nonfinite"] and not r["pred_overflow"] and r["rmse"] > 0]
        ratios = sorted(r["pred_rmse"] / r["rmse"] for r in fin)
        res = dict(
            cases=len(rs),
            compared=len(fin),
            bound_ok=sum(r["max_abs_err"] <= r["pred_bound"] for r in fin),
            within_3x=sum(1 / 3 <= r["pred_rmse"] / r["rmse"] <= 3 for r in fin),
            overflow_ok=sum(bool(r["nonfinite"]) == bool(r["pred_overflow"]) for r in rs),
            median_rmse_ratio=statistics.median(ratios) if ratios else math.nan,
            min_rmse_ratio=ratios[0] if ratios else math.nan,
            max_rmse_ratio=ratios[-1] if ratios else math.nan,
            within_1_5x=sum(1 / 1.5 <= x <= 1.5 for x in ratios),
        )
        if any("pred_rigorous" in r for r in rs):
            cov = [r for r in rs if r.get("pred_rigorous") is not None]
            rb = sorted(
                r["pred_rigorous"] / r["max_abs_err"]
                for r in cov
                if math.isfinite(r["max_abs_err"]) and r["max_abs_err"] > 0
            )
            res.update(
                rigorous_cases=len(cov),
                rigorous_ok=sum(r["max_abs_err"] <= r["pred_rigorous"] for r in cov),
                rigorous_below_cap=sum(r["pred_rigorous"] < r.get("pred_hull_cap", math.nan) for r in cov),
                median_rigorous_ratio=statistics.median(rb) if rb else math.nan,
                min_rigorous_ratio=rb[0] if rb else math.nan,
                max_rigorous_ratio=rb[-1] if rb else math.nan,
            )
        return res

    for m in dict.fromkeys(r["method"] for r in rows):
        out[m] = summ([r for r in rows if r["method"] == m])
    out["all"] = summ(rows)
    return out


def activation_stats(
    captures: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    *,
    is_causal: bool,
    beta: float | None = None,
    block_kv: int = 128,
) -> list[dict]:
    """One record per (layer, query head), all in float64 on the captured (unrounded) inputs:

    ``max_abs_qk`` (max|q·k| over visible pairs, the quantity ``fa_qk`` rounds to fp16 before the scale),
    ``q_bias``/``k_bias`` (‖mean over tokens‖ / RMS over tokens and channels: 1 when every token is the
    same vector, ~0 for zero-mean channels), ``q_bias_max_channel``/``k_bias_max_channel`` (largest
    |channel mean| / channel RMS), ``mean_alignment`` (cosine of the mean query and mean key: the
    phase (anti-)alignment of their common components along the head dimension, the "resonance"),
    ``row_bias_to_spread`` (median over query rows of |row mean| / row std of the scaled scores: what a
    row-wise shift can remove), ``shift_shrink`` (median over rows of max|s| / max|s − β·block row mean|
    with β the npu_fp16 default, in exact arithmetic over blocks of ``block_kv`` keys).
    """

    recs = []
    for li, (q, k, _v) in enumerate(captures):
        q64, k64 = q.to(torch.float64)[0], k.to(torch.float64)[0]
        H, S, d = q64.shape
        g = H // k64.shape[0]
        tau = 1 / math.sqrt(d)
        b = beta if beta is not None else shift_parameters("npu_fp16", head_dim=d, block_kv=block_kv).beta
        keep = (
            torch.ones(S, S, dtype=torch.bool, device=q.device).tril()
            if is_causal
            else torch.ones(S, S, dtype=torch.bool, device=q.device)
        )
        cnt = keep.sum(-1).to(torch.float64)
        for h in range(H):
            qh, kh = q64[h], k64[h // g]
            s = (qh @ kh.T) * tau
            sm = s.masked_fill(~keep, 0.0)
            rmean = sm.sum(-1) / cnt
            rvar = ((s - rmean[:, None]).masked_fill(~keep, 0.0) ** 2).sum(-1) / cnt
            rows = cnt > 1
            ratio = (rmean.abs() / rvar.sqrt())[rows]
            # block shift in exact arithmetic (pad keys to whole blocks; masked keys take no part)
            nb = -(-S // block_kv)
            pad = nb * block_kv - S
            sp = torch.nn.functional.pad(sm, (0, pad))
            kp = torch.nn.functional.pad(keep, (0, pad))
            blocks, kb = sp.view(S, nb, block_kv), kp.view(S, nb, block_kv)
            bcnt = kb.sum(-1, keepdim=True).clamp(min=1)
            shifted = (blocks - b * blocks.sum(-1, keepdim=True) / bcnt).masked_fill(~kb, 0.0)
            shrink = s.masked_fill(~keep, 0.0).abs().amax(-1) / shifted.abs().flatten(-2).amax(-1)

            def bias(x):
                mu = x.mean(0)
                return float(mu.norm() / x.pow(2).mean(0).sum().sqrt()), float(
                    (mu.abs() / x.pow(2).mean(0).sqrt()).max()
                )

            qb, qbc = bias(qh)
            kb_, kbc = bias(kh)
            mq, mk = qh.mean(0), kh.mean(0)
            recs.append(
                dict(
                    layer=li,
                    head=h,
                    kv_head=h // g,
                    max_abs_qk=float(s.masked_fill(~keep, 0.0).abs().max() / tau),
                    q_bias=qb,
                    k_bias=kb_,
                    q_bias_max_channel=qbc,
                    k_bias_max_channel=kbc,
                    mean_alignment=float(mq @ mk / (mq.norm() * mk.norm())),
                    row_bias_to_spread=float(ratio.median()),
                    shift_shrink=float(shrink[rows].median()),
                )
            )
    return recs


def end_to_end(model: Model, texts: dict[str, str], methods: Sequence[str] = DEFAULT_METHODS) -> list[dict]:
    """:meth:`Model.evaluate` of every method on every text; one record per (text, method), with the
    mean and largest per-layer attention error and the wall time."""
    recs = []
    for tname, t in texts.items():
        for m in methods:
            t0 = time.perf_counter()
            r = model.evaluate(t, m)
            sec = time.perf_counter() - t0
            errs = r["max_abs_err_per_layer"]
            recs.append(
                dict(
                    model=model.name,
                    text=tname,
                    method=m,
                    tokens=r["tokens"],
                    perplexity=r["perplexity"],
                    golden_perplexity=r["golden_perplexity"],
                    kl_to_golden=r["kl_to_golden"],
                    top1_agreement=r["top1_agreement"],
                    embedding_cosine=r.get("embedding_cosine"),
                    max_layer_err=max(errs),
                    mean_layer_err=sum(errs) / len(errs),
                    nonfinite_layers=sum(1 for n in r["nonfinite_per_layer"] if n),
                    nonfinite_output=r["nonfinite_output"],
                    seconds=sec,
                )
            )
    return recs


def channel_bias(
    captures: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    layers: Sequence[int],
    size: float,
    *,
    on_q: bool = False,
):
    """An **injected** per-channel bias: for each chosen layer and KV head, c = size · sign(mean query of
    its group over tokens and heads), a constant vector over the sequence added to K after RoPE (and to
    Q too if ``on_q``). Returns an ``inject`` function for :meth:`Model.evaluate` / :meth:`Model.run`.

    Adding c to every key adds q·c to every score of a query row: exact attention does not change, and
    |q·c| ≈ size · ‖mean q‖₁ grows until ``fa_qk``'s fp16 QKᵀ overflows. On Q too it changes the model.
    """
    if not (isinstance(size, (int, float)) and math.isfinite(size) and size >= 0):
        raise ValueError(f"size must be a finite number >= 0, got {size!r}")
    layers = set(int(x) for x in layers)
    bad = sorted(x for x in layers if not 0 <= x < len(captures))
    if bad:
        raise ValueError(f"layers must be in 0..{len(captures) - 1}, got {bad}")
    dirs = {}
    for li in layers:
        q, k, _ = captures[li]
        g = q.shape[1] // k.shape[1]
        mq = q.to(torch.float64)[0].mean(1).view(k.shape[1], g, -1).mean(1)  # (Hkv, d)
        dirs[li] = torch.sign(mq)

    def inject(layer: int, q: torch.Tensor, k: torch.Tensor):
        if layer not in layers or size == 0:
            return q, k
        c = (size * dirs[layer]).to(k.dtype).to(k.device)[None, :, None, :]
        k = k + c
        if on_q:
            q = q + c.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        return q, k

    return inject


def bias_sweep(
    model: Model,
    text: str,
    sizes: Sequence[float],
    layers: Sequence[int],
    methods: Sequence[str] = ("pasa", "fa_qk", "fa_q", "fa_hybrid", "smooth_k", "sdpa"),
    *,
    on_q: bool = False,
) -> list[dict]:
    """:func:`channel_bias` of each size in ``layers``; every method evaluated end to end (golden run with
    the same injection). One record per (size, method) with perplexity, KL, top-1 (or embedding cosine),
    max|q·k| reached in the injected layers and which layers' attention produced inf/NaN."""
    caps = model.capture(text)
    recs = []
    for sz in sizes:
        inj = channel_bias(caps, layers, sz, on_q=on_q)
        hook = AttentionHook("golden", keep_inputs=True, inject=inj)
        with torch.no_grad():
            model.forward(model._ids(text), attention=hook)
        mqk = max(
            float(
                (
                    q.double()[0]
                    @ k.double()[0].repeat_interleave(q.shape[1] // k.shape[1], 0).transpose(-1, -2)
                )
                .abs()
                .max()
            )
            for li, (q, k, _) in enumerate(hook.inputs)
            if li in set(layers)
        )
        for m in methods:
            t0 = time.perf_counter()
            r = model.evaluate(text, m, inject=inj)
            recs.append(
                dict(
                    model=model.name,
                    size=float(sz),
                    on_q=on_q,
                    method=m,
                    max_abs_qk=mqk,
                    perplexity=r["perplexity"],
                    golden_perplexity=r["golden_perplexity"],
                    kl_to_golden=r["kl_to_golden"],
                    top1_agreement=r["top1_agreement"],
                    embedding_cosine=r.get("embedding_cosine"),
                    nonfinite_layers=[i for i, n in enumerate(r["nonfinite_per_layer"]) if n],
                    first_stage=next((s for s in r["first_stage_per_layer"] if s), None),
                    nonfinite_output=r["nonfinite_output"],
                    seconds=time.perf_counter() - t0,
                )
            )
    return recs


def long_context(
    model: Model, lengths: Sequence[int], methods: Sequence[str] = ("pasa", "fa_qk", "sdpa")
) -> list[dict]:
    """End-to-end metrics on the shipped texts joined and repeated (:func:`pasa_npu.models.long_text`)
    and cut to each of ``lengths`` tokens; one record per (length, method), with wall times."""

    n_max = max(lengths)
    ids = model.encode(long_text(8 * n_max))
    if ids.numel() < n_max:
        raise ValueError(f"lengths must be at most {ids.numel()} tokens, got {n_max}")
    recs = []
    for n in lengths:
        t0 = time.perf_counter()
        model.golden(ids[:n])
        g_sec = time.perf_counter() - t0
        for m in methods:
            t0 = time.perf_counter()
            r = model.evaluate(ids[:n], m)
            errs = r["max_abs_err_per_layer"]
            recs.append(
                dict(
                    model=model.name,
                    tokens=n,
                    method=m,
                    perplexity=r["perplexity"],
                    golden_perplexity=r["golden_perplexity"],
                    kl_to_golden=r["kl_to_golden"],
                    top1_agreement=r["top1_agreement"],
                    max_layer_err=max(errs),
                    nonfinite_output=r["nonfinite_output"],
                    golden_seconds=g_sec,
                    seconds=time.perf_counter() - t0,
                )
            )
    return recs
