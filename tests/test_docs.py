"""The checkout's text files: no half-resolved merge is left in a document or a module."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("minibern", "docs", "tests", "tutorials", "benchmarks", "experiments", ".ci")
MARKER = re.compile(r"^(<{7}|={7}|>{7})( |$)", re.MULTILINE)


def _text_files():
    files = [REPO / name for name in ("README.md", "setup.cfg") if (REPO / name).exists()]
    for folder in FOLDERS:
        files += [path for path in sorted((REPO / folder).rglob("*"))
                  if path.suffix in (".md", ".py", ".cfg", ".txt", "") and path.is_file()
                  and "runs" not in path.relative_to(REPO).parts[:2]]
    return files


@pytest.mark.host_only
def test_no_merge_conflict_markers():
    files = _text_files()
    assert any(path.name == "estimators.md" for path in files)  # the docs are read
    marked = [str(path.relative_to(REPO)) for path in files
              if MARKER.search(path.read_text(encoding="utf-8", errors="replace"))]
    assert marked == []
