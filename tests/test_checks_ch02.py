"""Every Chapter 2 grader must accept the reference answer and reject known-wrong ones."""

import numpy as np
import pytest

from opd_lib.checks import GradingError
from opd_lib.checks.ch02 import check_crossover_length, check_off_policy_bound_by_step


def test_off_policy_bound_accepts_the_right_answers(capsys):
    check_off_policy_bound_by_step(lambda eps: np.cumsum(eps).sum())
    check_off_policy_bound_by_step(lambda eps: sum((len(eps) - t) * e for t, e in enumerate(eps)))
    confirmation = "Correct: off_policy_bound_by_step matches the reference.\n"
    assert capsys.readouterr().out == 2 * confirmation


@pytest.mark.parametrize(
    "wrong",
    [
        lambda eps: len(eps) ** 2 * np.mean(eps) / 2,  # eps T^2 / 2: drops the diagonal term
        lambda eps: len(eps) ** 2 * np.mean(eps),  # T^2 eps: the looser textbook form
        lambda eps: np.sum(eps),  # the on-policy bound, no compounding
        lambda eps: sum((t + 1) * e for t, e in enumerate(eps)),  # weights reversed
        lambda eps: np.cumsum(eps)[:-1].sum(),  # forgets the mistake at step t itself
        lambda eps: "1.0",
    ],
)
def test_off_policy_bound_rejects_wrong_answers(wrong):
    with pytest.raises(GradingError):
        check_off_policy_bound_by_step(wrong)


def test_crossover_accepts_the_right_answer(capsys):
    check_crossover_length(lambda ratio: 2 * ratio - 1)
    assert capsys.readouterr().out == "Correct: crossover_length matches the reference.\n"


@pytest.mark.parametrize(
    "wrong",
    [
        lambda ratio: 2 * ratio,  # the T/2 approximation of the ratio
        lambda ratio: 2 * ratio + 1,
        lambda ratio: ratio,
        lambda ratio: np.sqrt(2 * ratio),
        lambda ratio: None,
    ],
)
def test_crossover_rejects_wrong_answers(wrong):
    with pytest.raises(GradingError):
        check_crossover_length(wrong)
