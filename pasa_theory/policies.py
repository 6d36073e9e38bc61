"""Where each harness method rounds, and to what: a torch-free description for the error model.

:mod:`pasa_npu` describes a numerical regime by a ``pasa_npu.Precision`` (a torch object) and each
harness method by how it rearranges the run's precision (``pasa_npu.methods``). The rounding-error
model of :mod:`pasa_theory.bounds` needs the same facts without importing torch, so this module keeps

* :data:`PRESET_FIELDS`, the field values of every preset with formats written as names (``"fp16"``,
  ``"bf16"``, ``"fp32"``, ``"fp64"``), read from the one schema :mod:`pasa_theory.schema` (of which
  ``pasa_npu.Precision`` is the torch view), and
* :func:`arranged_fields` and :func:`resolve`, which apply a harness method's arrangement to a precision
  (a preset name, a spec, a ``pasa_npu.Precision`` or any Precision-like object read field by field).
  ``pasa_npu.methods`` builds its precisions from :func:`arranged_fields`, so the arrangements exist once.

The shift constants (β, the stored entries of the rounded shifting matrix, the recovery coefficient
c) are resolved by :func:`shift_constants` through the same :mod:`pasa_theory` calls the kernel makes
(``pasa_npu._setup``), or, for ``setup="script_fp32"``, by an exact model of the reference script's fp32
arithmetic (each fp32 operation rounded once, :func:`pasa_theory.round_to_format`), also checked
against the kernel.

Methods without a Precision of their own are *modelled* (``Policy.modelled_as`` says so): ``sdpa``
(torch's CPU flash kernel: fp32 scores and softmax, P cast to the matmul format before P·V, output
cast to the input format) is modelled as ``fa_hybrid``; the Ascend vendor kernels, which cannot run
here, as ``fa_hybrid`` (``npu_fia_ip0``, high precision) and ``fa_qk`` (``npu_fia_ip1``, high
performance). Those two predictions are unvalidated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, TypeAlias

from .formats import FloatFormat, get_format, round_to_format
from .schema import (
    FIELDS,
    FORMAT_FIELDS,
    PRESET_SPECS,
    SCRIPT_BETA,
    FieldValue,
    PrecisionSpec,
    check_scale,
    preset_name,
)
from .selection import optimal_beta
from .shifting import recovery_coefficient_at, shifting_entries

__all__ = [
    "PRESET_FIELDS",
    "METHOD_NAMES",
    "Policy",
    "ShiftConstants",
    "resolve",
    "arranged_fields",
    "shift_constants",
    "resolve_beta",
    "method_names",
    "PLAIN_ATTENTION",
    "unmodelled_steps",
    "require_modelled",
]

#: The reference script's final β (commit 14f5c6f of the public PASA implementation).
REFERENCE_SCRIPT_BETA = SCRIPT_BETA  # the former name

#: Field values of every preset (formats as names), from :data:`pasa_theory.schema.PRESET_SPECS`.
PRESET_FIELDS: dict[str, dict[str, FieldValue]] = {name: spec.fields() for name, spec in PRESET_SPECS.items()}

#: The harness's method names (pasa_npu.methods.METHODS), in its order.
_BASE_METHODS = (
    "pasa",
    "fa_qk",
    "fa_q",
    "fa_naive",
    "fa_hybrid",
    "smooth_k",
    "sdpa",
    "npu_fia_ip0",
    "npu_fia_ip1",
)
METHOD_NAMES: tuple[str, ...] = _BASE_METHODS + tuple(f"pasa:{p}" for p in PRESET_SPECS)

_DTYPE_FIELDS = FORMAT_FIELDS

#: The fields of the reference-in-the-accumulator arrangement (docs/precision.md §6) at their defaults
#: (switched off): the flash attention baselines (``fa_*``, ``smooth_k``) set them so.
_PLAIN_SPEC = PrecisionSpec("plain", "fp16", "fp32", "fp16", "fp16")
PLAIN_ATTENTION: dict[str, FieldValue] = {
    f: getattr(_PLAIN_SPEC, f)
    for f in ("score_ref", "ref_move", "ref_move_at", "pv_accum", "row_sum", "v_center")
}
_ORDER = {"fp16": 0, "bf16": 0, "fp32": 1, "fp64": 2}


def method_names() -> list[str]:
    """Every method name :func:`resolve` accepts (the harness's names, ``pasa:<preset>`` included)."""
    return list(METHOD_NAMES)


@dataclass(frozen=True)
class Policy:
    """The rounding policy of one method run, with formats as :class:`FloatFormat` objects.

    The fields are those of ``pasa_npu.Precision`` (see its docstring for their meaning) plus what the
    method arrangement adds: ``shift`` (PASA or flash attention), ``untiled`` (one KV block spanning
    the whole sequence), ``smooth_k`` (K minus its sequence mean in the vector format first),
    ``modelled_as`` (set when the method is not one of the package's kernels).
    """

    name: str
    matmul_in: FloatFormat
    matmul_acc: FloatFormat
    matmul_out: FloatFormat
    vector: FloatFormat
    coef_dtype: FloatFormat
    reduce: str
    scale: str
    coef: str
    pseudo_average: str
    offset: str
    recenter_at: float
    recovery: str
    setup: str
    accum: str
    kv_tail: str
    beta: float | None
    beta_format: str | None
    score_ref: str
    ref_move: str
    ref_move_at: float
    pv_accum: str
    row_sum: str
    v_center: str
    shift: bool
    untiled: bool = False
    smooth_k: bool = False
    modelled_as: str | None = None
    mma_acc: str = "wide"
    mma_round: str = "nearest"
    mma_chunk: int = 16

    @property
    def reduce_format(self) -> FloatFormat:
        """Accumulator of ``reduce="acc"`` reductions: fp64 for an fp64 vector unit, else fp32."""
        return get_format("fp64") if self.vector.name == "fp64" else get_format("fp32")

    @property
    def placement(self) -> str:
        """Where τ is applied: ``"m"`` (folded into M, PASA only), ``"q"`` or ``"scores"``."""
        if not self.shift and self.scale == "m":
            return "scores"
        return self.scale


#: An arrangement flag of :func:`arranged_fields`: ``shift``, ``untiled``, ``smooth_k`` (bool) or
#: ``modelled_as`` (a method name or None).
Flag: TypeAlias = bool | str | None

#: A run's precision as given: a preset name, a :class:`~pasa_theory.schema.PrecisionSpec`, a
#: ``pasa_npu.Precision`` or any object with the Precision fields. Anything else raises TypeError in
#: :func:`_fields_of`, so the static type is ``object`` (any input: validated there).
PrecisionInput: TypeAlias = object


def _fields_of(precision: PrecisionInput) -> dict[str, FieldValue]:
    """Field dict of a preset name, a :class:`~pasa_theory.schema.PrecisionSpec`, a ``pasa_npu.Precision``
    (its ``spec``) or any Precision-like object read field by field (dtypes as format names)."""
    if isinstance(precision, str):
        return PRESET_SPECS[preset_name(precision)].fields()
    if isinstance(precision, Policy):
        raise TypeError("precision: pass a preset name or a Precision, not a resolved Policy")
    spec = precision if isinstance(precision, PrecisionSpec) else getattr(precision, "spec", None)
    if isinstance(spec, PrecisionSpec):
        return spec.fields()
    missing = [f for f in FIELDS if not hasattr(precision, f)]
    if missing:
        raise TypeError(
            f"precision must be a preset name or a Precision-like object with fields {list(FIELDS)}; "
            f"{type(precision).__name__} lacks {missing}"
        )
    return PrecisionSpec.from_fields({f: getattr(precision, f) for f in FIELDS}).fields()


def _wider(name: str, floor: str) -> str:
    """``torch.promote_types`` on our formats: the wider of the two (bf16 with fp32 gives fp32)."""
    return name if _ORDER[name] >= _ORDER[floor] else floor


def _policy(fields: Mapping[str, FieldValue], flags: Mapping[str, Flag]) -> Policy:
    # Policy's keyword arguments: field values (formats converted below) and the arrangement flags
    f: dict[str, Any] = dict(fields)
    g: dict[str, Any] = dict(flags)
    for key in _DTYPE_FIELDS:
        f[key] = get_format(f[key])
    f["recenter_at"] = float(f["recenter_at"])
    f["ref_move_at"] = float(f["ref_move_at"])
    if f["beta"] is not None:
        f["beta"] = float(f["beta"])
    return Policy(**f, **g)


def arranged_fields(
    method: str, precision: PrecisionInput = "npu_fp16"
) -> tuple[dict[str, FieldValue], dict[str, Flag]]:
    """How the harness method ``method`` rearranges the run's ``precision``: the field values of the
    precision it runs at (formats as names, the fields of ``pasa_npu.Precision``) and the arrangement
    flags (``shift``, and where set ``untiled``, ``smooth_k``, ``modelled_as``).

    The single description of the arrangements: ``pasa_npu.methods`` builds its Precision objects from
    it and :func:`resolve` its policies. ``pasa`` (the precision itself), ``pasa:<preset>`` (the preset,
    whatever ``precision``), ``fa_qk`` (``scale="scores"``), ``fa_q`` (``scale="q"``), ``fa_naive``
    (``fa_q`` with one KV block), ``fa_hybrid`` (matmul output, vector unit and coefficient widened to
    at least fp32, ``scale="scores"``, raw accumulators), ``smooth_k`` (``fa_qk`` after subtracting K's
    sequence mean in the vector format), and the modelled ``sdpa``/``npu_fia_ip0`` (as
    ``fa_hybrid``) and ``npu_fia_ip1`` (as ``fa_qk``). Every method but ``pasa`` runs with the
    fields of :data:`PLAIN_ATTENTION` at their defaults (plain flash attention).
    """
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, got {type(method).__name__}")
    if method.startswith("pasa:"):
        preset = method.split(":", 1)[1]
        try:
            preset = preset_name(preset, "method")
        except ValueError:
            raise ValueError(
                f"unknown PASA preset in method {method!r}; presets: {sorted(PRESET_SPECS)}"
            ) from None
        return PRESET_SPECS[preset].fields(), dict(shift=True)
    if method not in _BASE_METHODS:
        raise ValueError(f"method must be one of {method_names()}, got {method!r}")
    base = _fields_of(precision)
    if method == "pasa":
        return base, dict(shift=True)
    # the flash attention baselines run without the reference-in-accumulator steps of the run's precision
    base = dict(base, **PLAIN_ATTENTION)
    qk = dict(base, name=f"fa_qk[{base['name']}]", scale="scores")
    if method in ("fa_qk", "npu_fia_ip1"):
        return qk, dict(shift=False, modelled_as="fa_qk" if method == "npu_fia_ip1" else None)
    if method == "smooth_k":
        return qk, dict(shift=False, smooth_k=True)
    if method in ("fa_q", "fa_naive"):
        return dict(base, name=f"fa_q[{base['name']}]", scale="q"), dict(
            shift=False, untiled=method == "fa_naive"
        )
    wide = _wider(str(base["vector"]), "fp32")
    hyb = dict(
        base,
        name=f"fa_hybrid[{base['name']}]",
        matmul_out=_wider(str(base["matmul_out"]), "fp32"),
        vector=wide,
        coef_dtype=wide,
        scale="scores",
        accum="raw",
    )
    return hyb, dict(shift=False, modelled_as=None if method == "fa_hybrid" else "fa_hybrid")


def unmodelled_steps(pol: Policy) -> list[str]:
    """The steps of ``pol`` that the rounding-error model does not describe yet (docs/precision.md §6):
    the reference-in-the-accumulator fields away from their defaults, ``scale="acc"``, and a narrow
    matrix-unit accumulator (``mma_acc`` other than "wide") together with any of those or outside the
    arrangements its model covers (docs/beyond.md §5: fp16/bf16 operands, fp32 chunk sums, no key-mean
    offsets, no K smoothing)."""
    out = [f"{k}={getattr(pol, k)!r}" for k, v in PLAIN_ATTENTION.items() if getattr(pol, k) != v]
    if pol.scale == "acc":
        out.append("scale='acc'")
    if pol.mma_acc != "wide" and (out or not _narrow_modelled(pol)):
        # the matrix unit's narrow accumulators (docs/beyond.md §1, §5): modelled for fp16/bf16 operands
        # with an fp32 chunk sum, without the reference-in-the-accumulator steps, key-mean offsets or
        # K smoothing
        out.append(f"mma_acc={pol.mma_acc!r}")
    return out


def _narrow_modelled(pol: Policy) -> bool:
    """Whether the narrow-accumulator model (docs/beyond.md §5) covers ``pol``'s products: operands whose
    products are exact in the fp32 chunk sum, and only the score, K̃ and P·V products."""
    return (
        pol.matmul_in.name in ("fp16", "bf16")
        and pol.matmul_acc.name == "fp32"
        and pol.recovery != "key_mean"
        and not pol.smooth_k
        and pol.modelled_as is None
    )


def require_modelled(pol: Policy) -> Policy:
    """``pol`` if the error model describes it; ``ValueError`` naming the steps it does not."""
    steps = unmodelled_steps(pol)
    if steps:
        raise ValueError(f"the error model does not describe policy {pol.name!r} yet: " + ", ".join(steps))
    return pol


def resolve(method: str, precision: PrecisionInput = "npu_fp16") -> Policy:
    """The :class:`Policy` the harness method ``method`` runs at, given the run's ``precision``
    (the arrangement of :func:`arranged_fields`, with formats as :class:`FloatFormat` objects)."""
    fields, flags = arranged_fields(method, precision)
    return _policy(fields, flags)


# -- shift constants ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShiftConstants:
    """β, the stored entries of the (possibly τ-scaled) shifting matrix, and c, as Python floats.

    The constants ``pasa_npu.shift_parameters`` returns; ``a = diag − off`` and ``b = −off`` are the
    coefficients of ``M_r = a·I − b·J`` (eq. B2 of :mod:`pasa_theory.shifting`), ``sigma`` the folded
    scale (1.0 when τ is not folded into M).
    """

    beta: float
    diag: float
    off: float
    c: float
    sigma: float = 1.0

    @property
    def a(self) -> float:
        return self.diag - self.off

    @property
    def b(self) -> float:
        return -self.off


def _script_fp32_constants(
    n: int, beta: float, sigma: float, mi: FloatFormat, coef: FloatFormat
) -> ShiftConstants:
    """The reference script's setup, each fp32 operation rounded once (exact rational model).

    ``afa = fp32(β)``; ``M = eye(n) − ones·afa/n`` (``ones·afa`` exact, ``/n`` rounded, the subtraction
    rounded); ``M·σ`` rounded in fp32 (σ first rounded to fp32, as torch does with a Python scalar);
    cast to the matmul format. ``Inv_Pam = afa/(1 − afa)`` (both operations rounded) cast to ``coef``.
    """
    f32 = get_format("fp32")

    def r32(x: Fraction) -> Fraction:
        y = round_to_format(x, f32)
        assert isinstance(y, Fraction)
        return y

    afa = r32(Fraction(beta))
    off = r32(afa / n)
    diag = r32(1 - off)
    off = -off
    if sigma != 1.0:
        s32 = r32(Fraction(sigma))
        diag, off = r32(diag * s32), r32(off * s32)
    d_m, o_m = round_to_format(diag, mi), round_to_format(off, mi)
    c = round_to_format(r32(afa / r32(1 - afa)), coef)
    if n == 1:
        o_m = Fraction(0)
    return ShiftConstants(float(afa), float(d_m), float(o_m), float(c), sigma)


def resolve_beta(policy: Policy, n: int, beta: float | None, sigma: float) -> float:
    """The β a run uses: the argument, else the policy's pinned β, else :func:`pasa_theory.optimal_beta`
    for the ``beta_format`` (or matrix-unit format), block size ``n`` and folded scale ``sigma``
    (1.0: not folded)."""
    if beta is None:
        if policy.beta is not None:
            beta = policy.beta
        else:
            bf = policy.beta_format or policy.matmul_in.name
            beta = float(optimal_beta(bf, n, scale=None if sigma == 1.0 else sigma))
    return float(beta)


def shift_constants(policy: Policy, n: int, beta: float | None, scale: float) -> ShiftConstants:
    """β, M entries and c that the kernel uses for ``policy`` with block size ``n`` and softmax scale τ.

    The same resolution as ``pasa_npu.kernel.shift_parameters`` (β: the argument, else the preset's
    pinned β, else :func:`pasa_theory.optimal_beta` for the ``beta_format`` or matmul format, block
    size ``n`` and folded scale; entries by :func:`pasa_theory.shifting_entries`; c by
    :func:`pasa_theory.recovery_coefficient`).
    """
    sigma = float(scale) if policy.placement == "m" else 1.0
    fmt = policy.matmul_in
    beta = resolve_beta(policy, n, beta, sigma)
    if policy.setup == "script_fp32":
        if policy.coef != "beta":
            raise ValueError(
                "setup='script_fp32' reproduces the reference script and supports coef='beta' only"
            )
        return _script_fp32_constants(n, beta, sigma, fmt, policy.coef_dtype)
    s_arg = None if sigma == 1.0 else sigma
    diag, off = shifting_entries(fmt, n, beta, scale=s_arg)
    c = recovery_coefficient_at(
        fmt, n, beta, scale=s_arg, vector_format=policy.coef_dtype, source=policy.coef
    )
    return ShiftConstants(beta, float(diag), float(off), float(c), sigma)


def with_fields(
    policy: Policy, **changes: Any
) -> Policy:  # any Policy field: dataclasses.replace checks names
    """A copy of ``policy`` with ``changes`` (format fields may be given by name)."""
    for key in _DTYPE_FIELDS:
        if key in changes and not isinstance(changes[key], FloatFormat):
            changes[key] = get_format(changes[key])
    return replace(policy, **changes)


def tau_of(scale: object, head_dim: int) -> float:
    """The softmax scale τ (``None``: 1/√head_dim, as the kernels): :func:`pasa_theory.schema.check_scale`."""
    return check_scale(scale, head_dim)
