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
# # 3. Overflow and resonance
#
# fp16's largest finite value is 65504; under round-to-nearest every $|x| \ge 65520$ becomes inf.
# Where an fp16 attention pipeline overflows depends on *which* intermediate leaves the range:
#
# | method | largest matrix-unit value | with mean μ, d = 128 |
# |---|---|---|
# | `fa_qk` (QKᵀ rounded, then scaled: the vendor's high-performance arrangement) | $\max q\cdot k \approx d\mu^2$ | overflows from μ ≈ 22.6 |
# | `fa_q` (Q pre-scaled) | $\tau\max q\cdot k \approx \tau d\mu^2$ | from μ ≈ 76 |
# | `smooth_k` (K minus its global mean) | $\max q\cdot(k-\bar k)$ | only the spread of K is left |
# | PASA | $\max q\cdot(M_r k)$, leftover bias $(a-bn)\,d\mu^2$ | from μ ≈ 470 at npu_fp16's β |
#
# plus the accumulators: unnormalised O and ℓ grow like $S_2\cdot\mathrm{mean}(V)$ for flat attention.
# This notebook measures where each method first produces inf/NaN and compares it with a prediction,
# then looks at "resonance" (query and key phase-aligned along the head dimension) with statistics
# over many rows, amplitudes and seeds.

# %% tags=["parameters"]
# Run settings. QUICK: small shapes (seconds); False: the shapes of the committed figures (minutes).
# SAVE: write the figures (PDF, PNG and the CSV behind each) into the repository's figures/ folder.
QUICK = True
SAVE = False
# SWEEP_DATA: a folder keeping the kernel-run sweeps behind the figures (results/figures, as make figures),
# so a rerun resumes; None: a temporary folder. SWEEP_SPECS: figure name -> a TOML spec run instead
# of the committed one (the study at a larger size, e.g. run first on a cluster with pasa-sweep).
SWEEP_DATA = None
SWEEP_SPECS = {}

# %%
from pasa_npu import figures
from pasa_npu.kernel import shift_parameters

OUT = figures.FIGURES_DIR if SAVE else None  # the repository's figures/, wherever the notebook runs
print("quick mode" if QUICK else "full mode")
sp = shift_parameters("npu_fp16", head_dim=128)
a, b = sp.diag - sp.off, -sp.off
print(f"npu_fp16: β = {sp.beta:.7f}; the shifted scores keep (a − b·n)/τ = {(a - 128 * b) * 128**0.5:.4f} of the "
      f"block mean (1 − β = {1 - sp.beta:.4f})")
for name, thr in (("fa_qk", (65520 / 128) ** 0.5), ("fa_q", (65520 * 128**0.5 / 128) ** 0.5),
                  ("pasa", (65520 / (128 * (a - 128 * b))) ** 0.5)):
    print(f"{name:6} mean-only estimate of the overflow mean (A → 0): μ = {thr:.1f}")

# %% [markdown]
# ## 3.1 The overflow frontier
#
# For each method and amplitude, the smallest input mean at which the output contains inf/NaN
# (bisection to 1 %), on the reference benchmark's data (seed 2024724; one draw, shifted by the
# mean). The pale wide lines are the prediction of `pasa_theory.bounds.overflow_envelope`: from the
# input statistics alone (mean, spread, d, S1, S2, β), the first mean at which some stage (the score
# tile, the block offsets, the row sum or the accumulators) reaches its format's overflow threshold,
# 65520 in fp16 (an estimate; see docs/error-model.md). The census names the stage that actually
# overflowed. The envelope does not model the script preset's running-reference bookkeeping (below), so
# its band is its score stage only; `pasa_theory.bounds.predict`, which works on the actual tensors,
# does (notebook 4). The bands span the measured amplitudes, 0.5 to 20: at A = 0 the inputs are
# constant, the softmax is exactly uniform, and the envelope names the raw accumulators instead (for the
# script preset at μ = 65520/S2), a different regime that is not drawn. ▷ marks a cell that stayed
# finite up to the largest mean tried, 1024 (K smoothing at A = 0.5, and on all hybrid cells).
#
# The measured frontier is a search over `pasa-sweep` points (spec `examples/figures/overflow_frontier.toml`):
# each round of the bisection is one batch of points, so `SWEEP_DATA` (first cell) keeps them for a rerun and
# `python -m pasa_npu.figures --only overflow_frontier --spec SPEC --sweep-data DIR --executor dask
# --scheduler tcp://HOST:8786` runs a larger version on a cluster (docs/sweeps.md, "Figures").

