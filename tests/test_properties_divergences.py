"""Hypothesis properties of opd_lib.divergences, and every argument's bad input refused by name."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from opd_lib import divergences as d

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
KINDS = ("fkl", "rkl", "jsd", "tv")


@st.composite
def logit_pair(draw, max_b=3, max_t=4, max_v=9):
    b, t, v = draw(st.integers(1, max_b)), draw(st.integers(1, max_t)), draw(st.integers(2, max_v))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 30.0]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    s = torch.randn(b, t, v, generator=g, dtype=torch.float64) * scale
    te = torch.randn(b, t, v, generator=g, dtype=torch.float64) * scale
    mask = torch.rand(b, t, generator=g) < 0.7
    mask.view(-1)[0] = True
    return s, te, mask


@st.composite
def distributions(draw, dtype=torch.float64):
    v = draw(st.integers(2, 12))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    scale = draw(st.sampled_from([0.5, 2.0, 6.0]))
    p = torch.softmax(torch.randn(3, v, generator=g, dtype=torch.float64) * scale, -1)
    q = torch.softmax(torch.randn(3, v, generator=g, dtype=torch.float64) * scale, -1)
    return p.to(dtype), q.to(dtype)


# ------------------------------------------------------------------------ probability level


@SETTINGS
@given(distributions(), st.floats(0.0, 1.0))
def test_probability_divergences_are_nonnegative_and_zero_at_identity(pq, beta):
    p, q = pq
    for value in (d.forward_kl(p, q), d.reverse_kl(p, q), d.generalized_jsd(p, q, beta),
                  d.total_variation(p, q)):  # fmt: skip
        assert (value >= 0).all()
    for value in (d.forward_kl(p, p), d.reverse_kl(q, q), d.generalized_jsd(p, p, beta),
                  d.total_variation(q, q)):  # fmt: skip
        assert value.abs().max() < 1e-12


@SETTINGS
@given(distributions())
def test_jsd_at_one_half_is_symmetric_and_at_most_log_2(pq):
    p, q = pq
    a, b = d.generalized_jsd(p, q, 0.5), d.generalized_jsd(q, p, 0.5)
    torch.testing.assert_close(a, b)
    assert (a <= math.log(2) + 1e-12).all()
    torch.testing.assert_close(d.total_variation(p, q), d.total_variation(q, p))
    assert (d.total_variation(p, q) <= 1 + 1e-12).all()


@SETTINGS
@given(distributions(), st.sampled_from([torch.float16, torch.bfloat16]))
def test_half_precision_is_computed_in_float32_and_returned_in_its_dtype(pq, dtype):
    p, q = (x.to(dtype) for x in pq)
    p, q = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
    for fn in (d.forward_kl, d.reverse_kl, d.generalized_jsd, d.total_variation):
        value = fn(p, q)
        assert value.dtype == dtype and (value >= 0).all()
        p64, q64 = p.double(), q.double()
        reference = fn(p64 / p64.sum(-1, keepdim=True), q64 / q64.sum(-1, keepdim=True))
        finite = torch.isfinite(reference)
        torch.testing.assert_close(value.double()[finite], reference[finite], rtol=0.02,
                                   atol=0.01)  # fmt: skip


@SETTINGS
@given(distributions())
def test_numpy_in_numpy_out_and_batch_order(pq):
    p, q = pq
    out = d.forward_kl(p.numpy(), q.numpy())
    assert isinstance(out, np.ndarray)
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(d.forward_kl(p[perm], q[perm]), d.forward_kl(p, q)[perm])


# ------------------------------------------------------------------------------ logit level


@SETTINGS
@given(logit_pair(), st.sampled_from(KINDS), st.floats(0.05, 0.95))
def test_token_divergence_nonnegative_zero_at_identity_and_chunked_equal(pair, kind, beta):
    s, t, mask = pair
    value = d.token_divergence(s, t, kind, beta)
    assert (value >= -1e-12).all()
    assert d.token_divergence(s, s, kind, beta).abs().max() < 1e-9
    chunked = d.token_divergence(s, t, kind, beta, mask=mask, chunk_size=2)
    torch.testing.assert_close(chunked, d.token_divergence(s, t, kind, beta, mask=mask))
    if kind == "jsd":
        half = d.token_divergence(s, t, "jsd", 0.5)
        torch.testing.assert_close(half, d.token_divergence(t, s, "jsd", 0.5))
        assert (half <= math.log(2) + 1e-9).all()


@SETTINGS
@given(logit_pair(), st.sampled_from(KINDS))
def test_masking_equals_slicing_and_batch_order_does_not_matter(pair, kind):
    s, t, mask = pair
    masked = d.token_divergence(s, t, kind, mask=mask, reduction="mean")
    sliced = d.token_divergence(s[mask], t[mask], kind, reduction="mean")
    torch.testing.assert_close(masked, sliced)
    int_mask = d.token_divergence(s, t, kind, mask=mask.long(), reduction="mean")
    torch.testing.assert_close(int_mask, masked)
    perm = torch.randperm(s.shape[0], generator=torch.Generator().manual_seed(0))
    permuted = d.token_divergence(s[perm], t[perm], kind, mask=mask[perm], reduction="none")
    torch.testing.assert_close(permuted, d.token_divergence(s, t, kind, mask=mask)[perm])


@SETTINGS
@given(logit_pair(), st.sampled_from(KINDS), st.sampled_from([None, 2]))
def test_gradients_are_finite_with_a_shared_minus_inf_vocabulary_entry(pair, kind, chunk):
    s, t, mask = pair
    s, t = s.clone(), t.clone()
    s[..., 0], t[..., 0] = -math.inf, -math.inf
    s.requires_grad_()
    d.token_divergence(s, t, kind, mask=mask, reduction="mean", chunk_size=chunk).backward()
    assert torch.isfinite(s.grad).all()


@SETTINGS
@given(logit_pair(), st.sampled_from(KINDS))
def test_pointwise_terms_sum_to_the_token_divergence(pair, kind):
    s, t, _ = pair
    terms = d.pointwise_terms(s.log_softmax(-1), t.log_softmax(-1), kind)
    torch.testing.assert_close(terms.sum(-1), d.token_divergence(s, t, kind))


@SETTINGS
@given(logit_pair(max_t=1))
def test_k3_averaged_exactly_over_the_student_is_the_reverse_kl(pair):
    s, t, _ = pair
    log_q, log_p = s.log_softmax(-1), t.log_softmax(-1)
    est = d.sampled_token_estimators(log_q, log_p)
    assert (est.k2 >= 0).all() and (est.k3 >= -1e-12).all()
    expected_k3 = (log_q.exp() * est.k3).sum(-1)
    torch.testing.assert_close(expected_k3, d.token_divergence(s, t, "rkl"))
    torch.testing.assert_close((log_q.exp() * est.k1).sum(-1), d.token_divergence(s, t, "rkl"))


# ------------------------------------------------------------------------------ bad inputs

S, T = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
P = torch.softmax(torch.randn(2, 5), -1)
M = torch.tensor([[True, True, False], [True, False, True]])
LP = torch.log_softmax(torch.randn(2, 3), -1)


def nan(x):
    x = x.clone()
    x.view(-1)[0] = math.nan
    return x


BAD = [
    (lambda: d.forward_kl(P - 0.3, P), "p_teacher"),
    (lambda: d.forward_kl(P, nan(P)), "p_student"),
    (lambda: d.reverse_kl(P * 2, P), "p_teacher"),
    (lambda: d.total_variation(P, P > 0.1), "p_student"),
    (lambda: d.generalized_jsd(P, P, beta=1.5), "beta"),
    (lambda: d.generalized_jsd(P, P, beta="0.5"), "beta"),
    (lambda: d.pointwise_terms(S, T.log_softmax(-1)), "student_logp"),
    (lambda: d.pointwise_terms(S.log_softmax(-1), nan(T)), "teacher_logp"),
    (lambda: d.pointwise_terms(S.log_softmax(-1), T.log_softmax(-1), kind="kl"), "kind"),
    (lambda: d.token_divergence(S.tolist(), T), "student_logits"),
    (lambda: d.token_divergence(S, T.long()), "teacher_logits"),
    (lambda: d.token_divergence(nan(S), T), "student_logits"),
    (lambda: d.token_divergence(S, T.clone().fill_(math.inf)), "teacher_logits"),
    (lambda: d.token_divergence(S, T[:1]), "teacher_logits"),
    (lambda: d.token_divergence(S, T, kind="js"), "kind"),
    (lambda: d.token_divergence(S, T, "jsd", beta=-0.1), "beta"),
    (lambda: d.token_divergence(S, T, temperature=0.0), "temperature"),
    (lambda: d.token_divergence(S, T, temperature=math.inf), "temperature"),
    (lambda: d.token_divergence(S, T, mask=M.float() * 0.5), "mask"),
    (lambda: d.token_divergence(S, T, mask=torch.where(M, 7, -100)), "mask"),
    (lambda: d.token_divergence(S, T, mask=torch.zeros_like(M)), "mask"),
    (lambda: d.token_divergence(S, T, mask=M[:1]), "mask"),
    (lambda: d.token_divergence(S, T, reduction="batchmean"), "reduction"),
    (lambda: d.token_divergence(S, T, chunk_size=True), "chunk_size"),
    (lambda: d.sampled_token_estimators(LP + 1, LP), "logp_student"),
    (lambda: d.sampled_token_estimators(LP, nan(LP)), "logp_teacher"),
    (lambda: d.check_mask(M.tolist(), (2, 3)), "mask"),
]


@pytest.mark.parametrize(("call", "name"), BAD, ids=[f"{i}-{n}" for i, (_, n) in enumerate(BAD)])
def test_bad_input_is_refused_naming_the_argument(call, name):
    with pytest.raises((ValueError, TypeError), match=name):
        call()


def test_trl_labels_as_mask_are_refused_by_what_they_are():
    with pytest.raises(ValueError, match="-100.*labels"):
        d.token_divergence(S, T, mask=torch.where(M, 7, -100))
