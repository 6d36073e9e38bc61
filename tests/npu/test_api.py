"""Bad input gets a clear error naming the argument; devices and the NPU path dispatch correctly."""

from __future__ import annotations

import types

import pytest
import torch

import pasa_npu
import pasa_npu.device as device_mod
import pasa_npu.methods as methods_mod
from pasa_npu import Precision, flash_attention, get_precision, golden_attention, pasa_attention


def _qkv(h=4, hk=2, s1=8, s2=8, d=16, dtype=torch.float16):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn((1, h, s1, d), generator=g).to(dtype),
        torch.randn((1, hk, s2, d), generator=g).to(dtype),
        torch.randn((1, hk, s2, d), generator=g).to(dtype),
    )


BAD = [
    (lambda q, k, v: (q[..., :8], k, v), {}, ValueError, "head dims"),
    (lambda q, k, v: (q[:, :3], k, v), {}, ValueError, "multiple of k/v heads"),
    (lambda q, k, v: (q[0], k, v), {}, ValueError, "4-D"),
    (lambda q, k, v: (q.to(torch.int32), k, v), {}, TypeError, "floating"),
    (lambda q, k, v: (q.numpy(), k, v), {}, TypeError, "torch.Tensor"),
    (lambda q, k, v: (q, k, v[:, :, :5]), {}, ValueError, "sequence length"),
    (lambda q, k, v: (q, k, v), dict(block_kv=0), ValueError, "block_kv"),
    (lambda q, k, v: (q, k, v), dict(block_q=-1), ValueError, "block_q"),
    (lambda q, k, v: (q, k, v), dict(block_kv=2.5), TypeError, "block_kv"),
    (lambda q, k, v: (q, k, v), dict(beta=1.0), ValueError, "beta"),
    (lambda q, k, v: (q, k, v), dict(beta=0.0), ValueError, "beta"),
    (lambda q, k, v: (q, k, v), dict(beta=-0.5), ValueError, "beta"),
    (lambda q, k, v: (q, k, v), dict(beta="0.9"), TypeError, "beta"),
    (lambda q, k, v: (q, k, v), dict(scale=0.0), ValueError, "scale"),
    (lambda q, k, v: (q, k, v), dict(scale=float("nan")), ValueError, "scale"),
    (
        lambda q, k, v: (q, k, v),
        dict(attn_mask=torch.ones(3, 8, dtype=torch.bool)),
        ValueError,
        "broadcastable",
    ),
    (lambda q, k, v: (q, k, v), dict(attn_mask=torch.ones(8, 8, dtype=torch.int64)), TypeError, "attn_mask"),
    (
        lambda q, k, v: (q, k, v),
        dict(attn_mask=torch.ones(8, 8, dtype=torch.bool), is_causal=True),
        ValueError,
        "is_causal",
    ),
    (lambda q, k, v: (q, k, v), dict(precision="fp8"), ValueError, "precision"),
    (lambda q, k, v: (q, k, v), dict(out_dtype=torch.int8), TypeError, "out_dtype"),
    (lambda q, k, v: (q, k, v), dict(block_kv=1), ValueError, "block_kv"),
]


@pytest.mark.parametrize("make,kw,exc,words", BAD)
def test_bad_input_is_rejected_with_a_clear_message(make, kw, exc, words):
    q, k, v = make(*_qkv())
    with pytest.raises(exc, match=words):
        pasa_attention(q, k, v, **kw)


@pytest.mark.parametrize("fn", [flash_attention, golden_attention])
def test_baselines_validate_too(fn):
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="multiple"):
        fn(q[:, :3], k, v)


def test_nan_and_inf_inputs_are_allowed_and_reported():
    q, k, v = _qkv()
    q[0, 0, 0, 0] = float("nan")
    v[0, 0, 3, 1] = float("inf")
    with pasa_npu.metrics.census() as c:
        out = pasa_attention(q, k, v)
    assert c.counts["input"] == 2
    assert c.first_stage == "input"
    assert torch.isnan(out[0, 0, 0]).all()  # the NaN query row is NaN, not hidden


