"""Evaluation of one model on a run's fixed evaluation sets: a free function of the model it is
given (no trainer state)."""

from __future__ import annotations

from typing import Any

import torch

from opd_lib.lab.data import AUX_EVALS, EvalSuite, encode
from opd_lib.lab.losses import completion_side, divergence, entropy_sum
from opd_lib.lab.noise import digit_noise
from opd_lib.lab.slips import conditional_errors, step_outcomes
from opd_lib.lab.tasks import RunningSum, render_prompt
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
    ``temperature``), their mean over the main sets (``acc``), on the running sum
    ``P(wrong at step j | wrong at j-1)`` and ``P(wrong at j | right at j-1)`` over the main
    sets' traces (:func:`opd_lib.lab.slips.conditional_errors`), the accuracy after a forced
    wrong step (``acc_recovery``), greedy retention accuracy, and for OPSD the accuracy with the
    hint in the prompt: overall (``acc_hinted``), per chain length (``acc_hinted_len<k>``) and
    after a forced wrong step (``acc_hinted_recovery``). With ``teacher``: also ``model``'s
    reverse and forward KL to it and its entropy, per token of ``model``'s own evaluation
    completions of the main sets (``rkl_to_teacher``, ``fkl_to_teacher``, ``eval_entropy``;
    never prefixed), with ``fused``: from hidden states and heads
    (:mod:`opd_lib.fused_divergence`; the entropy by chunks of tokens), never ``[B, C, V]``.

    The main sets are sampled together, ``micro_batch`` prompts at a time (memory, not the size
    of the sets, sets the peak), then the hinted set, retention and the recovery traces, each
    from generators seeded 0 (sampling) and 40_000 (noise). ``noise``: execution noise on the
    written digits of the main and hinted sets (:mod:`opd_lib.lab.noise`); as the hinted set
    holds the main sets' prompts in their order, every model, hinted or not, meets the same
    slips at the same steps. Recovery and retention are scored without noise."""
    if micro_batch < 1:
        raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, Any] = {}
    main: list[tuple[Batch, torch.Tensor]] = []  # the main sets' batches, for the KL below
    outcomes = []
    names = [n for n in suite.sets if n not in AUX_EVALS]
    texts: dict[str, list[str]] = {}
    # one pass per group of sets sampled alike: the main sets together (fewer, larger batches),
    # the hinted set (longer prompts), retention (greedy, no noise: knowledge)
    groups = [("main", names)] + [(n, [n]) for n in ("hinted", "retention") if n in suite.sets]
    for group, members in groups:
        flat = [ex for n in members for ex in suite.sets[n]]
        # fresh generators per group: the hinted set (the main sets' prompts, in their order,
        # with the hint) meets the same noise at the same rows and steps as the main sets
        gen = torch.Generator(device=device).manual_seed(0)
        noise_gen = torch.Generator(device=device).manual_seed(40_000)
        temp, set_noise = (0.0, 0.0) if group == "retention" else (temperature, noise)
        done: list[str] = []
        for start in range(0, len(flat), micro_batch):
            b = encode(tokenizer, flat[start : start + micro_batch], device)
            ids = generate(
                model, tokenizer, b.prompt_ids, b.prompt_mask, max_new_tokens, temp, gen,
                set_noise, noise_gen,
            )  # fmt: skip
            done += tokenizer.batch_decode(ids, skip_special_tokens=True)
            if group == "main":
                main.append((b, ids))
        for n in members:
            texts[n], done = done[: len(suite.sets[n])], done[len(suite.sets[n]) :]
    for name, examples in suite.sets.items():
        task = suite.retention if name == "retention" else suite.task
        verdicts = [task.verify(ex, t) for ex, t in zip(examples, texts[name], strict=True)]
        out[f"{prefix}acc_{name}"] = sum(v.correct for v in verdicts) / len(verdicts)
        if name not in AUX_EVALS:
            out[f"{prefix}trace_acc_{name}"] = sum(v.trace_ok for v in verdicts) / len(verdicts)
            steps = sum(v.n_steps for v in verdicts)
            out[f"{prefix}step_err_{name}"] = sum(v.n_bad_steps for v in verdicts) / steps
            if isinstance(task, RunningSum):
                pairs = zip(examples, texts[name], strict=True)
                outcomes += [step_outcomes(ex, t) for ex, t in pairs]
        if name == "hinted":  # the hinted self, per chain length
            for k in sorted({ex.length for ex in examples}):
                right = [
                    v.correct for ex, v in zip(examples, verdicts, strict=True) if ex.length == k
                ]
                out[f"{prefix}acc_hinted_len{k}"] = sum(right) / len(right)
    if outcomes:
        rates = conditional_errors(outcomes)
        out.update({f"{prefix}{k}": v for k, v in rates.items()})
    if suite.recovery:
        kinds = ("recovery", "hinted_recovery") if "hinted" in suite.sets else ("recovery",)
        for kind in kinds:  # the hinted self is shown the clean trace, then the broken prefix
            hinted = kind == "hinted_recovery"
            prompts = [
                render_prompt(tokenizer, ex.hinted_prompt() if hinted else ex.prompt) + ex.prefix
                for ex in suite.recovery
            ]
            gen = torch.Generator(device=device).manual_seed(0)
            right = _recovered(model, tokenizer, suite, prompts, max_new_tokens, temperature, gen,
                               micro_batch)  # fmt: skip
            out[f"{prefix}acc_{kind}"] = sum(right) / len(right)
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


def _recovered(
    model, tokenizer, suite: EvalSuite, prompts: list[str], max_new_tokens: int,
    temperature: float, gen: torch.Generator, micro_batch: int,
) -> list[bool]:  # fmt: skip
    """Whether ``model``, continuing each recovery trace's broken prefix (in ``prompts``), ends
    at the right answer."""
    device = next(model.parameters()).device
    texts = []
    for start in range(0, len(prompts), micro_batch):
        enc = tokenizer(
            prompts[start : start + micro_batch], padding=True, add_special_tokens=False,
            return_tensors="pt",
        )  # fmt: skip
        p_ids, p_mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        ids = generate(model, tokenizer, p_ids, p_mask, max_new_tokens, temperature, gen)
        texts += tokenizer.batch_decode(ids, skip_special_tokens=True)
    return [
        suite.task.verify(ex, ex.prefix + t).correct
        for ex, t in zip(suite.recovery, texts, strict=True)
    ]
