"""Flawed-prefix detection (Chapter 7, pillar 3): drop degenerate student samples before the
teacher grades them.

The teacher's per-token feedback on word salad or on a loop like "the the the the" is noise, so the
seed discards such samples. Two complementary filters, each returning a keep mask [B]
(True = keep the row):

* :func:`flawed_prefix_mask`: perplexity of the sample, exp(-mean log p), above a threshold
  (the seed suggests 100-500) flags incoherent text.
* :func:`repetition_mask`: an n-gram repeated too often flags a loop. Loops are needed as a
  separate check because under the student that produced them they are often *low*-perplexity
  (each repeat makes the next more likely), so a perplexity filter alone lets them through.
"""

from __future__ import annotations

import math

import torch


def _check_mask(mask: torch.Tensor, shape: torch.Size, what: str) -> None:
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got dtype {mask.dtype}")
    if mask.shape != shape or mask.ndim != 2:
        raise ValueError(
            f"shape mismatch: mask {tuple(mask.shape)} vs {what} {tuple(shape)}; both [B, T]"
        )
    if not mask.any():
        raise ValueError("mask selects no tokens")


def flawed_prefix_mask(
    logp: torch.Tensor, mask: torch.Tensor, max_perplexity: float
) -> torch.Tensor:
    """Keep mask [B]: True where the row's perplexity exp(-mean_masked logp) <= max_perplexity.

    ``logp`` [B, T] are the log-probs of the sampled tokens under the scoring model (the student's
    own, as in the seed; a teacher's log-probs work the same way). Perplexity is >= 1, so
    ``max_perplexity`` must be >= 1. Every row needs at least one masked token.
    """
    _check_mask(mask, logp.shape, "logp")
    if not mask.any(dim=1).all():
        empty = torch.nonzero(~mask.any(dim=1)).flatten().tolist()
        raise ValueError(f"mask selects no tokens in rows {empty}: their perplexity is undefined")
    masked = logp[mask]
    if torch.isnan(masked).any():
        raise ValueError("logp contains NaN at masked tokens")
    if (masked > 1e-6).any():
        raise ValueError("logp must be <= 0 (log-probabilities) at masked tokens")
    if math.isnan(max_perplexity) or max_perplexity < 1:
        raise ValueError(f"max_perplexity must be >= 1, got {max_perplexity}")
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    mean_logp = torch.where(mask, logp, zero).sum(dim=1) / mask.sum(dim=1)
    # ppl <= max  <=>  -mean_logp <= log(max); comparing in log space avoids overflow.
    return -mean_logp <= math.log(max_perplexity)


def repetition_mask(
    token_ids: torch.Tensor, mask: torch.Tensor, ngram: int, max_repeats: int
) -> torch.Tensor:
    """Keep mask [B]: False for rows where some n-gram occurs more than ``max_repeats`` times.

    The row's masked tokens are taken in order (unmasked positions are skipped, so an n-gram may
    straddle them); occurrences are counted with overlaps, so "a a a a" holds the 2-gram "a a"
    three times. Rows with fewer than ``ngram`` masked tokens have no n-gram and are kept.
    """
    _check_mask(mask, token_ids.shape, "token_ids")
    if token_ids.dtype.is_floating_point or token_ids.dtype == torch.bool:
        raise ValueError(f"token_ids must be an integer tensor, got dtype {token_ids.dtype}")
    for name, value in (("ngram", ngram), ("max_repeats", max_repeats)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    keep = torch.ones(token_ids.shape[0], dtype=torch.bool, device=token_ids.device)
    for row in range(token_ids.shape[0]):
        tokens = token_ids[row][mask[row]]
        if tokens.numel() < ngram:
            continue
        grams = tokens.unfold(0, ngram, 1)
        _, counts = torch.unique(grams, dim=0, return_counts=True)
        keep[row] = bool(counts.max() <= max_repeats)
    return keep
