"""Precision policies: where the tiled attention kernels round, and to what.

A :class:`Precision` is a frozen description of one numerical regime. The single tiled kernel in
:mod:`pasa_npu.kernel` reads it at every step; there is no copy of the kernel per preset.

The model of the hardware (the Ascend "Cube" matrix unit and the vector unit) is:

* matrix products take operands in ``matmul_in``, accumulate in ``matmul_acc`` and round the
  result once to ``matmul_out`` (fp16 in / fp32 accumulate / fp16 out on the Cube);
* every element-wise operation of the vector unit is computed exactly and rounded once to
  ``vector`` (torch's CPU half kernels do exactly this: they compute in fp32 and round, which equals
  a correctly rounded fp16 operation for +, -, *, / because fp32 has p' = 24 >= 2*11 + 2 bits);
  ``exp`` is likewise rounded once from an fp32 result;
* scalar constants (the softmax scale when applied on the vector unit, the recovery coefficient c,
  the running-mean weights 1/(j+1), j/(j+1)) are rounded to the dtype they are stored in;
* row reductions (block row mean, block row sum) either accumulate in at least fp32 and round
  once (``reduce="acc"``), or add pairwise in the vector dtype, rounding every partial sum
  (``reduce="pairwise"``).

The schema (fields, allowed values, defaults, validation, presets) is defined once, torch-free, by
:class:`pasa_theory.schema.PrecisionSpec`; a :class:`Precision` is its view with formats as torch
dtypes. Field meanings: docs/precision.md §3. Presets (see :data:`PRESETS`; docs/precision.md §4):

========== ================================================================================
name       meaning
========== ================================================================================
npu_fp16   the paper's fully fp16 pipeline with this package's corrections: β and the
           recovery coefficient solved by :mod:`pasa_theory` for the matrix that is really
           rounded (softmax scale folded into M), power-of-two renormalised O and ℓ
           accumulators (overflow-free, bit-for-bit the unnormalised values otherwise), tail
           blocks padded with real keys.
script     the public reference script's numerics, defects included: β = 0.984497 pinned,
           M and c computed with the script's fp32 arithmetic, c = fl16(β/(1−β)), raw fp16
           O and ℓ accumulators, its KV padding rule.
fp16_strict npu_fp16 with row reductions added pairwise in fp16 (no wide accumulator at all).
fp16_keymean npu_fp16 with block offsets taken from the keys' block means by one extra score
           column (no β/(1−β) amplification of the K̃ rounding; same shift of the scores).
hybrid     fp16 matrix unit, fp32 vector unit (the reference script's ``vec_tp=float32``).
bf16       every fp16 of npu_fp16 replaced by bf16.
fp32       everything in fp32 (an "upcast" reference in the style of FlashAttention's tests).
fp64       everything in fp64; used to check that every method is exact attention.
fp16_accurate fully fp16 (matrix unit fp16 in / fp32 accumulate / fp16 out, vector unit fp16)
           with the reference in the accumulator: the stale row maximum subtracted inside the
           fp32 accumulator (two augmented columns), τ applied at the conversion, moved
           references recomputed, P·V and ℓ summed in the accumulator, V centred
           (docs/precision.md §6). No shifting matrix.
========== ================================================================================
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from pasa_theory import schema
from pasa_theory.schema import (
    Accum,
    Coef,
    FormatName,
    KVTail,
    MmaAcc,
    MmaRound,
    Offset,
    PrecisionSpec,
    PseudoAverage,
    PVAccum,
    Recovery,
    Reduce,
    RefMove,
    RowSum,
    ScalePlacement,
    ScoreRef,
    Setup,
    VCenter,
)

__all__ = [
    "Precision",
    "PRESETS",
    "get_precision",
    "precision_from_fields",
    "theory_format_name",
    "DTYPES",
    "round_significand",
    "round_accumulator",
]

#: Format name → torch dtype (the inverse of :data:`pasa_theory.schema.DTYPE_FORMATS` on torch's dtypes).
DTYPES: dict[str, torch.dtype] = {
    fmt: getattr(torch, dtype_name) for dtype_name, fmt in schema.DTYPE_FORMATS.items()
}
_FLOAT_DTYPES = tuple(DTYPES.values())


def theory_format_name(dtype: torch.dtype) -> FormatName:
    """Name of the :mod:`pasa_theory` format that models the torch ``dtype``."""
    if dtype not in _FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {list(_FLOAT_DTYPES)}, got {dtype}")
    return schema.format_name(dtype, "dtype")


def _format_of(value: Any, field: str) -> Any:
    """Format fields accept torch dtypes (and names); anything else is refused with the field's name."""
    if isinstance(value, torch.dtype):
        if value not in _FLOAT_DTYPES:
            raise ValueError(f"Precision.{field} must be one of {list(_FLOAT_DTYPES)}, got {value!r}")
        return schema.format_name(value, f"Precision.{field}")
    return value


