"""FloatFormat, get_format and round_to_format: constants, names, input types, errors.

Expected constants come from the IEEE 754-2019 and OCP 8-bit floating point (OFP8, 2023) definitions and from numpy/ml_dtypes ``finfo``,
never from the code under test.
"""

from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import mpmath
import numpy as np
import pytest

import pasa_theory as pt
from pasa_theory.formats import FloatFormat

# (name, numpy/ml_dtypes dtype, p, max, min normal, min subnormal) -- IEEE 754-2019, OCP OFP8
TABLE = [
    ("fp16", np.float16, 11, Fraction(65504), Fraction(1, 2**14), Fraction(1, 2**24)),
    ("bf16", ml_dtypes.bfloat16, 8, Fraction((2**8 - 1) * 2**120), Fraction(1, 2**126), Fraction(1, 2**133)),
    ("fp32", np.float32, 24, Fraction((2**24 - 1) * 2**104), Fraction(1, 2**126), Fraction(1, 2**149)),
    ("fp64", np.float64, 53, Fraction((2**53 - 1) * 2**971), Fraction(1, 2**1022), Fraction(1, 2**1074)),
    ("fp8_e4m3", ml_dtypes.float8_e4m3fn, 4, Fraction(448), Fraction(1, 2**6), Fraction(1, 2**9)),
    ("fp8_e5m2", ml_dtypes.float8_e5m2, 3, Fraction(57344), Fraction(1, 2**14), Fraction(1, 2**16)),
]


@pytest.mark.parametrize("name, dtype, p, maxf, minn, mins", TABLE, ids=[t[0] for t in TABLE])
def test_constants_match_definitions_and_finfo(name, dtype, p, maxf, minn, mins):
    fmt = pt.get_format(name)
    assert fmt.name == name
    assert fmt.p == p
    assert fmt.u == Fraction(1, 2**p)
    assert fmt.max_finite == maxf
    assert fmt.min_normal == minn
    assert fmt.min_subnormal == mins
    fi = ml_dtypes.finfo(dtype) if dtype not in (np.float16, np.float32, np.float64) else np.finfo(dtype)
    assert Fraction(float(fi.max)) == maxf
    assert Fraction(float(fi.smallest_normal)) == minn
    assert Fraction(float(fi.smallest_subnormal)) == mins
    assert Fraction(float(fi.eps)) == fmt.eps == 2 * fmt.u  # finfo's eps is 2u (IEEE 754-2019)


def test_e4m3_has_no_infinities_and_e5m2_has():
    assert pt.get_format("fp8_e4m3").infinities is False
    assert pt.get_format("fp8_e5m2").infinities is True


def test_overflow_threshold():
    # IEEE: 2**emax * (2 - 2**-p); OCP E4M3: midpoint 464 between 448 and the missing 480
    assert pt.get_format("fp16").overflow_threshold == Fraction(2**15) * (2 - Fraction(1, 2**11)) == 65520
    assert pt.get_format("fp8_e4m3").overflow_threshold == 464


def test_overflow_threshold_float():
    """The float64 view of the threshold: exact where it fits (2**15 * (2 - 2**-11) = 65520), inf for fp64
    (2**1023 * (2 - 2**-53) = 2**1024 * (1 - 2**-54) rounds past the largest float64)."""
    got = pt.get_format("fp16").overflow_threshold_float
    assert type(got) is float and got == 65520.0, f"fp16: {got!r} != 65520.0"
    got = pt.get_format("fp8_e4m3").overflow_threshold_float
    assert got == 464.0, f"fp8_e4m3: {got!r} != 464.0"
    got = pt.get_format("fp32").overflow_threshold_float
    assert Fraction(got) == Fraction(2**127) * (2 - Fraction(1, 2**24)), f"fp32: {got!r}"
    got = pt.get_format("fp64").overflow_threshold_float
    assert got == math.inf, f"fp64: {got!r} != inf"


