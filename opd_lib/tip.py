"""Token importance for on-policy distillation (Chapter 7, pillar 1): which tokens to train on.

Two scores, from two sources that disagree about what matters:

* :func:`token_importance`, after TIP (Xu et al. 2026, "TIP: Token Importance in On-Policy
  Distillation", arXiv:2604.14084): informative tokens are where the *student* is uncertain (high
  student entropy) OR where it is confidently wrong (low student entropy, high teacher-student
  divergence). A product entropy * divergence would bury that second, "overconfident" region,
  which TIP finds carries dense corrective signal, so TIP combines the two axes with an OR.
* :func:`teacher_confidence_importance`, a teacher-confidence-weighted variant
  (1 - H_T / log V) * KL, not from the TIP paper: trust tokens where the *teacher* is confident
  and the student disagrees.

:func:`select_tokens` turns either score into a training mask.
"""

from __future__ import annotations

import math

import torch

from opd_lib import validate


def _check_pair(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor):
    """Both as real tensors (integers become float) of one shape."""
    a = validate.float_tensor(a, name_a, allow_int=True)
    b = validate.float_tensor(b, name_b, allow_int=True)
    validate.same_shape(**{name_a: a, name_b: b})
    return a, b


def _check_mask(mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return validate.mask(mask, "mask", shape, what="the scores")


def _nonnegative(x: torch.Tensor, name: str, mask: torch.Tensor | None = None) -> None:
    """Finite and >= 0 (an entropy or a divergence; float32 rounding tolerated)."""
    validate.no_nan(x, name, where=mask, inf="both")
    if ((x if mask is None else x[mask]) < -1e-5).any():
        raise ValueError(f"{name} must be >= 0 (an entropy or a divergence)")


def _min_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(x - min) / (max - min) over the masked entries; all zeros when they are all equal."""
    lo, hi = x[mask].min(), x[mask].max()
    if hi == lo:
        return torch.zeros_like(x)
    return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)


def token_importance(
    student_entropy: torch.Tensor,
    divergence: torch.Tensor,
    alpha: float = 1.0,
    gamma: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """TIP-style Soft-OR importance of each token, in [0, 1], detached.

        h = minmax(student_entropy),  d = minmax(divergence)   (over the masked tokens of the batch)
        a = h^alpha,  b = d^gamma
        score = a + b - a * b = 1 - (1 - a)(1 - b)

    High when either the student is uncertain (a near 1) or the teacher disagrees (b near 1), so
    low-entropy, high-divergence ("overconfident and wrong") tokens score high too. Source: TIP
    (arXiv:2604.14084) names its combined score "Soft-OR" and normalises both axes by per-batch
    min-max; its exact expression could not be retrieved here, so the probabilistic OR above is
    this library's reading of it, and the exponents alpha, gamma (> 0) are this library's knobs for
    sharpening each axis (alpha = gamma = 1 is the plain Soft-OR). ``mask`` (default: all tokens)
    picks the tokens that set the min-max range; tokens outside it score 0.
    """
    student_entropy, divergence = _check_pair(
        "student_entropy", student_entropy, "divergence", divergence
    )
    if mask is None:
        mask = torch.ones_like(student_entropy, dtype=torch.bool)
    mask = _check_mask(mask, student_entropy.shape)
    _nonnegative(student_entropy, "student_entropy", mask)
    _nonnegative(divergence, "divergence", mask)
    alpha, gamma = validate.positive(alpha, "alpha"), validate.positive(gamma, "gamma")
    a = _min_max(student_entropy.detach(), mask) ** alpha
    b = _min_max(divergence.detach(), mask) ** gamma
    return torch.where(mask, a + b - a * b, torch.zeros_like(a))


def teacher_confidence_importance(
    teacher_entropy: torch.Tensor, divergence: torch.Tensor, vocab_size: int
) -> torch.Tensor:
    """Teacher-confidence-weighted importance w_t = (1 - H(p_T(. | y_<t)) / log V) * D_t, detached.

    H / log V is the teacher's entropy normalised to [0, 1] (log V is the entropy of the uniform
    distribution over V tokens), so the first factor is the teacher's confidence; D_t is the
    per-token divergence, e.g. KL(p_T || p_theta) (Chapter 7).
    High weight = teacher confident and student far from it. This is not TIP's score (see
    :func:`token_importance`): it discounts uncertain-teacher tokens instead of keeping uncertain-
    student ones. ``teacher_entropy`` must lie in [0, log V] (up to rounding).
    """
    teacher_entropy, divergence = _check_pair(
        "teacher_entropy", teacher_entropy, "divergence", divergence
    )
    vocab_size = validate.integer(vocab_size, "vocab_size", minimum=2)
    validate.no_nan(teacher_entropy, "teacher_entropy", inf="both")
    _nonnegative(divergence, "divergence")
    log_v = math.log(vocab_size)
    tol = 1e-5 * log_v
    if (teacher_entropy < -tol).any() or (teacher_entropy > log_v + tol).any():
        raise ValueError(f"teacher_entropy must lie in [0, log V = {log_v:.4f}]")
    confidence = (1.0 - teacher_entropy.detach() / log_v).clamp(0.0, 1.0)
    return confidence * divergence.detach()


def select_tokens(
    scores: torch.Tensor,
    mask: torch.Tensor,
    keep_fraction: float | None = None,
    threshold: float | None = None,
) -> torch.Tensor:
    """Boolean training mask, a subset of ``mask``, from per-token importance scores.

    Give exactly one of:

    * ``keep_fraction`` in (0, 1]: keep the k = ceil(keep_fraction * n) highest-scoring of the n
      masked tokens of the whole batch (so at least one is kept). Ties are broken by position:
      the earlier token in row-major order wins, so the result is deterministic.
    * ``threshold``: keep the masked tokens with score >= threshold.
    """
    scores = validate.float_tensor(scores, "scores", allow_int=True)
    mask = _check_mask(mask, scores.shape)
    if (keep_fraction is None) == (threshold is None):
        raise ValueError("give exactly one of keep_fraction and threshold")
    validate.no_nan(scores, "scores", where=mask, inf="both")
    if threshold is not None:
        threshold = validate.real(threshold, "threshold")
        return mask & (scores >= threshold)
    keep_fraction = validate.real(keep_fraction, "keep_fraction")
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must lie in (0, 1], got {keep_fraction}")
    flat_mask = mask.reshape(-1)
    candidates = torch.nonzero(flat_mask).flatten()
    k = math.ceil(round(keep_fraction * candidates.numel(), 9))  # 0.3 * 10 is 3, not 4
    order = torch.sort(scores.reshape(-1)[candidates], descending=True, stable=True).indices
    keep = torch.zeros_like(flat_mask)
    keep[candidates[order[:k]]] = True
    return keep.reshape(mask.shape)