class Precision:
    """Where the tiled kernels round, and to what: a :class:`pasa_theory.schema.PrecisionSpec` seen with
    torch dtypes. Immutable; derive variants with :meth:`replace`.

    Constructed like the spec (``Precision("x", torch.float16, torch.float32, torch.float16,
    torch.float16, reduce="pairwise")``), or from one with :meth:`from_spec`. Format fields
    (``matmul_in``, ``matmul_acc``, ``matmul_out``, ``vector``, ``coef_dtype``) read as torch dtypes,
    every other field as in the spec. The field formerly called ``reference`` is ``offset``.
    """

    __slots__ = ("spec",)
    spec: PrecisionSpec

    def __init__(
        self, name: str, matmul_in: Any, matmul_acc: Any, matmul_out: Any, vector: Any, **fields: Any
    ):
        values = dict(
            name=name, matmul_in=matmul_in, matmul_acc=matmul_acc, matmul_out=matmul_out, vector=vector
        )
        values.update(fields)
        values = {k: (_format_of(v, k) if k in schema.FORMAT_FIELDS else v) for k, v in values.items()}
        object.__setattr__(self, "spec", PrecisionSpec.from_fields(values))

    @classmethod
    def from_spec(cls, spec: PrecisionSpec) -> Precision:
        """The torch view of ``spec``."""
        if not isinstance(spec, PrecisionSpec):
            raise TypeError(f"spec must be a PrecisionSpec, got {type(spec).__name__}")
        self = cls.__new__(cls)
        object.__setattr__(self, "spec", spec)
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Precision is immutable; use .replace(...)")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Precision) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec)

    def __repr__(self) -> str:
        return "Precision(" + ", ".join(f"{k}={v!r}" for k, v in self.fields().items()) + ")"

    # -- fields (formats as torch dtypes) ------------------------------------------------------------------
    name = property(lambda self: self.spec.name, doc="Name shown in tables.")
    matmul_in = property(lambda self: DTYPES[self.spec.matmul_in], doc="Operands of the matrix unit.")
    matmul_acc = property(
        lambda self: DTYPES[self.spec.matmul_acc], doc="Accumulation inside the matrix unit."
    )
    matmul_out = property(
        lambda self: DTYPES[self.spec.matmul_out], doc="A matrix-unit result is rounded to it once."
    )
    vector = property(lambda self: DTYPES[self.spec.vector], doc="Every vector-unit (element-wise) result.")
    coef_dtype = property(
        lambda self: DTYPES[self.spec.coef_dtype], doc="dtype the recovery coefficient c is stored in."
    )

    @property
    def reduce(self) -> Reduce:
        return self.spec.reduce

    @property
    def scale(self) -> ScalePlacement:
        return self.spec.scale

    @property
    def coef(self) -> Coef:
        return self.spec.coef

    @property
    def pseudo_average(self) -> PseudoAverage:
        return self.spec.pseudo_average

    @property
    def offset(self) -> Offset:
        return self.spec.offset

    @property
    def reference(self) -> Offset:
        """Former name of :attr:`offset` (deprecated)."""
        warnings.warn("Precision.reference is now called Precision.offset", DeprecationWarning, stacklevel=2)
        return self.spec.offset

    @property
    def recenter_at(self) -> float:
        return self.spec.recenter_at

    @property
    def recovery(self) -> Recovery:
        return self.spec.recovery

    @property
    def setup(self) -> Setup:
        return self.spec.setup

    @property
    def accum(self) -> Accum:
        return self.spec.accum

    @property
    def kv_tail(self) -> KVTail:
        return self.spec.kv_tail

    @property
    def beta(self) -> float | None:
        return self.spec.beta

    @property
    def beta_format(self) -> FormatName | None:
        return self.spec.beta_format

    @property
    def mma_acc(self) -> MmaAcc:
        return self.spec.mma_acc

    @property
    def mma_round(self) -> MmaRound:
        return self.spec.mma_round

    @property
    def mma_chunk(self) -> int:
        return self.spec.mma_chunk

    @property
    def score_ref(self) -> ScoreRef:
        return self.spec.score_ref

    @property
    def ref_move(self) -> RefMove:
        return self.spec.ref_move

    @property
    def ref_move_at(self) -> float:
        return self.spec.ref_move_at

    @property
    def pv_accum(self) -> PVAccum:
        return self.spec.pv_accum

    @property
    def row_sum(self) -> RowSum:
        return self.spec.row_sum

    @property
    def v_center(self) -> VCenter:
        return self.spec.v_center

    def fields(self) -> dict[str, Any]:
        """Field values by name, formats as torch dtypes."""
        return {f: getattr(self, f) for f in schema.FIELDS}

    def replace(self, **changes: Any) -> Precision:
        """A copy with ``changes`` applied (validated; format fields take torch dtypes or names)."""
        changes = {k: (_format_of(v, k) if k in schema.FORMAT_FIELDS else v) for k, v in changes.items()}
        return Precision.from_spec(self.spec.replace(**changes))

    @property
    def reduce_dtype(self) -> torch.dtype:
        """Accumulator dtype of ``reduce="acc"`` reductions (at least fp32)."""
        return torch.float64 if self.vector == torch.float64 else torch.float32

    def describe(self) -> str:
        """One line per field, for ``--help`` texts and notebooks."""
        rows = []
        for f, value in self.fields().items():
            if isinstance(value, torch.dtype):
                value = str(value).replace("torch.", "")
            rows.append(f"{f:>14} = {value}")
        return "\n".join(rows)


