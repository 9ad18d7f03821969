"""Command line: ``python -m opd_lib.lab train ...``, ``... pair ...`` and ``... report runs/``.

    python -m opd_lib.lab train --method opd --preset tiny --out runs/opd-s0 --seed 0
    python -m opd_lib.lab train --method gkd --preset full --out runs/gkd --set lam=0.5 beta=0.1
    python -m opd_lib.lab pair --preset full --cache-dir runs/cache      # teacher + student init
    python -m opd_lib.lab report runs/                                   # tables + figures
    python -m opd_lib.lab experiments --preset full --out results/lab/full --jobs 2

``train`` resumes from ``OUT/ckpt.pt`` when it exists (same settings required), so re-running a
killed command finishes the run with the same metrics as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = ["cost_to_target", "main", "parse_overrides", "report"]

# flag -> Config field, for the most used knobs (everything else: --set key=value)
_FLAGS = {
    "seed": int,
    "steps": int,
    "lr": float,
    "lam": float,
    "lam_schedule": str,
    "beta": float,
    "source": str,
    "opd_estimator": str,
    "group_size": int,
    "opsd_teacher": str,
    "clip": str,
    "batch_size": int,
    "micro_batch_size": int,
    "device": str,
    "cache_dir": str,
    "threads": int,
}


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["lam=0.5", "eval_lengths=2,4,8", "retention=false"]`` -> typed Config overrides."""
    from opd_lib.lab.trainer import Config

    fields = {f.name: f for f in dataclasses.fields(Config)}
    defaults = Config()
    out: dict[str, Any] = {}
    for item in pairs:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        if key not in fields:
            raise ValueError(f"unknown config key {key!r}; known: {sorted(fields)}")
        current = getattr(defaults, key)
        if isinstance(current, bool):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"{key} expects true/false, got {raw!r}")
            out[key] = raw.lower() in ("true", "1", "yes")
        elif isinstance(current, tuple):
            out[key] = tuple(int(x) for x in raw.split(",") if x)
        elif isinstance(current, int):
            out[key] = int(raw)
        elif isinstance(current, float):
            out[key] = float(raw)
        elif current is None:
            out[key] = None if raw.lower() == "none" else raw
        else:
            out[key] = raw
    return out


def _config_from_args(args) -> Any:
    from opd_lib.lab.presets import preset

    overrides = {}
    for name in _FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "method", None):
        overrides["method"] = args.method
    if getattr(args, "no_progress", False):
        overrides["progress"] = False
    overrides.update(parse_overrides(args.set or []))
    return preset(args.preset, **overrides)


def _set_threads(config) -> None:
    import torch

    if config.threads > 0:
        torch.set_num_threads(config.threads)


def cmd_train(args) -> int:
    from opd_lib.lab.trainer import train

    config = _config_from_args(args)
    _set_threads(config)
    train(config, out_dir=args.out)
    return 0


def cmd_pair(args) -> int:
    from opd_lib.lab.trainer import Trainer, prepare_pair

    config = _config_from_args(args)
    _set_threads(config)
    cache = config.cache_dir or args.out
    pair = prepare_pair(config, cache)
    ev = Trainer(config, pair).evaluate(pair.teacher, "teacher_")
    ev.update(Trainer(config, pair).evaluate(pair.student, "student_"))
    print(json.dumps(ev, indent=1, sort_keys=True))
    return 0


def cmd_experiments(args) -> int:
    from opd_lib.lab.experiments import run_experiments

    config = _config_from_args(args)
    _set_threads(config)
    run_experiments(
        config, args.out, seeds=args.seeds, claims=args.claims, jobs=args.jobs,
        progress=config.progress,
    )  # fmt: skip
    return 0


# ------------------------------------------------------------------------------------ report

_SEED_SUFFIX = re.compile(r"[-_.]?s(?:eed)?\d+$")


def _group_name(run_dir: Path, root: Path) -> str:
    rel = run_dir.relative_to(root).as_posix() if run_dir != root else run_dir.name
    return _SEED_SUFFIX.sub("", rel) or rel


def _fmt(values: list[float]) -> str:
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.3g}"
    return f"{mean:.3g} ± {statistics.stdev(values):.2g}"


