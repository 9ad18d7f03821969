"""Every grader must accept the reference answer and reject known-wrong ones."""

import pytest

from opd_lib.checks import GradingError
from opd_lib.checks.ch00 import check_max_error_rate


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
