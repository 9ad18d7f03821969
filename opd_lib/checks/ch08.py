"""Chapter 8 graders."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from opd_lib.checks import GradingError, grader, passed
from opd_lib.unified import advantages


def _surrogate_reference(lp_s, lp_t, r, b, mask, lam) -> torch.Tensor:
    """-(1/N) sum over masked tokens of A_t log pi_theta(y_t), A_t from unified.advantages."""
    a = advantages(lp_s.detach(), lp_t, r, b, lam)
    zero = torch.zeros((), dtype=lp_s.dtype)
    return -torch.where(mask, a * lp_s, zero).sum() / mask.sum()


def _surrogate_cases(seed: int):
    gen = torch.Generator().manual_seed(seed)
    for i in range(12):
        B, T = 1 + i % 3, 2 + i % 4
        lp_s = -torch.rand(B, T, generator=gen, dtype=torch.float64) * 3 - 0.01
        lp_t = -torch.rand(B, T, generator=gen, dtype=torch.float64) * 3 - 0.01
        r = (torch.rand(B, generator=gen) < 0.5).double()
        b = torch.rand(B, generator=gen, dtype=torch.float64)
        mask = torch.rand(B, T, generator=gen) < 0.7
        mask[:, 0] = True
        if i % 3 == 2:
            mask[0, 1:] = False  # rows of different lengths
        yield lp_s, lp_t, r, b, mask, [0.0, 1.0, 0.5, 0.3][i % 4]


def _surrogate_hint(lp_s, lp_t, r, b, mask, lam, got, expected) -> str:
    """Name the plausible mistake, if ``got`` (a value) matches one."""
    zero = torch.zeros((), dtype=lp_s.dtype)
    a = advantages(lp_s, lp_t, r, b, lam)
    guesses = {
        "masked positions were counted: average over the mask's tokens only": -(a * lp_s).mean(),
        "that is a mean per sequence, then over sequences; the surrogate is one token mean over "
        "the whole batch": -(torch.where(mask, a * lp_s, zero).sum(1) / mask.sum(1)).mean(),
        "the sign is flipped: the loss is minus the advantage-weighted log-likelihood": -expected,
        "that is a sum; divide by the number of masked tokens": expected * mask.sum(),
    }
    for hint, wrong in guesses.items():
        if torch.allclose(got, wrong, rtol=1e-6, atol=1e-9):
            return f" ({hint})"
    return ""


@grader
def check_meta_surrogate(fn: Callable, *, seed: int = 0) -> None:
    """Chapter 8: ``fn(logp_student, logp_teacher, reward, baseline, mask, lam)`` must return the
    meta-estimator's surrogate loss, ``-(1/N) sum_{(b,t) in mask} A_t log pi_theta(y_t)`` with the
    advantage ``A_t`` of :func:`opd_lib.unified.advantages` *detached* and N the number of masked
    tokens in the batch; its gradient with respect to ``logp_student`` must be ``-A_t / N`` on
    masked tokens and 0 elsewhere."""
    for i, (lp_s, lp_t, r, b, mask, lam) in enumerate(_surrogate_cases(seed)):
        where = f" on case {i} (B={lp_s.shape[0]}, T={lp_s.shape[1]}, lam={lam:g})"
        x = lp_s.clone().requires_grad_(True)
        got = fn(x, lp_t.clone(), r.clone(), b.clone(), mask.clone(), lam)
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            raise GradingError(f"meta_surrogate{where} must return a scalar tensor, got {got!r}")
        expected = _surrogate_reference(lp_s, lp_t, r, b, mask, lam)
        value = got.detach().reshape(()).double()
        if not torch.allclose(value, expected, rtol=1e-6, atol=1e-9):
            hint = _surrogate_hint(lp_s, lp_t, r, b, mask, lam, value, expected)
            raise GradingError(
                f"meta_surrogate{where} returned {value.item():.6g}, expected "
                f"{expected.item():.6g}{hint}"
            )
        if not got.requires_grad:
            raise GradingError(f"meta_surrogate{where} carries no gradient to logp_student")
        (grad,) = torch.autograd.grad(got.reshape(()), x)
        ref_x = lp_s.clone().requires_grad_(True)
        (ref_grad,) = torch.autograd.grad(_surrogate_reference(ref_x, lp_t, r, b, mask, lam), ref_x)
        if not torch.allclose(grad, ref_grad, rtol=1e-6, atol=1e-9):
            hint = ""
            if lam > 0:
                hint = (
                    " (the value is right but the gradient is not: detach the advantage, which "
                    "holds -log pi_theta itself; only the log pi_theta that multiplies it is "
                    "differentiated)"
                )
            raise GradingError(f"meta_surrogate{where}: the gradient differs{hint}")
    passed("meta_surrogate")


def _cases(seed: int):
    rng = np.random.default_rng(seed)
    fixed = [
        # (logp_student, logp_teacher, reward, baseline, lam)
        ([[np.log(0.01), np.log(0.3)]], [[np.log(0.6), np.log(0.3)]], [0.0], [0.0], 1.0),
        ([[-1.0, -2.0, -0.5]], [[-0.2, -3.0, -0.5]], [1.0], [0.25], 0.0),
        ([[-1.0, -2.0], [-0.1, -0.3]], [[-0.5, -0.5], [-2.0, -0.1]], [1.0, 0.0], [0.5, 0.5], 0.3),
    ]
    for lp_s, lp_t, r, b, lam in fixed:
        yield (torch.tensor(lp_s), torch.tensor(lp_t), torch.tensor(r), torch.tensor(b), lam)
    for _ in range(10):
        B, T = int(rng.integers(1, 5)), int(rng.integers(1, 7))
        yield (
            torch.tensor(-rng.exponential(1.0, (B, T))),
            torch.tensor(-rng.exponential(1.0, (B, T))),
            torch.tensor(rng.integers(0, 2, B).astype(float)),
            torch.tensor(rng.uniform(0, 1, B)),
            float(rng.uniform(0, 1)),
        )


@grader
def check_advantages(fn: Callable, *, seed: int = 0) -> None:
    """Chapter 8: ``fn(logp_student, logp_teacher, reward, baseline, lam)`` must return the
    meta-algorithm's per-token advantage ``[B, T]``,
    ``lam (log pi_T - log pi_theta) + (1 - lam) (R - b)`` with ``R``, ``b`` per sequence."""
    for i, (lp_s, lp_t, r, b, lam) in enumerate(_cases(seed)):
        where = f" on case {i} (B={lp_s.shape[0]}, T={lp_s.shape[1]}, lam={lam:.3f})"
        expected = advantages(lp_s, lp_t, r, b, lam)
        try:
            got = torch.as_tensor(
                fn(lp_s.clone(), lp_t.clone(), r.clone(), b.clone(), lam), dtype=torch.float64
            )
        except (TypeError, ValueError, RuntimeError) as err:
            raise GradingError(f"advantages{where} raised {err!r}") from err
        if got.shape != expected.shape:
            raise GradingError(
                f"advantages{where} has shape {tuple(got.shape)}, expected "
                f"{tuple(expected.shape)}: one value per token (broadcast R - b over the tokens)"
            )
        if not torch.allclose(got, expected.double(), rtol=1e-6, atol=1e-9):
            raise GradingError(
                f"advantages{where} returned {got.numpy().round(4).tolist()}, expected "
                f"{expected.numpy().round(4).tolist()}"
            )
    passed("advantages")


# ------------------------------------------------------------------ reading the pipeline figure


_COVERAGES: dict[str, float] = {}


def _final_coverages() -> dict[str, float]:
    """Each method's mode coverage after 200 steps (GKD at lambda = beta = 0.5), as the
    pipeline figure shows it (computed once)."""
    from opd_lib.sim import pipeline

    if not _COVERAGES:
        _COVERAGES.update(
            {m: float(pipeline.train_pipeline(m).coverage[-1]) for m in pipeline.METHODS}
        )
    return dict(_COVERAGES)


@grader
def check_pipeline_reading(fn: Callable[[], tuple[str, float]]) -> None:
    """Chapter 8, the pipeline figure: ``fn()`` returns ``(method, coverage)``: the method that
    ends 200 steps with the lowest mode coverage (GKD at lambda = beta = 0.5), and that coverage
    as a fraction (to within 0.01)."""
    coverage = _final_coverages()
    lowest = min(coverage, key=coverage.get)
    got = fn()
    if not isinstance(got, tuple | list) or len(got) != 2:
        raise GradingError(f"pipeline_reading must return (method, coverage), got {got!r}")
    method, value = got
    if not isinstance(method, str) or method.strip().upper() != lowest.upper():
        seen = f" ({coverage[method]:.0%})" if method in coverage else ""
        raise GradingError(
            f"{method!r}{seen} is not the method with the lowest final coverage: click each "
            "method and read the top-right title at 200 steps"
        )
    try:
        value = float(value)
    except (TypeError, ValueError) as err:
        raise GradingError(f"coverage {value!r} is not a number") from err
    if value > 1:
        raise GradingError(f"give the coverage as a fraction (0.5, not 50), got {value:g}")
    if abs(value - coverage[lowest]) > 0.01:
        raise GradingError(f"{value:g} is not {lowest}'s final mode coverage")
    passed("pipeline_reading")
