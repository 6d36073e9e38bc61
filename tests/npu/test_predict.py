"""The four error products of pasa_theory.predict against the harness's measurements.

Claims, on the reference grid (both distributions × mean {0, 10, 20, 30} × amplitude {0.5, 5, 10, 20},
seed 2024724, d = 128, S2 = 1407) and out of sample (other distributions, d = 64 with n = 64,
S2 ≠ 1407, causal masks, resonance):

* the rigorous, probabilistic and a-priori bounds are >= the measured max|O − O_golden| wherever the
  theorems cover the method and nothing overflows (their soundness is attacked in test_rigorous.py;
  here they are wired through predict and the report);
* the RMSE estimate (a model): median predicted/measured in [0.8, 1.25] and >= 90 % of the cases
  within 1.5x, on every set;
* an overflow is predicted exactly where one is measured (census or non-finite output), at the same
  first stage.

The default run uses one GQA group of the reference heads (7/1) and 32 query rows (rows are
independent without a mask, so this samples the reference shape's rows) with the estimate only; the
full reference heads and the larger out-of-sample sets are in test_predict_slow.py (``-m slow``).
Tables are printed (``-s``).

The model also has to explain the measured facts of test_accuracy_rule.py and test_grid.py: where
vendor-style fp16 flash attention overflows, that PASA npu_fp16 never does, why npu_fp16 is worse than
the same-precision baseline on unbiased wide data (the recovery multiplies the K̃ rounding along the
block-mean direction by c) but better on biased data, and that the reference script's error in biased
cells is dominated by c times the rounding of the fp16 block mean.
"""

from __future__ import annotations

import csv
import json
import math
import statistics

import numpy as np
import pytest
import torch

from pasa_npu import cli, data, metrics
from pasa_npu.golden import golden_attention
from pasa_npu.harness import GRID_AMPLITUDES, GRID_MEANS
from pasa_npu.methods import run_method
from pasa_npu.precision import PRESETS
from pasa_npu.predict_report import format_summary, format_table, predict_case, predict_grid, summary

from .helpers import two_term_scores

SHAPE = dict(batch=1, heads=7, kv_heads=1, seq_q=32, seq_kv=1407, head_dim=128)
GRID_METHODS = ("pasa", "pasa:script", "fa_qk", "fa_q")
OTHER_METHODS = (
    "pasa:fp16_keymean",
    "fa_hybrid",
    "fa_naive",
    "smooth_k",
    "sdpa",
    "pasa:hybrid",
    "pasa:fp16_strict",
    "pasa:bf16",
)
MODEL = dict(mc_samples=4, rigorous=False)  # the estimate (the bounds are checked in test_bounds_hold_*)
#: what the estimate achieves (measured; docs/error-model.md §5.2): median ratio and share within 1.5x
EST_MEDIAN = (0.8, 1.25)
EST_WITHIN = 0.9


def estimate_quality(records: list[dict]) -> tuple[int, float, float, list[tuple]]:
    """(cases, median predicted/measured RMSE, share within 1.5x, the misses) over the compared records."""
    ok = [r for r in records if r.get("rmse_within_1_5x") is not None]
    ratios = [r["rmse_ratio"] for r in ok]
    misses = [
        (
            r.get("case"),
            r.get("dist"),
            r.get("mean"),
            r.get("amplitude"),
            r["method"],
            r["rmse"],
            r["pred_rmse"],
        )
        for r in ok
        if not r["rmse_within_1_5x"]
    ]
    med = statistics.median(ratios) if ratios else math.nan
    return len(ok), med, (len(ok) - len(misses)) / len(ok) if ok else math.nan, misses


