"""Every grader must accept the reference answer and reject known-wrong ones."""

import numpy as np
import pytest

from opd_lib.checks import GradingError
from opd_lib.checks.ch03 import check_jsd_generator


def xlogx(u):
    return np.where(u > 0, u * np.log(np.where(u > 0, u, 1.0)), 0.0)


def right(beta):
    return lambda u: beta * xlogx(u) - xlogx(beta * u + 1 - beta)


def test_jsd_generator_accepts_the_right_answer(capsys):
    check_jsd_generator(right)
    assert capsys.readouterr().out == "Correct: generalized JSD generator matches the reference.\n"


@pytest.mark.parametrize(
    "wrong",
    [
        lambda beta: right(0.5),  # ignores beta
        lambda beta: right(1 - beta),  # beta on the wrong distribution
        lambda beta: xlogx,  # forward KL
        lambda beta: lambda u: -right(beta)(u),  # sign flipped
        lambda beta: lambda u: right(beta)(u) + 0.1,  # f(1) != 0
        lambda beta: lambda u: float(right(beta)(u).sum()),  # not elementwise
    ],
)
def test_jsd_generator_rejects_wrong_answers(wrong):
    with pytest.raises(GradingError):
        check_jsd_generator(wrong)
