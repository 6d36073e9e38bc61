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
# # 5. Method comparison
#
# PASA's presets and β choices against fp16 flash attention in both scalings, the fp16/fp32 hybrid,
# global K smoothing (SageAttention style) and bf16, on the reference benchmark's grid: uniform and
# hybrid (normal + rare outliers) data × mean {0, 10, 20, 30} × amplitude {0.5, 5, 10, 20}, seed
# 2024724, fp16 inputs, against the float64 golden. Accuracy is the published script's relative RMSE
# (RMSE / RMS(V)); the yardstick is naive fp16 attention (untiled, Q pre-scaled: the same-precision
# baseline of the FlashAttention accuracy rule).

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
from pasa_npu import PRESETS, figures
from pasa_npu.methods import METHODS

OUT = figures.FIGURES_DIR if SAVE else None  # the repository's figures/, wherever the notebook runs
print("quick mode" if QUICK else "full mode")
print("shape:", figures.comparison_shape(QUICK))
for name in figures.COMPARISON_METHODS:
    desc = METHODS[name].description if name in METHODS else f"PASA at the {name.split(':')[1]} preset"
    print(f"  {name:18} {desc}")

# %% [markdown]
# The presets differ only in where they round (`pasa_npu.precision`; see docs/precision.md); for instance npu_fp16 against the
# published script's numerics:

# %%
for name in ("npu_fp16", "script"):
    print(f"--- {name}\n{PRESETS[name].describe()}")

# %% [markdown]
# ## 5.1 Accuracy relative to naive fp16 attention, every cell
#
# One marker per grid cell and method; left of the line is more accurate than naive fp16 attention.
# Filled markers are biased cells (mean > 0), open ones mean 0. Cells where every method's output is a
# row of V (an outlier key dominates every row: naive error below $u_{16}^2$) are left out; cells with
# inf/NaN sit at the right.

# %%
res = figures.method_comparison(
    quick=QUICK, out=OUT, data=figures.SweepOptions(SWEEP_DATA, spec=SWEEP_SPECS.get("method_comparison"))
)
res

# %%
s = res.summary
print(f"{'method':18} {'inf/NaN':>7} {'median rel':>10}   ratio to naive: biased [min median max]   unbiased [min median max]")


def fmt3(a, b, c):
    return "   —" if a is None else f"[{a:7.3g} {b:7.3g} {c:7.3g}]"


for m, r in s.methods.items():
    print(f"{m:18} {r.overflow_cells:7d} {r.rel_rmse_median:10.3g}   "
          f"{fmt3(r.ratio_biased_min, r.ratio_biased_median, r.ratio_biased_max):>30}   "
          f"{fmt3(r.ratio_unbiased_min, r.ratio_unbiased_median, r.ratio_unbiased_max):>30}")
print("\ncells left out (one-hot softmax):", s.cells_one_hot)
print("fa_qk overflows on:", s.fa_qk_overflow_cells)
p_min, p_med, p_max = s.pasa_over_reference
print(f"npu_fp16 / script preset, relative RMSE: min {p_min:.3f}, median {p_med:.3f}, max {p_max:.3f}")
assert s.methods["pasa"].overflow_cells == 0
if not QUICK:  # the acceptance rule of tests/npu/test_grid.py, stated for the reference shape
    assert p_max <= 1.1

# %% [markdown]
# ## 5.2 Where each method wins
#
# The most accurate method of each cell among those that compute entirely in 16-bit formats (fa_hybrid
# and SDPA keep fp32 scores and are the wide-precision references), and PASA npu_fp16's rank there:

# %%
FP16_ONLY = ("pasa", "pasa:script", "pasa:fp16_keymean", "pasa:fp16_strict", "pasa:bf16", "fa_qk", "fa_q",
             "fa_naive", "smooth_k")
cells = sorted({(r["dist"], r["mean"], r["amplitude"]) for r in res.rows})
wins = {}
print(f"{'dist':8} {'mean':>5} {'amp':>5}  {'best 16-bit method(s)':36} {'rel RMSE':>9}  {'npu_fp16':>9} rank")
for cell in cells:
    rows = {r["method"]: r for r in res.rows if (r["dist"], r["mean"], r["amplitude"]) == cell}
    if rows["fa_naive"]["rel_rmse"] < figures.ONE_HOT_BELOW:
        continue  # one-hot softmax: every finite method returns a row of V
    ranked = sorted((r["rel_rmse"], m) for m, r in rows.items() if m in FP16_ONLY and not r["nonfinite"])
    best = [m for e, m in ranked if e == ranked[0][0]]
    for m in best:
        wins[m] = wins.get(m, 0) + 1
    rank = 1 + sum(e < rows["pasa"]["rel_rmse"] for e, _ in ranked)
    print(f"{cell[0]:8} {cell[1]:5.0f} {cell[2]:5.1f}  {', '.join(best):36} {ranked[0][0]:9.2e}  "
          f"{rows['pasa']['rel_rmse']:9.2e} {rank}")
