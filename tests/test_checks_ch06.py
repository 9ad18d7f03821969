"""The chapter 6 grader must accept the right answer and reject known-wrong ones."""

import pytest
import torch

from opd_lib.checks import GradingError
from opd_lib.checks.ch06 import check_clip_per_token
from opd_lib.opsd import clip_per_token


def test_clip_per_token_accepts_the_right_answers(capsys):
    check_clip_per_token(lambda d, c: d.clamp(max=c))
    check_clip_per_token(lambda d, c: torch.minimum(d, torch.full_like(d, c)))
    assert capsys.readouterr().out == 2 * "Correct: clip_per_token matches the reference.\n"


@pytest.mark.parametrize(
    "wrong",
    [
        lambda d, c: d.clamp(min=c),  # a floor, not a cap
        lambda d, c: d.clamp(max=c).detach(),  # no gradient at all
        lambda d, c: clip_per_token(d, c, mode="rescale"),  # right values, wrong gradient
        lambda d, c: d * c,  # scales instead of capping
        lambda d, c: d.clamp(max=c).sum(),  # reduces the tokens away
        lambda d, c: d.clamp(max=c).numpy(force=True),  # not a tensor
        lambda d, c: torch.where(d > c, torch.zeros_like(d), d),  # drops capped tokens
    ],
)
def test_clip_per_token_rejects_wrong_answers(wrong):
    with pytest.raises(GradingError):
        check_clip_per_token(wrong)
