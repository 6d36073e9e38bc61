"""The kernels need no float64 on the device: Ascend NPUs have no float64 arithmetic.

How this is checked without an accelerator. Every tensor the kernels create is created on the
inputs' device (``device=q.device`` and friends; constants come from :mod:`pasa_theory` as Python
numbers, and the one torch route of the reference script's setup runs in float32 on the CPU).
So on a CPU run, "the device" is the CPU and *every* tensor operation of the call is a device
operation. A :class:`~torch.utils._python_dispatch.TorchDispatchMode` sees each aten operation
below autograd with its tensor arguments and results; the mode below records every operation that
has a float64 tensor among them. Running a method under it with fp16/bf16 inputs and asserting that
nothing was recorded is therefore a stronger condition than "no float64 on the device": it forbids
float64 anywhere in the call, device or host. Python scalars (β, c, τ as numbers) are not tensors
and are passed to the device as scalars, so they are allowed.

The mode is shown to work: it flags a float64 tensor created inside it, and the previous
construction of the shifting matrix (``torch.full(..., dtype=torch.float64)`` then a cast), which
this test made visible. The golden (:func:`pasa_npu.golden_attention`) is float64 by design and is
computed on the CPU whatever the inputs' device.

The presets ``fp32`` and ``fp64`` are excluded: ``fp64`` is float64 by definition, and ``fp32``
reduces in float32 already (nothing to check beyond the fp16 presets, which share its code).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from pasa_npu import data, flash_attention, golden_attention, metrics, pasa_attention
from pasa_npu.kernel import shift_parameters, shifted_keys
from pasa_npu.methods import METHODS, run_method
from pasa_npu.precision import get_precision

#: every preset whose arithmetic is narrower than float64 everywhere
DEVICE_PRESETS = ("npu_fp16", "script", "fp16_strict", "fp16_keymean", "hybrid", "bf16")


class ForbidFloat64(TorchDispatchMode):
    """Records every aten operation that takes or returns a float64 tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.hits: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        for t in tree_flatten((args, kwargs, out))[0]:
            if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
                self.hits.append(f"{func} on a float64 tensor of shape {tuple(t.shape)} ({t.device})")
                break
        return out


def _run_forbidden(fn, *args, **kwargs):
    with ForbidFloat64() as mode:
        out = fn(*args, **kwargs)
    assert not mode.hits, f"{len(mode.hits)} float64 operations, first: " + "; ".join(mode.hits[:5])
    return out


def _qkv(seq_q=70, seq_kv=300, heads=4, kv_heads=2, d=32, mean=30.0, amplitude=0.5, seed=7):
    return data.make_qkv(
        "uniform",
        batch=1,
        heads=heads,
        kv_heads=kv_heads,
        seq_q=seq_q,
        seq_kv=seq_kv,
        head_dim=d,
        mean=mean,
        amplitude=amplitude,
        seed=seed,
    )


def test_the_mode_sees_float64():
    with ForbidFloat64() as mode:
        torch.full((4, 4), 0.5, dtype=torch.float64).to(torch.float16)
    assert len(mode.hits) == 2 and "full" in mode.hits[0]
    with ForbidFloat64() as mode:
        (torch.ones(3, dtype=torch.float16) * 0.5).sum()
    assert mode.hits == []


@pytest.mark.parametrize("preset", DEVICE_PRESETS)
@pytest.mark.parametrize("case", ["plain", "causal", "bool_mask", "additive_mask", "decode", "ragged_short"])
def test_pasa_attention_without_float64(preset, case):
    q, k, v = _qkv()
    kw: dict = dict(precision=preset)
    if case == "causal":
        kw["is_causal"] = True
    elif case == "bool_mask":
        kw["attn_mask"] = torch.rand((1, 1, 70, 300), generator=torch.Generator().manual_seed(1)) > 0.3
    elif case == "additive_mask":
        m = torch.zeros((1, 4, 70, 300), dtype=torch.float16)
        m[..., ::3] = float("-inf")
        kw["attn_mask"] = m
    elif case == "decode":
        q = q[:, :, :1]
    elif case == "ragged_short":
        k, v = k[:, :, :37], v[:, :, :37]  # S2 < n: the tail rule pads inside one block
    if preset == "bf16":
        q, k, v = (t.to(torch.bfloat16) for t in (q, k, v))
        if isinstance(kw.get("attn_mask"), torch.Tensor) and kw["attn_mask"].dtype == torch.float16:
            kw["attn_mask"] = kw["attn_mask"].to(torch.bfloat16)
    with metrics.census() as c:  # the census runs inside the kernel too
        out = _run_forbidden(pasa_attention, q, k, v, **kw)
    assert out.dtype == q.dtype and c.total == 0 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", [n for n, m in METHODS.items() if not m.npu_only])
def test_every_harness_method_without_float64(name):
    # mean 30, d = 128: fa_qk overflows at the scores; the census and the inf handling must not need float64 either
    q, k, v = _qkv(seq_q=40, seq_kv=200, d=128)
    with metrics.census():
        out = _run_forbidden(run_method, name, q, k, v)
    assert out.dtype == torch.float16


@pytest.mark.parametrize("preset", DEVICE_PRESETS)
def test_shift_setup_without_float64(preset):
    q, k, v = _qkv()
    if preset == "bf16":
        k = k.to(torch.bfloat16)
    _run_forbidden(shifted_keys, k, precision=preset, block_kv=64, scale=0.125)
    _run_forbidden(flash_attention, q, k.to(q.dtype), v, precision=preset, block_kv=64)


@pytest.mark.parametrize("preset", DEVICE_PRESETS)
@pytest.mark.parametrize("n", [16, 64, 128, 256])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_shift_entries_are_representable_in_the_matrix_unit_format(preset, n, head_dim):
    """The shifting matrix is built directly in ``matmul_in``: bit-identical to building it in
    float64 and casting, because its entries are already rounded to that format (checked here with
    a float64 round trip on the CPU)."""
    prec = get_precision(preset)
    consts = shift_parameters(prec, head_dim=head_dim, block_kv=n)
    for name, x in (("diag", consts.diag), ("off", consts.off)):
        back = float(torch.tensor(x, dtype=torch.float64).to(prec.matmul_in).double())
        assert back == x, (
            f"{preset} n={n} d={head_dim}: M's {name} entry {x!r} rounds to {back!r} in {prec.matmul_in}"
        )


def test_golden_is_computed_on_the_cpu():
    q, k, v = _qkv(seq_q=8, seq_kv=40)
    g = golden_attention(q, k, v)
    assert g.dtype == torch.float64 and g.device.type == "cpu"
    # and equals a plain float64 softmax attention written here (GQA: head h uses kv head h // 2)
    qd, kd, vd = q.double(), k.double().repeat_interleave(2, dim=1), v.double().repeat_interleave(2, dim=1)
    p = torch.softmax(qd @ kd.transpose(-1, -2) / 32**0.5, dim=-1)
    assert float((g - p @ vd).abs().max()) <= 1e-12 * float(g.abs().max())
