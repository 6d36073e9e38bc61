"""The precision schema and the argument rules, written once (torch-free).

A numerical regime of the tiled kernel is a :class:`PrecisionSpec`: where the kernel rounds and to what,
with formats written as names (``"fp16"``, ``"bf16"``, ``"fp32"``, ``"fp64"``) and every other field a
``Literal`` value. It is validated on construction. ``pasa_npu.Precision`` is its torch view (the same
fields, formats as torch dtypes) and :mod:`pasa_theory.policies` reads it for the rounding-error model;
neither defines a field, a default or an allowed value of its own. The meaning of each field and the
presets are in docs/precision.md §3 and §4.

Also here, once for every entry point (``pasa_npu``'s kernels and :func:`pasa_theory.predict`):

* :data:`STAGES`, the pipeline stages in order (the order decides which stage is "first to overflow");
* :data:`DTYPE_FORMATS`, the map from dtype names (torch's and numpy's) to format names;
* the argument rules :func:`check_scale`, :func:`check_beta`, :func:`check_block`, :func:`check_bnsd`,
  each raising ``TypeError`` (wrong kind) or ``ValueError`` (wrong value) that names the argument.

Renamed values (old spellings are accepted with a ``DeprecationWarning``): the preset ``"reference"`` is
``"script"`` (the public reference script's numerics), the field ``reference`` is ``offset`` (the per-row
offset A of docs/precision.md §2.1–§2.2), and ``kv_tail="reference"`` is ``kv_tail="script"``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, get_args

__all__ = [
    "FormatName",
    "Reduce",
    "ScalePlacement",
    "Coef",
    "Setup",
    "Accum",
    "PseudoAverage",
    "Offset",
    "Recovery",
    "KVTail",
    "MmaAcc",
    "MmaRound",
    "MMA_FORMATS",
    "ScoreRef",
    "RefMove",
    "PVAccum",
    "RowSum",
    "VCenter",
    "CHOICES",
    "FORMAT_FIELDS",
    "FIELDS",
    "STAGES",
    "DTYPE_FORMATS",
    "SCRIPT_BETA",
    "PrecisionSpec",
    "PRESET_SPECS",
    "preset_name",
    "format_name",
    "check_scale",
    "check_beta",
    "check_block",
    "check_bnsd",
]

FormatName = Literal["fp16", "bf16", "fp32", "fp64"]
Reduce = Literal["acc", "pairwise"]
ScalePlacement = Literal["m", "q", "scores", "acc"]
Coef = Literal["rounded_m", "beta"]
Setup = Literal["exact", "script_fp32"]
Accum = Literal["raw", "pow2"]
PseudoAverage = Literal["rounded", "centered"]
Offset = Literal["running", "lazy"]
Recovery = Literal["pseudo_average", "key_mean"]
KVTail = Literal["wrap", "zero", "script"]
MmaAcc = Literal["wide", "fp16", "fp22"]
MmaRound = Literal["nearest", "zero"]

#: The matrix unit's accumulator formats of ``mma_acc`` (docs/beyond.md §1) as (precision p in bits with
#: the implicit bit, e_min, e_max): IEEE binary16, and "FP22" (1 sign, 8 exponent and 13 stored mantissa
#: bits: fp32's exponent range with p = 14), the accumulator found in FP8 matrix units of Ada/Hopper
#: (arXiv:2411.10958, arXiv:2412.19437 §3.3.2). ``"wide"`` is not listed: it accumulates in ``matmul_acc``.
MMA_FORMATS: dict[str, tuple[int, int, int]] = {
    "fp16": (11, -14, 15),
    "fp22": (14, -126, 127),
}
# The fully fp16 "reference in the accumulator" arrangement (docs/precision.md §6); defaults = off.
ScoreRef = Literal["none", "hi_lo"]
RefMove = Literal["recompute", "rebase"]
PVAccum = Literal["vector", "matrix"]
RowSum = Literal["vector", "matrix"]
VCenter = Literal["none", "mean", "grid"]

#: Allowed values of every enumerated field.
CHOICES: dict[str, tuple[str, ...]] = {
    "reduce": get_args(Reduce),
    "scale": get_args(ScalePlacement),
    "coef": get_args(Coef),
    "setup": get_args(Setup),
    "accum": get_args(Accum),
    "pseudo_average": get_args(PseudoAverage),
    "offset": get_args(Offset),
    "recovery": get_args(Recovery),
    "kv_tail": get_args(KVTail),
    "mma_acc": get_args(MmaAcc),
    "mma_round": get_args(MmaRound),
    "score_ref": get_args(ScoreRef),
    "ref_move": get_args(RefMove),
    "pv_accum": get_args(PVAccum),
    "row_sum": get_args(RowSum),
    "v_center": get_args(VCenter),
}
FORMATS: tuple[str, ...] = get_args(FormatName)
#: Fields whose value is a format (a torch dtype in ``pasa_npu.Precision``).
FORMAT_FIELDS = ("matmul_in", "matmul_acc", "matmul_out", "vector", "coef_dtype")

#: Pipeline stages in order: the census of ``pasa_npu.metrics`` and the overflow stages of
#: :mod:`pasa_theory.bounds`. The first stage in this order with inf/NaN is "first to overflow".
STAGES = ("input", "scores", "shift", "exp", "row_sum", "accumulator", "output")

#: dtype names (``str(torch.float16)`` without ``torch.``, numpy's ``dtype.name``) → format names.
DTYPE_FORMATS: dict[str, FormatName] = {
    "float16": "fp16",
    "bfloat16": "bf16",
    "float32": "fp32",
    "float64": "fp64",
}

#: The reference script's final β (its commit 14f5c6f), pinned by the ``script`` preset.
SCRIPT_BETA = 0.984497

_RENAMED_FIELDS = {"reference": "offset"}
_RENAMED_VALUES = {("kv_tail", "reference"): "script"}
_RENAMED_PRESETS = {"reference": "script"}


def _renamed(old: str, new: str, what: str) -> None:
    warnings.warn(f"{what} {old!r} is now called {new!r}", DeprecationWarning, stacklevel=4)


def format_name(value: object, argname: str = "format") -> FormatName:  # any input: validated below
    """The format name of ``value``: a format name, a ``pasa_theory.FloatFormat`` of one of the four
    formats, a torch dtype or a numpy dtype (by its name); ``ValueError`` naming ``argname`` otherwise."""
    text = getattr(value, "name", None) if not isinstance(value, str) else value
    if not isinstance(text, str):
        text = str(value)
    text = text.removeprefix("torch.")
    if text in FORMATS:
        return text  # type: ignore[return-value]
    if text in DTYPE_FORMATS:
        return DTYPE_FORMATS[text]
    raise ValueError(f"{argname}: expected one of {list(FORMATS)} or the matching dtype, got {value!r}")


# -- argument rules shared by every entry point -------------------------------------------------------------


def _real(value: object, argname: str, expected: str) -> float:  # any input: validated below
    """``value`` as a float if it is a real number (Python, numpy scalar, 0-d array, one-element tensor)."""
    if (
        not isinstance(value, numbers.Real)
        and getattr(value, "shape", None) in ((), (1,))
        and hasattr(value, "item")
    ):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{argname} must be {expected}, got {type(value).__name__}")
    return float(value)


def check_scale(scale: object, head_dim: int, argname: str = "scale") -> float:
    """The softmax scale τ as a float: ``None`` means ``1/sqrt(head_dim)``; any real number (numpy
    scalars included) that is finite and > 0. ``TypeError`` for a non-number (e.g. the string "0.5"),
    ``ValueError`` for a bad value."""
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    tau = _real(scale, argname, "a real number or None")
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"{argname} must be finite and > 0, got {scale}")
    return tau


def check_beta(beta: object, argname: str = "beta") -> float | None:
    """β as a float in (0, 1), or None (the default β). Any real number (numpy scalars, 0-d arrays and
    one-element tensors included); ``TypeError`` for a non-number, ``ValueError`` outside (0, 1)."""
    if beta is None:
        return None
    b = _real(beta, argname, "a real number in (0, 1) or None")
    if not (0.0 < b < 1.0):
        raise ValueError(f"{argname} must lie in the open interval (0, 1), got {beta}")
    return b


def check_block(value: object, argname: str = "block_kv") -> int:
    """A block size: a positive int (numpy integers included). ``TypeError`` for a non-integer,
    ``ValueError`` for a value < 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{argname} must be a positive int, got {type(value).__name__}")
    if int(value) <= 0:
        raise ValueError(f"{argname} must be a positive int, got {value}")
    return int(value)


