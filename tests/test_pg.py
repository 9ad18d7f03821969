import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Categorical, kl_divergence

from opd_lib.pg import (
    discounted_returns,
    extrapolated_reward,
    per_token_reverse_kl_reward,
    reinforce_loss,
    single_step_kl,
    verifier_augmented_reward,
)

DT = torch.float64


# ----------------------------------------------------------------------------- rewards


def test_reward_positive_where_teacher_likes_token_more():
    # Chapter 5's worked example: p_T("therefore") = 0.7, p_theta = 0.3.
    r = per_token_reverse_kl_reward(torch.tensor([math.log(0.7)]), torch.tensor([math.log(0.3)]))
    assert r.item() > 0
    assert r.item() == pytest.approx(0.8473, abs=1e-4)
    # "however": p_theta = 0.4, p_T = 0.02 -> -2.996 (a commonly quoted -2.99 truncates it).
    r = per_token_reverse_kl_reward(torch.tensor([math.log(0.02)]), torch.tensor([math.log(0.4)]))
    assert r.item() == pytest.approx(-2.9957, abs=1e-4)


def test_reward_is_detached():
    ls = torch.tensor([-1.0, -2.0], requires_grad=True)
    r = per_token_reverse_kl_reward(torch.tensor([-0.5, -0.5]), ls)
    assert not r.requires_grad


def test_extrapolated_reward_lam_one_recovers_reverse_kl_reward():
    g = torch.Generator().manual_seed(0)
    lt, lref, ls = (-torch.rand(3, 5, generator=g, dtype=DT) * 4 for _ in range(3))
    full = extrapolated_reward(lt, lref, 1.0) + (lref - ls)  # + the -KL(pi_theta || pi_ref) part
    torch.testing.assert_close(full, per_token_reverse_kl_reward(lt, ls))
    torch.testing.assert_close(extrapolated_reward(lt, lref, 2.5), 2.5 * (lt - lref))
    assert not extrapolated_reward(lt, lref.requires_grad_(), 1.5).requires_grad


def test_verifier_reward_added_once_at_last_completion_token():
    lt = torch.tensor([[-1.0, -2.0, -3.0, -4.0], [-0.5, -0.5, -0.5, -0.5]])
    mask = torch.tensor([[True, True, True, False], [False, True, True, True]])
    rext = torch.tensor([1.0, 0.0])
    out = verifier_augmented_reward(lt, rext, beta=2.0, mask=mask)
    expected = torch.tensor([[-1.0, -2.0, -3.0 + 2.0, 0.0], [0.0, -0.5, -0.5, -0.5]])
    torch.testing.assert_close(out, expected)
    # Row sums are the verifier-bonus variant's sequence-level R(y) = log P_T(y) + beta * R_ext(y).
    torch.testing.assert_close(out.sum(1), (lt * mask).sum(1) + 2.0 * rext)


# ----------------------------------------------------------------------------- REINFORCE


def _categorical_case():
    theta = torch.tensor([0.3, -1.0, 0.8, 0.0, -0.4, 1.2], dtype=DT, requires_grad=True)
    teacher_logp = F.log_softmax(torch.tensor([1.5, 0.2, -0.7, 0.4, -1.5, 0.1], dtype=DT), -1)
    logp_all = F.log_softmax(theta, -1)
    exact_kl = (logp_all.exp() * (logp_all - teacher_logp)).sum()
    (exact_grad,) = torch.autograd.grad(exact_kl, theta)
    return theta, teacher_logp, exact_kl.detach(), exact_grad


