"""Token importance for on-policy distillation (Chapter 7, pillar 1): which tokens to train on.

Two scores, from two sources that disagree about what matters:

* :func:`token_importance`, after TIP (Xu et al. 2026, "TIP: Token Importance in On-Policy
  Distillation", arXiv:2604.14084): informative tokens are where the *student* is uncertain (high
  student entropy) OR where it is confidently wrong (low student entropy, high teacher-student
  divergence). A product entropy * divergence would bury that second, "overconfident" region,
  which TIP finds carries dense corrective signal, so TIP combines the two axes with an OR.
* :func:`teacher_confidence_importance`, the seed's form (1 - H_T / log V) * KL: trust tokens where
  the *teacher* is confident and the student disagrees.

:func:`select_tokens` turns either score into a training mask.
"""

from __future__ import annotations

import math

import torch


def _check_pair(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {name_a} {tuple(a.shape)} vs {name_b} {tuple(b.shape)}")


def _check_mask(mask: torch.Tensor, shape: torch.Size) -> None:
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got dtype {mask.dtype}")
    if mask.shape != shape:
        raise ValueError(f"shape mismatch: mask {tuple(mask.shape)} vs scores {tuple(shape)}")
    if not mask.any():
        raise ValueError("mask selects no tokens")


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
    _check_pair("student_entropy", student_entropy, "divergence", divergence)
    if mask is None:
        mask = torch.ones_like(student_entropy, dtype=torch.bool)
    _check_mask(mask, student_entropy.shape)
    if torch.isnan(student_entropy[mask]).any() or torch.isnan(divergence[mask]).any():
        raise ValueError("student_entropy or divergence contains NaN at masked tokens")
    for name, value in (("alpha", alpha), ("gamma", gamma)):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be finite and > 0, got {value}")
    a = _min_max(student_entropy.detach(), mask) ** alpha
    b = _min_max(divergence.detach(), mask) ** gamma
    return torch.where(mask, a + b - a * b, torch.zeros_like(a))


def teacher_confidence_importance(
    teacher_entropy: torch.Tensor, divergence: torch.Tensor, vocab_size: int
) -> torch.Tensor:
    """The seed's importance weight w_t = (1 - H(p_T(. | y_<t)) / log V) * D_t, detached.

    Seed (Chapter 7, "Token Importance Weighting"): H / log V is the teacher's entropy normalised to
    [0, 1] (log V is the entropy of the uniform distribution over V tokens), so the first factor is
    the teacher's confidence; D_t is the per-token divergence, KL(p_T || p_theta) in the seed.
    High weight = teacher confident and student far from it. This is not TIP's score (see
    :func:`token_importance`): it discounts uncertain-teacher tokens instead of keeping uncertain-
    student ones. ``teacher_entropy`` must lie in [0, log V] (up to rounding).
    """
    _check_pair("teacher_entropy", teacher_entropy, "divergence", divergence)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
        raise ValueError(f"vocab_size must be an integer >= 2, got {vocab_size!r}")
    if torch.isnan(teacher_entropy).any() or torch.isnan(divergence).any():
        raise ValueError("teacher_entropy or divergence contains NaN")
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
    _check_mask(mask, scores.shape)
    if (keep_fraction is None) == (threshold is None):
        raise ValueError("give exactly one of keep_fraction and threshold")
    if torch.isnan(scores[mask]).any():
        raise ValueError("scores contain NaN at masked tokens")
    if threshold is not None:
        if math.isnan(threshold):
            raise ValueError("threshold is NaN")
        return mask & (scores >= threshold)
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must lie in (0, 1], got {keep_fraction}")
    flat_mask = mask.reshape(-1)
    candidates = torch.nonzero(flat_mask).flatten()
    k = math.ceil(round(keep_fraction * candidates.numel(), 9))  # 0.3 * 10 is 3, not 4
    order = torch.sort(scores.reshape(-1)[candidates], descending=True, stable=True).indices
    keep = torch.zeros_like(flat_mask)
    keep[candidates[order[:k]]] = True
    return keep.reshape(mask.shape)
