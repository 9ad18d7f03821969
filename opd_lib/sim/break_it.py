"""Chapter 9: three ways to break on-policy distillation, each small enough to run in a second.

1. **A loop scored by the teacher.** :func:`make_copy_pair` builds two toy word-level language
   models (a teacher and a student) with the *self-reinforcement* of repetition that real language
   models show (Xu et al. 2022, "Learning to Break the Loop", arXiv:2206.02369: the more often a
   phrase has already been repeated, the likelier the model is to repeat it again).
   :func:`score_rollout` gives the per-token quantities an on-policy distiller would use on one
   rollout; :func:`copy_lm_rollouts` draws a batch; :func:`loop_report` scores a batch and runs the
   real filters of :mod:`opd_lib.prefix` on it.
2. **SPIN saturating.** :func:`spin_break` runs SPIN rounds on exact expectations
   (:func:`spin_phase`, :func:`expected_spin_loss`) until the policy matches its data, with the
   margin each round reaches (:func:`expected_spin_margin`), then applies the fix (fresh data: the
   saturated policy's own samples filtered by a verifier with
   :func:`opd_lib.rl.rejection_sampling_targets`) and runs more rounds. This scenario lives in
   :mod:`opd_lib.sim.spin_toys`; its names are re-exported here.
3. **Forward KL averages two answers.** :func:`averaging_answers` fits a one-Gaussian student to a
   teacher with two valid integer answers with :func:`opd_lib.sim.fdiv.fit_student` under forward
   and reverse KL and decodes each greedily. :func:`gaussian_moments` is the forward-KL optimum in
   closed form (moment matching).

Everything is deterministic given its ``seed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from opd_lib import divergences, prefix
from opd_lib.sim import fdiv
from opd_lib.sim.spin_toys import (
    SpinBreak,
    SpinPhase,
    expected_spin_loss,
    expected_spin_margin,
    spin_break,
    spin_phase,
    verifier_filtered_data,
)

__all__ = [
    "AveragingResult",
    "CopyLM",
    "CopyPair",
    "LoopReport",
    "RolloutScores",
    "SpinBreak",
    "SpinPhase",
    "V",
    "WORDS",
    "averaging_answers",
    "copy_lm_rollouts",
    "expected_spin_loss",
    "expected_spin_margin",
    "gaussian_moments",
    "longest_run",
    "loop_report",
    "make_copy_pair",
    "next_token_probs",
    "score_rollout",
    "spin_break",
    "spin_phase",
    "verifier_filtered_data",
]

# ------------------------------------------------------------------ 1. a loop scored by a teacher

WORDS: tuple[str, ...] = (
    "the", "cat", "dog", "sat", "ran", "on", "in", "a", "mat", "park", "and", ".",
)  # fmt: skip
"""The toy vocabulary; word ``i`` is token id ``i``. Row ``len(WORDS)`` of a table is the start."""

V = len(WORDS)


@dataclass(frozen=True)
class CopyLM:
    """A bigram model plus a copy mechanism that strengthens with the length of a repeat run.

    ``p(. | prefix) = (1 - c) * softmax(bigram[last]) + c * onehot(last)``, where ``last`` is the
    prefix's final token and ``c = copy_strength * (r - 1) / (r - 1 + half_run)`` with ``r`` the
    length of the run of ``last`` at the end of the prefix. A single token (``r = 1``) is not yet a
    repeat (``c = 0``); every further repeat makes the next one likelier, which is the
    self-reinforcement effect. ``bigram`` is ``[V + 1, V]`` logits, row ``V`` for the start.
    """

    bigram: np.ndarray
    copy_strength: float
    half_run: float


@dataclass(frozen=True)
class CopyPair:
    teacher: CopyLM
    student: CopyLM


def make_copy_pair(
    teacher_copy: float = 0.9,
    student_copy: float = 0.98,
    half_run: float = 2.0,
    student_self_logit: float = -1.0,
    seed: int = 0,
) -> CopyPair:
    """A teacher and a weaker student over :data:`WORDS`.

    The teacher's bigram logits are ``Normal(0, 2)`` draws with the self-transition set to -4 (an
    immediate repeat such as "the the" is ungrammatical). The student's are the teacher's shrunk
    by 0.6 plus ``Normal(0, 0.7)`` noise (a blurrier, slightly wrong copy), with the
    self-transition at ``student_self_logit`` (it starts loops more readily). ``teacher_copy`` and
    ``student_copy`` in ``[0, 1)`` set each model's copy strength; ``teacher_copy = 0`` is a teacher
    with no self-reinforcement at all.
    """
    for name, value in (("teacher_copy", teacher_copy), ("student_copy", student_copy)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must lie in [0, 1), got {value}")
    if half_run <= 0:
        raise ValueError(f"half_run must be > 0, got {half_run}")
    rng = np.random.default_rng(seed)
    teacher = rng.normal(0.0, 2.0, (V + 1, V))
    student = 0.6 * teacher + rng.normal(0.0, 0.7, (V + 1, V))
    diag = np.arange(V)
    teacher[diag, diag] = -4.0
    student[diag, diag] = student_self_logit
    return CopyPair(
        CopyLM(teacher, teacher_copy, half_run), CopyLM(student, student_copy, half_run)
    )


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _run_length(prefix_ids: Sequence[int]) -> int:
    r = 0
    for tok in reversed(prefix_ids):
        if tok != prefix_ids[-1]:
            break
        r += 1
    return r


def next_token_probs(lm: CopyLM, prefix_ids: Sequence[int]) -> np.ndarray:
    """``p(. | prefix)`` as a ``[V]`` probability vector (an empty prefix is the start of text)."""
    if len(prefix_ids) == 0:
        return _softmax(lm.bigram[V])
    last = int(prefix_ids[-1])
    if not 0 <= last < V:
        raise ValueError(f"token ids must lie in [0, {V}), got {last}")
    r = _run_length(list(prefix_ids))
    c = lm.copy_strength * (r - 1) / (r - 1 + lm.half_run)
    probs = (1.0 - c) * _softmax(lm.bigram[last])
    probs[last] += c
    return probs


@dataclass(frozen=True)
class RolloutScores:
    """Per-token quantities ``[T]`` of one rollout under a teacher and a student.

    ``reward`` is the on-policy distillation reward ``log p_T(y_t) - log p_S(y_t)``
    (:func:`opd_lib.pg.per_token_reverse_kl_reward`'s formula); ``reverse_kl`` is the full
    ``KL(p_S || p_T)`` at each position; ``teacher_repeat`` is the teacher's probability of
    repeating the previous token (0 at the first position).
    """

    teacher_logp: np.ndarray
    student_logp: np.ndarray
    reward: np.ndarray
    reverse_kl: np.ndarray
    teacher_repeat: np.ndarray


def score_rollout(pair: CopyPair, tokens: Sequence[int]) -> RolloutScores:
    """Score ``tokens`` (a rollout written after the start of text) position by position."""
    ids = [int(t) for t in tokens]
    if len(ids) == 0:
        raise ValueError("tokens is empty")
    if min(ids) < 0 or max(ids) >= V:
        raise ValueError(f"token ids must lie in [0, {V})")
    p_t = np.array([next_token_probs(pair.teacher, ids[:t]) for t in range(len(ids))])
    p_s = np.array([next_token_probs(pair.student, ids[:t]) for t in range(len(ids))])
    pos = np.arange(len(ids))
    t_logp, s_logp = np.log(p_t[pos, ids]), np.log(p_s[pos, ids])
    repeat = np.zeros(len(ids))
    repeat[1:] = p_t[pos[1:], ids[:-1]]
    rkl = np.asarray(divergences.reverse_kl(p_t, p_s), dtype=float)
    return RolloutScores(t_logp, s_logp, t_logp - s_logp, rkl, repeat)


def copy_lm_rollouts(lm: CopyLM, n: int, length: int, seed: int = 0) -> np.ndarray:
    """``n`` rollouts of ``length`` tokens sampled from ``lm`` at temperature 1: ``[n, length]``."""
    if n < 1 or length < 1:
        raise ValueError(f"need n >= 1 and length >= 1, got {n}, {length}")
    rng = np.random.default_rng(seed)
    out = np.empty((n, length), dtype=np.int64)
    u = rng.random((n, length))
    for i in range(n):
        for t in range(length):
            cdf = np.cumsum(next_token_probs(lm, out[i, :t]))
            out[i, t] = min(int(np.searchsorted(cdf, u[i, t] * cdf[-1], side="right")), V - 1)
    return out


def longest_run(tokens: np.ndarray) -> np.ndarray:
    """Length of the longest run of one repeated token in each row of ``tokens`` ``[B, T]``."""
    tokens = np.atleast_2d(np.asarray(tokens))
    best = np.ones(tokens.shape[0], dtype=np.int64)
    run = np.ones(tokens.shape[0], dtype=np.int64)
    for t in range(1, tokens.shape[1]):
        run = np.where(tokens[:, t] == tokens[:, t - 1], run + 1, 1)
        best = np.maximum(best, run)
    return best


@dataclass(frozen=True)
class LoopReport:
    """A scored batch ``[B]``: mean per-token reward and reverse KL, perplexities, loop flags, and
    the keep masks of :func:`opd_lib.prefix.repetition_mask` and
    :func:`opd_lib.prefix.flawed_prefix_mask` (the latter under the student and under the
    teacher)."""

    mean_reward: np.ndarray
    mean_reverse_kl: np.ndarray
    ppl_student: np.ndarray
    ppl_teacher: np.ndarray
    is_loop: np.ndarray
    keep_repetition: np.ndarray
    keep_ppl_student: np.ndarray
    keep_ppl_teacher: np.ndarray


def loop_report(
    pair: CopyPair,
    rollouts: np.ndarray,
    loop_run: int = 6,
    ngram: int = 3,
    max_repeats: int = 3,
    max_perplexity: float | None = None,
) -> LoopReport:
    """Score every rollout and run both real filters on the batch.

    ``is_loop`` (the ground truth for the figure) marks rows with a run of at least ``loop_run``
    equal tokens. ``max_perplexity=None`` sets the perplexity threshold to the largest perplexity
    of a non-loop row under the scoring model, i.e. the strictest threshold that still keeps all
    ordinary text (so any loop it drops, it drops fairly).
    """
    rollouts = np.asarray(rollouts)
    if rollouts.ndim != 2 or rollouts.size == 0:
        raise ValueError(f"rollouts must be a non-empty [B, T] array, got {rollouts.shape}")
    scores = [score_rollout(pair, row) for row in rollouts]
    t_logp = torch.tensor(np.array([s.teacher_logp for s in scores]))
    s_logp = torch.tensor(np.array([s.student_logp for s in scores]))
    mask = torch.ones_like(t_logp, dtype=torch.bool)
    ppl_s = torch.exp(-s_logp.mean(1)).numpy()
    ppl_t = torch.exp(-t_logp.mean(1)).numpy()
    is_loop = longest_run(rollouts) >= loop_run
    keep_rep = prefix.repetition_mask(torch.as_tensor(rollouts), mask, ngram, max_repeats)

    def ppl_keep(logp: torch.Tensor, ppl: np.ndarray) -> np.ndarray:
        limit = max_perplexity
        if limit is None:
            limit = float(ppl[~is_loop].max()) if (~is_loop).any() else float(ppl.max())
        return prefix.flawed_prefix_mask(logp, mask, max(limit * (1 + 1e-9), 1.0)).numpy()

    return LoopReport(
        mean_reward=np.array([s.reward.mean() for s in scores]),
        mean_reverse_kl=np.array([s.reverse_kl.mean() for s in scores]),
        ppl_student=ppl_s,
        ppl_teacher=ppl_t,
        is_loop=is_loop,
        keep_repetition=keep_rep.numpy(),
        keep_ppl_student=ppl_keep(s_logp, ppl_s),
        keep_ppl_teacher=ppl_keep(t_logp, ppl_t),
    )


# ------------------------------------------------------------ 3. forward KL averages answers


def gaussian_moments(x: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the distribution ``p`` on the grid ``x``.

    For a continuous Gaussian family these are exactly the forward-KL optimum
    ``argmin KL(p || N(mu, sigma^2))`` (moment matching); on a grid the fitted discretised
    Gaussian is close to them.
    """
    x, p = np.asarray(x, dtype=float), np.asarray(p, dtype=float)
    if x.ndim != 1 or x.shape != p.shape:
        raise ValueError(f"x {x.shape} and p {p.shape} must be equal 1-D shapes")
    if (p < 0).any() or not np.isclose(p.sum(), 1.0):
        raise ValueError("p must be a probability vector")
    mean = float(p @ x)
    return mean, float(np.sqrt(p @ (x - mean) ** 2))


@dataclass(frozen=True)
class AveragingResult:
    """The teacher, each fit (``"fkl"`` and ``"rkl from <start>"``), and each fit's greedy answer
    with the teacher's probability of that answer."""

    teacher: fdiv.Teacher
    fits: dict[str, fdiv.FitResult]
    greedy: dict[str, int]
    teacher_prob: dict[str, float]
    answers: tuple[int, int]


def averaging_answers(
    answers: tuple[int, int] = (4, 12),
    left_weight: float = 0.6,
    lo: int = 0,
    hi: int = 16,
    width: float = 1.0,
    rkl_starts: Sequence[float] = (2.0, 8.0, 14.0),
    steps: int = 300,
    lr: float = 0.1,
) -> AveragingResult:
    """A teacher with two valid integer answers, fitted by a one-Gaussian student.

    The teacher is :func:`opd_lib.sim.fdiv.bimodal_teacher` on the integers ``lo..hi`` with modes
    at ``answers`` (weights ``left_weight`` and ``1 - left_weight``, spread ``width``). The student
    is fitted with :func:`opd_lib.sim.fdiv.fit_student` under forward KL (from the grid's middle)
    and under reverse KL from each of ``rkl_starts``; greedy decoding takes the student's most
    likely integer.
    """
    if not lo < answers[0] < answers[1] < hi:
        raise ValueError(f"need lo < answers[0] < answers[1] < hi, got {answers}, {lo}, {hi}")
    teacher = fdiv.bimodal_teacher(
        n_points=hi - lo + 1, lo=float(lo), hi=float(hi), centers=(float(answers[0]),
        float(answers[1])), width=width, left_weight=left_weight,
    )  # fmt: skip
    fits = {
        "fkl": fdiv.fit_student(
            teacher.probs, teacher.x, "fkl", steps=steps, lr=lr, init_mean=(lo + hi) / 2
        )
    }
    for start in rkl_starts:
        fits[f"rkl from {start:g}"] = fdiv.fit_student(
            teacher.probs, teacher.x, "rkl", steps=steps, lr=lr, init_mean=float(start)
        )
    greedy = {k: int(teacher.x[np.argmax(f.probs)]) for k, f in fits.items()}
    t_prob = {k: float(teacher.probs[g - lo]) for k, g in greedy.items()}
    return AveragingResult(teacher, fits, greedy, t_prob, (int(answers[0]), int(answers[1])))
