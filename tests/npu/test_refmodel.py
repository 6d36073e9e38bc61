"""The RMSE estimate of the reference path (``score_ref="hi_lo"``, ``fp16_accurate``; docs/error-model.md
§10), predicted by ``pasa_theory.predict`` and checked against the kernel's measured error.

* The rounding primitive of the simulation equals ``pasa_theory.formats.round_array`` (written apart) on
  constructed values: ties, the overflow threshold, subnormals.
* With the score tile's random phase at 0, one simulation reproduces the kernel's output (the parts
  rounded on the real grid are the kernel's steps).
* With no rounding switched on the simulation is exact attention (its ``input`` term is float64 noise),
  and with every format fp64 the estimate is float64 noise; the kernel's error there is too.
* Predicted ÷ measured RMSE within 1.25× on small cells of the reference grid, for the preset and every
  cheap variant (ref_move, ref_move_at, pv_accum, row_sum, v_center, scale), causal and decode shapes:
  a model 2× off fails. Measured on the kernel (``pasa_npu``), an implementation written apart from the
  model.
* The overflow prediction agrees with the kernel's census on a constructed score range beyond fp16.
* ``slow``: the 32 cells of the reference grid (7 query heads, 128 rows each, S2 = 1407, d = 128,
  seed 2024724): median predicted ÷ measured in [0.8, 1.25], at least 90 % within 1.5×; and the
  out-of-sample sets of docs/error-model.md §10.9.
"""

from __future__ import annotations

import statistics

import numpy as np
import pytest
import torch

from pasa_npu import PRESETS, data, golden_attention, metrics
from pasa_npu.methods import run_method
from pasa_theory import _errormodel as em
from pasa_theory import _refmodel, policies, predict
from pasa_theory._refmodel import _fl
from pasa_theory.formats import get_format, round_array

from .helpers import grid_qkv

ACC = PRESETS["fp16_accurate"]
F64 = torch.float64
ACC64 = ACC.replace(
    name="fp16_accurate@fp64", matmul_in=F64, matmul_acc=F64, matmul_out=F64, vector=F64, coef_dtype=F64
)
#: the cheap variants of the preset (docs/precision.md §6.3)
VARIANTS = {
    "preset": {},
    "rebase": dict(ref_move="rebase"),
    "theta_0.5": dict(ref_move_at=0.5),
    "theta_8": dict(ref_move_at=8.0),
    "pv_vector": dict(pv_accum="vector"),
    "row_sum_vector": dict(row_sum="vector"),
    "row_sum_vector_pairwise": dict(row_sum="vector", reduce="pairwise"),
    "v_center_none": dict(v_center="none"),
    "v_center_mean": dict(v_center="mean"),
    "scale_scores": dict(scale="scores"),
    "scale_q": dict(scale="q"),
}
#: predicted ÷ measured RMSE must lie within this factor on the small cells (achieved: 0.97–1.03)
WITHIN = 1.25


def _prec(name: str):
    return ACC.replace(**VARIANTS[name]) if VARIANTS[name] else ACC


def _pred_meas(q, k, v, prec, causal=False, mc_samples=4):
    p = predict("pasa", q, k, v, precision=prec, rigorous=False, is_causal=causal, mc_samples=mc_samples)
    out = run_method("pasa", q, k, v, precision=prec, is_causal=causal)
    gold = golden_attention(q, k, v, is_causal=causal)
    return p, metrics.rmse(out, gold), out, gold


def _check_ratio(p, meas, what, out, gold):
    ratio = p.rmse_estimate / meas
    assert 1 / WITHIN <= ratio <= WITHIN, (
        f"{what}: predicted RMSE {p.rmse_estimate:.4e}, measured {meas:.4e} (ratio {ratio:.3f}); "
        f"terms {p.terms_rms}; {metrics.error_summary(out.double(), gold)}"
    )