def precision_from_fields(fields: Mapping[str, Any]) -> Precision:
    """A :class:`Precision` from field values with formats written as names (``"fp16"``, …), the
    form :mod:`pasa_theory.policies` uses."""
    return Precision.from_spec(PrecisionSpec.from_fields(fields))


class _Presets(Mapping[str, Precision]):
    """The presets by name; a renamed preset (``"reference"`` → ``"script"``) still resolves, with a
    DeprecationWarning."""

    def __init__(self) -> None:
        self._items = {name: Precision.from_spec(spec) for name, spec in schema.PRESET_SPECS.items()}

    def __getitem__(self, name: str) -> Precision:
        if name not in self._items and isinstance(name, str):
            try:
                name = schema.preset_name(name)
            except ValueError:
                raise KeyError(name) from None
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"PRESETS({sorted(self._items)})"


#: The presets, views of :data:`pasa_theory.schema.PRESET_SPECS`.
PRESETS: Mapping[str, Precision] = _Presets()


def get_precision(precision: str | Precision) -> Precision:
    """Resolve a preset name or pass a :class:`Precision` through."""
    if isinstance(precision, Precision):
        return precision
    if isinstance(precision, str):
        return PRESETS[schema.preset_name(precision)]
    raise TypeError(f"precision must be a str or Precision, got {type(precision).__name__}")


# -- the matrix unit's narrow accumulators (docs/beyond.md §1) --------------------------------------------


