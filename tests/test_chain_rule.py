"""The KL chain rule: per-position KLs on the right prefixes sum to the sequence-level KL."""

import numpy as np
import pytest

from opd_lib import chain_rule as cr
from opd_lib import divergences
from opd_lib.sim import drift


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_kl_on_teacher_prefixes_is_the_sequence_forward_kl(seed):
    teacher, student = cr.random_model(3, seed), cr.random_model(3, seed + 100, 0.5)
    per_position = cr.position_kls(teacher, student, teacher, 3, 4)
    assert per_position.sum() == pytest.approx(cr.sequence_kl(teacher, student, 3, 4), rel=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reverse_kl_on_student_prefixes_is_the_sequence_reverse_kl(seed):
    teacher, student = cr.random_model(3, seed), cr.random_model(3, seed + 100, 0.5)
    per_position = cr.position_kls(student, teacher, student, 3, 4)
    assert per_position.sum() == pytest.approx(cr.sequence_kl(student, teacher, 3, 4), rel=1e-10)


def test_forward_kl_on_student_prefixes_is_neither_sequence_kl():
    teacher, student = cr.random_model(3, 0), cr.random_model(3, 100, 0.5)
    hybrid = cr.position_kls(teacher, student, student, 3, 4).sum()
    assert abs(hybrid - cr.sequence_kl(teacher, student, 3, 4)) > 1e-3
    assert abs(hybrid - cr.sequence_kl(student, teacher, 3, 4)) > 1e-3


def test_one_token_is_the_plain_kl_of_the_first_rows():
    teacher, student = cr.random_model(4, 3), cr.random_model(4, 4)
    expected = float(divergences.forward_kl(teacher(()), student(())))
    assert cr.sequence_kl(teacher, student, 4, 1) == pytest.approx(expected)
    assert cr.position_kls(teacher, student, student, 4, 1)[0] == pytest.approx(expected)


def test_markov_pair_matches_drift_and_the_teacher_curve_is_the_sequence_kl():
    pair = drift.make_markov_pair(seed=0)
    teacher = cr.markov_model(pair.teacher, pair.prompt)
    student = cr.markov_model(pair.student, pair.prompt)
    for prefixes, writer in (("teacher", teacher), ("student", student)):
        ours = cr.position_kls(teacher, student, writer, 4, 6)
        assert np.allclose(ours, drift.expected_position_kl(pair, 6, prefixes), atol=1e-12)
    assert drift.expected_position_kl(pair, 6, "teacher").sum() == pytest.approx(
        cr.sequence_kl(teacher, student, 4, 6), rel=1e-10
    )


def test_sequence_probs_sum_to_one_and_factorise():
    model = cr.random_model(2, 5)
    probs = cr.sequence_probs(model, 2, 3)
    assert probs.sum() == pytest.approx(1.0)
    # (1, 0, 1) is index 0b101 = 5 in lexicographic order
    assert probs[5] == pytest.approx(model(())[1] * model((1,))[0] * model((1, 0))[1])


def test_random_model_is_a_pure_function():
    model = cr.random_model(3, 7)
    assert np.array_equal(model((0, 2)), model((0, 2)))
    assert not np.array_equal(model((0, 2)), model((2, 0)))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: cr.sequence_probs(m, 3, 0), "T must be"),
        (lambda m: cr.sequence_probs(m, 3, 30), "too many"),
        (lambda m: cr.sequence_probs(m, 4, 2), "expected 4"),
        (lambda m: cr.sequence_probs(lambda prefix: np.array([0.5, 0.6, -0.1]), 3, 1), "not a"),
        (lambda m: cr.markov_model(np.ones((2, 3)), 0), "square"),
        (lambda m: cr.markov_model(np.eye(2), 5), "prompt"),
        (lambda m: cr.random_model(1, 0), "vocab_size"),
    ],
)
def test_bad_inputs_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call(cr.random_model(3, 0))
