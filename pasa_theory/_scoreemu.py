"""Emulation of the score tile's rounding for the shadow simulation (docs/error-model.md §8.12).

The kernel forms each score as an fp32 (``matmul_acc``) dot product of values on the operand grid, whose
products are exact in the accumulator, and rounds it once to ``matmul_out`` (then to the vector format,
then, with ``scale="scores"``, multiplies by τ_v on the vector unit; with ``scale="q"`` the Q operand is
fl(fl(Q·τ_v)) first). The fp32 summation order is not known, but it moves the accumulated value by at most
γ_d(u_acc)·Σ|q_i k_i| from the exact dot product (a rigorous bound for every order, with or without fused
multiply-adds). So:

* **exact emulation** where the two ends of that interval give the same stored value (the element is
  *determined by the inputs*): the stored value is the rounding chain applied to the exact dot product;
* **random, model** for the other, *order-ambiguous* elements: the stored value is the rounding chain
  applied to the exact value plus a Gaussian accumulation error, truncated to the any-order bound, of
  standard deviation sqrt(Σ_i spacing(P_i)²/12) over the partial sums P_i in index order (each addition
  rounds to the accumulator's grid with a uniform error). Drawn per sample of the shadow simulation.

For PASA the same applies to K̃ = M̂ᵀ·K_j (an fp32 sum of n exact products, rounded to ``matmul_out`` and
to the operand format): each element of K̃ is determined or drawn per sample (one draw per key and
column, shared by every query row, as in the kernel), and the tile is then formed from the drawn K̃.

The exact dot products are computed in float64 from values on the operand grid: the products are exact
(two fp16/bf16 significands fit in 53 bits) and the float64 summation's own error, at most
γ_{d+2}(2^−53)·Σ|q_i k_i|, is added to the interval, so "determined" is a theorem, not a model.
Only used for ``mma_acc="wide"``, without ``smooth_k`` and without the hi/lo reference; other policies
keep the random-phase model of docs/error-model.md §8.11.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .formats import FloatFormat, quantum_array, round_array
from .policies import Policy, ShiftConstants

Arr = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]

#: unit roundoff of the float64 evaluation of the exact dot products
_U64 = 2.0**-53


def _gamma(k: int, u: float) -> float:
    """γ_k = k·u/(1 − k·u) (Higham, Accuracy and Stability of Numerical Algorithms, §3.1)."""
    return k * u / (1.0 - k * u)


def _radius(k: int, u_acc: float, mag: Arr) -> Arr:
    """Radius of the any-order interval of an accumulated sum of k exact products of magnitude sum
    ``mag``, plus the float64 evaluation's own error of the centre and of ``mag`` (a relative margin)."""
    return (_gamma(k, u_acc) * (1.0 + 4.0 * _gamma(k, _U64)) + 2.0 * _gamma(k + 2, _U64)) * mag


def applies(pol: Policy) -> bool:
    """Whether the score tile of ``pol`` is emulated (wide accumulator, no smoothed keys, no hi/lo
    reference: the arithmetic described in the module docstring)."""
    return str(pol.mma_acc) == "wide" and not pol.smooth_k and pol.score_ref == "none"


def _acc_sd(terms: Arr, u_acc: float, axis: int) -> Arr:
    """Model of the standard deviation of the accumulator's error on Σ ``terms`` along ``axis``: the
    partial sums in index order, each rounded to the accumulator's grid (spacing 2u·2^⌊log2|P|⌋) with a
    uniform error (variance spacing²/12); the first term enters exactly."""
    part = np.cumsum(terms, axis=axis)
    part = np.delete(part, 0, axis=axis)
    _, e = np.frexp(part)  # |P| = m·2^e, m in [0.5, 1): spacing 2u·2^(e−1)
    spacing = np.where(part != 0, np.ldexp(2.0 * u_acc, e - 1), 0.0)
    return np.sqrt((spacing**2).sum(axis=axis) / 12.0)


