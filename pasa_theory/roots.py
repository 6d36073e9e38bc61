r"""Fixed points of the β equation, exactly: one candidate per rounding cell, verified in rationals.

The right-hand sides of (B4) and (B5) (:mod:`pasa_theory.shifting`) depend on β only through the
rounded entries ``(diag, off)`` of (B1), which are piecewise constant in β. The set of β giving one pair
``(diag, off)`` is a *rounding cell*: an interval whose ends are where ``σ(1 − β/n)`` or ``−σβ/n`` crosses
a rounding boundary of the format (a midpoint between two neighbours), each end included iff the tie
there rounds into the cell (ties to even). On a cell with coefficients ``(a, b)`` the equation
``β/(1 − β) = R(a, b)`` has the single solution

.. math::

    β^\ast_{paper} = \frac{σ b n}{σ b n + a(a - b n)}, \qquad
    β^\ast_{kappa} = 1 - \frac{a - b n}{σ}                                           \tag{R1}

and ``β*`` is a fixed point iff it lies in its own cell. With ``σ`` rational, ``a``, ``b`` and ``β*`` are
rational and every check is exact; a float iteration can land on a cell end (a rounding tie) and then
break the tie the wrong way (tests/theory/test_roots.py shows one). With an irrational ``σ`` the
cell ends and ``β*`` are irrational, a tie is impossible (it would make ``σ`` rational), and membership
is decided by certified enclosures.

:func:`fixed_point_from` runs the reference iteration ``β_{k+1} = R/(1 + R)`` (docs/method.md §6) from a start
exactly: it stops when ``β_{k+1} = β_k`` exactly, which happens after one or two steps because
``R`` is constant on cells. :func:`fixed_points` walks all cells of an interval and returns every fixed
point. :func:`pasa_theory.optimal_beta` (in :mod:`pasa_theory.selection`) calls the former with a
start and applies the selection criterion without one.

Sources: docs/method.md §5, §6 (the reference solver ``optimal_para.py``: float64 with entries rounded in
``torch.float16``, relative stopping tolerance 1e-8, starts ``1 − 2**-m``), §7 (scale folded in).
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import mpmath

from ._real import (
    Num,
    RealInput,
    as_real,
    as_text,
    check_int,
    check_open_unit,
    cmp,
    exact_of,
    num,
    rnd,
    sign,
    to_mpf,
)
from .formats import (
    FloatFormat,
    floor_log2,
    get_format,
    next_down_unbounded,
    next_up_unbounded,
    preimage_of,
    round_to_format,
)
from .shifting import cell_solution, kappa_of, normalize_form, optional_format, rounded_entries, scale_value

__all__ = [
    "FixedPoint",
    "Cell",
    "fixed_point_from",
    "fixed_points",
    "cell_of",
    "cell_count",
    "reference_iteration",
    "DEFAULT_STARTS",
]

#: The starting points of the reference solver, β₀ = 1 − 2**-m for m = 4, 5, 6 (docs/method.md §6).
DEFAULT_STARTS = (Fraction(15, 16), Fraction(31, 32), Fraction(63, 64))

#: Default guard for :func:`fixed_points`: walking more cells than this raises (fp32 over (0, 1) has
#: about 10**9 cells).
MAX_CELLS = 200_000


@dataclass(frozen=True)
class Cell:
    """A rounding cell: the β with ``(fl(σ(1 − β/n)), fl(−σβ/n)) = (diag, off)``.

    ``lo``/``hi`` are Fractions when σ is rational, else :class:`~pasa_theory._real.Real` enclosures;
    ``lo_closed``/``hi_closed`` say whether each end belongs to the cell (a tie that rounds into it).
    """

    diag: Fraction
    off: Fraction
    lo: Num
    hi: Num
    lo_closed: bool
    hi_closed: bool

    @property
    def a(self) -> Fraction:
        return self.diag - self.off

    @property
    def b(self) -> Fraction:
        return -self.off


def _cell(fmt: FloatFormat, n: int, sigma: Num, diag: Fraction, off: Fraction) -> Cell:
    """The β-interval of the cell ``(diag, off)``: preimages of the two roundings mapped to β.

    ``σ(1 − β/n) ∈ [ld, hd]  ⇔  β ∈ [n(1 − hd/σ), n(1 − ld/σ)]`` and ``−σβ/n ∈ [lo, ho]  ⇔
    β ∈ [−n·ho/σ, −n·lo/σ]`` (ends swap, and so do their closedness flags); the cell is the intersection.
    """
    ld, hd, ldc, hdc = preimage_of(diag, fmt)
    lo_, ho_, loc, hoc = preimage_of(off, fmt)
    d_lo, d_hi = n * (1 - hd / sigma), n * (1 - ld / sigma)
    o_lo, o_hi = -n * ho_ / sigma, -n * lo_ / sigma
    c = cmp(d_lo, o_lo, "cell end")
    if c > 0:
        lo, lo_closed = d_lo, hdc
    elif c < 0:
        lo, lo_closed = o_lo, hoc
    else:
        lo, lo_closed = d_lo, hdc and hoc
    c = cmp(d_hi, o_hi, "cell end")
    if c < 0:
        hi, hi_closed = d_hi, ldc
    elif c > 0:
        hi, hi_closed = o_hi, loc
    else:
        hi, hi_closed = d_hi, ldc and loc
    return Cell(diag, off, lo, hi, lo_closed, hi_closed)


def _contains(cell: Cell, x: Num) -> bool:
    c = cmp(x, cell.lo, "β against a cell end")
    if c < 0 or (c == 0 and not cell.lo_closed):
        return False
    c = cmp(x, cell.hi, "β against a cell end")
    return not (c > 0 or (c == 0 and not cell.hi_closed))


def _limit_from_below(y: Num, fmt: FloatFormat) -> Fraction:
    """``lim fl(t)`` as ``t`` increases to ``y`` (the value just below ``y`` rounds to)."""
    v = rnd(y, fmt)
    assert not isinstance(v, float)
    if isinstance(y, Fraction) and y == preimage_of(v, fmt)[0]:
        return next_down_unbounded(v, fmt)
    return v


def cell_of(fmt: str | FloatFormat, n: int, beta: RealInput, *, scale: RealInput = None) -> Cell:
    """The rounding cell containing ``beta``: the β-interval on which the entries (B1) keep their values
    at ``beta``, from the rounding preimages of both entries (module docstring; :class:`Cell`)."""
    fmt = get_format(fmt)
    n = check_int(n, "n", 2)
    sigma = scale_value(scale)
    b = as_real(beta, "beta")
    check_open_unit(b, "beta")
    diag, off = rounded_entries(fmt, n, num(b), sigma)
    return _cell(fmt, n, sigma, diag, off)


@dataclass(frozen=True)
class FixedPoint:
    """A fixed point of the β equation, verified exactly (rationally, or by certified enclosures).

    Values named ``x`` are mpmath.mpf at ``dps`` digits; ``x_exact`` is the exact Fraction when the
    value is rational (always, unless the folded scale is irrational), else None.
    """

    #: Format of the stored matrix.
    fmt: FloatFormat
    #: KV block length.
    n: int
    #: "paper" (B4) or "kappa" (B5).
    form: str
    #: Folded scale: None (σ = 1), a Fraction, or the expression str of an irrational scale.
    scale: Fraction | str | None
    #: β as an mpf at ``dps`` digits.
    beta: mpmath.mpf
    #: β exactly (Fraction), or None for an irrational scale.
    beta_exact: Fraction | None
    #: a and b of M_r = a·I − b·J (B2), exact.
    a: Fraction
    b: Fraction
    #: Stored entries (B1).
    diag: Fraction
    off: Fraction
    #: c = β/(1 − β): mpf and exact.
    c: mpmath.mpf
    c_exact: Fraction | None
    #: Format the recovery coefficient is stored in (the vector unit's format).
    vector_format: FloatFormat
    #: c rounded to nearest-even in ``vector_format`` (``inf``/``nan`` if it overflows).
    c_repr: Fraction | float
    #: κ of (B3) with ``c_repr``: mpf and exact.
    kappa: mpmath.mpf
    kappa_exact: Fraction | None
    #: κ of (B3) with the exact c: 0 for form "kappa", (a − σ)(a − bn)/(aσ) for form "paper".
    kappa_exact_c: mpmath.mpf
    #: The cell (lo, hi): Fractions, or mpf at ``dps`` digits for an irrational scale.
    interval: tuple[Fraction | mpmath.mpf, Fraction | mpmath.mpf]
    #: Whether lo and hi belong to the cell (ties).
    interval_closed: tuple[bool, bool]
    #: Start of the iteration that found it (None if found by a cell walk or selection).
    start: Fraction | str | None = None
    #: Number of steps β_k → β_{k+1} until β_k was the fixed point (0 if the start was one).
    iterations: int | None = None
    #: Working precision of the mpf fields.
    dps: int = 50
    #: Bias (1 − β) as an mpf: the fraction of the block mean left in the shifted scores (docs/method.md §2).
    bias: mpmath.mpf | None = field(default=None)

    def __float__(self) -> float:
        return float(self.beta)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        scale = "" if self.scale is None else f", scale={str(self.scale)!r}"
        return (
            f"FixedPoint({self.fmt.name!r}, n={self.n}, form={self.form!r}{scale}, "
            f"beta={mpmath.nstr(self.beta, 10)}, c_repr={self.c_repr}, kappa={mpmath.nstr(self.kappa, 3)})"
        )

    def sigma_real(self) -> Num:
        """σ as a Fraction, or a :class:`~pasa_theory._real.Real` if irrational."""
        return scale_value(self.scale)

    def beta_real(self) -> Num:
        """β as a Fraction, or a :class:`~pasa_theory._real.Real` if irrational, from (R1)."""
        return cell_solution(self.a, self.b, self.n, self.sigma_real(), self.form)

    def summary(self, digits: int = 10) -> str:
        """One line: β (``digits`` significant digits), a, b, c, c_repr, κ."""
        return (
            f"{self.fmt.name} n={self.n} form={self.form} scale={self.scale}: "
            f"beta={mpmath.nstr(self.beta, digits)} a={self.a} b={self.b} c={mpmath.nstr(self.c, digits)} "
            f"c_repr={self.c_repr} kappa={mpmath.nstr(self.kappa, 3)}"
        )


def _scale_key(scale: RealInput, sigma: Num) -> Fraction | str | None:
    if scale is None:
        return None
    return exact_of(sigma) if exact_of(sigma) is not None else as_text(sigma)


def _make_fixed_point(
    fmt: FloatFormat,
    n: int,
    sigma: Num,
    scale_key: Fraction | str | None,
    form: str,
    cell: Cell,
    vfmt: FloatFormat,
    dps: int,
    start: Fraction | str | None = None,
    iterations: int | None = None,
) -> FixedPoint | None:
    """Build and verify the fixed point of ``cell`` (None if the cell has none)."""
    a, b = cell.a, cell.b
    bn = b * n
    if b <= 0 or a <= 0 or a <= bn:
        return None  # R <= 0 or undefined: β* not in (0, 1)
    beta = cell_solution(a, b, n, sigma, form)
    if sign(beta, "β*") <= 0 or cmp(beta, 1, "β*") >= 0:
        return None
    if not _contains(cell, beta):
        return None
    # verification: rounding at β* reproduces the cell's entries (certified for an irrational σ)
    if rounded_entries(fmt, n, beta, sigma) != (
        cell.diag,
        cell.off,
    ):  # pragma: no cover - cell logic guards it
        raise AssertionError(f"fixed point verification failed for {fmt.name}, n={n}, cell={cell}")
    c = beta / (1 - beta)
    c_repr = rnd(c, vfmt, what="c = β/(1−β)")
    kappa_c = Fraction(0) if form == "kappa" else (a - sigma) * (a - bn) / (a * sigma)
    kappa_r = None if isinstance(c_repr, float) else kappa_of(a, b, n, sigma, c_repr)
    if exact_of(sigma) is not None:
        interval = (cell.lo, cell.hi)
    else:
        interval = (to_mpf(cell.lo, dps), to_mpf(cell.hi, dps))
    if kappa_r is not None:
        kappa_mpf = to_mpf(kappa_r, dps)
    else:
        kappa_mpf = mpmath.mpf(c_repr)
    return FixedPoint(
        fmt=fmt,
        n=n,
        form=form,
        scale=scale_key,
        beta=to_mpf(beta, dps),
        beta_exact=exact_of(beta),
        a=a,
        b=b,
        diag=cell.diag,
        off=cell.off,
        c=to_mpf(c, dps),
        c_exact=exact_of(c),
        vector_format=vfmt,
        c_repr=c_repr,
        kappa=kappa_mpf,
        kappa_exact=exact_of(kappa_r) if kappa_r is not None else None,
        kappa_exact_c=to_mpf(kappa_c, dps),
        interval=interval,
        interval_closed=(cell.lo_closed, cell.hi_closed),
        start=start,
        iterations=iterations,
        dps=dps,
        bias=to_mpf(1 - beta, dps),
    )


def _common(
    fmt: str | FloatFormat,
    n: int,
    form: str,
    scale: RealInput,
    dps: int,
    vector_format: str | FloatFormat | None,
) -> tuple[FloatFormat, int, str, Num, int, FloatFormat]:
    f = get_format(fmt)
    vfmt = optional_format(vector_format) or f
    return f, check_int(n, "n", 2), normalize_form(form), scale_value(scale), check_int(dps, "dps", 1), vfmt


def fixed_point_from(
    fmt: str | FloatFormat,
    n: int,
    start: RealInput,
    *,
    form: str = "paper",
    scale: RealInput = None,
    dps: int = 50,
    vector_format: str | FloatFormat | None = None,
    max_iterations: int = 64,
) -> FixedPoint:
    """The fixed point of the β equation reached from ``start`` by the reference iteration.

    :func:`pasa_theory.optimal_beta` calls it when given a ``start`` and applies the selection criterion
    of :mod:`pasa_theory.selection` otherwise.

    The iteration ``β_{k+1} = R(β_k)/(1 + R(β_k))`` of docs/method.md §6 (``R`` = f of
    eq. B4 for ``form="paper"``, F of eq. B5 for ``form="kappa"``), carried out exactly; it stops at the
    first ``β_k`` that is its own image (verified: rounding at ``β_k`` reproduces a and b).

    Parameters
    ----------
    fmt : str or FloatFormat
        Format of the stored matrix (default fp16).
    n : int
        KV block length (default 128), ``>= 2``.
    start : number or str
        β₀ in (0, 1); the reference solver uses ``1 − 2**-4``, ``1 − 2**-5``, ``1 − 2**-6``.
    form : {"paper", "kappa"}
        Equation (B4) (default: it reproduces the published β = 0.9689939) or (B5) (= κ = 0; what
        ``optimal_para.py`` iterates; aliases "code", "reference").
    scale : number or str, optional
        Softmax scale folded into M (docs/method.md §7), e.g. ``"1/sqrt(128)"``.
    dps : int
        Decimal digits of the mpf fields.
    vector_format : str or FloatFormat, optional
        Format of the recovery coefficient (``c_repr``, ``kappa``); default ``fmt``.
    max_iterations : int
        Iteration cap (the iteration takes 1–2 steps in every case tried).

    Returns
    -------
    FixedPoint

    Raises
    ------
    ValueError
        If the iteration leaves (0, 1) or cycles without reaching a fixed point, or for bad arguments.

    Examples
    --------
    >>> from pasa_theory.roots import fixed_point_from
    >>> fp = fixed_point_from("fp16", 128, "31/32")
    >>> print(f"{float(fp):.10f}", fp.beta_exact)
    0.9689939059 16252928/16772993
    """
    f, n, form, sigma, dps, vfmt = _common(fmt, n, form, scale, dps, vector_format)
    max_iterations = check_int(max_iterations, "max_iterations", 1)
    beta_r = as_real(start, "start")
    check_open_unit(beta_r, "start")
    beta = num(beta_r)
    exact_start = exact_of(beta)
    start_key: Fraction | str = exact_start if exact_start is not None else as_text(beta)
    seen: set[tuple[Fraction, Fraction]] = set()
    for k in range(max_iterations + 1):
        diag, off = rounded_entries(f, n, beta, sigma)
        if (diag, off) in seen:
            raise ValueError(
                f"start: the iteration from {start!r} cycles between rounding cells without a fixed point"
            )
        seen.add((diag, off))
        a, b = diag - off, -off
        if b <= 0 or a <= 0 or a <= b * n:
            raise ValueError(
                f"start: at β_{k} the rounded matrix has a = {a}, b = {b} (b·n = {b * n}); the equation "
                f"has no solution in (0, 1), so no fixed point is reached from {start!r} "
                f"({f.name}, n = {n})"
            )
        nxt = cell_solution(a, b, n, sigma, form)
        if sign(nxt) <= 0 or cmp(nxt, 1) >= 0:  # pragma: no cover - excluded by the test above
            raise ValueError(f"start: the iteration left (0, 1) at step {k + 1}")
        cell = _cell(f, n, sigma, diag, off)
        if _contains(cell, nxt):
            fp = _make_fixed_point(
                f,
                n,
                sigma,
                _scale_key(scale, sigma),
                form,
                cell,
                vfmt,
                dps,
                start_key,
                k if _is_same(nxt, beta) else k + 1,
            )
            assert fp is not None
            return fp
        beta = nxt
    raise ValueError(f"start: no fixed point after {max_iterations} iterations from {start!r}")


def _is_same(x: Num, y: Num) -> bool:
    return isinstance(x, Fraction) and isinstance(y, Fraction) and x == y


def _ordinal(v: Fraction, fmt: FloatFormat) -> int:
    """Signed index of a representable value among the values of the unbounded grid (0 ↦ 0)."""
    if v == 0:
        return 0
    if v < 0:
        return -_ordinal(-v, fmt)
    e = floor_log2(v.numerator, v.denominator)
    half = 1 << (fmt.p - 1)
    if e < fmt.emin:
        return int(v / fmt.min_subnormal)
    m = int(v / Fraction(2) ** (e - fmt.p + 1))
    idx = (e - fmt.emin) * half + m
    return idx if fmt.subnormals else idx - half + 1


def _walk_bounds(
    fmt: FloatFormat,
    n: int,
    sigma: Num,
    interval: object,  # any input: validated below
) -> tuple[Num, Num, Fraction, Fraction, int] | None:
    """Validated interval ends, the entries of the first cell and the number of cells to walk
    (None if the interval holds no β in (0, 1))."""
    if not (isinstance(interval, (tuple, list)) and len(interval) == 2):
        raise TypeError(f"interval: expected a pair (lo, hi), got {interval!r}")
    lo = num(as_real(interval[0], "interval[0]"))
    hi = num(as_real(interval[1], "interval[1]"))
    if cmp(lo, hi, "interval") > 0:
        raise ValueError(f"interval: expected lo <= hi, got {interval!r}")
    if sign(lo, "interval[0]") < 0:
        lo = Fraction(0)
    if cmp(hi, 1, "interval[1]") > 0:
        hi = Fraction(1)
    # first cell: the one containing lo, or the one just above 0
    if sign(lo) == 0:
        d0 = _limit_from_below(sigma, fmt)  # σ(1 − β/n) as β ↓ 0
        o0 = Fraction(0)
    else:
        if cmp(lo, 1) == 0:
            return None
        d0, o0 = rounded_entries(fmt, n, lo, sigma)
    if cmp(hi, 1) == 0:
        d1 = _limit_from_above(sigma * (1 - Fraction(1, n)), fmt)  # σ(1 − β/n) as β ↑ 1
        o1 = _limit_from_above(-sigma / n, fmt)
    elif sign(hi) == 0:
        return None
    else:
        d1, o1 = rounded_entries(fmt, n, hi, sigma)
    count = abs(_ordinal(d0, fmt) - _ordinal(d1, fmt)) + abs(_ordinal(o0, fmt) - _ordinal(o1, fmt)) + 1
    return lo, hi, d0, o0, count


def cell_count(
    fmt: str | FloatFormat, n: int, *, scale: RealInput = None, interval: tuple[RealInput, RealInput] = (0, 1)
) -> int:
    """An upper bound (exact up to coinciding boundaries) on the number of rounding cells that meet
    ``interval``: the number of distinct values each entry (B1) takes there, summed, plus one."""
    fmt = get_format(fmt)
    n = check_int(n, "n", 2)
    bounds = _walk_bounds(fmt, n, scale_value(scale), interval)
    return 0 if bounds is None else bounds[4]


def fixed_points(
    fmt: str | FloatFormat,
    n: int,
    *,
    form: str = "paper",
    scale: RealInput = None,
    interval: tuple[RealInput, RealInput] = (0, 1),
    vector_format: str | FloatFormat | None = None,
    dps: int = 50,
    max_cells: int = MAX_CELLS,
) -> list[FixedPoint]:
    """Every fixed point of the β equation with β in ``interval`` (ends included, but always within the
    open (0, 1)), in increasing order: one per rounding cell that contains its own solution (R1).

    The cells of the interval are walked in order of increasing β: the next cell changes ``diag`` or
    ``off`` (or both, when their boundaries coincide) to the neighbouring value, so no cell is missed and
    no boundary is computed in floating point. Each fixed point is verified as in :func:`fixed_point_from`.

    Parameters
    ----------
    fmt, n, form, scale, vector_format, dps
        As for :func:`fixed_point_from`.
    interval : (lo, hi)
        β range; default (0, 1).
    max_cells : int
        Raise ValueError instead of walking more cells than this (the count is known beforehand from
        the ordinals of the entries at the two ends).

    Returns
    -------
    list of FixedPoint

    Examples
    --------
    >>> from pasa_theory import fixed_points
    >>> fps = fixed_points("fp16", 128, interval=("0.968", "0.9692"))
    >>> [f"{float(f):.10f}" for f in fps]      # one per cell; the last is the published β
    ['0.9680216385', '0.9685061015', '0.9689939059']
    """
    f, n, form, sigma, dps, vfmt = _common(fmt, n, form, scale, dps, vector_format)
    max_cells = check_int(max_cells, "max_cells", 1)
    if not (isinstance(interval, (tuple, list)) and len(interval) == 2):
        raise TypeError(f"interval: expected a pair (lo, hi), got {interval!r}")
    bounds = _walk_bounds(f, n, sigma, interval)
    if bounds is None:
        return []
    lo, hi, d0, o0, count = bounds
    if count > max_cells:
        raise ValueError(
            f"interval: {interval!r} spans about {count} rounding cells of {f.name} (n = {n}), more "
            f"than max_cells = {max_cells}; pass a narrower interval or a larger max_cells"
        )
    scale_key = _scale_key(scale, sigma)
    out: list[FixedPoint] = []
    diag, off = d0, o0
    for _ in range(count + 2):
        cell = _cell(f, n, sigma, diag, off)
        fp = _make_fixed_point(f, n, sigma, scale_key, form, cell, vfmt, dps)
        if fp is not None:
            beta = fp.beta_real()
            if cmp(beta, lo) >= 0 and cmp(beta, hi) <= 0:
                out.append(fp)
        # stop once the cell reaches past hi
        c = cmp(cell.hi, hi, "cell end")
        if c > 0 or (c == 0 and cell.hi_closed) or cmp(cell.hi, 1) >= 0:
            break
        ld = preimage_of(diag, f)[0]
        lo_o = preimage_of(off, f)[0]
        d_hi = n * (1 - ld / sigma)
        o_hi = -n * lo_o / sigma
        c = cmp(d_hi, o_hi, "cell end")
        if c <= 0:
            diag = next_down_unbounded(diag, f)
        if c >= 0:
            off = next_down_unbounded(off, f)
    else:  # pragma: no cover - the count bounds the walk
        raise AssertionError("cell walk did not terminate")
    return out


def _limit_from_above(y: Num, fmt: FloatFormat) -> Fraction:
    """``lim fl(t)`` as ``t`` decreases to ``y`` (the value just above ``y`` rounds to)."""
    v = rnd(y, fmt)
    assert not isinstance(v, float)
    if isinstance(y, Fraction) and y == preimage_of(v, fmt)[1]:
        return next_up_unbounded(v, fmt)
    return v


def reference_iteration(
    fmt: str | FloatFormat = "fp16",
    n: int = 128,
    start: float = 1 - 2**-5,
    *,
    form: str = "kappa",
    scale: float | None = None,
    rounding: str = "via_fp32",
    rtol: float = 1e-8,
    max_iterations: int = 100,
) -> tuple[float, int]:
    """The reference solver's float64 iteration (docs/method.md §6, ``optimal_para.py``), for comparison.

    ``β_{k+1} = R/(1 + R)`` in float64, with the matrix entries computed in float64 and rounded to
    ``fmt``; stops when ``|β_{k+1} − β_k| <= rtol·|β_k|`` and returns ``(β, iterations)``. ``rounding``
    says how float64 is rounded to ``fmt``: ``"via_fp32"`` (what ``torch``'s float64 → float16 cast
    does: through float32, a double rounding) or ``"exact"`` (one correct rounding). Not a verified
    result: it is the negative control of the exact solver (tests/theory/test_roots.py).
    """
    fmt = get_format(fmt)
    n = check_int(n, "n", 2)
    form = normalize_form(form)
    if rounding not in ("via_fp32", "exact"):
        raise ValueError(f"rounding: expected 'via_fp32' or 'exact', got {rounding!r}")
    sig = 1.0 if scale is None else float(scale)
    fp32 = get_format("fp32")

    def rnd(x: float) -> float:
        if rounding == "via_fp32":
            x = float(round_to_format(x, fp32))
        return float(round_to_format(x, fmt))

    beta = float(start)
    for k in range(1, max_iterations + 1):
        diag = rnd(sig * (1.0 - beta / n))
        off = rnd(-sig * beta / n)
        b = -off
        a = diag + b
        if form == "paper":
            r = sig * b * n / (a * (a - b * n))
        else:
            r = sig * b * n / (a * (a - b * n)) + (sig - a) / a
        new = r / (1.0 + r)
        if abs(new - beta) <= rtol * abs(beta):
            return new, k
        beta = new
    raise ValueError(f"no convergence in {max_iterations} iterations")


def __getattr__(name: str) -> Any:  # a moved public name, whatever it is
    # ``optimal_beta`` (start = None: the selected optimum) lives in the top layer, pasa_theory.selection;
    # importing it from here still works, with a warning.
    if name == "optimal_beta":
        warnings.warn(
            "pasa_theory.roots.optimal_beta moved: use pasa_theory.optimal_beta (or "
            "pasa_theory.roots.fixed_point_from with a given start)",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module("pasa_theory.selection").optimal_beta
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
