"""One loss per method, each the per-token term of its chapter's objective.

Every function takes the student's completion logits ``[B, C, V]`` (with gradient), the rollout
(the sequences and their ``mask``), ``teacher()`` (the teacher's logits at the same positions,
without gradient; computed only when called) and the Config, and returns the per-token loss
``[B, C]`` plus statistics (sums over counted tokens). The trainer sums the loss over
``rollout.mask`` and divides by the whole batch's token count.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from opd_lib.divergences import token_divergence
from opd_lib.lab.config import Config
from opd_lib.lab.data import Rollout
from opd_lib.lm import token_logprobs
from opd_lib.opsd import clip_per_token, clip_pointwise
from opd_lib.pg import per_token_reverse_kl_reward

__all__ = ["LOSSES", "LossFn", "loss_for"]

Stats = dict[str, float]
LossFn = Callable[[torch.Tensor, Rollout, Callable[[], torch.Tensor], Config], tuple]


def _divergence_sum(per_token: torch.Tensor, mask: torch.Tensor) -> Stats:
    return {"divergence_sum": per_token.detach()[mask].sum().item()}


def per_token_sft(logits, roll: Rollout, teacher, c: Config) -> tuple[torch.Tensor, Stats]:
    """SFT (Chapter 1): cross-entropy ``-log p_S(y_t | x, y_<t)`` on fixed sequences (the data's
    traces, or the teacher's samples: sequence-level KD)."""
    return -token_logprobs(logits, roll.completion_ids), {}


def per_token_kd(logits, roll: Rollout, teacher, c: Config) -> tuple[torch.Tensor, Stats]:
    """Token-level KD (Chapter 3): forward ``KL(p_T || p_S)`` at every position of fixed
    sequences."""
    per_token = token_divergence(logits, teacher(), "fkl", 0.0, mask=roll.mask)
    return per_token, _divergence_sum(per_token, roll.mask)


def per_token_gkd(logits, roll: Rollout, teacher, c: Config) -> tuple[torch.Tensor, Stats]:
    """GKD (Chapter 4): generalized JSD with ``beta`` on the sequences the rollout chose (the
    student's samples with probability ``lam``)."""
    per_token = token_divergence(logits, teacher(), "jsd", c.beta, mask=roll.mask)
    return per_token, _divergence_sum(per_token, roll.mask)


def per_token_opd(logits, roll: Rollout, teacher, c: Config) -> tuple[torch.Tensor, Stats]:
    """On-policy distillation (Chapter 5), exact: reverse ``KL(p_S || p_T)`` over the whole
    vocabulary at every position of the student's own samples."""
    per_token = token_divergence(logits, teacher(), "rkl", 0.0, mask=roll.mask)
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
    the group-normalised advantage ``A_i`` of the whole sample."""
    return -roll.advantages.unsqueeze(-1) * token_logprobs(logits, roll.completion_ids), {}


def per_token_opsd(logits, roll: Rollout, teacher, c: Config) -> tuple[torch.Tensor, Stats]:
    """On-policy self-distillation (Chapter 6): divergence ``opsd_kind`` to the student itself
    shown a hint (``teacher()``), unclipped, clipped per token at ``clip_value``, or clipped
    point-wise (each vocabulary term capped) at ``clip_value``."""
    if c.clip == "pointwise":
        return clip_pointwise(logits, teacher(), roll.mask, c.opsd_kind, c.clip_value, c.beta), {}
    per_token = token_divergence(logits, teacher(), c.opsd_kind, c.beta, mask=roll.mask)
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
