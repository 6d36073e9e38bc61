"""The fused CPU backend (pasa_npu/_fused.py) against the eager torch passes it replaces.

Expected values: the same kernel call with the backend switched off (``_fused.disabled()``), i.e. the
torch passes that the pinned digests of test_kernel_bitexact.py were recorded from; compared as bytes
(``view(int16)``), NaNs included. The reduction-order and exp tests compare the library's pieces with
torch's own ``sum`` and ``exp`` directly. Where the backend cannot be built here the comparisons are
skipped and the fallback tests still run.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from pasa_npu import _fused, data, kernel, pasa_attention
from pasa_npu.kernel import flash_attention
from pasa_npu.methods import run_method

BACKEND = _fused.get_backend()
needs_backend = pytest.mark.skipif(BACKEND is None, reason=f"fused backend: {_fused.fused_backend()}")


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int16 if t.element_size() == 2 else torch.int32)


class _Counter:
    """Counts the fused calls (chain tiles, step blocks) made inside a ``with`` block."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.chain = self.step = self.tile = 0
        chain, step, tile = _fused.Backend.chain, _fused.Backend.step, _fused.Backend.tile

        def count_chain(be, *a, **k):
            r = chain(be, *a, **k)
            self.chain += r is not None
            return r

        def count_step(be, *a, **k):
            r = step(be, *a, **k)
            self.step += r >= 0
            return r

        def count_tile(be, *a, **k):  # one C call: the chain and the step of every group of a tile
            r = tile(be, *a, **k)
            self.tile += r in (0, 1)
            self.chain += r in (0, 1)
            self.step += r in (0, 1)
            return r

        monkeypatch.setattr(_fused.Backend, "chain", count_chain)
        monkeypatch.setattr(_fused.Backend, "tile", count_tile)
        monkeypatch.setattr(_fused.Backend, "step", count_step)


def _same(fn, what: str, counter: _Counter | None = None, fused: bool = True) -> torch.Tensor:
    out = fn()
    with _fused.disabled():
        ref = fn()
    diff = _bytes(out) != _bytes(ref)
    if bool(diff.any()):
        i = tuple(int(x) for x in diff.nonzero()[0])
        err = (out.double() - ref.double()).abs()
        pytest.fail(
            f"{what}: {int(diff.sum())} of {diff.numel()} outputs differ from the eager passes; max|err| "
            f"{float(err[torch.isfinite(err)].max()) if torch.isfinite(err).any() else 'nan'}, "
            f"first at {i}: fused {float(out[i])!r} eager {float(ref[i])!r}"
        )
    if counter is not None and fused:
        assert counter.chain > 0 and counter.step > 0, f"{what}: the fused passes did not run"
    return out


SHAPES = [
    # (batch, heads, kv_heads, S1, S2, d)
    (1, 7, 1, 300, 1407, 128),  # the reference group, ragged S2
    (2, 4, 2, 77, 333, 64),  # GQA, ragged both
    (1, 2, 2, 1, 1000, 128),  # decode
    (1, 3, 1, 129, 261, 96),  # ragged chunk, d = 96
]


@needs_backend
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("method", ["pasa", "pasa:fp16_keymean", "pasa:script", "fa_qk", "fa_q", "fa_naive"])
def test_methods_bit_identical(shape, causal, method, monkeypatch):
    b, h, hkv, s1, s2, d = shape
    q, k, v = data.make_qkv(
        "hybrid",
        mean=10.0,
        amplitude=10.0,
        batch=b,
        heads=h,
        kv_heads=hkv,
        seq_q=s1,
        seq_kv=s2,
        head_dim=d,
        seed=5,
    )
    counter = _Counter(monkeypatch)
    out = _same(lambda: run_method(method, q, k, v, is_causal=causal), f"{method} {shape} causal={causal}")
    if method == "pasa:script":  # its running-mean bookkeeping stays in torch
        assert counter.chain == counter.step == 0
    else:
        assert counter.chain > 0 and counter.step > 0, "the fused passes did not run"
    assert out.shape == (b, h, s1, d)


