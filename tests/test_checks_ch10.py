"""The chapter-10 grader accepts the right answer and rejects known-wrong ones."""

import math

import pytest

from opd_lib.checks import GradingError
from opd_lib.checks.ch10 import check_steps_to_target


def right(records, target):
    for r in records:
        if r.get("type") == "eval" and r["acc"] >= target:
            return r["step"]
    return math.inf


def test_accepts_the_right_answer(capsys):
    check_steps_to_target(right)
    assert capsys.readouterr().out == "Correct: steps_to_target matches the reference.\n"


def _strict(records, target):  # > instead of >=
    return next(
        (r["step"] for r in records if r.get("type") == "eval" and r["acc"] > target), math.inf
    )


def _any_record(records, target):  # counts train records too
    return next((r["step"] for r in records if r.get("acc", 0) >= target), math.inf)


def _best(records, target):  # the step of the best accuracy, not the first to reach the target
    evals = [r for r in records if r.get("type") == "eval"]
    best = max(evals, key=lambda r: r["acc"])
    return best["step"] if best["acc"] >= target else math.inf


def _last(records, target):  # the last evaluation above the target
    hits = [r["step"] for r in records if r.get("type") == "eval" and r["acc"] >= target]
    return hits[-1] if hits else math.inf


@pytest.mark.parametrize(
    "wrong",
    [_strict, _any_record, _best, _last, lambda records, target: None, lambda r, t: -1],
)
def test_rejects_wrong_answers(wrong):
    with pytest.raises(GradingError):
        check_steps_to_target(wrong)


def test_compounding_grader(capsys):
    from opd_lib.checks.ch10 import check_compounding_mistakes

    check_compounding_mistakes(lambda e, t: sum(1 - (1 - e) ** j for j in range(1, t + 1)))
    assert capsys.readouterr().out == "Correct: compounding_mistakes matches the reference.\n"
    wrong = (
        lambda e, t: e * t,  # recovery (independent errors), not compounding
        lambda e, t: e * t * t,  # the bound, not the expectation
        lambda e, t: sum(1 - (1 - e) ** j for j in range(t)),  # off by one step
    )
    for fn in wrong:
        with pytest.raises(GradingError, match="compounding_mistakes"):
            check_compounding_mistakes(fn)
