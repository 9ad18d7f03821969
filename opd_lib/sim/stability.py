"""Chapter 7: token filtering on a real (tiny) on-policy distillation run.

Everything here runs on a CPU in seconds, so the chapter can train, roll out and compare live.

The task. A prompt is a short string of letters followed by ``=`` (``"cab="``); the answer is the
string reversed (``"bac"``) and then EOS. A Qwen3 teacher (2 layers x 64) and a smaller Qwen3
student (1 layer x 32) over a character vocabulary (:func:`opd_lib.tokenizers.char_tokenizer`)
are both trained briefly by supervised fine-tuning on the task, the teacher for longer: the teacher
ends up mostly right, the student only partly, so the student's rollouts are neither perfect nor
noise and its per-token disagreement with the teacher varies from token to token. That variation is
what the importance scores of :mod:`opd_lib.tip` rank. The task, the pair and the rollout helpers
are in :mod:`opd_lib.sim.reversal` (re-exported here).

The distillation loop (:func:`opd_run`) is minimal on-policy reverse-KL distillation: sample
completions from the student, score every completion position with both models, compute the full
per-token reverse KL ``KL(student || teacher)`` (:func:`opd_lib.divergences.token_divergence`),
keep the tokens a rule selects, and take an Adam step on their mean. The rules are ``"all"``,
``"tip"`` (:func:`opd_lib.tip.token_importance`, student entropy OR divergence) and ``"confidence"``
(:func:`opd_lib.tip.teacher_confidence_importance`, teacher confidence x divergence). The
divergence that both scores rank is the same reverse KL the loss uses (TIP's paper writes
``KL(teacher || student)``; using one divergence for both keeps the comparison about the scores).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from opd_lib import lm
from opd_lib._threads import single_thread
from opd_lib.divergences import token_divergence
from opd_lib.lm import completion_logits
from opd_lib.models import ModelPair
from opd_lib.sampling import completion_mask, sample_completions
from opd_lib.sim.reversal import (
    REVERSAL_ALPHABET,
    REVERSAL_LETTERS,
    completion_logprobs,
    encode_prompts,
    reversal_pair,
    reversal_rollouts,
    reversal_task,
    sft,
)
from opd_lib.tip import select_tokens, teacher_confidence_importance, token_importance

__all__ = [
    "REVERSAL_ALPHABET",
    "REVERSAL_LETTERS",
    "RULES",
    "compare_rules",
    "completion_logprobs",
    "encode_prompts",
    "entropy",
    "heldout_reverse_kl",
    "jaccard",
    "opd_run",
    "OPDRun",
    "reversal_pair",
    "reversal_rollouts",
    "reversal_task",
    "rollout_token_stats",
    "select_by_rule",
    "sft",
    "TokenStats",
]

RULES = ("all", "tip", "confidence")
"""Token-selection rules understood by :func:`select_by_rule`."""


entropy = lm.entropy  # of softmax(logits), in nats (kept under this module's name)


@dataclass(frozen=True)
class TokenStats:
    """Per-token statistics of one batch of student rollouts, all ``[B, C]`` (0 where not masked).

    ``divergence`` is the full reverse KL ``KL(student || teacher)`` at each position.
    """

    completion_ids: torch.Tensor
    mask: torch.Tensor
    student_entropy: torch.Tensor
    teacher_entropy: torch.Tensor
    divergence: torch.Tensor
    vocab_size: int


def _score_rollouts(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion: torch.Tensor,
    eos_token_id: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(student logits with grad, teacher logits, completion mask) for sampled completions."""
    mask = completion_mask(completion, eos_token_id).bool()
    with torch.no_grad():
        teacher_logits = completion_logits(teacher, prompt_ids, prompt_mask, completion)
    student_logits = completion_logits(student, prompt_ids, prompt_mask, completion)
    return student_logits, teacher_logits, mask


