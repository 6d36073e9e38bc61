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


#: Measured (12 methods) before -> after the emulation of docs/error-model.md §8.12 (score tile, K̃, the
#: script's rounded pseudo-averages): d = 64, n = 64, S2 = 700: median 0.999 -> 0.999, within 1.5x 90.6 % ->
#: 96.9 %; normal 100 % -> 100 %; S2 = 3000 96.7 % -> 100 %; S2 = 5000 91.3 % -> 94.6 %; causal S1 < S2
#: 100 % -> 100 %; causal S1 = S2 98.9 % -> 98.9 % (error-model.md §8.11).
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


#: The heavy-tailed out-of-sample set of docs/error-model.md §8.11 (rebuilt here with its seed, the
#: original's not having been recorded): normal, Laplace, lognormal and Student-t(3) inputs standardised
#: to unit variance, mean {0, 10, 30} x amplitude {1, 5, 10}, 4 query heads x 32 rows, 2 KV heads,
#: S2 = 1024, d = 128, torch seed 31, nine methods.
HEAVY_METHODS = tuple(m for m in METHODS if m not in ("pasa:fp16_strict", "smooth_k", "sdpa"))


def _heavy_cases():
    import math

    import torch

    g = torch.Generator().manual_seed(31)

    def draw(dist, shape):
        if dist == "normal":
            return torch.randn(shape, generator=g)
        u = torch.rand(shape, generator=g, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
        if dist == "laplace":
            return (-torch.sign(u - 0.5) * torch.log1p(-2 * (u - 0.5).abs()) / math.sqrt(2)).float()
        if dist == "lognormal":
            x = torch.exp(torch.randn(shape, generator=g))
            return (x - math.exp(0.5)) / math.sqrt((math.e - 1) * math.e)
        z = torch.randn(shape, generator=g)  # Student-t(3), scaled to unit variance
        c = sum(torch.randn(shape, generator=g) ** 2 for _ in range(3))
        return z / torch.sqrt(c / 3) / math.sqrt(3)

    for dist in ("normal", "laplace", "lognormal", "student_t3"):
        for mean in (0.0, 10.0, 30.0):
            for amp in (1.0, 5.0, 10.0):

                def mk(shape, mean=mean, amp=amp, dist=dist):
                    return (mean + amp * draw(dist, shape)).half()

                q, k, v = mk((1, 4, 32, 128)), mk((1, 2, 1024, 128)), mk((1, 2, 1024, 128))
                yield dict(case="heavy", dist=dist, mean=mean, amplitude=amp), (q, k, v)


def test_estimate_heavy_tailed_inputs():
    """The estimate's claim (median in [0.8, 1.25], >= 90 % within 1.5x) on the heavy-tailed set: measured
    median 1.000, 306/311 = 98.4 % within 1.5x since docs/error-model.md §8.12 (87.8 % before)."""
    recs = []
    for tag, (q, k, v) in _heavy_cases():
        recs += predict_case(q, k, v, HEAVY_METHODS, extra=tag, **MODEL)
    _check(recs, "out of sample: heavy-tailed inputs, d = 128, S2 = 1024")
