"""What happens after a slip: compounding measured step by step, and the gradient each divergence
gives where a student has just slipped.

**Compounding, directly.** A running-sum trace ``a+b=c,...#answer`` (:mod:`opd_lib.lab.tasks`)
is right at step ``j`` when the result ``c`` it writes equals the true running value after ``j``
digits, whatever led there. A policy that builds on what it wrote carries a slip to every later
step, so ``P(wrong at j | wrong at j-1)`` is near 1; a policy that recovers returns to the true
value, so that probability falls to its ordinary per-step error ``P(wrong at j | right at j-1)``
(plus, under execution noise, the noise rate). :func:`step_outcomes` parses one trace,
:func:`conditional_errors` pools the pairs of consecutive steps of many.

**The gradient at a slip** (the review of the lab; Chapter 3 derives the formulas). At the first
token after a slip a student that has not learned to recover is *confidently* wrong: it puts
almost all its mass on copying the value it wrote, the teacher on the true value. The gradient of
the reverse KL with respect to the student's logits, ``q_v (log q_v - log p_v - KL(q || p))``,
vanishes as ``q`` becomes one-hot, however large the divergence; the forward KL's, ``q - p``,
does not. :func:`gradient_at_slips` measures the mean L2 norm of the per-token gradient
(:func:`opd_lib.divergences.logit_gradients`) and the divergence
(:func:`opd_lib.divergences.token_divergence`) at slip tokens and at all other tokens;
:func:`opd_lib.lab.experiments.slip_gradient_table` does it on a student's own noisy samples.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from opd_lib.divergences import logit_gradients, token_divergence
from opd_lib.lab.tasks import Example, RunningSum

__all__ = [
    "DIVERGENCES",
    "conditional_errors",
    "gradient_at_slips",
    "slip_mask",
    "step_outcomes",
]

DIVERGENCES = (("rkl", 0.5), ("fkl", 0.5), ("jsd", 0.5))  # (kind, beta): beta is read by jsd
_RESULT = re.compile(r"=(\d)$")  # a step "a+b=c" or "a+Lb=c": its written result c


def step_outcomes(example: Example, text: str) -> list[bool]:
    """Whether each step of the trace ``text`` writes the true running value of ``example``'s
    digits (``len(digits) - 1`` booleans; a missing or malformed step is wrong)."""
    digits = example.data
    if len(digits) < 2:
        raise ValueError(f"example must have at least two digits, got {digits}")
    parts = text.strip().split("#")[0].split(",")
    value, out = digits[0], []
    for j, d in enumerate(digits[1:]):
        value = (value + d) % 10
        m = _RESULT.search(parts[j]) if j < len(parts) else None
        out.append(bool(m) and int(m.group(1)) == value)
    return out


def conditional_errors(outcomes: Sequence[Sequence[bool]]) -> dict[str, float]:
    """``P(wrong at j | wrong at j-1)`` and ``P(wrong at j | right at j-1)`` over every pair of
    consecutive steps of the traces' ``outcomes`` (:func:`step_outcomes`), with the pair counts
    (``n_after_wrong``, ``n_after_right``); a probability without pairs is ``nan``."""
    n = {"wrong": 0, "right": 0}
    wrong_next = {"wrong": 0, "right": 0}
    for steps in outcomes:
        for before, now in zip(steps, steps[1:], strict=False):
            key = "right" if before else "wrong"
            n[key] += 1
            wrong_next[key] += not now
    return {
        "p_wrong_after_wrong": wrong_next["wrong"] / n["wrong"] if n["wrong"] else float("nan"),
        "p_wrong_after_right": wrong_next["right"] / n["right"] if n["right"] else float("nan"),
        "n_after_wrong": n["wrong"],
        "n_after_right": n["right"],
    }


def gradient_at_slips(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    at_slip: torch.Tensor,
    divergences: Sequence[tuple[str, float]] = DIVERGENCES,
) -> list[dict[str, float]]:
    """Per divergence ``(kind, beta)``: the mean L2 norm over the vocabulary of
    ``dD/d(student logits)`` and the mean divergence ``D``, at the ``at_slip`` tokens and at the
    other tokens of ``mask`` (both ``[B, C]`` booleans; logits ``[B, C, V]``), with the counts.
    A pure function of the logits."""
    if mask.shape != student_logits.shape[:-1] or at_slip.shape != mask.shape:
        raise ValueError(
            f"mask {tuple(mask.shape)} and at_slip {tuple(at_slip.shape)} must be the logits' "
            f"leading shape {tuple(student_logits.shape[:-1])}"
        )
    slip, other = at_slip & mask, mask & ~at_slip
    if not slip.any() or not other.any():
        raise ValueError("at_slip must select some of the mask's tokens and leave some out")
    rows = []
    for kind, beta in divergences:
        norm = logit_gradients(student_logits, teacher_logits, kind, beta).norm(dim=-1)
        value = token_divergence(student_logits, teacher_logits, kind, beta)
        rows.append(
            dict(
                kind=kind, beta=beta,
                grad_slip=norm[slip].mean().item(), grad_other=norm[other].mean().item(),
                div_slip=value[slip].mean().item(), div_other=value[other].mean().item(),
                n_slip=int(slip.sum()), n_other=int(other.sum()),
            )
        )  # fmt: skip
    return rows


def slip_mask(task: RunningSum, examples: Sequence[Example], texts: Sequence[str], width: int):
    """``[B, width]`` booleans: the first token after each trace's first slip
    (:meth:`RunningSum.first_slip`); a character tokenizer's offsets (one token per character)."""
    out = torch.zeros(len(examples), width, dtype=torch.bool)
    for i, (ex, text) in enumerate(zip(examples, texts, strict=True)):
        found = task.first_slip(ex, text)
        if found is not None and found[0] < width:
            out[i, found[0]] = True
    return out
