import numpy as np
import pytest

from opd_lib import bounds
from opd_lib.sim import error_propagation as ep


def test_practising_student_makes_exactly_eps_T_mistakes():
    curve = ep.expected_mistakes(0.07, 50, "practice")
    np.testing.assert_allclose(curve, bounds.dagger_bound_on_policy(0.07, np.arange(1, 51)))


def test_copying_student_compounds_and_matches_the_closed_form():
    eps, T = 0.02, 40
    # With a lost student always wrong, step t is wrong iff some earlier step was: P = 1-(1-eps)^t.
    expected = np.cumsum(1 - (1 - eps) ** np.arange(1, T + 1))
    np.testing.assert_allclose(ep.expected_mistakes(eps, T, "copy", lost_error_rate=1.0), expected)
    assert np.all(expected <= bounds.dagger_bound_off_policy(eps, np.arange(1, T + 1)) + 1e-12)


def test_copying_is_worse_than_practising_whenever_lost_is_worse_than_eps():
    copy = ep.expected_mistakes(0.05, 30, "copy", lost_error_rate=0.5)
    practice = ep.expected_mistakes(0.05, 30, "practice")
    assert np.all(copy[1:] > practice[1:])


def test_simulation_agrees_with_the_exact_expectation():
    wrong = ep.simulate_rollouts(0.05, 30, "copy", n_rollouts=20_000, lost_error_rate=0.4, seed=1)
    exact = ep.expected_mistakes(0.05, 30, "copy", lost_error_rate=0.4)
    mean = wrong.cumsum(axis=1).mean(axis=0)
    assert np.max(np.abs(mean - exact)) < 0.1


def test_rollouts_are_deterministic_given_the_seed():
    a = ep.simulate_rollouts(0.1, 20, "practice", seed=3)
    b = ep.simulate_rollouts(0.1, 20, "practice", seed=3)
    assert a.dtype == bool and a.shape == (40, 20)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(eps=1.2, T=5, mode="copy"), "eps"),
        (dict(eps=0.1, T=5, mode="copy", lost_error_rate=-0.1), "lost_error_rate"),
        (dict(eps=0.1, T=5, mode="imitate"), "mode"),
        (dict(eps=0.1, T=0, mode="copy"), "T and n_rollouts"),
    ],
)
def test_bad_input_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ep.simulate_rollouts(**kwargs)
