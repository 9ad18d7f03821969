"""Chapter 9 graders."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from opd_lib.checks import GradingError, compare_number, grader, passed
from opd_lib.lab.metrics import flops
from opd_lib.sim import break_it, fdiv


def _moment_cases(seed: int) -> list[tuple[np.ndarray, np.ndarray, str]]:
    rng = np.random.default_rng(seed)
    t = fdiv.bimodal_teacher(n_points=17, lo=0.0, hi=16.0, centers=(4.0, 12.0), width=1.0)
    cases = [(t.x, t.probs, "the chapter's teacher (answers 4 and 12)")]
    cases.append((np.arange(5.0), np.array([0.0, 0.0, 1.0, 0.0, 0.0]), "a point mass at 2"))
    cases.append((np.array([-1.0, 1.0]), np.array([0.5, 0.5]), "two equal answers at -1 and 1"))
    for i in range(12):
        n = int(rng.integers(3, 40))
        x = np.sort(rng.uniform(-10, 10, n))
        cases.append((x, rng.dirichlet(np.full(n, 0.5)), f"random case {i}"))
    return cases


@grader
def check_gaussian_moments(
    fn: Callable[[np.ndarray, np.ndarray], tuple[float, float]], *, seed: int = 0
) -> None:
    """Chapter 9: ``fn(x, p)`` must return ``(mean, std)`` of the distribution ``p`` on the grid
    ``x``: the Gaussian that forward KL fits to ``p`` (moment matching)."""
    for x, p, where in _moment_cases(seed):
        got = fn(x.copy(), p.copy())
        try:
            mean, std = got
        except (TypeError, ValueError) as err:
            raise GradingError(
                f"fit_gaussian_fkl on {where} returned {got!r}; expected a pair (mean, std)"
            ) from err
        ref_mean, ref_std = break_it.gaussian_moments(x, p)
        compare_number("the mean", mean, ref_mean, f" on {where}", rtol=1e-6)
        if np.isclose(float(std), ref_std**2, rtol=1e-6) and not np.isclose(ref_std, ref_std**2):
            raise GradingError(f"on {where} you returned the variance {float(std):.4g}; "
                               "the standard deviation is its square root")  # fmt: skip
        compare_number("the std", std, ref_std, f" on {where}", rtol=1e-6)
    passed("fit_gaussian_fkl")


@grader
def check_loop_filter(fn: Callable[[np.ndarray, int], np.ndarray], *, seed: int = 0) -> None:
    """Chapter 9: ``fn(token_ids, max_run)`` must return a bool keep mask ``[B]``: False for rows
    that contain a run of more than ``max_run`` equal consecutive tokens."""
    rng = np.random.default_rng(seed)
    fixed = np.array(
        [[0, 1, 2, 3, 4, 5], [0, 0, 0, 1, 2, 3], [1, 2, 3, 3, 3, 3], [5, 5, 1, 5, 5, 1]]
    )
    cases = [(fixed, 2), (fixed, 3), (fixed, 1)]
    for _ in range(10):
        ids = rng.integers(0, 3, (int(rng.integers(1, 12)), int(rng.integers(2, 30))))
        cases.append((ids, int(rng.integers(1, 6))))
    for ids, max_run in cases:
        got = np.asarray(fn(ids.copy(), max_run))
        expected = break_it.longest_run(ids) <= max_run
        if got.shape != expected.shape:
            raise GradingError(f"shape {got.shape}, expected {expected.shape} (one flag per row)")
        if got.dtype != np.bool_:
            raise GradingError(f"dtype {got.dtype}; return a bool array (True = keep the row)")
        if not np.array_equal(got, expected):
            row = int(np.flatnonzero(got != expected)[0])
            raise GradingError(
                f"row {ids[row].tolist()} with max_run={max_run}: you returned {bool(got[row])}, "
                f"expected {bool(expected[row])} (its longest run is "
                f"{int(break_it.longest_run(ids[row : row + 1])[0])})"
            )
    passed("drop_loops")


STEP_METHODS = ("sft", "opd", "rl")


def _step_flops_reference(method: str, n_student: int, n_teacher: int, tokens: int) -> float:
    """FLOPs of one training step on ``tokens`` completion tokens, by the lab's 2N / 6N count."""
    if method == "sft":  # the teacher wrote the traces (once), the student trains on them
        return flops(n_student, tokens, generated={n_teacher: tokens})
    if method == "opd":  # the student samples, the teacher scores, the student trains
        return flops(n_student, tokens, generated={n_student: tokens}, scored={n_teacher: tokens})
    return flops(n_student, tokens, generated={n_student: tokens})  # rl: sample, train


