"""Chapter 2 graders."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from opd_lib import bounds
from opd_lib.checks import compare_number, passed
from opd_lib.sim import dagger


def check_off_policy_bound_by_step(fn: Callable[[np.ndarray], float], *, seed: int = 0) -> None:
    """Chapter 2: ``fn(eps_per_step)`` must return the behaviour-cloning bound
    sum_t (eps_t + sum_{i<t} eps_i) for per-step errors eps_1..eps_T (a 1-D array).

    Checked on constant profiles (where it must equal ``bounds.dagger_bound_off_policy``) and on
    random, uneven profiles (where the order of the steps matters)."""
    rng = np.random.default_rng(seed)
    cases = [np.full(T, e) for e, T in [(0.1, 1), (0.05, 10), (0.01, 100), (0.2, 7)]]
    cases += [np.array([0.3, 0.0, 0.0]), np.array([0.0, 0.0, 0.3]), np.array([0.1, 0.2])]
    cases += [rng.uniform(0.0, 0.2, size=int(rng.integers(1, 60))) for _ in range(20)]
    for eps in cases:
        expected = dagger.off_policy_bound_by_step(eps)
        if np.all(eps == eps[0]):
            expected_closed = bounds.dagger_bound_off_policy(float(eps[0]), len(eps))
            assert np.isclose(expected, expected_closed)
        shown = np.array2string(eps[:4], precision=3) + ("..." if len(eps) > 4 else "")
        where = f"({shown}, T={len(eps)})"
        compare_number("off_policy_bound_by_step", fn(eps.copy()), expected, where, rtol=1e-6)
    passed("off_policy_bound_by_step")


def check_crossover_length(fn: Callable[[float], float], *, seed: int = 0) -> None:
    """Chapter 2: ``fn(ratio)`` must return the length T at which the off-policy bound
    eps T (T + 1) / 2 is exactly ``ratio`` times the on-policy bound eps T."""
    rng = np.random.default_rng(seed)
    cases = [1.0, 2.0, 10.0, 50.0, 100.0] + [float(rng.uniform(1.0, 500.0)) for _ in range(20)]
    for ratio in cases:
        expected = bounds.crossover_length(ratio)
        compare_number("crossover_length", fn(ratio), expected, f"({ratio:.4g})", rtol=1e-6)
    passed("crossover_length")
