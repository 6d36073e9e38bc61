# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. Predicted versus measured error
#
# `pasa_theory.bounds.predict(method, q, k, v, precision=...)` models every rounding of the tiled
# kernel — the matrix unit's fp32 accumulation and fp16 output, each vector operation, the stored
# constants — under the standard model $fl(x) = x(1+\delta)$, $|\delta|\le u$, and propagates the
# errors through the first-order sensitivities of softmax attention. For each method and input it
# returns (the error model is written up in docs/error-model.md)
#
# * a **first-order a-posteriori evaluation** of $\max|O - O_{exact}|$ (the module calls it the
#   deterministic bound): the moduli of the linearised rounding-error terms on the actual tensors,
#   all signs aligned; loose by design, but not a theorem about every input (second-order terms are
#   dropped),
# * a **probabilistic RMSE estimate** (independent, mean-zero rounding errors: they add in quadrature,
#   so they grow like $\sqrt n$; rows where the linearisation fails are evaluated by Monte Carlo),
# * whether and at which **stage** the pipeline overflows,
# * the **breakdown** by error term, in pipeline order.
#
# The magnitudes are the exact values on the actual tensors (*a posteriori*). This notebook checks the
# model against the harness's measurements, input by input, and reads off where each method's error
# comes from.

# %% tags=["parameters"]
# Run settings. QUICK: small shapes (seconds); False: the shapes of the committed figures (minutes).
# SAVE: write the figures (PDF, PNG and the CSV behind each) into the repository's figures/ folder.
QUICK = True
SAVE = False

# %%
from pasa_npu import data, figures
from pasa_npu.harness import run_case
from pasa_theory import bounds

OUT = figures.FIGURES_DIR if SAVE else None  # the repository's figures/, wherever the notebook runs
print("quick mode" if QUICK else "full mode")
print("error terms, in pipeline order:", ", ".join(bounds.TERMS))

# %% [markdown]
# ## 4.1 One case
#
# The published script's default case (uniform, mean 30, amplitude 0.5), one head:

# %%
q, k, v = data.make_qkv("uniform", mean=30.0, amplitude=0.5, batch=1, heads=1, kv_heads=1,
                        seq_q=32 if QUICK else 256, seq_kv=1407, head_dim=128)
methods = ["pasa", "pasa:script", "fa_qk", "fa_q"]
measured = {r["method"]: r for r in run_case(q, k, v, methods)}
print(f"{'method':16} {'RMSE meas.':>10} {'pred.':>9} {'max|err|':>9} {'bound':>9}  overflow (pred./meas.)  dominant term")
for p in bounds.predict_many(methods, q, k, v):
    r = measured[p.method]
    print(f"{p.method:16} {r['rmse']:10.3e} {p.rmse_estimate:9.3e} {r['max_abs_err']:9.3e} {p.max_abs_bound:9.3e}  "
          f"{str(p.overflow_stage):>8} / {str(r['first_nonfinite_stage']):8}   {p.dominant}")
    if p.beta is not None:
        print(f"{'':16} β = {p.beta:.7f}, c = {p.c}, κ = {p.kappa:+.2e}, regime: {p.regime}")

# %% [markdown]
# ## 4.2 Every method, the whole grid, three sequence lengths
#
# (a) The RMSE estimate against the measured RMSE, one marker per (input, method): on the line
# $y = x$ the model is exact. (b) The first-order a-posteriori evaluation against the measured maximum
# error: every marker lies above the line here (checked below, not guaranteed); how far above shows how loose the worst-case composition is
# (about $\sqrt{3n}$ from adding moduli instead of variances, more where two keys nearly tie).
# The records are those of `pasa-verify --predict` (`pasa_npu.predict_report`), which writes the
# same table for any case or the whole grid from the command line.

# %%
res = figures.predicted_vs_measured(quick=QUICK, out=OUT)
res

# %%
s = res.summary
print(f"{'method':18} {'cases':>5} {'inf/NaN':>7} {'overflow agrees':>15} {'RMSE ratio [min median max]':>30} "
      f"{'within 3x':>9} {'bound holds':>11} {'bound/max median':>16}")
