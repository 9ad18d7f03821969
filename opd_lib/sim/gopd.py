"""Chapter 5: G-OPD (reward extrapolation) on a categorical over answers.

Two ways for a distilled student to end above its teacher, each with its closed-form optimum
(:func:`gopd_optimum`, the G-OPD paper's form, arXiv:2602.12125; :func:`verifier_bonus_optimum`,
a verifier-bonus variant) and two optimisers that check it: one on the exact objective
(:func:`optimise_exact`) and one from samples only, as a trainer does it (:func:`optimise_sampled`).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from opd_lib import pg
from opd_lib._threads import single_thread

# --------------------------------------------------------------------------------------------
# G-OPD: two ways to end above the teacher
# --------------------------------------------------------------------------------------------


def _check_dist(p: np.ndarray, name: str) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1 or (p <= 0).any() or not np.isclose(p.sum(), 1.0):
        raise ValueError(f"{name} must be a 1-D distribution with positive entries summing to 1")
    return p


def gopd_optimum(p_teacher: np.ndarray, p_reference: np.ndarray, lam: float) -> np.ndarray:
    """The maximiser of the G-OPD paper's objective over all distributions pi (arXiv:2602.12125):

    J(pi) = E_pi[ lam * log(p_T / p_ref) ] - KL(pi || p_ref),   pi* ∝ p_ref^(1-lam) * p_T^lam.
    """
    pt, pr = _check_dist(p_teacher, "p_teacher"), _check_dist(p_reference, "p_reference")
    if pt.shape != pr.shape:
        raise ValueError(f"shape mismatch: {pt.shape} vs {pr.shape}")
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be finite and >= 0, got {lam}")
    logits = (1 - lam) * np.log(pr) + lam * np.log(pt)
    return np.exp(logits - np.logaddexp.reduce(logits))


def verifier_bonus_optimum(p_teacher: np.ndarray, verifier: np.ndarray, beta: float) -> np.ndarray:
    """The maximiser of the verifier-bonus objective E_pi[log p_T + beta R_ext] + H(pi):
    pi* ∝ p_T * exp(beta * R_ext)."""
    pt = _check_dist(p_teacher, "p_teacher")
    R = np.asarray(verifier, dtype=np.float64)
    if R.shape != pt.shape:
        raise ValueError(f"shape mismatch: verifier {R.shape} vs p_teacher {pt.shape}")
    if not math.isfinite(beta):
        raise ValueError(f"beta must be finite, got {beta}")
    logits = np.log(pt) + beta * R
    return np.exp(logits - np.logaddexp.reduce(logits))


@single_thread()
def optimise_exact(
    p_teacher: np.ndarray,
    form: Literal["paper", "verifier_bonus"],
    coef: float,
    p_reference: np.ndarray | None = None,
    verifier: np.ndarray | None = None,
    steps: int = 300,
    lr: float = 0.3,
) -> np.ndarray:
    """Maximise either objective over softmax logits by Adam on the exact objective (autograd),
    starting from uniform; returns the final distribution. ``form="paper"`` uses ``coef`` as lam
    and needs ``p_reference``; ``form="verifier_bonus"`` uses it as beta and needs ``verifier``."""
    pt = torch.tensor(_check_dist(p_teacher, "p_teacher")).log()
    if form == "paper":
        if p_reference is None:
            raise ValueError("form='paper' needs p_reference")
        pr = torch.tensor(_check_dist(p_reference, "p_reference")).log()
        reward = coef * (pt - pr)
    elif form == "verifier_bonus":
        if verifier is None:
            raise ValueError("form='verifier_bonus' needs verifier")
        pr = torch.zeros_like(pt)  # objective: E[log p_T + beta R] + H = E[reward - log pi]
        reward = pt + coef * torch.as_tensor(np.asarray(verifier, dtype=np.float64))
    else:
        raise ValueError(f"form must be 'paper' or 'verifier_bonus', got {form!r}")
    z = torch.zeros_like(pt, requires_grad=True)
    opt = torch.optim.Adam([z], lr=lr)
    for _ in range(steps):
        logpi = F.log_softmax(z, -1)
        objective = (logpi.exp() * (reward - (logpi - pr))).sum()
        opt.zero_grad()
        (-objective).backward()
        opt.step()
    return F.softmax(z.detach(), -1).numpy()


@single_thread()
def optimise_sampled(
    p_teacher: np.ndarray,
    form: Literal["paper", "verifier_bonus"],
    coef: float,
    p_reference: np.ndarray | None = None,
    verifier: np.ndarray | None = None,
    batch: int = 64,
    steps: int = 250,
    lr: float = 0.2,
    seed: int = 0,
) -> np.ndarray:
    """The same optimisation from *samples only*, as a trainer does it: draw ``batch`` answers from
    the student, reward them with :func:`opd_lib.pg.extrapolated_reward` (paper) or
    :func:`opd_lib.pg.verifier_augmented_reward` (verifier_bonus), add the student's own ``-log``
    term, and step on :func:`opd_lib.pg.reinforce_loss` with a leave-one-out baseline. Returns the
    final distribution."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    lt = torch.tensor(_check_dist(p_teacher, "p_teacher")).log()
    if form == "paper":
        if p_reference is None:
            raise ValueError("form='paper' needs p_reference")
        lr_ref = torch.tensor(_check_dist(p_reference, "p_reference")).log()
    elif form == "verifier_bonus":
        if verifier is None:
            raise ValueError("form='verifier_bonus' needs verifier")
        R = torch.as_tensor(np.asarray(verifier, dtype=np.float64))
    else:
        raise ValueError(f"form must be 'paper' or 'verifier_bonus', got {form!r}")
    if batch < 2:
        raise ValueError(f"batch must be >= 2 for the leave-one-out baseline, got {batch}")
    z = torch.zeros_like(lt, requires_grad=True)
    opt = torch.optim.Adam([z], lr=lr)
    mask = torch.ones((batch, 1), dtype=torch.bool)
    for _ in range(steps):
        logpi = F.log_softmax(z, -1)
        y = torch.multinomial(logpi.detach().exp(), batch, replacement=True, generator=gen)
        logp = logpi[y].unsqueeze(-1)  # [B, 1]
        if form == "paper":
            r = pg.extrapolated_reward(lt[y, None], lr_ref[y, None], coef)
            r = r + (lr_ref[y, None] - logp).detach()
        else:
            r = pg.verifier_augmented_reward(lt[y, None], R[y], coef, mask) - logp.detach()
        loo = (r.sum() - r) / (batch - 1)
        loss = pg.reinforce_loss(logp, r, mask, baseline=loo)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return F.softmax(z.detach(), -1).numpy()
