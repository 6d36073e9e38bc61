"""Binary floating-point formats and exact rounding to them.

A :class:`FloatFormat` describes a binary floating-point format by its precision ``p`` (significand
bits *including* the implicit bit), its exponent range ``[emin, emax]`` (the exponents of the smallest
and largest normal binades), whether it has subnormals and infinities, and its largest finite value.
Every representable value is ``m * 2**(E - p + 1)`` with an integer ``0 <= m < 2**p`` and
``E = max(floor(log2|x|), emin)``: the *quantum* of a value of exponent ``E`` is ``2**(E - p + 1)``.

:func:`round_to_format` rounds an exact real (int, :class:`~fractions.Fraction`, the exact binary value
of a float or of an :class:`mpmath.mpf`) to a format in rational arithmetic, with no intermediate
rounding. It implements the four rounding-direction attributes of IEEE 754-2019 section 4.3
(roundTiesToEven, roundTowardZero, roundTowardPositive, roundTowardNegative) with gradual underflow
(section 7.5) and overflow (section 7.4). :func:`round_array` is its vectorised twin for float64 arrays
(numpy, imported only when called); the two agree bit for bit (tests/theory/test_rounding_oracles.py).

Overflow (IEEE 754-2019 section 7.4). A result is first rounded as if the exponent range were
unbounded; if its magnitude then exceeds ``max_finite`` the operation overflows:

* round-to-nearest-even and rounding *away* from zero give ``±inf``;
* rounding *toward* zero (``"toward_zero"``, ``"down"`` for positive, ``"up"`` for negative values)
  gives ``±max_finite``.

For IEEE formats this makes every ``|x| >= 2**emax * (2 - 2**-p)`` overflow under round to nearest
(the threshold is a tie between ``max_finite`` and ``2**(emax+1)`` and goes to the even candidate).
Formats without infinities (OCP ``E4M3``, "e4m3fn") have no ``inf`` to return: an overflow that would
give ``±inf`` gives ``nan`` instead, which is what ``ml_dtypes``' cast does (``448 < x <= 464`` rounds
to 448, ``x > 464`` gives NaN; checked in tests/theory/test_rounding_oracles.py).

Formats without subnormals round to the representable set ``{0} ∪ normals`` (correct rounding, not
"flush to zero after rounding"): below ``min_normal`` the only candidates are 0 and ``min_normal``, and a
tie at ``min_normal / 2`` goes to 0 (0 is the even multiple of the quantum ``2**emin``).

Results are returned as :class:`~fractions.Fraction` (a signed zero becomes ``Fraction(0)``), or as the
floats ``inf``, ``-inf`` and ``nan`` for the non-finite cases.

Sources:
    1. IEEE Std 754-2019, sections 3.3 (parameters of binary16/32/64), 4.3 (rounding-direction
       attributes), 7.4 (overflow), 7.5 (underflow).
    2. OCP 8-bit Floating Point Specification (OFP8), rev. 1.0, 2023: E4M3 (bias 7, no infinities,
       max 448) and E5M2 (IEEE-like, max 57344).
    3. bfloat16: 8 exponent bits and 8 significand bits, the exponent range of binary32.
"""

from __future__ import annotations

import functools
import math
import numbers
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from typing import SupportsFloat, cast

import numpy as np
import numpy.typing as npt

__all__ = [
    "FloatFormat",
    "FORMATS",
    "ROUNDING_MODES",
    "get_format",
    "round_to_format",
    "round_array",
    "torch_scalar",
    "is_representable",
    "next_up",
    "next_down",
    "ulp",
    "quantum_array",
    "rounding_preimage",
    "exact_value",
    # exact helpers for validated arguments, used by the solver (pasa_theory.roots) and _real
    "round_fraction",
    "floor_log2",
    "next_up_unbounded",
    "next_down_unbounded",
    "preimage_of",
]