print("\ncells won (ties count for each):", dict(sorted(wins.items(), key=lambda kv: -kv[1])))

# %% [markdown]
# Reading the table and the figure:
#
# * **Overflow.** fa_qk (QKᵀ rounded before the scale) overflows on every mean-30 cell; no PASA preset
#   does.
# * **Biased data.** PASA removes the common part of the scores, so on biased cells it is several times
#   more accurate than naive fp16 attention.
# * **Unbiased, wide data.** With nothing to remove, PASA pays for its recovery: $c=\beta/(1-\beta)$
#   multiplies the rounding error of $\tilde K = M K$ along the block-mean direction
#   ($\kappa_2(M) = 1/(1-\beta)$), and npu_fp16 is then a little *less* accurate than naive fp16.
#   The fp16_keymean preset takes the block offsets from the keys' block means instead (one extra
#   score column), which removes that amplification.
# * **K smoothing** (the global mean of K, SageAttention style) is very accurate here because on this
#   data the bias is one global Q·K̄: it cannot follow a bias that changes along the sequence, which
#   the block-wise pseudo-average does.
# * **bf16** never overflows (its range is fp32's) but has three fewer significand bits than fp16: it is
#   several times less accurate than naive fp16 attention on most cells.
#
# ## 5.3 The choice of β
#
# PASA's error against β, median and range over several data draws of the published script's default
# case (uniform, mean 30, amplitude 0.5). The script preset rounds each block's pseudo-average
# $\tilde\mu_j$ to fp16, and the recovery multiplies that rounding error, up to half an ulp, by
# $c = \beta/(1-\beta)$. Within a binade of $\tilde\mu = (a-bn)\,q\cdot\bar k$ the product grows like
# $c$; where $\tilde\mu$ drops into the next binade its ulp halves. Panel (b) is
# that bound, $c\cdot\mathrm{ulp}(\tilde\mu)/2$, computed from the rounded matrix and the data alone:
# the measured teeth sit where it predicts them (dotted lines in both panels). One draw alone can hide them (the band: another
# β-independent error can dominate a single draw), which is why the error looks erratic in β.
# npu_fp16 rounds only each block mean's *deviation* from its running reference: its teeth are much
# smaller and its error 2–4 times lower; fp16_keymean takes the offsets from the keys' block means.

# %%
res = figures.beta_sweep(
    quick=QUICK, out=OUT, data=figures.SweepOptions(SWEEP_DATA, spec=SWEEP_SPECS.get("beta_sweep"))
)
res

# %%
s = res.summary
print(f"naive fp16 attention (median over {s.draws} draws): {s.naive_rel_rmse_median:.3e}")
for m, r in s.methods.items():
    print(f"{m:18} median relative RMSE over β: {r.min:.3e} … {r.max:.3e};"
          f" drop across a predicted tooth: {'—' if r.jump_at_teeth is None else f'{r.jump_at_teeth:.2f}x'}")
print("predicted teeth at β =", [round(t, 4) for t in s.teeth])
ref, npu = s.methods["pasa:script"], s.methods["pasa"]
if not QUICK:  # the coarse quick sweep does not resolve the teeth
    assert ref.jump_at_teeth > npu.jump_at_teeth > 1
    assert npu.max < ref.min

# %% [markdown]
# ## 5.3 The same figures at a larger size
#
# Both figures' data are `pasa-sweep` runs of a TOML spec (`examples/reference_grid.toml` and
# `examples/figures/beta_sweep.toml`; quick mode: `examples/figures/quick/`). To study them at the full
# reference shape or with more draws, copy a spec, edit it (`heads = 28`, `kv_heads = 4`; more seeds),
# run it on a cluster and point this notebook at the results:
#
# ```console
# $ pasa-sweep big_grid.toml --out results/big/method_comparison --executor dask --scheduler tcp://HOST:8786
# ```
#
# then set `SWEEP_DATA = "results/big"` and `SWEEP_SPECS = {"method_comparison": "big_grid.toml"}` in the
# first cell (or run `python -m pasa_npu.figures --only method_comparison --spec big_grid.toml
# --sweep-data results/big`). Finished points are read, not rerun; see docs/sweeps.md.
