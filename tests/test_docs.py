"""The checkout's text files: no half-resolved merge is left in a document or a module; the README
starts with the two commands (the main job, and the test command `.ci/run` runs), and the pages
it sends readers to name files that exist, every module and every (C) tag the code cites."""
import json
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


# ---------------------------------------------------------------------------------------------
# README.md and the pages it sends readers to
# ---------------------------------------------------------------------------------------------

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
PATH_TOKEN = re.compile(r"`((?:docs|tutorials|experiments|minibern|benchmarks|tests)/[^`\s]*)`")
PAGES = ("README.md", "docs/USAGE.md", "docs/LAYOUT.md", "docs/FINDINGS.md")


def _commands(block: str) -> list[str]:
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def _ci_test_command() -> str:
    lines = [line.strip() for line in (REPO / ".ci/run").read_text().splitlines()]
    commands = [line for line in lines if "pytest" in line and not line.startswith("#")]
    assert len(commands) == 1, commands
    return commands[0]


@pytest.mark.host_only
def test_readme_starts_with_the_main_job_and_the_ci_test_command():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    first = FENCE.search(text)
    assert first is not None and first.group(1) == "bash"
    assert "\n## " not in text[:first.start()]  # the commands come before any section
    install_and_run, install_and_test = _commands(first.group(2))[:2]
    assert len(_commands(first.group(2))) == 2
    script = re.search(r"python (tutorials/\S+\.py)", install_and_run).group(1)
    assert script == "tutorials/06_gated_lenet300.py" and (REPO / script).is_file()
    assert install_and_test.startswith("python3 -m venv") and "pip install" in install_and_test
    assert install_and_test.split(" && ")[-1] == _ci_test_command()


@pytest.mark.host_only
def test_readme_is_a_short_page_for_learners():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 120
    assert "docs/figures/theta_trajectories.png" in text
    assert "01 → 04 → 05 → 06" in text


@pytest.mark.host_only
@pytest.mark.parametrize("page", PAGES)
def test_paths_a_page_names_exist(page):
    text = (REPO / page).read_text(encoding="utf-8")
    named = set(PATH_TOKEN.findall(text))
    named |= {link for link in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in link}
    named |= set(re.findall(r"minibern plot (experiments/\S+)", text))
    missing = sorted(path for path in named
                     if not (REPO / path.rstrip("/")).exists())
    assert missing == []


@pytest.mark.host_only
def test_layout_names_every_module():
    rows = [line for line in (REPO / "docs/LAYOUT.md").read_text(encoding="utf-8").splitlines()
            if line.startswith("| `minibern/")]
    unnamed = []
    for path in sorted((REPO / "minibern").rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        folder = path.parent.relative_to(REPO).as_posix() + "/"
        candidates = [row for row in rows if folder == "minibern/" or
                      row.startswith(f"| `{folder}`")]
        if not any(f"`{path.name}`" in row or f"`minibern/{path.name}`" in row
                   for row in candidates):
            unnamed.append(path.relative_to(REPO).as_posix())
    assert unnamed == []


@pytest.mark.host_only
def test_convergence_tags_cited_in_code_are_defined_in_convergence_md():
    tag = re.compile(r"\(C\d+′?\)")
    cited = set()
    for folder in ("minibern", "tutorials", "experiments", "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            cited |= set(tag.findall(path.read_text(encoding="utf-8")))
    page = (REPO / "docs/derivations/convergence.md").read_text(encoding="utf-8")
    defined = {match.group(1) for match in re.finditer(r"\s(\(C\d+′?\))\s*$", page, re.MULTILINE)}
    assert "(C13)" in cited  # the code is read
    assert sorted(cited - defined) == []


# ---------------------------------------------------------------------------------------------
# The tutorial gallery (docs/tutorials/, written by tutorials/_gallery.py)
# ---------------------------------------------------------------------------------------------

GALLERY = REPO / "docs" / "tutorials"
SECONDS = re.compile(r"\d+(?:\.\d+)? s\b")  # wall times differ from machine to machine


def _expected_line(tutorial: Path) -> tuple[str, bool]:
    """The final line a tutorial's docstring says a full run prints (the lines after "You
    should see" up to one starting "and", joined), with its seconds masked, and whether it ends
    in "..." (the rest of the line left out)."""
    import ast

    doc = ast.get_docstring(ast.parse(tutorial.read_text(encoding="utf-8"))).splitlines()
    start = next(i for i, line in enumerate(doc) if line.startswith("You should see")) + 1
    block = []
    for line in doc[start:]:
        if not line.startswith(" ") or line.strip().startswith("and "):
            break
        block.append(line.strip())
    quoted = SECONDS.sub("<s>", " ".join(block))
    return quoted.removesuffix("...").removesuffix("…").rstrip(), quoted.endswith(("...", "…"))


def test_the_gallery_shows_every_tutorial_with_its_figures_and_its_quoted_line():
    """Every tutorial has an entry whose figures exist and whose last line is the one the
    tutorial's docstring tells the reader to expect (seconds aside)."""
    entries = json.loads((GALLERY / "gallery.json").read_text(encoding="utf-8"))
    page = (GALLERY / "README.md").read_text(encoding="utf-8")
    tutorials = sorted((REPO / "tutorials").glob("[0-9][0-9]_*.py"))
    assert sorted(entries) == [path.name[:2] for path in tutorials]
    for tutorial in tutorials:
        entry = entries[tutorial.name[:2]]
        assert entry["last_line"] in page and (GALLERY / tutorial.name[:2] / "output.txt").exists()
        for figure in entry["figures"]:
            assert (GALLERY / tutorial.name[:2] / figure).read_bytes()[:4] == b"\x89PNG", figure
            assert f"]({tutorial.name[:2]}/{figure})" in page
        if "--quick" not in entry["command"]:
            shown, (quoted, cut) = SECONDS.sub("<s>", entry["last_line"]), _expected_line(tutorial)
            assert shown.startswith(quoted) if cut else shown == quoted, tutorial.name
