"""Chapter 5 simulations: the REINFORCE estimators against the exact reverse-KL gradient."""

import numpy as np
import pytest
import torch

from opd_lib.sim import reinforce

V, L = 3, 3


@pytest.fixture(scope="module")
def pair():
    return reinforce.random_table(V, L, 1.0, seed=1), reinforce.random_table(V, L, 1.5, seed=2)


def test_enumeration_covers_every_sequence_once():
    seqs = reinforce.all_sequences(V, L)
    assert seqs.shape == (V**L, L)
    assert len({tuple(s.tolist()) for s in seqs}) == V**L
    rows = reinforce.prefix_rows(seqs, V)
    assert rows[:, 0].eq(0).all()  # the empty prefix
    assert rows.max() == reinforce.n_prefixes(V, L) - 1


def test_sequence_probabilities_sum_to_one(pair):
    student, teacher = pair
    tab = reinforce.sequence_table(student, teacher, L)
    assert torch.isclose(tab.p.sum(), torch.tensor(1.0, dtype=torch.float64))


def test_exact_kl_is_zero_at_the_teacher_and_positive_elsewhere(pair):
    student, teacher = pair
    assert float(reinforce.exact_reverse_kl(teacher, teacher, L)) == pytest.approx(0.0, abs=1e-12)
    assert float(reinforce.exact_reverse_kl(student, teacher, L)) > 0.1
    assert reinforce.exact_gradient(teacher, teacher, L).abs().max() < 1e-12


def test_exact_kl_matches_an_independent_enumeration(pair):
    student, teacher = pair
    total = 0.0
    ls_t, lt_t = torch.log_softmax(student, -1), torch.log_softmax(teacher, -1)
    for seq in reinforce.all_sequences(V, L).tolist():
        row, ls, lt = 0, 0.0, 0.0
        for t, tok in enumerate(seq):
            ls += float(ls_t[row, tok])
            lt += float(lt_t[row, tok])
            # child row: offset of length t+1 prefixes + code of the prefix
            code = sum(seq[k] * V ** (t - k) for k in range(t + 1))
            row = (V ** (t + 1) - 1) // (V - 1) + code
        total += np.exp(ls) * (ls - lt)
    assert float(reinforce.exact_reverse_kl(student, teacher, L)) == pytest.approx(total, rel=1e-10)


@pytest.mark.parametrize("estimator", reinforce.UNBIASED)
@pytest.mark.parametrize("baseline", reinforce.BASELINES)
def test_unbiased_estimators_have_the_exact_gradient_as_mean(pair, estimator, baseline):
    student, teacher = pair
    mean, var = reinforce.estimator_moments(student, teacher, L, estimator, baseline)
    exact = reinforce.exact_gradient(student, teacher, L).reshape(-1)
    assert torch.allclose(mean, exact, atol=1e-12)
    assert var > 0


@pytest.mark.parametrize("estimator", ["length_normalized", "per_token"])
def test_reweighted_estimators_are_biased_but_downhill(pair, estimator):
    student, teacher = pair
    mean, _ = reinforce.estimator_moments(student, teacher, L, estimator, "none")
    exact = reinforce.exact_gradient(student, teacher, L).reshape(-1)
    assert (mean - exact).norm() > 1e-3
    assert float(mean @ exact) > 0


def test_variance_reductions_order(pair):
    student, teacher = pair
    var = {
        (e, b): reinforce.estimator_moments(student, teacher, L, e, b)[1]
        for e in ("sequence", "reward_to_go", "single_step")
        for b in ("none", "value")
    }
    assert var["reward_to_go", "none"] < var["sequence", "none"]
    assert var["reward_to_go", "value"] < var["reward_to_go", "none"]
    assert var["single_step", "none"] < var["reward_to_go", "none"]


@pytest.mark.parametrize("estimator", reinforce.GRADIENT_ESTIMATORS)
@pytest.mark.parametrize("baseline", ["none", "value"])
def test_pg_surrogate_gives_the_same_batch_gradient(pair, estimator, baseline):
    student, teacher = pair
    idx = np.array([0, 5, 5, 13, 26])
    seqs = reinforce.all_sequences(V, L)[idx]
    g, _ = reinforce.per_sequence_gradients(student, teacher, L, estimator, baseline)
    via_pg = reinforce.batch_gradient_via_pg(student, teacher, seqs, estimator, baseline)
    assert torch.allclose(via_pg, g[idx].mean(0), atol=1e-10)


def test_monte_carlo_error_falls_like_one_over_sqrt_n(pair):
    student, teacher = pair
    c = reinforce.monte_carlo_curve(student, teacher, L, "reward_to_go", "none", 1024, 16, seed=3)
    assert c.bias < 1e-10
    slope = np.polyfit(np.log(c.n), np.log(c.error), 1)[0]
    assert -0.65 < slope < -0.35
    # variance of the N-sample mean is the one-sample variance / N (within sampling noise)
    ratio = c.variance * c.n / c.exact_variance
    assert 0.4 < np.median(ratio) < 1.6


def test_monte_carlo_curve_is_deterministic(pair):
    student, teacher = pair
    a = reinforce.monte_carlo_curve(student, teacher, L, n_max=64, n_trials=4, seed=7)
    b = reinforce.monte_carlo_curve(student, teacher, L, n_max=64, n_trials=4, seed=7)
    np.testing.assert_array_equal(a.error, b.error)


def test_training_lowers_the_kl(pair):
    student, teacher = pair
    for est in ("exact", "single_step"):
        kls = reinforce.train_curves(student, teacher, L, est, "mean", batch=8, steps=40, lr=0.5)
        assert kls.shape == (41,)
        assert kls[-1] < 0.5 * kls[0]


