"""The sympy symbols of the PASA derivations (imported on first use: it loads sympy).

Every derivation in :mod:`pasa_theory.scheme` is written in these symbols, so results can be
combined, substituted and lambdified consistently:

==========  =====================================================================================
symbol      meaning
==========  =====================================================================================
``beta``    β, the shift fraction, 0 < β < 1 (docs/method.md §2)
``n``       KV block length (positive integer)
``sigma``   σ, the softmax scale folded into M (σ = 1: not folded; docs/method.md §7)
``a, b``    coefficients of the rounded matrix M_r = a·I − b·J (docs/method.md §5; S2 in shifting.py)
``c``       recovery coefficient of ŝ = s̃ + c·mean(s̃)
``mu``      μ, the block mean of the raw scores
``s_k``     one raw score of the block
==========  =====================================================================================

Online recovery (:func:`pasa_theory.scheme.online_recovery`) uses indexed families made by
:func:`block_symbols`.
"""

from __future__ import annotations

import sympy

__all__ = ["beta", "n", "sigma", "a", "b", "c", "mu", "s_k", "j", "block_symbols", "ALL"]

beta = sympy.Symbol("beta", positive=True)
n = sympy.Symbol("n", positive=True, integer=True)
sigma = sympy.Symbol("sigma", positive=True)
a = sympy.Symbol("a", positive=True)
b = sympy.Symbol("b", positive=True)
c = sympy.Symbol("c", real=True)
mu = sympy.Symbol("mu", real=True)
s_k = sympy.Symbol("s_k", real=True)
#: Block index of the online recovery lemma (a non-negative integer).
j = sympy.Symbol("j", integer=True, nonnegative=True)

ALL = {"beta": beta, "n": n, "sigma": sigma, "a": a, "b": b, "c": c, "mu": mu, "s_k": s_k, "j": j}


def block_symbols(name: str, count: int, **assumptions: bool) -> tuple[sympy.Symbol, ...]:
    """``count`` symbols ``name_0 … name_{count-1}`` with the given assumptions (one per KV block)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count: expected an int >= 1, got {count!r}")
    return tuple(sympy.Symbol(f"{name}_{i}", **assumptions) for i in range(count))
