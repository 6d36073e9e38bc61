"""pasa_theory.bounds without pasa_npu: symbolic identities, the rounding primitives against exact
rounding, the composition against exact (float64) perturbation experiments, the closed-form envelope
at the fp16 overflow threshold, argument checking, and the torch-free contract.

Oracles are independent of the code under test: exact rational rounding
(:func:`pasa_theory.round_to_format`, itself checked bit for bit against numpy/ml_dtypes/torch casts in
test_rounding_oracles.py), numpy's IEEE float16 arithmetic, and softmax attention evaluated in float64
on explicitly perturbed logits.
"""

from __future__ import annotations

import math
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

import pasa_theory as pt
from pasa_theory import _errormodel as em
from pasa_theory import bounds as pb
from pasa_theory import rigorous as rig
from pasa_theory.formats import get_format, round_array

F16 = get_format("fp16")
U16 = 2.0**-11


def _att(z: np.ndarray, v: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    w = np.exp(z)
    return (w @ v) / w.sum(axis=-1, keepdims=True)


# -- symbolic identities --------------------------------------------------------------------------------------------
def test_every_derivation_verifies_symbolically():
    ids = pb.derivations()
    assert len(ids) >= 12
    bad = [i.name for i in ids if not i.verify()]
    assert not bad, f"identities that do not simplify to zero: {bad}"


# -- standard model -------------------------------------------------------------------------------------------------
def test_standard_model_constants():
    assert pb.unit_roundoff("fp16") == Fraction(1, 2**11)
    assert pb.unit_roundoff("bf16") == Fraction(1, 2**8)
    assert pb.gamma_n(128, "fp16") == Fraction(128, 2**11 - 128)  # nu/(1 − nu), exactly
    assert pb.gamma_n(0, "fp32") == 0
    with pytest.raises(ValueError, match="no deterministic bound"):
        pb.gamma_n(2**11, "fp16")
    # Higham–Mary's γ̃_n(λ) = exp(λ√n·u + n·u²/(1 − u)) − 1, checked through its Taylor expansion instead of
    # the same closed form: with x = λ√n·u and y = n·u²/(1 − u) (exact rationals), γ̃ = (x + y) + (x + y)²/2
    # + r, 0 < r <= (x + y)³/6·e^(x + y). A constant 2x off, or √n for n, fails by orders of magnitude.
    for n, lam in ((4096, 1.0), (144, 3.0), (1, 0.5)):  # perfect squares: √n exact
        gt = Fraction(float(pb.gamma_tilde(n, "fp16", lam=lam)))  # float64: 1e-16 relative, far below r
        x = Fraction(lam) * Fraction(math.isqrt(n)) * Fraction(1, 2**11) if math.isqrt(n) ** 2 == n else None
        assert x is not None
        t = x + n * Fraction(1, 2**22) / (1 - Fraction(1, 2**11))
        rem = gt - t - t * t / 2
        assert 0 < rem <= t**3 / 6 * Fraction(math.exp(float(t))), (n, lam, float(rem), float(t**3 / 6))
    assert pb.gamma_tilde(0, "fp16") == 0


@pytest.mark.parametrize("fmt", ["fp16", "bf16", "fp32"])
def test_rounding_primitives_against_exact_rounding(fmt):
    """|fl(x) − x| <= rbound(x) for every x (constructed boundaries and random), ulp matches the exact
    spacing, and the variance is ulp²/12 (0 where fl flushes to zero)."""
    F = get_format(fmt)
    ms, mn, mx = float(F.min_subnormal), float(F.min_normal), float(F.max_finite)
    rng = np.random.default_rng(1)
    x = np.concatenate(
        [
            rng.uniform(-1, 1, 2000) * 10.0 ** rng.integers(-8, 5, 2000),
            [
                0.0,
                ms / 2,
                ms / 2 * 1.0000001,
                ms,
                1.5 * ms,
                mn,
                mn * (1 - 2.0**-30),
                1.0,
                1 + float(F.u),
                mx,
                -mx,
            ],
        ]
    )
    fl = round_array(x, F)
    err = np.abs(fl - x)
    b = em.rbound(x, F)
    worst = int(np.argmax(err - b))
    assert np.all(err <= b), f"{fmt}: |fl(x) − x| = {err[worst]!r} > bound {b[worst]!r} at x = {x[worst]!r}"
    v, bb = em.rvb(x, F)
    assert np.array_equal(bb, b) and np.array_equal(v, em.rvar(x, F))
    # the spacing against the exact scalar ulp, on every representable value (boundaries included)
    rep = fl[np.isfinite(fl) & (fl != 0)]
    q = em.ulp(rep, F)
    exact_q = np.array([float(pt.ulp(Fraction(float(r)), F)) for r in rep])
    bad = np.flatnonzero(q != exact_q)
    assert bad.size == 0, (
        f"{fmt}: ulp differs at {rep[bad[:5]]!r}: {q[bad[:5]]!r} vs exact {exact_q[bad[:5]]!r}"
    )
    # variance: the exact spacing of the grid around x (its binade's quantum) squared over 12; 0 for
    # values that flush to zero. (The tie x = min_subnormal/2 also rounds to 0 but is modelled as an
    # ordinary rounding of variance ulp²/12.)
    flushed = (fl == 0) & (np.abs(x) < ms / 2)
    nz = ~flushed & (x != 0) & (np.abs(x) <= mx)
    want = np.array([float(pt.ulp(Fraction(float(r)), F)) ** 2 / 12 for r in x[nz]])
    assert np.array_equal(v[nz], want), f"{fmt}: variance differs at x = {x[nz][v[nz] != want][:5]!r}"
    assert np.all(v[flushed] == 0) and np.all(v[x == 0] == 0), (
        f"{fmt}: nonzero variance for x = {x[flushed & (v != 0)]!r}"
    )


def test_exact_subtraction_claims_are_true():
    """Whenever exact_sub claims fl16(a − b) is exact, numpy's float16 subtraction is exact; Sterbenz cases
    are recognised."""
    rng = np.random.default_rng(2)
    a = (rng.standard_normal(20000) * 10.0 ** rng.integers(-3, 4, 20000)).astype(np.float16)
    b = (a * rng.uniform(0.3, 3.0, 20000)).astype(np.float16)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    claim1, claim4 = em.exact_sub2(a64, b64, F16)
    diff16 = (a - b).astype(np.float64)
    ok = diff16 == (a64 - b64)
    assert np.all(ok[claim1]), f"{int((~ok[claim1]).sum())} claimed-exact subtractions were rounded"
    assert np.all(claim1[claim4])
    sterbenz = (b64 / 2 <= a64) & (a64 <= 2 * b64) & (a64 > 0)
    assert np.all(claim1[sterbenz])


def test_erf_and_grid_quantisation():
    xs = np.linspace(-5, 5, 2001)
    assert np.max(np.abs(em.erf(xs) - np.array([math.erf(t) for t in xs]))) < 2e-7
    rng = np.random.default_rng(3)
    x = rng.uniform(1100, 1200, (1, 5000))  # one binade of fp16, quantum 1
    errs = np.concatenate([em.grid_round(x, F16, rng.uniform(0, 1, (1, 1))) - x for _ in range(200)], axis=1)
    assert abs(errs.mean()) < 0.01 and abs(errs.var() - 1 / 12) < 0.003  # uniform marginal on one quantum
    y = em.grid_round(np.sort(x), F16, np.array([[0.37]]))
    assert np.all(np.diff(y) >= 0)  # quantisation keeps the order


def test_rounded_mean_square_limits():
    o = np.array([[1000.3, 1000.3, 1000.3]])
    ref = np.array([[1000.25, 1000.25, 1000.25]])
    q = em.ulp(o, F16)  # 0.5
    tiny = em._rounded_ms(o, np.array([[0.0, 1e-6, 1e-6]]), q, ref, F16)
    det = (round_array(o, F16) - ref) ** 2
    assert np.allclose(tiny, det, rtol=1e-6)  # known to far better than a quantum: deterministic
    # every regime, including the middle one (spread comparable to a quantum), against Monte Carlo:
    # E[(fl16(o + N(0, s²)) − ref)²] from 2·10⁶ draws, within 5 standard errors
    rng = np.random.default_rng(4)
    for s_ in (0.25, 0.5, 1.0, 50.0):  # q/2, q, 2q, 100q
        sq = (round_array(o[:, :1] + rng.normal(0.0, s_, (1, 2_000_000)), F16) - ref[:, :1]) ** 2
        mc, se = float(sq.mean()), float(sq.std() / math.sqrt(sq.size))
        got = float(em._rounded_ms(o[:, :1], np.array([[s_]]), q[:, :1], ref[:, :1], F16)[0, 0])
        assert abs(got - mc) <= 5 * se, f"s = {s_}: model {got:.6g}, Monte Carlo {mc:.6g} ± {se:.2g}"


# -- composition against explicit perturbation experiments -----------------------------------------------------------
def _toy(seed: int, n_keys: int = 40, dv: int = 6):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n_keys) * 2.0
    v = rng.standard_normal((n_keys, dv)) * 3.0 + 1.0
    return z, v


