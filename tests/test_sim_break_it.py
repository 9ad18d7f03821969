import numpy as np
import pytest
import torch

from opd_lib import divergences
from opd_lib.sim import break_it as bi
from opd_lib.spin import spin_loss

# ------------------------------------------------------------------------------ 1. loops


def test_next_token_probs_is_a_distribution_and_copies_more_with_longer_runs():
    pair = bi.make_copy_pair()
    for prefix_ids in ([], [3], [0, 0], [0, 0, 0, 0, 0]):
        p = bi.next_token_probs(pair.teacher, prefix_ids)
        assert p.shape == (bi.V,) and p.min() > 0 and p.sum() == pytest.approx(1.0)
    repeat = [bi.next_token_probs(pair.teacher, [0] * r)[0] for r in range(1, 8)]
    assert np.all(np.diff(repeat) > 0)  # self-reinforcement


def test_a_teacher_without_copying_gives_the_base_bigram():
    pair = bi.make_copy_pair(teacher_copy=0.0)
    p = bi.next_token_probs(pair.teacher, [2, 2, 2, 2])
    base = np.exp(pair.teacher.bigram[2]) / np.exp(pair.teacher.bigram[2]).sum()
    np.testing.assert_allclose(p, base)


def test_score_rollout_matches_direct_computation():
    pair = bi.make_copy_pair()
    tokens = [1, 3, 5, 0, 0, 0]
    s = bi.score_rollout(pair, tokens)
    for t, tok in enumerate(tokens):
        p_t = bi.next_token_probs(pair.teacher, tokens[:t])
        p_s = bi.next_token_probs(pair.student, tokens[:t])
        assert s.reward[t] == pytest.approx(np.log(p_t[tok]) - np.log(p_s[tok]))
        assert s.reverse_kl[t] == pytest.approx(float(divergences.reverse_kl(p_t, p_s)))
    assert s.teacher_repeat[0] == 0.0


def test_a_copying_teacher_stops_penalising_a_loop():
    loop = [0] * 30
    honest = bi.score_rollout(bi.make_copy_pair(teacher_copy=0.0), loop)
    copying = bi.score_rollout(bi.make_copy_pair(teacher_copy=0.9), loop)
    assert honest.reward[5:].max() < -3  # a teacher without copying keeps penalising
    assert copying.reward[-1] > -0.2  # a copying teacher barely minds by the end
    assert copying.teacher_repeat[-1] > 0.8


def test_sampling_is_deterministic_and_in_range():
    lm = bi.make_copy_pair().student
    a = bi.copy_lm_rollouts(lm, 5, 12, seed=3)
    np.testing.assert_array_equal(a, bi.copy_lm_rollouts(lm, 5, 12, seed=3))
    assert a.shape == (5, 12) and a.min() >= 0 and a.max() < bi.V


def test_longest_run():
    np.testing.assert_array_equal(bi.longest_run(np.array([[1, 2, 2, 2, 3], [4, 5, 6, 7, 8]])),
                                  [3, 1])  # fmt: skip


def test_loop_report_repetition_filter_catches_loops_perplexity_does_not():
    pair = bi.make_copy_pair(student_self_logit=0.0)
    rollouts = bi.copy_lm_rollouts(pair.student, 64, 40, seed=0)
    rep = bi.loop_report(pair, rollouts)
    assert rep.is_loop.any() and (~rep.is_loop).any()
    assert not rep.keep_repetition[rep.is_loop].any()
    # perplexity thresholds that keep all ordinary text keep every loop too
    assert rep.keep_ppl_student[rep.is_loop].all()
    assert rep.keep_ppl_student[~rep.is_loop].all()


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="teacher_copy"):
        bi.make_copy_pair(teacher_copy=1.0)
    with pytest.raises(ValueError, match="token ids"):
        bi.score_rollout(bi.make_copy_pair(), [0, 99])
    with pytest.raises(ValueError, match="empty"):
        bi.score_rollout(bi.make_copy_pair(), [])
    with pytest.raises(ValueError, match="rollouts"):
        bi.loop_report(bi.make_copy_pair(), np.zeros(5, dtype=int))


