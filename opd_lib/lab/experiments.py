"""The lab chapter's experiments: which runs measure which claim, a resumable runner for them, and
pure functions that turn their ``metrics.jsonl`` files into the chapter's tables and figure data.

An *arm* is one training configuration (a method and its knobs on top of a preset); a *claim* is a
set of arms compared with each other. Every arm runs once per seed, from the same prepared pair,
into ``out/<arm>-s<seed>/``::

    python -m opd_lib.lab experiments --preset full --out results/lab/full --seeds 0 1 2 --jobs 2

The claims (seeds 000-004 of the book; Chapter 10 discusses each):

* ``chain``     off-policy (SFT on data, KD on teacher samples) vs on-policy (OPD) over chain
  length, with mistakes per trace set beside the no-recovery and recovery predictions;
* ``cost``      OPD vs GRPO: FLOPs and wall time to reach a share of the teacher's accuracy;
* ``opsd``      the hinted self-teacher live / frozen / EMA x no clip / per-token / point-wise;
* ``degraded``  a teacher made worse by stress SFT (it forgets the retention task), then OPD and SFT
  on its samples from the original student (seed 003);
* ``retention`` forgetting of the retention task under mild SFT, stress SFT, OPD and GRPO;
* ``schedule``  GKD with the industrial lambda schedule (0 -> mixed -> 1) vs always on-policy.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import statistics
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from opd_lib.lab.metrics import read_jsonl

__all__ = [
    "ARMS",
    "CLAIMS",
    "arm_config",
    "compounding_mistakes",
    "cost_table",
    "curves",
    "final_table",
    "independent_mistakes",
    "load_arms",
    "mistakes_by_length",
    "pm_table",
    "recovery_signal",
    "run_experiments",
    "seed_curves",
]

# arm -> overrides of the preset's Config (a function of it, for knobs scaled from the preset)
ARMS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "sft": lambda c: dict(method="sft", source="data"),
    "kd": lambda c: dict(method="kd", source="teacher"),
    "opd": lambda c: dict(method="opd", opd_estimator="full"),
    "rl": lambda c: dict(method="rl"),
    "stress-sft": lambda c: dict(method="sft", source="data", lr=5 * c.lr),
    "gkd-industrial": lambda c: dict(method="gkd", lam_schedule="industrial", beta=0.5),
    "gkd-onpolicy": lambda c: dict(method="gkd", lam=1.0, beta=0.5),
    **{
        f"opsd-{teacher}-{clip}": (
            lambda c, teacher=teacher, clip=clip: dict(
                method="opsd", opsd_teacher=teacher, clip=clip, opsd_kind="fkl"
            )
        )
        for teacher in ("live", "frozen", "ema")
        for clip in ("none", "token", "pointwise")
    },
    # the teacher is the seed's final stress-SFT student (see ``run_experiments``)
    "degraded-opd": lambda c: dict(method="opd", opd_estimator="full"),
    "degraded-sft": lambda c: dict(method="sft", source="teacher"),
}
TEACHER_FROM = {"degraded-opd": "stress-sft", "degraded-sft": "stress-sft"}

CLAIMS: dict[str, tuple[str, ...]] = {
    "chain": ("sft", "kd", "opd"),
    "cost": ("opd", "rl"),
    "opsd": tuple(a for a in ARMS if a.startswith("opsd-")),
    "degraded": ("stress-sft", "degraded-opd", "degraded-sft"),
    "retention": ("sft", "stress-sft", "opd", "rl"),
    "schedule": ("gkd-industrial", "gkd-onpolicy"),
}


def run_dir(out: str | Path, arm: str, seed: int) -> Path:
    return Path(out) / f"{arm}-s{seed}"


def arm_config(base, arm: str, seed: int, out: str | Path):
    """The Config of ``arm`` for ``seed``: the preset ``base`` with the arm's overrides, the
    shared pair cache ``out/cache`` and, for the degraded-teacher arms, the teacher taken from the
    same seed's stress-SFT run."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; expected one of {sorted(ARMS)}")
    overrides = ARMS[arm](base) | dict(seed=seed, cache_dir=str(Path(out) / "cache"))
    if arm in TEACHER_FROM:
        overrides["teacher_from"] = str(run_dir(out, TEACHER_FROM[arm], seed))
    config = dataclasses.replace(base, **overrides)
    config.validate()
    return config


def _run_one(job: tuple[Any, str]) -> str:
    from opd_lib.lab.cli import _set_threads
    from opd_lib.lab.trainer import train

    config, directory = job
    _set_threads(config)
    train(config, directory)
    (Path(directory) / "ckpt.pt").unlink(missing_ok=True)  # resumable until here; done now
    return directory


def _is_done(directory: Path, steps: int) -> bool:
    metrics = directory / "metrics.jsonl"
    if not (directory / "student.pt").is_file() or not metrics.is_file():
        return False
    evals = [r for r in read_jsonl(metrics) if r.get("type") == "eval"]
    return bool(evals) and evals[-1]["step"] >= steps


