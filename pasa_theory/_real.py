"""Exact and certified real numbers for β and the folded scale σ (private helper module).

A :class:`Real` is either an exact rational (``Real.exact`` is a Fraction) or an irrational number known
through rigorous enclosures ``[lo, hi]`` (Fractions) that shrink as more bits are requested; the
enclosures of an expression such as ``"1/sqrt(128)"`` come from mpmath's interval arithmetic
(``mpmath.iv``), with the precision set and restored around every evaluation.

Decisions on irrationals (which value an irrational rounds to, its sign, which side of a cell endpoint
it lies on) are made by refining the enclosure until it no longer straddles the boundary, up to
``MAX_BITS`` bits; past that the number is declared too close to the boundary to decide and a
ValueError is raised. A rational number is never approximated.

Input accepted by :func:`as_real` (``argname`` is used in error messages):

* int, Fraction (any numbers.Rational), float and numpy float scalars: their exact value (a float is its
  binary value: ``0.1`` is ``3602879701896397/2**55``);
* :class:`mpmath.mpf`: its exact binary value; an mpmath interval (``mpmath.mpi``): that enclosure;
* a str: an expression of decimal literals (read exactly: ``"0.1"`` is 1/10), ``+ - * / **``,
  parentheses, ``pi``, ``e``/``E`` and the functions ``sqrt``, ``exp``, ``log``;
* a sympy number (if sympy is loaded): its exact value if rational, else its printed expression.
"""

from __future__ import annotations

import ast
import numbers
import sys
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol, TypeAlias, TypeVar

import mpmath
from mpmath import iv
from mpmath.libmp import finf, fnan, fninf, from_rational, to_rational

from .formats import FloatFormat, exact_value, round_fraction, round_to_format

#: Precision schedule (bits) used to decide questions about irrational numbers.
BITS_SCHEDULE = (64, 128, 256, 512, 1024, 2048, 4096, 8192)
MAX_BITS = BITS_SCHEDULE[-1]


#: The values Real's exact arithmetic combines: Fractions (an exact Real) and Intervals (enclosures).
_Operand = TypeVar("_Operand", Fraction, "Interval")


class _BinOp(Protocol):
    """A binary operation applied alike to two Fractions or to two Intervals."""

    def __call__(self, a: _Operand, b: _Operand, /) -> _Operand: ...


class NeedMorePrecision(Exception):
    """Raised inside an enclosure computation that cannot proceed at the current precision."""


@dataclass(frozen=True)
class Interval:
    """A closed interval ``[lo, hi]`` of rationals with outward-exact arithmetic."""

    lo: Fraction
    hi: Fraction

    @staticmethod
    def point(x: Fraction) -> Interval:
        return Interval(x, x)

    def __add__(self, o: Interval) -> Interval:
        return Interval(self.lo + o.lo, self.hi + o.hi)

    def __sub__(self, o: Interval) -> Interval:
        return Interval(self.lo - o.hi, self.hi - o.lo)

    def __neg__(self) -> Interval:
        return Interval(-self.hi, -self.lo)

    def __mul__(self, o: Interval) -> Interval:
        p = (self.lo * o.lo, self.lo * o.hi, self.hi * o.lo, self.hi * o.hi)
        return Interval(min(p), max(p))

    def __truediv__(self, o: Interval) -> Interval:
        if o.lo <= 0 <= o.hi:
            raise NeedMorePrecision("division by an interval containing 0")
        return self * Interval(1 / o.hi, 1 / o.lo)

    @property
    def mid(self) -> Fraction:
        return (self.lo + self.hi) / 2

    @property
    def width(self) -> Fraction:
        return self.hi - self.lo


#: What Real's arithmetic and comparisons take as the other operand (a float is its exact binary value).
Operand: TypeAlias = "Real | Fraction | int | float"


