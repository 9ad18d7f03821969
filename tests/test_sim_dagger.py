import numpy as np
import pytest

from opd_lib import bounds
from opd_lib.sim import dagger as dg


@pytest.fixture(scope="module")
def problem():
    return dg.make_track_problem(wind=0.05, half_width=4)


@pytest.fixture(scope="module")
def trained(problem):
    bc = dg.behaviour_cloning(problem, 100, n_rollouts=20, seed=0)
    run = dg.dagger(problem, 100, n_rollouts=20, n_iterations=4, seed=0)
    return bc, run


def test_expert_stays_on_track_and_makes_no_mistakes(problem):
    expert = dg.expert_policy(problem)
    np.testing.assert_allclose(dg.expected_cost(problem, expert, 50), 0.0)
    dist = dg.state_distributions(problem, expert, 50)
    np.testing.assert_allclose(dist[:, problem.start_index], 1.0)
    runs = dg.rollout(problem, expert, 30, n_rollouts=50, seed=2)
    assert not runs.mistakes.any() and np.all(runs.offsets == problem.start_index)


def test_expert_steers_back_from_every_offset(problem):
    # From any offset, with no gust, the expert's action moves one step towards the centre.
    calm = 1
    for i, d in enumerate(problem.offsets):
        nxt = problem.offsets[problem.next_index[i, calm, problem.expert_actions[i, calm]]]
        assert nxt == d - np.sign(d)


def test_behaviour_cloning_sees_only_the_track_and_goes_straight_off_it(problem, trained):
    bc, _ = trained
    assert bc.seen.tolist() == [i == problem.start_index for i in range(problem.n_offsets)]
    assert np.all(bc.actions == dg.STRAIGHT)


def test_dagger_learns_to_steer_back(problem, trained):
    _, run = trained
    learned = dg.ACTIONS[run.final.actions]
    seen = run.final.seen
    assert seen.sum() > 3
    np.testing.assert_array_equal(learned[seen], -np.sign(problem.offsets[seen]))


def test_first_dagger_iteration_is_behaviour_cloning(problem, trained):
    bc, run = trained
    np.testing.assert_array_equal(run.learners[0].actions, bc.actions)
    np.testing.assert_array_equal(run.learners[0].counts, bc.counts)
    assert run.betas == [1.0, 0.0, 0.0, 0.0]


def test_dagger_is_cheaper_than_behaviour_cloning_at_large_T(problem, trained):
    bc, run = trained
    T = 200
    c_bc = dg.expected_cost(problem, dg.learner_policy(problem, bc), T)
    c_dag = dg.expected_cost(problem, dg.learner_policy(problem, run.final), T)
    assert np.all(c_dag <= c_bc + 1e-12)
    assert c_bc[-1] > 10 * c_dag[-1]


def test_the_bounds_hold(problem, trained):
    bc, run = trained
    expert = dg.expert_policy(problem)
    steps = np.arange(1, 301)
    pi_bc = dg.learner_policy(problem, bc)
    eps_bc = dg.error_rate_under(problem, pi_bc, 300, expert)
    assert eps_bc == pytest.approx(problem.wind)
    assert np.all(
        dg.expected_cost(problem, pi_bc, 300)
        <= bounds.dagger_bound_off_policy(eps_bc, steps) + 1e-9
    )
    # On its own distribution the on-policy statement is an identity: J = T * eps_own.
    pi_dag = dg.learner_policy(problem, run.final)
    eps_own = dg.error_rate_under(problem, pi_dag, 100, pi_dag)
    assert dg.expected_cost(problem, pi_dag, 100)[-1] == pytest.approx(100 * eps_own)


def test_exact_cost_agrees_with_monte_carlo(problem, trained):
    bc, run = trained
    for learner in (bc, run.final):
        pi = dg.learner_policy(problem, learner)
        exact = dg.expected_cost(problem, pi, 60)
        mc = dg.monte_carlo_cost(problem, pi, 60, n_rollouts=4000, seed=5)
        assert np.max(np.abs(mc - exact)) < 0.05 * exact[-1] + 0.05


