"""Chapter 3: a student with enough capacity ends at the teacher under every divergence.

:mod:`opd_lib.sim.fdiv` fits a one-Gaussian student to a bimodal teacher, and the divergences
disagree (forward KL covers both modes, reverse KL and JSD pick one). Here the student is a
*free-logit* categorical over the same grid, ``q = softmax(s)`` with one free logit per point,
so it can represent the teacher exactly. Every divergence ``D`` in the menu (forward and reverse
KL, JSD, total variation) is >= 0 and zero if and only if ``q = p``, so all of them share one
optimum, the teacher itself; :func:`fit_free_logits` shows it numerically. The loss is
:func:`opd_lib.divergences.token_divergence`; the reported distances are the library's
:func:`~opd_lib.divergences.forward_kl`, :func:`~opd_lib.divergences.reverse_kl`,
:func:`~opd_lib.divergences.generalized_jsd` (beta = 1/2) and
:func:`~opd_lib.divergences.total_variation`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from opd_lib import divergences

DISTANCES = {
    "fkl": divergences.forward_kl,
    "rkl": divergences.reverse_kl,
    "jsd": divergences.generalized_jsd,
    "tv": divergences.total_variation,
}
"""The distances to the teacher reported for each fit, by ``kind``."""


@dataclass(frozen=True)
class CapacityFit:
    """A free-logit student fitted with one divergence.

    ``probs`` is the fitted ``q`` on the grid, ``distances`` its distance to the teacher under
    each kind of :data:`DISTANCES`, and ``losses`` the training loss per step.
    """

    divergence: str
    probs: np.ndarray
    distances: dict[str, float]
    losses: np.ndarray


def fit_free_logits(
    teacher_probs: np.ndarray,
    divergence: str,
    steps: int = 400,
    lr: float = 0.2,
    init_scale: float = 1.0,
    seed: int = 0,
) -> CapacityFit:
    """Fit ``q = softmax(s)``, one free logit per grid point, to ``teacher_probs`` by Adam.

    Args:
        teacher_probs: ``[n]`` strictly positive, summing to 1.
        divergence: ``"fkl"``, ``"rkl"``, ``"jsd"`` (beta = 1/2) or ``"tv"``, the ``kind`` of
            :func:`opd_lib.divergences.token_divergence`, which computes the loss.
        steps, lr: Adam's number of steps and learning rate (float64 throughout).
        init_scale: the initial logits are ``init_scale * N(0, 1)`` drawn with
            ``numpy.random.default_rng(seed)``.

    Deterministic: the same arguments give the same fit.
    """
    p = np.asarray(teacher_probs, dtype=float)
    if p.ndim != 1 or p.size < 2:
        raise ValueError(f"teacher_probs must be 1-D with >= 2 entries, got {p.shape}")
    if (p <= 0).any() or not np.isclose(p.sum(), 1.0):
        raise ValueError("teacher_probs must be strictly positive and sum to 1")
    if divergence not in divergences.KINDS:
        raise ValueError(f"unknown divergence {divergence!r}; expected {divergences.KINDS}")
    if steps < 1 or lr <= 0 or init_scale < 0:
        raise ValueError(
            f"need steps >= 1, lr > 0, init_scale >= 0; got {steps}, {lr}, {init_scale}"
        )
    init = init_scale * np.random.default_rng(seed).standard_normal(p.size)
    logits = torch.tensor(init, dtype=torch.float64, requires_grad=True)
    teacher_logits = torch.as_tensor(np.log(p), dtype=torch.float64).view(1, 1, -1)
    optimiser = torch.optim.Adam([logits], lr=lr)
    losses = np.empty(steps)
    for i in range(steps):
        loss = divergences.token_divergence(
            logits.view(1, 1, -1), teacher_logits, kind=divergence, beta=0.5
        )
        optimiser.zero_grad()
        loss.sum().backward()
        optimiser.step()
        losses[i] = loss.item()
    with torch.no_grad():
        q = torch.softmax(logits, dim=-1).numpy()
    distances = {kind: float(fn(p, q)) for kind, fn in DISTANCES.items()}
    return CapacityFit(divergence, probs=q, distances=distances, losses=losses)
