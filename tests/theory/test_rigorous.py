"""Torch-free checks of the rigorous a-posteriori bound's building blocks (docs/bounds.md §1–§2).

The oracles are exact rational arithmetic (fractions) and float64 computed independently of
pasa_theory.rigorous; the kernel-against-bound checks live in tests/npu/test_rigorous.py.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from pasa_theory import rigorous, schema
from pasa_theory.formats import get_format, round_to_format

F16 = rigorous._FORMATS["fp16"]
F32 = rigorous._FORMATS["fp32"]


def _all_fp16() -> np.ndarray:
    x = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float64)
    return x[np.isfinite(x)]


def test_rounding_is_round_to_nearest_even_in_exact_arithmetic():
    # the enclosure rule (monotone rounding of endpoints) needs the exact RN of a float64 number
    rng = np.random.default_rng(7)
    x = rng.standard_normal(3000) * np.exp(rng.uniform(-19, 11, 3000))
    grid = _all_fp16()
    ties = (grid[:-1] + grid[1:]) / 2  # exact midpoints (float64 holds them)
    x = np.concatenate([x[np.abs(x) < 65000], ties[::37]])
    f = get_format("fp16")
    got = F16.rnd(x)
    for xi, gi in zip(x, got):
        want = round_to_format(Fraction(float(xi)), f)
        assert Fraction(float(gi)) == want, (xi, gi, want)


@pytest.mark.parametrize("fmt_name", ["fp16", "fp32"])
def test_half_ulp_bounds_every_rounding_below_the_magnitude(fmt_name):
    fmt = rigorous._FORMATS[fmt_name]
    rng = np.random.default_rng(11)
    lo = fmt.emin - 3
    hi = 15 if fmt_name == "fp16" else 100
    y = rng.uniform(0.5, 1.0, 4000) * np.exp2(rng.integers(lo, hi, 4000))
    y = np.concatenate([y, -y])
    err = np.abs(fmt.rnd(y) - y)
    # Lemma 1: |fl(y) − y| ≤ hulp(M) for |y| ≤ M; take M = |y| (tightest) and M = 2|y|
    assert np.all(err <= fmt.hulp(np.abs(y)))
    assert np.all(fmt.hulp(np.abs(y)) <= fmt.u * np.abs(y) + fmt.eta)
    # and half an ulp is attained: the bound is not loose by 2x (midpoints round with error hulp)
    g = _all_fp16() if fmt_name == "fp16" else None
    if g is not None:
        pos = g[(g > 0)]
        mids = (pos[:-1] + pos[1:]) / 2
        e = np.abs(F16.rnd(mids) - mids)
        assert np.all(e == F16.hulp(mids))


def test_sub_err_is_zero_only_for_exact_differences():
    rng = np.random.default_rng(3)
    g = _all_fp16()
    g = g[np.abs(g) < 1000]
    x = rng.choice(g, 20000)
    y = rng.choice(g, 20000)
    # concentrate on near pairs too (Sterbenz range), where exactness holds
    y[:10000] = F16.rnd(x[:10000] * rng.uniform(0.4, 2.5, 10000))
    bound = F16.sub_err(x, x, y, y)
    true = np.array(
        [
            abs(Fraction(float(F16.rnd(np.float64(a - b)))) - (Fraction(float(a)) - Fraction(float(b))))
            for a, b in zip(x, y)
        ],
        dtype=object,
    )
    truef = np.array([float(t) for t in true])
    assert np.all(truef <= bound), np.max(truef - bound)
    # exact cases are recognised often (a test that the rule is not vacuous)
    assert np.mean(bound == 0) > 0.4


def test_gamma_is_the_closed_form_and_exceeds_first_order():
    u = 2.0**-11
    for m in (1, 10, 128, 1407, 2047):
        assert rigorous.gamma(m, u) == pytest.approx(m * u / (1 - m * u), rel=1e-15)
        assert rigorous.gamma(m, u) > m * u
        assert (1 + u) ** m - 1 <= rigorous.gamma(m, u)
    assert rigorous.gamma(2048, u) == math.inf


def test_bad_input_is_named():
    q = np.zeros((1, 1, 4, 8))
    with pytest.raises(ValueError, match="q must be 4-D"):
        rigorous.certify("pasa", np.zeros((4, 8)), q, q)
    with pytest.raises(ValueError, match="exactly representable in fp16"):
        rigorous.certify("pasa", q + 0.1, q, q)
    # float64 units mixed with narrower ones: neither the fp32 nor the fp64 case of the theorems
    with pytest.raises(ValueError, match="policy .*every unit in fp64"):
        rigorous.certify("pasa", q, q, q, precision=schema.PRESET_SPECS["npu_fp16"].replace(vector="fp64"))
    with pytest.raises(ValueError, match="rows must be"):
        rigorous.certify("pasa", q, q, q, rows=[9])
    with pytest.raises(ValueError, match="method must be"):
        rigorous.certify("nope", q, q, q)


def test_certificate_of_constant_v_is_a_few_roundings_of_v():
    # V constant: every method returns that constant up to the final roundings; the bound must say
    # so (the hull cap is 0 and the bound is a few half-ulps of |v|).
    rng = np.random.default_rng(5)
    q = F16.rnd(rng.standard_normal((1, 2, 8, 32)))
    k = F16.rnd(rng.standard_normal((1, 1, 40, 32)))
    v = np.full((1, 1, 40, 16), 3.0)
    c = rigorous.certify("pasa", q, k, v, block_kv=16)
    assert c.hull_cap < 1e-12
    assert 0 < c.max_abs_bound < 64 * F16.u * 3.0, c


def test_lemma_algebra_checked_by_sympy():
    checks = rigorous.sympy_checks()
    assert checks and all(checks.values()), checks


def _stats(**kw):
    base = dict(q_max=2.0, k_max=2.0, v_abs=3.0, v_spread=2.0, head_dim=64, seq_kv=512)
    base.update(kw)
    return rigorous.InputStats(**base)


@pytest.mark.parametrize("method", ["pasa", "fa_qk", "fa_q", "fa_hybrid"])
def test_a_priori_grows_with_every_input_bound(method):
    b0 = rigorous.a_priori(method, _stats()).bound
    assert 0 < b0 < math.inf
    for key, val in dict(q_max=4.0, k_max=4.0, v_abs=6.0, v_spread=4.0, seq_kv=2048).items():
        assert rigorous.a_priori(method, _stats(**{key: val})).bound >= b0, key


def test_a_priori_hybrid_is_first_order_in_fp32_u_for_small_scores():
    # fp32 vector unit: the bound is dominated by the fp16 output rounding and P's fp16 cast, i.e. a
    # few fp16 half-ulps of |v|, not fp16 roundings of the scores
    b = rigorous.a_priori("fa_hybrid", _stats(q_max=0.5, k_max=0.5))
    b16 = rigorous.a_priori("fa_qk", _stats(q_max=0.5, k_max=0.5))
    assert b.bound < b16.bound / 5
    assert b.exponent_error < 1e-4


def test_a_priori_reports_possible_overflow():
    b = rigorous.a_priori("fa_qk", _stats(q_max=200.0, k_max=200.0, head_dim=128))
    assert b.overflow_possible and b.bound == math.inf
    with pytest.raises(TypeError, match="InputStats"):
        rigorous.a_priori("pasa", {"q_max": 1})


def test_subtraction_exactness_when_an_enclosure_contains_zero():
    """Lemma 2 must not declare fl(y − x) exact when x may be a subnormal: an enclosure holding 0 has the
    subnormal spacing, not that of its endpoints. A zero magnitude once took the spacing 2⁻¹¹ and
    declared this subtraction exact (error bound 0) although fl16 rounds it."""
    f = rigorous._FORMATS["fp16"]
    y = float(np.float16(0.7))
    for x in (3 * 2.0**-24, -(2.0**-20), 2.0**-15 + 2.0**-24):
        actual = abs(float(np.float16(y - x)) - (y - x))
        bound = float(f.sub_err(-0.25, 0.25, y, y))
        assert actual > 0 and bound >= actual, (x, actual, bound)
    # and a rounding at magnitude 0 has error 0 ≤ hulp(0), the half subnormal spacing
    assert float(f.hulp(0.0)) == 2.0**-25


def test_ratio_lemma_inequality_sampled():
    """Lemma 11.1 itself (not only its ingredients): perturbing the weights by factors e^λ, |λ| ≤ Λ,
    moves the weighted mean by at most e^Λ(e^Λ − 1)·max|v − o|. Sampled in float64, with constructed
    worst cases (λ = +Λ on the largest deviations, −Λ elsewhere)."""
    rng = np.random.default_rng(11)
    for _ in range(2000):
        m = int(rng.integers(2, 40))
        w = rng.exponential(size=m) ** 3
        v = rng.normal(size=m) * 10.0 ** rng.uniform(-3, 3)
        lam_max = 10.0 ** rng.uniform(-6, 0.5)
        o = float(w @ v / w.sum())
        if rng.random() < 0.3:
            lam = np.where(v > o, lam_max, -lam_max)
        else:
            lam = rng.uniform(-lam_max, lam_max, size=m)
        wp = w * np.exp(lam)
        moved = abs(float(wp @ v / wp.sum()) - o)
        bound = math.exp(lam_max) * math.expm1(lam_max) * float(np.abs(v - o).max())
        assert moved <= bound * (1 + 1e-9) + 1e-300, (m, lam_max, moved, bound)
