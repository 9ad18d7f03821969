"""Hypothesis properties of opd_lib.pg, opd_lib.rl and opd_lib.spin, and bad inputs named."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from opd_lib import divergences, pg, rl, spin

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


@st.composite
def tokens(draw, max_b=4, max_t=5):
    """(logp [B, T] <= 0, rewards [B, T], mask [B, T] with a token in every row)."""
    b, t = draw(st.integers(1, max_b)), draw(st.integers(1, max_t))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    logp = -torch.rand(b, t, generator=g, dtype=torch.float64) * 4 - 1e-3
    rewards = torch.randn(b, t, generator=g, dtype=torch.float64)
    mask = torch.rand(b, t, generator=g) < 0.7
    mask[:, 0] = True
    return logp, rewards, mask


@SETTINGS
@given(tokens(), st.floats(0.0, 1.0))
def test_discounted_returns_ignore_unmasked_positions_and_accept_integer_rewards(x, gamma):
    _, rewards, mask = x
    out = pg.discounted_returns(rewards, mask, gamma)
    assert (out[~mask] == 0).all()
    noisy = torch.where(mask, rewards, torch.full_like(rewards, 1e6))  # garbage where unmasked
    torch.testing.assert_close(pg.discounted_returns(noisy, mask, gamma), out)
    ints = rewards.round().long()
    torch.testing.assert_close(
        pg.discounted_returns(ints, mask, gamma).double(),
        pg.discounted_returns(ints.double(), mask, gamma), rtol=1e-6, atol=1e-6,
    )  # fmt: skip
    if gamma == 1.0:  # reward-to-go: a reversed cumulative sum over the masked tokens
        expected = torch.where(mask, rewards, 0).flip(-1).cumsum(-1).flip(-1)
        torch.testing.assert_close(out, torch.where(mask, expected, 0))


@SETTINGS
@given(tokens())
def test_reinforce_loss_is_a_token_mean_invariant_to_batch_order(x):
    logp, rewards, mask = x
    logp = logp.clone().requires_grad_()
    loss = pg.reinforce_loss(logp, rewards, mask, baseline=0.3)
    expected = -((rewards - 0.3) * logp)[mask].mean()
    torch.testing.assert_close(loss, expected)
    perm = torch.arange(logp.shape[0]).flip(0)
    torch.testing.assert_close(pg.reinforce_loss(logp[perm], rewards[perm], mask[perm], 0.3), loss)
    loss.backward()
    assert torch.isfinite(logp.grad).all() and (logp.grad[~mask] == 0).all()


@SETTINGS
@given(tokens())
def test_rewards_are_the_log_ratio_and_detached(x):
    logp_t, _, _ = x
    logp_s = (logp_t.flip(0) - 0.1).requires_grad_()
    r = pg.per_token_reverse_kl_reward(logp_t, logp_s)
    assert not r.requires_grad
    torch.testing.assert_close(r, logp_t - logp_s.detach())
    torch.testing.assert_close(pg.extrapolated_reward(logp_t, logp_s.detach(), 1.0), r)


@SETTINGS
@given(tokens(), st.floats(-2.0, 2.0))
def test_verifier_augmented_reward_sums_to_the_sequence_reward(x, beta):
    logp_t, _, mask = x
    verdict = torch.randint(0, 2, (logp_t.shape[0],), generator=torch.Generator().manual_seed(1))
    out = pg.verifier_augmented_reward(logp_t, verdict.double(), beta, mask)
    torch.testing.assert_close(out.sum(1), torch.where(mask, logp_t, 0).sum(1) + beta * verdict)


@SETTINGS
@given(st.integers(0, 2**16), st.integers(1, 3), st.integers(1, 4), st.integers(2, 7))
def test_single_step_kl_is_the_masked_mean_reverse_kl_with_finite_gradients(seed, b, t, v):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, t, v, generator=g, dtype=torch.float64) * 3
    te = torch.randn(b, t, v, generator=g, dtype=torch.float64) * 3
    s[..., 0] = te[..., 0] = -math.inf  # a vocabulary entry both mask out
    mask = torch.rand(b, t, generator=g) < 0.6
    mask.view(-1)[0] = True
    s.requires_grad_()
    value = pg.single_step_kl(s, te, mask)
    assert value >= 0
    expected = divergences.token_divergence(s.detach(), te, "rkl")[mask].mean()
    torch.testing.assert_close(value.detach(), expected)
    value.backward()
    assert torch.isfinite(s.grad).all()
    assert pg.single_step_kl(te, te, mask).abs() < 1e-12


@SETTINGS
@given(st.integers(0, 2**16), st.integers(2, 5), st.integers(1, 4))
def test_group_advantages_centre_each_group_and_follow_its_members(seed, group, groups):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randint(0, 3, (group * groups,), generator=g).double()
    adv = rl.group_advantages(rewards, group)
    torch.testing.assert_close(adv.view(groups, group).sum(1), torch.zeros(groups, dtype=adv.dtype))
    perm = torch.randperm(group, generator=g)  # permuting inside every group permutes the output
    idx = (torch.arange(groups).unsqueeze(1) * group + perm).reshape(-1)
    torch.testing.assert_close(rl.group_advantages(rewards[idx], group), adv[idx])
    keep = rl.drop_uniform_groups(rewards, group).view(groups, group)
    assert torch.equal(keep[:, 0], rewards.view(groups, group).std(1) > 0)
    torch.testing.assert_close(rl.group_advantages(rewards.long(), group), adv.float())


@SETTINGS
@given(st.lists(st.floats(-1, 2), min_size=1, max_size=8), st.floats(-1, 2))
def test_rejection_sampling_keeps_exactly_the_passing_samples_in_order(rewards, threshold):
    kept = rl.rejection_sampling_targets(list(range(len(rewards))), rewards, threshold)
    assert kept == [i for i, r in enumerate(rewards) if r >= threshold]


@SETTINGS
@given(st.integers(0, 2**16), st.integers(1, 6), st.floats(0.01, 2.0))
def test_spin_loss_properties(seed, b, beta):
    g = torch.Generator().manual_seed(seed)
    lc, lr, rc, rr = (-torch.rand(b, generator=g, dtype=torch.float64) * 5 for _ in range(4))
    lc.requires_grad_()
    loss = spin.spin_loss(lc, lr, rc, rr, beta)
    assert loss >= 0
    loss.backward()
    assert torch.isfinite(lc.grad).all() and (lc.grad <= 0).all()  # raising chosen lowers it
    perm = torch.arange(b).flip(0)
    torch.testing.assert_close(spin.spin_loss(lc[perm], lr[perm], rc[perm], rr[perm], beta), loss)
    same = spin.spin_loss(lc.detach(), lc.detach(), rc, rc, beta)  # exchangeable: log 2
    assert same.item() == pytest.approx(math.log(2))
    assert spin.spin_loss(lc, lr, rc, rr, beta, "hinge") >= 0


def test_spin_loss_keeps_half_precision():
    x = -torch.rand(4).half()
    out = spin.spin_loss(x, x.flip(0), x, x)
    assert out.dtype == torch.float16 and torch.isfinite(out)


# ------------------------------------------------------------------------------ bad inputs

LP = -torch.rand(2, 3) - 0.01
R = torch.randn(2, 3)
M = torch.tensor([[True, True, False], [True, False, True]])
L = torch.randn(2, 3, 5)


def nan(x):
    x = x.clone()
    x.view(-1)[0] = math.nan
    return x


BAD = [
    (lambda: pg.per_token_reverse_kl_reward(LP + 2, LP), "logp_teacher"),
    (lambda: pg.per_token_reverse_kl_reward(LP, nan(LP)), "logp_student"),
    (lambda: pg.per_token_reverse_kl_reward(LP, LP.clone().fill_(-math.inf)), "logp_student"),
    (lambda: pg.reinforce_loss(LP.tolist(), R, M), "logp"),
    (lambda: pg.reinforce_loss(LP, R.clone().fill_(math.inf), M), "rewards"),
    (lambda: pg.reinforce_loss(LP, R > 0, M), "rewards"),
    (lambda: pg.reinforce_loss(LP, R, torch.where(M, 5, -100)), "mask"),
    (lambda: pg.reinforce_loss(LP, R, M.float() * 0.5), "mask"),
    (lambda: pg.reinforce_loss(LP, R, M, baseline=math.nan), "baseline"),
    (lambda: pg.reinforce_loss(LP, R, M, baseline="mean"), "baseline"),
    (lambda: pg.reinforce_loss(LP, R, M, entropy_coef=-0.1, entropy=R.abs()), "entropy_coef"),
    (lambda: pg.reinforce_loss(LP, R, M, entropy_coef=0.1, entropy=-R.abs() - 1), "entropy"),
    (lambda: pg.discounted_returns(R, M, gamma=1.5), "gamma"),
    (lambda: pg.discounted_returns(R, M, length_normalize="yes"), "length_normalize"),
    (lambda: pg.discounted_returns(R[:, :2], M), "rewards"),
    (lambda: pg.discounted_returns(R, torch.zeros_like(M)), "mask"),
    (lambda: pg.single_step_kl(L, L.clone().fill_(math.inf), M), "teacher_logits"),
    (lambda: pg.single_step_kl(L.long(), L, M), "student_logits"),
    (lambda: pg.single_step_kl(L, L, M.tolist()), "mask"),
    (lambda: pg.extrapolated_reward(LP, LP, -1.0), "lam"),
    (lambda: pg.extrapolated_reward(LP, LP.clone().fill_(-math.inf), 1.0), "logp_reference"),
    (
        lambda: pg.verifier_augmented_reward(LP, torch.tensor([math.inf, 1.0]), 1.0, M),
        "verifier_reward",
    ),
    (lambda: pg.verifier_augmented_reward(LP, torch.ones(2), math.nan, M), "beta"),
    (lambda: pg.verifier_augmented_reward(LP + 3, torch.ones(2), 1.0, M), "logp_teacher"),
    (lambda: rl.group_advantages(torch.tensor([1.0, math.inf]), 2), "rewards"),
    (lambda: rl.group_advantages([1.0, 0.0], 2), "rewards"),
    (lambda: rl.group_advantages(torch.ones(4), 2.0), "group_size"),
    (lambda: rl.group_advantages(torch.ones(4), 2, eps=0.0), "eps"),
    (lambda: rl.group_advantages(torch.ones(4), 2, normalize_std=1), "normalize_std"),
    (lambda: rl.drop_uniform_groups(torch.ones(4), True), "group_size"),
    (lambda: rl.rejection_sampling_targets("abc", [1.0, 1.0, 1.0]), "samples"),
    (lambda: rl.rejection_sampling_targets(["a"], ["x"]), "rewards"),
    (lambda: rl.rejection_sampling_targets(["a"], [1.0], threshold=math.nan), "threshold"),
    (
        lambda: spin.spin_loss(
            -torch.ones(2, 1), -torch.ones(2, 1), -torch.ones(2, 1), -torch.ones(2, 1)
        ),
        "logp_chosen",
    ),  # fmt: skip
    (
        lambda: spin.spin_loss(LP[0], LP[0], LP[0], torch.tensor([1.0, math.inf, 0])),
        "ref_logp_rejected",
    ),
    (lambda: spin.spin_loss(LP[0], LP[0].long(), LP[0], LP[0]), "logp_rejected"),
    (lambda: spin.spin_loss(LP[0], LP[0], LP[0].abs() + 1, LP[0]), "ref_logp_chosen"),
    (lambda: spin.spin_loss(LP[0], LP[0], LP[0], LP[0], beta=math.inf), "beta"),
    (lambda: spin.spin_loss(LP[0], LP[0], LP[0], LP[0], kind="ipo"), "kind"),
]


@pytest.mark.parametrize(("call", "name"), BAD, ids=[f"{i}-{n}" for i, (_, n) in enumerate(BAD)])
def test_bad_input_is_refused_naming_the_argument(call, name):
    with pytest.raises((ValueError, TypeError), match=name):
        call()
