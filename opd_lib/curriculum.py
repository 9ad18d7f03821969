"""Curriculum by student competence (Chapter 7, pillar 2): PACED's pass-rate weight.

PACED (Xu et al. 2026, "PACED: Distillation at the Frontier of Student Competence",
arXiv:2603.11178) measures the cross-problem gradient signal-to-noise ratio of distillation and
finds it collapses at both ends of the student's pass rate p: mastered problems (p near 1) give
near-zero gradients, hopeless ones (p near 0) give large incoherent ones. It weights each problem by
the Beta kernel w(p) = p^alpha (1 - p)^beta, its default being alpha = beta = 1, i.e. p (1 - p).
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike

from opd_lib import validate


def paced_weight(
    pass_rate: ArrayLike | torch.Tensor, alpha: float = 1.0, beta: float = 1.0
) -> np.ndarray | torch.Tensor | float:
    """PACED problem weight w(p) = p^alpha * (1 - p)^beta for pass rates p in [0, 1].

    Zero at p = 0 and p = 1 (for alpha, beta > 0), maximal at p* = alpha / (alpha + beta); the
    weight is not normalised (w(1/2) = 1/4 at the default alpha = beta = 1). ``pass_rate`` is the
    student's empirical pass rate per problem (fraction of its rollouts the verifier accepts). A
    torch tensor gives a tensor, an array or list gives a numpy array, a scalar gives a float.
    With {0, 1} rewards the weight is zero exactly for the groups that
    :func:`opd_lib.rl.drop_uniform_groups` removes.
    """
    alpha, beta = validate.positive(alpha, "alpha"), validate.positive(beta, "beta")
    if isinstance(pass_rate, torch.Tensor):
        p = validate.float_tensor(pass_rate, "pass_rate", allow_int=True, nonempty=False)
        if torch.isnan(p).any() or ((p < 0) | (p > 1)).any():
            raise ValueError("pass_rate must lie in [0, 1] (no NaN)")
        x = p.to(validate.compute_dtype(p))
        return (x**alpha * (1 - x) ** beta).to(p.dtype)
    if isinstance(pass_rate, (str, bytes, bool)):
        raise validate.ArgumentTypeError(f"pass_rate must be numbers, got {pass_rate!r}")
    try:
        p = np.asarray(pass_rate, dtype=float)
    except (TypeError, ValueError) as e:
        raise validate.ArgumentTypeError(f"pass_rate must be numbers, got {pass_rate!r}") from e
    if np.isnan(p).any() or ((p < 0) | (p > 1)).any():
        raise ValueError("pass_rate must lie in [0, 1] (no NaN)")
    w = p**alpha * (1.0 - p) ** beta
    return float(w) if w.ndim == 0 else w