# ------------------------------------------------------------------------------- 2. SPIN


def test_expected_spin_loss_is_the_mean_of_spin_loss_over_enumerated_pairs():
    # p_data = (2, 1, 1)/4 and pi_ref = (1, 2, 1)/4: replicate pairs by their counts.
    p_data = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    ref = torch.log(torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64))
    theta = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    chosen = torch.tensor([0, 0, 1, 2]).repeat_interleave(4)
    rejected = torch.tensor([0, 1, 1, 2]).repeat(4)
    logp, ref_logp = torch.log_softmax(theta, 0), torch.log_softmax(ref, 0)
    sampled = spin_loss(logp[chosen], logp[rejected], ref_logp[chosen], ref_logp[rejected], 0.7)
    exact = bi.expected_spin_loss(theta, ref, p_data, 0.7)
    assert exact.item() == pytest.approx(sampled.item())


def test_spin_gradient_at_round_start_is_half_beta_times_the_gap():
    p_data = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    theta = torch.tensor([0.0, 0.5, -0.5], dtype=torch.float64, requires_grad=True)
    beta = 0.8
    (g,) = torch.autograd.grad(bi.expected_spin_loss(theta, theta.detach(), p_data, beta), theta)
    pi = torch.softmax(theta.detach(), 0)
    torch.testing.assert_close(g, -(beta / 2) * (p_data - pi))


def test_spin_saturates_at_the_data_and_fresh_data_restarts_it():
    p_data = np.array([0.3, 0.2, 0.2, 0.15, 0.1, 0.05])
    reward = np.array([1.0, 1, 0, 0, 0, 0])
    run = bi.spin_break(p_data, reward)
    assert run.stale.tv[-1] < 0.01 and run.stale.grad_norm[-1] < 1e-3
    assert abs(run.stale.margin[-1]) < 1e-3 < run.stale.margin[0]
    assert run.stale.reward[-1] == pytest.approx(p_data @ reward, abs=0.01)
    assert run.fresh_data[2:].max() < 0.01  # the verifier dropped the wrong answers
    assert run.fresh.grad_norm[0] > 10 * run.stale.grad_norm[-1]
    assert run.fresh.reward[-1] > 0.95


def test_expected_spin_margin_is_zero_when_data_equals_opponent():
    a = np.array([0.2, 0.3, 0.5])
    assert bi.expected_spin_margin(a, a, np.array([0.1, 0.1, 0.8])) == pytest.approx(0.0)


def test_spin_bad_inputs_raise():
    with pytest.raises(ValueError, match="probability"):
        bi.spin_phase(np.array([0.5, 0.6]), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="accepted none"):
        bi.verifier_filtered_data(np.array([0.5, 0.5]), np.zeros(2), 10)


# ------------------------------------------------------------------- 3. forward KL averages


def test_forward_kl_decodes_between_the_answers_reverse_kl_on_one():
    res = bi.averaging_answers(rkl_starts=(2.0, 14.0))
    assert res.greedy["fkl"] not in res.answers
    assert res.answers[0] < res.greedy["fkl"] < res.answers[1]
    assert res.teacher_prob["fkl"] < 0.01
    assert res.greedy["rkl from 2"] == 4 and res.greedy["rkl from 14"] == 12


def test_gaussian_moments_and_the_fkl_fit_agree():
    res = bi.averaging_answers(rkl_starts=())
    mean, std = bi.gaussian_moments(res.teacher.x, res.teacher.probs)
    assert mean == pytest.approx(0.6 * 4 + 0.4 * 12, abs=1e-3)
    assert std == pytest.approx(np.sqrt(1 + 0.6 * 0.4 * 8**2), abs=0.02)
    assert res.fits["fkl"].mean == pytest.approx(mean, abs=0.6)  # truncation to the grid


def test_averaging_bad_inputs_raise():
    with pytest.raises(ValueError, match="answers"):
        bi.averaging_answers(answers=(12, 4))
    with pytest.raises(ValueError, match="probability"):
        bi.gaussian_moments(np.arange(3.0), np.array([0.5, 0.5, 0.5]))
