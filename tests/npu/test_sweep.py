"""pasa-sweep: spec parsing, seeds, the reference-grid spec against the committed CSV, identical
results from every executor, failing points recorded, and a sweep killed with SIGKILL resuming
without loss or duplicates.

The executors run a tiny sweep (1 x 2/1 heads, S1 = 32, S2 = 160, d = 128) so that the module stays within seconds;
the Dask test starts a LocalCluster of two worker processes.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pasa_npu import sweep

ROOT = Path(__file__).resolve().parents[2]

TINY = """
[sweep]
name = "tiny"

[defaults]
batch = 1
heads = 2
kv_heads = 1
seq_q = 32
seq_kv = 160
head_dim = 128
block_kv = 64

[grid]
dist = ["uniform", "hybrid"]
mean = [0.0, 30.0]
method = ["pasa", "fa_qk"]

[[case]]
method = "pasa:script"
dist = "uniform"
mean = 20.0
seed = 7

[[case]]                 # PASA needs block_kv >= 2: this point fails inside the kernel
method = "pasa"
block_kv = 1
"""

# columns that measure the run, not the result
TIMING = ["wall_s", "peak_rss_bytes", "seconds", "pred_seconds"]


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory):
    p = tmp_path_factory.mktemp("spec") / "tiny.toml"
    p.write_text(TINY)
    return p


@pytest.fixture(scope="module")
def serial_run(tiny_spec, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    pts = sweep.load_spec(tiny_spec).points()
    s = sweep.run(pts, out, executor="serial", progress=False)
    return pts, out, s


def test_spec_expands_grid_then_cases(tiny_spec):
    pts = sweep.load_spec(tiny_spec).points()
    assert len(pts) == 2 * 2 * 2 + 2
    assert [(p["dist"], p["mean"], p["method"]) for p in pts[:3]] == [
        ("uniform", 0.0, "pasa"),
        ("uniform", 0.0, "fa_qk"),
        ("uniform", 30.0, "pasa"),
    ]
    assert pts[8]["method"] == "pasa:script" and pts[8]["seed"] == 7
    assert all(p["heads"] == 2 and p["seq_kv"] == 160 for p in pts)
    # defaults of the parameters nobody set: the reference script's case
    assert pts[0]["amplitude"] == 0.5 and pts[2]["precision"] == "npu_fp16" and pts[0]["beta"] is None
    assert len({sweep.point_hash(p) for p in pts}) == len(pts)


def test_a_point_given_twice_is_swept_once():
    spec = sweep.parse_spec({"grid": {"mean": [1, 1.0, 2]}, "case": [{"mean": 2}]})
    assert [p["mean"] for p in spec.points()] == [1.0, 2.0]


def test_explicit_seed_is_used_as_is_and_derived_seeds_follow_the_data():
    pts = sweep.parse_spec(
        {"grid": {"mean": [0, 30], "method": ["pasa", "fa_qk"], "replicate": [0, 1]}}
    ).points()
    by = {(p["mean"], p["method"], p["replicate"]): p["seed"] for p in pts}
    # every method of a cell sees the same inputs; means and replicates draw different ones
    assert by[(0.0, "pasa", 0)] == by[(0.0, "fa_qk", 0)]
    assert len({by[(m, "pasa", r)] for m in (0.0, 30.0) for r in (0, 1)}) == 4
    assert all(0 <= s < 2**31 for s in by.values())
    explicit = sweep.parse_spec({"grid": {"mean": [0, 30]}, "defaults": {"seed": 2024724}}).points()
    assert [p["seed"] for p in explicit] == [2024724, 2024724]


@pytest.mark.parametrize(
    "doc, exc, words",
    [
        ({"grid": {"meen": [1]}}, ValueError, "unknown parameter 'meen'"),
        ({"grid": {"heads": [2.5]}}, TypeError, "'heads' must be an integer"),
        ({"grid": {"causal": [1]}}, TypeError, "'causal' must be true or false"),
        ({"grid": {"mean": []}}, ValueError, "'mean' has an empty list"),
        ({"grid": {"dist": ["gauss"]}}, ValueError, "'dist' must be one of"),
        ({"grid": {"method": ["nope"]}}, ValueError, "parameter 'method'"),
        ({"grid": {"heads": [3], "kv_heads": [2]}}, ValueError, "multiple of 'kv_heads'"),
        ({"grids": {}}, ValueError, "unknown table 'grids'"),
        ({"sweep": {"name": "x"}}, ValueError, "no points"),
        ({"case": [{"seq_q": 0}]}, ValueError, "'seq_q' must be >= 1"),
    ],
)
def test_bad_specs_name_the_parameter(doc, exc, words):
    with pytest.raises(exc, match=words):
        sweep.parse_spec(doc).points()


def test_reference_grid_spec_has_the_committed_cells_and_reproduces_their_numbers():
    pts = sweep.load_spec(ROOT / "examples" / "reference_grid.toml").points()
    with (ROOT / "figures" / "method_comparison.csv").open() as fh:
        committed = {
            (r["dist"], float(r["mean"]), float(r["amplitude"]), r["method"]): r
            for r in csv.DictReader(ln for ln in fh if not ln.startswith("#"))
        }
    assert len(pts) == 384 == len(committed)
    assert {(p["dist"], p["mean"], p["amplitude"], p["method"]) for p in pts} == set(committed)
    # three points: an ordinary one, the reference preset on hybrid data, and an overflowing baseline
    chosen = [
        ("uniform", 30.0, 0.5, "pasa"),
        ("hybrid", 10.0, 20.0, "pasa:script"),
        ("uniform", 30.0, 5.0, "fa_qk"),
    ]
    for key in chosen:
        p = next(p for p in pts if (p["dist"], p["mean"], p["amplitude"], p["method"]) == key)
        row, ref = sweep.run_point(p), committed[key]
        assert row["status"] == "ok", row["error"]
        assert (p["heads"], p["kv_heads"], p["seq_q"], p["head_dim"], p["seed"]) == (
            int(ref["heads"]),
            int(ref["kv_heads"]),
            int(ref["seq_q"]),
            int(ref["head_dim"]),
            2024724,
        )
        assert row["nonfinite"] == int(ref["nonfinite"])
        assert (row["first_nonfinite_stage"] or "") == ref["first_nonfinite_stage"]
        for col in ("rmse", "rel_rmse", "rel_rmse_out", "max_abs_err"):
            want = float(ref[col])
            # the CSV holds 10 significant digits
            assert (math.isnan(want) and math.isnan(row[col])) or row[col] == pytest.approx(
                want, rel=6e-10, abs=0
            ), f"{key} {col}: {row[col]!r} vs committed {want!r}"


def test_serial_run_writes_one_row_per_point_and_records_the_failure(serial_run):
    pts, out, s = serial_run
    df = sweep.load(out)
    assert (s.points, s.skipped, s.ran, s.failed) == (len(pts), 0, len(pts), 1)
    assert len(df) == len(pts) and df["point_hash"].is_unique
    assert set(df["point_hash"]) == {sweep.point_hash(p) for p in pts}
    bad = df[df["status"] == "error"]
    assert len(bad) == 1 and int(bad["block_kv"].iloc[0]) == 1
    assert "block_kv must be >= 2" in bad["error"].iloc[0]
    ok = df[df["status"] == "ok"]
    assert (
        ok[ok["nonfinite"] == 0]["rel_rmse"].notna().all()
        and (ok["wall_s"] > 0).all()
        and (ok["peak_rss_bytes"] > 0).all()
    )
    # the vendor-style baseline overflows at mean 30 and the census names the stage; PASA does not
    fa = ok[(ok["method"] == "fa_qk") & (ok["mean"] == 30.0)]
    assert (fa["nonfinite"] > 0).all() and set(fa["first_nonfinite_stage"]) == {"scores"}
    assert (ok[ok["method"] == "pasa"]["nonfinite"] == 0).all()
    assert len(sweep.load(out, errors=False)) == len(pts) - 1


def test_rerun_skips_finished_points_and_retries_failures_on_request(serial_run):
    pts, out, _ = serial_run
    s = sweep.run(pts, out, executor="serial", progress=False)
    assert (s.skipped, s.ran) == (len(pts), 0)
    s = sweep.run(pts, out, executor="serial", progress=False, retry_failed=True)
    assert (s.skipped, s.ran, s.failed) == (len(pts) - 1, 1, 1)
    assert len(sweep.load(out)) == len(pts)


def _same(a, b):
    import pandas as pd

    a = a.drop(columns=TIMING)
    b = b.drop(columns=TIMING)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_processes_executor_gives_the_serial_results(serial_run, tmp_path):
    pts, out, _ = serial_run
    s = sweep.run(pts, tmp_path, executor="processes", workers=2, progress=False)
    assert (s.ran, s.failed) == (len(pts), 1)
    _same(sweep.load(out), sweep.load(tmp_path))


def test_dask_local_cluster_gives_the_serial_results(serial_run, tmp_path):
    pts, out, _ = serial_run
    msgs = []
    s = sweep.run(pts, tmp_path, executor="dask", workers=2, progress=False, log=msgs.append)
    assert (s.ran, s.failed) == (len(pts), 1)
    assert any("dashboard" in m for m in msgs), msgs
    _same(sweep.load(out), sweep.load(tmp_path))


def test_a_sweep_killed_with_sigkill_resumes_without_loss_or_duplicates(tmp_path):
    spec = tmp_path / "kill.toml"
    spec.write_text("""