@dataclass
class _Rounded:
    """A quantity accumulated with an unknown summation order and then rounded (``chain``, monotone):
    the exact sum x, the any-order radius, the model standard deviation of the accumulation error."""

    x: Arr
    rad: Arr
    sd: Arr
    chain: Callable[[Arr], Arr]

    def __post_init__(self) -> None:
        with np.errstate(invalid="ignore", over="ignore"):
            self.rn = self.chain(self.x)
            #: the any-order interval maps to more than one stored value (order-ambiguous elements)
            self.ambiguous = np.asarray(
                self.chain(self.x - self.rad) != self.chain(self.x + self.rad)
            ) & np.isfinite(self.rn)

    def expected_changes(self, first: FloatFormat) -> float:
        """Model expectation of the number of elements whose first rounding differs from fl(x): the
        probability that the Gaussian accumulation error crosses the nearer boundary (for reporting)."""
        if not np.any(self.ambiguous):
            return 0.0
        x, sd = self.x[self.ambiguous], self.sd[self.ambiguous]
        q = quantum_array(x, first)
        r = round_array(x, first)
        dist = np.maximum(0.5 * q - np.abs(x - r), 0.0)
        z = np.where(sd > 0, dist / np.where(sd > 0, sd, 1.0), np.inf)
        return float(np.sum(0.5 * np.vectorize(math.erfc)(z / math.sqrt(2.0))))

    def draw(self, rng: np.random.Generator) -> Arr:
        """One draw: the determined value, and for the ambiguous elements the rounding of x plus a
        Gaussian accumulation error of the model's standard deviation, truncated to the any-order bound."""
        if not np.any(self.ambiguous):
            return self.rn
        a = self.ambiguous
        e = np.clip(self.sd[a] * rng.standard_normal(int(a.sum())), -self.rad[a], self.rad[a])
        out = self.rn.copy()
        with np.errstate(invalid="ignore", over="ignore"):
            out[a] = self.chain(self.x[a] + e)
        return out


#: elements of the (rows, keys, d) partial-sum array formed at once by :func:`_tile_sd`
_CHUNK_ELEMENTS = 1 << 22


