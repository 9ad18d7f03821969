"""The lab's tasks: a verifiable running-sum task with a chain-length knob, a retention task, GSM8K.

**Running sum mod 10** (``RunningSum``). The prompt lists ``k`` digits (``k`` is the chain length);
the completion is a worked trace with one step per digit after the first, then the answer::

    user:      sum 3452
    assistant: 3+4=7,7+5=2,2+2=4#4

Every step is checkable on its own (``a`` is the previous result, ``b`` the next digit of the
prompt, ``c = (a + b) mod 10``), so the verifier reports the answer, the whole trace, and the
number of wrong steps (a per-step error rate ``eps`` to set beside the chain length ``T``).

**Recovery** (``perturbed``). A teacher that has only seen perfect traces does not know what to do
after a mistake. ``RunningSum.perturbed`` writes a wrong result into one step and continues the
trace *correctly* from there: the next step starts from ``(a + b) mod 10`` of the broken step,
which is computable from that step alone. The broken prefix is excluded from the loss
(``Example.prefix``), so a teacher trained on such data learns to recover, not to make mistakes.

**Retention** (``Reverse``): reverse a short lowercase string. The student learns it before
distillation; its accuracy afterwards measures forgetting.

**GSM8K** (hub mode): ``load_gsm8k`` (``datasets.load_dataset("openai/gsm8k", "main")``), in
:mod:`opd_lib.lab.gsm8k_task`; the prompt format, target cleaning and answer extraction live in
:mod:`opd_lib.lab.gsm8k`. ``Example``, ``Verdict``, ``Task`` and ``render_prompt`` are in
:mod:`opd_lib.lab.task_types`. Both are re-exported here.

Prompts are rendered with the tokenizer's chat template (``render_prompt``) so the same code runs
with the character tokenizer (alphabet ``ALPHABET``) and with Qwen3's.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from opd_lib.lab.gsm8k_task import (
    GSM8K,
    check_same_template,
    extract_gsm8k_answer,
    gsm8k_correct,
    gsm8k_example,
    gsm8k_examples,
    load_gsm8k,
)
from opd_lib.lab.task_types import Example, Task, Verdict, render_prompt
from opd_lib.lab.tokenizers import DEFAULT_ALPHABET

__all__ = [
    "ALPHABET",
    "Example",
    "GSM8K",
    "Reverse",
    "RunningSum",
    "Task",
    "Verdict",
    "check_same_template",
    "extract_gsm8k_answer",
    "get_task",
    "gsm8k_correct",
    "gsm8k_example",
    "gsm8k_examples",
    "load_gsm8k",
    "make_examples",
    "render_prompt",
]

ALPHABET = DEFAULT_ALPHABET + "#"
"""The character tokenizer's alphabet for the lab: ``char_tokenizer(ALPHABET)``."""


# -------------------------------------------------------------------------------- running sum


STYLES = ("plain", "tagged")
_TAGS = "abcdefghijklmnopqrstuvwxyz"
_PLAIN_STEP = re.compile(r"(?P<a>\d)\+(?P<b>\d)=(?P<c>\d)")
_TAGGED_STEP = re.compile(r"(?P<a>\d)\+(?P<tag>[a-z])(?P<b>\d)=(?P<c>\d)")


def _check_lengths(min_len: int, max_len: int) -> None:
    if not (isinstance(min_len, int) and isinstance(max_len, int) and 2 <= min_len <= max_len):
        raise ValueError(f"need integer lengths 2 <= min_len <= max_len, got {min_len}, {max_len}")