def test_mixed_policy_monte_carlo(problem, trained):
    bc, _ = trained
    mixed = dg.mix_policies(dg.expert_policy(problem), dg.learner_policy(problem, bc), 0.5)
    exact = dg.expected_cost(problem, mixed, 40)
    mc = dg.monte_carlo_cost(problem, mixed, 40, n_rollouts=4000, seed=1)
    assert abs(mc[-1] - exact[-1]) < 0.05 * exact[-1] + 0.05


def test_per_step_bound_matches_the_closed_form():
    assert dg.off_policy_bound_by_step(np.full(30, 0.04)) == pytest.approx(
        bounds.dagger_bound_off_policy(0.04, 30)
    )
    assert dg.off_policy_bound_by_step([0.3, 0.0, 0.0]) == pytest.approx(0.9)
    assert dg.off_policy_bound_by_step([0.0, 0.0, 0.3]) == pytest.approx(0.3)


def test_training_error_matches_sampled_labels(problem, trained):
    _, run = trained
    exact = dg.aggregate_training_error(problem, run.final, run, 100)
    counts = run.final.counts
    wrong = counts.sum() - counts[np.arange(problem.n_offsets), run.final.actions].sum()
    assert wrong / counts.sum() == pytest.approx(exact, abs=0.01)


def test_everything_is_deterministic_given_the_seed(problem):
    a = dg.dagger(problem, 50, n_rollouts=5, n_iterations=3, seed=7)
    b = dg.dagger(problem, 50, n_rollouts=5, n_iterations=3, seed=7)
    for la, lb in zip(a.learners, b.learners, strict=True):
        np.testing.assert_array_equal(la.counts, lb.counts)
    r1 = dg.rollout(problem, dg.expert_policy(problem), 20, 10, seed=3)
    r2 = dg.rollout(problem, dg.expert_policy(problem), 20, 10, seed=3)
    np.testing.assert_array_equal(r1.winds, r2.winds)


def test_fallback_is_the_majority_label(problem):
    learner = dg.fit_tabular(problem, [4, 4, 4, 5], [1, 1, 0, 2])
    assert learner.actions[4] == 1 and learner.actions[5] == 2
    assert np.all(learner.actions[[0, 1, 2, 3, 6, 7, 8]] == 1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: dg.make_track_problem(wind=0.8), "wind"),
        (lambda p: dg.make_track_problem(wind=-0.1), "wind"),
        (lambda p: dg.make_track_problem(half_width=0), "half_width"),
        (lambda p: dg.expected_cost(p, np.ones((3, 3, 3)), 5), "shape"),
        (lambda p: dg.expected_cost(p, np.ones((9, 3, 3)), 5), "probability"),
        (lambda p: dg.expected_cost(p, dg.expert_policy(p), 0), "T must"),
        (lambda p: dg.rollout(p, dg.expert_policy(p), 5, n_rollouts=0), "n_rollouts"),
        (lambda p: dg.dagger(p, 10, n_iterations=0), "n_iterations"),
        (lambda p: dg.dagger(p, 10, mixing=1.5), "mixing"),
        (lambda p: dg.mix_policies(dg.expert_policy(p), dg.expert_policy(p), 2.0), "beta"),
        (lambda p: dg.fit_tabular(p, [0, 1], [1]), "same positive number"),
        (lambda p: dg.fit_tabular(p, [0, 99], [1, 1]), "offset indices"),
        (lambda p: dg.fit_tabular(p, [0, 1], [1, 3]), "labels"),
        (lambda p: dg.off_policy_bound_by_step([]), "non-empty"),
        (lambda p: dg.off_policy_bound_by_step([0.1, 1.5]), r"\[0, 1\]"),
    ],
)
def test_bad_input_is_named(problem, call, message):
    with pytest.raises(ValueError, match=message):
        call(problem)
