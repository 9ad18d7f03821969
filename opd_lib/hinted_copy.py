"""The hinted copy task of Chapters 6 and 8: a toy where only a hint reveals one token.

Prompt ``"cab:"`` (3 random letters), hint ``"(g)"`` (a random key letter), answer ``"cab is g."``.
Every answer character but the key follows from the prompt (a copy and fixed wording); the key
(at :data:`KEY_AT`) follows only from the hint, so a model shown the hint can teach the same model
without it (on-policy self-distillation, :mod:`opd_lib.opsd`).
"""

from __future__ import annotations

import numpy as np
import torch

from opd_lib.opsd import hinted_teacher_logits

__all__ = ["ANSWER_LEN", "KEY_AT", "LETTERS", "PROMPT_LEN", "answer_ids", "examples", "sft_step"]

LETTERS = "abcdefgh"
PROMPT_LEN = 3
ANSWER_LEN = PROMPT_LEN + 6  # "abc is k."
KEY_AT = PROMPT_LEN + 4  # index of the key letter in the answer


def examples(n: int, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """``n`` examples (prompts, hints, answers) drawn with ``numpy.random.default_rng(seed)``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    prompts, hints, answers = [], [], []
    for _ in range(n):
        x = "".join(rng.choice(list(LETTERS), PROMPT_LEN))
        k = str(rng.choice(list(LETTERS)))
        prompts.append(x + ":")
        hints.append("(" + k + ")")
        answers.append(x + " is " + k + ".")
    return prompts, hints, answers


def answer_ids(tokenizer, answers: list[str]) -> torch.Tensor:
    """The answers' token ids ``[B, ANSWER_LEN]`` (no EOS: every answer has the same length)."""
    return torch.tensor([tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers])


def sft_step(model, tokenizer, opt: torch.optim.Optimizer, batch: int, seed: int) -> float:
    """One optimizer step of cross-entropy on ``batch`` fresh examples (drawn with ``seed``):
    two thirds shown with the hint (``prompt + hint -> answer``), one third without. Returns the
    loss."""
    prompts, hints, answers = examples(batch, seed=seed)
    half = (2 * batch) // 3
    hints = hints[:half] + [""] * (batch - half)
    ids = answer_ids(tokenizer, answers)
    logits = hinted_teacher_logits(model, tokenizer, prompts, hints, ids)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()
