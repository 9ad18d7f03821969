"""Sphinx extension: the built book serves its own JavaScript, so it renders with no network.

* **MathJax 3** from the npm package ``mathjax`` (pinned in ``tools/js/package-lock.json``,
  installed by ``make book`` into ``tools/js/node_modules``, git-ignored): the parts a page can
  load (the ``tex-mml-chtml`` component, TeX extensions, CHTML fonts, menu and accessibility
  modules) are copied to ``_static/mathjax/``; ``mathjax_path`` in ``_config.yml`` points there.
* **plotly.js** from the ``plotly`` wheel (the exact version the Python package writes figures
  for) is copied to ``_static/plotly.min.js`` and loaded only by the pages that hold an
  interactive figure (``opd_lib.interactive`` wraps each in ``div.opd-interactive``).

It also removes two console errors that the theme stack prints on every page: sphinx-thebe adds
its inline configuration script twice (the second ``const`` declaration is a SyntaxError), and
pydata-sphinx-theme rejects an empty colour mode on a reader's first visit (the template variable
``default_mode`` is set to ``auto`` unless ``html_context`` sets it).

Enabled in ``_config.yml`` through ``sphinx.local_extensions`` (``offline_assets: tools``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

MATHJAX_PARTS = ("tex-mml-chtml.js", "input", "output/chtml", "ui", "a11y", "adaptors")
FIGURE_MARKER = 'class="opd-interactive"'
PLOTLY_FILE = "plotly.min.js"


def mathjax_source(confdir: Path) -> Path:
    """The ``es5`` folder of the installed npm ``mathjax`` package."""
    candidates = [
        confdir / "tools" / "js" / "node_modules" / "mathjax" / "es5",
        Path(__file__).resolve().parent / "js" / "node_modules" / "mathjax" / "es5",
    ]
    for folder in candidates:
        if (folder / MATHJAX_PARTS[0]).is_file():
            return folder
    raise ExtensionError(
        "MathJax is not installed for the offline book: run `make book` (or "
        "`npm ci --no-audit --no-fund --prefix tools/js`) first."
    )


def stage_assets(app: Sphinx, config) -> None:
    """Copy MathJax and plotly.js into a folder that Sphinx copies into ``_static``."""
    import plotly

    staging = Path(app.doctreedir).parent / "offline_static"
    source = mathjax_source(Path(app.confdir))
    for part in MATHJAX_PARTS:
        src, dst = source / part, staging / "mathjax" / part
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dst)
    plotly_js = Path(plotly.__file__).parent / "package_data" / PLOTLY_FILE
    if not plotly_js.is_file():
        raise ExtensionError(f"plotly.js not found at {plotly_js}")
    shutil.copy2(plotly_js, staging / PLOTLY_FILE)
    config.html_static_path = [*config.html_static_path, str(staging)]
    expected = "mathjax/" + MATHJAX_PARTS[0]
    if config.mathjax_path != expected:
        raise ExtensionError(f"set sphinx.config.mathjax_path to {expected!r} in _config.yml")


def set_theme_mode(app: Sphinx, config) -> None:
    """An explicit colour mode, so the theme does not log an error on a reader's first visit."""
    config.html_context = {"default_mode": "auto", **(config.html_context or {})}


def page_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Load plotly.js (synchronously, in the head) on pages that hold an interactive figure, and
    drop exact duplicates among the page's scripts."""
    if FIGURE_MARKER in context.get("body", ""):
        app.add_js_file(PLOTLY_FILE)
    scripts = context.get("script_files")
    if scripts:
        seen, kept = set(), []
        for script in scripts:
            attributes = getattr(script, "attributes", {}) or {}
            # An inline script's filename is None or "" depending on when it was added.
            filename = getattr(script, "filename", script) or ""
            key = (str(filename), tuple(sorted(attributes.items())))
            if key not in seen:
                seen.add(key)
                kept.append(script)
        scripts[:] = kept


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", stage_assets)
    app.connect("config-inited", set_theme_mode)
    app.connect("html-page-context", page_scripts, priority=900)  # after the theme's handlers
    return {"parallel_read_safe": True, "parallel_write_safe": True}
