"""Chapter 8 graders."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from opd_lib.checks import GradingError, passed
from opd_lib.unified import advantages


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