def _reinforce_estimate(theta, teacher_logp, n, seed, baseline=None):
    """Gradient of reinforce_loss on n samples, and the per-sample estimates' std."""
    g = torch.Generator().manual_seed(seed)
    p = F.softmax(theta.detach(), -1)
    y = torch.multinomial(p, n, replacement=True, generator=g)
    logp = F.log_softmax(theta, -1)[y].unsqueeze(-1)  # [n, 1]
    rewards = per_token_reverse_kl_reward(teacher_logp[y].unsqueeze(-1), logp)
    mask = torch.ones(n, 1, dtype=torch.bool)
    (grad,) = torch.autograd.grad(reinforce_loss(logp, rewards, mask, baseline=baseline), theta)
    # Per-sample estimate: -(r_i - b) * grad_theta log p(y_i), with grad log p(y) = onehot(y) - p.
    adv = rewards.squeeze(-1) - (0.0 if baseline is None else baseline)
    per_sample = -adv.unsqueeze(-1) * (F.one_hot(y, p.numel()).to(DT) - p)
    return grad, per_sample.std(0)


@pytest.mark.parametrize("n", [200, 20_000])
def test_reinforce_monte_carlo_mean_matches_exact_reverse_kl_gradient(n):
    theta, teacher_logp, _, exact = _categorical_case()
    grad, std = _reinforce_estimate(theta, teacher_logp, n, seed=1)
    # Unbiased: within 4 standard errors, a tolerance that shrinks like 1/sqrt(n).
    assert torch.all((grad - exact).abs() <= 4 * std / math.sqrt(n))


def test_reinforce_error_shrinks_like_one_over_sqrt_n():
    theta, teacher_logp, _, exact = _categorical_case()

    def mean_error(n):
        errs = [
            (_reinforce_estimate(theta, teacher_logp, n, s)[0] - exact).norm() for s in range(5)
        ]
        return sum(errs) / len(errs)

    # 100x the samples: the error should drop about 10x; ask for at least 4x.
    assert mean_error(20_000) < mean_error(200) / 4


def test_constant_baseline_keeps_mean_and_cuts_variance():
    theta, teacher_logp, exact_kl, exact = _categorical_case()
    n = 20_000
    plain, std_plain = _reinforce_estimate(theta, teacher_logp, n, seed=3)
    b = -exact_kl.item()  # E[r] = -KL, the best constant baseline up to a small correction
    based, std_based = _reinforce_estimate(theta, teacher_logp, n, seed=3, baseline=b)
    assert torch.all((based - exact).abs() <= 4 * std_based / math.sqrt(n))
    assert std_based.norm() < std_plain.norm()


def test_reinforce_loss_normalises_by_masked_token_count():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]], requires_grad=True)
    rewards = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[True, True, False], [True, True, False]])
    loss = reinforce_loss(logp, rewards, mask, baseline=torch.tensor([1.0, 2.0]))
    # advantages (0, 1 | 2, 3) on the 4 masked tokens
    assert loss.item() == pytest.approx(-(0 * -1 + 1 * -2 + 2 * -0.5 + 3 * -0.5) / 4)
    loss.backward()
    torch.testing.assert_close(logp.grad, -torch.tensor([[0.0, 1, 0], [2, 3, 0]]) / 4)


def test_entropy_bonus_is_subtracted_token_mean():
    logp = torch.zeros(1, 3)
    rewards = torch.zeros(1, 3)
    mask = torch.tensor([[True, True, False]])
    entropy = torch.tensor([[1.0, 3.0, 100.0]])
    loss = reinforce_loss(logp, rewards, mask, entropy_coef=0.1, entropy=entropy)
    assert loss.item() == pytest.approx(-0.1 * 2.0)
    with pytest.raises(ValueError, match="entropy"):
        reinforce_loss(logp, rewards, mask, entropy_coef=0.1)