@dataclass(frozen=True)
class RunningSum:
    """Running sum mod 10 over ``length`` digits (``min_len..max_len``), with a worked trace.

    ``hint``: what the hinted prompt reveals, ``"answer"`` (``(answer 4)``) or ``"trace"`` (the
    whole reference trace).
    """

    min_len: int = 2
    max_len: int = 6
    hint: str = "trace"
    name: str = "sum"
    style: str = "plain"

    def __post_init__(self) -> None:
        _check_lengths(self.min_len, self.max_len)
        if self.hint not in ("answer", "trace"):
            raise ValueError(f"hint must be 'answer' or 'trace', got {self.hint!r}")
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {self.style!r}")
        if self.style == "tagged" and self.max_len > len(_TAGS):
            raise ValueError(f"the tagged style labels at most {len(_TAGS)} digits")

    @staticmethod
    def trace(digits: Sequence[int], style: str = "plain") -> tuple[list[str], int]:
        """The steps (``"a+b=c"``, or ``"a+Lb=c"`` with the digit's tag ``L`` in the tagged
        style) and the final value for ``digits``."""
        acc, steps = digits[0], []
        for i, d in enumerate(digits[1:], start=1):
            new = (acc + d) % 10
            tag = _TAGS[i] if style == "tagged" else ""
            steps.append(f"{acc}+{tag}{d}={new}")
            acc = new
        return steps, acc

    def render(self, digits: Sequence[int]) -> str:
        """The prompt for ``digits``: ``"sum 3452"`` or, tagged, ``"sum a3b4c5d2"``."""
        if self.style == "tagged":
            return "sum " + "".join(f"{_TAGS[i]}{d}" for i, d in enumerate(digits))
        return "sum " + "".join(map(str, digits))

    def from_digits(self, digits: Sequence[int]) -> Example:
        digits = tuple(int(d) for d in digits)
        if len(digits) < 2 or any(not 0 <= d <= 9 for d in digits):
            raise ValueError(f"need at least two digits 0-9, got {digits}")
        steps, answer = self.trace(digits, self.style)
        completion = ",".join(steps) + f"#{answer}"
        hint = f"(answer {answer})" if self.hint == "answer" else f"(trace {completion})"
        return Example(
            task=self.name,
            prompt=self.render(digits),
            completion=completion,
            answer=str(answer),
            hint=hint,
            length=len(digits),
            data=digits,
        )

    def sample(self, rng: random.Random, length: int | None = None) -> Example:
        k = rng.randint(self.min_len, self.max_len) if length is None else length
        if k < 2:
            raise ValueError(f"chain length must be >= 2, got {k}")
        return self.from_digits([rng.randrange(10) for _ in range(k)])

    def perturbed(self, example: Example, rng: random.Random) -> Example:
        """``example`` with one step's result made wrong and the trace recovering after it.

        The broken step ``a+b=c'`` (``c' != (a+b) mod 10``) is followed by the correct
        continuation from ``(a + b) mod 10``; everything up to and including the broken step is
        the ``prefix`` (context, not target). Only the last step can't be broken: nothing would
        follow to recover.
        """
        digits = example.data
        steps, answer = self.trace(digits, self.style)
        if len(steps) < 2:
            return example
        i = rng.randrange(len(steps) - 1)
        a, rest = steps[i].split("+")
        b, c = rest.split("=")
        wrong = (int(c) + rng.randint(1, 9)) % 10
        broken = f"{a}+{b}={wrong}"
        prefix = ",".join(steps[:i] + [broken]) + ","
        completion = prefix + ",".join(steps[i + 1 :]) + f"#{answer}"
        return replace(example, completion=completion, prefix=prefix)

    def sloppy(self, example: Example, rng: random.Random, rate: float) -> Example:
        """``example`` written by a careless solver: each step's result is wrong with probability
        ``rate`` and the trace carries on from the value written (it never recovers), so the final
        answer is wrong whenever any step was. All of it is target: SFT on such traces gives a
        student a steady per-step error and the habit of building on its own mistakes."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        digits = example.data
        acc, steps = digits[0], []
        for i, d in enumerate(digits[1:], start=1):
            new = (acc + d) % 10
            if rng.random() < rate:
                new = (new + rng.randint(1, 9)) % 10
            tag = _TAGS[i] if self.style == "tagged" else ""
            steps.append(f"{acc}+{tag}{d}={new}")
            acc = new
        return replace(example, completion=",".join(steps) + f"#{acc}", prefix="")

    def first_slip(self, example: Example, text: str) -> tuple[int, int] | None:
        """Where a trace first slips in a sum (``a`` and ``b`` right, ``c`` wrong) with a step
        after it: ``(offset, value)``, the character offset in ``text`` where the next step
        starts and the true running value it should start from; ``None`` if there is no such
        slip before an earlier error of another kind (or at all)."""
        step_re = _TAGGED_STEP if self.style == "tagged" else _PLAIN_STEP
        parts = text.split("#")[0].split(",")
        digits, acc, offset = example.data, example.data[0], 0
        for j, part in enumerate(parts[: len(digits) - 1]):
            m = re.fullmatch(step_re, part)
            if not m or int(m["a"]) != acc or int(m["b"]) != digits[j + 1]:
                return None
            acc = (acc + digits[j + 1]) % 10
            offset += len(part) + 1
            if int(m["c"]) != acc:
                return (offset, acc) if j + 1 < len(parts) and offset < len(text) else None
        return None

    def verify(self, example: Example, text: str) -> Verdict:
        """Exact check of a trace ``"a+b=c,...#ans"`` against ``example``'s digits.

        A step is right when ``a`` is the true running value, ``b`` the next prompt digit and
        ``c = (a + b) mod 10``. ``correct`` needs only the right answer after the last ``#``.
        """
        digits = example.data
        n_steps = len(digits) - 1
        tagged = self.style == "tagged"
        step_re = _TAGGED_STEP if tagged else _PLAIN_STEP
        body, sep, ans = text.strip().rpartition("#")
        correct = bool(sep) and ans.strip() == example.answer
        if not sep:
            body = text.strip()
        parts = body.split(",") if body else []
        acc, bad = digits[0], 0
        for j in range(n_steps):
            ok = False
            if j < len(parts):
                m = re.fullmatch(step_re, parts[j])
                if m:
                    a, b, c = (int(g) for g in m.group("a", "b", "c"))
                    ok = a == acc and b == digits[j + 1] and c == (a + b) % 10
                    ok = ok and (tagged is False or m.group("tag") == _TAGS[j + 1])
            acc = (acc + digits[j + 1]) % 10
            bad += not ok
        well_formed = bool(sep) and len(parts) == n_steps
        return Verdict(correct, correct and well_formed and bad == 0, n_steps, bad)


# -------------------------------------------------------------------------------- retention


@dataclass(frozen=True)
class Reverse:
    """Retention task: reverse a lowercase string of ``min_len..max_len`` letters."""

    min_len: int = 3
    max_len: int = 6
    name: str = "rev"

    def __post_init__(self) -> None:
        _check_lengths(max(self.min_len, 2), self.max_len)

    def sample(self, rng: random.Random, length: int | None = None) -> Example:
        k = rng.randint(self.min_len, self.max_len) if length is None else length
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(k))
        return Example(
            task=self.name,
            prompt="rev " + word,
            completion=word[::-1],
            answer=word[::-1],
            hint=f"(answer {word[::-1]})",
            length=k,
            data=(word,),
        )

    def verify(self, example: Example, text: str) -> Verdict:
        ok = text.strip() == example.answer
        return Verdict(ok, ok, 1, 0 if ok else 1)


# -------------------------------------------------------------------------------- helpers


def get_task(name: str, **kwargs) -> Task:
    """``"sum"`` -> :class:`RunningSum`, ``"rev"`` -> :class:`Reverse`, ``"gsm8k"`` -> hub."""
    if name == "sum":
        return RunningSum(**kwargs)
    if name == "rev":
        return Reverse(**kwargs)
    if name == "gsm8k":
        return load_gsm8k(**kwargs)
    raise ValueError(f"unknown task {name!r}; expected 'sum', 'rev' or 'gsm8k'")


def make_examples(
    task: Task, n: int, seed: int, length: int | None = None, perturb: float = 0.0
) -> list[Example]:
    """``n`` examples from ``task`` drawn with ``random.Random(seed)``; with ``perturb > 0`` that
    fraction of running-sum examples is replaced by :meth:`RunningSum.perturbed` versions."""
    if not 0.0 <= perturb <= 1.0:
        raise ValueError(f"perturb must be in [0, 1], got {perturb}")
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ex = task.sample(rng, length)
        if perturb and isinstance(task, RunningSum) and rng.random() < perturb:
            ex = task.perturbed(ex, rng)
        out.append(ex)
    return out
