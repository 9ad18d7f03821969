"""Every Chapter 4 grader must accept the reference answer and reject known-wrong ones."""

import pytest
import torch

from opd_lib.checks import GradingError
from opd_lib.checks.ch04 import check_masked_gkd_loss
from opd_lib.divergences import token_divergence


def _mask(ids, eos, include_eos=True):
    is_eos = (ids == eos).long()
    before = torch.cumsum(is_eos, 1) - is_eos
    return before == 0 if include_eos else torch.cumsum(is_eos, 1) == 0


def right(s, t, ids, eos, beta):
    per_token = token_divergence(s, t, kind="jsd", beta=beta)
    mask = _mask(ids, eos)
    return per_token[mask].mean()


def test_accepts_the_right_answer(capsys):
    check_masked_gkd_loss(right)
    assert capsys.readouterr().out == "Correct: masked_gkd_loss matches the reference.\n"


def test_accepts_a_float_answer(capsys):
    check_masked_gkd_loss(lambda *a: float(right(*a)))
    assert capsys.readouterr().out == "Correct: masked_gkd_loss matches the reference.\n"


@pytest.mark.parametrize(
    "wrong",
    [
        # the EOS itself left out
        lambda s, t, ids, eos, beta: token_divergence(s, t, kind="jsd", beta=beta)[
            _mask(ids, eos, include_eos=False)
        ].mean(),
        # no masking at all
        lambda s, t, ids, eos, beta: token_divergence(s, t, kind="jsd", beta=beta).mean(),
        # masked tokens zeroed but still counted in the average
        lambda s, t, ids, eos, beta: (
            token_divergence(s, t, kind="jsd", beta=beta) * _mask(ids, eos)
        ).mean(),
        # mean per sequence, then over sequences
        lambda s, t, ids, eos, beta: torch.stack(
            [
                token_divergence(s, t, kind="jsd", beta=beta)[i][_mask(ids, eos)[i]].mean()
                for i in range(ids.shape[0])
            ]
        ).mean(),
        # beta's orientation swapped (beta=0 would be reverse KL)
        lambda s, t, ids, eos, beta: token_divergence(s, t, kind="jsd", beta=1 - beta)[
            _mask(ids, eos)
        ].mean(),
        # teacher and student swapped
        lambda s, t, ids, eos, beta: token_divergence(t, s, kind="jsd", beta=beta)[
            _mask(ids, eos)
        ].mean(),
        # a sum instead of a mean
        lambda s, t, ids, eos, beta: token_divergence(s, t, kind="jsd", beta=beta)[
            _mask(ids, eos)
        ].sum(),
        # not a scalar
        lambda s, t, ids, eos, beta: token_divergence(s, t, kind="jsd", beta=beta),
        lambda s, t, ids, eos, beta: None,
    ],
)
def test_rejects_wrong_answers(wrong):
    with pytest.raises(GradingError):
        check_masked_gkd_loss(wrong)


def test_a_stub_still_says_not_implemented():
    def stub(*args):
        raise NotImplementedError("your turn")

    with pytest.raises(NotImplementedError):
        check_masked_gkd_loss(stub)
