"""One loss per method, each the per-token term of its chapter's objective.

Every function takes the student's completion logits ``[B, C, V]`` (with gradient), the rollout
(the sequences and their ``mask``), ``teacher()`` (the teacher's logits at the same positions,
without gradient; computed only when called) and the Config, and returns the per-token loss
``[B, C]`` plus statistics (sums over counted tokens). The trainer sums the loss over
``rollout.mask`` and divides by the whole batch's token count.

Where :func:`fusable` (kd, gkd, exact opd, opsd unclipped or clipped per token) and the Config's
``fused_divergence`` is on, both sides are :class:`Hidden` instead of logits and the divergence
is :func:`opd_lib.fused_divergence.fused_token_divergence` (no ``[B, C, V]`` logits). OPSD's
point-wise clip caps each vocabulary term, so it needs the full logits and is never fused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from opd_lib.divergences import token_divergence
from opd_lib.fused_divergence import fused_token_divergence
from opd_lib.lab.config import Config
from opd_lib.lab.data import Rollout
from opd_lib.lm import (
    Batch,
    completion_hidden,
    completion_logits,
    entropy,
    forward_hidden,
    forward_logits,
    head_params,
    token_logprobs,
)
from opd_lib.models import restricted_tokens
from opd_lib.opsd import clip_per_token, clip_pointwise, gather_positions
from opd_lib.pg import per_token_reverse_kl_reward

__all__ = [
    "LOSSES",
    "Hidden",
    "LossFn",
    "completion_side",
    "divergence",
    "entropy_sum",
    "fusable",
    "hinted_side",
    "loss_for",
    "scored_head",
]

Stats = dict[str, float]
LossFn = Callable[[torch.Tensor, Rollout, Callable[[], torch.Tensor], Config], tuple]


class Hidden(NamedTuple):
    """One side of a fused divergence: final hidden states ``[B, C, H]`` and the LM head
    (``logits = states @ weight.T + bias``)."""

    states: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None


def completion_side(model, roll: Rollout | Batch, fused: bool):
    """``model``'s completion logits ``[B, C, V]`` on the sequences of ``roll`` or, ``fused``,
    its :class:`Hidden` there (:func:`opd_lib.lm.completion_hidden`; no logits built)."""
    seqs = (roll.prompt_ids, roll.prompt_mask, roll.completion_ids)
    if fused:
        return Hidden(completion_hidden(model, *seqs), *scored_head(model))
    return completion_logits(model, *seqs)


def scored_head(model) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The LM head's ``(weight, bias)`` cut to the tokenizer's tokens when the model's logits are
    restricted (:func:`opd_lib.models.restrict_logits`): the padded rows (Qwen3: 267 of 151,936)
    are never scored. The fused path does not fold the extra stop ids into EOS as the restricted
    logits do, so it scores the same tokens with ``<|endoftext|>`` and ``<|im_end|>`` apart."""
    weight, bias = head_params(model)
    n = restricted_tokens(model)
    if n is None:
        return weight, bias
    return weight[:n], None if bias is None else bias[:n]


def hinted_side(model, roll: Rollout, fused: bool):
    """OPSD's teacher side: ``model`` on the hinted inputs, at the completion's positions
    (``roll.teacher_pos``): logits ``[B, C, V]`` or, ``fused``, hidden states gathered alike."""
    forward = forward_hidden if fused else forward_logits
    out = gather_positions(forward(model, roll.teacher_ids, roll.teacher_attn), roll.teacher_pos)
    return Hidden(out, *scored_head(model)) if fused else out


def divergence(student, teacher, kind: str, beta: float, mask, reduction: str = "none"):
    """``token_divergence`` of two logits tensors, or ``fused_token_divergence`` of two
    :class:`Hidden` (the same value to rounding)."""
    if isinstance(student, Hidden):
        return fused_token_divergence(
            student.states, student.weight, teacher.states, teacher.weight, kind=kind, beta=beta,
            mask=mask, reduction=reduction, student_bias=student.bias, teacher_bias=teacher.bias,
        )  # fmt: skip
    return token_divergence(student, teacher, kind, beta, mask=mask, reduction=reduction)


@torch.no_grad()
def entropy_sum(student, mask: torch.Tensor, chunk: int = 64) -> float:
    """Sum over ``mask`` of the entropy of ``softmax(logits)``; for :class:`Hidden`, the logits
    of ``chunk`` selected tokens at a time (never ``[B, C, V]``)."""
    if not isinstance(student, Hidden):
        return entropy(student)[mask].sum().item()
    rows, total = student.states[mask], 0.0
    for start in range(0, rows.shape[0], chunk):
        logits = rows[start : start + chunk] @ student.weight.t()
        if student.bias is not None:
            logits = logits + student.bias
        total += entropy(logits).sum().item()
    return total


def fusable(c: Config) -> bool:
    """Whether ``c.method``'s loss is a full-vocabulary divergence that can take :class:`Hidden`."""
    if c.method == "opd":
        return c.opd_estimator == "full"
    return c.method in ("kd", "gkd") or (c.method == "opsd" and c.clip != "pointwise")


