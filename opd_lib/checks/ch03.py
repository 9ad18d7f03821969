"""Chapter 3 graders."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from opd_lib import divergences
from opd_lib.checks import GradingError, compare_number, grader, passed


@grader
def check_jsd_generator(make_f: Callable[[float], Callable], *, seed: int = 0) -> None:
    """Chapter 3: ``make_f(beta)`` must return the generator ``f`` (a function of a NumPy array
    ``u``) for which ``sum_x Q f(P / Q)`` is the generalized JSD with
    ``m = beta P + (1 - beta) Q`` (P the teacher), i.e. :func:`opd_lib.divergences.generalized_jsd`.

    Checks ``f(1) = 0`` and the divergence on fixed and random pairs for ``0 < beta < 1``.
    """
    rng = np.random.default_rng(seed)
    cases = [(np.array([0.7, 0.2, 0.1]), np.array([0.3, 0.4, 0.3]), b) for b in (0.1, 0.5, 0.9)]
    for _ in range(15):
        size = int(rng.integers(2, 9))
        p, q = rng.dirichlet(np.ones(size)), rng.dirichlet(np.ones(size))
        cases.append((p, q, float(rng.uniform(0.02, 0.98))))
    for p, q, beta in cases:
        f = make_f(beta)
        where = f"(beta={beta:.3f})"
        try:
            at_one = np.asarray(f(np.array([1.0])), dtype=float).reshape(-1)[0]
            values = np.asarray(f(p / q), dtype=float)
        except (TypeError, ValueError) as err:
            raise GradingError(f"f{where} failed on a NumPy array: {err}") from err
        if values.shape != p.shape:
            raise GradingError(f"f{where} returned shape {values.shape}, expected {p.shape}")
        compare_number("f", at_one, 0.0, f"{where} at u = 1", rtol=1e-9)
        expected = float(divergences.generalized_jsd(p, q, beta))
        compare_number(
            "sum Q f(P/Q)",
            float((q * values).sum()),
            expected,
            f" {where} for P={p.round(3)}",
            rtol=1e-6,
        )
    passed("generalized JSD generator")


def _reference_rkl(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, ...]:
    z = student.clone().requires_grad_(True)
    value = divergences.token_divergence(z, teacher, kind="rkl")
    (grad,) = torch.autograd.grad(value.sum(), z)
    return value.detach(), grad


def _diagnose_grad(got: torch.Tensor, s: torch.Tensor, t: torch.Tensor, ref: torch.Tensor) -> str:
    q, p = s.softmax(-1), t.softmax(-1)
    log_ratio = s.log_softmax(-1) - t.log_softmax(-1)
    hints = [
        (-ref, "has the wrong sign"),
        (q * log_ratio, "is missing the - KL term: a softmax gradient sums to zero over V"),
        (log_ratio + 1, "is the gradient with respect to the probabilities, not the logits"),
        (q - p, "is forward KL's gradient, q - p, not reverse KL's"),
        (2 * ref, "is off by a factor of 2"),
    ]
    for wrong, hint in hints:
        if torch.allclose(got, wrong, rtol=1e-5, atol=1e-8):
            return hint
    return "differs from the reference q * (log q - log p - KL)"


@grader
def check_reverse_kl_and_grad(fn: Callable[..., object], *, seed: int = 0) -> None:
    """Chapter 3: ``fn(student_logits, teacher_logits)`` (``[..., V]`` tensors) must return
    ``(value, grad)``: the reverse KL ``KL(q || p)`` per position (``[...]``) and its gradient
    with respect to the student logits (``[..., V]``), compared with
    ``divergences.token_divergence(kind="rkl")`` and autograd on random float64 logits."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(1, 1, 3), (2, 3, 5), (4, 7), (3, 2, 4, 11)]
    for shape in shapes:
        s = 2.0 * torch.randn(shape, generator=gen, dtype=torch.float64)
        t = 2.0 * torch.randn(shape, generator=gen, dtype=torch.float64)
        ref_value, ref_grad = _reference_rkl(s, t)
        where = f" for logits of shape {shape}"
        out = fn(s.clone(), t.clone())
        if not isinstance(out, tuple | list) or len(out) != 2:
            raise GradingError(f"reverse_kl_and_grad{where} must return (value, grad)")
        value, grad = (torch.as_tensor(x, dtype=torch.float64) for x in out)
        if value.shape != ref_value.shape:
            raise GradingError(
                f"value{where} has shape {tuple(value.shape)}, expected {tuple(ref_value.shape)}"
                ": one number per position (sum over the vocabulary, no mean)"
            )
        if not torch.allclose(value, ref_value, rtol=1e-6, atol=1e-9):
            fkl = divergences.token_divergence(s, t, kind="fkl")
            hint = (
                "that is the forward KL(p || q); reverse KL averages under the student q"
                if torch.allclose(value, fkl, rtol=1e-6, atol=1e-9)
                else "check KL(q || p) = sum_v q_v (log q_v - log p_v)"
            )
            raise GradingError(f"value{where} differs from the reference: {hint}")
        if grad.shape != ref_grad.shape:
            raise GradingError(
                f"grad{where} has shape {tuple(grad.shape)}, expected {tuple(ref_grad.shape)}"
            )
        if not torch.allclose(grad, ref_grad, rtol=1e-6, atol=1e-9):
            raise GradingError(f"grad{where} {_diagnose_grad(grad, s, t, ref_grad)}")
    passed("reverse_kl_and_grad")
