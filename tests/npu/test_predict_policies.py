"""pasa_theory.policies and pasa_npu agree: pasa_npu.Precision is the torch view of the one schema
(pasa_theory.schema), each harness method's arrangement, and the shift constants (β, stored entries of
M, c) the kernel really uses."""

from __future__ import annotations

import math
import typing
import warnings

import pytest
import torch

from pasa_npu.kernel import shift_parameters
from pasa_npu.methods import METHODS, get_method, method_names
from pasa_npu.precision import PRESETS, Precision
from pasa_theory import policies, schema

_FMT = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}


def _fields(p: Precision) -> dict:
    out = {}
    for name in schema.FIELDS:
        val = getattr(p, name)
        out[name] = _FMT[val] if isinstance(val, torch.dtype) else val
    return out


def _policy_fields(pol: policies.Policy) -> dict:
    out = {}
    for name in schema.FIELDS:
        val = getattr(pol, name)
        out[name] = val.name if hasattr(val, "emin") else val
    return out


def test_method_names_match_the_harness():
    assert policies.method_names() == method_names()


#: (matmul in, accumulate, out, vector) of the named presets, as the package's issue specifies them.
_UNITS = {
    "npu_fp16": ("fp16", "fp32", "fp16", "fp16"),  # the NPU Cube and a fp16 vector unit
    "script": ("fp16", "fp32", "fp16", "fp16"),
    "hybrid": ("fp16", "fp32", "fp16", "fp32"),  # fp32 vector unit
    "bf16": ("bf16", "fp32", "bf16", "bf16"),
    "fp64": ("fp64", "fp64", "fp64", "fp64"),
}


@pytest.mark.parametrize("preset", sorted(_UNITS))
def test_named_presets_round_where_specified(preset):
    f = _fields(PRESETS[preset])
    assert (f["matmul_in"], f["matmul_acc"], f["matmul_out"], f["vector"]) == _UNITS[preset]


def test_script_preset_is_the_scripts_setup():
    f = _fields(PRESETS["script"])
    assert (f["beta"], f["coef"], f["setup"], f["accum"]) == (0.984497, "beta", "script_fp32", "raw")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_torch_presets_are_views_of_the_schema(preset):
    """PRESETS are views of schema.PRESET_SPECS: every field arrives, formats as the matching torch dtypes."""
    assert PRESETS[preset].spec is schema.PRESET_SPECS[preset]
    assert _fields(PRESETS[preset]) == policies.PRESET_FIELDS[preset] == schema.PRESET_SPECS[preset].fields()
    assert set(PRESETS[preset].fields()) == set(schema.FIELDS)


def test_precision_defaults_are_the_schemas():
    """A Precision built with defaults (as users do) is modelled with the same defaults: there is only one."""
    p = Precision("x", torch.float16, torch.float32, torch.float16, torch.float16)
    spec = schema.PrecisionSpec("x", "fp16", "fp32", "fp16", "fp16")
    assert p.spec == spec and _fields(p) == spec.fields()
    assert policies.resolve("pasa", p) == policies.resolve("pasa", spec)


def test_schema_is_typed_and_validated_on_construction():
    hints = typing.get_type_hints(schema.PrecisionSpec)
    for field, allowed in schema.CHOICES.items():
        assert typing.get_args(hints[field]) == allowed  # the Literal type is the list of allowed values
        for value in allowed:
            extra = {"recovery": {"offset": "lazy"}, "pv_accum": {"score_ref": "hi_lo"}}.get(field, {})
            extra = {"row_sum": {"score_ref": "hi_lo"}}.get(field, extra)
            assert getattr(schema.PRESET_SPECS["fp64"].replace(**{field: value}, **extra), field) == value
        with pytest.raises(ValueError, match=f"Precision.{field}"):
            schema.PRESET_SPECS["fp64"].replace(**{field: "nonsense"})
    with pytest.raises(ValueError, match="Precision.vector"):
        schema.PrecisionSpec("x", "fp16", "fp32", "fp16", "fp8")
    with pytest.raises(ValueError, match="Precision.beta"):
        schema.PrecisionSpec("x", "fp16", "fp32", "fp16", "fp16", beta=1.5)
    with pytest.raises(TypeError, match="no field"):
        schema.PrecisionSpec.from_fields(
            dict(
                name="x", matmul_in="fp16", matmul_acc="fp32", matmul_out="fp16", vector="fp16", reduse="acc"
            )
        )


def test_renamed_spellings_work_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="'script'"):
        assert PRESETS["reference"] is PRESETS["script"]
    with pytest.warns(DeprecationWarning, match="'script'"):
        assert policies.resolve("pasa:reference") == policies.resolve("pasa:script")
    with pytest.warns(DeprecationWarning, match="offset"):
        p = PRESETS["npu_fp16"].replace(reference="running")
    assert p.offset == "running"
    with pytest.warns(DeprecationWarning, match="offset"):
        assert p.reference == "running"
    with pytest.warns(DeprecationWarning, match="'script'"):
        assert PRESETS["fp64"].replace(kv_tail="reference").kv_tail == "script"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert PRESETS["script"].offset == "running"


def test_stage_names_exist_once():
    from pasa_npu import metrics
    from pasa_theory import bounds

    assert metrics.STAGES is schema.STAGES and bounds.STAGES is schema.STAGES
    assert schema.STAGES == ("input", "scores", "shift", "exp", "row_sum", "accumulator", "output")