# %%
res = figures.overflow_frontier(
    quick=QUICK, out=OUT, data=figures.SweepOptions(SWEEP_DATA, spec=SWEEP_SPECS.get("overflow_frontier"))
)
res

# %%
s = res.summary
print(f"{'method':16} {'first overflow (mean)':>24} {'cells without':>14}  stages")
for meth, r in s.methods.items():
    lo, hi = r.min_overflow_mean, r.max_overflow_mean
    span = "none" if lo is None else f"{lo:8.1f} … {hi:8.1f}"
    print(f"{meth:16} {span:>24} {r.cells_without_overflow:>14}  {', '.join(r.stages) or '-'}")
pasa, fa_qk = s.methods["pasa"], s.methods["fa_qk"]
assert pasa.min_overflow_mean is None or pasa.min_overflow_mean > 10 * fa_qk.max_overflow_mean
assert fa_qk.max_overflow_mean < 30  # every mean-30 cell of the reference grid overflows

# %% [markdown]
# Measured against predicted, cell by cell (the envelope's first stage at the measured amplitude):

# %%
pred = {(r["dist"], r["amplitude"], r["method"]): (r["mean_overflow"], r["stage"]) for r in res.select(kind="predicted")}
print(f"{'method':15} {'dist':8} {'A':>5} {'measured':>9} {'stage':>12} {'predicted':>9} {'stage':>12} {'ratio':>6}")
for r in res.select(kind="measured"):
    p, p_stage = pred[(r["dist"], r["amplitude"], r["method"])]
    meas = r["mean_overflow"]
    ratio = f"{p / meas:6.3f}" if (p is not None and meas is not None) else "     —"
    print(f"{r['method']:15} {r['dist']:8} {r['amplitude']:5.1f} {meas if meas is None else round(meas, 1)!s:>9} "
          f"{r['stage'] or '-':>12} {p if p is None else round(p, 1)!s:>9} {p_stage or '-':>12} {ratio}")
# the envelope places the first overflow of the score-overflowing methods within -15 % / +10 % of the measurement
for r in res.select(kind="measured"):
    if r["method"] in ("fa_qk", "fa_q", "pasa"):
        p = pred[(r["dist"], r["amplitude"], r["method"])][0]
        assert r["mean_overflow"] is not None and p is not None, (r, p)
        assert 0.85 <= p / r["mean_overflow"] <= 1.1, (r, p)

# %% [markdown]
# Two findings beyond the score overflow: the script preset overflows at large means in its
# *accumulator* or *row sum* — its raw fp16 O and ℓ are moved every block by factors
# $e^{c(A_{prev}-A)}$ computed from pseudo-averages whose rounding error is multiplied by c — and
# bf16 and the fp32-score hybrid never overflow in this range, by their exponent range.
#
# ## 3.2 Accumulators over long sequences
#
# With nearly uniform attention over a biased V, an unnormalised accumulator reaches
# $O \approx S_2\cdot\mathrm{mean}(V)$: the script preset (raw fp16 O and ℓ, as in the published
# script) is predicted to overflow at $S_2 = 65520/\mathrm{mean}(V)$. npu_fp16 renormalises O and ℓ by
# powers of two (exact scaling), flash attention here inherits that.

# %%
res = figures.accumulator_overflow(quick=QUICK, out=OUT)
res

# %%
s = res.summary
for vm in (10.0, 30.0):
    print(f"mean(V) = {vm:4.0f}: predicted S2* = {s.predicted_threshold_seq_kv[vm]:7.0f}; script preset "
          f"finite up to S2 = {s.reference_last_finite_seq_kv[vm]}, first inf/NaN at S2 = {s.reference_first_overflow_seq_kv[vm]}")
