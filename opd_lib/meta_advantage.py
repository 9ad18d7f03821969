"""The advantage of Chapter 8's meta-algorithm, and the teachers and rewards that feed it.

    A_t = lam [log pi_T(y_t | c_T) - log pi_theta(y_t | x, y_<t)] + (1 - lam) [R(y) - b(x)]

:func:`advantages` computes ``A_t``; :func:`teacher_logits` scores a completion with a teacher
(a model, or a :data:`TeacherFn` such as OPSD's :func:`hinted_teacher`); :func:`constant_reward`
is SFT's ``R = 1``. :mod:`opd_lib.unified` (which re-exports these) builds the surrogate loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from opd_lib import validate
from opd_lib.lm import Batch, completion_logits
from opd_lib.opsd import hinted_teacher_logits

TeacherFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``teacher(prompt_ids, prompt_mask, completion_ids) -> logits [B, C, V]`` at the completion."""

RewardFn = Callable[[torch.Tensor, Batch], torch.Tensor]
"""``reward_fn(completion_ids, batch) -> [B]`` one reward per sequence."""


def _per_sequence(x: float | torch.Tensor, like: torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = validate.float_tensor(x, name, allow_int=True, nonempty=False).to(like.dtype)
    else:
        t = torch.tensor(validate.real(x, name), dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        t = t.expand(like.shape[0])
    if t.ndim != 1 or t.shape[0] != like.shape[0]:
        raise ValueError(
            f"{name} must be a scalar or one value per sequence [{like.shape[0]}], got shape "
            f"{tuple(t.shape)}"
        )
    validate.no_nan(t, name, inf="both")
    return t.detach()


def advantages(
    logp_student: torch.Tensor,
    logp_teacher: torch.Tensor | None,
    reward: float | torch.Tensor,
    baseline: float | torch.Tensor,
    lam: float,
) -> torch.Tensor:
    """The meta-algorithm's per-token advantage, ``[B, T]``, detached:

        A_t = lam [log pi_T(y_t) - log pi_theta(y_t)] + (1 - lam) [R(y) - b(x)].

    ``logp_student``/``logp_teacher`` are ``[B, T]`` log-probs of the tokens in the sequence;
    ``reward`` and ``baseline`` are per sequence (``[B]`` or a scalar) and broadcast over its
    tokens. ``logp_teacher`` may be ``None`` only when ``lam == 0`` (no teacher term).
    """
    lam = validate.unit(lam, "lam")
    logp_student = validate.log_probs(logp_student, "logp_student", ndim=2, dims="[B, T]")
    validate.no_nan(logp_student, "logp_student", inf="both")
    r = _per_sequence(reward, logp_student, "reward")
    b = _per_sequence(baseline, logp_student, "baseline")
    outcome = (r - b).unsqueeze(-1).expand_as(logp_student)
    if lam == 0.0:
        return outcome.detach().clone()
    if logp_teacher is None:
        raise ValueError("lam > 0 needs logp_teacher (the teacher term has weight lam)")
    logp_teacher = validate.log_probs(logp_teacher, "logp_teacher")
    validate.same_shape(logp_teacher=logp_teacher, logp_student=logp_student)
    validate.no_nan(logp_teacher, "logp_teacher", inf="both")
    dense = logp_teacher - logp_student
    return (lam * dense + (1.0 - lam) * outcome).detach()


def constant_reward(value: float = 1.0) -> RewardFn:
    """A reward function giving every sequence ``value`` (SFT's ``R = 1``)."""
    value = validate.real(value, "value")

    def reward_fn(completion_ids: torch.Tensor, batch: Batch) -> torch.Tensor:
        return torch.full((completion_ids.shape[0],), float(value))

    return reward_fn


def hinted_teacher(model: torch.nn.Module, tokenizer, prompts, hints) -> TeacherFn:
    """OPSD's teacher: ``model`` itself, reading ``prompt + hint`` before the completion.

    ``prompts``/``hints`` are the batch's texts (lists of ``B`` strings); the returned callable
    ignores the student's prompt ids and builds the hinted context with
    ``opd_lib.opsd.hinted_teacher_inputs`` (the same weights, a privileged context ``c_T``).
    """
    validate.module(model, "model")
    if not callable(tokenizer):
        raise validate.ArgumentTypeError(f"tokenizer must be a tokenizer, got {tokenizer!r}")
    prompts, hints = validate.strings(prompts, "prompts"), validate.strings(hints, "hints")
    if len(prompts) != len(hints):
        raise ValueError(f"got {len(prompts)} prompts but {len(hints)} hints")

    def teacher(prompt_ids, prompt_mask, completion_ids):
        return hinted_teacher_logits(model, tokenizer, prompts, hints, completion_ids)

    return teacher


def teacher_logits(teacher, batch: Batch, completion: torch.Tensor) -> torch.Tensor:
    """Logits ``[B, C, V]`` of ``teacher`` at ``completion`` after ``batch``'s prompts: a model
    (:func:`opd_lib.lm.completion_logits`) or a :data:`TeacherFn` (e.g. :func:`hinted_teacher`)."""
    if isinstance(teacher, torch.nn.Module):
        return completion_logits(teacher, batch.prompt_ids, batch.prompt_mask, completion)
    return teacher(batch.prompt_ids, batch.prompt_mask, completion)
