"""A failing notebook cell must fail both README commands (Jupyter Book 1 exits 0 by default).

Each test builds a throw-away project holding one chapter, copies the real configuration into it,
and runs the same command the README does: `make book` (with BOOK_DIR pointing at the copy) and
nbval through this repository's conftest.py.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHAPTER = """---
jupytext:
  text_representation: {{extension: .md, format_name: myst, format_version: 0.13}}
kernelspec: {{display_name: Python 3, language: python, name: python3}}
---

# A chapter

```{{code-cell}} ipython3
x = 1
{body}
```
"""


def make_project(tmp_path: Path, body: str) -> Path:
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "ch99_probe.md").write_text(CHAPTER.format(body=body))
    (tmp_path / "intro.md").write_text("# Probe book\n")
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nchapters:\n  - file: notebooks/ch99_probe\n"
    )
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "tools").symlink_to(ROOT / "tools")  # the book's Sphinx extension lives there
    return tmp_path


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("body", "should_pass"), [("print(x)", True), ("1 / 0", False)])
def test_book_build_fails_on_a_failing_cell(tmp_path, body, should_pass):
    project = make_project(tmp_path, body)
    result = run(["make", "-C", str(ROOT), "book", f"BOOK_DIR={project}"], cwd=ROOT)
    assert (result.returncode == 0) == should_pass, result.stdout[-3000:] + result.stderr[-3000:]
    if not should_pass:
        assert "ZeroDivisionError" in result.stdout + result.stderr


@pytest.mark.parametrize(("body", "should_pass"), [("print(x)", True), ("1 / 0", False)])
def test_notebook_tests_fail_on_a_failing_cell(tmp_path, body, should_pass):
    project = make_project(tmp_path, body)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "--nbval-lax",
        "--nbval-current-env",
        "notebooks",
    ]
    result = run(command, cwd=project)
    assert (result.returncode == 0) == should_pass, result.stdout[-3000:]
    assert ("1 passed" if should_pass else "ZeroDivisionError") in result.stdout