def _check(records: list[dict], what: str, *, median=EST_MEDIAN, within=EST_WITHIN) -> dict:
    s = summary(records)
    print(f"\n{what}\n{format_table(records)}\n{format_summary(s)}")
    bad_bound = [
        (r.get("dist"), r.get("mean"), r.get("amplitude"), r["method"], r["max_abs_err"], r[col])
        for r in records
        for col, ok in (
            ("pred_bound", "bound_ok"),
            ("pred_prob", "prob_ok"),
            ("pred_a_priori", "a_priori_ok"),
        )
        if r.get(ok) is False
    ]
    assert not bad_bound, f"{what}: a bound below the measured max error in {bad_bound}"
    bad_ovf = [
        (
            r.get("dist"),
            r.get("mean"),
            r.get("amplitude"),
            r["method"],
            r["first_nonfinite_stage"],
            r["pred_overflow_stage"],
        )
        for r in records
        if not r["overflow_ok"]
    ]
    assert not bad_ovf, f"{what}: overflow (measured stage, predicted stage) disagrees in {bad_ovf}"
    n, med, frac, misses = estimate_quality(records)
    print(f"{what}: RMSE estimate over {n} cases: median ratio {med:.3f}, within 1.5x {100 * frac:.1f} %")
    assert median[0] <= med <= median[1] and frac >= within, (
        f"{what}: RMSE estimate median ratio {med:.3f} (want {median}), within 1.5x in {100 * frac:.1f} % "
        f"(want >= {100 * within:.0f} %) of {n}; misses (case, dist, mean, amp, method, measured, predicted): "
        f"{misses}"
    )
    return s


def build_grid():
    return predict_grid(GRID_METHODS, shape=SHAPE, progress=False, **MODEL)


@pytest.fixture(scope="module")
def grid():
    return build_grid()


def _cell(records, dist, mean, amp, method):
    return next(
        r for r in records if (r["dist"], r["mean"], r["amplitude"], r["method"]) == (dist, mean, amp, method)
    )


@pytest.fixture(scope="module")
def qk_overflow_cells():
    """Cells whose largest |q·k| (float64, on the fp16 inputs) reaches fp16's overflow threshold 65520:
    where fa_qk, which rounds QKᵀ before the scale, must overflow."""
    cells = set()
    for d in data.DISTRIBUTIONS:
        for m in GRID_MEANS:
            for a in GRID_AMPLITUDES:
                q, k, _ = data.make_qkv(d, mean=m, amplitude=a, **SHAPE)
                if float((q.double() @ k.double().transpose(-1, -2)).abs().max()) >= 65520.0:
                    cells.add((d, m, a))
    return cells


#: Measured on the grid fixture (7 heads x 32 rows, S2 = 1407, pasa, pasa:script, fa_qk, fa_q): median
#: ratio 1.000, 118/119 = 99.2 % within 1.5x (100 % within 2x) since the shadow simulation emulates the
#: score tile and the script's rounded pseudo-averages (docs/error-model.md §8.12; before: 0.995,
#: 107/119 = 89.9 %, 96.6 % within 2x). The miss is the script preset at hybrid 30/20 (1.62x, its step
#: roundings, §8.9). The grid test below holds the claim (EST_WITHIN).
#: GRID_WITHIN is the level the slow full-grid test (28 heads, 12 methods, S2 in {1407, 4096}) holds: set
#: before §8.12 and not re-measured there since.
GRID_WITHIN = 0.85


def test_grid_bound_rmse_and_overflow(grid, qk_overflow_cells):
    s = _check(grid, "reference grid, one GQA group, 32 query rows")
    # every record without a (measured) overflow is compared; only fa_qk's overflowing cells are not
    assert s["compared"] == 32 * len(GRID_METHODS) - len(qk_overflow_cells), (
        s["compared"],
        sorted(qk_overflow_cells),
    )
    print(
        f"median bound/max ratio {s['median_bound_ratio']:.3g}, median RMSE ratio {s['median_rmse_ratio']:.3g}"
    )


def test_grid_estimate_meets_the_90_percent_target(grid):
    """The estimate's claim on the grid: median ratio in [0.8, 1.25] and >= 90 % within 1.5x (measured
    1.000 and 99.2 %); a model 2x off in either direction fails both."""
    n, med, frac, misses = estimate_quality(grid)
    assert EST_MEDIAN[0] <= med <= EST_MEDIAN[1] and frac >= EST_WITHIN, (n, med, frac, misses)


