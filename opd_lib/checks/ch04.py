"""Chapter 4 graders."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from opd_lib.checks import GradingError, compare_number, passed
from opd_lib.gkd import gkd_loss
from opd_lib.sampling import completion_mask

EOS = 2


def _case(
    rng: np.random.Generator, batch: int, length: int, vocab: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    student = torch.tensor(rng.normal(0, 2, (batch, length, vocab)))
    teacher = torch.tensor(rng.normal(0, 2, (batch, length, vocab)))
    ids = torch.tensor(rng.integers(3, vocab, (batch, length)))
    for row in range(batch):  # most rows stop early, some twice, one never
        if row == batch - 1:
            continue
        ends = rng.choice(length, size=int(rng.integers(1, 3)), replace=False)
        ids[row, torch.tensor(ends)] = EOS
    return student, teacher, ids


def check_masked_gkd_loss(
    fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, float], object],
    *,
    seed: int = 0,
) -> None:
    """Chapter 4: ``fn(student_logits, teacher_logits, completion_ids, eos_token_id, beta)`` must
    return GKD's loss on a batch of completions: the generalized JSD per token (beta=0 forward
    KL, beta=1 reverse KL), counting each completion up to and including its first EOS, averaged
    over all counted tokens of the batch."""
    rng = np.random.default_rng(seed)
    cases = [(2, 5, 6, 0.5), (3, 7, 9, 0.0), (3, 7, 9, 1.0), (4, 6, 5, 0.1)]
    cases += [
        (int(rng.integers(2, 5)), int(rng.integers(3, 9)), int(rng.integers(4, 12)), beta)
        for beta in rng.choice([0.0, 0.25, 0.5, 0.9, 1.0], size=12)
    ]
    for batch, length, vocab, beta in cases:
        student, teacher, ids = _case(rng, batch, length, vocab)
        expected = gkd_loss(student, teacher, completion_mask(ids, EOS), beta=float(beta))
        try:
            got = fn(student.clone(), teacher.clone(), ids.clone(), EOS, float(beta))
        except NotImplementedError:
            raise
        except Exception as err:  # noqa: BLE001 - report any crash as a wrong answer
            raise GradingError(f"masked_gkd_loss raised {type(err).__name__}: {err}") from err
        if isinstance(got, torch.Tensor):
            if got.numel() != 1:
                raise GradingError(
                    f"masked_gkd_loss returned a tensor of shape {tuple(got.shape)}; "
                    "expected a scalar"
                )
            got = got.item()
        where = f" (batch {batch}, length {length}, vocab {vocab}, beta={beta:g})"
        compare_number("masked_gkd_loss", got, float(expected), where, rtol=1e-6)
    passed("masked_gkd_loss")