def _two_step_case():
    """Two-token sequences over a vocab of 3, student and teacher conditioned on y_1."""
    g = torch.Generator().manual_seed(5)
    th1 = torch.randn(3, generator=g, dtype=DT).requires_grad_()
    th2 = torch.randn(3, 3, generator=g, dtype=DT).requires_grad_()
    ph1, ph2 = torch.randn(3, generator=g, dtype=DT), torch.randn(3, 3, generator=g, dtype=DT)
    lp1, lp2 = F.log_softmax(th1, -1), F.log_softmax(th2, -1)
    lq1, lq2 = F.log_softmax(ph1, -1), F.log_softmax(ph2, -1)
    # Exact sequence-level reverse KL by enumerating all 9 sequences.
    seq_logp = lp1.unsqueeze(1) + lp2
    seq_logq = lq1.unsqueeze(1) + lq2
    exact = (seq_logp.exp() * (seq_logp - seq_logq)).sum()
    exact_grad = torch.autograd.grad(exact, (th1, th2))
    return th1, th2, ph1, ph2, exact_grad


def _two_step_estimates(case, reps, n):
    """``reps`` independent n-sample gradient estimates [reps, 12] of both estimators.

    Each repetition gets its own copy of the parameters, so one backward pass over the whole
    batch yields every repetition's gradient (reinforce_loss and single_step_kl are token means
    over the batch: x 2 tokens per sequence x reps turns them into per-repetition sequence means).
    """
    th1, th2, ph1, ph2, _ = case
    g = torch.Generator().manual_seed(11)
    t1 = th1.detach().repeat(reps, 1).requires_grad_()  # [reps, V]
    t2 = th2.detach().repeat(reps, 1, 1).requires_grad_()  # [reps, V, V]
    rep = torch.arange(reps).repeat_interleave(n)
    y1 = torch.multinomial(F.softmax(th1.detach(), -1), reps * n, replacement=True, generator=g)
    y2 = torch.multinomial(F.softmax(th2.detach()[y1], -1), 1, generator=g).squeeze(-1)
    s_logits = torch.stack([t1[rep], t2[rep, y1]], dim=1)  # [reps * n, 2, V]
    t_logits = torch.stack([ph1.expand(reps * n, 3), ph2[y1]], dim=1)
    tokens = torch.stack([y1, y2], dim=1).unsqueeze(-1)
    logp = F.log_softmax(s_logits, -1).gather(-1, tokens).squeeze(-1)  # [reps * n, 2]
    logq = F.log_softmax(t_logits, -1).gather(-1, tokens).squeeze(-1)
    mask = torch.ones(reps * n, 2, dtype=torch.bool)
    r = per_token_reverse_kl_reward(logq, logp)
    returns = discounted_returns(r, mask)
    scale = 2 * reps
    plain = scale * reinforce_loss(logp, returns, mask)
    decomposed = scale * single_step_kl(s_logits, t_logits, mask) + scale * reinforce_loss(
        logp, returns - r, mask
    )
    grads = []
    for loss in (plain, decomposed):
        parts = torch.autograd.grad(loss, (t1, t2), retain_graph=True)
        grads.append(torch.cat([part.flatten(1) for part in parts], dim=1))
    return grads


def test_reward_to_go_and_minillm_decomposition_are_unbiased_for_sequence_kl():
    case = _two_step_case()
    exact = torch.cat([g.flatten() for g in case[4]])
    reps = 40
    plain, decomposed = _two_step_estimates(case, reps=reps, n=400)
    for est in (plain, decomposed):
        sem = est.std(0) / math.sqrt(reps)
        assert torch.all((est.mean(0) - exact).abs() <= 4 * sem + 1e-12)
    # The exact single-step term removes the sampling noise of y_t from r_t: lower variance.
    assert decomposed.var(0).sum() < plain.var(0).sum()


# ----------------------------------------------------------------------------- single-step KL


def test_single_step_kl_value_and_gradient_match_exact_kl():
    g = torch.Generator().manual_seed(7)
    s = torch.randn(2, 3, 5, generator=g, dtype=DT, requires_grad=True)
    t = torch.randn(2, 3, 5, generator=g, dtype=DT)
    mask = torch.tensor([[True, True, False], [True, False, True]])
    value = single_step_kl(s, t, mask)
    (grad,) = torch.autograd.grad(value, s)
    s2 = s.detach().clone().requires_grad_()
    kl = kl_divergence(Categorical(logits=s2), Categorical(logits=t))  # [2, 3]
    ref = kl[mask].mean()
    (ref_grad,) = torch.autograd.grad(ref, s2)
    torch.testing.assert_close(value, ref)
    torch.testing.assert_close(grad, ref_grad)
    assert torch.all(grad[~mask] == 0)