#: The rounding modes understood by :func:`round_to_format` (IEEE 754-2019 section 4.3 names in brackets):
#: "nearest_even" (roundTiesToEven), "toward_zero" (roundTowardZero), "up" (roundTowardPositive),
#: "down" (roundTowardNegative).
ROUNDING_MODES = ("nearest_even", "toward_zero", "up", "down")


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format.

    Representable values are 0 and ``±m * 2**(E - p + 1)`` with integer ``m``, ``2**(p-1) <= m < 2**p``
    for normal values (``emin <= E <= emax``) and ``1 <= m < 2**(p-1)``, ``E = emin`` for subnormal
    values (if ``subnormals``), bounded by ``max_finite``.

    Parameters
    ----------
    name : str
        Name used in messages and tables.
    p : int
        Precision in bits, including the implicit leading bit (binary16: 11).
    emin, emax : int
        Exponents of the smallest and the largest normal binade (binary16: -14 and 15).
    subnormals : bool
        Whether the format has subnormal (denormal) values.
    infinities : bool
        Whether the format has infinities. Without them, an overflow that would give ``±inf``
        gives ``nan`` (module docstring).
    max_finite : Fraction, optional
        The largest finite value. Defaults to the IEEE value ``2**emax * (2 - 2**(1-p))``; formats that
        spend the top codes on NaN (OCP E4M3: 448 instead of 480) give it explicitly. It must be a
        representable value of the top binade.

    Examples
    --------
    >>> from pasa_theory.formats import FloatFormat
    >>> tf32 = FloatFormat("tf32", p=11, emin=-126, emax=127)
    >>> float(tf32.u), float(tf32.max_finite) == float(2**127 * (2 - 2**-10))
    (0.00048828125, True)
    """

    #: Name used in messages and tables.
    name: str
    #: Precision (significand bits including the implicit bit).
    p: int
    #: Exponent of the smallest normal binade (``min_normal = 2**emin``).
    emin: int
    #: Exponent of the largest binade.
    emax: int
    #: Whether subnormal values exist.
    subnormals: bool = True
    #: Whether ±inf exist.
    infinities: bool = True
    #: Largest finite value (exact).
    max_finite: Fraction = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"name: expected a non-empty str, got {self.name!r}")
        for attr in ("p", "emin", "emax"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{attr}: expected an int, got {type(value).__name__} {value!r}")
            object.__setattr__(self, attr, int(value))
        for attr in ("subnormals", "infinities"):
            if not isinstance(getattr(self, attr), bool):
                raise TypeError(f"{attr}: expected a bool, got {getattr(self, attr)!r}")
        if self.p < 1:
            raise ValueError(f"p: expected a precision >= 1 bit, got {self.p}")
        if self.emin > self.emax:
            raise ValueError(f"emin, emax: expected emin <= emax, got {self.emin} > {self.emax}")
        if self.emin > 0:
            raise ValueError(f"emin: expected emin <= 0 (1 must be a normal number), got {self.emin}")
        ieee_max = Fraction(2) ** self.emax * (2 - Fraction(2) ** (1 - self.p))
        if self.max_finite is None:
            object.__setattr__(self, "max_finite", ieee_max)
        else:
            mf = self.max_finite
            if isinstance(mf, bool) or not isinstance(mf, (numbers.Rational, float)):
                raise TypeError(f"max_finite: expected a Fraction, int or float, got {mf!r}")
            mf = Fraction(mf)
            scaled = mf * Fraction(2) ** (self.p - 1 - self.emax)
            if not (Fraction(2) ** self.emax <= mf <= ieee_max) or scaled.denominator != 1:
                raise ValueError(
                    f"max_finite: expected a value of the top binade [2**emax, {float(ieee_max)}] on "
                    f"the {self.p}-bit grid, got {mf}"
                )
            object.__setattr__(self, "max_finite", mf)

    # -- derived constants ------------------------------------------------------------------------
    @property
    def u(self) -> Fraction:
        """Unit roundoff ``u = 2**-p`` (half the spacing of the values in [1, 2))."""
        return Fraction(1, 1 << self.p)

    @property
    def eps(self) -> Fraction:
        """Machine epsilon ``2**(1-p)`` = ``2u``, the spacing of the values in [1, 2)
        (what ``numpy.finfo(...).eps`` and ``torch.finfo(...).eps`` report)."""
        return Fraction(2, 1 << self.p)

    @property
    def min_normal(self) -> Fraction:
        """Smallest positive normal value ``2**emin``."""
        return Fraction(2) ** self.emin

    @property
    def min_subnormal(self) -> Fraction:
        """Smallest positive value: ``2**(emin - p + 1)`` with subnormals, else ``min_normal``."""
        if self.subnormals:
            return Fraction(2) ** (self.emin - self.p + 1)
        return self.min_normal

    @property
    def overflow_threshold(self) -> Fraction:
        """Midpoint between ``max_finite`` and the next value of the unbounded grid.

        Under round-to-nearest-even a magnitude above it overflows; a magnitude equal to it overflows
        iff the significand of ``max_finite`` is odd (IEEE formats: ``2**emax * (2 - 2**-p)``
        overflows; OCP E4M3: 464 rounds to 448).
        """
        return self.max_finite + Fraction(2) ** (self.emax - self.p)

    @property
    def overflow_threshold_float(self) -> float:
        """:attr:`overflow_threshold` as a float64 (exact for ``p <= 52``: it lies on the ``p + 1``-bit grid),
        or ``math.inf`` when it exceeds the float64 range (fp64: ``2**1024 * (1 - 2**-54)``)."""
        try:
            return float(self.overflow_threshold)
        except OverflowError:
            return math.inf

    def __repr__(self) -> str:
        extra = []
        if not self.subnormals:
            extra.append("subnormals=False")
        if not self.infinities:
            extra.append("infinities=False")
        ieee_max = Fraction(2) ** self.emax * (2 - Fraction(2) ** (1 - self.p))
        if self.max_finite != ieee_max:
            extra.append(f"max_finite={self.max_finite}")
        tail = "".join(", " + e for e in extra)
        return f"FloatFormat({self.name!r}, p={self.p}, emin={self.emin}, emax={self.emax}{tail})"


#: Built-in formats by canonical name.
FORMATS: dict[str, FloatFormat] = {
    f.name: f
    for f in (
        FloatFormat("fp16", p=11, emin=-14, emax=15),
        FloatFormat("bf16", p=8, emin=-126, emax=127),
        FloatFormat("fp32", p=24, emin=-126, emax=127),
        FloatFormat("fp64", p=53, emin=-1022, emax=1023),
        FloatFormat("fp8_e4m3", p=4, emin=-6, emax=8, infinities=False, max_finite=Fraction(448)),
        FloatFormat("fp8_e5m2", p=3, emin=-14, emax=15),
    )
}

_ALIASES = {
    "float16": "fp16",
    "half": "fp16",
    "binary16": "fp16",
    "bfloat16": "bf16",
    "float32": "fp32",
    "single": "fp32",
    "binary32": "fp32",
    "float64": "fp64",
    "double": "fp64",
    "binary64": "fp64",
    "e4m3": "fp8_e4m3",
    "e4m3fn": "fp8_e4m3",
    "float8_e4m3fn": "fp8_e4m3",
    "fp8_e4m3fn": "fp8_e4m3",
    "e5m2": "fp8_e5m2",
    "float8_e5m2": "fp8_e5m2",
}


def get_format(fmt: str | FloatFormat, *, argname: str = "fmt") -> FloatFormat:
    """Return the :class:`FloatFormat` named ``fmt`` (or ``fmt`` itself if it is one).

    Names (case-insensitive): ``fp16`` (``float16``, ``half``, ``binary16``), ``bf16`` (``bfloat16``),
    ``fp32`` (``float32``, ``single``, ``binary32``), ``fp64`` (``float64``, ``double``, ``binary64``),
    ``fp8_e4m3`` (``e4m3``, ``e4m3fn``, ``float8_e4m3fn``: OCP E4M3, no infinities, max 448) and
    ``fp8_e5m2`` (``e5m2``, ``float8_e5m2``).

    A numpy or ml_dtypes dtype (``np.dtype("float16")``, ``ml_dtypes.bfloat16``) or a torch dtype
    (``torch.float16``) is accepted too and looked up by its name; torch is never imported for it.

    Raises
    ------
    ValueError
        For an unknown name; the message names ``argname`` and lists the valid names.
    TypeError
        For anything that is neither a str, a FloatFormat nor a floating dtype.
    """
    if isinstance(fmt, FloatFormat):
        return fmt
    if not isinstance(fmt, str):
        name = _dtype_name(fmt)
        if name is None:
            raise TypeError(
                f"{argname}: expected a format name (str), a FloatFormat or a numpy/ml_dtypes/torch "
                f"floating dtype, got {type(fmt).__name__} {fmt!r}"
            )
        fmt = name
    key = fmt.strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return FORMATS[key]
    except KeyError:
        valid = ", ".join(list(FORMATS) + list(_ALIASES))
        raise ValueError(f"{argname}: unknown format name {fmt!r}; valid names: {valid}") from None


def _dtype_name(obj: object) -> str | None:
    """The name of a numpy/ml_dtypes dtype or scalar type, or of a torch dtype (``"torch.float16"``)."""
    mod = type(obj).__module__.split(".")[0]
    if mod == "torch":
        text = str(obj)
        return text[len("torch.") :] if text.startswith("torch.") else None
    if mod == "numpy" and hasattr(obj, "kind") and hasattr(obj, "name"):  # a numpy dtype
        return str(obj.name) if obj.kind in "fV" else None
    if isinstance(obj, type) and obj.__module__.split(".")[0] in ("numpy", "ml_dtypes"):
        return obj.__name__  # a scalar type such as numpy.float16 or ml_dtypes.bfloat16
    return None


# -- exact values -------------------------------------------------------------------------------------
def exact_value(x: object, *, argname: str = "x") -> Fraction | float:  # any input: validated below
    """The exact value of a number as a Fraction (or the float ``inf``/``-inf``/``nan``).

    Accepts int, :class:`~fractions.Fraction` (any :class:`numbers.Rational`), float and numpy floating
    scalars (their exact binary value, via ``as_integer_ratio``) and :class:`mpmath.mpf` (its exact
    binary value ``man * 2**exp``). Rejects bool, str, complex and everything else with TypeError.
    """
    if isinstance(x, bool):
        raise TypeError(f"{argname}: expected a real number, got bool {x!r}")
    if isinstance(x, Fraction):
        return x
    if isinstance(x, numbers.Rational):
        return Fraction(int(x.numerator), int(x.denominator))
    if isinstance(x, float) or (
        hasattr(x, "as_integer_ratio") and hasattr(x, "dtype") and getattr(x.dtype, "kind", "") == "f"
    ):
        xf = float(cast(SupportsFloat, x))  # a float or a numpy floating scalar here
        if math.isnan(xf) or math.isinf(xf):
            return xf
        return Fraction(*xf.as_integer_ratio())
    mpf_value = _mpf_exact(x)
    if mpf_value is not None:
        return mpf_value
    raise TypeError(
        f"{argname}: expected an int, Fraction, float or mpmath.mpf, got {type(x).__name__} {x!r}"
    )


def _mpf_exact(x: object) -> Fraction | float | None:
    """Exact value of an mpmath.mpf without importing mpmath when it is not loaded."""
    mpmath = sys.modules.get("mpmath")
    if mpmath is None or not isinstance(x, mpmath.mpf):
        return None
    if mpmath.isnan(x):
        return math.nan
    if mpmath.isinf(x):
        return math.inf if x > 0 else -math.inf
    sign, man, exp, _ = x._mpf_  # man_exp would drop the sign
    man = -int(man) if sign else int(man)
    exp = int(exp)
    return Fraction(man << exp) if exp >= 0 else Fraction(man, 1 << -exp)


def floor_log2(num: int, den: int) -> int:
    """floor(log2(num/den)) for positive integers, exactly."""
    e = num.bit_length() - den.bit_length()
    if e >= 0:
        if num < den << e:
            e -= 1
    elif num << -e < den:
        e -= 1
    return e


def _check_mode(mode: str) -> None:
    if mode not in ROUNDING_MODES:
        raise ValueError(f"mode: expected one of {', '.join(ROUNDING_MODES)}, got {mode!r}")


def _overflow(negative: bool, toward: bool, fmt: FloatFormat) -> Fraction | float:
    if toward:
        return -fmt.max_finite if negative else fmt.max_finite
    if not fmt.infinities:
        return math.nan
    return -math.inf if negative else math.inf


def round_to_format(x: object, fmt: str | FloatFormat, mode: str = "nearest_even") -> Fraction | float:
    """Round the exact value of ``x`` to ``fmt`` (IEEE 754-2019 sections 4.3, 7.4, 7.5).

    With ``x = N/D > 0`` and ``E = max(floor(log2 x), emin)`` the quantum is ``q = 2**(E - p + 1)``
    (for formats without subnormals and ``x < 2**emin``: ``q = 2**emin``, so the candidates are 0 and
    ``min_normal``); the result is ``m * q`` with ``m`` the integer neighbour of ``x / q`` selected by the
    mode (ties to the even ``m`` for ``"nearest_even"``). Overflow follows the module docstring.

    Parameters
    ----------
    x : int, Fraction, float, numpy float scalar or mpmath.mpf
        The value, taken exactly (a float is its exact binary value, not its decimal repr).
    fmt : str or FloatFormat
        Target format (see :func:`get_format`).
    mode : {"nearest_even", "toward_zero", "up", "down"}
        Rounding direction.

    Returns
    -------
    Fraction, or float inf/-inf/nan
        ``Fraction`` for finite results (zero of either sign is ``Fraction(0)``); ``±inf`` on overflow
        for formats with infinities; ``nan`` for NaN input and for overflow of formats without them.

    Examples
    --------
    >>> from pasa_theory.formats import round_to_format
    >>> round_to_format(1 + 2**-11, "fp16")            # a tie: goes to the even neighbour 1
    Fraction(1, 1)
    >>> round_to_format(1 + 2**-11 + 2**-40, "fp16")   # just above the tie
    Fraction(1025, 1024)
    >>> round_to_format(65520, "fp16"), round_to_format(65520, "fp16", "toward_zero")
    (inf, Fraction(65504, 1))
    >>> round_to_format(465, "fp8_e4m3")                # no infinities: NaN, as ml_dtypes
    nan
    """
    fmt = get_format(fmt)
    _check_mode(mode)
    value = exact_value(x)
    if isinstance(value, float):  # nan or inf
        if math.isnan(value) or fmt.infinities:
            return value
        return math.nan
    return round_fraction(value, fmt, mode)


def round_fraction(value: Fraction, fmt: FloatFormat, mode: str = "nearest_even") -> Fraction | float:
    """:func:`round_to_format` for an already validated Fraction, format and mode (no checks)."""
    if value == 0:
        return Fraction(0)
    negative = value < 0
    num, den = abs(value.numerator), value.denominator
    e = floor_log2(num, den)
    if e < fmt.emin and not fmt.subnormals:
        qe = fmt.emin
    else:
        qe = max(e, fmt.emin) - (fmt.p - 1)
    if qe >= 0:
        den <<= qe
    else:
        num <<= -qe
    m, r = divmod(num, den)
    if mode == "nearest_even":
        twice = 2 * r
        away = twice > den or (twice == den and m & 1 == 1)
        toward = False
    elif mode == "toward_zero":
        away = False
        toward = True
    elif mode == "up":
        away = r != 0 and not negative
        toward = negative
    else:  # down
        away = r != 0 and negative
        toward = not negative
    if away:
        m += 1
    result = Fraction(m << qe) if qe >= 0 else Fraction(m, 1 << -qe)
    if result > fmt.max_finite:
        return _overflow(negative, toward, fmt)
    return -result if negative else result


def is_representable(x: object, fmt: str | FloatFormat) -> bool:
    """Whether the exact value of ``x`` is a finite value of ``fmt``."""
    fmt = get_format(fmt)
    value = exact_value(x)
    if isinstance(value, float):
        return False
    return round_fraction(value, fmt) == value


def _quantum_exponent(v: Fraction, fmt: FloatFormat) -> int:
    """Exponent of the quantum (spacing) of the grid at ``|v| > 0``, going *upward* from ``|v|``."""
    a = abs(v)
    e = floor_log2(a.numerator, a.denominator)
    if e < fmt.emin and not fmt.subnormals:
        return fmt.emin
    return max(e, fmt.emin) - (fmt.p - 1)


def _require_representable(v: object, fmt: FloatFormat, argname: str) -> Fraction:
    value = exact_value(v, argname=argname)
    if isinstance(value, float) or round_fraction(value, fmt) != value:
        raise ValueError(f"{argname}: expected a finite value of {fmt.name}, got {v!r}")
    return value


def next_up_unbounded(v: Fraction, fmt: FloatFormat) -> Fraction:
    """Next value above ``v`` on the grid of ``fmt`` with the exponent range unbounded above."""
    if v == 0:
        return fmt.min_subnormal
    if v > 0:
        return v + Fraction(2) ** _quantum_exponent(v, fmt)
    return -next_down_unbounded(-v, fmt)


def next_down_unbounded(v: Fraction, fmt: FloatFormat) -> Fraction:
    """Next value below ``v`` on the grid of ``fmt`` with the exponent range unbounded above."""
    if v <= 0:
        return -next_up_unbounded(-v, fmt)
    if not fmt.subnormals and v == fmt.min_normal:
        return Fraction(0)
    e = floor_log2(v.numerator, v.denominator)
    qe = _quantum_exponent(v, fmt)
    if v == Fraction(2) ** e and e > fmt.emin:
        qe -= 1  # a power of two: the grid below is twice as fine
    return v - Fraction(2) ** qe


def next_up(v: object, fmt: str | FloatFormat) -> Fraction | float:
    """The least value of ``fmt`` greater than the representable ``v`` (``inf``/``nan`` past the top).

    Equivalent to IEEE 754-2019 nextUp (section 5.3.1) with zeros unsigned.
    """
    fmt = get_format(fmt)
    value = _require_representable(v, fmt, "v")
    if value == fmt.max_finite:
        return math.inf if fmt.infinities else math.nan
    return next_up_unbounded(value, fmt)


def next_down(v: object, fmt: str | FloatFormat) -> Fraction | float:
    """The greatest value of ``fmt`` less than the representable ``v`` (IEEE 754-2019 nextDown)."""
    fmt = get_format(fmt)
    value = _require_representable(v, fmt, "v")
    if value == -fmt.max_finite:
        return -math.inf if fmt.infinities else math.nan
    return next_down_unbounded(value, fmt)


def ulp(v: object, fmt: str | FloatFormat) -> Fraction:
    """The quantum of ``fmt`` at ``v``: the spacing ``2**(E - p + 1)`` of the binade containing ``|v|``
    (``E = max(floor(log2|v|), emin)``; ``min_subnormal`` at 0). ``v`` need not be representable."""
    fmt = get_format(fmt)
    value = exact_value(v, argname="v")
    if isinstance(value, float):
        raise ValueError(f"v: expected a finite value, got {v!r}")
    if value == 0:
        return fmt.min_subnormal
    return Fraction(2) ** _quantum_exponent(value, fmt)


def rounding_preimage(v: object, fmt: str | FloatFormat) -> tuple[Fraction, Fraction, bool, bool]:
    """The set of reals that round to the representable ``v`` under round-to-nearest-even.

    Returns ``(lo, hi, lo_closed, hi_closed)``: the set is the interval from ``lo`` to ``hi``, each end
    included iff the flag says so. ``lo`` and ``hi`` are the midpoints to the neighbouring values of the
    grid (unbounded above, so the top value's ``hi`` is ``fmt.overflow_threshold``); an end is closed
    iff the tie there rounds to ``v`` (ties to even), which is decided by :func:`round_to_format` itself.
    Zero's preimage is ``[-min_subnormal/2, min_subnormal/2]``.
    """
    fmt = get_format(fmt)
    return preimage_of(_require_representable(v, fmt, "v"), fmt)


@functools.lru_cache(maxsize=65536)
def preimage_of(value: Fraction, fmt: FloatFormat) -> tuple[Fraction, Fraction, bool, bool]:
    """:func:`rounding_preimage` of an already validated, representable Fraction (no checks):
    ``(lo, hi, lo_included, hi_included)``, the interval rounding to ``value`` under nearest-even."""
    lo = (value + next_down_unbounded(value, fmt)) / 2
    hi = (value + next_up_unbounded(value, fmt)) / 2
    return lo, hi, round_fraction(lo, fmt) == value, round_fraction(hi, fmt) == value


def _quantum_exponent_array(mag: npt.NDArray[np.float64], fmt: FloatFormat) -> npt.NDArray[np.int64]:
    """Vectorised :func:`_quantum_exponent`: int64 exponents of the quantum at the finite magnitudes
    ``mag >= 0`` (float64 ndarray; 0 counts as the smallest binade, so its quantum is ``min_subnormal``)."""
    _, e2 = np.frexp(mag)
    e = np.where(mag > 0, e2.astype(np.int64) - 1, fmt.emin - 1)  # floor(log2 |x|); exact for subnormals
    if fmt.subnormals:
        return np.maximum(e, fmt.emin) - (fmt.p - 1)
    return np.where(e < fmt.emin, fmt.emin, e - (fmt.p - 1))


def quantum_array(x: npt.ArrayLike, fmt: str | FloatFormat) -> npt.NDArray[np.float64]:
    """Vectorised twin of :func:`ulp`: the quantum of ``fmt`` at each element of the real array ``x``, as
    a C-ordered float64 ndarray (exact: a power of two). ``min_subnormal`` at 0, ``inf`` at ``±inf``,
    ``nan`` at ``nan``. Requires the smallest quantum of the format to be a float64 (every built-in
    format). Agrees with :func:`ulp` on every finite float64 (tests/theory/test_formats.py)."""
    fmt = get_format(fmt)
    if fmt.emin - fmt.p + 1 < -1074:
        raise ValueError(f"fmt: quantum_array needs a format whose quanta are float64 values, got {fmt!r}")
    mag = np.abs(np.asarray(x, dtype=np.float64, order="C"))
    finite = np.isfinite(mag)
    q = np.ldexp(1.0, _quantum_exponent_array(np.where(finite, mag, 0.0), fmt))
    return np.where(finite, q, mag)


def round_array(
    x: npt.ArrayLike, fmt: str | FloatFormat, mode: str = "nearest_even"
) -> npt.NDArray[np.float64]:
    """Vectorised twin of :func:`round_to_format` for float arrays: returns a float64 ndarray.

    The same rule (quantum ``2**(E - p + 1)``, integer rounding of ``x / q`` by ``numpy.rint`` (ties to
    even), ``trunc`` or ``ceil``) carried out in float64, which is exact here: ``x / q`` and ``m * q``
    are scalings by powers of two of numbers with at most 53 significant bits. Signed zeros keep their
    sign. Requires ``p <= 53`` and a format whose range fits in float64. Agrees bit for bit with
    :func:`round_to_format` on every float64 input (tests/theory/test_rounding_oracles.py).
    """
    fmt = get_format(fmt)
    _check_mode(mode)
    if fmt.p > 53 or fmt.emax > 1023 or fmt.emin - fmt.p + 1 < -1074:
        raise ValueError(f"fmt: round_array needs a format within float64, got {fmt!r}")
    xa = np.asarray(x)
    if xa.dtype.kind != "f":
        raise TypeError(f"x: expected a floating-point array, got dtype {xa.dtype}")
    xa = xa.astype(np.float64)
    mag = np.abs(xa)
    finite = np.isfinite(xa)
    safe = np.where(finite & (mag > 0), mag, 1.0)
    qe = _quantum_exponent_array(safe, fmt)
    scaled = np.ldexp(safe, -qe)
    negative = np.signbit(xa)
    if mode == "nearest_even":
        m = np.rint(scaled)
        toward = np.zeros(xa.shape, dtype=bool)
    elif mode == "toward_zero":
        m = np.trunc(scaled)
        toward = np.ones(xa.shape, dtype=bool)
    else:
        away = ~negative if mode == "up" else negative
        m = np.where(away, np.ceil(scaled), np.trunc(scaled))
        toward = ~away
    with np.errstate(over="ignore"):
        res = np.ldexp(m, qe)
    maxf = float(fmt.max_finite)
    over = res > maxf
    if fmt.infinities:
        over_value = np.where(toward, maxf, np.inf)
    else:
        over_value = np.where(toward, maxf, np.nan)
    res = np.where(over, over_value, res)
    res = np.where(mag == 0, 0.0, res)
    res = np.copysign(res, xa)
    # non-finite inputs
    res = np.where(np.isnan(xa), np.nan, res)
    inf_value = np.inf if fmt.infinities else np.nan
    res = np.where(np.isinf(xa), np.copysign(inf_value, xa), res)
    return res


def torch_scalar(x: float, p: int) -> float:
    """A Python float as torch holds it before storing it in a format of ``p`` significand bits: torch
    converts a float (or a float64 tensor) to fp16/bf16 through fp32, so for p <= 24 the value to round
    is fl32(x) (a double rounding that differs from one rounding where fl32(x) is a midpoint of the
    narrow format); a float64 format stores x itself (docs/bounds.md §13.1)."""
    return float(np.float32(x)) if p <= 24 else float(x)
