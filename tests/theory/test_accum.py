"""The narrow-accumulator model (pasa_theory._accum, docs/bounds.md §15, docs/beyond.md §5) against a plain
emulation in exact rational arithmetic written here: enclosure, error bound, a-priori constant, moments."""

from __future__ import annotations

import math
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest

from pasa_theory import _accum

MODELS = [("fp16", "nearest"), ("fp16", "zero"), ("fp22", "nearest"), ("fp22", "zero")]
FMT = {"fp16": (11, -14, 15), "fp22": (14, -126, 127)}


def _acc(name: str, mode: str, chunk: int = 16) -> _accum.Accumulator:
    acc = _accum.accumulator_of(SimpleNamespace(mma_acc=name, mma_round=mode, mma_chunk=chunk))
    assert acc is not None
    return acc


def _round_frac(x: Fraction, name: str, mode: str) -> Fraction | float:
    """Round to p bits, exponent ≥ emin (subnormals), nearest-even or toward zero; overflow → inf / max."""
    p, emin, emax = FMT[name]
    if x == 0:
        return Fraction(0)
    s = -1 if x < 0 else 1
    a = abs(x)
    e = math.floor(math.log2(a.numerator) - math.log2(a.denominator))
    while Fraction(2) ** e > a:
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    q = Fraction(2) ** (max(e, emin) - p + 1)
    m = a / q
    fl = math.floor(m)
    if mode == "zero":
        r = fl
    else:
        rest = m - fl
        r = fl + 1 if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and fl % 2 == 1) else fl
    y = r * q
    big = (2 - Fraction(2) ** (1 - p)) * Fraction(2) ** emax
    if y > big:
        return s * math.inf if mode == "nearest" else s * big
    return s * y


def _f32(x: Fraction) -> Fraction:
    return Fraction(float(np.float32(float(x)))) if abs(x) < 2**100 else x  # fp32 sums: exact below


def _emulate(a: np.ndarray, b: np.ndarray, name: str, mode: str, k: int) -> np.ndarray:
    """The accumulator of a·b, element by element in rationals: chunks of k exact products summed exactly
    (fp16 products of ≤ 16 terms fit fp32 here), added to the accumulator, rounded after every chunk."""
    R, d = a.shape
    L = b.shape[1]
    out = np.zeros((R, L))
    for i in range(R):
        for j in range(L):
            acc = Fraction(0)
            for c0 in range(0, d, k):
                t = sum(
                    (Fraction(a[i, c]) * Fraction(b[c, j]) for c in range(c0, min(d, c0 + k))), Fraction(0)
                )
                y = _round_frac(acc + t, name, mode)
                if isinstance(y, float):
                    out[i, j] = y
                    break
                acc = y
            else:
                out[i, j] = float(acc)
    return out


def _fp16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float64)


@pytest.mark.parametrize("name,mode", MODELS)
def test_rounding_matches_rational_rounding_at_ties_edges_and_overflow(name: str, mode: str) -> None:
    acc = _acc(name, mode)
    p, emin, emax = FMT[name]
    big = (2 - 2.0 ** (1 - p)) * 2.0**emax
    q1 = 2.0 ** (1 - p)  # quantum of [1, 2)
    xs = [
        1 + q1 / 2,
        1 + 1.5 * q1,
        1 - q1 / 4,
        2 - q1 / 2,
        -(1 + q1 / 2),
        2.0 ** (emin - p),
        3 * 2.0 ** (emin - p),
    ]
    xs += [2.0 ** (emin - p + 1) * 0.75, big, big * (1 + 2.0 ** (-p - 1)), -big * (1 + 2.0**-p), 0.0]
    got = acc.rnd(np.array(xs))
    for x, g in zip(xs, got, strict=True):
        want = _round_frac(Fraction(x), name, mode)
        assert g == float(want), (name, mode, x, g, float(want))


@pytest.mark.parametrize("name,mode", MODELS)
@pytest.mark.parametrize("d", [16, 40, 128])
def test_enclosure_contains_exact_emulation_and_error_bound_holds(name: str, mode: str, d: int) -> None:
    rng = np.random.default_rng(d + 7 * len(name) + (mode == "zero"))
    acc = _acc(name, mode)
    a = _fp16(rng.uniform(-8, 8, (5, d)) + (6.0 if d == 40 else 0.0))
    b = _fp16(rng.uniform(-8, 8, (d, 4)))
    want = _emulate(a, b, name, mode, 16)
    enc = _accum.matmul_enclosure(a, a, b, b, acc)
    ok = (enc.lo <= want) & (want <= enc.hi)
    assert ok.all(), (want[~ok], enc.lo[~ok], enc.hi[~ok])
    ex = a @ b
    e = np.abs(want - ex)
    assert (e <= enc.err).all(), (e.max(), enc.err[np.argmax(e)])
    # the a-priori constant (Lemma 15.2)
    rel, h = _accum.gamma_acc(d, acc)
    S = np.abs(a) @ np.abs(b)
    assert (e <= rel * S + h).all()
    # an interval operand widens the enclosure but still contains the run of every member
    b2 = _fp16(b + 0.25)
    lo, hi = np.minimum(b, b2), np.maximum(b, b2)
    enc2 = _accum.matmul_enclosure(a, a, lo, hi, acc)
    want2 = _emulate(a, b2, name, mode, 16)
    assert ((enc2.lo <= want) & (want <= enc2.hi) & (enc2.lo <= want2) & (want2 <= enc2.hi)).all()