class Real:
    """An exact rational or a certified irrational real (see the module docstring)."""

    __slots__ = ("_exact", "_enc", "_cache", "text")

    def __init__(self, exact: Fraction | None, enc: Callable[[int], Interval] | None, text: str):
        self._exact = exact
        self._enc = enc
        self._cache: dict[int, Interval] = {}
        self.text = text

    @classmethod
    def rational(cls, x: Fraction | int) -> Real:
        x = Fraction(x)
        return cls(x, None, str(x))

    @property
    def exact(self) -> Fraction | None:
        """The value as a Fraction if it is (known to be) rational, else None."""
        return self._exact

    @property
    def is_rational(self) -> bool:
        return self._exact is not None

    def enclosure(self, bits: int) -> Interval:
        """A rigorous enclosure, of relative width about ``2**-bits`` for a derived irrational."""
        if self._exact is not None:
            return Interval.point(self._exact)
        if bits not in self._cache:
            assert self._enc is not None
            self._cache[bits] = self._enc(bits)
        return self._cache[bits]

    # -- arithmetic (exact when both operands are; an int, Fraction or float operand is its exact value) --
    def _combine(self, other: Operand, op: _BinOp, sym: str, swap: bool = False) -> Real:
        o = other if isinstance(other, Real) else Real.rational(Fraction(other))
        x, y = (o, self) if swap else (self, o)
        if x._exact is not None and y._exact is not None:
            return Real.rational(op(x._exact, y._exact))
        return Real(None, lambda bits: op(x.enclosure(bits), y.enclosure(bits)), f"({x.text}){sym}({y.text})")

    def __add__(self, o: Operand) -> Real:
        return self._combine(o, lambda a, b: a + b, "+")

    def __radd__(self, o: Operand) -> Real:
        return self._combine(o, lambda a, b: a + b, "+", swap=True)

    def __sub__(self, o: Operand) -> Real:
        return self._combine(o, lambda a, b: a - b, "-")

    def __rsub__(self, o: Operand) -> Real:
        return self._combine(o, lambda a, b: a - b, "-", swap=True)

    def __mul__(self, o: Operand) -> Real:
        return self._combine(o, lambda a, b: a * b, "*")

    def __rmul__(self, o: Operand) -> Real:
        return self._combine(o, lambda a, b: a * b, "*", swap=True)

    def __truediv__(self, o: Operand) -> Real:
        return self._combine(o, _div, "/")

    def __rtruediv__(self, o: Operand) -> Real:
        return self._combine(o, _div, "/", swap=True)

    def __neg__(self) -> Real:
        if self._exact is not None:
            return Real.rational(-self._exact)
        return Real(None, lambda bits: -self.enclosure(bits), f"-({self.text})")

    # -- certified decisions ------------------------------------------------------------------------
    def sign(self, what: str = "value") -> int:
        """-1, 0 or 1; for an irrational, refine until the enclosure excludes 0 (ValueError if never)."""
        if self._exact is not None:
            return (self._exact > 0) - (self._exact < 0)
        for bits in BITS_SCHEDULE:
            try:
                iv = self.enclosure(bits)
            except NeedMorePrecision:
                continue
            if iv.lo > 0:
                return 1
            if iv.hi < 0:
                return -1
        raise ValueError(f"{what}: cannot decide the sign of {self.text} with {MAX_BITS} bits")

    def compare(self, other: Operand, what: str = "value") -> int:
        """Sign of ``self - other`` (certified)."""
        return (self - other).sign(what)

    def to_mpf(self, dps: int) -> mpmath.mpf:
        """The value as an mpmath.mpf with ``dps`` significant digits (correctly rounded for rationals;
        within one unit of the last place for irrationals)."""
        with mpmath.workdps(dps):
            if self._exact is not None:
                return mpmath.mpf(self._exact.numerator) / self._exact.denominator
            bits = int(dps * 3.33) + 40
            while True:
                try:
                    iv = self.enclosure(bits)
                    break
                except NeedMorePrecision:
                    bits *= 2
                    if bits > 4 * MAX_BITS:
                        raise ValueError(f"cannot evaluate {self.text} to {dps} digits") from None
            m = iv.mid
            return mpmath.mpf(m.numerator) / m.denominator

    def __float__(self) -> float:
        """The nearest float64 of a rational; of an irrational, the float of its 20-digit value (within one
        unit in the last place)."""
        if self._exact is not None:
            return float(self._exact)
        return float(self.to_mpf(20))

    def __repr__(self) -> str:
        return f"Real({self.text})"

    def __str__(self) -> str:
        return self.text


def _div(a: _Operand, b: _Operand) -> _Operand:
    if isinstance(b, Fraction) and b == 0:
        raise ZeroDivisionError("division by zero")
    return a / b


