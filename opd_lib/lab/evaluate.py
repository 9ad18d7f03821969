"""Evaluation of one model on a run's fixed evaluation sets: a free function of the model it is
given (no trainer state)."""

from __future__ import annotations

from typing import Any

import torch

from opd_lib.lab.data import AUX_EVALS, EvalSuite, encode
from opd_lib.lab.losses import completion_side, divergence, entropy_sum
from opd_lib.lab.noise import digit_noise
from opd_lib.lab.tasks import render_prompt
from opd_lib.lm import Batch
from opd_lib.sampling import completion_mask, sample_completions

__all__ = ["evaluate", "generate"]


def generate(
    model,
    tokenizer,
    prompt_ids,
    prompt_mask,
    max_new_tokens: int,
    temperature: float,
    generator,
    noise: float = 0.0,
    noise_generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Completions ``[B, max_new_tokens]`` of ``model`` (:func:`opd_lib.sampling.
    sample_completions` with the tokenizer's EOS and pad ids; ``temperature=0``: greedy), with
    execution ``noise`` drawn from ``noise_generator`` (:func:`opd_lib.lab.noise.digit_noise`)."""
    corrupt = None
    if noise:
        if noise_generator is None:
            raise ValueError("noise > 0 needs a noise_generator")
        rows = prompt_ids.shape[0]
        corrupt = digit_noise(tokenizer, noise, rows, max_new_tokens, noise_generator)
    return sample_completions(
        model, prompt_ids, prompt_mask, max_new_tokens, temperature=temperature,
        generator=generator, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, corrupt=corrupt,
    )  # fmt: skip


@torch.no_grad()
def evaluate(
    model,
    suite: EvalSuite,
    tokenizer,
    *,
    max_new_tokens: int,
    temperature: float,
    teacher=None,
    prefix: str = "",
    fused: bool = False,
    micro_batch: int = 64,
    noise: float = 0.0,
) -> dict[str, Any]:
    """Scores of ``model`` (left in eval mode) on ``suite``, keys prefixed with ``prefix``.

    Accuracy per evaluation set (answer, whole trace, per-step error rate; greedy, or sampled at
    ``temperature`` from a generator seeded 0), the accuracy after a forced wrong step
    (``acc_recovery``), greedy retention accuracy, for OPSD the accuracy with the hint in the
    prompt (``acc_hinted``), and their mean over the main sets (``acc``). With ``teacher``: also
    ``model``'s reverse and forward KL to it and its entropy, per token of ``model``'s own
    evaluation completions of the main sets (``rkl_to_teacher``, ``fkl_to_teacher``,
    ``eval_entropy``; never prefixed), with ``fused``: from hidden states and heads
    (:mod:`opd_lib.fused_divergence`; the entropy by chunks of tokens), never ``[B, C, V]``.

    Prompts are sampled and scored ``micro_batch`` at a time (memory, not the size of the sets,
    sets the peak). ``noise``: execution noise on the main sets' written digits
    (:mod:`opd_lib.lab.noise`), drawn from a generator seeded 40_000, so every model meets the
    same slips; recovery and retention are scored without it."""
    if micro_batch < 1:
        raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, Any] = {}
    main = []
    gen = torch.Generator(device=device).manual_seed(0)
    noise_gen = torch.Generator(device=device).manual_seed(40_000)
    for name, examples in suite.sets.items():
        task = suite.retention if name == "retention" else suite.task
        temp = 0.0 if name == "retention" else temperature  # knowledge: greedy
        set_noise = 0.0 if name in AUX_EVALS else noise
        texts = []
        for start in range(0, len(examples), micro_batch):
            b = encode(tokenizer, examples[start : start + micro_batch], device)
            ids = generate(
                model, tokenizer, b.prompt_ids, b.prompt_mask, max_new_tokens, temp, gen,
                set_noise, noise_gen,
            )  # fmt: skip
            texts += tokenizer.batch_decode(ids, skip_special_tokens=True)
            if name not in AUX_EVALS:
                main.append((b, ids))
        verdicts = [task.verify(ex, t) for ex, t in zip(examples, texts, strict=True)]
        out[f"{prefix}acc_{name}"] = sum(v.correct for v in verdicts) / len(verdicts)
        if name not in AUX_EVALS:
            out[f"{prefix}trace_acc_{name}"] = sum(v.trace_ok for v in verdicts) / len(verdicts)
            steps = sum(v.n_steps for v in verdicts)
            out[f"{prefix}step_err_{name}"] = sum(v.n_bad_steps for v in verdicts) / steps
    if suite.recovery:
        prompts = [render_prompt(tokenizer, ex.prompt) + ex.prefix for ex in suite.recovery]
        texts = []
        for start in range(0, len(prompts), micro_batch):
            enc = tokenizer(
                prompts[start : start + micro_batch], padding=True, add_special_tokens=False,
                return_tensors="pt",
            )  # fmt: skip
            p_ids, p_mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
            ids = generate(model, tokenizer, p_ids, p_mask, max_new_tokens, temperature, gen)
            texts += tokenizer.batch_decode(ids, skip_special_tokens=True)
        right = [
            suite.task.verify(ex, ex.prefix + t).correct
            for ex, t in zip(suite.recovery, texts, strict=True)
        ]
        out[f"{prefix}acc_recovery"] = sum(right) / len(right)
    names = [n for n in suite.sets if n not in AUX_EVALS]
    out[f"{prefix}acc"] = sum(out[f"{prefix}acc_{n}"] for n in names) / len(names)
    if teacher is not None:  # distance to the teacher where the model goes
        tot = {"rkl": 0.0, "fkl": 0.0, "entropy": 0.0, "n": 0}
        for b, ids in main:
            mask = completion_mask(ids, tokenizer.eos_token_id)
            seqs = Batch(b.prompt_ids, b.prompt_mask, ids, mask)
            s, t = completion_side(model, seqs, fused), completion_side(teacher, seqs, fused)
            for kind in ("rkl", "fkl"):
                tot[kind] += divergence(s, t, kind, 0.5, mask, reduction="sum").item()
            tot["entropy"] += entropy_sum(s, mask)
            tot["n"] += int(mask.sum())
        out["rkl_to_teacher"] = tot["rkl"] / tot["n"]
        out["fkl_to_teacher"] = tot["fkl"] / tot["n"]
        out["eval_entropy"] = tot["entropy"] / tot["n"]
    return out
