"""shifting_entries, kappa and recovery_coefficient against independent routes.

Routes: numpy/ml_dtypes casts (tests/theory/oracles.py), explicit n×n matrices in Fractions, mpmath at
high precision, and the values printed in docs/method.md §2.2 and §6.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

import mpmath
import numpy as np
import pytest

import pasa_theory as pt

from .oracles import cast_round


@pytest.mark.parametrize("fmt", ["fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "fp32"])
@pytest.mark.parametrize("n", [2, 16, 64, 128, 1000])
def test_entries_match_casts(fmt, n):
    rng = random.Random(1234 + n)
    betas = [Fraction(rng.randrange(1, 2**20), 2**20) for _ in range(150)]
    betas += [Fraction(31, 32), Fraction(15, 16), Fraction(63, 64), Fraction(1, 2)]
    for beta in betas:
        diag, off = pt.shifting_entries(fmt, n, beta)
        assert diag == cast_round(1 - beta / n, fmt), (beta, n)
        assert off == cast_round(-beta / n, fmt), (beta, n)


def test_published_tie_of_the_start_value():
    # β = 31/32, n = 128: 1 − 31/4096 = 2032.5/2048 is a tie → even 2032/2048 = 127/128 (docs/method.md §5)
    assert pt.shifting_entries("fp16", 128, Fraction(31, 32)) == (Fraction(127, 128), Fraction(-31, 4096))
    assert pt.shifting_entries("fp16", 128, 0.96875) == (Fraction(127, 128), Fraction(-31, 4096))
    # a and b of the rounded matrix: a = 0.99975586 (docs/method.md §6.5)
    a, b = pt.rounded_ab("fp16", 128, "31/32")
    assert a == 1 - Fraction(1, 2**12) and b == Fraction(31, 4096)


def test_beta_as_string_is_exact_decimal():
    # "0.9689939" is the decimal, the float 0.9689939 its binary neighbour: both fine, both exact
    e1 = pt.shifting_entries("fp16", 128, "0.9689939")
    e2 = pt.shifting_entries("fp16", 128, 0.9689939)
    assert (
        e1
        == e2
        == (
            cast_round(1 - Fraction("0.9689939") / 128, "fp16"),
            cast_round(-Fraction("0.9689939") / 128, "fp16"),
        )
    )


@pytest.mark.parametrize("beta", [Fraction(15, 16), Fraction(31, 32), Fraction(63, 64), Fraction("0.984497")])
@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_irrational_scale_matches_mpmath(fmt, beta):
    # independent route: 120-digit mpmath values (only a tie within 1e-115 could mislead), then cast
    with mpmath.workdps(120):
        tau = 1 / mpmath.sqrt(128)
        bm = mpmath.mpf(beta.numerator) / beta.denominator
        ys = [tau * (1 - bm / 128), -tau * bm / 128]
    approx = [Fraction(mpmath.nstr(y, 120, min_fixed=-1000, max_fixed=1000)) for y in ys]
    got = pt.shifting_entries(fmt, 128, beta, scale="1/sqrt(128)")
    assert got == tuple(cast_round(x, fmt) for x in approx)
    # the float64 value of 1/sqrt(128) gives the same entries here (docs/method.md §7)
    assert pt.shifting_entries(fmt, 128, beta, scale=1 / math.sqrt(128)) == got


def test_scale_accepts_sympy_and_mpmath():
    import sympy

    ref = pt.shifting_entries("fp16", 128, "31/32", scale="1/sqrt(128)")
    assert pt.shifting_entries("fp16", 128, "31/32", scale=1 / sympy.sqrt(128)) == ref
    assert pt.shifting_entries("fp16", 128, "31/32", scale="2**-3.5") == ref
    assert pt.shifting_entries("fp16", 128, "31/32", scale=sympy.Rational(1, 8)) == pt.shifting_entries(
        "fp16", 128, "31/32", scale=Fraction(1, 8)
    )
    with mpmath.workdps(60):
        tau = 1 / mpmath.sqrt(128)  # an mpf is its exact binary value (60 digits): same rounding here
    assert pt.shifting_entries("fp16", 128, "31/32", scale=tau) == ref
    with mpmath.workdps(40):
        enclosure = mpmath.iv.mpf(1) / mpmath.iv.sqrt(128)
    assert pt.shifting_entries("fp16", 128, "31/32", scale=enclosure) == ref


def test_undecidable_rounding_raises_and_decidable_does_not():
    # n = 2, β = 1/2: diag = 3σ/4. σ = (4/3)(1 + 2**-11 + ε) puts diag ε above the fp16 tie 1 + 2**-11.
    ok = pt.shifting_entries("fp16", 2, "1/2", scale="4/3*(1 + 2**-11 + exp(-200))")
    assert ok[0] == 1 + Fraction(1, 1024)  # above the tie: rounds up
    ok = pt.shifting_entries("fp16", 2, "1/2", scale="4/3*(1 + 2**-11 - exp(-200))")
    assert ok[0] == 1
    with pytest.raises(ValueError, match="too close to decide"):
        pt.shifting_entries("fp16", 2, "1/2", scale="4/3*(1 + 2**-11 + exp(-20000))")


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(n=1), ValueError, "n: expected an int >= 2"),
        (dict(n=128.0), TypeError, "n: expected an int"),
        (dict(n=True), TypeError, "n: expected an int"),
        (dict(beta=0), ValueError, r"beta: expected a number in the open interval \(0, 1\)"),
        (dict(beta=1), ValueError, "beta: expected a number in the open interval"),
        (dict(beta=-0.5), ValueError, "beta: expected a number in the open interval"),
        (dict(beta="1/sqrt(0.5)"), ValueError, "beta: expected a number in the open interval"),
        (dict(beta=math.nan), ValueError, "beta: expected a finite number"),
        (dict(beta="abc"), ValueError, "beta: unsupported expression"),
        (dict(beta="1/"), ValueError, "beta: cannot parse"),
        (dict(beta="__import__('os')"), ValueError, "beta: unsupported expression"),
        (dict(beta=[0.5]), TypeError, "beta: expected an int, Fraction, float"),
        (dict(scale=0), ValueError, "scale: expected a positive number"),
        (dict(scale="-1/sqrt(2)"), ValueError, "scale: expected a positive number"),
        (dict(scale=1e300), ValueError, "scale: the entries of σ·M overflow fp16"),
        (dict(fmt="fp99"), ValueError, "fmt: unknown format name"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    args = dict(fmt="fp16", n=128, beta=0.5)
    args.update(kwargs)
    scale = args.pop("scale", None)
    with pytest.raises(exc, match=match):
        pt.shifting_entries(args["fmt"], args["n"], args["beta"], scale=scale)


# -- κ and the recovery coefficient --------------------------------------------------------------------
def _explicit_recovery_error(fmt, n, beta, c, scale=1):
    """Build M_r entry by entry from the casts, apply it to a block, recover, return ŝ − σs and s."""
    scale = Fraction(scale)
    diag = cast_round(scale * (1 - Fraction(beta) / n), fmt)
    off = cast_round(-scale * Fraction(beta) / n, fmt)
    rng = random.Random(7)
    s = [Fraction(rng.randrange(-1000, 1000), 7) + 50 for _ in range(n)]  # mean ≈ 50: a biased block
    st = [sum((diag if i == j else off) * s[j] for j in range(n)) for i in range(n)]
    mean_st = sum(st) / n
    s_hat = [x + c * mean_st for x in st]
    return [s_hat[i] - scale * s[i] for i in range(n)], s, diag, off


@pytest.mark.parametrize(
    "fmt, n, beta", [("fp16", 16, "0.9689939"), ("bf16", 32, "0.7"), ("fp16", 24, "0.984497")]
)
def test_kappa_is_the_constant_part_of_the_recovery_error(fmt, n, beta):
    beta = Fraction(beta)
    c = Fraction(123, 4)
    err, s, diag, off = _explicit_recovery_error(fmt, n, beta, c)
    mu = sum(s) / n
    a = diag - off
    # e_k = (a − 1)(s_k − μ) + μ·κ  (B3), with κ from the package
    k = pt.kappa(fmt, n, beta, c=c)
    assert all(e == (a - 1) * (x - mu) + mu * k for e, x in zip(err, s))


@pytest.mark.parametrize(
    "fmt, n, beta, scale",
    [("fp16", 16, "0.9689939", 1), ("bf16", 32, "0.7", 1), ("fp16", 16, "0.9", Fraction(1, 3))],
)
def test_rounded_m_coefficient_removes_the_constant_error(fmt, n, beta, scale):
    beta = Fraction(beta)
    c = pt.recovery_coefficient(fmt, n, beta, scale=scale)
    err, s, diag, off = _explicit_recovery_error(fmt, n, beta, c, scale)
    mu = sum(s) / n
    a = diag - off
    # only the temperature term (a − σ)(s_k − μ) is left; a negative control: c = β/(1 − β) leaves more
    assert all(e == (a - scale) * (x - mu) for e, x in zip(err, s))
    err2, *_ = _explicit_recovery_error(fmt, n, beta, beta / (1 - beta), scale)
    assert any(e != (a - scale) * (x - mu) for e, x in zip(err2, s))


def test_recovery_coefficient_published_values():
    # docs/method.md §2: c = 15 for 0.9375 (M exact), and fp16(β/(1−β)) = 31.25, 63.5
    assert pt.recovery_coefficient("fp16", 128, "0.9375") == 15
    assert pt.recovery_coefficient("fp16", 128, "0.9375", source="beta") == 15
    for beta, c16 in [("0.9689939", 31.25), ("0.984497", 63.5)]:
        got = pt.recovery_coefficient("fp16", 128, beta, source="beta", vector_format="fp16")
        assert got == Fraction(c16) == Fraction(float(np.float16(float(beta) / (1 - float(beta)))))
        exact = pt.recovery_coefficient("fp16", 128, beta, source="beta")
        assert exact == Fraction(beta) / (1 - Fraction(beta))


def test_recovery_coefficient_defaults_and_errors():
    c = pt.recovery_coefficient()  # β from optimal_beta("fp16", 128)
    fp = pt.optimal_beta("fp16", 128)
    assert c == (fp.b * 128 + 1 - fp.a) / (fp.a - fp.b * 128)
    with pytest.raises(ValueError, match="irrational.*vector_format"):
        pt.recovery_coefficient("fp16", 128, "0.97", scale="1/sqrt(128)")
    c32 = pt.recovery_coefficient("fp16", 128, "0.97", scale="1/sqrt(128)", vector_format="fp32")
    assert pt.is_representable(c32, "fp32")
    with pytest.raises(ValueError, match="source: expected one of rounded_m, beta"):
        pt.recovery_coefficient("fp16", 128, "0.97", source="obtainInvPam")
    with pytest.raises(ValueError, match="vector_format: the recovery coefficient overflows fp8_e4m3"):
        pt.recovery_coefficient("fp16", 128, "0.999", source="beta", vector_format="fp8_e4m3")


# docs/method.md §6.5: β, a (8 digits), c used (fp16(β/(1−β))), κ (2 digits), κ with exact c
KAPPA_TABLE = [
    ("0.96875", 0.99975586, 31.0, -7.8e-3, None),
    ("0.9689939", 0.99975586, 31.25, -6.1e-5, -7.8e-6),
    ("0.984375", 0.99987793, 63.0, -7.8e-3, None),
    ("0.984497", 0.99987793, 63.5, -6.1e-5, -4.5e-6),
    ("0.99", 0.99992371, 99.0, -3.1e-2, None),
    ("0.9375", 1.0, 15.0, 0.0, None),
]


def _two_digits(x):
    return float(f"{float(x):.1e}")


@pytest.mark.parametrize("beta, a, c, k, k_exact", KAPPA_TABLE, ids=[t[0] for t in KAPPA_TABLE])
def test_kappa_table(beta, a, c, k, k_exact):
    got_a, _ = pt.rounded_ab("fp16", 128, beta)
    assert round(float(got_a), 8) == a
    assert pt.recovery_coefficient("fp16", 128, beta, source="beta", vector_format="fp16") == Fraction(c)
    assert _two_digits(pt.kappa("fp16", 128, beta, vector_format="fp16")) == k
    if k_exact is not None:
        assert _two_digits(pt.kappa("fp16", 128, beta)) == k_exact


def test_folded_scale_breaks_the_unscaled_optimum():
    # docs/method.md §7: with τ·M rounded, β = 0.984497 gives κ ≈ −1.4e-2, β = 0.9689939 gives ≈ +1.3e-3
    k1 = pt.kappa("fp16", 128, "0.984497", scale="1/sqrt(128)", vector_format="fp16")
    k2 = pt.kappa("fp16", 128, "0.9689939", scale="1/sqrt(128)", vector_format="fp16")
    assert _two_digits(k1) == -1.4e-2
    assert _two_digits(k2) == 1.3e-3
    # the β re-solved for τ·M brings it down by more than an order of magnitude (what is left comes
    # from storing c = 64.4 as fp16 64.375), and to ~1e-6 with the exact c
    fp = pt.optimal_beta("fp16", 128, start="63/64", scale="1/sqrt(128)")
    assert abs(fp.kappa) < abs(k1) / 10
    assert abs(fp.kappa_exact_c) < 1e-5


def test_equation_forms_differ_by_the_extra_term():
    # F(β) − f(β) = (σ − a)/a exactly (docs/method.md §6), at σ = 1 and at σ = 1/3
    for scale in (None, Fraction(1, 3)):
        sigma = 1 if scale is None else scale
        for beta in ("0.9689939", "0.5", "0.99"):
            a, b = pt.rounded_ab("fp16", 128, beta, scale=scale)
            f = pt.equation_rhs("fp16", 128, beta, form="paper", scale=scale)
            F = pt.equation_rhs("fp16", 128, beta, form="code", scale=scale)
            assert F - f == (sigma - a) / a
            assert f == sigma * b * 128 / (a * (a - b * 128))
            g = pt.fixed_point_map("fp16", 128, beta, form="paper", scale=scale)
            assert g == f / (1 + f)
    with pytest.raises(ValueError, match="form: expected one of"):
        pt.equation_rhs("fp16", 128, "0.5", form="optimal")
