"""Chapter 6 graders."""

from __future__ import annotations

from collections.abc import Callable

import torch

from opd_lib.checks import GradingError, grader, passed
from opd_lib.divergences import token_divergence
from opd_lib.opsd import clip_per_token, clip_pointwise


def _cases(seed: int) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """(student logits, teacher logits, cap): the worked pivot token and random [B, T, V] batches
    whose teachers keep some mass off the student's favourites (so some terms are negative).
    Logits are not normalised: a softmax must be taken."""
    pivot_s = torch.log(torch.tensor([[[0.01, 0.90, 0.05, 0.04]]], dtype=torch.float64)) + 1.0
    pivot_t = torch.log(torch.tensor([[[0.60, 0.30, 0.05, 0.05]]], dtype=torch.float64)) - 2.0
    cases = [(pivot_s, pivot_t, 0.05), (pivot_s, pivot_t, 0.5)]
    gen = torch.Generator().manual_seed(seed)
    for i in range(6):
        B, T, V = 1 + i % 2, 2 + i % 3, 3 + i
        s = torch.randn(B, T, V, generator=gen, dtype=torch.float64) * 2
        t = torch.randn(B, T, V, generator=gen, dtype=torch.float64) * 2
        cases.append((s, t, [0.05, 0.2, 1.0][i % 3]))
    return cases


def _diagnose(got: torch.Tensor, s: torch.Tensor, t: torch.Tensor, cap: float) -> str:
    """Name the plausible mistake ``got`` matches, if any."""
    log_q, log_p = s.log_softmax(-1), t.log_softmax(-1)
    terms = log_p.exp() * (log_p - log_q)  # forward KL terms p_v log(p_v / q_v)
    guesses = {
        "you clipped the vocabulary-summed divergence (that is per-token clipping, min(D_t, c)); "
        "clip each entry p_v log(p_v / q_v) before the sum": clip_per_token(
            token_divergence(s, t, "fkl"), cap
        ),
        "you clipped from below too: negative terms are never clipped": terms.clamp(-cap, cap).sum(
            -1
        ),
        "you used the reverse KL's terms q_v log(q_v / p_v) (teacher and student swapped); "
        "OPSD's default is the forward KL "
        "p_v log(p_v / q_v) with p the hinted teacher": (log_q.exp() * (log_q - log_p))
        .clamp(max=cap)
        .sum(-1),
        "you averaged over the vocabulary instead of summing": terms.clamp(max=cap).mean(-1),
        "you used the raw logits as log-probabilities: apply log_softmax first": (t.exp() * (t - s))
        .clamp(max=cap)
        .sum(-1),
        "no clip was applied": terms.sum(-1),
    }
    for hint, wrong in guesses.items():
        if wrong.shape == got.shape and torch.allclose(got, wrong, rtol=1e-6, atol=1e-9):
            return f" ({hint})"
    return ""


@grader
def check_clip_pointwise(
    fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor], *, seed: int = 0
) -> None:
    """Chapter 6: ``fn(student_logits, teacher_logits, max_value)`` on ``[B, T, V]`` logits must
    return the point-wise clipped forward KL per token ``[B, T]``,
    ``sum_v min(p_v log(p_v / q_v), c)`` with ``p = softmax(teacher)``, ``q = softmax(student)``
    (:func:`opd_lib.opsd.clip_pointwise`), with the same gradient with respect to the student's
    logits."""
    for i, (s, t, cap) in enumerate(_cases(seed)):
        where = f" on case {i} (shape {tuple(s.shape)}, cap {cap:g})"
        x = s.clone().requires_grad_(True)
        got = fn(x, t.clone(), cap)
        if not isinstance(got, torch.Tensor):
            raise GradingError(f"clip_pointwise{where} returned {type(got).__name__}, not a tensor")
        expected = clip_pointwise(s, t, max_value=cap)
        if got.shape != expected.shape:
            raise GradingError(
                f"clip_pointwise{where} returned shape {tuple(got.shape)}, expected "
                f"{tuple(expected.shape)} (one value per token: sum over the vocabulary)"
            )
        value = got.detach().to(torch.float64)
        if not torch.allclose(value, expected, rtol=1e-6, atol=1e-9):
            raise GradingError(
                f"clip_pointwise{where}: got {value.numpy().round(4).tolist()}, expected "
                f"{expected.numpy().round(4).tolist()}{_diagnose(value, s, t, cap)}"
            )
        if not got.requires_grad:
            raise GradingError(f"clip_pointwise{where}: the result carries no gradient")
        (grad,) = torch.autograd.grad(got.sum(), x)
        ref_x = s.clone().requires_grad_(True)
        (ref_grad,) = torch.autograd.grad(clip_pointwise(ref_x, t, max_value=cap).sum(), ref_x)
        if not torch.allclose(grad, ref_grad, rtol=1e-6, atol=1e-9):
            raise GradingError(
                f"clip_pointwise{where}: the values are right but the gradient differs; a clipped "
                "entry must pass no gradient, an unclipped one its full gradient"
            )
    passed("clip_pointwise")
