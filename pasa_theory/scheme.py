r"""Symbolic derivation of the PASA shifting scheme, every step verified by sympy.

Each function returns sympy expressions (or an :class:`IJMatrix`) in the symbols of
:mod:`pasa_theory.symbols`; they pretty-print in notebooks (``_repr_latex_``) and can be lambdified.
Each claim is an :class:`Identity` whose :meth:`~Identity.verify` checks ``simplify(lhs − rhs) == 0``;
:func:`identities` lists them all and the tests verify every one.

**Matrices of the form αI + γJ.** For a block of length ``n`` (symbolic), ``J = 1·1ᵀ`` satisfies
``J² = nJ``, so these matrices form a commutative algebra:

.. math::

    (α_1 I + γ_1 J)(α_2 I + γ_2 J) = α_1α_2 I + (α_1γ_2 + γ_1α_2 + nγ_1γ_2) J              \tag{M1}

with eigenvalue ``α + nγ`` on **1** (multiplicity 1) and ``α`` on **1**⊥ (multiplicity n − 1),
determinant ``α^{n−1}(α + nγ)`` and, by the Sherman–Morrison formula for the rank-one update
``αI + γ·1·1ᵀ`` (J. Sherman and W. J. Morrison, Ann. Math. Statist. 21 (1950) 124–127),

.. math::

    (αI + γJ)^{-1} = \frac{1}{α} I - \frac{γ}{α(α + nγ)} J .                                  \tag{M2}

**The shifting matrix** ``M = σ(I − (β/n)J)`` (σ = 1 unless the softmax scale is folded in): eigenvalues
``σ(1 − β)`` on **1** and ``σ`` elsewhere, determinant ``σⁿ(1 − β)``, inverse
``(1/σ)(I + β/(n(1 − β))·J)`` (docs/method.md §2). For scores ``s`` with block mean ``μ``:
``s̃ = Ms = σ(s − βμ)``, ``mean(s̃) = σ(1 − β)μ`` and the **recovery identity**

.. math::

    σ s = s̃ + \frac{β}{1-β}\,\mathrm{mean}(s̃).                                               \tag{M3}

**The rounded matrix** ``M_r = aI − bJ`` (B2 of :mod:`pasa_theory.shifting`): ``s̃ = as − bnμ``,
``mean(s̃) = (a − bn)μ``, ``M_r⁻¹ = (1/a)(I + b/(a − bn)·J)``; with ``ŝ = s̃ + c·mean(s̃)`` the error
``ŝ − σs = (a − σ)(s − μ) + μκ_abs``, ``κ_abs = (a − σ) + c(a − bn) − bn`` (B3). The two equations for β
(B4, B5), their solutions on a cell (R1 of :mod:`pasa_theory.roots`), κ at each, and the fact that
without rounding (``a = σ``, ``b = σβ/n``) both reduce to the identity ``β/(1 − β) = β/(1 − β)``.

**Online global recovery** (:func:`online_recovery`, :func:`online_step_lemma`) — our statement of the
paper's "Theorem 1" (docs/method.md §4, docs/design.md §14):

    *Theorem.* Let the KV blocks ``i = 0, …, T−1`` have arbitrary shifted scores ``s̃_{i,k}`` with
    block means ``μ̃_i``, let ``c`` be any number and ``s_{i,k} := s̃_{i,k} + c·μ̃_i``. Run the loop of
    docs/method.md §3, with the block-local maxima ``m_i`` and the running maxima ``M_j`` replaced by
    *arbitrary* numbers. Then after block ``j``

    .. math::

        ℓ_j = e^{-cA_j - M_j} \sum_{i \le j}\sum_k e^{s_{i,k}}, \qquad
        O_j = e^{-cA_j - M_j} \sum_{i \le j}\sum_k e^{s_{i,k}} v_{i,k},                      \tag{M4}

    with ``A_j = (μ̃_0 + … + μ̃_j)/(j + 1)`` the running mean, so ``O_{T−1}/ℓ_{T−1}`` is exactly
    softmax(s)·V. If ``s̃_i = M s_i^{raw}`` exactly and ``c = β/(1 − β)``, then ``s = σ s^{raw}`` (M3), the
    output is exact softmax attention, and the final reference ``c·A_{T−1}`` is ``σβ`` times the global
    mean of the raw scores (all blocks full).

The maxima only keep the exponentials in range: the identity holds for any choice, which is why they
are free symbols here. The proof is the step lemma (M4 at ``j − 1`` ⇒ M4 at ``j``, for symbolic ``j``
and arbitrary ``A_j``) plus the running-mean lemma; the 2- and 3-block cases are also checked in
full, and one case element by element.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TypeAlias

import sympy

from . import symbols as S

# sympy ships no type information, so to mypy ``sympy.Expr`` and everything built from it are ``Any``;
# the annotations below still say what each value is.

#: An entry or factor before ``sympy.sympify``: a sympy expression or a Python number.
ExprLike: TypeAlias = "sympy.Expr | int | Fraction"

__all__ = [
    "IJMatrix",
    "Identity",
    "identities",
    "verify_all",
    "shifting_matrix",
    "shifting_inverse",
    "shifting_eigenvalues",
    "shifting_determinant",
    "shifted_score",
    "shifted_mean",
    "recovery_coefficient_expr",
    "recovered_score",
    "rounded_matrix",
    "rounded_inverse",
    "rounded_shifted_score",
    "rounded_shifted_mean",
    "recovery_error",
    "temperature_error",
    "kappa_abs",
    "kappa",
    "c_star",
    "paper_rhs",
    "kappa_rhs",
    "paper_solution",
    "kappa_solution",
    "kappa_at_paper_solution",
    "exact_entries",
    "online_recovery",
    "OnlineRecovery",
    "online_step_lemma",
    "running_mean_lemma",
    "explicit_matrix_checks",
    "global_reference_identity",
]


# -- the αI + γJ algebra ------------------------------------------------------------------------------
class IJMatrix:
    """The n×n matrix ``α·I + γ·J`` (J all ones) with symbolic ``n``: products (M1), inverse (M2),
    eigenvalues and determinant in closed form."""

    __slots__ = ("alpha", "gamma", "n")

    def __init__(self, alpha: ExprLike, gamma: ExprLike, n: ExprLike | None = None):
        self.alpha = sympy.sympify(alpha)
        self.gamma = sympy.sympify(gamma)
        self.n = S.n if n is None else sympy.sympify(n)

    @classmethod
    def identity(cls, n: ExprLike | None = None) -> IJMatrix:
        return cls(1, 0, n)

    def __matmul__(self, other: IJMatrix) -> IJMatrix:
        """(M1)."""
        a1, g1, a2, g2 = self.alpha, self.gamma, other.alpha, other.gamma
        return IJMatrix(a1 * a2, a1 * g2 + g1 * a2 + self.n * g1 * g2, self.n)

    def __add__(self, other: IJMatrix) -> IJMatrix:
        return IJMatrix(self.alpha + other.alpha, self.gamma + other.gamma, self.n)

    def __sub__(self, other: IJMatrix) -> IJMatrix:
        return IJMatrix(self.alpha - other.alpha, self.gamma - other.gamma, self.n)

    def __mul__(self, k: ExprLike) -> IJMatrix:
        return IJMatrix(self.alpha * k, self.gamma * k, self.n)

    __rmul__ = __mul__

    def inverse(self) -> IJMatrix:
        """Sherman–Morrison (M2): ``(αI + γJ)⁻¹ = (1/α)I − γ/(α(α + nγ))·J``."""
        a, g = self.alpha, self.gamma
        return IJMatrix(1 / a, -g / (a * (a + self.n * g)), self.n)

    def eigenvalues(self) -> dict[sympy.Expr, sympy.Expr | int]:
        """``{α + nγ: 1, α: n − 1}`` (on **1** and on its orthogonal complement)."""
        return {self.alpha + self.n * self.gamma: 1, self.alpha: self.n - 1}

    def det(self) -> sympy.Expr:
        """``α^(n−1)·(α + nγ)``, the product of the eigenvalues."""
        return self.alpha ** (self.n - 1) * (self.alpha + self.n * self.gamma)

    def mean_factor(self) -> sympy.Expr:
        """``mean((αI + γJ)s) = (α + nγ)·mean(s)``."""
        return self.alpha + self.n * self.gamma

    def apply(self, s_k: ExprLike | None = None, mu: ExprLike | None = None) -> sympy.Expr:
        """Entry k of ``(αI + γJ)s`` for a vector with entry ``s_k`` and mean ``mu``: ``αs_k + γnμ``."""
        s_k = S.s_k if s_k is None else s_k
        mu = S.mu if mu is None else mu
        return self.alpha * s_k + self.gamma * self.n * mu

    def as_matrix(self, size: int) -> sympy.Matrix:
        """The explicit ``size × size`` sympy Matrix (``n`` replaced by ``size``)."""
        sub = {self.n: size} if isinstance(self.n, sympy.Symbol) else {}
        a = self.alpha.subs(sub)
        g = self.gamma.subs(sub)
        return a * sympy.eye(size) + g * sympy.ones(size, size)

    def components(self) -> tuple[sympy.Expr, sympy.Expr]:
        return self.alpha, self.gamma

    def simplify(self) -> IJMatrix:
        return IJMatrix(sympy.simplify(self.alpha), sympy.simplify(self.gamma), self.n)

    def __repr__(self) -> str:
        return f"IJMatrix({self.alpha}, {self.gamma})"

    def _repr_latex_(self) -> str:
        return f"$\\left({sympy.latex(self.alpha)}\\right) I + \\left({sympy.latex(self.gamma)}\\right) J$"

    def _sympystr(
        self, printer: sympy.printing.printer.Printer
    ) -> str:  # pragma: no cover - used by sympy printers
        return f"({printer.doprint(self.alpha)})*I + ({printer.doprint(self.gamma)})*J"


@dataclass(frozen=True)
class Identity:
    """A verified claim ``lhs = rhs`` (sympy expressions or :class:`IJMatrix`), with its source."""

    #: Short identifier.
    name: str
    lhs: sympy.Expr | IJMatrix | int
    rhs: sympy.Expr | IJMatrix | int
    #: What the identity states and where it is used or derived.
    statement: str = ""
    #: Extra substitutions/assumptions applied before simplifying (e.g. a lemma's hypothesis).
    subs: dict[sympy.Expr, sympy.Expr] = field(default_factory=dict)

    def residuals(self) -> tuple[sympy.Expr, ...]:
        if isinstance(self.lhs, IJMatrix) or isinstance(self.rhs, IJMatrix):
            l_ = self.lhs if isinstance(self.lhs, IJMatrix) else IJMatrix(self.lhs, 0)
            r_ = self.rhs if isinstance(self.rhs, IJMatrix) else IJMatrix(self.rhs, 0)
            res: tuple[sympy.Expr, ...] = (l_.alpha - r_.alpha, l_.gamma - r_.gamma)
        else:
            res = (sympy.sympify(self.lhs) - sympy.sympify(self.rhs),)
        return tuple(r.subs(self.subs) if self.subs else r for r in res)

    def verify(self) -> bool:
        """``simplify(lhs − rhs) == 0`` (componentwise for matrices)."""
        return all(_is_zero(r) for r in self.residuals())

    def as_eq(self) -> sympy.Equality:
        """A sympy ``Eq`` for display (matrices shown by their (α, γ) components)."""
        if isinstance(self.lhs, IJMatrix) or isinstance(self.rhs, IJMatrix):
            l_ = self.lhs if isinstance(self.lhs, IJMatrix) else IJMatrix(self.lhs, 0)
            r_ = self.rhs if isinstance(self.rhs, IJMatrix) else IJMatrix(self.rhs, 0)
            return sympy.Eq(sympy.Matrix(l_.components()), sympy.Matrix(r_.components()), evaluate=False)
        return sympy.Eq(self.lhs, self.rhs, evaluate=False)

    def _repr_latex_(self) -> str:
        return f"$\\text{{{self.name}}}:\\quad {sympy.latex(self.as_eq())}$"


def _is_zero(expr: ExprLike) -> bool:
    expr = sympy.sympify(expr)
    if expr == 0:
        return True
    e = sympy.powsimp(sympy.expand(expr), combine="exp", force=True)
    if e == 0:
        return True
    return sympy.simplify(e) == 0


# -- the exact shifting matrix ------------------------------------------------------------------------------
def shifting_matrix(scaled: bool = False) -> IJMatrix:
    """``M = I − (β/n)J`` (docs/method.md §2), or ``σ(I − (β/n)J)`` with the scale folded in (docs/method.md §7)."""
    sig = S.sigma if scaled else sympy.Integer(1)
    return IJMatrix(sig, -sig * S.beta / S.n)


def shifting_inverse(scaled: bool = False) -> IJMatrix:
    """Closed form ``M⁻¹ = (1/σ)(I + β/(n(1 − β))·J)`` (docs/method.md §2; from M2)."""
    sig = S.sigma if scaled else sympy.Integer(1)
    return IJMatrix(1 / sig, S.beta / (sig * S.n * (1 - S.beta)))


def shifting_eigenvalues(scaled: bool = False) -> dict[sympy.Expr, sympy.Expr | int]:
    """``{σ(1 − β): 1, σ: n − 1}``: M is invertible iff β ≠ 1 (docs/method.md §2)."""
    sig = S.sigma if scaled else sympy.Integer(1)
    return {sig * (1 - S.beta): 1, sig: S.n - 1}


def shifting_determinant(scaled: bool = False) -> sympy.Expr:
    """``det M = σⁿ(1 − β)``."""
    sig = S.sigma if scaled else sympy.Integer(1)
    return sig**S.n * (1 - S.beta)


def shifted_score(scaled: bool = False) -> sympy.Expr:
    """``s̃_k = (Ms)_k = σ(s_k − βμ)``: each score loses β times the block mean (docs/method.md §2)."""
    return shifting_matrix(scaled).apply()


def shifted_mean(scaled: bool = False) -> sympy.Expr:
    """``mean(s̃) = σ(1 − β)μ``."""
    return sympy.factor(shifting_matrix(scaled).mean_factor() * S.mu)


def recovery_coefficient_expr() -> sympy.Expr:
    """``c = β/(1 − β)`` (docs/method.md §2; ``Inv_Pam`` of the reference implementation)."""
    return S.beta / (1 - S.beta)


def recovered_score(c: ExprLike | None = None, scaled: bool = False) -> sympy.Expr:
    """``ŝ_k = s̃_k + c·mean(s̃)`` with the exact M (c defaults to β/(1 − β); then ŝ_k = σ s_k, M3)."""
    c = recovery_coefficient_expr() if c is None else c
    return shifted_score(scaled) + c * shifted_mean(scaled)


# -- the rounded matrix ---------------------------------------------------------------------------------
def rounded_matrix() -> IJMatrix:
    """``M_r = aI − bJ`` (B2; docs/method.md §5.2)."""
    return IJMatrix(S.a, -S.b)


def rounded_inverse() -> IJMatrix:
    """Closed form ``M_r⁻¹ = (1/a)(I + b/(a − bn)·J)`` (docs/method.md §5.4; from M2)."""
    return IJMatrix(1 / S.a, S.b / (S.a * (S.a - S.b * S.n)))


def rounded_shifted_score() -> sympy.Expr:
    """``s̃_k = a·s_k − b·n·μ`` (docs/method.md §5.3)."""
    return rounded_matrix().apply()


def rounded_shifted_mean() -> sympy.Expr:
    """``mean(s̃) = (a − bn)μ``."""
    return rounded_matrix().mean_factor() * S.mu


def recovery_error(c: ExprLike | None = None) -> sympy.Expr:
    """``e_k = ŝ_k − σs_k`` with ``ŝ = s̃ + c·mean(s̃)`` on the rounded matrix (B3 before splitting)."""
    c = S.c if c is None else c
    return rounded_shifted_score() + c * rounded_shifted_mean() - S.sigma * S.s_k


def temperature_error() -> sympy.Expr:
    """The part of (B3) no c can cancel: ``(a − σ)(s_k − μ)``."""
    return (S.a - S.sigma) * (S.s_k - S.mu)


def kappa_abs(c: ExprLike | None = None) -> sympy.Expr:
    """``κ_abs = (a − σ) + c(a − bn) − bn`` (B3; docs/method.md §5.5 at σ = 1)."""
    c = S.c if c is None else c
    return (S.a - S.sigma) + c * (S.a - S.b * S.n) - S.b * S.n


def kappa(c: ExprLike | None = None) -> sympy.Expr:
    """``κ = κ_abs/σ``, per unit of the scaled block mean σμ (B3)."""
    return kappa_abs(c) / S.sigma


def c_star() -> sympy.Expr:
    """The c with κ = 0: ``(bn + σ − a)/(a − bn)`` (source "rounded_m" of recovery_coefficient)."""
    return (S.b * S.n + S.sigma - S.a) / (S.a - S.b * S.n)


def paper_rhs() -> sympy.Expr:
    """``f = σbn/(a(a − bn))`` (B4; the comment of optimal_para.py at σ = 1)."""
    return S.sigma * S.b * S.n / (S.a * (S.a - S.b * S.n))


def kappa_rhs() -> sympy.Expr:
    """``F = f + (σ − a)/a`` (B5; the code of optimal_para.py at σ = 1)."""
    return paper_rhs() + (S.sigma - S.a) / S.a


def paper_solution() -> sympy.Expr:
    """β solving ``β/(1 − β) = f`` on a cell: ``σbn/(σbn + a(a − bn))`` (R1)."""
    return S.sigma * S.b * S.n / (S.sigma * S.b * S.n + S.a * (S.a - S.b * S.n))


def kappa_solution() -> sympy.Expr:
    """β solving ``β/(1 − β) = F`` on a cell: ``1 − (a − bn)/σ`` (R1)."""
    return 1 - (S.a - S.b * S.n) / S.sigma


def kappa_at_paper_solution() -> sympy.Expr:
    """κ with the exact ``c = f`` (paper form): ``(a − σ)(a − bn)/(aσ)`` — the price of neglecting the
    1/a factor of M_r⁻¹ (docs/method.md §6: −7.6e-6 at the published β)."""
    return (S.a - S.sigma) * (S.a - S.b * S.n) / (S.a * S.sigma)


def exact_entries() -> dict[sympy.Expr, sympy.Expr]:
    """The substitution of no rounding: ``a = σ``, ``b = σβ/n``."""
    return {S.a: S.sigma, S.b: S.sigma * S.beta / S.n}


# -- online global recovery -------------------------------------------------------------------------------
@dataclass(frozen=True)
class OnlineRecovery:
    """The PASA loop (docs/method.md §3 L-2) run symbolically over ``blocks`` KV blocks.

    Per block ``i``: ``E_i = Σ_k exp(s̃_{i,k})``, ``W_i = Σ_k exp(s̃_{i,k})·v_{i,k}`` (one column of V),
    the block mean ``mt_i = μ̃_i``, the block-local maximum ``m_i`` and the running maximum ``M_i`` —
    both free symbols. ``ell[j]``, ``out[j]``, ``A[j]`` are the loop's ℓ, O and running mean after
    block j; ``target_ell[j]``/``target_out[j]`` the sums ``Σ_{i≤j} exp(c·μ̃_i)·E_i`` (resp. W) of the
    recovered scores ``s = s̃ + c·μ̃``.
    """

    blocks: int
    E: tuple[sympy.Expr, ...]
    W: tuple[sympy.Expr, ...]
    mt: tuple[sympy.Expr, ...]
    m: tuple[sympy.Expr, ...]
    M: tuple[sympy.Expr, ...]
    A: tuple[sympy.Expr, ...]
    ell: tuple[sympy.Expr, ...]
    out: tuple[sympy.Expr, ...]
    target_ell: tuple[sympy.Expr, ...]
    target_out: tuple[sympy.Expr, ...]

    def output(self) -> sympy.Expr:
        """``O/ℓ`` after the last block."""
        return self.out[-1] / self.ell[-1]

    def target_output(self) -> sympy.Expr:
        """softmax(s)·V for the recovered scores: ``Σ e^{cμ̃_i} W_i / Σ e^{cμ̃_i} E_i``."""
        return self.target_out[-1] / self.target_ell[-1]

    def identities(self) -> list[Identity]:
        ids = []
        for j in range(self.blocks):
            pref = sympy.exp(S.c * self.A[j] + self.M[j])
            ids.append(
                Identity(
                    f"online invariant ℓ, {self.blocks} blocks, after block {j}",
                    self.ell[j] * pref,
                    self.target_ell[j],
                    "M4",
                )
            )
            ids.append(
                Identity(
                    f"online invariant O, {self.blocks} blocks, after block {j}",
                    self.out[j] * pref,
                    self.target_out[j],
                    "M4",
                )
            )
        ids.append(
            Identity(
                f"online output = softmax attention, {self.blocks} blocks",
                self.output(),
                self.target_output(),
                "Theorem (M4)",
            )
        )
        mean = sum(self.mt, sympy.Integer(0)) / self.blocks
        ids.append(
            Identity(
                f"running mean = mean of block means, {self.blocks} blocks",
                self.A[-1],
                mean,
                "running-mean lemma",
            )
        )
        return ids


def online_recovery(blocks: int = 2) -> OnlineRecovery:
    """Run PASA's loop over ``blocks`` KV blocks with free symbols (see :class:`OnlineRecovery`)."""
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
        raise ValueError(f"blocks: expected an int >= 1, got {blocks!r}")
    E = S.block_symbols("E", blocks, positive=True)
    W = S.block_symbols("W", blocks, real=True)
    mt = S.block_symbols("mt", blocks, real=True)
    m = S.block_symbols("m", blocks, real=True)
    M = S.block_symbols("M", blocks, real=True)
    c = S.c
    exp = sympy.exp
    A_list, ell_list, out_list, t_ell, t_out = [], [], [], [], []
    ell = out = A = m_run = None
    for jj in range(blocks):
        ell_j = E[jj] * exp(-m[jj])  # block-local row sum: Σ exp(s̃ − m_j)
        pv_j = W[jj] * exp(-m[jj])  # block-local P·V
        A_prev = mt[0] if jj == 0 else A
        A = mt[jj] * sympy.Rational(1, jj + 1) + A_prev * sympy.Rational(jj, jj + 1)  # (L-2 e)
        d_j = c * (mt[jj] - A)  # δ_j
        d_prev = c * (A_prev - A)  # δ_prev
        m_new = M[jj]  # any value: the max is only for range (L-2 g)
        if jj == 0:
            ell = exp(m[jj] - m_new + d_prev) * ell_j
            out = exp(m[jj] - m_new + d_prev) * pv_j
        else:
            ell = exp(m_run - m_new + d_prev) * ell + exp(m[jj] - m_new + d_j) * ell_j
            out = exp(m_run - m_new + d_prev) * out + exp(m[jj] - m_new + d_j) * pv_j
        m_run = m_new
        A_list.append(A)
        ell_list.append(ell)
        out_list.append(out)
        t_ell.append(sum((exp(c * mt[i]) * E[i] for i in range(jj + 1)), sympy.Integer(0)))
        t_out.append(sum((exp(c * mt[i]) * W[i] for i in range(jj + 1)), sympy.Integer(0)))
    return OnlineRecovery(
        blocks, E, W, mt, m, M, tuple(A_list), tuple(ell_list), tuple(out_list), tuple(t_ell), tuple(t_out)
    )


