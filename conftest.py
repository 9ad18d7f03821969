"""Let nbval run the MyST-markdown chapters directly: `pytest --nbval-lax notebooks/`.

nbval collects only .ipynb files and reads them with nbformat. Here each notebooks/chNN_*.md is
collected as a notebook whose cells jupytext parses from the markdown source, solutions included,
so every grader runs on its solution. The generated Colab copies (.ipynb, solutions replaced by
stubs) are not collected here: tests/test_colab.py runs them in a Colab-like kernel.
"""

from __future__ import annotations

from unittest import mock

import jupytext
import nbval.plugin

collect_ignore_glob = ["notebooks/*.ipynb", "_build/*", ".venv/*"]


class MarkdownNotebook(nbval.plugin.IPyNbFile):
    """An nbval notebook read from a jupytext MyST-markdown file."""

    def collect(self):
        def read_markdown(path, as_version):
            return jupytext.read(path, as_version=as_version)

        with mock.patch.object(nbval.plugin.nbformat, "read", read_markdown):
            yield from super().collect()


def pytest_collect_file(file_path, parent):
    options = parent.config.option
    is_chapter = file_path.suffix == ".md" and file_path.parent.name == "notebooks"
    if is_chapter and file_path.name.startswith("ch") and (options.nbval or options.nbval_lax):
        return MarkdownNotebook.from_parent(parent, path=file_path)
    return None
