"""The floor of a fully fp16 vector unit: an *estimate* (a rounding-error model), docs/beyond.md §3.

Whatever a fully fp16 flash attention does on its matrix unit, its vector unit computes the exponent
argument x = τ·s − m (≤ 0) in fp16, so x carries a rounding error of about half its quantum, ≈ u·|x|
(u = 2^−11), and the weight e^x carries that as a *relative* error. Averaged under the softmax weights
w this is u·E_w|x|, against ``fa_hybrid``'s u per weight (its only fp16 roundings are P as the P·V
operand and the output). On top come the roundings of the weights themselves, of the row sum ℓ and of
the output accumulator O (once per KV block each) and of the output.

The model (stated once, used by :func:`fp16_vector_floor` linearised and by :func:`floor_monte_carlo`
sampled): every rounding listed below is an independent error uniform on ±q/2, q the fp16 quantum at
the exact value; weights are taken relative to the row's maximum (frame changes of a real kernel are
ignored); the matrix unit is exact (scores in float64).

* fully fp16 vector unit (the floor): x rounded (``argument``), p = e^x̂ rounded and used for both ℓ
  and P·V (``weight``), ℓ rounded after each KV block (``row_sum``), each O element rounded after each
  block (``accumulator``), the output rounded (``output``);
* ``fa_hybrid``: P rounded as the P·V operand only (ℓ from the unrounded weights), the output rounded.

No torch: inputs are numpy arrays (or anything ``np.asarray`` reads) in BNSD layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .formats import FloatFormat, get_format, quantum_array
from .schema import check_block, check_bnsd, check_scale

__all__ = ["FloorEstimate", "fp16_vector_floor", "floor_monte_carlo", "SOURCES"]

#: The rounding sources of the fully fp16 vector unit, in pipeline order.
SOURCES = ("argument", "weight", "row_sum", "accumulator", "output")

_F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class FloorEstimate:
    """Predicted relative RMSE (RMSE / RMS(V), as the harness measures) of the fully fp16 vector unit's
    floor and of ``fa_hybrid`` under the model of this module (estimates, not bounds), with the floor's
    mean squared error by source and the weight-averaged |x| (per row; its maximum and median)."""

    rel_rmse_floor: float
    rel_rmse_hybrid: float
    parts: dict[str, float]
    ew_abs_x_max: float
    ew_abs_x_median: float

    @property
    def ratio(self) -> float:
        """The floor ÷ ``fa_hybrid`` (both predicted)."""
        return self.rel_rmse_floor / self.rel_rmse_hybrid


def _inputs(
    q: npt.ArrayLike, k: npt.ArrayLike, v: npt.ArrayLike, scale: object, block_kv: object
) -> tuple[_F64, _F64, _F64, float, int, int]:
    qa, ka, va = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    B, H, Hkv, S1, S2, D, Dv = check_bnsd(qa.shape, ka.shape, va.shape)
    tau = check_scale(scale, D)
    n = check_block(block_kv)
    for name, a in (("q", qa), ("k", ka), ("v", va)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} must be finite")
    return qa, ka, va, tau, n, H // Hkv


def _rows(qa: _F64, ka: _F64, va: _F64, tau: float, group: int, chunk: int = 256):  # type: ignore[no-untyped-def]
    """Per chunk of query rows: (x = τ·s − max, w = e^x, V of the row's KV head, golden o)."""
    B, H, S1, _ = qa.shape
    for b in range(B):
        for h in range(H):
            kk, vv = ka[b, h // group], va[b, h // group]
            for i0 in range(0, S1, chunk):
                s = tau * (qa[b, h, i0 : i0 + chunk] @ kk.T)
                x = s - s.max(axis=1, keepdims=True)
                w = np.exp(x)
                ell = w.sum(axis=1, keepdims=True)
                yield x, w, vv, (w @ vv) / ell


def _block_partials(w: _F64, vv: _F64, n: int) -> tuple[_F64, _F64]:
    """ℓ_t and O_t: the running row sums and output accumulators after each KV block t."""
    rows, S2 = w.shape
    T = -(-S2 // n)
    pad = T * n - S2
    wp = np.pad(w, ((0, 0), (0, pad)))
    vp = np.pad(vv, ((0, pad), (0, 0)))
    lt = np.cumsum(wp.reshape(rows, T, n).sum(axis=2), axis=1)  # (rows, T)
    ot = np.cumsum(np.einsum("rtn,tnc->rtc", wp.reshape(rows, T, n), vp.reshape(T, n, -1)), axis=1)
    return lt, ot


def _centred(a: _F64, vv: _F64, o: _F64) -> _F64:
    """Σ_j a_rj·(v_jc − o_rc)² for every row r and column c, without the (rows, S2, Dv) array."""
    return a @ vv**2 - 2 * o * (a @ vv) + o**2 * a.sum(axis=1, keepdims=True)


def fp16_vector_floor(
    q: npt.ArrayLike,
    k: npt.ArrayLike,
    v: npt.ArrayLike,
    *,
    scale: float | None = None,
    block_kv: int = 128,
    fmt: str | FloatFormat = "fp16",
) -> FloorEstimate:
    """The floor of any fully ``fmt`` vector unit and ``fa_hybrid``'s error, predicted by the linearised
    model of this module (an estimate) from float64 scores of ``q, k, v`` (BNSD, GQA allowed).

    Each source's variance, for output element (row i, column c), ℓ = Σ_j w_j, o the exact output:
    argument Σ_j w_j²·q(x_j)²/12·(v_jc − o_c)²/ℓ²; weight Σ_j q(w_j)²/12·(v_jc − o_c)²/ℓ²; row_sum
    o_c²·Σ_t q(ℓ_t)²/12/ℓ²; accumulator Σ_t q(O_tc)²/12/ℓ²; output q(o_c)²/12. ``fa_hybrid``:
    Σ_j q(w_j)²/12·v_jc²/ℓ² + q(o_c)²/12. The relative RMSE is √(mean variance) / RMS(V).
    """
    qa, ka, va, tau, n, group = _inputs(q, k, v, scale, block_kv)
    F = get_format(fmt)
    sums = dict.fromkeys((*SOURCES, "hybrid_weight"), 0.0)
    count = 0
    ewx: list[_F64] = []
    for x, w, vv, o in _rows(qa, ka, va, tau, group):
        ell = w.sum(axis=1, keepdims=True)
        ax = w**2 * quantum_array(x, F) ** 2 / 12
        aw = quantum_array(w, F) ** 2 / 12
        sums["argument"] += float((_centred(ax, vv, o) / ell**2).sum())
        sums["weight"] += float((_centred(aw, vv, o) / ell**2).sum())
        sums["hybrid_weight"] += float(((aw @ vv**2) / ell**2).sum())
        lt, ot = _block_partials(w, vv, n)
        q_lt = (quantum_array(lt, F) ** 2 / 12).sum(axis=1, keepdims=True)
        sums["row_sum"] += float((o**2 * q_lt / ell**2).sum())
        sums["accumulator"] += float(((quantum_array(ot, F) ** 2 / 12).sum(axis=1) / ell**2).sum())
        sums["output"] += float((quantum_array(o, F) ** 2 / 12).sum())
        count += o.size
        ewx.append((w * np.abs(x)).sum(axis=1) / ell[:, 0])
    rms_v = math.sqrt(float(np.mean(va**2)))
    parts = {s: sums[s] / count for s in SOURCES}
    floor = math.sqrt(sum(parts.values())) / rms_v
    hybrid = math.sqrt((sums["hybrid_weight"] + sums["output"]) / count) / rms_v
    e = np.concatenate(ewx)
    return FloorEstimate(floor, hybrid, parts, float(e.max()), float(np.median(e)))


def floor_monte_carlo(
    q: npt.ArrayLike,
    k: npt.ArrayLike,
    v: npt.ArrayLike,
    *,
    scale: float | None = None,
    block_kv: int = 128,
    fmt: str | FloatFormat = "fp16",
    samples: int = 4,
    seed: int = 0,
) -> tuple[float, float]:
    """The model of this module sampled without linearisation, in plain float64: every rounding an
    independent uniform error on ±q/2, q the quantum at the exact (unrounded) value, propagated through
    the pipeline (exp and the division exactly). Returns the
    sampled relative RMSE of (the floor, ``fa_hybrid``) over ``samples`` draws (seeded)."""
    qa, ka, va, tau, n, group = _inputs(q, k, v, scale, block_kv)
    F = get_format(fmt)
    rng = np.random.default_rng(seed)
    se = [0.0, 0.0]
    count = 0

    def noisy(a: _F64, exact: _F64) -> _F64:
        return a + (rng.random(a.shape) - 0.5) * quantum_array(exact, F)

    for x, w, vv, o in _rows(qa, ka, va, tau, group):
        rows, S2 = w.shape
        T = -(-S2 // n)
        lt, ot = _block_partials(w, vv, n)
        for _ in range(samples):
            p = noisy(np.exp(noisy(x, x)), w)  # argument, then weight
            ell = np.zeros((rows, 1))
            acc = np.zeros((rows, vv.shape[1]))
            for t in range(T):
                blk = slice(t * n, min(S2, (t + 1) * n))
                ell = noisy(ell + p[:, blk].sum(axis=1, keepdims=True), lt[:, t : t + 1])
                acc = noisy(acc + p[:, blk] @ vv[blk], ot[:, t])
            out = noisy(acc / ell, o)
            se[0] += float(((out - o) ** 2).sum())
            ph = noisy(w, w)  # fa_hybrid: the P·V operand only
            out_h = noisy((ph @ vv) / w.sum(axis=1, keepdims=True), o)
            se[1] += float(((out_h - o) ** 2).sum())
            count += o.size
    rms_v = math.sqrt(float(np.mean(va**2)))
    return math.sqrt(se[0] / count) / rms_v, math.sqrt(se[1] / count) / rms_v
