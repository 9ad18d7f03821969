"""The Chapter 8 grader accepts the right advantage and rejects known-wrong ones."""

import pytest

from opd_lib.checks import GradingError
from opd_lib.checks.ch08 import check_advantages


def right(lp_s, lp_t, r, b, lam):
    return lam * (lp_t - lp_s) + (1 - lam) * (r - b)[:, None]


def test_accepts_the_right_answer(capsys):
    check_advantages(right)
    assert capsys.readouterr().out == "Correct: advantages matches the reference.\n"


@pytest.mark.parametrize(
    "wrong",
    [
        lambda lp_s, lp_t, r, b, lam: lam * (lp_s - lp_t) + (1 - lam) * (r - b)[:, None],  # sign
        lambda lp_s, lp_t, r, b, lam: (1 - lam) * (lp_t - lp_s) + lam * (r - b)[:, None],  # swap
        lambda lp_s, lp_t, r, b, lam: lam * (lp_t - lp_s) + (1 - lam) * r[:, None],  # no baseline
        lambda lp_s, lp_t, r, b, lam: lam * (lp_t - lp_s) + (1 - lam) * (r - b),  # no broadcast
        lambda lp_s, lp_t, r, b, lam: lam * lp_t + (1 - lam) * (r - b)[:, None],  # no -log pi
        lambda lp_s, lp_t, r, b, lam: "advantage",
    ],
)
def test_rejects_wrong_answers(wrong):
    with pytest.raises(GradingError):
        check_advantages(wrong)
