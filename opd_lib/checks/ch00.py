"""Chapter 0 graders."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from opd_lib.checks import GradingError, compare_number, grader, passed
from opd_lib.sim import error_propagation


@grader
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


def _copy_hint(got: np.ndarray, eps: float, T: int, lost: float, expected: np.ndarray) -> str:
    per_step = np.diff(expected, prepend=0.0)
    if np.allclose(got, per_step, rtol=1e-6):
        return "that is the mistake rate at each step: return the cumulative count (np.cumsum)"
    if np.allclose(got, eps * np.arange(1, T + 1), rtol=1e-6):
        return (
            "that is eps * t, the practising student's curve (independent mistakes): once off "
            "track the copying student errs with lost_error_rate and never gets back"
        )
    t = int(np.argmax(~np.isclose(got, expected, rtol=1e-6, atol=1e-12)))
    return (
        f"first difference at step {t + 1} ({got[t]:.6g} against {expected[t]:.6g}); "
        "q_1 = 0, and update q after using it for the step's mistake rate"
    )


@grader
def check_copy_mistakes(fn: Callable[[float, int, float], object], *, seed: int = 0) -> None:
    """Chapter 0: ``fn(eps, T, lost_error_rate)`` must return the copying student's cumulative
    expected mistakes after 1..T steps, equal to
    ``error_propagation.expected_mistakes(eps, T, "copy", lost_error_rate)``."""
    rng = np.random.default_rng(seed)
    cases = [(0.03, 60, 0.5), (0.1, 5, 1.0), (0.2, 1, 0.7)]
    cases += [
        (float(rng.uniform(0.001, 0.3)), int(rng.integers(2, 120)), float(rng.uniform(0.3, 1)))
        for _ in range(12)
    ]
    for eps, T, lost in cases:
        where = f"(eps={eps:.4g}, T={T}, lost_error_rate={lost:.3g})"
        expected = error_propagation.expected_mistakes(eps, T, "copy", lost)
        out = fn(eps, T, lost)
        try:
            got = np.asarray(out, dtype=float).reshape(-1) if out is not None else None
        except (TypeError, ValueError) as err:
            raise GradingError(f"copy_mistakes{where} returned {out!r}, not numbers") from err
        if got is None or got.shape != (T,):
            shape = None if got is None else got.shape
            raise GradingError(
                f"copy_mistakes{where} returned shape {shape}, expected ({T},): one cumulative "
                "count per step"
            )
        if not np.allclose(got, expected, rtol=1e-6, atol=1e-12):
            raise GradingError(f"copy_mistakes{where}: {_copy_hint(got, eps, T, lost, expected)}")
    passed("copy_mistakes")
