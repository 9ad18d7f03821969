import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from opd_lib import bounds

eps_values = st.floats(0.0, 1.0)
lengths = st.integers(0, 400)


def test_seed_table_values():
    # The compounding-error table of Chapter 0, eps = 0.05.
    expected = {5: 0.7738, 10: 0.5987, 20: 0.3585, 50: 0.0769, 100: 0.0059}
    for T, p in expected.items():
        assert bounds.sequence_success_probability(0.05, T) == pytest.approx(p, abs=5e-5)


def test_broadcasts_over_eps_and_length():
    grid = bounds.sequence_success_probability(np.array([[0.01], [0.1]]), np.array([1, 10]))
    assert grid.shape == (2, 2)
    assert grid[1, 1] == pytest.approx(0.9**10)
    assert isinstance(bounds.sequence_success_probability(0.1, 3), float)


@given(eps_values, lengths)
def test_success_is_a_probability_that_falls_with_length(eps, T):
    p, p_next = (bounds.sequence_success_probability(eps, n) for n in (T, T + 1))
    assert 0.0 <= p_next <= p <= 1.0


@given(eps_values, st.integers(1, 400))
def test_off_policy_bound_dominates_on_policy(eps, T):
    off, on = bounds.dagger_bound_off_policy(eps, T), bounds.dagger_bound_on_policy(eps, T)
    assert off == pytest.approx(eps * T * (T + 1) / 2)
    assert on == pytest.approx(eps * T)
    assert off >= on


@given(st.integers(1, 10**6))
def test_crossover_length_is_where_the_ratio_is_reached(ratio):
    T = bounds.crossover_length(ratio)
    off, on = bounds.dagger_bound_off_policy(0.01, T), bounds.dagger_bound_on_policy(0.01, T)
    assert off / on == pytest.approx(ratio)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: bounds.sequence_success_probability(1.5, 3), "eps"),
        (lambda: bounds.sequence_success_probability(math.nan, 3), "eps"),
        (lambda: bounds.dagger_bound_on_policy(0.1, -1), "sequence length"),
        (lambda: bounds.dagger_bound_off_policy(0.1, 2.5), "sequence length"),
        (lambda: bounds.crossover_length(0.5), "ratio"),
    ],
)
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
