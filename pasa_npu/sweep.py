"""``pasa-sweep`` (also ``python -m pasa_npu.sweep``): resumable parameter sweeps, results in Parquet.

A sweep is described by a TOML file (full guide: ``docs/sweeps.md``)::

    [sweep]
    name = "reference_grid"

    [defaults]            # parameters fixed for every point (optional)
    heads = 7
    kv_heads = 1
    seed = 2024724        # an explicit seed is used as-is

    [grid]                # Cartesian product of the lists
    dist = ["uniform", "hybrid"]
    mean = [0, 10, 20, 30]
    amplitude = [0.5, 5, 10, 20]
    method = ["pasa", "pasa:script", "fa_qk"]

    [[case]]              # explicit extra points (optional, any number)
    dist = "uniform"
    mean = 30
    seq_kv = 4096

A *point* is one complete parameter set (:data:`PARAMETERS`, unknown names are an error) and gives
one result row: the metrics of ``pasa-verify`` for one method (:func:`pasa_npu.harness.run_case`:
errors against the float64 golden, non-finite count and the census's first non-finite stage), the
four error products of :func:`pasa_theory.predict` (rigorous, probabilistic and a-priori bounds, RMSE
estimate, hull cap) if ``predict = true`` (:func:`pasa_npu.predict_report.predict_case`), the wall time, the peak resident memory, the package
version and the *point hash* (SHA-256 of the canonical JSON of the resolved parameters).

A point is a pure function of its parameters: the inputs are drawn by :func:`pasa_npu.data.make_qkv`
with the point's ``seed``; when a point gives no ``seed``, it is derived from the point's data
parameters (distribution, mean, amplitude, shape, input dtype, ``replicate``), so every method of a
cell sees the same inputs and any subset of a sweep reproduces bit for bit. Torch runs one intra-op
thread per point, whatever the executor.

Results go to a Parquet dataset under ``--out DIR``: one file ``part-<hash>.parquet`` per finished
point, written to a hidden temporary file and renamed into place (atomic on POSIX). Re-running skips
every point whose file exists, so a sweep killed at any moment resumes without loss or duplicates.
:func:`load` reads the dataset into a pandas DataFrame.

Executors: ``serial`` (this process), ``processes`` (joblib's loky pool, the default; ``--workers N``,
default all cores) and ``dask`` (``dask.distributed``: a ``LocalCluster`` of ``--workers`` processes,
or an existing scheduler given by ``--scheduler tcp://host:port``). The results do not depend on the
executor. A point that raises is recorded with ``status = "error"`` and its error text; the sweep
goes on. ``--dry-run`` prints the number of points, how many are already done, and an estimate of
their cost (a model: score-tile elements times a per-element time measured on a 2-core x86 CPU).

pandas, pyarrow, joblib and dask are optional dependencies (``pip install pasa[sweep]``); this module
imports them only when they are needed.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import math
import os
import resource
import sys
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import tomllib
import torch
from tqdm.auto import tqdm

from pasa_theory.bounds import TERMS

from . import data as _data
from .harness import run_case
from .methods import get_method
from .precision import DTYPES, PRESETS
from .predict_report import predict_case

__all__ = [
    "PARAMETERS",
    "Spec",
    "load_spec",
    "parse_spec",
    "expand",
    "resolve_point",
    "point_hash",
    "derive_seed",
    "run_point",
    "run",
    "load",
    "load_rows",
    "columns",
    "done_hashes",
    "estimate_seconds",
    "select",
    "main",
]


# ---------------------------------------------------------------------------------------------
# parameters


@dataclasses.dataclass(frozen=True)
class _Param:
    kind: type  # int, float, str or bool
    default: Any
    nullable: bool = False
    help: str = ""


#: Every parameter a point may set, its type and default (the defaults are the reference script's case).
PARAMETERS: dict[str, _Param] = {
    "dist": _Param(str, "uniform", help="input distribution: uniform | hybrid (pasa_npu.data.make_qkv)"),
    "mean": _Param(float, 30.0, help="mean of Q, K and V"),
    "amplitude": _Param(
        float, None, True, help="half-width (uniform) or outlier std (hybrid); default 0.5 / 10"
    ),
    "batch": _Param(int, 1),
    "heads": _Param(int, 28, help="query heads"),
    "kv_heads": _Param(int, 4, help="key/value heads"),
    "seq_q": _Param(int, 1407, help="query length S1"),
    "seq_kv": _Param(int, 1407, help="key/value length S2"),
    "head_dim": _Param(int, 128),
    "input_dtype": _Param(str, "fp16", help="dtype the inputs are rounded to: fp16 | bf16 | fp32"),
    "seed": _Param(int, None, True, help="data seed; derived from the data parameters when absent"),
    "replicate": _Param(int, 0, help="replicate index, enters only the derived seed"),
    "method": _Param(str, "pasa", help="harness method name (pasa-verify --help lists them)"),
    "precision": _Param(str, "npu_fp16", help="the run's precision preset"),
    "beta": _Param(float, None, True, help="PASA's beta; default the preset's or the theory's optimum"),
    "block_q": _Param(int, 128),
    "block_kv": _Param(int, 128, help="KV block length n"),
    "scale": _Param(float, None, True, help="softmax scale; default 1/sqrt(head_dim)"),
    "causal": _Param(bool, False, help="bottom-right causal mask"),
    "predict": _Param(bool, False, help="also compute the four error products of pasa_theory.predict"),
    "device": _Param(str, "cpu", help="device the method runs on (cpu, cuda, npu)"),
}

#: Parameters that determine the inputs (and so the derived seed).
_DATA_PARAMS = (
    "dist",
    "mean",
    "amplitude",
    "batch",
    "heads",
    "kv_heads",
    "seq_q",
    "seq_kv",
    "head_dim",
    "input_dtype",
    "replicate",
)
_INPUT_DTYPES = ("fp16", "bf16", "fp32")


def _coerce(name: str, value: Any, where: str) -> Any:
    p = PARAMETERS[name]
    if value is None:
        if p.nullable:
            return None
        raise ValueError(f"{where}: parameter {name!r} must not be empty")
    if p.kind is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{where}: parameter {name!r} must be true or false, got {value!r}")
        return value
    if p.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{where}: parameter {name!r} must be an integer, got {value!r}")
        return int(value)
    if p.kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{where}: parameter {name!r} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{where}: parameter {name!r} must be finite, got {value}")
        return value
    if not isinstance(value, str):
        raise TypeError(f"{where}: parameter {name!r} must be a string, got {value!r}")
    return value


def _check_names(keys: Iterable[str], where: str) -> None:
    for k in keys:
        if k not in PARAMETERS:
            raise ValueError(f"{where}: unknown parameter {k!r}; expected one of {', '.join(PARAMETERS)}")


def derive_seed(params: Mapping[str, Any]) -> int:
    """The data seed of a point without an explicit ``seed``: the first 31 bits of the SHA-256 of the
    canonical JSON of its data parameters (:data:`_DATA_PARAMS`). Methods, β, block sizes and the
    like do not enter, so every method of a cell sees the same inputs."""
    blob = json.dumps({k: params[k] for k in _DATA_PARAMS}, sort_keys=True, separators=(",", ":"))
    return int(hashlib.sha256(blob.encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def resolve_point(raw: Mapping[str, Any], where: str = "point") -> dict:
    """A complete, validated point: defaults filled in, types checked, ``amplitude`` and ``seed`` resolved."""

    _check_names(raw, where)
    p = {
        name: _coerce(name, raw[name], where) if name in raw else spec.default
        for name, spec in PARAMETERS.items()
    }
    if p["dist"] not in _data.DISTRIBUTIONS:
        raise ValueError(f"{where}: parameter 'dist' must be one of {_data.DISTRIBUTIONS}, got {p['dist']!r}")
    if p["input_dtype"] not in _INPUT_DTYPES:
        raise ValueError(
            f"{where}: parameter 'input_dtype' must be one of {_INPUT_DTYPES}, got {p['input_dtype']!r}"
        )
    if p["precision"] not in PRESETS:
        raise ValueError(
            f"{where}: parameter 'precision' must be one of {sorted(PRESETS)}, got {p['precision']!r}"
        )
    try:
        get_method(p["method"])
    except ValueError as e:
        raise ValueError(f"{where}: parameter 'method': {e}") from None
    for name in ("batch", "heads", "kv_heads", "seq_q", "seq_kv", "head_dim", "block_q", "block_kv"):
        if p[name] < 1:
            raise ValueError(f"{where}: parameter {name!r} must be >= 1, got {p[name]}")
    if p["heads"] % p["kv_heads"]:
        raise ValueError(
            f"{where}: 'heads' ({p['heads']}) must be a multiple of 'kv_heads' ({p['kv_heads']})"
        )
    if p["amplitude"] is None:
        p["amplitude"] = 0.5 if p["dist"] == "uniform" else 10.0
    if p["amplitude"] < 0:
        raise ValueError(f"{where}: parameter 'amplitude' must be >= 0, got {p['amplitude']}")
    if p["seed"] is None:
        p["seed"] = derive_seed(p)
    return p


def point_hash(point: Mapping[str, Any]) -> str:
    """SHA-256 (first 20 hex digits) of the canonical JSON of a resolved point: its identity in the dataset."""
    blob = json.dumps({k: point[k] for k in PARAMETERS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


# ---------------------------------------------------------------------------------------------
# spec


@dataclasses.dataclass(frozen=True)
class Spec:
    """A parsed sweep: its name, the fixed defaults, the grid axes (in file order) and explicit cases."""

    name: str
    defaults: dict
    grid: dict
    cases: tuple
    description: str = ""

    def points(self) -> list[dict]:
        return expand(self)


def parse_spec(doc: Mapping[str, Any], name: str = "sweep") -> Spec:
    """Validate a spec given as a dict (the parsed TOML)."""
    allowed = {"sweep", "defaults", "grid", "case"}
    for k in doc:
        if k not in allowed:
            raise ValueError(f"spec: unknown table {k!r}; expected [sweep], [defaults], [grid] and [[case]]")
    meta = dict(doc.get("sweep", {}))
    for k in meta:
        if k not in ("name", "description"):
            raise ValueError(f"spec: unknown key {k!r} in [sweep]; expected name, description")
    defaults = dict(doc.get("defaults", {}))
    _check_names(defaults, "[defaults]")
    grid: dict[str, list] = {}
    raw_grid = doc.get("grid", {})
    if not isinstance(raw_grid, Mapping):
        raise TypeError("spec: [grid] must be a table of lists")
    _check_names(raw_grid, "[grid]")
    for k, vals in raw_grid.items():
        vals = list(vals) if isinstance(vals, list) else [vals]
        if not vals:
            raise ValueError(f"[grid]: parameter {k!r} has an empty list")
        grid[k] = [_coerce(k, x, "[grid]") for x in vals]
    cases = doc.get("case", [])
    if not isinstance(cases, list):
        raise TypeError("spec: cases must be given as [[case]] tables")
    for i, c in enumerate(cases):
        _check_names(c, f"[[case]] #{i + 1}")
    if not grid and not cases:
        raise ValueError("spec: no points: give a [grid] table and/or [[case]] tables")
    return Spec(
        name=str(meta.get("name", name)),
        defaults=defaults,
        grid=grid,
        cases=tuple(dict(c) for c in cases),
        description=str(meta.get("description", "")),
    )


def load_spec(path: str | Path) -> Spec:
    """Read and validate a TOML sweep spec."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"spec: no such file {str(path)!r}")
    with path.open("rb") as fh:
        try:
            doc = tomllib.load(fh)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"spec {str(path)!r}: not valid TOML: {e}") from None
    return parse_spec(doc, name=path.stem)


