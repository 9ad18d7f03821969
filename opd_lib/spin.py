"""SPIN: Self-Play fINe-tuning (Chen et al. 2024, arXiv:2401.01335).

At iteration t the "chosen" response y is the human/SFT target and the "rejected" one y' is
sampled from the previous iterate p_theta_t, which is also the frozen reference (the opponent).
The new model is trained with a DPO-style pairwise loss on the margin of log-ratios:

    margin = beta * [log(p_theta(y|x) / p_theta_t(y|x)) - log(p_theta(y'|x) / p_theta_t(y'|x))]
    L = mean ell(margin)

SPIN's objective uses the logistic loss ell(m) = log(1 + exp(-m)) = -log sigmoid(m) (the DPO loss,
Rafailov et al. 2023, arXiv:2305.18290); the paper allows any convex, decreasing ell, and the
hinge relu(1 - m) is offered too. Training saturates once p_theta's samples look like the data:
then chosen and rejected are exchangeable and the expected margin is 0.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike

from opd_lib import validate


def spin_loss(
    logp_chosen: torch.Tensor,
    logp_rejected: torch.Tensor,
    ref_logp_chosen: torch.Tensor,
    ref_logp_rejected: torch.Tensor,
    beta: float = 0.1,
    kind: Literal["sigmoid", "hinge"] = "sigmoid",
) -> torch.Tensor:
    """SPIN / DPO pairwise loss on sequence log-probs [B], averaged over the batch.

    margin = beta * ((logp_chosen - ref_logp_chosen) - (logp_rejected - ref_logp_rejected));
    ``kind="sigmoid"``: mean(-log sigmoid(margin)) (SPIN's logistic loss; TRL's DPO
    ``loss_type="sigmoid"``); ``kind="hinge"``: mean(relu(1 - margin)) (TRL's ``"hinge"``). The
    reference log-probs are detached (the reference is the frozen previous iterate).

    Worked example (Chapter 6): beta = 0.1, log-ratios -0.8 (chosen) and +0.7 (rejected) give margin
    -0.15 and loss log(1 + e^0.15) = 0.7710 (0.770 is often printed, from rounding sigmoid(-0.15)
    to 0.463 before taking the log).
    """
    inputs = {
        "logp_chosen": logp_chosen,
        "logp_rejected": logp_rejected,
        "ref_logp_chosen": ref_logp_chosen,
        "ref_logp_rejected": ref_logp_rejected,
    }
    for name, t in inputs.items():
        validate.float_tensor(t, name, ndim=1, dims="[B] (one log-prob per sequence)")
    validate.same_shape(**inputs)
    for name, t in inputs.items():
        validate.log_probs(t, name)  # sequence log-probs are <= 0
        validate.no_nan(t, name, inf="both")
    beta = validate.positive(beta, "beta")
    validate.choice(kind, "kind", ("sigmoid", "hinge"))
    out_dtype = logp_chosen.dtype
    dtype = validate.compute_dtype(*inputs.values())
    logp_chosen, logp_rejected = logp_chosen.to(dtype), logp_rejected.to(dtype)
    ref_logp_chosen, ref_logp_rejected = ref_logp_chosen.to(dtype), ref_logp_rejected.to(dtype)
    chosen_ratio = logp_chosen - ref_logp_chosen.detach()
    rejected_ratio = logp_rejected - ref_logp_rejected.detach()
    margin = beta * (chosen_ratio - rejected_ratio)
    if kind == "sigmoid":
        return -F.logsigmoid(margin).mean().to(out_dtype)
    return torch.relu(1.0 - margin).mean().to(out_dtype)


def optimal_round(p_current: ArrayLike, p_data: ArrayLike, beta: float) -> np.ndarray:
    """The policy a SPIN round reaches when its logistic loss is minimised exactly (tabular).

    With chosen y ~ p_data and rejected y' ~ p_t, the pairwise logistic loss over all score
    functions f is minimised by f = log(p_data / p_t) + const (each pair's chosen-vs-rejected
    odds); SPIN's f = beta log(p / p_t) then gives

        p_{t+1} ∝ p_t (p_data / p_t)^(1 / beta),

    so the deviation log p_t - log p_data is multiplied by (1 - 1/beta) every round: one round
    reaches the data at beta = 1, beta > 1 converges slowly, 1/2 < beta < 1 overshoots and
    converges, beta = 1/2 cycles and beta < 1/2 diverges. Answers the data never gives get 0.
    """
    p = np.asarray(p_current, dtype=np.float64)
    d = np.asarray(p_data, dtype=np.float64)
    if p.ndim != 1 or p.shape != d.shape:
        raise ValueError(f"p_current {p.shape} and p_data {d.shape} must be equal 1-D shapes")
    for name, x in (("p_current", p), ("p_data", d)):
        if (x < 0).any() or not np.isclose(x.sum(), 1.0):
            raise ValueError(f"{name} must be a probability vector")
    if (p[d > 0] == 0).any():
        raise ValueError("p_current must be positive wherever p_data is")
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be finite and > 0, got {beta}")
    log_new = np.full_like(p, -np.inf)
    on = d > 0
    log_new[on] = np.log(p[on]) + (np.log(d[on]) - np.log(p[on])) / beta
    log_new -= log_new[on].max()
    new = np.exp(log_new)
    return new / new.sum()


def expected_gradient_norm(p_data: ArrayLike, policy: ArrayLike, beta: float = 1.0) -> np.ndarray:
    """Norm of the expected gradient of :func:`spin_loss` with respect to a categorical policy's
    logits at the start of a round (the policy is its own reference, every margin 0):
    ``||-(beta / 2) (p_data - pi)|| = (beta / 2) ||p_data - pi||``, over the last axis. It
    vanishes exactly when the policy equals the data, whatever the data's quality."""
    diff = np.asarray(p_data, dtype=float) - np.asarray(policy, dtype=float)
    return 0.5 * validate.positive(beta, "beta") * np.linalg.norm(diff, axis=-1)