def test_precision_presets_and_validation():
    assert set(pasa_npu.PRESETS) >= {"npu_fp16", "script", "hybrid", "bf16", "fp64"}
    p = get_precision("npu_fp16")
    assert p.matmul_in == torch.float16 and p.matmul_acc == torch.float32 and p.matmul_out == torch.float16
    assert get_precision(p) is p
    with pytest.raises(ValueError, match="scale"):
        p.replace(scale="k")
    with pytest.raises(ValueError, match="matmul_in"):
        Precision("x", torch.int8, torch.float32, torch.float16, torch.float16)
    with pytest.raises(TypeError):
        get_precision(3)
    with pytest.raises(AttributeError, match="immutable"):
        p.vector = torch.float32  # frozen


def test_device_auto_prefers_npu_then_cuda_then_cpu(monkeypatch):
    monkeypatch.setattr(device_mod, "npu_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_mod.resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device_mod.resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(device_mod, "npu_available", lambda: True)
    monkeypatch.setattr(
        device_mod, "_npu_device", lambda: "npu"
    )  # torch only knows "npu" once torch_npu is loaded
    assert device_mod.resolve_device(None) == "npu"
    assert device_mod.resolve_device("cpu") == torch.device("cpu")  # explicit wins


def test_explicit_unavailable_device_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(device_mod, "npu_available", lambda: False)
    with pytest.raises(ValueError, match="torch_npu"):
        device_mod.resolve_device("npu")
    with pytest.raises(TypeError):
        device_mod.resolve_device(3)


def test_torch_npu_absent_degrades_gracefully(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    device_mod.npu_available.cache_clear()
    try:
        assert device_mod.import_torch_npu() is None
        assert device_mod.npu_available() is False
    finally:
        device_mod.npu_available.cache_clear()
    with pytest.raises(RuntimeError, match="torch_npu"):
        methods_mod.run_method("npu_fia_ip0", *_qkv())


def test_torch_npu_that_fails_to_import_means_no_npu(monkeypatch):
    import importlib

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())

    def boom(name, *a, **k):
        raise OSError("libascendcl.so: cannot open shared object file")

    monkeypatch.setattr(importlib, "import_module", boom)
    assert device_mod.import_torch_npu() is None


@pytest.mark.parametrize("ip", [0, 1])
def test_npu_fused_attention_dispatch(monkeypatch, ip):
    calls = []

    def fia(q, k, v, **kw):
        calls.append(kw)
        return (torch.zeros_like(q), None)

    monkeypatch.setattr(
        methods_mod, "import_torch_npu", lambda: types.SimpleNamespace(npu_fused_infer_attention_score=fia)
    )
    monkeypatch.setattr(methods_mod, "_on_npu", lambda t: True)
    q, k, v = _qkv(h=28, hk=4)
    out = methods_mod.run_method(f"npu_fia_ip{ip}", q, k, v)
    kw = calls[-1]
    assert out.shape == q.shape
    assert kw["inner_precise"] == ip and kw["input_layout"] == "BNSD"
    assert kw["num_heads"] == 28 and kw["num_key_value_heads"] == 4
    assert kw["scale"] == pytest.approx(16**-0.5) and kw["sparse_mode"] == 0
    methods_mod.run_method(f"npu_fia_ip{ip}", q, k, v, is_causal=True)
    assert calls[-1]["sparse_mode"] == 3 and calls[-1]["atten_mask"].shape == (2048, 2048)
    keep = torch.ones((8, 8), dtype=torch.bool)
    keep[2, 3] = False
    methods_mod.run_method(f"npu_fia_ip{ip}", q, k, v, attn_mask=keep)
    assert calls[-1]["atten_mask"][0, 0, 2, 3].item() is True  # vendor convention: True = masked


def test_npu_method_refuses_cpu_tensors(monkeypatch):
    monkeypatch.setattr(methods_mod, "import_torch_npu", lambda: types.SimpleNamespace())
    with pytest.raises(ValueError, match="NPU tensors"):
        methods_mod.run_method("npu_fia_ip1", *_qkv())


def test_unknown_method_names():
    with pytest.raises(ValueError, match="method must be one of"):
        methods_mod.get_method("fa17")
    with pytest.raises(ValueError, match="preset"):
        methods_mod.get_method("pasa:fp8")
    assert "pasa:script" in methods_mod.method_names()


def test_torch_npu_is_only_an_optional_extra():
    from pathlib import Path

    import tomllib

    meta = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    assert not any("torch_npu" in d or "torch-npu" in d for d in meta["dependencies"])
    assert meta["optional-dependencies"]["npu"] == ["torch_npu"]