print(f"npu_fp16: {s.npu_fp16_nonfinite} non-finite outputs, largest relative RMSE {s.npu_fp16_max_rel_rmse:.2e}")
assert s.npu_fp16_nonfinite == 0
scanned = sorted({r["seq_kv"] for r in res.rows})
for vm in (10.0, 30.0):
    first, last = s.reference_first_overflow_seq_kv[vm], s.reference_last_finite_seq_kv[vm]
    pred = s.predicted_threshold_seq_kv[vm]
    if scanned[-1] > pred:  # the scan passes the predicted threshold: the script preset must overflow
        assert first is not None and pred <= first <= 2 * pred, (vm, first, pred)
    else:
        assert first is None, (vm, first, pred)
    assert last is None or last <= 2 * pred

# %% [markdown]
# ## 3.3 Resonance
#
# The PASA authors trace the overflow in video diffusion to a "resonance" of query and key along the
# head dimension: phase alignment (0°) or anti-alignment (180°). `pasa_npu.data.make_resonant` builds
# it: every token carries one sinusoid over the head dimension with a random amplitude in
# $[A/2, A]$, plus noise; keys share the queries' phase (aligned), its opposite (anti), or draw their
# own (random, the control). Reviewers asked for statistics, not single plots; so every panel below
# pools all query rows of 8 seeds per amplitude (2 in quick mode).
#
# (a) The largest score grows like $A^2 d/2$ for *all three* phase patterns: a random phase still
# pairs some tokens in phase. The vendor-style fp16 FA overflows once $A^2 d/2 \gtrsim 65520$,
# A ≈ 32 at d = 128; with anti-aligned phases the overflowing scores are *negative*, become −inf and
# get weight 0, so the output stays finite (and wrong only where those keys mattered). (b) What differs is the structure of a score row: aligned and anti-aligned
# inputs give every row a common bias about 5 times its spread, random phases none. (c) PASA's
# shift removes the block mean, so it shrinks the largest score of a row by the bias-to-spread
# ratio on resonant inputs and not at all on the control.

# %%
res = figures.resonance_statistics(quick=QUICK, out=OUT)
res

# %%
s = res.summary
print(f"predicted overflow amplitude of fa_qk (A²d/2 = 65520): {s.predicted_overflow_amplitude:.1f}")
print("fa_qk: largest finite amplitude / first overflowing amplitude per phase:",
      {ph: (s.fa_qk_last_finite_amplitude[ph], s.fa_qk_first_overflow_amplitude[ph]) for ph in s.fa_qk_first_overflow_amplitude})
print("max|q·k| / (A²d/2), worst over amplitudes and seeds:", {k: round(v, 3) for k, v in s.max_qk_over_prediction.items()})
print("median |row mean| / row std:", {k: round(v, 3) for k, v in s.bias_to_spread_median.items()})
print("median shrink of the largest score by the shift:", {k: round(v, 2) for k, v in s.shift_shrink_median.items()})
print(f"query rows per phase: {s.rows_per_phase}")
assert s.bias_to_spread_median["aligned"] > 10 * s.bias_to_spread_median["random"]

# %% [markdown]
# Accuracy on the same inputs, as a paired ratio to naive fp16 attention on each input (the seeds
# differ a lot in how sharp the softmax is, the ratio cancels that). In fp16 the shift buys accuracy
# only where there is a common bias to remove; bf16 never overflows but is several times less
# accurate than fp16 everywhere (three fewer significand bits: the reviewers' question whether
# resonance in bf16 costs precision instead of range: it does).

# %%
res = figures.resonance_accuracy(quick=QUICK, out=OUT)
res

# %%
s = res.summary
print(f"{'method':18} {'aligned':>9} {'anti':>9} {'random':>9}   (median of per-amplitude medians of the ratio)")
for m in ("pasa", "pasa:script", "pasa:fp16_keymean", "fa_qk", "fa_q", "smooth_k", "pasa:bf16", "fa_hybrid"):
    vals = [s.ratio_to_naive_median[ph][m] for ph in ("aligned", "anti", "random")]
    print(f"{m:18} " + " ".join(f"{v:9.3f}" if v is not None else f"{'-':>9}" for v in vals)
          + f"   overflowed runs: {s.overflowed[m]}")
