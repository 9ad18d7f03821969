"""Chapter 0 graders."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from opd_lib.checks import compare_number, passed


def check_max_error_rate(fn: Callable[[float, int], float], *, seed: int = 0) -> None:
    """Chapter 0: ``fn(target, T)`` must return the largest per-step error rate eps for which
    (1 - eps)^T >= target, i.e. eps = 1 - target^(1/T)."""
    rng = np.random.default_rng(seed)
    cases = [(0.5, 1), (0.9, 10), (0.5, 20), (0.99, 100)]
    cases += [(float(rng.uniform(0.05, 0.99)), int(rng.integers(1, 500))) for _ in range(20)]
    for target, T in cases:
        expected = 1.0 - target ** (1.0 / T)
        compare_number("max_error_rate", fn(target, T), expected, f"({target:.3f}, {T})", rtol=1e-6)
    passed("max_error_rate")
