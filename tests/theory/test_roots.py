"""optimal_beta and fixed_points: the published values, exact verification, ties, precision.

Expected values are the figures printed in docs/method.md §6.4 and §7 (10 digits) and in the issue; the
roundings that verify a fixed point are redone with numpy/ml_dtypes casts (tests/theory/oracles.py).
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import mpmath
import pytest

import pasa_theory as pt

from .oracles import cast_round

STARTS = ("15/16", "31/32", "63/64")  # 1 − 2**-4, 1 − 2**-5, 1 − 2**-6

# docs/method.md §6.4: (format, n) → (paper form, optimal_para.py form)
TABLE = {
    ("fp16", 64): (
        ("0.9375000000", "0.9687500000", "0.9846190829"),
        ("0.9375000000", "0.9687500000", "0.9846191406"),
    ),
    ("fp16", 128): (
        ("0.9375000000", "0.9689939059", "0.9844970410"),
        ("0.9375000000", "0.9689941406", "0.9844970703"),
    ),
    ("fp16", 256): (
        ("0.9377431941", "0.9688719520", "0.9844360204"),
        ("0.9377441406", "0.9688720703", "0.9844360352"),
    ),
    ("fp16", 512): (
        ("0.9376215953", "0.9688109758", "0.9844055102"),
        ("0.9376220703", "0.9688110352", "0.9844055176"),
    ),
    ("bf16", 64): (
        ("0.9384728622", "0.9692378190", "0.9846190829"),
        ("0.9384765625", "0.9692382813", "0.9846191406"),
    ),
    ("bf16", 128): (
        ("0.9379864026", "0.9689939059", "0.9844970410"),
        ("0.9379882812", "0.9689941406", "0.9844970703"),
    ),
    ("bf16", 256): (
        ("0.9377431941", "0.9688719520", "0.9844360204"),
        ("0.9377441406", "0.9688720703", "0.9844360352"),
    ),
    ("bf16", 512): (
        ("0.9356765084", "0.9668599844", "0.9824529834"),
        ("0.9356689453", "0.9668579102", "0.9824523926"),
    ),
}
CASES = [
    (fmt, n, form, start, TABLE[(fmt, n)][k][i])
    for (fmt, n) in TABLE
    for k, form in enumerate(("paper", "kappa"))
    for i, start in enumerate(STARTS)
]

HALF_UNIT_10 = Fraction(1, 2 * 10**10)  # a 10-digit figure is within half a unit of its last digit


def _close10(x: Fraction, printed: str) -> bool:
    return abs(x - Fraction(printed)) <= HALF_UNIT_10


def _verify_with_casts(fp):
    """Independent verification of a rational fixed point: casts reproduce the cell's entries, and
    β solves its equation exactly with those entries."""
    beta, n = fp.beta_exact, fp.n
    sigma = Fraction(1) if fp.scale is None else Fraction(fp.scale)
    diag = cast_round(sigma * (1 - beta / n), fp.fmt.name)
    off = cast_round(-sigma * beta / n, fp.fmt.name)
    assert (diag, off) == (fp.diag, fp.off)
    b = -off
    a = diag + b
    rhs = sigma * b * n / (a * (a - b * n))
    if fp.form == "kappa":
        rhs += (sigma - a) / a
    assert beta / (1 - beta) == rhs


@pytest.mark.parametrize(
    "fmt, n, form, start, printed", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}-{c[3]}" for c in CASES]
)
def test_published_table(fmt, n, form, start, printed):
    fp = pt.optimal_beta(fmt, n, start=start, form=form)
    assert _close10(fp.beta_exact, printed), (float(fp), printed)
    _verify_with_casts(fp)


def test_issue_acceptance_values():
    # fp16, n = 128, paper form: the published 0.9689939 and its neighbours
    assert f"{float(pt.optimal_beta('fp16', 128, start='31/32')):.10f}" == "0.9689939059"
    assert f"{float(pt.optimal_beta('fp16', 128, start='63/64')):.10f}" == "0.9844970410"
    fp = pt.optimal_beta("fp16", 128, start="15/16")
    assert fp.beta_exact == Fraction(15, 16) and fp.a == 1 and fp.iterations == 0  # M exact: a = 1
    # the reference solver's outputs (κ form), exactly the dyadic values it prints
    got = [pt.optimal_beta("fp16", 128, start=s, form="code").beta_exact for s in STARTS]
    assert got == [Fraction(15, 16), Fraction(3969, 4096), Fraction(8065, 8192)]
    assert [f"{float(x):.10f}" for x in got] == ["0.9375000000", "0.9689941406", "0.9844970703"]


def test_forms_negative_control():
    # only the paper form reproduces the 7 printed digits of 0.9689939; the κ form misses them
    paper = pt.optimal_beta("fp16", 128, start="31/32", form="paper")
    kappa = pt.optimal_beta("fp16", 128, start="31/32", form="kappa")
    assert abs(float(paper) - 0.9689939) < 5e-8
    assert abs(float(kappa) - 0.9689939) > 2e-7
    # and the κ form is exactly κ = 0 with the exact c, the paper form is not
    assert kappa.kappa_exact_c == 0 and paper.kappa_exact_c != 0


SCALED = {
    "paper": ("0.9374323777", "0.9689528165", "0.9847111441"),
    "kappa": ("0.9374311489", "0.9689529455", "0.9847111464"),
}


@pytest.mark.parametrize("form", ["paper", "kappa"])
@pytest.mark.parametrize("scale", ["1/sqrt(128)", 1 / math.sqrt(128)], ids=["exact-tau", "float64-tau"])
def test_scaled_fixed_points(form, scale):
    for start, printed in zip(STARTS, SCALED[form]):
        fp = pt.optimal_beta("fp16", 128, start=start, form=form, scale=scale)
        assert abs(fp.beta - mpmath.mpf(printed)) <= 5e-11, (start, fp.beta)


def test_scaled_exact_and_float64_tau_agree_beyond_the_printed_digits():
    # docs/method.md §7 does not say which τ it used: both give the same rounded entries and fixed points
    # that differ by about 1e-17, far below the 10 printed digits, so the table cannot tell them apart.
    for form in ("paper", "kappa"):
        for start in STARTS:
            e = pt.optimal_beta("fp16", 128, start=start, form=form, scale="1/sqrt(128)")
            f = pt.optimal_beta("fp16", 128, start=start, form=form, scale=1 / math.sqrt(128))
            assert (e.diag, e.off) == (f.diag, f.off)
            assert e.beta_exact is None and f.beta_exact is not None  # irrational vs rational β
            assert 0 < abs(e.beta - f.beta) < 1e-15


@pytest.mark.parametrize("scale", [None, "1/sqrt(128)"])
def test_dps_50_and_100_agree_to_45_digits(scale):
    for start in STARTS:
        b50 = pt.optimal_beta("fp16", 128, start=start, scale=scale, dps=50).beta
        b100 = pt.optimal_beta("fp16", 128, start=start, scale=scale, dps=100).beta
        with mpmath.workdps(110):
            assert abs(b50 - b100) <= mpmath.mpf(10) ** -45 * abs(b100)
            # and 100 digits are real digits: the exact rational agrees with the 100-digit value
            if scale is None:
                exact = pt.optimal_beta("fp16", 128, start=start).beta_exact
                assert abs(b100 - mpmath.mpf(exact.numerator) / exact.denominator) <= mpmath.mpf(10) ** -99


def test_precision_does_not_leak():
    mpmath.mp.dps = 15
    pt.optimal_beta("fp16", 128, start="31/32", scale="1/sqrt(128)", dps=80)
    pt.fixed_points("bf16", 128, interval=("0.96", "0.97"), dps=70)
    assert mpmath.mp.dps == 15 and mpmath.iv.prec == 53


def test_fixed_point_fields():
    fp = pt.optimal_beta("fp16", 128, start="31/32")
    assert isinstance(fp.beta, mpmath.mpf) and isinstance(fp.beta_exact, Fraction)
    assert float(fp) == float(fp.beta_exact)
    assert fp.c_exact == fp.beta_exact / (1 - fp.beta_exact)
    assert fp.c_repr == Fraction(125, 4)  # fp16(31.2517...) = 31.25 (docs/method.md §2)
    assert fp.vector_format is pt.get_format("fp16")
    lo, hi = fp.interval
    assert lo <= fp.beta_exact <= hi
    assert fp.start == Fraction(31, 32) and fp.iterations == 1
    assert fp.form == "paper" and fp.scale is None
    assert fp.kappa_exact == ((fp.a - 1) + fp.c_repr * (fp.a - fp.b * 128) - fp.b * 128)
    # paper form: κ with the exact c is (a − σ)(a − bn)/(aσ) (derived in pasa_theory.scheme)
    k = (fp.a - 1) * (fp.a - fp.b * 128) / fp.a
    with mpmath.workdps(60):
        assert abs(fp.kappa_exact_c - mpmath.mpf(k.numerator) / k.denominator) < 1e-48
    with pytest.raises(dataclasses.FrozenInstanceError):
        fp.beta = 0.5  # frozen
    # a vector format wider than the matrix format: κ shrinks to the exact-c value's order
    fp32 = pt.optimal_beta("fp16", 128, start="31/32", vector_format="fp32")
    assert abs(fp32.kappa) < abs(fp.kappa) / 5


def test_tie_negative_control_float_iteration_takes_the_wrong_cell():
    # fp16, n = 512, κ form, start 7/8: the exact fixed point 3585/4096 lies exactly on the closed upper
    # end of its cell (β/512 is a tie of fp16 that goes to even). float64 computes F/(1+F) one ulp
    # above it, so even a *correct* rounding of the float64 iterate lands in the next cell.
    exact = pt.optimal_beta("fp16", 512, start=Fraction(7, 8), form="kappa")
    assert exact.beta_exact == Fraction(3585, 4096)
    assert exact.interval[1] == exact.beta_exact and exact.interval_closed[1]
    assert cast_round(-exact.beta_exact / 512, "fp16") == exact.off  # the tie rounds into the cell
    float_beta, _ = pt.reference_iteration("fp16", 512, 7 / 8, form="kappa", rounding="exact")
    assert Fraction(float_beta) != exact.beta_exact
    assert abs(float_beta - 0.8757314682) < 1e-10
    # the float answer is a fixed point too, of the neighbouring cell: not garbage, the wrong cell
    other = pt.optimal_beta("fp16", 512, start=float_beta, form="kappa")
    assert other.beta_exact == Fraction(float_beta) and other.iterations == 0
    assert (other.diag, other.off) != (exact.diag, exact.off)


def test_reference_solver_uses_torch_like_double_rounding():
    # torch's float64 → float16 cast goes through float32; on the reference's own starts this changes
    # nothing, and its κ-form outputs are the exact fixed points (ties that float64 represents exactly)
    for start, expected in zip((1 - 2**-4, 1 - 2**-5, 1 - 2**-6), ("15/16", "3969/4096", "8065/8192")):
        for rounding in ("via_fp32", "exact"):
            beta, iters = pt.reference_iteration("fp16", 128, start, form="kappa", rounding=rounding)
            assert Fraction(beta) == Fraction(expected) and iters in (1, 2)
    fp = pt.optimal_beta("fp16", 128, start="31/32", form="kappa")
    assert fp.beta_exact in fp.interval  # 3969/4096 sits on a cell end
    with pytest.raises(ValueError, match="rounding: expected"):
        pt.reference_iteration(rounding="torch")


def test_fixed_points_against_brute_force():
    # independent enumeration: apply the map G (computed here with casts) to a dense grid of β and
    # keep the values v with G(v) = v; fixed_points must return exactly that set in the window
    lo, hi = Fraction("0.9685"), Fraction("0.9705")
    grid = [lo + (hi - lo) * k / 3000 for k in range(3001)]

    def G(beta, form):
        diag = cast_round(1 - beta / 128, "fp16")
        b = -cast_round(-beta / 128, "fp16")
        a = diag + b
        r = b * 128 / (a * (a - b * 128))
        if form == "kappa":
            r += (1 - a) / a
        return r / (1 + r)

    for form in ("paper", "kappa"):
        images = {G(x, form) for x in grid}
        brute = sorted(v for v in images if lo <= v <= hi and G(v, form) == v)
        got = [fp.beta_exact for fp in pt.fixed_points("fp16", 128, form=form, interval=(lo, hi))]
        assert got == brute and len(got) >= 3


def test_fixed_points_are_verified_and_ordered():
    fps = pt.fixed_points("bf16", 128, interval=(0, 1))
    assert len(fps) > 1000
    betas = [fp.beta_exact for fp in fps]
    assert betas == sorted(betas) and len(set(betas)) == len(betas)
    for fp in fps[:: max(1, len(fps) // 60)]:
        _verify_with_casts(fp)
    # the start-derived fixed points are among them
    for start in STARTS:
        assert pt.optimal_beta("bf16", 128, start=start).beta_exact in set(betas)


def test_fixed_points_irrational_scale():
    fps = pt.fixed_points("fp16", 128, scale="1/sqrt(128)", interval=("0.968", "0.970"))
    values = [f"{float(fp):.10f}" for fp in fps]
    assert "0.9689528165" in values
    for fp in fps:
        assert fp.beta_exact is None
        lo, hi = fp.interval
        assert lo < fp.beta < hi


def test_fixed_points_guard_and_errors():
    with pytest.raises(ValueError, match="max_cells"):
        pt.fixed_points("fp32", 128)
    assert pt.fixed_points("fp32", 128, interval=("0.96875", "0.9687501"))  # a narrow window works
    with pytest.raises(ValueError, match="interval: expected lo <= hi"):
        pt.fixed_points("fp16", 128, interval=(0.9, 0.8))
    with pytest.raises(TypeError, match="interval: expected a pair"):
        pt.fixed_points("fp16", 128, interval=0.9)
    assert pt.fixed_points("fp16", 128, interval=(1, 1)) == []


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(n=1), ValueError, "n: expected an int >= 2"),
        (dict(n="128"), TypeError, "n: expected an int"),
        (dict(start=1.5), ValueError, r"start: expected a number in the open interval \(0, 1\)"),
        (dict(start=0), ValueError, "start: expected a number in the open interval"),
        (dict(dps=-5), ValueError, "dps: expected an int >= 1"),
        (dict(dps=50.0), TypeError, "dps: expected an int"),
        (dict(form="exact"), ValueError, "form: expected one of"),
        (dict(fmt="fp12"), ValueError, "fmt: unknown format name"),
        (dict(vector_format=3), TypeError, "vector_format: expected a format name"),
        (dict(scale="0"), ValueError, "scale: expected a positive number"),
    ],
)
def test_optimal_beta_bad_arguments(kwargs, exc, match):
    args = dict(fmt="fp16", n=128, start="31/32")
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        pt.optimal_beta(args.pop("fmt"), args.pop("n"), **args)


def test_no_fixed_point_reachable():
    # fp8 e4m3, n = 1024: −β/n rounds to 0 (b = 0), the equation has no solution in (0, 1)
    with pytest.raises(ValueError, match="no fixed point is reached"):
        pt.optimal_beta("fp8_e4m3", 1024, start="31/32")
