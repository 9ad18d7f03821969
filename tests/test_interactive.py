"""opd_lib.interactive: the kernel-free figures hold exactly what opd_lib.sim computes."""

from __future__ import annotations

import sys

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from opd_lib import bounds, interactive
from opd_lib.sim import error_propagation, fdiv, gkd_toy
from opd_lib.sim import self_distill as sd


def line(y, name="a"):
    return go.Scatter(x=list(range(len(y))), y=list(y), name=name)


def visible_at(fig, step):
    return fig.layout.sliders[0].steps[step].args[0]["visible"]


def test_slider_steps_switch_between_frames_and_keep_static_traces():
    frames = [
        interactive.Frame("a", [(line([0, 1]), 1, 1), (line([1, 1]), 1, 2)], ["a1", "a2"]),
        interactive.Frame("b", [(line([2, 3]), 1, 1), (line([3, 3]), 1, 2)], ["b1", "b2"]),
    ]
    static = [(line([5, 5], "static"), 1, 1)]
    fig = interactive.slider_figure(
        frames, interactive.Layout(cols=2, subplot_titles=["", ""]), static=static, active=1
    )
    assert len(fig.data) == 5
    assert [t.visible for t in fig.data] == [None, False, False, True, True]
    assert visible_at(fig, 0) == [True, True, True, False, False]
    assert visible_at(fig, 1) == [True, False, False, True, True]
    assert [a.text for a in fig.layout.annotations] == ["b1", "b2"]
    assert fig.layout.sliders[0].steps[0].args[1] == {
        "annotations[0].text": "a1",
        "annotations[1].text": "a2",
    }
    assert fig.layout.sliders[0].active == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(frames=[]), "at least one frame"),
        (dict(active=3), "active must index"),
        (dict(layout=interactive.Layout(cols=2, subplot_titles=["x"])), "subplot titles"),
    ],
)
def test_slider_figure_rejects_bad_input(kwargs, message):
    args = dict(frames=[interactive.Frame("a", [(line([1]), 1, 1)])], layout=interactive.Layout())
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        interactive.slider_figure(**args)


def test_figure_html_is_deterministic_and_does_not_inline_plotly():
    fig = interactive.dagger_bounds_figure([0.01, 0.02], T_max=20)
    html = interactive.figure_html(fig, "x-1")
    assert html == interactive.figure_html(
        interactive.dagger_bounds_figure([0.01, 0.02], 20), "x-1"
    )
    assert html.startswith('<div class="opd-interactive" data-figure="x-1">')
    assert 'id="opd-fig-x-1"' in html
    assert len(html) < 100_000  # the 4.8 MB library is served once by the book, not per figure
    with pytest.raises(ValueError, match="name"):
        interactive.figure_html(fig, "bad name")


def test_show_uses_the_cdn_only_in_colab(monkeypatch):
    fig = interactive.dagger_bounds_figure([0.01], T_max=5)
    assert "cdn.plot.ly" not in interactive.show(fig, "a").data
    monkeypatch.setitem(sys.modules, "google.colab", object())
    assert "cdn.plot.ly" in interactive.show(fig, "a").data


def test_error_propagation_figure_shows_the_simulation():
    eps_values, T = [0.01, 0.05, 0.1], 30
    fig = interactive.error_propagation_figure(eps_values, T=T, lost_error_rate=0.5, seed=3)
    assert len(fig.layout.sliders[0].steps) == 3
    assert fig.layout.sliders[0].active == 1
    per_frame = len(fig.data) // 3
    copy_raster, _, copy_curve = (
        fig.data[per_frame],
        fig.data[per_frame + 1],
        fig.data[per_frame + 2],
    )
    wrong = error_propagation.simulate_rollouts(0.05, T, "copy", 40, 0.5, 3)
    np.testing.assert_array_equal(np.array(copy_raster.z), wrong.astype(int))
    exact = error_propagation.expected_mistakes(0.05, T, "copy", 0.5)
    np.testing.assert_allclose(copy_curve.y, exact)
    assert f"{wrong.sum(axis=1).mean():.1f} mistakes" in fig.layout.annotations[0].text


def test_dagger_bounds_figure_draws_the_bounds():
    fig = interactive.dagger_bounds_figure([0.01, 0.2], T_max=50)
    T = np.arange(1, 51)
    curves = [t for t in fig.data if t.name and t.name.startswith(("off", "on"))]
    np.testing.assert_allclose(curves[-4].y, bounds.dagger_bound_off_policy(0.2, T))
    np.testing.assert_allclose(curves[-3].y, bounds.dagger_bound_on_policy(0.2, T))
    assert len(fig.layout.sliders[0].steps) == 2