def test_fa_qk_overflow_predicted_exactly_where_qk_leaves_fp16(grid, qk_overflow_cells):
    """fa_qk overflows (measured, and predicted, at the score stage) exactly on the cells where
    max|QKᵀ| >= 65520, computed independently in float64; at d = 128 that includes every mean-30 cell."""
    pred = {
        (r["dist"], r["mean"], r["amplitude"]) for r in grid if r["method"] == "fa_qk" and r["pred_overflow"]
    }
    meas = {
        (r["dist"], r["mean"], r["amplitude"]) for r in grid if r["method"] == "fa_qk" and r["meas_overflow"]
    }
    assert pred == meas == qk_overflow_cells, (sorted(pred), sorted(meas), sorted(qk_overflow_cells))
    assert {(d, 30.0, a) for d in data.DISTRIBUTIONS for a in GRID_AMPLITUDES} <= qk_overflow_cells
    for r in grid:
        if r["method"] == "fa_qk" and r["pred_overflow"]:
            assert r["pred_overflow_stage"] == "scores" == r["first_nonfinite_stage"]
        if r["method"].startswith("pasa"):
            assert not r["pred_overflow"] and not r["meas_overflow"], r


def test_model_explains_npu_fp16_against_the_baseline(grid):
    """Unbiased wide data: the recovery terms dominate npu_fp16's error and the model predicts it about
    2x the fp16 baseline (fa_q, equal to fa_naive there), while key-mean offsets remove the excess;
    biased data: npu_fp16 predicted (and measured) more accurate than the baseline."""
    wide = [("uniform", 0.0, 10.0), ("uniform", 0.0, 20.0)]
    for cell in wide:
        p = _cell(grid, *cell, "pasa")
        base = _cell(grid, *cell, "fa_q")
        q, k, v = data.make_qkv(cell[0], mean=cell[1], amplitude=cell[2], **SHAPE)
        km = predict_case(q, k, v, ["pasa:fp16_keymean"], **MODEL)[0]
        print(
            cell,
            f"npu_fp16/fa_q RMSE predicted {p['pred_rmse'] / base['pred_rmse']:.2f} measured "
            f"{p['rmse'] / base['rmse']:.2f}; fp16_keymean/fa_q predicted {km['pred_rmse'] / base['pred_rmse']:.2f} "
            f"measured {km['rmse'] / base['rmse']:.2f}; npu_fp16 terms",
            p["dominant"],
        )
        assert p["dominant"].startswith("recovery"), p["dominant"]
        r_pred, r_meas = p["pred_rmse"] / base["pred_rmse"], p["rmse"] / base["rmse"]
        assert r_pred > 1.5 and r_meas > 1.5, (
            f"{cell}: npu_fp16/fa_q predicted {r_pred:.2f}, measured {r_meas:.2f}"
        )
        k_pred, k_meas = km["pred_rmse"] / base["pred_rmse"], km["rmse"] / base["rmse"]
        assert k_pred < 1.3 and k_meas < 1.3, (
            f"{cell}: fp16_keymean/fa_q predicted {k_pred:.2f}, measured {k_meas:.2f}"
        )
    ratios_pred, ratios_meas = [], []
    for d in data.DISTRIBUTIONS:
        for m in GRID_MEANS[1:]:
            for a in GRID_AMPLITUDES:
                p, base = _cell(grid, d, m, a, "pasa"), _cell(grid, d, m, a, "fa_q")
                ratios_pred.append(p["pred_rmse"] / base["pred_rmse"])
                ratios_meas.append(p["rmse"] / base["rmse"])
    print(
        "npu_fp16 / fa_q RMSE on biased cells, predicted:", " ".join(f"{x:.2f}" for x in sorted(ratios_pred))
    )
    assert statistics.median(ratios_pred) < 0.5 and statistics.median(ratios_meas) < 0.5, (
        f"median npu_fp16/fa_q on biased cells: predicted {statistics.median(ratios_pred):.2f}, "
        f"measured {statistics.median(ratios_meas):.2f}"
    )