def run_experiments(
    base,
    out: str | Path,
    seeds: Sequence[int] = (0, 1, 2),
    claims: Iterable[str] | None = None,
    jobs: int = 1,
    progress: bool = True,
) -> list[Path]:
    """Run every arm of ``claims`` (default: all) for every seed from the preset Config ``base``.

    The pair is prepared once (cached in ``out/cache``); finished runs are skipped and killed ones
    resume from their checkpoint, so re-running the same command completes an interrupted set.
    Arms that take their teacher from another arm run after it. ``jobs`` > 1 runs that many
    processes at once (one torch thread each). Returns the run directories."""
    from tqdm.auto import tqdm

    from opd_lib.lab.trainer import prepare_pair

    claims = list(CLAIMS) if claims is None else list(claims)
    unknown = sorted(set(claims) - set(CLAIMS))
    if unknown:
        raise ValueError(f"unknown claims {unknown}; expected some of {sorted(CLAIMS)}")
    arms = list(dict.fromkeys(a for claim in claims for a in CLAIMS[claim]))
    for arm in arms:  # a dependent arm needs its source arm too
        if arm in TEACHER_FROM and TEACHER_FROM[arm] not in arms:
            arms.insert(0, TEACHER_FROM[arm])
    out = Path(out)
    prepare_pair(base, out / "cache")
    phases = ([a for a in arms if a not in TEACHER_FROM], [a for a in arms if a in TEACHER_FROM])
    done: list[Path] = []
    bar = tqdm(total=len(arms) * len(seeds), desc="runs", disable=not progress)
    pool = (
        ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
        if jobs > 1
        else None
    )
    try:
        for phase in phases:  # the dependent arms start when their source arms are done
            todo = []
            for arm in phase:
                for seed in seeds:
                    directory = run_dir(out, arm, seed)
                    if _is_done(directory, base.steps):
                        bar.update()
                        done.append(directory)
                    else:
                        config = dataclasses.replace(
                            arm_config(base, arm, seed, out), progress=False
                        )
                        todo.append((config, str(directory)))
            for directory in pool.map(_run_one, todo) if pool else map(_run_one, todo):
                bar.update()
                done.append(Path(directory))
    finally:
        if pool is not None:
            pool.shutdown()
    bar.close()
    return done


# ------------------------------------------------------------------------------- analysis


def load_arms(root: str | Path) -> dict[str, list[list[dict]]]:
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


def _evals(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("type") == "eval"]


def _teacher(records: list[dict]) -> dict:
    return next((r for r in records if r.get("type") == "teacher"), {})


