"""opd_lib.sim.reward_extrapolation: the student climbing G-OPD's reward, Chapter 5's figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from opd_lib import pg
from opd_lib.sim import reinforce
from opd_lib.sim import reward_extrapolation as rx


@pytest.fixture(scope="module")
def ans():
    return rx.answers()


def test_answers_are_normalised_and_the_teacher_lies_right_of_the_reference(ans):
    assert ans.teacher.sum() == pytest.approx(1.0)
    assert ans.reference.sum() == pytest.approx(1.0)
    assert ans.teacher @ ans.x > ans.reference @ ans.x


def test_the_reward_is_the_paper_form_and_off_means_the_teachers_log_prob(ans):
    lam = 2.5
    expected = pg.extrapolated_reward(
        torch.as_tensor(ans.log_teacher), torch.as_tensor(ans.log_reference), lam
    )
    np.testing.assert_allclose(rx.reward(ans, lam), expected.numpy())
    np.testing.assert_allclose(rx.landscape(ans, 1.0), ans.log_teacher, atol=1e-12)
    np.testing.assert_allclose(
        rx.landscape(ans, lam), lam * ans.log_teacher + (1 - lam) * ans.log_reference
    )


@pytest.mark.parametrize("lam", [1.0, 2.0, 3.0])
def test_the_climb_starts_at_the_reference_and_ends_at_the_optimum(ans, lam):
    run = rx.climb(ans, lam)
    np.testing.assert_allclose(run.policies[0], ans.reference)
    optimum = reinforce.gopd_optimum(ans.teacher, ans.reference, lam)
    assert np.abs(run.policies[-1] - optimum).max() < 1e-3
    assert run.steps[0] == 0 and run.steps[-1] == 40
    np.testing.assert_allclose(run.policies.sum(axis=1), 1.0)


def test_each_step_moves_along_the_geometric_path(ans):
    """pi_k ∝ pi_ref^(1 - a_k) pi*^a_k with a_k = 1 - (1 - lr)^k: log(pi_k / pi_ref) is a_k
    times log(pi* / pi_ref), up to a constant."""
    lr, lam = 0.2, 2.0
    run = rx.climb(ans, lam, steps=6, lr=lr, record_every=1)
    direction = np.log(reinforce.gopd_optimum(ans.teacher, ans.reference, lam)) - ans.log_reference
    for k, policy in zip(run.steps, run.policies, strict=True):
        moved = np.log(policy) - ans.log_reference
        a = 1 - (1 - lr) ** k
        residual = moved - a * direction
        assert np.ptp(residual) < 1e-8, k


def test_extrapolation_carries_the_student_past_the_teacher(ans):
    teacher_mean = ans.teacher @ ans.x
    finals = [rx.climb(ans, lam).means(ans.x)[-1] for lam in (1.0, 1.5, 2.0, 3.0)]
    assert finals[0] == pytest.approx(teacher_mean, abs=0.01)
    assert all(b > a for a, b in zip(finals, finals[1:], strict=False))
    assert finals[2] > teacher_mean + 0.5


def test_the_climb_is_deterministic(ans):
    np.testing.assert_array_equal(rx.climb(ans, 2.0).policies, rx.climb(ans, 2.0).policies)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=2), "n must be"),
        (dict(teacher_std=0.0), "teacher_std"),
        (dict(reference_std=-1.0), "reference_std"),
        (dict(span=float("nan")), "span"),
    ],
)
def test_answers_reject_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rx.answers(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lam=-1.0), "lam"),
        (dict(steps=0), "steps"),
        (dict(lr=1.5), "lr"),
        (dict(record_every=0), "record_every"),
    ],
)
def test_climb_rejects_bad_input(ans, kwargs, message):
    args = dict(lam=2.0) | kwargs
    with pytest.raises(ValueError, match=message):
        rx.climb(ans, **args)


def test_relative_to_teacher_names_the_three_places():
    assert rx.relative_to_teacher(1.2, 1.0) == "past the teacher"
    assert rx.relative_to_teacher(1.04, 1.0) == "on the teacher"
    assert rx.relative_to_teacher(0.9, 1.0) == "short of the teacher"
    with pytest.raises(ValueError, match="tol"):
        rx.relative_to_teacher(1.0, 1.0, tol=-1)