def test_token_gradient_worked_numbers():
    g = reinforce.token_gradient(np.array([0.3, 0.4, 0.3]), np.array([0.7, 0.02, 0.28]), 0)
    assert g.reward == pytest.approx(np.log(0.7 / 0.3))
    assert g.gradient[0] == pytest.approx(np.log(0.7 / 0.3) * 0.7)
    assert g.score.sum() == pytest.approx(0.0)
    # the expected step is -grad KL at this position
    z = torch.tensor(np.log([0.3, 0.4, 0.3]), requires_grad=True)
    q = torch.softmax(z, -1)
    kl = (q * (q.log() - torch.tensor(np.log([0.7, 0.02, 0.28])))).sum()
    kl.backward()
    np.testing.assert_allclose(g.expected, -z.grad.numpy(), atol=1e-12)


def test_categorical_estimate_converges_to_exact_gradient():
    rng = np.random.default_rng(0)
    z = np.array([0.2, -1.0, 0.5, 1.3])
    t = np.log(np.array([0.1, 0.4, 0.3, 0.2]))
    q = np.exp(z - np.logaddexp.reduce(z))
    est = reinforce.categorical_reinforce_estimate(z, t, rng.choice(4, size=200_000, p=q))
    np.testing.assert_allclose(est, reinforce.categorical_exact_gradient(z, t), atol=0.01)
    # exact gradient matches autograd
    zt = torch.tensor(z, requires_grad=True)
    lq = torch.log_softmax(zt, -1)
    (lq.exp() * (lq - torch.tensor(t))).sum().backward()
    np.testing.assert_allclose(
        reinforce.categorical_exact_gradient(z, t), zt.grad.numpy(), atol=1e-12
    )


P_T = np.array([0.35, 0.25, 0.15, 0.10, 0.10, 0.05])
P_REF = np.array([0.12, 0.08, 0.30, 0.20, 0.15, 0.15])
CORRECT = np.array([1.0, 1.0, 0, 0, 0, 0])


def test_gopd_optimum_limits_and_extrapolation():
    np.testing.assert_allclose(reinforce.gopd_optimum(P_T, P_REF, 1.0), P_T)
    np.testing.assert_allclose(reinforce.gopd_optimum(P_T, P_REF, 0.0), P_REF)
    assert reinforce.gopd_optimum(P_T, P_REF, 2.0) @ CORRECT > P_T @ CORRECT
    np.testing.assert_allclose(reinforce.verifier_bonus_optimum(P_T, CORRECT, 0.0), P_T)
    assert reinforce.verifier_bonus_optimum(P_T, CORRECT, 1.0) @ CORRECT > P_T @ CORRECT


@pytest.mark.parametrize("lam", [0.5, 2.0])
def test_gopd_closed_form_is_the_optimum(lam):
    opt = reinforce.optimise_exact(P_T, "paper", lam, p_reference=P_REF)
    np.testing.assert_allclose(opt, reinforce.gopd_optimum(P_T, P_REF, lam), atol=1e-3)


def test_verifier_bonus_closed_form_is_the_optimum():
    opt = reinforce.optimise_exact(P_T, "verifier_bonus", 1.5, verifier=CORRECT)
    np.testing.assert_allclose(opt, reinforce.verifier_bonus_optimum(P_T, CORRECT, 1.5), atol=1e-3)


def test_sampled_optimisers_reach_the_closed_forms():
    paper = reinforce.optimise_sampled(P_T, "paper", 2.0, p_reference=P_REF, seed=1)
    bonus = reinforce.optimise_sampled(P_T, "verifier_bonus", 1.0, verifier=CORRECT, seed=1)
    np.testing.assert_allclose(paper, reinforce.gopd_optimum(P_T, P_REF, 2.0), atol=1e-3)
    expected = reinforce.verifier_bonus_optimum(P_T, CORRECT, 1.0)
    np.testing.assert_allclose(bonus, expected, atol=1e-3)


def test_bad_inputs_raise_value_errors(pair):
    student, teacher = pair
    with pytest.raises(ValueError, match="estimator"):
        reinforce.per_sequence_gradients(student, teacher, L, "bogus")
    with pytest.raises(ValueError, match="baseline"):
        reinforce.per_sequence_gradients(student, teacher, L, "sequence", "bogus")
    with pytest.raises(ValueError, match="shape"):
        reinforce.exact_reverse_kl(student[:-1], teacher, L)
    with pytest.raises(ValueError, match="vocab"):
        reinforce.random_table(1, 3)
    with pytest.raises(ValueError, match="tokens outside"):
        reinforce.prefix_rows(torch.tensor([[0, 5]]), 3)
    with pytest.raises(ValueError, match="p_teacher"):
        reinforce.gopd_optimum(np.array([0.5, 0.6]), np.array([0.5, 0.5]), 2.0)
    with pytest.raises(ValueError, match="lam"):
        reinforce.gopd_optimum(P_T, P_REF, -1.0)
    with pytest.raises(ValueError, match="form"):
        reinforce.optimise_exact(P_T, "other", 1.0)
    with pytest.raises(ValueError, match="p_reference"):
        reinforce.optimise_sampled(P_T, "paper", 1.0)
    with pytest.raises(ValueError, match="token"):
        reinforce.token_gradient(np.array([0.5, 0.5]), np.array([0.5, 0.5]), 2)
    with pytest.raises(ValueError, match="steps"):
        reinforce.train_curves(student, teacher, L, steps=0)
