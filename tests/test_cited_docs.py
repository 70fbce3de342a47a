"""Every document the code and tests cite lives in the repository."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("platform", "jobs", "tests", "benchmarks", "dashboards")
CITED = re.compile(r"(?<![\w/])(docs/[\w.-]+\.md)\b")  # top-level files of our docs/ folder


def source_files():
    for folder in SOURCES:
        yield from (ROOT / folder).rglob("*.py")


def test_cited_docs_exist_and_no_outside_notes_are_cited():
    cited, outside = set(), []
    for path in source_files():
        text = path.read_text(encoding="utf-8")
        cited.update(CITED.findall(text))
        if path != Path(__file__) and re.search(r"\b(papers|design)\.md\b", text):
            outside.append(str(path.relative_to(ROOT)))
    assert not outside, f"cite docs/ instead of notes outside the repository: {outside}"
    assert {"docs/algorithms.md", "docs/architecture.md"} <= cited
    missing = sorted(doc for doc in cited if not (ROOT / doc).is_file())
    assert not missing, f"cited but not in the repository: {missing}"
