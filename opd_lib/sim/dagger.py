"""Chapter 2: behaviour cloning versus DAgger on a problem whose expert is known exactly.

The *windy track* is the smallest imitation problem in which recovery matters and can be learned.

* The state is an integer offset ``d`` from the centre of a track,
  ``-half_width <= d <= half_width`` (``d = 0``: on track), together with this step's gust of
  wind ``w`` in {-1, 0, +1}. A gust blows with probability ``wind`` (left or right with equal
  odds) and is redrawn independently every step.
* The actions are "steer left", "straight" and "steer right" (-1, 0, +1). The next offset is
  ``clip(d + a + w, -half_width, half_width)``.
* The **expert** sees the gust and steers so that the next offset is one step closer to the centre
  (or stays at 0): ``a* = clip(target - d - w, -1, 1)`` with ``target = d - sign(d)``. Started on
  the track it never leaves it, so expert demonstrations contain only ``d = 0``.
* A **learner** sees only the offset, not the gust (state aliasing: the deliberately limited
  capacity that leaves it a steady per-step error). It is a table fitted by majority vote over the
  expert's labels at each offset; at an offset with no data it falls back on the most common action
  in its whole training set.

A *mistake* is a step at which the learner's action differs from what the expert would do in the
same state; the cost of a run of ``T`` steps is its number of mistakes (the expert's cost is 0).

Behaviour cloning trains on expert trajectories only, so it has no data off the track and keeps
going straight there: one gust and it drifts, making a mistake nearly every step. DAgger rolls out
its own policy, has the expert label the states it visits, aggregates and refits, and so learns to
steer back. All computations are exact (probability propagation over the offsets) except
:func:`rollout`, :func:`behaviour_cloning` and :func:`dagger`, which sample and take a ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

ACTIONS = np.array([-1, 0, 1])
"""Action values by index: steer left, straight, steer right."""
WINDS = np.array([-1, 0, 1])
"""Gust values by index: push left, calm, push right."""
STRAIGHT = 1
"""Index of the "straight" action."""


@dataclass(frozen=True, eq=False)
class TrackProblem:
    """The windy track (see the module docstring). Build it with :func:`make_track_problem`.

    ``expert_actions[i, j]`` is the expert's action index at offset ``offsets[i]`` under gust
    ``WINDS[j]``; ``next_index[i, j, k]`` is the index of the next offset after action ``k``.
    """

    wind: float
    half_width: int
    offsets: np.ndarray = field(repr=False)
    wind_probs: np.ndarray = field(repr=False)
    expert_actions: np.ndarray = field(repr=False)
    next_index: np.ndarray = field(repr=False)

    @property
    def n_offsets(self) -> int:
        return len(self.offsets)

    @property
    def start_index(self) -> int:
        """Index of offset 0 (every run starts on the track)."""
        return self.half_width


@dataclass(frozen=True, eq=False)
class Learner:
    """A fitted table: ``actions[i]`` is the action index chosen at offset index ``i`` (whatever the
    gust, which the learner cannot see); ``counts[i, k]`` counts expert labels ``k`` seen there."""

    actions: np.ndarray
    counts: np.ndarray

    @property
    def seen(self) -> np.ndarray:
        """Boolean mask of the offsets the learner has training data for."""
        return self.counts.sum(axis=1) > 0


@dataclass(frozen=True, eq=False)
class Rollouts:
    """Sampled runs, each array ``[n_rollouts, T]``: offset indices visited, gust indices, action
    indices taken, and the expert's action indices in the same states."""

    offsets: np.ndarray
    winds: np.ndarray
    actions: np.ndarray
    expert_actions: np.ndarray

    @property
    def mistakes(self) -> np.ndarray:
        """Boolean ``[n_rollouts, T]``: True where the action taken differs from the expert's."""
        return self.actions != self.expert_actions


@dataclass(frozen=True, eq=False)
class DaggerRun:
    """The output of :func:`dagger`: the learner after each iteration (``learners[0]`` is trained on
    expert rollouts only, i.e. it is behaviour cloning), the expert-mixing weight ``betas[i]`` and
    the (possibly mixed) policy ``rollout_policies[i]`` whose runs were labelled in iteration i."""

    learners: list[Learner]
    betas: list[float]
    rollout_policies: list[np.ndarray]

    @property
    def final(self) -> Learner:
        return self.learners[-1]