def test_fdiv_morph_figure_shows_the_fitted_student():
    fig = interactive.fdiv_morph_figure([1.0], init_mean=1.5)
    teacher = fdiv.bimodal_teacher()
    fit = fdiv.fit_student(teacher.probs, teacher.x, "rkl", beta=1.0, init_mean=1.5)
    np.testing.assert_allclose(fig.data[0].y, teacher.probs)
    np.testing.assert_allclose(fig.data[1].y, fit.probs)


def test_gkd_lambda_figure_marks_each_final_value():
    lams = [0.0, 1.0]
    fig = interactive.gkd_lambda_figure(lams, beta=0.5, steps=10, eval_every=5)
    markers = [t for t in fig.data if t.mode == "markers"]
    for lam, marker in zip(lams, markers, strict=True):
        run = gkd_toy.train_gkd_toy(lam, 0.5, steps=10, eval_every=5)
        assert marker.x == (lam,)
        assert marker.y[0] == pytest.approx(run.final.mistakes)


def test_pivot_clipping_figure_shows_each_clip_mode():
    fig = interactive.pivot_clipping_figure([0.05, 5.0])
    student, teacher = sd.synthetic_pivot_batch(24, 0.01, 0.6)
    cmp = sd.clipped_updates(student, teacher, max_value=5.0)
    bars = fig.data[3:]  # second frame: none, token, pointwise
    for bar, mode in zip(bars, ("none", "token", "pointwise"), strict=True):
        torch.testing.assert_close(
            torch.tensor(bar.y, dtype=torch.float64), cmp.per_token_grad[mode][0]
        )
    assert bars[0].marker.color[12] != bars[0].marker.color[0]  # the pivot stands out


# ------------------------------------------------------------------ figures with several controls


def _grid(dead_knob: bool = False, **kwargs):
    from opd_lib.interactive_grid import Knob, grid_figure

    frames = [
        interactive.Frame(f"{b}{s}", [(line([b, s]), 1, 1)], [f"{b}/{s}"])
        for b in range(2)
        for s in range(3)
    ]
    knobs = [Knob("b", ["x", "y"], kind="buttons", active=1), Knob("s", ["0", "1", "2"], **kwargs)]
    return grid_figure(
        knobs,
        frames,
        lambda b, s: (0 if dead_knob else b) * 3 + s,
        interactive.Layout(),
        static=[(line([9, 9], "static"), 1, 1)],
    )


def grid_with_shared():
    from opd_lib.interactive_grid import Knob, grid_figure

    frames = [interactive.Frame(f"{k}", [(line([k]), 1, 1)], [f"{k}"]) for k in range(6)]
    knobs = [Knob("b", ["x", "y"], kind="buttons", active=1), Knob("s", ["0", "1", "2"])]
    return grid_figure(
        knobs,
        frames,
        lambda b, s: b * 3 + s,
        interactive.Layout(),
        static=[(line([9, 9], "static"), 1, 1)],
        shared=[(line([1, 2], "shared"), 1, 1, [1, 3])],
    )


def test_grid_figure_maps_every_combination_to_its_frame():
    fig = _grid(play=True)
    spec = fig.layout.meta["opd_grid"]
    assert spec["groups"] == {f"{b},{s}": b * 3 + s for b in range(2) for s in range(3)}
    assert spec["owner"] == [-1, 0, 1, 2, 3, 4, 5]
    shared = grid_with_shared()
    assert shared.layout.meta["opd_grid"]["owner"][:2] == [-1, [1, 3]]
    assert shared.data[1].visible is True  # frame 3 (b=1, s=0) is shown first
    assert [t.visible for t in fig.data] == [None] + [k == 3 for k in range(6)]  # b=1, s=0
    assert spec["titles"][4] == ["1/1"] and fig.layout.annotations[0].text == "1/0"
    assert spec["play"] == {"knob": 1, "ms": 150, "menu": 1}
    assert [s.method for s in fig.layout.sliders[0].steps] == ["skip"] * 3
    assert len(fig.layout.updatemenus) == 2  # the buttons, and play


