"""From ``metrics.jsonl`` records to the lab's tables, curves and figures: pure functions of the
records (only :func:`report` reads files and writes the markdown table and PNGs).

Record types (written by :class:`opd_lib.lab.trainer.Trainer`): ``"train"`` (one per step),
``"eval"`` (every ``eval_every`` steps and at step 0) and one ``"teacher"`` record (the teacher's
own evaluation, keys prefixed ``teacher_``).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from opd_lib.bounds import compounding_mistakes, dagger_bound_on_policy
from opd_lib.lab.metrics import read_jsonl

__all__ = [
    "cost_table",
    "cost_to_target",
    "curves",
    "evals",
    "final_table",
    "fmt_mean_sd",
    "load_arms",
    "mean_sd",
    "mistakes_by_length",
    "pm_table",
    "report",
    "seed_curves",
    "teacher_record",
]

Runs = dict[str, list[list[dict]]]  # arm -> records of each seed


def evals(records: list[dict]) -> list[dict]:
    """The evaluation records, in order."""
    return [r for r in records if r.get("type") == "eval"]


def teacher_record(records: list[dict]) -> dict:
    """The teacher's evaluation record (``{}`` if there is none)."""
    return next((r for r in records if r.get("type") == "teacher"), {})


def mean_sd(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of the finite ``values``."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return math.nan, math.nan
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def fmt_mean_sd(values: Iterable[float]) -> str:
    """``"mean ± sd"`` of the finite ``values`` (3 and 2 significant digits), the mean alone for
    one value, ``"-"`` for none."""
    xs = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not xs:
        return "-"
    mean, sd = mean_sd(xs)
    return f"{mean:.3g}" if len(xs) == 1 else f"{mean:.3g} ± {sd:.2g}"


def load_arms(root: str | Path) -> Runs:
    """``{arm: [records of seed 0, records of seed 1, ...]}`` from ``root/<arm>-s<seed>/``."""
    root = Path(root)
    arms: dict[str, dict[int, list[dict]]] = {}
    for f in sorted(root.glob("*-s*/metrics.jsonl")):
        arm, _, seed = f.parent.name.rpartition("-s")
        if seed.isdigit():
            arms.setdefault(arm, {})[int(seed)] = read_jsonl(f)
    if not arms:
        raise ValueError(f"no <arm>-s<seed>/metrics.jsonl under {root}")
    return {arm: [by_seed[s] for s in sorted(by_seed)] for arm, by_seed in arms.items()}


def cost_to_target(records: list[dict], target: float, key: str = "acc") -> dict[str, float]:
    """FLOPs, wall seconds and step at the first evaluation where ``key >= target``, from one
    run's records (``metrics.jsonl``); ``inf`` everywhere when the run never got there.

    Wall time is the training time logged by the last train step at or before that evaluation
    (evaluation time is not counted)."""
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target must be in [0, 1], got {target}")
    wall = {r["step"]: r["wall_s"] for r in records if r.get("type") == "train"}
    for r in evals(records):
        if r.get(key, -1.0) >= target:
            step = r["step"]
            before = [s for s in wall if s <= step]
            return {
                "step": float(step),
                "flops": float(r.get("flops", 0.0)),
                "wall_s": float(wall[max(before)]) if before else 0.0,
            }
    return {"step": math.inf, "flops": math.inf, "wall_s": math.inf}


def mistakes_by_length(runs: Runs, arms: Sequence[str], evaluation: int = -1) -> list[dict]:
    """Per arm and evaluated chain length ``k`` (``T = k - 1`` steps): wrong steps per trace at
    the ``evaluation``-th evaluation (default the last; 0: before training; mean, sd over seeds)
    and the two predictions from the arm's own per-step error ``eps`` at length 2 (one step, so
    nothing to compound): ``eps T`` (recovering, :func:`opd_lib.bounds.dagger_bound_on_policy`)
    and :func:`opd_lib.bounds.compounding_mistakes`."""
    rows = []
    for arm in arms:
        finals = [evals(r)[evaluation] for r in runs[arm]]
        lengths = sorted(
            int(m.group(1)) for k in finals[0] if (m := re.fullmatch(r"step_err_len(\d+)", k))
        )
        eps, _ = mean_sd(f["step_err_len2"] for f in finals)
        for k in lengths:
            m, sd = mean_sd(f[f"step_err_len{k}"] * (k - 1) for f in finals)
            acc, acc_sd = mean_sd(f[f"acc_len{k}"] for f in finals)
            rows.append(
                dict(
                    arm=arm, length=k, mistakes=m, mistakes_sd=sd, acc=acc, acc_sd=acc_sd,
                    eps=eps, independent=dagger_bound_on_policy(eps, k - 1),
                    compounding=compounding_mistakes(eps, k - 1),
                )
            )  # fmt: skip
    return rows


def cost_table(runs: Runs, arms: Sequence[str], share: float = 0.9, key: str = "acc") -> list[dict]:
    """Per arm: the step, FLOPs and training wall time at which each seed's student first reached
    ``share`` x its teacher's ``key`` (median over seeds; ``inf`` if a seed never did), how many
    seeds got there, the per-seed values (``seed_step``, ``seed_flops``) and the FLOPs of a whole
    run (``budget_flops``, median over seeds)."""
    rows = []
    for arm in arms:
        hits = []
        for records in runs[arm]:
            target = share * teacher_record(records).get(f"teacher_{key}", 1.0)
            hits.append(cost_to_target(records, min(1.0, target), key))
        reached = [h for h in hits if math.isfinite(h["step"])]
        row = dict(arm=arm, seeds=len(hits), reached=len(reached))
        for k in ("step", "flops", "wall_s"):
            row[k] = statistics.median(h[k] for h in hits)
        row["seed_step"] = [h["step"] for h in hits]
        row["seed_flops"] = [h["flops"] for h in hits]
        row["budget_flops"] = statistics.median(evals(r)[-1]["flops"] for r in runs[arm])
        rows.append(row)
    return rows


def final_table(runs: Runs, arms: Sequence[str], keys: Sequence[str]) -> list[dict]:
    """Per arm: mean and sd over seeds of ``keys`` at the first (``<key>@0``) and last evaluation
    and, with a ``teacher_`` prefix, of the teacher's own evaluation."""
    rows = []
    for arm in arms:
        row: dict[str, Any] = dict(arm=arm, seeds=len(runs[arm]))
        for key in keys:
            if key.startswith("teacher_"):
                values = [teacher_record(r).get(key, math.nan) for r in runs[arm]]
            elif key.endswith("@0"):
                values = [evals(r)[0].get(key[:-2], math.nan) for r in runs[arm]]
            else:
                values = [evals(r)[-1].get(key, math.nan) for r in runs[arm]]
            row[key], row[key + "_sd"] = mean_sd(values)
        rows.append(row)
    return rows


def seed_curves(
    runs: Runs, arm: str, x: str = "flops", y: str = "acc"
) -> list[tuple[list[float], list[float]]]:
    """``(xs, ys)`` over the evaluations of each seed of ``arm`` (e.g. accuracy against
    cumulative FLOPs, which differ from seed to seed)."""
    return [([e[x] for e in evals(r)], [e[y] for e in evals(r)]) for r in runs[arm]]


def curves(runs: Runs, arm: str, key: str = "acc") -> dict[str, list]:
    """``key`` over evaluation steps for ``arm``: steps, mean and sd over seeds (seeds evaluated
    at the same steps)."""
    per_seed = [[e.get(key, math.nan) for e in evals(r)] for r in runs[arm]]
    steps = [e["step"] for e in evals(runs[arm][0])]
    stats = [mean_sd(col) for col in zip(*per_seed, strict=False)]
    return dict(step=steps, mean=[m for m, _ in stats], sd=[s for _, s in stats])


def pm_table(rows: list[dict], keys: Sequence[str], digits: int = 2) -> list[dict[str, str]]:
    """Rows of :func:`final_table` (or any rows with ``key`` and ``key_sd``) for display: the
    ``arm`` and each of ``keys`` as ``"mean ± sd"``."""
    return [
        {"arm": r["arm"], **{k: f"{r[k]:.{digits}f} ± {r[k + '_sd']:.{digits}f}" for k in keys}}
        for r in rows
    ]


# ------------------------------------------------------------------------------------ report

_SEED_SUFFIX = re.compile(r"[-_.]?s(?:eed)?\d+$")


def _run_summary(f: Path, root: Path) -> dict | None:
    records = read_jsonl(f)
    ev, trains = evals(records), [r for r in records if r.get("type") == "train"]
    if not ev:
        return None
    rel = f.parent.relative_to(root).as_posix() if f.parent != root else root.name
    config_file = f.parent / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    return {
        "eval_temperature": config.get("eval_temperature"),
        "eval_noise": config.get("eval_noise", 0.0),
        "run": rel,
        "group": _SEED_SUFFIX.sub("", rel) or rel,
        "method": ev[-1].get("method"),
        "seed": ev[-1].get("seed"),
        "step": ev[-1]["step"],
        "final": ev[-1],
        "first": ev[0],
        "teacher": teacher_record(records),
        "evals": ev,
        "wall_s": trains[-1]["wall_s"] if trains else 0.0,
        "flops": ev[-1].get("flops", 0.0),
    }


def report(root: str | Path, out: str | Path | None = None, figures: bool = True) -> dict:
    """Tables (markdown, written to ``out/report.md``) and figures (PNG) of every
    ``metrics.jsonl`` under ``root``. Runs whose directory names differ only by a seed suffix
    (``-s0``, ``_seed1``) are grouped: mean ± standard deviation over seeds.

    Returns ``{"runs": [...], "groups": [...], "markdown": str, "figures": [paths]}``.
    """
    from opd_lib.lab.figures import report_figures

    root = Path(root)
    out = Path(out) if out is not None else root
    files = sorted(root.rglob("metrics.jsonl"))
    if not files:
        raise ValueError(f"no metrics.jsonl under {root}")
    runs = [s for f in files if (s := _run_summary(f, root)) is not None]
    acc_keys = sorted(
        {k for r in runs for k in r["final"] if k.startswith("acc_") and k != "acc_retention"},
        key=lambda k: (len(k), k),
    )
    cols = ["acc", *acc_keys, "acc_retention", "rkl_to_teacher", "eval_entropy"]
    header = ["group", "method", "seeds", "step", *cols, "teacher acc", "flops", "wall s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    groups = defaultdict(list)
    for r in runs:
        groups[r["group"]].append(r)
    group_rows = []
    for name, members in groups.items():
        row = {
            "group": name,
            "method": members[0]["method"],
            "seeds": len(members),
            "step": max(m["step"] for m in members),
        }
        for c in cols:
            row[c] = [m["final"].get(c, float("nan")) for m in members]
        row["teacher acc"] = [m["teacher"].get("teacher_acc", float("nan")) for m in members]
        row["flops"] = [m["flops"] for m in members]
        row["wall s"] = [m["wall_s"] for m in members]
        group_rows.append(row)
        cells = [name, str(row["method"]), str(row["seeds"]), str(row["step"])]
        cells += [fmt_mean_sd(row[c]) for c in [*cols, "teacher acc", "flops", "wall s"]]
        lines.append("| " + " | ".join(cells) + " |")
    markdown = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown + "\n")
    paths = report_figures(runs, out) if figures else []
    return {"runs": runs, "groups": group_rows, "markdown": markdown, "figures": paths}


# ------------------------------------------------------------------- the claims and verdicts
#
# Each verdict is computed from the files and returns ``holds`` (bool), ``text`` (a sentence true
# of every seed it names) and ``falsified_if`` (what result would have refuted the claim).
