"""The figure pipeline (:mod:`pasa_npu.figures`): determinism, style, registry, CLI, committed files.

The figures' numbers are checked where they are shown: each notebook asserts the claims it prints
(tests/test_notebooks.py runs them). Here: the same command gives the same bytes, every figure has
one fixed style per method at single-column width, every figure function is a plain function with a
typed summary, the registry and the notebooks agree, a figure redrawn from its CSV gives the same
data, and the figures the README cites are committed with the data behind them and their set-up.
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
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
    drawn = set(figures.COMPARISON_METHODS) | set(figures.OVERFLOW_METHODS) | set(figures.RESONANCE_METHODS)
    styles = {m: figures.method_style(m) for m in drawn}
    colours = [s.color for s in styles.values()]
    assert len(set(colours)) == len(colours), sorted(colours)
    labels = [s.label for s in styles.values()]
    assert len(set(labels)) == len(labels)


def test_method_colours_come_from_the_colour_blind_safe_palette():
    # plus three of P. Tol's colour-blind-safe "muted" hues (indigo, wine, green)
    allowed = set(figures.OKABE_ITO.values()) | {
        figures.GREY,
        figures.DARK_GREY,
        "#332288",
        "#882255",
        "#117733",
    }
    assert {s.color for s in figures.METHOD_STYLES.values()} <= allowed
    # the eight Okabe–Ito hues (M. Okabe and K. Ito, Color Universal Design, 2008)
    assert sorted(figures.OKABE_ITO.values()) == sorted(
        ["#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"]
    )


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="method"):
        figures.method_style("fa_nope")
    with pytest.raises(TypeError, match="method"):
        figures.method_style(3)
    with pytest.raises(ValueError, match="unknown figure"):
        figures.make_figure("nope")
    with pytest.raises(TypeError, match="quick"):
        figures.quick_mode("yes")


@pytest.mark.parametrize(
    "value, expected", [("", False), ("0", False), ("no", False), ("1", True), ("yes", True)]
)
def test_quick_mode_reads_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("PASA_QUICK", value)
    assert figures.quick_mode() is expected
    assert figures.quick_mode(False) is False


def test_importing_the_module_does_not_load_matplotlib():
    code = "import sys, pasa_npu.figures; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- structure: plain functions, typed summaries, no hidden imports ---------------------------------------
NOTEBOOK_MODULES = {
    "01_shifting_scheme": "scheme",
    "02_optimal_beta": "optimal_beta",
    "03_overflow_resonance": "overflow",
    "04_predicted_vs_measured": "predicted",
    "05_method_comparison": "comparison",
    "06_beyond_pasa": "beyond",
}


@pytest.mark.parametrize("name", list(figures.FIGURES))
def test_every_figure_is_a_plain_function_of_its_notebooks_module(name):
    spec = figures.FIGURES[name]
    fn = spec.function
    assert inspect.isfunction(fn) and fn.__name__ == name and fn.__code__.co_name == name
    assert fn.__module__ == f"pasa_npu.figures.{NOTEBOOK_MODULES[spec.notebook]}", fn.__module__
    # go-to-definition lands on a `def <name>(` line of that module
    lines, _ = inspect.getsourcelines(fn)
    assert lines[0].startswith(f"def {name}("), lines[0]
    # a figure whose data is a sweep of kernel runs also takes data= (where and how its sweep runs)
    expected = {"quick", "out", "from_csv"} | ({"data"} if spec.sweep else set())
    assert set(inspect.signature(fn).parameters) == expected
    assert "FigureResult[" in str(inspect.signature(fn).return_annotation)


def test_no_function_level_imports_except_matplotlib():
    import ast

    bad = []
    for path in sorted((ROOT / "pasa_npu" / "figures").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                bad += [
                    f"{path.name}:{node.lineno}: {n}"
                    for n in names
                    if n.split(".")[0] not in ("matplotlib", "cycler")
                ]
    assert not bad, bad


def test_output_folder_is_found_from_the_package_not_the_working_directory(tmp_path, monkeypatch):
    assert figures.FIGURES_DIR == ROOT / "figures"
    monkeypatch.chdir(tmp_path)
    assert figures.FIGURES_DIR == ROOT / "figures"
    res = figures.kappa_landscape(quick=True)  # no out: nothing written anywhere
    assert res.paths == () and list(tmp_path.iterdir()) == []


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
    assert dataclasses.is_dataclass(first.summary) and not isinstance(first.summary, type)
    setup, columns, rows = figures.read_csv(csv_path)
    assert columns == first.columns and len(rows) == len(first.rows)
    assert setup["figure"] == name and setup["mode"] == "quick" and setup == first.setup
    assert csv_path.read_text().startswith(f"# figure: {name}\n# mode: quick\n")


@pytest.mark.parametrize("name", ["kappa_landscape", "method_comparison", "overflow_frontier"])
def test_a_figure_redrawn_from_its_csv_has_the_same_data_and_summary(tmp_path, name, one_thread):
    first = figures.make_figure(name, quick=True, out=tmp_path / "a")
    again = figures.make_figure(name, from_csv=tmp_path / "a", out=tmp_path / "b")
    for ext in ("csv", "png", "pdf"):  # the drawing reads the rows as the CSV holds them
        assert (tmp_path / "a" / f"{name}.{ext}").read_bytes() == (
            tmp_path / "b" / f"{name}.{ext}"
        ).read_bytes(), ext
    assert again.quick is True and again.setup == first.setup
    assert repr(again.rows) == repr(first.rows)  # repr: NaN (an overflowed run) equals itself
    assert repr(dataclasses.asdict(again.summary)) == repr(dataclasses.asdict(first.summary))


def test_read_csv_skips_the_set_up_and_types_the_columns(tmp_path):
    path = figures.write_csv(
        tmp_path / "t.csv",
        ("kind", "n", "x", "stage"),
        [dict(kind="a", n=3, x=0.1, stage=""), dict(kind="b", n=4, x=None, stage="scores")],
        {"figure": "t", "shape": "S1 5,  S2 7"},
    )
    assert path.read_text().splitlines()[:3] == ["# figure: t", "# shape: S1 5, S2 7", "kind,n,x,stage"]
    setup, columns, rows = figures.read_csv(path)
    assert setup == {"figure": "t", "shape": "S1 5, S2 7"} and columns == ("kind", "n", "x", "stage")
    assert rows == [dict(kind="a", n=3, x=0.1, stage=""), dict(kind="b", n=4, x=None, stage="scores")]
    with pytest.raises(ValueError, match="from_csv"):
        figures.kappa_landscape(from_csv=path)
    with pytest.raises(ValueError, match="from_csv"):
        figures.kappa_landscape(from_csv=tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="quick"):
        figures.kappa_landscape(quick=True, from_csv=path)


def test_cli_writes_one_figure_and_rejects_unknown_names(tmp_path, capsys):
    assert figures.main(["--only", "kappa_landscape", "--quick", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "kappa_landscape.csv",
        "kappa_landscape.pdf",
        "kappa_landscape.png",
    ]
    with pytest.raises(SystemExit) as exc:
        figures.main(["--only", "nope", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert figures.main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in figures.FIGURES)
    again = tmp_path / "again"
    assert figures.main(["--only", "kappa_landscape", "--from-csv", str(tmp_path), "--out", str(again)]) == 0
    assert (again / "kappa_landscape.csv").read_bytes() == (tmp_path / "kappa_landscape.csv").read_bytes()


def test_python_m_runs_the_command_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pasa_npu.figures", "--list"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    assert "kappa_landscape" in out and list(tmp_path.iterdir()) == []


# -- registry, notebooks and committed files ----------------------------------------------------------------
def test_every_figure_is_shown_by_its_notebook_and_every_notebook_figure_is_registered():
    sources = {p.stem: p.read_text(encoding="utf-8") for p in NOTEBOOK_SOURCES}
    for name, spec in figures.FIGURES.items():
        assert spec.notebook in sources, f"{name}: notebook {spec.notebook} missing"
        assert f"figures.{name}(" in sources[spec.notebook], f"{name} is not drawn in {spec.notebook}"
        assert getattr(figures, name) is spec.function
    called = {m for text in sources.values() for m in re.findall(r"figures\.([a-z0-9_]+)\(", text)}
    helpers = {
        "quick_mode",
        "comparison_shape",
        "make_figure",
        "method_style",
        "predicted_overflow_mean",
        "read_csv",
    }
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
    setup, _, rows = figures.read_csv(base / f"{name}.csv")
    assert rows and setup["figure"] == name and setup["mode"] == "full"
    # the data set-up: what was computed on which data, and which methods
    assert len(setup) >= 5, setup
    if name != "kappa_landscape":  # κ depends on the stored constants only
        assert {"data", "shape", "methods"} <= set(setup), setup
        assert "seed" in setup["data"] and "d 128" in setup["shape"], setup
    text = (base / f"{name}.csv").read_text()
    assert all(
        len(r) == len(next(csv.reader(text.splitlines()[len(setup) :])))
        for r in csv.reader(text.splitlines()[len(setup) :])
    )


@pytest.mark.parametrize("name", sorted(n for n, s in figures.FIGURES.items() if s.cited))
def test_figures_readme_gives_the_set_up_and_a_caption_of_every_cited_figure(name):
    text = (ROOT / "figures" / "README.md").read_text(encoding="utf-8")
    section = text.split(f"### `{name}`", 1)
    assert len(section) == 2, f"figures/README.md has no section for {name}"
    body = section[1].split("\n### ", 1)[0]
    assert "**Set-up.**" in body and "**Caption.**" in body, name
    caption = body.split("**Caption.**", 1)[1]
    assert any(w in caption for w in ("measured", "measurement")) or name == "kappa_landscape", name


def test_committed_figures_stay_small():
    total = sum(p.stat().st_size for p in (ROOT / "figures").iterdir() if p.is_file())
    assert total < 3_000_000, f"figures/ holds {total} bytes"


# -- the numbers the README cites, recomputed from the committed CSVs ------------------------------------------
def _committed_rows(name: str) -> list[dict]:
    """The committed CSV's rows as text (the ``# key: value`` set-up lines skipped)."""
    with (ROOT / "figures" / f"{name}.csv").open(newline="") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


