"""Chapter 4 graders."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from opd_lib.checks import GradingError, compare_number, grader, passed
from opd_lib.gkd import choose_source, gkd_loss, lambda_schedule
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


@grader
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


_SOURCES = ("student", "teacher", "data")


def _check_choices(choose: Callable[..., object], n_draws: int = 300) -> None:
    for lam in (0.0, 0.1, 0.5, 0.8, 1.0):
        for seq_kd in (False, True):
            where = f"(lam={lam}, seq_kd={seq_kd})"
            mine, ref = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
            got = [choose(lam, seq_kd, mine) for _ in range(n_draws)]
            expected = [choose_source(lam, seq_kd, ref) for _ in range(n_draws)]
            bad = [g for g in got if g not in _SOURCES]
            if bad:
                raise GradingError(
                    f"choose_source{where} returned {bad[0]!r}; expected one of {_SOURCES}"
                )
            if got == expected:
                continue
            share, off = got.count("student") / n_draws, "teacher" if seq_kd else "data"
            if ("data" in got and seq_kd) or ("teacher" in got and not seq_kd):
                raise GradingError(
                    f"choose_source{where} returned {('data' if seq_kd else 'teacher')!r}: "
                    f"the off-policy batch is {off!r} when seq_kd is {seq_kd}"
                )
            if abs(share - (1 - lam)) < 0.1 and abs(lam - 0.5) > 0.1:
                raise GradingError(
                    f"choose_source{where} picked the student {share:.0%} of the time, about "
                    f"1 - lam: pick the student when u < lam, not u >= lam"
                )
            raise GradingError(
                f"choose_source{where} picked the student {share:.0%} of the time and its "
                f"choices differ from the reference from draw {_first_diff(got, expected)} on: "
                "draw exactly one number per call, torch.rand((), generator=generator), "
                "so that the same seed gives the same run"
            )


def _first_diff(a: list, b: list) -> int:
    return next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)


def _check_schedule(schedule: Callable[..., object]) -> None:
    for total, warmup, mixed in [
        (100, 0.2, 0.4),
        (10, 0.1, 0.2),
        (37, 0.3, 0.0),
        (50, 0.0, 1.0),
        (80, 0.25, 0.5),
    ]:
        for step in range(total + 1):
            expected = lambda_schedule(step, total, warmup, mixed)
            where = f"(step={step}, total_steps={total}, warmup={warmup}, mixed={mixed})"
            got = schedule(step, total, warmup, mixed)
            try:
                value = float(got)  # type: ignore[arg-type]
            except (TypeError, ValueError) as err:
                raise GradingError(f"lambda_schedule{where} returned {got!r}") from err
            if abs(value - expected) <= 1e-9:
                continue
            phase = (
                "the warm-up phase, where lam = 0"
                if step < warmup * total - 1e-9
                else "the on-policy phase, where lam = 1"
                if step >= (warmup + mixed) * total - 1e-9
                else "the mixed phase, where lam rises linearly from 0 to 1"
            )
            raise GradingError(
                f"lambda_schedule{where} returned {value:.4g}, expected {expected:.4g}: "
                f"this step is in {phase}"
            )


@grader
def check_gkd_mixture(
    choose: Callable[[float, bool, torch.Generator], object],
    schedule: Callable[[int, int, float, float], object],
) -> None:
    """Chapter 4: ``choose(lam, seq_kd, generator)`` must make :func:`opd_lib.gkd.choose_source`'s
    choice (one ``torch.rand`` draw; ``"student"`` if ``u < lam``, else ``"teacher"`` with
    ``seq_kd`` and ``"data"`` without), draw for draw from the same seed; and
    ``schedule(step, total_steps, warmup, mixed)`` must equal :func:`opd_lib.gkd.lambda_schedule`
    at every step of several runs."""
    _check_choices(choose)
    _check_schedule(schedule)
    passed("choose_source and lambda_schedule")
