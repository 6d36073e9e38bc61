"""The sympy derivations: every identity verifies, explicit matrices agree, and wrong variants fail.

The negative controls are plausible mistakes (c = β instead of β/(1−β); a loop that forgets to move the
history to the new reference; the paper form taken for κ = 0) that must *not* verify, so the checks
are shown to be able to fail.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import sympy

import pasa_theory as pt
from pasa_theory import scheme
from pasa_theory import symbols as S

IDENTITIES = scheme.identities()


@pytest.mark.parametrize("identity", IDENTITIES, ids=[i.name for i in IDENTITIES])
def test_identity_verifies(identity):
    assert identity.verify(), identity.residuals()


def test_catalogue_is_complete():
    names = " | ".join(i.name for i in IDENTITIES)
    for needed in [
        "Sherman–Morrison",
        "recovery identity (M3)",
        "M_r·M_r⁻¹",
        "recovery error split",
        "κ = 0 at c = F",
        "online step lemma",
        "online output = softmax attention, 2 blocks",
        "online output = softmax attention, 3 blocks",
        "σ folded in",
        "element by element",
    ]:
        assert needed in names
    assert scheme.verify_all(online_blocks=(2,)) and all(scheme.verify_all(online_blocks=(2,)).values())


@pytest.mark.parametrize("size", [2, 3, 4, 5])
def test_explicit_matrices(size):
    results = [r for r in scheme.explicit_matrix_checks((size,))]
    assert len(results) == 5 and all(ok for _, _, ok in results), results


def test_eigenvalues_and_determinant_closed_forms():
    ev = scheme.shifting_eigenvalues()
    assert ev == {1 - S.beta: 1, sympy.Integer(1): S.n - 1}
    assert scheme.shifting_determinant() == 1 - S.beta
    assert sympy.simplify(scheme.shifting_matrix().det() - (1 - S.beta)) == 0


def test_negative_controls_fail():
    # c = β (forgetting the 1/(1−β)) does not recover the scores
    bad = scheme.Identity("wrong c", scheme.recovered_score(c=S.beta), S.s_k)
    assert not bad.verify()
    # the paper form does not make κ vanish
    assert not scheme.Identity("paper κ", scheme.kappa_abs(scheme.paper_rhs()), 0).verify()
    # an αI + γJ "inverse" without the n in the denominator is wrong
    G = scheme.IJMatrix(S.a, -S.b)
    wrong_inv = scheme.IJMatrix(1 / S.a, S.b / (S.a * (S.a - S.b)))
    assert not scheme.Identity("wrong inverse", G @ wrong_inv, scheme.IJMatrix.identity()).verify()


def test_online_loop_without_history_shift_fails():
    # the same loop as online_recovery(2) but with δ_prev dropped from the history rescaling
    rec = scheme.online_recovery(2)
    c, exp = S.c, sympy.exp
    E, W, mt, m, M = rec.E, rec.W, rec.mt, rec.m, rec.M
    A1 = (mt[0] + mt[1]) / 2
    ell0 = exp(m[0] - M[0]) * E[0] * exp(-m[0])
    out0 = exp(m[0] - M[0]) * W[0] * exp(-m[0])
    d1 = c * (mt[1] - A1)
    ell1 = exp(M[0] - M[1]) * ell0 + exp(m[1] - M[1] + d1) * E[1] * exp(-m[1])
    out1 = exp(M[0] - M[1]) * out0 + exp(m[1] - M[1] + d1) * W[1] * exp(-m[1])
    assert not scheme.Identity("no δ_prev", out1 / ell1, rec.target_output()).verify()
    # while the real loop is exact
    assert scheme.Identity("loop", rec.output(), rec.target_output()).verify()


def test_expressions_lambdify_and_match_the_exact_solver():
    # the symbolic cell solutions (R1), evaluated at the exact a, b of a cell, give the exact fixed points
    for form, expr in (("paper", scheme.paper_solution()), ("kappa", scheme.kappa_solution())):
        f = sympy.lambdify((S.a, S.b, S.n, S.sigma), expr)
        for fmt, n, start in (("fp16", 128, "31/32"), ("bf16", 256, "15/16"), ("fp16", 64, "63/64")):
            fp = pt.optimal_beta(fmt, n, start=start, form=form)
            assert f(fp.a, fp.b, n, Fraction(1)) == fp.beta_exact  # Fractions in, exact Fraction out
            subs = {
                S.a: sympy.Rational(fp.a.numerator, fp.a.denominator),
                S.b: sympy.Rational(fp.b.numerator, fp.b.denominator),
                S.n: n,
                S.sigma: 1,
            }
            assert expr.subs(subs) == sympy.Rational(fp.beta_exact.numerator, fp.beta_exact.denominator)
    # κ with the exact c at the paper fixed point: the closed form equals the solver's field
    fp = pt.optimal_beta("fp16", 128, start="31/32")
    k = scheme.kappa_at_paper_solution().subs(
        {S.a: sympy.Rational(4095, 4096), S.b: sympy.Rational(31, 4096), S.n: 128, S.sigma: 1}
    )
    assert abs(float(k) - float(fp.kappa_exact_c)) < 1e-18
    # a numeric lambdify with numpy works too
    import numpy as np

    g = sympy.lambdify((S.a, S.b, S.n, S.sigma, S.c), scheme.kappa(), "numpy")
    assert np.isclose(g(np.array([1.0]), 15 / 16 / 128, 128, 1.0, 15.0)[0], 0.0)


def test_pretty_printing_hooks():
    assert scheme.shifting_inverse()._repr_latex_().startswith("$")
    assert "J" in scheme.rounded_inverse()._repr_latex_()
    assert IDENTITIES[0]._repr_latex_().startswith("$\\text{")
    assert isinstance(scheme.kappa(), sympy.Expr)
    assert sympy.pretty(scheme.c_star())


def test_online_recovery_rejects_bad_block_count():
    with pytest.raises(ValueError, match="blocks: expected an int >= 1"):
        scheme.online_recovery(0)
    with pytest.raises(ValueError, match="count: expected an int >= 1"):
        S.block_symbols("x", 0)
