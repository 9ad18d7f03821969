"""Graders for the book's exercises, one module per chapter (``opd_lib.checks.ch00``, ...).

Each grader compares a reader's answer with the library's reference on fixed or random inputs and
raises :class:`GradingError` (an ``AssertionError``) with a hint when it is wrong. On success it
prints a short confirmation and returns ``None``, so a notebook cell that ends with a grader call
shows only the confirmation. The helpers below are shared by all chapters.

Every grader is wrapped in :func:`grader`: an exercise stub that still raises
``NotImplementedError`` (as every chapter's stub does, and as the Colab copies leave them) makes the
grader print "not attempted yet" instead of raising, so "Run all" runs past unsolved exercises.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import numpy as np

Grader = TypeVar("Grader", bound=Callable[..., None])


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


def not_attempted(name: str) -> None:
    """Print the line a grader shows for a stub that still raises ``NotImplementedError``."""
    print(
        f"Not attempted yet: {name} still raises NotImplementedError. Write it in the exercise "
        "cell above, run that cell, then run this one again."
    )


def grader(check: Grader) -> Grader:
    """Wrap a grader ``check(fn, ...)`` so that a stub (an answer that raises
    ``NotImplementedError``, directly or as the cause of a :class:`GradingError`) is reported as
    not attempted (a printed line, ``None`` returned) instead of failing the cell. Wrong answers
    still raise :class:`GradingError`."""

    @functools.wraps(check)
    def run(fn, *args, **kwargs):
        try:
            return check(fn, *args, **kwargs)
        except (NotImplementedError, GradingError) as err:
            # a grader that reports any crash as a wrong answer chains the stub's error
            if isinstance(err, GradingError) and not isinstance(err.__cause__, NotImplementedError):
                raise
            not_attempted(getattr(fn, "__name__", "your answer"))
            return None

    run.is_grader = True  # type: ignore[attr-defined]
    return run  # type: ignore[return-value]
