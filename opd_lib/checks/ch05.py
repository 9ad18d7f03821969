"""Chapter 5 graders."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from opd_lib.checks import GradingError, passed
from opd_lib.sim.reinforce import categorical_reinforce_estimate


def _cases(seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Fixed and random (student logits, teacher log-probs, samples) cases."""
    fixed_logits = np.log(np.array([0.3, 0.4, 0.3]))
    fixed_teacher = np.log(np.array([0.7, 0.02, 0.28]))
    cases = [
        (fixed_logits, fixed_teacher, np.array([0])),
        (fixed_logits, fixed_teacher, np.array([1])),
        (fixed_logits, fixed_teacher, np.array([0, 1, 2, 2, 1])),
        (np.zeros(4), np.log(np.full(4, 0.25)), np.array([3, 1])),  # student = teacher: zero
    ]
    rng = np.random.default_rng(seed)
    for _ in range(20):
        V = int(rng.integers(2, 9))
        z = rng.normal(0.0, 2.0, V) + float(rng.normal())  # logits need not be normalised
        t = rng.normal(0.0, 2.0, V)
        t = t - np.logaddexp.reduce(t)
        y = rng.integers(0, V, size=int(rng.integers(1, 40)))
        cases.append((z, t, y))
    return cases


def check_reinforce_categorical(
    fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray], *, seed: int = 0
) -> None:
    """Chapter 5: ``fn(student_logits, teacher_logp, samples)`` must return the REINFORCE estimate
    of the gradient of KL(softmax(z) || p_T) with respect to the logits z, averaged over the
    samples: ``-(1/N) sum_i r_i (onehot(y_i) - softmax(z))`` with
    ``r_i = log p_T(y_i) - log q(y_i)``."""
    for i, (z, t, y) in enumerate(_cases(seed)):
        expected = categorical_reinforce_estimate(z, t, y)
        where = f" on case {i} (V={len(z)}, {len(y)} samples)"
        try:
            got = np.asarray(fn(z.copy(), t.copy(), y.copy()), dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise GradingError(
                f"reinforce_categorical{where} did not return numbers: {err}"
            ) from err
        if got.shape != expected.shape:
            raise GradingError(
                f"reinforce_categorical{where} returned shape {got.shape}, "
                f"expected {expected.shape} (one entry per logit)"
            )
        if not np.allclose(got, expected, rtol=1e-6, atol=1e-9):
            hint = ""
            if np.allclose(got, -expected, rtol=1e-6, atol=1e-9):
                hint = " (the sign is flipped: this is the ascent direction of -KL, not grad KL)"
            raise GradingError(
                f"reinforce_categorical{where} returned {np.round(got, 4)}, expected "
                f"{np.round(expected, 4)}{hint}"
            )
    passed("reinforce_categorical")
