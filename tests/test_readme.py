"""The README's code is executed, so that it cannot rot.

Conventions (written for README authors):

* Every fenced ``python`` block runs, in order, in one fresh interpreter with a shared namespace
  (later blocks may use names of earlier ones), from a temporary working directory.
* A fenced ``text`` block preceded by ``<!-- readme-test: output -->`` is the output of the python
  block before it: every non-empty line of it must occur in that block's standard output.
* In fenced ``bash`` blocks, the lines that start with ``pasa-alpha`` or ``pasa-verify`` run (with
  the package's entry points on PATH, in a temporary directory) and must exit with status 0 and
  write nothing unless they name ``--out``; other lines (``make ...``) are not run here, the test
  suite itself is what ``make test`` runs.
* ``<!-- readme-test: skip (reason) -->`` right before a block skips it; every such marker must give
  a reason. Keep runnable blocks cheap (seconds).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
_MARK = re.compile(r"<!--\s*readme-test:\s*(\w+)\s*(?:\((.*?)\))?\s*-->\s*$")
_RUNNABLE = ("pasa-alpha", "pasa-verify")


def _blocks() -> list[dict]:
    out = []
    for m in _FENCE.finditer(README):
        before = README[: m.start()].rstrip().splitlines()
        mark = _MARK.search(before[-1]) if before else None
        out.append(
            dict(
                lang=m.group(1),
                code=m.group(2),
                line=README[: m.start()].count("\n") + 1,
                mark=mark.group(1) if mark else None,
                reason=mark.group(2) if mark else None,
            )
        )
    return out


BLOCKS = _blocks()


def test_markers_are_known_and_skips_give_a_reason():
    marks = re.findall(r"<!--\s*readme-test:[^>]*-->", README)
    assert marks, "the README has no readme-test markers"
    for b in BLOCKS:
        if b["mark"] is not None:
            assert b["mark"] in ("skip", "output"), b
            if b["mark"] == "skip":
                assert b["reason"], f"README line {b['line']}: a skip marker needs a reason"
            if b["mark"] == "output":
                assert b["lang"] == "text", f"README line {b['line']}: an output block must be ```text"
    assert len(marks) == sum(b["mark"] is not None for b in BLOCKS), "a marker is not right before a block"


def _python_with_outputs() -> list[tuple[dict, dict | None]]:
    pairs = []
    for i, b in enumerate(BLOCKS):
        if b["lang"] == "python" and b["mark"] != "skip":
            nxt = BLOCKS[i + 1] if i + 1 < len(BLOCKS) else None
            pairs.append((b, nxt if nxt is not None and nxt["mark"] == "output" else None))
    return pairs


def test_python_blocks_run_and_print_what_the_readme_shows(tmp_path):
    pairs = _python_with_outputs()
    assert len(pairs) >= 5
    script = ["import torch", "torch.set_num_threads(min(2, torch.get_num_threads()))", "ns = {}"]
    for i, (b, _) in enumerate(pairs):
        script.append(f"print('@@README-BLOCK {i}@@', flush=True)")
        script.append(f"exec(compile({b['code']!r}, 'README.md line {b['line']}', 'exec'), ns)")
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    res = subprocess.run(
        [sys.executable, "-W", "error", "-c", "\n".join(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, f"a README python block failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    outputs = re.split(r"^@@README-BLOCK \d+@@\n", res.stdout, flags=re.M)[1:]
    assert len(outputs) == len(pairs)
    for (b, expected), got in zip(pairs, outputs):
        if expected is None:
            continue
        for want in (ln.strip() for ln in expected["code"].splitlines()):
            if want:
                assert want in got, (
                    f"README line {expected['line']}: expected output line\n  {want}\n"
                    f"not printed by the block at line {b['line']}; it printed:\n{textwrap.indent(got, '  ')}"
                )
    assert list(tmp_path.iterdir()) == [], "README python blocks must not write files"


def _commands() -> list[tuple[int, str]]:
    cmds = []
    for b in BLOCKS:
        if b["lang"] in ("bash", "console", "sh") and b["mark"] != "skip":
            for ln in b["code"].splitlines():
                ln = re.split(r"\s+#", ln.strip().removeprefix("$ "))[0].strip()  # drop trailing comments
                if ln.startswith(_RUNNABLE):
                    cmds.append((b["line"], ln))
    return cmds


COMMANDS = _commands()


def test_there_are_runnable_commands():
    names = {c.split()[0] for _, c in COMMANDS}
    assert names == {"pasa-alpha", "pasa-verify"}, COMMANDS


@pytest.mark.parametrize("line, cmd", COMMANDS, ids=[c for _, c in COMMANDS])
def test_readme_command_runs(line, cmd, tmp_path):
    bindir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1")
    res = subprocess.run(
        ["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, f"README line {line}: `{cmd}` exited {res.returncode}\n{res.stderr[-2000:]}"
    if "--out" not in cmd:
        assert list(tmp_path.iterdir()) == [], f"README line {line}: `{cmd}` wrote files without --out"


def test_setup_commands_and_sections_are_there():
    assert "make demo" in README and "make test" in README
    for heading in (
        "## Set-up",
        "## Which β do I use?",
        "## Quick start",
        "## Running on a GPU or an Ascend NPU",
        "## Routing a model's attention through PASA",
        "## Architecture",
        "## Citing",
    ):
        assert heading in README, heading
    # the β box comes before the quick start, which comes before everything else
    assert (
        README.index("## Which β do I use?")
        < README.index("## Quick start")
        < README.index("## Architecture")
    )


def test_the_three_fp16_betas_are_what_the_theory_computes():
    """The values in the β box, recomputed here (the box's text must match the exact solver)."""
    import pasa_theory as pt

    box = README[README.index("## Which β do I use?") : README.index("## Quick start")]
    published = pt.optimal_beta("fp16", 128, start="31/32")
    selected = pt.optimal_beta("fp16", 128)
    folded = pt.optimal_beta("fp16", 128, scale="1/sqrt(128)")
    assert f"{float(published.beta):.7f}" == "0.9689939" and "0.9689939059" in box
    assert f"{float(selected.beta):.10f}" in box and f"{float(folded.beta):.10f}" in box
    from pasa_npu.kernel import shift_parameters

    assert f"{shift_parameters('npu_fp16', head_dim=128).beta:.10f}" == f"{float(folded.beta):.10f}"


_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("target", sorted({t for t in _LINK.findall(README) if "://" not in t}))
def test_relative_links_resolve(target):
    path = ROOT / target
    if not path.exists() and target in (
        "docs/method.md",
        "docs/precision.md",
        "docs/error-model.md",
        "docs/design.md",
    ):
        pytest.skip(f"{target} is written with the method documentation; checked once it is in the tree")
    assert path.exists(), f"README links to {target}, which does not exist"


def test_no_device_argument_claim():
    """pasa_attention has no device argument; the README must not say an explicit device= wins."""
    import inspect

    from pasa_npu import pasa_attention

    assert "device" not in inspect.signature(pasa_attention).parameters
    assert "explicit `device=` wins" not in README
