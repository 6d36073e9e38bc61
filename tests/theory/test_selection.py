"""The selection criterion (C1): window, minimal |κ| with c stored, ties to the smaller β.

κ of each candidate is recomputed here from the casts (tests/theory/oracles.py), not taken from the
package.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

import pytest

import pasa_theory as pt
from pasa_theory.selection import rank_fixed_points, select_beta, selection_window

from .oracles import cast_round


def kappa_by_casts(fmt, n, beta, vector_format=None):
    diag = cast_round(1 - beta / n, fmt)
    b = -cast_round(-beta / n, fmt)
    a = diag + b
    c = cast_round(beta / (1 - beta), vector_format or fmt)
    return (a - 1) + c * (a - b * n) - b * n


def test_window():
    assert selection_window() == (Fraction(31, 32), Fraction(64, 65))
    assert selection_window("1/16", 100) == (Fraction(15, 16), Fraction(100, 101))
    with pytest.raises(ValueError, match="max_bias: expected a number in"):
        selection_window(1)
    with pytest.raises(ValueError, match="max_gain: expected a positive number"):
        selection_window(Fraction(1, 32), 0)
    with pytest.raises(ValueError, match="empty window"):
        selection_window(Fraction(1, 32), 2)


def test_empty_window_with_irrational_budgets_names_both_ends():
    # 1 − 1/√2 and (√2/1000)/(1 + √2/1000), printed from float64 here, not by the package
    lo = 1 - 1 / math.sqrt(2)
    g = math.sqrt(2) / 1000
    hi = g / (1 + g)
    with pytest.raises(ValueError, match=re.escape(f"= {lo:.6g} > max_gain/(1 + max_gain) = {hi:.6g}")):
        selection_window("1/sqrt(2)", "sqrt(2)/1000")


@pytest.mark.parametrize("fmt, n", [("fp16", 128), ("fp16", 256), ("bf16", 64), ("bf16", 512)])
@pytest.mark.parametrize("form", ["paper", "kappa"])
def test_selected_minimises_kappa_in_window(fmt, n, form):
    lo, hi = Fraction(31, 32), Fraction(64, 65)
    fp = select_beta(fmt, n, form=form)
    assert lo <= fp.beta_exact <= hi
    k_sel = kappa_by_casts(fmt, n, fp.beta_exact)
    assert k_sel == fp.kappa_exact
    cands = pt.fixed_points(fmt, n, form=form, interval=(lo, hi))
    assert len(cands) >= 2
    for other in cands:
        k = kappa_by_casts(fmt, n, other.beta_exact)
        assert abs(k_sel) < abs(k) or (abs(k_sel) == abs(k) and fp.beta_exact <= other.beta_exact)


def test_exact_cases_and_published_choice():
    # fp16, n = 64: M is exactly representable at 31/32 (1 − 31/2048 has 11 bits) and c = 31: κ = 0
    fp = select_beta("fp16", 64)
    assert fp.beta_exact == Fraction(31, 32) and fp.kappa_exact == 0
    assert cast_round(1 - Fraction(31, 2048), "fp16") == 1 - Fraction(31, 2048)
    # fp16, n = 16: κ = 0 at 31/32 and at 63/64; the tie goes to the smaller β (less gain)
    assert kappa_by_casts("fp16", 16, Fraction(63, 64)) == 0
    assert select_beta("fp16", 16).beta_exact == Fraction(31, 32)
    # bf16, n = 128: the criterion picks the published 0.9689939 (paper form)
    assert f"{float(select_beta('bf16', 128)):.10f}" == "0.9689939059"
    # a wider bias budget admits 15/16, where M is exact and κ = 0
    assert select_beta("fp16", 128, max_bias=Fraction(1, 16)).beta_exact == Fraction(15, 16)


def test_improves_on_the_reference_choices():
    # negative control: the reference's β (starts 1 − 2**-5, 1 − 2**-6) leave |κ| = 6.1e-5 with fp16 c;
    # the selected fixed point is two orders of magnitude better
    sel = select_beta("fp16", 128)
    for start in ("31/32", "63/64"):
        ref = pt.optimal_beta("fp16", 128, start=start)
        assert abs(ref.kappa_exact) == Fraction(1, 16384)
        assert abs(sel.kappa_exact) * 100 < abs(ref.kappa_exact)


def test_default_optimal_beta_is_the_selection():
    for scale in (None, "1/sqrt(128)"):
        a = pt.optimal_beta("fp16", 128, scale=scale)
        b = select_beta("fp16", 128, scale=scale)
        assert a.beta == b.beta and a.start is None
    # with c stored in fp32 the κ form leaves only fp32's rounding of c: |κ| <= u32·c·(1 − β) < 1e-7,
    # while the paper form keeps its own floor (a − σ)(a − bn)/(aσ), about 1e-6 here
    v = pt.optimal_beta("fp16", 128, form="kappa", vector_format="fp32")
    assert abs(v.kappa) <= float(Fraction(1, 2**24)) * float(v.c) * float(v.bias)
    p = pt.optimal_beta("fp16", 128, form="paper", vector_format="fp32")
    assert abs(p.kappa - p.kappa_exact_c) < 1e-7 < abs(p.kappa_exact_c)


def test_no_candidate_raises():
    with pytest.raises(ValueError, match="no fixed point .* in the selection window"):
        select_beta("fp8_e4m3", 1024)


def test_no_admissible_beta_says_why_and_which_call_works():
    """fp8_e4m3, n = 128: the diagonal of M rounds to exactly 1 at every fixed point, so β moves only with
    the off-diagonal, in steps too coarse for the default window. The message says so and names calls
    that succeed; each named call is executed here and must return the β it announced."""
    with pytest.raises(ValueError) as info:
        pt.optimal_beta("fp8_e4m3", 128)
    msg = str(info.value)
    assert "rounds to σ itself" in msg and "fp8_e4m3, n = 128" in msg
    calls = re.findall(r"(pasa_theory\.optimal_beta\([^)]*\)) gives β = ([0-9.]+)", msg)
    assert len(calls) == 2, msg
    # the two admissible fixed points, as pasa-alpha lists them (not read back from the message)
    assert {b for _, b in calls} == {"0.7445214013", "0.9921879731"}, calls
    for call, beta in calls:
        fp = eval(call, {"pasa_theory": pt})  # noqa: S307 - the call text is ours
        assert f"{float(fp):.10g}" == beta
        assert fp.diag == 1  # the reason stated above, checked on the result
    # the published recipe of the issue: max_gain = 128 suffices; c = β/(1 − β) = 127.0078 < 128
    fp = pt.optimal_beta("fp8_e4m3", 128, max_gain=128)
    assert fp.beta_exact == Fraction(fp.b * 128, fp.b * 128 + fp.a * (fp.a - fp.b * 128))
    assert 127 < fp.c < 128


def test_optimal_beta_budgets_only_without_start():
    with pytest.raises(ValueError, match="max_bias, max_gain"):
        pt.optimal_beta("fp16", 128, start="31/32", max_gain=128)
    assert (
        pt.optimal_beta("fp16", 128, max_bias="1/32", max_gain=64).beta_exact
        == pt.optimal_beta("fp16", 128).beta_exact
    )


def test_rank_is_by_abs_kappa_then_beta():
    cands = pt.fixed_points("fp16", 128, interval=("0.96875", "64/65"))
    ranked = rank_fixed_points(cands)
    keys = [(abs(fp.kappa_exact), fp.beta_exact) for fp in ranked]
    assert keys == sorted(keys) and len(ranked) == len(cands)


def test_dense_formats_use_the_start_fallback():
    # fp32/fp64: the window holds ~1e5 / ~1e14 cells; the candidates are then the fixed points reached
    # from 1 − 2**-m inside the window
    assert pt.cell_count("fp32", 128, interval=(Fraction(31, 32), Fraction(64, 65))) > 20_000
    for fmt in ("fp32", "fp64"):
        fp = pt.optimal_beta(fmt, 128)
        assert fp.beta_exact == Fraction(31, 32) and fp.kappa_exact == 0  # M exact in fp32/fp64 here
        assert cast_round(1 - Fraction(31, 4096), "fp32") == 1 - Fraction(31, 4096)
    fp = pt.optimal_beta("fp32", 128, scale=0.08838834764831843)
    assert Fraction(31, 32) <= fp.beta_exact <= Fraction(64, 65)
    assert abs(fp.kappa) < 1e-7  # |κ| <= u32·β: negligible, as the module docstring says


def test_cell_count():
    # fp16, n = 128, window [31/32, 64/65]: off = β/128 runs over 2**-18-spaced values (about 33 cells)
    # and diag over 2**-11-spaced ones
    count = pt.cell_count("fp16", 128, interval=(Fraction(31, 32), Fraction(64, 65)))
    walked = len(pt.fixed_points("fp16", 128, interval=(Fraction(31, 32), Fraction(64, 65))))
    assert walked <= count <= 40
    assert pt.cell_count("fp16", 128, interval=(1, 1)) == 0
