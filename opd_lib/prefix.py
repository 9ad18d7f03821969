"""Flawed-prefix detection (Chapter 7, pillar 3): drop degenerate student samples before the
teacher grades them.

The teacher's per-token feedback on word salad or on a loop like "the the the the" is noise, so
such samples are discarded. Two complementary filters, each returning a keep mask [B]
(True = keep the row):

* :func:`flawed_prefix_mask`: perplexity of the sample, exp(-mean log p), above a threshold
  (a few hundred is a common suggestion for ~10^5-token vocabularies) flags incoherent text.
* :func:`repetition_mask`: an n-gram repeated too often flags a loop. Loops are needed as a
  separate check because under the student that produced them they are often *low*-perplexity
  (each repeat makes the next more likely), so a perplexity filter alone lets them through.
"""

from __future__ import annotations

import math

import torch

from opd_lib import validate


def _check_mask(mask: torch.Tensor, shape: torch.Size, what: str) -> torch.Tensor:
    return validate.mask(mask, "mask", shape, what=what)


def flawed_prefix_mask(
    logp: torch.Tensor, mask: torch.Tensor, max_perplexity: float
) -> torch.Tensor:
    """Keep mask [B]: True where the row's perplexity exp(-mean_masked logp) <= max_perplexity.

    ``logp`` [B, T] are the log-probs of the sampled tokens under the scoring model (the student's
    own, which a filter run before the teacher can afford; a teacher's log-probs work the same
    way). Perplexity is >= 1, so
    ``max_perplexity`` must be >= 1. Every row needs at least one masked token.
    """
    logp = validate.float_tensor(logp, "logp", ndim=2, dims="[B, T]")
    mask = _check_mask(mask, logp.shape, "logp")
    if not mask.any(dim=1).all():
        empty = torch.nonzero(~mask.any(dim=1)).flatten().tolist()
        raise ValueError(f"mask selects no tokens in rows {empty}: their perplexity is undefined")
    logp = validate.log_probs(logp, "logp", where=mask)
    max_perplexity = validate.real(max_perplexity, "max_perplexity")
    if max_perplexity < 1:
        raise ValueError(f"max_perplexity must be >= 1, got {max_perplexity}")
    # ppl <= max  <=>  log ppl <= log(max); comparing in log space avoids overflow.
    return _log_perplexity(logp, mask) <= math.log(max_perplexity)


def _log_perplexity(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    return -torch.where(mask, logp, zero).sum(dim=1) / mask.sum(dim=1)


def log_perplexity(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-row log-perplexity [B], ``-mean over masked t of logp[b, t]`` (its exp() is the
    perplexity :func:`flawed_prefix_mask` thresholds). ``logp`` [B, T] are the sampled tokens'
    log-probs; every row needs a masked token. Log space: a long junk row's perplexity overflows.
    """
    logp = validate.float_tensor(logp, "logp", ndim=2, dims="[B, T]")
    mask = _check_mask(mask, logp.shape, "logp")
    if not mask.any(dim=1).all():
        empty = torch.nonzero(~mask.any(dim=1)).flatten().tolist()
        raise ValueError(f"mask selects no tokens in rows {empty}: their perplexity is undefined")
    return _log_perplexity(validate.log_probs(logp, "logp", where=mask), mask)


def repetition_mask(
    token_ids: torch.Tensor, mask: torch.Tensor, ngram: int, max_repeats: int
) -> torch.Tensor:
    """Keep mask [B]: False for rows where some n-gram occurs more than ``max_repeats`` times.

    The row's masked tokens are taken in order (unmasked positions are skipped, so an n-gram may
    straddle them); occurrences are counted with overlaps, so "a a a a" holds the 2-gram "a a"
    three times. Rows with fewer than ``ngram`` masked tokens have no n-gram and are kept.
    """
    token_ids = validate.token_ids(token_ids, "token_ids", ndim=2)
    mask = _check_mask(mask, token_ids.shape, "token_ids")
    ngram = validate.integer(ngram, "ngram")
    max_repeats = validate.integer(max_repeats, "max_repeats")
    keep = torch.ones(token_ids.shape[0], dtype=torch.bool, device=token_ids.device)
    for row in range(token_ids.shape[0]):
        tokens = token_ids[row][mask[row]]
        if tokens.numel() < ngram:
            continue
        grams = tokens.unfold(0, ngram, 1)
        _, counts = torch.unique(grams, dim=0, return_counts=True)
        keep[row] = bool(counts.max() <= max_repeats)
    return keep
