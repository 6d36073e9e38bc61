"""Independent rounding oracles for the theory tests: numpy / ml_dtypes casts, not pasa_theory code.

``cast_round(x, name)`` rounds an exact rational to a format using only the library casts:

* the Fraction is converted to the nearest float64 (``Fraction.__float__`` rounds correctly);
* if both float64 neighbours of that float cast to the same value, no real number between them can
  round differently, so that value is the answer;
* otherwise ``x`` is within a float64 ulp of a tie of the target format; the answer is then decided
  exactly: below the midpoint of the two candidates → the lower, above → the upper, on it → the one
  whose bit pattern is even (ties to even).

numpy's float64 → float16 cast rounds correctly; ml_dtypes' float64 casts go through float32 (a double
rounding, checked in test_rounding_oracles.py), so for bf16 and fp8 the float64 value is first
rounded to float32 by numpy, which is exact enough here because the neighbours' test above is then
made in float32 instead.
"""

from __future__ import annotations

from fractions import Fraction

import ml_dtypes
import numpy as np

DTYPES = {
    "fp16": np.float16,
    "bf16": ml_dtypes.bfloat16,
    "fp32": np.float32,
    "fp8_e4m3": ml_dtypes.float8_e4m3fn,
    "fp8_e5m2": ml_dtypes.float8_e5m2,
}
# the float type whose casts to the target are correctly rounded
CARRIER = {
    "fp16": np.float64,
    "fp32": np.float64,
    "bf16": np.float32,
    "fp8_e4m3": np.float32,
    "fp8_e5m2": np.float32,
}
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32}


def _cast(v, name):
    return np.array(v, dtype=CARRIER[name]).astype(DTYPES[name])


def cast_round(x: Fraction, name: str) -> Fraction:
    """Round-to-nearest-even of the exact ``x`` to format ``name`` using only library casts."""
    carrier = CARRIER[name]
    f = carrier(float(x)) if carrier is np.float64 else np.float32(float(x))
    lo = np.nextafter(f, carrier(-np.inf))
    hi = np.nextafter(f, carrier(np.inf))
    r_lo, r_hi = _cast(lo, name), _cast(hi, name)
    if r_lo == r_hi:
        return Fraction(float(r_lo))
    a, b = Fraction(float(r_lo)), Fraction(float(r_hi))
    mid = (a + b) / 2
    if x < mid:
        return a
    if x > mid:
        return b
    uint = _UINT[np.dtype(DTYPES[name]).itemsize]
    bits_a = int(np.array(r_lo).view(uint))
    return a if bits_a % 2 == 0 else b
