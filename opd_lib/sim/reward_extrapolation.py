"""Chapter 5: a student climbing G-OPD's reward landscape, step by step.

The answers are the points of a grid on a line (think of "how far a solution goes": further right
is what the teacher learned to prefer over the reference). The teacher ``pi_T`` and the reference
``pi_ref`` (the student before distillation) are discretised Gaussians: the teacher narrower and to
the right of the reference.

The reward is the G-OPD paper's (Yang et al. 2026, arXiv:2602.12125), computed by
:func:`opd_lib.pg.extrapolated_reward`: ``r(y) = lam * (log pi_T(y) - log pi_ref(y))``, and the
student maximises ``J(pi) = E_pi[r] - KL(pi || pi_ref)``. Up to the student's own entropy bonus
the landscape it climbs is therefore ``r + log pi_ref = lam log pi_T + (1 - lam) log pi_ref``
(:func:`landscape`): at ``lam = 1`` (extrapolation off) exactly the teacher's log-probability, the
reward of plain on-policy distillation; at ``lam > 1`` tilted further in the direction in which the
teacher differs from the reference. Its optimum is
:func:`opd_lib.sim.reinforce.gopd_optimum`, ``pi* ∝ pi_ref^(1 - lam) pi_T^lam``.

:func:`climb` follows the student from ``pi_ref`` by natural-gradient ascent on ``J`` over the
logits of a softmax: the exact gradient (autograd on the exact expectation, no sampling) divided
by the policy's probabilities (the Fisher preconditioner of a softmax). A step of size ``eta``
then moves the policy along the geometric path ``pi_k+1 ∝ pi_k^(1 - eta) pi*^eta``, so the student
glides from the reference to the optimum, and every run is deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from opd_lib import pg
from opd_lib._threads import single_thread

__all__ = ["Answers", "Climb", "answers", "climb", "landscape", "relative_to_teacher", "reward"]


@dataclass(frozen=True)
class Answers:
    """The answer grid ``x`` and the teacher's and reference's log-probabilities on it."""

    x: np.ndarray
    log_teacher: np.ndarray
    log_reference: np.ndarray

    @property
    def teacher(self) -> np.ndarray:
        return np.exp(self.log_teacher)

    @property
    def reference(self) -> np.ndarray:
        return np.exp(self.log_reference)


def _log_gaussian(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    logits = -0.5 * ((x - mean) / std) ** 2
    return logits - np.logaddexp.reduce(logits)


def answers(
    n: int = 81,
    span: float = 5.0,
    teacher_mean: float = 1.0,
    teacher_std: float = 1.0,
    reference_mean: float = -1.5,
    reference_std: float = 1.5,
) -> Answers:
    """``n`` answers evenly spaced on ``[-span, span]``; teacher and reference are Gaussians with
    the given means and standard deviations, normalised over the grid."""
    if not isinstance(n, int) or n < 3:
        raise ValueError(f"n must be an int >= 3, got {n!r}")
    for name, value in (
        ("span", span),
        ("teacher_std", teacher_std),
        ("reference_std", reference_std),
    ):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be finite and positive, got {value}")
    x = np.linspace(-span, span, n)
    return Answers(
        x,
        _log_gaussian(x, teacher_mean, teacher_std),
        _log_gaussian(x, reference_mean, reference_std),
    )


def reward(ans: Answers, lam: float) -> np.ndarray:
    """The G-OPD reward of every answer, ``lam (log pi_T - log pi_ref)``
    (:func:`opd_lib.pg.extrapolated_reward`)."""
    r = pg.extrapolated_reward(
        torch.as_tensor(ans.log_teacher), torch.as_tensor(ans.log_reference), lam
    )
    return r.numpy()


def landscape(ans: Answers, lam: float) -> np.ndarray:
    """What the student climbs: ``reward + log pi_ref = lam log pi_T + (1 - lam) log pi_ref``;
    the teacher's log-probability at ``lam = 1``."""
    return reward(ans, lam) + ans.log_reference


@dataclass(frozen=True)
class Climb:
    """One run of :func:`climb`: the recorded ``steps`` ``[S]`` and the student's policy at each
    ``[S, n]`` (row 0: the reference it starts from), for the scale ``lam``."""

    lam: float
    steps: np.ndarray
    policies: np.ndarray

    def means(self, x: np.ndarray) -> np.ndarray:
        """The mean answer of the policy at each recorded step."""
        return self.policies @ x


@single_thread()
def climb(
    ans: Answers, lam: float, steps: int = 40, lr: float = 0.15, record_every: int = 2
) -> Climb:
    """Natural-gradient ascent on ``J(pi) = E_pi[r] - KL(pi || pi_ref)`` over softmax logits,
    from ``pi_ref`` (see the module docstring; ``lr`` in (0, 1]); records the policy every
    ``record_every`` steps (and at the last)."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not isinstance(record_every, int) or record_every < 1:
        raise ValueError(f"record_every must be a positive int, got {record_every!r}")
    if not 0 < lr <= 1:
        raise ValueError(f"lr must lie in (0, 1], got {lr}")
    r = torch.as_tensor(reward(ans, lam))
    log_ref = torch.as_tensor(ans.log_reference)
    z = log_ref.clone().requires_grad_(True)
    recorded, policies = [0], [ans.reference]
    for step in range(1, steps + 1):
        log_pi = torch.log_softmax(z, -1)
        objective = (log_pi.exp() * (r - (log_pi - log_ref))).sum()
        (grad,) = torch.autograd.grad(objective, z)
        with torch.no_grad():
            z += lr * grad / log_pi.exp()
        if step % record_every == 0 or step == steps:
            recorded.append(step)
            policies.append(torch.softmax(z.detach(), -1).numpy())
    return Climb(float(lam), np.array(recorded), np.stack(policies))


def relative_to_teacher(mean: float, teacher_mean: float, tol: float = 0.05) -> str:
    """Where a mean answer lies: "past the teacher" (more than ``tol`` beyond the teacher's
    mean), "on the teacher" (within ``tol``) or "short of the teacher"."""
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    if mean > teacher_mean + tol:
        return "past the teacher"
    return "on the teacher" if mean >= teacher_mean - tol else "short of the teacher"