def _beyond_cell(rows: list[dict], panel: str, method: str, mma: str) -> str:
    """One cell of the README's "Beyond PASA" table: max / median of the ratio to fa_hybrid over the
    finite cells (integers from 100 up, else 3 significant digits), ", inf k" for k cells with inf/NaN."""
    import statistics

    def g(x: float) -> str:
        return f"{x:.0f}" if x >= 100 else f"{x:.3g}"

    sel = [r for r in rows if (r["panel"], r["method"], r["mma"]) == (panel, method, mma)]
    assert len(sel) == 32, (panel, method, mma, len(sel))
    xs = [float(r["ratio_to_fa_hybrid"]) for r in sel if r["ratio_to_fa_hybrid"] != ""]
    nf = sum(1 for r in sel if r["nonfinite"] != "0")
    return f"{g(max(xs))} / {g(statistics.median(xs))}" + (f", inf {nf}" if nf else "")


def test_readme_beyond_pasa_table_follows_from_its_csv():
    rows = _committed_rows("beyond_pasa")
    text = (
        (ROOT / "README.md").read_text(encoding="utf-8").split("### Beyond PASA", 1)[1].split("\n## ", 1)[0]
    )
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| `")}
    for method, label in (
        ("pasa:npu_fp16", "`pasa:npu_fp16`"),
        ("pasa:fp16_keymean", "`pasa:fp16_keymean`"),
        ("pasa:fp16_accurate", "`pasa:fp16_accurate` (docs/precision.md §6)"),
        ("fa_fp16", "`fa_qk` (fp16 flash attention)"),
        ("fa_hybrid", "`fa_hybrid`"),
    ):
        cells = [c.strip().strip("*") for c in lines[label].split("|")[2:6]]
        assert cells[0] == _beyond_cell(rows, "grid", method, "wide"), (method, cells)
        if method == "pasa:fp16_keymean":
            assert cells[1:] == ["–", "–", "–"], cells
        else:
            assert cells[1] == _beyond_cell(rows, "mma", method, "wide"), (method, cells)
            assert cells[2] == _beyond_cell(rows, "mma", method, "fp16"), (method, cells)
            assert cells[3] == _beyond_cell(rows, "mma", method, "fp22"), (method, cells)


def test_readme_numbers_of_predicted_vs_measured_follow_from_its_csv():
    """The README's table of the four products is what pvm_readme_table computes from the committed
    CSV (numbers read, not retyped), and the CSV's own columns are consistent with its raw values."""
    import math

    from pasa_npu.figures import predicted

    setup, _, rows = figures.read_csv(ROOT / "figures" / "predicted_vs_measured.csv")
    assert len(rows) == 640  # 2 dists x 4 means x 4 amplitudes x 2 S2 x 10 methods
    assert "S1 16 (a row sample" in setup["shape"], setup["shape"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- pvm-table -->\n", 1)[1].split("\n<!-- /pvm-table -->", 1)[0]
    assert table == predicted.pvm_readme_table(rows), "README table differs from the committed CSV's"
    # the hit columns follow from the raw values (theorems: no exception on the committed data)
    for r in rows:
        for key, col in (("bound", "pred_bound"), ("prob", "pred_prob"), ("a_priori", "pred_a_priori")):
            if r[f"{key}_ok"] is not None:
                assert r[f"{key}_ok"] == (r[col] >= r["max_abs_err"]) is True, (key, r)
                assert r[f"{key}_below_cap"] == (r[col] < r["hull_cap"]), (key, r)
        if r["rmse_ratio"] is not None:
            assert math.isclose(r["rmse_ratio"], r["pred_rmse"] / r["rmse"], rel_tol=1e-8)
        assert r["overflow_ok"]
        assert (r["pred_bound"] is None) == (r["theorem"] == "none")


@pytest.mark.parametrize("method, lo, hi", [("fa_qk", 19, 23), ("fa_q", 72, 77), ("pasa", 410, 475)])
def test_readme_overflow_frontier_follows_from_its_csv(method, lo, hi):
    cells = [
        r
        for r in _committed_rows("overflow_frontier")
        if r["kind"] == "measured" and r["dist"] == "uniform" and r["method"] == method
    ]
    assert len(cells) == 4  # amplitudes 0.5, 5, 10, 20
    assert all(lo <= float(r["mean_overflow"]) <= hi for r in cells), [r["mean_overflow"] for r in cells]


@pytest.mark.parametrize("name", sorted(n for n, s in figures.FIGURES.items() if s.cited))
def test_committed_csv_is_what_the_figure_reads_now(name, tmp_path):
    # from_csv checks the columns against the figure's own and redraws from the committed rows alone
    res = figures.make_figure(name, from_csv=ROOT / "figures", out=tmp_path)
    assert res.quick is False
    assert (tmp_path / f"{name}.csv").read_bytes() == (ROOT / "figures" / f"{name}.csv").read_bytes()
    # (the PNG and PDF are compared with the committed ones only through their size: their bytes also
    # depend on the matplotlib and FreeType versions)
    assert _png_size(tmp_path / f"{name}.png") == _png_size(ROOT / "figures" / f"{name}.png")


def test_overflow_frontier_predictions_cover_the_measured_amplitudes_only():
    rows = _committed_rows("overflow_frontier")
    measured = {float(r["amplitude"]) for r in rows if r["kind"] == "measured"}
    predicted = {float(r["amplitude"]) for r in rows if r["kind"] == "predicted"}
    assert (
        measured <= predicted and min(predicted) == min(measured) == 0.5 and max(predicted) == max(measured)
    )
    stages = {r["stage"] for r in rows if r["kind"] == "predicted" and r["mean_overflow"] != ""}
    assert stages == {"scores"}, stages  # one mechanism along every drawn band


def test_at_zero_amplitude_the_envelope_names_the_script_presets_accumulator():
    # constant inputs: the softmax is exactly uniform and the script preset's unnormalised fp16 O sums
    # S2 copies of μ: it reaches 65520 at μ = 65520 / S2; the reason A = 0 is not drawn with the bands
    got, stage = figures.predicted_overflow_mean("pasa:script", "uniform", 0.0, seq_q=1407, seq_kv=1407)
    assert stage == "accumulator" and got == pytest.approx(65520 / 1407, rel=1.1e-3)
    assert (
        figures.predicted_overflow_mean("pasa:script", "uniform", 0.5, seq_q=1407, seq_kv=1407)[1] == "scores"
    )