def check_bnsd(q_shape: Sequence[int], k_shape: Sequence[int], v_shape: Sequence[int]) -> tuple[int, ...]:
    """Check that q, k, v shapes (batch, heads, seq, head_dim) form one attention call: 4-D, same batch,
    k and v with the same heads and length, q and k with the same head dim, no empty dimension, q heads a
    multiple of the k/v heads. Returns ``(B, H, Hkv, S1, S2, D, Dv)``; ``ValueError`` otherwise."""
    shapes = {"q": tuple(q_shape), "k": tuple(k_shape), "v": tuple(v_shape)}
    for name, shape in shapes.items():
        if len(shape) != 4:
            raise ValueError(
                f"{name} must be 4-D in BNSD layout (batch, heads, seq, head_dim), got shape {shape}"
            )
    B, H, S1, D = shapes["q"]
    Bk, Hkv, S2, Dk = shapes["k"]
    Bv, Hv, S2v, Dv = shapes["v"]
    if Bk != B or Bv != B:
        raise ValueError(f"batch sizes differ: q {B}, k {Bk}, v {Bv}")
    if Hv != Hkv or S2v != S2:
        raise ValueError(
            f"k and v must agree in heads and sequence length, got k {shapes['k']} and v {shapes['v']}"
        )
    if Dk != D:
        raise ValueError(f"head dims differ: q has {D}, k has {Dk}")
    if min(B, H, S1, D, Hkv, S2, Dv) < 1:
        raise ValueError(f"empty dimension: q {shapes['q']}, k {shapes['k']}, v {shapes['v']}")
    if H % Hkv:
        raise ValueError(f"q heads ({H}) must be a multiple of k/v heads ({Hkv}) for GQA/MQA")
    return B, H, Hkv, S1, S2, D, Dv


