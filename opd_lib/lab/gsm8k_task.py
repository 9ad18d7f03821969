"""GSM8K as a lab task (hub mode): the :class:`GSM8K` task, its examples and its verifier.

``load_gsm8k`` reads ``datasets.load_dataset("openai/gsm8k", "main")``; the prompt format, target
cleaning and answer extraction live in :mod:`opd_lib.lab.gsm8k`. :func:`check_same_template`
checks that a hub student and teacher render the same prompt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from opd_lib.lab.gsm8k import (
    THINK_OFF,
    clean_solution,
    extract_answer,
    format_prompt,
    same_number,
)
from opd_lib.lab.task_types import Example, Verdict, render_prompt


def extract_gsm8k_answer(text: str, lenient: bool = False) -> str | None:
    """The final answer of a GSM8K solution, normalised (``opd_lib.lab.gsm8k.extract_answer``:
    the last complete ``\\boxed{}``, then a ``#### <number>`` line, then "answer is <number>");
    ``None`` when no answer is stated (no credit, as :class:`GSM8K` scores). ``lenient`` also
    accepts the last number of an unformatted text (e.g. for base models)."""
    return extract_answer(text, lenient=lenient)


def gsm8k_correct(text: str, answer: str, lenient: bool = False) -> bool:
    """Whether ``text``'s extracted final answer equals ``answer`` (numerically, rel. tol 1e-6)."""
    return same_number(extract_gsm8k_answer(text, lenient), answer)


@dataclass
class GSM8K:
    """GSM8K as a lab task (hub mode). ``examples`` come from :func:`load_gsm8k` (or
    :func:`gsm8k_examples` on records such as ``opd_lib.lab.gsm8k.SAMPLE_RECORDS``, offline).
    ``verify`` is strict: an answer counts only when stated (``\\boxed{}``, ``####``, "answer
    is")."""

    examples: list[Example]
    name: str = "gsm8k"

    def sample(self, rng: random.Random, length: int | None = None) -> Example:
        return rng.choice(self.examples)

    def verify(self, example: Example, text: str) -> Verdict:
        ok = gsm8k_correct(text, example.answer, lenient=False)
        return Verdict(ok, ok, 1, 0 if ok else 1)


def gsm8k_example(question: str, solution: str) -> Example:
    """An :class:`Example` from a GSM8K record (``question``, ``answer`` fields): the prompt asks
    for a ``\\boxed{}`` answer, the target has the ``<<...>>`` annotations stripped and ends in
    ``\\boxed{<answer>}`` (``opd_lib.lab.gsm8k``), and the hint shows that target."""
    target, answer = clean_solution(solution)
    return Example(
        task="gsm8k",
        prompt=format_prompt(question),
        completion=target,
        answer=answer,
        hint=f"(reference solution: {target})",
        length=target.count("\n") + 1,
    )


def gsm8k_examples(records) -> GSM8K:
    """:class:`GSM8K` from records with ``question`` and ``answer`` fields (GSM8K's format)."""
    return GSM8K([gsm8k_example(r["question"], r["answer"]) for r in records])


def check_same_template(student_tokenizer, teacher_tokenizer, question: str = "1 + 1?") -> str:
    """Render one GSM8K prompt with both tokenizers (``enable_thinking=False``) and return it.

    Raises ``ValueError`` if the renderings differ (the teacher would score a context the student
    never sees) or if a template that knows ``enable_thinking`` did not close an empty think block
    (thinking mode would be on). Used by the preflight for the hub pair.
    """
    texts = {}
    for name, tok in (("student", student_tokenizer), ("teacher", teacher_tokenizer)):
        texts[name] = render_prompt(tok, format_prompt(question))
        template = tok.chat_template or ""
        if "enable_thinking" in template and not texts[name].endswith(THINK_OFF):
            raise ValueError(
                f"the {name}'s chat template ignores enable_thinking=False: its prompt ends in "
                f"{texts[name][-40:]!r}, not an empty think block"
            )
    if texts["student"] != texts["teacher"]:
        raise ValueError(
            "student and teacher render the same prompt differently: "
            f"{texts['student'][-60:]!r} vs {texts['teacher'][-60:]!r}"
        )
    return texts["student"]


def load_gsm8k(split: str = "train", limit: int | None = None) -> GSM8K:
    """GSM8K from the Hugging Face hub (network or local cache). Hub mode only."""
    from datasets import load_dataset

    ds = load_dataset("openai/gsm8k", "main", split=split)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return gsm8k_examples(ds)