@pytest.mark.parametrize(
    "alias, name",
    [
        ("float16", "fp16"),
        ("half", "fp16"),
        ("bfloat16", "bf16"),
        ("float32", "fp32"),
        ("float64", "fp64"),
        ("double", "fp64"),
        ("FP16", "fp16"),
        (" bf16 ", "bf16"),
        ("float8_e4m3fn", "fp8_e4m3"),
        ("e5m2", "fp8_e5m2"),
    ],
)
def test_aliases(alias, name):
    assert pt.get_format(alias) is pt.get_format(name)


def test_get_format_accepts_dtypes():
    import torch

    assert pt.get_format(np.float16) is pt.get_format(np.dtype("float16")) is pt.get_format("fp16")
    assert (
        pt.get_format(ml_dtypes.bfloat16)
        is pt.get_format(np.dtype(ml_dtypes.bfloat16))
        is pt.get_format("bf16")
    )
    assert pt.get_format(ml_dtypes.float8_e4m3fn) is pt.get_format("fp8_e4m3")
    assert pt.get_format(torch.float16).name == "fp16" and pt.get_format(torch.bfloat16).name == "bf16"
    assert pt.get_format(torch.float8_e5m2).name == "fp8_e5m2"
    with pytest.raises(ValueError, match="unknown format name 'float8_e4m3fnuz'"):
        pt.get_format(ml_dtypes.float8_e4m3fnuz)
    with pytest.raises(TypeError, match="fmt: expected a format name"):
        pt.get_format(np.dtype("int32"))


def test_get_format_passes_instances_through():
    fmt = FloatFormat("tf32", p=11, emin=-126, emax=127)
    assert pt.get_format(fmt) is fmt


def test_unknown_name_names_argument_and_valid_names():
    with pytest.raises(ValueError, match=r"fmt: unknown format name 'fp12'.*fp16.*bf16.*fp8_e4m3"):
        pt.get_format("fp12")
    with pytest.raises(ValueError, match=r"^vector_format: unknown"):
        pt.recovery_coefficient("fp16", 128, "0.9", vector_format="fp7")
    with pytest.raises(TypeError, match="fmt: expected a format name"):
        pt.get_format(16)


def test_custom_format_validation():
    with pytest.raises(ValueError, match="p:"):
        FloatFormat("x", p=0, emin=-2, emax=2)
    with pytest.raises(ValueError, match="emin, emax"):
        FloatFormat("x", p=3, emin=-2, emax=-3)
    with pytest.raises(ValueError, match="max_finite"):
        FloatFormat("x", p=3, emin=-2, emax=2, max_finite=Fraction(9, 2))  # not on the 3-bit grid
    with pytest.raises(TypeError, match="p: expected an int"):
        FloatFormat("x", p=3.0, emin=-2, emax=2)
    # a custom format rounds like the grid it describes: p = 3 → spacing 1/4 in [1, 2)
    f = FloatFormat("p3", p=3, emin=-2, emax=2)
    assert f.max_finite == 7
    assert pt.round_to_format(Fraction(9, 8), f) == 1  # tie 1.125 between 1 and 1.25 → even (1)
    assert pt.round_to_format(Fraction(11, 8), f) == Fraction(3, 2)  # tie between 1.25 and 1.5 → 1.5
    # min subnormal 2**(emin - p + 1) = 1/16; half of it is a tie between 0 (even) and 1/16 → 0
    assert f.min_subnormal == Fraction(1, 16)
    assert pt.round_to_format(Fraction(1, 32), f) == 0
    assert pt.round_to_format(Fraction(1, 32) + Fraction(1, 10**9), f) == Fraction(1, 16)
    assert pt.round_to_format(Fraction(3, 32), f) == Fraction(1, 8)  # tie between 1/16 (odd) and 2/16


