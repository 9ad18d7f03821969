"""Chapter 6 graders."""

from __future__ import annotations

from collections.abc import Callable

import torch

from opd_lib.checks import GradingError, passed
from opd_lib.opsd import clip_per_token


def _cases(seed: int) -> list[tuple[torch.Tensor, float]]:
    gen = torch.Generator().manual_seed(seed)
    cases = [
        (torch.tensor([[0.01, 0.02, 4.1, 0.0]], dtype=torch.float64), 0.05),
        (torch.tensor([[0.3, 0.5], [2.0, 0.05]], dtype=torch.float64), 0.4),
    ]
    for _ in range(6):
        shape = (int(torch.randint(1, 4, (1,), generator=gen)), 7)
        d = torch.rand(shape, generator=gen, dtype=torch.float64) ** 3 * 5
        cap = float(torch.rand((), generator=gen, dtype=torch.float64) * 2 + 0.01)
        cases.append((d, cap))
    return cases


def check_clip_per_token(
    fn: Callable[[torch.Tensor, float], torch.Tensor], *, seed: int = 0
) -> None:
    """Chapter 6: ``fn(token_divergence, max_value)`` must return ``min(D_t, c)`` token by token,
    with the gradient of ``torch.clamp`` (1 below the cap, 0 above it)."""
    for i, (d, cap) in enumerate(_cases(seed)):
        where = f" on case {i} (cap {cap:.3g})"
        x = d.clone().requires_grad_(True)
        got = fn(x, cap)
        if not isinstance(got, torch.Tensor):
            raise GradingError(f"clip_per_token{where} returned {type(got).__name__}, not a tensor")
        expected = clip_per_token(d, cap)
        if got.shape != expected.shape:
            raise GradingError(
                f"clip_per_token{where} returned shape {tuple(got.shape)}, "
                f"expected {tuple(expected.shape)}"
            )
        if not torch.allclose(got.detach().to(expected.dtype), expected, rtol=1e-6, atol=1e-12):
            raise GradingError(
                f"clip_per_token{where}: values differ, got {got.detach().tolist()}, "
                f"expected {expected.tolist()}"
            )
        if not got.requires_grad:
            raise GradingError(f"clip_per_token{where}: the result carries no gradient")
        (grad,) = torch.autograd.grad(got.sum(), x)
        ref_x = d.clone().requires_grad_(True)
        (ref_grad,) = torch.autograd.grad(clip_per_token(ref_x, cap).sum(), ref_x)
        if not torch.allclose(grad, ref_grad, atol=1e-9):
            raise GradingError(
                f"clip_per_token{where}: the gradient differs; a token above the cap should get "
                "gradient 0 and one below it gradient 1"
            )
    passed("clip_per_token")
