"""The rigorous bound for ``smooth_k`` (K minus its rounded sequence mean, then fa_qk; docs/bounds.md §17,
Lemma 17.4), attacked.

Every case runs the real method (pasa_npu.methods.run_method), measures its error against the float64
golden on the *given* K and requires error <= bound on every certified row, 100 %. The hypothesis the
lemma adds (torch's mean of an fp16 tensor = fp32 sum in some order, one fp32 division, one rounding)
is checked against exact rational means; the attacks: grid corners, column means on fp16 rounding
ties, causal / decode / ragged shapes, masks, several d and n. A mutant that takes the exact mean
instead of the rounded one is caught.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from pasa_npu.golden import golden_attention
from pasa_npu.methods import run_method
from pasa_theory import _enclosure, rigorous
from tests.npu.helpers import assert_rows_within_bound, grid_qkv, seeded_mask

F16, F32 = rigorous._FORMATS["fp16"], rigorous._FORMATS["fp32"]


def _check(q, k, v, *, block_kv=128, is_causal=False, mask=None, what=""):
    out = run_method("smooth_k", q, k, v, block_kv=block_kv, is_causal=is_causal, attn_mask=mask).double()
    gold = golden_attention(q, k, v, is_causal=is_causal, attn_mask=mask)
    cert = rigorous.certify("smooth_k", q, k, v, block_kv=block_kv, is_causal=is_causal, attn_mask=mask)
    err = (out - gold).abs().amax(dim=-1).numpy()
    assert_rows_within_bound(err, cert, what)
    return err, cert


def test_torch_fp16_mean_is_inside_the_enclosure():
    """H1 for the mean: torch's fp16 ``mean`` over the sequence lies in fl16 of the any-order fp32 mean
    enclosure (mean_enclosure), and equals fl16 of the exact rational mean on these seeded columns
    (lengths 1…2999, offsets ±30, scales 10⁻³…300), 6 400 columns (exact means for 2 per draw)."""
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        s2 = int(torch.randint(1, 3000, (1,), generator=g))
        scale = float(10 ** torch.empty(1).uniform_(-3, 2.5, generator=g))
        off = float(torch.empty(1).uniform_(-30, 30, generator=g))
        k = (off + scale * torch.randn(s2, 64, generator=g)).half()
        got = k.mean(dim=0).double().numpy()
        kd = k.double().numpy()
        lo, hi = _enclosure.mean_enclosure(kd.T.copy(), kd.T.copy(), F16, F32, 2.0**-38)
        assert np.all((F16.rnd(lo) <= got) & (got <= F16.rnd(hi)))
        exact = [float(sum(Fraction(float(x)) for x in col) / s2) for col in kd.T[:2]]
        assert np.array_equal(got[:2], F16.rnd(np.array(exact)))


@pytest.mark.parametrize(
    "mean,amp",
    [
        (0.0, 1.0),
        pytest.param(0.0, 20.0, marks=pytest.mark.slow),
        (10.0, 2.0),
        pytest.param(20.0, 5.0, marks=pytest.mark.slow),
        pytest.param(30.0, 10.0, marks=pytest.mark.slow),
    ],
)
def test_holds_on_grid_corners(mean, amp):
    q, k, v = grid_qkv(16, 700, 2, d=128, seed=3, mean=mean, amp=amp, dtype=torch.float16)
    _check(q, k, v, what=f"uniform {mean}±{amp}")


@pytest.mark.parametrize(
    "s1,s2,causal,d,n",
    [(1, 513, False, 64, 128), (40, 40, True, 32, 16), (300, 70, True, 64, 32), (9, 129, False, 256, 64)],
)
def test_holds_on_causal_decode_and_ragged_shapes(s1, s2, causal, d, n):
    q, k, v = grid_qkv(s1, s2, 2, d=d, seed=5, mean=5.0, amp=3.0, dtype=torch.float16)
    _check(q, k, v, block_kv=n, is_causal=causal, what=f"S1={s1} S2={s2} causal={causal} d={d} n={n}")


@pytest.mark.parametrize("kind", ["bool_rows", "additive"])
def test_holds_with_masks(kind):
    q, k, v = grid_qkv(20, 300, 2, d=64, seed=7, mean=5.0, amp=3.0, dtype=torch.float16)
    _check(q, k, v, mask=seeded_mask(kind, 20, 300, 2, seed=4), what=f"mask={kind}")


def test_holds_at_column_means_on_fp16_rounding_ties():
    """Every key column's exact mean is the midpoint 1 + 2^-11 between two fp16 numbers (pairs 1 + 2^-11 ± x),
    so k̄ = fl16(mean) is decided by the fp32 sum's order: the enclosure holds both candidates."""
    g = torch.Generator().manual_seed(9)
    s2, d = 256, 32
    x = (torch.rand(s2 // 2, d, generator=g) * 0.5).half().double()
    k = torch.stack([1 + 2.0**-11 + x, 1 + 2.0**-11 - x], dim=1).reshape(1, 1, s2, d).half()
    q = (4 * torch.rand(1, 2, 8, d, generator=g) - 2).half()
    v = (2 * torch.rand(1, 1, s2, d, generator=g) - 1).half()
    _check(q, k, v, what="means on ties")


def test_ignoring_the_rounding_of_the_mean_fails(monkeypatch):
    """A naive version that subtracts the exact mean (no rounding of k̄ to fp16) encloses other keys than
    the kernel's and its 'bound' is below the measured error on a biased cell, where Lemma 17.4 holds."""
    q, k, v = grid_qkv(16, 700, 2, d=128, seed=3, mean=20.0, amp=5.0, dtype=torch.float16)
    _check(q, k, v, what="before the mutation")

    def naive(k, vd, f32, n, kv_tail, mi=None):
        lo = hi = vd.rnd(k - k.mean(axis=0)[None, :])
        return rigorous._pad(lo[None, None], n, kv_tail)[0, 0], rigorous._pad(hi[None, None], n, kv_tail)[
            0, 0
        ]

    monkeypatch.setattr(rigorous, "_smoothed_keys", naive)
    with pytest.raises(AssertionError, match="bound violated"):
        _check(q, k, v, what="naive mean")


def test_predict_reports_both_theorems():
    """predict gives smooth_k the rigorous bound (Lemma 17.4) and, since docs/bounds.md §19.2, the a-priori
    Theorem 2 of its input statistics (stats_of, with k_dev)."""
    import pasa_theory as pt

    q, k, v = grid_qkv(8, 300, 1, d=64, seed=2, mean=1.0, amp=1.0, dtype=torch.float16)
    pred = pt.predict("smooth_k", q, k, v)
    assert pred.bound_status.startswith("theorem"), pred.bound_status
    assert pred.max_abs_bound is not None and np.isfinite(pred.max_abs_bound)
    apri = rigorous.a_priori("smooth_k", rigorous.stats_of(q, k, v))
    assert pred.a_priori_bound == apri.bound and np.isfinite(apri.bound)


def _hybrid_aligned_case(seed):
    """``hybrid`` (fp32 vector unit, fp16 matrix unit): K′ = fl32(K − k̄) is cast to fp16 by the kernel. Keys
    in {−3…3} over 11 keys give means with long fp32 expansions; each query row r is the sign of key r's
    fp16-cast residual, so the cast moves score r by up to d·3·2⁻¹²."""
    g = torch.Generator().manual_seed(seed)
    s2, d = 11, 64
    k = torch.randint(-3, 4, (1, 1, s2, d), generator=g).half()
    kv = k.float()
    kp = kv - kv.mean(dim=2, keepdim=True)
    resid = (kp.half().double() - kp.double()).numpy()[0, 0]
    q = torch.from_numpy(np.sign(resid) * 3).half()[None, None]
    v = torch.rand(1, 1, s2, d, generator=g).half()
    return q, k, v


def _check_hybrid(q, k, v, what):
    kw = dict(precision="hybrid", scale=1 / 16)
    out = run_method("smooth_k", q, k, v, **kw).double()
    gold = golden_attention(q, k, v, scale=1 / 16)
    cert = rigorous.certify("smooth_k", q, k, v, **kw)
    assert_rows_within_bound((out - gold).abs().amax(dim=-1).numpy(), cert, what)


@pytest.mark.parametrize("seed", [0, 5, 24])
def test_hybrid_encloses_the_cast_of_the_smoothed_keys_to_fp16(seed, monkeypatch):
    """Lemma 17.4 at ``hybrid``: the enclosure includes the kernel's cast of K′ to the matrix unit's fp16.
    Without that cast (the enclosure of fl32(K − k̄) alone, as before the fix) the bound is violated,
    by 1.5–2.8× on these inputs."""
    q, k, v = _hybrid_aligned_case(seed)
    _check_hybrid(q, k, v, f"hybrid seed {seed}")
    orig = rigorous._smoothed_keys
    monkeypatch.setattr(
        rigorous, "_smoothed_keys", lambda k, vd, f32, n, tail, mi=None: orig(k, vd, f32, n, tail)
    )
    with pytest.raises(AssertionError, match="bound violated"):
        _check_hybrid(q, k, v, "without the cast")