@needs_backend
@pytest.mark.parametrize("block_kv", [2, 7, 16, 33, 64, 100, 256, 1024])
@pytest.mark.parametrize("precision", ["npu_fp16", "fp16_keymean"])
def test_block_sizes_bit_identical(block_kv, precision, monkeypatch):
    """Block lengths below, at and above the sum's vector widths (the reduction order changes there)."""
    q, k, v = data.make_qkv(
        "uniform",
        mean=30.0,
        amplitude=0.5,
        batch=1,
        heads=4,
        kv_heads=2,
        seq_q=50,
        seq_kv=1100,
        head_dim=64,
        seed=2,
    )
    counter = _Counter(monkeypatch)
    _same(lambda: pasa_attention(q, k, v, block_kv=block_kv, precision=precision), f"n={block_kv}", counter)


@needs_backend
@pytest.mark.parametrize("seq_q", [200, 1000], ids=["several-blocks-per-tile", "one-block-per-tile"])
def test_renormalisation_inside_and_between_tiles(seq_q, monkeypatch):
    """Large V (about 300) and flat scores make the pow2 accumulators renormalise often: between the KV blocks of a
    tile (short chunks hold several blocks per tile) and after the (batch, head) groups of a one-block
    tile."""
    q, k, _ = data.make_qkv(
        "uniform",
        mean=1.0,
        amplitude=1.0,
        batch=1,
        heads=4,
        kv_heads=2,
        seq_q=seq_q,
        seq_kv=1500,
        head_dim=128,
        seed=0,
    )  # flat scores: ℓ grows by about n per block
    g = torch.Generator().manual_seed(1)
    v = (300 + 50 * torch.rand(1, 2, 1500, 128, generator=g)).half()  # large V: a low threshold
    renorms = []
    orig = kernel._Online._renormalise

    def count(self):
        renorms.append(1)
        return orig(self)

    monkeypatch.setattr(kernel._Online, "_renormalise", count)
    counter = _Counter(monkeypatch)
    _same(lambda: pasa_attention(q, k, v), "renormalising", counter)
    assert renorms, "no renormalisation happened"


@needs_backend
def test_presets_the_backend_does_not_model_are_untouched(monkeypatch):
    """fp16_strict (pairwise sums), hybrid/fp32 (wider vector unit), bf16 and fp16_accurate (reference in
    the accumulator) run the eager passes: no fused call, and the same bytes."""
    q, k, v = data.make_qkv(
        "uniform",
        mean=5.0,
        amplitude=2.0,
        batch=1,
        heads=2,
        kv_heads=1,
        seq_q=40,
        seq_kv=300,
        head_dim=32,
        seed=1,
    )
    for prec in ("fp16_strict", "hybrid", "fp32", "bf16", "fp16_accurate"):
        counter = _Counter(monkeypatch)
        _same(lambda prec=prec: pasa_attention(q, k, v, precision=prec), prec)
        assert counter.chain == counter.step == 0, prec


@needs_backend
def test_attention_masks(monkeypatch):
    """Boolean and additive masks (calls with an attn_mask run the torch passes), fully masked rows
    (output 0), and causal with S1 > S2 (early queries see no key; fused)."""
    q, k, v = data.make_qkv(
        "uniform",
        mean=3.0,
        amplitude=3.0,
        batch=1,
        heads=4,
        kv_heads=2,
        seq_q=90,
        seq_kv=200,
        head_dim=64,
        seed=3,
    )
    g = torch.Generator().manual_seed(4)
    keep = torch.rand(1, 4, 90, 200, generator=g) > 0.3
    keep[:, :, :5] = False  # rows that see nothing
    add = torch.randn(1, 4, 90, 200, generator=g).half() * 4
    add[:, :, 7] = float("-inf")
    for name, kw in (("bool", dict(attn_mask=keep)), ("additive", dict(attn_mask=add))):
        counter = _Counter(monkeypatch)
        out = _same(lambda kw=kw: pasa_attention(q, k, v, **kw), name)
        assert counter.chain == counter.step == 0  # an attn_mask: the torch passes
        assert torch.isfinite(out).all()
    q2, k2, v2 = data.make_qkv(
        "uniform",
        mean=3.0,
        amplitude=3.0,
        batch=1,
        heads=2,
        kv_heads=1,
        seq_q=300,
        seq_kv=130,
        head_dim=64,
        seed=3,
    )
    counter = _Counter(monkeypatch)
    out = _same(lambda: pasa_attention(q2, k2, v2, is_causal=True), "causal S1 > S2", counter)
    assert bool((out[:, :, : 300 - 130] == 0).all())  # queries before the first key: 0


