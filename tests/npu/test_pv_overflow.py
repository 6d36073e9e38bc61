"""The block product P·V at the edge of fp16's range (docs/bounds.md §7, Lemma 7.1).

With q = 0 every score is 0, every weight P = e^0 = 1 exactly, and the block product P·V_j of n keys
with v = x is n·x, accumulated in fp32 and rounded to the fp16 matrix output: finite up to
n·x = 65504 (the largest fp16 number), ±inf from 65520 on. The kernel's output is then inf or NaN,
and a bound must say +∞ there (``overflow``); one fp16 step below, the run is exact and the bound
must be finite and hold. Before Lemma 7.1 both ``certify`` (Theorem 1) and ``a_priori`` (Theorem 2)
returned finite bounds (1.55 and 3.97) for runs whose output was inf.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from pasa_npu.golden import golden_attention
from pasa_npu.methods import run_method
from pasa_theory import rigorous

#: (method, keys per product: the block size, or S2 for the untiled fa_naive)
CASES = [
    ("pasa", 128),
    ("pasa:fp16_keymean", 128),
    ("pasa:fp16_strict", 128),
    ("pasa:hybrid", 128),
    ("fa_qk", 128),
    ("fa_q", 128),
    ("fa_naive", 256),
    ("smooth_k", 128),
]


def _inputs(x: float):
    q = torch.zeros(1, 2, 4, 64, dtype=torch.float16)
    k = torch.zeros(1, 2, 256, 64, dtype=torch.float16)
    v = torch.full((1, 2, 256, 64), x, dtype=torch.float16)
    return q, k, v


@pytest.mark.parametrize("method,n", CASES)
def test_pv_overflow_edge(method, n):
    below = 65504.0 / n  # n·x = 65504: the product is the largest finite fp16 number
    above = float(np.nextafter(np.float16(below), np.float16(np.inf)))
    assert float(np.float16(below)) == below
    for x, finite in ((below, True), (above, False)):
        q, k, v = _inputs(x)
        out = run_method(method, q, k, v).double()
        assert bool(torch.isfinite(out).all()) == finite, (method, x, "the construction's premise")
        err = float((out - golden_attention(q, k, v)).abs().max()) if finite else math.inf
        cert = rigorous.certify(method, q, k, v)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                apb = rigorous.a_priori(method, rigorous.stats_of(q, k, v))
            except ValueError:  # an arrangement without Theorem 2
                apb = None
        if finite:
            assert err <= cert.max_abs_bound < math.inf, (method, x, err, cert.max_abs_bound, cert.dominant)
            assert not cert.overflow
            if apb is not None:
                assert err <= apb.bound < math.inf and not apb.overflow_possible, (method, x, apb)
        else:
            assert cert.max_abs_bound == math.inf and cert.overflow, (
                method,
                x,
                cert.max_abs_bound,
                cert.dominant,
            )
            if apb is not None:
                assert apb.bound == math.inf and apb.overflow_possible, (method, x, apb)
