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

import torch
import torch.nn.functional as F


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

    Seed example (Chapter 6): beta = 0.1, log-ratios -0.8 (chosen) and +0.7 (rejected) give margin
    -0.15 and loss log(1 + e^0.15) = 0.7710 (the seed prints 0.770, from rounding sigmoid(-0.15)
    to 0.463 before taking the log).
    """
    inputs = {
        "logp_chosen": logp_chosen,
        "logp_rejected": logp_rejected,
        "ref_logp_chosen": ref_logp_chosen,
        "ref_logp_rejected": ref_logp_rejected,
    }
    shapes = {name: tuple(t.shape) for name, t in inputs.items()}
    if len(set(shapes.values())) != 1 or logp_chosen.ndim != 1 or logp_chosen.numel() == 0:
        raise ValueError(
            f"shape mismatch: all four inputs must be the same non-empty [B]; {shapes}"
        )
    for name, t in inputs.items():
        if torch.isnan(t).any():
            raise ValueError(f"{name} contains NaN")
    if not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta must be finite and > 0, got {beta}")
    if kind not in ("sigmoid", "hinge"):
        raise ValueError(f"kind must be 'sigmoid' or 'hinge', got {kind!r}")
    chosen_ratio = logp_chosen - ref_logp_chosen.detach()
    rejected_ratio = logp_rejected - ref_logp_rejected.detach()
    margin = beta * (chosen_ratio - rejected_ratio)
    if kind == "sigmoid":
        return -F.logsigmoid(margin).mean()
    return torch.relu(1.0 - margin).mean()
