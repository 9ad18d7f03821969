import math

import pytest
import torch

from opd_lib.tip import select_tokens, teacher_confidence_importance, token_importance

# Chapter 7's five scored tokens: (word, teacher entropy H_T, KL), V = 32000.
WORKED_TOKENS = [
    ("the", 0.08, 0.03),
    ("integration", 0.15, 0.82),
    ("um", 2.30, 0.45),
    ("equals", 0.05, 0.91),
    ("maybe", 1.80, 0.12),
]
# Correct scores (1 - H_T / log 32000) * KL. The commonly printed 0.029, 0.798, 0.350, 0.906,
# 0.099 are off:
# "integration" is wrong (0.798; the right value is 0.808) and "the" is 0.0298, i.e. 0.030 to
# three places, not 0.029. The other three match.
CORRECT = [0.029769, 0.808143, 0.350226, 0.905614, 0.099178]


def _seed_tensors():
    h = torch.tensor([t[1] for t in WORKED_TOKENS], dtype=torch.float64)
    kl = torch.tensor([t[2] for t in WORKED_TOKENS], dtype=torch.float64)
    return h, kl


def test_teacher_confidence_importance_on_seed_tokens():
    h, kl = _seed_tensors()
    scores = teacher_confidence_importance(h, kl, vocab_size=32000)
    torch.testing.assert_close(
        scores, torch.tensor(CORRECT, dtype=torch.float64), atol=1e-6, rtol=0
    )
    assert round(scores[0].item(), 3) == 0.030  # seed: 0.029
    assert round(scores[1].item(), 3) == 0.808  # seed: 0.798
    # The decisions at threshold 0.30 stand: skip, TRAIN, TRAIN, TRAIN, skip.
    keep = select_tokens(scores, torch.ones(5, dtype=torch.bool), threshold=0.30)
    assert keep.tolist() == [False, True, True, True, False]


def test_teacher_confidence_limits():
    kl = torch.tensor([0.7, 0.7])
    h = torch.tensor([0.0, math.log(100)])  # fully confident, uniform teacher
    torch.testing.assert_close(
        teacher_confidence_importance(h, kl, vocab_size=100), torch.tensor([0.7, 0.0])
    )


def test_token_importance_soft_or_keeps_both_tip_regions():
    # entropy (student), divergence: uncertain / overconfident-and-wrong / agreeing / middle
    h = torch.tensor([2.0, 0.0, 0.0, 1.0])
    d = torch.tensor([0.0, 3.0, 0.0, 1.5])
    s = token_importance(h, d)
    torch.testing.assert_close(s, torch.tensor([1.0, 1.0, 0.0, 0.75]))
    # The low-entropy, high-divergence token is TIP's Q3: it must not be buried as a product
    # entropy * divergence would bury it (that product is 0 here).
    assert s[1] == s.max() and h[1] * d[1] == 0


def test_token_importance_exponents_and_range():
    g = torch.Generator().manual_seed(0)
    h, d = torch.rand(3, 7, generator=g), torch.rand(3, 7, generator=g) * 5
    s = token_importance(h, d, alpha=2.0, gamma=0.5)
    assert torch.all((s >= 0) & (s <= 1))
    hn = (h - h.min()) / (h.max() - h.min())
    dn = (d - d.min()) / (d.max() - d.min())
    a, b = hn**2, dn**0.5
    torch.testing.assert_close(s, 1 - (1 - a) * (1 - b))


def test_token_importance_masked_out_tokens_score_zero_and_do_not_move_the_range():
    h = torch.tensor([[0.5, 1.0, 2.0]])
    d = torch.tensor([[1.0, 0.0, 2.0]])
    mask = torch.tensor([[True, True, False]])
    s = token_importance(h, d, mask=mask)
    h2 = h.clone()
    h2[0, 2] = 1000.0
    assert s[0, 2] == 0
    torch.testing.assert_close(token_importance(h2, d, mask=mask), s)


def test_select_tokens_keeps_the_right_count_and_never_masked_out():
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(4, 10, generator=g)
    mask = torch.rand(4, 10, generator=g) > 0.3
    scores[~mask] = 10.0  # the best scores sit on masked-out tokens
    n = int(mask.sum())
    for frac in (0.1, 0.3, 0.5, 1.0):
        keep = select_tokens(scores, mask, keep_fraction=frac)
        assert int(keep.sum()) == math.ceil(round(frac * n, 9))
        assert not (keep & ~mask).any()
        if keep.sum() < n:  # every kept score >= every dropped masked score
            assert scores[keep].min() >= scores[mask & ~keep].max()


def test_select_tokens_exact_fraction_and_deterministic_ties():
    scores = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0], [2.0, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.ones(2, 5, dtype=torch.bool)
    keep = select_tokens(scores, mask, keep_fraction=0.3)  # 3 of 10, not 4
    assert keep.tolist() == [[False, True, True, True, False], [False] * 5]
    keep = select_tokens(scores, mask, keep_fraction=0.2)  # ties: earliest positions win
    assert keep.tolist() == [[False, True, True, False, False], [False] * 5]


def test_select_tokens_threshold():
    scores = torch.tensor([[0.1, 0.5, 0.9]])
    mask = torch.tensor([[True, True, False]])
    assert select_tokens(scores, mask, threshold=0.5).tolist() == [[False, True, False]]


def test_errors():
    s = torch.rand(2, 3)
    m = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="exactly one"):
        select_tokens(s, m)
    with pytest.raises(ValueError, match="exactly one"):
        select_tokens(s, m, keep_fraction=0.5, threshold=0.1)
    for frac in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="keep_fraction"):
            select_tokens(s, m, keep_fraction=frac)
    with pytest.raises(ValueError, match="no tokens"):
        select_tokens(s, torch.zeros(2, 3, dtype=torch.bool), threshold=0.1)
    with pytest.raises(ValueError, match="shape"):
        select_tokens(s, torch.ones(3, 2, dtype=torch.bool), threshold=0.1)
    with pytest.raises(ValueError, match="NaN"):
        select_tokens(torch.full((2, 3), math.nan), m, threshold=0.1)
    with pytest.raises(ValueError, match="shape"):
        token_importance(s, torch.rand(3, 2))
    with pytest.raises(ValueError, match="alpha"):
        token_importance(s, s, alpha=0.0)
    with pytest.raises(ValueError, match="vocab_size"):
        teacher_confidence_importance(s, s, vocab_size=1)
    with pytest.raises(ValueError, match="log V"):
        teacher_confidence_importance(torch.tensor([5.0]), torch.tensor([1.0]), vocab_size=10)
