"""Input checks that the public functions call at their entry (foundation layer: torch only).

Each check raises ``ValueError`` (a bad value) or :class:`ArgumentTypeError` (a bad type; a
``TypeError`` that is also a ``ValueError``, so both ``except`` clauses catch it) whose message
starts with the argument's name and says what was expected. Checks that accept a value return it
in canonical form (a Python ``float``/``int``, a boolean mask, a floating tensor), so a caller
writes ``beta = unit(beta, "beta")``.

Conventions shared by the library: masks are boolean or integer 0/1 (a float mask, or TRL-style
labels with ``-100`` at ignored positions, is refused) and select at least one position;
log-probabilities are ``<= 0`` and may be ``-inf`` (probability 0) but never NaN or ``+inf``;
half-precision inputs are computed in float32 (:func:`compute_dtype`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

__all__ = [
    "ArgumentTypeError",
    "choice",
    "compute_dtype",
    "flag",
    "float_tensor",
    "integer",
    "log_probs",
    "mask",
    "module",
    "no_nan",
    "nonnegative",
    "positive",
    "probabilities",
    "real",
    "same_shape",
    "sampling_from",
    "strings",
    "token_ids",
    "unit",
]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type or dtype (catchable as ``TypeError`` or ``ValueError``)."""


def _type_name(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor"
    return type(value).__name__


# ------------------------------------------------------------------------------------ scalars


def real(value: object, name: str, *, finite: bool = True) -> float:
    """``value`` as a float: a real number (not a bool, a string or a tensor with >1 entry)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype == torch.bool:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be a real number, got {_type_name(value)}")
    value = float(value)
    if math.isnan(value) or (finite and math.isinf(value)):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def unit(value: object, name: str) -> float:
    """A number in ``[0, 1]`` (a probability, a mixing weight)."""
    x = real(value, name)
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {x}")
    return x


def positive(value: object, name: str) -> float:
    """A finite number ``> 0`` (a temperature, a cap, a scale)."""
    x = real(value, name)
    if not x > 0:
        raise ValueError(f"{name} must be positive (finite and > 0), got {x}")
    return x


def nonnegative(value: object, name: str) -> float:
    """A finite number ``>= 0``."""
    x = real(value, name)
    if x < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {x}")
    return x


def integer(value: object, name: str, minimum: int | None = 1) -> int:
    """A Python/NumPy integer (not a bool or a float) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def flag(value: object, name: str) -> bool:
    """A bool (``True``/``False``; not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"{name} must be True or False, got {value!r}")
    return value


def choice(value: object, name: str, options: Sequence[str]) -> str:
    """One of ``options``."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"unknown {name} {value!r}; {name} must be one of {tuple(options)}")
    return value


def strings(values: object, name: str) -> list[str]:
    """A non-empty list (or tuple) of strings; a bare string is refused (wrap it: ``[text]``)."""
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise ArgumentTypeError(
            f"{name} must be a list of strings (wrap a single example: [text]), got "
            f"{_type_name(values)}"
        )
    if len(values) == 0:
        raise ValueError(f"{name} is empty: give at least one string")
    if not all(isinstance(v, str) for v in values):
        raise ArgumentTypeError(f"every entry of {name} must be a string")
    return list(values)


# ------------------------------------------------------------------------------------ tensors


def _tensor(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ArgumentTypeError(f"{name} must be a torch.Tensor, got {_type_name(x)}")
    return x


def _check_ndim(x: torch.Tensor, name: str, ndim: int | None, min_ndim: int | None, dims: str):
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be {dims or f'{ndim}-D'}, got shape {tuple(x.shape)}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(f"{name} must be {dims or f'at least {min_ndim}-D'}, got shape "
                         f"{tuple(x.shape)}")  # fmt: skip


def float_tensor(
    x: object,
    name: str,
    *,
    ndim: int | None = None,
    min_ndim: int | None = None,
    dims: str = "",
    allow_int: bool = False,
    nonempty: bool = True,
) -> torch.Tensor:
    """A floating tensor (integer dtypes converted to float32 when ``allow_int``; bool never).

    ``dims`` describes the expected layout for the message, e.g. ``"[B, T, V]"``.
    """
    x = _tensor(x, name)
    if x.dtype == torch.bool or x.is_complex():
        raise ArgumentTypeError(f"{name} must be a real floating tensor, got {x.dtype}")
    if not x.is_floating_point():
        if not allow_int:
            raise ArgumentTypeError(f"{name} must be a floating tensor, got {x.dtype}")
        x = x.to(torch.get_default_dtype())
    _check_ndim(x, name, ndim, min_ndim, dims)
    if nonempty and x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    return x


def no_nan(
    x: torch.Tensor, name: str, *, where: torch.Tensor | None = None, inf: str = "none"
) -> None:
    """Refuse NaN in ``x`` (at ``where`` if given); ``inf``: which infinities are refused too,
    ``"none"``, ``"+"`` (``+inf``) or ``"both"``."""
    values = x if where is None else x[where]
    at = "" if where is None else " at the selected positions"
    if torch.isnan(values).any():
        raise ValueError(f"{name} contains NaN{at}")
    if inf == "+" and (values == math.inf).any():
        raise ValueError(f"{name} contains +inf{at}")
    if inf == "both" and torch.isinf(values).any():
        raise ValueError(f"{name} contains inf{at} (expected finite values)")


def log_probs(
    x: object, name: str, *, where: torch.Tensor | None = None, **shape: object
) -> torch.Tensor:
    """Log-probabilities: a floating tensor, ``<= 0`` (up to rounding), ``-inf`` allowed (a
    probability of 0), no NaN or ``+inf``. ``shape`` keywords go to :func:`float_tensor`."""
    x = float_tensor(x, name, **shape)
    no_nan(x, name, where=where, inf="+")
    values = x if where is None else x[where]
    tol = max(1e-4, 16 * torch.finfo(x.dtype).eps)
    if values.numel() and values.max() > tol:
        raise ValueError(
            f"{name} must hold log-probabilities (<= 0), got a maximum of {values.max().item():.4g}"
            " (logits? apply log_softmax first)"
        )
    return x


def probabilities(x: object, name: str) -> torch.Tensor:
    """Distributions over the last axis: non-negative, finite, summing to 1 (to a tolerance set
    by the dtype). Lists and NumPy arrays are accepted; integer arrays become float."""
    t = x if isinstance(x, torch.Tensor) else torch.tensor(x)  # a copy: NumPy may be read-only
    if t.dtype == torch.bool or t.is_complex():
        raise ArgumentTypeError(f"{name} must hold real probabilities, got {t.dtype}")
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if t.ndim == 0 or t.numel() == 0:
        raise ValueError(f"{name} must be a non-empty [..., V] array, got shape {tuple(t.shape)}")
    if torch.isnan(t).any():
        raise ValueError(f"{name} contains NaN")
    if torch.isinf(t).any():
        raise ValueError(f"{name} contains inf")
    if (t < 0).any():
        raise ValueError(f"{name} has negative entries")
    tol = max(1e-4, 8 * torch.finfo(t.dtype).eps)
    deviation = (t.to(torch.float64).sum(-1) - 1).abs().max().item()
    if deviation > tol:
        raise ValueError(f"{name} does not sum to 1 over the last axis (off by {deviation:.3g})")
    return t


def mask(
    m: object,
    name: str,
    shape: Sequence[int] | torch.Size,
    *,
    nonempty: bool = True,
    what: str = "the logits' positions",
) -> torch.Tensor:
    """A boolean mask of ``shape``, from a bool or integer 0/1 tensor; with ``nonempty`` it must
    select at least one position. Returns it as ``torch.bool``.

    Refused by name: float masks (``0.5`` is not a selection), TRL-style labels (``-100`` at
    ignored positions and token ids elsewhere: pass ``labels != -100``), any other integer.
    """
    m = _tensor(m, name)
    if m.dtype != torch.bool:
        if m.is_floating_point() or m.is_complex():
            raise ValueError(
                f"{name} must be a boolean tensor (or integer 0/1), got {m.dtype}; "
                f"use {name}.bool() if it holds 0/1"
            )
        if (m == -100).any():
            raise ValueError(
                f"{name} holds -100: these look like TRL labels (-100 = ignored), not a mask; "
                "pass labels != -100"
            )
        if ((m != 0) & (m != 1)).any():
            raise ValueError(f"{name} must hold only 0 and 1 (or be boolean)")
        m = m.bool()
    if tuple(m.shape) != tuple(shape):
        raise ValueError(f"{name} shape {tuple(m.shape)} does not match {what} {tuple(shape)}")
    if nonempty and not m.any():
        raise ValueError(f"{name} selects no tokens")
    return m


def same_shape(**tensors: torch.Tensor) -> None:
    """Refuse tensors whose shapes differ, naming each with its shape."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        listed = " vs ".join(f"{n} {s}" for n, s in shapes.items())
        raise ValueError(f"shape mismatch: {listed}")


def token_ids(
    x: object, name: str, *, ndim: int | None = 2, vocab_size: int | None = None
) -> torch.Tensor:
    """Integer token ids (not bool, not float) in ``[0, vocab_size)``."""
    x = _tensor(x, name)
    if x.is_floating_point() or x.dtype == torch.bool or x.is_complex():
        raise ArgumentTypeError(f"{name} must be an integer tensor of token ids, got {x.dtype}")
    _check_ndim(x, name, ndim, None, "")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if x.min() < 0 or (vocab_size is not None and x.max() >= vocab_size):
        raise ValueError(f"{name} must hold token ids in [0, {vocab_size or 'V'}), got "
                         f"[{x.min().item()}, {x.max().item()}]")  # fmt: skip
    return x


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype to compute in: the promoted input dtype, at least float32 (half precision is
    widened; the caller casts results back where it returns the input's dtype)."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


# ------------------------------------------------------------------------------------ models


def module(model: object, name: str) -> torch.nn.Module:
    """A ``torch.nn.Module`` (a model), refused by name otherwise."""
    if not isinstance(model, torch.nn.Module):
        raise ArgumentTypeError(f"{name} must be a torch.nn.Module, got {_type_name(model)}")
    return model


@contextmanager
def sampling_from(name: str) -> Iterator[None]:
    """Turn torch's sampling error on non-finite probabilities into a ``ValueError`` naming the
    model (``with sampling_from("student"): sample_completions(student, ...)``)."""
    try:
        yield
    except RuntimeError as e:
        if "probability tensor contains" not in str(e):
            raise
        raise ValueError(
            f"{name} gave non-finite next-token probabilities while sampling (NaN or inf in its "
            "weights or logits?)"
        ) from e