@pytest.mark.parametrize("mode", ["nearest", "zero"])
def test_fp16_accumulator_ties_and_overflow_threshold(mode: str) -> None:
    """Constructed boundaries: partial sums exactly on rounding ties of the fp16 accumulator (2049 = a tie
    between 2048 and 2050), and partial sums just below and past the overflow threshold 65520."""
    acc = _acc("fp16", mode)
    # 16 products summing to 2049 (a tie), then 16 more adding 1 each chunk
    a = np.ones((1, 48))
    b = np.zeros((48, 3))
    b[:16, 0] = 2049 / 16  # 128.0625: representable in fp16? no → use integers below
    b[:16, 0] = [128] * 15 + [129]  # Σ = 2049
    b[16:32, 0] = [0.0625] * 16  # +1 → 2050 or 2049-rounded + 1
    b[:16, 1] = [4094] * 15 + [4094 + 3]  # 61413, then + 4095 → 65508 (< 65520: RN → 65504)
    b[16:32, 1] = [4095 / 16] * 16
    b[:16, 2] = [4095] * 16  # 65520: the RN overflow threshold (tie to inf)
    b = _fp16(b)
    want = _emulate(a, b, "fp16", mode, 16)
    enc = _accum.matmul_enclosure(a, a, b, b, acc)
    for j in range(3):
        if np.isfinite(want[0, j]) and not enc.overflow[0, j]:
            assert enc.lo[0, j] <= want[0, j] <= enc.hi[0, j]
    # past the largest finite value the accumulator overflows (nearest: inf) or saturates (zero): flagged
    assert enc.overflow[0, 2]
    if mode == "nearest":
        assert want[0, 2] == math.inf
    else:
        assert want[0, 2] == 65504.0


def test_gamma_acc_closed_form_equals_worst_case_recurrence() -> None:
    """Γ and H of Lemma 15.2 against the recurrence of its proof evaluated in rationals (worst case: every
    chunk's relative error at its maximum, all mass in the first chunk)."""
    for name, mode in MODELS:
        acc = _acc(name, mode)
        for d in (16, 40, 128, 256):
            m = acc.steps(d)
            beta = Fraction(2) ** -24 + Fraction(acc.eps) * (1 + Fraction(2) ** -24)
            g = Fraction(16) * Fraction(2) ** -24 / (1 - 16 * Fraction(2) ** -24)
            E = Fraction(0)
            for c in range(m):
                E = (1 + beta) * E + beta + (g * (1 + beta) if c == 0 else 0)
            rel, _ = _accum.gamma_acc(d, acc)
            assert float(E) <= rel <= float(E) * (1 + 2.0**-28), (name, mode, d, float(E), rel)


def test_sympy_checks() -> None:
    assert all(_accum.sympy_checks().values())


@pytest.mark.parametrize("name,mode", MODELS)
def test_moments_match_emulated_errors(name: str, mode: str) -> None:
    """The estimate's mean and variance (docs/beyond.md §5.3) against the exact accumulator on random
    products: RMS within 15 %, and toward zero the mean (the bias) within 25 % where it dominates
    (operands of one sign)."""
    rng = np.random.default_rng(3)
    acc = _acc(name, mode)
    for pos in (False, True):
        a = _fp16(rng.uniform(0 if pos else -4, 4, (40, 128)))
        b = _fp16(rng.uniform(0 if pos else -4, 4, (128, 40)))
        enc = _accum.matmul_enclosure(a, a, b, b, acc)  # pinned operands: the run itself
        run = 0.5 * (enc.lo + enc.hi)
        e = run - a @ b
        mean, var, _ = _accum.matmul_moments(a, b, acc)
        rms_pred = math.sqrt(float((var + mean**2).mean()))
        rms = math.sqrt(float((e**2).mean()))
        assert 0.85 < rms / rms_pred < 1.15, (pos, rms, rms_pred)
        if mode == "zero" and pos:
            assert 0.75 < e.mean() / mean.mean() < 1.25, (e.mean(), mean.mean())
