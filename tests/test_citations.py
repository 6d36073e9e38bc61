"""Every citation in the repository resolves: the repository stands alone.

Scans every tracked ``*.py``, ``*.md``, ``*.ipynb`` and ``*.toml`` file (``git ls-files``) and fails on

* a citation ``docs/<file>.md §N`` (or ``§N.M``, and further ``, §K`` / ``and §K`` in the same citation)
  whose file is missing or has no heading whose text starts with that number;
* a mention of a ``*.md`` file that exists neither at the repository root, nor beside the citing file,
  nor under ``docs/``;
* a relative Markdown link ``](path#anchor)`` in ``README.md`` or ``docs/`` whose path does not exist, or
  whose anchor is not a heading of the target (GitHub's heading slugs);
* any mention of the private method notes or of a path outside the repository.
"""

from __future__ import annotations

import re
import subprocess
import sys
import unicodedata
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# spelled in pieces so that this file does not match itself
_FORBIDDEN = ("PASA" + ".md", "../" + "shared", "shared" + "/notes")

_CITATION = re.compile(r"docs/([\w.-]+\.md)((?:\s*(?:,|and|or)?\s*§\s*\d+(?:\.\d+)*)*)")
_SECTION = re.compile(r"§\s*(\d+(?:\.\d+)*)")
_MD_NAME = re.compile(r"(?<![\w./-])((?:[\w.-]+/)*[\w-]+\.md)\b")
_MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)


def _tracked() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "*.py", "*.md", "*.ipynb", "*.toml"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / p for p in out.splitlines() if (ROOT / p).is_file()]


@cache
def _headings(path: Path) -> tuple[str, ...]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    return tuple(m.group(2) for m in _HEADING.finditer(text))


def _section_numbers(path: Path) -> set[str]:
    out = set()
    for h in _headings(path):
        m = re.match(r"(\d+(?:\.\d+)*)\.?\s", h + " ")
        if m:
            out.add(m.group(1))
    return out


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    s = re.sub(r"[`*_]", "", heading).strip().lower()
    s = "".join(ch for ch in s if ch in " -" or unicodedata.category(ch)[0] in "LN")
    return s.replace(" ", "-")


def _resolves(name: str, source: Path) -> bool:
    return any((base / name).is_file() for base in (ROOT, source.parent, ROOT / "docs"))


def _problems(path: Path) -> list[str]:
    rel = path.relative_to(ROOT)
    text = path.read_text(encoding="utf-8")
    found = []
    for bad in _FORBIDDEN:
        if bad in text:
            found.append(f"{rel}: mentions {bad!r} (outside the repository)")
    for m in _CITATION.finditer(text):
        doc = ROOT / "docs" / m.group(1)
        if not doc.is_file():
            found.append(f"{rel}: cites docs/{m.group(1)}, which does not exist")
            continue
        numbers = _section_numbers(doc)
        for sec in _SECTION.findall(m.group(2)):
            if sec not in numbers:
                found.append(f"{rel}: cites docs/{m.group(1)} §{sec}, which has no such section")
    for m in _MD_NAME.finditer(text):
        name = m.group(1)
        if not _resolves(name, path):
            found.append(f"{rel}: mentions {name}, which is not in the repository")
    if path.suffix == ".md" and (rel.parts[0] == "docs" or rel.name == "README.md"):
        for m in _MD_LINK.finditer(text):
            target = m.group(1)
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:, doi:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part) if file_part else path
            if not dest.exists():
                found.append(f"{rel}: link to {target}, which does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in {_slug(h) for h in _headings(dest)}:
                found.append(f"{rel}: link to {target}, whose anchor is not a heading of {file_part or rel}")
    return found


def test_every_citation_resolves():
    # this file holds the checker's own counter-examples (test below)
    problems = [p for f in _tracked() if f != Path(__file__).resolve() for p in _problems(f)]
    assert not problems, f"{len(problems)} unresolved citations:\n" + "\n".join(problems)


def test_the_checker_catches_what_it_must(tmp_path, monkeypatch):
    """The rules above fail where they should (a checker that cannot fail proves nothing)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\n## 1. One\n\n### 1.2 Sub\n\n```\n## 7. not a heading\n```\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    _headings.cache_clear()
    good = tmp_path / "good.py"
    good.write_text("see docs/a.md §1 and docs/a.md §1.2, §1; [x](docs/a.md#12-sub)\n")
    assert _problems(good) == []
    for bad in (
        "docs/a.md §2",
        "docs/a.md §1.3",
        "docs/a.md §7",
        "docs/b.md §1",
        "see " + _FORBIDDEN[0],
        "NOTES.md",
        "docs/a.md §1, §3",
    ):
        f = tmp_path / "bad.py"
        f.write_text(bad + "\n")
        assert _problems(f), bad
    readme = tmp_path / "README.md"
    for bad in ("[x](docs/a.md#2-two)", "[x](docs/missing.md)"):
        readme.write_text(bad + "\n")
        assert _problems(readme), bad
    _headings.cache_clear()
