"""Kernel-free figures with several controls, and a play button: Chapters 1, 5 and 8.

:func:`opd_lib.slider.slider_figure` handles one knob. A figure with several knobs (a method
chosen by buttons, a lambda and a beta on sliders, a training step with a play button) shows one
precomputed frame per *combination* of their positions. Plotly's controls cannot combine their
states on their own, so :func:`grid_figure` sets every control's method to ``"skip"`` and adds a
short script (:data:`opd_lib.slider.GRID_JS`, which :func:`opd_lib.slider.figure_html`
adds to the figure's HTML) that keeps the position of every knob, and
on any change shows the frame of the current combination (``Plotly.update`` of the traces'
visibility and the subplot titles). The play button steps its slider to the end, one frame every
``play_ms`` milliseconds. The grid (which trace belongs to which frame, which frame each
combination shows) travels in ``layout.meta["opd_grid"]``.

The builders that use it (Chapters 1, 5 and 8) are in :mod:`opd_lib.live_figures`; the chapters
reach both through :mod:`opd_lib.interactive_grid`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from opd_lib.slider import FONT, Frame, Layout


@dataclass
class Knob:
    """One control: its ``caption`` (shown above a slider; a row of buttons shows only its
    ``labels``), the ``labels`` of its positions, ``kind`` ("slider" or "buttons"), the position
    shown first, and (sliders only) whether a play button runs it."""

    caption: str
    labels: list[str]
    kind: str = "slider"
    active: int = 0
    play: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("slider", "buttons"):
            raise ValueError(f"kind must be 'slider' or 'buttons', got {self.kind!r}")
        if len(self.labels) < 2:
            raise ValueError(f"knob {self.caption!r} needs at least two positions")
        if not 0 <= self.active < len(self.labels):
            raise ValueError(f"knob {self.caption!r}: active must index its labels")
        if self.play and self.kind != "slider":
            raise ValueError("only a slider can have a play button")


def grid_figure(
    knobs: Sequence[Knob],
    frames: Sequence[Frame],
    frame_of: Callable[..., int],
    layout: Layout,
    static: Sequence[tuple[go.BaseTraceType, int, int]] = (),
    play_ms: int = 150,
    shared: Sequence[tuple[go.BaseTraceType, int, int, Sequence[int]]] = (),
) -> go.Figure:
    """A figure whose controls ``knobs`` together choose one of ``frames``:
    ``frame_of(i, j, ...)`` (one position per knob) gives the index of the frame to show. Every
    frame must set its subplot titles (or none of them may). ``static`` traces are always shown;
    a ``shared`` trace ``(trace, row, col, frames)`` whenever one of its ``frames`` is (stored
    once instead of once per frame). Show it with :func:`opd_lib.interactive.show` (the script
    is attached to the figure)."""
    if not knobs or not frames:
        raise ValueError("grid_figure needs at least one knob and one frame")
    if sum(k.play for k in knobs) > 1:
        raise ValueError("at most one knob can have a play button")
    if not isinstance(play_ms, int) or play_ms < 1:
        raise ValueError(f"play_ms must be a positive int, got {play_ms!r}")
    n_titles = layout.rows * layout.cols
    combos = list(itertools.product(*(range(len(k.labels)) for k in knobs)))
    groups = {}
    for combo in combos:
        g = frame_of(*combo)
        if not 0 <= g < len(frames):
            raise ValueError(f"frame_of{combo} = {g} does not index a frame")
        groups[",".join(map(str, combo))] = g
    titles = [list(f.titles) if f.titles is not None else [" "] * n_titles for f in frames]
    if any(len(t) != n_titles for t in titles):
        raise ValueError(f"every frame must set {n_titles} subplot titles")
    first = groups[",".join(str(k.active) for k in knobs)]

    fig = make_subplots(
        rows=layout.rows, cols=layout.cols, subplot_titles=[t or " " for t in titles[first]]
    )
    owner: list[int | list[int]] = []
    for trace, row, col in static:
        fig.add_trace(trace, row=row, col=col)
        owner.append(-1)
    for trace, row, col, owners in shared:
        owners = [int(g) for g in owners]
        if not owners or not all(0 <= g < len(frames) for g in owners):
            raise ValueError(f"a shared trace's frames must index frames, got {owners}")
        trace.visible = first in owners
        fig.add_trace(trace, row=row, col=col)
        owner.append(owners)
    for g, frame in enumerate(frames):
        for trace, row, col in frame.traces:
            trace.visible = g == first
            fig.add_trace(trace, row=row, col=col)
            owner.append(g)

    sliders, menus, spec_knobs, play = [], [], [], None
    slider_knobs = [k for k in knobs if k.kind == "slider"]
    width = 1.0 / max(1, len(slider_knobs))
    for knob in knobs:
        if knob.kind == "slider":
            i = len(sliders)
            x0 = i * width
            sliders.append(
                dict(
                    active=knob.active,
                    x=x0,
                    len=width - 0.03,
                    currentvalue=dict(prefix=knob.caption, font=dict(size=13)),
                    pad=dict(t=95, b=10),
                    transition=dict(duration=0),
                    steps=[dict(method="skip", label=lab, args=[None]) for lab in knob.labels],
                )
            )
            spec_knobs.append(
                dict(kind="slider", index=i, size=len(knob.labels), active=knob.active)
            )
            if knob.play:
                play = dict(knob=len(spec_knobs) - 1, ms=int(play_ms))
        else:
            i = len(menus)
            menus.append(
                dict(
                    type="buttons",
                    direction="right",
                    active=knob.active,
                    showactive=True,
                    x=0.0,
                    xanchor="left",
                    y=1.0,
                    yanchor="bottom",
                    pad=dict(b=45 + 40 * i),
                    buttons=[dict(method="skip", label=lab, args=[None]) for lab in knob.labels],
                )
            )
            spec_knobs.append(dict(kind="menu", index=i, size=len(knob.labels), active=knob.active))
    if play is not None:  # its own row above the plot, clear of every slider at any width
        play["menu"] = len(menus)
        menus.append(
            dict(
                type="buttons",
                showactive=False,
                x=0.0,
                xanchor="left",
                y=1.0,
                yanchor="bottom",
                pad=dict(b=45 + 40 * len(menus)),
                buttons=[dict(method="skip", label="\u25b6 play", args=[None])],
            )
        )
    fig.update_layout(
        height=layout.height + 150,
        margin=dict(l=50, r=20, t=75 + 40 * len(menus), b=10),
        font=FONT,
        template="plotly_white",
        showlegend=True,
        legend=dict(orientation="h", yanchor="top", y=-0.12, x=0),
        sliders=sliders,
        updatemenus=menus,
        meta=dict(
            opd_grid=dict(knobs=spec_knobs, groups=groups, owner=owner, titles=titles, play=play)
        ),
    )
    for annotation in fig.layout.annotations:
        annotation.font = dict(size=12)
    return fig


def rounded_line(x, y, name, color, dash=None, width=2.5, legend=True, digits=4) -> go.Scatter:
    """A line trace with its data rounded to ``digits`` decimals (smaller pages)."""
    return go.Scatter(
        x=np.round(np.asarray(x, dtype=float), digits).tolist(),
        y=np.round(np.asarray(y, dtype=float), digits).tolist(),
        name=name,
        mode="lines",
        line=dict(color=color, dash=dash, width=width),
        showlegend=legend,
    )
