"""Chapter 5: reverse KL is reinforcement learning, checked on models small enough to enumerate.

The toy is the tabular sequence model of :mod:`opd_lib.sim.tabular`: with ``V^L`` sequences
small enough to enumerate, every expectation over the student's samples is an exact sum, and
autograd on that sum gives the *exact* gradient of ``KL(p_theta(y) || p_T(y))``.

Because the model is tabular, a sampled gradient estimate depends only on which sequence was
sampled. :func:`per_sequence_gradients` therefore computes, for each of the ``V^L`` sequences, the
gradient estimate one sample of it would produce; Monte-Carlo estimates are averages of rows of that
table picked by sampling, and the estimator's exact mean and variance follow by weighting the rows
with ``p_theta(y)``. :func:`batch_gradient_via_pg` computes the same estimates the way a trainer
does, through :mod:`opd_lib.pg` and autograd, and the tests check that the two agree.

The tabular model's names and G-OPD (:mod:`opd_lib.sim.gopd`) are re-exported here.

Conventions: gradients are of the KL to be *minimised* (a descent step subtracts them); tables are
``float64`` torch tensors of shape ``[n_prefixes, V]``.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from opd_lib import pg
from opd_lib._threads import single_thread
from opd_lib.divergences import logit_gradients, token_divergence
from opd_lib.sim.gopd import gopd_optimum, optimise_exact, optimise_sampled, verifier_bonus_optimum
from opd_lib.sim.tabular import (
    DTYPE,
    TokenGradient,
    _check_table,
    _enumeration,
    _tabular_logprobs,
    all_sequences,
    categorical_exact_gradient,
    categorical_reinforce_estimate,
    exact_gradient,
    exact_reverse_kl,
    n_prefixes,
    prefix_rows,
    random_table,
    sample_indices,
    tabular_logprobs,
    token_gradient,
)

__all__ = [
    "BASELINES",
    "Baseline",
    "DTYPE",
    "Estimator",
    "GRADIENT_ESTIMATORS",
    "MonteCarloCurve",
    "SequenceTable",
    "TokenGradient",
    "UNBIASED",
    "all_sequences",
    "batch_gradient_via_pg",
    "categorical_exact_gradient",
    "categorical_reinforce_estimate",
    "estimator_moments",
    "exact_gradient",
    "exact_reverse_kl",
    "gopd_optimum",
    "monte_carlo_curve",
    "n_prefixes",
    "optimise_exact",
    "optimise_sampled",
    "per_sequence_gradients",
    "prefix_rows",
    "random_table",
    "sample_indices",
    "sequence_table",
    "tabular_logprobs",
    "token_gradient",
    "train_curves",
    "verifier_bonus_optimum",
]

Estimator = Literal["sequence", "reward_to_go", "single_step", "length_normalized", "per_token"]
Baseline = Literal["none", "mean", "value"]
GRADIENT_ESTIMATORS: tuple[str, ...] = (
    "sequence",
    "reward_to_go",
    "single_step",
    "length_normalized",
    "per_token",
)
BASELINES: tuple[str, ...] = ("none", "mean", "value")
UNBIASED: tuple[str, ...] = ("sequence", "reward_to_go", "single_step")


# --------------------------------------------------------------------------------------------
# Gradient estimators
# --------------------------------------------------------------------------------------------


class SequenceTable(NamedTuple):
    """Everything about every sequence under the current student."""

    sequences: torch.Tensor  # [S, L] tokens
    rows: torch.Tensor  # [S, L] prefix row per position
    p: torch.Tensor  # [S] p_theta(y)
    rewards: torch.Tensor  # [S, L] r_t = log p_T - log p_theta
    step_kl: torch.Tensor  # [S, L] exact KL(p_theta(.|y_<t) || p_T(.|y_<t))


def sequence_table(student: torch.Tensor, teacher: torch.Tensor, length: int) -> SequenceTable:
    """Rewards, probabilities and per-position exact KLs of all ``V^L`` sequences (no gradient)."""
    vocab = student.shape[1]
    _check_table(student, vocab, length, "student")
    _check_table(teacher, vocab, length, "teacher")
    seqs, rows = _enumeration(vocab, length)
    with torch.no_grad():
        ls = _tabular_logprobs(student, seqs, rows)
        lt = _tabular_logprobs(teacher, seqs, rows)
        rewards = pg.per_token_reverse_kl_reward(lt, ls)
        kl_rows = token_divergence(student, teacher, "rkl")  # [n_prefixes]
    return SequenceTable(seqs, rows, ls.sum(-1).exp(), rewards, kl_rows[rows])


def _weights(tab: SequenceTable, estimator: str) -> torch.Tensor:
    """The per-position weight W_t of every enumerated sequence (:func:`_weights_from_rewards`)."""
    return _weights_from_rewards(
        tab.rewards, torch.ones_like(tab.rewards, dtype=torch.bool), estimator
    )


def _baselines(tab: SequenceTable, weights: torch.Tensor, baseline: str) -> torch.Tensor:
    """Exact baselines: ``mean`` is E[W_t] (a constant per position), ``value`` is E[W_t | y_<t]."""
    if baseline == "none":
        return torch.zeros_like(weights)
    if baseline == "mean":
        return (tab.p[:, None] * weights).sum(0, keepdim=True).expand_as(weights).clone()
    if baseline == "value":
        out = torch.zeros_like(weights)
        n_rows = int(tab.rows.max()) + 1
        for t in range(weights.shape[1]):
            num = torch.zeros(n_rows, dtype=DTYPE).index_add_(
                0, tab.rows[:, t], tab.p * weights[:, t]
            )
            den = torch.zeros(n_rows, dtype=DTYPE).index_add_(0, tab.rows[:, t], tab.p)
            out[:, t] = (num / den.clamp_min(1e-300))[tab.rows[:, t]]
        return out
    raise ValueError(f"unknown baseline {baseline!r}; expected one of {BASELINES}")


@single_thread()
def per_sequence_gradients(
    student: torch.Tensor,
    teacher: torch.Tensor,
    length: int,
    estimator: Estimator = "reward_to_go",
    baseline: Baseline = "none",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-sample gradient estimate of grad KL(p_theta || p_T) for every sequence.

    Returns ``(g, p)``: ``g`` ``[V^L, n_prefixes * V]`` is the estimate a single sample of each
    sequence gives (flattened over the table), ``p`` ``[V^L]`` its probability under the student.
    With weight ``W_t`` and baseline ``b_t`` the estimate is

        g(y) = - sum_t (W_t - b_t) grad log p_theta(y_t | y_<t)   [+ single-step term]

    where ``grad log p(y_t|y_<t)`` is ``onehot(y_t) - p(.|y_<t)`` on the prefix's row. Estimators:

    * ``sequence``: W_t = sum_k r_k, the whole return on every token (plain REINFORCE);
    * ``reward_to_go``: W_t = sum_{k>=t} r_k (rewards before t cannot be caused by y_t);
    * ``single_step``: MiniLLM's decomposition: the exact gradient of the per-position KL with the
      sampled prefix held fixed, plus REINFORCE with W_t = R_{t+1} = sum_{k>t} r_k;
    * ``length_normalized``: W_t = R_t / (L - t), MiniLLM's normalisation (a different weighting,
      hence *biased* for the KL gradient);
    * ``per_token``: W_t = r_t only (gamma = 0; drops the long-term part, biased).

    Baselines (computed exactly from the enumeration): ``none``; ``mean`` = E[W_t], the average a
    large batch would give; ``value`` = E[W_t | y_<t], a perfect critic. Both leave the estimator's
    mean unchanged because E[grad log p(y_t | y_<t) | y_<t] = 0.
    """
    if estimator not in GRADIENT_ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {GRADIENT_ESTIMATORS}")
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; expected one of {BASELINES}")
    tab = sequence_table(student, teacher, length)
    S, L = tab.sequences.shape
    n_rows, V = student.shape
    weights = _weights(tab, estimator)
    adv = weights - _baselines(tab, weights, baseline)
    probs = F.softmax(student.detach(), -1)  # [n_rows, V]
    g = torch.zeros((S, n_rows, V), dtype=DTYPE)
    seq_idx = torch.arange(S)
    for t in range(L):
        rows = tab.rows[:, t]
        score = F.one_hot(tab.sequences[:, t], V).to(DTYPE) - probs[rows]  # [S, V]
        g[seq_idx, rows] -= adv[:, t : t + 1] * score
        if estimator == "single_step":  # + the exact gradient of this position's KL
            g[seq_idx, rows] += logit_gradients(student.detach()[rows], teacher.detach()[rows])
    return g.reshape(S, n_rows * V), tab.p


