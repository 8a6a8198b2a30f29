"""The repository explains itself: no file cites documents outside it, and no doc link is broken."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Built from parts so this file does not itself contain what it looks for.
OUTSIDE_FOLDER = "../shared/" + "spec"
OUTSIDE_NAMES = [f"{name}.md" for name in ("CONTRACT", "BENCH", "KAFKA", "PRODUCT", "STYLE")]
BPJS_DOC = "BPJS" + ".md"  # allowed only as the repository's own docs/BPJS.md
DOCS = [REPO / "README.md", REPO / "bench" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_SKIP_DIRS = {".git", ".venv", ".data", ".cache", "node_modules", "__pycache__"}


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
        ).stdout
        return [REPO / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the tree
        return [
            p
            for p in REPO.rglob("*")
            if p.is_file() and not _SKIP_DIRS & set(p.relative_to(REPO).parts)
        ]


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
        return None  # images and other binary files cite nothing


def citations_outside_the_repo(path: Path, text: str) -> list[str]:
    found = [OUTSIDE_FOLDER] if OUTSIDE_FOLDER in text else []
    found += [name for name in OUTSIDE_NAMES if name in text]
    in_docs = path.parent == REPO / "docs"
    for match in re.finditer(re.escape(BPJS_DOC), text):
        before = text[: match.start()]
        # The path docs/BPJS.md anywhere, or the bare name inside docs/: the repository's own doc.
        if not (before.endswith("docs/") or (in_docs and not before.endswith("/"))):
            found.append(text[max(0, match.start() - 20) : match.end()])
    return found


def test_no_tracked_file_cites_documents_outside_the_repository():
    offenders = {}
    for path in tracked_files():
        text = _text(path)
        if text is not None and (found := citations_outside_the_repo(path, text)):
            offenders[str(path.relative_to(REPO))] = found
    assert not offenders, f"cite docs/ or nothing: {offenders}"


def test_the_check_recognises_outside_citations():
    doc = REPO / "docs" / "X.md"
    code = REPO / "services" / "x.py"
    assert citations_outside_the_repo(code, f"see {OUTSIDE_NAMES[0]} §4")
    assert citations_outside_the_repo(code, f"({OUTSIDE_FOLDER}/x)")
    assert citations_outside_the_repo(code, f"the pitfall {BPJS_DOC} warns about")
    assert not citations_outside_the_repo(code, f"see docs/{BPJS_DOC}")
    assert not citations_outside_the_repo(doc, f"[{BPJS_DOC}]({BPJS_DOC})")


def slug(heading: str) -> str:
    """The anchor a heading gets on GitHub: lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    return {slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, flags=re.MULTILINE)}


def broken_links(doc: Path) -> list[str]:
    broken = []
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.DOTALL)
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    return broken


def test_every_relative_link_in_the_docs_points_to_an_existing_file_and_heading():
    broken = {str(d.relative_to(REPO)): b for d in DOCS if d.exists() and (b := broken_links(d))}
    assert not broken, f"broken links: {broken}"


def test_the_docs_of_the_outside_surface_exist():
    for name in ("API", "WEBSOCKET", "EVENTS", "CONFIGURATION", "BPJS"):
        assert (REPO / "docs" / f"{name}.md").is_file(), name
