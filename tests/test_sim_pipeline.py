"""opd_lib.sim.pipeline: every method on Chapter 4's toy task, Chapter 8's simulator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from opd_lib import pg, rl
from opd_lib.sim import gkd_toy, pipeline

FAST = dict(steps=20, eval_every=5)


@pytest.mark.parametrize(
    "method, lam, beta", [("KD", 0.0, 0.0), ("GKD", 0.5, 0.5), ("GKD", 0.25, 1.0), ("OPD", 1, 1)]
)
def test_distillation_methods_reproduce_the_gkd_toy_draw_for_draw(method, lam, beta):
    run = pipeline.train_pipeline(method, lam, beta, **FAST)
    ref = gkd_toy.train_gkd_toy(lam, beta, **FAST)
    np.testing.assert_array_equal(run.steps, ref.steps)
    np.testing.assert_allclose(run.divergence, ref.curve("rkl"), rtol=1e-9)
    np.testing.assert_allclose(run.student, ref.student, atol=1e-12)


def _logq(logits: torch.Tensor, floor: float) -> torch.Tensor:
    return torch.log((1 - floor) * torch.softmax(logits, -1) + floor / gkd_toy.VOCAB)


def test_the_sft_gradient_is_the_cross_entropy_gradient():
    rng = np.random.default_rng(1)
    logits, floor = rng.normal(size=(gkd_toy.VOCAB + 1, gkd_toy.VOCAB)), 0.04
    states = rng.integers(0, gkd_toy.VOCAB + 1, (4, 6))
    tokens = rng.integers(0, gkd_toy.VOCAB, (4, 6))
    z = torch.tensor(logits, requires_grad=True)
    loss = -_logq(z, floor)[states, tokens].mean()
    loss.backward()
    got = pipeline._count_grad(states, tokens, 1.0, logits, floor)
    np.testing.assert_allclose(got, z.grad.numpy(), atol=1e-12)


def test_the_rl_gradient_is_the_reinforce_surrogates():
    rng = np.random.default_rng(2)
    logits, floor = rng.normal(size=(gkd_toy.VOCAB + 1, gkd_toy.VOCAB)), 0.04
    states = rng.integers(0, gkd_toy.VOCAB + 1, (8, 5))
    tokens = rng.integers(0, gkd_toy.VOCAB, (8, 5))
    advantage = rl.group_advantages(torch.as_tensor(rng.random(8)), group_size=8)
    z = torch.tensor(logits, requires_grad=True)
    logp = _logq(z, floor)[states, tokens]
    mask = torch.ones_like(logp, dtype=torch.bool)
    pg.reinforce_loss(logp, advantage[:, None].expand_as(logp), mask).backward()
    got = pipeline._count_grad(states, tokens, advantage.numpy()[:, None], logits, floor)
    np.testing.assert_allclose(got, z.grad.numpy(), atol=1e-12)


def test_mode_coverage_counts_the_teachers_modes():
    teacher = gkd_toy.teacher_table()
    assert pipeline.mode_coverage(teacher, teacher) == pytest.approx(1.0)
    one_mode = teacher.copy()
    one_mode[gkd_toy.BOS] = 0.0
    one_mode[gkd_toy.BOS, 0] = 1.0
    assert pipeline.mode_coverage(one_mode, teacher) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(
    "method, lam, expected",
    [
        ("SFT", 0.0, 1.0),
        ("KD", 0.0, 1.0),
        ("GKD", 0.5, 3.5),
        ("OPD", 1.0, 6.0),
        ("RL", 1.0, 2.0),
        ("OPSD", 1.0, 3.0),
    ],
)
def test_cost_per_step_worked_numbers(method, lam, expected):
    # batch 2 x length 3 = 6 tokens; a teacher token costs 4 student tokens
    assert pipeline.cost_per_step(method, lam, 2, 3, 4.0) == pytest.approx(6 * expected)


@pytest.mark.parametrize("method", pipeline.METHODS)
def test_every_method_learns_and_reports_sane_curves(method):
    run = pipeline.train_pipeline(method, **FAST)
    again = pipeline.train_pipeline(method, **FAST)
    np.testing.assert_array_equal(run.divergence, again.divergence)
    assert run.reward[-1] > run.reward[0]
    assert run.divergence[-1] < run.divergence[0]
    assert ((run.coverage >= 0) & (run.coverage <= 1)).all()
    assert ((run.reward >= 0) & (run.reward <= 1)).all()
    assert (np.diff(run.cost) > 0).all()
    assert run.curve("cost") is run.cost


def test_only_methods_with_a_dataset_pay_for_it():
    assert pipeline.train_pipeline("OPD", **FAST).cost[0] == 0.0
    assert pipeline.train_pipeline("SFT", **FAST).cost[0] == 64 * 16 * 4.0


def test_run_grid_holds_every_method_once_and_gkd_per_setting():
    runs = pipeline.run_grid((0.0, 1.0), (0.5,), steps=5, eval_every=5)
    assert set(runs) == {
        ("GKD", 0.0, 0.5),
        ("GKD", 1.0, 0.5),
        ("SFT", 0.0, 0.0),
        ("KD", 0.0, 0.0),
        ("OPD", 1.0, 1.0),
        ("RL", 1.0, 0.0),
        ("OPSD", 1.0, 0.0),
    }


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: pipeline.setting("PPO"), "unknown method 'PPO'"),
        (lambda: pipeline.setting("GKD", lam=1.5), "lam must lie"),
        (lambda: pipeline.setting("GKD", beta=-0.1), "beta must lie"),
        (lambda: pipeline.train_pipeline("RL", batch_size=1), "batch_size >= 2"),
        (lambda: pipeline.train_pipeline("OPD", steps=0), "steps"),
        (lambda: pipeline.train_pipeline("OPD", floor=1.0), "floor"),
        (lambda: pipeline.train_pipeline("OPD", teacher_cost=-1), "teacher_cost"),
        (lambda: pipeline.run_grid((), (0.5,)), "must not be empty"),
        (lambda: pipeline.train_pipeline("OPD", **FAST).curve("loss"), "unknown curve"),
    ],
)
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