def test_input_types_are_taken_exactly():
    fp16 = pt.get_format("fp16")
    x = 1 + 2**-11  # a tie, exactly representable in float64
    assert pt.round_to_format(x, fp16) == 1
    assert pt.round_to_format(Fraction(2049, 2048), fp16) == 1
    assert pt.round_to_format(mpmath.mpf(x), fp16) == 1
    assert pt.round_to_format(np.float64(x), fp16) == 1
    with mpmath.workprec(80):  # 1 + 2**-11 + 2**-60 needs 61 bits
        just_above = mpmath.mpf(x) + mpmath.mpf(2) ** -60
    assert pt.round_to_format(just_above, fp16) == Fraction(1025, 1024)
    assert pt.round_to_format(mpmath.mpf(-0.75), fp16) == Fraction(-3, 4)  # the sign is kept
    assert pt.round_to_format(mpmath.mpf(-x), fp16) == -1
    assert pt.round_to_format(3, fp16) == 3 and isinstance(pt.round_to_format(3, fp16), Fraction)
    # the float 0.1 is its binary value, not 1/10
    assert pt.round_to_format(0.1, "fp64") == Fraction(*(0.1).as_integer_ratio()) != Fraction(1, 10)


@pytest.mark.parametrize("bad", ["1.0", True, 1j, None, [1.0]])
def test_bad_input_types(bad):
    with pytest.raises(TypeError, match="x: expected"):
        pt.round_to_format(bad, "fp16")


def test_bad_mode():
    with pytest.raises(ValueError, match="mode: expected one of nearest_even"):
        pt.round_to_format(1.0, "fp16", "nearest")


def test_non_finite_inputs():
    assert math.isnan(pt.round_to_format(math.nan, "fp16"))
    assert pt.round_to_format(math.inf, "fp16") == math.inf
    assert pt.round_to_format(-math.inf, "bf16") == -math.inf
    assert math.isnan(pt.round_to_format(math.inf, "fp8_e4m3"))  # no infinities
    assert pt.round_to_format(mpmath.mpf("-inf"), "fp16") == -math.inf
    assert math.isnan(pt.round_to_format(mpmath.mpf("nan"), "fp16"))


def test_signed_zero_and_directed_underflow():
    fp16 = pt.get_format("fp16")
    assert pt.round_to_format(-0.0, fp16) == 0
    tiny = Fraction(1, 2**30)
    assert pt.round_to_format(tiny, fp16) == 0
    assert pt.round_to_format(tiny, fp16, "up") == fp16.min_subnormal
    assert pt.round_to_format(-tiny, fp16, "down") == -fp16.min_subnormal
    assert pt.round_to_format(-tiny, fp16, "up") == 0


def test_no_subnormal_format_rounds_to_zero_or_min_normal():
    f = FloatFormat("fp16_ftz", p=11, emin=-14, emax=15, subnormals=False)
    mn = f.min_normal
    assert f.min_subnormal == mn
    assert pt.round_to_format(mn / 2, f) == 0  # tie between 0 and min_normal → 0 (the even multiple)
    assert pt.round_to_format(mn / 2 + Fraction(1, 2**40), f) == mn
    assert pt.round_to_format(mn * Fraction(3, 4), f) == mn
    assert pt.round_to_format(mn / 4, f, "up") == mn
    assert pt.round_to_format(mn * Fraction(3, 4), f, "toward_zero") == 0
    # next_down of min_normal is 0 in a format without subnormals
    assert pt.next_down(mn, f) == 0


def test_next_up_down_and_ulp():
    fp16 = pt.get_format("fp16")
    assert pt.next_up(1, fp16) == 1 + Fraction(1, 1024)
    assert pt.next_down(1, fp16) == 1 - Fraction(1, 2048)
    assert pt.next_up(0, fp16) == Fraction(1, 2**24)
    assert pt.next_up(65504, fp16) == math.inf
    assert math.isnan(pt.next_up(448, "fp8_e4m3"))
    assert pt.ulp(1, fp16) == Fraction(1, 1024)
    assert pt.ulp(Fraction(1, 2**20), fp16) == Fraction(1, 2**24)
    with pytest.raises(ValueError, match="v: expected a finite value of fp16"):
        pt.next_up(Fraction(1, 3), fp16)


