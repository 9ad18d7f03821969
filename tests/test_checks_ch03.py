"""Every grader must accept the reference answer and reject known-wrong ones."""

import numpy as np
import pytest
import torch

from opd_lib.checks import GradingError
from opd_lib.checks.ch03 import check_jsd_generator, check_reverse_kl_and_grad


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


# --- reverse KL and its logit gradient ------------------------------------------------------


def _rkl_parts(s, t):
    log_q, log_p = torch.log_softmax(s, -1), torch.log_softmax(t, -1)
    q = log_q.exp()
    value = (q * (log_q - log_p)).sum(-1)
    return q, log_q, log_p, value


def rkl_right(s, t):
    q, log_q, log_p, value = _rkl_parts(s, t)
    return value, q * (log_q - log_p - value.unsqueeze(-1))


def test_rkl_grad_accepts_the_right_answer(capsys):
    check_reverse_kl_and_grad(rkl_right)
    assert capsys.readouterr().out == "Correct: reverse_kl_and_grad matches the reference.\n"


def _sign(s, t):
    value, grad = rkl_right(s, t)
    return value, -grad


def _uncentred(s, t):
    q, log_q, log_p, value = _rkl_parts(s, t)
    return value, q * (log_q - log_p)


def _prob_grad(s, t):
    q, log_q, log_p, value = _rkl_parts(s, t)
    return value, log_q - log_p + 1


def _fkl_grad(s, t):
    q, _, _, value = _rkl_parts(s, t)
    return value, q - t.softmax(-1)


def _forward_value(s, t):
    _, grad = rkl_right(s, t)
    p = t.softmax(-1)
    return (p * (t.log_softmax(-1) - s.log_softmax(-1))).sum(-1), grad


def _mean_value(s, t):
    value, grad = rkl_right(s, t)
    return value.mean(), grad


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (_sign, "wrong sign"),
        (_uncentred, "missing the - KL term"),
        (_prob_grad, "probabilities, not the logits"),
        (_fkl_grad, "forward KL's gradient"),
        (lambda s, t: (rkl_right(s, t)[0], 2 * rkl_right(s, t)[1]), "factor of 2"),
        (_forward_value, "that is the forward KL"),
        (_mean_value, "shape"),
        (lambda s, t: rkl_right(s, t)[0], "must return"),
    ],
)
def test_rkl_grad_rejects_wrong_answers(wrong, message):
    with pytest.raises(GradingError, match=message):
        check_reverse_kl_and_grad(wrong)
