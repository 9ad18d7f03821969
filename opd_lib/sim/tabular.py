"""Chapter 5's tabular sequence model: small enough to enumerate, so every expectation is exact.

A vocabulary of ``V`` tokens, sequences of fixed length ``L``, and one row of logits for every
prefix (``V^0 + V^1 + ... + V^(L-1)`` rows). With ``V = 4`` and ``L = 3`` there are 64 sequences,
so every expectation over the student's samples is a sum over all of them, and autograd on that
sum gives the *exact* gradient of the sequence-level reverse KL ``KL(p_theta(y) || p_T(y))``.
``L = 1`` is a plain categorical; its one-token worked numbers (the REINFORCE step on one
position, and the categorical reference gradient the Chapter 5 grader checks) are at the end.

Conventions: gradients are of the KL to be *minimised* (a descent step subtracts them); tables are
``float64`` torch tensors of shape ``[n_prefixes, V]``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from opd_lib._threads import single_thread
from opd_lib.divergences import logit_gradients

DTYPE = torch.float64


# --------------------------------------------------------------------------------------------
# The tabular sequence model
# --------------------------------------------------------------------------------------------


def _check_sizes(vocab: int, length: int) -> None:
    if vocab < 2:
        raise ValueError(f"vocab must be at least 2, got {vocab}")
    if length < 1:
        raise ValueError(f"length must be at least 1, got {length}")
    if vocab**length > 100_000:
        raise ValueError(f"vocab**length = {vocab**length} sequences is too many to enumerate")


def n_prefixes(vocab: int, length: int) -> int:
    """Number of prefixes of length 0 .. length-1, i.e. rows of a logit table."""
    _check_sizes(vocab, length)
    return sum(vocab**t for t in range(length))


def _check_table(table: torch.Tensor, vocab: int, length: int, name: str) -> None:
    expected = (n_prefixes(vocab, length), vocab)
    if tuple(table.shape) != expected:
        raise ValueError(f"{name} must have shape {expected}, got {tuple(table.shape)}")
    if not torch.isfinite(table).all():
        raise ValueError(f"{name} contains non-finite logits")


def random_table(vocab: int, length: int, scale: float = 1.5, seed: int = 0) -> torch.Tensor:
    """Logit table ``[n_prefixes, vocab]`` with i.i.d. N(0, scale^2) entries (float64)."""
    if scale < 0:
        raise ValueError(f"scale must be >= 0, got {scale}")
    gen = torch.Generator().manual_seed(seed)
    shape = (n_prefixes(vocab, length), vocab)
    return scale * torch.randn(shape, generator=gen, dtype=DTYPE)


def all_sequences(vocab: int, length: int) -> torch.Tensor:
    """Every sequence as a row of a LongTensor ``[vocab**length, length]``, in base-``vocab`` order
    (row ``i`` spells ``i`` in base ``vocab``, most significant token first)."""
    return _enumeration(vocab, length)[0].clone()


@functools.lru_cache(maxsize=16)
def _enumeration(vocab: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(all sequences, their prefix rows), cached; callers must not modify them."""
    _check_sizes(vocab, length)
    seqs = _spell(vocab, length)
    return seqs, prefix_rows(seqs, vocab)


