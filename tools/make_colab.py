"""Write the Colab copies of the chapters: notebooks/chNN_*.md -> notebooks/chNN_*.ipynb.

The MyST-markdown notebooks are the source of truth. Colab opens only .ipynb, and sphinx-book-theme
points a page's Colab button at the same-named .ipynb beside its source, so each chapter gets a
committed copy that

* opens complete: it carries the outputs of the book build (figures, tables, printed values) and
  the glued numbers written into its prose (``{glue:text}`` roles replaced by their values), so a
  reader sees the chapter as on the page before running anything (tools/colab_outputs.py);
* starts with a cell that, only when running in Colab, clones the repository (the URL in
  _config.yml, or ``$OPD_BOOK_REPO_URL`` for a fork or a local test), installs opd_lib from it
  unless it is already importable, and moves into its notebooks/ folder (so ../results works);
* hides the exercises' solution *code* (each solution code cell becomes a stub, the exercise's
  own stub stays, and the grader then prints "not attempted yet"), while the solution's prose
  (a derivation) stays, folded in a "Solution" section;
* turns MyST-only syntax (directives, roles, labels) into plain markdown Colab can render, and
  folds the code of cells the page hides (``remove-input``/``hide-input``) as Colab "forms";
* is deterministic: cell ids by position, no execution counts or varying metadata, sorted JSON.

Where the outputs come from: ``python tools/make_colab.py`` takes them from the book build
(``_build/jupyter_execute``; run ``make book`` first) and, for a chapter that has no build, keeps
those of the committed copy. A build older than its source (its code differs) is an error.
``--check`` never needs a build: it regenerates each copy with the *committed* copy's outputs and
glued values and compares bytes, so it fails when a copy is stale with respect to the sources
(prose, code, tags, a glued name without a value, a cell whose code changed); refreshing the
carried outputs after a library change is ``make book && make colab``.

Usage: python tools/make_colab.py           # (re)write every copy from the build
       python tools/make_colab.py --check   # exit 1 if any copy is stale, missing or orphaned
       python tools/make_colab.py --out DIR # write the copies into DIR instead (a dry run)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from colab_outputs import (  # noqa: E402
    GLUE_ROLE,
    Outputs,
    build_outputs,
    committed_outputs,
    glue_text,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
BUILD = ROOT / "_build" / "jupyter_execute" / "notebooks"
CHAPTER_GLOB = "ch[0-9][0-9]_*"
REPO_URL_VARIABLE = "OPD_BOOK_REPO_URL"

SOLUTION_STUB = (
    "# The solution code is hidden in this copy: write yours in the exercise cell above,\n"
    "# or open the solution on the book's page for this chapter."
)
# Colab shows a "form" cell as this title and its output; the code opens with a double click.
FOLDED_TITLE = "# @title Code hidden on the book's page (double-click to show)"
GRADER_CALL = re.compile(r"^\s*check_\w+\(", re.MULTILINE)

FENCE_OPEN = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[\w-]+)\}\s*(?P<arg>.*)$")
OPTION_LINE = re.compile(r"^:[\w-]+:")
LABEL_LINE = re.compile(r"^\([\w-]+\)=\s*$")
ROLE = re.compile(r"\{(?P<name>[\w:-]+)\}`(?P<body>[^`]*)`")
ADMONITION_TITLES = {
    "note": "Note",
    "tip": "Tip",
    "hint": "Hint",
    "important": "Important",
    "warning": "Warning",
    "caution": "Caution",
    "attention": "Attention",
    "seealso": "See also",
}


def repository_url() -> str:
    """The repository URL, kept in one place: _config.yml."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    return config["repository"]["url"].rstrip("/")


