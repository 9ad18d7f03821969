"""Kernel-free figures with several controls, and a play button: Chapters 1, 5 and 8.

Each builder computes every frame with the ``opd_lib.sim`` function behind its chapter's widget
and hands them to :func:`opd_lib.slider_grid.grid_figure`: :func:`drift_figure` (Chapter 1),
:func:`reward_extrapolation_figure` (Chapter 5), :func:`pipeline_figure` (Chapter 8).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from opd_lib.plotting import CORRECT, OFF_POLICY, ON_POLICY, WRONG
from opd_lib.slider import Frame, Layout
from opd_lib.slider_grid import Knob, grid_figure, rounded_line

_RASTER = [[0.0, "#eef2f5"], [0.5, "#eef2f5"], [0.5, WRONG], [1.0, WRONG]]


def drift_figure(pair, T: int = 20, n_rollouts: int = 30, seed: int = 0, play_ms: int = 250):
    """Chapter 1: a play control over positions ``t = 1..T`` of a :mod:`opd_lib.sim.drift` chain.

    Panels: the teacher's and the student's sampled generations revealed up to ``t`` (orange:
    an unfamiliar token); the distribution of the token at ``t`` under each writer; and the
    per-position KL of the student to the teacher summed up to ``t``, on the student's own
    prefixes and on the teacher's.
    """
    from opd_lib.sim import drift

    if not isinstance(T, int) or T < 2:
        raise ValueError(f"T must be an int >= 2, got {T!r}")
    positions = np.arange(1, T + 1)
    lost = {
        w: ~pair.familiar[drift.sample_tokens(pair, T, n_rollouts, w, seed)]
        for w in ("teacher", "student")
    }
    # Row t of state_marginals(T + 1) is the distribution of y_t, for t = 1..T.
    token = {w: drift.state_marginals(pair, T + 1, w)[1:] for w in ("teacher", "student")}
    summed = {w: np.cumsum(drift.expected_position_kl(pair, T, w)) for w in ("teacher", "student")}
    vocab = [f"{v}" + ("" if pair.familiar[v] else " (unfamiliar)") for v in range(pair.vocab_size)]
    colors = {"teacher": OFF_POLICY, "student": ON_POLICY}
    names = {
        "teacher": "prefix by the teacher (training)",
        "student": "prefix by the student (generation)",
    }
    static = [
        (rounded_line(positions, summed[w], None, colors[w], "dot", 1.2, legend=False), 2, 2)
        for w in ("teacher", "student")
    ]
    frames = []
    for t in positions:
        traces, titles = [], []
        for col, w in ((1, "teacher"), (2, "student")):
            z = np.where(positions[None, :] <= t, lost[w].astype(float), np.nan)
            traces.append(
                (
                    go.Heatmap(
                        z=[[None if np.isnan(v) else int(v) for v in row] for row in z],
                        x=positions.tolist(),
                        colorscale=_RASTER,
                        zmin=0,
                        zmax=1,
                        showscale=False,
                        hovertemplate="position %{x}, run %{y}: %{z}<extra></extra>",
                    ),
                    1,
                    col,
                )
            )
            titles.append(f"the {w} writes:<br>{lost[w][:, :t].mean():.0%} unfamiliar so far")
        for w in ("teacher", "student"):
            traces.append(
                (
                    go.Bar(
                        x=vocab,
                        y=np.round(token[w][t - 1], 4).tolist(),
                        name=f"{w}'s token y_t",
                        marker_color=colors[w],
                        showlegend=False,
                    ),
                    2,
                    1,
                )
            )
            traces.append(
                (
                    go.Scatter(
                        x=positions[:t].tolist(),
                        y=np.round(summed[w][:t], 4).tolist(),
                        name=names[w],
                        mode="lines+markers",
                        line=dict(color=colors[w], width=2.5),
                        marker=dict(size=[0] * (t - 1) + [9], color=colors[w]),
                    ),
                    2,
                    2,
                )
            )
        lost_t = {w: token[w][t - 1][~pair.familiar].sum() for w in token}
        titles.append(
            f"token at position {t}: unfamiliar with probability<br>"
            f"{lost_t['teacher']:.2f} (teacher), {lost_t['student']:.2f} (student)"
        )
        titles.append(
            f"summed KL to position {t}: {summed['student'][t - 1]:.2f} "
            f"on its own prefixes,<br>{summed['teacher'][t - 1]:.3f} on the teacher's"
        )
        frames.append(Frame(f"{t}", traces, titles))
    knob = Knob("position t = ", [str(t) for t in positions], active=T - 1, play=True)
    fig = grid_figure(
        [knob],
        frames,
        lambda s: s,
        Layout(rows=2, cols=2, height=620),
        static=static,
        play_ms=play_ms,
    )
    for col in (1, 2):
        fig.update_xaxes(title_text="position t", range=[0.5, T + 0.5], row=1, col=col)
        fig.update_yaxes(
            showticklabels=False, title_text="generation" if col == 1 else None, row=1, col=col
        )
    fig.update_xaxes(title_text="token", row=2, col=1)
    fig.update_yaxes(title_text="probability", range=[0, 1], row=2, col=1)
    fig.update_xaxes(title_text="position t", range=[0.5, T + 0.5], row=2, col=2)
    top = 1.05 * max(summed["student"][-1], summed["teacher"][-1])
    fig.update_yaxes(title_text="KL summed to t (nats)", range=[0, top], row=2, col=2)
    return fig


def reward_extrapolation_figure(
    lams: Sequence[float] = (1.5, 2.0, 2.5, 3.0), play_ms: int = 150, **answer_kwargs
) -> go.Figure:
    """Chapter 5: the G-OPD reward landscape (top) and the student's policy climbing it (bottom),
    from :mod:`opd_lib.sim.reward_extrapolation`. Controls: extrapolation off (``lam = 1``, plain
    OPD) or on, its strength ``lam`` (a slider over ``lams``), and the training step (with play).
    """
    from opd_lib.sim import reward_extrapolation as rx

    lams = [float(v) for v in lams]
    if len(lams) < 2 or min(lams) <= 1:
        raise ValueError(f"lams needs two or more values above 1 (1 is 'off'), got {lams}")
    ans = rx.answers(**answer_kwargs)
    x = ans.x
    teacher_mean, ref_mean = float(ans.teacher @ x), float(ans.reference @ x)
    static = [
        (rounded_line(x, ans.log_teacher, "teacher's log-probability", "grey", "dash", 1.5), 1, 1),
        (
            go.Scatter(
                x=np.round(x, 4).tolist(),
                y=np.round(ans.teacher, 5).tolist(),
                name="teacher",
                mode="lines",
                fill="tozeroy",
                line=dict(color="grey", width=1.2),
                fillcolor="rgba(128,128,128,0.25)",
            ),
            2,
            1,
        ),
        (rounded_line(x, ans.reference, "reference (student before)", "grey", "dot", 1.5), 2, 1),
    ]
    frames, climbs, shared = [], [], []
    for lam in [1.0, *lams]:
        run = rx.climb(ans, lam)
        climbs.append(run)
        mine = range(len(frames), len(frames) + len(run.steps))
        landscape = rounded_line(
            x, rx.landscape(ans, lam), f"reward landscape (lam = {lam:g})", OFF_POLICY
        )
        shared.append((landscape, 1, 1, mine))
        means = run.means(x)
        for step, policy, mean in zip(run.steps, run.policies, means, strict=True):
            traces = [(rounded_line(x, policy, "student", ON_POLICY, width=3, digits=5), 2, 1)]
            where = rx.relative_to_teacher(mean, teacher_mean)
            titles = [
                f"what the student climbs:<br>lam log pi_T + (1 - lam) log pi_ref, lam = {lam:g}",
                f"step {step}: the student's mean answer {mean:+.2f}<br>({where}: teacher "
                f"{teacher_mean:+.2f}, reference {ref_mean:+.2f})",
            ]
            frames.append(Frame(f"{lam:g}/{step}", traces, titles))
    n_steps = len(climbs[0].steps)
    knobs = [
        Knob(
            "G-OPD extrapolation",
            ["extrapolation off (lam = 1: plain OPD)", "extrapolation on"],
            kind="buttons",
            active=1,
        ),
        Knob("strength lam = ", [f"{v:g}" for v in lams], active=1),
        Knob("step ", [str(s) for s in climbs[0].steps], active=n_steps - 1, play=True),
    ]

    def frame_of(on: int, strength: int, step: int) -> int:
        return (1 + strength if on else 0) * n_steps + step

    fig = grid_figure(
        knobs,
        frames,
        frame_of,
        Layout(rows=2, cols=1, height=560),
        static=static,
        play_ms=play_ms,
        shared=shared,
    )
    fig.update_yaxes(title_text="log-probability", range=[-12, 1], row=1, col=1)
    fig.update_xaxes(title_text="answer", row=2, col=1)
    top = max(float(c.policies.max()) for c in climbs)
    fig.update_yaxes(title_text="probability", range=[0, 1.05 * top], row=2, col=1)
    return fig


_METHOD_COLORS = {
    "SFT": "#7f7f7f",
    "KD": OFF_POLICY,
    "GKD": "#8e44ad",
    "OPD": ON_POLICY,
    "RL": CORRECT,
    "OPSD": WRONG,
}
_CURVES = (
    ("divergence", "divergence to the teacher"),
    ("coverage", "mode coverage"),
    ("reward", "reward"),
    ("cost", "cost"),
)


def pipeline_figure(
    lams: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    betas: Sequence[float] = (0.0, 0.5, 1.0),
    budgets: Sequence[int] = (25, 50, 100, 150, 200),
    runs: dict | None = None,
    **train_kwargs,
) -> go.Figure:
    """Chapter 8: every method of :mod:`opd_lib.sim.pipeline` on one task. Controls: the method
    (buttons), GKD's lambda and beta (sliders), and the training budget in steps (a slider). Four
    panels: divergence to the teacher, mode coverage, reward and cost, against the step; the
    chosen run bold up to the budget, every method's run (GKD at the middle lambda and beta) faint.
    ``runs``: the output of :func:`opd_lib.sim.pipeline.run_grid` for these ``lams`` and
    ``betas``, trained for at least ``max(budgets)`` steps (computed here when omitted).
    """
    from opd_lib.sim import pipeline

    lams, betas = [float(v) for v in lams], [float(v) for v in betas]
    budgets = sorted(int(b) for b in budgets)
    if len(lams) < 2 or len(betas) < 2 or len(budgets) < 2:
        raise ValueError("lams, betas and budgets need two or more values each")
    if runs is None:
        train_kwargs["steps"] = budgets[-1]
        runs = pipeline.run_grid(tuple(lams), tuple(betas), **train_kwargs)
    elif train_kwargs:
        raise ValueError("pass either runs or training arguments, not both")
    keys = [("GKD", lam, b) for lam in lams for b in betas]
    keys += [(m, *pipeline.setting(m)) for m in pipeline.METHODS if m != "GKD"]
    missing = [k for k in keys if k not in runs]
    if missing or any(runs[k].steps[-1] < budgets[-1] for k in keys):
        raise ValueError(f"runs must hold every setting trained to {budgets[-1]} steps: {missing}")
    mid = ("GKD", lams[len(lams) // 2], betas[len(betas) // 2])
    cells = [(1, 1), (1, 2), (2, 1), (2, 2)]
    scale = {"cost": 1e-3}
    static = []
    for m in pipeline.METHODS:
        run = runs[mid] if m == "GKD" else runs[(m, *pipeline.setting(m))]
        for (name, _), (row, col) in zip(_CURVES, cells, strict=True):
            static.append(
                (
                    rounded_line(
                        run.steps,
                        run.curve(name) * scale.get(name, 1.0),
                        m,
                        _METHOD_COLORS[m],
                        width=1.2,
                        legend=name == "divergence",
                    ),
                    row,
                    col,
                )
            )
    for trace, _, _ in static:
        trace.opacity = 0.35
        trace.legendgroup = trace.name
    frames = []
    for key in keys:
        run = runs[key]
        label = f"GKD (lambda = {key[1]:g}, beta = {key[2]:g})" if key[0] == "GKD" else key[0]
        for budget in budgets:
            n = int(np.searchsorted(run.steps, budget, side="right"))
            traces = []
            for (name, _), (row, col) in zip(_CURVES, cells, strict=True):
                y = run.curve(name)[:n] * scale.get(name, 1.0)
                traces.append(
                    (
                        go.Scatter(
                            x=run.steps[:n].tolist(),
                            y=np.round(y, 4).tolist(),
                            name=label,
                            mode="lines+markers",
                            showlegend=False,
                            line=dict(color=_METHOD_COLORS[key[0]], width=3.5),
                            marker=dict(size=[0] * (n - 1) + [10], color=_METHOD_COLORS[key[0]]),
                        ),
                        row,
                        col,
                    )
                )
            k = n - 1
            titles = [
                f"{label}, {budget} steps:<br>KL(student || teacher) per token "
                f"{run.divergence[k]:.3f}",
                f"mode coverage {run.coverage[k]:.0%}",
                f"reward (share of valid steps) {run.reward[k]:.3f}",
                f"cost {run.cost[k] / 1e3:,.0f}k tokens",
            ]
            frames.append(Frame(f"{label}/{budget}", traces, titles))
    index = {key: i for i, key in enumerate(keys)}
    methods = list(pipeline.METHODS)

    def frame_of(method: int, lam: int, beta: int, budget: int) -> int:
        m = methods[method]
        key = ("GKD", lams[lam], betas[beta]) if m == "GKD" else (m, *pipeline.setting(m))
        return index[key] * len(budgets) + budget

    knobs = [
        Knob("method", methods, kind="buttons", active=methods.index("GKD")),
        Knob("GKD lambda = ", [f"{v:g}" for v in lams], active=len(lams) // 2),
        Knob("GKD beta = ", [f"{v:g}" for v in betas], active=len(betas) // 2),
        Knob("steps ", [str(b) for b in budgets], active=len(budgets) - 1),
    ]
    fig = grid_figure(knobs, frames, frame_of, Layout(rows=2, cols=2, height=620), static=static)
    fig.update_yaxes(title_text="KL per token (log)", type="log", row=1, col=1)
    fig.update_yaxes(title_text="coverage", range=[0, 1.05], row=1, col=2)
    fig.update_yaxes(title_text="share of valid steps", range=[0, 1.02], row=2, col=1)
    fig.update_yaxes(title_text="thousand tokens", row=2, col=2)
    for row, col in cells:
        fig.update_xaxes(
            title_text="training step" if row == 2 else None,
            range=[0, budgets[-1] * 1.02],
            row=row,
            col=col,
        )
    return fig