def expand(spec: Spec) -> list[dict]:
    """The resolved points of a spec: the grid's Cartesian product (first key outermost), then the
    cases, each over ``[defaults]``; a point given twice appears once."""
    out: list[dict] = []
    seen: set[str] = set()
    keys = list(spec.grid)
    combos = itertools.product(*(spec.grid[k] for k in keys)) if keys else iter(())
    raws = [dict(spec.defaults, **dict(zip(keys, combo))) for combo in combos]
    raws += [dict(spec.defaults, **c) for c in spec.cases]
    for i, raw in enumerate(raws):
        p = resolve_point(raw, where=f"point {i + 1}")
        h = point_hash(p)
        if h not in seen:
            seen.add(h)
            out.append(p)
    return out


def select(
    points: Sequence[dict], where: Mapping[str, Sequence[Any]] | None = None, limit: int | None = None
) -> list[dict]:
    """The points whose parameters take one of the given values (``where``), at most ``limit`` of them."""
    out = []
    for p in points:
        if where and not all(p[k] in vals for k, vals in where.items()):
            continue
        out.append(p)
    return out[:limit] if limit is not None else out


# ---------------------------------------------------------------------------------------------
# one point


#: Estimated seconds per score-tile element (B·H·S1·S2) on one core of a 2-core x86 CPU: the kernel
#: (emulated fp16 methods), torch SDPA, and the float64 golden every point computes. A model for
#: ``--dry-run``, not a measurement of the point.
_SECONDS_PER_ELEMENT = {"kernel": 4.0e-8, "sdpa": 2.0e-8, "golden": 8.0e-8, "predict": 2.0e-7}


