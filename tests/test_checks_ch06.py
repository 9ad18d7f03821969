"""The Chapter 6 grader accepts the point-wise clip and rejects plausible wrong ones, saying why."""

import pytest
import torch

from opd_lib.checks import GradingError
from opd_lib.checks.ch06 import check_clip_pointwise
from opd_lib.divergences import token_divergence


def right(s, t, cap):
    log_q, log_p = s.log_softmax(-1), t.log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).clamp(max=cap).sum(-1)


def test_accepts_the_right_answer(capsys):
    check_clip_pointwise(right)
    check_clip_pointwise(
        lambda s, t, c: torch.minimum(
            torch.softmax(t, -1) * (t.log_softmax(-1) - s.log_softmax(-1)), torch.tensor(c)
        ).sum(-1)
    )
    assert capsys.readouterr().out == 2 * "Correct: clip_pointwise matches the reference.\n"


def _terms(s, t):
    log_q, log_p = s.log_softmax(-1), t.log_softmax(-1)
    return log_p.exp() * (log_p - log_q)


@pytest.mark.parametrize(
    ("wrong", "hint"),
    [
        (lambda s, t, c: token_divergence(s, t, "fkl").clamp(max=c), "per-token clipping"),
        (lambda s, t, c: _terms(s, t).clamp(-c, c).sum(-1), "from below"),
        (lambda s, t, c: _terms(t, s).clamp(max=c).sum(-1), "reverse KL"),
        (lambda s, t, c: _terms(s, t).clamp(max=c).mean(-1), "averaged"),
        (lambda s, t, c: (t.exp() * (t - s)).clamp(max=c).sum(-1), "log_softmax"),
        (lambda s, t, c: _terms(s, t).sum(-1), "no clip"),
        (lambda s, t, c: _terms(s, t).clamp(max=c), "shape"),
        (lambda s, t, c: right(s, t, c).detach(), "no gradient"),
        # right values, wrong gradient: clipped entries keep their gradient
        (
            lambda s, t, c: (
                _terms(s, t).sum(-1) - (_terms(s, t) - _terms(s, t).clamp(max=c)).detach().sum(-1)
            ),
            "gradient differs",
        ),
    ],
)
def test_rejects_wrong_answers_and_says_why(wrong, hint):
    with pytest.raises(GradingError, match=hint):
        check_clip_pointwise(wrong)


def test_rejects_a_non_tensor():
    with pytest.raises(GradingError, match="not a tensor"):
        check_clip_pointwise(lambda s, t, c: 0.0)
