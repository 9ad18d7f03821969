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
