"""Execution noise: mistakes made by the environment, which no training can remove.

The running-sum student writes each step as ``a+b=c``. With probability ``rate`` the digit it
writes right after ``=`` is replaced by one of the nine wrong digits (uniformly), and the
replaced digit is what the model reads from then on, as a slip of the pen would be. A policy
that can recover continues from the true running value; one that builds on what is written
carries the mistake to the answer. This is the setting DAgger is about (mistakes the learner
cannot avoid, so states after them must be trained) and the trick of DART (Laskey et al., 2017:
inject noise while collecting data so that recovery states appear in it).

The noise of one ``sample_completions`` call is drawn up front, one uniform and one shift per
row and position, so it depends only on the generator's state, never on what the model wrote:
two models sampled with equally seeded generators meet the same noise at the same places.
For a full-vocabulary divergence the loss at a replaced position does not depend on which token
stands there, so nothing needs masking.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["digit_noise"]

Corrupt = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def digit_noise(
    tokenizer, rate: float, rows: int, max_new_tokens: int, generator: torch.Generator
) -> Corrupt | None:
    """The ``corrupt(previous, drawn)`` hook of :func:`opd_lib.sampling.sample_completions` for one
    call of ``rows`` prompts and ``max_new_tokens`` steps: a digit drawn right after ``=`` becomes
    ``(d + s) mod 10`` (``s`` uniform in 1..9) with probability ``rate``. ``None`` when ``rate``
    is 0 (nothing drawn from ``generator``)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    if rows < 1 or max_new_tokens < 1:
        raise ValueError(f"rows and max_new_tokens must be >= 1, got {rows}, {max_new_tokens}")
    if rate == 0.0:
        return None
    ids = [tokenizer.convert_tokens_to_ids(t) for t in "=0123456789"]
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
        raise ValueError("the tokenizer has no single-character tokens for '=' and the digits")
    device = generator.device
    equals, digits = ids[0], torch.tensor(ids[1:], device=device)
    hit = torch.rand(rows, max_new_tokens, generator=generator, device=device) < rate
    shift = torch.randint(1, 10, (rows, max_new_tokens), generator=generator, device=device)
    step = 0

    def corrupt(previous: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
        nonlocal step
        if drawn.shape[0] != rows or step >= max_new_tokens:
            raise ValueError(f"this noise was drawn for {rows} rows x {max_new_tokens} steps")
        is_digit = drawn[:, None] == digits.to(drawn.device)[None, :]  # [B, 10]
        value = is_digit.float().argmax(-1)
        flip = hit[:, step].to(drawn.device) & is_digit.any(-1) & (previous == equals)
        wrong = digits.to(drawn.device)[(value + shift[:, step].to(drawn.device)) % 10]
        step += 1
        return torch.where(flip, wrong, drawn)

    return corrupt