def colab_setup_cell(url: str) -> nbformat.NotebookNode:
    source = "\n".join(
        [
            "# Colab only: fetch the book's repository, install opd_lib (with the lab's",
            "# extras) from it and work in its notebooks/ folder, so that a chapter reads",
            f"# ../results as it does here. Set {REPO_URL_VARIABLE} to use a fork.",
            "# Elsewhere this cell does nothing: install the project as its README says.",
            "import importlib.util",
            "import os",
            "import subprocess",
            "import sys",
            "",
            "try:",
            "    import google.colab  # noqa: F401",
            "",
            "    IN_COLAB = True",
            "except ImportError:",
            "    IN_COLAB = False",
            "",
            "if IN_COLAB:",
            f'    url = os.environ.get("{REPO_URL_VARIABLE}", "{url}")',
            '    repo = os.environ.setdefault("OPD_BOOK_DIR", os.path.abspath("opd-book"))',
            "    if not os.path.isdir(repo):",
            '        subprocess.check_call(["git", "clone", "-q", "--depth", "1", url, repo])',
            '    if importlib.util.find_spec("opd_lib") is None:',
            '        pip = [sys.executable, "-m", "pip", "install", "-q"]',
            '        subprocess.check_call([*pip, repo + "[lab]"])',
            "        importlib.invalidate_caches()",
            '    os.chdir(os.path.join(repo, "notebooks"))',
        ]
    )
    return nbformat.v4.new_code_cell(source)


def convert_role(match: re.Match[str]) -> str:
    name, body = match["name"], match["body"]
    if name == "math":
        return f"${body}$"
    if name.startswith("glue"):  # substituted before this point; a leftover keeps its name
        return f"`{body.split(':')[0]}`"
    text = re.sub(r"\s*<[^>]*>$", "", body)  # {doc}`text <target>` -> text
    return text.lstrip("!~")


def render_directive(name: str, arg: str, body: str) -> list[str]:
    """Plain-markdown lines for one MyST directive whose body is already converted."""
    if name in ("exercise-end", "solution-end"):
        return []
    if name == "exercise-start":
        return [f"**Exercise{': ' + arg if arg else ''}**"]
    if name == "math":
        return ["$$", body, "$$"]
    if name == "dropdown":
        return [f"<details><summary>{arg or 'Show'}</summary>", "", body, "", "</details>"]
    if name in ADMONITION_TITLES or name == "admonition":
        title = arg if name == "admonition" else ADMONITION_TITLES[name]
        lines = [f"**{title}.**", *body.split("\n")]
        return ["> " + line if line else ">" for line in lines]
    if name in ("figure", "image"):
        return [f"![{body.strip()}]({arg})"]
    return body.split("\n")  # unknown directive: keep its content


def myst_to_markdown(text: str) -> str:
    """Turn MyST-only syntax into markdown that Colab renders."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        line = lines[i]
        opened = FENCE_OPEN.match(line.strip())
        if opened:
            fence = opened["fence"]
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence), None)
            if end is None:
                raise ValueError(f"unclosed MyST directive {{{opened['name']}}}: {line!r}")
            body = [b for b in lines[i + 1 : end] if not OPTION_LINE.match(b.strip())]
            out += render_directive(
                opened["name"], opened["arg"], myst_to_markdown("\n".join(body))
            )
            i = end + 1
            continue
        if not LABEL_LINE.match(line.strip()) and not line.startswith("% "):
            out.append(ROLE.sub(convert_role, line))
        i += 1
    return "\n".join(out).strip("\n")


def hide_solutions(cells: list[nbformat.NotebookNode]) -> list[nbformat.NotebookNode]:
    """Replace each solution's code cells by a stub and fold its prose (a derivation the reader
    may want) into a "Solution" section; the exercise's own stub then reaches the grader."""
    kept, in_solution = [], False
    for cell in cells:
        if cell.cell_type == "code":
            if in_solution:
                stub = nbformat.v4.new_code_cell(SOLUTION_STUB)
                stub.metadata["opd_solution"] = True
                kept.append(stub)
            else:
                kept.append(cell)
            continue
        lines: list[str] = []
        prose: list[str] = []  # the solution's prose in this cell
        skip_fence = None  # the fence that closes the {solution-start} or {solution-end} line
        for line in cell.source.split("\n"):
            if skip_fence is not None:
                skip_fence = None if line.strip() == skip_fence else skip_fence
            elif "{solution-start}" in line or (in_solution and "{solution-end}" in line):
                lines += fold_solution(prose)
                in_solution, prose = "{solution-start}" in line, []
                skip_fence = line.strip().split("{")[0]
            else:
                (prose if in_solution else lines).append(line)
        lines += fold_solution(prose)
        kept.append(nbformat.v4.new_markdown_cell("\n".join(lines)))
    return kept


