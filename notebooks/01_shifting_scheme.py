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
# # 1. The shifting scheme
#
# PASA (online pseudo-average shifting attention) runs flash attention entirely in fp16. It shifts
# every block of scores by β times its row mean with the **shifting matrix**
#
# $$M = \sigma\left(I_n - \tfrac{\beta}{n} J\right), \qquad J = \mathbf{1}\mathbf{1}^\top,\quad 0<\beta<1,$$
#
# applied to each KV block of keys ($\tilde K_j = M K_j$), and recovers the shift online, so that the
# result is exactly softmax attention. $\sigma$ is the softmax scale when it is folded into $M$
# (as the published script does), else 1.
#
# This notebook walks through the derivation with the symbolic objects of `pasa_theory.scheme`
# (every identity shown is verified by sympy, and by the test suite), then checks numerically that the
# tiled kernel of `pasa_npu`, run entirely in float64, is softmax attention.
#
# The first code cell sets `QUICK` (small shapes, seconds; set it to `False` for the shapes of the committed
# figures) and `SAVE` (write the figures into the repository's `figures/` folder); the test suite runs
# every notebook with `QUICK = True`, `SAVE = False`. The method is described in docs/method.md.

# %% tags=["parameters"]
# Run settings. QUICK: small shapes (seconds); False: the shapes of the committed figures (minutes).
# SAVE: write the figures (PDF, PNG and the CSV behind each) into the repository's figures/ folder.
QUICK = True
SAVE = False

# %%
import sympy
from IPython.display import Math, display

import pasa_theory as pt
from pasa_npu import figures
from pasa_theory import scheme

OUT = figures.FIGURES_DIR if SAVE else None  # the repository's figures/, wherever the notebook runs
print("quick mode" if QUICK else "full mode")


def show(identity):
    """Render a verified identity: its statement, and whether sympy proves it."""
    ok = identity.verify()
    display(Math(rf"{sympy.latex(identity.as_eq())}\qquad\text{{{'verified' if ok else 'NOT VERIFIED'}}}"))
    assert ok, identity.name


# %% [markdown]
# ## 1.1 The matrix and its inverse
#
# Matrices of the form $\alpha I + \gamma J$ form a commutative algebra ($J^2 = nJ$). $M$ has the
# eigenvalue $\sigma(1-\beta)$ on $\mathbf 1$ and $\sigma$ on $\mathbf 1^\perp$, so it is invertible
# exactly when $\beta \ne 1$; its inverse follows from Sherman–Morrison.

# %%
M = scheme.shifting_matrix(scaled=True)
display(Math(r"M = " + M._repr_latex_().strip("$")))
display(Math(r"M^{-1} = " + scheme.shifting_inverse(scaled=True)._repr_latex_().strip("$")))
display(Math(r"\mathrm{eig}(M) = " + sympy.latex(scheme.shifting_eigenvalues(scaled=True))
             + r"\quad(\text{eigenvalue}: \text{multiplicity})"))
by_name = {i.name: i for i in scheme.identities()}
for name in ("M·M⁻¹ = I (σ folded in)", "M⁻¹ closed form = Sherman–Morrison (σ folded in)",
             "det M (σ folded in)"):
    print(name)
    show(by_name[name])

# %% [markdown]
# ## 1.2 What the shift does, and the recovery identity
#
# For raw scores $s_k$ of one block with mean $\mu$, the shifted scores lose β times the block mean,
# and their mean keeps the fraction $1-\beta$ of it. Adding $c\cdot\mathrm{mean}(\tilde s)$ with the
# recovery coefficient $c = \beta/(1-\beta)$ gives back the (scaled) scores exactly:

# %%
for name in ("shifted score (σ folded in)", "shifted mean (σ folded in)", "recovery identity (M3) (σ folded in)"):
    print(name)
    show(by_name[name])
display(Math(r"c = " + sympy.latex(scheme.recovery_coefficient_expr())))

# %% [markdown]
# The price is visible already: the recovery multiplies any error in $\mathrm{mean}(\tilde s)$ by
# $c = \beta/(1-\beta)$, which is about 31 at β ≈ 0.969 and 64 at β ≈ 0.9845. Notebooks 2 and 5 measure
# what this gain costs.
#
# ## 1.3 Online global recovery
#
# Each block is shifted by its *own* pseudo-average. The loop of the algorithm keeps its statistics
# relative to a per-row reference $c\cdot A_j$, $A_j$ the running mean of the block pseudo-averages,
# and moves them whenever the reference moves. Our statement of the recovery theorem
# (`pasa_theory.scheme`, module docstring): after block $j$,
#
# $$\ell_j = e^{-cA_j - M_j}\sum_{i\le j}\sum_k e^{s_{i,k}}, \qquad
#   O_j = e^{-cA_j - M_j}\sum_{i\le j}\sum_k e^{s_{i,k}} v_{i,k},$$
#
# for *any* choice of the running maxima $M_j$ (they only keep the exponentials in range), so
# $O/\ell$ is exactly $\mathrm{softmax}(s)\,V$. The proof is a step lemma (true for a symbolic block
# index $j$ and an arbitrary new reference) plus the running-mean lemma; the 2- and 3-block loops are
# also checked in full.

# %%
for name in ("online step lemma, ℓ", "online step lemma, O", "running-mean lemma"):
    print(name)
    show(by_name[name])
