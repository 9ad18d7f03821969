"""From task examples to tensors: encoding, the rollout one optimizer step trains on, and the
fixed evaluation sets of a run."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

import torch

from opd_lib import lm
from opd_lib.lab.config import Config
from opd_lib.lab.gsm8k import MAX_NEW_TOKENS
from opd_lib.lab.tasks import (
    Example,
    Reverse,
    RunningSum,
    Task,
    get_task,
    make_examples,
    render_prompt,
)

__all__ = [
    "AUX_EVALS",
    "Batch",
    "EvalSuite",
    "Rollout",
    "auto_max_new_tokens",
    "encode",
    "eval_suite",
    "make_task",
]

Batch = lm.Batch
AUX_EVALS = ("retention", "hinted")  # evaluation sets outside the main task's mean accuracy


def encode(tokenizer, examples: list[Example], device: str | torch.device = "cpu") -> lm.Batch:
    """Chat-rendered prompts and reference completions (EOS appended) as tensors
    (:func:`opd_lib.lm.encode`). A completion's ``prefix`` (a perturbed trace's broken part) is
    fed but not counted in ``mask``."""
    prompts = [render_prompt(tokenizer, ex.prompt) for ex in examples]
    targets = [ex.target for ex in examples]
    return lm.encode(tokenizer, prompts, targets, [ex.prefix for ex in examples], device=device)


@dataclass
class Rollout:
    """The sequences one optimizer step trains on, plus what its objective needs."""

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    mask: torch.Tensor  # [B, C] bool: tokens in the loss
    source: str  # "data", "teacher" or "student"
    advantages: torch.Tensor | None = None  # rl: [B]
    teacher_ids: torch.Tensor | None = None  # opsd: hinted inputs
    teacher_attn: torch.Tensor | None = None
    teacher_pos: torch.Tensor | None = None
    stats: dict[str, float] = field(default_factory=dict)

    def rows(self, sl: slice) -> Rollout:
        """The rollout's rows ``sl`` (a micro-batch); ``stats`` stay with the whole rollout."""

        def cut(t):
            return None if t is None else t[sl]

        return Rollout(
            self.prompt_ids[sl],
            self.prompt_mask[sl],
            self.completion_ids[sl],
            self.mask[sl],
            self.source,
            cut(self.advantages),
            cut(self.teacher_ids),
            cut(self.teacher_attn),
            cut(self.teacher_pos),
        )


def make_task(c: Config) -> Task:
    """The training task of ``c``: the running sum, or GSM8K's train split."""
    if c.task == "sum":
        return RunningSum(c.min_len, c.max_len, hint=c.hint, style=c.trace_style)
    return get_task("gsm8k", split="train")


def auto_max_new_tokens(c: Config, tokenizer) -> int:
    """``c.max_new_tokens``, or when it is 0: ``opd_lib.lab.gsm8k.MAX_NEW_TOKENS`` (512) for
    GSM8K, else the longest training trace's token count plus 3."""
    if c.max_new_tokens:
        return c.max_new_tokens
    if c.task == "gsm8k":
        return MAX_NEW_TOKENS
    longest = make_task(c).sample(random.Random(0), c.max_len)
    return len(tokenizer(longest.completion, add_special_tokens=False)["input_ids"]) + 3


@dataclass
class EvalSuite:
    """A run's fixed evaluation data (the same for every seed and method): ``sets`` by name (one
    per chain length, ``retention``, for OPSD ``hinted``), the ``retention`` task and the
    ``recovery`` traces (one step forced wrong)."""

    task: Task
    sets: dict[str, list[Example]]
    retention: Reverse | None
    recovery: list[Example]


def eval_suite(c: Config, task: Task) -> EvalSuite:
    """Evaluation prompts of ``c`` from fixed RNG seeds (10_000 + length, 20_000, 30_000)."""
    if c.task == "sum":
        sets = {
            f"len{k}": make_examples(task, c.eval_size, 10_000 + k, length=k)
            for k in c.eval_lengths
        }
    else:
        sets = {"all": get_task("gsm8k", split="test", limit=c.eval_size).examples}
    retention = Reverse(c.retention_min_len, c.retention_max_len) if c.retention else None
    if retention is not None:
        sets["retention"] = make_examples(retention, c.eval_size, 20_000)
    # states off the reference distribution: a trace with one step forced wrong; does the
    # policy find its way back to the right answer? (the DAgger mechanism, measured directly)
    recovery: list[Example] = []
    if c.task == "sum" and max(c.eval_lengths) >= 3:
        rng = random.Random(30_000)
        longest = make_examples(task, c.eval_size, 30_000, length=max(c.eval_lengths))
        recovery = [task.perturbed(ex, rng) for ex in longest]
    if c.method == "opsd":  # does the self-teacher still read the hint?
        sets["hinted"] = [
            dataclasses.replace(ex, prompt=ex.hinted_prompt())
            for name in list(sets)
            if name not in AUX_EVALS
            for ex in sets[name]
        ]
    return EvalSuite(task, sets, retention, recovery)