def _tile_sd(q: Arr, keys: Arr, u_acc: float) -> Arr:
    """:func:`_acc_sd` of every dot product q_i·k_j (rows in chunks to bound the memory)."""
    R, d = q.shape
    out = np.zeros((R, keys.shape[0]))
    step = max(1, _CHUNK_ELEMENTS // max(1, keys.size))
    for r0 in range(0, R, step):
        out[r0 : r0 + step] = _acc_sd(q[r0 : r0 + step, None, :] * keys[None, :, :], u_acc, axis=2)
    return out


class ScoreEmulator:
    """The vector unit's score tile for some rows of a chunk, emulated as described in the module
    docstring: :meth:`sample` returns its error against the exact tile (in score units) for one draw of
    the order-ambiguous elements; ``tile_straddles``/``kt_straddles`` count those elements."""

    def __init__(
        self,
        pol: Policy,
        consts: ShiftConstants | None,
        q: Arr,
        kpad: Arr,
        n: int,
        tau: float,
        tau_v: float,
        exact_tile: Arr,
    ) -> None:
        self.exact, self.n = exact_tile, n
        Fm, Fo, Fv, Fa = pol.matmul_in, pol.matmul_out, pol.vector, pol.matmul_acc
        self.ua = float(Fa.u)
        self.place = pol.placement
        # the Q operand exactly as the kernel forms it: scale="q" prescales on the vector unit
        self.qq = round_array(round_array(q * tau_v, Fv), Fm) if self.place == "q" else q
        self.qabs = np.abs(self.qq)
        self.d = int(q.shape[1])
        self.tau_acc = float(round_array(np.array([tau]), Fa)[0])
        self.tau_v = tau_v
        self.Fo, self.Fv, self.Fa, self.Fm = Fo, Fv, Fa, Fm
        self.kt: _Rounded | None = None
        if consts is None:
            keys = kpad
        else:
            L, d = kpad.shape
            kb = kpad.reshape(L // n, n, d)
            # K̃_r = Σ_s M̂[s, r]·K_s = diag·K_r + off·Σ_{s≠r} K_s = a·K_r + off·Σ_s K_s: n exact products
            centre = consts.a * kb + consts.off * kb.sum(axis=1, keepdims=True)
            mag = abs(consts.diag) * np.abs(kb) + abs(consts.off) * (
                np.abs(kb).sum(axis=1, keepdims=True) - np.abs(kb)
            )
            # the model's partial sums: keys s = 0..n−1 in order, M̂[s, r]·K_s (diag at s = r)
            rr = np.arange(n)
            sd = np.zeros((L // n, n, d))
            for t in range(L // n):  # one block at a time: (n, n, d) partial sums
                terms = consts.off * np.broadcast_to(kb[t][None, :, :], (n, n, d)).copy()
                terms[rr, rr, :] = consts.diag * kb[t]
                sd[t] = _acc_sd(terms, self.ua, axis=1)
            sd = sd.reshape(L, d)
            self.kt = _Rounded(
                centre.reshape(L, d),
                _radius(n, self.ua, mag.reshape(L, d)),
                sd,
                lambda x: round_array(round_array(x, Fo), Fm),
            )
            keys = self.kt.rn
        self.sd = _tile_sd(self.qq, keys, self.ua)
        if self.place == "acc":
            self.sd = np.sqrt(
                (self.sd * abs(self.tau_acc)) ** 2
                + (self.ua * np.abs(self.qq @ keys.T * self.tau_acc)) ** 2 / 3.0
            )
        det = self._tile(keys)
        #: the tile's candidates when K̃ is determined (else recomputed for each draw of K̃)
        self.tile = det if self.kt is None or not np.any(self.kt.ambiguous) else None
        self.kt_straddles = 0 if self.kt is None else int(self.kt.ambiguous.sum())
        self.tile_straddles = int(det.ambiguous.sum())
        #: expected number of elements that differ from the rounding of the exact value
        #: model expectation of the elements whose stored value differs from the rounding of the exact one
        self.expected_changes = det.expected_changes(Fo) + (
            0.0 if self.kt is None else self.kt.expected_changes(Fo)
        )

    def _chain(self, x: Arr) -> Arr:
        """The roundings after the accumulator: to matmul_out, to the vector format, ·τ_v (scale="scores")."""
        y = round_array(x, self.Fo)
        if self.Fv.name != self.Fo.name:
            y = round_array(y, self.Fv)
        if self.place == "scores":  # fl_v(s·τ_v) on the vector unit: an exact product, one rounding
            y = round_array(y * self.tau_v, self.Fv)
        return y

    def _tile(self, keys: Arr) -> _Rounded:
        centre = self.qq @ keys.T
        rad = _radius(self.d, self.ua, self.qabs @ np.abs(keys).T)
        if self.place == "acc":  # τ applied to the accumulator before its conversion: one more fp32 rounding
            centre = centre * self.tau_acc
            rad = rad * abs(self.tau_acc) + self.ua * (np.abs(centre) + rad * abs(self.tau_acc))
        return _Rounded(centre, rad, self.sd, self._chain)

    def block_means(
        self, err: Arr, vector: FloatFormat, reduce: FloatFormat, rng: np.random.Generator
    ) -> Arr:
        """The rounded pseudo-averages fl_v(mean_j) of the stored tile (exact tile + ``err``), (rows, T),
        one draw (:meth:`block_means_rounded`)."""
        return self.block_means_rounded(err, vector, reduce).draw(rng)

    def block_means_rounded(self, err: Arr, vector: FloatFormat, reduce: FloatFormat) -> _Rounded:
        """fl_v(mean_j) of the stored tile: the kernel sums the n stored values of block j in ``reduce``
        (an fp32 sum of values that are exact there), divides by n and rounds to the vector format —
        determined where the any-order interval of the sum maps to one value, drawn elsewhere."""
        R, L = err.shape
        n = self.n
        t = (self.exact + err).reshape(R, L // n, n)
        u_r = float(reduce.u)
        x = t.sum(axis=2) / n
        rad = _radius(n, u_r, np.abs(t).sum(axis=2) / n)
        sd = _acc_sd(t, u_r, axis=2) / n
        return _Rounded(x, rad, sd, lambda y: round_array(round_array(y, reduce), vector))

    def sample(self, rng: np.random.Generator) -> Arr:
        """The tile's error (stored − exact, score units) for one draw; 0 where the tile overflows."""
        if self.tile is not None:
            t = self.tile.draw(rng)
        else:
            assert self.kt is not None
            t = self._tile(self.kt.draw(rng)).draw(rng)
        with np.errstate(invalid="ignore"):
            e = t - self.exact
        return np.where(np.isfinite(e), e, 0.0)
