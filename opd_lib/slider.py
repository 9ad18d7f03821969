"""The machinery of a kernel-free interactive figure: one slider, and the HTML around it.

A static HTML page cannot run an ipywidget: there is no Python behind it. What it can do is show a
figure whose every state was computed in advance. :func:`slider_figure` takes one :class:`Frame`
(a set of traces) per slider position and returns a Plotly figure in which the slider only
switches which set is visible, in the reader's browser. :func:`figure_html` wraps a figure in the
book's ``<div class="opd-interactive">`` (adding :data:`GRID_JS` to the several-control figures of
:mod:`opd_lib.slider_grid`); :func:`show` displays it in a notebook. The chapters reach all of
these through :mod:`opd_lib.interactive`.

The page loads ``plotly.min.js`` from the book's own ``_static`` folder (added by
``tools/offline_assets.py``), so :func:`show` emits the figure without the library. In Colab it
loads the library from Plotly's CDN instead.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import plotly.graph_objects as go
from plotly.subplots import make_subplots

CSS_CLASS = "opd-interactive"
"""Class of the ``<div>`` around every figure (the browser test looks for it)."""

FONT = dict(family="Helvetica, Arial, sans-serif", size=12)


@dataclass
class Frame:
    """One slider position: its label, the traces it shows, and the subplot titles it sets.

    ``traces`` holds ``(trace, row, col)`` triples (1-based subplot position). ``titles`` replaces
    the subplot titles in order (``None`` keeps the figure's own).
    """

    label: str
    traces: list[tuple[go.BaseTraceType, int, int]]
    titles: list[str] | None = None


@dataclass
class Layout:
    """Shape of a :func:`slider_figure`: the subplot grid and the slider's caption."""

    rows: int = 1
    cols: int = 1
    subplot_titles: list[str] = field(default_factory=list)
    slider_prefix: str = ""
    height: int = 380


def slider_figure(
    frames: Sequence[Frame],
    layout: Layout,
    static: Sequence[tuple[go.BaseTraceType, int, int]] = (),
    active: int = 0,
) -> go.Figure:
    """A figure with one slider that shows ``frames[k]`` (and the ``static`` traces) at position k.

    Every frame's traces are in the figure; each slider step sets which ones are visible (and the
    subplot titles), so moving the slider needs only plotly.js, no Python.
    """
    if not frames:
        raise ValueError("slider_figure needs at least one frame")
    if not 0 <= active < len(frames):
        raise ValueError(f"active must index a frame (0..{len(frames) - 1}), got {active}")
    n_titles = layout.rows * layout.cols
    titles = list(layout.subplot_titles) or [""] * n_titles
    if len(titles) != n_titles:
        raise ValueError(f"need {n_titles} subplot titles, got {len(titles)}")
    for frame in frames:
        if frame.titles is not None and len(frame.titles) != n_titles:
            raise ValueError(
                f"frame {frame.label!r} sets {len(frame.titles)} titles, need {n_titles}"
            )

    if frames[active].titles is not None:
        titles = list(frames[active].titles)
    # make_subplots makes no annotation for an empty title, and the steps address them by index.
    titles = [t or " " for t in titles]
    fig = make_subplots(rows=layout.rows, cols=layout.cols, subplot_titles=titles)
    owner: list[int | None] = []  # which frame each trace belongs to (None: always shown)
    for trace, row, col in static:
        fig.add_trace(trace, row=row, col=col)
        owner.append(None)
    for k, frame in enumerate(frames):
        for trace, row, col in frame.traces:
            trace.visible = k == active
            fig.add_trace(trace, row=row, col=col)
            owner.append(k)

    steps = []
    for k, frame in enumerate(frames):
        visible = [o is None or o == k for o in owner]
        relayout = {}
        for i, text in enumerate(frame.titles or []):
            relayout[f"annotations[{i}].text"] = text or " "
        steps.append(
            dict(method="update", label=frame.label, args=[{"visible": visible}, relayout])
        )
    fig.update_layout(
        height=layout.height,
        margin=dict(l=50, r=20, t=75, b=10),
        font=FONT,
        template="plotly_white",
        showlegend=True,
        legend=dict(orientation="h", yanchor="top", y=-0.18, x=0),
        sliders=[
            dict(
                active=active,
                currentvalue=dict(prefix=layout.slider_prefix, font=dict(size=13)),
                pad=dict(t=105, b=10),
                transition=dict(duration=0),
                steps=steps,
            )
        ],
    )
    for annotation in fig.layout.annotations:
        annotation.font = dict(size=12)
    fig.update_layout(height=layout.height + 150)  # room for the legend and the slider
    return fig


GRID_JS = """
(function () {
  var gd = document.getElementById('{plot_id}');
  var spec = gd.layout.meta.opd_grid;
  var state = spec.knobs.map(function (k) { return k.active; });
  var playing = false;
  function show() {
    var g = spec.groups[state.join(',')];
    var visible = spec.owner.map(function (o) {
      return o === -1 || o === g || (Array.isArray(o) && o.indexOf(g) >= 0);
    });
    var titles = {};
    spec.titles[g].forEach(function (t, i) { titles['annotations[' + i + '].text'] = t; });
    return Plotly.update(gd, {visible: visible}, titles);
  }
  function knobOf(kind, index) {
    for (var k = 0; k < spec.knobs.length; k++) {
      if (spec.knobs[k].kind === kind && spec.knobs[k].index === index) { return k; }
    }
    return -1;
  }
  function play() {
    if (playing) { return; }
    playing = true;
    var k = spec.play.knob, last = spec.knobs[k].size - 1, s = spec.knobs[k].index;
    if (state[k] >= last) { state[k] = 0; }
    (function tick() {
      var rel = {};
      rel['sliders[' + s + '].active'] = state[k];
      Plotly.relayout(gd, rel).then(show).then(function () {
        if (playing && state[k] < last) { state[k] += 1; setTimeout(tick, spec.play.ms); }
        else { playing = false; }
      });
    })();
  }
  gd.on('plotly_sliderchange', function (e) {
    var k = knobOf('slider', e.slider._index);
    if (k < 0) { return; }
    if (spec.play && k === spec.play.knob) { playing = false; }
    state[k] = e.slider.active;
    show();
  });
  gd.on('plotly_buttonclicked', function (e) {
    if (spec.play && e.menu._index === spec.play.menu) { play(); return; }
    var k = knobOf('menu', e.menu._index);
    if (k >= 0) { state[k] = e.active; show(); }
  });
})();
"""
"""The script of a figure with several controls (:func:`opd_lib.interactive_grid.grid_figure`):
it keeps every control's position and shows the frame of their combination (``{plot_id}`` is
filled in by plotly)."""


def figure_html(fig: go.Figure, name: str, include_plotlyjs: bool | str = False) -> str:
    """The figure as an HTML fragment, wrapped in ``<div class="opd-interactive">``.

    ``name`` (letters, digits, ``-``, ``_``) fixes the plot's element id, so rebuilding the book
    gives the same page. A :func:`opd_lib.interactive_grid.grid_figure` brings its script.
    """
    if not re.fullmatch(r"[A-Za-z][\w-]*", name):
        raise ValueError(f"name must be letters, digits, '-' or '_', got {name!r}")
    grid = isinstance(fig.layout.meta, dict) and "opd_grid" in fig.layout.meta
    post_script = GRID_JS if grid else None
    body = fig.to_html(
        full_html=False,
        include_plotlyjs=include_plotlyjs,
        div_id=f"opd-fig-{name}",
        post_script=post_script,
        config=dict(displaylogo=False, responsive=True, modeBarButtonsToRemove=["select2d"]),
    )
    return f'<div class="{CSS_CLASS}" data-figure="{name}">{body}</div>'


def show(fig: go.Figure, name: str):
    """Display ``fig`` in a notebook: plotly.js from the book's build, or from the CDN in Colab."""
    from IPython.display import HTML

    in_colab = "google.colab" in sys.modules
    return HTML(figure_html(fig, name, include_plotlyjs="cdn" if in_colab else False))
