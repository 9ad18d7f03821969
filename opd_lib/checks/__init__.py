"""Graders for the book's exercises, one module per chapter (``opd_lib.checks.ch00``, ...).

Each grader compares a reader's answer with the library's reference on fixed or random inputs and
raises :class:`GradingError` (an ``AssertionError``) with a hint when it is wrong. On success it
prints a short confirmation and returns ``None``, so a notebook cell that ends with a grader call
shows only the confirmation. The helpers below are shared by all chapters.
"""

from __future__ import annotations

import numpy as np


class GradingError(AssertionError):
    """An exercise answer is wrong; the message says where it differs from the reference."""


def passed(name: str) -> None:
    """Print the confirmation for a correct answer (a grader's last step; it returns nothing)."""
    print(f"Correct: {name} matches the reference.")


def compare_number(name: str, got: object, expected: float, where: str, rtol: float) -> None:
    try:
        value = float(got)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise GradingError(f"{name}{where} returned {got!r}, which is not a number") from err
    if not np.isclose(value, expected, rtol=rtol, atol=1e-12):
        raise GradingError(f"{name}{where} returned {value:.6g}, expected {expected:.6g}")
