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
# # 6. Beyond PASA
#
# How close can a fully fp16 flash attention come to `fa_hybrid` (fp16 matrix unit, fp32 scores and
# vector unit)? Three things, described in docs/beyond.md:
#
# 1. every arrangement's relative RMSE ÷ `fa_hybrid`'s on the reference grid (uniform and hybrid data ×
#    mean {0, 10, 20, 30} × amplitude {0.5, 5, 10, 20}, seed 2024724; the reference group: 7 query heads on
#    1 KV head, S = 1407, d = 128; quick mode: one head, S1 = 32, S2 = 256), including the `fp16_accurate` preset (the reference in the
#    matrix unit's accumulator, docs/precision.md §6), with the **floor** of any fully fp16 vector
#    unit, an estimate from a rounding model (`pasa_theory.floor`);
# 2. the same under two narrower matrix-unit accumulators: fp16 accumulation (NVIDIA's fp16-accumulate
#    MMA) and the 13-mantissa-bit "FP22" accumulator of FP8 MMA (docs/beyond.md §1);
# 3. a cost model per tile (`pasa_theory.cost`): matrix-unit FLOPs with extra columns padded to 16,
#    vector-unit operations, bytes from the matrix unit to the vector unit.

# %% tags=["parameters"]
# Run settings. QUICK: small shapes (seconds); False: the shapes of the committed figure (minutes).
# SAVE: write the figure (PDF, PNG and the CSV behind it) into the repository's figures/ folder.
QUICK = True
SAVE = False

# %%
from pasa_npu import PRESETS, figures
from pasa_npu.figures import beyond
from pasa_theory import cost, floor

OUT = figures.FIGURES_DIR if SAVE else None  # the repository's figures/, wherever the notebook runs
print("quick mode" if QUICK else "full mode")
print("grid shape:", beyond.grid_shape(QUICK))
print("accumulator panel shape:", beyond.mma_shape(QUICK))
for name, fields in beyond.MMA_MODELS.items():
    print(f"  accumulator {name:5}", fields or "(matmul_acc, one rounding)")
print(PRESETS["fp16_accurate"].describe())

# %% [markdown]
# ## 6.1 Every arrangement ÷ fa_hybrid, the floor, the accumulators and the cost
#
# Top: one marker per cell and method (measurements), the floor of a fully fp16 vector unit (dashed,
# an estimate) and the 5× line (dotted). Middle: the same ratios with the fp32, fp16 and FP22
# accumulators (denominator: `fa_hybrid` with the fp32 accumulator). Bottom: the cost per 128 × 128 tile.

# %%
res = figures.beyond_pasa(quick=QUICK, out=OUT)
res

# %%
s = res.summary


def fmt(sp):
    if sp.max is None:
        return f"{'—':>8} {'—':>8}  inf/NaN {sp.nonfinite_cells}/{sp.cells}"
    return f"{sp.max:8.3g} {sp.median:8.3g}  inf/NaN {sp.nonfinite_cells}/{sp.cells}"


print(f"{'method':20} {'max':>8} {'median':>8}   (÷ fa_hybrid over the cells)")
for m, sp in s.grid.items():
    print(f"{m:20} {fmt(sp)}")
print(f"{'floor (estimate)':20} {fmt(s.floor)}   largest E_w|x| = {s.ew_abs_x_max:.3g}")
for model, by in s.mma.items():
    print(f"--- accumulator {model}")
    for m, sp in by.items():
        print(f"{m:20} {fmt(sp)}")
assert s.grid["pasa:fp16_accurate"].nonfinite_cells == 0
assert s.grid["pasa:npu_fp16"].nonfinite_cells == 0

# %% [markdown]
# ## 6.2 The floor, model against its Monte Carlo
#
# `pasa_theory.floor.fp16_vector_floor` linearises the model; `floor_monte_carlo` samples the same model
# (every rounding an independent uniform error) in plain float64. They agree to a few per cent.

# %%
import numpy as np

rng = np.random.default_rng(0)
q = rng.uniform(-3, 3, (1, 1, 32, 64))
k = rng.uniform(-3, 3, (1, 1, 256, 64))
v = rng.standard_normal((1, 1, 256, 16))
est = floor.fp16_vector_floor(q, k, v, block_kv=64)
mc = floor.floor_monte_carlo(q, k, v, block_kv=64, samples=8)
print(f"floor: linearised {est.rel_rmse_floor:.4g}, Monte Carlo {mc[0]:.4g}; "
      f"fa_hybrid: {est.rel_rmse_hybrid:.4g}, {mc[1]:.4g}; ratio {est.ratio:.3g}")
print("floor MSE by source:", {k_: f"{v_:.3g}" for k_, v_ in est.parts.items()})
assert abs(est.rel_rmse_floor / mc[0] - 1) < 0.1

# %% [markdown]
# ## 6.3 The cost model
#
# Per 128 × 128 tile at the reference shape (11 query tiles share PASA's K̃; `fp16_accurate` repeats
# the score product for a first pass over one block per query tile and for 5 % recomputed tiles).

# %%
for c in cost.cost_table(**beyond.COST_PARAMETERS):
    print(f"{c.arrangement:14} {c.matrix_flops / 1e6:8.3f} MFLOP {c.vector_ops / 1e3:8.1f} k ops "
          f"{c.bytes_to_vector / 1e3:8.1f} kB")