def estimate_seconds(point: Mapping[str, Any]) -> float:
    """Estimated single-core seconds of one point (see :data:`_SECONDS_PER_ELEMENT`)."""
    elems = point["batch"] * point["heads"] * point["seq_q"] * point["seq_kv"] * point["head_dim"] / 128
    rate = (
        _SECONDS_PER_ELEMENT["sdpa" if point["method"] == "sdpa" else "kernel"]
        + _SECONDS_PER_ELEMENT["golden"]
    )
    if point["predict"]:
        rate += _SECONDS_PER_ELEMENT["predict"]
    return elems * rate


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux: ``clear_refs`` 5); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


def _package_version() -> str:
    try:
        return version("pasa")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"


def run_point(point: Mapping[str, Any]) -> dict:
    """Evaluate one resolved point and return its result row (never raises for a failing method:
    the row then has ``status = "error"`` and the error text)."""

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    row: dict[str, Any] = {k: point[k] for k in PARAMETERS}
    row["beta_requested"] = row.pop("beta")
    row.update(
        point_hash=point_hash(point),
        version=_package_version(),
        torch_version=torch.__version__,
        status="ok",
        error=None,
    )
    _reset_peak_rss()
    t0 = time.perf_counter()
    try:
        dtype = DTYPES[point["input_dtype"]]
        q, k, v = _data.make_qkv(
            point["dist"],
            mean=point["mean"],
            amplitude=point["amplitude"],
            seed=point["seed"],
            dtype=dtype,
            batch=point["batch"],
            heads=point["heads"],
            kv_heads=point["kv_heads"],
            seq_q=point["seq_q"],
            seq_kv=point["seq_kv"],
            head_dim=point["head_dim"],
        )
        kw = dict(
            precision=point["precision"],
            beta=point["beta"],
            block_q=point["block_q"],
            block_kv=point["block_kv"],
            scale=point["scale"],
            is_causal=point["causal"],
            device=point["device"],
        )
        if point["predict"]:
            rec = predict_case(q, k, v, [point["method"]], **kw)[0]
        else:
            rec = run_case(q, k, v, [point["method"]], **kw)[0]
        for key in _RESULT_COLUMNS:
            if key in rec:
                row[key] = rec[key]
    except Exception as e:  # noqa: BLE001 - a failing point is a result, the sweep goes on
        row["status"] = "error"
        row["error"] = f"{type(e).__name__}: {e}\n" + "".join(traceback.format_exc(limit=6))
    finally:
        torch.set_num_threads(threads)
    row["wall_s"] = time.perf_counter() - t0
    row["peak_rss_bytes"] = _peak_rss_bytes()
    return row


