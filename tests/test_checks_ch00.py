"""Every grader must accept the reference answer and reject known-wrong ones."""

import numpy as np
import pytest

from opd_lib.checks import GradingError
from opd_lib.checks.ch00 import check_copy_mistakes, check_max_error_rate
from opd_lib.sim import error_propagation


def test_max_error_rate_accepts_the_right_answer(capsys):
    # None, not True: a notebook cell ending with a grader call must show only the confirmation
    assert check_max_error_rate(lambda target, T: 1 - target ** (1 / T)) is None
    assert capsys.readouterr().out == "Correct: max_error_rate matches the reference.\n"


@pytest.mark.parametrize(
    "wrong",
    [
        lambda target, T: (1 - target) / T,  # linearised: right only to first order
        lambda target, T: 1 - target ** (1 / (T + 1)),  # off by one in the length
        lambda target, T: target ** (1 / T),  # the success rate per step, not the error rate
        lambda target, T: "0.1",  # not a number
        lambda target, T: None,
    ],
)
def test_max_error_rate_rejects_wrong_answers(wrong):
    with pytest.raises(GradingError):
        check_max_error_rate(wrong)


def test_a_grading_error_is_an_assertion_error():
    assert issubclass(GradingError, AssertionError)


# --- the copying student's expected mistakes --------------------------------------------------


def copy_right(eps, T, lost):
    q, per_step = 0.0, []
    for _ in range(T):
        per_step.append((1 - q) * eps + q * lost)
        q = q + (1 - q) * eps
    return np.cumsum(per_step)


def copy_update_first(eps, T, lost):
    q, per_step = 0.0, []
    for _ in range(T):
        q = q + (1 - q) * eps
        per_step.append((1 - q) * eps + q * lost)
    return np.cumsum(per_step)


def test_copy_mistakes_accepts_the_right_answer(capsys):
    check_copy_mistakes(copy_right)
    assert capsys.readouterr().out == "Correct: copy_mistakes matches the reference.\n"


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda eps, T, lost: np.diff(copy_right(eps, T, lost), prepend=0.0), "cumulative"),
        (lambda eps, T, lost: eps * np.arange(1, T + 1), "independent mistakes"),
        (
            lambda eps, T, lost: error_propagation.expected_mistakes(eps, T, "practice", lost),
            "practising student",
        ),  # = eps * t
        (copy_update_first, "update q after"),
        (lambda eps, T, lost: copy_right(eps, T, lost)[:-1], "shape"),
        (lambda eps, T, lost: None, "shape None"),
    ],
)
def test_copy_mistakes_rejects_wrong_answers(wrong, message):
    with pytest.raises(GradingError, match=message):
        check_copy_mistakes(wrong)