def test_rounding_primitive_is_round_array():
    F = get_format("fp16")
    u = 2.0**-11
    x = np.array(
        [1 + u, 1 + 3 * u, -(1 + u), 65504.0, 65519.99, 65520.0, -65520.0, 2.0**-24, 1.5 * 2.0**-25, 2.0**-26]
        + [0.0, -0.0, 3 * 2.0**-25, 2049.0, 2051.0, 1e-30, 7.7]
    )
    rng = np.random.default_rng(3)
    x = np.concatenate([x, rng.standard_normal(2000) * 10.0 ** rng.integers(-9, 6, 2000)])
    got, want = _fl(x, F), round_array(x, F)
    bad = ~((got == want) | (np.isnan(got) & np.isnan(want)))
    assert not bad.any(), f"_fl differs from round_array at {x[bad][:5]}: {got[bad][:5]} vs {want[bad][:5]}"
    assert np.signbit(_fl(np.array([-0.0]), F))[0]


def test_without_roundings_the_simulation_is_exact_attention():
    q, k, v = grid_qkv(16, 300, 2, d=64, seed=5, mean=10.0, amp=10.0, dtype=torch.float16)
    p = predict("pasa", q, k, v, precision=ACC, rigorous=False)
    scale = float(v.double().abs().max())
    assert p.terms_rms["input"] <= 1e-13 * scale, p.terms_rms
    assert p.rmse_estimate > 1e3 * p.terms_rms["input"]


def test_fp64_arrangement_is_estimated_exact():
    q, k, v = grid_qkv(16, 300, 2, d=64, seed=5, mean=10.0, amp=10.0, dtype=F64)
    p, meas, _, _ = _pred_meas(q, k, v, ACC64)
    scale = float(v.abs().max())
    assert p.rmse_estimate <= 1e-13 * scale and meas <= 1e-13 * scale, (p.rmse_estimate, meas)
    assert not p.overflow and p.first_order_estimate != p.first_order_estimate  # NaN: no first-order here


@pytest.mark.parametrize("variant", ["preset", "rebase", "row_sum_vector", "v_center_mean", "scale_scores"])
def test_without_the_random_phase_the_simulation_is_the_kernel(variant):
    """The parts of §10.7 that are rounded on the real grid are the kernel's steps: with the score tile's
    phase at 0 one simulation reproduces the kernel's output (bit for bit here; the fp32 product is numpy's,
    so another BLAS may differ in a few elements by one quantum)."""
    q, k, v = grid_qkv(1407, 512, 4, d=128, seed=2024724, mean=0.0, amp=20.0, dtype=torch.float16)
    q = q[:, :, :16]
    prec = _prec(variant)
    out = run_method("pasa", q, k, v, precision=prec).double()[0].reshape(-1, 128).numpy()
    pol = policies.resolve("pasa", prec)
    tau = 128**-0.5
    qa, ka, va = (x.double().numpy() for x in (q, k, v))
    st = _refmodel.ref_exponents(pol, qa, ka, tau)
    ex = em.Exact(qa[0].reshape(-1, 128), ka[0, 0], va[0, 0], np.tile(np.arange(16), 4), tau, 16, False)
    bl = em.make_blocks(ex, 128, pol.kv_tail)
    qm = _refmodel.queries(pol, ex.q, tau)
    s32 = (qm.astype(np.float32) @ _fl(bl.kpad, pol.matmul_in).astype(np.float32).T).astype(np.float64)
    rd = _refmodel._Round(frozenset(_refmodel.REF_TERMS) | {"input"}, np.zeros(ex.q.shape[0]))
    with np.errstate(all="ignore"):
        sim = _refmodel._simulate(pol, st, ex, bl, get_format("fp16"), rd, s32, None)
    diff = np.abs(sim - out)
    same = float((diff == 0).mean())
    assert same >= 0.99 and diff.max() <= 2.0**-10 * np.abs(out).max(), (
        f"{variant}: {same:.2%} identical, max diff {diff.max():.3e} at {np.unravel_index(diff.argmax(), diff.shape)}"
    )


CELLS = [("uniform", 0.0, 20.0), ("uniform", 30.0, 5.0), ("hybrid", 0.0, 10.0), ("hybrid", 20.0, 20.0)]