@single_thread()
def estimator_moments(
    student: torch.Tensor,
    teacher: torch.Tensor,
    length: int,
    estimator: Estimator = "reward_to_go",
    baseline: Baseline = "none",
) -> tuple[torch.Tensor, float]:
    """Exact mean (flattened ``[n_prefixes * V]``) and total variance ``E||g - E g||^2`` of the
    one-sample estimator. The variance of an N-sample average is this divided by N."""
    g, p = per_sequence_gradients(student, teacher, length, estimator, baseline)
    mean = (p[:, None] * g).sum(0)
    var = float((p * ((g - mean) ** 2).sum(-1)).sum())
    return mean, var


class MonteCarloCurve(NamedTuple):
    n: np.ndarray  # [K] sample sizes
    error: np.ndarray  # [K] root-mean-square over trials of ||mean_N - exact||
    variance: np.ndarray  # [K] total variance across trials of mean_N
    exact_variance: float  # one-sample total variance (so variance ~ exact_variance / N)
    bias: float  # ||E g - exact gradient|| (0 for unbiased estimators)


@single_thread()
def monte_carlo_curve(
    student: torch.Tensor,
    teacher: torch.Tensor,
    length: int,
    estimator: Estimator = "reward_to_go",
    baseline: Baseline = "none",
    n_max: int = 4096,
    n_trials: int = 64,
    seed: int = 0,
) -> MonteCarloCurve:
    """How an N-sample Monte-Carlo average of the estimator approaches the exact gradient.

    For each of ``n_trials`` independent runs, draws ``n_max`` sequences from the student and
    averages their one-sample estimates over the first N, for N on a log grid from 1 to ``n_max``.
    Reports the RMS distance to the exact gradient (:func:`exact_gradient`) and the spread across
    trials. For an unbiased estimator both fall like 1/sqrt(N) (error) and 1/N (variance).
    """
    if n_max < 1 or n_trials < 2:
        raise ValueError(f"need n_max >= 1 and n_trials >= 2, got {n_max}, {n_trials}")
    g, p = per_sequence_gradients(student, teacher, length, estimator, baseline)
    exact = exact_gradient(student, teacher, length).reshape(-1)
    mean, var = estimator_moments(student, teacher, length, estimator, baseline)
    idx = sample_indices(p, n_max * n_trials, seed).reshape(n_trials, n_max)
    G = g.numpy()
    grid = np.unique(np.round(np.logspace(0, math.log10(n_max), 25)).astype(int))
    csum = np.cumsum(G[idx], axis=1)  # [trials, n_max, P]
    est = csum[:, grid - 1, :] / grid[None, :, None]  # [trials, K, P]
    err = np.sqrt(((est - exact.numpy()) ** 2).sum(-1).mean(0))
    spread = ((est - est.mean(0, keepdims=True)) ** 2).sum(-1).sum(0) / (n_trials - 1)
    bias = float(torch.linalg.norm(mean - exact))
    return MonteCarloCurve(grid, err, spread, var, bias)