def _spell(vocab: int, length: int) -> torch.Tensor:
    idx = torch.arange(vocab**length)
    powers = vocab ** torch.arange(length - 1, -1, -1)
    return (idx[:, None] // powers[None, :]) % vocab


def prefix_rows(sequences: torch.Tensor, vocab: int) -> torch.Tensor:
    """Row of the logit table used at each position: ``[N, L]`` LongTensor.

    The prefix ``y_<t`` of length ``t`` has row ``(V^t - 1)/(V - 1) + int(y_<t in base V)``.
    """
    if sequences.ndim != 2:
        raise ValueError(f"sequences must be [N, L], got shape {tuple(sequences.shape)}")
    if sequences.numel() and (sequences.min() < 0 or sequences.max() >= vocab):
        raise ValueError(f"sequences hold tokens outside 0 .. {vocab - 1}")
    N, L = sequences.shape
    rows = torch.zeros((N, L), dtype=torch.long)
    code = torch.zeros(N, dtype=torch.long)
    for t in range(L):
        rows[:, t] = (vocab**t - 1) // (vocab - 1) + code
        code = code * vocab + sequences[:, t]
    return rows


def tabular_logprobs(table: torch.Tensor, sequences: torch.Tensor) -> torch.Tensor:
    """``log p(y_t | y_<t)`` of each token of each sequence, ``[N, L]`` (differentiable)."""
    return _tabular_logprobs(table, sequences, prefix_rows(sequences, table.shape[1]))


def _tabular_logprobs(
    table: torch.Tensor, sequences: torch.Tensor, rows: torch.Tensor
) -> torch.Tensor:
    return F.log_softmax(table, dim=-1)[rows, sequences]


def exact_reverse_kl(student: torch.Tensor, teacher: torch.Tensor, length: int) -> torch.Tensor:
    """Sequence-level ``KL(p_theta || p_T) = sum_y p_theta(y) log(p_theta(y) / p_T(y))``, summed
    over all ``V^L`` sequences; differentiable with respect to ``student``."""
    vocab = student.shape[1]
    _check_table(student, vocab, length, "student")
    _check_table(teacher, vocab, length, "teacher")
    seqs, rows = _enumeration(vocab, length)
    ls = _tabular_logprobs(student, seqs, rows).sum(-1)
    lt = _tabular_logprobs(teacher.detach(), seqs, rows).sum(-1)
    return (ls.exp() * (ls - lt)).sum()


@single_thread()
def exact_gradient(student: torch.Tensor, teacher: torch.Tensor, length: int) -> torch.Tensor:
    """The exact gradient of :func:`exact_reverse_kl` w.r.t. the student table (autograd)."""
    theta = student.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(exact_reverse_kl(theta, teacher, length), theta)
    return grad


def sample_indices(p: torch.Tensor, n: int, seed: int) -> np.ndarray:
    """``n`` i.i.d. draws from the categorical ``p`` over sequence indices (NumPy, seeded)."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    rng = np.random.default_rng(seed)
    probs = p.detach().numpy().astype(np.float64)
    return rng.choice(len(probs), size=n, p=probs / probs.sum())


# --------------------------------------------------------------------------------------------
# Worked numbers for one token
# --------------------------------------------------------------------------------------------


class TokenGradient(NamedTuple):
    reward: float  # r = log p_T(k) - log p_theta(k)
    score: np.ndarray  # grad_logits log p_theta(k) = onehot(k) - p_theta
    gradient: np.ndarray  # r * score: the ascent direction on the logits from this one sample
    expected: np.ndarray  # -grad_logits KL(p_theta || p_T): the exact expected ascent direction


def token_gradient(p_student: np.ndarray, p_teacher: np.ndarray, token: int) -> TokenGradient:
    """Reward and one-sample REINFORCE step on the student's logits for a single position.

    ``p_student`` and ``p_teacher`` are next-token distributions over the same vocabulary;
    ``token`` is the sampled token. The logits move along ``r * (onehot(token) - p_student)``.
    """
    q = np.asarray(p_student, dtype=np.float64)
    p = np.asarray(p_teacher, dtype=np.float64)
    if q.shape != p.shape or q.ndim != 1:
        raise ValueError(f"need two 1-D distributions of equal size, got {q.shape} and {p.shape}")
    if (q <= 0).any() or (p <= 0).any():
        raise ValueError("probabilities must be strictly positive")
    if not (np.isclose(q.sum(), 1) and np.isclose(p.sum(), 1)):
        raise ValueError("p_student and p_teacher must each sum to 1")
    if not 0 <= token < len(q):
        raise ValueError(f"token {token} outside 0 .. {len(q) - 1}")
    r = float(np.log(p[token]) - np.log(q[token]))
    score = -q.copy()
    score[token] += 1.0
    expected = -logit_gradients(torch.from_numpy(np.log(q)), torch.from_numpy(np.log(p))).numpy()
    return TokenGradient(r, score, r * score, expected)


def categorical_reinforce_estimate(
    student_logits: np.ndarray, teacher_logp: np.ndarray, samples: np.ndarray
) -> np.ndarray:
    """REINFORCE estimate of grad_logits KL(softmax(z) || p_T) for a categorical from ``samples``:
    ``-(1/N) sum_i r(y_i) (onehot(y_i) - softmax(z))`` with ``r = log p_T - log softmax(z)``."""
    z = np.asarray(student_logits, dtype=np.float64)
    lt = np.asarray(teacher_logp, dtype=np.float64)
    y = np.asarray(samples)
    if z.ndim != 1 or z.shape != lt.shape:
        raise ValueError(
            f"logits and teacher log-probs must be equal 1-D shapes, got {z.shape}, {lt.shape}"
        )
    if y.ndim != 1 or len(y) == 0 or y.min() < 0 or y.max() >= len(z):
        raise ValueError("samples must be a non-empty 1-D array of token ids")
    logq = z - np.logaddexp.reduce(z)
    q = np.exp(logq)
    r = lt[y] - logq[y]
    score = np.eye(len(z))[y] - q[None, :]
    return -(r[:, None] * score).mean(0)


def categorical_exact_gradient(student_logits: np.ndarray, teacher_logp: np.ndarray) -> np.ndarray:
    """Exact grad_logits KL(softmax(z) || p_T) = q * (a - sum q a), a = log q - log p_T
    (:func:`opd_lib.divergences.logit_gradients`)."""
    z = torch.as_tensor(np.asarray(student_logits, dtype=np.float64))
    return logit_gradients(z, torch.as_tensor(np.asarray(teacher_logp, dtype=np.float64))).numpy()