def fold_solution(prose: list[str]) -> list[str]:
    """A solution's prose (a derivation, say) as a collapsed "Solution" section."""
    text = "\n".join(line for line in prose if not re.match(r"^:[\w-]+:", line.strip()))
    if not text.strip():
        return []
    return ["<details><summary>Solution</summary>", "", text.strip("\n"), "", "</details>"]


def glue_values(cells: list[nbformat.NotebookNode], outputs: Outputs) -> dict[str, str]:
    """The glued values the prose refers to (``text/plain``, as MyST-NB stores them)."""
    names = {
        m["body"].rpartition(":")[0] if ":" in m["body"] else m["body"]
        for cell in cells
        if cell.cell_type == "markdown"
        for m in GLUE_ROLE.finditer(cell.source)
    }
    return {name: outputs.glue[name] for name in sorted(names) if name in outputs.glue}


def colab_notebook(source: Path, url: str, outputs: Outputs) -> nbformat.NotebookNode:
    """The Colab copy of one chapter, as a notebook object."""
    cells = [colab_setup_cell(url)]
    chapter = hide_solutions(jupytext.read(source).cells)
    glue = glue_values(chapter, outputs)
    for cell in chapter:
        if cell.cell_type == "markdown":
            text = GLUE_ROLE.sub(lambda m: glue_text(m["body"], glue), cell.source)
            text = myst_to_markdown(text)
            if text:
                cells.append(nbformat.v4.new_markdown_cell(text))
        elif cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(cell.source)
            tags = [t for t in cell.metadata.get("tags", []) if t != "remove-cell"]
            if tags:
                new.metadata["tags"] = tags
            carried = outputs.take(cell.source)
            if {"remove-input", "hide-input"} & set(tags):  # folded in Colab too
                new.source = f"{FOLDED_TITLE}\n{cell.source}"
                new.metadata["cellView"] = "form"
            hidden = "remove-output" in tags or cell.metadata.get("opd_solution")
            if not hidden and not GRADER_CALL.search(cell.source):  # a grader's "Correct" would
                new.outputs = carried  # mislead next to an unsolved exercise
            cells.append(new)
    for index, cell in enumerate(cells):
        cell.id = f"cell-{index:03d}"
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
        "opd_book": {"glue": glue},
    }
    return notebook


def rendered(source: Path, url: str, outputs: Outputs) -> str:
    return nbformat.writes(colab_notebook(source, url, outputs)) + "\n"


def build_is_current(source: Path, build_notebook: Path) -> bool:
    """Whether the build's executed notebook ran the same code as ``source`` has now."""

    def code(cells):
        return [c.source for c in cells if c.cell_type == "code"]

    executed = nbformat.read(build_notebook, as_version=4)
    return code(executed.cells) == code(jupytext.read(source).cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if any copy is stale")
    parser.add_argument("--out", type=Path, help="write the copies here instead of notebooks/")
    parser.add_argument("--build", type=Path, default=BUILD, help="the executed notebooks")
    args = parser.parse_args(argv)
    url = repository_url()
    sources = sorted(NOTEBOOKS.glob(CHAPTER_GLOB + ".md"))
    if not sources:
        print(f"no chapter notebooks found in {NOTEBOOKS}", file=sys.stderr)
        return 1
    problems = []
    for source in sources:
        committed = source.with_suffix(".ipynb")
        executed = args.build / committed.name
        if args.check or not executed.is_file():
            outputs = committed_outputs(committed)
        elif build_is_current(source, executed):
            outputs = build_outputs(executed)
        else:
            problems.append(f"{executed} is older than {source.name}: run `make book` first")
            continue
        text = rendered(source, url, outputs)
        target = (args.out / committed.name) if args.out else committed
        current = target.read_text() if target.exists() else None
        if current == text:
            continue
        if args.check:
            problems.append(f"{target.relative_to(ROOT)} is {'stale' if current else 'missing'}")
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            print(f"wrote {target} (outputs from the {outputs.origin})")
    expected = {s.with_suffix(".ipynb") for s in sources}
    orphans = [p for p in NOTEBOOKS.glob(CHAPTER_GLOB + ".ipynb") if p not in expected]
    problems += [f"{p.relative_to(ROOT)} has no .md source" for p in orphans]
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("run: python tools/make_colab.py (after `make book`)", file=sys.stderr)
        return 1
    if args.check:
        print(f"{len(sources)} Colab notebooks are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
