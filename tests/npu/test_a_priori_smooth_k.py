"""Theorem 2 (the a-priori bound) for ``smooth_k``: fa_qk on the smoothed keys K″ = fl_in(fl_vd(K − k̄)),
k̄ = fl_vd(fp32 mean of K over the sequence) (docs/bounds.md §19.2, Lemma 19.2), attacked.

Every end-to-end case runs the real method (pasa_npu.methods.run_method), measures max|O − O_exact|
against the float64 golden on the *given* K and requires it below ``a_priori("smooth_k",
stats_of(q, k, v))``; an inf/NaN output requires an infinite bound. Where the scores are small the bound
must also be informative (below the hull cap max|v_r − o|). Lemma 19.2 itself is checked against the
kernel's own smoothed keys (computed here by torch as the method does): |K″| ≤ K_p, and the residual
K″ − (K − k̄) is within δ and attains it on constructed fp16 ties. Two naive versions fail: the
constants of fa_qk (k_max: "smoothing never enlarges the keys") and Lemma 19.2 with the exact mean in
place of the rounded one (k_dev alone): on constructed keys both give a finite bound where the kernel's
output is NaN.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from pasa_npu.golden import golden_attention
from pasa_npu.methods import run_method
from pasa_theory import policies, rigorous
from tests.npu.helpers import grid_qkv, seeded_mask

_TORCH = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _run(q, k, v, *, precision="npu_fp16", block_kv=128, is_causal=False, mask=None, scale=None):
    """(err, a-priori result, hull cap): err = max|O − O_exact| (inf if the output is not finite), cap =
    the largest max_r|v_r − o| over rows and columns (over every key, so ≥ each row's cap)."""
    kw = dict(block_kv=block_kv, is_causal=is_causal, attn_mask=mask, scale=scale)
    out = run_method("smooth_k", q, k, v, precision=precision, **kw).double()
    gold = golden_attention(q, k, v, is_causal=is_causal, attn_mask=mask, scale=scale)
    err = float((out - gold).abs().max()) if torch.isfinite(out).all() else math.inf
    st = rigorous.stats_of(q, k, v, attn_mask=mask)
    apb = rigorous.a_priori("smooth_k", st, precision=precision, block_kv=block_kv, scale=scale)
    vd = v.double()
    G = q.shape[1] // k.shape[1]
    vmax = vd.amax(dim=2, keepdim=True).repeat_interleave(G, dim=1)
    vmin = vd.amin(dim=2, keepdim=True).repeat_interleave(G, dim=1)
    cap = float(torch.maximum(vmax - gold, gold - vmin).max())
    return err, apb, cap


def _holds(err, apb, what):
    assert err <= apb.bound, f"{what}: err {err:.3e} > a-priori bound {apb.bound:.3e} (terms {apb.terms})"


def _small(s1, s2, group, d, seed, kmean=30.0):
    """Small scores, biased keys: q uniform(0, 0.5), k uniform(kmean, 0.5), v uniform(0, 1)."""
    q, _, v = grid_qkv(s1, s2, group, d=d, seed=seed, mean=0.0, amp=0.5, dtype=torch.float16)
    _, k, _ = grid_qkv(s1, s2, group, d=d, seed=seed + 1000, mean=kmean, amp=0.5, dtype=torch.float16)
    _, _, v = grid_qkv(s1, s2, group, d=d, seed=seed + 2000, mean=0.0, amp=1.0, dtype=torch.float16)
    return q, k, v


@pytest.mark.parametrize(
    "mean,amp",
    [
        (0.0, 1.0),
        (10.0, 2.0),
        (0.0, 20.0),
        (20.0, 5.0),
        (30.0, 10.0),
    ],
)
def test_holds_on_grid_corners(mean, amp):
    q, k, v = grid_qkv(16, 700, 2, d=128, seed=3, mean=mean, amp=amp, dtype=torch.float16)
    err, apb, _ = _run(q, k, v)
    _holds(err, apb, f"uniform {mean}±{amp}")


@pytest.mark.parametrize("kmean", [0.0, 10.0, 30.0])
def test_biased_keys_informative_where_fa_qk_is_not(kmean):
    """Keys of mean kmean ± 0.5 with small q: K″ ≈ ±0.5 while |K| ≈ kmean. The bound holds, is below the
    hull cap, and for biased keys it is below fa_qk's a-priori bound on the same statistics (which is
    above the cap there: its scores are kmean/0.5 times larger)."""
    q, k, v = _small(16, 1407, 2, 128, seed=11, kmean=kmean)
    err, apb, cap = _run(q, k, v)
    _holds(err, apb, f"keys {kmean}±0.5")
    assert apb.bound < cap, f"vacuous: bound {apb.bound:.3e} >= cap {cap:.3e}"
    if kmean >= 10:
        fa = rigorous.a_priori("fa_qk", rigorous.stats_of(q, k, v))
        assert apb.bound < fa.bound and fa.bound >= cap, (apb.bound, fa.bound, cap)


@pytest.mark.parametrize(
    "s1,s2,causal,d,n",
    [(1, 513, False, 64, 128), (40, 40, True, 32, 16), (300, 70, True, 64, 32), (9, 129, False, 256, 64)],
)
def test_holds_on_causal_decode_and_ragged_shapes(s1, s2, causal, d, n):
    q, k, v = grid_qkv(s1, s2, 2, d=d, seed=5, mean=5.0, amp=3.0, dtype=torch.float16)
    err, apb, _ = _run(q, k, v, block_kv=n, is_causal=causal)
    _holds(err, apb, f"S1={s1} S2={s2} causal={causal} d={d} n={n}")
    q, k, v = _small(s1, s2, 2, d, seed=6)
    err, apb, cap = _run(q, k, v, block_kv=n, is_causal=causal)
    _holds(err, apb, f"small scores S1={s1} S2={s2} causal={causal} d={d} n={n}")
    assert apb.bound < cap


@pytest.mark.parametrize("d", [32, 64, 96, 128, 256])
def test_holds_and_informative_for_every_head_dim(d):
    q, k, v = _small(8, 300, 2, d, seed=7, kmean=20.0)
    err, apb, cap = _run(q, k, v)
    _holds(err, apb, f"d={d}")
    assert apb.bound < cap


@pytest.mark.parametrize("kind", ["bool", "bool_rows", "additive"])
def test_holds_with_masks(kind):
    q, k, v = _small(20, 300, 2, 64, seed=8, kmean=10.0)
    mask = seeded_mask(kind, 20, 300, 2, seed=4)
    err, apb, _ = _run(q, k, v, mask=mask)
    _holds(err, apb, f"mask={kind}")
    assert (rigorous.stats_of(q, k, v, attn_mask=mask).mask_max > 0) == (kind == "additive")


@pytest.mark.parametrize("prec", ["hybrid", "bf16", "fp32", "fp16_strict"])
def test_holds_at_other_precisions(prec):
    dt = _TORCH[policies.resolve("smooth_k", prec).matmul_in.name]
    q, k, v = (x.to(dt) for x in _small(16, 300, 2, 64, seed=9, kmean=20.0))
    err, apb, cap = _run(q, k, v, precision=prec)
    _holds(err, apb, prec)
    assert apb.bound < cap


# -- Lemma 19.2 against the kernel's own smoothed keys ----------------------------------------------------


def _kernel_keys(k, prec):
    """K″ and k̄ as pasa_npu.methods._smooth_k computes them (k.to(vector), torch mean, difference, then the
    kernel's cast to the matrix unit's format), in float64."""
    pol = policies.resolve("smooth_k", prec)
    kv = k.to(_TORCH[pol.vector.name])
    kb = kv.mean(dim=2, keepdim=True)
    return (kv - kb).to(_TORCH[pol.matmul_in.name]).double(), kb.double()


def _tie_keys(prec, seed=1):
    """One key column per head coordinate with the other keys equal, so that K − k̄ of the odd key is an
    exact midpoint of the format K″ is stored in: npu_fp16, key 0.25 + odd·2⁻¹² against k̄ ∈ [1, 2)
    (spacing 2⁻¹⁰), K − k̄ ∈ (−0.75, −0.5] on fp16's 2⁻¹¹ grid; hybrid, 15 zeros and one key a ∈ [1, 2)
    with 15a/16 an fp16 midpoint (fp32 holds K − k̄ = 15a/16 exactly, the cast to fp16 rounds it)."""
    g = torch.Generator().manual_seed(seed)
    d = 128
    if prec == "npu_fp16":
        S2, r = 64, 17
        base = 1 + torch.randint(0, 64, (d,), generator=g).double() * 2**-10
        odd = 0.25 + (2 * torch.randint(0, 512, (d,), generator=g).double() + 1) * 2**-12
    else:
        S2, r = 16, 5
        a = torch.arange(1024, 2048).double() * 2**-10
        x = 15 * a / 16
        ties = a[((x.half().double() - x).abs() == 2**-12) & (x < 0.99)]  # in [0.5, 1): half-ulp 2⁻¹²
        base = torch.zeros(d, dtype=torch.float64)
        odd = ties[torch.randint(0, ties.numel(), (d,), generator=g)]
    k = base.repeat(S2, 1)
    k[r] = odd
    return k[None, None].half(), r


@pytest.mark.parametrize("prec", ["npu_fp16", "hybrid"])
def test_lemma_19_2_residual_is_attained(prec):
    """|K″| ≤ K_p, and the residual ε = K″ − (K − k̄) (k̄ the kernel's rounded mean) satisfies
    max_r τ|q·ε_r| ≤ τ·d·q_max·δ (the ``smoothed_keys`` term of Theorem 2) and reaches it exactly for q
    aligned with the signs of ε on the midpoint keys: a Lemma 19.2 without the rounding of K − k̄ (δ = 0)
    is false, and so is any smaller δ. The theorem then holds end to end on the same keys."""
    k, r = _tie_keys(prec)
    kpp, kb = _kernel_keys(k, prec)
    eps = (kpp - (k.double() - kb))[0, 0]
    assert torch.all(eps[torch.arange(eps.shape[0]) != r] == 0)
    q = (torch.sign(eps[r]) * 2).half()[None, None, None]  # q_max = 2, aligned with key r's residual
    v = torch.rand(1, 1, k.shape[2], k.shape[3], generator=torch.Generator().manual_seed(2)).half()
    st = rigorous.stats_of(q, k, v)
    Kp, delta, ovf = rigorous._smoothed_key_bounds(policies.resolve("smooth_k", prec), st)
    assert not ovf and float(kpp.abs().max()) <= Kp
    tau = 1 / math.sqrt(k.shape[3])
    resid = tau * float((q.double()[0, 0] @ eps.T).abs().max())
    apb = rigorous.a_priori("smooth_k", st, precision=prec)
    term = apb.terms["smoothed_keys"]
    assert term == tau * k.shape[3] * st.q_max * delta
    # attained: exactly at npu_fp16; at hybrid up to the fp32 subtraction's half-ulp (2⁻²⁵ of δ ≈ 2⁻¹²,
    # exact on these keys), so ≥ 0.999 of the term (a δ 1 % smaller fails)
    assert resid <= term and resid >= (1 - 1e-3) * term, (resid, term)
    err, apb2, _ = _run(q, k, v, precision=prec)
    _holds(err, apb2, f"tie keys {prec}")


# -- naive versions that fail ------------------------------------------------------------------------------


def _nan_case(kind):
    """Inputs where the kernel's smoothed keys reach twice what a naive constant allows, and the fp16
    score product overflows (≥ 65 520): the method returns NaN.

    ``outlier``: per column 127 keys −1 and one key +1 (k_max = 1): k̄ = −0.984375, the outlier's K″ =
    1.984375, and q = 300 on d = 128 gives 76 200. ``tie``: keys 1000 and 1000.5 alternating, exact mean
    1000.25 (deviation 0.25) on an fp16 midpoint, rounded to 1000: K″ ∈ {0, 0.5}, and q = 1024 gives
    65 536."""
    d, S2 = 128, 128
    if kind == "outlier":
        k = -torch.ones(1, 1, S2, d)
        k[:, :, 37] = 1
        qv = 300.0
    else:
        k = 1000 + 0.5 * (torch.arange(S2) % 2).double()[None, None, :, None].repeat(1, 1, 1, d)
        qv = 1024.0
    q = torch.full((1, 1, 2, d), qv)
    v = torch.rand(1, 1, S2, d, generator=torch.Generator().manual_seed(3))
    return q.half(), k.half(), v.half()


def test_fa_qk_constants_do_not_cover_smooth_k():
    """'Smoothing only makes keys smaller' is false: one outlier against a biased background doubles it.
    fa_qk's Theorem 2 on the same statistics is finite while smooth_k's output is NaN; Theorem 2 for
    smooth_k is +∞ (overflow possible), with k_dev and with k_max alone."""
    q, k, v = _nan_case("outlier")
    err, apb, _ = _run(q, k, v)
    assert math.isinf(err)
    st = rigorous.stats_of(q, k, v)
    _holds(err, apb, "smooth_k")
    _holds(err, rigorous.a_priori("smooth_k", dataclasses.replace(st, k_dev=None)), "smooth_k without k_dev")
    with pytest.raises(AssertionError, match="a-priori bound"):
        _holds(err, rigorous.a_priori("fa_qk", st), "fa_qk's constants")


def test_the_rounding_of_the_mean_is_needed(monkeypatch):
    """Lemma 19.2 with the exact mean in place of the rounded one (|K″| ≤ k_dev plus the subtraction's
    rounding) gives a finite bound where the output is NaN: the rounding of the mean 1000.25 to 1000
    doubles K″. The lemma with e_k̄ says overflow is possible."""
    q, k, v = _nan_case("tie")
    err, apb, _ = _run(q, k, v)
    assert math.isinf(err)
    st = rigorous.stats_of(q, k, v)
    assert st.k_dev == pytest.approx(0.25, rel=1e-9)
    _holds(err, apb, "rounded mean")
    assert apb.overflow_possible
    f16 = rigorous._FORMATS["fp16"]

    def exact_mean(pol, stats):
        h = float(f16.hulp(stats.k_dev))
        return stats.k_dev + h, h, False

    monkeypatch.setattr(rigorous, "_smoothed_key_bounds", exact_mean)
    with pytest.raises(AssertionError, match="a-priori bound"):
        _holds(err, rigorous.a_priori("smooth_k", st), "exact mean")


# -- the statistic and bad input ---------------------------------------------------------------------------


def test_stats_of_k_dev_bounds_the_exact_deviation():
    """k_dev ≥ max |k − exact mean| (exact rational arithmetic on a small case), and not far above it."""
    from fractions import Fraction

    q, k, v = grid_qkv(2, 37, 1, kv_heads=2, d=8, seed=4, mean=3.0, amp=2.0, dtype=torch.float16)
    kd = k.double().numpy()
    exact = Fraction(0)
    for b in range(kd.shape[0]):
        for h in range(kd.shape[1]):
            for c in range(kd.shape[3]):
                col = [Fraction(float(x)) for x in kd[b, h, :, c]]
                m = sum(col) / len(col)
                exact = max(exact, max(abs(x - m) for x in col))
    st = rigorous.stats_of(q, k, v)
    assert Fraction(st.k_dev) >= exact and st.k_dev <= float(exact) * (1 + 1e-12)


def test_k_dev_is_optional_and_only_tightens():
    q, k, v = _small(8, 300, 1, 64, seed=12, kmean=5.0)
    st = rigorous.stats_of(q, k, v)
    with_dev = rigorous.a_priori("smooth_k", st)
    without = rigorous.a_priori("smooth_k", dataclasses.replace(st, k_dev=None))
    assert with_dev.bound <= without.bound
    err, _, _ = _run(q, k, v)
    _holds(err, without, "without k_dev")
    old = rigorous.InputStats(1.0, 1.0, 1.0, 2.0, 64, 256)  # constructed as before the field existed
    assert old.k_dev is None and math.isfinite(rigorous.a_priori("smooth_k", old).bound)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
@pytest.mark.parametrize("method", ["smooth_k", "fa_qk", "pasa"])
def test_bad_k_dev_is_a_value_error(bad, method):
    st = rigorous.InputStats(1.0, 1.0, 1.0, 2.0, 64, 256, k_dev=bad)
    with pytest.raises(ValueError, match="k_dev"):
        rigorous.a_priori(method, st)


def test_grows_with_every_input_bound():
    st = rigorous.InputStats(0.5, 30.5, 1.0, 2.0, 64, 512, k_dev=0.6)
    b0 = rigorous.a_priori("smooth_k", st).bound
    assert 0 < b0 < math.inf
    for key, val in dict(q_max=1.0, k_max=61.0, v_abs=2.0, v_spread=4.0, seq_kv=2048, k_dev=1.2).items():
        assert rigorous.a_priori("smooth_k", dataclasses.replace(st, **{key: val})).bound >= b0, key
