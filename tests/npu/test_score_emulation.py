"""The shadow simulation's emulated score tile (pasa_theory._scoreemu, docs/error-model.md §8.12) against
the kernel's arithmetic.

Independent route: K̃ from the kernel's own setup call (``pasa_npu.kernel.shifted_keys``) and the score
tile formed here with torch as the kernel forms it (fp32 matrix product of the fp16 operands, one
rounding to fp16, the product by τ_v in fp16). Claims: every element the emulator calls determined is
bit-identical to the kernel's; the order-ambiguous ones are a minority; the model's expected number of
elements that differ from the rounding of the exact value is within 2x of the kernel's count.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pasa_npu import data
from pasa_npu.kernel import shifted_keys
from pasa_theory import _scoreemu
from pasa_theory._errormodel import Exact, make_blocks
from pasa_theory.formats import get_format, round_array
from pasa_theory.policies import resolve, shift_constants

N = 128


def _kernel_tile(qq: np.ndarray, keys: np.ndarray, tau_v: float | None) -> np.ndarray:
    s = (torch.from_numpy(qq).float() @ torch.from_numpy(keys).float().T).half()
    if tau_v is not None:
        s = s * torch.tensor(tau_v, dtype=torch.float16)
    return s.double().numpy()


def _case(method: str, dist: str, mean: float, amp: float):
    q, k, _ = data.make_qkv(
        dist, mean=mean, amplitude=amp, batch=1, heads=1, kv_heads=1, seq_q=16, seq_kv=300, head_dim=128
    )
    qn, kn = q[0, 0].double().numpy(), k[0, 0].double().numpy()
    d = qn.shape[1]
    tau = 1 / math.sqrt(d)
    pol = resolve(method)
    ex = Exact(qn, kn, kn, np.arange(16), tau, 16, False)
    bl = make_blocks(ex, N, pol.kv_tail)
    tau_v = float(round_array(np.array([tau]), pol.vector)[0]) if pol.placement in ("q", "scores") else tau
    consts = None
    kt_run = None
    if pol.shift:
        consts = shift_constants(pol, N, None, tau if pol.placement == "m" else 1.0)
        preset = method.split(":")[1] if ":" in method else "npu_fp16"
        kt_run = shifted_keys(k, precision=preset, block_kv=N)[0, 0].double().numpy()
    emu = _scoreemu.ScoreEmulator(pol, consts, qn, bl.kpad, N, tau, tau_v, np.zeros(bl.s.shape))
    return pol, emu, bl, kt_run, tau_v


@pytest.mark.parametrize(
    "method,dist,mean,amp",
    [
        ("fa_q", "uniform", 30.0, 20.0),
        ("fa_qk", "hybrid", 20.0, 5.0),
        ("fa_qk", "uniform", 0.0, 0.5),
        ("pasa", "uniform", 30.0, 20.0),
        ("pasa", "hybrid", 20.0, 5.0),
        ("pasa:script", "uniform", 10.0, 10.0),
    ],
)
def test_determined_elements_are_the_kernels(method, dist, mean, amp):
    pol, emu, bl, kt_run, tau_v = _case(method, dist, mean, amp)
    keys = bl.kpad
    if kt_run is not None:
        assert emu.kt is not None
        det = ~emu.kt.ambiguous
        bad = np.argwhere(det & (emu.kt.rn != kt_run))
        assert bad.size == 0, f"K̃: {len(bad)} determined elements differ, first {bad[:3].tolist()}"
        changed, expected = int((kt_run != emu.kt.rn).sum()), emu.kt.expected_changes(pol.matmul_out)
        print(
            f"{method} {dist} {mean}/{amp}: K̃ ambiguous {emu.kt_straddles}/{kt_run.size}, kernel != fl(exact) "
            f"{changed}, model {expected:.1f}"
        )
        assert emu.kt_straddles < 0.9 * kt_run.size
        if changed >= 20:
            assert 0.5 <= expected / changed <= 2.0, (changed, expected)
        keys = kt_run
    s = _kernel_tile(emu.qq, keys, tau_v if pol.placement == "scores" else None)
    tile = emu._tile(keys)
    fin = np.isfinite(s)
    bad = np.argwhere(~tile.ambiguous & fin & (tile.rn != s))
    assert bad.size == 0, (
        f"tile: {len(bad)} determined elements differ; first {bad[:1].tolist()}: "
        f"emulated {tile.rn[tuple(bad[0])] if bad.size else None}, kernel {s[tuple(bad[0])] if bad.size else None}"
    )
    changed, expected = int((s != tile.rn)[fin].sum()), tile.expected_changes(pol.matmul_out)
    print(
        f"{method}: tile ambiguous {int(tile.ambiguous.sum())}/{s.size}, kernel != fl(exact) {changed}, model {expected:.1f}"
    )
    assert tile.ambiguous.sum() < 0.6 * s.size
    if changed >= 20:
        assert 0.5 <= expected / changed <= 2.0, (changed, expected)
    if pol.shift:
        # the rounded pseudo-averages as the kernel forms them with pseudo_average="rounded" (fp32 mean of
        # the stored tile, rounded to fp16; the script preset), checked on every shifting case
        R, L = s.shape
        mu_run = torch.from_numpy(s).float().view(R, L // N, N).mean(dim=-1).half().double().numpy()
        mu = emu.block_means_rounded(s - emu.exact, pol.vector, pol.reduce_format)
        bad = np.argwhere(~mu.ambiguous & (mu.rn != mu_run))
        assert bad.size == 0, f"pseudo-averages: {len(bad)} determined means differ, first {bad[:3].tolist()}"
        print(f"pseudo-averages ambiguous {int(mu.ambiguous.sum())}/{mu_run.size}")


def test_a_rounding_boundary_is_ambiguous_and_a_grid_value_is_determined():
    """Constructed: q·k exactly on an fp16 midpoint (2048 + 1 = 2049, between 2048 and 2050) is
    order-ambiguous; 2048 exactly (and far from any boundary) is determined; a draw gives only the two
    neighbours of the midpoint."""
    fp16, fp32 = get_format("fp16"), get_format("fp32")
    x = np.array([[2049.0, 2048.0]])
    mag = np.array([[4096.0, 4096.0]])
    rad = _scoreemu._radius(2, float(fp32.u), mag)
    r = _scoreemu._Rounded(x, rad, rad / 3, lambda y: round_array(y, fp16))
    assert r.ambiguous.tolist() == [[True, False]]
    assert r.rn.tolist() == [[2048.0, 2048.0]]  # ties to even
    rng = np.random.default_rng(0)
    draws = np.concatenate([r.draw(rng) for _ in range(200)])
    assert set(draws[:, 0].tolist()) == {2048.0, 2050.0}
    assert set(draws[:, 1].tolist()) == {2048.0}
