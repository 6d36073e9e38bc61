"""Data generators reproduce the reference script; metrics are what they claim to be."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pasa_npu import data, metrics

from .script_port import script_gendata


@pytest.mark.parametrize(
    "dist,distype,mean,amp", [("uniform", 0, 30.0, 0.5), ("hybrid", 1, 30.0, 10.0), ("hybrid", 1, 0.0, 20.0)]
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_make_qkv_reproduces_the_script_bit_for_bit(dist, distype, mean, amp, dtype):
    ours = data.make_qkv(
        dist,
        batch=1,
        heads=4,
        kv_heads=2,
        seq_q=37,
        seq_kv=45,
        head_dim=16,
        mean=mean,
        amplitude=amp,
        dtype=dtype,
    )
    theirs = script_gendata(1, 4, 2, 37, 45, 16, mean, amp, distype, dtype)
    for a, b in zip(ours, theirs):
        assert a.dtype == dtype and torch.equal(a, b)


def test_make_qkv_shapes_ranges_and_determinism():
    q, k, v = data.make_qkv(
        "uniform", batch=2, heads=6, kv_heads=3, seq_q=10, seq_kv=20, head_dim=8, mean=5, amplitude=2, seed=1
    )
    assert q.shape == (2, 6, 10, 8) and k.shape == v.shape == (2, 3, 20, 8) and q.dtype == torch.float16
    for t in (q, k, v):
        assert float(t.min()) >= 3 - 1e-2 and float(t.max()) <= 7 + 1e-2
    q2, _, _ = data.make_qkv(
        "uniform", batch=2, heads=6, kv_heads=3, seq_q=10, seq_kv=20, head_dim=8, mean=5, amplitude=2, seed=1
    )
    assert torch.equal(q, q2)


def test_hybrid_outliers_have_the_documented_rate_and_spread():
    q, _, _ = data.make_qkv(
        "hybrid",
        batch=1,
        heads=8,
        kv_heads=1,
        seq_q=512,
        seq_kv=4,
        head_dim=128,
        mean=0,
        amplitude=100,
        dtype=torch.float32,
    )
    outliers = q.abs() > 8  # N(0,1) essentially never exceeds 8; N(0,100) outliers mostly do
    rate = float(outliers.double().mean())
    assert 0.0005 < rate < 0.0015  # Bernoulli(0.001) times P(|N(0,100)| > 8) ~ 0.94


@pytest.mark.parametrize(
    "kw,exc",
    [
        (dict(dist="normal"), ValueError),
        (dict(heads=5), ValueError),
        (dict(seq_q=0), ValueError),
        (dict(amplitude=-1.0), ValueError),
        (dict(mean=float("inf")), ValueError),
        (dict(dtype=torch.int8), TypeError),
    ],
)
def test_make_qkv_rejects_bad_arguments(kw, exc):
    args = dict(
        dist="uniform", batch=1, heads=4, kv_heads=2, seq_q=4, seq_kv=4, head_dim=4, mean=0.0, amplitude=1.0
    )
    args.update(kw)
    dist = args.pop("dist")
    with pytest.raises(exc):
        data.make_qkv(dist, **args)


def test_metrics_against_numpy():
    g = np.random.default_rng(0)
    out, gold, v = g.normal(size=(2, 3, 4, 5)), g.normal(size=(2, 3, 4, 5)), g.normal(3, 1, size=(2, 1, 4, 5))
    t = torch.from_numpy
    r = math.sqrt(((out - gold) ** 2).mean())
    assert metrics.rmse(t(out), t(gold)) == pytest.approx(r, rel=1e-14)
    assert metrics.relative_rmse(t(out), t(gold), t(v)) == pytest.approx(
        r / math.sqrt((v**2).mean()), rel=1e-14
    )
    assert metrics.relative_rmse_out(t(out), t(gold)) == pytest.approx(
        r / math.sqrt((gold**2).mean()), rel=1e-14
    )
    assert metrics.max_abs_error(t(out), t(gold)) == pytest.approx(np.abs(out - gold).max(), rel=1e-15)
    with pytest.raises(ValueError, match="same shape"):
        metrics.rmse(t(out), t(gold[..., :2]))


def test_metrics_do_not_hide_non_finite_outputs():
    gold = torch.zeros(4)
    out = torch.tensor([0.0, float("inf"), 0.0, 0.0])
    assert math.isinf(metrics.rmse(out, gold))
    assert math.isinf(metrics.max_abs_error(out, gold))
    out[2] = float("nan")
    assert math.isnan(metrics.max_abs_error(out, gold)) and math.isnan(metrics.rmse(out, gold))
    assert metrics.nonfinite_count(out) == 2
    assert "non-finite outputs 2/4" in metrics.error_summary(out, gold)


def test_census_orders_stages_and_nests():
    with metrics.census() as outer:
        outer.record("exp", torch.tensor([float("nan")]))
        with metrics.census() as inner:
            inner.record("scores", torch.tensor([float("inf"), 1.0]))
        outer.record("accumulator", torch.tensor([float("inf")]))
    assert inner.first_stage == "scores" and inner.total == 1
    assert outer.first_stage == "exp" and outer.counts["accumulator"] == 1
    assert metrics.active_census() is None
    with pytest.raises(ValueError, match="stage"):
        outer.record("softmax", torch.zeros(1))


def test_biased_v_and_resonant_generators():
    q, k, v = data.make_biased_v(seq_kv=256, seq_q=8)
    assert float(v.double().mean()) == pytest.approx(30, abs=0.05) and float(q.abs().max()) <= 0.05
    sc = {}
    for phase in ("aligned", "anti", "random"):
        q, k, _ = data.make_resonant(phase=phase, seq_q=64, seq_kv=64, dtype=torch.float32)
        sc[phase] = float((q @ k.transpose(-1, -2)).mean())
    assert sc["aligned"] > 1e4 and sc["anti"] < -1e4 and abs(sc["random"]) < 0.1 * sc["aligned"]
    with pytest.raises(ValueError):
        data.make_resonant(phase="sideways")


def test_nonfinite_count_across_chunks(monkeypatch):
    monkeypatch.setattr(metrics, "_COUNT_CHUNK", 7)
    x = torch.zeros((5, 9), dtype=torch.float16)
    x[0, 6], x[0, 7], x[4, 8], x[2, 2] = float("nan"), float("inf"), float("-inf"), 65504.0
    assert metrics.nonfinite_count(x) == 3
    assert metrics.nonfinite_count(x[:, 7:]) == 2  # non-contiguous view
