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

Presets (see :data:`PRESETS`):

========== ================================================================================
name       meaning
========== ================================================================================
npu_fp16   the paper's fully fp16 pipeline with this package's corrections: β and the
           recovery coefficient solved by :mod:`pasa_theory` for the matrix that is really
           rounded (softmax scale folded into M), power-of-two renormalised O and ℓ
           accumulators (overflow-free, bit-for-bit the unnormalised values otherwise), tail
           blocks padded with real keys.
reference  the public reference script's numerics, defects included: β = 0.984497 pinned,
           M and c computed with the script's fp32 arithmetic, c = fl16(β/(1−β)), raw fp16
           O and ℓ accumulators, its KV padding rule.
fp16_strict npu_fp16 with row reductions added pairwise in fp16 (no wide accumulator at all).
fp16_keymean npu_fp16 with block offsets taken from the keys' block means by one extra score
           column (no β/(1−β) amplification of the K̃ rounding; same shift of the scores).
hybrid     fp16 matrix unit, fp32 vector unit (the reference script's ``vec_tp=float32``).
bf16       every fp16 of npu_fp16 replaced by bf16.
fp32       everything in fp32 (an "upcast" reference in the style of FlashAttention's tests).
fp64       everything in fp64; used to check that every method is exact attention.
========== ================================================================================
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch

from pasa_theory.policies import PRESET_FIELDS

__all__ = ["Precision", "PRESETS", "get_precision", "precision_from_fields", "theory_format_name"]

ScalePlacement = Literal["m", "q", "scores"]
Reduce = Literal["acc", "pairwise"]
Coef = Literal["rounded_m", "beta"]
Setup = Literal["exact", "script_fp32"]
Accum = Literal["raw", "pow2"]
PseudoAverage = Literal["rounded", "centered"]
Reference = Literal["running", "lazy"]
Recovery = Literal["pseudo_average", "key_mean"]
KVTail = Literal["wrap", "zero", "reference"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

_THEORY_NAMES = {
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float32: "fp32",
    torch.float64: "fp64",
}


def theory_format_name(dtype: torch.dtype) -> str:
    """Name of the :mod:`pasa_theory` format that models the torch ``dtype``."""
    try:
        return _THEORY_NAMES[dtype]
    except KeyError:
        raise ValueError(f"dtype must be one of {list(_THEORY_NAMES)}, got {dtype}") from None


@dataclass(frozen=True)
class Precision:
    """Where the tiled kernels round, and to what. Immutable; derive variants with :meth:`replace`."""

    #: Name shown in tables.
    name: str
    #: dtype of the operands of the matrix unit (Q, K, V, M, K̃, P are rounded to it).
    matmul_in: torch.dtype
    #: accumulation dtype inside the matrix unit.
    matmul_acc: torch.dtype
    #: dtype a matrix-unit result is rounded to (once).
    matmul_out: torch.dtype
    #: dtype of every vector-unit (element-wise) result.
    vector: torch.dtype
    #: row reductions: ``"acc"`` accumulates in at least fp32 and rounds once to ``vector``;
    #: ``"pairwise"`` adds in a binary tree, rounding every partial sum to ``vector``.
    reduce: Reduce = "acc"
    #: where the softmax scale τ is applied: ``"m"`` folded into the shifting matrix before it is
    #: rounded (the reference script; for methods without a shifting matrix this means the vendor
    #: high-performance arrangement, τ applied to the rounded scores on the vector unit),
    #: ``"q"`` Q pre-scaled on the vector unit, ``"scores"`` τ applied to the rounded scores.
    scale: ScalePlacement = "m"
    #: recovery coefficient c: ``"rounded_m"`` from the matrix actually rounded (κ = 0 before c is
    #: stored, :func:`pasa_theory.recovery_coefficient`), ``"beta"`` c = β/(1−β) (reference script).
    coef: Coef = "rounded_m"
    #: dtype c is stored in.
    coef_dtype: torch.dtype = torch.float16
    #: how the block pseudo-averages enter the recovery: ``"rounded"`` rounds each block mean μ̃_j
    #: to the vector dtype and then forms A and δ_j = c·(μ̃_j − A) (the reference script; the
    #: rounding error of μ̃_j, about u·|μ̃_j|, is amplified by c into every score of the block);
    #: ``"centered"`` takes each block mean relative to the running reference inside the reduction
    #: (accumulator minus reference, rounded once), so only the block's deviation from the reference
    #: is rounded and δ_j is accurate to about u·|δ_j|.
    pseudo_average: PseudoAverage = "centered"
    #: the per-row reference the online statistics are kept relative to (recovery is exact for any
    #: reference): ``"running"`` the running mean of the block pseudo-averages, moved every block (the
    #: reference script; every move rescales O and ℓ by a factor that is not exactly 1, one rounding
    #: of the accumulator per block); ``"lazy"`` held at the first block's pseudo-average and
    #: re-centred on the current block only where |δ_j| would exceed ``recenter_at`` (so O and ℓ
    #: are rescaled only when the maximum moves, as in flash attention).
    reference: Reference = "lazy"
    #: ``reference="lazy"`` re-centres a row when its block offset |δ_j| exceeds this (score units).
    recenter_at: float = 16.0
    #: where the block offsets come from: ``"pseudo_average"`` δ_j = c·(μ_j − A) from the row means
    #: of the shifted scores (PASA's recovery; c = β/(1−β) amplifies the rounding error of K̃ = M·K
    #: along the block-mean direction, κ₂(M) = 1/(1−β)), or ``"key_mean"`` δ_j = q·(b·n·(k̄_j − k̄_0))
    #: from the block means of the original keys, one extra column of the score product per block
    #: (no amplification; the shift of the scores is unchanged). ``key_mean`` needs ``reference="lazy"``.
    recovery: Recovery = "pseudo_average"
    #: how setup constants (entries of M, c from β) are computed: ``"exact"`` rational arithmetic in
    #: :mod:`pasa_theory` rounded once; ``"script_fp32"`` the reference script's fp32 torch arithmetic.
    setup: Setup = "exact"
    #: O and ℓ accumulators: ``"raw"`` unnormalised (overflow once ℓ or |O| passes the format's max),
    #: ``"pow2"`` renormalised by a power of two after every block (exact scaling, so the result
    #: equals the unnormalised one bit for bit unless a contribution falls below the normal range).
    accum: Accum = "pow2"
    #: how the last, partial KV block is filled up to the block size: ``"wrap"`` with the preceding
    #: real keys (cyclically for sequences shorter than a block), ``"zero"`` with zero rows,
    #: ``"reference"`` the script's rule (preceding rows if S2 >= n, else zeros). Padded columns are
    #: always masked to -inf, so they get weight exactly 0; only the block mean sees them.
    kv_tail: KVTail = "wrap"
    #: pinned β for this preset; ``None`` means the theory's optimal β.
    beta: float | None = None
    #: the format whose optimal β is the default (``None``: the ``matmul_in`` format). The fp32/fp64
    #: presets use fp16's: they check exactness of the fp16 algorithm, and their own formats have
    #: far too many rounding cells to enumerate.
    beta_format: str | None = None

    def __post_init__(self) -> None:
        for field in ("matmul_in", "matmul_acc", "matmul_out", "vector", "coef_dtype"):
            value = getattr(self, field)
            if value not in _FLOAT_DTYPES:
                raise ValueError(f"Precision.{field} must be one of {_FLOAT_DTYPES}, got {value!r}")
        choices = {
            "reduce": ("acc", "pairwise"),
            "scale": ("m", "q", "scores"),
            "coef": ("rounded_m", "beta"),
            "setup": ("exact", "script_fp32"),
            "accum": ("raw", "pow2"),
            "pseudo_average": ("rounded", "centered"),
            "reference": ("running", "lazy"),
            "recovery": ("pseudo_average", "key_mean"),
            "kv_tail": ("wrap", "zero", "reference"),
        }
        for field, allowed in choices.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"Precision.{field} must be one of {allowed}, got {getattr(self, field)!r}")
        if self.recovery == "key_mean" and self.reference != "lazy":
            raise ValueError("Precision.recovery='key_mean' needs reference='lazy'")
        if not (self.recenter_at > 0):
            raise ValueError(f"Precision.recenter_at must be > 0, got {self.recenter_at!r}")
        if self.beta is not None and not (0.0 < float(self.beta) < 1.0):
            raise ValueError(f"Precision.beta must lie in (0, 1), got {self.beta!r}")

    def replace(self, **changes) -> "Precision":
        """A copy with ``changes`` applied (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    @property
    def reduce_dtype(self) -> torch.dtype:
        """Accumulator dtype of ``reduce="acc"`` reductions (at least fp32)."""
        return torch.float64 if self.vector == torch.float64 else torch.float32

    def describe(self) -> str:
        """One line per field, for ``--help`` texts and notebooks."""
        rows = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.dtype):
                value = str(value).replace("torch.", "")
            rows.append(f"{f.name:>10} = {value}")
        return "\n".join(rows)


_DTYPES = {name: dtype for dtype, name in _THEORY_NAMES.items()}
_DTYPE_FIELDS = ("matmul_in", "matmul_acc", "matmul_out", "vector", "coef_dtype")


def precision_from_fields(fields: dict) -> Precision:
    """A :class:`Precision` from field values with formats written as names (``"fp16"``, …), the
    form :mod:`pasa_theory.policies` uses."""
    return Precision(**{k: (_DTYPES[v] if k in _DTYPE_FIELDS else v) for k, v in fields.items()})


#: The presets. Their field values live in one place, the torch-free
#: :data:`pasa_theory.policies.PRESET_FIELDS` (formats written as names), which the rounding-error
#: model reads too; here they become :class:`Precision` objects with torch dtypes.
PRESETS: dict[str, Precision] = {name: precision_from_fields(f) for name, f in PRESET_FIELDS.items()}


def get_precision(precision: str | Precision) -> Precision:
    """Resolve a preset name or pass a :class:`Precision` through."""
    if isinstance(precision, Precision):
        return precision
    if isinstance(precision, str):
        try:
            return PRESETS[precision]
        except KeyError:
            raise ValueError(
                f"precision must be a Precision or one of {sorted(PRESETS)}, got {precision!r}"
            ) from None
    raise TypeError(f"precision must be a str or Precision, got {type(precision).__name__}")
