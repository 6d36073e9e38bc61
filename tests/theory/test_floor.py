"""The fully fp16 vector unit's floor (pasa_theory.floor, docs/beyond.md §3): an estimate, checked against
hand-computed cases and against a plain float64 Monte Carlo of the same stated model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pasa_theory import floor


def _inputs(seed, S1=40, S2=300, d=16, dv=8, heads=2, kv_heads=1, amp=3.0, vmean=0.0):
    rng = np.random.default_rng(seed)
    q = rng.uniform(-amp, amp, (1, heads, S1, d))
    k = rng.uniform(-amp, amp, (1, kv_heads, S2, d))
    v = vmean + rng.standard_normal((1, kv_heads, S2, dv))
    return q, k, v


def test_single_key_is_output_rounding_only():
    """One key (v = 1.5, RMS(V) = 1.5): x = 0 (no argument error), weight 1 with v − o = 0 (no weight
    term); left are ℓ = 1 (o²·q(1)²/12 = 2.25·2^-20/12), O = 1.5 (2^-20/12) and the output (2^-20/12).
    fa_hybrid: the P operand (v²·2^-20/12) and the output."""
    q = np.ones((1, 1, 1, 4))
    k = np.ones((1, 1, 1, 4))
    v = np.full((1, 1, 1, 1), 1.5)
    e = floor.fp16_vector_floor(q, k, v, block_kv=4)
    want = math.sqrt((2.25 + 1 + 1) * 2.0**-20 / 12) / 1.5
    assert e.rel_rmse_floor == pytest.approx(want, rel=1e-12)
    assert e.parts["argument"] == 0 and e.parts["weight"] == 0
    assert e.rel_rmse_hybrid == pytest.approx(math.sqrt((2.25 + 1) * 2.0**-20 / 12) / 1.5, rel=1e-12)
    assert e.ew_abs_x_max == 0


def test_ew_abs_x_two_keys():
    """Scores 0 and −L: E_w|x| = L·e^{−L}/(1 + e^{−L}) (hand formula)."""
    q = np.array([[[[1.0, 0.0]]]])
    k = np.array([[[[0.0, 0.0], [-6.0, 0.0]]]])
    v = np.ones((1, 1, 2, 1))
    e = floor.fp16_vector_floor(q, k, v, scale=0.5, block_kv=2)
    L = 3.0
    assert e.ew_abs_x_max == pytest.approx(L * math.exp(-L) / (1 + math.exp(-L)), rel=1e-12)


@pytest.mark.parametrize(("amp", "vmean", "n"), [(3.0, 0.0, 64), (1.0, 30.0, 128), (6.0, 2.0, 100)])
def test_linearised_model_matches_monte_carlo(amp, vmean, n):
    """The predicted (linearised) relative RMSE agrees with the model sampled in plain float64 to 5 %
    (the sampling error here is about 1 %); a model 2x off fails."""
    q, k, v = _inputs(1, amp=amp, vmean=vmean)
    e = floor.fp16_vector_floor(q, k, v, block_kv=n)
    mc_floor, mc_hybrid = floor.floor_monte_carlo(q, k, v, block_kv=n, samples=16, seed=3)
    assert e.rel_rmse_floor == pytest.approx(mc_floor, rel=0.05), (e, mc_floor)
    assert e.rel_rmse_hybrid == pytest.approx(mc_hybrid, rel=0.05), (e, mc_hybrid)


def test_argument_term_grows_with_spread_of_scores():
    """Wider scores carry weight at larger |x|: the argument share and E_w|x| grow."""
    small = floor.fp16_vector_floor(*_inputs(2, amp=0.5), block_kv=64)
    large = floor.fp16_vector_floor(*_inputs(2, amp=2.0), block_kv=64)
    assert large.ew_abs_x_median > small.ew_abs_x_median
    assert large.parts["argument"] / large.parts["weight"] > small.parts["argument"] / small.parts["weight"]


def test_checks():
    q, k, v = _inputs(0)
    with pytest.raises(ValueError, match="scale"):
        floor.fp16_vector_floor(q, k, v, scale=-1.0)
    with pytest.raises(ValueError, match="head"):
        floor.fp16_vector_floor(q[:, :, :, :4], k, v)
    bad = v.copy()
    bad[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="v must be finite"):
        floor.fp16_vector_floor(q, k, bad)
