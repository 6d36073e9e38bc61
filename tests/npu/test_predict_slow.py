"""The rounding-error model against measurement on the full reference grid with the reference heads
(``-m slow``; see test_predict.py for the claims and the default, reduced run).

Shape: batch 1, 28 query heads in 4 GQA groups, d = 128, S2 ∈ {1407, 4096} keys, seed 2024724, fp16
inputs, every method the CPU can run. Each head gets ``PASA_PREDICT_SEQ_Q`` query rows (default 64):
without a mask the rows are independent and identically distributed, so they sample the S1 = S2
reference shape's rows, at a fraction of its cost (the kernels alone need 36-220 s per method and
cell at S1 = S2 on two cores). Set ``PASA_PREDICT_OUT`` to a directory to keep the table
(``predict_<S2>.csv``/``.json``, the ``pasa-verify --predict`` schema).
"""

from __future__ import annotations

import os

import pytest

from pasa_npu import data
from pasa_npu.harness import write_records
from pasa_npu.predict_report import predict_grid, summary

from .test_predict import _check

pytestmark = pytest.mark.slow

METHODS = (
    "pasa",
    "pasa:script",
    "pasa:fp16_keymean",
    "pasa:fp16_strict",
    "pasa:hybrid",
    "pasa:bf16",
    "fa_qk",
    "fa_q",
    "fa_naive",
    "fa_hybrid",
    "smooth_k",
    "sdpa",
)


@pytest.mark.parametrize("seq_kv", [1407, 4096])
def test_reference_heads_full_grid(seq_kv, tmp_path):
    seq_q = int(os.environ.get("PASA_PREDICT_SEQ_Q", "64"))
    shape = dict(data.REFERENCE_SHAPE, seq_q=seq_q, seq_kv=seq_kv)
    records = predict_grid(METHODS, shape=shape, progress=False)
    out = os.environ.get("PASA_PREDICT_OUT") or tmp_path
    s = summary(records)
    safe = {k: (str(v) if isinstance(v, float) and v != v else v) for k, v in s.items()}
    write_records(records, out, f"predict_{seq_kv}", dict(shape=shape, methods=METHODS, summary=safe))
    s = _check(records, f"reference heads 28/4, S2 = {seq_kv}, {seq_q} query rows per head")
    assert s["cases"] == 32 * len(METHODS)
    # only fa_qk (QKᵀ rounded before the scale) may overflow on this grid: everything else is compared
    assert s["compared"] >= 32 * (len(METHODS) - 1), (s["compared"], s["overflow_cases"])
    print(
        f"S2 = {seq_kv}: median bound/max {s['median_bound_ratio']:.3g}, median RMSE ratio {s['median_rmse_ratio']:.3g}"
    )
