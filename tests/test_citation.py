"""Citation metadata: CITATION.cff is valid YAML with the fields a citation needs, agrees with the
package version, names no placeholder; the README's BibTeX entries are well formed and agree."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import tomllib
import yaml

import pasa_npu

ROOT = Path(__file__).resolve().parents[1]
CFF = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
README = (ROOT / "README.md").read_text(encoding="utf-8")
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

_PLACEHOLDER = re.compile(
    r"\b(todo|tbd|fixme|placeholder|your name|lastname|firstname|example\.(com|org)|"
    r"contributors|john doe|jane doe|et al)\b",
    re.I,
)


def _strings(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from _strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from _strings(v)
    elif isinstance(x, str):
        yield x


def test_cff_has_what_a_citation_needs():
    assert CFF["cff-version"] == "1.2.0"
    for key in ("message", "title", "version", "date-released", "authors", "license", "preferred-citation"):
        assert CFF.get(key), key
    assert str(CFF["version"]) == VERSION == pasa_npu.__version__
    released = CFF["date-released"]
    released = released if isinstance(released, datetime.date) else datetime.date.fromisoformat(str(released))
    assert released == datetime.date(2026, 11, 30)
    for person in CFF["authors"]:
        assert person.get("name") or (person.get("family-names") and person.get("given-names")), person


def test_cff_names_no_placeholder_and_no_invented_repository():
    for s in _strings(CFF):
        assert not _PLACEHOLDER.search(s), s
    # the package has no public repository: no repository or url of its own may appear
    for key in ("repository-code", "repository", "url", "repository-artifact"):
        assert key not in CFF, key


def test_cff_cites_the_paper():
    paper = CFF["preferred-citation"]
    assert paper["type"] == "article"
    assert paper["title"].startswith("Online Pseudo-average Shifting Attention (PASA)")
    assert paper["year"] == 2025 and paper["url"] == "https://arxiv.org/abs/2503.01873"
    assert {
        "type": "other",
        "value": "arXiv:2503.01873",
        "description": "arXiv preprint identifier",
    } in paper["identifiers"]
    names = [a["family-names"] for a in paper["authors"]]
    assert names[0] == "Cheng" and len(names) == 13


def _bibtex_entries() -> list[str]:
    blocks = re.findall(r"^```bibtex\n(.*?)^```", README, re.M | re.S)
    assert len(blocks) == 1, "the README has one BibTeX block"
    text = blocks[0]
    entries, depth, start = [], 0, None
    for i, ch in enumerate(text):
        if ch == "{":
            if depth == 0:
                start = text.rfind("@", 0, i)
            depth += 1
        elif ch == "}":
            depth -= 1
            assert depth >= 0, "unbalanced braces in the README's BibTeX"
            if depth == 0:
                entries.append(text[start : i + 1])
    assert depth == 0, "unbalanced braces in the README's BibTeX"
    return entries


def _fields(entry: str) -> tuple[str, str, dict[str, str]]:
    m = re.match(r"@(\w+)\{([^,\s]+),", entry)
    assert m, entry[:60]
    fields = dict(re.findall(r"^\s*(\w+)\s*=\s*(.+?),?\s*$", entry[m.end() :], re.M))
    return m.group(1).lower(), m.group(2), fields


def test_readme_bibtex_is_balanced_and_agrees_with_the_cff():
    entries = [_fields(e) for e in _bibtex_entries()]
    kinds = {kind: (key, f) for kind, key, f in entries}
    assert set(kinds) == {"software", "misc"}
    assert len({key for _, key, _ in entries}) == 2
    _, sw = kinds["software"]
    assert sw["version"].strip("{}") == VERSION
    assert "2026-11-30" in sw["note"] and sw["year"].strip("{}") == "2026"
    assert "maintainers" in sw["author"]
    _, paper = kinds["misc"]
    assert paper["eprint"].strip("{}") == "2503.01873" and paper["archivePrefix"].strip("{}") == "arXiv"
    assert paper["author"].startswith("{Cheng, Long and Liao, Qichen")
    cff_authors = [f"{a['family-names']}, {a['given-names']}" for a in CFF["preferred-citation"]["authors"]]
    block = _bibtex_entries()[1]
    author_text = re.sub(r"\s+", " ", block[block.index("author") : block.index("year")])
    for a in cff_authors:
        assert a in author_text, a


def test_readme_links_the_paper_and_the_reference_implementation():
    assert "https://arxiv.org/abs/2503.01873" in README
    assert "https://github.com/chenglong92/PASA" in README
    assert "CITATION.cff" in README
