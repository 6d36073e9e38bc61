"""The fused backend's one-call tiles (``pasa_tile``: both products by torch's own sgemm, the score chain
and the step in C) against the Python tile loop and the eager torch passes.

Expected values: the same kernel call with the Python tile loop (``_fused.python_loop()``: torch.matmul,
one C call per pass, itself pinned to the eager passes by test_fused.py) and with the backend switched
off (``_fused.disabled()``: the torch passes the pinned digests were recorded from); compared as bytes,
NaNs included. The kernel's tiles hold several KV blocks for small shapes, so most cases shrink the
tile budget (``kernel._TILE_ELEMENTS``) to make every tile one KV block, the case ``pasa_tile`` takes
(the eager passes give the same bytes for any tile size: every block gets the same roundings). Where
the library or torch's sgemm is unavailable the comparisons are skipped.
"""

from __future__ import annotations

import pytest
import torch

from pasa_npu import _fused, data, kernel, pasa_attention
from pasa_npu.methods import run_method

BACKEND = _fused.get_backend()
needs_direct = pytest.mark.skipif(not _fused.direct(), reason=f"one-call tiles: {_fused.fused_backend()}")


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int16 if t.element_size() == 2 else torch.int32)


def _report(out: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    diff = _bytes(out) != _bytes(ref)
    if bool(diff.any()):
        i = tuple(int(x) for x in diff.nonzero()[0])
        err = (out.double() - ref.double()).abs()
        fin = torch.isfinite(err)
        pytest.fail(
            f"{what}: {int(diff.sum())} of {diff.numel()} outputs differ; max|err| "
            f"{float(err[fin].max()) if fin.any() else 'nan'}, mean|err| "
            f"{float(err[fin].mean()) if fin.any() else 'nan'}, first at {i}: {float(out[i])!r} vs {float(ref[i])!r}"
        )


def _tiles(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the one-call tiles that completed (return codes 0 and 1) inside the test."""
    done: list[int] = []
    tile = _fused.Backend.tile

    def count(be, *a, **k):
        r = tile(be, *a, **k)
        done.append(r)
        return r

    monkeypatch.setattr(_fused.Backend, "tile", count)
    return done


def _three_ways(fn, what: str, done: list[int], expect_direct: bool = True) -> torch.Tensor:
    """fn() with one-call tiles, with the Python loop and with the eager passes: the same bytes."""
    start = len(done)
    out = fn()
    ran = sum(r in (0, 1) for r in done[start:])
    with _fused.python_loop():
        loop = fn()
    with _fused.disabled():
        eager = fn()
    _report(out, loop, f"{what}: one-call tiles vs the Python loop")
    _report(out, eager, f"{what}: one-call tiles vs the eager passes")
    if expect_direct:
        assert ran > 0, f"{what}: no tile ran in one call"
    return out


def _qkv(b, h, hkv, s1, s2, d, seed, dist="hybrid", mean=10.0, amplitude=10.0):
    return data.make_qkv(
        dist,
        mean=mean,
        amplitude=amplitude,
        batch=b,
        heads=h,
        kv_heads=hkv,
        seq_q=s1,
        seq_kv=s2,
        head_dim=d,
        seed=seed,
    )


SHAPES = [
    # (batch, heads, kv_heads, S1, S2, d)
    (1, 7, 1, 130, 300, 128),  # the reference group, ragged S1 and S2
    (2, 4, 2, 77, 333, 64),  # GQA, two batches, ragged both
    (1, 2, 2, 1, 260, 128),  # decode
    (1, 3, 1, 40, 161, 40),  # d = 40: 16 + 16 + 8 lanes in the O update
    (1, 2, 1, 20, 70, 20),  # d = 20: 16 lanes + a scalar tail
]


@needs_direct
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("method", ["pasa", "fa_qk"])  # the shifted step, and flash with τ on the scores
def test_one_call_tiles_bit_identical(shape, causal, method, monkeypatch):
    monkeypatch.setattr(kernel, "_TILE_ELEMENTS", 1)  # one KV block per tile
    done = _tiles(monkeypatch)
    q, k, v = _qkv(*shape, seed=5)
    _three_ways(
        lambda: run_method(method, q, k, v, is_causal=causal), f"{method} {shape} causal={causal}", done
    )


@needs_direct
@pytest.mark.parametrize("block_kv", [2, 16, 33, 100, 256])
def test_block_sizes(block_kv, monkeypatch):
    monkeypatch.setattr(kernel, "_TILE_ELEMENTS", 1)
    done = _tiles(monkeypatch)
    s2 = 90 if block_kv == 2 else 600
    q, k, v = _qkv(1, 4, 2, 50, s2, 64, seed=2, dist="uniform", mean=30.0, amplitude=0.5)
    _three_ways(lambda: pasa_attention(q, k, v, block_kv=block_kv, is_causal=True), f"n={block_kv}", done)


@needs_direct
@pytest.mark.parametrize(
    "changes",
    [dict(pseudo_average="rounded"), dict(accum="raw"), dict(recenter_at=0.25)],
    ids=["rounded-mean", "raw-accumulators", "recentering-often"],
)
def test_bookkeeping_variants(changes, monkeypatch):
    """The step's other modes: the rounded pseudo-average, accumulators without renormalisation, and a
    re-centring threshold that most blocks cross."""
    monkeypatch.setattr(kernel, "_TILE_ELEMENTS", 1)
    done = _tiles(monkeypatch)
    prec = kernel.get_precision("npu_fp16").replace(**changes)
    q, k, v = _qkv(1, 4, 2, 60, 520, 64, seed=7)
    _three_ways(lambda: pasa_attention(q, k, v, precision=prec), str(changes), done)


@needs_direct
def test_reference_sized_tiles_need_no_patch(monkeypatch):
    """At the reference shape's tile size (4 groups of 7 x 128 query rows, n = 128) the kernel itself
    makes one-block tiles: the path runs without any patch (short sequences keep it cheap)."""
    done = _tiles(monkeypatch)
    q, k, v = _qkv(1, 28, 4, 200, 300, 128, seed=1, dist="uniform", mean=30.0, amplitude=0.5)
    _three_ways(lambda: run_method("pasa", q, k, v), "reference-sized", done)


@needs_direct
@pytest.mark.parametrize("chunk", [7, 64])
def test_rows_in_pieces(chunk, monkeypatch):
    """Pieces of 7 (ragged) and 64 query rows inside a group, with the causal mask (row offsets). MKL's
    products of a few rows need not be the bits of the whole product (on this machine 7-row pieces
    differ with two threads, a 1-row piece with one): then the probe keeps the Python loop, and the
    bytes are the same either way."""
    monkeypatch.setattr(kernel, "_TILE_ELEMENTS", 1)
    monkeypatch.setattr(BACKEND, "chunk_rows", chunk)
    done = _tiles(monkeypatch)
    q, k, v = _qkv(1, 7, 1, 130, 300, 64, seed=3)
    probed = BACKEND.gemm_matches(896, 128, 64, 64, chunk) and BACKEND.gemm_matches(
        14, 128, 64, 64, min(chunk, 14)
    )
    _three_ways(
        lambda: pasa_attention(q, k, v, is_causal=True), f"pieces of {chunk}", done, expect_direct=probed
    )


@needs_direct
def test_overflow_and_nan_hand_the_tile_back(monkeypatch):
    """A score that overflows fp16 in the third (batch, KV head) group of a tile, after two groups have
    already updated their state, and a NaN in V (the step's result is NaN): the tile is handed back
    with the state restored, and the torch passes give the same bytes as the eager kernel."""
    monkeypatch.setattr(kernel, "_TILE_ELEMENTS", 1)
    done = _tiles(monkeypatch)
    q, k, v = _qkv(1, 8, 4, 60, 400, 64, seed=4, dist="uniform", mean=1.0, amplitude=1.0)
    q2 = q.clone()
    q2[0, 5, :, :] = 300.0  # KV head 2 (heads 4, 5): Q·Kᵀ beyond 65504 in its second query block
    k2 = k.clone()
    k2[0, 2, :, :] = 300.0
    out = _three_ways(
        lambda: run_method("fa_qk", q2, k2, v), "overflow in group 3", done, expect_direct=False
    )
    assert bool(torch.isnan(out).any() | torch.isinf(out).any()), "the constructed overflow did not happen"
    assert 2 in done, "no tile was handed back for a non-finite score"
    v2 = v.clone()
    v2[0, 3, 250, 7] = float("nan")  # KV head 3, third KV block
    done.clear()
    out = _three_ways(lambda: pasa_attention(q, k, v2), "NaN in V", done, expect_direct=False)
    assert bool(torch.isnan(out).any())
    assert -1 in done, "no tile was handed back for a NaN result"


@needs_direct
def test_two_torch_threads(monkeypatch):
    """With two torch threads (MKL may split the products) the one-call tiles still give the Python
    loop's and the eager passes' bytes (probed per thread count)."""
    monkeypatch.setattr(kernel, "_TILE_ELEMENTS", 1)
    done = _tiles(monkeypatch)
    q, k, v = _qkv(1, 14, 2, 150, 400, 128, seed=6, dist="uniform", mean=30.0, amplitude=0.5)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _three_ways(lambda: pasa_attention(q, k, v, is_causal=True), "2 threads", done)
    finally:
        torch.set_num_threads(threads)


@needs_direct
def test_a_product_probe_that_fails_keeps_the_python_loop(monkeypatch):
    """Where the probe finds the library's products differ from torch.matmul (simulated), no tile runs
    in one call and the bytes are the Python loop's."""
    monkeypatch.setattr(kernel, "_TILE_ELEMENTS", 1)
    monkeypatch.setattr(BACKEND, "_gemm_ok", {})
    monkeypatch.setattr(_fused.Backend, "_gemm_probe", lambda self, *a: False)
    done = _tiles(monkeypatch)
    q, k, v = _qkv(1, 4, 2, 50, 300, 64, seed=8)
    _three_ways(lambda: pasa_attention(q, k, v), "probe fails", done, expect_direct=False)
    assert done == []


@needs_direct
@pytest.mark.parametrize(
    "shape", [(896, 128, 128, 128), (889, 128, 128, 128), (7, 128, 128, 128), (40, 33, 40, 20)]
)
def test_product_probe_at_the_kernels_shapes(shape):
    """The library's products, made whole (the call torch.matmul makes), give torch.matmul's bits at the
    reference shape, its ragged last query block, decode, and an odd small shape."""
    assert BACKEND.gemm_matches(*shape, shape[0])


@needs_direct
def test_backend_names_the_path():
    assert "tile loop in C" in _fused.fused_backend()
    with _fused.python_loop():
        assert "tile loop in Python" in _fused.fused_backend()
        assert not _fused.direct()
    with _fused.disabled():
        assert _fused.fused_backend().startswith("eager")
        assert not _fused.direct()