def rollout_token_stats(
    pair: ModelPair,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    max_new_tokens: int = 6,
    seed: int = 0,
    temperature: float = 1.0,
) -> TokenStats:
    """Sample one completion per prompt from the student and measure every completion token."""
    eos = pair.tokenizer.eos_token_id
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad(), single_thread():
        completion = sample_completions(
            pair.student, prompt_ids, prompt_mask, max_new_tokens, temperature, gen, eos
        )
        s_logits, t_logits, mask = _score_rollouts(
            pair.student, pair.teacher, prompt_ids, prompt_mask, completion, eos
        )
        rkl = token_divergence(s_logits, t_logits, kind="rkl", mask=mask)
    zero = torch.zeros(())
    return TokenStats(
        completion_ids=completion,
        mask=mask,
        student_entropy=torch.where(mask, entropy(s_logits), zero),
        teacher_entropy=torch.where(mask, entropy(t_logits), zero),
        divergence=rkl,
        vocab_size=s_logits.shape[-1],
    )


def select_by_rule(
    rule: str,
    student_entropy: torch.Tensor,
    teacher_entropy: torch.Tensor,
    divergence: torch.Tensor,
    mask: torch.Tensor,
    vocab_size: int,
    keep_fraction: float = 1.0,
) -> torch.Tensor:
    """The training mask a rule keeps: ``"all"`` (every masked token), ``"tip"`` or
    ``"confidence"`` (the top ``keep_fraction`` of masked tokens by that score, via
    :func:`opd_lib.tip.select_tokens`).
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; expected one of {RULES}")
    if rule == "all":
        return mask.clone()
    if rule == "tip":
        scores = token_importance(student_entropy, divergence, mask=mask)
    else:
        scores = teacher_confidence_importance(
            torch.where(mask, teacher_entropy, torch.zeros(())), divergence, vocab_size
        )
    return select_tokens(scores, mask, keep_fraction=keep_fraction)


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """Jaccard overlap |a & b| / |a | b| of two boolean masks (1.0 when both are empty)."""
    if a.shape != b.shape or a.dtype != torch.bool or b.dtype != torch.bool:
        raise ValueError("jaccard needs two bool tensors of the same shape")
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def heldout_reverse_kl(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int = 6,
    seed: int = 1234,
) -> float:
    """Mean per-token reverse KL ``KL(student || teacher)`` on the student's own samples.

    One completion per prompt is sampled (temperature 1, fixed ``seed``); at every completion
    position (EOS included) the full reverse KL, summed over the vocabulary, is computed; the
    result is its mean over those tokens: the quantity on-policy distillation minimises.
    """
    ids, attn = encode_prompts(tokenizer, prompts)
    eos = tokenizer.eos_token_id
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad(), single_thread():
        completion = sample_completions(student, ids, attn, max_new_tokens, 1.0, gen, eos)
        s_logits, t_logits, mask = _score_rollouts(student, teacher, ids, attn, completion, eos)
        rkl = token_divergence(s_logits, t_logits, kind="rkl", mask=mask, reduction="mean")
    return rkl.item()


@dataclass(frozen=True)
class OPDRun:
    """One on-policy distillation run: its settings and what it measured.

    ``eval_rkl[i]`` is :func:`heldout_reverse_kl` after ``eval_steps[i]`` steps;
    ``fraction_kept`` is kept tokens / completion tokens over the whole run; ``wall_s`` is the
    training time (evaluation excluded).
    """

    rule: str
    keep_fraction: float
    seed: int
    eval_steps: list[int]
    eval_rkl: list[float]
    fraction_kept: float
    wall_s: float


def opd_run(
    pair: ModelPair,
    rule: str,
    keep_fraction: float = 1.0,
    steps: int = 12,
    batch_size: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    eval_every: int | None = None,
    n_eval: int = 48,
    max_new_tokens: int = 6,
    initial_rkl: float | None = None,
) -> OPDRun:
    """On-policy reverse-KL distillation of a *copy* of ``pair.student`` with a token filter.

    Each step: sample ``batch_size`` completions from the student (training prompts drawn with
    ``seed``), compute teacher and student logits at every completion position, the per-token
    reverse KL, the kept tokens (:func:`select_by_rule`), and an Adam step on the mean reverse KL
    of the kept tokens. ``pair`` is not modified. Deterministic in ``seed`` (wall time aside).
    Evaluation (:func:`heldout_reverse_kl` on ``n_eval`` fixed held-out prompts) happens at step 0
    and every ``eval_every`` steps (default: only at the end); pass ``initial_rkl`` to reuse a
    step-0 value already measured for the same ``pair`` and ``n_eval``.
    """
    eval_every = steps if eval_every is None else eval_every
    if steps < 1 or eval_every < 1:
        raise ValueError(f"steps and eval_every must be >= 1, got {steps}, {eval_every}")
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must lie in (0, 1], got {keep_fraction}")
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; expected one of {RULES}")
    tokenizer, teacher = pair.tokenizer, pair.teacher
    student = copy.deepcopy(pair.student)
    eos = tokenizer.eos_token_id
    train_prompts, _ = reversal_task(512, seed=10_000 + seed)
    eval_prompts, _ = reversal_task(n_eval, seed=99_999)
    ids, attn = encode_prompts(tokenizer, train_prompts)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(student.parameters(), lr=lr)

    eval_steps: list[int] = []
    eval_rkl: list[float] = []

    def record(step: int) -> None:
        eval_steps.append(step)
        eval_rkl.append(
            heldout_reverse_kl(student, teacher, tokenizer, eval_prompts, max_new_tokens)
        )

    if initial_rkl is None:
        record(0)
    else:
        eval_steps.append(0)
        eval_rkl.append(float(initial_rkl))
    kept = total = 0
    wall = 0.0
    with torch.random.fork_rng(devices=[]), single_thread():
        torch.manual_seed(seed)
        for step in range(1, steps + 1):
            start = time.perf_counter()
            idx = torch.as_tensor(rng.integers(0, len(train_prompts), size=batch_size))
            p_ids, p_mask = ids[idx], attn[idx]
            # drop columns that are padding in every row of this minibatch
            first = int((p_mask.sum(0) > 0).nonzero()[0])
            p_ids, p_mask = p_ids[:, first:], p_mask[:, first:]
            with torch.no_grad():
                completion = sample_completions(
                    student, p_ids, p_mask, max_new_tokens, 1.0, gen, eos
                )
            s_logits, t_logits, mask = _score_rollouts(
                student, teacher, p_ids, p_mask, completion, eos
            )
            rkl = token_divergence(s_logits, t_logits, kind="rkl", mask=mask)
            if rule == "all":
                train = mask
            else:
                with torch.no_grad():
                    train = select_by_rule(
                        rule,
                        entropy(s_logits),
                        entropy(t_logits),
                        rkl.detach(),
                        mask,
                        s_logits.shape[-1],
                        keep_fraction,
                    )
            loss = rkl[train].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            wall += time.perf_counter() - start
            kept += int(train.sum())
            total += int(mask.sum())
            if step % eval_every == 0 or step == steps:
                record(step)
    return OPDRun(
        rule=rule,
        keep_fraction=keep_fraction if rule != "all" else 1.0,
        seed=seed,
        eval_steps=eval_steps,
        eval_rkl=eval_rkl,
        fraction_kept=kept / total,
        wall_s=wall,
    )


def compare_rules(
    pair: ModelPair,
    configs: Sequence[tuple[str, float]],
    seeds: Sequence[int],
    **run_kwargs: Any,
) -> list[OPDRun]:
    """:func:`opd_run` for every ``(rule, keep_fraction)`` in ``configs`` and every seed, in that
    order (configs outer). ``run_kwargs`` go to :func:`opd_run`. The step-0 evaluation is the same
    for every run (same student, same held-out prompts), so it is measured once and reused."""
    if not configs or not seeds:
        raise ValueError("configs and seeds must be non-empty")
    first = opd_run(pair, configs[0][0], configs[0][1], seed=seeds[0], **run_kwargs)
    runs = [first]
    for rule, keep in configs:
        for seed in seeds:
            if (rule, keep, seed) == (configs[0][0], configs[0][1], seeds[0]):
                continue
            runs.append(
                opd_run(pair, rule, keep, seed=seed, initial_rkl=first.eval_rkl[0], **run_kwargs)
            )
    return runs
