"""Metrics: JSONL logging that survives a resume, and a FLOP estimate.

One JSON object per line, appended and flushed. A checkpoint records the file's byte size; on
resume :meth:`JsonlLogger.truncate` cuts what was written after it, so a resumed run ends with
exactly the lines of an uninterrupted one. A log shorter than the checkpoint remembers (deleted
or cut) or damaged in the middle is refused by name, never read silently short; a torn last line
from a kill mid-write is dropped.

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

__all__ = ["JsonlLogger", "MetricsLogError", "TIME_KEYS", "flops", "n_params", "read_jsonl"]

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


class MetricsLogError(ValueError):
    """A metrics log that cannot be resumed or read without losing records silently."""


class JsonlLogger:
    """Append-only JSONL file; ``log`` writes one flushed line, ``offset`` is its byte size.

    Nothing is written until the first :meth:`log` or :meth:`truncate` (a run refused at
    start-up leaves its folder as it was). A torn last line (a kill mid-write) is dropped before
    the next record is appended, so it never glues onto a new line.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._repaired = False

    @property
    def offset(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def truncate(self, offset: int) -> None:
        """Resume at byte ``offset`` (the size the last checkpoint recorded): drop the lines
        logged after it. Refused with :class:`MetricsLogError`, naming the file, when the log is
        shorter than that (deleted or cut: records would be lost silently) or when ``offset``
        does not fall on a line boundary or the kept lines do not parse."""
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be an integer >= 0, got {offset!r}")
        size = self.offset
        if size < offset:
            what = "is missing" if not self.path.exists() else f"holds only {size} bytes"
            raise MetricsLogError(
                f"{self.path} {what}, but the checkpoint was written when it held {offset}: "
                "records from before the checkpoint are lost. Restore the file from a copy, or "
                "delete the checkpoint (ckpt.pt) to run again from step 0."
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            f.truncate(offset)
        if offset:
            read_jsonl(self.path)  # raises if the kept records are damaged
            with open(self.path, "rb") as f:
                f.seek(offset - 1)
                if f.read(1) != b"\n":
                    raise MetricsLogError(
                        f"{self.path}: the checkpoint's offset {offset} is not at the end of a "
                        "line (was the file edited?). Restore the file from a copy, or delete the "
                        "checkpoint (ckpt.pt) to run again from step 0."
                    )
        self._repaired = True

    def repair(self) -> int:
        """Drop a torn last line (no newline at the end); returns the number of bytes dropped."""
        self._repaired = True
        if not self.path.exists():
            return 0
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return 0
        keep = data.rfind(b"\n") + 1
        with open(self.path, "r+b") as f:
            f.truncate(keep)
        return len(data) - keep

    def log(self, record: dict[str, Any]) -> None:
        if not self._repaired:
            self.repair()
        line = json.dumps({k: _clean(v) for k, v in record.items()}, sort_keys=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a JSONL file. A torn last line (no final newline: a kill mid-write) is
    skipped; any other line that is not a JSON object raises :class:`MetricsLogError` naming the
    file and the line, so a damaged log is never read silently short."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no metrics log at {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    torn = lines.pop()  # "" when the file ends with a newline
    out = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            raise MetricsLogError(
                f"{path}, line {number}, is not a JSON record ({line[:60]!r}): the log is damaged."
                " Restore it from a copy, or rerun the experiment."
            )
        out.append(record)
    if torn.strip():
        try:  # a complete record whose newline was lost still counts
            record = json.loads(torn)
            if isinstance(record, dict):
                out.append(record)
        except json.JSONDecodeError:
            pass
    return out
