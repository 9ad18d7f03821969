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
import sys
from typing import Any

from opd_lib.lab.config import METHODS, Config, flag_fields
from opd_lib.lab.presets import ALIASES, PRESETS, preset

__all__ = ["build_parser", "main", "parse_overrides"]


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["lam=0.5", "eval_lengths=2,4,8", "retention=false"]`` -> typed Config overrides."""
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
            kind = type(current[0]) if current else int  # eval_lengths: ints; lora_modules: str
            try:
                out[key] = tuple(kind(x.strip()) for x in raw.split(",") if x.strip())
            except ValueError:
                msg = f"{key} expects comma-separated {kind.__name__}s, got {raw!r}"
                raise ValueError(msg) from None
        elif isinstance(current, int):
            out[key] = int(raw)
        elif isinstance(current, float):
            out[key] = float(raw)
        elif current is None:
            out[key] = None if raw.lower() == "none" else raw
        else:
            out[key] = raw
    return out


def _config_from_args(args) -> Config:
    overrides = {}
    for name in flag_fields():
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "method", None):
        overrides["method"] = args.method
    if getattr(args, "no_progress", False):
        overrides["progress"] = False
    overrides.update(parse_overrides(args.set or []))
    return preset(args.preset, **overrides)


def cmd_train(args) -> int:
    from opd_lib.lab.trainer import train

    train(_config_from_args(args), out_dir=args.out)
    return 0


def cmd_pair(args) -> int:
    from opd_lib._threads import torch_threads
    from opd_lib.lab.data import auto_max_new_tokens, eval_suite, make_task
    from opd_lib.lab.evaluate import evaluate
    from opd_lib.lab.pair import prepare_pair

    config = _config_from_args(args)
    with torch_threads(config.threads):
        pair = prepare_pair(config, config.cache_dir or args.out)
        suite = eval_suite(config, make_task(config))
        kw = dict(max_new_tokens=auto_max_new_tokens(config, pair.tokenizer),
                  temperature=config.eval_temperature)  # fmt: skip
        ev = evaluate(pair.teacher, suite, pair.tokenizer, prefix="teacher_", **kw)
        ev.update(evaluate(pair.student, suite, pair.tokenizer, prefix="student_", **kw))
    print(json.dumps(ev, indent=1, sort_keys=True))
    return 0


def cmd_experiments(args) -> int:
    from opd_lib._threads import torch_threads
    from opd_lib.lab.experiments import run_experiments

    config = _config_from_args(args)
    with torch_threads(config.threads):
        run_experiments(
            config, args.out, seeds=args.seeds, claims=args.claims, jobs=args.jobs,
            progress=config.progress,
        )  # fmt: skip
    return 0


def cmd_report(args) -> int:
    from opd_lib.lab.analysis import report

    result = report(args.runs, args.out, figures=not args.no_figures)
    print(result["markdown"])
    for p in result["figures"]:
        print(f"wrote {p}")
    return 0


# ------------------------------------------------------------------------------------ parser


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS) + sorted(ALIASES))
    p.add_argument("--out", required=True, help="run directory (metrics.jsonl, ckpt.pt)")
    for name, typ in flag_fields().items():
        flag = "--" + name.replace("_", "-")
        if typ is bool:  # e.g. --skip-preflight
            p.add_argument(flag, dest=name, action="store_const", const=True, default=None)
        else:
            p.add_argument(flag, dest=name, type=typ, default=None)
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="any other Config field")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")


def build_parser() -> argparse.ArgumentParser:
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
    except (ValueError, FloatingPointError) as e:  # bad settings, a refused pair, a NaN
        print(f"error: {e}", file=sys.stderr)
        return 2
