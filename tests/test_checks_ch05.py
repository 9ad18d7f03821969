"""The Chapter 5 graders accept the reference answer and reject known-wrong ones."""

import numpy as np
import pytest
import torch

from opd_lib.checks import GradingError
from opd_lib.checks.ch05 import check_masked_returns, check_reinforce_categorical


def _softmax(z):
    return np.exp(z - np.logaddexp.reduce(z))


def right(z, t, y):
    log_q = z - np.logaddexp.reduce(z)
    r = t[y] - log_q[y]
    return -(r[:, None] * (np.eye(len(z))[y] - np.exp(log_q))).mean(0)


def test_accepts_the_right_answer(capsys):
    check_reinforce_categorical(right)
    assert capsys.readouterr().out == "Correct: reinforce_categorical matches the reference.\n"


def _unnormalised(z, t, y):  # uses the raw logits as if they were log-probabilities
    r = t[y] - z[y]
    return -(r[:, None] * (np.eye(len(z))[y] - _softmax(z))).mean(0)


@pytest.mark.parametrize(
    "wrong",
    [
        lambda z, t, y: -right(z, t, y),  # ascent direction instead of the KL gradient
        lambda z, t, y: (
            -((t[y] - np.log(_softmax(z))[y])[:, None] * np.eye(len(z))[y]).mean(0)
        ),  # score without the -softmax(z) term
        lambda z, t, y: (
            -(((t[y] - np.log(_softmax(z))[y]) / _softmax(z)[y])[:, None] * np.eye(len(z))[y]).mean(
                0
            )
        ),  # the 1/p "score" (derivative w.r.t. p, not the logit)
        lambda z, t, y: right(z, t, y) * len(y),  # sum instead of mean
        _unnormalised,
        lambda z, t, y: right(z, t, y)[:-1],  # wrong shape
        lambda z, t, y: "gradient",  # not numbers
    ],
)
def test_rejects_wrong_answers(wrong):
    with pytest.raises(GradingError):
        check_reinforce_categorical(wrong)


# --- masked reward-to-go -------------------------------------------------------------------


def returns_right(r, m, gamma, norm):
    out = torch.zeros_like(r)
    running = torch.zeros_like(r[:, 0])
    for t in reversed(range(r.shape[1])):
        running = torch.where(m[:, t], r[:, t] + gamma * running, running)
        out[:, t] = torch.where(m[:, t], running, torch.zeros_like(running))
    if norm:
        out = out / m.flip(-1).cumsum(-1).flip(-1).clamp(min=1)
    return out


def returns_leaky(r, m, gamma, norm):  # padding and tool output counted as steps
    return returns_right(r, torch.ones_like(m), gamma, norm) * m


def returns_exclusive(r, m, gamma, norm):  # R_t without r_t
    return (returns_right(r, m, gamma, False) - r * m) / (
        m.flip(-1).cumsum(-1).flip(-1).clamp(min=1) if norm else 1
    )


def returns_forward(r, m, gamma, norm):  # sums the past instead of the future
    return returns_right(r.flip(-1), m.flip(-1), gamma, norm).flip(-1)


def returns_total_norm(r, m, gamma, norm):  # divides by the row's length, not what remains
    out = returns_right(r, m, gamma, False)
    return out / m.sum(-1, keepdim=True).clamp(min=1) if norm else out


def test_masked_returns_accepts_the_right_answer(capsys):
    check_masked_returns(returns_right)
    assert capsys.readouterr().out == "Correct: masked_returns matches the reference.\n"


@pytest.mark.parametrize(
    ("wrong", "hint"),
    [
        (returns_leaky, "counted as steps"),
        (returns_exclusive, "off by one"),
        (returns_forward, "up to t"),
        (returns_total_norm, "whole row"),
        (lambda r, m, g, n: -returns_right(r, m, g, n), "sign"),
        (lambda r, m, g, n: 2 * returns_right(r, m, g, n), "factor 2"),
        (lambda r, m, g, n: returns_right(r, m, g, False), "ignored"),
        (lambda r, m, g, n: returns_right(r, m, g, n) + 0.5 * ~m, "outside the mask"),
        (lambda r, m, g, n: returns_right(r, m, g, n)[:, 1:], "shape"),
    ],
)
def test_masked_returns_rejects_wrong_answers_and_says_why(wrong, hint):
    with pytest.raises(GradingError, match=hint):
        check_masked_returns(wrong)


# ------------------------------------------------------------------ the G-OPD figure's question


def extrapolation_answer():
    from opd_lib.sim import reward_extrapolation as rx

    ans = rx.answers()
    run = rx.climb(ans, 2.0)
    means = run.means(ans.x)
    teacher = float(ans.teacher @ ans.x)
    first = int(np.argmax(means > teacher + 0.05))
    return int(run.steps[first]), float(means[-1])


def test_extrapolation_reading_accepts_the_figures_values(capsys):
    from opd_lib.checks.ch05 import check_extrapolation_reading

    check_extrapolation_reading(extrapolation_answer)
    assert capsys.readouterr().out == "Correct: extrapolation_reading matches the reference.\n"


@pytest.mark.parametrize(
    "wrong",
    [
        lambda: (extrapolation_answer()[0] - 2, extrapolation_answer()[1]),  # still short
        lambda: (extrapolation_answer()[0] + 2, extrapolation_answer()[1]),
        lambda: (extrapolation_answer()[0], 1.0),  # the teacher's mean: extrapolation off
        lambda: (extrapolation_answer()[0], extrapolation_answer()[1] + 0.05),
        lambda: (None, 1.7),
        lambda: extrapolation_answer()[1],
    ],
)
def test_extrapolation_reading_rejects_wrong_readings(wrong):
    from opd_lib.checks.ch05 import check_extrapolation_reading

    with pytest.raises(GradingError):
        check_extrapolation_reading(wrong)