def test_figure_html_attaches_the_script_only_to_grid_figures():
    from opd_lib.interactive import GRID_JS

    marker = "plotly_buttonclicked"
    assert marker in GRID_JS
    assert marker in interactive.figure_html(_grid(), "g")
    assert marker not in interactive.figure_html(interactive.dagger_bounds_figure([0.1]), "d")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: _grid(kind="buttons", play=True), "only a slider"),
        (lambda: _grid(active=3), "active must index"),
        (lambda: _bad_frame_of(), "does not index a frame"),
    ],
)
def test_grid_figure_rejects_bad_input(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def _bad_frame_of():
    from opd_lib.interactive_grid import Knob, grid_figure

    frames = [interactive.Frame("a", [(line([1]), 1, 1)])]
    return grid_figure([Knob("k", ["0", "1"])], frames, lambda k: k, interactive.Layout())


def test_drift_figure_plays_the_exact_summed_kl():
    from opd_lib.interactive_grid import drift_figure
    from opd_lib.sim import drift

    pair = drift.make_markov_pair(vocab_size=4, n_unfamiliar=1, seed=0)
    fig = drift_figure(pair, T=6, n_rollouts=5)
    spec = fig.layout.meta["opd_grid"]
    assert spec["play"] is not None and fig.layout.sliders[0].active == 5
    last = [t for t, o in zip(fig.data, spec["owner"], strict=True) if o == 5]
    summed = np.cumsum(drift.expected_position_kl(pair, 6, "student"))
    student_line = [t for t in last if t.name and "by the student" in t.name][0]
    np.testing.assert_allclose(student_line.y, summed, atol=1e-4)
    first = [t for t, o in zip(fig.data, spec["owner"], strict=True) if o == 0]
    heat = first[0].z  # the teacher's raster at t = 1: one column shown, the rest hidden
    assert all(list(row[1:]) == [None] * 5 for row in heat)


def test_reward_extrapolation_figure_shows_the_climb():
    from opd_lib.interactive_grid import reward_extrapolation_figure
    from opd_lib.sim import reward_extrapolation as rx

    fig = reward_extrapolation_figure(lams=(2.0, 3.0))
    spec = fig.layout.meta["opd_grid"]
    n_steps = len(fig.layout.sliders[1].steps)
    # "on", lam = 3, last step
    g = spec["groups"][f"1,1,{n_steps - 1}"]
    assert g == 3 * n_steps - 1
    assert spec["groups"]["0,1,0"] == 0  # "off" ignores the strength
    student = [t for t, o in zip(fig.data, spec["owner"], strict=True) if o == g][0]
    landscapes = [t for t, o in zip(fig.data, spec["owner"], strict=True) if isinstance(o, list)]
    assert len(landscapes) == 3 and g in spec["owner"][fig.data.index(landscapes[2])]
    ans = rx.answers()
    np.testing.assert_allclose(student.y, rx.climb(ans, 3.0).policies[-1], atol=1e-5)
    assert "past the teacher" in spec["titles"][g][1]
    assert "on the teacher" in spec["titles"][n_steps - 1][1]


def test_pipeline_figure_holds_every_run():
    from opd_lib.interactive_grid import pipeline_figure
    from opd_lib.sim import pipeline

    fig = pipeline_figure(lams=(0.0, 1.0), betas=(0.0, 1.0), budgets=(5, 10), eval_every=5)
    spec = fig.layout.meta["opd_grid"]
    assert len(spec["titles"]) == (4 + 5) * 2  # 4 GKD settings + 5 methods, 2 budgets
    # method RL (index 4): lambda and beta do not matter
    assert len({spec["groups"][f"4,{i},{j},1"] for i in range(2) for j in range(2)}) == 1
    g = spec["groups"]["4,0,0,1"]
    reward = [t for t, o in zip(fig.data, spec["owner"], strict=True) if o == g][2]
    run = pipeline.train_pipeline("RL", steps=10, eval_every=5)
    np.testing.assert_allclose(reward.y, run.reward, atol=1e-4)
    assert spec["titles"][g][0].startswith("RL, 10 steps")


def test_grid_figure_rejects_a_bad_play_interval():
    from opd_lib.interactive_grid import Knob, grid_figure

    frames = [interactive.Frame(f"{k}", [(line([k]), 1, 1)]) for k in range(2)]
    knob = Knob("k", ["0", "1"], play=True)
    with pytest.raises(ValueError, match="play_ms"):
        grid_figure([knob], frames, lambda k: k, interactive.Layout(), play_ms=0)
