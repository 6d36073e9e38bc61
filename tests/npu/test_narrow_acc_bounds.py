"""The error products under the narrow matrix-unit accumulators (mma_acc fp16/fp22, mma_round nearest/zero;
docs/bounds.md §15, docs/beyond.md §5) against the kernel: the rigorous bound holds on every case (random,
d not a multiple of 16, d = 32…256, causal, partial sums at the accumulator's overflow threshold and on its
rounding ties), the a-priori bound holds, the probabilistic bound is not above the rigorous one; the
estimate against the committed accumulation panel of figures/beyond_pasa.csv (slow)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pasa_npu import PRESETS
from pasa_npu.golden import golden_attention
from pasa_npu.methods import run_method
from pasa_theory import policies, predict, rigorous

ROOT = Path(__file__).resolve().parents[2]
MODELS = [("fp16", "nearest"), ("fp16", "zero"), ("fp22", "nearest"), ("fp22", "zero")]
METHODS = ["pasa", "fa_qk", "fa_q", "fa_naive", "fa_hybrid"]


def _prec(acc: str, mode: str):  # noqa: ANN202 - a pasa_npu.Precision
    return PRESETS["npu_fp16"].replace(mma_acc=acc, mma_round=mode, mma_chunk=16)


def _inputs(S1: int, S2: int, d: int, mean: float, amp: float, seed: int):  # noqa: ANN202
    g = np.random.default_rng(seed)
    q = (mean + amp * g.uniform(-1, 1, (1, 1, S1, d))).astype(np.float16)
    k = (mean + amp * g.uniform(-1, 1, (1, 1, S2, d))).astype(np.float16)
    v = g.standard_normal((1, 1, S2, d)).astype(np.float16)
    return q, k, v


def _check(method: str, prec, q, k, v, causal: bool = False) -> tuple[float, float]:  # noqa: ANN001
    tq, tk, tv = (torch.tensor(x) for x in (q, k, v))
    out = run_method(method, tq, tk, tv, precision=prec, is_causal=causal).double().numpy()
    gold = golden_attention(tq.double(), tk.double(), tv.double(), is_causal=causal).numpy()
    cert = rigorous.certify(method, q, k, v, precision=prec, is_causal=causal)
    nonfinite = not np.all(np.isfinite(out))
    if nonfinite:
        assert cert.overflow, f"{method} {prec.name}: the kernel overflowed and certify did not say so"
        return math.inf, math.inf
    err = float(np.abs(out - gold).max())
    worst = np.unravel_index(np.argmax(np.abs(out - gold)), out.shape)
    assert err <= cert.max_abs_bound, (
        f"{method} {prec.mma_acc}/{prec.mma_round}: error {err:.4g} > bound {cert.max_abs_bound:.4g} at {worst}"
    )
    assert cert.prob_abs_bound <= cert.max_abs_bound
    ap = rigorous.a_priori(method, rigorous.stats_of(q, k, v), precision=prec)
    assert err <= ap.bound, (method, err, ap.bound)
    return err, cert.max_abs_bound


@pytest.mark.parametrize("acc,mode", MODELS)
@pytest.mark.parametrize("method", METHODS)
def test_rigorous_bound_holds_random_and_ragged_d(acc: str, mode: str, method: str) -> None:
    prec = _prec(acc, mode)
    ratios = []
    for d, mean, amp, causal in ((40, 3.0, 3.0, False), (64, 0.0, 6.0, True)):
        q, k, v = _inputs(8, 200, d, mean, amp, seed=d)
        err, bound = _check(method, prec, q, k, v, causal)
        ratios.append(bound / max(err, 1e-12))
    print(method, acc, mode, "bound/measured", [f"{r:.2f}" for r in ratios])


@pytest.mark.parametrize("acc,mode", MODELS)
def test_rigorous_bound_holds_at_constructed_boundaries(acc: str, mode: str) -> None:
    """Partial sums of the score accumulator at the fp16 overflow threshold (q·k = 65504 exactly, and
    past it), and partial sums on ties of the accumulator (integer-valued products whose chunk sums are
    odd multiples of half a quantum)."""
    prec = _prec(acc, mode)
    d = 32
    v = np.random.default_rng(5).standard_normal((1, 1, 64, d)).astype(np.float16)
    # row 0: q·k = 32·2047 = 65504 (the largest finite fp16) ; row 1: 32·2048 = 65536 (past it, masked
    # nowhere: the fp16 accumulator overflows or saturates)
    q = np.ones((1, 1, 3, d), dtype=np.float16)
    q[0, 0, 1] = 2.0
    k = np.zeros((1, 1, 64, d), dtype=np.float16)
    k[0, 0, :, :] = np.float16(2047.0)  # 32·2047 = 65504: row 0 reaches the largest finite fp16 at the end
    k[0, 0, 1::2, :] = np.float16(-1.0)
    # row 2: chunk sums 16·(2048 + 1)/16 … ties of the fp16 accumulator at 2049
    q[0, 0, 2, :16] = 1.0
    q[0, 0, 2, 16:] = 0.0
    for method in ("fa_qk", "fa_hybrid", "pasa"):
        _check(method, prec, q, k, v)
    kt = k.copy()
    kt[0, 0, ::2, :16] = np.float16(128.0)
    kt[0, 0, ::2, 15] = np.float16(129.0)  # 15·128 + 129 = 2049: a tie between 2048 and 2050
    for method in ("fa_qk", "fa_hybrid", "fa_q"):
        _check(method, prec, q, kt, v)
    for d2 in (32, 256):
        q2, k2, v2 = _inputs(4, 130, d2, 10.0, 2.0, seed=d2)
        _check("fa_hybrid", prec, q2, k2, v2)


def test_overflow_of_the_fp16_accumulator_is_flagged_with_its_stage() -> None:
    """|q·k| past 65504 overflows the fp16 score accumulator even for fa_hybrid (fp32 matmul output):
    certify and the estimate say so; with the wide accumulator fa_hybrid does not overflow."""
    q, k, v = _inputs(4, 64, 128, 30.0, 1.0, seed=1)
    for mode in ("nearest", "zero"):
        prec = _prec("fp16", mode)
        assert rigorous.certify("fa_hybrid", q, k, v, precision=prec).overflow
        p = predict("fa_hybrid", q, k, v, precision=prec, rigorous=False)
        assert p.overflow and p.overflow_stage == "scores"
    assert not rigorous.certify("fa_hybrid", q, k, v).overflow


def test_unmodelled_combinations_still_refused() -> None:
    nar = PRESETS["fp16_accurate"].replace(mma_acc="fp16")
    assert any("mma_acc" in s for s in policies.unmodelled_steps(policies.resolve("pasa", nar)))
    assert any(
        "mma_acc" in s
        for s in policies.unmodelled_steps(
            policies.resolve("pasa", PRESETS["fp16_keymean"].replace(mma_acc="fp22"))
        )
    )
    assert policies.unmodelled_steps(policies.resolve("pasa", _prec("fp16", "zero"))) == []
    assert policies.unmodelled_steps(policies.resolve("fa_hybrid", _prec("fp22", "zero"))) == []


def _panel() -> dict[tuple[str, float, float, str, str], float | None]:
    out: dict[tuple[str, float, float, str, str], float | None] = {}
    lines = [
        ln for ln in (ROOT / "figures" / "beyond_pasa.csv").read_text().splitlines() if not ln.startswith("#")
    ]
    for r in csv.DictReader(lines):
        if r["panel"] == "mma" and r["mma"] != "wide" and r["method"] != "pasa:fp16_accurate":
            key = (r["dist"], float(r["mean"]), float(r["amplitude"]), r["method"], r["mma"])
            out[key] = (
                float(r["rel_rmse"]) if r["rel_rmse"] and r["nonfinite"] in ("0", "False", "") else None
            )
    return out


@pytest.mark.slow
def test_estimate_against_the_accumulation_panel() -> None:
    """Predicted vs measured relative RMSE on the accumulation panel of figures/beyond_pasa.csv (1 head ×
    128 rows, S2 = 1407, d = 128; fp16 accumulator to nearest and FP22 toward zero, chunk 16), for
    npu_fp16 PASA, fa_fp16 (fa_qk) and fa_hybrid: median ratio in [0.8, 1.25], ≥ 90 % within 1.5×, and
    the cells where the kernel gave inf/NaN predicted to overflow."""
    from pasa_npu.figures.beyond import MMA_METHODS, MMA_MODELS, mma_shape
    from pasa_npu.harness import grid_cells

    meas = _panel()
    ratios = []
    for cell, q, k, v in grid_cells(shape=mma_shape(False), progress=False):
        vr = float(v.double().pow(2).mean().sqrt())
        for model in ("fp16", "fp22"):
            for label, method, preset in MMA_METHODS:
                if preset == "fp16_accurate":
                    continue
                prec = PRESETS[preset].replace(**MMA_MODELS[model])
                p = predict(method, q, k, v, precision=prec, rigorous=False)
                m = meas[(cell["dist"], cell["mean"], cell["amplitude"], label, model)]
                if m is None:
                    assert p.overflow, (cell, label, model)
                    continue
                r = (p.rmse_estimate / vr) / m
                ratios.append(r)
                print(
                    f"{cell} {label} {model}: predicted {p.rmse_estimate / vr:.3e} measured {m:.3e} ratio {r:.3f}"
                )
    r = np.array(ratios)
    within = float(np.mean((r <= 1.5) & (r >= 1 / 1.5)))
    print(
        f"N {r.size} median {np.median(r):.3f} within 1.5x {within:.3f} min {r.min():.3f} max {r.max():.3f}"
    )
    assert 0.8 <= float(np.median(r)) <= 1.25
    assert within >= 0.9


@pytest.mark.parametrize("chunk", [1, 8, 32])
def test_rigorous_bound_holds_for_other_chunk_lengths(chunk: int) -> None:
    """k = 8 (A100-like), 1 (a rounding after every product) and 32 (one longer than d = 40 allows twice)."""
    for acc, mode in (("fp16", "nearest"), ("fp22", "zero")):
        prec = PRESETS["npu_fp16"].replace(mma_acc=acc, mma_round=mode, mma_chunk=chunk)
        q, k, v = _inputs(6, 150, 40, 2.0, 4.0, seed=chunk)
        for method in ("pasa", "fa_hybrid", "fa_qk"):
            _check(method, prec, q, k, v)
