r"""The rounded shifting matrix, its exact inverse, the per-block error κ and both β equations.

Notation (docs/method.md §2, §5; generalised here to a softmax scale σ folded into M, docs/method.md §7).
The shifting matrix of a KV block of length ``n`` is ``M = σ·(I − (β/n)·J)`` with ``J`` the all-ones
matrix, ``0 < β < 1`` and ``σ = 1`` unless a scale is folded in. Stored in a format ``fmt`` it becomes

.. math::

    M_r = \mathrm{diag}\cdot I + \mathrm{off}\cdot(J - I), \qquad
    \mathrm{diag} = fl(σ(1 - β/n)), \quad \mathrm{off} = fl(-σβ/n)              \tag{B1}

(round-to-nearest-even, computed exactly: :func:`shifting_entries`). With

.. math::

    b := -\mathrm{off}, \qquad a := \mathrm{diag} + b, \qquad M_r = a\,I - b\,J \ \text{exactly}  \tag{B2}

the shifted scores of a block with raw scores ``s`` and mean ``μ`` are ``s̃ = a·s − b·n·μ``, so
``mean(s̃) = (a − b·n)·μ``, and ``M_r⁻¹ = (1/a)·(I + b/(a − b·n)·J)`` (Sherman–Morrison). PASA recovers
``ŝ = s̃ + c·mean(s̃)``, aiming at ``σ·s``; the error is

.. math::

    e_k = ŝ_k - σ s_k = (a - σ)(s_k - μ) + μ\,κ_{abs},\qquad
    κ_{abs} = (a - σ) + c\,(a - b n) - b n, \qquad κ := κ_{abs}/σ                   \tag{B3}

The first term is a change of softmax temperature of relative size ``|a − σ|/σ`` that no ``c`` can
cancel; ``κ·(σμ)`` is a per-block constant, harmless inside a block and a reweighting
``exp(κσ(μ_j − μ_j'))`` between blocks. The two β equations (docs/method.md §6):

.. math::

    \text{paper:}\quad \frac{β}{1-β} = f(β) := \frac{σ\, b n}{a (a - b n)}                  \tag{B4}

    \text{kappa (optimal\_para.py):}\quad \frac{β}{1-β} = F(β) := f(β) + \frac{σ - a}{a}
        = \frac{b n + σ - a}{a - b n}                                                     \tag{B5}

(B5) is exactly ``κ = 0`` with ``c = β/(1 − β)``; at ``σ = 1`` (B4) and (B5) are the comment and the
code of the reference solver. Every identity here is derived and verified symbolically in
:mod:`pasa_theory.scheme` (``rounded_matrix_identities``, ``kappa_identities``).

Note on the folded scale of docs/method.md §7 (``τ = 1/√128``): the published fixed points
(0.9374323777, 0.9689528165, 0.9847111441 and 0.9374311489, 0.9689529455, 0.9847111464) are reproduced
both with the exact irrational ``τ = 2**-3.5`` (``scale="1/sqrt(128)"``) and with its float64 value
(``scale=1/math.sqrt(128)``): the rounded entries of ``τ·M`` are the same and the fixed points differ by
less than 6e-18, so the ten printed digits cannot tell which one was used
(tests/theory/test_roots.py::test_scaled_exact_and_float64_tau_agree_beyond_the_printed_digits).

All functions are exact (Fractions); with an irrational scale (e.g. ``scale="1/sqrt(128)"``) the
roundings are decided by certified interval enclosures (:mod:`pasa_theory._real`), and values that are
then irrational are returned as :class:`mpmath.mpf` at ``dps`` digits.
"""

from __future__ import annotations

import importlib
import warnings
from fractions import Fraction
from typing import Any, overload

import mpmath

from ._real import (
    Num,
    RealInput,
    as_real,
    as_text,
    check_int,
    check_open_unit,
    check_positive,
    exact_of,
    num,
    rnd,
    to_mpf,
)
from .formats import FloatFormat, get_format

__all__ = [
    "FORMS",
    "normalize_form",
    "shifting_entries",
    "rounded_ab",
    "equation_rhs",
    "fixed_point_map",
    "kappa",
    "recovery_coefficient_at",
    "RECOVERY_SOURCES",
    # exact building blocks for validated arguments, used by pasa_theory.roots, .selection and .bounds
    "scale_value",
    "beta_value",
    "optional_format",
    "rounded_entries",
    "cell_solution",
    "kappa_of",
    "c_star",
    "coefficient_from_entries",
]

#: Canonical names of the two forms of the β equation: "paper" (B4) and "kappa" (B5).
FORMS = ("paper", "kappa")
_FORM_ALIASES = {
    "paper": "paper",
    "comment": "paper",
    "kappa": "kappa",
    "code": "kappa",
    "reference": "kappa",
    "optimal_para": "kappa",
}
#: Sources of the recovery coefficient accepted by :func:`recovery_coefficient_at`.
RECOVERY_SOURCES = ("rounded_m", "beta")


