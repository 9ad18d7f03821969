"""Compounding-error arithmetic and the DAgger bounds (Ross, Gordon and Bagnell 2011, 1011.0686).

A policy that errs with probability ``eps`` at each of ``T`` steps:

* finishes a whole sequence without error with probability ``(1 - eps) ** T`` (independent errors);
* trained off-policy (behaviour cloning on expert states) pays up to ``eps * T * (T + 1) / 2``
  expected mistakes, because an error at step ``t`` can spoil every later step;
* trained on its own states (DAgger, on-policy distillation) pays ``eps * T``;
* when the first error is never recovered from (each later step builds on the wrong value) the
  expected mistakes are ``sum_j 1 - (1 - eps)^j`` (:func:`compounding_mistakes`), about
  ``eps T^2 / 2`` for small ``eps T``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from opd_lib import validate


def _check_eps(eps: np.ndarray) -> None:
    if np.any(np.isnan(eps)) or np.any((eps < 0) | (eps > 1)):
        raise ValueError(f"per-step error rate eps must lie in [0, 1], got {eps}")


def _check_length(T: np.ndarray) -> None:
    if np.any(~np.isfinite(T)) or np.any(T < 0) or np.any(T != np.round(T)):
        raise ValueError(f"sequence length T must be a non-negative whole number, got {T}")


def _as_arrays(eps: ArrayLike, T: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for name, value in (("eps", eps), ("T", T)):
        if isinstance(value, (str, bytes, bool)):
            raise validate.ArgumentTypeError(f"{name} must be a number or array, got {value!r}")
        try:
            arrays.append(np.asarray(value, dtype=float))
        except (TypeError, ValueError) as e:
            raise validate.ArgumentTypeError(f"{name} must be numbers, got {value!r}") from e
    eps_arr, T_arr = arrays
    _check_eps(eps_arr)
    _check_length(T_arr)
    return eps_arr, T_arr


def _scalar_or_array(x: np.ndarray) -> float | np.ndarray:
    return float(x) if x.ndim == 0 else x


def sequence_success_probability(eps: ArrayLike, T: ArrayLike) -> float | np.ndarray:
    """P(all T steps correct) = (1 - eps)^T, broadcasting over ``eps`` and ``T``."""
    eps_arr, T_arr = _as_arrays(eps, T)
    return _scalar_or_array((1.0 - eps_arr) ** T_arr)


def dagger_bound_off_policy(eps: ArrayLike, T: ArrayLike) -> float | np.ndarray:
    """Worst-case expected mistakes of behaviour cloning: eps * T * (T + 1) / 2 = O(eps T^2).

    An error at step t can put the learner in states it never saw, and every one of the
    remaining T - t + 1 steps may then be wrong: sum_t eps (T - t + 1) = eps T (T + 1) / 2.
    """
    eps_arr, T_arr = _as_arrays(eps, T)
    return _scalar_or_array(eps_arr * T_arr * (T_arr + 1.0) / 2.0)


def dagger_bound_on_policy(eps: ArrayLike, T: ArrayLike) -> float | np.ndarray:
    """Expected mistakes when trained on its own state distribution: eps * T = O(eps T)."""
    eps_arr, T_arr = _as_arrays(eps, T)
    return _scalar_or_array(eps_arr * T_arr)


def compounding_mistakes(eps: float, T: int) -> float:
    """Expected wrong steps in a ``T``-step trace when step ``j`` is wrong iff any of steps
    ``1..j`` erred (no recovery): ``sum_{j=1..T} 1 - (1 - eps)^j``, about ``eps T^2 / 2`` for small
    ``eps T`` (the quadratic term of :func:`dagger_bound_off_policy`). Equals
    ``opd_lib.sim.error_propagation.expected_mistakes(eps, T, "copy", 1.0)[-1]``."""
    _as_arrays(eps, T)
    return sum(1.0 - (1.0 - eps) ** j for j in range(1, int(T) + 1))


def crossover_length(ratio: float) -> float:
    """The T at which the off-policy bound is ``ratio`` times the on-policy one.

    eps T (T + 1) / 2 = ratio * eps T  =>  T = 2 * ratio - 1 (independent of eps).
    """
    ratio = validate.real(ratio, "ratio")
    if ratio < 1:
        raise ValueError(
            f"ratio must be a finite number >= 1 (off-policy is never better), got {ratio}"
        )
    return 2.0 * ratio - 1.0