@pytest.mark.parametrize("seed", range(5))
def test_first_order_sensitivities_match_finite_perturbations(seed):
    """E2/E3: Δo = Σ_r p_r ε_r (v_r − o) and a block-common ζ moves o by ζ·B_j, to O(ε²)."""
    z, v = _toy(seed)
    p = np.exp(z - z.max())
    p /= p.sum()
    o = p @ v
    rng = np.random.default_rng(100 + seed)
    eps = rng.standard_normal(z.size) * 1e-6
    lin = (p * eps) @ (v - o)
    act = _att(z + eps, v) - o
    assert np.max(np.abs(act - lin)) <= 1e-4 * np.max(np.abs(lin))
    blk = np.zeros(z.size, dtype=bool)
    blk[10:25] = True
    Bj = (p[blk, None] * (v[blk] - o)).sum(axis=0)
    act = _att(z + 1e-6 * blk, v) - o
    assert np.max(np.abs(act - 1e-6 * Bj)) <= 1e-4 * np.max(np.abs(1e-6 * Bj))


@pytest.mark.parametrize("seed", range(20))
def test_nonlinear_consistent_bound_holds_for_adversarial_perturbations(seed):
    """|o' − o| <= e^{Σp E}·Σ_r p_r (e^{E_r} − 1)|v_r − o| (E7 with Jensen) for perturbations of every sign
    pattern up to |ε_r| <= E_r, including large ones; and never more than the hull cap."""
    z, v = _toy(seed)
    p = np.exp(z - z.max())
    p /= p.sum()
    o = p @ v
    rng = np.random.default_rng(200 + seed)
    E = rng.uniform(0, 3.0, z.size) * (rng.uniform(size=z.size) < 0.5)
    bound = np.exp((p * E).sum()) * ((p * np.expm1(E)) @ np.abs(v - o))
    cap = np.maximum(v.max(axis=0) - o, o - v.min(axis=0))
    for _ in range(50):
        eps = E * rng.choice([-1.0, 1.0], z.size) * rng.uniform(0.5, 1.0, z.size)
        d = np.abs(_att(z + eps, v) - o)
        assert np.all(d <= bound * (1 + 1e-12)), f"{np.max(d - bound)}"
        assert np.all(d <= cap + 1e-12)