def normalize_form(form: str) -> str:
    """Canonical form name: ``"paper"`` (B4; alias ``"comment"``) or ``"kappa"`` (B5; aliases
    ``"code"``, ``"reference"``, ``"optimal_para"``)."""
    if not isinstance(form, str):
        raise TypeError(f"form: expected a str, got {type(form).__name__} {form!r}")
    try:
        return _FORM_ALIASES[form.strip().lower()]
    except KeyError:
        raise ValueError(
            f"form: expected one of {', '.join(_FORM_ALIASES)} ('paper' = eq. B4, 'kappa' = eq. B5), "
            f"got {form!r}"
        ) from None


def scale_value(scale: RealInput) -> Num:
    """The folded scale σ, validated > 0, as a Fraction (rational) or a Real (irrational); 1 if ``scale``
    is None."""
    if scale is None:
        return Fraction(1)
    sigma = as_real(scale, "scale")
    check_positive(sigma, "scale")
    return num(sigma)


def beta_value(beta: RealInput, argname: str = "beta") -> Num:
    """β validated to lie in (0, 1): a Fraction, or a Real if irrational (accepts numbers, numpy scalars
    and expression strings)."""
    b = as_real(beta, argname)
    check_open_unit(b, argname)
    return num(b)


def rounded_entries(fmt: FloatFormat, n: int, beta: Num, sigma: Num) -> tuple[Fraction, Fraction]:
    """The stored entries ``(diag, off)`` of (B1) for validated arguments (Fractions exactly, Reals by
    certified enclosures); :func:`shifting_entries` validates and calls it."""
    diag = rnd(sigma * (1 - beta / n), fmt, what="diagonal entry σ(1 − β/n)")
    off = rnd(-(sigma * beta) / n, fmt, what="off-diagonal entry −σβ/n")
    if isinstance(diag, float) or isinstance(off, float):
        raise ValueError(f"scale: the entries of σ·M overflow {fmt.name} (diag={diag}, off={off})")
    return diag, off


def shifting_entries(
    fmt: str | FloatFormat, n: int, beta: RealInput, *, scale: RealInput = None
) -> tuple[Fraction, Fraction]:
    """The stored entries ``(diag, off)`` of the shifting matrix, eq. (B1) of this module.

    ``diag = fl(σ(1 − β/n))`` and ``off = fl(−σβ/n)``, rounded to nearest-even in ``fmt`` exactly (no
    intermediate rounding), ``σ = scale`` or 1. docs/method.md §5.1 (σ = 1) and §7 (σ folded in).

    Parameters
    ----------
    fmt : str or FloatFormat
        Format the matrix is stored in (the matmul input format).
    n : int
        KV block length, ``n >= 2``.
    beta : int, Fraction, float, str or mpmath number
        Shift fraction, ``0 < beta < 1``. A float is its exact binary value; a str is an exact
        expression (``"31/32"``, ``"0.9689939"`` is the decimal).
    scale : same types, optional
        Softmax scale folded into M, ``> 0`` (``"1/sqrt(128)"`` is the irrational ``2**-3.5``;
        ``1/math.sqrt(128)`` is its float64 value).

    Returns
    -------
    (Fraction, Fraction)

    Raises
    ------
    ValueError
        If an irrational entry lies too close to a rounding boundary to decide (within ``2**-8192``).

    Examples
    --------
    >>> from pasa_theory import shifting_entries
    >>> shifting_entries("fp16", 128, "31/32")     # 1 - 31/4096 is a tie: goes to even 0.9921875
    (Fraction(127, 128), Fraction(-31, 4096))
    """
    fmt = get_format(fmt)
    n = check_int(n, "n", 2)
    return rounded_entries(fmt, n, beta_value(beta), scale_value(scale))


def rounded_ab(
    fmt: str | FloatFormat, n: int, beta: RealInput, *, scale: RealInput = None
) -> tuple[Fraction, Fraction]:
    """``(a, b)`` with ``M_r = a·I − b·J`` exactly, eq. (B2): ``b = −off``, ``a = diag + b``."""
    diag, off = shifting_entries(fmt, n, beta, scale=scale)
    return diag - off, -off


def _rhs(a: Fraction, b: Fraction, n: int, sigma: Num, form: str) -> Num:
    bn = b * n
    if a == 0 or a == bn:
        raise ValueError(f"the β equation is undefined for a = {a}, b·n = {bn} (a = 0 or a = b·n)")
    if form == "paper":
        return sigma * bn / (a * (a - bn))  # (B4)
    return (sigma + (bn - a)) / (a - bn)  # (B5)


