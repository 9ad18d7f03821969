import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from opd_lib.sim.break_it import expected_spin_loss
from opd_lib.spin import optimal_round, spin_loss


def test_seed_worked_example():
    # Chapter 6's worked example: beta = 0.1, log p_theta = (-2.3, -1.8), log p_ref = (-1.5, -2.5).
    loss = spin_loss(
        torch.tensor([-2.3]), torch.tensor([-1.8]), torch.tensor([-1.5]), torch.tensor([-2.5])
    )
    # margin = 0.1 * (-0.8 - 0.7) = -0.15; loss = log(1 + e^0.15) = 0.7710.
    # A commonly printed 0.770 (it rounds sigmoid(-0.15) = 0.46257 to 0.463 before taking the log).
    assert loss.item() == pytest.approx(math.log1p(math.exp(0.15)), abs=1e-6)
    assert loss.item() == pytest.approx(0.7710, abs=1e-4)


def test_sigmoid_loss_is_dpo_minus_log_sigmoid_of_margin():
    g = torch.Generator().manual_seed(0)
    lc, lr, rc, rr = (-5 * torch.rand(8, generator=g, dtype=torch.float64) for _ in range(4))
    beta = 0.3
    margin = beta * ((lc - rc) - (lr - rr))
    # TRL 1.x DPOTrainer, loss_type="sigmoid": -F.logsigmoid(beta * delta_score), batch mean.
    torch.testing.assert_close(spin_loss(lc, lr, rc, rr, beta=beta), -F.logsigmoid(margin).mean())
    torch.testing.assert_close(
        spin_loss(lc, lr, rc, rr, beta=beta, kind="hinge"), torch.relu(1 - margin).mean()
    )


def test_hinge_hand_example():
    z = torch.full((2,), -30.0)  # only differences of log-probs enter: margins 0.5 and 2.0
    loss = spin_loss(torch.tensor([-25.0, -10.0]), z, z, z, beta=0.1, kind="hinge")
    assert loss.item() == pytest.approx((0.5 + 0.0) / 2)


def test_saturation_and_gradient_direction():
    # When chosen and rejected look alike to the model, the margin is 0 and the loss is log 2.
    z = torch.zeros(3)
    assert spin_loss(z, z, z, z).item() == pytest.approx(math.log(2))
    lc = torch.tensor([-2.0], requires_grad=True)
    lr = torch.tensor([-2.0], requires_grad=True)
    ref = torch.tensor([-2.0], requires_grad=True)
    spin_loss(lc, lr, ref, ref.detach()).backward()
    assert lc.grad.item() < 0 < lr.grad.item()  # raise chosen, lower rejected
    assert ref.grad is None  # the reference is frozen


def test_errors():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="shape"):
        spin_loss(x, torch.zeros(3), x, x)
    with pytest.raises(ValueError, match="NaN"):
        spin_loss(x, x, torch.tensor([0.0, math.nan]), x)
    with pytest.raises(ValueError, match="beta"):
        spin_loss(x, x, x, x, beta=0.0)
    with pytest.raises(ValueError, match="kind"):
        spin_loss(x, x, x, x, kind="ipo")


@pytest.mark.parametrize("beta", [1.0, 0.6, 0.3, 2.0])
def test_optimal_round_is_where_the_expected_spin_loss_is_flat(beta):
    p_data = np.array([0.5, 0.3, 0.15, 0.05])
    current = np.array([0.1, 0.2, 0.3, 0.4])
    new = optimal_round(current, p_data, beta)
    theta = torch.tensor(np.log(new), requires_grad=True)
    loss = expected_spin_loss(theta, torch.tensor(np.log(current)), torch.tensor(p_data), beta)
    (grad,) = torch.autograd.grad(loss, theta)
    assert grad.abs().max() < 1e-10
    if beta == 1.0:
        np.testing.assert_allclose(new, p_data)
    dev_before = np.log(current) - np.log(p_data)
    dev_after = np.log(new) - np.log(p_data)
    centred = [d - d.mean() for d in (dev_before, dev_after)]
    np.testing.assert_allclose(centred[1], (1 - 1 / beta) * centred[0], atol=1e-12)


def test_optimal_round_names_bad_inputs():
    with pytest.raises(ValueError, match="beta"):
        optimal_round(np.full(2, 0.5), np.full(2, 0.5), 0.0)
    with pytest.raises(ValueError, match="p_data"):
        optimal_round(np.full(2, 0.5), np.array([0.5, 0.6]), 1.0)
    with pytest.raises(ValueError, match="shapes"):
        optimal_round(np.full(2, 0.5), np.full(3, 1 / 3), 1.0)