def test_absorption_matches_float16_arithmetic():
    """One dominant key and a tiny second one in another block: numpy float16 sums drop the small
    addend exactly as the model's absorption says (ℓ = fl(1 + w) = 1, O = fl(v1 + w·v2) = v1)."""
    v = np.array([[30.25, -3.0], [29.0, 4.0]])
    for w in (1e-5, 2e-4, 4e-3):
        ell16 = np.float16(np.float16(1.0) + np.float16(w))
        o16 = (np.float16(v[0]) + np.float16(w * v[1]).astype(np.float16)).astype(np.float16)
        kernel = o16.astype(np.float64) / float(ell16)
        exact = (v[0] + w * v[1]) / (1 + w)
        # model: two blocks of one key each, top block first
        pw = np.array([[1.0, w]]) / (1 + w)
        step = np.array([[False, True]])
        det, masks = em._absorption(pw, v, 1, 2, step, F16, F16)
        o = pw @ v
        assert masks["absl"][0, 1] == (float(ell16) == 1.0), (w, float(ell16))
        for col in range(2):
            dropped = bool(masks["abso"][0, 1, col])
            assert dropped == (float(o16[col]) == v[0, col])
        if masks["absl"][0, 1] and masks["abso"][0, 1].all():
            pred = o + det
            assert np.allclose(pred, kernel, atol=1e-3 * w), (pred, kernel, exact)