def online_step_lemma() -> list[Identity]:
    """The general step of (M4), for symbolic block index ``j >= 1`` and an *arbitrary* new reference.

    Hypothesis: before block j, ``ℓ = e^{−cA_p − m}·Σ`` and ``O = e^{−cA_p − m}·U`` (Σ, U the partial
    sums of the recovered scores over blocks < j). Step (L-2 e–h) with any ``A`` (the running mean is
    one choice) and any new maximum ``M``: then ``ℓ' = e^{−cA − M}(Σ + e^{cμ̃_j}E_j)`` and likewise O'.
    """
    c, exp = S.c, sympy.exp
    Sig, U = sympy.Symbol("Sigma", positive=True), sympy.Symbol("U", real=True)
    A_p, A, m, M = sympy.symbols("A_p A m M", real=True)
    mt_j, m_j = sympy.symbols("mt_j m_j", real=True)
    E_j, W_j = sympy.Symbol("E_j", positive=True), sympy.Symbol("W_j", real=True)
    ell = exp(-c * A_p - m) * Sig
    out = exp(-c * A_p - m) * U
    d_j, d_prev = c * (mt_j - A), c * (A_p - A)
    ell_new = exp(m - M + d_prev) * ell + exp(m_j - M + d_j) * E_j * exp(-m_j)
    out_new = exp(m - M + d_prev) * out + exp(m_j - M + d_j) * W_j * exp(-m_j)
    return [
        Identity(
            "online step lemma, ℓ",
            ell_new,
            exp(-c * A - M) * (Sig + exp(c * mt_j) * E_j),
            "M4 at j−1 ⇒ M4 at j, any reference A and any maximum M",
        ),
        Identity(
            "online step lemma, O",
            out_new,
            exp(-c * A - M) * (U + exp(c * mt_j) * W_j),
            "M4 at j−1 ⇒ M4 at j, any reference A and any maximum M",
        ),
    ]


