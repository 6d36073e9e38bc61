r"""Choosing *the* optimal β among the fixed points (docs/design.md §2).

Every rounding cell can hold its own fixed point (:mod:`pasa_theory.roots`); from the reference
solver's starts ``β₀ = 1 − 2**-m`` one gets a different "optimum" per start. Something else must pick
one. The trade-off (docs/method.md §2.3 and docs/design.md §2):

* the shifted scores keep a **residual bias** ``(1 − β)·μ`` of the block mean μ, so a small ``1 − β``
  is what protects against overflow; but
* the recovery ``ŝ = s̃ + c·mean(s̃)`` multiplies every error in ``mean(s̃)`` by the **gain**
  ``c = β/(1 − β)``, which grows without bound as β → 1; and
* with ``c`` stored in the vector format, the recovery leaves the per-block constant error
  ``κ·σμ`` of eq. (B3), which reweights blocks against each other by ``exp(κσ(μ_j − μ_j'))``; at a
  fixed point of (B5) it vanishes for the exact ``c``, so what remains comes from storing ``c``.

**Criterion** (:func:`select_beta`). Among the fixed points of the chosen form with

.. math::

    1 - β \le ρ_{max} \quad(\text{bias budget}), \qquad c = \frac{β}{1-β} \le g_{max}
    \quad(\text{gain budget}),                                                           \tag{C1}

take the one with the smallest ``|κ|`` (B3) once ``c`` is rounded to the vector format; among equal
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

import math
from fractions import Fraction

import mpmath

from ._real import Num, RealInput, as_real, check_positive, cmp, num
from .formats import FloatFormat, get_format
from .roots import MAX_CELLS, FixedPoint, cell_count, fixed_point_from, fixed_points
from .shifting import coefficient_from_entries, optional_format, recovery_coefficient_at, scale_value

#: Starts of the fallback for dense formats: β₀ = 1 − 2**-m, m = 1..12.
FALLBACK_STARTS = tuple(Fraction(2**m - 1, 2**m) for m in range(1, 13))

__all__ = [
    "optimal_beta",
    "recovery_coefficient",
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


def selection_window(
    max_bias: RealInput = DEFAULT_MAX_BIAS, max_gain: RealInput = DEFAULT_MAX_GAIN
) -> tuple[Num, Num]:
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


def _abs_kappa_key(fp: FixedPoint) -> Fraction | mpmath.mpf:
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
        finite.sort(key=lambda fp: (abs(fp.kappa_exact or 0), fp.beta_exact or 0))
    else:
        finite.sort(key=lambda fp: (abs(fp.kappa), fp.beta))
    rest.sort(key=lambda fp: fp.beta)
    return finite + rest


def select_beta(
    fmt: str | FloatFormat = "fp16",
    n: int = 128,
    *,
    form: str = "paper",
    scale: RealInput = None,
    vector_format: str | FloatFormat | None = None,
    max_bias: RealInput = DEFAULT_MAX_BIAS,
    max_gain: RealInput = DEFAULT_MAX_GAIN,
    dps: int = 50,
    max_cells: int = 20_000,
) -> FixedPoint:
    """The optimal β by the criterion (C1) of this module: smallest ``|κ|`` (B3) with ``c`` stored in
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
    return _select(fmt, n, form, scale, vector_format, max_bias, max_gain, dps, max_cells, explain=True)


def _select(
    fmt: str | FloatFormat,
    n: int,
    form: str,
    scale: RealInput,
    vector_format: str | FloatFormat | None,
    max_bias: RealInput,
    max_gain: RealInput,
    dps: int,
    max_cells: int,
    *,
    explain: bool,
) -> FixedPoint:
    lo, hi = selection_window(max_bias, max_gain)
    if cell_count(fmt, n, scale=scale, interval=(lo, hi)) <= min(max_cells, MAX_CELLS):
        candidates = fixed_points(
            fmt, n, form=form, scale=scale, interval=(lo, hi), vector_format=vector_format, dps=dps
        )
    else:
        candidates, seen = [], set()
        for start in FALLBACK_STARTS:
            try:
                fp = fixed_point_from(
                    fmt, n, start, form=form, scale=scale, vector_format=vector_format, dps=dps
                )
            except ValueError:
                continue
            key = (fp.diag, fp.off)
            beta = fp.beta_real()
            if key not in seen and cmp(beta, lo) >= 0 and cmp(beta, hi) <= 0:
                seen.add(key)
                candidates.append(fp)
    ranked = rank_fixed_points(candidates)
    if not ranked or isinstance(ranked[0].c_repr, float):
        if not explain:
            raise ValueError("no admissible fixed point")
        raise ValueError(_no_beta_reason(fmt, n, form, scale, vector_format, max_bias, max_gain, lo, hi, dps))
    return ranked[0]