def report(root: str | Path, out: str | Path | None = None, figures: bool = True) -> dict:
    """Tables (markdown, printed and written to ``out/report.md``) and figures (PNG) of every
    ``metrics.jsonl`` under ``root``. Runs whose directory names differ only by a seed suffix
    (``-s0``, ``_seed1``) are grouped: mean ± standard deviation over seeds.

    Returns ``{"runs": [...], "groups": [...], "markdown": str, "figures": [paths]}``.
    """
    from opd_lib.lab.metrics import read_jsonl

    root = Path(root)
    out = Path(out) if out is not None else root
    files = sorted(root.rglob("metrics.jsonl"))
    if not files:
        raise ValueError(f"no metrics.jsonl under {root}")
    runs = []
    for f in files:
        records = read_jsonl(f)
        evals = [r for r in records if r.get("type") == "eval"]
        trains = [r for r in records if r.get("type") == "train"]
        teacher = next((r for r in records if r.get("type") == "teacher"), {})
        if not evals:
            continue
        runs.append(
            {
                "run": f.parent.relative_to(root).as_posix() if f.parent != root else root.name,
                "group": _group_name(f.parent, root),
                "method": evals[-1].get("method"),
                "seed": evals[-1].get("seed"),
                "step": evals[-1]["step"],
                "final": evals[-1],
                "first": evals[0],
                "teacher": teacher,
                "evals": evals,
                "wall_s": trains[-1]["wall_s"] if trains else 0.0,
                "flops": evals[-1].get("flops", 0.0),
            }
        )
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
        cells += [_fmt(row[c]) for c in [*cols, "teacher acc", "flops", "wall s"]]
        lines.append("| " + " | ".join(cells) + " |")
    markdown = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown + "\n")
    paths = _figures(runs, out) if figures else []
    return {"runs": runs, "groups": group_rows, "markdown": markdown, "figures": paths}


def cost_to_target(records: list[dict], target: float, key: str = "acc") -> dict[str, float]:
    """FLOPs, wall seconds and step at the first evaluation where ``key >= target``, from one
    run's records (``metrics.jsonl``); ``inf`` everywhere when the run never got there.

    Wall time is the training time logged by the last train step at or before that evaluation
    (evaluation time is not counted)."""
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target must be in [0, 1], got {target}")
    wall = {r["step"]: r["wall_s"] for r in records if r.get("type") == "train"}
    for r in records:
        if r.get("type") == "eval" and r.get(key, -1.0) >= target:
            step = r["step"]
            before = [s for s in wall if s <= step]
            return {
                "step": float(step),
                "flops": float(r.get("flops", 0.0)),
                "wall_s": float(wall[max(before)]) if before else 0.0,
            }
    return {"step": math.inf, "flops": math.inf, "wall_s": math.inf}


def _figures(runs: list[dict], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({r["group"] for r in runs})
    colors = {g: plt.cm.tab10(i % 10) for i, g in enumerate(groups)}
    paths = []
    for xkey, fname, xlabel in (
        ("step", "report_acc_steps.png", "optimizer step"),
        ("flops", "report_acc_flops.png", "FLOPs (estimate)"),
    ):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        seen = set()
        for r in runs:
            xs = [e.get(xkey, 0.0) for e in r["evals"]]
            ys = [e["acc"] for e in r["evals"]]
            label = None if r["group"] in seen else r["group"]
            seen.add(r["group"])
            ax.plot(xs, ys, marker="o", ms=3, color=colors[r["group"]], label=label, alpha=0.8)
        if xkey == "flops":
            ax.set_xscale("symlog")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("greedy accuracy (mean over chain lengths)")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))
    # accuracy per chain length at the end of each run
    length_keys = sorted(
        {k for r in runs for k in r["final"] if re.fullmatch(r"acc_len\d+", k)},
        key=lambda k: int(k[7:]),
    )
    if length_keys:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        xs = [int(k[7:]) for k in length_keys]
        for g in groups:
            members = [r for r in runs if r["group"] == g]
            means = [statistics.fmean(m["final"].get(k, 0.0) for m in members) for k in length_keys]
            ax.plot(xs, means, marker="o", color=colors[g], label=g)
        ax.set_xlabel("chain length (digits)")
        ax.set_ylabel("final greedy accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / "report_acc_length.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))
    return paths


def cmd_report(args) -> int:
    result = report(args.runs, args.out, figures=not args.no_figures)
    print(result["markdown"])
    for p in result["figures"]:
        print(f"wrote {p}")
    return 0


# ------------------------------------------------------------------------------------ parser


def _add_run_args(p: argparse.ArgumentParser) -> None:
    from opd_lib.lab.presets import PRESETS

    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--out", required=True, help="run directory (metrics.jsonl, ckpt.pt)")
    for name, typ in _FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None)
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="any other Config field")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")


def build_parser() -> argparse.ArgumentParser:
    from opd_lib.lab.trainer import METHODS

    parser = argparse.ArgumentParser(
        prog="python -m opd_lib.lab", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a student with one method")
    t.add_argument("--method", required=True, choices=METHODS)
    _add_run_args(t)
    t.set_defaults(func=cmd_train)
    p = sub.add_parser("pair", help="prepare (train and cache) the tiny teacher/student pair")
    _add_run_args(p)
    p.set_defaults(func=cmd_pair)
    e = sub.add_parser("experiments", help="run the lab chapter's claims (every arm x seed)")
    _add_run_args(e)
    e.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    e.add_argument("--claims", nargs="+", default=None, help="default: all")
    e.add_argument("--jobs", type=int, default=1, help="processes at once")
    e.set_defaults(func=cmd_experiments)
    r = sub.add_parser("report", help="tables and figures from runs/**/metrics.jsonl")
    r.add_argument("runs")
    r.add_argument("--out", default=None, help="where report.md and PNGs go (default: RUNS)")
    r.add_argument("--no-figures", action="store_true")
    r.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