def _step_flops_hint(method, got, n_s, n_t, tokens) -> str:
    expected = _step_flops_reference(method, n_s, n_t, tokens)
    guesses = {
        "the training pass costs 6N per token (forward 2N + backward 4N), not 2N": expected
        - 4.0 * n_s * tokens,
        "the training pass is 6N per token, not 8N": expected + 2.0 * n_s * tokens,
        "the student trains, so training costs 6 N_student, not 6 N_teacher": expected
        - 6.0 * n_s * tokens
        + 6.0 * n_t * tokens,
    }
    if method == "opd":
        guesses["on-policy distillation also runs the teacher over every sampled token (2 N_T)"] = (
            expected - 2.0 * n_t * tokens
        )
        guesses["the student samples the rollouts (2 N_S), the teacher only scores them"] = (
            expected - 2.0 * n_s * tokens + 2.0 * n_t * tokens
        )
    if method == "sft":
        guesses["SFT on teacher traces counts the teacher writing them (2 N_T per token)"] = (
            expected - 2.0 * n_t * tokens
        )
    if method == "rl":
        guesses["RL with a verifier calls no teacher"] = expected + 2.0 * n_t * tokens
    for hint, wrong in guesses.items():
        if np.isclose(got, wrong, rtol=1e-9):
            return f" ({hint})"
    if expected and np.isclose(got / expected, round(got / expected)) and got != expected:
        return f" (off by a factor {got / expected:g}: count tokens = sequences x length once)"
    return ""


@grader
def check_step_flops(fn: Callable[[str, int, int, int, int], float], *, seed: int = 0) -> None:
    """Chapter 9: ``fn(method, n_student, n_teacher, sequences, length)`` must return the FLOPs of
    one training step on ``sequences x length`` completion tokens for ``method`` in
    ``("sft", "opd", "rl")``, by the count of :func:`opd_lib.lab.metrics.flops`: 6 N_S per trained
    token, 2 N per token a model generates or scores; SFT counts the teacher writing its traces."""
    rng = np.random.default_rng(seed)
    cases = [("opd", 600_000_000, 1_700_000_000, 64, 2000)]
    cases += [(m, 10**6, 4 * 10**6, 2, 10) for m in STEP_METHODS]
    for _ in range(12):
        cases.append(
            (
                str(rng.choice(STEP_METHODS)),
                int(rng.integers(10**5, 10**9)),
                int(rng.integers(10**5, 10**10)),
                int(rng.integers(1, 256)),
                int(rng.integers(1, 4096)),
            )
        )
    for method, n_s, n_t, seqs, length in cases:
        where = f"({method!r}, n_student={n_s}, n_teacher={n_t}, {seqs} x {length} tokens)"
        got = fn(method, n_s, n_t, seqs, length)
        try:
            value = float(got)
        except (TypeError, ValueError) as err:
            raise GradingError(f"step_flops{where} returned {got!r}, not a number") from err
        expected = _step_flops_reference(method, n_s, n_t, seqs * length)
        if not np.isclose(value, expected, rtol=1e-9):
            raise GradingError(
                f"step_flops{where} returned {value:.4g}, expected {expected:.4g}"
                f"{_step_flops_hint(method, value, n_s, n_t, seqs * length)}"
            )
    passed("step_flops")