# ---------------------------------------------------------------------------------------------
# the dataset

_PARAM_TYPES = {str: "string", int: "int64", float: "float64", bool: "bool_"}

#: Result columns (besides the parameters) and their Arrow types.
_RESULT_COLUMNS: dict[str, str] = {
    "beta": "float64",
    "rmse": "float64",
    "rel_rmse": "float64",
    "rel_rmse_out": "float64",
    "max_abs_err": "float64",
    "nonfinite": "int64",
    "first_nonfinite_stage": "string",
    "seconds": "float64",
    # with predict = true (pasa_npu.predict_report)
    "policy": "string",
    "c": "float64",
    "kappa": "float64",
    "pred_rmse": "float64",
    "pred_bound": "float64",
    "pred_prob": "float64",
    "pred_a_priori": "float64",
    "pred_first_order": "float64",
    "hull_cap": "float64",
    "confidence": "float64",
    "bound_status": "string",
    "first_order_dominant": "string",
    "bound_seconds": "float64",
    "a_priori_seconds": "float64",
    "bound_cost": "float64",
    "a_priori_cost": "float64",
    "estimate_cost": "float64",
    "pred_overflow": "bool_",
    "pred_overflow_stage": "string",
    "dominant": "string",
    "bound_dominant": "string",
    "regime": "string",
    "nonlinear_rows": "float64",
    "max_log_std": "float64",
    "modelled_as": "string",
    "pred_seconds": "float64",
    "meas_overflow": "bool_",
    "overflow_ok": "bool_",
    "rmse_ratio": "float64",
    "bound_ratio": "float64",
    "bound_ok": "bool_",
    "bound_below_cap": "bool_",
    "prob_ratio": "float64",
    "prob_ok": "bool_",
    "prob_below_cap": "bool_",
    "a_priori_ratio": "float64",
    "a_priori_ok": "bool_",
    "a_priori_below_cap": "bool_",
    "first_order_ratio": "float64",
    "first_order_ok": "bool_",
    "first_order_below_cap": "bool_",
    "rmse_within_1_5x": "bool_",
    "rmse_within_3x": "bool_",
    "loose_because": "string",
    "seed_model": "int64",
}


