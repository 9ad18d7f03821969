"""Chapter 1: how the prefixes a student conditions on drift away from the ones it trained on.

The smallest autoregressive "language model" is a Markov chain: the next token depends only on the
last one. A :class:`MarkovPair` holds a teacher chain and a student chain over the same tiny
vocabulary, both starting from the same prompt token.

* The teacher only ever writes *familiar* tokens; from an unfamiliar one (which it never produces
  itself) it knows how to get back to familiar ground.
* The student was fitted by teacher forcing, so it matches the teacher closely on the familiar
  states (up to ``fit_error``, which leaks a little mass onto unfamiliar tokens) and has never been
  trained on the unfamiliar ones: there it mostly keeps writing unfamiliar tokens
  (``lost_stickiness``).

Everything here is exact (dynamic programming or enumeration), apart from :func:`sample_tokens`
and :func:`sample_kl_estimates`, which draw samples with a seeded generator. Every divergence is
computed by :mod:`opd_lib.divergences`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from opd_lib import divergences

Prefixes = Literal["teacher", "student"]
MAX_PATHS = 2_000_000


@dataclass(frozen=True)
class MarkovPair:
    """A teacher and a student next-token model over ``V`` tokens, conditioned on the last token.

    ``teacher[a, b]`` (``student[a, b]``) is the probability that token ``b`` follows token ``a``.
    ``prompt`` is the token both start from; ``familiar[v]`` says whether the teacher writes ``v``.
    """

    teacher: np.ndarray
    student: np.ndarray
    prompt: int
    familiar: np.ndarray

    @property
    def vocab_size(self) -> int:
        return self.teacher.shape[0]


def _check_transition(name: str, matrix: np.ndarray) -> np.ndarray:
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"{name} must be a square [V, V] matrix, got shape {m.shape}")
    if (m < 0).any() or not np.allclose(m.sum(axis=1), 1.0, atol=1e-8):
        raise ValueError(f"{name} rows must be probability distributions (>= 0, summing to 1)")
    return m


def _check_pair(pair: MarkovPair) -> tuple[np.ndarray, np.ndarray]:
    teacher = _check_transition("teacher", pair.teacher)
    student = _check_transition("student", pair.student)
    if teacher.shape != student.shape:
        raise ValueError(f"teacher {teacher.shape} and student {student.shape} shapes differ")
    if not 0 <= pair.prompt < teacher.shape[0]:
        raise ValueError(f"prompt must be a token id in [0, {teacher.shape[0]}), got {pair.prompt}")
    return teacher, student


def _check_T(T: int) -> None:
    if not isinstance(T, int | np.integer) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")


def make_markov_pair(
    vocab_size: int = 4,
    n_unfamiliar: int = 1,
    fit_error: float = 0.05,
    lost_stickiness: float = 0.8,
    concentration: float = 1.0,
    seed: int = 0,
) -> MarkovPair:
    """A random teacher chain and a teacher-forced student chain (see the module docstring).

    Args:
        vocab_size: number of tokens ``V``; the last ``n_unfamiliar`` are never written by the
            teacher.
        fit_error: on familiar states the student's row is
            ``(1 - fit_error) * teacher_row + fit_error * uniform``.
        lost_stickiness: on unfamiliar states the student writes an unfamiliar token with this
            probability (spread evenly), otherwise a uniformly random token.
        concentration: Dirichlet concentration of the teacher's rows over familiar tokens.
        seed: the teacher's rows are drawn with ``numpy.random.default_rng(seed)``.

    The prompt is token 0 (familiar).
    """
    if vocab_size < 2 or not 1 <= n_unfamiliar < vocab_size:
        raise ValueError(
            f"need vocab_size >= 2 and 1 <= n_unfamiliar < vocab_size, "
            f"got {vocab_size}, {n_unfamiliar}"
        )
    for name, value in (("fit_error", fit_error), ("lost_stickiness", lost_stickiness)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    if concentration <= 0:
        raise ValueError(f"concentration must be positive, got {concentration}")
    rng = np.random.default_rng(seed)
    n_familiar = vocab_size - n_unfamiliar
    familiar = np.arange(vocab_size) < n_familiar
    teacher = np.zeros((vocab_size, vocab_size))
    teacher[:, :n_familiar] = rng.dirichlet(np.full(n_familiar, concentration), size=vocab_size)
    uniform = np.full(vocab_size, 1.0 / vocab_size)
    student = np.empty_like(teacher)
    student[familiar] = (1 - fit_error) * teacher[familiar] + fit_error * uniform
    lost_row = (1 - lost_stickiness) * uniform + lost_stickiness * (~familiar) / n_unfamiliar
    student[~familiar] = lost_row
    return MarkovPair(teacher=teacher, student=student, prompt=0, familiar=familiar)


def state_marginals(pair: MarkovPair, T: int, prefixes: Prefixes) -> np.ndarray:
    """``[T, V]``: row ``t - 1`` is the distribution of the last token of the prefix ``y_<t``
    (the prompt for ``t = 1``) when the prefix was written by ``prefixes`` ("teacher": teacher
    forcing, the off-policy training distribution; "student": the student's own generation)."""
    teacher, student = _check_pair(pair)
    _check_T(T)
    if prefixes not in ("teacher", "student"):
        raise ValueError(f"prefixes must be 'teacher' or 'student', got {prefixes!r}")
    writer = teacher if prefixes == "teacher" else student
    out = np.zeros((T, pair.vocab_size))
    out[0, pair.prompt] = 1.0
    for t in range(1, T):
        out[t] = out[t - 1] @ writer
    return out


def state_kl(pair: MarkovPair) -> np.ndarray:
    """``[V]``: forward KL ``KL(p_T(. | s) || p_S(. | s))`` after every last token ``s``."""
    teacher, student = _check_pair(pair)
    return divergences.forward_kl(teacher, student)


def expected_position_kl(pair: MarkovPair, T: int, prefixes: Prefixes) -> np.ndarray:
    """``[T]``: the per-position distillation loss
    ``E_{y_<t ~ prefixes}[ KL(p_T(. | y_<t) || p_S(. | y_<t)) ]`` for ``t = 1..T``.

    ``prefixes="teacher"`` gives the terms of the off-policy objective, ``"student"`` those of the
    on-policy one: the two differ only in who wrote the prefix.
    """
    return state_marginals(pair, T, prefixes) @ state_kl(pair)


def prefix_tv(pair: MarkovPair, T: int) -> np.ndarray:
    """``[T]``: total variation between the distributions of the whole prefix ``y_<t`` under
    the teacher and under the student, for ``t = 1..T`` (exact, by enumerating the ``V^(t-1)``
    prefixes). Non-decreasing in ``t``; 0 at ``t = 1``, where the prefix is just the prompt."""
    teacher, student = _check_pair(pair)
    _check_T(T)
    if pair.vocab_size ** (T - 1) > MAX_PATHS:
        raise ValueError(
            f"V^(T-1) = {pair.vocab_size}^{T - 1} prefixes is too many to enumerate "
            f"(limit {MAX_PATHS}); lower T"
        )
    # Probabilities of every prefix y_<t (flattened; prefix i*V + b ends in token b).
    p_t = np.ones(1)
    p_s = np.ones(1)
    last = np.array([pair.prompt])
    out = np.zeros(T)
    for t in range(1, T):
        p_t = (p_t[:, None] * teacher[last]).reshape(-1)
        p_s = (p_s[:, None] * student[last]).reshape(-1)
        last = np.tile(np.arange(pair.vocab_size), len(last))
        out[t] = float(divergences.total_variation(p_t, p_s))
    return out


def state_tv(pair: MarkovPair, T: int) -> np.ndarray:
    """``[T]``: total variation between the teacher's and the student's distributions of the
    last token of ``y_<t``. A lower bound on :func:`prefix_tv`, computable for any ``T``."""
    return divergences.total_variation(
        state_marginals(pair, T, "teacher"), state_marginals(pair, T, "student")
    )


def sample_tokens(
    pair: MarkovPair, T: int, n_rollouts: int, writer: Prefixes, seed: int = 0
) -> np.ndarray:
    """``[n_rollouts, T]`` int token ids ``y_1..y_T`` sampled from the teacher or the student."""
    teacher, student = _check_pair(pair)
    _check_T(T)
    if n_rollouts < 1:
        raise ValueError(f"n_rollouts must be positive, got {n_rollouts}")
    if writer not in ("teacher", "student"):
        raise ValueError(f"writer must be 'teacher' or 'student', got {writer!r}")
    matrix = teacher if writer == "teacher" else student
    cumulative = np.cumsum(matrix, axis=1)
    cumulative[:, -1] = 1.0
    rng = np.random.default_rng(seed)
    draws = rng.random((n_rollouts, T))
    tokens = np.empty((n_rollouts, T), dtype=np.int64)
    last = np.full(n_rollouts, pair.prompt)
    for t in range(T):
        last = (draws[:, t, None] > cumulative[last]).sum(axis=1)
        tokens[:, t] = last
    return tokens


# --------------------------------------------------------------------------------------------
# Sampled-token estimators of reverse KL (k1, k2, k3)
# --------------------------------------------------------------------------------------------

KL_ESTIMATORS = ("k1", "k2", "k3")


def _probs_pair(p_teacher: np.ndarray, p_student: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p_teacher, dtype=float)
    q = np.asarray(p_student, dtype=float)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"need two 1-D distributions of equal size, got {p.shape} and {q.shape}")
    if (p <= 0).any() or (q < 0).any():
        raise ValueError("p_teacher must be strictly positive and p_student non-negative")
    if not (np.isclose(p.sum(), 1.0) and np.isclose(q.sum(), 1.0)):
        raise ValueError("p_teacher and p_student must each sum to 1")
    return p, q


