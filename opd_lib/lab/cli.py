"""Command line of the lab: ``train``, ``pair``, ``experiments`` and ``report``
(``python -m opd_lib.lab --help``).

Building the parser imports only the light modules (``config``, ``presets``): torch and
transformers load when a command runs, so ``--help`` answers at once. Two CLI defaults differ from
:class:`~opd_lib.lab.config.Config`'s, to match Chapter 10's arms (:data:`METHOD_DEFAULTS`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

from opd_lib.lab.cli_text import DESCRIPTION, KEY_HELP, default_text, epilog, list_keys, summary
from opd_lib.lab.config import METHODS, Config, check_resumable, flag_fields
from opd_lib.lab.config import choices as field_choices
from opd_lib.lab.presets import ALIASES, PRESETS, preset

__all__ = ["COMMITTED_CACHE", "METHOD_DEFAULTS", "build_parser", "main", "parse_overrides"]

COMMITTED_CACHE = Path(__file__).resolve().parents[2] / "results" / "lab" / "full" / "cache"
PAIR_STAGES = ("teacher-clean", "teacher", "student")
PAIR_STEPS_PER_S = 15  # SFT steps per second of the full preset's pair on one CPU thread

# defaults the CLI applies when the flag is not given: Chapter 10's arms (experiments.ARMS)
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "kd": {"source": "teacher"},  # KD on the teacher's samples
    "opsd": {"opsd_teacher": "frozen"},  # a live self-teacher collapses (Chapter 10)
}


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["lam=0.5", "eval_lengths=2,4,8", "retention=false"]`` -> typed Config overrides; a
    value of the wrong type raises ``ValueError`` naming its key."""
    fields = {f.name for f in dataclasses.fields(Config)}
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
        elif isinstance(current, (int, float)):
            try:
                out[key] = type(current)(raw)
            except ValueError:
                kind = "an int" if isinstance(current, int) else "a number"
                raise ValueError(f"{key} expects {kind}, got {raw!r}") from None
        elif current is None:
            out[key] = None if raw.lower() == "none" else raw
        else:
            out[key] = raw
    return out


def _config_from_args(args) -> Config:
    """The preset, then the method's CLI defaults, then the flags given, then ``--set``."""
    method = getattr(args, "method", None)
    overrides = dict(METHOD_DEFAULTS.get(method, {}))
    for name in flag_fields():
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if method:
        overrides["method"] = method
    if getattr(args, "no_progress", False):
        overrides["progress"] = False
    overrides.update(parse_overrides(args.set or []))
    return preset(args.preset, **overrides)


# ------------------------------------------------------------------------ what a run says


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def check_runnable(config: Config) -> None:
    """Cheap checks before anything loads: the device exists and ``teacher_from`` holds a
    finished run (``ValueError`` / ``FileNotFoundError`` naming the setting)."""
    if config.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(
                f"device={config.device!r}, but this torch ({torch.__version__}) sees no CUDA "
                "device; use --device cpu"
            )
    if config.teacher_from and not (Path(config.teacher_from) / "student.pt").is_file():
        raise FileNotFoundError(
            f"teacher_from: {Path(config.teacher_from) / 'student.pt'} not found; finish the "
            f"run in {config.teacher_from} first"
        )


def resume_step(config: Config, out: str | Path) -> int | None:
    """The step saved in ``out/ckpt.pt`` (``ValueError`` if it was written with other settings),
    or ``None`` when there is no checkpoint."""
    path = Path(out) / "ckpt.pt"
    if not path.is_file():
        return None
    from opd_lib.lab.checkpoint import load_checkpoint

    state = load_checkpoint(path)
    check_resumable(config, state["config"])
    return int(state["step"])


def with_pair_cache(config: Config, preset_name: str, out: str | Path) -> Config:
    """``config`` with ``cache_dir`` set to the committed pair for the ``full`` preset when no
    cache was given and :data:`COMMITTED_CACHE` holds this pair; says when the pair will be
    trained instead."""
    if config.model != "tiny":
        return config
    from opd_lib.lab.pair import cache_key

    def holds_pair(directory: str | Path) -> bool:
        files = (Path(directory) / f"{s}-{cache_key(config, s)}.pt" for s in PAIR_STAGES)
        return all(f.is_file() for f in files)

    full = ALIASES.get(preset_name, preset_name) == "full"
    if config.cache_dir is None and full and holds_pair(COMMITTED_CACHE):
        _say(f"using the committed pair in {COMMITTED_CACHE}")
        return dataclasses.replace(config, cache_dir=str(COMMITTED_CACHE))
    cache = config.cache_dir or out
    if not holds_pair(cache):
        steps = config.teacher_steps + config.teacher_recovery_steps + config.student_init_steps
        minutes = math.ceil(steps / PAIR_STEPS_PER_S / 60)
        when = "under a minute" if steps < 60 * PAIR_STEPS_PER_S else f"about {minutes} min"
        when = f", {when} on a CPU" if config.device == "cpu" else ""
        reuse = (
            f"later runs with --cache-dir {cache} reuse it"
            if config.cache_dir
            else "pass --cache-dir DIR to reuse it"
        )
        _say(f"training the pair in {cache} ({steps} SFT steps{when}); {reuse}")
    return config