[defaults]
heads = 2
kv_heads = 1
seq_q = 64
seq_kv = 640
head_dim = 128
[grid]
mean = [0.0, 10.0, 20.0, 30.0]
method = ["pasa", "pasa:script", "fa_q"]
""")
    out = tmp_path / "out"
    pts = sweep.load_spec(spec).points()
    cmd = [
        sys.executable,
        "-m",
        "pasa_npu.sweep",
        str(spec),
        "--out",
        str(out),
        "--executor",
        "serial",
        "--no-progress",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while len(sweep.done_hashes(out)) < 3:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the sweep wrote nothing within 120 s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    at_kill = len(sweep.done_hashes(out))
    assert 3 <= at_kill < len(pts), f"{at_kill} of {len(pts)} points done when killed"
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"{len(pts)} points, {at_kill} already done, {len(pts) - at_kill} ran (0 failed)" in res.stdout
    df = sweep.load(out)
    assert len(df) == len(pts) and df["point_hash"].is_unique
    assert set(df["point_hash"]) == {sweep.point_hash(p) for p in pts}
    assert (df["status"] == "ok").all()
    assert not list(out.glob(".*.tmp"))
    # the points finished before the kill equal a fresh run of the same points
    again = tmp_path / "again"
    first = sweep.load(out).iloc[:2]
    sel = [p for p in pts if sweep.point_hash(p) in set(first["point_hash"])]
    sweep.run(sel, again, executor="serial", progress=False)
    _same(first.reset_index(drop=True), sweep.load(again))


def test_dry_run_prints_the_count_and_an_estimate(capsys):
    rc = sweep.main([str(ROOT / "examples" / "reference_grid.toml"), "--dry-run", "--workers", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "384 points, 0 already done, 384 to run" in out and "core-seconds" in out


def test_command_line_errors_name_the_problem(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[grid]\nmeen = [1]\n")
    assert sweep.main([str(bad), "--dry-run"]) == 2
    assert "unknown parameter 'meen'" in capsys.readouterr().err
    assert sweep.main([str(bad)]) == 2
    assert sweep.main([str(tmp_path / "missing.toml"), "--dry-run"]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no such directory"):
        sweep.load(tmp_path / "nothing")
    with pytest.raises(ValueError, match="executor must be one of"):
        sweep.run([], tmp_path, executor="threads")


def test_predicted_vs_measured_spec_reproduces_the_committed_rows():
    """The figure's data are the sweep's points: the spec gives exactly the committed rows, and two
    points rerun give the committed measurements and all four products."""
    from pasa_npu.figures.predicted import PVM_COLUMNS, _theorem

    pts = sweep.load_spec(ROOT / "examples" / "predicted_vs_measured.toml").points()
    with (ROOT / "figures" / "predicted_vs_measured.csv").open() as fh:
        committed = {
            (r["dist"], float(r["mean"]), float(r["amplitude"]), int(r["seq_kv"]), r["method"]): r
            for r in csv.DictReader(ln for ln in fh if not ln.startswith("#"))
        }
    assert len(pts) == len(committed) == 640
    assert {(p["dist"], p["mean"], p["amplitude"], p["seq_kv"], p["method"]) for p in pts} == set(committed)
    for key in [("uniform", 0.0, 0.5, 256, "pasa"), ("hybrid", 30.0, 20.0, 256, "fa_qk")]:
        p = next(p for p in pts if (p["dist"], p["mean"], p["amplitude"], p["seq_kv"], p["method"]) == key)
        row, ref = sweep.run_point(p), committed[key]
        assert row["status"] == "ok", row["error"]
        assert row["nonfinite"] == int(ref["nonfinite"])
        assert (row["first_nonfinite_stage"] or "") == ref["first_nonfinite_stage"]
        assert (row["pred_overflow_stage"] or "") == ref["pred_overflow_stage"]
        assert (row["bound_dominant"] or "") == ref["bound_dominant"] and row["regime"] == ref["regime"]
        assert _theorem(row["bound_status"]) == ref["theorem"]
        for col in (
            "rmse",
            "max_abs_err",
            "pred_rmse",
            "pred_bound",
            "pred_prob",
            "pred_a_priori",
            "hull_cap",
        ):
            assert col in PVM_COLUMNS
            want = float(ref[col]) if ref[col] != "" else math.nan
            got = math.nan if row[col] is None else row[col]
            assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want, rel=6e-10, abs=0), (
                f"{key} {col}: {got!r} vs committed {want!r}"
            )