def _widen(fmt: str) -> str:
    return "fp64" if fmt == "fp64" else "fp32"


#: What each arrangement changes in the run's precision, written out from the method descriptions
#: (pasa_npu.methods docstring), independently of pasa_theory.policies.arranged_fields.
#: Every flash attention baseline runs without the reference-in-accumulator steps (docs/precision.md §6),
#: written out here at the schema's defaults.
_PLAIN = dict(
    score_ref="none",
    ref_move="recompute",
    ref_move_at=2.0,
    pv_accum="vector",
    row_sum="vector",
    v_center="none",
)
_CHANGES = {
    "pasa": lambda f: {},
    "fa_qk": lambda f: dict(_PLAIN, name=f"fa_qk[{f['name']}]", scale="scores"),
    "smooth_k": lambda f: dict(_PLAIN, name=f"fa_qk[{f['name']}]", scale="scores"),
    "fa_q": lambda f: dict(_PLAIN, name=f"fa_q[{f['name']}]", scale="q"),
    "fa_naive": lambda f: dict(_PLAIN, name=f"fa_q[{f['name']}]", scale="q"),
    "fa_hybrid": lambda f: dict(
        _PLAIN,
        name=f"fa_hybrid[{f['name']}]",
        matmul_out=_widen(f["matmul_out"]),
        vector=_widen(f["vector"]),
        coef_dtype=_widen(f["vector"]),
        scale="scores",
        accum="raw",
    ),
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("method", sorted(_CHANGES))
def test_method_arrangements_change_only_what_they_say(method, preset):
    base = _fields(PRESETS[preset])
    expected = dict(base, **_CHANGES[method](base))
    assert _fields(get_method(method).precision(PRESETS[preset])) == expected  # what the kernels run
    assert _policy_fields(policies.resolve(method, preset)) == expected  # what the model assumes
    # a Precision object is read field by field, with the same result as its preset name
    assert _policy_fields(policies.resolve(method, PRESETS[preset])) == expected


def test_every_arranged_method_is_covered():
    assert {m for m in METHODS if METHODS[m].precision(PRESETS["npu_fp16"]) is not None} == set(_CHANGES)


def test_arrangement_flags():
    flags = {
        m: policies.resolve(m) for m in ("fa_naive", "fa_q", "smooth_k", "sdpa", "npu_fia_ip0", "npu_fia_ip1")
    }
    assert flags["fa_naive"].untiled and not flags["fa_q"].untiled and flags["smooth_k"].smooth_k
    assert [flags[m].modelled_as for m in ("sdpa", "npu_fia_ip0", "npu_fia_ip1")] == [
        "fa_hybrid",
        "fa_hybrid",
        "fa_qk",
    ]


def test_pasa_preset_methods_ignore_the_run_precision():
    pol = policies.resolve("pasa:script", "bf16")
    assert _policy_fields(pol) == _fields(PRESETS["script"])


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("d,n", [(128, 128), (64, 64), (128, 64), (96, 32)])
def test_shift_constants_are_the_kernels(preset, d, n):
    pol = policies.resolve(f"pasa:{preset}")
    ours = policies.shift_constants(pol, n, None, 1 / math.sqrt(d))
    kern = shift_parameters(preset, head_dim=d, block_kv=n)
    assert (ours.beta, ours.diag, ours.off, ours.c) == (kern.beta, kern.diag, kern.off, kern.c)
    f = policies.PRESET_FIELDS[preset]
    if f["setup"] == "exact" and f["matmul_in"] in ("fp16", "bf16") and f["scale"] == "m":
        # independently: the entries of τ·(I − (β/n)J), each rounded once to the matrix-unit format
        # (float64 carries 53 bits, far more than the 11/8 kept, so only the final rounding matters)
        tau = 1 / math.sqrt(d)
        dt = {"fp16": torch.float16, "bf16": torch.bfloat16}[f["matmul_in"]]
        want = (
            torch.tensor([tau * (1 - kern.beta / n), -tau * kern.beta / n], dtype=torch.float64)
            .to(dt)
            .tolist()
        )
        assert [kern.diag, kern.off] == want, (preset, d, n, kern, want)


@pytest.mark.parametrize("beta", [0.9375, 0.96875, 0.984497, 0.99])
def test_script_fp32_setup_model_equals_the_kernels_fp32_arithmetic(beta):
    pol = policies.resolve("pasa:script")
    for d, n in [(128, 128), (64, 128), (80, 16)]:
        ours = policies.shift_constants(pol, n, beta, 1 / math.sqrt(d))
        kern = shift_parameters("script", head_dim=d, block_kv=n, beta=beta)
        assert (ours.beta, ours.diag, ours.off, ours.c) == (kern.beta, kern.diag, kern.off, kern.c)


def test_custom_precision_objects_are_read_by_field():
    custom = PRESETS["npu_fp16"].replace(name="mine", reduce="pairwise", pseudo_average="rounded")
    pol = policies.resolve("pasa", custom)
    assert pol.reduce == "pairwise" and pol.pseudo_average == "rounded" and pol.vector.name == "fp16"
    with pytest.raises(TypeError, match="precision"):
        policies.resolve("pasa", object())
