"""Atomic checkpoints: a run killed at any instant leaves either the old or the new file.

``save_checkpoint`` writes to a temporary file in the same directory, flushes it to disk and then
``os.replace``-s it over the target (atomic on POSIX and Windows). ``rng_state`` /
``set_rng_state`` capture and restore every random source a run touches: torch's global RNG,
NumPy's, Python's ``random`` and any explicit ``torch.Generator`` or ``random.Random``.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """``torch.save(state)`` to ``path`` atomically (temp file + fsync + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The state saved by :func:`save_checkpoint` (on CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=False)


def rng_state(
    generators: dict[str, torch.Generator] | None = None,
    pyrngs: dict[str, random.Random] | None = None,
) -> dict[str, Any]:
    """Every RNG state: torch (CPU and CUDA if present), NumPy, Python, and the given ones."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (the legacy global RNG is what we save)
        "python": random.getstate(),
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
        "pyrngs": {k: r.getstate() for k, r in (pyrngs or {}).items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(
    state: dict[str, Any],
    generators: dict[str, torch.Generator] | None = None,
    pyrngs: dict[str, random.Random] | None = None,
) -> None:
    """Restore what :func:`rng_state` captured (the named generators in place)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for k, g in (generators or {}).items():
        g.set_state(state["generators"][k])
    for k, r in (pyrngs or {}).items():
        r.setstate(state["pyrngs"][k])
