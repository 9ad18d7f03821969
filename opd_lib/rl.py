"""GRPO's group-relative advantages and rejection sampling ("RL without RL").

Rewards here are one scalar per sampled completion. For GRPO the N = (prompts x group_size)
completions are laid out prompt by prompt: completions [k * group_size, (k + 1) * group_size) share
prompt k, the layout TRL's ``GRPOTrainer`` uses (``rewards.view(-1, num_generations)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch

from opd_lib import validate

S = TypeVar("S")


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Validate and reshape rewards [N] to [N / group_size, group_size]."""
    rewards = validate.float_tensor(rewards, "rewards", allow_int=True, nonempty=False)
    group_size = validate.integer(group_size, "group_size", minimum=None)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if group_size < 2:
        raise ValueError(
            f"group_size must be >= 2 (a group of one carries no signal), got {group_size}"
        )
    if rewards.numel() == 0 or rewards.numel() % group_size != 0:
        raise ValueError(
            f"number of rewards {rewards.numel()} is not a positive multiple of "
            f"group_size {group_size}"
        )
    validate.no_nan(rewards, "rewards", inf="both")
    return rewards.reshape(-1, group_size)


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    normalize_std: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """GRPO's outcome advantage A_i = (r_i - mean(r_group)) / (std(r_group) + eps), shape [N].

    GRPO (Shao et al. 2024, DeepSeekMath, arXiv:2402.03300, Sec. 4.1.2) normalises each reward by
    the mean and standard deviation of its group. The std is the sample std (Bessel's correction,
    divide by group_size - 1), as in TRL's ``GRPOTrainer`` (``nanstd``, with eps = 1e-4 added to
    the std there; pass ``eps=1e-4`` to reproduce it exactly). ``normalize_std=False`` keeps only
    the mean-centring (Dr. GRPO, arXiv:2503.20783; TRL's ``scale_rewards="none"``). A group whose
    rewards are all equal gets advantage 0.
    """
    grouped = _grouped(rewards, group_size)
    if validate.flag(normalize_std, "normalize_std"):
        eps = validate.positive(eps, "eps")
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if normalize_std:
        centred = centred / (grouped.std(dim=1, unbiased=True, keepdim=True) + eps)
    return centred.reshape(-1)


def drop_uniform_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Boolean keep mask [N]: False for every completion of a group whose rewards are all equal.

    Such a group has zero group-relative advantage, so it adds nothing to the GRPO gradient but
    still counts in the token mean. "A Minimalist Approach to LLM Reasoning: From Rejection
    Sampling to Reinforce" (Xiong et al. 2025, arXiv:2504.11343) finds rejection sampling (RAFT)
    competitive with GRPO, and GRPO's main gain over plain Reinforce to come from discarding
    prompts whose responses are all wrong, not from reward normalisation; their Reinforce-Rej
    drops all-wrong and all-right groups, as this mask does. Equality is exact, as for verifier
    rewards.
    """
    grouped = _grouped(rewards, group_size)
    uniform = (grouped == grouped[:, :1]).all(dim=1)
    return (~uniform).repeat_interleave(group_size)


def rejection_sampling_targets(
    samples: Sequence[S], rewards: torch.Tensor | Sequence[float], threshold: float = 1.0
) -> list[S]:
    """Rejection-sampling fine-tuning targets: the samples with reward >= ``threshold``, in order.

    Sample N completions from the policy, keep the ones the verifier accepts, and train on them
    with the SFT loss: STaR (arXiv:2203.14465), RFT (arXiv:2308.01825), RAFT (arXiv:2304.06767),
    ReST (arXiv:2308.08998). The default threshold 1.0 keeps the correct answers of a {0, 1}
    verifier. Returns an empty list when nothing passes (a batch with no winners has nothing to
    imitate; the caller decides whether to resample). To get indices, pass ``range(N)`` as
    ``samples``.
    """
    if isinstance(samples, str) or not isinstance(samples, Sequence):
        raise validate.ArgumentTypeError(
            f"samples must be a sequence (list, range, ...), got {type(samples).__name__}"
        )
    try:
        r = torch.as_tensor(rewards, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise validate.ArgumentTypeError(f"rewards must be numbers, got {rewards!r}") from e
    if r.ndim != 1 or r.shape[0] != len(samples):
        raise ValueError(
            f"shape mismatch: {len(samples)} samples vs rewards of shape {tuple(r.shape)}"
        )
    validate.no_nan(r, "rewards", inf="both")
    threshold = validate.real(threshold, "threshold")
    keep = (r >= threshold).tolist()
    return [sample for sample, k in zip(samples, keep, strict=True) if k]