def round_real(
    x: Real, fmt: FloatFormat, mode: str = "nearest_even", *, what: str = "value"
) -> Fraction | float:
    """Round a :class:`Real` to ``fmt``: exact for rationals; for irrationals the rounding of an
    enclosure whose two ends round to the same value (rounding is monotone), refined up to MAX_BITS."""
    if x.exact is not None:
        return round_to_format(x.exact, fmt, mode)
    for bits in BITS_SCHEDULE:
        try:
            iv = x.enclosure(bits)
        except NeedMorePrecision:
            continue
        r_lo = round_to_format(iv.lo, fmt, mode)
        r_hi = round_to_format(iv.hi, fmt, mode)
        if r_lo == r_hi or (isinstance(r_lo, float) and isinstance(r_hi, float) and r_lo == r_hi):
            return r_lo
    raise ValueError(
        f"{what}: {x.text} lies within 2**-{MAX_BITS} (relative) of a rounding boundary of {fmt.name}; "
        "too close to decide its rounding"
    )


# -- input coercion -------------------------------------------------------------------------------------
#: A user-supplied real number before :func:`as_real` validates it: int, Fraction, float, a numpy floating
#: scalar, mpmath.mpf or mpmath.mpi, a sympy number, an expression str or a Real. Anything else raises
#: TypeError there, so the static type is ``object`` (any input: validated by as_real).
RealInput: TypeAlias = object


def as_real(x: RealInput, argname: str) -> Real:
    """Coerce a user value to a :class:`Real` (see the module docstring); TypeError/ValueError name
    ``argname``."""
    if isinstance(x, Real):
        return x
    if isinstance(x, bool):
        raise TypeError(f"{argname}: expected a real number, got bool {x!r}")
    if isinstance(x, str):
        return parse_real(x, argname)
    mpmath = sys.modules.get("mpmath")
    if mpmath is not None and isinstance(x, mpmath.ctx_iv.ivmpf):
        lo, hi = (Fraction(*_raw_to_rational(t)) for t in x._mpi_)
        iv = Interval(lo, hi)
        if lo == hi:
            return Real.rational(lo)
        return Real(None, lambda bits: iv, str(x))
    sympy = sys.modules.get("sympy")
    if sympy is not None and isinstance(x, sympy.Basic):
        if getattr(x, "is_Rational", False):
            return Real.rational(Fraction(int(x.p), int(x.q)))
        if not getattr(x, "is_real", False):
            raise TypeError(f"{argname}: expected a real sympy number, got {x!r}")
        return parse_real(str(x), argname)
    if isinstance(x, (numbers.Complex,)) and not isinstance(x, numbers.Real):
        raise TypeError(f"{argname}: expected a real number, got complex {x!r}")
    try:
        value = exact_value(x, argname=argname)
    except TypeError:
        raise TypeError(
            f"{argname}: expected an int, Fraction, float, mpmath number or an expression str such as "
            f"'1/sqrt(128)', got {type(x).__name__} {x!r}"
        ) from None
    if isinstance(value, float):
        raise ValueError(f"{argname}: expected a finite number, got {x!r}")
    return Real.rational(value)


def _raw_to_rational(t: tuple[int, int, int, int]) -> tuple[int, int]:
    if t in (finf, fninf, fnan):
        raise ValueError("expression is not finite")
    p, q = to_rational(t)
    return int(p), int(q)


_FUNCTIONS = ("sqrt", "exp", "log")
_CONSTANTS = ("pi", "e", "E")


class _NotRational(Exception):
    pass


