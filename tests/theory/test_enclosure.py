"""The enclosure of docs/bounds.md §14 attacked by runs the CPU kernel never makes.

``certify`` claims its bound holds for *every* run allowed by H1–H3: any fp32 summation order of
every accumulation, any exponential within ``EXP32_REL``, any pow2 renormalisation schedule. The real
kernel exercises one order and one exponential. This file holds a separately written plain NumPy
emulation of the kernel's steps a–h (fp16 / fp32 by NumPy casts, which round correctly from float64)
in which each accumulation is summed in a random order (a random permutation, summed sequentially or
as a pairwise tree), each exponential is perturbed by a random relative error inside H2, and the
renormalisation threshold is a random power of two; its outputs, against an independent float64
softmax, must lie within the certified bound on every row, 100 %. Torch-free.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from pasa_theory import policies, rigorous


def f16(x):
    with np.errstate(over="ignore"):
        return np.asarray(x, dtype=np.float64).astype(np.float16).astype(np.float64)


def f32(x):
    with np.errstate(over="ignore"):
        return np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float64)


def bf16(x):
    """Round to bf16 by the bit pattern (round to nearest even on the upper 16 bits of the fp32), after
    rounding to fp32 as torch does: written independently of pasa_theory's rounding."""
    with np.errstate(over="ignore"):
        u = np.asarray(x, dtype=np.float64).astype(np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return r.astype(np.uint32).view(np.float32).astype(np.float64)


_RND = {"fp16": f16, "bf16": bf16, "fp32": f32}


def tree(x, rnd):
    """The vector unit's pairwise sum over the last axis (reduce="pairwise"): zero-padded to a power of
    two, x[:h] + x[h:] rounded by ``rnd`` at every level."""
    m = x.shape[-1]
    w = 1 << (m - 1).bit_length()
    x = np.concatenate([x, np.zeros((*x.shape[:-1], w - m))], axis=-1)
    while x.shape[-1] > 1:
        h = x.shape[-1] // 2
        x = rnd(x[..., :h] + x[..., h:])
    return x[..., 0]


class Emulator:
    """One run of the kernel with random (H1–H2-admissible) choices drawn from ``rng``."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def sum32(self, terms: np.ndarray) -> np.ndarray:
        """fp32 sum over the last axis of fp32-exact terms, in a random order."""
        m = terms.shape[-1]
        x = terms[..., self.rng.permutation(m)]
        if self.rng.random() < 0.5:
            acc = x[..., 0]
            for i in range(1, m):
                acc = f32(acc + x[..., i])
            return acc
        while x.shape[-1] > 1:
            if x.shape[-1] % 2:
                x = np.concatenate([x, np.zeros_like(x[..., :1])], axis=-1)
            x = f32(x[..., 0::2] + x[..., 1::2])
        return x[..., 0]

    def exp(self, y: np.ndarray, rnd) -> np.ndarray:
        """fl(E(y)) with E(y) = fl32(e^y·(1 + ρ)), |ρ| < EXP32_REL − 2^-24 (so |E − e^y| ≤ EXP32_REL·e^y)."""
        rho = (self.rng.random(y.shape) * 2 - 1) * (rigorous.EXP32_REL - 2.0**-24)
        with np.errstate(over="ignore", invalid="ignore"):
            e = f32(np.exp(y) * (1 + rho))
        e = np.where(y == 0, 1.0, np.where(y <= 0, np.minimum(e, 1.0), e))
        return rnd(np.where(y == -np.inf, 0.0, e))

    def run(self, method, q, k, v, *, n, causal=False):
        """q (R, d), k (S2, d), v (S2, dv) with fp16 values; rows are the last R query positions of
        S1 = R (bottom-right causal mask)."""
        pol = policies.resolve(method) if ":" in method else policies.resolve(method, "npu_fp16")
        vd, mo, mi = _RND[pol.vector.name], _RND[pol.matmul_out.name], _RND[pol.matmul_in.name]
        pairwise = pol.reduce == "pairwise"
        R, D = q.shape
        S2 = k.shape[0]
        tau = 1 / math.sqrt(D)
        T = -(-S2 // n)
        L = T * n
        idx = np.arange(S2, L) - (L - S2)  # the wrap rule: the preceding rows, cyclically
        kp = np.concatenate([k, k[np.arange(S2 - (L - S2), S2) % S2]]) if L > S2 else k
        vp = np.concatenate([v, v[np.arange(S2 - (L - S2), S2) % S2]]) if L > S2 else v
        del idx
        cols = np.arange(L)
        vis = np.broadcast_to(cols < S2, (R, L)).copy()
        if causal:
            vis &= cols[None, :] <= np.arange(R)[:, None] + (S2 - R)
        c = None
        if pol.shift:
            cs = policies.shift_constants(pol, n, None, tau)
            diag, off, c = float(mi(cs.diag)), float(mi(cs.off)), float(vd(cs.c))
            M = np.full((n, n), off)
            np.fill_diagonal(M, diag)
            kb = kp.reshape(T, n, D)
            terms = M.T[None, :, :, None] * kb[:, None, :, :]  # (T, r, r', d)
            kt = mi(self.sum32(np.moveaxis(terms, 2, -1))).reshape(L, D)
            s = mo(self.sum32(f32(q[:, None, :] * kt[None, :, :])))
            if pol.recovery == "key_mean":  # δ_j = q·Δk_j, Δk_j = fl(fl32(k̄_j − k̄_0)·fl32(−off·n))
                kbar = f32(self.sum32(np.moveaxis(kb, 1, -1)) / n)  # (T, d)
                dk = mi(f32(f32(kbar - kbar[:1]) * float(f32(-cs.off * n))))
                offs = vd(mo(self.sum32(f32(q[:, None, :] * dk[None, :, :]))))  # (R, T)
        else:
            qm = q
            if pol.scale == "q":
                qm = mi(vd(q * float(vd(tau))))
            s = mo(self.sum32(f32(qm[:, None, :] * kp[None, :, :])))
            s = vd(s)
            if pol.scale == "scores":
                s = vd(s * float(vd(tau)))
        s = vd(s)
        renorm_at = 2.0 ** int(self.rng.integers(1, 15)) if pol.accum == "pow2" else math.inf
        m = np.full(R, -np.inf)
        ell = np.zeros(R)
        O = np.zeros((R, v.shape[1]))
        down = np.ones(R)
        a = phi = None
        for j in range(T):
            sj, vj = s[:, j * n : (j + 1) * n], vis[:, j * n : (j + 1) * n]
            mj = np.where(vj.any(axis=1), np.max(np.where(vj, sj, -np.inf), axis=1), -np.inf)
            x = vd(mj - m) if True else None
            with np.errstate(invalid="ignore"):
                x = vd(mj - m)
            if pol.shift and pol.recovery == "key_mean":
                dj = offs[:, j]
                if phi is None:
                    phi = np.zeros(R)
                with np.errstate(invalid="ignore"):
                    x = vd(x + vd(dj - phi))
            elif pol.shift:
                if pairwise:  # A = fl(tree(s)/n), e = fl(tree(fl(s − A))/n)
                    if a is None:
                        a = vd(tree(sj, vd) / n)
                    e = vd(tree(vd(sj - a[:, None]), vd) / n)
                else:
                    mu = f32(self.sum32(sj) / n)
                    if a is None:
                        a = vd(mu)
                    e = vd(f32(mu - a))
                dj = vd(e * c)
                if phi is None:
                    phi = np.zeros(R)
                else:
                    far = np.abs(dj) > 16
                    an = np.where(far, vd(a + e), a)
                    delta = vd(an - a)
                    dj = np.where(far, vd(vd(e - delta) * c), dj)
                    phi = np.where(far, vd(phi - vd(delta * c)), phi)
                    a = an
                with np.errstate(invalid="ignore"):
                    x = vd(x + vd(dj - phi))
            x = np.where(np.isnan(x), -np.inf, x)
            take = x > 0
            alpha = self.exp(np.minimum(-x, 0.0), vd)
            gamma = self.exp(np.minimum(x, 0.0), vd)
            ref = np.where(mj == -np.inf, 0.0, mj)
            with np.errstate(invalid="ignore"):
                y = np.where(vj, vd(sj - ref[:, None]), -np.inf)
            p = self.exp(y, vd)
            lj = tree(p, vd) if pairwise else vd(self.sum32(p))
            pm = mi(p)  # P as a matrix-unit operand
            pv = vd(mo(self.sum32(pm[:, None, :] * vp[j * n : (j + 1) * n].T[None, :, :])))
            l_in = vd(vd(gamma * lj) * down)
            ell = vd(vd(alpha * ell) + l_in)
            o_in = vd(vd(gamma[:, None] * pv) * down[:, None])
            O = vd(vd(alpha[:, None] * O) + o_in)
            if pol.accum == "pow2" and (ell >= renorm_at).any():
                _, ex = np.frexp(ell)
                sh = np.where(ell > 0, ex - 1, 0)
                f = np.ldexp(1.0, -sh)
                ell, O = vd(ell * f), vd(O * f[:, None])
                down = vd(down * f)
            m = np.where(take, mj, m)
            if pol.shift:
                phi = np.where(take, dj, phi)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = vd(O / ell[:, None])
        return mi(np.where(ell[:, None] == 0, 0.0, out))  # cast to the inputs' format


def golden(q, k, v, causal=False):
    """Softmax attention in float64 (no package code)."""
    R, D = q.shape
    s = (q @ k.T) / math.sqrt(D)
    if causal:
        keep = np.arange(k.shape[0])[None, :] <= np.arange(R)[:, None] + (k.shape[0] - R)
        s = np.where(keep, s, -np.inf)
    mx = np.max(s, axis=1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    w = np.exp(s - mx)
    sw = w.sum(axis=1, keepdims=True)
    return np.where(sw > 0, (w @ v) / np.where(sw > 0, sw, 1.0), 0.0)


def _case(rng, kind, R, S2, D, Dv):
    if kind == "biased":
        q, k, v = rng.normal(30, 1, (R, D)), rng.normal(30, 1, (S2, D)), rng.normal(30, 1, (S2, Dv))
    elif kind == "wide":
        q, k = rng.uniform(-8, 8, (R, D)), rng.uniform(-8, 8, (S2, D))
        v = rng.uniform(-20, 20, (S2, Dv))
    elif kind == "tiny_v":  # O and ℓ near the subnormal range after renormalisation
        q, k = rng.normal(0, 2, (R, D)), rng.normal(0, 2, (S2, D))
        v = rng.normal(0, 1, (S2, Dv)) * 2.0**-16
    elif kind == "one_small":  # biased scores but one key's shifted score near 0: the block mean is inexact
        q, k, v = rng.normal(30, 1, (R, D)), rng.normal(30, 1, (S2, D)), rng.normal(0, 1, (S2, Dv))
        k[5] = k.mean(axis=0) * 0.974
    else:
        q, k, v = rng.normal(0, 1, (R, D)), rng.normal(0, 1, (S2, D)), rng.normal(0, 1, (S2, Dv))
    return f16(q), f16(k), f16(v)


@pytest.mark.parametrize(
    "method,kind,S2,n,D,causal",
    [
        ("pasa", "biased", 160, 32, 32, False),
        ("pasa", "wide", 100, 16, 32, True),
        ("pasa", "normal", 200, 64, 64, False),
        ("pasa", "tiny_v", 300, 16, 32, False),
        ("pasa", "one_small", 96, 32, 32, False),
        ("fa_qk", "wide", 100, 16, 32, False),
        ("fa_qk", "tiny_v", 300, 16, 32, True),
        ("fa_q", "biased", 120, 32, 16, False),
        ("fa_hybrid", "biased", 120, 32, 32, True),
        ("pasa:hybrid", "wide", 100, 16, 32, False),
        ("pasa:hybrid", "biased", 160, 32, 32, True),
        ("pasa:bf16", "biased", 160, 32, 32, False),
        ("pasa:bf16", "wide", 100, 16, 32, True),
        ("pasa:fp32", "wide", 100, 16, 32, False),
        ("pasa:fp16_strict", "biased", 160, 32, 32, False),
        ("pasa:fp16_strict", "one_small", 96, 32, 32, True),
        ("pasa:fp16_keymean", "biased", 160, 32, 32, False),
        ("pasa:fp16_keymean", "wide", 100, 16, 32, True),
    ],
)
def test_bound_holds_for_random_summation_orders_and_exponentials(
    method, kind, S2, n, D, causal, monkeypatch
):
    """Element-wise: every output of every random run lies in the enclosure of §14 (captured from
    certify), and its error is within the certified row bound."""
    from pasa_theory import _enclosure

    seen = []
    orig = _enclosure.enclose_run

    def capture(*args):
        r = orig(*args)
        seen.append(r)
        return r

    monkeypatch.setattr(_enclosure, "enclose_run", capture)
    rng = np.random.default_rng(zlib.crc32(f"{method} {kind} {S2}".encode()))
    R, Dv = 6, 8
    q, k, v = _case(rng, kind, R, S2, D, Dv)
    mi = _RND[policies.resolve(method).matmul_in.name] if ":" in method else f16
    q, k, v = mi(q), mi(k), mi(v)  # the inputs in the matrix unit's format (bf16: rounded)
    gold = golden(q, k, v, causal)
    cert = rigorous.certify(method, q[None, None], k[None, None], v[None, None], block_kv=n, is_causal=causal)
    bound = cert.row_bound[0, 0]
    ((r_lo, r_hi, bad),) = seen
    worst = 0.0
    outside = 0
    for trial in range(12):
        out = Emulator(np.random.default_rng(1000 * trial + S2)).run(method, q, k, v, n=n, causal=causal)
        inside = (out >= r_lo) & (out <= r_hi)
        outside += int((~inside & ~bad[:, None]).sum())
        assert np.all(inside | bad[:, None]), (
            f"{method} {kind} trial {trial}: {int((~inside).sum())} outputs outside the enclosure, e.g. "
            f"{out[~inside][:3]} vs [{r_lo[~inside][:3]}, {r_hi[~inside][:3]}]"
        )
        err = np.abs(out - gold).max(axis=1)
        slack = 1e-12 * (np.abs(gold).max() + 1)
        bad = ~(err <= bound + slack)
        assert not bad.any(), (
            f"{method} {kind} trial {trial}: rows {np.flatnonzero(bad)} err {err[bad]} > bound {bound[bad]}"
        )
        worst = max(worst, float((err / np.where(bound > 0, bound, 1)).max()))
    width = float(np.median(r_hi - r_lo))
    print(
        f"{method} {kind}: max over trials of err/bound = {worst:.3f}; bound {cert.max_abs_bound:.3e}; "
        f"median enclosure width {width:.2e}; rows without enclosure {int(bad.sum())}"
    )


def test_reference_split_at_an_fp16_rounding_boundary(monkeypatch):
    """PASA: the first block mean μ₀ swept in steps of a few fp32 ulps across an fp16 rounding boundary
    of A = fl16(μ₀), so that the enclosure of μ₀ straddles it and the case split of Lemma 14.1 is
    taken (counted); random runs must stay within the bound on both sides."""
    from pasa_theory import _enclosure

    calls = {"split": 0}
    orig = _enclosure._run

    def counting(eng, slo, shi, vis, vp, center, a0, mu0, *rest):
        if a0 is not None and np.any(np.isfinite(a0)):
            calls["split"] += 1
        return orig(eng, slo, shi, vis, vp, center, a0, mu0, *rest)

    monkeypatch.setattr(_enclosure, "_run", counting)
    rng = np.random.default_rng(77)
    R, S2, n, D, Dv = 4, 64, 32, 16, 8
    q = f16(rng.normal(0, 0.3, (R, D)))
    q[:, 0] = 8.0
    k = f16(rng.normal(0, 0.3, (S2, D)))
    v = f16(rng.normal(0, 1, (S2, Dv)))
    for step in range(24):
        kk = k.copy()
        kk[:n, 0] = f16(kk[:n, 0] + step * 2.0**-9)  # moves μ₀ by about 8·2⁻⁹·(1 − β)·τ per step
        gold = golden(q, kk, v)
        cert = rigorous.certify("pasa", q[None, None], kk[None, None], v[None, None], block_kv=n)
        for trial in range(3):
            out = Emulator(np.random.default_rng(step * 10 + trial)).run("pasa", q, kk, v, n=n)
            err = np.abs(out - gold).max(axis=1)
            assert np.all(err <= cert.row_bound[0, 0] + 1e-12), (step, trial, err, cert.row_bound)
    print(f"{calls['split']} enclosure cases with a split reference (24 certificates)")
    assert calls["split"] > 0


# ---------------------------------------------------------------------------------------------------
# the building blocks, against exact arithmetic (each of them is rarely decisive in a whole run)

F16, F32 = rigorous._FORMATS["fp16"], rigorous._FORMATS["fp32"]


def _fp16_grid(lo: float, hi: float) -> np.ndarray:
    x = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float64)
    x = x[np.isfinite(x)]
    return np.unique(x[(x >= lo) & (x <= hi)])


@pytest.mark.parametrize("fmt_name", ["fp16", "fp32"])
def test_exp_enclosure_contains_both_extremes_of_h2(fmt_name):
    """Every pinned fp16 argument y ≤ 11: fl(E(y)) for E(y) = e^y(1 ± EXP32_REL) (the extremes H2
    allows, computed in exact rational arithmetic from the float64 e^y's exact enclosure) lies in
    the enclosure; and the enclosure is one value wide for most y (not vacuous)."""
    from fractions import Fraction

    from pasa_theory import _enclosure
    from pasa_theory.formats import get_format, round_to_format

    fmt = rigorous._FORMATS[fmt_name]
    y = _fp16_grid(-17.0, 11.0)
    lo, hi = _enclosure.exp_enclosure(y, y, fmt, rigorous.EXP32_REL)
    f = get_format(fmt_name)
    rel = Fraction(rigorous.EXP32_REL)
    for yi, li, hi_ in zip(y[::7], lo[::7], hi[::7]):
        e = Fraction(math.exp(yi))
        band = Fraction(2.0**-52) * e  # |float64 exp − e^y| < 2^-52 e^y (glibc)
        for ext in (e * (1 - rel) - band, e * (1 + rel) + band):
            r = float(round_to_format(ext, f)) if yi != 0 else 1.0
            if yi <= 0:
                r = min(r, 1.0)
            assert li <= r <= hi_, (yi, r, li, hi_)
    assert np.mean(lo == hi) > (0.99 if fmt_name == "fp16" else 0.0)


def test_sum_enclosure_and_tree_error_hold_for_adversarial_fp32_orders():
    """fp32 sums of terms built to make every addition round the same way (1 followed by terms of
    just over half an ulp), and of mixed magnitudes, in sequential, reversed and random orders: the
    computed sum lies in sum_enclosure's interval and within tree_error of the exact sum (exact
    rational arithmetic); and tree_error is not loose by more than 3x on the adversarial sum."""
    from fractions import Fraction

    from pasa_theory import _enclosure

    rng = np.random.default_rng(5)
    u = 2.0**-24
    cases = [np.concatenate([[1.0], np.full(127, u * 1.0000001)])]
    for _ in range(20):
        m = int(rng.integers(2, 200))
        cases.append(f32(rng.normal(0, 1, m) * np.exp2(rng.integers(-12, 12, m))))
    worst = 0.0
    for i, x in enumerate(cases):
        x = f32(x)
        exact = sum(Fraction(float(t)) for t in x)
        mag = np.abs(x).sum()
        lo, hi = _enclosure.sum_enclosure(np.float64(x.sum()), np.float64(x.sum()), mag, x.size, u, 2.0**-38)
        te = float(_enclosure.tree_error(np.abs(x)[None], u)[0])
        for order in (np.arange(x.size), np.arange(x.size)[::-1], rng.permutation(x.size)):
            acc = np.float32(0)
            for t in x[order]:
                acc = np.float32(acc + np.float32(t))
            err = abs(Fraction(float(acc)) - exact)
            assert lo <= float(acc) <= hi, (float(acc), lo, hi)
            assert err <= Fraction(te), (float(err), te)
            if i == 0:
                worst = max(worst, float(err) / te)
    assert worst > 1 / 3, worst


def test_rounding_residual_encloses_fl_y_minus_y():
    """_rounded's residual interval contains fl(y) − y (exact arithmetic) for pinned y, including ties,
    and for y anywhere in a wide interval."""
    from fractions import Fraction

    from pasa_theory import _enclosure

    rng = np.random.default_rng(8)
    g = _fp16_grid(-3000.0, 3000.0)
    ties = (g[:-1] + g[1:]) / 2
    y = np.concatenate([ties[::97], rng.normal(0, 50, 500), rng.normal(0, 1e-6, 50)])
    r_lo, r_hi, (e_lo, e_hi) = _enclosure._rounded(F16.rnd(y), F16.rnd(y), y, y, F16, 0.0)
    for yi, a, b in zip(y, e_lo, e_hi):
        res = Fraction(float(F16.rnd(yi))) - Fraction(float(yi))
        assert Fraction(float(a)) <= res <= Fraction(float(b)), (yi, float(res), a, b)
    assert np.mean(e_lo == e_hi) > 0.9  # pinned values give the residual itself
    lo, hi = y - np.abs(y) * 0.01, y + np.abs(y) * 0.01
    _, _, (e_lo, e_hi) = _enclosure._rounded(F16.rnd(lo), F16.rnd(hi), lo, hi, F16, 0.0)
    for t in np.linspace(0, 1, 7):
        z = lo + t * (hi - lo)
        res = F16.rnd(z) - z  # exact in float64 (an fp16 rounding residual of a float64 value)
        assert np.all((res >= e_lo) & (res <= e_hi))


def test_score_accumulator_enclosure_holds_for_random_orders():
    """Lemma 3 (ii): the fp32 accumulator of q·k̃ in random orders (sequential and pairwise, NumPy fp32)
    lies in _score_tile's interval, for mixed magnitudes where the order changes the result; and the
    order does change it (the test is not vacuous)."""
    rng = np.random.default_rng(12)
    D = 64
    q = f16(rng.normal(0, 1, (8, D)) * np.exp2(rng.integers(-6, 6, (8, D))))
    k = f16(rng.normal(0, 1, (40, D)) * np.exp2(rng.integers(-6, 6, (40, D))))
    # row 0 · key 0: 1 followed by 63 products of just over half an ulp of 1 (every addition rounds up
    # when the 1 comes first): the worst case of the γ_D bound, up to a factor 2
    q[0] = 2.0**-12
    q[0, 0] = 1.0
    k[0] = f16(2.0**-12 * (1 + 2.0**-10))
    k[0, 0] = 1.0
    lo, hi = rigorous._score_tile(q, k, k)
    results = set()
    for trial in range(8):
        acc = Emulator(np.random.default_rng(trial)).sum32(q[:, None, :] * k[None, :, :])
        assert np.all((acc >= lo) & (acc <= hi)), trial
        results.add(acc.tobytes())
    assert len(results) > 1
    seq = np.float32(0)
    for t in q[0] * k[0]:  # sequential, the 1 first
        seq = np.float32(seq + np.float32(t))
    exact = float(np.sum(q[0] * k[0]))  # exact in float64 (64 terms on a 2^-34 grid below 2)
    assert lo[0, 0] <= float(seq) <= hi[0, 0]
    assert float(seq) - exact > 0.3 * (hi[0, 0] - exact), (float(seq) - exact, hi[0, 0] - exact)
