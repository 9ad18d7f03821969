"""The Chapter 5 grader accepts the reference answer and rejects known-wrong ones."""

import numpy as np
import pytest

from opd_lib.checks import GradingError
from opd_lib.checks.ch05 import check_reinforce_categorical


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
        ),  # the seed's 1/p "score"
        lambda z, t, y: right(z, t, y) * len(y),  # sum instead of mean
        _unnormalised,
        lambda z, t, y: right(z, t, y)[:-1],  # wrong shape
        lambda z, t, y: "gradient",  # not numbers
    ],
)
def test_rejects_wrong_answers(wrong):
    with pytest.raises(GradingError):
        check_reinforce_categorical(wrong)
