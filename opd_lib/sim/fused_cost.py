"""Figure data for "what the fused divergence costs": the benchmark's JSON, arranged to draw.

``benchmarks/fused_divergence.py`` writes ``results/fused_divergence/cpu.json``; ``load_results``
reads it and ``cost_figure_data`` (pure) turns it into arrays, one row per measured
(tokens, hidden size, kind) cell and one column per method, with the memory floor of
``opd_lib.fused_divergence.memory_floor_bytes`` and the size of one float32 logits array.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from opd_lib.fused_divergence import memory_floor_bytes

RESULTS = Path(__file__).resolve().parents[2] / "results" / "fused_divergence" / "cpu.json"
METHODS = ("trl", "ours", "liger", "naive")
MIB = 2**20


def load_results(path: str | Path | None = None) -> dict:
    """The benchmark's JSON (``{"meta": ..., "runs": [...]}``); the committed CPU run by default."""
    data = json.loads(Path(path or RESULTS).read_text())
    if not {"meta", "runs"} <= set(data):
        raise ValueError(f"{path or RESULTS} is not a fused_divergence benchmark result")
    return data


def _selected_tokens(tokens: int, row: int, padding: float) -> int:
    """Tokens the benchmark keeps: rows of ``row`` tokens, the last ``padding`` of each masked."""
    rows = max(1, tokens // row)
    per_row = tokens // rows
    return rows * (per_row - round(padding * per_row))


def cost_figure_data(results: dict, measured_only: bool = True) -> dict:
    """Arrays for the cost figure; ``NaN`` where a method did not run (see ``status``).

    With ``measured_only``, cells (tokens, hidden size, kind) where no method ran are left out.

    Returns ``cells`` (labels), ``tokens``/``hidden``/``kinds`` per cell, ``methods``,
    ``time_s`` (the pass's CPU time) and ``extra_mib`` ``[cells, methods]``, ``status``
    (nested lists), ``floor_mib`` (selected tokens x ``H`` floats plus 4 per token),
    ``logits_mib`` (one float32 ``[N, V]`` array), and ``time_vs_trl``/``memory_vs_trl``
    (each method over TRL in the same cell).
    """
    meta, runs = results["meta"], results["runs"]
    if measured_only:  # drop the cells where nothing ran (e.g. past the time budget)
        ok = {(r["tokens"], r["hidden"], r["kind"]) for r in runs if r["status"] == "ok"}
        runs = [r for r in runs if (r["tokens"], r["hidden"], r["kind"]) in ok]
    order = ("fkl", "rkl", "jsd", "tv")
    cells = sorted(
        {(r["tokens"], r["hidden"], r["kind"]) for r in runs},
        key=lambda c: (c[0] * c[1], c[0], order.index(c[2])),
    )
    methods = [m for m in METHODS if any(r["method"] == m for r in runs)]
    time_s = np.full((len(cells), len(methods)), np.nan)
    extra = np.full_like(time_s, np.nan)
    status = [["missing"] * len(methods) for _ in cells]
    for r in runs:
        i, j = cells.index((r["tokens"], r["hidden"], r["kind"])), methods.index(r["method"])
        status[i][j] = r["status"]
        if r["status"] == "ok":
            time_s[i, j], extra[i, j] = r["time_s"], max(r["extra_mb"], 0.0)
    selected = [_selected_tokens(n, meta["row"], meta["padding"]) for n, _, _ in cells]
    trl = methods.index("trl") if "trl" in methods else None
    ratio = (lambda a: a / a[:, [trl]]) if trl is not None else (lambda a: np.full_like(a, np.nan))
    return {
        "cells": [f"N={n}\nH={h}\n{k}" for n, h, k in cells],
        "tokens": np.array([c[0] for c in cells]),
        "hidden": np.array([c[1] for c in cells]),
        "kinds": [c[2] for c in cells],
        "methods": methods,
        "time_s": time_s,
        "extra_mib": extra,
        "status": status,
        "floor_mib": np.array(
            [memory_floor_bytes(m, h) / MIB for m, (_, h, _) in zip(selected, cells, strict=True)]
        ),
        "logits_mib": np.array([n * meta["vocab"] * 4 / MIB for n, _, _ in cells]),
        "time_vs_trl": ratio(time_s),
        "memory_vs_trl": ratio(np.maximum(extra, 1.0)),
    }


def ratio_summary(data: dict, method: str = "ours") -> dict:
    """``method`` against TRL over the cells where both ran: how many, the smallest speed-up
    (TRL time / its time) and the largest memory ratio (its extra memory / TRL's)."""
    if method not in data["methods"] or "trl" not in data["methods"]:
        raise ValueError(f"need both {method!r} and 'trl' in the results, got {data['methods']}")
    j = data["methods"].index(method)
    both = np.isfinite(data["time_vs_trl"][:, j])
    if not both.any():
        raise ValueError(f"no cell where both {method!r} and 'trl' ran")
    return {
        "cells": int(both.sum()),
        "min_speedup": float(np.min(1 / data["time_vs_trl"][both, j])),
        "max_speedup": float(np.max(1 / data["time_vs_trl"][both, j])),
        "max_memory_ratio": float(np.max(data["memory_vs_trl"][both, j])),
        "min_memory_ratio": float(np.min(data["memory_vs_trl"][both, j])),
    }