def _rms_columns() -> dict[str, str]:

    return {f"rms.{t}": "float64" for t in TERMS}


def _columns() -> dict[str, str]:
    cols = {}
    for name, p in PARAMETERS.items():
        cols["beta_requested" if name == "beta" else name] = _PARAM_TYPES[p.kind]
    cols.update(
        point_hash="string", status="string", error="string", version="string", torch_version="string"
    )
    cols.update(_RESULT_COLUMNS)
    cols.update(_rms_columns())
    cols.update(wall_s="float64", peak_rss_bytes="int64")
    return cols


def columns() -> dict[str, str]:
    """The dataset's columns in order (parameters, identity, results, predictions, cost) and their Arrow types."""
    return dict(_columns())


def _schema():
    import pyarrow as pa

    return pa.schema([(k, getattr(pa, t)()) for k, t in _columns().items()])


def _part_name(h: str) -> str:
    return f"part-{h}.parquet"


def done_hashes(out: str | Path) -> set[str]:
    """Hashes of the points whose rows are in the dataset under ``out``."""
    d = Path(out)
    if not d.is_dir():
        return set()
    return {p.name[len("part-") : -len(".parquet")] for p in d.glob("part-*.parquet")}


def _write_row(out: Path, row: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema()
    rec = {k: row.get(k) for k in schema.names}
    for k, v in rec.items():  # non-finite metrics stay as they are; None stays null
        if isinstance(v, bool) and schema.field(k).type != pa.bool_():
            rec[k] = int(v)
    table = pa.Table.from_pylist([rec], schema=schema)
    final = out / _part_name(row["point_hash"])
    tmp = out / f".{final.name}.{os.getpid()}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, final)


def load(out: str | Path, *, errors: bool = True):
    """The results under ``out`` as a pandas DataFrame, one row per finished point, sorted by point hash.

    Columns: the parameters (``beta`` as ``beta_requested``), ``point_hash``, ``status`` (``"ok"`` or
    ``"error"``), ``error``, ``version``, ``torch_version``, the ``pasa-verify`` metrics (``beta`` the
    β used, ``rmse``, ``rel_rmse``, ``rel_rmse_out``, ``max_abs_err``, ``nonfinite``,
    ``first_nonfinite_stage``, ``seconds`` of the method), the prediction columns (null unless the
    point had ``predict = true``), ``wall_s`` of the whole point and ``peak_rss_bytes``.
    ``errors=False`` drops failed points.
    """
    import pyarrow.dataset as ds

    d = Path(out)
    if not d.is_dir():
        raise ValueError(f"out must be a sweep output directory, got {str(out)!r} (no such directory)")
    files = sorted(str(p) for p in d.glob("part-*.parquet"))
    schema = _schema()
    if not files:
        return schema.empty_table().to_pandas()
    df = ds.dataset(files, format="parquet", schema=schema).to_table().to_pandas()
    if not errors:
        df = df[df["status"] == "ok"]
    return df.sort_values("point_hash", kind="stable").reset_index(drop=True)


def load_rows(out: str | Path, hashes: Sequence[str]) -> list[dict]:
    """The rows of the points ``hashes`` under ``out`` as plain dicts, in the order given.

    Unlike :func:`load` (a pandas float column holds a null and a NaN alike), a null stays ``None``
    and a measured NaN stays NaN. Raises ValueError naming the first point whose row is missing.
    """
    import pyarrow.dataset as ds

    files = [Path(out) / _part_name(h) for h in hashes]
    missing = [h for h, f in zip(hashes, files) if not f.is_file()]
    if missing:
        raise ValueError(
            f"out: {len(missing)} of {len(hashes)} points are not in {str(out)!r} (first {missing[0]})"
        )
    if not files:
        return []
    table = ds.dataset([str(f) for f in files], format="parquet", schema=_schema()).to_table(
        use_threads=False
    )
    by = {r["point_hash"]: r for r in table.to_pylist()}
    return [by[h] for h in hashes]


# ---------------------------------------------------------------------------------------------
# executors


def _serial(points: Sequence[dict], workers: int, scheduler: str | None) -> Iterator[dict]:
    for p in points:
        yield run_point(p)


def _processes(points: Sequence[dict], workers: int, scheduler: str | None) -> Iterator[dict]:
    # loky workers are fresh interpreters; inner_max_num_threads caps OpenMP/BLAS threads there and
    # run_point sets torch's intra-op threads to 1.
    from joblib import Parallel, delayed, parallel_config

    with parallel_config(backend="loky", inner_max_num_threads=1):
        yield from Parallel(n_jobs=workers, return_as="generator_unordered", batch_size=1)(
            delayed(run_point)(p) for p in points
        )


def _dask(points: Sequence[dict], workers: int, scheduler: str | None, log=print) -> Iterator[dict]:
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        )
        client = Client(cluster)
    try:
        log(f"dask scheduler {client.scheduler.address}; dashboard {client.dashboard_link}")
        futures = {
            client.submit(run_point, p, key=f"pasa-point-{point_hash(p)}", pure=False): p for p in points
        }
        for fut in as_completed(futures):
            try:
                yield fut.result()
            except Exception as e:  # noqa: BLE001 - a lost worker: the point is recorded as failed
                row = {k: futures[fut][k] for k in PARAMETERS}
                row["beta_requested"] = row.pop("beta")
                row.update(
                    point_hash=point_hash(futures[fut]),
                    status="error",
                    error=f"{type(e).__name__}: {e}",
                    version=_package_version(),
                )
                yield row
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