@single_thread()
def batch_gradient_via_pg(
    student: torch.Tensor,
    teacher: torch.Tensor,
    sequences: torch.Tensor,
    estimator: Estimator = "reward_to_go",
    baseline: Baseline = "none",
) -> torch.Tensor:
    """The batch gradient estimate computed as a trainer would: rewards from
    :func:`opd_lib.pg.per_token_reverse_kl_reward`, returns from
    :func:`opd_lib.pg.discounted_returns`,
    the surrogate :func:`opd_lib.pg.reinforce_loss` (plus :func:`opd_lib.pg.single_step_kl` for
    ``single_step``), and one backward pass. ``reinforce_loss`` averages over the ``N * L`` tokens,
    so its gradient is scaled by ``L`` to estimate the gradient of the sequence-level KL. Equals the
    mean of :func:`per_sequence_gradients` rows over ``sequences`` (the tests check this)."""
    vocab = student.shape[1]
    length = sequences.shape[1]
    _check_table(student, vocab, length, "student")
    _check_table(teacher, vocab, length, "teacher")
    theta = student.detach().clone().requires_grad_(True)
    logp = tabular_logprobs(theta, sequences)
    logp_t = tabular_logprobs(teacher.detach(), sequences)
    rewards = pg.per_token_reverse_kl_reward(logp_t, logp)
    mask = torch.ones_like(rewards, dtype=torch.bool)
    # The weights and baselines come from the enumeration, looked up for the sampled sequences.
    tab = sequence_table(student, teacher, length)
    weights_all = _weights(tab, estimator)
    base_all = _baselines(tab, weights_all, baseline)
    code = (sequences * vocab ** torch.arange(length - 1, -1, -1)).sum(-1)
    weights = _weights_from_rewards(rewards, mask, estimator)
    if not torch.allclose(weights, weights_all[code]):
        raise RuntimeError("weights from the batch and from the enumeration disagree")
    loss = pg.reinforce_loss(logp, weights, mask, baseline=base_all[code])
    if estimator == "single_step":
        rows = prefix_rows(sequences, vocab)
        loss = loss + pg.single_step_kl(theta[rows], teacher.detach()[rows], mask)
    (grad,) = torch.autograd.grad(length * loss, theta)
    return grad.reshape(-1)