def running_mean_lemma() -> Identity:
    """``A_j = μ̃_j/(j+1) + A_{j−1}·j/(j+1)`` keeps ``A_j = (μ̃_0 + … + μ̃_j)/(j+1)`` (symbolic j): with
    ``A_{j−1} = P/j`` (P the sum of the first j block means) it equals ``(P + μ̃_j)/(j + 1)``."""
    P, mt_j = sympy.symbols("P mt_j", real=True)
    jj = sympy.Symbol("j", positive=True, integer=True)
    A_prev = P / jj
    A = mt_j / (jj + 1) + A_prev * jj / (jj + 1)
    return Identity("running-mean lemma", A, (P + mt_j) / (jj + 1), "L-2 e of docs/method.md §3")


def _element_level_two_blocks() -> Identity:
    """Two blocks of two elements, every score and value a symbol; maxima free: O/ℓ = softmax(s)·V."""
    c, exp = S.c, sympy.exp
    st = sympy.symbols("st_00 st_01 st_10 st_11", real=True)
    v = sympy.symbols("v_00 v_01 v_10 v_11", real=True)
    m = sympy.symbols("m_0 m_1", real=True)
    M = sympy.symbols("M_0 M_1", real=True)
    blocks = [(st[0:2], v[0:2]), (st[2:4], v[2:4])]
    mts = [sum(x) / 2 for x, _ in blocks]
    ell: sympy.Expr | None = None  # each set in the loop's first pass
    out: sympy.Expr | None = None
    A: sympy.Expr | None = None
    m_run: sympy.Expr | None = None
    for jj, ((x, vv), mt) in enumerate(zip(blocks, mts)):
        P = [exp(xi - m[jj]) for xi in x]
        ell_j, pv_j = sum(P), sum(p * vi for p, vi in zip(P, vv))
        A_prev = mts[0] if jj == 0 else A
        A = mt / (jj + 1) + A_prev * sympy.Rational(jj, jj + 1)
        d_j, d_prev = c * (mt - A), c * (A_prev - A)
        if jj == 0:
            ell = exp(m[0] - M[0] + d_prev) * ell_j
            out = exp(m[0] - M[0] + d_prev) * pv_j
        else:
            ell = exp(m_run - M[jj] + d_prev) * ell + exp(m[jj] - M[jj] + d_j) * ell_j
            out = exp(m_run - M[jj] + d_prev) * out + exp(m[jj] - M[jj] + d_j) * pv_j
        m_run = M[jj]
    assert out is not None and ell is not None  # the loop ran over both blocks
    s = [xi + c * mt for (x, _), mt in zip(blocks, mts) for xi in x]  # recovered scores
    target = sum(exp(si) * vi for si, vi in zip(s, v)) / sum(exp(si) for si in s)
    return Identity("online recovery element by element (2 blocks × 2)", out / ell, target, "Theorem (M4)")


