"""opd_lib.sim.gkd_toy: the toy GKD task, its exact metrics and its training loop."""

import time

import numpy as np
import pytest
import torch

from opd_lib.divergences import token_divergence
from opd_lib.gkd import lambda_schedule
from opd_lib.sim import gkd_toy as toy


def test_teacher_table_is_a_bimodal_markov_chain():
    p = toy.teacher_table(0.01)
    assert p.shape == (toy.VOCAB + 1, toy.VOCAB)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    ok = toy.valid_transitions(p)
    assert (ok.sum(axis=1) == 2).all()  # two valid continuations everywhere
    assert ok[toy.BOS, 0] and ok[toy.BOS, 3]
    for s in toy.JUNK:  # the teacher recovers from junk
        assert ok[s, 0] and ok[s, 3]
    with pytest.raises(ValueError, match="teacher_noise"):
        toy.teacher_table(0.0)


def test_metrics_of_the_teacher_itself():
    p = toy.teacher_table(0.01)
    m = toy.student_metrics(p, p, 10)
    assert m.rkl == pytest.approx(0.0, abs=1e-12)
    assert m.mistakes == pytest.approx(10 * 0.01)  # a constant slip rate per step
    assert m.valid == pytest.approx(0.99**10)
    assert m.teacher_loglik == pytest.approx((p * np.log(p)).sum(axis=1)[0])
    assert m.mode_a == pytest.approx(p[toy.BOS, 0])


def test_exact_metrics_agree_with_sampling():
    p = toy.teacher_table(0.01)
    q = toy.student_probs(toy.initial_student(3), 0.2)
    exact = toy.student_metrics(q, p, 6)
    states, tokens = toy.sample_sequences(q, 40_000, 6, np.random.default_rng(0))
    ok = toy.valid_transitions(p)[states, tokens]
    assert (~ok).sum(axis=1).mean() == pytest.approx(exact.mistakes, rel=0.02)
    assert ok.all(axis=1).mean() == pytest.approx(exact.valid, abs=0.01)
    ll = np.log(p[states, tokens]).mean()
    assert ll == pytest.approx(exact.teacher_loglik, rel=0.02)


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
def test_numpy_gradient_matches_token_divergence(beta):
    p = toy.teacher_table(0.05)
    logits = toy.initial_student(1)
    floor = 0.1
    value, grad = toy.divergence_grad(p, logits, beta, floor)
    w = torch.tensor(logits, requires_grad=True)
    q = (1 - floor) * torch.softmax(w, -1) + floor / toy.VOCAB
    ref = token_divergence(q.log(), torch.from_numpy(np.log(p)), kind="jsd", beta=beta)
    ref.sum().backward()
    np.testing.assert_allclose(value, ref.detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grad, w.grad.numpy(), rtol=1e-7, atol=1e-10)


def test_curated_dataset_has_no_invalid_transition():
    p = toy.teacher_table(0.05)
    states = toy.curated_dataset(p, 50, 12, np.random.default_rng(0))
    assert states.shape == (50, 12)
    assert not np.isin(states, toy.JUNK).any()


def test_training_is_deterministic_and_improves():
    a = toy.train_gkd_toy(0.5, 0.5, steps=40, seed=1)
    b = toy.train_gkd_toy(0.5, 0.5, steps=40, seed=1)
    np.testing.assert_array_equal(a.student, b.student)
    assert a.curve("mistakes")[-1] < 0.2 * a.curve("mistakes")[0]
    assert list(a.steps) == list(range(0, 41, 5))


def test_on_policy_beats_off_policy_on_own_generations():
    off = toy.train_gkd_toy(0.0, 0.0, seed=0).final
    on = toy.train_gkd_toy(1.0, 0.0, seed=0).final
    assert on.mistakes < 0.6 * off.mistakes
    assert on.teacher_loglik > off.teacher_loglik
    assert on.rkl < off.rkl


def test_a_schedule_is_accepted():
    lams = [lambda_schedule(s, 30) for s in range(30)]
    run = toy.train_gkd_toy(lams, 0.5, steps=30)
    assert run.lam == "schedule"


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(lam=1.5, beta=0.5),
        dict(lam=0.5, beta=-0.1),
        dict(lam=[0.1, 0.2], beta=0.5, steps=3),
        dict(lam=0.5, beta=0.5, steps=0),
        dict(lam=0.5, beta=0.5, floor=1.0),
    ],
)
def test_bad_input_raises(kwargs):
    with pytest.raises(ValueError):
        toy.train_gkd_toy(**kwargs)


def test_the_grid_is_fast():
    start = time.perf_counter()
    grid = toy.train_grid()
    assert len(grid) == 9
    assert time.perf_counter() - start < 10  # ~1 s on a quiet 2-core CPU
