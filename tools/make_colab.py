"""Write the Colab copies of the chapters: notebooks/chNN_*.md -> notebooks/chNN_*.ipynb.

The MyST-markdown notebooks are the source of truth. Colab opens only .ipynb, and sphinx-book-theme
points a page's Colab button at the same-named .ipynb beside its source, so each chapter gets a
committed copy that

* starts with a cell that, only when running in Colab, clones the repository, installs
  opd_lib from it and moves into its notebooks/ folder (so ../results paths work);
* hides exercise solutions (their code cells become a pointer back to the book);
* turns MyST-only syntax (directives, roles, labels) into plain markdown Colab can render;
* has no outputs and deterministic cell ids, so regenerating it changes nothing.

Usage: python tools/make_colab.py           # (re)write every copy
       python tools/make_colab.py --check   # exit 1 if any copy is stale, missing or orphaned
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CHAPTER_GLOB = "ch[0-9][0-9]_*"

SOLUTION_STUB = (
    "# The solution is hidden in this copy: write yours in the exercise cell above,\n"
    "# or open the solution dropdown on the book's page for this chapter."
)

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
            "# ../results as it does here. Elsewhere this cell does nothing: install the",
            "# project as its README says.",
            "import os",
            "import subprocess",
            "import sys",
            "",
            'if "google.colab" in sys.modules:',
            '    repo = "/content/opd-book"',
            "    if not os.path.isdir(repo):",
            f'        clone = ["git", "clone", "-q", "--depth", "1", "{url}.git", repo]',
            "        subprocess.check_call(clone)",
            '    pip = [sys.executable, "-m", "pip", "install", "-q"]',
            '    subprocess.check_call([*pip, repo + "[lab]"])',
            '    os.chdir(os.path.join(repo, "notebooks"))',
        ]
    )
    return nbformat.v4.new_code_cell(source)


def convert_role(match: re.Match[str]) -> str:
    name, body = match["name"], match["body"]
    if name == "math":
        return f"${body}$"
    if name.startswith("glue"):  # {glue:text}`name:fmt` -> the variable the cell computed
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
    """Drop everything between solution-start and solution-end (prose and code alike), leaving a
    note in its place and a stub for each code cell, so the reader's own code runs the grader."""
    kept, in_solution = [], False
    for cell in cells:
        if cell.cell_type == "code":
            kept.append(nbformat.v4.new_code_cell(SOLUTION_STUB) if in_solution else cell)
            continue
        lines, closing_fence = [], None
        for line in cell.source.split("\n"):
            if closing_fence is not None:  # the fence that closes {solution-end}
                closing_fence = None if line.strip() == closing_fence else closing_fence
            elif "{solution-start}" in line:
                in_solution = True
                lines.append("**Solution:** hidden in the Colab copy; see the book's page.")
            elif in_solution and "{solution-end}" in line:
                in_solution, closing_fence = False, line.strip().split("{")[0]
            elif not in_solution:
                lines.append(line)
        kept.append(nbformat.v4.new_markdown_cell("\n".join(lines)))
    return kept


def colab_notebook(source: Path, url: str) -> nbformat.NotebookNode:
    """The Colab copy of one chapter, as a notebook object."""
    cells = [colab_setup_cell(url)]
    for cell in hide_solutions(jupytext.read(source).cells):
        if cell.cell_type == "markdown":
            text = myst_to_markdown(cell.source)
            if text:
                cells.append(nbformat.v4.new_markdown_cell(text))
        elif cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(cell.source)
            tags = [t for t in cell.metadata.get("tags", []) if t != "remove-cell"]
            if tags:
                new.metadata["tags"] = tags
            cells.append(new)
    for index, cell in enumerate(cells):
        cell.id = f"cell-{index:03d}"
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
    }
    return notebook


def rendered(source: Path, url: str) -> str:
    return nbformat.writes(colab_notebook(source, url)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if any copy is stale")
    args = parser.parse_args(argv)
    url = repository_url()
    sources = sorted(NOTEBOOKS.glob(CHAPTER_GLOB + ".md"))
    if not sources:
        print(f"no chapter notebooks found in {NOTEBOOKS}", file=sys.stderr)
        return 1
    problems = []
    for source in sources:
        target, text = source.with_suffix(".ipynb"), rendered(source, url)
        current = target.read_text() if target.exists() else None
        if current == text:
            continue
        if args.check:
            problems.append(f"{target.relative_to(ROOT)} is {'stale' if current else 'missing'}")
        else:
            target.write_text(text)
            print(f"wrote {target.relative_to(ROOT)}")
    expected = {s.with_suffix(".ipynb") for s in sources}
    orphans = [p for p in NOTEBOOKS.glob(CHAPTER_GLOB + ".ipynb") if p not in expected]
    problems += [f"{p.relative_to(ROOT)} has no .md source" for p in orphans]
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("run: python tools/make_colab.py", file=sys.stderr)
        return 1
    if args.check:
        print(f"{len(sources)} Colab notebooks are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