def make_track_problem(wind: float = 0.05, half_width: int = 4) -> TrackProblem:
    """Build the windy track: gust probability ``wind``, offsets ``-half_width..half_width``."""
    if not np.isfinite(wind) or not 0.0 <= wind < 2.0 / 3.0:
        raise ValueError(
            f"wind must lie in [0, 2/3) so that 'no gust' stays the most likely case, got {wind}"
        )
    if int(half_width) != half_width or half_width < 1:
        raise ValueError(f"half_width must be a whole number >= 1, got {half_width}")
    half_width = int(half_width)
    offsets = np.arange(-half_width, half_width + 1)
    d = offsets[:, None]
    target = d - np.sign(d)
    expert_values = np.clip(target - d - WINDS[None, :], -1, 1)
    expert_actions = expert_values + 1  # value -> index
    nxt = d[:, :, None] + WINDS[None, :, None] + ACTIONS[None, None, :]
    next_index = np.clip(nxt, -half_width, half_width) + half_width
    wind_probs = np.array([wind / 2.0, 1.0 - wind, wind / 2.0])
    return TrackProblem(float(wind), half_width, offsets, wind_probs, expert_actions, next_index)


def expert_policy(problem: TrackProblem) -> np.ndarray:
    """The expert as a one-hot array ``[n_offsets, 3 gusts, 3 actions]`` of action probabilities."""
    return np.eye(3)[problem.expert_actions]


def learner_policy(problem: TrackProblem, learner: Learner) -> np.ndarray:
    """A learner as a policy array ``[n_offsets, 3 gusts, 3 actions]`` (same row for every gust)."""
    if learner.actions.shape != (problem.n_offsets,):
        raise ValueError(
            f"learner has {learner.actions.shape} actions, "
            f"the problem has {problem.n_offsets} offsets"
        )
    one_hot = np.eye(3)[learner.actions]
    return np.repeat(one_hot[:, None, :], 3, axis=1)


def mix_policies(expert: np.ndarray, learner: np.ndarray, beta: float) -> np.ndarray:
    """DAgger's rollout policy: at each step follow the expert with probability ``beta``."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    return beta * expert + (1.0 - beta) * learner


def _check_policy(problem: TrackProblem, policy: np.ndarray) -> np.ndarray:
    policy = np.asarray(policy, dtype=float)
    if policy.shape != (problem.n_offsets, 3, 3):
        raise ValueError(
            f"policy must have shape ({problem.n_offsets}, 3, 3) (offset, gust, action), "
            f"got {policy.shape}"
        )
    if np.any(policy < 0) or not np.allclose(policy.sum(axis=2), 1.0):
        raise ValueError("policy rows must be probability distributions over the 3 actions")
    return policy


def _check_horizon(T: int, name: str = "T") -> int:
    if int(T) != T or T < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {T}")
    return int(T)


def mistake_probability(problem: TrackProblem, policy: np.ndarray) -> np.ndarray:
    """Per-offset probability that ``policy`` disagrees with the expert (averaged over the gust)."""
    policy = _check_policy(problem, policy)
    agree = np.take_along_axis(policy, problem.expert_actions[:, :, None], axis=2)[:, :, 0]
    return (1.0 - agree) @ problem.wind_probs


def transition_matrix(problem: TrackProblem, policy: np.ndarray) -> np.ndarray:
    """``P[i, j]`` = probability of moving from offset index i to j in one step under ``policy``."""
    policy = _check_policy(problem, policy)
    n = problem.n_offsets
    P = np.zeros((n, n))
    weights = problem.wind_probs[None, :, None] * policy
    rows = np.broadcast_to(np.arange(n)[:, None, None], weights.shape)
    np.add.at(P, (rows.ravel(), problem.next_index.ravel()), weights.ravel())
    return P


def state_distributions(problem: TrackProblem, policy: np.ndarray, T: int) -> np.ndarray:
    """Exact distribution over offsets at steps 1..T of a run started on the track, ``[T, n]``."""
    T = _check_horizon(T)
    P = transition_matrix(problem, policy)
    dist = np.zeros((T, problem.n_offsets))
    p = np.zeros(problem.n_offsets)
    p[problem.start_index] = 1.0
    for t in range(T):
        dist[t] = p
        p = p @ P
    return dist


def expected_cost(problem: TrackProblem, policy: np.ndarray, T: int) -> np.ndarray:
    """Exact expected number of mistakes of ``policy`` over horizons 1..T (cumulative), shape [T].

    Entry ``T - 1`` is the cost J(policy) of a T-step run: sum_t E_{s ~ d_t}[mistake at s].
    """
    dist = state_distributions(problem, policy, T)
    return np.cumsum(dist @ mistake_probability(problem, policy))


def error_rate_under(problem: TrackProblem, policy: np.ndarray, T: int, under: np.ndarray) -> float:
    """Average per-step error of ``policy`` on the states that ``under`` visits in T-step runs:
    (1/T) sum_t E_{s ~ d_t(under)}[mistake of policy at s]. With ``under`` the expert this is the
    error behaviour cloning is trained to minimise; with ``under = policy`` it is the error on the
    learner's own distribution, and T times it is exactly :func:`expected_cost`."""
    dist = state_distributions(problem, under, T)
    return float(np.mean(dist @ mistake_probability(problem, policy)))


