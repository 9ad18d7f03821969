"""Chapter 1 graders."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from opd_lib.checks import GradingError, grader, passed
from opd_lib.sim import drift


def _random_pair(rng: np.random.Generator, vocab_size: int) -> drift.MarkovPair:
    teacher = rng.dirichlet(np.ones(vocab_size), size=vocab_size)
    student = rng.dirichlet(np.ones(vocab_size), size=vocab_size)
    prompt = int(rng.integers(vocab_size))
    return drift.MarkovPair(teacher, student, prompt, np.ones(vocab_size, dtype=bool))


@grader
def check_position_kl(fn: Callable[..., np.ndarray], *, seed: int = 0) -> None:
    """Chapter 1: ``fn(teacher, student, prompt, T, prefixes)`` must return the ``[T]`` array
    ``E_{y_<t}[ KL(p_T(. | y_<t) || p_S(. | y_<t)) ]``, ``t = 1..T``, for Markov models whose
    next-token rows are ``teacher[last]`` / ``student[last]``, with prefixes written by
    ``prefixes`` ("teacher" or "student") starting from the token ``prompt``.

    Compared with :func:`opd_lib.sim.drift.expected_position_kl` on the chapter's pair and on
    random pairs.
    """
    rng = np.random.default_rng(seed)
    pairs = [drift.make_markov_pair(seed=0), drift.make_markov_pair(vocab_size=5, seed=7)]
    pairs += [_random_pair(rng, int(rng.integers(2, 7))) for _ in range(6)]
    for i, pair in enumerate(pairs):
        for prefixes in ("teacher", "student"):
            T = 12
            expected = drift.expected_position_kl(pair, T, prefixes)
            where = f"(pair {i}, prefixes={prefixes!r})"
            got = fn(pair.teacher.copy(), pair.student.copy(), pair.prompt, T, prefixes)
            try:
                got = np.asarray(got, dtype=float)
            except (TypeError, ValueError) as err:
                raise GradingError(f"position_kl{where} returned {got!r}, not numbers") from err
            if got.shape != (T,):
                raise GradingError(
                    f"position_kl{where} returned shape {got.shape}, expected ({T},): "
                    "one value per position t = 1..T"
                )
            if not np.allclose(got, expected, rtol=1e-6, atol=1e-10):
                t = int(np.argmax(~np.isclose(got, expected, rtol=1e-6, atol=1e-10)))
                raise GradingError(
                    f"position_kl{where} at t = {t + 1} returned {got[t]:.6g}, expected "
                    f"{expected[t]:.6g}. Check who writes the prefix, the direction of the KL, "
                    "and that t = 1 conditions on the prompt alone."
                )
    passed("position_kl")


# ------------------------------------------------------------------ reading the drift figure


def _reading(fn: Callable[[], object], name: str, parts: int) -> tuple:
    """Call a figure-reading answer ``fn()`` and check it returns ``parts`` values."""
    got = fn()
    if not isinstance(got, tuple | list) or len(got) != parts:
        raise GradingError(f"{name} must return {parts} values, got {got!r}")
    return tuple(got)


@grader
def check_drift_reading(fn: Callable[[], tuple[int, float]]) -> None:
    """Chapter 1, the drift figure (the chapter's chain, ``T = 20``): ``fn()`` returns
    ``(t, kl_teacher_prefixes)``: the first position ``t`` at which the KL summed over positions
    1..t on the student's *own* prefixes exceeds 1 nat, and the KL summed to that same ``t`` on
    the *teacher's* prefixes (to within 0.005)."""
    pair = drift.make_markov_pair()
    own = np.cumsum(drift.expected_position_kl(pair, 20, "student"))
    taught = np.cumsum(drift.expected_position_kl(pair, 20, "teacher"))
    t = int(np.argmax(own > 1.0)) + 1
    t_got, kl_got = _reading(fn, "drift_reading", 2)
    try:
        t_got, kl_got = float(t_got), float(kl_got)
    except (TypeError, ValueError) as err:
        raise GradingError(f"drift_reading returned {t_got!r}, {kl_got!r}: not numbers") from err
    if t_got != round(t_got) or int(t_got) != t:
        hint = "later" if t_got < t else "earlier"
        raise GradingError(
            f"position {t_got:g} is not where the blue summed KL first passes 1 nat: look "
            f"{hint} (positions count from 1; the title gives the sum at each t)"
        )
    if abs(kl_got - taught[t - 1]) > 0.005:
        raise GradingError(
            f"{kl_got:g} is not the summed KL on the teacher's prefixes at t = {t}: read the "
            "second number of the bottom-right title (the red curve) at that position"
        )
    passed("drift_reading")