def test_reference_preset_error_in_biased_cells_is_the_rounded_block_mean(grid):
    """c·(fl16(μ̃_j) − μ̃_j) ≈ u·β·|mean score| per block offset dominates the script's numerics: the model
    names that term, and removing it (the same preset with centred pseudo-averages, which round only
    μ_j − A) lowers the measured RMSE by about the factor the model predicts."""
    centred = PRESETS["script"].replace(name="reference_centred", pseudo_average="centered")
    for m in (20.0, 30.0):
        for a in GRID_AMPLITUDES[:2]:
            ref = _cell(grid, "uniform", m, a, "pasa:script")
            assert ref["dominant"] == "recovery.mean", (m, a, ref["dominant"])
            q, k, v = data.make_qkv("uniform", mean=m, amplitude=a, **SHAPE)
            cen = predict_case(q, k, v, ["pasa"], precision=centred, **MODEL)[0]
            meas, pred = ref["rmse"] / cen["rmse"], ref["pred_rmse"] / cen["pred_rmse"]
            print(f"uniform {m}/{a}: reference / centred RMSE measured {meas:.2f}, predicted {pred:.2f}")
            assert meas > 3 and pred > 3 and 1 / 3 <= pred / meas <= 3, (m, a, meas, pred)


def build_others():
    cells = [(d, m, a) for d in data.DISTRIBUTIONS for m in (0.0, 30.0) for a in (0.5, 20.0)]
    out = []
    for d, m, a in cells:
        q, k, v = data.make_qkv(d, mean=m, amplitude=a, **dict(SHAPE, seq_q=32))
        out += predict_case(q, k, v, OTHER_METHODS, extra=dict(dist=d, mean=m, amplitude=a), **MODEL)
    return out


@pytest.fixture(scope="module")
def others():
    return build_others()


def test_every_other_method_on_corner_cells(others):
    _check(others, "corner cells, the other methods")


def _normal_with_outliers(seed=7, s1=48, s2=700, d=128, h=4, hk=2, amp=25.0, p=0.004, mean=3.0):
    g = torch.Generator().manual_seed(seed)

    def x(*shape):
        base = mean + torch.randn(shape, generator=g)
        spikes = amp * torch.randn(shape, generator=g) * (torch.rand(shape, generator=g) < p)
        return (base + spikes).half()

    return x(1, h, s1, d), x(1, hk, s2, d), x(1, hk, s2, d)


def build_shapes():
    """Out of sample (the estimate was not tuned on these): d = 64 with n = 64 and S2 = 700, normal
    with outliers, causal S1 = S2 = 300 and S1 < S2, resonance."""
    out = []
    q, k, v = data.make_qkv(
        "uniform", mean=10.0, amplitude=5.0, batch=1, heads=4, kv_heads=2, seq_q=48, seq_kv=700, head_dim=64
    )
    out += predict_case(
        q,
        k,
        v,
        GRID_METHODS,
        extra=dict(dist="uniform", mean=10.0, amplitude=5.0, case="d=64, n=64"),
        block_kv=64,
        **MODEL,
    )
    q, k, v = data.make_qkv(
        "hybrid", mean=20.0, amplitude=10.0, batch=1, heads=4, kv_heads=2, seq_q=48, seq_kv=700, head_dim=64
    )
    out += predict_case(
        q,
        k,
        v,
        GRID_METHODS,
        extra=dict(dist="hybrid", mean=20.0, amplitude=10.0, case="d=64, n=64"),
        block_kv=64,
        **MODEL,
    )
    q, k, v = _normal_with_outliers()
    out += predict_case(
        q,
        k,
        v,
        GRID_METHODS,
        extra=dict(dist="normal+outliers", mean=3.0, amplitude=25.0, case="outliers"),
        **MODEL,
    )
    q, k, v = data.make_qkv(
        "uniform", mean=5.0, amplitude=10.0, batch=1, heads=4, kv_heads=2, seq_q=300, seq_kv=300, head_dim=128
    )
    out += predict_case(
        q,
        k,
        v,
        GRID_METHODS,
        extra=dict(dist="uniform", mean=5.0, amplitude=10.0, case="causal S1=S2"),
        is_causal=True,
        **MODEL,
    )
    q, k, v = data.make_qkv(
        "hybrid", mean=10.0, amplitude=20.0, batch=1, heads=4, kv_heads=2, seq_q=40, seq_kv=640, head_dim=128
    )
    out += predict_case(
        q,
        k,
        v,
        GRID_METHODS,
        extra=dict(dist="hybrid", mean=10.0, amplitude=20.0, case="causal S1<S2"),
        is_causal=True,
        **MODEL,
    )
    q, k, v = data.make_resonant(phase="aligned", amplitude=40.0, seq_q=32, seq_kv=400, heads=2, kv_heads=1)
    out += predict_case(
        q,
        k,
        v,
        GRID_METHODS,
        extra=dict(dist="resonant", mean=0.0, amplitude=40.0, case="resonance"),
        **MODEL,
    )
    return out


