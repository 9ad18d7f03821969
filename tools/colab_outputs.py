"""The outputs and glued values a Colab copy carries, so that it opens showing the chapter.

They come from one of two places:

* the book build (:func:`build_outputs`): Jupyter Book 1 writes each executed chapter to
  ``_build/jupyter_execute/notebooks/<chapter>.ipynb`` and its glued values to
  ``<chapter>.glue.json`` beside it;
* the committed copy itself (:func:`committed_outputs`): its code cells' outputs, and the glued
  values it records in ``metadata["opd_book"]["glue"]``.

Outputs are matched to cells by their code, so a cell whose code changed gets no outputs. What is
kept is what a reader sees on the page, made small and stable: stdout (progress-bar redraws
collapsed to their last state), images (PNG re-encoded as 256-colour palette images, which is
deterministic), HTML (the book's Plotly figures get a ``<script>`` that loads plotly.js from its
CDN, as :func:`opd_lib.interactive.show` does in Colab), plain text; no stderr, widgets (they
need their kernel), glue records, execution counts or output metadata.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

KEPT_MIME = ("image/png", "text/html", "text/markdown", "text/latex", "text/plain")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
INTERACTIVE = 'class="opd-interactive"'


@dataclass
class Outputs:
    """Outputs by code-cell source (in order of appearance) and glued values (``text/plain``)."""

    by_source: dict[str, deque] = field(default_factory=lambda: defaultdict(deque))
    glue: dict[str, str] = field(default_factory=dict)
    origin: str = "none"

    def take(self, source: str) -> list:
        """The outputs of the next cell with this code (empty if there is none)."""
        queue = self.by_source.get(source)
        return queue.popleft() if queue else []


def from_notebook(notebook: nbformat.NotebookNode, glue: dict[str, str], origin: str) -> Outputs:
    outputs = Outputs(glue=dict(glue), origin=origin)
    for cell in notebook.cells:
        if cell.cell_type == "code":  # a copy's folded cell starts with a Colab "@title" line
            source = re.sub(r"\A# @title [^\n]*\n", "", cell.source)
            outputs.by_source[source].append(clean_outputs(cell.get("outputs", [])))
    return outputs


def build_outputs(executed: Path) -> Outputs:
    """The outputs and glued values of one chapter's executed notebook in the book build."""
    glue_file = executed.with_suffix(".glue.json")
    records = json.loads(glue_file.read_text()) if glue_file.is_file() else {}
    glue = {name: r["data"]["text/plain"] for name, r in records.items() if "data" in r}
    return from_notebook(nbformat.read(executed, as_version=4), glue, "build")


def committed_outputs(committed: Path) -> Outputs:
    """The outputs and glued values a committed Colab copy carries (none if it does not exist)."""
    if not committed.is_file():
        return Outputs()
    notebook = nbformat.read(committed, as_version=4)
    glue = notebook.metadata.get("opd_book", {}).get("glue", {})
    return from_notebook(notebook, glue, "committed copy")


def clean_outputs(outputs: list) -> list:
    """The outputs worth carrying, in a stable, compact form (see the module docstring)."""
    kept: list = []
    for out in outputs:
        kind = out.get("output_type")
        if kind == "stream" and out.get("name") == "stdout":
            text = out["text"] if isinstance(out["text"], str) else "".join(out["text"])
            if kept and kept[-1].output_type == "stream":
                kept[-1].text += text
            else:
                kept.append(nbformat.v4.new_output("stream", name="stdout", text=text))
        elif kind in ("display_data", "execute_result"):
            data = out.get("data", {})
            if WIDGET_MIME in data or "scrapbook" in out.get("metadata", {}):
                continue
            data = {k: clean_data(k, v) for k, v in data.items() if k in KEPT_MIME}
            if data:
                kept.append(nbformat.v4.new_output("display_data", data=data))
    for out in kept:
        if out.output_type == "stream":
            out.text = collapse_redraws(out.text)
    return kept


def collapse_redraws(text: str) -> str:
    """Keep only the last redraw of each line a progress bar rewrote with carriage returns."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def clean_data(mime: str, value: object) -> str:
    text = value if isinstance(value, str) else "".join(value)  # type: ignore[arg-type]
    if mime == "image/png":
        return compress_png(text)
    if mime == "text/html" and INTERACTIVE in text and "cdn.plot.ly" not in text:
        return plotly_cdn_script() + text
    return text


def compress_png(b64: str) -> str:
    """Re-encode a PNG as a 256-colour palette PNG when that is smaller (deterministic)."""
    from PIL import Image

    raw = base64.b64decode(b64)
    image = Image.open(io.BytesIO(raw))
    if image.mode == "P":  # already a palette PNG (a committed copy's): keep it, byte for byte
        return base64.b64encode(raw).decode("ascii") + "\n"
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    flat = Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    palette = flat.quantize(colors=256, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", optimize=True)
    best = buffer.getvalue() if buffer.tell() < len(raw) else raw
    return base64.b64encode(best).decode("ascii") + "\n"


def plotly_cdn_script() -> str:
    """The ``<script>`` that loads the installed plotly.js version from Plotly's CDN."""
    from plotly.offline import get_plotlyjs_version

    src = f"https://cdn.plot.ly/plotly-{get_plotlyjs_version()}.min.js"
    return f'<script charset="utf-8" src="{src}"></script>\n'


GLUE_ROLE = re.compile(r"\{glue(?::(?:text|any|md))?\}`(?P<body>[^`]*)`")


def glue_text(body: str, glue: dict[str, str]) -> str:
    """What the page writes for ``{glue:text}`body```: the glued value, formatted as MyST-NB does
    (``name:format``; ``` `name` ``` when the value is unknown)."""
    from myst_nb.core.variables import format_plain_text

    key, _, spec = body.rpartition(":") if ":" in body else (body, "", "")
    if key not in glue:
        return f"`{key}`"
    return format_plain_text(glue[key], spec)
