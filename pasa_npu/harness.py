"""The verification harness behind ``pasa-verify``: run methods on generated cases against the golden.

:func:`run_case` evaluates a list of methods on one (q, k, v); :func:`run_grid` sweeps the reference
benchmark's grid (both distributions × mean × amplitude). Records are plain dicts so they go to
CSV/JSON and into pandas-free notebooks unchanged.
"""

from __future__ import annotations

import csv
import json
import math
import platform
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import data as _data
from . import metrics
from .device import npu_available, resolve_device
from .golden import golden_attention
from .kernel import shift_parameters
from .methods import get_method, run_method
from .precision import get_precision

__all__ = [
    "run_case",
    "run_grid",
    "grid_cells",
    "write_records",
    "environment_info",
    "GRID_MEANS",
    "GRID_AMPLITUDES",
    "FIELDS",
]

#: The reference benchmark's grid (PASA README).
GRID_MEANS = (0.0, 10.0, 20.0, 30.0)
GRID_AMPLITUDES = (0.5, 5.0, 10.0, 20.0)

FIELDS = (
    "dist",
    "mean",
    "amplitude",
    "method",
    "beta",
    "rmse",
    "rel_rmse",
    "rel_rmse_out",
    "max_abs_err",
    "nonfinite",
    "first_nonfinite_stage",
    "seconds",
    "seq_q",
    "seq_kv",
    "head_dim",
    "heads",
    "kv_heads",
    "block_kv",
    "device",
)


def _beta_of(method: str, precision, block_kv: int, head_dim: int, scale, beta) -> float | None:
    m = get_method(method)
    if not m.name.startswith("pasa"):
        return None
    prec = m.precision(get_precision(precision))
    if prec.score_ref != "none":  # no shifting matrix (docs/precision.md §6)
        return None
    return shift_parameters(prec, head_dim=head_dim, block_kv=block_kv, scale=scale, beta=beta).beta


def run_case(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    methods: Sequence[str],
    *,
    precision="npu_fp16",
    beta: float | None = None,
    block_q: int = 128,
    block_kv: int = 128,
    scale: float | None = None,
    is_causal: bool = False,
    golden: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
    extra: dict | None = None,
    out_dtype: torch.dtype | None = None,
) -> list[dict]:
    """One record per method: errors against the float64 golden, non-finite census, wall time.

    ``q, k, v`` are the already-rounded inputs (on the CPU); they are moved to ``device`` for the
    methods, and the golden is computed on the CPU in float64 unless given.
    """
    dev = resolve_device(device)
    if golden is None:
        golden = golden_attention(q, k, v, scale=scale, is_causal=is_causal)
    qd, kd, vd = (t.to(dev) for t in (q, k, v))
    rows = []
    for name in methods:
        with metrics.census() as cen:
            t0 = time.perf_counter()
            out = run_method(
                name,
                qd,
                kd,
                vd,
                precision=precision,
                beta=beta,
                block_q=block_q,
                block_kv=block_kv,
                scale=scale,
                is_causal=is_causal,
                out_dtype=out_dtype,
            )
            if dev.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
        out = out.cpu()
        nonfinite = metrics.nonfinite_count(out)
        rec = dict(extra or {})
        rec.update(
            method=name,
            beta=_beta_of(name, precision, block_kv, q.shape[-1], scale, beta),
            rmse=metrics.rmse(out, golden),
            rel_rmse=metrics.relative_rmse(out, golden, v),
            rel_rmse_out=metrics.relative_rmse_out(out, golden),
            max_abs_err=metrics.max_abs_error(out, golden),
            nonfinite=nonfinite,
            first_nonfinite_stage=cen.first_stage if nonfinite or cen.total else None,
            seconds=seconds,
            seq_q=q.shape[2],
            seq_kv=k.shape[2],
            head_dim=q.shape[3],
            heads=q.shape[1],
            kv_heads=k.shape[1],
            block_kv=block_kv,
            device=str(dev),
        )
        rows.append(rec)
    return rows


def grid_cells(
    *,
    dists: Iterable[str] = _data.DISTRIBUTIONS,
    means: Iterable[float] = GRID_MEANS,
    amplitudes: Iterable[float] = GRID_AMPLITUDES,
    shape: dict | None = None,
    seed: int = _data.REFERENCE_SEED,
    input_dtype: torch.dtype = torch.float16,
    progress: bool = True,
    desc: str = "grid",
) -> Iterator[tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The cells of the reference grid in order, as ``(cell, q, k, v)`` with ``cell`` =
    ``dict(dist, mean, amplitude)`` and seeded inputs from :func:`pasa_npu.data.make_qkv`; a tqdm
    progress bar if ``progress``."""
    shape = dict(_data.REFERENCE_SHAPE if shape is None else shape)
    cells = [(d, float(m), float(a)) for d in dists for m in means for a in amplitudes]
    bar = None
    if progress:
        bar = tqdm(total=len(cells), desc=desc, unit="cell")
    try:
        for d, m, a in cells:
            q, k, v = _data.make_qkv(d, mean=m, amplitude=a, seed=seed, dtype=input_dtype, **shape)
            yield dict(dist=d, mean=m, amplitude=a), q, k, v
            if bar is not None:
                bar.set_postfix(dist=d, mean=m, amp=a)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()


def run_grid(
    methods: Sequence[str],
    *,
    dists: Iterable[str] = _data.DISTRIBUTIONS,
    means: Iterable[float] = GRID_MEANS,
    amplitudes: Iterable[float] = GRID_AMPLITUDES,
    shape: dict | None = None,
    seed: int = _data.REFERENCE_SEED,
    input_dtype: torch.dtype = torch.float16,
    progress: bool = True,
    **case_kw,
) -> list[dict]:
    """The reference grid: every (dist, mean, amplitude) cell, every method. Deterministic (seeded)."""
    records: list[dict] = []
    for cell, q, k, v in grid_cells(
        dists=dists,
        means=means,
        amplitudes=amplitudes,
        shape=shape,
        seed=seed,
        input_dtype=input_dtype,
        progress=progress,
    ):
        records += run_case(q, k, v, methods, extra=cell, **case_kw)
    return records


def environment_info() -> dict:
    """Versions and flags that decide the numerics (recorded beside every table)."""
    info = dict(
        torch=torch.__version__,
        python=platform.python_version(),
        machine=platform.machine(),
        threads=torch.get_num_threads(),
        cuda=torch.cuda.is_available(),
        npu=npu_available(),
    )
    if torch.cuda.is_available():
        info["allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    return info


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def write_records(
    records: list[dict], out_dir: str | Path, stem: str, meta: dict | None = None
) -> tuple[Path, Path]:
    """Write ``<stem>.csv`` and ``<stem>.json`` (records plus metadata) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keys = list(
        dict.fromkeys([f for f in FIELDS if any(f in r for r in records)] + [k for r in records for k in r])
    )
    csv_path = out / f"{stem}.csv"
    with csv_path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in records:
            w.writerow({k: r.get(k) for k in keys})
    json_path = out / f"{stem}.json"
    payload = dict(
        meta=meta or {},
        environment=environment_info(),
        records=[{k: _json_safe(v) for k, v in r.items()} for r in records],
    )
    json_path.write_text(json.dumps(payload, indent=1) + "\n")
    return csv_path, json_path