EXECUTORS = {"serial": _serial, "processes": _processes, "dask": _dask}


@dataclasses.dataclass
class RunSummary:
    points: int
    skipped: int
    ran: int
    failed: int
    seconds: float
    out: Path


def run(
    points: Sequence[dict],
    out: str | Path,
    *,
    executor: str = "processes",
    workers: int | None = None,
    scheduler: str | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    log=None,
) -> RunSummary:
    """Run the points that are not yet in the dataset under ``out``; each row is written as it arrives.

    Returns counts (points, skipped as already done, ran, failed) and the wall time.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {sorted(EXECUTORS)}, got {executor!r}")
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    if scheduler is not None and executor != "dask":
        raise ValueError("scheduler is only used with executor='dask'")
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    for stale in outp.glob(".part-*.tmp"):  # a write cut short by a kill
        stale.unlink(missing_ok=True)
    done = done_hashes(outp)
    if retry_failed and done:
        import pyarrow.parquet as pq

        for h in list(done):
            f = outp / _part_name(h)
            if pq.read_table(f, columns=["status"]).column("status")[0].as_py() != "ok":
                f.unlink()
                done.discard(h)
    todo = [p for p in points if point_hash(p) not in done]
    skipped = len(points) - len(todo)
    t0 = time.perf_counter()
    failed = 0
    bar = None
    if progress:
        bar = tqdm(total=len(todo), desc="sweep", unit="pt", dynamic_ncols=True)
        bar.set_postfix(failures=0, skipped=skipped)
    kw = dict(log=log) if executor == "dask" else {}
    ran = 0
    try:
        if todo:
            for row in EXECUTORS[executor](todo, workers, scheduler, **kw):
                _write_row(outp, row)
                ran += 1
                failed += row.get("status") != "ok"
                if bar is not None:
                    bar.set_postfix(failures=failed, skipped=skipped)
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return RunSummary(
        points=len(points),
        skipped=skipped,
        ran=ran,
        failed=failed,
        seconds=time.perf_counter() - t0,
        out=outp,
    )


# ---------------------------------------------------------------------------------------------
# command line


def _where(text: str) -> tuple[str, list]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE[,VALUE...], got {text!r}")
    key, vals = text.split("=", 1)
    key = key.strip()
    if key not in PARAMETERS:
        raise argparse.ArgumentTypeError(
            f"unknown parameter {key!r}; expected one of {', '.join(PARAMETERS)}"
        )
    out = []
    for raw in vals.split(","):
        try:
            val = tomllib.loads(f"x = {raw.strip()}")["x"]
        except tomllib.TOMLDecodeError:
            val = raw.strip()
        out.append(_coerce(key, val, "--where"))
    return key, out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pasa-sweep",
        description="Run a PASA parameter sweep described by a TOML spec; results go to a resumable Parquet "
        "dataset (one file per point, keyed by the point hash). Guide: docs/sweeps.md.",
        epilog="Parameters: "
        + "; ".join(f"{k} ({p.kind.__name__}, default {p.default!r})" for k, p in PARAMETERS.items()),
    )
    p.add_argument("spec", help="TOML sweep spec ([sweep], [defaults], [grid], [[case]])")
    p.add_argument("--out", help="output directory of the Parquet dataset (required unless --dry-run)")
    p.add_argument("--executor", choices=sorted(EXECUTORS), default="processes")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument(
        "--scheduler", default=None, help="address of a running dask scheduler, e.g. tcp://host:8786"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the number of points and their estimated cost"
    )
    p.add_argument(
        "--predict", action="store_true", help="set predict = true on every point that does not set it"
    )
    p.add_argument(
        "--where",
        type=_where,
        action="append",
        default=[],
        metavar="KEY=V1[,V2]",
        help="run only the points whose parameter KEY takes one of these values (repeatable)",
    )
    p.add_argument("--limit", type=int, default=None, help="run at most this many points (after --where)")
    p.add_argument("--retry-failed", action="store_true", help="run again the points recorded with an error")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = load_spec(args.spec)
        if args.predict:
            spec = dataclasses.replace(spec, defaults=dict({"predict": True}, **spec.defaults))
        points = select(expand(spec), dict(args.where), args.limit)
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        if args.scheduler and args.executor != "dask":
            raise ValueError("--scheduler needs --executor dask")
    except (ValueError, TypeError) as e:
        print(f"pasa-sweep: error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        done = done_hashes(args.out) if args.out else set()
        todo = [p for p in points if point_hash(p) not in done]
        cost = sum(estimate_seconds(p) for p in todo)
        workers = args.workers or os.cpu_count() or 1
        print(
            f"spec {spec.name}: {len(points)} points, {len(points) - len(todo)} already done, {len(todo)} to run"
        )
        print(
            f"estimated cost: {cost:.0f} core-seconds ({cost / 3600:.2f} core-hours), about "
            f"{cost / (1 if args.executor == 'serial' else workers) / 60:.1f} min with "
            f"{1 if args.executor == 'serial' else workers} worker(s) (an estimate: score elements x a per-element "
            "time measured on a 2-core x86 CPU)"
        )
        return 0
    if not args.out:
        print("pasa-sweep: error: --out is required (or use --dry-run)", file=sys.stderr)
        return 2
    s = run(
        points,
        args.out,
        executor=args.executor,
        workers=args.workers,
        scheduler=args.scheduler,
        retry_failed=args.retry_failed,
        progress=not args.no_progress,
    )
    print(
        f"spec {spec.name}: {s.points} points, {s.skipped} already done, {s.ran} ran ({s.failed} failed) in "
        f"{s.seconds:.1f} s; results in {s.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