# -- a priori envelope --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("product,overflows", [(65519.0, False), (65521.0, True)])
def test_envelope_at_the_fp16_overflow_threshold(product, overflows):
    """Constant inputs: q·k = d·μ_q·μ_k exactly, which overflows fp16 iff >= 65520 (fa_qk rounds QKᵀ
    before the scale); fa_q compares τ·q·k and stays finite."""
    mq = 16.0
    mk = product / (128 * mq)
    st = pb.InputStats(mq, 0.0, mk, 0.0, 1.0, 0.0, head_dim=128, seq_kv=64, seq_q=4)
    env = pb.overflow_envelope("fa_qk", st)
    assert env.peaks["scores"] == pytest.approx(product, rel=1e-12)
    assert (env.overflow_stage == "scores") == overflows
    assert pb.overflow_envelope("fa_q", st).overflow_stage is None
    assert pb.overflow_envelope("pasa", st).overflow_stage is None


def test_envelope_of_the_accumulators_on_a_long_biased_v():
    """Flat attention over V ≈ 30: unnormalised fp16 O reaches ≈ 30·S2 (docs/precision.md §2.4)."""
    for s2, over in ((2100, False), (2300, True)):  # 30.3·S2 crosses 65520 at S2 ≈ 2160
        st = pb.InputStats(0.0, 0.05, 0.0, 0.05, 30.0, 0.5, head_dim=128, seq_kv=s2, seq_q=128, heads=4)
        assert (pb.overflow_envelope("pasa:script", st).overflow_stage == "accumulator") == over
        assert pb.overflow_envelope("pasa", st).overflow_stage is None  # pow2 accumulators
        assert pb.overflow_envelope("pasa:hybrid", st).overflow_stage is None  # fp32 accumulators


def test_envelope_row_sum_of_a_peaked_softmax_is_its_maximum():
    """Scores spread far wider than √(2 ln S2): the row sum is dominated by the largest weight, so raw
    accumulators stay near max|V| instead of S2·max|V| (checked against the exact sum on sampled rows)."""
    st = pb.InputStats(150.0, 0.5, 150.0, 0.5, 150.0, 0.5, head_dim=128, seq_kv=1407, seq_q=64)
    env = pb.overflow_envelope("pasa:script", st)
    rng = np.random.default_rng(7)
    q = 150.0 + rng.uniform(-0.5, 0.5, (64, 128))
    k = 150.0 + rng.uniform(-0.5, 0.5, (1407, 128))
    s = q @ k.T / np.sqrt(128)
    ell = np.exp(s - s.max(axis=1, keepdims=True)).sum(axis=1)
    print(
        f"envelope row_sum {env.peaks['row_sum']:.3g}, sampled ℓ median {np.median(ell):.3g} max {ell.max():.3g}"
    )
    # an estimate, not a bound: within a factor 2 of every sampled row (it was S2 = 1407 before)
    assert env.peaks["row_sum"] / 2 <= np.median(ell) and ell.max() <= 2 * env.peaks["row_sum"], (
        env.peaks["row_sum"],
        float(np.median(ell)),
        float(ell.max()),
    )
    assert env.overflow_stage is None


def test_envelope_of_the_block_offsets():
    """PASA's own limit: block offsets β·Δ(mean score) beyond the vector format's range."""
    base = dict(spread_q=0.1, spread_k=0.1, mean_v=0.0, spread_v=1.0, head_dim=128, seq_kv=512, seq_q=8)
    small = pb.InputStats(mean_q=60.0, mean_k=0.0, kv_block_drift=60.0, **base)
    large = pb.InputStats(mean_q=80.0, mean_k=0.0, kv_block_drift=80.0, **base)
    assert pb.overflow_envelope("pasa", small).overflow_stage is None
    assert pb.overflow_envelope("pasa", large).overflow_stage == "shift"


def test_term_scales_show_the_recovery_amplification():
    """A priori: on unbiased wide data PASA's block offsets (c·√(σ²/n)) exceed its per-key errors."""
    st = pb.InputStats(0.0, 20.0, 0.0, 20.0, 0.0, 20.0, head_dim=128, seq_kv=1407, seq_q=256, heads=7)
    s = pb.term_scales("pasa", st)
    assert s["recovery"] > 3 * max(s["scores.round"], s["scores.kt"])
    # (the growth with c is checked against measurement in tests/npu/test_predict.py, not against the
    # formula that defines it)


# -- predict on numpy arrays: contract --------------------------------------------------------------------------------
def _small(seed=0, mean=0.0, amp=2.0, s1=8, s2=200, d=32, h=2, hk=1):
    rng = np.random.default_rng(seed)
    q = (mean + amp * rng.uniform(-1, 1, (1, h, s1, d))).astype(np.float16)
    k = (mean + amp * rng.uniform(-1, 1, (1, hk, s2, d))).astype(np.float16)
    v = (mean + amp * rng.uniform(-1, 1, (1, hk, s2, d))).astype(np.float16)
    return q, k, v