def rollout(
    problem: TrackProblem, policy: np.ndarray, T: int, n_rollouts: int = 100, seed: int = 0
) -> Rollouts:
    """Sample ``n_rollouts`` runs of ``T`` steps from the track centre under ``policy``."""
    policy = _check_policy(problem, policy)
    T = _check_horizon(T)
    n_rollouts = _check_horizon(n_rollouts, "n_rollouts")
    rng = np.random.default_rng(seed)
    offsets = np.empty((n_rollouts, T), dtype=int)
    winds = rng.choice(3, size=(n_rollouts, T), p=problem.wind_probs)
    actions = np.empty((n_rollouts, T), dtype=int)
    draws = rng.random((n_rollouts, T))
    cdf = np.cumsum(policy, axis=2)
    d = np.full(n_rollouts, problem.start_index)
    for t in range(T):
        offsets[:, t] = d
        w = winds[:, t]
        a = np.minimum((draws[:, t, None] > cdf[d, w]).sum(axis=1), 2)
        actions[:, t] = a
        d = problem.next_index[d, w, a]
    expert = problem.expert_actions[offsets, winds]
    return Rollouts(offsets, winds, actions, expert)


def monte_carlo_cost(
    problem: TrackProblem, policy: np.ndarray, T: int, n_rollouts: int = 2000, seed: int = 0
) -> np.ndarray:
    """Mean cumulative mistakes over sampled runs, shape [T] (a check on :func:`expected_cost`)."""
    runs = rollout(problem, policy, T, n_rollouts, seed)
    return runs.mistakes.cumsum(axis=1).mean(axis=0)


def fit_tabular(problem: TrackProblem, offsets: ArrayLike, labels: ArrayLike) -> Learner:
    """Fit the learner's table by majority vote of the expert ``labels`` at each offset index.

    Offsets with no data get the most common label of the whole data set (ties: lowest index).
    """
    offsets = np.asarray(offsets, dtype=int).ravel()
    labels = np.asarray(labels, dtype=int).ravel()
    if offsets.shape != labels.shape or offsets.size == 0:
        raise ValueError(
            f"need the same positive number of offsets and labels, got {offsets.size} and "
            f"{labels.size}"
        )
    if offsets.min() < 0 or offsets.max() >= problem.n_offsets or labels.min() < 0:
        raise ValueError("offset indices must lie in [0, n_offsets) and labels in [0, 3)")
    if labels.max() > 2:
        raise ValueError("offset indices must lie in [0, n_offsets) and labels in [0, 3)")
    counts = np.zeros((problem.n_offsets, 3), dtype=int)
    np.add.at(counts, (offsets, labels), 1)
    fallback = int(np.argmax(counts.sum(axis=0)))
    actions = np.where(counts.sum(axis=1) > 0, np.argmax(counts, axis=1), fallback)
    return Learner(actions, counts)


