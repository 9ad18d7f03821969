"""The chain rule of KL for autoregressive models, checked exactly by enumeration.

An autoregressive model gives a sequence ``y = (y_1, ..., y_T)`` the probability
``P(y) = prod_t p(y_t | y_<t)``. For two such models (Cover & Thomas, *Elements of Information
Theory*, Thm 2.5.3, applied to sequences):

    KL(P || Q) = sum_{t=1}^T E_{y_<t ~ P}[ KL(p(. | y_<t) || q(. | y_<t)) ].

The prefixes are drawn from the model in the KL's *first* argument. Hence

* forward KL per token on teacher prefixes (off-policy distillation) sums to the sequence-level
  forward KL ``KL(P_T || P_S)``;
* reverse KL per token on student prefixes (on-policy distillation) sums to the sequence-level
  reverse KL ``KL(P_S || P_T)``;
* forward KL per token on student prefixes (the DAgger-style hybrid) is neither.

A model here is a function ``next_probs(prefix) -> [V]`` from a tuple of token ids (``()`` is
the prompt alone) to the next-token distribution. Everything is exact: the ``V^T`` sequences
are enumerated, so keep ``V`` and ``T`` tiny. Per-token KLs come from
:mod:`opd_lib.divergences`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from opd_lib import divergences

NextToken = Callable[[tuple[int, ...]], np.ndarray]
MAX_SEQUENCES = 500_000


def markov_model(transition: np.ndarray, prompt: int) -> NextToken:
    """A Markov chain as a model: ``transition[a, b]`` = p(next = b | last = a); the prompt
    token ``prompt`` is the last token of the empty prefix."""
    matrix = np.asarray(transition, dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"transition must be a square [V, V] matrix, got shape {matrix.shape}")
    if not 0 <= prompt < matrix.shape[0]:
        raise ValueError(f"prompt must be a token id in [0, {matrix.shape[0]}), got {prompt}")

    def next_probs(prefix: tuple[int, ...]) -> np.ndarray:
        return matrix[prefix[-1] if prefix else prompt]

    return next_probs


def random_model(vocab_size: int, seed: int, concentration: float = 1.0) -> NextToken:
    """A model that conditions on the whole prefix: each prefix gets its own Dirichlet draw,
    from a generator seeded by ``(seed, prefix)``, so the model is a fixed (pure) function."""
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
    if concentration <= 0:
        raise ValueError(f"concentration must be positive, got {concentration}")

    def next_probs(prefix: tuple[int, ...]) -> np.ndarray:
        rng = np.random.default_rng([seed, len(prefix), *prefix])
        return rng.dirichlet(np.full(vocab_size, concentration))

    return next_probs


def _check_size(vocab_size: int, T: int) -> None:
    if not isinstance(T, int | np.integer) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    if not isinstance(vocab_size, int | np.integer) or vocab_size < 2:
        raise ValueError(f"vocab_size must be an int >= 2, got {vocab_size!r}")
    if vocab_size**T > MAX_SEQUENCES:
        raise ValueError(
            f"V^T = {vocab_size}^{T} sequences is too many to enumerate "
            f"(limit {MAX_SEQUENCES}); lower T"
        )


def _rows(model: NextToken, prefixes: list[tuple[int, ...]], vocab_size: int) -> np.ndarray:
    rows = np.stack([np.asarray(model(prefix), dtype=float) for prefix in prefixes])
    if rows.shape[1] != vocab_size:
        raise ValueError(f"a model returned {rows.shape[1]} probabilities, expected {vocab_size}")
    if (rows < 0).any() or not np.allclose(rows.sum(axis=1), 1.0, atol=1e-8):
        raise ValueError("a model returned a row that is not a probability distribution")
    return rows


def _prefixes(vocab_size: int, length: int) -> list[tuple[int, ...]]:
    return list(itertools.product(range(vocab_size), repeat=length))


def sequence_probs(model: NextToken, vocab_size: int, T: int) -> np.ndarray:
    """``[V^T]``: ``P(y) = prod_t p(y_t | y_<t)`` for every sequence of ``T`` tokens, in the
    lexicographic order of ``itertools.product(range(V), repeat=T)``."""
    _check_size(vocab_size, T)
    probs = np.ones(1)
    for t in range(T):
        probs = (probs[:, None] * _rows(model, _prefixes(vocab_size, t), vocab_size)).reshape(-1)
    return probs


def sequence_kl(first: NextToken, second: NextToken, vocab_size: int, T: int) -> float:
    """``KL(P || Q)`` between the distributions of whole ``T``-token sequences (exact)."""
    p, q = sequence_probs(first, vocab_size, T), sequence_probs(second, vocab_size, T)
    return float(divergences.forward_kl(p, q))


def position_kls(
    first: NextToken, second: NextToken, prefix_model: NextToken, vocab_size: int, T: int
) -> np.ndarray:
    """``[T]``: ``E_{y_<t ~ prefix_model}[ KL(first(. | y_<t) || second(. | y_<t)) ]``,
    ``t = 1..T``: the per-position terms of a token-level distillation loss.

    With ``prefix_model = first`` the sum over ``t`` is :func:`sequence_kl` (the chain rule)."""
    _check_size(vocab_size, T)
    out = np.zeros(T)
    prefix_probs = np.ones(1)
    for t in range(T):
        prefixes = _prefixes(vocab_size, t)
        kl = divergences.forward_kl(
            _rows(first, prefixes, vocab_size), _rows(second, prefixes, vocab_size)
        )
        out[t] = float(prefix_probs @ kl)
        writer = _rows(prefix_model, prefixes, vocab_size)
        prefix_probs = (prefix_probs[:, None] * writer).reshape(-1)
    return out