def mean_sd(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of the finite ``values``."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return math.nan, math.nan
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def independent_mistakes(eps: float, steps: int) -> float:
    """Expected wrong steps in a ``steps``-step trace when every step errs with probability
    ``eps`` and the next step recovers (starts from the true value): ``eps * T``."""
    return eps * steps


def compounding_mistakes(eps: float, steps: int) -> float:
    """Expected wrong steps when the first error is never recovered from (every later step builds
    on the wrong value, so step ``j`` is wrong iff any of steps ``1..j`` erred):
    ``sum_j 1 - (1 - eps)^j``, about ``eps T^2 / 2`` for small ``eps T`` (the DAgger bound's
    quadratic term, Ross et al. 2011)."""
    return sum(1.0 - (1.0 - eps) ** j for j in range(1, steps + 1))


def mistakes_by_length(
    runs: dict[str, list[list[dict]]], arms: Sequence[str], evaluation: int = -1
) -> list[dict]:
    """Per arm and evaluated chain length ``k`` (``T = k - 1`` steps): wrong steps per trace at
    the ``evaluation``-th evaluation (default the last; 0: before training; mean, sd over seeds)
    and the two predictions from the arm's own per-step error ``eps`` at length 2 (one step, so
    nothing to compound)."""
    rows = []
    for arm in arms:
        finals = [_evals(r)[evaluation] for r in runs[arm]]
        lengths = sorted(int(k[12:]) for k in finals[0] if k.startswith("step_err_len"))
        eps, _ = mean_sd(f["step_err_len2"] for f in finals)
        for k in lengths:
            m, sd = mean_sd(f[f"step_err_len{k}"] * (k - 1) for f in finals)
            acc, acc_sd = mean_sd(f[f"acc_len{k}"] for f in finals)
            rows.append(
                dict(
                    arm=arm,
                    length=k,
                    mistakes=m,
                    mistakes_sd=sd,
                    acc=acc,
                    acc_sd=acc_sd,
                    eps=eps,
                    independent=independent_mistakes(eps, k - 1),
                    compounding=compounding_mistakes(eps, k - 1),
                )
            )
    return rows


def cost_table(
    runs: dict[str, list[list[dict]]], arms: Sequence[str], share: float = 0.9
) -> list[dict]:
    """Per arm: the step, FLOPs and training wall time at which each seed's student first reached
    ``share`` x its teacher's accuracy (median over seeds; ``inf`` if a seed never did), how many
    seeds got there, and the FLOPs of a whole run (``budget_flops``, median over seeds)."""
    from opd_lib.lab.cli import cost_to_target

    rows = []
    for arm in arms:
        hits = []
        for records in runs[arm]:
            target = share * _teacher(records).get("teacher_acc", 1.0)
            hits.append(cost_to_target(records, min(1.0, target)))
        reached = [h for h in hits if math.isfinite(h["step"])]
        row = dict(arm=arm, seeds=len(hits), reached=len(reached))
        for key in ("step", "flops", "wall_s"):
            row[key] = statistics.median(h[key] for h in hits)
        row["budget_flops"] = statistics.median(_evals(r)[-1]["flops"] for r in runs[arm])
        rows.append(row)
    return rows


def final_table(
    runs: dict[str, list[list[dict]]], arms: Sequence[str], keys: Sequence[str]
) -> list[dict]:
    """Per arm: mean and sd over seeds of ``keys`` at the first (``<key>@0``) and last evaluation
    and, with a ``teacher_`` prefix, of the teacher's own evaluation."""
    rows = []
    for arm in arms:
        row: dict[str, Any] = dict(arm=arm, seeds=len(runs[arm]))
        for key in keys:
            if key.startswith("teacher_"):
                values = [_teacher(r).get(key, math.nan) for r in runs[arm]]
            elif key.endswith("@0"):
                values = [_evals(r)[0].get(key[:-2], math.nan) for r in runs[arm]]
            else:
                values = [_evals(r)[-1].get(key, math.nan) for r in runs[arm]]
            row[key], row[key + "_sd"] = mean_sd(values)
        rows.append(row)
    return rows


def seed_curves(
    runs: dict[str, list[list[dict]]], arm: str, x: str = "flops", y: str = "acc"
) -> list[tuple[list[float], list[float]]]:
    """``(xs, ys)`` over the evaluations of each seed of ``arm`` (e.g. accuracy against
    cumulative FLOPs, which differ from seed to seed)."""
    return [([e[x] for e in _evals(r)], [e[y] for e in _evals(r)]) for r in runs[arm]]


def curves(runs: dict[str, list[list[dict]]], arm: str, key: str = "acc") -> dict[str, list]:
    """``key`` over evaluation steps for ``arm``: steps, mean and sd over seeds (seeds evaluated
    at the same steps)."""
    per_seed = [[e.get(key, math.nan) for e in _evals(r)] for r in runs[arm]]
    steps = [e["step"] for e in _evals(runs[arm][0])]
    stats = [mean_sd(col) for col in zip(*per_seed, strict=False)]
    return dict(step=steps, mean=[m for m, _ in stats], sd=[s for _, s in stats])


def pm_table(rows: list[dict], keys: Sequence[str], digits: int = 2) -> list[dict[str, str]]:
    """Rows of :func:`final_table` (or any rows with ``key`` and ``key_sd``) for display: the
    ``arm`` and each of ``keys`` as ``"mean ± sd"``."""
    return [
        {"arm": r["arm"], **{k: f"{r[k]:.{digits}f} ± {r[k + '_sd']:.{digits}f}" for k in keys}}
        for r in rows
    ]


def recovery_signal(trainer, n_prompts: int = 256, seed: int = 1) -> dict[str, float]:
    """What the teacher says where the student has just slipped, on the student's own samples.

    Samples ``n_prompts`` traces from the trainer's student (at its rollout temperature), finds
    each trace's first slip in a sum (``RunningSum.first_slip``) and, at the first token of the
    next step, compares the argmax of the teacher and of the student with the true running value
    and with the value the student wrote. Needs the character tokenizer (one token per character,
    so character offsets are token offsets). Returns the number of slips and the shares."""
    import random

    import torch

    from opd_lib.gkd import completion_logits
    from opd_lib.lab.trainer import encode

    rng = random.Random(seed)
    examples = [trainer.task.sample(rng) for _ in range(n_prompts)]
    b = encode(trainer.tok, examples, trainer.device)
    gen = torch.Generator(device=trainer.device).manual_seed(seed)
    with torch.no_grad():
        ids = trainer._sample(trainer.student, b.prompt_ids, b.prompt_mask, gen=gen)
        argmax = {
            who: completion_logits(model, b.prompt_ids, b.prompt_mask, ids).argmax(-1)
            for who, model in (("teacher", trainer.teacher), ("student", trainer.student))
        }
    digit = {d: trainer.tok.convert_tokens_to_ids(str(d)) for d in range(10)}
    counts = {"teacher_true": 0, "student_true": 0, "student_copies": 0}
    slips = 0
    for i, (ex, text) in enumerate(zip(examples, trainer._decode(ids), strict=True)):
        found = trainer.task.first_slip(ex, text)
        if found is None:
            continue
        offset, true_value = found
        written = text[offset - 2]  # the wrong result, just before the comma
        slips += 1
        counts["teacher_true"] += int(argmax["teacher"][i, offset]) == digit[true_value]
        counts["student_true"] += int(argmax["student"][i, offset]) == digit[true_value]
        counts["student_copies"] += int(argmax["student"][i, offset]) == digit[int(written)]
    return {"slips": slips, **{k: v / slips if slips else math.nan for k, v in counts.items()}}
