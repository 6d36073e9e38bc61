"""The figure pipeline (:mod:`pasa_npu.figures`): determinism, style, registry, CLI, committed files.

The figures' numbers are checked where they are shown: each notebook asserts the claims it prints
(tests/test_notebooks.py runs them). Here: the same command gives the same bytes, every figure has
one fixed style per method at single-column width, the registry and the notebooks agree, and the
figures the README cites are committed with the data behind them.
"""
from __future__ import annotations

import csv
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pasa_npu import figures
from pasa_npu.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_SOURCES = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


# -- style -------------------------------------------------------------------------------------------
def test_every_harness_method_off_the_npu_has_a_style():
    missing = [m for m, spec in METHODS.items() if not spec.npu_only and m not in figures.METHOD_STYLES]
    assert not missing


def test_methods_drawn_together_have_distinct_colours_and_markers():
    drawn = set(figures.COMPARISON_METHODS) | set(figures._OVERFLOW_METHODS) | set(figures._RES_METHODS)
    styles = {m: figures.method_style(m) for m in drawn}
    colours = [s.color for s in styles.values()]
    assert len(set(colours)) == len(colours), sorted(colours)
    labels = [s.label for s in styles.values()]
    assert len(set(labels)) == len(labels)


def test_method_colours_come_from_the_colour_blind_safe_palette():
    allowed = set(figures.OKABE_ITO.values()) | {figures.GREY, figures.DARK_GREY, "#332288", "#882255"}
    assert {s.color for s in figures.METHOD_STYLES.values()} <= allowed
    # the eight Okabe–Ito hues (M. Okabe and K. Ito, Color Universal Design, 2008)
    assert sorted(figures.OKABE_ITO.values()) == sorted(
        ["#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="method"):
        figures.method_style("fa_nope")
    with pytest.raises(TypeError, match="method"):
        figures.method_style(3)
    with pytest.raises(ValueError, match="unknown figure"):
        figures.make_figure("nope")
    with pytest.raises(TypeError, match="quick"):
        figures.quick_mode("yes")


@pytest.mark.parametrize("value, expected", [("", False), ("0", False), ("no", False), ("1", True), ("yes", True)])
def test_quick_mode_reads_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("PASA_QUICK", value)
    assert figures.quick_mode() is expected
    assert figures.quick_mode(False) is False


def test_importing_the_module_does_not_load_matplotlib():
    code = "import sys, pasa_npu.figures; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the predicted overflow frontier against closed forms ----------------------------------------------------
def test_predicted_overflow_mean_at_zero_amplitude_is_the_closed_form():
    # constant inputs: every q·k equals d·μ², so the envelope's score stage reaches 65520 (fp16's
    # round-to-nearest overflow threshold) at d·μ² = 65520 (fa_qk) and τ·d·μ² = 65520 (fa_q), d = 128
    got, stage = figures.predicted_overflow_mean("fa_qk", "uniform", 0.0, seq_q=10, seq_kv=10)
    assert got == pytest.approx((65520 / 128) ** 0.5, rel=1.1e-3) and stage == "scores"
    got, stage = figures.predicted_overflow_mean("fa_q", "uniform", 0.0, seq_q=10, seq_kv=10)
    assert got == pytest.approx((65520 * 128**0.5 / 128) ** 0.5, rel=1.1e-3) and stage == "scores"
    # bf16's range: no overflow below the search limit
    assert figures.predicted_overflow_mean("pasa:bf16", "uniform", 0.0, seq_q=10, seq_kv=10) == (None, None)


# -- determinism and output files ------------------------------------------------------------------------
def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def one_thread():
    """Small quick-mode tensor operations slow down badly from OpenMP spinning on a shared 2-core
    machine; one intra-op thread avoids it (the numbers do not depend on the thread count)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.mark.parametrize("name", ["kappa_landscape", "method_comparison"])
def test_figures_are_byte_deterministic_in_quick_mode(tmp_path, name, one_thread):
    first = figures.make_figure(name, quick=True, out=tmp_path / "a")
    second = figures.make_figure(name, quick=True, out=tmp_path / "b")
    for p, q in zip(first.paths, second.paths):
        assert p.read_bytes() == q.read_bytes(), f"{p.name} differs between two runs"
    pdf, png, csv_path = first.paths
    assert b"CreationDate" not in pdf.read_bytes() and b"Producer" not in pdf.read_bytes()
    assert b"Software" not in png.read_bytes()
    assert first.figure.get_size_inches()[0] == pytest.approx(figures.COLUMN_WIDTH)
    assert _png_size(png)[0] == round(figures.COLUMN_WIDTH * 300)
    with csv_path.open() as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == first.columns
    assert len(rows) - 1 == len(first.rows)


def test_cli_writes_one_figure_and_rejects_unknown_names(tmp_path, capsys):
    assert figures.main(["--only", "kappa_landscape", "--quick", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "kappa_landscape.csv", "kappa_landscape.pdf", "kappa_landscape.png"]
    with pytest.raises(SystemExit) as exc:
        figures.main(["--only", "nope", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert figures.main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in figures.FIGURES)


# -- registry, notebooks and committed files ----------------------------------------------------------------
def test_every_figure_is_shown_by_its_notebook_and_every_notebook_figure_is_registered():
    sources = {p.stem: p.read_text(encoding="utf-8") for p in NOTEBOOK_SOURCES}
    for name, spec in figures.FIGURES.items():
        assert spec.notebook in sources, f"{name}: notebook {spec.notebook} missing"
        assert f"figures.{name}(" in sources[spec.notebook], f"{name} is not drawn in {spec.notebook}"
        assert getattr(figures, name) is spec.function
    called = {m for text in sources.values() for m in re.findall(r"figures\.([a-z0-9_]+)\(", text)}
    helpers = {"quick_mode", "comparison_shape", "make_figure", "method_style", "predicted_overflow_mean"}
    assert called - helpers <= set(figures.FIGURES), called - helpers - set(figures.FIGURES)


def test_notebooks_draw_only_through_the_figure_functions():
    for p in NOTEBOOK_SOURCES:
        text = p.read_text(encoding="utf-8")
        assert "pyplot" not in text and "plt." not in text and ".savefig(" not in text, p.name


@pytest.mark.parametrize("name", sorted(n for n, s in figures.FIGURES.items() if s.cited))
def test_cited_figures_are_committed_with_their_data(name):
    base = ROOT / "figures"
    for ext in ("pdf", "png", "csv"):
        assert (base / f"{name}.{ext}").is_file(), f"figures/{name}.{ext} missing: run `make figures`"
    assert (base / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    assert b"CreationDate" not in (base / f"{name}.pdf").read_bytes()
    assert _png_size(base / f"{name}.png")[0] == round(figures.COLUMN_WIDTH * 300)
    with (base / f"{name}.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert len(rows) > 1 and all(len(r) == len(rows[0]) for r in rows)


def test_committed_figures_stay_small():
    total = sum(p.stat().st_size for p in (ROOT / "figures").iterdir() if p.is_file())
    assert total < 3_000_000, f"figures/ holds {total} bytes"


# -- the numbers the README cites, recomputed from the committed CSVs ------------------------------------------
def _committed_rows(name: str) -> list[dict]:
    with (ROOT / "figures" / f"{name}.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_readme_numbers_of_predicted_vs_measured_follow_from_its_csv():
    import math

    rows = _committed_rows("predicted_vs_measured")
    assert len(rows) == 864                                   # 2 dists x 4 means x 4 amplitudes x 3 S2 x 9 methods
    ratios = [float(r["rmse_ratio"]) for r in rows if r["rmse_ratio"] != ""]
    assert all(math.isfinite(x) for x in ratios)
    assert len(ratios) == 837
    assert sum(1 / 3 <= x <= 3 for x in ratios) == 828
    compared = [r for r in rows if r["rmse_ratio"] != ""]
    assert all(r["bound_ok"] in ("1", "True") for r in compared)
    assert all(float(r["pred_bound"]) >= float(r["max_abs_err"]) for r in compared)
    assert all(r["overflow_ok"] in ("1", "True") for r in rows)


@pytest.mark.parametrize("method, lo, hi", [("fa_qk", 19, 23), ("fa_q", 72, 77), ("pasa", 410, 475)])
def test_readme_overflow_frontier_follows_from_its_csv(method, lo, hi):
    cells = [r for r in _committed_rows("overflow_frontier")
             if r["kind"] == "measured" and r["dist"] == "uniform" and r["method"] == method]
    assert len(cells) == 4                                    # amplitudes 0.5, 5, 10, 20
    assert all(lo <= float(r["mean_overflow"]) <= hi for r in cells), [r["mean_overflow"] for r in cells]


@pytest.mark.parametrize("name", sorted(n for n, s in figures.FIGURES.items() if s.cited))
def test_committed_csv_header_is_what_the_figure_writes_now(name, one_thread):
    with (ROOT / "figures" / f"{name}.csv").open(newline="") as fh:
        header = tuple(next(csv.reader(fh)))
    if name == "predicted_vs_measured":                       # quick mode still takes ~20 s; the columns are fixed
        columns = figures._PVM_COLUMNS
    else:
        columns = tuple(getattr(figures, f"_data_{name}")(True)[0])
    assert header == columns
