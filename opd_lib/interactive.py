"""Interactive figures that work in the rendered book, without a kernel.

A static HTML page cannot run an ipywidget: there is no Python behind it. What it can do is show a
figure whose every state was computed in advance. Each builder here calls the ``opd_lib.sim`` (or
``opd_lib.bounds``) function behind a chapter's widget once per value of a coarse grid of the
slider's values, and returns a Plotly figure holding one set of traces per value; the slider only
switches which set is visible, in the reader's browser.

The page loads ``plotly.min.js`` from the book's own ``_static`` folder (added by
``tools/offline_assets.py``), so :func:`show` emits the figure without the library. In Colab it
loads the library from Plotly's CDN instead.

Builders: :func:`error_propagation_figure` (Chapter 0), :func:`dagger_bounds_figure` (Chapter 2),
:func:`fdiv_morph_figure` (Chapter 3), :func:`gkd_lambda_figure` (Chapter 4),
:func:`pivot_clipping_figure` (Chapter 6). The generic pieces (:func:`slider_figure`,
:func:`figure_html`, :func:`show`, :class:`Frame`, :class:`Layout`) live in :mod:`opd_lib.slider`
and are re-exported here. Figures with several controls or a play button (Chapters 1, 5 and 8) are
in :mod:`opd_lib.interactive_grid`; :func:`figure_html` adds the script they need (:data:`GRID_JS`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from opd_lib import bounds
from opd_lib._threads import single_thread
from opd_lib.plotting import CORRECT, OFF_POLICY, ON_POLICY, WRONG
from opd_lib.slider import CSS_CLASS, FONT, GRID_JS, Frame, Layout, figure_html, show, slider_figure

__all__ = [
    "CSS_CLASS",
    "FONT",
    "Frame",
    "GRID_JS",
    "Layout",
    "dagger_bounds_figure",
    "error_propagation_figure",
    "fdiv_morph_figure",
    "figure_html",
    "gkd_lambda_figure",
    "pivot_clipping_figure",
    "show",
    "slider_figure",
]


# ------------------------------------------------------------------------------ the chapters


def _line(x, y, name, color, dash=None, width=2.5, legend=True, opacity=1.0) -> go.Scatter:
    return go.Scatter(
        x=np.asarray(x).tolist(),
        y=np.asarray(y).tolist(),
        name=name,
        mode="lines",
        line=dict(color=color, dash=dash, width=width),
        showlegend=legend,
        opacity=opacity,
    )


def error_propagation_figure(
    eps_values: Sequence[float],
    T: int = 60,
    lost_error_rate: float = 0.5,
    n_rollouts: int = 40,
    seed: int = 0,
    active: int | None = None,
) -> go.Figure:
    """Chapter 0: sampled generations of the copying and the practising student, and the exact
    expected mistakes, for each per-token error rate in ``eps_values`` (the slider)."""
    from opd_lib.sim import error_propagation as ep

    eps_values = [float(e) for e in eps_values]
    if not eps_values:
        raise ValueError("eps_values must not be empty")
    steps = np.arange(1, T + 1)
    raster = [[0.0, "#eef2f5"], [0.5, "#eef2f5"], [0.5, WRONG], [1.0, WRONG]]
    frames = []
    for eps in eps_values:
        traces, titles = [], []
        for col, mode in ((1, "copy"), (2, "practice")):
            wrong = ep.simulate_rollouts(eps, T, mode, n_rollouts, lost_error_rate, seed)
            heat = go.Heatmap(
                z=wrong.astype(int).tolist(),
                x=steps.tolist(),
                colorscale=raster,
                zmin=0,
                zmax=1,
                showscale=False,
                hovertemplate="step %{x}, run %{y}: %{z}<extra></extra>",
            )
            traces.append((heat, 1, col))
            who = "copying" if mode == "copy" else "practising"
            titles.append(f"{who}:<br>{wrong.sum(axis=1).mean():.1f} mistakes per run")
        copy = ep.expected_mistakes(eps, T, "copy", lost_error_rate)
        practice = ep.expected_mistakes(eps, T, "practice", lost_error_rate)
        legend = True  # only the visible frame's entries show in the legend
        traces += [
            (_line(steps, copy, "copying (exact)", OFF_POLICY, legend=legend), 1, 3),
            (_line(steps, practice, "practising (exact)", ON_POLICY, legend=legend), 1, 3),
            (
                _line(
                    steps,
                    eps * steps * (steps + 1) / 2,
                    "eps T(T+1)/2",
                    OFF_POLICY,
                    "dot",
                    1.5,
                    legend,
                ),
                1,
                3,
            ),
        ]
        titles.append(f"expected mistakes at T = {T}:<br>{copy[-1]:.1f} vs {practice[-1]:.1f}")
        frames.append(Frame(f"{eps:g}", traces, titles))
    fig = slider_figure(
        frames,
        Layout(cols=3, subplot_titles=["", "", ""], slider_prefix="per-token error rate eps = "),
        active=_middle(frames) if active is None else active,
    )
    for col in (1, 2):
        fig.update_xaxes(title_text="step", row=1, col=col)
        fig.update_yaxes(
            showticklabels=False, title_text="generation" if col == 1 else None, row=1, col=col
        )
    fig.update_xaxes(title_text="step T", row=1, col=3)
    fig.update_yaxes(title_text="mistakes so far", range=[0, T / 2], row=1, col=3)
    return fig


def dagger_bounds_figure(eps_values: Sequence[float], T_max: int = 200) -> go.Figure:
    """Chapter 2: the off-policy bound eps T(T+1)/2 and the on-policy cost eps T against T, linear
    and log-log, for each error rate in ``eps_values`` (the slider)."""
    T = np.arange(1, T_max + 1)
    static = []
    for col in (1, 2):
        static.append(
            (_line(T, T, "T (every step a mistake)", "grey", width=1.2, legend=col == 1), 1, col)
        )
    frames = []
    for eps in (float(e) for e in eps_values):
        off = bounds.dagger_bound_off_policy(eps, T)
        on = bounds.dagger_bound_on_policy(eps, T)
        traces = []
        for col in (1, 2):
            legend = col == 1  # only the visible frame's entries show in the legend
            traces.append(
                (_line(T, off, "off-policy bound eps T(T+1)/2", OFF_POLICY, legend=legend), 1, col)
            )
            traces.append(
                (_line(T, on, "on-policy cost eps T", ON_POLICY, "dash", legend=legend), 1, col)
            )
        titles = [
            f"T = {T_max}: off-policy {off[-1]:.1f}, on-policy {on[-1]:.2f}",
            f"log-log: slope 2 against slope 1 (ratio {(T_max + 1) / 2:.1f})",
        ]
        frames.append(Frame(f"{eps:g}", traces, titles))
    if not frames:
        raise ValueError("eps_values must not be empty")
    fig = slider_figure(
        frames,
        Layout(cols=2, subplot_titles=["", ""], slider_prefix="error rate eps = "),
        static=static,
        active=_middle(frames),
    )
    fig.update_xaxes(title_text="horizon T")
    fig.update_yaxes(title_text="bound on expected mistakes", range=[0, 1.2 * T_max], row=1, col=1)
    fig.update_xaxes(type="log", row=1, col=2)
    fig.update_yaxes(type="log", range=[-3, np.log10(10 * T_max)], row=1, col=2)
    return fig


def fdiv_morph_figure(
    betas: Sequence[float],
    init_mean: float = 1.5,
    left_weight: float = 0.6,
    separation: float = 2.5,
) -> go.Figure:
    """Chapter 3: the one-Gaussian student fitted to JSD_beta against a bimodal teacher, for each
    ``beta`` (the slider; 0 = forward KL, 1 = reverse KL, as in TRL)."""
    from opd_lib.sim import fdiv

    teacher = fdiv.bimodal_teacher(centers=(-separation, separation), left_weight=left_weight)
    static = [
        (
            go.Scatter(
                x=teacher.x.tolist(),
                y=teacher.probs.tolist(),
                name="teacher",
                mode="lines",
                fill="tozeroy",
                line=dict(color="grey", width=1.5),
                fillcolor="rgba(128,128,128,0.25)",
            ),
            1,
            1,
        )
    ]
    frames = []
    for beta in (float(b) for b in betas):
        kind = {0.0: "fkl", 1.0: "rkl"}.get(beta, "jsd")
        with single_thread():
            fit = fdiv.fit_student(teacher.probs, teacher.x, kind, beta=beta, init_mean=init_mean)
        s = fdiv.mode_summary(teacher, fit.probs)
        student = _line(teacher.x, fit.probs, "student (one Gaussian)", ON_POLICY)
        title = (
            f"beta = {beta:g}: student mass in the gap {s['gap']:.0%}, on the right mode "
            f"{s['right']:.0%} (mean {fit.mean:+.2f}, std {fit.std:.2f})"
        )
        frames.append(Frame(f"{beta:g}", [(student, 1, 1)], [title]))
    if not frames:
        raise ValueError("betas must not be empty")
    fig = slider_figure(
        frames,
        Layout(subplot_titles=[""], slider_prefix="beta (0 = forward KL, 1 = reverse KL) = "),
        static=static,
    )
    fig.update_xaxes(title_text="x")
    fig.update_yaxes(title_text="probability")
    return fig


def gkd_lambda_figure(
    lams: Sequence[float],
    beta: float = 0.5,
    metric: str = "mistakes",
    seed: int = 0,
    **train_kwargs,
) -> go.Figure:
    """Chapter 4: the GKD toy trained at each on-policy fraction ``lam`` (the slider) and fixed
    ``beta``: the learning curve of ``metric`` for the chosen lambda over faint curves for all, and
    the final ``metric`` against lambda."""
    from opd_lib.sim import gkd_toy

    runs = [gkd_toy.train_gkd_toy(float(lam), beta, seed=seed, **train_kwargs) for lam in lams]
    if not runs:
        raise ValueError("lams must not be empty")
    curves = [np.array(r.curve(metric)) for r in runs]
    finals = [float(getattr(r.final, metric)) for r in runs]
    static = [
        (_line(r.steps, c, "other lambdas", "lightgrey", width=1.2, legend=i == 0), 1, 1)
        for i, (r, c) in enumerate(zip(runs, curves, strict=True))
    ]
    static.append((_line(list(lams), finals, f"final {metric}", "grey", width=1.5), 1, 2))
    frames = []
    for lam, run, curve, final in zip(lams, runs, curves, finals, strict=True):
        color = _blend(OFF_POLICY, ON_POLICY, float(lam))
        traces = [
            (_line(run.steps, curve, "chosen lambda", color, width=3), 1, 1),
            (
                go.Scatter(
                    x=[float(lam)],
                    y=[final],
                    mode="markers",
                    showlegend=False,
                    marker=dict(size=13, color=color, line=dict(color="black", width=1)),
                ),
                1,
                2,
            ),
        ]
        titles = [
            f"lambda = {float(lam):g}: {metric} {final:.2f} after {int(run.steps[-1])} steps",
            f"final {metric} against lambda (beta = {beta:g})",
        ]
        frames.append(Frame(f"{float(lam):g}", traces, titles))
    fig = slider_figure(
        frames,
        Layout(cols=2, subplot_titles=["", ""], slider_prefix="lambda (on-policy fraction) = "),
        static=static,
    )
    fig.update_xaxes(title_text="training step", row=1, col=1)
    fig.update_yaxes(title_text=f"{metric} (own samples)", type="log", row=1, col=1)
    fig.update_xaxes(title_text="lambda", row=1, col=2)
    fig.update_yaxes(title_text=f"final {metric}", row=1, col=2)
    return fig


def pivot_clipping_figure(
    caps: Sequence[float],
    pivot_student_prob: float = 0.01,
    pivot_teacher_prob: float = 0.6,
    n_tokens: int = 24,
) -> go.Figure:
    """Chapter 6: per-token gradient norms of one rollout with a pivot token, with no clip,
    per-token and point-wise clipping at each cap in ``caps`` (the slider)."""
    from opd_lib.sim import self_distill as sd

    student, teacher = sd.synthetic_pivot_batch(n_tokens, pivot_student_prob, pivot_teacher_prob)
    colors = [WRONG if i == n_tokens // 2 else CORRECT for i in range(n_tokens)]
    names = {"none": "no clip", "token": "per-token clip", "pointwise": "point-wise clip"}
    frames = []
    for cap in (float(c) for c in caps):
        with single_thread():
            cmp = sd.clipped_updates(student, teacher, max_value=cap)
        traces, titles = [], []
        for col, mode in enumerate(("none", "token", "pointwise"), start=1):
            grads = cmp.per_token_grad[mode][0].tolist()
            traces.append(
                (
                    go.Bar(
                        x=list(range(n_tokens)),
                        y=grads,
                        marker_color=colors,
                        showlegend=False,
                        hovertemplate="token %{x}: |grad| %{y:.4f}<extra></extra>",
                    ),
                    1,
                    col,
                )
            )
            titles.append(
                f"{names[mode]}:<br>loss {cmp.loss[mode]:+.3f}, |grad| {cmp.grad_norm[mode]:.3f}"
            )
        frames.append(Frame(f"{cap:g}", traces, titles))
    if not frames:
        raise ValueError("caps must not be empty")
    fig = slider_figure(
        frames,
        Layout(cols=3, subplot_titles=["", "", ""], slider_prefix="clip cap c = "),
    )
    top = max(max(t.y) for f in frames for t, _, _ in f.traces)
    fig.update_yaxes(range=[0, 1.05 * top], title_text="token's |grad|", row=1, col=1)
    fig.update_yaxes(range=[0, 1.05 * top], row=1, col=2)
    fig.update_yaxes(range=[0, 1.05 * top], row=1, col=3)
    fig.update_xaxes(title_text="token (orange: the pivot)", row=1, col=2)
    fig.update_layout(showlegend=False)
    return fig


def _middle(frames: Sequence[Frame]) -> int:
    return len(frames) // 2


def _blend(a: str, b: str, t: float) -> str:
    """Colour ``t`` of the way from hex colour ``a`` to ``b``."""
    ca = np.array([int(a[i : i + 2], 16) for i in (1, 3, 5)])
    cb = np.array([int(b[i : i + 2], 16) for i in (1, 3, 5)])
    r, g, bl = np.round((1 - t) * ca + t * cb).astype(int)
    return f"#{r:02x}{g:02x}{bl:02x}"
