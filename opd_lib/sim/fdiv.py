"""Chapter 3: f-divergences, and what a student of limited capacity learns under each one.

Two parts:

* **Generators.** Every divergence in the book's menu is an f-divergence
  ``D_f(P || Q) = sum_x Q(x) f(P(x) / Q(x))`` with ``P`` the teacher, ``Q`` the student and ``f``
  convex with ``f(1) = 0``. :data:`GENERATORS` lists ``f`` for each; :func:`f_divergence` evaluates
  the sum, so a page can check it against :mod:`opd_lib.divergences`.
* **Fits.** A bimodal teacher on a discretised 1-D grid (:func:`bimodal_teacher`) and a student that
  can only be a single discretised Gaussian (two parameters, mean and log-std). :func:`fit_student`
  minimises a divergence from :func:`opd_lib.divergences.token_divergence` by gradient descent
  (Adam) in float64, deterministic given the initial point; :func:`mode_summary` measures where
  the fitted student put its mass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from opd_lib import divergences

Generator = Callable[[np.ndarray], np.ndarray]


def _xlogx(u: np.ndarray) -> np.ndarray:
    u = np.asarray(u, dtype=float)
    return np.where(u > 0, u * np.log(np.where(u > 0, u, 1.0)), 0.0)


def jsd_generator(beta: float = 0.5) -> Generator:
    """``f`` of the generalized JSD with ``m = beta P + (1 - beta) Q`` (TRL's orientation):
    ``f(u) = beta u log u - (beta u + 1 - beta) log(beta u + 1 - beta)``, for ``0 < beta < 1``.

    (At ``beta = 0`` or ``1`` this ``f`` is identically 0: the library's special-cased endpoints,
    forward and reverse KL, are *not* members of this family's limit.)
    """
    if not 0.0 < beta < 1.0:
        raise ValueError(f"beta must lie strictly between 0 and 1, got {beta}")

    def f(u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, dtype=float)
        return beta * _xlogx(u) - _xlogx(beta * u + 1.0 - beta)

    return f


GENERATORS: dict[str, Generator] = {
    "fkl": lambda u: _xlogx(u),  # KL(P || Q)
    "rkl": lambda u: -np.log(np.asarray(u, dtype=float)),  # KL(Q || P)
    "jsd": jsd_generator(0.5),  # symmetric JSD, m = (P + Q) / 2
    "tv": lambda u: 0.5 * np.abs(np.asarray(u, dtype=float) - 1.0),  # 1/2 sum |P - Q|
}
"""The generator ``f`` of each divergence kind in :mod:`opd_lib.divergences` (beta = 1/2 JSD)."""


def f_divergence(p_teacher: np.ndarray, p_student: np.ndarray, f: Generator) -> np.ndarray:
    """``sum_x Q(x) f(P(x) / Q(x))`` over the last axis, for strictly positive ``P`` and ``Q``."""
    p = np.asarray(p_teacher, dtype=float)
    q = np.asarray(p_student, dtype=float)
    if p.shape != q.shape:
        raise ValueError(f"shape mismatch: p_teacher {p.shape} vs p_student {q.shape}")
    if (p <= 0).any() or (q <= 0).any():
        raise ValueError("f_divergence needs strictly positive p_teacher and p_student")
    return (q * f(p / q)).sum(axis=-1)


# --------------------------------------------------------------------------------------------
# A bimodal teacher and a one-Gaussian student
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Teacher:
    """A distribution on the grid ``x`` with two modes at ``centers``."""

    x: np.ndarray
    probs: np.ndarray
    centers: tuple[float, float]


def _gaussian_bumps(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mean) / std) ** 2)


def bimodal_teacher(
    n_points: int = 161,
    lo: float = -6.0,
    hi: float = 6.0,
    centers: tuple[float, float] = (-2.5, 2.5),
    width: float = 0.6,
    left_weight: float = 0.6,
) -> Teacher:
    """Mixture of two Gaussians (std ``width``), weights ``left_weight`` and ``1 - left_weight``,
    evaluated on ``n_points`` grid points in ``[lo, hi]`` and normalised to sum to 1."""
    if n_points < 3 or not lo < hi:
        raise ValueError(f"need n_points >= 3 and lo < hi, got {n_points}, {lo}, {hi}")
    if width <= 0 or not 0.0 < left_weight < 1.0:
        raise ValueError(f"need width > 0 and 0 < left_weight < 1, got {width}, {left_weight}")
    if not lo < centers[0] < centers[1] < hi:
        raise ValueError(f"need lo < centers[0] < centers[1] < hi, got {centers}")
    x = np.linspace(lo, hi, n_points)
    dens = left_weight * _gaussian_bumps(x, centers[0], width)
    dens = dens + (1 - left_weight) * _gaussian_bumps(x, centers[1], width)
    return Teacher(x=x, probs=dens / dens.sum(), centers=(float(centers[0]), float(centers[1])))


def gaussian_student_logits(
    x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor
) -> torch.Tensor:
    """Student logits ``-(x - mean)^2 / (2 std^2)``; their softmax is a discretised Gaussian."""
    return -0.5 * ((x - mean) / log_std.exp()) ** 2


@dataclass(frozen=True)
class FitResult:
    """A fitted student: its probabilities on the grid, parameters, and the loss per step."""

    probs: np.ndarray
    mean: float
    std: float
    losses: np.ndarray


def fit_student(
    teacher_probs: np.ndarray,
    x: np.ndarray,
    divergence: str,
    beta: float = 0.5,
    steps: int = 200,
    lr: float = 0.1,
    init_mean: float | None = None,
    init_std: float = 0.7,
    seed: int = 0,
) -> FitResult:
    """Fit a single discretised Gaussian to ``teacher_probs`` on the grid ``x`` by Adam.

    Args:
        teacher_probs: ``[n]`` strictly positive, summing to 1.
        x: ``[n]`` grid points.
        divergence: ``"fkl"``, ``"rkl"``, ``"jsd"`` (with ``beta``) or ``"tv"``: the ``kind`` of
            :func:`opd_lib.divergences.token_divergence`, which computes the loss.
        init_mean: start of the mean; ``None`` draws it uniformly from the grid's middle half with
            ``numpy.random.default_rng(seed)``.
        init_std: start of the standard deviation.

    Deterministic: the same arguments give the same fit.
    """
    p = np.asarray(teacher_probs, dtype=float)
    grid = np.asarray(x, dtype=float)
    if p.ndim != 1 or p.shape != grid.shape:
        raise ValueError(f"teacher_probs {p.shape} and x {grid.shape} must be equal 1-D shapes")
    if (p <= 0).any() or not np.isclose(p.sum(), 1.0):
        raise ValueError("teacher_probs must be strictly positive and sum to 1")
    if divergence not in divergences.KINDS:
        raise ValueError(f"unknown divergence {divergence!r}; expected one of {divergences.KINDS}")
    if steps < 1 or lr <= 0 or init_std <= 0:
        raise ValueError(f"need steps >= 1, lr > 0, init_std > 0; got {steps}, {lr}, {init_std}")
    if init_mean is None:
        lo, hi = grid.min(), grid.max()
        quarter = (hi - lo) / 4
        init_mean = float(np.random.default_rng(seed).uniform(lo + quarter, hi - quarter))
    xt = torch.as_tensor(grid, dtype=torch.float64)
    teacher_logits = torch.as_tensor(np.log(p), dtype=torch.float64).view(1, 1, -1)
    params = torch.tensor([float(init_mean), float(np.log(init_std))], dtype=torch.float64)
    params.requires_grad_(True)
    optimiser = torch.optim.Adam([params], lr=lr)
    losses = np.empty(steps)
    for i in range(steps):
        logits = gaussian_student_logits(xt, params[0], params[1]).view(1, 1, -1)
        loss = divergences.token_divergence(logits, teacher_logits, kind=divergence, beta=beta)
        optimiser.zero_grad()
        loss.sum().backward()
        optimiser.step()
        losses[i] = loss.item()
    mean, log_std = params.detach()
    with torch.no_grad():
        probs = torch.softmax(gaussian_student_logits(xt, mean, log_std), dim=-1).numpy()
    return FitResult(probs=probs, mean=mean.item(), std=log_std.exp().item(), losses=losses)


def mode_summary(teacher: Teacher, student_probs: np.ndarray, gap: float = 1.0) -> dict[str, float]:
    """Where a student put its mass, relative to the teacher's two modes.

    The grid is split at ``midpoint +/- gap`` (midpoint of the two centres): "left" below, "right"
    above, "gap" in between. Returns the student's mass in each region (``left``, ``gap``,
    ``right``), the teacher's mass in the gap (``teacher_gap``), and ``teacher_at_peak``: the
    teacher's probability at the student's most likely grid point divided by the teacher's largest
    probability (1 = the student's peak sits on a teacher mode, near 0 = in a valley).
    """
    q = np.asarray(student_probs, dtype=float)
    if q.shape != teacher.probs.shape:
        raise ValueError(f"student_probs {q.shape} does not match the grid {teacher.probs.shape}")
    if gap <= 0:
        raise ValueError(f"gap must be positive, got {gap}")
    mid = 0.5 * (teacher.centers[0] + teacher.centers[1])
    left, right = teacher.x < mid - gap, teacher.x > mid + gap
    middle = ~(left | right)
    peak = int(np.argmax(q))
    return {
        "left": float(q[left].sum()),
        "gap": float(q[middle].sum()),
        "right": float(q[right].sum()),
        "teacher_gap": float(teacher.probs[middle].sum()),
        "teacher_at_peak": float(teacher.probs[peak] / teacher.probs.max()),
    }
