"""Chapter 4: GKD on a toy autoregressive task, small enough to train dozens of times in seconds.

The task. Sequences of ``T`` tokens over a vocabulary of 8: tokens 0-5 are *valid* and form two
"modes", A = {0, 1, 2} and B = {3, 4, 5}; tokens 6 and 7 are *junk*. The teacher is a Markov chain
on the last token (row ``BOS`` = the start):

* at the start it picks mode A (token 0) or mode B (token 3) with probability 1/2 each: a bimodal
  teacher, two valid continuations;
* from a valid token it moves to one of the two other tokens of the same mode (two valid
  continuations, ``(1 - teacher_noise) / 2`` each) and spreads ``teacher_noise`` over the rest;
* from a junk token it goes back to the start of a mode (0 or 3): the teacher knows how to recover
  from a mistake, even though it almost never makes one.

A transition is *valid* when the teacher gives it probability ``(1 - teacher_noise) / 2``; a
sequence is valid when all of its ``T`` transitions are.

The student is tabular, one softmax over the next token per last token (``BOS`` included), and
limited: it mixes a ``floor`` of uniform probability into every row (``student_probs``), so it keeps
slipping at a small rate however long it trains, like the eps of Chapter 0. It starts as an
untrained babbler: random logits with extra weight on junk and, once in junk, a tendency to stay
there (a student that has never been shown what to do after a mistake). Apart from the floor it can
represent the teacher, so the divergences differ little in what they converge to; the runs differ
mainly in *which rows get trained*.

Training is GKD: each step, with probability ``lam`` the batch is the student's own samples, else a
minibatch of a fixed dataset of teacher samples; the loss is the generalized JSD with ``beta`` at
every prefix of the batch (TRL's convention, as ``opd_lib.divergences.token_divergence``, whose
values the NumPy gradient here is tested against), minimised with Adam.

What is measured is the student *on its own generations*, computed exactly by propagating its
state distribution (no sampling noise): the probability that a sampled sequence is valid, the
teacher's mean log-likelihood per token of the student's samples, and the per-token reverse KL
``KL(student || teacher) / T`` of whole sequences (the divergence on its own prefixes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BOS",
    "JUNK",
    "MODES",
    "VOCAB",
    "ToyMetrics",
    "ToyRun",
    "curated_dataset",
    "curated_sequences",
    "divergence_grad",
    "initial_student",
    "sample_sequences",
    "student_probs",
    "student_metrics",
    "teacher_table",
    "train_gkd_toy",
    "train_grid",
    "valid_transitions",
]

VOCAB = 8
MODES = ((0, 1, 2), (3, 4, 5))
JUNK = (6, 7)
BOS = VOCAB  # the start row of the transition tables


def teacher_table(teacher_noise: float = 0.005) -> np.ndarray:
    """The teacher's next-token probabilities, ``[VOCAB + 1, VOCAB]`` (last row: the start)."""
    if not 0.0 < teacher_noise < 0.5:
        raise ValueError(f"teacher_noise must be in (0, 0.5), got {teacher_noise}")
    table = np.zeros((VOCAB + 1, VOCAB))
    good = (1.0 - teacher_noise) / 2

    def row(allowed: Sequence[int]) -> np.ndarray:
        r = np.full(VOCAB, teacher_noise / (VOCAB - len(allowed)))
        r[list(allowed)] = good
        return r

    for mode in MODES:
        for s in mode:
            table[s] = row([v for v in mode if v != s])
    for s in JUNK:
        table[s] = row([MODES[0][0], MODES[1][0]])
    table[BOS] = row([MODES[0][0], MODES[1][0]])
    return table


def valid_transitions(teacher: np.ndarray) -> np.ndarray:
    """Boolean ``[VOCAB + 1, VOCAB]``: the transitions the teacher favours (two per row)."""
    return teacher >= teacher.max(axis=1, keepdims=True) - 1e-12