def kl_estimator_moments(p_teacher: np.ndarray, p_student: np.ndarray) -> dict[str, np.ndarray]:
    """Exact mean and standard deviation of k1, k2, k3 for one token ``x ~ p_student``.

    Returns ``{"kl": exact reverse KL, "mean": [3], "bias": [3] (mean - kl), "std": [3]}`` with
    the estimators in the order k1, k2, k3. On a small vocabulary the expectation over the
    sampled token is a finite sum, so no sampling is needed.
    """
    p, q = _probs_pair(p_teacher, p_student)
    support = q > 0
    logq = torch.as_tensor(np.log(q[support]))
    logp = torch.as_tensor(np.log(p[support]))
    est = divergences.sampled_token_estimators(logq, logp)
    weights = q[support]
    values = np.stack([e.numpy() for e in est])  # [3, |support|]
    mean = values @ weights
    std = np.sqrt(((values - mean[:, None]) ** 2) @ weights)
    kl = float(divergences.reverse_kl(p, q))
    return {"kl": np.float64(kl), "mean": mean, "bias": mean - kl, "std": std}


def sample_kl_estimates(
    p_teacher: np.ndarray, p_student: np.ndarray, n_samples: int, seed: int = 0
) -> np.ndarray:
    """``[3, n_samples]``: k1, k2, k3 evaluated at ``n_samples`` tokens drawn from ``p_student``."""
    p, q = _probs_pair(p_teacher, p_student)
    if n_samples < 1:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    rng = np.random.default_rng(seed)
    x = rng.choice(len(q), size=n_samples, p=q)
    est = divergences.sampled_token_estimators(
        torch.as_tensor(np.log(q[x])), torch.as_tensor(np.log(p[x]))
    )
    return np.stack([e.numpy() for e in est])
