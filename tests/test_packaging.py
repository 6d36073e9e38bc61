"""The project's set-up contract: one distribution, pinned dev environment, conda file in sync."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _norm(req: str) -> tuple[str, str]:
    r = Requirement(req)
    return r.name.lower().replace("_", "-"), str(r.specifier)


def test_environment_yml_agrees_with_pyproject():
    proj = _pyproject()
    want = {_norm(r) for r in proj["dependencies"]}
    want |= {_norm(r) for r in proj["optional-dependencies"]["dev"]}
    want |= {_norm(r) for r in proj["optional-dependencies"]["notebooks"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    got = {_norm(r) for r in pip if not r.startswith("-e")}
    assert got == want, f"only in environment.yml: {got - want}; only in pyproject.toml: {want - got}"
    assert "-e ." in pip
    assert not any("torch_npu" in r or "torch-npu" in r for r in pip)


def test_dev_pins_satisfy_the_library_ranges():
    proj = _pyproject()
    ranges = {
        Requirement(r).name.lower().replace("_", "-"): Requirement(r).specifier
        for r in proj["dependencies"]
        + proj["optional-dependencies"]["dev"]
        + proj["optional-dependencies"]["notebooks"]
    }
    pins = {}
    for line in (ROOT / "requirements-dev.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    assert pins["torch"] == "2.13.0"
    for name, spec in ranges.items():
        if name in pins:
            assert spec.contains(pins[name]), f"{name}=={pins[name]} violates {spec}"


def test_two_readme_commands_and_ci():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_entry_points_exist():
    scripts = _pyproject()["scripts"]
    assert scripts == {
        "pasa-verify": "pasa_npu.cli:main",
        "pasa-alpha": "pasa_theory.cli:main",
        "pasa-beta": "pasa_theory.cli:main",
        "pasa-sweep": "pasa_npu.sweep:main",
    }


def test_python_m_entry_points_answer_help():
    for mod in ("pasa_npu", "pasa_theory"):
        res = subprocess.run([sys.executable, "-m", mod, "--help"], capture_output=True, text=True, cwd=ROOT)
        assert res.returncode == 0, res.stderr
        assert "usage" in res.stdout.lower()
