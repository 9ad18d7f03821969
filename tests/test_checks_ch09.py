"""Every Chapter 9 grader must accept the reference answer and reject known-wrong ones."""

import numpy as np
import pytest

from opd_lib.checks import GradingError
from opd_lib.checks.ch09 import check_gaussian_moments, check_loop_filter, check_step_flops


def right_moments(x, p):
    mean = float(np.sum(p * x))
    return mean, float(np.sqrt(np.sum(p * (x - mean) ** 2)))


def right_filter(ids, max_run):
    keep = []
    for row in ids:
        best = run = 1
        for a, b in zip(row[:-1], row[1:], strict=True):
            run = run + 1 if a == b else 1
            best = max(best, run)
        keep.append(best <= max_run)
    return np.array(keep, dtype=bool)


def test_gaussian_moments_accepts_the_right_answer(capsys):
    check_gaussian_moments(right_moments)
    assert capsys.readouterr().out == "Correct: fit_gaussian_fkl matches the reference.\n"


@pytest.mark.parametrize(
    "wrong",
    [
        lambda x, p: (float(x[np.argmax(p)]), right_moments(x, p)[1]),  # the mode, not the mean
        lambda x, p: (right_moments(x, p)[0], right_moments(x, p)[1] ** 2),  # the variance
        lambda x, p: (float(np.mean(x)), float(np.std(x))),  # ignores p
        lambda x, p: (right_moments(x, p)[0], float(np.sqrt(np.sum(p * x**2)))),  # not centred
        lambda x, p: right_moments(x, p)[0],  # only the mean
        lambda x, p: None,
    ],
)
def test_gaussian_moments_rejects_wrong_answers(wrong):
    with pytest.raises(GradingError):
        check_gaussian_moments(wrong)


def test_loop_filter_accepts_the_right_answer(capsys):
    check_loop_filter(right_filter)
    assert capsys.readouterr().out == "Correct: drop_loops matches the reference.\n"


@pytest.mark.parametrize(
    "wrong",
    [
        lambda ids, k: ~right_filter(ids, k),  # inverted: True = drop
        lambda ids, k: right_filter(ids, k - 1),  # drops runs of exactly max_run
        lambda ids, k: right_filter(ids, k + 1),  # keeps runs of max_run + 1
        lambda ids, k: right_filter(ids, k).astype(int),  # not a bool mask
        lambda ids, k: np.array([len(set(r.tolist())) > 1 for r in ids]),  # only all-equal rows
        lambda ids, k: right_filter(ids, k)[:1],  # wrong shape
    ],
)
def test_loop_filter_rejects_wrong_answers(wrong):
    with pytest.raises(GradingError):
        check_loop_filter(wrong)


# --- FLOPs of one training step ---------------------------------------------------------------


def step_flops_right(method, n_s, n_t, seqs, length):
    tokens = seqs * length
    work = {"sft": 2 * n_t, "opd": 2 * n_s + 2 * n_t, "rl": 2 * n_s}[method]
    return (6 * n_s + work) * tokens


def test_step_flops_accepts_the_right_answer(capsys):
    check_step_flops(step_flops_right)
    assert capsys.readouterr().out == "Correct: step_flops matches the reference.\n"


@pytest.mark.parametrize(
    ("wrong", "hint"),
    [
        (lambda m, s, t, q, n: step_flops_right(m, s, t, q, n) - 4 * s * q * n, "not 2N"),
        (
            lambda m, s, t, q, n: step_flops_right(m, s, t, q, n) - (2 * t * q * n) * (m == "opd"),
            "teacher over every sampled token",
        ),
        (
            lambda m, s, t, q, n: step_flops_right(m, s, t, q, n) + 6 * (t - s) * q * n,
            "6 N_student",
        ),
        (lambda m, s, t, q, n: step_flops_right(m, s, t, q, n) * q, "factor"),
        (
            lambda m, s, t, q, n: step_flops_right(m, s, t, q, n) - (2 * t * q * n) * (m == "sft"),
            "teacher writing them",
        ),
        (lambda m, s, t, q, n: "lots", "not a number"),
    ],
)
def test_step_flops_rejects_wrong_answers_and_says_why(wrong, hint):
    with pytest.raises(GradingError, match=hint):
        check_step_flops(wrong)