def _budget_call(
    fmt: str, n: int, form: str, scale: RealInput, max_bias: RealInput, max_gain: RealInput
) -> str:
    args = [repr(fmt), str(n)]
    if form != "paper":
        args.append(f"form={form!r}")
    if scale is not None:
        args.append(f"scale={scale!r}")
    if Fraction(str(max_bias)) != DEFAULT_MAX_BIAS:
        args.append(f"max_bias={str(max_bias)!r}")
    if Fraction(str(max_gain)) != DEFAULT_MAX_GAIN:
        args.append(f"max_gain={max_gain}")
    return f"pasa_theory.optimal_beta({', '.join(args)})"


def _no_beta_reason(
    fmt: str | FloatFormat,
    n: int,
    form: str,
    scale: RealInput,
    vector_format: str | FloatFormat | None,
    max_bias: RealInput,
    max_gain: RealInput,
    lo: Num,
    hi: Num,
    dps: int,
) -> str:
    """Why no β is admissible, and the calls that give one (each tried before it is suggested)."""
    f = get_format(fmt)
    head = (
        f"fmt, n: no fixed point of the {form!r} equation with a usable c lies in the selection window "
        f"[{float(lo):.6g}, {float(hi):.6g}] (max_bias = {max_bias}, max_gain = {max_gain}) for {f.name}, n = {n}"
    )
    if cell_count(f, n, scale=scale, interval=(0, 1)) > MAX_CELLS:
        return head + "; widen max_bias/max_gain, or call pasa_theory.optimal_beta(..., start=...)"
    everywhere = [
        fp
        for fp in fixed_points(f, n, form=form, scale=scale, vector_format=vector_format, dps=dps)
        if not isinstance(fp.c_repr, float)
    ]
    below = [fp for fp in everywhere if cmp(fp.beta_real(), lo) < 0]
    above = [fp for fp in everywhere if cmp(fp.beta_real(), hi) > 0]
    sigma = scale_value(scale)
    diag_one = bool(everywhere) and all(fp.diag == sigma for fp in everywhere)
    reason = ""
    if diag_one:
        reason = (
            f". In {f.name} the diagonal σ(1 − β/n) of M rounds to σ itself for every fixed point, so only the "
            f"off-diagonal −σβ/n moves β, in steps of one quantum: the fixed points are spaced too widely "
            f"to fall inside the window"
        )
    suggestions = []
    for fp in below[-1:] + above[:1]:
        bias = 1 - fp.beta_real()
        gain = fp.c_exact if fp.c_exact is not None else fp.c
        new_bias = max_bias
        if cmp(bias, num(as_real(max_bias, "max_bias"))) > 0:
            new_bias = Fraction(1, 2 ** max(1, math.floor(-math.log2(float(bias)))))
        new_gain = max_gain
        if float(gain) > float(as_real(max_gain, "max_gain")):
            new_gain = 2 ** math.ceil(math.log2(float(gain)))
        try:
            got = _select(f, n, form, scale, vector_format, new_bias, new_gain, dps, 20_000, explain=False)
        except ValueError:
            continue
        suggestions.append(
            f"{_budget_call(f.name, n, form, scale, new_bias, new_gain)} gives β = {float(got):.10g} "
            f"(bias 1 − β = {float(1 - got.beta):.3g}, gain c = {float(got.c):.4g})"
        )
    if not suggestions:
        return (
            head + reason + "; no fixed point has a usable c: call pasa_theory.fixed_points(...) to list them"
        )
    return head + reason + ". Admissible with wider budgets: " + "; ".join(suggestions)


