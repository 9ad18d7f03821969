"""Chapter 7's task and pair: reversing a short string of letters, learnt by a tiny Qwen3 pair.

A prompt is a short string of letters followed by ``=`` (``"cab="``); the answer is the string
reversed (``"bac"``) and then EOS (:func:`reversal_task`). :func:`reversal_pair` builds a Qwen3
teacher (2 layers x 64) and a smaller student (1 layer x 32) over a character vocabulary
(:func:`opd_lib.tokenizers.char_tokenizer`) and fine-tunes both briefly (:func:`sft`), the
teacher for longer. :func:`reversal_rollouts` and :func:`completion_logprobs` draw and score the
student's completions. Everything runs on a CPU in seconds and is deterministic in its ``seed``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from opd_lib import lm
from opd_lib._threads import single_thread
from opd_lib.lm import completion_logits
from opd_lib.models import ModelPair, tiny_qwen3_pair
from opd_lib.sampling import completion_mask, sample_completions
from opd_lib.tokenizers import char_tokenizer

REVERSAL_LETTERS = "abcdef"
"""The letters prompts are made of."""
REVERSAL_ALPHABET = REVERSAL_LETTERS + "=\nsytmurin"
"""The tokenizer's characters: the task's letters, ``=`` and what the ChatML template needs."""


def reversal_task(
    n: int, seed: int, min_len: int = 3, max_len: int = 5, letters: str = REVERSAL_LETTERS
) -> tuple[list[str], list[str]]:
    """``n`` random prompts ``"<letters>="`` and their answers (the letters reversed).

    Lengths are uniform in ``[min_len, max_len]``; letters uniform over ``letters``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    if not letters or "=" in letters:
        raise ValueError("letters must be non-empty and must not contain '='")
    rng = np.random.default_rng(seed)
    prompts, answers = [], []
    for _ in range(n):
        length = int(rng.integers(min_len, max_len + 1))
        word = "".join(rng.choice(list(letters), size=length))
        prompts.append(word + "=")
        answers.append(word[::-1])
    return prompts, answers


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt ids and attention mask ``[B, P]`` (no special tokens added)."""
    if not prompts:
        raise ValueError("prompts is empty")
    enc = tokenizer(list(prompts), padding=True, return_tensors="pt", add_special_tokens=False)
    return enc["input_ids"], enc["attention_mask"]


def sft(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    answers: Sequence[str],
    steps: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
) -> list[float]:
    """Supervised fine-tuning (:func:`opd_lib.lm.sft`): cross-entropy on answer tokens (EOS
    included), constant learning rate, in place.

    Minibatches are drawn with replacement from ``(prompts, answers)`` with ``seed``. Returns the
    loss of every step.
    """
    if steps < 0 or batch_size < 1:
        raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {steps}, {batch_size}")
    data = lm.encode(tokenizer, prompts, answers)
    rng = np.random.default_rng(seed)

    def next_batch(step: int) -> lm.Batch:
        idx = torch.as_tensor(rng.integers(0, len(prompts), size=batch_size))
        return lm.Batch(data.prompt_ids[idx], data.prompt_mask[idx], data.completion_ids[idx],
                        data.mask[idx])  # fmt: skip

    losses = lm.sft(model, next_batch, steps=steps, lr=lr, grad_clip=0.0)
    model.eval()
    return losses


def reversal_pair(
    seed: int = 0,
    teacher_steps: int = 100,
    student_steps: int = 30,
    n_train: int = 2000,
    batch_size: int = 32,
    lr: float = 5e-3,
) -> ModelPair:
    """A tiny teacher/student pair, both briefly fine-tuned on the reversal task.

    Teacher: Qwen3, 2 layers x 64 hidden, ``teacher_steps`` SFT steps. Student: 1 layer x 32
    hidden, ``student_steps`` steps (fewer, so it is only partly competent). Deterministic in
    ``seed``.
    """
    tokenizer = char_tokenizer(REVERSAL_ALPHABET)
    pair = tiny_qwen3_pair(
        tokenizer,
        teacher=dict(layers=2, hidden=64, heads=4),
        student=dict(layers=1, hidden=32, heads=4),
        seed=seed,
    )
    prompts, answers = reversal_task(n_train, seed=seed)
    with torch.random.fork_rng(devices=[]), single_thread():
        torch.manual_seed(seed)
        sft(pair.teacher, tokenizer, prompts, answers, teacher_steps, batch_size, lr, seed)
        sft(pair.student, tokenizer, prompts, answers, student_steps, batch_size, lr, seed + 1)
    for p in pair.teacher.parameters():
        p.requires_grad_(False)
    return pair


def completion_logprobs(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    eos_token_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probabilities ``[B, C]`` of the completion tokens under ``model``, completion mask).

    The mask covers each completion up to and including its first EOS; log-probs are 0 elsewhere.
    Feed both to :func:`opd_lib.prefix.flawed_prefix_mask`.
    """
    with torch.no_grad(), single_thread():
        logits = completion_logits(model, prompt_ids, prompt_mask, completion_ids)
        logp = lm.token_logprobs(logits, completion_ids)
    mask = completion_mask(completion_ids, eos_token_id).bool()
    return torch.where(mask, logp, torch.zeros(())), mask


def reversal_rollouts(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    temperature: float = 1.0,
    max_new_tokens: int = 6,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prompt ids, prompt mask, sampled completions ``[B, max_new_tokens]``) from ``model``."""
    ids, attn = encode_prompts(tokenizer, prompts)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad(), single_thread():
        completion = sample_completions(
            model, ids, attn, max_new_tokens, temperature, gen, tokenizer.eos_token_id
        )
    return ids, attn, completion