def initial_student(seed: int = 0, junk_bias: float = 1.5, sticky: float = 2.5) -> np.ndarray:
    """Logits ``[VOCAB + 1, VOCAB]`` of the untrained student: standard normal noise, plus
    ``junk_bias`` on the junk columns of every row and ``sticky`` more on junk -> junk."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.0, (VOCAB + 1, VOCAB))
    logits[:, list(JUNK)] += junk_bias
    for s in JUNK:
        logits[s, list(JUNK)] += sticky
    return logits


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def sample_sequences(
    probs: np.ndarray, n: int, length: int, rng: np.random.Generator
) -> np.ndarray:
    """Sample ``n`` sequences of ``length`` tokens from a transition table; returns the *states*
    ``[n, length]`` each token was predicted from (``BOS`` first, then the tokens but the last)
    and the tokens, stacked as ``[2, n, length]``."""
    cdf = np.cumsum(probs, axis=1)
    cdf[:, -1] = 1.0
    states = np.empty((n, length), dtype=np.int64)
    tokens = np.empty((n, length), dtype=np.int64)
    state = np.full(n, BOS)
    for t in range(length):
        states[:, t] = state
        u = rng.random(n)
        state = (cdf[state] < u[:, None]).sum(axis=1)
        tokens[:, t] = state
    return np.stack([states, tokens])


def curated_dataset(
    teacher: np.ndarray, size: int, length: int, rng: np.random.Generator
) -> np.ndarray:
    """``size`` teacher samples with no invalid transition (a curated set of correct answers);
    returns their states ``[size, length]``. The teacher's rare slips are filtered out, so the
    off-policy data never shows a junk prefix."""
    return curated_sequences(teacher, size, length, rng)[0]


def curated_sequences(
    teacher: np.ndarray, size: int, length: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`curated_dataset` with the tokens: (states, tokens), each ``[size, length]``."""
    ok = valid_transitions(teacher)
    states, tokens = [], []
    while sum(len(k) for k in states) < size:
        s, t = sample_sequences(teacher, 2 * size, length, rng)
        keep = ok[s, t].all(axis=1)
        states.append(s[keep])
        tokens.append(t[keep])
    return np.concatenate(states)[:size], np.concatenate(tokens)[:size]


@dataclass(frozen=True)
class ToyMetrics:
    """The student on its own generations (exact expectations).

    ``mistakes``: expected number of invalid transitions in a sequence (Chapter 0's count);
    ``valid``: P(all T transitions valid); ``teacher_loglik``: mean teacher log-probability per
    token of the student's samples; ``rkl``: ``KL(student || teacher)`` of whole sequences per
    token; ``mode_a``: probability the student starts in mode A (the teacher: 1/2).
    """

    mistakes: float
    valid: float
    teacher_loglik: float
    rkl: float
    mode_a: float


def student_metrics(student: np.ndarray, teacher: np.ndarray, length: int) -> ToyMetrics:
    """Exact metrics of the student transition table ``student`` (probabilities) on ``length``-token
    sequences it samples itself, by propagating its state distribution step by step."""
    ok = valid_transitions(teacher)
    log_ratio = np.log(student) - np.log(teacher)
    per_state_rkl = (student * log_ratio).sum(axis=1)
    per_state_ll = (student * np.log(teacher)).sum(axis=1)
    per_state_slip = (student * ~ok).sum(axis=1)
    occupancy = np.zeros(VOCAB + 1)
    occupancy[BOS] = 1.0
    valid_mass = occupancy.copy()
    rkl = ll = mistakes = 0.0
    for _ in range(length):
        mistakes += occupancy @ per_state_slip
        rkl += occupancy @ per_state_rkl
        ll += occupancy @ per_state_ll
        valid_mass = np.concatenate([valid_mass @ (student * ok), [0.0]])
        occupancy = np.concatenate([occupancy @ student, [0.0]])
    return ToyMetrics(
        mistakes=float(mistakes),
        valid=float(valid_mass.sum()),
        teacher_loglik=float(ll / length),
        rkl=float(rkl / length),
        mode_a=float(student[BOS, MODES[0][0]]),
    )


@dataclass(frozen=True)
class ToyRun:
    """One training run: the evaluated steps, the metrics there, and the final student table."""

    lam: float | str
    beta: float
    steps: np.ndarray
    metrics: list[ToyMetrics]
    student: np.ndarray

    @property
    def final(self) -> ToyMetrics:
        return self.metrics[-1]

    def curve(self, name: str) -> np.ndarray:
        """One metric over the evaluated steps, e.g. ``run.curve("valid")``."""
        return np.array([getattr(m, name) for m in self.metrics])


def student_probs(logits: np.ndarray, floor: float) -> np.ndarray:
    """The limited student's next-token table: ``(1 - floor) softmax(logits) + floor / VOCAB``.

    ``floor`` is a capacity limit: however well trained, the student puts at least
    ``floor / VOCAB`` on every token, so it slips (takes an invalid transition) at a rate it cannot
    train away, like the per-token error rate eps of Chapter 0.
    """
    return (1.0 - floor) * _softmax(logits) + floor / VOCAB


