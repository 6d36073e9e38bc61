"""The RMSE estimate of the reference path (``score_ref="hi_lo"``, ``fp16_accurate``) with a narrow
matrix-unit accumulator (``mma_acc`` fp16/fp22, docs/error-model.md §10.10), checked against the kernel.

* The simulation's chunked accumulation (``_refmodel.narrow_matmul``) equals the kernel's ``_mma``
  (``pasa_npu.kernel``, written apart) bit for bit on constructed values: ties of the accumulator's
  rounding, partial sums past fp16's range (nearest → inf, toward zero → saturation), a start value.
* With the score tile's phase at 0, one simulation reproduces the kernel's output.
* Predicted ÷ measured RMSE within 1.25× on small cells of the reference grid for fp16-nearest and
  FP22-toward-zero, causal, decode, ragged GQA and d = 72 (not a multiple of the chunk 16): a model 2× off
  fails.
* The overflow flag agrees with the kernel where the fp16 accumulator overflows (uniform, mean 30).
* ``slow``: the accumulation panel of figures/beyond_pasa.csv (1 head × 128 rows, S2 = 1407, d = 128,
  32 cells): median predicted ÷ measured in [0.8, 1.25], at least 90 % within 1.5×.
"""

from __future__ import annotations

import statistics

import numpy as np
import pytest
import torch

from pasa_npu import PRESETS, golden_attention, metrics
from pasa_npu.kernel import _mma
from pasa_npu.methods import run_method
from pasa_theory import _errormodel as em
from pasa_theory import _refmodel, policies, predict
from pasa_theory._accum import accumulator_of
from pasa_theory._refmodel import _fl
from pasa_theory.formats import get_format

from .helpers import grid_qkv

#: the accumulation models of the figure's panel (pasa_npu.figures.beyond.MMA_MODELS, narrow ones)
MODELS = {
    "fp16": dict(mma_acc="fp16", mma_round="nearest", mma_chunk=16),
    "fp22": dict(mma_acc="fp22", mma_round="zero", mma_chunk=16),
    "fp16_zero": dict(mma_acc="fp16", mma_round="zero", mma_chunk=16),
    "fp22_nearest_k8": dict(mma_acc="fp22", mma_round="nearest", mma_chunk=8),
}
WITHIN = 1.25


def _prec(model: str):
    return PRESETS["fp16_accurate"].replace(**MODELS[model])


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


@pytest.mark.parametrize("model", sorted(MODELS))
def test_chunked_accumulation_is_the_kernels(model):
    prec = _prec(model)
    nacc = accumulator_of(policies.resolve("pasa", prec))
    assert nacc is not None
    rng = np.random.default_rng(1)
    d = 40  # 2.5 chunks of 16
    a = _fl(rng.standard_normal((6, d)) * 30.0, get_format("fp16"))
    b = _fl(rng.standard_normal((d, 5)) * 30.0, get_format("fp16"))
    # constructed rows: a tie of the fp16 accumulator (2048 + 1), partial sums past 65504 that cancel
    a[0], b[:, 0] = 0.0, 0.0
    a[0, 0], a[0, 16], b[0, 0], b[16, 0] = 2048.0, 1.0, 1.0, 1.0
    a[1], b[:, 1] = 0.0, 0.0
    a[1, :2], b[:2, 1] = 256.0, 200.0
    a[1, 20], b[20, 1] = -256.0, 200.0
    init = _fl(rng.standard_normal((6, 5)) * 100.0, get_format("fp16"))
    for start in (None, init):
        got = _refmodel.narrow_matmul(a, b, nacc, init=start)
        ta, tb = torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)
        ti = None if start is None else torch.tensor(start, dtype=torch.float32)
        want = _mma(ta, tb, prec, init=ti).double().numpy()
        same = (got == want) | (np.isnan(got) & np.isnan(want))
        assert same.all(), (
            f"{model}: differs at {np.argwhere(~same)[:5]}: {got[~same][:5]} vs {want[~same][:5]}"
        )
    big = _refmodel.narrow_matmul(a[1:2], b[:, 1:2], nacc)[0, 0]
    if MODELS[model]["mma_acc"] == "fp16":  # 2·256·200 = 102400 > 65504 after the first chunk
        assert (np.isinf(big)) if MODELS[model]["mma_round"] == "nearest" else big == 65504.0 - 51200.0


@pytest.mark.parametrize("model", ["fp16", "fp22"])
def test_without_the_random_phase_the_simulation_is_the_kernel(model):
    q, k, v = grid_qkv(1407, 512, 4, d=128, seed=2024724, mean=0.0, amp=10.0, dtype=torch.float16)
    q = q[:, :, :16]
    prec = _prec(model)
    out = run_method("pasa", q, k, v, precision=prec).double()[0].reshape(-1, 128).numpy()
    pol = policies.resolve("pasa", prec)
    tau = 128**-0.5
    qa, ka, va = (x.double().numpy() for x in (q, k, v))
    st = _refmodel.ref_exponents(pol, qa, ka, tau)
    ex = em.Exact(qa[0].reshape(-1, 128), ka[0, 0], va[0, 0], np.tile(np.arange(16), 4), tau, 16, False)
    bl = em.make_blocks(ex, 128, pol.kv_tail)
    qm = _refmodel.queries(pol, ex.q, tau)
    nacc = accumulator_of(pol)
    assert nacc is not None
    s_acc = _refmodel.narrow_matmul(qm, _fl(bl.kpad, pol.matmul_in).T, nacc)
    rd = _refmodel._Round(frozenset(_refmodel.REF_TERMS) | {"input"}, np.zeros(ex.q.shape[0]))
    with np.errstate(all="ignore"):
        sim = _refmodel._simulate(pol, st, ex, bl, get_format("fp16"), rd, s_acc, None)
    diff = np.abs(sim - out)
    same = float((diff == 0).mean())
    assert same >= 0.99 and diff.max() <= 2.0**-10 * np.abs(out).max(), (
        f"{model}: {same:.2%} identical, max diff {diff.max():.3e} at {np.unravel_index(diff.argmax(), diff.shape)}"
    )


