"""Figures whose data is a sweep of kernel runs (:data:`pasa_npu.figures.SWEEP_FIGURES`): the committed
specs describe the figures' set-ups, the sweep route gives what a plain loop over the harness gives,
it reproduces rows of the committed CSVs (all of them: the slow tests), a sweep kept in a folder
resumes, and ``make figures`` runs a tiny spec with the processes executor.

Expected values come from independent routes: literal set-ups (numpy.linspace, 2^(k/2), the
harness's grid constants), loops written here over :func:`pasa_npu.harness.run_case`, and the
committed CSVs (computed by the direct loops the figures used before their data moved to sweeps).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib

from pasa_npu import data, figures
from pasa_npu.figures._io import _fmt, as_written
from pasa_npu.harness import GRID_AMPLITUDES, GRID_MEANS, run_case

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_thread():
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _committed(name: str) -> list[dict]:
    with (ROOT / "figures" / f"{name}.csv").open(newline="") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


def _as_text(res: figures.FigureResult) -> list[dict]:
    """The result's rows as the CSV writes them (text cells, 10 significant digits)."""
    return [{c: _fmt(r.get(c)) for c in res.columns} for r in res.rows]


def _spec(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# -- the committed specs are the figures' set-ups ------------------------------------------------------------
def test_every_sweep_figure_has_a_committed_spec_per_mode():
    assert set(figures.SWEEP_FIGURES) == {
        "method_comparison",
        "beta_sweep",
        "overflow_frontier",
        "predicted_vs_measured",
    }
    for name in figures.SWEEP_FIGURES:
        assert figures.FIGURES[name].sweep
        for quick in (True, False):
            assert figures.spec_path(name, quick).is_file()
    assert figures.spec_path("method_comparison", False) == ROOT / "examples" / "reference_grid.toml"
    assert not figures.FIGURES["kappa_landscape"].sweep  # theory: no kernel run
    with pytest.raises(ValueError, match="not a sweep-backed figure"):
        figures.spec_path("kappa_landscape", True)


@pytest.mark.parametrize("quick", [True, False])
def test_method_comparison_specs_are_the_reference_grid_at_the_figures_shape(quick):
    pts, custom = figures.figure_points("method_comparison", quick)
    assert custom is None
    cells = [(d, m, a) for d in ("uniform", "hybrid") for m in GRID_MEANS for a in GRID_AMPLITUDES]
    assert [(p["dist"], p["mean"], p["amplitude"], p["method"]) for p in pts] == [
        (*c, meth) for c in cells for meth in figures.COMPARISON_METHODS
    ]
    shape = figures.comparison_shape(quick)
    for p in pts:
        assert {k: p[k] for k in shape} == shape
        assert (p["seed"], p["input_dtype"], p["precision"], p["block_kv"], p["beta"]) == (
            2024724,
            "fp16",
            "npu_fp16",
            128,
            None,
        )


@pytest.mark.parametrize("quick, draws, n_beta, seq_q", [(True, 2, 16, 64), (False, 8, 64, 256)])
def test_beta_sweep_specs_are_linspace_betas_over_seeded_draws(quick, draws, n_beta, seq_q):
    pts, _ = figures.figure_points("beta_sweep", quick)
    seeds = [2024724 + i for i in range(draws)]
    betas = [float(b) for b in np.linspace(0.90, 0.995, n_beta)]  # exactly, not to 10 digits
    want = [(s, b, m) for s in seeds for b in betas for m in ("pasa:script", "pasa", "pasa:fp16_keymean")]
    want += [(s, None, "fa_naive") for s in seeds]
    assert [(p["seed"], p["beta"], p["method"]) for p in pts] == want
    for p in pts:
        assert (p["dist"], p["mean"], p["amplitude"], p["heads"], p["seq_q"], p["seq_kv"]) == (
            "uniform",
            30.0,
            0.5,
            1,
            seq_q,
            1407,
        )


@pytest.mark.parametrize(
    "quick, amps, seq", [(True, (0.5, 10.0, 20.0), 256), (False, (0.5, 5.0, 10.0, 20.0), 1407)]
)
def test_overflow_frontier_specs_scan_powers_of_root_two(quick, amps, seq):
    pts, _ = figures.figure_points("overflow_frontier", quick)
    means = [2.0 ** (k / 2) for k in range(21)]
    want = [
        (d, a, m, mu)
        for d in ("uniform", "hybrid")
        for a in amps
        for m in figures.OVERFLOW_METHODS
        for mu in means
    ]
    assert [(p["dist"], p["amplitude"], p["method"], p["mean"]) for p in pts] == want
    assert {(p["seq_q"], p["seq_kv"], p["heads"], p["seed"]) for p in pts} == {(seq, seq, 1, 2024724)}


# -- the sweep route against a plain loop (reduced grids, quick shapes) ---------------------------------------
TINY = """
[defaults]
batch = 1
heads = 1
kv_heads = 1
seq_q = 32
seq_kv = 160
head_dim = 128
seed = 2024724

[grid]
dist = ["uniform"]
mean = [0.0, 30.0]
amplitude = [5.0]
method = ["pasa", "fa_qk", "fa_naive"]
"""


REDUCED_GRID = """
[defaults]
batch = 1
heads = 2
kv_heads = 1
seq_q = 64
seq_kv = 384
head_dim = 128
seed = 2024724

[grid]
dist = ["uniform", "hybrid"]
mean = [0.0, 30.0]
amplitude = [0.5, 20.0]
method = ["pasa", "pasa:script", "fa_qk", "fa_naive"]
"""


def test_method_comparison_sweep_route_equals_a_plain_loop(tmp_path, one_thread):
    res = figures.method_comparison(data=figures.SweepOptions(spec=_spec(tmp_path, REDUCED_GRID)))
    shape = dict(batch=1, heads=2, kv_heads=1, seq_q=64, seq_kv=384, head_dim=128)
    methods = ["pasa", "pasa:script", "fa_qk", "fa_naive"]
    want = []
    for d in ("uniform", "hybrid"):
        for m in (0.0, 30.0):
            for a in (0.5, 20.0):
                q, k, v = data.make_qkv(d, mean=m, amplitude=a, seed=2024724, **shape)
                recs = run_case(q, k, v, methods, extra=dict(dist=d, mean=m, amplitude=a))
                naive = recs[-1]["rel_rmse"]
                for r in recs:
                    finite = r["nonfinite"] == 0 and naive >= 2.0**-22
                    want.append(dict(r, ratio_to_naive=r["rel_rmse"] / naive if finite else None))
    assert len(res.rows) == len(want) == 32
    assert repr(res.rows) == repr(as_written(res.columns, want))  # repr: an overflow's NaN equals itself
    assert any(r["nonfinite"] for r in res.rows)  # the reduced grid holds an overflow (fa_qk, mean 30)
    assert res.setup["spec"] == "spec.toml" and res.setup["methods"] == ", ".join(methods)
    assert res.setup["shape"] == "batch 1, heads 2, kv_heads 1, S1 64, S2 384, d 128, block_kv 128"


def _frontier_plain(dist, amp, meth, shape, means):
    """The frontier search written out plainly, on the harness."""

    def stage(m):
        q, k, v = data.make_qkv(dist, mean=m, amplitude=amp, seed=2024724, **shape)
        (r,) = run_case(q, k, v, [meth])
        return (r["first_nonfinite_stage"] or "output") if r["nonfinite"] else None

    if stage(means[-1]) is None:
        return means[-1], None
    i = next(i for i, m in enumerate(means) if stage(m) is not None)  # linear scan, not a binary search
    lo, hi = (means[i - 1] if i else 0.0), means[i]
    while hi - lo > 0.01 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if stage(mid) is None else (lo, mid)
    return lo, hi


FRONTIER = """
[defaults]
batch = 1
heads = 1
kv_heads = 1
seq_q = 128
seq_kv = 128
head_dim = 128
seed = 2024724

[grid]
dist = ["uniform"]
amplitude = [0.5, 10.0]
method = ["fa_qk", "pasa:bf16"]
mean = [1.0, 4.0, 16.0, 64.0, 256.0]
"""


def test_overflow_frontier_sweep_route_equals_a_plain_search(tmp_path, one_thread):
    res = figures.overflow_frontier(data=figures.SweepOptions(spec=_spec(tmp_path, FRONTIER)))
    shape = dict(batch=1, heads=1, kv_heads=1, seq_q=128, seq_kv=128, head_dim=128)
    means = [1.0, 4.0, 16.0, 64.0, 256.0]
    measured = [r for r in res.rows if r["kind"] == "measured"]
    assert [(r["amplitude"], r["method"]) for r in measured] == [
        (0.5, "fa_qk"),
        (0.5, "pasa:bf16"),
        (10.0, "fa_qk"),
        (10.0, "pasa:bf16"),
    ]
    for r in measured:
        lo, hi = _frontier_plain("uniform", r["amplitude"], r["method"], shape, means)
        # the rows hold what the CSV holds: 10 significant digits
        assert (_fmt(r["mean_finite"]), _fmt(r["mean_overflow"])) == (_fmt(lo), _fmt(hi)), r
    fa = [r for r in measured if r["method"] == "fa_qk"]
    assert all(r["mean_overflow"] is not None for r in fa)  # fa_qk overflows in the range: a real search
    assert "16 means" not in res.setup["measured"] and "5 means 1..256" in res.setup["measured"]


# -- the sweep route reproduces the committed CSVs (a subset here; everything in the slow tests) -----------
def _rows_equal(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g == w, f"sweep route {g}\ncommitted  {w}"


def test_method_comparison_rows_of_one_cell_match_the_committed_csv(tmp_path, one_thread):
    # one cell of the full spec (1 x 7/1 heads, S = 1407): npu_fp16 PASA and the baseline
    head, _, _ = figures.spec_path("method_comparison", False).read_text().partition("[grid]")
    spec = (
        head + '[grid]\ndist = ["hybrid"]\nmean = [20.0]\namplitude = [5.0]\nmethod = ["pasa", "fa_naive"]\n'
    )
    res = figures.method_comparison(data=figures.SweepOptions(spec=_spec(tmp_path, spec)))
    want = [
        r
        for r in _committed("method_comparison")
        if (r["dist"], r["mean"], r["amplitude"]) == ("hybrid", "20", "5")
        and r["method"] in ("pasa", "fa_naive")
    ]
    _rows_equal(_as_text(res), want)


def test_beta_sweep_rows_at_one_beta_match_the_committed_csv(tmp_path, one_thread):
    # every draw of one beta for the script preset, and the fa_naive baseline: the measured row, the
    # baseline row and the predicted rows (which read the draws' median q.kbar) as committed
    full = figures.figure_points("beta_sweep", False)[0]
    beta = sorted({p["beta"] for p in full if p["beta"] is not None})[40]
    text = figures.spec_path("beta_sweep", False).read_text()
    head, _, _ = text.partition("[grid]")
    spec = (
        head
        + f'[grid]\nseed = {[2024724 + i for i in range(8)]}\nbeta = [{beta!r}]\nmethod = ["pasa:script"]\n'
    )
    spec += "".join(f'\n[[case]]\nseed = {2024724 + i}\nmethod = "fa_naive"\n' for i in range(8))
    res = figures.beta_sweep(data=figures.SweepOptions(spec=_spec(tmp_path, spec)))
    committed = _committed("beta_sweep")
    got = _as_text(res)
    assert [r["kind"] for r in got][:2] == ["measured", "baseline"]
    want = [
        r
        for r in committed
        if r["kind"] == "measured" and r["method"] == "pasa:script" and r["beta"] == _fmt(beta)
    ]
    want += [r for r in committed if r["kind"] != "measured"]
    _rows_equal(got, want)


def test_overflow_frontier_search_of_one_cell_matches_the_committed_csv(tmp_path, one_thread):
    text = figures.spec_path("overflow_frontier", False).read_text()
    head, _, grid = text.partition("[grid]")
    means = grid[grid.index("mean = ") :]
    spec = head + '[grid]\ndist = ["uniform"]\namplitude = [0.5]\nmethod = ["fa_qk"]\n' + means
    res = figures.overflow_frontier(data=figures.SweepOptions(spec=_spec(tmp_path, spec)))
    want = [
        r
        for r in _committed("overflow_frontier")
        if (r["dist"], r["amplitude"], r["method"]) == ("uniform", "0.5", "fa_qk")
    ]
    _rows_equal(_as_text(res), want)  # the measured search and the predicted row


#: Columns holding wall-clock times (they differ run to run; everything else is reproduced exactly).
TIMED_COLUMNS = {"seconds", "bound_cost", "a_priori_cost", "estimate_cost"}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(figures.SWEEP_FIGURES))
def test_full_sweep_route_reproduces_the_committed_csv_byte_for_byte(name, tmp_path):
    res = figures.make_figure(
        name, out=tmp_path / "out", data=figures.SweepOptions(tmp_path / "data", executor="processes")
    )
    assert res.quick is False
    if not TIMED_COLUMNS & set(res.columns):
        got = (tmp_path / "out" / f"{name}.csv").read_bytes()
        assert got == (ROOT / "figures" / f"{name}.csv").read_bytes()
        return
    keep = [c for c in res.columns if c not in TIMED_COLUMNS]
    got_rows = [{c: r[c] for c in keep} for r in _committed_from(tmp_path / "out" / f"{name}.csv")]
    _rows_equal(got_rows, [{c: r[c] for c in keep} for r in _committed(name)])


def _committed_from(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


def test_predicted_vs_measured_quick_spec_is_the_grid_corners():
    pts, custom = figures.figure_points("predicted_vs_measured", True)
    assert custom is None
    want = [
        (d, m, a, meth)
        for d in ("uniform", "hybrid")
        for m in (0.0, 30.0)
        for a in (0.5, 20.0)
        for meth in ("pasa", "pasa:script", "fa_q", "fa_hybrid")
    ]
    assert [(p["dist"], p["mean"], p["amplitude"], p["method"]) for p in pts] == want
    for p in pts:
        assert (p["seq_q"], p["seq_kv"], p["head_dim"], p["heads"], p["seed"], p["predict"]) == (
            8,
            256,
            128,
            1,
            2024724,
            True,
        )
    full, _ = figures.figure_points("predicted_vs_measured", False)
    assert len(full) == 640 and full[0]["seq_q"] == 16


def test_predicted_vs_measured_from_a_one_point_spec_matches_the_committed_row(tmp_path, one_thread):
    # the full spec reduced to one point: the sweep route gives the committed row (timings aside)
    head, _, _ = figures.spec_path("predicted_vs_measured", False).read_text().partition("[grid]")
    spec = (
        head
        + '[grid]\ndist = ["hybrid"]\nmean = [30.0]\namplitude = [20.0]\nseq_kv = [256]\nmethod = ["fa_q"]\n'
    )
    res = figures.predicted_vs_measured(data=figures.SweepOptions(spec=_spec(tmp_path, spec)))
    assert res.setup["data"].endswith("the points of spec.toml (pasa-sweep, predict = true)")
    keep = [c for c in res.columns if c not in TIMED_COLUMNS]
    want = [
        {c: r[c] for c in keep}
        for r in _committed("predicted_vs_measured")
        if (r["dist"], r["mean"], r["amplitude"], r["seq_kv"], r["method"])
        == ("hybrid", "30", "20", "256", "fa_q")
    ]
    _rows_equal([{c: r[c] for c in keep} for r in _as_text(res)], want)


# -- resuming, options, errors ---------------------------------------------------------------------------------
def test_a_kept_sweep_resumes_and_gives_the_same_bytes(tmp_path, one_thread):
    spec = _spec(tmp_path, FRONTIER)
    opts = figures.SweepOptions(tmp_path / "data", spec=spec)
    first = figures.overflow_frontier(data=opts, out=tmp_path / "a")
    parts = sorted((tmp_path / "data" / "overflow_frontier").glob("part-*.parquet"))
    assert parts  # the probes are kept, one file each
    stamps = {p: p.stat().st_mtime_ns for p in parts}
    figures.overflow_frontier(data=opts, out=tmp_path / "b")
    assert {
        p: p.stat().st_mtime_ns for p in (tmp_path / "data" / "overflow_frontier").glob("part-*")
    } == stamps
    for ext in ("csv", "png", "pdf"):
        assert (tmp_path / "a" / f"overflow_frontier.{ext}").read_bytes() == (
            tmp_path / "b" / f"overflow_frontier.{ext}"
        ).read_bytes()
    assert first.setup["spec"] == "spec.toml"


def test_a_failed_point_stops_the_figure_with_its_error(tmp_path, one_thread):
    bad = TINY.replace("seed = 2024724", "seed = 2024724\nblock_kv = 1")  # PASA needs block_kv >= 2
    with pytest.raises(ValueError, match=r"2 of 6 points in .* failed; first: .*block"):
        figures.method_comparison(data=figures.SweepOptions(tmp_path / "d", spec=_spec(tmp_path, bad)))
    assert len(list((tmp_path / "d" / "method_comparison").glob("part-*"))) == 6  # all recorded


def test_bad_sweep_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="executor"):
        figures.SweepOptions(executor="threads")
    with pytest.raises(ValueError, match="workers"):
        figures.SweepOptions(executor="processes", workers=0)
    with pytest.raises(ValueError, match="scheduler"):
        figures.SweepOptions(scheduler="tcp://x:1")
    with pytest.raises(TypeError, match="data"):
        figures.method_comparison(data=3)
    with pytest.raises(ValueError, match="data"):
        figures.method_comparison(data=tmp_path, from_csv=ROOT / "figures")
    with pytest.raises(ValueError, match="not computed by a sweep"):
        figures.make_figure("kappa_landscape", quick=True, data=tmp_path)
    no_base = REDUCED_GRID.replace(', "fa_naive"]', "]")
    with pytest.raises(ValueError, match="fa_naive"):
        figures.method_comparison(data=figures.SweepOptions(spec=_spec(tmp_path, no_base)))
    shapes = REDUCED_GRID.replace("seq_q = 64", "").replace("[grid]", "[grid]\nseq_q = [32, 64]")
    with pytest.raises(ValueError, match="seq_q"):
        figures.method_comparison(data=figures.SweepOptions(spec=_spec(tmp_path, shapes, "two.toml")))


# -- the command line and make figures --------------------------------------------------------------------------
def _make_figures(tmp_path: Path, spec: Path, *extra: str) -> str:
    """``make figures`` on ``spec`` into tmp_path/out and tmp_path/data, with this interpreter's
    environment (VENV = sys.prefix; its install stamp is taken as done)."""
    venv = Path(sys.prefix)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [
        "make",
        "--no-print-directory",
        "-C",
        str(ROOT),
        "figures",
        f"VENV={venv}",
        "-o",
        f"{venv}/.installed",  # the environment is given: no install step
        f"FIGURES=--only method_comparison --spec {spec}",
        f"FIG_OUT={tmp_path / 'out'}",
        f"FIG_DATA={tmp_path / 'data'}",
        *extra,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def _check_tiny_output(tmp_path: Path) -> tuple[bytes, list[Path]]:
    parts = sorted((tmp_path / "data" / "method_comparison").glob("part-*.parquet"))
    assert len(parts) == 6
    setup, _, rows = figures.read_csv(tmp_path / "out" / "method_comparison.csv")
    assert len(rows) == 6 and setup["spec"] == "tiny.toml"
    assert {r["method"] for r in rows if r["nonfinite"]} == {"fa_qk"}  # mean 30: fa_qk overflows
    return (tmp_path / "out" / "method_comparison.csv").read_bytes(), parts


def test_make_figures_runs_a_tiny_spec_then_a_rerun_resumes(tmp_path, one_thread):
    spec = _spec(tmp_path, TINY, "tiny.toml")
    _make_figures(tmp_path, spec, "EXECUTOR=serial")
    csv_bytes, parts = _check_tiny_output(tmp_path)
    stamps = [p.stat().st_mtime_ns for p in parts]
    # the same sweep from Python: every point is read, none rerun, the same table
    figures.method_comparison(data=figures.SweepOptions(tmp_path / "data", spec=spec), out=tmp_path / "again")
    assert (tmp_path / "again" / "method_comparison.csv").read_bytes() == csv_bytes
    assert [p.stat().st_mtime_ns for p in parts] == stamps
    assert sorted((tmp_path / "data" / "method_comparison").glob("part-*.parquet")) == parts


@pytest.mark.slow
def test_make_figures_with_two_worker_processes_then_resumes(tmp_path):
    spec = _spec(tmp_path, TINY, "tiny.toml")
    _make_figures(tmp_path, spec, "EXECUTOR=processes", "WORKERS=2")
    csv_bytes, parts = _check_tiny_output(tmp_path)
    out = _make_figures(tmp_path, spec, "EXECUTOR=serial")  # every point already done, same table
    assert "skipped=6" in out
    assert (tmp_path / "out" / "method_comparison.csv").read_bytes() == csv_bytes
    assert sorted((tmp_path / "data" / "method_comparison").glob("part-*.parquet")) == parts


def test_cli_rejects_spec_without_one_sweep_figure_and_sweeps_with_from_csv(tmp_path, capsys):
    with pytest.raises(SystemExit):
        figures.main(["--all", "--spec", str(_spec(tmp_path, TINY)), "--out", str(tmp_path)])
    assert "--spec needs exactly one" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        figures.main(
            ["--only", "kappa_landscape", "--spec", str(_spec(tmp_path, TINY)), "--out", str(tmp_path)]
        )
    with pytest.raises(SystemExit):
        figures.main(
            ["--cited", "--from-csv", "figures", "--sweep-data", str(tmp_path), "--out", str(tmp_path)]
        )
    assert "runs no sweep" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        figures.main(["--all", "--executor", "serial", "--scheduler", "tcp://h:1", "--out", str(tmp_path)])
    assert "scheduler" in capsys.readouterr().err


def test_list_marks_the_sweep_figures(capsys):
    figures.main(["--list"])
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()}
    for name in figures.FIGURES:
        assert (" sweep " in lines[name]) == (name in figures.SWEEP_FIGURES), lines[name]


def test_load_rows_keeps_null_apart_from_nan(tmp_path):
    from pasa_npu import sweep

    pts = sweep.parse_spec(tomllib.loads(TINY)).points()
    sweep.run(pts, tmp_path, executor="serial", progress=False)
    rows = sweep.load_rows(tmp_path, [sweep.point_hash(p) for p in pts])
    assert [(r["mean"], r["method"]) for r in rows] == [(p["mean"], p["method"]) for p in pts]
    over = next(r for r in rows if r["method"] == "fa_qk" and r["mean"] == 30.0)
    assert over["beta"] is None and over["nonfinite"] > 0 and over["rel_rmse"] != over["rel_rmse"]  # NaN
    assert isinstance(next(r for r in rows if r["method"] == "pasa")["beta"], float)
    with pytest.raises(ValueError, match="1 of 1 points are not in"):
        sweep.load_rows(tmp_path, ["0" * 20])
