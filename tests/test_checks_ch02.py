"""Every Chapter 2 grader must accept the reference answer and reject known-wrong ones."""

import functools

import numpy as np
import pytest

from opd_lib.checks import GradingError
from opd_lib.checks.ch02 import (
    check_crossover_length,
    check_dagger_loop,
    check_off_policy_bound_by_step,
)
from opd_lib.sim import dagger as dg


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


# --- the DAgger loop -------------------------------------------------------------------------


def _dagger(
    problem,
    T,
    n_rollouts,
    n_iterations,
    seed,
    aggregate=True,
    label="expert",
    roll="learner",
    seed_step=1,
):
    policy = dg.expert_policy(problem)
    offsets, labels, learners = [], [], []
    for i in range(n_iterations):
        runs = dg.rollout(problem, policy, T, n_rollouts, seed + seed_step * i)
        if not aggregate:
            offsets, labels = [], []
        offsets.append(runs.offsets.ravel())
        chosen = runs.expert_actions if label == "expert" else runs.actions
        labels.append(chosen.ravel())
        learner = dg.fit_tabular(problem, np.concatenate(offsets), np.concatenate(labels))
        learners.append(learner)
        if roll == "learner":
            policy = dg.learner_policy(problem, learner)
    return learners


def test_dagger_loop_accepts_the_right_answer(capsys):
    check_dagger_loop(_dagger)
    assert capsys.readouterr().out == "Correct: my_dagger matches the reference.\n"


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (functools.partial(_dagger, aggregate=False), "aggregate"),
        (functools.partial(_dagger, label="learner"), "the actions the rolled-out policy took"),
        (functools.partial(_dagger, roll="expert"), "rolled out the expert"),
        (functools.partial(_dagger, seed_step=0), "same seed"),
        (lambda problem, T, n, k, seed: _dagger(problem, T, n, k, seed + 1), "behaviour cloning"),
        (lambda problem, T, n, k, seed: _dagger(problem, T, n, k, seed)[-1], "not a list"),
        (lambda problem, T, n, k, seed: _dagger(problem, T, n, k - 1, seed), "one per iteration"),
    ],
)
def test_dagger_loop_rejects_wrong_answers(wrong, message):
    with pytest.raises(GradingError, match=message):
        check_dagger_loop(wrong)


def test_dagger_loop_stub_is_not_attempted(capsys):
    def my_dagger(problem, T, n_rollouts, n_iterations, seed):
        raise NotImplementedError

    assert check_dagger_loop(my_dagger) is None
    assert "Not attempted yet" in capsys.readouterr().out
