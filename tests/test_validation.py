"""One set of argument rules for every entry point: the kernels, the golden and pasa_theory.predict accept
the same values and refuse the same ones with the same exception type, naming the argument."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

import pasa_theory as pt
from pasa_npu import PRESETS, flash_attention, golden_attention, pasa_attention
from pasa_theory import schema


def _qkv(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 2, 5, 8, generator=g).half()
    k = torch.randn(1, 1, 7, 8, generator=g).half()
    v = torch.randn(1, 1, 7, 8, generator=g).half()
    return q, k, v


def _entry_points():
    """name → callable(q, k, v, **kw) for every entry point that takes the shared arguments."""
    return {
        "pasa_attention": lambda q, k, v, **kw: pasa_attention(q, k, v, block_kv=4, **kw),
        "flash_attention": lambda q, k, v, **kw: flash_attention(q, k, v, block_kv=4, **kw),
        "predict": lambda q, k, v, **kw: pt.predict(
            "pasa", q, k, v, block_kv=4, mc_samples=1, mc_rows=4, **kw
        ),
    }


@pytest.mark.parametrize("entry", sorted(_entry_points()))
@pytest.mark.parametrize("scale", [0.5, np.float32(0.5), np.float64(0.5), 1, np.int64(1)])
def test_real_scales_of_any_kind_are_accepted(entry, scale):
    q, k, v = _qkv()
    _entry_points()[entry](q, k, v, scale=scale)


@pytest.mark.parametrize("entry", ["pasa_attention", "predict"])  # flash attention has no β
@pytest.mark.parametrize("beta", [0.97, np.float32(0.97), np.float64(0.97), torch.tensor(0.97)])
def test_real_betas_of_any_kind_are_accepted(entry, beta):
    q, k, v = _qkv()
    _entry_points()[entry](q, k, v, beta=beta)


@pytest.mark.parametrize("entry", sorted(_entry_points()))
@pytest.mark.parametrize(
    "kw, exc, name",
    [
        (dict(scale="0.5"), TypeError, "scale"),
        (dict(scale=True), TypeError, "scale"),
        (dict(scale=0.0), ValueError, "scale"),
        (dict(scale=float("inf")), ValueError, "scale"),
        (dict(scale=np.float32(-1)), ValueError, "scale"),
        (dict(beta="0.9"), TypeError, "beta"),
        (dict(beta=1.0), ValueError, "beta"),
        (dict(beta=np.float32(0)), ValueError, "beta"),
        (dict(block_kv=0), ValueError, "block_kv"),
        (dict(block_kv=2.5), TypeError, "block_kv"),
    ],
)
def test_bad_arguments_raise_the_same_error_everywhere(entry, kw, exc, name):
    q, k, v = _qkv()
    if entry == "flash_attention" and "beta" in kw:
        kw = {}  # flash attention has no β: its call must succeed
        exc = None
    fn = _entry_points()[entry]
    if "block_kv" in kw:
        fns = {"pasa_attention": pasa_attention, "flash_attention": flash_attention}
        call = (
            (lambda: fns[entry](q, k, v, **kw))
            if entry in fns
            else (lambda: pt.predict("pasa", q, k, v, **kw))
        )
    else:
        call = lambda: fn(q, k, v, **kw)  # noqa: E731
    if exc is None:
        call()
        return
    with pytest.raises(exc, match=name):
        call()


@pytest.mark.parametrize(
    "shapes, match",
    [
        (((1, 2, 5, 8), (1, 1, 7, 8), (1, 1, 6, 8)), "sequence length"),
        (((1, 3, 5, 8), (1, 2, 7, 8), (1, 2, 7, 8)), "multiple"),
        (((1, 2, 5, 8), (1, 1, 7, 4), (1, 1, 7, 8)), "head dims"),
        (((2, 2, 5, 8), (1, 1, 7, 8), (1, 1, 7, 8)), "batch"),
        (((2, 5, 8), (1, 1, 7, 8), (1, 1, 7, 8)), "4-D"),
    ],
)
def test_bnsd_rules_are_the_same_for_kernel_golden_and_predict(shapes, match):
    q, k, v = (torch.zeros(s, dtype=torch.float16) for s in shapes)
    for fn in (
        lambda: pasa_attention(q, k, v),
        lambda: golden_attention(q, k, v),
        lambda: pt.predict("pasa", q, k, v),
    ):
        with pytest.raises(ValueError, match=match):
            fn()


def test_predict_refuses_a_misspelt_policy_value_naming_the_field():
    """A Precision-like object read field by field goes through the schema's validation."""
    fields = dict(PRESETS["npu_fp16"].spec.fields(), reduce="pairwse")
    like = types.SimpleNamespace(**fields)
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"Precision\.reduce must be one of \('acc', 'pairwise'\)"):
        pt.predict("pasa", q, k, v, precision=like, block_kv=4)
    with pytest.raises(ValueError, match=r"Precision\.reduce"):
        PRESETS["npu_fp16"].replace(reduce="pairwse")
    with pytest.raises(ValueError, match=r"Precision\.reduce"):
        schema.PRESET_SPECS["npu_fp16"].replace(reduce="pairwse")


def test_numpy_scalars_give_the_same_numbers_as_floats():
    q, k, v = _qkv(1)
    a = pasa_attention(q, k, v, block_kv=4, scale=np.float32(0.5), beta=np.float64(0.97))
    b = pasa_attention(q, k, v, block_kv=4, scale=0.5, beta=0.97)
    assert torch.equal(a, b)
    pa = pt.predict("pasa", q, k, v, block_kv=4, scale=np.float32(0.5), beta=np.float32(0.96875))
    pb = pt.predict("pasa", q, k, v, block_kv=4, scale=0.5, beta=0.96875)
    assert (pa.max_abs_bound, pa.rmse_estimate) == (pb.max_abs_bound, pb.rmse_estimate)