def parse_real(text: str, argname: str = "value") -> Real:
    """Parse an expression string into a :class:`Real` (exact if it is rational)."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise ValueError(f"{argname}: cannot parse {text!r} as a real expression") from None
    src = text.strip()
    _validate(tree.body, src, argname, text)
    try:
        return Real(_exact_eval(tree.body, src), None, text)
    except _NotRational:
        pass
    body = tree.body

    def enc(bits: int) -> Interval:
        old = iv.prec
        try:
            iv.prec = bits + 20
            val = _iv_eval(body, src, iv)
            lo, hi = (Fraction(*_raw_to_rational(t)) for t in val._mpi_)
        finally:
            iv.prec = old
        return Interval(lo, hi)

    real = Real(None, enc, text)
    try:
        real.enclosure(BITS_SCHEDULE[0])
    except (ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"{argname}: {text!r} does not evaluate to a finite real ({exc})") from None
    return real


def _validate(node: ast.AST, src: str, argname: str, text: str) -> None:
    ok = True
    if isinstance(node, ast.Constant):
        ok = isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
    elif isinstance(node, ast.Name):
        ok = node.id in _CONSTANTS
    elif isinstance(node, ast.BinOp):
        ok = isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow))
        if ok:
            _validate(node.left, src, argname, text)
            _validate(node.right, src, argname, text)
    elif isinstance(node, ast.UnaryOp):
        ok = isinstance(node.op, (ast.UAdd, ast.USub))
        if ok:
            _validate(node.operand, src, argname, text)
    elif isinstance(node, ast.Call):
        ok = (
            isinstance(node.func, ast.Name)
            and node.func.id in _FUNCTIONS
            and len(node.args) == 1
            and not node.keywords
        )
        if ok:
            _validate(node.args[0], src, argname, text)
    else:
        ok = False
    if not ok:
        raise ValueError(
            f"{argname}: unsupported expression {text!r}; use numbers, + - * / **, parentheses, "
            f"{', '.join(_CONSTANTS)} and {', '.join(f + '()' for f in _FUNCTIONS)}"
        )


def _literal(node: ast.Constant, src: str) -> Fraction:
    seg = ast.get_source_segment(src, node)
    if seg is None:  # pragma: no cover - ast always has positions for parsed source
        return Fraction(str(node.value))
    return Fraction(seg.replace("_", ""))


def _iroot(n: int, k: int) -> int | None:
    """Exact integer k-th root of n >= 0, or None."""
    if n < 0:
        return None
    r = round(n ** (1.0 / k)) if n < 2**1000 else None
    if r is None:
        lo, hi = 0, 1 << (n.bit_length() // k + 1)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if mid**k <= n:
                lo = mid
            else:
                hi = mid - 1
        r = lo
    for cand in (r - 1, r, r + 1):
        if cand >= 0 and cand**k == n:
            return cand
    return None


def _exact_eval(node: ast.AST, src: str) -> Fraction:
    if isinstance(node, ast.Constant):
        return _literal(node, src)
    if isinstance(node, ast.Name):
        raise _NotRational
    if isinstance(node, ast.UnaryOp):
        v = _exact_eval(node.operand, src)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp):
        a = _exact_eval(node.left, src)
        b = _exact_eval(node.right, src)
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
        if isinstance(node.op, ast.Div):
            if b == 0:
                raise ValueError("division by zero")
            return a / b
        # Pow
        if b.denominator == 1:
            if a == 0 and b < 0:
                raise ValueError("0 raised to a negative power")
            if abs(b) > 100000:
                raise _NotRational
            return a ** int(b)
        if a < 0:
            raise ValueError("negative base with a fractional exponent")
        k = b.denominator
        num = _iroot(a.numerator, k)
        den = _iroot(a.denominator, k)
        if num is None or den is None:
            raise _NotRational
        return Fraction(num, den) ** b.numerator
    if isinstance(node, ast.Call):
        arg = _exact_eval(node.args[0], src)
        name = node.func.id  # type: ignore[attr-defined]
        if name == "sqrt":
            if arg < 0:
                raise ValueError("sqrt of a negative number")
            num, den = _iroot(arg.numerator, 2), _iroot(arg.denominator, 2)
            if num is None or den is None:
                raise _NotRational
            return Fraction(num, den)
        if name == "exp" and arg == 0:
            return Fraction(1)
        if name == "log":
            if arg <= 0:
                raise ValueError("log of a non-positive number")
            if arg == 1:
                return Fraction(0)
        raise _NotRational
    raise _NotRational  # pragma: no cover - _validate rejects everything else


def _iv_eval(node: ast.AST, src: str, iv: mpmath.ctx_iv.MPIntervalContext) -> mpmath.ctx_iv.ivmpf:
    try:
        v = _exact_eval(node, src)
        return iv.mpf(v.numerator) / iv.mpf(v.denominator)
    except _NotRational:
        pass
    if isinstance(node, ast.Name):
        return iv.pi if node.id == "pi" else iv.e
    if isinstance(node, ast.UnaryOp):
        v = _iv_eval(node.operand, src, iv)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp):
        a = _iv_eval(node.left, src, iv)
        if isinstance(node.op, ast.Pow):
            try:
                b_exact = _exact_eval(node.right, src)
            except _NotRational:
                b_exact = None
            if b_exact is not None and b_exact.denominator == 1:
                return a ** int(b_exact)
            b = _iv_eval(node.right, src, iv)
            if not a.a > 0:
                raise ValueError("non-positive base with a non-integer exponent")
            return iv.exp(b * iv.log(a))
        b = _iv_eval(node.right, src, iv)
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
        if b.a <= 0 <= b.b:
            raise ValueError("division by an interval containing zero")
        return a / b
    if isinstance(node, ast.Call):
        arg = _iv_eval(node.args[0], src, iv)
        name = node.func.id  # type: ignore[attr-defined]
        if name == "sqrt":
            if arg.b < 0:
                raise ValueError("sqrt of a negative number")
            return iv.sqrt(arg)
        if name == "exp":
            return iv.exp(arg)
        if arg.b <= 0:
            raise ValueError("log of a non-positive number")
        return iv.log(arg)
    raise ValueError("unsupported expression")  # pragma: no cover


# -- generic helpers on Num = Fraction | Real (Fractions take the fast exact path) ----------------------
#: An exact rational (the fast path) or a certified real.
Num: TypeAlias = "Fraction | Real"


def num(x: Real) -> Num:
    """A Real as a plain Fraction when it is rational (fast exact arithmetic), else itself."""
    return x.exact if x.exact is not None else x


def sign(x: Num, what: str = "value") -> int:
    if isinstance(x, Fraction):
        return (x > 0) - (x < 0)
    return x.sign(what)


def cmp(x: Num, y: Num | int, what: str = "value") -> int:
    """Sign of ``x - y`` (exact for Fractions, certified for Reals)."""
    if isinstance(x, Fraction) and isinstance(y, (Fraction, int)):
        return (x > y) - (x < y)
    if not isinstance(x, Real):
        x = Real.rational(x)
    return x.compare(y, what)


def rnd(x: Num, fmt: FloatFormat, mode: str = "nearest_even", what: str = "value") -> Fraction | float:
    """Round a Fraction or a Real to ``fmt``."""
    if isinstance(x, Fraction):
        return round_fraction(x, fmt, mode)
    return round_real(x, fmt, mode, what=what)


def exact_of(x: Num) -> Fraction | None:
    return x if isinstance(x, Fraction) else x.exact


def to_mpf(x: Num, dps: int) -> mpmath.mpf:
    """An mpmath.mpf of ``x`` at ``dps`` digits (correctly rounded for a Fraction)."""
    if isinstance(x, Fraction):
        prec = max(int(dps * 3.3219280948873626) + 4, 10)
        return mpmath.mpf(from_rational(x.numerator, x.denominator, prec, "n"), prec=prec)
    return x.to_mpf(dps)


def as_text(x: Num) -> str:
    return str(x) if isinstance(x, Fraction) else x.text


def check_open_unit(x: Real, argname: str) -> None:
    """ValueError unless ``0 < x < 1`` (certified)."""
    if x.sign(argname) <= 0 or (x - 1).sign(argname) >= 0:
        raise ValueError(f"{argname}: expected a number in the open interval (0, 1), got {x.text}")


def check_positive(x: Real, argname: str) -> None:
    if x.sign(argname) <= 0:
        raise ValueError(f"{argname}: expected a positive number, got {x.text}")


def check_int(n: object, argname: str, minimum: int) -> int:  # any input: validated below
    """A plain int >= minimum (bool and float rejected with TypeError)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{argname}: expected an int, got {type(n).__name__} {n!r}")
    n = int(n)
    if n < minimum:
        raise ValueError(f"{argname}: expected an int >= {minimum}, got {n}")
    return n


__all__ = [
    "Interval",
    "Real",
    "NeedMorePrecision",
    "as_real",
    "parse_real",
    "round_real",
    "check_open_unit",
    "check_positive",
    "check_int",
    "num",
    "sign",
    "cmp",
    "rnd",
    "exact_of",
    "to_mpf",
    "Num",
    "RealInput",
]
