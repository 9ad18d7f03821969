"""Every Chapter 4 grader must accept the reference answer and reject known-wrong ones."""

import random

import pytest
import torch

from opd_lib.checks import GradingError
from opd_lib.checks.ch04 import check_gkd_mixture, check_masked_gkd_loss
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


def test_a_stub_is_reported_as_not_attempted(capsys):
    def stub(*args):
        raise NotImplementedError("your turn")

    assert check_masked_gkd_loss(stub) is None
    assert capsys.readouterr().out.startswith("Not attempted yet: stub")


# --- choose_source and lambda_schedule ------------------------------------------------------


def choose(lam, seq_kd, generator):
    u = torch.rand((), generator=generator).item()
    if u < lam:
        return "student"
    return "teacher" if seq_kd else "data"


def schedule(step, total_steps, warmup=0.2, mixed=0.4):
    warm_end, mixed_end = warmup * total_steps, (warmup + mixed) * total_steps
    if step < warm_end:
        return 0.0
    if step < mixed_end:
        return (step - warm_end) / (mixed_end - warm_end)
    return 1.0


def test_mixture_accepts_the_right_answer(capsys):
    check_gkd_mixture(choose, schedule)
    expected = "Correct: choose_source and lambda_schedule matches the reference.\n"
    assert capsys.readouterr().out == expected


def _flipped(lam, seq_kd, generator):
    u = torch.rand((), generator=generator).item()
    return "student" if u >= lam else ("teacher" if seq_kd else "data")


def _ignores_seq_kd(lam, seq_kd, generator):
    return choose(lam, False, generator)


def _two_draws(lam, seq_kd, generator):
    torch.rand((), generator=generator)
    return choose(lam, seq_kd, generator)


def _python_random(lam, seq_kd, generator):
    return "student" if random.random() < lam else ("teacher" if seq_kd else "data")


def _returns_bool(lam, seq_kd, generator):
    return torch.rand((), generator=generator).item() < lam


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (_flipped, "u < lam"),
        (_ignores_seq_kd, "seq_kd"),
        (_two_draws, "exactly one number"),
        (_python_random, "exactly one number"),
        (_returns_bool, "expected one of"),
    ],
)
def test_mixture_rejects_wrong_choices(wrong, message):
    with pytest.raises(GradingError, match=message):
        check_gkd_mixture(wrong, schedule)


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda s, n, w=0.2, m=0.4: min(0.5, schedule(s, n, w, m)), "returned 0.5"),
        (lambda s, n, w=0.2, m=0.4: schedule(s, n, 0.0, w + m), "warm-up phase"),
        (lambda s, n, w=0.2, m=0.4: s / n, "phase"),
        (lambda s, n, w=0.2, m=0.4: float(s >= (w + m / 2) * n), "mixed phase"),
        (lambda s, n, w=0.2, m=0.4: None, "returned None"),
    ],
)
def test_mixture_rejects_wrong_schedules(wrong, message):
    with pytest.raises(GradingError, match=message):
        check_gkd_mixture(choose, wrong)
