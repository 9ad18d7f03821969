"""Chapter 10 graders."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from opd_lib.checks import GradingError, compare_number, grader, passed
from opd_lib.lab.analysis import cost_to_target


def _random_run(rng: np.random.Generator, n_steps: int) -> list[dict]:
    records, flops, wall = [], 0.0, 0.0
    records.append({"type": "eval", "step": 0, "flops": 0.0, "acc": float(rng.uniform(0, 0.3))})
    for step in range(1, n_steps + 1):
        flops += float(rng.uniform(1e6, 5e6))
        wall += float(rng.uniform(0.05, 0.5))
        records.append({"type": "train", "step": step, "wall_s": wall, "flops": flops})
        if step % 3 == 0:
            acc = float(rng.uniform(0, 1))
            records.append({"type": "eval", "step": step, "flops": flops, "acc": acc})
    return records


@grader
def check_steps_to_target(fn: Callable[[list[dict], float], float], *, seed: int = 0) -> None:
    """Chapter 10: ``fn(records, target)`` must return the step of the first evaluation record
    (``type == "eval"``) whose ``acc`` is at least ``target``, or ``math.inf`` if none is."""
    rng = np.random.default_rng(seed)
    fixed = [
        {"type": "eval", "step": 0, "acc": 0.1, "flops": 0.0},
        {"type": "train", "step": 1, "acc": 0.99, "wall_s": 1.0, "flops": 1.0},  # not an eval
        {"type": "eval", "step": 5, "acc": 0.5, "flops": 5.0},
        {"type": "eval", "step": 10, "acc": 0.8, "flops": 9.0},
        {"type": "eval", "step": 15, "acc": 0.7, "flops": 12.0},
    ]
    cases = [(fixed, 0.5), (fixed, 0.8), (fixed, 0.05), (fixed, 0.95), (fixed, 0.75)]
    cases += [(_random_run(rng, 30), float(rng.uniform(0.2, 1.0))) for _ in range(20)]
    for records, target in cases:
        expected = cost_to_target(records, target)["step"]
        got = fn(records, target)
        label = f" at target {target:.2f}"
        if math.isinf(expected):
            if not (isinstance(got, (int, float)) and math.isinf(got)):
                raise GradingError(
                    f"steps_to_target{label}: never reached, expected inf, got {got!r}"
                )
            continue
        compare_number("steps_to_target", got, expected, label, rtol=0)
    passed("steps_to_target")


@grader
def check_compounding_mistakes(fn: Callable[[float, int], float]) -> None:
    """Chapter 10: ``fn(eps, steps)`` must return the expected number of wrong steps in a trace of
    ``steps`` steps when each step errs with probability ``eps`` and the first error is never
    recovered from (every later step is then wrong too)."""
    from opd_lib.lab.experiments import compounding_mistakes

    cases = [(0.0, 5), (1.0, 5), (0.1, 1), (0.1, 3), (0.25, 10), (0.03, 40), (0.5, 2)]
    for eps, steps in cases:
        expected = compounding_mistakes(eps, steps)
        compare_number("compounding_mistakes", fn(eps, steps), expected,
                       f" at eps={eps}, steps={steps}", rtol=1e-9)  # fmt: skip
    passed("compounding_mistakes")
