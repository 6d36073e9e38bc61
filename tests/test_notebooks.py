"""The notebooks: committed without outputs, in sync with their py:percent sources, and executed.

Every ``notebooks/NN_*.ipynb`` is executed with nbclient in quick mode (kernel ``python3``, a
per-cell timeout); any error fails the test. Quick mode is switched inside the notebook: its first
code cell, tagged ``parameters``, sets ``QUICK`` and ``SAVE``; the committed defaults are the safe
ones (``QUICK = True``, ``SAVE = False``: opening and running a notebook writes nothing), and the
harness overrides that cell with the same values explicitly, with ``PASA_QUICK`` unset and a working
directory outside the repository (the notebooks find ``figures/`` from the package). The notebooks
contain their own checks (``assert`` on the numbers they print), so an execution that passes also
means every claim they state held.
"""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
#: Per-cell limit in seconds; the slowest quick-mode cell takes a few seconds on 2 cores.
CELL_TIMEOUT = 300


def _ids(paths):
    return [p.stem for p in paths]


EXPECTED = [
    "01_shifting_scheme",
    "02_optimal_beta",
    "03_overflow_resonance",
    "04_predicted_vs_measured",
    "05_method_comparison",
    "06_beyond_pasa",
    "07_real_models",
]


def test_the_numbered_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_committed_notebook_has_no_outputs_or_execution_counts(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    bad = [
        (i, "outputs" if cell.get("outputs") else "execution_count")
        for i, cell in enumerate(nb["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not bad, f"{path.name}: cells with outputs or execution counts (index, what): {bad}; clear them"
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3", (
        "kernelspec must be the generic python3"
    )
    assert "widgets" not in nb["metadata"], "widget state is an output"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_matches_its_py_percent_source(path):
    import jupytext
    import nbformat

    source = path.with_suffix(".py")
    assert source.exists(), f"{source.name} missing: the notebooks are paired with py:percent files"
    want = [(c.cell_type, c.source) for c in jupytext.read(source).cells]
    got = [(c.cell_type, c.source) for c in nbformat.read(path, as_version=4).cells]
    diff = [i for i, (a, b) in enumerate(zip(want, got)) if a != b]
    assert len(want) == len(got) and not diff, (
        f"{path.name} and {source.name} differ (cells {diff or 'count'}): run "
        f"`jupytext --sync notebooks/{source.name}`"
    )


#: What the harness puts in place of each notebook's parameters cell.
QUICK_PARAMETERS = "QUICK = True\nSAVE = False\n"


def _parameters_cell(nb):
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and "parameters" in code[0].metadata.get("tags", []), (
        "the first code cell must be tagged parameters"
    )
    return code[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_first_code_cell_switches_quick_mode_and_saving_with_safe_defaults(path):
    import nbformat

    cell = _parameters_cell(nbformat.read(path, as_version=4))
    values = {}
    for node in ast.parse(cell.source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, ast.dump(node)
        values[node.targets[0].id] = ast.literal_eval(node.value)
    # notebooks whose figures run sweeps also name where (docs/sweeps.md, "Figures"): a temporary folder
    # and the committed specs by default
    sweeps = {"SWEEP_DATA": None, "SWEEP_SPECS": {}}
    assert values in ({"QUICK": True, "SAVE": False}, {"QUICK": True, "SAVE": False} | sweeps), values
    text = path.with_suffix(".py").read_text(encoding="utf-8")
    assert "PASA_QUICK" not in text and "quick_mode(" not in text and "../figures" not in text


def _snapshot() -> dict[str, float]:
    files = [
        p
        for d in (NOTEBOOK_DIR, ROOT / "figures")
        for p in d.rglob("*")
        if p.is_file() and ".ipynb_checkpoints" not in p.parts
    ]
    return {str(p): p.stat().st_mtime_ns for p in files}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_executes_in_quick_mode(path, monkeypatch, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.delenv("PASA_QUICK", raising=False)  # quick mode comes from the notebook's own cell
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    # one intra-op thread in the kernel: quick mode is many small tensor operations, which slow down
    # badly from OpenMP spinning when other processes share the two cores (results do not change)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    cell = _parameters_cell(nb)
    cell.source = QUICK_PARAMETERS + (
        "SWEEP_DATA = None\nSWEEP_SPECS = {}\n" if "SWEEP_DATA" in cell.source else ""
    )
    before = _snapshot()
    t0 = time.perf_counter()
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    seconds = time.perf_counter() - t0
    errors = [
        (i, o.get("ename"), o.get("evalue"))
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, errors
    print(f"{path.name}: executed in quick mode in {seconds:.1f} s")
    assert _snapshot() == before, "a quick-mode run must not write into notebooks/ or figures/"
    assert list(tmp_path.iterdir()) == [], "a run with SAVE = False must not write into its working directory"