def global_reference_identity(blocks: int = 3) -> Identity:
    """With full blocks, ``μ̃_i = σ(1 − β)μ_i`` (M3) and ``c = β/(1 − β)``: the final reference
    ``c·A`` equals ``σβ`` times the global mean of the raw scores (docs/method.md §4)."""
    mus = S.block_symbols("mu", blocks, real=True)
    mts = [S.sigma * (1 - S.beta) * x for x in mus]
    A = sum(mts, sympy.Integer(0)) / blocks
    return Identity(
        f"global reference c·A = σβ·mean, {blocks} blocks",
        recovery_coefficient_expr() * A,
        S.sigma * S.beta * sum(mus, sympy.Integer(0)) / blocks,
        "docs/method.md §4",
    )


# -- the catalogue -------------------------------------------------------------------------------------------
def identities(online_blocks: tuple[int, ...] = (2, 3)) -> list[Identity]:
    """Every claim of this module as an :class:`Identity` (all verified by the test suite)."""
    I_ = IJMatrix.identity()
    alpha, gamma = sympy.symbols("alpha gamma", positive=True)
    G = IJMatrix(alpha, gamma)
    out = [
        Identity("Sherman–Morrison (M2)", G @ G.inverse(), I_, "(αI + γJ)(αI + γJ)⁻¹ = I"),
        Identity(
            "M1 is commutative", G @ rounded_matrix(), rounded_matrix() @ G, "the algebra is commutative"
        ),
        Identity(
            "det = product of eigenvalues",
            G.det(),
            sympy.Mul(*[ev**mult for ev, mult in G.eigenvalues().items()]),
            "M1",
        ),
    ]
    for scaled in (False, True):
        tag = " (σ folded in)" if scaled else ""
        Mx = shifting_matrix(scaled)
        sig = S.sigma if scaled else 1
        out += [
            Identity(f"M·M⁻¹ = I{tag}", Mx @ shifting_inverse(scaled), I_, "docs/method.md §2, inverse"),
            Identity(
                f"M⁻¹ closed form = Sherman–Morrison{tag}", shifting_inverse(scaled), Mx.inverse(), "M2"
            ),
            Identity(f"eigenvalue on 1{tag}", Mx.mean_factor(), sig * (1 - S.beta), "docs/method.md §2"),
            Identity(f"det M{tag}", Mx.det(), shifting_determinant(scaled), "product of eigenvalues"),
            Identity(
                f"shifted score{tag}",
                shifted_score(scaled),
                sig * (S.s_k - S.beta * S.mu),
                "docs/method.md §2",
            ),
            Identity(
                f"shifted mean{tag}", shifted_mean(scaled), sig * (1 - S.beta) * S.mu, "docs/method.md §2"
            ),
            Identity(
                f"recovery identity (M3){tag}",
                recovered_score(scaled=scaled),
                sig * S.s_k,
                "s = s̃ + β/(1−β)·mean(s̃)",
            ),
        ]
    out += [
        Identity("M_r·M_r⁻¹ = I", rounded_matrix() @ rounded_inverse(), I_, "docs/method.md §5.4"),
        Identity("M_r⁻¹ closed form = Sherman–Morrison", rounded_inverse(), rounded_matrix().inverse(), "M2"),
        Identity(
            "mean of the rounded shifted scores",
            rounded_matrix().mean_factor(),
            S.a - S.b * S.n,
            "docs/method.md §5.3",
        ),
        Identity(
            "exact inverse recovers s",
            rounded_shifted_score() / S.a + S.b * S.n / (S.a * (S.a - S.b * S.n)) * rounded_shifted_mean(),
            S.s_k,
            "s = (1/a)s̃ + bn/(a(a−bn))·mean(s̃), docs/method.md §5.4",
        ),
        Identity(
            "recovery error split (B3)",
            recovery_error(),
            temperature_error() + S.mu * kappa_abs(),
            "e_k = (a−σ)(s_k−μ) + μκ_abs",
        ),
        Identity("kappa form of F (B5)", kappa_rhs(), c_star(), "F = (bn + σ − a)/(a − bn)"),
        Identity("κ = 0 at c = F", kappa_abs(kappa_rhs()), 0, "B5 is exactly κ = 0"),
        Identity(
            "κ at c = f (paper form)",
            kappa(paper_rhs()),
            kappa_at_paper_solution(),
            "κ = (a − σ)(a − bn)/(aσ)",
        ),
        Identity("paper solution solves B4", paper_solution() / (1 - paper_solution()), paper_rhs(), "R1"),
        Identity("kappa solution solves B5", kappa_solution() / (1 - kappa_solution()), kappa_rhs(), "R1"),
        Identity(
            "paper form at σ = 1",
            paper_rhs().subs(S.sigma, 1),
            S.b * S.n / (S.a * (S.a - S.b * S.n)),
            "the optimal_para.py comment",
        ),
        Identity(
            "kappa form at σ = 1",
            kappa_rhs().subs(S.sigma, 1),
            S.b * S.n / (S.a * (S.a - S.b * S.n)) + (1 - S.a) / S.a,
            "the optimal_para.py code",
        ),
        Identity(
            "no rounding: f = β/(1−β)",
            paper_rhs().subs(exact_entries()),
            recovery_coefficient_expr(),
            "every β is a fixed point without rounding",
        ),
        Identity(
            "no rounding: F = β/(1−β)",
            kappa_rhs().subs(exact_entries()),
            recovery_coefficient_expr(),
            "every β is a fixed point without rounding",
        ),
        Identity(
            "no rounding: κ = 0 at c = β/(1−β)",
            kappa(recovery_coefficient_expr()).subs(exact_entries()),
            0,
            "the exact scheme has no per-block error",
        ),
        Identity(
            "no rounding: M_r = σM",
            rounded_matrix().components()[1].subs(exact_entries()),
            shifting_matrix(True).components()[1],
            "a = σ, b = σβ/n",
        ),
    ]
    out += online_step_lemma()
    out.append(running_mean_lemma())
    out.append(_element_level_two_blocks())
    out.append(global_reference_identity(3))
    for k in online_blocks:
        out += online_recovery(k).identities()
    return out


