import math

import pytest
import torch

from opd_lib.rl import drop_uniform_groups, group_advantages, rejection_sampling_targets


def _trl_grpo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """TRL 1.x GRPOTrainer (scale_rewards="group"): mean and Bessel-corrected ``nanstd`` per
    group, then (r - mean) / (std + 1e-4). Re-derived here: importing trl takes seconds."""
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(1, keepdim=True)
    var = ((grouped - mean) ** 2).mean(1, keepdim=True) * group_size / (group_size - 1)
    return ((grouped - mean) / (var.sqrt() + 1e-4)).reshape(-1)


def test_group_advantages_hand_example():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    adv = group_advantages(rewards, group_size=4, eps=1e-12)
    # Group 1: mean 0.5, sample std sqrt(4 * 0.25 / 3) = 1/sqrt(3) -> +-0.5 * sqrt(3).
    a = 0.5 * math.sqrt(3)
    torch.testing.assert_close(adv, torch.tensor([a, -a, -a, a, 0.0, 0.0, 0.0, 0.0]))


def test_group_advantages_zero_mean_unit_sample_std_per_group():
    rewards = torch.randn(6 * 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    adv = group_advantages(rewards, group_size=5).view(6, 5)
    torch.testing.assert_close(adv.mean(1), torch.zeros(6, dtype=torch.float64))
    torch.testing.assert_close(adv.std(1), torch.ones(6, dtype=torch.float64), rtol=1e-5, atol=0)


def test_group_advantages_match_trl_normalisation():
    rewards = torch.tensor([0.0, 1.0, 1.0, 0.5, 2.0, 2.0, 2.0, 2.0, 0.0, 0.0, 3.0, 1.0])
    torch.testing.assert_close(
        group_advantages(rewards, group_size=4, eps=1e-4), _trl_grpo_advantages(rewards, 4)
    )


def test_integer_rewards_are_accepted():
    adv = group_advantages(torch.tensor([1, 0, 1, 1]), group_size=2, normalize_std=False)
    torch.testing.assert_close(adv, torch.tensor([0.5, -0.5, 0.0, 0.0]))


def test_group_advantages_without_std_only_centres():
    rewards = torch.tensor([1.0, 3.0, 10.0, 20.0])
    adv = group_advantages(rewards, group_size=2, normalize_std=False)
    torch.testing.assert_close(adv, torch.tensor([-1.0, 1.0, -5.0, 5.0]))


def test_drop_uniform_groups_removes_exactly_all_equal_groups():
    rewards = torch.tensor([1.0, 1, 1, 0, 1, 0, 0, 0, 0, 0.5, 0.5, 0.6])
    keep = drop_uniform_groups(rewards, group_size=3)
    expected = torch.tensor([False] * 3 + [True] * 3 + [False] * 3 + [True] * 3)
    assert torch.equal(keep, expected)
    # The dropped groups are exactly those with zero advantage everywhere.
    adv = group_advantages(rewards, group_size=3).view(4, 3)
    assert torch.equal(keep.view(4, 3)[:, 0], adv.abs().sum(1) > 0)


def test_rejection_sampling_keeps_passing_samples_in_order():
    samples = ["a", "b", "c", "d"]
    assert rejection_sampling_targets(samples, torch.tensor([1.0, 0.0, 1.0, 0.0])) == ["a", "c"]
    assert rejection_sampling_targets(samples, [0.2, 0.7, 0.5, 0.9], threshold=0.5) == [
        "b",
        "c",
        "d",
    ]
    assert rejection_sampling_targets(range(4), [0, 1, 1, 0]) == [1, 2]


def test_rejection_sampling_returns_empty_when_nothing_passes():
    assert rejection_sampling_targets(["a", "b"], [0.0, 0.0]) == []


def test_errors():
    with pytest.raises(ValueError, match="multiple"):
        group_advantages(torch.zeros(5), group_size=2)
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.zeros(4), group_size=1)
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(torch.zeros(2, 2), group_size=2)
    with pytest.raises(ValueError, match="NaN"):
        drop_uniform_groups(torch.tensor([0.0, math.nan]), group_size=2)
    with pytest.raises(ValueError, match="eps"):
        group_advantages(torch.zeros(4), group_size=2, eps=0.0)
    with pytest.raises(ValueError, match="shape mismatch"):
        rejection_sampling_targets(["a", "b"], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        rejection_sampling_targets(["a"], [math.nan])
