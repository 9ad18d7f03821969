"""Chapter 5: reverse KL is reinforcement learning, checked on models small enough to enumerate.

The toy is a *tabular sequence model*: a vocabulary of ``V`` tokens, sequences of fixed length
``L``, and one row of logits for every prefix (``V^0 + V^1 + ... + V^(L-1)`` rows). With ``V = 4``
and ``L = 3`` there are 64 sequences, so every expectation over the student's samples can be
computed exactly by summing over all of them, and autograd on that sum gives the *exact* gradient of
the sequence-level reverse KL ``KL(p_theta(y) || p_T(y))``. ``L = 1`` is a plain categorical.

Because the model is tabular, a sampled gradient estimate depends only on which sequence was
sampled. :func:`per_sequence_gradients` therefore computes, for each of the ``V^L`` sequences, the
gradient estimate one sample of it would produce; Monte-Carlo estimates are averages of rows of that
table picked by sampling, and the estimator's exact mean and variance follow by weighting the rows
with ``p_theta(y)``. :func:`batch_gradient_via_pg` computes the same estimates the way a trainer
does, through :mod:`opd_lib.pg` and autograd, and the tests check that the two agree.

The second half is G-OPD on a categorical over answers (:func:`gopd_optimum`,
:func:`verifier_bonus_optimum` and the optimisers that check them).

Conventions: gradients are of the KL to be *minimised* (a descent step subtracts them); tables are
``float64`` torch tensors of shape ``[n_prefixes, V]``.
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from opd_lib import pg
from opd_lib._threads import single_thread

Estimator = Literal["sequence", "reward_to_go", "single_step", "length_normalized", "per_token"]
Baseline = Literal["none", "mean", "value"]
ESTIMATORS: tuple[str, ...] = (
    "sequence",
    "reward_to_go",
    "single_step",
    "length_normalized",
    "per_token",
)
BASELINES: tuple[str, ...] = ("none", "mean", "value")
UNBIASED: tuple[str, ...] = ("sequence", "reward_to_go", "single_step")
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


def token_logprobs(table: torch.Tensor, sequences: torch.Tensor) -> torch.Tensor:
    """``log p(y_t | y_<t)`` of each token of each sequence, ``[N, L]`` (differentiable)."""
    return _token_logprobs(table, sequences, prefix_rows(sequences, table.shape[1]))


def _token_logprobs(
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
    ls = _token_logprobs(student, seqs, rows).sum(-1)
    lt = _token_logprobs(teacher.detach(), seqs, rows).sum(-1)
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
        ls = _token_logprobs(student, seqs, rows)
        lt = _token_logprobs(teacher, seqs, rows)
        rewards = pg.per_token_reverse_kl_reward(lt, ls)
        logq, logt = F.log_softmax(student, -1), F.log_softmax(teacher, -1)
        kl_rows = (logq.exp() * (logq - logt)).sum(-1)  # [n_prefixes]
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
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {ESTIMATORS}")
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
        if estimator == "single_step":
            logq = F.log_softmax(student.detach(), -1)[rows]
            logt = F.log_softmax(teacher.detach(), -1)[rows]
            a = logq - logt
            g[seq_idx, rows] += probs[rows] * (a - tab.step_kl[:, t : t + 1])
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
    logp = token_logprobs(theta, sequences)
    logp_t = token_logprobs(teacher.detach(), sequences)
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
    raise ValueError(f"unknown estimator {estimator!r}; expected one of {ESTIMATORS}")


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
    if estimator != "exact" and estimator not in ESTIMATORS:
        raise ValueError(
            f"unknown estimator {estimator!r}; expected 'exact' or one of {ESTIMATORS}"
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
    a = np.log(q) - np.log(p)
    expected = -q * (a - (q * a).sum())
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
    """Exact grad_logits KL(softmax(z) || p_T) = q * (a - sum q a), a = log q - log p_T."""
    z = np.asarray(student_logits, dtype=np.float64)
    logq = z - np.logaddexp.reduce(z)
    q = np.exp(logq)
    a = logq - np.asarray(teacher_logp, dtype=np.float64)
    return q * (a - (q * a).sum())


# --------------------------------------------------------------------------------------------
# G-OPD: two ways to end above the teacher
# --------------------------------------------------------------------------------------------


def _check_dist(p: np.ndarray, name: str) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1 or (p <= 0).any() or not np.isclose(p.sum(), 1.0):
        raise ValueError(f"{name} must be a 1-D distribution with positive entries summing to 1")
    return p


def gopd_optimum(p_teacher: np.ndarray, p_reference: np.ndarray, lam: float) -> np.ndarray:
    """The maximiser of the G-OPD paper's objective over all distributions pi (arXiv:2602.12125):

    J(pi) = E_pi[ lam * log(p_T / p_ref) ] - KL(pi || p_ref),   pi* ∝ p_ref^(1-lam) * p_T^lam.
    """
    pt, pr = _check_dist(p_teacher, "p_teacher"), _check_dist(p_reference, "p_reference")
    if pt.shape != pr.shape:
        raise ValueError(f"shape mismatch: {pt.shape} vs {pr.shape}")
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be finite and >= 0, got {lam}")
    logits = (1 - lam) * np.log(pr) + lam * np.log(pt)
    return np.exp(logits - np.logaddexp.reduce(logits))


def verifier_bonus_optimum(p_teacher: np.ndarray, verifier: np.ndarray, beta: float) -> np.ndarray:
    """The maximiser of the seed's objective E_pi[log p_T + beta R_ext] + H(pi):
    pi* ∝ p_T * exp(beta * R_ext)."""
    pt = _check_dist(p_teacher, "p_teacher")
    R = np.asarray(verifier, dtype=np.float64)
    if R.shape != pt.shape:
        raise ValueError(f"shape mismatch: verifier {R.shape} vs p_teacher {pt.shape}")
    if not math.isfinite(beta):
        raise ValueError(f"beta must be finite, got {beta}")
    logits = np.log(pt) + beta * R
    return np.exp(logits - np.logaddexp.reduce(logits))


@single_thread()
def optimise_exact(
    p_teacher: np.ndarray,
    form: Literal["paper", "seed"],
    coef: float,
    p_reference: np.ndarray | None = None,
    verifier: np.ndarray | None = None,
    steps: int = 300,
    lr: float = 0.3,
) -> np.ndarray:
    """Maximise either objective over softmax logits by Adam on the exact objective (autograd),
    starting from uniform; returns the final distribution. ``form="paper"`` uses ``coef`` as lam
    and needs ``p_reference``; ``form="seed"`` uses it as beta and needs ``verifier``."""
    pt = torch.tensor(_check_dist(p_teacher, "p_teacher")).log()
    if form == "paper":
        if p_reference is None:
            raise ValueError("form='paper' needs p_reference")
        pr = torch.tensor(_check_dist(p_reference, "p_reference")).log()
        reward = coef * (pt - pr)
    elif form == "seed":
        if verifier is None:
            raise ValueError("form='seed' needs verifier")
        pr = torch.zeros_like(pt)  # objective: E[log p_T + beta R] + H = E[reward - log pi]
        reward = pt + coef * torch.as_tensor(np.asarray(verifier, dtype=np.float64))
    else:
        raise ValueError(f"form must be 'paper' or 'seed', got {form!r}")
    z = torch.zeros_like(pt, requires_grad=True)
    opt = torch.optim.Adam([z], lr=lr)
    for _ in range(steps):
        logpi = F.log_softmax(z, -1)
        objective = (logpi.exp() * (reward - (logpi - pr))).sum()
        opt.zero_grad()
        (-objective).backward()
        opt.step()
    return F.softmax(z.detach(), -1).numpy()


@single_thread()
def optimise_sampled(
    p_teacher: np.ndarray,
    form: Literal["paper", "seed"],
    coef: float,
    p_reference: np.ndarray | None = None,
    verifier: np.ndarray | None = None,
    batch: int = 64,
    steps: int = 250,
    lr: float = 0.2,
    seed: int = 0,
) -> np.ndarray:
    """The same optimisation from *samples only*, as a trainer does it: draw ``batch`` answers from
    the student, reward them with :func:`opd_lib.pg.extrapolated_reward` (paper) or
    :func:`opd_lib.pg.verifier_augmented_reward` (seed), add the student's own ``-log`` term, and
    step on :func:`opd_lib.pg.reinforce_loss` with a leave-one-out baseline. Returns the final
    distribution."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    lt = torch.tensor(_check_dist(p_teacher, "p_teacher")).log()
    if form == "paper":
        if p_reference is None:
            raise ValueError("form='paper' needs p_reference")
        lr_ref = torch.tensor(_check_dist(p_reference, "p_reference")).log()
    elif form == "seed":
        if verifier is None:
            raise ValueError("form='seed' needs verifier")
        R = torch.as_tensor(np.asarray(verifier, dtype=np.float64))
    else:
        raise ValueError(f"form must be 'paper' or 'seed', got {form!r}")
    if batch < 2:
        raise ValueError(f"batch must be >= 2 for the leave-one-out baseline, got {batch}")
    z = torch.zeros_like(lt, requires_grad=True)
    opt = torch.optim.Adam([z], lr=lr)
    mask = torch.ones((batch, 1), dtype=torch.bool)
    for _ in range(steps):
        logpi = F.log_softmax(z, -1)
        y = torch.multinomial(logpi.detach().exp(), batch, replacement=True, generator=gen)
        logp = logpi[y].unsqueeze(-1)  # [B, 1]
        if form == "paper":
            r = pg.extrapolated_reward(lt[y, None], lr_ref[y, None], coef)
            r = r + (lr_ref[y, None] - logp).detach()
        else:
            r = pg.verifier_augmented_reward(lt[y, None], R[y], coef, mask) - logp.detach()
        loo = (r.sum() - r) / (batch - 1)
        loss = pg.reinforce_loss(logp, r, mask, baseline=loo)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return F.softmax(z.detach(), -1).numpy()