def round_significand(x: torch.Tensor, p: int, emin: int, emax: int, mode: str = "nearest") -> torch.Tensor:
    """``x`` (float64) rounded to a binary format with ``p`` significand bits (the implicit bit included),
    exponent range [``emin``, ``emax``] and gradual underflow, computed exactly in float64.

    ``mode="nearest"``: to nearest, ties to even; a result beyond the largest finite value
    (2 − 2^(1−p))·2^emax is ±inf. ``mode="zero"``: toward zero (truncation); beyond the largest finite
    value it saturates there. ±0, ±inf and NaN pass through. With p = 11, emin = −14, emax = 15 this is
    IEEE binary16; with p = 14, emin = −126, emax = 127 the "FP22" accumulator (e8m13).

    Exact because every step is: frexp, scaling by a power of two, ``round``/``trunc`` of a float64
    of at most 53 bits, and scaling back.
    """
    if x.dtype != torch.float64:
        raise TypeError(f"x must be a float64 tensor, got {x.dtype}")
    if mode not in ("nearest", "zero"):
        raise ValueError(f"mode must be 'nearest' or 'zero', got {mode!r}")
    if not (1 <= p <= 52 and -1022 + p <= emin < emax <= 1023 - p):
        raise ValueError(f"format (p={p}, emin={emin}, emax={emax}) is not inside float64's")
    _, e = torch.frexp(x)  # x = m·2^e, 0.5 <= |m| < 1: the exponent of x is e − 1
    quantum_exp = torch.clamp(e.to(torch.int64) - 1, min=emin) - (p - 1)
    # x / quantum and back, by exact powers of two built from their bits (|exponent| <= 1022 here)
    scaled = x * _pow2(torch.clamp(-quantum_exp, max=1022))
    r = torch.round(scaled) if mode == "nearest" else torch.trunc(scaled)
    y = r * _pow2(quantum_exp)
    big = (2.0 - 2.0 ** (1 - p)) * 2.0**emax
    over = y.abs() > big
    if bool(over.any()):
        limit = torch.full_like(y, math.inf if mode == "nearest" else big)
        y = torch.where(over, torch.copysign(limit, y), y)
    finite = torch.isfinite(x)
    return torch.where(finite, y, x)


def _pow2(k: torch.Tensor) -> torch.Tensor:
    """2^k as float64 for integer k in [−1022, 1023], exactly (the IEEE bit pattern)."""
    return ((k + 1023) << 52).view(torch.float64)


def round_accumulator(x: torch.Tensor, prec: Precision) -> torch.Tensor:
    """``x`` (float32 or float64) rounded to the accumulator format of ``prec.mma_acc`` with
    ``prec.mma_round``, in ``x``'s dtype: :func:`round_significand` with the format constants of
    :data:`pasa_theory.schema.MMA_FORMATS`.

    Two exact fast paths for float32 input give the same bits (tests/npu/test_mma.py): "fp22" shares
    float32's exponent range, so rounding is done on the bit pattern (drop the 10 low mantissa bits; for
    "nearest" add half a quantum, plus the kept last bit for ties to even, first, letting the carry move
    the exponent, to inf at the top); "fp16" to nearest is torch's float32 → float16 conversion
    (round to nearest even, overflow to inf, gradual underflow).
    """
    fmt, mode = prec.mma_acc, prec.mma_round
    if x.dtype == torch.float32 and fmt == "fp22":
        bits = x.view(torch.int32)
        if mode == "nearest":
            bits = bits + (0x1FF + ((bits >> 10) & 1))
        y = (bits & ~0x3FF).view(torch.float32)
        return torch.where(torch.isnan(x), x, y)
    if x.dtype == torch.float32 and fmt == "fp16" and mode == "nearest":
        return x.to(torch.float16).to(torch.float32)
    p, emin, emax = schema.MMA_FORMATS[fmt]
    return round_significand(x.to(torch.float64), p, emin, emax, mode).to(x.dtype)
