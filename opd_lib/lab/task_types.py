"""What every lab task is made of: an :class:`Example`, a :class:`Verdict`, the :class:`Task`
protocol, and the chat rendering of a prompt (:func:`render_prompt`).

The tasks themselves are in :mod:`opd_lib.lab.tasks` (running sum, reversal) and
:mod:`opd_lib.lab.gsm8k_task` (GSM8K), which re-exports these names.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Example:
    """One prompt and its reference completion.

    ``prompt`` is the user message (not yet chat-rendered); ``completion`` the target text,
    without EOS. ``prefix`` is a part of ``completion`` at its start that is context, not target
    (a perturbed trace's broken steps): it is fed to the model but excluded from the loss.
    ``hint`` is privileged context for a hinted self-teacher (OPSD); ``length`` the chain length.
    """

    task: str
    prompt: str
    completion: str
    answer: str
    hint: str = ""
    length: int = 0
    prefix: str = ""
    data: tuple = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.completion.startswith(self.prefix):
            raise ValueError("prefix must be the start of the completion")

    @property
    def target(self) -> str:
        """The part of the completion that is trained on."""
        return self.completion[len(self.prefix) :]

    def hinted_prompt(self) -> str:
        """The prompt with the hint appended: what an OPSD self-teacher sees."""
        return f"{self.prompt} {self.hint}" if self.hint else self.prompt


@dataclass(frozen=True)
class Verdict:
    """What a verifier found. ``correct``: the final answer is right (the RL reward).
    ``trace_ok``: every step is right and the format is exact. ``n_steps``/``n_bad_steps``: steps
    expected and steps wrong (missing or unparsable steps count as wrong)."""

    correct: bool
    trace_ok: bool
    n_steps: int = 0
    n_bad_steps: int = 0

    @property
    def reward(self) -> float:
        return 1.0 if self.correct else 0.0


class Task(Protocol):
    name: str

    def sample(self, rng: random.Random, length: int | None = None) -> Example: ...

    def verify(self, example: Example, text: str) -> Verdict: ...


def render_prompt(tokenizer, content: str) -> str:
    """The chat-rendered prompt text for one user message, ending with the assistant header.

    ``enable_thinking=False`` is passed along (Qwen3's template then writes an empty think block;
    the character tokenizer's template ignores it)."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": content}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=False,
    )
