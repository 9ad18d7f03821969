"""Chapter 0: how one mistake propagates, for a student that copied and one that practised.

The student is a two-state Markov chain over "on track" (its prefix matches what a good
policy would have written) and "off track" (it has made a mistake it has not repaired).

* ``mode="copy"`` (off-policy training): on track it errs with probability ``eps``; off track it is
  in states it never saw in training, errs with probability ``lost_error_rate`` and never finds its
  way back. Expected mistakes grow like eps T^2 (the DAgger off-policy bound when the rate is 1).
* ``mode="practice"`` (on-policy training): it has seen its own mistakes and the teacher's
  correction from there, so off track it still errs with probability ``eps`` and its next correct
  step repairs the prefix. Expected mistakes are exactly eps T.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Mode = Literal["copy", "practice"]


def _off_track_behaviour(eps: float, mode: Mode, lost_error_rate: float) -> tuple[float, bool]:
    """(error rate off track, whether a correct step returns the student to the track)."""
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must lie in [0, 1], got {eps}")
    if not 0.0 <= lost_error_rate <= 1.0:
        raise ValueError(f"lost_error_rate must lie in [0, 1], got {lost_error_rate}")
    if mode == "copy":
        return lost_error_rate, False
    if mode == "practice":
        return eps, True
    raise ValueError(f"mode must be 'copy' or 'practice', got {mode!r}")


def simulate_rollouts(
    eps: float,
    T: int,
    mode: Mode,
    n_rollouts: int = 40,
    lost_error_rate: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """Sample ``n_rollouts`` generations of ``T`` steps; returns a bool array [n_rollouts, T],
    True where the step was a mistake."""
    off_rate, recovers = _off_track_behaviour(eps, mode, lost_error_rate)
    if T < 1 or n_rollouts < 1:
        raise ValueError(f"T and n_rollouts must be positive, got T={T}, n_rollouts={n_rollouts}")
    rng = np.random.default_rng(seed)
    draws = rng.random((n_rollouts, T))
    wrong = np.zeros((n_rollouts, T), dtype=bool)
    off_track = np.zeros(n_rollouts, dtype=bool)
    for t in range(T):
        rate = np.where(off_track, off_rate, eps)
        wrong[:, t] = draws[:, t] < rate
        off_track = wrong[:, t] | (off_track & ~recovers)
    return wrong


def expected_mistakes(eps: float, T: int, mode: Mode, lost_error_rate: float = 0.5) -> np.ndarray:
    """Exact expected number of mistakes after 1..T steps (cumulative), shape [T].

    Propagates P(off track) through the chain: the mistake rate at step t is
    (1 - q_t) eps + q_t * r_off, and q_{t+1} = q_t (kept if no recovery) + (1 - q_t) eps, with the
    recovering student leaving the off-track state on every correct step.
    """
    off_rate, recovers = _off_track_behaviour(eps, mode, lost_error_rate)
    q = 0.0
    per_step = np.empty(T)
    for t in range(T):
        per_step[t] = (1.0 - q) * eps + q * off_rate
        q = per_step[t] if recovers else q + (1.0 - q) * eps
    return np.cumsum(per_step)