def optimal_beta(
    fmt: str | FloatFormat = "fp16",
    n: int = 128,
    *,
    start: RealInput = None,
    form: str = "paper",
    scale: RealInput = None,
    dps: int = 50,
    vector_format: str | FloatFormat | None = None,
    max_iterations: int = 64,
    max_bias: RealInput = None,
    max_gain: RealInput = None,
) -> FixedPoint:
    """The optimal β: the fixed point reached from ``start``, or the selected one if ``start`` is None.

    With a ``start``: :func:`pasa_theory.roots.fixed_point_from`, the iteration
    ``β_{k+1} = R(β_k)/(1 + R(β_k))`` of docs/method.md §6 carried out exactly (``R`` = f of eq. B4 for
    ``form="paper"``, F of eq. B5 for ``form="kappa"``). Without a start: :func:`select_beta`, the
    criterion (C1): smallest |κ| with c stored in ``vector_format`` among the fixed points with bias
    ``1 − β <= max_bias`` (default 1/32) and gain ``c <= max_gain`` (default 64).

    Parameters
    ----------
    fmt : str or FloatFormat
        Format of the stored matrix (default fp16).
    n : int
        KV block length (default 128), ``>= 2``.
    start : number or str, optional
        β₀ in (0, 1); the reference solver uses ``1 − 2**-4``, ``1 − 2**-5``, ``1 − 2**-6``.
    form : {"paper", "kappa"}
        Equation (B4) (default: it reproduces the published β = 0.9689939) or (B5) (= κ = 0; what
        ``optimal_para.py`` iterates; aliases "code", "optimal_para").
    scale : number or str, optional
        Softmax scale folded into M (docs/method.md §7), e.g. ``"1/sqrt(128)"``.
    dps : int
        Decimal digits of the mpf fields.
    vector_format : str or FloatFormat, optional
        Format of the recovery coefficient (``c_repr``, ``kappa``); default ``fmt``.
    max_iterations : int
        Iteration cap with a ``start`` (the iteration takes 1–2 steps in every case tried).
    max_bias, max_gain : number or str, optional
        Budgets of the selection (only without a ``start``).

    Returns
    -------
    FixedPoint

    Raises
    ------
    ValueError
        If the iteration leaves (0, 1) or cycles without reaching a fixed point; if no fixed point is
        admissible for the selection (the message gives the reason and the calls that admit one, e.g.
        fp8 formats at n = 128); for bad arguments.

    Examples
    --------
    >>> from pasa_theory import optimal_beta
    >>> fp = optimal_beta("fp16", 128, start="31/32")
    >>> print(f"{float(fp):.10f}", fp.beta_exact)
    0.9689939059 16252928/16772993
    """
    if start is not None:
        if max_bias is not None or max_gain is not None:
            raise ValueError(
                "max_bias, max_gain: the selection budgets apply only without a start (start=None)"
            )
        return fixed_point_from(
            fmt,
            n,
            start,
            form=form,
            scale=scale,
            dps=dps,
            vector_format=vector_format,
            max_iterations=max_iterations,
        )
    fmt = get_format(fmt)
    return select_beta(
        fmt,
        n,
        form=form,
        scale=scale,
        vector_format=optional_format(vector_format) or fmt,
        dps=dps,
        max_bias=DEFAULT_MAX_BIAS if max_bias is None else max_bias,
        max_gain=DEFAULT_MAX_GAIN if max_gain is None else max_gain,
    )


def recovery_coefficient(
    fmt: str | FloatFormat = "fp16",
    n: int = 128,
    beta: RealInput = None,
    *,
    scale: RealInput = None,
    vector_format: str | FloatFormat | None = None,
    source: str = "rounded_m",
) -> Fraction:
    """The recovery coefficient ``c`` of ``ŝ = s̃ + c·mean(s̃)`` (docs/method.md §2, §5 and docs/design.md §4).

    :func:`pasa_theory.shifting.recovery_coefficient_at` at ``beta``; ``beta=None`` uses
    ``optimal_beta(fmt, n, scale=scale)`` (the selection criterion (C1)).

    Examples
    --------
    >>> from pasa_theory import recovery_coefficient
    >>> recovery_coefficient("fp16", 128, "0.9375")
    Fraction(15, 1)
    >>> recovery_coefficient("fp16", 128, "0.9689939", source="beta", vector_format="fp16")
    Fraction(125, 4)
    """
    if beta is not None:
        return recovery_coefficient_at(fmt, n, beta, scale=scale, vector_format=vector_format, source=source)
    fp = optimal_beta(fmt, n, scale=scale)
    return coefficient_from_entries(
        fp.a,
        fp.b,
        fp.n,
        scale_value(scale),
        fp.beta_real(),
        source=source,
        vector_format=optional_format(vector_format),
        scale=scale,
    )