@pytest.mark.parametrize("dist,mean,amp", CELLS)
def test_estimate_matches_the_kernel_on_grid_cells(dist, mean, amp):
    q, k, v = grid_qkv(1407, 640, 4, d=128, seed=2024724, mean=mean, amp=amp, dtype=torch.float16, dist=dist)
    q = q[:, :, :16]
    p, meas, out, gold = _pred_meas(q, k, v, ACC)
    assert not p.overflow and p.overflow_stage is None
    assert p.dominant in p.terms_rms and p.rmse_estimate > 0
    _check_ratio(p, meas, f"{dist} mean {mean} amplitude {amp}", out, gold)


def _variant_case(variant, dist, mean, amp, mc_samples=4):
    q, k, v = grid_qkv(1407, 512, 4, d=128, seed=2024724, mean=mean, amp=amp, dtype=torch.float16, dist=dist)
    p, meas, out, gold = _pred_meas(q[:, :, :16], k, v, _prec(variant), mc_samples=mc_samples)
    _check_ratio(p, meas, f"{variant} on {dist} mean {mean} amplitude {amp}", out, gold)


@pytest.mark.parametrize("variant", ["rebase", "pv_vector", "row_sum_vector", "v_center_none", "scale_q"])
def test_estimate_matches_the_kernel_for_variants(variant):
    _variant_case(variant, "hybrid", 10.0, 5.0)


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_estimate_matches_the_kernel_for_every_variant(variant):
    _variant_case(variant, "hybrid", 10.0, 5.0)
    if variant != "rebase":  # see test_rebase_on_wide_scores_is_heavy_tailed
        _variant_case(variant, "uniform", 0.0, 20.0)


@pytest.mark.xfail(
    strict=True,
    reason="known miss (docs/error-model.md §10.9): with ref_move='rebase' on wide scores a row's error "
    "comes from the re-based old tile (|t_old| up to hundreds, quantum up to 0.25) of one or two keys "
    "next to the top one, a heavy-tailed outcome; the estimate is its mean over rounding outcomes, a run "
    "realises one (here 1.62x with the default 8 samples; 0.29x-1.95x on other seeds and row counts)",
)
def test_rebase_on_wide_scores_is_heavy_tailed():
    _variant_case("rebase", "uniform", 0.0, 20.0, mc_samples=8)


@pytest.mark.parametrize("kind", ["causal", "decode", "gqa_ragged"])
def test_estimate_matches_the_kernel_on_masked_and_decode_shapes(kind):
    if kind == "causal":
        q, k, v = grid_qkv(200, 200, 2, d=64, seed=9, mean=10.0, amp=10.0, dtype=torch.float16)
    elif kind == "decode":
        q, k, v = grid_qkv(1, 900, 14, kv_heads=2, d=128, seed=9, mean=0.0, amp=10.0, dtype=torch.float16)
    else:
        q, k, v = grid_qkv(37, 333, 3, kv_heads=2, d=64, seed=9, mean=20.0, amp=5.0, dtype=torch.float16)
    p, meas, out, gold = _pred_meas(q, k, v, ACC, causal=kind != "gqa_ragged")
    _check_ratio(p, meas, kind, out, gold)


def test_overflow_agrees_with_the_census():
    """Scores 2^24 apart: t = τ·(S − R) of the far key is beyond fp16's range (−inf, a `scores` census
    entry, weight 0), the output stays finite; the estimate flags the same stage."""
    d = 16
    q = torch.zeros((1, 1, 4, d), dtype=torch.float16)
    q[..., 0] = 256.0
    k = torch.zeros((1, 1, 8, d), dtype=torch.float16)
    k[0, 0, :, 0] = 1.0
    k[0, 0, 3, 0] = -65504.0
    v = torch.randn((1, 1, 8, d), generator=torch.Generator().manual_seed(0)).half()
    with metrics.census() as cen:
        out = run_method("pasa", q, k, v, precision=ACC)
    p = predict("pasa", q, k, v, precision=ACC, rigorous=False)
    assert torch.isfinite(out).all()
    assert cen.first_stage == "scores" and p.overflow_stage == "scores" and p.overflow
    q2 = q.clone()
    q2[..., 0] = 1.0  # the same keys with small scores: nothing overflows, in the kernel or the estimate
    with metrics.census() as cen2:
        run_method("pasa", q2, k, v, precision=ACC)
    p2 = predict("pasa", q2, k, v, precision=ACC, rigorous=False)
    assert cen2.first_stage is None and p2.overflow_stage is None and not p2.overflow