# -- the precision schema ------------------------------------------------------------------------------------


#: The value of one PrecisionSpec field: a format name or another choice (str), ``recenter_at`` or a pinned
#: ``beta`` (float), or None (``beta``, ``beta_format`` unset).
FieldValue: TypeAlias = str | float | None


@dataclass(frozen=True)
class PrecisionSpec:
    """Where the tiled kernel rounds, and to what (formats as names). Validated on construction.

    Fields (docs/precision.md §3): ``matmul_in``/``matmul_acc``/``matmul_out`` the matrix unit's operand,
    accumulator and output formats; ``vector`` the vector unit's; ``reduce`` row reductions; ``scale``
    where τ is applied; ``coef`` and ``coef_dtype`` the recovery coefficient and its format;
    ``pseudo_average`` how block means enter the offsets; ``offset`` the per-row reference A ("running"
    mean moved every block, or "lazy", re-centred past ``recenter_at``); ``recovery`` where the offsets
    come from; ``setup`` exact or the script's fp32 constants; ``accum`` raw or power-of-two
    renormalised O and ℓ; ``kv_tail`` how the last KV block is filled; ``beta`` a pinned β; ``beta_format``
    the format whose optimal β is the default; ``mma_acc``, ``mma_round``, ``mma_chunk`` the matrix unit's
    accumulation model (docs/beyond.md §1): ``"wide"`` (the default, every preset) accumulates in
    ``matmul_acc`` and rounds once; ``"fp16"`` or ``"fp22"`` sums each chunk of ``mma_chunk`` products
    in ``matmul_acc`` and rounds the running accumulator to that format (``mma_round``: to nearest, ties to even, or
    toward zero) after every chunk.

    The reference-in-the-accumulator arrangement (docs/precision.md §6; the defaults switch it off):
    ``score_ref`` ("hi_lo": a per-row reference R, the stale running maximum, subtracted inside the
    matrix unit's accumulator through two augmented columns, so the rounded score tile holds S − R;
    no shifting matrix is applied then), ``ref_move`` (a block whose maximum passes R by more than
    ``ref_move_at``, in scaled score units, moves R: its tile is recomputed against the new R, or rebased
    on the vector unit), ``pv_accum`` ("matrix": P·V summed in the matrix unit's accumulator across
    blocks and rounded into O only when R moves), ``row_sum`` ("matrix": ℓ from a ones column of the
    P·V product), ``v_center`` (V minus its per-column sequence mean, added back at the end; "grid":
    the mean rounded to the spacing of max|V| of its column). ``scale="acc"`` applies τ at the
    conversion of the accumulator to ``matmul_out``.
    """

    name: str
    matmul_in: FormatName
    matmul_acc: FormatName
    matmul_out: FormatName
    vector: FormatName
    reduce: Reduce = "acc"
    scale: ScalePlacement = "m"
    coef: Coef = "rounded_m"
    coef_dtype: FormatName = "fp16"
    pseudo_average: PseudoAverage = "centered"
    offset: Offset = "lazy"
    recenter_at: float = 16.0
    recovery: Recovery = "pseudo_average"
    setup: Setup = "exact"
    accum: Accum = "pow2"
    kv_tail: KVTail = "wrap"
    beta: float | None = None
    beta_format: FormatName | None = None
    mma_acc: MmaAcc = "wide"
    mma_round: MmaRound = "nearest"
    mma_chunk: int = 16
    score_ref: ScoreRef = "none"
    ref_move: RefMove = "recompute"
    ref_move_at: float = 2.0
    pv_accum: PVAccum = "vector"
    row_sum: RowSum = "vector"
    v_center: VCenter = "none"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"Precision.name must be a str, got {type(self.name).__name__}")
        for f in FORMAT_FIELDS:
            if self.__dict__[f] not in FORMATS:
                raise ValueError(f"Precision.{f} must be one of {list(FORMATS)}, got {self.__dict__[f]!r}")
        for f, allowed in CHOICES.items():
            if self.__dict__[f] not in allowed:
                raise ValueError(f"Precision.{f} must be one of {allowed}, got {self.__dict__[f]!r}")
        if self.recovery == "key_mean" and self.offset != "lazy":
            raise ValueError("Precision.recovery='key_mean' needs offset='lazy'")
        if isinstance(self.recenter_at, bool) or not isinstance(self.recenter_at, numbers.Real):
            raise TypeError(
                f"Precision.recenter_at must be a real number, got {type(self.recenter_at).__name__}"
            )
        if not (self.recenter_at > 0):
            raise ValueError(f"Precision.recenter_at must be > 0, got {self.recenter_at!r}")
        if isinstance(self.ref_move_at, bool) or not isinstance(self.ref_move_at, numbers.Real):
            raise TypeError(
                f"Precision.ref_move_at must be a real number, got {type(self.ref_move_at).__name__}"
            )
        if not (math.isfinite(self.ref_move_at) and self.ref_move_at >= 0):
            raise ValueError(f"Precision.ref_move_at must be finite and >= 0, got {self.ref_move_at!r}")
        if self.score_ref == "none":
            for f in ("pv_accum", "row_sum"):
                if self.__dict__[f] != "vector":
                    raise ValueError(f"Precision.{f}={self.__dict__[f]!r} needs score_ref='hi_lo'")
        if self.beta is not None:
            check_beta(self.beta, "Precision.beta")
        if isinstance(self.mma_chunk, bool) or not isinstance(self.mma_chunk, numbers.Integral):
            raise TypeError(
                f"Precision.mma_chunk must be a positive int, got {type(self.mma_chunk).__name__}"
            )
        if int(self.mma_chunk) < 1:
            raise ValueError(f"Precision.mma_chunk must be a positive int, got {self.mma_chunk!r}")
        object.__setattr__(self, "mma_chunk", int(self.mma_chunk))
        if self.beta_format is not None and self.beta_format not in FORMATS:
            raise ValueError(
                f"Precision.beta_format must be one of {list(FORMATS)} or None, got {self.beta_format!r}"
            )

    @classmethod
    def from_fields(cls, fields: Mapping[str, object]) -> PrecisionSpec:
        """A spec from field values; formats may be names or dtypes, renamed spellings are accepted with
        a ``DeprecationWarning``."""
        return cls(**normalize_fields(fields))

    def fields(self) -> dict[str, FieldValue]:
        """Field values by name (formats as names)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes: object) -> PrecisionSpec:
        """A copy with ``changes`` applied (validated)."""
        return PrecisionSpec.from_fields({**self.fields(), **changes})


#: Field names in order.
FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(PrecisionSpec))


def normalize_fields(fields: Mapping[str, Any]) -> dict[str, Any]:  # any values: PrecisionSpec validates them
    """Field values with formats as names and renamed spellings mapped (with a DeprecationWarning);
    unknown fields raise ``TypeError``."""
    out: dict[str, Any] = {}  # values still unchecked: PrecisionSpec validates them on construction
    for key, value in fields.items():
        if key in _RENAMED_FIELDS:
            _renamed(key, _RENAMED_FIELDS[key], "Precision field")
            key = _RENAMED_FIELDS[key]
        if key not in FIELDS:
            raise TypeError(f"Precision has no field {key!r}; fields: {list(FIELDS)}")
        if (key, value) in _RENAMED_VALUES:
            new = _RENAMED_VALUES[(key, value)]
            _renamed(value, new, f"Precision.{key} value")
            value = new
        if key in FORMAT_FIELDS or (key == "beta_format" and value is not None):
            value = format_name(value, f"Precision.{key}")
        out[key] = value
    return out


def _preset(
    name: str,
    mi: FormatName,
    acc: FormatName,
    out: FormatName,
    vec: FormatName,
    **kw: Any,  # other fields: validated by PrecisionSpec
) -> PrecisionSpec:
    return PrecisionSpec(name, mi, acc, out, vec, **kw)


#: The fully fp16 arrangement of docs/precision.md §6 (matrix unit fp16/fp32/fp16, vector unit fp16).
_ACCURATE: dict[str, Any] = dict(
    scale="acc",
    score_ref="hi_lo",
    ref_move="recompute",
    ref_move_at=2.0,
    pv_accum="matrix",
    row_sum="matrix",
    v_center="grid",
)

#: The presets (docs/precision.md §4).
PRESET_SPECS: dict[str, PrecisionSpec] = {
    "npu_fp16": _preset("npu_fp16", "fp16", "fp32", "fp16", "fp16", coef_dtype="fp16"),
    "script": _preset(
        "script",
        "fp16",
        "fp32",
        "fp16",
        "fp16",
        coef="beta",
        coef_dtype="fp16",
        setup="script_fp32",
        accum="raw",
        kv_tail="script",
        beta=SCRIPT_BETA,
        pseudo_average="rounded",
        offset="running",
    ),
    "fp16_strict": _preset(
        "fp16_strict", "fp16", "fp32", "fp16", "fp16", reduce="pairwise", coef_dtype="fp16"
    ),
    "fp16_keymean": _preset(
        "fp16_keymean", "fp16", "fp32", "fp16", "fp16", coef_dtype="fp16", recovery="key_mean"
    ),
    "hybrid": _preset("hybrid", "fp16", "fp32", "fp16", "fp32", coef_dtype="fp32", accum="raw"),
    "bf16": _preset("bf16", "bf16", "fp32", "bf16", "bf16", coef_dtype="bf16"),
    "fp32": _preset(
        "fp32", "fp32", "fp32", "fp32", "fp32", coef_dtype="fp32", accum="raw", beta_format="fp16"
    ),
    "fp64": _preset(
        "fp64", "fp64", "fp64", "fp64", "fp64", coef_dtype="fp64", accum="raw", beta_format="fp16"
    ),
    "fp16_accurate": _preset("fp16_accurate", "fp16", "fp32", "fp16", "fp16", coef_dtype="fp16", **_ACCURATE),
}


def preset_name(name: str, argname: str = "precision") -> str:
    """The canonical name of preset ``name`` (renamed presets with a DeprecationWarning); ``ValueError``
    naming ``argname`` for an unknown one."""
    if name in _RENAMED_PRESETS:
        _renamed(name, _RENAMED_PRESETS[name], "preset")
        return _RENAMED_PRESETS[name]
    if name not in PRESET_SPECS:
        raise ValueError(f"{argname} must be a Precision or one of {sorted(PRESET_SPECS)}, got {name!r}")
    return name
