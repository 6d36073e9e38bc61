"""The matrix unit's narrow accumulation models (``mma_acc``, ``mma_round``, ``mma_chunk``; docs/beyond.md §1).

Expected values come from an independent route: a rounding written here with exact rational arithmetic
(:func:`_round_fraction`), a plain per-element loop over chunks in exact arithmetic, and hand-computed
constructed cases. The default (``"wide"``) keeps every preset bit-identical (tests/test_digest.py,
tests/npu/test_kernel_bitexact.py).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

import pasa_theory as pt
from pasa_npu import PRESETS, Precision, kernel
from pasa_npu.precision import round_accumulator, round_significand
from pasa_theory.schema import MMA_FORMATS, PrecisionSpec

FORMATS = {"fp16": (11, -14, 15), "fp22": (14, -126, 127)}


def _round_fraction(x: float, p: int, emin: int, emax: int, mode: str) -> float:
    """x rounded to (p, emin, emax) in exact rational arithmetic: the reference of these tests."""
    if not math.isfinite(x) or x == 0:
        return x
    f = Fraction(x)
    sign = -1 if f < 0 else 1
    a = abs(f)
    e = a.numerator.bit_length() - a.denominator.bit_length()  # 2^e <= a < 2^(e+2)
    while Fraction(2) ** e > a:
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    q = Fraction(2) ** (max(e, emin) - p + 1)  # the quantum at a
    n, rem = divmod(a, q)
    if mode == "nearest" and (rem > q / 2 or (rem == q / 2 and n % 2 == 1)):
        n += 1
    r = n * q
    big = (2 - Fraction(2) ** (1 - p)) * Fraction(2) ** emax
    if r > big:
        return sign * (math.inf if mode == "nearest" else float(big))
    return sign * float(r)


def _boundary_values(p: int, emin: int, emax: int) -> list[float]:
    """Ties, their float64 neighbours, binade edges, the largest finite value and past it, subnormals."""
    vals: list[float] = []
    for e in (emin - 3, emin - 1, emin, emin + 1, -1, 0, 1, 5, emax - 1, emax):
        q = 2.0 ** (max(e, emin) - p + 1)
        base = 2.0**e if e >= emin else 0.0
        for m in (0, 1, 2, 3, 2 ** (p - 1) - 1):
            for half in (0.5, 1.0):
                t = base + (m + half) * q  # a tie (half = 0.5) or a representable value
                if not math.isfinite(t):
                    continue
                vals += [t, math.nextafter(t, math.inf), math.nextafter(t, -math.inf)]
        vals += [2.0**e, math.nextafter(2.0**e, 0.0), 2.0 ** (e + 1) - q / 2, 2.0 ** (e + 1) - q / 4]
    big = (2 - 2.0 ** (1 - p)) * 2.0**emax
    half_q = 2.0 ** (emax - p)  # half a quantum at the top
    vals += [big, big + half_q / 2, big + half_q, math.nextafter(big + half_q, 0.0), 2.0 ** (emax + 1)]
    vals = [v for v in vals if math.isfinite(v)]
    return vals + [-v for v in vals] + [0.0, -0.0, math.inf, -math.inf]


@pytest.mark.parametrize("fmt", ["fp16", "fp22"])
@pytest.mark.parametrize("mode", ["nearest", "zero"])
def test_round_significand_matches_exact_rounding(fmt, mode):
    p, emin, emax = FORMATS[fmt]
    assert MMA_FORMATS[fmt] == (p, emin, emax)
    vals = _boundary_values(p, emin, emax)
    got = round_significand(torch.tensor(vals, dtype=torch.float64), p, emin, emax, mode).tolist()
    want = [_round_fraction(v, p, emin, emax, mode) for v in vals]
    bad = [(v, g, w) for v, g, w in zip(vals, got, want, strict=True) if not (g == w or (g != g and w != w))]
    assert not bad, f"{len(bad)} of {len(vals)} differ; first (x, got, want): {bad[:3]}"
    signs = [math.copysign(1, g) for g in got]
    assert signs == [math.copysign(1, w) for w in want]  # -0 stays -0


def test_round_significand_nan_and_checks():
    x = torch.tensor([math.nan], dtype=torch.float64)
    assert math.isnan(round_significand(x, 11, -14, 15).item())
    with pytest.raises(TypeError, match="float64"):
        round_significand(torch.zeros(2), 11, -14, 15)
    with pytest.raises(ValueError, match="mode"):
        round_significand(torch.zeros(2, dtype=torch.float64), 11, -14, 15, "up")


@pytest.mark.parametrize(
    ("fmt", "mode"), [("fp16", "nearest"), ("fp16", "zero"), ("fp22", "nearest"), ("fp22", "zero")]
)
def test_round_accumulator_fast_paths_are_exact(fmt, mode):
    """float32 input (the fast paths: bit pattern for fp22, torch's conversion for fp16 nearest) gives
    the exact rounding of the Fraction reference, on boundary values and on values spread over binades."""
    p, emin, emax = FORMATS[fmt]
    prec = PRESETS["npu_fp16"].replace(mma_acc=fmt, mma_round=mode)
    rng = np.random.default_rng(11)
    spread = rng.standard_normal(4000) * np.exp2(rng.integers(-30, 30, 4000))
    vals32 = [v for v in _boundary_values(p, emin, emax) if abs(v) < 3.4e38 or math.isinf(v)]
    x = torch.tensor(vals32 + spread.tolist(), dtype=torch.float32)
    got = round_accumulator(x, prec)
    assert got.dtype == torch.float32
    want = [_round_fraction(v, p, emin, emax, mode) for v in x.double().tolist()]
    bad = [(v, g, w) for v, g, w in zip(x.tolist(), got.tolist(), want, strict=True) if g != w]
    assert not bad, f"{len(bad)} of {len(want)} differ; first (x, got, want): {bad[:3]}"
    assert math.isnan(round_accumulator(torch.tensor([math.nan]), prec).item())


def _chunked_reference(a: np.ndarray, b: np.ndarray, k: int, fmt: str, mode: str) -> np.ndarray:
    """A plain loop: every output element, chunk sums exact (Fraction), the running sum rounded by
    :func:`_round_fraction` after every chunk."""
    p, emin, emax = FORMATS[fmt]
    out = np.empty((a.shape[0], b.shape[1]))
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            acc = 0.0
            for c0 in range(0, a.shape[1], k):
                part = sum(Fraction(a[i, t]) * Fraction(b[t, j]) for t in range(c0, min(c0 + k, a.shape[1])))
                acc = _round_fraction(float(Fraction(acc) + part), p, emin, emax, mode)
            out[i, j] = acc
    return out


@pytest.mark.parametrize(
    ("fmt", "mode", "k"),
    [("fp16", "nearest", 16), ("fp16", "zero", 4), ("fp22", "zero", 16), ("fp22", "nearest", 5)],
)
def test_mma_equals_plain_chunked_loop(fmt, mode, k):
    """On fp16 operands on a 2^-6 grid (products and chunk sums exact in fp32), the kernel's matrix unit
    equals the plain exact loop bit for bit, ragged last chunk included."""
    rng = np.random.default_rng(5)
    a = rng.integers(-4000, 4000, (6, 37)) / 64.0
    b = rng.integers(-2000, 2000, (37, 5)) / 64.0
    prec = PRESETS["npu_fp16"].replace(mma_acc=fmt, mma_round=mode, mma_chunk=k)
    got = kernel._mma(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32), prec)
    want = _chunked_reference(a, b, k, fmt, mode)
    diff = np.abs(got.double().numpy() - want)
    assert diff.max() == 0, (
        f"max |diff| {diff.max()}, mean {diff.mean()}, worst at {np.unravel_index(diff.argmax(), diff.shape)}"
    )
    wide = a @ b  # exact here: the narrow accumulator really rounded
    assert np.abs(want - wide).max() > 0


def test_mma_constructed_ties():
    """2048 + 1 + 1 + 1 + 1 in an fp16 accumulator (quantum 2 at 2048): each +1 is a tie, kept at the
    even 2048 when rounded after every product; exact when the whole sum is one chunk."""
    a = torch.tensor([[2048.0, 1.0, 1.0, 1.0, 1.0]])
    b = torch.ones(5, 1)
    base = PRESETS["npu_fp16"].replace(mma_acc="fp16")
    assert kernel._mma(a, b, base.replace(mma_chunk=1)).item() == 2048.0
    assert kernel._mma(a, b, base.replace(mma_chunk=2)).item() == 2052.0  # 2049 -> 2048, 2050, 2051 -> 2052
    assert kernel._mma(a, b, base.replace(mma_chunk=3)).item() == 2052.0  # 2050, then 2052
    assert kernel._mma(a, b, base.replace(mma_chunk=5)).item() == 2052.0
    assert kernel._mma(a, b, base.replace(mma_round="zero", mma_chunk=2)).item() == 2050.0  # 2048, 2050, 2050
    # fp22 truncation: 2^14 + 1 per product drops the 1 (quantum 2 at 2^14); 2^14 + 3 keeps 2^14 + 2
    a22 = torch.tensor([[16384.0, 1.0, 3.0]])
    fp22 = base.replace(mma_acc="fp22", mma_round="zero", mma_chunk=1)
    assert kernel._mma(a22, torch.ones(3, 1), fp22).item() == 16386.0
    wide = base.replace(mma_acc="wide")
    assert kernel._mma(a22, torch.ones(3, 1), wide).item() == 16388.0


def test_fields_validated_and_default_wide():
    for name, prec in PRESETS.items():
        assert (prec.mma_acc, prec.mma_round, prec.mma_chunk) == ("wide", "nearest", 16), name
    with pytest.raises(ValueError, match="mma_acc"):
        PRESETS["npu_fp16"].replace(mma_acc="fp8")
    with pytest.raises(ValueError, match="mma_round"):
        PRESETS["npu_fp16"].replace(mma_round="up")
    with pytest.raises(ValueError, match="mma_chunk"):
        PRESETS["npu_fp16"].replace(mma_chunk=0)
    with pytest.raises(TypeError, match="mma_chunk"):
        PrecisionSpec("x", "fp16", "fp32", "fp16", "fp16", mma_chunk=2.0)
    assert PRESETS["npu_fp16"].replace(mma_chunk=np.int64(8)).mma_chunk == 8
    assert isinstance(Precision("x", torch.float16, torch.float32, torch.float16, torch.float16).mma_acc, str)


def test_error_model_refuses_narrow_accumulators_it_does_not_cover():
    """The narrow accumulators are modelled for npu_fp16 PASA and the baselines (docs/bounds.md §15,
    tests/npu/test_narrow_acc_bounds.py) and estimated with the reference in the accumulator
    (docs/error-model.md §10.10), not with key-mean offsets."""
    q = np.ones((1, 1, 4, 8))
    prec = PRESETS["fp16_keymean"].replace(mma_acc="fp16")
    with pytest.raises(ValueError, match="mma_acc"):
        pt.predict("pasa", q, q, q, precision=prec, block_kv=4)
    p = pt.predict("pasa", q, q, q, precision=PRESETS["fp16_accurate"].replace(mma_acc="fp16"), block_kv=4)
    assert p.rmse_estimate == 0.0  # constant V: exact attention, and so is every simulated rounding
    p = pt.predict("pasa", q, q, q, precision=PRESETS["npu_fp16"].replace(mma_acc="fp16"), block_kv=4)
    assert math.isfinite(p.max_abs_bound)


def test_fp16_accumulator_in_the_kernel_reaches_the_scores():
    """flash attention with an fp16 accumulator and an fp32 vector unit: the scores of one query row are
    the fp16-accumulated products (checked through the output of a one-key-block softmax against a
    float64 softmax of the hand-accumulated scores)."""
    rng = np.random.default_rng(3)
    q = torch.tensor(rng.integers(-64, 64, (1, 1, 3, 32)) / 8.0, dtype=torch.float16)
    k = torch.tensor(rng.integers(-64, 64, (1, 1, 8, 32)) / 8.0, dtype=torch.float16)
    v = torch.tensor(rng.standard_normal((1, 1, 8, 4)), dtype=torch.float16)
    prec = PRESETS["fp64"].replace(mma_acc="fp16", mma_chunk=16, matmul_in="fp16")
    out = kernel.flash_attention(q, k, v, scale=0.125, block_kv=8, precision=prec, out_dtype=torch.float64)
    s = (
        _chunked_reference(q[0, 0].double().numpy(), k[0, 0].double().numpy().T, 16, "fp16", "nearest")
        * 0.125
    )
    pv = np.exp(s - s.max(axis=1, keepdims=True))
    vv = v[0, 0].double().numpy()
    # P·V accumulated in fp16 too: per output element, chunk of 16 >= 8 keys: one rounding
    num = np.array([[_round_fraction(float(x), 11, -14, 15, "nearest") for x in row] for row in pv @ vv])
    want = num / pv.sum(axis=1, keepdims=True)
    diff = np.abs(out[0, 0].numpy() - want)
    assert diff.max() < 1e-12, f"max |diff| {diff.max()}"