@needs_backend
def test_overflow_and_nan_match_the_eager_passes(monkeypatch):
    """fa_qk's unscaled scores overflow fp16 at mean 30 (inf, then inf − inf = NaN): the fused passes
    hand such tiles and blocks to torch, so the NaNs are the same bytes."""
    q, k, v = data.make_qkv(
        "uniform",
        mean=30.0,
        amplitude=0.5,
        batch=1,
        heads=4,
        kv_heads=2,
        seq_q=100,
        seq_kv=300,
        head_dim=128,
        seed=0,
    )
    out = _same(lambda: run_method("fa_qk", q, k, v), "overflowing fa_qk")
    assert bool(torch.isnan(out).any())
    # inputs with inf and NaN entries
    q3 = q.clone()
    q3[0, 0, 3, 5] = float("inf")
    q3[0, 1, 7, 2] = float("nan")
    _same(lambda: pasa_attention(q3, k, v), "inf/NaN inputs")


@needs_backend
@pytest.mark.parametrize("seq_q", [1, 600], ids=["decode-many-blocks-per-tile", "one-block-per-tile"])
def test_overflow_in_a_later_block_hands_the_whole_tile_back(seq_q, monkeypatch):
    """V large in the third KV block only: P·V overflows fp16 there (O = inf, later NaN) after the
    earlier blocks of the same tile were folded in; the state before the tile is restored and torch
    redoes the tile, so no block counts twice and the bytes (inf/NaN included) are eager's."""
    q, k, _ = data.make_qkv(
        "uniform",
        mean=1.0,
        amplitude=1.0,
        batch=1,
        heads=4,
        kv_heads=1,
        seq_q=seq_q,
        seq_kv=700,
        head_dim=64,
        seed=3,
    )
    v = torch.ones(1, 1, 700, 64, dtype=torch.float16)
    v[:, :, 256:384] = 60000.0
    restores = []
    orig = kernel._FusedTiles._restore
    monkeypatch.setattr(
        kernel._FusedTiles, "_restore", staticmethod(lambda st, sv: restores.append(1) or orig(st, sv))
    )
    out = _same(lambda: pasa_attention(q, k, v), "overflow in block 3")
    assert restores, "the fused tile did not hand back"
    assert not bool(torch.isfinite(out).all())


@needs_backend
def test_ties_and_subnormals(monkeypatch):
    """Scores on fp16 rounding ties (q·k = even k0 + 1, odd integers in [2049, 4096) where fp16's
    spacing is 2: the fp32 accumulator holds the midpoint exactly), and exponentials in fp16's
    subnormal range (score differences in [−17, 0] with τ = 1)."""
    d, s2 = 16, 300
    g = torch.Generator().manual_seed(7)
    q = torch.zeros(1, 2, 64, d, dtype=torch.float16)
    q[..., 0], q[..., 1] = 1.0, 1.0
    k = torch.zeros(1, 1, s2, d, dtype=torch.float16)
    k[0, 0, :, 0] = (2048 + 2 * torch.randint(0, 1024, (s2,), generator=g)).half()
    k[0, 0, :, 1] = 1.0
    v = torch.randn(1, 1, s2, d, generator=g).half()
    scores = q[0, :1].float() @ k[0].float().transpose(-1, -2)
    assert bool((scores % 2 == 1).all()) and bool((scores.half().float() != scores).all())  # all ties
    for scale in (None, 1.0):
        counter = _Counter(monkeypatch)
        _same(lambda scale=scale: flash_attention(q, k, v, scale=scale), f"ties, scale {scale}", counter)
    k4 = torch.zeros(1, 1, s2, d, dtype=torch.float16)
    k4[0, 0, :, 0] = -17.0 * torch.rand(s2, generator=g).half()
    k4[0, 0, ::37, 0] = 0.0
    p = torch.exp(k4[0, 0, :, 0])
    assert bool(((p > 0) & (p < 2.0**-14)).any())  # subnormal fp16 exponentials occur
    counter = _Counter(monkeypatch)
    _same(lambda: flash_attention(q, k4, v, scale=1.0), "subnormal P", counter)
    _same(lambda: pasa_attention(q, k4, v, scale=1.0), "subnormal P, pasa", counter)


