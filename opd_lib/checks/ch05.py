"""Chapter 5 graders."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from opd_lib.checks import GradingError, grader, passed
from opd_lib.pg import discounted_returns
from opd_lib.sim.reinforce import categorical_reinforce_estimate


def _cases(seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Fixed and random (student logits, teacher log-probs, samples) cases."""
    fixed_logits = np.log(np.array([0.3, 0.4, 0.3]))
    fixed_teacher = np.log(np.array([0.7, 0.02, 0.28]))
    cases = [
        (fixed_logits, fixed_teacher, np.array([0])),
        (fixed_logits, fixed_teacher, np.array([1])),
        (fixed_logits, fixed_teacher, np.array([0, 1, 2, 2, 1])),
        (np.zeros(4), np.log(np.full(4, 0.25)), np.array([3, 1])),  # student = teacher: zero
    ]
    rng = np.random.default_rng(seed)
    for _ in range(20):
        V = int(rng.integers(2, 9))
        z = rng.normal(0.0, 2.0, V) + float(rng.normal())  # logits need not be normalised
        t = rng.normal(0.0, 2.0, V)
        t = t - np.logaddexp.reduce(t)
        y = rng.integers(0, V, size=int(rng.integers(1, 40)))
        cases.append((z, t, y))
    return cases


def _returns_cases(seed: int) -> list[tuple[torch.Tensor, torch.Tensor, float, bool]]:
    """(rewards, mask, gamma, length_normalize) cases: left and right padding, holes in the mask
    (tool output), and garbage rewards at masked-out positions that must not leak in."""
    gen = torch.Generator().manual_seed(seed)
    cases = []
    fixed_r = torch.tensor([[9.0, 9.0, 1.0, -2.0, 0.5], [1.0, 2.0, 3.0, 9.0, 9.0]])
    fixed_m = torch.tensor([[False, False, True, True, True], [True, True, True, False, False]])
    for gamma, norm in [(1.0, False), (0.5, False), (1.0, True)]:
        cases.append((fixed_r.double(), fixed_m, gamma, norm))
    for i in range(12):
        B = int(torch.randint(1, 5, (1,), generator=gen))
        T = int(torch.randint(2, 9, (1,), generator=gen))
        r = torch.randn(B, T, generator=gen, dtype=torch.float64)
        m = torch.rand(B, T, generator=gen) < 0.7
        m[:, int(torch.randint(0, T, (1,), generator=gen))] = True  # at least one token per row
        cases.append((r, m, [1.0, 0.9, 0.0][i % 3], i % 2 == 1))
    return cases


def _diagnose_returns(got, r, m, gamma, norm, expected) -> str:
    """Name the plausible mistake ``got`` matches, if any."""
    zero = torch.zeros((), dtype=r.dtype)
    if (got[~m] != 0).any():
        return " (positions outside the mask must be 0: they are not steps of the answer)"
    if torch.allclose(got, -expected, atol=1e-9) and expected.abs().max() > 1e-9:
        return " (the sign is flipped)"
    nz = expected.abs() > 1e-9
    if nz.any():
        ratio = got[nz] / expected[nz]
        if torch.allclose(ratio, ratio[0].expand_as(ratio), atol=1e-9) and abs(ratio[0] - 1) > 1e-6:
            return f" (off by a constant factor {ratio[0].item():.4g})"
    everything = torch.ones_like(m)
    leaky = [discounted_returns(x, everything, gamma, norm) for x in (r, torch.where(m, r, zero))]
    if any(torch.allclose(got, torch.where(m, x, zero), atol=1e-9) for x in leaky):
        return (
            " (masked-out positions were counted as steps: they must neither add reward nor "
            "take a discount step nor count as remaining tokens)"
        )
    plain = discounted_returns(r, m, gamma, False)
    if norm and torch.allclose(got, plain, atol=1e-9):
        return " (length_normalize=True was ignored)"
    if norm:
        total = m.sum(-1, keepdim=True).clamp(min=1).to(r.dtype)
        if torch.allclose(got, torch.where(m, plain / total, zero), atol=1e-9):
            return (
                " (divided by the whole row's token count; divide R_t by the number of masked "
                "tokens from t to the end)"
            )
    if not norm:
        nxt = torch.where(m, plain - r, zero)
        if torch.allclose(got, nxt, atol=1e-9):
            return " (off by one: R_t = r_t + gamma * R_(t+1) includes the reward at t itself)"
        past = torch.where(m, discounted_returns(r.flip(-1), m.flip(-1), gamma).flip(-1), zero)
        if torch.allclose(got, past, atol=1e-9):
            return " (you summed the rewards up to t; reward-to-go sums from t to the end)"
    return ""