two = scheme.online_recovery(2)
print("the loop over 2 blocks, output O/ℓ (maxima m_i, M_i are free symbols):")
display(Math(r"\frac{O}{\ell} = " + sympy.latex(sympy.simplify(two.output()))))
show(by_name["online output = softmax attention, 2 blocks"])
print("after the last (full) block the reference is σβ times the global mean of the raw scores:")
show(by_name["global reference c·A = σβ·mean, 3 blocks"])

# %% [markdown]
# ## 1.4 The rounded matrix and κ
#
# Stored in fp16, the entries of $M$ are rounded: the diagonal to $fl(\sigma(1-\beta/n))$, the rest to
# $fl(-\sigma\beta/n)$. The stored matrix is still exactly $M_r = aI - bJ$ with
# $b = -fl(-\sigma\beta/n)$ and $a = fl(\sigma(1-\beta/n)) + b$. Recovering with a coefficient $c$
# leaves the error
#
# $$\hat s_k - \sigma s_k = (a-\sigma)(s_k-\mu) + \mu\,\kappa_{abs},\qquad
#   \kappa_{abs} = (a-\sigma) + c(a-bn) - bn,$$
#
# a tiny change of softmax temperature plus a constant per block, $\kappa\,\sigma\mu$, which
# reweights block $j$ against block $j'$ by $e^{\kappa\sigma(\mu_j-\mu_{j'})}$.

# %%
for name in ("M_r·M_r⁻¹ = I", "exact inverse recovers s", "recovery error split (B3)", "κ = 0 at c = F",
             "κ at c = f (paper form)"):
    print(name)
    show(by_name[name])
display(Math(r"\kappa = " + sympy.latex(scheme.kappa())))
display(Math(r"\text{paper form (B4):}\ \frac{\beta}{1-\beta} = " + sympy.latex(scheme.paper_rhs())
             + r"\qquad\text{kappa form (B5):}\ \frac{\beta}{1-\beta} = " + sympy.latex(sympy.factor(scheme.kappa_rhs()))))

# %% [markdown]
# The published β = 0.9689939 and what fp16 makes of $M$ at n = 128 (σ = 1), exactly:

# %%
beta = "0.9689939"
diag, off = pt.shifting_entries("fp16", 128, beta)
a, b = pt.rounded_ab("fp16", 128, beta)
c_script = pt.recovery_coefficient("fp16", 128, beta, source="beta", vector_format="fp16")
print(f"stored entries: diag = {diag} = {float(diag)!r}, off = {off} = {float(off)!r}")
print(f"a = {a} ({float(a)!r}), b = {b} ({float(b)!r})")
print(f"c = fl16(β/(1−β)) = {c_script}; κ = {float(pt.kappa('fp16', 128, beta, vector_format='fp16')):.3e}")
print(f"c from the rounded matrix (κ = 0 before storing c): {float(pt.recovery_coefficient('fp16', 128, beta)):.10f}")

# %% [markdown]
# ## 1.5 Every identity of the derivation
#
# The whole catalogue of `pasa_theory.scheme`, each `simplify(lhs − rhs) == 0`, and explicit sympy
# matrices of small sizes cross-checking the closed forms:

# %%
results = scheme.verify_all()
print(f"{sum(results.values())}/{len(results)} identities verified")
assert all(results.values()), [k for k, v in results.items() if not v]
checks = list(scheme.explicit_matrix_checks((2, 3) if QUICK else (2, 3, 4, 5)))
print(f"{sum(ok for *_, ok in checks)}/{len(checks)} explicit-matrix checks passed")
assert all(ok for *_, ok in checks)

# %% [markdown]
# ## 1.6 Numerically: PASA in float64 is attention
#
# The tiled kernel with every step in float64 (`precision="fp64"`): the pseudo-average shift, the
# online recovery, the running reference, all of it. On a biased case with a soft softmax it agrees
# with the float64 golden to the same order as float64 flash attention in a different operation
# order, for every β and block size, until $c = \beta/(1-\beta)$ grows past a few dozen: the
# recovery multiplies the rounding of $\tilde K = MK$ by $c$, even in float64.

# %%
res = figures.fp64_exactness(quick=QUICK, out=OUT)
res

# %%
s = res.summary
print(f"u64·max|O| = {s.unit:.3e}")
print(f"FA fp64 (Q pre-scaled): {s.fa_q_units:.0f} units")
print(f"PASA fp64, c <= 64: at most {s.pasa_max_units_c_le_64:.0f} units ({s.pasa_over_fa_q_c_le_64:.2f} x FA fp64)")
print(f"PASA fp64, any β tried: at most {s.pasa_max_units:.0f} units (max abs error {s.pasa_max_abs_err:.2e})")
assert s.pasa_over_fa_q_c_le_64 < 4, "PASA in fp64 should match fp64 flash attention for moderate c"

# %% [markdown]
# One more check of the tiling itself: a ragged last block, GQA and a causal mask, against the golden.

# %%
import torch

from pasa_npu import data, golden_attention, metrics, pasa_attention

q, k, v = data.make_qkv("uniform", batch=1, heads=4, kv_heads=2, seq_q=70, seq_kv=333, head_dim=64,
                        mean=2.0, amplitude=1.0, seed=1, dtype=torch.float64)
for causal in (False, True):
    out = pasa_attention(q, k, v, precision="fp64", is_causal=causal)
    gold = golden_attention(q, k, v, is_causal=causal)
    print(f"causal={causal}: {metrics.error_summary(out, gold)}")
    assert metrics.max_abs_error(out, gold) < 1e-12