def cell_solution(a: Fraction, b: Fraction, n: int, sigma: Num, form: str) -> Num:
    """(R1): the β solving β/(1−β) = rhs for the fixed (a, b) of one rounding cell.

    paper (B4): β = σbn / (a(a − bn) + σbn);  kappa (B5): β = 1 − (a − bn)/σ.
    """
    bn = b * n
    if form == "paper":
        return (sigma * bn) / (sigma * bn + a * (a - bn))
    return 1 - (a - bn) / sigma


def _to_output(x: Num, dps: int) -> Fraction | mpmath.mpf:
    e = exact_of(x)
    return e if e is not None else to_mpf(x, dps)


def _equation_args(
    fmt: str | FloatFormat, n: int, beta: RealInput, form: str, scale: RealInput, dps: int
) -> tuple[Fraction, Fraction, int, Num, str, int]:
    """Validated arguments of the β equation at ``beta``: a = diag − off and b = −off of the rounded
    (scaled) matrix, n, σ, the normalised form and dps."""
    form = normalize_form(form)
    n = check_int(n, "n", 2)
    dps = check_int(dps, "dps", 1)
    sigma = scale_value(scale)
    diag, off = rounded_entries(get_format(fmt), n, beta_value(beta), sigma)
    return diag - off, -off, n, sigma, form, dps


def equation_rhs(
    fmt: str | FloatFormat,
    n: int,
    beta: RealInput,
    *,
    form: str = "paper",
    scale: RealInput = None,
    dps: int = 50,
) -> Fraction | mpmath.mpf:
    """Right-hand side of the β equation at ``beta``: ``f(β)`` (B4, form="paper") or ``F(β)`` (B5,
    form="kappa"), with a, b from the rounded matrix (B1–B2). Fraction, or mpf if irrational."""
    a, b, n, sigma, form, dps = _equation_args(fmt, n, beta, form, scale, dps)
    return _to_output(_rhs(a, b, n, sigma, form), dps)


def fixed_point_map(
    fmt: str | FloatFormat,
    n: int,
    beta: RealInput,
    *,
    form: str = "paper",
    scale: RealInput = None,
    dps: int = 50,
) -> Fraction | mpmath.mpf:
    """One step ``G(β) = R/(1 + R)`` of the fixed-point iteration, ``R`` = :func:`equation_rhs`
    (docs/method.md §6: ``β_{k+1} = F(β_k)/(1 + F(β_k))``), evaluated exactly."""
    a, b, n, sigma, form, dps = _equation_args(fmt, n, beta, form, scale, dps)
    return _to_output(cell_solution(a, b, n, sigma, form), dps)


@overload
def kappa_of(a: float, b: float, n: int, sigma: float, c: float) -> float: ...
@overload
def kappa_of(a: Fraction, b: Fraction, n: int, sigma: Num, c: Num) -> Num: ...
def kappa_of(
    a: Fraction | float, b: Fraction | float, n: int, sigma: Num | float, c: Num | float
) -> Num | float:
    """κ of (B3) for given a, b, σ and c (no validation): κ = ((a − σ) + c(a − bn) − bn)/σ; floats give a
    float, Fractions and Reals an exact or certified value."""
    bn = b * n
    return ((a - sigma) + c * (a - bn) - bn) / sigma


def optional_format(vector_format: str | FloatFormat | None) -> FloatFormat | None:
    """``get_format(vector_format)`` (argument name ``vector_format`` in errors), or None."""
    if vector_format is None:
        return None
    return get_format(vector_format, argname="vector_format")


def kappa(
    fmt: str | FloatFormat,
    n: int,
    beta: RealInput,
    *,
    c: RealInput = None,
    scale: RealInput = None,
    vector_format: str | FloatFormat | None = None,
    dps: int = 50,
) -> Fraction | mpmath.mpf:
    """Per-block constant error κ of PASA's recovery, eq. (B3) (docs/method.md §5.5; per unit of σμ).

    ``κ = ((a − σ) + c·(a − b·n) − b·n)/σ`` with a, b of the matrix rounded at ``beta`` (B1–B2) and
    the recovery coefficient ``c``: given, else ``β/(1 − β)`` rounded to ``vector_format`` (exact if
    None), as the reference implementation forms it. Fraction, or mpf if irrational.

    Examples
    --------
    >>> from pasa_theory import kappa
    >>> float(kappa("fp16", 128, "0.9375", vector_format="fp16"))    # M exactly representable
    0.0
    """
    fmt = get_format(fmt)
    n = check_int(n, "n", 2)
    dps = check_int(dps, "dps", 1)
    sigma = scale_value(scale)
    b_real = beta_value(beta)
    vfmt = optional_format(vector_format)
    diag, off = rounded_entries(fmt, n, b_real, sigma)
    a, b = diag - off, -off
    if c is None:
        c_real = b_real / (1 - b_real)
        if vfmt is not None:
            c_val = rnd(c_real, vfmt, what="c = β/(1−β)")
            if isinstance(c_val, float):
                raise ValueError(f"vector_format: c = β/(1−β) overflows {vfmt.name}")
            c_real = c_val
    else:
        c_real = num(as_real(c, "c"))
    return _to_output(kappa_of(a, b, n, sigma, c_real), dps)