def test_single_step_kl_zero_when_equal_and_teacher_gets_no_gradient():
    logits = torch.randn(1, 4, 6)
    t = logits.clone().requires_grad_()
    value = single_step_kl(logits, t, torch.ones(1, 4, dtype=torch.bool))
    assert value.item() == pytest.approx(0.0, abs=1e-6)
    assert not value.requires_grad


def test_single_step_kl_ignores_tokens_the_student_rules_out():
    s = torch.tensor([[[0.0, 0.0, -math.inf]]])
    t = torch.tensor([[[0.0, 0.0, 0.0]]])
    value = single_step_kl(s, t, torch.ones(1, 1, dtype=torch.bool))
    assert value.item() == pytest.approx(math.log(3 / 2), abs=1e-6)


# ----------------------------------------------------------------------------- returns


def test_discounted_returns_hand_example():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 0.0]])
    mask = torch.tensor([[True, True, True, False], [False, True, True, True]])
    out = discounted_returns(rewards, mask, gamma=0.5)
    expected = torch.tensor([[2.75, 3.5, 3.0, 0.0], [0.0, 1.5, 1.0, 0.0]])
    torch.testing.assert_close(out, expected)
    normed = discounted_returns(rewards, mask, gamma=0.5, length_normalize=True)
    remaining = torch.tensor([[3.0, 2.0, 1.0, 1.0], [3.0, 3.0, 2.0, 1.0]])
    torch.testing.assert_close(normed, expected / remaining)


def test_discounted_returns_skips_unmasked_positions():
    rewards = torch.tensor([[1.0, 100.0, 2.0]])
    mask = torch.tensor([[True, False, True]])
    out = discounted_returns(rewards, mask, gamma=0.5)
    torch.testing.assert_close(out, torch.tensor([[1.0 + 0.5 * 2.0, 0.0, 2.0]]))


def test_length_normalized_return_of_constant_reward_is_that_reward():
    rewards = torch.full((2, 5), -0.3)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    out = discounted_returns(rewards, mask, length_normalize=True)
    torch.testing.assert_close(out[mask], torch.full((8,), -0.3))


# ----------------------------------------------------------------------------- errors


def test_errors():
    x = torch.zeros(2, 3)
    m = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="shape"):
        per_token_reverse_kl_reward(x, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="NaN"):
        per_token_reverse_kl_reward(torch.full((2,), math.nan), torch.zeros(2))
    with pytest.raises(ValueError, match="no tokens"):
        reinforce_loss(x, x, torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        reinforce_loss(x, x, torch.ones(2, 3))
    with pytest.raises(ValueError, match="shape"):
        reinforce_loss(x, x, m, baseline=torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        reinforce_loss(x, torch.full((2, 3), math.nan), m)
    with pytest.raises(ValueError, match="entropy_coef"):
        reinforce_loss(x, x, m, entropy_coef=-1.0, entropy=x)
    with pytest.raises(ValueError, match="gamma"):
        discounted_returns(x, m, gamma=1.5)
    with pytest.raises(ValueError, match=r"\[B, T, V\]"):
        single_step_kl(x, x, m)
    with pytest.raises(ValueError, match="lam"):
        extrapolated_reward(x, x, -1.0)
    with pytest.raises(ValueError, match="rows"):
        verifier_augmented_reward(x, torch.zeros(2), 1.0, torch.tensor([[True] * 3, [False] * 3]))
    with pytest.raises(ValueError, match="shape"):
        verifier_augmented_reward(x, torch.zeros(3), 1.0, m)
