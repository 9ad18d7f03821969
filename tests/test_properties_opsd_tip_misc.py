"""Hypothesis properties of opd_lib.opsd, tip, curriculum, prefix and bounds; bad inputs named."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from opd_lib import bounds, curriculum, divergences, opsd, prefix, tip

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


@st.composite
def logit_pair(draw):
    b, t, v = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(2, 8))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    scale = draw(st.sampled_from([0.5, 3.0, 10.0]))
    s = torch.randn(b, t, v, generator=g, dtype=torch.float64) * scale
    te = torch.randn(b, t, v, generator=g, dtype=torch.float64) * scale
    mask = torch.rand(b, t, generator=g) < 0.7
    mask.view(-1)[0] = True
    return s, te, mask


@st.composite
def scores(draw):
    b, t = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    mask = torch.rand(b, t, generator=g) < 0.7
    mask.view(-1)[0] = True
    return torch.rand(b, t, generator=g, dtype=torch.float64) * 3, mask


# ------------------------------------------------------------------------------------ opsd


@SETTINGS
@given(logit_pair(), st.sampled_from(["fkl", "rkl", "jsd", "tv"]), st.floats(0.01, 2.0))
def test_clips_never_exceed_the_unclipped_divergence(pair, kind, cap):
    s, t, mask = pair
    full = divergences.token_divergence(s, t, kind, mask=mask)
    point = opsd.clip_pointwise(s, t, mask, kind, max_value=cap)
    assert (point <= full + 1e-9).all() and (point[~mask] == 0).all()
    big = opsd.clip_pointwise(s, t, mask, kind, max_value=1e30)
    torch.testing.assert_close(big, full)
    token = opsd.clip_per_token(full, cap)
    assert (token <= cap).all()
    torch.testing.assert_close(torch.where(full < cap, token, full.clamp(max=cap)), token)
    torch.testing.assert_close(opsd.clip_per_token(full, cap, "rescale"), token)


@SETTINGS
@given(logit_pair(), st.sampled_from(["none", "token", "pointwise"]))
def test_opsd_loss_masking_equals_slicing_and_gradients_are_finite(pair, clip):
    s, t, mask = pair
    s = s.clone()
    s[..., 0] = t[..., 0] = -math.inf
    s.requires_grad_()
    loss = opsd.opsd_loss(s, t, mask, kind="jsd", clip=clip, max_value=0.5)
    sliced = opsd.opsd_loss(s[mask].unsqueeze(0), t[mask].unsqueeze(0), None, "jsd", clip, 0.5)
    torch.testing.assert_close(loss, sliced)
    torch.testing.assert_close(opsd.opsd_loss(s, t, mask.long(), "jsd", clip, 0.5), loss)
    loss.backward()
    assert torch.isfinite(s.grad).all()


@SETTINGS
@given(scores(), st.integers(1, 30))
def test_top_k_share_is_a_fraction_growing_with_k(x, k):
    values, mask = x
    share = opsd.top_k_share(values, k, mask)
    assert 0 < share <= 1 + 1e-12
    assert opsd.top_k_share(values, k + 1, mask) >= share - 1e-12
    assert opsd.top_k_share(values, int(mask.sum()), mask) == pytest.approx(1.0)


@SETTINGS
@given(st.integers(0, 2**16), st.integers(1, 3), st.integers(2, 6), st.integers(1, 4))
def test_gather_positions_is_indexing(seed, b, length, n):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, length, 5, generator=g)
    pos = torch.randint(0, length, (b, n), generator=g)
    out = opsd.gather_positions(logits, pos)
    assert torch.equal(out, torch.stack([logits[i, pos[i]] for i in range(b)]))


# ------------------------------------------------------------------------------------- tip


@SETTINGS
@given(scores(), st.floats(0.2, 3.0), st.floats(0.2, 3.0))
def test_token_importance_is_in_unit_interval_zero_outside_and_order_free(x, alpha, gamma):
    h, mask = x
    dvg = h.flip(-1) * 2
    w = tip.token_importance(h, dvg, alpha, gamma, mask)
    assert ((w >= 0) & (w <= 1)).all() and (w[~mask] == 0).all()
    perm = torch.arange(h.shape[0]).flip(0)
    torch.testing.assert_close(tip.token_importance(h[perm], dvg[perm], alpha, gamma, mask[perm]),
                               w[perm])  # fmt: skip
    conf = tip.teacher_confidence_importance(h / 3 * math.log(5), dvg, vocab_size=5)
    assert (conf >= 0).all() and (conf <= dvg + 1e-12).all()


@SETTINGS
@given(scores(), st.floats(0.01, 1.0))
def test_select_tokens_keeps_the_promised_number_inside_the_mask(x, frac):
    values, mask = x
    keep = tip.select_tokens(values, mask, keep_fraction=frac)
    assert not (keep & ~mask).any()
    assert int(keep.sum()) == math.ceil(round(frac * int(mask.sum()), 9))
    assert torch.equal(tip.select_tokens(values, mask.long(), keep_fraction=frac), keep)


# ------------------------------------------------------------------------ curriculum, prefix


@SETTINGS
@given(st.floats(0.0, 1.0), st.floats(0.2, 4.0))
def test_paced_weight_is_symmetric_bounded_and_zero_at_the_ends(p, a):
    w = curriculum.paced_weight(p, a, a)
    assert w == pytest.approx(curriculum.paced_weight(1 - p, a, a), rel=1e-9, abs=1e-9)
    assert 0 <= curriculum.paced_weight(p) <= 0.25 + 1e-12
    assert curriculum.paced_weight(0.0, a, a) == 0 == curriculum.paced_weight(1.0, a, a)
    half = curriculum.paced_weight(torch.tensor([p]).half())
    assert half.dtype == torch.float16


@SETTINGS
@given(st.integers(0, 2**16), st.integers(1, 4), st.integers(2, 8), st.floats(1.0, 50.0))
def test_flawed_prefix_mask_is_monotone_in_the_threshold(seed, b, t, limit):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(b, t, generator=g, dtype=torch.float64) * 5
    mask = torch.ones(b, t, dtype=torch.bool)
    keep = prefix.flawed_prefix_mask(logp, mask, limit)
    assert (prefix.flawed_prefix_mask(logp, mask, limit * 2) >= keep).all()
    perm = torch.arange(b).flip(0)
    assert torch.equal(prefix.flawed_prefix_mask(logp[perm], mask, limit), keep[perm])


@SETTINGS
@given(st.integers(0, 2**16), st.integers(1, 4), st.integers(2, 10), st.integers(1, 3))
def test_repetition_mask_keeps_rows_of_distinct_tokens(seed, b, t, n):
    distinct = torch.stack([torch.randperm(50, generator=torch.Generator().manual_seed(seed + i))
                            [:t] for i in range(b)])  # fmt: skip
    mask = torch.ones(b, t, dtype=torch.bool)
    assert prefix.repetition_mask(distinct, mask, n, 1).all()
    loop = torch.zeros(b, t, dtype=torch.long)
    expected = t - n + 1 <= 1  # "0 0 0 ..." holds its n-gram t - n + 1 times
    assert (prefix.repetition_mask(loop, mask, n, 1) == expected).all()


# ----------------------------------------------------------------------------------- bounds


@SETTINGS
@given(st.floats(0.0, 1.0), st.integers(0, 200))
def test_bounds_order_and_crossover(eps, length):
    p = bounds.sequence_success_probability(eps, length)
    assert 0 <= p <= 1 and bounds.sequence_success_probability(eps, length + 1) <= p + 1e-15
    assert bounds.dagger_bound_off_policy(eps, length) >= bounds.dagger_bound_on_policy(eps, length)
    ratio = 1 + length / 2  # the crossover 2 ratio - 1 is then a whole length
    t_cross = bounds.crossover_length(ratio)
    assert bounds.dagger_bound_off_policy(0.1, t_cross) == pytest.approx(
        ratio * bounds.dagger_bound_on_policy(0.1, t_cross)
    )
    arr = bounds.dagger_bound_on_policy(np.array([eps, eps]), length)
    assert isinstance(arr, np.ndarray)


# ------------------------------------------------------------------------------ bad inputs

L = torch.randn(2, 3, 5)
M = torch.tensor([[True, True, False], [True, False, True]])
D = torch.rand(2, 3)


def nan(x):
    x = x.clone()
    x.view(-1)[0] = math.nan
    return x


BAD = [
    (lambda: opsd.gather_positions(L.tolist(), torch.zeros(2, 1, dtype=torch.long)), "logits"),
    (lambda: opsd.gather_positions(L, torch.zeros(2, 1)), "positions"),
    (lambda: opsd.gather_positions(nan(L), torch.zeros(2, 1, dtype=torch.long)), "logits"),
    (lambda: opsd.clip_per_token(D, 0.0), "max_value"),
    (lambda: opsd.clip_per_token(D, "1"), "max_value"),
    (lambda: opsd.clip_per_token(-D - 1, 1.0), "token_divergence"),
    (lambda: opsd.clip_per_token(D.clone().fill_(math.inf), 1.0), "token_divergence"),
    (lambda: opsd.clip_per_token(D, 1.0, mode="soft"), "mode"),
    (lambda: opsd.clip_pointwise(L, L[:1]), "teacher_logits"),
    (lambda: opsd.clip_pointwise(L.long(), L), "student_logits"),
    (lambda: opsd.clip_pointwise(L, L.clone().fill_(math.inf)), "teacher_logits"),
    (lambda: opsd.clip_pointwise(L, L, torch.zeros_like(M)), "mask"),
    (lambda: opsd.clip_pointwise(L, L, kind="hellinger"), "kind"),
    (lambda: opsd.clip_pointwise(L, L, beta=2.0), "beta"),
    (lambda: opsd.clip_pointwise(L, L, temperature=-1.0), "temperature"),
    (lambda: opsd.opsd_loss(L, L, torch.where(M, 3, -100)), "mask"),
    (lambda: opsd.opsd_loss(L, L.tolist()), "teacher_logits"),
    (lambda: opsd.opsd_loss(L, L, clip="soft"), "clip"),
    (lambda: opsd.opsd_loss(L, L, clip="token", max_value=math.nan), "max_value"),
    (lambda: opsd.top_k_share(D, 0), "k"),
    (lambda: opsd.top_k_share(D, 2, M.float()), "mask"),
    (lambda: opsd.top_k_share(D.clone().fill_(math.inf), 2), "token_divergence"),
    (lambda: tip.token_importance(D, -D - 1), "divergence"),
    (lambda: tip.token_importance(nan(D), D), "student_entropy"),
    (lambda: tip.token_importance(D, D, alpha="1"), "alpha"),
    (lambda: tip.token_importance(D, D, gamma=math.inf), "gamma"),
    (lambda: tip.token_importance(D, D, mask=M.float() / 2), "mask"),
    (lambda: tip.teacher_confidence_importance(D, D, vocab_size=5.0), "vocab_size"),
    (lambda: tip.teacher_confidence_importance(D > 0.5, D, vocab_size=5), "teacher_entropy"),
    (lambda: tip.teacher_confidence_importance(D, D.clone().fill_(math.inf), 5), "divergence"),
    (lambda: tip.select_tokens(D, M, keep_fraction="all"), "keep_fraction"),
    (lambda: tip.select_tokens(D, M, threshold=math.inf), "threshold"),
    (lambda: tip.select_tokens(D.clone().fill_(math.inf), M, threshold=0.5), "scores"),
    (lambda: curriculum.paced_weight("0.5"), "pass_rate"),
    (lambda: curriculum.paced_weight(torch.tensor([1.5])), "pass_rate"),
    (lambda: curriculum.paced_weight(0.5, alpha="1"), "alpha"),
    (lambda: curriculum.paced_weight(0.5, beta=math.inf), "beta"),
    (lambda: prefix.flawed_prefix_mask(D.tolist(), M, 10.0), "logp"),
    (lambda: prefix.flawed_prefix_mask(-D, M, math.nan), "max_perplexity"),
    (lambda: prefix.flawed_prefix_mask(-D, M.float(), 10.0), "mask"),
    (lambda: prefix.repetition_mask(torch.zeros(2, 3, dtype=torch.long) - 1, M, 2, 1), "token_ids"),
    (lambda: prefix.repetition_mask(torch.zeros(2, 3, dtype=torch.long), M, 2.0, 1), "ngram"),
    (
        lambda: prefix.repetition_mask(torch.zeros(2, 3, dtype=torch.long), M, 2, True),
        "max_repeats",
    ),
    (lambda: bounds.sequence_success_probability("x", 3), "eps"),
    (lambda: bounds.dagger_bound_on_policy(0.1, math.inf), "T"),
    (lambda: bounds.dagger_bound_off_policy(0.1, "3"), "T"),
    (lambda: bounds.crossover_length("2"), "ratio"),
]


@pytest.mark.parametrize(("call", "name"), BAD, ids=[f"{i}-{n}" for i, (_, n) in enumerate(BAD)])
def test_bad_input_is_refused_naming_the_argument(call, name):
    with pytest.raises((ValueError, TypeError), match=name):
        call()
