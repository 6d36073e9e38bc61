r"""Choosing *the* optimal β among the fixed points (docs/design.md §2).

Every rounding cell can hold its own fixed point (:mod:`pasa_theory.roots`); from the reference
solver's starts ``β₀ = 1 − 2**-m`` one gets a different "optimum" per start. Something else must pick
one. The trade-off (docs/method.md §2.3 and docs/design.md §2):

* the shifted scores keep a **residual bias** ``(1 − β)·μ`` of the block mean μ, so a small ``1 − β``
  is what protects against overflow; but
* the recovery ``ŝ = s̃ + c·mean(s̃)`` multiplies every error in ``mean(s̃)`` by the **gain**
  ``c = β/(1 − β)``, which grows without bound as β → 1; and
* with ``c`` stored in the vector format, the recovery leaves the per-block constant error
  ``κ·σμ`` of eq. (S3), which reweights blocks against each other by ``exp(κσ(μ_j − μ_j'))``; at a
  fixed point of (S5) it vanishes for the exact ``c``, so what remains comes from storing ``c``.

**Criterion** (:func:`select_beta`). Among the fixed points of the chosen form with

.. math::

    1 - β \le ρ_{max} \quad(\text{bias budget}), \qquad c = \frac{β}{1-β} \le g_{max}
    \quad(\text{gain budget}),                                                           \tag{C1}

take the one with the smallest ``|κ|`` (S3) once ``c`` is rounded to the vector format; among equal
``|κ|`` take the smallest β (least gain). The defaults ``ρ_max = 2**-5`` and ``g_max = 2**6`` frame the
two values the PASA authors published, β = 0.9689939 (bias 3.1 %, c ≈ 31) and β = 0.984497 (bias
1.55 %, c ≈ 63.5), so the window is ``[0.96875, 64/65]``. Inside it ``|κ|`` is at most of the order
``u_vec·β`` (half an ulp of c times ``1 − β``), and the criterion picks the cell whose exact ``c*`` lies
closest to a value of the vector format: κ is then often one or two orders of magnitude below the κ of
the reference solver's choice.

**Dense formats.** For fp32 and wider the window holds 10⁵ to 10¹³ rounding cells, nearly each with a
fixed point, too many to enumerate (and there ``|κ| <= u_vec·β`` is negligible whichever is taken).
When the window spans more than ``max_cells`` cells, the candidates are instead the fixed points
reached from the starts ``β₀ = 1 − 2**-m`` (m = 1, …, 12) that lie in the window, ranked the same way.

The criterion is a choice, stated so it can be changed: pass other budgets, or call
:func:`pasa_theory.fixed_points` and rank the candidates yourself (:func:`rank_fixed_points`).
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any

from ._real import as_real, check_positive, cmp, num
from .formats import get_format
from .roots import MAX_CELLS, FixedPoint, cell_count, fixed_points, optimal_beta

#: Starts of the fallback for dense formats: β₀ = 1 − 2**-m, m = 1..12.
FALLBACK_STARTS = tuple(Fraction(2**m - 1, 2**m) for m in range(1, 13))

__all__ = [
    "select_beta",
    "rank_fixed_points",
    "selection_window",
    "DEFAULT_MAX_BIAS",
    "DEFAULT_MAX_GAIN",
    "FALLBACK_STARTS",
]

#: Default bias budget ρ_max of (C1): at most 1/32 of the block mean stays in the shifted scores.
DEFAULT_MAX_BIAS = Fraction(1, 32)
#: Default gain budget g_max of (C1): c = β/(1 − β) at most 64.
DEFAULT_MAX_GAIN = Fraction(64)


def selection_window(max_bias: Any = DEFAULT_MAX_BIAS, max_gain: Any = DEFAULT_MAX_GAIN) -> tuple[Any, Any]:
    """The β-interval ``[1 − ρ_max, g_max/(1 + g_max)]`` of (C1) (exact when the budgets are rational)."""
    rho = as_real(max_bias, "max_bias")
    check_positive(rho, "max_bias")
    if cmp(num(rho), 1, "max_bias") >= 0:
        raise ValueError(f"max_bias: expected a number in (0, 1), got {max_bias!r}")
    g = as_real(max_gain, "max_gain")
    check_positive(g, "max_gain")
    lo, hi = 1 - num(rho), num(g) / (1 + num(g))
    if cmp(lo, hi, "window") > 0:
        raise ValueError(
            f"max_bias, max_gain: empty window: 1 − max_bias = {float(lo):.6g} > "
            f"max_gain/(1 + max_gain) = {float(hi):.6g}"
        )
    return lo, hi


def _abs_kappa_key(fp: FixedPoint) -> Any:
    if fp.kappa_exact is not None:
        return abs(fp.kappa_exact)
    return abs(fp.kappa)


def rank_fixed_points(candidates: list[FixedPoint]) -> list[FixedPoint]:
    """Sort fixed points by the criterion (C1): ``|κ|`` with the stored c, then β (exact comparisons
    when κ is rational). Candidates whose c overflows the vector format come last."""
    finite = [fp for fp in candidates if not isinstance(fp.c_repr, float)]
    rest = [fp for fp in candidates if isinstance(fp.c_repr, float)]
    rational = all(fp.kappa_exact is not None and fp.beta_exact is not None for fp in finite)
    if rational:
        finite.sort(key=lambda fp: (abs(fp.kappa_exact), fp.beta_exact))
    else:
        finite.sort(key=lambda fp: (abs(fp.kappa), fp.beta))
    rest.sort(key=lambda fp: fp.beta)
    return finite + rest


def select_beta(
    fmt: Any = "fp16",
    n: int = 128,
    *,
    form: str = "paper",
    scale: Any = None,
    vector_format: Any = None,
    max_bias: Any = DEFAULT_MAX_BIAS,
    max_gain: Any = DEFAULT_MAX_GAIN,
    dps: int = 50,
    max_cells: int = 20_000,
) -> FixedPoint:
    """The optimal β by the criterion (C1) of this module: smallest ``|κ|`` (S3) with ``c`` stored in
    ``vector_format`` (default ``fmt``), among the fixed points with ``1 − β <= max_bias`` and
    ``β/(1 − β) <= max_gain``; ties go to the smaller β. If the window spans more than ``max_cells``
    rounding cells (fp32, fp64), the candidates are the fixed points reached from ``1 − 2**-m``,
    m = 1..12, that lie in the window (module docstring).

    Returns
    -------
    FixedPoint

    Raises
    ------
    ValueError
        If no fixed point lies in the window (e.g. fp8 formats at large n, where ``−β/n`` rounds to
        zero); the message says how to widen it.

    Examples
    --------
    >>> from pasa_theory.selection import select_beta
    >>> fp = select_beta("fp16", 128)
    >>> 0.96875 <= float(fp) <= 64 / 65
    True
    """
    lo, hi = selection_window(max_bias, max_gain)
    if cell_count(fmt, n, scale=scale, interval=(lo, hi)) <= min(max_cells, MAX_CELLS):
        candidates = fixed_points(
            fmt, n, form=form, scale=scale, interval=(lo, hi), vector_format=vector_format, dps=dps
        )
    else:
        candidates, seen = [], set()
        for start in FALLBACK_STARTS:
            try:
                fp = optimal_beta(fmt, n, start=start, form=form, scale=scale, vector_format=vector_format, dps=dps)
            except ValueError:
                continue
            key = (fp.diag, fp.off)
            beta = fp.beta_real()
            if key not in seen and cmp(beta, lo) >= 0 and cmp(beta, hi) <= 0:
                seen.add(key)
                candidates.append(fp)
    ranked = rank_fixed_points(candidates)
    if not ranked or isinstance(ranked[0].c_repr, float):
        raise ValueError(
            f"fmt, n: no fixed point of the {form!r} equation with usable c in the window "
            f"[{float(lo):.6g}, {float(hi):.6g}] (max_bias = {max_bias}, max_gain = {max_gain}) for "
            f"{get_format(fmt).name}, n = {n}; widen max_bias/max_gain or use "
            "optimal_beta(..., start=...)"
        )
    return ranked[0]