def divergence_grad(
    teacher: np.ndarray, logits: np.ndarray, beta: float, floor: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row generalized JSD ``D_beta(teacher || student)`` and its gradient w.r.t. ``logits``.

    Same convention as ``opd_lib.divergences.token_divergence(kind="jsd")`` (``beta=0`` forward KL,
    ``beta=1`` reverse KL); written in NumPy because the toy takes thousands of tiny steps. With
    ``q`` the student's probabilities and ``m = beta p + (1 - beta) q``, ``dD/dq`` is ``-p / q``
    (forward KL), ``log(q / p) + 1`` (reverse KL) or ``(1 - beta) log(q / m)`` (interior beta), then
    chained through ``q = (1 - floor) softmax(logits) + floor / V``. Returns ``([R], [R, V])``.
    """
    a = _softmax(logits)
    q = (1.0 - floor) * a + floor / VOCAB
    p = teacher
    if beta == 0.0:
        value = (p * np.log(p / q)).sum(axis=1)
        r = -p / q
    elif beta == 1.0:
        value = (q * np.log(q / p)).sum(axis=1)
        r = np.log(q / p) + 1.0
    else:
        m = beta * p + (1.0 - beta) * q
        value = (beta * p * np.log(p / m) + (1.0 - beta) * q * np.log(q / m)).sum(axis=1)
        r = (1.0 - beta) * np.log(q / m)
    grad = (1.0 - floor) * a * (r - (a * r).sum(axis=1, keepdims=True))
    return value, grad


def train_gkd_toy(
    lam: float | Sequence[float],
    beta: float,
    steps: int = 150,
    length: int = 16,
    batch_size: int = 16,
    lr: float = 0.1,
    dataset_size: int = 64,
    teacher_noise: float = 0.005,
    floor: float = 0.04,
    eval_every: int = 5,
    seed: int = 0,
) -> ToyRun:
    """Train the tabular student with GKD and return its metrics along the way.

    Each step draws ``u`` uniform; if ``u < lam`` the batch is ``batch_size`` fresh student
    samples, else a minibatch of the fixed dataset (``dataset_size`` correct teacher samples drawn
    once). The loss is the mean over every prefix of the batch of ``D_beta(teacher || student)``
    at that prefix; a tabular student gets, per row, the visit frequency times the row's gradient.
    Adam updates the logits (betas 0.9/0.999, as ``torch.optim.Adam``).

    Args:
        lam: the on-policy probability, a constant or one value per step (a schedule).
        beta: generalized-JSD weight (0 forward KL, 1 reverse KL, TRL's convention).
        steps, batch_size, lr: Adam steps, sequences per step, learning rate.
        length: tokens per sequence ``T``.
        dataset_size: size of the fixed dataset of correct teacher samples (the off-policy
            data, see ``curated_dataset``).
        teacher_noise: teacher probability spread over invalid next tokens.
        floor: the student's capacity limit (see ``student_probs``).
        seed: seeds the student's initialisation, the dataset and every draw in training.
    """
    lams = np.full(steps, float(lam)) if np.isscalar(lam) else np.asarray(lam, dtype=float)
    if lams.shape != (steps,):
        raise ValueError(
            f"lam must be a number or have one value per step ({steps}), got shape {lams.shape}"
        )
    if np.any((lams < 0) | (lams > 1)):
        raise ValueError("lam must lie in [0, 1]")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"floor must be in [0, 1), got {floor}")
    if min(steps, length, batch_size, dataset_size, eval_every) < 1:
        raise ValueError("steps, length, batch_size, dataset_size and eval_every must be >= 1")
    rng = np.random.default_rng(seed)
    teacher = teacher_table(teacher_noise)
    dataset = curated_dataset(teacher, dataset_size, length, rng)
    logits = initial_student(seed)
    moment1, moment2 = np.zeros_like(logits), np.zeros_like(logits)
    b1, b2, eps = 0.9, 0.999, 1e-8

    evaluated = [0]
    metrics = [student_metrics(student_probs(logits, floor), teacher, length)]
    for step in range(steps):
        if rng.random() < lams[step]:
            states = sample_sequences(student_probs(logits, floor), batch_size, length, rng)[0]
        else:
            states = dataset[rng.integers(0, dataset_size, batch_size)]
        visits = np.bincount(states.reshape(-1), minlength=VOCAB + 1) / states.size
        _, grad = divergence_grad(teacher, logits, beta, floor)
        grad *= visits[:, None]
        moment1 = b1 * moment1 + (1 - b1) * grad
        moment2 = b2 * moment2 + (1 - b2) * grad**2
        m_hat = moment1 / (1 - b1 ** (step + 1))
        v_hat = moment2 / (1 - b2 ** (step + 1))
        logits = logits - lr * m_hat / (np.sqrt(v_hat) + eps)
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            evaluated.append(step + 1)
            metrics.append(student_metrics(student_probs(logits, floor), teacher, length))
    label: float | str = float(lam) if np.isscalar(lam) else "schedule"
    return ToyRun(label, float(beta), np.array(evaluated), metrics, student_probs(logits, floor))


def train_grid(
    lams: Sequence[float] = (0.0, 0.5, 1.0),
    betas: Sequence[float] = (0.0, 0.5, 1.0),
    seeds: Sequence[int] = (0,),
    **kwargs,
) -> dict[tuple[float, float], list[ToyRun]]:
    """``train_gkd_toy`` for every (lam, beta) pair and seed: ``{(lam, beta): [run per seed]}``."""
    return {
        (lam, beta): [train_gkd_toy(lam, beta, seed=s, **kwargs) for s in seeds]
        for lam in lams
        for beta in betas
    }
