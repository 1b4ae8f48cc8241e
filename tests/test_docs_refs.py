"""The project documents itself: no file refers to documents outside the repository, each
method page holds the thesis equations its code implements (with the thesis' numbering),
and every "docs/<page>.md, Eq. (x.y)" or in-page link points at something that exists."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from methods import all_methods

ROOT = Path(__file__).resolve().parents[1]
# documents that live outside the repository (spelled in pieces so this file is not one)
OUTSIDE = ("SPEC" + ".md", "DESIGN" + ".md", "STYLE" + ".md", "../" + "shared",
           "shared" + "/seed", "thesis" + ".txt")
# the thesis equations each chapter's page must state (numbers as the thesis prints them)
EQUATIONS = {"2": [f"2.{i}" for i in range(1, 7)],
             "3": ["3.1", "3.2", "3.4", "3.5", "3.6"],
             "4": [f"4.{i}" for i in range(1, 12)],
             "5": [f"5.{i}" for i in range(1, 19)]}
REF = re.compile(r"docs/(\w+)\.md, Eqs?\. \((\d+\.\d+)\)(?:-\((\d+\.\d+)\))?")


def _tracked() -> list[Path]:
    """The repository's tracked text files."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    paths = [ROOT / p for p in out.stdout.decode().split("\0") if p]
    return [p for p in paths if p.is_file() and b"\0" not in p.read_bytes()[:4096]]


def _slug(heading: str) -> str:
    """A Markdown heading's anchor as GitHub makes it."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_no_file_refers_to_documents_outside_the_repository():
    offenders = [f"{p.relative_to(ROOT)}: {word}" for p in _tracked()
                 for word in OUTSIDE if word in p.read_text(errors="replace")]
    assert not offenders, offenders


def test_the_scan_sees_an_outside_reference(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text('"""see ' + OUTSIDE[0] + ' section 2"""\n')
    assert any(word in bad.read_text() for word in OUTSIDE)


@pytest.mark.parametrize("desc", [d for d in all_methods() if d.chapter in EQUATIONS],
                         ids=lambda d: d.name)
def test_each_method_page_states_its_chapters_equations(desc):
    text = (ROOT / desc.docs).read_text()
    assert f"## Equations (thesis Chapter {desc.chapter}" in text, desc.docs
    section = text.split(f"## Equations (thesis Chapter {desc.chapter}", 1)[1].split("\n## ", 1)[0]
    missing = [n for n in EQUATIONS[desc.chapter] if f"\\tag{{{n}}}" not in section]
    assert not missing, f"{desc.docs} lacks Eq. {missing}"
    assert section.count("$$") % 2 == 0, "an unclosed $$ math block"
    assert "Choices and deviations" in text or "eviation" in section, desc.docs


def test_equation_references_and_page_links_resolve():
    pages = {p.stem: p.read_text() for p in (ROOT / "docs").glob("*.md")}
    bad = []
    for p in _tracked():
        for m in REF.finditer(p.read_text(errors="replace")):
            page, numbers = m.group(1), [n for n in m.group(2, 3) if n]
            if page not in pages or any(f"\\tag{{{n}}}" not in pages[page] for n in numbers):
                bad.append(f"{p.relative_to(ROOT)}: {m.group(0)}")
    for name, text in pages.items():
        anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
        bad += [f"docs/{name}.md: #{a}" for a in re.findall(r"\]\(#([\w\-]+)\)", text)
                if a not in anchors]
    assert not bad, bad
