"""Chapter 3 graders."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from opd_lib import divergences
from opd_lib.checks import GradingError, compare_number, passed


def check_jsd_generator(make_f: Callable[[float], Callable], *, seed: int = 0) -> None:
    """Chapter 3: ``make_f(beta)`` must return the generator ``f`` (a function of a NumPy array
    ``u``) for which ``sum_x Q f(P / Q)`` is the generalized JSD with
    ``m = beta P + (1 - beta) Q`` (P the teacher), i.e. :func:`opd_lib.divergences.generalized_jsd`.

    Checks ``f(1) = 0`` and the divergence on fixed and random pairs for ``0 < beta < 1``.
    """
    rng = np.random.default_rng(seed)
    cases = [(np.array([0.7, 0.2, 0.1]), np.array([0.3, 0.4, 0.3]), b) for b in (0.1, 0.5, 0.9)]
    for _ in range(15):
        size = int(rng.integers(2, 9))
        p, q = rng.dirichlet(np.ones(size)), rng.dirichlet(np.ones(size))
        cases.append((p, q, float(rng.uniform(0.02, 0.98))))
    for p, q, beta in cases:
        f = make_f(beta)
        where = f"(beta={beta:.3f})"
        try:
            at_one = np.asarray(f(np.array([1.0])), dtype=float).reshape(-1)[0]
            values = np.asarray(f(p / q), dtype=float)
        except (TypeError, ValueError) as err:
            raise GradingError(f"f{where} failed on a NumPy array: {err}") from err
        if values.shape != p.shape:
            raise GradingError(f"f{where} returned shape {values.shape}, expected {p.shape}")
        compare_number("f", at_one, 0.0, f"{where} at u = 1", rtol=1e-9)
        expected = float(divergences.generalized_jsd(p, q, beta))
        compare_number(
            "sum Q f(P/Q)",
            float((q * values).sum()),
            expected,
            f" {where} for P={p.round(3)}",
            rtol=1e-6,
        )
    passed("generalized JSD generator")
