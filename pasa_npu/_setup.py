"""Setup constants of the shift: β, the rounded entries of M, and the recovery coefficient c.

Nothing here re-derives theory: β, the entries of the rounded shifting matrix and the recovery
coefficient come from :mod:`pasa_theory` (``setup="exact"``). The only other route is the public
reference script's own fp32 torch arithmetic (``setup="script_fp32"``), kept so that its results can
be reproduced; it is a literal transcription of the script's operation sequence.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from .precision import Precision, theory_format_name


@dataclass(frozen=True)
class ShiftConstants:
    """β, the entries of the rounded (possibly τ-scaled) shifting matrix, and c, as Python floats.

    ``diag`` and ``off`` are exactly representable in the matrix-unit format, ``c`` in the
    coefficient format.
    """

    beta: float
    diag: float
    off: float
    c: float


@functools.lru_cache(maxsize=512)
def default_beta(fmt: str, n: int, sigma: float) -> float:
    """The theory's optimal β for the format, block size and folded scale σ (1.0 = not folded)."""
    import pasa_theory

    return float(pasa_theory.optimal_beta(fmt, n, scale=None if sigma == 1.0 else sigma))


@functools.lru_cache(maxsize=512)
def _exact_constants(fmt: str, n: int, beta: float, sigma: float, coef: str, coef_fmt: str) -> ShiftConstants:
    import pasa_theory

    scale = None if sigma == 1.0 else sigma
    diag, off = pasa_theory.shifting_entries(fmt, n, beta, scale=scale)
    c = pasa_theory.recovery_coefficient(fmt, n, beta, scale=scale, vector_format=coef_fmt, source=coef)
    return ShiftConstants(beta, float(diag), float(off), float(c))


@functools.lru_cache(maxsize=512)
def _script_constants(
    n: int, beta: float, sigma: float, matmul_in: torch.dtype, coef_dtype: torch.dtype
) -> ShiftConstants:
    # Transcription of the reference script: afa is a float32 tensor; M = eye(n) - ones*afa/n in
    # fp32, multiplied by the Python-float scale in fp32, then cast to the matmul dtype;
    # Inv_Pam = afa / (1.0 - afa) in fp32, then cast to the vector dtype.
    afa = torch.tensor(beta, dtype=torch.float32)
    m = torch.eye(n) - torch.ones((n, n)) * afa / n
    if sigma != 1.0:
        m = m * sigma
    m = m.to(matmul_in)
    c = (afa / (1.0 - afa)).to(coef_dtype)
    return ShiftConstants(float(afa), float(m[0, 0]), float(m[0, 1]) if n > 1 else 0.0, float(c))


def shift_constants(precision: Precision, n: int, beta: float | None, sigma: float) -> ShiftConstants:
    """β, M entries and c for one call: block size ``n``, folded scale ``sigma`` (1.0 if not folded)."""
    fmt = theory_format_name(precision.matmul_in)
    if beta is None:
        beta = precision.beta if precision.beta is not None else default_beta(precision.beta_format or fmt, n, sigma)
    if precision.setup == "script_fp32":
        if precision.coef != "beta":
            raise ValueError("Precision.setup='script_fp32' reproduces the reference script and supports coef='beta' only")
        return _script_constants(n, beta, sigma, precision.matmul_in, precision.coef_dtype)
    return _exact_constants(fmt, n, beta, sigma, precision.coef, theory_format_name(precision.coef_dtype))