@needs_backend
@pytest.mark.parametrize(
    "n", [1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 128, 200, 256, 300, 1024]
)
def test_row_sums_follow_torchs_order(n):
    """The library's fp32 and fp16 row sums equal torch's x.sum(-1) bit for bit on rows whose entries
    span fp16's exponent range (where the order of the additions shows)."""
    g = torch.Generator().manual_seed(n)
    rows = 4096
    e = torch.randint(-24, 15, (rows, n), generator=g).float()
    x = (torch.rand(rows, n, generator=g) + 1) * torch.exp2(e) * torch.randn(rows, n, generator=g).sign()
    got = torch.empty(rows)
    BACKEND.lib.pasa_sum_f32_rows(x.data_ptr(), rows, n, BACKEND.lanes, got.data_ptr())
    assert torch.equal(_bytes(got), _bytes(x.sum(-1))), "fp32 row sums"
    h = x.half()
    got16 = torch.empty(rows, dtype=torch.float16)
    BACKEND.lib.pasa_sum_f16_rows(h.data_ptr(), rows, n, BACKEND.lanes, BACKEND.pairing, got16.data_ptr())
    assert torch.equal(_bytes(got16), _bytes(h.sum(-1))), "fp16 row sums"


@needs_backend
def test_exp_table_is_torchs_exp_in_vector_and_scalar_loops():
    """The table (torch.exp of every fp16 pattern in one call) equals torch.exp of the same values at
    every position of tensors whose lengths leave loop tails, NaNs included."""
    pats = torch.arange(1 << 16, dtype=torch.int32)
    x = torch.where(pats >= 1 << 15, pats - (1 << 16), pats).to(torch.int16).view(torch.float16)
    want = _bytes(BACKEND.lut.half())
    for length in (1, 5, 33, 47):
        pad = (-x.numel()) % length
        xs = torch.cat((x, x[:pad])).view(-1, length)  # every value at every position of some call
        got = torch.cat([torch.exp(row) for row in xs.unbind(0)])[: x.numel()]
        assert torch.equal(_bytes(got), want), f"length {length}"


def _run(code: str, env: dict) -> str:
    full = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=300, check=True
    ).stdout.strip()


def test_env_switch_and_missing_compiler_fall_back_to_eager(tmp_path):
    """PASA_FUSED=0, or no compiler (an empty cache and CXX pointing nowhere): the eager passes run,
    fused_backend() says so, and the kernel still works."""
    code = (
        "import torch; from pasa_npu import pasa_attention; from pasa_npu.kernel import fused_backend; "
        "from pasa_npu import data; q, k, v = data.make_qkv('uniform', mean=1.0, amplitude=1.0, batch=1, "
        "heads=2, kv_heads=1, seq_q=20, seq_kv=50, head_dim=16); o = pasa_attention(q, k, v); "
        "print(fused_backend()); print(bool(torch.isfinite(o).all()))"
    )
    out = _run(code, {"PASA_FUSED": "0"})
    assert out.splitlines() == ["eager (disabled by PASA_FUSED=0)", "True"], out
    out = _run(code, {"PASA_NPU_CACHE": str(tmp_path), "CXX": str(tmp_path / "no-such-compiler")})
    lines = out.splitlines()
    assert lines[0].startswith("eager (RuntimeError: no C++ compiler") and lines[1] == "True", out
