"""Every grader must accept the reference answer and reject known-wrong ones."""

import numpy as np
import pytest

from opd_lib import divergences
from opd_lib.checks import GradingError
from opd_lib.checks.ch01 import check_position_kl


def _marginals(teacher, student, prompt, T, prefixes, shift=0, start=None):
    writer = teacher if prefixes == "teacher" else student
    d = np.zeros(teacher.shape[0])
    d[prompt] = 1.0
    if start is not None:
        d = start(teacher.shape[0])
    out = []
    for _ in range(shift):
        d = d @ writer
    for _ in range(T):
        out.append(d)
        d = d @ writer
    return np.array(out)


def right(teacher, student, prompt, T, prefixes):
    per_state = divergences.forward_kl(teacher, student)
    return _marginals(teacher, student, prompt, T, prefixes) @ per_state


def always_teacher_prefixes(teacher, student, prompt, T, prefixes):
    return right(teacher, student, prompt, T, "teacher")


def reverse_direction(teacher, student, prompt, T, prefixes):
    per_state = divergences.reverse_kl(teacher, student)
    return _marginals(teacher, student, prompt, T, prefixes) @ per_state


def off_by_one(teacher, student, prompt, T, prefixes):
    per_state = divergences.forward_kl(teacher, student)
    return _marginals(teacher, student, prompt, T, prefixes, shift=1) @ per_state


def uniform_start(teacher, student, prompt, T, prefixes):
    per_state = divergences.forward_kl(teacher, student)
    d = _marginals(teacher, student, prompt, T, prefixes, start=lambda v: np.full(v, 1 / v))
    return d @ per_state


def test_position_kl_accepts_the_right_answer(capsys):
    check_position_kl(right)
    assert capsys.readouterr().out == "Correct: position_kl matches the reference.\n"


@pytest.mark.parametrize(
    "wrong",
    [
        always_teacher_prefixes,  # the off-policy loss for both
        reverse_direction,  # KL(student || teacher)
        off_by_one,  # position t conditioned on a prefix one token too long
        uniform_start,  # ignores the prompt
        lambda *args: right(*args)[:-1],  # one position short
        lambda *args: "0.1",
        lambda *args: None,
    ],
)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_position_kl_rejects_wrong_answers(wrong):
    with pytest.raises(GradingError):
        check_position_kl(wrong)


# ------------------------------------------------------------------ the drift figure's question


def drift_answer():
    from opd_lib.sim import drift

    own = np.cumsum(drift.expected_position_kl(drift.make_markov_pair(), 20, "student"))
    taught = np.cumsum(drift.expected_position_kl(drift.make_markov_pair(), 20, "teacher"))
    t = int(np.argmax(own > 1.0)) + 1
    return t, float(taught[t - 1])


def test_drift_reading_accepts_the_figures_values(capsys):
    from opd_lib.checks.ch01 import check_drift_reading

    check_drift_reading(drift_answer)
    assert capsys.readouterr().out == "Correct: drift_reading matches the reference.\n"


@pytest.mark.parametrize(
    "wrong",
    [
        lambda: (drift_answer()[0] - 1, drift_answer()[1]),  # the last position below 1 nat
        lambda: (drift_answer()[0] + 1, drift_answer()[1]),
        lambda: (drift_answer()[0], 1.0),  # the student's own sum, not the teacher's
        lambda: (drift_answer()[0], drift_answer()[1] + 0.02),
        lambda: (drift_answer()[0] + 0.5, drift_answer()[1]),  # not a position
        lambda: drift_answer()[0],  # one value only
        lambda: ("ten", "a little"),
    ],
)
def test_drift_reading_rejects_wrong_readings(wrong):
    from opd_lib.checks.ch01 import check_drift_reading

    with pytest.raises(GradingError):
        check_drift_reading(wrong)
