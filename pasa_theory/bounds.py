r"""The four error products of PASA and its flash-attention baselines, and overflow.

:func:`predict` takes a harness method name (``pasa``, ``pasa:<preset>``, ``fa_qk``, ``fa_q``,
``fa_naive``, ``fa_hybrid``, ``smooth_k``, ``sdpa``, ``npu_fia_ip0/1``; see
:mod:`pasa_theory.policies`), the actual Q, K, V (numpy arrays or torch tensors, BNSD) and the
precision, and returns a :class:`Prediction` with four products, each named for what it is
(docs/error-model.md §9): the **rigorous a-posteriori bound** on max|O − O_exact| (``max_abs_bound``,
Theorem 1 of docs/bounds.md, from :func:`pasa_theory.rigorous.certify`), the **probabilistic bound**
(``prob_abs_bound`` at ``confidence``), the **a-priori bound** (``a_priori_bound``,
:func:`pasa_theory.rigorous.a_priori`), the **RMSE estimate** (``rmse_estimate``, the stochastic shadow
simulation described below — a model, not a bound), the hull cap max|v − o|, whether and at which stage
the pipeline overflows, and the estimate's breakdown by error term. The first-order evaluation below,
formerly returned as ``max_abs_bound``, is ``first_order_estimate`` (not a bound).
:func:`predict_a_priori` and :func:`overflow_envelope` do the same from input statistics alone (mean
and spread of Q, K, V; d; n; S2; β; format). :func:`derivations` lists the symbolic identities the
estimate rests on, each verified by sympy.

Model (docs/error-model.md; the algorithm is docs/method.md §3; Higham, *Accuracy and Stability of Numerical Algorithms*,
2nd ed. 2002, §2.2 and Lemma 3.1 for the standard model; Higham & Mary, SISC 41 (2019) for the
probabilistic model)
========================================================================================================

**Standard model per format.** Every operation of the kernel that rounds to a format with unit
roundoff u is ``fl(x) = x(1 + δ) + η`` with ``|δ| <= u``, ``|η| <= min_sub/2`` (gradual underflow).
A matrix product with inputs in the operand format, accumulation in ``u_acc`` and one output
rounding (the Cube; mixed-precision block FMA of Blanchard et al., SISC 42 (2020)) gives

.. math::  |\widehat{xy} - xy| \le u_{out}|xy| + γ_d(u_{acc})\,|x|^T|y| .                      \tag{E1}

The *probabilistic* model takes each δ uniform on one quantum, variance ``ulp(x)^2/12`` (E8), and
independent of the others; zero for operations that are exact (a difference representable on the
operands' grid, a product by 1, exp(0)).

**First-order sensitivities of attention.** With softmax weights ``p_r`` and output ``o``, a
perturbation ``ε_r`` of the logit of key r (or a relative perturbation of its weight applied to
numerator and denominator alike) changes the output by (E2)

.. math::  Δo = \sum_r p_r ε_r (v_r - o),

a perturbation ``ζ_j`` common to KV block j by ``ζ_j B_j``, ``B_j = Σ_{r∈j} p_r(v_r − o)`` (E3), and a
rescaling ``η_t`` of the whole history before block t (a takeover of the running maximum) by
``η_t P_{t−1}``, ``P_t = Σ_{j<=t} B_j`` (telescoping identity E4). A relative error δ of a partial
denominator with weight fraction L_t changes it by ``−o·L_t·δ``; an absolute error of a numerator
partial sum enters divided by ℓ (E5); the final division and cast add ``u|o|``.

**Per-stage terms of PASA** (``pasa_npu.kernel`` steps; S̃ = Q·K̃ᵀ, K̃ = M_r K, M_r = aI − bJ):

============================  =========================================================================
term                          first-order error in the logit of key r of block j
============================  =========================================================================
``scores.kt``                 q·ΔK̃_r, ΔK̃ the rounding of K̃ = M_r K to the operand format
``scores.round``              rounding of S̃ (matmul output), ``u|S̃_r|``
``recovery.kt/scores``        ``c·mean_j(ΔS̃)``: the recovery ŝ = S̃ + c·mean(S̃) multiplies the
                              block mean of every S̃ error by c = β/(1−β) (E6: along **1** the
                              inverse of M has norm 1/(1−β) = κ₂(M))
``recovery.mean``             rounding of the pseudo-average: centred ``c·u|μ_j − A|``, or rounded
                              ``c·u|μ_j|`` (the reference script: about u·β·|mean score|)
``bookkeeping``               δ_j = c·e, offsets, differences of maxima, re-centring of A
``exp.arg``/``exp.p``         ``fl(S̃ − m_j)`` and ``fl(exp(·))`` (relative u; flush below min_sub/2)
``exp.rescale``               the factors e^{±x} applied to a block or to the history
``row_sum``/``accumulator``   ℓ_j, P·V_j, and the products and sums of the online recurrence
``output``                    ``fl(O/ℓ)`` and the cast to the output format
``systematic``                the once-rounded constants (τ in the vector format, a ≠ σ, κ ≠ 0 from c)
                              and deterministic flushes, evaluated exactly
============================  =========================================================================

Flash attention (``fa_*``) has the same rows without ``scores.kt``/``recovery``/``bookkeeping``
offsets; ``fa_qk`` rounds q·k before τ (``scores.round`` at the magnitude of q·k, then
``scores.scale``), ``fa_q`` rounds Q·τ first (``scores.input``: Δq'·(k_r − k̄), the common part is a
row constant), ``fa_hybrid``/``sdpa`` round P to the operand format for P·V only (``pv.p_cast``, a
numerator-only error of size u·|v|).

**Composition.** (a) *First-order evaluation* (``first_order_estimate``; formerly called the
deterministic bound, not a theorem) per output element: the systematic error exactly, plus the
consistent perturbations bounded without linearisation,
``e^{E_max}[Σ_j (e^{Z_j} − 1)e^{H_{>j}}|B_j| + Σ_t (e^{H_t} − 1)e^{H_{>t}}|P_{t−1}| +
Σ_r p_r e^{Z_j + H_{>j}}(e^{E_r} − 1)|v_r − o|]`` (from the exact identity E7, with
``Σ_r p_r φ_r >= e^{−E_max}``), capped by ``max_r |v_r − o|`` (the perturbed output stays in the
convex hull of the values), plus the non-consistent terms to first order (inflated by
``e^{2E_max}``, capped by their magnitude-only bound) and the float64 golden's own error. (b) *RMSE
estimate*: the systematic error plus the sum of the variances (independent, mean-zero errors, so
they grow like √n); rows whose random log-weight perturbation exceeds 0.1 are evaluated by Monte
Carlo (uniform rounding errors with the same variances, exact softmax), because there the
linearisation overestimates what the softmax can do.

*A posteriori* (:func:`predict`) every magnitude is the exact value on the actual tensors;
*a priori* (:func:`predict_a_priori`) magnitudes come from the input statistics.

**Where the first-order evaluation is loose.** It adds the moduli of n rounding errors where the
typical error adds them in quadrature (×√n), and every element's bound assumes all signs aligned;
``recovery.*`` sums the |errors| of 128 scores before multiplying by c, so it is loose by about √(3n)
≈ 20 against the typical error and more against the median; near-tied rows (two keys within the
score error) make it saturate at the hull cap, which is O(spread of V).

**Overflow** (closed form per stage, :func:`overflow_envelope`; exact on the tensors in
:func:`predict`): scores ``max|q·k| >= t_out`` (``fa_qk``: t_out = 65520 in fp16 under
round-to-nearest), ``τ·max|q·k| >= t_out`` (``fa_q``), ``max|q·K̃| >= t_out`` (PASA); shift
``c·|μ_j − A| >= t_v`` (PASA's offsets); raw accumulators ``ℓ >= t_v`` and ``|O| >= t_v`` (ℓ up to S2,
O up to S2·max|v| for flat attention); P·V tiles ``|P·V_j| >= t_out``. ``overflow_stage`` names the
first stage in the order of ``pasa_npu.metrics.STAGES``.

CSV/JSON schema of the report table (``pasa-verify --predict``, :mod:`pasa_npu.predict_report`):
docs/error-model.md §7 (one row per case and method: the measurement, the four products, the hull
cap, ratios, hits and costs, and ``rms.<term>`` for the terms of :data:`TERMS`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from dataclasses import replace as _replace
from fractions import Fraction
from typing import TYPE_CHECKING, TypeAlias, TypedDict

import mpmath
import numpy as np
import numpy.typing as npt

from . import _errormodel as em
from . import _refmodel as _ref
from . import rigorous as _rig
from .formats import FloatFormat, get_format, round_array, ulp
from .policies import (
    METHOD_NAMES,
    Policy,
    PrecisionInput,
    require_modelled,
    resolve,
    shift_constants,
    tau_of,
)
from .schema import STAGES, check_beta, check_block, check_bnsd, format_name
from .shifting import kappa_of

if TYPE_CHECKING:  # sympy-based, imported by derivations() on first use
    from .scheme import Identity

__all__ = [
    "Prediction",
    "predict",
    "predict_many",
    "method_names",
    "derivations",
    "unit_roundoff",
    "gamma_n",
    "gamma_tilde",
    "InputStats",
    "Envelope",
    "overflow_envelope",
    "term_scales",
    "sample_inputs",
    "predict_a_priori",
    "TERMS",
    "STAGES",
]

# STAGES (pipeline stages in order, shared with the census of pasa_npu.metrics) is
# pasa_theory.schema.STAGES, re-exported here.

#: Error terms of the breakdown (see the module docstring), in pipeline order.
TERMS = (
    "systematic",
    "scores.input",
    "scores.kt",
    "scores.round",
    "scores.scale",
    "scores.acc",
    "recovery.kt",
    "recovery.scores",
    "recovery.mean",
    "recovery.keymean",
    "bookkeeping",
    "exp.arg",
    "exp.p",
    "exp.rescale",
    "pv.p_cast",
    "pv.round",
    "row_sum",
    "accumulator",
    "absorption",
    "output",
)


@dataclass(frozen=True)
class Prediction:
    """The four error products for one method on one input (docs/error-model.md §9), plus overflow.

    * ``max_abs_bound`` — **rigorous a-posteriori bound** (a theorem: Theorem 1 of docs/bounds.md §9,
      :func:`pasa_theory.rigorous.certify`): max|O_computed − O_exact| ≤ it for every element of the
      inputs as given, under the hypotheses H1–H3 of docs/bounds.md §1; ``inf`` where an overflow cannot
      be excluded; ``None`` where it was not computed (``bound_status`` says why: a method/preset outside
      the theorem's scope, among them the ``fp64`` arrangements (docs/bounds.md §17.4), inputs not
      representable in the matrix unit's format, or ``rigorous=False``);
    * ``a_priori_bound`` — **a-priori forward bound** (Theorem 2, docs/bounds.md §11,
      :func:`pasa_theory.rigorous.a_priori`; for the ``fp64`` arrangements docs/bounds.md §19.3) for every
      input with the same max|q|, max|k|, max|v| and column spread of V; ``None`` with ``bound_status``
      where not covered;
    * ``prob_abs_bound`` — **probabilistic bound** (Proposition 3, docs/bounds.md §12): each output
      element's error is below it with probability ≥ ``confidence`` under the stated model; ``None``
      when the rigorous bound was not computed;
    * ``rmse_estimate`` — **estimate** of the RMSE: the stochastic shadow simulation of
      docs/error-model.md (a model, not a bound).

    ``hull_cap`` = max over rows of max_r |v_r − o| (exact o): every convex combination of the rows of
    V is within it of o, so a bound at or above it says nothing. ``first_order_estimate`` is the former
    ``max_abs_bound``: the first-order evaluation along the exact trajectory (docs/error-model.md §5),
    **not** a bound (it can be below the measured error).
    """

    #: harness method name and the policy it was resolved to
    method: str
    policy: str
    #: rigorous a-posteriori bound on max|O − O_exact| (Theorem 1); None if not computed (see bound_status)
    max_abs_bound: float | None
    #: estimate of sqrt(mean((O − O_exact)²)) (stochastic shadow simulation; inf if an overflow is predicted)
    rmse_estimate: float
    overflow: bool
    #: first stage (in :data:`STAGES` order) predicted to produce inf/NaN, or None
    overflow_stage: str | None
    #: RMS contribution of each error term of the estimate (linearised; they add in quadrature)
    terms_rms: dict[str, float] = field(default_factory=dict)
    #: largest first-order contribution of each term to ``first_order_estimate`` over the output elements
    terms_bound: dict[str, float] = field(default_factory=dict)
    #: the term with the largest RMS contribution to the estimate, and the part of the rigorous bound
    #: that is largest at its worst row (the first-order evaluation's own is ``first_order_dominant``)
    dominant: str | None = None
    bound_dominant: str | None = None
    #: β and c of the shift (None for flash attention), κ of the stored constants (B3)
    beta: float | None = None
    c: float | None = None
    kappa: float | None = None
    #: fraction of rows in the nonlinear regime (evaluated by Monte Carlo), rows sampled
    nonlinear_rows: float = 0.0
    mc_rows: int = 0
    #: largest per-row standard deviation of the random log-weight perturbation
    max_log_std: float = 0.0
    #: per-row rigorous bound (max over the output columns; None where not computed) and per-row
    #: estimated RMS, shape (B, H, S1)
    row_bound: npt.NDArray[np.float64] | None = None
    row_rmse: npt.NDArray[np.float64] | None = None
    modelled_as: str | None = None
    #: wall seconds of the estimate (and of the first-order evaluation, computed alongside it)
    seconds: float = 0.0
    #: the former ``max_abs_bound``: first-order evaluation along the exact trajectory (not a bound)
    first_order_estimate: float = math.nan
    first_order_dominant: str | None = None
    row_first_order: npt.NDArray[np.float64] | None = None
    #: a-priori forward bound (Theorem 2) for every input with the same maxima; None if not covered
    a_priori_bound: float | None = None
    #: probabilistic bound (Proposition 3) at ``confidence``; None if not computed
    prob_abs_bound: float | None = None
    confidence: float = 0.99
    #: max over rows of max_r |v_r − o| (the trivial bound), per row in ``row_hull_cap``
    hull_cap: float = math.nan
    row_hull_cap: npt.NDArray[np.float64] | None = None
    #: what the theorems computed: "theorem 1: …" or "not computed: <why>"
    bound_status: str = ""
    #: wall seconds of the rigorous/probabilistic bound (one call) and of the a-priori bound
    seconds_bound: float = 0.0
    seconds_a_priori: float = 0.0

    @property
    def regime(self) -> str:
        return "monte_carlo" if self.mc_rows else "linear"

    def as_record(self) -> dict[str, str | float | bool | None]:
        """Flat dict of the scalar fields (plus ``rms.<term>`` for every term), for CSV/JSON.

        ``pred_bound`` is the rigorous bound, ``pred_prob`` the probabilistic, ``pred_a_priori`` the
        a-priori bound, ``pred_rmse`` the estimate, ``pred_first_order`` the first-order evaluation."""
        rec: dict[str, str | float | bool | None] = dict(
            method=self.method,
            policy=self.policy,
            beta=self.beta,
            c=self.c,
            kappa=self.kappa,
            pred_rmse=self.rmse_estimate,
            pred_bound=self.max_abs_bound,
            pred_prob=self.prob_abs_bound,
            pred_a_priori=self.a_priori_bound,
            pred_first_order=self.first_order_estimate,
            hull_cap=self.hull_cap,
            confidence=self.confidence,
            bound_status=self.bound_status,
            pred_overflow=self.overflow,
            pred_overflow_stage=self.overflow_stage,
            dominant=self.dominant,
            bound_dominant=self.bound_dominant,
            first_order_dominant=self.first_order_dominant,
            regime=self.regime,
            nonlinear_rows=self.nonlinear_rows,
            max_log_std=self.max_log_std,
            modelled_as=self.modelled_as,
            pred_seconds=self.seconds,
            bound_seconds=self.seconds_bound,
            a_priori_seconds=self.seconds_a_priori,
        )
        for t in TERMS:
            rec[f"rms.{t}"] = self.terms_rms.get(t, 0.0)
        return rec


# -- input handling ------------------------------------------------------------------------------------------
#: q, k or v as given: a numpy ndarray or a torch tensor in BNSD layout. Anything else raises TypeError in
#: :func:`_as_array`, so the static type is ``object`` (any input: validated there; torch is not imported).
ArrayInput: TypeAlias = object


def _as_array(x: ArrayInput, name: str) -> tuple[npt.NDArray[np.float64], FloatFormat]:
    """float64 numpy copy of a numpy array or torch tensor, and the name of its format."""
    mod = type(x).__module__.split(".")[0]
    if mod == "torch":
        import torch  # only when given torch tensors

        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
        if not x.dtype.is_floating_point:
            raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
        fmt = str(x.dtype).replace("torch.", "")
        arr = x.detach().to(device="cpu", dtype=torch.float64).numpy()
    elif isinstance(x, np.ndarray):
        if x.dtype.kind not in "fV" or x.dtype.name not in ("float16", "float32", "float64", "bfloat16"):
            raise TypeError(
                f"{name} must have a floating dtype (float16/bfloat16/float32/float64), got {x.dtype}"
            )
        fmt = x.dtype.name
        arr = np.asarray(x, dtype=np.float64)
    else:
        raise TypeError(
            f"{name} must be a numpy array or torch tensor in BNSD layout, got {type(x).__name__}"
        )
    if arr.ndim != 4:
        raise ValueError(
            f"{name} must be 4-D in BNSD layout (batch, heads, seq, head_dim), got shape {arr.shape}"
        )

    return arr, get_format(fmt, argname=name)


# -- prediction ------------------------------------------------------------------------------------------------
def predict(
    method: str,
    q: ArrayInput,
    k: ArrayInput,
    v: ArrayInput,
    *,
    precision: PrecisionInput = "npu_fp16",
    beta: float | None = None,
    block_kv: int = 128,
    scale: float | None = None,
    is_causal: bool = False,
    out_dtype: object = None,
    mc_samples: int = 8,
    seed: int = 0,
    mc_rows: int = 2048,
    confidence: float = 0.99,
    rigorous: bool = True,
    shifted_keys: ArrayInput | None = None,
) -> Prediction:
    """The four error products of harness method ``method`` on ``q, k, v`` (BNSD, numpy or torch):
    rigorous a-posteriori bound, a-priori bound, probabilistic bound and RMSE estimate (see
    :class:`Prediction` for which is a theorem and which a model), the hull cap and overflow.

    Args:
        method: a harness method name (:data:`pasa_theory.policies.METHOD_NAMES`).
        q, k, v: the inputs as given to the harness (the golden is exact attention on them).
        precision: the run's precision: a preset name or a ``pasa_npu.Precision`` (read by field).
        beta, block_kv, scale, is_causal: as for ``pasa_npu.pasa_attention``.
        out_dtype: the output format (default: q's dtype, as the kernels).
        mc_samples, seed, mc_rows: Monte Carlo samples for rows in the nonlinear regime, their seed, and
            the number of such rows evaluated by Monte Carlo (the others are scaled, see predict_many).
        confidence: probability in (0, 1) of the probabilistic bound (default 0.99, δ = 0.01).
        rigorous: compute the rigorous and probabilistic bounds (:func:`pasa_theory.rigorous.certify`,
            about 100–850 kernel runs' worth of float64 work for all rows, docs/bounds.md §14; False leaves them None with
            ``bound_status`` "not computed: rigorous=False"). The a-priori bound, the hull cap and the
            estimate are always computed. Sample query rows first to make it cheap (rows are
            independent without a mask). For ``score_ref="hi_lo"`` (``fp16_accurate``) the estimate is the
            shadow simulation of docs/error-model.md §10 and ``first_order_estimate`` is NaN.
        shifted_keys: PASA only, the K̃ the run used (``pasa_npu.shifted_keys``): the rigorous bound is
            then conditional on that observed setup product; without it K̃ is enclosed for every
            summation order (docs/bounds.md §3).

    Returns:
        A :class:`Prediction`. torch is imported only if tensors are given.
    """
    return predict_many(
        [method],
        q,
        k,
        v,
        precision=precision,
        beta=beta,
        block_kv=block_kv,
        scale=scale,
        is_causal=is_causal,
        out_dtype=out_dtype,
        mc_samples=mc_samples,
        seed=seed,
        mc_rows=mc_rows,
        confidence=confidence,
        rigorous=rigorous,
        shifted_keys=None if shifted_keys is None else {method: shifted_keys},
    )[0]


class _Acc(TypedDict):
    """What predict_many accumulates per method over the row chunks."""

    bound_max: float
    ms_sum: float
    count: int
    terms_var: dict[str, float]
    terms_bound: dict[str, float]
    ovf: dict[str, bool]
    nl: int
    mc: int
    mls: float
    row_bound: npt.NDArray[np.float64]
    row_ms: npt.NDArray[np.float64]


def predict_many(
    methods: list[str] | tuple[str, ...],
    q: ArrayInput,
    k: ArrayInput,
    v: ArrayInput,
    *,
    precision: PrecisionInput = "npu_fp16",
    beta: float | None = None,
    block_kv: int = 128,
    scale: float | None = None,
    is_causal: bool = False,
    out_dtype: object = None,
    mc_samples: int = 8,
    seed: int = 0,
    mc_rows: int = 2048,
    row_elements: int = 2_500_000,
    confidence: float = 0.99,
    rigorous: bool = True,
    shifted_keys: Mapping[str, ArrayInput] | None = None,
) -> list[Prediction]:
    """:func:`predict` for several methods on the same inputs, sharing the exact quantities.

    ``mc_rows`` is the Monte Carlo budget (rows in the nonlinear regime evaluated without linearisation)
    per method and input, shared among the row chunks in proportion to their size; ``row_elements`` the
    size (rows × keys) of a chunk; ``shifted_keys`` maps a PASA method name to the K̃ its run used.
    """
    if isinstance(methods, str):
        raise TypeError("methods must be a list of method names, not a str")
    confidence = _check_confidence(confidence)
    if not isinstance(rigorous, bool):
        raise TypeError(f"rigorous must be a bool, got {type(rigorous).__name__}")
    if shifted_keys is not None and not isinstance(shifted_keys, Mapping):
        raise TypeError(
            f"shifted_keys must map a method name to its K̃ (predict_many), got {type(shifted_keys).__name__}"
        )
    pols = [_ref.require_estimated(resolve(m, precision)) for m in methods]
    qa, fq = _as_array(q, "q")
    ka, fk = _as_array(k, "k")
    va, fv = _as_array(v, "v")
    B, H, Hkv, S1, S2, D, Dv = check_bnsd(qa.shape, ka.shape, va.shape)
    n_req = check_block(block_kv, "block_kv")
    beta = check_beta(beta)
    if not isinstance(is_causal, bool):
        raise TypeError(f"is_causal must be a bool, got {type(is_causal).__name__}")
    tau = tau_of(scale, D)
    out_fmt = (
        fq if out_dtype is None else get_format(format_name(out_dtype, "out_dtype"), argname="out_dtype")
    )
    G = H // Hkv
    t0 = time.perf_counter()

    nonfinite_input = not (np.isfinite(qa).all() and np.isfinite(ka).all() and np.isfinite(va).all())
    plans = []
    for m, pol in zip(methods, pols):
        n = S2 if pol.untiled else n_req
        if pol.shift and n < 2:
            raise ValueError(f"block_kv must be >= 2 for PASA (the shifting matrix is n x n), got {n}")
        hi_lo = pol.score_ref == "hi_lo"  # the reference path: no shifting matrix (docs/error-model.md §10)
        consts = shift_constants(pol, n, beta, tau) if pol.shift and not hi_lo else None
        plans.append((m, pol, n, consts))

    # inputs as the kernels see them (rounded to each policy's operand format)
    rounded: dict[str, tuple[npt.NDArray[np.float64], ...]] = {}
    for _, pol, _, _ in plans:
        F = pol.matmul_in
        if F.name not in rounded:
            rounded[F.name] = tuple(round_array(x, F) for x in (qa, ka, va))

    if nonfinite_input:  # inf/NaN inputs: the census records them at its first stage; nothing to model
        return [
            Prediction(
                method=m,
                policy=pol.name,
                max_abs_bound=math.inf,
                rmse_estimate=math.inf,
                overflow=True,
                overflow_stage="input",
                beta=consts.beta if consts else None,
                c=consts.c if consts else None,
                modelled_as=pol.modelled_as,
                first_order_estimate=math.inf,
                a_priori_bound=math.inf,
                prob_abs_bound=math.inf,
                confidence=confidence,
                bound_status="non-finite input: no finite bound",
            )
            for m, pol, n, consts in plans
        ]
    # the reference path's augmented-column exponents, fixed once per call on all rows (§10.1)
    ref_setups = {
        pi: _ref.ref_exponents(pol, rounded[pol.matmul_in.name][0], rounded[pol.matmul_in.name][1], tau)
        for pi, (_m, pol, _n, _c) in enumerate(plans)
        if pol.score_ref == "hi_lo"
    }
    chunk_rows = max(1, row_elements // max(1, G * S2))
    acc: list[_Acc] = [
        _Acc(
            bound_max=0.0,
            ms_sum=0.0,
            count=0,
            terms_var={},
            terms_bound={},
            ovf={s: False for s in STAGES},
            nl=0,
            mc=0,
            mls=0.0,
            row_bound=np.zeros((B, H, S1)),
            row_ms=np.zeros((B, H, S1)),
        )
        for _ in plans
    ]
    row_cap = np.zeros((B, H, S1))
    if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 0:
        raise ValueError(f"mc_samples must be an int >= 0, got {mc_samples!r}")
    if isinstance(mc_rows, bool) or not isinstance(mc_rows, int) or mc_rows < 1:
        raise ValueError(f"mc_rows must be a positive int, got {mc_rows!r}")

    total_rows = B * H * S1
    base_opts = em.Options(out_format=out_fmt, mc_samples=mc_samples, seed=seed)
    chunk_no = 0
    for b in range(B):
        for h in range(Hkv):
            for i0 in range(0, S1, chunk_rows):
                i1 = min(S1, i0 + chunk_rows)
                chunk_no += 1
                budget = max(64, math.ceil(mc_rows * G * (i1 - i0) / total_rows))
                opts = _replace(base_opts, mc_max_rows=budget, seed=seed + 1000003 * chunk_no)
                pos = np.tile(np.arange(i0, i1), G)
                heads = np.repeat(np.arange(h * G, (h + 1) * G), i1 - i0)
                qg = qa[b, h * G : (h + 1) * G, i0:i1].reshape(-1, D)
                with np.errstate(over="ignore", under="ignore"):
                    golden = em.Exact(qg, ka[b, h], va[b, h], pos, tau, S1, is_causal)
                row_cap[b, heads, pos] = _row_hull_cap(golden.o, va[b, h], golden.vis)
                exacts: dict[str, em.Exact] = {}  # the exact solution on the inputs rounded to each format
                blocks: dict[
                    tuple[str, int, str], em.Blocks
                ] = {}  # its block statistics, by (format, block size, tail rule)
                for pi, (_m, pol, n, consts) in enumerate(plans):
                    fname = pol.matmul_in.name
                    if fname not in exacts:
                        qr, kr, vr = rounded[fname]
                        qgr = qr[b, h * G : (h + 1) * G, i0:i1].reshape(-1, D)
                        if (
                            np.array_equal(qgr, qg)
                            and np.array_equal(kr[b, h], ka[b, h])
                            and np.array_equal(vr[b, h], va[b, h])
                        ):
                            exacts[fname] = golden
                        else:
                            with np.errstate(over="ignore", under="ignore"):
                                exacts[fname] = em.Exact(qgr, kr[b, h], vr[b, h], pos, tau, S1, is_causal)
                            exacts[fname].o_ref = golden.o
                    ex = exacts[fname]
                    key = (fname, n, pol.kv_tail)
                    if key not in blocks:
                        blocks[key] = em.make_blocks(ex, n, pol.kv_tail)
                    bl = blocks[key]
                    # overflow of exponentials and divisions by underflowed frames are expected and handled
                    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
                        if pi in ref_setups:  # score_ref="hi_lo": the shadow simulation of §10
                            out = _ref.analyse_ref(pol, ref_setups[pi], ex, bl, opts)
                        else:
                            out = em.analyse(pol, consts, ex, bl, opts)
                    a = acc[pi]
                    a["bound_max"] = max(a["bound_max"], float(np.max(out.bound, initial=0.0)))
                    a["ms_sum"] += float(out.ms.sum())
                    a["count"] += out.ms.size
                    for t, x in out.terms_var.items():
                        a["terms_var"][t] = a["terms_var"].get(t, 0.0) + x
                    for t, x in out.terms_bound.items():
                        a["terms_bound"][t] = max(a["terms_bound"].get(t, 0.0), x)
                    for s_, f_ in out.overflow.items():
                        a["ovf"][s_] |= f_
                    a["nl"] += out.nonlinear_rows
                    a["mc"] += out.mc_rows
                    a["mls"] = max(a["mls"], out.max_log_std)
                    a["row_bound"][b, heads, pos] = out.bound.max(axis=1)
                    a["row_ms"][b, heads, pos] = out.ms.mean(axis=1)
    seconds = time.perf_counter() - t0
    preds = []
    for (m, pol, n, consts), a in zip(plans, acc):
        ovf = dict(a["ovf"])
        if nonfinite_input:
            ovf["input"] = True
        if not nonfinite_input:
            F = pol.matmul_in
            qr, kr, vr = rounded[F.name]
            if not (np.isfinite(qr).all() and np.isfinite(kr).all()):
                ovf["scores"] = True
            if not np.isfinite(vr).all():
                ovf["accumulator"] = True
        stage = next((s_ for s_ in STAGES if ovf[s_]), None)
        N = max(a["count"], 1)
        terms_rms = {t: math.sqrt(x / N) for t, x in a["terms_var"].items()}
        dom = max(terms_rms, key=lambda t: terms_rms[t]) if terms_rms else None
        tb = {t: x for t, x in a["terms_bound"].items() if t != "golden"}
        bdom = max(tb, key=lambda t: tb[t]) if tb else None
        rows = B * H * S1
        kappa = None
        if consts is not None and pol.recovery == "pseudo_average":
            kappa = kappa_of(
                consts.a, consts.b, n, consts.sigma, consts.c
            )  # eq. (B3), a, b, σ of M_r = a·I − b·J
        over = stage is not None
        thm = _theorems(
            m,
            pol,
            (qa, ka, va),
            rounded[pol.matmul_in.name],
            precision=precision,
            beta=beta,
            block_kv=n_req,
            scale=scale,
            is_causal=is_causal,
            confidence=confidence,
            rigorous=rigorous,
            shifted_keys=None if shifted_keys is None else shifted_keys.get(m),
        )
        preds.append(
            Prediction(
                method=m,
                policy=pol.name,
                max_abs_bound=thm.bound,
                rmse_estimate=math.inf if over else math.sqrt(a["ms_sum"] / N),
                overflow=over,
                overflow_stage=stage,
                terms_rms=terms_rms,
                terms_bound=dict(a["terms_bound"]),
                dominant=dom,
                bound_dominant=thm.dominant,
                beta=consts.beta if consts else None,
                c=consts.c if consts else None,
                kappa=kappa,
                nonlinear_rows=a["nl"] / rows,
                mc_rows=a["mc"],
                max_log_std=a["mls"],
                row_bound=thm.row_bound,
                row_rmse=np.sqrt(a["row_ms"]),
                modelled_as=pol.modelled_as,
                seconds=seconds / len(plans),
                first_order_estimate=math.inf
                if over
                else (math.nan if pol.score_ref == "hi_lo" else a["bound_max"]),
                first_order_dominant=bdom,
                row_first_order=a["row_bound"],
                a_priori_bound=thm.a_priori,
                prob_abs_bound=thm.prob,
                confidence=confidence,
                hull_cap=float(row_cap.max(initial=0.0)),
                row_hull_cap=row_cap,
                bound_status=thm.status,
                seconds_bound=thm.seconds_bound,
                seconds_a_priori=thm.seconds_a_priori,
            )
        )
    return preds


def _check_confidence(confidence: object) -> float:
    """``confidence`` of the probabilistic bound: a probability strictly between 0 and 1."""
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.floating)):
        raise TypeError(f"confidence must be a float in (0, 1), got {type(confidence).__name__}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be a probability in (0, 1), got {confidence!r}")
    return float(confidence)


def _row_hull_cap(
    o: npt.NDArray[np.float64], v: npt.NDArray[np.float64], vis: npt.NDArray[np.bool_] | None
) -> npt.NDArray[np.float64]:
    """max over columns of max over the visible keys r of |v_r − o| per row (the trivial bound: the
    output is a convex combination of the visible rows of V). The bottom-right causal mask makes each
    row's visible keys a prefix, so the column extremes are running extremes; a row without a visible
    key gets 0."""
    if v.shape[0] == 0 or v.shape[1] == 0:
        return np.zeros(o.shape[0])
    if vis is None:
        hi, lo = v.max(axis=0)[None, :], v.min(axis=0)[None, :]
        return np.asarray(np.maximum(hi - o, o - lo).max(axis=1), dtype=np.float64)
    last = vis.sum(axis=1) - 1
    idx = np.clip(last, 0, None)
    hi = np.maximum.accumulate(v, axis=0)[idx]
    lo = np.minimum.accumulate(v, axis=0)[idx]
    cap = np.maximum(hi - o, o - lo).max(axis=1)
    return np.asarray(np.where(last >= 0, cap, 0.0), dtype=np.float64)


@dataclass(frozen=True)
class _Theorems:
    """The theorem products of one method: rigorous, probabilistic, a-priori, and why any is None."""

    bound: float | None
    prob: float | None
    a_priori: float | None
    dominant: str | None
    row_bound: npt.NDArray[np.float64] | None
    status: str
    seconds_bound: float
    seconds_a_priori: float


def _theorems(
    method: str,
    pol: Policy,
    given: tuple[npt.NDArray[np.float64], ...],
    rounded: tuple[npt.NDArray[np.float64], ...],
    *,
    precision: PrecisionInput,
    beta: float | None,
    block_kv: int,
    scale: float | None,
    is_causal: bool,
    confidence: float,
    rigorous: bool,
    shifted_keys: ArrayInput | None,
) -> _Theorems:
    """Theorems 1 and 2 and Proposition 3 of docs/bounds.md for one method, or None with the reason.

    They bound the error against exact attention on the inputs as the kernel sees them (rounded to
    the matrix unit's format); the golden of :func:`predict` is attention on the inputs as given, so
    they are reported only when the two coincide (the inputs are representable)."""

    def none(why: str, t_a: float = 0.0) -> _Theorems:
        return _Theorems(None, None, None, None, None, f"not computed: {why}", 0.0, t_a)

    if (
        method.split(":")[0] not in ("pasa", "fa_qk", "fa_q", "fa_naive", "fa_hybrid", "smooth_k")
        or pol.modelled_as
    ):
        return none(f"{method} is outside the theorems' scope (docs/bounds.md §13)")
    if not all(np.array_equal(g, r) for g, r in zip(given, rounded)):
        return none(
            f"inputs not representable in {pol.matmul_in.name} (the theorems bound the error against "
            "attention on the rounded inputs; round them first)"
        )
    q, k, v = given
    t0 = time.perf_counter()
    try:
        apri = _rig.a_priori(
            method, _rig.stats_of(q, k, v), precision=precision, beta=beta, block_kv=block_kv, scale=scale
        )
    except ValueError as e:  # the policy outside Theorem 2's arrangements (the message names the fields)
        if "a_priori does not cover" in str(e):  # certify covers it (the script: docs/bounds.md §17)
            apri = None
        elif "certify supports" not in str(e):
            raise
        else:
            return none(str(e), time.perf_counter() - t0)
    t_a = time.perf_counter() - t0
    if not rigorous:
        return _Theorems(
            None,
            None,
            None if apri is None else apri.bound,
            None,
            None,
            "not computed: rigorous=False (a-priori only)",
            0.0,
            t_a,
        )
    t0 = time.perf_counter()
    cert = _rig.certify(
        method,
        q,
        k,
        v,
        precision=precision,
        beta=beta,
        block_kv=block_kv,
        scale=scale,
        is_causal=is_causal,
        shifted_keys=shifted_keys,
        confidence=confidence,
    )
    t_b = time.perf_counter() - t0
    how = (
        "conditional on the observed K̃" if shifted_keys is not None else "K̃ enclosed for any summation order"
    )
    status = "theorem 1 (" + (how if pol.shift else "flash attention") + ")"
    if pol.score_ref == "hi_lo":  # the reference in the accumulator (docs/bounds.md §16)
        status = "theorem 6 (reference in the accumulator)"
    if pol.smooth_k:  # the smoothed keys enclosed (docs/bounds.md §17, Lemma 17.4)
        status = "theorem 1 (flash attention on the smoothed keys, Lemma 17.4)"
    if pol.shift and pol.offset == "running":  # the script's bookkeeping (docs/bounds.md §17)
        status = "theorem 8 (the script's running offsets, " + how + ")"
    if cert.dominant == "theorem2_at_row_maxima":  # every unit in float64 (docs/bounds.md §19.4)
        status = "theorem 2 at each row's maxima (fp64, docs/bounds.md §19.4: no enclosure in float64)"
    return _Theorems(
        math.inf if cert.overflow else cert.max_abs_bound,
        math.inf if cert.overflow else cert.prob_abs_bound,
        None if apri is None else apri.bound,
        cert.dominant or None,
        cert.row_bound,
        status,
        t_b,
        t_a,
    )


def method_names() -> list[str]:
    """The method names :func:`predict` accepts (those of the harness)."""
    return list(METHOD_NAMES)


# -- symbolic derivations (sympy, imported on first use) ---------------------------------------------------------
def derivations() -> list[Identity]:
    """The identities the model rests on, each a :class:`pasa_theory.scheme.Identity` verified by sympy.

    E1  matrix product with accumulation error θ and one output rounding δ:
        ``(s + θ)(1 + δ) − s = δs + θ + δθ`` (first order δs + θ; Blanchard et al. 2020).
    E2  softmax sensitivity: ``∂o/∂z_k = p_k (v_k − o)`` (3 keys, symbolic).
    E3  a perturbation common to a block moves o by ``B_j = Σ_{k∈j} p_k(v_k − o)``; common to all keys,
        by 0 (softmax is shift invariant).
    E4  telescoping of history rescalings: ``Σ_j (Π_j − 1)B_j = Σ_t (h_t − 1)Π_t P_{t−1}`` with
        ``Π_j = ∏_{t>j} h_t`` and ``P_t = Σ_{j<=t} B_j`` (3 blocks).
    E5  ratio: the first-order change of N/ℓ is ``ΔN/ℓ − (N/ℓ)Δℓ/ℓ``.
    E6  recovery amplification: ŝ = S̃ + c·mean(S̃) maps an error e to ``(I + (c/n)J)e``, eigenvalue
        ``1 + c`` on the block-mean direction; with c = β/(1 − β) that is ``1/(1 − β)``, the eigenvalue
        of M⁻¹ on **1**, and κ₂(M) = ‖M‖₂‖M⁻¹‖₂ = 1/(1 − β) (σ = 1).
    E7  exact (nonlinear) perturbation identity: with weights ``p_k φ_k``,
        ``o' − o = Σ_k p_k(φ_k − 1)(v_k − o) / Σ_k p_k φ_k`` (3 keys).
    E8  a rounding error uniform on one quantum q has variance ``q²/12``.
    E9  over a binade, with log-uniform values, ``E[(2^e/x)²] = 3/(8 ln 2)`` (the mean of
        ulp(x)²/(12x²) is 0.18·u²).
    """
    import sympy

    from . import symbols as Sy
    from .scheme import Identity, IJMatrix

    out = []
    s, th, de = sympy.symbols("s theta delta", real=True)
    out.append(
        Identity(
            "E1 matmul: accumulation plus one output rounding",
            (s + th) * (1 + de) - s,
            de * s + th + de * th,
            "fl_out(s + θ) = (s + θ)(1 + δ)",
        )
    )
    z = sympy.symbols("z0:3", real=True)
    v = sympy.symbols("v0:3", real=True)
    e = [sympy.exp(zi) for zi in z]
    Z = sum(e)
    p = [ei / Z for ei in e]
    o = sum(pi * vi for pi, vi in zip(p, v))
    for k_ in range(3):
        out.append(
            Identity(
                f"E2 softmax sensitivity dz_{k_}",
                sympy.diff(o, z[k_]),
                p[k_] * (v[k_] - o),
                "∂o/∂z_k = p_k(v_k − o)",
            )
        )
    zeta = sympy.Symbol("zeta", real=True)
    ob = o.subs({z[0]: z[0] + zeta, z[1]: z[1] + zeta})
    out.append(
        Identity(
            "E3 block-common perturbation",
            sympy.diff(ob, zeta).subs(zeta, 0),
            p[0] * (v[0] - o) + p[1] * (v[1] - o),
            "∂o/∂ζ_j = B_j",
        )
    )
    oa = o.subs({zi: zi + zeta for zi in z}, simultaneous=True)
    out.append(Identity("E3 shift invariance", oa, o, "a perturbation common to all keys does nothing"))
    h = sympy.symbols("h1:3", positive=True)
    Bs = sympy.symbols("B0:3", real=True)
    Pi = [h[0] * h[1], h[1], sympy.Integer(1)]  # Π_j = ∏_{t>j} h_t, t = 1, 2
    P = [Bs[0], Bs[0] + Bs[1], Bs[0] + Bs[1] + Bs[2]]
    lhs = sum((Pi[j] - 1) * Bs[j] for j in range(3))
    rhs = (h[0] - 1) * Pi[1] * P[0] + (h[1] - 1) * Pi[2] * P[1]
    out.append(
        Identity(
            "E4 telescoping of history rescalings", lhs, rhs, "Σ_j(Π_j − 1)B_j = Σ_t(h_t − 1)Π_t P_{t−1}"
        )
    )
    N, ell, dN, dl, eps = sympy.symbols("N ell dN dl epsilon", real=True)
    first = sympy.series((N + eps * dN) / (ell + eps * dl), eps, 0, 2).removeO().coeff(eps, 1)
    out.append(Identity("E5 first-order error of a ratio", first, dN / ell - (N / ell) * dl / ell, "Δ(N/ℓ)"))
    rec = IJMatrix(sympy.Integer(1), Sy.c / Sy.n)  # e ↦ e + c·mean(e)
    eig1 = rec.alpha + Sy.n * rec.gamma
    out.append(
        Identity("E6 recovery eigenvalue on the block mean", eig1, 1 + Sy.c, "(I + (c/n)J)1 = (1 + c)1")
    )
    cb = Sy.beta / (1 - Sy.beta)
    out.append(
        Identity(
            "E6 amplification 1 + c = 1/(1 − β)",
            (1 + Sy.c).subs(Sy.c, cb),
            1 / (1 - Sy.beta),
            "c = β/(1 − β)",
        )
    )
    from .scheme import shifting_inverse

    Minv = shifting_inverse()
    out.append(
        Identity(
            "E6 = eigenvalue of M⁻¹ on 1 = κ₂(M)",
            Minv.alpha + Sy.n * Minv.gamma,
            1 / (1 - Sy.beta),
            "‖M‖₂ = 1, ‖M⁻¹‖₂ = 1/(1 − β)",
        )
    )
    phi = sympy.symbols("phi0:3", positive=True)
    w = [pi * fi for pi, fi in zip(p, phi)]
    o2 = sum(wi * vi for wi, vi in zip(w, v)) / sum(w)
    rhs7 = sum(pi * (fi - 1) * (vi - o) for pi, fi, vi in zip(p, phi, v)) / sum(w)
    out.append(Identity("E7 exact perturbation identity", o2 - o, rhs7, "o' − o = Σp(φ − 1)(v − o)/Σpφ"))
    x, q = sympy.symbols("x q", positive=True)
    out.append(
        Identity(
            "E8 variance of a uniform rounding error",
            sympy.integrate(x**2, (x, -q / 2, q / 2)) / q,
            q**2 / 12,
            "∫ x² dx/q over one quantum",
        )
    )
    t = sympy.Symbol("t", positive=True)
    out.append(
        Identity(
            "E9 mean of (2^e/x)² over a log-uniform binade",
            sympy.integrate(t**-2 / (t * sympy.log(2)), (t, 1, 2)),
            sympy.Rational(3, 8) / sympy.log(2),
            "E[ulp²/(12x²)] = 0.18·u²",
        )
    )
    return out


# -- standard model -------------------------------------------------------------------------------------------------
def unit_roundoff(fmt: str | FloatFormat) -> Fraction:
    """u = 2^-p of a format (exact Fraction)."""
    return get_format(fmt).u


def gamma_n(n: int, fmt: str | FloatFormat) -> Fraction:
    """Higham's γ_n = nu/(1 − nu) (Lemma 3.1), exact; ValueError when nu >= 1 (no bound)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    u = get_format(fmt).u
    if n * u >= 1:
        raise ValueError(
            f"gamma_n: n·u = {float(n * u)} >= 1 for n = {n} in {get_format(fmt).name}: no deterministic bound"
        )
    return n * u / (1 - n * u)


def gamma_tilde(n: int, fmt: str | FloatFormat, lam: float = 1.0) -> mpmath.mpf:
    """Higham & Mary's probabilistic constant exp(λ√n·u + n·u²/(1 − u)) − 1 (SISC 41, 2019, Thm 2.4),
    which bounds |θ_n| with probability at least 1 − 2exp(−λ²(1 − u)²/2); mpmath value."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    u = mpmath.mpf(get_format(fmt).u.numerator) / get_format(fmt).u.denominator
    return mpmath.expm1(lam * mpmath.sqrt(n) * u + n * u * u / (1 - u))


# -- a priori: statistics of the inputs -------------------------------------------------------------------------------
_OUTLIER_P = 0.001  # Bernoulli rate of the "hybrid" distribution (pasa_npu.data.make_qkv)


@dataclass(frozen=True)
class InputStats:
    """Mean and spread of the entries of Q, K, V and the shape; ``dist`` names how ``spread`` is read.

    ``"uniform"``: entries uniform on mean ± spread (the reference benchmark's ``amplitude``);
    ``"normal"``: standard deviation ``spread``; ``"hybrid"``: N(mean, 1) plus N(0, spread) outliers with
    probability 0.001 (the benchmark's hybrid case, FA3's outlier model).
    """

    mean_q: float
    spread_q: float
    mean_k: float
    spread_k: float
    mean_v: float
    spread_v: float
    head_dim: int
    seq_kv: int
    seq_q: int = 1
    heads: int = 1
    dist: str = "uniform"
    #: largest difference of the key mean between two KV blocks (0 for identically distributed keys)
    kv_block_drift: float = 0.0

    def __post_init__(self) -> None:
        if self.dist not in ("uniform", "normal", "hybrid"):
            raise ValueError(f"dist must be 'uniform', 'normal' or 'hybrid', got {self.dist!r}")
        for name in ("head_dim", "seq_kv", "seq_q", "heads"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        for name in ("spread_q", "spread_k", "spread_v"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    def std(self, which: str) -> float:
        """Standard deviation of one entry of Q, K or V."""
        sp = getattr(self, f"spread_{which}")
        if self.dist == "uniform":
            return sp / math.sqrt(3.0)
        if self.dist == "normal":
            return sp
        return math.sqrt(1.0 + _OUTLIER_P * sp * sp)


def _score_stats(st: InputStats, tau: float) -> dict[str, float]:
    """Closed-form statistics of the scores s = τ·q·k (CLT over the head dimension)."""
    d = st.head_dim
    mq, mk = st.mean_q, st.mean_k
    sq, sk = st.std("q"), st.std("k")
    mu = tau * d * mq * mk
    var_all = tau**2 * d * (sq * sq * sk * sk + mq * mq * sk * sk + mk * mk * sq * sq)
    var_row = tau**2 * d * (mq * mq + sq * sq) * sk * sk  # across keys, one query
    var_rowmean = tau**2 * d * mk * mk * sq * sq  # of the row's mean, across queries
    pairs = max(2, st.seq_q * st.seq_kv * st.heads)
    z = math.sqrt(2.0 * math.log(pairs))
    return dict(
        mu=mu, sd_all=math.sqrt(var_all), sd_row=math.sqrt(var_row), sd_rowmean=math.sqrt(var_rowmean), z=z
    )


@dataclass(frozen=True)
class Envelope:
    """A priori overflow envelope: per stage the predicted peak magnitude and the threshold it must stay below."""

    method: str
    policy: str
    peaks: dict[str, float]
    thresholds: dict[str, float]
    overflow_stage: str | None

    @property
    def overflow(self) -> bool:
        return self.overflow_stage is not None


def overflow_envelope(
    method: str,
    stats: InputStats,
    *,
    precision: PrecisionInput = "npu_fp16",
    beta: float | None = None,
    block_kv: int = 128,
    scale: float | None = None,
) -> Envelope:
    """Closed-form overflow envelope of ``method`` for inputs with statistics ``stats``.

    Peaks (z = √(2 ln N) for the N score pairs, CLT over d; docs/error-model.md §6):

    * scores: ``|μ_s| + z·σ_s`` with μ_s = τdμ_qμ_k, σ_s² = τ²d(σ_q²σ_k² + μ_q²σ_k² + μ_k²σ_q²), divided by τ
      where QKᵀ is rounded before the scale (``fa_qk``, ``smooth_k`` with μ_k → 0), and for PASA the
      shifted tile ``(1 − β)|μ_s| + z·√(σ_row² + (1 − β)²σ_rowmean²)``;
    * shift (PASA): the block offsets ``β·(τdμ_q·drift + z√2·σ_row/√n)``;
    * row_sum/accumulator (raw accumulators): ``ℓ ≈ S2·e^{σ_row²/2 − z_{S2}σ_row}`` (at least 1) and
      ``|O| ≈ ℓ·(|μ_v| + σ_v)``; the tile ``P·V_j`` with n keys likewise (all accumulators);
    * output: ``|μ_v| + z·σ_v`` where the output format is narrower than the vector format.

    The first stage whose peak reaches its threshold (the format's round-to-nearest overflow threshold,
    65520 for fp16) is ``overflow_stage``.
    """
    pol = require_modelled(resolve(method, precision))
    beta = check_beta(beta)
    if not isinstance(stats, InputStats):
        raise TypeError(f"stats must be an InputStats, got {type(stats).__name__}")
    tau = tau_of(scale, stats.head_dim)
    n = stats.seq_kv if pol.untiled else check_block(block_kv, "block_kv")
    sc = _score_stats(stats, tau)
    thr = {s_: pol.vector.overflow_threshold_float for s_ in STAGES}
    thr["scores"] = pol.matmul_out.overflow_threshold_float
    peaks: dict[str, float] = {s_: 0.0 for s_ in STAGES}
    peaks["input"] = max(abs(getattr(stats, f"mean_{w}")) + sc["z"] * stats.std(w) for w in "qkv")
    thr["input"] = pol.matmul_in.overflow_threshold_float
    if pol.shift:
        consts = shift_constants(pol, n, beta, tau)
        b_ = consts.beta
        peaks["scores"] = (1 - b_) * abs(sc["mu"]) + sc["z"] * math.sqrt(
            sc["sd_row"] ** 2 + (1 - b_) ** 2 * sc["sd_rowmean"] ** 2
        )
        if pol.placement == "scores":
            peaks["scores"] /= tau
        drift = tau * stats.head_dim * abs(stats.mean_q) * stats.kv_block_drift
        peaks["shift"] = b_ * (drift + sc["z"] * math.sqrt(2.0) * sc["sd_row"] / math.sqrt(n))
    else:
        mu, sd = sc["mu"], sc["sd_all"]
        if pol.smooth_k:
            mu = 0.0
            sd = math.sqrt(
                tau**2 * stats.head_dim * (stats.std("q") ** 2 + stats.mean_q**2) * stats.std("k") ** 2
            )
        peak = abs(mu) + sc["z"] * sd
        peaks["scores"] = peak / tau if pol.placement == "scores" else peak
    sr = sc["sd_row"]

    def ell(m: int) -> float:
        # Σ_r e^{s_r − max s} over m Gaussian logits of spread sr: m·E[e^{s}]/e^{max} = m·e^{sr²/2 − z·sr} while the
        # bulk dominates (sr < z); for sr >= z the largest term dominates and ℓ → 1 (the exponent's minimum,
        # −z²/2 at sr = z, gives m·e^{−z²/2} = 1 there, so the two branches join continuously).
        zm = math.sqrt(2.0 * math.log(max(m, 2)))
        expo = sr * sr / 2 - zm * sr if sr < zm else -zm * zm / 2
        return min(float(m), max(1.0, m * math.exp(expo)))

    vmag = abs(stats.mean_v) + stats.std("v")
    tile = ell(n) * vmag  # the P·V tile, rounded to the matmul output format
    t_tile = pol.matmul_out.overflow_threshold_float
    peaks["accumulator"], thr["accumulator"] = tile, t_tile
    if pol.accum == "raw":
        peaks["row_sum"] = ell(stats.seq_kv)
        acc_o = ell(stats.seq_kv) * vmag  # the unnormalised O, in the vector format
        if acc_o / thr["row_sum"] > tile / t_tile:
            peaks["accumulator"], thr["accumulator"] = acc_o, pol.vector.overflow_threshold_float
    peaks["output"] = abs(stats.mean_v) + sc["z"] * stats.std("v")
    stage = next((s_ for s_ in STAGES if peaks[s_] >= thr[s_]), None)
    return Envelope(method, pol.name, peaks, thr, stage)


def term_scales(
    method: str,
    stats: InputStats,
    *,
    precision: PrecisionInput = "npu_fp16",
    beta: float | None = None,
    block_kv: int = 128,
    scale: float | None = None,
) -> dict[str, float]:
    """A priori standard deviation of the main logit perturbations (score units), from the statistics.

    ``scores.round``: ulp(|s|)/√12 at the typical magnitude of the rounded score (q·k for ``fa_qk``, the
    shifted tile S̃ for PASA); ``scores.kt``: √d·rms(q)·ulp(K̃)/√12 (PASA); ``recovery``:
    c·√((σ_round² + σ_kt²)/n) (the block mean of the tile errors, E6); ``recovery.mean``: c·ulp(μ̃)/√12
    for the reference script's rounded pseudo-average, μ̃ ≈ (1 − β)μ_s. These explain which stage
    dominates where (the measured breakdown is :attr:`Prediction.terms_rms`).
    """
    pol = require_modelled(resolve(method, precision))
    beta = check_beta(beta)
    tau = tau_of(scale, stats.head_dim)
    n = stats.seq_kv if pol.untiled else check_block(block_kv, "block_kv")
    sc = _score_stats(stats, tau)
    Fo = pol.matmul_out

    def q12(x: float, F: FloatFormat) -> float:
        return float(ulp(x, F)) / math.sqrt(12.0)

    out: dict[str, float] = {}
    if not pol.shift:
        mag = math.hypot(sc["mu"], sc["sd_all"])
        out["scores.round"] = q12(mag / tau, Fo) * tau if pol.placement == "scores" else q12(mag, Fo)
        if pol.placement == "scores":
            out["scores.scale"] = q12(mag, pol.vector)
        return out
    consts = shift_constants(pol, n, beta, tau)
    b_, c = consts.beta, consts.c
    mag = math.hypot((1 - b_) * sc["mu"], sc["sd_row"])
    out["scores.round"] = q12(mag, Fo)
    kt = tau * math.hypot((1 - b_) * stats.mean_k, stats.std("k"))
    rms_q = math.hypot(stats.mean_q, stats.std("q"))
    out["scores.kt"] = math.sqrt(stats.head_dim) * rms_q * q12(kt, pol.matmul_in)
    if pol.recovery == "pseudo_average":
        out["recovery"] = c * math.sqrt((out["scores.round"] ** 2 + out["scores.kt"] ** 2) / n)
        if pol.pseudo_average == "rounded":
            out["recovery.mean"] = c * q12((1 - b_) * sc["mu"], pol.vector)
    return out


def sample_inputs(
    stats: InputStats, *, rows: int | None = None, seed: int = 0, dtype: str = "fp16"
) -> tuple[npt.NDArray[np.floating], npt.NDArray[np.floating], npt.NDArray[np.floating]]:
    """A synthetic (q, k, v) with the given statistics (numpy, BNSD, rounded to ``dtype``), for
    :func:`predict_a_priori`. ``rows`` query rows (default ``min(stats.seq_q, 64)``)."""
    rng = np.random.default_rng(seed)
    rows = min(stats.seq_q, 64) if rows is None else rows
    shapes = {
        "q": (1, stats.heads, rows, stats.head_dim),
        "k": (1, 1, stats.seq_kv, stats.head_dim),
        "v": (1, 1, stats.seq_kv, stats.head_dim),
    }
    out: list[npt.NDArray[np.floating]] = []
    for w in "qkv":
        m, sp, shp = getattr(stats, f"mean_{w}"), getattr(stats, f"spread_{w}"), shapes[w]
        if stats.dist == "uniform":
            x = m + sp * rng.uniform(-1.0, 1.0, shp)
        elif stats.dist == "normal":
            x = m + sp * rng.standard_normal(shp)
        else:
            x = (
                m
                + rng.standard_normal(shp)
                + sp * rng.standard_normal(shp) * (rng.uniform(size=shp) < _OUTLIER_P)
            )
        out.append(round_array(x, dtype).astype(np.float32 if dtype != "fp16" else np.float16))
    return out[0], out[1], out[2]


def predict_a_priori(
    method: str,
    stats: InputStats,
    *,
    precision: PrecisionInput = "npu_fp16",
    beta: float | None = None,
    block_kv: int = 128,
    scale: float | None = None,
    rows: int | None = None,
    seed: int = 0,
    dtype: str = "fp16",
) -> Prediction:
    """The model from input statistics alone: the a posteriori model on a synthetic sample with those
    statistics (``rows`` query rows, all S2 keys; seeded), with overflow from the closed-form
    :func:`overflow_envelope` (which covers all S1·S2 pairs, unlike the sample). ``max_abs_bound`` (and
    the probabilistic bound) then bound the sampled inputs only, a typical draw of the distribution, not
    a worst case. ``a_priori_bound`` is Theorem 2 (docs/bounds.md §11) for every input of the
    distribution's support when ``dist`` is ``"uniform"`` (|x| <= |mean| + spread); for the unbounded
    ``"normal"``/``"hybrid"`` it is Theorem 2 for inputs no larger than the sample's."""
    q, k, v = sample_inputs(stats, rows=rows, seed=seed, dtype=dtype)
    pred = predict(method, q, k, v, precision=precision, beta=beta, block_kv=block_kv, scale=scale, seed=seed)
    if stats.dist == "uniform" and pred.a_priori_bound is not None:
        # Theorem 2 for every input of the distribution's support: |x| <= |mean| + spread, and rounding to
        # nearest is monotone, so the rounded inputs obey the rounded limits.
        def lim(x: float) -> float:
            return float(round_array(np.array([x]), dtype)[0])

        st = _rig.InputStats(
            q_max=lim(abs(stats.mean_q) + stats.spread_q),
            k_max=lim(abs(stats.mean_k) + stats.spread_k),
            v_abs=lim(abs(stats.mean_v) + stats.spread_v),
            v_spread=lim(stats.mean_v + stats.spread_v) - lim(stats.mean_v - stats.spread_v),
            head_dim=stats.head_dim,
            seq_kv=stats.seq_kv,
            # smooth_k (docs/bounds.md §19.2): the exact column mean lies in the support, so every key is
            # within its width of it
            k_dev=lim(stats.mean_k + stats.spread_k) - lim(stats.mean_k - stats.spread_k),
        )
        apri = _rig.a_priori(method, st, precision=precision, beta=beta, block_kv=block_kv, scale=scale)
        pred = _replace(pred, a_priori_bound=apri.bound)
    env = overflow_envelope(method, stats, precision=precision, beta=beta, block_kv=block_kv, scale=scale)
    if env.overflow:
        return _replace(
            pred,
            overflow=True,
            overflow_stage=env.overflow_stage,
            rmse_estimate=math.inf,
            first_order_estimate=math.inf,
        )
    return _replace(pred, overflow=False, overflow_stage=None)
