"""Chapter 7 graders."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from opd_lib.checks import GradingError, compare_number, passed
from opd_lib.tip import select_tokens, teacher_confidence_importance


def check_seed_score(fn: Callable[[float, float, int], float], *, seed: int = 0) -> None:
    """Chapter 7: ``fn(teacher_entropy, divergence, vocab_size)`` must return the seed's importance
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
            "seed_score", fn(h, d, vocab), expected, f"({h:.4g}, {d:.4g}, {vocab})", 1e-6
        )
    passed("seed_score")


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