@pytest.fixture(scope="module")
def shapes():
    return build_shapes()


def test_other_shapes_and_distributions(shapes):
    """Overflow agreement on the out-of-sample set (the estimate's accuracy per case is below)."""
    s = _check(
        shapes, "d = 64 / n = 64, normal with outliers, causal, resonance", median=(0, math.inf), within=0
    )
    res = [r for r in shapes if r.get("case") == "resonance"]
    assert _cell(res, "resonant", 0.0, 40.0, "fa_qk")["pred_overflow_stage"] == "scores"
    assert not _cell(res, "resonant", 0.0, 40.0, "pasa")["pred_overflow"]
    assert s["overflow_cases"] >= 1


#: Out-of-sample cases where the estimate misses its claim (measured on this set; the fix belongs to the
#: engine, pasa_theory._errormodel). strict: a fix makes the test fail until the entry is removed.
KNOWN_ESTIMATE_MISSES: dict[str, str] = {}


def test_npu_fp16_estimate_at_d64_n64(shapes):
    """At d = 64, n = 64 (a = τ = 1/8) the K̃ roundings of a block coincide and c multiplies their block mean
    (docs/error-model.md §8.4): npu_fp16 within 1.5x of the measured RMSE on both cells (measured 0.77x at
    uniform 10/5, 0.69x at hybrid 20/10, in the linear regime, so not changed by §8.12)."""
    sub = [r for r in shapes if r.get("case") == "d=64, n=64" and r["method"] == "pasa"]
    assert len(sub) == 2
    for r in sub:
        print(f"{r['dist']} {r['mean']}/{r['amplitude']}: npu_fp16 estimate/measured {r['rmse_ratio']:.2f}")
        assert 1 / 1.5 <= r["rmse_ratio"] <= 1.5, (r["dist"], r["rmse"], r["pred_rmse"], r["dominant"])


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=KNOWN_ESTIMATE_MISSES[c]))
        if c in KNOWN_ESTIMATE_MISSES
        else c
        for c in ("outliers", "causal S1=S2", "causal S1<S2", "d=64, n=64", "resonance")
    ],
)
def test_estimate_out_of_sample(shapes, case):
    """The estimate's claim (median ratio in [0.8, 1.25], >= 90 % within 1.5x) on each out-of-sample case."""
    sub = [r for r in shapes if r.get("case") == case]
    assert sub, case
    _check(sub, f"out of sample: {case}")


def test_estimate_out_of_sample_whole_set(shapes):
    """The estimate's claim over the whole default out-of-sample set (23 compared cases; measured median
    1.00, 23/23 within 1.5x since docs/error-model.md §8.12, 20/23 before)."""
    _check(shapes, "out of sample: the whole set")


# -- constructed boundaries ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("k1,overflows", [(0.0, False), (15.5, False), (16.0, True), (17.0, True)])
def test_overflow_predicted_at_the_fp16_rounding_threshold(k1, overflows):
    """q·k0 = 65504 + k1 exactly: fl16 overflows iff >= 65520 (the tie goes to inf)."""
    q, k, v = two_term_scores(255.875, k1)
    recs = predict_case(q, k, v, ["fa_qk", "pasa"], block_kv=4, **MODEL)
    fa, pa = recs
    assert fa["pred_overflow"] == overflows == fa["meas_overflow"]
    assert fa["overflow_ok"] and pa["overflow_ok"] and not pa["pred_overflow"]