for m, r in s.methods.items():
    ratio = ("—" if r.rmse_ratio_median is None
             else f"[{r.rmse_ratio_min:.2f} {r.rmse_ratio_median:.2f} {r.rmse_ratio_max:.2f}]")
    within = "—" if r.rmse_within_3x is None else f"{100 * r.rmse_within_3x:.0f} %"
    holds = "—" if r.bound_holds is None else f"{100 * r.bound_holds:.0f} %"
    bmed = "—" if r.bound_ratio_median is None else f"{r.bound_ratio_median:.0f}"
    print(f"{m:18} {r.cases:5d} {r.overflow_measured:7d} {r.overflow_agree:>9d}/{r.cases:<5d} {ratio:>30} "
          f"{within:>9} {holds:>11} {bmed:>16}")
a = s.all
print(f"\nall: {a.cases} cases, {a.overflow_cases} with inf/NaN, {a.compared} compared; "
      f"RMSE within 2x: {a.rmse_within_2x}, within 3x: {a.rmse_within_3x} ({100 * a.rmse_within_3x_fraction:.1f} %); "
      f"first-order evaluation above the error: {a.bound_ok}; overflow predicted correctly: {a.overflow_ok}/{a.cases}")
assert a.bound_ok == a.compared, "the first-order evaluation fell below the measured error somewhere"
assert a.overflow_ok == a.cases, "an overflow was mispredicted"
assert a.rmse_within_3x_fraction >= 0.9, "the RMSE estimate is off by more than 3x too often"

# %% [markdown]
# Where the overflows happen and whether the model names the same stage:

# %%
from collections import Counter

stages = Counter((r["method"], r["pred_overflow_stage"] or "-", r["first_nonfinite_stage"] or "-")
                 for r in res.rows if r["nonfinite"] or r["pred_overflow_stage"])
for (m, pred, meas), count in sorted(stages.items()):
    print(f"{m:16} predicted {pred:12} measured {meas:12} × {count}")

# %% [markdown]
# ## 4.3 Where the error comes from
#
# The RMS contribution of each term on the default case (linearised; they add in quadrature). The top
# bars are the predicted totals and the black ticks the measured RMSE; where the model evaluates rows
# by Monte Carlo (the linearisation overestimates what the softmax can do with large perturbations)
# the total can be smaller than the largest linearised term.
#
# * **fp16 flash attention** (Q pre-scaled) is dominated by `scores.round`: the scores carry the whole
#   bias, about $\tau d\mu^2 \approx 10^4$, and fp16 rounds them to a quarter of a unit or worse.
# * **The script preset** is dominated by `recovery.mean`: it rounds each block's pseudo-average
#   $\tilde\mu_j$ to fp16 and multiplies the error by $c = \beta/(1-\beta)$ — about $u\beta|\mu|$ per
#   score, the mechanism behind the β sawtooth of notebook 5.
# * **npu_fp16** rounds only the deviation of each block mean; what remains is `recovery.scores`: the
#   recovery multiplies the block mean of the score rounding errors by c, because along $\mathbf 1$ the
#   inverse of $M$ has norm $1/(1-\beta) = \kappa_2(M)$.
# * **fp16_keymean** takes the offsets from the keys' block means and loses that term; what is left is
#   the fp16 row sum and accumulator, as in any fp16 flash attention.

# %%
res = figures.error_budget(quick=QUICK, out=OUT)
res

# %%
for m, r in res.summary.items():
    top = ", ".join(f"{t} {x:.1e}" for t, x in r.top3)
    print(f"{m:18} measured {r.measured:.2e}, estimated {r.predicted:.2e}; largest terms: {top}")
assert res.summary["pasa:script"].dominant == "recovery.mean"
assert res.summary["fa_q"].dominant == "scores.round"

# %% [markdown]
# ## 4.4 Against the sequence length
#
# The same comparison along the KV length on a biased case with a soft softmax: the model follows the
# measurement as the number of blocks grows.

# %%
res = figures.error_vs_length(quick=QUICK, out=OUT)
res

# %%
s = res.summary
print(f"S2 = {s.seq_kv}: estimated / measured RMSE between {s.rmse_ratio_min:.2f} and {s.rmse_ratio_max:.2f}")
assert 1 / 3 <= s.rmse_ratio_min and s.rmse_ratio_max <= 3
