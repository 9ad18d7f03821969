"""Metrics: JSONL logging that survives a resume, and a FLOP estimate.

One JSON object per line, appended and flushed. A checkpoint records the file's byte size; on
resume :meth:`JsonlLogger.truncate` cuts what was written after it, so a resumed run ends with
exactly the lines of an uninterrupted one.

FLOPs follow the usual dense-transformer estimate (Kaplan et al. 2020): a forward pass costs
about ``2 N`` per token and a forward + backward ``6 N``, with ``N`` the parameter count. So a
step costs ``6 N_student`` per token trained, ``2 N`` per token sampled by a model and ``2 N``
per token scored by a teacher (attention's sequence-length term is ignored: short sequences).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["JsonlLogger", "TIME_KEYS", "flops", "n_params", "read_jsonl"]

TIME_KEYS = ("time_s", "tokens_per_s", "wall_s")
"""Keys that depend on the machine's speed, not on the computation (skip them when comparing)."""


def n_params(model: torch.nn.Module) -> int:
    """Parameter count (shared tensors, e.g. tied embeddings, counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def flops(
    n_student: int,
    trained_tokens: int,
    generated: dict[int, int] | None = None,
    scored: dict[int, int] | None = None,
) -> float:
    """``6 N_s trained + sum 2 N generated + sum 2 N scored``; the dicts map a model's
    parameter count to its token count."""
    total = 6.0 * n_student * trained_tokens
    for table in (generated or {}, scored or {}):
        total += sum(2.0 * n * t for n, t in table.items())
    return total


def _clean(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class JsonlLogger:
    """Append-only JSONL file; ``log`` writes one flushed line, ``offset`` is its byte size."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()

    @property
    def offset(self) -> int:
        return self.path.stat().st_size

    def truncate(self, offset: int) -> None:
        """Drop everything after byte ``offset`` (lines logged after the last checkpoint)."""
        with open(self.path, "r+b") as f:
            f.truncate(offset)

    def log(self, record: dict[str, Any]) -> None:
        line = json.dumps({k: _clean(v) for k, v in record.items()}, sort_keys=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a JSONL file (a torn last line, from a kill mid-write, is skipped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
