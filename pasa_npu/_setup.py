"""Setup constants of the shift: β, the rounded entries of M, and the recovery coefficient c.

Nothing here re-derives theory: β, the entries of the rounded shifting matrix and the recovery
coefficient come from :mod:`pasa_theory` (``setup="exact"``, :func:`pasa_theory.policies.shift_constants`,
which the error model uses too). The only other route is the public reference script's own fp32 torch
arithmetic (``setup="script_fp32"``), kept so that its results can be reproduced; it is a literal
transcription of the script's operation sequence (``pasa_theory.policies`` models the same arithmetic
exactly, and the tests check the two agree).
"""

from __future__ import annotations

import functools

import torch

from pasa_theory import policies
from pasa_theory.policies import ShiftConstants

from .precision import DTYPES, Precision

__all__ = ["ShiftConstants", "shift_constants"]


@functools.lru_cache(maxsize=512)
def _script_constants(
    n: int, beta: float, sigma: float, matmul_in: torch.dtype, coef_dtype: torch.dtype
) -> ShiftConstants:
    # Transcription of the reference script: afa is a float32 tensor; M = eye(n) - ones*afa/n in
    # fp32, multiplied by the Python-float scale in fp32, then cast to the matmul dtype;
    # Inv_Pam = afa / (1.0 - afa) in fp32, then cast to the vector dtype.
    # Host-side setup: explicitly on the CPU (also under torch.set_default_device), in float32 as the
    # script; only the resulting Python numbers reach the kernel's device.
    cpu = torch.device("cpu")
    afa = torch.tensor(beta, dtype=torch.float32, device=cpu)
    m = (
        torch.eye(n, dtype=torch.float32, device=cpu)
        - torch.ones((n, n), dtype=torch.float32, device=cpu) * afa / n
    )
    if sigma != 1.0:
        m = m * sigma
    m = m.to(matmul_in)
    c = (afa / (1.0 - afa)).to(coef_dtype)
    return ShiftConstants(float(afa), float(m[0, 0]), float(m[0, 1]) if n > 1 else 0.0, float(c), sigma)


@functools.lru_cache(maxsize=512)
def _constants(policy: policies.Policy, n: int, beta: float | None, sigma: float) -> ShiftConstants:
    if policy.setup == "script_fp32":
        if policy.coef != "beta":
            raise ValueError(
                "Precision.setup='script_fp32' reproduces the reference script and supports coef='beta' only"
            )
        beta = policies.resolve_beta(policy, n, beta, sigma)
        return _script_constants(
            n, beta, sigma, DTYPES[policy.matmul_in.name], DTYPES[policy.coef_dtype.name]
        )
    return policies.shift_constants(policy, n, beta, sigma)


def shift_constants(precision: Precision, n: int, beta: float | None, sigma: float) -> ShiftConstants:
    """β, M entries and c for one call: block size ``n``, folded scale ``sigma`` (1.0 if not folded)."""
    return _constants(policies.resolve("pasa", precision), n, beta, sigma)
