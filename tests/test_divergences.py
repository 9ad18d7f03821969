"""Tests for opd_lib.divergences: exact values, properties, TRL agreement, gradients, errors."""

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from opd_lib.divergences import (
    KINDS,
    forward_kl,
    generalized_jsd,
    pointwise_terms,
    reverse_kl,
    sampled_token_estimators,
    token_divergence,
    total_variation,
)

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
from trl.experimental.gkd import GKDTrainer  # noqa: E402

P_T, P_S = [0.7, 0.2, 0.1], [0.3, 0.4, 0.3]
BETA = {"fkl": 0.0, "rkl": 1.0, "jsd": 0.3, "tv": 0.5}  # beta used per kind (only jsd reads it)


def logits(*shape, seed=0, dtype=torch.float64, scale=2.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def random_mask(b, t, seed):
    mask = torch.rand(b, t, generator=torch.Generator().manual_seed(seed)) < 0.7
    mask[0, 0] = True
    return mask


# ---------------------------------------------------------------- probability level


def test_worked_example():
    # 0.7 ln(7/3) + 0.2 ln(1/2) + 0.1 ln(1/3) = 0.344618 (not 0.3447)
    assert round(forward_kl(P_T, P_S).item(), 4) == 0.3446
    assert round(reverse_kl(P_T, P_S).item(), 4) == 0.3527
    terms = pointwise_terms(torch.tensor(P_S).log(), torch.tensor(P_T).log(), "fkl")
    expected = [0.7 * math.log(7 / 3), 0.2 * math.log(0.5), 0.1 * math.log(1 / 3)]
    torch.testing.assert_close(terms, torch.tensor(expected))


def test_numpy_in_numpy_out_and_zeros():
    value = forward_kl(np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.25, 0.5]))
    assert isinstance(value, np.ndarray)
    assert value == pytest.approx(math.log(2))  # the 0 log 0 entry contributes 0
    assert forward_kl(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == math.inf
    assert reverse_kl(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == pytest.approx(math.log(2))


def test_jsd_endpoint_discontinuity():
    """Interior beta -> 0 tends to 0, but beta = 0 is defined as forward KL (TRL)."""
    assert generalized_jsd(P_T, P_S, beta=1e-6).item() < 1e-4
    assert generalized_jsd(P_T, P_S, beta=0.0).item() == pytest.approx(0.344618, abs=1e-6)


@st.composite
def prob_pairs(draw):
    n = draw(st.integers(2, 6))
    weights = st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n).filter(lambda w: sum(w) > 0.1)
    p, q = np.array(draw(weights)), np.array(draw(weights))
    return p / p.sum(), q / q.sum()


@settings(max_examples=60, deadline=None)
@given(prob_pairs())
def test_kl_nonnegative_zero_only_when_equal(pq):
    p, q = pq
    tv = total_variation(p, q)
    for kl in (forward_kl(p, q), reverse_kl(p, q)):
        assert kl >= -1e-12  # up to rounding
        assert tv <= math.sqrt(max(kl, 0.0) / 2) + 1e-12  # Pinsker: KL = 0 forces p = q
    assert abs(forward_kl(p, p)) < 1e-12 and abs(reverse_kl(q, q)) < 1e-12


@settings(max_examples=60, deadline=None)
@given(prob_pairs(), st.floats(0.01, 0.99))
def test_jsd_bounds_and_symmetry(pq, beta):
    p, q = pq
    half = generalized_jsd(p, q, beta=0.5)
    assert -1e-12 <= half <= math.log(2) + 1e-12
    assert half == pytest.approx(generalized_jsd(q, p, beta=0.5), abs=1e-12)
    binary_entropy = -beta * math.log(beta) - (1 - beta) * math.log1p(-beta)
    assert -1e-12 <= generalized_jsd(p, q, beta=beta) <= binary_entropy + 1e-12
    terms = pointwise_terms(torch.tensor(q).log(), torch.tensor(p).log(), "jsd", beta)
    assert (terms >= -1e-12).all()  # each JSD summand is >= 0 (log-sum inequality)
    assert generalized_jsd(p, q, beta=beta) == pytest.approx(generalized_jsd(q, p, beta=1 - beta))


@settings(max_examples=60, deadline=None)
@given(prob_pairs())
def test_tv_range_symmetry_and_jsd_endpoints(pq):
    p, q = pq
    assert 0 <= total_variation(p, q) <= 1
    assert total_variation(p, q) == total_variation(q, p)
    assert generalized_jsd(p, q, beta=0.0) == forward_kl(p, q)
    assert generalized_jsd(p, q, beta=1.0) == reverse_kl(p, q)


# ---------------------------------------------------------------- agreement with TRL


@pytest.mark.parametrize(
    ("beta", "kind"), [(0.0, "jsd"), (0.0, "fkl"), (0.5, "jsd"), (1.0, "jsd"), (1.0, "rkl")]
)
@pytest.mark.parametrize("chunk_size", [None, 5])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize(("temperature", "seed"), [(1.0, 3), (2.0, 4)])
def test_matches_trl_value_and_grad(beta, kind, chunk_size, reduction, temperature, seed):
    student = logits(3, 7, 13, seed=1, dtype=torch.float32)
    teacher = logits(3, 7, 13, seed=2, dtype=torch.float32)
    mask = random_mask(3, 7, seed=seed)
    labels = torch.where(mask, 0, -100)
    s_trl, s_ours = student.clone().requires_grad_(), student.clone().requires_grad_()
    trl_reduction = "batchmean" if reduction == "mean" else "sum"
    ref = GKDTrainer.generalized_jsd_loss(
        s_trl, teacher, labels=labels, beta=beta, temperature=temperature, reduction=trl_reduction
    )
    ours = token_divergence(
        s_ours, teacher, kind, beta, temperature, mask, reduction, chunk_size=chunk_size
    )
    ref.backward()
    ours.backward()
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(s_ours.grad, s_trl.grad, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- token level, both paths


@pytest.mark.parametrize("kind", KINDS)
def test_chunked_matches_unchunked(kind):
    mask = random_mask(2, 7, seed=4)  # 14 positions, chunk sizes below don't divide the count
    student, teacher = logits(2, 8, 11, seed=5), logits(2, 8, 11, seed=6)
    weights = logits(2, 7, seed=7)
    results = []
    for chunk_size in (None, 3, 4, 100):
        s, t = student.clone().requires_grad_(), teacher.clone().requires_grad_()
        # [:, :-1] as in next-token shifting: non-contiguous logits
        out = token_divergence(
            s[:, :-1], t[:, :-1], kind, BETA[kind], 1.5, mask, chunk_size=chunk_size
        )
        (out * weights).sum().backward()
        assert (out[~mask] == 0).all() and (out[mask] > 0).all()
        results.append((out, s.grad, t.grad))
    for result in results[1:]:
        for ours, ref in zip(result, results[0], strict=True):
            torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    student, teacher = student[:, :-1], teacher[:, :-1]
    mean = token_divergence(student, teacher, kind, BETA[kind], 1.5, mask, "mean", chunk_size=4)
    torch.testing.assert_close(mean, results[0][0].sum() / mask.sum())


@pytest.mark.parametrize("chunk_size", [None, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(kind, chunk_size):
    student = logits(2, 3, 5, seed=8).requires_grad_()
    teacher = logits(2, 3, 5, seed=9).requires_grad_()
    mask = torch.tensor([[True, False, True], [True, True, False]])

    def fn(s, t):
        return token_divergence(s, t, kind, BETA[kind], 1.3, mask, chunk_size=chunk_size)

    assert torch.autograd.gradcheck(fn, (student, teacher))


@pytest.mark.parametrize("chunk_size", [None, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_shared_neg_inf_logits(kind, chunk_size):
    """-inf vocabulary entries (same place in both) behave like entries that are not there."""
    student, teacher = logits(2, 3, 7, seed=10), logits(2, 3, 7, seed=11)
    banned = torch.tensor([True, False, False, True, False, False, True])
    s = student.masked_fill(banned, -math.inf).requires_grad_()
    t = teacher.masked_fill(banned, -math.inf).requires_grad_()
    out = token_divergence(s, t, kind, BETA[kind], chunk_size=chunk_size)
    out.sum().backward()
    reference = token_divergence(student[..., ~banned], teacher[..., ~banned], kind, BETA[kind])
    torch.testing.assert_close(out, reference)
    for grad in (s.grad, t.grad):
        assert torch.isfinite(grad).all() and (grad[..., banned] == 0).all()


@pytest.mark.parametrize("chunk_size", [None, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_bfloat16_inputs(kind, chunk_size):
    student = logits(2, 3, 7, seed=12, dtype=torch.bfloat16, scale=4.0).requires_grad_()
    teacher = logits(2, 3, 7, seed=13, dtype=torch.bfloat16, scale=4.0)
    out = token_divergence(student, teacher, kind, BETA[kind], chunk_size=chunk_size)
    out.sum().backward()
    s32 = student.detach().float().requires_grad_()
    ref = token_divergence(s32, teacher.float(), kind, BETA[kind])
    ref.sum().backward()
    assert out.dtype == torch.float32 and student.grad.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(student.grad.float(), s32.grad, rtol=1e-2, atol=1e-2)


# ---------------------------------------------------------------- sampled-token estimators


def test_sampled_token_estimators_expectations():
    """Exact expectations over x ~ student: k1, k3 unbiased, k2 not; and their gradients."""
    s = logits(9, seed=14).requires_grad_()
    logp_s, logp_t = torch.log_softmax(s, -1), torch.log_softmax(logits(9, seed=15), -1)
    q = logp_s.exp().detach()
    est = sampled_token_estimators(logp_s, logp_t)
    rkl = reverse_kl(logp_t.exp(), logp_s.exp())
    fkl = forward_kl(logp_t.exp(), logp_s.exp())
    torch.testing.assert_close((q * est.k1).sum(), rkl)
    torch.testing.assert_close((q * est.k3).sum(), rkl)
    assert abs((q * est.k2).sum() - rkl) > 1e-3
    assert (est.k2 >= 0).all() and (est.k3 >= 0).all()

    def grad(value):
        return torch.autograd.grad(value, s, retain_graph=True)[0]

    torch.testing.assert_close(grad((q * est.k1).sum()), torch.zeros(9, dtype=s.dtype))
    torch.testing.assert_close(grad((q * est.k2).sum()), grad(rkl))
    torch.testing.assert_close(grad((q * est.k3).sum()), grad(fkl))


# ---------------------------------------------------------------- errors

S, T = torch.zeros(2, 3, 5), torch.zeros(2, 3, 5)
NAN = torch.zeros(2, 3, 5)
NAN[0, 1, 2] = math.nan


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: token_divergence(S, torch.zeros(2, 3, 6)), r"vocabulary.*5.*6"),
        (lambda: token_divergence(S, torch.zeros(2, 4, 5)), "shape mismatch"),
        (lambda: token_divergence(NAN, T), "student logits contain NaN"),
        (lambda: token_divergence(S, NAN, chunk_size=2), "teacher logits contain NaN"),
        (lambda: token_divergence(S, T, mask=torch.zeros(2, 3, dtype=torch.bool)), "no token"),
        (lambda: token_divergence(S, T, mask=torch.ones(3, 2, dtype=torch.bool)), "mask shape"),
        (lambda: token_divergence(S, T, mask=torch.ones(2, 3)), "boolean"),
        (lambda: token_divergence(S, T, "jsd", beta=1.5), r"beta must be in \[0, 1\]"),
        (lambda: token_divergence(S, T, temperature=0.0), "temperature must be positive"),
        (lambda: token_divergence(S, T, kind="kl"), "unknown kind"),
        (lambda: token_divergence(S, T, reduction="batchmean"), "unknown reduction"),
        (lambda: token_divergence(S, T, chunk_size=0), "chunk_size"),
        (lambda: forward_kl([0.5, 0.6], [0.5, 0.5]), "sum to 1"),
        (lambda: reverse_kl([1.5, -0.5], [0.5, 0.5]), "negative"),
        (lambda: total_variation([0.5, 0.5], [1.0, 0.0, 0.0]), r"vocabulary.*2.*3"),
        (lambda: generalized_jsd(P_T, P_S, beta=-0.1), "beta"),
        (lambda: pointwise_terms(S, T, kind="js"), "unknown kind"),
        (lambda: sampled_token_estimators(torch.zeros(3), torch.zeros(4)), "shape mismatch"),
    ],
)
def test_bad_input_raises(call, message):
    with pytest.raises(ValueError, match=message):
        call()
