"""Proposition 4 (docs/bounds.md §18): the probabilistic enclosure of the run against the real kernel.

The kernel's output must lie in the rigorous enclosure of Theorem 4 on every element (a theorem) and
in the probabilistic enclosure on all but a fraction ≤ δ of the elements over independent seeded
draws (a model). The draws are long rows (S2 = 8 192, T = 64 blocks) of PASA with the run's
K̃ on the hybrid(10, 5) cell (d = 64, one query row), where the rigorous bound grows with T and Proposition 4 is below it.
Mutation checks: with λ = 0 the probabilistic enclosure is violated (so λ is needed); with the
quadrature replaced by a plain sum of the bounds the gain disappears (so the gain is the quadrature's).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pasa_npu import data
from pasa_npu.kernel import shifted_keys
from pasa_npu.methods import run_method
from pasa_theory import _enclosure, rigorous

DELTA = 0.01


def _draws(
    monkeypatch, n_draws, *, S2, D, R=1, n=128, seed0=1000, lam_scale=1.0, v_const=None, method="pasa"
):
    """Per draw: certify (capturing the rigorous and the probabilistic enclosure of §14/§18), run the
    kernel, count the elements outside each. Returns (prob violations, rigorous violations, elements,
    prob/rigorous per draw)."""
    cap = {}
    orig = _enclosure.enclose_run

    def capture(eng, *args):
        if lam_scale != 1.0:
            eng.prob_lam = eng.prob_lam * lam_scale
        r = orig(eng, *args)
        cap["r"], cap["p"] = r, eng.prob_out
        return r

    with monkeypatch.context() as mp:
        mp.setattr(_enclosure, "enclose_run", capture)
        return _count(n_draws, cap, S2=S2, D=D, R=R, n=n, seed0=seed0, v_const=v_const, method=method)


def _count(n_draws, cap, *, S2, D, R, n, seed0, v_const, method):
    viol = rviol = total = 0
    ratios = []
    for s in range(n_draws):
        q, k, v = data.make_qkv(
            "hybrid", batch=1, heads=1, kv_heads=1, seq_q=R, seq_kv=S2, head_dim=D, mean=10.0,
            amplitude=5.0, seed=seed0 + s,
        )  # fmt: skip
        if v_const is not None:
            v = torch.full_like(v, v_const)
        kt = shifted_keys(k, block_kv=n) if method == "pasa" else None
        cert = rigorous.certify(method, q, k, v, block_kv=n, shifted_keys=kt, confidence=1 - DELTA)
        out = run_method(method, q, k, v, block_kv=n).double().numpy()[0, 0]
        (r_lo, r_hi, bad), (p_lo, p_hi) = cap["r"], cap["p"]
        ok = ~bad[:, None]
        rviol += int((((out < r_lo) | (out > r_hi)) & ok).sum())
        viol += int((((out < p_lo) | (out > p_hi)) & ok).sum())
        total += int(np.broadcast_to(ok, out.shape).sum())
        # the probabilistic enclosure lies inside the rigorous one, so its bound is never larger
        assert np.all((p_lo >= r_lo) & (p_hi <= r_hi) | ~ok)
        assert cert.prob_abs_bound <= cert.max_abs_bound
        ratios.append(cert.prob_abs_bound / cert.max_abs_bound)
    return viol, rviol, total, np.array(ratios)


def _report(tag, viol, rviol, total, ratios):
    print(
        f"{tag}: {viol} of {total} elements outside the probabilistic enclosure (rate {viol / total:.2e}, "
        f"δ = {DELTA}), {rviol} outside the rigorous one; prob/rigorous median {np.median(ratios):.3f}, "
        f"min {ratios.min():.3f}"
    )


def test_prob_enclosure_quick(monkeypatch):
    """8 draws (the first of the slow test's 1 000), S2 = 8 192 (T = 64), d = 64: no element outside
    the rigorous enclosure, at most δ outside the probabilistic one, and the probabilistic bound
    genuinely below the rigorous one on at least a quarter of the draws (ratio ≤ 0.9; on many draws the
    rigorous bound is already within 1.2–1.4× of the measured error, where nothing is left to gain)."""
    viol, rviol, total, ratios = _draws(monkeypatch, 8, S2=8192, D=64)
    _report("quick", viol, rviol, total, ratios)
    assert rviol == 0
    assert viol <= DELTA * total
    assert np.mean(ratios <= 0.9) >= 0.25


@pytest.mark.slow
def test_prob_enclosure_violation_rate_1000_draws(monkeypatch):
    """Proposition 4 at δ = 0.01 over 1 000 independent seeded draws (S2 = 8 192, n = 128, d = 64):
    element-wise violation rate ≤ δ (measured at commit time: 0 of 64 000), none outside the rigorous
    enclosure, and the probabilistic bound well below the rigorous one on some draws (min ratio 0.315)."""
    viol, rviol, total, ratios = _draws(monkeypatch, 1000, S2=8192, D=64)
    _report("1000 draws", viol, rviol, total, ratios)
    print(f"fraction of draws with prob/rigorous <= 0.9: {np.mean(ratios <= 0.9):.3f}")
    assert rviol == 0
    assert viol <= DELTA * total
    assert ratios.min() < 0.5


def test_dropping_lambda_gives_violations(monkeypatch):
    """The Azuma multiplier is needed: with λ = 0 (only the deterministic part D_det) the kernel's
    output leaves the probabilistic enclosure on far more than δ of the elements of the same draws
    that stay inside it at the stated λ."""
    viol0, _, total0, _ = _draws(monkeypatch, 2, S2=8192, D=64, lam_scale=0.0)
    viol, _, total, _ = _draws(monkeypatch, 2, S2=8192, D=64)
    print(f"λ = 0: {viol0}/{total0} outside; stated λ: {viol}/{total}")
    assert viol0 > 5 * DELTA * total0
    assert viol <= DELTA * total


def test_gain_comes_from_the_quadrature(monkeypatch):
    """On one long row the probabilistic bound is well below the rigorous one; replacing the quadrature
    sum Q ← α²Q + ΣM² by the square of a plain sum ((α√Q + ΣM)²) loses the gain (ratio ≥ 0.95)."""
    q, k, v = data.make_qkv(
        "hybrid", batch=1, heads=1, kv_heads=1, seq_q=1, seq_kv=8192, head_dim=64, mean=10.0, amplitude=5.0,
        seed=1002,
    )  # fmt: skip
    kw = dict(shifted_keys=shifted_keys(k))
    cert = rigorous.certify("pasa", q, k, v, **kw)
    ratio = cert.prob_abs_bound / cert.max_abs_bound
    orig_step, orig_block = _enclosure._prob_step, _enclosure._prob_block

    def linear_step(al_lo, al_hi, ga_lo, ga_hi, pd_lo, pd_hi, pc_lo, pc_hi, qq, c0, ro, rl):
        # the same bounds M_k, added linearly: (α·√Q + Σ M_k)²
        m = sum(np.maximum(-a, b) * ((a < 0) & (b > 0)) for a, b in ro)
        m = m + np.abs(c0) * sum(np.maximum(-a, b) * ((a < 0) & (b > 0)) for a, b in rl)[:, None]
        t_lo, t_hi, _ = orig_step(al_lo, al_hi, ga_lo, ga_hi, pd_lo, pd_hi, pc_lo, pc_hi, 0 * qq, c0, ro, rl)
        return t_lo, t_hi, (al_hi[:, None] * np.sqrt(qq) + m) ** 2

    def linear_block(*args):
        lo, hi, m2 = orig_block(*args)
        return lo, hi, m2 * args[0].n  # the block's roundings added linearly: at most n-fold, a plain sum

    monkeypatch.setattr(_enclosure, "_prob_step", linear_step)
    monkeypatch.setattr(_enclosure, "_prob_block", linear_block)
    lin = rigorous.certify("pasa", q, k, v, **kw)
    lin_ratio = lin.prob_abs_bound / lin.max_abs_bound
    print(f"prob/rigorous {ratio:.3f} with the quadrature, {lin_ratio:.3f} with a plain sum")
    assert lin.max_abs_bound == cert.max_abs_bound
    assert ratio < 0.7
    assert lin_ratio >= 0.95


def test_rigorous_bound_unchanged_by_the_probabilistic_enclosure(monkeypatch):
    """Carrying D_det and Q changes nothing rigorous: with the probabilistic part switched off
    (prob_lam = None) the certificate's rigorous row bounds are bit-for-bit the same."""
    q, k, v = data.make_qkv(
        "hybrid", batch=1, heads=2, kv_heads=1, seq_q=2, seq_kv=700, head_dim=32, mean=10.0, amplitude=5.0,
        seed=5,
    )  # fmt: skip
    certs = {}
    for on in (True, False):
        orig = _enclosure.enclose_run

        def switch(eng, *args, on=on, orig=orig):
            if not on:
                eng.prob_lam = None
            return orig(eng, *args)

        monkeypatch.setattr(_enclosure, "enclose_run", switch)
        certs[on] = [rigorous.certify(m, q, k, v) for m in ("pasa", "fa_hybrid", "fa_qk")]
        monkeypatch.setattr(_enclosure, "enclose_run", orig)
    for a, b in zip(certs[True], certs[False], strict=True):
        assert np.array_equal(a.row_bound, b.row_bound) and a.dominant == b.dominant and a.terms == b.terms
        assert np.all(a.row_prob_bound <= b.row_prob_bound)


@pytest.mark.slow
@pytest.mark.parametrize("gap", [8.0, 10.0, 11.5, 12.6])
def test_prob_enclosure_stress_absorption(monkeypatch, gap):
    """A stress set built to break the model's mean-zero assumption: one key whose score is ``gap``
    above every other (V = 0 there, 1 elsewhere), so that each later block adds to ℓ ≈ 1 about
    n·e^{−gap}, near half an fp16 ulp at 1 (gap ≈ 12.6): the same rounding, of the same sign, in every
    block (stagnation). Where the enclosure pins those residuals they are not modelled; where it does
    not, the model's independence fails. Measured at commit time: no violation in 3 draws per gap."""
    from pasa_npu.golden import golden_attention

    cap = {}
    orig = _enclosure.enclose_run

    def capture(eng, *args):
        r = orig(eng, *args)
        cap["r"], cap["p"] = r, eng.prob_out
        return r

    monkeypatch.setattr(_enclosure, "enclose_run", capture)
    viol = total = 0
    for s in range(3):
        q, k, v = data.make_qkv(
            "hybrid", batch=1, heads=1, kv_heads=1, seq_q=1, seq_kv=8192, head_dim=64, mean=10.0,
            amplitude=5.0, seed=500 + s,
        )  # fmt: skip
        tau = 64**-0.5
        qd = q[0, 0, 0].double()
        sc = (qd @ k[0, 0].double().T) * tau
        k[0, 0, 0] = (k[0, 0, 0].double() + (sc[1:].max() + gap - sc[0]) / (tau * (qd @ qd)) * qd).half()
        v = torch.ones_like(v)
        v[0, 0, 0] = 0.0
        cert = rigorous.certify("pasa", q, k, v, shifted_keys=shifted_keys(k), confidence=1 - DELTA)
        out = run_method("pasa", q, k, v).double()
        err = float((out - golden_attention(q, k, v)).abs().max())
        out = out.numpy()[0, 0]
        (r_lo, r_hi, bad), (p_lo, p_hi) = cap["r"], cap["p"]
        ok = ~bad[:, None]
        assert not (((out < r_lo) | (out > r_hi)) & ok).any()
        viol += int((((out < p_lo) | (out > p_hi)) & ok).sum())
        total += out.size
        print(
            f"gap {gap} seed {500 + s}: measured {err:.3g}, prob {cert.prob_abs_bound:.3g}, rig {cert.max_abs_bound:.3g}"
        )
    assert viol <= DELTA * total


@pytest.mark.slow
def test_known_failure_of_the_model_row_sum_stagnation(monkeypatch):
    """The counterexample to model M4 found at commit time (docs/bounds.md §18): PASA, uniform(0, 0.5),
    S2 = 65 536, d = 128, seed 7. The weights are nearly flat, so every block adds ℓ_j ≈ 105 to
    ℓ ≈ 30 000–50 000 (fp16 spacing 16–32): the additions round the same way block after block,
    ℓ ends a few % low, and that is the whole measured error. The residuals are two-signed in the
    enclosure (ℓ's enclosure is wide) and therefore modelled, and their mean-zero independence fails:
    11 of 512 elements lie outside the probabilistic enclosure (none outside the rigorous one). This
    test pins the finding; if it stops failing the model, update §18."""
    cap = {}
    orig = _enclosure.enclose_run

    def capture(eng, *args):
        r = orig(eng, *args)
        cap["r"], cap["p"] = r, eng.prob_out
        return r

    monkeypatch.setattr(_enclosure, "enclose_run", capture)
    q, k, v = data.make_qkv(
        "uniform", batch=1, heads=1, kv_heads=1, seq_q=4, seq_kv=65536, head_dim=128, mean=0.0, amplitude=0.5,
        seed=7,
    )  # fmt: skip
    cert = rigorous.certify("pasa", q, k, v, shifted_keys=shifted_keys(k), confidence=1 - DELTA)
    out = run_method("pasa", q, k, v).double().numpy()[0, 0]
    (r_lo, r_hi, bad), (p_lo, p_hi) = cap["r"], cap["p"]
    assert not bad.any()
    assert not ((out < r_lo) | (out > r_hi)).any()
    outside = int(((out < p_lo) | (out > p_hi)).sum())
    print(
        f"outside the probabilistic enclosure: {outside} of {out.size}; prob/rig {cert.prob_abs_bound / cert.max_abs_bound:.3f}"
    )
    assert outside > DELTA * out.size
