"""The rounding-error model against measurement on the full reference grid with the reference heads
(``-m slow``; see test_predict.py for the claims and the default, reduced run).

Shape: batch 1, 28 query heads in 4 GQA groups, d = 128, S2 ∈ {1407, 4096} keys, seed 2024724, fp16
inputs, every method the CPU can run. Each head gets ``PASA_PREDICT_SEQ_Q`` query rows (default 64):
without a mask the rows are independent and identically distributed, so they sample the S1 = S2
reference shape's rows, at a fraction of its cost (the kernels alone need 36-220 s per method and
cell at S1 = S2 on two cores). Set ``PASA_PREDICT_OUT`` to a directory to keep the table
(``predict_<S2>.csv``/``.json``, the ``pasa-verify --predict`` schema).
"""

from __future__ import annotations

import os

import pytest

from pasa_npu import data
from pasa_npu.harness import write_records
from pasa_npu.predict_report import predict_grid, summary

from .test_predict import GRID_WITHIN, MODEL, _check, predict_case

pytestmark = pytest.mark.slow

METHODS = (
    "pasa",
    "pasa:script",
    "pasa:fp16_keymean",
    "pasa:fp16_strict",
    "pasa:hybrid",
    "pasa:bf16",
    "fa_qk",
    "fa_q",
    "fa_naive",
    "fa_hybrid",
    "smooth_k",
    "sdpa",
)


@pytest.mark.parametrize("seq_kv", [1407, 4096])
def test_reference_heads_full_grid(seq_kv, tmp_path):
    seq_q = int(os.environ.get("PASA_PREDICT_SEQ_Q", "64"))
    shape = dict(data.REFERENCE_SHAPE, seq_q=seq_q, seq_kv=seq_kv)
    records = predict_grid(METHODS, shape=shape, progress=False, rigorous=False)
    out = os.environ.get("PASA_PREDICT_OUT") or tmp_path
    s = summary(records)
    safe = {k: (str(v) if isinstance(v, float) and v != v else v) for k, v in s.items()}
    write_records(records, out, f"predict_{seq_kv}", dict(shape=shape, methods=METHODS, summary=safe))
    # the grid's achieved level (GRID_WITHIN, measured on one GQA group); not re-measured on 28/4 heads
    s = _check(
        records, f"reference heads 28/4, S2 = {seq_kv}, {seq_q} query rows per head", within=GRID_WITHIN
    )
    assert s["cases"] == 32 * len(METHODS)
    # only fa_qk (QKᵀ rounded before the scale) may overflow on this grid: everything else is compared
    assert s["compared"] >= 32 * (len(METHODS) - 1), (s["compared"], s["overflow_cases"])
    print(
        f"S2 = {seq_kv}: median bound/max {s['median_bound_ratio']:.3g}, median RMSE ratio {s['median_rmse_ratio']:.3g}"
    )


def _oos_cases():
    """Out-of-sample inputs the estimate was not tuned on: normal with outliers at other means and
    rates, d = 64 (n = 64), S2 in {700, 3000, 5000}, causal S1 < S2 and S1 = S2."""
    import torch

    g = torch.Generator().manual_seed(99)

    def normal(mean, amp, p, *shape):
        base = mean + torch.randn(shape, generator=g)
        return (base + amp * torch.randn(shape, generator=g) * (torch.rand(shape, generator=g) < p)).half()

    for mean, amp, p in ((0.0, 1.0, 0.0), (3.0, 25.0, 0.004), (15.0, 4.0, 0.0), (-8.0, 20.0, 0.01)):
        q, k, v = (
            normal(mean, amp, p, 1, 4, 32, 128),
            normal(mean, amp, p, 1, 2, 900, 128),
            normal(mean, amp, p, 1, 2, 900, 128),
        )
        yield dict(case="normal", dist="normal", mean=mean, amplitude=amp), (q, k, v), {}
    for d in data.DISTRIBUTIONS:
        for m, a in ((0.0, 1.0), (5.0, 8.0), (25.0, 1.0), (25.0, 8.0)):
            tag = dict(dist=d, mean=m, amplitude=a)
            yield (
                dict(tag, case="d=64 S2=700"),
                data.make_qkv(
                    d,
                    mean=m,
                    amplitude=a,
                    batch=1,
                    heads=4,
                    kv_heads=2,
                    seq_q=24,
                    seq_kv=700,
                    head_dim=64,
                    seed=11,
                ),
                dict(block_kv=64),
            )
            for s2 in (3000, 5000):
                yield (
                    dict(tag, case=f"S2={s2}"),
                    data.make_qkv(
                        d,
                        mean=m,
                        amplitude=a,
                        batch=1,
                        heads=2,
                        kv_heads=1,
                        seq_q=24,
                        seq_kv=s2,
                        head_dim=128,
                        seed=12,
                    ),
                    {},
                )
            yield (
                dict(tag, case="causal S1<S2"),
                data.make_qkv(
                    d,
                    mean=m,
                    amplitude=a,
                    batch=1,
                    heads=2,
                    kv_heads=1,
                    seq_q=200,
                    seq_kv=333,
                    head_dim=128,
                    seed=13,
                ),
                dict(is_causal=True),
            )
            yield (
                dict(tag, case="causal S1=S2"),
                data.make_qkv(
                    d,
                    mean=m,
                    amplitude=a,
                    batch=1,
                    heads=2,
                    kv_heads=1,
                    seq_q=256,
                    seq_kv=256,
                    head_dim=128,
                    seed=14,
                ),
                dict(is_causal=True),
            )


def build_out_of_sample():
    out = []
    for tag, (q, k, v), kw in _oos_cases():
        out += predict_case(q, k, v, METHODS, extra=tag, **dict(MODEL, **kw))
    return out


@pytest.fixture(scope="module")
def out_of_sample():
    return build_out_of_sample()


#: Measured (12 methods): d = 64, n = 64, S2 = 700: median 0.999, 87/96 = 90.6 % within 1.5x since the K̃
#: roundings are correlated within a block (docs/error-model.md §8.4; before: 0.968, 86.5 %). Worst:
#: pasa:bf16 and the PASA presets at uniform 25/8 estimated 2.3-2.6x (Monte Carlo regime, recovery.kt).
#: The other sets met the claim before (normal 100 %, S2 = 3000 96.7 %, S2 = 5000 90.2 %, causal S1 < S2
#: 98.9 %, causal S1 = S2 98.9 %; not re-measured after the change).
OOS_KNOWN_MISSES: dict[str, str] = {}


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=OOS_KNOWN_MISSES[c]))
        if c in OOS_KNOWN_MISSES
        else c
        for c in ("normal", "d=64 S2=700", "S2=3000", "S2=5000", "causal S1<S2", "causal S1=S2")
    ],
)
def test_estimate_out_of_sample_full(out_of_sample, case):
    """The estimate's claim (median in [0.8, 1.25], >= 90 % within 1.5x) on each out-of-sample set."""
    _check([r for r in out_of_sample if r["case"] == case], f"out of sample: {case}")