def behaviour_cloning(
    problem: TrackProblem, T: int, n_rollouts: int = 20, seed: int = 0
) -> Learner:
    """Fit the learner on ``n_rollouts`` expert runs of ``T`` steps (the expert's states only)."""
    runs = rollout(problem, expert_policy(problem), T, n_rollouts, seed)
    return fit_tabular(problem, runs.offsets, runs.expert_actions)


def dagger(
    problem: TrackProblem,
    T: int,
    n_rollouts: int = 20,
    n_iterations: int = 6,
    mixing: float = 0.0,
    seed: int = 0,
) -> DaggerRun:
    """DAgger (Ross, Gordon and Bagnell 2011, Algorithm 3.1) on the windy track.

    Iteration i = 1..n_iterations rolls out pi_i = beta_i expert + (1 - beta_i) learner_{i-1} with
    beta_i = mixing ** (i - 1) (so beta_1 = 1: the first data are expert runs, and with the default
    ``mixing = 0`` later iterations run the learner alone), has the expert label every visited
    state, adds the labels to the aggregate data set and refits the table on all of it.
    Iteration i samples with seed ``seed + i - 1``, so iteration 1 equals
    ``behaviour_cloning(problem, T, n_rollouts, seed)``.
    """
    T = _check_horizon(T)
    n_iterations = _check_horizon(n_iterations, "n_iterations")
    if not 0.0 <= mixing <= 1.0:
        raise ValueError(f"mixing must lie in [0, 1], got {mixing}")
    expert = expert_policy(problem)
    learner_pi = expert  # unused while beta = 1
    all_offsets: list[np.ndarray] = []
    all_labels: list[np.ndarray] = []
    learners: list[Learner] = []
    betas: list[float] = []
    roll_policies: list[np.ndarray] = []
    for i in range(n_iterations):
        beta = float(mixing**i)
        roll_pi = mix_policies(expert, learner_pi, beta)
        runs = rollout(problem, roll_pi, T, n_rollouts, seed + i)
        all_offsets.append(runs.offsets.ravel())
        all_labels.append(runs.expert_actions.ravel())
        learner = fit_tabular(problem, np.concatenate(all_offsets), np.concatenate(all_labels))
        learner_pi = learner_policy(problem, learner)
        learners.append(learner)
        betas.append(beta)
        roll_policies.append(roll_pi)
    return DaggerRun(learners, betas, roll_policies)


def aggregate_training_error(
    problem: TrackProblem, learner: Learner, run: DaggerRun, T: int
) -> float:
    """The learner's per-step error on DAgger's aggregate training distribution: the average over
    iterations of :func:`error_rate_under` the policies that were rolled out (exact, not sampled).
    This is the epsilon_N that DAgger's guarantee is stated in."""
    pi = learner_policy(problem, learner)
    return float(
        np.mean([error_rate_under(problem, pi, T, under) for under in run.rollout_policies])
    )


def off_policy_bound_by_step(eps_per_step: ArrayLike) -> float:
    """The behaviour-cloning bound written as a sum over steps, for per-step errors eps_1..eps_T
    measured on the expert's state distribution at each step:

    P(mistake at t) <= eps_t + sum_{i<t} eps_i, so
    J <= sum_t sum_{i<=t} eps_i = sum_t (T - t + 1) eps_t.

    With a constant eps this is eps T (T + 1) / 2, ``bounds.dagger_bound_off_policy``.
    """
    eps = np.asarray(eps_per_step, dtype=float)
    if eps.ndim != 1 or eps.size == 0:
        raise ValueError(f"eps_per_step must be a non-empty 1-D sequence, got shape {eps.shape}")
    if np.any(np.isnan(eps)) or np.any((eps < 0) | (eps > 1)):
        raise ValueError("every per-step error rate must lie in [0, 1]")
    return float(np.cumsum(eps).sum())