def test_rounding_preimage_ties():
    fp16 = pt.get_format("fp16")
    # 1 (even significand): both ties round to it; preimage [1 - 2**-12, 1 + 2**-11]
    assert pt.rounding_preimage(1, fp16) == (1 - Fraction(1, 2**12), 1 + Fraction(1, 2**11), True, True)
    # 1 + 2**-10 (odd): both ties go elsewhere
    lo, hi, lc, hc = pt.rounding_preimage(1 + Fraction(1, 1024), fp16)
    assert (lo, hi, lc, hc) == (1 + Fraction(1, 2**11), 1 + Fraction(3, 2**11), False, False)
    # top value: upper end is the overflow threshold, open for IEEE, closed for E4M3 (464 → 448)
    assert pt.rounding_preimage(65504, fp16)[1:4:2] == (65520, False)
    assert pt.rounding_preimage(448, "fp8_e4m3")[1:4:2] == (464, True)


def _quantum_probes(fmt):
    """0, the subnormal range, the normal boundary, binade edges across the format's range (each side of
    each power of two, and the largest value below it), max_finite and a value past it, with both signs."""
    ms, mn, mx = fmt.min_subnormal, fmt.min_normal, fmt.max_finite
    vals = [Fraction(0), ms, 2 * ms, 3 * ms, mn - ms, mn, mn + ms, mn * (2 - fmt.eps), 2 * mn, mx, 2 * mx]
    vals += [ms / 2, ms / 4] if ms / 4 >= Fraction(1, 2**1074) else []
    step = max(1, (fmt.emax - fmt.emin) // 40)
    for e in range(fmt.emin, fmt.emax + 1, step):
        top = Fraction(2) ** e
        vals += [top, top * (1 + fmt.eps), top * (2 - fmt.eps), top * 3 / 2]
    vals = [v for v in vals if v < Fraction(2) ** 1024]
    return vals + [-v for v in vals]


@pytest.mark.parametrize("name", ["fp16", "bf16", "fp32", "fp64", "fp8_e4m3"])
def test_quantum_array_matches_exact_ulp(name):
    """quantum_array agrees exactly with the rational ulp (2**(max(floor(log2|x|), emin) - p + 1))."""
    fmt = pt.get_format(name)
    vals = _quantum_probes(fmt)
    x = np.array([float(v) for v in vals])
    assert all(Fraction(float(v)) == v for v in vals), "probe not a float64"
    got = pt.quantum_array(x, fmt)
    assert got.dtype == np.float64 and got.shape == x.shape
    for xi, gi in zip(x, got):
        want = pt.ulp(Fraction(float(xi)), fmt)
        assert Fraction(float(gi)) == want, f"{name}: quantum at {xi!r} is {gi!r}, expected {float(want)!r}"
    assert float(got[0]) == float(fmt.min_subnormal) > 0


def test_quantum_array_without_subnormals_and_non_finite():
    """No subnormals: the quantum below min_normal is min_normal (the candidates are 0 and min_normal);
    ±inf give inf, nan gives nan."""
    fmt = FloatFormat("nosub", p=4, emin=-6, emax=8, subnormals=False)
    x = np.array([0.0, 2.0**-9, 2.0**-7, 2.0**-6, 2.0**-6 * 1.875, 1.0, -3.0])
    got = pt.quantum_array(x, fmt)
    want = [2.0**-6, 2.0**-6, 2.0**-6, 2.0**-9, 2.0**-9, 2.0**-3, 2.0**-2]
    assert got.tolist() == want, f"{got.tolist()} != {want}"
    assert [float(pt.ulp(Fraction(float(v)), fmt)) for v in x] == want
    got = pt.quantum_array(np.array([np.inf, -np.inf, np.nan]), "fp16")
    assert got[0] == got[1] == np.inf and np.isnan(got[2]), got
