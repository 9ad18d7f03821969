"""Chapter 9's second way to break on-policy distillation: SPIN saturating, on exact expectations.

:func:`spin_break` runs SPIN rounds on exact expectations (:func:`spin_phase`,
:func:`expected_spin_loss`) over a categorical policy until the policy matches its data, with the
margin each round reaches (:func:`expected_spin_margin`), then applies the fix (fresh data: the
saturated policy's own samples filtered by a verifier with
:func:`opd_lib.rl.rejection_sampling_targets`, :func:`verifier_filtered_data`) and runs more rounds.

Everything is deterministic given its ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from opd_lib import divergences, rl, spin


def expected_spin_loss(
    theta: torch.Tensor, ref_logits: torch.Tensor, p_data: torch.Tensor, beta: float
) -> torch.Tensor:
    """The expectation of :func:`opd_lib.spin.spin_loss` (logistic) over all pairs.

    Chosen ``y ~ p_data``, rejected ``y' ~ pi_ref = softmax(ref_logits)``, policy
    ``softmax(theta)``: ``sum_{y, y'} p_data(y) pi_ref(y') * -log sigmoid(beta (d(y) - d(y')))``
    with ``d = log softmax(theta) - log pi_ref``. The sampled loss averages to this.
    """
    ref_logp = torch.log_softmax(ref_logits, 0).detach()
    d = torch.log_softmax(theta, 0) - ref_logp
    # softplus(-m) = -log sigmoid(m); logsigmoid is multithreaded and slow on tiny tensors.
    pair_loss = torch.nn.functional.softplus(-beta * (d[:, None] - d[None, :]))
    return (p_data[:, None] * ref_logp.exp()[None, :] * pair_loss).sum()


@dataclass(frozen=True)
class SpinPhase:
    """SPIN rounds on one data distribution, computed exactly (no sampled pairs).

    ``policies[r]`` ``[R+1, K]`` (row 0 = the start); ``grad_norm[r]``: the norm of the expected
    SPIN gradient at the start of round ``r + 1`` (``(beta/2) ||p_data - pi_r||``); ``margin[r]``:
    the expected margin round ``r + 1`` ended with (:func:`expected_spin_margin`); ``tv[r]``:
    total variation from the data; ``reward[r]``: expected reward (SPIN never sees it).
    """

    policies: np.ndarray
    grad_norm: np.ndarray
    margin: np.ndarray
    tv: np.ndarray
    reward: np.ndarray


def spin_phase(
    p_data: np.ndarray,
    init_logits: np.ndarray,
    reward: np.ndarray,
    rounds: int = 5,
    steps: int = 40,
    lr: float = 0.6,
    beta: float = 1.0,
) -> SpinPhase:
    """``rounds`` rounds of SPIN on a categorical policy, each ``steps`` steps of gradient descent
    on :func:`expected_spin_loss` with the previous round's policy as opponent and reference.

    The exact-expectation sibling of :func:`opd_lib.sim.self_distill.spin_rounds` (which samples
    pairs and uses Adam): no sampling noise, so "the gradient vanishes" is visible as a number
    going to zero rather than to the noise floor. Plain gradient descent keeps it fast.
    """
    p = np.asarray(p_data, dtype=float)
    theta0 = np.asarray(init_logits, dtype=float)
    r_vec = np.asarray(reward, dtype=float)
    if p.ndim != 1 or theta0.shape != p.shape or r_vec.shape != p.shape:
        raise ValueError("p_data, init_logits and reward must be 1-D arrays of the same length")
    if (p < 0).any() or not np.isclose(p.sum(), 1.0):
        raise ValueError("p_data must be a probability vector")
    if rounds < 1 or steps < 1 or lr <= 0 or beta <= 0:
        raise ValueError(f"need rounds, steps >= 1 and lr, beta > 0; got {rounds}, {steps}, {lr}")
    data = torch.as_tensor(p)
    theta = torch.as_tensor(theta0).clone()
    policies = [torch.softmax(theta, 0).numpy()]
    for _ in range(rounds):
        ref = theta.clone()
        for _ in range(steps):
            theta.requires_grad_(True)
            (grad,) = torch.autograd.grad(expected_spin_loss(theta, ref, data, beta), theta)
            theta = (theta - lr * grad).detach()
        policies.append(torch.softmax(theta, 0).numpy())
    pol = np.array(policies)
    margin = np.array([expected_spin_margin(p, pol[r], pol[r + 1], beta) for r in range(rounds)])
    return SpinPhase(
        policies=pol,
        grad_norm=spin.expected_gradient_norm(p, pol, beta),
        margin=margin,
        tv=divergences.total_variation(np.broadcast_to(p, pol.shape), pol),
        reward=pol @ r_vec,
    )


def expected_spin_margin(
    p_data: np.ndarray, pi_before: np.ndarray, pi_after: np.ndarray, beta: float = 1.0
) -> float:
    """The SPIN margin a round ends with, in expectation over its pairs.

    ``beta * E[log(pi_after / pi_before)(y) - log(pi_after / pi_before)(y')]`` with the chosen
    ``y ~ p_data`` and the rejected ``y' ~ pi_before`` (the round's opponent). It is 0 when
    ``p_data = pi_before``: chosen and rejected are then draws from one distribution.
    """
    p, a, b = (np.asarray(v, dtype=float) for v in (p_data, pi_before, pi_after))
    if not p.shape == a.shape == b.shape or p.ndim != 1:
        raise ValueError(f"shape mismatch: {p.shape}, {a.shape}, {b.shape}; need equal 1-D")
    if (a <= 0).any() or (b <= 0).any():
        raise ValueError("pi_before and pi_after must be strictly positive")
    log_ratio = np.log(b) - np.log(a)
    return float(beta * (p @ log_ratio - a @ log_ratio))


def verifier_filtered_data(
    policy: np.ndarray, reward: np.ndarray, n_samples: int, threshold: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Fresh data for the fix: sample ``n_samples`` answers from ``policy``, keep those the verifier
    accepts (:func:`opd_lib.rl.rejection_sampling_targets`), return their empirical distribution."""
    policy = np.asarray(policy, dtype=float)
    reward = np.asarray(reward, dtype=float)
    if policy.shape != reward.shape or policy.ndim != 1:
        raise ValueError(f"policy {policy.shape} and reward {reward.shape} must be equal 1-D")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    rng = np.random.default_rng(seed)
    samples = rng.choice(len(policy), n_samples, p=policy / policy.sum())
    kept = rl.rejection_sampling_targets(list(samples), reward[samples], threshold)
    if not kept:
        raise ValueError("the verifier accepted none of the samples: nothing to train on")
    return np.bincount(np.array(kept), minlength=len(policy)) / len(kept)


@dataclass(frozen=True)
class SpinBreak:
    """SPIN on the original data (``stale``), then on fresh verified data (``fresh``)."""

    stale: SpinPhase
    fresh: SpinPhase
    fresh_data: np.ndarray


def spin_break(
    p_data: np.ndarray,
    reward: np.ndarray,
    init_logits: np.ndarray | None = None,
    rounds: int = 5,
    fresh_rounds: int = 5,
    n_fresh: int = 1024,
    floor: float = 1e-3,
    beta: float = 1.0,
    lr: float = 0.6,
    seed: int = 0,
) -> SpinBreak:
    """SPIN until it saturates, then the fix.

    Phase 1: :func:`spin_phase` on ``p_data`` from ``init_logits`` (uniform if ``None``).
    Phase 2: the saturated policy samples ``n_fresh`` answers, a verifier keeps those with
    ``reward >= 1`` (:func:`verifier_filtered_data`), and SPIN runs again on that data from the
    saturated policy. The fresh data is mixed with ``floor`` of uniform mass so every answer keeps
    a finite log-probability. ``reward`` is never seen by SPIN itself.
    """
    p_data = np.asarray(p_data, dtype=float)
    init = np.zeros_like(p_data) if init_logits is None else np.asarray(init_logits, dtype=float)
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"floor must lie in [0, 1), got {floor}")
    stale = spin_phase(p_data, init, reward, rounds=rounds, lr=lr, beta=beta)
    fresh_data = verifier_filtered_data(stale.policies[-1], reward, n_fresh, seed=seed)
    fresh_data = (1 - floor) * fresh_data + floor / len(fresh_data)
    fresh = spin_phase(
        fresh_data, np.log(stale.policies[-1]), reward, rounds=fresh_rounds, lr=lr, beta=beta
    )
    return SpinBreak(stale, fresh, fresh_data)
