"""Graders for the book's exercises.

Each grader compares a reader's answer with the library's reference on fixed or random inputs and
raises :class:`GradingError` (an ``AssertionError``) with a hint when it is wrong. On success it
prints a short confirmation and returns ``True``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class GradingError(AssertionError):
    """An exercise answer is wrong; the message says where it differs from the reference."""


def _passed(name: str) -> bool:
    print(f"Correct: {name} matches the reference.")
    return True


def _compare(name: str, got: object, expected: float, where: str, rtol: float) -> None:
    try:
        value = float(got)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise GradingError(f"{name}{where} returned {got!r}, which is not a number") from err
    if not np.isclose(value, expected, rtol=rtol, atol=1e-12):
        raise GradingError(f"{name}{where} returned {value:.6g}, expected {expected:.6g}")


def check_max_error_rate(fn: Callable[[float, int], float], *, seed: int = 0) -> bool:
    """Chapter 0: ``fn(target, T)`` must return the largest per-step error rate eps for which
    (1 - eps)^T >= target, i.e. eps = 1 - target^(1/T)."""
    rng = np.random.default_rng(seed)
    cases = [(0.5, 1), (0.9, 10), (0.5, 20), (0.99, 100)]
    cases += [(float(rng.uniform(0.05, 0.99)), int(rng.integers(1, 500))) for _ in range(20)]
    for target, T in cases:
        expected = 1.0 - target ** (1.0 / T)
        _compare("max_error_rate", fn(target, T), expected, f"({target:.3f}, {T})", rtol=1e-6)
    return _passed("max_error_rate")