def test_bounds_are_left_to_the_theorems():
    """The estimate does not fill the bound fields: they are the theorems' (None with a reason where these
    do not cover the path)."""
    q, k, v = grid_qkv(8, 200, 1, d=32, seed=2, mean=0.0, amp=5.0, dtype=torch.float16)
    p = predict("pasa:fp16_accurate", q, k, v)
    assert p.rmse_estimate > 0 and p.beta is None and p.c is None
    assert p.max_abs_bound is not None or p.bound_status.startswith("not computed")


# -- slow: the reference grid and the out-of-sample sets ----------------------------------------------------


def _summary(ratios):
    rs = sorted(ratios)
    return statistics.median(rs), sum(1 / 1.5 <= r <= 1.5 for r in rs) / len(rs)


@pytest.mark.slow
def test_estimate_on_the_reference_grid():
    """docs/error-model.md §10.9: all 32 cells, 7 query heads × 128 rows, S2 = 1407, d = 128."""
    ratios, lines = [], []
    for dist in ("uniform", "hybrid"):
        for mean in (0.0, 10.0, 20.0, 30.0):
            for amp in (0.5, 5.0, 10.0, 20.0):
                q, k, v = grid_qkv(
                    1407, 1407, 7, d=128, seed=2024724, mean=mean, amp=amp, dtype=torch.float16, dist=dist
                )
                p, meas, _, _ = _pred_meas(q[:, :, :128], k, v, ACC, mc_samples=8)
                ratios.append(p.rmse_estimate / meas)
                lines.append(f"{dist} {mean} {amp}: {p.rmse_estimate:.3e} / {meas:.3e} = {ratios[-1]:.3f}")
    med, within = _summary(ratios)
    assert 0.8 <= med <= 1.25 and within >= 0.9, "\n".join(lines)


@pytest.mark.slow
def test_estimate_out_of_sample():
    """docs/error-model.md §10.9: long biased V, resonant Q/K, d = 64, causal and decode."""
    cases = [(data.make_biased_v(seq_kv=8192, seq_q=32, heads=2, kv_heads=2), False)]
    for ph in ("aligned", "anti", "random"):
        for amp in (10.0, 40.0):
            qkv = data.make_resonant(
                phase=ph, seq_q=64, seq_kv=1024, heads=2, kv_heads=2, amplitude=amp, seed=1
            )
            cases.append((qkv, False))
    for dist, mean, amp in (("uniform", 0, 20), ("uniform", 30, 5), ("hybrid", 10, 10), ("hybrid", 0, 10)):
        q, k, v = grid_qkv(1024, 1024, 4, 1, d=64, seed=7, mean=mean, amp=amp, dtype=torch.float16, dist=dist)
        cases.append(((q[:, :, :96], k, v), False))
    for dist, mean, amp in (("uniform", 10, 10), ("hybrid", 0, 5), ("hybrid", 20, 20)):
        q, k, v = grid_qkv(700, 700, 4, 1, d=128, seed=11, mean=mean, amp=amp, dtype=torch.float16, dist=dist)
        cases.append(((q, k, v), True))
    for dist, mean, amp in (("uniform", 0, 10), ("uniform", 20, 20), ("hybrid", 10, 5)):
        q, k, v = grid_qkv(1, 2000, 28, 4, d=128, seed=13, mean=mean, amp=amp, dtype=torch.float16, dist=dist)
        cases.append(((q, k, v), True))
    ratios = []
    for (q, k, v), causal in cases:
        p, meas, _, _ = _pred_meas(q, k, v, ACC, causal, mc_samples=8)
        ratios.append(p.rmse_estimate / meas)
    med, within = _summary(ratios)
    assert 0.8 <= med <= 1.25 and within >= 0.9, [f"{r:.3f}" for r in ratios]