CELLS = [("uniform", 0.0, 20.0), ("uniform", 20.0, 5.0), ("hybrid", 0.0, 10.0), ("hybrid", 20.0, 20.0)]


GRID_CASES = [(m, *c) for m in ("fp16", "fp22") for c in CELLS] + [
    ("fp16_zero", "uniform", 0.0, 20.0),
    ("fp22_nearest_k8", "hybrid", 20.0, 20.0),
]


@pytest.mark.parametrize("model,dist,mean,amp", GRID_CASES)
def test_estimate_matches_the_kernel_on_grid_cells(model, dist, mean, amp):
    q, k, v = grid_qkv(1407, 640, 4, d=128, seed=2024724, mean=mean, amp=amp, dtype=torch.float16, dist=dist)
    p, meas, out, gold = _pred_meas(q[:, :, :16], k, v, _prec(model))
    assert not p.overflow and p.overflow_stage is None
    _check_ratio(p, meas, f"{model} on {dist} mean {mean} amplitude {amp}", out, gold)


@pytest.mark.parametrize("model", ["fp16", "fp22"])
@pytest.mark.parametrize("kind", ["causal", "decode", "gqa_ragged", "d72"])
def test_estimate_matches_the_kernel_on_masked_decode_and_odd_shapes(model, kind):
    causal = kind in ("causal", "decode")
    if kind == "causal":
        q, k, v = grid_qkv(200, 200, 2, d=64, seed=9, mean=10.0, amp=10.0, dtype=torch.float16)
    elif kind == "decode":
        q, k, v = grid_qkv(1, 900, 14, kv_heads=2, d=128, seed=9, mean=0.0, amp=10.0, dtype=torch.float16)
    elif kind == "gqa_ragged":
        q, k, v = grid_qkv(37, 333, 3, kv_heads=2, d=64, seed=9, mean=20.0, amp=5.0, dtype=torch.float16)
    else:
        q, k, v = grid_qkv(64, 400, 2, d=72, seed=9, mean=0.0, amp=20.0, dtype=torch.float16)
    p, meas, out, gold = _pred_meas(q, k, v, _prec(model), causal=causal)
    _check_ratio(p, meas, f"{model} {kind}", out, gold)


def test_overflow_of_the_fp16_accumulator_agrees_with_the_kernel():
    """uniform, mean 30, amplitude 0.5: the partial sums of Q·Kᵀ pass 65504 in the fp16 accumulator (to
    nearest: inf) and the output is NaN; the estimate flags overflow. FP22 (fp32's range) and fp16 toward
    zero (saturating) stay finite in both."""
    q, k, v = grid_qkv(1407, 300, 2, d=128, seed=2024724, mean=30.0, amp=0.5, dtype=torch.float16)
    q = q[:, :, :16]
    for model, overflows in (("fp16", True), ("fp22", False)):
        p, meas, out, _ = _pred_meas(q, k, v, _prec(model))
        assert bool(p.overflow) == overflows and (not torch.isfinite(out).all()) == overflows, (
            model,
            p.overflow,
            p.overflow_stage,
            meas,
        )


def test_wider_operands_are_refused():
    prec = PRESETS["fp16_accurate"].replace(
        matmul_in=torch.float32, mma_acc="fp22", mma_round="zero", mma_chunk=16
    )
    q, k, v = grid_qkv(8, 64, 1, d=32, seed=2, mean=0.0, amp=5.0, dtype=torch.float16)
    with pytest.raises(ValueError, match="mma_acc"):
        predict("pasa", q, k, v, precision=prec, rigorous=False)


# -- slow: the accumulation panel of figures/beyond_pasa.csv ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("model", ["fp16", "fp22"])
def test_estimate_on_the_accumulation_panel(model):
    """docs/error-model.md §10.10: 32 cells, 1 head × 128 rows, S2 = 1407, d = 128, seed 2024724; cells
    where the kernel's output is not finite are compared on the overflow flag only."""
    ratios, lines = [], []
    for dist in ("uniform", "hybrid"):
        for mean in (0.0, 10.0, 20.0, 30.0):
            for amp in (0.5, 5.0, 10.0, 20.0):
                q, k, v = grid_qkv(
                    128, 1407, 1, d=128, seed=2024724, mean=mean, amp=amp, dtype=torch.float16, dist=dist
                )
                p, meas, out, _ = _pred_meas(q, k, v, _prec(model), mc_samples=8)
                if not torch.isfinite(out).all():
                    assert p.overflow, f"{dist} {mean} {amp}: kernel not finite, estimate not flagged"
                    lines.append(f"{dist} {mean} {amp}: overflow in both")
                    continue
                ratios.append(p.rmse_estimate / meas)
                lines.append(f"{dist} {mean} {amp}: {p.rmse_estimate:.3e} / {meas:.3e} = {ratios[-1]:.3f}")
    rs = sorted(ratios)
    med, within = statistics.median(rs), sum(1 / 1.5 <= r <= 1.5 for r in rs) / len(rs)
    assert 0.8 <= med <= 1.25 and within >= 0.9, "\n".join(lines)
