"""Chapter 7 graders."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from opd_lib.checks import GradingError, compare_number, grader, passed
from opd_lib.curriculum import paced_weight
from opd_lib.tip import select_tokens, teacher_confidence_importance


@grader
def check_confidence_score(fn: Callable[[float, float, int], float], *, seed: int = 0) -> None:
    """Chapter 7: ``fn(teacher_entropy, divergence, vocab_size)`` must return the teacher-confidence
    weight (1 - H_T / log V) * D for one token (scalars in, a number out)."""
    rng = np.random.default_rng(seed)
    cases = [(0.08, 0.03, 32000), (0.15, 0.82, 32000), (2.30, 0.45, 32000), (0.0, 1.0, 2)]
    cases += [(math.log(151936), 2.0, 151936), (1.0, 0.0, 50)]
    for _ in range(20):
        vocab = int(rng.integers(2, 200_000))
        cases.append((float(rng.uniform(0, math.log(vocab))), float(rng.exponential(1.0)), vocab))
    for h, d, vocab in cases:
        expected = teacher_confidence_importance(
            torch.tensor([h], dtype=torch.float64), torch.tensor([d], dtype=torch.float64), vocab
        ).item()
        compare_number(
            "confidence_score", fn(h, d, vocab), expected, f"({h:.4g}, {d:.4g}, {vocab})", 1e-6
        )
    passed("confidence_score")


@grader
def check_keep_top_fraction(
    fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor], *, seed: int = 0
) -> None:
    """Chapter 7: ``fn(scores, mask, keep_fraction)`` must return the bool mask [B, T] that keeps
    the ceil(keep_fraction * n) highest-scoring of the n masked tokens (ties: earlier position
    first),
    exactly as :func:`opd_lib.tip.select_tokens` does with ``keep_fraction``."""
    gen = torch.Generator().manual_seed(seed)
    cases = [
        (torch.tensor([[0.1, 0.9, 0.5, 0.3]]), torch.tensor([[True, True, True, True]]), 0.5),
        (torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([[True, False], [True, True]]), 0.5),
        (torch.tensor([[1.0, 1.0, 1.0, 0.0]]), torch.ones(1, 4, dtype=torch.bool), 0.5),  # ties
        (torch.tensor([[0.3, 0.2, 0.1]]), torch.ones(1, 3, dtype=torch.bool), 0.1),  # keeps 1
        (torch.tensor([[0.4, 0.1, 0.7]]), torch.ones(1, 3, dtype=torch.bool), 1.0),
        (torch.tensor([[5.0, 0.2, 0.1, 0.3, 0.0]]), torch.tensor([[False] + [True] * 4]), 0.5),
    ]
    for _ in range(20):
        b, t = (
            int(torch.randint(1, 5, (1,), generator=gen)),
            int(torch.randint(1, 12, (1,), generator=gen)),
        )
        scores = torch.rand(b, t, generator=gen).round(decimals=1)  # rounding makes ties
        mask = torch.rand(b, t, generator=gen) < 0.8
        mask[0, 0] = True
        frac = float(torch.rand((), generator=gen).clamp_min(0.05))
        cases.append((scores, mask, frac))
    for scores, mask, frac in cases:
        expected = select_tokens(scores, mask, keep_fraction=frac)
        got = fn(scores.clone(), mask.clone(), frac)
        where = f"(scores={scores.tolist()}, mask={mask.tolist()}, keep_fraction={frac:.3g})"
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            raise GradingError(
                f"keep_top_fraction{where} must return a tensor of shape "
                f"{tuple(expected.shape)}, got {got!r}"
            )
        if not torch.equal(got.bool(), expected):
            raise GradingError(
                f"keep_top_fraction{where} kept {got.bool().int().tolist()}, expected "
                f"{expected.int().tolist()}"
            )
    passed("keep_top_fraction")


def _paced_reference(rewards: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    w = np.asarray(paced_weight(rewards.mean(axis=1), alpha, beta), dtype=float)
    total = w.sum()
    return w / total if total > 0 else np.zeros_like(w)


def _paced_hint(got: np.ndarray, rewards: np.ndarray, alpha: float, beta: float) -> str:
    """Name the plausible mistake ``got`` matches, if any."""
    rate = rewards.mean(axis=1)
    raw = np.asarray(paced_weight(rate, alpha, beta), dtype=float)
    expected = _paced_reference(rewards, alpha, beta)
    guesses = {
        "alpha and beta are swapped: w(p) = p^alpha (1 - p)^beta": _paced_reference(
            rewards, beta, alpha
        ),
        "the weights are not normalised to sum to 1 over the batch": raw,
        "the pass rate is a problem's mean reward over its samples (axis 1)": _paced_reference(
            rewards.T, alpha, beta
        ),
    }
    for hint, wrong in guesses.items():
        if wrong.shape == got.shape and np.allclose(got, wrong, atol=1e-9):
            return f" ({hint})"
    nz = expected > 1e-12
    zero_ok = np.allclose(got[~nz], 0.0, atol=1e-12)
    if nz.any() and zero_ok and np.allclose(got[nz] / expected[nz], (got[nz] / expected[nz])[0]):
        return f" (off by a constant factor {(got[nz] / expected[nz])[0]:.4g})"
    return ""


@grader
def check_paced_weights(
    fn: Callable[[np.ndarray, float, float], np.ndarray], *, seed: int = 0
) -> None:
    """Chapter 7: ``fn(rewards, alpha, beta)`` with 0/1 verifier rewards [n_problems, n_samples]
    must return each problem's PACED weight p^alpha (1 - p)^beta at its pass rate p (mean reward
    over its samples), normalised to sum to 1 over the batch; all zeros when every weight is 0
    (every problem always or never solved)."""
    rng = np.random.default_rng(seed)
    cases = [
        (np.array([[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0], [1, 0, 0, 0]], float), 1.0, 1.0),
        (np.array([[1, 1, 1, 1], [0, 0, 0, 0]], float), 1.0, 1.0),  # nothing to learn from
        (np.array([[1, 0, 0, 0], [1, 1, 1, 0]], float), 2.0, 1.0),
    ]
    for _ in range(15):
        n, g = int(rng.integers(2, 9)), int(rng.integers(2, 17))
        rates = rng.uniform(0, 1, n)
        cases.append(
            (
                (rng.uniform(size=(n, g)) < rates[:, None]).astype(float),
                float(rng.choice([0.5, 1.0, 2.0, 3.0])),
                float(rng.choice([0.5, 1.0, 2.0])),
            )
        )
    for i, (rewards, alpha, beta) in enumerate(cases):
        where = f" on case {i} ({rewards.shape[0]} problems x {rewards.shape[1]} samples, "
        where += f"alpha {alpha:g}, beta {beta:g})"
        expected = _paced_reference(rewards, alpha, beta)
        got = np.asarray(fn(rewards.copy(), alpha, beta), dtype=float)
        if got.shape != expected.shape:
            raise GradingError(
                f"paced_weights{where} returned shape {got.shape}, expected {expected.shape} "
                "(one weight per problem)"
            )
        if not np.isfinite(got).all():
            raise GradingError(
                f"paced_weights{where} returned {got.round(4).tolist()}: when every weight is 0 "
                "(all problems always or never solved) return zeros instead of dividing by 0"
            )
        if not np.allclose(got, expected, rtol=1e-6, atol=1e-9):
            raise GradingError(
                f"paced_weights{where} returned {got.round(4).tolist()}, expected "
                f"{expected.round(4).tolist()}{_paced_hint(got, rewards, alpha, beta)}"
            )
    passed("paced_weights")
