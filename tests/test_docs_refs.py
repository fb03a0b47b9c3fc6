"""Every citation of the reference documents resolves inside the repository (docs/).

Code, README, notebooks and configs cite ``docs/nfnet_reference.md §13.3``-style references (the
bare ``nfnet_reference.md §13.3`` form is accepted too). This test walks the repository's text files
and checks that

* each cited document exists under ``docs/``;
* each cited section (``§N``, ``§N.N``, lists and ranges such as ``§1.1 and §2.1`` or ``§1-§3``)
  is a numbered heading of that document, and a quoted heading name
  (``platform_facts.md, "Import order crash"``) is a heading of it;
* no citation points outside the repository (a path prefix other than ``docs/``, or the shared
  spec folder the documents were summarised from);
* bare ``§N`` references exist in the document they belong to (their own file inside ``docs/``;
  elsewhere, ``nfnet_reference.md`` or ``checkpoints.md``).

Standard library + pytest only; no project imports.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
DOC_NAMES = ("nfnet_reference.md", "checkpoints.md", "platform_facts.md")
# Documents whose bare "§N" references are resolved outside docs/ (the code's usual "§14.6").
BARE_SECTION_DOCS = ("nfnet_reference.md", "checkpoints.md")

SUFFIXES = {".py", ".md", ".ipynb", ".cfg", ".yaml", ".yml", ".toml"}
SKIP_DIRS = {
    ".git",
    ".hg",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".ipynb_checkpoints",
    "__pycache__",
    "node_modules",
    "build",
    "dist",
    "runs",
    ".whl",
}
THIS_FILE = Path(__file__).resolve()

_SEC = r"§[ \t]?\d+(?:\.\d+)*"
# One optional line break between the file name and its section (wrapped docstrings / comments).
_GAP = r"[`'\"*]?[ \t]*(?:\r?\n[ \t]*(?:#[ \t]*)?)?(?:,[ \t]*)?"
_CHAIN = rf"{_SEC}(?:[ \t]*(?:,|and|or|to|-|–|—|/|&)[ \t]*{_SEC})*"
CITATION = re.compile(
    r"(?<![\w./\\~-])"
    r"(?P<prefix>[\w./\\~-]*[/\\])?"
    r"(?P<doc>nfnet_reference|checkpoints|platform_facts)\.md\b"
    rf"(?:(?P<gap>{_GAP})(?P<chain>{_CHAIN}))?"
    r"(?:[`'\"*]?,?[ \t]*[\"“](?P<title>[^\"”\n]{1,80})[\"”])?"
)
SECTION = re.compile(r"§[ \t]?(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
HEADING_SECTION = re.compile(r"^§[ \t]?(\d+(?:\.\d+)*)\b")
# Strings assembled so that this file does not match its own ban.
FORBIDDEN = re.compile(
    "|".join(
        [
            re.escape("shared" + "/spec"),
            r"\.\./+shared\b",
            re.escape("/work/" + "shared"),
        ]
    )
)


def _scanned_files():
    for root, dirs, files in os.walk(REPO):
        dirs[:] = sorted(
            d
            for d in dirs
            if d not in SKIP_DIRS and not d.startswith(".venv") and not d.endswith(".egg-info")
        )
        for name in sorted(files):
            path = Path(root) / name
            if path.suffix in SUFFIXES and path.resolve() != THIS_FILE:
                yield path


def _text(path: Path) -> str:
    raw = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix != ".ipynb":
        return raw
    try:
        notebook = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    cells = notebook.get("cells", [])
    return "\n".join(
        "".join(c.get("source", [])) if isinstance(c.get("source"), list) else c.get("source", "")
        for c in cells
    )


def _headings(doc: Path) -> tuple[list[str], list[str]]:
    """(section numbers, heading titles without the section number, lower-cased)."""
    numbers, titles = [], []
    for match in HEADING.finditer(doc.read_text(encoding="utf-8")):
        title = match.group(1).strip()
        number = HEADING_SECTION.match(title)
        if number:
            numbers.append(number.group(1))
            title = title[number.end() :]
        titles.append(re.sub(r"[*_`]", "", title).strip().lower())
    return numbers, titles


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


@pytest.fixture(scope="module")
def headings():
    return {name: _headings(DOCS / name) for name in DOC_NAMES if (DOCS / name).is_file()}


@pytest.fixture(scope="module")
def corpus():
    return [(path, _text(path)) for path in _scanned_files()]


def test_docs_exist():
    missing = [name for name in (*DOC_NAMES, "README.md") if not (DOCS / name).is_file()]
    assert not missing, f"missing under docs/: {missing}"


def test_section_numbers_unique(headings):
    for name, (numbers, _) in headings.items():
        dupes = sorted({n for n in numbers if numbers.count(n) > 1})
        assert not dupes, f"docs/{name}: duplicate section headings {dupes}"


def _prefix_ok(prefix: str | None, path: Path) -> bool:
    if not prefix:
        return True
    prefix = prefix.replace("\\", "/")
    if FORBIDDEN.search(prefix) or prefix.startswith("/") or prefix.startswith("~"):
        return False
    return any((base / prefix).resolve() == DOCS.resolve() for base in (REPO, path.parent))


def test_citations_resolve_inside_repo(corpus, headings):
    problems = []
    n_citations = 0
    for path, text in corpus:
        rel = path.relative_to(REPO)
        for match in CITATION.finditer(text):
            n_citations += 1
            where = f"{rel}:{_line(text, match.start())}: {match.group(0).strip()!r}"
            doc = match.group("doc") + ".md"
            if not _prefix_ok(match.group("prefix"), path):
                problems.append(f"{where}: points outside docs/ (prefix {match.group('prefix')!r})")
                continue
            if doc not in headings:
                problems.append(f"{where}: docs/{doc} does not exist")
                continue
            numbers, titles = headings[doc]
            for number in SECTION.findall(match.group("chain") or ""):
                if number not in numbers:
                    problems.append(f"{where}: docs/{doc} has no heading §{number}")
            title = match.group("title")
            if title and not any(title.strip().lower() in t for t in titles):
                problems.append(f"{where}: docs/{doc} has no heading named {title!r}")
    assert n_citations > 0, "no citations found: is the walk skipping the repository?"
    assert not problems, "unresolved citations:\n" + "\n".join(problems)


def test_no_references_to_the_shared_spec_folder(corpus):
    problems = []
    for path, text in corpus:
        for match in FORBIDDEN.finditer(text):
            problems.append(
                f"{path.relative_to(REPO)}:{_line(text, match.start())}: {match.group(0)!r}"
            )
    assert not problems, "references outside the repository:\n" + "\n".join(problems)


def test_bare_section_references_exist(corpus, headings):
    problems = []
    union = {n for name in BARE_SECTION_DOCS if name in headings for n in headings[name][0]}
    for path, text in corpus:
        rel = path.relative_to(REPO)
        cited = [m.span() for m in CITATION.finditer(text)]
        if path.parent.resolve() == DOCS.resolve() and path.name in headings:
            known, scope = set(headings[path.name][0]), f"docs/{path.name}"
        else:
            known, scope = union, " or ".join(f"docs/{n}" for n in BARE_SECTION_DOCS)
        for match in SECTION.finditer(text):
            if any(start <= match.start() < end for start, end in cited):
                continue
            if match.group(1) not in known:
                problems.append(
                    f"{rel}:{_line(text, match.start())}: §{match.group(1)} is not a heading of "
                    f"{scope}"
                )
    assert not problems, "bare section references that do not resolve:\n" + "\n".join(problems)
