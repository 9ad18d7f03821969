import math

import pytest
import torch

from opd_lib.prefix import flawed_prefix_mask, repetition_mask


def test_flawed_prefix_mask_thresholds_per_row_perplexity():
    # Row 0: perplexity 50; row 1: 1000; row 2: exactly 100 (kept: <=); padding ignored.
    logp = torch.tensor(
        [
            [-math.log(50)] * 3 + [-99.0],
            [-math.log(1000)] * 4,
            [-math.log(10), -math.log(1000), 0.0, -99.0],
        ],
        dtype=torch.float64,
    )
    mask = torch.tensor([[True] * 3 + [False], [True] * 4, [True, True, False, False]])
    keep = flawed_prefix_mask(logp, mask, max_perplexity=100.0)
    assert keep.tolist() == [True, False, True]


def test_flawed_prefix_mask_rejects_minus_inf_tokens():
    logp = torch.tensor([[-0.1, -math.inf]])
    assert flawed_prefix_mask(logp, torch.ones(1, 2, dtype=torch.bool), 500.0).tolist() == [False]


def test_repetition_mask_flags_loops():
    loop = [1, 2, 3] * 3 + [4]  # the 3-gram (1, 2, 3) three times
    fine = list(range(10))
    ids = torch.tensor([loop, fine])
    mask = torch.ones(2, 10, dtype=torch.bool)
    assert repetition_mask(ids, mask, ngram=3, max_repeats=2).tolist() == [False, True]
    assert repetition_mask(ids, mask, ngram=3, max_repeats=3).tolist() == [True, True]


def test_repetition_mask_counts_overlapping_and_only_masked_tokens():
    ids = torch.tensor([[7, 7, 7, 7, 1, 2], [7, 7, 7, 7, 1, 2]])
    mask = torch.tensor([[True] * 6, [False, False, True, True, True, True]])
    # "7 7 7 7" holds the 2-gram (7, 7) three times; row 1 only sees "7 7 1 2".
    assert repetition_mask(ids, mask, ngram=2, max_repeats=2).tolist() == [False, True]


def test_repetition_mask_keeps_rows_shorter_than_ngram():
    ids = torch.tensor([[5, 5, 5, 5], [5, 5, 0, 0]])
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    assert repetition_mask(ids, mask, ngram=3, max_repeats=1).tolist() == [False, True]


def test_errors():
    logp = torch.full((2, 3), -1.0)
    m = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="no tokens"):
        flawed_prefix_mask(logp, torch.zeros(2, 3, dtype=torch.bool), 100.0)
    with pytest.raises(ValueError, match="rows"):
        flawed_prefix_mask(logp, torch.tensor([[True] * 3, [False] * 3]), 100.0)
    with pytest.raises(ValueError, match="max_perplexity"):
        flawed_prefix_mask(logp, m, 0.5)
    with pytest.raises(ValueError, match="<= 0"):
        flawed_prefix_mask(torch.ones(2, 3), m, 100.0)
    with pytest.raises(ValueError, match="NaN"):
        flawed_prefix_mask(torch.full((2, 3), math.nan), m, 100.0)
    with pytest.raises(ValueError, match="shape"):
        flawed_prefix_mask(logp, torch.ones(3, 2, dtype=torch.bool), 100.0)
    ids = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="ngram"):
        repetition_mask(ids, m, ngram=0, max_repeats=1)
    with pytest.raises(ValueError, match="max_repeats"):
        repetition_mask(ids, m, ngram=2, max_repeats=0)
    with pytest.raises(ValueError, match="integer tensor"):
        repetition_mask(ids.float(), m, ngram=2, max_repeats=1)


def test_log_perplexity_is_the_masked_mean_negative_logp():
    from opd_lib.prefix import log_perplexity

    logp = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -0.5, -0.5]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    torch.testing.assert_close(log_perplexity(logp, mask), torch.tensor([1.5, 0.5]))
    with pytest.raises(ValueError, match="rows"):
        log_perplexity(logp, torch.tensor([[False] * 3, [True] * 3]))