def test_pasa_block_offset_overflow_is_predicted():
    """PASA's own envelope: block means of the scores 70000 apart (keys biased per block) leave the shifted
    tile in range but make the offset c·(μ_j − A) overflow fp16: the census says 'shift', so does the model."""
    d, n = 128, 128
    q = (
        torch.full((1, 1, 8, d), 80.0, dtype=torch.float16)
        + torch.randn((1, 1, 8, d), generator=torch.Generator().manual_seed(1)).half() * 0.1
    )
    k = torch.randn((1, 1, 2 * n, d), generator=torch.Generator().manual_seed(2)).half() * 0.1
    k[0, 0, n:] += 80.0
    v = torch.randn((1, 1, 2 * n, d), generator=torch.Generator().manual_seed(3)).half()
    rec = predict_case(q, k, v, ["pasa"], **MODEL)[0]
    assert rec["meas_overflow"] and rec["first_nonfinite_stage"] == "shift"
    assert rec["pred_overflow_stage"] == "shift"


def test_raw_accumulators_on_a_long_biased_v():
    """Flat attention over V ≈ 30 and S2 = 4096: raw fp16 O (reference script) and the one-block P·V tile
    (fa_naive) overflow; npu_fp16's power-of-two renormalised accumulators and fp32 (hybrid) do not."""
    q, k, v = data.make_biased_v(seq_kv=4096, seq_q=16, heads=2, kv_heads=1)
    recs = {
        r["method"]: r
        for r in predict_case(q, k, v, ["pasa", "pasa:script", "pasa:hybrid", "fa_naive"], **MODEL)
    }
    for m, stage in (
        ("pasa:script", "accumulator"),
        ("fa_naive", "accumulator"),
        ("pasa", None),
        ("pasa:hybrid", None),
    ):
        assert recs[m]["pred_overflow_stage"] == stage == recs[m]["first_nonfinite_stage"], (
            m,
            recs[m]["first_nonfinite_stage"],
        )


def test_predicted_errors_of_torch_and_numpy_inputs_agree():
    q, k, v = data.make_qkv(
        "uniform", mean=10.0, amplitude=5.0, batch=1, heads=2, kv_heads=1, seq_q=16, seq_kv=300, head_dim=128
    )
    import pasa_theory as pt

    a = pt.predict("pasa", q, k, v)
    b = pt.predict("pasa", q.numpy(), k.numpy(), v.numpy())
    assert a.rmse_estimate == b.rmse_estimate and a.max_abs_bound == b.max_abs_bound
    # the model's prediction does not depend on how the inputs are held, and the measurement agrees
    with metrics.census() as c:
        out = run_method("pasa", q, k, v)
    assert c.total == 0 and torch.isfinite(out).all() and not a.overflow
    err = float((out.double() - golden_attention(q, k, v)).abs().max())
    assert err <= a.max_abs_bound, f"max|err| {err:.3e} above the bound {a.max_abs_bound:.3e}"