def test_predict_on_numpy_is_deterministic_and_well_formed():
    q, k, v = _small()
    a = pt.predict("pasa", q, k, v)
    b = pt.predict("pasa", q, k, v)
    assert a.rmse_estimate == b.rmse_estimate and a.max_abs_bound == b.max_abs_bound
    assert 0 < a.rmse_estimate < a.max_abs_bound
    assert a.row_bound.shape == (1, 2, 8) and a.row_rmse.shape == (1, 2, 8)
    assert a.dominant in pb.TERMS and a.overflow is False and a.overflow_stage is None
    rec = a.as_record()
    assert {f"rms.{t}" for t in pb.TERMS} <= set(rec)
    assert a.beta is not None and a.c is not None and abs(a.kappa) < 1e-3


def test_predict_never_imports_torch_for_numpy_inputs():
    code = (
        "import sys, numpy as np, pasa_theory as pt\n"
        "q = np.ones((1, 1, 4, 16), np.float16); k = np.ones((1, 1, 130, 16), np.float16)\n"
        "p = pt.predict('pasa:script', q, k, k); pt.predict('fa_qk', q, k, k)\n"
        "print('torch' in sys.modules, 'sympy' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.strip() == "False False"


BAD = [
    (dict(method="pasa_x"), ValueError, "method"),
    (dict(method=3), TypeError, "method"),
    (dict(precision="fp8"), ValueError, "precision"),
    (dict(precision=object()), TypeError, "precision"),
    (dict(block_kv=0), ValueError, "block_kv"),
    (dict(block_kv=1), ValueError, "block_kv"),
    (dict(beta=1.0), ValueError, "beta"),
    (dict(beta="0.9"), TypeError, "beta"),
    (dict(scale=-1.0), ValueError, "scale"),
    (dict(is_causal=1), TypeError, "is_causal"),
    (dict(mc_samples=-1), ValueError, "mc_samples"),
    (dict(confidence=1.0), ValueError, "confidence"),
    (dict(confidence=0.0), ValueError, "confidence"),
    (dict(confidence=-0.5), ValueError, "confidence"),
    (dict(confidence="0.99"), TypeError, "confidence"),
    (dict(confidence=True), TypeError, "confidence"),
    (dict(rigorous=1), TypeError, "rigorous"),
    (dict(q=[[1.0]]), TypeError, "q"),
    (dict(q=np.ones((2, 3), np.float16)), ValueError, "4-D"),
    (dict(q=np.ones((1, 2, 8, 32), np.int32)), TypeError, "floating"),
    (
        dict(
            q=np.ones((1, 3, 8, 32), np.float16),
            k=np.ones((1, 2, 200, 32), np.float16),
            v=np.ones((1, 2, 200, 32), np.float16),
        ),
        ValueError,
        "multiple",
    ),
    (dict(k=np.ones((1, 1, 200, 16), np.float16)), ValueError, "head dims"),
]


@pytest.mark.parametrize("kw,exc,words", BAD)
def test_bad_arguments_are_rejected_clearly(kw, exc, words):
    q, k, v = _small()
    args = dict(method="pasa", q=q, k=k, v=v)
    args.update({key: val for key, val in kw.items() if key in args})
    rest = {key: val for key, val in kw.items() if key not in args}
    with pytest.raises(exc, match=words):
        pt.predict(args["method"], args["q"], args["k"], args["v"], **rest)


def test_nonfinite_inputs_predict_an_input_stage_overflow():
    q, k, v = _small()
    q = q.copy()
    q[0, 0, 0, 0] = np.inf
    p = pt.predict("pasa", q, k, v)
    assert p.overflow and p.overflow_stage == "input" and math.isinf(p.max_abs_bound)
    assert math.isinf(p.a_priori_bound) and math.isinf(p.prob_abs_bound) and "non-finite" in p.bound_status


@pytest.mark.parametrize(
    "method, precision", [("fa_qk", "fp64"), ("pasa", "fp64"), ("pasa:fp64", "npu_fp16")]
)
def test_predict_in_fp64_reports_no_overflow(method, precision):
    """fp64 policies (overflow threshold beyond float64's range) predict a finite error of order u_64 on
    small float64 inputs."""
    rng = np.random.default_rng(7)
    q, k, v = (rng.uniform(-1.0, 1.0, (1, 2, 8, 32)) for _ in range(3))
    p = pt.predict(method, q, k, v, precision=precision)
    u64 = 2.0**-53
    assert p.overflow is False and p.overflow_stage is None, f"{method}: overflow at {p.overflow_stage}"
    fo = p.first_order_estimate
    assert 0 < p.rmse_estimate <= fo <= 2**12 * u64, (
        f"{method}: rmse {p.rmse_estimate!r} ({p.rmse_estimate / u64:.3g} u), first-order {fo!r} "
        f"({fo / u64:.3g} u), expected 0 < rmse <= first-order <= 4096 u"
    )
    # fp64: no enclosure in float64 (docs/bounds.md §17.4); the a-priori Theorem 2 covers it (§19.3): ~7·10²
    # u_64 for fa_qk and ~3·10⁵ u_64 for PASA (its offsets carry c ≈ 63) here, and the rigorous bound is
    # Theorem 2 at each row's maxima (§19.4), never above it and never the first-order number
    assert p.a_priori_bound is not None and 0 < p.a_priori_bound < 2**20 * u64, p.a_priori_bound
    assert p.max_abs_bound is not None and 0 < p.max_abs_bound <= p.a_priori_bound, p.max_abs_bound
    assert p.prob_abs_bound == p.max_abs_bound and p.max_abs_bound != fo
    assert p.bound_status.startswith("theorem 2 at each row") and "§19.4" in p.bound_status, p.bound_status
    env = pb.overflow_envelope(
        method,
        pb.InputStats(0.0, 1.0, 0.0, 1.0, 0.0, 1.0, head_dim=32, seq_kv=8, seq_q=8, heads=2),
        precision=precision,
    )
    assert env.overflow_stage is None and env.thresholds["scores"] == math.inf, env.thresholds


def test_a_priori_prediction_uses_the_closed_form_envelope():
    st = pb.InputStats(30.0, 0.5, 30.0, 0.5, 30.0, 0.5, head_dim=128, seq_kv=300, seq_q=256, heads=1)
    pa = pb.predict_a_priori("fa_qk", st, rows=8)
    assert pa.overflow and pa.overflow_stage == "scores"
    pp = pb.predict_a_priori("pasa", st, rows=8)
    assert not pp.overflow and 0 < pp.rmse_estimate < pp.max_abs_bound
    assert pa.overflow_stage == pb.overflow_envelope("fa_qk", st).overflow_stage
    assert pp.overflow_stage == pb.overflow_envelope("pasa", st).overflow_stage is None


# -- the four products of predict ---------------------------------------------------------------------------------
def _hull_cap_loop(q, k, v, causal):
    """max over rows of max over columns of max over visible keys |v_r − o|, one row at a time in float64
    (a plain implementation, independent of pasa_theory)."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    B, H, S1, d = q.shape
    S2, G = k.shape[2], H // k.shape[1]
    best = 0.0
    for b in range(B):
        for h in range(H):
            for i in range(S1):
                last = S2 if not causal else i + (S2 - S1) + 1
                if last <= 0:
                    continue
                kk, vv = k[b, h // G, :last], v[b, h // G, :last]
                s_ = kk @ q[b, h, i] / math.sqrt(d)
                w = np.exp(s_ - s_.max())
                o = w @ vv / w.sum()
                best = max(best, float(np.abs(vv - o).max()))
    return best


@pytest.mark.parametrize("causal", [False, True])
def test_hull_cap_is_the_largest_distance_of_a_visible_value_row(causal):
    q, k, v = _small(seed=3, mean=1.0, amp=3.0, s1=12, s2=20, d=16)
    p = pt.predict("fa_q", q, k, v, is_causal=causal, block_kv=8)
    want = _hull_cap_loop(q, k, v, causal)
    assert p.hull_cap == pytest.approx(want, rel=1e-12, abs=0), (p.hull_cap, want)
    # the rigorous module computes the same cap its own way
    cert = rig.certify("fa_q", q, k, v, is_causal=causal, block_kv=8)
    assert cert.hull_cap == pytest.approx(p.hull_cap, rel=1e-12, abs=0)


def test_predict_wires_the_theorems_in_and_says_what_it_computed():
    q, k, v = _small(seed=5, mean=2.0, amp=2.0)
    p = pt.predict("pasa", q, k, v, confidence=0.95)
    cert = rig.certify("pasa", q, k, v, confidence=0.95)
    apri = rig.a_priori("pasa", rig.stats_of(q, k, v))
    assert p.max_abs_bound == cert.max_abs_bound and p.prob_abs_bound == cert.prob_abs_bound
    assert p.a_priori_bound == apri.bound and p.confidence == 0.95
    assert p.bound_status == "theorem 1 (K̃ enclosed for any summation order)"
    assert p.bound_dominant == cert.dominant and np.array_equal(p.row_bound, cert.row_bound)
    # the former max_abs_bound is kept under its honest name, and is not the rigorous bound
    assert math.isfinite(p.first_order_estimate) and p.first_order_estimate != p.max_abs_bound
    rec = p.as_record()
    assert (rec["pred_bound"], rec["pred_prob"], rec["pred_a_priori"], rec["hull_cap"]) == (
        p.max_abs_bound,
        p.prob_abs_bound,
        p.a_priori_bound,
        p.hull_cap,
    )
    # rigorous=False skips the expensive product and says so; the cheap ones stay
    cheap = pt.predict("pasa", q, k, v, rigorous=False)
    assert cheap.max_abs_bound is None and cheap.prob_abs_bound is None
    assert cheap.a_priori_bound == apri.bound and cheap.bound_status.startswith(
        "not computed: rigorous=False"
    )
    assert cheap.rmse_estimate == p.rmse_estimate and cheap.hull_cap == p.hull_cap


@pytest.mark.parametrize("method", ["sdpa", "pasa:bf16"])
def test_methods_outside_the_theorems_get_none_and_a_reason(method):
    # pasa:bf16 is covered (docs/bounds.md §13.1), but these fp16 inputs are not representable in bf16
    q, k, v = _small(seed=6)
    p = pt.predict(method, q, k, v)
    assert p.max_abs_bound is None and p.prob_abs_bound is None and p.a_priori_bound is None
    assert p.bound_status.startswith("not computed:") and len(p.bound_status) > 20, p.bound_status
    assert math.isfinite(p.first_order_estimate) and math.isfinite(p.rmse_estimate)


@pytest.mark.parametrize("method,status", [("pasa:script", "theorem 8"), ("smooth_k", "theorem 1")])
def test_script_and_smooth_k_get_the_rigorous_bound(method, status):
    """docs/bounds.md §17: Theorem 8 (script) and Lemma 17.4 (smooth_k) give the rigorous and probabilistic
    bounds; the a-priori bound is Theorem 9 for the script (§19.1) and Theorem 2 with Lemma 19.2 for
    smooth_k (§19.2), finite here and never below the rigorous one."""
    q, k, v = _small(seed=6)
    p = pt.predict(method, q, k, v)
    assert p.bound_status.startswith(status), p.bound_status
    assert p.max_abs_bound is not None and 0 < p.max_abs_bound < math.inf
    assert p.prob_abs_bound is not None and p.prob_abs_bound <= p.max_abs_bound
    assert p.a_priori_bound is not None and p.max_abs_bound <= p.a_priori_bound < math.inf, p.a_priori_bound


@pytest.mark.parametrize("method", ["pasa:fp16_keymean", "pasa:fp16_strict", "pasa:hybrid"])
def test_presets_inside_the_theorems_get_bounds(method):
    """docs/bounds.md §13: the presets the theorems now cover get all three bounds from predict."""
    q, k, v = _small(seed=6)
    p = pt.predict(method, q, k, v)
    assert p.bound_status.startswith("theorem 1"), p.bound_status
    assert p.max_abs_bound is not None and p.a_priori_bound is not None and p.prob_abs_bound is not None
    assert 0 < p.max_abs_bound < math.inf and p.prob_abs_bound <= p.max_abs_bound


def test_inputs_not_representable_in_fp16_get_no_bound():
    """The theorems bound the error against attention on the rounded inputs; predict's golden is attention
    on the inputs as given, so float32 inputs off the fp16 grid get no bound (and the reason)."""
    q, k, v = _small(seed=8)
    q32 = q.astype(np.float32) + np.float32(1e-4)
    p = pt.predict("fa_q", q32, k, v)
    assert p.max_abs_bound is None and "representable" in p.bound_status, p.bound_status
    assert pt.predict("fa_q", q.astype(np.float32), k, v).max_abs_bound is not None  # on the grid: bounded