# ------------------------------------------------------------------------------ commands


def cmd_train(args) -> int:
    config = _config_from_args(args)
    check_runnable(config)
    step = resume_step(config, args.out)
    if step is not None and step >= config.steps:
        _say(f"already finished: {args.out} is at step {step} (--steps {config.steps})")
        print(summary(config, args.preset, args.out))
        return 0
    if step is not None:
        _say(f"resuming from step {step} of {config.steps} ({Path(args.out) / 'ckpt.pt'})")
    config = with_pair_cache(config, args.preset, args.out)
    from opd_lib.lab.trainer import train

    train(config, out_dir=args.out)
    print(summary(config, args.preset, args.out))
    return 0


def cmd_pair(args) -> int:
    import json

    from opd_lib._threads import torch_threads
    from opd_lib.lab.data import auto_max_new_tokens, eval_suite, make_task
    from opd_lib.lab.evaluate import evaluate
    from opd_lib.lab.pair import prepare_pair

    config = _config_from_args(args)
    check_runnable(config)
    config = with_pair_cache(config, args.preset, args.out)
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
    check_runnable(config)
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


# -------------------------------------------------------------------------------- parser


class _ListKeys(argparse.Action):
    """``--list-keys``: print every ``--set`` key and exit."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        kwargs.update(nargs=0, default=argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(list_keys())
        parser.exit()


def _add_run_args(p: argparse.ArgumentParser, out_help: str) -> None:
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS) + sorted(ALIASES),
                   help="named settings, described below (default tiny)")  # fmt: skip
    p.add_argument("--out", required=True, help=out_help)
    for name, typ in flag_fields().items():
        flag = "--" + name.replace("_", "-")
        text = KEY_HELP[name]
        if name != "cache_dir" and typ is not bool:  # cache_dir's help says its default
            text += f" ({default_text(name, METHOD_DEFAULTS)})"
        if typ is bool:  # e.g. --skip-preflight
            p.add_argument(flag, dest=name, action="store_const", const=True, help=text)
        else:
            p.add_argument(flag, dest=name, type=typ, choices=field_choices(name), help=text)
    set_help = "any other Config field, e.g. eval_temperature=0 (see --list-keys)"
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help=set_help)
    p.add_argument("--list-keys", action=_ListKeys, help="list every --set key and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The parser; imports neither torch nor transformers."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="python -m opd_lib.lab", description=DESCRIPTION, epilog=epilog(METHOD_DEFAULTS),
        formatter_class=fmt,
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    t = sub.add_parser(
        "train", help="train a student with one method", formatter_class=fmt,
        description="Train a student with one method; prints a summary at the end.",
        epilog=epilog(METHOD_DEFAULTS),
    )  # fmt: skip
    t.add_argument("--method", required=True, choices=METHODS, help="described below")
    _add_run_args(t, "run directory: metrics.jsonl, ckpt.pt, student.pt, config.json; a run "
                     "resumes from its ckpt.pt (same settings)")  # fmt: skip
    t.set_defaults(func=cmd_train)
    p = sub.add_parser(
        "pair", help="prepare (train and cache) the teacher/student pair and score both",
        formatter_class=fmt, epilog=epilog(None),
    )  # fmt: skip
    _add_run_args(p, "where the pair is cached when --cache-dir is not given")
    p.set_defaults(func=cmd_pair)
    e = sub.add_parser(
        "experiments", help="run the lab chapter's claims (every arm x seed)",
        formatter_class=fmt, epilog=epilog(None),
    )  # fmt: skip
    _add_run_args(e, "root of the runs (OUT/ARM-sSEED) and of the shared pair cache OUT/cache")
    e.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="default 0 1 2")
    e.add_argument("--claims", nargs="+", default=None,
                   help="claims to run (default: all; an unknown name lists them)")  # fmt: skip
    e.add_argument("--jobs", type=int, default=1, help="runs at once, one process each")
    e.set_defaults(func=cmd_experiments)
    r = sub.add_parser("report", help="tables and figures from RUNS/**/metrics.jsonl")
    r.add_argument("runs", metavar="RUNS", help="a directory of run directories")
    r.add_argument("--out", default=None, help="where report.md and PNGs go (default: RUNS)")
    r.add_argument("--no-figures", action="store_true", help="the tables only")
    r.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; a mistake of the user's is one ``error:`` line and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    # bad settings, a refused pair or checkpoint, a NaN, a missing file, a run over its budget
    except (ValueError, FloatingPointError, FileNotFoundError, MemoryError) as e:
        print(f"error: {e or type(e).__name__}", file=sys.stderr)
        return 2
