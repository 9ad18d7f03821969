"""Every Chapter 7 grader must accept the reference answer and reject known-wrong ones."""

import math

import numpy as np
import pytest
import torch

from opd_lib.checks import GradingError
from opd_lib.checks.ch07 import check_confidence_score, check_keep_top_fraction, check_paced_weights
from opd_lib.tip import select_tokens


def test_confidence_score_accepts_the_right_answer(capsys):
    check_confidence_score(lambda h, d, v: (1 - h / math.log(v)) * d)
    check_confidence_score(lambda h, d, v: d - d * h / math.log(v))
    assert capsys.readouterr().out == 2 * "Correct: confidence_score matches the reference.\n"


@pytest.mark.parametrize(
    "wrong",
    [
        lambda h, d, v: 1 - h / math.log(v),  # confidence only
        lambda h, d, v: (1 - h / math.log10(v)) * d,  # wrong log base
        lambda h, d, v: (1 - h / v) * d,  # normalised by V, not log V
        lambda h, d, v: h / math.log(v) * d,  # uncertainty instead of confidence
        lambda h, d, v: (1 - h) * d,  # not normalised
        lambda h, d, v: "0.8",
    ],
)
def test_confidence_score_rejects_wrong_answers(wrong):
    with pytest.raises(GradingError):
        check_confidence_score(wrong)


def _top_k(scores, mask, frac, k_of=lambda f, n: math.ceil(round(f * n, 9)), stable=True):
    flat = mask.reshape(-1)
    pos = flat.nonzero().flatten()
    order = torch.sort(scores.reshape(-1)[pos], descending=True, stable=stable).indices
    keep = torch.zeros_like(flat)
    keep[pos[order[: k_of(frac, len(pos))]]] = True
    return keep.reshape(mask.shape)


def test_keep_top_fraction_accepts_the_right_answers(capsys):
    check_keep_top_fraction(lambda s, m, f: select_tokens(s, m, keep_fraction=f))
    check_keep_top_fraction(_top_k)
    assert capsys.readouterr().out == 2 * "Correct: keep_top_fraction matches the reference.\n"


def _ignores_mask(scores, mask, frac):
    return _top_k(scores, torch.ones_like(mask), frac)


def _lowest(scores, mask, frac):
    return _top_k(-scores, mask, frac)


def _per_row(scores, mask, frac):
    return torch.stack(
        [_top_k(scores[i : i + 1], mask[i : i + 1], frac)[0] for i in range(len(mask))]
    )


@pytest.mark.parametrize(
    "wrong",
    [
        _ignores_mask,
        _lowest,
        _per_row,
        lambda s, m, f: _top_k(s, m, f, k_of=lambda f, n: int(f * n)),  # floor: may keep 0
        lambda s, m, f: _top_k(s, m, f, k_of=lambda f, n: math.ceil(f * n) + 1),
        lambda s, m, f: m & (s >= 0.5),  # a threshold, not a fraction
        lambda s, m, f: m.tolist(),  # not a tensor
    ],
)
def test_keep_top_fraction_rejects_wrong_answers(wrong):
    with pytest.raises(GradingError):
        check_keep_top_fraction(wrong)


def test_keep_top_fraction_rejects_wrong_tie_breaking():
    def last_wins(scores, mask, frac):
        n = scores.numel()
        rev = _top_k(scores.reshape(-1).flip(0)[None], mask.reshape(-1).flip(0)[None], frac)
        return rev[0].flip(0).reshape(mask.shape) if n else mask

    with pytest.raises(GradingError):
        check_keep_top_fraction(last_wins)


# --- PACED weights ----------------------------------------------------------------------------


def paced_right(rewards, alpha, beta):
    rate = rewards.mean(axis=1)
    w = rate**alpha * (1 - rate) ** beta
    return w / w.sum() if w.sum() > 0 else np.zeros_like(w)


def test_paced_weights_accepts_the_right_answer(capsys):
    check_paced_weights(paced_right)
    assert capsys.readouterr().out == "Correct: paced_weights matches the reference.\n"


@pytest.mark.parametrize(
    ("wrong", "hint"),
    [
        (lambda r, a, b: paced_right(r, b, a), "swapped"),
        (lambda r, a, b: r.mean(1) ** a * (1 - r.mean(1)) ** b, "not normalised"),
        (lambda r, a, b: paced_right(r.T, a, b), "shape|axis 1"),
        (lambda r, a, b: 2 * paced_right(r, a, b), "factor 2"),
        (
            lambda r, a, b: (
                (r.mean(1) ** a * (1 - r.mean(1)) ** b)
                / (r.mean(1) ** a * (1 - r.mean(1)) ** b).sum()
            ),
            "dividing by 0",
        ),
        (lambda r, a, b: paced_right(r, a, b)[:-1], "shape"),
    ],
)
def test_paced_weights_rejects_wrong_answers_and_says_why(wrong, hint):
    with np.errstate(all="ignore"), pytest.raises(GradingError, match=hint):
        check_paced_weights(wrong)