def _divergence_sum(per_token: torch.Tensor, mask: torch.Tensor) -> Stats:
    return {"divergence_sum": per_token.detach()[mask].sum().item()}


def per_token_sft(logits, roll: Rollout, teacher, c: Config) -> tuple[torch.Tensor, Stats]:
    """SFT (Chapter 1): cross-entropy ``-log p_S(y_t | x, y_<t)`` on fixed sequences (the data's
    traces, or the teacher's samples: sequence-level KD)."""
    return -token_logprobs(logits, roll.completion_ids), {}


def per_token_kd(logits, roll: Rollout, teacher, c: Config) -> tuple[torch.Tensor, Stats]:
    """Token-level KD (Chapter 3): forward ``KL(p_T || p_S)`` at every position of fixed
    sequences."""
    per_token = divergence(logits, teacher(), "fkl", 0.0, roll.mask)
    return per_token, _divergence_sum(per_token, roll.mask)


def per_token_gkd(logits, roll: Rollout, teacher, c: Config) -> tuple[torch.Tensor, Stats]:
    """GKD (Chapter 4): generalized JSD with ``beta`` on the sequences the rollout chose (the
    student's samples with probability ``lam``)."""
    per_token = divergence(logits, teacher(), "jsd", c.beta, roll.mask)
    return per_token, _divergence_sum(per_token, roll.mask)


def per_token_opd(logits, roll: Rollout, teacher, c: Config) -> tuple[torch.Tensor, Stats]:
    """On-policy distillation (Chapter 5), exact: reverse ``KL(p_S || p_T)`` over the whole
    vocabulary at every position of the student's own samples."""
    per_token = divergence(logits, teacher(), "rkl", 0.0, roll.mask)
    return per_token, _divergence_sum(per_token, roll.mask)


def per_token_opd_sampled(logits, roll: Rollout, teacher, c: Config) -> tuple[torch.Tensor, Stats]:
    """On-policy distillation (Chapter 5), sampled-token estimator: REINFORCE with the per-token
    reward ``r_t = log p_T(y_t) - log p_S(y_t)`` (no gradient through it), loss ``-r_t log p_S``.
    Logs the k1 estimate ``-r_t`` of the reverse KL."""
    logp = token_logprobs(logits, roll.completion_ids)
    reward = per_token_reverse_kl_reward(token_logprobs(teacher(), roll.completion_ids), logp)
    return -reward * logp, {"divergence_sum": (-reward)[roll.mask].sum().item()}


def per_token_rl(logits, roll: Rollout, teacher, c: Config) -> tuple[torch.Tensor, Stats]:
    """GRPO with one on-policy update (Chapter 2; the PPO ratio is 1): ``-A_i log p_S(y_t)`` with
    the group-normalised advantage ``A_i`` of the whole sample; with ``rl_kl > 0`` plus
    ``rl_kl * (exp(r) - r - 1)``, ``r = log p_ref(y_t) - log p_S(y_t)``, the k3 estimate of
    ``KL(p_S || p_ref)`` to the initial student ``teacher()`` (DeepSeekMath, Shao et al. 2024,
    eq. 4)."""
    logp = token_logprobs(logits, roll.completion_ids)
    loss = -roll.advantages.unsqueeze(-1) * logp
    if not c.rl_kl:
        return loss, {}
    log_ratio = token_logprobs(teacher(), roll.completion_ids) - logp
    k3 = log_ratio.exp() - log_ratio - 1
    return loss + c.rl_kl * k3, {"divergence_sum": k3.detach()[roll.mask].sum().item()}


def per_token_opsd(logits, roll: Rollout, teacher, c: Config) -> tuple[torch.Tensor, Stats]:
    """On-policy self-distillation (Chapter 6): divergence ``opsd_kind`` to the student itself
    shown a hint (``teacher()``), unclipped, clipped per token at ``clip_value``, or clipped
    point-wise (each vocabulary term capped) at ``clip_value``."""
    if c.clip == "pointwise":
        return clip_pointwise(logits, teacher(), roll.mask, c.opsd_kind, c.clip_value, c.beta), {}
    per_token = divergence(logits, teacher(), c.opsd_kind, c.beta, roll.mask)
    stats = _divergence_sum(per_token, roll.mask)
    if c.clip == "token":
        per_token = clip_per_token(per_token, c.clip_value)
    return per_token, stats


LOSSES: dict[str, LossFn] = {
    "sft": per_token_sft,
    "kd": per_token_kd,
    "gkd": per_token_gkd,
    "opd": per_token_opd,
    "opd-sampled": per_token_opd_sampled,
    "rl": per_token_rl,
    "opsd": per_token_opsd,
}


def loss_for(c: Config) -> LossFn:
    """The loss of ``c.method`` (``opd`` with ``opd_estimator="sampled"``: the sampled one)."""
    if c.method == "opd" and c.opd_estimator == "sampled":
        return per_token_opd_sampled
    return LOSSES[c.method]
