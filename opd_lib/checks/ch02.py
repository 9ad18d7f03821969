"""Chapter 2 graders."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from opd_lib import bounds
from opd_lib.checks import GradingError, compare_number, grader, passed
from opd_lib.sim import dagger


@grader
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


@grader
def check_crossover_length(fn: Callable[[float], float], *, seed: int = 0) -> None:
    """Chapter 2: ``fn(ratio)`` must return the length T at which the off-policy bound
    eps T (T + 1) / 2 is exactly ``ratio`` times the on-policy bound eps T."""
    rng = np.random.default_rng(seed)
    cases = [1.0, 2.0, 10.0, 50.0, 100.0] + [float(rng.uniform(1.0, 500.0)) for _ in range(20)]
    for ratio in cases:
        expected = bounds.crossover_length(ratio)
        compare_number("crossover_length", fn(ratio), expected, f"({ratio:.4g})", rtol=1e-6)
    passed("crossover_length")


def _as_learners(out: object, n_iterations: int) -> list:
    try:
        learners = list(out)  # type: ignore[call-overload]
    except TypeError as err:
        raise GradingError(f"my_dagger returned {out!r}, not a list of learners") from err
    if len(learners) != n_iterations:
        raise GradingError(
            f"my_dagger returned {len(learners)} learners, expected one per iteration "
            f"({n_iterations})"
        )
    for i, learner in enumerate(learners):
        if not hasattr(learner, "actions") or not hasattr(learner, "counts"):
            raise GradingError(
                f"item {i} of my_dagger's list is {learner!r}: return what dg.fit_tabular returns"
            )
    return learners


_DAGGER_MISTAKES = {
    "no aggregation": (
        dict(aggregate=False),
        "each iteration was fitted on its own labels only: aggregate, fitting on every label "
        "collected so far",
    ),
    "learner labels": (
        dict(label="learner"),
        "the labels are the actions the rolled-out policy took: label the visited states with "
        "the expert's actions (runs.expert_actions)",
    ),
    "expert rollouts": (
        dict(roll="expert"),
        "every iteration rolled out the expert (that is behaviour cloning with more data): roll "
        "out the previous iteration's learner (dg.learner_policy)",
    ),
    "one seed": (
        dict(seed_step=0),
        "every iteration sampled with the same seed: use seed + i - 1 for iteration i",
    ),
}


def _dagger_variant(
    problem: dagger.TrackProblem,
    T: int,
    n_rollouts: int,
    n_iterations: int,
    seed: int,
    aggregate: bool = True,
    label: str = "expert",
    roll: str = "learner",
    seed_step: int = 1,
) -> list[dagger.Learner]:
    """DAgger with one of the plausible mistakes switched on (to name the reader's)."""
    policy = dagger.expert_policy(problem)
    offsets: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    learners = []
    for i in range(n_iterations):
        runs = dagger.rollout(problem, policy, T, n_rollouts, seed + seed_step * i)
        if not aggregate:
            offsets, labels = [], []
        offsets.append(runs.offsets.ravel())
        labels.append((runs.expert_actions if label == "expert" else runs.actions).ravel())
        learner = dagger.fit_tabular(problem, np.concatenate(offsets), np.concatenate(labels))
        learners.append(learner)
        if roll == "learner":
            policy = dagger.learner_policy(problem, learner)
    return learners


def _same(a: object, b: dagger.Learner) -> bool:
    counts, actions = getattr(a, "counts", None), getattr(a, "actions", None)
    return np.array_equal(np.asarray(counts), b.counts) and np.array_equal(
        np.asarray(actions), b.actions
    )


def _diagnose_dagger(got: list, args: tuple) -> str:
    first_bad = next(
        i
        for i, (g, r) in enumerate(zip(got, dagger.dagger(*args).learners, strict=True))
        if not _same(g, r)
    )
    if first_bad == 0:
        return (
            "iteration 1 (behaviour cloning) differs: roll out the expert with seed `seed` and "
            "fit its visited offsets and the expert's labels"
        )
    for knobs, hint in _DAGGER_MISTAKES.values():
        variant = _dagger_variant(*args, **knobs)
        if all(_same(g, v) for g, v in zip(got, variant, strict=True)):
            return hint
    return (
        f"iteration {first_bad + 1} differs: roll out the previous learner with seed + i - 1, "
        "label with the expert, add to all earlier labels, refit with dg.fit_tabular"
    )


@grader
def check_dagger_loop(fn: Callable[..., object]) -> None:
    """Chapter 2: ``fn(problem, T, n_rollouts, n_iterations, seed)`` must return the learners of
    DAgger's iterations, equal (table and label counts) to ``dagger.dagger(problem, T, n_rollouts,
    n_iterations, mixing=0, seed=seed).learners`` on several windy tracks."""
    cases = [
        (0.05, 4, 30, 5, 4, 0),
        (0.1, 3, 20, 4, 5, 3),
        (0.2, 2, 15, 6, 3, 7),
        (0.3, 4, 40, 3, 4, 1),
    ]
    for wind, half_width, T, n_rollouts, n_iterations, seed in cases:
        problem = dagger.make_track_problem(wind=wind, half_width=half_width)
        expected = dagger.dagger(problem, T, n_rollouts, n_iterations, seed=seed).learners
        got = _as_learners(fn(problem, T, n_rollouts, n_iterations, seed), n_iterations)
        if not all(_same(g, r) for g, r in zip(got, expected, strict=True)):
            where = f" (wind={wind}, half_width={half_width}, T={T}, seed={seed})"
            args = (problem, T, n_rollouts, n_iterations, seed)
            raise GradingError(_diagnose_dagger(got, args) + where)
    passed("my_dagger")
