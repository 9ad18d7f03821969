import numpy as np
import pytest
import torch

from opd_lib.curriculum import paced_weight
from opd_lib.rl import drop_uniform_groups


@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 1.0), (2.0, 1.0), (0.5, 3.0)])
def test_zero_at_ends_and_max_at_alpha_over_alpha_plus_beta(alpha, beta):
    assert paced_weight(0.0, alpha, beta) == 0.0
    assert paced_weight(1.0, alpha, beta) == 0.0
    p = np.linspace(0, 1, 100_001)
    w = paced_weight(p, alpha, beta)
    assert p[np.argmax(w)] == pytest.approx(alpha / (alpha + beta), abs=1e-4)
    assert np.all(w >= 0)


def test_default_is_p_times_one_minus_p_and_keeps_input_type():
    assert paced_weight(0.5) == pytest.approx(0.25)
    assert isinstance(paced_weight(0.3), float)
    w = paced_weight(torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64))
    assert isinstance(w, torch.Tensor)
    torch.testing.assert_close(w, torch.tensor([0.0, 0.1875, 0.0], dtype=torch.float64))
    assert isinstance(paced_weight([0.1, 0.9]), np.ndarray)


def test_zero_weight_exactly_on_groups_grpo_drops():
    rewards = torch.tensor([1.0, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1])
    pass_rate = rewards.view(4, 4).mean(1)
    assert torch.equal(
        paced_weight(pass_rate) > 0, drop_uniform_groups(rewards, 4).view(4, 4)[:, 0]
    )


def test_errors():
    for bad in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValueError, match="pass_rate"):
            paced_weight(bad)
    with pytest.raises(ValueError, match="pass_rate"):
        paced_weight(torch.tensor([0.5, 2.0]))
    with pytest.raises(ValueError, match="alpha"):
        paced_weight(0.5, alpha=0.0)
    with pytest.raises(ValueError, match="beta"):
        paced_weight(0.5, beta=-1.0)