def test_cli_predict_writes_the_table(tmp_path, capsys):
    rc = cli.main(
        [
            "--predict",
            "--heads",
            "2",
            "--kv-heads",
            "1",
            "--seq-q",
            "16",
            "--seq-kv",
            "300",
            "--methods",
            "pasa,fa_qk,fa_q",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "rigorous bound >= measured max error" in text and "RMSE estimate within 1.5x" in text
    for word in ("rigorous a-posteriori bound", "probabilistic bound", "a-priori bound", "RMSE estimate"):
        assert word in text, word  # the per-product table names all four
    assert "pasa: theorem 1 (conditional on the observed K̃)" in text
    with (tmp_path / "predict.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["method"] for r in rows] == ["pasa", "fa_qk", "fa_q"]
    for col in (
        "rmse",
        "max_abs_err",
        "pred_rmse",
        "pred_bound",
        "pred_prob",
        "pred_a_priori",
        "pred_first_order",
        "hull_cap",
        "bound_status",
        "bound_cost",
        "pred_overflow_stage",
        "rmse_ratio",
        "bound_ratio",
        "bound_ok",
        "overflow_ok",
        "dominant",
        "regime",
        "rms.recovery.kt",
    ):
        assert col in rows[0]
    payload = json.loads((tmp_path / "predict.json").read_text())
    assert payload["meta"]["summary"]["cases"] == 3
    fa = rows[1]
    assert fa["pred_overflow_stage"] == "scores" == fa["first_nonfinite_stage"]  # mean 30: QKᵀ overflows
    assert math.isfinite(float(rows[0]["pred_rmse"])) and np.isclose(
        float(rows[0]["rmse_ratio"]), float(rows[0]["pred_rmse"]) / float(rows[0]["rmse"])
    )


# -- the bounds through predict and the report ---------------------------------------------------------------------
THEOREM_METHODS = ("pasa", "fa_qk", "fa_q", "fa_naive", "fa_hybrid")


def test_bounds_hold_through_the_report_on_grid_corners():
    """The three bounds, wired through predict_case (PASA with the run's K̃), hold on the grid's corners
    (one head, 8 query rows, S2 = 1407), are None exactly for the methods outside the theorems, and the
    probabilistic bound is never above the rigorous one."""
    recs = []
    for d in data.DISTRIBUTIONS:
        for m in (0.0, 30.0):
            for a in (0.5, 20.0):
                q, k, v = data.make_qkv(d, mean=m, amplitude=a, **dict(SHAPE, heads=1, seq_q=8))
                recs += predict_case(
                    q,
                    k,
                    v,
                    THEOREM_METHODS + ("pasa:script",),
                    extra=dict(dist=d, mean=m, amplitude=a),
                    mc_samples=2,
                )
    _check(recs, "grid corners with the bounds, 1 head, 8 rows", median=(0.5, 2.0), within=0.5)
    for r in recs:
        if (
            r["method"] == "pasa:script"
        ):  # Theorem 8 (rigorous, docs/bounds.md §17), Theorem 9 (a-priori, §19.1)
            assert r["bound_status"].startswith("theorem 8"), r["bound_status"]
            assert r["pred_bound"] is not None and r["pred_a_priori"] is not None
            if not (r["meas_overflow"] or r["pred_overflow"]):
                assert r["bound_ok"] and r["prob_ok"] and r["a_priori_ok"], r
            continue
        assert r["pred_bound"] is not None and r["pred_a_priori"] is not None, r["method"]
        if not (r["meas_overflow"] or r["pred_overflow"]):
            assert r["bound_ok"] and r["prob_ok"] and r["a_priori_ok"], r
            assert r["pred_prob"] <= r["pred_bound"], r
            if r["max_abs_err"] > 0:
                assert r["bound_ratio"] == r["pred_bound"] / r["max_abs_err"]
    pasa = [r for r in recs if r["method"] == "pasa"]
    assert all(r["bound_status"] == "theorem 1 (conditional on the observed K̃)" for r in pasa)


def test_estimate_follows_the_recovery_amplification_measured():
    """On unbiased wide data npu_fp16's error grows with c = β/(1 − β) (the recovery multiplies the
    block mean of the score errors by c, E6): the estimate's ratio between the default β and β = 0.5
    matches the measured ratio within 1.5x (a model 2x off in c fails)."""
    q, k, v = data.make_qkv("uniform", mean=0.0, amplitude=20.0, **SHAPE)
    hi = predict_case(q, k, v, ["pasa"], **MODEL)[0]
    lo = predict_case(q, k, v, ["pasa"], beta=0.5, **MODEL)[0]
    meas, pred = hi["rmse"] / lo["rmse"], hi["pred_rmse"] / lo["pred_rmse"]
    print(f"RMSE(β default) / RMSE(β = 0.5): measured {meas:.2f}, estimated {pred:.2f}")
    # measured 1.89 (estimated 2.37) at this shape: the effect is clear of noise, and the estimate within 1.5x
    assert meas > 1.5 and 1 / 1.5 <= pred / meas <= 1.5, (meas, pred)