def c_star(a: Fraction, b: Fraction, n: int, sigma: Num) -> Num:
    """The coefficient making κ vanish for the rounded matrix: c* = (bn + σ − a)/(a − bn) (from B3)."""
    bn = b * n
    if a == bn:
        raise ValueError("a = b·n: the rounded matrix annihilates the block mean; no recovery possible")
    return (sigma + (bn - a)) / (a - bn)


def coefficient_from_entries(
    a: Fraction,
    b: Fraction,
    n: int,
    sigma: Num,
    beta: Num,
    *,
    source: str = "rounded_m",
    vector_format: FloatFormat | None = None,
    scale: RealInput = None,
) -> Fraction:
    """The recovery coefficient for validated arguments: ``c* = (b·n + σ − a)/(a − b·n)`` (``source=
    "rounded_m"``) or ``β/(1 − β)`` (``"beta"``), rounded to ``vector_format`` if given, else exact.
    ``scale`` is only used in the message when ``c`` is irrational. See :func:`recovery_coefficient_at`."""
    if source not in RECOVERY_SOURCES:
        raise ValueError(f"source: expected one of {', '.join(RECOVERY_SOURCES)}, got {source!r}")
    if source == "rounded_m":
        c = c_star(a, b, n, sigma)
    else:
        c = beta / (1 - beta)
    if vector_format is None:
        exact = exact_of(c)
        if exact is None:
            raise ValueError(
                f"vector_format: the coefficient {as_text(c)} is irrational for scale={scale!r}; pass a "
                "vector_format to round it to"
            )
        return exact
    out = rnd(c, vector_format, what="recovery coefficient")
    if isinstance(out, float):
        raise ValueError(f"vector_format: the recovery coefficient overflows {vector_format.name}")
    return out


def recovery_coefficient_at(
    fmt: str | FloatFormat,
    n: int,
    beta: RealInput,
    *,
    scale: RealInput = None,
    vector_format: str | FloatFormat | None = None,
    source: str = "rounded_m",
) -> Fraction:
    """The recovery coefficient ``c`` of ``ŝ = s̃ + c·mean(s̃)`` at a given ``beta`` (docs/method.md §2, §5
    and docs/design.md §4). :func:`pasa_theory.recovery_coefficient` is the same with ``beta=None``
    meaning the selected optimum.

    ``source="rounded_m"``: the ``c`` that makes κ of eq. (B3) vanish for the matrix actually stored,
    ``c* = (b·n + σ − a)/(a − b·n)`` with a, b of (B1–B2) at ``beta`` (what the reference's unused
    ``obtainInvPam(M)`` aims at; equal to the right side of B5). ``source="beta"``: ``c = β/(1 − β)``,
    what the reference script computes. Either is rounded to nearest-even in ``vector_format`` if given,
    else returned exactly.

    Returns
    -------
    Fraction

    Raises
    ------
    ValueError
        If the coefficient is irrational (irrational ``scale``) and no ``vector_format`` is given, if it
        overflows ``vector_format``, or for bad arguments.

    Examples
    --------
    >>> from pasa_theory.shifting import recovery_coefficient_at
    >>> recovery_coefficient_at("fp16", 128, "0.9375")
    Fraction(15, 1)
    >>> recovery_coefficient_at("fp16", 128, "0.9689939", source="beta", vector_format="fp16")
    Fraction(125, 4)
    """
    if source not in RECOVERY_SOURCES:
        raise ValueError(f"source: expected one of {', '.join(RECOVERY_SOURCES)}, got {source!r}")
    fmt = get_format(fmt)
    n = check_int(n, "n", 2)
    vfmt = optional_format(vector_format)
    sigma = scale_value(scale)
    beta_real = beta_value(beta)
    diag, off = rounded_entries(fmt, n, beta_real, sigma)
    return coefficient_from_entries(
        diag - off, -off, n, sigma, beta_real, source=source, vector_format=vfmt, scale=scale
    )


def __getattr__(name: str) -> Any:  # a moved public name, whatever it is
    # ``recovery_coefficient`` (β = None: the selected optimum) lives in the top layer,
    # pasa_theory.selection; importing it from here still works, with a warning.
    if name == "recovery_coefficient":
        warnings.warn(
            "pasa_theory.shifting.recovery_coefficient moved: use pasa_theory.recovery_coefficient "
            "(or pasa_theory.shifting.recovery_coefficient_at with a given beta)",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module("pasa_theory.selection").recovery_coefficient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