@grader
def check_masked_returns(
    fn: Callable[[torch.Tensor, torch.Tensor, float, bool], torch.Tensor], *, seed: int = 0
) -> None:
    """Chapter 5: ``fn(rewards, mask, gamma, length_normalize)`` must return the masked reward-to-go
    of :func:`opd_lib.pg.discounted_returns`: ``R_t = sum_{k >= t, masked} gamma^(steps) r_k``
    over masked tokens only, 0 outside the mask, divided by the number of masked tokens from t on
    when ``length_normalize``."""
    for i, (r, m, gamma, norm) in enumerate(_returns_cases(seed)):
        where = f" on case {i} (shape {tuple(r.shape)}, gamma {gamma:g}, length_normalize {norm})"
        expected = discounted_returns(r, m, gamma, norm)
        got = fn(r.clone(), m.clone(), gamma, norm)
        if not isinstance(got, torch.Tensor):
            raise GradingError(f"masked_returns{where} returned {type(got).__name__}, not a tensor")
        if got.shape != expected.shape:
            raise GradingError(
                f"masked_returns{where} returned shape {tuple(got.shape)}, expected "
                f"{tuple(expected.shape)} (one return per position)"
            )
        got = got.detach().to(torch.float64)
        if not torch.allclose(got, expected, rtol=1e-6, atol=1e-9):
            hint = _diagnose_returns(got, r, m, gamma, norm, expected)
            raise GradingError(
                f"masked_returns{where} returned {np.round(got.numpy(), 3).tolist()}, expected "
                f"{np.round(expected.numpy(), 3).tolist()}{hint}"
            )
    passed("masked_returns")


@grader
def check_reinforce_categorical(
    fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray], *, seed: int = 0
) -> None:
    """Chapter 5: ``fn(student_logits, teacher_logp, samples)`` must return the REINFORCE estimate
    of the gradient of KL(softmax(z) || p_T) with respect to the logits z, averaged over the
    samples: ``-(1/N) sum_i r_i (onehot(y_i) - softmax(z))`` with
    ``r_i = log p_T(y_i) - log q(y_i)``."""
    for i, (z, t, y) in enumerate(_cases(seed)):
        expected = categorical_reinforce_estimate(z, t, y)
        where = f" on case {i} (V={len(z)}, {len(y)} samples)"
        try:
            got = np.asarray(fn(z.copy(), t.copy(), y.copy()), dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise GradingError(
                f"reinforce_categorical{where} did not return numbers: {err}"
            ) from err
        if got.shape != expected.shape:
            raise GradingError(
                f"reinforce_categorical{where} returned shape {got.shape}, "
                f"expected {expected.shape} (one entry per logit)"
            )
        if not np.allclose(got, expected, rtol=1e-6, atol=1e-9):
            hint = ""
            if np.allclose(got, -expected, rtol=1e-6, atol=1e-9):
                hint = " (the sign is flipped: this is the ascent direction of -KL, not grad KL)"
            raise GradingError(
                f"reinforce_categorical{where} returned {np.round(got, 4)}, expected "
                f"{np.round(expected, 4)}{hint}"
            )
    passed("reinforce_categorical")


# ------------------------------------------------------------------ reading the G-OPD figure


@grader
def check_extrapolation_reading(fn: Callable[[], tuple[int, float]]) -> None:
    """Chapter 5, the reward-extrapolation figure with extrapolation on at ``lam = 2``: ``fn()``
    returns ``(step, final_mean)``: the first recorded training step at which the student's mean
    answer is past the teacher's (the figure's title says so), and its mean answer at the last
    step (to within 0.01)."""
    from opd_lib.sim import reward_extrapolation as rx

    ans = rx.answers()
    run = rx.climb(ans, 2.0)
    means = run.means(ans.x)
    teacher_mean = float(ans.teacher @ ans.x)
    past = [rx.relative_to_teacher(m, teacher_mean) == "past the teacher" for m in means]
    step = int(run.steps[past.index(True)])
    got = fn()
    if not isinstance(got, tuple | list) or len(got) != 2:
        raise GradingError(f"extrapolation_reading must return (step, final_mean), got {got!r}")
    try:
        step_got, mean_got = float(got[0]), float(got[1])
    except (TypeError, ValueError) as err:
        raise GradingError(f"extrapolation_reading returned {got!r}: not numbers") from err
    if step_got != step:
        where = "the first step whose title says 'past the teacher'"
        raise GradingError(
            f"step {step_got:g} is not {where} (extrapolation on, lam = 2; the slider moves "
            f"in steps of {int(run.steps[1] - run.steps[0])})"
        )
    if abs(mean_got - means[-1]) > 0.01:
        raise GradingError(
            f"{mean_got:g} is not the student's mean answer at step {int(run.steps[-1])} with "
            "lam = 2 (read it from the lower title at the last step)"
        )
    passed("extrapolation_reading")