def verify_all(online_blocks: tuple[int, ...] = (2, 3)) -> dict[str, bool]:
    """``{name: verified}`` for every identity of :func:`identities`."""
    return {idn.name: idn.verify() for idn in identities(online_blocks)}


def explicit_matrix_checks(sizes: tuple[int, ...] = (2, 3, 4, 5)) -> Iterator[tuple[int, str, bool]]:
    """Cross-checks of the αI + γJ algebra on explicit sympy matrices of the given sizes: eigenvalues
    (sympy's ``eigenvals``), determinant, inverse (``Matrix.inv``) of M and M_r, and the recovery
    identity on an explicit vector. Yields ``(size, what, ok)``."""
    for size in sizes:
        Mx = shifting_matrix(True).as_matrix(size)
        ev = {sympy.factor(k): v for k, v in Mx.eigenvals().items()}
        want = {sympy.factor(S.sigma * (1 - S.beta)): 1, S.sigma: size - 1}
        yield size, "eigenvalues of σM", ev == want
        yield size, "det σM", _is_zero(Mx.det() - shifting_determinant(True).subs(S.n, size))
        yield (
            size,
            "inverse of σM",
            all(_is_zero(x) for x in (Mx.inv() - shifting_inverse(True).as_matrix(size))),
        )
        Mr = rounded_matrix().as_matrix(size)
        yield size, "inverse of M_r", all(_is_zero(x) for x in (Mr.inv() - rounded_inverse().as_matrix(size)))
        s = sympy.Matrix(sympy.symbols(f"s_0:{size}", real=True))
        st = Mx * s
        mean_st = sum(st) / size
        rec = st + recovery_coefficient_expr() * mean_st * sympy.ones(size, 1)
        yield size, "recovery identity on a vector", all(_is_zero(x) for x in (rec - S.sigma * s))