def _weights_from_rewards(
    rewards: torch.Tensor, mask: torch.Tensor, estimator: str
) -> torch.Tensor:
    """The per-position weight W_t that multiplies grad log p(y_t | y_<t), before the baseline."""
    if estimator == "sequence":
        return rewards.sum(-1, keepdim=True).expand_as(rewards).clone()
    if estimator == "reward_to_go":
        return pg.discounted_returns(rewards, mask, gamma=1.0)
    if estimator == "single_step":
        return pg.discounted_returns(rewards, mask, gamma=1.0) - rewards
    if estimator == "length_normalized":
        return pg.discounted_returns(rewards, mask, gamma=1.0, length_normalize=True)
    if estimator == "per_token":
        return pg.discounted_returns(rewards, mask, gamma=0.0)
    raise ValueError(f"unknown estimator {estimator!r}; expected one of {GRADIENT_ESTIMATORS}")


@single_thread()
def train_curves(
    student: torch.Tensor,
    teacher: torch.Tensor,
    length: int,
    estimator: Estimator | Literal["exact"] = "reward_to_go",
    baseline: Baseline = "none",
    batch: int = 8,
    steps: int = 200,
    lr: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """Plain SGD on the student table with the chosen estimator (``"exact"``: the true gradient);
    returns the exact sequence-level reverse KL before each step and after the last,
    shape ``[steps + 1]``."""
    if steps < 1 or batch < 1 or lr <= 0:
        raise ValueError(f"need steps, batch >= 1 and lr > 0; got {steps}, {batch}, {lr}")
    if estimator != "exact" and estimator not in GRADIENT_ESTIMATORS:
        raise ValueError(
            f"unknown estimator {estimator!r}; expected 'exact' or one of {GRADIENT_ESTIMATORS}"
        )
    rng = np.random.default_rng(seed)
    theta = student.detach().clone()
    kls = np.empty(steps + 1)
    for k in range(steps):
        kls[k] = float(exact_reverse_kl(theta.detach(), teacher, length))
        if estimator == "exact":
            grad = exact_gradient(theta, teacher, length).reshape(-1)
        else:
            g, p = per_sequence_gradients(theta, teacher, length, estimator, baseline)
            probs = p.numpy() / float(p.sum())
            idx = rng.choice(len(probs), size=batch, p=probs)
            grad = g[idx].mean(0)
        theta = theta - lr * grad.reshape(theta.shape)
    kls[steps] = float(exact_reverse_kl(theta, teacher, length))
    return kls
